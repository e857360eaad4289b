//! `rdprobe fuzz`: a stateful, shrinking fuzzer for the handshake stages.
//!
//! Per case, [`session`] drives the valid stages before the fuzzed one and sends one structured
//! mutation of that stage's PDU ([`x224`], [`tls`], [`credssp`] (rounds 1-3), [`mcs`],
//! [`channels`], and for standard RDP security [`security`] and [`licensing`]: proptest
//! strategies over the PDU's fields with boundary values ([`ladder`]) plus byte [`havoc`]). The
//! [`oracle`] classifies the answer and, after suspicious answers and every N cases, checks that a
//! fresh valid handshake still succeeds; with a [`watch::Watcher`] (`--lab`, `--pid`) the target
//! process's fate and RSS are checked after every case too. New anomalous signatures (stage,
//! response class, liveness, process fate) are [`shrink`]ed against the live target and written
//! by [`findings`] as a case file, a stage-annotated pcapng and a README with the replay command.
//!
//! INVARIANT: the cases are a pure function of the seed: case `i` of seed `k` is the same whatever
//! the target answered before (shrinking does not draw from the runner's RNG).

pub mod channels;
pub mod credssp;
pub mod descendants;
pub mod findings;
pub mod gateway;
pub mod havoc;
pub mod ladder;
pub mod licensing;
pub mod mcs;
pub mod oracle;
pub mod parsers;
pub mod security;
pub mod session;
pub mod shrink;
pub mod tls;
pub mod trace_bytes;
pub mod watch;
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
pub use watch::{ProcessFate, ProcessStats, Watcher};

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
    /// Standard RDP security only: Security Exchange and Client Info PDUs.
    Security,
    /// Standard RDP security only: the client's licensing PDU.
    Licensing,
    /// RD Gateway: the first HTTP request (target: the gateway).
    #[serde(rename = "gw_http")]
    GwHttp,
    /// RD Gateway: handshake, tunnel create or tunnel authorization packet.
    #[serde(rename = "gw_tunnel")]
    GwTunnel,
    /// RD Gateway: the channel create packet.
    #[serde(rename = "gw_channel")]
    GwChannel,
}

impl FuzzStage {
    pub const ALL: [FuzzStage; 10] = [
        FuzzStage::X224,
        FuzzStage::Tls,
        FuzzStage::Credssp,
        FuzzStage::Mcs,
        FuzzStage::Channels,
        FuzzStage::Security,
        FuzzStage::Licensing,
        FuzzStage::GwHttp,
        FuzzStage::GwTunnel,
        FuzzStage::GwChannel,
    ];

    /// The RD Gateway stages (the target is a gateway, not an RDP server).
    pub fn is_gateway(self) -> bool {
        matches!(
            self,
            FuzzStage::GwHttp | FuzzStage::GwTunnel | FuzzStage::GwChannel
        )
    }

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
            FuzzStage::Security => Stage::Security,
            FuzzStage::Licensing => Stage::Licensing,
            FuzzStage::GwHttp => Stage::GwHttp,
            FuzzStage::GwTunnel => Stage::GwTunnel,
            FuzzStage::GwChannel => Stage::GwChannel,
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
    Security(security::SecurityCase),
    Licensing(licensing::LicensingCase),
    #[serde(rename = "gw_http")]
    GwHttp(gateway::GwHttpCase),
    #[serde(rename = "gw_tunnel")]
    GwTunnel(gateway::GwTunnelCase),
    #[serde(rename = "gw_channel")]
    GwChannel(gateway::GwChannelCase),
}

impl Case {
    pub fn stage(&self) -> FuzzStage {
        match self {
            Case::X224(_) => FuzzStage::X224,
            Case::Tls(_) => FuzzStage::Tls,
            Case::Credssp(_) => FuzzStage::Credssp,
            Case::Mcs(_) => FuzzStage::Mcs,
            Case::Channels(_) => FuzzStage::Channels,
            Case::Security(_) => FuzzStage::Security,
            Case::Licensing(_) => FuzzStage::Licensing,
            Case::GwHttp(_) => FuzzStage::GwHttp,
            Case::GwTunnel(_) => FuzzStage::GwTunnel,
            Case::GwChannel(_) => FuzzStage::GwChannel,
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
            FuzzStage::Security => Case::Security(Default::default()),
            FuzzStage::Licensing => Case::Licensing(Default::default()),
            FuzzStage::GwHttp => Case::GwHttp(Default::default()),
            FuzzStage::GwTunnel => Case::GwTunnel(Default::default()),
            FuzzStage::GwChannel => Case::GwChannel(Default::default()),
        }
    }

    /// The strategy a run against `target` uses: with credentials, credssp cases cover every
    /// round (NEGOTIATE, AUTHENTICATE with pubKeyAuth, authInfo), else the first.
    pub fn strategy_for(stage: FuzzStage, target: &Target) -> BoxedStrategy<Case> {
        match stage {
            FuzzStage::Credssp if target.credentials.is_some() => credssp::strategy_all_rounds()
                .prop_map(Case::Credssp)
                .boxed(),
            _ => Case::strategy(stage),
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
            FuzzStage::Security => security::strategy().prop_map(Case::Security).boxed(),
            FuzzStage::Licensing => licensing::strategy().prop_map(Case::Licensing).boxed(),
            FuzzStage::GwHttp => gateway::http_strategy().prop_map(Case::GwHttp).boxed(),
            FuzzStage::GwTunnel => gateway::tunnel_strategy().prop_map(Case::GwTunnel).boxed(),
            FuzzStage::GwChannel => gateway::channel_strategy()
                .prop_map(Case::GwChannel)
                .boxed(),
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
            Case::Security(c) => c.mutations.len(),
            Case::Licensing(c) => c.mutations.len(),
            Case::GwHttp(c) => c.mutations.len(),
            Case::GwTunnel(c) => c.mutations.len(),
            Case::GwChannel(c) => c.mutations.len(),
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
            Case::Credssp(c) if c.round > 1 => {
                serde_json::to_string(&c.mutations).map(|m| format!("round {}: {m}", c.round))
            }
            Case::Credssp(c) => serde_json::to_string(&c.mutations),
            Case::Mcs(c) => serde_json::to_string(&c.mutations),
            Case::Channels(c) => serde_json::to_string(&c.mutations),
            Case::Security(c) => serde_json::to_string(&c.mutations),
            Case::Licensing(c) => serde_json::to_string(&c.mutations),
            Case::GwHttp(c) => serde_json::to_string(&c.mutations),
            Case::GwTunnel(c) => serde_json::to_string(&c.mutations).map(|m| {
                let p = serde_json::to_value(c.packet).unwrap_or_default();
                format!("{}: {m}", p.as_str().unwrap_or("packet"))
            }),
            Case::GwChannel(c) => serde_json::to_string(&c.mutations),
        };
        v.unwrap_or_default()
    }
}

/// Why a fuzz run could not start.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("refusing to fuzz {0}: not a loopback address (fuzzing can crash a production server; pass --allow-remote to insist)")]
    Remote(SocketAddr),
    #[error("the target cannot be fuzzed at stage {stage}: the valid case gets {class} (the port is not served, or the valid stages before {stage} do not complete): {detail}")]
    Baseline {
        stage: FuzzStage,
        class: ResponseClass,
        detail: String,
    },
    #[error("the target answers the valid PDU of stage {stage} now with {first}, now with {then} ({detail}): no baseline to fuzz against")]
    UnstableBaseline {
        stage: FuzzStage,
        first: ResponseClass,
        then: ResponseClass,
        detail: String,
    },
    #[error("cannot write findings: {0}")]
    Io(#[from] std::io::Error),
    #[error("case file {path}: {detail}")]
    CaseFile { path: PathBuf, detail: String },
    #[error("target process: {0}")]
    Watch(#[from] watch::WatchError),
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
    /// RSS of the watched target process at the last sample, in KiB.
    pub target_rss_kib: Option<u64>,
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
    /// The watched target process (`--lab`, `--pid`): RSS over the run, deaths, restarts.
    pub process: Option<ProcessStats>,
    /// How the target answered the valid PDU of the stage (findings are deviations from it).
    pub baseline: ResponseClass,
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

/// How many times the valid case runs before the first mutated one: its answer must not vary.
pub const BASELINE_RUNS: usize = 3;

/// Learns how the target answers the valid PDU of `stage` (a valid reply, or a close, an error
/// reply, a reset, silence): the same class [`BASELINE_RUNS`] times. A target that refuses the
/// connection or fails the valid stages before `stage`, or answers the valid PDU now this way and
/// now that, cannot be fuzzed at `stage`.
pub async fn learn_baseline(target: &Target, stage: FuzzStage) -> Result<CaseRun, FuzzError> {
    let first = session::run_case(target, &Case::valid(stage)).await;
    if matches!(
        first.class,
        ResponseClass::Refused | ResponseClass::PrefixFailed
    ) {
        return Err(FuzzError::Baseline {
            stage,
            class: first.class,
            detail: first.detail,
        });
    }
    if first.class == ResponseClass::ValidReply {
        return Ok(first);
    }
    for _ in 1..BASELINE_RUNS {
        let again = session::run_case(target, &Case::valid(stage)).await;
        if again.class != first.class {
            return Err(FuzzError::UnstableBaseline {
                stage,
                first: first.class,
                then: again.class,
                detail: again.detail,
            });
        }
    }
    Ok(first)
}

/// Checks that a fresh valid handshake to the stage succeeds; retries within `recovery`.
pub async fn check_liveness(target: &Target, stage: FuzzStage, recovery: Duration) -> Liveness {
    check_liveness_watched(target, stage, recovery, None).await
}

/// [`check_liveness`] that gives up at once when the watched process is dead.
pub async fn check_liveness_watched(
    target: &Target,
    stage: FuzzStage,
    recovery: Duration,
    mut watch: Option<&mut Watcher>,
) -> Liveness {
    let started = Instant::now();
    let valid = Case::valid(stage);
    if session::run_case(target, &valid).await.class == target.baseline {
        return Liveness::Alive;
    }
    let mut pause = Duration::from_millis(100);
    while started.elapsed() < recovery {
        if watch.as_deref_mut().is_some_and(|w| w.fate().is_dead()) {
            return Liveness::Down;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        if session::run_case(target, &valid).await.class == target.baseline {
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
        Signature::new(case.stage(), run.class, liveness.for_signature()).against(target.baseline),
        run,
    )
}

/// How long a process that may have crashed gets to die before the fuzzer calls it alive.
pub const SETTLE: Duration = Duration::from_millis(500);

/// The watched process's fate after a case that ended in `class`. A crash reaches the fuzzer as a
/// close or reset a moment before the process is reaped, so after an answer that is not a valid
/// reply the fuzzer probes the listener (one TCP connect): a refused connect means the process
/// is going, and it gets [`SETTLE`] to finish dying.
///
/// The watched process's descendants too: the fuzzer waits (up to [`CHILD_SETTLE`]) for the
/// children serving connections to end, and a child that died of a signal or with an unexpected
/// exit code is the fate ([`ProcessFate::ChildSignaled`], [`ProcessFate::ChildExited`]) unless the
/// process itself died.
pub async fn fate_after(w: &mut Watcher, target: &Target, class: ResponseClass) -> ProcessFate {
    let f = w.fate();
    if f.is_dead() {
        return f;
    }
    let child = w.settle_children(CHILD_SETTLE).await;
    if class == ResponseClass::ValidReply {
        return child.unwrap_or(f);
    }
    let probe = tokio::time::timeout(target.timeout, tokio::net::TcpStream::connect(target.addr));
    let f = match probe.await {
        Ok(Ok(s)) => {
            drop(s);
            w.fate()
        }
        _ => w.settle(SETTLE).await,
    };
    if f.is_dead() {
        return f;
    }
    // The probe's own connection forked a child too: let it end.
    let later = w.settle_children(CHILD_SETTLE).await;
    child.or(later).unwrap_or(f)
}

/// How long the children serving a case's connections get to end after it.
pub const CHILD_SETTLE: Duration = Duration::from_millis(300);

/// The fate after a liveness check: the process's own death wins over a child's.
fn fate_after_check(w: &mut Watcher, before: ProcessFate) -> ProcessFate {
    let f = w.fate();
    if f.is_dead() || !before.is_child_death() {
        f
    } else {
        before
    }
}

/// Times a case runs to tell whether it leaks memory (see [`leaks`]).
pub const LEAK_RUNS: u32 = 8;

/// Least RSS growth per run, in KiB, for a case to count as leaking.
pub const LEAK_MIN_KIB_PER_RUN: u64 = 256;

/// Runs `case` against a watched process and returns the signature with its fate (dead: liveness
/// down without a check). Restarts the process when it died and can be restarted.
pub async fn run_signature_watched(
    target: &Target,
    case: &Case,
    with_liveness: bool,
    recovery: Duration,
    watch: &mut Watcher,
) -> (Signature, CaseRun) {
    let run = session::run_case(target, case).await;
    let mut fate = fate_after(watch, target, run.class).await;
    let liveness = if fate.is_dead() {
        Liveness::Down
    } else if with_liveness {
        let l = check_liveness_watched(target, case.stage(), recovery, Some(watch)).await;
        fate = fate_after_check(watch, fate);
        l
    } else {
        Liveness::Unchecked
    };
    if fate.is_dead() && watch.restartable() {
        let _ = watch.restart().await;
    }
    let sig = Signature {
        process: fate,
        ..Signature::new(
            case.stage(),
            run.class,
            if fate.is_dead() {
                Liveness::Down
            } else {
                liveness.for_signature()
            },
        )
        .against(target.baseline)
    };
    (sig, run)
}

/// The case before the current one (a crash can surface one case late).
struct Prev {
    index: u64,
    tree: Box<dyn ValueTree<Value = Case>>,
    case: Case,
    run: CaseRun,
}

/// Whether `case` kills the watched process with `fate` (then restarted). A liveness handshake
/// after the case catches a process that takes a moment to die.
async fn kills(
    target: &Target,
    case: &Case,
    fate: ProcessFate,
    recovery: Duration,
    w: &mut Watcher,
) -> bool {
    run_trial(target, case, recovery, w).await.0.process == fate
}

/// Runs `case` as a trial of its own ([`Watcher::begin_trial`]): the children serving earlier
/// cases end first, and only the deaths of the children serving this case are its fate.
async fn run_trial(
    target: &Target,
    case: &Case,
    recovery: Duration,
    w: &mut Watcher,
) -> (Signature, CaseRun) {
    w.begin_trial().await;
    let r = run_signature_watched(target, case, true, recovery, w).await;
    w.end_trial();
    r
}

/// Whether `case` makes the watched process grow: RSS after [`LEAK_RUNS`] runs exceeds RSS
/// before by [`LEAK_MIN_KIB_PER_RUN`] per run. Returns the growth per run (KiB) and the last run.
pub async fn leaks(target: &Target, case: &Case, watch: &mut Watcher) -> (bool, u64, CaseRun) {
    let before = watch.rss_now().unwrap_or(0);
    let mut last = session::run_case(target, case).await;
    for _ in 1..LEAK_RUNS {
        last = session::run_case(target, case).await;
    }
    let after = watch.rss_now().unwrap_or(0);
    let per_run = after.saturating_sub(before) / u64::from(LEAK_RUNS);
    (per_run >= LEAK_MIN_KIB_PER_RUN, per_run, last)
}

fn cancelled(o: &FuzzOptions) -> bool {
    o.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Runs a fuzz campaign to the end (cases, duration, cancellation or a target that went down).
pub async fn run(opts: &FuzzOptions, progress: &mut dyn Progress) -> Result<Summary, FuzzError> {
    run_watched(opts, None, progress).await
}

/// KiB as MiB with one decimal.
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// [`run`] that also watches the target process (`--lab`, `--pid`): after every case its fate
/// (a death is a finding whose signature says how it died, and the lab is restarted when it can
/// be) and its RSS (growth past `watch.rss_growth_limit_kib` is a finding, shrunk to a case that
/// still leaks).
pub async fn run_watched(
    opts: &FuzzOptions,
    mut watch: Option<&mut Watcher>,
    progress: &mut dyn Progress,
) -> Result<Summary, FuzzError> {
    let started = Instant::now();
    let mut adapted = opts.target.clone();
    let stage = opts.stage;
    let baseline = learn_baseline(&adapted, stage).await?;
    adapted.baseline = baseline.class;
    if opts.adaptive_quiet {
        adapted.quiet = (baseline.elapsed * 8).max(MIN_QUIET).min(adapted.timeout);
    }
    if let Some(w) = watch.as_deref_mut() {
        w.sample_rss();
        w.baseline_done();
    }
    let target = &adapted;
    let strategy = Case::strategy_for(stage, target);
    let mut runner = runner_for(opts.seed);
    let mut stats = Stats::default();
    let mut seen: HashSet<Signature> = HashSet::new();
    let mut findings = Vec::new();
    let mut stopped = StopReason::Cases;
    let mut prev: Option<Prev> = None;
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
        let mut fate = match watch.as_deref_mut() {
            Some(w) => fate_after(w, target, run.class).await,
            None => ProcessFate::Running,
        };
        let periodic = opts.liveness_every > 0 && (index + 1) % opts.liveness_every == 0;
        let liveness = if fate.is_dead() {
            // A dead process is a liveness verdict without a handshake.
            stats.liveness_checks += 1;
            *stats.liveness.entry(Liveness::Down).or_default() += 1;
            stats.last_liveness = Some(Liveness::Down);
            Liveness::Down
        } else if (run.class.suspicious() && run.class != target.baseline) || periodic {
            stats.liveness_checks += 1;
            let l =
                check_liveness_watched(target, stage, opts.recovery, watch.as_deref_mut()).await;
            if let Some(w) = watch.as_deref_mut() {
                fate = fate_after_check(w, fate);
            }
            let l = if fate.is_dead() { Liveness::Down } else { l };
            *stats.liveness.entry(l).or_default() += 1;
            stats.last_liveness = Some(l);
            l
        } else {
            Liveness::Unchecked
        };
        let mut rss_note = None;
        if let Some(w) = watch
            .as_deref_mut()
            .filter(|_| fate == ProcessFate::Running)
        {
            let base = w.stats().rss_baseline_kib;
            if let Some(g) = w.sample_rss() {
                fate = g;
                let now = w.stats().rss_last_kib.unwrap_or(0);
                rss_note = Some(format!(
                    "target process RSS grew from {} to {} (limit +{}) by case {index}",
                    mib(base.unwrap_or(0)),
                    mib(now),
                    mib(w.rss_growth_limit_kib.unwrap_or(0)),
                ));
            }
        }
        stats.cases += 1;
        *stats.classes.entry(run.class).or_default() += 1;
        let mut sig = Signature {
            process: fate,
            ..Signature::new(stage, run.class, liveness.for_signature()).against(target.baseline)
        };
        // Deaths are deduplicated by how the process died, whatever the dying connection saw.
        let key = if fate.is_dead() || fate.is_child_death() {
            Signature {
                class: ResponseClass::Refused,
                ..sig
            }
        } else {
            sig
        };
        let mut down = liveness == Liveness::Down;
        if sig.is_finding() && seen.insert(key) {
            progress.shrinking(&sig);
            let shrink_started = Instant::now();
            let needs_liveness = sig.liveness != Liveness::Alive;
            let restartable = watch.as_deref().is_some_and(|w| w.restartable());
            // Which case killed the process: this one, or the one before it when this one only
            // met a dying process. A lab is restarted and asked; a process of the user's cannot
            // be, so a connect that was refused points at the case before.
            let mut culprit_is_prev = false;
            if fate.is_dead() || fate.is_child_death() {
                // A child's death leaves the process serving: ask it again as for a lab.
                if let (Some(w), true) =
                    (watch.as_deref_mut(), restartable || fate.is_child_death())
                {
                    if fate.is_dead() {
                        w.restart().await?;
                    }
                    if !kills(target, &case, fate, opts.recovery, w).await {
                        if let Some(p) = &prev {
                            culprit_is_prev = kills(target, &p.case, fate, opts.recovery, w).await;
                        }
                    }
                } else {
                    culprit_is_prev = run.class == ResponseClass::Refused && prev.is_some();
                }
            }
            let mut index = index;
            let mut case = case.clone();
            let mut run = run.clone();
            if culprit_is_prev {
                if let Some(p) = prev.take() {
                    index = p.index;
                    case = p.case;
                    run = p.run;
                    tree = p.tree;
                    sig.class = run.class;
                }
            }
            let can_shrink =
                opts.shrink && (!down || (fate.is_dead() && restartable) || fate.is_child_death());
            let (minimal, shrink_stats) = match watch.as_deref_mut() {
                _ if !can_shrink => (case.clone(), None),
                Some(w) if fate == ProcessFate::RssGrowth => {
                    let (m, s) =
                        shrink::shrink(&mut *tree, opts.shrink_budget, async |c: &Case| {
                            leaks(target, c, w).await.0
                        })
                        .await;
                    (m, Some(s))
                }
                Some(w) if fate.is_dead() || fate.is_child_death() => {
                    let (m, s) =
                        shrink::shrink(&mut *tree, opts.shrink_budget, async |c: &Case| {
                            kills(target, c, fate, opts.recovery, w).await
                        })
                        .await;
                    (m, Some(s))
                }
                _ => {
                    let (m, s) =
                        shrink::shrink(&mut *tree, opts.shrink_budget, async |c: &Case| {
                            run_signature(target, c, needs_liveness, opts.recovery)
                                .await
                                .0
                                == sig
                        })
                        .await;
                    (m, Some(s))
                }
            };
            // Record the minimal case once more for its capture. A silence is recorded with a
            // long quiet period so that the capture reads as the server timing out, not as the
            // client stopping (decode calls a client FIN within 500 ms of its request a stop).
            let mut rt = target.clone();
            if sig.class == ResponseClass::Silence {
                rt.quiet = rt.quiet.max(REPRO_QUIET);
            }
            let (reproduced, rec, detail) = match watch.as_deref_mut() {
                _ if down && !(fate.is_dead() && restartable) => {
                    let detail = match fate {
                        ProcessFate::Running => run.detail.clone(),
                        f => format!("target process {f} after case {index}: {}", run.detail),
                    };
                    (true, run.clone(), detail)
                }
                Some(w) if fate == ProcessFate::RssGrowth => {
                    let (yes, per_run, rec) = leaks(&rt, &minimal, w).await;
                    let detail = format!(
                        "{}; the minimal case grows it by {per_run} KiB per run ({} runs): {}",
                        rss_note.clone().unwrap_or_default(),
                        LEAK_RUNS,
                        rec.detail
                    );
                    (yes, rec, detail)
                }
                Some(w) if fate.is_dead() || fate.is_child_death() => {
                    // A trial of its own: a child's death is put down to the case whose
                    // connection the child served, however late it comes.
                    let (again, rec) = run_trial(&rt, &minimal, opts.recovery, w).await;
                    let who = match (fate.is_child_death(), w.stats().last_child_death) {
                        (true, Some(d)) => format!("a child of target process {}: {d}", w.pid_of()),
                        _ => format!("target process {fate}"),
                    };
                    let detail =
                        format!("{who} after case {index}; the minimal case: {}", rec.detail);
                    (again.process == fate, rec, detail)
                }
                _ => {
                    let (again, rec) =
                        run_signature(&rt, &minimal, needs_liveness, opts.recovery).await;
                    let detail = rec.detail.clone();
                    (again == sig, rec, detail)
                }
            };
            let mut finding = Finding {
                rdprobe_fuzz_case: 1,
                signature: sig,
                detail,
                target: target.addr,
                seed: opts.seed,
                case_index: index,
                case: minimal,
                original_case: case.clone(),
                sent_hex: hex(&rec.sent),
                reproduced,
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
        // A dead lab comes back; a dead process of the user's does not.
        if let Some(w) = watch.as_deref_mut() {
            if w.restartable() && (fate.is_dead() || w.fate().is_dead()) {
                if w.fate().is_dead() {
                    w.restart().await?;
                }
                down = false;
                stats.last_liveness = Some(Liveness::Alive);
            }
        }
        if watch.is_some() {
            prev = Some(Prev {
                index,
                tree,
                case,
                run,
            });
        }
        stats.elapsed_ms = started.elapsed().as_millis() as u64;
        stats.target_rss_kib = watch.as_deref().and_then(|w| w.stats().rss_last_kib);
        progress.case_done(&stats);
        if down {
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
        process: watch.map(|w| w.stats()),
        baseline: target.baseline,
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
    replay_watched(target, finding, recovery, None).await
}

/// [`replay`] with the target process watched. A finding about the process (a death, RSS growth)
/// replayed without a watcher compares stage, response class and liveness only, and says so.
pub async fn replay_watched(
    target: &Target,
    finding: &Finding,
    recovery: Duration,
    watch: Option<&mut Watcher>,
) -> (Replay, CaseRun) {
    let expected = finding.signature;
    // Liveness and findings are judged against the baseline the finding was made against.
    let with_baseline = Target {
        baseline: expected.baseline,
        ..target.clone()
    };
    let target = &with_baseline;
    let (observed, run, detail) = match (watch, expected.process) {
        (Some(w), ProcessFate::RssGrowth) => {
            let (yes, per_run, run) = leaks(target, &finding.case, w).await;
            let sig = Signature {
                process: if yes {
                    ProcessFate::RssGrowth
                } else {
                    ProcessFate::Running
                },
                ..Signature::new(expected.stage, run.class, Liveness::Alive)
                    .against(expected.baseline)
            };
            let detail = format!(
                "target process RSS grew by {per_run} KiB per run over {LEAK_RUNS} runs: {}",
                run.detail
            );
            (sig, run, detail)
        }
        (Some(w), _) => {
            let (sig, run) = run_signature_watched(target, &finding.case, true, recovery, w).await;
            let detail = match sig.process {
                ProcessFate::Running => run.detail.clone(),
                f => format!("target process {f}: {}", run.detail),
            };
            (sig, run, detail)
        }
        (None, ProcessFate::Running) => {
            let (sig, run) = run_signature(target, &finding.case, true, recovery).await;
            let detail = run.detail.clone();
            (sig, run, detail)
        }
        (None, f) => {
            let (sig, run) = run_signature(target, &finding.case, true, recovery).await;
            let detail = format!(
                "{} (the finding is about the target process ({f}), which is not watched: pass \
                 --pid or --lab to compare that too)",
                run.detail
            );
            (Signature { process: f, ..sig }, run, detail)
        }
    };
    (
        Replay {
            expected,
            observed,
            reproduced: observed.stage == expected.stage
                && observed.class == expected.class
                && observed.liveness == expected.liveness
                && expected.process.reproduced_by(observed.process),
            detail,
            sent_hex: hex(&run.sent),
        },
        run,
    )
}

/// Lowercase hex (the `hex` crate's).
pub fn hex(b: &[u8]) -> String {
    hex::encode(b)
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
                    Case::Security(x) => {
                        let client = SocketAddr::from(([127, 0, 0, 1], 1));
                        let mut b = security::info_packet(&x.mutations, "u", client);
                        b.extend(
                            security::exchange_user_data(&x.mutations, &[7; 72])
                                .unwrap_or_default(),
                        );
                        b
                    }
                    Case::Licensing(x) => {
                        licensing::encode(&x.mutations, &licensing::valid_client_answer()).1
                    }
                    Case::GwHttp(x) => gateway::encode_http(&x.mutations, "gw"),
                    Case::GwTunnel(x) => gateway::encode_tunnel(x),
                    Case::GwChannel(x) => gateway::encode_channel(&x.mutations),
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
        assert_eq!(FuzzStage::parse("licensing"), Some(FuzzStage::Licensing));
        assert_eq!(FuzzStage::parse("capabilities"), None);
    }
}
