//! `rdprobe fuzz`: its arguments, the progress line and the summary.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

use rdprobe::probe::{Credentials, Protocol};
use rdprobe::report::exit;

use super::*;

#[derive(clap::Args)]
pub(crate) struct FuzzArgs {
    /// Target: HOST:PORT (loopback only unless --allow-remote); not with --replay
    #[arg(value_name = "TARGET")]
    target: Option<String>,
    /// Stage to mutate: x224, tls, credssp, mcs, channels; security, licensing (standard RDP
    /// security servers only). credssp with --user also mutates rounds 2 and 3 (AUTHENTICATE with
    /// pubKeyAuth, authInfo). gw_http, gw_tunnel, gw_channel: TARGET is an RD Gateway (the first
    /// request; the tunnel packets and the channel create after a Basic-authenticated upgrade with
    /// --user)
    #[arg(long, default_value = "x224", value_parser = fuzz_stage_arg)]
    stage: rdprobe::fuzz::FuzzStage,
    /// Most cases to run [default: 1000, or unlimited with --duration]
    #[arg(long)]
    cases: Option<u64>,
    /// Seed of the case generator (the same seed sends the same cases)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for findings (NNNN/case.json, repro.pcapng, README.txt)
    #[arg(long, default_value = "findings")]
    out: PathBuf,
    /// Stop after this long (e.g. 10m), whatever --cases says
    #[arg(long, value_parser = duration_arg)]
    duration: Option<std::time::Duration>,
    /// User for the valid CredSSP exchange before mcs/channels and credssp rounds 2-3 (password
    /// from RDPROBE_PASSWORD); the user name of the Client Info for security/licensing
    #[arg(long)]
    user: Option<String>,
    /// Domain for --user
    #[arg(long)]
    domain: Option<String>,
    /// Deadline for each reply of the target
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    timeout: std::time::Duration,
    /// Check that the target still serves a valid handshake every N cases (and after suspicious answers)
    #[arg(long, default_value_t = 50)]
    liveness_every: u64,
    /// How long a target that failed a liveness check gets to recover before it counts as down
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    recovery: std::time::Duration,
    /// requestedProtocols of the valid X.224 request: rdp, ssl, hybrid, hybrid_ex [default: per stage]
    #[arg(long, value_delimiter = ',', value_name = "PROTOCOLS", value_parser = protocol_arg)]
    security: Vec<Protocol>,
    /// Do not shrink findings
    #[arg(long)]
    no_shrink: bool,
    /// Stop after this many findings
    #[arg(long)]
    max_findings: Option<u64>,
    /// Allow a target outside 127.0.0.0/8 and ::1 (fuzzing can crash a production server)
    #[arg(long)]
    allow_remote: bool,
    /// Print the summary (or the replay) as JSON
    #[arg(long)]
    json: bool,
    /// Re-run one finding from its case.json
    #[arg(long, value_name = "CASE_JSON")]
    replay: Option<PathBuf>,
    /// Target of --replay [default: the target in the case file]
    #[arg(long = "target", value_name = "ADDR")]
    replay_target: Option<String>,
    /// Fuzz the embedded lab playing SCENARIO, run as a child process on a free loopback port and
    /// watched: its exit code or signal and its RSS; it is restarted after a crash (no TARGET)
    #[arg(long, value_name = "SCENARIO", conflicts_with = "pid")]
    lab: Option<String>,
    /// Watch this local process (the target's server): a death and RSS growth are findings
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// RSS growth of the watched process over its baseline that is a finding (e.g. 64MiB)
    #[arg(long, default_value = "256MiB", value_name = "SIZE", value_parser = size_kib_arg)]
    rss_growth: u64,
    /// Planted bugs for the --lab child (test-only)
    #[arg(long, value_name = "BUG", hide = true)]
    plant: Vec<String>,
}

/// A size: 123, 64KiB, 64MiB, 1GiB (also k/K/KB, m/M/MB, g/G/GB as powers of 1024): in KiB.
pub(crate) fn size_kib_arg(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "invalid size (examples: 64MiB, 512KiB, 1GiB)".to_owned())?;
    let kib = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => n / 1024,
        "k" | "kb" | "kib" => n,
        "m" | "mb" | "mib" => n.saturating_mul(1024),
        "g" | "gb" | "gib" => n.saturating_mul(1024 * 1024),
        _ => return Err("invalid size unit (KiB, MiB, GiB)".to_owned()),
    };
    Ok(kib)
}

pub(crate) async fn fuzz_addr(t: &str, allow_remote: bool) -> Result<SocketAddr> {
    use rdprobe::fuzz;
    let (host, port) = parse_target(t)?;
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} has no address"))?,
    };
    fuzz::check_target(addr, allow_remote).map_err(|e| usage(e.to_string()))?;
    Ok(addr)
}

/// requestedProtocols of the valid X.224 request, or None for the stage's default.
pub(crate) fn fuzz_protocols(security: &[Protocol]) -> Option<u32> {
    (!security.is_empty()).then(|| security.iter().fold(0, |p, s| p | s.flag()))
}

/// The progress bar of `rdprobe fuzz`: cases/s, findings, target liveness.
pub(crate) struct FuzzBar {
    bar: indicatif::ProgressBar,
}

impl rdprobe::fuzz::Progress for FuzzBar {
    fn case_done(&mut self, s: &rdprobe::fuzz::Stats) {
        self.bar.set_position(s.cases);
        self.bar.set_message(format!(
            "{:.0} cases/s · findings {} · target {}{}",
            s.cases_per_sec(),
            s.findings,
            s.last_liveness.map(|l| l.as_str()).unwrap_or("alive"),
            s.target_rss_kib
                .map(|k| format!(" · rss {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default()
        ));
    }

    fn shrinking(&mut self, sig: &rdprobe::fuzz::Signature) {
        self.bar
            .set_message(format!("shrinking {sig} against the target"));
    }

    fn finding(&mut self, f: &rdprobe::fuzz::Finding) {
        let dir = f
            .dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        self.bar.println(format!(
            "finding {}: {} ({}) {dir}",
            f.signature,
            f.case.summary(),
            f.detail
        ));
    }
}

pub(crate) async fn cmd_fuzz(a: FuzzArgs) -> Result<i32> {
    use rdprobe::fuzz::{self, FuzzOptions, Target};
    let (timeout, recovery) = (a.timeout, a.recovery);
    let credentials =
        |user: Option<&String>, domain: Option<&String>| -> Result<Option<Credentials>> {
            match user {
                Some(u) => Ok(Some(Credentials {
                    user: u.clone(),
                    domain: domain.cloned(),
                    password: read_password(u)?,
                })),
                None => Ok(None),
            }
        };

    if let Some(path) = &a.replay {
        if a.target.is_some() {
            return Err(usage("with --replay, name the target with --target ADDR"));
        }
        let finding = fuzz::read_case_file(path)?;
        let addr = match &a.replay_target {
            Some(t) => fuzz_addr(t, a.allow_remote).await?,
            None => {
                fuzz::check_target(finding.target, a.allow_remote)
                    .map_err(|e| usage(e.to_string()))?;
                finding.target
            }
        };
        let s = &finding.session;
        let mut target = Target::new(addr);
        target.timeout = Duration::from_millis(s.timeout_ms.max(1));
        target.quiet = Duration::from_millis(s.quiet_ms.max(1));
        target.protocols = s.protocols;
        target.credentials = credentials(
            a.user.as_ref().or(s.user.as_ref()),
            a.domain.as_ref().or(s.domain.as_ref()),
        )?;
        let mut watch = match (&a.lab, a.pid) {
            (Some(_), _) => {
                return Err(usage(
                    "--replay with --lab: start the lab yourself and pass --target and --pid",
                ))
            }
            (None, Some(pid)) => Some(fuzz::Watcher::pid(pid)?),
            (None, None) => None,
        };
        let (r, _) = fuzz::replay_watched(
            &target,
            &finding,
            Duration::from_millis(s.recovery_ms),
            watch.as_mut(),
        )
        .await;
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        } else {
            writeln!(
                out,
                "{}: observed {} (expected {}): {}",
                if r.reproduced {
                    "reproduced"
                } else {
                    "not reproduced"
                },
                r.observed,
                r.expected,
                r.detail
            )?;
        }
        return Ok(if r.reproduced {
            exit::SUCCESS
        } else {
            exit::REPLAY_MISMATCH
        });
    }

    let rss_growth = a.rss_growth;
    if !a.plant.is_empty() && a.lab.is_none() {
        return Err(usage(
            "--plant arms bugs in the --lab child: it needs --lab",
        ));
    }
    let (mut watch, t) = match (&a.lab, &a.target) {
        (Some(_), Some(_)) => return Err(usage("--lab fuzzes its own lab: no TARGET with it")),
        (Some(scenario), None) => {
            load_scenario(scenario)?;
            let exe = std::env::current_exe().context("locating the rdprobe binary")?;
            let cmd = fuzz::watch::LabCommand::on_free_port(&exe, scenario, &a.plant)?;
            let t = cmd.addr.to_string();
            let w = fuzz::Watcher::spawn_lab(cmd)
                .await
                .context("starting the lab process")?;
            (Some(w), t)
        }
        (None, Some(t)) => (a.pid.map(fuzz::Watcher::pid).transpose()?, t.clone()),
        (None, None) => {
            return Err(usage(
                "rdprobe fuzz needs a TARGET (or --lab SCENARIO, or --replay CASE_JSON)",
            ))
        }
    };
    if let Some(w) = watch.as_mut() {
        w.rss_growth_limit_kib = Some(rss_growth);
    }
    let t = &t;
    let addr = fuzz_addr(t, a.allow_remote).await?;
    let stage = a.stage;
    let mut target = Target::new(addr);
    if !addr.ip().is_loopback() || parse_target(t)?.0.parse::<std::net::IpAddr>().is_err() {
        target.host = parse_target(t)?.0;
    }
    target.timeout = timeout;
    target.protocols = fuzz_protocols(&a.security);
    target.credentials = credentials(a.user.as_ref(), a.domain.as_ref())?;
    let mut opts = FuzzOptions::new(target, stage);
    opts.duration = a.duration;
    opts.cases = match (a.cases, opts.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => 1000,
    };
    opts.seed = a.seed;
    opts.out = Some(a.out.clone());
    opts.liveness_every = a.liveness_every;
    opts.recovery = recovery;
    opts.shrink = !a.no_shrink;
    opts.max_findings = a.max_findings;
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts.cancel = Some(cancel.clone());
    let flag = cancel.clone();
    let watcher = tokio::spawn(async move {
        interrupted().await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });

    let bounded = opts.cases != u64::MAX;
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else if bounded {
        indicatif::ProgressBar::new(opts.cases)
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    let template = if bounded {
        "{spinner} fuzz {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}"
    } else {
        "{spinner} fuzz {prefix} [{elapsed_precise}] {pos} cases {msg}"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(stage.to_string());
    let mut progress = FuzzBar { bar: bar.clone() };
    let res = fuzz::run_watched(&opts, watch.as_mut(), &mut progress).await;
    bar.finish_and_clear();
    watcher.abort();
    let summary = match res {
        Ok(s) => s,
        Err(e @ (fuzz::FuzzError::Baseline { .. } | fuzz::FuzzError::UnstableBaseline { .. })) => {
            eprintln!("error: {e}");
            return Ok(exit::NETWORK);
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        write!(out, "{}", render_fuzz_summary(&summary))?;
    }
    Ok(if summary.stopped == fuzz::StopReason::Cancelled {
        exit::INTERRUPTED
    } else if summary.findings.is_empty() {
        exit::SUCCESS
    } else {
        exit::FUZZ_FINDINGS
    })
}

pub(crate) fn render_fuzz_summary(s: &rdprobe::fuzz::Summary) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let st = &s.stats;
    let _ = writeln!(
        o,
        "fuzz {} against {}, seed {}: {} cases in {:.1} s ({:.0} cases/s), stopped: {:?}",
        s.stage,
        s.target,
        s.seed,
        st.cases,
        st.elapsed_ms as f64 / 1000.0,
        s.cases_per_sec,
        s.stopped
    );
    if s.baseline != rdprobe::fuzz::ResponseClass::ValidReply {
        let _ = writeln!(
            o,
            "baseline: the target answers the valid PDU of this stage with {}; findings are deviations from it",
            s.baseline
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<18} {:>8}", "response", "cases");
    for (class, n) in &st.classes {
        let _ = writeln!(o, "{:<18} {:>8}", class.as_str(), n);
    }
    let get = |l| st.liveness.get(&l).copied().unwrap_or(0);
    let _ = writeln!(
        o,
        "\nliveness checks: {} (alive {}, hung {}, down {})",
        st.liveness_checks,
        get(rdprobe::fuzz::Liveness::Alive),
        get(rdprobe::fuzz::Liveness::Hung),
        get(rdprobe::fuzz::Liveness::Down)
    );
    if let Some(p) = &s.process {
        let mib = |k: Option<u64>| {
            k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            o,
            "target process {}: rss {} at start, peak {}, last {} ({} samples); deaths {}, restarts {}",
            p.pid,
            mib(p.rss_baseline_kib),
            mib(p.rss_peak_kib),
            mib(p.rss_last_kib),
            p.samples,
            p.deaths,
            p.restarts
        );
    }
    if s.findings.is_empty() {
        let _ = writeln!(o, "findings: none");
        return o;
    }
    let _ = writeln!(o, "\nfindings:");
    let _ = writeln!(
        o,
        "  {:<24} {:>6}  {:<14} minimal case",
        "signature", "case", "dir"
    );
    for f in &s.findings {
        let dir = f
            .dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "  {:<24} {:>6}  {:<14} {}",
            f.signature.to_string(),
            f.case_index,
            dir,
            f.case.summary()
        );
    }
    o
}
