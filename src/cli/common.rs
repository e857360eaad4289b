//! What every command shares: usage errors, logging, durations and targets from the command line,
//! the password (environment or prompt, never argv), signals, scenarios and key files.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

#[derive(Debug)]
pub(crate) struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

pub(crate) fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RDPROBE_LOG").unwrap_or_else(|_| {
        // Quiet by default: IronRDP and sspi log the failures rdprobe reports as verdicts anyway.
        let deps = if verbose >= 2 { "debug" } else { "off" };
        tracing_subscriber::EnvFilter::new(format!(
            "off,rdprobe={level},ironrdp_connector={deps},ironrdp_acceptor={deps},sspi={deps}"
        ))
    });
    // INVARIANT: sspi's debug spans (`encrypt_message`, `decrypt_message`…) print the buffers they
    // seal, which include the TSCredentials with the password in UTF-16: sspi never logs below info,
    // whatever -v or RDPROBE_LOG ask for (the later directive for the same target wins).
    let filter = match "sspi=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

// Typed values of options, for clap's `value_parser`: a bad value is refused by clap before the
// command runs, with the option's name, these words and exit code 2.

/// `--timeout 5s`, `--deadline 500ms`, `--duration 10m`.
pub(crate) fn duration_arg(s: &str) -> std::result::Result<Duration, String> {
    rdprobe::parse::duration(s)
}

/// A stage name of a direct connection or of the gateway hop (`--stop-after`).
pub(crate) fn stage_arg(s: &str) -> std::result::Result<rdprobe::stage::Stage, String> {
    use rdprobe::stage::Stage;
    Stage::parse(s).ok_or_else(|| {
        let names: Vec<&str> = [Stage::Dns]
            .iter()
            .chain(Stage::ALL.iter())
            .chain(Stage::GATEWAY.iter())
            .map(|s| s.as_str())
            .collect();
        format!("unknown stage (one of {})", names.join(", "))
    })
}

/// A security protocol (`--security rdp,ssl,hybrid,hybrid_ex`; also tls, nla, credssp).
pub(crate) fn protocol_arg(s: &str) -> std::result::Result<rdprobe::probe::Protocol, String> {
    rdprobe::probe::Protocol::parse(s)
        .ok_or_else(|| "unknown security protocol (rdp, ssl, hybrid, hybrid_ex)".to_owned())
}

/// The stage a fuzz campaign mutates.
pub(crate) fn fuzz_stage_arg(s: &str) -> std::result::Result<rdprobe::fuzz::FuzzStage, String> {
    use rdprobe::fuzz::FuzzStage;
    FuzzStage::parse(s).ok_or_else(|| {
        let names: Vec<&str> = FuzzStage::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown fuzz stage (one of {})", names.join(", "))
    })
}

/// `--tls-engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TlsEngineArg {
    /// rustls, then OpenSSL for servers that speak only legacy TLS
    Auto,
    /// rustls only (TLS 1.2 and 1.3)
    Rustls,
    /// OpenSSL (TLS 1.0 to 1.3)
    #[value(alias = "openssl")]
    Legacy,
}

impl From<TlsEngineArg> for rdprobe::probe::TlsEngine {
    fn from(a: TlsEngineArg) -> Self {
        use rdprobe::probe::TlsEngine;
        match a {
            TlsEngineArg::Auto => TlsEngine::Auto,
            TlsEngineArg::Rustls => TlsEngine::Rustls,
            TlsEngineArg::Legacy => TlsEngine::Legacy,
        }
    }
}

/// `--tls-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TlsVersionArg {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
}

impl TlsVersionArg {
    /// The versions rustls may use: this one, or both without the option.
    pub(crate) fn versions(a: Option<TlsVersionArg>) -> rdprobe::probe::tls::TlsVersions {
        use rdprobe::probe::tls::TlsVersions;
        match a {
            None => TlsVersions::Both,
            Some(TlsVersionArg::V12) => TlsVersions::Only12,
            Some(TlsVersionArg::V13) => TlsVersions::Only13,
        }
    }
}

/// `--gateway-transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportArg {
    /// HTTP upgraded to WebSocket (RDG_OUT_DATA with Upgrade: websocket)
    #[value(alias = "ws")]
    Websocket,
    /// the legacy two-channel transport (RDG_OUT_DATA and RDG_IN_DATA)
    Http,
    /// ask for WebSocket, take the legacy transport when an older gateway answers with it
    Auto,
    /// RPC over HTTP (MS-RPCH): not tunnelled by rdprobe; `rdprobe enum GW --gateway` says
    /// whether a gateway offers it
    Rpc,
}

impl TryFrom<TransportArg> for rdprobe::gateway::client::Transport {
    type Error = anyhow::Error;

    fn try_from(a: TransportArg) -> Result<Self> {
        use rdprobe::gateway::client::Transport;
        Ok(match a {
            TransportArg::Websocket => Transport::WebSocket,
            TransportArg::Http => Transport::Http,
            TransportArg::Auto => Transport::Auto,
            TransportArg::Rpc => {
                return Err(usage(
                    "--gateway-transport rpc: rdprobe does not tunnel RPC over HTTP (MS-RPCH); \
                     `rdprobe enum GW --gateway` says whether the gateway offers it (rpc_in / rpc_out); \
                     probe with websocket or http, which every gateway since Windows Server 2012 offers",
                ))
            }
        })
    }
}

/// A target given on the command line (see `rdprobe::parse::target`).
pub(crate) fn parse_target(t: &str) -> Result<(String, u16)> {
    rdprobe::parse::target(t).map_err(usage)
}

/// The one place a password comes from besides a prompt.
pub(crate) const PASSWORD_ENV: &str = "RDPROBE_PASSWORD";

/// Makes sure `RDPROBE_PASSWORD` holds the password for `user` (prompting for it on a terminal and
/// keeping it in this process's environment only), for code that reads it where it is used.
pub(crate) fn read_password_env_only(user: &str) -> Result<()> {
    if std::env::var_os(PASSWORD_ENV).is_none() {
        let p = read_password(user)?;
        // Only this process and its children see it; nothing is written anywhere.
        std::env::set_var(PASSWORD_ENV, p);
    }
    Ok(())
}

pub(crate) fn read_password(user: &str) -> Result<String> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Ok(p);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let p = rpassword::prompt_password(format!("password for {user}: "))
            .context("reading the password")?;
        return Ok(p);
    }
    Err(usage(
        "--user given but no password: set RDPROBE_PASSWORD (the password is never taken from the command line)",
    ))
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Writes a whole file (an HTML report).
pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The TLS secrets given on the command line: a key log file and server RSA keys.
pub(crate) fn load_secrets(
    keylog: Option<&std::path::Path>,
    rsa_keys: &[PathBuf],
) -> Result<Option<rdprobe::capture::reader::KeyLog>> {
    use rdprobe::capture::reader::KeyLog;
    let mut k = match keylog {
        Some(p) => Some(KeyLog::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        None => None,
    };
    for p in rsa_keys {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        k.get_or_insert_with(KeyLog::default)
            .add_rsa_key(&bytes)
            .map_err(|e| usage(format!("{}: {e}", p.display())))?;
    }
    Ok(k)
}

pub(crate) fn load_scenario(s: &str) -> Result<rdprobe::scenario::Scenario> {
    if let Some(sc) = rdprobe::scenario::builtin(s) {
        return Ok(sc);
    }
    let path = std::path::Path::new(s);
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {s}"))?;
        return rdprobe::scenario::Scenario::from_toml(&text)
            .map_err(|e| usage(format!("{s}: {e}")));
    }
    let names: Vec<&str> = rdprobe::scenario::builtin_names()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    bail!(usage(format!(
        "no built-in scenario or file named `{s}` (built-ins: {})",
        names.join(", ")
    )))
}
