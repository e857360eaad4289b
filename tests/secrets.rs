//! Secret canaries (issue 12): every command that takes credentials runs with a canary password
//! (from `RDPROBE_PASSWORD`, as users give it) and maximal logging (`-vv`), against real servers
//! (the lab, freerdp-shadow, xrdp), and the password must appear in none of what it leaves behind:
//! standard output and error, JSON, pcapng (wire and, decrypted with its own TLS secrets, the
//! cleartext above TLS), key logs, scenario TOML, fuzz findings — in ASCII, UTF-16LE, or as hex of
//! either. Under standard RDP security the password is not sent at all: the encrypted Client Info
//! PDU has the same length whatever the password's length.
//!
//! Each test also checks that the run used the credentials (NLA succeeded with the canary, the
//! replayed server accepted it), so a run that never touched the password cannot pass for clean.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use rdprobe::trace::{Dir, Layer};

/// The canary password. Unique enough that any hit is a leak.
const PASSWORD: &str = "Cn4ry-pw-7d1e0fa3-QZ";
/// The same canary, 39 characters longer (the measurement: +39 characters gave +78 bytes).
const PASSWORD_LONG: &str = "Cn4ry-pw-7d1e0fa3-QZ-0123456789abcdefghijklmnopqrstuvw";
const USER: &str = "canaryuser";
const DOMAIN: &str = "CANARYDOM";

/// Every form the password could take in an output: ASCII, UTF-16LE, and hex of either (fuzz case
/// files and JSON facts carry PDUs as hex), in both hex cases.
fn needles(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    let ascii = secret.as_bytes().to_vec();
    let utf16: Vec<u8> = secret.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    vec![
        ("ascii", ascii.clone()),
        ("utf-16le", utf16.clone()),
        ("hex of ascii", hex(&ascii).into_bytes()),
        ("hex of utf-16le", hex(&utf16).into_bytes()),
        ("HEX of ascii", hex(&ascii).to_uppercase().into_bytes()),
        ("HEX of utf-16le", hex(&utf16).to_uppercase().into_bytes()),
    ]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Panics naming the output, the form and the byte offset of the first hit of a canary.
fn assert_clean(what: &str, bytes: &[u8]) {
    for secret in [PASSWORD, PASSWORD_LONG] {
        for (form, needle) in needles(secret) {
            if let Some(at) = find(bytes, &needle) {
                panic!("the password leaked into {what} ({form}, byte {at})");
            }
        }
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Scans a run's standard output and error and every file it wrote under `dir`; pcapng files are
/// also read back and their conversations decrypted with the secrets they embed, so the cleartext
/// above TLS is scanned too. Returns how many outputs were scanned.
fn assert_run_clean(what: &str, out: &Output, dir: &Path) -> usize {
    assert_clean(&format!("{what}: stdout"), &out.stdout);
    assert_clean(&format!("{what}: stderr"), &out.stderr);
    let mut n = 2;
    for f in files(dir) {
        let bytes = std::fs::read(&f).expect("read output");
        assert_clean(&format!("{what}: {}", f.display()), &bytes);
        n += 1;
        if f.extension().is_some_and(|e| e == "pcapng" || e == "pcap") {
            n += assert_capture_clean(what, &f);
        }
    }
    n
}

/// Reads a capture with rdprobe's reader (which decrypts TLS with the embedded secrets) and scans
/// both directions of every conversation, wire and inner layers.
fn assert_capture_clean(what: &str, path: &Path) -> usize {
    use rdprobe::capture::reader::{read_conversations, ReaderOptions};
    let f = std::fs::File::open(path).expect("open capture");
    let convs = read_conversations(std::io::BufReader::new(f), ReaderOptions::default())
        .expect("read capture");
    let mut n = 0;
    for (i, conv) in convs.enumerate() {
        let Ok(trace) = conv else { break };
        for dir in [Dir::C2S, Dir::S2C] {
            for layer in [Layer::Wire, Layer::Inner] {
                let stream = trace.stream(dir, layer);
                assert_clean(
                    &format!(
                        "{what}: {} conversation {} {dir:?} {layer:?}",
                        path.display(),
                        i + 1
                    ),
                    &stream,
                );
                n += 1;
            }
        }
    }
    n
}

/// Runs rdprobe with `-vv` (every log line a user can turn on), the canary in `RDPROBE_PASSWORD`
/// and no standard input.
fn rdprobe(args: &[&str], password: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .arg("-vv")
        .args(args)
        .env("RDPROBE_PASSWORD", password)
        .env_remove("RDPROBE_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run rdprobe")
}

fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): stdout {text}\nstderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A built-in lab scenario whose one account is the canary.
fn canary_scenario(base: &str) -> rdprobe::scenario::Scenario {
    let mut s = rdprobe::scenario::builtin(base).expect("builtin scenario");
    s.identity.users = vec![rdprobe::scenario::User {
        name: USER.into(),
        password: PASSWORD.into(),
        password_env: None,
        domain: None,
    }];
    s
}

fn lab(base: &str) -> rdprobe::lab::LabHandle {
    rdprobe::lab::spawn_lab("127.0.0.1:0".parse().unwrap(), canary_scenario(base)).expect("lab")
}

/// The stage entry of a probe JSON report.
fn stage<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stage"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

/// `probe --json --pcap --keylog` with the canary account; returns the report and the output dir.
fn probe(target: &str, password: &str, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("probe.pcapng");
    let keylog = dir.path().join("probe.keys");
    let mut args = vec![
        "probe",
        target,
        "--user",
        USER,
        "--domain",
        DOMAIN,
        "--json",
        "--timeout",
        "5s",
        "--pcap",
        pcap.to_str().unwrap(),
        "--keylog",
        keylog.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = rdprobe(&args, password);
    (out, dir)
}

/// The scanner finds what it is looking for: a planted canary in a file, UTF-16LE, is a hit.
#[test]
fn the_scanner_finds_a_planted_canary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = b"prefix ".to_vec();
    bytes.extend(PASSWORD.encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(dir.path().join("planted.bin"), &bytes).expect("write");
    let out = Command::new("true").output().expect("true");
    let hit = std::panic::catch_unwind(|| assert_run_clean("planted", &out, dir.path()));
    let msg = hit.expect_err("the planted canary must be found");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("utf-16le, byte 7"), "{msg}");
}

#[test]
fn probe_over_nla_uses_the_password_and_leaks_it_nowhere() {
    let lab = lab("healthy-nla");
    let target = lab.addr.to_string();
    let (out, dir) = probe(&target, PASSWORD, &[]);
    let r = json(&out);
    assert_eq!(r["last_stage"], "connected", "{r}");
    assert_eq!(stage(&r, "credssp")["verdict"]["status"], "ok", "{r}");
    let n = assert_run_clean("probe nla (lab)", &out, dir.path());
    eprintln!("probe nla (lab): {n} outputs clean");
    // A wrong password: the logon failure is reported and still nothing leaks.
    let (out, dir) = probe(&target, PASSWORD_LONG, &[]);
    let r = json(&out);
    assert_eq!(
        stage(&r, "credssp")["verdict"]["kind"],
        "auth_failure",
        "{r}"
    );
    assert_run_clean("probe nla, rejected (lab)", &out, dir.path());
}

#[test]
fn probe_over_nla_against_freerdp_shadow_leaks_nothing() {
    let shadow = FreerdpShadow::start("nla", &[(USER, PASSWORD)])
        .expect("start freerdp-shadow-cli (apt-get install freerdp2-shadow-x11 xvfb winpr-utils)");
    let (out, dir) = probe(&shadow.target(), PASSWORD, &["--stop-after", "credssp"]);
    let r = json(&out);
    assert_eq!(stage(&r, "credssp")["verdict"]["status"], "ok", "{r}");
    let n = assert_run_clean("probe nla (freerdp-shadow)", &out, dir.path());
    eprintln!("probe nla (freerdp-shadow): {n} outputs clean");
}

#[test]
fn probe_tls_only_sends_no_password() {
    let lab = lab("healthy-tls");
    let (out, dir) = probe(&lab.addr.to_string(), PASSWORD, &[]);
    let r = json(&out);
    assert_eq!(r["last_stage"], "connected", "{r}");
    let n = assert_run_clean("probe tls-only (lab)", &out, dir.path());
    eprintln!("probe tls (lab): {n} outputs clean");
}

#[test]
fn probe_rdp_security_without_encryption_sends_no_password() {
    let lab = lab("rdp-security-only");
    let (out, dir) = probe(&lab.addr.to_string(), PASSWORD, &["--security", "rdp"]);
    let r = json(&out);
    assert_eq!(r["last_stage"], "connected", "{r}");
    // The Client Info went in the clear: the capture's wire stream is scanned as it is.
    assert_run_clean("probe rdp security, level none (lab)", &out, dir.path());
}

/// The security stage's client bytes (Security Exchange + Client Info PDU) of a probe.
fn security_bytes(
    target: &str,
    password: &str,
    extra: &[&str],
) -> (u64, Output, tempfile::TempDir) {
    let (out, dir) = probe(target, password, extra);
    let r = json(&out);
    assert_eq!(
        stage(&r, "security")["verdict"]["status"],
        "ok",
        "security stage: {r}"
    );
    let n = stage(&r, "security")["bytes_c2s"].as_u64().expect("bytes");
    (n, out, dir)
}

/// Standard RDP security at every encryption level xrdp offers (RC4 40/56/128-bit and FIPS): the
/// server decrypts the Client Info, so the password is never in it — the encrypted PDU's length
/// does not depend on the password's length (today's code grew by 78 bytes for 39 characters).
#[test]
fn probe_rdp_security_with_encryption_never_sends_the_password() {
    for level in ["low", "medium", "high", "fips"] {
        let xrdp = Xrdp::start(XrdpOpts::rdp(level)).expect("start xrdp (apt-get install xrdp)");
        let target = xrdp.target();
        let (short, out, dir) = security_bytes(&target, PASSWORD, &["--security", "rdp"]);
        assert_run_clean(&format!("probe rdp security {level}"), &out, dir.path());
        let (long, out, dir) = security_bytes(&target, PASSWORD_LONG, &["--security", "rdp"]);
        assert_run_clean(
            &format!("probe rdp security {level}, long"),
            &out,
            dir.path(),
        );
        eprintln!("xrdp crypt_level={level}: security stage {short} / {long} bytes");
        assert_eq!(
            short, long,
            "crypt_level={level}: the Client Info grew with the password"
        );
        // The default offer (ssl, hybrid, hybrid_ex) is downgraded to PROTOCOL_RDP by this server
        // and the probe reconnects offering it: the same holds on that path.
        let (dflt, out, dir) = security_bytes(&target, PASSWORD_LONG, &[]);
        assert_run_clean(
            &format!("probe rdp security {level}, default offer"),
            &out,
            dir.path(),
        );
        assert_eq!(dflt, short, "crypt_level={level}: default offer");
    }
}

/// A capture of the lab over NLA, made by the probe, to replay.
fn nla_capture(lab: &rdprobe::lab::LabHandle) -> (PathBuf, tempfile::TempDir) {
    let (out, dir) = probe(&lab.addr.to_string(), PASSWORD, &[]);
    assert_eq!(json(&out)["last_stage"], "connected");
    // The replays below write their own outputs elsewhere; the capture stays here.
    (dir.path().join("probe.pcapng"), dir)
}

/// `replay CAPTURE --as-client --target TARGET --user USER --pcap DIR/replay.pcapng --json`.
fn replay_as_client(capture: &Path, target: &str, password: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("replay.pcapng");
    let args = [
        "replay",
        capture.to_str().unwrap(),
        "--as-client",
        "--target",
        target,
        "--user",
        USER,
        "--pcap",
        pcap.to_str().unwrap(),
        "--json",
    ];
    (rdprobe(&args, password), dir)
}

#[test]
fn replay_as_client_leaks_nothing() {
    let lab = lab("healthy-nla");
    let (capture, _keep) = nla_capture(&lab);
    let (out, dir) = replay_as_client(&capture, &lab.addr.to_string(), PASSWORD);
    let pcap = dir.path().join("replay.pcapng");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"connected\""),
        "the replayed client reaches connected with the canary: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pcap.exists(), "replay wrote no capture");
    let n = assert_run_clean("replay --as-client", &out, dir.path());
    eprintln!("replay --as-client: {n} outputs clean");
}

#[test]
fn replay_as_client_under_rdp_security_sends_no_password() {
    let xrdp = Xrdp::start(XrdpOpts::rdp("high")).expect("start xrdp (apt-get install xrdp)");
    let (out, capdir) = probe(&xrdp.target(), PASSWORD, &["--security", "rdp"]);
    assert_eq!(json(&out)["last_stage"], "connected");
    let capture = capdir.path().join("probe.pcapng");
    let mut sizes = Vec::new();
    for pw in [PASSWORD, PASSWORD_LONG] {
        let (out, dir) = replay_as_client(&capture, &xrdp.target(), pw);
        let pcap = dir.path().join("replay.pcapng");
        assert_run_clean("replay --as-client, rdp security", &out, dir.path());
        let analyzed = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .args(["analyze", pcap.to_str().unwrap(), "--json"])
            .output()
            .expect("analyze");
        let text = String::from_utf8_lossy(&analyzed.stdout);
        let r: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("one connection")).expect("json");
        sizes.push(stage(&r, "security")["bytes_c2s"].as_u64().expect("bytes"));
    }
    assert_eq!(
        sizes[0], sizes[1],
        "the replayed Client Info grew with the password"
    );
}

#[test]
fn replay_as_server_names_the_variable_not_the_password() {
    let lab = lab("healthy-nla");
    let (capture, _keep) = nla_capture(&lab);
    drop(lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("derived.toml");
    let out = rdprobe(
        &[
            "replay",
            capture.to_str().unwrap(),
            "--as-server",
            "--user",
            USER,
            "--emit-scenario",
            toml.to_str().unwrap(),
            "--json",
        ],
        PASSWORD,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&toml).expect("scenario written");
    assert!(
        text.contains("password_env = \"RDPROBE_PASSWORD\""),
        "{text}"
    );
    assert!(text.contains(USER), "{text}");
    let n = assert_run_clean("replay --as-server --emit-scenario", &out, dir.path());
    eprintln!("replay --as-server: {n} outputs clean");

    // The scenario still works: served with the canary in the environment, the account logs on.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = ProcessGuard::spawn(
        "rdprobe lab",
        Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .args([
                "lab",
                "--listen",
                &listen,
                "--scenario",
                toml.to_str().unwrap(),
            ])
            .env("RDPROBE_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start the lab on the derived scenario");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            port_accepts(port).then_some(())
        })
        .is_some(),
        "lab did not listen"
    );
    let (out, dir) = probe(&listen, PASSWORD, &[]);
    let r = json(&out);
    assert_eq!(stage(&r, "credssp")["verdict"]["status"], "ok", "{r}");
    assert_run_clean("probe of the derived scenario", &out, dir.path());
    let (out, _dir) = probe(&listen, PASSWORD_LONG, &[]);
    assert_eq!(
        stage(&json(&out), "credssp")["verdict"]["kind"],
        "auth_failure",
        "the derived scenario must check the password"
    );
    server.kill();
}

#[test]
fn enum_with_user_leaks_nothing() {
    let lab = lab("healthy-nla");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = rdprobe(
        &[
            "enum",
            &lab.addr.to_string(),
            "--user",
            USER,
            "--domain",
            DOMAIN,
            "--json",
            "--timeout",
            "5s",
        ],
        PASSWORD,
    );
    let r = json(&out);
    assert_eq!(r["credentials"]["accepted"], true, "{r}");
    let n = assert_run_clean("enum --user", &out, dir.path());
    eprintln!("enum --user: {n} outputs clean");
}

/// `fuzz --user` at the stages that use the credentials; findings (case.json, repro.pcapng,
/// README.txt) are scanned with everything else.
#[test]
fn fuzz_with_user_leaks_nothing() {
    let scen = tempfile::tempdir().expect("tempdir");
    let nla = scen.path().join("nla-canary.toml");
    std::fs::write(&nla, canary_scenario("healthy-nla").to_toml()).expect("write scenario");
    let xrdp = Xrdp::start(XrdpOpts::rdp("high")).expect("start xrdp (apt-get install xrdp)");
    let runs: Vec<(&str, Vec<String>)> = vec![
        (
            "credssp",
            vec![
                "--lab".into(),
                nla.display().to_string(),
                "--plant".into(),
                "credssp-short-pubkeyauth-abort".into(),
                "--cases".into(),
                "600".into(),
            ],
        ),
        (
            "mcs",
            vec![
                "--lab".into(),
                nla.display().to_string(),
                "--cases".into(),
                "40".into(),
            ],
        ),
        (
            "security",
            vec![xrdp.target(), "--cases".into(), "40".into()],
        ),
    ];
    let mut findings = 0;
    for (stage, extra) in runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out_dir = dir.path().join("findings");
        let mut args = vec![
            "fuzz".to_string(),
            "--stage".into(),
            stage.into(),
            "--seed".into(),
            "7".into(),
            "--max-findings".into(),
            "1".into(),
            "--timeout".into(),
            "2s".into(),
            "--user".into(),
            USER.into(),
            "--domain".into(),
            DOMAIN.into(),
            "--out".into(),
            out_dir.display().to_string(),
            "--json".into(),
        ];
        args.extend(extra);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rdprobe(&argv, PASSWORD);
        let summary = json(&out);
        assert!(
            summary["stats"]["cases"].as_u64().is_some_and(|n| n > 0),
            "fuzz {stage} ran no case: {summary}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = assert_run_clean(&format!("fuzz --stage {stage}"), &out, dir.path());
        let found = summary["findings"].as_array().map_or(0, Vec::len);
        findings += found;
        eprintln!("fuzz {stage}: {found} finding(s), {n} outputs clean");
    }
    assert!(
        findings > 0,
        "no finding was written, so no finding was scanned"
    );
}
