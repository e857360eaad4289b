//! `rdprobe diff A B`: what changed per target between two scans (JSON lines of `scan --json`, or
//! two runs of a store): the last stage reached, the verdict, the selected protocol, the
//! certificate, the TLS version, and stage times beyond a tolerance. Each change says whether it
//! is a regression. [`compare`] is pure; A is held as one small digest per target, B is streamed.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::report::ConnectionReport;
use crate::stage::{Stage, Verdict};

/// Longest JSON line read (bytes).
pub const MAX_LINE_LEN: usize = 16 << 20;

/// A result line as `scan` writes it: the report plus the target.
#[derive(Deserialize)]
struct Line {
    target: String,
    #[serde(flatten)]
    report: ConnectionReport,
}

/// What `diff` compares of one target.
#[derive(Clone, Debug, PartialEq)]
pub struct Digest {
    pub last_stage: Stage,
    /// `ok` or the failure kind.
    pub verdict: String,
    /// Passed (ok, or stopped by request).
    pub passing: bool,
    pub selected_protocol: Option<String>,
    pub tls_version: Option<String>,
    pub cert_sha256: Option<String>,
    pub cert_not_after: Option<String>,
    pub cert_expired: bool,
    pub stage_ms: Vec<(Stage, f64)>,
}

impl Digest {
    pub fn of(r: &ConnectionReport) -> Digest {
        let s =
            |stage: Stage, k: &str| r.fact(stage, k).and_then(|v| v.as_str()).map(str::to_owned);
        Digest {
            last_stage: r.last_stage,
            verdict: super::verdict_kind(&r.verdict).to_owned(),
            passing: !super::is_failing(r),
            selected_protocol: s(Stage::X224, "selected_protocol"),
            tls_version: s(Stage::Tls, "version"),
            cert_sha256: s(Stage::Tls, "cert_sha256"),
            cert_not_after: s(Stage::Tls, "cert_not_after"),
            cert_expired: r
                .fact(Stage::Tls, "cert_expired")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            stage_ms: r
                .stages
                .iter()
                .filter(|s| s.verdict == Verdict::Ok)
                .map(|s| (s.stage, s.duration_ms))
                .collect(),
        }
    }

    fn outcome(&self) -> String {
        format!("{} {}", self.last_stage, self.verdict)
    }
}

/// Parses one JSON line of `scan --json` (or a stored result) into its target and digest.
pub fn parse_line(line: &str) -> Result<(String, Digest), String> {
    let l: Line = serde_json::from_str(line).map_err(|e| format!("not a scan result: {e}"))?;
    Ok((l.target, Digest::of(&l.report)))
}

/// Timing tolerance: a stage is slower when it took more than `factor` times as long *and* at
/// least `floor_ms` more.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub factor: f64,
    pub floor_ms: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            factor: 2.0,
            floor_ms: 100.0,
        }
    }
}

/// One change of one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// `outcome`, `selected_protocol`, `tls_version`, `certificate`, `time:STAGE`, `missing`, `new`.
    pub what: String,
    pub before: String,
    pub after: String,
    pub regression: bool,
}

/// One target's changes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetDiff {
    pub target: String,
    pub regression: bool,
    pub changes: Vec<Change>,
}

fn protocol_rank(p: &str) -> u8 {
    match p {
        "PROTOCOL_RDP" => 0,
        "PROTOCOL_SSL" => 1,
        "PROTOCOL_HYBRID" => 2,
        "PROTOCOL_HYBRID_EX" => 3,
        _ => 0,
    }
}

fn tls_rank(v: &str) -> u8 {
    match v.trim_start_matches("TLSv").trim_start_matches("TLS") {
        "1" | "1.0" => 10,
        "1.1" => 11,
        "1.2" => 12,
        "1.3" => 13,
        _ => 0,
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

/// A change of a ranked field that both digests have: (before, after, regression: the rank went
/// down); `None` when it is the same or either digest lacks it.
fn ranked_change(
    a: &Option<String>,
    b: &Option<String>,
    rank: fn(&str) -> u8,
) -> Option<(String, String, bool)> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => Some((a.clone(), b.clone(), rank(b) < rank(a))),
        _ => None,
    }
}

/// Compares one target's two digests. Pure.
pub fn compare(target: &str, a: &Digest, b: &Digest, tol: Tolerance) -> Option<TargetDiff> {
    let mut changes = Vec::new();
    let mut push = |what: &str, before: String, after: String, regression: bool| {
        changes.push(Change {
            what: what.into(),
            before,
            after,
            regression,
        })
    };
    if a.last_stage != b.last_stage || a.verdict != b.verdict {
        // Worse: it passed and fails now, or it fails at an earlier stage than before.
        let regression =
            (a.passing && !b.passing) || (a.passing == b.passing && b.last_stage < a.last_stage);
        push("outcome", a.outcome(), b.outcome(), regression);
    }
    if let Some((before, after, regression)) =
        ranked_change(&a.selected_protocol, &b.selected_protocol, protocol_rank)
    {
        push("selected_protocol", before, after, regression);
    }
    if let Some((before, after, regression)) =
        ranked_change(&a.tls_version, &b.tls_version, tls_rank)
    {
        push("tls_version", before, after, regression);
    }
    if a.cert_sha256 != b.cert_sha256 && a.cert_sha256.is_some() && b.cert_sha256.is_some() {
        let short = |d: &Digest| {
            format!(
                "sha256 {}… until {}",
                opt(&d.cert_sha256).chars().take(16).collect::<String>(),
                opt(&d.cert_not_after)
            )
        };
        push(
            "certificate",
            short(a),
            short(b),
            b.cert_expired && !a.cert_expired,
        );
    }
    for (stage, after) in &b.stage_ms {
        if let Some((_, before)) = a.stage_ms.iter().find(|(s, _)| s == stage) {
            if *after > before * tol.factor && after - before >= tol.floor_ms {
                push(
                    &format!("time:{stage}"),
                    format!("{before:.1} ms"),
                    format!("{after:.1} ms"),
                    true,
                );
            }
        }
    }
    if changes.is_empty() {
        return None;
    }
    Some(TargetDiff {
        target: target.to_owned(),
        regression: changes.iter().any(|c| c.regression),
        changes,
    })
}

/// Counts of a whole diff.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffSummary {
    pub compared: u64,
    pub changed: u64,
    pub regressed: u64,
    /// In A, not in B.
    pub missing: u64,
    /// In B, not in A.
    pub new: u64,
}

/// Compares two result sets: `a` is read into digests, `b` streamed; `out` gets each target that
/// changed (B order, then A's targets missing from B).
pub fn diff(
    a: impl IntoIterator<Item = Result<(String, Digest), String>>,
    b: impl IntoIterator<Item = Result<(String, Digest), String>>,
    tol: Tolerance,
    mut out: impl FnMut(&TargetDiff) -> std::io::Result<()>,
) -> Result<DiffSummary, String> {
    let mut before: HashMap<String, Digest> = HashMap::new();
    for r in a {
        let (t, d) = r?;
        before.insert(t, d);
    }
    let mut sum = DiffSummary::default();
    let io = |e: std::io::Error| format!("writing: {e}");
    for r in b {
        let (t, d) = r?;
        match before.remove(&t) {
            Some(old) => {
                sum.compared += 1;
                if let Some(td) = compare(&t, &old, &d, tol) {
                    sum.changed += 1;
                    sum.regressed += u64::from(td.regression);
                    out(&td).map_err(io)?;
                }
            }
            None => {
                sum.new += 1;
                sum.changed += 1;
                out(&presence_diff(t, "new", "-".into(), d.outcome())).map_err(io)?;
            }
        }
    }
    let mut gone: Vec<(String, Digest)> = before.into_iter().collect();
    gone.sort_by(|x, y| x.0.cmp(&y.0));
    for (t, d) in gone {
        sum.missing += 1;
        sum.changed += 1;
        out(&presence_diff(t, "missing", d.outcome(), "-".into())).map_err(io)?;
    }
    Ok(sum)
}

/// The diff of a target only one run has: one change `what` ("new" or "missing"), no regression.
fn presence_diff(target: String, what: &str, before: String, after: String) -> TargetDiff {
    TargetDiff {
        target,
        regression: false,
        changes: vec![Change {
            what: what.into(),
            before,
            after,
            regression: false,
        }],
    }
}

/// One line of text per changed target.
pub fn render(d: &TargetDiff) -> String {
    let parts: Vec<String> = d
        .changes
        .iter()
        .map(|c| {
            format!(
                "{}{}: {} -> {}",
                if c.regression { "!" } else { "" },
                c.what,
                c.before,
                c.after
            )
        })
        .collect();
    format!(
        "{:<9} {:<28} {}",
        if d.regression { "REGRESSED" } else { "changed" },
        d.target,
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(stage: Stage, verdict: &str, passing: bool) -> Digest {
        Digest {
            last_stage: stage,
            verdict: verdict.into(),
            passing,
            selected_protocol: Some("PROTOCOL_SSL".into()),
            tls_version: Some("TLSv1.3".into()),
            cert_sha256: Some("aa".into()),
            cert_not_after: None,
            cert_expired: false,
            stage_ms: vec![(Stage::Tcp, 1.0), (Stage::Tls, 10.0)],
        }
    }

    #[test]
    fn regressions_and_changes() {
        let t = Tolerance::default();
        let ok = digest(Stage::Connected, "ok", true);
        assert_eq!(compare("t", &ok, &ok, t), None);
        let reset = digest(Stage::Tls, "reset", false);
        let d = compare("t", &ok, &reset, t).unwrap();
        assert!(d.regression);
        assert_eq!(d.changes[0].what, "outcome");
        assert_eq!(d.changes[0].after, "tls reset");
        // Fixed is a change, not a regression.
        assert!(!compare("t", &reset, &ok, t).unwrap().regression);
        // Failing earlier is a regression, later is not.
        let tcp = digest(Stage::Tcp, "refused", false);
        assert!(compare("t", &reset, &tcp, t).unwrap().regression);
        assert!(!compare("t", &tcp, &reset, t).unwrap().regression);
        let mut weaker = ok.clone();
        weaker.tls_version = Some("TLSv1.2".into());
        weaker.cert_sha256 = Some("bb".into());
        let d = compare("t", &ok, &weaker, t).unwrap();
        assert!(d.regression);
        assert_eq!(
            d.changes
                .iter()
                .map(|c| c.what.as_str())
                .collect::<Vec<_>>(),
            ["tls_version", "certificate"]
        );
        let mut slow = ok.clone();
        slow.stage_ms[1].1 = 50.0; // 5x but only 40 ms more: within tolerance
        assert_eq!(compare("t", &ok, &slow, t), None);
        slow.stage_ms[1].1 = 500.0;
        let d = compare("t", &ok, &slow, t).unwrap();
        assert!(d.regression && d.changes[0].what == "time:tls", "{d:?}");
    }

    #[test]
    fn missing_and_new() {
        let ok = digest(Stage::Connected, "ok", true);
        let a = vec![
            Ok(("x".to_string(), ok.clone())),
            Ok(("y".into(), ok.clone())),
        ];
        let b = vec![Ok(("y".to_string(), ok.clone())), Ok(("z".into(), ok))];
        let mut seen = Vec::new();
        let s = diff(a, b, Tolerance::default(), |d| {
            seen.push(d.changes[0].what.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["new", "missing"]);
        assert_eq!(
            (s.compared, s.changed, s.regressed, s.missing, s.new),
            (1, 2, 0, 1, 1)
        );
    }
}
