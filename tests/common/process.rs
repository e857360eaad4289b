//! Child processes of the tests: binary lookup with install hints, and a guard that kills by PID.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// Directories searched after `$PATH`: xrdp lives in /usr/sbin, which a non-root `$PATH` often lacks.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin"];

/// Finds `binary` on `$PATH` (or in the sbin directories), or fails with an install hint that names
/// the Debian `package` providing it.
pub fn require_binary(binary: &str, package: &str) -> Result<PathBuf> {
    find_binary(binary).ok_or_else(|| {
        anyhow!("{binary} not found: run scripts/install-peers.sh (apt-get install {package})")
    })
}

/// Finds `binary` on `$PATH` or in the sbin directories.
pub fn find_binary(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A spawned child that is killed by PID when the guard drops — also while a test unwinds from a
/// panic. The child runs in its own process group (group id = its PID), so the kill reaches any
/// helper it forks too.
#[derive(Debug)]
pub struct ProcessGuard {
    name: String,
    child: Option<Child>,
    /// Set once the child was reaped: its PID may then be reused, so it must not be signalled.
    reaped: bool,
}

impl ProcessGuard {
    /// Spawns `cmd` in a new process group. `name` is used in messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            reaped: false,
        })
    }

    /// The child's PID (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` once the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.reaped |= status.is_some();
        status
    }

    /// Mutable access to the child (to take its stdout, for instance).
    pub fn child_mut(&mut self) -> &mut Child {
        // INVARIANT: `child` is only `None` after `kill`, which consumes the guard's duty.
        self.child.as_mut().expect("process guard already killed")
    }

    /// Waits until the child exits or `timeout` passes; `None` on timeout (the child keeps running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the child: SIGTERM to its process group, SIGKILL after a grace period, then reaps it.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.reaped {
            return;
        }
        // The child is not reaped yet, so its PID (= process group id) cannot have been reused.
        signal_group(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                signal_group(child.id(), libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_group(child.id(), libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to the process group `pgid` (created by [`ProcessGuard::spawn`]).
fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the group that
    // ProcessGuard::spawn created for this child only.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            eprintln!("kill(-{pgid}, {signal}) failed: {err}");
        }
    }
}

/// Last `max_lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}
