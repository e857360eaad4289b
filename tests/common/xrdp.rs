//! A real xrdp 0.9.21 on a free loopback port, with its own xrdp.ini in a tempdir (/etc untouched
//! except that /etc/xrdp/rsakeys.ini is created with xrdp-keygen when it is missing).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::certs::TestCert;
use super::net::{self, PROTOCOL_HYBRID, PROTOCOL_SSL};
use super::process::{log_tail, require_binary, ProcessGuard};

/// The xrdp.ini that the package installs; the harness copies it and overrides what it needs.
const SYSTEM_XRDP_INI: &str = "/etc/xrdp/xrdp.ini";
/// Standard RDP security keys; xrdp reads them from here whatever `--config` says.
const RSAKEYS_INI: &str = "/etc/xrdp/rsakeys.ini";
/// How long xrdp may take to answer its first X.224 request.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A Windows 7 / 2008 R2 era cipher list: RSA key exchange and ECDHE with CBC suites, which OpenSSL 3
/// allows only at security level 0 (TLS 1.0 needs it as well).
pub const LEGACY_TLS10_CIPHERS: &str =
    "AES128-SHA:AES256-SHA:DES-CBC3-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:@SECLEVEL=0";

/// The server certificate xrdp is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertKind {
    /// A fresh self-signed RSA certificate valid for a year.
    Valid,
    /// A self-signed certificate whose validity ended 30 days ago (started 400 days ago).
    Expired,
    /// `certificate=` and `key_file=` name dangling symlinks: xrdp logs "Cannot read certificate
    /// file" and, with `security_layer=tls`, answers RDP_NEG_FAILURE SSL_CERT_NOT_ON_SERVER; with
    /// `negotiate` it silently falls back to PROTOCOL_RDP. (A chmod 000 file would not do: the tests
    /// run as root, and root reads it.)
    Unreadable,
    /// Files that exist but are not PEM: xrdp selects PROTOCOL_SSL, then fails the TLS accept
    /// ("Error loading TLS private key") and closes the connection.
    Corrupt,
    /// Caller-provided PEM files.
    Files { cert: PathBuf, key: PathBuf },
}

/// How to configure xrdp. Start from a preset: `XrdpOpts { cert: CertKind::Expired, ..XrdpOpts::tls() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XrdpOpts {
    /// `security_layer=`: "negotiate", "tls" or "rdp".
    pub security_layer: &'static str,
    /// `crypt_level=`: "none", "low", "medium", "high" or "fips".
    pub crypt_level: &'static str,
    pub cert: CertKind,
    /// `ssl_protocols=`; `None` keeps xrdp's "TLSv1.2, TLSv1.3".
    pub ssl_protocols: Option<&'static str>,
    /// `tls_ciphers=`; `None` leaves OpenSSL's default list.
    pub tls_ciphers: Option<&'static str>,
    /// `fork=`: serve each connection in a forked child (xrdp's default) instead of in-process.
    pub fork: bool,
}

impl Default for XrdpOpts {
    fn default() -> Self {
        Self::negotiate()
    }
}

impl XrdpOpts {
    /// `security_layer=negotiate`, `crypt_level=high`, valid certificate.
    pub fn negotiate() -> Self {
        Self {
            security_layer: "negotiate",
            crypt_level: "high",
            cert: CertKind::Valid,
            ssl_protocols: None,
            tls_ciphers: None,
            fork: false,
        }
    }

    /// `security_layer=tls` (TLS only).
    pub fn tls() -> Self {
        Self {
            security_layer: "tls",
            ..Self::negotiate()
        }
    }

    /// `security_layer=rdp` (standard RDP security only) at `crypt_level`.
    pub fn rdp(crypt_level: &'static str) -> Self {
        Self {
            security_layer: "rdp",
            crypt_level,
            ..Self::negotiate()
        }
    }

    /// TLS only, TLS 1.0 only, with [`LEGACY_TLS10_CIPHERS`].
    pub fn tls10_only() -> Self {
        Self {
            ssl_protocols: Some("TLSv1"),
            tls_ciphers: Some(LEGACY_TLS10_CIPHERS),
            ..Self::tls()
        }
    }

    /// TLS only with an expired certificate.
    pub fn expired_cert() -> Self {
        Self {
            cert: CertKind::Expired,
            ..Self::tls()
        }
    }

    /// TLS only with an unreadable certificate: answers SSL_CERT_NOT_ON_SERVER.
    pub fn unreadable_cert() -> Self {
        Self {
            cert: CertKind::Unreadable,
            ..Self::tls()
        }
    }
}

/// A running xrdp, killed (by PID) and its files removed on drop.
#[derive(Debug)]
pub struct Xrdp {
    // INVARIANT: `guard` is declared first so the process dies before its directory is removed.
    guard: ProcessGuard,
    port: u16,
    cert: Option<TestCert>,
    opts: XrdpOpts,
    startup: Duration,
    dir: tempfile::TempDir,
}

impl Xrdp {
    /// Starts xrdp on a free 127.0.0.1 port and waits until it answers an X.224 Connection Request.
    pub fn start(opts: XrdpOpts) -> Result<Self> {
        let binary = require_binary("xrdp", "xrdp")?;
        ensure_rsakeys()?;
        let mut last_err = None;
        // A port picked free can be taken by someone else before xrdp binds it: retry on a new one.
        for _ in 0..3 {
            match Self::start_once(&binary, &opts) {
                Ok(xrdp) => return Ok(xrdp),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn start_once(binary: &Path, opts: &XrdpOpts) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("rdprobe-xrdp-").tempdir()?;
        let port = net::free_port();
        let (cert, cert_path, key_path) = prepare_cert(&opts.cert, dir.path())?;
        let ini = dir.path().join("xrdp.ini");
        std::fs::write(
            &ini,
            render_ini(opts, port, &cert_path, &key_path, dir.path())?,
        )?;
        let stdout = std::fs::File::create(dir.path().join("stdout.log"))?;
        let started = Instant::now();
        let mut guard = ProcessGuard::spawn(
            "xrdp",
            Command::new(binary)
                .arg("--nodaemon")
                .arg("--config")
                .arg(&ini)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(stdout.try_clone()?)
                .stderr(stdout),
        )?;
        let log = dir.path().join("xrdp.log");
        loop {
            if let Some(status) = guard.try_wait() {
                bail!(
                    "xrdp exited during startup ({status}) on port {port}; log:\n{}",
                    log_tail(&log, 20)
                );
            }
            // Any well-formed answer means xrdp is listening and speaks X.224.
            if net::x224_negotiate(port, PROTOCOL_SSL | PROTOCOL_HYBRID, Duration::from_secs(2))
                .is_ok()
            {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "xrdp did not answer x224 on port {port} within {START_TIMEOUT:?}; log:\n{}",
                    log_tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            guard,
            port,
            cert,
            opts: opts.clone(),
            startup: started.elapsed(),
            dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        net::loopback(self.port)
    }

    /// `"127.0.0.1:port"`, as a CLI argument.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The certificate xrdp presents (`None` for `Unreadable`, `Corrupt` and `Files`).
    pub fn cert(&self) -> Option<&TestCert> {
        self.cert.as_ref()
    }

    pub fn opts(&self) -> &XrdpOpts {
        &self.opts
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Time from spawn to the first X.224 answer.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// xrdp's own log (xrdp.log in its tempdir).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("xrdp.log")).unwrap_or_default()
    }

    /// The tempdir holding xrdp.ini, the certificate and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True while the xrdp process is alive.
    pub fn is_running(&mut self) -> bool {
        self.guard.try_wait().is_none()
    }
}

/// Makes sure /etc/xrdp/rsakeys.ini exists (standard RDP security needs it); touches nothing else.
fn ensure_rsakeys() -> Result<()> {
    if Path::new(RSAKEYS_INI).exists() {
        return Ok(());
    }
    let keygen = require_binary("xrdp-keygen", "xrdp")?;
    let out = Command::new(keygen)
        .args(["xrdp", "auto", "2048"])
        .stdin(Stdio::null())
        .output()
        .context("run xrdp-keygen")?;
    if !Path::new(RSAKEYS_INI).exists() {
        bail!(
            "{RSAKEYS_INI} missing and xrdp-keygen could not create it (run as root?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn prepare_cert(kind: &CertKind, dir: &Path) -> Result<(Option<TestCert>, PathBuf, PathBuf)> {
    Ok(match kind {
        CertKind::Valid | CertKind::Expired => {
            let cert = if *kind == CertKind::Valid {
                TestCert::valid("xrdp.rdprobe.test")?
            } else {
                TestCert::expired("xrdp-expired.rdprobe.test")?
            };
            let (c, k) = cert.write_pem(dir)?;
            (Some(cert), c, k)
        }
        CertKind::Unreadable => {
            let c = dir.join("cert.pem");
            let k = dir.join("key.pem");
            std::os::unix::fs::symlink(dir.join("missing-cert.pem"), &c)?;
            std::os::unix::fs::symlink(dir.join("missing-key.pem"), &k)?;
            (None, c, k)
        }
        CertKind::Corrupt => {
            let c = dir.join("cert.pem");
            let k = dir.join("key.pem");
            std::fs::write(&c, b"not a certificate\n")?;
            std::fs::write(&k, b"not a key\n")?;
            (None, c, k)
        }
        CertKind::Files { cert, key } => (None, cert.clone(), key.clone()),
    })
}

/// The system xrdp.ini with `[Globals]` and `[Logging]` keys replaced.
fn render_ini(opts: &XrdpOpts, port: u16, cert: &Path, key: &Path, dir: &Path) -> Result<String> {
    let base = std::fs::read_to_string(SYSTEM_XRDP_INI).with_context(|| {
        format!("read {SYSTEM_XRDP_INI}: run scripts/install-peers.sh (apt-get install xrdp)")
    })?;
    let mut globals = vec![
        ("fork", opts.fork.to_string()),
        ("port", format!("tcp://127.0.0.1:{port}")),
        ("use_vsock", "false".to_owned()),
        ("tcp_nodelay", "true".to_owned()),
        ("security_layer", opts.security_layer.to_owned()),
        ("crypt_level", opts.crypt_level.to_owned()),
        ("certificate", cert.display().to_string()),
        ("key_file", key.display().to_string()),
        (
            "ssl_protocols",
            opts.ssl_protocols.unwrap_or("TLSv1.2, TLSv1.3").to_owned(),
        ),
    ];
    if let Some(ciphers) = opts.tls_ciphers {
        globals.push(("tls_ciphers", ciphers.to_owned()));
    }
    let logging = vec![
        ("LogFile", dir.join("xrdp.log").display().to_string()),
        ("LogLevel", "INFO".to_owned()),
        ("EnableSyslog", "false".to_owned()),
        ("EnableConsole", "false".to_owned()),
    ];
    Ok(override_ini(
        &base,
        &[("Globals", &globals), ("Logging", &logging)],
    ))
}

type Overrides<'a> = [(&'a str, &'a Vec<(&'a str, String)>)];

/// Drops the active lines of the overridden keys in each named section and appends the new values
/// at the end of that section.
fn override_ini(base: &str, overrides: &Overrides<'_>) -> String {
    let mut out = String::new();
    let mut section: Option<&str> = None;
    let flush = |out: &mut String, section: Option<&str>| {
        if let Some((_, keys)) = overrides.iter().find(|(s, _)| Some(*s) == section) {
            for (k, v) in keys.iter() {
                let _ = writeln!(out, "{k}={v}");
            }
        }
    };
    for line in base.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            flush(&mut out, section);
            section = Some(&trimmed[1..trimmed.len() - 1]);
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let overridden = overrides
            .iter()
            .find(|(s, _)| Some(*s) == section)
            .is_some_and(|(_, keys)| {
                trimmed.split_once('=').is_some_and(|(k, _)| {
                    keys.iter()
                        .any(|(key, _)| k.trim().eq_ignore_ascii_case(key))
                })
            });
        if !overridden {
            out.push_str(line);
            out.push('\n');
        }
    }
    flush(&mut out, section);
    out
}
