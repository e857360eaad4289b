//! `--html`: the report page in a real headless browser (Chromium from Debian).
//!
//! For every capture in fixtures/captures: `rdprobe analyze --html` writes the page; Chromium
//! renders it (DOM dump and screenshot in one run, every host name mapped to NOTFOUND and a network
//! log kept); the DOM holds every stage of the capture in the timeline and the ladder, the
//! screenshot is not blank, and the network log holds no request made by the page. The page's HTML
//! is committed as a snapshot (`UPDATE_EXPECT=1 cargo test --test html`).
//!
//! A live probe of a lab whose certificate subject, user name and cookie carry markup comes out
//! escaped, and neither the password nor the TLS secrets appear in the page.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use rdprobe::lab::spawn_lab;
use rdprobe::scenario::Scenario;

mod common;
use common::browser::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn stages_of(file: &Path) -> Vec<Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args(["analyze", "--json"])
        .arg(file)
        .output()
        .expect("run rdprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .map(|s| s["stage"].as_str().expect("stage name").to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn fixture_reports_render_in_a_browser() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("{ROOT}/fixtures/captures"))
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcapng" || e == "pcap"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixture captures missing");
    let tmp = tempfile::tempdir().expect("tempdir");
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let rel = file.strip_prefix(ROOT).expect("under the repository");
        let page = tmp.path().join(format!("{name}.html"));
        let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .current_dir(ROOT)
            .arg("analyze")
            .arg(rel)
            .arg("--html")
            .arg(&page)
            .output()
            .expect("run rdprobe");
        assert!(
            out.status.code().is_some_and(|c| c != 1 && c != 2),
            "{name}: {out:?}"
        );
        let html = std::fs::read_to_string(&page).expect("page written");
        assert_self_contained(&html, &name);
        expect_test::expect_file![format!("{ROOT}/tests/snapshots/html/{name}.html")]
            .assert_eq(&html);

        let dir = tmp.path().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let r = render(&page, &dir);
        let conns = stages_of(file);
        assert!(!conns.is_empty(), "{name}: no connection");
        // Every stage of every connection, in the timeline and as a band of the ladder.
        assert_eq!(
            r.dom.matches("<svg class=\"ladder\"").count(),
            conns.len(),
            "{name}: one ladder per connection"
        );
        let ladder = svg_of(&r.dom, "ladder");
        let timeline = svg_of(&r.dom, "timeline");
        for stage in &conns[0] {
            let tag = format!("data-stage=\"{stage}\"");
            assert!(
                ladder.contains(&tag),
                "{name}: stage {stage} not in the ladder"
            );
            assert!(
                timeline.contains(&tag),
                "{name}: stage {stage} not in the timeline"
            );
        }
        // Arrows between the two ends: at least one per PDU the report names.
        assert!(
            ladder.matches("class=\"arrow").count() >= 2,
            "{name}: no arrows in the ladder"
        );
        // The diagnosis is on the page.
        assert!(r.dom.contains("Diagnosis: "), "{name}: no diagnosis");
        // The screenshot shows something: many colours and a fair share of ink.
        let (colours, inked) = pixel_variety(&r.png);
        assert!(colours > 50, "{name}: {colours} colours only");
        assert!(inked > 0.03, "{name}: {:.1}% ink only", inked * 100.0);
        // No request left the page (the browser's own update checks aside).
        let page_requests: Vec<&String> = r
            .urls
            .iter()
            .filter(|u| !u.starts_with("file://") && !browser_own(u))
            .collect();
        assert!(
            page_requests.is_empty(),
            "{name}: requests {page_requests:?}"
        );
    }
}

/// The network log does show a page's fetch (so an empty list above means something).
#[test]
fn network_log_sees_a_fetching_page() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let page = tmp.path().join("fetch.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><p>x</p><img src=\"http://rdprobe-canary.invalid/x.png\"></body></html>",
    )
    .unwrap();
    let r = render(&page, tmp.path());
    assert!(
        r.urls.iter().any(|u| u.contains("rdprobe-canary.invalid")),
        "the canary fetch is not in the network log: {:?}",
        r.urls
    );
}

const HOSTILE_SUBJECT: &str = "<script>alert('subject')</script>";
const HOSTILE_USER: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_COOKIE: &str = "\"><svg onload=alert(2)>";
const PASSWORD: &str = "Pw-never-in-html-7341";

#[test]
fn hostile_names_are_escaped_and_secrets_absent() {
    let toml = format!(
        "name = \"hostile\"\n[tls]\nsubject = {}\n[[identity.users]]\nname = {}\npassword = \"{PASSWORD}\"\n",
        toml_str(HOSTILE_SUBJECT),
        toml_str(HOSTILE_USER)
    );
    let scenario = Scenario::from_toml(&toml).expect("scenario");
    let lab = spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), scenario).expect("lab starts");
    let tmp = tempfile::tempdir().expect("tempdir");
    let page = tmp.path().join("probe.html");
    let keylog = tmp.path().join("probe.keys");
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args(["probe", &lab.addr.to_string(), "--timeout", "5s"])
        .args(["--user", HOSTILE_USER, "--cookie", HOSTILE_COOKIE])
        .arg("--html")
        .arg(&page)
        .arg("--keylog")
        .arg(&keylog)
        .env("RDPROBE_PASSWORD", PASSWORD)
        .output()
        .expect("run rdprobe");
    lab.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let html = std::fs::read_to_string(&page).expect("page written");
    assert_self_contained(&html, "hostile");
    // The names are there, as text (the subject as RFC 4514 writes it: `<` and `>` backslashed).
    let subject = "CN=\\<script\\>alert('subject')\\</script\\>";
    assert!(!html.contains(HOSTILE_SUBJECT), "subject raw in the page");
    for s in [subject, HOSTILE_USER, HOSTILE_COOKIE] {
        assert!(
            html.contains(&rdprobe::html::escape(s)),
            "{s} not shown escaped"
        );
        assert!(!html.contains(s), "{s} raw in the page");
    }
    // No secret: the password, the TLS secrets of the key log.
    assert!(!html.contains(PASSWORD));
    let keys = std::fs::read_to_string(&keylog).expect("key log written");
    let mut secrets = 0;
    for line in keys.lines() {
        for field in line.split_whitespace().skip(1) {
            secrets += 1;
            assert!(!html.contains(field), "key log field {field} in the page");
            assert!(!html.to_lowercase().contains(&field.to_lowercase()));
        }
    }
    assert!(secrets >= 2, "the key log is empty: {keys}");
    // In the browser: the markup is text, no element was made from it.
    let r = render(&page, tmp.path());
    assert!(
        !r.dom.contains("<script>alert"),
        "script element in the DOM"
    );
    assert!(!r.dom.contains("<img src=\"x\""), "img element in the DOM");
    assert!(!r.dom.contains("onload=\"alert"), "svg handler in the DOM");
    assert!(
        r.dom
            .contains("CN=\\&lt;script\\&gt;alert('subject')\\&lt;/script\\&gt;"),
        "the subject is not shown as text"
    );
    assert!(r.dom.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(svg_of(&r.dom, "ladder").contains("data-stage=\"connected\""));
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[test]
fn enum_page_renders() {
    let scenario = rdprobe::scenario::builtin("healthy-nla").expect("built-in");
    let lab = spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), scenario).expect("lab starts");
    let tmp = tempfile::tempdir().expect("tempdir");
    let page = tmp.path().join("enum.html");
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args([
            "enum",
            &lab.addr.to_string(),
            "--timeout",
            "3s",
            "--no-ciphers",
        ])
        .arg("--html")
        .arg(&page)
        .output()
        .expect("run rdprobe");
    lab.stop();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let html = std::fs::read_to_string(&page).expect("page written");
    assert_self_contained(&html, "enum");
    let r = render(&page, tmp.path());
    for id in ["protocols", "tls", "credssp", "full"] {
        assert!(r.dom.contains(&format!("id=\"{id}\"")), "no {id} section");
    }
    assert!(r.dom.contains("PROTOCOL_HYBRID_EX"));
    assert!(
        r.dom.contains("Certificate: problems found"),
        "self-signed lab certificate"
    );
    let (colours, inked) = pixel_variety(&r.png);
    assert!(
        colours > 50 && inked > 0.03,
        "{colours} colours, {inked} ink"
    );
}

/// A capture of several connections: one section each, the index and the failure counts first.
#[test]
fn many_connections_share_one_page_with_an_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // pcapng sections may follow one another: two captures make one file of two connections.
    let mut bytes = std::fs::read(format!("{ROOT}/fixtures/captures/healthy-nla.pcapng")).unwrap();
    bytes.extend(
        std::fs::read(format!("{ROOT}/fixtures/captures/reset-in-credssp.pcapng")).unwrap(),
    );
    let capture = tmp.path().join("two.pcapng");
    std::fs::write(&capture, bytes).unwrap();
    let page = tmp.path().join("two.html");
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .arg("analyze")
        .arg(&capture)
        .arg("--html")
        .arg(&page)
        .output()
        .expect("run rdprobe");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let html = std::fs::read_to_string(&page).expect("page written");
    assert_self_contained(&html, "two");
    let r = render(&page, tmp.path());
    assert_eq!(r.dom.matches("<svg class=\"ladder\"").count(), 2);
    assert!(r
        .dom
        .contains("2 connection(s): 1 ok, 1 failed or cut short"));
    // Connections are numbered in the order they began: the reset one (captured earlier) is #1.
    assert!(
        r.dom.contains("<a href=\"#c1\">#1</a>"),
        "the failure links to its connection"
    );
    assert!(r.dom.contains("id=\"c1\"") && r.dom.contains("id=\"c2\""));
    // The index comes first on screen although it is written last (CSS order).
    assert!(r.dom.contains("#index{order:-1}"));

    // --connection 1: that one alone.
    let one = tmp.path().join("one.html");
    let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .arg("analyze")
        .arg(&capture)
        .args(["--connection", "1", "--html"])
        .arg(&one)
        .output()
        .expect("run rdprobe");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let html = std::fs::read_to_string(&one).expect("page written");
    assert_eq!(html.matches("<svg class=\"ladder\"").count(), 1);
    assert!(html.contains("Connection #1") && html.contains("RST from the server"));
    assert!(!html.contains("Connection #2"));
}
