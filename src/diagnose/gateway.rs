//! Causes of a failure on the RD Gateway hop (stages `gw_tcp` … `gw_channel`), from the report's
//! gateway facts only: wrong gateway credentials, a login-page redirect by a reverse proxy, a
//! WebSocket upgrade refused, a reset right after NTLM, CAP / RAP policy denials with the name form
//! sent, the gateway unable to reach the server, TLS inspection in front of the gateway.

use super::{cause, Builder, CauseId, CauseId as C, Ctx, FaultClass as F};
use crate::stage::{FailureKind, Side, Stage};

/// Title and remedy of a gateway cause id.
pub(super) fn catalog(id: CauseId) -> Option<(&'static str, &'static str)> {
    Some(match id {
        C::GwNotListening => (
            "nothing listens on the gateway's address and port (RD Gateway service stopped, wrong port, or a firewall rejects)",
            "Check the gateway name and port (443 by default) and that the Remote Desktop Gateway service (TSGateway) and IIS run on it.",
        ),
        C::GwUnreachable => (
            "the gateway's address does not answer: DNS, routing or a firewall dropping the connection",
            "Resolve the gateway name and probe its IP (rdprobe probe ... --gateway 10.x.x.x); check the route and firewall to port 443.",
        ),
        C::GwTlsFailed => (
            "the TLS handshake with the gateway failed",
            "Check the gateway's certificate binding in IIS (Default Web Site, https) and the TLS versions and ciphers it allows.",
        ),
        C::GwTlsInspection => (
            "a TLS-inspecting proxy or firewall sits in front of the gateway: the certificate is not the gateway's",
            "Exempt the gateway's name from TLS inspection on the proxy or firewall: MS-TSGU (long-lived WebSocket, NTLM bound to \
             the connection) does not survive re-encryption.",
        ),
        C::GwNotAGateway => (
            "what answers on the gateway's port is not an RD Gateway (another web server, or not HTTP at all)",
            "Check which host the name resolves to and what listens on the port; RD Gateway answers RDG_OUT_DATA / WebSocket upgrades on /remoteDesktopGateway/.",
        ),
        C::GwLoginRedirect => (
            "a reverse proxy in front of the gateway redirects to a login page (pre-authentication that RDP clients cannot follow)",
            "Publish /remoteDesktopGateway/ on the reverse proxy with pass-through (no pre-authentication), or use a client that \
             supports the proxy's method; FreeRDP shows this as 'websocket: bad handshake'.",
        ),
        C::GwForbidden => (
            "the gateway (or a proxy in front of it) forbids the request (HTTP 403)",
            "Check the connection authorization policy (RD CAP) user groups and the IIS / proxy access rules for /remoteDesktopGateway/.",
        ),
        C::GwWebsocketRefused => (
            "the WebSocket upgrade was refused: a proxy in front of the gateway strips the Upgrade header, or the gateway only speaks the legacy HTTP transport",
            "Allow WebSocket upgrades on the proxy for /remoteDesktopGateway/, or use --gateway-transport http where the gateway offers it.",
        ),
        C::GwWrongCredentials => (
            "the gateway rejected the credentials (HTTP 401 after the authentication was sent)",
            "Check the gateway user name, domain and password (they may differ from the server's: --gateway-user / --gateway-domain, \
             RDPROBE_GATEWAY_PASSWORD); check the account is not locked out or expired in the gateway's domain.",
        ),
        C::GwAuthSchemeUnsupported => (
            "the gateway offers no authentication scheme the client can use",
            "Enable NTLM (Negotiate) or Basic on the gateway's /remoteDesktopGateway/ IIS application, or use a client with the offered scheme (Kerberos needs a KDC, smart card needs the card).",
        ),
        C::GwResetAfterAuth => (
            "the connection was reset right after the NTLM authentication: a proxy that does not keep the authenticated connection, \
             channel binding (Extended Protection) broken by TLS inspection, or the gateway cancelling the request (Request_Cancelled in its log)",
            "Look in the gateway's Microsoft-Windows-TerminalServices-Gateway log and IIS log for the request; disable connection \
             reuse across clients on any proxy; exempt the gateway from TLS inspection.",
        ),
        C::GwTunnelRefused => (
            "the gateway refused to create the tunnel",
            "rdprobe explain the HRESULT; check the gateway's event log (TerminalServices-Gateway) for the reason.",
        ),
        C::GwCapDenied => (
            "a connection authorization policy (RD CAP) or network access protection denied the user at the gateway",
            "Add the user (or a group they are in) to an RD CAP on the gateway; check the CAP's device redirection and NAP requirements.",
        ),
        C::GwRapDenied => (
            "a resource authorization policy (RD RAP) does not allow this user to reach this resource name (E_PROXY_RAP_ACCESSDENIED)",
            "Add the server to the RAP's computer group under the name form the client sends (FQDN vs NetBIOS vs IP address: the \
             RAP compares names literally), or connect with the name form the RAP lists.",
        ),
        C::GwTargetUnreachable => (
            "the gateway cannot reach the target server (E_PROXY_TS_CONNECTFAILED, or no answer to the channel request)",
            "From the gateway, check name resolution of the target and TCP to its RDP port (Test-NetConnection target -Port 3389); \
             check the firewall between gateway and server.",
        ),
        C::GwSlow => (
            "the gateway went silent in the middle of its own protocol (overloaded, or waiting on its domain controller / NPS)",
            "Check the gateway's load, its reachability of the domain controllers and the NPS server used for CAPs.",
        ),
        C::GwTlsCertExpired => (
            "the gateway's certificate has expired: mstsc and FreeRDP (without /cert:ignore) refuse the gateway",
            "Renew the gateway's certificate and bind it in RD Gateway Manager (Properties > SSL Certificate) and IIS.",
        ),
        _ => return None,
    })
}

/// Known TLS-inspection issuers (substrings of the issuer name, lowercase).
const INSPECTION_ISSUERS: &[&str] = &[
    "fortinet",
    "fortigate",
    "palo alto",
    "zscaler",
    "blue coat",
    "bluecoat",
    "symantec web",
    "netskope",
    "forcepoint",
    "sophos",
    "cisco umbrella",
    "mitmproxy",
    "burp",
    "websense",
    "checkpoint",
    "check point",
    "inspection",
];

/// True when the gateway's certificate looks re-signed by an inspecting proxy.
pub(super) fn inspected(cx: &Ctx<'_>) -> Option<String> {
    let issuer = cx.fact(Stage::GwTls, "cert_issuer")?;
    let l = issuer.to_ascii_lowercase();
    INSPECTION_ISSUERS
        .iter()
        .any(|k| l.contains(k))
        .then_some(issuer)
}

/// Classifies a failure on a gateway stage.
pub(super) fn classify(cx: &Ctx<'_>, kind: &FailureKind, by: Side, d: &mut Builder) {
    let stage = cx.stage;
    let gw = cx
        .fact(Stage::GwTcp, "gateway")
        .unwrap_or_else(|| "the gateway".into());
    if let Some(issuer) = inspected(cx) {
        d.ev(format!(
            "the gateway's certificate was issued by {issuer}, a TLS-inspection product"
        ));
        d.add(cause(C::GwTlsInspection));
    }
    match kind {
        FailureKind::Refused => {
            d.ev(format!("TCP connection to {gw} refused"));
            d.set(F::ServerConfiguration, &[C::GwNotListening]);
        }
        FailureKind::Unreachable { detail } => {
            d.ev(format!("{gw} unreachable: {detail}"));
            d.set(F::Network, &[C::GwUnreachable]);
        }
        FailureKind::HttpStatus {
            status,
            reason,
            location,
        } => {
            let server = cx
                .fact(Stage::GwHttp, "server_header")
                .map(|s| format!(" (Server: {s})"))
                .unwrap_or_default();
            d.ev(format!(
                "{gw} answered HTTP {status} {reason} at {stage}{server}"
            ));
            match status {
                301 | 302 | 303 | 307 | 308 => {
                    if let Some(l) = location {
                        d.ev(format!("the redirect goes to {l}"));
                    }
                    d.set(F::ServerConfiguration, &[C::GwLoginRedirect]);
                }
                401 => {
                    let schemes = cx.fact(stage, "www_authenticate").unwrap_or_default();
                    if stage == Stage::GwAuth && cx.flag(Stage::GwAuth, "credentials_sent") {
                        let user = cx.fact(Stage::GwAuth, "user").unwrap_or_else(|| "?".into());
                        d.ev(format!(
                            "the gateway answered 401 again after the {} authentication of {user}",
                            cx.fact(Stage::GwAuth, "scheme").unwrap_or_default()
                        ));
                        d.set(F::Credentials, &[C::GwWrongCredentials]);
                    } else {
                        d.ev(format!(
                            "schemes offered: {}",
                            if schemes.is_empty() {
                                "none".to_owned()
                            } else {
                                schemes
                            }
                        ));
                        if let Some(sch) = cx.fact(Stage::GwAuth, "scheme") {
                            d.ev(format!(
                                "the gateway answered the {sch} NEGOTIATE with 401 and no challenge: it does not take NTLM through {sch}"
                            ));
                        }
                        d.set(
                            F::ClientConfiguration,
                            &[C::GwAuthSchemeUnsupported, C::GwWrongCredentials],
                        );
                    }
                }
                403 => d.set(F::Policy, &[C::GwForbidden, C::GwCapDenied]),
                200 | 400 | 404 | 405 | 426 => {
                    d.set(
                        F::ServerConfiguration,
                        &[C::GwWebsocketRefused, C::GwNotAGateway],
                    );
                }
                _ => d.set(F::ServerHealth, &[C::GwNotAGateway]),
            }
        }
        FailureKind::GatewayError(h) => {
            let (code, name) = (h.code, h.name());
            d.ev(format!("{gw} answered {name} (0x{code:08X}) at {stage}"));
            match (stage, name.as_ref()) {
                (_, "E_PROXY_RAP_ACCESSDENIED") => {
                    let target = cx
                        .fact(Stage::GwChannel, "target")
                        .unwrap_or_else(|| "?".into());
                    let form = cx
                        .fact(Stage::GwChannel, "name_form")
                        .unwrap_or_else(|| "?".into());
                    let other = match form.as_str() {
                        "netbios" => "the FQDN",
                        "fqdn" => "the NetBIOS name",
                        _ => "the name",
                    };
                    d.ev(format!(
                        "the resource name sent was {target:?} ({form}); an RD RAP compares it literally with the names it lists: probe again with {other} of the server"
                    ));
                    d.set(F::Policy, &[C::GwRapDenied]);
                }
                (_, "E_PROXY_TS_CONNECTFAILED") => {
                    d.set(F::Network, &[C::GwTargetUnreachable]);
                }
                (_, "E_PROXY_NAP_ACCESSDENIED" | "E_PROXY_QUARANTINE_ACCESSDENIED")
                | (Stage::GwTunnel, "E_ACCESSDENIED" | "E_PROXY_REAUTH_CAP_FAILED") => {
                    d.set(F::Policy, &[C::GwCapDenied]);
                }
                (_, "E_PROXY_MAXCONNECTIONSREACHED" | "E_PROXY_INTERNALERROR") => {
                    d.set(F::ServerHealth, &[C::GwTunnelRefused]);
                }
                _ => d.set(F::ServerConfiguration, &[C::GwTunnelRefused]),
            }
        }
        FailureKind::Reset | FailureKind::Closed { .. } => {
            d.ev(format!(
                "the {by} ended the connection at {stage} ({})",
                kind
            ));
            match stage {
                Stage::GwAuth if cx.flag(Stage::GwAuth, "authenticate_sent") => {
                    d.ev("the end came right after the NTLM AUTHENTICATE".into());
                    d.set(
                        F::ServerConfiguration,
                        &[C::GwResetAfterAuth, C::GwTlsInspection],
                    );
                }
                Stage::GwChannel => d.set(F::Network, &[C::GwTargetUnreachable]),
                Stage::GwTls => d.set(
                    F::ServerConfiguration,
                    &[C::GwTlsFailed, C::GwTlsInspection],
                ),
                _ => d.set(
                    F::ServerConfiguration,
                    &[C::GwNotAGateway, C::GwTlsInspection],
                ),
            }
        }
        FailureKind::TimedOut { waiting_for, .. } => {
            if *waiting_for == Side::Client {
                d.set(F::ClientConfiguration, &[C::ClientStalled]);
                return;
            }
            match stage {
                Stage::GwTcp => d.set(F::Network, &[C::GwUnreachable]),
                Stage::GwChannel => {
                    d.ev(format!(
                        "{gw} accepted the tunnel but did not answer the channel request to {}: it is still trying to reach the server",
                        cx.fact(Stage::GwChannel, "target").unwrap_or_default()
                    ));
                    d.set(F::Network, &[C::GwTargetUnreachable]);
                }
                _ => d.set(F::ServerHealth, &[C::GwSlow]),
            }
        }
        FailureKind::TlsAlert { .. } | FailureKind::TlsFailure { .. } => {
            d.set(
                F::ServerConfiguration,
                &[C::GwTlsFailed, C::GwTlsInspection],
            );
        }
        FailureKind::ProtocolError { what, .. } => {
            d.ev(format!(
                "{gw} sent data rdprobe cannot read at {stage}: {what}"
            ));
            d.set(
                F::ServerConfiguration,
                &[C::GwNotAGateway, C::GwTlsInspection],
            );
        }
        FailureKind::AuthFailure(a) => {
            d.ev(format!("gateway authentication failed: {}", a.detail));
            d.set(F::Credentials, &[C::GwWrongCredentials]);
        }
        FailureKind::Stopped => {
            d.ev(format!(
                "stopped after the {stage} stage by request; every stage up to it passed"
            ));
        }
        _ => d.set(F::ServerConfiguration, &[C::GwTunnelRefused]),
    }
    if d.class == F::None && !matches!(kind, FailureKind::Stopped) {
        d.class = F::ServerConfiguration;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ConnectionReport, StageReport};
    use crate::stage::Verdict;

    fn stage(stage: Stage, verdict: Verdict, facts: &[(&str, serde_json::Value)]) -> StageReport {
        StageReport {
            stage,
            verdict,
            start_us: 0,
            duration_ms: 1.0,
            bytes_c2s: 10,
            bytes_s2c: 10,
            frames: Vec::new(),
            facts: facts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    /// A reset right after the NTLM AUTHENTICATE behind a certificate re-signed by an inspecting
    /// firewall: both causes, the reset first, and the issuer quoted.
    #[test]
    fn tls_inspection_in_front_of_the_gateway() {
        let reset = Verdict::Failed {
            kind: FailureKind::Reset,
            by: Side::Server,
        };
        let r = ConnectionReport {
            client: "10.0.0.5:50000".into(),
            server: "rdp01:3389 via gateway rdg:443".into(),
            stages: vec![
                stage(
                    Stage::GwTcp,
                    Verdict::Ok,
                    &[("gateway", serde_json::json!("rdg:443"))],
                ),
                stage(
                    Stage::GwTls,
                    Verdict::Ok,
                    &[(
                        "cert_issuer",
                        serde_json::json!("CN=FortiGate CA, O=Fortinet"),
                    )],
                ),
                stage(Stage::GwHttp, Verdict::Ok, &[]),
                stage(
                    Stage::GwAuth,
                    reset.clone(),
                    &[
                        ("scheme", serde_json::json!("NTLM")),
                        ("authenticate_sent", serde_json::json!(true)),
                    ],
                ),
            ],
            last_stage: Stage::GwAuth,
            verdict: reset,
            ended_by: Some(Side::Server),
            summary: String::new(),
            notes: Vec::new(),
            tcp: None,
        };
        let d = crate::diagnose::diagnose(&r);
        let ids: Vec<CauseId> = d.causes.iter().map(|c| c.id).collect();
        assert_eq!(ids[0], C::GwTlsInspection, "{ids:?}");
        assert!(ids.contains(&C::GwResetAfterAuth), "{ids:?}");
        assert!(d.evidence.iter().any(|e| e.contains("Fortinet")), "{d:?}");
        // Without the inspecting issuer, the reset after NTLM comes first.
        let mut plain = r.clone();
        plain.stages[1].facts.clear();
        let d = crate::diagnose::diagnose(&plain);
        assert_eq!(d.causes[0].id, C::GwResetAfterAuth);
    }

    #[test]
    fn every_gateway_cause_has_its_own_text() {
        let mut titles = std::collections::HashSet::new();
        for &id in CauseId::ALL.iter().filter(|c| c.is_gateway()) {
            let (t, _) = catalog(id).unwrap_or_else(|| panic!("no catalog entry for {id}"));
            assert!(titles.insert(t), "{id} shares its title");
        }
        assert!(
            catalog(C::NlaRequired).is_none(),
            "the gateway catalog holds only gw_ ids"
        );
    }
}
