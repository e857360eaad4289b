//! `rdprobe enum HOST[:PORT]`: what a server offers, one short connection per question, in
//! parallel where the server allows, every wait with a deadline.
//!
//! Connections are the cost that counts (freerdp-shadow spends ~40 ms of CPU on each one it
//! accepts), so a connection left by a protocol question carries the next question: a TLS
//! handshake where the server selected a TLS-based protocol (and the CredSSP question on it where
//! it selected HYBRID), an encryption-method query where it selected PROTOCOL_RDP (`pool`).
//!
//! * security protocols (MS-RDPBCGR 2.2.1.1.1): each of RDP, SSL, HYBRID, RDSTLS, HYBRID_EX and
//!   RDSAAD offered alone, and all offered together: accepted, selected, RDP_NEG_FAILURE code,
//!   negotiation flags;
//! * standard RDP security: one MCS Connect Initial per encryption method (40/56/128-bit, FIPS,
//!   MS-RDPBCGR 2.2.1.3.3) and what the server security data says (2.2.1.4.3): method chosen,
//!   level, server random, proprietary or X.509 certificate and its RSA key;
//! * TLS 1.0-1.3 (OpenSSL with `@SECLEVEL=0`, so versions rustls does not speak are asked too)
//!   and the cipher suites each version accepts in the server's order of preference (or the
//!   statement that it follows the client's), found by offering every suite not yet accepted
//!   until the server refuses (bounded); a certificate audit (`tls`);
//! * CredSSP (MS-CSSP) version and the NTLM target info (MS-NLMP 2.2.2.1) without credentials
//!   (a NEGOTIATE sent, the CHALLENGE read, `ntlm`), and with credentials whether they are
//!   accepted (the probe, stopped after CredSSP).
//!
//! The protocol decoding is `decode`'s; this module only asks the questions.

pub mod ntlm;
mod pool;
pub mod render;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
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
    /// Connections being opened at the same time (TCP connect + X.224 exchange; xrdp's listen
    /// backlog drops SYNs beyond ~4). Also how many connections the cipher-suite elimination
    /// opens ahead.
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
    /// Accepted cipher suites (IANA names). With `preference` "server": the server's full order
    /// of preference, first choice first. With "client": the server picks the client's first
    /// suite it supports, and the list is by key exchange (ECDHE, DHE, other), each group in
    /// OpenSSL's order (TLS 1.3: RFC 8446's order). With "unknown" (one suite, or
    /// `--no-ciphers`: the first choice only): the order in which they were found.
    pub cipher_suites: Vec<String>,
    /// Whose order decides the suite: "server", "client" or "unknown".
    pub preference: tls::Preference,
    /// Handshakes that negotiated or asked for this version: the one that chose it, the order
    /// check (everything, the first pick moved last), then one per further suite and the
    /// refusal that ends the list (one refusal per key exchange group when the groups were
    /// eliminated in parallel: a server that follows the client's order and answers X.224
    /// within [`FAST_X224`]). No refusal when a server that follows the client's order picked
    /// the suite offered last ([`tls::likely_last`]): everything else had been refused.
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
    /// The protocol the server selected in the X.224 exchange before each handshake.
    pub via: String,
    pub versions: Vec<TlsVersionResult>,
    /// What the handshakes offered: up to TLS 1.2 every suite of OpenSSL's
    /// `ALL:COMPLEMENTOFALL:@SECLEVEL=0` less the suites already accepted; for TLS 1.3 the five
    /// RFC 8446 suites less those accepted.
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
    /// How many X.224 answers came within [`FAST_X224`].
    x224_fast: std::sync::atomic::AtomicUsize,
}

/// An X.224 answer within this time says the server accepts connections cheaply (xrdp answers in
/// ~1 ms); a slower one (freerdp-shadow: ~50 ms, after ~40 ms of CPU spent on each connection)
/// says connections are the cost, and the cipher-suite elimination then uses as few as it can.
pub const FAST_X224: Duration = Duration::from_millis(20);

impl Ctx {
    /// Some X.224 answer came within [`FAST_X224`] (the fastest, not the typical one: on a loaded
    /// machine a cheap server's answers spread out, an expensive one's never get fast).
    fn connections_are_cheap(&self) -> bool {
        self.x224_fast.load(std::sync::atomic::Ordering::Relaxed) > 0
    }
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
    use crate::wire::x224 as wx;
    wx::Tpdu::ConnectionRequest(wx::ConnectionRequest {
        token: Some(wx::RequestToken::Cookie(b"rdprobe")),
        neg: Some(wx::NegReq {
            flags: ironrdp_pdu::nego::RequestFlags::empty(),
            protocols: ironrdp_pdu::nego::SecurityProtocol::from_bits_retain(protocols),
        }),
        correlation_info: &[],
    })
    .emit()
    .unwrap_or_default()
}

/// Reads one TPKT PDU with a deadline (at most 64 KiB, the TPKT limit), and no byte past it: the
/// connection may go on to a TLS handshake.
async fn read_tpkt(s: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, String> {
    use crate::net::framed::{Framing, Reader};
    let frame = |b: &[u8]| {
        let Some(len) = crate::wire::cursor::be16(b, 2) else {
            return Ok(Framing::Need(4 - b.len()));
        };
        if b[0] != 3 {
            return Err(format!("not a TPKT header (first byte 0x{:02x})", b[0]));
        }
        if len < 7 {
            return Err(format!("TPKT length {len}"));
        }
        Ok(Framing::Pdu(usize::from(len)))
    };
    let reader = Reader {
        max_len: 0xffff,
        exact: true,
    };
    let r = reader
        .read_within(s, &mut bytes::BytesMut::new(), timeout, frame)
        .await;
    r.map(|v| v.to_vec())
        .map_err(|e| read_error_text(e, timeout, "the server", ""))
}

/// What a failed framed read of the server's answer says: the wait for `awaited` that timed out,
/// a close, the read error (after `io_prefix`) or the framing's own words.
pub(super) fn read_error_text(
    e: crate::net::framed::ReadError,
    timeout: Duration,
    awaited: &str,
    io_prefix: &str,
) -> String {
    use crate::net::framed::ReadError;
    match e {
        ReadError::Timeout => format!(
            "timed out after {} ms waiting for {awaited}",
            timeout.as_millis()
        ),
        ReadError::Closed => "the server closed the connection".into(),
        ReadError::Io(e) => format!("{io_prefix}{e}"),
        ReadError::Framing(what) => what,
        e => e.to_string(),
    }
}

async fn close(mut s: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_millis(200), s.shutdown()).await;
}

/// Negotiates once; on success the stream is returned for the next question on it.
/// Holds one of `ctx.sem`'s permits for the TCP connect and the X.224 exchange only.
async fn negotiate(ctx: &Ctx, offered: u32) -> (Negotiation, Option<TcpStream>) {
    let t0 = Instant::now();
    let _permit = ctx.sem.acquire().await;
    let r = negotiate_unbounded(ctx, offered).await;
    tracing::debug!(
        ms = t0.elapsed().as_millis() as u64,
        offered,
        selected = r.0.selected_value,
        "enum: x224"
    );
    r
}

impl Negotiation {
    /// The offer of `offered` before (or without) an answer: response "error", nothing selected.
    fn unanswered(offered: u32) -> Negotiation {
        Negotiation {
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
        }
    }
}

async fn negotiate_unbounded(ctx: &Ctx, offered: u32) -> (Negotiation, Option<TcpStream>) {
    let mut n = Negotiation::unanswered(offered);
    let mut s = match ctx.connect().await {
        Ok(s) => s,
        Err(e) => {
            n.error = Some(e);
            return (n, None);
        }
    };
    let req = connection_request(offered);
    match tokio::time::timeout(ctx.timeout, s.write_all(&req)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            n.error = Some(format!("write of the connection request failed: {e}"));
            return (n, None);
        }
        Err(_) => {
            n.error = Some(format!(
                "write of the connection request timed out after {} ms: the server stopped reading",
                ctx.timeout.as_millis()
            ));
            return (n, None);
        }
    }
    let asked = Instant::now();
    let answer = read_tpkt(&mut s, ctx.timeout).await;
    if answer.is_ok() && asked.elapsed() <= FAST_X224 {
        ctx.x224_fast
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    match answer {
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

/// One Connect Initial per encryption method on a connection where the server selected
/// PROTOCOL_RDP: a spare when one is left, else a fresh one. A spare the server closed while it
/// waited is replaced by a fresh connection once.
async fn query_method(
    ctx: &Ctx,
    spares: &pool::Spares,
    method: Method,
) -> (MethodResult, Option<gcc::ServerData>) {
    let (s, waited) = match pool::spare_or_fresh(ctx, spares, 0).await {
        Ok(s) => s,
        Err(e) => return (method_error(method, e), None),
    };
    let r = query_method_on(ctx, s, method).await;
    if waited && r.1.is_none() {
        if let Ok(s) = pool::fresh(ctx, 0).await {
            return query_method_on(ctx, s, method).await;
        }
    }
    r
}

fn method_error(method: Method, e: String) -> MethodResult {
    MethodResult {
        method,
        accepted: false,
        selected: None,
        level: None,
        error: Some(e),
    }
}

async fn query_method_on(
    ctx: &Ctx,
    mut s: TcpStream,
    method: Method,
) -> (MethodResult, Option<gcc::ServerData>) {
    let mut r = method_error(method, String::new());
    r.error = None;
    let ci = match gcc::connect_initial(&gcc::InitialOptions::new(method.bit())) {
        Ok(ci) => ci,
        Err(e) => {
            r.error = Some(e);
            return (r, None);
        }
    };
    match tokio::time::timeout(ctx.timeout, s.write_all(&ci)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            r.error = Some(format!("write of the connect initial failed: {e}"));
            return (r, None);
        }
        Err(_) => {
            r.error = Some(format!(
                "write of the connect initial timed out after {} ms: the server stopped reading",
                ctx.timeout.as_millis()
            ));
            return (r, None);
        }
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

async fn rdp_security(ctx: &Ctx, spares: &pool::Spares) -> RdpSecurity {
    let results =
        futures_util::future::join_all(Method::ALL.iter().map(|&m| query_method(ctx, spares, m)))
            .await;
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

fn probe_options(o: &EnumOptions, via: Protocol) -> ProbeOptions {
    let mut p = ProbeOptions::new(o.host.clone(), o.port);
    p.protocols = vec![via];
    p.stop_after = Some(Stage::Credssp);
    p.stage_timeout = o.timeout;
    p.deadline = o.timeout * 4;
    p
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
        Some(FailureKind::AuthFailure(a)) => match (a.ntstatus, a.name()) {
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

/// Connections opened ahead for the cipher-suite elimination. A server that spends CPU on every
/// connection (slow X.224 answers) gets two: enough to keep two cores busy, and fewer unused at
/// the end; a cheap one gets `concurrency`.
fn ahead(ctx: &Ctx, o: &EnumOptions) -> usize {
    let n = o.concurrency.max(1);
    if ctx.connections_are_cheap() {
        n
    } else {
        n.min(SLOW_SERVER_AHEAD)
    }
}

/// See [`ahead`].
const SLOW_SERVER_AHEAD: usize = 2;

/// Runs the enumeration. Never panics on server behaviour; every wait is bounded by `timeout`.
pub async fn enumerate(o: &EnumOptions) -> EnumReport {
    let start = Instant::now();
    let target = format!("{}:{}", o.host, o.port);
    let all_value = PROTOCOLS.iter().fold(0, |a, b| a | b);
    let addr = match crate::net::resolve(&o.host, o.port, o.timeout).await {
        Ok(a) => a,
        Err(e) => {
            let mut n = Negotiation::unanswered(all_value);
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
        x224_fast: std::sync::atomic::AtomicUsize::new(0),
    });
    // 1. protocols, each alone and all at once; every connection on which the server selected a
    // protocol stays open for a later question.
    let spares = Arc::new(pool::Spares::default());
    let neg = |v: u32| {
        let ctx = ctx.clone();
        let spares = spares.clone();
        async move {
            let (n, s) = negotiate(&ctx, v).await;
            match (s, n.selected_value) {
                (Some(s), Some(sel)) => spares.put(sel, s),
                (Some(s), None) => close(s).await,
                _ => {}
            }
            n
        }
    };
    let common_value = dx::PROTOCOL_SSL | dx::PROTOCOL_HYBRID | dx::PROTOCOL_HYBRID_EX;
    // The TLS-based protocols go first: their answers decide which protocol the TLS questions
    // use, and the cipher-suite elimination starts opening connections while the other
    // protocol questions are still running.
    const TLS_BASED: [u32; 3] = [
        dx::PROTOCOL_SSL,
        dx::PROTOCOL_HYBRID,
        dx::PROTOCOL_HYBRID_EX,
    ];
    let others = [
        0,
        dx::PROTOCOL_RDSTLS,
        dx::PROTOCOL_RDSAAD,
        all_value,
        common_value,
    ];
    let early = async {
        let answers = futures_util::future::join_all(TLS_BASED.map(neg)).await;
        let via = answers.iter().find(|n| n.accepted).map(|n| n.offered_value);
        let pool = via.map(|v| pool::Pool::new(ctx.clone(), spares.clone(), v));
        if let (Some(p), false) = (&pool, o.skip_ciphers) {
            p.prefetch(ahead(&ctx, o));
        }
        (answers, pool)
    };
    let ((tls_based, tls_pool), rest) =
        tokio::join!(early, futures_util::future::join_all(others.map(neg)));
    // INVARIANT: `others` is RDP, RDSTLS, RDSAAD, all, common; `TLS_BASED` SSL, HYBRID,
    // HYBRID_EX; the report lists RDP, SSL, HYBRID, RDSTLS, HYBRID_EX, RDSAAD.
    let [rdp_alone, rdstls, rdsaad, all_offered, common_offer] =
        <[Negotiation; 5]>::try_from(rest).expect("five other protocol questions");
    let [ssl, hybrid, hybrid_ex] =
        <[Negotiation; 3]>::try_from(tls_based).expect("three tls-based protocol questions");
    let protocols = vec![rdp_alone, ssl, hybrid, rdstls, hybrid_ex, rdsaad];
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
    let tls_via = tls_pool.as_ref().map(|p| p.via());
    let nla_via = [
        (dx::PROTOCOL_HYBRID, Protocol::Hybrid),
        (dx::PROTOCOL_HYBRID_EX, Protocol::HybridEx),
    ]
    .into_iter()
    .find(|(p, _)| report_so_far.accepts(*p));
    let nla_name = nla_via.map(|(v, _)| dx::protocol_names(v).join(","));
    // CredSSP rides on a TLS handshake when both use the same protocol.
    let credssp_rides = nla_via.is_some() && nla_via.map(|n| n.0) == tls_via;

    tracing::debug!(
        ms = start.elapsed().as_millis() as u64,
        spares = spares.len(),
        "enum: protocols done"
    );
    // 2. the rest, in parallel
    let rdp_fut = async {
        if rdp {
            let r = Some(rdp_security(&ctx, &spares).await);
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
        let pool = tls_pool.as_ref()?;
        let out = tls::enumerate_tls(
            pool,
            &o.host,
            o.cipher_limit,
            o.skip_ciphers,
            ahead(&ctx, o),
            nla_name.as_deref().filter(|_| credssp_rides),
        )
        .await;
        tracing::debug!(ms = start.elapsed().as_millis() as u64, "enum: tls done");
        Some(out)
    };
    let credssp_fut = async {
        let (v, _) = nla_via.filter(|_| !credssp_rides)?;
        let name = dx::protocol_names(v).join(",");
        Some(match pool::spare_or_fresh(&ctx, &spares, v).await {
            Ok((s, waited)) => {
                let c = tls::credssp_alone(s, ctx.timeout, &name).await;
                if !(waited && c.error.is_some()) {
                    c
                } else if let Ok(s) = pool::fresh(&ctx, v).await {
                    // The spare waited; the server may have given up on it.
                    tls::credssp_alone(s, ctx.timeout, &name).await
                } else {
                    c
                }
            }
            Err(e) => CredsspEnum {
                via: name,
                error: Some(format!("x224: {e}")),
                ..CredsspEnum::default()
            },
        })
    };
    let creds_fut = async {
        match (&o.credentials, nla_via) {
            (Some(c), Some((_, p))) => Some(check_credentials(&ctx, o, p, c).await),
            _ => None,
        }
    };
    let (rdp_security, tls_out, credssp_alone, credentials) =
        tokio::join!(rdp_fut, tls_fut, credssp_fut, creds_fut);
    let (tls, credssp_ridden) = match tls_out {
        Some(t) => (Some(t.tls), t.credssp),
        None => (None, None),
    };
    let credssp = credssp_ridden.or(credssp_alone);
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
