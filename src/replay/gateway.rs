//! A captured RD Gateway, turned into the lab gateway's scenario (`replay --as-server` of a capture
//! whose connection went through a gateway): the `[gateway]` faults that make the lab gateway fail
//! the same way at the same stage.
//!
//! Pure code: reads the decoded report (the gateway stages' verdicts and facts).
//!
//! | capture | scenario `[gateway]` |
//! |---|---|
//! | gw_http: HTTP status S (403, 302 with `Location`, 5xx…) | `status = S`, `location` |
//! | gw_http 401 offering only schemes the lab cannot accept (Negotiate) | `status = 401`, `offer` |
//! | gw_http 401, then gw_auth refused with 401 | `schemes` as offered (a client with other credentials than the lab's gets the 401) |
//! | gw_auth answered 200 (no upgrade) | `websocket = false` |
//! | gw_auth reset or closed after the credentials | `reset_after_auth` |
//! | gw_tunnel HRESULT (MS-TSGU 2.2.10.20) | `tunnel_error` |
//! | gw_tunnel / gw_channel silence | `tunnel_delay_ms` / `channel_delay_ms` |
//! | gw_channel `E_PROXY_RAP_ACCESSDENIED` for resource R | `rap_deny = [R]` |
//! | gw_channel `E_PROXY_TS_CONNECTFAILED` (or another HRESULT) | `target_unreachable` |
//! | gw_tls expired certificate | `[tls] certificate = "expired"` |

use crate::report::ConnectionReport;
use crate::scenario::{CertificateKind, Gateway, Scenario};
use crate::stage::{FailureKind, Stage, Verdict};

use super::server::{ServerOptions, ServerReplay};
use super::timing::ServerTiming;
use super::ReplayError;

/// Whether the report is of a connection through an RD Gateway.
pub fn is_gateway(report: &ConnectionReport) -> bool {
    report.stages.first().is_some_and(|s| s.stage.is_gateway())
}

/// A silence held by the replayed gateway, in milliseconds: longer than a patient client waits.
const SILENCE_MS: u64 = 120_000;

fn strings(report: &ConnectionReport, stage: Stage, key: &str) -> Vec<String> {
    report
        .fact(stage, key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Derives the lab gateway's scenario (and the lab server's behind it: healthy) from a report whose
/// first stages are the gateway hop.
pub fn derive_gateway(
    report: &ConnectionReport,
    opts: &ServerOptions,
) -> Result<ServerReplay, ReplayError> {
    let mut notes = Vec::new();
    let mut sc = super::server::base_scenario("gw-healthy", report, opts)?;
    let mut g = Gateway::default();
    let offered = strings(report, Stage::GwHttp, "www_authenticate");
    if !offered.is_empty() {
        g.schemes = offered.clone();
        notes.push(format!(
            "gw_http: the gateway offered {}: the replay offers the same",
            offered.join(", ")
        ));
    }
    if report.fact(Stage::GwTls, "cert_expired") == Some(&serde_json::json!(true)) {
        sc.tls.certificate = CertificateKind::Expired;
        notes.push("gw_tls: the gateway's certificate had expired: the replay's has too".into());
    }
    let fact_str = |st: Stage, k: &str| {
        report
            .fact(st, k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (&report.last_stage, &report.verdict) {
        (_, Verdict::Ok) => notes.push("end: the connection succeeded: the replay is a healthy gateway in front of a healthy server".into()),
        (st, Verdict::Failed { kind: FailureKind::Stopped, .. }) => {
            notes.push(format!("end: the client stopped after {st} on purpose: the replay is a healthy gateway"))
        }
        (Stage::GwHttp, Verdict::Failed { kind: FailureKind::HttpStatus { status, location, .. }, .. }) => {
            g.status = Some(*status);
            g.location = location.clone();
            notes.push(format!("gw_http: the gateway answered {status}: so does the replay, to every request"));
        }
        (Stage::GwAuth, Verdict::Failed { kind: FailureKind::HttpStatus { status: 401, .. }, .. }) => {
            let usable = offered.iter().any(|s| {
                ["NTLM", "Basic"].iter().any(|k| s.eq_ignore_ascii_case(k))
            });
            if usable {
                notes.push("gw_auth: the gateway refused the credentials (401): the replay accepts only the lab's account, so other credentials get the same 401".into());
            } else {
                g.status = Some(401);
                g.offer = Some(offered.clone());
                notes.push(format!("gw_auth: the gateway offered only {} and kept answering 401: so does the replay", offered.join(", ")));
            }
        }
        (Stage::GwAuth, Verdict::Failed { kind: FailureKind::HttpStatus { status: 200, .. }, .. }) => {
            g.websocket = false;
            notes.push("gw_auth: the upgrade was answered 200 without upgrading: the replay refuses the WebSocket".into());
        }
        (Stage::GwAuth, Verdict::Failed { kind: FailureKind::Reset | FailureKind::Closed { .. }, .. }) => {
            g.reset_after_auth = true;
            notes.push("gw_auth: the gateway ended the connection after the credentials: the replay resets there".into());
        }
        (Stage::GwTunnel, Verdict::Failed { kind: FailureKind::GatewayError(h), .. }) => {
            let name = h.name();
            g.tunnel_error = Some(name.to_string());
            notes.push(format!("gw_tunnel: the gateway refused the tunnel with {name}: so does the replay"));
        }
        (Stage::GwTunnel, Verdict::Failed { kind: FailureKind::TimedOut { .. }, .. }) => {
            g.tunnel_delay_ms = SILENCE_MS;
            notes.push("gw_tunnel: the gateway never answered: the replay holds the tunnel answer".into());
        }
        (Stage::GwChannel, Verdict::Failed { kind: FailureKind::GatewayError(h), .. }) => {
            let name = h.name();
            if h.code == 0x8007_59DA {
                let target = fact_str(Stage::GwChannel, "target").unwrap_or_default();
                g.rap_deny = vec![target.clone()];
                notes.push(format!("gw_channel: {name} for the resource `{target}`: the replay denies that name"));
            } else {
                g.target_unreachable = true;
                notes.push(format!("gw_channel: {name}: the replay answers E_PROXY_TS_CONNECTFAILED to every channel"));
            }
        }
        (Stage::GwChannel, Verdict::Failed { kind: FailureKind::TimedOut { .. }, .. }) => {
            g.channel_delay_ms = SILENCE_MS;
            notes.push("gw_channel: the gateway never answered the channel request: the replay holds it".into());
        }
        (st, Verdict::Failed { kind, .. }) if st.is_gateway() => {
            return Err(ReplayError::Unreproducible(format!(
                "the gateway hop failed at {st} with {kind}: the lab gateway has no such fault"
            )))
        }
        (st, Verdict::Failed { kind, .. }) => notes.push(format!(
            "end: the hop passed and the inner RDP failed at {st} ({kind}): the replay is a healthy gateway in front of a healthy server"
        )),
    }
    notes.push(
        "timing: the gateway's think time is not replayed (the lab gateway answers at once, or holds a silence)"
            .into(),
    );
    sc.gateway = Some(g);
    // INVARIANT: the derived scenario validates like a hand-written one.
    Scenario::from_toml(&sc.to_toml())
        .map_err(|e| ReplayError::Unreproducible(format!("derived scenario is invalid: {e}")))?;
    Ok(ServerReplay {
        scenario: sc,
        expect_stage: report.last_stage,
        expect_verdict: report.verdict.clone(),
        timing: ServerTiming::default(),
        notes,
    })
}
