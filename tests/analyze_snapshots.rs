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
