//! The RD Gateway hop (MS-TSGU over HTTPS): the typed packets ([`tsgu`]), HTTP heads and
//! authentication tokens ([`http`]), the WebSocket transport ([`ws`]) and the probe's client side
//! ([`client`]): stages `gw_tcp`, `gw_tls`, `gw_http`, `gw_auth`, `gw_tunnel`, `gw_channel`, each with
//! a deadline and its facts, then the inner RDP through the channel.
//!
//! Why not `ironrdp-mstsgu`: its `GwClient::connect` runs HTTP, authentication, handshake, tunnel and
//! channel as one call, with no deadline per step and no view of the HTTP status, the schemes offered,
//! a redirect's `Location` or the HRESULT of the step that failed; and its packet types are
//! crate-private. The probe needs each step on its own, so it drives them here on typed packets.
//!
//! INVARIANT: every wait on the gateway has the stage deadline; every length read from the gateway is
//! bounded (`http::MAX_HEAD_LEN`, `ws::MAX_MESSAGE_LEN`, `tsgu::MAX_PACKET_LEN`).

pub mod client;
pub mod http;
pub mod legacy;
pub mod survey;
pub mod transport;
pub mod tsgu;
pub mod ws;

/// A byte stream the gateway hop runs on (TLS over TCP, or a test's pipe).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// The TLS client side of a connection to the RD Gateway `host` (the probe's OUT and IN channels,
/// `enum --gateway`): the probe's recording configuration for `versions` with ALPN `http/1.1` and
/// SNI for a name only, the verifier that records the gateway's chain, and the name to verify (the
/// placeholder `rd-gateway` for an address; an error for a host that is no valid name).
pub(crate) fn tls_client(
    trace: crate::probe::tap::SharedTrace,
    host: &str,
    versions: crate::probe::tls::TlsVersions,
) -> (
    tokio_rustls::TlsConnector,
    std::sync::Arc<crate::probe::tls::RecordingVerifier>,
    Result<rustls::pki_types::ServerName<'static>, rustls::pki_types::InvalidDnsNameError>,
) {
    let (config, verifier) = crate::probe::tls::rustls_config(trace, versions);
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_sni = sends_sni(host);
    let name = rustls::pki_types::ServerName::try_from(if sends_sni(host) {
        host.to_owned()
    } else {
        "rd-gateway".to_owned()
    });
    (
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        verifier,
        name,
    )
}

/// Whether the TLS client names `host` (SNI): a name, not an address.
pub(crate) fn sends_sni(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_named_only_by_a_name() {
        let a = std::net::SocketAddr::from(([127, 0, 0, 1], 443));
        let name = |host: &str| {
            let trace = crate::probe::tap::SharedTrace::new(crate::trace::Trace::new(a, a));
            tls_client(trace, host, crate::probe::tls::TlsVersions::Both)
                .2
                .map(|n| n.to_str().into_owned())
        };
        assert!(sends_sni("gw.corp.example") && !sends_sni("10.0.0.1") && !sends_sni("::1"));
        assert_eq!(name("gw.corp.example").unwrap(), "gw.corp.example");
        assert_eq!(name("10.0.0.1").unwrap(), "rd-gateway");
        assert!(name("not a name!").is_err());
    }
}
