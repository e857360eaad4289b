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
