//! The server's public key from the server security data (MS-RDPBCGR 2.2.1.4.3.1) and the RSA
//! encryption of the client random (MS-RDPBCGR 5.3.4.1). Pure, never panics.

use crate::wire::cursor::{le16, le32};
use num_bigint::BigUint;

/// Magic of an RSA_PUBLIC_KEY blob: "RSA1" (MS-RDPBCGR 2.2.1.4.3.1.1.1).
const RSA1_MAGIC: u32 = 0x3141_5352;
/// BB_RSA_KEY_BLOB (MS-RDPBCGR 2.2.1.4.3.1.1).
const BB_RSA_KEY_BLOB: u16 = 0x0006;
/// Largest modulus accepted, in bytes (16384-bit keys; real servers use 512-4096).
pub const MAX_MODULUS_LEN: usize = 2048;
/// Smallest modulus accepted, in bits: it must hold the 32-byte client random (real servers use 512
/// and up). A smaller, even or zero modulus is a hostile or broken certificate, not a key.
pub const MIN_MODULUS_BITS: u32 = 512;
/// Certificates nested in an X.509 chain are at most this many (real chains have 2-3).
const MAX_CHAIN: usize = 16;

/// An RSA public key in host form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaKey {
    /// Big-endian modulus without leading zeros.
    pub modulus: Vec<u8>,
    pub exponent: u32,
    /// Bits of the modulus.
    pub bits: u32,
    /// Where the key came from: "proprietary" or "x509".
    pub source: &'static str,
}

impl RsaKey {
    /// Length of the modulus in bytes.
    pub fn modulus_len(&self) -> usize {
        (self.bits as usize).div_ceil(8)
    }
}

/// Why a server certificate gave no usable key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("server certificate shorter than its {0}")]
    Short(&'static str),
    #[error("proprietary certificate has no RSA1 key blob")]
    NoRsaBlob,
    #[error("rsa modulus of {0} bytes out of range")]
    ModulusLen(usize),
    #[error("x509 chain is empty or unreadable")]
    BadChain,
    #[error("x509 certificate without an rsa key: {0}")]
    NotRsa(String),
    #[error("unknown server certificate version {0}")]
    Version(u32),
    #[error("unusable rsa key: {0}")]
    Unusable(&'static str),
}

impl RsaKey {
    /// A key from its big-endian modulus and exponent, refused when no RSA key could be like it:
    /// a zero, even or short modulus (a zero modulus would divide by zero in the exponentiation),
    /// an exponent below 3 or even.
    fn checked(modulus: &[u8], exponent: u32, source: &'static str) -> Result<RsaKey, CertError> {
        let modulus = BigUint::from_bytes_be(modulus);
        if modulus.bits() == 0 {
            return Err(CertError::Unusable("zero modulus"));
        }
        if modulus.bits() < u64::from(MIN_MODULUS_BITS) {
            return Err(CertError::Unusable("modulus under 512 bits"));
        }
        if !modulus.bit(0) {
            return Err(CertError::Unusable("even modulus"));
        }
        if exponent < 3 || exponent.is_multiple_of(2) {
            return Err(CertError::Unusable("public exponent below 3 or even"));
        }
        let modulus = modulus.to_bytes_be();
        Ok(RsaKey {
            bits: bits_of(&modulus),
            modulus,
            exponent,
            source,
        })
    }
}

/// Reads the RSA key of a server certificate: a proprietary certificate (dwVersion 1,
/// 2.2.1.4.3.1.1: modulus and exponent little-endian in an RSA1 blob) or an X.509 chain
/// (dwVersion 2: the last certificate of the chain is the server's).
pub fn server_public_key(cert: &[u8]) -> Result<RsaKey, CertError> {
    let ver = le32(cert, 0).ok_or(CertError::Short("dwVersion"))?;
    match ver & 0x7fff_ffff {
        1 => proprietary_key(cert),
        2 => x509_chain_key(cert),
        v => Err(CertError::Version(v)),
    }
}

fn proprietary_key(cert: &[u8]) -> Result<RsaKey, CertError> {
    // dwVersion dwSigAlgId dwKeyAlgId wPublicKeyBlobType wPublicKeyBlobLen PublicKeyBlob
    let blob_type = le16(cert, 12).ok_or(CertError::Short("wPublicKeyBlobType"))?;
    let blob_len = usize::from(le16(cert, 14).ok_or(CertError::Short("wPublicKeyBlobLen"))?);
    let blob = cert
        .get(16..16 + blob_len)
        .ok_or(CertError::Short("public key blob"))?;
    if blob_type != BB_RSA_KEY_BLOB || le32(blob, 0) != Some(RSA1_MAGIC) {
        return Err(CertError::NoRsaBlob);
    }
    // magic keylen bitlen datalen pubExp modulus(keylen)
    let keylen = le32(blob, 4).ok_or(CertError::Short("keylen"))? as usize;
    let exponent = le32(blob, 16).ok_or(CertError::Short("pubExp"))?;
    if keylen == 0 || keylen > MAX_MODULUS_LEN {
        return Err(CertError::ModulusLen(keylen));
    }
    let modulus_le = blob
        .get(20..20 + keylen)
        .ok_or(CertError::Short("modulus"))?;
    let modulus = BigUint::from_bytes_le(modulus_le).to_bytes_be();
    RsaKey::checked(&modulus, exponent, "proprietary")
}

fn bits_of(be: &[u8]) -> u32 {
    match be.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => ((be.len() - i - 1) * 8) as u32 + (8 - be[i].leading_zeros()),
    }
}

fn x509_chain_key(cert: &[u8]) -> Result<RsaKey, CertError> {
    let count = le32(cert, 4).ok_or(CertError::Short("NumCertBlobs"))? as usize;
    if count == 0 || count > MAX_CHAIN {
        return Err(CertError::BadChain);
    }
    let mut pos = 8usize;
    let mut last = None;
    for _ in 0..count {
        let len = le32(cert, pos).ok_or(CertError::BadChain)? as usize;
        let body = pos
            .checked_add(4)
            .zip(pos.checked_add(4).and_then(|a| a.checked_add(len)))
            .and_then(|(a, b)| cert.get(a..b))
            .ok_or(CertError::BadChain)?;
        last = Some(body);
        pos += 4 + len;
    }
    let leaf = last.ok_or(CertError::BadChain)?;
    x509_rsa_key(leaf)
}

/// The RSA key of a DER X.509 certificate (any PKCS #1 algorithm OID: Microsoft's licensing
/// certificates label their key md5WithRSAEncryption).
pub fn x509_rsa_key(der: &[u8]) -> Result<RsaKey, CertError> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(der).map_err(|e| CertError::NotRsa(e.to_string()))?;
    let spki = &c.tbs_certificate.subject_public_key_info;
    if !spki
        .algorithm
        .oid
        .to_string()
        .starts_with("1.2.840.113549.1.1.")
    {
        return Err(CertError::NotRsa(spki.algorithm.oid.to_string()));
    }
    let pk = spki.subject_public_key.raw_bytes();
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let (tag, seq, _) = der_tlv(pk).ok_or(CertError::NotRsa("rsa key unreadable".into()))?;
    let (t1, n, rest) = der_tlv(seq).ok_or(CertError::NotRsa("modulus unreadable".into()))?;
    let (t2, e, _) = der_tlv(rest).ok_or(CertError::NotRsa("exponent unreadable".into()))?;
    if tag != 0x30 || t1 != 0x02 || t2 != 0x02 || e.len() > 4 || e.is_empty() {
        return Err(CertError::NotRsa("not an RSAPublicKey".into()));
    }
    let modulus = BigUint::from_bytes_be(n).to_bytes_be();
    if modulus.len() > MAX_MODULUS_LEN {
        return Err(CertError::ModulusLen(modulus.len()));
    }
    let exponent = e.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b));
    RsaKey::checked(&modulus, exponent, "x509")
}

fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (h, content, rest) =
        crate::wire::asn1::read_tlv(buf, crate::wire::asn1::TagForm::OneByte).ok()?;
    Some((h.tag, content, rest))
}

/// Encrypts the client random for the Security Exchange PDU (MS-RDPBCGR 5.3.4.1): the random
/// is read as a little-endian integer, raised to the public exponent modulo the modulus (no
/// padding scheme), written little-endian in modulus-length bytes, followed by 8 zero bytes.
pub fn encrypt_client_random(key: &RsaKey, client_random: &[u8]) -> Vec<u8> {
    let n = BigUint::from_bytes_be(&key.modulus);
    if n.bits() < 2 {
        // INVARIANT: never reached through server_public_key (it refuses such keys); modpow
        // panics on a zero modulus, so a hand-made key gets zeros instead.
        return vec![0; key.modulus_len() + 8];
    }
    let m = BigUint::from_bytes_le(client_random);
    // INVARIANT: keys come from `RsaKey::checked`; a hand-made zero modulus still must not panic
    // (`modpow` divides by it).
    let c = if n.bits() == 0 {
        BigUint::default()
    } else {
        m.modpow(&BigUint::from(key.exponent), &n)
    };
    let mut out = c.to_bytes_le();
    out.truncate(key.modulus_len());
    out.resize(key.modulus_len() + 8, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proprietary certificate with the given little-endian modulus and exponent.
    pub(crate) fn proprietary(modulus_le: &[u8], exp: u32) -> Vec<u8> {
        let keylen = modulus_le.len() + 8;
        let mut blob = Vec::new();
        blob.extend_from_slice(&RSA1_MAGIC.to_le_bytes());
        blob.extend_from_slice(&(keylen as u32).to_le_bytes());
        blob.extend_from_slice(&((modulus_le.len() * 8) as u32).to_le_bytes());
        blob.extend_from_slice(&((modulus_le.len() - 1) as u32).to_le_bytes());
        blob.extend_from_slice(&exp.to_le_bytes());
        blob.extend_from_slice(modulus_le);
        blob.extend_from_slice(&[0; 8]);
        let mut c = Vec::new();
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&1u32.to_le_bytes());
        c.extend_from_slice(&BB_RSA_KEY_BLOB.to_le_bytes());
        c.extend_from_slice(&(blob.len() as u16).to_le_bytes());
        c.extend_from_slice(&blob);
        c.extend_from_slice(&0x0008u16.to_le_bytes());
        c.extend_from_slice(&72u16.to_le_bytes());
        c.extend_from_slice(&[0; 72]);
        c
    }

    #[test]
    fn rsa_round_trip_with_an_openssl_key() {
        let rsa = openssl::rsa::Rsa::generate(512).unwrap();
        let n = rsa.n().to_vec();
        let mut n_le = n.clone();
        n_le.reverse();
        let key = server_public_key(&proprietary(&n_le, 65537)).unwrap();
        assert_eq!(key.bits, 512);
        assert_eq!(key.exponent, 65537);
        assert_eq!(key.modulus, n);
        let random: Vec<u8> = (1..=32).collect();
        let enc = encrypt_client_random(&key, &random);
        assert_eq!(enc.len(), 64 + 8);
        assert_eq!(&enc[64..], &[0; 8]);
        // Decrypt with the private exponent: c^d mod n, little-endian, must give the random back.
        let d = BigUint::from_bytes_be(&rsa.d().to_vec());
        let c = BigUint::from_bytes_le(&enc[..64]);
        let m = c.modpow(&d, &BigUint::from_bytes_be(&n));
        let mut back = m.to_bytes_le();
        back.resize(32, 0);
        assert_eq!(back, random);
    }

    #[test]
    fn x509_chain_key_is_the_last_certificate() {
        let rsa = openssl::rsa::Rsa::generate(1024).unwrap();
        let pkey = openssl::pkey::PKey::from_rsa(rsa.clone()).unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(7)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "rdp-test").unwrap();
        let name = name.build();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.set_pubkey(&pkey).unwrap();
        b.sign(&pkey, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let der = b.build().to_der().unwrap();
        let mut c = Vec::new();
        c.extend_from_slice(&2u32.to_le_bytes());
        c.extend_from_slice(&2u32.to_le_bytes());
        for d in [&b"not a certificate"[..], &der[..]] {
            c.extend_from_slice(&(d.len() as u32).to_le_bytes());
            c.extend_from_slice(d);
        }
        let key = server_public_key(&c).unwrap();
        assert_eq!(key.source, "x509");
        assert_eq!(key.bits, 1024);
        assert_eq!(key.modulus, rsa.n().to_vec());
    }

    #[test]
    fn hostile_certificates_are_errors() {
        assert_eq!(server_public_key(&[]), Err(CertError::Short("dwVersion")));
        assert_eq!(server_public_key(&[3, 0, 0, 0]), Err(CertError::Version(3)));
        assert!(server_public_key(&[1, 0, 0, 0, 1, 0, 0, 0]).is_err());
        let mut c = vec![2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        c.extend_from_slice(&[0; 16]);
        assert_eq!(server_public_key(&c), Err(CertError::BadChain));
        let mut c = vec![2, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f];
        c.extend_from_slice(&[0; 16]);
        assert_eq!(server_public_key(&c), Err(CertError::BadChain));
        for len in 0..200 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 31 + 1) as u8).collect();
            let _ = server_public_key(&junk);
        }
    }

    #[test]
    fn impossible_rsa_keys_are_refused() {
        let odd = |n: usize| {
            let mut m = vec![0xA5u8; n];
            m[0] |= 1; // little-endian: the low byte first
            m
        };
        assert_eq!(
            server_public_key(&proprietary(&[0; 64], 65537)),
            Err(CertError::Unusable("zero modulus"))
        );
        let mut even = odd(64);
        even[0] &= 0xFE;
        assert_eq!(
            server_public_key(&proprietary(&even, 65537)),
            Err(CertError::Unusable("even modulus"))
        );
        assert_eq!(
            server_public_key(&proprietary(&odd(16), 65537)),
            Err(CertError::Unusable("modulus under 512 bits"))
        );
        for e in [0, 1, 2, 65536] {
            assert_eq!(
                server_public_key(&proprietary(&odd(64), e)),
                Err(CertError::Unusable("public exponent below 3 or even"))
            );
        }
        let key = server_public_key(&proprietary(&odd(64), 65537)).unwrap();
        assert_eq!(encrypt_client_random(&key, &[7; 32]).len(), 64 + 8);
        // A key made by hand around the parser still does not panic.
        let zero = RsaKey {
            modulus: vec![0; 64],
            exponent: 65537,
            bits: 512,
            source: "test",
        };
        assert_eq!(encrypt_client_random(&zero, &[7; 32]), vec![0; 72]);
    }

    /// Issue 12: a proprietary certificate with an all-zero modulus (or one, even, tiny, or an
    /// exponent of 0 or 1) is a typed error, not a division by zero in the RSA encryption.
    #[test]
    fn degenerate_rsa_keys_are_errors() {
        let mut good = vec![0xffu8; 64];
        good[63] = 0xc1;
        for (modulus, exp) in [
            (vec![0u8; 64], 65537),
            (vec![0u8; 7], 3),
            (
                {
                    let mut m = vec![0u8; 64];
                    m[0] = 1;
                    m
                },
                65537,
            ),
            (
                {
                    let mut m = good.clone();
                    m[0] = 0xfe;
                    m
                },
                65537,
            ),
            (vec![0xffu8; 8], 65537),
            (good.clone(), 0),
            (good.clone(), 1),
        ] {
            let cert = proprietary(&modulus, exp);
            assert!(
                matches!(server_public_key(&cert), Err(CertError::Unusable(_))),
                "{modulus:02x?} e={exp}: {:?}",
                server_public_key(&cert)
            );
        }
        let key = server_public_key(&proprietary(&good, 65537)).unwrap();
        assert_eq!(encrypt_client_random(&key, &[1; 32]).len(), 72);
        let zero = RsaKey {
            modulus: vec![0],
            exponent: 3,
            bits: 0,
            source: "proprietary",
        };
        assert_eq!(encrypt_client_random(&zero, &[1; 32]), vec![0; 8]);
    }
}
