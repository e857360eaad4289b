//! Scenarios: a small declarative description of an RDP server's behaviour per stage, written in TOML.
//!
//! A scenario says which identities the server knows, which security protocols it supports and selects
//! (or which RDP_NEG_FAILURE it answers, MS-RDPBCGR 2.2.1.2.2), which certificate and TLS versions it
//! presents (MS-RDPBCGR 5.4.5), how CredSSP answers (MS-CSSP 2.2.1 `errorCode`), how slow the link is,
//! and which faults to inject at named points of the connection sequence. The lab server
//! ([`crate::lab`]) plays it; the replayer writes one from a capture; the fuzzer writes one per finding.
//!
//! This module does no I/O. Parsing never panics; every error names the key or value at fault and,
//! where it can be found, the line (see [`ScenarioError`]).
//!
//! A complete, commented example is `fixtures/scenarios/example.toml`; each built-in scenario is a
//! file in `fixtures/scenarios/` (see [`builtin_names`]).
//!
//! ```toml
//! name = "wrong-password"
//! description = "NLA server that rejects every logon with STATUS_LOGON_FAILURE"
//!
//! [[identity.users]]           # default: one user "user" / "pass"
//! name = "user"
//! password = "pass"
//!
//! [security]
//! supported = ["ssl", "hybrid", "hybrid_ex"]   # rdp | ssl | hybrid | hybrid_ex
//! # select = "rdp"                              # force a selection
//! # negotiation_failure = "HYBRID_REQUIRED_BY_SERVER"   # or a number
//!
//! [tls]
//! certificate = "self-signed"  # self-signed | expired | not-yet-valid | wrong-name | weak-key | none
//! versions = ["1.2", "1.3"]    # 1.0 | 1.1 | 1.2 | 1.3
//!
//! [credssp]
//! reject = "STATUS_LOGON_FAILURE"   # NTSTATUS by name or number
//!
//! [link]
//! write_delay_ms = 0
//!
//! [[faults]]
//! at = "tls.client_hello"
//! action = "reset"
//! ```

use crate::codes::{self, Code};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Maximum length of a scenario file in bytes (a scenario is a few hundred bytes; this bounds hostile input).
pub const MAX_SCENARIO_LEN: usize = 1 << 20;

/// A server behaviour, stage by stage. See the module documentation for the TOML form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (`healthy-nla`).
    pub name: String,
    /// One sentence: what this scenario models.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub credssp: Credssp,
    #[serde(default)]
    pub link: Link,
    /// Faults, each at a named point; several may share a point and run in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// How the lab's RD Gateway behaves (`rdprobe lab --gateway-listen`); see [`Gateway`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// Mutate what the server sends at one stage (client-side robustness testing), see [`Mutate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutate: Option<Mutate>,
}

/// The server PDUs the lab can mutate (`[mutate] stage = ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MutateStage {
    /// The X.224 Connection Confirm: RDP_NEG_RSP or RDP_NEG_FAILURE (MS-RDPBCGR 2.2.1.2).
    X224,
    /// The server's TLS records (ServerHello, Certificate, ...): the certificate is garbled,
    /// truncated, duplicated, replaced, or the record and handshake framing lies.
    Tls,
    /// The server's TSRequests: the NTLM CHALLENGE (fields, AV pairs, timestamp), the pubKeyAuth
    /// answer, the Early User Authorization Result.
    Credssp,
    /// The MCS Connect Response with its GCC server data, server random and server certificate
    /// (proprietary RSA keys with odd moduli and exponents, X.509 chains).
    Mcs,
    /// The Attach User and Channel Join Confirms.
    Channels,
    /// The licensing PDU: error alerts, license requests with certificates, platform challenges.
    Licensing,
    /// The Demand Active PDU and its capability sets.
    Capabilities,
    /// Error and disconnect PDUs (Set Error Info, Disconnect Provider Ultimatum, Deactivate All)
    /// sent after licensing.
    Error,
}

impl MutateStage {
    pub const ALL: [MutateStage; 8] = [
        MutateStage::X224,
        MutateStage::Tls,
        MutateStage::Credssp,
        MutateStage::Mcs,
        MutateStage::Channels,
        MutateStage::Licensing,
        MutateStage::Capabilities,
        MutateStage::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MutateStage::X224 => "x224",
            MutateStage::Tls => "tls",
            MutateStage::Credssp => "credssp",
            MutateStage::Mcs => "mcs",
            MutateStage::Channels => "channels",
            MutateStage::Licensing => "licensing",
            MutateStage::Capabilities => "capabilities",
            MutateStage::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<MutateStage> {
        let l = s.to_ascii_lowercase();
        MutateStage::ALL.into_iter().find(|m| m.as_str() == l)
    }
}

impl fmt::Display for MutateStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Server-side mutation: at `stage` the lab sends a deterministic mutation of the PDU it would
/// send, drawn from `seed` and a case number: `case` for every connection, or without it case
/// `n - 1` for the `n`-th connection (so one lab walks through cases 0, 1, 2, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutate {
    pub stage: MutateStage,
    #[serde(default)]
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<u64>,
}

impl Mutate {
    /// The case the `n`-th (1-based) connection plays.
    pub fn case_for(&self, n: u64) -> u64 {
        self.case.unwrap_or(n.saturating_sub(1))
    }
}

/// The lab RD Gateway's behaviour, step by step (MS-TSGU over HTTPS). Its TLS certificate is the
/// scenario's `[tls]` one; the users it accepts are `[identity]`'s.
///
/// ```toml
/// [gateway]
/// schemes = ["NTLM", "Basic"]      # accepted, and offered in WWW-Authenticate
/// # status = 302                   # answer every request with this status (401, 403, 302, 500…)
/// # location = "https://login.example.com/"   # Location of a redirect
/// # offer = ["Negotiate"]          # WWW-Authenticate schemes of a forced 401
/// # websocket = false              # answer the WebSocket upgrade 200 OK without upgrading
/// # websocket_offered = false      # an older gateway: ignore Upgrade, answer with the legacy HTTP transport
/// # legacy_http = false            # no legacy HTTP transport: RDG_OUT_DATA / RDG_IN_DATA answered 501
/// # bug = "gw-long-resource-hang"  # a planted bug for the fuzzer's tests (loopback clients only)
/// # reset_after_auth = true        # reset the connection right after the NTLM AUTHENTICATE
/// # tunnel_error = "E_PROXY_INTERNALERROR"    # refuse the tunnel with this HRESULT
/// # rap_deny = ["rdp01"]           # resource names refused with E_PROXY_RAP_ACCESSDENIED ("*": all)
/// # target_unreachable = true      # refuse every channel with E_PROXY_TS_CONNECTFAILED
/// # channel_delay_ms = 0           # wait before answering the channel request (slow hop)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateway {
    pub schemes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<Vec<String>>,
    pub websocket: bool,
    /// False: the gateway predates the WebSocket transport and answers an upgrade request with the
    /// legacy HTTP transport's `200 OK` (what Windows Server 2012 R2 does).
    pub websocket_offered: bool,
    /// The legacy two-channel HTTP transport (RDG_OUT_DATA / RDG_IN_DATA) is served.
    pub legacy_http: bool,
    /// A planted lab-gateway bug the fuzzer must find (for its tests; honoured for loopback clients
    /// only, and set by no built-in scenario): `gw-long-resource-hang` (a CHANNEL_CREATE resource
    /// name longer than 200 characters makes the connection hang without reading, for 10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bug: Option<String>,
    pub reset_after_auth: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rap_deny: Vec<String>,
    pub target_unreachable: bool,
    pub tunnel_delay_ms: u64,
    pub channel_delay_ms: u64,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            schemes: vec!["NTLM".into(), "Basic".into()],
            status: None,
            location: None,
            offer: None,
            websocket: true,
            websocket_offered: true,
            legacy_http: true,
            bug: None,
            reset_after_auth: false,
            tunnel_error: None,
            rap_deny: Vec::new(),
            target_unreachable: false,
            tunnel_delay_ms: 0,
            channel_delay_ms: 0,
        }
    }
}

/// Who the server knows (MS-CSSP / MS-NLMP server side; Client Info PDU MS-RDPBCGR 2.2.1.11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Accepted users. NLA checks the NTLM response against these; an unknown user or a wrong password
    /// gets STATUS_LOGON_FAILURE.
    pub users: Vec<User>,
    /// With TLS or standard RDP security, check the Client Info PDU credentials against `users` and deny
    /// the connection (Set Error Info + close) on a mismatch. Windows shows a logon screen instead: off by default.
    pub check_client_info: bool,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            users: vec![User::default()],
            check_client_info: false,
        }
    }
}

/// One account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// The password written in the scenario (test accounts such as the lab's `user` / `pass`).
    /// Empty when `password_env` names where the password is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// The environment variable that holds the password, read when a client authenticates: a
    /// scenario made from a real account (`replay --as-server --user`) names the variable and never
    /// holds the password itself, so neither its TOML nor its JSON can carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// NetBIOS domain; `None` accepts any domain the client names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl Default for User {
    fn default() -> Self {
        User {
            name: "user".to_owned(),
            password: "pass".to_owned(),
            password_env: None,
            domain: None,
        }
    }
}

impl User {
    /// The account's password: from `password_env` when it is set (`None` when that variable is
    /// unset), else the written one.
    pub fn secret(&self) -> Option<String> {
        match &self.password_env {
            Some(var) => std::env::var(var).ok(),
            None => Some(self.password.clone()),
        }
    }
}

pub use crate::codes::Protocol;

/// RDP_NEG_FAILURE failureCode (MS-RDPBCGR 2.2.1.2.2), by name or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "CodeRepr", into = "CodeRepr")]
pub struct NegFailureCode(pub u32);

impl NegFailureCode {
    pub const SSL_REQUIRED_BY_SERVER: NegFailureCode = NegFailureCode(1);
    pub const HYBRID_REQUIRED_BY_SERVER: NegFailureCode = NegFailureCode(5);

    pub fn name(self) -> Option<&'static str> {
        codes::neg_failure_name(self.0)
    }
}

impl fmt::Display for NegFailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// An NTSTATUS, by name (`STATUS_LOGON_FAILURE`) or number (`0xC000006D`, `3221225581`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "CodeRepr", into = "CodeRepr")]
pub struct NtStatus(pub u32);

impl NtStatus {
    pub const LOGON_FAILURE: NtStatus = NtStatus(0xC000_006D);

    pub fn name(self) -> Option<&'static str> {
        codes::ntstatus_name(self.0)
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (0x{:08X})", self.0),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

/// A code written as a name or a number in TOML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum CodeRepr {
    Num(i64),
    Name(String),
}

/// A code by number or by one of `names` (upper case; `STATUS_` may be left out). An unknown name
/// is refused with the names of `listed` (the ones `explain` knows) as examples.
fn code_from_repr(
    r: CodeRepr,
    names: impl IntoIterator<Item = (u32, &'static str)>,
    listed: &'static [Code],
    what: &str,
) -> Result<u32, String> {
    match r {
        CodeRepr::Num(n) => {
            u32::try_from(n).map_err(|_| format!("{what} {n} does not fit in 32 bits"))
        }
        CodeRepr::Name(s) => {
            if let Some(n) = crate::parse::code_number(&s) {
                return Ok(n);
            }
            let up = s.trim().to_ascii_uppercase();
            names
                .into_iter()
                .find(|(_, n)| *n == up || n.strip_prefix("STATUS_") == Some(up.as_str()))
                .map(|(c, _)| c)
                .ok_or_else(|| {
                    let names: Vec<&str> = listed.iter().map(|e| e.name).collect();
                    format!(
                        "unknown {what} `{s}`, expected a number or one of {}",
                        names.join(", ")
                    )
                })
        }
    }
}

impl TryFrom<CodeRepr> for NegFailureCode {
    type Error = String;
    fn try_from(r: CodeRepr) -> Result<Self, String> {
        code_from_repr(
            r,
            codes::NEG_FAILURES.iter().map(|e| (e.code, e.name)),
            codes::NEG_FAILURES,
            "negotiation failure code",
        )
        .map(NegFailureCode)
    }
}

impl From<NegFailureCode> for CodeRepr {
    fn from(c: NegFailureCode) -> CodeRepr {
        match c.name() {
            Some(n) => CodeRepr::Name(n.to_owned()),
            None => CodeRepr::Num(i64::from(c.0)),
        }
    }
}

impl TryFrom<CodeRepr> for NtStatus {
    type Error = String;
    fn try_from(r: CodeRepr) -> Result<Self, String> {
        // Every name decode reports is read back (a scenario derived from a capture writes it).
        code_from_repr(
            r,
            codes::NTSTATUS_NAMES.iter().copied(),
            crate::diagnose::codes::NTSTATUS,
            "NTSTATUS",
        )
        .map(NtStatus)
    }
}

impl From<NtStatus> for CodeRepr {
    fn from(c: NtStatus) -> CodeRepr {
        match c.name() {
            Some(n) => CodeRepr::Name(n.to_owned()),
            None => CodeRepr::Name(format!("0x{:08X}", c.0)),
        }
    }
}

/// X.224 negotiation (MS-RDPBCGR 2.2.1.1-2.2.1.2, 3.3.5.3.1).
///
/// Selection: among the protocols the client offers and the server supports, the server picks
/// hybrid_ex, then hybrid, then ssl, then rdp. If nothing is common it answers RDP_NEG_FAILURE:
/// HYBRID_REQUIRED_BY_SERVER when it supports only CredSSP-based protocols, else SSL_REQUIRED_BY_SERVER.
/// `rdp` in `supported` means the server falls back to standard RDP security whatever the client asked
/// (as xrdp in RDP mode does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    pub supported: Vec<Protocol>,
    /// Force this selection whatever the client offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select: Option<Protocol>,
    /// Always answer RDP_NEG_FAILURE with this code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiation_failure: Option<NegFailureCode>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            supported: vec![Protocol::Ssl, Protocol::Hybrid, Protocol::HybridEx],
            select: None,
            negotiation_failure: None,
        }
    }
}

/// Outcome of X.224 negotiation, as decided by [`Security::negotiate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    Select(Protocol),
    Fail(NegFailureCode),
}

impl Security {
    /// Decides the server's answer to a client's requestedProtocols (MS-RDPBCGR 2.2.1.1.1).
    pub fn negotiate(&self, requested: u32) -> Negotiation {
        if let Some(code) = self.negotiation_failure {
            return Negotiation::Fail(code);
        }
        if let Some(p) = self.select {
            return Negotiation::Select(p);
        }
        for p in [Protocol::HybridEx, Protocol::Hybrid, Protocol::Ssl] {
            if requested & p.flag() != 0 && self.supported.contains(&p) {
                return Negotiation::Select(p);
            }
        }
        if self.supported.contains(&Protocol::Rdp) {
            return Negotiation::Select(Protocol::Rdp);
        }
        if self.supported.contains(&Protocol::Ssl) {
            Negotiation::Fail(NegFailureCode::SSL_REQUIRED_BY_SERVER)
        } else {
            Negotiation::Fail(NegFailureCode::HYBRID_REQUIRED_BY_SERVER)
        }
    }
}

/// Which certificate the server presents (MS-RDPBCGR 5.4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CertificateKind {
    /// RSA 2048, valid now, names localhost / 127.0.0.1 / ::1 plus `tls.subject`.
    SelfSigned,
    /// Valid from 2020-01-01 to 2021-01-01.
    Expired,
    /// Valid from ten years from now.
    NotYetValid,
    /// Names only `wrong-host.invalid`.
    WrongName,
    /// RSA 1024 (served through OpenSSL at security level 0: rustls/ring refuse keys under 2048 bits).
    WeakKey,
    /// The server cannot produce a certificate: it answers the ClientHello with a fatal
    /// handshake_failure alert, as Windows does when MachineKeys permissions are broken.
    None,
}

impl CertificateKind {
    pub const ALL: [CertificateKind; 6] = [
        CertificateKind::SelfSigned,
        CertificateKind::Expired,
        CertificateKind::NotYetValid,
        CertificateKind::WrongName,
        CertificateKind::WeakKey,
        CertificateKind::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CertificateKind::SelfSigned => "self-signed",
            CertificateKind::Expired => "expired",
            CertificateKind::NotYetValid => "not-yet-valid",
            CertificateKind::WrongName => "wrong-name",
            CertificateKind::WeakKey => "weak-key",
            CertificateKind::None => "none",
        }
    }
}

impl TryFrom<String> for CertificateKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let l = s.to_ascii_lowercase().replace('_', "-");
        CertificateKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == l)
            .ok_or_else(|| {
                let names: Vec<&str> = CertificateKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown certificate `{s}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl From<CertificateKind> for String {
    fn from(k: CertificateKind) -> String {
        k.as_str().to_owned()
    }
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls10 => "1.0",
            TlsVersion::Tls11 => "1.1",
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

impl TryFrom<String> for TlsVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let l = s.to_ascii_lowercase();
        let l = l.trim_start_matches("tls").trim_start_matches('v').trim();
        match l {
            "1.0" | "1" | "10" => Ok(TlsVersion::Tls10),
            "1.1" | "11" => Ok(TlsVersion::Tls11),
            "1.2" | "12" => Ok(TlsVersion::Tls12),
            "1.3" | "13" => Ok(TlsVersion::Tls13),
            _ => Err(format!(
                "unknown TLS version `{s}`, expected one of 1.0, 1.1, 1.2, 1.3"
            )),
        }
    }
}

impl From<TlsVersion> for String {
    fn from(v: TlsVersion) -> String {
        v.as_str().to_owned()
    }
}

/// TLS settings (MS-RDPBCGR 5.4.5.1). TLS 1.2/1.3 only with a normal key go through rustls; TLS 1.0/1.1
/// or a weak key go through OpenSSL at security level 0 (what legacy servers speak).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub certificate: CertificateKind,
    pub versions: Vec<TlsVersion>,
    /// Subject common name of the generated certificate (ignored by `wrong-name`).
    pub subject: String,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            certificate: CertificateKind::SelfSigned,
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            subject: "rdprobe-lab".to_owned(),
        }
    }
}

/// How a CredSSP errorCode is encoded (MS-CSSP 2.2.1: `errorCode [4] INTEGER OPTIONAL`, version >= 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCodeEncoding {
    /// A 4-byte INTEGER, as Windows and FreeRDP 3 send it (0xC000006D as `02 04 C0 00 00 6D`).
    Int4,
    /// Strictly DER: the positive value, 5 bytes with a leading zero (`02 05 00 C0 00 00 6D`).
    Der,
    /// No errorCode at all: the server closes after the AUTHENTICATE (Windows up to 2012, FreeRDP 2).
    None,
}

/// How a connection ends after a rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    /// TCP FIN, without TLS close_notify.
    Close,
    /// TLS close_notify, then FIN.
    CloseNotify,
    /// TCP RST.
    Reset,
    /// Keep the connection open and say nothing (until the client leaves or `link.hold_ms`).
    Silence,
}

/// CredSSP server behaviour (MS-CSSP 3.1.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Credssp {
    /// Reject every logon with this NTSTATUS once the NTLM AUTHENTICATE arrives, whatever the password.
    /// Without it the server checks the client's NTLM response against `identity.users`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<NtStatus>,
    pub error_code: ErrorCodeEncoding,
    /// How the connection ends after the rejection.
    pub after_reject: EndKind,
    /// HYBRID_EX: send Early User Authorization Result ACCESS_DENIED instead of SUCCESS after a good logon
    /// (MS-RDPBCGR 2.2.10.2): the user authenticated but may not log on remotely.
    pub early_user_auth_denied: bool,
}

impl Default for Credssp {
    fn default() -> Self {
        Credssp {
            reject: None,
            error_code: ErrorCodeEncoding::Int4,
            after_reject: EndKind::Close,
            early_user_auth_denied: false,
        }
    }
}

/// Link and timing behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Link {
    /// Delay before every write the server makes to the socket (slow link).
    pub write_delay_ms: u64,
    /// Longest wait for the client's next bytes before the server gives up and closes.
    pub read_timeout_ms: u64,
    /// How long a "silence" (or the connected state) holds the connection before closing it.
    pub hold_ms: u64,
    /// Think time before each of the server's answers, in order: the `k`-th entry delays the first
    /// write the server makes after it has read from the client for the `k`-th time (its `k`-th
    /// turn). The replayer fills it from a capture's server response gaps; turns past the end of the
    /// list are not delayed. Adds to `write_delay_ms`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_delays_ms: Vec<u64>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            write_delay_ms: 0,
            read_timeout_ms: 30_000,
            hold_ms: 60_000,
            response_delays_ms: Vec::new(),
        }
    }
}

/// A named boundary of the connection sequence where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FaultPoint {
    /// The X.224 Connection Request was read; nothing answered yet.
    X224Request,
    /// The X.224 Connection Confirm (or RDP_NEG_FAILURE) was sent.
    X224Confirm,
    /// The first TLS record (the ClientHello) was read; no ServerHello yet.
    TlsClientHello,
    /// The TLS handshake completed.
    TlsDone,
    /// The first TSRequest (NTLM NEGOTIATE) was read; no CHALLENGE yet.
    CredsspNegotiate,
    /// The TSRequest with the NTLM CHALLENGE was sent.
    CredsspChallenge,
    /// The TSRequest with the NTLM AUTHENTICATE (and pubKeyAuth) was read; no answer yet.
    CredsspAuthenticate,
    /// MCS Connect Initial was read; no response yet.
    McsConnectInitial,
    /// MCS Connect Response was sent.
    McsConnectResponse,
    /// Channel connection finished (erect domain, attach user, joins confirmed).
    Channels,
    /// The licensing PDU was sent.
    Licensing,
    /// The Demand Active PDU was sent.
    Capabilities,
    /// Finalization completed: the session is connected.
    Connected,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 13] = [
        FaultPoint::X224Request,
        FaultPoint::X224Confirm,
        FaultPoint::TlsClientHello,
        FaultPoint::TlsDone,
        FaultPoint::CredsspNegotiate,
        FaultPoint::CredsspChallenge,
        FaultPoint::CredsspAuthenticate,
        FaultPoint::McsConnectInitial,
        FaultPoint::McsConnectResponse,
        FaultPoint::Channels,
        FaultPoint::Licensing,
        FaultPoint::Capabilities,
        FaultPoint::Connected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultPoint::X224Request => "x224.request",
            FaultPoint::X224Confirm => "x224.confirm",
            FaultPoint::TlsClientHello => "tls.client_hello",
            FaultPoint::TlsDone => "tls.done",
            FaultPoint::CredsspNegotiate => "credssp.negotiate",
            FaultPoint::CredsspChallenge => "credssp.challenge",
            FaultPoint::CredsspAuthenticate => "credssp.authenticate",
            FaultPoint::McsConnectInitial => "mcs.connect_initial",
            FaultPoint::McsConnectResponse => "mcs.connect_response",
            FaultPoint::Channels => "channels",
            FaultPoint::Licensing => "licensing",
            FaultPoint::Capabilities => "capabilities",
            FaultPoint::Connected => "connected",
        }
    }

    /// The rdprobe stage this point belongs to.
    pub fn stage(self) -> crate::stage::Stage {
        use crate::stage::Stage;
        match self {
            FaultPoint::X224Request | FaultPoint::X224Confirm => Stage::X224,
            FaultPoint::TlsClientHello | FaultPoint::TlsDone => Stage::Tls,
            FaultPoint::CredsspNegotiate
            | FaultPoint::CredsspChallenge
            | FaultPoint::CredsspAuthenticate => Stage::Credssp,
            FaultPoint::McsConnectInitial | FaultPoint::McsConnectResponse => Stage::Mcs,
            FaultPoint::Channels => Stage::Channels,
            FaultPoint::Licensing => Stage::Licensing,
            FaultPoint::Capabilities => Stage::Capabilities,
            FaultPoint::Connected => Stage::Connected,
        }
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for FaultPoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let l = s.to_ascii_lowercase();
        FaultPoint::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == l)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultPoint::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown fault point `{s}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl From<FaultPoint> for String {
    fn from(p: FaultPoint) -> String {
        p.as_str().to_owned()
    }
}

/// What to do at a fault point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// TCP RST (SO_LINGER 0, then close).
    Reset,
    /// TCP FIN, without TLS close_notify.
    Close,
    /// TLS close_notify, then FIN (before TLS: same as `close`).
    CloseNotify,
    /// Say nothing more; hold the connection until the client leaves or `link.hold_ms`.
    Silence,
    /// Wait this long, then carry on.
    Delay { ms: u64 },
    /// Send only the first `bytes` bytes of the server's next write, then `then`.
    Truncate { bytes: usize, then: EndKind },
    /// Send these bytes (on the current layer: inside TLS once TLS is up), then `then`.
    Malformed { bytes: Vec<u8>, then: EndKind },
    /// Deny the connection: Set Error Info (access denied) when the client supports it and MCS is up,
    /// then MCS Disconnect Provider Ultimatum (MS-RDPBCGR 2.2.2.3), then close.
    Disconnect,
}

impl FaultAction {
    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::Reset => "reset",
            FaultAction::Close => "close",
            FaultAction::CloseNotify => "close_notify",
            FaultAction::Silence => "silence",
            FaultAction::Delay { .. } => "delay",
            FaultAction::Truncate { .. } => "truncate",
            FaultAction::Malformed { .. } => "malformed",
            FaultAction::Disconnect => "disconnect",
        }
    }
}

/// A fault: an action at a point, optionally only for some connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFault", into = "RawFault")]
pub struct Fault {
    pub at: FaultPoint,
    pub action: FaultAction,
    /// 1-based connection numbers this fault applies to; empty = every connection.
    pub connections: Vec<u64>,
}

impl Fault {
    pub fn new(at: FaultPoint, action: FaultAction) -> Fault {
        Fault {
            at,
            action,
            connections: Vec::new(),
        }
    }

    /// Whether this fault applies to the `n`-th (1-based) connection.
    pub fn applies_to(&self, n: u64) -> bool {
        self.connections.is_empty() || self.connections.contains(&n)
    }
}

/// The TOML form of a fault: `{ at = "...", action = "...", ms = .., bytes = .., hex = "..", then = "..", connections = [..] }`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: FaultPoint,
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    then: Option<EndKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    connections: Vec<u64>,
}

/// Longest delay a fault or the link may ask for (10 minutes), so a typo cannot pin a connection for days.
pub const MAX_DELAY_MS: u64 = 600_000;
/// Most entries in `link.response_delays_ms` (a handshake has a few dozen server turns).
pub const MAX_RESPONSE_DELAYS: usize = 1024;
/// Most bytes a `malformed` fault may send.
pub const MAX_MALFORMED_LEN: usize = 65_536;

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':' && *b != b'_')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex `{s}` has an odd number of digits"));
    }
    if digits.len() / 2 > MAX_MALFORMED_LEN {
        return Err(format!("hex is longer than {MAX_MALFORMED_LEN} bytes"));
    }
    hex::decode(&digits).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { c, .. } => {
            format!("hex `{s}` has a non-hex character `{c}`")
        }
        e => format!("hex `{s}`: {e}"),
    })
}

impl TryFrom<RawFault> for Fault {
    type Error = String;
    fn try_from(r: RawFault) -> Result<Self, String> {
        let unexpected = |key: &str, present: bool| -> Result<(), String> {
            if present {
                Err(format!(
                    "key `{key}` does not apply to action `{}`",
                    r.action
                ))
            } else {
                Ok(())
            }
        };
        let action = match r.action.to_ascii_lowercase().as_str() {
            "reset" | "rst" => FaultAction::Reset,
            "close" | "fin" => FaultAction::Close,
            "close_notify" | "close-notify" => FaultAction::CloseNotify,
            "silence" | "drop" => FaultAction::Silence,
            "disconnect" | "deny" => FaultAction::Disconnect,
            "delay" => {
                let ms = r.ms.ok_or("action `delay` needs `ms`")?;
                if ms > MAX_DELAY_MS {
                    return Err(format!("delay ms = {ms} is over the maximum of {MAX_DELAY_MS}"));
                }
                unexpected("bytes", r.bytes.is_some())?;
                unexpected("hex", r.hex.is_some())?;
                unexpected("then", r.then.is_some())?;
                return Ok(Fault {
                    at: r.at,
                    action: FaultAction::Delay { ms },
                    connections: r.connections,
                });
            }
            "truncate" => {
                let bytes = r.bytes.ok_or("action `truncate` needs `bytes`")?;
                let bytes = usize::try_from(bytes).map_err(|_| "truncate bytes is too large".to_owned())?;
                unexpected("ms", r.ms.is_some())?;
                unexpected("hex", r.hex.is_some())?;
                return Ok(Fault {
                    at: r.at,
                    action: FaultAction::Truncate {
                        bytes,
                        then: r.then.unwrap_or(EndKind::Silence),
                    },
                    connections: r.connections,
                });
            }
            "malformed" => {
                let hex = r.hex.as_deref().ok_or("action `malformed` needs `hex`")?;
                let bytes = parse_hex(hex)?;
                unexpected("ms", r.ms.is_some())?;
                unexpected("bytes", r.bytes.is_some())?;
                return Ok(Fault {
                    at: r.at,
                    action: FaultAction::Malformed {
                        bytes,
                        then: r.then.unwrap_or(EndKind::Silence),
                    },
                    connections: r.connections,
                });
            }
            other => {
                return Err(format!(
                    "unknown action `{other}`, expected one of reset, close, close_notify, silence, delay, \
                     truncate, malformed, disconnect"
                ))
            }
        };
        unexpected("ms", r.ms.is_some())?;
        unexpected("bytes", r.bytes.is_some())?;
        unexpected("hex", r.hex.is_some())?;
        unexpected("then", r.then.is_some())?;
        Ok(Fault {
            at: r.at,
            action,
            connections: r.connections,
        })
    }
}

impl From<Fault> for RawFault {
    fn from(f: Fault) -> RawFault {
        let mut r = RawFault {
            at: f.at,
            action: f.action.name().to_owned(),
            ms: None,
            bytes: None,
            hex: None,
            then: None,
            connections: f.connections,
        };
        match f.action {
            FaultAction::Delay { ms } => r.ms = Some(ms),
            FaultAction::Truncate { bytes, then } => {
                r.bytes = Some(bytes as u64);
                r.then = Some(then);
            }
            FaultAction::Malformed { bytes, then } => {
                r.hex = Some(hex::encode(&bytes));
                r.then = Some(then);
            }
            _ => {}
        }
        r
    }
}

/// Why a scenario could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// TOML syntax error, an unknown key, or a bad value.
    #[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        line: Option<usize>,
        message: String,
    },
    #[error("scenario is {0} bytes, over the limit of {MAX_SCENARIO_LEN}")]
    TooLarge(usize),
}

impl ScenarioError {
    /// 1-based line of the error, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Invalid { line, .. } => *line,
            ScenarioError::TooLarge(_) => None,
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// First line whose text starts with `key` followed by `=` or whitespace (best effort, for semantic errors).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('=') || rest.is_empty())
        })
        .map(|i| i + 1)
}

impl Scenario {
    /// Parses and validates a scenario. Errors name the key or value at fault and the line.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        if text.len() > MAX_SCENARIO_LEN {
            return Err(ScenarioError::TooLarge(text.len()));
        }
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Invalid {
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_owned(),
        })?;
        scenario
            .validate()
            .map_err(|(key, message)| ScenarioError::Invalid {
                line: line_of_key(text, key),
                message,
            })?;
        Ok(scenario)
    }

    /// Checks rules that span several keys. On error: the key to point at, and the message.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.name.trim().is_empty() {
            return Err(("name", "name must not be empty".to_owned()));
        }
        if let Some(g) = &self.gateway {
            if let Some(e) = &g.tunnel_error {
                if crate::gateway::tsgu::Hresult::parse(e).is_none() {
                    return Err((
                        "tunnel_error",
                        format!("gateway.tunnel_error {e:?} is neither an HRESULT name (E_PROXY_INTERNALERROR) nor a number"),
                    ));
                }
            }
            for sch in &g.schemes {
                if !["ntlm", "basic", "negotiate"].contains(&sch.to_ascii_lowercase().as_str()) {
                    return Err((
                        "schemes",
                        format!("gateway.schemes: {sch:?} is not one of NTLM, Negotiate, Basic"),
                    ));
                }
            }
        }
        if self.security.supported.is_empty()
            && self.security.select.is_none()
            && self.security.negotiation_failure.is_none()
        {
            return Err((
                "supported",
                "security.supported is empty: name at least one of rdp, ssl, hybrid, hybrid_ex"
                    .to_owned(),
            ));
        }
        if self.tls.versions.is_empty() {
            return Err((
                "versions",
                "tls.versions is empty: name at least one TLS version".to_owned(),
            ));
        }
        let credssp_possible = self.security.negotiation_failure.is_none()
            && (self.security.select.is_some_and(Protocol::uses_credssp)
                || self.security.supported.iter().any(|p| p.uses_credssp()));
        if credssp_possible && self.identity.users.is_empty() && self.credssp.reject.is_none() {
            return Err((
                "users",
                "identity.users is empty but the server may select hybrid: add a user or set credssp.reject".to_owned(),
            ));
        }
        for u in &self.identity.users {
            if u.name.is_empty() {
                return Err((
                    "name",
                    "identity.users: a user has an empty name".to_owned(),
                ));
            }
            if let Some(var) = &u.password_env {
                let ok =
                    !var.is_empty() && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok || !u.password.is_empty() {
                    return Err((
                        "password_env",
                        format!(
                            "identity.users `{}`: password_env must name an environment variable \
                             ([A-Za-z0-9_]+) and comes instead of password",
                            u.name
                        ),
                    ));
                }
            }
        }
        for key in [
            ("write_delay_ms", self.link.write_delay_ms),
            ("read_timeout_ms", self.link.read_timeout_ms),
            ("hold_ms", self.link.hold_ms),
        ] {
            if key.1 > MAX_DELAY_MS {
                return Err((
                    key.0,
                    format!(
                        "link.{} = {} is over the maximum of {MAX_DELAY_MS}",
                        key.0, key.1
                    ),
                ));
            }
        }
        if self.link.response_delays_ms.len() > MAX_RESPONSE_DELAYS {
            return Err((
                "response_delays_ms",
                format!(
                    "link.response_delays_ms has {} entries, over the maximum of {MAX_RESPONSE_DELAYS}",
                    self.link.response_delays_ms.len()
                ),
            ));
        }
        if let Some(d) = self
            .link
            .response_delays_ms
            .iter()
            .find(|d| **d > MAX_DELAY_MS)
        {
            return Err((
                "response_delays_ms",
                format!("link.response_delays_ms has {d}, over the maximum of {MAX_DELAY_MS}"),
            ));
        }
        if self.link.read_timeout_ms == 0 {
            return Err((
                "read_timeout_ms",
                "link.read_timeout_ms must be above 0".to_owned(),
            ));
        }
        Ok(())
    }

    /// The scenario as TOML; [`Scenario::from_toml`] reads it back to an equal value.
    pub fn to_toml(&self) -> String {
        // INVARIANT: every field serializes (no maps with non-string keys, no bare enums with data),
        // so toml serialization cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialize scenario: {e}\n"))
    }

    /// Faults at `point` that apply to the `n`-th connection, in file order.
    pub fn faults_at(&self, point: FaultPoint, n: u64) -> impl Iterator<Item = &Fault> {
        self.faults
            .iter()
            .filter(move |f| f.at == point && f.applies_to(n))
    }

    /// The user list as a list of `(name, password, domain)`.
    pub fn find_user(&self, name: &str, domain: Option<&str>) -> Option<&User> {
        self.identity.users.iter().find(|u| {
            u.name.eq_ignore_ascii_case(name)
                && match (&u.domain, domain) {
                    (Some(d), Some(cd)) => d.eq_ignore_ascii_case(cd),
                    (Some(d), None) => d.is_empty(),
                    (None, _) => true,
                }
        })
    }
}

/// The built-in scenarios: name, one sentence, TOML text.
const BUILTINS: &[(&str, &str, &str)] = &[
    (
        "healthy-nla",
        "a healthy server that offers TLS and NLA (CredSSP) and accepts user/pass",
        include_str!("../fixtures/scenarios/healthy-nla.toml"),
    ),
    (
        "healthy-tls",
        "a healthy server with TLS security only (no NLA), as with security layer SSL and NLA off",
        include_str!("../fixtures/scenarios/healthy-tls.toml"),
    ),
    (
        "rdp-security-only",
        "a server set to standard RDP security: it selects PROTOCOL_RDP whatever the client asks for \
         (NLA mismatch); the lab can only offer encryption level NONE",
        include_str!("../fixtures/scenarios/rdp-security-only.toml"),
    ),
    (
        "nla-required",
        "a server that requires NLA: a client offering TLS only gets RDP_NEG_FAILURE HYBRID_REQUIRED_BY_SERVER",
        include_str!("../fixtures/scenarios/nla-required.toml"),
    ),
    (
        "ssl-required",
        "a server with TLS security only that answers SSL_REQUIRED_BY_SERVER to a client offering RDP security \
         or NLA alone",
        include_str!("../fixtures/scenarios/ssl-required.toml"),
    ),
    (
        "tls-reset-at-client-hello",
        "endpoint security kills the socket the moment the TLS ClientHello arrives: a TCP RST, no alert \
         (mstsc 0x904 / 0x7)",
        include_str!("../fixtures/scenarios/tls-reset-at-client-hello.toml"),
    ),
    (
        "firewall-drop-after-x224",
        "a firewall lets the X.224 exchange through, then silently drops everything (the TLS handshake times out)",
        include_str!("../fixtures/scenarios/firewall-drop-after-x224.toml"),
    ),
    (
        "x224-silent",
        "the server accepts TCP but never answers the X.224 Connection Request",
        include_str!("../fixtures/scenarios/x224-silent.toml"),
    ),
    (
        "expired-certificate",
        "the server presents a certificate that expired on 2021-01-01",
        include_str!("../fixtures/scenarios/expired-certificate.toml"),
    ),
    (
        "no-certificate",
        "the server cannot produce a certificate (broken MachineKeys): a fatal handshake_failure alert \
         answers the ClientHello",
        include_str!("../fixtures/scenarios/no-certificate.toml"),
    ),
    (
        "wrong-password",
        "an NLA server that rejects the logon with STATUS_LOGON_FAILURE in the CredSSP errorCode",
        include_str!("../fixtures/scenarios/wrong-password.toml"),
    ),
    (
        "account-locked",
        "an NLA server that rejects the logon with STATUS_ACCOUNT_LOCKED_OUT",
        include_str!("../fixtures/scenarios/account-locked.toml"),
    ),
    (
        "account-expired",
        "an NLA server that rejects the logon with STATUS_ACCOUNT_EXPIRED",
        include_str!("../fixtures/scenarios/account-expired.toml"),
    ),
    (
        "password-must-change",
        "an NLA server that rejects the logon with STATUS_PASSWORD_MUST_CHANGE",
        include_str!("../fixtures/scenarios/password-must-change.toml"),
    ),
    (
        "denied-after-mcs",
        "the server completes NLA and MCS Connect, then denies the connection with an MCS Disconnect Provider \
         Ultimatum",
        include_str!("../fixtures/scenarios/denied-after-mcs.toml"),
    ),
    (
        "slow-link",
        "a healthy NLA server behind a slow link: 400 ms before every server write",
        include_str!("../fixtures/scenarios/slow-link.toml"),
    ),
    (
        "reset-in-credssp",
        "the connection is reset in the middle of CredSSP, right after the client's NTLM AUTHENTICATE",
        include_str!("../fixtures/scenarios/reset-in-credssp.toml"),
    ),
    (
        "gw-healthy",
        "a healthy RD Gateway (WebSocket transport, NTLM and Basic, user/pass) in front of a healthy NLA server",
        include_str!("../fixtures/scenarios/gw-healthy.toml"),
    ),
    (
        "gw-negotiate-only",
        "the gateway answers 401 offering only Negotiate (Kerberos), whatever the client sends",
        include_str!("../fixtures/scenarios/gw-negotiate-only.toml"),
    ),
    (
        "gw-forbidden",
        "the gateway (or a proxy in front of it) answers 403 Forbidden",
        include_str!("../fixtures/scenarios/gw-forbidden.toml"),
    ),
    (
        "gw-login-redirect",
        "a reverse proxy in front of the gateway answers 302 to a login page",
        include_str!("../fixtures/scenarios/gw-login-redirect.toml"),
    ),
    (
        "gw-websocket-refused",
        "the WebSocket upgrade is answered 200 OK without upgrading (a proxy stripped the Upgrade header)",
        include_str!("../fixtures/scenarios/gw-websocket-refused.toml"),
    ),
    (
        "gw-http-only",
        "an older gateway: no WebSocket transport, the legacy two-channel HTTP transport only",
        include_str!("../fixtures/scenarios/gw-http-only.toml"),
    ),
    (
        "gw-reset-after-ntlm",
        "the gateway resets the connection right after the NTLM AUTHENTICATE",
        include_str!("../fixtures/scenarios/gw-reset-after-ntlm.toml"),
    ),
    (
        "gw-tunnel-refused",
        "the gateway refuses the tunnel with E_PROXY_NAP_ACCESSDENIED",
        include_str!("../fixtures/scenarios/gw-tunnel-refused.toml"),
    ),
    (
        "gw-rap-denied",
        "the resource policy (RAP) lists rdp01.corp.example: the NetBIOS name rdp01 is denied with E_PROXY_RAP_ACCESSDENIED",
        include_str!("../fixtures/scenarios/gw-rap-denied.toml"),
    ),
    (
        "gw-target-unreachable",
        "the gateway cannot reach the target server: every channel gets E_PROXY_TS_CONNECTFAILED",
        include_str!("../fixtures/scenarios/gw-target-unreachable.toml"),
    ),
    (
        "gw-slow-tunnel",
        "the gateway takes 30 s to answer the tunnel create (overloaded, or waiting on its domain controller / NPS)",
        include_str!("../fixtures/scenarios/gw-slow-tunnel.toml"),
    ),
    (
        "gw-slow-channel",
        "the gateway accepts the tunnel and then takes 30 s to answer the channel request",
        include_str!("../fixtures/scenarios/gw-slow-channel.toml"),
    ),
    (
        "gw-expired-certificate",
        "the gateway presents a certificate that expired in 2021",
        include_str!("../fixtures/scenarios/gw-expired-certificate.toml"),
    ),
];

/// A built-in scenario by name.
pub fn builtin(name: &str) -> Option<Scenario> {
    BUILTINS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, d, text)| {
            // INVARIANT: every built-in file parses (held by the `builtins_parse` test).
            let mut s = Scenario::from_toml(text).unwrap_or_else(|e| {
                let mut s = healthy_fallback();
                s.description = format!("built-in scenario does not parse: {e}");
                s
            });
            s.name = (*n).to_owned();
            if s.description.is_empty() {
                s.description = (*d).to_owned();
            }
            s
        })
}

fn healthy_fallback() -> Scenario {
    Scenario {
        name: "healthy-nla".to_owned(),
        description: String::new(),
        identity: Identity::default(),
        security: Security::default(),
        tls: Tls::default(),
        credssp: Credssp::default(),
        link: Link::default(),
        faults: Vec::new(),
        mutate: None,
        gateway: None,
    }
}

/// Names of the built-in scenarios with one sentence each, in a stable order.
pub fn builtin_names() -> Vec<(&'static str, &'static str)> {
    BUILTINS.iter().map(|(n, d, _)| (*n, *d)).collect()
}

/// Reads a scenario by built-in name or as a TOML file path.
pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioLoadError> {
    if let Some(s) = builtin(name_or_path) {
        return Ok(s);
    }
    let path = std::path::Path::new(name_or_path);
    if !path.exists() {
        return Err(ScenarioLoadError::NotFound(name_or_path.to_owned()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScenarioLoadError::Io(name_or_path.to_owned(), e))?;
    Scenario::from_toml(&text).map_err(|e| ScenarioLoadError::Invalid(name_or_path.to_owned(), e))
}

fn builtin_list() -> String {
    builtin_names()
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioLoadError {
    #[error("no built-in scenario or file named `{0}` (built-ins: {list})", list = builtin_list())]
    NotFound(String),
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Invalid(String, ScenarioError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, sentence, text) in BUILTINS {
            let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&s.name, name, "file name field");
            assert!(!sentence.is_empty());
            let back = Scenario::from_toml(&s.to_toml())
                .unwrap_or_else(|e| panic!("{name} round trip: {e}"));
            assert_eq!(back, s, "{name} round trip");
        }
        assert_eq!(builtin_names().len(), BUILTINS.len());
        assert!(
            builtin_names().len() >= 30,
            "the built-ins include gw-http-only"
        );
    }

    #[test]
    fn mutate_section_parses_and_round_trips() {
        let s = Scenario::from_toml("name = \"m\"\n[mutate]\nstage = \"capabilities\"\nseed = 7\n")
            .expect("parses");
        let m = s.mutate.clone().expect("mutate");
        assert_eq!(
            (m.stage, m.seed, m.case),
            (MutateStage::Capabilities, 7, None)
        );
        assert_eq!((m.case_for(1), m.case_for(5)), (0, 4));
        assert_eq!(Scenario::from_toml(&s.to_toml()).expect("again"), s);
        let err = Scenario::from_toml("name = \"m\"\n[mutate]\nstage = \"nope\"\n").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let fixed = Mutate {
            stage: MutateStage::Tls,
            seed: 1,
            case: Some(9),
        };
        assert_eq!(fixed.case_for(1), 9);
        assert_eq!(MutateStage::parse("ERROR"), Some(MutateStage::Error));
    }

    #[test]
    fn example_file_parses() {
        let s = Scenario::from_toml(include_str!("../fixtures/scenarios/example.toml"))
            .expect("example");
        assert!(!s.faults.is_empty());
    }

    #[test]
    fn negotiation_rules() {
        let nla = builtin("nla-required").expect("builtin");
        assert_eq!(
            nla.security.negotiate(1),
            Negotiation::Fail(NegFailureCode::HYBRID_REQUIRED_BY_SERVER)
        );
        assert_eq!(
            nla.security.negotiate(3),
            Negotiation::Select(Protocol::Hybrid)
        );
        assert_eq!(
            nla.security.negotiate(11),
            Negotiation::Select(Protocol::HybridEx)
        );
        let ssl = builtin("ssl-required").expect("builtin");
        assert_eq!(
            ssl.security.negotiate(0),
            Negotiation::Fail(NegFailureCode::SSL_REQUIRED_BY_SERVER)
        );
        assert_eq!(
            ssl.security.negotiate(2),
            Negotiation::Fail(NegFailureCode::SSL_REQUIRED_BY_SERVER)
        );
        assert_eq!(
            ssl.security.negotiate(3),
            Negotiation::Select(Protocol::Ssl)
        );
        let rdp = builtin("rdp-security-only").expect("builtin");
        assert_eq!(
            rdp.security.negotiate(11),
            Negotiation::Select(Protocol::Rdp)
        );
    }

    #[test]
    fn errors_name_key_and_line() {
        let e =
            Scenario::from_toml("name = \"x\"\n[security]\nsuported = [\"ssl\"]\n").unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.to_string().contains("suported"), "{e}");

        let e = Scenario::from_toml(
            "name = \"x\"\n\n[[faults]]\nat = \"x224.bogus\"\naction = \"reset\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("x224.bogus"), "{e}");
        assert!(e.line().is_some_and(|l| (3..=4).contains(&l)), "{e}");

        let e = Scenario::from_toml(
            "name = \"x\"\n[[faults]]\nat = \"connected\"\naction = \"delay\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs `ms`"), "{e}");

        let e = Scenario::from_toml("name = \"x\"\n[security]\nnegotiation_failure = \"NOPE\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("NOPE") && e.line() == Some(3), "{e}");

        let e = Scenario::from_toml("name = \"x\"\n[tls]\ncertificate = \"expird\"\n").unwrap_err();
        assert!(
            e.to_string().contains("expird") && e.line() == Some(3),
            "{e}"
        );

        let e = Scenario::from_toml("name = \"x\"\n[security]\nsupported = []\n").unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.to_string().contains("security.supported"), "{e}");

        let e = Scenario::from_toml(
            "name = \"x\"\n[[faults]]\nat = \"connected\"\naction = \"malformed\"\nhex = \"0g\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("non-hex"), "{e}");
    }

    #[test]
    fn codes_by_name_or_number() {
        let s = Scenario::from_toml("name = \"x\"\n[security]\nnegotiation_failure = 5\n[credssp]\nreject = \"0xC0000234\"\n")
            .expect("parse");
        assert_eq!(s.security.negotiation_failure, Some(NegFailureCode(5)));
        assert_eq!(s.credssp.reject.map(|c| c.0), Some(0xC000_0234));
        assert_eq!(
            s.credssp.reject.and_then(NtStatus::name),
            Some("STATUS_ACCOUNT_LOCKED_OUT")
        );
        let s = Scenario::from_toml("name = \"x\"\n[credssp]\nreject = \"LOGON_FAILURE\"\n")
            .expect("parse");
        assert_eq!(s.credssp.reject, Some(NtStatus::LOGON_FAILURE));
        // A code named but not explained is written by its name and read back.
        let mut s = Scenario::from_toml("name = \"x\"\n").expect("parse");
        s.credssp.reject = Some(NtStatus(0xC000_0203));
        let text = s.to_toml();
        assert!(text.contains("STATUS_USER_SESSION_DELETED"), "{text}");
        let back = Scenario::from_toml(&text).expect("read back");
        assert_eq!(back.credssp.reject, Some(NtStatus(0xC000_0203)));
        let e = Scenario::from_toml("name = \"x\"\n[credssp]\nreject = \"STATUS_NOPE\"\n")
            .expect_err("unknown name");
        assert!(e.to_string().contains("STATUS_LOGON_FAILURE"), "{e}");
    }

    #[test]
    fn never_panics_on_garbage() {
        for text in [
            "",
            "[",
            "name = 1",
            "faults = 3",
            "name=\"a\"\n[[faults]]\nat=1",
            "\u{0}\u{ffff}",
            "name=\"a\"\n[link]\nhold_ms=-1",
        ] {
            let _ = Scenario::from_toml(text);
        }
    }
}
