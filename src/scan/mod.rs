//! `rdprobe scan`: many targets, each probed in full like `rdprobe probe`, under a concurrency
//! limit, a global rate limit and a limit of probes in flight per host; results stream to the
//! caller as each target ends. Memory does not grow with the target list: targets are generated
//! lazily ([`targets`]), a bounded number wait for a busy host, and results are handed on, not kept.
//! [`store`] keeps results in SQLite or PostgreSQL beyond the run (and lets a run resume); [`diff`] compares runs.

pub mod diff;
pub mod postgres;
pub mod store;
pub mod targets;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::enumerate::{EnumOptions, EnumReport};
use crate::probe::{self, ProbeOptions};
use crate::report::ConnectionReport;
use crate::stage::{Stage, Verdict};
pub use targets::{Shard, Target, TargetError, Targets};

/// Most targets waiting for a busy host at once (beyond them the list is not read further until a
/// host frees up): bounds memory whatever the list holds.
pub const MAX_WAITING: usize = 4096;

/// Why a scan stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Targets(#[from] TargetError),
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("store: {0}")]
    StoreData(String),
    #[error("writing results: {0}")]
    Io(#[from] std::io::Error),
}

/// How a scan runs.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// The probe every target gets (host and port are replaced per target).
    pub probe: ProbeOptions,
    /// `--enum`: every target gets this enumeration instead of the probe (host and port replaced
    /// per target; bounded by the probe's `deadline`).
    pub enumerate: Option<EnumOptions>,
    /// Most probes in flight.
    pub concurrency: usize,
    /// Most probes started per second, over the whole scan (None: no limit).
    pub rate: Option<f64>,
    /// Most probes in flight to one host (servers like freerdp-shadow serve one connection at a
    /// time; xrdp drops beyond a few).
    pub per_host: usize,
    pub shard: Shard,
}

/// What one target gave: a probe's report, or an enumeration (`--enum`).
#[derive(Clone, Debug)]
pub enum Outcome {
    Probe(ConnectionReport),
    Enum(Box<EnumReport>),
}

/// One target's result.
#[derive(Clone, Debug)]
pub struct ScanResult {
    pub target: Target,
    pub outcome: Outcome,
    /// Wall time of the probe, in milliseconds.
    pub elapsed_ms: f64,
}

/// Whether any X.224 question of an enumeration got an answer.
pub fn enum_answered(e: &EnumReport) -> bool {
    e.protocols
        .iter()
        .chain(std::iter::once(&e.all_offered))
        .any(|p| p.error.is_none())
}

impl ScanResult {
    /// The probe's report (None for an enumeration).
    pub fn report(&self) -> Option<&ConnectionReport> {
        match &self.outcome {
            Outcome::Probe(r) => Some(r),
            Outcome::Enum(_) => None,
        }
    }

    /// The last stage reached (`enum` for an enumeration).
    pub fn last_stage_name(&self) -> &'static str {
        match &self.outcome {
            Outcome::Probe(r) => r.last_stage.as_str(),
            Outcome::Enum(_) => "enum",
        }
    }

    /// `ok` or the failure kind; an enumeration is `ok` when the server answered at all, else
    /// `unreachable`.
    pub fn verdict_name(&self) -> &'static str {
        match &self.outcome {
            Outcome::Probe(r) => verdict_kind(&r.verdict),
            Outcome::Enum(e) if enum_answered(e) => "ok",
            Outcome::Enum(_) => "unreachable",
        }
    }

    pub fn failing(&self) -> bool {
        match &self.outcome {
            Outcome::Probe(r) => is_failing(r),
            Outcome::Enum(e) => !enum_answered(e),
        }
    }

    /// The JSON line: the schema of `probe --json` (the report, `exit_code`, `diagnosis`) plus
    /// `target` (`host:port`) and `elapsed_ms`; with `--enum`, the schema of `enum --json` with
    /// `target` (`host:port`) and `"mode": "enum"`.
    pub fn to_json(&self) -> serde_json::Value {
        let report = match &self.outcome {
            Outcome::Probe(r) => r,
            Outcome::Enum(e) => {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("target".into(), self.target.key().into());
                    m.insert("mode".into(), "enum".into());
                }
                return v;
            }
        };
        let mut v = serde_json::to_value(report).unwrap_or_default();
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("target".into(), self.target.key().into());
            m.insert("exit_code".into(), crate::report::exit_code(report).into());
            m.insert(
                "diagnosis".into(),
                serde_json::to_value(crate::diagnose::diagnose(report)).unwrap_or_default(),
            );
            m.insert(
                "elapsed_ms".into(),
                serde_json::json!((self.elapsed_ms * 10.0).round() / 10.0),
            );
        }
        v
    }
}

/// The verdict kind as results name it: `ok`, or the failure kind (`stopped` included).
pub fn verdict_kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Failed { kind, .. } => kind.name(),
    }
}

/// Whether a result counts as failing: a verdict other than ok, or stopped by request.
pub fn is_failing(r: &ConnectionReport) -> bool {
    !matches!(
        r.verdict,
        Verdict::Ok
            | Verdict::Failed {
                kind: crate::stage::FailureKind::Stopped,
                ..
            }
    )
}

/// How many of the slowest stages the summary keeps.
pub const SLOWEST_KEPT: usize = 10;

/// One slow stage, for the summary.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SlowStage {
    pub target: String,
    pub stage: Stage,
    pub duration_ms: f64,
}

/// Counts over the results seen so far (bounded: no per-target state).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub done: u64,
    pub failing: u64,
    /// Skipped because a store already had them (`--resume`).
    pub skipped: u64,
    /// Results per `last_stage` and verdict kind.
    pub by_outcome: BTreeMap<String, u64>,
    /// Failing results per stage.
    pub failures_by_stage: BTreeMap<Stage, u64>,
    /// The slowest stages seen, slowest first.
    pub slowest: Vec<SlowStage>,
    /// Total probe wall time, for the mean.
    pub total_ms: f64,
}

impl Summary {
    pub fn add(&mut self, r: &ScanResult) {
        self.done += 1;
        self.total_ms += r.elapsed_ms;
        let key = format!("{} {}", r.last_stage_name(), r.verdict_name());
        *self.by_outcome.entry(key).or_default() += 1;
        if r.failing() {
            self.failing += 1;
            if let Some(rep) = r.report() {
                *self.failures_by_stage.entry(rep.last_stage).or_default() += 1;
            }
        }
        let stages = r.report().map_or(&[][..], |rep| &rep.stages[..]);
        for s in stages.iter().filter(|s| s.duration_ms > 0.0) {
            let slower = self.slowest.len() < SLOWEST_KEPT
                || self
                    .slowest
                    .last()
                    .is_some_and(|l| s.duration_ms > l.duration_ms);
            if slower {
                self.slowest.push(SlowStage {
                    target: r.target.key(),
                    stage: s.stage,
                    duration_ms: s.duration_ms,
                });
                self.slowest
                    .sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
                self.slowest.truncate(SLOWEST_KEPT);
            }
        }
    }

    /// `failing 3 (tcp 2, tls 1)`.
    pub fn failing_line(&self) -> String {
        let per: Vec<String> = self
            .failures_by_stage
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        if per.is_empty() {
            format!("failing {}", self.failing)
        } else {
            format!("failing {} ({})", self.failing, per.join(", "))
        }
    }

    /// The end-of-run summary, as text.
    pub fn render(&self, elapsed: Duration) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "{} target(s) in {:.1} s ({:.1}/s), {}{}",
            self.done,
            secs,
            self.done as f64 / secs,
            self.failing_line(),
            if self.skipped > 0 {
                format!(", {} already done (skipped)", self.skipped)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out, "{:<36} {:>8}", "LAST STAGE / VERDICT", "TARGETS");
        for (k, n) in &self.by_outcome {
            let _ = writeln!(out, "{k:<36} {n:>8}");
        }
        if !self.slowest.is_empty() {
            let _ = writeln!(out, "slowest stages:");
            for s in self.slowest.iter().take(5) {
                let _ = writeln!(
                    out,
                    "  {:<28} {:<12} {:>9.1} ms",
                    s.target,
                    s.stage.as_str(),
                    s.duration_ms
                );
            }
        }
        out
    }
}

/// What a finished (or interrupted) scan reports.
#[derive(Debug, Default)]
pub struct ScanEnd {
    /// Stopped by `stop` before every target was probed.
    pub interrupted: bool,
    /// Probes cut short by the interruption (their targets are not reported; a resumed run does them).
    pub abandoned: usize,
}

/// Runs the scan: every target of `targets` in this shard, except those `skip` says are done, is
/// probed; `on_result` gets each result as it ends (in completion order). `stop` resolving stops
/// the scan: nothing new starts, probes in flight are abandoned (and not reported), results that
/// had already ended are still handed on.
pub async fn run<I, F>(
    targets: I,
    opts: &ScanOptions,
    mut skip: impl FnMut(&Target) -> Result<bool, ScanError>,
    mut on_result: F,
    stop: impl Future<Output = ()>,
) -> Result<ScanEnd, ScanError>
where
    I: Iterator<Item = Result<Target, TargetError>>,
    F: FnMut(ScanResult) -> Result<(), ScanError>,
{
    let concurrency = opts.concurrency.max(1);
    let per_host = opts.per_host.max(1);
    let period = opts
        .rate
        .filter(|r| *r > 0.0 && r.is_finite())
        .map(|r| Duration::from_secs_f64(1.0 / r));
    // INVARIANT: a probe cannot outlive its own deadline by more than this margin.
    let hard_limit = opts.probe.deadline + opts.probe.stage_timeout + Duration::from_secs(2);
    let mut targets = targets.filter(|t| t.as_ref().map_or(true, |t| opts.shard.contains(t)));
    let mut busy: HashMap<String, usize> = HashMap::new();
    let mut waiting: HashMap<String, VecDeque<Target>> = HashMap::new();
    let mut waiting_total = 0usize;
    let mut ready: VecDeque<Target> = VecDeque::new();
    let mut exhausted = false;
    let mut next_start = tokio::time::Instant::now();
    let mut inflight: tokio::task::JoinSet<(String, Option<ScanResult>)> =
        tokio::task::JoinSet::new();
    tokio::pin!(stop);
    let mut end = ScanEnd::default();
    loop {
        // Start what may start.
        while inflight.len() < concurrency {
            let t = if let Some(t) = ready.pop_front() {
                t
            } else if exhausted || waiting_total >= MAX_WAITING {
                break;
            } else {
                match targets.next() {
                    None => {
                        exhausted = true;
                        break;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(t)) => {
                        if skip(&t)? {
                            continue;
                        }
                        if busy.get(&t.host).copied().unwrap_or(0) >= per_host {
                            waiting.entry(t.host.clone()).or_default().push_back(t);
                            waiting_total += 1;
                            continue;
                        }
                        t
                    }
                }
            };
            if let Some(p) = period {
                let now = tokio::time::Instant::now();
                if next_start > now {
                    tokio::select! {
                        _ = tokio::time::sleep_until(next_start) => {}
                        _ = &mut stop => {
                            end.interrupted = true;
                            ready.push_front(t);
                            break;
                        }
                    }
                }
                next_start = next_start.max(now) + p;
            }
            *busy.entry(t.host.clone()).or_default() += 1;
            let mut o = opts.probe.clone();
            o.host = t.host.clone();
            o.port = t.port;
            let en = opts.enumerate.clone().map(|mut e| {
                e.host = t.host.clone();
                e.port = t.port;
                e
            });
            inflight.spawn(async move {
                let host = t.host.clone();
                let started = Instant::now();
                let outcome = match en {
                    // An enumeration has no overall deadline of its own: the probe's bounds it.
                    Some(e) => tokio::time::timeout(o.deadline, crate::enumerate::enumerate(&e))
                        .await
                        .ok()
                        .map(|r| Outcome::Enum(Box::new(r))),
                    None => tokio::time::timeout(hard_limit, probe::probe(&o))
                        .await
                        .ok()
                        .map(|r| Outcome::Probe(r.report)),
                };
                let res = outcome.map(|outcome| ScanResult {
                    target: t,
                    outcome,
                    elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                });
                (host, res)
            });
        }
        if end.interrupted {
            break;
        }
        if inflight.is_empty() {
            // Nothing runs, so no host is busy: nothing waits either.
            break;
        }
        tokio::select! {
            joined = inflight.join_next() => {
                let Some(joined) = joined else { continue };
                let (host, res) = match joined {
                    Ok(v) => v,
                    // A panic inside a probe is caught by the probe itself; a join error here
                    // is a bug of ours: stop rather than lose track of a host.
                    Err(e) => return Err(ScanError::Io(std::io::Error::other(format!("probe task failed: {e}")))),
                };
                if let Some(n) = busy.get_mut(&host) {
                    *n -= 1;
                    if *n == 0 {
                        busy.remove(&host);
                    }
                }
                if let Some(q) = waiting.get_mut(&host) {
                    if let Some(t) = q.pop_front() {
                        waiting_total -= 1;
                        ready.push_back(t);
                    }
                    if q.is_empty() {
                        waiting.remove(&host);
                    }
                }
                match res {
                    Some(r) => on_result(r)?,
                    None => end.abandoned += 1,
                }
            }
            _ = &mut stop => {
                end.interrupted = true;
                break;
            }
        }
    }
    if end.interrupted {
        // Results that ended before the signal are kept; the rest are abandoned.
        while let Some(joined) = inflight.try_join_next() {
            if let Ok((_, Some(r))) = joined {
                on_result(r)?;
            }
        }
        end.abandoned += inflight.len();
        inflight.abort_all();
    }
    Ok(end)
}
