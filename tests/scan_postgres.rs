//! `rdprobe scan --store postgres://…` against a real PostgreSQL server that the test starts from
//! Debian's packages: N shards as N processes (each finding its share like a pod of a Kubernetes
//! Indexed Job, from JOB_COMPLETION_INDEX) write one run and every target is there exactly once;
//! `--resume` skips what the run already has; `diff` compares two runs of the shared store; a
//! password on the command line is refused. Every target is on 127.0.0.0/8.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use rdprobe::lab::{spawn_lab, LabHandle};

fn rdprobe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdprobe"));
    c.stdin(Stdio::null()).env_remove("RDPROBE_STORE");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lab_on(port: u16, scenario: &str) -> LabHandle {
    spawn_lab(
        SocketAddr::from(([127, 0, 0, 1], port)),
        rdprobe::scenario::builtin(scenario).expect("built-in scenario"),
    )
    .expect("spawn lab")
}

fn targets_of(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["target"].as_str().expect("target").to_owned()
        })
        .collect()
}

fn start_pg() -> Postgres {
    Postgres::start().unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn n_shards_as_n_processes_into_one_postgres_store_find_every_target_exactly_once() {
    let pg = start_pg();
    let url = pg.create_db("shards");
    let healthy = lab_on(0, "healthy-tls");
    let closed = closed_port();
    let ports = format!("{},{closed}", healthy.addr.port());
    let n = 4;
    // 127.0.0.0/28 on two ports: 32 targets, split over 4 pods of an Indexed Job: each gets
    // `--shard 4` and its index from JOB_COMPLETION_INDEX, the store URL from RDPROBE_STORE.
    let children: Vec<_> = (0..n)
        .map(|index| {
            rdprobe()
                .args(["scan", "127.0.0.0/28", "--ports", &ports, "--json"])
                .args([
                    "--timeout",
                    "2s",
                    "--run",
                    "nightly",
                    "--shard",
                    &n.to_string(),
                ])
                .env("JOB_COMPLETION_INDEX", index.to_string())
                .env("RDPROBE_STORE", &url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn shard")
        })
        .collect();
    let mut printed = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("shard");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "shard {i}: {err}");
        assert!(err.contains("run `nightly` in postgres://"), "{err}");
        let t = targets_of(&text(&out.stdout));
        assert!(!t.is_empty(), "shard {i} got nothing");
        printed.extend(t);
    }
    let union: BTreeSet<_> = printed.iter().cloned().collect();
    assert_eq!(printed.len(), 32, "a target printed by two shards");
    assert_eq!(union.len(), 32);
    let mut db = pg.client("shards");
    // Exactly once in the store: one row per target, the key of the table never doubled.
    let rows = db
        .query(
            "SELECT t.target, COUNT(*) FROM targets t JOIN runs r ON r.id = t.run_id
             WHERE r.name = 'nightly' GROUP BY t.target ORDER BY t.target",
            &[],
        )
        .expect("query");
    let stored: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(stored, union);
    assert!(rows.iter().all(|r| r.get::<_, i64>(1) == 1));
    let runs: i64 = db
        .query_one("SELECT COUNT(*) FROM runs", &[])
        .expect("runs")
        .get(0);
    assert_eq!(runs, 1, "the shards joined one run");
    // The healthy target's row has its columns, stages and facts.
    let key = format!("127.0.0.1:{}", healthy.addr.port());
    let row = db
        .query_one(
            "SELECT last_stage, verdict, failing, selected_protocol, tls_version FROM targets WHERE target = $1",
            &[&key],
        )
        .expect("healthy row");
    assert_eq!(row.get::<_, String>(0), "connected");
    assert_eq!(row.get::<_, String>(1), "ok");
    assert!(!row.get::<_, bool>(2));
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("PROTOCOL_SSL")
    );
    assert!(row.get::<_, Option<String>>(4).is_some());
    let stages: i64 = db
        .query_one("SELECT COUNT(*) FROM stages WHERE target = $1", &[&key])
        .expect("stages")
        .get(0);
    assert!(stages >= 5, "{stages} stages stored");
    let refused: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM targets WHERE last_stage = 'tcp' AND verdict = 'refused' AND failing",
            &[],
        )
        .expect("refused")
        .get(0);
    assert_eq!(refused, 31);
    assert_eq!(healthy.connections_served(), 1, "probed once");
}

#[test]
fn postgres_store_resumes_a_run_and_diffs_two_runs() {
    let pg = start_pg();
    let url = pg.create_db("weekly");
    let port = free_port();
    let lab = lab_on(port, "healthy-tls");
    let closed = closed_port();
    let ports = format!("{port},{closed}");
    let scan = |targets: &str, run: &str, resume: bool| {
        let mut c = rdprobe();
        c.args([
            "scan",
            targets,
            "--ports",
            &ports,
            "--json",
            "--timeout",
            "2s",
        ])
        .args(["--store", &url, "--run", run]);
        if resume {
            c.arg("--resume");
        }
        let out = c.output().expect("scan");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        (targets_of(&text(&out.stdout)), err)
    };
    // The first attempt got through 127.0.0.1 only; the resumed run covers the /30 and skips it.
    let (first, _) = scan("127.0.0.1", "before", false);
    assert_eq!(first.len(), 2);
    let (second, err) = scan("127.0.0.0/30", "before", true);
    assert!(err.contains("2 target(s) already done"), "{err}");
    assert!(err.contains("2 already done (skipped)"), "{err}");
    assert_eq!(second.len(), 6);
    for t in &second {
        assert!(!first.contains(t), "{t} probed twice");
    }
    // A run name already in the store is not mixed into by mistake.
    let mut again = rdprobe();
    let out = again
        .args([
            "scan",
            "127.0.0.1",
            "--ports",
            &ports,
            "--store",
            &url,
            "--run",
            "before",
        ])
        .output()
        .expect("scan");
    assert_eq!(out.status.code(), Some(rdprobe::report::exit::USAGE));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );

    // The server goes away: the next run finds its port refused, and diff says it regressed.
    lab.stop();
    let (after, _) = scan("127.0.0.1", "after", false);
    assert_eq!(after.len(), 2);
    let out = rdprobe()
        .args(["diff", "--store", &url, "before", "after", "--json"])
        .output()
        .expect("diff");
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(rdprobe::report::exit::DIFF_REGRESSED),
        "{err}"
    );
    let changed: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let regressed: Vec<_> = changed.iter().filter(|c| c["regression"] == true).collect();
    assert_eq!(regressed.len(), 1, "{changed:?}");
    assert_eq!(regressed[0]["target"], format!("127.0.0.1:{port}"));
    assert_eq!(changed.len(), 7, "one regression, six missing: {changed:?}");
    assert!(err.contains("1 regressed"), "{err}");
    // 6 targets of `before` are not in `after`.
    assert!(err.contains("6 missing"), "{err}");
}

#[test]
fn a_password_in_a_store_url_on_the_command_line_is_refused() {
    let out = rdprobe()
        .args([
            "scan",
            "127.0.0.1",
            "--store",
            "postgres://scan:Secr3t-canary@127.0.0.1:9/db",
        ])
        .output()
        .expect("scan");
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(rdprobe::report::exit::USAGE),
        "{err}"
    );
    assert!(err.contains("PGPASSWORD"), "{err}");
    assert!(!err.contains("Secr3t-canary"), "{err}");
    // From the environment (a Kubernetes Secret) the same URL is taken: the connection is tried
    // (and refused on the closed port), and the password is not shown.
    let out = rdprobe()
        .args(["scan", "127.0.0.1", "--ports", "9"])
        .env(
            "RDPROBE_STORE",
            format!(
                "postgres://scan:Secr3t-canary@127.0.0.1:{}/db",
                closed_port()
            ),
        )
        .output()
        .expect("scan");
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("PostgreSQL at postgres://scan@127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("Secr3t-canary"), "{err}");
}
