//! `rdprobe probe`: its arguments, the probe options they make, and the artifacts it writes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use rdprobe::probe::{self, Credentials, ProbeOptions, Protocol};
use rdprobe::report::{self, exit, ConnectionReport};
use rdprobe::stage::Stage;

use super::*;

#[derive(clap::Args)]
pub(crate) struct ProbeArgs {
    /// Target: HOST, HOST:PORT, [IPv6]:PORT (default port 3389)
    pub(crate) target: String,
    /// User name for NLA / logon (the password comes from RDPROBE_PASSWORD or a prompt)
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Domain for the user
    #[arg(long)]
    pub(crate) domain: Option<String>,
    /// Security protocols to offer, comma separated: rdp, ssl, hybrid, hybrid_ex [default: ssl,hybrid,hybrid_ex]
    #[arg(long, value_delimiter = ',', value_name = "PROTOCOLS", value_parser = protocol_arg)]
    pub(crate) security: Vec<Protocol>,
    /// Stop after this stage (dns: resolve the name only; tcp, x224, tls, credssp, mcs, channels,
    /// security, licensing, capabilities; with --gateway also gw_tcp, gw_tls, gw_http, gw_auth,
    /// gw_tunnel, gw_channel)
    #[arg(long, value_name = "STAGE", value_parser = stage_arg)]
    pub(crate) stop_after: Option<Stage>,
    /// Deadline for each wait on the server (e.g. 5s, 500ms)
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub(crate) timeout: std::time::Duration,
    /// Deadline for the whole probe
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    pub(crate) deadline: std::time::Duration,
    /// Write a stage-annotated pcapng of everything sent and received (TLS secrets embedded): with
    /// CAP_NET_RAW (root) the real packets captured from the wire (fact capture=wire), else packets
    /// rebuilt from the socket's bytes (capture=synthetic); with --gateway: the client-gateway
    /// conversation, which carries the inner RDP in its channel
    #[arg(long)]
    pub(crate) pcap: Option<PathBuf>,
    /// Write the TLS secrets as an SSLKEYLOGFILE
    #[arg(long)]
    pub(crate) keylog: Option<PathBuf>,
    /// Print one JSON document instead of the table
    #[arg(long)]
    pub(crate) json: bool,
    /// TLS engine
    #[arg(long, value_enum, default_value_t = TlsEngineArg::Auto)]
    pub(crate) tls_engine: TlsEngineArg,
    /// Restrict rustls to one TLS version
    #[arg(long, value_enum)]
    pub(crate) tls_version: Option<TlsVersionArg>,
    /// X.224 cookie (mstshash=...) to send; defaults to the user name
    #[arg(long)]
    pub(crate) cookie: Option<String>,
    /// clientName to send in the MCS Client Core Data (up to 15 characters); default rdprobe
    #[arg(long)]
    pub(crate) client_name: Option<String>,
    /// Also print the diagnosis (fault class, likely causes, remedies)
    #[arg(long)]
    pub(crate) diagnose: bool,
    /// Write a self-contained HTML report (timeline, ladder diagram, diagnosis, facts)
    #[arg(long, value_name = "FILE")]
    pub(crate) html: Option<PathBuf>,
    /// Go through this RD Gateway: GW or GW:PORT (default port 443). Adds the stages gw_tcp, gw_tls,
    /// gw_http, gw_auth, gw_tunnel, gw_channel before x224
    #[arg(long, value_name = "GW[:PORT]")]
    pub(crate) gateway: Option<String>,
    /// User at the gateway [default: --user]; the password comes from RDPROBE_GATEWAY_PASSWORD,
    /// else RDPROBE_PASSWORD
    #[arg(long, requires = "gateway")]
    pub(crate) gateway_user: Option<String>,
    /// Domain of the gateway user [default: --domain]
    #[arg(long, requires = "gateway")]
    pub(crate) gateway_domain: Option<String>,
    /// Same as --pcap with --gateway (kept for scripts): the client-gateway conversation (HTTPS:
    /// HTTP, WebSocket, MS-TSGU and the inner RDP in the channel) with the TLS secrets of both
    #[arg(long, value_name = "FILE", requires = "gateway")]
    pub(crate) gateway_pcap: Option<PathBuf>,
    /// Gateway transport
    #[arg(long, value_enum, default_value_t = TransportArg::Auto, requires = "gateway")]
    pub(crate) gateway_transport: TransportArg,
    /// Clamp the TCP maximum segment size to N bytes (TCP_MAXSEG before the connect): the SYN
    /// announces N and no larger segment is sent or asked for. Without it, a stall after the first
    /// full-size flight is retried with smaller sizes and the largest that passes is reported
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(88..))]
    pub(crate) mss: Option<u16>,
    /// Probe every address the name resolves to (IPv4 and IPv6), one report each; --pcap FILE
    /// writes FILE-1, FILE-2, ... per address
    #[arg(long)]
    pub(crate) all_addresses: bool,
}

/// Environment variable of the gateway password (else RDPROBE_PASSWORD is used).
pub(crate) const GATEWAY_PASSWORD_ENV: &str = "RDPROBE_GATEWAY_PASSWORD";

pub(crate) fn gateway_options(
    a: &ProbeArgs,
    gw: &str,
) -> Result<rdprobe::gateway::client::GatewayOptions> {
    use rdprobe::gateway::client::GatewayOptions;
    let explicit_port = gw
        .rsplit_once(':')
        .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')));
    let (host, port) = parse_target(gw)?;
    let mut g = GatewayOptions::new(host, if explicit_port { port } else { 443 });
    g.transport = a.gateway_transport.try_into()?;
    if let Some(user) = a.gateway_user.as_ref().or(a.user.as_ref()) {
        let password = match std::env::var(GATEWAY_PASSWORD_ENV) {
            Ok(p) => p,
            Err(_) => read_password(user)?,
        };
        g.credentials = Some(Credentials {
            user: user.clone(),
            domain: a.gateway_domain.clone().or_else(|| a.domain.clone()),
            password,
        });
    }
    if let Some(n) = &a.client_name {
        g.client_name = n.clone();
    }
    Ok(g)
}

pub(crate) fn probe_options(a: &ProbeArgs) -> Result<ProbeOptions> {
    let (host, port) = parse_target(&a.target)?;
    let mut o = ProbeOptions::new(host, port);
    o.protocols.extend(&a.security);
    if o.protocols.contains(&Protocol::Rdp) && o.protocols.len() > 1 {
        return Err(usage(
            "`rdp` (standard RDP security) is requested by offering no other protocol: use --security rdp alone",
        ));
    }
    if let Some(st) = a.stop_after {
        if st.is_gateway() && a.gateway.is_none() {
            return Err(usage(format!(
                "--stop-after {st} is a stage of the RD Gateway hop: it needs --gateway"
            )));
        }
        if st == Stage::Dns {
            if a.gateway.is_some() {
                return Err(usage(
                    "--stop-after dns resolves the target directly: not with --gateway (use --stop-after gw_tcp)",
                ));
            }
            let h = o.host.trim_matches(|c| c == '[' || c == ']');
            if h.parse::<std::net::IpAddr>().is_ok() {
                return Err(usage(format!(
                    "--stop-after dns: the target {h} is an address, there is no name to resolve"
                )));
            }
        }
        o.stop_after = Some(st);
    }
    o.stage_timeout = a.timeout;
    o.deadline = a.deadline;
    o.tls_engine = a.tls_engine.into();
    o.tls_versions = TlsVersionArg::versions(a.tls_version);
    o.cookie = a.cookie.clone();
    o.client_name = a.client_name.clone();
    o.capture_wire = true;
    o.mss = a.mss;
    if let Some(user) = &a.user {
        let password = read_password(user)?;
        o.credentials = Some(Credentials {
            user: user.clone(),
            domain: a.domain.clone(),
            password,
        });
        if o.cookie.is_none() {
            o.cookie = Some(user.clone());
        }
    }
    Ok(o)
}

pub(crate) async fn cmd_probe(a: ProbeArgs) -> Result<i32> {
    let opts = probe_options(&a)?;
    if let Some(gw) = &a.gateway {
        let g = gateway_options(&a, gw)?;
        let (result, mut gw_traces) = tokio::select! {
            r = rdprobe::gateway::client::probe_with_captures(&opts, &g) => r,
            _ = interrupted() => return Ok(exit::INTERRUPTED),
        };
        // One capture holds everything: the client-gateway conversation carries the channel's RDP,
        // and its key log decrypts both the gateway's TLS and the inner session's. The legacy
        // transport's IN channel is a second conversation in the same capture.
        let extra = if gw_traces.len() > 1 {
            gw_traces.split_off(1)
        } else {
            Vec::new()
        };
        let hop = gw_traces.pop().map(|trace| probe::ProbeResult {
            trace,
            report: result.report.clone(),
            labels: Vec::new(),
        });
        let written = hop.as_ref().unwrap_or(&result);
        write_hop_artifacts(written, &extra, a.pcap.as_ref(), a.keylog.as_ref())?;
        write_hop_artifacts(written, &extra, a.gateway_pcap.as_ref(), None)?;
        print_report(&result.report, a.json, a.diagnose)?;
        return Ok(report::exit_code(&result.report));
    }
    if a.all_addresses {
        return super::probe_all::run(&a, opts).await;
    }
    let shared = probe::tap::SharedTrace::new(rdprobe::trace::Trace::new(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::from(([0, 0, 0, 0], 0)),
    ));
    let mut was_interrupted = false;
    tokio::select! {
        _ = probe::run_into(&opts, &shared) => {}
        _ = interrupted() => {
            was_interrupted = true;
            shared.push(rdprobe::trace::EventKind::Note("interrupted by signal".into()));
        }
    }
    let result = probe::finish_for(&shared, &opts);
    write_artifacts(&result, a.pcap.as_ref(), a.keylog.as_ref())?;
    if let Some(path) = &a.html {
        let title = format!("rdprobe probe {}", a.target);
        write_file(
            path,
            rdprobe::html::connection_page(&title, 1, &result.report, Some(&result.trace))
                .as_bytes(),
        )?;
    }
    print_report(&result.report, a.json, a.diagnose)?;
    if was_interrupted {
        return Ok(exit::INTERRUPTED);
    }
    Ok(report::exit_code(&result.report))
}

/// [`write_artifacts`] for a probe through a gateway: `extra` are further conversations with the
/// gateway (the legacy transport's IN channel), written into the same capture and key log.
fn write_hop_artifacts(
    result: &probe::ProbeResult,
    extra: &[rdprobe::trace::Trace],
    pcap: Option<&PathBuf>,
    keylog: Option<&PathBuf>,
) -> Result<()> {
    if extra.is_empty() {
        return write_artifacts(result, pcap, keylog);
    }
    if let Some(p) = pcap {
        let f = rdprobe::capture::writer::create_private(p)
            .with_context(|| format!("creating {}", p.display()))?;
        let mut all: Vec<(&rdprobe::trace::Trace, &[String])> =
            vec![(&result.trace, &result.labels[..])];
        all.extend(extra.iter().map(|t| (t, &[][..])));
        rdprobe::capture::writer::write_pcapng_many(&all, std::io::BufWriter::new(f))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(k) = keylog {
        let mut merged = result.trace.clone();
        for t in extra {
            merged.keylog.extend(t.keylog.iter().cloned());
        }
        let f = rdprobe::capture::writer::create_private(k)
            .with_context(|| format!("creating {}", k.display()))?;
        rdprobe::capture::writer::write_keylog(&merged, std::io::BufWriter::new(f))
            .with_context(|| format!("writing {}", k.display()))?;
    }
    Ok(())
}

pub(crate) fn write_artifacts(
    result: &probe::ProbeResult,
    pcap: Option<&PathBuf>,
    keylog: Option<&PathBuf>,
) -> Result<()> {
    // Both hold secrets (the pcapng embeds the TLS key log): created 0600.
    if let Some(p) = pcap {
        let f = rdprobe::capture::writer::create_private(p)
            .with_context(|| format!("creating {}", p.display()))?;
        let w = std::io::BufWriter::new(f);
        rdprobe::capture::writer::write_pcapng(&result.trace, &result.labels, w)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(k) = keylog {
        let f = rdprobe::capture::writer::create_private(k)
            .with_context(|| format!("creating {}", k.display()))?;
        rdprobe::capture::writer::write_keylog(&result.trace, std::io::BufWriter::new(f))
            .with_context(|| format!("writing {}", k.display()))?;
    }
    Ok(())
}

pub(crate) fn print_report(r: &ConnectionReport, json: bool, diagnose: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(r)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("exit_code".into(), serde_json::json!(report::exit_code(r)));
            m.insert(
                "diagnosis".into(),
                serde_json::to_value(rdprobe::diagnose::diagnose(r))?,
            );
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write!(out, "{}", report::render_text(r))?;
        if diagnose && !r.verdict.is_ok() {
            write!(
                out,
                "{}",
                rdprobe::diagnose::render_diagnosis(&rdprobe::diagnose::diagnose(r))
            )?;
        }
    }
    Ok(())
}
