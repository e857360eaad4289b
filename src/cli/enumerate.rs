//! `rdprobe enum`: what a server offers.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use rdprobe::probe::Credentials;
use rdprobe::report::exit;

use super::*;

#[derive(clap::Args)]
pub(crate) struct EnumArgs {
    /// Target: HOST, HOST:PORT, [IPv6]:PORT (default port 3389)
    target: String,
    /// Check these credentials too (auth-only; the password comes from RDPROBE_PASSWORD or a prompt)
    #[arg(long)]
    user: Option<String>,
    /// Domain for the user
    #[arg(long)]
    domain: Option<String>,
    /// Deadline for each wait on the server (e.g. 3s, 500ms)
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    timeout: std::time::Duration,
    /// Connections being opened at the same time (TCP connect and X.224 exchange); also how many
    /// the cipher-suite elimination opens ahead
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// Most cipher suites tried per TLS version
    #[arg(long, default_value_t = rdprobe::enumerate::DEFAULT_CIPHER_LIMIT)]
    cipher_limit: usize,
    /// TLS versions and each version's first-choice suite only, no cipher suite enumeration
    #[arg(long)]
    no_ciphers: bool,
    /// Print one JSON document instead of the tables
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML report of what was found
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// The target is an RD Gateway (default port 443): TLS versions and certificate, the
    /// authentication schemes asked for, and how each transport (WebSocket, legacy HTTP,
    /// RPC-over-HTTP) answers; no credentials are sent
    #[arg(long)]
    gateway: bool,
}

pub(crate) async fn cmd_enum(a: EnumArgs) -> Result<i32> {
    if a.gateway {
        let explicit_port = a.target.rsplit_once(':').is_some_and(|(h, p)| {
            p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']'))
        });
        let (host, port) = parse_target(&a.target)?;
        let port = if explicit_port { port } else { 443 };
        let s = rdprobe::gateway::survey::survey(&host, port, a.timeout)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", rdprobe::gateway::survey::render(&s));
        }
        return Ok(exit::SUCCESS);
    }
    let (host, port) = parse_target(&a.target)?;
    let mut o = rdprobe::enumerate::EnumOptions::new(host, port);
    o.timeout = a.timeout;
    o.concurrency = a.concurrency.clamp(1, 64);
    o.cipher_limit = a.cipher_limit.max(1);
    o.skip_ciphers = a.no_ciphers;
    if let Some(user) = &a.user {
        o.credentials = Some(Credentials {
            user: user.clone(),
            domain: a.domain.clone(),
            password: read_password(user)?,
        });
    }
    let r = tokio::select! {
        r = rdprobe::enumerate::enumerate(&o) => r,
        _ = interrupted() => return Ok(exit::INTERRUPTED),
    };
    if let Some(path) = &a.html {
        write_file(path, rdprobe::html::enum_page(&r).as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        write!(out, "{}", rdprobe::enumerate::render::render_text(&r))?;
    }
    let answered = r
        .protocols
        .iter()
        .chain(std::iter::once(&r.all_offered))
        .any(|p| p.error.is_none());
    if !answered {
        return Ok(exit::NETWORK);
    }
    if r.credentials.as_ref().is_some_and(|c| !c.accepted) {
        return Ok(exit::AUTH);
    }
    Ok(exit::SUCCESS)
}
