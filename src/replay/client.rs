//! The client side of a captured connection, driven again against a server.
//!
//! [`derive_client`] (pure) reads what the captured client asked for: requested protocols
//! (MS-RDPBCGR 2.2.1.1.1), cookie or routing token, the TLS versions it offered, whether it
//! authenticated and where it stopped. [`run_client`] drives a server that way with the probe and
//! returns the new conversation; [`super::compare`] says whether the server behaves as it did.
//!
//! With `exact`, the cleartext part is byte for byte: the client's X.224 Connection Request (and,
//! under standard RDP security, its following cleartext PDUs as far as the capture has them) is
//! resent verbatim through a local relay that replaces the probe's own PDUs on their way out, and the
//! rest is driven by protocol (TLS cannot be replayed byte for byte). A capture whose client sent no
//! decodable Connection Request (garbage) is replayed verbatim turn by turn.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::decode::pdu::{stage_pdus, PduKind, ShareKind};
use crate::decode::x224::{self, Frame, X224};
use crate::probe::tap::{SharedTrace, Tap};
use crate::probe::tls::TlsVersions;
use crate::probe::{self, finish, Credentials, ProbeOptions, ProbeResult, Protocol, TlsEngine};
use crate::report::ConnectionReport;
use crate::stage::{FailureKind, Side, Stage, Verdict};
use crate::trace::{ConnectFailure, Dir, Event, EventKind, Layer, Trace};

use super::server::tls_version_of;

/// Most cleartext client PDUs kept for an exact replay.
const MAX_CLEARTEXT_PDUS: usize = 64;

/// What the captured client did.
#[derive(Clone, Debug, Serialize)]
pub struct ClientPlan {
    /// requestedProtocols of RDP_NEG_REQ (0 = standard RDP security).
    pub requested_protocols: u32,
    pub cookie: Option<String>,
    pub routing_token: Option<String>,
    /// TLS versions the client offered ("1.2", "1.3", ...).
    pub tls_versions: Vec<String>,
    /// The client sent an NTLM AUTHENTICATE (it had credentials).
    pub authenticated: bool,
    /// The user name in the NTLM AUTHENTICATE, if readable.
    pub user: Option<String>,
    /// The client stopped on its own after this stage.
    pub stop_after: Option<Stage>,
    /// The client's cleartext TPKT PDUs, the X.224 Connection Request first (for `exact`).
    #[serde(skip)]
    pub cleartext: Vec<Vec<u8>>,
    /// The client's bytes before the server's first answer, when they are not a Connection Request.
    #[serde(skip)]
    pub garbage: Option<Vec<u8>>,
    /// The client's wire turns (each run of bytes between server answers), for a verbatim replay.
    #[serde(skip)]
    pub turns: Vec<Vec<u8>>,
    pub notes: Vec<String>,
}

fn fact_in<'a>(report: &'a ConnectionReport, key: &str) -> Option<&'a serde_json::Value> {
    report.stages.iter().find_map(|s| s.facts.get(key))
}

/// The client's turns on the wire: each run of client bytes up to the server's next bytes.
fn client_turns(trace: &Trace) -> Vec<Vec<u8>> {
    let mut turns: Vec<Vec<u8>> = Vec::new();
    let mut open = false;
    for e in &trace.events {
        if let EventKind::Data {
            dir,
            layer: Layer::Wire,
            bytes,
        } = &e.kind
        {
            match dir {
                Dir::C2S => {
                    if open {
                        if let Some(t) = turns.last_mut() {
                            t.extend_from_slice(bytes);
                        }
                    } else {
                        turns.push(bytes.to_vec());
                        open = true;
                    }
                }
                Dir::S2C => open = false,
            }
        }
    }
    turns
}

/// Derives the client behaviour of one decoded connection.
pub fn derive_client(trace: &Trace, report: &ConnectionReport) -> ClientPlan {
    let mut notes = Vec::new();
    let requested = report
        .fact(Stage::X224, "requested_protocols_value")
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0);
    let cookie = fact_in(report, "cookie")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let routing_token = fact_in(report, "routing_token")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let tls_versions: Vec<String> = fact_in(report, "client_versions")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(tls_version_of))
                .map(|v| v.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let authenticated =
        fact_in(report, "contains_ntlm_response").and_then(|v| v.as_bool()) == Some(true);
    let user = fact_in(report, "ntlm_user")
        .and_then(|v| v.as_str())
        .filter(|u| !u.is_empty())
        .map(str::to_owned);

    // Where the client stopped on its own: the last stage with a PDU that was not just a close.
    let stop_after = match &report.verdict {
        Verdict::Failed {
            kind: FailureKind::Stopped,
            ..
        }
        | Verdict::Failed {
            by: Side::Client, ..
        } => {
            let mut last = None;
            for s in &report.stages {
                // A stage with a PDU other than encrypted data and alerts (TLS, licensing).
                let active = stage_pdus(s).any(|p| {
                    !(p.kind.is_any_alert()
                        || matches!(
                            p.kind,
                            PduKind::ApplicationData | PduKind::Share(ShareKind::LicenseErrorAlert)
                        ))
                });
                if active || s.stage == Stage::Tcp {
                    last = Some(s.stage);
                }
            }
            last
        }
        _ => None,
    };
    if let Some(st) = stop_after {
        notes.push(format!("the client stopped on its own after {st}"));
    }

    // The cleartext PDUs: the Connection Request, and under standard RDP security everything the
    // client sent (it all stays cleartext at encryption level NONE).
    let c2s = trace.stream(Dir::C2S, Layer::Wire);
    let standard_security = report
        .fact(Stage::X224, "selected_protocol_value")
        .and_then(|v| v.as_u64())
        == Some(0);
    let mut cleartext = Vec::new();
    let mut garbage = None;
    let mut off = 0usize;
    while off < c2s.len() && cleartext.len() < MAX_CLEARTEXT_PDUS {
        let Frame::Tpkt(len) = x224::frame(&c2s[off..]) else {
            break;
        };
        let pdu = &c2s[off..off + len];
        if cleartext.is_empty() && !matches!(x224::decode_tpkt(pdu), X224::ConnectionRequest(_)) {
            break;
        }
        cleartext.push(pdu.to_vec());
        off += len;
        if !standard_security {
            break;
        }
    }
    let turns = client_turns(trace);
    if cleartext.is_empty() {
        if let Some(first) = turns.first() {
            notes.push(format!(
                "the client's first {} bytes are not an X.224 Connection Request: --exact replays them verbatim",
                first.len()
            ));
            garbage = Some(first.clone());
        }
    }
    if routing_token.is_some() {
        notes.push(
            "the client sent a routing token: only --exact resends it (the probe sends cookies)"
                .to_owned(),
        );
    }
    ClientPlan {
        requested_protocols: requested,
        cookie,
        routing_token,
        tls_versions,
        authenticated,
        user,
        stop_after,
        cleartext,
        garbage,
        turns,
        notes,
    }
}

impl ClientPlan {
    /// Probe options that behave like the captured client. Credentials: `credentials` if given; else,
    /// when the captured client authenticated, its user name with an empty password (a capture holds
    /// no password, and a server that rejected the logon rejects this one too).
    pub fn probe_options(
        &self,
        host: &str,
        port: u16,
        credentials: Option<Credentials>,
        stage_timeout: Duration,
        deadline: Duration,
    ) -> ProbeOptions {
        let mut o = ProbeOptions::new(host, port);
        o.stage_timeout = stage_timeout;
        o.deadline = deadline;
        o.protocols = protocols_of(self.requested_protocols);
        o.cookie = self.cookie.clone();
        o.stop_after = self.stop_after;
        let has = |v: &str| self.tls_versions.iter().any(|x| x == v);
        let modern = has("1.2") || has("1.3");
        o.tls_versions = match (has("1.2"), has("1.3")) {
            (true, false) => TlsVersions::Only12,
            (false, true) => TlsVersions::Only13,
            _ => TlsVersions::Both,
        };
        o.tls_engine = if !self.tls_versions.is_empty() && !modern {
            TlsEngine::Legacy
        } else {
            TlsEngine::Rustls
        };
        if self.authenticated {
            o.credentials = credentials.or_else(|| {
                Some(Credentials {
                    user: self.user.clone().unwrap_or_else(|| "rdprobe".to_owned()),
                    domain: None,
                    password: String::new(),
                })
            });
        }
        o
    }
}

fn protocols_of(requested: u32) -> Vec<Protocol> {
    let mut v = Vec::new();
    if requested & x224::PROTOCOL_SSL != 0 {
        v.push(Protocol::Ssl);
    }
    if requested & x224::PROTOCOL_HYBRID != 0 {
        v.push(Protocol::Hybrid);
    }
    if requested & x224::PROTOCOL_HYBRID_EX != 0 {
        v.push(Protocol::HybridEx);
    }
    if v.is_empty() {
        v.push(Protocol::Rdp);
    }
    v
}

/// How to run a client replay.
#[derive(Clone, Debug)]
pub struct ClientRunOptions {
    pub host: String,
    pub port: u16,
    pub exact: bool,
    pub credentials: Option<Credentials>,
    pub stage_timeout: Duration,
    pub deadline: Duration,
}

/// Drives the server like the captured client did and returns the new conversation, decoded.
pub async fn run_client(plan: &ClientPlan, opts: &ClientRunOptions) -> ProbeResult {
    let probe_opts = plan.probe_options(
        &opts.host,
        opts.port,
        opts.credentials.clone(),
        opts.stage_timeout,
        opts.deadline,
    );
    if opts.exact {
        if let Some(bytes) = &plan.garbage {
            return run_verbatim(bytes, opts).await;
        }
        if !plan.cleartext.is_empty() {
            return run_relayed(plan, &probe_opts, opts).await;
        }
    }
    probe::probe(&probe_opts).await
}

async fn connect(opts: &ClientRunOptions, shared: &SharedTrace) -> Option<TcpStream> {
    let addr = match tokio::time::timeout(
        opts.stage_timeout,
        tokio::net::lookup_host((opts.host.as_str(), opts.port)),
    )
    .await
    {
        Ok(Ok(mut it)) => it.next(),
        _ => None,
    };
    let Some(addr) = addr else {
        shared.push(EventKind::ConnectFailed(ConnectFailure::Unreachable {
            detail: format!("cannot resolve {}", opts.host),
        }));
        return None;
    };
    shared.set_addrs(unspecified_for(addr), addr);
    let start = Instant::now();
    match tokio::time::timeout(opts.stage_timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            shared.push(EventKind::ConnectFailed(ConnectFailure::TimedOut {
                after_ms: start.elapsed().as_millis() as u64,
            }));
            None
        }
        Ok(Err(e)) => {
            shared.push(EventKind::ConnectFailed(
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    ConnectFailure::Refused
                } else {
                    ConnectFailure::Unreachable {
                        detail: e.to_string(),
                    }
                },
            ));
            None
        }
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            if let Ok(local) = s.local_addr() {
                shared.set_addrs(local, addr);
            }
            shared.push(EventKind::Connected);
            Some(s)
        }
    }
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// Sends `bytes` verbatim, then records whatever the server does until it ends the connection or
/// stays silent for the stage timeout.
async fn run_verbatim(bytes: &[u8], opts: &ClientRunOptions) -> ProbeResult {
    let shared = SharedTrace::new(Trace::new(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::from(([0, 0, 0, 0], 0)),
    ));
    let Some(tcp) = connect(opts, &shared).await else {
        return finish(&shared);
    };
    let mut s = Tap::new(tcp, shared.clone(), Layer::Wire);
    let started = Instant::now();
    match tokio::time::timeout(opts.stage_timeout, s.write_all(bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return finish(&shared),
        Err(_) => {
            shared.write_timed_out(started);
            // Unsent bytes are dropped with a RST rather than left to the kernel to retry.
            let _ = s.get_ref().set_zero_linger();
            return finish(&shared);
        }
    }
    let mut buf = [0u8; 16 * 1024];
    let mut quiet_since = Instant::now();
    let mut got = 0usize;
    loop {
        // After the server has answered, a short quiet period ends the wait (it said its piece).
        let wait = if got > 0 {
            Duration::from_millis(500).min(opts.stage_timeout)
        } else {
            opts.stage_timeout
        };
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Err(_) => {
                if got == 0 {
                    shared.push(EventKind::Timeout {
                        waiting_for: Dir::S2C,
                        after_ms: quiet_since.elapsed().as_millis() as u64,
                    });
                }
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return finish(&shared),
            Ok(Ok(n)) => {
                got += n;
                quiet_since = Instant::now();
                if got > probe::MAX_PDU_LEN {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), s.shutdown()).await;
    finish(&shared)
}

/// Runs the probe through a local relay that sends the captured cleartext PDUs in place of the
/// probe's own, then merges the relay's wire record (the truth of what crossed to the server) with
/// the probe's inner record (the cleartext above TLS).
async fn run_relayed(
    plan: &ClientPlan,
    probe_opts: &ProbeOptions,
    opts: &ClientRunOptions,
) -> ProbeResult {
    let wire = SharedTrace::new(Trace::new(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::from(([0, 0, 0, 0], 0)),
    ));
    let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(l) => l,
        Err(e) => {
            wire.push(EventKind::Note(format!(
                "cannot start the exact-replay relay: {e}"
            )));
            return finish(&wire);
        }
    };
    let Ok(relay_addr) = listener.local_addr() else {
        return finish(&wire);
    };
    let relay = {
        let wire = wire.clone();
        let opts = opts.clone();
        let pdus = plan.cleartext.clone();
        tokio::spawn(async move { relay_one(listener, &opts, &wire, pdus).await })
    };
    let mut po = probe_opts.clone();
    po.host = relay_addr.ip().to_string();
    po.port = relay_addr.port();
    let probed = probe::probe(&po).await;
    let abort = relay.abort_handle();
    if tokio::time::timeout(Duration::from_secs(3), relay)
        .await
        .is_err()
    {
        // A relay still waiting on the server is not left running after the replay.
        abort.abort();
    }
    let mut merged = wire.snapshot();
    merge_inner(&mut merged, &probed.trace);
    let decoded = crate::decode::decode(&merged);
    ProbeResult {
        trace: merged,
        report: decoded.report,
        labels: decoded.labels,
    }
}

/// Adds the probe's own observations (inner layer, TLS session, timeouts, notes) to the relay's wire
/// record, in time order.
fn merge_inner(wire: &mut Trace, probed: &Trace) {
    let extra: Vec<Event> = probed
        .events
        .iter()
        .filter(|e| match &e.kind {
            EventKind::Data { layer, .. } | EventKind::Elided { layer, .. } => {
                *layer == Layer::Inner
            }
            EventKind::TlsSession(_)
            | EventKind::TlsError { .. }
            | EventKind::Timeout { .. }
            | EventKind::StoppedAfter(_)
            | EventKind::Note(_) => true,
            _ => false,
        })
        .cloned()
        .collect();
    let mut all = std::mem::take(&mut wire.events);
    all.extend(extra);
    // INVARIANT: a stable sort keeps each stream's own order; the Trace needs non-decreasing times.
    all.sort_by_key(|e| e.t_us);
    wire.events = all;
    for k in &probed.keylog {
        if !wire.keylog.contains(k) {
            wire.keylog.push(k.clone());
        }
    }
}

/// Accepts the probe's connection, connects to the server, replaces the probe's first cleartext
/// PDUs with `pdus` and relays everything else both ways until either side ends.
async fn relay_one(
    listener: TcpListener,
    opts: &ClientRunOptions,
    wire: &SharedTrace,
    pdus: Vec<Vec<u8>>,
) {
    let Ok(Ok((down, _))) = tokio::time::timeout(opts.deadline, listener.accept()).await else {
        return;
    };
    let _ = down.set_nodelay(true);
    let Some(up) = connect(opts, wire).await else {
        let _ = down.set_zero_linger();
        return;
    };
    let (mut down_r, mut down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    let mut up_r = Tap::new(up_r, wire.clone(), Layer::Wire);
    let mut up_w = Tap::new(up_w, wire.clone(), Layer::Wire);
    let deadline = tokio::time::Instant::now() + opts.deadline;

    let reset = {
        let c2s = async {
            let mut pending: Vec<u8> = Vec::new();
            let mut replaced = 0usize;
            let mut cleartext = true;
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match tokio::time::timeout_at(deadline, down_r.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                if !cleartext {
                    if !relay_write(&mut up_w, &buf[..n], opts.stage_timeout, Some(wire)).await {
                        return;
                    }
                    continue;
                }
                pending.extend_from_slice(&buf[..n]);
                // Replace whole cleartext PDUs while the capture has one for this position.
                loop {
                    match x224::frame(&pending) {
                        Frame::Tpkt(len) | Frame::FastPath(len) if replaced < pdus.len() => {
                            let _probe_pdu: Vec<u8> = pending.drain(..len).collect();
                            if !relay_write(
                                &mut up_w,
                                &pdus[replaced],
                                opts.stage_timeout,
                                Some(wire),
                            )
                            .await
                            {
                                return;
                            }
                            replaced += 1;
                        }
                        Frame::Incomplete if replaced < pdus.len() => break,
                        _ => {
                            // Past the captured PDUs (or not cleartext RDP any more, e.g. a ClientHello).
                            cleartext = false;
                            if !pending.is_empty()
                                && !relay_write(&mut up_w, &pending, opts.stage_timeout, Some(wire))
                                    .await
                            {
                                return;
                            }
                            pending.clear();
                            break;
                        }
                    }
                }
            }
            let _ = tokio::time::timeout(opts.stage_timeout, up_w.shutdown()).await;
        };
        let s2c = async {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match tokio::time::timeout_at(deadline, up_r.read(&mut buf)).await {
                    Ok(Ok(0)) => {
                        let _ = tokio::time::timeout(opts.stage_timeout, down_w.shutdown()).await;
                        return false;
                    }
                    Ok(Ok(n)) => {
                        if !relay_write(&mut down_w, &buf[..n], opts.stage_timeout, None).await {
                            return false;
                        }
                    }
                    // The server reset the connection.
                    Ok(Err(_)) => return true,
                    Err(_) => return false,
                }
            }
        };
        tokio::pin!(c2s);
        tokio::pin!(s2c);
        tokio::select! {
            reset = &mut s2c => {
                if !reset {
                    // The server closed: let the probe finish its side.
                    let _ = tokio::time::timeout_at(deadline, &mut c2s).await;
                }
                reset
            }
            _ = &mut c2s => {
                // The probe is done: give the server a moment to end its side.
                tokio::time::timeout(Duration::from_secs(2), &mut s2c).await.unwrap_or(false)
            }
        }
    };
    if reset {
        // Pass the reset on so the probe sees what the server did.
        if let Ok(down) = down_r.reunite(down_w) {
            let _ = down.set_zero_linger();
        }
    }
}

/// One relay write within `timeout`; `false` when it failed or timed out. A timeout writing to the
/// server (`wire` given) is recorded there: the server stopped reading.
async fn relay_write<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    timeout: Duration,
    wire: Option<&SharedTrace>,
) -> bool {
    let started = Instant::now();
    match tokio::time::timeout(timeout, w.write_all(bytes)).await {
        Ok(r) => r.is_ok(),
        Err(_) => {
            if let Some(wire) = wire {
                wire.write_timed_out(started);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(protocols_of(0), vec![Protocol::Rdp]);
        assert_eq!(
            protocols_of(11),
            vec![Protocol::Ssl, Protocol::Hybrid, Protocol::HybridEx]
        );
        assert_eq!(protocols_of(2), vec![Protocol::Hybrid]);
    }
}
