//! Client-side robustness, by fuzzing the server side: the lab mutates what it sends at one stage
//! (`[mutate]`, one case per connection), and `rdprobe probe`, `enum`, `replay --as-client` and
//! `fuzz` run against it. Each run must exit without a panic (no exit code 101, no "panicked at"),
//! within its deadline, with a verdict: JSON that parses and has the stages.
//!
//! A fixed seed and a modest case count per stage (SERVER_FUZZ_CASES, default 10; SERVER_FUZZ_SEED,
//! default 1). `scripts/server-fuzz.sh` runs the ignored `long_run` with many more cases and prints
//! cases/s and the classes of outcomes seen.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdprobe::lab::{spawn_lab, LabHandle};
use rdprobe::scenario::{self, Mutate, MutateStage, Protocol, Scenario, TlsVersion};

const BIN: &str = env!("CARGO_BIN_EXE_rdprobe");
/// Per-wait timeout given to every client, and the probe's overall deadline.
const TIMEOUT: &str = "1s";
const DEADLINE: Duration = Duration::from_secs(8);
/// Slack over a deadline for process start and exit (debug build on a loaded 2-core machine).
const SLACK: Duration = Duration::from_secs(4);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/captures")
        .join(name)
}

/// Where and how a stage is fuzzed.
#[derive(Clone, Copy, Debug)]
struct Setup {
    stage: MutateStage,
    /// The lab's base scenario.
    base: &'static str,
    /// Standard RDP security: the probe offers PROTOCOL_RDP only.
    rdp: bool,
    /// TLS 1.2 only (the certificate travels in the clear).
    tls12: bool,
    /// Probes per case-count unit (cheap stages run more).
    weight: u64,
}

impl Setup {
    fn name(&self) -> String {
        format!(
            "{}@{}{}",
            self.stage,
            self.base,
            if self.tls12 { "/tls1.2" } else { "" }
        )
    }

    fn scenario(&self, seed: u64) -> Scenario {
        let mut sc = scenario::builtin(self.base).expect("built-in scenario");
        // Short server-side waits: a mutated PDU that leaves both ends waiting costs ~1 s.
        sc.link.read_timeout_ms = 1_500;
        sc.link.hold_ms = 300;
        if self.tls12 {
            sc.tls.versions = vec![TlsVersion::Tls12];
        }
        if self.rdp {
            sc.security.supported = vec![Protocol::Rdp];
        }
        sc.mutate = Some(Mutate {
            stage: self.stage,
            seed,
            case: None,
        });
        sc
    }

    fn replay_capture(&self) -> PathBuf {
        fixture(if self.rdp {
            "rdp-security-only.pcapng"
        } else {
            "healthy-nla.pcapng"
        })
    }

    /// The fuzzer stage that passes through (or stops at) the mutated stage.
    fn fuzz_stage(&self) -> &'static str {
        match self.stage {
            MutateStage::X224 => "x224",
            MutateStage::Tls => "tls",
            MutateStage::Credssp => "credssp",
            MutateStage::Mcs => "mcs",
            _ => "channels",
        }
    }
}

/// One client process run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    killed: bool,
}

/// Runs `rdprobe args` with the lab user's password in the environment; kills it (by its handle)
/// past `limit`.
fn run(args: &[String], limit: Duration) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env("RDPROBE_PASSWORD", "pass")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rdprobe");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut killed = false;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            killed = true;
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.and_then(|s| s.code()),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
        killed,
    }
}

/// What went wrong with a run, if anything: a panic, a hang past the deadline, no verdict.
fn problem(what: &str, r: &Run, deadline: Duration) -> Option<String> {
    let tail: String = r
        .stderr
        .lines()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    if r.code == Some(101) || r.stderr.contains("panicked at") {
        let at: Vec<&str> = r
            .stderr
            .lines()
            .skip_while(|l| !l.contains("panicked at"))
            .take(2)
            .collect();
        return Some(format!(
            "{what}: panicked (exit {:?}): {}",
            r.code,
            if at.is_empty() { tail } else { at.join(" ") }
        ));
    }
    if r.killed || r.elapsed > deadline + SLACK {
        return Some(format!(
            "{what}: ran {:?}, over its deadline {deadline:?} (killed: {})",
            r.elapsed, r.killed
        ));
    }
    if r.code.is_none() {
        return Some(format!("{what}: ended by a signal:\n{tail}"));
    }
    None
}

/// The verdict class of a `probe --json` run, or why there is none.
fn probe_class(r: &Run) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .map_err(|e| format!("probe --json is not JSON ({e}): {:?}", r.stdout))?;
    let stages = v["stages"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("probe --json without stages: {v}"))?;
    for s in stages {
        if s["stage"].as_str().is_none() || s["verdict"]["status"].as_str().is_none() {
            return Err(format!("a stage without a name or verdict: {s}"));
        }
    }
    let status = v["verdict"]["status"]
        .as_str()
        .ok_or_else(|| format!("probe --json without a verdict: {v}"))?;
    let code = v["exit_code"].as_i64();
    if code != r.code.map(i64::from) {
        return Err(format!(
            "JSON exit_code {code:?} is not the process's {:?}",
            r.code
        ));
    }
    let kind = v["verdict"]["kind"].as_str();
    // A client-side stop says why in a note: keep its head, so the classes tell the reasons apart.
    let why = (kind == Some("stopped"))
        .then(|| {
            v["notes"].as_array().and_then(|n| {
                n.iter()
                    .filter_map(|x| x.as_str())
                    .find(|x| x.contains("stopped"))
                    .map(|x| format!(" ({})", x.chars().take(70).collect::<String>()))
            })
        })
        .flatten()
        .unwrap_or_default();
    Ok(format!(
        "{}/{}{} exit {}{why}",
        v["last_stage"].as_str().unwrap_or("?"),
        status,
        kind.map(|k| format!(":{k}")).unwrap_or_default(),
        code.unwrap_or(-1)
    ))
}

/// Outcome classes per client, the cases the lab mutated, and the problems found.
#[derive(Default)]
struct Tally {
    classes: BTreeMap<String, u64>,
    runs: u64,
    problems: Vec<String>,
}

impl Tally {
    fn add(&mut self, class: String) {
        *self.classes.entry(class).or_default() += 1;
    }
}

fn addr_arg(a: SocketAddr) -> String {
    a.to_string()
}

/// Runs `probes` probes, one enum, one replay --as-client and one short fuzz session against a
/// lab mutating `setup.stage` with `seed`; returns the tally and the number of mutated cases.
fn fuzz_stage(setup: Setup, seed: u64, probes: u64, extras: bool) -> (Tally, u64, u64) {
    let lab: LabHandle =
        spawn_lab("127.0.0.1:0".parse().unwrap(), setup.scenario(seed)).expect("start the lab");
    let target = addr_arg(lab.addr);
    let mut t = Tally::default();
    let mut probe_args = vec![
        "probe".to_owned(),
        target.clone(),
        "--json".into(),
        "--user".into(),
        "user".into(),
        "--timeout".into(),
        TIMEOUT.into(),
        "--deadline".into(),
        format!("{}s", DEADLINE.as_secs()),
    ];
    if setup.rdp {
        probe_args.extend(["--security".into(), "rdp".into()]);
    }
    for i in 0..probes {
        let first = lab.connections_served();
        let r = run(&probe_args, DEADLINE + SLACK * 2);
        t.runs += 1;
        // Connection n plays case n - 1: name the cases of this run and how to replay one.
        let what = format!(
            "{} probe #{i} (cases {first}..{}; replay: rdprobe lab --scenario {}{} --mutate-server {} --seed {seed} --case {first})",
            setup.name(),
            lab.connections_served().saturating_sub(1),
            setup.base,
            if setup.tls12 { " [tls.versions = [\"1.2\"]]" } else { "" },
            setup.stage
        );
        if let Some(p) = problem(&what, &r, DEADLINE) {
            t.problems.push(p);
            continue;
        }
        match probe_class(&r) {
            Ok(c) => t.add(format!("probe {c}")),
            Err(e) => t.problems.push(format!("{what}: {e}")),
        }
    }
    if extras {
        // enum: many connections, each one a case.
        let limit = Duration::from_secs(30);
        let r = run(
            &[
                "enum".into(),
                target.clone(),
                "--json".into(),
                "--no-ciphers".into(),
                "--timeout".into(),
                TIMEOUT.into(),
            ],
            limit + SLACK,
        );
        t.runs += 1;
        let what = format!("{} enum", setup.name());
        match problem(&what, &r, limit) {
            Some(p) => t.problems.push(p),
            None => match serde_json::from_str::<serde_json::Value>(r.stdout.trim()) {
                Ok(_) => t.add(format!("enum exit {}", r.code.unwrap_or(-1))),
                Err(_) if r.stdout.trim().is_empty() && r.code != Some(0) => {
                    // No document: enum says why on stderr and exits non-zero.
                    t.add(format!("enum exit {} (no document)", r.code.unwrap_or(-1)))
                }
                Err(e) => t
                    .problems
                    .push(format!("{what}: --json is not JSON ({e}): {:?}", r.stdout)),
            },
        }
        // replay --as-client of a fixture capture.
        let r = run(
            &[
                "replay".into(),
                setup.replay_capture().display().to_string(),
                "--as-client".into(),
                "--target".into(),
                target.clone(),
                "--user".into(),
                "user".into(),
                "--timeout".into(),
                TIMEOUT.into(),
                "--deadline".into(),
                format!("{}s", DEADLINE.as_secs()),
                "--json".into(),
            ],
            DEADLINE + SLACK * 2,
        );
        t.runs += 1;
        let what = format!("{} replay --as-client", setup.name());
        match problem(&what, &r, DEADLINE) {
            Some(p) => t.problems.push(p),
            None => match serde_json::from_str::<serde_json::Value>(r.stdout.trim()) {
                Ok(_) => t.add(format!("replay exit {}", r.code.unwrap_or(-1))),
                Err(e) => t
                    .problems
                    .push(format!("{what}: --json is not JSON ({e}): {:?}", r.stdout)),
            },
        }
        // A short fuzz session: its baseline and liveness checks meet the mutated server.
        let out = tempfile::tempdir().expect("tempdir");
        let limit = Duration::from_secs(30);
        let r = run(
            &[
                "fuzz".into(),
                target.clone(),
                "--stage".into(),
                setup.fuzz_stage().into(),
                "--cases".into(),
                "4".into(),
                "--seed".into(),
                seed.to_string(),
                "--out".into(),
                out.path().display().to_string(),
                "--timeout".into(),
                TIMEOUT.into(),
                "--recovery".into(),
                "1s".into(),
                "--no-shrink".into(),
                "--max-findings".into(),
                "2".into(),
                "--user".into(),
                "user".into(),
                "--json".into(),
            ],
            limit + SLACK,
        );
        t.runs += 1;
        let what = format!("{} fuzz", setup.name());
        match problem(&what, &r, limit) {
            Some(p) => t.problems.push(p),
            None => t.add(format!("fuzz exit {}", r.code.unwrap_or(-1))),
        }
    }
    let outcomes = lab.outcomes();
    let mutated = outcomes
        .iter()
        .filter(|o| o.result.contains(": mutated;"))
        .count() as u64;
    let served = lab.connections_served();
    lab.stop();
    (t, mutated, served)
}

fn report(setup: Setup, t: &Tally, mutated: u64, served: u64, elapsed: Duration) {
    eprintln!(
        "== {}: {} client runs, {served} connections, {mutated} mutated server PDUs, {:.1} cases/s",
        setup.name(),
        t.runs,
        served as f64 / elapsed.as_secs_f64().max(1e-3)
    );
    for (c, n) in &t.classes {
        eprintln!("   {n:5}  {c}");
    }
}

fn check_stage(setup: Setup) {
    let seed = env_u64("SERVER_FUZZ_SEED", 1);
    let probes = env_u64("SERVER_FUZZ_CASES", 10) * setup.weight;
    let started = Instant::now();
    let (t, mutated, served) = fuzz_stage(setup, seed, probes, true);
    report(setup, &t, mutated, served, started.elapsed());
    assert!(
        t.problems.is_empty(),
        "{} (seed {seed}): {} of {} client runs misbehaved against the mutating lab:\n{}",
        setup.name(),
        t.problems.len(),
        t.runs,
        t.problems.join("\n---\n")
    );
    // The lab really mutated: not every connection may reach the stage, but some must.
    assert!(
        mutated > 0,
        "{}: the lab mutated nothing in {served} connections",
        setup.name()
    );
}

const fn setup(stage: MutateStage, base: &'static str) -> Setup {
    Setup {
        stage,
        base,
        rdp: false,
        tls12: false,
        weight: 1,
    }
}

const SETUPS: &[Setup] = &[
    setup(MutateStage::X224, "healthy-nla"),
    Setup {
        tls12: true,
        ..setup(MutateStage::Tls, "healthy-tls")
    },
    setup(MutateStage::Credssp, "healthy-nla"),
    // The server certificate's RSA key reaches the client's arithmetic here: more cases.
    Setup {
        rdp: true,
        weight: 6,
        ..setup(MutateStage::Mcs, "rdp-security-only")
    },
    setup(MutateStage::Mcs, "healthy-tls"),
    setup(MutateStage::Channels, "healthy-tls"),
    setup(MutateStage::Licensing, "healthy-tls"),
    Setup {
        rdp: true,
        ..setup(MutateStage::Licensing, "rdp-security-only")
    },
    setup(MutateStage::Capabilities, "healthy-tls"),
    setup(MutateStage::Error, "healthy-tls"),
    // TLS 1.3: everything after the ServerHello is encrypted; records and their framing are hit.
    setup(MutateStage::Tls, "healthy-nla"),
];

#[test]
fn x224_confirm() {
    check_stage(SETUPS[0]);
}

#[test]
fn tls_server_flight() {
    check_stage(SETUPS[1]);
}

#[test]
fn tls_server_flight_tls13() {
    check_stage(SETUPS[10]);
}

#[test]
fn credssp_challenge() {
    check_stage(SETUPS[2]);
}

#[test]
fn mcs_connect_response_standard_security() {
    check_stage(SETUPS[3]);
}

#[test]
fn mcs_connect_response_tls() {
    check_stage(SETUPS[4]);
}

#[test]
fn channels_confirms() {
    check_stage(SETUPS[5]);
}

#[test]
fn licensing_tls() {
    check_stage(SETUPS[6]);
}

#[test]
fn licensing_standard_security() {
    check_stage(SETUPS[7]);
}

#[test]
fn capabilities_demand_active() {
    check_stage(SETUPS[8]);
}

#[test]
fn error_pdus() {
    check_stage(SETUPS[9]);
}

/// The long run (`scripts/server-fuzz.sh`): SERVER_FUZZ_CASES probes per stage (default 500),
/// SERVER_FUZZ_SEED, SERVER_FUZZ_STAGES (comma-separated setup names' stages, default all).
/// Prints cases/s and the outcome classes per stage; fails on any problem.
#[test]
#[ignore = "long run: scripts/server-fuzz.sh"]
fn long_run() {
    let seed = env_u64("SERVER_FUZZ_SEED", 1);
    let probes = env_u64("SERVER_FUZZ_CASES", 500);
    let only: Option<Vec<String>> = std::env::var("SERVER_FUZZ_STAGES")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect());
    let mut problems = Vec::new();
    let (mut all_runs, mut all_mutated) = (0u64, 0u64);
    let started = Instant::now();
    for s in SETUPS {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|x| x == s.stage.as_str()))
        {
            continue;
        }
        let t0 = Instant::now();
        let (t, mutated, served) = fuzz_stage(*s, seed, probes * s.weight, true);
        report(*s, &t, mutated, served, t0.elapsed());
        all_runs += t.runs;
        all_mutated += mutated;
        problems.extend(t.problems);
    }
    eprintln!(
        "== total: {all_runs} client runs, {all_mutated} mutated server PDUs in {:.0} s ({:.1} runs/s), {} problems",
        started.elapsed().as_secs_f64(),
        all_runs as f64 / started.elapsed().as_secs_f64().max(1e-3),
        problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n---\n"));
}

/// `rdprobe lab --mutate-server` names its stages; an unknown one is a usage error (exit 2)
/// before anything listens, and a mutating lab replays the same case for the same seed.
#[test]
fn lab_cli_and_replayable_cases() {
    let r = run(
        &[
            "lab".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--mutate-server".into(),
            "nope".into(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("x224, tls, credssp"), "{}", r.stderr);
    // The same seed and case give the same bytes on the wire: two labs, one probe each.
    let bytes = |seed: u64| {
        let mut setup = SETUPS[0].scenario(seed);
        setup.mutate = Some(Mutate {
            stage: MutateStage::X224,
            seed,
            case: Some(5),
        });
        let lab = spawn_lab("127.0.0.1:0".parse().unwrap(), setup).expect("lab");
        let mut s = std::net::TcpStream::connect(lab.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        use std::io::Write;
        // X.224 Connection Request offering TLS and NLA.
        s.write_all(&[3, 0, 0, 19, 14, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 3, 0, 0, 0])
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() >= 19 {
                break;
            }
        }
        lab.stop();
        got
    };
    let a = bytes(11);
    assert!(!a.is_empty());
    assert_eq!(a, bytes(11), "same seed and case, same confirm");
}
