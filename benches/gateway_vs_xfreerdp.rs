//! Benchmark (issue 15): `rdprobe probe --gateway` next to `xfreerdp /g: +auth-only` through the same
//! lab RD Gateway to the same xrdp, in the same run, as whole processes (start-up included for both).
//! Reports medians and the ratio. Goal: rdprobe takes at most a tenth of xfreerdp's wall time.
//!
//! Run: `cargo bench --bench gateway_vs_xfreerdp` (needs xrdp and xfreerdp: scripts/install-peers.sh).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdprobe::lab::gateway::{spawn_gateway, GatewayConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits (at most 3 s, outside the timed runs) until xrdp has no thread left from earlier
/// connections: it keeps a closed connection's thread for a few seconds, and back-to-back runs pile
/// them up (measured: 55 ms to 306 ms over 12 back-to-back probes, back to 56 ms after a pause), so
/// whichever client ran later would be slowed by the one before. Every run of both clients starts
/// from a settled xrdp.
fn settle(xrdp_pid: u32) {
    let tasks = format!("/proc/{xrdp_pid}/task");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let n = std::fs::read_dir(&tasks).map(|d| d.count()).unwrap_or(1);
        if n <= 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("gateway_vs_xfreerdp: bench");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp (scripts/install-peers.sh)");
    let gw = spawn_gateway(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        GatewayConfig {
            scenario: rdprobe::scenario::builtin("gw-healthy").expect("gw-healthy"),
            target: xrdp.addr(),
            limits: rdprobe::lab::LabLimits::default(),
        },
    )
    .expect("lab gateway");
    let g = format!("127.0.0.1:{}", gw.addr.port());
    let xrdp_pid = xrdp.pid();
    let bin = env!("CARGO_BIN_EXE_rdprobe");

    // `runs` timed runs of `rdprobe probe TARGET --gateway GATEWAY [--gateway-transport T]`, each
    // from a settled xrdp when it is the target.
    let probe_runs = |target: &str, gateway: &str, transport: Option<&str>| -> Vec<Duration> {
        let mut times = Vec::new();
        for _ in 0..runs {
            if target == "xrdp01" {
                settle(xrdp_pid);
            }
            let mut cmd = Command::new(bin);
            cmd.args(["probe", target, "--gateway", gateway, "--user", "user"]);
            if let Some(t) = transport {
                cmd.args(["--gateway-transport", t]);
            }
            let t = Instant::now();
            let st = cmd
                .env("RDPROBE_PASSWORD", "pass")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run rdprobe");
            times.push(t.elapsed());
            assert_eq!(
                st.code(),
                Some(0),
                "rdprobe to {target} via {gateway} ({transport:?}) did not reach connected"
            );
        }
        times
    };
    let probe_times = probe_runs("xrdp01", &g, Some("websocket"));
    let probe_http_times = probe_runs("xrdp01", &g, Some("http"));
    // What bounds the ratio: the same probe through a lab gateway in front of the in-process lab
    // server instead of xrdp is the probe's own cost (process, TLS, NTLM, the tunnel, the inner
    // stages); the rest of its time above is xrdp answering.
    let sc = rdprobe::scenario::builtin("gw-healthy").expect("gw-healthy");
    let lab =
        rdprobe::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), sc.clone()).expect("lab");
    let gw_lab = spawn_gateway(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        GatewayConfig {
            scenario: sc,
            target: lab.addr,
            limits: rdprobe::lab::LabLimits::default(),
        },
    )
    .expect("lab gateway to the lab server");
    let g_lab = format!("127.0.0.1:{}", gw_lab.addr.port());
    let own_times = probe_runs("rdp01", &g_lab, None);
    let xvfb = Xvfb::start().expect("start Xvfb");
    let gflag = format!("/g:{g}");
    // At most 5 timed runs of `xfreerdp /g: /gt:GT +auth-only`, each from a settled xrdp.
    let xfreerdp_runs = |gt: &str| -> Vec<Duration> {
        let gt = format!("/gt:{gt}");
        let mut times = Vec::new();
        for _ in 0..runs.min(5) {
            settle(xrdp_pid);
            let r = xfreerdp_on(
                &xvfb,
                &[
                    "/v:xrdp01:3389",
                    "/u:user",
                    "/p:pass",
                    &gflag,
                    "/gu:user",
                    "/gp:pass",
                    &gt,
                    "/cert:ignore",
                    "+auth-only",
                ],
                Duration::from_secs(30),
            )
            .expect("run xfreerdp");
            assert_eq!(r.code, Some(0), "xfreerdp ({gt}) failed: {}", r.output);
            times.push(r.elapsed);
        }
        times
    };
    let xf_times = xfreerdp_runs("http");
    let xf_http_times = xfreerdp_runs("http,no-websockets");
    let d = median(own_times);
    let p = median(probe_times);
    let x = median(xf_times);
    let ph = median(probe_http_times);
    let xh = median(xf_http_times);
    println!(
        "rdprobe probe --gateway (to connected)  median {:>8.1} ms over {runs} runs",
        p.as_secs_f64() * 1e3
    );
    println!(
        "xfreerdp /g: +auth-only                 median {:>8.1} ms",
        x.as_secs_f64() * 1e3
    );
    println!(
        "ratio rdprobe / xfreerdp                {:.3} (goal <= 0.1)",
        p.as_secs_f64() / x.as_secs_f64()
    );
    println!(
        "bound: rdprobe probe --gateway to the lab server (its own cost, no xrdp) median {:>8.1} ms = {:.3} of xfreerdp's",
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() / x.as_secs_f64()
    );
    println!(
        "legacy HTTP transport: rdprobe --gateway-transport http median {:>8.1} ms, xfreerdp /gt:http,no-websockets median {:>8.1} ms, ratio {:.3}",
        ph.as_secs_f64() * 1e3,
        xh.as_secs_f64() * 1e3,
        ph.as_secs_f64() / xh.as_secs_f64()
    );
}
