//! `rdprobe check` as CI runs it: expectations that hold and expectations that break, against real
//! xrdp and freerdp-shadow and against lab scenarios that check serves itself; the JUnit report
//! (testcases, failures, their messages and evidence), the JSON lines, the exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn check(file: &Path, junit: &Path, json: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdprobe"));
    cmd.args(["check", file.to_str().unwrap(), "--junit"])
        .arg(junit)
        .arg("--json")
        .arg(json)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rdprobe check")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `<testcase>` element named `name`, up to its end.
fn testcase<'a>(xml: &'a str, name: &str) -> &'a str {
    let start = xml
        .find(&format!("<testcase name=\"{name}\""))
        .unwrap_or_else(|| panic!("no testcase {name} in {xml}"));
    let end = xml[start..].find("</testcase>").expect("end") + start;
    &xml[start..end]
}

#[test]
fn expectations_against_xrdp_freerdp_shadow_and_the_lab() {
    let xrdp = Xrdp::start(XrdpOpts::tls()).expect("start xrdp (apt-get install xrdp)");
    let shadow = FreerdpShadow::start("nla", &[("probe", "right-pw")])
        .expect("start freerdp-shadow-cli (apt-get install freerdp2-shadow-x11 xvfb winpr-utils)");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("expectations.toml");
    // The example of the documentation, on the ports of the servers started here, and more.
    std::fs::write(
        &file,
        format!(
            r#"
[defaults]
timeout = "5s"

[[target]]
name = "tls server"
address = "{xrdp}"
expect.stage = "connected"
expect.selected_protocol = "SSL"
expect.tls_min_version = "1.2"
expect.cert_days_left_min = 30

[[target]]
name = "nla server rejects a wrong password"
address = "{shadow}"
user = "probe"
password_env = "BAD_PW"
expect.fails_at = "credssp"
expect.verdict = "auth_failure"

[[target]]
name = "nla server takes the right password"
address = "{shadow}"
user = "probe"
password_env = "GOOD_PW"
expect.stage = "credssp"
expect.selected_protocol = "HYBRID"
expect.nla_required = true

[[target]]
name = "xrdp does not require nla"
address = "{xrdp}"
expect.nla_required = true
expect.cert_days_left_min = 400

[[target]]
name = "lab wrong password"
scenario = "wrong-password"
user = "user"
password_env = "GOOD_PW"
expect.fails_at = "credssp"
expect.ntstatus = "STATUS_LOGON_FAILURE"

[[target]]
name = "lab healthy tls must reset"
scenario = "healthy-tls"
expect.fails_at = "tls"
expect.verdict = "reset"
expect.max_ms = 10000
"#,
            xrdp = xrdp.target(),
            shadow = shadow.target()
        ),
    )
    .expect("write expectations");
    let junit = dir.path().join("report.xml");
    let json = dir.path().join("results.jsonl");
    let out = check(
        &file,
        &junit,
        &json,
        &[("BAD_PW", "wrong-pw"), ("GOOD_PW", "right-pw")],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(11), "some expectations break");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        xml.contains("tests=\"6\" failures=\"2\" errors=\"0\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 6, "{xml}");
    for ok in [
        "tls server",
        "nla server rejects a wrong password",
        "nla server takes the right password",
        "lab wrong password",
    ] {
        assert!(!testcase(&xml, ok).contains("<failure"), "{ok}: {xml}");
    }
    // xrdp selects TLS for a TLS-only client, and its certificate has 365 days, not 400.
    let xrdp_case = testcase(&xml, "xrdp does not require nla");
    assert_eq!(xrdp_case.matches("<failure ").count(), 2, "{xrdp_case}");
    assert!(
        xrdp_case.contains("message=\"expected nla_required = true\""),
        "{xrdp_case}"
    );
    assert!(
        xrdp_case.contains("message=\"expected cert_days_left_min = 400\"")
            && xrdp_case.contains("day(s) left"),
        "{xrdp_case}"
    );
    // A healthy server connects: the negative expectation breaks, with what happened instead.
    let lab_case = testcase(&xml, "lab healthy tls must reset");
    assert!(lab_case.contains("expected fails_at = tls"), "{lab_case}");
    assert!(lab_case.contains("observed: ok at connected"), "{lab_case}");
    assert!(lab_case.contains("expected verdict = reset"), "{lab_case}");

    // One JSON line per target, with its outcomes and the probe's report.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .expect("json written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["name"], "tls server");
    assert_eq!(lines[0]["report"]["last_stage"], "connected");
    assert!(lines[0]["outcomes"]
        .as_array()
        .is_some_and(|o| o.len() == 4));
    assert_eq!(lines[1]["report"]["verdict"]["kind"], "auth_failure");
    // The table people read names every broken expectation.
    assert!(
        stdout.contains("FAIL xrdp does not require nla"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS tls server"), "{stdout}");
    // No password in anything check wrote.
    for (what, bytes) in [
        ("stdout", out.stdout.clone()),
        ("junit", xml.into_bytes()),
        ("json", std::fs::read(&json).unwrap()),
    ] {
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains("right-pw") && !hay.contains("wrong-pw"),
            "{what}"
        );
    }
}

#[test]
fn all_expectations_hold_exit_zero_and_bad_files_exit_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ok.toml");
    std::fs::write(
        &file,
        r#"
[[target]]
name = "nla required"
scenario = "nla-required"
expect.stage = "x224"
expect.nla_required = true

[[target]]
name = "tls connects fast"
scenario = "healthy-tls"
expect.stage = "connected"
expect.stage_max_ms = { x224 = 2000, tls = 2000 }

[[target]]
name = "tls only is refused for nla"
scenario = "nla-required"
security = ["ssl"]
expect.fails_at = "x224"
expect.cause = "nla_required"
"#,
    )
    .unwrap();
    let junit = dir.path().join("ok.xml");
    let json = dir.path().join("ok.jsonl");
    let out = check(&file, &junit, &json, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"3\" failures=\"0\""), "{xml}");
    let lines = std::fs::read_to_string(&json).unwrap();
    assert!(
        lines.contains(r#""expectation":"cause = nla_required","held":true"#),
        "{lines}"
    );

    // A typo is an error before anything runs, naming the target and the value.
    std::fs::write(
        &file,
        "[[target]]\nname = \"t\"\nscenario = \"healthy-tls\"\nexpect.fails_at = \"tsl\"\n",
    )
    .unwrap();
    let out = check(&file, &junit, &json, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("target `t`: unknown stage `tsl`"),
        "{}",
        text(&out.stderr)
    );
    // A cause id that does not exist is refused, with the list of the known ones.
    std::fs::write(
        &file,
        "[[target]]\nname = \"t\"\nscenario = \"healthy-tls\"\nexpect.cause = \"nla_requird\"\n",
    )
    .unwrap();
    let out = check(&file, &junit, &json, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown cause id `nla_requird`; known ids: ")
            && err.contains("nla_required, ")
            && err.contains("gw_tls_cert_expired"),
        "{err}"
    );
    // A password variable that is not set.
    std::fs::write(
        &file,
        "[[target]]\nname = \"t\"\naddress = \"127.0.0.1:1\"\nuser = \"u\"\npassword_env = \"NOT_SET_ANYWHERE\"\n",
    )
    .unwrap();
    let out = check(&file, &junit, &json, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("NOT_SET_ANYWHERE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn gateway_expectations_through_the_lab_rd_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.toml");
    // Lab gateway scenarios as targets: check serves each behind the lab's RD Gateway.
    std::fs::write(
        &file,
        r#"
[defaults]
timeout = "3s"
deadline = "20s"

[[target]]
name = "healthy gateway reaches connected"
scenario = "gw-healthy"
gateway = "lab"
address = "rdp01.corp.example"
user = "user"
password_env = "LAB_PW"
expect.stage = "connected"
expect.stage_max_ms = { gw_tunnel = 5000 }

[[target]]
name = "rap denies rdp01"
scenario = "gw-rap-denied"
gateway = "lab"
address = "rdp01"
user = "user"
password_env = "LAB_PW"
expect.fails_at = "gw_channel"
expect.gateway_error = "E_PROXY_RAP_ACCESSDENIED"

[[target]]
name = "wrong gateway password is a 401"
scenario = "gw-healthy"
gateway = "lab"
user = "user"
password_env = "LAB_PW"
gateway_password_env = "WRONG_PW"
expect.fails_at = "gw_auth"
expect.http_status = 401

[[target]]
name = "rap denial expected but the gateway lets it through"
scenario = "gw-healthy"
gateway = "lab"
address = "rdp01"
user = "user"
password_env = "LAB_PW"
expect.fails_at = "gw_channel"
expect.gateway_error = "0x800759DA"

[[target]]
name = "forbidden is a 403 not a 401"
scenario = "gw-forbidden"
gateway = "lab"
user = "user"
password_env = "LAB_PW"
expect.fails_at = "gw_http"
expect.http_status = 401
"#,
    )
    .expect("write");
    let junit = dir.path().join("junit.xml");
    let json = dir.path().join("results.jsonl");
    let out = check(
        &file,
        &junit,
        &json,
        &[("LAB_PW", "pass"), ("WRONG_PW", "Wr0ng-canary")],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(rdprobe::report::exit::EXPECTATION),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("5 target(s): 3 passed, 2 failed (3 broken expectation(s)), 0 error(s)"),
        "{stderr}"
    );
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(
        xml.contains("tests=\"5\" failures=\"2\" errors=\"0\""),
        "{xml}"
    );
    for name in [
        "healthy gateway reaches connected",
        "rap denies rdp01",
        "wrong gateway password is a 401",
    ] {
        let tc = testcase(&xml, name);
        assert!(!tc.contains("<failure"), "{tc}");
        assert!(tc.contains("via lab gateway 127.0.0.1:"), "{tc}");
    }
    // Both expectations broken, each with the evidence: the session went through.
    let tc = testcase(&xml, "rap denial expected but the gateway lets it through");
    assert_eq!(tc.matches("<failure ").count(), 2, "{tc}");
    assert!(tc.contains("expected fails_at = gw_channel"), "{tc}");
    assert!(tc.contains("expected gateway_error = 0x800759DA"), "{tc}");
    assert!(
        tc.contains("observed: no gateway error: ok at connected"),
        "{tc}"
    );
    // Right stage, wrong status: one failure naming what the gateway said.
    let tc = testcase(&xml, "forbidden is a 403 not a 401");
    assert_eq!(tc.matches("<failure ").count(), 1, "{tc}");
    assert!(tc.contains("expected http_status = 401"), "{tc}");
    assert!(tc.contains("observed: HTTP 403"), "{tc}");
    // The JSON lines carry the gateway stages; no password anywhere.
    let lines = std::fs::read_to_string(&json).expect("json");
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().expect("a line")).expect("json");
    assert_eq!(first["report"]["stages"][0]["stage"], "gw_tcp");
    assert_eq!(first["report"]["last_stage"], "connected");
    for s in [&stdout, &stderr, &xml, &lines] {
        assert!(!s.contains("Wr0ng-canary"));
    }
}

#[test]
fn gateway_expectations_need_a_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[target]]\nname = \"direct\"\naddress = \"127.0.0.1:9\"\nexpect.fails_at = \"gw_channel\"\n",
    )
    .expect("write");
    let out = check(
        &file,
        &dir.path().join("j.xml"),
        &dir.path().join("r.jsonl"),
        &[],
    );
    assert_eq!(out.status.code(), Some(rdprobe::report::exit::USAGE));
    let err = text(&out.stderr);
    assert!(
        err.contains("direct") && err.contains("needs gateway"),
        "{err}"
    );
}
