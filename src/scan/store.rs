//! Results that outlive the run: an embedded SQLite database (`--store results.db`), or a shared
//! PostgreSQL database (`--store postgres://user@host/db`, see [`super::postgres`]) with the same
//! tables and the same semantics, for shards on many machines.
//!
//! Tables: `runs` (one per named run), `targets` (one row per target and run: the outcome, the
//! columns people query, and the full JSON line), `stages` (one row per stage reached) and `facts`
//! (one row per decoded fact). A target is *done* in a run once its row is committed; `--resume`
//! skips done targets, so an interrupted run finishes the rest with nothing done twice. Several
//! processes (shards) may write the same run of the same file: writes are batched in short
//! `BEGIN IMMEDIATE` transactions and wait for each other (busy timeout).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension as _};

use super::postgres::PgConn;
use super::{verdict_kind, ScanError, ScanResult};

/// Results buffered before a commit (and the longest time one waits).
const BATCH: usize = 256;
const BATCH_AGE: Duration = Duration::from_secs(1);

pub(crate) const SCHEMA: &str = "
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

/// Where a store is: a SQLite file, or a PostgreSQL URL (`postgres://` or `postgresql://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_owned())
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for Location {
    /// The file, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => f.write_str(&super::postgres::redact(u)),
        }
    }
}

/// An open store of either kind.
pub enum Conn {
    Sqlite(Connection),
    Postgres(PgConn),
}

/// Opens (creating the tables when needed) a store.
pub fn connect(loc: &Location) -> Result<Conn, ScanError> {
    Ok(match loc {
        Location::Sqlite(p) => Conn::Sqlite(open(p)?),
        Location::Postgres(u) => Conn::Postgres(PgConn::connect(u)?),
    })
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
pub fn latest_run(conn: &Conn) -> Result<Option<String>, ScanError> {
    match conn {
        Conn::Sqlite(c) => Ok(c
            .query_row("SELECT name FROM runs ORDER BY id DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?),
        Conn::Postgres(c) => c.latest_run(),
    }
}

/// Calls `f` with each stored JSON line of a run, in target order.
pub fn for_each_result(
    conn: &Conn,
    run: &str,
    mut f: impl FnMut(&str) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let no_run = || ScanError::StoreData(format!("no run named `{run}`"));
    match conn {
        Conn::Sqlite(conn) => {
            let id: Option<i64> = conn
                .query_row("SELECT id FROM runs WHERE name = ?1", [run], |r| r.get(0))
                .optional()?;
            let id = id.ok_or_else(no_run)?;
            let mut st =
                conn.prepare("SELECT result FROM targets WHERE run_id = ?1 ORDER BY target")?;
            let mut rows = st.query([id])?;
            while let Some(row) = rows.next()? {
                let s: String = row.get(0)?;
                f(&s)?;
            }
            Ok(())
        }
        Conn::Postgres(c) => {
            let id = c.run_id(run)?.ok_or_else(no_run)?;
            c.for_each_result(id, f)
        }
    }
}

/// One result as the tables hold it (owned: the PostgreSQL store sends it to its connection's thread).
pub(crate) struct Row {
    pub key: String,
    pub host: String,
    pub port: i64,
    pub last_stage: &'static str,
    pub verdict: &'static str,
    pub failing: bool,
    pub selected_protocol: Option<String>,
    pub tls_version: Option<String>,
    pub cert_sha256: Option<String>,
    pub elapsed_ms: f64,
    pub finished_us: i64,
    pub json: String,
    pub stages: Vec<StageRow>,
    /// (stage, key, value as JSON text)
    pub facts: Vec<(&'static str, String, String)>,
}

pub(crate) struct StageRow {
    pub stage: &'static str,
    pub verdict: &'static str,
    pub start_us: i64,
    pub duration_ms: f64,
    pub bytes_c2s: i64,
    pub bytes_s2c: i64,
}

impl Row {
    fn of(r: &ScanResult) -> Result<Row, ScanError> {
        use crate::stage::Stage;
        let json = serde_json::to_string(&r.to_json())
            .map_err(|e| ScanError::StoreData(format!("encoding a result: {e}")))?;
        let mut row = Row {
            key: r.target.key(),
            host: r.target.host.clone(),
            port: i64::from(r.target.port),
            last_stage: r.last_stage_name(),
            verdict: r.verdict_name(),
            failing: r.failing(),
            selected_protocol: None,
            tls_version: None,
            cert_sha256: None,
            elapsed_ms: r.elapsed_ms,
            finished_us: now_us(),
            json,
            stages: Vec::new(),
            facts: Vec::new(),
        };
        match &r.outcome {
            super::Outcome::Probe(rep) => {
                let s = |stage: Stage, k: &str| {
                    rep.fact(stage, k)
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                };
                row.selected_protocol = s(Stage::X224, "selected_protocol");
                row.tls_version = s(Stage::Tls, "version");
                row.cert_sha256 = s(Stage::Tls, "cert_sha256");
                for stage in &rep.stages {
                    row.stages.push(StageRow {
                        stage: stage.stage.as_str(),
                        verdict: verdict_kind(&stage.verdict),
                        start_us: stage.start_us as i64,
                        duration_ms: stage.duration_ms,
                        bytes_c2s: stage.bytes_c2s as i64,
                        bytes_s2c: stage.bytes_s2c as i64,
                    });
                    for (k, v) in &stage.facts {
                        row.facts
                            .push((stage.stage.as_str(), k.clone(), v.to_string()));
                    }
                }
            }
            super::Outcome::Enum(e) => {
                // The columns people query, from what the enumeration found; each section of
                // the enumeration is a fact of the pseudo-stage `enum`.
                row.selected_protocol = e.common_offer.selected.clone();
                row.tls_version = e.tls.as_ref().and_then(|t| {
                    t.versions
                        .iter()
                        .filter(|v| v.accepted)
                        .map(|v| v.version.clone())
                        .max()
                });
                row.cert_sha256 = e
                    .tls
                    .as_ref()
                    .and_then(|t| t.certificate.as_ref())
                    .map(|c| c.sha256.clone());
                if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(e) {
                    for (k, v) in m {
                        if !matches!(k.as_str(), "target" | "address") {
                            row.facts.push(("enum", k, v.to_string()));
                        }
                    }
                }
            }
        }
        Ok(row)
    }
}

/// One run of a store, open for writing.
pub struct Store {
    conn: Conn,
    run_id: i64,
    pub run_name: String,
    pending: Vec<Row>,
    oldest: Option<Instant>,
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Store {
    /// Opens run `name` of the store at `loc`: created when new; when it exists, `join` must be
    /// set (resuming it, or one shard of it among others), so that a typo never mixes two runs.
    pub fn open_run(
        loc: &Location,
        name: &str,
        join: bool,
        command: &str,
    ) -> Result<Store, ScanError> {
        let conn = connect(loc)?;
        let existing = match &conn {
            Conn::Sqlite(c) => c
                .query_row("SELECT id FROM runs WHERE name = ?1", [name], |r| r.get(0))
                .optional()?,
            Conn::Postgres(c) => c.run_id(name)?,
        };
        let run_id = match existing {
            Some(id) if join => id,
            Some(_) => {
                return Err(ScanError::StoreData(format!(
                    "run `{name}` already exists in {loc}: pass --resume to finish it (or --shard to add a shard), or another --run name"
                )))
            }
            // Shards of one run may all create it: the first wins, the others join it.
            None => match &conn {
                Conn::Sqlite(c) => {
                    c.execute(
                        "INSERT OR IGNORE INTO runs (name, started_us, command) VALUES (?1, ?2, ?3)",
                        params![name, now_us(), command],
                    )?;
                    c.query_row("SELECT id FROM runs WHERE name = ?1", [name], |r| r.get(0))?
                }
                Conn::Postgres(c) => c.create_run(name, command)?,
            },
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
        match &self.conn {
            Conn::Sqlite(c) => {
                let mut st =
                    c.prepare_cached("SELECT 1 FROM targets WHERE run_id = ?1 AND target = ?2")?;
                Ok(st.exists(params![self.run_id, key])?)
            }
            Conn::Postgres(c) => c.is_done(self.run_id, key),
        }
    }

    /// Number of targets done in this run.
    pub fn count(&self) -> Result<u64, ScanError> {
        let n: i64 = match &self.conn {
            Conn::Sqlite(c) => c.query_row(
                "SELECT COUNT(*) FROM targets WHERE run_id = ?1",
                [self.run_id],
                |r| r.get(0),
            )?,
            Conn::Postgres(c) => c.count(self.run_id)?,
        };
        Ok(n.max(0) as u64)
    }

    /// Queues a result; commits when the batch is full or old.
    pub fn add(&mut self, r: ScanResult) -> Result<(), ScanError> {
        self.pending.push(Row::of(&r)?);
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
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                for r in &self.pending {
                    insert(&tx, self.run_id, r)?;
                }
                tx.commit()?;
                self.pending.clear();
            }
            Conn::Postgres(c) => c.insert(self.run_id, std::mem::take(&mut self.pending))?,
        }
        self.oldest = None;
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn insert(tx: &rusqlite::Transaction<'_>, run: i64, r: &Row) -> Result<(), ScanError> {
    tx.execute(
        "DELETE FROM stages WHERE run_id = ?1 AND target = ?2",
        params![run, r.key],
    )?;
    tx.execute(
        "DELETE FROM facts WHERE run_id = ?1 AND target = ?2",
        params![run, r.key],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO targets (run_id, target, host, port, last_stage, verdict, failing,
         selected_protocol, tls_version, cert_sha256, elapsed_ms, finished_us, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            run,
            r.key,
            r.host,
            r.port,
            r.last_stage,
            r.verdict,
            r.failing,
            r.selected_protocol,
            r.tls_version,
            r.cert_sha256,
            r.elapsed_ms,
            r.finished_us,
            r.json
        ],
    )?;
    let mut st = tx.prepare_cached(
        "INSERT INTO stages (run_id, target, seq, stage, verdict, start_us, duration_ms, bytes_c2s, bytes_s2c)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut ft = tx.prepare_cached(
        "INSERT OR REPLACE INTO facts (run_id, target, stage, key, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, s) in r.stages.iter().enumerate() {
        st.execute(params![
            run,
            r.key,
            i as i64,
            s.stage,
            s.verdict,
            s.start_us,
            s.duration_ms,
            s.bytes_c2s,
            s.bytes_s2c
        ])?;
    }
    for (stage, k, v) in &r.facts {
        ft.execute(params![run, r.key, stage, k, v])?;
    }
    Ok(())
}
