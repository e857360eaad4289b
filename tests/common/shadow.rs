//! Xvfb and `freerdp-shadow-cli` (FreeRDP 2.11's server) with a SAM file, on free loopback ports.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use md4::{Digest, Md4};

use super::net::{self, PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX, PROTOCOL_SSL};
use super::process::{log_tail, require_binary, ProcessGuard};

/// How long Xvfb may take to report its display number.
const XVFB_TIMEOUT: Duration = Duration::from_secs(10);
/// How long freerdp-shadow-cli may take to answer its first X.224 request.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(15);

/// A virtual X server. It picks a free display itself (`-displayfd`) and reports it once it accepts
/// clients, so parallel tests never race for a display number.
#[derive(Debug)]
pub struct Xvfb {
    guard: ProcessGuard,
    display: u32,
    startup: Duration,
    // Kept open: Xvfb must not get SIGPIPE should it write to its displayfd again.
    _displayfd: std::process::ChildStdout,
    stderr: tempfile::NamedTempFile,
}

impl Xvfb {
    /// Starts `Xvfb -displayfd 1 -nolisten tcp -noreset -screen 0 1024x768x24`.
    pub fn start() -> Result<Self> {
        let binary = require_binary("Xvfb", "xvfb")?;
        let started = Instant::now();
        let stderr = tempfile::Builder::new()
            .prefix("rdprobe-xvfb-")
            .suffix(".log")
            .tempfile()?;
        let mut guard = ProcessGuard::spawn(
            "Xvfb",
            Command::new(binary)
                .args(["-displayfd", "1", "-nolisten", "tcp", "-noreset"])
                .args(["-screen", "0", "1024x768x24"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr.reopen()?),
        )?;
        let stdout = guard
            .child_mut()
            .stdout
            .take()
            .context("xvfb stdout not piped")?;
        // Read the display number on a helper thread so the wait has a deadline.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let res = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, reader.into_inner()));
        });
        let (line, stdout) = rx.recv_timeout(XVFB_TIMEOUT).map_err(|_| {
            anyhow!(
                "xvfb did not report a display within {XVFB_TIMEOUT:?}; log:\n{}",
                log_tail(stderr.path(), 20)
            )
        })?;
        let line = line.context("read xvfb displayfd")?;
        let display: u32 = line.trim().parse().with_context(|| {
            format!(
                "xvfb exited or reported a bad display {line:?}; log:\n{}",
                log_tail(stderr.path(), 20)
            )
        })?;
        Ok(Self {
            guard,
            display,
            startup: started.elapsed(),
            _displayfd: stdout,
            stderr,
        })
    }

    /// The display number (`:N`).
    pub fn display_number(&self) -> u32 {
        self.display
    }

    /// The `DISPLAY` value, e.g. `":3"`.
    pub fn display(&self) -> String {
        format!(":{}", self.display)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn startup_time(&self) -> Duration {
        self.startup
    }
}

/// The NT hash of `password`: MD4 of its UTF-16LE encoding (MS-NLMP 3.3.1, NTOWFv1), lowercase hex.
pub fn nt_hash_hex(password: &str) -> String {
    let utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    Md4::digest(&utf16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A WinPR SAM file line: `user:domain:LMHASH:NTHASH:::`, as `winpr-hash -f sam` writes it
/// (empty domain and LM hash).
pub fn sam_line(user: &str, password: &str) -> String {
    format!("{user}:::{}:::", nt_hash_hex(password))
}

/// `freerdp-shadow-cli` sharing its own Xvfb, on a free 127.0.0.1 port. Killed by PID on drop,
/// before its Xvfb. Start a fresh one per test group: after half-open connections it can stop
/// answering.
#[derive(Debug)]
pub struct FreerdpShadow {
    // INVARIANT: field order is drop order: the server dies before its display, files go last.
    guard: ProcessGuard,
    xvfb: Xvfb,
    port: u16,
    sec: String,
    startup: Duration,
    dir: tempfile::TempDir,
}

impl FreerdpShadow {
    /// Starts `freerdp-shadow-cli /sec:<sec>` ("nla", "tls", "rdp" or "ext") with a SAM file holding
    /// `users` (user, password), and waits until it answers an X.224 Connection Request.
    pub fn start(sec: &str, users: &[(&str, &str)]) -> Result<Self> {
        let binary = require_binary("freerdp-shadow-cli", "freerdp2-shadow-x11")?;
        let mut last_err = None;
        for _ in 0..3 {
            match Self::start_once(&binary, sec, users) {
                Ok(shadow) => return Ok(shadow),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn start_once(binary: &Path, sec: &str, users: &[(&str, &str)]) -> Result<Self> {
        let started = Instant::now();
        let xvfb = Xvfb::start()?;
        let dir = tempfile::Builder::new()
            .prefix("rdprobe-shadow-")
            .tempdir()?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home)?;
        let sam = dir.path().join("SAM");
        let mut sam_text = String::new();
        for (user, password) in users {
            sam_text.push_str(&sam_line(user, password));
            sam_text.push('\n');
        }
        std::fs::write(&sam, sam_text)?;
        let port = net::free_port();
        let log = dir.path().join("shadow.log");
        let log_file = std::fs::File::create(&log)?;
        let mut guard = ProcessGuard::spawn(
            "freerdp-shadow-cli",
            Command::new(binary)
                .arg(format!("/port:{port}"))
                .arg("/bind-address:127.0.0.1")
                .arg(format!("/sec:{sec}"))
                .arg(format!("/sam-file:{}", sam.display()))
                .env("DISPLAY", xvfb.display())
                .env("HOME", &home)
                .env_remove("XDG_CONFIG_HOME")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file),
        )?;
        // Offer everything: the answer (a selection or a failure code) proves it speaks X.224.
        let offer = PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX;
        loop {
            if let Some(status) = guard.try_wait() {
                bail!(
                    "freerdp-shadow-cli exited during startup ({status}); log:\n{}",
                    log_tail(&log, 20)
                );
            }
            // No bare connect first: half-open connections can wedge this server.
            if net::x224_negotiate(port, offer, Duration::from_secs(2)).is_ok() {
                break;
            }
            if started.elapsed() > SHADOW_TIMEOUT {
                bail!(
                    "freerdp-shadow-cli did not answer x224 on port {port} within \
                     {SHADOW_TIMEOUT:?}; log:\n{}",
                    log_tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(Self {
            guard,
            xvfb,
            port,
            sec: sec.to_owned(),
            startup: started.elapsed(),
            dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        net::loopback(self.port)
    }

    /// `"127.0.0.1:port"`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `/sec:` it was started with.
    pub fn sec(&self) -> &str {
        &self.sec
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The Xvfb it shadows.
    pub fn xvfb(&self) -> &Xvfb {
        &self.xvfb
    }

    /// Time from spawning Xvfb to the first X.224 answer.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The server's log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shadow.log")).unwrap_or_default()
    }

    /// The certificate it generated under `$HOME/.config/freerdp/shadow/`, as PEM.
    pub fn cert_pem_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("home/.config/freerdp/shadow/shadow.crt")
    }

    /// True while the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.guard.try_wait().is_none()
    }
}
