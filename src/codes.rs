//! Every table of protocol names and codes, once: mstsc disconnect reasons, extended disconnect
//! reasons, RDP_NEG_FAILURE codes, CredSSP NTSTATUS codes, Set Error Info codes, and the one
//! security-protocol type ([`Protocol`]). Pure data and lookups, no I/O: decode names what it sees
//! here, `rdprobe explain` (diagnose) explains the rows that carry a meaning, scenarios and `check`
//! parse names here. NTSTATUS codes are only named here; their explanations are in
//! `diagnose::codes`, keyed by code.
//!
//! Sources (values and names are facts from these documents; the meanings are written for rdprobe):
//! * mstsc disconnect reasons: Microsoft's `IMsTscAxEvents::OnDisconnected` reference (the 32
//!   documented `disconnectReason*` values). The layout of the code (low byte = layer: 1 local,
//!   2 remote by user, 3 remote by server, 4 network layer, 6 security layer, 8 UI; high byte = the
//!   detail within that layer) and the undocumented codes below them come from the Terminal Services
//!   client's internal `tserrors.h` (NL_ERR_*, SL_ERR_*, UI_ERR_*) of the Windows Server 2003 era client
//!   source as mirrored in public repositories.
//! * Extended disconnect reasons: Microsoft's `ExtendedDisconnectReasonCode` enumeration (mstscax.idl).
//! * RDP_NEG_FAILURE: MS-RDPBCGR 2.2.1.2.2.
//! * Set Error Info: MS-RDPBCGR 2.2.5.1.1 (TS_SET_ERROR_INFO_PDU errorInfo); names as spelled by
//!   FreeRDP's `include/freerdp/error.h`, values cross-checked against IronRDP's `ServerSetErrorInfoPdu`.
//! * NTSTATUS: MS-ERREF 2.3 (NTSTATUS values) for the codes CredSSP servers put in TSRequest.errorCode
//!   (MS-CSSP 2.2.1), plus the SSPI `SEC_E_*` HRESULTs (MS-ERREF 2.1) some servers send there.
//!
//! On "0x904 with extended error 0x7": 0x904 is NL_ERR_TDFDCLOSE — Winsock reported FD_CLOSE, the
//! TCP connection was closed (FIN) or aborted (RST) under the client; the client maps an abortive
//! server close to the same code. The client's UI_OnDisconnected then makes what its own comment calls
//! "a very educated guess": if the socket closed while the connection was still pending and the server
//! had sent no Set Error Info, it sets the error info to TS_ERRINFO_SERVER_DENIED_CONNECTION (7)
//! itself (8 in FIPS mode). So "extended error 0x7" after 0x904 is not a code the server sent: it says
//! only that the socket died during connection setup (X.224, TLS, CredSSP), before any server error
//! report — which is exactly where rdprobe's stages tell the causes apart.

use crate::stage::Stage;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A security protocol of RDP_NEG_REQ / RDP_NEG_RSP (MS-RDPBCGR 2.2.1.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Protocol {
    /// PROTOCOL_RDP (0): standard RDP security.
    Rdp,
    /// PROTOCOL_SSL (1): TLS.
    Ssl,
    /// PROTOCOL_HYBRID (2): CredSSP (NLA).
    Hybrid,
    /// PROTOCOL_HYBRID_EX (8): CredSSP with the Early User Authorization Result PDU.
    HybridEx,
}

impl Protocol {
    /// Parses a protocol name as the command line and scenario files write it: `rdp`/`standard`,
    /// `ssl`/`tls`, `hybrid`/`nla`/`credssp`, `hybrid_ex` (`-` for `_`, any case, optional
    /// `protocol_` prefix).
    pub fn parse(s: &str) -> Option<Protocol> {
        let l = s.trim().to_ascii_lowercase().replace('-', "_");
        let l = l.strip_prefix("protocol_").unwrap_or(&l);
        match l {
            "rdp" | "standard" => Some(Protocol::Rdp),
            "ssl" | "tls" => Some(Protocol::Ssl),
            "hybrid" | "nla" | "credssp" => Some(Protocol::Hybrid),
            "hybrid_ex" | "hybridex" => Some(Protocol::HybridEx),
            _ => None,
        }
    }

    /// The same protocol as IronRDP's nego flag set.
    pub fn security_protocol(self) -> ironrdp_pdu::nego::SecurityProtocol {
        ironrdp_pdu::nego::SecurityProtocol::from_bits_retain(self.flag())
    }

    pub const ALL: [Protocol; 4] = [
        Protocol::Rdp,
        Protocol::Ssl,
        Protocol::Hybrid,
        Protocol::HybridEx,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rdp => "rdp",
            Protocol::Ssl => "ssl",
            Protocol::Hybrid => "hybrid",
            Protocol::HybridEx => "hybrid_ex",
        }
    }

    /// The RDP_NEG_REQ/RSP flag value (0 for PROTOCOL_RDP).
    pub fn flag(self) -> u32 {
        match self {
            Protocol::Rdp => 0,
            Protocol::Ssl => 1,
            Protocol::Hybrid => 2,
            Protocol::HybridEx => 8,
        }
    }

    /// TLS is used (everything but standard RDP security).
    pub fn uses_tls(self) -> bool {
        self != Protocol::Rdp
    }

    /// CredSSP is used.
    pub fn uses_credssp(self) -> bool {
        matches!(self, Protocol::Hybrid | Protocol::HybridEx)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Protocol {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Protocol::parse(&s).ok_or_else(|| {
            format!("unknown protocol `{s}`, expected one of rdp, ssl, hybrid, hybrid_ex")
        })
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> String {
        p.as_str().to_owned()
    }
}

/// One row of a code table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub code: u32,
    pub name: &'static str,
    /// The stage the code belongs to (where rdprobe would see the failure).
    pub stage: Stage,
    pub meaning: &'static str,
    /// The rdprobe command that tells the causes behind the code apart.
    pub command: &'static str,
}

const fn c(
    code: u32,
    name: &'static str,
    stage: Stage,
    meaning: &'static str,
    command: &'static str,
) -> Code {
    Code {
        code,
        name,
        stage,
        meaning,
        command,
    }
}

/// Commands that tell causes apart (HOST / USER are placeholders the user fills in).
pub const CMD_TCP: &str =
    "rdprobe probe HOST --stop-after tcp   (and again with the IP address instead of the name)";
pub const CMD_X224: &str = "rdprobe enum HOST";
pub const CMD_TLS: &str = "rdprobe probe HOST --stop-after tls --pcap out.pcapng";
pub const CMD_CREDSSP: &str =
    "rdprobe probe HOST --user USER --stop-after credssp --pcap out.pcapng";
pub const CMD_MCS: &str = "rdprobe probe HOST --stop-after mcs --pcap out.pcapng";
pub const CMD_FULL: &str = "rdprobe probe HOST --user USER --pcap out.pcapng";
pub const CMD_LICENSING: &str =
    "rdprobe probe HOST --user USER --stop-after licensing --pcap out.pcapng";
pub const CMD_PROBE: &str = "rdprobe probe HOST --pcap out.pcapng";
pub const CMD_LOCAL: &str =
    "rdprobe probe HOST   (from the same client; the code is the client's own)";

use Stage::{Capabilities, Channels, Connected, Credssp, Licensing, Mcs, Security, Tcp, Tls, X224};

/// mstsc disconnect reasons: the 32 documented `IMsTscAxEvents::OnDisconnected` values.
pub static MSTSC_DOCUMENTED: &[Code] = &[
    c(0x0, "disconnectReasonNoInfo", Connected, "no information is available", CMD_FULL),
    c(0x1, "disconnectReasonLocalNotError", Connected, "the client disconnected on purpose (not an error)", CMD_LOCAL),
    c(0x2, "disconnectReasonRemoteByUser", Connected, "the user disconnected on the server side (not an error)", CMD_FULL),
    c(0x3, "disconnectReasonByServer", Connected,
      "the server disconnected the session (not an error code by itself; the extended reason says why)", CMD_FULL),
    c(0x104, "disconnectReasonDNSLookupFailed", Tcp, "the server name did not resolve (DNS lookup failed)", CMD_TCP),
    c(0x106, "disconnectReasonOutOfMemory", Tcp, "the client ran out of memory (security layer)", CMD_LOCAL),
    c(0x108, "disconnectReasonConnectionTimedOut", Tcp,
      "the connection attempt timed out: no answer from the server in time (dropped SYN, host down, or a stall in setup)", CMD_TCP),
    c(0x204, "disconnectReasonSocketConnectFailed", Tcp,
      "the TCP connect failed: refused (nothing listening, Remote Desktop disabled, firewall reject) or unreachable", CMD_TCP),
    c(0x206, "disconnectReasonOutOfMemory2", Tcp, "the client ran out of memory (security layer)", CMD_LOCAL),
    c(0x208, "disconnectReasonHostNotFound", Tcp, "the host was not found (name resolution failed)", CMD_TCP),
    c(0x304, "disconnectReasonWinsockSendFailed", Tcp, "a Winsock send() failed: the connection broke while sending", CMD_PROBE),
    c(0x306, "disconnectReasonOutOfMemory3", Tcp, "the client ran out of memory (security layer)", CMD_LOCAL),
    c(0x308, "disconnectReasonInvalidIPAddr", Tcp, "the IP address given is not valid", CMD_TCP),
    c(0x404, "disconnectReasonSocketRecvFailed", Tls, "a Winsock recv() failed: the connection broke while reading", CMD_PROBE),
    c(0x406, "disconnectReasonInvalidSecurityData", Security, "the server's security data is not valid (standard RDP security)", CMD_MCS),
    c(0x408, "disconnectReasonInternalError", Connected, "internal error in the client", CMD_LOCAL),
    c(0x506, "disconnectReasonInvalidEncryption", Mcs,
      "the encryption method the server chose is not valid for the client (standard RDP security)", CMD_X224),
    c(0x508, "disconnectReasonDNSLookupFailed2", Tcp, "the server name did not resolve (DNS lookup failed)", CMD_TCP),
    c(0x604, "disconnectReasonGetHostByNameFailed", Tcp, "gethostbyname() failed: the server name did not resolve", CMD_TCP),
    c(0x606, "disconnectReasonInvalidServerSecurityInfo", Mcs, "the server security data (server random / certificate) is not valid", CMD_MCS),
    c(0x608, "disconnectReasonTimerError", Tcp, "internal timer error in the client", CMD_LOCAL),
    c(0x704, "disconnectReasonTimeoutOccurred", X224,
      "a timeout occurred during connection setup: the server stopped answering (loss, a dropping middlebox, a hung service)", CMD_TLS),
    c(0x706, "disconnectReasonServerCertificateUnpackErr", Mcs,
      "the client could not unpack the server's (proprietary or X.509) certificate in the server security data", CMD_MCS),
    c(0x804, "disconnectReasonInvalidIP", Tcp, "a bad IP address was specified", CMD_TCP),
    c(0x808, "disconnectReasonLicensingFailed", Licensing, "license negotiation failed", CMD_LICENSING),
    c(0x904, "disconnectReasonAtClientWinsockFDCLOSE", Tls,
      "socket closed: the TCP connection was closed (FIN) or reset (RST) under the client during connection setup or the \
       session. During setup it covers a firewall or IPS resetting the port, endpoint security killing the socket at the \
       TLS ClientHello, a server that cannot use its certificate or keys, a security-layer / NLA mismatch the server \
       answers with a close, packet loss, and a server denying the connection. rdprobe's verdict tells them apart: \
       refused or timed out at tcp = firewall or Remote Desktop off; RST right after the ClientHello with no TLS alert = \
       endpoint security or an IPS; FIN or handshake_failure right after the ClientHello = the server cannot use its \
       certificate or keys; RDP_NEG_FAILURE or a protocol mismatch at x224 = security-layer / NLA policy; a timeout \
       mid-stage = packet loss; an auth failure at credssp = credentials", CMD_TLS),
    c(0x906, "disconnectReasonInternalSecurityError", Security, "internal security error (encrypting the client random failed)", CMD_MCS),
    c(0x908, "disconnectReasonLicensingTimeout", Licensing, "licensing timed out", CMD_LICENSING),
    c(0xA06, "disconnectReasonInternalSecurityError2", Security, "internal security error (making the session keys failed)", CMD_MCS),
    c(0xB06, "disconnectReasonEncryptionError", Security, "encryption error (standard RDP security)", CMD_FULL),
    c(0xC06, "disconnectReasonDecryptionError", Security, "decryption error (standard RDP security): keys out of step or corrupt data", CMD_FULL),
    c(0xC08, "disconnectReasonClientDecompressionError", Connected, "the client failed to decompress server data", CMD_FULL),
];

/// mstsc disconnect reasons that the ActiveX documentation leaves out, from the client's `tserrors.h`.
pub static MSTSC_INTERNAL: &[Code] = &[
    c(
        0xA04,
        "NL_ERR_TDANSICONVERT",
        Tcp,
        "the server name could not be converted (illegal server name)",
        CMD_TCP,
    ),
    c(
        0x1104,
        "NL_ERR_XTBADTPKTVERSION",
        X224,
        "the server sent a TPKT with a bad version: not an RDP server on this port?",
        CMD_X224,
    ),
    c(
        0x1204,
        "NL_ERR_XTBADHEADER",
        X224,
        "the server sent an X.224 header the client does not recognise",
        CMD_X224,
    ),
    c(
        0x1304,
        "NL_ERR_XTUNEXPECTEDDATA",
        X224,
        "unexpected data after an X.224 data payload",
        CMD_PROBE,
    ),
    c(
        0x2104,
        "NL_ERR_MCSUNEXPECTEDPDU",
        Mcs,
        "unexpected MCS PDU from the server",
        CMD_MCS,
    ),
    c(
        0x2204,
        "NL_ERR_MCSNOTCRPDU",
        Mcs,
        "expected an MCS Connect Response, got something else",
        CMD_MCS,
    ),
    c(
        0x2304,
        "NL_ERR_MCSBADCRLENGTH",
        Mcs,
        "bad MCS Connect Response length",
        CMD_MCS,
    ),
    c(
        0x2404,
        "NL_ERR_MCSBADCRFIELDS",
        Mcs,
        "bad MCS Connect Response fields",
        CMD_MCS,
    ),
    c(
        0x2604,
        "NL_ERR_MCSBADMCSREASON",
        Channels,
        "bad MCS reason code in a Disconnect Provider Ultimatum",
        CMD_FULL,
    ),
    c(
        0x2704,
        "NL_ERR_MCSNOUSERIDINAUC",
        Channels,
        "no user id in the MCS Attach User Confirm",
        CMD_FULL,
    ),
    c(
        0x2804,
        "NL_ERR_MCSNOCHANNELIDINCJC",
        Channels,
        "no channel id in an MCS Channel Join Confirm",
        CMD_FULL,
    ),
    c(
        0x2904,
        "NL_ERR_MCSINVALIDPACKETFORMAT",
        Mcs,
        "invalid MCS packet format",
        CMD_FULL,
    ),
    c(
        0x3104,
        "NL_ERR_NCBADMCSRESULT",
        Mcs,
        "the MCS Connect Response carried a failure result: the server refused the conference",
        CMD_MCS,
    ),
    c(
        0x3304,
        "NL_ERR_NCNOUSERDATA",
        Mcs,
        "no user data in the GCC Conference Create Response",
        CMD_MCS,
    ),
    c(
        0x3404,
        "NL_ERR_NCINVALIDH221KEY",
        Mcs,
        "bad H.221 key in the GCC Conference Create Response",
        CMD_MCS,
    ),
    c(
        0x3504,
        "NL_ERR_NCNONETDATA",
        Mcs,
        "no network data in the server's GCC user data",
        CMD_MCS,
    ),
    c(
        0x3604,
        "NL_ERR_NCATTACHUSERFAILED",
        Channels,
        "MCS Attach User failed",
        CMD_FULL,
    ),
    c(
        0x3704,
        "NL_ERR_NCCHANNELJOINFAILED",
        Channels,
        "MCS Channel Join failed",
        CMD_FULL,
    ),
    c(
        0x3804,
        "NL_ERR_NCJOINBADCHANNEL",
        Channels,
        "joined an unexpected MCS channel",
        CMD_FULL,
    ),
    c(
        0x3904,
        "NL_ERR_NCNOCOREDATA",
        Mcs,
        "bad or missing server core data in the GCC user data",
        CMD_MCS,
    ),
    c(
        0x3A04,
        "NL_ERR_NCVERSIONMISMATCH",
        Mcs,
        "client and server RDP versions do not match",
        CMD_MCS,
    ),
    c(
        0x806,
        "SL_ERR_GENSRVRANDFAILED",
        Security,
        "the client failed to create its client random (standard RDP security)",
        CMD_LOCAL,
    ),
    c(
        0xD06,
        "SL_ERR_INVALIDPACKETFORMAT",
        Security,
        "invalid security-layer packet format",
        CMD_FULL,
    ),
    c(
        0xE06,
        "SL_ERR_INITFIPSFAILED",
        Security,
        "FIPS encryption could not be initialised on the client",
        CMD_LOCAL,
    ),
    c(
        0x708,
        "UI_ERR_LOOPBACK_CONSOLE_CONNECT",
        Tcp,
        "a connection to the console of the local machine was refused (loopback)",
        CMD_LOCAL,
    ),
    c(
        0xA08,
        "UI_ERR_UNEXPECTED_DISCONNECT",
        Connected,
        "unexpected disconnection",
        CMD_FULL,
    ),
    c(
        0xB08,
        "UI_ERR_NORMAL_DISCONNECT",
        Connected,
        "normal disconnection (not an error)",
        CMD_FULL,
    ),
];

/// ExtendedDisconnectReasonCode (mstscax.idl), without the protocol range 0x1000-0x7FFF, whose values
/// are the server's Set Error Info codes.
pub static EXTENDED_REASONS: &[Code] = &[
    c(0, "exDiscReasonNoInfo", Connected, "no additional information", CMD_FULL),
    c(1, "exDiscReasonAPIInitiatedDisconnect", Connected, "an application (or an administrative tool on the server) initiated the disconnection", CMD_FULL),
    c(2, "exDiscReasonAPIInitiatedLogoff", Connected, "an application logged the session off", CMD_FULL),
    c(3, "exDiscReasonServerIdleTimeout", Connected, "the server's idle session time limit elapsed", CMD_FULL),
    c(4, "exDiscReasonServerLogonTimeout", Connected, "the server's active session time limit elapsed", CMD_FULL),
    c(5, "exDiscReasonReplacedByOtherConnection", Connected, "another connection took over this session", CMD_FULL),
    c(6, "exDiscReasonOutOfMemory", Connected, "the server ran out of memory", CMD_FULL),
    c(7, "exDiscReasonServerDeniedConnection", Tls,
      "the server denied the connection. mstsc also sets this value itself (it was not sent by the server) when the socket \
       closes during connection setup before any Set Error Info: then it means only 'the connection died during X.224, \
       TLS or CredSSP', and rdprobe's stage verdict tells which", CMD_TLS),
    c(8, "exDiscReasonServerDeniedConnectionFips", Tls,
      "as 7, in FIPS mode: the server denied the connection, or the socket closed during setup without a server error report", CMD_TLS),
    c(9, "exDiscReasonServerInsufficientPrivileges", Security, "the user has no right to log on remotely", CMD_FULL),
    c(10, "exDiscReasonServerFreshCredsRequired", Security, "the server does not accept saved credentials: enter them again", CMD_FULL),
    c(11, "exDiscReasonRpcInitiatedDisconnectByUser", Connected, "an administrative tool disconnected the session from within it", CMD_FULL),
    c(12, "exDiscReasonLogoffByUser", Connected, "the user logged off", CMD_FULL),
    c(256, "exDiscReasonLicenseInternal", Licensing, "internal licensing error", CMD_LICENSING),
    c(257, "exDiscReasonLicenseNoLicenseServer", Licensing, "no license server could be found", CMD_LICENSING),
    c(258, "exDiscReasonLicenseNoLicense", Licensing, "no client access license is available", CMD_LICENSING),
    c(259, "exDiscReasonLicenseErrClientMsg", Licensing, "the server received an invalid licensing message", CMD_LICENSING),
    c(260, "exDiscReasonLicenseHwidDoesntMatchLicense", Licensing, "the stored license does not match the client's hardware id", CMD_LICENSING),
    c(261, "exDiscReasonLicenseErrClientLicense", Licensing, "the client's stored license is invalid", CMD_LICENSING),
    c(262, "exDiscReasonLicenseCantFinishProtocol", Licensing, "network problems ended the licensing protocol", CMD_LICENSING),
    c(263, "exDiscReasonLicenseClientEndedProtocol", Licensing, "the client ended the licensing protocol early", CMD_LICENSING),
    c(264, "exDiscReasonLicenseErrClientEncryption", Licensing, "a licensing message was incorrectly encrypted", CMD_LICENSING),
    c(265, "exDiscReasonLicenseCantUpgradeLicense", Licensing, "the client's license could not be upgraded or renewed", CMD_LICENSING),
    c(266, "exDiscReasonLicenseNoRemoteConnections", Licensing, "the server is not licensed to accept remote connections", CMD_LICENSING),
    c(267, "exDiscReasonLicenseCreatingLicStoreAccDenied", Licensing, "the client could not create its license store (access denied)", CMD_LOCAL),
    c(768, "exDiscReasonRdpEncInvalidCredentials", Credssp, "the credentials were rejected", CMD_CREDSSP),
    c(4096, "exDiscReasonProtocolRangeStart", Connected, "start of the protocol range: values 0x1000-0x7FFF are the server's Set Error Info codes", CMD_FULL),
    c(32767, "exDiscReasonProtocolRangeEnd", Connected, "end of the protocol range of Set Error Info codes", CMD_FULL),
];

/// RDP_NEG_FAILURE failureCode (MS-RDPBCGR 2.2.1.2.2).
pub static NEG_FAILURES: &[Code] = &[
    c(0x1, "SSL_REQUIRED_BY_SERVER", X224,
      "the server requires Enhanced RDP Security (TLS or CredSSP); if the client asked for CredSSP only, the server does TLS \
       but not CredSSP", CMD_X224),
    c(0x2, "SSL_NOT_ALLOWED_BY_SERVER", X224,
      "the server is set to standard RDP security only and accepts neither TLS nor CredSSP \
       (policy 'Require use of specific security layer for remote (RDP) connections' = RDP)", CMD_X224),
    c(0x3, "SSL_CERT_NOT_ON_SERVER", X224,
      "the server has no usable authentication certificate and cannot start TLS: its certificate is missing or its private \
       key cannot be read or created (MachineKeys permissions, often after cloning a VM)", CMD_X224),
    c(0x4, "INCONSISTENT_FLAGS", X224,
      "the requested protocols are inconsistent with the security protocol already in effect (typically on reconnection \
       after a server redirection)", CMD_X224),
    c(0x5, "HYBRID_REQUIRED_BY_SERVER", X224,
      "the server requires CredSSP / Network Level Authentication and the client did not offer it \
       (policy 'Require user authentication for remote connections by using Network Level Authentication')", CMD_X224),
    c(0x6, "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER", X224,
      "the server requires TLS with certificate-based client authentication", CMD_X224),
    // Not in the MS-RDPBCGR revision this table was checked against; decode::x224 reports it under
    // this name, so explain knows it too.
    c(0x7, "ENTRA_AUTH_REQUIRED_BY_SERVER", X224,
      "the server requires Microsoft Entra ID (RDS AAD) authentication (PROTOCOL_RDSAAD); not in older revisions of the spec", CMD_X224),
];

/// NTSTATUS (and SSPI HRESULT) names of the codes CredSSP servers put in TSRequest.errorCode
/// (MS-CSSP 2.2.1; MS-ERREF 2.3.1 and 2.1): the one table of these names. The first rows are the
/// ones `rdprobe explain` explains (`diagnose::codes::NTSTATUS`, keyed by code), then the set
/// FreeRDP's nla.c maps to client errors and what Windows servers send for policy and time problems.
pub const NTSTATUS_NAMES: &[(u32, &str)] = &[
    (0xC000006D, "STATUS_LOGON_FAILURE"),
    (0xC000006A, "STATUS_WRONG_PASSWORD"),
    (0xC0000064, "STATUS_NO_SUCH_USER"),
    (0xC000006E, "STATUS_ACCOUNT_RESTRICTION"),
    (0xC000006F, "STATUS_INVALID_LOGON_HOURS"),
    (0xC0000070, "STATUS_INVALID_WORKSTATION"),
    (0xC0000071, "STATUS_PASSWORD_EXPIRED"),
    (0xC0000072, "STATUS_ACCOUNT_DISABLED"),
    (0xC0000193, "STATUS_ACCOUNT_EXPIRED"),
    (0xC0000224, "STATUS_PASSWORD_MUST_CHANGE"),
    (0xC0000234, "STATUS_ACCOUNT_LOCKED_OUT"),
    (0xC000015B, "STATUS_LOGON_TYPE_NOT_GRANTED"),
    (0xC0000022, "STATUS_ACCESS_DENIED"),
    (0xC000005E, "STATUS_NO_LOGON_SERVERS"),
    (0xC0000133, "STATUS_TIME_DIFFERENCE_AT_DC"),
    (0xC000018B, "STATUS_NO_TRUST_SAM_ACCOUNT"),
    (0xC0000413, "STATUS_AUTHENTICATION_FIREWALL_FAILED"),
    (0xC0000380, "STATUS_SMARTCARD_WRONG_PIN"),
    (0x8009030C, "SEC_E_LOGON_DENIED"),
    (0x8009030E, "SEC_E_NO_CREDENTIALS"),
    (0x80090302, "SEC_E_UNSUPPORTED_FUNCTION"),
    (0x80090308, "SEC_E_INVALID_TOKEN"),
    (0x80090311, "SEC_E_NO_AUTHENTICATING_AUTHORITY"),
    (0x80090322, "SEC_E_WRONG_PRINCIPAL"),
    (0x00000000, "STATUS_SUCCESS"),
    (0x00090312, "SEC_I_CONTINUE_NEEDED"),
    (0x00090313, "SEC_I_COMPLETE_NEEDED"),
    (0x00090314, "SEC_I_COMPLETE_AND_CONTINUE"),
    (0x80090300, "SEC_E_INSUFFICIENT_MEMORY"),
    (0x80090301, "SEC_E_INVALID_HANDLE"),
    (0x80090303, "SEC_E_TARGET_UNKNOWN"),
    (0x80090304, "SEC_E_INTERNAL_ERROR"),
    (0x80090305, "SEC_E_SECPKG_NOT_FOUND"),
    (0x80090306, "SEC_E_NOT_OWNER"),
    (0x8009030A, "SEC_E_QOP_NOT_SUPPORTED"),
    (0x8009030B, "SEC_E_NO_IMPERSONATION"),
    (0x8009030D, "SEC_E_UNKNOWN_CREDENTIALS"),
    (0x8009030F, "SEC_E_MESSAGE_ALTERED"),
    (0x80090310, "SEC_E_OUT_OF_SEQUENCE"),
    (0x80090316, "SEC_E_BAD_PKGID"),
    (0x80090317, "SEC_E_CONTEXT_EXPIRED"),
    (0x80090318, "SEC_E_INCOMPLETE_MESSAGE"),
    (0x80090320, "SEC_E_INCOMPLETE_CREDENTIALS"),
    (0x80090321, "SEC_E_BUFFER_TOO_SMALL"),
    (0x80090324, "SEC_E_TIME_SKEW"),
    (0x80090325, "SEC_E_UNTRUSTED_ROOT"),
    (0x80090326, "SEC_E_ILLEGAL_MESSAGE"),
    (0x80090327, "SEC_E_CERT_UNKNOWN"),
    (0x80090328, "SEC_E_CERT_EXPIRED"),
    (0x80090329, "SEC_E_ENCRYPT_FAILURE"),
    (0x80090330, "SEC_E_DECRYPT_FAILURE"),
    (0x80090331, "SEC_E_ALGORITHM_MISMATCH"),
    (0x80090332, "SEC_E_SECURITY_QOS_FAILED"),
    (0x80090333, "SEC_E_UNFINISHED_CONTEXT_DELETED"),
    (0x80090334, "SEC_E_NO_TGT_REPLY"),
    (0x80090335, "SEC_E_NO_IP_ADDRESSES"),
    (0x80090336, "SEC_E_WRONG_CREDENTIAL_HANDLE"),
    (0x80090337, "SEC_E_CRYPTO_SYSTEM_INVALID"),
    (0x80090338, "SEC_E_MAX_REFERRALS_EXCEEDED"),
    (0x80090339, "SEC_E_MUST_BE_KDC"),
    (0x8009033A, "SEC_E_STRONG_CRYPTO_NOT_SUPPORTED"),
    (0x8009033B, "SEC_E_TOO_MANY_PRINCIPALS"),
    (0x8009033C, "SEC_E_NO_PA_DATA"),
    (0x8009033D, "SEC_E_PKINIT_NAME_MISMATCH"),
    (0x8009033E, "SEC_E_SMARTCARD_LOGON_REQUIRED"),
    (0x8009033F, "SEC_E_SHUTDOWN_IN_PROGRESS"),
    (0x80090340, "SEC_E_KDC_INVALID_REQUEST"),
    (0x80090341, "SEC_E_KDC_UNABLE_TO_REFER"),
    (0x80090342, "SEC_E_KDC_UNKNOWN_ETYPE"),
    (0x80090343, "SEC_E_UNSUPPORTED_PREAUTH"),
    (0x80090345, "SEC_E_DELEGATION_REQUIRED"),
    (0x80090346, "SEC_E_BAD_BINDINGS"),
    (0x80090347, "SEC_E_MULTIPLE_ACCOUNTS"),
    (0x80090348, "SEC_E_NO_KERB_KEY"),
    (0x80090349, "SEC_E_CERT_WRONG_USAGE"),
    (0x80090350, "SEC_E_DOWNGRADE_DETECTED"),
    (0x80090351, "SEC_E_SMARTCARD_CERT_REVOKED"),
    (0x80090352, "SEC_E_ISSUING_CA_UNTRUSTED"),
    (0x80090353, "SEC_E_REVOCATION_OFFLINE_C"),
    (0x80090354, "SEC_E_PKINIT_CLIENT_FAILURE"),
    (0x80090355, "SEC_E_SMARTCARD_CERT_EXPIRED"),
    (0x80090357, "SEC_E_NO_CONTEXT"),
    (0xC0000001, "STATUS_UNSUCCESSFUL"),
    (0xC000000D, "STATUS_INVALID_PARAMETER"),
    (0xC0000016, "STATUS_MORE_PROCESSING_REQUIRED"),
    (0xC000005F, "STATUS_NO_SUCH_LOGON_SESSION"),
    (0xC000006C, "STATUS_PASSWORD_RESTRICTION"),
    (0xC000009A, "STATUS_INSUFFICIENT_RESOURCES"),
    (0xC00000BB, "STATUS_NOT_SUPPORTED"),
    (0xC00000DF, "STATUS_NO_SUCH_DOMAIN"),
    (0xC00000E5, "STATUS_INTERNAL_ERROR"),
    (0xC000018C, "STATUS_TRUSTED_DOMAIN_FAILURE"),
    (0xC000018D, "STATUS_TRUSTED_RELATIONSHIP_FAILURE"),
    (0xC0000192, "STATUS_NETLOGON_NOT_STARTED"),
    (0xC0000203, "STATUS_USER_SESSION_DELETED"),
    (0xC0000233, "STATUS_DOMAIN_CONTROLLER_NOT_FOUND"),
    (0xC00002FA, "STATUS_SMARTCARD_LOGON_REQUIRED"),
    (0xC0000320, "STATUS_PKINIT_FAILURE"),
    (0xC0000388, "STATUS_DOWNGRADE_DETECTED"),
    (0xC000040E, "STATUS_KDC_CERT_EXPIRED"),
    (0xC0000418, "STATUS_NTLM_BLOCKED"),
];

/// Set Error Info errorInfo (MS-RDPBCGR 2.2.5.1.1).
pub static SET_ERROR_INFO: &[Code] = &[
    // Protocol-independent codes.
    c(0x0, "ERRINFO_NONE", Connected, "no error has occurred (the code is to be ignored)", CMD_FULL),
    c(0x1, "ERRINFO_RPC_INITIATED_DISCONNECT", Connected, "an administrative tool on the server, in another session, disconnected the session", CMD_FULL),
    c(0x2, "ERRINFO_RPC_INITIATED_LOGOFF", Connected, "an administrative tool on the server, in another session, forced a logoff", CMD_FULL),
    c(0x3, "ERRINFO_IDLE_TIMEOUT", Connected, "the server's idle session limit elapsed", CMD_FULL),
    c(0x4, "ERRINFO_LOGON_TIMEOUT", Connected, "the server's active session limit elapsed", CMD_FULL),
    c(0x5, "ERRINFO_DISCONNECTED_BY_OTHER_CONNECTION", Connected, "another user connected to the session and took it over", CMD_FULL),
    c(0x6, "ERRINFO_OUT_OF_MEMORY", Connected, "the server ran out of memory", CMD_FULL),
    c(0x7, "ERRINFO_SERVER_DENIED_CONNECTION", Security, "the server denied the connection", CMD_FULL),
    c(0x9, "ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES", Security, "the user has no right to connect to the server", CMD_FULL),
    c(0xA, "ERRINFO_SERVER_FRESH_CREDENTIALS_REQUIRED", Security,
      "the server does not accept saved credentials and requires them to be typed for each connection", CMD_FULL),
    c(0xB, "ERRINFO_RPC_INITIATED_DISCONNECT_BY_USER", Connected, "an administrative tool in the user's session disconnected it", CMD_FULL),
    c(0xC, "ERRINFO_LOGOFF_BY_USER", Connected, "the user logged off", CMD_FULL),
    c(0xF, "ERRINFO_CLOSE_STACK_ON_DRIVER_NOT_READY", Capabilities, "the remote session's display driver did not report ready in time", CMD_FULL),
    c(0x10, "ERRINFO_SERVER_DWM_CRASH", Connected, "the Desktop Window Manager in the remote session crashed", CMD_FULL),
    c(0x11, "ERRINFO_CLOSE_STACK_ON_DRIVER_FAILURE", Capabilities, "the remote session's display driver failed to start", CMD_FULL),
    c(0x12, "ERRINFO_CLOSE_STACK_ON_DRIVER_IFACE_FAILURE", Capabilities, "the remote session's display driver started but is unusable", CMD_FULL),
    c(0x17, "ERRINFO_SERVER_WINLOGON_CRASH", Connected, "Winlogon in the remote session crashed", CMD_FULL),
    c(0x18, "ERRINFO_SERVER_CSRSS_CRASH", Connected, "CSRSS in the remote session crashed", CMD_FULL),
    c(0x19, "ERRINFO_SERVER_SHUTDOWN", Connected, "the server is shutting down", CMD_FULL),
    c(0x1A, "ERRINFO_SERVER_REBOOT", Connected, "the server is rebooting", CMD_FULL),
    // Protocol-independent licensing codes.
    c(0x100, "ERRINFO_LICENSE_INTERNAL", Licensing, "internal error in the server's licensing component", CMD_LICENSING),
    c(0x101, "ERRINFO_LICENSE_NO_LICENSE_SERVER", Licensing, "no Remote Desktop license server could be found", CMD_LICENSING),
    c(0x102, "ERRINFO_LICENSE_NO_LICENSE", Licensing, "no client access licenses are available", CMD_LICENSING),
    c(0x103, "ERRINFO_LICENSE_BAD_CLIENT_MSG", Licensing, "the server received an invalid licensing message from the client", CMD_LICENSING),
    c(0x104, "ERRINFO_LICENSE_HWID_DOESNT_MATCH_LICENSE", Licensing, "the client's stored license has been modified", CMD_LICENSING),
    c(0x105, "ERRINFO_LICENSE_BAD_CLIENT_LICENSE", Licensing, "the client's stored license has an invalid format", CMD_LICENSING),
    c(0x106, "ERRINFO_LICENSE_CANT_FINISH_PROTOCOL", Licensing, "network problems ended the licensing protocol", CMD_LICENSING),
    c(0x107, "ERRINFO_LICENSE_CLIENT_ENDED_PROTOCOL", Licensing, "the client ended the licensing protocol early", CMD_LICENSING),
    c(0x108, "ERRINFO_LICENSE_BAD_CLIENT_ENCRYPTION", Licensing, "a licensing message was incorrectly encrypted", CMD_LICENSING),
    c(0x109, "ERRINFO_LICENSE_CANT_UPGRADE_LICENSE", Licensing, "the client's license could not be upgraded or renewed", CMD_LICENSING),
    c(0x10A, "ERRINFO_LICENSE_NO_REMOTE_CONNECTIONS", Licensing, "the server is not licensed to accept remote connections", CMD_LICENSING),
    // Protocol-independent codes generated by the Connection Broker.
    c(0x400, "ERRINFO_CB_DESTINATION_NOT_FOUND", Security, "the connection broker found no target endpoint", CMD_FULL),
    c(0x402, "ERRINFO_CB_LOADING_DESTINATION", Security, "the target endpoint is disconnecting from the broker", CMD_FULL),
    c(0x404, "ERRINFO_CB_REDIRECTING_TO_DESTINATION", Security, "redirection to the target endpoint failed", CMD_FULL),
    c(0x405, "ERRINFO_CB_SESSION_ONLINE_VM_WAKE", Security, "waking the target virtual machine failed", CMD_FULL),
    c(0x406, "ERRINFO_CB_SESSION_ONLINE_VM_BOOT", Security, "booting the target virtual machine failed", CMD_FULL),
    c(0x407, "ERRINFO_CB_SESSION_ONLINE_VM_NO_DNS", Security, "the target virtual machine's IP address could not be resolved", CMD_FULL),
    c(0x408, "ERRINFO_CB_DESTINATION_POOL_NOT_FREE", Security, "no free endpoint is left in the pool", CMD_FULL),
    c(0x409, "ERRINFO_CB_CONNECTION_CANCELLED", Security, "the connection was cancelled during brokering", CMD_FULL),
    c(0x410, "ERRINFO_CB_CONNECTION_ERROR_INVALID_SETTINGS", Security, "the brokering settings (e.g. the load-balance info) are invalid", CMD_FULL),
    c(0x411, "ERRINFO_CB_SESSION_ONLINE_VM_BOOT_TIMEOUT", Security, "the target virtual machine did not boot in time", CMD_FULL),
    c(0x412, "ERRINFO_CB_SESSION_ONLINE_VM_SESSMON_FAILED", Security, "session monitoring failed while starting the target virtual machine", CMD_FULL),
    // RDP specific codes.
    c(0x10C9, "ERRINFO_UNKNOWN_DATA_PDU_TYPE", Connected, "unknown pduType2 in a Share Data Header", CMD_FULL),
    c(0x10CA, "ERRINFO_UNKNOWN_PDU_TYPE", Connected, "unknown pduType in a Share Control Header", CMD_FULL),
    c(0x10CB, "ERRINFO_DATA_PDU_SEQUENCE", Capabilities, "an out-of-sequence slow-path data PDU was received", CMD_FULL),
    c(0x10CD, "ERRINFO_CONTROL_PDU_SEQUENCE", Capabilities, "an out-of-sequence slow-path non-data PDU was received", CMD_FULL),
    c(0x10CE, "ERRINFO_INVALID_CONTROL_PDU_ACTION", Capabilities, "a Control PDU with an invalid action was received", CMD_FULL),
    c(0x10CF, "ERRINFO_INVALID_INPUT_PDU_TYPE", Connected, "an input event with an invalid message type / event code was received", CMD_FULL),
    c(0x10D0, "ERRINFO_INVALID_INPUT_PDU_MOUSE", Connected, "a mouse event with invalid pointer flags was received", CMD_FULL),
    c(0x10D1, "ERRINFO_INVALID_REFRESH_RECT_PDU", Connected, "an invalid Refresh Rect PDU was received", CMD_FULL),
    c(0x10D2, "ERRINFO_CREATE_USER_DATA_FAILED", Mcs, "the server failed to build the GCC Conference Create Response user data", CMD_MCS),
    c(0x10D3, "ERRINFO_CONNECT_FAILED", Channels, "the channel connection phase failed", CMD_FULL),
    c(0x10D4, "ERRINFO_CONFIRM_ACTIVE_HAS_WRONG_SHAREID", Capabilities, "a Confirm Active PDU carried a wrong shareId", CMD_FULL),
    c(0x10D5, "ERRINFO_CONFIRM_ACTIVE_HAS_WRONG_ORIGINATOR", Capabilities, "a Confirm Active PDU carried a wrong originatorId", CMD_FULL),
    c(0x10DA, "ERRINFO_PERSISTENT_KEY_PDU_BAD_LENGTH", Capabilities, "a Persistent Key List PDU is too short", CMD_FULL),
    c(0x10DB, "ERRINFO_PERSISTENT_KEY_PDU_ILLEGAL_FIRST", Capabilities, "a second Persistent Key List PDU was marked as the first", CMD_FULL),
    c(0x10DC, "ERRINFO_PERSISTENT_KEY_PDU_TOO_MANY_TOTAL_KEYS", Capabilities, "a Persistent Key List PDU announced more than 262144 entries", CMD_FULL),
    c(0x10DD, "ERRINFO_PERSISTENT_KEY_PDU_TOO_MANY_CACHE_KEYS", Capabilities, "a Persistent Key List PDU announced too many keys for a bitmap cache", CMD_FULL),
    c(0x10DE, "ERRINFO_INPUT_PDU_BAD_LENGTH", Connected, "an input PDU is too short", CMD_FULL),
    c(0x10DF, "ERRINFO_BITMAP_CACHE_ERROR_PDU_BAD_LENGTH", Connected, "a Bitmap Cache Error PDU is too short", CMD_FULL),
    c(0x10E0, "ERRINFO_SECURITY_DATA_TOO_SHORT", Connected, "a fast-path input PDU's signature / FIPS fields are too short", CMD_FULL),
    c(0x10E1, "ERRINFO_VCHANNEL_DATA_TOO_SHORT", Mcs, "the client network data or a channel PDU header is too short", CMD_MCS),
    c(0x10E2, "ERRINFO_SHARE_DATA_TOO_SHORT", Capabilities, "a Control, Share Control / Data header or Font List PDU is too short", CMD_FULL),
    c(0x10E3, "ERRINFO_BAD_SUPPRESS_OUTPUT_PDU", Connected, "an invalid Suppress Output PDU was received", CMD_FULL),
    c(0x10E5, "ERRINFO_CONFIRM_ACTIVE_PDU_TOO_SHORT", Capabilities, "a Confirm Active PDU is too short", CMD_FULL),
    c(0x10E7, "ERRINFO_CAPABILITY_SET_TOO_SMALL", Capabilities, "a capability set is too short to read its type and length", CMD_FULL),
    c(0x10E8, "ERRINFO_CAPABILITY_SET_TOO_LARGE", Capabilities, "a capability set is longer than the data received", CMD_FULL),
    c(0x10E9, "ERRINFO_NO_CURSOR_CACHE", Capabilities, "the client announced no pointer cache", CMD_FULL),
    c(0x10EA, "ERRINFO_BAD_CAPABILITIES", Capabilities, "the server did not accept the client's capabilities", CMD_FULL),
    c(0x10EC, "ERRINFO_VIRTUAL_CHANNEL_DECOMPRESSION", Connected, "decompressing a virtual channel PDU failed", CMD_FULL),
    c(0x10ED, "ERRINFO_INVALID_VC_COMPRESSION_TYPE", Connected, "a channel PDU named an invalid compression package", CMD_FULL),
    c(0x10EF, "ERRINFO_INVALID_CHANNEL_ID", Connected, "a virtual channel PDU named an invalid MCS channel", CMD_FULL),
    c(0x10F0, "ERRINFO_VCHANNELS_TOO_MANY", Mcs, "the client requested more than 31 static virtual channels", CMD_MCS),
    c(0x10F3, "ERRINFO_REMOTEAPP_NOT_ENABLED", Security, "the server hosts only RemoteApp programs and the client did not ask for RAIL", CMD_FULL),
    c(0x10F4, "ERRINFO_CACHE_CAP_NOT_SET", Capabilities, "Persistent Key List without the revision 2 bitmap cache capability", CMD_FULL),
    c(0x10F5, "ERRINFO_BITMAP_CACHE_ERROR_PDU_BAD_LENGTH2", Connected, "a Bitmap Cache Error PDU's block count does not match its data", CMD_FULL),
    c(0x10F6, "ERRINFO_OFFSCREEN_CACHE_ERROR_PDU_BAD_LENGTH", Connected, "an Offscreen Bitmap Cache Error PDU is too short", CMD_FULL),
    c(0x10F7, "ERRINFO_DRAWNINEGRID_CACHE_ERROR_PDU_BAD_LENGTH", Connected, "a DrawNineGrid Cache Error PDU is too short", CMD_FULL),
    c(0x10F8, "ERRINFO_GDIPLUS_PDU_BAD_LENGTH", Connected, "a GDI+ Error PDU is too short", CMD_FULL),
    c(0x1111, "ERRINFO_SECURITY_DATA_TOO_SHORT2", Security, "a Basic Security Header is too short", CMD_FULL),
    c(0x1112, "ERRINFO_SECURITY_DATA_TOO_SHORT3", Security, "a Non-FIPS or FIPS Security Header is too short", CMD_FULL),
    c(0x1113, "ERRINFO_SECURITY_DATA_TOO_SHORT4", Security, "the Security Exchange PDU is too short", CMD_FULL),
    c(0x1114, "ERRINFO_SECURITY_DATA_TOO_SHORT5", Security, "the Info Packet is too short for its strings", CMD_FULL),
    c(0x1115, "ERRINFO_SECURITY_DATA_TOO_SHORT6", Security, "the Info Packet is too short for its length fields", CMD_FULL),
    c(0x1116, "ERRINFO_SECURITY_DATA_TOO_SHORT7", Security, "the Extended Info Packet is too short (client address family / length)", CMD_FULL),
    c(0x1117, "ERRINFO_SECURITY_DATA_TOO_SHORT8", Security, "the Extended Info Packet is too short (client address)", CMD_FULL),
    c(0x1118, "ERRINFO_SECURITY_DATA_TOO_SHORT9", Security, "the Extended Info Packet is too short (cbClientDir)", CMD_FULL),
    c(0x1119, "ERRINFO_SECURITY_DATA_TOO_SHORT10", Security, "the Extended Info Packet is too short (clientDir)", CMD_FULL),
    c(0x111A, "ERRINFO_SECURITY_DATA_TOO_SHORT11", Security, "the Extended Info Packet is too short (clientTimeZone)", CMD_FULL),
    c(0x111B, "ERRINFO_SECURITY_DATA_TOO_SHORT12", Security, "the Extended Info Packet is too short (clientSessionId)", CMD_FULL),
    c(0x111C, "ERRINFO_SECURITY_DATA_TOO_SHORT13", Security, "the Extended Info Packet is too short (performanceFlags)", CMD_FULL),
    c(0x111D, "ERRINFO_SECURITY_DATA_TOO_SHORT14", Security, "the Extended Info Packet is too short (cbAutoReconnectLen)", CMD_FULL),
    c(0x111E, "ERRINFO_SECURITY_DATA_TOO_SHORT15", Security, "the Extended Info Packet is too short (autoReconnectCookie)", CMD_FULL),
    c(0x111F, "ERRINFO_SECURITY_DATA_TOO_SHORT16", Security, "the auto-reconnect cookie is longer than 128 bytes", CMD_FULL),
    c(0x1120, "ERRINFO_SECURITY_DATA_TOO_SHORT17", Security, "the Extended Info Packet is too short (client address family / length)", CMD_FULL),
    c(0x1121, "ERRINFO_SECURITY_DATA_TOO_SHORT18", Security, "the Extended Info Packet is too short (client address)", CMD_FULL),
    c(0x1122, "ERRINFO_SECURITY_DATA_TOO_SHORT19", Security, "the Extended Info Packet is too short (cbClientDir)", CMD_FULL),
    c(0x1123, "ERRINFO_SECURITY_DATA_TOO_SHORT20", Security, "the Extended Info Packet is too short (clientDir)", CMD_FULL),
    c(0x1124, "ERRINFO_SECURITY_DATA_TOO_SHORT21", Security, "the Extended Info Packet is too short (clientTimeZone)", CMD_FULL),
    c(0x1125, "ERRINFO_SECURITY_DATA_TOO_SHORT22", Security, "the Extended Info Packet is too short (clientSessionId)", CMD_FULL),
    c(0x1126, "ERRINFO_SECURITY_DATA_TOO_SHORT23", Security, "the Client Info PDU is too short", CMD_FULL),
    c(0x1129, "ERRINFO_BAD_MONITOR_DATA", Mcs, "the client monitor data is invalid", CMD_MCS),
    c(0x112A, "ERRINFO_VC_DECOMPRESSED_REASSEMBLE_FAILED", Connected, "reassembling decompressed virtual channel data failed", CMD_FULL),
    c(0x112B, "ERRINFO_VC_DATA_TOO_LONG", Connected, "a virtual channel's data is too long", CMD_FULL),
    c(0x112C, "ERRINFO_BAD_FRAME_ACK_DATA", Connected, "a Frame Acknowledge PDU is too short", CMD_FULL),
    c(0x112D, "ERRINFO_GRAPHICS_MODE_NOT_SUPPORTED", Capabilities, "the graphics mode the client asked for is not supported", CMD_FULL),
    c(0x112E, "ERRINFO_GRAPHICS_SUBSYSTEM_RESET_FAILED", Connected, "the server's graphics subsystem failed to reset", CMD_FULL),
    c(0x112F, "ERRINFO_GRAPHICS_SUBSYSTEM_FAILED", Connected, "the server's graphics subsystem is in an error state (often GPU / driver trouble)", CMD_FULL),
    c(0x1130, "ERRINFO_TIMEZONE_KEY_NAME_LENGTH_TOO_SHORT", Security, "the time zone key name in the Extended Info Packet is too short", CMD_FULL),
    c(0x1131, "ERRINFO_TIMEZONE_KEY_NAME_LENGTH_TOO_LONG", Security, "the time zone key name in the Extended Info Packet is too long", CMD_FULL),
    c(0x1132, "ERRINFO_DYNAMIC_DST_DISABLED_FIELD_MISSING", Security, "the dynamic DST disabled field is missing from the Extended Info Packet", CMD_FULL),
    c(0x1133, "ERRINFO_VC_DECODING_ERROR", Connected, "decoding dynamic virtual channel data failed", CMD_FULL),
    c(0x1134, "ERRINFO_VIRTUALDESKTOPTOOLARGE", Mcs, "the virtual desktop the client asked for is too large", CMD_MCS),
    c(0x1135, "ERRINFO_MONITORGEOMETRYVALIDATIONFAILED", Mcs, "the client's monitor layout failed validation", CMD_MCS),
    c(0x1136, "ERRINFO_INVALIDMONITORCOUNT", Mcs, "the client announced too many monitors", CMD_MCS),
    c(0x1191, "ERRINFO_UPDATE_SESSION_KEY_FAILED", Security, "updating the session keys failed (standard RDP security)", CMD_FULL),
    c(0x1192, "ERRINFO_DECRYPT_FAILED", Security, "decryption failed (standard RDP security) or the MAC did not match", CMD_FULL),
    c(0x1193, "ERRINFO_ENCRYPT_FAILED", Security, "encryption failed (standard RDP security)", CMD_FULL),
    c(0x1194, "ERRINFO_ENCRYPTION_PACKAGE_MISMATCH", Security, "no common encryption method (client and server encryption methods do not match)", CMD_X224),
    c(0x1195, "ERRINFO_DECRYPT_FAILED2", Security, "decryption failed: unencrypted data arrived where encryption was expected", CMD_FULL),
];

impl Code {
    /// The row has a meaning written for `rdprobe explain` (rows with only a name do not).
    pub fn is_explained(&self) -> bool {
        !self.meaning.is_empty()
    }
}

/// Finds `code` in `table` (named and explained rows alike).
pub fn find(table: &'static [Code], code: u32) -> Option<&'static Code> {
    table.iter().find(|e| e.code == code)
}

/// Finds an entry by name (case-insensitive) in `table`.
pub fn find_name(table: &'static [Code], name: &str) -> Option<&'static Code> {
    table.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

/// Name of an NTSTATUS code seen in CredSSP errorCode, e.g. 0xC000006D -> "STATUS_LOGON_FAILURE".
/// Also names the SSPI HRESULTs (SEC_E_*) some servers put there. A `const fn`, so that the
/// explanations of `diagnose::codes` take their names from [`NTSTATUS_NAMES`] when compiled.
pub const fn ntstatus_name(code: u32) -> Option<&'static str> {
    let mut i = 0;
    while i < NTSTATUS_NAMES.len() {
        if NTSTATUS_NAMES[i].0 == code {
            return Some(NTSTATUS_NAMES[i].1);
        }
        i += 1;
    }
    None
}

/// The code of an NTSTATUS (or SEC_E_*) name, case-insensitive: the inverse of [`ntstatus_name`].
pub fn ntstatus_code(name: &str) -> Option<u32> {
    let name = name.trim();
    NTSTATUS_NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(c, _)| *c)
}

/// Name of an RDP_NEG_FAILURE code (MS-RDPBCGR 2.2.1.2.2), if known.
pub fn neg_failure_name(code: u32) -> Option<&'static str> {
    find(NEG_FAILURES, code).map(|e| e.name)
}

/// The code of an RDP_NEG_FAILURE name, case-insensitive.
pub fn neg_failure_code(name: &str) -> Option<u32> {
    find_name(NEG_FAILURES, name.trim()).map(|e| e.code)
}

/// The MS-RDPBCGR spelling of the Set Error Info names where it differs from FreeRDP's (the
/// spelling of [`SET_ERROR_INFO`], which `explain` shows). decode reports the spec's spelling.
pub static SET_ERROR_INFO_SPEC_SPELLING: &[(u32, &str)] = &[
    (0x5, "ERRINFO_DISCONNECTED_BY_OTHERCONNECTION"),
    (0xB, "ERRINFO_RPC_INITIATED_DISCONNECT_BYUSER"),
    (0x10C9, "ERRINFO_UNKNOWNPDUTYPE2"),
    (0x10CA, "ERRINFO_UNKNOWNPDUTYPE"),
    (0x10CB, "ERRINFO_DATAPDUSEQUENCE"),
    (0x10CD, "ERRINFO_CONTROLPDUSEQUENCE"),
    (0x10CE, "ERRINFO_INVALIDCONTROLPDUACTION"),
    (0x10CF, "ERRINFO_INVALIDINPUTPDUTYPE"),
    (0x10D0, "ERRINFO_INVALIDINPUTPDUMOUSE"),
    (0x10D1, "ERRINFO_INVALIDREFRESHRECTPDU"),
    (0x10D2, "ERRINFO_CREATEUSERDATAFAILED"),
    (0x10D3, "ERRINFO_CONNECTFAILED"),
    (0x10D4, "ERRINFO_CONFIRMACTIVEWRONGSHAREID"),
    (0x10D5, "ERRINFO_CONFIRMACTIVEWRONGORIGINATOR"),
    (0x10DA, "ERRINFO_PERSISTENTKEYPDUBADLENGTH"),
    (0x10DB, "ERRINFO_PERSISTENTKEYPDUILLEGALFIRST"),
    (0x10DC, "ERRINFO_PERSISTENTKEYPDUTOOMANYTOTALKEYS"),
    (0x10DD, "ERRINFO_PERSISTENTKEYPDUTOOMANYCACHEKEYS"),
    (0x10DE, "ERRINFO_INPUTPDUBADLENGTH"),
    (0x10DF, "ERRINFO_BITMAPCACHEERRORPDUBADLENGTH"),
    (0x10E0, "ERRINFO_SECURITYDATATOOSHORT"),
    (0x10E1, "ERRINFO_VCHANNELDATATOOSHORT"),
    (0x10E2, "ERRINFO_SHAREDATATOOSHORT"),
    (0x10E3, "ERRINFO_BADSUPRESSOUTPUTPDU"),
    (0x10E5, "ERRINFO_CONFIRMACTIVEPDUTOOSHORT"),
    (0x10E7, "ERRINFO_CAPABILITYSETTOOSMALL"),
    (0x10E8, "ERRINFO_CAPABILITYSETTOOLARGE"),
    (0x10E9, "ERRINFO_NOCURSORCACHE"),
    (0x10EA, "ERRINFO_BADCAPABILITIES"),
    (0x10EC, "ERRINFO_VIRTUALCHANNELDECOMPRESSIONERR"),
    (0x10ED, "ERRINFO_INVALIDVCCOMPRESSIONTYPE"),
    (0x10EF, "ERRINFO_INVALIDCHANNELID"),
    (0x10F0, "ERRINFO_VCHANNELSTOOMANY"),
    (0x10F3, "ERRINFO_REMOTEAPPSNOTENABLED"),
    (0x10F4, "ERRINFO_CACHECAPNOTSET"),
    (0x10F5, "ERRINFO_BITMAPCACHEERRORPDUBADLENGTH2"),
    (0x10F6, "ERRINFO_OFFSCRCACHEERRORPDUBADLENGTH"),
    (0x10F7, "ERRINFO_DNGCACHEERRORPDUBADLENGTH"),
    (0x10F8, "ERRINFO_GDIPLUSPDUBADLENGTH"),
    (0x1111, "ERRINFO_SECURITYDATATOOSHORT2"),
    (0x1112, "ERRINFO_SECURITYDATATOOSHORT3"),
    (0x1113, "ERRINFO_SECURITYDATATOOSHORT4"),
    (0x1114, "ERRINFO_SECURITYDATATOOSHORT5"),
    (0x1115, "ERRINFO_SECURITYDATATOOSHORT6"),
    (0x1116, "ERRINFO_SECURITYDATATOOSHORT7"),
    (0x1117, "ERRINFO_SECURITYDATATOOSHORT8"),
    (0x1118, "ERRINFO_SECURITYDATATOOSHORT9"),
    (0x1119, "ERRINFO_SECURITYDATATOOSHORT10"),
    (0x111A, "ERRINFO_SECURITYDATATOOSHORT11"),
    (0x111B, "ERRINFO_SECURITYDATATOOSHORT12"),
    (0x111C, "ERRINFO_SECURITYDATATOOSHORT13"),
    (0x111D, "ERRINFO_SECURITYDATATOOSHORT14"),
    (0x111E, "ERRINFO_SECURITYDATATOOSHORT15"),
    (0x111F, "ERRINFO_SECURITYDATATOOSHORT16"),
    (0x1120, "ERRINFO_SECURITYDATATOOSHORT17"),
    (0x1121, "ERRINFO_SECURITYDATATOOSHORT18"),
    (0x1122, "ERRINFO_SECURITYDATATOOSHORT19"),
    (0x1123, "ERRINFO_SECURITYDATATOOSHORT20"),
    (0x1124, "ERRINFO_SECURITYDATATOOSHORT21"),
    (0x1125, "ERRINFO_SECURITYDATATOOSHORT22"),
    (0x1126, "ERRINFO_SECURITYDATATOOSHORT23"),
    (0x1129, "ERRINFO_BADMONITORDATA"),
    (0x112A, "ERRINFO_VCDECOMPRESSEDREASSEMBLEFAILED"),
    (0x112B, "ERRINFO_VCDATATOOLONG"),
    (0x112D, "ERRINFO_GRAPHICSMODENOTSUPPORTED"),
    (0x112E, "ERRINFO_GRAPHICSSUBSYSTEMRESETFAILED"),
    (0x112F, "ERRINFO_GRAPHICSSUBSYSTEMFAILED"),
    (0x1130, "ERRINFO_TIMEZONEKEYNAMELENGTHTOOSHORT"),
    (0x1131, "ERRINFO_TIMEZONEKEYNAMELENGTHTOOLONG"),
    (0x1132, "ERRINFO_DYNAMICDSTDISABLEDFIELDMISSING"),
    (0x1133, "ERRINFO_VCDECODINGERROR"),
    (0x1191, "ERRINFO_UPDATESESSIONKEYFAILED"),
    (0x1192, "ERRINFO_DECRYPTFAILED"),
    (0x1193, "ERRINFO_ENCRYPTFAILED"),
    (0x1194, "ERRINFO_ENCPKGMISMATCH"),
    (0x1195, "ERRINFO_DECRYPTFAILED2"),
];

/// Name of a Set Error Info errorInfo (MS-RDPBCGR 2.2.5.1.1) as the spec spells it: the spelling
/// decode reports in its facts.
pub fn error_info_name(code: u32) -> Option<&'static str> {
    SET_ERROR_INFO_SPEC_SPELLING
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .or_else(|| find(SET_ERROR_INFO, code).map(|e| e.name))
}

/// The command that shows a gateway HRESULT at its step.
pub const CMD_GATEWAY: &str =
    "rdprobe probe HOST --gateway GW --user USER --diagnose   (and rdprobe enum GW --gateway)";

/// RD Gateway HRESULTs (MS-TSGU 2.2.3.1 / 2.2.3.2: HRESULT_FROM_WIN32 of the E_PROXY_* codes), as the
/// tunnel, tunnel authorization and channel responses carry them.
pub static GATEWAY_HRESULTS: &[Code] = &[
    c(0x8007_59D8, "E_PROXY_INTERNALERROR", Stage::GwTunnel, "internal error of the RD Gateway; its TerminalServices-Gateway event log has the reason", CMD_GATEWAY),
    c(0x8007_59DA, "E_PROXY_RAP_ACCESSDENIED", Stage::GwChannel, "a resource authorization policy (RD RAP) does not let this user reach this resource name; RAPs compare the name as sent (FQDN, NetBIOS name or IP address) literally", CMD_GATEWAY),
    c(0x8007_59DB, "E_PROXY_NAP_ACCESSDENIED", Stage::GwTunnel, "network access protection (or the connection authorization policy's health requirement) denied the client", CMD_GATEWAY),
    c(0x8007_59DD, "E_PROXY_TS_CONNECTFAILED", Stage::GwChannel, "the RD Gateway could not connect to the target server (name resolution, routing or a firewall between gateway and server, or the server's RDP port closed)", CMD_GATEWAY),
    c(0x8007_59DF, "E_PROXY_ALREADYDISCONNECTED", Stage::GwChannel, "the tunnel was already closed by the gateway", CMD_GATEWAY),
    c(0x8007_59E6, "E_PROXY_MAXCONNECTIONSREACHED", Stage::GwTunnel, "the RD Gateway reached its maximum number of connections", CMD_GATEWAY),
    c(0x8007_59E8, "E_PROXY_NOTSUPPORTED", Stage::GwTunnel, "the RD Gateway does not support the request (transport, capability or authentication)", CMD_GATEWAY),
    c(0x8007_59E9, "E_PROXY_CAPABILITYMISMATCH", Stage::GwTunnel, "client and gateway capabilities do not match (e.g. the gateway requires a statement of health or messaging the client does not offer)", CMD_GATEWAY),
    c(0x8007_59ED, "E_PROXY_QUARANTINE_ACCESSDENIED", Stage::GwTunnel, "quarantine (NAP) denied the client", CMD_GATEWAY),
    c(0x8007_59F6, "E_PROXY_SESSIONTIMEOUT", Stage::GwChannel, "the gateway session reached its time limit", CMD_GATEWAY),
    c(0x8007_59F8, "E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED", Stage::GwTunnel, "the pluggable authentication (PAA) cookie was refused", CMD_GATEWAY),
    c(0x8007_59F9, "E_PROXY_UNSUPPORTED_AUTHENTICATION_METHOD", Stage::GwTunnel, "the gateway does not accept the authentication method the client used", CMD_GATEWAY),
    c(0x8007_59FB, "E_PROXY_REAUTH_CAP_FAILED", Stage::GwTunnel, "re-authorization by the connection authorization policy (RD CAP) failed", CMD_GATEWAY),
    c(0x8007_59FC, "E_PROXY_REAUTH_RAP_FAILED", Stage::GwChannel, "re-authorization by the resource authorization policy (RD RAP) failed", CMD_GATEWAY),
];

/// Further HRESULTs RD Gateways answer with, named only (decode reports the name, `explain` has no
/// text for them). `SEC_E_*` codes are named by [`NTSTATUS_NAMES`].
pub static GATEWAY_HRESULTS_NAMED: &[Code] = &[
    g(0x0000_0000, "S_OK"),
    g(0x8000_4005, "E_FAIL"),
    g(0x8007_0005, "E_ACCESSDENIED"),
    g(0x8007_04D4, "E_PROXY_CONNECTIONABORTED"),
    g(0x8007_59EE, "E_PROXY_NOCERTAVAILABLE"),
    g(0x8007_59FA, "E_PROXY_REAUTH_AUTHN_FAILED"),
];

const fn g(code: u32, name: &'static str) -> Code {
    c(code, name, Stage::GwTunnel, "", CMD_GATEWAY)
}

/// The HRESULT form of a gateway result: Win32 codes (0x000059DA) are HRESULT_FROM_WIN32'd
/// (0x800759DA), so both spellings share one row.
fn gateway_hresult_form(code: u32) -> u32 {
    if code & 0xFFFF_0000 == 0 && code != 0 {
        0x8007_0000 | code
    } else {
        code
    }
}

/// Name of an RD Gateway result code (MS-TSGU 2.2.3.1), e.g. 0x800759DA or 0x59DA ->
/// "E_PROXY_RAP_ACCESSDENIED".
pub fn gateway_hresult_name(code: u32) -> Option<&'static str> {
    let v = gateway_hresult_form(code);
    find(GATEWAY_HRESULTS, v)
        .or_else(|| find(GATEWAY_HRESULTS_NAMED, v))
        .map(|e| e.name)
        .or_else(|| ntstatus_name(v).filter(|n| n.starts_with("SEC_E_")))
}

/// What an RD Gateway result code means, when `explain` has a text for it.
pub fn gateway_hresult_meaning(code: u32) -> Option<&'static str> {
    find(GATEWAY_HRESULTS, gateway_hresult_form(code)).map(|e| e.meaning)
}

/// The code of an RD Gateway result name, case-insensitive: the inverse of [`gateway_hresult_name`].
pub fn gateway_hresult_code(name: &str) -> Option<u32> {
    let name = name.trim();
    find_name(GATEWAY_HRESULTS, name)
        .or_else(|| find_name(GATEWAY_HRESULTS_NAMED, name))
        .map(|e| e.code)
        .or_else(|| ntstatus_code(name).filter(|_| name.to_ascii_uppercase().starts_with("SEC_E_")))
}

// ---------------------------------------------------------------------------------------------
// RDP core data, T.125 MCS and licensing names (read by `decode::mcs`)

/// "RDP 10.7" for a client/server core data version (MS-RDPBCGR 2.2.1.3.2), hex when unknown.
pub fn rdp_version_name(v: u32) -> String {
    match v {
        0x0008_0001 => "RDP 4.0".to_owned(),
        0x0008_0004 => "RDP 5.0+".to_owned(),
        0x0008_0005..=0x0008_0011 => format!("RDP 10.{}", v - 0x0008_0005),
        _ => format!("0x{v:08x}"),
    }
}

/// Names of encryption method bits (MS-RDPBCGR 2.2.1.3.3): "40bit", "56bit", "128bit", "fips".
/// Zero is "none"; unknown bits are listed in hex.
pub fn encryption_method_names(m: u32) -> Vec<String> {
    if m == 0 {
        return vec!["none".to_owned()];
    }
    let mut v = Vec::new();
    for (bit, name) in [
        (0x1, "40bit"),
        (0x8, "56bit"),
        (0x2, "128bit"),
        (0x10, "fips"),
    ] {
        if m & bit != 0 {
            v.push(name.to_owned());
        }
    }
    if m & !0x1b != 0 {
        v.push(format!("0x{:x}", m & !0x1b));
    }
    v
}

/// Name of the server's encryption level (MS-RDPBCGR 2.2.1.4.3).
pub fn encryption_level_name(l: u32) -> String {
    match l {
        0 => "none".to_owned(),
        1 => "low".to_owned(),
        2 => "client_compatible".to_owned(),
        3 => "high".to_owned(),
        4 => "fips".to_owned(),
        l => format!("0x{l:x}"),
    }
}

/// T.125 Result (MCS connect response, attach user confirm, channel join confirm).
pub fn mcs_result_name(r: u8) -> String {
    const NAMES: [&str; 16] = [
        "rt-successful",
        "rt-domain-merging",
        "rt-domain-not-hierarchical",
        "rt-no-such-channel",
        "rt-no-such-domain",
        "rt-no-such-user",
        "rt-not-admitted",
        "rt-other-user-id",
        "rt-parameters-unacceptable",
        "rt-token-not-available",
        "rt-token-not-possessed",
        "rt-too-many-channels",
        "rt-too-many-tokens",
        "rt-too-many-users",
        "rt-unspecified-failure",
        "rt-user-rejected",
    ];
    NAMES
        .get(usize::from(r))
        .map_or_else(|| format!("rt-{r}"), |s| (*s).to_owned())
}

/// T.125 Reason of a disconnect provider ultimatum.
pub fn disconnect_reason_name(r: u8) -> String {
    match r {
        0 => "rn-domain-disconnected".to_owned(),
        1 => "rn-provider-initiated".to_owned(),
        2 => "rn-token-purged".to_owned(),
        3 => "rn-user-requested".to_owned(),
        4 => "rn-channel-purged".to_owned(),
        r => format!("rn-{r}"),
    }
}

/// Server early capability flags (MS-RDPBCGR 2.2.1.4.2).
pub fn server_early_caps_names(f: u32) -> Vec<String> {
    let mut v = Vec::new();
    for (bit, name) in [
        (0x1, "RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V1"),
        (0x2, "RNS_UD_SC_DYNAMIC_DST_SUPPORTED"),
        (0x4, "RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V2"),
        (0x8, "RNS_UD_SC_SKIP_CHANNELJOIN_SUPPORTED"),
    ] {
        if f & bit != 0 {
            v.push(name.to_owned());
        }
    }
    if f & !0xf != 0 {
        v.push(format!("0x{:x}", f & !0xf));
    }
    v
}

/// Licensing error code of a license error message (MS-RDPELE 2.2.2.7.1 / MS-RDPBCGR 2.2.1.12.1.3).
pub fn license_error_name(code: u32) -> String {
    match code {
        0x01 => "ERR_INVALID_SERVER_CERTIFICATE".to_owned(),
        0x02 => "ERR_NO_LICENSE".to_owned(),
        0x03 => "ERR_INVALID_MAC".to_owned(),
        0x04 => "ERR_INVALID_SCOPE".to_owned(),
        0x06 => "ERR_NO_LICENSE_SERVER".to_owned(),
        0x07 => "STATUS_VALID_CLIENT".to_owned(),
        0x08 => "ERR_INVALID_CLIENT".to_owned(),
        0x0b => "ERR_INVALID_PRODUCTID".to_owned(),
        0x0c => "ERR_INVALID_MESSAGE_LEN".to_owned(),
        c => format!("0x{c:08x}"),
    }
}

/// State transition of a license error message (MS-RDPBCGR 2.2.1.12.1.3).
pub fn license_state_name(st: u32) -> String {
    match st {
        1 => "ST_TOTAL_ABORT".to_owned(),
        2 => "ST_NO_TRANSITION".to_owned(),
        3 => "ST_RESET_PHASE_TO_START".to_owned(),
        4 => "ST_RESEND_LAST_MESSAGE".to_owned(),
        s => format!("0x{s:08x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_each_code_and_name_once() {
        for table in [
            MSTSC_DOCUMENTED,
            MSTSC_INTERNAL,
            EXTENDED_REASONS,
            NEG_FAILURES,
            SET_ERROR_INFO,
            GATEWAY_HRESULTS,
            GATEWAY_HRESULTS_NAMED,
        ] {
            for (i, a) in table.iter().enumerate() {
                for b in &table[i + 1..] {
                    assert_ne!(a.code, b.code, "{} and {}", a.name, b.name);
                    assert!(!a.name.eq_ignore_ascii_case(b.name), "{}", a.name);
                }
            }
        }
        for (code, _) in SET_ERROR_INFO_SPEC_SPELLING {
            assert!(find(SET_ERROR_INFO, *code).is_some(), "0x{code:x}");
        }
        for (i, (code, name)) in NTSTATUS_NAMES.iter().enumerate() {
            for (c, n) in &NTSTATUS_NAMES[i + 1..] {
                assert_ne!(code, c, "{name} and {n}");
                assert!(!name.eq_ignore_ascii_case(n), "{name}");
            }
        }
    }

    #[test]
    fn names_as_each_output_spells_them() {
        // decode: the MS-RDPBCGR spelling; explain: FreeRDP's.
        assert_eq!(
            error_info_name(0x5),
            Some("ERRINFO_DISCONNECTED_BY_OTHERCONNECTION")
        );
        assert_eq!(
            find(SET_ERROR_INFO, 0x5).map(|e| e.name),
            Some("ERRINFO_DISCONNECTED_BY_OTHER_CONNECTION")
        );
        assert_eq!(error_info_name(0x1192), Some("ERRINFO_DECRYPTFAILED"));
        assert_eq!(
            error_info_name(0x7),
            Some("ERRINFO_SERVER_DENIED_CONNECTION")
        );
        assert_eq!(error_info_name(0x8), None);
        assert_eq!(ntstatus_name(0xC000_006D), Some("STATUS_LOGON_FAILURE"));
        assert_eq!(ntstatus_code(" status_logon_failure "), Some(0xC000_006D));
        assert_eq!(
            ntstatus_name(0xC000_0203),
            Some("STATUS_USER_SESSION_DELETED")
        );
        assert_eq!(ntstatus_name(0x1234_5678), None);
        assert_eq!(neg_failure_name(5), Some("HYBRID_REQUIRED_BY_SERVER"));
        assert_eq!(neg_failure_code("ssl_required_by_server"), Some(1));
        assert_eq!(neg_failure_name(8), None);
    }

    #[test]
    fn gateway_hresults_are_named_once_in_either_spelling() {
        assert_eq!(
            gateway_hresult_name(0x59DA),
            Some("E_PROXY_RAP_ACCESSDENIED")
        );
        assert_eq!(
            gateway_hresult_name(0x8007_04D4),
            Some("E_PROXY_CONNECTIONABORTED")
        );
        assert_eq!(
            gateway_hresult_name(0x8009_030C),
            Some("SEC_E_LOGON_DENIED")
        );
        assert_eq!(
            gateway_hresult_code("e_proxy_ts_connectfailed"),
            Some(0x8007_59DD)
        );
        assert_eq!(
            gateway_hresult_code("SEC_E_LOGON_DENIED"),
            Some(0x8009_030C)
        );
        assert_eq!(gateway_hresult_code("STATUS_LOGON_FAILURE"), None);
        assert!(gateway_hresult_meaning(0x59DD).is_some());
        assert!(!GATEWAY_HRESULTS_NAMED
            .iter()
            .any(|e| find(GATEWAY_HRESULTS, e.code).is_some()));
    }

    #[test]
    fn one_protocol_type_parses_every_spelling() {
        for (s, p) in [
            ("rdp", Protocol::Rdp),
            ("standard", Protocol::Rdp),
            ("TLS", Protocol::Ssl),
            ("protocol_ssl", Protocol::Ssl),
            ("nla", Protocol::Hybrid),
            ("hybrid-ex", Protocol::HybridEx),
            ("hybridex", Protocol::HybridEx),
        ] {
            assert_eq!(Protocol::parse(s), Some(p), "{s}");
        }
        assert_eq!(Protocol::parse("rdstls"), None);
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
            assert_eq!(p.security_protocol().bits(), p.flag());
        }
    }
}
