//! Benchmark (issue 6): `rdprobe fuzz` cases per second per stage against the embedded lab
//! (in-process) and against xrdp on loopback, and the process RSS over a long x224 run.
//! Goals: >= 2,000 x224 cases/s in-process, >= 300 against xrdp, RSS flat over 100,000 cases.
//!
//! Run: `cargo bench --bench fuzz_rate` (needs xrdp for the second part: scripts/install-peers.sh).
//! `FUZZ_BENCH_CASES` (default 5000) sets the cases per stage, `FUZZ_BENCH_LONG` (default 100000)
//! the long run; all traffic goes to 127.0.0.1.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;

use common::*;
use rdprobe::fuzz::{self, FuzzOptions, FuzzStage, Liveness, Progress, Stats, Target};
use rdprobe::probe::Credentials;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS of this process in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples RSS every `every` cases.
struct RssSampler {
    every: u64,
    samples: Vec<(u64, u64)>,
}

impl Progress for RssSampler {
    fn case_done(&mut self, s: &Stats) {
        if s.cases.is_multiple_of(self.every) {
            self.samples.push((s.cases, rss_kib()));
        }
    }
}

async fn rate(target: Target, stage: FuzzStage, cases: u64) -> (f64, fuzz::Summary) {
    let mut o = FuzzOptions::new(target, stage);
    o.cases = cases;
    o.seed = 1;
    o.out = None;
    let s = fuzz::run(&o, &mut fuzz::Quiet)
        .await
        .unwrap_or_else(|e| panic!("{stage}: {e}"));
    assert_eq!(s.stats.cases, cases, "{stage}: {:?}", s.stopped);
    assert_eq!(s.stats.liveness.get(&Liveness::Down), None, "{stage}");
    (s.cases_per_sec, s)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("fuzz_rate: bench");
        return;
    }
    let cases = env_u64("FUZZ_BENCH_CASES", 5000);
    let long = env_u64("FUZZ_BENCH_LONG", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let lo = SocketAddr::from(([127, 0, 0, 1], 0));
    let nla = rdprobe::scenario::builtin("healthy-nla").expect("scenario");
    let tls = rdprobe::scenario::builtin("healthy-tls").expect("scenario");
    let lab_nla = rdprobe::lab::spawn_lab(lo, nla).expect("lab");
    let lab_tls = rdprobe::lab::spawn_lab(lo, tls).expect("lab");

    println!("rdprobe fuzz: cases/s ({cases} cases per stage, seed 1)");
    println!("{:<28} {:>10}", "target / stage", "cases/s");
    rt.block_on(async {
        for (stage, addr) in [
            (FuzzStage::X224, lab_nla.addr),
            (FuzzStage::Tls, lab_nla.addr),
            (FuzzStage::Credssp, lab_nla.addr),
            (FuzzStage::Mcs, lab_tls.addr),
            (FuzzStage::Channels, lab_tls.addr),
        ] {
            let n = if stage == FuzzStage::X224 {
                cases
            } else {
                cases / 5
            };
            let (r, _) = rate(Target::new(addr), stage, n).await;
            println!("{:<28} {:>10.0}", format!("lab (in-process) {stage}"), r);
        }
        // Through NLA: CredSSP with NTLM on every case.
        let mut t = Target::new(lab_nla.addr);
        t.credentials = Some(Credentials {
            user: "user".into(),
            domain: None,
            password: "pass".into(),
        });
        let (r, _) = rate(t, FuzzStage::Mcs, cases / 5).await;
        println!("{:<28} {:>10.0}", "lab (in-process) mcs, NLA", r);
        // Standard RDP security (level NONE in the lab): the Client Info.
        let rdp = rdprobe::scenario::builtin("rdp-security-only").expect("scenario");
        let lab_rdp = rdprobe::lab::spawn_lab(lo, rdp).expect("lab");
        let (r, _) = rate(Target::new(lab_rdp.addr), FuzzStage::Security, cases / 5).await;
        println!("{:<28} {:>10.0}", "lab (in-process) security", r);
        // The lab as a watched child process (--lab): the cost of watching, and its RSS.
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_rdprobe"));
        let cmd = fuzz::watch::LabCommand::on_free_port(exe, "healthy-tls", &[]).expect("port");
        let addr = cmd.addr;
        let mut w = fuzz::Watcher::spawn_lab(cmd).await.expect("lab child");
        let mut o = FuzzOptions::new(Target::new(addr), FuzzStage::X224);
        o.cases = cases;
        o.seed = 1;
        let s = fuzz::run_watched(&o, Some(&mut w), &mut fuzz::Quiet)
            .await
            .expect("watched run");
        let p = s.process.clone().unwrap_or_default();
        println!(
            "{:<28} {:>10.0}   (child RSS {} -> peak {} KiB)",
            "lab (child, watched) x224",
            s.cases_per_sec,
            p.rss_baseline_kib.unwrap_or(0),
            p.rss_peak_kib.unwrap_or(0)
        );
    });

    match Xrdp::start(XrdpOpts::negotiate()) {
        Ok(xrdp) => rt.block_on(async {
            for stage in [
                FuzzStage::X224,
                FuzzStage::Tls,
                FuzzStage::Mcs,
                FuzzStage::Channels,
            ] {
                let n = if stage == FuzzStage::X224 {
                    cases
                } else {
                    cases / 5
                };
                let (r, _) = rate(Target::new(xrdp.addr()), stage, n).await;
                println!("{:<28} {:>10.0}", format!("xrdp {stage}"), r);
            }
        }),
        Err(e) => println!("xrdp: not measured ({e})"),
    }
    match Xrdp::start(XrdpOpts::rdp("high")) {
        Ok(xrdp) => rt.block_on(async {
            for stage in [FuzzStage::Security, FuzzStage::Licensing] {
                let (r, _) = rate(Target::new(xrdp.addr()), stage, cases / 10).await;
                println!("{:<28} {:>10.0}", format!("xrdp rdp {stage}"), r);
            }
        }),
        Err(e) => println!("xrdp (security_layer=rdp): not measured ({e})"),
    }

    // RSS over a long x224 run against the in-process lab.
    let mut sampler = RssSampler {
        every: (long / 10).max(1),
        samples: vec![(0, rss_kib())],
    };
    let summary = rt.block_on(async {
        let mut o = FuzzOptions::new(Target::new(lab_nla.addr), FuzzStage::X224);
        o.cases = long;
        o.seed = 2;
        fuzz::run(&o, &mut sampler).await.expect("long run")
    });
    println!(
        "\nlong run: {} x224 cases in {:.1} s ({:.0} cases/s), findings {}",
        summary.stats.cases,
        summary.stats.elapsed_ms as f64 / 1000.0,
        summary.cases_per_sec,
        summary.findings.len()
    );
    println!("RSS (KiB) by cases: {:?}", sampler.samples);
    let mid = sampler.samples[sampler.samples.len() / 2].1;
    let last = sampler.samples.last().map(|s| s.1).unwrap_or(0);
    println!(
        "RSS growth over the second half: {} KiB ({:.1}%)",
        last as i64 - mid as i64,
        (last as f64 - mid as f64) * 100.0 / mid.max(1) as f64
    );
    drop(lab_nla);
    drop(lab_tls);
}
