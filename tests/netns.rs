//! Network faults the lab cannot fake from userspace, in network namespaces this test creates.
//!
//! Each test builds a client and a server namespace joined by a veth pair (10.77.0.2 ↔ 10.77.0.1),
//! runs the lab (`rdprobe lab --scenario healthy-tls`) inside the server namespace, and puts an
//! nftables rule in the server namespace that plays a middlebox:
//!
//! * endpoint security: a TLS ClientHello (payload starting 0x16 0x03) is answered with a TCP RST;
//! * a silent firewall: everything after the X.224 exchange (any payload not starting with a TPKT
//!   header 0x03) is dropped;
//! * a lossy link: 30 % of the packets each way are dropped (`numgen random mod 100 < 30`; this
//!   kernel has no `sch_netem`).
//!
//! Then `rdprobe probe --json --pcap` and the real `xfreerdp` run in the client namespace, and the
//! verdicts are asserted; the RST and drop captures replayed as a server reproduce the failure.
//! Traffic stays inside the namespaces (and loopback for the replays). Needs root: without it the
//! test fails with a message saying so.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use rdprobe::capture::reader::ReaderOptions;
use rdprobe::report::ConnectionReport;
use rdprobe::stage::{FailureKind, Side, Stage, Verdict};

const SERVER_IP: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.2";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Self {
        if let Err(e) = ip(&["netns", "add", &name]) {
            panic!(
                "cannot create network namespace {name}: {e}\n\
                 this test needs root (CAP_SYS_ADMIN) and iproute2: run the suite as root (scripts/test.sh does)"
            );
        }
        Netns { name }
    }

    /// `ip netns exec NAME program args…`
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth end inside it (and so its peer).
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A client and a server namespace joined by a veth pair, with the lab running in the server one.
struct Net {
    // INVARIANT: the lab is declared first so it dies before its namespace is deleted.
    _lab: ProcessGuard,
    client: Netns,
    server: Netns,
    dir: tempfile::TempDir,
}

impl Net {
    fn new(scenario: &str) -> Net {
        require_binary("nft", "nftables").expect("nft");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        let client = Netns::new(format!("rdprobe-c-{tag}"));
        let server = Netns::new(format!("rdprobe-s-{tag}"));
        let setup = [
            vec![
                "link",
                "add",
                "c0",
                "netns",
                &client.name,
                "type",
                "veth",
                "peer",
                "name",
                "s0",
                "netns",
                &server.name,
            ],
            vec![
                "-n",
                &client.name,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                "c0",
            ],
            vec![
                "-n",
                &server.name,
                "addr",
                "add",
                "10.77.0.1/24",
                "dev",
                "s0",
            ],
            vec!["-n", &client.name, "link", "set", "c0", "up"],
            vec!["-n", &server.name, "link", "set", "s0", "up"],
            vec!["-n", &client.name, "link", "set", "lo", "up"],
            vec!["-n", &server.name, "link", "set", "lo", "up"],
        ];
        for args in &setup {
            ip(args).unwrap_or_else(|e| panic!("namespace setup: {e}"));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("lab.log")).expect("log");
        let lab = ProcessGuard::spawn(
            "rdprobe lab (netns)",
            server
                .command(env!("CARGO_BIN_EXE_rdprobe"))
                .args([
                    "lab",
                    "--allow-remote",
                    "--listen",
                    &format!("{SERVER_IP}:3389"),
                ])
                .args(["--scenario", scenario])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        )
        .expect("spawn the lab in the server namespace");
        let net = Net {
            _lab: lab,
            client,
            server,
            dir,
        };
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            net.client
                .command("bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{SERVER_IP}/3389")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
        });
        assert!(
            up.is_some(),
            "the lab does not listen in the server namespace: {}",
            std::fs::read_to_string(net.dir.path().join("lab.log")).unwrap_or_default()
        );
        net
    }

    /// Loads an nftables ruleset (`table inet rdprobe { … }`) in the server namespace.
    fn nft(&self, rules: &str) {
        let path = self.dir.path().join("rules.nft");
        std::fs::write(&path, rules).expect("write rules");
        let _ = run(self
            .server
            .command("nft")
            .args(["delete", "table", "inet", "rdprobe"]));
        run(self.server.command("nft").arg("-f").arg(&path))
            .unwrap_or_else(|e| panic!("nft rules:\n{rules}\n{e}"));
    }

    fn nft_counters(&self) -> Vec<u64> {
        let out = run(self
            .server
            .command("nft")
            .args(["list", "table", "inet", "rdprobe"]))
        .unwrap_or_default();
        out.split("packets ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// `rdprobe probe 10.77.0.1 --json --pcap FILE` in the client namespace.
    fn probe(&self, name: &str, extra: &[&str]) -> (ConnectionReport, i32, PathBuf) {
        let pcap = self.dir.path().join(format!("{name}.pcapng"));
        let out = self
            .client
            .command(env!("CARGO_BIN_EXE_rdprobe"))
            .args(["probe", SERVER_IP, "--json", "--pcap"])
            .arg(&pcap)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run rdprobe probe in the client namespace");
        let text = String::from_utf8_lossy(&out.stdout);
        let report: ConnectionReport = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "probe JSON: {e}\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            report.server,
            format!("{SERVER_IP}:3389"),
            "the probe went to the server namespace"
        );
        if report.last_stage == rdprobe::stage::Stage::Tcp && !report.verdict.is_ok() {
            // The connect itself failed (e.g. every SYN lost): no local address was bound.
            assert!(report.client.starts_with("0.0.0.0"), "{}", report.client);
        } else {
            assert!(report.client.starts_with(CLIENT_IP), "{}", report.client);
        }
        (report, out.status.code().unwrap_or(-1), pcap)
    }

    /// The real xfreerdp in the client namespace, killed after `timeout`.
    fn xfreerdp(&self, xvfb: &Xvfb, extra: &[&str], timeout: Duration) -> XfreerdpRun {
        let binary = require_binary("xfreerdp", "freerdp2-x11").expect("xfreerdp");
        let home = tempfile::tempdir().expect("home");
        let out_path = home.path().join("output.log");
        let out = std::fs::File::create(&out_path).expect("log");
        let started = std::time::Instant::now();
        let mut guard = ProcessGuard::spawn(
            "xfreerdp (netns)",
            self.client
                .command(binary)
                .args([
                    &format!("/v:{SERVER_IP}:3389"),
                    "/u:user",
                    "/p:pass",
                    "/cert:ignore",
                    "+auth-only",
                ])
                .args(extra)
                .env("DISPLAY", xvfb.display())
                .env("HOME", home.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out),
        )
        .expect("spawn xfreerdp");
        let status = guard.wait_timeout(timeout);
        let elapsed = started.elapsed();
        guard.kill();
        XfreerdpRun {
            code: status.and_then(|s| s.code()),
            output: std::fs::read_to_string(&out_path).unwrap_or_default(),
            timed_out: status.is_none(),
            elapsed,
        }
    }
}

fn load(pcap: &Path) -> rdprobe::replay::CapturedConnection {
    let f = std::fs::File::open(pcap).expect("open capture");
    let conns = rdprobe::replay::load_capture(std::io::BufReader::new(f), ReaderOptions::default())
        .expect("read capture");
    rdprobe::replay::pick(&conns, None).expect("one").clone()
}

/// Replays `pcap` as a server on loopback and probes it: the report of the replay.
fn replay_and_probe(pcap: &Path, stage_timeout: Duration) -> ConnectionReport {
    let conn = load(pcap);
    let derived = rdprobe::replay::server::derive_server(
        &conn.trace,
        &conn.report,
        &rdprobe::replay::server::ServerOptions::default(),
    )
    .expect("derive");
    let lab = rdprobe::lab::spawn_lab(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        derived.scenario,
    )
    .expect("replay lab");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut o = rdprobe::probe::ProbeOptions::new("127.0.0.1", lab.addr.port());
    o.stage_timeout = stage_timeout;
    o.deadline = Duration::from_secs(20);
    let r = rt.block_on(rdprobe::probe::probe(&o));
    lab.stop();
    r.report
}

const RESET_AT_CLIENT_HELLO: &str = "table inet rdprobe {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 3389 @ih,0,16 0x1603 counter reject with tcp reset
  }
}
";

const DROP_AFTER_X224: &str = "table inet rdprobe {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 3389 @ih,0,8 != 0x03 counter drop
  }
}
";

const LOSS_30: &str = "table inet rdprobe {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 3389 numgen random mod 100 < 30 counter drop
  }
  chain output {
    type filter hook output priority filter; policy accept;
    tcp sport 3389 numgen random mod 100 < 30 counter drop
  }
}
";

#[test]
fn middlebox_reset_at_client_hello() {
    let net = Net::new("healthy-tls");
    // Without the middlebox the lab is healthy.
    let (clean, code, _) = net.probe("clean", &["--timeout", "3s"]);
    assert!(clean.verdict.is_ok(), "{}", clean.summary);
    assert_eq!(code, 0);

    net.nft(RESET_AT_CLIENT_HELLO);
    let (r, code, pcap) = net.probe("reset", &["--timeout", "3s"]);
    assert_eq!(r.last_stage, Stage::Tls, "{}", r.summary);
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Server
            }
        ),
        "{}",
        r.summary
    );
    assert!(
        r.fact(Stage::Tls, "alert").is_none(),
        "a middlebox RST carries no TLS alert"
    );
    assert_eq!(code, rdprobe::report::exit::NETWORK);
    assert!(
        net.nft_counters().first().is_some_and(|n| *n >= 1),
        "the rule matched the ClientHello: {:?}",
        net.nft_counters()
    );
    // analyze of the capture says the same.
    let conn = load(&pcap);
    assert_eq!(conn.report.last_stage, Stage::Tls);
    assert_eq!(conn.report.verdict, r.verdict);

    // The real xfreerdp fails at the TLS connect (143, as against the lab's own reset scenario).
    let xvfb = Xvfb::start().expect("Xvfb (apt-get install xvfb)");
    let x = net.xfreerdp(&xvfb, &[], Duration::from_secs(20));
    assert_eq!(
        x.code,
        Some(143),
        "xfreerdp through the RST middlebox: {}",
        x.output
    );

    // Replaying the capture as a server reproduces a reset at tls, for the probe and for xfreerdp.
    let replayed = replay_and_probe(&pcap, Duration::from_secs(3));
    assert_eq!(replayed.last_stage, Stage::Tls, "{}", replayed.summary);
    assert!(
        matches!(
            replayed.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Server
            }
        ),
        "{}",
        replayed.summary
    );
    let conn = load(&pcap);
    let derived = rdprobe::replay::server::derive_server(
        &conn.trace,
        &conn.report,
        &rdprobe::replay::server::ServerOptions::default(),
    )
    .expect("derive");
    let lab = rdprobe::lab::spawn_lab(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        derived.scenario,
    )
    .expect("replay lab");
    let v = format!("/v:{}", lab.addr);
    let x = xfreerdp_on(
        &xvfb,
        &[&v, "/u:user", "/p:pass", "/cert:ignore", "+auth-only"],
        Duration::from_secs(20),
    )
    .expect("xfreerdp");
    assert_eq!(
        x.code,
        Some(143),
        "xfreerdp against the replay: {}",
        x.output
    );
}

#[test]
fn silent_firewall_after_x224() {
    let net = Net::new("healthy-tls");
    net.nft(DROP_AFTER_X224);
    let (r, code, pcap) = net.probe("drop", &["--timeout", "2s"]);
    assert_eq!(r.last_stage, Stage::Tls, "{}", r.summary);
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::TimedOut {
                    waiting_for: Side::Server,
                    ..
                },
                ..
            }
        ),
        "{}",
        r.summary
    );
    assert_eq!(
        r.fact(Stage::X224, "selected_protocol"),
        Some(&serde_json::json!("PROTOCOL_SSL")),
        "the X.224 exchange went through"
    );
    assert_eq!(code, rdprobe::report::exit::NETWORK);

    // xfreerdp never times out a TLS handshake by itself: it hangs until killed.
    let xvfb = Xvfb::start().expect("Xvfb (apt-get install xvfb)");
    let x = net.xfreerdp(&xvfb, &[], Duration::from_secs(6));
    assert!(
        x.timed_out,
        "xfreerdp behind the silent firewall hangs (exit {:?}): {}",
        x.code, x.output
    );

    // The replay goes silent at the same point.
    let replayed = replay_and_probe(&pcap, Duration::from_secs(2));
    assert_eq!(replayed.last_stage, Stage::Tls, "{}", replayed.summary);
    assert!(
        matches!(
            replayed.verdict,
            Verdict::Failed {
                kind: FailureKind::TimedOut { .. },
                ..
            }
        ),
        "{}",
        replayed.summary
    );
}

#[test]
fn lossy_link_is_classified() {
    let net = Net::new("healthy-tls");
    net.nft(LOSS_30);
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let (r, code, _) = net.probe(
            &format!("loss-{i}"),
            &["--timeout", "4s", "--deadline", "30s"],
        );
        let classified = match &r.verdict {
            Verdict::Ok => true,
            Verdict::Failed { kind, .. } => matches!(
                kind,
                FailureKind::TimedOut { .. }
                    | FailureKind::Reset
                    | FailureKind::Closed { .. }
                    | FailureKind::Unreachable { .. }
            ),
        };
        assert!(
            classified,
            "loss must read as success or a network failure, not {}: {}",
            r.verdict, r.summary
        );
        assert!(
            code == 0 || code == rdprobe::report::exit::NETWORK,
            "exit code {code} for {}",
            r.summary
        );
        outcomes.push(format!("{} at {} (exit {code})", r.verdict, r.last_stage));
    }
    let dropped: u64 = net.nft_counters().iter().sum();
    assert!(dropped > 0, "the loss rule dropped packets");
    let xvfb = Xvfb::start().expect("Xvfb (apt-get install xvfb)");
    let x = net.xfreerdp(&xvfb, &[], Duration::from_secs(30));
    // A lossy link is not a server refusal: no negotiation (133), logon (134) or TLS (143) verdict.
    assert!(
        !matches!(x.code, Some(133) | Some(134)),
        "xfreerdp over the lossy link: {:?} {}",
        x.code,
        x.output
    );
    eprintln!(
        "lossy link: {dropped} packets dropped; probe: {}; xfreerdp: {:?} after {:?}",
        outcomes.join("; "),
        if x.timed_out { None } else { x.code },
        x.elapsed
    );
}
