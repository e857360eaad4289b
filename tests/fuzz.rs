//! `rdprobe fuzz` end to end: planted bugs in the embedded lab are found within a bounded number of
//! cases from a fixed seed, shrunk to their minimal trigger, written as findings whose repro
//! capture `rdprobe analyze` reads and whose case file `rdprobe fuzz --replay` reproduces; bounded
//! runs against real xrdp and freerdp-shadow classify every case with no false "down".
//!
//! All traffic goes to 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdprobe::fuzz::{
    self,
    credssp::CredsspMutation,
    mcs::McsMutation,
    watch::LabCommand,
    x224::{CookieKind, X224Mutation},
    Case, FuzzOptions, FuzzStage, Liveness, ProcessFate, ResponseClass, Signature, Target, Watcher,
};
use rdprobe::lab::planted::{spawn_planted_lab, Bug};
use rdprobe::probe::Credentials;

fn lo0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn scenario(name: &str) -> rdprobe::scenario::Scenario {
    rdprobe::scenario::builtin(name).expect("built-in scenario")
}

/// Fast settings for the in-process lab.
fn lab_target(addr: SocketAddr) -> Target {
    let mut t = Target::new(addr);
    t.timeout = Duration::from_millis(400);
    t
}

fn opts(target: Target, stage: FuzzStage, cases: u64, seed: u64, out: &Path) -> FuzzOptions {
    let mut o = FuzzOptions::new(target, stage);
    o.cases = cases;
    o.seed = seed;
    o.out = Some(out.to_owned());
    o.recovery = Duration::from_secs(10);
    o
}

fn rdprobe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args(args)
        .output()
        .expect("run rdprobe")
}

/// Runs rdprobe and reads its JSON output (a failure shows stdout and stderr).
fn rdprobe_json(args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let o = rdprobe(args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "rdprobe {} json ({e}): {} {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o, v)
}

/// `rdprobe analyze FILE --json`: the first connection's report.
fn analyze(pcap: &Path) -> serde_json::Value {
    let out = rdprobe(&["analyze", pcap.to_str().expect("path"), "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_else(|| {
        panic!(
            "analyze printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).expect("analyze json")
}

/// The finding with `sig`, its files and its replay (library and CLI).
fn check_finding(summary: &fuzz::Summary, sig: Signature, bound: u64) -> fuzz::Finding {
    let f = summary
        .findings
        .iter()
        .find(|f| f.signature == sig)
        .unwrap_or_else(|| {
            panic!(
                "no {sig} finding in {} cases; findings: {:?}; classes {:?}",
                summary.stats.cases,
                summary
                    .findings
                    .iter()
                    .map(|f| f.signature.to_string())
                    .collect::<Vec<_>>(),
                summary.stats.classes
            )
        })
        .clone();
    assert!(
        f.case_index < bound,
        "{sig} found only at case {}",
        f.case_index
    );
    assert!(
        f.reproduced,
        "the minimal case did not reproduce when recorded"
    );
    let dir = f.dir.clone().expect("written");
    for file in ["case.json", "repro.pcapng", "README.txt"] {
        assert!(dir.join(file).is_file(), "{} missing", file);
    }
    let readme = std::fs::read_to_string(dir.join("README.txt")).expect("readme");
    assert!(
        readme.contains(&format!(
            "rdprobe fuzz --replay {}/case.json --target {}",
            dir.display(),
            f.target
        )),
        "{readme}"
    );
    // The case file round-trips.
    let back = fuzz::read_case_file(&dir.join("case.json")).expect("case file");
    assert_eq!(back.case, f.case);
    assert_eq!(back.signature, sig);
    f
}

/// `rdprobe fuzz --replay` through the CLI: exit 0 and the same signature.
fn cli_replay(f: &fuzz::Finding, extra_env: &[(&str, &str)]) {
    let dir = f.dir.clone().expect("dir");
    let case = dir.join("case.json");
    let target = f.target.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args([
            "fuzz",
            "--replay",
            case.to_str().expect("path"),
            "--target",
            &target,
            "--json",
        ])
        .envs(extra_env.iter().copied())
        .output()
        .expect("run rdprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "replay output ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["reproduced"], true, "{v}");
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        v["observed"]["class"],
        serde_json::json!(f.signature.class),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_x224_long_cookie_hang_is_found_shrunk_to_201_and_reproduced() {
    let lab =
        spawn_planted_lab(lo0(), scenario("healthy-nla"), &[Bug::X224LongCookieHang]).expect("lab");
    let out = tempfile::tempdir().expect("tempdir");
    let o = opts(lab_target(lab.addr()), FuzzStage::X224, 400, 7, out.path());
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    let sig = Signature::new(FuzzStage::X224, ResponseClass::Silence, Liveness::Alive);
    let f = check_finding(&summary, sig, 400);
    eprintln!(
        "x224 cookie: found at case {}, shrink {:?}",
        f.case_index, f.shrink
    );
    // Minimal: the cookie mutation alone, exactly one byte over the limit.
    let Case::X224(c) = &f.case else {
        panic!("stage")
    };
    assert_eq!(c.mutations.len(), 1, "{:?}", c.mutations);
    assert!(
        matches!(c.mutations[0], X224Mutation::Cookie { len: 201, .. }),
        "{:?}",
        c.mutations
    );
    assert_eq!(fuzz::x224::cookie_len(&hex_decode(&f.sent_hex)), Some(201));
    // Every other class the lab gave is a normal answer: no other finding.
    assert_eq!(summary.findings.len(), 1, "{:?}", summary.findings);
    assert_eq!(summary.stats.liveness.get(&Liveness::Down), None);
    // The capture shows the stage where it hung.
    let report = analyze(&f.dir.clone().expect("dir").join("repro.pcapng"));
    assert_eq!(report["last_stage"], "x224", "{report}");
    assert_eq!(report["verdict"]["kind"], "timed_out", "{report}");
    // Replay: library and CLI.
    let (r, _) = fuzz::replay(&lab_target(lab.addr()), &f, Duration::from_secs(5)).await;
    assert!(r.reproduced, "{r:?}");
    cli_replay(&f, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_credssp_version_zero_abort_is_found_shrunk_and_reproduced() {
    let lab = spawn_planted_lab(
        lo0(),
        scenario("healthy-nla"),
        &[Bug::CredsspVersionZeroAbort],
    )
    .expect("lab");
    let out = tempfile::tempdir().expect("tempdir");
    let o = opts(
        lab_target(lab.addr()),
        FuzzStage::Credssp,
        1500,
        7,
        out.path(),
    );
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    let sig = Signature::new(FuzzStage::Credssp, ResponseClass::Reset, Liveness::Alive);
    let f = check_finding(&summary, sig, 300);
    eprintln!(
        "credssp version 0: found at case {}, shrink {:?}",
        f.case_index, f.shrink
    );
    let Case::Credssp(c) = &f.case else {
        panic!("stage")
    };
    assert_eq!(
        c.mutations,
        vec![CredsspMutation::Version(0)],
        "not minimal"
    );
    let report = analyze(&f.dir.clone().expect("dir").join("repro.pcapng"));
    assert_eq!(report["last_stage"], "credssp", "{report}");
    assert_eq!(report["verdict"]["kind"], "reset", "{report}");
    cli_replay(&f, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_mcs_channel_count_wedge_is_found_as_hung_shrunk_to_31() {
    let lab = spawn_planted_lab(lo0(), scenario("healthy-tls"), &[Bug::McsManyChannelsWedge])
        .expect("lab");
    let out = tempfile::tempdir().expect("tempdir");
    // Every later case with more than 30 channels wedges the lab again: stop at the finding.
    let mut o = opts(lab_target(lab.addr()), FuzzStage::Mcs, 100, 7, out.path());
    o.max_findings = Some(1);
    let started = Instant::now();
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    let sig = Signature::new(FuzzStage::Mcs, ResponseClass::Silence, Liveness::Hung);
    let f = check_finding(&summary, sig, 100);
    let Case::Mcs(c) = &f.case else {
        panic!("stage")
    };
    assert_eq!(c.mutations.len(), 1, "{:?}", c.mutations);
    assert!(
        matches!(
            c.mutations[0],
            McsMutation::NetChannels(31) | McsMutation::NetCountField(31)
        ),
        "{:?}",
        c.mutations
    );
    assert_eq!(
        fuzz::mcs::net_channel_count(&hex_decode(&f.sent_hex)),
        Some(31)
    );
    // The lab recovered: the run went on and nothing was declared down.
    assert_eq!(summary.stopped, fuzz::StopReason::MaxFindings);
    assert_eq!(summary.stats.liveness.get(&Liveness::Down), None);
    assert_eq!(
        fuzz::check_liveness(
            &lab_target(lab.addr()),
            FuzzStage::Mcs,
            Duration::from_secs(10)
        )
        .await,
        Liveness::Alive
    );
    let report = analyze(&f.dir.clone().expect("dir").join("repro.pcapng"));
    assert_eq!(report["last_stage"], "mcs", "{report}");
    cli_replay(&f, &[]);
    eprintln!(
        "mcs wedge: {:?} for the whole test; found at case {}, shrink {:?}, stats {:?}",
        started.elapsed(),
        f.case_index,
        f.shrink,
        summary.stats
    );
}

/// healthy-tls, except that the lab closes the connection when the client's MCS Connect Initial
/// arrives (as a server in development, or one that refuses the client's settings by policy).
fn closes_after_connect_initial() -> rdprobe::scenario::Scenario {
    use rdprobe::scenario::{Fault, FaultAction, FaultPoint};
    let mut s = scenario("healthy-tls");
    s.name = "close-after-connect-initial".into();
    s.faults.push(Fault::new(
        FaultPoint::McsConnectInitial,
        FaultAction::Close,
    ));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_closes_after_connect_initial_is_fuzzed_against_that_baseline() {
    // Without a bug: the close is learned as the baseline, and the close every case meets is no
    // finding.
    let lab = rdprobe::lab::spawn_lab(lo0(), closes_after_connect_initial()).expect("lab");
    let out = tempfile::tempdir().expect("tempdir");
    let o = opts(lab_target(lab.addr), FuzzStage::Mcs, 40, 7, out.path());
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    assert_eq!(summary.baseline, ResponseClass::Close);
    assert_eq!(summary.stats.cases, 40);
    assert!(
        summary.findings.is_empty(),
        "findings against a healthy closing lab: {:?}; classes {:?}",
        summary
            .findings
            .iter()
            .map(|f| f.signature.to_string())
            .collect::<Vec<_>>(),
        summary.stats.classes
    );
    assert!(
        summary
            .stats
            .classes
            .get(&ResponseClass::Close)
            .copied()
            .unwrap_or(0)
            > 0
    );
    lab.stop();

    // With the planted wedge (more than 30 channels): found as a hang, shrunk to 31 channels.
    let lab = spawn_planted_lab(
        lo0(),
        closes_after_connect_initial(),
        &[Bug::McsManyChannelsWedge],
    )
    .expect("lab");
    let out = tempfile::tempdir().expect("tempdir");
    let mut o = opts(lab_target(lab.addr()), FuzzStage::Mcs, 100, 7, out.path());
    o.max_findings = Some(1);
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    assert_eq!(summary.baseline, ResponseClass::Close);
    let sig = Signature::new(FuzzStage::Mcs, ResponseClass::Silence, Liveness::Hung)
        .against(ResponseClass::Close);
    let f = check_finding(&summary, sig, 100);
    let Case::Mcs(c) = &f.case else {
        panic!("stage")
    };
    assert!(
        matches!(
            c.mutations.as_slice(),
            [McsMutation::NetChannels(31) | McsMutation::NetCountField(31)]
        ),
        "{:?}",
        c.mutations
    );
    // The baseline travels with the finding (its replay judges against it).
    let json =
        std::fs::read_to_string(f.dir.clone().expect("dir").join("case.json")).expect("case.json");
    assert!(json.contains("\"baseline\": \"close\""), "{json}");
}

/// A port nobody serves is still refused before the first case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_refuses_the_connection_cannot_be_fuzzed() {
    let listener = std::net::TcpListener::bind(lo0()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = tempfile::tempdir().expect("tempdir");
    let o = opts(lab_target(addr), FuzzStage::Mcs, 10, 7, out.path());
    let err = fuzz::run(&o, &mut fuzz::Quiet).await.expect_err("refused");
    assert!(
        matches!(
            err,
            fuzz::FuzzError::Baseline {
                class: ResponseClass::Refused,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn non_loopback_targets_are_refused_without_allow_remote() {
    let out = rdprobe(&["fuzz", "192.0.2.1:3389", "--cases", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a loopback address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Runs `cases` per stage against a real server and checks the run is sound: every case
/// classified, liveness checked, never "down", the target still serving afterwards.
async fn real_server_run(target: Target, stage: FuzzStage, cases: u64, seed: u64) -> fuzz::Summary {
    let out = tempfile::tempdir().expect("tempdir");
    let mut o = opts(target.clone(), stage, cases, seed, out.path());
    o.liveness_every = 20;
    let summary = fuzz::run(&o, &mut fuzz::Quiet)
        .await
        .unwrap_or_else(|e| panic!("{stage}: {e}"));
    let classified: u64 = summary.stats.classes.values().sum();
    assert_eq!(summary.stats.cases, cases, "{stage}: {:?}", summary.stopped);
    assert_eq!(classified, cases, "{stage}");
    assert!(
        summary.stats.liveness_checks >= cases / 20,
        "{stage}: {:?}",
        summary.stats
    );
    assert_eq!(
        summary.stats.liveness.get(&Liveness::Down),
        None,
        "{stage}: {:?}",
        summary.findings
    );
    assert_eq!(
        fuzz::check_liveness(&target, stage, Duration::from_secs(10)).await,
        Liveness::Alive,
        "{stage}: the target stopped serving after the run"
    );
    summary
}

#[test]
fn bounded_run_against_xrdp_classifies_every_case() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp (scripts/install-peers.sh)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for stage in [
            FuzzStage::X224,
            FuzzStage::Tls,
            FuzzStage::Mcs,
            FuzzStage::Channels,
        ] {
            let mut t = Target::new(xrdp.addr());
            t.timeout = Duration::from_secs(2);
            let s = real_server_run(t, stage, 200, 11).await;
            eprintln!(
                "xrdp {stage}: {:.0} cases/s {:?} findings {:?}",
                s.cases_per_sec,
                s.stats.classes,
                s.findings
                    .iter()
                    .map(|f| format!("{} {}", f.signature, f.case.summary()))
                    .collect::<Vec<_>>()
            );
        }
    });
}

#[test]
fn bounded_run_against_freerdp_shadow_classifies_every_case() {
    let shadow = FreerdpShadow::start("nla", &[("alice", "pw")])
        .expect("start freerdp-shadow-cli (scripts/install-peers.sh)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for stage in [
            FuzzStage::X224,
            FuzzStage::Tls,
            FuzzStage::Credssp,
            FuzzStage::Mcs,
        ] {
            let mut t = Target::new(shadow.addr());
            t.timeout = Duration::from_secs(3);
            t.credentials = Some(Credentials {
                user: "alice".into(),
                domain: None,
                password: "pw".into(),
            });
            let s = real_server_run(t, stage, 200, 11).await;
            eprintln!(
                "freerdp-shadow {stage}: {:.0} cases/s {:?} findings {:?}",
                s.cases_per_sec,
                s.stats.classes,
                s.findings
                    .iter()
                    .map(|f| format!("{} {}", f.signature, f.case.summary()))
                    .collect::<Vec<_>>()
            );
        }
    });
}

/// The seed corpus of the `decode_trace` cargo-fuzz target: lab conversations the probe records,
/// in `rdprobe::fuzz::trace_bytes` form. Checks the target's properties on each (so the target's
/// code runs under plain `cargo test`), that the byte form keeps what the decoder needs, and the
/// committed corpus; `RDPROBE_WRITE_CORPUS=1` rewrites fuzz/corpus/decode_trace/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_trace_seed_corpus() {
    use rdprobe::fuzz::trace_bytes::{check_decode, trace_from_bytes, trace_to_bytes};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_trace");
    let write = std::env::var("RDPROBE_WRITE_CORPUS").is_ok_and(|v| v == "1");
    for name in [
        "healthy-nla",
        "healthy-tls",
        "nla-required",
        "tls-reset-at-client-hello",
        "expired-certificate",
        "wrong-password",
        "denied-after-mcs",
        "rdp-security-only",
    ] {
        let s = scenario(name);
        let creds = rdprobe::lab::demo_credentials(&s);
        let lab = rdprobe::lab::spawn_lab(lo0(), s).expect("lab");
        let mut o = rdprobe::probe::ProbeOptions::new("127.0.0.1", lab.addr.port());
        o.stage_timeout = Duration::from_secs(2);
        o.deadline = Duration::from_secs(10);
        o.credentials = creds.map(|(user, password)| Credentials {
            user,
            domain: None,
            password,
        });
        let r = rdprobe::probe::probe(&o).await;
        let bytes = trace_to_bytes(&r.trace);
        check_decode(&bytes);
        let back = rdprobe::decode::decode(&trace_from_bytes(&bytes)).report;
        assert_eq!(back.last_stage, r.report.last_stage, "{name}");
        assert_eq!(
            back.verdict.failure().map(|k| k.name()),
            r.report.verdict.failure().map(|k| k.name()),
            "{name}"
        );
        if write {
            std::fs::create_dir_all(&corpus).expect("corpus dir");
            std::fs::write(corpus.join(format!("{name}.bin")), &bytes).expect("write seed");
        }
    }
    let mut n = 0;
    for e in std::fs::read_dir(&corpus).expect("fuzz/corpus/decode_trace") {
        check_decode(&std::fs::read(e.expect("entry").path()).expect("seed"));
        n += 1;
    }
    assert!(n >= 8, "{n} seeds");
}

fn rdprobe_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rdprobe"))
}

/// A lab process of its own (`rdprobe lab --plant BUG`) on a free loopback port, killed by PID on
/// drop; returns once it listens.
fn lab_process(scenario: &str, bug: impl Into<Option<&'static str>>) -> (ProcessGuard, SocketAddr) {
    lab_process_with(scenario, bug, &[])
}

/// [`lab_process`] with more `rdprobe lab` arguments (e.g. `--fork-per-connection`).
fn lab_process_with(
    scenario: &str,
    bug: impl Into<Option<&'static str>>,
    extra: &[&str],
) -> (ProcessGuard, SocketAddr) {
    let cmd = LabCommand::on_free_port(rdprobe_exe(), scenario, &[]).expect("port");
    let mut c = Command::new(rdprobe_exe());
    c.args([
        "lab",
        "--listen",
        &cmd.addr.to_string(),
        "--scenario",
        scenario,
    ]);
    if let Some(b) = bug.into() {
        c.args(["--plant", b]);
    }
    c.args(extra);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let guard = ProcessGuard::spawn("rdprobe lab", &mut c).expect("spawn rdprobe lab");
    let started = Instant::now();
    while std::net::TcpStream::connect(cmd.addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "lab process did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (guard, cmd.addr)
}

/// A forking server (`rdprobe lab --fork-per-connection`: a process per connection, as xrdp)
/// whose connection process aborts on a Connect Initial with more than 30 channels, fuzzed with
/// `--pid` of the listener: the child's SIGABRT is a finding with the case that killed it
/// (shrunk to one mutation), while the listener lives on and serves (no death, no restart).
///
/// Each shrink trial and the recording wait for the children of earlier cases to end and count only
/// the deaths of their own children, so a death seen late (two loaded cores) is not put down to the
/// next trial's case.
#[test]
fn pid_watch_sees_a_forked_child_die_while_the_listener_lives() {
    let (mut lab, addr) = lab_process_with(
        "healthy-tls",
        "mcs-many-channels-abort",
        &["--fork-per-connection"],
    );
    let out = tempfile::tempdir().expect("tempdir");
    let (o, v) = rdprobe_json(&[
        "fuzz",
        &addr.to_string(),
        "--pid",
        &lab.pid().to_string(),
        "--stage",
        "mcs",
        "--cases",
        "150",
        "--seed",
        "7",
        "--timeout",
        "2s",
        "--max-findings",
        "3",
        "--out",
        out.path().to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(10), "{v}");
    // On a loaded machine a slow handshake can be a finding of its own first: look for the death.
    let f = v["findings"]
        .as_array()
        .and_then(|fs| {
            fs.iter()
                .find(|f| f["signature"]["process"]["kind"] == "child_signaled")
        })
        .unwrap_or_else(|| panic!("no child death among the findings: {v}"));
    assert_eq!(
        f["signature"]["process"],
        serde_json::json!({"kind": "child_signaled", "signal": 6}),
        "{f}"
    );
    assert_eq!(f["reproduced"], true, "{f}");
    assert!(
        f["detail"]
            .as_str()
            .is_some_and(|d| d.contains("a child of target process") && d.contains("SIGABRT")),
        "{f}"
    );
    // The minimal case still trips the bug (more than 30 channels) and is smaller than the case
    // that first killed the child.
    let sent = hex_decode(f["sent_hex"].as_str().expect("sent_hex"));
    let n = fuzz::mcs::net_channel_count(&sent).expect("channel count");
    assert!((31..64).contains(&n), "{n} channels: {f}");
    assert_eq!(
        f["case"]["mutations"].as_array().map(Vec::len),
        Some(1),
        "{f}"
    );
    let p = &v["process"];
    assert_eq!(p["descendants"], "proc_connector", "{p}");
    assert_eq!(p["deaths"], 0, "the listener died: {p}");
    assert!(p["children_seen"].as_u64().is_some_and(|n| n >= 10), "{p}");
    assert!(p["child_deaths"].as_u64().is_some_and(|n| n >= 1), "{p}");
    // The listener still serves a valid handshake after its child died.
    assert!(lab.try_wait().is_none(), "the listener exited");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    assert_eq!(
        rt.block_on(fuzz::check_liveness(
            &Target::new(addr),
            FuzzStage::Mcs,
            Duration::from_secs(5)
        )),
        Liveness::Alive
    );
}

/// Real xrdp forking a child per connection (`fork=true`), fuzzed at x224 with `--pid` of the
/// listener: the children serving the cases are seen and none of their ends is taken for a crash
/// (their normal exit codes are learned from the valid handshakes).
#[test]
fn pid_watch_sees_the_children_real_xrdp_forks() {
    let xrdp = Xrdp::start(XrdpOpts {
        fork: true,
        ..XrdpOpts::negotiate()
    })
    .expect("start xrdp (scripts/install-peers.sh)");
    let out = tempfile::tempdir().expect("tempdir");
    let (_, v) = rdprobe_json(&[
        "fuzz",
        &xrdp.target(),
        "--pid",
        &xrdp.pid().to_string(),
        "--stage",
        "x224",
        "--cases",
        "40",
        "--seed",
        "7",
        "--timeout",
        "1s",
        "--out",
        out.path().to_str().expect("path"),
        "--json",
    ]);
    let p = &v["process"];
    eprintln!("xrdp fork: {p}");
    assert_eq!(p["descendants"], "proc_connector", "{p}");
    // One child per case at least (plus the baseline's and the liveness checks').
    assert!(p["children_seen"].as_u64().is_some_and(|n| n >= 40), "{p}");
    assert_eq!(p["deaths"], 0, "{p}");
    assert_eq!(p["child_deaths"], 0, "{v}");
    assert_eq!(v["stats"]["cases"], 40, "{v}");
}

/// The routing-token abort minimal case: a routing token of exactly 17 bytes.
fn assert_minimal_routing_token(case: &Case) {
    let Case::X224(c) = case else { panic!("stage") };
    assert_eq!(c.mutations.len(), 2, "{:?}", c.mutations);
    assert!(
        c.mutations
            .iter()
            .any(|m| matches!(m, X224Mutation::Cookie { len: 17, .. })),
        "{:?}",
        c.mutations
    );
    assert!(c
        .mutations
        .contains(&X224Mutation::CookieKind(CookieKind::RoutingToken)));
}

/// `--lab` as the library runs it: the lab is a child process; the planted abort kills it with
/// SIGABRT; the finding's signature says so, the fuzzer restarts the lab, shrinks the case against
/// the restarted one and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_child_abort_is_found_with_its_signal_shrunk_and_the_lab_restarted() {
    let cmd = LabCommand::on_free_port(
        rdprobe_exe(),
        "healthy-tls",
        &["x224-routing-token-abort".to_owned()],
    )
    .expect("port");
    let addr = cmd.addr;
    let mut watch = Watcher::spawn_lab(cmd).await.expect("lab process");
    let first_pid = watch.pid_of();
    let out = tempfile::tempdir().expect("tempdir");
    let o = opts(lab_target(addr), FuzzStage::X224, 400, 7, out.path());
    let summary = fuzz::run_watched(&o, Some(&mut watch), &mut fuzz::Quiet)
        .await
        .expect("run");
    let aborted = ProcessFate::Signaled { signal: 6 };
    let f = summary
        .findings
        .iter()
        .find(|f| f.signature.process == aborted)
        .unwrap_or_else(|| panic!("no abort finding: {:?}", summary.findings));
    eprintln!(
        "lab child abort: found at case {}, shrink {:?}, process {:?}",
        f.case_index, f.shrink, summary.process
    );
    assert!(f.case_index < 400);
    assert_eq!(f.signature.liveness, Liveness::Down);
    assert!(f.reproduced, "{f:?}");
    assert!(
        f.detail.starts_with(&format!(
            "target process exited with signal 6 (SIGABRT) after case {}",
            f.case_index
        )),
        "{}",
        f.detail
    );
    assert_minimal_routing_token(&f.case);
    assert_eq!(
        rdprobe::lab::planted::routing_token_len(&hex_decode(&f.sent_hex)),
        Some(17)
    );
    // The run went on to the end against restarted labs, and only one finding has this signature.
    assert_eq!(summary.stopped, fuzz::StopReason::Cases);
    assert_eq!(summary.stats.cases, 400);
    let p = summary.process.clone().expect("process stats");
    assert!(p.child && p.deaths >= 2 && p.restarts == p.deaths, "{p:?}");
    assert_ne!(watch.pid_of(), first_pid);
    assert_eq!(
        summary
            .findings
            .iter()
            .filter(|f| f.signature.process == aborted)
            .count(),
        1
    );
    // The written case file keeps the signature with the signal.
    let back = fuzz::read_case_file(&f.dir.clone().expect("dir").join("case.json")).expect("case");
    assert_eq!(back.signature, f.signature);
    let readme =
        std::fs::read_to_string(f.dir.clone().expect("dir").join("README.txt")).expect("readme");
    assert!(
        readme.contains("the watched target process: exited with signal 6 (SIGABRT)"),
        "{readme}"
    );
    // The restarted lab is alive and still has the bug.
    assert_eq!(watch.fate(), ProcessFate::Running);
    let (r, _) = fuzz::replay_watched(
        &lab_target(addr),
        f,
        Duration::from_secs(5),
        Some(&mut watch),
    )
    .await;
    assert!(r.reproduced, "{r:?}");
    assert_eq!(r.observed.process, aborted);
}

/// `--pid`: a lab process the test started (not the fuzzer's child) with a planted leak; the
/// fuzzer samples its RSS, flags the growth past the limit as a finding and shrinks it to a case
/// that still leaks (the CORRELATION_INFO_PRESENT flag alone). Through the CLI, with --json.
#[test]
fn pid_watch_flags_rss_growth_of_a_leaking_lab_and_shrinks_to_the_leaking_flag() {
    let (lab, addr) = lab_process("healthy-tls", "x224-correlation-leak");
    let out = tempfile::tempdir().expect("tempdir");
    let pid = lab.pid().to_string();
    let target = addr.to_string();
    let (o, v) = rdprobe_json(&[
        "fuzz",
        &target,
        "--pid",
        &pid,
        "--rss-growth",
        "32MiB",
        "--stage",
        "x224",
        "--cases",
        "600",
        "--seed",
        "7",
        "--timeout",
        "400ms",
        "--out",
        out.path().to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(10), "{v}");
    let p = &v["process"];
    let base = p["rss_baseline_kib"].as_u64().expect("baseline");
    let peak = p["rss_peak_kib"].as_u64().expect("peak");
    eprintln!(
        "pid leak: rss {base} KiB -> peak {peak} KiB; findings {}",
        v["findings"]
    );
    assert!(peak > base + 32 * 1024, "{p}");
    assert_eq!(p["child"], false);
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{v}");
    let f = &findings[0];
    assert_eq!(f["signature"]["process"]["kind"], "rss_growth", "{f}");
    assert_eq!(f["signature"]["liveness"], "alive", "{f}");
    assert_eq!(f["reproduced"], true, "{f}");
    assert!(
        f["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("target process RSS grew from")),
        "{f}"
    );
    let muts = f["case"]["mutations"].as_array().expect("mutations");
    assert_eq!(muts.len(), 1, "{f}");
    assert_eq!(muts[0]["field"], "neg_flags", "{f}");
    assert_ne!(muts[0]["value"].as_u64().expect("flags") & 0x08, 0, "{f}");
    // The same run against a lab without the leak: RSS stays within the limit, no finding.
    let (healthy, haddr) = lab_process("healthy-tls", None);
    let hpid = healthy.pid().to_string();
    let htarget = haddr.to_string();
    let o = rdprobe(&[
        "fuzz",
        &htarget,
        "--pid",
        &hpid,
        "--rss-growth",
        "32MiB",
        "--stage",
        "x224",
        "--cases",
        "600",
        "--seed",
        "7",
        "--timeout",
        "400ms",
        "--out",
        out.path().join("healthy").to_str().expect("path"),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(o.status.code(), Some(0), "{v}");
    let p = &v["process"];
    let grew =
        p["rss_peak_kib"].as_u64().expect("peak") - p["rss_baseline_kib"].as_u64().expect("base");
    eprintln!("pid healthy: rss grew {grew} KiB over 600 cases");
    assert!(grew < 32 * 1024, "{p}");
}

/// `--pid` on a process that dies: not our child, so the finding says it vanished, and the run
/// stops (nothing restarts a server the user started). Through the CLI.
#[test]
fn pid_watch_reports_a_vanished_target_and_stops() {
    let (lab, addr) = lab_process("healthy-tls", "x224-routing-token-abort");
    let out = tempfile::tempdir().expect("tempdir");
    let pid = lab.pid().to_string();
    let target = addr.to_string();
    let (o, v) = rdprobe_json(&[
        "fuzz",
        &target,
        "--pid",
        &pid,
        "--stage",
        "x224",
        "--cases",
        "400",
        "--seed",
        "7",
        "--timeout",
        "400ms",
        "--recovery",
        "1s",
        "--out",
        out.path().to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(10), "{v}");
    assert_eq!(v["stopped"], "target_down", "{v}");
    let f = &v["findings"][0];
    assert_eq!(f["signature"]["process"]["kind"], "vanished", "{f}");
    assert_eq!(f["signature"]["liveness"], "down", "{f}");
    assert!(
        f["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("target process vanished after case")),
        "{f}"
    );
    assert_eq!(v["process"]["deaths"], 1, "{v}");
}

/// `rdprobe fuzz --lab SCENARIO`: the CLI starts, watches and restarts its own lab process.
#[test]
fn cli_lab_flag_fuzzes_a_watched_lab_child() {
    let out = tempfile::tempdir().expect("tempdir");
    let (o, v) = rdprobe_json(&[
        "fuzz",
        "--lab",
        "healthy-tls",
        "--plant",
        "x224-routing-token-abort",
        "--stage",
        "x224",
        "--cases",
        "300",
        "--seed",
        "7",
        "--timeout",
        "400ms",
        "--out",
        out.path().to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(10), "{v}");
    assert_eq!(v["stopped"], "cases", "{v}");
    let f = &v["findings"][0];
    assert_eq!(
        f["signature"]["process"],
        serde_json::json!({"kind": "signaled", "signal": 6}),
        "{f}"
    );
    assert_eq!(v["process"]["child"], true, "{v}");
    assert!(
        v["process"]["restarts"].as_u64().is_some_and(|r| r >= 1),
        "{v}"
    );
    // A lab that exits (code 3) instead of crashing: the signature carries the exit code.
    let (o, v) = rdprobe_json(&[
        "fuzz",
        "--lab",
        "healthy-tls",
        "--plant",
        "x224-neg-type-exit",
        "--stage",
        "x224",
        "--cases",
        "400",
        "--seed",
        "7",
        "--timeout",
        "400ms",
        "--out",
        out.path().join("exit").to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(10), "{v}");
    let f = &v["findings"][0];
    assert_eq!(
        f["signature"]["process"],
        serde_json::json!({"kind": "exited", "code": 3}),
        "{f}"
    );
    assert!(
        f["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("target process exited with code 3 after case")),
        "{f}"
    );
    assert_eq!(f["reproduced"], true, "{f}");
    let muts = f["case"]["mutations"].as_array().expect("mutations");
    assert_eq!(muts.len(), 1, "{f}");
    assert_eq!(muts[0]["field"], "neg_type", "{f}");
    assert_ne!(muts[0]["value"], 1, "{f}");
    eprintln!(
        "lab child exit: found at case {}, minimal {}",
        f["case_index"], f["case"]
    );
}

/// CredSSP past the first round trip: with the lab's credentials the fuzzer completes NEGOTIATE /
/// CHALLENGE with IronRDP's client and mutates the AUTHENTICATE round (pubKeyAuth) or the authInfo
/// round; the planted bug deep in round 2 is found, shrunk to one mutation of pubKeyAuth and
/// reproduced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_credssp_short_pubkeyauth_in_round_two_is_found_shrunk_and_reproduced() {
    let s = scenario("healthy-nla");
    let (user, password) = rdprobe::lab::demo_credentials(&s).expect("credentials");
    let lab = spawn_planted_lab(lo0(), s, &[Bug::CredsspShortPubKeyAuthAbort]).expect("lab");
    let mut t = lab_target(lab.addr());
    t.credentials = Some(Credentials {
        user,
        domain: None,
        password,
    });
    let out = tempfile::tempdir().expect("tempdir");
    let mut o = opts(t.clone(), FuzzStage::Credssp, 600, 7, out.path());
    o.max_findings = Some(3);
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    let f = summary
        .findings
        .iter()
        .find(|f| {
            matches!(&f.case, Case::Credssp(c) if c.round == 2)
                && f.signature.class == ResponseClass::Reset
        })
        .unwrap_or_else(|| {
            panic!(
                "no round-2 reset in {} cases: {:?} classes {:?}",
                summary.stats.cases,
                summary
                    .findings
                    .iter()
                    .map(|f| format!("{} {}", f.signature, f.case.summary()))
                    .collect::<Vec<_>>(),
                summary.stats.classes
            )
        })
        .clone();
    eprintln!(
        "credssp round 2 pubKeyAuth: found at case {}, shrink {:?}, minimal {}",
        f.case_index,
        f.shrink,
        f.case.summary()
    );
    let f = check_finding(&summary, f.signature, 600);
    let Case::Credssp(c) = &f.case else {
        panic!("stage")
    };
    assert_eq!(c.round, 2);
    assert_eq!(c.mutations.len(), 1, "{:?}", c.mutations);
    assert!(
        matches!(
            c.mutations[0],
            CredsspMutation::PubKeyAuth { len } | CredsspMutation::FieldTruncate { field: 3, len } if len < 16
        ),
        "{:?}",
        c.mutations
    );
    let sent = hex_decode(&f.sent_hex);
    assert!(
        fuzz::credssp::pub_key_auth_len(&sent).is_some_and(|n| n < 16),
        "{}",
        f.sent_hex
    );
    // Made with credentials: the repro carries no TLS secrets, the NTLM response in the bytes
    // written is zeroed, and the README says so.
    let dir = f.dir.clone().expect("dir");
    let pcap = std::fs::read(dir.join("repro.pcapng")).expect("repro");
    assert!(
        !pcap.windows(13).any(|w| w == b"CLIENT_RANDOM"),
        "no key log"
    );
    let written = fuzz::read_case_file(&dir.join("case.json")).expect("case file");
    let mut on_disk = hex_decode(&written.sent_hex);
    assert_ne!(on_disk, sent, "the NTLM responses were masked");
    assert_eq!(on_disk.len(), sent.len());
    assert_eq!(rdprobe::sanitize::mask_ntlm_responses(&mut on_disk), 1);
    assert_eq!(on_disk, hex_decode(&written.sent_hex), "already zero");
    let readme = std::fs::read_to_string(dir.join("README.txt")).expect("readme");
    assert!(
        readme.contains("made with credentials for user user: TLS secrets removed"),
        "{readme}"
    );
    // The cases covered every round, and the valid later rounds are answered as such.
    assert!(summary
        .stats
        .classes
        .get(&ResponseClass::ValidReply)
        .is_some_and(|n| *n > 0));
    let (r, _) = fuzz::replay(&t, &f, Duration::from_secs(5)).await;
    assert!(r.reproduced, "{r:?}");
}

/// Standard RDP security in the lab (encryption level NONE, so the Client Info goes in the clear):
/// the fuzzer walks X.224 (PROTOCOL_RDP), MCS and the channel connection with rdpsec's machinery
/// and mutates the Client Info; the planted bug on a long cbUserName is found, shrunk to one
/// field and reproduced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_security_long_user_name_is_found_shrunk_and_reproduced() {
    let lab = spawn_planted_lab(
        lo0(),
        scenario("rdp-security-only"),
        &[Bug::SecurityLongUserNameAbort],
    )
    .expect("lab");
    let out = tempfile::tempdir().expect("tempdir");
    let o = opts(
        lab_target(lab.addr()),
        FuzzStage::Security,
        400,
        7,
        out.path(),
    );
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    let sig = Signature::new(FuzzStage::Security, ResponseClass::Reset, Liveness::Alive);
    let f = check_finding(&summary, sig, 400);
    eprintln!(
        "security cbUserName: found at case {}, shrink {:?}, minimal {}, classes {:?}",
        f.case_index,
        f.shrink,
        f.case.summary(),
        summary.stats.classes
    );
    let Case::Security(c) = &f.case else {
        panic!("stage")
    };
    assert_eq!(c.mutations.len(), 1, "{:?}", c.mutations);
    // One mutation that puts more than 512 in cbUserName: the length field itself, a long user
    // name, or a havoc that shifts a larger value into the field.
    assert!(
        rdprobe::lab::planted::client_info_user_name_len(&hex_decode(&f.sent_hex))
            .is_some_and(|n| n > 512),
        "{}",
        f.sent_hex
    );
    assert_eq!(summary.findings.len(), 1, "{:?}", summary.findings);
    let report = analyze(&f.dir.clone().expect("dir").join("repro.pcapng"));
    assert_eq!(report["verdict"]["kind"], "reset", "{report}");
    cli_replay(&f, &[]);
}

#[test]
fn bounded_run_against_xrdp_rdp_security_classifies_every_case() {
    let xrdp = Xrdp::start(XrdpOpts::rdp("high")).expect("start xrdp (scripts/install-peers.sh)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // The valid licensing answer is judged after the flow xrdp chose.
        let mut t = Target::new(xrdp.addr());
        t.timeout = Duration::from_secs(2);
        let valid = fuzz::session::run_case(&t, &Case::valid(FuzzStage::Licensing)).await;
        eprintln!(
            "xrdp rdp licensing, valid answer: {:?} {}",
            valid.class, valid.detail
        );
        assert_eq!(valid.class, ResponseClass::ValidReply, "{}", valid.detail);
        assert!(
            valid.detail.starts_with("after the server's"),
            "{}",
            valid.detail
        );
        for stage in [FuzzStage::Security, FuzzStage::Licensing] {
            let mut t = Target::new(xrdp.addr());
            t.timeout = Duration::from_secs(2);
            let s = real_server_run(t, stage, 150, 11).await;
            eprintln!(
                "xrdp rdp {stage}: {:.0} cases/s {:?} findings {:?}",
                s.cases_per_sec,
                s.stats.classes,
                s.findings
                    .iter()
                    .map(|f| format!("{} {}", f.signature, f.case.summary()))
                    .collect::<Vec<_>>()
            );
            // The valid stages before the fuzzed one held for every case.
            assert_eq!(
                s.stats.classes.get(&ResponseClass::PrefixFailed),
                None,
                "{stage}: {:?}",
                s.stats.classes
            );
        }
    });
    drop(xrdp);
    // FIPS (3DES, HMAC-SHA1 signatures): the Client Info is sealed the FIPS way.
    let xrdp = Xrdp::start(XrdpOpts::rdp("fips")).expect("start xrdp (scripts/install-peers.sh)");
    rt.block_on(async {
        let mut t = Target::new(xrdp.addr());
        t.timeout = Duration::from_secs(2);
        let s = real_server_run(t, FuzzStage::Security, 100, 12).await;
        eprintln!(
            "xrdp rdp fips security: {:.0} cases/s {:?}",
            s.cases_per_sec, s.stats.classes
        );
        assert_eq!(s.stats.classes.get(&ResponseClass::PrefixFailed), None);
    });
}

/// What the deep CredSSP rounds found in the lab itself: sspi 0.23.0's CredSSP server panicked on
/// a pubKeyAuth or authInfo shorter than the 16-byte NTLM signature (the connection then just
/// closed). The lab now refuses them as a logon failure: a TSRequest errorCode, not a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_answers_short_pubkeyauth_and_authinfo_with_a_logon_failure() {
    let s = scenario("healthy-nla");
    let (user, password) = rdprobe::lab::demo_credentials(&s).expect("credentials");
    let lab = rdprobe::lab::spawn_lab(lo0(), s).expect("lab");
    let mut t = lab_target(lab.addr);
    t.credentials = Some(Credentials {
        user,
        domain: None,
        password,
    });
    for (round, field) in [(2u8, 3u8), (3, 2)] {
        let case = Case::Credssp(fuzz::credssp::CredsspCase {
            round,
            mutations: vec![CredsspMutation::FieldTruncate { field, len: 8 }],
        });
        let run = fuzz::session::run_case(&t, &case).await;
        assert_eq!(
            run.class,
            ResponseClass::ErrorReply,
            "round {round}: {}",
            run.detail
        );
        assert!(
            run.detail.contains("STATUS_LOGON_FAILURE"),
            "{}",
            run.detail
        );
    }
    // The valid later rounds still pass.
    let valid = Case::Credssp(fuzz::credssp::CredsspCase {
        round: 3,
        mutations: vec![],
    });
    let run = fuzz::session::run_case(&t, &valid).await;
    assert_eq!(run.class, ResponseClass::ValidReply, "{}", run.detail);
}

// --- the RD Gateway stages (issue 15) ---

/// The lab gateway (gw-healthy, with `bug` planted when given) in front of the lab server.
fn lab_gateway(
    bug: Option<&str>,
) -> (
    rdprobe::lab::LabHandle,
    rdprobe::lab::gateway::GatewayHandle,
) {
    let lab = rdprobe::lab::spawn_lab(lo0(), scenario("healthy-nla")).expect("lab");
    let mut sc = scenario("gw-healthy");
    sc.gateway.as_mut().expect("gateway").bug = bug.map(str::to_owned);
    let gw = rdprobe::lab::gateway::spawn_gateway(
        lo0(),
        rdprobe::lab::gateway::GatewayConfig {
            scenario: sc,
            target: lab.addr,
            limits: rdprobe::lab::LabLimits::default(),
        },
    )
    .expect("gateway");
    (lab, gw)
}

fn gw_target(addr: SocketAddr) -> Target {
    let mut t = lab_target(addr);
    t.credentials = Some(Credentials {
        user: "user".into(),
        domain: None,
        password: "pass".into(),
    });
    t
}

/// A planted lab-gateway bug (a CHANNEL_CREATE resource name longer than 200 characters hangs the
/// connection) is found at gw_channel as a hang, shrunk to the name mutation alone at 201
/// characters, written with a case file that replays (library and CLI, password from the
/// environment, in no file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_gateway_long_resource_hang_is_found_shrunk_and_replayed() {
    use rdprobe::fuzz::gateway::ChannelMutation;
    let (_lab, gw) = lab_gateway(Some(rdprobe::lab::gateway::PLANTED_LONG_RESOURCE));
    let out = tempfile::tempdir().expect("tempdir");
    let o = opts(gw_target(gw.addr), FuzzStage::GwChannel, 300, 7, out.path());
    let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
    assert_eq!(summary.baseline, ResponseClass::ValidReply);
    let sig = Signature::new(
        FuzzStage::GwChannel,
        ResponseClass::Silence,
        Liveness::Alive,
    );
    let f = check_finding(&summary, sig, 300);
    eprintln!(
        "gw_channel long resource: found at case {}, shrink {:?}",
        f.case_index, f.shrink
    );
    let Case::GwChannel(c) = &f.case else {
        panic!("stage")
    };
    assert_eq!(c.mutations.len(), 1, "{:?}", c.mutations);
    assert!(
        matches!(
            c.mutations[0],
            ChannelMutation::ResourceName { len: 201, .. }
        ),
        "{:?}",
        c.mutations
    );
    assert_eq!(summary.findings.len(), 1, "{:?}", summary.findings);
    // The password is in no file of the finding.
    let dir = f.dir.clone().expect("dir");
    for file in ["case.json", "README.txt", "repro.pcapng"] {
        let b = std::fs::read(dir.join(file)).expect("file");
        let basic = rdprobe::gateway::http::b64(b"user:pass");
        assert!(
            !b.windows(basic.len()).any(|w| w == basic.as_bytes()),
            "{file} holds the Basic token"
        );
    }
    let (r, _) = fuzz::replay(&gw_target(gw.addr), &f, Duration::from_secs(5)).await;
    assert!(r.reproduced, "{r:?}");
    cli_replay(&f, &[("RDPROBE_PASSWORD", "pass")]);
}

/// The first HTTP request and the tunnel packets against the healthy lab gateway: every case is
/// classified, the gateway stays alive, and a healthy gateway gives no finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_http_and_tunnel_stages_against_a_healthy_lab_gateway() {
    let (_lab, gw) = lab_gateway(None);
    for (stage, baseline) in [
        (FuzzStage::GwHttp, ResponseClass::ValidReply),
        (FuzzStage::GwTunnel, ResponseClass::ValidReply),
    ] {
        let out = tempfile::tempdir().expect("tempdir");
        let mut o = opts(gw_target(gw.addr), stage, 120, 3, out.path());
        o.liveness_every = 20;
        let summary = fuzz::run(&o, &mut fuzz::Quiet).await.expect("run");
        assert_eq!(summary.baseline, baseline, "{stage}");
        assert_eq!(summary.stats.cases, 120, "{stage}");
        assert!(
            summary.findings.is_empty(),
            "{stage}: {:?}",
            summary
                .findings
                .iter()
                .map(|f| (f.signature.to_string(), f.case.summary(), f.detail.clone()))
                .collect::<Vec<_>>()
        );
        assert_eq!(summary.stats.liveness.get(&Liveness::Down), None, "{stage}");
        // More than one kind of answer: the mutations reach the gateway's parser.
        assert!(
            summary.stats.classes.len() >= 2,
            "{stage}: {:?}",
            summary.stats.classes
        );
    }
}
