//! Issue 3 proof, the capture: probe captures open in tshark, which dissects X.224, the TLS handshake
//! and — with only the secrets embedded in the pcapng — CredSSP/NTLM; the stage comments are present.
//! Also the CLI end to end: --pcap, --keylog, --json, exit codes, the password only from the environment.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn rdprobe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rdprobe"))
}

fn col(rows: &[Vec<String>], i: usize) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.get(i).cloned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn xrdp_capture_dissects_x224_tls_and_carries_stage_comments() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("xrdp.pcapng");
    let keys = dir.path().join("xrdp.keys");
    let out = rdprobe()
        .args(["probe", &xrdp.target(), "--pcap"])
        .arg(&pcap)
        .arg("--keylog")
        .arg(&keys)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(json["last_stage"], "connected");
    assert_eq!(json["verdict"]["status"], "ok");
    assert_eq!(json["exit_code"], 0);
    assert!(json["stages"].as_array().unwrap().len() >= 8);

    let keylog = std::fs::read_to_string(&keys).unwrap();
    assert!(
        keylog
            .lines()
            .any(|l| l.starts_with("CLIENT_") || l.starts_with("SERVER_")),
        "{keylog}"
    );

    let port = xrdp.port().to_string();
    let decode_as = format!("tcp.port=={port},tpkt");
    let rows = tshark_fields(
        &pcap,
        &["-d", &decode_as],
        &["frame.number", "cotp.type", "rdp.neg_type", "frame.comment"],
    );
    let x224 = col(&rows, 1);
    assert!(x224.len() >= 2, "X.224 CR and CC dissected: {rows:?}");
    let comments = col(&rows, 3).join("\n");
    for want in [
        "x224: connection request",
        "x224: connection confirm",
        "tls: client hello",
        "mcs: mcs connect initial",
    ] {
        assert!(
            comments.contains(want),
            "missing comment {want:?} in\n{comments}"
        );
    }
    // Without decode-as, TLS heuristics find the handshake.
    let rows = tshark_fields(&pcap, &[], &["tls.handshake.type"]);
    let hs = col(&rows, 0).join(",");
    assert!(
        hs.contains('1') && hs.contains('2'),
        "ClientHello and ServerHello dissected: {hs}"
    );
    // tshark reports nothing malformed.
    let expert = tshark_fields(&pcap, &["-Y", "_ws.malformed"], &["frame.number"]);
    assert!(expert.is_empty(), "malformed frames: {expert:?}");
}

#[test]
fn nla_capture_decrypts_credssp_with_embedded_secrets_only() {
    let shadow =
        FreerdpShadow::start("nla", &[("alice", "Secret123!")]).expect("start freerdp-shadow");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("nla.pcapng");
    let out = rdprobe()
        .args([
            "probe",
            &format!("127.0.0.1:{}", shadow.port()),
            "--user",
            "alice",
            "--pcap",
        ])
        .arg(&pcap)
        .env("RDPROBE_PASSWORD", "Secret123!")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("connected"), "{stdout}");
    assert!(!stdout.contains("Secret123!"));
    let rows = tshark_fields(
        &pcap,
        &["-Y", "ntlmssp"],
        &["ntlmssp.messagetype", "frame.comment"],
    );
    let types = col(&rows, 0).join(",");
    for t in ["0x00000001", "0x00000002", "0x00000003"] {
        assert!(
            types.contains(t),
            "NTLM message {t} decrypted from the embedded secrets: {types}"
        );
    }
    // The stage comment rides on the first frame of the challenge's bytes; on the real wire the
    // record can span frames, and tshark shows the NTLM message on the frame that completes it.
    let comments = tshark_fields(&pcap, &["-Y", "frame.comment"], &["frame.comment"]);
    assert!(
        col(&comments, 0)
            .join("\n")
            .contains("credssp: ntlm challenge"),
        "{comments:?}"
    );
    assert_pcap_does_not_contain(&pcap, b"Secret123!");

    // Wrong password: exit code 6, verdict at credssp.
    let out = rdprobe()
        .args([
            "probe",
            &format!("127.0.0.1:{}", shadow.port()),
            "--user",
            "alice",
            "--json",
        ])
        .env("RDPROBE_PASSWORD", "bad")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["last_stage"], "credssp");
    assert_eq!(json["verdict"]["kind"], "auth_failure");
}

fn assert_pcap_does_not_contain(pcap: &Path, needle: &[u8]) {
    let bytes = std::fs::read(pcap).unwrap();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "secret found in capture"
    );
}

/// Typed option values are refused by clap before anything runs: exit 2, the option named, and
/// what it takes (durations, stages, protocols, engines, transports, rates, sizes) in every command.
#[test]
fn typed_option_values_are_refused_with_the_option_and_what_it_takes() {
    for (args, expect) in [
        (
            vec!["probe", "127.0.0.1", "--stop-after", "nope"],
            vec!["'--stop-after <STAGE>'", "gw_channel", "capabilities"],
        ),
        (
            vec!["probe", "127.0.0.1", "--timeout", "soon"],
            vec!["'--timeout <TIMEOUT>'", "500ms"],
        ),
        (
            vec!["probe", "127.0.0.1", "--security", "ssl,nope"],
            vec!["'--security <PROTOCOLS>'", "hybrid_ex"],
        ),
        (
            vec!["probe", "127.0.0.1", "--tls-engine", "gnutls"],
            vec!["'--tls-engine <TLS_ENGINE>'", "rustls", "legacy"],
        ),
        (
            vec!["probe", "127.0.0.1", "--tls-version", "1.1"],
            vec!["'--tls-version <TLS_VERSION>'", "1.2", "1.3"],
        ),
        (
            vec![
                "probe",
                "127.0.0.1",
                "--gateway",
                "127.0.0.1",
                "--gateway-transport",
                "pigeon",
            ],
            vec!["'--gateway-transport <GATEWAY_TRANSPORT>'", "websocket"],
        ),
        (
            vec!["fuzz", "127.0.0.1:1", "--stage", "tcp"],
            vec!["'--stage <STAGE>'", "gw_tunnel"],
        ),
        (
            vec!["fuzz", "127.0.0.1:1", "--rss-growth", "12 parsecs"],
            vec!["'--rss-growth <SIZE>'", "MiB"],
        ),
        (
            vec!["scan", "127.0.0.1", "--rate", "fast"],
            vec!["'--rate <RATE>'", "100/s"],
        ),
        (
            vec!["enum", "127.0.0.1", "--timeout", "1 fortnight"],
            vec!["'--timeout <TIMEOUT>'"],
        ),
        (
            vec!["lab", "--connection-timeout", "forever"],
            vec!["'--connection-timeout <DURATION>'"],
        ),
    ] {
        let out = rdprobe().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for e in expect {
            assert!(err.contains(e), "{args:?}: `{e}` not in {err}");
        }
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // RPC over HTTP is named and explained, not tried.
    let out = rdprobe()
        .args(["probe", "127.0.0.1:1", "--gateway", "127.0.0.1:2"])
        .args(["--gateway-transport", "rpc"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not tunnel RPC over HTTP") && err.contains("enum"),
        "{err}"
    );
    // The aliases the hand-written parsers took still work.
    let out = rdprobe()
        .args([
            "probe",
            "127.0.0.1:1",
            "--tls-engine",
            "openssl",
            "--security",
            "tls,nla",
        ])
        .args(["--timeout", "1s", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--stop-after dns` resolves the name and stops: the report is the `dns` stage alone, exit 0,
/// and no connection is tried (the port is closed: a connect would be refused, exit 3). An address
/// has no name to resolve: usage error.
#[test]
fn stop_after_dns_resolves_and_connects_to_nothing() {
    let out = rdprobe()
        .args(["probe", "localhost:1", "--stop-after", "dns", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["last_stage"], "dns", "{v}");
    assert_eq!(v["verdict"]["kind"], "stopped", "{v}");
    let stages = v["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 1, "{v}");
    assert_eq!(stages[0]["facts"]["name"], "localhost", "{v}");
    assert!(
        stages[0]["facts"]["addresses"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{v}"
    );
    let out = rdprobe()
        .args(["probe", "127.0.0.1:1", "--stop-after", "dns"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no name to resolve"));
}

#[test]
fn cli_usage_errors_and_exit_codes() {
    // --user without a password source and no terminal: usage error, never a prompt hang.
    let out = rdprobe()
        .args(["probe", "127.0.0.1:1", "--user", "alice"])
        .env_remove("RDPROBE_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RDPROBE_PASSWORD"));
    // There is no --password flag.
    let out = rdprobe()
        .args(["probe", "h", "--password", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Bad stage, bad duration, bad target.
    for args in [
        vec!["probe", "127.0.0.1", "--stop-after", "nope"],
        vec!["probe", "127.0.0.1", "--timeout", "soon"],
        vec!["probe", "127.0.0.1:99999"],
    ] {
        let out = rdprobe().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // Refused: exit 3.
    let out = rdprobe()
        .args(["probe", &format!("127.0.0.1:{}", closed_port())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));
    // --help teaches: stages, exit codes, examples.
    let out = rdprobe().args(["probe", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("RDPROBE_PASSWORD")
            && help.contains("--stop-after")
            && help.contains("Examples")
    );
    let out = rdprobe().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
}

#[cfg(unix)]
#[test]
fn sigterm_still_writes_capture_and_json() {
    let silent = BadServer::silent();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("int.pcapng");
    let child = rdprobe()
        .args([
            "probe",
            &silent.target(),
            "--timeout",
            "30s",
            "--json",
            "--pcap",
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(silent.wait_for_connections(1, std::time::Duration::from_secs(5)));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: plain kill(2) on the PID of the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("valid JSON after SIGTERM");
    assert_eq!(json["last_stage"], "x224");
    let rows = tshark_fields(&pcap, &[], &["frame.number"]);
    assert!(
        rows.len() >= 4,
        "SYN, SYN/ACK, ACK, X.224 request: {rows:?}"
    );
}
