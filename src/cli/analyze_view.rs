//! How `rdprobe analyze` prints connections for people: in full (stages, summary, diagnosis with
//! evidence and remedies, as `probe` prints them), as one table row each, or with the frame numbers
//! of every stage; and the per-failure summary under a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rdprobe::diagnose::{self, FaultClass};
use rdprobe::report::{self, exit, ConnectionReport};
use rdprobe::stage::Verdict;

/// A capture with at most this many connections is printed in full by default.
pub const FEW: usize = 3;

/// What `analyze` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalyzeView {
    /// One JSON document per connection.
    Json,
    /// Every stage with its frame numbers.
    Stages,
    /// Every connection in full.
    Full,
    /// One connection in full.
    One(usize),
    /// The failing connections in full.
    Failed,
    /// The table and the failure summary.
    Table,
    /// In full for a few connections, else the table.
    Auto,
}

/// One connection as `probe` prints it, with its number and the diagnosis when it failed.
pub fn full(n: usize, r: &ConnectionReport) -> String {
    let mut out = format!("connection #{n}\n");
    out.push_str(&report::render_text(r));
    if report::exit_code(r) != exit::SUCCESS {
        out.push_str(&diagnose::render_diagnosis(&diagnose::diagnose(r)));
    }
    out.push('\n');
    out
}

/// The frame numbers of each stage (the first 20).
pub fn frames(r: &ConnectionReport) -> String {
    let mut out = String::new();
    for s in &r.stages {
        if !s.frames.is_empty() {
            let frames: Vec<String> = s.frames.iter().take(20).map(|f| f.to_string()).collect();
            let _ = writeln!(
                out,
                "  {:<12} frames {}{}",
                s.stage.as_str(),
                frames.join(","),
                if s.frames.len() > 20 { ",…" } else { "" }
            );
        }
    }
    out
}

pub fn table_header() -> String {
    format!(
        "{:>4} {:<24} {:<24} {:<13} {:<28} summary\n",
        "#", "client", "server", "last stage", "verdict"
    )
}

fn verdict_text(r: &ConnectionReport) -> String {
    match &r.verdict {
        Verdict::Ok => "ok".to_owned(),
        Verdict::Failed { kind, by } => format!("{} ({by})", kind.name()),
    }
}

pub fn table_row(n: usize, r: &ConnectionReport) -> String {
    format!(
        "{:>4} {:<24} {:<24} {:<13} {:<28} {}\n",
        n,
        r.client,
        r.server,
        r.last_stage.as_str(),
        verdict_text(r),
        r.summary
    )
}

/// Failing connections counted by stage, verdict and fault class, with the first connection of
/// each group (to look at with `--connection N`).
#[derive(Debug, Default)]
pub struct FailureSummary {
    ok: usize,
    groups: BTreeMap<(String, String, &'static str), (usize, usize)>,
    seen: usize,
}

impl FailureSummary {
    pub fn add(&mut self, r: &ConnectionReport) {
        self.seen += 1;
        if report::exit_code(r) == exit::SUCCESS {
            self.ok += 1;
            return;
        }
        let class: FaultClass = diagnose::diagnose(r).fault_class;
        let e = self
            .groups
            .entry((
                r.last_stage.as_str().to_owned(),
                verdict_text(r),
                class.as_str(),
            ))
            .or_insert((0, self.seen));
        e.0 += 1;
    }

    /// The summary under the table: counts per failure, most frequent first.
    pub fn render(&self) -> String {
        let total = self.seen;
        let failed = total.saturating_sub(self.ok);
        let mut out = format!(
            "\n{total} connection(s): {} ok, {failed} failed or cut short\n",
            self.ok
        );
        if failed == 0 {
            return out;
        }
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
        let _ = writeln!(
            out,
            "{:>6}  {:<13} {:<28} {:<22} first",
            "count", "stage", "verdict", "fault class"
        );
        for ((stage, verdict, class), (count, first)) in groups {
            let _ = writeln!(
                out,
                "{count:>6}  {stage:<13} {verdict:<28} {class:<22} #{first}"
            );
        }
        out.push_str("(details: rdprobe analyze FILE --connection N, or --failed)\n");
        out
    }
}
