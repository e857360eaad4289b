//! `rdprobe replay`: serve a captured server, or drive a server like a captured client.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use rdprobe::probe::Credentials;
use rdprobe::report::{self, exit};

use super::lab::{served_line, ServerLimitArgs};
use super::probe::write_artifacts;
use super::*;

#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// pcap or pcapng file holding the connection to replay
    capture: PathBuf,
    /// Serve the captured server's behaviour with the lab server
    #[arg(
        long,
        conflicts_with = "as_client",
        required_unless_present = "as_client"
    )]
    as_server: bool,
    /// Drive --target like the captured client and compare with the capture
    #[arg(long)]
    as_client: bool,
    /// --as-server: address to listen on, loopback only unless --allow-remote [default:
    /// 127.0.0.1:3389; with --emit-scenario alone, do not serve]
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    server: ServerLimitArgs,
    /// --as-client: the server to drive (HOST, HOST:PORT, [IPv6]:PORT)
    #[arg(long)]
    target: Option<String>,
    /// Which connection of the capture (1-based, as `analyze` numbers them) [default: the first failing one, else the first]
    #[arg(long)]
    connection: Option<usize>,
    /// --as-server: write the derived scenario (TOML) to this file
    #[arg(long)]
    emit_scenario: Option<PathBuf>,
    /// --as-client: resend the client's cleartext PDUs (X.224 request; standard RDP security PDUs) byte for byte
    #[arg(long)]
    exact: bool,
    /// SSLKEYLOGFILE with TLS secrets for the capture (secrets embedded in a pcapng are used automatically)
    #[arg(long)]
    keylog: Option<PathBuf>,
    /// Server RSA private key (PEM or DER) to decrypt static-RSA TLS sessions; repeatable
    #[arg(long, value_name = "FILE")]
    rsa_key: Vec<PathBuf>,
    /// --as-server: the NLA account (password from RDPROBE_PASSWORD) [default: user / pass];
    /// --as-client: the user to log on as when the captured client authenticated
    #[arg(long)]
    user: Option<String>,
    /// Domain for --user
    #[arg(long)]
    domain: Option<String>,
    /// --as-server: answer at once instead of replaying the server's think time
    #[arg(long)]
    no_delays: bool,
    /// --as-client: deadline for each wait on the server
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    timeout: std::time::Duration,
    /// --as-client: deadline for the whole run
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    deadline: std::time::Duration,
    /// --as-client: write the new conversation as pcapng
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

pub(crate) async fn cmd_replay(a: ReplayArgs) -> Result<i32> {
    use rdprobe::capture::reader::ReaderOptions;
    use rdprobe::replay;
    let listen = a
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3389)));
    // Checked before anything else, so that a refused address binds nothing and reads nothing.
    let limits = if a.as_server {
        a.server.check(listen, false)?
    } else {
        rdprobe::lab::LabLimits::default()
    };
    let keylog = load_secrets(a.keylog.as_deref(), &a.rsa_key)?;
    let input = std::io::BufReader::new(
        std::fs::File::open(&a.capture)
            .with_context(|| format!("opening {}", a.capture.display()))?,
    );
    let conns = replay::load_capture(
        input,
        ReaderOptions {
            keylog,
            ..ReaderOptions::default()
        },
    )
    .with_context(|| format!("reading {}", a.capture.display()))?;
    let conn = replay::pick(&conns, a.connection).map_err(|e| usage(e.to_string()))?;
    eprintln!(
        "replaying connection #{} of {} ({} -> {}): {}",
        conn.number,
        a.capture.display(),
        conn.report.client,
        conn.report.server,
        conn.report.summary
    );
    if a.as_client {
        if replay::gateway::is_gateway(&conn.report) {
            return Err(usage(
                "--as-client of a connection through an RD Gateway is not supported (--as-server replays the gateway)",
            ));
        }
        return replay_as_client(&a, conn).await;
    }
    let users = match &a.user {
        Some(u) => {
            // The scenario names the variable, never the password: its TOML (--emit-scenario) and
            // JSON are files a user shares. The password is read here only to fail early.
            read_password_env_only(u)?;
            Some(vec![rdprobe::scenario::User {
                name: u.clone(),
                password: String::new(),
                password_env: Some(PASSWORD_ENV.to_owned()),
                domain: a.domain.clone(),
            }])
        }
        None => None,
    };
    let opts = replay::server::ServerOptions {
        name: Some(format!(
            "replay-{}-{}",
            a.capture
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            conn.number
        )),
        source: Some(format!(
            "{} connection #{}",
            a.capture.display(),
            conn.number
        )),
        users,
        no_delays: a.no_delays,
    };
    let derived = replay::server::derive_server(&conn.trace, &conn.report, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&derived)?);
    } else {
        for n in &derived.notes {
            eprintln!("  {n}");
        }
        eprintln!(
            "expect: {} at {}",
            derived.expect_verdict, derived.expect_stage
        );
    }
    if let Some(p) = &a.emit_scenario {
        std::fs::write(p, derived.scenario.to_toml())
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("scenario written to {}", p.display());
        if a.listen.is_none() {
            return Ok(exit::SUCCESS);
        }
    }
    if derived.scenario.gateway.is_some() {
        // A captured gateway: the lab gateway on the listen address, the lab server behind it.
        let back = SocketAddr::from(([127, 0, 0, 1], 0));
        return super::lab_gateway::run(listen, Some(back), None, false, derived.scenario, limits)
            .await;
    }
    let handle = rdprobe::lab::spawn_lab_with(listen, derived.scenario.clone(), limits)
        .with_context(|| format!("starting the replay server on {listen}"))?;
    eprintln!(
        "replay server listening on {} (NLA account: {})\n(stop with Ctrl-C)",
        handle.addr,
        derived
            .scenario
            .identity
            .users
            .first()
            .map(|u| u.name.as_str())
            .unwrap_or("none")
    );
    interrupted().await;
    eprintln!("{}", served_line(&handle));
    handle.stop();
    Ok(exit::SUCCESS)
}

pub(crate) async fn replay_as_client(
    a: &ReplayArgs,
    conn: &rdprobe::replay::CapturedConnection,
) -> Result<i32> {
    use rdprobe::replay::{client, compare};
    let target = a
        .target
        .as_deref()
        .ok_or_else(|| usage("--as-client needs --target HOST[:PORT]"))?;
    let (host, port) = parse_target(target)?;
    let plan = client::derive_client(&conn.trace, &conn.report);
    let credentials = match &a.user {
        Some(u) => Some(Credentials {
            user: u.clone(),
            domain: a.domain.clone(),
            password: read_password(u)?,
        }),
        None => None,
    };
    let opts = client::ClientRunOptions {
        host,
        port,
        exact: a.exact,
        credentials,
        stage_timeout: a.timeout,
        deadline: a.deadline,
    };
    let result = tokio::select! {
        r = client::run_client(&plan, &opts) => r,
        _ = interrupted() => return Ok(exit::INTERRUPTED),
    };
    write_artifacts(&result, a.pcap.as_ref(), None)?;
    let cmp = compare::compare(&conn.report, &result.report);
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "connection": conn.number,
            "plan": plan,
            "capture": conn.report,
            "now": result.report,
            "comparison": cmp,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for n in &plan.notes {
            writeln!(out, "note: {n}")?;
        }
        write!(out, "{}", report::render_text(&result.report))?;
        write!(out, "{}", compare::render(&cmp))?;
    }
    Ok(if cmp.matched {
        exit::SUCCESS
    } else {
        exit::REPLAY_MISMATCH
    })
}
