//! `rdprobe analyze`: reads a capture and prints each connection in the view asked for.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use rdprobe::report::{self, exit, ConnectionReport};

use super::analyze_view::{self, AnalyzeView};
use super::*;

#[derive(clap::Args)]
pub(crate) struct AnalyzeArgs {
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
    /// Threads that decode connections (0: one per core); with several files, also how many are
    /// read at once. The output is the same, in the same order, whatever the count
    #[arg(long, value_name = "N", default_value_t = 0)]
    jobs: usize,
    /// Write a self-contained HTML report of every connection (or of the --connection one):
    /// timeline, ladder diagram, diagnosis, facts
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Server port of an RD Gateway (repeatable, e.g. 443): HTTPS conversations to it are decoded as
    /// the gateway hop even without TLS secrets (gw_tcp, gw_tls, the rest reported encrypted). With
    /// secrets a gateway is recognized on any port by its RDG_OUT_DATA request, no option needed
    #[arg(long, value_name = "PORT")]
    gateway_port: Vec<u16>,
}

pub(crate) fn cmd_analyze(a: AnalyzeArgs) -> Result<i32> {
    use rdprobe::capture::reader::{read_capture_file, read_conversations, ReaderOptions};
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
    let opts = ReaderOptions {
        keylog,
        gateway_ports: a.gateway_port.clone(),
        ..ReaderOptions::default()
    };
    // The capture reader does its own large reads (or maps the file): no BufReader (it would copy
    // every byte twice).
    let conversations = if first.as_os_str() == "-" {
        let input: Box<dyn std::io::Read + Send> = Box::new(std::io::stdin());
        read_conversations(input, opts.clone())
    } else {
        let file =
            std::fs::File::open(&first).with_context(|| format!("opening {}", first.display()))?;
        read_capture_file(file, opts.clone())
    }
    .with_context(|| format!("reading {}", first.display()))?;
    // With more than one thread, the next files are read while the one before is (jobs - 1 ahead).
    let read_ahead = super::analyze_par::threads(a.jobs).saturating_sub(1);
    let conversations = super::analyze_par::Files::new(
        conversations,
        first,
        a.files[1..].to_vec(),
        opts,
        read_ahead,
    );
    // An RD Gateway's legacy transport is two conversations (OUT and IN channel): one report.
    let conversations = rdprobe::decode::gateway::LegacyPairs::new(conversations);
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

    let mut decoded = super::analyze_par::decode_ordered(
        conversations,
        a.jobs,
        matches!(mode, AnalyzeView::Json),
    );
    for conv in decoded.by_ref() {
        let super::analyze_par::Decoded {
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
                None => writeln!(out, "{}", super::analyze_par::json_line(n, r)?)?,
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
    let (udp, skipped, damaged_file) = decoded
        .finish()
        .map(|c| {
            let c = c.into_inner();
            (c.udp_flows(), c.skipped, c.damaged_file)
        })
        .unwrap_or_default();
    // With several files, say which one the damage is in.
    let damaged_in = match damaged_file {
        Some(f) if a.files.len() > 1 => format!(" in {}", f.display()),
        _ => String::new(),
    };
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
            eprintln!("warning: the capture was cut short{damaged_in}: {e} (the {n} connection(s) in it are reported above; the last record is lost)");
            Ok(worst)
        }
        Some(e) => {
            eprintln!("error{damaged_in}: {e} (the {n} connection(s) before the damage are reported above)");
            Ok(exit::PROTOCOL)
        }
        None => Ok(worst),
    }
}
