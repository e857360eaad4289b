//! The embedded lab server: an RDP server on `ironrdp-acceptor` that plays a [`Scenario`].
//!
//! It is rdprobe's embedded default: `rdprobe demo`, the tests and the replayer all probe it, so no
//! external server is needed to see rdprobe work. [`spawn_lab`] binds a socket and serves every
//! connection in a thread of its own (a current-thread tokio runtime with a `LocalSet`, because the
//! acceptor's futures are `!Send`). Each connection is independent; a fault, a hostile client or a
//! panic inside a dependency ends only that connection, and every read and write has a deadline
//! (`link.read_timeout_ms`), so idle clients cannot pin the lab. [`LabLimits`] bound the rest: at most
//! `max_connections` connections are served at once (one more is closed at once and counted), and
//! each connection is closed when its total `connection_timeout` passes, however the client trickles
//! its bytes. [`check_listen`] is the policy of the command line: loopback only unless remote
//! clients are allowed, and planted bugs on loopback only.
//!
//! Layout: `driver` steps the acceptor and injects faults; `credssp` is the multi-user CredSSP
//! server; `tls` makes certificates and TLS acceptors; `io` frames PDUs and shapes the server's writes.
//!
//! Known limit: standard RDP security (PROTOCOL_RDP) is offered at encryption level NONE only, as
//! ironrdp-acceptor does (no RC4, no proprietary certificate); real servers in that mode demand
//! encryption.

mod credssp;
mod driver;
pub mod fork;
pub mod gateway;
mod io;
pub mod mutate;
pub mod planted;
pub mod tls;

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::scenario::{FaultPoint, Protocol, Scenario};

/// Why the lab could not start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("cannot start the lab thread: {0}")]
    Runtime(std::io::Error),
    #[error("cannot wait for a signal: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// Why a listen address is refused (see [`check_listen`]).
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "{0} is not a loopback address: the lab serves anyone who can reach it; pass --allow-remote \
         to listen there anyway"
    )]
    Remote(SocketAddr),
    #[error(
        "planted bugs (--plant) abort or wedge the process they run in: loopback only, and {0} is \
         not a loopback address"
    )]
    PlantRemote(SocketAddr),
}

/// True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 (0.0.0.0 and :: are not loopback: they listen
/// on every interface).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The listen policy of `rdprobe lab` and `replay --as-server`: a non-loopback address needs
/// `allow_remote`, and planted bugs (`planted`) are refused on anything but loopback.
pub fn check_listen(
    addr: SocketAddr,
    allow_remote: bool,
    planted: bool,
) -> Result<(), ListenError> {
    if is_loopback(addr.ip()) {
        Ok(())
    } else if planted {
        Err(ListenError::PlantRemote(addr))
    } else if allow_remote {
        Ok(())
    } else {
        Err(ListenError::Remote(addr))
    }
}

/// Default of [`LabLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default of [`LabLimits::connection_timeout`]: longer than a scenario's default hold
/// (`link.hold_ms`, 60 s) after a handshake, so that default scenarios play out whole.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// What one lab grants its clients, whatever the scenario says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabLimits {
    /// Most connections served at the same time; one more is closed at once (and counted in
    /// [`LabHandle::connections_refused`]).
    pub max_connections: usize,
    /// Longest one connection lives, from accept to close, however the client trickles its bytes
    /// (the scenario's delays and holds count too).
    pub connection_timeout: Duration,
}

impl Default for LabLimits {
    fn default() -> Self {
        LabLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
        }
    }
}

/// How one connection went, as the lab saw it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionOutcome {
    /// 1-based connection number.
    pub n: u64,
    pub peer: SocketAddr,
    /// The protocol the lab selected, if negotiation got that far.
    pub selected: Option<Protocol>,
    /// The last fault point the connection passed.
    pub last_point: Option<FaultPoint>,
    /// The user who authenticated (CredSSP) or whose Client Info was accepted.
    pub user: Option<String>,
    /// "connected", or how the connection ended ("fault at tls.client_hello: reset", "rejected the logon
    /// with STATUS_LOGON_FAILURE (0xC000006D)", "timed out waiting for the client's ...").
    pub result: String,
    pub duration_ms: u64,
}

/// What a server (the lab, the lab gateway) counts and keeps of its connections, shared between its
/// handle and its thread.
pub(crate) struct Tally<T> {
    accepted: AtomicU64,
    /// Connections closed at once because `max_connections` were being served.
    refused: AtomicU64,
    /// Outcomes of the connections that have ended, in the order they ended (at most
    /// [`MAX_OUTCOMES`]).
    outcomes: Mutex<VecDeque<T>>,
}

impl<T> Default for Tally<T> {
    fn default() -> Self {
        Tally {
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            outcomes: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T: Clone> Tally<T> {
    /// Counts a connection accepted; its number (from 1).
    pub(crate) fn accept(&self) -> u64 {
        self.accepted.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Counts a connection refused; how many so far.
    pub(crate) fn refuse(&self) -> u64 {
        self.refused.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Keeps the outcome of a connection that ended (dropping the oldest beyond [`MAX_OUTCOMES`]).
    pub(crate) fn record(&self, outcome: T) {
        if let Ok(mut o) = self.outcomes.lock() {
            if o.len() >= MAX_OUTCOMES {
                o.pop_front();
            }
            o.push_back(outcome);
        }
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub(crate) fn outcomes(&self) -> Vec<T> {
        self.outcomes
            .lock()
            .map(|o| o.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Most outcomes a server keeps (the oldest are dropped first).
const MAX_OUTCOMES: usize = 10_000;

/// Binds `addr` for a server that runs in a thread of its own: the listener (non-blocking, for
/// tokio), the address it got (the real port when port 0 was asked) and a current-thread runtime.
pub(crate) fn bind(
    addr: SocketAddr,
) -> Result<(std::net::TcpListener, SocketAddr, tokio::runtime::Runtime), LabError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| LabError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| LabError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| LabError::Bind { addr, source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LabError::Runtime)?;
    Ok((listener, local, runtime))
}

/// A server's own thread and the signal that stops it: stopping (or dropping) it signals the
/// accept loop and joins the thread. The lab and the lab gateway each run in one.
pub(crate) struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    pub(crate) fn new(stop: tokio::sync::oneshot::Sender<()>, thread: JoinHandle<()>) -> Self {
        ServerThread {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub(crate) fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A running lab. Dropping it stops it too.
pub struct LabHandle {
    /// The address the lab listens on (with the real port when port 0 was asked).
    pub addr: SocketAddr,
    scenario_name: String,
    server: ServerThread,
    shared: Arc<Tally<ConnectionOutcome>>,
}

impl LabHandle {
    /// Stops accepting, drops every open connection and joins the lab thread.
    pub fn stop(mut self) {
        self.server.shutdown();
    }

    /// Connections accepted so far (each is served, whatever the scenario does with it).
    pub fn connections_served(&self) -> u64 {
        self.shared.accepted()
    }

    /// Connections closed at once, unserved, because the lab was serving its `max_connections`.
    pub fn connections_refused(&self) -> u64 {
        self.shared.refused()
    }

    /// Outcomes of the connections that have ended, in the order they ended.
    pub fn outcomes(&self) -> Vec<ConnectionOutcome> {
        self.shared.outcomes()
    }

    /// Name of the scenario being served.
    pub fn scenario_name(&self) -> &str {
        &self.scenario_name
    }
}

/// Binds `addr` (port 0 = pick a free one) and serves `scenario` to every connection, in its own
/// thread with a current-thread tokio runtime and a `LocalSet`, with the default [`LabLimits`].
/// Each connection is independent.
///
/// Certificates are generated here (once per process and kind), so certificate and TLS errors are
/// reported before anything listens. The listen policy ([`check_listen`]) is the caller's.
pub fn spawn_lab(addr: SocketAddr, scenario: Scenario) -> Result<LabHandle, LabError> {
    spawn_lab_with(addr, scenario, LabLimits::default())
}

/// [`spawn_lab`] with explicit limits.
pub fn spawn_lab_with(
    addr: SocketAddr,
    scenario: Scenario,
    limits: LabLimits,
) -> Result<LabHandle, LabError> {
    let ctx = lab_ctx(scenario, limits)?;
    let (listener, local, runtime) = bind(addr)?;
    let shared = Arc::new(Tally::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scenario_name = ctx.scenario.name.clone();
    tracing::info!(addr = %local, scenario = %ctx.scenario.name, tls = ctx.tls.as_ref().map(|t| t.engine()),
        max_connections = limits.max_connections, connection_timeout_ms = limits.connection_timeout.as_millis() as u64,
        "lab listening");
    let max_connections = limits.max_connections.max(1);
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("rdprobe-lab-{}", local.port()))
        .spawn(move || {
            let ctx = Rc::new(ctx);
            let local_set = tokio::task::LocalSet::new();
            local_set.block_on(
                &runtime,
                accept_loop(listener, ctx, thread_shared, max_connections, stop_rx),
            );
        })
        .map_err(LabError::Runtime)?;
    Ok(LabHandle {
        addr: local,
        scenario_name,
        server: ServerThread::new(stop_tx, thread),
        shared,
    })
}

/// What every connection of a lab shares: the scenario, its certificate and TLS acceptor.
fn lab_ctx(scenario: Scenario, limits: LabLimits) -> Result<driver::LabCtx, LabError> {
    let (tls, public_key) = if scenario.security.supported.iter().any(|p| p.uses_tls())
        || scenario.security.select.is_some_and(|p| p.uses_tls())
    {
        match tls::certificate(scenario.tls.certificate, &scenario.tls.subject)? {
            Some(m) => (
                Some(tls::TlsServer::build(&m, &scenario.tls.versions)?),
                m.public_key.clone(),
            ),
            None => (None, Vec::new()),
        }
    } else {
        (None, Vec::new())
    };
    Ok(driver::LabCtx {
        scenario,
        tls,
        public_key,
        connection_timeout: limits.connection_timeout,
    })
}

/// Counts a connection being served for as long as it lives (also when its task panics).
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(active: &Rc<Cell<usize>>) -> Slot {
        active.set(active.get() + 1);
        Slot(active.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    ctx: Rc<driver::LabCtx>,
    shared: Arc<Tally<ConnectionOutcome>>,
    max_connections: usize,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let active = Rc::new(Cell::new(0usize));
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "lab cannot register its listener");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if active.get() >= max_connections {
                        // Over the limit: closed at once, unserved (a FIN, or a RST if the
                        // client's bytes are already waiting).
                        let refused = shared.refuse();
                        // A flood logs at warn level only at powers of two.
                        if refused.is_power_of_two() {
                            tracing::warn!(%peer, max_connections, refused, "lab connection limit reached: connection closed");
                        } else {
                            tracing::debug!(%peer, max_connections, refused, "lab connection limit reached: connection closed");
                        }
                        drop(tcp);
                        continue;
                    }
                    let slot = Slot::take(&active);
                    let n = shared.accept();
                    let ctx = ctx.clone();
                    let shared = shared.clone();
                    tokio::task::spawn_local(async move {
                        let _slot = slot;
                        shared.record(driver::serve(tcp, peer, ctx, n).await);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(error = %e, "lab accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves `scenario` on `addr` until ctrl-c or SIGTERM, then stops the lab and returns the number of
/// connections served. `on_ready` runs once the lab listens (e.g. to print its address). Works from
/// any tokio runtime: the lab itself runs on its own thread.
pub async fn run_lab_until_signal(
    addr: SocketAddr,
    scenario: Scenario,
    on_ready: impl FnOnce(&LabHandle),
) -> Result<u64, LabError> {
    let lab = spawn_lab(addr, scenario)?;
    on_ready(&lab);
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(LabError::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(LabError::Signal)?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.map_err(LabError::Signal)?;
    let served = lab.connections_served();
    let _ = tokio::task::spawn_blocking(move || lab.stop()).await;
    Ok(served)
}

/// The scenarios `rdprobe demo` plays, in order: healthy-nla, nla-required, tls-reset-at-client-hello,
/// expired-certificate, wrong-password, x224-silent.
pub fn demo_scenarios() -> Vec<Scenario> {
    [
        "healthy-nla",
        "nla-required",
        "tls-reset-at-client-hello",
        "expired-certificate",
        "wrong-password",
        "x224-silent",
    ]
    .iter()
    .filter_map(|n| crate::scenario::builtin(n))
    .collect()
}

/// The credentials a client should present to `scenario` (its first user), for the demo and tests.
/// Scenarios that reject every logon still name a user: the rejection is the point.
pub fn demo_credentials(scenario: &Scenario) -> Option<(String, String)> {
    scenario
        .identity
        .users
        .first()
        .and_then(|u| Some((u.name.clone(), u.secret()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_and_keeps_the_newest_outcomes() {
        let t = Tally::<usize>::default();
        assert_eq!((t.accept(), t.accept(), t.refuse()), (1, 2, 1));
        assert_eq!((t.accepted(), t.refused()), (2, 1));
        for i in 0..MAX_OUTCOMES + 5 {
            t.record(i);
        }
        let o = t.outcomes();
        assert_eq!(o.len(), MAX_OUTCOMES);
        assert_eq!((o[0], o[MAX_OUTCOMES - 1]), (5, MAX_OUTCOMES + 4));
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn listen_policy() {
        for ok in [
            "127.0.0.1:3389",
            "127.5.6.7:1",
            "[::1]:3389",
            "[::ffff:127.0.0.1]:3389",
        ] {
            assert!(check_listen(sa(ok), false, false).is_ok(), "{ok}");
            assert!(check_listen(sa(ok), false, true).is_ok(), "{ok} planted");
        }
        for remote in [
            "0.0.0.0:3389",
            "[::]:3389",
            "192.0.2.1:3389",
            "[2001:db8::1]:3389",
            "[::ffff:192.0.2.1]:3389",
        ] {
            assert!(
                matches!(
                    check_listen(sa(remote), false, false),
                    Err(ListenError::Remote(_))
                ),
                "{remote}"
            );
            assert!(
                check_listen(sa(remote), true, false).is_ok(),
                "{remote} allowed"
            );
            assert!(
                matches!(
                    check_listen(sa(remote), true, true),
                    Err(ListenError::PlantRemote(_))
                ),
                "{remote} planted"
            );
        }
    }

    #[test]
    fn planted_lab_refuses_a_remote_address_before_binding() {
        // 192.0.2.1 (TEST-NET-1) is on no interface: a bind would fail with another error.
        let r = planted::spawn_planted_lab(
            sa("192.0.2.1:3389"),
            crate::scenario::builtin("healthy-tls").expect("builtin"),
            &[planted::Bug::X224LongCookieHang],
        );
        assert!(
            matches!(r, Err(LabError::Listen(ListenError::PlantRemote(_)))),
            "{:?}",
            r.err()
        );
    }
}
