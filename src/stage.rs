//! The shared vocabulary: ordered connection stages and the verdict each one ends in.
//!
//! Every part of rdprobe (live probe, capture analyzer, replayer, fuzzer, diagnosis) speaks in these
//! types; see DESIGN.md "Stages". Field names are part of the stable JSON schema (README).

use ironrdp_pdu::nego::SecurityProtocol;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// One stage of the RDP connection sequence, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Name resolution of the target (live probe of a name): which addresses, how long, which one
    /// was tried.
    Dns,
    /// RD Gateway hop (MS-TSGU): TCP connect to the gateway.
    GwTcp,
    /// TLS handshake with the gateway (HTTPS).
    GwTls,
    /// The HTTP request that opens the transport (WebSocket upgrade or RDG_OUT_DATA / RDG_IN_DATA).
    GwHttp,
    /// HTTP authentication to the gateway (Negotiate / NTLM / Basic).
    GwAuth,
    /// MS-TSGU handshake, tunnel create and tunnel authorization (MS-TSGU 2.2.10.x).
    GwTunnel,
    /// MS-TSGU channel create to the target server (MS-TSGU 2.2.10.2 / 2.2.10.3).
    GwChannel,
    /// TCP connect (through a gateway: the channel to the target is open).
    Tcp,
    /// X.224 Connection Request / Confirm with RDP_NEG_REQ / RDP_NEG_RSP / RDP_NEG_FAILURE (MS-RDPBCGR 2.2.1.1-2.2.1.2).
    X224,
    /// TLS handshake (MS-RDPBCGR 5.4.5).
    Tls,
    /// CredSSP / NLA TSRequest exchange (MS-CSSP).
    Credssp,
    /// MCS Connect Initial / Response with GCC data blocks (MS-RDPBCGR 2.2.1.3-2.2.1.4).
    Mcs,
    /// Erect domain, attach user, channel joins (MS-RDPBCGR 2.2.1.5-2.2.1.8).
    Channels,
    /// Security exchange and Client Info PDU (MS-RDPBCGR 2.2.1.10-2.2.1.11).
    Security,
    /// Licensing (MS-RDPBCGR 2.2.1.12).
    Licensing,
    /// Demand active / confirm active and finalization (MS-RDPBCGR 2.2.1.13-2.2.1.22).
    Capabilities,
    /// Session established.
    Connected,
}

impl Stage {
    /// The stages of a direct RDP connection (the gateway hop's are in [`Stage::GATEWAY`]).
    pub const ALL: [Stage; 10] = [
        Stage::Tcp,
        Stage::X224,
        Stage::Tls,
        Stage::Credssp,
        Stage::Mcs,
        Stage::Channels,
        Stage::Security,
        Stage::Licensing,
        Stage::Capabilities,
        Stage::Connected,
    ];

    /// The RD Gateway hop, in wire order; a probe through a gateway reports these before `tcp`.
    pub const GATEWAY: [Stage; 6] = [
        Stage::GwTcp,
        Stage::GwTls,
        Stage::GwHttp,
        Stage::GwAuth,
        Stage::GwTunnel,
        Stage::GwChannel,
    ];

    /// Whether this is a stage of the gateway hop.
    pub fn is_gateway(self) -> bool {
        Stage::GwTcp <= self && self < Stage::Tcp
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dns => "dns",
            Stage::GwTcp => "gw_tcp",
            Stage::GwTls => "gw_tls",
            Stage::GwHttp => "gw_http",
            Stage::GwAuth => "gw_auth",
            Stage::GwTunnel => "gw_tunnel",
            Stage::GwChannel => "gw_channel",
            Stage::Tcp => "tcp",
            Stage::X224 => "x224",
            Stage::Tls => "tls",
            Stage::Credssp => "credssp",
            Stage::Mcs => "mcs",
            Stage::Channels => "channels",
            Stage::Security => "security",
            Stage::Licensing => "licensing",
            Stage::Capabilities => "capabilities",
            Stage::Connected => "connected",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        [Stage::Dns]
            .iter()
            .chain(Stage::GATEWAY.iter())
            .chain(Stage::ALL.iter())
            .copied()
            .find(|st| st.as_str() == s.to_ascii_lowercase())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end of the TCP conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
    /// Neither end: a middlebox, the network, or the capture itself.
    Network,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
            Side::Network => Side::Network,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
            Side::Network => "network",
        }
    }

    /// The other end ("server" for the client and the reverse; "network" stays).
    pub fn peer_name(self) -> &'static str {
        match self {
            Side::Client => "server",
            Side::Server => "client",
            Side::Network => "network",
        }
    }
}

/// How a stage failed. Serialized as `{"kind": "...", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureKind {
    /// TCP connection refused (RST to SYN).
    Refused,
    /// No route / host unreachable / DNS failure.
    Unreachable { detail: String },
    /// The named side went silent past the deadline.
    TimedOut { waiting_for: Side, after_ms: u64 },
    /// The named side sent a TCP RST.
    Reset,
    /// The named side closed (FIN), without a protocol-level refusal.
    Closed { tls_close_notify: bool },
    /// RDP_NEG_FAILURE (MS-RDPBCGR 2.2.1.2.2). JSON: `code` and its `name`.
    NegotiationFailure(NegFailure),
    /// The server selected a protocol the client did not offer or cannot use. JSON: the flags by
    /// name, `PROTOCOL_SSL|PROTOCOL_HYBRID`.
    ProtocolMismatch {
        #[serde(with = "protocol_names")]
        requested: SecurityProtocol,
        #[serde(with = "protocol_names")]
        selected: SecurityProtocol,
    },
    /// A TLS alert was received or sent. JSON: `level` and `description` by name, `code`.
    TlsAlert(TlsAlert),
    /// TLS handshake failure without an alert (e.g. no common version / cipher).
    TlsFailure { detail: String },
    /// Authentication rejected (CredSSP errorCode NTSTATUS, or a close right after the AUTHENTICATE).
    /// JSON: `ntstatus`, its `name` and `detail`.
    AuthFailure(AuthFailure),
    /// The server denied the connection (MCS disconnect provider ultimatum, access denied, set error info).
    Denied { detail: String },
    /// Malformed data: what was wrong and at which byte offset of that side's stream.
    ProtocolError { what: String, offset: Option<u64> },
    /// An HTTP answer from an RD Gateway other than the one the protocol expects (401, 403, 302, 5xx…).
    HttpStatus {
        status: u16,
        reason: String,
        /// `Location` of a redirect.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
    },
    /// An RD Gateway refused a step with an HRESULT (MS-TSGU 2.2.10.x statusCode, MS-TSGU 2.2.3.1 names).
    GatewayError(GatewayHresult),
    /// The probe stopped by request (`--stop-after`), not a failure of the peer.
    Stopped,
    /// The capture ended before the connection did (analyze only).
    CaptureEnded,
    /// TCP shows `what` sent and retransmitted `retransmissions` times over `over_ms`, never
    /// acknowledged: the path dropped it (always `by: network`). `mtu_black_hole`: the lost segments
    /// were full-size with DF while smaller ones got through. `never_arrived`: seen from the
    /// receiving end instead (the sender's retransmissions are not in view): `what` never arrived
    /// although the sender's later packets did, and the receiver never acknowledged it for
    /// `over_ms`.
    Dropped {
        what: String,
        retransmissions: u32,
        over_ms: u64,
        #[serde(default)]
        mtu_black_hole: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        never_arrived: bool,
    },
}

impl FailureKind {
    /// Short stable name, as in the table and in `kind` of the JSON.
    pub fn name(&self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Unreachable { .. } => "unreachable",
            FailureKind::TimedOut { .. } => "timed_out",
            FailureKind::Reset => "reset",
            FailureKind::Closed { .. } => "closed",
            FailureKind::NegotiationFailure { .. } => "negotiation_failure",
            FailureKind::ProtocolMismatch { .. } => "protocol_mismatch",
            FailureKind::TlsAlert { .. } => "tls_alert",
            FailureKind::TlsFailure { .. } => "tls_failure",
            FailureKind::AuthFailure { .. } => "auth_failure",
            FailureKind::Denied { .. } => "denied",
            FailureKind::ProtocolError { .. } => "protocol_error",
            FailureKind::HttpStatus { .. } => "http_status",
            FailureKind::GatewayError { .. } => "gateway_error",
            FailureKind::Stopped => "stopped",
            FailureKind::CaptureEnded => "capture_ended",
            FailureKind::Dropped { .. } => "dropped",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Refused => write!(f, "connection refused"),
            FailureKind::Unreachable { detail } => write!(f, "unreachable: {detail}"),
            FailureKind::TimedOut {
                waiting_for,
                after_ms,
            } => {
                write!(
                    f,
                    "timed out waiting for the {waiting_for} after {after_ms} ms"
                )
            }
            FailureKind::Reset => write!(f, "reset by peer"),
            FailureKind::Closed {
                tls_close_notify: true,
            } => write!(f, "closed by peer (TLS close_notify)"),
            FailureKind::Closed {
                tls_close_notify: false,
            } => write!(f, "closed by peer"),
            FailureKind::NegotiationFailure(n) => {
                write!(f, "negotiation failure {} (0x{:08x})", n.name(), n.code)
            }
            FailureKind::ProtocolMismatch {
                requested,
                selected,
            } => {
                write!(
                    f,
                    "protocol mismatch: requested {}, server selected {}",
                    protocol_names::text(*requested),
                    protocol_names::text(*selected)
                )
            }
            FailureKind::TlsAlert(a) => {
                write!(
                    f,
                    "TLS alert {} {} ({})",
                    a.level_name(),
                    a.description(),
                    a.code
                )
            }
            FailureKind::TlsFailure { detail } => write!(f, "TLS failure: {detail}"),
            FailureKind::AuthFailure(a) => match (a.ntstatus, a.name()) {
                (Some(code), Some(name)) => {
                    write!(
                        f,
                        "authentication failure {name} (0x{code:08X}): {}",
                        a.detail
                    )
                }
                (Some(code), None) => {
                    write!(f, "authentication failure 0x{code:08X}: {}", a.detail)
                }
                _ => write!(f, "authentication failure: {}", a.detail),
            },
            FailureKind::Denied { detail } => write!(f, "denied: {detail}"),
            FailureKind::ProtocolError {
                what,
                offset: Some(o),
            } => write!(f, "protocol error at byte {o}: {what}"),
            FailureKind::ProtocolError { what, offset: None } => {
                write!(f, "protocol error: {what}")
            }
            FailureKind::HttpStatus {
                status,
                reason,
                location,
            } => {
                write!(f, "HTTP {status} {reason}")?;
                if let Some(l) = location {
                    write!(f, " to {l}")?;
                }
                Ok(())
            }
            FailureKind::GatewayError(h) => {
                write!(f, "gateway error {} (0x{:08X})", h.name(), h.code)
            }
            FailureKind::Stopped => write!(f, "stopped by the client"),
            FailureKind::CaptureEnded => write!(f, "capture ended"),
            FailureKind::Dropped {
                what,
                retransmissions,
                over_ms,
                mtu_black_hole,
                never_arrived,
            } => {
                let secs = *over_ms as f64 / 1000.0;
                if *never_arrived {
                    write!(
                        f,
                        "{what} never arrived in {secs:.1} s although later packets did, never acknowledged"
                    )?;
                    if *mtu_black_hole {
                        return write!(
                            f,
                            " (larger than every segment that arrived: path-MTU black hole)"
                        );
                    }
                    return Ok(());
                }
                write!(
                    f,
                    "{what} retransmitted {retransmissions}\u{d7} over {secs:.1} s, never acknowledged"
                )?;
                if *mtu_black_hole {
                    write!(f, " (full-size segments with DF lost while smaller ones passed: path-MTU black hole)")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// An RDP_NEG_FAILURE code; its name comes from the one table in `codes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegFailure {
    pub code: u32,
}

impl NegFailure {
    /// The MS-RDPBCGR name (`HYBRID_REQUIRED_BY_SERVER`), `UNKNOWN_FAILURE_CODE` for a code
    /// outside the table.
    pub fn name(self) -> &'static str {
        crate::codes::neg_failure_name(self.code).unwrap_or("UNKNOWN_FAILURE_CODE")
    }
}

impl Serialize for NegFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("NegFailure", 2)?;
        st.serialize_field("code", &self.code)?;
        st.serialize_field("name", self.name())?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for NegFailure {
    /// Reads `code`; the `name` written beside it is derived, not trusted.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            code: u32,
        }
        Repr::deserialize(d).map(|r| NegFailure { code: r.code })
    }
}

/// A rejected authentication: the NTSTATUS the server answered with (CredSSP errorCode), if any,
/// and what happened. The code's name comes from the one table in `codes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    pub ntstatus: Option<u32>,
    pub detail: String,
}

impl AuthFailure {
    /// A failure without an NTSTATUS (a close, an NTLM step that failed).
    pub fn without_status(detail: impl Into<String>) -> AuthFailure {
        AuthFailure {
            ntstatus: None,
            detail: detail.into(),
        }
    }

    /// The NTSTATUS name (`STATUS_LOGON_FAILURE`), None without a code or for a code outside the
    /// table.
    pub fn name(&self) -> Option<&'static str> {
        self.ntstatus.and_then(crate::codes::ntstatus_name)
    }
}

impl Serialize for AuthFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("AuthFailure", 3)?;
        st.serialize_field("ntstatus", &self.ntstatus)?;
        st.serialize_field("name", &self.name())?;
        st.serialize_field("detail", &self.detail)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for AuthFailure {
    /// Reads `ntstatus` and `detail`; the `name` written beside them is derived, not trusted.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            ntstatus: Option<u32>,
            detail: String,
        }
        Repr::deserialize(d).map(|r| AuthFailure {
            ntstatus: r.ntstatus,
            detail: r.detail,
        })
    }
}

/// An RD Gateway's HRESULT (MS-TSGU 2.2.3.1); its name comes from the one table in `codes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayHresult {
    pub code: u32,
}

impl GatewayHresult {
    /// The MS-TSGU name (`E_PROXY_RAP_ACCESSDENIED`), or the code in hex when it has none.
    pub fn name(self) -> Cow<'static, str> {
        match crate::codes::gateway_hresult_name(self.code) {
            Some(n) => n.into(),
            None => format!("0x{:08X}", self.code).into(),
        }
    }
}

impl Serialize for GatewayHresult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("GatewayHresult", 2)?;
        st.serialize_field("code", &self.code)?;
        st.serialize_field("name", &self.name())?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for GatewayHresult {
    /// Reads `code`; the `name` written beside it is derived, not trusted.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            code: u32,
        }
        Repr::deserialize(d).map(|r| GatewayHresult { code: r.code })
    }
}

/// A TLS alert as it was on the wire (RFC 8446 6): level and description codes. The names are
/// derived (the description table is `decode::tls`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsAlert {
    /// 1 warning, 2 fatal.
    pub level: u8,
    /// The AlertDescription.
    pub code: u8,
}

impl TlsAlert {
    pub const WARNING: u8 = 1;
    pub const FATAL: u8 = 2;

    /// A fatal alert with this description.
    pub fn fatal(code: u8) -> Self {
        TlsAlert {
            level: Self::FATAL,
            code,
        }
    }

    /// `warning`, `fatal`, or `level_N` for another value.
    pub fn level_name(self) -> Cow<'static, str> {
        match self.level {
            Self::WARNING => "warning".into(),
            Self::FATAL => "fatal".into(),
            l => format!("level_{l}").into(),
        }
    }

    /// Reads a name [`TlsAlert::level_name`] writes.
    pub fn parse_level(name: &str) -> Option<u8> {
        match name {
            "warning" => Some(Self::WARNING),
            "fatal" => Some(Self::FATAL),
            l => l.strip_prefix("level_")?.parse().ok(),
        }
    }

    /// `handshake_failure`, or `unknown_N` for a code without a name.
    pub fn description(self) -> Cow<'static, str> {
        match crate::decode::tls::alert_description_name(self.code) {
            Some(d) => d.into(),
            None => format!("unknown_{}", self.code).into(),
        }
    }

    pub fn is_fatal(self) -> bool {
        self.level == Self::FATAL
    }
}

impl Serialize for TlsAlert {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TlsAlert", 3)?;
        st.serialize_field("level", &self.level_name())?;
        st.serialize_field("description", &self.description())?;
        st.serialize_field("code", &self.code)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for TlsAlert {
    /// Reads `level` (by name) and `code`; the `description` written beside it is derived.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr<'a> {
            #[serde(borrow)]
            level: Cow<'a, str>,
            code: u8,
        }
        let r = Repr::deserialize(d)?;
        let level = TlsAlert::parse_level(&r.level).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown TLS alert level `{}`", r.level))
        })?;
        Ok(TlsAlert {
            level,
            code: r.code,
        })
    }
}

/// RDP_NEG protocol flags as the JSON writes them: the flag names joined by `|` (`PROTOCOL_RDP`
/// for none), read back to the flags.
pub mod protocol_names {
    use ironrdp_pdu::nego::SecurityProtocol;

    /// `PROTOCOL_SSL|PROTOCOL_HYBRID`.
    pub fn text(p: SecurityProtocol) -> String {
        crate::decode::x224::protocol_names(p.bits()).join("|")
    }

    pub fn serialize<S: serde::Serializer>(p: &SecurityProtocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(*p))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<SecurityProtocol, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        crate::decode::x224::parse_protocol_names(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("cannot read `{s}` as RDP_NEG protocol flags"))
        })
    }
}

/// The verdict a stage ends in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Failed {
        #[serde(flatten)]
        kind: FailureKind,
        /// Which side ended it (sent the RST/FIN/refusal, or went silent).
        by: Side,
    },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }

    pub fn failure(&self) -> Option<&FailureKind> {
        match self {
            Verdict::Ok => None,
            Verdict::Failed { kind, .. } => Some(kind),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok => f.write_str("ok"),
            Verdict::Failed { kind, by } => write!(f, "{kind} [{by}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(kind: FailureKind) -> String {
        serde_json::to_string(&Verdict::Failed {
            kind,
            by: Side::Server,
        })
        .unwrap()
    }

    /// The typed kinds write the JSON the string-carrying ones wrote, and read it back.
    #[test]
    fn typed_kinds_keep_their_json() {
        let cases = [
            (
                FailureKind::NegotiationFailure(NegFailure { code: 5 }),
                r#"{"status":"failed","kind":"negotiation_failure","code":5,"name":"HYBRID_REQUIRED_BY_SERVER","by":"server"}"#,
            ),
            (
                FailureKind::NegotiationFailure(NegFailure { code: 0x99 }),
                r#"{"status":"failed","kind":"negotiation_failure","code":153,"name":"UNKNOWN_FAILURE_CODE","by":"server"}"#,
            ),
            (
                FailureKind::ProtocolMismatch {
                    requested: SecurityProtocol::SSL | SecurityProtocol::HYBRID,
                    selected: SecurityProtocol::empty(),
                },
                r#"{"status":"failed","kind":"protocol_mismatch","requested":"PROTOCOL_SSL|PROTOCOL_HYBRID","selected":"PROTOCOL_RDP","by":"server"}"#,
            ),
            (
                FailureKind::TlsAlert(TlsAlert::fatal(40)),
                r#"{"status":"failed","kind":"tls_alert","level":"fatal","description":"handshake_failure","code":40,"by":"server"}"#,
            ),
            (
                FailureKind::TlsAlert(TlsAlert {
                    level: 7,
                    code: 201,
                }),
                r#"{"status":"failed","kind":"tls_alert","level":"level_7","description":"unknown_201","code":201,"by":"server"}"#,
            ),
            (
                FailureKind::GatewayError(GatewayHresult { code: 0x8007_59DA }),
                r#"{"status":"failed","kind":"gateway_error","code":2147965402,"name":"E_PROXY_RAP_ACCESSDENIED","by":"server"}"#,
            ),
            (
                FailureKind::GatewayError(GatewayHresult { code: 0x8000_1234 }),
                r#"{"status":"failed","kind":"gateway_error","code":2147488308,"name":"0x80001234","by":"server"}"#,
            ),
            (
                FailureKind::AuthFailure(AuthFailure {
                    ntstatus: Some(0xC000_006D),
                    detail: "server answered with a TSRequest errorCode".into(),
                }),
                r#"{"status":"failed","kind":"auth_failure","ntstatus":3221225581,"name":"STATUS_LOGON_FAILURE","detail":"server answered with a TSRequest errorCode","by":"server"}"#,
            ),
            (
                FailureKind::AuthFailure(AuthFailure {
                    ntstatus: Some(0xC0DE_0001),
                    detail: "d".into(),
                }),
                r#"{"status":"failed","kind":"auth_failure","ntstatus":3235774465,"name":null,"detail":"d","by":"server"}"#,
            ),
            (
                FailureKind::AuthFailure(AuthFailure::without_status("closed")),
                r#"{"status":"failed","kind":"auth_failure","ntstatus":null,"name":null,"detail":"closed","by":"server"}"#,
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(json(kind.clone()), want);
            let back: Verdict = serde_json::from_str(want).unwrap();
            assert_eq!(back.failure(), Some(&kind), "{want}");
        }
        assert_eq!(
            FailureKind::TlsAlert(TlsAlert::fatal(48)).to_string(),
            "TLS alert fatal unknown_ca (48)"
        );
        // A name written beside a code is rebuilt from the code, not trusted.
        let lying: Verdict = serde_json::from_str(
            r#"{"status":"failed","kind":"auth_failure","ntstatus":3221225581,"name":"STATUS_SUCCESS","detail":"d","by":"server"}"#,
        )
        .unwrap();
        assert_eq!(
            lying.to_string(),
            "authentication failure STATUS_LOGON_FAILURE (0xC000006D): d [server]"
        );
        assert_eq!(
            FailureKind::NegotiationFailure(NegFailure { code: 1 }).to_string(),
            "negotiation failure SSL_REQUIRED_BY_SERVER (0x00000001)"
        );
    }

    /// Names that do not read back as protocol values are refused, not guessed.
    #[test]
    fn unreadable_names_are_refused() {
        for bad in [
            r#"{"status":"failed","kind":"tls_alert","level":"loud","description":"x","code":1,"by":"server"}"#,
            r#"{"status":"failed","kind":"protocol_mismatch","requested":"NLA","selected":"PROTOCOL_RDP","by":"server"}"#,
            r#"{"status":"failed","kind":"negotiation_failure","name":"HYBRID_REQUIRED_BY_SERVER","by":"server"}"#,
        ] {
            assert!(serde_json::from_str::<Verdict>(bad).is_err(), "{bad}");
        }
    }
}
