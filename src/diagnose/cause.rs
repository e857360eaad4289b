//! The cause ids of a diagnosis: one enum, so that a cause without its title and remedy, or an id
//! nobody produces, cannot exist. Each id serializes as the stable snake_case name the README
//! documents (and JSON reports carry); reading an unknown name back is an error listing the known ones.

use std::fmt;
use std::str::FromStr;

/// Declares the id enum, its names and the list of every id in one place (a hand-written list
/// beside the enum could miss a variant).
macro_rules! cause_ids {
    ($($v:ident = $s:literal,)*) => {
        /// A likely cause of a failure (stable ids, documented in the README).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CauseId {
            $($v,)*
        }

        impl CauseId {
            /// Every cause id, in catalog order.
            pub const ALL: &'static [CauseId] = &[$(CauseId::$v,)*];

            /// The stable name (`nla_required`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(CauseId::$v => $s,)*
                }
            }
        }
    };
}

cause_ids! {
    NameResolutionOrRouting = "name_resolution_or_routing",
    HostDown = "host_down",
    RemoteDesktopDisabled = "remote_desktop_disabled",
    FirewallRejects = "firewall_rejects",
    FirewallDrops = "firewall_drops",
    WrongPort = "wrong_port",
    TlsCertExpired = "tls_cert_expired",
    TlsCertNotYetValid = "tls_cert_not_yet_valid",
    TlsCertUnusable = "tls_cert_unusable",
    ServerCannotCreateKeys = "server_cannot_create_keys",
    NlaRequired = "nla_required",
    TlsRequired = "tls_required",
    RdpSecurityOnly = "rdp_security_only",
    ProtocolMismatch = "protocol_mismatch",
    ClientCertAuthRequired = "client_cert_auth_required",
    InconsistentFlags = "inconsistent_flags",
    EntraAuthRequired = "entra_auth_required",
    EndpointSecurityServer = "endpoint_security_server",
    EndpointSecurityClient = "endpoint_security_client",
    MiddleboxReset = "middlebox_reset",
    MiddleboxDrops = "middlebox_drops",
    PacketLoss = "packet_loss",
    MtuBlackHole = "mtu_black_hole",
    ServerHung = "server_hung",
    ServerSlowAuth = "server_slow_auth",
    NotRdpService = "not_rdp_service",
    ServerDeniedConnection = "server_denied_connection",
    UserNotAuthorized = "user_not_authorized",
    FreshCredentialsRequired = "fresh_credentials_required",
    LicensingFailed = "licensing_failed",
    BrokerFailed = "broker_failed",
    SessionTimeLimit = "session_time_limit",
    AdminDisconnect = "admin_disconnect",
    SessionTakenOver = "session_taken_over",
    ServerSessionFailure = "server_session_failure",
    ProtocolIncompatibility = "protocol_incompatibility",
    TlsVersionMismatch = "tls_version_mismatch",
    TlsCipherMismatch = "tls_cipher_mismatch",
    TlsAlertOther = "tls_alert_other",
    ClientRejectsCert = "client_rejects_cert",
    ClientAborted = "client_aborted",
    ClientStalled = "client_stalled",
    CredsspServerFailure = "credssp_server_failure",
    CredentialsRejectedNoErrorCode = "credentials_rejected_no_error_code",
    WrongPasswordOrUser = "wrong_password_or_user",
    WrongPassword = "wrong_password",
    NoSuchUser = "no_such_user",
    PasswordExpired = "password_expired",
    PasswordMustChange = "password_must_change",
    AccountDisabled = "account_disabled",
    AccountLockedOut = "account_locked_out",
    AccountExpired = "account_expired",
    AccountRestriction = "account_restriction",
    LogonHours = "logon_hours",
    WorkstationRestriction = "workstation_restriction",
    LogonTypeNotGranted = "logon_type_not_granted",
    AccessDenied = "access_denied",
    NoLogonServers = "no_logon_servers",
    TimeSkew = "time_skew",
    TrustBroken = "trust_broken",
    AuthFirewall = "auth_firewall",
    WrongPin = "wrong_pin",
    WrongPrincipal = "wrong_principal",
    CredsspOracle = "credssp_oracle",
    AuthFailureOther = "auth_failure_other",
    RdpEncryptionLevel = "rdp_encryption_level",
    MalformedServerData = "malformed_server_data",
    MalformedClientData = "malformed_client_data",
    CaptureIncomplete = "capture_incomplete",
    Unclassified = "unclassified",
    GwNotListening = "gw_not_listening",
    GwUnreachable = "gw_unreachable",
    GwTlsFailed = "gw_tls_failed",
    GwTlsInspection = "gw_tls_inspection",
    GwNotAGateway = "gw_not_a_gateway",
    GwLoginRedirect = "gw_login_redirect",
    GwForbidden = "gw_forbidden",
    GwWebsocketRefused = "gw_websocket_refused",
    GwWrongCredentials = "gw_wrong_credentials",
    GwAuthSchemeUnsupported = "gw_auth_scheme_unsupported",
    GwResetAfterAuth = "gw_reset_after_auth",
    GwTunnelRefused = "gw_tunnel_refused",
    GwCapDenied = "gw_cap_denied",
    GwRapDenied = "gw_rap_denied",
    GwTargetUnreachable = "gw_target_unreachable",
    GwSlow = "gw_slow",
    GwTlsCertExpired = "gw_tls_cert_expired",
}

impl CauseId {
    /// The ids of the RD Gateway hop (`gw_…`).
    pub fn is_gateway(self) -> bool {
        self.as_str().starts_with("gw_")
    }

    /// Title and remedy text.
    pub fn text(self) -> (&'static str, &'static str) {
        super::catalog(self)
    }
}

impl fmt::Display for CauseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a cause id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown cause id `{0}`; known ids: {known}", known = known_ids())]
pub struct UnknownCause(pub String);

fn known_ids() -> String {
    CauseId::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for CauseId {
    type Err = UnknownCause;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CauseId::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCause(s.to_owned()))
    }
}

impl PartialEq<&str> for CauseId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for CauseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CauseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in CauseId::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert_eq!(c.as_str().parse::<CauseId>(), Ok(*c));
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<CauseId>(&json).unwrap(), *c);
        }
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let e = "nla_requird".parse::<CauseId>().unwrap_err().to_string();
        assert!(e.contains("`nla_requird`"), "{e}");
        assert!(
            e.contains("nla_required, ") && e.contains("gw_wrong_credentials"),
            "{e}"
        );
        assert!(serde_json::from_str::<CauseId>("\"nope\"").is_err());
    }
}
