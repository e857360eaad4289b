//! `rdprobe analyze` as a user runs it: table, JSON lines, standard input, exit codes, damaged and
//! foreign files, and a capture holding only RDP over UDP.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/captures");

fn analyze(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdprobe"));
    cmd.arg("analyze")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("run rdprobe");
    if let Some(bytes) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait rdprobe")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

#[test]
fn table_and_exit_code_follow_the_verdict() {
    let out = analyze(
        &["--table", &fixture("tls-reset-at-client-hello.pcapng")],
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "network failure: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert!(
        lines[3].contains("1 connection(s): 0 ok, 1 failed"),
        "{stdout}"
    );
    assert!(lines[0].contains("last stage"), "{stdout}");
    assert!(
        lines[1].contains(" tls ") && lines[1].contains("reset (server)"),
        "{stdout}"
    );

    let out = analyze(&[&fixture("healthy-nla.pcapng")], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("connected"));
}

/// A capture with one connection is printed the way `probe` prints one: stages, summary and the
/// diagnosis with its evidence and remedies.
#[test]
fn few_connections_are_printed_in_full_with_the_diagnosis() {
    let out = analyze(&[&fixture("wrong-password.pcapng")], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{stdout}");
    assert!(stdout.starts_with("connection #1\n"), "{stdout}");
    assert!(stdout.contains("STAGE "), "{stdout}");
    assert!(stdout.contains("diagnosis: credentials"), "{stdout}");
    assert!(stdout.contains("evidence: "), "{stdout}");
    assert!(stdout.contains("remedy: "), "{stdout}");
    // A connection that passed has no diagnosis to print.
    let out = analyze(&[&fixture("healthy-nla.pcapng")], None);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("every stage passed"), "{stdout}");
    assert!(!stdout.contains("diagnosis:"), "{stdout}");
}

/// Many connections: the table, then counts per failure with the first connection of each, and
/// the detail of one connection or of the failing ones on request.
#[test]
fn many_connections_get_a_table_a_failure_summary_and_details_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let merged = dir.path().join("all.pcapng");
    let names = [
        "healthy-nla.pcapng",
        "wrong-password.pcapng",
        "tls-reset-at-client-hello.pcapng",
        "x224-silent.pcapng",
        "nla-required.pcapng",
    ];
    let status = Command::new("mergecap")
        .arg("-w")
        .arg(&merged)
        .args(names.iter().map(|n| fixture(n)))
        .status()
        .expect("mergecap (apt-get install wireshark-common)");
    assert!(status.success());
    let out = analyze(&[merged.to_str().unwrap()], None);
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().next().unwrap_or("").contains("last stage"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 connection(s): 1 ok, 4 failed or cut short"),
        "{stdout}"
    );
    for (stage, verdict, class) in [
        ("credssp", "auth_failure (server)", "credentials"),
        ("tls", "reset (server)", "server configuration"),
        ("x224", "negotiation_failure (server)", "policy"),
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(stage)
                && l.contains(verdict)
                && l.contains(class)
                && l.contains(" #")),
            "no summary line for {stage} {verdict}: {stdout}"
        );
    }
    assert!(!stdout.contains("diagnosis:"), "{stdout}");

    let out = analyze(&[merged.to_str().unwrap(), "--failed"], None);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("connection #").count(), 4, "{stdout}");
    assert_eq!(stdout.matches("diagnosis: ").count(), 4, "{stdout}");
    assert!(!stdout.contains("every stage passed"), "{stdout}");

    let wrong_password = stdout
        .split("connection #")
        .find(|c| c.contains("STATUS_LOGON_FAILURE"))
        .and_then(|c| c.split_whitespace().next())
        .expect("the failed logon is one of them")
        .to_owned();
    let out = analyze(
        &[merged.to_str().unwrap(), "--connection", &wrong_password],
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("connection #").count(), 1, "{stdout}");
    assert!(stdout.contains("diagnosis: credentials"), "{stdout}");

    let out = analyze(&[merged.to_str().unwrap(), "--connection", "9"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("holds 5 RDP connection(s)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn json_lines_from_standard_input() {
    let bytes = std::fs::read(fixture("wrong-password.pcapng")).expect("fixture");
    let out = analyze(&["--json", "-"], Some(&bytes));
    assert_eq!(out.status.code(), Some(6), "auth failure");
    let stdout = text(&out.stdout);
    let docs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(docs.len(), 1, "{stdout}");
    assert_eq!(docs[0]["connection"], 1);
    assert_eq!(docs[0]["last_stage"], "credssp");
    assert!(docs[0]["diagnosis"].is_object(), "{stdout}");
}

/// Two captures back to back (pcapng allows several sections), the second damaged by `damage`.
fn two_sections(damage: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture("healthy-nla.pcapng")).expect("fixture");
    let mut second = std::fs::read(fixture("x224-silent.pcapng")).expect("fixture");
    damage(&mut second);
    bytes.extend_from_slice(&second);
    bytes
}

fn json_docs(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn malformed_block_keeps_what_came_before_and_says_where() {
    // The second section's first block after its header gets an absurd length: an error with the
    // byte offset, the first section's connection still reported, exit code 7.
    let first_len = std::fs::metadata(fixture("healthy-nla.pcapng"))
        .expect("fixture")
        .len();
    let bytes = two_sections(|b| {
        let shb_len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        b[shb_len + 4..shb_len + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    });
    let out = analyze(&["--json", "-"], Some(&bytes));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "{stdout}{stderr}");
    let docs = json_docs(&stdout);
    assert_eq!(docs.len(), 1, "{stdout}");
    assert_eq!(docs[0]["last_stage"], "connected", "{stdout}");
    assert!(
        stderr.starts_with("error: malformed pcapng block"),
        "{stderr}"
    );
    let shb_len = {
        let b = std::fs::read(fixture("x224-silent.pcapng")).expect("fixture");
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as u64
    };
    assert!(
        stderr.contains(&format!("at byte offset {}", first_len + shb_len)),
        "{stderr}"
    );
    assert!(stderr.contains("the 1 connection(s) before"), "{stderr}");
}

#[test]
fn capture_cut_short_is_a_warning_not_a_failure() {
    // The last record cut in the middle (a capture stopped abruptly): both connections are
    // reported, the verdicts decide the exit code, and a warning says what was lost.
    let bytes = two_sections(|b| b.truncate(b.len() - 10));
    let out = analyze(&["--json", "-"], Some(&bytes));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let docs = json_docs(&stdout);
    assert_eq!(docs.len(), 2, "{stdout}{stderr}");
    assert_eq!(docs[0]["last_stage"], "connected", "{stdout}");
    assert!(
        stderr.starts_with("warning: the capture was cut short"),
        "{stderr}"
    );
    assert!(stderr.contains("byte offset"), "{stderr}");
    // The cut took x224-silent's ending with it: its connection is still in the x224 stage when the
    // capture ends, which is exit code 8 (capture ended first), not a damaged-file 7.
    assert_eq!(docs[1]["verdict"]["kind"], "capture_ended", "{stdout}");
    assert_eq!(out.status.code(), Some(8), "{stdout}{stderr}");
}

#[test]
fn foreign_files_are_named_not_misread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let png = dir.path().join("capture.pcap");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").expect("write");
    let out = analyze(&[png.to_str().expect("path")], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a png image at byte offset 0"),
        "{}",
        text(&out.stderr)
    );
    let out = analyze(
        &[dir.path().join("absent.pcap").to_str().expect("path")],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("opening"),
        "{}",
        text(&out.stderr)
    );
    // A "key" that is not one is a usage error that names the file.
    let capture = fixture("healthy-nla.pcapng");
    let png_path = png.to_str().expect("path");
    let out = analyze(&["--rsa-key", png_path, &capture], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(png_path) && err.contains("no private key"),
        "{err}"
    );
}

/// An IPv4 endpoint: address and port.
type V4 = ([u8; 4], u16);

/// A classic pcap (Ethernet) of the given IPv4 UDP datagrams (src, dst, payload).
fn udp_pcap(datagrams: &[(V4, V4, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    v.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for (i, ((sip, sp), (dip, dp), payload)) in datagrams.iter().enumerate() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(*sip, *dip, 64)
            .udp(*sp, *dp)
            .write(&mut f, payload)
            .expect("udp packet");
        v.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(&f);
    }
    v
}

#[test]
fn rdp_over_udp_only_is_listed_not_reported_as_nothing() {
    // Three RDP-UDP SYNs (MS-RDPEUDP 3.1.5.1.1: snSourceAck -1, SYN|CORRELATION_ID|SYNEX, MTUs 1232,
    // padded to 1232 bytes) to a server that never answers, on a non-standard port; plus DNS noise.
    let mut syn = vec![0u8; 1232];
    syn[..4].copy_from_slice(&[0xFF; 4]);
    syn[4..8].copy_from_slice(&[0x00, 0x40, 0x18, 0x01]);
    syn[12..16].copy_from_slice(&[0x04, 0xd0, 0x04, 0xd0]);
    let c = ([10, 0, 0, 1], 50123);
    let s = ([10, 0, 0, 2], 4489);
    let dns = (([10, 0, 0, 1], 5353), ([10, 0, 0, 3], 53), vec![0u8; 40]);
    let file = udp_pcap(&[(c, s, syn.clone()), dns, (c, s, syn.clone()), (c, s, syn)]);
    let out = analyze(&["-"], Some(&file));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("1 rdp-udp flow(s)"), "{stdout}");
    assert!(
        stdout.contains("10.0.0.1:50123 -> 10.0.0.2:4489: rdp-udp syn sent 3 time(s) from frame 1"),
        "{stdout}"
    );
    assert!(stdout.contains("never answered"), "{stdout}");
    assert!(stderr.contains("only RDP over UDP"), "{stderr}");
    // Under --json standard output stays one document per RDP/TCP connection: here, none.
    let out = analyze(&["--json", "-"], Some(&file));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("rdp-udp flow"));
}

/// The fixture captures, sorted by name.
fn fixture_captures() -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(FIXTURES)
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcapng"))
        .collect();
    names.sort();
    names
}

/// `--jobs N`: the conversations of a capture decoded on N threads are printed exactly as one
/// thread prints them (same bytes, same order), on a capture of many connections (every fixture's
/// section, ten times over, in one pcapng: some repeats are read as one conversation reusing its
/// ports, which is fine here).
#[test]
fn jobs_print_the_same_bytes_in_the_same_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("many.pcapng");
    let mut bytes = Vec::new();
    let names = fixture_captures();
    for _ in 0..10 {
        for n in &names {
            bytes.extend(std::fs::read(n).expect("fixture"));
        }
    }
    std::fs::write(&big, &bytes).expect("write");
    let big = big.to_str().expect("path");
    for view in ["--json", "--stages", "--table"] {
        let one = analyze(&[view, "--jobs", "1", big], None);
        let lines = text(&one.stdout).lines().count();
        assert!(lines >= 40, "{view}: {lines} lines");
        for jobs in ["2", "4", "0"] {
            let many = analyze(&[view, "--jobs", jobs, big], None);
            assert_eq!(
                many.status.code(),
                one.status.code(),
                "{view} --jobs {jobs}"
            );
            assert!(
                many.stdout == one.stdout,
                "{view} --jobs {jobs} printed other bytes"
            );
        }
    }
}

/// A capture file is read through a memory map, its segments kept as slices of the map; standard
/// input is read and copied. Both print the same bytes for every fixture capture, and for all of
/// them in one file (conversations interleaving over many pages).
#[test]
fn a_mapped_file_and_standard_input_print_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = Vec::new();
    let mut checked = 0;
    for n in fixture_captures() {
        let bytes = std::fs::read(&n).expect("fixture");
        all.extend(&bytes);
        let path = n.to_str().expect("path");
        for view in ["--json", "--stages"] {
            let mapped = analyze(&[view, path], None);
            let piped = analyze(&[view, "-"], Some(&bytes));
            assert_eq!(mapped.status.code(), piped.status.code(), "{path} {view}");
            assert!(mapped.stdout == piped.stdout, "{path} {view}: other bytes");
            assert!(!mapped.stdout.is_empty(), "{path} {view}: nothing printed");
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} fixture captures");
    let big = dir.path().join("all.pcapng");
    std::fs::write(&big, &all).expect("write");
    let mapped = analyze(&["--json", big.to_str().expect("path")], None);
    let piped = analyze(&["--json", "-"], Some(&all));
    assert!(
        mapped.stdout == piped.stdout,
        "all fixtures in one file: other bytes"
    );
}

/// `analyze a b …`: the files' connections one file after the other, numbered on; a later file
/// that is not a capture is skipped with an error and exit code 7.
#[test]
fn several_files_are_read_in_turn() {
    let a = fixture("healthy-nla.pcapng");
    let b = fixture("tls-reset-at-client-hello.pcapng");
    let c = fixture("expired-certificate.pcapng");
    let strip = |out: &Output| -> Vec<serde_json::Value> {
        text(&out.stdout)
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v.as_object_mut().expect("object").remove("connection");
                v
            })
            .collect()
    };
    let all = analyze(&["--json", &a, &b, &c], None);
    let mut each = Vec::new();
    for f in [&a, &b, &c] {
        each.extend(strip(&analyze(&["--json", f], None)));
    }
    assert_eq!(strip(&all), each);
    let numbers: Vec<u64> = text(&all.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["connection"]
                .as_u64()
                .expect("connection")
        })
        .collect();
    assert_eq!(numbers, (1..=each.len() as u64).collect::<Vec<_>>());
    // A failing connection decides the exit code as for one file.
    assert_ne!(all.status.code(), Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"not a capture at all").expect("write");
    let out = analyze(&["--json", &a, junk.to_str().expect("path")], None);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("junk.pcap"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(strip(&out), strip(&analyze(&["--json", &a], None)));
}

/// `analyze a b … --jobs N`: the files read at the same time (N - 1 ahead of the one being
/// printed) give the bytes, the order, the skipped files and the exit code of reading them in turn,
/// with a missing file and a foreign one among them and a damaged one last.
#[test]
fn several_files_read_at_once_print_as_in_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = fixture_captures();
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"not a capture at all").expect("write");
    let cut = dir.path().join("cut.pcapng");
    let whole = std::fs::read(&names[0]).expect("fixture");
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).expect("write");
    let mut files: Vec<String> = names.iter().map(|p| p.display().to_string()).collect();
    files.insert(3, junk.display().to_string());
    files.insert(8, dir.path().join("missing.pcap").display().to_string());
    // A damaged file ends the run where it is damaged (as for one file): last.
    files.push(cut.display().to_string());
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    for view in ["--json", "--table"] {
        let mut args = vec![view, "--jobs", "1"];
        args.extend(&files);
        let one = analyze(&args, None);
        assert!(
            text(&one.stdout).lines().count() >= names.len(),
            "{view}: {}",
            text(&one.stdout)
        );
        for skipped in ["junk.pcap", "missing.pcap", "cut short"] {
            assert!(text(&one.stderr).contains(skipped), "{}", text(&one.stderr));
        }
        // The damaged one of several files is named.
        let named = format!("cut short in {}:", cut.display());
        assert!(text(&one.stderr).contains(&named), "{}", text(&one.stderr));
        for jobs in ["2", "3", "8"] {
            args[2] = jobs;
            let many = analyze(&args, None);
            assert_eq!(
                many.status.code(),
                one.status.code(),
                "{view} --jobs {jobs}"
            );
            assert!(
                many.stdout == one.stdout,
                "{view} --jobs {jobs} printed other bytes:\n{}\n---\n{}",
                text(&many.stdout),
                text(&one.stdout)
            );
            assert_eq!(
                text(&many.stderr),
                text(&one.stderr),
                "{view} --jobs {jobs}"
            );
        }
    }
}
