//! Benchmark (issue 7): `rdprobe enum` next to nmap's `rdp-enum-encryption` + `rdp-ntlm-info`
//! against the same servers, as whole processes (start-up included for both): xrdp in its three
//! security layers and freerdp-shadow with NLA. Reports medians and ratios for both modes of
//! `rdprobe enum`: the plain command (which also enumerates TLS versions and every cipher suite
//! in order, which nmap's scripts do not) and `--no-ciphers` (versions and first choices only).
//! Goal: rdprobe at most 1/4 of nmap's wall time, in both modes, on every server; the summary
//! prints the worst ratio of each mode.
//!
//! The three commands alternate within each round, so load from other processes on the machine
//! falls on all of them; freerdp-shadow spends ~40 ms of CPU on every connection it accepts, so
//! rdprobe's time there (not nmap's, which mostly waits) grows with the machine's load.
//!
//! Run: `cargo bench --bench enum_vs_nmap` (needs xrdp, freerdp-shadow-cli, Xvfb, nmap).
//! `BENCH_RUNS=N` sets the rounds per server (default 5); `BENCH_ONLY=shadow` (a substring of the
//! server names) benches only the matching servers.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5)
}

fn selected(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |f| name.contains(f.as_str()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `cmd`, returns its wall time and stdout.
fn time(cmd: &mut Command) -> (Duration, String) {
    let start = Instant::now();
    let out = cmd.stderr(Stdio::null()).output().expect("run");
    let d = start.elapsed();
    assert!(out.status.code().is_some(), "killed by a signal: {cmd:?}");
    (d, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wall time and the connection count rdprobe reports.
fn rdprobe(port: u16, extra: &[&str]) -> (Duration, u64) {
    let (d, out) = time(
        Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .arg("enum")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--json")
            .args(extra),
    );
    let conns = serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["connections"].as_u64())
        .unwrap_or(0);
    (d, conns)
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
    .0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One server: (ratio of the plain command, ratio of --no-ciphers).
fn bench(name: &str, port: u16) -> (f64, f64) {
    let (mut full, mut lean, mut nm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full_conns, mut lean_conns) = (0, 0);
    for _ in 0..runs() {
        let (d, c) = rdprobe(port, &[]);
        full.push(d);
        full_conns = c;
        std::thread::sleep(Duration::from_millis(200));
        let (d, c) = rdprobe(port, &["--no-ciphers"]);
        lean.push(d);
        lean_conns = c;
        std::thread::sleep(Duration::from_millis(200));
        nm.push(nmap(port));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (full, lean, nm) = (median(full), median(lean), median(nm));
    let rf = full.as_secs_f64() / nm.as_secs_f64();
    let rl = lean.as_secs_f64() / nm.as_secs_f64();
    println!(
        "{name:<20} enum {:>5.0} ms ({full_conns:>2} conns, ratio {rf:.2})  \
         --no-ciphers {:>5.0} ms ({lean_conns:>2} conns, ratio {rl:.2})  nmap {:>5.0} ms",
        ms(full),
        ms(lean),
        ms(nm)
    );
    (rf, rl)
}

fn main() {
    require_binary("nmap", "nmap").expect("nmap");
    println!(
        "median of {} rounds each; ratio = rdprobe / nmap (goal <= 0.25 in both modes)",
        runs()
    );
    let mut worst = (0.0f64, 0.0f64);
    for (name, opts) in [
        ("xrdp negotiate", XrdpOpts::negotiate()),
        ("xrdp tls", XrdpOpts::tls()),
        ("xrdp rdp/high", XrdpOpts::rdp("high")),
    ] {
        if !selected(name) {
            continue;
        }
        let xrdp = Xrdp::start(opts).expect("start xrdp");
        let (f, l) = bench(name, xrdp.port());
        worst = (worst.0.max(f), worst.1.max(l));
    }
    if selected("freerdp-shadow nla") {
        let shadow = FreerdpShadow::start("nla", &[("alice", "pw")]).expect("start freerdp-shadow");
        let (f, l) = bench("freerdp-shadow nla", shadow.port());
        worst = (worst.0.max(f), worst.1.max(l));
    }
    let met = |r: f64| if r <= 0.25 { "met" } else { "missed" };
    println!(
        "worst ratio: rdprobe enum {:.2} ({}), --no-ciphers {:.2} ({}); goal <= 0.25",
        worst.0,
        met(worst.0),
        worst.1,
        met(worst.1)
    );
}
