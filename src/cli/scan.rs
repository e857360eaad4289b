//! `rdprobe scan TARGETS…` and `rdprobe diff A B`: the command-line side of `rdprobe::scan`
//! (arguments, the progress bar, JSON lines or a line per target on standard output, the summary
//! on standard error, the store).

use std::cell::RefCell;
use std::future::Future;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use rdprobe::probe::{ProbeOptions, Protocol};

use rdprobe::report::exit;
use rdprobe::scan::{self, diff, store, ScanOptions, ScanResult, Shard, Targets};
use rdprobe::stage::Stage;

#[derive(clap::Args)]
pub struct ScanArgs {
    /// Targets: HOST, HOST:PORT, [V6]:PORT, CIDR ranges (10.0.0.0/24), or files of them (one per
    /// line, # comments; a name that is an existing file, or @FILE)
    #[arg(required = true)]
    targets: Vec<String>,
    /// Ports for targets given without one, comma separated
    #[arg(long, value_delimiter = ',', default_value = "3389")]
    ports: Vec<u16>,
    /// Most probes in flight at once
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Most probes started per second over the whole scan (e.g. 100 or 100/s)
    #[arg(long, value_parser = rate_arg)]
    rate: Option<f64>,
    /// Most probes in flight to one host
    #[arg(long, default_value_t = 1)]
    per_host: usize,
    /// Stop each probe after this stage (tcp, x224, tls, credssp, mcs, …)
    #[arg(long, value_name = "STAGE", value_parser = super::stage_arg)]
    stop_after: Option<Stage>,
    /// Security protocols to offer, comma separated: rdp, ssl, hybrid, hybrid_ex [default: ssl,hybrid,hybrid_ex]
    #[arg(long, value_delimiter = ',', value_name = "PROTOCOLS", value_parser = super::protocol_arg)]
    security: Vec<Protocol>,
    /// User name for NLA / logon on every target (the password comes from RDPROBE_PASSWORD or a
    /// prompt); without it each probe goes as deep as it can without credentials
    #[arg(long)]
    user: Option<String>,
    /// Domain for the user
    #[arg(long, requires = "user")]
    domain: Option<String>,
    /// Deadline for each wait on a server
    #[arg(long, default_value = "5s", value_parser = super::duration_arg)]
    timeout: std::time::Duration,
    /// Deadline for one whole probe
    #[arg(long, default_value = "30s", value_parser = super::duration_arg)]
    deadline: std::time::Duration,
    /// Print one JSON object per target (JSON lines), as each ends
    #[arg(long)]
    json: bool,
    /// Keep results in this SQLite file, or a PostgreSQL database shared by shards
    /// (postgres://USER@HOST:PORT/DB; the password from PGPASSWORD, or the whole URL from the
    /// RDPROBE_STORE environment variable, e.g. a Kubernetes Secret, never from the command line)
    #[arg(
        long,
        value_name = "FILE|URL",
        env = "RDPROBE_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// Name of the run in the store [default: scan-<UTC time>; with --resume: the latest run]
    #[arg(long, requires = "store")]
    run: Option<String>,
    /// Skip the targets the run already has in the store (finish an interrupted run)
    #[arg(long, requires = "store")]
    resume: bool,
    /// Scan only share K of N of the targets: K/N, or N with K from JOB_COMPLETION_INDEX (Kubernetes
    /// Indexed Job) or SLURM_ARRAY_TASK_ID, or `auto` (Slurm array: id and count)
    #[arg(long)]
    shard: Option<String>,
    /// Allow targets outside loopback (127.0.0.0/8, ::1, localhost)
    #[arg(long)]
    allow_remote: bool,
    /// Enumerate every target instead of probing it (what `rdprobe enum` finds: protocols, RDP
    /// encryption methods, TLS versions and cipher suites, certificate, NTLM info); JSON lines
    /// have the schema of `enum --json` plus `target`; --deadline bounds each enumeration
    #[arg(long = "enum", conflicts_with_all = ["stop_after", "security"])]
    enumerate: bool,
    /// With --enum: TLS versions and each version's first-choice suite only (far fewer connections)
    #[arg(long, requires = "enumerate")]
    no_ciphers: bool,
}

/// Where `--store` points; a password on the command line is refused (it would show in `ps` and
/// in the run's stored command).
fn store_location(s: &str) -> Result<store::Location> {
    let loc = store::Location::parse(s);
    if let store::Location::Postgres(url) = &loc {
        let from_argv = std::env::args().any(|a| a.contains(url.as_str()));
        if from_argv && scan::postgres::redact(url) != *url {
            return Err(super::usage(
                "--store: no password in a URL on the command line; use PGPASSWORD, or put the URL in RDPROBE_STORE",
            ));
        }
    }
    Ok(loc)
}

/// `--rate 100` or `--rate 100/s`: probes started per second.
fn rate_arg(s: &str) -> std::result::Result<f64, String> {
    let n = s.trim().trim_end_matches("/s").trim();
    match n.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err("takes probes per second (e.g. 100 or 100/s)".to_owned()),
    }
}

fn options(a: &ScanArgs) -> Result<ScanOptions> {
    let mut o = ProbeOptions::new("", 0);
    o.protocols.extend(&a.security);
    if o.protocols.contains(&Protocol::Rdp) && o.protocols.len() > 1 {
        return Err(super::usage(
            "`rdp` (standard RDP security) is requested by offering no other protocol: use --security rdp alone",
        ));
    }
    o.stop_after = a.stop_after;
    o.stage_timeout = a.timeout;
    o.deadline = a.deadline;
    if let Some(user) = &a.user {
        o.credentials = Some(rdprobe::probe::Credentials {
            user: user.clone(),
            domain: a.domain.clone(),
            password: super::read_password(user)?,
        });
        o.cookie = Some(user.clone());
    }
    if a.concurrency == 0 || a.per_host == 0 {
        return Err(super::usage("--concurrency and --per-host take 1 or more"));
    }
    let shard = match &a.shard {
        Some(s) => Shard::parse(s, &|v| std::env::var(v).ok()).map_err(super::usage)?,
        None => Shard::ALL,
    };
    let enumerate = a.enumerate.then(|| {
        let mut e = rdprobe::enumerate::EnumOptions::new("", 0);
        e.timeout = o.stage_timeout;
        e.credentials = o.credentials.clone();
        e.skip_ciphers = a.no_ciphers;
        e
    });
    Ok(ScanOptions {
        probe: o,
        enumerate,
        concurrency: a.concurrency,
        rate: a.rate,
        per_host: a.per_host,
        shard,
    })
}

/// One line per target when not writing JSON.
fn text_line(r: &ScanResult) -> String {
    let (proto, summary) = match &r.outcome {
        scan::Outcome::Probe(rep) => (
            rep.fact(Stage::X224, "selected_protocol")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            rep.summary.clone(),
        ),
        scan::Outcome::Enum(e) => {
            let accepted: Vec<&str> = e
                .protocols
                .iter()
                .filter(|p| p.accepted)
                .flat_map(|p| p.offered.iter().map(String::as_str))
                .collect();
            let tls: Vec<&str> = e
                .tls
                .iter()
                .flat_map(|t| t.versions.iter().filter(|v| v.accepted))
                .map(|v| v.version.as_str())
                .collect();
            (
                e.common_offer.selected.clone(),
                format!(
                    "protocols {}; TLS {}",
                    if accepted.is_empty() {
                        "-".to_owned()
                    } else {
                        accepted.join(",")
                    },
                    if tls.is_empty() {
                        "-".to_owned()
                    } else {
                        tls.join(",")
                    }
                ),
            )
        }
    };
    let proto = proto.unwrap_or_else(|| "-".into());
    format!(
        "{:<28} {:<12} {:<20} {:<10} {:>8.1} ms  {}",
        r.target.key(),
        r.last_stage_name(),
        r.verdict_name(),
        proto.trim_start_matches("PROTOCOL_"),
        r.elapsed_ms,
        summary
    )
}

/// Runs the scan; `interrupted` resolves on SIGINT / SIGTERM.
pub async fn run(a: ScanArgs, interrupted: impl Future<Output = ()>) -> Result<i32> {
    let opts = options(&a)?;
    let targets = Targets::new(&a.targets, &a.ports).map_err(|e| super::usage(e.to_string()))?;
    // One pass before any traffic: every line parses, nothing outside loopback slips through (a
    // typo in a range never sends a packet elsewhere), and the count gives the progress bar its end.
    let mut total = 0u64;
    for t in targets.iter() {
        let t = t.map_err(|e| super::usage(e.to_string()))?;
        scan::targets::check_target(&t, a.allow_remote).map_err(|e| super::usage(e.to_string()))?;
        if opts.shard.contains(&t) {
            total += 1;
        }
    }
    let store = match &a.store {
        Some(loc) => {
            let path = store_location(loc)?;
            let name = match (&a.run, a.resume) {
                (Some(n), _) => n.clone(),
                (None, true) => store::latest_run(&store::connect(&path)?)?
                    .ok_or_else(|| super::usage("--resume: the store has no run yet"))?,
                (None, false) => format!(
                    "scan-{}",
                    time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                ),
            };
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            // Shards of one run write into it side by side.
            let join = a.resume || opts.shard.n > 1;
            let s = store::Store::open_run(&path, &name, join, &command)
                .map_err(|e| super::usage(e.to_string()))?;
            eprintln!(
                "run `{name}` in {path} ({} target(s) already done)",
                s.count()?
            );
            Some(s)
        }
        None => None,
    };
    let store = RefCell::new(store);
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let pb = indicatif::ProgressBar::new(total);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let summary = RefCell::new(scan::Summary::default());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let started = Instant::now();
    let end = scan::run(
        targets.iter(),
        &opts,
        |t| {
            let done = match store.borrow().as_ref() {
                Some(s) if a.resume => s.is_done(&t.key())?,
                _ => false,
            };
            if done {
                summary.borrow_mut().skipped += 1;
                pb.inc(1);
            }
            Ok(done)
        },
        |r| {
            if a.json {
                writeln!(out, "{}", r.to_json())?;
                out.flush()?;
            } else if pb.is_hidden() {
                writeln!(out, "{}", text_line(&r))?;
                out.flush()?;
            } else {
                pb.println(text_line(&r));
            }
            let mut sum = summary.borrow_mut();
            sum.add(&r);
            pb.inc(1);
            pb.set_message(sum.failing_line());
            if let Some(s) = store.borrow_mut().as_mut() {
                s.add(r)?;
            }
            Ok(())
        },
        interrupted,
    )
    .await;
    pb.finish_and_clear();
    out.flush()?;
    drop(out);
    // Whatever happened, what ended is committed.
    if let Some(s) = store.borrow_mut().as_mut() {
        s.flush()?;
    }
    let end = end?;
    eprint!("{}", summary.borrow().render(started.elapsed()));
    if end.interrupted {
        eprintln!(
            "interrupted: {} probe(s) in flight were abandoned{}",
            end.abandoned,
            if a.store.is_some() {
                "; --resume finishes the run"
            } else {
                ""
            }
        );
        return Ok(exit::INTERRUPTED);
    }
    if end.abandoned > 0 {
        eprintln!(
            "{} probe(s) gave no result within their deadline",
            end.abandoned
        );
    }
    Ok(exit::SUCCESS)
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// Before: a JSON-lines file of `scan --json`, or with --store a run name
    before: String,
    /// After: same
    after: String,
    /// Compare two runs of this store (SQLite file or postgres:// URL) instead of two files
    #[arg(
        long,
        value_name = "FILE|URL",
        env = "RDPROBE_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// A stage is slower when it took more than this factor times as long...
    #[arg(long, default_value_t = 2.0)]
    time_factor: f64,
    /// ...and at least this much more
    #[arg(long, default_value = "100ms", value_parser = super::duration_arg)]
    time_floor: std::time::Duration,
    /// Print one JSON object per changed target
    #[arg(long)]
    json: bool,
}

/// Reads a JSON-lines file lazily, one bounded line at a time.
fn lines_of(
    path: &PathBuf,
) -> Result<impl Iterator<Item = Result<(String, diff::Digest), String>>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut r = std::io::BufReader::new(f);
    let name = path.display().to_string();
    let mut n = 0usize;
    Ok(std::iter::from_fn(move || loop {
        let mut line = Vec::new();
        match std::io::Read::take(&mut r, diff::MAX_LINE_LEN as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(format!("{name}: {e}"))),
        }
        n += 1;
        if line.len() > diff::MAX_LINE_LEN {
            return Some(Err(format!("{name} line {n}: too long")));
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        return Some(diff::parse_line(&text).map_err(|e| format!("{name} line {n}: {e}")));
    }))
}

fn run_lines(conn: &store::Conn, run: &str) -> Result<Vec<Result<(String, diff::Digest), String>>> {
    let mut v = Vec::new();
    store::for_each_result(conn, run, |s| {
        v.push(diff::parse_line(s).map_err(|e| format!("run {run}: {e}")));
        Ok(())
    })
    .map_err(|e| super::usage(e.to_string()))?;
    Ok(v)
}

pub fn diff(a: DiffArgs) -> Result<i32> {
    if !(a.time_factor >= 1.0 && a.time_factor.is_finite()) {
        return Err(super::usage("--time-factor takes a number >= 1"));
    }
    let tol = diff::Tolerance {
        factor: a.time_factor,
        floor_ms: a.time_floor.as_secs_f64() * 1000.0,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut write = |d: &diff::TargetDiff| -> std::io::Result<()> {
        if a.json {
            writeln!(out, "{}", serde_json::to_string(d).unwrap_or_default())
        } else {
            writeln!(out, "{}", diff::render(d))
        }
    };
    let sum = match &a.store {
        Some(loc) => {
            let loc = store_location(loc)?;
            if let store::Location::Sqlite(path) = &loc {
                if !path.exists() {
                    return Err(super::usage(format!("no store at {}", path.display())));
                }
            }
            let conn = store::connect(&loc)?;
            let before = run_lines(&conn, &a.before)?;
            let after = run_lines(&conn, &a.after)?;
            diff::diff(before, after, tol, &mut write)
        }
        None => diff::diff(
            lines_of(&PathBuf::from(&a.before))?,
            lines_of(&PathBuf::from(&a.after))?,
            tol,
            &mut write,
        ),
    }
    .map_err(super::usage)?;
    out.flush()?;
    eprintln!(
        "{} target(s) compared: {} changed, {} regressed, {} missing, {} new",
        sum.compared, sum.changed, sum.regressed, sum.missing, sum.new
    );
    Ok(if sum.regressed > 0 {
        exit::DIFF_REGRESSED
    } else if sum.changed > 0 {
        exit::DIFF_CHANGED
    } else {
        exit::SUCCESS
    })
}
