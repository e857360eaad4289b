//! `rdprobe correlate A.pcapng B.pcapng [C…]`: the command-line side of `rdprobe::correlate`
//! (reads each capture twice: once for its flows, once for what `analyze` says of each connection
//! alone; prints the side-by-side table or JSON).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use rdprobe::capture::reader::{read_capture_file, ReaderOptions};
use rdprobe::correlate::{correlate, read_flows, CaptureFlows, DEFAULT_TABLE_ROWS};
use rdprobe::report::exit;

#[derive(clap::Args)]
pub struct CorrelateArgs {
    /// Captures of the same connections taken at different points (pcap or pcapng), in any order:
    /// the client's end and the server's end are told apart by the TTLs
    #[arg(required = true, num_args = 2..)]
    captures: Vec<PathBuf>,
    /// Print JSON (captures, connections with their views, findings and verdict)
    #[arg(long)]
    json: bool,
    /// Rows of the side-by-side table per connection (packets seen at every capture are shortened
    /// to a count)
    #[arg(long, default_value_t = DEFAULT_TABLE_ROWS)]
    rows: usize,
    /// Also write a self-contained HTML page: per connection, the captures as lanes between the
    /// client and the server, each packet drawn from where it was first seen to where it was last
    /// seen (a red cross where it was lost, an orange dot where it appeared), the findings and what
    /// each capture alone says
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// Runs the command: exit code 0 when nothing was lost or added between the captures, 3 (network)
/// when something was.
pub fn run(a: CorrelateArgs) -> Result<i32> {
    let mut caps = Vec::new();
    let mut alone = Vec::new();
    for p in &a.captures {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string());
        let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        let (flows, dropped) =
            read_flows(f).with_context(|| format!("{}: cannot read the capture", p.display()))?;
        caps.push(CaptureFlows {
            name,
            flows,
            flows_not_kept: dropped,
        });
        // What analyze says of each RDP connection of this capture alone, by its addresses.
        let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        let mut by_addr = Vec::new();
        if let Ok(conv) = read_capture_file(f, ReaderOptions::default()) {
            for t in conv.flatten() {
                let r = rdprobe::decode::decode_report(&t);
                by_addr.push((t.client.to_string(), t.server.to_string(), r.summary));
            }
        }
        alone.push(by_addr);
    }
    let mut c = correlate(&caps);
    for conn in &mut c.connections {
        let keys: Vec<(usize, String, String)> = conn
            .views
            .iter()
            .map(|v| (v.capture, v.client.clone(), v.server.clone()))
            .collect();
        for (ci, cl, sv) in keys {
            if let Some((_, _, s)) = alone[ci].iter().find(|(c, s, _)| *c == cl && *s == sv) {
                conn.set_alone(ci, s.clone());
            }
        }
    }
    if let Some(path) = &a.html {
        let title = format!(
            "rdprobe correlate {}",
            c.captures
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        super::write_file(path, rdprobe::html::correlate_page(&title, &c).as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", c.render(a.rows));
    }
    Ok(if c.findings().next().is_some() {
        exit::NETWORK
    } else {
        exit::SUCCESS
    })
}
