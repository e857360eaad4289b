//! Writes a finding as `DIR/NNNN/`: `case.json` (the minimal case, its signature and the session
//! settings a replay needs; never the password), `repro.pcapng` (the recorded run of the minimal
//! case, stage-annotated, TLS secrets embedded: `rdprobe analyze` reads it) and `README.txt` (what
//! happened and the commands that reproduce and analyze it).

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
    // case.json and repro.pcapng (TLS secrets embedded) are created 0600.
    let mut case = crate::capture::writer::create_private(&dir.join("case.json"))?;
    case.write_all((json + "\n").as_bytes())?;
    let decoded = crate::decode::decode(trace);
    let f = crate::capture::writer::create_private(&dir.join("repro.pcapng"))?;
    let mut w = std::io::BufWriter::new(f);
    crate::capture::writer::write_pcapng(trace, &decoded.labels, &mut w)
        .map_err(std::io::Error::other)?;
    w.flush()?;
    std::fs::write(
        dir.join("README.txt"),
        readme(finding, &dir, &decoded.report),
    )?;
    Ok(dir)
}

fn readme(f: &Finding, dir: &Path, report: &crate::report::ConnectionReport) -> String {
    let mut s = String::new();
    let d = dir.display();
    let _ = writeln!(s, "rdprobe fuzz finding: {}", f.signature);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::oracle::{Liveness, ResponseClass, Signature};
    use crate::fuzz::{Case, FuzzStage, SessionSettings};

    /// case.json and repro.pcapng (which embeds the TLS key log) are readable by their owner only.
    #[test]
    fn secret_bearing_finding_files_are_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let out = tempfile::tempdir().expect("tempdir");
        let case = Case::X224(crate::fuzz::x224::X224Case { mutations: vec![] });
        let f = Finding {
            rdprobe_fuzz_case: 1,
            signature: Signature::new(FuzzStage::X224, ResponseClass::Reset, Liveness::Alive),
            detail: "test".into(),
            target: "127.0.0.1:3389".parse().expect("addr"),
            seed: 1,
            case_index: 0,
            case: case.clone(),
            original_case: case,
            sent_hex: String::new(),
            reproduced: true,
            shrink: None,
            session: SessionSettings {
                timeout_ms: 1000,
                quiet_ms: 100,
                protocols: None,
                user: None,
                domain: None,
                recovery_ms: 1000,
            },
            dir: None,
        };
        let mut trace = Trace::new(
            "127.0.0.1:50000".parse().expect("addr"),
            "127.0.0.1:3389".parse().expect("addr"),
        );
        trace.keylog.push("CLIENT_RANDOM 00 11".into());
        let dir = write_finding(out.path(), &f, &trace).expect("written");
        for name in ["case.json", "repro.pcapng"] {
            let mode = std::fs::metadata(dir.join(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }
}
