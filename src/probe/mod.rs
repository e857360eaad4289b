//! The live probe: drives IronRDP's `ClientConnector` one PDU at a time over a tapped socket, with a
//! deadline on every wait, and hands the resulting Trace to `decode`.
//!
//! The probe itself decides nothing about verdicts: it records what happened (bytes, FIN/RST,
//! timeouts, its own TLS session facts) and `decode` judges. That is what keeps a live verdict equal
//! to `analyze` of the capture the probe wrote.

pub mod step;
pub mod tap;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ironrdp_connector::credssp::CredsspSequence;
use ironrdp_connector::{ClientConnector, ClientConnectorState};
use ironrdp_core::WriteBuf;
use ironrdp_pdu::nego::SecurityProtocol;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::report::ConnectionReport;
use crate::stage::Stage;
use crate::trace::{ConnectFailure, Dir, EventKind, Layer, TlsSessionInfo, Trace};
use tap::{SharedTrace, Tap};

/// Largest PDU the probe accepts from a server, in bytes (TPKT caps at 65535; TSRequests are small).
pub use crate::net::framed::MAX_PDU_LEN;

/// Security protocols the client may offer in RDP_NEG_REQ (MS-RDPBCGR 2.2.1.1.1): the one
/// protocol type of [`crate::codes`].
pub use crate::codes::Protocol;

/// Which TLS engine to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsEngine {
    /// rustls; if the server speaks only legacy TLS, reconnect with OpenSSL.
    Auto,
    Rustls,
    Legacy,
}

/// Credentials for CredSSP / the Client Info PDU. The password never leaves this struct except into
/// the authentication exchange.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub domain: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub host: String,
    pub port: u16,
    /// Protocols offered; empty means the default (SSL | HYBRID | HYBRID_EX).
    pub protocols: Vec<Protocol>,
    pub stop_after: Option<Stage>,
    /// Deadline for each wait on the server (connect, each PDU, the TLS handshake).
    pub stage_timeout: Duration,
    /// Deadline for the whole probe.
    pub deadline: Duration,
    pub credentials: Option<Credentials>,
    pub tls_engine: TlsEngine,
    pub tls_versions: tls::TlsVersions,
    /// X.224 cookie (mstshash); defaults to the user name.
    pub cookie: Option<String>,
    /// clientName of the Client Core Data (up to 15 characters); defaults to "rdprobe".
    pub client_name: Option<String>,
    /// Capture the connection's real packets with a packet socket (needs CAP_NET_RAW; without it
    /// the capture is synthetic and the `tcp` stage says `capture: synthetic`).
    pub capture_wire: bool,
    /// Clamp the TCP maximum segment size (`TCP_MAXSEG` before the connect).
    pub mss: Option<u16>,
    /// Connect to this address instead of resolving `host` (each address of `--all-addresses`).
    pub address: Option<std::net::IpAddr>,
    /// The resolution of `host` that gave `address` (reported as the `dns` stage).
    pub resolved: Option<crate::net::DnsLookup>,
}

impl ProbeOptions {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ProbeOptions {
            host: host.into(),
            port,
            protocols: Vec::new(),
            stop_after: None,
            stage_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
            credentials: None,
            tls_engine: TlsEngine::Auto,
            tls_versions: tls::TlsVersions::Both,
            cookie: None,
            client_name: None,
            capture_wire: false,
            mss: None,
            address: None,
            resolved: None,
        }
    }

    fn security_protocol(&self) -> SecurityProtocol {
        if self.protocols.is_empty() {
            return SecurityProtocol::SSL | SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX;
        }
        let mut p = SecurityProtocol::empty();
        for proto in &self.protocols {
            match proto {
                Protocol::Rdp => {}
                Protocol::Ssl => p |= SecurityProtocol::SSL,
                Protocol::Hybrid => p |= SecurityProtocol::HYBRID,
                Protocol::HybridEx => p |= SecurityProtocol::HYBRID_EX,
            }
        }
        p
    }
}

/// The outcome of a probe: the Trace (what happened) and its decoded report (what it means).
#[derive(Debug)]
pub struct ProbeResult {
    pub trace: Trace,
    pub report: ConnectionReport,
    /// Per-event labels for the capture writer (`labels[i]` names `trace.events[i]`).
    pub labels: Vec<String>,
}

/// Runs a probe to completion (or to its deadline) and decodes the result.
pub async fn probe(opts: &ProbeOptions) -> ProbeResult {
    let shared = SharedTrace::new(Trace::new(unspecified(), unspecified()));
    run_into(opts, &shared).await;
    finish_for(&shared, opts)
}

/// How long the capture goes on after the probe closed its socket (the peer's FIN/ACK and the
/// last ACKs are on their way).
const WIRE_LINGER: Duration = Duration::from_millis(200);

/// [`finish`] for a direct live probe: stops the wire capture (if any), adds the `dns` stage and
/// the live-only facts of the `tcp` stage (`capture`: wire or synthetic, the kernel's `TCP_INFO`),
/// and names the target as given when its name never resolved (rather than an unspecified
/// address).
pub fn finish_for(shared: &SharedTrace, opts: &ProbeOptions) -> ProbeResult {
    shared.finish_wire(WIRE_LINGER);
    let mut r = finish(shared);
    if r.trace.server.port() == 0 {
        // The name never resolved: say which name rather than an unspecified address.
        r.report.server = format!("{}:{}", opts.host, opts.port);
        r.report.client = "-".into();
        if let Some(s) = r.report.stages.iter_mut().find(|s| s.stage == Stage::Tcp) {
            s.facts
                .insert("server".into(), serde_json::json!(r.report.server));
        }
    }
    let captured = r.trace.wire.as_ref().is_some_and(|w| !w.packets.is_empty());
    if let Some(s) = r.report.stages.iter_mut().find(|s| s.stage == Stage::Tcp) {
        let how = if captured { "wire" } else { "synthetic" };
        s.facts.insert("capture".into(), serde_json::json!(how));
        if let Some(m) = opts.mss {
            s.facts.insert("mss_clamped".into(), serde_json::json!(m));
        }
        if let Some(k) = &r.trace.kernel {
            for (key, v) in [
                ("kernel_retransmits", serde_json::json!(k.total_retrans)),
                (
                    "kernel_rtt_ms",
                    serde_json::json!(f64::from(k.rtt_us) / 1000.0),
                ),
                (
                    "kernel_rttvar_ms",
                    serde_json::json!(f64::from(k.rttvar_us) / 1000.0),
                ),
                ("kernel_pmtu", serde_json::json!(k.pmtu)),
                ("kernel_snd_mss", serde_json::json!(k.snd_mss)),
                ("kernel_rcv_mss", serde_json::json!(k.rcv_mss)),
                ("kernel_lost", serde_json::json!(k.lost)),
            ] {
                s.facts.insert(key.into(), v);
            }
        }
    }
    if let Some(m) = r.trace.mss_search.clone() {
        mss_facts(&mut r.report, &m);
    }
    if let Some(d) = r.trace.dns.clone() {
        dns_stage(&mut r.report, &d, opts.port);
        if opts.stop_after == Some(Stage::Dns) && d.error.is_none() {
            stopped_after_dns(&mut r.report, &d);
        }
    }
    r
}

/// The path-MTU search in the report: facts of the `tcp` stage and a note in words.
fn mss_facts(report: &mut ConnectionReport, m: &wire::MssSearch) {
    let first = m
        .first_mss
        .map_or_else(|| "its own".to_owned(), |v| v.to_string());
    let note = match m.passed {
        Some(p) => format!(
            "path-MTU black hole: with MSS {first} the {} stage stalled after the server had acknowledged everything the client sent; with the MSS clamped it passes: the largest MSS that passes is {p}{}. A link on the path has a smaller MTU and its ICMP 'fragmentation needed' does not come back (lower the MTU or clamp the MSS on the path)",
            m.stalled_stage,
            if m.stalled.is_empty() {
                String::new()
            } else {
                format!(
                    " (stalled at {})",
                    m.stalled
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        None => format!(
            "the {} stage stalled after the server had acknowledged everything the client sent, and stalled again with the MSS clamped to {}: not a path-MTU black hole (the server went silent)",
            m.stalled_stage, MSS_FLOOR
        ),
    };
    report.notes.push(note);
    if let Some(s) = report.stages.iter_mut().find(|s| s.stage == Stage::Tcp) {
        s.facts.insert(
            "mtu_black_hole".into(),
            serde_json::json!(m.passed.is_some()),
        );
        if let Some(p) = m.passed {
            s.facts
                .insert("mss_largest_passing".into(), serde_json::json!(p));
        }
        s.facts
            .insert("mss_stalled".into(), serde_json::json!(m.stalled));
        if let Some(f) = m.first_mss {
            s.facts.insert("mss_first".into(), serde_json::json!(f));
        }
    }
}

/// Puts the `dns` stage first in a live report; when the name did not resolve it is the failing
/// stage and the only one.
fn dns_stage(report: &mut ConnectionReport, d: &crate::net::DnsLookup, port: u16) {
    use crate::stage::{FailureKind, Side, Verdict};
    let mut facts = crate::report::Facts::new();
    facts.insert("name".into(), serde_json::json!(d.name));
    let list: Vec<String> = d.addresses.iter().map(|a| a.to_string()).collect();
    facts.insert("addresses".into(), serde_json::json!(list));
    facts.insert(
        "resolve_ms".into(),
        serde_json::json!(d.took_us as f64 / 1000.0),
    );
    if let Some(t) = d.tried {
        facts.insert("tried".into(), serde_json::json!(t.to_string()));
    }
    let verdict = match &d.error {
        None => Verdict::Ok,
        Some(e) => {
            facts.insert("error".into(), serde_json::json!(e));
            Verdict::Failed {
                kind: FailureKind::Unreachable {
                    detail: format!("the name {} does not resolve: {e}", d.name),
                },
                by: Side::Network,
            }
        }
    };
    let stage = crate::report::StageReport {
        stage: Stage::Dns,
        verdict: verdict.clone(),
        start_us: d.start_us,
        duration_ms: d.took_us as f64 / 1000.0,
        bytes_c2s: 0,
        bytes_s2c: 0,
        frames: Vec::new(),
        facts,
    };
    if d.error.is_some() {
        report.stages = vec![stage];
        report.last_stage = Stage::Dns;
        report.verdict = verdict;
        report.ended_by = None;
        report.server = format!("{}:{port}", d.name);
        report.summary = format!(
            "dns failed: the name {} does not resolve ({}); no connection was tried",
            d.name,
            d.error.as_deref().unwrap_or_default()
        );
        report.notes.clear();
    } else {
        report.stages.insert(0, stage);
        report.notes.insert(
            0,
            format!(
                "{}; connected to {}",
                resolved_words(d),
                d.tried.map(|t| t.to_string()).unwrap_or_default()
            ),
        );
    }
}

/// `--stop-after dns`: the report is the `dns` stage alone, stopped on purpose.
fn stopped_after_dns(report: &mut ConnectionReport, d: &crate::net::DnsLookup) {
    use crate::stage::{FailureKind, Side, Verdict};
    report.stages.retain(|s| s.stage == Stage::Dns);
    report.last_stage = Stage::Dns;
    report.verdict = Verdict::Failed {
        kind: FailureKind::Stopped,
        by: Side::Client,
    };
    report.ended_by = Some(Side::Client);
    report.tcp = None;
    report.client = "-".into();
    report.summary = format!(
        "stopped after dns by request: {}; no connection was tried",
        resolved_words(d)
    );
    report.notes.clear();
}

/// "NAME resolved to A, B in 1.8 ms".
fn resolved_words(d: &crate::net::DnsLookup) -> String {
    let list: Vec<String> = d.addresses.iter().map(|a| a.to_string()).collect();
    format!(
        "{} resolved to {} in {:.1} ms",
        d.name,
        list.join(", "),
        d.took_us as f64 / 1000.0
    )
}

/// Decodes whatever the shared trace holds now (also used after an interruption).
pub fn finish(shared: &SharedTrace) -> ProbeResult {
    let trace = shared.snapshot();
    let decoded = crate::decode::decode(&trace);
    ProbeResult {
        trace,
        report: decoded.report,
        labels: decoded.labels,
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Runs the probe, recording into `shared`. Never panics on server behaviour; every wait is bounded
/// by the stage timeout and the whole run by the deadline.
pub async fn run_into(opts: &ProbeOptions, shared: &SharedTrace) {
    use futures_util::FutureExt as _;
    let deadline = opts.deadline;
    // A bug of ours (or of a library under us) on some server's bytes must still leave the
    // capture and the JSON of what was observed: the panic is recorded, not propagated.
    let run = std::panic::AssertUnwindSafe(run_outer(opts, shared, deadline))
        .catch_unwind()
        .await;
    if let Err(panic) = run {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        shared.push(EventKind::Note(format!(
            "internal error: the probe stopped on a bug ({what}); everything observed before it is kept"
        )));
    }
    // Dropping the socket sends a FIN when no explicit close did: record it so the capture and the
    // live verdict agree on how the conversation ended.
    let established = shared.has_event(|k| matches!(k, EventKind::Connected));
    let ended = shared.has_event(|k| matches!(k, EventKind::Rst { .. }));
    if established && !ended && !shared.fin_seen(Dir::C2S) {
        shared.fin(Dir::C2S);
    }
}

async fn run_outer(opts: &ProbeOptions, shared: &SharedTrace, deadline: Duration) {
    match tokio::time::timeout(deadline, run_inner(opts, shared, opts.tls_engine)).await {
        Ok(Retry::No) => {
            if opts.capture_wire && opts.mss.is_none() {
                if let Some((stage, first_mss)) = stalled_after_acked(shared).await {
                    mss_search(shared, opts, deadline, stage, first_mss).await;
                }
            }
        }
        Ok(Retry::StandardRdp) => {
            // Like mstsc, accept the server's choice of standard RDP security: reconnect offering it.
            let mut rdp_opts = opts.clone();
            rdp_opts.protocols = vec![Protocol::Rdp];
            reconnect(shared, &rdp_opts, opts.tls_engine, deadline, |port| {
                format!(
                    "the server selected standard RDP security (PROTOCOL_RDP) when offered TLS/NLA on a first \
                     connection from port {port}: reconnected offering PROTOCOL_RDP"
                )
            })
            .await;
        }
        Ok(Retry::Legacy(reason)) => {
            // The server speaks no TLS version / cipher rustls offers: reconnect with the legacy engine.
            reconnect(shared, opts, TlsEngine::Legacy, deadline, |port| {
                format!(
                    "modern TLS (1.2/1.3) was refused ({reason}) on a first connection from port {port}; \
                     reconnected with the legacy TLS engine"
                )
            })
            .await;
        }
        Err(_) => {
            shared.push(EventKind::Note(format!(
                "overall deadline of {} ms reached",
                deadline.as_millis()
            )));
            if !shared.fin_seen(Dir::C2S) {
                shared.push(EventKind::Timeout {
                    waiting_for: Dir::S2C,
                    after_ms: deadline.as_millis() as u64,
                });
            }
        }
    }
}

/// The smallest MSS the path-MTU search tries (RFC 879's default, what every IPv4 path carries).
const MSS_FLOOR: u16 = 536;
/// The search stops when the largest passing and the smallest stalling MSS are this close.
const MSS_STEP: u16 = 64;

/// When the connection timed out waiting for the server after the server had answered before and
/// had acknowledged everything the client sent (the client's bytes arrived, the server's answer
/// does not): the stage that stalled and the segment size the kernel used. The signature of a
/// path-MTU black hole (the server's full-size segments are dropped on the way, small ACKs pass),
/// or of a server that went silent; a retry with a clamped MSS tells them apart.
async fn stalled_after_acked(shared: &SharedTrace) -> Option<(Stage, Option<u32>)> {
    let t = shared.snapshot();
    let timed_out = t.events.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::Timeout {
                waiting_for: Dir::S2C,
                ..
            }
        )
    });
    let answered = t.events.iter().any(|e| {
        matches!(&e.kind, EventKind::Data { dir: Dir::S2C, layer: Layer::Wire, bytes } if !bytes.is_empty())
    });
    if !timed_out || !answered {
        return None;
    }
    // The last ACK (of the client's FIN) may still be on its way.
    let mut info = shared.kernel_now()?;
    for _ in 0..5 {
        if info.unacked == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = shared.kernel_now()?;
    }
    if info.unacked != 0 {
        return None;
    }
    let stage = crate::decode::decode(&t).report.last_stage;
    (stage > Stage::Tcp).then_some((stage, Some(info.snd_mss)))
}

/// Retries the connection with clamped MSS values (`TCP_MAXSEG`): first [`MSS_FLOOR`]; when that
/// passes the stage that stalled, a bisection between it and the stalled size finds the largest
/// that passes (to within [`MSS_STEP`]). The connection at the largest passing size becomes the
/// report's conversation; the search rides in `Trace::mss_search`.
async fn mss_search(
    shared: &SharedTrace,
    opts: &ProbeOptions,
    deadline: Duration,
    stage: Stage,
    first_mss: Option<u32>,
) {
    let started = Instant::now();
    let mut search = wire::MssSearch {
        stalled_stage: stage.to_string(),
        first_mss,
        passed: None,
        stalled: Vec::new(),
    };
    // On a link with a large MTU (loopback) the kernel's MSS says nothing of the path: an Ethernet
    // path's 1460 is the top.
    let mut hi = first_mss.map_or(1460, |m| m.min(1460)) as u16;
    let mut best: Option<Trace> = None;
    let mut candidate = MSS_FLOOR;
    while candidate < hi && started.elapsed() < deadline {
        let mut o = opts.clone();
        o.mss = Some(candidate);
        let fresh = SharedTrace::new(Trace::new(unspecified(), unspecified()));
        let _ = tokio::time::timeout(deadline, run_inner(&o, &fresh, opts.tls_engine)).await;
        fresh.finish_wire(WIRE_LINGER);
        let t = fresh.snapshot();
        let passed = crate::decode::decode(&t)
            .report
            .stage(stage)
            .is_some_and(|s| s.verdict.is_ok());
        if passed {
            search.passed = Some(candidate);
            best = Some(t);
        } else {
            search.stalled.push(candidate);
            hi = candidate;
            if best.is_none() {
                break;
            }
        }
        let lo = search.passed.unwrap_or(MSS_FLOOR);
        if hi.saturating_sub(lo) <= MSS_STEP {
            break;
        }
        candidate = (lo + (hi - lo) / 2) & !7;
    }
    match best {
        Some(mut t) => {
            let note = format!(
                "the first connection (client port {}) stalled at {stage} after the server had acknowledged everything the client sent; this report is of a connection with the MSS clamped to {}",
                shared.snapshot().client.port(),
                search.passed.unwrap_or_default()
            );
            let t_us = t
                .events
                .first()
                .map_or_else(crate::trace::now_us, |e| e.t_us);
            t.events.insert(
                0,
                crate::trace::Event {
                    t_us,
                    frame: None,
                    kind: EventKind::Note(note),
                },
            );
            t.mss_search = Some(search);
            shared.replace(t);
        }
        None => shared.edit(|t| t.mss_search = Some(search)),
    }
}

/// Runs a second connection and keeps it as the report's conversation; the first one is described in
/// a note (`note` gets the first connection's client port).
async fn reconnect(
    shared: &SharedTrace,
    opts: &ProbeOptions,
    engine: TlsEngine,
    deadline: Duration,
    note: impl FnOnce(u16) -> String,
) {
    let first_port = shared.snapshot().client.port();
    let fresh = SharedTrace::new(Trace::new(unspecified(), unspecified()));
    let _ = tokio::time::timeout(deadline, run_inner(opts, &fresh, engine)).await;
    // The second connection's socket is closed: its capture ends here (the first one's is dropped
    // with the trace it replaces).
    fresh.finish_wire(WIRE_LINGER);
    let mut second = fresh.snapshot();
    let t_us = second
        .events
        .first()
        .map(|e| e.t_us)
        .unwrap_or_else(crate::trace::now_us);
    second.events.insert(
        0,
        crate::trace::Event {
            t_us,
            frame: None,
            kind: EventKind::Note(note(first_port)),
        },
    );
    shared.replace(second);
}

enum Retry {
    No,
    Legacy(String),
    /// The server selected standard RDP security although the client offered only enhanced ones.
    StandardRdp,
}

/// What went wrong while waiting for a server PDU.
#[derive(Debug)]
enum ReadFail {
    Timeout(Duration),
    Closed,
    Io(std::io::Error),
    Malformed(String),
}

/// What the probe records of a read that got no PDU (`start`: when the wait began).
fn read_fail(e: crate::net::framed::ReadError, start: Instant) -> ReadFail {
    use crate::net::framed::ReadError;
    match e {
        ReadError::Timeout => ReadFail::Timeout(start.elapsed()),
        ReadError::Closed => ReadFail::Closed,
        ReadError::Io(e) => ReadFail::Io(e),
        ReadError::Length { len } => ReadFail::Malformed(format!("PDU length {len} out of range")),
        ReadError::Overflow { .. } => ReadFail::Malformed(format!(
            "server sent more than {MAX_PDU_LEN} bytes without a complete PDU"
        )),
        ReadError::Framing(what) => ReadFail::Malformed(what),
    }
}

/// Maps IronRDP's connector state to rdprobe's stage.
pub fn stage_of_state(state: &ClientConnectorState) -> Stage {
    match state {
        ClientConnectorState::Consumed
        | ClientConnectorState::ConnectionInitiationSendRequest
        | ClientConnectorState::ConnectionInitiationWaitConfirm { .. } => Stage::X224,
        ClientConnectorState::EnhancedSecurityUpgrade { .. } => Stage::Tls,
        ClientConnectorState::Credssp { .. } => Stage::Credssp,
        ClientConnectorState::BasicSettingsExchangeSendInitial { .. }
        | ClientConnectorState::BasicSettingsExchangeWaitResponse { .. } => Stage::Mcs,
        ClientConnectorState::ChannelConnection { .. } => Stage::Channels,
        ClientConnectorState::SecureSettingsExchange { .. } => Stage::Security,
        ClientConnectorState::CapabilitiesExchange { .. }
        | ClientConnectorState::ConnectionFinalization { .. } => Stage::Capabilities,
        ClientConnectorState::Connected { .. } | ClientConnectorState::Redirected { .. } => {
            Stage::Connected
        }
        _ => Stage::Licensing,
    }
}

fn connector_config(opts: &ProbeOptions, requested: SecurityProtocol) -> ironrdp_connector::Config {
    let mut c = client_config(opts.credentials.as_ref(), requested, opts.cookie.clone());
    if let Some(n) = &opts.client_name {
        c.client_name = n.chars().take(15).collect();
    }
    c
}

/// The IronRDP client configuration rdprobe uses: a plain 1024x768 client offering `requested`,
/// with the given credentials and X.224 cookie. Shared by the probe and the RDP-security walk.
pub(crate) fn client_config(
    credentials: Option<&Credentials>,
    requested: SecurityProtocol,
    cookie: Option<String>,
) -> ironrdp_connector::Config {
    use ironrdp_connector::{Config, Credentials as IrCreds, DesktopSize};
    use ironrdp_pdu::gcc::KeyboardType;
    use ironrdp_pdu::rdp::capability_sets::MajorPlatformType;
    let (username, password, domain) = match credentials {
        Some(c) => (c.user.clone(), c.password.clone(), c.domain.clone()),
        None => (String::new(), String::new(), None),
    };
    Config {
        desktop_size: DesktopSize {
            width: 1024,
            height: 768,
        },
        monitor_layout: None,
        desktop_scale_factor: 0,
        desktop_physical_size: None,
        desktop_orientation: None,
        device_scale_factor: None,
        monitor_extended_layout: None,
        relative_mouse_input: false,
        enable_tls: requested.contains(SecurityProtocol::SSL),
        enable_credssp: requested
            .intersects(SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX),
        enable_standard_rdp_security: requested.is_empty(),
        credentials: IrCreds::UsernamePassword { username, password },
        domain,
        client_build: 0,
        client_name: "rdprobe".to_owned(),
        keyboard_type: KeyboardType::IBM_ENHANCED,
        keyboard_subtype: 0,
        keyboard_functional_keys_count: 12,
        keyboard_layout: 0x409,
        connection_type: ironrdp_pdu::gcc::ConnectionType::Lan,
        ime_file_name: String::new(),
        bitmap: None,
        dig_product_id: String::new(),
        client_dir: "C:\\Windows\\System32\\mstscax.dll".to_owned(),
        alternate_shell: String::new(),
        work_dir: String::new(),
        remote_application_mode: false,
        rail_support_level: ironrdp_pdu::rdp::capability_sets::RailSupportLevel::empty(),
        platform: MajorPlatformType::UNIX,
        hardware_id: None,
        request_data: cookie.map(ironrdp_pdu::nego::NegoRequestData::cookie),
        autologon: false,
        enable_audio_playback: false,
        enable_audio_capture: false,
        performance_flags: Default::default(),
        license_cache: None,
        timezone_info: Default::default(),
        compression_type: None,
        enable_server_pointer: false,
        pointer_software_rendering: true,
        multitransport_flags: None,
        support_dyn_vc_gfx_protocol: false,
    }
}

/// A byte stream the probe can run RDP over: a TCP socket, or a gateway channel.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Writes and flushes `bytes` within `timeout`. A server that stops reading (its receive window
/// stays shut) makes the write time out: recorded as a timeout waiting for the server.
async fn write_all<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    bytes: &[u8],
    timeout: Duration,
    shared: &SharedTrace,
) -> bool {
    let started = Instant::now();
    let res = tokio::time::timeout(timeout, async {
        s.write_all(bytes).await?;
        s.flush().await
    })
    .await;
    match res {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            shared.push(EventKind::Note(format!("write failed: {e}")));
            false
        }
        Err(_) => {
            shared.write_timed_out(started);
            false
        }
    }
}

/// Records a read failure in the trace (the tap already recorded FIN/RST).
fn record_read_fail(shared: &SharedTrace, f: &ReadFail) {
    match f {
        ReadFail::Timeout(d) => shared.push(EventKind::Timeout {
            waiting_for: Dir::S2C,
            after_ms: d.as_millis() as u64,
        }),
        ReadFail::Closed => {}
        ReadFail::Io(e) => {
            if !matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) {
                shared.push(EventKind::Note(format!("read failed: {e}")));
            }
        }
        ReadFail::Malformed(what) => {
            shared.push(EventKind::Note(format!("client gave up: {what}")))
        }
    }
}

async fn close<S: AsyncWrite + Unpin>(s: &mut S) {
    let _ = tokio::time::timeout(Duration::from_millis(500), s.shutdown()).await;
}

async fn run_inner(opts: &ProbeOptions, shared: &SharedTrace, engine: TlsEngine) -> Retry {
    // --- dns ---
    let addr = match opts.address {
        Some(ip) => {
            if let Some(d) = &opts.resolved {
                let mut d = d.clone();
                d.tried = Some(ip);
                shared.set_dns(d);
            }
            SocketAddr::new(ip, opts.port)
        }
        None => match crate::net::lookup(&opts.host, opts.port, opts.stage_timeout).await {
            Some(d) => {
                let tried = d.tried;
                shared.set_dns(d);
                match tried {
                    Some(ip) => SocketAddr::new(ip, opts.port),
                    // The name did not resolve: the dns stage says so (no connect was tried).
                    None => return Retry::No,
                }
            }
            None => {
                match crate::net::resolve_all(&opts.host, opts.port, opts.stage_timeout).await {
                    Ok((a, _)) => a,
                    Err(detail) => {
                        shared.push(EventKind::ConnectFailed(ConnectFailure::Unreachable {
                            detail,
                        }));
                        return Retry::No;
                    }
                }
            }
        },
    };
    if opts.stop_after == Some(Stage::Dns) {
        // Resolution only: no connection is tried (see `finish_for`).
        shared.set_addrs(unspecified_for(addr), addr);
        return Retry::No;
    }
    // --- tcp ---
    shared.set_addrs(unspecified_for(addr), addr);
    let socket = match tcp_socket(opts, addr, shared) {
        Ok(s) => s,
        Err(e) => {
            shared.push(EventKind::ConnectFailed(ConnectFailure::Unreachable {
                detail: format!("creating the socket: {e}"),
            }));
            return Retry::No;
        }
    };
    shared.set_connect_start(crate::trace::now_us());
    let start = Instant::now();
    let tcp = match tokio::time::timeout(opts.stage_timeout, socket.connect(addr)).await {
        Err(_) => {
            shared.push(EventKind::ConnectFailed(ConnectFailure::TimedOut {
                after_ms: start.elapsed().as_millis() as u64,
            }));
            return Retry::No;
        }
        Ok(Err(e)) => {
            let f = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
                _ => ConnectFailure::Unreachable {
                    detail: e.to_string(),
                },
            };
            shared.push(EventKind::ConnectFailed(f));
            return Retry::No;
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or_else(|_| unspecified_for(addr));
    shared.set_addrs(local, addr);
    shared.wire_local(local);
    shared.push(EventKind::Connected);
    run_on(opts, shared, engine, Box::new(tcp), local).await
}

/// The probe's socket: bound to a local port first (so the packet capture, filtered to it, runs
/// before the SYN leaves), with `TCP_MAXSEG` when asked.
fn tcp_socket(
    opts: &ProbeOptions,
    addr: SocketAddr,
    shared: &SharedTrace,
) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    if let Some(mss) = opts.mss {
        wire::set_mss(std::os::fd::AsFd::as_fd(&socket), mss)?;
        shared.push(EventKind::Note(format!(
            "TCP maximum segment size clamped to {mss} bytes (TCP_MAXSEG)"
        )));
    }
    if opts.capture_wire {
        socket.bind(unspecified_for(addr))?;
        let local = socket.local_addr()?;
        let cap = match wire::WireCapture::start(local, addr) {
            Ok(cap) => Some(cap),
            Err(e) => {
                shared.push(EventKind::Note(format!(
                    "capture: synthetic (the wire could not be captured: {e})"
                )));
                None
            }
        };
        // A duplicate of the socket, for TCP_INFO after the probe dropped its stream.
        #[cfg(unix)]
        let dup = std::os::fd::AsFd::as_fd(&socket).try_clone_to_owned().ok();
        #[cfg(not(unix))]
        let dup = None;
        shared.set_wire(cap, dup);
    }
    Ok(socket)
}

/// Runs RDP over a stream that is already open (the channel of an RD Gateway): the Trace holds the
/// RDP bytes of the channel as its wire layer. No retries (a retry would need a new channel).
pub async fn probe_over(
    opts: &ProbeOptions,
    stream: Box<dyn Stream>,
    local: SocketAddr,
    peer: SocketAddr,
) -> ProbeResult {
    let shared = SharedTrace::new(Trace::new(local, peer));
    shared.push(EventKind::Connected);
    let run = tokio::time::timeout(
        opts.deadline,
        run_on(opts, &shared, TlsEngine::Rustls, stream, local),
    )
    .await;
    if run.is_err() && !shared.fin_seen(Dir::C2S) {
        shared.push(EventKind::Timeout {
            waiting_for: Dir::S2C,
            after_ms: opts.deadline.as_millis() as u64,
        });
    }
    let established = shared.has_event(|k| matches!(k, EventKind::Connected));
    if established && !shared.fin_seen(Dir::C2S) {
        shared.fin(Dir::C2S);
    }
    finish(&shared)
}

/// The probe from the X.224 stage on, over an open stream.
async fn run_on(
    opts: &ProbeOptions,
    shared: &SharedTrace,
    engine: TlsEngine,
    tcp: Box<dyn Stream>,
    local: SocketAddr,
) -> Retry {
    if opts.stop_after == Some(Stage::Tcp) {
        shared.push(EventKind::StoppedAfter(Stage::Tcp));
        let mut t = Tap::new(tcp, shared.clone(), Layer::Wire);
        close(&mut t).await;
        return Retry::No;
    }
    let mut wire = Tap::new(tcp, shared.clone(), Layer::Wire);

    // --- x224 ---
    let requested = opts.security_protocol();
    let mut connector = ClientConnector::new(connector_config(opts, requested), local);
    let mut out = WriteBuf::new();
    if let Err(e) = connector.initiate_with_security_protocol(requested, &mut out) {
        shared.push(EventKind::Note(format!("client error: {e}")));
        close(&mut wire).await;
        return Retry::No;
    }
    if !write_all(&mut wire, out.filled(), opts.stage_timeout, shared).await {
        return Retry::No;
    }
    let mut buf = BytesMut::new();
    let start = Instant::now();
    match step::step(
        &mut connector,
        &mut wire,
        &mut buf,
        &mut out,
        opts.stage_timeout,
    )
    .await
    {
        Ok(_) => {}
        Err(step::StepError::Read(e)) => {
            record_read_fail(shared, &read_fail(e, start));
            close(&mut wire).await;
            return Retry::No;
        }
        Err(step::StepError::Rejected { pdu, error: e }) => {
            // A negotiation failure or a protocol the client did not offer: decode sees it in the
            // bytes (and keeps that reason); anything else the connector refused is the server's.
            shared.push(EventKind::ClientRejected {
                what: format!("x224: {e}"),
            });
            close(&mut wire).await;
            let downgraded = matches!(
                crate::decode::x224::decode_tpkt(&pdu),
                crate::decode::x224::X224::ConnectionConfirm { selected: 0, .. }
            );
            if downgraded && opts.protocols.is_empty() {
                return Retry::StandardRdp;
            }
            return Retry::No;
        }
    }
    let selected = match &connector.state {
        ClientConnectorState::EnhancedSecurityUpgrade { selected_protocol } => *selected_protocol,
        _ => SecurityProtocol::empty(),
    };
    if !selected.intersects(SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX)
        && opts.credentials.is_some()
    {
        // Without NLA the password would travel in the Client Info PDU, readable by anyone holding
        // the capture and its embedded TLS secrets: send the user name only.
        if let ironrdp_connector::Credentials::UsernamePassword { password, .. } =
            &mut connector.config.credentials
        {
            password.clear();
        }
        shared.push(EventKind::Note(
            "no NLA: the password was not sent (the Client Info PDU carries only the user name)"
                .into(),
        ));
    }
    if opts.stop_after == Some(Stage::X224) {
        shared.push(EventKind::StoppedAfter(Stage::X224));
        close(&mut wire).await;
        return Retry::No;
    }

    // --- tls ---
    let mut stream: Box<dyn Stream> = if selected.is_standard_rdp_security() {
        connector.mark_security_upgrade_as_done();
        Box::new(wire)
    } else {
        if !buf.is_empty() {
            shared.push(EventKind::Note(format!(
                "server sent {} bytes after the X.224 confirm before the TLS handshake",
                buf.len()
            )));
        }
        let tls_start = Instant::now();
        let (tls_stream, info) = match engine {
            TlsEngine::Legacy => match legacy_handshake(wire, shared, opts.stage_timeout).await {
                Ok(v) => v,
                Err(()) => return Retry::No,
            },
            TlsEngine::Auto | TlsEngine::Rustls => {
                let (config, verifier) = tls::rustls_config(shared.clone(), opts.tls_versions);
                let conn = tokio_rustls::TlsConnector::from(config);
                let name = rustls::pki_types::ServerName::try_from("rdp-server")
                    .expect("static name is valid")
                    .to_owned();
                match tokio::time::timeout(opts.stage_timeout, conn.connect(name, wire)).await {
                    Err(_) => {
                        shared.push(EventKind::Timeout {
                            waiting_for: Dir::S2C,
                            after_ms: tls_start.elapsed().as_millis() as u64,
                        });
                        return Retry::No;
                    }
                    Ok(Err(e)) => {
                        let msg = e.to_string();
                        shared.push(EventKind::TlsError {
                            message: msg.clone(),
                        });
                        if engine == TlsEngine::Auto && is_version_refusal(&e) {
                            return Retry::Legacy(msg);
                        }
                        if rejects_server_data(&e) {
                            shared.push(EventKind::ClientRejected {
                                what: format!("tls: {msg}"),
                            });
                        }
                        return Retry::No;
                    }
                    Ok(Ok(s)) => {
                        let info = tls::rustls_session_info(s.get_ref().1, &verifier);
                        (Box::new(s) as Box<dyn Stream>, info)
                    }
                }
            }
        };
        let leaf = info.certificates.first().cloned();
        shared.push(EventKind::TlsSession(info));
        connector.mark_security_upgrade_as_done();
        let mut inner: Box<dyn Stream> =
            Box::new(Tap::new(tls_stream, shared.clone(), Layer::Inner));
        if opts.stop_after == Some(Stage::Tls) {
            shared.push(EventKind::StoppedAfter(Stage::Tls));
            close(&mut inner).await;
            return Retry::No;
        }
        // --- credssp ---
        if connector.should_perform_credssp() {
            let Some(leaf) = leaf else {
                shared.push(EventKind::Note("server presented no certificate".into()));
                close(&mut inner).await;
                return Retry::No;
            };
            match credssp(
                opts,
                &mut connector,
                &mut inner,
                &mut buf,
                shared,
                selected,
                &leaf,
            )
            .await
            {
                CredsspOutcome::Done => {
                    connector.mark_credssp_as_done();
                    // INVARIANT: the password went to the server once, sealed in CredSSP's
                    // TSCredentials. The Client Info PDU would carry it again inside TLS alone,
                    // readable by anyone holding the capture with its TLS secrets: clear it.
                    if let ironrdp_connector::Credentials::UsernamePassword { password, .. } =
                        &mut connector.config.credentials
                    {
                        password.clear();
                    }
                }
                CredsspOutcome::Stop => {
                    close(&mut inner).await;
                    return Retry::No;
                }
            }
            if opts.stop_after == Some(Stage::Credssp) {
                shared.push(EventKind::StoppedAfter(Stage::Credssp));
                close(&mut inner).await;
                return Retry::No;
            }
        }
        inner
    };

    // --- mcs .. connected ---
    loop {
        if connector.should_perform_multitransport() {
            out.clear();
            if let Ok(w) = connector.skip_multitransport(&mut out) {
                if w.size().is_some()
                    && !write_all(&mut stream, out.filled(), opts.stage_timeout, shared).await
                {
                    return Retry::No;
                }
            }
            continue;
        }
        let stage = stage_of_state(&connector.state);
        if let Some(stop) = opts.stop_after {
            if stage > stop {
                shared.push(EventKind::StoppedAfter(stop));
                close(&mut stream).await;
                return Retry::No;
            }
        }
        if matches!(
            connector.state,
            ClientConnectorState::Connected { .. } | ClientConnectorState::Redirected { .. }
        ) {
            if matches!(connector.state, ClientConnectorState::Redirected { .. }) {
                shared.push(EventKind::Note(
                    "server sent a Server Redirection PDU".into(),
                ));
            }
            shared.push(EventKind::StoppedAfter(Stage::Connected));
            close(&mut stream).await;
            return Retry::No;
        }
        let start = Instant::now();
        let res = step::step(
            &mut connector,
            &mut stream,
            &mut buf,
            &mut out,
            opts.stage_timeout,
        )
        .await;
        match res {
            Ok((_, w)) => {
                if w.size().is_some()
                    && !write_all(&mut stream, out.filled(), opts.stage_timeout, shared).await
                {
                    return Retry::No;
                }
            }
            Err(step::StepError::Read(e)) => {
                record_read_fail(shared, &read_fail(e, start));
                close(&mut stream).await;
                return Retry::No;
            }
            Err(step::StepError::Rejected { error: e, .. }) => {
                let msg = e.to_string();
                if msg.contains("can't satisfy server security settings") {
                    // --- rdpsec hook (issue 7): standard RDP security with encryption is walked by
                    // crate::rdpsec on the same connection; it records its outcome in the trace. ---
                    let _ =
                        crate::rdpsec::client::continue_probe(opts, &mut stream, &mut buf, shared)
                            .await;
                    // --- end rdpsec hook ---
                } else {
                    // IronRDP rejected the server's last PDU (it read nothing of its own here).
                    shared.push(EventKind::ClientRejected {
                        what: format!("{stage}: {msg}"),
                    });
                }
                close(&mut stream).await;
                return Retry::No;
            }
        }
    }
}

fn is_version_refusal(e: &std::io::Error) -> bool {
    let Some(inner) = e.get_ref() else {
        return false;
    };
    let Some(re) = inner.downcast_ref::<rustls::Error>() else {
        return false;
    };
    matches!(
        re,
        rustls::Error::AlertReceived(
            rustls::AlertDescription::ProtocolVersion
                | rustls::AlertDescription::HandshakeFailure
                | rustls::AlertDescription::InsufficientSecurity
        ) | rustls::Error::PeerIncompatible(_)
    )
}

/// rustls refused what the server sent (a malformed record or handshake message, an unreadable
/// certificate, a protocol violation), as opposed to an alert, a close or a reset, which decode
/// reads from the bytes, or a version refusal, which the legacy engine retries.
fn rejects_server_data(e: &std::io::Error) -> bool {
    let Some(re) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    matches!(
        re,
        rustls::Error::InvalidMessage(_)
            | rustls::Error::InvalidCertificate(_)
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::DecryptError
            | rustls::Error::UnsupportedNameType
    )
}

async fn legacy_handshake(
    wire: Tap<Box<dyn Stream>>,
    shared: &SharedTrace,
    timeout: Duration,
) -> Result<(Box<dyn Stream>, TlsSessionInfo), ()> {
    let ssl = match tls::openssl_legacy(shared.clone()) {
        Ok(s) => s,
        Err(e) => {
            shared.push(EventKind::TlsError {
                message: format!("openssl setup: {e}"),
            });
            return Err(());
        }
    };
    let mut s = match tokio_openssl::SslStream::new(ssl, wire) {
        Ok(s) => s,
        Err(e) => {
            shared.push(EventKind::TlsError {
                message: e.to_string(),
            });
            return Err(());
        }
    };
    let start = Instant::now();
    match tokio::time::timeout(timeout, std::pin::Pin::new(&mut s).connect()).await {
        Err(_) => {
            shared.push(EventKind::Timeout {
                waiting_for: Dir::S2C,
                after_ms: start.elapsed().as_millis() as u64,
            });
            Err(())
        }
        Ok(Err(e)) => {
            shared.push(EventKind::TlsError {
                message: e.to_string(),
            });
            Err(())
        }
        Ok(Ok(())) => {
            let ssl = s.ssl();
            let certificates = ssl
                .peer_cert_chain()
                .map(|c| c.iter().filter_map(|x| x.to_der().ok()).collect())
                .unwrap_or_default();
            let info = TlsSessionInfo {
                version: tls::openssl_version_name(ssl),
                cipher_suite: ssl
                    .current_cipher()
                    .map(|c| c.standard_name().unwrap_or(c.name()).to_owned())
                    .unwrap_or_default(),
                certificates,
                engine: "openssl-legacy".into(),
            };
            Ok((Box::new(s), info))
        }
    }
}

enum CredsspOutcome {
    Done,
    Stop,
}

/// The subjectPublicKey bits of a certificate (what CredSSP binds to, not the whole SPKI).
pub use crate::wire::x509::subject_public_key;

#[allow(clippy::too_many_arguments)]
async fn credssp(
    opts: &ProbeOptions,
    connector: &mut ClientConnector,
    stream: &mut Box<dyn Stream>,
    buf: &mut BytesMut,
    shared: &SharedTrace,
    selected: SecurityProtocol,
    leaf: &[u8],
) -> CredsspOutcome {
    let Some(public_key) = subject_public_key(leaf) else {
        shared.push(EventKind::Note(
            "server certificate has no readable public key".into(),
        ));
        return CredsspOutcome::Stop;
    };
    // Without credentials, authenticate as a placeholder user only far enough to read the server's
    // NTLM CHALLENGE (target info), then stop: the deepest stage reachable without credentials.
    let have_creds = opts.credentials.is_some();
    let creds = match &opts.credentials {
        Some(_) => connector.config.credentials.clone(),
        None => ironrdp_connector::Credentials::UsernamePassword {
            username: "rdprobe".into(),
            password: String::new(),
        },
    };
    let (mut seq, mut ts_request) = match CredsspSequence::init(
        creds,
        connector.config.domain.as_deref(),
        selected,
        ironrdp_connector::ServerName::new(opts.host.clone()),
        public_key,
        None,
    ) {
        Ok(v) => v,
        Err(e) => {
            shared.push(EventKind::Note(format!("client stopped at credssp: {e}")));
            return CredsspOutcome::Stop;
        }
    };
    let mut out = WriteBuf::new();
    let mut rounds = 0u32;
    loop {
        let state = match step::credssp_process(&mut seq, ts_request) {
            Ok(s) => s,
            Err(step::CredsspStepError::NetworkRequest) => {
                shared.push(EventKind::Note(
                    "client stopped at credssp: network request (Kerberos) not supported".into(),
                ));
                return CredsspOutcome::Stop;
            }
            Err(step::CredsspStepError::Rejected(e)) => {
                shared.push(EventKind::ClientRejected {
                    what: format!("credssp: {e}"),
                });
                return CredsspOutcome::Stop;
            }
        };
        if !have_creds && rounds == 1 {
            // The CHALLENGE has arrived (round 0 sent NEGOTIATE): stop before AUTHENTICATE.
            shared.push(EventKind::Note(
                "no credentials given: stopped after the server's NTLM CHALLENGE".into(),
            ));
            shared.push(EventKind::StoppedAfter(Stage::Credssp));
            return CredsspOutcome::Stop;
        }
        out.clear();
        match seq.handle_process_result(state, &mut out) {
            Ok(w) => {
                if w.size().is_some()
                    && !write_all(stream, out.filled(), opts.stage_timeout, shared).await
                {
                    return CredsspOutcome::Stop;
                }
            }
            Err(e) => {
                shared.push(EventKind::Note(format!("client stopped at credssp: {e}")));
                return CredsspOutcome::Stop;
            }
        }
        let start = Instant::now();
        match step::credssp_read(&mut seq, stream, buf, opts.stage_timeout).await {
            Ok(Some(next)) => ts_request = next,
            Ok(None) => return CredsspOutcome::Done,
            Err(step::StepError::Read(e)) => {
                record_read_fail(shared, &read_fail(e, start));
                return CredsspOutcome::Stop;
            }
            Err(step::StepError::Rejected { error: e, .. }) => {
                shared.push(EventKind::ClientRejected {
                    what: format!("credssp: {e}"),
                });
                return CredsspOutcome::Stop;
            }
        }
        rounds += 1;
    }
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that never reads: the write ends at its deadline, recorded as a timeout waiting for
    /// the server, and the verdict says so.
    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_times_out() {
        let (mut client, _server) = tokio::io::duplex(64);
        let shared = SharedTrace::new(Trace::new(
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        ));
        shared.push(EventKind::Connected);
        let started = Instant::now();
        let ok = tokio::time::timeout(
            Duration::from_secs(5),
            write_all(
                &mut client,
                &[0u8; 4096],
                Duration::from_millis(200),
                &shared,
            ),
        )
        .await
        .expect("the write has a deadline");
        assert!(!ok);
        assert!(started.elapsed() >= Duration::from_millis(200));
        let trace = shared.snapshot();
        assert!(trace.events.iter().any(|e| matches!(
            e.kind,
            EventKind::Timeout {
                waiting_for: Dir::S2C,
                ..
            }
        )));
        let report = crate::decode::decode(&trace).report;
        assert!(
            matches!(
                report.verdict,
                crate::stage::Verdict::Failed {
                    kind: crate::stage::FailureKind::TimedOut { .. },
                    by: crate::stage::Side::Server
                }
            ),
            "{}",
            report.summary
        );
    }
}
