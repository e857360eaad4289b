//! Client-side peers: the real `xfreerdp` (FreeRDP 2.11) and `tshark` (Wireshark 4.0).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::process::{require_binary, ProcessGuard};
use super::shadow::Xvfb;

/// What an `xfreerdp` run ended with.
#[derive(Debug, Clone)]
pub struct XfreerdpRun {
    /// Exit code; `None` when it was killed (timeout or signal). FreeRDP 2.11: 0 connected, 131
    /// protocol, 133 negotiation, 134 logon failure, 143 TLS connect failed, 147 transport failed.
    pub code: Option<i32>,
    /// stdout and stderr, interleaved.
    pub output: String,
    /// True when the harness killed it at the timeout.
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Runs `xfreerdp args…` with a fresh Xvfb as `$DISPLAY` and a fresh `$HOME`, killed after
/// `timeout` (xfreerdp itself never times out the X.224 reply or the TLS handshake).
pub fn xfreerdp(args: &[&str], timeout: Duration) -> Result<XfreerdpRun> {
    let xvfb = Xvfb::start()?;
    xfreerdp_on(&xvfb, args, timeout)
}

/// Like [`xfreerdp`], on an existing display.
pub fn xfreerdp_on(xvfb: &Xvfb, args: &[&str], timeout: Duration) -> Result<XfreerdpRun> {
    let binary = require_binary("xfreerdp", "freerdp2-x11")?;
    let home = tempfile::Builder::new()
        .prefix("rdprobe-xfreerdp-")
        .tempdir()?;
    let out_path = home.path().join("output.log");
    let out = std::fs::File::create(&out_path)?;
    let started = Instant::now();
    let mut guard = ProcessGuard::spawn(
        "xfreerdp",
        Command::new(binary)
            .args(args)
            .env("DISPLAY", xvfb.display())
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out),
    )?;
    let status = guard.wait_timeout(timeout);
    let elapsed = started.elapsed();
    guard.kill();
    let output = String::from_utf8_lossy(&std::fs::read(&out_path)?).into_owned();
    Ok(XfreerdpRun {
        code: status.and_then(|s| s.code()),
        output,
        timed_out: status.is_none(),
        elapsed,
    })
}

/// `xfreerdp /v:127.0.0.1:PORT /u:USER /p:PASS /cert:ignore +auth-only [extra…]`. Note that 2.11's
/// `+auth-only` still runs the whole connection sequence.
pub fn xfreerdp_auth_only(
    port: u16,
    user: &str,
    password: &str,
    extra: &[&str],
    timeout: Duration,
) -> Result<XfreerdpRun> {
    let v = format!("/v:127.0.0.1:{port}");
    let u = format!("/u:{user}");
    let p = format!("/p:{password}");
    let mut args = vec![
        v.as_str(),
        u.as_str(),
        p.as_str(),
        "/cert:ignore",
        "+auth-only",
    ];
    args.extend_from_slice(extra);
    xfreerdp(&args, timeout)
}

/// The longest a tshark run may take.
const TSHARK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `tshark args…` and returns its stdout, or an error with tshark's stderr when it fails.
pub fn tshark(args: &[&str]) -> Result<String> {
    let binary = require_binary("tshark", "tshark")?;
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut guard = ProcessGuard::spawn(
        "tshark",
        Command::new(binary)
            .args(args)
            // A private profile directory: no user preference changes what tshark dissects.
            .env("HOME", dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSLKEYLOGFILE")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?),
    )?;
    let status = guard.wait_timeout(TSHARK_TIMEOUT);
    guard.kill();
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default())
        .lines()
        .filter(|l| !l.contains("Running as user \"root\""))
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        Some(s) if s.success() => Ok(String::from_utf8_lossy(&stdout).into_owned()),
        Some(s) => Err(anyhow::anyhow!("tshark {args:?} failed ({s}): {stderr}")),
        None => Err(anyhow::anyhow!(
            "tshark {args:?} still running after {TSHARK_TIMEOUT:?}"
        )),
    }
}

fn run_tshark(args: &[&str]) -> String {
    tshark(args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `tshark -r PCAP -T fields -e F… [extra_args…]`: one row per displayed packet, one cell per
/// field; several occurrences of a field in one packet are joined with ','. Panics with tshark's
/// message when tshark fails (an unreadable capture, an unknown field).
///
/// Off port 3389 pass `-d tcp.port==PORT,tpkt` to dissect the X.224 PDUs; `-Y FILTER` to select
/// packets; `-o tls.keylog_file:FILE` for a key log.
pub fn tshark_fields(pcap: &Path, extra_args: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let pcap = pcap.to_string_lossy();
    let mut args: Vec<&str> = vec!["-r", &pcap, "-n", "-T", "fields"];
    args.extend_from_slice(&[
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for field in fields {
        args.extend_from_slice(&["-e", field]);
    }
    args.extend_from_slice(extra_args);
    run_tshark(&args)
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// `tshark -r PCAP -n -V [args…]`: the full dissection tree as text.
pub fn tshark_verbose(pcap: &Path, args: &[&str]) -> String {
    let pcap = pcap.to_string_lossy();
    let mut all: Vec<&str> = vec!["-r", &pcap, "-n", "-V"];
    all.extend_from_slice(args);
    run_tshark(&all)
}

/// `tshark -r PCAP -n [args…]`: one summary line per packet.
pub fn tshark_summary(pcap: &Path, args: &[&str]) -> String {
    let pcap = pcap.to_string_lossy();
    let mut all: Vec<&str> = vec!["-r", &pcap, "-n"];
    all.extend_from_slice(args);
    run_tshark(&all)
}
