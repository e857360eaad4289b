//! `rdprobe lab --fork-per-connection`: each connection served by a process of its own (see
//! `rdprobe::lab::fork`); the connection's process is this binary again with the same arguments
//! and the hidden `--connection-on-stdin`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rdprobe::lab::planted::Bug;
use rdprobe::lab::LabLimits;
use rdprobe::report::exit;
use rdprobe::scenario::Scenario;

/// The listener: accepts on `listen` until Ctrl-C / SIGTERM.
pub async fn run(
    listen: SocketAddr,
    sc: &Scenario,
    bugs: &[Bug],
    limits: LabLimits,
) -> Result<i32> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("starting the lab on {listen}"))?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("locating the rdprobe binary")?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // A port 0 listener: the children must arm their bugs for the real port, which they read from
    // their own socket; the arguments stay as given.
    args.push("--connection-on-stdin".into());
    eprintln!(
        "lab listening on {addr} with scenario `{}`, a process per connection{}\n(stop with Ctrl-C)",
        sc.name,
        super::lab::planted_note(bugs)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let max = limits.max_connections;
    let server = std::thread::spawn(move || {
        let child = || {
            let mut c = std::process::Command::new(&exe);
            c.args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c
        };
        rdprobe::lab::fork::serve_forking(listener, &child, max, &stop2)
    });
    super::interrupted().await;
    stop.store(true, Ordering::Relaxed);
    let served = tokio::task::spawn_blocking(move || server.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the lab's accept thread panicked"))??;
    eprintln!("served {served} connection(s), each in a process of its own");
    Ok(exit::SUCCESS)
}

/// A connection's process: serves standard input, then exits.
pub async fn child(sc: Scenario, bugs: Vec<Bug>, limits: LabLimits) -> Result<i32> {
    // The connection gets a runtime of its own on a plain thread (not inside this one).
    let outcome = std::thread::spawn(move || rdprobe::lab::fork::serve_stdin(sc, &bugs, limits))
        .join()
        .map_err(|_| anyhow::anyhow!("the connection's thread panicked"))??;
    tracing::info!(result = %outcome.result, "connection served");
    Ok(exit::SUCCESS)
}
