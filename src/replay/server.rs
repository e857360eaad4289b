//! The server side of a captured connection, turned into a lab [`Scenario`].
//!
//! Pure code: reads the decoded report (what the server selected, which certificate it presented,
//! where and how it failed) and the Trace's timing (its think time before each answer), and writes
//! the scenario that makes the lab fail the same way, at the same stage, after about the same time.
//!
//! What maps to what:
//!
//! | capture | scenario |
//! |---|---|
//! | RDP_NEG_FAILURE code N (MS-RDPBCGR 2.2.1.2.2) | `security.negotiation_failure = N` (every client gets it) |
//! | selected protocol P (MS-RDPBCGR 2.2.1.2.1) | `security.supported` = P and the protocols below it; `select = P` when the client had not offered P |
//! | negotiated TLS version, certificate expired / not yet valid / weak key, subject CN | `tls.versions`, `tls.certificate`, `tls.subject` |
//! | fatal TLS alert from the server (handshake_failure) | `tls.certificate = "none"` (MS-RDPBCGR 5.4.5: no usable certificate) |
//! | CredSSP errorCode NTSTATUS (MS-CSSP 2.2.1) | `credssp.reject`, ending as captured |
//! | close right after the NTLM AUTHENTICATE | `credssp.reject` with `error_code = "none"` |
//! | Early User Authorization Result ACCESS_DENIED (MS-RDPBCGR 2.2.10.2) | `credssp.early_user_auth_denied` |
//! | server RST / FIN / close_notify / silence | fault `reset` / `close` / `close_notify` / `silence` at the point where it happened |
//! | MCS Disconnect Provider Ultimatum (MS-RDPBCGR 2.2.2.3) | fault `disconnect` |
//! | malformed server bytes before TLS | fault `malformed` with those bytes |
//! | server think time before each answer | `link.response_delays_ms`; before a RST/FIN, a `delay` fault |

use serde::Serialize;

use crate::decode::pdu::{
    stage_pdus, DomainKind, HandshakeMsg, NtlmKind, PduKind, ShareKind, StagePdu as Pdu,
};
use crate::report::ConnectionReport;
use crate::scenario::{
    CertificateKind, EndKind, Fault, FaultAction, FaultPoint, NegFailureCode, NtStatus, Protocol,
    Scenario, TlsVersion, User, MAX_MALFORMED_LEN,
};
use crate::stage::{FailureKind, Side, Stage, Verdict};
use crate::trace::{Dir, EventKind, Layer, Trace};

use super::timing::{server_timing, ServerTiming};
use super::ReplayError;

/// Choices the capture cannot make.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Scenario name; default `replay`.
    pub name: Option<String>,
    /// Where the capture came from, for the description.
    pub source: Option<String>,
    /// Accounts for NLA (the capture holds no password); default: the lab's `user` / `pass`.
    pub users: Option<Vec<User>>,
    /// Do not replay the server's think time.
    pub no_delays: bool,
}

/// A server behaviour derived from a capture.
#[derive(Clone, Debug, Serialize)]
pub struct ServerReplay {
    pub scenario: Scenario,
    /// The stage and verdict a client like the captured one should meet.
    pub expect_stage: Stage,
    pub expect_verdict: Verdict,
    /// The captured server's timing.
    pub timing: ServerTiming,
    /// How each part was derived, and what could not be reproduced exactly.
    pub notes: Vec<String>,
}

/// The PDUs of every stage, in order, as typed kinds.
fn flatten_pdus(report: &ConnectionReport) -> Vec<Pdu> {
    report.stages.iter().flat_map(stage_pdus).collect()
}

/// Server PDUs that are themselves the refusal (the scenario produces them by other means): the
/// ultimatum, set error info, RDP_NEG_FAILURE, a TSRequest errorCode, an Early User Authorization
/// Result ACCESS_DENIED and alerts (TLS alerts, and the licensing error alert, which the lab's own
/// licensing sends).
fn is_terminal_server_pdu(kind: &PduKind) -> bool {
    kind.is_any_alert()
        || kind.has_error_code()
        || matches!(
            kind,
            PduKind::Domain(DomainKind::DisconnectProviderUltimatum)
                | PduKind::Share(ShareKind::SetErrorInfo | ShareKind::LicenseErrorAlert)
                | PduKind::NegotiationFailure
                | PduKind::EarlyUserAuth { denied: true }
        )
}

/// Client PDUs that carry no request the server answers (close_notify and the like).
fn is_passive_client_pdu(kind: &PduKind) -> bool {
    kind.is_any_alert()
        || matches!(
            kind,
            PduKind::ApplicationData | PduKind::Share(ShareKind::LicenseErrorAlert)
        )
}

/// The client's Finished: in a handshake record, or the encrypted one after its ChangeCipherSpec.
fn is_finished(kind: &PduKind) -> bool {
    kind.has_handshake(HandshakeMsg::Finished)
        || *kind == PduKind::EncryptedHandshake { finished: true }
}

/// The lab's fault point where the server did what ended the connection: after the last server PDU
/// that is not itself the refusal, and after the client PDUs it had read by then.
fn failure_point(pdus: &[Pdu], notes: &mut Vec<String>) -> FaultPoint {
    let last_server = pdus
        .iter()
        .rposition(|p| p.side == Side::Server && !is_terminal_server_pdu(&p.kind));
    let pending: Vec<&Pdu> = pdus[last_server.map(|i| i + 1).unwrap_or(0)..]
        .iter()
        .filter(|p| p.side == Side::Client && !is_passive_client_pdu(&p.kind))
        .collect();
    let pending_in = |st: Stage| pending.iter().any(|p| p.stage == st);
    let Some(i) = last_server else {
        return FaultPoint::X224Request;
    };
    let last = &pdus[i];
    match last.stage {
        // A capture of a direct RDP conversation has no gateway (or dns) stages.
        Stage::Dns
        | Stage::GwTcp
        | Stage::GwTls
        | Stage::GwHttp
        | Stage::GwAuth
        | Stage::GwTunnel
        | Stage::GwChannel
        | Stage::Tcp
        | Stage::X224 => {
            if pending_in(Stage::Tls) {
                FaultPoint::TlsClientHello
            } else if pending_in(Stage::Mcs) {
                FaultPoint::McsConnectInitial
            } else {
                FaultPoint::X224Confirm
            }
        }
        Stage::Tls => {
            if pending_in(Stage::Credssp) {
                FaultPoint::CredsspNegotiate
            } else if pending_in(Stage::Mcs) {
                FaultPoint::McsConnectInitial
            } else {
                if pending.iter().any(|p| p.stage == Stage::Tls)
                    && !pending.iter().any(|p| is_finished(&p.kind))
                {
                    notes.push(
                        "the server ended the connection in the middle of the TLS handshake; the lab can act only \
                         before or after it, so it does so right after the handshake"
                            .to_owned(),
                    );
                }
                FaultPoint::TlsDone
            }
        }
        Stage::Credssp => {
            if last.kind.is_ntlm(NtlmKind::Challenge) {
                if pending_in(Stage::Credssp) {
                    FaultPoint::CredsspAuthenticate
                } else {
                    FaultPoint::CredsspChallenge
                }
            } else {
                if !pending_in(Stage::Mcs) {
                    notes.push(format!(
                        "the server ended the connection after its CredSSP `{}`; the lab's nearest point is \
                         after the MCS Connect Initial",
                        last.kind
                    ));
                }
                FaultPoint::McsConnectInitial
            }
        }
        Stage::Mcs => FaultPoint::McsConnectResponse,
        Stage::Channels | Stage::Security => FaultPoint::Channels,
        Stage::Licensing => FaultPoint::Licensing,
        Stage::Capabilities => {
            if last.kind == PduKind::Share(ShareKind::DemandActive) {
                FaultPoint::Capabilities
            } else {
                FaultPoint::Connected
            }
        }
        Stage::Connected => FaultPoint::Connected,
    }
}

fn fact_in<'a>(report: &'a ConnectionReport, key: &str) -> Option<&'a serde_json::Value> {
    report.stages.iter().find_map(|s| s.facts.get(key))
}

fn fact_u64(report: &ConnectionReport, stage: Stage, key: &str) -> Option<u64> {
    report.fact(stage, key).and_then(|v| v.as_u64())
}

fn fact_bool(report: &ConnectionReport, key: &str) -> bool {
    fact_in(report, key).and_then(|v| v.as_bool()) == Some(true)
}

fn fact_str<'a>(report: &'a ConnectionReport, key: &str) -> Option<&'a str> {
    fact_in(report, key).and_then(|v| v.as_str())
}

fn protocol_of(value: u64) -> Option<Protocol> {
    match value {
        0 => Some(Protocol::Rdp),
        1 => Some(Protocol::Ssl),
        2 => Some(Protocol::Hybrid),
        8 => Some(Protocol::HybridEx),
        _ => None,
    }
}

/// "TLSv1.2" → 1.2.
pub(crate) fn tls_version_of(s: &str) -> Option<TlsVersion> {
    TlsVersion::try_from(s.trim().to_ascii_lowercase().replace("tlsv", "")).ok()
}

fn client_tls_versions(report: &ConnectionReport) -> Vec<TlsVersion> {
    fact_in(report, "client_versions")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(tls_version_of))
                .collect()
        })
        .unwrap_or_default()
}

/// The common name in an RFC 4514 subject ("CN=host,O=x" → "host").
fn common_name(subject: &str) -> Option<String> {
    subject
        .split(',')
        .find_map(|rdn| rdn.trim().strip_prefix("CN="))
        .map(|cn| cn.trim().to_owned())
        .filter(|cn| !cn.is_empty() && cn.len() <= 64)
}

/// The close_notify alert's description code (RFC 8446 6.1).
const CLOSE_NOTIFY: u8 = 0;

/// How the server ended the conversation in the trace: RST, close_notify + FIN, FIN, or not at all.
fn server_ending(trace: &Trace, pdus: &[Pdu]) -> EndKind {
    let mut fin = false;
    for e in &trace.events {
        match e.kind {
            EventKind::Rst { dir: Dir::S2C } => return EndKind::Reset,
            EventKind::Fin { dir: Dir::S2C } => fin = true,
            _ => {}
        }
    }
    let close_notify = pdus.iter().any(|p| {
        p.side == Side::Server
            && (p.kind.is_alert(CLOSE_NOTIFY) || p.kind == PduKind::EncryptedAlert)
    });
    match (fin, close_notify) {
        (_, true) => EndKind::CloseNotify,
        (true, false) => EndKind::Close,
        (false, false) => EndKind::Silence,
    }
}

/// The built-in scenario `builtin` renamed and described for the replay of `report`, with the
/// users of `opts` when given: where every derived scenario starts.
pub(super) fn base_scenario(
    builtin: &str,
    report: &ConnectionReport,
    opts: &ServerOptions,
) -> Result<Scenario, ReplayError> {
    let mut sc = crate::scenario::builtin(builtin).ok_or_else(|| {
        ReplayError::Unreproducible(format!("the built-in {builtin} scenario is missing"))
    })?;
    sc.name = opts.name.clone().unwrap_or_else(|| "replay".to_owned());
    sc.description = format!(
        "replayed from {}: {}",
        opts.source.as_deref().unwrap_or("a capture"),
        report.summary
    );
    if let Some(users) = &opts.users {
        sc.identity.users = users.clone();
    }
    Ok(sc)
}

/// Derives the server scenario of one decoded connection.
pub fn derive_server(
    trace: &Trace,
    report: &ConnectionReport,
    opts: &ServerOptions,
) -> Result<ServerReplay, ReplayError> {
    if super::gateway::is_gateway(report) {
        return super::gateway::derive_gateway(report, opts);
    }
    let mut notes = Vec::new();
    let mut sc = base_scenario("healthy-nla", report, opts)?;
    let pdus = flatten_pdus(report);
    let timing = server_timing(trace);

    // --- x224 ---
    let requested = fact_u64(report, Stage::X224, "requested_protocols_value");
    if let Some(code) = fact_u64(report, Stage::X224, "failure_code") {
        let code = NegFailureCode(u32::try_from(code).unwrap_or(u32::MAX));
        sc.security.negotiation_failure = Some(code);
        notes.push(format!(
            "x224: the server answered RDP_NEG_FAILURE {code}: the replay answers it to every client"
        ));
    } else if let Some(sel) = fact_u64(report, Stage::X224, "selected_protocol_value") {
        match protocol_of(sel) {
            Some(p) => {
                sc.security.supported = match p {
                    Protocol::Rdp => vec![Protocol::Rdp],
                    Protocol::Ssl => vec![Protocol::Ssl],
                    Protocol::Hybrid => vec![Protocol::Ssl, Protocol::Hybrid],
                    Protocol::HybridEx => vec![Protocol::Ssl, Protocol::Hybrid, Protocol::HybridEx],
                };
                let offered = requested.is_some_and(|r| r & u64::from(p.flag()) != 0);
                if p != Protocol::Rdp && !offered {
                    sc.security.select = Some(p);
                    notes.push(format!(
                        "x224: the server selected {p}, which the client had not offered: the replay forces it"
                    ));
                } else {
                    notes.push(format!(
                        "x224: the server selected {p}: the replay supports {}",
                        sc.security
                            .supported
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if p == Protocol::Rdp {
                    notes.push(
                        "x224: standard RDP security is served at encryption level NONE only (the captured \
                         server may have required encryption)"
                            .to_owned(),
                    );
                }
            }
            None => notes.push(format!(
                "x224: selected protocol 0x{sel:x} is not one the lab can serve; it serves the default set"
            )),
        }
    }

    // --- tls ---
    let client_versions = client_tls_versions(report);
    if let Some(v) = report
        .fact(Stage::Tls, "version")
        .and_then(|v| v.as_str())
        .and_then(tls_version_of)
    {
        let higher_offered = client_versions.iter().any(|c| *c > v);
        sc.tls.versions = match v {
            TlsVersion::Tls13 => vec![TlsVersion::Tls12, TlsVersion::Tls13],
            TlsVersion::Tls12 if higher_offered => vec![TlsVersion::Tls12],
            TlsVersion::Tls12 => vec![TlsVersion::Tls12, TlsVersion::Tls13],
            old => vec![old],
        };
        notes.push(format!(
            "tls: the server negotiated TLS {}: the replay offers {}",
            v.as_str(),
            sc.tls
                .versions
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let key_bits = fact_str(report, "cert_key")
        .and_then(|k| k.split_whitespace().last())
        .and_then(|b| b.parse::<u32>().ok());
    if fact_in(report, "cert_subject").is_some() {
        sc.tls.certificate = if fact_bool(report, "cert_expired") {
            CertificateKind::Expired
        } else if fact_bool(report, "cert_not_yet_valid") {
            CertificateKind::NotYetValid
        } else if key_bits.is_some_and(|b| b < 2048) {
            CertificateKind::WeakKey
        } else {
            CertificateKind::SelfSigned
        };
        if let Some(cn) = fact_str(report, "cert_subject").and_then(common_name) {
            sc.tls.subject = cn;
        }
        notes.push(format!(
            "tls: certificate `{}` ({}{}), replayed as a generated `{}` certificate",
            fact_str(report, "cert_subject").unwrap_or("?"),
            fact_str(report, "cert_key").unwrap_or("unknown key"),
            if fact_bool(report, "cert_self_signed") {
                ", self-signed"
            } else {
                ""
            },
            sc.tls.certificate.as_str()
        ));
    }

    // --- how it ended ---
    let ending = server_ending(trace, &pdus);
    let mut point_notes = Vec::new();
    let point = failure_point(&pdus, &mut point_notes);
    let terminal_delay = if opts.no_delays {
        None
    } else {
        timing.terminal_delay_ms()
    };
    let mut end_at = |sc: &mut Scenario, action: FaultAction, notes: &mut Vec<String>| {
        if let Some(ms) = terminal_delay {
            if !matches!(action, FaultAction::Silence) {
                sc.faults.push(Fault::new(point, FaultAction::Delay { ms }));
                notes.push(format!(
                    "timing: the server waited {ms} ms before ending the connection: delay at {point}"
                ));
            }
        }
        notes.push(format!(
            "end: {} at {point} ({} stage)",
            action.name(),
            point.stage()
        ));
        sc.faults.push(Fault::new(point, action));
        notes.append(&mut point_notes);
    };
    match &report.verdict {
        Verdict::Ok => {
            notes.push("end: the connection succeeded: the replay is a healthy server".to_owned())
        }
        Verdict::Failed { kind, by } => {
            let server_side = matches!(by, Side::Server | Side::Network);
            match kind {
                FailureKind::Refused | FailureKind::Unreachable { .. } => {
                    return Err(ReplayError::Unreproducible(format!(
                        "the connection failed at TCP ({kind}): there is no server behaviour to replay"
                    )))
                }
                FailureKind::NegotiationFailure(_) => {}
                FailureKind::ProtocolMismatch { selected, .. } => {
                    notes.push(format!(
                        "x224: protocol mismatch, the server selected {}",
                        crate::stage::protocol_names::text(*selected)
                    ));
                }
                FailureKind::TimedOut { waiting_for, .. } if *waiting_for != Side::Client => {
                    end_at(&mut sc, FaultAction::Silence, &mut notes);
                }
                // The path dropped what the client sent: to the client the server went silent
                // (a capture with the retransmissions, e.g. the probe's own wire).
                FailureKind::Dropped { .. } => {
                    end_at(&mut sc, FaultAction::Silence, &mut notes);
                }
                FailureKind::Reset if server_side => {
                    end_at(&mut sc, FaultAction::Reset, &mut notes);
                }
                FailureKind::Closed { tls_close_notify } if server_side => {
                    let action = if *tls_close_notify {
                        FaultAction::CloseNotify
                    } else {
                        FaultAction::Close
                    };
                    end_at(&mut sc, action, &mut notes);
                }
                FailureKind::TlsAlert(alert) if server_side => {
                    let description = alert.description();
                    sc.tls.certificate = CertificateKind::None;
                    if description == "protocol_version" {
                        notes.push(
                            "tls: the server refused the client's TLS versions; the lab refuses with \
                             handshake_failure instead of protocol_version"
                                .to_owned(),
                        );
                    } else if description != "handshake_failure" {
                        notes.push(format!(
                            "tls: the server sent alert {description}; the lab sends handshake_failure"
                        ));
                    }
                    notes.push(
                        "tls: the server answered the ClientHello with a fatal alert: the replay has no \
                         certificate (handshake_failure)"
                            .to_owned(),
                    );
                }
                FailureKind::AuthFailure(a) if server_side => {
                    let ntstatus = a.ntstatus;
                    sc.credssp.reject = Some(NtStatus(ntstatus.unwrap_or(NtStatus::LOGON_FAILURE.0)));
                    sc.credssp.error_code = if ntstatus.is_some() {
                        crate::scenario::ErrorCodeEncoding::Int4
                    } else {
                        crate::scenario::ErrorCodeEncoding::None
                    };
                    sc.credssp.after_reject = ending;
                    if !sc.security.supported.iter().any(|p| p.uses_credssp()) {
                        sc.security.supported = vec![Protocol::Ssl, Protocol::Hybrid, Protocol::HybridEx];
                    }
                    notes.push(format!(
                        "credssp: every logon is rejected with {}{}, then {}",
                        NtStatus(ntstatus.unwrap_or(NtStatus::LOGON_FAILURE.0)),
                        if ntstatus.is_none() {
                            " (no errorCode on the wire, as in the capture)"
                        } else {
                            ""
                        },
                        match ending {
                            EndKind::Close => "FIN",
                            EndKind::CloseNotify => "close_notify and FIN",
                            EndKind::Reset => "RST",
                            EndKind::Silence => "silence",
                        }
                    ));
                }
                FailureKind::Denied { detail } if server_side => {
                    if detail.contains("Early User Authorization") {
                        sc.credssp.early_user_auth_denied = true;
                        sc.security.supported = vec![Protocol::Ssl, Protocol::Hybrid, Protocol::HybridEx];
                        notes.push(
                            "credssp: Early User Authorization Result ACCESS_DENIED after a good logon".to_owned(),
                        );
                    } else {
                        end_at(&mut sc, FaultAction::Disconnect, &mut notes);
                    }
                }
                FailureKind::ProtocolError { what, .. } if server_side => {
                    let before_tls = report.last_stage <= Stage::X224;
                    let bytes = trace.stream(Dir::S2C, Layer::Wire);
                    if before_tls && !bytes.is_empty() {
                        let bytes = bytes[..bytes.len().min(MAX_MALFORMED_LEN)].to_vec();
                        let then = ending;
                        notes.push(format!(
                            "end: the server sent {} malformed bytes ({what}): replayed verbatim",
                            bytes.len()
                        ));
                        sc.faults.push(Fault::new(
                            FaultPoint::X224Request,
                            FaultAction::Malformed { bytes, then },
                        ));
                    } else {
                        notes.push(format!(
                            "end: the server sent malformed data at {} ({what}); the lab cannot replay data \
                             inside TLS byte for byte, so it closes there instead",
                            report.last_stage
                        ));
                        end_at(&mut sc, FaultAction::Close, &mut notes);
                    }
                }
                FailureKind::TlsFailure { detail } if server_side => {
                    notes.push(format!("tls: failure without an alert ({detail}): replayed as a close"));
                    end_at(&mut sc, FaultAction::Close, &mut notes);
                }
                FailureKind::CaptureEnded => {
                    notes.push(
                        "end: the capture ended before the connection did: the replay goes silent where the \
                         capture ends"
                            .to_owned(),
                    );
                    end_at(&mut sc, FaultAction::Silence, &mut notes);
                }
                other => {
                    notes.push(format!(
                        "end: the {by} ended the connection ({other}): the server behaved normally up to there, \
                         so the replay is a healthy server and a client meets that failure only if it does the same"
                    ));
                }
            }
        }
    }
    let write_delay = timing.uniform_write_delay_ms().filter(|_| !opts.no_delays);
    if let Some(ms) = write_delay {
        sc.link.write_delay_ms = ms;
        notes.push(format!(
            "timing: the server paused about {ms} ms before each of its writes (a slow link): \
             link.write_delay_ms = {ms}"
        ));
    } else if !opts.no_delays {
        sc.link.response_delays_ms = timing.response_delays_ms();
        if !sc.link.response_delays_ms.is_empty() {
            notes.push(format!(
                "timing: the server's think time before each answer is replayed: {:?} ms",
                sc.link.response_delays_ms
            ));
        }
    }
    // A silence holds at least as long as a patient client waits.
    if sc
        .faults
        .iter()
        .any(|f| matches!(f.action, FaultAction::Silence))
        || sc.credssp.after_reject == EndKind::Silence
    {
        sc.link.hold_ms = sc.link.hold_ms.max(120_000);
    }
    // INVARIANT: the derived scenario validates like a hand-written one.
    let text = sc.to_toml();
    Scenario::from_toml(&text)
        .map_err(|e| ReplayError::Unreproducible(format!("derived scenario is invalid: {e}")))?;
    Ok(ServerReplay {
        scenario: sc,
        expect_stage: report.last_stage,
        expect_verdict: report.verdict.clone(),
        timing,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdus(list: &[(Stage, Side, &str)]) -> Vec<Pdu> {
        list.iter()
            .map(|(stage, side, name)| Pdu {
                stage: *stage,
                side: *side,
                kind: PduKind::parse(name),
            })
            .collect()
    }

    #[test]
    fn points_from_pdus() {
        use Side::{Client as C, Server as S};
        let mut n = Vec::new();
        let p = pdus(&[(Stage::X224, C, "connection request")]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::X224Request);
        let p = pdus(&[
            (Stage::X224, C, "connection request"),
            (Stage::X224, S, "connection confirm"),
            (Stage::Tls, C, "client hello"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::TlsClientHello);
        let p = pdus(&[
            (Stage::X224, C, "connection request"),
            (Stage::X224, S, "connection confirm"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::X224Confirm);
        let p = pdus(&[
            (Stage::Credssp, C, "ntlm negotiate"),
            (Stage::Credssp, S, "ntlm challenge"),
            (Stage::Credssp, C, "ntlm authenticate + pubKeyAuth"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::CredsspAuthenticate);
        let p = pdus(&[
            (Stage::Mcs, C, "mcs connect initial"),
            (Stage::Mcs, S, "mcs connect response"),
            (Stage::Channels, C, "erect domain request"),
            (Stage::Channels, C, "attach user request"),
            (Stage::Channels, S, "disconnect provider ultimatum"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::McsConnectResponse);
        let p = pdus(&[
            (Stage::Tls, S, "encrypted handshake"),
            (Stage::Tls, C, "encrypted handshake (finished)"),
            (Stage::Credssp, C, "ntlm negotiate"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::CredsspNegotiate);
        assert_eq!(failure_point(&[], &mut n), FaultPoint::X224Request);
        // The server's demand active and nothing after it: the lab fails at capabilities; after
        // its control / font map PDUs it is connected.
        let p = pdus(&[
            (Stage::Capabilities, S, "demand active"),
            (Stage::Capabilities, C, "confirm active"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::Capabilities);
        let p = pdus(&[
            (Stage::Capabilities, S, "demand active"),
            (Stage::Capabilities, S, "control"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::Connected);
        // A refusal is not where the server stopped: its alert, errorCode, set error info or
        // licensing error alert is skipped; the client's own alert is no pending request.
        let p = pdus(&[
            (Stage::Credssp, C, "ntlm negotiate"),
            (Stage::Credssp, S, "ntlm challenge"),
            (Stage::Credssp, C, "ntlm authenticate + pubKeyAuth"),
            (Stage::Credssp, S, "errorCode"),
            (Stage::Credssp, S, "alert warning close_notify"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::CredsspAuthenticate);
        let p = pdus(&[
            (Stage::Licensing, S, "license error alert"),
            (Stage::Capabilities, S, "set error info"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::X224Request);
        // Only the server's CHALLENGE is a challenge: a TSRequest with pubKeyAuth is not.
        let p = pdus(&[
            (Stage::Credssp, C, "ntlm authenticate + pubKeyAuth"),
            (Stage::Credssp, S, "pubKeyAuth"),
            (Stage::Mcs, C, "mcs connect initial"),
        ]);
        assert_eq!(failure_point(&p, &mut n), FaultPoint::McsConnectInitial);
        // The client's Finished inside a handshake record ends the handshake: no note about a
        // server that ended it midway.
        let mut notes = Vec::new();
        let p = pdus(&[
            (
                Stage::Tls,
                S,
                "server hello, certificate, server hello done",
            ),
            (Stage::Tls, C, "client key exchange"),
            (Stage::Tls, C, "change cipher spec"),
            (Stage::Tls, C, "encrypted handshake (finished)"),
        ]);
        assert_eq!(failure_point(&p, &mut notes), FaultPoint::TlsDone);
        let p = pdus(&[
            (
                Stage::Tls,
                S,
                "server hello, certificate, server hello done",
            ),
            (Stage::Tls, C, "client key exchange"),
        ]);
        assert_eq!(failure_point(&p, &mut notes), FaultPoint::TlsDone);
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn names_and_versions() {
        assert_eq!(
            common_name("CN=host.example,O=x"),
            Some("host.example".into())
        );
        assert_eq!(common_name("O=x"), None);
        assert_eq!(tls_version_of("TLSv1.2"), Some(TlsVersion::Tls12));
        assert_eq!(tls_version_of("TLSv1.0"), Some(TlsVersion::Tls10));
        assert_eq!(tls_version_of("SSLv3"), None);
    }
}
