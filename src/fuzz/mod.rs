//! `rdprobe fuzz`: a stateful, shrinking fuzzer for the handshake stages.
//!
//! Per case, [`session`] drives the valid stages before the fuzzed one and sends one structured
//! mutation of that stage's PDU ([`x224`], [`tls`], [`credssp`], [`mcs`], [`channels`]: proptest
//! strategies over the PDU's fields with boundary values ([`ladder`]) plus byte [`havoc`]). The
//! [`oracle`] classifies the answer and, after suspicious answers and every N cases, checks that a
//! fresh valid handshake still succeeds. New anomalous signatures (stage, response class, liveness)
//! are [`shrink`]ed against the live target and written by [`findings`] as a case file, a
//! stage-annotated pcapng and a README with the replay command.
//!
//! INVARIANT: the cases are a pure function of the seed: case `i` of seed `k` is the same whatever
//! the target answered before (shrinking does not draw from the runner's RNG).

pub mod channels;
pub mod credssp;
pub mod findings;
pub mod havoc;
pub mod ladder;
pub mod mcs;
pub mod oracle;
pub mod session;
pub mod shrink;
pub mod tls;
pub mod trace_bytes;
pub mod x224;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde::{Deserialize, Serialize};

pub use oracle::{Liveness, ResponseClass, Signature};
pub use session::{CaseRun, Target};
pub use shrink::{ShrinkBudget, ShrinkStats};

use crate::stage::Stage;

/// The stages the fuzzer can mutate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FuzzStage {
    X224,
    Tls,
    Credssp,
    Mcs,
    Channels,
}

impl FuzzStage {
    pub const ALL: [FuzzStage; 5] = [
        FuzzStage::X224,
        FuzzStage::Tls,
        FuzzStage::Credssp,
        FuzzStage::Mcs,
        FuzzStage::Channels,
    ];

    pub fn as_str(self) -> &'static str {
        self.stage().as_str()
    }

    pub fn stage(self) -> Stage {
        match self {
            FuzzStage::X224 => Stage::X224,
            FuzzStage::Tls => Stage::Tls,
            FuzzStage::Credssp => Stage::Credssp,
            FuzzStage::Mcs => Stage::Mcs,
            FuzzStage::Channels => Stage::Channels,
        }
    }

    pub fn parse(s: &str) -> Option<FuzzStage> {
        let st = Stage::parse(s)?;
        FuzzStage::ALL.into_iter().find(|f| f.stage() == st)
    }
}

impl std::fmt::Display for FuzzStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What encoders need to know about the session so far.
#[derive(Clone, Debug)]
pub struct EncodeCtx {
    /// requestedProtocols of the X.224 request.
    pub requested_protocols: u32,
    /// The protocol the target selected (CS_CORE serverSelectedProtocol).
    pub selected_protocol: u32,
    /// The user channel from the Attach User Confirm.
    pub user_channel: Option<u16>,
    /// The I/O channel from the Connect Response.
    pub io_channel: u16,
    /// Static channel ids from the Connect Response.
    pub static_channels: Vec<u16>,
}

impl Default for EncodeCtx {
    fn default() -> Self {
        EncodeCtx {
            requested_protocols: session::ALL_ENHANCED,
            selected_protocol: 0,
            user_channel: None,
            io_channel: 1003,
            static_channels: Vec::new(),
        }
    }
}

/// One fuzz case: the stage and the mutations of its PDU (none: the valid PDU).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "lowercase")]
pub enum Case {
    X224(x224::X224Case),
    Tls(tls::TlsCase),
    Credssp(credssp::CredsspCase),
    Mcs(mcs::McsCase),
    Channels(channels::ChannelsCase),
}

impl Case {
    pub fn stage(&self) -> FuzzStage {
        match self {
            Case::X224(_) => FuzzStage::X224,
            Case::Tls(_) => FuzzStage::Tls,
            Case::Credssp(_) => FuzzStage::Credssp,
            Case::Mcs(_) => FuzzStage::Mcs,
            Case::Channels(_) => FuzzStage::Channels,
        }
    }

    /// The valid PDU of `stage` (what liveness checks send).
    pub fn valid(stage: FuzzStage) -> Case {
        match stage {
            FuzzStage::X224 => Case::X224(Default::default()),
            FuzzStage::Tls => Case::Tls(Default::default()),
            FuzzStage::Credssp => Case::Credssp(Default::default()),
            FuzzStage::Mcs => Case::Mcs(Default::default()),
            FuzzStage::Channels => Case::Channels(Default::default()),
        }
    }

    /// The proptest strategy of `stage`'s cases.
    pub fn strategy(stage: FuzzStage) -> BoxedStrategy<Case> {
        match stage {
            FuzzStage::X224 => x224::strategy().prop_map(Case::X224).boxed(),
            FuzzStage::Tls => tls::strategy().prop_map(Case::Tls).boxed(),
            FuzzStage::Credssp => credssp::strategy().prop_map(Case::Credssp).boxed(),
            FuzzStage::Mcs => mcs::strategy().prop_map(Case::Mcs).boxed(),
            FuzzStage::Channels => channels::strategy().prop_map(Case::Channels).boxed(),
        }
    }

    /// Number of mutations.
    pub fn len(&self) -> usize {
        match self {
            Case::X224(c) => c.mutations.len(),
            Case::Tls(c) => c.mutations.len(),
            Case::Credssp(c) => c.mutations.len(),
            Case::Mcs(c) => c.mutations.len(),
            Case::Channels(c) => c.mutations.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mutations as compact JSON (for tables and READMEs).
    pub fn summary(&self) -> String {
        let v = match self {
            Case::X224(c) => serde_json::to_string(&c.mutations),
            Case::Tls(c) => serde_json::to_string(&c.mutations),
            Case::Credssp(c) => serde_json::to_string(&c.mutations),
            Case::Mcs(c) => serde_json::to_string(&c.mutations),
            Case::Channels(c) => serde_json::to_string(&c.mutations),
        };
        v.unwrap_or_default()
    }
}

/// Why a fuzz run could not start.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("refusing to fuzz {0}: not a loopback address (fuzzing can crash a production server; pass --allow-remote to insist)")]
    Remote(SocketAddr),
    #[error("the target does not complete a valid handshake to stage {stage}: {class}: {detail}")]
    Baseline {
        stage: FuzzStage,
        class: ResponseClass,
        detail: String,
    },
    #[error("cannot write findings: {0}")]
    Io(#[from] std::io::Error),
    #[error("case file {path}: {detail}")]
    CaseFile { path: PathBuf, detail: String },
}

/// Refuses targets outside loopback (127.0.0.0/8, ::1) unless `allow_remote`.
pub fn check_target(addr: SocketAddr, allow_remote: bool) -> Result<(), FuzzError> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(FuzzError::Remote(addr))
    }
}

/// Shortest wait for a reply before the fuzzer half-closes (see [`Target::quiet`]).
pub const MIN_QUIET: Duration = Duration::from_millis(10);

/// Quiet period of the recorded run of a silence finding (longer than decode's 500 ms client
/// wait, so the capture shows the server timing out).
pub const REPRO_QUIET: Duration = Duration::from_millis(600);

/// A fuzz run's settings.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    pub target: Target,
    pub stage: FuzzStage,
    /// Most cases to run.
    pub cases: u64,
    /// Stop after this long (whatever `cases` says).
    pub duration: Option<Duration>,
    pub seed: u64,
    /// Where findings go (`DIR/NNNN/`); None: not written.
    pub out: Option<PathBuf>,
    /// Check liveness every this many cases (and after every suspicious answer).
    pub liveness_every: u64,
    /// How long a target that failed a liveness check gets to recover before it counts as down.
    pub recovery: Duration,
    pub shrink: bool,
    pub shrink_budget: ShrinkBudget,
    /// Derive `target.quiet` from the baseline handshake's duration (8x, at least 10 ms, at most
    /// `target.timeout`) instead of using it as given.
    pub adaptive_quiet: bool,
    /// Stop after this many findings.
    pub max_findings: Option<u64>,
    /// Set to stop the run after the current case (e.g. on SIGINT).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl FuzzOptions {
    pub fn new(target: Target, stage: FuzzStage) -> FuzzOptions {
        FuzzOptions {
            target,
            stage,
            cases: 1000,
            duration: None,
            seed: 0,
            out: None,
            liveness_every: 50,
            recovery: Duration::from_secs(10),
            shrink: true,
            shrink_budget: ShrinkBudget::default(),
            adaptive_quiet: true,
            max_findings: None,
            cancel: None,
        }
    }
}

/// Live counters of a run (what the progress bar shows).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub cases: u64,
    pub classes: BTreeMap<ResponseClass, u64>,
    pub liveness_checks: u64,
    pub liveness: BTreeMap<Liveness, u64>,
    pub last_liveness: Option<Liveness>,
    pub findings: u64,
    pub elapsed_ms: u64,
    /// Time spent shrinking (not counted in `cases_per_sec`).
    pub shrink_ms: u64,
}

impl Stats {
    /// Cases per second of fuzzing time (shrinking excluded).
    pub fn cases_per_sec(&self) -> f64 {
        let ms = self.elapsed_ms.saturating_sub(self.shrink_ms).max(1);
        self.cases as f64 * 1000.0 / ms as f64
    }
}

/// One finding, as written to `case.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    /// Format version of this file.
    pub rdprobe_fuzz_case: u32,
    pub signature: Signature,
    /// What the target did with the minimal case.
    pub detail: String,
    pub target: SocketAddr,
    pub seed: u64,
    /// 0-based index of the case that found it.
    pub case_index: u64,
    /// The minimal case (after shrinking).
    pub case: Case,
    /// The case as generated.
    pub original_case: Case,
    /// The minimal case's mutated bytes as sent, hex.
    pub sent_hex: String,
    /// Whether the minimal case reproduced the signature when its capture was recorded.
    pub reproduced: bool,
    pub shrink: Option<ShrinkStats>,
    /// Session settings the replay reuses.
    pub session: SessionSettings,
    /// The directory it was written to (not in the file).
    #[serde(skip)]
    pub dir: Option<PathBuf>,
}

/// The session settings a case needs to be replayed the same way (never the password).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionSettings {
    pub timeout_ms: u64,
    pub quiet_ms: u64,
    pub protocols: Option<u32>,
    pub user: Option<String>,
    pub domain: Option<String>,
    pub recovery_ms: u64,
}

impl SessionSettings {
    fn of(t: &Target, o: &FuzzOptions) -> SessionSettings {
        SessionSettings {
            timeout_ms: t.timeout.as_millis() as u64,
            quiet_ms: t.quiet.as_millis() as u64,
            protocols: t.protocols,
            user: t.credentials.as_ref().map(|c| c.user.clone()),
            domain: t.credentials.as_ref().and_then(|c| c.domain.clone()),
            recovery_ms: o.recovery.as_millis() as u64,
        }
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Cases,
    MaxFindings,
    Duration,
    TargetDown,
    Cancelled,
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub target: SocketAddr,
    pub stage: FuzzStage,
    pub seed: u64,
    pub stats: Stats,
    pub cases_per_sec: f64,
    pub findings: Vec<Finding>,
    pub stopped: StopReason,
}

/// Progress callbacks (the CLI's progress bar); every method has a no-op default.
pub trait Progress {
    fn case_done(&mut self, _stats: &Stats) {}
    fn shrinking(&mut self, _sig: &Signature) {}
    fn finding(&mut self, _f: &Finding) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

/// Proptest's RNG seeded from `seed` (ChaCha, so cases are stable across platforms).
pub fn runner_for(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    for (k, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&seed.wrapping_add(k as u64).to_le_bytes());
    }
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// The cases of `seed` for `stage`, in order (what a run sends, without a target).
pub fn cases(stage: FuzzStage, seed: u64, n: usize) -> Vec<Case> {
    let strategy = Case::strategy(stage);
    let mut runner = runner_for(seed);
    (0..n)
        .filter_map(|_| strategy.new_tree(&mut runner).ok().map(|t| t.current()))
        .collect()
}

/// Checks that a fresh valid handshake to the stage succeeds; retries within `recovery`.
pub async fn check_liveness(target: &Target, stage: FuzzStage, recovery: Duration) -> Liveness {
    let started = Instant::now();
    let valid = Case::valid(stage);
    if session::run_case(target, &valid).await.class == ResponseClass::ValidReply {
        return Liveness::Alive;
    }
    let mut pause = Duration::from_millis(100);
    while started.elapsed() < recovery {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        if session::run_case(target, &valid).await.class == ResponseClass::ValidReply {
            return Liveness::Hung;
        }
    }
    Liveness::Down
}

/// Runs `case` and, when asked, a liveness check after it: the case's signature.
pub async fn run_signature(
    target: &Target,
    case: &Case,
    with_liveness: bool,
    recovery: Duration,
) -> (Signature, CaseRun) {
    let run = session::run_case(target, case).await;
    let liveness = if with_liveness {
        check_liveness(target, case.stage(), recovery).await
    } else {
        Liveness::Unchecked
    };
    (
        Signature {
            stage: case.stage(),
            class: run.class,
            liveness: liveness.for_signature(),
        },
        run,
    )
}

fn cancelled(o: &FuzzOptions) -> bool {
    o.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Runs a fuzz campaign to the end (cases, duration, cancellation or a target that went down).
pub async fn run(opts: &FuzzOptions, progress: &mut dyn Progress) -> Result<Summary, FuzzError> {
    let started = Instant::now();
    let mut adapted = opts.target.clone();
    let stage = opts.stage;
    let baseline = session::run_case(&adapted, &Case::valid(stage)).await;
    if baseline.class != ResponseClass::ValidReply {
        return Err(FuzzError::Baseline {
            stage,
            class: baseline.class,
            detail: baseline.detail,
        });
    }
    if opts.adaptive_quiet {
        adapted.quiet = (baseline.elapsed * 8).max(MIN_QUIET).min(adapted.timeout);
    }
    let target = &adapted;
    let strategy = Case::strategy(stage);
    let mut runner = runner_for(opts.seed);
    let mut stats = Stats::default();
    let mut seen: HashSet<Signature> = HashSet::new();
    let mut findings = Vec::new();
    let mut stopped = StopReason::Cases;
    for index in 0..opts.cases {
        if cancelled(opts) {
            stopped = StopReason::Cancelled;
            break;
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            stopped = StopReason::Duration;
            break;
        }
        let Ok(mut tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let case = tree.current();
        let run = session::run_case(target, &case).await;
        let periodic = opts.liveness_every > 0 && (index + 1) % opts.liveness_every == 0;
        let liveness = if run.class.suspicious() || periodic {
            stats.liveness_checks += 1;
            let l = check_liveness(target, stage, opts.recovery).await;
            *stats.liveness.entry(l).or_default() += 1;
            stats.last_liveness = Some(l);
            l
        } else {
            Liveness::Unchecked
        };
        stats.cases += 1;
        *stats.classes.entry(run.class).or_default() += 1;
        let sig = Signature {
            stage,
            class: run.class,
            liveness: liveness.for_signature(),
        };
        if sig.is_finding() && seen.insert(sig) {
            progress.shrinking(&sig);
            let shrink_started = Instant::now();
            let needs_liveness = sig.liveness != Liveness::Alive;
            let (minimal, shrink_stats) = if opts.shrink && liveness != Liveness::Down {
                let (m, s) = shrink::shrink(&mut *tree, opts.shrink_budget, async |c: &Case| {
                    run_signature(target, c, needs_liveness, opts.recovery)
                        .await
                        .0
                        == sig
                })
                .await;
                (m, Some(s))
            } else {
                (case.clone(), None)
            };
            // Record the minimal case once more for its capture. A silence is recorded with a
            // long quiet period so that the capture reads as the server timing out, not as the
            // client stopping (decode calls a client FIN within 500 ms of its request a stop).
            let (again, rec) = if liveness == Liveness::Down {
                (sig, run.clone())
            } else {
                let mut rt = target.clone();
                if sig.class == ResponseClass::Silence {
                    rt.quiet = rt.quiet.max(REPRO_QUIET);
                }
                run_signature(&rt, &minimal, needs_liveness, opts.recovery).await
            };
            let mut finding = Finding {
                rdprobe_fuzz_case: 1,
                signature: sig,
                detail: rec.detail.clone(),
                target: target.addr,
                seed: opts.seed,
                case_index: index,
                case: minimal,
                original_case: case.clone(),
                sent_hex: hex(&rec.sent),
                reproduced: again == sig,
                shrink: shrink_stats,
                session: SessionSettings::of(target, opts),
                dir: None,
            };
            if let Some(out) = &opts.out {
                finding.dir = Some(findings::write_finding(out, &finding, &rec.trace)?);
            }
            stats.findings += 1;
            stats.shrink_ms += shrink_started.elapsed().as_millis() as u64;
            progress.finding(&finding);
            findings.push(finding);
        }
        stats.elapsed_ms = started.elapsed().as_millis() as u64;
        progress.case_done(&stats);
        if liveness == Liveness::Down {
            stopped = StopReason::TargetDown;
            break;
        }
        if opts.max_findings.is_some_and(|m| stats.findings >= m) {
            stopped = StopReason::MaxFindings;
            break;
        }
    }
    stats.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Summary {
        target: target.addr,
        stage,
        seed: opts.seed,
        cases_per_sec: stats.cases_per_sec(),
        stats,
        findings,
        stopped,
    })
}

/// What a replay observed.
#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    pub expected: Signature,
    pub observed: Signature,
    pub reproduced: bool,
    pub detail: String,
    pub sent_hex: String,
}

/// Reads a finding's `case.json`.
pub fn read_case_file(path: &std::path::Path) -> Result<Finding, FuzzError> {
    let text = std::fs::read_to_string(path).map_err(|e| FuzzError::CaseFile {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| FuzzError::CaseFile {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Runs a finding's case once against `target` (with a liveness check) and compares signatures.
/// Returns the replay and the recorded run (for its capture).
pub async fn replay(target: &Target, finding: &Finding, recovery: Duration) -> (Replay, CaseRun) {
    let (observed, run) = run_signature(target, &finding.case, true, recovery).await;
    let expected = finding.signature;
    (
        Replay {
            expected,
            observed,
            reproduced: observed == expected,
            detail: run.detail.clone(),
            sent_hex: hex(&run.sent),
        },
        run,
    )
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_a_function_of_the_seed() {
        for stage in FuzzStage::ALL {
            let a = cases(stage, 7, 50);
            let b = cases(stage, 7, 50);
            let c = cases(stage, 8, 50);
            assert_eq!(a.len(), 50);
            assert_eq!(a, b, "{stage}");
            assert_ne!(a, c, "{stage}");
            assert!(a.iter().all(|c| c.stage() == stage && !c.is_empty()));
        }
    }

    #[test]
    fn every_generated_case_encodes_and_round_trips() {
        let ctx = EncodeCtx {
            selected_protocol: 2,
            user_channel: Some(1007),
            static_channels: vec![1004, 1005],
            ..EncodeCtx::default()
        };
        for stage in FuzzStage::ALL {
            for c in cases(stage, 1, 300) {
                let bytes = match &c {
                    Case::X224(x) => x224::encode(&x.mutations, &ctx),
                    Case::Tls(x) => tls::encode(&x.mutations, &ctx),
                    Case::Credssp(x) => credssp::encode(&x.mutations, &ctx),
                    Case::Mcs(x) => mcs::encode(&x.mutations, &ctx),
                    Case::Channels(x) => {
                        let mut b = channels::encode_phase_one(&x.mutations);
                        b.extend(channels::encode_joins(&x.mutations, &ctx).concat());
                        b
                    }
                };
                assert!(bytes.len() < 200_000, "{stage}: {}", bytes.len());
                let j = serde_json::to_string(&c).expect("json");
                let back: Case = serde_json::from_str(&j).expect("parse");
                assert_eq!(back, c);
            }
        }
    }

    #[test]
    fn loopback_only_by_default() {
        let lo: SocketAddr = "127.0.0.5:3389".parse().expect("addr");
        let v6: SocketAddr = "[::1]:3389".parse().expect("addr");
        let remote: SocketAddr = "10.0.0.1:3389".parse().expect("addr");
        assert!(check_target(lo, false).is_ok());
        assert!(check_target(v6, false).is_ok());
        assert!(matches!(
            check_target(remote, false),
            Err(FuzzError::Remote(_))
        ));
        assert!(check_target(remote, true).is_ok());
        assert_eq!(FuzzStage::parse("MCS"), Some(FuzzStage::Mcs));
        assert_eq!(FuzzStage::parse("licensing"), None);
    }
}
