//! The lab's fake RD Gateway (MS-TSGU over HTTPS, WebSocket transport): `rdprobe lab
//! --gateway-listen ADDR`. It plays a scenario's `[gateway]` section step by step — HTTP status,
//! authentication (NTLM on sspi's acceptor, Basic), the WebSocket upgrade, handshake, tunnel, tunnel
//! authorization and channel — and relays the channel to a target address (the in-process lab
//! server, or `--target host:port`).
//!
//! INVARIANT: every read from a client has the scenario's read timeout, every write the same; each
//! connection lives at most `LabLimits::connection_timeout`; at most `max_connections` are served at
//! once. Heads are bounded by `gateway::http::MAX_HEAD_LEN`, packets by `tsgu::MAX_PACKET_LEN`.
//!
//! Both transports are served: WebSocket, and the legacy two-channel HTTP transport
//! ([`crate::gateway::legacy`]): the OUT channel's connection waits (at most the read timeout) for the
//! IN channel with the same `RDG-Connection-Id`, then runs the tunnel on both.
//!
//! Known limits: no RPC-over-HTTP (answered 404), no Negotiate/Kerberos (a `Negotiate` token that
//! carries NTLM is accepted), no PAA cookies.

mod ntlm;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::tls::TlsServer;
use super::{LabError, LabLimits};
use crate::gateway::http;
use crate::gateway::legacy::{HttpChannel, SEED};
use crate::gateway::transport::Tunnel;
use crate::gateway::tsgu::{caps, Hresult, Packet};
use crate::gateway::ws::PacketStream;
use crate::gateway::BoxIo;
use crate::net::write_all;
use crate::scenario::{Gateway, Scenario};

/// Most HTTP requests one connection may make before the gateway closes it (authentication rounds).
const MAX_REQUESTS: usize = 8;
/// The planted bug `[gateway] bug = "gw-long-resource-hang"` (see `scenario::Gateway::bug`).
pub const PLANTED_LONG_RESOURCE: &str = "gw-long-resource-hang";
/// How long the planted hang lasts.
const PLANTED_HANG: Duration = Duration::from_secs(10);
/// How long a closing connection keeps reading what the client still sends (a lingering close:
/// closing with unread bytes would reset the connection instead of closing it).
const LINGER: Duration = Duration::from_millis(300);
/// The server version the lab gateway announces in TUNNEL_RESPONSE.
const SERVER_VERSION: u16 = 5;

/// What the lab gateway relays channels to.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub scenario: Scenario,
    /// Where an accepted channel goes (whatever resource name the client asked for).
    pub target: SocketAddr,
    pub limits: LabLimits,
}

/// How one gateway connection went.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GatewayOutcome {
    pub peer: SocketAddr,
    /// The last step reached: tls, http, auth, tunnel, channel, relay.
    pub step: &'static str,
    pub user: Option<String>,
    /// Resource names the client asked for.
    pub resources: Vec<String>,
    pub result: String,
    /// The connection went on in another task (a legacy IN channel handed to its OUT channel).
    #[serde(skip)]
    pub handed_off: bool,
}

#[derive(Default)]
struct Shared {
    tally: super::Tally<GatewayOutcome>,
    /// Legacy OUT channels waiting for their IN channel, by `RDG-Connection-Id`.
    waiting_out: Mutex<HashMap<String, tokio::sync::oneshot::Sender<InChannel>>>,
}

/// Most legacy OUT channels waiting for their IN channel at once.
const MAX_WAITING_OUT: usize = 64;

/// A legacy IN channel handed to its OUT channel's connection.
struct InChannel {
    stream: BoxIo,
    /// Body bytes read with the chunked head.
    leftover: Vec<u8>,
    chunked: bool,
    peer: SocketAddr,
}

/// A running lab gateway; dropping it stops it.
pub struct GatewayHandle {
    pub addr: SocketAddr,
    server: super::ServerThread,
    shared: Arc<Shared>,
}

impl GatewayHandle {
    pub fn stop(mut self) {
        self.server.shutdown();
    }

    pub fn connections_served(&self) -> u64 {
        self.shared.tally.accepted()
    }

    /// Outcomes of the connections that ended, in order.
    pub fn outcomes(&self) -> Vec<GatewayOutcome> {
        self.shared.tally.outcomes()
    }
}

/// Binds `addr` and serves the gateway in a thread of its own. The listen policy
/// ([`super::check_listen`]) is the caller's.
pub fn spawn_gateway(addr: SocketAddr, cfg: GatewayConfig) -> Result<GatewayHandle, LabError> {
    let tls =
        match super::tls::certificate(cfg.scenario.tls.certificate, &cfg.scenario.tls.subject)? {
            Some(m) => TlsServer::build(&m, &cfg.scenario.tls.versions)?,
            None => {
                return Err(LabError::Certificate(
                    "an RD Gateway needs a certificate: tls.certificate = \"none\" is not possible"
                        .into(),
                ))
            }
        };
    let (listener, local, runtime) = super::bind(addr)?;
    let shared = Arc::new(Shared::default());
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(addr = %local, scenario = %cfg.scenario.name, target = %cfg.target, "lab gateway listening");
    let sh = shared.clone();
    let cfg = Arc::new(cfg);
    let thread = std::thread::Builder::new()
        .name("rdprobe-lab-gateway".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let sem = Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_connections));
                loop {
                    let (sock, peer) = tokio::select! {
                        _ = &mut stop_rx => break,
                        r = listener.accept() => match r {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                    };
                    let Ok(permit) = sem.clone().try_acquire_owned() else {
                        sh.tally.refuse();
                        drop(sock);
                        continue;
                    };
                    sh.tally.accept();
                    let cfg = cfg.clone();
                    let tls = tls.clone();
                    let sh = sh.clone();
                    tokio::spawn(async move {
                        let mut out = GatewayOutcome {
                            peer,
                            step: "tls",
                            user: None,
                            resources: Vec::new(),
                            result: String::new(),
                            handed_off: false,
                        };
                        let total = cfg.limits.connection_timeout;
                        let resets = cfg.scenario.gateway.as_ref().is_some_and(|g| g.reset_after_auth);
                        // A second handle on the socket for the lingering close (not when the
                        // scenario wants the reset that dropping the socket gives).
                        let linger = (!resets)
                            .then(|| {
                                use std::os::fd::AsFd as _;
                                sock.as_fd().try_clone_to_owned().ok()
                            })
                            .flatten()
                            .map(std::net::TcpStream::from);
                        let r = tokio::time::timeout(total, serve(sock, &cfg, &tls, &sh, &mut out)).await;
                        // A handed-off IN channel is read by its OUT channel's task now.
                        if let Some(l) = linger.filter(|_| !out.handed_off) {
                            lingering_close(l).await;
                        }
                        out.result = match r {
                            Err(_) => format!("connection timeout of {} ms", total.as_millis()),
                            Ok(s) => s,
                        };
                        tracing::debug!(peer = %peer, step = out.step, result = %out.result, "gateway connection ended");
                        sh.tally.record(out);
                        drop(permit);
                    });
                }
            });
        })
        .map_err(LabError::Runtime)?;
    Ok(GatewayHandle {
        addr: local,
        server: super::ServerThread::new(stop_tx, thread),
        shared,
    })
}

/// Serves one connection; returns how it ended.
async fn serve(
    sock: TcpStream,
    cfg: &GatewayConfig,
    tls: &TlsServer,
    shared: &Shared,
    out: &mut GatewayOutcome,
) -> String {
    let _ = sock.set_nodelay(true);
    let t = Duration::from_millis(cfg.scenario.link.read_timeout_ms.max(1));
    let g = cfg.scenario.gateway.clone().unwrap_or_default();
    if g.reset_after_auth {
        // So that dropping the connection in `reset` sends an RST, not a FIN.
        let _ = socket2_linger_zero(&sock);
    }
    // --- tls ---
    let mut s: BoxIo = match tls {
        TlsServer::Rustls(acc) => match tokio::time::timeout(t, acc.accept(sock)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => return format!("tls handshake failed: {e}"),
            Err(_) => return "tls handshake timed out".into(),
        },
        TlsServer::OpenSsl(acc) => {
            let Ok(ssl) = openssl::ssl::Ssl::new(acc.context()) else {
                return "tls setup failed".into();
            };
            let Ok(mut st) = tokio_openssl::SslStream::new(ssl, sock) else {
                return "tls setup failed".into();
            };
            match tokio::time::timeout(t, std::pin::Pin::new(&mut st).accept()).await {
                Ok(Ok(())) => Box::new(st),
                Ok(Err(e)) => return format!("tls handshake failed: {e}"),
                Err(_) => return "tls handshake timed out".into(),
            }
        }
    };
    // --- http + auth ---
    out.step = "http";
    let mut buf = Vec::new();
    let mut ntlm: Option<ntlm::NtlmServer> = None;
    let mut user: Option<String> = None;
    for _ in 0..MAX_REQUESTS {
        let head = match http::read_head(&mut s, &mut buf, t, true).await {
            Ok(h) => h,
            Err(e) => return format!("reading a request: {e}"),
        };
        if let Some(status) = g.status {
            let mut extra = Vec::new();
            if let Some(l) = &g.location {
                extra.push(("Location".to_owned(), l.clone()));
            }
            if status == 401 {
                for sch in g.offer.as_ref().unwrap_or(&g.schemes) {
                    extra.push(("WWW-Authenticate".to_owned(), offer_value(sch)));
                }
            }
            let body = if (300..400).contains(&status) {
                "<html><head><title>Sign in</title></head><body>Sign in to continue</body></html>"
            } else {
                ""
            };
            // A forced 401 keeps the connection, as a gateway does between authentication rounds.
            let close = status != 401;
            if respond(&mut s, status, reason(status), &extra, body, close, t)
                .await
                .is_err()
                || close
            {
                return format!("answered {status} by the scenario");
            }
            continue;
        }
        // The RPC-over-HTTP proxy is another IIS application, which the lab does not have.
        if head.method.eq_ignore_ascii_case("RPC_IN_DATA")
            || head.method.eq_ignore_ascii_case("RPC_OUT_DATA")
        {
            let _ = respond(&mut s, 404, "Not Found", &[], "", true, t).await;
            return "RPC-over-HTTP is not served".into();
        }
        let upgrade = head
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let legacy = !upgrade || !g.websocket_offered;
        if legacy && !g.legacy_http {
            let _ = respond(
                &mut s,
                501,
                "Not Implemented",
                &[],
                "the legacy HTTP transport is not served here",
                true,
                t,
            )
            .await;
            return format!(
                "{} without a WebSocket upgrade: legacy transport not served (scenario)",
                head.method
            );
        }
        // Authentication.
        let auth = head.header("authorization").map(str::to_owned);
        if user.is_none() {
            out.step = "auth";
            match auth.as_deref().map(parse_auth) {
                Some(Some(("basic", token))) if accepts(&g, "basic") => {
                    match basic_user(&cfg.scenario, token) {
                        Some(u) => user = Some(u),
                        None => {
                            if challenge(&mut s, &g, t).await.is_err() {
                                return "write failed".into();
                            }
                            continue;
                        }
                    }
                }
                Some(Some((scheme @ ("ntlm" | "negotiate"), token)))
                    if accepts(&g, "ntlm") || accepts(&g, "negotiate") =>
                {
                    let Some(bytes) = http::unb64(token) else {
                        let _ = respond(&mut s, 400, "Bad Request", &[], "", true, t).await;
                        return "undecodable authorization token".into();
                    };
                    let server = ntlm.get_or_insert_with(|| {
                        ntlm::NtlmServer::new(cfg.scenario.identity.users.clone())
                    });
                    match server.round(&bytes) {
                        ntlm::Round::Challenge(c) => {
                            let name = if scheme == "negotiate" {
                                "Negotiate"
                            } else {
                                "NTLM"
                            };
                            let v = format!("{name} {}", http::b64(&c));
                            if respond(
                                &mut s,
                                401,
                                "Unauthorized",
                                &[("WWW-Authenticate".into(), v)],
                                "",
                                false,
                                t,
                            )
                            .await
                            .is_err()
                            {
                                return "write failed".into();
                            }
                            continue;
                        }
                        ntlm::Round::Accepted(u) => {
                            if g.reset_after_auth {
                                return reset(
                                    s,
                                    "reset right after the NTLM AUTHENTICATE (scenario)",
                                )
                                .await;
                            }
                            user = Some(u);
                        }
                        ntlm::Round::Rejected(why) => {
                            ntlm = None;
                            if challenge(&mut s, &g, t).await.is_err() {
                                return "write failed".into();
                            }
                            out.result = why;
                            continue;
                        }
                    }
                }
                _ => {
                    if challenge(&mut s, &g, t).await.is_err() {
                        return "write failed".into();
                    }
                    continue;
                }
            }
        }
        out.user = user.clone();
        out.step = "http";
        // Transport.
        if legacy {
            return legacy_channel(s, buf, &head, cfg, &g, shared, out, t).await;
        }
        if !g.websocket {
            let _ = respond(&mut s, 200, "OK", &[], "", true, t).await;
            return "WebSocket upgrade refused by the scenario (200 OK)".into();
        }
        let Some(key) = head.header("sec-websocket-key") else {
            let _ = respond(&mut s, 400, "Bad Request", &[], "", true, t).await;
            return "upgrade without Sec-WebSocket-Key".into();
        };
        let accept = http::websocket_accept(key);
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nServer: Microsoft-HTTPAPI/2.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        if write_all(&mut s, resp.as_bytes(), t).await.is_err() {
            return "write failed".into();
        }
        let leftover = std::mem::take(&mut buf);
        let ps = PacketStream::new(s, leftover, Role::Server).await;
        return tunnel(Tunnel::WebSocket(Box::new(ps)), cfg, &g, out, t).await;
    }
    format!("more than {MAX_REQUESTS} requests without a tunnel")
}

/// One legacy HTTP transport channel after authentication: an OUT channel answers `200 OK` with the
/// seed and waits for its IN channel, then runs the tunnel; an IN channel answers `200 OK`, reads the
/// chunked request head and hands itself to the OUT channel with the same `RDG-Connection-Id`.
#[allow(clippy::too_many_arguments)]
async fn legacy_channel(
    mut s: BoxIo,
    mut buf: Vec<u8>,
    head: &http::Head,
    cfg: &GatewayConfig,
    g: &Gateway,
    shared: &Shared,
    out: &mut GatewayOutcome,
    t: Duration,
) -> String {
    let Some(id) = head.header("rdg-connection-id").map(str::to_owned) else {
        let _ = respond(&mut s, 400, "Bad Request", &[], "", true, t).await;
        return format!("{} without RDG-Connection-Id", head.method);
    };
    if head.method.eq_ignore_ascii_case("RDG_OUT_DATA") {
        // HTTP/1.0 semantics: no length, the body (the seed, then the packets) ends with the
        // connection (MS-TSGU 3.3.5.1).
        let mut resp = b"HTTP/1.1 200 OK\r\nServer: Microsoft-HTTPAPI/2.0\r\n\r\n".to_vec();
        resp.extend_from_slice(&SEED);
        if write_all(&mut s, &resp, t).await.is_err() {
            return "write failed".into();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let Ok(mut w) = shared.waiting_out.lock() else {
                return "internal: lock poisoned".into();
            };
            if w.len() >= MAX_WAITING_OUT {
                return format!("more than {MAX_WAITING_OUT} OUT channels waiting");
            }
            w.insert(id.clone(), tx);
        }
        out.step = "out_channel";
        let joined = tokio::time::timeout(t, rx).await;
        if let Ok(mut w) = shared.waiting_out.lock() {
            w.remove(&id);
        }
        let Ok(Ok(inc)) = joined else {
            return format!(
                "OUT channel {id}: no IN channel within {} ms",
                t.as_millis()
            );
        };
        tracing::debug!(peer = %inc.peer, id = %id, "legacy IN channel joined");
        let ch = HttpChannel::server(inc.stream, inc.leftover, inc.chunked, s);
        return tunnel(Tunnel::Http(ch), cfg, g, out, t).await;
    }
    if !head.method.eq_ignore_ascii_case("RDG_IN_DATA") {
        let _ = respond(&mut s, 405, "Method Not Allowed", &[], "", true, t).await;
        return format!("{}: not an RD Gateway method", head.method);
    }
    out.step = "in_channel";
    if respond(&mut s, 200, "OK", &[], "", false, t).await.is_err() {
        return "write failed".into();
    }
    // The client sends the head again, now with the body that carries its packets.
    let data_head = match http::read_head(&mut s, &mut buf, t, true).await {
        Ok(h) => h,
        Err(e) => return format!("IN channel {id}: reading the data request: {e}"),
    };
    let chunked = data_head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let sender = shared
        .waiting_out
        .lock()
        .ok()
        .and_then(|mut w| w.remove(&id));
    let Some(sender) = sender else {
        let _ = respond(&mut s, 400, "Bad Request", &[], "", true, t).await;
        return format!("IN channel {id}: no OUT channel with that id");
    };
    let peer = out.peer;
    if sender
        .send(InChannel {
            stream: s,
            leftover: buf,
            chunked,
            peer,
        })
        .is_err()
    {
        return format!("IN channel {id}: the OUT channel ended");
    }
    out.handed_off = true;
    format!("IN channel {id} joined its OUT channel (chunked: {chunked})")
}

/// Handshake, tunnel, tunnel authorization, channel, then the relay.
async fn tunnel(
    mut ps: Tunnel,
    cfg: &GatewayConfig,
    g: &Gateway,
    out: &mut GatewayOutcome,
    t: Duration,
) -> String {
    out.step = "tunnel";
    macro_rules! recv {
        ($what:expr) => {
            match ps.recv(t).await {
                Ok(p) => p,
                Err(e) => return format!("waiting for {}: {e}", $what),
            }
        };
    }
    macro_rules! send {
        ($p:expr) => {
            if let Err(e) = ps.send(&$p, t).await {
                return format!("write failed: {e}");
            }
        };
    }
    match recv!("the handshake request") {
        Packet::HandshakeRequest { .. } => {}
        other => return format!("expected HANDSHAKE_REQUEST, got {}", other.name()),
    }
    send!(Packet::HandshakeResponse {
        error_code: 0,
        major: 1,
        minor: 0,
        server_version: 0,
        extended_auth: 0,
    });
    match recv!("the tunnel create") {
        Packet::TunnelCreate { .. } => {}
        other => return format!("expected TUNNEL_CREATE, got {}", other.name()),
    }
    if g.tunnel_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(g.tunnel_delay_ms)).await;
    }
    if let Some(code) = g.tunnel_error.as_deref().and_then(Hresult::parse) {
        send!(Packet::TunnelResponse {
            server_version: SERVER_VERSION,
            status_code: code.0,
            tunnel_id: None,
            caps: None,
            consent: None,
        });
        ps.close(t).await;
        return format!("tunnel refused with {code} (scenario)");
    }
    send!(Packet::TunnelResponse {
        server_version: SERVER_VERSION,
        status_code: 0,
        tunnel_id: Some(1),
        caps: Some(caps::MESSAGING_SERVICE_MSG | caps::IDLE_TIMEOUT),
        consent: None,
    });
    match recv!("the tunnel authorization") {
        Packet::TunnelAuth { .. } => {}
        other => return format!("expected TUNNEL_AUTH, got {}", other.name()),
    }
    send!(Packet::TunnelAuthResponse {
        error_code: 0,
        redir_flags: Some(0),
        idle_timeout_min: Some(0),
    });
    out.step = "channel";
    let (resources, port) = match recv!("the channel create") {
        Packet::ChannelCreate {
            resources,
            alt_resources,
            port,
            ..
        } => (
            resources
                .into_iter()
                .chain(alt_resources)
                .collect::<Vec<_>>(),
            port,
        ),
        other => return format!("expected CHANNEL_CREATE, got {}", other.name()),
    };
    out.resources = resources.clone();
    if g.bug.as_deref() == Some(PLANTED_LONG_RESOURCE)
        && out.peer.ip().is_loopback()
        && resources.iter().any(|r| r.chars().count() > 200)
    {
        // Planted for the fuzzer's tests: a hang that ignores the client (no read, no answer).
        tokio::time::sleep(PLANTED_HANG).await;
        return "planted bug: a resource name longer than 200 characters hung the connection"
            .into();
    }
    if g.channel_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(g.channel_delay_ms)).await;
    }
    let denied = resources.iter().any(|r| {
        g.rap_deny
            .iter()
            .any(|d| d == "*" || d.eq_ignore_ascii_case(r))
    });
    let refuse = |code: u32| Packet::ChannelResponse {
        error_code: code,
        channel_id: None,
    };
    if denied {
        send!(refuse(0x8007_59DA));
        ps.close(t).await;
        return format!("channel to {resources:?}:{port} refused by the RAP (scenario)");
    }
    if g.target_unreachable {
        send!(refuse(0x8007_59DD));
        ps.close(t).await;
        return format!("channel to {resources:?}:{port}: target unreachable (scenario)");
    }
    let target = match tokio::time::timeout(t, TcpStream::connect(cfg.target)).await {
        Ok(Ok(s)) => s,
        _ => {
            send!(refuse(0x8007_59DD));
            ps.close(t).await;
            return format!("cannot reach the target {}", cfg.target);
        }
    };
    let _ = target.set_nodelay(true);
    send!(Packet::ChannelResponse {
        error_code: 0,
        channel_id: Some(1),
    });
    out.step = "relay";
    let started = Instant::now();
    let end = ps.relay(target, cfg.limits.connection_timeout, t).await;
    format!("relayed {} ms: {end}", started.elapsed().as_millis())
}

fn accepts(g: &Gateway, scheme: &str) -> bool {
    g.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
}

fn offer_value(scheme: &str) -> String {
    if scheme.eq_ignore_ascii_case("basic") {
        "Basic realm=\"rdprobe-lab\"".into()
    } else {
        scheme.to_owned()
    }
}

/// `(scheme lowercase, token)` of an Authorization value.
fn parse_auth(v: &str) -> Option<(&'static str, &str)> {
    for s in ["basic", "ntlm", "negotiate"] {
        if let Some(tok) = http::token_of(v, s) {
            return Some((s, tok));
        }
    }
    None
}

fn basic_user(sc: &Scenario, token: &str) -> Option<String> {
    let raw = http::unb64(token)?;
    let text = String::from_utf8(raw).ok()?;
    let (who, pass) = text.split_once(':')?;
    let (domain, name) = match who.split_once('\\') {
        Some((d, n)) => (Some(d), n),
        None => (None, who),
    };
    let u = sc.find_user(name, domain)?;
    (u.secret()? == pass).then(|| u.name.clone())
}

/// A 401 offering the scenario's schemes (keeps the connection for the next round).
async fn challenge<S: AsyncWrite + Unpin>(
    s: &mut S,
    g: &Gateway,
    t: Duration,
) -> std::io::Result<()> {
    let extra: Vec<(String, String)> = g
        .schemes
        .iter()
        .map(|sch| ("WWW-Authenticate".to_owned(), offer_value(sch)))
        .collect();
    respond(s, 401, "Unauthorized", &extra, "", false, t).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    reason: &str,
    headers: &[(String, String)],
    body: &str,
    close: bool,
    t: Duration,
) -> std::io::Result<()> {
    let mut r = format!("HTTP/1.1 {status} {reason}\r\nServer: Microsoft-HTTPAPI/2.0\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        r.push_str("Content-Type: text/html\r\n");
    }
    r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    write_all(s, r.as_bytes(), t).await?;
    if close {
        let _ = tokio::time::timeout(t, s.shutdown()).await;
    }
    Ok(())
}

/// Ends the connection with a TCP RST (SO_LINGER 0) under the TLS layer.
async fn reset(s: BoxIo, why: &str) -> String {
    // The TLS stream owns the socket; dropping it with linger 0 set beforehand sends the RST. The
    // socket's linger was set when the connection was accepted (see `serve`).
    drop(s);
    why.to_owned()
}

fn socket2_linger_zero(sock: &TcpStream) -> std::io::Result<()> {
    #[allow(deprecated)]
    sock.set_linger(Some(Duration::ZERO))
}

/// Half-closes the connection and reads what the client still sends, for at most [`LINGER`].
async fn lingering_close(s: std::net::TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let _ = s.shutdown(std::net::Shutdown::Write);
    if s.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut s) = TcpStream::from_std(s) else {
        return;
    };
    let mut b = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
    })
    .await;
}
