//! A reference TLS client (OpenSSL, any version down to TLS 1.0 at security level 0) that runs the
//! X.224 exchange first, to check what a peer really serves.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};

use super::net::{self, NegOutcome};

/// What a TLS handshake with a peer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// The negotiation answer before TLS.
    pub negotiation: NegOutcome,
    /// OpenSSL's name of the version, e.g. "TLSv1.2", "TLSv1".
    pub version: String,
    /// OpenSSL's name of the cipher suite, e.g. "AES128-SHA".
    pub cipher: String,
    /// DER of the server's leaf certificate.
    pub cert_der: Vec<u8>,
}

/// TLS version bounds for [`tls_after_x224`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRange {
    /// TLS 1.0 … 1.3, every cipher OpenSSL has (`ALL:@SECLEVEL=0`).
    Any,
    /// TLS 1.2 and 1.3 only, OpenSSL's default ciphers (what a modern client offers).
    Modern,
    /// TLS 1.0 only, `ALL:@SECLEVEL=0`.
    Tls10Only,
}

/// Sends an X.224 request offering `protocols` to 127.0.0.1:`port`; when the server selects SSL or
/// HYBRID, runs a TLS handshake within `range` (no certificate verification) and returns what was
/// negotiated. Fails when the server does not select a TLS-based protocol or TLS fails.
pub fn tls_after_x224(
    port: u16,
    protocols: u32,
    range: TlsRange,
    timeout: Duration,
) -> Result<TlsFacts> {
    let mut stream = TcpStream::connect_timeout(&net::loopback(port), timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&net::connection_request(Some("rdprobe"), protocols))?;
    let confirm = net::read_tpkt(&mut stream, 512)?;
    let negotiation = net::parse_confirm(&confirm)?;
    match negotiation {
        NegOutcome::Selected { protocol, .. } if protocol != net::PROTOCOL_RDP => {}
        other => bail!("server did not select a tls-based protocol: {other:?}"),
    }
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    builder.set_verify(SslVerifyMode::NONE);
    match range {
        TlsRange::Any => {
            builder.set_cipher_list("ALL:@SECLEVEL=0")?;
            builder.set_min_proto_version(Some(SslVersion::TLS1))?;
        }
        TlsRange::Modern => {
            builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        }
        TlsRange::Tls10Only => {
            builder.set_cipher_list("ALL:@SECLEVEL=0")?;
            builder.set_min_proto_version(Some(SslVersion::TLS1))?;
            builder.set_max_proto_version(Some(SslVersion::TLS1))?;
        }
    }
    let connector = builder.build();
    let mut config = connector.configure()?;
    config.set_verify_hostname(false);
    config.set_use_server_name_indication(false);
    let tls = config
        .connect("localhost", stream)
        .map_err(|e| anyhow::anyhow!("tls handshake: {e}"))?;
    let ssl = tls.ssl();
    let cert = ssl
        .peer_certificate()
        .context("server sent no certificate")?;
    Ok(TlsFacts {
        negotiation,
        version: ssl.version_str().to_owned(),
        cipher: ssl
            .current_cipher()
            .map(|c| c.name().to_owned())
            .unwrap_or_default(),
        cert_der: cert.to_der()?,
    })
}
