//! A real PostgreSQL server from Debian's packages (initdb + postgres), started for one test in a
//! temporary directory on a free loopback port (and a Unix socket in the same directory), trust
//! authentication for loopback only, fsync off. PostgreSQL refuses to run as root: as root the
//! server runs as the `postgres` system user (or `nobody`). Stopped by PID (SIGINT: fast shutdown,
//! then the process group is killed) when the value drops, also when the test panics.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use super::net::{free_port, wait_until};
use super::process::{find_binary, log_tail, ProcessGuard};

/// The superuser initdb creates.
pub const PG_USER: &str = "rdprobe";

pub struct Postgres {
    guard: ProcessGuard,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// initdb / postgres of the newest installed major version (Debian keeps them off `$PATH`).
fn pg_binary(name: &str) -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|p| p.is_file())
        .or_else(|| find_binary(name))
        .ok_or_else(|| {
            anyhow!("{name} not found: run scripts/install-peers.sh (apt-get install postgresql)")
        })
}

/// uid and gid to run the server as: ours, or as root the `postgres` user (else `nobody`).
fn server_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: getpwnam with a NUL-terminated name; the result is read before any other
        // getpw* call of this thread.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: pw is non-null and points to libc's static passwd entry.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Ok(Some((uid, gid)));
        }
    }
    bail!("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))
}

impl Postgres {
    pub fn start() -> Result<Postgres> {
        let initdb = pg_binary("initdb")?;
        let postgres = pg_binary("postgres")?;
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("rdprobe-pg")
            .tempdir()
            .context("tempdir")?;
        let data = dir.path().join("data");
        if let Some((uid, gid)) = user {
            chown(dir.path(), uid, gid)?;
        }
        let as_user = |c: &mut Command| {
            if let Some((uid, gid)) = user {
                c.uid(uid).gid(gid);
            }
            c.env("LC_ALL", "C").env_remove("PGPASSWORD");
        };
        let mut c = Command::new(&initdb);
        c.arg("-D")
            .arg(&data)
            .args(["-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null());
        as_user(&mut c);
        let out = c.output().context("run initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let logf = std::fs::File::create(&log).context("log file")?;
        if let Some((uid, gid)) = user {
            chown(&log, uid, gid)?;
        }
        let mut c = Command::new(&postgres);
        c.arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-F", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().context("log file")?)
            .stderr(logf);
        as_user(&mut c);
        let mut guard = ProcessGuard::spawn("postgres", &mut c)?;
        let url = format!("postgres://{PG_USER}@127.0.0.1:{port}/postgres");
        let ready = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            if guard.try_wait().is_some() {
                return Some(false);
            }
            postgres::Client::connect(&url, postgres::NoTls)
                .ok()
                .map(|_| true)
        });
        if ready != Some(true) {
            bail!(
                "PostgreSQL did not start on 127.0.0.1:{port}: {}",
                log_tail(&log, 20)
            );
        }
        Ok(Postgres { guard, port, dir })
    }

    /// `postgres://rdprobe@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A connection of the test's own, to look into what the store wrote.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls).expect("connect to PostgreSQL")
    }

    /// A fresh database (one per test keeps tests independent of each other).
    pub fn create_db(&self, db: &str) -> String {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .expect("create database");
        self.url(db)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown first (disconnects clients, removes the socket and pid file), then the
        // guard kills whatever is left of the group.
        if let Ok(pid) = libc::pid_t::try_from(self.guard.pid()) {
            if self.guard.try_wait().is_none() {
                // SAFETY: kill(2) on the PID of the server this value spawned and has not reaped.
                unsafe { libc::kill(pid, libc::SIGINT) };
                let _ = self.guard.wait_timeout(Duration::from_secs(10));
            }
        }
        self.guard.kill();
    }
}
