//! `rdprobe lab`, `rdprobe demo` and `rdprobe scenarios`: the embedded lab server.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use rdprobe::probe::{self, Credentials, ProbeOptions, Protocol};
use rdprobe::report::{self, exit};

use super::probe::write_artifacts;
use super::*;

#[derive(clap::Args)]
pub(crate) struct LabArgs {
    /// Address to listen on (loopback only unless --allow-remote) [default: 127.0.0.1:3389, or a
    /// free loopback port with --gateway-listen]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Also serve a fake RD Gateway (MS-TSGU, WebSocket and legacy HTTP transports, NTLM / Basic) on this address;
    /// its channels go to the lab server, or to --target. The scenario's [gateway] section sets its
    /// faults
    #[arg(long, value_name = "ADDR")]
    gateway_listen: Option<SocketAddr>,
    /// With --gateway-listen: relay channels to this server (host:port) instead of the lab server
    /// (loopback only unless --allow-remote)
    #[arg(long, value_name = "HOST:PORT", requires = "gateway_listen")]
    target: Option<String>,
    /// Built-in scenario name (see `rdprobe scenarios`) or a TOML scenario file
    #[arg(long, default_value = "healthy-nla")]
    scenario: String,
    #[command(flatten)]
    server: ServerLimitArgs,
    /// Arm a planted bug (test-only; for testing the fuzzer): x224-long-cookie-hang,
    /// credssp-version-zero-abort, mcs-many-channels-wedge, x224-routing-token-abort (aborts the
    /// process), x224-correlation-leak
    #[arg(long, value_name = "BUG", hide = true)]
    plant: Vec<String>,
    /// Mutate what the server sends at this stage (client robustness testing): x224, tls, credssp,
    /// mcs, channels, licensing, capabilities, error. Connection N plays case N-1 unless --case
    #[arg(long, value_name = "STAGE")]
    mutate_server: Option<String>,
    /// Serve each connection in a process of its own, as xrdp does (a crash ends only that
    /// connection's process; the listener serves on)
    #[arg(long, conflicts_with = "gateway_listen")]
    fork_per_connection: bool,
    /// Serve the connection on standard input and exit (the process --fork-per-connection starts)
    #[arg(long, hide = true)]
    connection_on_stdin: bool,
    /// Seed of --mutate-server's cases
    #[arg(long, default_value_t = 0, requires = "mutate_server")]
    seed: u64,
    /// Play this --mutate-server case on every connection
    #[arg(long, requires = "mutate_server")]
    case: Option<u64>,
}

/// Who a lab server (`lab`, `replay --as-server`) accepts, and for how long.
#[derive(clap::Args)]
pub(crate) struct ServerLimitArgs {
    /// Listen on a non-loopback --listen address (0.0.0.0, ::, an interface address): anyone who
    /// can reach it is served
    #[arg(long)]
    allow_remote: bool,
    /// Most connections served at the same time; more are closed at once
    #[arg(long, value_name = "N", default_value_t = rdprobe::lab::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Longest one connection lives, however slowly the client sends (e.g. 90s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = duration_arg)]
    connection_timeout: std::time::Duration,
}

impl ServerLimitArgs {
    /// Checks `listen` against the policy (before anything binds) and returns the limits.
    pub(crate) fn check(
        &self,
        listen: SocketAddr,
        planted: bool,
    ) -> Result<rdprobe::lab::LabLimits> {
        rdprobe::lab::check_listen(listen, self.allow_remote, planted)
            .map_err(|e| usage(e.to_string()))?;
        if self.max_connections == 0 {
            bail!(usage("--max-connections must be at least 1"));
        }
        Ok(rdprobe::lab::LabLimits {
            max_connections: self.max_connections,
            connection_timeout: self.connection_timeout,
        })
    }
}

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Directory for the captures the demo writes
    #[arg(long, default_value = "rdprobe-demo")]
    out: PathBuf,
    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,
}

pub(crate) async fn cmd_lab(a: LabArgs) -> Result<i32> {
    use rdprobe::lab::planted::{spawn_planted_lab_with, Bug};
    if let Some(gw) = a.gateway_listen {
        let limits = a.server.check(gw, false)?;
        let sc = load_scenario(&a.scenario)?;
        return super::lab_gateway::run(
            gw,
            a.listen,
            a.target.as_deref(),
            a.server.allow_remote,
            sc,
            limits,
        )
        .await;
    }
    let listen = a.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3389)));
    let limits = a.server.check(listen, !a.plant.is_empty())?;
    let mut sc = load_scenario(&a.scenario)?;
    if let Some(stage) = &a.mutate_server {
        let stage = rdprobe::scenario::MutateStage::parse(stage).ok_or_else(|| {
            usage(format!(
                "unknown --mutate-server stage `{stage}`, expected one of {}",
                rdprobe::scenario::MutateStage::ALL
                    .map(|m| m.as_str())
                    .join(", ")
            ))
        })?;
        sc.mutate = Some(rdprobe::scenario::Mutate {
            stage,
            seed: a.seed,
            case: a.case,
        });
    }
    let bugs = a
        .plant
        .iter()
        .map(|b| Bug::parse(b).ok_or_else(|| usage(format!("unknown planted bug `{b}`"))))
        .collect::<Result<Vec<_>>>()?;
    if a.connection_on_stdin {
        return super::lab_fork::child(sc, bugs, limits).await;
    }
    if a.fork_per_connection {
        return super::lab_fork::run(listen, &sc, &bugs, limits).await;
    }
    let planted = spawn_planted_lab_with(listen, sc.clone(), &bugs, limits)
        .with_context(|| format!("starting the lab on {listen}"))?;
    let addr = planted.addr();
    eprintln!(
        "lab listening on {addr} with scenario `{}`: {}{}{}\n(stop with Ctrl-C)",
        sc.name,
        sc.description,
        sc.mutate.as_ref().map_or(String::new(), |m| format!(
            " [server mutation: {} seed {}{}]",
            m.stage,
            m.seed,
            m.case.map_or(String::new(), |k| format!(" case {k}"))
        )),
        planted_note(&bugs)
    );
    interrupted().await;
    if let Some(h) = planted.handle() {
        eprintln!("{}", served_line(h));
    }
    drop(planted);
    Ok(exit::SUCCESS)
}

pub(crate) fn served_line(h: &rdprobe::lab::LabHandle) -> String {
    match h.connections_refused() {
        0 => format!("served {} connection(s)", h.connections_served()),
        r => format!(
            "served {} connection(s); closed {r} over the connection limit",
            h.connections_served()
        ),
    }
}

pub(crate) async fn cmd_demo(a: DemoArgs) -> Result<i32> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut out = std::io::stdout().lock();
    for sc in rdprobe::lab::demo_scenarios() {
        let handle = rdprobe::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), sc.clone())
            .with_context(|| format!("starting the lab for {}", sc.name))?;
        let mut o = ProbeOptions::new(handle.addr.ip().to_string(), handle.addr.port());
        o.stage_timeout = Duration::from_secs(2);
        o.deadline = Duration::from_secs(15);
        if let Some((user, password)) = rdprobe::lab::demo_credentials(&sc) {
            o.credentials = Some(Credentials {
                user: user.clone(),
                domain: None,
                password,
            });
            o.cookie = Some(user);
        }
        // A client offering TLS only is what meets an NLA-required server in the field.
        if sc.name == "nla-required" {
            o.protocols = vec![Protocol::Ssl];
        }
        let result = probe::probe(&o).await;
        handle.stop();
        let pcap = a.out.join(format!("{}.pcapng", sc.name));
        write_artifacts(&result, Some(&pcap), None)?;
        if a.json {
            let mut v = serde_json::to_value(&result.report)?;
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("scenario".into(), serde_json::json!(sc.name));
                m.insert(
                    "capture".into(),
                    serde_json::json!(pcap.display().to_string()),
                );
            }
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        } else {
            writeln!(out, "=== scenario {}: {}", sc.name, sc.description)?;
            write!(out, "{}", report::render_text(&result.report))?;
            if !result.report.verdict.is_ok() {
                write!(
                    out,
                    "{}",
                    rdprobe::diagnose::render_diagnosis(&rdprobe::diagnose::diagnose(
                        &result.report
                    ))
                )?;
            }
            writeln!(out, "capture: {}\n", pcap.display())?;
        }
        out.flush()?;
    }
    Ok(exit::SUCCESS)
}

pub(crate) fn cmd_scenarios() -> Result<i32> {
    for (name, desc) in rdprobe::scenario::builtin_names() {
        println!("{name:<28} {desc}");
    }
    Ok(exit::SUCCESS)
}

/// The start-up line's note of the planted bugs (" [planted: a, b]"), empty when none are.
pub(super) fn planted_note(bugs: &[rdprobe::lab::planted::Bug]) -> String {
    if bugs.is_empty() {
        String::new()
    } else {
        format!(
            " [planted: {}]",
            bugs.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
        )
    }
}
