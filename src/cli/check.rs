//! `rdprobe check FILE`: runs the targets one after the other, prints each as it ends, streams
//! JSON lines, and writes the JUnit report at the end (also when interrupted, with the targets that
//! ended).

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use rdprobe::check::{self, TargetResult};
use rdprobe::report::exit;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The expectations file (TOML)
    file: PathBuf,
    /// Write a JUnit XML report here: one testcase per target, one failure per broken expectation
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write one JSON object per target (JSON lines) here as each ends ('-' for standard output)
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Runs the check; `interrupted` resolves on SIGINT / SIGTERM.
pub async fn run(a: CheckArgs, interrupted: impl Future<Output = ()>) -> Result<i32> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let targets = check::parse(&text, &|var| std::env::var(var).ok())
        .map_err(|e| super::usage(format!("{}: {e}", a.file.display())))?;
    let mut json: Option<Box<dyn std::io::Write>> = match &a.json {
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
        None => None,
    };
    let to_stdout = a.json.as_ref().is_some_and(|p| p.as_os_str() == "-");
    let mut results: Vec<TargetResult> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    let run_all = async {
        for t in &targets {
            // INVARIANT: a target cannot hold the run past its own deadlines.
            let one = tokio::time::timeout(check::target_budget(t), check::run_target(t)).await;
            match one {
                Ok(Ok(r)) => {
                    if !to_stdout {
                        print!("{}", check::render(std::slice::from_ref(&r)));
                        let _ = std::io::stdout().flush();
                    }
                    if let Some(w) = json.as_mut() {
                        writeln!(w, "{}", serde_json::to_string(&r)?)?;
                        w.flush()?;
                    }
                    results.push(r);
                }
                Ok(Err(e)) => {
                    eprintln!("ERROR {}: {e}", t.name);
                    errors.push((t.name.clone(), e.to_string()));
                }
                Err(_) => {
                    let msg = format!(
                        "no result within {:.0} s",
                        check::target_budget(t).as_secs_f64()
                    );
                    eprintln!("ERROR {}: {msg}", t.name);
                    errors.push((t.name.clone(), msg));
                }
            }
        }
        anyhow::Ok(())
    };
    let done = tokio::select! {
        r = run_all => { r?; true }
        _ = interrupted => false,
    };
    if let Some(p) = &a.junit {
        let suite = a.file.display().to_string();
        std::fs::write(p, check::junit(&suite, &results, &errors))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    let broken: usize = results
        .iter()
        .map(|r| r.outcomes.iter().filter(|o| !o.held).count())
        .sum();
    eprintln!(
        "{} target(s): {} passed, {failed} failed ({broken} broken expectation(s)), {} error(s){}",
        results.len() + errors.len(),
        results.len() - failed,
        errors.len(),
        if done { "" } else { "; interrupted" }
    );
    Ok(if !done {
        exit::INTERRUPTED
    } else if failed > 0 || !errors.is_empty() {
        exit::EXPECTATION
    } else {
        exit::SUCCESS
    })
}
