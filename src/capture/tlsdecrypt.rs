//! TLS record decryption for captured RDP conversations (offline, from logged secrets).
//!
//! Secrets come from an SSLKEYLOGFILE text or a pcapng Decryption Secrets Block ([`KeyLog`]), or,
//! for static-RSA key exchange (`TLS_RSA_WITH_*`, common on Windows 7 / 2008 R2 era servers), from
//! the server's RSA private key: the premaster secret in the ClientKeyExchange is decrypted
//! (PKCS#1 v1.5, RFC 5246 7.4.7.1) and the master secret derived (RFC 5246 8.1, or RFC 7627's
//! extended master secret from the handshake transcript).
//! TLS 1.0–1.2 (RFC 2246, 4346, 5246): `CLIENT_RANDOM` master secret, key expansion with the TLS 1.0
//! PRF (MD5 ⊕ SHA-1) or the TLS 1.2 PRF (SHA-256 / SHA-384); AES-128/256-GCM (RFC 5288),
//! ChaCha20-Poly1305 (RFC 7905), AES-CBC with HMAC-SHA1/SHA256/SHA384 (implicit IV chaining in
//! TLS 1.0, explicit IV from 1.1; encrypt-then-MAC, RFC 7366). TLS 1.3 (RFC 8446 section 7):
//! handshake and application traffic secrets, HKDF-Expand-Label, AES-GCM, ChaCha20-Poly1305,
//! KeyUpdate. Handshake messages are parsed only for what rdprobe reports (randoms, version, cipher
//! suite, certificate chain). MS-RDPBCGR 5.4.5 describes TLS inside RDP.
//!
//! Everything here is pure: bytes in, [`TlsOutput`]s out; nothing panics on any input.
//!
//! INVARIANT: after a gap or a decryption failure in a direction, that direction is never decrypted
//! again (record boundaries and sequence numbers are lost), so no plaintext is ever guessed.

use std::collections::HashMap;

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, KeyInit as _};
use aes_gcm::aead::{Aead, Payload};
use hmac::{Hmac, Mac};

use crate::trace::{Dir, TlsSessionInfo};

/// Largest TLS record fragment accepted (the record rule's bound, [`crate::wire::tls`]).
pub const MAX_RECORD_LEN: usize = crate::wire::tls::MAX_FRAGMENT_LEN;
/// Largest handshake bytes buffered for parsing (certificate chains), bytes.
const MAX_HANDSHAKE_BUF: usize = MAX_HANDSHAKE_MESSAGE_LEN;
/// The ServerHello random of a TLS 1.3 HelloRetryRequest (RFC 8446 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

use crate::wire::tls::{
    HandshakeHeader, RecordHeader, CT_ALERT, CT_APPLICATION_DATA as CT_APPDATA,
    CT_CHANGE_CIPHER_SPEC as CT_CCS, CT_HANDSHAKE, MAX_HANDSHAKE_MESSAGE_LEN,
};

// ------------------------------------------------------------------------------------------------
// Key log

/// TLS secrets by ClientHello random, parsed from SSLKEYLOGFILE text (NSS key log format) or from
/// pcapng Decryption Secrets Blocks.
#[derive(Clone, Debug, Default)]
pub struct KeyLog {
    entries: HashMap<[u8; 32], Vec<(String, Vec<u8>)>>,
    /// Server RSA private keys, for static-RSA key exchange.
    rsa_keys: Vec<openssl::pkey::PKey<openssl::pkey::Private>>,
}

/// Why an RSA private key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RsaKeyError {
    #[error("no private key in the file (PEM or DER, PKCS#1 or PKCS#8): {0}")]
    Unreadable(String),
    #[error("the private key is not an RSA key")]
    NotRsa,
}

/// Labels rdprobe uses (others are kept and passed on, not used).
const LABELS: &[&str] = &[
    "CLIENT_RANDOM",
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
    "CLIENT_EARLY_TRAFFIC_SECRET",
    "EARLY_EXPORTER_SECRET",
];

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

impl KeyLog {
    /// Parses NSS key log text; comment and malformed lines are skipped.
    pub fn parse(text: &str) -> KeyLog {
        let mut k = KeyLog::default();
        for line in text.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(label), Some(cr), Some(secret)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if label.starts_with('#') || !LABELS.contains(&label) {
                continue;
            }
            let (Some(cr), Some(secret)) = (decode_hex(cr), decode_hex(secret)) else {
                continue;
            };
            let Ok(cr) = <[u8; 32]>::try_from(cr.as_slice()) else {
                continue;
            };
            k.insert(cr, label, secret);
        }
        k
    }

    fn insert(&mut self, cr: [u8; 32], label: &str, secret: Vec<u8>) {
        let v = self.entries.entry(cr).or_default();
        if let Some(e) = v.iter_mut().find(|(l, _)| l == label) {
            e.1 = secret;
        } else {
            v.push((label.to_string(), secret));
        }
    }

    /// Adds every secret of `other` (its entries win on conflict).
    pub fn merge(&mut self, other: KeyLog) {
        for (cr, v) in other.entries {
            for (label, secret) in v {
                self.insert(cr, &label, secret);
            }
        }
        self.rsa_keys.extend(other.rsa_keys);
    }

    /// Adds a server RSA private key (PEM — text before the `-----BEGIN` line, such as PKCS#12
    /// "Bag Attributes", is ignored — or DER; PKCS#1 or PKCS#8).
    pub fn add_rsa_key(&mut self, key: &[u8]) -> Result<(), RsaKeyError> {
        use openssl::pkey::PKey;
        let k = PKey::private_key_from_pem(key)
            .or_else(|_| PKey::private_key_from_der(key))
            .map_err(|e| RsaKeyError::Unreadable(e.to_string()))?;
        if k.rsa().is_err() {
            return Err(RsaKeyError::NotRsa);
        }
        self.rsa_keys.push(k);
        Ok(())
    }

    /// The 48-byte premaster secret in an RSA-encrypted ClientKeyExchange, by any known key.
    fn rsa_premaster(&self, encrypted: &[u8]) -> Option<Vec<u8>> {
        self.rsa_keys.iter().find_map(|k| {
            let rsa = k.rsa().ok()?;
            let mut buf = vec![0u8; rsa.size() as usize];
            let n = rsa
                .private_decrypt(encrypted, &mut buf, openssl::rsa::Padding::PKCS1)
                .ok()?;
            // PreMasterSecret: client_version (2) + random (46) (RFC 5246 7.4.7.1).
            (n == 48 && buf[0] == 3).then(|| buf[..48].to_vec())
        })
    }

    /// Number of ClientHello randoms with secrets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No secrets at all (neither logged secrets nor RSA keys).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.rsa_keys.is_empty()
    }

    /// The secret logged under `label` for `client_random`.
    pub fn secret(&self, client_random: &[u8; 32], label: &str) -> Option<&[u8]> {
        self.entries
            .get(client_random)?
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, s)| s.as_slice())
    }

    /// Every session's key log lines, at most `max` (for a Trace that carries several sessions).
    pub fn all_lines(&self, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for cr in self.entries.keys() {
            if out.len() >= max {
                break;
            }
            out.extend(self.lines_for(cr));
        }
        out.truncate(max);
        out
    }

    /// The key log lines of one session (for `Trace::keylog`).
    pub fn lines_for(&self, client_random: &[u8; 32]) -> Vec<String> {
        self.entries
            .get(client_random)
            .map(|v| {
                v.iter()
                    .map(|(l, s)| format!("{l} {} {}", hex::encode(client_random), hex::encode(s)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------------------------
// Primitives

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Md5,
    Sha1,
    Sha256,
    Sha384,
}

impl Hash {
    fn len(self) -> usize {
        match self {
            Hash::Md5 => 16,
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        macro_rules! run {
            ($d:ty) => {{
                // INVARIANT: HMAC accepts keys of any length, so new_from_slice cannot fail.
                let Ok(mut m) = <Hmac<$d> as Mac>::new_from_slice(key) else {
                    return Vec::new();
                };
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            Hash::Md5 => run!(md5::Md5),
            Hash::Sha1 => run!(sha1::Sha1),
            Hash::Sha256 => run!(sha2::Sha256),
            Hash::Sha384 => run!(sha2::Sha384),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hash::Md5 => md5::Md5::digest(data).to_vec(),
            Hash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
        }
    }

    /// P_hash (RFC 5246 section 5).
    fn p_hash(self, secret: &[u8], label_seed: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 48);
        let mut a = self.hmac(secret, &[label_seed]);
        while out.len() < len {
            out.extend_from_slice(&self.hmac(secret, &[&a, label_seed]));
            a = self.hmac(secret, &[&a]);
        }
        out.truncate(len);
        out
    }
}

/// The TLS PRF: `None` hash means TLS 1.0/1.1 (MD5 ⊕ SHA-1, RFC 2246 section 5).
fn prf(hash: Option<Hash>, secret: &[u8], label: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let ls = [label, seed].concat();
    match hash {
        Some(h) => h.p_hash(secret, &ls, len),
        None => {
            let half = secret.len().div_ceil(2);
            let s1 = &secret[..half];
            let s2 = &secret[secret.len() - half..];
            let a = Hash::Md5.p_hash(s1, &ls, len);
            let b = Hash::Sha1.p_hash(s2, &ls, len);
            a.iter().zip(b.iter()).map(|(x, y)| x ^ y).collect()
        }
    }
}

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context.
fn hkdf_expand_label(hash: Hash, secret: &[u8], label: &str, len: usize) -> Option<Vec<u8>> {
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    let mut okm = vec![0u8; len];
    match hash {
        Hash::Sha256 => hkdf::Hkdf::<sha2::Sha256>::from_prk(secret)
            .ok()?
            .expand(&info, &mut okm)
            .ok()?,
        Hash::Sha384 => hkdf::Hkdf::<sha2::Sha384>::from_prk(secret)
            .ok()?
            .expand(&info, &mut okm)
            .ok()?,
        _ => return None,
    }
    Some(okm)
}

// ------------------------------------------------------------------------------------------------
// Cipher suites

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bulk {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha,
    Aes128Cbc(Hash),
    Aes256Cbc(Hash),
}

impl Bulk {
    fn key_len(self) -> usize {
        match self {
            Bulk::Aes128Gcm | Bulk::Aes128Cbc(_) => 16,
            Bulk::Aes256Gcm | Bulk::Aes256Cbc(_) | Bulk::ChaCha => 32,
        }
    }
    fn mac(self) -> Option<Hash> {
        match self {
            Bulk::Aes128Cbc(h) | Bulk::Aes256Cbc(h) => Some(h),
            _ => None,
        }
    }
}

/// (IANA name, bulk cipher, TLS 1.2 PRF hash) of the suites rdprobe can decrypt.
fn suite_info(id: u16) -> Option<(&'static str, Bulk, Hash)> {
    use Bulk::*;
    use Hash::*;
    Some(match id {
        0x1301 => ("TLS13_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0x1302 => ("TLS13_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0x1303 => ("TLS13_CHACHA20_POLY1305_SHA256", ChaCha, Sha256),
        0x009c => ("TLS_RSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0x009d => ("TLS_RSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0x009e => ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0x009f => ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0xc02b => ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0xc02c => ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0xc02f => ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0xc030 => ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0xcca8 => (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ChaCha,
            Sha256,
        ),
        0xcca9 => (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ChaCha,
            Sha256,
        ),
        0xccaa => ("TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", ChaCha, Sha256),
        0x002f => ("TLS_RSA_WITH_AES_128_CBC_SHA", Aes128Cbc(Sha1), Sha256),
        0x0035 => ("TLS_RSA_WITH_AES_256_CBC_SHA", Aes256Cbc(Sha1), Sha256),
        0x003c => ("TLS_RSA_WITH_AES_128_CBC_SHA256", Aes128Cbc(Sha256), Sha256),
        0x003d => ("TLS_RSA_WITH_AES_256_CBC_SHA256", Aes256Cbc(Sha256), Sha256),
        0x0033 => ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", Aes128Cbc(Sha1), Sha256),
        0x0039 => ("TLS_DHE_RSA_WITH_AES_256_CBC_SHA", Aes256Cbc(Sha1), Sha256),
        0x0067 => (
            "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
            Aes128Cbc(Sha256),
            Sha256,
        ),
        0x006b => (
            "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
            Aes256Cbc(Sha256),
            Sha256,
        ),
        0xc009 => (
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            Aes128Cbc(Sha1),
            Sha256,
        ),
        0xc00a => (
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
            Aes256Cbc(Sha1),
            Sha256,
        ),
        0xc013 => (
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            Aes128Cbc(Sha1),
            Sha256,
        ),
        0xc014 => (
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            Aes256Cbc(Sha1),
            Sha256,
        ),
        0xc023 => (
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
            Aes128Cbc(Sha256),
            Sha256,
        ),
        0xc024 => (
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
            Aes256Cbc(Sha384),
            Sha384,
        ),
        0xc027 => (
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            Aes128Cbc(Sha256),
            Sha256,
        ),
        0xc028 => (
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
            Aes256Cbc(Sha384),
            Sha384,
        ),
        _ => return None,
    })
}

/// IANA name of a cipher suite (a few undecryptable legacy suites named too).
pub fn suite_name(id: u16) -> String {
    if let Some((n, _, _)) = suite_info(id) {
        return n.to_string();
    }
    match id {
        0x000a => "TLS_RSA_WITH_3DES_EDE_CBC_SHA".into(),
        0x0004 => "TLS_RSA_WITH_RC4_128_MD5".into(),
        0x0005 => "TLS_RSA_WITH_RC4_128_SHA".into(),
        0xc012 => "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA".into(),
        _ => format!("0x{id:04x}"),
    }
}

/// TLS protocol version name ("TLSv1.2"); the decoder's table.
pub fn version_name(v: u16) -> String {
    crate::decode::tls::version_name(v)
}

/// TLS alert description names (RFC 8446 section 6); the decoder's table.
pub fn alert_name(code: u8) -> String {
    crate::decode::tls::alert_description_name(code)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("alert {code}"))
}

// ------------------------------------------------------------------------------------------------
// Per-direction record protection

#[derive(Clone)]
struct Keys {
    bulk: Bulk,
    key: Vec<u8>,
    /// GCM: 4-byte salt; ChaCha / TLS 1.3: 12-byte IV; CBC TLS 1.0: 16-byte running IV.
    iv: Vec<u8>,
    mac_key: Vec<u8>,
    /// TLS 1.3 traffic secret (for KeyUpdate).
    secret: Vec<u8>,
    seq: u64,
}

/// What TLS up to 1.2 authenticates besides a record's content: sequence number, content type,
/// version and content length; the MAC input's prefix (RFC 5246 6.2.3.1) and an AEAD record's
/// additional data (6.2.3.3).
fn auth_header(seq: &[u8; 8], ctype: u8, version: u16, plen: u16) -> Vec<u8> {
    [
        &seq[..],
        &[ctype],
        &version.to_be_bytes(),
        &plen.to_be_bytes(),
    ]
    .concat()
}

fn aead_open(bulk: Bulk, key: &[u8], nonce: &[u8; 12], aad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    let payload = Payload { msg: ct, aad };
    match bulk {
        Bulk::Aes128Gcm => aes_gcm::Aes128Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce.into(), payload)
            .ok(),
        Bulk::Aes256Gcm => aes_gcm::Aes256Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce.into(), payload)
            .ok(),
        Bulk::ChaCha => chacha20poly1305::ChaCha20Poly1305::new_from_slice(key)
            .ok()?
            .decrypt(nonce.into(), payload)
            .ok(),
        _ => None,
    }
}

fn cbc_decrypt(bulk: Bulk, key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    if ct.is_empty() || !ct.len().is_multiple_of(16) || iv.len() != 16 {
        return None;
    }
    let mut out = ct.to_vec();
    let mut prev = [0u8; 16];
    prev.copy_from_slice(iv);
    macro_rules! run {
        ($c:ty) => {{
            let c = <$c>::new_from_slice(key).ok()?;
            for block in out.chunks_exact_mut(16) {
                let mut cur = [0u8; 16];
                cur.copy_from_slice(block);
                c.decrypt_block(GenericArray::from_mut_slice(block));
                for (b, p) in block.iter_mut().zip(prev.iter()) {
                    *b ^= p;
                }
                prev = cur;
            }
        }};
    }
    match bulk {
        Bulk::Aes128Cbc(_) => run!(aes::Aes128),
        Bulk::Aes256Cbc(_) => run!(aes::Aes256),
        _ => return None,
    }
    Some(out)
}

/// Why a record could not be decrypted.
#[derive(Debug)]
enum OpenError {
    Auth,
    Malformed(&'static str),
}

impl Keys {
    fn nonce_xor(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n.copy_from_slice(&self.iv[..12]);
        for (i, b) in self.seq.to_be_bytes().iter().enumerate() {
            n[4 + i] ^= b;
        }
        n
    }

    /// TLS 1.0–1.2 record (RFC 5246 6.2.3).
    fn open12(
        &mut self,
        ctype: u8,
        version: u16,
        frag: &[u8],
        etm: bool,
    ) -> Result<Vec<u8>, OpenError> {
        let seq = self.seq.to_be_bytes();
        let out = match self.bulk {
            Bulk::Aes128Gcm | Bulk::Aes256Gcm => {
                if frag.len() < 8 + 16 {
                    return Err(OpenError::Malformed("record too short for aes-gcm"));
                }
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(&self.iv[..4]);
                nonce[4..].copy_from_slice(&frag[..8]);
                let plen = (frag.len() - 24) as u16;
                let aad = auth_header(&seq, ctype, version, plen);
                aead_open(self.bulk, &self.key, &nonce, &aad, &frag[8..]).ok_or(OpenError::Auth)?
            }
            Bulk::ChaCha => {
                if frag.len() < 16 {
                    return Err(OpenError::Malformed(
                        "record too short for chacha20-poly1305",
                    ));
                }
                let nonce = self.nonce_xor();
                let plen = (frag.len() - 16) as u16;
                let aad = auth_header(&seq, ctype, version, plen);
                aead_open(self.bulk, &self.key, &nonce, &aad, frag).ok_or(OpenError::Auth)?
            }
            Bulk::Aes128Cbc(mac) | Bulk::Aes256Cbc(mac) => {
                let mac_len = mac.len();
                let explicit_iv = version >= 0x0302;
                let mac_hdr = |len: usize| auth_header(&seq, ctype, version, len as u16);
                let (ct, tag) = if etm {
                    if frag.len() < mac_len {
                        return Err(OpenError::Malformed("record too short for its mac"));
                    }
                    let (ct, tag) = frag.split_at(frag.len() - mac_len);
                    let want = mac.hmac(&self.mac_key, &[&mac_hdr(ct.len()), ct]);
                    if want != tag {
                        return Err(OpenError::Auth);
                    }
                    (ct, Some(()))
                } else {
                    (frag, None)
                };
                let (iv, body) = if explicit_iv {
                    if ct.len() < 16 {
                        return Err(OpenError::Malformed("record too short for its iv"));
                    }
                    (ct[..16].to_vec(), &ct[16..])
                } else {
                    (self.iv.clone(), ct)
                };
                let mut pt = cbc_decrypt(self.bulk, &self.key, &iv, body).ok_or(
                    OpenError::Malformed("cbc record is not a whole number of blocks"),
                )?;
                if !explicit_iv {
                    // TLS 1.0: the next record's IV is this record's last ciphertext block.
                    self.iv = body[body.len() - 16..].to_vec();
                }
                let pad = usize::from(*pt.last().ok_or(OpenError::Malformed("empty cbc record"))?);
                if pad + 1 > pt.len()
                    || pt[pt.len() - 1 - pad..]
                        .iter()
                        .any(|&b| usize::from(b) != pad)
                {
                    return Err(OpenError::Auth);
                }
                pt.truncate(pt.len() - 1 - pad);
                if tag.is_none() {
                    if pt.len() < mac_len {
                        return Err(OpenError::Auth);
                    }
                    let (data, tag) = pt.split_at(pt.len() - mac_len);
                    let want = mac.hmac(&self.mac_key, &[&mac_hdr(data.len()), data]);
                    if want != tag {
                        return Err(OpenError::Auth);
                    }
                    pt.truncate(pt.len() - mac_len);
                }
                pt
            }
        };
        self.seq = self.seq.wrapping_add(1);
        Ok(out)
    }

    /// TLS 1.3 record (RFC 8446 5.2): returns (content type, content).
    fn open13(&mut self, header: &[u8], frag: &[u8]) -> Result<(u8, Vec<u8>), OpenError> {
        if frag.len() < 17 {
            return Err(OpenError::Malformed("record too short"));
        }
        let nonce = self.nonce_xor();
        let mut pt =
            aead_open(self.bulk, &self.key, &nonce, header, frag).ok_or(OpenError::Auth)?;
        self.seq = self.seq.wrapping_add(1);
        while pt.last() == Some(&0) {
            pt.pop();
        }
        let ctype = pt
            .pop()
            .ok_or(OpenError::Malformed("no content type in inner plaintext"))?;
        Ok((ctype, pt))
    }

    fn tls13(bulk: Bulk, hash: Hash, secret: &[u8]) -> Option<Keys> {
        Some(Keys {
            bulk,
            key: hkdf_expand_label(hash, secret, "key", bulk.key_len())?,
            iv: hkdf_expand_label(hash, secret, "iv", 12)?,
            mac_key: Vec::new(),
            secret: secret.to_vec(),
            seq: 0,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Session state machine

/// What the decryptor produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsOutput {
    /// Decrypted application data of one record.
    Inner {
        dir: Dir,
        bytes: Vec<u8>,
        frame: u64,
        t_us: u64,
    },
    /// The handshake completed: what was negotiated.
    Session {
        info: TlsSessionInfo,
        frame: u64,
        t_us: u64,
    },
    /// Something worth telling the user (decrypted alert, decryption failure).
    Note { text: String, frame: u64, t_us: u64 },
    /// The key log lines of this session (for `Trace::keylog`).
    Keylog(Vec<String>),
}

#[derive(Default)]
struct DirState {
    rec_buf: Vec<u8>,
    hs_buf: Vec<u8>,
    hs_dead: bool,
    /// 1.2: a ChangeCipherSpec was sent; 1.3: handshake encryption is on.
    encrypting: bool,
    /// Records sent since encryption started (1.2: Finished is the first).
    encrypted_records: u64,
    keys: Option<Keys>,
    /// 1.3: the Finished of this direction was seen (application keys in use).
    finished: bool,
    /// No more decryption in this direction (gap, failure, or not TLS).
    dead: bool,
    /// Bytes of the current record still to skip (records only counted).
    skip: usize,
    /// Not TLS at all: stop parsing.
    not_tls: bool,
}

/// Decrypts one conversation's TLS streams. Feed each direction's wire bytes (after the X.224
/// exchange) in stream order.
#[derive(Default)]
pub struct TlsDecryptor {
    c2s: DirState,
    s2c: DirState,
    client_random: Option<[u8; 32]>,
    server_random: Option<[u8; 32]>,
    version: Option<u16>,
    suite: Option<u16>,
    etm: bool,
    certificates: Vec<Vec<u8>>,
    session_emitted: bool,
    keys_tried: bool,
    keylog_emitted: bool,
    warned_no_keys: bool,
    /// The extended_master_secret extension (RFC 7627) was negotiated.
    ems: bool,
    /// The client's encrypted premaster secret (static-RSA ClientKeyExchange).
    rsa_cke: Option<Vec<u8>>,
    /// Handshake messages ClientHello .. ClientKeyExchange (TLS 1.0-1.2), for RFC 7627's session hash.
    transcript: Vec<u8>,
    transcript_done: bool,
}

impl TlsDecryptor {
    pub fn new() -> Self {
        Self::default()
    }

    fn dir_mut(&mut self, dir: Dir) -> &mut DirState {
        match dir {
            Dir::C2S => &mut self.c2s,
            Dir::S2C => &mut self.s2c,
        }
    }

    /// The stream of `dir` lost bytes: its record boundaries are gone. Returns whether that stopped
    /// a decryption in progress.
    pub fn gap(&mut self, dir: Dir) -> bool {
        let d = self.dir_mut(dir);
        let was_decrypting = d.keys.is_some() && !d.dead;
        d.dead = true;
        d.not_tls = true;
        d.rec_buf = Vec::new();
        d.hs_buf = Vec::new();
        d.skip = 0;
        was_decrypting
    }

    /// Feeds wire bytes of one direction.
    pub fn feed(
        &mut self,
        dir: Dir,
        bytes: &[u8],
        frame: u64,
        t_us: u64,
        keylog: &KeyLog,
        out: &mut Vec<TlsOutput>,
    ) {
        if self.dir_mut(dir).not_tls {
            return;
        }
        let mut input = bytes;
        loop {
            let passive = self.passive(dir);
            let d = self.dir_mut(dir);
            // The rest of a record that is only counted.
            if d.skip > 0 {
                let n = d.skip.min(input.len());
                d.skip -= n;
                input = &input[n..];
                if d.skip > 0 {
                    return;
                }
            }
            // Fast path: a whole record in the input, nothing buffered: no copy.
            if d.rec_buf.is_empty() && input.len() >= 5 {
                let Some((ctype, version, len)) = self.header(dir, &input[..5], frame, t_us, out)
                else {
                    return;
                };
                if passive {
                    let whole = 5 + len;
                    if input.len() >= whole {
                        input = &input[whole..];
                        continue;
                    }
                    self.dir_mut(dir).skip = whole - input.len();
                    return;
                }
                if input.len() >= 5 + len {
                    let (rec, rest) = input.split_at(5 + len);
                    input = rest;
                    self.record(dir, ctype, version, rec, frame, t_us, keylog, out);
                    if self.dir_mut(dir).not_tls {
                        return;
                    }
                    continue;
                }
            }
            // Slow path: assemble the record in the buffer.
            let d = self.dir_mut(dir);
            if d.rec_buf.len() < 5 {
                let take = (5 - d.rec_buf.len()).min(input.len());
                d.rec_buf.extend_from_slice(&input[..take]);
                input = &input[take..];
                if d.rec_buf.len() < 5 {
                    return;
                }
            }
            let mut h = [0u8; 5];
            h.copy_from_slice(&d.rec_buf[..5]);
            let Some((ctype, version, len)) = self.header(dir, &h, frame, t_us, out) else {
                return;
            };
            let d = self.dir_mut(dir);
            if passive {
                let have = d.rec_buf.len() - 5;
                d.rec_buf.clear();
                d.skip = len - have;
                continue;
            }
            let need = 5 + len - d.rec_buf.len();
            let take = need.min(input.len());
            d.rec_buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if d.rec_buf.len() < 5 + len {
                return;
            }
            let rec = std::mem::take(&mut d.rec_buf);
            self.record(dir, ctype, version, &rec, frame, t_us, keylog, out);
            if self.dir_mut(dir).not_tls {
                return;
            }
        }
    }

    /// Nothing more can be learned from this direction's records: frame them without copying.
    fn passive(&self, dir: Dir) -> bool {
        let d = match dir {
            Dir::C2S => &self.c2s,
            Dir::S2C => &self.s2c,
        };
        self.session_emitted && self.keys_tried && (d.keys.is_none() || d.dead)
    }

    /// Checks a record header: (content type, version, fragment length), or stops the direction.
    fn header(
        &mut self,
        dir: Dir,
        h: &[u8],
        frame: u64,
        t_us: u64,
        out: &mut Vec<TlsOutput>,
    ) -> Option<(u8, u16, usize)> {
        if let Ok(r) = RecordHeader::parse(h, 0) {
            return Some((r.content_type, r.version, r.len));
        }
        let d = self.dir_mut(dir);
        d.not_tls = true;
        d.dead = true;
        let text = format!(
            "{} stream is not tls after {} (record header {:02x} {:02x} {:02x} {:02x} {:02x})",
            dir_name(dir),
            if d.encrypted_records > 0 || d.encrypting {
                "encryption started"
            } else {
                "the x224 exchange"
            },
            h[0],
            h[1],
            h[2],
            h[3],
            h[4]
        );
        d.rec_buf = Vec::new();
        out.push(TlsOutput::Note { text, frame, t_us });
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        dir: Dir,
        ctype: u8,
        version: u16,
        rec: &[u8],
        frame: u64,
        t_us: u64,
        keylog: &KeyLog,
        out: &mut Vec<TlsOutput>,
    ) {
        let frag = &rec[5..];
        let is13 = self.version == Some(0x0304);
        match ctype {
            CT_CCS => {
                if !is13 {
                    let d = self.dir_mut(dir);
                    d.encrypting = true;
                    if let Some(k) = d.keys.as_mut() {
                        k.seq = 0;
                    }
                }
                // TLS 1.3 middlebox-compatibility CCS: ignored.
                return;
            }
            CT_HANDSHAKE if !self.dir_mut(dir).encrypting => {
                self.handshake_bytes(dir, frag, frame, t_us, keylog, out);
                return;
            }
            CT_ALERT if !self.dir_mut(dir).encrypting => return, // cleartext alert: visible on the wire
            _ => {}
        }
        if is13 && ctype == CT_APPDATA && !self.dir_mut(dir).encrypting {
            // 0-RTT data before the ServerHello, or records of a session we did not see start.
            return;
        }
        if !self.dir_mut(dir).encrypting {
            return;
        }
        // An encrypted record.
        self.dir_mut(dir).encrypted_records += 1;
        self.ensure_keys(keylog, frame, t_us, out);
        let etm = self.etm;
        let mut plain: Option<(u8, Vec<u8>)> = None;
        {
            let d = self.dir_mut(dir);
            if !d.dead {
                if let Some(k) = d.keys.as_mut() {
                    let r = if is13 {
                        k.open13(&rec[..5], frag)
                    } else {
                        k.open12(ctype, version, frag, etm).map(|p| (ctype, p))
                    };
                    match r {
                        Ok(p) => plain = Some(p),
                        Err(e) => {
                            d.dead = true;
                            let why = match e {
                                OpenError::Auth => {
                                    "authentication failed (wrong or stale secrets?)".to_string()
                                }
                                OpenError::Malformed(m) => m.to_string(),
                            };
                            out.push(TlsOutput::Note {
                                text: format!(
                                    "tls decryption stopped in {} at frame {frame}: {why}",
                                    dir_name(dir)
                                ),
                                frame,
                                t_us,
                            });
                        }
                    }
                }
            }
        }
        match plain {
            Some((CT_APPDATA, data)) => {
                if !data.is_empty() {
                    out.push(TlsOutput::Inner {
                        dir,
                        bytes: data,
                        frame,
                        t_us,
                    });
                }
            }
            Some((CT_ALERT, data)) => {
                let text = match data.as_slice() {
                    [level, desc, ..] => format!(
                        "tls alert: {} {} from {}",
                        if *level == 2 { "fatal" } else { "warning" },
                        alert_name(*desc),
                        dir.sender()
                    ),
                    _ => format!(
                        "tls alert: malformed ({} bytes) from {}",
                        data.len(),
                        dir.sender()
                    ),
                };
                out.push(TlsOutput::Note { text, frame, t_us });
            }
            Some((CT_HANDSHAKE, data)) => {
                if is13 || !self.dir_mut(dir).finished {
                    self.handshake_bytes(dir, &data, frame, t_us, keylog, out);
                }
                if !is13 {
                    self.dir_mut(dir).finished = true;
                }
            }
            Some(_) => {}
            None => {
                // Not decrypted: follow the handshake structure from record positions alone.
                if !is13 {
                    self.dir_mut(dir).finished = true;
                } else if dir == Dir::C2S && ctype == CT_APPDATA && self.dir_mut(dir).keys.is_none()
                {
                    // Without keys: the client's first encrypted record in TLS 1.3 is its Finished.
                    self.dir_mut(dir).finished = true;
                }
            }
        }
        self.maybe_emit_session(frame, t_us, out);
    }

    fn maybe_emit_session(&mut self, frame: u64, t_us: u64, out: &mut Vec<TlsOutput>) {
        if self.session_emitted {
            return;
        }
        let done = match self.version {
            Some(0x0304) => self.c2s.finished,
            Some(_) => self.c2s.finished && self.s2c.finished,
            None => false,
        };
        if !done {
            return;
        }
        self.session_emitted = true;
        let (Some(v), Some(s)) = (self.version, self.suite) else {
            return;
        };
        out.push(TlsOutput::Session {
            info: TlsSessionInfo {
                version: version_name(v),
                cipher_suite: suite_name(s),
                certificates: std::mem::take(&mut self.certificates),
                engine: "capture".into(),
            },
            frame,
            t_us,
        });
    }

    fn ensure_keys(&mut self, keylog: &KeyLog, frame: u64, t_us: u64, out: &mut Vec<TlsOutput>) {
        if self.keys_tried {
            return;
        }
        let (Some(cr), Some(v), Some(suite)) = (self.client_random, self.version, self.suite)
        else {
            return;
        };
        self.keys_tried = true;
        if !self.keylog_emitted {
            let lines = keylog.lines_for(&cr);
            if !lines.is_empty() {
                self.keylog_emitted = true;
                out.push(TlsOutput::Keylog(lines));
            }
        }
        let Some((_, bulk, prf_hash)) = suite_info(suite) else {
            if !keylog.is_empty() {
                out.push(TlsOutput::Note {
                    text: format!(
                        "tls cipher suite {} cannot be decrypted by rdprobe",
                        suite_name(suite)
                    ),
                    frame,
                    t_us,
                });
            }
            return;
        };
        if v == 0x0304 {
            let c = keylog.secret(&cr, "CLIENT_HANDSHAKE_TRAFFIC_SECRET");
            let s = keylog.secret(&cr, "SERVER_HANDSHAKE_TRAFFIC_SECRET");
            if let Some(c) = c {
                self.c2s.keys = Keys::tls13(bulk, prf_hash, c);
            }
            if let Some(s) = s {
                self.s2c.keys = Keys::tls13(bulk, prf_hash, s);
            }
            // Without handshake secrets the application secrets are still usable once the handshake ends.
            if c.is_none() && s.is_none() {
                self.no_keys_note(&cr, keylog, frame, t_us, out);
            }
            return;
        }
        let Some(sr) = self.server_random else { return };
        let hash = if v >= 0x0303 { Some(prf_hash) } else { None };
        let master = match keylog.secret(&cr, "CLIENT_RANDOM") {
            Some(m) => m.to_vec(),
            None => match self.rsa_master(keylog, suite, hash, &cr, &sr) {
                Ok(m) => {
                    if !self.keylog_emitted {
                        self.keylog_emitted = true;
                        out.push(TlsOutput::Keylog(vec![format!(
                            "CLIENT_RANDOM {} {}",
                            hex::encode(cr),
                            hex::encode(&m)
                        )]));
                    }
                    m
                }
                Err(Some(why)) => {
                    out.push(TlsOutput::Note {
                        text: why,
                        frame,
                        t_us,
                    });
                    return;
                }
                Err(None) => {
                    self.no_keys_note(&cr, keylog, frame, t_us, out);
                    return;
                }
            },
        };
        let master = master.as_slice();
        let mac_len = bulk.mac().map(|h| h.len()).unwrap_or(0);
        let key_len = bulk.key_len();
        let iv_len = match bulk {
            Bulk::Aes128Gcm | Bulk::Aes256Gcm => 4,
            Bulk::ChaCha => 12,
            _ => 16,
        };
        let seed = [&sr[..], &cr[..]].concat();
        let kb = prf(
            hash,
            master,
            b"key expansion",
            &seed,
            2 * (mac_len + key_len + iv_len),
        );
        let (cm, r) = kb.split_at(mac_len);
        let (sm, r) = r.split_at(mac_len);
        let (ck, r) = r.split_at(key_len);
        let (sk, r) = r.split_at(key_len);
        let (civ, siv) = r.split_at(iv_len);
        let mk = |key: &[u8], iv: &[u8], mac: &[u8]| Keys {
            bulk,
            key: key.to_vec(),
            iv: iv.to_vec(),
            mac_key: mac.to_vec(),
            secret: Vec::new(),
            seq: 0,
        };
        self.c2s.keys = Some(mk(ck, civ, cm));
        self.s2c.keys = Some(mk(sk, siv, sm));
        // A direction already past its CCS keeps counting from the records it sent so far.
        for d in [&mut self.c2s, &mut self.s2c] {
            if d.encrypting {
                if let Some(k) = d.keys.as_mut() {
                    k.seq = d.encrypted_records.saturating_sub(1);
                }
            }
        }
    }

    /// The master secret from the server's RSA key (static-RSA suites). `Err(None)`: no RSA key
    /// applies (not an RSA suite, no key given); `Err(Some(why))`: a key was given but could not be
    /// used, and why.
    fn rsa_master(
        &self,
        keylog: &KeyLog,
        suite: u16,
        hash: Option<Hash>,
        cr: &[u8; 32],
        sr: &[u8; 32],
    ) -> Result<Vec<u8>, Option<String>> {
        let static_rsa = suite_info(suite).is_some_and(|(name, _, _)| name.starts_with("TLS_RSA_"));
        if keylog.rsa_keys.is_empty() || !static_rsa {
            return Err(None);
        }
        let Some(enc) = &self.rsa_cke else {
            return Err(Some(
                "tls: no ClientKeyExchange seen: the rsa key cannot be used".into(),
            ));
        };
        let Some(pms) = keylog.rsa_premaster(enc) else {
            return Err(Some(
                "tls: the rsa key given does not decrypt this session's premaster secret (another server's key?)".into(),
            ));
        };
        if self.ems {
            if self.transcript_done && self.transcript.is_empty() {
                return Err(Some(
                    "tls: extended master secret: handshake transcript too large".into(),
                ));
            }
            let session_hash = match hash {
                Some(h) => h.digest(&self.transcript),
                None => [
                    Hash::Md5.digest(&self.transcript),
                    Hash::Sha1.digest(&self.transcript),
                ]
                .concat(),
            };
            return Ok(prf(
                hash,
                &pms,
                b"extended master secret",
                &session_hash,
                48,
            ));
        }
        Ok(prf(
            hash,
            &pms,
            b"master secret",
            &[&cr[..], &sr[..]].concat(),
            48,
        ))
    }

    fn no_keys_note(
        &mut self,
        cr: &[u8; 32],
        keylog: &KeyLog,
        frame: u64,
        t_us: u64,
        out: &mut Vec<TlsOutput>,
    ) {
        if !keylog.is_empty() && !self.warned_no_keys {
            self.warned_no_keys = true;
            out.push(TlsOutput::Note {
                text: format!(
                    "no tls secrets for client random {}: inner stream not decrypted",
                    hex::encode(cr)
                ),
                frame,
                t_us,
            });
        }
    }

    /// Handshake-layer bytes (cleartext, or decrypted in TLS 1.3 / Finished in 1.2).
    #[allow(clippy::too_many_arguments)]
    fn handshake_bytes(
        &mut self,
        dir: Dir,
        bytes: &[u8],
        frame: u64,
        t_us: u64,
        keylog: &KeyLog,
        out: &mut Vec<TlsOutput>,
    ) {
        {
            let d = self.dir_mut(dir);
            if d.hs_dead {
                return;
            }
            if d.hs_buf.len() + bytes.len() > MAX_HANDSHAKE_BUF {
                d.hs_dead = true;
                d.hs_buf = Vec::new();
                return;
            }
            d.hs_buf.extend_from_slice(bytes);
        }
        loop {
            let d = self.dir_mut(dir);
            let Ok(h) = HandshakeHeader::parse(&d.hs_buf, 0) else {
                return;
            };
            if h.total_len() > MAX_HANDSHAKE_MESSAGE_LEN {
                d.hs_dead = true;
                d.hs_buf = Vec::new();
                return;
            }
            if d.hs_buf.len() < h.total_len() {
                return;
            }
            let msg: Vec<u8> = d.hs_buf.drain(..h.total_len()).collect();
            // Only an RSA key needs the transcript (RFC 7627's session hash).
            if !self.transcript_done && self.version != Some(0x0304) && !keylog.rsa_keys.is_empty()
            {
                if self.transcript.len() + msg.len() > MAX_HANDSHAKE_BUF {
                    self.transcript_done = true;
                    self.transcript = Vec::new();
                } else {
                    self.transcript.extend_from_slice(&msg);
                }
            }
            self.handshake_msg(dir, msg[0], &msg[4..], frame, t_us, keylog, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handshake_msg(
        &mut self,
        dir: Dir,
        mtype: u8,
        body: &[u8],
        frame: u64,
        t_us: u64,
        keylog: &KeyLog,
        out: &mut Vec<TlsOutput>,
    ) {
        match (dir, mtype) {
            (Dir::C2S, 1) => {
                if let Some(r) = body.get(2..34) {
                    let mut cr = [0u8; 32];
                    cr.copy_from_slice(r);
                    self.client_random = Some(cr);
                }
            }
            (Dir::S2C, 2) => self.server_hello(body),
            (Dir::C2S, 16) => {
                // ClientKeyExchange: for static RSA, EncryptedPreMasterSecret with a 2-byte length.
                self.transcript_done = true;
                let enc = match body {
                    [hi, lo, rest @ ..]
                        if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() =>
                    {
                        rest
                    }
                    _ => body,
                };
                self.rsa_cke = Some(enc.to_vec());
            }
            (Dir::S2C, 11) => {
                let is13 = self.version == Some(0x0304);
                self.certificates = parse_certificates(body, is13);
            }
            (_, 20) if self.version == Some(0x0304) => {
                // Finished: switch this direction to its application traffic secret.
                let label = if dir == Dir::C2S {
                    "CLIENT_TRAFFIC_SECRET_0"
                } else {
                    "SERVER_TRAFFIC_SECRET_0"
                };
                let (bulk_hash, cr) = (self.suite.and_then(suite_info), self.client_random);
                let d = self.dir_mut(dir);
                d.finished = true;
                if let (Some((_, bulk, hash)), Some(cr)) = (bulk_hash, cr) {
                    match keylog.secret(&cr, label) {
                        Some(s) => d.keys = Keys::tls13(bulk, hash, s),
                        None => {
                            if d.keys.is_some() {
                                d.keys = None;
                                d.dead = true;
                                out.push(TlsOutput::Note {
                                    text: format!("no {label} in the key log: {} application data not decrypted", dir_name(dir)),
                                    frame,
                                    t_us,
                                });
                            }
                        }
                    }
                }
            }
            (_, 24) if self.version == Some(0x0304) => {
                // KeyUpdate (RFC 8446 4.6.3 / 7.2): next secret from the current one.
                let hb = self.suite.and_then(suite_info);
                let d = self.dir_mut(dir);
                if let (Some((_, bulk, hash)), Some(k)) = (hb, d.keys.as_ref()) {
                    let next = hkdf_expand_label(hash, &k.secret, "traffic upd", hash.len());
                    d.keys = next.and_then(|s| Keys::tls13(bulk, hash, &s));
                    if d.keys.is_none() {
                        d.dead = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn server_hello(&mut self, body: &[u8]) {
        let Some(v) = body.get(0..2) else { return };
        let legacy = u16::from_be_bytes([v[0], v[1]]);
        let Some(rnd) = body.get(2..34) else { return };
        if rnd == HRR_RANDOM {
            return; // HelloRetryRequest: the real ServerHello follows.
        }
        let Some(&sid_len) = body.get(34) else { return };
        let at = 35 + usize::from(sid_len);
        let Some(cs) = body.get(at..at + 2) else {
            return;
        };
        let suite = u16::from_be_bytes([cs[0], cs[1]]);
        let mut version = legacy;
        let mut etm = false;
        // compression (1), then extensions.
        let mut p = at + 3;
        if let Some(el) = body.get(p..p + 2) {
            let end = (p + 2 + usize::from(u16::from_be_bytes([el[0], el[1]]))).min(body.len());
            p += 2;
            while p + 4 <= end {
                let et = u16::from_be_bytes([body[p], body[p + 1]]);
                let elen = usize::from(u16::from_be_bytes([body[p + 2], body[p + 3]]));
                let val = body.get(p + 4..(p + 4 + elen).min(end)).unwrap_or(&[]);
                match et {
                    0x002b if val.len() == 2 => version = u16::from_be_bytes([val[0], val[1]]),
                    0x0016 => etm = true,
                    0x0017 => self.ems = true,
                    _ => {}
                }
                p += 4 + elen;
            }
        }
        let mut sr = [0u8; 32];
        sr.copy_from_slice(rnd);
        self.server_random = Some(sr);
        self.version = Some(version);
        self.suite = Some(suite);
        self.etm = etm && suite_info(suite).and_then(|(_, b, _)| b.mac()).is_some();
        if version == 0x0304 {
            // From here on both directions are protected by the handshake traffic keys.
            self.s2c.encrypting = true;
            self.c2s.encrypting = true;
        }
    }
}

fn dir_name(dir: Dir) -> &'static str {
    match dir {
        Dir::C2S => "client-to-server",
        Dir::S2C => "server-to-client",
    }
}

/// Certificate message body (RFC 5246 7.4.2 / RFC 8446 4.4.2) → DER certificates, leaf first,
/// read by `wire::tls`; a malformed message gives none, and at most 16 are kept.
fn parse_certificates(body: &[u8], tls13: bool) -> Vec<Vec<u8>> {
    let chain = if tls13 {
        crate::wire::tls::parse_certificate_tls13(body)
    } else {
        crate::wire::tls::parse_certificate(body)
    };
    let mut chain = chain.unwrap_or_default();
    chain.truncate(16);
    chain
}

/// Where the TLS of an RDP conversation starts in one direction: after the first TPKT (the X.224
/// Connection Request or Confirm) when the next byte opens a handshake record (0x16); otherwise the
/// direction is cleartext RDP. The capture reader looks for it in each RDP conversation, the gateway
/// decoder in the RDP a gateway channel carries.
#[derive(Debug)]
pub struct TlsStart {
    state: Start,
    /// First bytes that are no TPKT but a TLS record header are TLS at once.
    at_once: bool,
}

#[derive(Debug)]
enum Start {
    /// Reading the first TPKT: header bytes so far, then bytes left in it.
    Tpkt {
        hdr: Vec<u8>,
        left: usize,
    },
    /// Just after the first TPKT: the next byte tells TLS (0x16) from cleartext RDP.
    After,
    Tls,
    Plain,
}

impl TlsStart {
    /// TLS only after the first TPKT.
    pub fn after_tpkt() -> TlsStart {
        TlsStart {
            state: Start::Tpkt {
                hdr: Vec::new(),
                left: 0,
            },
            at_once: false,
        }
    }

    /// Also TLS from the first byte when the direction starts with a TLS record header instead of
    /// a TPKT (a capture that starts inside TLS).
    pub fn after_tpkt_or_at_once() -> TlsStart {
        TlsStart {
            at_once: true,
            ..TlsStart::after_tpkt()
        }
    }

    /// Reads the direction's next bytes. `Some((held, from))` when TLS has started: the TLS bytes
    /// are `held` (header bytes kept from earlier segments, when TLS starts at once) then
    /// `bytes[from..]`; `None` when none of these bytes is TLS.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut rest = bytes;
        loop {
            match &mut self.state {
                Start::Tpkt { hdr, left } => {
                    if hdr.len() < 4 {
                        let take = (4 - hdr.len()).min(rest.len());
                        hdr.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        if hdr.len() < 4 {
                            return None;
                        }
                        if hdr[0] != 3 {
                            let h = std::mem::take(hdr);
                            let mut probe = h.clone();
                            probe.extend_from_slice(&rest[..rest.len().min(1)]);
                            if self.at_once && RecordHeader::parse(&probe, 0).is_ok() {
                                self.state = Start::Tls;
                                return Some((h, bytes.len() - rest.len()));
                            }
                            self.state = Start::Plain;
                            return None;
                        }
                        *left = usize::from(u16::from_be_bytes([hdr[2], hdr[3]])).saturating_sub(4);
                    }
                    let take = (*left).min(rest.len());
                    *left -= take;
                    rest = &rest[take..];
                    if *left > 0 {
                        return None;
                    }
                    self.state = Start::After;
                }
                Start::After => {
                    let &b0 = rest.first()?;
                    self.state = if b0 == 0x16 { Start::Tls } else { Start::Plain };
                }
                Start::Tls => return Some((Vec::new(), bytes.len() - rest.len())),
                Start::Plain => return None,
            }
        }
    }

    /// Whether TLS has started.
    pub fn is_tls(&self) -> bool {
        matches!(self.state, Start::Tls)
    }

    /// Stops looking: the rest of the direction is cleartext (a gap before TLS was found).
    pub fn give_up(&mut self) {
        self.state = Start::Plain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_starts_after_the_first_tpkt_in_any_cut() {
        // An X.224 Connection Confirm (TPKT of 11 bytes), then a handshake record.
        let mut b = vec![3, 0, 0, 11, 6, 0xD0, 0, 0, 0x12, 0x34, 0];
        b.extend_from_slice(&[0x16, 3, 3, 0, 1, 2]);
        for cut in 0..=b.len() {
            let mut s = TlsStart::after_tpkt();
            let mut tls = Vec::new();
            for part in [&b[..cut], &b[cut..]] {
                if let Some((held, from)) = s.feed(part) {
                    tls.extend(held);
                    tls.extend_from_slice(&part[from..]);
                }
            }
            assert_eq!(tls, b[11..], "cut {cut}");
            assert!(s.is_tls());
        }
        // Cleartext RDP after the TPKT: never TLS, whatever follows.
        let mut s = TlsStart::after_tpkt();
        assert_eq!(s.feed(&[3, 0, 0, 4, 3, 0, 0, 4]), None);
        assert_eq!(s.feed(&[0x16, 3, 3, 0, 1]), None);
        assert!(!s.is_tls());
        // A gap before TLS was seen: given up.
        let mut s = TlsStart::after_tpkt();
        assert_eq!(s.feed(&[3, 0]), None);
        s.give_up();
        assert_eq!(s.feed(&[0, 4, 0x16]), None);
    }

    #[test]
    fn tls_at_once_only_when_asked() {
        let rec = [0x16, 3, 3, 0, 1, 1];
        let mut s = TlsStart::after_tpkt_or_at_once();
        assert_eq!(s.feed(&rec[..2]), None);
        assert_eq!(s.feed(&rec[2..]), Some((vec![0x16, 3, 3, 0], 2)));
        let mut s = TlsStart::after_tpkt();
        assert_eq!(s.feed(&rec), None);
        assert!(!s.is_tls());
    }

    #[test]
    fn tls12_prf_vector() {
        // Known-answer test for the TLS 1.2 PRF with SHA-256 (widely used vector from
        // https://mailarchive.ietf.org/arch/msg/tls/fzVCzk-z3FShgGJ6DOXqM1ydxms/).
        let secret = decode_hex("9bbe436ba940f017b17652849a71db35").unwrap();
        let seed = decode_hex("a0ba9f936cda311827a6f796ffd5198c").unwrap();
        let out = prf(Some(Hash::Sha256), &secret, b"test label", &seed, 100);
        assert_eq!(hex::encode(&out[..16]), "e3f229ba727be17b8d122620557cd453");
    }

    #[test]
    fn certificate_messages_are_read_by_the_wire_layer() {
        let list = [0, 0, 2, 0xaa, 0xbb, 0, 0, 1, 0xcc];
        let mut body12 = vec![0, 0, list.len() as u8];
        body12.extend(list);
        assert_eq!(
            parse_certificates(&body12, false),
            vec![vec![0xaa, 0xbb], vec![0xcc]]
        );
        // a list that overruns the message is malformed: no partial chain
        body12[2] += 1;
        assert!(parse_certificates(&body12, false).is_empty());
        let mut body13 = vec![0, 0, 0, 7, 0, 0, 2, 0xaa, 0xbb, 0, 0];
        assert_eq!(parse_certificates(&body13, true), vec![vec![0xaa, 0xbb]]);
        body13.push(9);
        assert!(
            parse_certificates(&body13, true).is_empty(),
            "trailing byte"
        );
    }

    #[test]
    fn heartbeat_records_frame_like_the_others() {
        // The one record rule (wire::tls) frames RFC 6520 heartbeat records; a heartbeat must
        // not end the direction as "not tls".
        let mut d = TlsDecryptor::new();
        let keylog = KeyLog::parse("");
        let mut out = Vec::new();
        let heartbeat = [24, 3, 3, 0, 3, 1, 0, 0];
        d.feed(Dir::C2S, &heartbeat, 1, 0, &keylog, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(!d.c2s.not_tls);
        // a record of content type 25 still does
        d.feed(Dir::C2S, &[25, 3, 3, 0, 0], 2, 0, &keylog, &mut out);
        assert!(d.c2s.not_tls);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn keylog_parse_and_lines() {
        let cr = "ab".repeat(32);
        let text = format!(
            "# comment\nCLIENT_RANDOM {cr} {}\nBOGUS x y\nCLIENT_RANDOM zz 00\n",
            "11".repeat(48)
        );
        let k = KeyLog::parse(&text);
        assert_eq!(k.len(), 1);
        let crb = [0xab; 32];
        assert_eq!(k.secret(&crb, "CLIENT_RANDOM").map(|s| s.len()), Some(48));
        assert_eq!(
            k.lines_for(&crb),
            vec![format!("CLIENT_RANDOM {cr} {}", "11".repeat(48))]
        );
    }
}
