//! `rdprobe enum GW --gateway`: what an RD Gateway offers before anyone logs on — TLS versions and
//! the certificate, the authentication schemes it asks for, and how each transport's first request
//! is answered (WebSocket upgrade, legacy HTTP `RDG_OUT_DATA`, RPC-over-HTTP `RPC_IN_DATA` and
//! `RPC_OUT_DATA` on `/rpc/rpcproxy.dll`: 404 / 405 / 501 say "not offered"). One
//! connection per question, each with the deadline; no credentials are sent.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::http;

/// One TLS version asked alone.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TlsAnswer {
    pub version: String,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How one transport's first request was answered.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TransportAnswer {
    /// websocket, http, rpc_in, rpc_out
    pub transport: &'static str,
    /// The request line sent.
    pub request: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schemes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// What the answer says: "upgraded", "authentication required", "answers", "not offered",
    /// "redirected", "forbidden", or the error.
    pub meaning: String,
    /// Whether the transport answers: `true` for 101 / 200 / 401 (its endpoint is there, asking for
    /// authentication at most), `false` for 404 / 405 / 501 (not offered), absent when the answer
    /// says neither (a redirect, 403, an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered: Option<bool>,
}

/// Whether a status says the transport is offered (see [`TransportAnswer::offered`]).
pub fn offered(status: u16) -> Option<bool> {
    match status {
        101 | 200 | 401 => Some(true),
        404 | 405 | 501 => Some(false),
        _ => None,
    }
}

/// Everything `enum --gateway` found.
#[derive(Clone, Debug, Serialize)]
pub struct Survey {
    pub gateway: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub tls: Vec<TlsAnswer>,
    /// Facts of the leaf certificate (as `gw_tls` reports them).
    pub certificate: serde_json::Map<String, serde_json::Value>,
    /// Schemes asked for by the first 401 (any transport).
    pub auth_schemes: Vec<String>,
    pub transports: Vec<TransportAnswer>,
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    addr: SocketAddr,
    host: &str,
    versions: crate::probe::tls::TlsVersions,
    t: Duration,
) -> Result<(Tls, Vec<Vec<u8>>), String> {
    let tcp = tokio::time::timeout(t, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("tcp connect timed out after {} ms", t.as_millis()))?
        .map_err(|e| e.to_string())?;
    let scratch = crate::probe::tap::SharedTrace::new(crate::trace::Trace::new(addr, addr));
    let (conn, verifier, name) = super::tls_client(scratch, host, versions);
    let name = name.map_err(|e| e.to_string())?;
    let s = tokio::time::timeout(t, conn.connect(name, tcp))
        .await
        .map_err(|_| format!("tls handshake timed out after {} ms", t.as_millis()))?
        .map_err(|e| e.to_string())?;
    let chain = verifier
        .chain
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok((s, chain))
}

async fn ask(
    addr: SocketAddr,
    host: &str,
    port: u16,
    transport: &'static str,
    t: Duration,
) -> TransportAnswer {
    let host_header = if port == 443 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    let (line, extra) = match transport {
        "websocket" => (
            "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1".to_owned(),
            format!(
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n",
                http::websocket_key()
            ),
        ),
        "http" => (
            "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1".to_owned(),
            "Connection: Keep-Alive\r\nContent-Length: 0\r\n".to_owned(),
        ),
        "rpc_in" => (
            "RPC_IN_DATA /rpc/rpcproxy.dll?localhost:3388 HTTP/1.1".to_owned(),
            "Connection: Keep-Alive\r\nContent-Length: 0\r\n".to_owned(),
        ),
        _ => (
            "RPC_OUT_DATA /rpc/rpcproxy.dll?localhost:3388 HTTP/1.1".to_owned(),
            "Connection: Keep-Alive\r\nContent-Length: 0\r\n".to_owned(),
        ),
    };
    let mut a = TransportAnswer {
        transport,
        request: line.clone(),
        status: None,
        reason: String::new(),
        schemes: Vec::new(),
        server_header: None,
        location: None,
        meaning: String::new(),
        offered: None,
    };
    let (mut s, _) = match connect(addr, host, crate::probe::tls::TlsVersions::Both, t).await {
        Ok(v) => v,
        Err(e) => {
            a.meaning = e;
            return a;
        }
    };
    let req = format!(
        "{line}\r\nHost: {host_header}\r\nAccept: */*\r\nCache-Control: no-cache\r\nPragma: no-cache\r\nRDG-Connection-Id: {{00000000-0000-4000-8000-000000000000}}\r\nUser-Agent: rdprobe\r\n{extra}\r\n"
    );
    match tokio::time::timeout(t, s.write_all(req.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            a.meaning = format!("write failed: {e}");
            return a;
        }
        Err(_) => {
            a.meaning = "write timed out".into();
            return a;
        }
    }
    let mut buf = Vec::new();
    match http::read_head(&mut s, &mut buf, t, false).await {
        Err(e) => a.meaning = e.to_string(),
        Ok(h) => {
            a.status = Some(h.status);
            a.reason = h.reason.clone();
            a.schemes = http::schemes(&h);
            a.server_header = h.header("server").map(str::to_owned);
            a.location = h.header("location").map(str::to_owned);
            a.offered = offered(h.status);
            a.meaning = match h.status {
                101 => "upgraded (no authentication asked)".into(),
                401 => "authentication required".into(),
                200 => "answers".into(),
                300..=399 => "redirected".into(),
                403 => "forbidden".into(),
                404 | 405 | 501 => "not offered".into(),
                s => format!("answered {s}"),
            };
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), s.shutdown()).await;
    a
}

/// Surveys the gateway at `host:port`.
pub async fn survey(host: &str, port: u16, t: Duration) -> Result<Survey, String> {
    let addr = tokio::time::timeout(
        t,
        tokio::net::lookup_host((host.trim_matches(|c| c == '[' || c == ']'), port)),
    )
    .await
    .map_err(|_| format!("name resolution of {host} timed out"))?
    .map_err(|e| format!("cannot resolve {host}: {e}"))?
    .next()
    .ok_or_else(|| format!("{host} resolves to no address"))?;
    let mut tls = Vec::new();
    let mut certificate = serde_json::Map::new();
    for (name, v) in [
        ("TLSv1.3", crate::probe::tls::TlsVersions::Only13),
        ("TLSv1.2", crate::probe::tls::TlsVersions::Only12),
    ] {
        match connect(addr, host, v, t).await {
            Ok((s, chain)) => {
                let (_, c) = s.get_ref();
                tls.push(TlsAnswer {
                    version: name.into(),
                    accepted: true,
                    cipher_suite: c
                        .negotiated_cipher_suite()
                        .map(|cs| format!("{:?}", cs.suite())),
                    error: None,
                });
                if certificate.is_empty() {
                    if let Some(leaf) = chain.first() {
                        let now = (crate::trace::now_us() / 1_000_000) as i64;
                        if let Ok(f) = crate::decode::tls::cert_facts(leaf, now) {
                            if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&f) {
                                certificate = m;
                            }
                        }
                    }
                }
            }
            Err(e) => tls.push(TlsAnswer {
                version: name.into(),
                accepted: false,
                cipher_suite: None,
                error: Some(e),
            }),
        }
    }
    let mut transports = Vec::new();
    for tr in ["websocket", "http", "rpc_in", "rpc_out"] {
        transports.push(ask(addr, host, port, tr, t).await);
    }
    let auth_schemes = transports
        .iter()
        .find(|a| a.status == Some(401))
        .map(|a| a.schemes.clone())
        .unwrap_or_default();
    Ok(Survey {
        gateway: format!("{host}:{port}"),
        address: Some(addr.to_string()),
        tls,
        certificate,
        auth_schemes,
        transports,
    })
}

/// The survey as text tables.
pub fn render(s: &Survey) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "RD Gateway {} ({})",
        s.gateway,
        s.address.as_deref().unwrap_or("?")
    );
    let _ = writeln!(o, "TLS");
    for t in &s.tls {
        let _ = writeln!(
            o,
            "  {:8} {:9} {}",
            t.version,
            if t.accepted { "accepted" } else { "refused" },
            t.cipher_suite
                .as_deref()
                .or(t.error.as_deref())
                .unwrap_or("")
        );
    }
    for k in [
        "subject",
        "issuer",
        "not_after",
        "expired",
        "self_signed",
        "key_type",
        "key_bits",
    ] {
        if let Some(v) = s.certificate.get(k) {
            let _ = writeln!(o, "  certificate {k}: {}", v.to_string().trim_matches('"'));
        }
    }
    let _ = writeln!(
        o,
        "authentication schemes: {}",
        if s.auth_schemes.is_empty() {
            "none asked".to_owned()
        } else {
            s.auth_schemes.join(", ")
        }
    );
    let names = |want: bool| -> Vec<&str> {
        s.transports
            .iter()
            .filter(|a| a.offered == Some(want))
            .map(|a| a.transport)
            .collect()
    };
    let _ = writeln!(
        o,
        "transports answering: {}; not offered: {}",
        Some(names(true).join(", "))
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| "none".into()),
        Some(names(false).join(", "))
            .filter(|x| !x.is_empty())
            .unwrap_or_else(|| "none".into())
    );
    let _ = writeln!(o, "transports");
    for a in &s.transports {
        let _ = writeln!(
            o,
            "  {:9} {:5} {:28} {}{}",
            a.transport,
            a.status
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            a.meaning,
            a.server_header
                .as_deref()
                .map(|x| format!("Server: {x}"))
                .unwrap_or_default(),
            a.location
                .as_deref()
                .map(|x| format!(" Location: {x}"))
                .unwrap_or_default()
        );
    }
    o
}
