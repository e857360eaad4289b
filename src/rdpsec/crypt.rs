//! Encryption and signatures of standard RDP security: RC4 with MAC signatures (MS-RDPBCGR 5.3.6)
//! and key updates every 4096 packets (5.3.7), and FIPS 3DES-CBC with HMAC-SHA1 (5.3.6.2).
//! Pure, no I/O.

use des::cipher::{self, BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;

use super::keys::{self, FipsKeys, Method, Rc4Keys, PAD1, PAD2};

/// Packets encrypted (or decrypted) with one RC4 key before it is updated (MS-RDPBCGR 5.3.7).
pub const KEY_UPDATE_INTERVAL: u32 = 4096;
/// Length of a MAC signature (dataSignature) in bytes.
pub const SIGNATURE_LEN: usize = 8;
/// 3DES block size in bytes.
pub const DES_BLOCK: usize = 8;

/// An RC4 keystream with an 8- or 16-byte key (the only sizes RDP uses).
pub enum Rc4State {
    K8(rc4::Rc4<rc4::consts::U8>),
    K16(rc4::Rc4<rc4::consts::U16>),
}

impl Rc4State {
    /// `key` is 8 or 16 bytes; other lengths use the first 8 (padded with zeros if shorter).
    pub fn new(key: &[u8]) -> Self {
        if key.len() >= 16 {
            Rc4State::K16(rc4::Rc4::new(rc4::Key::<rc4::consts::U16>::from_slice(
                &key[..16],
            )))
        } else {
            let mut k = [0u8; 8];
            let n = key.len().min(8);
            k[..n].copy_from_slice(&key[..n]);
            Rc4State::K8(rc4::Rc4::new(rc4::Key::<rc4::consts::U8>::from_slice(&k)))
        }
    }

    pub fn apply(&mut self, data: &mut [u8]) {
        match self {
            Rc4State::K8(c) => c.apply_keystream(data),
            Rc4State::K16(c) => c.apply_keystream(data),
        }
    }
}

/// MACSignature = First64Bits(MD5(MACKeyN + Pad2 + SHA(MACKeyN + Pad1 + DataLength + Data)))
/// (MS-RDPBCGR 5.3.6.1); with `salt` (the salted MAC of 5.3.6.1.1) the encryption count is
/// appended to the SHA input.
pub fn mac_signature(mac_key: &[u8], data: &[u8], salt: Option<u32>) -> [u8; SIGNATURE_LEN] {
    let mut sha = Sha1::new()
        .chain_update(mac_key)
        .chain_update(PAD1)
        .chain_update((data.len() as u32).to_le_bytes())
        .chain_update(data);
    if let Some(count) = salt {
        sha.update(count.to_le_bytes());
    }
    let sha = sha.finalize();
    let md5 = Md5::new()
        .chain_update(mac_key)
        .chain_update(PAD2)
        .chain_update(sha)
        .finalize();
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(&md5[..SIGNATURE_LEN]);
    out
}

/// One direction of RC4 encryption with its key-update schedule.
pub struct Rc4Direction {
    method: Method,
    initial_key: [u8; 16],
    current_key: [u8; 16],
    rc4: Rc4State,
    /// Packets processed with the current key.
    use_count: u32,
    /// Packets processed in total (the salted MAC's encryption count).
    total: u32,
}

impl Rc4Direction {
    pub fn new(method: Method, key: [u8; 16]) -> Self {
        Rc4Direction {
            method,
            initial_key: key,
            current_key: key,
            rc4: Rc4State::new(&key[..method.key_len()]),
            use_count: 0,
            total: 0,
        }
    }

    /// Encrypts or decrypts one packet in place, updating the key first when 4096 packets have
    /// used the current one (MS-RDPBCGR 5.3.7).
    pub fn apply(&mut self, data: &mut [u8]) {
        if self.use_count >= KEY_UPDATE_INTERVAL {
            self.current_key = keys::update_key(self.method, &self.initial_key, &self.current_key);
            self.rc4 = Rc4State::new(&self.current_key[..self.method.key_len()]);
            self.use_count = 0;
        }
        self.rc4.apply(data);
        self.use_count += 1;
        self.total = self.total.wrapping_add(1);
    }

    /// The key in use now (changes every 4096 packets).
    pub fn current_key(&self) -> &[u8; 16] {
        &self.current_key
    }

    /// Packets processed so far.
    pub fn count(&self) -> u32 {
        self.total
    }
}

type TdesCbcEnc = cbc::Encryptor<des::TdesEde3>;
type TdesCbcDec = cbc::Decryptor<des::TdesEde3>;
type HmacSha1 = Hmac<Sha1>;

/// HMAC-SHA1 signature of FIPS mode: First64Bits(HMAC(HMACKey, Data + UseCount)) (MS-RDPBCGR 5.3.6.2).
pub fn fips_signature(hmac_key: &[u8], data: &[u8], count: u32) -> [u8; SIGNATURE_LEN] {
    // INVARIANT: HMAC takes keys of any length.
    let mut m = <HmacSha1 as Mac>::new_from_slice(hmac_key).expect("hmac takes any key length");
    m.update(data);
    m.update(&count.to_le_bytes());
    let full = m.finalize().into_bytes();
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(&full[..SIGNATURE_LEN]);
    out
}

/// What a received packet turned out to be after decryption.
#[derive(Debug, PartialEq, Eq)]
pub struct Decrypted {
    pub plaintext: Vec<u8>,
    /// The signature matched.
    pub signature_ok: bool,
}

/// Errors of the security layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptError {
    #[error("encrypted data shorter than its security header ({0} bytes)")]
    Short(usize),
    #[error("fips data length {0} is not a multiple of the 3des block size")]
    NotBlockAligned(usize),
    #[error("fips padding {pad} exceeds the {len} decrypted bytes")]
    BadPadding { pad: usize, len: usize },
}

/// Client-side security context: encrypts what the client sends, decrypts what the server sends.
pub enum SecurityContext {
    Rc4 {
        mac_key: [u8; 16],
        method: Method,
        encrypt: Box<Rc4Direction>,
        decrypt: Box<Rc4Direction>,
        /// Sign with the salted MAC (the client then sets SEC_SECURE_CHECKSUM).
        salted: bool,
    },
    Fips {
        hmac_key: [u8; 20],
        encrypt: Box<TdesCbcEnc>,
        decrypt: Box<TdesCbcDec>,
        encrypt_count: u32,
        decrypt_count: u32,
    },
}

impl std::fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecurityContext::Rc4 { method, .. } => write!(f, "SecurityContext::Rc4({method:?})"),
            SecurityContext::Fips { .. } => f.write_str("SecurityContext::Fips"),
        }
    }
}

impl SecurityContext {
    /// The client side of RC4 security from its keys.
    pub fn rc4(keys: &Rc4Keys) -> Self {
        SecurityContext::Rc4 {
            mac_key: keys.mac_key,
            method: keys.method,
            encrypt: Box::new(Rc4Direction::new(keys.method, keys.encrypt_key)),
            decrypt: Box::new(Rc4Direction::new(keys.method, keys.decrypt_key)),
            salted: false,
        }
    }

    /// The server side of RC4 security (the client's keys with the directions swapped); used by
    /// tests and by a decryptor of captured server-side traffic.
    pub fn rc4_server(keys: &Rc4Keys) -> Self {
        SecurityContext::Rc4 {
            mac_key: keys.mac_key,
            method: keys.method,
            encrypt: Box::new(Rc4Direction::new(keys.method, keys.decrypt_key)),
            decrypt: Box::new(Rc4Direction::new(keys.method, keys.encrypt_key)),
            salted: false,
        }
    }

    /// The client side of FIPS security.
    pub fn fips(keys: &FipsKeys) -> Self {
        Self::fips_with(keys.hmac_key, &keys.encrypt_key, &keys.decrypt_key)
    }

    /// The server side of FIPS security.
    pub fn fips_server(keys: &FipsKeys) -> Self {
        Self::fips_with(keys.hmac_key, &keys.decrypt_key, &keys.encrypt_key)
    }

    fn fips_with(hmac_key: [u8; 20], enc: &[u8; 24], dec: &[u8; 24]) -> Self {
        let iv = keys::FIPS_IV.into();
        SecurityContext::Fips {
            hmac_key,
            encrypt: Box::new(TdesCbcEnc::new(enc.into(), &iv)),
            decrypt: Box::new(TdesCbcDec::new(dec.into(), &iv)),
            encrypt_count: 0,
            decrypt_count: 0,
        }
    }

    pub fn is_fips(&self) -> bool {
        matches!(self, SecurityContext::Fips { .. })
    }

    /// Bytes between the basic security header and the encrypted data: the signature, and for
    /// FIPS the 4-byte TS_FIPS_INFORMATION before it (MS-RDPBCGR 2.2.8.1.1.2.2 / 2.2.8.1.1.2.3).
    pub fn overhead(&self) -> usize {
        match self {
            SecurityContext::Rc4 { .. } => SIGNATURE_LEN,
            SecurityContext::Fips { .. } => 4 + SIGNATURE_LEN,
        }
    }

    /// Signs and encrypts `data`: returns what follows the basic security header (or the fast-path
    /// header): [fips information] signature encrypted-data.
    pub fn encrypt(&mut self, data: &[u8]) -> Vec<u8> {
        match self {
            SecurityContext::Rc4 {
                mac_key,
                method,
                encrypt,
                salted,
                ..
            } => {
                let key = &mac_key[..method.key_len()];
                let sig = mac_signature(key, data, salted.then(|| encrypt.count()));
                let mut out = Vec::with_capacity(SIGNATURE_LEN + data.len());
                out.extend_from_slice(&sig);
                let mut body = data.to_vec();
                encrypt.apply(&mut body);
                out.extend_from_slice(&body);
                out
            }
            SecurityContext::Fips {
                hmac_key,
                encrypt,
                encrypt_count,
                ..
            } => {
                let pad = (DES_BLOCK - data.len() % DES_BLOCK) % DES_BLOCK;
                let sig = fips_signature(hmac_key, data, *encrypt_count);
                let mut body = data.to_vec();
                body.resize(data.len() + pad, 0);
                for block in body.chunks_exact_mut(DES_BLOCK) {
                    encrypt.encrypt_block_mut(cipher::generic_array::GenericArray::from_mut_slice(
                        block,
                    ));
                }
                *encrypt_count = encrypt_count.wrapping_add(1);
                let mut out = Vec::with_capacity(4 + SIGNATURE_LEN + body.len());
                // TS_FIPS_INFORMATION: length 0x0010, version 1, padlen
                out.extend_from_slice(&0x10u16.to_le_bytes());
                out.push(1);
                out.push(pad as u8);
                out.extend_from_slice(&sig);
                out.extend_from_slice(&body);
                out
            }
        }
    }

    /// Decrypts what follows the basic security header of a PDU with SEC_ENCRYPT, and checks its
    /// signature. `salted` says the sender set SEC_SECURE_CHECKSUM.
    pub fn decrypt(&mut self, sealed: &[u8], salted: bool) -> Result<Decrypted, CryptError> {
        match self {
            SecurityContext::Rc4 {
                mac_key,
                method,
                decrypt,
                ..
            } => {
                if sealed.len() < SIGNATURE_LEN {
                    return Err(CryptError::Short(sealed.len()));
                }
                let (sig, body) = sealed.split_at(SIGNATURE_LEN);
                let count = decrypt.count();
                let mut plain = body.to_vec();
                decrypt.apply(&mut plain);
                let key = &mac_key[..method.key_len()];
                let expect = mac_signature(key, &plain, salted.then_some(count));
                Ok(Decrypted {
                    signature_ok: expect == sig,
                    plaintext: plain,
                })
            }
            SecurityContext::Fips {
                hmac_key,
                decrypt,
                decrypt_count,
                ..
            } => {
                if sealed.len() < 4 + SIGNATURE_LEN {
                    return Err(CryptError::Short(sealed.len()));
                }
                let pad = usize::from(sealed[3]);
                let sig = &sealed[4..4 + SIGNATURE_LEN];
                let body = &sealed[4 + SIGNATURE_LEN..];
                if !body.len().is_multiple_of(DES_BLOCK) {
                    return Err(CryptError::NotBlockAligned(body.len()));
                }
                let mut plain = body.to_vec();
                for block in plain.chunks_exact_mut(DES_BLOCK) {
                    decrypt.decrypt_block_mut(cipher::generic_array::GenericArray::from_mut_slice(
                        block,
                    ));
                }
                let count = *decrypt_count;
                *decrypt_count = decrypt_count.wrapping_add(1);
                if pad > plain.len() {
                    return Err(CryptError::BadPadding {
                        pad,
                        len: plain.len(),
                    });
                }
                plain.truncate(plain.len() - pad);
                let expect = fips_signature(hmac_key, &plain, count);
                Ok(Decrypted {
                    signature_ok: expect == sig,
                    plaintext: plain,
                })
            }
        }
    }
}

/// Makes sure `KeyInit` stays used (the rc4 constructor above needs it in scope).
#[allow(dead_code)]
fn _key_init_in_scope<T: KeyInit>() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdpsec::keys::{derive_fips, derive_rc4};

    /// `sealed` (what `client` sealed of `msg`) opens on `server` with a good MAC, and `msg`
    /// sealed by `server` opens on `client` the same way.
    fn assert_opens_both_ways(
        client: &mut SecurityContext,
        server: &mut SecurityContext,
        msg: &[u8],
        sealed: &[u8],
        what: &str,
    ) {
        let opened = server.decrypt(sealed, false).expect("decrypts");
        assert!(opened.signature_ok, "mac of {what}");
        assert_eq!(opened.plaintext, msg, "{what}");
        let back = server.encrypt(msg);
        let opened = client.decrypt(&back, false).expect("decrypts");
        assert!(opened.signature_ok, "mac of the reply to {what}");
        assert_eq!(opened.plaintext, msg, "reply to {what}");
    }

    fn randoms() -> ([u8; 32], [u8; 32]) {
        let mut c = [0u8; 32];
        let mut s = [0u8; 32];
        for i in 0..32 {
            c[i] = i as u8;
            s[i] = 0xff - i as u8;
        }
        (c, s)
    }

    #[test]
    fn rc4_round_trip_every_method_across_key_updates() {
        let (c, s) = randoms();
        for m in [Method::Rc4_40, Method::Rc4_56, Method::Rc4_128] {
            let keys = derive_rc4(m, &c, &s);
            let mut client = SecurityContext::rc4(&keys);
            let mut server = SecurityContext::rc4_server(&keys);
            // Past the 4096-packet key update, both ways.
            for i in 0..(KEY_UPDATE_INTERVAL + 10) {
                let msg = format!("packet {i} of {m:?}").into_bytes();
                let sealed = client.encrypt(&msg);
                assert_ne!(&sealed[SIGNATURE_LEN..], &msg[..], "ciphertext differs");
                let what = format!("packet {i} ({m:?})");
                assert_opens_both_ways(&mut client, &mut server, &msg, &sealed, &what);
            }
        }
    }

    #[test]
    fn key_update_changes_the_key_and_keeps_the_salt() {
        let (c, s) = randoms();
        for m in [Method::Rc4_40, Method::Rc4_56, Method::Rc4_128] {
            let keys = derive_rc4(m, &c, &s);
            let mut d = Rc4Direction::new(m, keys.encrypt_key);
            for _ in 0..=KEY_UPDATE_INTERVAL {
                d.apply(&mut [0u8; 4]);
            }
            let new = *d.current_key();
            assert_ne!(new, keys.encrypt_key, "{m:?}");
            match m {
                Method::Rc4_40 => assert_eq!(&new[..3], &[0xd1, 0x26, 0x9e]),
                Method::Rc4_56 => assert_eq!(new[0], 0xd1),
                _ => {}
            }
        }
    }

    #[test]
    fn tampered_rc4_packet_fails_the_mac() {
        let (c, s) = randoms();
        let keys = derive_rc4(Method::Rc4_128, &c, &s);
        let mut client = SecurityContext::rc4(&keys);
        let mut server = SecurityContext::rc4_server(&keys);
        let mut sealed = client.encrypt(b"hello server");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(!server.decrypt(&sealed, false).unwrap().signature_ok);
    }

    #[test]
    fn salted_mac_differs_from_plain_mac() {
        let k = [7u8; 16];
        assert_ne!(
            mac_signature(&k, b"x", None),
            mac_signature(&k, b"x", Some(0))
        );
        assert_ne!(
            mac_signature(&k, b"x", Some(0)),
            mac_signature(&k, b"x", Some(1))
        );
    }

    #[test]
    fn fips_round_trip_with_padding_and_chaining() {
        let (c, s) = randoms();
        let keys = derive_fips(&c, &s);
        let mut client = SecurityContext::fips(&keys);
        let mut server = SecurityContext::fips_server(&keys);
        for len in [0usize, 1, 7, 8, 9, 100, 1000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let sealed = client.encrypt(&msg);
            assert_eq!(&sealed[..3], &[0x10, 0x00, 0x01]);
            assert_eq!(usize::from(sealed[3]), (8 - len % 8) % 8);
            assert_eq!((sealed.len() - 12) % 8, 0);
            let what = format!("len {len}");
            assert_opens_both_ways(&mut client, &mut server, &msg, &sealed, &what);
        }
    }

    #[test]
    fn fips_rejects_malformed_input_without_panicking() {
        let (c, s) = randoms();
        let keys = derive_fips(&c, &s);
        let mut server = SecurityContext::fips_server(&keys);
        assert_eq!(server.decrypt(&[0; 5], false), Err(CryptError::Short(5)));
        assert_eq!(
            server.decrypt(&[0; 12 + 7], false),
            Err(CryptError::NotBlockAligned(7))
        );
        let mut bad = vec![0x10, 0, 1, 200];
        bad.extend_from_slice(&[0; 8 + 8]);
        assert!(matches!(
            server.decrypt(&bad, false),
            Err(CryptError::BadPadding { pad: 200, len: 8 })
        ));
    }
}
