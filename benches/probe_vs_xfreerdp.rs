//! Benchmark (issue 3): a full `rdprobe probe` against xrdp next to `xfreerdp +auth-only` against the
//! same server, in the same run, as whole processes (start-up included for both). Reports medians, the
//! ratio, and rdprobe's peak RSS. Goal: rdprobe takes at most half of xfreerdp's wall time.
//!
//! Run: `cargo bench --bench probe_vs_xfreerdp` (needs xrdp and xfreerdp: scripts/install-peers.sh).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Peak RSS of all waited-for children so far, in KiB (Linux ru_maxrss).
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other invariant.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("probe_vs_xfreerdp: bench");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp (scripts/install-peers.sh)");
    let target = xrdp.target();
    let bin = env!("CARGO_BIN_EXE_rdprobe");

    let mut probe_times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let st = Command::new(bin)
            .args(["probe", &target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run rdprobe");
        probe_times.push(t.elapsed());
        assert_eq!(st.code(), Some(0), "rdprobe did not reach connected");
    }
    let rss = children_max_rss_kib();

    let xvfb = Xvfb::start().expect("start Xvfb");
    let mut xf_times = Vec::new();
    for _ in 0..runs.min(8) {
        let port = format!("/v:{target}");
        let r = xfreerdp_on(
            &xvfb,
            &[
                &port,
                "/u:user",
                "/p:pass",
                "/cert:ignore",
                "+auth-only",
                "/sec:tls",
            ],
            Duration::from_secs(30),
        )
        .expect("run xfreerdp");
        xf_times.push(r.elapsed);
    }
    let p = median(probe_times);
    let x = median(xf_times);
    println!(
        "rdprobe probe (to connected)  median {:>8.1} ms over {runs} runs",
        p.as_secs_f64() * 1e3
    );
    println!(
        "xfreerdp +auth-only           median {:>8.1} ms",
        x.as_secs_f64() * 1e3
    );
    println!(
        "ratio rdprobe / xfreerdp      {:.3} (goal <= 0.5)",
        p.as_secs_f64() / x.as_secs_f64()
    );
    println!("rdprobe peak RSS              {} KiB", rss);
}
