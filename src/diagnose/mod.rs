//! diagnose: maps a failing stage and its verdict to a fault class, the likely causes in order and
//! concrete remedies, with the evidence used; and explains mstsc / RDP / NTSTATUS codes
//! (`rdprobe explain 0x904 --ext 0x7`). Pure code, no I/O.
//!
//! INVARIANT: `diagnose` reads only the [`ConnectionReport`]: a live probe, an analyzed capture and a
//! replay of the same connection get the same diagnosis.
//! INVARIANT: every failing verdict yields at least one cause and one evidence sentence; `Verdict::Ok`
//! yields [`FaultClass::None`] and no cause.

pub mod cause;
pub mod codes;
pub mod gateway;

use serde::Serialize;
use std::fmt::Write as _;
use thiserror::Error;

use crate::decode::pdu::{stage_pdus, NtlmKind, PduKind};
use crate::report::{ConnectionReport, StageReport};
use crate::stage::{protocol_names, FailureKind, Side, Stage, Verdict};
use ironrdp_pdu::nego::SecurityProtocol;

pub use cause::{CauseId, UnknownCause};
use codes::Code;
use CauseId as C;

/// Whose problem it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultClass {
    /// The path between client and server: DNS, routing, firewalls, middleboxes, loss.
    Network,
    /// How the server is set up: service, listener, certificate, keys, security software.
    ServerConfiguration,
    /// The server is set up right but not working: hung, overloaded, crashed, cannot reach its DC.
    ServerHealth,
    /// How the client is set up: security protocols offered, trust, local security software.
    ClientConfiguration,
    /// The user's credentials or account.
    Credentials,
    /// A policy decided it: security layer / NLA policies, logon rights, session limits.
    Policy,
    /// No fault: connected, stopped by request, or not enough data.
    None,
}

impl FaultClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultClass::Network => "network",
            FaultClass::ServerConfiguration => "server configuration",
            FaultClass::ServerHealth => "server health",
            FaultClass::ClientConfiguration => "client configuration",
            FaultClass::Credentials => "credentials",
            FaultClass::Policy => "policy",
            FaultClass::None => "none",
        }
    }
}

/// One likely cause with its remedy. `id` is stable (documented in the README).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub id: CauseId,
    pub title: String,
    pub remedy: String,
}

/// The diagnosis of one connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub fault_class: FaultClass,
    /// Most likely first.
    pub causes: Vec<Cause>,
    /// The observations the diagnosis rests on, as sentences quoting numbers.
    pub evidence: Vec<String>,
}

/// The meaning of one code in one table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The code as hex ("0x904").
    pub code: String,
    /// "mstsc disconnect", "extended reason", "negotiation failure", "ntstatus", "set error info" or
    /// "rd gateway hresult".
    pub kind: &'static str,
    pub name: String,
    pub meaning: String,
    pub stage: Stage,
    /// The rdprobe command that tells the causes apart.
    pub command: String,
}

/// Why a code given as text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ExplainError {
    #[error("cannot read {0:?} as a code: expected hex (0x904), decimal (2308) or a name (STATUS_LOGON_FAILURE)")]
    Unreadable(String),
}

pub const KIND_MSTSC: &str = "mstsc disconnect";
pub const KIND_EXTENDED: &str = "extended reason";
pub const KIND_NEG_FAILURE: &str = "negotiation failure";
pub const KIND_NTSTATUS: &str = "ntstatus";
pub const KIND_SET_ERROR_INFO: &str = "set error info";
pub const KIND_GATEWAY: &str = "rd gateway hresult";

// ---------------------------------------------------------------------------------------------
// Cause catalog
// ---------------------------------------------------------------------------------------------

const UNCLASSIFIED: (&str, &str) = (
    "unclassified failure",
    "Probe again with --pcap and compare with rdprobe explain for the codes seen.",
);

/// Title and remedy of a cause id: an exhaustive match, so a new id cannot be left without text
/// (the gateway's are in [`gateway::catalog`]; a test holds that each has its own).
pub(crate) fn catalog(id: CauseId) -> (&'static str, &'static str) {
    match id {
        C::NameResolutionOrRouting => (
            "the name does not resolve, resolves to the wrong address, or there is no route to it",
            "Probe the IP address directly (rdprobe probe 10.x.x.x); if that works, fix the DNS record, the client's DNS \
             suffix or hosts file. If the IP fails too, check the route and the VPN (tracert / ip route get).",
        ),
        C::HostDown => (
            "the host is down or the address belongs to no machine",
            "Check from the console or hypervisor that the server is up and has this address; ping / ARP it from its own subnet.",
        ),
        C::RemoteDesktopDisabled => (
            "Remote Desktop is disabled on the server or nothing listens on the port (TermService stopped, listener on another port)",
            "On the server: Settings > System > Remote Desktop on (or fDenyTSConnections=0 under \
             HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server), start the Remote Desktop Services service, and check the \
             listener port (PortNumber under ...\\WinStations\\RDP-Tcp; netstat -ano | findstr LISTEN).",
        ),
        C::FirewallRejects => (
            "a firewall rejects the port (answers the SYN with a reset)",
            "Allow TCP 3389 from the client's address on every firewall in the path (host rule 'Remote Desktop - User Mode \
             (TCP-In)', network ACLs, security groups); a probe from the server's own subnet tells host from network firewall.",
        ),
        C::FirewallDrops => (
            "a firewall silently drops packets to the port (no answer to the SYN)",
            "Allow TCP 3389 inbound on the host firewall and on every hop (NSG / security group, perimeter firewall, VPN \
             split tunnel); probe from the server's subnet and from the client's to find the hop that drops.",
        ),
        C::WrongPort => (
            "Remote Desktop listens on another port",
            "Check PortNumber under HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server\\WinStations\\RDP-Tcp and probe HOST:PORT.",
        ),
        C::TlsCertExpired => (
            "the server's TLS certificate has expired",
            "On the server open certlm.msc > Remote Desktop > Certificates, delete the expired self-signed certificate and \
             restart the Remote Desktop Services service so a new one is created; renew a CA-issued certificate and bind it \
             again (Win32_TSGeneralSetting SSLCertificateSHA1Hash).",
        ),
        C::TlsCertNotYetValid => (
            "the server's TLS certificate is not valid yet (a clock is wrong)",
            "Fix the server's or the client's clock and time synchronisation, or reissue the certificate.",
        ),
        C::TlsCertUnusable => (
            "the server's certificate is unusable: missing, without a private key, wrong key usage, or its key unreadable",
            "In certlm.msc > Remote Desktop > Certificates check the certificate has a private key and the Server \
             Authentication usage, and that NETWORK SERVICE may read its key; or delete it and restart the Remote Desktop \
             Services service to regenerate it.",
        ),
        C::ServerCannotCreateKeys => (
            "the server cannot create or read its TLS keys (MachineKeys permissions broken, typically after cloning a VM or \
             hardening)",
            "On the server check the permissions of C:\\ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys against Microsoft's \
             defaults (NETWORK SERVICE must read the Remote Desktop key), look for Schannel errors (events 36870 / 36874) in \
             the System log, then delete the Remote Desktop certificate in certlm.msc and restart the Remote Desktop Services \
             service so that certificate and key are created again.",
        ),
        C::NlaRequired => (
            "NLA mismatch: the server requires Network Level Authentication (CredSSP) and the client did not offer it",
            "Let the client offer CredSSP (mstsc does by default; remove 'enablecredsspsupport:i:0' from the .rdp file; \
             FreeRDP /sec:nla); or clear the server policy 'Require user authentication for remote connections by using \
             Network Level Authentication' (Computer Configuration > Administrative Templates > Windows Components > Remote \
             Desktop Services > Remote Desktop Session Host > Security).",
        ),
        C::TlsRequired => (
            "security-layer mismatch: the server requires TLS (Enhanced RDP Security) and the client offered standard RDP \
             security only (or CredSSP where the server does TLS only)",
            "Let the client offer TLS / CredSSP (FreeRDP /sec:tls or /sec:nla); or set the server policy 'Require use of \
             specific security layer for remote (RDP) connections' to Negotiate.",
        ),
        C::RdpSecurityOnly => (
            "security-layer mismatch: the server is set to standard RDP security only (no TLS, no CredSSP)",
            "Set the server policy 'Require use of specific security layer for remote (RDP) connections' to Negotiate or SSL \
             (SecurityLayer 1 or 2 under ...\\WinStations\\RDP-Tcp), or let the client also offer standard RDP security.",
        ),
        C::ProtocolMismatch => (
            "security-layer mismatch: the server selected a security protocol the client did not offer",
            "Compare what the client offers with what the server accepts (rdprobe enum HOST) and align the server's \
             'Require use of specific security layer' and NLA policies with the client's settings.",
        ),
        C::ClientCertAuthRequired => (
            "the server requires TLS with client certificate authentication",
            "Connect with a client that presents a certificate the server trusts, or relax the server's requirement.",
        ),
        C::InconsistentFlags => (
            "the client's requested protocols contradict the security protocol already in effect (reconnection or \
             redirection)",
            "Reconnect from scratch with one consistent set of security protocols; check the client's redirection handling.",
        ),
        C::EntraAuthRequired => (
            "the server requires Microsoft Entra ID authentication",
            "Connect with a client that supports Entra ID (RDS AAD) authentication, or turn that requirement off.",
        ),
        C::EndpointSecurityServer => (
            "endpoint security on the server (antivirus / EDR / host IPS) kills the socket at the encrypted handshake",
            "Look in the server's security product log for blocked RDP or 'network attack' events (Bitdefender, Kaspersky, \
             ...); add an exception for the Remote Desktop Services / port 3389 or turn off its encrypted-traffic scanning, \
             then probe again with --pcap.",
        ),
        C::EndpointSecurityClient => (
            "endpoint security on the client (SSL / encrypted connection scanning, web protection) kills the socket",
            "Turn off the client security product's encrypted-connection scanning for mstsc.exe / port 3389 (or add an \
             exception) and retry; a probe from another machine confirms it.",
        ),
        C::MiddleboxReset => (
            "a middlebox (IPS, next-generation firewall, TLS-inspecting proxy) resets the connection; it can forge the reset in \
             the server's name",
            "Probe from the server's own subnet and from the client's network: if only the remote probe is reset, check the \
             IPS / firewall logs for RDP or TLS signatures and exempt port 3389 from TLS inspection.",
        ),
        C::MiddleboxDrops => (
            "a firewall or IPS in the path drops the RDP / TLS packets after letting the TCP handshake through",
            "Probe from the server's own subnet and from the client's network; check IPS / application-aware firewall rules \
             for RDP; a --pcap shows the client's retransmissions going unanswered.",
        ),
        C::PacketLoss => (
            "packet loss or a bandwidth drop stalled the connection before the handshake completed (VPN, Wi-Fi, congested link)",
            "Probe several times and from another network; measure loss (mtr / ping over a minute); a probe with --pcap shows \
             retransmissions; fix the link or the VPN before looking at the server.",
        ),
        C::MtuBlackHole => (
            "an MTU black hole: full-size packets (the server's certificate flight) are lost while small ones pass",
            "Test with ping -f -l 1400 (Windows) / ping -M do -s 1400 (Linux) down to the size that passes; lower the MTU / \
             MSS clamp on the VPN or tunnel, or let ICMP 'fragmentation needed' through.",
        ),
        C::ServerHung => (
            "the server accepts TCP but its Remote Desktop service does not answer (TermService hung, server overloaded, or \
             another service on the port)",
            "Restart the Remote Desktop Services service; check CPU / memory and the TerminalServices-RemoteConnectionManager \
             event log; confirm the port belongs to TermService (netstat -abno).",
        ),
        C::ServerSlowAuth => (
            "the server is slow to check the credentials (it cannot reach a domain controller quickly)",
            "Check the server's DNS and its connectivity to a domain controller (nltest /sc_query:DOMAIN); retry with a local \
             account to compare.",
        ),
        C::NotRdpService => (
            "the port is served by something that is not an RDP server (web server, proxy, another protocol)",
            "Check what listens on the port on the server (netstat -abno) and any port forwarding in front of it.",
        ),
        C::ServerDeniedConnection => (
            "the server denied the connection (connection limit reached, connections disabled on the listener, drain mode, \
             or a policy)",
            "Check the server's TerminalServices-RemoteConnectionManager and -LocalSessionManager event logs, the connection \
             limit ('Limit number of connections' policy, MaxInstanceCount), and whether the session host drains new logons \
             (change logon /query).",
        ),
        C::UserNotAuthorized => (
            "the user is not allowed to log on remotely",
            "Add the user to the Remote Desktop Users group and check the user rights 'Allow log on through Remote Desktop \
             Services' / 'Deny log on through Remote Desktop Services' (secpol.msc > Local Policies > User Rights Assignment).",
        ),
        C::FreshCredentialsRequired => (
            "the server does not accept saved credentials ('Always prompt for password upon connection')",
            "Type the password at connection time, or clear that policy on the server.",
        ),
        C::LicensingFailed => (
            "Remote Desktop licensing failed (no license server, no client access licenses, or a bad stored license)",
            "Check the licensing mode and license server on the session host (Licensing Diagnoser, lsdiag.msc); on the client \
             delete HKLM\\SOFTWARE\\Microsoft\\MSLicensing to drop a corrupt stored license.",
        ),
        C::BrokerFailed => (
            "the Connection Broker could not place the connection",
            "Check the broker's event logs, the collection's hosts and their drain state, and the load-balance info in the \
             .rdp file.",
        ),
        C::SessionTimeLimit => (
            "a session time limit ended the session (idle or active session limit)",
            "Adjust the session time limits policy (Remote Desktop Session Host > Session Time Limits) if this is unwanted.",
        ),
        C::AdminDisconnect => (
            "an administrator, another session or the user ended the session",
            "Nothing to fix in the connection itself; ask who ended the session (TerminalServices-LocalSessionManager log).",
        ),
        C::SessionTakenOver => (
            "another connection took over the session",
            "Check who else connects with the same account; allow several sessions per user if needed \
             ('Restrict Remote Desktop Services users to a single Remote Desktop Services session').",
        ),
        C::ServerSessionFailure => (
            "a component of the server's session failed (display driver, DWM, Winlogon, CSRSS) or the server is shutting down",
            "Check the server's Application and System event logs around the time; update the graphics driver; retry after \
             the restart.",
        ),
        C::ProtocolIncompatibility => (
            "the server rejected what the client sent (capabilities, channels, monitor layout or a malformed PDU)",
            "Update the client; reduce what it asks for (monitors, channels, graphics mode) and retry; a --pcap shows the PDU \
             the server objected to.",
        ),
        C::TlsVersionMismatch => (
            "no common TLS version: the server speaks only old TLS (1.0 / 1.1) or the client refuses what it offers",
            "Enable TLS 1.2 on the server (Windows 2008 R2 / 2012: install the TLS 1.2 update for RDP and set \
             SCHANNEL\\Protocols\\TLS 1.2\\Server Enabled=1), or allow the old version on the client for this host; \
             rdprobe enum HOST lists the versions the server accepts.",
        ),
        C::TlsCipherMismatch => (
            "no common TLS cipher suite",
            "Compare the server's cipher suite order (policy 'SSL Cipher Suite Order', IIS Crypto) with the client's; \
             rdprobe enum HOST lists the suites the server accepts.",
        ),
        C::TlsAlertOther => (
            "the TLS handshake failed with an alert",
            "Read the alert in the evidence; rdprobe enum HOST shows the server's TLS versions, suites and certificate.",
        ),
        C::ClientRejectsCert => (
            "the client rejected the server's certificate (untrusted issuer, name mismatch, expired)",
            "Trust the issuing CA on the client, connect with the name the certificate carries, or give the server a \
             certificate from a trusted CA (Remote Desktop certificate template via Group Policy).",
        ),
        C::ClientAborted => (
            "the client gave up on the connection itself",
            "Check the client's own log or message (a certificate prompt answered 'no', a local policy, a client bug).",
        ),
        C::ClientStalled => (
            "the client stopped sending (waiting for the user, or stuck)",
            "Check whether the client was waiting for input (certificate or credential prompt) when the capture was taken.",
        ),
        C::CredsspServerFailure => (
            "the server's CredSSP / NLA layer failed (CredSSP version or 'encryption oracle remediation' mismatch, NTLM \
             restricted, server unable to reach its domain controller)",
            "Patch both ends to current CredSSP versions (policy 'Encryption Oracle Remediation'), check 'Network security: \
             Restrict NTLM' policies and the server's domain connectivity; compare with a local account.",
        ),
        C::CredentialsRejectedNoErrorCode => (
            "the credentials were most likely rejected: the server closed right after the NTLM AUTHENTICATE without a \
             TSRequest errorCode",
            "Check user name (DOMAIN\\user, user@domain, .\\user for a local account) and password. This server sends no \
             errorCode (FreeRDP 2, Windows up to 2012 do so), so rdprobe cannot tell a wrong password from a locked or \
             disabled account: the server's Security log (event 4625, Sub Status) says which.",
        ),
        C::WrongPasswordOrUser => (
            "wrong user name or password (STATUS_LOGON_FAILURE)",
            "Check the user name format (DOMAIN\\user or user@domain; .\\user or HOST\\user for a local account), the keyboard \
             layout and caps lock; repeated failures may lock the account.",
        ),
        C::WrongPassword => (
            "wrong password (STATUS_WRONG_PASSWORD)",
            "Retype the password (keyboard layout, caps lock); repeated failures may lock the account.",
        ),
        C::NoSuchUser => (
            "the user does not exist where the server looks (STATUS_NO_SUCH_USER)",
            "Check the user name and the domain part; use .\\user or HOST\\user for a local account.",
        ),
        C::PasswordExpired => (
            "the password has expired (STATUS_PASSWORD_EXPIRED)",
            "Change the password (another session, Ctrl+Alt+End, or self-service); NLA cannot prompt for a change, so reset it \
             or allow a non-NLA logon once.",
        ),
        C::PasswordMustChange => (
            "the password must be changed before the first logon (STATUS_PASSWORD_MUST_CHANGE)",
            "Set a new password for the account (NLA cannot prompt for the change), or clear 'User must change password at \
             next logon'.",
        ),
        C::AccountDisabled => ("the account is disabled (STATUS_ACCOUNT_DISABLED)", "Enable the account in Active Directory / Local Users."),
        C::AccountLockedOut => (
            "the account is locked out (STATUS_ACCOUNT_LOCKED_OUT)",
            "Unlock the account and find the source of the bad passwords (event 4740 on the domain controller) — often a saved \
             credential on another device.",
        ),
        C::AccountExpired => ("the account has expired (STATUS_ACCOUNT_EXPIRED)", "Extend the account's expiry date."),
        C::AccountRestriction => (
            "an account restriction prevents the logon (STATUS_ACCOUNT_RESTRICTION), e.g. a blank password",
            "Give the account a password (Windows allows blank-password logons only at the console) or lift the restriction.",
        ),
        C::LogonHours => (
            "the account may not log on at this time (STATUS_INVALID_LOGON_HOURS)",
            "Adjust the account's logon hours.",
        ),
        C::WorkstationRestriction => (
            "the account may not log on from this computer (STATUS_INVALID_WORKSTATION)",
            "Add the server to the account's 'Log On To' list.",
        ),
        C::LogonTypeNotGranted => (
            "the user lacks the remote logon right (STATUS_LOGON_TYPE_NOT_GRANTED)",
            "Add the user to Remote Desktop Users and check 'Allow / Deny log on through Remote Desktop Services' \
             (secpol.msc > User Rights Assignment).",
        ),
        C::AccessDenied => (
            "access denied to the user (STATUS_ACCESS_DENIED)",
            "Check the user's rights on the server (Remote Desktop Users, RDP-Tcp listener permissions).",
        ),
        C::NoLogonServers => (
            "the server cannot reach a domain controller to check the credentials",
            "Check the server's DNS and secure channel (nltest /sc_verify:DOMAIN); a local account works meanwhile.",
        ),
        C::TimeSkew => (
            "the clocks of the server and the domain controller differ too much",
            "Fix time synchronisation (w32tm /resync) on the server.",
        ),
        C::TrustBroken => (
            "the server's trust relationship with the domain is broken",
            "Reset the computer account / rejoin the domain (Test-ComputerSecureChannel -Repair).",
        ),
        C::AuthFirewall => (
            "selective authentication does not allow this user on this server",
            "Grant 'Allowed to authenticate' on the server's computer object to the user across the trust.",
        ),
        C::WrongPin => ("the smart card PIN is wrong", "Retype the PIN; check the card is not blocked."),
        C::WrongPrincipal => (
            "Kerberos target name mismatch (SEC_E_WRONG_PRINCIPAL)",
            "Connect by the server's real name; check its SPNs (setspn -L HOST) for duplicates.",
        ),
        C::CredsspOracle => (
            "CredSSP 'encryption oracle remediation' mismatch between an updated and an unpatched peer",
            "Install the CredSSP update (CVE-2018-0886) on both ends; meanwhile set 'Encryption Oracle Remediation' to \
             Mitigated on the updated side.",
        ),
        C::AuthFailureOther => (
            "authentication failed",
            "Look up the errorCode in the evidence (rdprobe explain CODE) and the server's Security log (event 4625).",
        ),
        C::RdpEncryptionLevel => (
            "the server enforces a standard RDP security encryption level or method the client does not support",
            "Let the client support the server's level (High = 128-bit, FIPS) or set the server's 'Set client connection \
             encryption level' policy to one the client speaks; rdprobe enum HOST lists the methods.",
        ),
        C::MalformedServerData => (
            "the server (or something in front of it) sent data that is not valid RDP",
            "Check for a proxy or load balancer in the path and what listens on the port; the --pcap shows the bytes.",
        ),
        C::MalformedClientData => (
            "the client sent data that is not valid RDP",
            "Update the client; the --pcap shows the bytes.",
        ),
        C::CaptureIncomplete => (
            "the capture ended before the connection did: nothing failed in what was captured",
            "Capture longer, or on the other end of the path.",
        ),
        C::GwNotListening
        | C::GwUnreachable
        | C::GwTlsFailed
        | C::GwTlsInspection
        | C::GwNotAGateway
        | C::GwLoginRedirect
        | C::GwForbidden
        | C::GwWebsocketRefused
        | C::GwWrongCredentials
        | C::GwAuthSchemeUnsupported
        | C::GwResetAfterAuth
        | C::GwTunnelRefused
        | C::GwCapDenied
        | C::GwRapDenied
        | C::GwTargetUnreachable
        | C::GwSlow
        | C::GwTlsCertExpired => {
            gateway::catalog(id).unwrap_or(UNCLASSIFIED)
        }
        C::Unclassified => UNCLASSIFIED,
    }
}

fn cause(id: CauseId) -> Cause {
    let (title, remedy) = catalog(id);
    Cause {
        id,
        title: title.to_owned(),
        remedy: remedy.to_owned(),
    }
}

/// Title and remedy text of a cause id, for documentation and tests.
pub fn cause_text(id: CauseId) -> (&'static str, &'static str) {
    catalog(id)
}

// ---------------------------------------------------------------------------------------------
// diagnose
// ---------------------------------------------------------------------------------------------

/// Reads the report around the failing stage.
struct Ctx<'a> {
    r: &'a ConnectionReport,
    stage: Stage,
    st: Option<&'a StageReport>,
}

fn value_str(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(value_str).collect::<Vec<_>>().join("|"),
        other => other.to_string(),
    }
}

/// A numeric fact given as a JSON number or as a "0x.." / decimal string.
fn value_u32(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        // Also "ERRINFO_SERVER_DENIED_CONNECTION (0x00000007)", as decode::mcs writes it.
        serde_json::Value::String(s) => parse_u32(s).or_else(|| {
            let hex = &s[s.find("0x")? + 2..];
            let end = hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len());
            u32::from_str_radix(&hex[..end], 16).ok()
        }),
        _ => None,
    }
}

impl<'a> Ctx<'a> {
    fn new(r: &'a ConnectionReport) -> Self {
        Ctx {
            r,
            stage: r.last_stage,
            st: r.stage(r.last_stage),
        }
    }

    /// A fact as text; empty strings count as absent.
    fn fact(&self, stage: Stage, key: &str) -> Option<String> {
        self.r
            .fact(stage, key)
            .map(value_str)
            .filter(|s| !s.is_empty())
    }

    fn flag(&self, stage: Stage, key: &str) -> bool {
        matches!(self.r.fact(stage, key), Some(serde_json::Value::Bool(true)))
    }

    fn s2c(&self) -> u64 {
        self.st.map_or(0, |s| s.bytes_s2c)
    }

    fn c2s(&self) -> u64 {
        self.st.map_or(0, |s| s.bytes_c2s)
    }

    /// The last PDU of the failing stage (or of the stage before it): (who, what).
    fn last_pdu(&self) -> Option<(Side, PduKind)> {
        let idx = self.r.stages.iter().position(|s| s.stage == self.stage)?;
        for s in self.r.stages[..=idx].iter().rev().take(2) {
            // The alert or error that ended the stage is the failure itself, not what it answered.
            let last = stage_pdus(s)
                .rev()
                .find(|p| !(p.kind.is_any_alert() || p.kind.has_error_code()));
            if let Some(p) = last {
                return Some((p.side, p.kind));
            }
        }
        None
    }

    /// "the client's ClientHello", from the last PDU.
    fn after_what(&self) -> Option<String> {
        let (who, what) = self.last_pdu()?;
        let ntlm = [
            (NtlmKind::Authenticate, "NTLM AUTHENTICATE"),
            (NtlmKind::Negotiate, "NTLM NEGOTIATE"),
            (NtlmKind::Challenge, "NTLM CHALLENGE"),
        ];
        let pretty = match ntlm.iter().find(|(k, _)| what.is_ntlm(*k)) {
            Some((_, name)) => format!("{name} ({what})"),
            None => what.pretty(),
        };
        Some(format!("the {who}'s {pretty}"))
    }

    /// Milliseconds from the last PDU to the end of the connection, when decode recorded it.
    fn ended_after_ms(&self) -> Option<f64> {
        self.st
            .and_then(|s| s.facts.get("ended_after_ms"))
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite() && *v >= 0.0)
    }

    fn bytes_clause(&self) -> String {
        format!(
            "{} bytes from the client and {} from the server in the {} stage",
            self.c2s(),
            self.s2c(),
            self.stage
        )
    }

    fn alert_clause(&self) -> &'static str {
        if self.stage >= Stage::Tls
            && self.fact(Stage::Tls, "alert").is_none()
            && self.stage <= Stage::Credssp
        {
            ", no TLS alert"
        } else {
            ""
        }
    }

    /// "RST from server 2 ms after the client's ClientHello, no TLS alert (...)".
    fn end_sentence(&self, what: &str, by: Side) -> String {
        let when = match (self.ended_after_ms(), self.after_what()) {
            (Some(ms), Some(a)) => format!(" {} ms after {a}", fmt_ms(ms)),
            (None, Some(a)) => format!(" after {a}"),
            (Some(ms), None) => format!(" {} ms into the {} stage", fmt_ms(ms), self.stage),
            (None, None) => format!(" during the {} stage", self.stage),
        };
        format!(
            "{what} from {by}{when}{} ({})",
            self.alert_clause(),
            self.bytes_clause()
        )
    }

    fn set_error_info(&self) -> Option<u32> {
        self.r
            .stages
            .iter()
            .rev()
            .find_map(|s| s.facts.get("set_error_info").and_then(value_u32))
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 10.0 || ms == ms.trunc() {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

struct Builder {
    class: FaultClass,
    causes: Vec<Cause>,
    evidence: Vec<String>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            class: FaultClass::None,
            causes: Vec::new(),
            evidence: Vec::new(),
        }
    }

    fn set(&mut self, class: FaultClass, ids: &[CauseId]) {
        self.class = class;
        for &id in ids {
            self.add(cause(id));
        }
    }

    fn add(&mut self, c: Cause) {
        if !self.causes.iter().any(|x| x.id == c.id) {
            self.causes.push(c);
        }
    }

    /// Moves (or inserts) a cause to the front.
    fn first(&mut self, c: Cause) {
        self.causes.retain(|x| x.id != c.id);
        self.causes.insert(0, c);
    }

    fn ev(&mut self, s: String) {
        if !s.is_empty() && !self.evidence.contains(&s) {
            self.evidence.push(s);
        }
    }
}

/// The fault class, likely causes (most likely first) and evidence of one connection.
pub fn diagnose(report: &ConnectionReport) -> Diagnosis {
    let mut d = diagnose_verdict(report);
    live_mtu_search(report, &mut d);
    d
}

/// A live probe that found a path-MTU black hole by clamping its MSS reports the connection that
/// passed: the black hole is still the network's fault, first.
fn live_mtu_search(report: &ConnectionReport, d: &mut Diagnosis) {
    let Some(tcp) = report.stage(Stage::Tcp) else {
        return;
    };
    if tcp.facts.get("mtu_black_hole") != Some(&serde_json::Value::Bool(true)) {
        return;
    }
    let passing = tcp
        .facts
        .get("mss_largest_passing")
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".into());
    d.evidence.insert(
        0,
        format!(
            "the first connection stalled after the server had acknowledged everything the client sent; with the MSS clamped to {passing} it passed: a path-MTU black hole"
        ),
    );
    d.causes.retain(|c| c.id != C::MtuBlackHole);
    d.causes.insert(0, cause(C::MtuBlackHole));
    if matches!(d.fault_class, FaultClass::None) {
        d.fault_class = FaultClass::Network;
    }
}

fn diagnose_verdict(report: &ConnectionReport) -> Diagnosis {
    let (kind, by) = match &report.verdict {
        Verdict::Ok => return healthy(report),
        Verdict::Failed { kind, by } => (kind, *by),
    };
    let cx = Ctx::new(report);
    let mut d = Builder::new();
    if report.last_stage.is_gateway() {
        gateway::classify(&cx, kind, by, &mut d);
    } else {
        classify(&cx, kind, by, &mut d);
        context_evidence(&cx, &mut d);
    }
    // INVARIANT: a failure always comes with a cause (the module invariant); a stop by request is none.
    if d.causes.is_empty() && !matches!(kind, FailureKind::Stopped) {
        d.add(cause(C::Unclassified));
    }
    Diagnosis {
        fault_class: d.class,
        causes: d.causes,
        evidence: d.evidence,
    }
}

/// A connection that passed every stage: no fault, but latent problems that stricter clients fail on
/// (an expired or not yet valid certificate, a server that speaks only legacy TLS) are listed as causes.
fn healthy(r: &ConnectionReport) -> Diagnosis {
    let cx = Ctx::new(r);
    let mut d = Builder::new();
    d.ev(format!(
        "every stage passed: {} reached {} ({} stages)",
        r.server,
        r.last_stage,
        r.stages.len()
    ));
    if let Some(issuer) = gateway::inspected(&cx) {
        d.ev(format!(
            "the gateway's certificate was issued by {issuer}, a TLS-inspection product: clients that bind NTLM to the channel fail"
        ));
        d.add(cause(C::GwTlsInspection));
    }
    if cx.flag(Stage::GwTls, "cert_expired") {
        let when = cx
            .fact(Stage::GwTls, "cert_not_after")
            .unwrap_or_else(|| "?".into());
        d.ev(format!(
            "the gateway's certificate expired on {when}: rdprobe does not verify certificates, clients that do fail at gw_tls"
        ));
        d.add(cause(C::GwTlsCertExpired));
    }
    if cx.flag(Stage::Tls, "cert_expired") {
        let when = cx
            .fact(Stage::Tls, "cert_not_after")
            .unwrap_or_else(|| "?".into());
        d.ev(format!(
            "the server's certificate expired on {when}: rdprobe does not verify certificates, clients that do \
             (mstsc set to 'Do not connect', FreeRDP without /cert:ignore) fail at the tls stage"
        ));
        d.add(cause(C::TlsCertExpired));
    }
    if cx.flag(Stage::Tls, "cert_not_yet_valid") {
        d.ev("the server's certificate is not valid yet: clients that verify certificates fail at the tls stage".into());
        d.add(cause(C::TlsCertNotYetValid));
    }
    if cx.flag(Stage::Tls, "legacy_only") {
        let v = cx
            .fact(Stage::Tls, "version")
            .unwrap_or_else(|| "legacy TLS".into());
        d.ev(format!(
            "the server negotiated only {v}: clients with TLS 1.0 / 1.1 disabled cannot connect"
        ));
        d.add(cause(C::TlsVersionMismatch));
    }
    Diagnosis {
        fault_class: FaultClass::None,
        causes: d.causes,
        evidence: d.evidence,
    }
}

fn classify(cx: &Ctx<'_>, kind: &FailureKind, by: Side, d: &mut Builder) {
    use FaultClass as F;
    let stage = cx.stage;
    match kind {
        FailureKind::Refused => {
            d.ev(format!(
                "TCP connection to {} refused: RST in answer to the SYN (from {by})",
                cx.r.server
            ));
            if by == Side::Network {
                d.set(
                    F::Network,
                    &[C::FirewallRejects, C::RemoteDesktopDisabled, C::WrongPort],
                );
            } else {
                d.set(
                    F::ServerConfiguration,
                    &[C::RemoteDesktopDisabled, C::FirewallRejects, C::WrongPort],
                );
            }
        }
        FailureKind::Unreachable { detail } => {
            d.ev(format!("{} unreachable: {detail}", cx.r.server));
            d.set(F::Network, &[C::NameResolutionOrRouting, C::HostDown]);
        }
        FailureKind::TimedOut {
            waiting_for,
            after_ms,
        } => {
            let waited =
                format!(
                "no answer from the {waiting_for} for {after_ms} ms at the {stage} stage{} ({})",
                cx.after_what().map(|a| format!(", after {a}")).unwrap_or_default(),
                cx.bytes_clause()
            );
            d.ev(waited);
            timed_out(cx, *waiting_for, d);
        }
        FailureKind::Reset => {
            d.ev(cx.end_sentence("RST", by));
            reset(cx, by, d);
            // What the RST's own headers say about who sent it.
            if let Some(e) = cx.fact(stage, "reset_evidence") {
                d.ev(e);
            }
            match cx.fact(stage, "reset_provenance").as_deref() {
                Some("injected") => {
                    d.class = F::Network;
                    d.first(cause(C::MiddleboxReset));
                    d.causes.retain(|c| {
                        c.id != C::EndpointSecurityServer && c.id != C::EndpointSecurityClient
                    });
                }
                Some("host") => d.causes.retain(|c| c.id != C::MiddleboxReset),
                _ => {}
            }
        }
        FailureKind::Closed { tls_close_notify } => {
            let what = if *tls_close_notify {
                "TLS close_notify and FIN"
            } else {
                "FIN"
            };
            d.ev(cx.end_sentence(what, by));
            closed(cx, by, d);
        }
        FailureKind::NegotiationFailure(n) => {
            let (code, name) = (n.code, n.name());
            let requested = cx
                .fact(Stage::X224, "requested_protocols")
                .unwrap_or_else(|| "?".into());
            d.ev(format!(
                "the server answered the X.224 Connection Request for {requested} with RDP_NEG_FAILURE {name} (0x{code:08X})"
            ));
            let (class, ids): (F, &[CauseId]) = match code {
                0x1 => (F::Policy, &[C::TlsRequired, C::ProtocolMismatch]),
                0x2 => (F::Policy, &[C::RdpSecurityOnly, C::ProtocolMismatch]),
                0x3 => (
                    F::ServerConfiguration,
                    &[C::ServerCannotCreateKeys, C::TlsCertUnusable],
                ),
                0x4 => (F::ClientConfiguration, &[C::InconsistentFlags]),
                0x5 => (F::Policy, &[C::NlaRequired, C::ProtocolMismatch]),
                0x6 => (F::Policy, &[C::ClientCertAuthRequired]),
                0x7 => (F::Policy, &[C::EntraAuthRequired]),
                _ => (F::Policy, &[C::ProtocolMismatch]),
            };
            d.set(class, ids);
        }
        FailureKind::ProtocolMismatch {
            requested,
            selected,
        } => {
            d.ev(format!(
                "the client requested {} and the server selected {}, which the client did not offer",
                protocol_names::text(*requested),
                protocol_names::text(*selected)
            ));
            let sel = Some(*selected);
            let req = Some(*requested);
            let nla = SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX;
            let offered = |p: SecurityProtocol| req.is_some_and(|r| r.intersects(p));
            match sel {
                Some(s) if s.is_empty() => {
                    d.set(F::Policy, &[C::RdpSecurityOnly, C::ProtocolMismatch])
                }
                Some(s) if s.intersects(nla) && !offered(nla) => {
                    d.set(F::Policy, &[C::NlaRequired, C::ProtocolMismatch])
                }
                Some(s) if s.contains(SecurityProtocol::SSL) && !offered(SecurityProtocol::SSL) => {
                    d.set(F::Policy, &[C::TlsRequired, C::ProtocolMismatch])
                }
                _ => d.set(F::Policy, &[C::ProtocolMismatch]),
            }
        }
        FailureKind::TlsAlert(alert) => {
            let (level, description, code) = (alert.level_name(), alert.description(), alert.code);
            d.ev(format!(
                "TLS alert {level} {description} ({code}) from {by}{}",
                cx.after_what()
                    .map(|a| format!(" after {a}"))
                    .unwrap_or_default()
            ));
            tls_alert(cx, by, code, d);
        }
        FailureKind::TlsFailure { detail } => {
            d.ev(format!("TLS handshake failed without an alert: {detail}"));
            let l = detail.to_ascii_lowercase();
            if cx.flag(Stage::Tls, "cert_expired") {
                d.set(
                    F::ServerConfiguration,
                    &[C::TlsCertExpired, C::ClientRejectsCert],
                );
            } else if l.contains("cipher") || l.contains("suite") {
                d.set(
                    F::ServerConfiguration,
                    &[C::TlsCipherMismatch, C::TlsVersionMismatch],
                );
            } else if l.contains("certificate") {
                d.set(
                    F::ClientConfiguration,
                    &[C::ClientRejectsCert, C::TlsCertUnusable],
                );
            } else {
                d.set(
                    F::ServerConfiguration,
                    &[
                        C::TlsVersionMismatch,
                        C::TlsCipherMismatch,
                        C::ServerCannotCreateKeys,
                    ],
                );
            }
        }
        FailureKind::AuthFailure(a) => auth_failure(cx, a, d),
        FailureKind::Denied { detail } => denied(cx, by, detail, d),
        FailureKind::ProtocolError { what, offset } => {
            d.ev(format!(
                "malformed data from the {by} at the {stage} stage{}: {what}",
                offset
                    .map(|o| format!(" (byte {o} of its stream)"))
                    .unwrap_or_default()
            ));
            if by == Side::Client {
                d.set(F::ClientConfiguration, &[C::MalformedClientData]);
            } else if stage <= Stage::X224 {
                d.set(
                    F::ServerConfiguration,
                    &[C::NotRdpService, C::MalformedServerData],
                );
            } else if (Stage::Mcs..=Stage::Security).contains(&stage)
                && (cx.fact(Stage::Mcs, "encryption_level").is_some()
                    || what.contains("security settings"))
            {
                d.set(
                    F::ClientConfiguration,
                    &[C::RdpEncryptionLevel, C::MalformedServerData],
                );
            } else {
                d.set(
                    F::ServerConfiguration,
                    &[C::MalformedServerData, C::MiddleboxReset],
                );
            }
        }
        FailureKind::Stopped => {
            d.ev(format!(
                "stopped after the {stage} stage by request; every stage up to it passed"
            ));
        }
        // Only the gateway hop answers with HTTP statuses and HRESULTs (see `gateway::classify`).
        FailureKind::HttpStatus { .. } | FailureKind::GatewayError { .. } => {
            gateway::classify(cx, kind, by, d);
        }
        FailureKind::Dropped {
            mtu_black_hole,
            never_arrived,
            ..
        } => {
            let between = cx
                .fact(stage, "dropped_between")
                .unwrap_or_else(|| "client and the server".into());
            if *never_arrived {
                d.ev(format!(
                    "{kind}: dropped between the {between} (TCP evidence at the receiving end: a hole of {} bytes in the sender's stream, the largest segment that arrived {} bytes)",
                    cx.fact(stage, "missing_largest").unwrap_or_else(|| "?".into()),
                    cx.fact(stage, "largest_segment_arrived")
                        .unwrap_or_else(|| "?".into())
                ));
            } else {
                d.ev(format!(
                    "{kind}: dropped between the {between} (TCP evidence, {} bytes never acknowledged)",
                    cx.fact(stage, "unacked_bytes")
                        .unwrap_or_else(|| "?".into())
                ));
            }
            if *mtu_black_hole {
                d.set(
                    F::Network,
                    &[C::MtuBlackHole, C::MiddleboxDrops, C::PacketLoss],
                );
            } else {
                d.set(
                    F::Network,
                    &[C::MiddleboxDrops, C::PacketLoss, C::MtuBlackHole],
                );
            }
        }
        FailureKind::CaptureEnded => {
            d.ev(format!(
                "the capture ends during the {stage} stage ({}) without a failure",
                cx.bytes_clause()
            ));
            d.set(F::None, &[C::CaptureIncomplete]);
        }
    }
}

fn timed_out(cx: &Ctx<'_>, waiting_for: Side, d: &mut Builder) {
    use FaultClass as F;
    let stage = cx.stage;
    if waiting_for == Side::Client {
        d.set(F::ClientConfiguration, &[C::ClientStalled]);
        return;
    }
    if stage == Stage::Tcp {
        d.set(
            F::Network,
            &[C::FirewallDrops, C::HostDown, C::NameResolutionOrRouting],
        );
        return;
    }
    let server_answered = cx.s2c() > 0;
    if server_answered {
        // The server started the stage and then went quiet: the path lost data mid-stage.
        d.ev(format!(
            "the server had sent {} bytes in the {stage} stage before it went silent: the handshake stalled mid-stage",
            cx.s2c()
        ));
        if stage == Stage::Tls {
            d.set(
                F::Network,
                &[
                    C::PacketLoss,
                    C::MtuBlackHole,
                    C::MiddleboxDrops,
                    C::ServerHung,
                ],
            );
        } else {
            d.set(F::Network, &[C::PacketLoss, C::ServerHung]);
        }
        return;
    }
    match stage {
        Stage::X224 => d.set(
            F::ServerHealth,
            &[
                C::ServerHung,
                C::NotRdpService,
                C::MiddleboxDrops,
                C::PacketLoss,
            ],
        ),
        Stage::Tls => d.set(
            F::Network,
            &[
                C::MiddleboxDrops,
                C::PacketLoss,
                C::ServerHung,
                C::ServerCannotCreateKeys,
            ],
        ),
        Stage::Credssp => d.set(
            F::ServerHealth,
            &[C::ServerSlowAuth, C::PacketLoss, C::ServerHung],
        ),
        _ => d.set(F::ServerHealth, &[C::ServerHung, C::PacketLoss]),
    }
}

fn reset(cx: &Ctx<'_>, by: Side, d: &mut Builder) {
    use FaultClass as F;
    let stage = cx.stage;
    match by {
        Side::Client => {
            d.ev(
                "the client itself reset the connection: software on the client side ended it"
                    .into(),
            );
            if stage == Stage::Tls && cx.flag(Stage::Tls, "cert_expired") {
                d.set(
                    F::ServerConfiguration,
                    &[C::TlsCertExpired, C::ClientRejectsCert],
                );
            } else {
                d.set(
                    F::ClientConfiguration,
                    &[C::EndpointSecurityClient, C::ClientAborted],
                );
            }
        }
        Side::Network => d.set(F::Network, &[C::MiddleboxReset, C::EndpointSecurityServer]),
        Side::Server => match stage {
            Stage::Tcp | Stage::X224 => d.set(
                F::ServerConfiguration,
                &[
                    C::ServerDeniedConnection,
                    C::MiddleboxReset,
                    C::EndpointSecurityServer,
                ],
            ),
            Stage::Tls => {
                if cx.s2c() == 0 {
                    d.ev(format!(
                        "the server sent nothing in the tls stage before the reset{}",
                        cx.fact(Stage::X224, "selected_protocol")
                            .map(|p| format!(" although it had selected {p}"))
                            .unwrap_or_default()
                    ));
                }
                d.set(
                    F::ServerConfiguration,
                    &[
                        C::EndpointSecurityServer,
                        C::MiddleboxReset,
                        C::ServerCannotCreateKeys,
                    ],
                );
            }
            Stage::Credssp => {
                let after_authenticate = cx.last_pdu().is_some_and(|(who, what)| {
                    who == Side::Client && what.is_ntlm(NtlmKind::Authenticate)
                });
                let second = if after_authenticate {
                    C::CredentialsRejectedNoErrorCode
                } else {
                    C::ServerDeniedConnection
                };
                d.set(
                    F::ServerConfiguration,
                    &[C::CredsspServerFailure, second, C::EndpointSecurityServer],
                );
            }
            Stage::Licensing => d.set(
                F::ServerConfiguration,
                &[C::LicensingFailed, C::ServerDeniedConnection],
            ),
            _ => d.set(
                F::ServerConfiguration,
                &[
                    C::ServerDeniedConnection,
                    C::EndpointSecurityServer,
                    C::ServerHung,
                ],
            ),
        },
    }
}

fn closed(cx: &Ctx<'_>, by: Side, d: &mut Builder) {
    use FaultClass as F;
    let stage = cx.stage;
    match by {
        Side::Client => {
            if stage == Stage::Tls && cx.flag(Stage::Tls, "cert_expired") {
                d.set(
                    F::ServerConfiguration,
                    &[C::TlsCertExpired, C::ClientRejectsCert],
                );
            } else if stage == Stage::Tls {
                d.set(
                    F::ClientConfiguration,
                    &[C::ClientRejectsCert, C::ClientAborted],
                );
            } else {
                d.set(F::ClientConfiguration, &[C::ClientAborted]);
            }
        }
        Side::Network => d.set(F::Network, &[C::MiddleboxReset]),
        Side::Server => match stage {
            Stage::Tcp | Stage::X224 => {
                d.ev("the server closed without an RDP_NEG_FAILURE: it refused the connection without saying why".into());
                d.set(
                    F::ServerConfiguration,
                    &[
                        C::ServerDeniedConnection,
                        C::ProtocolMismatch,
                        C::NotRdpService,
                    ],
                );
            }
            Stage::Tls => {
                if cx.s2c() == 0 {
                    d.ev("the server closed right after the ClientHello without sending a byte of TLS".into());
                    d.set(
                        F::ServerConfiguration,
                        &[
                            C::ServerCannotCreateKeys,
                            C::EndpointSecurityServer,
                            C::TlsVersionMismatch,
                        ],
                    );
                } else {
                    d.set(
                        F::ServerConfiguration,
                        &[
                            C::TlsVersionMismatch,
                            C::TlsCipherMismatch,
                            C::TlsCertUnusable,
                            C::ServerCannotCreateKeys,
                        ],
                    );
                }
            }
            Stage::Credssp => d.set(
                F::ServerConfiguration,
                &[
                    C::CredsspServerFailure,
                    C::UserNotAuthorized,
                    C::EndpointSecurityServer,
                ],
            ),
            Stage::Licensing => d.set(
                F::ServerConfiguration,
                &[C::LicensingFailed, C::ServerDeniedConnection],
            ),
            Stage::Mcs | Stage::Channels | Stage::Security => d.set(
                F::ServerConfiguration,
                &[
                    C::ServerDeniedConnection,
                    C::RdpEncryptionLevel,
                    C::UserNotAuthorized,
                ],
            ),
            _ => d.set(
                F::ServerConfiguration,
                &[
                    C::ServerDeniedConnection,
                    C::ProtocolIncompatibility,
                    C::ServerSessionFailure,
                ],
            ),
        },
    }
}

fn tls_alert(cx: &Ctx<'_>, by: Side, code: u8, d: &mut Builder) {
    use FaultClass as F;
    if by == Side::Client {
        if cx.flag(Stage::Tls, "cert_expired") {
            d.set(
                F::ServerConfiguration,
                &[C::TlsCertExpired, C::ClientRejectsCert],
            );
        } else if cx.flag(Stage::Tls, "cert_not_yet_valid") {
            d.set(
                F::ServerConfiguration,
                &[C::TlsCertNotYetValid, C::ClientRejectsCert],
            );
        } else {
            match code {
                // bad_certificate .. certificate_unknown, unknown_ca, access_denied
                42..=46 | 48 | 49 => d.set(
                    F::ClientConfiguration,
                    &[C::ClientRejectsCert, C::TlsCertUnusable],
                ),
                70 => d.set(F::ServerConfiguration, &[C::TlsVersionMismatch]),
                40 | 71 => d.set(
                    F::ServerConfiguration,
                    &[C::TlsCipherMismatch, C::TlsVersionMismatch],
                ),
                _ => d.set(
                    F::ClientConfiguration,
                    &[C::TlsAlertOther, C::ClientAborted],
                ),
            }
        }
        return;
    }
    match code {
        // handshake_failure: Windows answers so when it cannot use its certificate's key.
        40 => d.set(
            F::ServerConfiguration,
            &[
                C::ServerCannotCreateKeys,
                C::TlsCipherMismatch,
                C::TlsVersionMismatch,
            ],
        ),
        70 => d.set(
            F::ServerConfiguration,
            &[C::TlsVersionMismatch, C::TlsCipherMismatch],
        ),
        71 => d.set(
            F::ServerConfiguration,
            &[C::TlsCipherMismatch, C::TlsVersionMismatch],
        ),
        80 => d.set(
            F::ServerConfiguration,
            &[C::ServerCannotCreateKeys, C::TlsCertUnusable],
        ),
        _ => d.set(
            F::ServerConfiguration,
            &[C::TlsAlertOther, C::TlsVersionMismatch],
        ),
    }
}

/// Cause and class for a CredSSP errorCode.
fn ntstatus_cause(code: u32) -> (FaultClass, CauseId) {
    use FaultClass as F;
    match code {
        0xC000006D | 0x8009030C => (F::Credentials, C::WrongPasswordOrUser),
        0xC000006A => (F::Credentials, C::WrongPassword),
        0xC0000064 => (F::Credentials, C::NoSuchUser),
        0xC000006E => (F::Credentials, C::AccountRestriction),
        0xC000006F => (F::Policy, C::LogonHours),
        0xC0000070 => (F::Policy, C::WorkstationRestriction),
        0xC0000071 => (F::Credentials, C::PasswordExpired),
        0xC0000072 => (F::Credentials, C::AccountDisabled),
        0xC0000193 => (F::Credentials, C::AccountExpired),
        0xC0000224 => (F::Credentials, C::PasswordMustChange),
        0xC0000234 => (F::Credentials, C::AccountLockedOut),
        0xC000015B => (F::Policy, C::LogonTypeNotGranted),
        0xC0000022 => (F::Policy, C::AccessDenied),
        0xC000005E | 0x80090311 => (F::ServerHealth, C::NoLogonServers),
        0xC0000133 => (F::ServerConfiguration, C::TimeSkew),
        0xC000018B => (F::ServerConfiguration, C::TrustBroken),
        0xC0000413 => (F::Policy, C::AuthFirewall),
        0xC0000380 => (F::Credentials, C::WrongPin),
        0x80090322 => (F::ClientConfiguration, C::WrongPrincipal),
        0x80090302 => (F::Policy, C::CredsspOracle),
        _ => (F::Credentials, C::AuthFailureOther),
    }
}

fn auth_failure(cx: &Ctx<'_>, a: &crate::stage::AuthFailure, d: &mut Builder) {
    let detail = &a.detail;
    use FaultClass as F;
    let user = cx
        .fact(Stage::Credssp, "ntlm_user")
        .map(|u| format!(" for user {u:?}"))
        .unwrap_or_default();
    match a.ntstatus {
        Some(code) => {
            let name = a.name().unwrap_or("unknown NTSTATUS");
            d.ev(format!(
                "the server answered the NTLM AUTHENTICATE{user} with TSRequest errorCode 0x{code:08X} ({name})"
            ));
            let (class, id) = ntstatus_cause(code);
            d.set(class, &[id]);
            if id == C::WrongPasswordOrUser {
                d.add(cause(C::NoSuchUser));
            }
        }
        None => {
            let notify = if cx
                .fact(Stage::Tls, "alert")
                .is_some_and(|a| a.contains("close_notify"))
                || detail.contains("close_notify")
            {
                " (TLS close_notify, then FIN)"
            } else {
                ""
            };
            d.ev(format!(
                "the server closed the connection right after the NTLM AUTHENTICATE{user}{notify}; it sent no TSRequest \
                 errorCode ({})",
                cx.bytes_clause()
            ));
            d.set(
                F::Credentials,
                &[
                    C::CredentialsRejectedNoErrorCode,
                    C::UserNotAuthorized,
                    C::CredsspServerFailure,
                ],
            );
        }
    }
}

fn set_error_info_cause(code: u32) -> (FaultClass, CauseId) {
    use FaultClass as F;
    match code {
        0x7 => (F::ServerConfiguration, C::ServerDeniedConnection),
        0x9 => (F::Policy, C::UserNotAuthorized),
        0xA => (F::Policy, C::FreshCredentialsRequired),
        0x3 | 0x4 => (F::Policy, C::SessionTimeLimit),
        0x5 => (F::Policy, C::SessionTakenOver),
        0x1 | 0x2 | 0xB | 0xC => (F::Policy, C::AdminDisconnect),
        0x6 | 0xF..=0x1A => (F::ServerHealth, C::ServerSessionFailure),
        0x100..=0x10A => (F::ServerConfiguration, C::LicensingFailed),
        0x400..=0x412 => (F::ServerConfiguration, C::BrokerFailed),
        0x1191..=0x1195 => (F::ClientConfiguration, C::RdpEncryptionLevel),
        0x10C9..=0x1190 => (F::ClientConfiguration, C::ProtocolIncompatibility),
        _ => (F::ServerConfiguration, C::ServerDeniedConnection),
    }
}

fn denied(cx: &Ctx<'_>, by: Side, detail: &str, d: &mut Builder) {
    use FaultClass as F;
    d.ev(format!(
        "the {by} denied the connection at the {} stage: {detail}",
        cx.stage
    ));
    if let Some(code) = cx.set_error_info() {
        let (name, meaning) = codes::find(codes::SET_ERROR_INFO, code)
            .map(|e| (e.name, e.meaning))
            .unwrap_or(("unknown errorInfo", "not in MS-RDPBCGR 2.2.5.1.1"));
        d.ev(format!(
            "the server sent Set Error Info {name} (0x{code:08X}): {meaning}"
        ));
        let (class, id) = set_error_info_cause(code);
        let mut c = cause(id);
        c.title = format!("{} (Set Error Info {name})", c.title);
        d.class = class;
        d.first(c);
        if id == C::ServerDeniedConnection {
            d.add(cause(C::UserNotAuthorized));
        }
        return;
    }
    if detail.contains("Early User Authorization")
        || detail.to_ascii_lowercase().contains("access denied")
    {
        d.set(F::Policy, &[C::UserNotAuthorized, C::AccountDisabled]);
    } else if cx.stage == Stage::Licensing
        || cx.fact(Stage::Licensing, "license_error_code").is_some()
    {
        d.set(
            F::ServerConfiguration,
            &[C::LicensingFailed, C::ServerDeniedConnection],
        );
    } else {
        d.set(
            F::ServerConfiguration,
            &[
                C::ServerDeniedConnection,
                C::UserNotAuthorized,
                C::LicensingFailed,
            ],
        );
    }
}

/// Facts worth quoting whatever the failure: the certificate, the selected protocol, the server's name.
fn context_evidence(cx: &Ctx<'_>, d: &mut Builder) {
    if cx.flag(Stage::Tls, "cert_expired") {
        let when = cx
            .fact(Stage::Tls, "cert_not_after")
            .unwrap_or_else(|| "?".into());
        d.ev(format!("the server's certificate expired on {when}"));
        // An expired certificate is worth a look whenever the connection died at or after TLS.
        if cx.stage >= Stage::Tls && !d.causes.iter().any(|c| c.id == C::TlsCertExpired) {
            d.add(cause(C::TlsCertExpired));
        }
    }
    if cx.flag(Stage::Tls, "cert_not_yet_valid") {
        let from = cx
            .fact(Stage::Tls, "cert_not_before")
            .unwrap_or_else(|| "?".into());
        d.ev(format!(
            "the server's certificate is not valid before {from}"
        ));
    }
    if cx.flag(Stage::Tls, "cert_self_signed") && cx.stage == Stage::Tls {
        d.ev("the server's certificate is self-signed".into());
    }
    if cx.stage > Stage::X224 {
        if let Some(p) = cx.fact(Stage::X224, "selected_protocol") {
            d.ev(format!("X.224 negotiation passed: the server selected {p}"));
        }
    }
    if let (Some(v), true) = (cx.fact(Stage::Tls, "version"), cx.stage > Stage::Tls) {
        let suite = cx.fact(Stage::Tls, "cipher_suite").unwrap_or_default();
        d.ev(format!("TLS passed: {v} {suite}").trim_end().to_owned());
    }
    if let Some(level) = cx.fact(Stage::Mcs, "encryption_level") {
        if cx.stage >= Stage::Mcs {
            d.ev(format!(
                "the server enforces standard RDP security encryption level {level}"
            ));
        }
    }
    if let Some(name) = cx
        .fact(Stage::Credssp, "ntlm_dns_computer_name")
        .or_else(|| cx.fact(Stage::Credssp, "ntlm_nb_computer_name"))
    {
        let os = cx
            .fact(Stage::Credssp, "ntlm_os_version")
            .map(|v| format!(", OS version {v}"))
            .unwrap_or_default();
        d.ev(format!(
            "the server identified itself as {name} in its NTLM CHALLENGE{os}"
        ));
    }
    if let Some(st) = cx.st {
        if st.duration_ms > 0.0 && !matches!(st.verdict, Verdict::Ok) {
            d.ev(format!(
                "the {} stage lasted {} ms",
                st.stage,
                fmt_ms(st.duration_ms)
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------------------------

fn explanation(kind: &'static str, e: &Code) -> Explanation {
    Explanation {
        code: format!("0x{:X}", e.code),
        kind,
        name: e.name.to_owned(),
        meaning: e.meaning.to_owned(),
        stage: e.stage,
        command: e.command.to_owned(),
    }
}

fn mstsc(code: u32) -> Option<&'static Code> {
    codes::find(codes::MSTSC_DOCUMENTED, code).or_else(|| codes::find(codes::MSTSC_INTERNAL, code))
}

/// The extended reason `ext`; values of the protocol range are the server's Set Error Info codes.
fn extended(ext: u32, code: Option<u32>) -> Option<Explanation> {
    if let Some(e) = codes::find(codes::EXTENDED_REASONS, ext) {
        let mut x = explanation(KIND_EXTENDED, e);
        if matches!(ext, 7 | 8) && code == Some(0x904) {
            x.meaning = "with 0x904 this value comes from mstsc itself, not from the server: the socket closed (FIN or RST) \
                         while the connection was still being set up and the server had sent no Set Error Info, so the \
                         client guessed 'server denied the connection'. It narrows 0x904 to the setup phase (X.224, TLS, \
                         CredSSP); the stage where rdprobe sees the connection die tells the causes apart"
                .to_owned();
        }
        return Some(x);
    }
    if (0x1000..=0x7FFF).contains(&ext) {
        let e = codes::find(codes::SET_ERROR_INFO, ext)?;
        let mut x = explanation(KIND_EXTENDED, e);
        x.meaning = format!("the server's Set Error Info code {}: {}", e.name, e.meaning);
        return Some(x);
    }
    None
}

/// Everything known about `code` (every table that has it), then about the extended reason `ext`.
pub fn explain(code: u32, ext: Option<u32>) -> Vec<Explanation> {
    let mut out = Vec::new();
    if let Some(e) = mstsc(code) {
        out.push(explanation(KIND_MSTSC, e));
    }
    if let Some(e) = codes::find(codes::SET_ERROR_INFO, code) {
        out.push(explanation(KIND_SET_ERROR_INFO, e));
    } else if ext.is_none() {
        // Extended reasons that have no Set Error Info twin (8, 267, 768, the range bounds).
        if let Some(e) = codes::find(codes::EXTENDED_REASONS, code) {
            out.push(explanation(KIND_EXTENDED, e));
        }
    }
    if let Some(e) = codes::find(codes::NEG_FAILURES, code) {
        out.push(explanation(KIND_NEG_FAILURE, e));
    }
    if let Some(e) = codes::find(codes::NTSTATUS, code) {
        out.push(explanation(KIND_NTSTATUS, e));
    }
    if let Some(x) = ext.and_then(|x| extended(x, Some(code))) {
        out.push(x);
    }
    // Gateway codes come as the Win32 code (0x59DA) or its HRESULT (0x800759DA).
    let hr = if code & 0xFFFF_0000 == 0 && code != 0 {
        0x8007_0000 | code
    } else {
        code
    };
    if let Some(e) = codes::find(codes::GATEWAY_HRESULTS, hr) {
        out.push(explanation(KIND_GATEWAY, e));
    }
    out
}

/// Parses "0x904", "904h", "2308", "-1073741715" (a signed NTSTATUS) or bare hex with a letter ("C000006D").
fn parse_u32(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    if let Some(h) = t.strip_suffix('h').or_else(|| t.strip_suffix('H')) {
        if !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()) {
            return u32::from_str_radix(h, 16).ok();
        }
    }
    if let Some(n) = t.strip_prefix('-') {
        if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
            return t.parse::<i32>().ok().map(|v| v as u32);
        }
        return None;
    }
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse::<u32>().ok();
    }
    if !t.is_empty() && t.len() <= 8 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        return u32::from_str_radix(t, 16).ok();
    }
    None
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Looks a name up in every table: (kind, entry).
fn find_by_name(name: &str) -> Vec<(&'static str, &'static Code)> {
    let tables: [(&'static str, &'static [Code]); 7] = [
        (KIND_MSTSC, codes::MSTSC_DOCUMENTED),
        (KIND_MSTSC, codes::MSTSC_INTERNAL),
        (KIND_EXTENDED, codes::EXTENDED_REASONS),
        (KIND_NEG_FAILURE, codes::NEG_FAILURES),
        (KIND_NTSTATUS, codes::NTSTATUS),
        (KIND_SET_ERROR_INFO, codes::SET_ERROR_INFO),
        (KIND_GATEWAY, codes::GATEWAY_HRESULTS),
    ];
    tables
        .iter()
        .filter_map(|(k, t)| codes::find_name(t, name).map(|e| (*k, e)))
        .collect()
}

/// [`explain`] for codes given as text: hex ("0x904"), decimal ("2308") or a name
/// ("STATUS_LOGON_FAILURE", "HYBRID_REQUIRED_BY_SERVER", "ERRINFO_IDLE_TIMEOUT", "exDiscReasonNoInfo").
/// A well-formed name that no table knows gives an empty list.
pub fn explain_str(s: &str, ext: Option<&str>) -> Result<Vec<Explanation>, ExplainError> {
    let ext = match ext {
        None => None,
        Some(x) => Some(match parse_u32(x) {
            Some(v) => v,
            None if is_name(x.trim()) => {
                match codes::find_name(codes::EXTENDED_REASONS, x.trim()) {
                    Some(e) => e.code,
                    None => return Err(ExplainError::Unreadable(x.to_owned())),
                }
            }
            None => return Err(ExplainError::Unreadable(x.to_owned())),
        }),
    };
    if let Some(code) = parse_u32(s) {
        return Ok(explain(code, ext));
    }
    let name = s.trim();
    if !is_name(name) {
        return Err(ExplainError::Unreadable(s.to_owned()));
    }
    let found = find_by_name(name);
    let code = found.first().map(|(_, e)| e.code);
    let mut out: Vec<Explanation> = found.into_iter().map(|(k, e)| explanation(k, e)).collect();
    if let Some(x) = ext.and_then(|x| extended(x, code)) {
        out.push(x);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// rendering
// ---------------------------------------------------------------------------------------------

/// Wraps `text` at `width` columns, every line after the first indented by `indent` spaces.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut col = indent;
    let mut first = true;
    for word in text.split_whitespace() {
        if !first && col + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
        } else if !first {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
        first = false;
    }
    out
}

const WIDTH: usize = 110;

/// A few lines for people: fault class, evidence, causes with remedies.
pub fn render_diagnosis(d: &Diagnosis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "diagnosis: {}", d.fault_class.as_str());
    for e in &d.evidence {
        let _ = writeln!(out, "  evidence: {}", wrap(e, WIDTH, 12));
    }
    for (i, c) in d.causes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {}",
            i + 1,
            wrap(&format!("{} [{}]", c.title, c.id), WIDTH, 5)
        );
        let _ = writeln!(out, "     remedy: {}", wrap(&c.remedy, WIDTH, 13));
    }
    out
}

/// One block per explanation, as `rdprobe explain` prints them.
pub fn render_explanations(ex: &[Explanation]) -> String {
    let mut out = String::new();
    for (i, e) in ex.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let dec = u32::from_str_radix(e.code.trim_start_matches("0x"), 16).unwrap_or(0);
        let _ = writeln!(out, "{} ({dec})  {}  {}", e.code, e.kind, e.name);
        let _ = writeln!(out, "  meaning: {}", wrap(&e.meaning, WIDTH, 11));
        let _ = writeln!(out, "  stage:   {}", e.stage);
        let _ = writeln!(out, "  tells the causes apart: {}", e.command);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(parse_u32("0x904"), Some(0x904));
        assert_eq!(parse_u32("2308"), Some(2308));
        assert_eq!(parse_u32("904h"), Some(0x904));
        assert_eq!(parse_u32("C000006D"), Some(0xC000006D));
        assert_eq!(parse_u32("-1073741715"), Some(0xC000006D));
        assert_eq!(parse_u32("0x1_0000_0000"), None);
        assert_eq!(parse_u32("0x100000000"), None);
        assert_eq!(parse_u32(""), None);
        assert_eq!(parse_u32("-"), None);
        assert_eq!(parse_u32("STATUS_LOGON_FAILURE"), None);
    }

    #[test]
    fn every_cause_id_has_its_own_text() {
        let generic = catalog(C::Unclassified);
        for &id in CauseId::ALL {
            if id != C::Unclassified {
                assert_ne!(catalog(id), generic, "{id} has no catalog entry");
            }
        }
    }

    #[test]
    fn wrap_keeps_words_and_width() {
        let w = wrap("aaa bbb ccc ddd", 9, 2);
        assert_eq!(w, "aaa bbb\n  ccc ddd");
    }
}
