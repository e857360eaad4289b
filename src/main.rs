//! rdprobe command line: a thin layer over the library (`rdprobe::…`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use rdprobe::probe::{self, Credentials, ProbeOptions, Protocol, TlsEngine};
use rdprobe::report::{self, exit, ConnectionReport};
use rdprobe::stage::Stage;

mod cli;
use cli::analyze_view::{self, AnalyzeView};

const LONG_ABOUT: &str = "\
rdprobe takes an RDP connection apart stage by stage and tells you where it dies and whose fault it is.

Stages, in order: tcp, x224, tls, credssp, mcs, channels, security, licensing, capabilities, connected.

Exit codes: 0 success (connected, or stopped by request), 1 internal error, 2 usage error,
3 network failure (refused, unreachable, timeout, reset, closed), 4 server refused (negotiation failure,
protocol mismatch, denied), 5 TLS failure, 6 authentication failure, 7 protocol error,
8 capture ended mid-connection (analyze), 9 replay mismatch, 10 fuzz findings, 11 check: an
expectation broke, 12 diff: a target regressed, 13 diff: changes without regression, 130 interrupted.";

#[derive(Parser)]
#[command(name = "rdprobe", version, about = "RDP connection probe, capture analyzer and lab server", long_about = LONG_ABOUT)]
struct Cli {
    /// Log protocol details to stderr (repeat for more: -v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Probe a live RDP server stage by stage.
    ///
    /// Without --user it goes as deep as it can without credentials (through the NTLM CHALLENGE on
    /// NLA servers, to `connected` on TLS-only and RDP-security servers). The password comes from
    /// RDPROBE_PASSWORD or an interactive prompt, never from the command line.
    ///
    /// Examples:
    ///   rdprobe probe rdp01.corp.example
    ///   rdprobe probe 10.0.0.5:3390 --user alice --domain CORP
    ///   rdprobe probe host --pcap out.pcapng --keylog out.keys --json
    ///   rdprobe probe host --security hybrid,ssl --stop-after tls --timeout 5s
    #[command(verbatim_doc_comment)]
    Probe(Box<ProbeArgs>),
    /// Decode the RDP connections in a pcap/pcapng file with the same stage verdicts as `probe`.
    ///
    /// Examples:
    ///   rdprobe analyze customer.pcapng
    ///   rdprobe analyze span.pcap --stages
    ///   rdprobe analyze big.pcap --json > verdicts.jsonl
    ///   rdprobe analyze capture.pcapng --keylog keys.txt
    ///   rdprobe analyze win7.pcap --rsa-key server.pem      # static-RSA TLS, decrypted
    ///   tcpdump -U -w - tcp port 3389 | rdprobe analyze -   # live: a row as each connection ends
    ///
    /// Exit code: 0 when every connection passed; otherwise a failing connection's code (the lowest,
    /// e.g. 3 network before 6 authentication; see `rdprobe --help`); 7 when the file is damaged part
    /// way (the connections before the damage are still reported). A capture merely cut short in its
    /// last record is a warning. RDP over UDP (MS-RDPEUDP) flows are listed, not decoded.
    #[command(verbatim_doc_comment)]
    Analyze(AnalyzeArgs),
    /// Run the embedded lab server with a scenario (built-in name or TOML file).
    ///
    /// Example: rdprobe lab --listen 127.0.0.1:3389 --scenario tls-reset-at-client-hello
    #[command(verbatim_doc_comment)]
    Lab(LabArgs),
    /// Replay a captured connection: serve its server's behaviour, or drive a server like its client.
    ///
    /// --as-server derives a lab scenario from the capture (selected protocol or RDP_NEG_FAILURE,
    /// certificate, CredSSP rejection, where and how the server ended the connection, its think
    /// time) and serves it until Ctrl-C: any client fails at the same stage, the same way, after
    /// about the same time. --as-client drives --target like the captured client and compares the
    /// stage verdicts with the capture's (exit 0 on a match, 9 on a mismatch).
    ///
    /// Examples:
    ///   rdprobe replay customer.pcapng --as-server --listen 127.0.0.1:3389
    ///   rdprobe replay customer.pcapng --as-server --emit-scenario failure.toml
    ///   rdprobe replay customer.pcapng --as-client --target rdp01:3389 --connection 2
    ///   rdprobe replay customer.pcapng --as-client --target rdp01 --exact
    #[command(verbatim_doc_comment)]
    Replay(Box<ReplayArgs>),
    /// Start the lab with a few fault scenarios in-process and probe each: see rdprobe work in one command.
    Demo(DemoArgs),
    /// Enumerate what a server offers: security protocols, RDP encryption methods, TLS versions and
    /// cipher suites with a certificate audit, CredSSP version and NTLM target info.
    ///
    /// One short connection per question, in parallel where the server allows; a connection on
    /// which the server selected a protocol carries the next question. Cipher suites are listed
    /// per TLS version with whose order decides: "server" (the list is the server's full order of
    /// preference) or "client" (the server takes the client's first supported suite; listed by
    /// key exchange, each in OpenSSL's order). With --user (password from RDPROBE_PASSWORD) it
    /// also checks whether the credentials are accepted (stops after CredSSP).
    ///
    /// Examples:
    ///   rdprobe enum rdp01.corp.example
    ///   rdprobe enum 10.0.0.5:3390 --json
    ///   RDPROBE_PASSWORD=... rdprobe enum host --user alice --domain CORP
    #[command(verbatim_doc_comment)]
    Enum(EnumArgs),
    /// Strip a capture for sharing: TLS secrets, cleartext above TLS, X.224 cookies, client names,
    /// Client Info and Security Exchange PDUs, encrypted standard-RDP-security PDUs, input and
    /// virtual channel data (zeroed keeping every length and header); writes only the RDP
    /// conversations. --anonymize also remaps addresses and ports and masks TLS server names.
    ///
    /// Examples:
    ///   rdprobe sanitize probe.pcapng shared.pcapng
    ///   rdprobe sanitize --anonymize probe.pcapng shared.pcapng
    #[command(verbatim_doc_comment)]
    Sanitize {
        /// Capture to read (pcap or pcapng)
        input: PathBuf,
        /// Sanitized pcapng to write (not the input)
        output: PathBuf,
        /// Also remap IP addresses (to 192.0.2.x, 2001:db8::x) and ports consistently, and mask
        /// the SNI and the certificate names TLS sends in clear
        #[arg(long)]
        anonymize: bool,
    },
    /// Fuzz one handshake stage of a server (loopback only unless --allow-remote).
    ///
    /// Drives the valid stages before STAGE, sends structure-aware mutations of STAGE's PDU,
    /// classifies every answer, checks that the target still serves a valid handshake, shrinks
    /// what misbehaves and writes DIR/NNNN/{case.json, repro.pcapng, README.txt}.
    /// With --lab or --pid it also watches the server process: a crash or exit (with its signal
    /// or exit code for a --lab child, which is then restarted) and RSS growth past --rss-growth
    /// are findings.
    ///
    /// Examples:
    ///   rdprobe fuzz 127.0.0.1:3389 --stage x224 --cases 20000 --seed 7 --out findings/
    ///   RDPROBE_PASSWORD=… rdprobe fuzz 127.0.0.1:3389 --stage mcs --user alice --duration 10m
    ///   rdprobe fuzz 127.0.0.1:3390 --stage security      # a server in standard RDP security
    ///   rdprobe fuzz --lab healthy-tls --stage x224 --cases 100000 --rss-growth 64MiB
    ///   rdprobe fuzz 127.0.0.1:3389 --pid 4242 --stage mcs
    ///   rdprobe fuzz --replay findings/0003/case.json --target 127.0.0.1:3389
    #[command(verbatim_doc_comment)]
    Fuzz(Box<FuzzArgs>),
    /// Check expectations for CI: probe every target of a TOML file and compare with what must hold.
    ///
    /// Each [[target]] names an address (or a lab scenario that check serves itself on a free
    /// loopback port) and expectations: expect.stage (the furthest stage that must pass) or
    /// expect.fails_at with expect.verdict / expect.ntstatus / expect.negotiation_failure (negative
    /// tests), expect.selected_protocol, expect.tls_min_version, expect.cert_days_left_min,
    /// expect.max_ms, expect.stage_max_ms, expect.nla_required. Passwords come from the environment
    /// variable a target names in password_env. Results stream as each target ends; exit code 0 when
    /// every expectation holds, 11 when one does not, 2 for an unusable file. See the README for the schema.
    ///
    /// Examples:
    ///   rdprobe check expectations.toml
    ///   rdprobe check expectations.toml --junit report.xml --json results.jsonl
    #[command(verbatim_doc_comment)]
    Check(cli::check::CheckArgs),
    /// Probe many targets (loopback only unless --allow-remote): files, CIDR ranges, HOST:PORT.
    ///
    /// Every target gets a full probe with per-stage deadlines, under --concurrency, --rate and
    /// --per-host limits; results stream as each ends (--json: one `probe --json` object per line,
    /// plus `target`); a summary of outcomes and the slowest stages goes to standard error.
    /// --store keeps results in SQLite; --resume finishes an interrupted run; --shard splits the
    /// list between machines. Exit code 0 when every target was probed, 130 when interrupted.
    ///
    /// Examples:
    ///   rdprobe scan targets.txt --concurrency 200 --json > results.jsonl
    ///   rdprobe scan 127.0.0.0/28 --ports 3389,3390 --stop-after tls
    ///   rdprobe scan targets.txt --shard 3/16 --store results.db --run weekly --resume
    #[command(verbatim_doc_comment)]
    Scan(cli::scan::ScanArgs),
    /// Compare two scans: which targets changed last stage, verdict, protocol, certificate, TLS
    /// version or stage times. Exit code 0 no change, 12 a regression, 13 changes only.
    ///
    /// Examples:
    ///   rdprobe diff last-week.jsonl today.jsonl
    ///   rdprobe diff --store results.db weekly-49 weekly-50
    #[command(verbatim_doc_comment)]
    Diff(cli::scan::DiffArgs),
    /// List the built-in lab scenarios.
    Scenarios,
    /// Explain an mstsc disconnect code, an RDP_NEG_FAILURE code, an NTSTATUS or a Set Error Info code.
    ///
    /// Example: rdprobe explain 0x904 --ext 0x7
    #[command(verbatim_doc_comment)]
    Explain {
        /// The code: hex (0x904), decimal (2308) or a name (STATUS_LOGON_FAILURE)
        code: String,
        /// The extended error code shown with it
        #[arg(long)]
        ext: Option<String>,
    },
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Target: HOST, HOST:PORT, [IPv6]:PORT (default port 3389)
    target: String,
    /// User name for NLA / logon (the password comes from RDPROBE_PASSWORD or a prompt)
    #[arg(long)]
    user: Option<String>,
    /// Domain for the user
    #[arg(long)]
    domain: Option<String>,
    /// Security protocols to offer, comma separated: rdp, ssl, hybrid, hybrid_ex [default: ssl,hybrid,hybrid_ex]
    #[arg(long, value_delimiter = ',')]
    security: Vec<String>,
    /// Stop after this stage (tcp, x224, tls, credssp, mcs, channels, security, licensing, capabilities)
    #[arg(long)]
    stop_after: Option<String>,
    /// Deadline for each wait on the server (e.g. 5s, 500ms)
    #[arg(long, default_value = "10s")]
    timeout: String,
    /// Deadline for the whole probe
    #[arg(long, default_value = "60s")]
    deadline: String,
    /// Write a stage-annotated pcapng of everything sent and received (TLS secrets embedded)
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Write the TLS secrets as an SSLKEYLOGFILE
    #[arg(long)]
    keylog: Option<PathBuf>,
    /// Print one JSON document instead of the table
    #[arg(long)]
    json: bool,
    /// TLS engine: auto (rustls, then OpenSSL for legacy-only servers), rustls, legacy
    #[arg(long, default_value = "auto")]
    tls_engine: String,
    /// Restrict rustls to one TLS version: 1.2 or 1.3
    #[arg(long)]
    tls_version: Option<String>,
    /// X.224 cookie (mstshash=...) to send; defaults to the user name
    #[arg(long)]
    cookie: Option<String>,
    /// clientName to send in the MCS Client Core Data (up to 15 characters); default rdprobe
    #[arg(long)]
    client_name: Option<String>,
    /// Also print the diagnosis (fault class, likely causes, remedies)
    #[arg(long)]
    diagnose: bool,
    /// Write a self-contained HTML report (timeline, ladder diagram, diagnosis, facts)
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Go through this RD Gateway: GW or GW:PORT (default port 443). Adds the stages gw_tcp, gw_tls,
    /// gw_http, gw_auth, gw_tunnel, gw_channel before x224
    #[arg(long, value_name = "GW[:PORT]")]
    gateway: Option<String>,
    /// User at the gateway [default: --user]; the password comes from RDPROBE_GATEWAY_PASSWORD,
    /// else RDPROBE_PASSWORD
    #[arg(long, requires = "gateway")]
    gateway_user: Option<String>,
    /// Domain of the gateway user [default: --domain]
    #[arg(long, requires = "gateway")]
    gateway_domain: Option<String>,
    /// Write the client-gateway conversation (HTTPS: HTTP, WebSocket, MS-TSGU) as pcapng with its
    /// TLS secrets embedded (--pcap holds the inner RDP of the channel)
    #[arg(long, value_name = "FILE", requires = "gateway")]
    gateway_pcap: Option<PathBuf>,
    /// Gateway transport: websocket, http (legacy, not implemented yet) or auto (websocket)
    #[arg(long, default_value = "auto", requires = "gateway")]
    gateway_transport: String,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// pcap or pcapng file ('-' for standard input); several files are read one after the other
    /// and their connections numbered on
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// SSLKEYLOGFILE with TLS secrets (secrets embedded in a pcapng are used automatically)
    #[arg(long)]
    keylog: Option<PathBuf>,
    /// Server RSA private key (PEM or DER) to decrypt static-RSA TLS sessions (TLS_RSA_WITH_*,
    /// typical of Windows 7 / 2008 R2 era servers); repeatable. Sessions with (EC)DHE key exchange
    /// need a key log instead
    #[arg(long, value_name = "FILE")]
    rsa_key: Vec<PathBuf>,
    /// Print every stage of every connection, with frame numbers
    #[arg(long)]
    stages: bool,
    /// Print one JSON object per connection (JSON lines), streamed
    #[arg(long)]
    json: bool,
    /// Print every connection in full: stages, summary and diagnosis with evidence and remedies
    /// (the default when the capture holds at most 3 connections)
    #[arg(long, conflicts_with_all = ["json", "stages", "table"])]
    diagnose: bool,
    /// Print only connection N (1-based, as the table numbers them), in full
    #[arg(long, value_name = "N", conflicts_with_all = ["json", "stages", "table"])]
    connection: Option<usize>,
    /// Print only the connections that failed, each in full
    #[arg(long, conflicts_with_all = ["json", "stages", "table", "connection"])]
    failed: bool,
    /// One table row per connection and a summary per failure, whatever the count
    #[arg(long, conflicts_with_all = ["json", "stages"])]
    table: bool,
    /// Threads that decode connections (0: one per core); the output is the same, in the same
    /// order, whatever the count
    #[arg(long, value_name = "N", default_value_t = 0)]
    jobs: usize,
    /// Write a self-contained HTML report of every connection (or of the --connection one):
    /// timeline, ladder diagram, diagnosis, facts
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LabArgs {
    /// Address to listen on (loopback only unless --allow-remote) [default: 127.0.0.1:3389, or a
    /// free loopback port with --gateway-listen]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Also serve a fake RD Gateway (MS-TSGU, WebSocket transport, NTLM / Basic) on this address;
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
struct ServerLimitArgs {
    /// Listen on a non-loopback --listen address (0.0.0.0, ::, an interface address): anyone who
    /// can reach it is served
    #[arg(long)]
    allow_remote: bool,
    /// Most connections served at the same time; more are closed at once
    #[arg(long, value_name = "N", default_value_t = rdprobe::lab::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Longest one connection lives, however slowly the client sends (e.g. 90s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "90s")]
    connection_timeout: String,
}

impl ServerLimitArgs {
    /// Checks `listen` against the policy (before anything binds) and returns the limits.
    fn check(&self, listen: SocketAddr, planted: bool) -> Result<rdprobe::lab::LabLimits> {
        rdprobe::lab::check_listen(listen, self.allow_remote, planted)
            .map_err(|e| usage(e.to_string()))?;
        if self.max_connections == 0 {
            bail!(usage("--max-connections must be at least 1"));
        }
        Ok(rdprobe::lab::LabLimits {
            max_connections: self.max_connections,
            connection_timeout: parse_duration(&self.connection_timeout)?,
        })
    }
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Directory for the captures the demo writes
    #[arg(long, default_value = "rdprobe-demo")]
    out: PathBuf,
    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,
}

/// Analyzing a big capture frees and allocates the same ~1 MiB of conversation buffers thousands
/// of times; glibc's default returns freed memory at the top of the heap to the kernel at 128 KiB,
/// so every new conversation page-faults its buffers in again (measured: 190k faults and a third of
/// the run time on a 1 GB capture). Keeping up to 64 MiB of freed heap removes that churn.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a glibc tuning parameter; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    init_tracing(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::INTERNAL as u8);
        }
    };
    let res = rt.block_on(async {
        match cli.cmd {
            Cmd::Probe(a) => cmd_probe(*a).await,
            Cmd::Analyze(a) => {
                keep_freed_memory();
                cmd_analyze(a)
            }
            Cmd::Lab(a) => cmd_lab(a).await,
            Cmd::Replay(a) => cmd_replay(*a).await,
            Cmd::Demo(a) => cmd_demo(a).await,
            Cmd::Enum(a) => cmd_enum(a).await,
            Cmd::Sanitize {
                input,
                output,
                anonymize,
            } => cmd_sanitize(&input, &output, anonymize),
            Cmd::Fuzz(a) => cmd_fuzz(*a).await,
            Cmd::Check(a) => cli::check::run(a, interrupted()).await,
            Cmd::Scan(a) => cli::scan::run(a, interrupted()).await,
            Cmd::Diff(a) => cli::scan::diff(a),
            Cmd::Scenarios => cmd_scenarios(),
            Cmd::Explain { code, ext } => cmd_explain(&code, ext.as_deref()),
        }
    });
    match res {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let usage = e.downcast_ref::<UsageError>().is_some();
            eprintln!("error: {e:#}");
            ExitCode::from(if usage { exit::USAGE } else { exit::INTERNAL } as u8)
        }
    }
}

#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

fn init_tracing(verbose: u8) {
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

/// A duration given on the command line (see `rdprobe::parse::duration`).
fn parse_duration(s: &str) -> Result<Duration> {
    rdprobe::parse::duration(s).map_err(usage)
}

/// A target given on the command line (see `rdprobe::parse::target`).
fn parse_target(t: &str) -> Result<(String, u16)> {
    rdprobe::parse::target(t).map_err(usage)
}

/// The one place a password comes from besides a prompt.
const PASSWORD_ENV: &str = "RDPROBE_PASSWORD";

/// Makes sure `RDPROBE_PASSWORD` holds the password for `user` (prompting for it on a terminal and
/// keeping it in this process's environment only), for code that reads it where it is used.
fn read_password_env_only(user: &str) -> Result<()> {
    if std::env::var_os(PASSWORD_ENV).is_none() {
        let p = read_password(user)?;
        // Only this process and its children see it; nothing is written anywhere.
        std::env::set_var(PASSWORD_ENV, p);
    }
    Ok(())
}

fn read_password(user: &str) -> Result<String> {
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

/// Environment variable of the gateway password (else RDPROBE_PASSWORD is used).
const GATEWAY_PASSWORD_ENV: &str = "RDPROBE_GATEWAY_PASSWORD";

fn gateway_options(a: &ProbeArgs, gw: &str) -> Result<rdprobe::gateway::client::GatewayOptions> {
    use rdprobe::gateway::client::{GatewayOptions, Transport};
    let explicit_port = gw
        .rsplit_once(':')
        .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')));
    let (host, port) = parse_target(gw)?;
    let mut g = GatewayOptions::new(host, if explicit_port { port } else { 443 });
    g.transport = Transport::parse(&a.gateway_transport).ok_or_else(|| {
        usage(format!(
            "unknown gateway transport `{}` (websocket, http, auto)",
            a.gateway_transport
        ))
    })?;
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

fn probe_options(a: &ProbeArgs) -> Result<ProbeOptions> {
    let (host, port) = parse_target(&a.target)?;
    let mut o = ProbeOptions::new(host, port);
    for s in &a.security {
        o.protocols.push(Protocol::parse(s).ok_or_else(|| {
            usage(format!(
                "unknown security protocol `{s}` (rdp, ssl, hybrid, hybrid_ex)"
            ))
        })?);
    }
    if o.protocols.contains(&Protocol::Rdp) && o.protocols.len() > 1 {
        return Err(usage(
            "`rdp` (standard RDP security) is requested by offering no other protocol: use --security rdp alone",
        ));
    }
    if let Some(s) = &a.stop_after {
        let st = Stage::parse(s).ok_or_else(|| usage(format!("unknown stage `{s}`")))?;
        if st.is_gateway() && a.gateway.is_none() {
            return Err(usage(format!(
                "--stop-after {st} is a stage of the RD Gateway hop: it needs --gateway"
            )));
        }
        o.stop_after = Some(st);
    }
    o.stage_timeout = parse_duration(&a.timeout)?;
    o.deadline = parse_duration(&a.deadline)?;
    o.tls_engine = match a.tls_engine.as_str() {
        "auto" => TlsEngine::Auto,
        "rustls" => TlsEngine::Rustls,
        "legacy" | "openssl" => TlsEngine::Legacy,
        other => {
            return Err(usage(format!(
                "unknown TLS engine `{other}` (auto, rustls, legacy)"
            )))
        }
    };
    o.tls_versions = match a.tls_version.as_deref() {
        None => probe::tls::TlsVersions::Both,
        Some("1.2") => probe::tls::TlsVersions::Only12,
        Some("1.3") => probe::tls::TlsVersions::Only13,
        Some(v) => return Err(usage(format!("--tls-version takes 1.2 or 1.3, not `{v}`"))),
    };
    o.cookie = a.cookie.clone();
    o.client_name = a.client_name.clone();
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

async fn cmd_probe(a: ProbeArgs) -> Result<i32> {
    let opts = probe_options(&a)?;
    if let Some(gw) = &a.gateway {
        let g = gateway_options(&a, gw)?;
        let (result, gw_trace) = tokio::select! {
            r = rdprobe::gateway::client::probe_with_capture(&opts, &g) => r,
            _ = interrupted() => return Ok(exit::INTERRUPTED),
        };
        write_artifacts(&result, a.pcap.as_ref(), a.keylog.as_ref())?;
        if let (Some(p), Some(t)) = (&a.gateway_pcap, gw_trace) {
            let f = rdprobe::capture::writer::create_private(p)
                .with_context(|| format!("creating {}", p.display()))?;
            rdprobe::capture::writer::write_pcapng(&t, &[], std::io::BufWriter::new(f))
                .with_context(|| format!("writing {}", p.display()))?;
        }
        print_report(&result.report, a.json, a.diagnose)?;
        return Ok(report::exit_code(&result.report));
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

fn write_artifacts(
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

/// Writes a whole file (an HTML report).
fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn print_report(r: &ConnectionReport, json: bool, diagnose: bool) -> Result<()> {
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

/// The TLS secrets given on the command line: a key log file and server RSA keys.
fn load_secrets(
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

fn cmd_analyze(a: AnalyzeArgs) -> Result<i32> {
    use rdprobe::capture::reader::{read_conversations, ReaderOptions};
    let keylog = load_secrets(a.keylog.as_deref(), &a.rsa_key)?;
    let first = a.files[0].clone();
    if a.files.len() > 1 && a.files.iter().any(|f| f.as_os_str() == "-") {
        return Err(usage(
            "'-' (standard input) is read alone, not with other files",
        ));
    }
    let shown = a
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let input: Box<dyn std::io::Read + Send> = if first.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        // The capture reader does its own large reads: no BufReader (it would copy every byte twice).
        Box::new(
            std::fs::File::open(&first).with_context(|| format!("opening {}", first.display()))?,
        )
    };
    let opts = ReaderOptions {
        keylog,
        ..ReaderOptions::default()
    };
    let conversations = read_conversations(input, opts.clone())
        .with_context(|| format!("reading {}", first.display()))?;
    let conversations = cli::analyze_par::Files::new(conversations, a.files[1..].to_vec(), opts);
    let mut out = std::io::stdout().lock();
    let mut worst = exit::SUCCESS;
    let mut n = 0usize;
    let mut damaged = None;
    let mode = if a.json {
        AnalyzeView::Json
    } else if a.stages {
        AnalyzeView::Stages
    } else if let Some(k) = a.connection {
        AnalyzeView::One(k)
    } else if a.failed {
        AnalyzeView::Failed
    } else if a.diagnose {
        AnalyzeView::Full
    } else if a.table {
        AnalyzeView::Table
    } else {
        AnalyzeView::Auto
    };
    // Auto: the first few connections wait here; a capture with no more than these is printed in
    // full, a larger one as the table (they become its first rows).
    let mut held: Vec<(usize, ConnectionReport)> = Vec::new();
    let mut table = analyze_view::FailureSummary::default();
    let mut tabled = matches!(mode, AnalyzeView::Table);
    // --html: every connection streamed into one page, or the --connection one on its own.
    let html_title = format!("rdprobe analyze {}", shown);
    let mut html_page = match (&a.html, mode) {
        (Some(path), m) if !matches!(m, AnalyzeView::One(_)) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            Some(
                rdprobe::html::Page::begin(std::io::BufWriter::new(f), &html_title)
                    .with_context(|| format!("writing {}", path.display()))?,
            )
        }
        _ => None,
    };

    let mut decoded =
        cli::analyze_par::decode_ordered(conversations, a.jobs, matches!(mode, AnalyzeView::Json));
    for conv in decoded.by_ref() {
        let cli::analyze_par::Decoded {
            trace,
            report,
            json,
        } = match conv {
            Ok(d) => d,
            Err(e) => {
                damaged = Some(e);
                break;
            }
        };
        n += 1;
        let r = &report;
        if let Some(page) = html_page.as_mut() {
            page.connection(n, r, Some(&trace))
                .context("writing the html report")?;
        }
        if let (Some(path), AnalyzeView::One(k)) = (&a.html, mode) {
            if n == k {
                write_file(
                    path,
                    rdprobe::html::connection_page(&html_title, n, r, Some(&trace)).as_bytes(),
                )?;
            }
        }
        let code = report::exit_code(r);
        if code != exit::SUCCESS && (worst == exit::SUCCESS || code < worst) {
            worst = code;
        }
        match mode {
            AnalyzeView::Json => match json {
                Some(line) => writeln!(out, "{line}")?,
                None => writeln!(out, "{}", cli::analyze_par::json_line(n, r)?)?,
            },
            AnalyzeView::Stages => {
                writeln!(out, "connection #{n}")?;
                write!(out, "{}", report::render_text(r))?;
                write!(out, "{}", analyze_view::frames(r))?;
                writeln!(out)?;
            }
            AnalyzeView::Full => write!(out, "{}", analyze_view::full(n, r))?,
            AnalyzeView::One(k) => {
                if n == k {
                    write!(out, "{}", analyze_view::full(n, r))?;
                }
            }
            AnalyzeView::Failed => {
                if code != exit::SUCCESS {
                    write!(out, "{}", analyze_view::full(n, r))?;
                }
            }
            AnalyzeView::Table | AnalyzeView::Auto => {
                if !tabled {
                    held.push((n, report));
                    if held.len() > analyze_view::FEW {
                        tabled = true;
                        write!(out, "{}", analyze_view::table_header())?;
                        for (k, r) in held.drain(..) {
                            table.add(&r);
                            write!(out, "{}", analyze_view::table_row(k, &r))?;
                        }
                    }
                } else {
                    if n == 1 {
                        write!(out, "{}", analyze_view::table_header())?;
                    }
                    table.add(r);
                    write!(out, "{}", analyze_view::table_row(n, r))?;
                }
            }
        }
        out.flush()?;
    }
    for (k, r) in held.drain(..) {
        write!(out, "{}", analyze_view::full(k, &r))?;
    }
    if tabled {
        write!(out, "{}", table.render())?;
    }
    if let Some(page) = html_page.take() {
        page.finish(&shown.to_string())
            .context("writing the html report")?;
    }
    if let AnalyzeView::One(k) = mode {
        if k == 0 || k > n {
            return Err(usage(format!(
                "--connection {k}: {} holds {n} RDP connection(s), numbered from 1",
                shown
            )));
        }
    }
    let (udp, skipped) = decoded
        .finish()
        .map(|c| (c.udp_flows(), c.skipped))
        .unwrap_or_default();
    for s in &skipped {
        eprintln!("error: {s} (skipped)");
    }
    if !skipped.is_empty() && damaged.is_none() {
        worst = exit::PROTOCOL;
    }
    if !udp.is_empty() {
        // RDP's UDP transport is listed, not decoded: on stderr under --json so that standard output
        // stays one document per RDP/TCP connection.
        let mut w: Box<dyn std::io::Write> = if a.json {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(out)
        };
        writeln!(
            w,
            "{}{} rdp-udp flow(s) (MS-RDPEUDP; rdprobe decodes rdp over tcp, these are listed only):",
            if n > 0 { "\n" } else { "" },
            udp.len()
        )?;
        for f in &udp {
            writeln!(w, "  {}", f.describe())?;
        }
    }
    if n == 0 && damaged.is_none() {
        if udp.is_empty() {
            eprintln!("no RDP connection found in {}", shown);
        } else {
            eprintln!(
                "no RDP/TCP connection found in {} (only RDP over UDP)",
                shown
            );
        }
    }
    match damaged {
        // The file ends inside a record, as when a capture is stopped abruptly: everything before
        // it was read, so the verdicts stand (Wireshark reads such files with a warning too).
        Some(e @ rdprobe::capture::reader::CaptureError::Truncated { .. }) => {
            eprintln!("warning: the capture was cut short: {e} (the {n} connection(s) in it are reported above; the last record is lost)");
            Ok(worst)
        }
        Some(e) => {
            eprintln!("error: {e} (the {n} connection(s) before the damage are reported above)");
            Ok(exit::PROTOCOL)
        }
        None => Ok(worst),
    }
}

fn load_scenario(s: &str) -> Result<rdprobe::scenario::Scenario> {
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

async fn cmd_lab(a: LabArgs) -> Result<i32> {
    use rdprobe::lab::planted::{spawn_planted_lab_with, Bug};
    if let Some(gw) = a.gateway_listen {
        let limits = a.server.check(gw, false)?;
        let sc = load_scenario(&a.scenario)?;
        return cli::lab_gateway::run(
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
        return cli::lab_fork::child(sc, bugs, limits).await;
    }
    if a.fork_per_connection {
        return cli::lab_fork::run(listen, &sc, &bugs, limits).await;
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
        if bugs.is_empty() {
            String::new()
        } else {
            format!(
                " [planted: {}]",
                bugs.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
            )
        }
    );
    interrupted().await;
    if let Some(h) = planted.handle() {
        eprintln!("{}", served_line(h));
    }
    drop(planted);
    Ok(exit::SUCCESS)
}

fn served_line(h: &rdprobe::lab::LabHandle) -> String {
    match h.connections_refused() {
        0 => format!("served {} connection(s)", h.connections_served()),
        r => format!(
            "served {} connection(s); closed {r} over the connection limit",
            h.connections_served()
        ),
    }
}

async fn cmd_demo(a: DemoArgs) -> Result<i32> {
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

/// Whether `a` and `b` name the same file (same canonical path, or same device and inode).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    if let (Ok(x), Ok(y)) = (a.canonicalize(), b.canonicalize()) {
        if x == y {
            return true;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

fn cmd_sanitize(input: &std::path::Path, output: &std::path::Path, anonymize: bool) -> Result<i32> {
    use rdprobe::capture::reader::{read_conversations, ReaderOptions};
    if same_file(input, output) {
        return Err(usage(format!(
            "the output {} is the input: write the sanitized capture to another file",
            output.display()
        )));
    }
    let f = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let convs = read_conversations(std::io::BufReader::new(f), ReaderOptions::default())
        .with_context(|| format!("reading {}", input.display()))?;
    // Written to a temporary file next to the output and renamed at the end: a failure never
    // leaves a half-written (or half-sanitized) capture under the output's name.
    let name = output
        .file_name()
        .ok_or_else(|| usage(format!("{} is not a file name", output.display())))?;
    let tmp = output.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> Result<(usize, rdprobe::sanitize::SanitizeStats)> {
        let mut w = std::io::BufWriter::new(file);
        let mut total = rdprobe::sanitize::SanitizeStats::default();
        let mut anon = rdprobe::sanitize::Anonymizer::new();
        let mut n = 0usize;
        for conv in convs {
            let mut trace = match conv {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e} (the {n} conversation(s) before it were sanitized)");
                    break;
                }
            };
            let s = if anonymize {
                rdprobe::sanitize::sanitize_and_anonymize(&mut trace, &mut anon)
            } else {
                rdprobe::sanitize::sanitize_trace(&mut trace)
            };
            total.add(&s);
            let labels = rdprobe::decode::decode(&trace).labels;
            rdprobe::capture::writer::write_pcapng(&trace, &labels, &mut w)
                .with_context(|| format!("writing {}", tmp.display()))?;
            n += 1;
        }
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok((n, total))
    })();
    let (n, total) = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, output) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("renaming {} to {}", tmp.display(), output.display()));
    }
    eprintln!(
        "{n} RDP conversation(s) written to {}: {}",
        output.display(),
        total.summary()
    );
    Ok(if n == 0 {
        exit::INTERNAL
    } else {
        exit::SUCCESS
    })
}

fn cmd_scenarios() -> Result<i32> {
    for (name, desc) in rdprobe::scenario::builtin_names() {
        println!("{name:<28} {desc}");
    }
    Ok(exit::SUCCESS)
}

fn cmd_explain(code: &str, ext: Option<&str>) -> Result<i32> {
    let ex = rdprobe::diagnose::explain_str(code, ext).map_err(|e| usage(e.to_string()))?;
    if ex.is_empty() {
        println!("no known meaning for {code}");
        return Ok(exit::USAGE);
    }
    print!("{}", rdprobe::diagnose::render_explanations(&ex));
    Ok(exit::SUCCESS)
}

#[derive(clap::Args)]
struct EnumArgs {
    /// Target: HOST, HOST:PORT, [IPv6]:PORT (default port 3389)
    target: String,
    /// Check these credentials too (auth-only; the password comes from RDPROBE_PASSWORD or a prompt)
    #[arg(long)]
    user: Option<String>,
    /// Domain for the user
    #[arg(long)]
    domain: Option<String>,
    /// Deadline for each wait on the server (e.g. 3s, 500ms)
    #[arg(long, default_value = "5s")]
    timeout: String,
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

async fn cmd_enum(a: EnumArgs) -> Result<i32> {
    if a.gateway {
        let explicit_port = a.target.rsplit_once(':').is_some_and(|(h, p)| {
            p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']'))
        });
        let (host, port) = parse_target(&a.target)?;
        let port = if explicit_port { port } else { 443 };
        let s = rdprobe::gateway::survey::survey(&host, port, parse_duration(&a.timeout)?)
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
    o.timeout = parse_duration(&a.timeout)?;
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

#[derive(clap::Args)]
struct ReplayArgs {
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
    #[arg(long, default_value = "10s")]
    timeout: String,
    /// --as-client: deadline for the whole run
    #[arg(long, default_value = "60s")]
    deadline: String,
    /// --as-client: write the new conversation as pcapng
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

async fn cmd_replay(a: ReplayArgs) -> Result<i32> {
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

async fn replay_as_client(
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
        stage_timeout: parse_duration(&a.timeout)?,
        deadline: parse_duration(&a.deadline)?,
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

#[derive(clap::Args)]
struct FuzzArgs {
    /// Target: HOST:PORT (loopback only unless --allow-remote); not with --replay
    #[arg(value_name = "TARGET")]
    target: Option<String>,
    /// Stage to mutate: x224, tls, credssp, mcs, channels; security, licensing (standard RDP
    /// security servers only). credssp with --user also mutates rounds 2 and 3 (AUTHENTICATE with
    /// pubKeyAuth, authInfo)
    #[arg(long, default_value = "x224")]
    stage: String,
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
    #[arg(long)]
    duration: Option<String>,
    /// User for the valid CredSSP exchange before mcs/channels and credssp rounds 2-3 (password
    /// from RDPROBE_PASSWORD); the user name of the Client Info for security/licensing
    #[arg(long)]
    user: Option<String>,
    /// Domain for --user
    #[arg(long)]
    domain: Option<String>,
    /// Deadline for each reply of the target
    #[arg(long, default_value = "2s")]
    timeout: String,
    /// Check that the target still serves a valid handshake every N cases (and after suspicious answers)
    #[arg(long, default_value_t = 50)]
    liveness_every: u64,
    /// How long a target that failed a liveness check gets to recover before it counts as down
    #[arg(long, default_value = "10s")]
    recovery: String,
    /// requestedProtocols of the valid X.224 request: rdp, ssl, hybrid, hybrid_ex [default: per stage]
    #[arg(long, value_delimiter = ',')]
    security: Vec<String>,
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
    #[arg(long, default_value = "256MiB", value_name = "SIZE")]
    rss_growth: String,
    /// Planted bugs for the --lab child (test-only)
    #[arg(long, value_name = "BUG", hide = true)]
    plant: Vec<String>,
}

/// A size: 123, 64KiB, 64MiB, 1GiB (also k/K/KB, m/M/MB, g/G/GB as powers of 1024): in KiB.
fn parse_size_kib(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        usage(format!(
            "invalid size `{s}` (examples: 64MiB, 512KiB, 1GiB)"
        ))
    })?;
    let kib = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => n / 1024,
        "k" | "kb" | "kib" => n,
        "m" | "mb" | "mib" => n.saturating_mul(1024),
        "g" | "gb" | "gib" => n.saturating_mul(1024 * 1024),
        _ => return Err(usage(format!("invalid size unit in `{s}` (KiB, MiB, GiB)"))),
    };
    Ok(kib)
}

async fn fuzz_addr(t: &str, allow_remote: bool) -> Result<SocketAddr> {
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

fn fuzz_protocols(security: &[String]) -> Result<Option<u32>> {
    if security.is_empty() {
        return Ok(None);
    }
    let mut p = 0u32;
    for s in security {
        p |= match Protocol::parse(s) {
            Some(Protocol::Rdp) => 0,
            Some(Protocol::Ssl) => 0x1,
            Some(Protocol::Hybrid) => 0x2,
            Some(Protocol::HybridEx) => 0x8,
            None => {
                return Err(usage(format!(
                    "unknown security protocol `{s}` (rdp, ssl, hybrid, hybrid_ex)"
                )))
            }
        };
    }
    Ok(Some(p))
}

/// The progress bar of `rdprobe fuzz`: cases/s, findings, target liveness.
struct FuzzBar {
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

async fn cmd_fuzz(a: FuzzArgs) -> Result<i32> {
    use rdprobe::fuzz::{self, FuzzOptions, FuzzStage, Target};
    let timeout = parse_duration(&a.timeout)?;
    let recovery = parse_duration(&a.recovery)?;
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

    let rss_growth = parse_size_kib(&a.rss_growth)?;
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
    let stage = FuzzStage::parse(&a.stage).ok_or_else(|| {
        usage(format!(
            "unknown fuzz stage `{}` (x224, tls, credssp, mcs, channels, security, licensing)",
            a.stage
        ))
    })?;
    let mut target = Target::new(addr);
    if !addr.ip().is_loopback() || parse_target(t)?.0.parse::<std::net::IpAddr>().is_err() {
        target.host = parse_target(t)?.0;
    }
    target.timeout = timeout;
    target.protocols = fuzz_protocols(&a.security)?;
    target.credentials = credentials(a.user.as_ref(), a.domain.as_ref())?;
    let mut opts = FuzzOptions::new(target, stage);
    opts.duration = a.duration.as_deref().map(parse_duration).transpose()?;
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

fn render_fuzz_summary(s: &rdprobe::fuzz::Summary) -> String {
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
