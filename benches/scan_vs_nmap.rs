//! Benchmark (issue 16): `rdprobe scan` next to `nmap --script rdp-enum-encryption` on the same set
//! of loopback listeners, as whole processes: hundreds of lab servers (healthy TLS), each on its own
//! address of 127.77.0.0/16 and the same port, so that one-in-flight-per-host never serialises the
//! scan. rdprobe takes every target to `connected` (a full handshake: TCP, X.224, TLS, MCS, channels,
//! licensing, capabilities); nmap's script asks its protocol and encryption questions. Reports
//! targets per second at concurrency 1, 50 and 500, nmap's targets per second and the ratio, and the
//! peak RSS of rdprobe per probe in flight ((peak at 500 − peak at 1) / probes in flight).
//! Goal: rdprobe ≥ 10× nmap's targets per second.
//!
//! Run: `cargo bench --bench scan_vs_nmap` (needs nmap). `BENCH_TARGETS=N` sets the listener count
//! (default 256).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn targets() -> usize {
    std::env::var("BENCH_TARGETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0 && n <= 60_000)
        .unwrap_or(256)
}

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Runs `cmd` to its end: wall time, peak RSS in KiB (from wait4), standard output.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn run(cmd: &mut Command) -> (Duration, u64, String) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for the child spawned above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; std's Child is not waited on afterwards.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let d = start.elapsed();
    (d, usage.ru_maxrss as u64, reader.join().expect("reader"))
}

fn main() {
    if Command::new("nmap").arg("--version").output().is_err() {
        panic!("nmap is missing (apt-get install nmap)");
    }
    let n = targets();
    let port = {
        let l = std::net::TcpListener::bind("127.77.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let scenario = rdprobe::scenario::builtin("healthy-tls").expect("scenario");
    let started = Instant::now();
    let labs: Vec<_> = (0..n)
        .map(|i| {
            rdprobe::lab::spawn_lab(SocketAddr::new(addr(i), port), scenario.clone())
                .unwrap_or_else(|e| panic!("lab on {}:{port}: {e}", addr(i)))
        })
        .collect();
    println!(
        "{n} lab listeners (healthy-tls) on 127.77.0.0/16 port {port}, started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts.txt");
    let list: Vec<String> = (0..n).map(|i| addr(i).to_string()).collect();
    std::fs::write(&hosts, list.join("\n") + "\n").expect("write hosts");
    let bin = env!("CARGO_BIN_EXE_rdprobe");

    let mut rates = Vec::new();
    let mut peaks = Vec::new();
    for c in [1usize, 50, 500] {
        let (d, rss, out) = run(Command::new(bin)
            .env_remove("RDPROBE_STORE")
            .arg("scan")
            .arg(&hosts)
            .args(["--ports", &port.to_string(), "--json", "--timeout", "10s"])
            .args(["--concurrency", &c.to_string()]));
        let connected = out
            .lines()
            .filter(|l| l.contains("\"last_stage\":\"connected\""))
            .count();
        assert_eq!(
            out.lines().count(),
            n,
            "one result per target at concurrency {c}"
        );
        let rate = n as f64 / d.as_secs_f64();
        println!(
            "rdprobe scan  concurrency {c:>3}: {:>6.2} s  {rate:>7.1} targets/s  {connected}/{n} connected  peak RSS {:>6.1} MiB",
            d.as_secs_f64(),
            rss as f64 / 1024.0
        );
        rates.push(rate);
        peaks.push(rss);
    }
    let (d, _, out) = run(Command::new("nmap").args([
        "-n",
        "-Pn",
        "-sT",
        "-p",
        &port.to_string(),
        "--script",
        "+rdp-enum-encryption",
        "-oX",
        "-",
        "-iL",
        hosts.to_str().expect("path"),
    ]));
    let answered = out.matches("id=\"rdp-enum-encryption\"").count();
    let nmap_rate = n as f64 / d.as_secs_f64();
    println!(
        "nmap rdp-enum-encryption     : {:>6.2} s  {nmap_rate:>7.1} targets/s  ({answered}/{n} with script output)",
        d.as_secs_f64()
    );
    let in_flight = n.min(500) as f64;
    let per_probe = (peaks[2].saturating_sub(peaks[0])) as f64 / in_flight;
    println!(
        "peak memory per probe in flight: {per_probe:.0} KiB ((peak at 500 - peak at 1) / {in_flight})"
    );
    let best = rates.iter().cloned().fold(0.0, f64::max);
    let ratio = best / nmap_rate;
    println!(
        "ratio rdprobe/nmap targets per second: c=1 {:.1}x, c=50 {:.1}x, c=500 {:.1}x; goal >= 10x: {}",
        rates[0] / nmap_rate,
        rates[1] / nmap_rate,
        rates[2] / nmap_rate,
        if ratio >= 10.0 { "met" } else { "missed" }
    );
    drop(labs);
}
