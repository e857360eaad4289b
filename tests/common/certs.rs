//! Self-signed RSA server certificates for the peers: valid, expired, or deliberately broken.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder};
use time::{Duration as TimeDuration, OffsetDateTime};

/// One RSA-2048 key shared by every certificate of a test process (generating one costs ~100 ms).
fn shared_key() -> &'static PKey<Private> {
    static KEY: OnceLock<PKey<Private>> = OnceLock::new();
    KEY.get_or_init(|| {
        let rsa = Rsa::generate(2048).expect("generate rsa-2048");
        PKey::from_rsa(rsa).expect("pkey from rsa")
    })
}

/// A generated self-signed certificate and its key.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// Subject (and issuer) common name.
    pub common_name: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DER of the certificate, as a server presents it.
    pub der: Vec<u8>,
    pub cert_pem: Vec<u8>,
    /// PKCS#8 PEM of the private key.
    pub key_pem: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_der: Vec<u8>,
}

impl TestCert {
    /// Valid from one hour ago for one year.
    pub fn valid(common_name: &str) -> Result<Self> {
        let now = OffsetDateTime::now_utc();
        Self::with_validity(
            common_name,
            now - TimeDuration::hours(1),
            now + TimeDuration::days(365),
        )
    }

    /// Expired: valid from 400 days ago until 30 days ago.
    pub fn expired(common_name: &str) -> Result<Self> {
        let now = OffsetDateTime::now_utc();
        Self::with_validity(
            common_name,
            now - TimeDuration::days(400),
            now - TimeDuration::days(30),
        )
    }

    /// A self-signed RSA certificate (SHA-256, serverAuth-capable) valid between the given instants,
    /// which may lie in the past (OpenSSL's `-days` cannot go negative; the API can).
    pub fn with_validity(
        common_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self> {
        // Whole seconds: ASN.1 UTCTime has no fractions, and tests compare the dates.
        let not_before = not_before.replace_nanosecond(0)?;
        let not_after = not_after.replace_nanosecond(0)?;
        let key = shared_key();
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", common_name)?;
        name.append_entry_by_text("O", "rdprobe test suite")?;
        let name = name.build();

        let mut builder = X509Builder::new()?;
        builder.set_version(2)?;
        let serial = BigNum::from_u32(rand_u32())?;
        let serial = Asn1Integer::from_bn(&serial)?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(key)?;
        let (start, end) = (
            Asn1Time::from_unix(not_before.unix_timestamp())?,
            Asn1Time::from_unix(not_after.unix_timestamp())?,
        );
        builder.set_not_before(&start)?;
        builder.set_not_after(&end)?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        let san = SubjectAlternativeName::new()
            .dns(common_name)
            .ip("127.0.0.1")
            .build(&builder.x509v3_context(None, None))?;
        builder.append_extension(san)?;
        builder.sign(key, MessageDigest::sha256())?;
        let cert = builder.build();

        Ok(Self {
            common_name: common_name.to_owned(),
            not_before,
            not_after,
            der: cert.to_der()?,
            cert_pem: cert.to_pem()?,
            key_pem: key.private_key_to_pem_pkcs8()?,
            key_der: key.private_key_to_pkcs8()?,
        })
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write_pem(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem)
            .with_context(|| format!("write {}", cert.display()))?;
        std::fs::write(&key, &self.key_pem).with_context(|| format!("write {}", key.display()))?;
        Ok((cert, key))
    }
}

/// A non-cryptographic random u32 (serial numbers, garbage bytes): time and address entropy.
pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() as u32) | 1
}
