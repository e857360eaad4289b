//! The lab's certificates and TLS acceptors (MS-RDPBCGR 5.4.5.1).
//!
//! Certificates are RSA like Windows' (2048 bits, or 1024 for `weak-key`), generated with OpenSSL once
//! per process and kind: rcgen's ring backend cannot generate RSA keys, and an "expired" or
//! "not-yet-valid" certificate only needs explicit validity dates. TLS 1.2/1.3 with a normal key is
//! served by rustls (ring); TLS 1.0/1.1 or a 1024-bit key by OpenSSL at security level 0, because
//! ring refuses RSA keys under 2048 bits and rustls does not speak TLS 1.0/1.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod, SslVersion};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Builder, X509NameBuilder};
use x509_cert::der::Decode as _;

use super::LabError;
use crate::scenario::{CertificateKind, TlsVersion};

/// A generated certificate and its key.
#[derive(Debug)]
pub struct CertMaterial {
    /// DER of the X.509 certificate.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_pkcs8_der: Vec<u8>,
    /// The subjectPublicKey bits (what CredSSP binds, MS-CSSP 3.1.5).
    pub public_key: Vec<u8>,
    /// RSA modulus size.
    pub key_bits: u32,
}

/// Seconds since the epoch of 2020-01-01 and 2021-01-01 (validity of the `expired` certificate).
const EXPIRED_NOT_BEFORE: i64 = 1_577_836_800;
const EXPIRED_NOT_AFTER: i64 = 1_609_459_200;
/// Ten years, in seconds.
const TEN_YEARS_S: i64 = 10 * 365 * 24 * 3600;

fn rsa_key(bits: u32) -> Result<PKey<Private>, LabError> {
    static KEYS: OnceLock<Mutex<HashMap<u32, PKey<Private>>>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = keys.get(&bits) {
        return Ok(k.clone());
    }
    let k = PKey::from_rsa(Rsa::generate(bits).map_err(cert_err)?).map_err(cert_err)?;
    keys.insert(bits, k.clone());
    Ok(k)
}

fn cert_err(e: impl std::fmt::Display) -> LabError {
    LabError::Certificate(e.to_string())
}

/// The certificate for `kind` (cached per process). `None` for [`CertificateKind::None`].
pub fn certificate(
    kind: CertificateKind,
    subject: &str,
) -> Result<Option<Arc<CertMaterial>>, LabError> {
    if kind == CertificateKind::None {
        return Ok(None);
    }
    type Cache = Mutex<HashMap<(CertificateKind, String), Arc<CertMaterial>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (kind, subject.to_owned());
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Some(m.clone()));
    }
    let m = Arc::new(generate(kind, subject)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, m.clone());
    Ok(Some(m))
}

fn generate(kind: CertificateKind, subject: &str) -> Result<CertMaterial, LabError> {
    let bits = if kind == CertificateKind::WeakKey {
        1024
    } else {
        2048
    };
    let key = rsa_key(bits)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
        .unwrap_or(0);
    let (not_before, not_after) = match kind {
        CertificateKind::Expired => (EXPIRED_NOT_BEFORE, EXPIRED_NOT_AFTER),
        CertificateKind::NotYetValid => (now + TEN_YEARS_S, now + 2 * TEN_YEARS_S),
        _ => (now - 3600, now + TEN_YEARS_S),
    };
    let cn = if kind == CertificateKind::WrongName {
        "wrong-host.invalid"
    } else if subject.is_empty() {
        "rdprobe-lab"
    } else {
        subject
    };

    let mut name = X509NameBuilder::new().map_err(cert_err)?;
    name.append_entry_by_text("CN", cn).map_err(cert_err)?;
    let name = name.build();
    let mut b = X509Builder::new().map_err(cert_err)?;
    b.set_version(2).map_err(cert_err)?;
    let serial = BigNum::from_u32(u32::from(kind as u8) + 0x1000 + (now as u32 & 0xffff))
        .and_then(|n| n.to_asn1_integer())
        .map_err(cert_err)?;
    b.set_serial_number(&serial).map_err(cert_err)?;
    b.set_subject_name(&name).map_err(cert_err)?;
    b.set_issuer_name(&name).map_err(cert_err)?;
    b.set_pubkey(&key).map_err(cert_err)?;
    let nb = Asn1Time::from_unix(not_before).map_err(cert_err)?;
    let na = Asn1Time::from_unix(not_after).map_err(cert_err)?;
    b.set_not_before(&nb).map_err(cert_err)?;
    b.set_not_after(&na).map_err(cert_err)?;
    let mut san = SubjectAlternativeName::new();
    if kind == CertificateKind::WrongName {
        san.dns("wrong-host.invalid");
    } else {
        san.dns(cn).dns("localhost").ip("127.0.0.1").ip("::1");
    }
    let san = san.build(&b.x509v3_context(None, None)).map_err(cert_err)?;
    b.append_extension(san).map_err(cert_err)?;
    b.append_extension(BasicConstraints::new().build().map_err(cert_err)?)
        .map_err(cert_err)?;
    b.append_extension(
        KeyUsage::new()
            .digital_signature()
            .key_encipherment()
            .build()
            .map_err(cert_err)?,
    )
    .map_err(cert_err)?;
    b.append_extension(
        ExtendedKeyUsage::new()
            .server_auth()
            .build()
            .map_err(cert_err)?,
    )
    .map_err(cert_err)?;
    b.sign(&key, MessageDigest::sha256()).map_err(cert_err)?;
    let cert_der = b.build().to_der().map_err(cert_err)?;
    let key_pkcs8_der = key.private_key_to_pkcs8().map_err(cert_err)?;
    let public_key = subject_public_key(&cert_der)?;
    Ok(CertMaterial {
        cert_der,
        key_pkcs8_der,
        public_key,
        key_bits: bits,
    })
}

/// The subjectPublicKey BIT STRING contents of a DER certificate.
pub fn subject_public_key(cert_der: &[u8]) -> Result<Vec<u8>, LabError> {
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(cert_err)?;
    Ok(cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec())
}

/// A ready TLS acceptor for one scenario.
#[derive(Clone)]
pub(crate) enum TlsServer {
    Rustls(tokio_rustls::TlsAcceptor),
    OpenSsl(Arc<SslAcceptor>),
}

impl TlsServer {
    pub(crate) fn build(
        material: &CertMaterial,
        versions: &[TlsVersion],
    ) -> Result<TlsServer, LabError> {
        let legacy = versions
            .iter()
            .any(|v| matches!(v, TlsVersion::Tls10 | TlsVersion::Tls11));
        if !legacy && material.key_bits >= 2048 {
            return Self::build_rustls(material, versions);
        }
        Self::build_openssl(material, versions)
    }

    fn build_rustls(
        material: &CertMaterial,
        versions: &[TlsVersion],
    ) -> Result<TlsServer, LabError> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let mut vs: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if versions.contains(&TlsVersion::Tls13) {
            vs.push(&rustls::version::TLS13);
        }
        if versions.contains(&TlsVersion::Tls12) {
            vs.push(&rustls::version::TLS12);
        }
        let tls_err = |e: rustls::Error| LabError::Tls(e.to_string());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&vs)
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(material.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(material.key_pkcs8_der.clone())),
        )
        .map_err(tls_err)?;
        // The lab's TLS secrets go to $SSLKEYLOGFILE when it is set (the usual convention), so a
        // real client's capture through the lab (xfreerdp keeps no key log) can be decrypted.
        config.key_log = Arc::new(rustls::KeyLogFile::new());
        Ok(TlsServer::Rustls(tokio_rustls::TlsAcceptor::from(
            Arc::new(config),
        )))
    }

    fn build_openssl(
        material: &CertMaterial,
        versions: &[TlsVersion],
    ) -> Result<TlsServer, LabError> {
        let e = |e: openssl::error::ErrorStack| LabError::Tls(e.to_string());
        let to_ssl = |v: TlsVersion| match v {
            TlsVersion::Tls10 => SslVersion::TLS1,
            TlsVersion::Tls11 => SslVersion::TLS1_1,
            TlsVersion::Tls12 => SslVersion::TLS1_2,
            TlsVersion::Tls13 => SslVersion::TLS1_3,
        };
        let min = versions.iter().copied().min().unwrap_or(TlsVersion::Tls12);
        let max = versions.iter().copied().max().unwrap_or(TlsVersion::Tls13);
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(e)?;
        // The Mozilla profile turns TLS 1.0/1.1 off with options; the scenario's versions decide here.
        b.clear_options(openssl::ssl::SslOptions::NO_TLSV1 | openssl::ssl::SslOptions::NO_TLSV1_1);
        b.set_security_level(0);
        b.set_cipher_list("ALL:@SECLEVEL=0").map_err(e)?;
        b.set_min_proto_version(Some(to_ssl(min))).map_err(e)?;
        b.set_max_proto_version(Some(to_ssl(max))).map_err(e)?;
        let cert = openssl::x509::X509::from_der(&material.cert_der).map_err(e)?;
        let key = PKey::private_key_from_pkcs8(&material.key_pkcs8_der).map_err(e)?;
        b.set_certificate(&cert).map_err(e)?;
        b.set_private_key(&key).map_err(e)?;
        b.check_private_key().map_err(e)?;
        Ok(TlsServer::OpenSsl(Arc::new(b.build())))
    }

    pub(crate) fn engine(&self) -> &'static str {
        match self {
            TlsServer::Rustls(_) => "rustls",
            TlsServer::OpenSsl(_) => "openssl",
        }
    }
}

/// A fatal TLS alert record: handshake_failure (40), RFC 8446 6.2 / RFC 5246 7.2.
pub(crate) fn handshake_failure_alert(record_version: [u8; 2]) -> [u8; 7] {
    [
        0x15,
        record_version[0],
        record_version[1],
        0x00,
        0x02,
        0x02,
        40,
    ]
}
