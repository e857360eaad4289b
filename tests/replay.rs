//! Replay: a capture turned back into a live failure, and a captured client driven again.
//!
//! (a) Round trip over lab scenarios: probe the lab and write the capture, derive the server from
//!     that capture (`--as-server`), probe the replay and write its capture: both captures analyze
//!     to the same stages and verdict, and the failure comes after about the same time.
//! (b) Captures of real xrdp failures, replayed as a server, make the real `xfreerdp` fail with the
//!     same exit code as the real xrdp does.
//! (c) The captured client driven again (`--as-client`) matches against the same server and
//!     reports a mismatch against a different one.

mod common;
use common::*;

use std::io::Cursor;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use rdprobe::capture::reader::ReaderOptions;
use rdprobe::lab::{spawn_lab, LabHandle};
use rdprobe::probe::{self, Credentials, ProbeOptions, ProbeResult, Protocol};
use rdprobe::replay::{self, client, compare, server, timing, CapturedConnection};
use rdprobe::scenario::{builtin, Fault, FaultAction, FaultPoint, Scenario};
use rdprobe::stage::{FailureKind, NegFailure, Side, Stage, Verdict};

/// Failure times of a capture and its replay agree within this many milliseconds...
const TOLERANCE_MS: f64 = 250.0;
/// ...or within this fraction of the longer one.
const TOLERANCE_REL: f64 = 0.5;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn lab(scenario: Scenario) -> LabHandle {
    spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), scenario).expect("lab starts")
}

fn creds() -> Credentials {
    Credentials {
        user: "user".into(),
        domain: None,
        password: "pass".into(),
    }
}

/// Probe options as a client in the field would use them: credentials user/pass, short timeouts.
fn opts(addr: SocketAddr, protocols: &[Protocol]) -> ProbeOptions {
    let mut o = ProbeOptions::new(addr.ip().to_string(), addr.port());
    o.protocols = protocols.to_vec();
    o.credentials = Some(creds());
    o.cookie = Some("user".into());
    o.stage_timeout = Duration::from_millis(1500);
    o.deadline = Duration::from_secs(20);
    o
}

/// Writes the probe's capture as pcapng and reads it back: what `--pcap` then `replay FILE` sees.
fn through_pcapng(r: &ProbeResult) -> CapturedConnection {
    let mut buf = Vec::new();
    rdprobe::capture::writer::write_pcapng(&r.trace, &r.labels, &mut buf).expect("write pcapng");
    let conns =
        replay::load_capture(Cursor::new(buf), ReaderOptions::default()).expect("read back");
    assert_eq!(conns.len(), 1, "one connection per probe capture");
    conns.into_iter().next().expect("one")
}

fn write_pcapng_file(r: &ProbeResult, path: &std::path::Path) {
    let f = std::fs::File::create(path).expect("create pcap");
    rdprobe::capture::writer::write_pcapng(&r.trace, &r.labels, std::io::BufWriter::new(f))
        .expect("write pcapng");
}

struct RoundTrip {
    original: CapturedConnection,
    replayed: CapturedConnection,
    derived: server::ServerReplay,
    t_original: f64,
    t_replayed: f64,
}

/// Probe `scenario`, derive the replay from the capture, probe the replay.
fn round_trip(
    rt: &tokio::runtime::Runtime,
    scenario: Scenario,
    protocols: &[Protocol],
) -> RoundTrip {
    let name = scenario.name.clone();
    let first = lab(scenario);
    let r1 = rt.block_on(probe::probe(&opts(first.addr, protocols)));
    first.stop();
    let original = through_pcapng(&r1);
    let derived = server::derive_server(
        &original.trace,
        &original.report,
        &server::ServerOptions {
            name: Some(format!("replay-{name}")),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: derive: {e}"));
    // The scenario survives its TOML form (what --emit-scenario writes).
    let toml = derived.scenario.to_toml();
    assert_eq!(
        Scenario::from_toml(&toml).expect("derived scenario parses"),
        derived.scenario,
        "{name}: derived scenario round-trips through TOML"
    );
    let second = lab(derived.scenario.clone());
    let r2 = rt.block_on(probe::probe(&opts(second.addr, protocols)));
    second.stop();
    let replayed = through_pcapng(&r2);
    let t_original = timing::failure_time_ms(&original.trace).expect("time");
    let t_replayed = timing::failure_time_ms(&replayed.trace).expect("time");
    RoundTrip {
        original,
        replayed,
        derived,
        t_original,
        t_replayed,
    }
}

fn fault_points(s: &Scenario) -> Vec<(FaultPoint, &'static str)> {
    s.faults.iter().map(|f| (f.at, f.action.name())).collect()
}

#[test]
fn round_trip_reproduces_lab_failures() {
    let rt = rt();
    let cases: &[(&str, &[Protocol], Stage, &str)] = &[
        ("tls-reset-at-client-hello", &[], Stage::Tls, "reset"),
        ("x224-silent", &[], Stage::X224, "timed_out"),
        (
            "nla-required",
            &[Protocol::Ssl],
            Stage::X224,
            "negotiation_failure",
        ),
        ("wrong-password", &[], Stage::Credssp, "auth_failure"),
        ("expired-certificate", &[], Stage::Connected, "ok"),
        ("denied-after-mcs", &[], Stage::Channels, "denied"),
        ("firewall-drop-after-x224", &[], Stage::Tls, "timed_out"),
        ("no-certificate", &[], Stage::Tls, "tls_alert"),
        ("reset-in-credssp", &[], Stage::Credssp, "reset"),
    ];
    let mut table = Vec::new();
    for (name, protocols, stage, kind) in cases {
        let sc = builtin(name).expect("builtin");
        let original_faults = fault_points(&sc);
        let rtp = round_trip(&rt, sc, protocols);
        let (o, r) = (&rtp.original.report, &rtp.replayed.report);
        let kind_of = |v: &Verdict| v.failure().map(|k| k.name()).unwrap_or("ok");
        assert_eq!(
            kind_of(&o.verdict),
            *kind,
            "{name}: original verdict: {}",
            o.summary
        );
        // The lab sends the Disconnect Provider Ultimatum right after the MCS Connect Response: whether
        // the client's Erect Domain Request crosses it first (stage channels) or not (stage mcs) is a race
        // on every run, the capture's and the replay's alike.
        let racy_mcs = *stage == Stage::Channels;
        let stage_ok = |st: Stage| st == *stage || (racy_mcs && st == Stage::Mcs);
        // The original failure is the scenario's.
        assert!(
            stage_ok(o.last_stage),
            "{name}: original stage: {}",
            o.summary
        );
        // The replay fails the same way, stage by stage.
        let cmp = compare::compare(o, r);
        let matched = if racy_mcs {
            stage_ok(r.last_stage) && kind_of(&r.verdict) == *kind && r.ended_by == o.ended_by
        } else {
            cmp.matched
        };
        assert!(
            matched,
            "{name}: replay differs from the capture:\n{}\noriginal: {}\nreplay: {}\nscenario:\n{}",
            compare::render(&cmp),
            o.summary,
            r.summary,
            rtp.derived.scenario.to_toml()
        );
        // Faults land where the hand-written scenario put them (or at an equivalent point).
        let derived_faults = fault_points(&rtp.derived.scenario);
        for (point, action) in &original_faults {
            let equivalent = match point {
                FaultPoint::X224Confirm => FaultPoint::TlsClientHello,
                p => *p,
            };
            assert!(
                derived_faults
                    .iter()
                    .any(|(p, a)| (*p == *point || *p == equivalent) && a == action),
                "{name}: expected {action} at {point}, derived {derived_faults:?}"
            );
        }
        // The certificate facts come back too.
        for key in ["cert_expired", "cert_self_signed"] {
            assert_eq!(
                o.fact(Stage::Tls, key),
                r.fact(Stage::Tls, key),
                "{name}: tls.{key}"
            );
        }
        assert!(
            timing::times_agree(rtp.t_original, rtp.t_replayed, TOLERANCE_MS, TOLERANCE_REL),
            "{name}: failure after {:.1} ms in the capture, {:.1} ms in the replay",
            rtp.t_original,
            rtp.t_replayed
        );
        table.push(format!(
            "{name:<28} {:<24} capture {:>8.1} ms  replay {:>8.1} ms",
            format!("{} {}", o.last_stage, kind_of(&o.verdict)),
            rtp.t_original,
            rtp.t_replayed
        ));
    }
    eprintln!(
        "round trips (failure time from TCP connect):\n{}",
        table.join("\n")
    );
}

/// A slow server: 300 ms before it answers the X.224 request, then 700 ms before it resets the
/// connection at the ClientHello. The replay holds both waits, so the failure comes as late.
#[test]
fn round_trip_keeps_the_server_think_time() {
    let rt = rt();
    let mut sc = builtin("tls-reset-at-client-hello").expect("builtin");
    sc.name = "slow-reset".into();
    sc.faults = vec![
        Fault::new(FaultPoint::X224Request, FaultAction::Delay { ms: 300 }),
        Fault::new(FaultPoint::TlsClientHello, FaultAction::Delay { ms: 700 }),
        Fault::new(FaultPoint::TlsClientHello, FaultAction::Reset),
    ];
    let rtp = round_trip(&rt, sc, &[]);
    let d = &rtp.derived;
    assert_eq!(
        d.scenario
            .link
            .response_delays_ms
            .first()
            .copied()
            .map(|v| (v + 25) / 50),
        Some(300 / 50),
        "the x224 answer delay is derived: {:?}",
        d.timing
    );
    assert!(
        d.scenario
            .faults
            .iter()
            .any(|f| f.at == FaultPoint::TlsClientHello
                && matches!(f.action, FaultAction::Delay { ms } if (650..=800).contains(&ms))),
        "a ~700 ms delay before the reset: {:?}",
        d.scenario.faults
    );
    assert!(compare::compare(&rtp.original.report, &rtp.replayed.report).matched);
    assert!(
        rtp.t_original >= 1000.0,
        "original {:.1} ms",
        rtp.t_original
    );
    assert!(
        (rtp.t_original - rtp.t_replayed).abs() <= 100.0,
        "capture {:.1} ms vs replay {:.1} ms",
        rtp.t_original,
        rtp.t_replayed
    );
    eprintln!(
        "slow reset: capture {:.1} ms, replay {:.1} ms",
        rtp.t_original, rtp.t_replayed
    );

    // A slow CredSSP server: every answer waits 200 ms; the logon is rejected.
    let mut sc = builtin("wrong-password").expect("builtin");
    sc.name = "slow-wrong-password".into();
    sc.link.write_delay_ms = 200;
    let rtp = round_trip(&rt, sc, &[]);
    assert!(compare::compare(&rtp.original.report, &rtp.replayed.report).matched);
    assert!(
        timing::times_agree(rtp.t_original, rtp.t_replayed, TOLERANCE_MS, TOLERANCE_REL),
        "capture {:.1} ms vs replay {:.1} ms",
        rtp.t_original,
        rtp.t_replayed
    );
    assert!(rtp.t_replayed >= 600.0, "replay {:.1} ms", rtp.t_replayed);
    assert!(
        (190..=260).contains(&rtp.derived.scenario.link.write_delay_ms),
        "every write was delayed: a slow link, {:?}",
        rtp.derived.timing
    );
    eprintln!(
        "slow wrong password: capture {:.1} ms, replay {:.1} ms, write delay {} ms",
        rtp.t_original, rtp.t_replayed, rtp.derived.scenario.link.write_delay_ms
    );
}

/// The binary: `replay --as-server --emit-scenario` writes a scenario the lab loads, and
/// `replay --as-server --listen` serves it until SIGTERM.
#[test]
fn cli_as_server_emits_and_serves() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = lab(builtin("tls-reset-at-client-hello").expect("builtin"));
    let r1 = rt.block_on(probe::probe(&opts(first.addr, &[])));
    first.stop();
    let pcap = dir.path().join("reset.pcapng");
    write_pcapng_file(&r1, &pcap);
    let toml = dir.path().join("reset.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .arg("replay")
        .arg(&pcap)
        .args(["--as-server", "--emit-scenario"])
        .arg(&toml)
        .output()
        .expect("run rdprobe");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sc = Scenario::from_toml(&std::fs::read_to_string(&toml).expect("toml")).expect("parses");
    assert!(fault_points(&sc).contains(&(FaultPoint::TlsClientHello, "reset")));

    let port = free_port();
    let mut child = ProcessGuard::spawn(
        "rdprobe replay",
        Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .arg("replay")
            .arg(&pcap)
            .args(["--as-server", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("spawn");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            port_accepts(port).then_some(())
        })
        .is_some(),
        "replay server listens"
    );
    let r2 = rt.block_on(probe::probe(&opts(loopback(port), &[])));
    assert_eq!(r2.report.last_stage, Stage::Tls, "{}", r2.report.summary);
    assert!(matches!(
        r2.report.verdict,
        Verdict::Failed {
            kind: FailureKind::Reset,
            by: Side::Server
        }
    ));
    // SIGTERM stops it cleanly.
    unsafe { libc::kill(child.pid() as i32, libc::SIGTERM) };
    let status = child.wait_timeout(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exits 0 on SIGTERM");
}

/// `replay --as-server` refuses a non-loopback --listen without --allow-remote: exit 2 (usage)
/// before the capture is served (nothing listens), whatever the address family. 192.0.2.1
/// (TEST-NET-1) is on no interface: no traffic can leave whatever the code does.
#[test]
fn cli_as_server_refuses_a_non_loopback_listen_address() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = lab(builtin("tls-reset-at-client-hello").expect("builtin"));
    let r1 = rt.block_on(probe::probe(&opts(first.addr, &[])));
    first.stop();
    let pcap = dir.path().join("reset.pcapng");
    write_pcapng_file(&r1, &pcap);
    let port = free_port();
    for listen in [
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        "192.0.2.1:3389".to_owned(),
    ] {
        let mut child = ProcessGuard::spawn(
            "rdprobe replay",
            Command::new(env!("CARGO_BIN_EXE_rdprobe"))
                .arg("replay")
                .arg(&pcap)
                .args(["--as-server", "--listen", &listen])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .expect("spawn");
        let mut stderr = child.child_mut().stderr.take().expect("stderr");
        let status = child.wait_timeout(Duration::from_secs(10));
        child.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "replay --as-server --listen {listen}: {err}"
        );
        assert!(
            err.contains("not a loopback address") && err.contains("--allow-remote"),
            "{listen}: {err}"
        );
        assert!(!err.contains("listening"), "{listen}: {err}");
    }
}

// --- real xrdp captures, real xfreerdp ---

/// Runs `xfreerdp /v:ADDR /u:user /p:pass /cert:ignore +auth-only EXTRA…` and returns its exit code.
fn xfreerdp_code(xvfb: &Xvfb, addr: SocketAddr, extra: &[&str]) -> (Option<i32>, String) {
    let v = format!("/v:{addr}");
    let mut args = vec![v.as_str(), "/u:user", "/p:pass", "+auth-only"];
    args.extend_from_slice(extra);
    let run = xfreerdp_on(xvfb, &args, Duration::from_secs(25)).expect("xfreerdp runs");
    (run.code, run.output)
}

fn derive(conn: &CapturedConnection) -> server::ServerReplay {
    server::derive_server(&conn.trace, &conn.report, &server::ServerOptions::default())
        .expect("derive")
}

/// One real xrdp failure: probe it with `protocols`, replay the capture as a server, and run the
/// real xfreerdp with `extra` against both. Returns (capture, xfreerdp on xrdp, xfreerdp on replay).
fn xrdp_case(
    rt: &tokio::runtime::Runtime,
    xvfb: &Xvfb,
    xrdp: &Xrdp,
    protocols: &[Protocol],
    extra: &[&str],
) -> (CapturedConnection, Option<i32>, Option<i32>, String) {
    let r = rt.block_on(probe::probe(&opts(xrdp.addr(), protocols)));
    let capture = through_pcapng(&r);
    let derived = derive(&capture);
    let (real, _) = xfreerdp_code(xvfb, xrdp.addr(), extra);
    let replay_lab = lab(derived.scenario.clone());
    let (replayed, text) = xfreerdp_code(xvfb, replay_lab.addr, extra);
    replay_lab.stop();
    (capture, real, replayed, text)
}

#[test]
fn real_xrdp_failures_replayed_for_xfreerdp() {
    let rt = rt();
    let xvfb = Xvfb::start().expect("Xvfb (apt-get install xvfb)");

    // 1. TLS-only xrdp, client offering HYBRID only: xrdp refuses the negotiation.
    let xrdp = Xrdp::start(XrdpOpts::tls()).expect("xrdp (apt-get install xrdp)");
    let (cap, real, replayed, text) =
        xrdp_case(&rt, &xvfb, &xrdp, &[Protocol::Hybrid], &["/sec:nla"]);
    assert_eq!(cap.report.last_stage, Stage::X224, "{}", cap.report.summary);
    assert!(
        matches!(
            &cap.report.verdict,
            Verdict::Failed {
                kind: FailureKind::NegotiationFailure(NegFailure { code: 1 }),
                by: Side::Server
            }
        ),
        "xrdp in TLS mode answers SSL_REQUIRED_BY_SERVER to HYBRID: {}",
        cap.report.summary
    );
    assert_eq!(real, Some(133), "xfreerdp /sec:nla against TLS-only xrdp");
    assert_eq!(replayed, real, "xfreerdp against the replay: {text}");
    drop(xrdp);

    // 2. xrdp whose certificate cannot be read: SSL_CERT_NOT_ON_SERVER.
    let xrdp = Xrdp::start(XrdpOpts::unreadable_cert()).expect("xrdp");
    let (cap, real, replayed, text) = xrdp_case(&rt, &xvfb, &xrdp, &[], &[]);
    assert!(
        matches!(
            &cap.report.verdict,
            Verdict::Failed {
                kind: FailureKind::NegotiationFailure(NegFailure { code: 3 }),
                ..
            }
        ),
        "SSL_CERT_NOT_ON_SERVER: {}",
        cap.report.summary
    );
    assert_eq!(real, Some(133), "xfreerdp against the unreadable-cert xrdp");
    assert_eq!(replayed, real, "xfreerdp against the replay: {text}");
    drop(xrdp);

    // 3. xrdp with an expired certificate: the probe connects and sees it expired; xfreerdp that
    // checks certificates refuses both the real server and the replay, one that ignores them connects.
    let xrdp = Xrdp::start(XrdpOpts::expired_cert()).expect("xrdp");
    let (cap, real, replayed, text) = xrdp_case(&rt, &xvfb, &xrdp, &[], &["/cert:ignore"]);
    assert_eq!(
        cap.report.fact(Stage::Tls, "cert_expired"),
        Some(&serde_json::json!(true)),
        "{}",
        cap.report.summary
    );
    assert_eq!(real, Some(0), "xfreerdp /cert:ignore connects to xrdp");
    assert_eq!(
        replayed, real,
        "xfreerdp /cert:ignore against the replay: {text}"
    );
    let derived = derive(&cap);
    let replay_lab = lab(derived.scenario.clone());
    let (real_strict, _) = xfreerdp_code(&xvfb, xrdp.addr(), &["/cert:deny"]);
    let (replay_strict, text) = xfreerdp_code(&xvfb, replay_lab.addr, &["/cert:deny"]);
    assert_eq!(
        real_strict,
        Some(143),
        "xfreerdp /cert:deny refuses the expired certificate (TLS connect failed)"
    );
    assert_eq!(
        replay_strict, real_strict,
        "xfreerdp /cert:deny against the replay: {text}"
    );
    eprintln!(
        "xfreerdp exit codes, real xrdp = replay: negotiation 133, cert not on server 133, expired \
         /cert:ignore {real:?}, expired /cert:deny {real_strict:?}"
    );
}

// --- as client ---

#[test]
fn as_client_matches_the_same_server_and_not_another() {
    let rt = rt();
    let xrdp = Xrdp::start(XrdpOpts::tls()).expect("xrdp (apt-get install xrdp)");
    let r = rt.block_on(probe::probe(&opts(xrdp.addr(), &[Protocol::Hybrid])));
    let cap = through_pcapng(&r);
    let plan = client::derive_client(&cap.trace, &cap.report);
    assert_eq!(plan.requested_protocols, 2, "HYBRID only");
    assert_eq!(plan.cookie.as_deref(), Some("user"));
    let run = |host: &str, port: u16, exact: bool| {
        rt.block_on(client::run_client(
            &plan,
            &client::ClientRunOptions {
                host: host.into(),
                port,
                exact,
                credentials: Some(creds()),
                stage_timeout: Duration::from_secs(2),
                deadline: Duration::from_secs(20),
            },
        ))
    };
    // Same server: same verdict, by protocol and byte for byte.
    for exact in [false, true] {
        let again = run("127.0.0.1", xrdp.port(), exact);
        let cmp = compare::compare(&cap.report, &again.report);
        assert!(cmp.matched, "exact={exact}: {}", compare::render(&cmp));
    }
    // A healthy NLA server: HYBRID is accepted now, so the capture's refusal is gone.
    let healthy = lab(builtin("healthy-nla").expect("builtin"));
    let other = run("127.0.0.1", healthy.addr.port(), false);
    let cmp = compare::compare(&cap.report, &other.report);
    assert!(
        !cmp.matched,
        "healthy server must not match: {}",
        compare::render(&cmp)
    );
    assert!(
        cmp.differences.iter().any(|d| d.starts_with("verdict")),
        "{cmp:?}"
    );

    // The CLI: exit 0 on a match, 9 on a mismatch.
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("xrdp-hybrid.pcapng");
    write_pcapng_file(&r, &pcap);
    for (target, expect) in [(xrdp.target(), 0), (healthy.addr.to_string(), 9)] {
        let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .arg("replay")
            .arg(&pcap)
            .args(["--as-client", "--target", &target, "--timeout", "2s"])
            .output()
            .expect("run rdprobe");
        assert_eq!(
            out.status.code(),
            Some(expect),
            "replay --as-client --target {target}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Byte-exact replay: the relay sends the captured X.224 request verbatim (its cookie, its flags),
/// and the capture of the new conversation shows exactly those bytes.
#[test]
fn exact_resends_the_cleartext_request_verbatim() {
    let rt = rt();
    let first = lab(builtin("tls-reset-at-client-hello").expect("builtin"));
    let mut o = opts(first.addr, &[]);
    o.cookie = Some("captured-cookie".into());
    let r = rt.block_on(probe::probe(&o));
    let cap = through_pcapng(&r);
    let plan = client::derive_client(&cap.trace, &cap.report);
    assert_eq!(plan.cleartext.len(), 1, "the X.224 Connection Request");
    let request = plan.cleartext[0].clone();
    let again = rt.block_on(client::run_client(
        &plan,
        &client::ClientRunOptions {
            host: "127.0.0.1".into(),
            port: first.addr.port(),
            exact: true,
            credentials: None,
            stage_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        },
    ));
    let sent = again
        .trace
        .stream(rdprobe::trace::Dir::C2S, rdprobe::trace::Layer::Wire);
    assert!(sent.starts_with(&request), "the request went out verbatim");
    assert_eq!(
        again.trace.server, first.addr,
        "the trace names the real server"
    );
    let cmp = compare::compare(&cap.report, &again.report);
    assert!(cmp.matched, "{}", compare::render(&cmp));

    // A client that sent garbage instead of a Connection Request: replayed verbatim.
    let garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let mut t = rdprobe::trace::Trace::new("127.0.0.1:1".parse().expect("a"), first.addr);
    t.push_at(1_000, None, rdprobe::trace::EventKind::Connected);
    t.push_at(
        2_000,
        None,
        rdprobe::trace::EventKind::Data {
            dir: rdprobe::trace::Dir::C2S,
            layer: rdprobe::trace::Layer::Wire,
            bytes: garbage.clone().into(),
        },
    );
    t.push_at(
        3_000,
        None,
        rdprobe::trace::EventKind::Fin {
            dir: rdprobe::trace::Dir::S2C,
        },
    );
    let report = rdprobe::decode::decode(&t).report;
    let plan = client::derive_client(&t, &report);
    assert_eq!(plan.garbage.as_deref(), Some(&garbage[..]));
    let again = rt.block_on(client::run_client(
        &plan,
        &client::ClientRunOptions {
            host: "127.0.0.1".into(),
            port: first.addr.port(),
            exact: true,
            credentials: None,
            stage_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        },
    ));
    assert_eq!(
        again
            .trace
            .stream(rdprobe::trace::Dir::C2S, rdprobe::trace::Layer::Wire),
        garbage,
        "garbage went out verbatim"
    );
    assert!(
        matches!(
            again.report.verdict,
            Verdict::Failed {
                kind: FailureKind::ProtocolError { .. },
                by: Side::Client
            }
        ),
        "{}",
        again.report.summary
    );
    let cmp = compare::compare(&report, &again.report);
    assert!(cmp.matched, "{}", compare::render(&cmp));
    first.stop();
}

/// A server that stops reading cannot stall `--as-client --exact`: a captured client flight of
/// 1 MiB (garbage, replayed verbatim) to a server that never reads, with the smallest receive
/// window, ends at the stage timeout, and the trace says the server stopped reading.
#[test]
fn exact_verbatim_write_to_a_server_that_never_reads_times_out() {
    let rt = rt();
    let deaf = BadServer::deaf();
    let flight = vec![0x41u8; 1024 * 1024];
    let mut t = rdprobe::trace::Trace::new("127.0.0.1:1".parse().expect("a"), deaf.addr());
    t.push_at(1_000, None, rdprobe::trace::EventKind::Connected);
    t.push_at(
        2_000,
        None,
        rdprobe::trace::EventKind::Data {
            dir: rdprobe::trace::Dir::C2S,
            layer: rdprobe::trace::Layer::Wire,
            bytes: flight.clone().into(),
        },
    );
    t.push_at(
        3_000,
        None,
        rdprobe::trace::EventKind::Fin {
            dir: rdprobe::trace::Dir::S2C,
        },
    );
    let report = rdprobe::decode::decode(&t).report;
    let plan = client::derive_client(&t, &report);
    assert_eq!(plan.garbage.as_ref().map(Vec::len), Some(flight.len()));
    let started = std::time::Instant::now();
    let again = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                client::run_client(
                    &plan,
                    &client::ClientRunOptions {
                        host: "127.0.0.1".into(),
                        port: deaf.port(),
                        exact: true,
                        credentials: None,
                        stage_timeout: Duration::from_secs(2),
                        deadline: Duration::from_secs(30),
                    },
                ),
            )
            .await
        })
        .expect("the replay ends although the server never reads");
    let took = started.elapsed();
    eprintln!(
        "write to a deaf server: ended after {took:?} with {} bytes sent: {}",
        again
            .trace
            .stream(rdprobe::trace::Dir::C2S, rdprobe::trace::Layer::Wire)
            .len(),
        again.report.summary
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "ended after {took:?}, expected at the 2 s stage timeout"
    );
    // The verdict is the garbage's (as in the capture); the timeout is in the trace.
    assert!(
        again.trace.events.iter().any(|e| matches!(
            e.kind,
            rdprobe::trace::EventKind::Timeout {
                waiting_for: rdprobe::trace::Dir::S2C,
                ..
            }
        )),
        "a timeout waiting for the server is recorded"
    );
    let sent = again
        .trace
        .stream(rdprobe::trace::Dir::C2S, rdprobe::trace::Layer::Wire)
        .len();
    assert!(
        sent < flight.len(),
        "the write did not complete: {sent} bytes"
    );
    assert!(
        again.trace.events.iter().any(|e| matches!(
            &e.kind,
            rdprobe::trace::EventKind::Note(n) if n.contains("the server stopped reading")
        )),
        "the trace says why"
    );
}

/// The `--exact` relay's writes have deadlines too: a captured 60 KB MCS Connect Initial relayed to
/// a server that answers the X.224 request and then never reads ends within two stage timeouts
/// with a timeout verdict against the server.
#[test]
fn exact_relay_write_to_a_server_that_stops_reading_times_out() {
    let rt = rt();
    let server = lab(builtin("rdp-security-only").expect("builtin"));
    let mut o = opts(server.addr, &[Protocol::Rdp]);
    o.cookie = Some("bob".into());
    let cap = through_pcapng(&rt.block_on(probe::probe(&o)));
    server.stop();
    let mut plan = client::derive_client(&cap.trace, &cap.report);
    assert!(plan.cleartext.len() >= 2, "request and Connect Initial");
    // A Connect Initial TPKT of 60,000 bytes (X.224 data header, then junk).
    let mut big = vec![3u8, 0, 0, 0, 2, 0xf0, 0x80];
    big.resize(60_000, 0x7f);
    let len = big.len() as u16;
    big[2..4].copy_from_slice(&len.to_be_bytes());
    plan.cleartext[1] = big;
    let deaf = BadServer::deaf_after_confirm();
    let started = std::time::Instant::now();
    let again = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                client::run_client(
                    &plan,
                    &client::ClientRunOptions {
                        host: "127.0.0.1".into(),
                        port: deaf.port(),
                        exact: true,
                        credentials: None,
                        stage_timeout: Duration::from_secs(2),
                        deadline: Duration::from_secs(30),
                    },
                ),
            )
            .await
        })
        .expect("the relayed replay ends although the server stops reading");
    let took = started.elapsed();
    let sent = again
        .trace
        .stream(rdprobe::trace::Dir::C2S, rdprobe::trace::Layer::Wire)
        .len();
    eprintln!(
        "relay to a server that stops reading: ended after {took:?}, {sent} bytes sent: {}",
        again.report.summary
    );
    assert!(took < Duration::from_secs(8), "ended after {took:?}");
    assert!(
        sent < 60_000,
        "the big PDU did not get through: {sent} bytes"
    );
    assert!(
        again.trace.events.iter().any(|e| matches!(
            &e.kind,
            rdprobe::trace::EventKind::Note(n) if n.contains("the server stopped reading")
        )),
        "the relay says why"
    );
    assert!(
        matches!(
            again.report.verdict,
            Verdict::Failed {
                kind: FailureKind::TimedOut { .. },
                by: Side::Server
            }
        ),
        "{:?}: {}",
        again.report.verdict,
        again.report.summary
    );
}

/// Under standard RDP security at encryption level NONE every client PDU is cleartext: `--exact`
/// resends all of them byte for byte and the server still takes the connection to the end.
#[test]
fn exact_replays_every_standard_rdp_security_pdu() {
    let rt = rt();
    let server = lab(builtin("rdp-security-only").expect("builtin"));
    let mut o = opts(server.addr, &[Protocol::Rdp]);
    o.cookie = Some("bob".into());
    let r = rt.block_on(probe::probe(&o));
    let cap = through_pcapng(&r);
    assert_eq!(
        cap.report.last_stage,
        Stage::Connected,
        "{}",
        cap.report.summary
    );
    let plan = client::derive_client(&cap.trace, &cap.report);
    assert!(
        plan.cleartext.len() >= 8,
        "request, MCS, channels, client info, confirm active, finalization: {}",
        plan.cleartext.len()
    );
    let again = rt.block_on(client::run_client(
        &plan,
        &client::ClientRunOptions {
            host: "127.0.0.1".into(),
            port: server.addr.port(),
            exact: true,
            credentials: Some(creds()),
            stage_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        },
    ));
    use rdprobe::trace::{Dir, Layer};
    assert_eq!(
        again.trace.stream(Dir::C2S, Layer::Wire),
        cap.trace.stream(Dir::C2S, Layer::Wire),
        "every client byte went out as captured"
    );
    let cmp = compare::compare(&cap.report, &again.report);
    assert!(cmp.matched, "{}", compare::render(&cmp));
    server.stop();
}
