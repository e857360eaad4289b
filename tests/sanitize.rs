//! `rdprobe sanitize`: a probe capture loses its TLS secrets (tshark can no longer decrypt the NTLM
//! exchange), its cookie user name and its cleartext Client Info, and still analyzes.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use rdprobe::probe::{Credentials, ProbeOptions};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

async fn probe_lab(scenario: &str, user: &str, pcap: &Path) {
    let sc = rdprobe::scenario::builtin(scenario).unwrap();
    let (_, password) =
        rdprobe::lab::demo_credentials(&sc).unwrap_or(("user".into(), "pass".into()));
    let lab = rdprobe::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), sc).unwrap();
    let mut o = ProbeOptions::new("127.0.0.1", lab.addr.port());
    o.stage_timeout = Duration::from_secs(3);
    o.credentials = Some(Credentials {
        user: user.into(),
        domain: None,
        password,
    });
    o.cookie = Some(user.into());
    let res = rdprobe::probe::probe(&o).await;
    lab.stop();
    let f = std::fs::File::create(pcap).unwrap();
    rdprobe::capture::writer::write_pcapng(&res.trace, &res.labels, f).unwrap();
}

fn sanitize(input: &Path, output: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .arg("sanitize")
        .arg(input)
        .arg(output)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nla_capture_loses_secrets_and_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, clean) = (
        dir.path().join("orig.pcapng"),
        dir.path().join("clean.pcapng"),
    );
    // The lab's healthy-nla user is `user`; the cookie carries a distinctive name of our own.
    probe_lab("healthy-nla", "user", &orig).await;
    let before = tshark_fields(&orig, &["-Y", "ntlmssp"], &["ntlmssp.messagetype"]);
    assert!(before.len() >= 3, "original decrypts NTLM: {before:?}");
    sanitize(&orig, &clean);
    let after = tshark_fields(&clean, &["-Y", "ntlmssp"], &["ntlmssp.messagetype"]);
    assert!(
        after.is_empty(),
        "sanitized capture must not decrypt: {after:?}"
    );
    let bytes = std::fs::read(&clean).unwrap();
    assert!(!contains(&bytes, b"mstshash=user\r\n"));
    assert!(contains(&bytes, b"mstshash=xxxx\r\n"));
    // Still a capture rdprobe analyzes: same X.224 and TLS facts.
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args(["analyze", "--json"])
        .arg(&clean)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(
        v["stages"][1]["facts"]["selected_protocol"],
        "PROTOCOL_HYBRID_EX"
    );
    assert_eq!(v["stages"][2]["stage"], "tls");
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_rdp_security_client_info_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (orig, clean) = (
        dir.path().join("orig.pcapng"),
        dir.path().join("clean.pcapng"),
    );
    probe_lab("rdp-security-only", "zelda", &orig).await;
    let raw = std::fs::read(&orig).unwrap();
    assert!(
        contains(&raw, &utf16("zelda")),
        "the cleartext Client Info names the user"
    );
    sanitize(&orig, &clean);
    let bytes = std::fs::read(&clean).unwrap();
    assert!(!contains(&bytes, &utf16("zelda")), "Client Info masked");
    assert!(!contains(&bytes, b"zelda"), "cookie masked");
}
