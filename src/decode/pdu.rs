//! What a PDU is, as a type: [`PduKind`] is the identity the stage machine gives every PDU it frames
//! (X.224, MCS, share / security-layer, TLS records, CredSSP), with the small data that matters to the
//! modules reading it (the TLS alert, the handshake messages of a record, what a TSRequest carries).
//!
//! This file is the ONE place that turns a PDU into its display name (the `Display` impls below: the
//! strings of the report's `pdus` fact, "client: server hello, certificate"), and the one place that
//! reads those names back ([`PduKind::parse`], [`stage_pdus`]) for a report that exists only as JSON.
//! The stage machine, replay and diagnose match these enums, never the strings.

use std::fmt;

use crate::report::StageReport;
use crate::stage::{Side, Stage};

use super::credssp::NtlmMessageType;

/// One PDU as the stage machine identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PduKind {
    /// X.224 Connection Request (with its RDP_NEG_REQ).
    ConnectionRequest,
    /// X.224 Connection Confirm (RDP_NEG_RSP or none).
    ConnectionConfirm,
    /// X.224 Connection Confirm carrying RDP_NEG_FAILURE.
    NegotiationFailure,
    /// X.224 Disconnect Request.
    X224Disconnect,
    /// A TPKT whose X.224 TPDU could not be read.
    MalformedX224,
    /// A fast-path PDU (either direction).
    FastPath,
    /// MCS Connect-Initial (BER application tag 101).
    McsConnectInitial,
    /// MCS Connect-Response (BER application tag 102).
    McsConnectResponse,
    /// A T.125 domain PDU other than send data (whose payload is named instead).
    Domain(DomainKind),
    /// X.224 data that is no MCS PDU rdprobe reads.
    UnrecognizedMcs,
    /// A share / security-layer PDU carried in MCS send data.
    Share(ShareKind),
    /// MCS send data whose payload is none of the share PDUs.
    UnrecognizedData,
    /// A TLS handshake record before ChangeCipherSpec, with the messages it completed (empty: a
    /// fragment of a message that continues in the next record).
    TlsHandshake(Vec<HandshakeMsg>),
    /// An encrypted handshake record: after ChangeCipherSpec ("finished"), or TLS 1.3's encrypted
    /// flights travelling as application data (`finished`: the client's Finished).
    EncryptedHandshake {
        finished: bool,
    },
    ChangeCipherSpec,
    /// A cleartext TLS alert: level and description codes (RFC 8446 6).
    Alert {
        level: u8,
        description: u8,
    },
    /// An alert record after ChangeCipherSpec.
    EncryptedAlert,
    /// TLS application data read without the session's secrets.
    ApplicationData,
    /// A TLS record of an unexpected content type.
    TlsRecord(u8),
    /// A CredSSP TSRequest and what it carries.
    TsRequest(TsRequestParts),
    /// HYBRID_EX's Early User Authorization Result (MS-RDPBCGR 2.2.10.2).
    EarlyUserAuth {
        denied: bool,
    },
    /// A TSRequest that could not be read.
    MalformedTsRequest,
    /// A name rdprobe does not write (a report made elsewhere, read back from JSON).
    Other(String),
}

/// TLS handshake messages by type (RFC 8446 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeMsg {
    ClientHello,
    ServerHello,
    Certificate,
    ServerHelloDone,
    ClientKeyExchange,
    Finished,
    ServerKeyExchange,
    CertificateRequest,
    NewSessionTicket,
    /// Any other message type.
    Type(u8),
}

/// The negotiation token of a TSRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegoToken {
    Ntlm(NtlmKind),
    /// A token that is no NTLM message (Kerberos / SPNEGO without NTLMSSP).
    Other,
}

/// NTLM message types (MS-NLMP 2.2.1), as a `Copy` type for PDU identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NtlmKind {
    Negotiate,
    Challenge,
    Authenticate,
}

impl From<&NtlmMessageType> for NtlmKind {
    fn from(t: &NtlmMessageType) -> Self {
        match t {
            NtlmMessageType::Negotiate => NtlmKind::Negotiate,
            NtlmMessageType::Challenge => NtlmKind::Challenge,
            NtlmMessageType::Authenticate => NtlmKind::Authenticate,
        }
    }
}

/// What a TSRequest carries (MS-CSSP 2.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsRequestParts {
    pub token: Option<NegoToken>,
    pub pub_key_auth: bool,
    pub auth_info: bool,
    pub error_code: bool,
}

/// A field-less enum and `ALL`, its variants in declaration order (the one list of them).
macro_rules! unit_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
        }
    };
}

unit_enum! {
    /// T.125 domain PDUs (the ones rdprobe names).
    pub enum DomainKind {
        ErectDomainRequest,
        DisconnectProviderUltimatum,
        AttachUserRequest,
        AttachUserConfirm,
        ChannelJoinRequest,
        ChannelJoinConfirm,
        SendDataRequest,
        SendDataIndication,
    }
}

impl DomainKind {
    /// The display name (lowercase).
    pub fn name(self) -> &'static str {
        match self {
            DomainKind::ErectDomainRequest => "erect domain request",
            DomainKind::DisconnectProviderUltimatum => "disconnect provider ultimatum",
            DomainKind::AttachUserRequest => "attach user request",
            DomainKind::AttachUserConfirm => "attach user confirm",
            DomainKind::ChannelJoinRequest => "channel join request",
            DomainKind::ChannelJoinConfirm => "channel join confirm",
            DomainKind::SendDataRequest => "send data request",
            DomainKind::SendDataIndication => "send data indication",
        }
    }

    pub fn is_send_data(self) -> bool {
        matches!(
            self,
            DomainKind::SendDataRequest | DomainKind::SendDataIndication
        )
    }
}

unit_enum! {
    /// Share and security-layer PDUs (MS-RDPBCGR 2.2.8.1.1, 2.2.1.10-12, 2.2.14, 2.2.15) and the
    /// data PDUs by pduType2.
    pub enum ShareKind {
        // Security header PDUs.
        SecurityExchange,
        ClientInfo,
        ClientInfoEncrypted,
        LicensePduEncrypted,
        /// A PDU encrypted with standard RDP security (unreadable without the keys).
        Encrypted,
        AutoDetectRequest,
        AutoDetectResponse,
        MultitransportRequest,
        MultitransportResponse,
        Heartbeat,
        ServerRedirection,
        // Licensing (MS-RDPELE 2.2.2).
        ServerLicenseRequest,
        LicensePlatformChallenge,
        LicenseNewLicense,
        LicenseUpgradeLicense,
        ClientLicenseInfo,
        ClientNewLicenseRequest,
        LicensePlatformChallengeResponse,
        LicenseErrorAlert,
        // Share control PDUs.
        FlowControl,
        DemandActive,
        ConfirmActive,
        DeactivateAll,
        // Data PDUs by pduType2.
        Update,
        Control,
        Pointer,
        Input,
        Synchronize,
        RefreshRect,
        PlaySound,
        SuppressOutput,
        ShutdownRequest,
        ShutdownDenied,
        SaveSessionInfo,
        FontList,
        FontMap,
        SetKeyboardIndicators,
        BitmapCachePersistentList,
        BitmapCacheError,
        SetKeyboardImeStatus,
        OffscreenCacheError,
        SetErrorInfo,
        DrawNineGridCacheError,
        GdiPlusError,
        AutoReconnectStatus,
        StatusInfo,
        MonitorLayout,
        FrameAcknowledge,
        /// A data PDU of another pduType2 (the `pdu_type2` fact says which).
        OtherData,
    }
}

/// Where a share PDU puts the connection, before it is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShareStage {
    /// This stage.
    At(Stage),
    /// The current stage (PDUs that can come at any point: set error info, save session info).
    Current,
    /// At least the security stage.
    AfterSecurity,
}

impl ShareKind {
    /// The display name (lowercase).
    pub fn name(self) -> &'static str {
        use ShareKind::*;
        match self {
            SecurityExchange => "security exchange",
            ClientInfo => "client info",
            ClientInfoEncrypted => "client info (encrypted)",
            LicensePduEncrypted => "license pdu (encrypted)",
            Encrypted => "encrypted pdu",
            AutoDetectRequest => "auto-detect request",
            AutoDetectResponse => "auto-detect response",
            MultitransportRequest => "multitransport request",
            MultitransportResponse => "multitransport response",
            Heartbeat => "heartbeat",
            ServerRedirection => "server redirection",
            ServerLicenseRequest => "server license request",
            LicensePlatformChallenge => "license platform challenge",
            LicenseNewLicense => "license new license",
            LicenseUpgradeLicense => "license upgrade license",
            ClientLicenseInfo => "client license info",
            ClientNewLicenseRequest => "client new license request",
            LicensePlatformChallengeResponse => "license platform challenge response",
            LicenseErrorAlert => "license error alert",
            FlowControl => "flow control",
            DemandActive => "demand active",
            ConfirmActive => "confirm active",
            DeactivateAll => "deactivate all",
            Update => "update",
            Control => "control",
            Pointer => "pointer",
            Input => "input",
            Synchronize => "synchronize",
            RefreshRect => "refresh rect",
            PlaySound => "play sound",
            SuppressOutput => "suppress output",
            ShutdownRequest => "shutdown request",
            ShutdownDenied => "shutdown denied",
            SaveSessionInfo => "save session info",
            FontList => "font list",
            FontMap => "font map",
            SetKeyboardIndicators => "set keyboard indicators",
            BitmapCachePersistentList => "bitmap cache persistent list",
            BitmapCacheError => "bitmap cache error",
            SetKeyboardImeStatus => "set keyboard ime status",
            OffscreenCacheError => "offscreen cache error",
            SetErrorInfo => "set error info",
            DrawNineGridCacheError => "drawninegrid cache error",
            GdiPlusError => "gdi+ error",
            AutoReconnectStatus => "auto-reconnect status",
            StatusInfo => "status info",
            MonitorLayout => "monitor layout",
            FrameAcknowledge => "frame acknowledge",
            OtherData => "data pdu",
        }
    }

    fn stage_rule(self) -> ShareStage {
        use ShareKind::*;
        match self {
            SecurityExchange | ClientInfo | ClientInfoEncrypted => ShareStage::At(Stage::Security),
            LicensePduEncrypted
            | ServerLicenseRequest
            | LicensePlatformChallenge
            | LicenseNewLicense
            | LicenseUpgradeLicense
            | ClientLicenseInfo
            | ClientNewLicenseRequest
            | LicensePlatformChallengeResponse
            | LicenseErrorAlert
            | AutoDetectRequest
            | AutoDetectResponse
            | MultitransportRequest
            | MultitransportResponse => ShareStage::At(Stage::Licensing),
            // Flow control PDUs (MS-RDPBCGR 2.2.8.1.1.1.1 flow marker) are counted with the
            // capability exchange, as the share control PDUs around them.
            DemandActive | ConfirmActive | DeactivateAll | Synchronize | Control | FlowControl
            | FontList | FontMap | MonitorLayout => ShareStage::At(Stage::Capabilities),
            SetErrorInfo | SaveSessionInfo => ShareStage::Current,
            Encrypted
            | Heartbeat
            | ServerRedirection
            | Update
            | Pointer
            | Input
            | RefreshRect
            | PlaySound
            | SuppressOutput
            | ShutdownRequest
            | ShutdownDenied
            | SetKeyboardIndicators
            | BitmapCachePersistentList
            | BitmapCacheError
            | SetKeyboardImeStatus
            | OffscreenCacheError
            | DrawNineGridCacheError
            | GdiPlusError
            | AutoReconnectStatus
            | StatusInfo
            | FrameAcknowledge
            | OtherData => ShareStage::AfterSecurity,
        }
    }

    /// The stage this PDU belongs to when the connection is at `cur` (`connected`: every PDU
    /// after the connection came up is in the connected stage).
    pub fn stage(self, cur: Stage, connected: bool) -> Stage {
        if connected {
            return Stage::Connected;
        }
        match self.stage_rule() {
            ShareStage::At(s) => s,
            ShareStage::Current => cur,
            ShareStage::AfterSecurity => cur.max(Stage::Security),
        }
    }
}

impl HandshakeMsg {
    pub fn from_type(t: u8) -> HandshakeMsg {
        match t {
            1 => HandshakeMsg::ClientHello,
            2 => HandshakeMsg::ServerHello,
            4 => HandshakeMsg::NewSessionTicket,
            11 => HandshakeMsg::Certificate,
            12 => HandshakeMsg::ServerKeyExchange,
            13 => HandshakeMsg::CertificateRequest,
            14 => HandshakeMsg::ServerHelloDone,
            16 => HandshakeMsg::ClientKeyExchange,
            20 => HandshakeMsg::Finished,
            t => HandshakeMsg::Type(t),
        }
    }
}

impl HandshakeMsg {
    const NAMED: [HandshakeMsg; 9] = [
        HandshakeMsg::ClientHello,
        HandshakeMsg::ServerHello,
        HandshakeMsg::Certificate,
        HandshakeMsg::ServerHelloDone,
        HandshakeMsg::ClientKeyExchange,
        HandshakeMsg::Finished,
        HandshakeMsg::ServerKeyExchange,
        HandshakeMsg::CertificateRequest,
        HandshakeMsg::NewSessionTicket,
    ];

    /// The name of a message rdprobe names; `None` for [`HandshakeMsg::Type`].
    fn static_name(self) -> Option<&'static str> {
        Some(match self {
            HandshakeMsg::ClientHello => "client hello",
            HandshakeMsg::ServerHello => "server hello",
            HandshakeMsg::Certificate => "certificate",
            HandshakeMsg::ServerHelloDone => "server hello done",
            HandshakeMsg::ClientKeyExchange => "client key exchange",
            HandshakeMsg::Finished => "finished",
            HandshakeMsg::ServerKeyExchange => "server key exchange",
            HandshakeMsg::CertificateRequest => "certificate request",
            HandshakeMsg::NewSessionTicket => "new session ticket",
            HandshakeMsg::Type(_) => return None,
        })
    }
}

impl fmt::Display for HandshakeMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.static_name(), self) {
            (Some(n), _) => f.write_str(n),
            (None, HandshakeMsg::Type(t)) => write!(f, "handshake type {t}"),
            (None, _) => Ok(()),
        }
    }
}

impl fmt::Display for TsRequestParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = Vec::with_capacity(4);
        match self.token {
            Some(NegoToken::Ntlm(NtlmKind::Negotiate)) => parts.push("ntlm negotiate"),
            Some(NegoToken::Ntlm(NtlmKind::Challenge)) => parts.push("ntlm challenge"),
            Some(NegoToken::Ntlm(NtlmKind::Authenticate)) => parts.push("ntlm authenticate"),
            Some(NegoToken::Other) => parts.push("negotiation token"),
            None => {}
        }
        if self.pub_key_auth {
            parts.push("pubKeyAuth");
        }
        if self.auth_info {
            parts.push("authInfo (credentials)");
        }
        if self.error_code {
            parts.push("errorCode");
        }
        if parts.is_empty() {
            parts.push("ts request");
        }
        f.write_str(&parts.join(" + "))
    }
}

impl PduKind {
    /// The kinds whose name is fixed (no data in it), for reading names back.
    const FIXED: [PduKind; 18] = [
        PduKind::ConnectionRequest,
        PduKind::ConnectionConfirm,
        PduKind::NegotiationFailure,
        PduKind::X224Disconnect,
        PduKind::MalformedX224,
        PduKind::FastPath,
        PduKind::McsConnectInitial,
        PduKind::McsConnectResponse,
        PduKind::UnrecognizedMcs,
        PduKind::UnrecognizedData,
        PduKind::EncryptedHandshake { finished: true },
        PduKind::EncryptedHandshake { finished: false },
        PduKind::ChangeCipherSpec,
        PduKind::EncryptedAlert,
        PduKind::ApplicationData,
        PduKind::EarlyUserAuth { denied: false },
        PduKind::EarlyUserAuth { denied: true },
        PduKind::MalformedTsRequest,
    ];

    /// The name of a kind whose name carries no data.
    fn static_name(&self) -> Option<&'static str> {
        Some(match self {
            PduKind::ConnectionRequest => "connection request",
            PduKind::ConnectionConfirm => "connection confirm",
            PduKind::NegotiationFailure => "negotiation failure",
            PduKind::X224Disconnect => "x.224 disconnect request",
            PduKind::MalformedX224 => "malformed x.224",
            PduKind::FastPath => "fast-path update",
            PduKind::McsConnectInitial => "mcs connect initial",
            PduKind::McsConnectResponse => "mcs connect response",
            PduKind::Domain(d) => d.name(),
            PduKind::UnrecognizedMcs => "unrecognized mcs pdu",
            PduKind::Share(s) => s.name(),
            PduKind::UnrecognizedData => "unrecognized data pdu",
            PduKind::TlsHandshake(msgs) if msgs.is_empty() => "handshake",
            PduKind::EncryptedHandshake { finished: true } => "encrypted handshake (finished)",
            PduKind::EncryptedHandshake { finished: false } => "encrypted handshake",
            PduKind::ChangeCipherSpec => "change cipher spec",
            PduKind::EncryptedAlert => "encrypted alert",
            PduKind::ApplicationData => "application data (encrypted)",
            PduKind::EarlyUserAuth { denied: false } => "early user authorization result SUCCESS",
            PduKind::EarlyUserAuth { denied: true } => {
                "early user authorization result ACCESS_DENIED"
            }
            PduKind::MalformedTsRequest => "malformed ts request",
            PduKind::TlsHandshake(_)
            | PduKind::Alert { .. }
            | PduKind::TlsRecord(_)
            | PduKind::TsRequest(_)
            | PduKind::Other(_) => return None,
        })
    }
}

impl fmt::Display for PduKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.static_name() {
            return f.write_str(s);
        }
        match self {
            PduKind::TlsHandshake(msgs) => {
                for (i, m) in msgs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{m}")?;
                }
                Ok(())
            }
            PduKind::Alert { level, description } => {
                let alert = crate::stage::TlsAlert {
                    level: *level,
                    code: *description,
                };
                write!(f, "alert {} {}", alert.level_name(), alert.description())
            }
            PduKind::TlsRecord(ct) => write!(f, "record type {ct}"),
            PduKind::TsRequest(p) => write!(f, "{p}"),
            PduKind::Other(s) => f.write_str(s),
            _ => Ok(()),
        }
    }
}

impl PduKind {
    /// A cleartext TLS alert with this description code (any level).
    pub fn is_alert(&self, description: u8) -> bool {
        matches!(self, PduKind::Alert { description: d, .. } if *d == description)
    }

    /// A TLS alert, cleartext or encrypted.
    pub fn is_any_alert(&self) -> bool {
        matches!(self, PduKind::Alert { .. } | PduKind::EncryptedAlert)
    }

    /// A TSRequest carrying this NTLM message.
    pub fn is_ntlm(&self, kind: NtlmKind) -> bool {
        matches!(self, PduKind::TsRequest(TsRequestParts { token: Some(NegoToken::Ntlm(k)), .. }) if *k == kind)
    }

    /// A TSRequest carrying an errorCode.
    pub fn has_error_code(&self) -> bool {
        matches!(
            self,
            PduKind::TsRequest(TsRequestParts {
                error_code: true,
                ..
            })
        )
    }

    /// A TLS handshake record whose messages include `msg`.
    pub fn has_handshake(&self, msg: HandshakeMsg) -> bool {
        matches!(self, PduKind::TlsHandshake(msgs) if msgs.contains(&msg))
    }

    /// The handshake record that starts with the server's hello (its flight: "server hello,
    /// certificate, server hello done", or only "server hello done").
    pub fn starts_server_flight(&self) -> bool {
        matches!(self, PduKind::TlsHandshake(msgs)
            if matches!(msgs.first(), Some(HandshakeMsg::ServerHello | HandshakeMsg::ServerHelloDone)))
    }

    /// The name in a sentence: "ClientHello", "X.224 Connection Request", "ServerHello flight
    /// (server hello, certificate)", else the display name.
    pub fn pretty(&self) -> String {
        match self {
            PduKind::TlsHandshake(m) if m[..] == [HandshakeMsg::ClientHello] => {
                "ClientHello".to_owned()
            }
            PduKind::ConnectionRequest => "X.224 Connection Request".to_owned(),
            PduKind::ConnectionConfirm => "X.224 Connection Confirm".to_owned(),
            k if k.starts_server_flight() => format!("ServerHello flight ({k})"),
            k => k.to_string(),
        }
    }

    /// Reads a display name back (the inverse of `Display`); a name rdprobe does not write is
    /// kept as [`PduKind::Other`].
    pub fn parse(name: &str) -> PduKind {
        Self::parse_known(name).unwrap_or_else(|| PduKind::Other(name.to_owned()))
    }

    // Compares against the static names (no allocation per name read: diagnose reads the last PDUs
    // of every report analyze prints).
    fn parse_known(name: &str) -> Option<PduKind> {
        if name == "handshake" {
            return Some(PduKind::TlsHandshake(Vec::new()));
        }
        if let Some(k) = Self::FIXED.iter().find(|k| k.static_name() == Some(name)) {
            return Some(k.clone());
        }
        if let Some(&d) = DomainKind::ALL.iter().find(|d| d.name() == name) {
            return Some(PduKind::Domain(d));
        }
        if let Some(&s) = ShareKind::ALL.iter().find(|s| s.name() == name) {
            return Some(PduKind::Share(s));
        }
        if let Some(ct) = name.strip_prefix("record type ") {
            return ct.parse().ok().map(PduKind::TlsRecord);
        }
        if let Some(rest) = name.strip_prefix("alert ") {
            let (level, desc) = rest.split_once(' ')?;
            let level = crate::stage::TlsAlert::parse_level(level)?;
            // A named description ("unknown_ca" is one), else "unknown_N" for an unnamed code.
            let description = (0..=u8::MAX)
                .find(|&c| super::tls::alert_description_name(c) == Some(desc))
                .or_else(|| {
                    let c = desc.strip_prefix("unknown_")?.parse().ok()?;
                    super::tls::alert_description_name(c).is_none().then_some(c)
                })?;
            return Some(PduKind::Alert { level, description });
        }
        if let Some(msgs) = parse_handshakes(name) {
            return Some(PduKind::TlsHandshake(msgs));
        }
        parse_ts_request(name).map(PduKind::TsRequest)
    }
}

fn parse_handshakes(name: &str) -> Option<Vec<HandshakeMsg>> {
    name.split(", ")
        .map(|m| {
            if let Some(t) = m.strip_prefix("handshake type ") {
                return t.parse().ok().map(HandshakeMsg::Type);
            }
            HandshakeMsg::NAMED
                .into_iter()
                .find(|h| h.static_name() == Some(m))
        })
        .collect()
}

fn parse_ts_request(name: &str) -> Option<TsRequestParts> {
    let mut p = TsRequestParts::default();
    if name == "ts request" {
        return Some(p);
    }
    for part in name.split(" + ") {
        match part {
            "ntlm negotiate" if p.token.is_none() => {
                p.token = Some(NegoToken::Ntlm(NtlmKind::Negotiate))
            }
            "ntlm challenge" if p.token.is_none() => {
                p.token = Some(NegoToken::Ntlm(NtlmKind::Challenge))
            }
            "ntlm authenticate" if p.token.is_none() => {
                p.token = Some(NegoToken::Ntlm(NtlmKind::Authenticate))
            }
            "negotiation token" if p.token.is_none() => p.token = Some(NegoToken::Other),
            "pubKeyAuth" => p.pub_key_auth = true,
            "authInfo (credentials)" => p.auth_info = true,
            "errorCode" => p.error_code = true,
            _ => return None,
        }
    }
    Some(p)
}

/// One PDU of a stage: who sent it and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePdu {
    pub stage: Stage,
    pub side: Side,
    pub kind: PduKind,
}

/// The `pdus` fact entry of a PDU: "client: connection request".
pub fn pdu_entry(side: Side, kind: &PduKind) -> String {
    match kind.static_name() {
        // Most PDUs have a fixed name: joined without the formatting machinery (this runs for
        // every PDU listed in every report).
        Some(name) => [side.as_str(), ": ", name].concat(),
        None => format!("{side}: {kind}"),
    }
}

/// The PDUs of a stage read back from its `pdus` fact ("client: connection request"), in order
/// (read as they are taken: `.rev()` reads from the last): the one reader of those strings, for a
/// report that exists only as JSON. Entries without a side are skipped.
pub fn stage_pdus(s: &StageReport) -> impl DoubleEndedIterator<Item = StagePdu> + '_ {
    let list = match s.facts.get("pdus") {
        Some(serde_json::Value::Array(a)) => a.as_slice(),
        _ => &[],
    };
    list.iter().filter_map(|v| v.as_str()).filter_map(|p| {
        let (side, name) = if let Some(n) = p.strip_prefix("client: ") {
            (Side::Client, n)
        } else if let Some(n) = p.strip_prefix("server: ") {
            (Side::Server, n)
        } else {
            return None;
        };
        Some(StagePdu {
            stage: s.stage,
            side,
            kind: PduKind::parse(name),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind the machine writes, with data across its range.
    fn every_kind() -> Vec<PduKind> {
        let mut v = vec![
            PduKind::ConnectionRequest,
            PduKind::ConnectionConfirm,
            PduKind::NegotiationFailure,
            PduKind::X224Disconnect,
            PduKind::MalformedX224,
            PduKind::FastPath,
            PduKind::McsConnectInitial,
            PduKind::McsConnectResponse,
            PduKind::UnrecognizedMcs,
            PduKind::UnrecognizedData,
            PduKind::TlsHandshake(Vec::new()),
            PduKind::EncryptedHandshake { finished: true },
            PduKind::EncryptedHandshake { finished: false },
            PduKind::ChangeCipherSpec,
            PduKind::EncryptedAlert,
            PduKind::ApplicationData,
            PduKind::EarlyUserAuth { denied: false },
            PduKind::EarlyUserAuth { denied: true },
            PduKind::MalformedTsRequest,
        ];
        v.extend(DomainKind::ALL.iter().copied().map(PduKind::Domain));
        v.extend(ShareKind::ALL.iter().copied().map(PduKind::Share));
        v.extend((0..=u8::MAX).map(PduKind::TlsRecord));
        for level in [1, 2, 0, 7] {
            v.extend((0..=u8::MAX).map(|description| PduKind::Alert { level, description }));
        }
        let all_msgs: Vec<HandshakeMsg> = (0..=u8::MAX).map(HandshakeMsg::from_type).collect();
        v.extend(all_msgs.iter().map(|m| PduKind::TlsHandshake(vec![*m])));
        v.push(PduKind::TlsHandshake(vec![
            HandshakeMsg::ServerHello,
            HandshakeMsg::Certificate,
            HandshakeMsg::ServerHelloDone,
        ]));
        let tokens = [
            None,
            Some(NegoToken::Other),
            Some(NegoToken::Ntlm(NtlmKind::Negotiate)),
            Some(NegoToken::Ntlm(NtlmKind::Challenge)),
            Some(NegoToken::Ntlm(NtlmKind::Authenticate)),
        ];
        for token in tokens {
            for bits in 0..8u8 {
                v.push(PduKind::TsRequest(TsRequestParts {
                    token,
                    pub_key_auth: bits & 1 != 0,
                    auth_info: bits & 2 != 0,
                    error_code: bits & 4 != 0,
                }));
            }
        }
        v
    }

    #[test]
    fn every_name_reads_back_as_its_kind() {
        for k in every_kind() {
            let name = k.to_string();
            assert_eq!(PduKind::parse(&name), k, "{name}");
        }
    }

    #[test]
    fn names_are_todays_strings() {
        let cases = [
            (
                PduKind::TlsHandshake(vec![
                    HandshakeMsg::ServerHello,
                    HandshakeMsg::Certificate,
                    HandshakeMsg::ServerHelloDone,
                ]),
                "server hello, certificate, server hello done",
            ),
            (
                PduKind::Alert {
                    level: 2,
                    description: 40,
                },
                "alert fatal handshake_failure",
            ),
            (
                PduKind::Alert {
                    level: 1,
                    description: 0,
                },
                "alert warning close_notify",
            ),
            (
                PduKind::TsRequest(TsRequestParts {
                    token: Some(NegoToken::Ntlm(NtlmKind::Authenticate)),
                    pub_key_auth: true,
                    ..Default::default()
                }),
                "ntlm authenticate + pubKeyAuth",
            ),
            (PduKind::TsRequest(TsRequestParts::default()), "ts request"),
            (PduKind::Share(ShareKind::GdiPlusError), "gdi+ error"),
            (
                PduKind::TlsHandshake(vec![HandshakeMsg::Type(15)]),
                "handshake type 15",
            ),
        ];
        for (k, s) in cases {
            assert_eq!(k.to_string(), s);
        }
    }

    #[test]
    fn unknown_names_are_kept() {
        for s in [
            "",
            "hello",
            "alert fatal",
            "alert fatal nonsense",
            "ntlm challenge + ntlm negotiate",
        ] {
            assert_eq!(PduKind::parse(s), PduKind::Other(s.to_owned()));
            assert_eq!(PduKind::parse(s).to_string(), s);
        }
    }

    #[test]
    fn share_stages_before_and_after_connected() {
        use ShareKind::*;
        // "flow control" and "control" are both capability-exchange PDUs; "license error alert"
        // is licensing, "set error info" stays where the connection is.
        assert_eq!(
            FlowControl.stage(Stage::Security, false),
            Stage::Capabilities
        );
        assert_eq!(Control.stage(Stage::Licensing, false), Stage::Capabilities);
        assert_eq!(
            LicenseErrorAlert.stage(Stage::Security, false),
            Stage::Licensing
        );
        assert_eq!(
            ClientInfoEncrypted.stage(Stage::Channels, false),
            Stage::Security
        );
        assert_eq!(SetErrorInfo.stage(Stage::Channels, false), Stage::Channels);
        assert_eq!(Update.stage(Stage::Channels, false), Stage::Security);
        assert_eq!(
            Update.stage(Stage::Capabilities, false),
            Stage::Capabilities
        );
        assert_eq!(
            SecurityExchange.stage(Stage::Licensing, true),
            Stage::Connected
        );
    }
}
