//! `probe --all-addresses`: one probe per address the name resolves to, each with its own report
//! (and capture), the `dns` stage naming which address each one tried.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rdprobe::probe::{self, ProbeOptions};
use rdprobe::report;

/// `out.pcapng` → `out-N.pcapng` for the N-th address (1-based).
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(e) => format!("{stem}-{n}.{}", e.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

/// Probes every address of `opts.host` in turn; the exit code is the first failing probe's, else 0.
pub async fn run(a: &super::probe::ProbeArgs, opts: ProbeOptions) -> Result<i32> {
    let addresses = match rdprobe::net::lookup(&opts.host, opts.port, opts.stage_timeout).await {
        Some(d) if d.error.is_none() => d
            .addresses
            .iter()
            .map(|ip| {
                let mut o = opts.clone();
                o.address = Some(*ip);
                o.resolved = Some(d.clone());
                o
            })
            .collect(),
        // An address, or a name that does not resolve: one probe, whose dns stage says so.
        _ => vec![opts],
    };
    let many = addresses.len() > 1;
    let mut code = 0;
    for (i, o) in addresses.iter().enumerate() {
        let shared = probe::tap::SharedTrace::new(rdprobe::trace::Trace::new(
            std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        ));
        let mut interrupted = false;
        tokio::select! {
            _ = probe::run_into(o, &shared) => {}
            _ = super::interrupted() => {
                interrupted = true;
                shared.push(rdprobe::trace::EventKind::Note("interrupted by signal".into()));
            }
        }
        let result = probe::finish_for(&shared, o);
        let pcap = a
            .pcap
            .as_ref()
            .map(|p| if many { numbered(p, i + 1) } else { p.clone() });
        let keylog = a
            .keylog
            .as_ref()
            .map(|p| if many { numbered(p, i + 1) } else { p.clone() });
        super::probe::write_artifacts(&result, pcap.as_ref(), keylog.as_ref())?;
        super::probe::print_report(&result.report, a.json, a.diagnose)?;
        if interrupted {
            return Ok(report::exit::INTERRUPTED);
        }
        if code == 0 {
            code = report::exit_code(&result.report);
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbered_paths() {
        assert_eq!(
            super::numbered(std::path::Path::new("/t/out.pcapng"), 2),
            std::path::PathBuf::from("/t/out-2.pcapng")
        );
        assert_eq!(
            super::numbered(std::path::Path::new("keys"), 1),
            std::path::PathBuf::from("keys-1")
        );
    }
}
