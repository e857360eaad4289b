//! Results that outlive the run: an embedded SQLite database (`--store results.db`).
//!
//! Tables: `runs` (one per named run), `targets` (one row per target and run: the outcome, the
//! columns people query, and the full JSON line), `stages` (one row per stage reached) and `facts`
//! (one row per decoded fact). A target is *done* in a run once its row is committed; `--resume`
//! skips done targets, so an interrupted run finishes the rest with nothing done twice. Several
//! processes (shards) may write the same run of the same file: writes are batched in short
//! `BEGIN IMMEDIATE` transactions and wait for each other (busy timeout).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension as _};

use super::{verdict_kind, ScanError, ScanResult};

/// Results buffered before a commit (and the longest time one waits).
const BATCH: usize = 256;
const BATCH_AGE: Duration = Duration::from_secs(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    started_us INTEGER NOT NULL,
    command TEXT
);
CREATE TABLE IF NOT EXISTS targets (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    last_stage TEXT NOT NULL,
    verdict TEXT NOT NULL,
    failing INTEGER NOT NULL,
    selected_protocol TEXT,
    tls_version TEXT,
    cert_sha256 TEXT,
    elapsed_ms REAL NOT NULL,
    finished_us INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (run_id, target)
);
CREATE TABLE IF NOT EXISTS stages (
    run_id INTEGER NOT NULL,
    target TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stage TEXT NOT NULL,
    verdict TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    bytes_c2s INTEGER NOT NULL,
    bytes_s2c INTEGER NOT NULL,
    PRIMARY KEY (run_id, target, seq)
);
CREATE TABLE IF NOT EXISTS facts (
    run_id INTEGER NOT NULL,
    target TEXT NOT NULL,
    stage TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, target, stage, key)
);
";

/// One run of a store, open for writing.
pub struct Store {
    conn: Connection,
    run_id: i64,
    pub run_name: String,
    pending: Vec<ScanResult>,
    oldest: Option<Instant>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Opens (creating when needed) a store file with its schema.
pub fn open(path: &Path) -> Result<Connection, ScanError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// The most recent run's name.
pub fn latest_run(conn: &Connection) -> Result<Option<String>, ScanError> {
    Ok(conn
        .query_row("SELECT name FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Calls `f` with each stored JSON line of a run, in target order.
pub fn for_each_result(
    conn: &Connection,
    run: &str,
    mut f: impl FnMut(&str) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let id: Option<i64> = conn
        .query_row("SELECT id FROM runs WHERE name = ?1", [run], |r| r.get(0))
        .optional()?;
    let id = id.ok_or_else(|| ScanError::StoreData(format!("no run named `{run}`")))?;
    let mut st = conn.prepare("SELECT result FROM targets WHERE run_id = ?1 ORDER BY target")?;
    let mut rows = st.query([id])?;
    while let Some(row) = rows.next()? {
        let s: String = row.get(0)?;
        f(&s)?;
    }
    Ok(())
}

impl Store {
    /// Opens run `name` of the store at `path`: created when new; when it exists, `join` must be
    /// set (resuming it, or one shard of it among others), so that a typo never mixes two runs.
    pub fn open_run(
        path: &Path,
        name: &str,
        join: bool,
        command: &str,
    ) -> Result<Store, ScanError> {
        let conn = open(path)?;
        let existing: Option<i64> = conn
            .query_row("SELECT id FROM runs WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        let run_id = match existing {
            Some(id) if join => id,
            Some(_) => {
                return Err(ScanError::StoreData(format!(
                    "run `{name}` already exists in {}: pass --resume to finish it (or --shard to add a shard), or another --run name",
                    path.display()
                )))
            }
            None => {
                // Shards of one run may all create it: the first wins, the others join it.
                conn.execute(
                    "INSERT OR IGNORE INTO runs (name, started_us, command) VALUES (?1, ?2, ?3)",
                    params![name, now_us(), command],
                )?;
                conn.query_row("SELECT id FROM runs WHERE name = ?1", [name], |r| r.get(0))?
            }
        };
        Ok(Store {
            conn,
            run_id,
            run_name: name.to_owned(),
            pending: Vec::new(),
            oldest: None,
        })
    }

    /// Has this run a committed result for the target?
    pub fn is_done(&self, key: &str) -> Result<bool, ScanError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM targets WHERE run_id = ?1 AND target = ?2")?;
        Ok(st.exists(params![self.run_id, key])?)
    }

    /// Number of targets done in this run.
    pub fn count(&self) -> Result<u64, ScanError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM targets WHERE run_id = ?1",
            [self.run_id],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Queues a result; commits when the batch is full or old.
    pub fn add(&mut self, r: ScanResult) -> Result<(), ScanError> {
        self.pending.push(r);
        self.oldest.get_or_insert_with(Instant::now);
        if self.pending.len() >= BATCH || self.oldest.is_some_and(|o| o.elapsed() >= BATCH_AGE) {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits every queued result in one transaction.
    pub fn flush(&mut self) -> Result<(), ScanError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for r in &self.pending {
            insert(&tx, self.run_id, r)?;
        }
        tx.commit()?;
        self.pending.clear();
        self.oldest = None;
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn insert(tx: &rusqlite::Transaction<'_>, run: i64, r: &ScanResult) -> Result<(), ScanError> {
    use crate::stage::Stage;
    let key = r.target.key();
    let rep = &r.report;
    let s = |stage: Stage, k: &str| {
        rep.fact(stage, k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let json = serde_json::to_string(&r.to_json())
        .map_err(|e| ScanError::StoreData(format!("encoding a result: {e}")))?;
    tx.execute(
        "DELETE FROM stages WHERE run_id = ?1 AND target = ?2",
        params![run, key],
    )?;
    tx.execute(
        "DELETE FROM facts WHERE run_id = ?1 AND target = ?2",
        params![run, key],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO targets (run_id, target, host, port, last_stage, verdict, failing,
         selected_protocol, tls_version, cert_sha256, elapsed_ms, finished_us, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            run,
            key,
            r.target.host,
            r.target.port,
            rep.last_stage.as_str(),
            verdict_kind(&rep.verdict),
            super::is_failing(rep),
            s(Stage::X224, "selected_protocol"),
            s(Stage::Tls, "version"),
            s(Stage::Tls, "cert_sha256"),
            r.elapsed_ms,
            now_us(),
            json
        ],
    )?;
    let mut st = tx.prepare_cached(
        "INSERT INTO stages (run_id, target, seq, stage, verdict, start_us, duration_ms, bytes_c2s, bytes_s2c)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut ft = tx.prepare_cached(
        "INSERT OR REPLACE INTO facts (run_id, target, stage, key, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, stage) in rep.stages.iter().enumerate() {
        st.execute(params![
            run,
            key,
            i as i64,
            stage.stage.as_str(),
            verdict_kind(&stage.verdict),
            stage.start_us as i64,
            stage.duration_ms,
            stage.bytes_c2s as i64,
            stage.bytes_s2c as i64
        ])?;
        for (k, v) in &stage.facts {
            ft.execute(params![run, key, stage.stage.as_str(), k, v.to_string()])?;
        }
    }
    Ok(())
}
