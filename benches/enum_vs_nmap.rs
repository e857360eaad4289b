//! Benchmark (issue 7): `rdprobe enum` next to nmap's `rdp-enum-encryption` + `rdp-ntlm-info`
//! against the same servers, as whole processes (start-up included for both): xrdp in its three
//! security layers and freerdp-shadow with NLA. Reports medians and the ratio, for the full
//! enumeration (which also enumerates TLS versions and cipher suites, which nmap's scripts do not)
//! and for the questions nmap's scripts ask (`--no-ciphers`). Goal: rdprobe at most 1/4 of nmap.
//!
//! Run: `cargo bench --bench enum_vs_nmap` (needs xrdp, freerdp-shadow-cli, Xvfb, nmap).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const RUNS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    let d = start.elapsed();
    assert!(st.code().is_some(), "killed by a signal: {cmd:?}");
    d
}

fn rdprobe(port: u16, extra: &[&str]) -> Duration {
    time(
        Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .arg("enum")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--json")
            .args(extra),
    )
}

fn nmap(port: u16) -> Duration {
    time(Command::new("nmap").args([
        "-n",
        "-Pn",
        "-sT",
        "-p",
        &port.to_string(),
        "--script",
        "+rdp-enum-encryption,+rdp-ntlm-info",
        "-oX",
        "-",
        "127.0.0.1",
    ]))
}

fn bench(name: &str, port: u16) -> (f64, f64) {
    let mut full = Vec::new();
    let mut lean = Vec::new();
    let mut nm = Vec::new();
    for _ in 0..RUNS {
        full.push(rdprobe(port, &[]));
        std::thread::sleep(Duration::from_millis(200));
        lean.push(rdprobe(port, &["--no-ciphers"]));
        std::thread::sleep(Duration::from_millis(200));
        nm.push(nmap(port));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (full, lean, nm) = (median(full), median(lean), median(nm));
    let rf = full.as_secs_f64() / nm.as_secs_f64();
    let rl = lean.as_secs_f64() / nm.as_secs_f64();
    println!(
        "{name:<22} rdprobe enum {:>6.0} ms (ratio {rf:.2})  --no-ciphers {:>6.0} ms (ratio {rl:.2})  nmap {:>6.0} ms",
        full.as_secs_f64() * 1000.0,
        lean.as_secs_f64() * 1000.0,
        nm.as_secs_f64() * 1000.0
    );
    (rf, rl)
}

fn main() {
    require_binary("nmap", "nmap").expect("nmap");
    println!("median of {RUNS} runs each; ratio = rdprobe / nmap (goal <= 0.25)");
    let mut worst = (0.0f64, 0.0f64);
    for (name, opts) in [
        ("xrdp negotiate", XrdpOpts::negotiate()),
        ("xrdp tls", XrdpOpts::tls()),
        ("xrdp rdp/high", XrdpOpts::rdp("high")),
    ] {
        let xrdp = Xrdp::start(opts).expect("start xrdp");
        let (f, l) = bench(name, xrdp.port());
        worst = (worst.0.max(f), worst.1.max(l));
    }
    let shadow = FreerdpShadow::start("nla", &[("alice", "pw")]).expect("start freerdp-shadow");
    let (f, l) = bench("freerdp-shadow nla", shadow.port());
    worst = (worst.0.max(f), worst.1.max(l));
    println!(
        "worst ratio: full {:.2}, nmap's questions only {:.2} (goal <= 0.25: {})",
        worst.0,
        worst.1,
        if worst.1 <= 0.25 { "met" } else { "missed" }
    );
}
