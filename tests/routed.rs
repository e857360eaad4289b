//! A routed topology of the test's own (client — router — server network namespaces, nftables on the
//! router and on the server host), captured with dumpcap at the client while `rdprobe probe`
//! connects through to the lab: each fault gets the right party from the client's capture.
//!
//! Needs root (namespaces), `ip`, `nft` and `dumpcap` (apt-get install iproute2 nftables
//! tshark); fails with that hint otherwise.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdprobe::capture::reader::{read_conversations, ReaderOptions};
use rdprobe::report::ConnectionReport;
use rdprobe::stage::{FailureKind, Side, Stage, Verdict};

const BIN: &str = env!("CARGO_BIN_EXE_rdprobe");

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nft(ns: &str, rules: &str) {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "nft rules in {ns}: {rules}");
}

/// The three namespaces and the lab; removed on drop.
struct Topo {
    c: String,
    r: String,
    s: String,
    lab: Option<Child>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        if let Some(mut l) = self.lab.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        for n in [&self.c, &self.r, &self.s] {
            sh(&["ip", "netns", "del", n]);
        }
    }
}

/// Topologies made by this test binary so far: tests run in parallel, each with its own namespaces.
static TOPOS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn topo() -> Topo {
    let n = TOPOS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 10;
    let id = (std::process::id() % 100_000) * 10 + n;
    let t = Topo {
        c: format!("rdpc{id}"),
        r: format!("rdpr{id}"),
        s: format!("rdps{id}"),
        lab: None,
    };
    for n in [&t.c, &t.r, &t.s] {
        assert!(
            sh(&["ip", "netns", "add", n]),
            "cannot create network namespaces: run as root with iproute2 installed"
        );
        assert!(sh(&["ip", "-n", n, "link", "set", "lo", "up"]));
    }
    let (c, r, s) = (t.c.as_str(), t.r.as_str(), t.s.as_str());
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "r0", "netns", r,
        ],
        vec![
            "ip", "link", "add", "s0", "netns", s, "type", "veth", "peer", "name", "r1", "netns", r,
        ],
        vec!["ip", "-n", c, "addr", "add", "10.78.1.2/24", "dev", "c0"],
        vec!["ip", "-n", c, "link", "set", "c0", "up"],
        vec!["ip", "-n", c, "route", "add", "default", "via", "10.78.1.1"],
        vec!["ip", "-n", r, "addr", "add", "10.78.1.1/24", "dev", "r0"],
        vec!["ip", "-n", r, "link", "set", "r0", "up"],
        vec!["ip", "-n", r, "addr", "add", "10.78.2.1/24", "dev", "r1"],
        vec!["ip", "-n", r, "link", "set", "r1", "up"],
        vec!["ip", "-n", s, "addr", "add", "10.78.2.2/24", "dev", "s0"],
        vec!["ip", "-n", s, "link", "set", "s0", "up"],
        vec!["ip", "-n", s, "route", "add", "default", "via", "10.78.2.1"],
        vec![
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    ];
    for st in &steps {
        assert!(sh(st), "topology step failed: {st:?}");
    }
    t
}

/// Captures at the client while the probe runs (to TLS), then analyzes the capture.
fn probe_and_analyze(t: &Topo, dir: &std::path::Path, name: &str) -> ConnectionReport {
    let pcap = dir.join(format!("{name}.pcapng"));
    let mut cap = dumpcap(&t.c, "c0", &pcap);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("ip")
        .args(["netns", "exec", &t.c, BIN, "probe", "10.78.2.2"])
        .args(["--stop-after", "tls", "--timeout", "8s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    std::thread::sleep(Duration::from_millis(800));
    cap.kill();
    let f = std::fs::File::open(&pcap).expect("dumpcap wrote no capture (apt-get install tshark)");
    let mut traces: Vec<_> =
        read_conversations(std::io::BufReader::new(f), ReaderOptions::default())
            .expect("capture")
            .filter_map(Result::ok)
            .collect();
    assert_eq!(traces.len(), 1, "{name}: one RDP connection in the capture");
    rdprobe::decode::decode_report(&traces.remove(0))
}

#[test]
fn routed_faults_blame_the_right_party() {
    let mut t = topo();
    let dir = tempfile::tempdir().unwrap();
    t.lab = Some(
        Command::new("ip")
            .args(["netns", "exec", &t.s, BIN, "lab", "--allow-remote"])
            .args(["--listen", "10.78.2.2:3389"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lab"),
    );
    std::thread::sleep(Duration::from_secs(2));

    // Healthy baseline: TLS passes, the server is one hop away.
    let r = probe_and_analyze(&t, dir.path(), "baseline");
    assert!(
        r.stage(Stage::Tls).is_some_and(|s| s.verdict.is_ok()),
        "{}",
        r.summary
    );
    assert_eq!(
        r.fact(Stage::Tcp, "server_hops"),
        Some(&serde_json::json!(1))
    );

    // The router resets the ClientHello in the server's name.
    let rule = |chain: &str, hook: &str, action: &str| {
        format!(
            "table inet rdt {{\n chain {chain} {{\n  type filter hook {hook} priority 0;\n  tcp dport 3389 @ih,0,8 0x16 {action}\n }}\n}}\n"
        )
    };
    nft(&t.r, &rule("f", "forward", "reject with tcp reset"));
    let r = probe_and_analyze(&t, dir.path(), "router_rst");
    assert!(sh(&[
        "ip", "netns", "exec", &t.r, "nft", "delete", "table", "inet", "rdt"
    ]));
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Network
            }
        ),
        "router reset: {:?} {}",
        r.verdict,
        r.summary
    );
    assert_eq!(
        r.fact(Stage::Tls, "reset_provenance"),
        Some(&serde_json::json!("injected"))
    );

    // The server host's own firewall resets it.
    nft(&t.s, &rule("i", "input", "reject with tcp reset"));
    let r = probe_and_analyze(&t, dir.path(), "server_rst");
    assert!(sh(&[
        "ip", "netns", "exec", &t.s, "nft", "delete", "table", "inet", "rdt"
    ]));
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Server
            }
        ),
        "server reset: {:?} {}",
        r.verdict,
        r.summary
    );
    assert_eq!(
        r.fact(Stage::Tls, "reset_provenance"),
        Some(&serde_json::json!("host"))
    );

    // The router silently drops the ClientHello.
    nft(&t.r, &rule("f", "forward", "drop"));
    let r = probe_and_analyze(&t, dir.path(), "drop");
    assert!(
        matches!(
            &r.verdict,
            Verdict::Failed { kind: FailureKind::Dropped { retransmissions, .. }, by: Side::Network }
                if *retransmissions >= 2
        ),
        "silent drop: {:?} {}",
        r.verdict,
        r.summary
    );
    assert!(
        r.summary.contains("ClientHello retransmitted"),
        "{}",
        r.summary
    );
}

// ---------------------------------------------------------------------------------------------
// Both vantage points: dumpcap at the client's end (c0) and at the server's end (s0) for every
// case, xfreerdp and `rdprobe probe` as the clients; each capture is analyzed alone and the two are
// correlated (`rdprobe::correlate`, and the `correlate` command once).

mod common;

use rdprobe::correlate::{correlate, read_flows, CaptureFlows, Correlation, FindingKind};
use rdprobe::trace::Dir;

/// [`topo`] (names of its own, so it runs beside the other tests) with the offloads off.
fn topo_unoffloaded() -> Topo {
    let t = topo();
    let (c, r, s) = (t.c.as_str(), t.r.as_str(), t.s.as_str());
    // Segments as the wire carries them at both ends (no offloaded super-segments in the captures).
    if common::process::find_binary("ethtool").is_some() {
        for (n, dev) in [(c, "c0"), (r, "r0"), (r, "r1"), (s, "s0")] {
            sh(&[
                "ip", "netns", "exec", n, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro",
                "off",
            ]);
        }
    }
    t
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Probe,
    Xfreerdp,
}

struct Twin {
    client: std::path::PathBuf,
    server: std::path::PathBuf,
}

/// dumpcap in namespace `ns` on `dev`, writing `out`. Stopped with `kill()` (or on drop): SIGTERM
/// first, so that it writes out the packets it still holds (SIGKILL can lose the end of the
/// capture), SIGKILL after a grace period.
fn dumpcap(ns: &str, dev: &str, out: &std::path::Path) -> common::ProcessGuard {
    common::ProcessGuard::spawn(
        "dumpcap",
        Command::new("ip")
            .args(["netns", "exec", ns, "dumpcap", "-q", "-i", dev, "-w"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("dumpcap (apt-get install tshark)")
}

/// Captures at both ends while `client` connects once through the router.
fn connect_captured(
    t: &Topo,
    dir: &std::path::Path,
    name: &str,
    client: Client,
    xvfb: &common::shadow::Xvfb,
) -> Twin {
    let tw = Twin {
        client: dir.join(format!("{name}-{client:?}-client.pcapng")),
        server: dir.join(format!("{name}-{client:?}-server.pcapng")),
    };
    let mut caps = [
        dumpcap(&t.c, "c0", &tw.client),
        dumpcap(&t.s, "s0", &tw.server),
    ];
    std::thread::sleep(Duration::from_millis(1500));
    match client {
        Client::Probe => {
            let _ = Command::new("ip")
                .args(["netns", "exec", &t.c, BIN, "probe", "10.78.2.2"])
                .args(["--timeout", "4s", "--deadline", "12s"])
                // The Ethernet MSS, forced: one connection, as a client without the probe's
                // path-MTU search makes it (that search has its own test below).
                .args(["--mss", "1460"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Client::Xfreerdp => {
            let home = tempfile::tempdir().unwrap();
            let mut x = Command::new("ip")
                .args(["netns", "exec", &t.c, "xfreerdp", "/v:10.78.2.2:3389"])
                .args([
                    "/cert:ignore",
                    "/sec:tls",
                    "+auth-only",
                    "/u:nobody",
                    "/p:x",
                ])
                .env("DISPLAY", xvfb.display())
                .env("HOME", home.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("xfreerdp (apt-get install freerdp2-x11)");
            let until = std::time::Instant::now() + Duration::from_secs(6);
            while std::time::Instant::now() < until {
                if x.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = x.kill();
            let _ = x.wait();
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    for c in &mut caps {
        c.kill();
    }
    tw
}

/// What `analyze` says of the capture's first RDP connection whose SYN it holds (a capture may
/// also hold the tail of an earlier case's connection, and xfreerdp may try again).
fn alone(path: &std::path::Path) -> ConnectionReport {
    let f = std::fs::File::open(path).expect("dumpcap wrote no capture (apt-get install tshark)");
    let trace = read_conversations(std::io::BufReader::new(f), ReaderOptions::default())
        .expect("capture")
        .filter_map(Result::ok)
        .filter(|t| t.connect_start_us.is_some())
        // Conversations come out as they end: the earliest SYN is the case's first connection
        // (the probe's MSS search adds later ones that may end first).
        .min_by_key(|t| t.connect_start_us)
        .unwrap_or_else(|| panic!("{}: no RDP connection from its SYN", path.display()));
    rdprobe::decode::decode_report(&trace)
}

fn correlated(tw: &Twin) -> Correlation {
    let caps: Vec<CaptureFlows> = [&tw.server, &tw.client]
        .iter()
        .map(|p| {
            let (flows, _) = read_flows(std::fs::File::open(p).unwrap()).expect("capture");
            CaptureFlows {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                flows,
                flows_not_kept: 0,
            }
        })
        .collect();
    correlate(&caps)
}

/// `table inet rdt { chain X { type filter hook H priority 0; RULES… } }`, one rule a line.
fn rules(ns: &str, chain: &str, hook: &str, body: &[&str]) {
    nft(
        ns,
        &format!(
            "table inet rdt {{\n chain {chain} {{\n  type filter hook {hook} priority 0;\n  {}\n }}\n}}\n",
            body.join("\n  ")
        ),
    );
}

fn clear(ns: &str) {
    sh(&["ip", "netns", "exec", ns, "nft", "flush", "ruleset"]);
}

/// What a case does to the topology before the client connects.
type Setup = Box<dyn Fn(&Topo)>;

#[test]
fn routed_both_ends_correlate() {
    let mut t = topo_unoffloaded();
    let dir = tempfile::tempdir().unwrap();
    let xvfb = common::shadow::Xvfb::start().expect("Xvfb (apt-get install xvfb)");
    t.lab = Some(
        Command::new("ip")
            .args(["netns", "exec", &t.s, BIN, "lab", "--allow-remote"])
            .args(["--listen", "10.78.2.2:3389"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lab"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let hello = "tcp dport 3389 @ih,0,8 0x16";
    let cases: Vec<(&str, Setup)> = vec![
        ("baseline", Box::new(|_| {})),
        (
            "router_rst",
            Box::new(move |t| {
                rules(
                    &t.r,
                    "f",
                    "forward",
                    &[&format!("{hello} reject with tcp reset")],
                )
            }),
        ),
        (
            "router_rst_both",
            // The ClientHello passes and marks the connection; the server's answer is reset toward
            // the server (in the client's name); the client's next packet toward the client.
            Box::new(move |t| {
                rules(
                    &t.r,
                    "f",
                    "forward",
                    &[
                        &format!("ct mark 0 {hello} ct mark set 1 accept"),
                        "tcp sport 3389 ct mark 1 ct mark set 2 reject with tcp reset",
                        "tcp dport 3389 ct mark 2 reject with tcp reset",
                    ],
                )
            }),
        ),
        (
            "server_rst",
            Box::new(move |t| {
                rules(
                    &t.s,
                    "i",
                    "input",
                    &[&format!("{hello} reject with tcp reset")],
                )
            }),
        ),
        (
            "drop",
            Box::new(move |t| rules(&t.r, "f", "forward", &[&format!("{hello} drop")])),
        ),
        (
            "mtu",
            // The router's link toward the client is narrow and its "fragmentation needed" never
            // leaves it.
            Box::new(|t| {
                assert!(sh(&["ip", "-n", &t.r, "link", "set", "r0", "mtu", "1000"]));
                rules(
                    &t.r,
                    "o",
                    "output",
                    &["icmp type destination-unreachable icmp code frag-needed drop"],
                );
            }),
        ),
        (
            "loss",
            // The router loses every fourth packet it forwards toward the server: client-to-server
            // only. (nftables' counter rather than tc netem: deterministic, and kernels without
            // sch_netem have it.)
            Box::new(|t| {
                rules(
                    &t.r,
                    "f",
                    "forward",
                    &["tcp dport 3389 numgen inc mod 4 0 drop"],
                );
            }),
        ),
    ];
    for (name, setup) in &cases {
        for client in [Client::Probe, Client::Xfreerdp] {
            setup(&t);
            let tw = connect_captured(&t, dir.path(), name, client, &xvfb);
            clear(&t.r);
            clear(&t.s);
            sh(&["ip", "-n", &t.r, "link", "set", "r0", "mtu", "1500"]);
            let (rc, rs) = (alone(&tw.client), alone(&tw.server));
            let c = correlated(&tw);
            let ctx = format!(
                "{name} {client:?}\nclient alone: {:?} {}\nserver alone: {:?} {}\n{}",
                rc.verdict,
                rc.summary,
                rs.verdict,
                rs.summary,
                c.render(40)
            );
            // The case's connection: the first both captures hold from its SYN.
            let k = c
                .connections
                .iter()
                .find(|k| k.views.len() == 2 && k.matched_by.iter().any(|m| m == "client_isn"))
                .unwrap_or_else(|| panic!("no connection in both captures: {ctx}"));
            assert!(
                k.views[0].name.ends_with("-client.pcapng")
                    && k.views[1].name.ends_with("-server.pcapng"),
                "views ordered client end first: {ctx}"
            );
            assert_eq!(k.views[0].client, k.views[1].client, "{ctx}");
            let kinds: Vec<(FindingKind, Dir)> =
                k.findings.iter().map(|f| (f.kind, f.dir)).collect();
            for f in &k.findings {
                assert_eq!(f.party, "network", "{ctx}");
                assert!(
                    f.hop.contains("(client side) and ") && f.hop.contains("(server side)"),
                    "{ctx}"
                );
            }
            let by = |r: &ConnectionReport| match &r.verdict {
                Verdict::Failed { by, .. } => Some(*by),
                _ => None,
            };
            match *name {
                "baseline" => {
                    assert!(kinds.is_empty(), "{ctx}");
                    assert!(k.verdict.contains("nothing was lost"), "{ctx}");
                    for r in [&rc, &rs] {
                        assert!(
                            r.stage(Stage::Tls).is_some_and(|s| s.verdict.is_ok()),
                            "{ctx}"
                        );
                        assert_ne!(by(r), Some(Side::Network), "{ctx}");
                    }
                }
                "router_rst" => {
                    assert_eq!(
                        kinds.first(),
                        Some(&(FindingKind::InjectedReset, Dir::S2C)),
                        "{ctx}"
                    );
                    assert!(k.findings[0].what.contains("toward the client"), "{ctx}");
                    assert!(kinds.contains(&(FindingKind::Dropped, Dir::C2S)), "{ctx}");
                    assert_eq!(by(&rc), Some(Side::Network), "{ctx}");
                    // The server's end saw nothing fail: it is not blamed.
                    assert_eq!(by(&rs), Some(Side::Network), "{ctx}");
                }
                "router_rst_both" => {
                    assert!(
                        kinds.contains(&(FindingKind::InjectedReset, Dir::S2C)),
                        "{ctx}"
                    );
                    assert!(
                        kinds.contains(&(FindingKind::InjectedReset, Dir::C2S)),
                        "{ctx}"
                    );
                    assert!(
                        k.findings
                            .iter()
                            .any(|f| f.what.contains("toward the server")),
                        "{ctx}"
                    );
                    for r in [&rc, &rs] {
                        assert!(
                            matches!(
                                r.verdict,
                                Verdict::Failed {
                                    kind: FailureKind::Reset,
                                    by: Side::Network
                                }
                            ),
                            "{ctx}"
                        );
                    }
                }
                "server_rst" => {
                    assert!(kinds.is_empty(), "{ctx}");
                    assert!(k.verdict.contains("the server's reset too"), "{ctx}");
                    for r in [&rc, &rs] {
                        assert!(
                            matches!(
                                r.verdict,
                                Verdict::Failed {
                                    kind: FailureKind::Reset,
                                    by: Side::Server
                                }
                            ),
                            "{ctx}"
                        );
                    }
                }
                "drop" => {
                    assert_eq!(
                        kinds.first(),
                        Some(&(FindingKind::Dropped, Dir::C2S)),
                        "{ctx}"
                    );
                    assert!(k.findings[0].what.contains("ClientHello"), "{ctx}");
                    assert!(k.findings[0].packets >= 2, "{ctx}");
                    assert!(
                        matches!(
                            rc.verdict,
                            Verdict::Failed {
                                kind: FailureKind::Dropped { .. },
                                by: Side::Network
                            }
                        ),
                        "{ctx}"
                    );
                    assert_eq!(by(&rs), Some(Side::Network), "{ctx}");
                }
                "mtu" => {
                    assert_eq!(
                        kinds.first(),
                        Some(&(FindingKind::MtuBlackHole, Dir::S2C)),
                        "{ctx}"
                    );
                    assert!(k.findings[0].what.contains("arrived only in part"), "{ctx}");
                    assert!(k.findings[0].packets >= 2, "{ctx}");
                    // Alone, the client's end sees the hole in the server's stream: its small
                    // segments arrived, a larger one never did (the server's later ACK carries a
                    // sequence number past it) and the client never acknowledged it.
                    assert!(
                        matches!(
                            &rc.verdict,
                            Verdict::Failed {
                                kind: FailureKind::Dropped {
                                    never_arrived: true,
                                    mtu_black_hole: true,
                                    ..
                                },
                                by: Side::Network
                            }
                        ),
                        "{ctx}"
                    );
                    assert!(rc.summary.contains("path-MTU black hole"), "{ctx}");
                    // Alone, the server's end sees its flight retransmitted and never acknowledged.
                    assert!(
                        matches!(
                            rs.verdict,
                            Verdict::Failed {
                                kind: FailureKind::Dropped { .. },
                                by: Side::Network
                            }
                        ),
                        "{ctx}"
                    );
                }
                "loss" => {
                    // Client-to-server loss is the finding; the server's direction lost nothing on
                    // the router (a FIN at the very end may still differ between the captures).
                    let lost = |d: Dir| {
                        k.findings
                            .iter()
                            .filter(|f| f.kind == FindingKind::Loss && f.dir == d)
                            .map(|f| f.packets)
                            .sum::<u64>()
                    };
                    assert_eq!(kinds.first(), Some(&(FindingKind::Loss, Dir::C2S)), "{ctx}");
                    assert!(
                        lost(Dir::C2S) > lost(Dir::S2C) && lost(Dir::S2C) <= 1,
                        "{ctx}"
                    );
                    assert!(
                        kinds.iter().all(|(kd, _)| *kd == FindingKind::Loss),
                        "{ctx}"
                    );
                    assert!(k.findings[0].what.contains("client-to-server"), "{ctx}");
                    // Alone, the client's end shows the retransmissions (or SYN retries) it needed.
                    let tcp = rc.tcp.as_ref().expect("tcp evidence");
                    assert!(
                        tcp.c2s.retransmissions + u64::from(tcp.c2s.syn_retries) > 0,
                        "{ctx}"
                    );
                }
                _ => unreachable!(),
            }
        }
    }

    // The command: the table names the hop and the exit code says the network is to blame.
    let out = Command::new(BIN)
        .arg("correlate")
        .arg(dir.path().join("router_rst_both-Probe-server.pcapng"))
        .arg(dir.path().join("router_rst_both-Probe-client.pcapng"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("injected by a device in the path, toward the server"),
        "{text}"
    );
    assert!(
        text.contains("alone: failed at tls: reset by peer"),
        "{text}"
    );
    // The page: the captures as lanes, the lost flight crossed out between them, the router's
    // reset starting between them; self-contained, rendered by a real browser.
    for (twin, mark) in [
        ("mtu-Probe", "kpkt lost"),
        ("router_rst_both-Probe", "kpkt appeared"),
    ] {
        let page = dir.path().join(format!("{twin}.html"));
        let out = Command::new(BIN)
            .args(["correlate", "--html"])
            .arg(&page)
            .arg(dir.path().join(format!("{twin}-client.pcapng")))
            .arg(dir.path().join(format!("{twin}-server.pcapng")))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{twin}");
        let html = std::fs::read_to_string(&page).expect("page written");
        common::browser::assert_self_contained(&html, twin);
        let r = common::browser::render(&page, dir.path());
        let svg = common::browser::svg_of(&r.dom, "correlate");
        assert_eq!(
            svg.matches("class=\"lane\"").count(),
            2,
            "{twin}: two lanes"
        );
        // (The probe's MSS search makes several connections: the mark is on one of them.)
        assert!(r.dom.contains(mark), "{twin}: no `{mark}` row: {}", r.dom);
        assert!(
            r.dom.contains("client side") && r.dom.contains("server side"),
            "{twin}"
        );
        assert!(r.dom.contains("alone"), "{twin}");
        assert!(
            r.urls
                .iter()
                .all(|u| u.starts_with("file:") || common::browser::browser_own(u)),
            "{twin}: the page fetched {:?}",
            r.urls
        );
        let (colours, inked) = common::browser::pixel_variety(&r.png);
        assert!(
            colours > 30 && inked > 0.02,
            "{twin}: {colours} colours, {inked} ink"
        );
    }
    let html = std::fs::read_to_string(dir.path().join("mtu-Probe.html")).unwrap();
    assert!(
        html.contains("path-MTU black hole"),
        "the finding is on the page"
    );
    assert!(
        html.contains("class=\"cross\""),
        "the lost flight is crossed out"
    );

    let out = Command::new(BIN)
        .args(["correlate", "--json"])
        .arg(dir.path().join("baseline-Xfreerdp-client.pcapng"))
        .arg(dir.path().join("baseline-Xfreerdp-server.pcapng"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["connections"][0]["views"][0]["vantage"], "client");
    assert_eq!(j["connections"][0]["views"][1]["vantage"], "server");
}

/// nftables rule set for `ns`'s `hook`: the ClientHello (TLS handshake record) to port 3389 gets
/// `action`.
fn client_hello_rule(hook: &str, action: &str) -> String {
    format!(
        "table inet rdw {{\n chain c {{\n  type filter hook {hook} priority 0;\n  tcp dport 3389 @ih,0,8 0x16 {action}\n }}\n}}\n"
    )
}

/// The lab in the server namespace, listening on the routed address.
fn start_lab(t: &mut Topo) {
    t.lab = Some(
        Command::new("ip")
            .args(["netns", "exec", &t.s, BIN, "lab", "--allow-remote"])
            .args(["--listen", "10.78.2.2:3389"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lab"),
    );
    std::thread::sleep(Duration::from_secs(2));
}

/// `rdprobe probe --json --pcap` in the client namespace; the JSON report and the capture's one
/// conversation.
fn probe_own_pcap(
    t: &Topo,
    pcap: &std::path::Path,
    extra: &[&str],
) -> (serde_json::Value, rdprobe::trace::Trace) {
    let out = Command::new("ip")
        .args(["netns", "exec", &t.c, BIN, "probe", "10.78.2.2", "--json"])
        .args(extra)
        .arg("--pcap")
        .arg(pcap)
        .stderr(Stdio::null())
        .output()
        .expect("probe");
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    let f = std::fs::File::open(pcap).expect("the probe wrote its capture");
    let mut traces: Vec<_> =
        read_conversations(std::io::BufReader::new(f), ReaderOptions::default())
            .expect("capture")
            .filter_map(Result::ok)
            .collect();
    assert_eq!(traces.len(), 1, "one connection in the probe's capture");
    (live, traces.remove(0))
}

/// The probe's own capture is the wire: the router's RST carries the router's TTL (no hop down)
/// while the server's packets arrive one hop down, and the live verdict, read from those packets,
/// blames the network.
#[test]
fn routed_probe_own_capture_shows_the_router_reset() {
    use rdprobe::evidence::Provenance;
    use rdprobe::trace::Dir;
    let mut t = topo();
    start_lab(&mut t);
    let dir = tempfile::tempdir().unwrap();
    nft(&t.r, &client_hello_rule("forward", "reject with tcp reset"));
    let (live, trace) = probe_own_pcap(
        &t,
        &dir.path().join("own.pcapng"),
        &["--stop-after", "tls", "--timeout", "8s"],
    );
    let tcp = live["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "tcp")
        .unwrap();
    assert_eq!(tcp["facts"]["capture"], "wire", "{live}");
    assert_eq!(live["verdict"]["kind"], "reset", "{live}");
    assert_eq!(live["verdict"]["by"], "network", "{live}");
    let ev = trace.tcp.as_deref().expect("TCP evidence from the wire");
    // The server's SYN-ACK crossed the router: TTL 63, one hop.
    assert_eq!(ev.s2c.ttl_min, Some(63), "{ev:?}");
    let rst = ev
        .first_rst(Dir::S2C)
        .expect("the RST in the probe's capture");
    assert_eq!(rst.ttl, 64, "the router's own TTL: {rst:?}");
    assert_eq!(rst.provenance, Provenance::Injected, "{rst:?}");
    // The same capture analyzed offline gives the live verdict.
    let offline = rdprobe::decode::decode_report(&trace);
    assert!(
        matches!(
            offline.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Network
            }
        ),
        "{}",
        offline.summary
    );
}

/// A path-MTU black hole live: the router's link toward the client is narrow (MTU 900) and the
/// router's ICMP "fragmentation needed" is filtered, so the server's full-size TLS flight never
/// arrives while small segments pass. The probe, seeing the stall after the server acknowledged
/// everything it sent, retries with clamped MSS values and reports the largest that passes;
/// `--mss` forces a size.
#[test]
fn routed_mtu_black_hole_live_finds_the_passing_mss() {
    let mut t = topo();
    start_lab(&mut t);
    let dir = tempfile::tempdir().unwrap();
    assert!(sh(&["ip", "-n", &t.r, "link", "set", "r0", "mtu", "900"]));
    nft(
        &t.r,
        "table inet rdm {\n chain o {\n  type filter hook output priority 0;\n  icmp type destination-unreachable drop\n }\n}\n",
    );
    let tcp_facts = |r: &serde_json::Value| {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "tcp")
            .map(|s| s["facts"].clone())
            .unwrap()
    };
    let tls_status = |r: &serde_json::Value| {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "tls")
            .map(|s| s["verdict"]["status"].clone())
            .unwrap_or_default()
    };
    let (live, _) = probe_own_pcap(
        &t,
        &dir.path().join("mtu.pcapng"),
        &["--stop-after", "tls", "--timeout", "3s"],
    );
    let f = tcp_facts(&live);
    assert_eq!(f["mtu_black_hole"], true, "{live}");
    assert_eq!(live["diagnosis"]["fault_class"], "network", "{live}");
    assert_eq!(
        live["diagnosis"]["causes"][0]["id"], "mtu_black_hole",
        "{live}"
    );
    // 900-byte packets carry MSS 860 (40 bytes of IP and TCP headers; the 12 of timestamps are
    // inside the MSS).
    let passing = f["mss_largest_passing"].as_u64().unwrap();
    assert!((536..=860).contains(&passing), "{f}");
    assert!(
        f["mss_stalled"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_u64().unwrap() > 860),
        "{f}"
    );
    assert_eq!(live["exit_code"], 0, "{live}");
    assert_eq!(tls_status(&live), "ok", "{live}");
    assert!(
        live["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("path-MTU black hole")),
        "{live}"
    );

    // Forced sizes: one that fits passes at once, one that does not stalls (no search when forced).
    let (live, _) = probe_own_pcap(
        &t,
        &dir.path().join("mss600.pcapng"),
        &["--stop-after", "tls", "--timeout", "3s", "--mss", "600"],
    );
    assert_eq!(live["exit_code"], 0, "{live}");
    assert_eq!(tls_status(&live), "ok", "{live}");
    assert_eq!(tcp_facts(&live)["mss_clamped"], 600);
    let (live, _) = probe_own_pcap(
        &t,
        &dir.path().join("mss1400.pcapng"),
        &["--stop-after", "tls", "--timeout", "3s", "--mss", "1400"],
    );
    assert_eq!(live["verdict"]["kind"], "timed_out", "{live}");
    assert_eq!(live["last_stage"], "tls", "{live}");
    assert!(tcp_facts(&live).get("mtu_black_hole").is_none(), "{live}");
}

/// The `tcp` stage of the live probe measures the real connect: the router drops the first SYN, the
/// kernel retries it a second later, and the probe's own capture and report show the retry and its
/// time.
#[test]
fn routed_probe_measures_syn_retries() {
    let mut t = topo();
    start_lab(&mut t);
    let dir = tempfile::tempdir().unwrap();
    nft(
        &t.r,
        "table inet rds {\n chain f {\n  type filter hook forward priority 0;\n  tcp dport 3389 tcp flags & (syn|ack) == syn numgen inc mod 2 == 0 drop\n }\n}\n",
    );
    let (live, trace) = probe_own_pcap(
        &t,
        &dir.path().join("syn.pcapng"),
        &["--stop-after", "x224", "--timeout", "5s"],
    );
    let tcp = live["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "tcp")
        .unwrap();
    assert_eq!(tcp["facts"]["syn_retries"], 1, "{live}");
    assert!(
        tcp["facts"]["connect_ms"].as_f64().unwrap() >= 900.0,
        "the connect took the SYN retry's second: {tcp}"
    );
    assert!(tcp["duration_ms"].as_f64().unwrap() >= 900.0, "{tcp}");
    assert_eq!(live["exit_code"], 0, "{live}");
    let ev = trace.tcp.as_deref().expect("evidence");
    assert_eq!(ev.c2s.syn_retries, 1, "{ev:?}");
}
