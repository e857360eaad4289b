//! X.509 certificates (RFC 5280) as rdprobe reports them: the facts of a DER certificate (names as
//! RFC 4514 strings, validity dates as RFC 3339, key type and size, self-signature), the name check
//! against a host (RFC 6125) and the parts CredSSP and the certificate comparison need. Pure, no
//! I/O; parsing is the `x509-cert` crate's, so nothing here panics on any input.
//!
//! Why some of it is hand-written: `x509-cert`'s `Display` of a Name prints BMPString values (which
//! Microsoft's licensing certificates use) as hex, so [`rfc4514`] decodes every directory string
//! type itself; the RSAPublicKey is read with `wire::asn1` because `pkcs1` is not a dependency (see
//! `wire::servercert`). The self-signature check is OpenSSL's.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use x509_cert::der::{self, Decode, Encode, Tagged};
use x509_cert::Certificate;

/// Why a certificate gave no facts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The DER does not decode as a Certificate (what `x509-cert` says).
    #[error("invalid certificate: {0}")]
    Invalid(String),
}

/// Facts of an X.509 certificate, as reported in the `tls` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// RFC 3339
    pub not_before: String,
    /// RFC 3339
    pub not_after: String,
    pub expired: bool,
    pub not_yet_valid: bool,
    /// issuer == subject and, where the signature could be checked, it verifies with the
    /// certificate's own key; see `self_signed_basis`.
    pub self_signed: bool,
    /// How `self_signed` was decided: "signature" (names equal and the signature verifies with the
    /// certificate's own key), "names" (names equal, signature not checkable), or "" when the names
    /// differ.
    #[serde(default)]
    pub self_signed_basis: String,
    /// e.g. "RSA", "EC P-256"
    pub key_type: String,
    pub key_bits: u32,
    /// e.g. "sha256WithRSAEncryption"
    pub signature_algorithm: String,
    /// days from `now` to notAfter (negative when expired)
    pub days_left: i64,
    /// hex SHA-256 of the DER
    pub sha256: String,
    /// subjectAltName dNSName entries
    #[serde(default)]
    pub dns_names: Vec<String>,
}

/// RFC 3339 UTC timestamp ("2024-01-31T12:00:00Z") of seconds since the Unix epoch, through the
/// `time` crate. Years outside 0..=9999 (a hostile NTLM timestamp reaches 60056; RFC 3339 has no
/// form for them) keep the same layout with the year as it comes, e.g. "30828-09-14T02:48:05Z";
/// seconds beyond `time`'s ±999,999 years (no caller produces them) read "out-of-range(N)".
pub fn rfc3339(unix_secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix_secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("out-of-range({unix_secs})"),
    }
}

/// Object identifiers read from certificates.
mod oid {
    use x509_cert::der::asn1::ObjectIdentifier as O;
    pub const RSA: O = O::new_unwrap("1.2.840.113549.1.1.1");
    pub const RSA_PSS: O = O::new_unwrap("1.2.840.113549.1.1.10");
    pub const EC: O = O::new_unwrap("1.2.840.10045.2.1");
    pub const DSA: O = O::new_unwrap("1.2.840.10040.4.1");
    pub const ED25519: O = O::new_unwrap("1.3.101.112");
    pub const ED448: O = O::new_unwrap("1.3.101.113");
    pub const P256: O = O::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: O = O::new_unwrap("1.3.132.0.34");
    pub const P521: O = O::new_unwrap("1.3.132.0.35");
    pub const P224: O = O::new_unwrap("1.3.132.0.33");
    pub const SECP256K1: O = O::new_unwrap("1.3.132.0.10");
    pub const CN: O = O::new_unwrap("2.5.4.3");
}

fn signature_algorithm_name(oid: &der::asn1::ObjectIdentifier) -> String {
    let s = oid.to_string();
    let name = match s.as_str() {
        "1.2.840.113549.1.1.2" => "md2WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.3.14.3.2.29" => "sha1WithRSASignature",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.10040.4.3" => "dsa-with-sha1",
        "2.16.840.1.101.3.4.3.2" => "dsa-with-sha256",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        _ => return s,
    };
    name.to_owned()
}

/// Bits of a big-endian unsigned integer (leading zero bytes and bits ignored).
pub fn uint_bits(bytes: &[u8]) -> u32 {
    let Some(i) = bytes.iter().position(|&b| b != 0) else {
        return 0;
    };
    let rest = (bytes.len() - i - 1) as u32;
    rest.saturating_mul(8)
        .saturating_add(8 - bytes[i].leading_zeros())
}

/// One DER TLV at the start of `buf`: (tag, content, rest). Definite lengths up to 4 bytes.
pub(crate) fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (h, content, rest) = super::asn1::read_tlv(buf, super::asn1::TagForm::OneByte).ok()?;
    Some((h.tag, content, rest))
}

/// RSA modulus bits from an RSAPublicKey (RFC 8017 A.1.1) in the subjectPublicKey BIT STRING.
fn rsa_modulus_bits(pk: &[u8]) -> Option<u32> {
    let (tag, seq, _) = der_tlv(pk)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, modulus, _) = der_tlv(seq)?;
    (tag == 0x02).then(|| uint_bits(modulus))
}

/// Decodes a DER certificate. `now_unix` is the reference time for expired / days_left.
///
/// `self_signed` is true when issuer equals subject and the signature verifies with the
/// certificate's own public key (OpenSSL); when the signature cannot be checked (an algorithm
/// OpenSSL does not take, or a structure it rejects) equal names decide, and `self_signed_basis`
/// says "names".
///
/// Connections to one server carry the same certificate: the facts that do not depend on
/// `now_unix` are remembered per certificate (keyed by the whole DER; bounded like the signature
/// cache), so a capture of thousands of connections parses, hashes and checks each certificate once.
pub fn cert_facts(der_bytes: &[u8], now_unix: i64) -> Result<CertFacts, X509Error> {
    let cacheable = der_bytes.len() <= VERIFIED_CACHE_MAX_DER;
    let cached = if cacheable {
        FACTS
            .lock()
            .ok()
            .and_then(|g| g.as_ref().and_then(|m| m.get(der_bytes).cloned()))
    } else {
        None
    };
    let (mut facts, nb, na) = match cached {
        Some(c) => c?,
        None => {
            let computed = cert_facts_at_any_time(der_bytes);
            if cacheable {
                if let Ok(mut g) = FACTS.lock() {
                    let m = g.get_or_insert_with(FactsCache::default);
                    if m.len() >= VERIFIED_CACHE_ENTRIES {
                        m.clear();
                    }
                    m.insert(der_bytes.to_vec(), computed.clone());
                }
            }
            computed?
        }
    };
    facts.expired = now_unix > na;
    facts.not_yet_valid = now_unix < nb;
    facts.days_left = (na - now_unix).div_euclid(86_400);
    Ok(facts)
}

/// The facts of a certificate with notBefore / notAfter (Unix seconds); the time-dependent fields
/// are left for [`cert_facts`] to fill.
type TimelessFacts = Result<(CertFacts, i64, i64), X509Error>;
type FactsCache = std::collections::HashMap<Vec<u8>, TimelessFacts, foldhash::fast::RandomState>;
static FACTS: std::sync::Mutex<Option<FactsCache>> = std::sync::Mutex::new(None);

fn cert_facts_at_any_time(der_bytes: &[u8]) -> TimelessFacts {
    let now_unix = 0;
    let cert = Certificate::from_der(der_bytes).map_err(|e| X509Error::Invalid(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let nb = tbs.validity.not_before.to_unix_duration().as_secs() as i64;
    let na = tbs.validity.not_after.to_unix_duration().as_secs() as i64;
    let spki = &tbs.subject_public_key_info;
    let pk = spki.subject_public_key.raw_bytes();
    // Any PKCS #1 OID counts as RSA: Microsoft's Terminal Server licensing certificates (the X.509
    // chain of standard RDP security) label their RSA key md5WithRSAEncryption.
    let pkcs1 = spki
        .algorithm
        .oid
        .to_string()
        .starts_with("1.2.840.113549.1.1.");
    let (key_type, key_bits) =
        if pkcs1 || spki.algorithm.oid == oid::RSA || spki.algorithm.oid == oid::RSA_PSS {
            ("RSA".to_owned(), rsa_modulus_bits(pk).unwrap_or(0))
        } else if spki.algorithm.oid == oid::EC {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
            match curve {
                Some(c) if c == oid::P256 => ("EC P-256".to_owned(), 256),
                Some(c) if c == oid::P384 => ("EC P-384".to_owned(), 384),
                Some(c) if c == oid::P521 => ("EC P-521".to_owned(), 521),
                Some(c) if c == oid::P224 => ("EC P-224".to_owned(), 224),
                Some(c) if c == oid::SECP256K1 => ("EC secp256k1".to_owned(), 256),
                Some(c) => (format!("EC {c}"), 0),
                None => ("EC".to_owned(), 0),
            }
        } else if spki.algorithm.oid == oid::ED25519 {
            ("Ed25519".to_owned(), 256)
        } else if spki.algorithm.oid == oid::ED448 {
            ("Ed448".to_owned(), 448)
        } else if spki.algorithm.oid == oid::DSA {
            ("DSA".to_owned(), 0)
        } else {
            (spki.algorithm.oid.to_string(), 0)
        };
    let names_equal = tbs.issuer == tbs.subject;
    let (self_signed, basis) = if !names_equal {
        (false, "")
    } else {
        match verify_own_signature(der_bytes) {
            Some(true) => (true, "signature"),
            Some(false) => (false, "signature"),
            None => (true, "names"),
        }
    };
    let dns_names = san_dns_names(&cert);
    Ok(CertFacts {
        subject: rfc4514(&tbs.subject),
        issuer: rfc4514(&tbs.issuer),
        not_before: rfc3339(nb),
        not_after: rfc3339(na),
        expired: now_unix > na,
        not_yet_valid: now_unix < nb,
        self_signed,
        self_signed_basis: basis.to_owned(),
        key_type,
        key_bits,
        signature_algorithm: signature_algorithm_name(&cert.signature_algorithm.oid),
        days_left: (na - now_unix).div_euclid(86_400),
        sha256: hex::encode(sha2::Sha256::digest(der_bytes)),
        dns_names,
    }
    .with_validity(nb, na))
}

impl CertFacts {
    fn with_validity(self, nb: i64, na: i64) -> (CertFacts, i64, i64) {
        (self, nb, na)
    }
}

/// Text of a directory string value by its DER tag (RFC 5280 DirectoryString and IA5String):
/// UTF8String, PrintableString, IA5String, TeletexString (as Latin-1), BMPString (UTF-16BE),
/// UniversalString (UTF-32BE). None for other types.
fn directory_string(tag: u8, v: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => Some(String::from_utf8_lossy(v).into_owned()),
        0x14 => Some(v.iter().map(|&c| char::from(c)).collect()),
        0x1e => {
            let u: Vec<u16> = v
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(String::from_utf16_lossy(&u))
        }
        0x1c => Some(
            v.chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or('\u{fffd}')
                })
                .collect(),
        ),
        _ => None,
    }
}

/// RFC 4514 2.4 escaping of an attribute value.
fn escape_rfc4514(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == n => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A Name as an RFC 4514 string: RDNs in reverse order, multi-valued RDNs joined with "+", the
/// usual short names (CN, L, ST, O, OU, C, STREET, DC, UID, plus serialNumber and emailAddress as
/// OpenSSL prints them), every string type decoded (x509-cert's Display prints BMPString values,
/// which Microsoft's licensing certificates use, as hex).
pub fn rfc4514(name: &x509_cert::name::Name) -> String {
    let mut rdns = Vec::new();
    for rdn in name.0.iter().rev() {
        let mut atvs = Vec::new();
        for atv in rdn.0.iter() {
            let key = match atv.oid.to_string().as_str() {
                "2.5.4.3" => "CN".to_owned(),
                "2.5.4.7" => "L".to_owned(),
                "2.5.4.8" => "ST".to_owned(),
                "2.5.4.10" => "O".to_owned(),
                "2.5.4.11" => "OU".to_owned(),
                "2.5.4.6" => "C".to_owned(),
                "2.5.4.9" => "STREET".to_owned(),
                "0.9.2342.19200300.100.1.25" => "DC".to_owned(),
                "0.9.2342.19200300.100.1.1" => "UID".to_owned(),
                "2.5.4.5" => "serialNumber".to_owned(),
                "1.2.840.113549.1.9.1" => "emailAddress".to_owned(),
                o => o.to_owned(),
            };
            let value = match directory_string(atv.value.tag().octet(), atv.value.value()) {
                Some(v) => escape_rfc4514(&v),
                None => format!("#{}", hex::encode(atv.value.to_der().unwrap_or_default())),
            };
            atvs.push(format!("{key}={value}"));
        }
        rdns.push(atvs.join("+"));
    }
    rdns.join(",")
}

/// Certificates whose self-signature check is remembered (a capture of thousands of connections
/// to one server shows the same certificate each time: one RSA verification, not thousands).
const VERIFIED_CACHE_ENTRIES: usize = 256;

/// Largest certificate remembered (the cache holds at most 256 x 16 KiB).
const VERIFIED_CACHE_MAX_DER: usize = 16 * 1024;

type VerifiedCache = std::collections::HashMap<Vec<u8>, Option<bool>, foldhash::fast::RandomState>;

static VERIFIED: std::sync::Mutex<Option<VerifiedCache>> = std::sync::Mutex::new(None);

/// Some(verifies) when OpenSSL can check the certificate's signature with its own key. A pure
/// function of the DER bytes, remembered per certificate (keyed by the whole DER, so a collision
/// is impossible); bounded: the cache is emptied when full.
fn verify_own_signature(der_bytes: &[u8]) -> Option<bool> {
    let cacheable = der_bytes.len() <= VERIFIED_CACHE_MAX_DER;
    if cacheable {
        if let Ok(guard) = VERIFIED.lock() {
            if let Some(v) = guard.as_ref().and_then(|m| m.get(der_bytes)) {
                return *v;
            }
        }
    }
    let verified = (|| {
        let x = openssl::x509::X509::from_der(der_bytes).ok()?;
        let key = x.public_key().ok()?;
        x.verify(&key).ok()
    })();
    if cacheable {
        if let Ok(mut guard) = VERIFIED.lock() {
            let m = guard.get_or_insert_with(VerifiedCache::default);
            if m.len() >= VERIFIED_CACHE_ENTRIES {
                m.clear();
            }
            m.insert(der_bytes.to_vec(), verified);
        }
    }
    verified
}

fn san_dns_names(cert: &Certificate) -> Vec<String> {
    use x509_cert::ext::pkix::{name::GeneralName, SubjectAltName};
    match cert.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|g| match g {
                GeneralName::DnsName(n) => Some(n.as_str().to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn san_ip_addresses(cert: &Certificate) -> Vec<Vec<u8>> {
    use x509_cert::ext::pkix::{name::GeneralName, SubjectAltName};
    match cert.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|g| match g {
                GeneralName::IpAddress(ip) => Some(ip.as_bytes().to_vec()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Common names of the subject (RFC 4519 cn), as text.
fn subject_common_names(cert: &Certificate) -> Vec<String> {
    let mut out = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == oid::CN {
                if let Some(v) = directory_string(atv.value.tag().octet(), atv.value.value()) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Whether a DNS reference identifier matches a presented name (RFC 6125 6.4): case-insensitive,
/// trailing dot ignored, a wildcard only as the whole left-most label, matching exactly one label.
fn dns_name_matches(pattern: &str, host: &str) -> bool {
    let p = pattern.trim_end_matches('.').to_ascii_lowercase();
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if p.is_empty() || h.is_empty() {
        return false;
    }
    if let Some(suffix) = p.strip_prefix("*.") {
        // The wildcard label must match exactly one non-empty label, and the rest must have at
        // least two labels (no "*.com").
        if !suffix.contains('.') {
            return false;
        }
        return match h.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == suffix,
            None => false,
        };
    }
    p == h
}

/// Whether the certificate is valid for `host` by name (RFC 6125): subjectAltName dNSName entries
/// (or iPAddress entries when `host` is an IP address) when the certificate has any, else the
/// subject CN. Wildcards match one left-most label. Does not check validity dates or trust.
pub fn check_name(der_bytes: &[u8], host: &str) -> bool {
    let Ok(cert) = Certificate::from_der(der_bytes) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        let want = match ip {
            std::net::IpAddr::V4(v) => v.octets().to_vec(),
            std::net::IpAddr::V6(v) => v.octets().to_vec(),
        };
        let ips = san_ip_addresses(&cert);
        if ips.contains(&want) {
            return true;
        }
        // Legacy certificates put the address in the CN; accept an exact textual match only.
        return san_dns_names(&cert).is_empty()
            && subject_common_names(&cert).iter().any(|cn| cn == host);
    }
    let dns = san_dns_names(&cert);
    if !dns.is_empty() {
        return dns.iter().any(|d| dns_name_matches(d, host));
    }
    subject_common_names(&cert)
        .iter()
        .any(|cn| dns_name_matches(cn, host))
}

/// The DER of `cert`'s SubjectPublicKeyInfo.subjectPublicKey bits (what CredSSP binds to), if the
/// certificate decodes.
pub fn subject_public_key(der_bytes: &[u8]) -> Option<Vec<u8>> {
    let cert = Certificate::from_der(der_bytes).ok()?;
    Some(
        cert.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec(),
    )
}

/// Re-encodes a certificate's subject name as DER (used to compare names across certificates).
pub fn subject_der(der_bytes: &[u8]) -> Option<Vec<u8>> {
    let cert = Certificate::from_der(der_bytes).ok()?;
    cert.tbs_certificate.subject.to_der().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn rcgen_cert(
        names: &[&str],
        cn: &str,
        nb: (i32, u8, u8),
        na: (i32, u8, u8),
    ) -> Vec<u8> {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "rdprobe test");
        p.not_before = rcgen::date_time_ymd(nb.0, nb.1, nb.2);
        p.not_after = rcgen::date_time_ymd(na.0, na.1, na.2);
        let kp = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&kp).unwrap().der().to_vec()
    }

    #[test]
    fn self_signature_checks_are_remembered_within_a_bound() {
        // rcgen's default key is ECDSA P-256: cheap to make many distinct certificates.
        let first = rcgen_cert(&["a.test"], "cache-0", (2020, 1, 1), (2040, 1, 1));
        assert_eq!(verify_own_signature(&first), Some(true));
        assert_eq!(verify_own_signature(&first), Some(true), "from the cache");
        let mut tampered = first.clone();
        let n = tampered.len();
        tampered[n - 3] ^= 0x55; // in the signature
        assert_ne!(
            verify_own_signature(&tampered),
            Some(true),
            "another DER, another answer"
        );
        for i in 0..VERIFIED_CACHE_ENTRIES + 10 {
            let c = rcgen_cert(
                &["a.test"],
                &format!("cache-{i}"),
                (2020, 1, 1),
                (2040, 1, 1),
            );
            assert_eq!(verify_own_signature(&c), Some(true));
            let held = VERIFIED.lock().unwrap().as_ref().map_or(0, |m| m.len());
            assert!(held <= VERIFIED_CACHE_ENTRIES, "{held} entries");
        }
    }

    /// An RSA-2048 certificate made by OpenSSL, self-signed or signed by a separate key.
    fn openssl_rsa_cert(cn: &str, issuer_cn: &str, self_sign: bool, nb: i64, na: i64) -> Vec<u8> {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let other = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let name = |cn: &str| {
            let mut n = x509::X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
            n.build()
        };
        let mut b = x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name(cn)).unwrap();
        b.set_issuer_name(&name(issuer_cn)).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(nb).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::from_unix(na).unwrap()).unwrap();
        b.sign(
            if self_sign { &key } else { &other },
            MessageDigest::sha256(),
        )
        .unwrap();
        b.build().to_der().unwrap()
    }

    /// 2024-01-01T00:00:00Z
    const T2024: i64 = 1_704_067_200;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(T2024), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        // FILETIME's last second, beyond RFC 3339's four-digit years, and a year before 0.
        assert_eq!(
            rfc3339((u64::MAX / 10_000_000) as i64 - 11_644_473_600),
            "60056-05-28T05:36:10Z"
        );
        assert_eq!(rfc3339(-62_167_219_201), "-001-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MAX), format!("out-of-range({})", i64::MAX));
    }

    #[test]
    fn cert_facts_of_a_self_signed_ec_certificate() {
        let der = rcgen_cert(
            &["rdp.example.com"],
            "rdp.example.com",
            (2020, 1, 1),
            (2030, 6, 1),
        );
        let c = cert_facts(&der, T2024).unwrap();
        assert_eq!(c.subject, "O=rdprobe test,CN=rdp.example.com");
        assert_eq!(c.issuer, c.subject);
        assert_eq!(
            (c.not_before.as_str(), c.not_after.as_str()),
            ("2020-01-01T00:00:00Z", "2030-06-01T00:00:00Z")
        );
        assert!(!c.expired && !c.not_yet_valid);
        assert!(c.self_signed);
        assert_eq!(c.self_signed_basis, "signature");
        assert_eq!((c.key_type.as_str(), c.key_bits), ("EC P-256", 256));
        assert_eq!(c.signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(c.days_left, 2343);
        assert_eq!(c.sha256, hex::encode(sha2::Sha256::digest(&der)));
        assert_eq!(c.sha256.len(), 64);
        assert_eq!(c.dns_names, vec!["rdp.example.com".to_owned()]);
        // the same certificate seen in 2035 and in 2019
        let later = cert_facts(&der, T2024 + 11 * 365 * 86_400).unwrap();
        assert!(later.expired && later.days_left < 0);
        // ...from the cache, which holds the time-independent facts.
        assert!(FACTS
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|m| m.contains_key(&der)));
        assert_eq!(
            CertFacts {
                expired: c.expired,
                days_left: c.days_left,
                ..later.clone()
            },
            c
        );
        assert!(
            cert_facts(&der, T2024 - 5 * 365 * 86_400)
                .unwrap()
                .not_yet_valid
        );
    }

    #[test]
    fn cert_facts_of_rsa_certificates() {
        // expired self-signed RSA-2048, as an xrdp test server has it
        let der = openssl_rsa_cert(
            "xrdp-expired",
            "xrdp-expired",
            true,
            T2024 - 400 * 86_400,
            T2024 - 30 * 86_400,
        );
        let c = cert_facts(&der, T2024).unwrap();
        assert_eq!((c.key_type.as_str(), c.key_bits), ("RSA", 2048));
        assert_eq!(c.signature_algorithm, "sha256WithRSAEncryption");
        assert!(c.expired && c.self_signed);
        assert_eq!(c.days_left, -30);
        assert_eq!(c.self_signed_basis, "signature");
        // names equal but signed by another key: not self-signed, and we say the signature decided
        let der = openssl_rsa_cert("same", "same", false, T2024 - 86_400, T2024 + 86_400);
        let c = cert_facts(&der, T2024).unwrap();
        assert!(!c.self_signed);
        assert_eq!(c.self_signed_basis, "signature");
        // different issuer
        let der = openssl_rsa_cert("leaf", "Some CA", false, T2024 - 86_400, T2024 + 86_400);
        let c = cert_facts(&der, T2024).unwrap();
        assert!(!c.self_signed);
        assert_eq!(c.self_signed_basis, "");
        assert_eq!(c.issuer, "CN=Some CA");
        assert!(cert_facts(&der[..100], T2024)
            .unwrap_err()
            .to_string()
            .starts_with("invalid certificate"));
    }

    #[test]
    fn rfc4514_decodes_bmpstring_and_escapes() {
        use openssl::{asn1::Asn1Type, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let key = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let mut n = x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("O", "Acme, Inc.").unwrap();
        // OpenSSL takes the raw BMPString octets (UTF-16BE)
        let bmp: Vec<u8> = "ncalrpc:SERVR"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        n.append_entry_by_text_with_type(
            "CN",
            std::str::from_utf8(&bmp).unwrap(),
            Asn1Type::BMPSTRING,
        )
        .unwrap();
        let n = n.build();
        let mut b = x509::X509Builder::new().unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::from_unix(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::from_unix(T2024).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha1()).unwrap();
        let der = b.build().to_der().unwrap();
        let c = cert_facts(&der, T2024 + 1).unwrap();
        assert_eq!(c.subject, "CN=ncalrpc:SERVR,O=Acme\\, Inc.");
        assert_eq!(c.signature_algorithm, "sha1WithRSAEncryption");
        assert!(c.expired);
        assert!(check_name(&der, "ncalrpc:servr"));
        assert_eq!(escape_rfc4514(" #a\nb "), "\\ #a\\0Ab\\ ");
    }

    #[test]
    fn check_name_san_cn_and_wildcards() {
        let der = rcgen_cert(
            &["rdp.example.com", "*.corp.example"],
            "ignored.example",
            (2020, 1, 1),
            (2030, 1, 1),
        );
        assert!(check_name(&der, "rdp.example.com"));
        assert!(check_name(&der, "RDP.Example.COM."));
        assert!(check_name(&der, "host1.corp.example"));
        assert!(
            !check_name(&der, "a.b.corp.example"),
            "a wildcard matches one label"
        );
        assert!(!check_name(&der, "corp.example"));
        assert!(
            !check_name(&der, "ignored.example"),
            "CN is not used when SAN has dNSNames"
        );
        assert!(!check_name(&der, "other.example.com"));
        // no SAN: the CN decides
        let der = openssl_rsa_cert(
            "win2012.corp.example",
            "win2012.corp.example",
            true,
            0,
            T2024,
        );
        assert!(check_name(&der, "win2012.corp.example"));
        assert!(!check_name(&der, "win2016.corp.example"));
        // IP address SAN
        let der = rcgen_cert(&["127.0.0.1"], "x", (2020, 1, 1), (2030, 1, 1));
        assert!(check_name(&der, "127.0.0.1"));
        assert!(!check_name(&der, "127.0.0.2"));
        assert!(!check_name(b"garbage", "x"));
        assert!(!dns_name_matches("*.com", "example.com"));
    }

    proptest! {
        #[test]
        fn uint_bits_counts_like_leading_zeros(n: u128, pad in 0usize..4) {
            let mut b = vec![0u8; pad];
            b.extend(n.to_be_bytes());
            prop_assert_eq!(uint_bits(&b), 128 - n.leading_zeros());
        }

        #[test]
        fn name_matching_never_panics_and_is_case_blind(p in "[a-zA-Z0-9*.]{0,20}", h in "[a-zA-Z0-9.]{0,20}") {
            prop_assert_eq!(
                dns_name_matches(&p, &h),
                dns_name_matches(&p.to_ascii_uppercase(), &h.to_ascii_lowercase())
            );
            prop_assert!(!check_name(p.as_bytes(), &h));
        }

        #[test]
        fn rfc4514_escapes_read_back(b in proptest::collection::vec(0u8..0x80, 0..24)) {
            let v: String = b.iter().map(|&c| char::from(c)).collect();
            // Unescaping the RFC 4514 form (backslash + char, or backslash + two hex digits)
            // gives the value back.
            let e = escape_rfc4514(&v);
            let mut out = String::new();
            let mut it = e.chars().peekable();
            while let Some(c) = it.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                let a = it.next().unwrap_or_default();
                match it.peek().copied().filter(|_| a.is_ascii_hexdigit()) {
                    Some(b) if b.is_ascii_hexdigit() && a.is_ascii_digit() => {
                        it.next();
                        let n = u32::from_str_radix(&format!("{a}{b}"), 16).unwrap_or(0);
                        out.push(char::from_u32(n).unwrap_or_default());
                    }
                    _ => out.push(a),
                }
            }
            prop_assert_eq!(out, v);
        }

        #[test]
        fn cert_der_mutations_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), now in any::<i64>()) {
            thread_local! {
                static DER: Vec<u8> = rcgen_cert(&["m.example"], "m", (2020, 1, 1), (2030, 1, 1));
            }
            let mut b = DER.with(|d| d.clone());
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            let _ = cert_facts(&b, now);
            let _ = check_name(&b, "m.example");
        }
    }
}
