//! The server certificate of the server security data (MS-RDPBCGR 2.2.1.4.3.1): a proprietary
//! certificate with an RSA1 key blob, or an X.509 chain whose last certificate is the server's.
//! One typed reader ([`ServerCertificate::parse`]) for the decoder's facts, and the RSA public key
//! ([`server_public_key`]) the standard-security client, enumeration and the fuzzer encrypt with.
//! Pure, never panics, no allocation from an untrusted length.
//!
//! The RSAPublicKey inside an X.509 certificate is read with `wire::asn1` rather than the `pkcs1`
//! crate: `pkcs1` is not a dependency, and it refuses non-minimal INTEGER encodings this reader has
//! always accepted (a change of the key facts on odd certificates).

use super::cursor::{le16, le32, WireError};
use num_bigint::BigUint;

/// Magic of an RSA_PUBLIC_KEY blob: "RSA1" (MS-RDPBCGR 2.2.1.4.3.1.1.1).
pub const RSA1_MAGIC: u32 = 0x3141_5352;
/// BB_RSA_KEY_BLOB (MS-RDPBCGR 2.2.1.4.3.1.1).
pub const BB_RSA_KEY_BLOB: u16 = 0x0006;
/// Largest modulus accepted, in bytes (16384-bit keys; real servers use 512-4096).
pub const MAX_MODULUS_LEN: usize = 2048;
/// Smallest modulus accepted, in bits: it must hold the 32-byte client random (real servers use 512
/// and up). A smaller, even or zero modulus is a hostile or broken certificate, not a key.
pub const MIN_MODULUS_BITS: u32 = 512;
/// Certificates nested in an X.509 chain are at most this many (real chains have 2-3).
pub const MAX_CHAIN: usize = 16;

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
            bits: super::x509::uint_bits(&modulus),
            modulus,
            exponent,
            source,
        })
    }
}

/// How the walk of an X.509 chain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    /// All NumCertBlobs entries were read.
    Complete,
    /// The data ended where an entry's cbCert was due (at this offset).
    MissingLength { at: usize },
    /// An entry's cbCert (at this offset) runs past the data.
    EntryOverrun { at: usize },
}

/// The public key blob of a proprietary certificate (BB_RSA_KEY_BLOB, MS-RDPBCGR 2.2.1.4.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProprietaryCert<'a> {
    pub blob_type: Option<u16>,
    pub blob_len: Option<u16>,
    /// The PublicKeyBlob, when all `blob_len` bytes are there.
    pub blob: Option<&'a [u8]>,
}

impl<'a> ProprietaryCert<'a> {
    /// The RSA_PUBLIC_KEY blob (magic "RSA1") when the blob is one: the blob bytes.
    pub fn rsa1_blob(&self) -> Option<&'a [u8]> {
        self.blob
            .filter(|b| self.blob_type == Some(BB_RSA_KEY_BLOB) && le32(b, 0) == Some(RSA1_MAGIC))
    }
}

/// A server certificate, typed (MS-RDPBCGR 2.2.1.4.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCertificate<'a> {
    /// dwVersion 1.
    Proprietary {
        temporary: bool,
        cert: ProprietaryCert<'a>,
    },
    /// dwVersion 2: the DER certificates of the chain read before `end` (the server's is last).
    X509 {
        temporary: bool,
        declared: Option<u32>,
        chain: Vec<&'a [u8]>,
        end: ChainEnd,
    },
    /// Another dwVersion (without the temporary bit).
    Unknown { temporary: bool, version: u32 },
}

impl<'a> ServerCertificate<'a> {
    /// Types a serverCertificate; fails only when it is shorter than dwVersion.
    pub fn parse(cert: &'a [u8]) -> Result<ServerCertificate<'a>, WireError> {
        let ver = le32(cert, 0).ok_or(WireError::truncated(cert.len(), 4 - cert.len().min(4)))?;
        let temporary = ver & 0x8000_0000 != 0;
        Ok(match ver & 0x7fff_ffff {
            1 => {
                // dwVersion dwSigAlgId dwKeyAlgId wPublicKeyBlobType wPublicKeyBlobLen PublicKeyBlob
                let blob_len = le16(cert, 14);
                ServerCertificate::Proprietary {
                    temporary,
                    cert: ProprietaryCert {
                        blob_type: le16(cert, 12),
                        blob_len,
                        blob: blob_len.and_then(|l| cert.get(16..16 + usize::from(l))),
                    },
                }
            }
            2 => {
                let declared = le32(cert, 4);
                let mut pos = 8usize;
                let mut chain = Vec::new();
                let mut end = ChainEnd::Complete;
                // Each entry consumes at least 4 bytes: the chain is bounded by the data.
                for _ in 0..declared.unwrap_or(0) {
                    let Some(len) = le32(cert, pos).map(|l| l as usize) else {
                        end = ChainEnd::MissingLength { at: pos };
                        break;
                    };
                    let Some(c) = pos
                        .checked_add(4)
                        .zip(pos.checked_add(4).and_then(|a| a.checked_add(len)))
                        .and_then(|(a, b)| cert.get(a..b))
                    else {
                        end = ChainEnd::EntryOverrun { at: pos };
                        break;
                    };
                    chain.push(c);
                    pos += 4 + len;
                }
                ServerCertificate::X509 {
                    temporary,
                    declared,
                    chain,
                    end,
                }
            }
            version => ServerCertificate::Unknown { temporary, version },
        })
    }
}

/// Reads the RSA key of a server certificate: a proprietary certificate (dwVersion 1,
/// 2.2.1.4.3.1.1: modulus and exponent little-endian in an RSA1 blob) or an X.509 chain
/// (dwVersion 2: the last certificate of the chain is the server's).
pub fn server_public_key(cert: &[u8]) -> Result<RsaKey, CertError> {
    match ServerCertificate::parse(cert).map_err(|_| CertError::Short("dwVersion"))? {
        ServerCertificate::Proprietary { cert, .. } => proprietary_key(&cert),
        ServerCertificate::X509 {
            declared,
            chain,
            end,
            ..
        } => {
            let count = declared.ok_or(CertError::Short("NumCertBlobs"))? as usize;
            if count == 0 || count > MAX_CHAIN || end != ChainEnd::Complete {
                return Err(CertError::BadChain);
            }
            x509_rsa_key(chain.last().ok_or(CertError::BadChain)?)
        }
        ServerCertificate::Unknown { version, .. } => Err(CertError::Version(version)),
    }
}

fn proprietary_key(cert: &ProprietaryCert<'_>) -> Result<RsaKey, CertError> {
    cert.blob_type
        .ok_or(CertError::Short("wPublicKeyBlobType"))?;
    cert.blob_len.ok_or(CertError::Short("wPublicKeyBlobLen"))?;
    cert.blob.ok_or(CertError::Short("public key blob"))?;
    let blob = cert.rsa1_blob().ok_or(CertError::NoRsaBlob)?;
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
    let (tag, seq, _) =
        super::x509::der_tlv(pk).ok_or(CertError::NotRsa("rsa key unreadable".into()))?;
    let (t1, n, rest) =
        super::x509::der_tlv(seq).ok_or(CertError::NotRsa("modulus unreadable".into()))?;
    let (t2, e, _) =
        super::x509::der_tlv(rest).ok_or(CertError::NotRsa("exponent unreadable".into()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn x509_chain(temporary: bool, chain: &[Vec<u8>]) -> Vec<u8> {
        let ver = 2u32 | if temporary { 0x8000_0000 } else { 0 };
        let mut c = ver.to_le_bytes().to_vec();
        c.extend_from_slice(&(chain.len() as u32).to_le_bytes());
        for d in chain {
            c.extend_from_slice(&(d.len() as u32).to_le_bytes());
            c.extend_from_slice(d);
        }
        c
    }

    proptest! {
        #[test]
        fn x509_chains_round_trip(
            temporary: bool,
            chain in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..5),
        ) {
            let bytes = x509_chain(temporary, &chain);
            let want: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(
                ServerCertificate::parse(&bytes).unwrap(),
                ServerCertificate::X509 {
                    temporary,
                    declared: Some(chain.len() as u32),
                    chain: want,
                    end: ChainEnd::Complete,
                }
            );
            // Cut anywhere inside an entry: the walk says where it stopped.
            if let Some(last) = chain.last().filter(|l| !l.is_empty()) {
                let cut = &bytes[..bytes.len() - 1];
                let at = bytes.len() - last.len() - 4;
                match ServerCertificate::parse(cut).unwrap() {
                    ServerCertificate::X509 { end, chain: got, .. } => {
                        prop_assert_eq!(end, ChainEnd::EntryOverrun { at });
                        prop_assert_eq!(got.len(), chain.len() - 1);
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }

        #[test]
        fn server_certificates_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            match ServerCertificate::parse(&data) {
                Err(e) => prop_assert!(data.len() < 4 && e.is_truncated()),
                Ok(ServerCertificate::X509 { chain, .. }) if !chain.is_empty() => {
                    prop_assert!(chain.iter().map(|c| c.len() + 4).sum::<usize>() + 8 <= data.len());
                }
                Ok(_) => {}
            }
            let _ = server_public_key(&data);
        }
    }
}
