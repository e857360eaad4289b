//! `rdprobe enum HOST[:PORT]`: what a server offers, one short connection per question, in
//! parallel where the server allows, every wait with a deadline.
//!
//! * security protocols (MS-RDPBCGR 2.2.1.1.1): each of RDP, SSL, HYBRID, RDSTLS, HYBRID_EX and
//!   RDSAAD offered alone, and all offered together: accepted, selected, RDP_NEG_FAILURE code,
//!   negotiation flags;
//! * standard RDP security: one MCS Connect Initial per encryption method (40/56/128-bit, FIPS,
//!   MS-RDPBCGR 2.2.1.3.3) and what the server security data says (2.2.1.4.3): method chosen,
//!   level, server random, proprietary or X.509 certificate and its RSA key;
//! * TLS 1.0-1.3 (OpenSSL with min = max version and `@SECLEVEL=0`, so versions rustls does not
//!   speak are asked too) and the cipher suites each version accepts, found by offering every
//!   suite not yet accepted until the server refuses (bounded); a certificate audit;
//! * CredSSP (MS-CSSP) version and the NTLM target info (MS-NLMP 2.2.2.1) without credentials
//!   (the probe stopped after the CHALLENGE), and with credentials whether they are accepted.
//!
//! The protocol decoding is `decode`'s; this module only asks the questions.

pub mod render;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::decode::x224::{self as dx, X224};
use crate::probe::{Credentials, ProbeOptions, Protocol};
use crate::rdpsec::{cert, gcc, Method};
use crate::stage::{FailureKind, Stage, Verdict};

/// Cipher suites tried at most per TLS version (each accepted suite costs one connection).
pub const DEFAULT_CIPHER_LIMIT: usize = 64;

/// What to enumerate and how.
#[derive(Clone, Debug)]
pub struct EnumOptions {
    pub host: String,
    pub port: u16,
    /// Deadline of every wait on the server.
    pub timeout: Duration,
    /// Connections open at the same time.
    pub concurrency: usize,
    /// With credentials, also check whether they are accepted (auth-only, stops after CredSSP).
    pub credentials: Option<Credentials>,
    /// Upper bound of cipher suites tried per TLS version.
    pub cipher_limit: usize,
    /// Skip the cipher suite enumeration (versions only).
    pub skip_ciphers: bool,
}

impl EnumOptions {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        EnumOptions {
            host: host.into(),
            port,
            timeout: Duration::from_secs(5),
            concurrency: 3,
            credentials: None,
            cipher_limit: DEFAULT_CIPHER_LIMIT,
            skip_ciphers: false,
        }
    }
}

/// The answer to one X.224 negotiation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Negotiation {
    /// What was offered (names; "PROTOCOL_RDP" for none).
    pub offered: Vec<String>,
    pub offered_value: u32,
    /// "negotiation response", "negotiation failure", "no negotiation data" (a pre-5.2 server),
    /// or "error".
    pub response: String,
    /// The server selected exactly what was offered (for a single protocol).
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_value: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One encryption method of standard RDP security.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MethodResult {
    pub method: Method,
    /// The server selected this method when it was the only one offered.
    pub accepted: bool,
    /// What the server selected instead ("none" = no encryption).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Standard RDP security as the server security data describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RdpSecurity {
    pub methods: Vec<MethodResult>,
    /// The encryption level the server enforces (MS-RDPBCGR 2.2.1.4.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rdp_version: Option<String>,
    pub server_random_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_temporary: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_bits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_exponent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_error: Option<String>,
}

/// One TLS version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsVersionResult {
    /// "TLSv1.0" … "TLSv1.3"
    pub version: String,
    pub accepted: bool,
    /// Accepted cipher suites (IANA names): the server's preferred one first, then the others by
    /// key exchange group.
    pub cipher_suites: Vec<String>,
    /// Handshakes made for this version: one offering everything, then one per accepted suite plus
    /// one per cipher group (each offered every suite of its group not yet accepted).
    pub attempts: usize,
    /// Whether the enumeration stopped at `cipher_limit` rather than at a refusal.
    pub truncated: bool,
    /// Why the first handshake failed (alert or error), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The certificate audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertAudit {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
    pub expired: bool,
    pub not_yet_valid: bool,
    pub self_signed: bool,
    /// The host asked for.
    pub host: String,
    pub name_matches: bool,
    pub key: String,
    pub key_bits: u32,
    pub weak_key: bool,
    pub signature_algorithm: String,
    pub weak_signature: bool,
    pub sha256: String,
    pub chain_len: usize,
    /// One line per problem found ("expired 30 days ago", "name mismatch", …).
    pub findings: Vec<String>,
}

/// TLS as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsEnum {
    /// The protocol offered in the X.224 request before each handshake.
    pub via: String,
    pub versions: Vec<TlsVersionResult>,
    /// What the handshakes offered: up to TLS 1.2 every suite of OpenSSL's
    /// `ALL:COMPLEMENTOFALL:@SECLEVEL=0`, by key exchange group, less the suites already accepted;
    /// for TLS 1.3 the five RFC 8446 suites one by one.
    pub offered: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertAudit>,
}

/// CredSSP and the NTLM CHALLENGE's target info.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CredsspEnum {
    pub via: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nb_computer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nb_domain_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_computer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_domain_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_tree_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_time: Option<String>,
    /// The probe's verdict when no CHALLENGE was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether the given credentials are accepted (auth-only: the probe stops after CredSSP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialCheck {
    pub user: String,
    pub accepted: bool,
    /// The probe's verdict of the credssp stage.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ntstatus: Option<String>,
}

/// Everything `rdprobe enum` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnumReport {
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub elapsed_ms: u64,
    pub connections: usize,
    /// Each protocol offered alone, in the order RDP, SSL, HYBRID, RDSTLS, HYBRID_EX, RDSAAD.
    pub protocols: Vec<Negotiation>,
    /// Every protocol offered at once.
    pub all_offered: Negotiation,
    /// What a current mstsc offers (SSL | HYBRID | HYBRID_EX).
    pub common_offer: Negotiation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdp_security: Option<RdpSecurity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsEnum>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credssp: Option<CredsspEnum>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialCheck>,
    pub notes: Vec<String>,
}

impl EnumReport {
    /// The single-protocol result for a protocol value.
    pub fn protocol(&self, value: u32) -> Option<&Negotiation> {
        self.protocols.iter().find(|p| p.offered_value == value)
    }

    pub fn accepts(&self, value: u32) -> bool {
        self.protocol(value).is_some_and(|p| p.accepted)
    }
}

/// The protocols asked one by one (MS-RDPBCGR 2.2.1.1.1); PROTOCOL_RDP is 0.
pub const PROTOCOLS: [u32; 6] = [
    0,
    dx::PROTOCOL_SSL,
    dx::PROTOCOL_HYBRID,
    dx::PROTOCOL_RDSTLS,
    dx::PROTOCOL_HYBRID_EX,
    dx::PROTOCOL_RDSAAD,
];

/// Shared state of one enumeration: the address, the connection budget, a counter.
struct Ctx {
    addr: SocketAddr,
    timeout: Duration,
    sem: Semaphore,
    conns: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    async fn connect(&self) -> Result<TcpStream, String> {
        self.conns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, TcpStream::connect(self.addr)).await {
            Err(_) => Err(format!(
                "tcp connect timed out after {} ms",
                self.timeout.as_millis()
            )),
            Ok(Err(e)) => Err(format!("tcp connect: {e}")),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
        }
    }
}

/// An X.224 Connection Request with RDP_NEG_REQ offering `protocols` (MS-RDPBCGR 2.2.1.1).
pub fn connection_request(protocols: u32) -> Vec<u8> {
    let cookie = b"Cookie: mstshash=rdprobe\r\n";
    let len = 4 + 7 + cookie.len() + 8;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[3, 0]);
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.push((len - 5) as u8); // LI
    v.extend_from_slice(&[0xe0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(cookie);
    v.extend_from_slice(&[1, 0, 8, 0]);
    v.extend_from_slice(&protocols.to_le_bytes());
    v
}

/// Reads one TPKT PDU with a deadline (at most 64 KiB, the TPKT limit).
async fn read_tpkt(s: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, String> {
    let fut = async {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await?;
        if h[0] != 3 {
            return Err(std::io::Error::other(format!(
                "not a TPKT header (first byte 0x{:02x})",
                h[0]
            )));
        }
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 7 {
            return Err(std::io::Error::other(format!("TPKT length {len}")));
        }
        let mut v = vec![0u8; len];
        v[..4].copy_from_slice(&h);
        s.read_exact(&mut v[4..]).await?;
        Ok(v)
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(format!(
            "timed out after {} ms waiting for the server",
            timeout.as_millis()
        )),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err("the server closed the connection".into())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(v)) => Ok(v),
    }
}

async fn close(mut s: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_millis(200), s.shutdown()).await;
}

/// Negotiates once; on success the stream is returned for the next question on it.
async fn negotiate(ctx: &Ctx, offered: u32) -> (Negotiation, Option<TcpStream>) {
    let mut n = Negotiation {
        offered: dx::protocol_names(offered),
        offered_value: offered,
        response: "error".into(),
        accepted: false,
        selected: None,
        selected_value: None,
        flags: Vec::new(),
        failure_code: None,
        failure_name: None,
        error: None,
    };
    let mut s = match ctx.connect().await {
        Ok(s) => s,
        Err(e) => {
            n.error = Some(e);
            return (n, None);
        }
    };
    let req = connection_request(offered);
    if let Err(e) = tokio::time::timeout(ctx.timeout, s.write_all(&req)).await {
        n.error = Some(format!("write timed out: {e}"));
        return (n, None);
    }
    match read_tpkt(&mut s, ctx.timeout).await {
        Err(e) => {
            n.error = Some(e);
            close(s).await;
            (n, None)
        }
        Ok(pdu) => match dx::decode_tpkt(&pdu) {
            X224::ConnectionConfirm {
                selected,
                flags,
                facts,
            } => {
                let neg_rsp = facts.get("neg_rsp") == Some(&serde_json::json!(true));
                n.response = if neg_rsp {
                    "negotiation response".into()
                } else {
                    "no negotiation data".into()
                };
                n.selected = dx::protocol_names(selected).first().cloned();
                n.selected_value = Some(selected);
                n.flags = dx::response_flag_names(flags);
                n.accepted = selected == offered;
                (n, Some(s))
            }
            X224::NegotiationFailure { code } => {
                n.response = "negotiation failure".into();
                n.failure_code = Some(code);
                n.failure_name = Some(dx::failure_code_name(code).to_owned());
                close(s).await;
                (n, None)
            }
            X224::Data { user_data_offset } => {
                // xrdp answers requests it cannot serve with an MCS Disconnect Provider Ultimatum.
                match pdu
                    .get(user_data_offset..)
                    .and_then(crate::decode::mcs::classify_domain_pdu)
                {
                    Some((name, facts)) => {
                        n.response = name.to_owned();
                        if let Some(reason) = facts.get("reason").and_then(|v| v.as_str()) {
                            n.failure_name = Some(reason.to_owned());
                        }
                    }
                    None => {
                        n.error = Some("an x.224 data pdu instead of a connection confirm".into())
                    }
                }
                close(s).await;
                (n, None)
            }
            X224::Malformed { what, offset } => {
                n.error = Some(format!(
                    "malformed connection confirm at byte {offset}: {what}"
                ));
                close(s).await;
                (n, None)
            }
            other => {
                n.error = Some(format!("unexpected answer: {other:?}"));
                close(s).await;
                (n, None)
            }
        },
    }
}

/// One Connect Initial per encryption method on a PROTOCOL_RDP connection.
async fn query_method(ctx: &Ctx, method: Method) -> (MethodResult, Option<gcc::ServerData>) {
    let _permit = ctx.sem.acquire().await;
    let mut r = MethodResult {
        method,
        accepted: false,
        selected: None,
        level: None,
        error: None,
    };
    let (neg, stream) = negotiate(ctx, 0).await;
    let Some(mut s) = stream else {
        r.error = Some(neg.error.unwrap_or_else(|| neg.response.clone()));
        return (r, None);
    };
    if neg.selected_value != Some(0) {
        r.error = Some(format!(
            "the server selected {} when offered PROTOCOL_RDP",
            neg.selected.unwrap_or_default()
        ));
        close(s).await;
        return (r, None);
    }
    let ci = match gcc::connect_initial(&gcc::InitialOptions::new(method.bit())) {
        Ok(ci) => ci,
        Err(e) => {
            r.error = Some(e);
            return (r, None);
        }
    };
    if tokio::time::timeout(ctx.timeout, s.write_all(&ci))
        .await
        .map_or(true, |w| w.is_err())
    {
        r.error = Some("write of the connect initial failed".into());
        return (r, None);
    }
    let res = read_tpkt(&mut s, ctx.timeout).await;
    close(s).await;
    match res.and_then(|p| gcc::parse_connect_response(&p)) {
        Err(e) => {
            r.error = Some(e);
            (r, None)
        }
        Ok(sd) => {
            r.accepted = sd.encryption_method == method.bit();
            r.selected =
                Some(crate::decode::mcs::encryption_method_names(sd.encryption_method).join(","));
            r.level = Some(crate::decode::mcs::encryption_level_name(
                sd.encryption_level,
            ));
            (r, Some(sd))
        }
    }
}

async fn rdp_security(ctx: &Ctx) -> RdpSecurity {
    let results = futures_join_all(Method::ALL.iter().map(|&m| query_method(ctx, m))).await;
    let mut sec = RdpSecurity::default();
    for (r, sd) in results {
        if let Some(sd) = sd {
            if sec.level.is_none() || r.accepted {
                sec.level = Some(crate::decode::mcs::encryption_level_name(
                    sd.encryption_level,
                ));
                sec.server_rdp_version = sd.rdp_version.map(crate::decode::mcs::rdp_version_name);
                sec.server_random_len = if sd.server_random.is_some() { 32 } else { 0 };
                if !sd.server_certificate.is_empty() {
                    let facts =
                        crate::decode::mcs::server_certificate_facts(&sd.server_certificate);
                    sec.certificate_type = facts
                        .get("server_certificate_type")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                    sec.certificate_temporary = facts
                        .get("server_certificate_temporary")
                        .and_then(|v| v.as_bool());
                    match cert::server_public_key(&sd.server_certificate) {
                        Ok(k) => {
                            sec.key_bits = Some(k.bits);
                            sec.key_exponent = Some(k.exponent);
                            sec.key_error = None;
                        }
                        Err(e) => sec.key_error = Some(e.to_string()),
                    }
                }
            }
        }
        sec.methods.push(r);
    }
    sec
}

/// Runs futures concurrently and returns their outputs in order (a tiny `join_all`).
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs = Vec::with_capacity(handles.len());
    // Poll all of them together: tokio::join! needs a fixed count, so drive them with a select
    // loop over an index set.
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for r in results {
        // INVARIANT: the poll loop only returns when every slot has produced its output.
        outs.push(r.expect("every future completed"));
    }
    outs
}

/// TLS version names and OpenSSL versions, oldest first.
const TLS_VERSIONS: [(&str, openssl::ssl::SslVersion); 4] = [
    ("TLSv1.0", openssl::ssl::SslVersion::TLS1),
    ("TLSv1.1", openssl::ssl::SslVersion::TLS1_1),
    ("TLSv1.2", openssl::ssl::SslVersion::TLS1_2),
    ("TLSv1.3", openssl::ssl::SslVersion::TLS1_3),
];

/// The TLS 1.3 suites OpenSSL implements (RFC 8446 B.4).
const TLS13_SUITES: [&str; 5] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
];

/// What one handshake gave.
struct Handshake {
    /// OpenSSL name and IANA name of the suite chosen.
    suite: Option<(String, String)>,
    chain: Vec<Vec<u8>>,
    error: Option<String>,
}

/// OpenSSL client for exactly one version offering `ciphers` (≤1.2: a cipher string; 1.3: suites).
fn ssl_for(
    version: openssl::ssl::SslVersion,
    ciphers: &str,
) -> Result<openssl::ssl::Ssl, openssl::error::ErrorStack> {
    use openssl::ssl::{SslContext, SslMethod, SslVerifyMode, SslVersion};
    let mut b = SslContext::builder(SslMethod::tls_client())?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_min_proto_version(Some(version))?;
    b.set_max_proto_version(Some(version))?;
    if version == SslVersion::TLS1_3 {
        b.set_ciphersuites(ciphers)?;
        b.set_cipher_list("ALL:@SECLEVEL=0")?;
    } else {
        b.set_cipher_list(ciphers)?;
    }
    b.set_options(openssl::ssl::SslOptions::NO_TICKET);
    openssl::ssl::Ssl::new(&b.build())
}

async fn handshake(
    ctx: &Ctx,
    via: u32,
    version: openssl::ssl::SslVersion,
    ciphers: &str,
) -> Handshake {
    let _permit = ctx.sem.acquire().await;
    let mut h = Handshake {
        suite: None,
        chain: Vec::new(),
        error: None,
    };
    let t0 = Instant::now();
    let (neg, stream) = negotiate(ctx, via).await;
    tracing::debug!(
        ms = t0.elapsed().as_millis() as u64,
        ciphers,
        "tls: x224 done"
    );
    let Some(s) = stream else {
        h.error = Some(neg.error.unwrap_or(neg.response));
        return h;
    };
    if neg.selected_value != Some(via) {
        h.error = Some(format!(
            "the server selected {} instead of {}",
            neg.selected.unwrap_or_default(),
            dx::protocol_names(via).join(",")
        ));
        close(s).await;
        return h;
    }
    let ssl = match ssl_for(version, ciphers) {
        Ok(s) => s,
        Err(e) => {
            h.error = Some(format!("openssl: {e}"));
            return h;
        }
    };
    let mut tls = match tokio_openssl::SslStream::new(ssl, s) {
        Ok(t) => t,
        Err(e) => {
            h.error = Some(format!("openssl: {e}"));
            return h;
        }
    };
    match tokio::time::timeout(ctx.timeout, std::pin::Pin::new(&mut tls).connect()).await {
        Err(_) => {
            h.error = Some(format!(
                "handshake timed out after {} ms",
                ctx.timeout.as_millis()
            ))
        }
        Ok(Err(e)) => h.error = Some(tls_error_text(&e)),
        Ok(Ok(())) => {
            let ssl = tls.ssl();
            h.suite = ssl.current_cipher().map(|c| {
                (
                    c.name().to_owned(),
                    c.standard_name().unwrap_or(c.name()).to_owned(),
                )
            });
            h.chain = ssl
                .peer_cert_chain()
                .map(|c| c.iter().filter_map(|x| x.to_der().ok()).collect())
                .unwrap_or_default();
            if h.chain.is_empty() {
                if let Some(c) = ssl.peer_certificate().and_then(|c| c.to_der().ok()) {
                    h.chain.push(c);
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), tls.shutdown()).await;
        }
    }
    tracing::debug!(
        ms = t0.elapsed().as_millis() as u64,
        ciphers,
        ok = h.suite.is_some(),
        "tls: handshake done"
    );
    h
}

/// A short text of an OpenSSL handshake error: the alert when there was one.
fn tls_error_text(e: &openssl::ssl::Error) -> String {
    let s = e.to_string();
    if let Some(stack) = e.ssl_error() {
        if let Some(first) = stack.errors().first() {
            if let Some(r) = first.reason() {
                return r.to_owned();
            }
        }
    }
    if e.io_error().is_some() || s.contains("unexpected EOF") {
        return "the server closed the connection".into();
    }
    s
}

/// Cipher groups enumerated in parallel below TLS 1.3 (OpenSSL cipher strings): each group runs
/// its own "offer all not yet accepted" loop. Few groups keep the connection count low (servers
/// such as xrdp accept only a couple of connections at a time); more than one keeps the longest
/// loop short.
const CIPHER_GROUPS: [&str; 3] = ["kECDHE", "kDHE", "ALL:COMPLEMENTOFALL:!kECDHE:!kDHE"];

/// The "offer every suite of `group` not yet accepted" loop of one group, up to `limit` suites.
async fn cipher_group(
    ctx: &Ctx,
    via: u32,
    version: openssl::ssl::SslVersion,
    group: &str,
    preferred: &str,
    limit: usize,
) -> (Vec<String>, usize, bool) {
    let mut excluded: Vec<String> = vec![preferred.to_owned()];
    let mut found = Vec::new();
    let mut attempts = 0;
    loop {
        let mut s = group.to_owned();
        for e in &excluded {
            s.push_str(":!");
            s.push_str(e);
        }
        s.push_str(":@SECLEVEL=0");
        attempts += 1;
        let h = handshake(ctx, via, version, &s).await;
        let Some((ossl, iana)) = h.suite else {
            return (found, attempts, false);
        };
        if excluded.contains(&ossl) || found.contains(&iana) {
            // The server chose a suite we did not offer: stop rather than loop.
            return (found, attempts, false);
        }
        excluded.push(ossl);
        found.push(iana);
        if found.len() >= limit {
            return (found, attempts, true);
        }
    }
}

async fn tls_version(
    ctx: &Ctx,
    via: u32,
    name: &str,
    version: openssl::ssl::SslVersion,
    limit: usize,
    skip_ciphers: bool,
) -> (TlsVersionResult, Vec<Vec<u8>>) {
    let tls13 = version == openssl::ssl::SslVersion::TLS1_3;
    let mut r = TlsVersionResult {
        version: name.to_owned(),
        accepted: false,
        cipher_suites: Vec::new(),
        attempts: 1,
        truncated: false,
        error: None,
    };
    // First: everything at once, which tells whether the version is accepted at all and gives
    // the server's preferred suite and the certificate chain.
    let all = if tls13 {
        TLS13_SUITES.join(":")
    } else {
        "ALL:COMPLEMENTOFALL:@SECLEVEL=0".to_owned()
    };
    let first = handshake(ctx, via, version, &all).await;
    let Some((preferred_ossl, preferred)) = first.suite else {
        r.error = first.error;
        return (r, Vec::new());
    };
    r.accepted = true;
    r.cipher_suites.push(preferred.clone());
    if skip_ciphers {
        return (r, first.chain);
    }
    if tls13 {
        let singles = futures_join_all(
            TLS13_SUITES
                .iter()
                .filter(|s| **s != preferred)
                .map(|s| handshake(ctx, via, version, s)),
        )
        .await;
        r.attempts += singles.len();
        for h in singles {
            if let Some((_, iana)) = h.suite {
                if !r.cipher_suites.contains(&iana) {
                    r.cipher_suites.push(iana);
                }
            }
        }
    } else {
        let groups = futures_join_all(
            CIPHER_GROUPS
                .iter()
                .map(|g| cipher_group(ctx, via, version, g, &preferred_ossl, limit)),
        )
        .await;
        for (found, attempts, truncated) in groups {
            r.attempts += attempts;
            r.truncated |= truncated;
            for f in found {
                if !r.cipher_suites.contains(&f) {
                    r.cipher_suites.push(f);
                }
            }
        }
        if r.cipher_suites.len() > limit {
            r.cipher_suites.truncate(limit);
            r.truncated = true;
        }
    }
    (r, first.chain)
}

fn audit(der: &[u8], chain_len: usize, host: &str) -> Option<CertAudit> {
    let now = crate::trace::now_us() as i64 / 1_000_000;
    let f = crate::decode::tls::cert_facts(der, now).ok()?;
    let name_matches = crate::decode::tls::check_name(der, host);
    let weak_key = match f.key_type.as_str() {
        "RSA" | "DSA" => f.key_bits < 2048,
        t if t.starts_with("EC") => f.key_bits != 0 && f.key_bits < 256,
        _ => false,
    };
    let sig = f.signature_algorithm.to_ascii_lowercase();
    let weak_signature = sig.contains("md5") || sig.contains("md2") || sig.contains("sha1");
    let mut findings = Vec::new();
    if f.expired {
        findings.push(format!(
            "expired {} days ago ({})",
            -f.days_left, f.not_after
        ));
    } else if f.days_left < 30 {
        findings.push(format!("expires in {} days ({})", f.days_left, f.not_after));
    }
    if f.not_yet_valid {
        findings.push(format!("not valid before {}", f.not_before));
    }
    if f.self_signed {
        findings.push("self-signed".into());
    }
    if !name_matches {
        findings.push(format!("name mismatch: not valid for {host}"));
    }
    if weak_key {
        findings.push(format!("weak key: {} {} bits", f.key_type, f.key_bits));
    }
    if weak_signature {
        findings.push(format!(
            "weak signature algorithm: {}",
            f.signature_algorithm
        ));
    }
    Some(CertAudit {
        subject: f.subject,
        issuer: f.issuer,
        not_before: f.not_before,
        not_after: f.not_after,
        days_left: f.days_left,
        expired: f.expired,
        not_yet_valid: f.not_yet_valid,
        self_signed: f.self_signed,
        host: host.to_owned(),
        name_matches,
        key: f.key_type,
        key_bits: f.key_bits,
        weak_key,
        signature_algorithm: f.signature_algorithm,
        weak_signature,
        sha256: f.sha256,
        chain_len,
        findings,
    })
}

async fn tls(ctx: &Ctx, via: u32, host: &str, limit: usize, skip_ciphers: bool) -> TlsEnum {
    let runs = futures_join_all(
        TLS_VERSIONS
            .iter()
            .map(|(n, v)| tls_version(ctx, via, n, *v, limit, skip_ciphers)),
    )
    .await;
    let mut certificate = None;
    let mut versions = Vec::new();
    // Prefer the newest version's chain (what a modern client sees).
    for (r, chain) in runs.into_iter().rev() {
        if certificate.is_none() {
            if let Some(leaf) = chain.first() {
                certificate = audit(leaf, chain.len(), host);
            }
        }
        versions.push(r);
    }
    versions.reverse();
    TlsEnum {
        via: dx::protocol_names(via).join(","),
        versions,
        offered:
            "TLS 1.0-1.2: OpenSSL ALL:COMPLEMENTOFALL at @SECLEVEL=0 in 9 key exchange groups, \
                  less the suites already accepted; TLS 1.3: the five RFC 8446 suites one by one"
                .into(),
        certificate,
    }
}

fn probe_options(o: &EnumOptions, via: Protocol) -> ProbeOptions {
    let mut p = ProbeOptions::new(o.host.clone(), o.port);
    p.protocols = vec![via];
    p.stop_after = Some(Stage::Credssp);
    p.stage_timeout = o.timeout;
    p.deadline = o.timeout * 4;
    p
}

async fn credssp(ctx: &Ctx, o: &EnumOptions, via: Protocol, via_name: &str) -> CredsspEnum {
    let _permit = ctx.sem.acquire().await;
    ctx.conns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let res = crate::probe::probe(&probe_options(o, via)).await;
    let r = &res.report;
    let s = |k: &str| {
        r.fact(Stage::Credssp, k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let mut c = CredsspEnum {
        via: via_name.to_owned(),
        version: r.fact(Stage::Credssp, "version").and_then(|v| v.as_u64()),
        nb_computer_name: s("ntlm_nb_computer_name"),
        nb_domain_name: s("ntlm_nb_domain_name"),
        dns_computer_name: s("ntlm_dns_computer_name"),
        dns_domain_name: s("ntlm_dns_domain_name"),
        dns_tree_name: s("ntlm_dns_tree_name"),
        os_version: s("ntlm_os_version"),
        server_time: s("ntlm_server_time"),
        error: None,
    };
    if c.nb_computer_name.is_none() && c.dns_computer_name.is_none() {
        c.error = Some(format!("{}: {}", r.last_stage, r.verdict));
    }
    c
}

async fn check_credentials(
    ctx: &Ctx,
    o: &EnumOptions,
    via: Protocol,
    creds: &Credentials,
) -> CredentialCheck {
    let _permit = ctx.sem.acquire().await;
    ctx.conns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut p = probe_options(o, via);
    p.credentials = Some(creds.clone());
    p.cookie = Some(creds.user.clone());
    let r = crate::probe::probe(&p).await.report;
    let credssp_ok = r.stage(Stage::Credssp).is_some_and(|s| s.verdict.is_ok());
    let accepted = credssp_ok
        && matches!(
            &r.verdict,
            Verdict::Failed {
                kind: FailureKind::Stopped,
                ..
            } | Verdict::Ok
        );
    let ntstatus = match r.verdict.failure() {
        Some(FailureKind::AuthFailure { ntstatus, name, .. }) => match (ntstatus, name) {
            (Some(c), Some(n)) => Some(format!("{n} (0x{c:08X})")),
            (Some(c), None) => Some(format!("0x{c:08X}")),
            _ => None,
        },
        _ => None,
    };
    CredentialCheck {
        user: creds.user.clone(),
        accepted,
        verdict: format!("{}: {}", r.last_stage, r.verdict),
        ntstatus,
    }
}

async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port));
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!("name resolution of {host} timed out")),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Ok(Ok(mut it)) => it.next().ok_or_else(|| format!("{host} has no address")),
    }
}

/// Runs the enumeration. Never panics on server behaviour; every wait is bounded by `timeout`.
pub async fn enumerate(o: &EnumOptions) -> EnumReport {
    let start = Instant::now();
    let target = format!("{}:{}", o.host, o.port);
    let all_value = PROTOCOLS.iter().fold(0, |a, b| a | b);
    let addr = match resolve(&o.host, o.port, o.timeout).await {
        Ok(a) => a,
        Err(e) => {
            let mut n = Negotiation {
                offered: dx::protocol_names(all_value),
                offered_value: all_value,
                response: "error".into(),
                accepted: false,
                selected: None,
                selected_value: None,
                flags: Vec::new(),
                failure_code: None,
                failure_name: None,
                error: None,
            };
            n.error = Some(e.clone());
            return EnumReport {
                target,
                address: None,
                elapsed_ms: start.elapsed().as_millis() as u64,
                connections: 0,
                protocols: Vec::new(),
                common_offer: n.clone(),
                all_offered: n,
                rdp_security: None,
                tls: None,
                credssp: None,
                credentials: None,
                notes: vec![e],
            };
        }
    };
    let ctx = Arc::new(Ctx {
        addr,
        timeout: o.timeout,
        sem: Semaphore::new(o.concurrency.max(1)),
        conns: std::sync::atomic::AtomicUsize::new(0),
    });
    // 1. protocols, each alone and all at once
    let neg = |v: u32| {
        let ctx = ctx.clone();
        async move {
            let _permit = ctx.sem.acquire().await;
            let (n, s) = negotiate(&ctx, v).await;
            if let Some(s) = s {
                close(s).await;
            }
            n
        }
    };
    let common_value = dx::PROTOCOL_SSL | dx::PROTOCOL_HYBRID | dx::PROTOCOL_HYBRID_EX;
    let mut asked: Vec<u32> = PROTOCOLS.to_vec();
    asked.push(all_value);
    asked.push(common_value);
    let mut results = futures_join_all(asked.into_iter().map(neg)).await;
    // INVARIANT: `asked` ends with all_value then common_value.
    let common_offer = results.pop().expect("common offer was asked");
    let all_offered = results.pop().expect("all_offered was asked");
    let protocols = results;
    let mut notes = Vec::new();
    let report_so_far = EnumReport {
        target: target.clone(),
        address: Some(addr.to_string()),
        elapsed_ms: 0,
        connections: 0,
        protocols,
        all_offered,
        common_offer,
        rdp_security: None,
        tls: None,
        credssp: None,
        credentials: None,
        notes: Vec::new(),
    };
    let rdp = report_so_far.accepts(0);
    let tls_via = [
        dx::PROTOCOL_SSL,
        dx::PROTOCOL_HYBRID,
        dx::PROTOCOL_HYBRID_EX,
    ]
    .into_iter()
    .find(|&p| report_so_far.accepts(p));
    let nla_via = [
        (dx::PROTOCOL_HYBRID, Protocol::Hybrid),
        (dx::PROTOCOL_HYBRID_EX, Protocol::HybridEx),
    ]
    .into_iter()
    .find(|(p, _)| report_so_far.accepts(*p));

    tracing::debug!(
        ms = start.elapsed().as_millis() as u64,
        "enum: protocols done"
    );
    // 2. the rest, in parallel
    let rdp_fut = async {
        if rdp {
            let r = Some(rdp_security(&ctx).await);
            tracing::debug!(
                ms = start.elapsed().as_millis() as u64,
                "enum: rdp security done"
            );
            r
        } else {
            None
        }
    };
    let tls_fut = async {
        match tls_via {
            Some(v) => Some(tls(&ctx, v, &o.host, o.cipher_limit, o.skip_ciphers).await),
            None => None,
        }
    };
    let credssp_fut = async {
        match nla_via {
            Some((v, p)) => Some(credssp(&ctx, o, p, &dx::protocol_names(v).join(",")).await),
            None => None,
        }
    };
    let creds_fut = async {
        match (&o.credentials, nla_via) {
            (Some(c), Some((_, p))) => Some(check_credentials(&ctx, o, p, c).await),
            _ => None,
        }
    };
    let (rdp_security, tls, credssp, credentials) =
        tokio::join!(rdp_fut, tls_fut, credssp_fut, creds_fut);
    if o.credentials.is_some() && nla_via.is_none() {
        notes.push(
            "credentials not checked: the server accepts no CredSSP protocol (HYBRID / HYBRID_EX)"
                .into(),
        );
    }
    if tls_via.is_none() {
        notes.push("TLS not enumerated: the server accepts no TLS-based protocol".into());
    }
    EnumReport {
        elapsed_ms: start.elapsed().as_millis() as u64,
        connections: ctx.conns.load(std::sync::atomic::Ordering::Relaxed),
        rdp_security,
        tls,
        credssp,
        credentials,
        notes,
        ..report_so_far
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_request_decodes_with_the_offered_protocols() {
        for p in PROTOCOLS.iter().copied().chain([0x1f]) {
            let cr = connection_request(p);
            match dx::decode_tpkt(&cr) {
                X224::ConnectionRequest(f) => {
                    assert_eq!(
                        f.get("requested_protocols_value"),
                        Some(&serde_json::json!(p))
                    );
                    assert_eq!(f.get("cookie"), Some(&serde_json::json!("rdprobe")));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn closed_port_is_an_error_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut o = EnumOptions::new("127.0.0.1", port);
        o.timeout = Duration::from_millis(500);
        let r = enumerate(&o).await;
        assert_eq!(r.protocols.len(), 6);
        assert!(r.protocols.iter().all(|p| !p.accepted && p.error.is_some()));
        assert!(r.rdp_security.is_none() && r.tls.is_none() && r.credssp.is_none());
    }
}
