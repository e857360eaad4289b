//! Snapshot of `analyze` over the captures in fixtures/captures (made by `rdprobe demo` and by probing
//! lab scenarios): per connection the stages with their verdicts and the key facts. A change in the
//! decoder's output shows up as a diff here (`UPDATE_EXPECT=1 cargo test --test analyze_snapshots`).

use std::fmt::Write as _;

use rdprobe::capture::reader::{read_conversations, ReaderOptions};
use rdprobe::stage::Verdict;

const KEYS: &[&str] = &[
    "requested_protocols",
    "cookie",
    "selected_protocol",
    "failure_name",
    "version",
    "cipher_suite",
    "cert_expired",
    "cert_self_signed",
    "alert",
    "ntlm_os_version",
    "early_user_auth",
    "error_name",
    "encryption_method",
    "encryption_level",
    "result",
    "license_error_code",
    "status",
    "scheme",
    "hresult_name",
    "name_form",
];

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Ok => "ok".into(),
        Verdict::Failed { kind, by } => format!("{} by {by}", kind.name()),
    }
}

#[test]
fn analyze_fixture_captures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/captures");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    let mut out = String::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let r = std::io::BufReader::new(std::fs::File::open(&f).unwrap());
        for t in read_conversations(r, ReaderOptions::default()).unwrap() {
            let report = rdprobe::decode::decode(&t.unwrap()).report;
            writeln!(
                out,
                "{name}: {} at {}",
                verdict(&report.verdict),
                report.last_stage
            )
            .unwrap();
            for s in &report.stages {
                let mut facts = Vec::new();
                for k in KEYS {
                    if let Some(v) = s.facts.get(*k) {
                        facts.push(format!("{k}={v}"));
                    }
                }
                writeln!(
                    out,
                    "  {:<12} {:<28} {}",
                    s.stage.as_str(),
                    verdict(&s.verdict),
                    facts.join(" ")
                )
                .unwrap();
            }
        }
    }
    expect_test::expect_file!["snapshots/analyze_fixtures.txt"].assert_eq(&out);
}

/// Every PDU name the decoder writes into a `pdus` fact of a fixture (or corpus) capture reads back as a
/// typed kind (never kept as an unknown name) that prints the same name: replay and diagnose, which
/// read reports back from JSON, see the kinds the machine matched.
#[test]
fn every_pdu_name_reads_back_as_its_kind() {
    use rdprobe::decode::pdu::{stage_pdus, PduKind};
    let root = env!("CARGO_MANIFEST_DIR");
    // The fixtures, and the public corpus beside the checkout when it is there (read only).
    let dirs = [
        format!("{root}/fixtures/captures"),
        format!("{root}/../shared/corpus"),
        format!("{root}/../shared/corpus/more"),
    ];
    let files = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"));
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let r = std::io::BufReader::new(std::fs::File::open(&f).unwrap());
        let Ok(conversations) = read_conversations(r, ReaderOptions::default()) else {
            continue;
        };
        for t in conversations.flatten() {
            let report = rdprobe::decode::decode(&t).report;
            for s in &report.stages {
                let listed = s
                    .facts
                    .get("pdus")
                    .and_then(|v| v.as_array())
                    .map_or(0, Vec::len);
                let read: Vec<_> = stage_pdus(s).collect();
                assert_eq!(read.len(), listed, "{}: {}", f.display(), s.stage);
                for p in read {
                    assert!(
                        !matches!(p.kind, PduKind::Other(_)),
                        "{}: {} {:?}",
                        f.display(),
                        s.stage,
                        p.kind
                    );
                    seen.insert(p.kind.to_string());
                }
            }
        }
    }
    // The fixtures cover every layer: X.224, TLS, CredSSP, MCS, share PDUs.
    for name in [
        "connection request",
        "client hello",
        "change cipher spec",
        "mcs connect initial",
        "attach user confirm",
        "demand active",
        "font map",
    ] {
        assert!(seen.contains(name), "{name} not seen in {seen:?}");
    }
    assert!(
        seen.iter().any(|n| n.starts_with("ntlm challenge")),
        "{seen:?}"
    );
}
