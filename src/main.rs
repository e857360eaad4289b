//! rdprobe command line: parses the arguments and dispatches to `cli::<command>` (each command
//! validates its own arguments, runs the library and prints), over the library (`rdprobe::…`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use rdprobe::report::exit;

/// mimalloc instead of glibc malloc: analyze allocates and frees per packet and per connection
/// (measured on a 293 MB capture: 13 % less CPU time; glibc also had to be told to keep freed
/// memory, or every new conversation page-faulted its buffers in again).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

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
    ///   sudo rdprobe probe host --pcap wire.pcapng     # the real packets (capture=wire)
    ///   rdprobe probe host --mss 1200                  # clamp the TCP segment size
    ///   rdprobe probe rdp.corp --all-addresses         # one report per address of the name
    #[command(verbatim_doc_comment)]
    Probe(Box<cli::probe::ProbeArgs>),
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
    Analyze(cli::analyze::AnalyzeArgs),
    /// Run the embedded lab server with a scenario (built-in name or TOML file).
    ///
    /// Example: rdprobe lab --listen 127.0.0.1:3389 --scenario tls-reset-at-client-hello
    #[command(verbatim_doc_comment)]
    Lab(cli::lab::LabArgs),
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
    Replay(Box<cli::replay::ReplayArgs>),
    /// Start the lab with a few fault scenarios in-process and probe each: see rdprobe work in one command.
    Demo(cli::lab::DemoArgs),
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
    Enum(cli::enumerate::EnumArgs),
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
    ///   RDPROBE_PASSWORD=pass rdprobe fuzz 127.0.0.1:8443 --stage gw_channel --user user   # an RD Gateway
    ///   rdprobe fuzz --replay findings/0003/case.json --target 127.0.0.1:3389
    #[command(verbatim_doc_comment)]
    Fuzz(Box<cli::fuzz::FuzzArgs>),
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
    /// Match the same connections across captures taken at different points (client host, router,
    /// server host) and name the hop where packets were dropped, resets injected, full-size
    /// segments lost (path-MTU black hole) or packets lost one way.
    ///
    /// Connections are matched by initial sequence numbers, the X.224 cookie, payload hashes and
    /// timing (NAT and clock offsets allowed); each capture's vantage point (client side, server
    /// side, in the path) comes from the TTLs. Exit code 0 when nothing was lost or added between
    /// the captures, 3 when something was.
    ///
    /// Examples:
    ///   rdprobe correlate client.pcapng server.pcapng
    ///   rdprobe correlate client.pcapng router.pcapng server.pcapng --json
    #[command(verbatim_doc_comment)]
    Correlate(cli::correlate::CorrelateArgs),
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    cli::init_tracing(cli.verbose);
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
            Cmd::Probe(a) => cli::probe::cmd_probe(*a).await,
            Cmd::Analyze(a) => cli::analyze::cmd_analyze(a),
            Cmd::Lab(a) => cli::lab::cmd_lab(a).await,
            Cmd::Replay(a) => cli::replay::cmd_replay(*a).await,
            Cmd::Demo(a) => cli::lab::cmd_demo(a).await,
            Cmd::Enum(a) => cli::enumerate::cmd_enum(a).await,
            Cmd::Sanitize {
                input,
                output,
                anonymize,
            } => cli::sanitize::cmd_sanitize(&input, &output, anonymize),
            Cmd::Fuzz(a) => cli::fuzz::cmd_fuzz(*a).await,
            Cmd::Check(a) => cli::check::run(a, cli::interrupted()).await,
            Cmd::Scan(a) => cli::scan::run(a, cli::interrupted()).await,
            Cmd::Diff(a) => cli::scan::diff(a),
            Cmd::Correlate(a) => cli::correlate::run(a),
            Cmd::Scenarios => cli::lab::cmd_scenarios(),
            Cmd::Explain { code, ext } => cli::explain::cmd_explain(&code, ext.as_deref()),
        }
    });
    match res {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let usage = e.downcast_ref::<cli::UsageError>().is_some();
            eprintln!("error: {e:#}");
            ExitCode::from(if usage { exit::USAGE } else { exit::INTERNAL } as u8)
        }
    }
}
