//! Benchmark (issue 7): `rdprobe enum` next to nmap's `rdp-enum-encryption` + `rdp-ntlm-info`
//! against the same servers, as whole processes (start-up included for both): xrdp in its three
//! security layers and freerdp-shadow with NLA. Reports medians and ratios for both modes of
//! `rdprobe enum`: the plain command (which also enumerates TLS versions and every cipher suite
//! in order, which nmap's scripts do not) and `--no-ciphers` (versions and first choices only).
//! Goal: rdprobe at most 1/4 of nmap's wall time, in both modes, on every server; the summary
//! prints the worst ratio of each mode.
//!
//! The three commands alternate within each round, so load from other processes on the machine
//! falls on all of them; freerdp-shadow spends ~45 ms of CPU on every connection it accepts
//! (FreeRDP 2 runs `RSA_check_key` on its key for each peer, before it reads a byte), so
//! rdprobe's time there (not nmap's, which mostly waits) grows with the machine's load. For
//! freerdp-shadow the bench also prints the server's CPU time per command (from /proc): that CPU
//! over the machine's cores is the least time any client asking the same questions can take.
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

/// Runs `f` and returns its result with the server's CPU time spent meanwhile (after a short
/// settle, so the server finishes the connections the command left).
fn with_server_cpu<T>(pid: Option<u32>, f: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = pid.and_then(rdprobe::fuzz::watch::cpu_time);
    let out = f();
    std::thread::sleep(Duration::from_millis(200));
    let after = pid.and_then(rdprobe::fuzz::watch::cpu_time);
    (out, after.zip(before).map(|(a, b)| a.saturating_sub(b)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One server: (ratio of the plain command, ratio of --no-ciphers). With the server's PID, also
/// the CPU time the server spent on each command (median): on a server that spends CPU on every
/// connection it accepts (freerdp-shadow), that CPU over the machine's cores bounds the time.
fn bench(name: &str, port: u16, server_pid: Option<u32>) -> (f64, f64) {
    let (mut full, mut lean, mut nm) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full_cpu, mut lean_cpu, mut nm_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full_conns, mut lean_conns) = (0, 0);
    for _ in 0..runs() {
        let ((d, c), cpu) = with_server_cpu(server_pid, || rdprobe(port, &[]));
        full.push(d);
        full_cpu.extend(cpu);
        full_conns = c;
        let ((d, c), cpu) = with_server_cpu(server_pid, || rdprobe(port, &["--no-ciphers"]));
        lean.push(d);
        lean_cpu.extend(cpu);
        lean_conns = c;
        let (d, cpu) = with_server_cpu(server_pid, || nmap(port));
        nm.push(d);
        nm_cpu.extend(cpu);
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
    if !full_cpu.is_empty() && !nm_cpu.is_empty() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let full_cpu = median(full_cpu);
        println!(
            "{:<20} server cpu: enum {:>5.0} ms (/ {cores} cores = {:.0} ms)  --no-ciphers {:>5.0} ms  \
             nmap {:>5.0} ms",
            "",
            ms(full_cpu),
            ms(full_cpu) / cores as f64,
            ms(median(lean_cpu)),
            ms(median(nm_cpu))
        );
    }
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
        let (f, l) = bench(name, xrdp.port(), None);
        worst = (worst.0.max(f), worst.1.max(l));
    }
    if selected("freerdp-shadow nla") {
        let shadow = FreerdpShadow::start("nla", &[("alice", "pw")]).expect("start freerdp-shadow");
        let (f, l) = bench("freerdp-shadow nla", shadow.port(), Some(shadow.pid()));
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
