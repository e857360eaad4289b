//! `rdprobe sanitize`: strips a capture for sharing.

use std::io::Write as _;

use anyhow::{Context as _, Result};

use rdprobe::report::exit;

use super::*;

/// Whether `a` and `b` name the same file (same canonical path, or same device and inode).
pub(crate) fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
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

pub(crate) fn cmd_sanitize(
    input: &std::path::Path,
    output: &std::path::Path,
    anonymize: bool,
) -> Result<i32> {
    use rdprobe::capture::reader::{read_capture_file, ReaderOptions};
    if same_file(input, output) {
        return Err(usage(format!(
            "the output {} is the input: write the sanitized capture to another file",
            output.display()
        )));
    }
    let f = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let convs = read_capture_file(f, ReaderOptions::default())
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
