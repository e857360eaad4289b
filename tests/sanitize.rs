//! `rdprobe sanitize`: captures from every path (NLA and TLS-only against the lab, standard RDP
//! security against xrdp at crypt_level low/high/fips, encryption level NONE against the lab, an
//! X.224 fuzz case whose request does not decode) carry canaries in user, domain, client name,
//! cookie and password; none of them survives sanitize, in ASCII or UTF-16LE, and the capture still
//! analyzes. `--anonymize` also remaps addresses and ports and masks TLS server names, with the
//! same stage verdicts and a capture tshark reads. An output that is the input is refused.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use rdprobe::capture::reader::{read_conversations, ReaderOptions};
use rdprobe::decode::{mcs, x224};
use rdprobe::trace::{Dir, Layer, Trace};

const USER: &str = "CnryUsr7q";
const DOMAIN: &str = "CNRYDOM4Z";
const CLIENT: &str = "CNRYHOST9K";
const COOKIE: &str = "CnryCookie5w";
const PASSWORD: &str = "CnryPass3x!v";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// `canary` in `bytes`, ASCII or UTF-16LE, any case.
fn found(bytes: &[u8], canary: &str) -> bool {
    let hay = bytes.to_ascii_lowercase();
    let c = canary.to_ascii_lowercase();
    contains(&hay, c.as_bytes()) || contains(&hay, &utf16(&c))
}

fn assert_none(bytes: &[u8], canaries: &[&str], what: &str) {
    for c in canaries {
        assert!(!found(bytes, c), "{what}: canary {c} survived");
    }
}

fn conversations(pcap: &Path) -> Vec<Trace> {
    let f = std::fs::File::open(pcap).unwrap();
    read_conversations(std::io::BufReader::new(f), ReaderOptions::default())
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

/// Every byte rdprobe reads from `pcap` (wire and, with the embedded secrets, decrypted).
fn readable(pcap: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for t in conversations(pcap) {
        for d in [Dir::C2S, Dir::S2C] {
            for l in [Layer::Wire, Layer::Inner] {
                out.extend(t.stream(d, l));
            }
        }
    }
    out
}

/// The client's send-data payloads on the wire (standard RDP security), with their class.
fn client_payloads(pcap: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for t in conversations(pcap) {
        let s = t.stream(Dir::C2S, Layer::Wire);
        let mut pos = 0;
        while let x224::Frame::Tpkt(l) | x224::Frame::FastPath(l) = x224::frame(&s[pos..]) {
            let pdu = &s[pos..pos + l];
            pos += l;
            let x224::X224::Data { user_data_offset } = x224::decode_tpkt(pdu) else {
                continue;
            };
            let ud = &pdu[user_data_offset..];
            let Some((name, f)) = mcs::classify_domain_pdu(ud) else {
                continue;
            };
            if !name.starts_with("send data") {
                continue;
            }
            let p = &ud[f["payload_offset"].as_u64().unwrap() as usize..];
            let class = mcs::classify_share_pdu(p, true)
                .map(|(n, _)| n.to_owned())
                .unwrap_or_default();
            out.push((class, p.to_vec()));
        }
    }
    out
}

fn rdprobe(args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdprobe"));
    c.args(args).env_remove("RDPROBE_PASSWORD");
    if let Some(p) = password {
        c.env("RDPROBE_PASSWORD", p);
    }
    c.output().unwrap()
}

fn sanitize_args(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["sanitize"];
    a.extend_from_slice(extra);
    a.extend([input.to_str().unwrap(), output.to_str().unwrap()]);
    rdprobe(&a, None)
}

fn sanitize(input: &Path, output: &Path) {
    let out = sanitize_args(input, output, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rdprobe analyze --json`: (stage, verdict kind) of the first conversation, and the text.
fn stages(pcap: &Path) -> (Vec<(String, String)>, String) {
    let out = rdprobe(&["analyze", "--json", pcap.to_str().unwrap()], None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let s = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_owned(),
                s["verdict"]["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    (s, text)
}

/// The probe CLI with every canary planted; the password comes from RDPROBE_PASSWORD.
fn probe_cli(port: u16, security: &str, extra: &[&str], pcap: &Path) {
    let target = format!("127.0.0.1:{port}");
    let mut a = vec![
        "probe",
        &target,
        "--user",
        USER,
        "--domain",
        DOMAIN,
        "--client-name",
        CLIENT,
        "--cookie",
        COOKIE,
        "--security",
        security,
        "--timeout",
        "5s",
        "--deadline",
        "30s",
        "--pcap",
        pcap.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    let out = rdprobe(&a, Some(PASSWORD));
    assert!(
        pcap.exists(),
        "probe wrote no capture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A lab scenario whose only user is the canary user.
fn lab(name: &str) -> rdprobe::lab::LabHandle {
    let mut sc = rdprobe::scenario::builtin(name).unwrap();
    sc.identity.users = vec![rdprobe::scenario::User {
        password_env: None,
        name: USER.into(),
        password: PASSWORD.into(),
        domain: Some(DOMAIN.into()),
    }];
    rdprobe::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), sc).unwrap()
}

struct Paths {
    _dir: tempfile::TempDir,
    orig: PathBuf,
    clean: PathBuf,
}

fn paths() -> Paths {
    let d = tempfile::tempdir().unwrap();
    Paths {
        orig: d.path().join("orig.pcapng"),
        clean: d.path().join("clean.pcapng"),
        _dir: d,
    }
}

/// Sanitizes and checks: no canary in the file, in what rdprobe reads from it, nor in analyze.
fn sanitize_and_check(p: &Paths) {
    sanitize(&p.orig, &p.clean);
    let all = [USER, DOMAIN, CLIENT, COOKIE, PASSWORD];
    assert_none(&std::fs::read(&p.clean).unwrap(), &all, "sanitized file");
    assert_none(&readable(&p.clean), &all, "sanitized capture as read");
    let (_, text) = stages(&p.clean);
    assert_none(text.as_bytes(), &all, "analyze of the sanitized capture");
    assert!(
        conversations(&p.clean)
            .iter()
            .all(|t| t.keylog.is_empty() && !t.has_inner()),
        "no secrets, no decrypted layer"
    );
}

#[test]
fn nla_lab_capture_keeps_no_canary() {
    let p = paths();
    let lab = lab("healthy-nla");
    probe_cli(lab.addr.port(), "hybrid_ex,hybrid,ssl", &[], &p.orig);
    lab.stop();
    let raw = std::fs::read(&p.orig).unwrap();
    assert!(found(&raw, COOKIE), "the cookie is on the wire");
    let inner = readable(&p.orig);
    for c in [USER, DOMAIN, CLIENT] {
        assert!(found(&inner, c), "{c} readable with the embedded secrets");
    }
    // The probe sends the password only sealed in CredSSP: the Client Info after NLA carries none,
    // so even the unsanitized capture with its TLS secrets does not reveal it.
    assert!(
        !found(&inner, PASSWORD),
        "password readable with the embedded secrets"
    );
    let before = tshark_fields(&p.orig, &["-Y", "ntlmssp"], &["ntlmssp.messagetype"]);
    assert!(before.len() >= 3, "original decrypts NTLM: {before:?}");
    sanitize_and_check(&p);
    let after = tshark_fields(&p.clean, &["-Y", "ntlmssp"], &["ntlmssp.messagetype"]);
    assert!(
        after.is_empty(),
        "sanitized capture must not decrypt: {after:?}"
    );
    let (s, _) = stages(&p.clean);
    assert_eq!(s[1].0, "x224");
    assert_eq!(s[2].0, "tls");
}

#[test]
fn tls_only_lab_capture_keeps_no_canary() {
    let p = paths();
    let lab = lab("healthy-tls");
    probe_cli(lab.addr.port(), "ssl", &[], &p.orig);
    lab.stop();
    let inner = readable(&p.orig);
    for c in [USER, DOMAIN, CLIENT, COOKIE] {
        assert!(found(&inner, c), "{c} readable before");
    }
    // Without NLA the probe sends no password (the Client Info names the user only).
    assert!(!found(&inner, PASSWORD));
    sanitize_and_check(&p);
}

#[test]
fn encryption_level_none_lab_capture_keeps_no_canary() {
    let p = paths();
    let lab = lab("rdp-security-only");
    probe_cli(lab.addr.port(), "rdp", &[], &p.orig);
    lab.stop();
    let raw = std::fs::read(&p.orig).unwrap();
    // Everything is in the clear: the Connect Initial names the client, the Client Info the user
    // and the domain (without NLA the probe sends no password).
    for c in [USER, DOMAIN, CLIENT, COOKIE] {
        assert!(found(&raw, c), "{c} on the wire before");
    }
    assert!(!found(&raw, PASSWORD));
    let (before, _) = stages(&p.orig);
    sanitize_and_check(&p);
    let (after, _) = stages(&p.clean);
    assert_eq!(after, before, "same stage verdicts");
}

fn xrdp_rdp_security(level: &'static str) {
    let p = paths();
    let xrdp = Xrdp::start(XrdpOpts::rdp(level)).expect("start xrdp (apt-get install xrdp)");
    probe_cli(xrdp.port(), "rdp", &[], &p.orig);
    drop(xrdp);
    let raw = std::fs::read(&p.orig).unwrap();
    // In the clear: the Connect Initial's client name, the cookie, and the user and machine names
    // of the client's licensing answer.
    for c in [CLIENT, COOKIE, USER] {
        assert!(found(&raw, c), "{level}: {c} on the wire before");
    }
    let before = client_payloads(&p.orig);
    let keep = if level == "fips" { 8 } else { 4 };
    for class in ["security exchange", "client info (encrypted)"] {
        let (_, pl) = before
            .iter()
            .find(|(c, _)| c == class)
            .unwrap_or_else(|| panic!("{level}: no {class} in {before:?}"));
        assert!(pl[8..].iter().any(|&b| b != 0), "{level}: {class} before");
    }
    let (stages_before, _) = stages(&p.orig);
    sanitize_and_check(&p);
    let after = client_payloads(&p.clean);
    assert_eq!(after.len(), before.len());
    for ((class, pl), (_, orig)) in after.iter().zip(&before) {
        assert_eq!(pl.len(), orig.len(), "{level}: lengths kept");
        let from = match class.as_str() {
            "security exchange" => 8,
            c if c.contains("encrypted") => keep,
            _ => continue,
        };
        assert!(
            pl[from..].iter().all(|&b| b == 0),
            "{level}: {class} zeroed after its header"
        );
        assert_eq!(&pl[..from], &orig[..from], "{level}: {class} header kept");
    }
    let (stages_after, _) = stages(&p.clean);
    assert_eq!(stages_after, stages_before, "{level}: same stage verdicts");
}

#[test]
fn xrdp_rdp_security_low_keeps_no_canary() {
    xrdp_rdp_security("low");
}

#[test]
fn xrdp_rdp_security_high_keeps_no_canary() {
    xrdp_rdp_security("high");
}

#[test]
fn xrdp_rdp_security_fips_keeps_no_canary() {
    xrdp_rdp_security("fips");
}

/// An X.224 fuzz case whose Connection Request does not decode (cookie line not terminated) still
/// has its cookie masked, by the CLI and by the library call fuzz findings use.
#[tokio::test(flavor = "multi_thread")]
async fn x224_fuzz_repro_cookie_is_masked() {
    use rdprobe::fuzz::x224::{Terminator, X224Case, X224Mutation};
    use rdprobe::fuzz::{Case, Target};
    let p = paths();
    let lab = lab("healthy-nla");
    let mut t = Target::new(lab.addr);
    t.timeout = Duration::from_millis(400);
    let case = Case::X224(X224Case {
        mutations: vec![
            X224Mutation::Cookie {
                len: 14,
                fill: b'Q',
            },
            X224Mutation::CookieTerminator(Terminator::None),
        ],
    });
    let run = rdprobe::fuzz::session::run_case(&t, &case).await;
    lab.stop();
    let labels = rdprobe::decode::decode(&run.trace).labels;
    let f = std::fs::File::create(&p.orig).unwrap();
    rdprobe::capture::writer::write_pcapng(&run.trace, &labels, f).unwrap();
    let cookie = "Q".repeat(14);
    let raw = std::fs::read(&p.orig).unwrap();
    assert!(
        found(&raw, &cookie),
        "the fuzz case's cookie is in the repro"
    );
    let cr = run.trace.stream(Dir::C2S, Layer::Wire);
    assert!(
        !matches!(x224::decode_tpkt(&cr), x224::X224::ConnectionRequest(_)),
        "the request does not decode"
    );
    sanitize(&p.orig, &p.clean);
    let clean = std::fs::read(&p.clean).unwrap();
    assert!(!found(&clean, &cookie));
    assert!(contains(&clean, b"Cookie: mstshash=xxxxxxxxxxxxxx\x01"));
    let mut t = run.trace.clone();
    let st = rdprobe::sanitize::sanitize_trace(&mut t);
    assert_eq!(st.cookies_masked, 1);
    assert!(!found(&t.stream(Dir::C2S, Layer::Wire), &cookie));
}

#[test]
fn anonymize_remaps_addresses_and_masks_tls_names() {
    let p = paths();
    let anon = p.orig.with_file_name("anon.pcapng");
    let lab = lab("healthy-tls");
    let port = lab.addr.port();
    probe_cli(port, "ssl", &["--tls-version", "1.2"], &p.orig);
    lab.stop();
    let raw = std::fs::read(&p.orig).unwrap();
    // The lab's certificate (CN and SAN rdprobe-lab, SAN localhost) is in the clear under TLS 1.2
    // (the probe sends no SNI: the unit tests cover its masking).
    for name in ["rdprobe-lab", "localhost"] {
        assert!(contains(&raw, name.as_bytes()), "{name} before");
    }
    let ports_before = tshark_fields(
        &p.orig,
        &[],
        &["ip.src", "ip.dst", "tcp.srcport", "tcp.dstport"],
    );
    assert!(ports_before.iter().any(|r| r.contains(&port.to_string())));
    sanitize(&p.orig, &p.clean);
    let out = sanitize_args(&p.orig, &anon, &["--anonymize"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    // 127.0.0.1 (the conversation and a certificate SAN), ::1 (a SAN); CN and SAN names.
    assert!(
        summary.contains("anonymized: 2 address(es), 2 port(s), 4 TLS name(s)"),
        "{summary}"
    );
    let bytes = std::fs::read(&anon).unwrap();
    for name in ["rdprobe-lab", "localhost", "rdp-server", "127.0.0.1"] {
        assert!(!contains(&bytes, name.as_bytes()), "{name} after");
    }
    assert!(
        !contains(&bytes, &[0x87, 4, 127, 0, 0, 1]),
        "certificate IP SAN remapped"
    );
    assert_none(
        &bytes,
        &[USER, DOMAIN, CLIENT, COOKIE, PASSWORD],
        "anonymized",
    );
    // tshark reads it: every packet from and to 192.0.2.1 (the client and the server were both
    // 127.0.0.1), between ports 49152 (client) and 33890 (server).
    let rows = tshark_fields(
        &anon,
        &[],
        &["ip.src", "ip.dst", "tcp.srcport", "tcp.dstport"],
    );
    assert!(rows.len() >= 10, "{rows:?}");
    for r in &rows {
        assert_eq!(&r[..2], ["192.0.2.1", "192.0.2.1"], "{r:?}");
        let mut p = r[2..].to_vec();
        p.sort();
        assert_eq!(p, ["33890", "49152"], "{r:?}");
    }
    let hs = tshark_fields(
        &anon,
        &["-Y", "tls.handshake.type == 11"],
        &["x509sat.uTF8String", "x509ce.dNSName"],
    );
    assert_eq!(
        hs,
        [["xxxxxxxxxxx,xxxxxxxxxxx", "xxxxxxxxxxx,xxxxxxxxx"]],
        "tshark dissects the masked certificate"
    );
    assert_eq!(stages(&anon).0, stages(&p.clean).0, "same stage verdicts");
    let (orig, _) = stages(&p.orig);
    let (a, _) = stages(&anon);
    for (s, v) in &a[..3] {
        assert!(
            orig.contains(&(s.clone(), v.clone())),
            "{s} {v} vs {orig:?}"
        );
    }
}

#[test]
fn an_output_that_is_the_input_is_refused() {
    let p = paths();
    let lab = lab("rdp-security-only");
    probe_cli(lab.addr.port(), "rdp", &[], &p.orig);
    lab.stop();
    let before = std::fs::read(&p.orig).unwrap();
    let dir = p.orig.parent().unwrap();
    let link = dir.join("link.pcapng");
    std::fs::hard_link(&p.orig, &link).unwrap();
    let dotted = dir.join(".").join("orig.pcapng");
    for out in [&p.orig, &link, &dotted] {
        let o = sanitize_args(&p.orig, out, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", out.display());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is the input"), "{err}");
        assert_eq!(std::fs::read(&p.orig).unwrap(), before, "input untouched");
    }
    // A write that cannot complete leaves nothing under the output's name.
    let missing = dir.join("no-such-dir").join("out.pcapng");
    let o = sanitize_args(&p.orig, &missing, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!missing.exists());
    sanitize(&p.orig, &p.clean);
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}
