//! Does a new connection behave like the captured one? Compares two decoded reports stage by stage.
//!
//! Pure code. Two reports match when they reach the same stages with the same per-stage outcome, end
//! in the same verdict (kind, side, and the code that names it: RDP_NEG_FAILURE code, NTSTATUS, TLS
//! alert), and agree on the facts that make a failure what it is (selected protocol, certificate
//! validity). Durations, byte counts, ports and timeouts' lengths are not compared.

use serde::Serialize;

use crate::report::ConnectionReport;
use crate::stage::{protocol_names, FailureKind, Stage, Verdict};

/// Facts that must agree, by stage and key.
const SIGNIFICANT_FACTS: &[(Stage, &str)] = &[
    (Stage::X224, "selected_protocol"),
    (Stage::X224, "failure_code"),
    (Stage::Tls, "cert_expired"),
    (Stage::Tls, "cert_not_yet_valid"),
    (Stage::Credssp, "error_code"),
    (Stage::Credssp, "early_user_auth"),
];

/// The outcome of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// True when nothing in `differences` was found.
    pub matched: bool,
    /// What differs, one sentence each ("verdict: expected reset by server, got ok").
    pub differences: Vec<String>,
    /// `(stage, expected verdict, actual verdict)` for every stage either report reached.
    pub stages: Vec<(Stage, Option<String>, Option<String>)>,
}

/// A verdict in one line, without the parts that vary between runs (timeout lengths).
pub fn verdict_key(v: &Verdict) -> String {
    match v {
        Verdict::Ok => "ok".to_owned(),
        Verdict::Failed { kind, by } => {
            let what = match kind {
                FailureKind::TimedOut { waiting_for, .. } => {
                    format!("timed_out waiting for the {waiting_for}")
                }
                FailureKind::NegotiationFailure(n) => {
                    format!("negotiation_failure {}", n.name())
                }
                FailureKind::ProtocolMismatch {
                    requested,
                    selected,
                } => format!(
                    "protocol_mismatch requested {} selected {}",
                    protocol_names::text(*requested),
                    protocol_names::text(*selected)
                ),
                FailureKind::TlsAlert(a) => format!("tls_alert {}", a.description()),
                FailureKind::AuthFailure(a) => match a.ntstatus {
                    Some(c) => format!("auth_failure 0x{c:08X}"),
                    None => "auth_failure without errorCode".to_owned(),
                },
                FailureKind::Closed { tls_close_notify } => {
                    format!(
                        "closed{}",
                        if *tls_close_notify {
                            " (close_notify)"
                        } else {
                            ""
                        }
                    )
                }
                FailureKind::ProtocolError { what, .. } => format!("protocol_error {what}"),
                other => other.name().to_owned(),
            };
            format!("{what} by {by}")
        }
    }
}

/// Compares `actual` with `expected` (the capture's report).
pub fn compare(expected: &ConnectionReport, actual: &ConnectionReport) -> Comparison {
    let mut differences = Vec::new();
    let mut stages = Vec::new();
    for st in Stage::ALL {
        let e = expected.stage(st).map(|s| verdict_key(&s.verdict));
        let a = actual.stage(st).map(|s| verdict_key(&s.verdict));
        if e.is_none() && a.is_none() {
            continue;
        }
        if e != a {
            differences.push(format!(
                "{st}: expected {}, got {}",
                e.as_deref().unwrap_or("not reached"),
                a.as_deref().unwrap_or("not reached")
            ));
        }
        stages.push((st, e, a));
    }
    if expected.last_stage != actual.last_stage {
        differences.push(format!(
            "last stage: expected {}, got {}",
            expected.last_stage, actual.last_stage
        ));
    }
    let (ev, av) = (verdict_key(&expected.verdict), verdict_key(&actual.verdict));
    if ev != av {
        differences.push(format!("verdict: expected {ev}, got {av}"));
    }
    for (st, key) in SIGNIFICANT_FACTS {
        let e = expected.fact(*st, key);
        let a = actual.fact(*st, key);
        // A fact the capture did not see (e.g. an encrypted certificate) is not a difference.
        if e.is_some() && e != a {
            differences.push(format!(
                "{st}.{key}: expected {}, got {}",
                e.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into()),
                a.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into())
            ));
        }
    }
    Comparison {
        matched: differences.is_empty(),
        differences,
        stages,
    }
}

/// The comparison as a table, for people.
pub fn render(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{:<13} {:<44} {:<44}", "STAGE", "CAPTURE", "NOW");
    for (st, e, a) in &c.stages {
        let mark = if e == a { " " } else { "≠" };
        let _ = writeln!(
            out,
            "{:<13} {:<44} {:<44} {mark}",
            st.as_str(),
            e.as_deref().unwrap_or("-"),
            a.as_deref().unwrap_or("-")
        );
    }
    if c.matched {
        let _ = writeln!(out, "match: the server behaves as in the capture");
    } else {
        let _ = writeln!(
            out,
            "MISMATCH: the server behaves differently from the capture"
        );
        for d in &c.differences {
            let _ = writeln!(out, "  - {d}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StageReport;
    use crate::stage::Side;

    fn report(stages: &[(Stage, Verdict)]) -> ConnectionReport {
        let last = stages.last().map(|s| s.0).unwrap_or(Stage::Tcp);
        let verdict = stages.last().map(|s| s.1.clone()).unwrap_or(Verdict::Ok);
        ConnectionReport {
            client: "a".into(),
            server: "b".into(),
            stages: stages
                .iter()
                .map(|(s, v)| StageReport {
                    stage: *s,
                    verdict: v.clone(),
                    start_us: 0,
                    duration_ms: 0.0,
                    bytes_c2s: 0,
                    bytes_s2c: 0,
                    frames: Vec::new(),
                    facts: Default::default(),
                })
                .collect(),
            last_stage: last,
            verdict,
            ended_by: None,
            summary: String::new(),
            notes: Vec::new(),
            tcp: None,
        }
    }

    fn reset() -> Verdict {
        Verdict::Failed {
            kind: FailureKind::Reset,
            by: Side::Server,
        }
    }

    #[test]
    fn same_failure_matches_whatever_the_timeout_length() {
        let t = |ms| Verdict::Failed {
            kind: FailureKind::TimedOut {
                waiting_for: Side::Server,
                after_ms: ms,
            },
            by: Side::Server,
        };
        let a = report(&[(Stage::Tcp, Verdict::Ok), (Stage::X224, t(2000))]);
        let b = report(&[(Stage::Tcp, Verdict::Ok), (Stage::X224, t(5000))]);
        assert!(compare(&a, &b).matched);
    }

    #[test]
    fn different_stage_or_kind_mismatches() {
        let a = report(&[
            (Stage::Tcp, Verdict::Ok),
            (Stage::X224, Verdict::Ok),
            (Stage::Tls, reset()),
        ]);
        let b = report(&[
            (Stage::Tcp, Verdict::Ok),
            (Stage::X224, Verdict::Ok),
            (Stage::Tls, Verdict::Ok),
            (Stage::Credssp, reset()),
        ]);
        let c = compare(&a, &b);
        assert!(!c.matched);
        assert!(
            c.differences.iter().any(|d| d.starts_with("last stage")),
            "{c:?}"
        );
        let ok = report(&[
            (Stage::Tcp, Verdict::Ok),
            (Stage::X224, Verdict::Ok),
            (Stage::Tls, Verdict::Ok),
        ]);
        let c = compare(&a, &ok);
        assert!(c.differences.iter().any(|d| d.contains("verdict")), "{c:?}");
        assert!(render(&c).contains("MISMATCH"));
    }

    #[test]
    fn significant_facts_count() {
        let mut a = report(&[(Stage::Tcp, Verdict::Ok), (Stage::Tls, Verdict::Ok)]);
        let mut b = a.clone();
        a.stages[1]
            .facts
            .insert("cert_expired".into(), serde_json::json!(true));
        assert!(!compare(&a, &b).matched);
        b.stages[1]
            .facts
            .insert("cert_expired".into(), serde_json::json!(true));
        assert!(compare(&a, &b).matched);
    }
}
