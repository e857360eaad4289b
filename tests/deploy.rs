//! The shipped deployment example: `deploy/scan-job.yaml` (a Kubernetes Indexed Job) and
//! `deploy/Containerfile`. No container runtime runs here, so the test checks what can be checked
//! without one: the manifest is an Indexed Job whose pods run `rdprobe scan … --shard N` with N
//! equal to its completions, the index from JOB_COMPLETION_INDEX and the store from a Secret; the
//! container builds the binary Cargo.toml names and makes it the entrypoint the README documents;
//! and the pod's own arguments, run by the real binary with the Job's environment, scan their share.

use std::path::Path;
use std::process::{Command, Stdio};

fn repo(p: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest() -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&repo("deploy/scan-job.yaml")).expect("deploy/scan-job.yaml parses")
}

fn container(m: &serde_yaml_ng::Value) -> &serde_yaml_ng::Value {
    let cs = m["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(cs.len(), 1);
    &cs[0]
}

fn args(m: &serde_yaml_ng::Value) -> Vec<String> {
    container(m)["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

#[test]
fn the_job_is_indexed_and_its_shards_match_its_completions() {
    let m = manifest();
    assert_eq!(m["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(m["kind"].as_str(), Some("Job"));
    let spec = &m["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_u64().expect("completions");
    let parallelism = spec["parallelism"].as_u64().expect("parallelism");
    assert!(completions >= 2, "a fleet job has shards");
    assert!((1..=completions).contains(&parallelism));
    assert_eq!(
        spec["template"]["spec"]["restartPolicy"].as_str(),
        Some("Never")
    );
    let a = args(&m);
    assert_eq!(a[0], "scan");
    // --shard N (one number: K comes from JOB_COMPLETION_INDEX), N = completions.
    let i = a.iter().position(|x| x == "--shard").expect("--shard");
    let n = &a[i + 1];
    assert!(
        !n.contains('/'),
        "the index comes from JOB_COMPLETION_INDEX, not `{n}`"
    );
    assert_eq!(n.parse::<u64>().ok(), Some(completions), "--shard {n}");
    // A retried pod finishes its share instead of refusing the existing run.
    assert!(a.iter().any(|x| x == "--resume"));
    assert!(a.iter().any(|x| x == "--run"));
    // The store (with its password) never on the command line: RDPROBE_STORE from a Secret.
    assert!(!a.iter().any(|x| x == "--store" || x.contains("postgres")));
    let env = container(&m)["env"].as_sequence().expect("env");
    let store = env
        .iter()
        .find(|e| e["name"].as_str() == Some("RDPROBE_STORE"))
        .expect("RDPROBE_STORE");
    assert!(
        store.get("value").is_none(),
        "the URL is not written in the manifest"
    );
    let secret = &store["valueFrom"]["secretKeyRef"];
    assert!(secret["name"].as_str().is_some() && secret["key"].as_str().is_some());
}

#[test]
fn the_container_builds_the_documented_binary_as_its_entrypoint() {
    let cargo: toml::Value = toml::from_str(&repo("Cargo.toml")).expect("Cargo.toml");
    let bins = cargo["bin"].as_array().expect("[[bin]]");
    let bin = bins[0]["name"].as_str().expect("bin name");
    assert_eq!(bin, "rdprobe");
    let cf = repo("deploy/Containerfile");
    let froms: Vec<&str> = cf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert_eq!(froms[1].trim(), "debian:12-slim", "runtime stage");
    assert!(
        froms[0].contains("bookworm"),
        "build on the runtime's Debian: {froms:?}"
    );
    assert!(
        cf.contains(&format!("cargo build --release --locked --bin {bin}")),
        "builds the `{bin}` binary"
    );
    let entry = format!("/usr/local/bin/{bin}");
    assert!(cf.contains(&format!("COPY --from=build {entry} {entry}")));
    assert!(cf.contains(&format!("ENTRYPOINT [\"{entry}\"]")));
    assert!(
        cf.lines().any(|l| l.trim().starts_with("USER ")),
        "not root"
    );
    // The README documents the same file, image entrypoint and manifest.
    let readme = repo("README.md");
    assert!(
        readme.contains("deploy/Containerfile"),
        "README names the Containerfile"
    );
    assert!(
        readme.contains("deploy/scan-job.yaml"),
        "README names the Job"
    );
    assert!(
        readme.contains(&entry),
        "README names the entrypoint {entry}"
    );
}

#[test]
fn the_pods_arguments_run_by_the_binary_scan_their_share() {
    let m = manifest();
    let n: usize = {
        let a = args(&m);
        let i = a.iter().position(|x| x == "--shard").expect("--shard");
        a[i + 1].parse().expect("N")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // 2N loopback targets on a port where nothing listens (refused at once).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let list = dir.path().join("targets.txt");
    let lines: Vec<String> = (1..=2 * n).map(|i| format!("127.0.0.{i}:{port}")).collect();
    std::fs::write(&list, lines.join("\n")).expect("write");
    let db = dir.path().join("results.db");
    let mut union = std::collections::BTreeSet::new();
    for index in 0..n {
        // The pod's arguments as written, the target file mounted elsewhere here.
        let a: Vec<String> = args(&m)
            .into_iter()
            .map(|x| {
                if x == "/targets/targets.txt" {
                    list.display().to_string()
                } else {
                    x
                }
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .args(&a)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("RDPROBE_STORE", &db)
            .stdin(Stdio::null())
            .output()
            .expect("rdprobe");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "pod {index}: {err}");
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let t = v["target"].as_str().expect("target").to_owned();
            assert!(union.insert(t.clone()), "{t} in two pods");
        }
    }
    assert_eq!(union.len(), 2 * n, "every target scanned by one pod");
}
