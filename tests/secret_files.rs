//! Files that hold secrets are readable by their owner only (mode 0600), whatever the umask, also
//! when they existed before: `probe --keylog` and `--pcap` (the pcapng embeds the TLS key log),
//! `replay --as-client --pcap`, the captures `demo` writes. Fuzz findings: src/fuzz/findings.rs.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use rdprobe::lab::spawn_lab;
use rdprobe::scenario::builtin;

/// Runs the binary with umask 000, so that only the file's own mode can keep it private.
fn rdprobe_umask0(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_rdprobe"))
        .args(args)
        .output()
        .expect("run rdprobe")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn probe_and_replay_write_keylog_and_pcap_0600() {
    let lab = spawn_lab(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        builtin("healthy-tls").expect("builtin"),
    )
    .expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("probe.pcapng");
    let keys = dir.path().join("probe.keys");
    // An existing, world-readable key log is narrowed too.
    std::fs::write(&keys, "old\n").expect("pre-existing");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let target = lab.addr.to_string();
    let out = rdprobe_umask0(&[
        "probe",
        &target,
        "--stop-after",
        "tls",
        "--pcap",
        pcap.to_str().expect("path"),
        "--keylog",
        keys.to_str().expect("path"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secrets = std::fs::read_to_string(&keys).expect("keylog");
    assert!(
        secrets.contains("CLIENT_") || secrets.contains("_TRAFFIC_SECRET"),
        "the key log holds TLS secrets: {secrets}"
    );
    assert_eq!(mode(&keys), 0o600, "--keylog");
    assert_eq!(mode(&pcap), 0o600, "--pcap");

    let again = dir.path().join("replay.pcapng");
    let out = rdprobe_umask0(&[
        "replay",
        pcap.to_str().expect("path"),
        "--as-client",
        "--target",
        &target,
        "--timeout",
        "2s",
        "--pcap",
        again.to_str().expect("path"),
    ]);
    assert!(
        again.exists(),
        "replay wrote its capture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&again), 0o600, "replay --pcap");
    lab.stop();
}

#[test]
fn demo_captures_are_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("demo");
    let out = rdprobe_umask0(&["demo", "--out", out_dir.to_str().expect("path"), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut n = 0;
    for e in std::fs::read_dir(&out_dir).expect("demo dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "pcapng") {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 6, "one capture per demo scenario, got {n}");
}
