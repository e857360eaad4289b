//! Writes a finding as `DIR/NNNN/`: `case.json` (the minimal case, its signature and the session
//! settings a replay needs; never the password), `repro.pcapng` (the recorded run of the minimal
//! case, stage-annotated: `rdprobe analyze` reads it) and `README.txt` (what happened, what the
//! files contain, and the commands that reproduce and analyze it).
//!
//! A run without credentials embeds the TLS secrets in `repro.pcapng` (the decrypted exchange shows
//! what the target did). A run with credentials (`--user`) would thereby hand out the NTLM exchange
//! (a crackable NTLMv2 response) and the Client Info: its capture goes through
//! [`crate::sanitize::sanitize_trace`] first (no key log, no decrypted layer, names masked).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::Finding;
use crate::trace::Trace;

/// Most findings one directory numbers (`0001` … `9999`).
pub const MAX_FINDINGS: u32 = 9999;

/// The next free `NNNN` under `out` (one more than the highest present).
fn next_dir(out: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let mut highest = 0u32;
    for e in std::fs::read_dir(out)? {
        let e = e?;
        if let Some(n) = e
            .file_name()
            .to_str()
            .filter(|s| s.len() == 4)
            .and_then(|s| s.parse::<u32>().ok())
        {
            highest = highest.max(n);
        }
    }
    if highest >= MAX_FINDINGS {
        return Err(std::io::Error::other(format!(
            "{} already holds {MAX_FINDINGS} findings",
            out.display()
        )));
    }
    Ok(out.join(format!("{:04}", highest + 1)))
}

/// Writes the three files of `finding` under a new `out/NNNN/` and returns that directory.
pub fn write_finding(out: &Path, finding: &Finding, trace: &Trace) -> std::io::Result<PathBuf> {
    // With credentials the bytes sent at the credssp stage may hold the NTLM AUTHENTICATE: its
    // responses (crackable) are zeroed in what is written.
    let masked;
    let finding = if finding.session.user.is_some() {
        let mut f = finding.clone();
        if let Some(mut sent) = unhex(&f.sent_hex) {
            if crate::sanitize::mask_ntlm_responses(&mut sent) > 0 {
                f.sent_hex = super::hex(&sent);
            }
        }
        masked = f;
        &masked
    } else {
        finding
    };
    let dir = next_dir(out)?;
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(finding).map_err(std::io::Error::other)?;
    // case.json and repro.pcapng are created 0600 (a repro made without credentials keeps its TLS
    // secrets).
    let mut case = crate::capture::writer::create_private(&dir.join("case.json"))?;
    case.write_all((json + "\n").as_bytes())?;
    // The verdict is read from the full trace; what is written is sanitized when credentials
    // were used.
    let decoded = crate::decode::decode(trace);
    let sanitized = finding.session.user.is_some().then(|| {
        let mut t = trace.clone();
        crate::sanitize::sanitize_trace(&mut t);
        t
    });
    let (written, labels) = match &sanitized {
        Some(t) => (t, crate::decode::decode(t).labels),
        None => (trace, decoded.labels.clone()),
    };
    let f = crate::capture::writer::create_private(&dir.join("repro.pcapng"))?;
    let mut w = std::io::BufWriter::new(f);
    crate::capture::writer::write_pcapng(written, &labels, &mut w)
        .map_err(std::io::Error::other)?;
    w.flush()?;
    std::fs::write(
        dir.join("README.txt"),
        readme(finding, &dir, &decoded.report, !written.keylog.is_empty()),
    )?;
    Ok(dir)
}

/// What the finding's files hold, in one paragraph.
fn contents(f: &Finding, has_secrets: bool) -> String {
    match &f.session.user {
        Some(user) => {
            let who = match &f.session.domain {
                Some(d) => format!("{d}\\{user}"),
                None => user.clone(),
            };
            format!(
                "contents: made with credentials for user {who}: TLS secrets removed from \
                 repro.pcapng (sanitized: no decrypted layer, cookie, names, Client Info and user \
                 data masked); in the bytes sent (below and in case.json) the NTLM responses are \
                 zeroed; case.json and this file name the user; the password is in no file."
            )
        }
        None if has_secrets => "contents: repro.pcapng contains TLS secrets (Wireshark and \
             `rdprobe analyze` decrypt it); no credentials were used."
            .to_owned(),
        None => "contents: no credentials were used; repro.pcapng holds no TLS secrets.".to_owned(),
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn readme(
    f: &Finding,
    dir: &Path,
    report: &crate::report::ConnectionReport,
    has_secrets: bool,
) -> String {
    let mut s = String::new();
    let d = dir.display();
    let _ = writeln!(s, "rdprobe fuzz finding: {}", f.signature);
    let _ = writeln!(s);
    let _ = writeln!(s, "{}", contents(f, has_secrets));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "stage {}: the target answered the mutated PDU with `{}` and a fresh valid handshake \
         afterwards was `{}`.",
        f.signature.stage, f.signature.class, f.signature.liveness
    );
    if f.signature.process != super::ProcessFate::Running {
        let _ = writeln!(
            s,
            "the watched target process: {} (replay with --pid PID of the restarted server to \
             compare that too)",
            f.signature.process
        );
    }
    let _ = writeln!(s, "what happened: {}", f.detail);
    let _ = writeln!(
        s,
        "found by case {} of seed {} against {}; reproduced when recorded: {}",
        f.case_index, f.seed, f.target, f.reproduced
    );
    if let Some(sh) = &f.shrink {
        let _ = writeln!(
            s,
            "shrunk in {} live trials ({} reproduced, {} ms{})",
            sh.trials,
            sh.reproduced,
            sh.elapsed_ms,
            if sh.budget_exhausted {
                ", budget exhausted"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "minimal case (mutations of the valid PDU):");
    let _ = writeln!(s, "  {}", f.case.summary());
    let _ = writeln!(s, "as generated:");
    let _ = writeln!(s, "  {}", f.original_case.summary());
    let _ = writeln!(s, "bytes sent ({}): {}", f.sent_hex.len() / 2, f.sent_hex);
    let _ = writeln!(s);
    let _ = writeln!(s, "reproduce:");
    let _ = writeln!(
        s,
        "  {}rdprobe fuzz --replay {d}/case.json --target {}",
        if f.session.user.is_some() {
            "RDPROBE_PASSWORD=… "
        } else {
            ""
        },
        f.target
    );
    let _ = writeln!(s, "analyze the capture of the minimal case:");
    let _ = writeln!(s, "  rdprobe analyze {d}/repro.pcapng --stages");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "the capture decodes as: last stage {}, {}",
        report.last_stage, report.summary
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::{Case, FuzzStage, Liveness, ResponseClass, SessionSettings, Signature};
    use crate::trace::{Dir, EventKind, Layer};
    use bytes::Bytes;

    fn finding(user: Option<&str>) -> Finding {
        Finding {
            rdprobe_fuzz_case: 1,
            signature: Signature::new(FuzzStage::Credssp, ResponseClass::Reset, Liveness::Alive),
            detail: "reset".into(),
            target: "127.0.0.1:3389".parse().unwrap(),
            seed: 1,
            case_index: 0,
            case: Case::valid(FuzzStage::Credssp),
            original_case: Case::valid(FuzzStage::Credssp),
            sent_hex: String::new(),
            reproduced: true,
            shrink: None,
            session: SessionSettings {
                timeout_ms: 1000,
                quiet_ms: 100,
                protocols: None,
                user: user.map(str::to_owned),
                domain: user.map(|_| "CANARYDOM".to_owned()),
                recovery_ms: 1000,
            },
            dir: None,
        }
    }

    fn trace() -> Trace {
        let a = "127.0.0.1:50000".parse().unwrap();
        let b = "127.0.0.1:3389".parse().unwrap();
        let mut t = Trace::new(a, b);
        let mut cr = b"\x03\x00\x00\x00\x00\xe0\0\0\0\0\0Cookie: mstshash=canaryuser\r\n".to_vec();
        cr.extend_from_slice(&[1, 0, 8, 0, 3, 0, 0, 0]);
        let l = cr.len();
        cr[2..4].copy_from_slice(&(l as u16).to_be_bytes());
        cr[4] = (l - 5) as u8;
        t.push_at(
            1,
            None,
            EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Wire,
                bytes: Bytes::from(cr),
            },
        );
        t.push_at(
            2,
            None,
            EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Inner,
                bytes: Bytes::from_static(b"NTLMSSP\0\x03\0\0\0inner"),
            },
        );
        t.keylog.push(format!(
            "CLIENT_RANDOM {} {}",
            "ab".repeat(32),
            "cd".repeat(48)
        ));
        t
    }

    fn has(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_finding_made_with_credentials_carries_no_secrets_and_says_so() {
        let out = tempfile::tempdir().unwrap();
        let dir = write_finding(out.path(), &finding(Some("canaryuser")), &trace()).unwrap();
        let pcap = std::fs::read(dir.join("repro.pcapng")).unwrap();
        assert!(!has(&pcap, b"CLIENT_RANDOM"), "no key log");
        assert!(!has(&pcap, b"canaryuser"), "cookie masked");
        assert!(!has(&pcap, b"NTLMSSP"), "no decrypted layer");
        let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
        assert!(
            readme.contains(
                "made with credentials for user CANARYDOM\\canaryuser: TLS secrets removed"
            ),
            "{readme}"
        );
    }

    #[test]
    fn the_ntlm_response_in_the_bytes_sent_is_zeroed_with_credentials() {
        // An AUTHENTICATE with a 40-byte NT response at offset 88.
        let mut m = b"NTLMSSP\0".to_vec();
        m.extend_from_slice(&3u32.to_le_bytes());
        m.resize(88, 0);
        m[20..22].copy_from_slice(&40u16.to_le_bytes());
        m[24..28].copy_from_slice(&88u32.to_le_bytes());
        m.extend(std::iter::repeat_n(0x5a, 40));
        let mut f = finding(Some("canaryuser"));
        f.sent_hex = crate::fuzz::hex(&m);
        let out = tempfile::tempdir().unwrap();
        let dir = write_finding(out.path(), &f, &trace()).unwrap();
        let case = std::fs::read_to_string(dir.join("case.json")).unwrap();
        let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
        let response = "5a".repeat(40);
        assert!(!case.contains(&response) && !readme.contains(&response));
        assert!(case.contains(&"00".repeat(40)), "lengths kept");
        // Without credentials nothing is changed.
        let mut g = finding(None);
        g.sent_hex = crate::fuzz::hex(&m);
        let dir = write_finding(out.path(), &g, &trace()).unwrap();
        let case = std::fs::read_to_string(dir.join("case.json")).unwrap();
        assert!(case.contains(&response));
    }

    #[test]
    fn a_finding_without_credentials_keeps_its_secrets_and_says_so() {
        let out = tempfile::tempdir().unwrap();
        let dir = write_finding(out.path(), &finding(None), &trace()).unwrap();
        let pcap = std::fs::read(dir.join("repro.pcapng")).unwrap();
        assert!(has(&pcap, b"CLIENT_RANDOM"));
        let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
        assert!(
            readme.contains("contains TLS secrets") && readme.contains("no credentials were used"),
            "{readme}"
        );
    }

    /// case.json and repro.pcapng (which embeds the TLS key log) are readable by their owner only.
    #[test]
    fn secret_bearing_finding_files_are_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let out = tempfile::tempdir().expect("tempdir");
        let dir = write_finding(out.path(), &finding(None), &trace()).expect("written");
        for name in ["case.json", "repro.pcapng"] {
            let mode = std::fs::metadata(dir.join(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }
}
