//! The probe's side of the RD Gateway hop: `gw_tcp`, `gw_tls`, `gw_http`, `gw_auth`, `gw_tunnel`,
//! `gw_channel`, each with the stage deadline and its facts, then RDP through the channel with the
//! ordinary probe ([`crate::probe::probe_over`]).
//!
//! Each step is driven here on typed packets ([`super::tsgu`]) rather than by
//! `ironrdp_mstsgu::GwClient::connect`, which runs all of them as one call: the probe must stop at
//! the step that failed with its own deadline, and report the HTTP status, the schemes offered, a
//! redirect's `Location`, the `Server` header and the HRESULT of that very step.
//!
//! The verdicts of the gateway stages are decided here from what the gateway answered (HTTP status,
//! HRESULT, reset, silence); the inner stages are decoded from the channel's bytes as for a direct
//! probe. The client↔gateway conversation is recorded too (with both sessions' TLS secrets, the
//! probe's own close and the inner stack's rejections), and `analyze` of it
//! ([`crate::decode::gateway`]) gives the same stages and verdicts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::json;
use sspi::{
    builders::AcquireCredentialsHandle, AuthIdentity, BufferType, ClientRequestFlags,
    CredentialUse, DataRepresentation, Ntlm, SecurityBuffer, Sspi as _, SspiImpl as _, Username,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::http::{self, Head, HeadError};
use super::legacy::HttpChannel;
use super::transport::Tunnel;
use super::tsgu::{self, Packet};
use super::ws::{PacketStream, RecvError};
use super::BoxIo;
use crate::decode::gateway::{
    awaited, fail, http_facts, http_status_verdict, record_answer, Awaited,
};
use crate::probe::{Credentials, ProbeOptions, ProbeResult};
use crate::report::{ConnectionReport, Facts, StageReport};
use crate::stage::{FailureKind, Side, Stage, Verdict};

/// The MS-TSGU transport to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// The legacy two-channel HTTP transport (RDG_OUT_DATA / RDG_IN_DATA, MS-TSGU 3.3.5.1).
    Http,
    /// Ask for the WebSocket upgrade; a gateway that answers with the legacy OUT channel (200 OK and
    /// its seed) gets the legacy transport (what mstsc and FreeRDP do).
    Auto,
}

impl Transport {
    pub fn parse(s: &str) -> Option<Transport> {
        match s.to_ascii_lowercase().as_str() {
            "websocket" | "ws" => Some(Transport::WebSocket),
            "http" => Some(Transport::Http),
            "auto" => Some(Transport::Auto),
            _ => None,
        }
    }
}

/// Where the gateway is and who to be there.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    pub host: String,
    pub port: u16,
    /// Gateway credentials (may differ from the server's); `None`: anonymous.
    pub credentials: Option<Credentials>,
    pub transport: Transport,
    /// Client name in TUNNEL_AUTH (defaults to "rdprobe").
    pub client_name: String,
}

impl GatewayOptions {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        GatewayOptions {
            host: host.into(),
            port,
            credentials: None,
            transport: Transport::Auto,
            client_name: "rdprobe".into(),
        }
    }
}

/// The gateway hop as far as it went.
#[derive(Default)]
pub struct Hop {
    pub stages: Vec<StageReport>,
    /// The client↔gateway conversation (TLS records on the wire, TLS secrets in its key log).
    pub trace: Option<crate::probe::tap::SharedTrace>,
    /// The legacy transport's IN channel conversation (its own TCP connection and TLS session).
    pub in_trace: Option<crate::probe::tap::SharedTrace>,
    pub local: Option<SocketAddr>,
    pub gateway: Option<SocketAddr>,
    pub notes: Vec<String>,
    /// The channel relay once the channel is open (it ends when the inner stream is dropped).
    pub relay: Option<tokio::task::JoinHandle<String>>,
}

/// Byte counters of the gateway connection.
#[derive(Clone, Default)]
struct Counters {
    c2s: Arc<AtomicU64>,
    s2c: Arc<AtomicU64>,
}

struct Counted<S> {
    inner: S,
    n: Counters,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        self.n.s2c.fetch_add(got as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.n.c2s.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One stage being recorded.
struct Rec {
    stage: Stage,
    start: Instant,
    start_us: u64,
    c2s: u64,
    s2c: u64,
    facts: Facts,
}

impl Rec {
    fn new(stage: Stage, n: &Counters) -> Rec {
        Rec {
            stage,
            start: Instant::now(),
            start_us: crate::trace::now_us(),
            c2s: n.c2s.load(Ordering::Relaxed),
            s2c: n.s2c.load(Ordering::Relaxed),
            facts: Facts::new(),
        }
    }
    fn fact(&mut self, k: &str, v: serde_json::Value) {
        self.facts.insert(k.to_owned(), v);
    }
    fn end(self, hop: &mut Hop, n: &Counters, verdict: Verdict) {
        hop.stages.push(StageReport {
            stage: self.stage,
            verdict,
            start_us: self.start_us,
            duration_ms: self.start.elapsed().as_secs_f64() * 1000.0,
            bytes_c2s: n.c2s.load(Ordering::Relaxed) - self.c2s,
            bytes_s2c: n.s2c.load(Ordering::Relaxed) - self.s2c,
            frames: Vec::new(),
            facts: self.facts,
        });
    }
}

fn timed_out(after: Duration) -> Verdict {
    fail(FailureKind::TimedOut {
        waiting_for: Side::Server,
        after_ms: after.as_millis() as u64,
    })
}

fn io_verdict(e: &std::io::Error, after: Duration) -> Verdict {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => fail(FailureKind::Reset),
        K::UnexpectedEof => fail(FailureKind::Closed {
            tls_close_notify: false,
        }),
        K::TimedOut => timed_out(after),
        _ => fail(FailureKind::ProtocolError {
            what: e.to_string(),
            offset: None,
        }),
    }
}

fn head_verdict(e: &HeadError, after: Duration) -> Verdict {
    match e {
        HeadError::Timeout(_) => timed_out(after),
        HeadError::Closed(_) => fail(FailureKind::Closed {
            tls_close_notify: false,
        }),
        HeadError::Io(io) => io_verdict(io, after),
        HeadError::TooLarge | HeadError::NotHttp(_) => fail(FailureKind::ProtocolError {
            what: format!("the gateway's answer is not HTTP: {e}"),
            offset: None,
        }),
    }
}

fn recv_verdict(e: &RecvError, after: Duration) -> Verdict {
    match e {
        RecvError::Timeout(_) => timed_out(after),
        RecvError::Closed(_) => fail(FailureKind::Closed {
            tls_close_notify: false,
        }),
        RecvError::Io(s) if s.contains("reset") => fail(FailureKind::Reset),
        RecvError::Io(s) | RecvError::Malformed(s) => fail(FailureKind::ProtocolError {
            what: s.clone(),
            offset: None,
        }),
    }
}

/// How a resource name is written: an IP address, a fully qualified name, or a single label
/// (NetBIOS-style). RD RAPs compare names literally, so the form matters.
pub fn name_form(name: &str) -> &'static str {
    if name
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        "ip"
    } else if name.contains('.') {
        "fqdn"
    } else {
        "netbios"
    }
}

/// Opens the gateway hop to `target:port`; on success returns the channel as a stream.
pub async fn open(
    gw: &GatewayOptions,
    target: &str,
    port: u16,
    stop_after: Option<Stage>,
    t: Duration,
) -> (Hop, Option<Box<dyn crate::probe::Stream>>) {
    let mut hop = Hop::default();
    let n = Counters::default();
    // --- gw_tcp ---
    let mut rec = Rec::new(Stage::GwTcp, &n);
    rec.fact("gateway", json!(format!("{}:{}", gw.host, gw.port)));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(
        t,
        tokio::net::lookup_host((gw.host.trim_matches(|c| c == '[' || c == ']'), gw.port)),
    )
    .await
    {
        Err(_) => {
            rec.end(&mut hop, &n, timed_out(t));
            return (hop, None);
        }
        Ok(Err(e)) => {
            rec.end(
                &mut hop,
                &n,
                fail(FailureKind::Unreachable {
                    detail: format!("cannot resolve {}: {e}", gw.host),
                }),
            );
            return (hop, None);
        }
        Ok(Ok(a)) => a.take(16).collect(),
    };
    let Some(&addr) = addrs.first() else {
        rec.end(
            &mut hop,
            &n,
            fail(FailureKind::Unreachable {
                detail: format!("{} resolves to no address", gw.host),
            }),
        );
        return (hop, None);
    };
    if addrs.len() > 1 {
        rec.fact(
            "addresses",
            json!(addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>()),
        );
    }
    rec.fact("address", json!(addr.to_string()));
    hop.gateway = Some(addr);
    let tcp = match tokio::time::timeout(t, TcpStream::connect(addr)).await {
        Err(_) => {
            rec.end(&mut hop, &n, timed_out(t));
            return (hop, None);
        }
        Ok(Err(e)) => {
            let v = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => fail(FailureKind::Refused),
                _ => fail(FailureKind::Unreachable {
                    detail: e.to_string(),
                }),
            };
            rec.end(&mut hop, &n, v);
            return (hop, None);
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    hop.local = tcp.local_addr().ok();
    rec.end(&mut hop, &n, Verdict::Ok);
    let gw_trace = crate::probe::tap::SharedTrace::new(crate::trace::Trace::new(
        hop.local.unwrap_or(addr),
        addr,
    ));
    gw_trace.push(crate::trace::EventKind::Connected);
    hop.trace = Some(gw_trace.clone());
    let counted = Counted {
        inner: crate::probe::tap::Tap::new(tcp, gw_trace.clone(), crate::trace::Layer::Wire),
        n: n.clone(),
    };
    if stop_after == Some(Stage::GwTcp) {
        return stopped(hop, Stage::GwTcp);
    }

    // --- gw_tls ---
    let mut rec = Rec::new(Stage::GwTls, &n);
    let (conn, verifier, name) = super::tls_client(
        gw_trace.clone(),
        &gw.host,
        crate::probe::tls::TlsVersions::Both,
    );
    let name = name.unwrap_or_else(|_| {
        rustls::pki_types::ServerName::try_from("rd-gateway".to_owned())
            .expect("static name is valid")
    });
    let tls = match tokio::time::timeout(t, conn.connect(name, counted)).await {
        Err(_) => {
            rec.end(&mut hop, &n, timed_out(t));
            return (hop, None);
        }
        Ok(Err(e)) => {
            let v = tls_error_verdict(&e);
            rec.fact("client_tls_error", json!(e.to_string()));
            rec.end(&mut hop, &n, v);
            return (hop, None);
        }
        Ok(Ok(s)) => s,
    };
    {
        let (_, c) = tls.get_ref();
        if let Some(v) = c.protocol_version() {
            rec.fact("version", json!(crate::probe::tls::rustls_version_name(v)));
        }
        if let Some(cs) = c.negotiated_cipher_suite() {
            rec.fact("cipher_suite", json!(format!("{:?}", cs.suite())));
        }
        let chain = verifier
            .chain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(leaf) = chain.first() {
            let now = (crate::trace::now_us() / 1_000_000) as i64;
            if let Ok(f) = crate::decode::tls::cert_facts(leaf, now) {
                rec.fact("cert_subject", json!(f.subject));
                rec.fact("cert_issuer", json!(f.issuer));
                rec.fact("cert_not_after", json!(f.not_after));
                rec.fact("cert_expired", json!(f.expired));
                rec.fact("cert_self_signed", json!(f.self_signed));
            }
            if super::sends_sni(&gw.host) {
                rec.fact(
                    "cert_name_matches",
                    json!(crate::decode::tls::check_name(leaf, &gw.host)),
                );
            }
        }
    }
    rec.end(&mut hop, &n, Verdict::Ok);
    if stop_after == Some(Stage::GwTls) {
        return stopped(hop, Stage::GwTls);
    }
    let mut s: BoxIo = Box::new(tls);

    // --- gw_http, gw_auth ---
    let host_header = if gw.port == 443 {
        gw.host.clone()
    } else {
        format!("{}:{}", gw.host, gw.port)
    };
    let conn_id = connection_id();
    let key = http::websocket_key();
    // Auto asks for the upgrade; a gateway without WebSocket answers the legacy OUT channel's 200.
    let out_req = if gw.transport == Transport::Http {
        Req::OutData
    } else {
        Req::Upgrade(&key)
    };
    let mut buf = Vec::new();
    let mut rec = Rec::new(Stage::GwHttp, &n);
    rec.fact("transport", json!(out_req.transport()));
    rec.fact("method", json!("RDG_OUT_DATA"));
    let first = match exchange(&mut s, &mut buf, out_req, &host_header, &conn_id, None, t).await {
        Ok(h) => h,
        Err(v) => {
            rec.end(&mut hop, &n, v);
            return (hop, None);
        }
    };
    http_facts(&first, &mut rec.facts);
    let mut a;
    let upgraded = match first.status {
        101 | 200 => {
            rec.end(&mut hop, &n, Verdict::Ok);
            a = Rec::new(Stage::GwAuth, &n);
            a.fact("scheme", json!("none"));
            a.fact("status", json!(first.status));
            first
        }
        401 => {
            rec.end(&mut hop, &n, Verdict::Ok);
            if stop_after == Some(Stage::GwHttp) {
                return stopped(hop, Stage::GwHttp);
            }
            let offered = http::schemes(&first);
            a = Rec::new(Stage::GwAuth, &n);
            a.fact("www_authenticate", json!(offered));
            match authenticate(
                &mut s,
                &mut buf,
                out_req,
                &host_header,
                &conn_id,
                gw,
                &offered,
                &mut a,
                t,
            )
            .await
            {
                Ok(h) => h,
                Err(v) => {
                    a.end(&mut hop, &n, v);
                    return (hop, None);
                }
            }
        }
        _ => {
            let v = http_status_verdict(&first);
            rec.end(&mut hop, &n, v);
            return (hop, None);
        }
    };
    let tunnel = if upgraded.status == 101 {
        let accept_ok = upgraded
            .header("sec-websocket-accept")
            .is_some_and(|a| a == http::websocket_accept(&key));
        if !accept_ok {
            hop.notes.push(
                "the gateway's Sec-WebSocket-Accept does not match the key sent (RFC 6455 4.2.2)"
                    .into(),
            );
        }
        a.fact("transport", json!("websocket"));
        a.end(&mut hop, &n, Verdict::Ok);
        if stop_after == Some(Stage::GwHttp) || stop_after == Some(Stage::GwAuth) {
            return stopped(hop, stop_after.unwrap_or(Stage::GwAuth));
        }
        Tunnel::WebSocket(Box::new(
            PacketStream::new(s, std::mem::take(&mut buf), Role::Client).await,
        ))
    } else {
        // 200 OK: the legacy OUT channel (its seed follows), or a refused upgrade.
        let refused = fail(FailureKind::HttpStatus {
            status: 200,
            reason: upgraded.reason.clone(),
            location: None,
        });
        if gw.transport == Transport::WebSocket {
            a.end(&mut hop, &n, refused);
            return (hop, None);
        }
        match read_seed(&mut s, &mut buf, t).await {
            Ok(k) => a.fact("seed_bytes", json!(k)),
            Err(e) => {
                a.fact("seed", json!(e));
                if gw.transport == Transport::Auto {
                    hop.notes.push(format!(
                        "the WebSocket upgrade was answered 200 OK without the legacy transport's seed ({e})"
                    ));
                    a.end(&mut hop, &n, refused);
                } else {
                    let v = if e.contains("closed") {
                        fail(FailureKind::Closed {
                            tls_close_notify: false,
                        })
                    } else {
                        fail(FailureKind::ProtocolError {
                            what: format!("the OUT channel's seed: {e}"),
                            offset: None,
                        })
                    };
                    a.end(&mut hop, &n, v);
                }
                return (hop, None);
            }
        }
        a.fact("transport", json!("http"));
        a.fact("out_address", json!(addr.to_string()));
        // The IN channel goes to the address the OUT channel reached, so that both land on the same
        // gateway of a farm (what FreeRDP does); a farm behind one address may still split them.
        a.fact("in_address", json!(addr.to_string()));
        if addrs.len() > 1 {
            hop.notes.push(format!(
                "{} has {} addresses: the IN channel was sent to the OUT channel's address {}",
                gw.host,
                addrs.len(),
                addr.ip()
            ));
        }
        let in_ch =
            match in_channel(addr, gw, &host_header, &conn_id, &n, &mut a, &mut hop, t).await {
                Ok(v) => v,
                Err(v) => {
                    a.fact("failed_channel", json!("in"));
                    a.end(&mut hop, &n, v);
                    return (hop, None);
                }
            };
        a.end(&mut hop, &n, Verdict::Ok);
        if stop_after == Some(Stage::GwHttp) || stop_after == Some(Stage::GwAuth) {
            return stopped(hop, stop_after.unwrap_or(Stage::GwAuth));
        }
        Tunnel::Http(HttpChannel::client(s, std::mem::take(&mut buf), in_ch))
    };

    // --- gw_tunnel ---
    let mut ps = tunnel;
    let mut rec = Rec::new(Stage::GwTunnel, &n);
    rec.fact("transport", json!(ps.name()));
    for req in tsgu::tunnel_requests(&gw.client_name) {
        if let Err(v) = ask(&mut ps, &req, t, &mut hop, &mut rec).await {
            rec.end(&mut hop, &n, v);
            return (hop, None);
        }
    }
    rec.end(&mut hop, &n, Verdict::Ok);
    if stop_after == Some(Stage::GwTunnel) {
        ps.close(Duration::from_millis(500)).await;
        return stopped(hop, Stage::GwTunnel);
    }

    // --- gw_channel ---
    let mut rec = Rec::new(Stage::GwChannel, &n);
    rec.fact("target", json!(target));
    rec.fact("port", json!(port));
    rec.fact("name_form", json!(name_form(target)));
    let req = Packet::ChannelCreate {
        resources: vec![target.to_owned()],
        alt_resources: Vec::new(),
        port,
        protocol: 3,
    };
    if let Err(v) = ask(&mut ps, &req, t, &mut hop, &mut rec).await {
        rec.end(&mut hop, &n, v);
        return (hop, None);
    }
    rec.end(&mut hop, &n, Verdict::Ok);
    if stop_after == Some(Stage::GwChannel) {
        let _ = ps.send(&Packet::CloseChannel { status: 0 }, t).await;
        ps.close(Duration::from_millis(500)).await;
        return stopped(hop, Stage::GwChannel);
    }
    // The channel as a stream: a relay task moves bytes between the duplex pipe and DATA packets.
    let (near, far) = tokio::io::duplex(2 * super::ws::MAX_DATA_CHUNK);
    hop.relay = Some(tokio::spawn(async move {
        ps.relay(far, Duration::from_secs(600), t).await
    }));
    (hop, Some(Box::new(near)))
}

fn stopped(mut hop: Hop, at: Stage) -> (Hop, Option<Box<dyn crate::probe::Stream>>) {
    hop.notes.push(format!("stopped after {at} by request"));
    (hop, None)
}

/// Sends the request `req` and waits for its answer, whose facts go to `rec`: the verdict that ends
/// the stage when the request could not be sent, no answer came (noted as `waiting_for`) or the
/// answer carries an error HRESULT.
async fn ask(
    ps: &mut Tunnel,
    req: &Packet,
    t: Duration,
    hop: &mut Hop,
    rec: &mut Rec,
) -> Result<(), Verdict> {
    if let Err(e) = ps.send(req, t).await {
        return Err(io_verdict(&e, rec.start.elapsed()));
    }
    let Some((ty, name)) = req.answer() else {
        return Ok(());
    };
    let p = match expect(ps, ty, t, hop).await {
        Ok(p) => p,
        Err(v) => {
            rec.fact("waiting_for", json!(name));
            return Err(v);
        }
    };
    record_answer(&p, &mut rec.facts).map_or(Ok(()), Err)
}

/// Waits for a packet of type `ty`, skipping keepalives and service messages (noted).
async fn expect(ps: &mut Tunnel, ty: u16, t: Duration, hop: &mut Hop) -> Result<Packet, Verdict> {
    let start = Instant::now();
    for _ in 0..64 {
        let left = t.saturating_sub(start.elapsed());
        let p = ps
            .recv(left)
            .await
            .map_err(|e| recv_verdict(&e, start.elapsed()))?;
        match awaited(&p, ty) {
            Awaited::Answer => return Ok(p),
            Awaited::Skip(note) => hop.notes.extend(note),
            Awaited::Fails(v) => return Err(v),
        }
    }
    Err(fail(FailureKind::ProtocolError {
        what: "more than 64 packets without the answer".into(),
        offset: None,
    }))
}

fn tls_error_verdict(e: &std::io::Error) -> Verdict {
    if let Some(re) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        if let rustls::Error::AlertReceived(a) = re {
            let code = u8::from(*a);
            return fail(FailureKind::TlsAlert(crate::stage::TlsAlert::fatal(code)));
        }
        return fail(FailureKind::TlsFailure {
            detail: re.to_string(),
        });
    }
    io_verdict(e, Duration::ZERO)
}

fn connection_id() -> String {
    let t = crate::trace::now_us();
    format!(
        "{{{:08X}-{:04X}-4{:03X}-8{:03X}-{:012X}}}",
        (t >> 20) as u32,
        (t & 0xFFFF) as u16,
        (t >> 8) & 0xFFF,
        (t >> 4) & 0xFFF,
        t & 0xFFFF_FFFF_FFFF
    )
}

/// Which request the probe sends.
#[derive(Clone, Copy)]
enum Req<'a> {
    /// RDG_OUT_DATA with the WebSocket upgrade (this key).
    Upgrade(&'a str),
    /// RDG_OUT_DATA of the legacy transport.
    OutData,
    /// RDG_IN_DATA of the legacy transport (authorization, empty body).
    InData,
    /// RDG_IN_DATA again, with the chunked body that carries the client's packets.
    InChunked,
}

impl Req<'_> {
    fn transport(&self) -> &'static str {
        match self {
            Req::Upgrade(_) => "websocket",
            _ => "http",
        }
    }

    fn head(&self, host: &str, conn_id: &str, authorization: Option<&str>) -> String {
        let (method, transport) = match self {
            Req::Upgrade(key) => (
                "RDG_OUT_DATA",
                format!("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"),
            ),
            Req::OutData => (
                "RDG_OUT_DATA",
                "Connection: Keep-Alive\r\nContent-Length: 0\r\n".to_owned(),
            ),
            Req::InData => (
                "RDG_IN_DATA",
                "Connection: Keep-Alive\r\nContent-Length: 0\r\n".to_owned(),
            ),
            Req::InChunked => (
                "RDG_IN_DATA",
                "Connection: Keep-Alive\r\nTransfer-Encoding: chunked\r\n".to_owned(),
            ),
        };
        let mut req = format!(
            "{method} /remoteDesktopGateway/ HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n{transport}RDG-Connection-Id: {conn_id}\r\nUser-Agent: rdprobe\r\n"
        );
        if let Some(a) = authorization {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        req
    }
}

/// Writes `b` within `t`.
async fn send_all(s: &mut BoxIo, b: &[u8], t: Duration) -> Result<(), Verdict> {
    let start = Instant::now();
    crate::net::write_all(s, b, t)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => timed_out(t),
            _ => io_verdict(&e, start.elapsed()),
        })
}

/// Sends one request and reads the answer's head (and its body, bounded, when it has a length).
async fn exchange(
    s: &mut BoxIo,
    buf: &mut Vec<u8>,
    req: Req<'_>,
    host: &str,
    conn_id: &str,
    authorization: Option<&str>,
    t: Duration,
) -> Result<Head, Verdict> {
    let start = Instant::now();
    send_all(s, req.head(host, conn_id, authorization).as_bytes(), t).await?;
    let head = http::read_head(s, buf, t, false)
        .await
        .map_err(|e| head_verdict(&e, start.elapsed()))?;
    if head.status != 101 {
        if let Some(n) = head.content_length() {
            let _ = http::read_body(s, buf, n, t).await;
        }
    }
    Ok(head)
}

/// Reads the legacy OUT channel's seed entity body ([`super::legacy::SEED`]'s length) within `t`;
/// what follows stays in `buf`.
async fn read_seed(s: &mut BoxIo, buf: &mut Vec<u8>, t: Duration) -> Result<usize, String> {
    use tokio::io::AsyncReadExt as _;
    let want = super::legacy::SEED.len();
    let start = Instant::now();
    while buf.len() < want {
        let left = t.saturating_sub(start.elapsed());
        let mut chunk = [0u8; 256];
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => return Err(format!("no seed within {} ms", t.as_millis())),
            Ok(Ok(0)) => return Err(format!("closed after {} seed bytes", buf.len())),
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
    buf.drain(..want);
    Ok(want)
}

/// Opens the legacy IN channel to `addr`: TCP, TLS, RDG_IN_DATA with the same authentication, then
/// the chunked request head. Facts go to the gw_auth stage (`in_*`); the conversation (wire bytes
/// and TLS secrets) to `hop.in_trace`, so the capture holds both channels.
#[allow(clippy::too_many_arguments)]
async fn in_channel(
    addr: SocketAddr,
    gw: &GatewayOptions,
    host: &str,
    conn_id: &str,
    n: &Counters,
    rec: &mut Rec,
    hop: &mut Hop,
    t: Duration,
) -> Result<BoxIo, Verdict> {
    let connect_start = crate::trace::now_us();
    let tcp = match tokio::time::timeout(t, TcpStream::connect(addr)).await {
        Err(_) => return Err(timed_out(t)),
        Ok(Err(e)) => {
            return Err(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => fail(FailureKind::Refused),
                _ => fail(FailureKind::Unreachable {
                    detail: e.to_string(),
                }),
            })
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(addr);
    rec.fact("in_local", json!(local.to_string()));
    let in_trace = crate::probe::tap::SharedTrace::new(crate::trace::Trace::new(local, addr));
    in_trace.set_connect_start(connect_start);
    in_trace.push(crate::trace::EventKind::Connected);
    hop.in_trace = Some(in_trace.clone());
    let counted = Counted {
        inner: crate::probe::tap::Tap::new(tcp, in_trace.clone(), crate::trace::Layer::Wire),
        n: n.clone(),
    };
    let (conn, _, name) =
        super::tls_client(in_trace, &gw.host, crate::probe::tls::TlsVersions::Both);
    let name = name.map_err(|e| {
        fail(FailureKind::ProtocolError {
            what: format!("gateway name: {e}"),
            offset: None,
        })
    })?;
    let tls = match tokio::time::timeout(t, conn.connect(name, counted)).await {
        Err(_) => return Err(timed_out(t)),
        Ok(Err(e)) => {
            rec.fact("in_tls_error", json!(e.to_string()));
            return Err(tls_error_verdict(&e));
        }
        Ok(Ok(s)) => s,
    };
    let mut s: BoxIo = Box::new(tls);
    let mut buf = Vec::new();
    let first = exchange(&mut s, &mut buf, Req::InData, host, conn_id, None, t).await?;
    rec.fact("in_first_status", json!(first.status));
    let last = if first.status == 401 {
        let offered = http::schemes(&first);
        let mut scratch = Rec::new(Stage::GwAuth, n);
        authenticate(
            &mut s,
            &mut buf,
            Req::InData,
            host,
            conn_id,
            gw,
            &offered,
            &mut scratch,
            t,
        )
        .await?
    } else {
        first
    };
    rec.fact("in_status", json!(last.status));
    if last.status != 200 {
        return Err(http_status_verdict(&last));
    }
    send_all(
        &mut s,
        Req::InChunked.head(host, conn_id, None).as_bytes(),
        t,
    )
    .await?;
    Ok(s)
}

/// Authenticates with the best offered scheme the probe speaks (NTLM inside NTLM or Negotiate,
/// else Basic); returns the head of the accepted request (101, or 200 for the legacy transport).
#[allow(clippy::too_many_arguments)]
async fn authenticate(
    s: &mut BoxIo,
    buf: &mut Vec<u8>,
    req: Req<'_>,
    host: &str,
    conn_id: &str,
    gw: &GatewayOptions,
    offered: &[String],
    rec: &mut Rec,
    t: Duration,
) -> Result<Head, Verdict> {
    let has = |n: &str| offered.iter().any(|o| o.eq_ignore_ascii_case(n));
    let Some(creds) = &gw.credentials else {
        rec.fact("scheme", json!("none"));
        return Err(fail(FailureKind::HttpStatus {
            status: 401,
            reason: "Unauthorized (no gateway credentials given)".into(),
            location: None,
        }));
    };
    rec.fact("user", json!(creds.user));
    if let Some(d) = &creds.domain {
        rec.fact("domain", json!(d));
    }
    let scheme = if has("NTLM") {
        "NTLM"
    } else if has("Negotiate") {
        "Negotiate"
    } else if has("Basic") {
        "Basic"
    } else {
        rec.fact("scheme", json!("none"));
        return Err(fail(FailureKind::HttpStatus {
            status: 401,
            reason: format!(
                "Unauthorized (no usable scheme among {})",
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            ),
            location: None,
        }));
    };
    rec.fact("scheme", json!(scheme));
    let last = if scheme == "Basic" {
        let who = match &creds.domain {
            Some(d) => format!("{d}\\{}", creds.user),
            None => creds.user.clone(),
        };
        let token = http::b64(format!("{who}:{}", creds.password).as_bytes());
        rec.fact("credentials_sent", json!(true));
        exchange(
            s,
            buf,
            req,
            host,
            conn_id,
            Some(&format!("Basic {token}")),
            t,
        )
        .await?
    } else {
        let mut ntlm = NtlmClient::new(creds).map_err(|e| {
            fail(FailureKind::AuthFailure(crate::stage::AuthFailure {
                ntstatus: None,
                detail: format!("ntlm setup: {e}"),
            }))
        })?;
        let negotiate = ntlm.step(None).map_err(|e| {
            fail(FailureKind::AuthFailure(crate::stage::AuthFailure {
                ntstatus: None,
                detail: format!("ntlm: {e}"),
            }))
        })?;
        let h = exchange(
            s,
            buf,
            req,
            host,
            conn_id,
            Some(&format!("{scheme} {}", http::b64(&negotiate))),
            t,
        )
        .await?;
        let challenge = h
            .headers_named("www-authenticate")
            .find_map(|v| http::token_of(v, scheme))
            .filter(|t| !t.is_empty())
            .and_then(http::unb64);
        let Some(challenge) = challenge else {
            rec.fact("status", json!(h.status));
            return Err(if h.status == 101 || h.status == 200 {
                fail(FailureKind::ProtocolError {
                    what: "accepted after the NTLM NEGOTIATE alone".into(),
                    offset: None,
                })
            } else {
                http_status_verdict(&h)
            });
        };
        let authenticate = ntlm.step(Some(challenge)).map_err(|e| {
            fail(FailureKind::AuthFailure(crate::stage::AuthFailure {
                ntstatus: None,
                detail: format!("ntlm: cannot answer the gateway's CHALLENGE: {e}"),
            }))
        })?;
        rec.fact("authenticate_sent", json!(true));
        rec.fact("credentials_sent", json!(true));
        exchange(
            s,
            buf,
            req,
            host,
            conn_id,
            Some(&format!("{scheme} {}", http::b64(&authenticate))),
            t,
        )
        .await?
    };
    rec.fact("status", json!(last.status));
    if let Some(sv) = last.header("server") {
        rec.fact("server_header", json!(sv));
    }
    if last.status == 101 || last.status == 200 {
        Ok(last)
    } else {
        let sch = http::schemes(&last);
        if !sch.is_empty() {
            rec.fact("www_authenticate", json!(sch));
        }
        if let Some(l) = last.header("location") {
            rec.fact("location", json!(l));
        }
        Err(http_status_verdict(&last))
    }
}

/// NTLM initiator on sspi for HTTP authentication (no channel binding, like mstsc's RD Gateway
/// client without Extended Protection).
struct NtlmClient {
    ntlm: Ntlm,
    handle: <Ntlm as sspi::SspiImpl>::CredentialsHandle,
}

impl NtlmClient {
    fn new(c: &Credentials) -> Result<Self, String> {
        let mut ntlm = Ntlm::new();
        let identity = AuthIdentity {
            username: Username::new(&c.user, c.domain.as_deref()).map_err(|e| e.to_string())?,
            password: c.password.clone().into(),
        };
        let handle =
            AcquireCredentialsHandle::<'_, _, _, sspi::builders::WithoutCredentialUse>::new()
                .with_auth_data(&identity)
                .with_credential_use(CredentialUse::Outbound)
                .execute(&mut ntlm)
                .map_err(|e| e.to_string())?
                .credentials_handle;
        Ok(NtlmClient { ntlm, handle })
    }

    fn step(&mut self, input: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
        let mut inb = vec![SecurityBuffer::new(
            input.unwrap_or_default(),
            BufferType::Token,
        )];
        let mut out = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut b = self
            .ntlm
            .initialize_security_context()
            .with_credentials_handle(&mut self.handle)
            .with_context_requirements(ClientRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut inb)
            .with_output(&mut out);
        b.target_name = None;
        self.ntlm
            .initialize_security_context_impl(&mut b)
            .and_then(|mut g| g.resolve_to_result())
            .map_err(|e| e.to_string())?;
        Ok(out.swap_remove(0).buffer)
    }
}

/// Probes `opts.host:opts.port` through the gateway: the gateway stages, then the inner RDP over
/// the channel. The report holds both; the Trace (for `--pcap`) is the inner RDP of the channel.
pub async fn probe(opts: &ProbeOptions, gw: &GatewayOptions) -> ProbeResult {
    probe_with_capture(opts, gw).await.0
}

/// [`probe`], plus the client↔gateway conversation as a Trace (TLS records with the key log that
/// decrypts them; for `--gateway-pcap`). The Trace holds what crossed the socket up to now.
pub async fn probe_with_capture(
    opts: &ProbeOptions,
    gw: &GatewayOptions,
) -> (ProbeResult, Option<crate::trace::Trace>) {
    let (res, mut captures) = probe_with_captures(opts, gw).await;
    let first = (!captures.is_empty()).then(|| captures.swap_remove(0));
    (res, first)
}

/// [`probe_with_capture`] with every connection to the gateway: the OUT (or WebSocket) channel's
/// conversation first, then the legacy transport's IN channel, each with its own TLS secrets.
pub async fn probe_with_captures(
    opts: &ProbeOptions,
    gw: &GatewayOptions,
) -> (ProbeResult, Vec<crate::trace::Trace>) {
    let t = opts.stage_timeout;
    let started = Instant::now();
    let (mut hop, stream) = match tokio::time::timeout(
        opts.deadline,
        open(gw, &opts.host, opts.port, opts.stop_after, t),
    )
    .await
    {
        Ok(v) => v,
        Err(_) => {
            let mut hop = Hop::default();
            hop.notes.push(format!(
                "overall deadline of {} ms reached on the gateway hop",
                opts.deadline.as_millis()
            ));
            (hop, None)
        }
    };
    let local = hop.local.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let gw_addr = hop.gateway.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    // INVARIANT: Basic puts the password in the HTTP request; with the TLS secrets a capture would
    // give it away. Those captures keep the TLS records but not the secrets.
    let basic = hop
        .stages
        .iter()
        .any(|s| s.stage == Stage::GwAuth && s.facts.get("scheme") == Some(&json!("Basic")));
    let gw_shared = hop.trace.clone();
    let in_shared = hop.in_trace.clone();
    let relay = hop.relay.take();
    let Some(stream) = stream else {
        // The client closes the hop here: the capture shows it (a close right after an answer is a
        // stop, a close after the stage deadline of silence a timeout, as `analyze` reads them).
        for tr in gw_shared.iter().chain(in_shared.iter()) {
            if !tr.fin_seen(crate::trace::Dir::C2S) {
                tr.fin(crate::trace::Dir::C2S);
            }
        }
        let trace = crate::trace::Trace::new(local, gw_addr);
        let result = ProbeResult {
            trace,
            report: hop_report(opts, gw, hop, gw_addr, local),
            labels: Vec::new(),
        };
        let captures = hop_capture(gw_shared, basic)
            .into_iter()
            .chain(hop_capture(in_shared, basic))
            .collect();
        return (result, captures);
    };
    let mut inner_opts = opts.clone();
    inner_opts.deadline = opts.deadline.saturating_sub(started.elapsed());
    // The inner conversation's "server" is the target as named to the gateway; its address is
    // unknown to the client, so the Trace names the gateway's.
    let mut res = crate::probe::probe_over(&inner_opts, stream, local, gw_addr).await;
    let mut stages = hop.stages;
    for s in &mut res.report.stages {
        if s.stage == Stage::Tcp {
            s.facts.insert(
                "via_gateway".into(),
                json!(format!("{}:{}", gw.host, gw.port)),
            );
            s.facts.insert(
                "server".into(),
                json!(format!("{}:{}", opts.host, opts.port)),
            );
        }
    }
    stages.append(&mut res.report.stages);
    res.report.stages = stages;
    res.report.server = format!(
        "{}:{} via gateway {}:{}",
        opts.host, opts.port, gw.host, gw.port
    );
    res.report.notes.extend(hop.notes);
    // The inner stream is dropped: the relay passes the close on (CLOSE_CHANNEL, the transport's
    // close), so the capture shows how the channel ended. Waited for, not slept on: a fixed sleep
    // here was a third of a probe's wall time; the bound only covers a gateway that stops reading.
    if let Some(relay) = relay {
        let _ = tokio::time::timeout(Duration::from_millis(200), relay).await;
    }
    let mut capture = hop_capture(gw_shared, basic);
    if let Some(tr) = &mut capture {
        carry_inner(tr, &res.trace);
    }
    let captures = capture
        .into_iter()
        .chain(hop_capture(in_shared, basic))
        .collect();
    (res, captures)
}

/// The gateway capture carries what `analyze` needs for the inner RDP too: the inner TLS session's
/// secrets (next to the gateway's), what the probe's RDP stack rejected and where it stopped on
/// purpose (packet comments).
fn carry_inner(hop: &mut crate::trace::Trace, inner: &crate::trace::Trace) {
    if !hop.keylog.is_empty() {
        hop.keylog.extend(inner.keylog.iter().cloned());
    }
    for e in &inner.events {
        // The probe's own end too: it closes once connected (or stopped), and the server's close
        // can cross it in the channel; the capture says who decided first.
        if let crate::trace::EventKind::ClientRejected { .. }
        | crate::trace::EventKind::StoppedAfter(_) = e.kind
        {
            let at = hop.events.partition_point(|x| x.t_us <= e.t_us);
            hop.events.insert(at, e.clone());
        }
    }
}

/// The gateway conversation so far; without TLS secrets after Basic authentication.
fn hop_capture(
    shared: Option<crate::probe::tap::SharedTrace>,
    basic: bool,
) -> Option<crate::trace::Trace> {
    let mut tr = shared?.snapshot();
    if basic {
        tr.keylog.clear();
        tr.push_now(crate::trace::EventKind::Note(
            "Basic authentication: the TLS secrets are left out (they would reveal the password)"
                .into(),
        ));
    }
    Some(tr)
}

fn hop_report(
    opts: &ProbeOptions,
    gw: &GatewayOptions,
    hop: Hop,
    gw_addr: SocketAddr,
    local: SocketAddr,
) -> ConnectionReport {
    crate::decode::gateway::hop_report(
        hop.stages,
        hop.notes,
        &local.to_string(),
        &format!("{}:{}", opts.host, opts.port),
        &format!("{}:{}", gw.host, gw.port),
        &gw_addr.to_string(),
        opts.deadline.as_millis() as u64,
    )
}
