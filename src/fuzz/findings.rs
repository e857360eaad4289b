//! Writes a finding as `DIR/NNNN/`: `case.json` (the minimal case, its signature and the session
//! settings a replay needs; never the password), `repro.pcapng` (the recorded run of the minimal
//! case, stage-annotated: `rdprobe analyze` reads it) and `README.txt` (what happened, what the
//! files contain, and the commands that reproduce and analyze it).
//!
//! A run without credentials embeds the TLS secrets in `repro.pcapng` (the decrypted exchange shows
//! what the target did). A run with credentials (`--user`) would thereby hand out the NTLM exchange
//! (a crackable NTLMv2 response) and the Client Info: its capture goes through
//! [`crate::sanitize::sanitize_trace`] first (no key log, no decrypted layer, names masked).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::Finding;
use crate::trace::Trace;

/// Most findings one directory numbers (`0001` … `9999`).
pub const MAX_FINDINGS: u32 = 9999;

/// The next free `NNNN` under `out` (one more than the highest present).
fn next_dir(out: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let mut highest = 0u32;
    for e in std::fs::read_dir(out)? {
        let e = e?;
        if let Some(n) = e
            .file_name()
            .to_str()
            .filter(|s| s.len() == 4)
            .and_then(|s| s.parse::<u32>().ok())
        {
            highest = highest.max(n);
        }
    }
    if highest >= MAX_FINDINGS {
        return Err(std::io::Error::other(format!(
            "{} already holds {MAX_FINDINGS} findings",
            out.display()
        )));
    }
    Ok(out.join(format!("{:04}", highest + 1)))
}

/// Writes the three files of `finding` under a new `out/NNNN/` and returns that directory.
pub fn write_finding(out: &Path, finding: &Finding, trace: &Trace) -> std::io::Result<PathBuf> {
    let dir = next_dir(out)?;
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(finding).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("case.json"), json + "\n")?;
    // The verdict is read from the full trace; what is written is sanitized when credentials
    // were used.
    let decoded = crate::decode::decode(trace);
    let sanitized = finding.session.user.is_some().then(|| {
        let mut t = trace.clone();
        crate::sanitize::sanitize_trace(&mut t);
        t
    });
    let (written, labels) = match &sanitized {
        Some(t) => (t, crate::decode::decode(t).labels),
        None => (trace, decoded.labels.clone()),
    };
    let f = std::fs::File::create(dir.join("repro.pcapng"))?;
    let mut w = std::io::BufWriter::new(f);
    crate::capture::writer::write_pcapng(written, &labels, &mut w)
        .map_err(std::io::Error::other)?;
    w.flush()?;
    std::fs::write(
        dir.join("README.txt"),
        readme(finding, &dir, &decoded.report, !written.keylog.is_empty()),
    )?;
    Ok(dir)
}

/// What the finding's files hold, in one paragraph.
fn contents(f: &Finding, has_secrets: bool) -> String {
    match &f.session.user {
        Some(user) => {
            let who = match &f.session.domain {
                Some(d) => format!("{d}\\{user}"),
                None => user.clone(),
            };
            format!(
                "contents: made with credentials for user {who}: TLS secrets removed from \
                 repro.pcapng (sanitized: no decrypted layer, cookie, names, Client Info and user \
                 data masked); case.json and this file name the user; the password is in no file. \
                 bytes sent (below and in case.json) are the mutated PDU as sent: at the credssp \
                 stage they hold an NTLM message."
            )
        }
        None if has_secrets => "contents: repro.pcapng contains TLS secrets (Wireshark and \
             `rdprobe analyze` decrypt it); no credentials were used."
            .to_owned(),
        None => "contents: no credentials were used; repro.pcapng holds no TLS secrets.".to_owned(),
    }
}

fn readme(
    f: &Finding,
    dir: &Path,
    report: &crate::report::ConnectionReport,
    has_secrets: bool,
) -> String {
    let mut s = String::new();
    let d = dir.display();
    let _ = writeln!(s, "rdprobe fuzz finding: {}", f.signature);
    let _ = writeln!(s);
    let _ = writeln!(s, "{}", contents(f, has_secrets));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "stage {}: the target answered the mutated PDU with `{}` and a fresh valid handshake \
         afterwards was `{}`.",
        f.signature.stage, f.signature.class, f.signature.liveness
    );
    if f.signature.process != super::ProcessFate::Running {
        let _ = writeln!(
            s,
            "the watched target process: {} (replay with --pid PID of the restarted server to \
             compare that too)",
            f.signature.process
        );
    }
    let _ = writeln!(s, "what happened: {}", f.detail);
    let _ = writeln!(
        s,
        "found by case {} of seed {} against {}; reproduced when recorded: {}",
        f.case_index, f.seed, f.target, f.reproduced
    );
    if let Some(sh) = &f.shrink {
        let _ = writeln!(
            s,
            "shrunk in {} live trials ({} reproduced, {} ms{})",
            sh.trials,
            sh.reproduced,
            sh.elapsed_ms,
            if sh.budget_exhausted {
                ", budget exhausted"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "minimal case (mutations of the valid PDU):");
    let _ = writeln!(s, "  {}", f.case.summary());
    let _ = writeln!(s, "as generated:");
    let _ = writeln!(s, "  {}", f.original_case.summary());
    let _ = writeln!(s, "bytes sent ({}): {}", f.sent_hex.len() / 2, f.sent_hex);
    let _ = writeln!(s);
    let _ = writeln!(s, "reproduce:");
    let _ = writeln!(
        s,
        "  {}rdprobe fuzz --replay {d}/case.json --target {}",
        if f.session.user.is_some() {
            "RDPROBE_PASSWORD=… "
        } else {
            ""
        },
        f.target
    );
    let _ = writeln!(s, "analyze the capture of the minimal case:");
    let _ = writeln!(s, "  rdprobe analyze {d}/repro.pcapng --stages");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "the capture decodes as: last stage {}, {}",
        report.last_stage, report.summary
    );
    s
}
