//! TLS for the probe: rustls with a verifier that accepts any certificate but records the chain,
//! and a legacy OpenSSL path (`@SECLEVEL=0`, TLS 1.0+) for servers rustls cannot speak to.
//! Both export their secrets in SSLKEYLOGFILE form into the Trace.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::tap::SharedTrace;

/// Which TLS versions the rustls path may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersions {
    Both,
    Only12,
    Only13,
}

/// Accepts any certificate (a probe must see broken certificates, not refuse them) and keeps the chain.
#[derive(Debug)]
pub struct RecordingVerifier {
    pub chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.as_ref().to_vec()];
        chain.extend(intermediates.iter().map(|c| c.as_ref().to_vec()));
        *self.chain.lock().unwrap_or_else(|e| e.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Sends TLS secrets into the Trace.
#[derive(Debug)]
struct TraceKeyLog(SharedTraceDebug);

struct SharedTraceDebug(SharedTrace);

impl std::fmt::Debug for SharedTraceDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTrace")
    }
}

impl rustls::KeyLog for TraceKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        self.0 .0.add_keylog(format!(
            "{label} {} {}",
            hex::encode(client_random),
            hex::encode(secret)
        ));
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

/// A rustls client config for the probe (ring provider only: two providers panic at runtime).
pub fn rustls_config(
    trace: SharedTrace,
    versions: TlsVersions,
) -> (Arc<rustls::ClientConfig>, Arc<RecordingVerifier>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RecordingVerifier {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let vers: &[&rustls::SupportedProtocolVersion] = match versions {
        TlsVersions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersions::Only12 => &[&rustls::version::TLS12],
        TlsVersions::Only13 => &[&rustls::version::TLS13],
    };
    // INVARIANT: the ring provider supports both versions, so this cannot fail.
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(vers)
        .expect("ring supports TLS 1.2 and 1.3");
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.key_log = Arc::new(TraceKeyLog(SharedTraceDebug(trace)));
    // RDP servers do not resume sessions across probes; keep every probe independent.
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = false;
    (Arc::new(config), verifier)
}

/// The facts of a rustls session once its handshake is done: version, cipher suite, and the
/// chain `verifier` recorded. Shared by the probe and the fuzz session.
pub fn rustls_session_info(
    conn: &rustls::ClientConnection,
    verifier: &RecordingVerifier,
) -> crate::trace::TlsSessionInfo {
    crate::trace::TlsSessionInfo {
        version: conn
            .protocol_version()
            .map(rustls_version_name)
            .unwrap_or_default(),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
        certificates: verifier
            .chain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        engine: "rustls".into(),
    }
}

/// IANA-style name of a rustls protocol version: the decode's name of its number
/// ([`crate::decode::tls::version_name`]), so live and offline name a version alike.
pub fn rustls_version_name(v: rustls::ProtocolVersion) -> String {
    crate::decode::tls::version_name(u16::from(v))
}

/// TLS version numbers and OpenSSL's versions, oldest first: the probe's legacy path and `enum`
/// name OpenSSL's versions through it, with [`crate::decode::tls::version_name`].
pub const OPENSSL_VERSIONS: [(u16, openssl::ssl::SslVersion); 4] = [
    (0x0301, openssl::ssl::SslVersion::TLS1),
    (0x0302, openssl::ssl::SslVersion::TLS1_1),
    (0x0303, openssl::ssl::SslVersion::TLS1_2),
    (0x0304, openssl::ssl::SslVersion::TLS1_3),
];

/// The name of the version an OpenSSL session negotiated ("TLSv1.0"), as decode names it;
/// OpenSSL's own name for a version outside [`OPENSSL_VERSIONS`].
pub fn openssl_version_name(ssl: &openssl::ssl::SslRef) -> String {
    let v = ssl.version2();
    match OPENSSL_VERSIONS.iter().find(|(_, o)| Some(*o) == v) {
        Some((n, _)) => crate::decode::tls::version_name(*n),
        None => ssl.version_str().to_owned(),
    }
}

/// An OpenSSL connector for servers that speak only legacy TLS (1.0/1.1, CBC, RSA key exchange).
pub fn openssl_legacy(trace: SharedTrace) -> Result<openssl::ssl::Ssl, openssl::error::ErrorStack> {
    use openssl::ssl::{SslContext, SslMethod, SslVerifyMode, SslVersion};
    let mut b = SslContext::builder(SslMethod::tls_client())?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_min_proto_version(Some(SslVersion::TLS1))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_cipher_list("ALL:@SECLEVEL=0")?;
    b.set_keylog_callback(move |_ssl, line| trace.add_keylog(line.to_owned()));
    let ctx = b.build();
    openssl::ssl::Ssl::new(&ctx)
}
