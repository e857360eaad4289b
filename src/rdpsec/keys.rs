//! Session key derivation for standard RDP security (MS-RDPBCGR 5.3.5) and key updates (5.3.7).
//! Pure functions, no I/O.

use md5::{Digest as _, Md5};
use sha1::Sha1;

/// The client and server randoms are 32 bytes (MS-RDPBCGR 5.3.4).
pub const RANDOM_LEN: usize = 32;

/// 0x36 repeated 40 times (MS-RDPBCGR 5.3.6.1 Pad1).
pub const PAD1: [u8; 40] = [0x36; 40];
/// 0x5c repeated 48 times (MS-RDPBCGR 5.3.6.1 Pad2).
pub const PAD2: [u8; 48] = [0x5c; 48];

/// The salt of reduced-strength keys (MS-RDPBCGR 5.3.5.1): 0xD1269E for 40-bit, 0xD1 for 56-bit.
const SALT: [u8; 3] = [0xd1, 0x26, 0x9e];

/// An encryption method of standard RDP security (MS-RDPBCGR 2.2.1.3.3 encryptionMethods).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// ENCRYPTION_METHOD_40BIT (0x1): RC4 with a 40-bit effective key.
    #[serde(rename = "40bit")]
    Rc4_40,
    /// ENCRYPTION_METHOD_56BIT (0x8).
    #[serde(rename = "56bit")]
    Rc4_56,
    /// ENCRYPTION_METHOD_128BIT (0x2).
    #[serde(rename = "128bit")]
    Rc4_128,
    /// ENCRYPTION_METHOD_FIPS (0x10): 3DES-CBC with HMAC-SHA1 signatures (5.3.5.2).
    #[serde(rename = "fips")]
    Fips,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Rc4_40,
        Method::Rc4_56,
        Method::Rc4_128,
        Method::Fips,
    ];

    /// The bit in encryptionMethods.
    pub fn bit(self) -> u32 {
        match self {
            Method::Rc4_40 => 0x1,
            Method::Rc4_56 => 0x8,
            Method::Rc4_128 => 0x2,
            Method::Fips => 0x10,
        }
    }

    /// The method of a server's single selected bit, if it is one of the four.
    pub fn from_bit(bit: u32) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.bit() == bit)
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Rc4_40 => "40bit",
            Method::Rc4_56 => "56bit",
            Method::Rc4_128 => "128bit",
            Method::Fips => "fips",
        }
    }

    /// Length of the RC4 / MAC keys in bytes (8 for the reduced methods, 16 for 128-bit).
    pub fn key_len(self) -> usize {
        match self {
            Method::Rc4_40 | Method::Rc4_56 => 8,
            Method::Rc4_128 | Method::Fips => 16,
        }
    }
}

fn salted_hash(s: &[u8], i: &[u8], r1: &[u8], r2: &[u8]) -> [u8; 16] {
    let sha = Sha1::new()
        .chain_update(i)
        .chain_update(s)
        .chain_update(r1)
        .chain_update(r2)
        .finalize();
    Md5::new()
        .chain_update(s)
        .chain_update(sha)
        .finalize()
        .into()
}

/// 48 bytes of SaltedHash(S, "A"|"BB"|"CCC") style output with the given three labels.
fn hash48(s: &[u8], labels: [&[u8]; 3], client: &[u8], server: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    for (i, l) in labels.iter().enumerate() {
        out[i * 16..(i + 1) * 16].copy_from_slice(&salted_hash(s, l, client, server));
    }
    out
}

/// FinalHash(K) = MD5(K + ClientRandom + ServerRandom) (MS-RDPBCGR 5.3.5.1).
fn final_hash(k: &[u8], client: &[u8], server: &[u8]) -> [u8; 16] {
    Md5::new()
        .chain_update(k)
        .chain_update(client)
        .chain_update(server)
        .finalize()
        .into()
}

/// Reduces a 128-bit key to the method's strength (MS-RDPBCGR 5.3.5.1): 40-bit keys are
/// 0xD1269E + bytes 3..8, 56-bit keys 0xD1 + bytes 1..8; 128-bit keys are unchanged.
pub fn reduce(method: Method, key: &mut [u8; 16]) {
    match method {
        Method::Rc4_40 => key[..3].copy_from_slice(&SALT),
        Method::Rc4_56 => key[0] = SALT[0],
        Method::Rc4_128 | Method::Fips => {}
    }
}

/// The non-FIPS session keys of the client side (MS-RDPBCGR 5.3.5.1). Keys are 16 bytes; only the
/// first [`Method::key_len`] bytes are used.
#[derive(Clone, PartialEq, Eq)]
pub struct Rc4Keys {
    pub method: Method,
    /// MACKeyN
    pub mac_key: [u8; 16],
    /// InitialClientEncryptKeyN (= the server's decrypt key)
    pub encrypt_key: [u8; 16],
    /// InitialClientDecryptKeyN (= the server's encrypt key)
    pub decrypt_key: [u8; 16],
}

impl std::fmt::Debug for Rc4Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rc4Keys")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Derives the session keys from the two randoms (MS-RDPBCGR 5.3.5.1):
/// PreMasterSecret = First192Bits(ClientRandom) + First192Bits(ServerRandom),
/// MasterSecret = PreMasterHash("A") + PreMasterHash("BB") + PreMasterHash("CCC"),
/// SessionKeyBlob = MasterHash("X") + MasterHash("YY") + MasterHash("ZZZ"),
/// with SaltedHash(S, I) = MD5(S + SHA(I + S + ClientRandom + ServerRandom)).
pub fn derive_rc4(
    method: Method,
    client_random: &[u8; RANDOM_LEN],
    server_random: &[u8; RANDOM_LEN],
) -> Rc4Keys {
    let mut pre_master = [0u8; 48];
    pre_master[..24].copy_from_slice(&client_random[..24]);
    pre_master[24..].copy_from_slice(&server_random[..24]);
    let master = hash48(
        &pre_master,
        [b"A", b"BB", b"CCC"],
        client_random,
        server_random,
    );
    let blob = hash48(&master, [b"X", b"YY", b"ZZZ"], client_random, server_random);
    let mut mac_key = [0u8; 16];
    mac_key.copy_from_slice(&blob[..16]);
    let mut decrypt_key = final_hash(&blob[16..32], client_random, server_random);
    let mut encrypt_key = final_hash(&blob[32..48], client_random, server_random);
    reduce(method, &mut mac_key);
    reduce(method, &mut decrypt_key);
    reduce(method, &mut encrypt_key);
    Rc4Keys {
        method,
        mac_key,
        encrypt_key,
        decrypt_key,
    }
}

/// The key update after 4096 packets (MS-RDPBCGR 5.3.7.1):
/// SHAComponent = SHA(InitialKey + Pad1 + CurrentKey), TempKey = MD5(InitialKey + Pad2 + SHAComponent),
/// NewKey = RC4(TempKey, TempKey) over the first key_len bytes, then reduced like the initial key.
pub fn update_key(method: Method, initial: &[u8; 16], current: &[u8; 16]) -> [u8; 16] {
    let n = method.key_len();
    let sha = Sha1::new()
        .chain_update(&initial[..n])
        .chain_update(PAD1)
        .chain_update(&current[..n])
        .finalize();
    let mut temp: [u8; 16] = Md5::new()
        .chain_update(&initial[..n])
        .chain_update(PAD2)
        .chain_update(sha)
        .finalize()
        .into();
    let mut rc4 = super::crypt::Rc4State::new(&temp[..n]);
    let key_copy = temp;
    rc4.apply(&mut temp[..n]);
    let _ = key_copy;
    reduce(method, &mut temp);
    temp
}

/// The FIPS keys of the client side (MS-RDPBCGR 5.3.5.2).
#[derive(Clone, PartialEq, Eq)]
pub struct FipsKeys {
    /// 3DES key the client encrypts with (24 bytes with parity).
    pub encrypt_key: [u8; 24],
    /// 3DES key the client decrypts with.
    pub decrypt_key: [u8; 24],
    /// HMAC-SHA1 key of both directions.
    pub hmac_key: [u8; 20],
}

impl std::fmt::Debug for FipsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FipsKeys { .. }")
    }
}

/// The 3DES-CBC initialization vector of FIPS mode (MS-RDPBCGR 5.3.5.2).
pub const FIPS_IV: [u8; 8] = [0x12, 0x34, 0x56, 0x78, 0x90, 0xab, 0xcd, 0xef];

/// Derives the FIPS keys (MS-RDPBCGR 5.3.5.2):
/// ClientEncryptKeyT = SHA(Last128Bits(ClientRandom) + Last128Bits(ServerRandom)),
/// ClientDecryptKeyT = SHA(First128Bits(ClientRandom) + First128Bits(ServerRandom)),
/// each extended to 168 bits by repeating its first byte and expanded to a 192-bit 3DES key with
/// parity; ClientHMACKey = SHA(ClientDecryptKeyT + ClientEncryptKeyT).
pub fn derive_fips(client_random: &[u8; RANDOM_LEN], server_random: &[u8; RANDOM_LEN]) -> FipsKeys {
    let enc_t: [u8; 20] = Sha1::new()
        .chain_update(&client_random[16..])
        .chain_update(&server_random[16..])
        .finalize()
        .into();
    let dec_t: [u8; 20] = Sha1::new()
        .chain_update(&client_random[..16])
        .chain_update(&server_random[..16])
        .finalize()
        .into();
    let hmac_key: [u8; 20] = Sha1::new()
        .chain_update(dec_t)
        .chain_update(enc_t)
        .finalize()
        .into();
    let widen = |t: &[u8; 20]| {
        let mut k = [0u8; 21];
        k[..20].copy_from_slice(t);
        k[20] = t[0];
        k
    };
    FipsKeys {
        encrypt_key: expand_des_key(&widen(&enc_t)),
        decrypt_key: expand_des_key(&widen(&dec_t)),
        hmac_key,
    }
}

/// Expands 168 key bits to a 192-bit 3DES key as Windows does (MS-RDPBCGR 5.3.5.2): the bits of
/// each input byte are read least significant first, taken seven at a time, and each group is
/// written with an odd-parity low bit.
pub fn expand_des_key(k: &[u8; 21]) -> [u8; 24] {
    let mut buf = [0u8; 21];
    for (b, i) in buf.iter_mut().zip(k) {
        *b = i.reverse_bits();
    }
    let mut out = [0u8; 24];
    for (i, o) in out.iter_mut().enumerate() {
        let bit = 7 * i;
        let (p, r) = (bit / 8, bit % 8);
        // INVARIANT: p <= 20, and p + 1 is only read when r >= 2, i.e. p <= 19.
        let v = if r <= 1 {
            (buf[p] << r) & 0xfe
        } else {
            ((buf[p] << r) | (buf[p + 1] >> (8 - r))) & 0xfe
        };
        *o = odd_parity(v.reverse_bits());
    }
    out
}

/// Sets the low bit so that the byte has an odd number of one bits.
fn odd_parity(v: u8) -> u8 {
    let hi = v & 0xfe;
    if hi.count_ones().is_multiple_of(2) {
        hi | 1
    } else {
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_bits_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_bit(m.bit()), Some(m));
        }
        assert_eq!(Method::from_bit(0), None);
        assert_eq!(Method::from_bit(0x3), None);
    }

    #[test]
    fn reduction_salts() {
        let mut k = [0xaa; 16];
        reduce(Method::Rc4_40, &mut k);
        assert_eq!(&k[..4], &[0xd1, 0x26, 0x9e, 0xaa]);
        let mut k = [0xaa; 16];
        reduce(Method::Rc4_56, &mut k);
        assert_eq!(&k[..2], &[0xd1, 0xaa]);
        let mut k = [0xaa; 16];
        reduce(Method::Rc4_128, &mut k);
        assert_eq!(k, [0xaa; 16]);
    }

    #[test]
    fn des_key_expansion_sets_odd_parity() {
        for seed in [0u8, 0x5a, 0xff, 0x13] {
            let k = [seed; 21];
            for b in expand_des_key(&k) {
                assert_eq!(b.count_ones() % 2, 1, "byte {b:02x} of seed {seed:02x}");
            }
        }
        // All-zero key bits: every byte is only its parity bit.
        assert_eq!(expand_des_key(&[0; 21]), [1; 24]);
        // Distinct inputs give distinct keys.
        assert_ne!(expand_des_key(&[0x01; 21]), expand_des_key(&[0x02; 21]));
    }
}
