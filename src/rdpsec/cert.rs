//! The server's public key from the server security data (MS-RDPBCGR 2.2.1.4.3.1) and the RSA
//! encryption of the client random (MS-RDPBCGR 5.3.4.1). Pure, never panics.

use num_bigint::BigUint;

// The certificate and key reader is the wire layer's (one parser for decode, rdpsec, enumerate).
pub use crate::wire::servercert::{
    server_public_key, x509_rsa_key, CertError, RsaKey, MAX_MODULUS_LEN, MIN_MODULUS_BITS,
};

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
    use crate::wire::servercert::{BB_RSA_KEY_BLOB, RSA1_MAGIC};

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
