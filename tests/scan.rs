//! `rdprobe scan` and `rdprobe diff` end to end, as processes: a mix of lab scenarios, a real xrdp,
//! closed ports and silent listeners, every result asserted; shards run as separate processes
//! into one store, disjoint and complete; a run interrupted by SIGINT resumed with nothing lost and
//! nothing done twice; `diff` finding a stage that now fails and a renewed certificate.
//! Every target is on 127.0.0.0/8: scan refuses anything else without --allow-remote.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use rdprobe::lab::{spawn_lab, LabHandle};

fn rdprobe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdprobe"));
    // A store in the caller's environment must not catch the test's scans.
    c.stdin(Stdio::null()).env_remove("RDPROBE_STORE");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lab(scenario: &str) -> LabHandle {
    spawn_lab(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        rdprobe::scenario::builtin(scenario).expect("built-in scenario"),
    )
    .expect("spawn lab")
}

fn lab_on(port: u16, scenario: &str) -> LabHandle {
    spawn_lab(
        SocketAddr::from(([127, 0, 0, 1], port)),
        rdprobe::scenario::builtin(scenario).expect("built-in scenario"),
    )
    .expect("spawn lab")
}

/// JSON lines of a scan, by target.
fn results(stdout: &str) -> BTreeMap<String, serde_json::Value> {
    let mut m = BTreeMap::new();
    for l in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let t = v["target"].as_str().expect("target").to_owned();
        assert!(m.insert(t.clone(), v).is_none(), "{t} reported twice");
    }
    m
}

fn outcome(v: &serde_json::Value) -> String {
    let kind = v["verdict"]["kind"].as_str().unwrap_or("ok");
    format!("{} {kind}", v["last_stage"].as_str().unwrap_or("?"))
}

fn e_count(r: &BTreeMap<String, serde_json::Value>, o: &str) -> usize {
    r.values().filter(|v| outcome(v) == o).count()
}

fn scan(args: &[&str]) -> Output {
    rdprobe().arg("scan").args(args).output().expect("run scan")
}

fn store_count(db: &Path, run: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open store");
    let mut st = conn
        .prepare(
            "SELECT t.target FROM targets t JOIN runs r ON r.id = t.run_id WHERE r.name = ?1 ORDER BY t.target",
        )
        .expect("query");
    st.query_map([run], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn scan_a_mix_of_real_servers_lab_scenarios_closed_ports_and_silent_listeners() {
    let xrdp = Xrdp::start(XrdpOpts::tls()).expect("start xrdp (apt-get install xrdp)");
    let healthy = lab("healthy-tls");
    let nla = lab("nla-required");
    let reset = lab("tls-reset-at-client-hello");
    let expired = lab("expired-certificate");
    let x224_silent = lab("x224-silent");
    let silent = BadServer::silent();
    let closed = closed_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("targets.txt");
    let p = |h: &LabHandle| h.addr.port();
    std::fs::write(
        &file,
        format!(
            "# a fleet\n{xrdp}   # real xrdp, TLS only\n127.0.0.1:{}\n127.0.0.1:{}\n127.0.0.1:{}\n\
             127.0.0.1:{}\n127.0.0.1:{}\n{}\n",
            p(&healthy),
            p(&nla),
            p(&reset),
            p(&expired),
            p(&x224_silent),
            silent.target(),
            xrdp = xrdp.target(),
        ),
    )
    .expect("write targets");
    // The closed port comes from the command line, next to the file.
    let closed_arg = format!("127.0.0.1:{closed}");
    let out = scan(&[
        file.to_str().unwrap(),
        &closed_arg,
        "--json",
        "--timeout",
        "1s",
        "--per-host",
        "8",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r = results(&stdout);
    assert_eq!(r.len(), 8, "{stdout}");
    let at = |port: u16| &r[&format!("127.0.0.1:{port}")];
    let x = at(xrdp.port());
    assert_eq!(outcome(x), "connected ok");
    assert_eq!(
        x["stages"][1]["facts"]["selected_protocol"], "PROTOCOL_SSL",
        "{x}"
    );
    assert_eq!(x["exit_code"], 0);
    assert!(x["diagnosis"]["fault_class"].is_string(), "{x}");
    assert_eq!(outcome(at(p(&healthy))), "connected ok");
    assert_eq!(e_count(&r, "connected ok"), 2);
    // Without credentials a probe stops after the NTLM CHALLENGE of an NLA server, by design.
    assert_eq!(outcome(at(p(&nla))), "credssp stopped");
    assert_eq!(outcome(at(p(&reset))), "tls reset");
    let e = at(p(&expired));
    assert_eq!(outcome(e), "credssp stopped");
    assert_eq!(e["stages"][2]["facts"]["cert_expired"], true, "{e}");
    let xs = at(p(&x224_silent));
    assert_eq!(outcome(xs), "x224 timed_out");
    assert_eq!(xs["exit_code"], 3);
    assert_eq!(outcome(at(silent.port())), "x224 timed_out");
    assert_eq!(outcome(at(closed)), "tcp refused");
    // The summary counts per last stage and verdict, and names the slowest stages.
    assert!(stderr.contains("8 target(s)"), "{stderr}");
    assert!(
        stderr.contains("failing 4 (tcp 1, x224 2, tls 1)"),
        "{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("x224 timed_out"))
        .expect("outcome row");
    assert!(line.trim_end().ends_with(" 2"), "{line}");
    assert!(stderr.contains("slowest stages:"), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", silent.port()))
            || stderr.contains(&format!("127.0.0.1:{}", p(&x224_silent))),
        "the silent listeners' x224 waits are the slowest: {stderr}"
    );

    // Without --json: one line per target.
    let out = scan(&[&format!("127.0.0.1:{}", p(&healthy)), &closed_arg]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("connected    ok"), "{stdout}");
    assert!(stdout.contains("tcp          refused"), "{stdout}");
}

#[test]
fn non_loopback_targets_are_refused_before_any_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("targets.txt");
    // One bad line at the end of a file: nothing runs, the loopback ones included.
    let healthy = lab("healthy-tls");
    std::fs::write(
        &file,
        format!("127.0.0.1:{}\n10.0.0.0/30\n", healthy.addr.port()),
    )
    .expect("write");
    for args in [
        vec![file.to_str().unwrap().to_owned()],
        vec!["192.0.2.1".into()],
        vec!["127.0.0.1".into(), "example.com:3389".into()],
        vec!["::2".into()],
    ] {
        let out = scan(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--allow-remote"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(healthy.connections_served(), 0, "nothing was probed");
}

#[test]
fn shards_as_processes_into_one_store_are_disjoint_and_complete() {
    let healthy = lab("healthy-tls");
    let closed = closed_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("results.db");
    let ports = format!("{},{closed}", healthy.addr.port());
    let n = 3;
    // 127.0.0.0/28 on two ports: 32 targets; the lab answers on 127.0.0.1 only.
    let children: Vec<_> = (1..=n)
        .map(|k| {
            let mut c = rdprobe();
            c.args(["scan", "127.0.0.0/28", "--ports", &ports, "--json"])
                .args(["--timeout", "2s", "--store"])
                .arg(&db)
                .args(["--run", "sharded"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if k == n {
                // The last shard finds its index like a Kubernetes Indexed Job pod.
                c.args(["--shard", &n.to_string()])
                    .env("JOB_COMPLETION_INDEX", (k - 1).to_string());
            } else {
                c.args(["--shard", &format!("{k}/{n}")]);
            }
            c.spawn().expect("spawn shard")
        })
        .collect();
    let mut union = BTreeSet::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("shard");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let r = results(&text(&out.stdout));
        assert!(!r.is_empty(), "shard {} got nothing", i + 1);
        for (t, v) in r {
            let expected = if t == format!("127.0.0.1:{}", healthy.addr.port()) {
                "connected ok"
            } else {
                "tcp refused"
            };
            assert_eq!(outcome(&v), expected, "{t}");
            assert!(union.insert(t.clone()), "{t} in two shards");
        }
    }
    assert_eq!(union.len(), 32);
    let stored = store_count(&db, "sharded");
    assert_eq!(stored.len(), 32);
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), union);
    assert_eq!(healthy.connections_served(), 1, "probed once");
}

#[test]
fn resume_after_sigint_finishes_the_rest_with_nothing_lost_or_done_twice() {
    let silent = BadServer::silent();
    let closed = closed_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("results.db");
    let first_json = dir.path().join("first.jsonl");
    // The silent listener first, so that a probe is in flight when the signal comes; then 32 refused
    // targets at 8 per second.
    let ports = closed.to_string();
    let args = |resume: bool, timeout: &str| {
        let mut v: Vec<String> = vec![
            "scan".into(),
            silent.target(),
            "127.0.0.0/27".into(),
            "--ports".into(),
            ports.clone(),
            "--rate".into(),
            "8/s".into(),
            "--timeout".into(),
            timeout.into(),
            "--json".into(),
            "--store".into(),
            db.display().to_string(),
            "--run".into(),
            "weekly".into(),
        ];
        if resume {
            v.push("--resume".into());
        }
        v
    };
    let mut child = rdprobe()
        .args(args(false, "10s"))
        .stdout(std::fs::File::create(&first_json).expect("create"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scan");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on the PID of the child this test spawned and has not waited for.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = child.wait().expect("wait");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err).expect("read");
    eprintln!("{err}");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("1 probe(s) in flight were abandoned"), "{err}");
    let first = results(&std::fs::read_to_string(&first_json).expect("read"));
    assert!(
        !first.is_empty() && first.len() < 32,
        "{} results before the signal",
        first.len()
    );
    assert!(!first.contains_key(&silent.target()), "still in flight");
    // Nothing lost: every result printed is committed.
    let stored = store_count(&db, "weekly");
    assert_eq!(
        stored.iter().cloned().collect::<BTreeSet<_>>(),
        first.keys().cloned().collect::<BTreeSet<_>>()
    );

    let mut resumed = rdprobe().args(args(true, "1s")).output().expect("resume");
    let err = text(&resumed.stderr);
    eprintln!("{err}");
    assert_eq!(resumed.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("{} target(s) already done", first.len())),
        "{err}"
    );
    let second = results(&text(&std::mem::take(&mut resumed.stdout)));
    // Nothing done twice, nothing left out.
    for t in second.keys() {
        assert!(!first.contains_key(t), "{t} probed again");
    }
    assert_eq!(first.len() + second.len(), 33);
    assert_eq!(outcome(&second[&silent.target()]), "x224 timed_out");
    assert_eq!(store_count(&db, "weekly").len(), 33);
}

#[test]
fn diff_finds_a_stage_that_now_fails_and_a_renewed_certificate() {
    let stays = lab("healthy-tls");
    let breaks = lab("healthy-tls");
    let renews = lab("healthy-tls");
    let closed = closed_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("results.db");
    let targets: Vec<String> = [
        stays.addr.port(),
        breaks.addr.port(),
        renews.addr.port(),
        closed,
    ]
    .iter()
    .map(|p| format!("127.0.0.1:{p}"))
    .collect();
    let run = |name: &str| -> String {
        let out = rdprobe()
            .arg("scan")
            .args(&targets)
            .args(["--json", "--store"])
            .arg(&db)
            .args(["--run", name])
            .output()
            .expect("scan");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, &out.stdout).expect("write");
        path.display().to_string()
    };
    let before = run("before");
    // The planted changes: one server now resets the TLS handshake, one has a new certificate.
    let (bp, rp) = (breaks.addr.port(), renews.addr.port());
    breaks.stop();
    renews.stop();
    let _broken = lab_on(bp, "tls-reset-at-client-hello");
    let mut sc = rdprobe::scenario::builtin("healthy-tls").expect("scenario");
    sc.tls.subject = "renewed.example".into();
    let _renewed = spawn_lab(SocketAddr::from(([127, 0, 0, 1], rp)), sc).expect("spawn lab");
    let after = run("after");

    let diff = |args: &[&str]| rdprobe().arg("diff").args(args).output().expect("diff");
    for out in [
        diff(&[&before, &after]),
        diff(&["--store", db.to_str().unwrap(), "before", "after"]),
    ] {
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(12), "{stdout}{stderr}");
        assert_eq!(stdout.lines().count(), 2, "{stdout}");
        let broke = stdout
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{bp}")))
            .expect("the broken server");
        assert!(broke.starts_with("REGRESSED"), "{broke}");
        assert!(
            broke.contains("!outcome: connected ok -> tls reset"),
            "{broke}"
        );
        let renewed = stdout
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{rp}")))
            .expect("the renewed certificate");
        assert!(renewed.starts_with("changed"), "{renewed}");
        assert!(renewed.contains("certificate: sha256 "), "{renewed}");
        assert!(
            stderr.contains("4 target(s) compared: 2 changed, 1 regressed"),
            "{stderr}"
        );
    }
    // JSON lines name every change.
    let out = diff(&[&before, &after, "--json"]);
    let v: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(v.len(), 2);
    assert!(v.iter().any(|d| d["regression"] == true
        && d["changes"][0]["what"] == "outcome"
        && d["changes"][0]["after"] == "tls reset"));
    // Only the renewed certificate: a change without regression.
    let out = diff(&[&before, &before]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn credentials_and_the_per_host_limit() {
    // With --user every target gets the logon (password from the environment, never argv).
    let good = lab("healthy-nla");
    let bad = lab("wrong-password");
    let out = rdprobe()
        .args(["scan", "--json", "--user", "user", "--per-host", "2"])
        .arg(format!("127.0.0.1:{}", good.addr.port()))
        .arg(format!("127.0.0.1:{}", bad.addr.port()))
        .env("RDPROBE_PASSWORD", "pass")
        .output()
        .expect("scan");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!stdout.contains("\"pass\""), "the password is never output");
    let r = results(&stdout);
    assert_eq!(
        outcome(&r[&format!("127.0.0.1:{}", good.addr.port())]),
        "connected ok"
    );
    assert_eq!(
        outcome(&r[&format!("127.0.0.1:{}", bad.addr.port())]),
        "credssp auth_failure"
    );

    // Two silent listeners on one host: one at a time by default, side by side with --per-host 2.
    let (s1, s2) = (BadServer::silent(), BadServer::silent());
    let timed = |per_host: &str| {
        let start = std::time::Instant::now();
        let out = scan(&[
            &s1.target(),
            &s2.target(),
            "--timeout",
            "1s",
            "--per-host",
            per_host,
        ]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(text(&out.stdout).matches("timed_out").count(), 2);
        start.elapsed()
    };
    let serial = timed("1");
    let parallel = timed("2");
    assert!(serial >= Duration::from_millis(1950), "{serial:?}");
    assert!(parallel < Duration::from_millis(1900), "{parallel:?}");
}

#[test]
fn scan_enum_enumerates_every_target_and_the_store_keeps_it() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp (apt-get install xrdp)");
    let healthy = lab("healthy-tls");
    let closed = closed_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("results.db");
    let lab_t = format!("127.0.0.1:{}", healthy.addr.port());
    let xrdp_t = format!("127.0.0.1:{}", xrdp.port());
    let closed_t = format!("127.0.0.1:{closed}");
    let out = scan(&[
        &lab_t,
        &xrdp_t,
        &closed_t,
        "--enum",
        "--no-ciphers",
        "--json",
        "--timeout",
        "3s",
        "--deadline",
        "60s",
        "--store",
        db.to_str().expect("path"),
        "--run",
        "enum",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let r = results(&text(&out.stdout));
    assert_eq!(r.len(), 3, "{r:?}");
    // The schema of `enum --json`, plus the target: no probe report fields.
    for v in r.values() {
        assert_eq!(v["mode"], "enum");
        assert!(
            v["protocols"].is_array() && v.get("last_stage").is_none(),
            "{v}"
        );
    }
    let accepted = |v: &serde_json::Value, p: &str| {
        v["protocols"]
            .as_array()
            .expect("protocols")
            .iter()
            .any(|n| n["offered"][0] == p && n["accepted"] == true)
    };
    let tls_versions = |v: &serde_json::Value| -> Vec<String> {
        v["tls"]["versions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["accepted"] == true)
                    .map(|x| x["version"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let l = &r[&lab_t];
    assert!(accepted(l, "PROTOCOL_SSL"), "{l}");
    assert!(!tls_versions(l).is_empty(), "{l}");
    let x = &r[&xrdp_t];
    assert!(
        accepted(x, "PROTOCOL_SSL") && accepted(x, "PROTOCOL_RDP"),
        "{x}"
    );
    assert!(tls_versions(x).contains(&"TLSv1.2".to_owned()), "{x}");
    assert!(x["rdp_security"]["methods"].is_array(), "{x}");
    let c = &r[&closed_t];
    assert!(
        c["protocols"]
            .as_array()
            .expect("protocols")
            .iter()
            .all(|n| n["error"].is_string()),
        "{c}"
    );
    // The summary counts enumerations by outcome.
    assert!(err.contains("enum ok"), "{err}");
    assert!(err.contains("enum unreachable"), "{err}");
    // The store keeps every enumeration: its row, the JSON line, each section as a fact.
    let conn = rusqlite::Connection::open(&db).expect("open store");
    let rows: Vec<(String, String, String, Option<String>, String)> = conn
        .prepare(
            "SELECT target, last_stage, verdict, tls_version, result FROM targets ORDER BY target",
        )
        .expect("query")
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(rows.len(), 3);
    for (t, stage, verdict, tls, json) in &rows {
        assert_eq!(stage, "enum");
        let v: serde_json::Value = serde_json::from_str(json).expect("stored json");
        assert_eq!(&v, &r[t], "the stored line is the printed one");
        if *t == closed_t {
            assert_eq!(verdict, "unreachable");
            assert_eq!(tls, &None);
        } else {
            assert_eq!(verdict, "ok");
            assert!(
                tls.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
                "{t}: {tls:?}"
            );
        }
    }
    let facts: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM facts WHERE stage = 'enum' AND key = 'protocols'",
            [],
            |r| r.get(0),
        )
        .expect("facts");
    assert_eq!(facts, 3);
}
