//! A lab that serves every connection in a process of its own (`rdprobe lab
//! --fork-per-connection`), the way xrdp forks a child per connection: a connection that crashes
//! its process leaves the listener serving, and the crash shows to a client only as an abrupt
//! close. The fuzzer's descendant watch (`crate::fuzz::descendants`) is tested against it.
//!
//! The listener process accepts and starts the command it is given with the connection as the
//! child's standard input (a fork followed by an exec: a tokio process cannot safely fork without
//! exec); the child serves that one connection with [`serve_stdin`] and exits. The listener
//! reaps its children, serves at most `max_connections` at once, and kills (by handle) the
//! children still running when it stops.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::planted::Bug;
use super::{driver, lab_ctx, ConnectionOutcome, LabError, LabLimits};
use crate::scenario::Scenario;

/// Accepts on `listener` until `stop` is set, each connection served by `child()` started with
/// the connection as its standard input. Returns the connections served.
pub fn serve_forking(
    listener: TcpListener,
    child: &dyn Fn() -> Command,
    max_connections: usize,
    stop: &AtomicBool,
) -> std::io::Result<u64> {
    listener.set_nonblocking(true)?;
    let mut children: Vec<Child> = Vec::new();
    let mut served = 0u64;
    while !stop.load(Ordering::Relaxed) {
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        match listener.accept() {
            Ok((tcp, peer)) => {
                if children.len() >= max_connections.max(1) {
                    tracing::warn!(%peer, max_connections, "lab connection limit reached: connection closed");
                    continue;
                }
                // The child gets a blocking socket; its runtime sets its own mode.
                let _ = tcp.set_nonblocking(false);
                let mut cmd = child();
                cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(tcp)));
                match cmd.spawn() {
                    Ok(c) => {
                        served += 1;
                        tracing::debug!(%peer, pid = c.id(), "lab child serves a connection");
                        children.push(c);
                    }
                    Err(e) => tracing::warn!(error = %e, "lab cannot start a connection's process"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                tracing::warn!(error = %e, "lab accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    for mut c in children {
        // INVARIANT: only our own children, by handle.
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(served)
}

/// In a connection's process: serves the connection that is this process's standard input with
/// `scenario` (and `bugs` armed for its local port), then returns how it went.
pub fn serve_stdin(
    scenario: Scenario,
    bugs: &[Bug],
    limits: LabLimits,
) -> Result<ConnectionOutcome, LabError> {
    use std::os::fd::FromRawFd;
    let ctx = lab_ctx(scenario, limits)?;
    // SAFETY: descriptor 0 is the connection the listener handed us; nothing else in this process
    // uses standard input, and the stream owns it from here on.
    let tcp = unsafe { std::net::TcpStream::from_raw_fd(0) };
    let bad = |source: std::io::Error| LabError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    };
    let local = tcp.local_addr().map_err(bad)?;
    let peer = tcp.peer_addr().map_err(bad)?;
    if !bugs.is_empty() && !super::is_loopback(local.ip()) {
        return Err(super::ListenError::PlantRemote(local).into());
    }
    super::planted::arm(local.port(), bugs);
    tcp.set_nonblocking(true).map_err(bad)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LabError::Runtime)?;
    let local_set = tokio::task::LocalSet::new();
    local_set.block_on(&runtime, async move {
        let tcp = tokio::net::TcpStream::from_std(tcp).map_err(bad)?;
        Ok(driver::serve(tcp, peer, Rc::new(ctx), 1).await)
    })
}
