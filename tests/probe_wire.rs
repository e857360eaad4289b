//! The live probe captures its own wire: `probe --pcap` as root writes the packets the kernel sent
//! and received (real SYN options, IP IDs, TTLs, every ACK), `analyze` of that capture gives the
//! live verdicts, the `tcp` stage says `capture: wire` and carries the kernel's TCP_INFO; without
//! the capture permission the probe falls back to the synthetic writer and says so. And the `dns`
//! stage: a name that does not resolve says so; `--all-addresses` probes each address of a name
//! (a name from a network namespace's own hosts file, `ip netns exec` bind-mounts
//! /etc/netns/NAME/hosts over /etc/hosts; the machine's /etc/hosts is not touched).
//!
//! Needs root (packet sockets, namespaces), tshark, iproute2 and util-linux's setpriv
//! (scripts/install-peers.sh); fails with that hint otherwise.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rdprobe");

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (packet sockets, network namespaces): run the suite as root"
    );
}

fn json_docs(out: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(out)
        .into_iter::<serde_json::Value>()
        .map(|v| v.expect("JSON document"))
        .collect()
}

fn stage<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {r}"))
}

fn lab(scenario: &str) -> rdprobe::lab::LabHandle {
    let sc = rdprobe::scenario::builtin(scenario).expect("builtin scenario");
    rdprobe::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), sc).expect("lab")
}

#[test]
fn probe_pcap_is_the_real_wire_and_analyze_agrees_with_live() {
    require_root();
    let lab = lab("healthy-nla");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("wire.pcapng");
    let out = Command::new(BIN)
        .args(["probe", &lab.addr.to_string(), "--json", "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    let live = &json_docs(&out.stdout)[0];
    let tcp = stage(live, "tcp");
    assert_eq!(tcp["facts"]["capture"], "wire", "{live}");
    // The kernel's view of the socket.
    assert!(
        tcp["facts"]["kernel_snd_mss"].as_u64().unwrap() > 0,
        "{tcp}"
    );
    assert!(tcp["facts"]["kernel_rtt_ms"].as_f64().is_some(), "{tcp}");
    // (The count includes the close: a FIN the peer answered with a RST can count as one.)
    assert!(tcp["facts"]["kernel_retransmits"].is_u64(), "{tcp}");
    // TCP evidence from the real packets: loopback, no hop.
    assert_eq!(tcp["facts"]["server_ttl"], 64, "{tcp}");

    // The capture holds raw IP packets (no synthetic Ethernet), starting with the real handshake.
    let rows = tshark_fields(
        &pcap,
        &[],
        &[
            "frame.protocols",
            "tcp.flags.syn",
            "tcp.flags.ack",
            "ip.id",
            "tcp.options.wscale.shift",
            "tcp.options.sack_perm",
            "frame.comment",
            "tcp.dstport",
        ],
    );
    assert!(rows.len() >= 10, "{rows:?}");
    assert!(rows[0][0].starts_with("raw:ip:tcp"), "{rows:?}");
    assert_eq!(
        (rows[0][1].as_str(), rows[0][2].as_str()),
        ("1", "0"),
        "SYN"
    );
    assert_eq!(
        (rows[1][1].as_str(), rows[1][2].as_str()),
        ("1", "1"),
        "SYN-ACK"
    );
    // The kernel's SYN options (window scale, SACK permitted), which the synthetic writer never
    // writes.
    assert!(!rows[0][4].is_empty() && !rows[0][5].is_empty(), "{rows:?}");
    // The client's IP IDs: the kernel's per-connection counter, one up per packet.
    let port = lab.addr.port().to_string();
    let ids: Vec<u16> = rows
        .iter()
        .filter(|r| r[7] == port)
        .take(4)
        .filter_map(|r| u16::from_str_radix(r[3].trim_start_matches("0x"), 16).ok())
        .collect();
    assert_eq!(ids.len(), 4, "{rows:?}");
    assert!(
        ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{ids:?}"
    );
    let comments: String = rows
        .iter()
        .map(|r| r[6].clone())
        .collect::<Vec<_>>()
        .join("\n");
    for want in ["x224: connection request", "tls: client hello", "credssp"] {
        assert!(comments.contains(want), "{want} missing in {comments}");
    }

    // analyze of the probe's capture gives the live verdicts, stage by stage. (Stopped after x224:
    // the probe's FIN leaves first. After a TLS stop its close_notify makes the server close at
    // once, and on the real wire the server's FIN can overtake the client's.)
    let pcap = dir.path().join("x224.pcapng");
    let out = Command::new(BIN)
        .args(["probe", &lab.addr.to_string(), "--json", "--pcap"])
        .arg(&pcap)
        .args(["--stop-after", "x224"])
        .output()
        .unwrap();
    let live = &json_docs(&out.stdout)[0];
    assert_eq!(stage(live, "tcp")["facts"]["capture"], "wire", "{live}");
    let out = Command::new(BIN)
        .args(["analyze", "--json"])
        .arg(&pcap)
        .output()
        .unwrap();
    let offline = &json_docs(&out.stdout)[0];
    assert_eq!(offline["verdict"], live["verdict"], "{offline}\n{live}");
    assert_eq!(offline["last_stage"], live["last_stage"]);
    let verdicts = |r: &serde_json::Value| -> Vec<(String, String)> {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["stage"].as_str().unwrap().to_owned(),
                    s["verdict"]["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(verdicts(offline), verdicts(live));
    assert_eq!(stage(offline, "tcp")["facts"]["server_ttl"], 64);
}

#[test]
fn without_capture_permission_the_pcap_is_synthetic_and_says_so() {
    require_root();
    let lab = lab("healthy-tls");
    // The same binary as an unprivileged user (no CAP_NET_RAW): the packet socket is refused.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
            "probe",
            &lab.addr.to_string(),
            "--json",
            "--stop-after",
            "x224",
        ])
        .output()
        .expect("setpriv (apt-get install util-linux)");
    let docs = json_docs(&out.stdout);
    let r = docs
        .first()
        .unwrap_or_else(|| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(stage(r, "tcp")["facts"]["capture"], "synthetic", "{r}");
    assert_eq!(stage(r, "x224")["verdict"]["status"], "ok", "{r}");
    assert!(
        r["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("CAP_NET_RAW")),
        "the note says why: {r}"
    );
}

#[test]
fn a_name_that_does_not_resolve_fails_at_dns() {
    let out = Command::new(BIN)
        .args(["probe", "nonexistent.invalid", "--json", "--timeout", "5s"])
        .output()
        .unwrap();
    let r = &json_docs(&out.stdout)[0];
    assert_eq!(r["last_stage"], "dns", "{r}");
    assert_eq!(r["stages"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(stage(r, "dns")["facts"]["name"], "nonexistent.invalid");
    let summary = r["summary"].as_str().unwrap();
    assert!(summary.contains("does not resolve"), "{summary}");
    assert!(!r.to_string().contains("0.0.0.0"), "{r}");
    assert_eq!(r["server"], "nonexistent.invalid:3389");
}

/// A network namespace with its own hosts file; removed (with the file) on drop.
struct HostsNs {
    name: String,
    lab: Option<std::process::Child>,
}

impl Drop for HostsNs {
    fn drop(&mut self) {
        if let Some(mut l) = self.lab.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

#[test]
fn all_addresses_probes_every_address_of_a_name() {
    require_root();
    let ns = HostsNs {
        name: format!("rdpdns{}", std::process::id() % 100_000),
        lab: None,
    };
    std::fs::create_dir_all(format!("/etc/netns/{}", ns.name)).unwrap();
    std::fs::write(
        format!("/etc/netns/{}/hosts", ns.name),
        "127.0.0.1 rdp-multi.test\n::1 rdp-multi.test\n",
    )
    .unwrap();
    let ok = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        ok(&["ip", "netns", "add", &ns.name]),
        "cannot create a network namespace: run as root with iproute2 installed"
    );
    assert!(ok(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]));
    let mut ns = ns;
    // One lab on both loopback addresses (a dual-stack listener).
    ns.lab = Some(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, BIN, "lab", "--allow-remote"])
            .args(["--listen", "[::]:3389"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lab"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "probe", "rdp-multi.test"])
        .args(["--all-addresses", "--json", "--stop-after", "x224"])
        .output()
        .unwrap();
    let docs = json_docs(&out.stdout);
    assert_eq!(
        docs.len(),
        2,
        "one report per address: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut tried: Vec<String> = docs
        .iter()
        .map(|r| {
            let d = stage(r, "dns");
            assert_eq!(d["verdict"]["status"], "ok", "{r}");
            assert_eq!(d["facts"]["addresses"].as_array().unwrap().len(), 2, "{r}");
            assert_eq!(stage(r, "x224")["verdict"]["status"], "ok", "{r}");
            d["facts"]["tried"].as_str().unwrap().to_owned()
        })
        .collect();
    tried.sort();
    assert_eq!(tried, vec!["127.0.0.1".to_owned(), "::1".to_owned()]);
    // Without --all-addresses: one report, naming the address it tried.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "probe", "rdp-multi.test"])
        .args(["--json", "--stop-after", "x224"])
        .output()
        .unwrap();
    let docs = json_docs(&out.stdout);
    assert_eq!(docs.len(), 1);
    assert!(stage(&docs[0], "dns")["facts"]["tried"].is_string());
}
