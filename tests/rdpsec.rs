//! Issue 7 proof: standard RDP security all the way. xrdp with `security_layer=rdp` at
//! `crypt_level=high` (128-bit RC4) and `crypt_level=fips` (3DES / HMAC-SHA1) reaches `connected`
//! with the probe, through the security exchange, the encrypted Client Info PDU, licensing and
//! capabilities; the live verdict equals decode of the trace.

mod common;

use std::time::Duration;

use common::*;
use rdprobe::probe::{self, Credentials, ProbeOptions, Protocol};
use rdprobe::report::ConnectionReport;
use rdprobe::stage::{Stage, Verdict};

fn opts(port: u16) -> ProbeOptions {
    let mut o = ProbeOptions::new("127.0.0.1", port);
    o.stage_timeout = Duration::from_secs(5);
    o.deadline = Duration::from_secs(30);
    o
}

fn text(r: &ConnectionReport) -> String {
    rdprobe::report::render_text(r)
}

fn assert_connected(r: &ConnectionReport) {
    assert!(
        r.verdict.is_ok() && r.last_stage == Stage::Connected,
        "expected connected:\n{}",
        text(r)
    );
    for s in &r.stages {
        assert!(s.verdict.is_ok(), "stage {} not ok:\n{}", s.stage, text(r));
    }
}

fn rdpsec_note(r: &ConnectionReport) -> &str {
    r.notes
        .iter()
        .find(|n| n.starts_with("standard RDP security:"))
        .unwrap_or_else(|| panic!("no standard RDP security note:\n{}", text(r)))
}

async fn walk(level: &'static str, protocols: Vec<Protocol>, creds: bool) -> ConnectionReport {
    let xrdp = Xrdp::start(XrdpOpts::rdp(level)).expect("start xrdp (apt-get install xrdp)");
    let mut o = opts(xrdp.port());
    o.protocols = protocols;
    if creds {
        o.credentials = Some(Credentials {
            user: "alice".into(),
            domain: None,
            password: "not-a-real-password".into(),
        });
    }
    let res = probe::probe(&o).await;
    // INVARIANT held by the probe: the live verdict is decode of the recorded trace.
    let again = rdprobe::decode::decode(&res.trace).report;
    assert_eq!(again.verdict, res.report.verdict);
    assert_eq!(again.last_stage, res.report.last_stage);
    res.report
}

#[tokio::test(flavor = "multi_thread")]
async fn xrdp_rdp_high_reaches_connected_with_rc4_128() {
    let r = walk("high", vec![Protocol::Rdp], false).await;
    eprintln!("{}", text(&r));
    assert_connected(&r);
    assert_eq!(
        r.fact(Stage::X224, "selected_protocol"),
        Some(&serde_json::json!("PROTOCOL_RDP")),
        "{}",
        text(&r)
    );
    assert_eq!(
        r.fact(Stage::Mcs, "encryption_method"),
        Some(&serde_json::json!("128bit"))
    );
    assert_eq!(
        r.fact(Stage::Mcs, "encryption_level"),
        Some(&serde_json::json!("high"))
    );
    let note = rdpsec_note(&r);
    assert!(note.contains("128bit encryption at level high"), "{note}");
    assert!(!note.contains("failed the signature check"), "{note}");
    assert!(note.contains("licensing: valid client"), "{note}");
    // The security exchange and the encrypted Client Info PDU are on the wire and named.
    let sec = r
        .stage(Stage::Security)
        .unwrap_or_else(|| panic!("{}", text(&r)));
    let pdus = sec
        .facts
        .get("pdus")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(pdus.contains("security exchange"), "{pdus}");
    assert!(pdus.contains("client info"), "{pdus}");
}

#[tokio::test(flavor = "multi_thread")]
async fn xrdp_rdp_fips_reaches_connected_with_3des() {
    let r = walk("fips", vec![Protocol::Rdp], true).await;
    eprintln!("{}", text(&r));
    assert_connected(&r);
    assert_eq!(
        r.fact(Stage::Mcs, "encryption_method"),
        Some(&serde_json::json!("fips"))
    );
    assert_eq!(
        r.fact(Stage::Mcs, "encryption_level"),
        Some(&serde_json::json!("fips"))
    );
    let note = rdpsec_note(&r);
    assert!(note.contains("fips encryption at level fips"), "{note}");
    assert!(!note.contains("failed the signature check"), "{note}");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_probe_follows_the_server_to_rdp_security_and_connects() {
    // Offering TLS/NLA, the probe reconnects with PROTOCOL_RDP like mstsc and walks to connected.
    let r = walk("high", Vec::new(), false).await;
    assert_connected(&r);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("reconnected offering PROTOCOL_RDP")),
        "{}",
        text(&r)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_after_security_stops_there() {
    let xrdp = Xrdp::start(XrdpOpts::rdp("high")).expect("start xrdp");
    for stop in [
        Stage::Mcs,
        Stage::Channels,
        Stage::Security,
        Stage::Licensing,
    ] {
        let mut o = opts(xrdp.port());
        o.protocols = vec![Protocol::Rdp];
        o.stop_after = Some(stop);
        let r = probe::probe(&o).await.report;
        assert!(
            matches!(
                &r.verdict,
                Verdict::Failed {
                    kind: rdprobe::stage::FailureKind::Stopped,
                    ..
                }
            ),
            "stop after {stop}:\n{}",
            text(&r)
        );
        assert!(r.stage(Stage::Connected).is_none(), "{}", text(&r));
    }
}

/// A hostile server that selects standard RDP security and sends a proprietary certificate with an
/// impossible RSA key (an all-zero modulus divided by zero in the exponentiation and made the probe
/// exit 101 with no capture or JSON): every such key is a verdict, with the capture written.
#[test]
fn hostile_rsa_keys_are_verdicts_not_panics() {
    let odd = |n: usize| {
        let mut m = vec![0xC3u8; n];
        m[0] |= 1;
        m
    };
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("zero modulus", vec![0; 64], 65537),
        ("modulus under 512 bits", odd(8), 65537),
        ("even modulus", vec![0xC2; 64], 65537),
        ("public exponent below 3 or even", odd(64), 0),
    ];
    for (why, modulus, exponent) in cases {
        let server = BadServer::rdp_security_key(modulus, exponent);
        let dir = tempfile::tempdir().expect("tempdir");
        let pcap = dir.path().join("hostile.pcapng");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .args(["probe", &server.target(), "--security", "rdp", "--json"])
            .args(["--timeout", "3s", "--pcap", pcap.to_str().unwrap()])
            .output()
            .expect("run rdprobe");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{why}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{why}: {stderr}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{why}: no JSON ({e}): {stderr}"));
        assert_eq!(r["verdict"]["status"], "failed", "{why}: {r}");
        // The server's fault, not a stop by request: a protocol error at mcs, exit code 7.
        assert_eq!(r["verdict"]["kind"], "protocol_error", "{why}: {r}");
        assert_eq!(r["last_stage"], "mcs", "{why}: {r}");
        assert_eq!(out.status.code(), Some(7), "{why}: {r}");
        let text = r.to_string();
        assert!(
            text.contains(why),
            "{why}: the verdict does not say why: {r}"
        );
        let analyzed = std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .args(["analyze", pcap.to_str().unwrap(), "--json"])
            .output()
            .expect("analyze");
        let line = String::from_utf8_lossy(&analyzed.stdout);
        let again: serde_json::Value =
            serde_json::from_str(line.lines().next().expect("a connection")).expect("json");
        assert_eq!(
            again["last_stage"], r["last_stage"],
            "{why}: live != offline"
        );
    }
}
