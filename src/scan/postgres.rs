//! The PostgreSQL store (`--store postgres://user@host:port/db`): the tables of the SQLite store
//! ([`super::store`]) in a shared database, so that shards on many machines (a Kubernetes Indexed
//! Job, a Slurm array) write one run side by side, and `--resume` and `diff` work the same.
//!
//! The `postgres` crate's client runs its own small runtime and must not be called from inside the
//! scan's tokio runtime, so the connection lives on a thread of its own and the store sends it
//! closures; every answer has a deadline (and the server gets `statement_timeout`), so a database
//! that stops answering ends the scan with an error, never a hang.
//!
//! The password is never taken from the command line: it comes from the URL only when the URL
//! itself came from the environment (`RDPROBE_STORE`, e.g. a Kubernetes Secret), else from
//! `PGPASSWORD`. Connections are unencrypted (NoTls): use a loopback address, a Unix socket
//! (`postgres://user@%2Frun%2Fpostgresql/db`) or a trusted network.

use std::sync::mpsc;
use std::time::Duration;

use super::store::{now_us, Row};
use super::ScanError;

/// Longest wait for one answer of the database (connect, a query, a batch commit).
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// Connect deadline (per address tried).
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    started_us BIGINT NOT NULL,
    command TEXT
);
CREATE TABLE IF NOT EXISTS targets (
    run_id BIGINT NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    last_stage TEXT NOT NULL,
    verdict TEXT NOT NULL,
    failing BOOLEAN NOT NULL,
    selected_protocol TEXT,
    tls_version TEXT,
    cert_sha256 TEXT,
    elapsed_ms DOUBLE PRECISION NOT NULL,
    finished_us BIGINT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (run_id, target)
);
CREATE TABLE IF NOT EXISTS stages (
    run_id BIGINT NOT NULL,
    target TEXT NOT NULL,
    seq BIGINT NOT NULL,
    stage TEXT NOT NULL,
    verdict TEXT NOT NULL,
    start_us BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    bytes_c2s BIGINT NOT NULL,
    bytes_s2c BIGINT NOT NULL,
    PRIMARY KEY (run_id, target, seq)
);
CREATE TABLE IF NOT EXISTS facts (
    run_id BIGINT NOT NULL,
    target TEXT NOT NULL,
    stage TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, target, stage, key)
);
";

/// Advisory lock key serialising schema creation between shards starting at once
/// (`CREATE TABLE IF NOT EXISTS` races in PostgreSQL).
const SCHEMA_LOCK: i64 = 0x0072_6470_726f_6265;

type Job = Box<dyn FnOnce(&mut postgres::Client) + Send>;

/// A connection on its own thread.
pub struct PgConn {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The URL without its password (for messages).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match auth.rsplit_once('@') {
        Some((cred, host)) => {
            let user = cred.split_once(':').map_or(cred, |(u, _)| u);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

fn err(e: postgres::Error) -> ScanError {
    ScanError::StoreData(format!("PostgreSQL: {e}"))
}

impl PgConn {
    /// Connects and creates the tables when needed.
    pub fn connect(url: &str) -> Result<PgConn, ScanError> {
        let mut cfg: postgres::Config = url
            .parse()
            .map_err(|e| ScanError::StoreData(format!("store URL `{}`: {e}", redact(url))))?;
        if cfg.get_password().is_none() {
            if let Ok(pw) = std::env::var("PGPASSWORD") {
                cfg.password(pw);
            }
        }
        cfg.connect_timeout(CONNECT_DEADLINE);
        cfg.keepalives(true);
        cfg.keepalives_idle(Duration::from_secs(30));
        cfg.options("-c statement_timeout=50000");
        cfg.application_name("rdprobe");
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let shown = redact(url);
        let thread = std::thread::Builder::new()
            .name("store-postgres".into())
            .spawn(move || {
                let mut client = match cfg.connect(postgres::NoTls) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let schema = (|| -> Result<(), postgres::Error> {
                    let mut tx = client.transaction()?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
                    tx.batch_execute(SCHEMA)?;
                    tx.commit()
                })();
                if let Err(e) = schema {
                    let _ = ready_tx.send(Err(format!("creating the tables: {e}")));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            })?;
        let conn = PgConn {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(ANSWER_DEADLINE) {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(ScanError::StoreData(format!("PostgreSQL at {shown}: {e}"))),
            Err(_) => Err(ScanError::StoreData(format!(
                "PostgreSQL at {shown}: no connection within {} s",
                ANSWER_DEADLINE.as_secs()
            ))),
        }
    }

    /// Runs `f` on the connection's thread and waits (with a deadline) for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, ScanError> {
        let gone = || ScanError::StoreData("PostgreSQL: the connection has ended".into());
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| gone())?;
        match rx.recv_timeout(ANSWER_DEADLINE) {
            Ok(r) => r.map_err(err),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ScanError::StoreData(format!(
                "PostgreSQL: no answer within {} s",
                ANSWER_DEADLINE.as_secs()
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }

    pub fn run_id(&self, name: &str) -> Result<Option<i64>, ScanError> {
        let name = name.to_owned();
        self.call(move |c| {
            Ok(
                c.query_opt("SELECT id FROM runs WHERE name = $1", &[&name])?
                    .map(|r| r.get(0)),
            )
        })
    }

    /// Creates the run unless a shard already did; its id either way.
    pub fn create_run(&self, name: &str, command: &str) -> Result<i64, ScanError> {
        let (name, command) = (name.to_owned(), command.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO runs (name, started_us, command) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &now_us(), &command],
            )?;
            Ok(
                c.query_one("SELECT id FROM runs WHERE name = $1", &[&name])?
                    .get(0),
            )
        })
    }

    pub fn latest_run(&self) -> Result<Option<String>, ScanError> {
        self.call(|c| {
            Ok(
                c.query_opt("SELECT name FROM runs ORDER BY id DESC LIMIT 1", &[])?
                    .map(|r| r.get(0)),
            )
        })
    }

    pub fn is_done(&self, run: i64, key: &str) -> Result<bool, ScanError> {
        let key = key.to_owned();
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT 1 FROM targets WHERE run_id = $1 AND target = $2",
                &[&run, &key],
            )?
            .is_some())
        })
    }

    pub fn count(&self, run: i64) -> Result<i64, ScanError> {
        self.call(move |c| {
            Ok(
                c.query_one("SELECT COUNT(*) FROM targets WHERE run_id = $1", &[&run])?
                    .get(0),
            )
        })
    }

    /// Calls `f` with each stored JSON line of a run, in target order, read in pages (a run of
    /// millions of targets is never held at once).
    pub fn for_each_result(
        &self,
        run: i64,
        mut f: impl FnMut(&str) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        const PAGE: i64 = 1000;
        let mut after = String::new();
        let mut first = true;
        loop {
            let from = after.clone();
            let page: Vec<(String, String)> = self.call(move |c| {
                let rows = if first {
                    c.query(
                        "SELECT target, result FROM targets WHERE run_id = $1
                         ORDER BY target LIMIT $2",
                        &[&run, &PAGE],
                    )?
                } else {
                    c.query(
                        "SELECT target, result FROM targets WHERE run_id = $1 AND target > $2
                         ORDER BY target LIMIT $3",
                        &[&run, &from, &PAGE],
                    )?
                };
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })?;
            first = false;
            for (t, json) in &page {
                f(json)?;
                after.clone_from(t);
            }
            if (page.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// Commits a batch of results in one transaction: five statements whatever the batch size
    /// (arrays unnested server-side), not one round trip per row.
    pub(crate) fn insert(&self, run: i64, rows: Vec<Row>) -> Result<(), ScanError> {
        // One row per target (the last one wins, as with SQLite's INSERT OR REPLACE): a statement
        // may not update the same row twice.
        let mut by_key: std::collections::BTreeMap<String, Row> = std::collections::BTreeMap::new();
        for r in rows {
            by_key.insert(r.key.clone(), r);
        }
        let mut t = Columns::default();
        for r in by_key.into_values() {
            for (i, st) in r.stages.iter().enumerate() {
                t.s_target.push(r.key.clone());
                t.s_seq.push(i as i64);
                t.s_stage.push(st.stage.to_owned());
                t.s_verdict.push(st.verdict.to_owned());
                t.s_start.push(st.start_us);
                t.s_dur.push(st.duration_ms);
                t.s_c2s.push(st.bytes_c2s);
                t.s_s2c.push(st.bytes_s2c);
            }
            let mut facts: std::collections::BTreeMap<(&str, String), String> =
                std::collections::BTreeMap::new();
            for (stage, k, v) in r.facts {
                facts.insert((stage, k), v);
            }
            for ((stage, k), v) in facts {
                t.f_target.push(r.key.clone());
                t.f_stage.push(stage.to_owned());
                t.f_key.push(k);
                t.f_value.push(v);
            }
            t.key.push(r.key);
            t.host.push(r.host);
            t.port.push(r.port);
            t.last_stage.push(r.last_stage.to_owned());
            t.verdict.push(r.verdict.to_owned());
            t.failing.push(r.failing);
            t.proto.push(r.selected_protocol);
            t.tls.push(r.tls_version);
            t.cert.push(r.cert_sha256);
            t.elapsed.push(r.elapsed_ms);
            t.finished.push(r.finished_us);
            t.json.push(r.json);
        }
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM stages WHERE run_id = $1 AND target = ANY($2)",
                &[&run, &t.key],
            )?;
            tx.execute(
                "DELETE FROM facts WHERE run_id = $1 AND target = ANY($2)",
                &[&run, &t.key],
            )?;
            tx.execute(
                "INSERT INTO targets (run_id, target, host, port, last_stage, verdict, failing,
                 selected_protocol, tls_version, cert_sha256, elapsed_ms, finished_us, result)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[],
                   $6::text[], $7::boolean[], $8::text[], $9::text[], $10::text[],
                   $11::float8[], $12::bigint[], $13::text[])
                 ON CONFLICT (run_id, target) DO UPDATE SET host = EXCLUDED.host,
                 port = EXCLUDED.port, last_stage = EXCLUDED.last_stage,
                 verdict = EXCLUDED.verdict, failing = EXCLUDED.failing,
                 selected_protocol = EXCLUDED.selected_protocol,
                 tls_version = EXCLUDED.tls_version, cert_sha256 = EXCLUDED.cert_sha256,
                 elapsed_ms = EXCLUDED.elapsed_ms, finished_us = EXCLUDED.finished_us,
                 result = EXCLUDED.result",
                &[
                    &run,
                    &t.key,
                    &t.host,
                    &t.port,
                    &t.last_stage,
                    &t.verdict,
                    &t.failing,
                    &t.proto,
                    &t.tls,
                    &t.cert,
                    &t.elapsed,
                    &t.finished,
                    &t.json,
                ],
            )?;
            tx.execute(
                "INSERT INTO stages (run_id, target, seq, stage, verdict, start_us, duration_ms,
                 bytes_c2s, bytes_s2c)
                 SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[],
                   $6::bigint[], $7::float8[], $8::bigint[], $9::bigint[])",
                &[
                    &run,
                    &t.s_target,
                    &t.s_seq,
                    &t.s_stage,
                    &t.s_verdict,
                    &t.s_start,
                    &t.s_dur,
                    &t.s_c2s,
                    &t.s_s2c,
                ],
            )?;
            tx.execute(
                "INSERT INTO facts (run_id, target, stage, key, value)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[])",
                &[&run, &t.f_target, &t.f_stage, &t.f_key, &t.f_value],
            )?;
            tx.commit()
        })
    }
}

/// A batch as one array per column (for UNNEST).
#[derive(Default)]
struct Columns {
    key: Vec<String>,
    host: Vec<String>,
    port: Vec<i64>,
    last_stage: Vec<String>,
    verdict: Vec<String>,
    failing: Vec<bool>,
    proto: Vec<Option<String>>,
    tls: Vec<Option<String>>,
    cert: Vec<Option<String>>,
    elapsed: Vec<f64>,
    finished: Vec<i64>,
    json: Vec<String>,
    s_target: Vec<String>,
    s_seq: Vec<i64>,
    s_stage: Vec<String>,
    s_verdict: Vec<String>,
    s_start: Vec<i64>,
    s_dur: Vec<f64>,
    s_c2s: Vec<i64>,
    s_s2c: Vec<i64>,
    f_target: Vec<String>,
    f_stage: Vec<String>,
    f_key: Vec<String>,
    f_value: Vec<String>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop, which closes the connection. Not joined: a
        // thread still waiting on a database that stopped answering must not hold the exit.
        self.jobs = None;
        drop(self.thread.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://scan:s3cret@db.example:5432/rdprobe?sslmode=disable"),
            "postgres://scan@db.example:5432/rdprobe?sslmode=disable"
        );
        assert_eq!(redact("postgres://scan@h/db"), "postgres://scan@h/db");
        assert_eq!(redact("postgresql://h/db"), "postgresql://h/db");
    }
}
