//! The `tls` stage's decoding and facts (RFC 5246, RFC 8446): pure, no I/O, never panics on any
//! input. Records and handshake messages are framed and read by [`crate::wire::tls`] (re-exported
//! here); this module names what they carry (versions, cipher suites, alerts) and makes the
//! certificate facts.
//!
//! Only the cleartext part of the handshake is decoded: ClientHello, ServerHello, and for TLS <= 1.2
//! the server's Certificate. With TLS 1.3 the certificate travels encrypted; when it is recovered
//! (decryption or the probe's own TLS stack) [`parse_certificate_tls13`] reads its layout.
//!
//! INVARIANT: no function here indexes a slice without a bound check or allocates from a length
//! field before checking that the bytes it announces are present.

pub use crate::wire::tls::{
    handshake_message, parse_certificate_tls13, parse_handshakes, split_records, Handshake,
    HandshakeHeader, HandshakeReassembler, Record, RecordHeader, TlsError, TlsErrorKind, CT_ALERT,
    CT_APPLICATION_DATA, CT_CHANGE_CIPHER_SPEC, CT_HANDSHAKE, CT_HEARTBEAT, EXT_SERVER_NAME,
    EXT_SUPPORTED_VERSIONS, HANDSHAKE_HEADER_LEN, HS_CERTIFICATE, HS_CERTIFICATE_REQUEST,
    HS_CERTIFICATE_VERIFY, HS_CLIENT_HELLO, HS_CLIENT_KEY_EXCHANGE, HS_ENCRYPTED_EXTENSIONS,
    HS_FINISHED, HS_NEW_SESSION_TICKET, HS_SERVER_HELLO, HS_SERVER_HELLO_DONE,
    HS_SERVER_KEY_EXCHANGE, MAX_FRAGMENT_LEN, MAX_HANDSHAKE_MESSAGE_LEN, RECORD_HEADER_LEN,
};
pub use crate::wire::x509::{
    cert_facts, check_name, rfc3339, rfc4514, subject_der, subject_public_key, CertFacts, X509Error,
};

/// Name of an alert description (RFC 8446 6, including descriptions only older versions define:
/// RFC 5246 7.2, RFC 6101 5.4.2).
pub fn alert_description_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return None,
    })
}

/// Decodes an alert record fragment: (level name, description name, description code).
///
/// Only a 2-byte fragment is a plaintext alert; anything else (an encrypted alert) gives None.
/// Unknown levels and descriptions are named "level_N" / "unknown_N".
pub fn parse_alert(fragment: &[u8]) -> Option<(String, String, u8)> {
    let [level, desc] = *fragment else {
        return None;
    };
    let level = match level {
        1 => "warning".to_owned(),
        2 => "fatal".to_owned(),
        l => format!("level_{l}"),
    };
    let name =
        alert_description_name(desc).map_or_else(|| format!("unknown_{desc}"), str::to_owned);
    Some((level, name, desc))
}

/// "TLSv1.2" etc. for a protocol version number; "0x7f1c" style for drafts and unknown values.
pub fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSLv2".to_owned(),
        0x0300 => "SSLv3".to_owned(),
        0x0301 => "TLSv1.0".to_owned(),
        0x0302 => "TLSv1.1".to_owned(),
        0x0303 => "TLSv1.2".to_owned(),
        0x0304 => "TLSv1.3".to_owned(),
        // RFC 8701 GREASE values (0x?a?a)
        v if v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff) => format!("GREASE(0x{v:04x})"),
        v => format!("0x{v:04x}"),
    }
}

/// Cipher suites by IANA number: the ones RDP clients and servers of every Windows generation offer
/// (RSA key exchange, RC4, 3DES and CBC suites of Windows 2008-2012, ECDHE GCM/CBC of later ones),
/// the TLS 1.3 suites, ChaCha20-Poly1305, and the signalling values.
const CIPHER_SUITES: &[(u16, &str)] = &[
    (0x0000, "TLS_NULL_WITH_NULL_NULL"),
    (0x0001, "TLS_RSA_WITH_NULL_MD5"),
    (0x0002, "TLS_RSA_WITH_NULL_SHA"),
    (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5"),
    (0x0004, "TLS_RSA_WITH_RC4_128_MD5"),
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    (0x0006, "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5"),
    (0x0009, "TLS_RSA_WITH_DES_CBC_SHA"),
    (0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0012, "TLS_DHE_DSS_WITH_DES_CBC_SHA"),
    (0x0013, "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA"),
    (0x0015, "TLS_DHE_RSA_WITH_DES_CBC_SHA"),
    (0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0032, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x0038, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA"),
    (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x003b, "TLS_RSA_WITH_NULL_SHA256"),
    (0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0x0040, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256"),
    (0x0041, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0x006a, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256"),
    (0x006b, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"),
    (0x0084, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA"),
    (0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    (0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0x00a2, "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256"),
    (0x00a3, "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384"),
    (0x00ff, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"),
    (0x1301, "TLS_AES_128_GCM_SHA256"),
    (0x1302, "TLS_AES_256_GCM_SHA384"),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256"),
    (0x1304, "TLS_AES_128_CCM_SHA256"),
    (0x1305, "TLS_AES_128_CCM_8_SHA256"),
    (0x5600, "TLS_FALLBACK_SCSV"),
    (0xc002, "TLS_ECDH_ECDSA_WITH_RC4_128_SHA"),
    (0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"),
    (0xc008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"),
    (0xc012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xccaa, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

/// IANA name of a cipher suite, e.g. "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"; "0xXXXX" when unknown.
pub fn cipher_suite_name(id: u16) -> String {
    match CIPHER_SUITES.binary_search_by_key(&id, |(k, _)| *k) {
        Ok(i) => CIPHER_SUITES[i].1.to_owned(),
        Err(_) if id & 0x0f0f == 0x0a0a && (id >> 8) == (id & 0xff) => {
            format!("GREASE(0x{id:04x})")
        }
        Err(_) => format!("0x{id:04X}"),
    }
}

/// Whether a cipher suite is considered weak today (RC4, 3DES, DES, export, NULL, or RSA key
/// exchange without forward secrecy). Used for certificate/TLS audits.
pub fn cipher_suite_is_weak(id: u16) -> bool {
    let name = cipher_suite_name(id);
    name.contains("RC4")
        || name.contains("3DES")
        || name.contains("_DES_")
        || name.contains("EXPORT")
        || name.contains("NULL")
        || name.starts_with("TLS_RSA_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use proptest::prelude::*;

    /// A TLS error as the offset and text the analyzer reports.
    fn plain(e: Option<TlsError>) -> Option<(usize, String)> {
        e.map(|e| (e.at, e.kind.to_string()))
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// ClientHello record of mstsc (Windows 7 era, TLS 1.0) from the public capture
    /// jovair_rdp-tls-decryptable.pcap (frame 8).
    const JOVAIR_CLIENT_HELLO: &str = "160301003e0100003a0301bbf011fb7829087acb748fda5049ba0a0f162a1f21b91e5c0a5c7f50f916ee16000008002f0001000200ff0100000900230000000f000101";
    /// ClientHello record (TLS 1.2) from ndpi_rdp_over_tls.pcap.
    const NDPI_CLIENT_HELLO: &str = "160303009c0100009803036712bcc57dd01b4bfc34fb063f251917660c0de590acf0e9f34d3d022d6ae07a000038c02cc02bc030c02f009f009ec024c023c028c027c00ac009c014c01300390033009d009c003d003c0035002f000a006a004000380032001301000037000a00080006001d00170018000b00020100000d001400120401050102010403050302030202060106030023000000170000ff01000100";
    /// The server's last record in ndpi_rdp_over_tls.pcap: an encrypted alert (TLS 1.2 GCM).
    const NDPI_ENCRYPTED_ALERT: &str =
        "150303001a000000000000000299f4e360ad0c19737fb2efd30a4c1a59de4d";

    fn record(ct: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ct, 3, 3];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn handshake(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }

    /// A TLS 1.3 style ClientHello with SNI "rdp.example.com" and supported_versions [1.3, 1.2].
    fn client_hello_13() -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([0x11; 32]);
        b.push(0);
        b.extend([0, 4, 0x13, 0x01, 0xc0, 0x2f]);
        b.extend([1, 0]);
        let mut ext = Vec::new();
        let name = b"rdp.example.com";
        let mut sni = vec![0];
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name);
        let mut sni_ext = ((sni.len()) as u16).to_be_bytes().to_vec();
        sni_ext.extend(sni);
        ext.extend(EXT_SERVER_NAME.to_be_bytes());
        ext.extend((sni_ext.len() as u16).to_be_bytes());
        ext.extend(sni_ext);
        ext.extend(EXT_SUPPORTED_VERSIONS.to_be_bytes());
        ext.extend([0, 5, 4, 3, 4, 3, 3]);
        b.extend((ext.len() as u16).to_be_bytes());
        b.extend(ext);
        handshake(HS_CLIENT_HELLO, &b)
    }

    fn server_hello_13() -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([0x22; 32]);
        b.push(0);
        b.extend([0x13, 0x02, 0]);
        b.extend([0, 6, 0, 43, 0, 2, 3, 4]);
        handshake(HS_SERVER_HELLO, &b)
    }

    use crate::wire::x509::tests::rcgen_cert;

    #[test]
    fn split_records_frames_a_real_client_hello_and_flags_garbage() {
        let mut s = unhex(JOVAIR_CLIENT_HELLO);
        let (r, e) = split_records(&s);
        assert_eq!(e, None);
        assert_eq!(
            r,
            vec![Record {
                content_type: 22,
                version: 0x0301,
                offset: 0,
                len: 62
            }]
        );
        assert_eq!(r[0].fragment(&s).len(), 62);
        // a second, truncated record
        s.extend([0x17, 3, 3, 0, 10, 1, 2]);
        let (r, e) = split_records(&s);
        assert_eq!(r.len(), 1);
        assert_eq!(
            plain(e),
            Some((67, "truncated TLS record: 7 of 15 bytes present".to_owned()))
        );
        // a TPKT header where a record should start
        let (r, e) = split_records(&[0x03, 0x00, 0x00, 0x13, 0x0e]);
        assert!(r.is_empty());
        assert_eq!(
            plain(e),
            Some((0, "invalid TLS record content type 3".to_owned()))
        );
        let (_, e) = split_records(&[0x16, 0x02, 0x00, 0x00, 0x01, 0x00]);
        assert_eq!(
            plain(e),
            Some((0, "invalid TLS record version 0x0200".to_owned()))
        );
        let (_, e) = split_records(&[0x17, 0x03, 0x03, 0x50, 0x01]);
        assert_eq!(
            plain(e),
            Some((0, "TLS record length 20481 exceeds 18432".to_owned()))
        );
        let (_, e) = split_records(&[0x16, 0x03]);
        assert_eq!(
            plain(e),
            Some((0, "truncated TLS record header (2 of 5 bytes)".to_owned()))
        );
    }

    #[test]
    fn real_client_hellos_decode() {
        let s = unhex(JOVAIR_CLIENT_HELLO);
        let (m, e) = parse_handshakes(&s[5..]);
        assert_eq!(e, None);
        let Handshake::ClientHello {
            version,
            supported_versions,
            cipher_suites,
            sni,
        } = &m[0]
        else {
            panic!("{m:?}")
        };
        assert_eq!(version_name(*version), "TLSv1.0");
        assert!(supported_versions.is_empty());
        assert_eq!(sni, &None);
        let names: Vec<String> = cipher_suites
            .iter()
            .map(|c| cipher_suite_name(*c))
            .collect();
        expect![[r#"["TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_NULL_MD5", "TLS_RSA_WITH_NULL_SHA", "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"]"#]]
            .assert_eq(&format!("{names:?}"));

        let s = unhex(NDPI_CLIENT_HELLO);
        let (m, e) = parse_handshakes(&s[5..]);
        assert_eq!(e, None);
        let Handshake::ClientHello {
            version,
            cipher_suites,
            ..
        } = &m[0]
        else {
            panic!()
        };
        assert_eq!(*version, 0x0303);
        assert_eq!(cipher_suites.len(), 28);
        assert_eq!(
            cipher_suite_name(cipher_suites[0]),
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        );
        assert!(
            cipher_suites
                .iter()
                .all(|c| !cipher_suite_name(*c).starts_with("0x")),
            "all suites named"
        );
    }

    #[test]
    fn tls13_hellos_give_sni_and_supported_versions() {
        let mut frag = client_hello_13();
        frag.extend(server_hello_13());
        let (m, e) = parse_handshakes(&frag);
        assert_eq!(e, None);
        assert_eq!(
            m,
            vec![
                Handshake::ClientHello {
                    version: 0x0303,
                    supported_versions: vec![0x0304, 0x0303],
                    cipher_suites: vec![0x1301, 0xc02f],
                    sni: Some("rdp.example.com".into()),
                },
                Handshake::ServerHello {
                    version: 0x0303,
                    selected_version: Some(0x0304),
                    cipher_suite: 0x1302
                },
            ]
        );
        assert_eq!(cipher_suite_name(0x1302), "TLS_AES_256_GCM_SHA384");
    }

    #[test]
    fn malformed_handshakes_report_offsets() {
        // cipher_suites length odd
        let mut ch = client_hello_13();
        ch[4 + 2 + 32 + 1 + 1] = 3;
        let (m, e) = parse_handshakes(&ch);
        assert!(m.is_empty());
        let (off, what) = plain(e).unwrap();
        assert!(what.contains("client hello"), "{what}");
        assert!(off >= 4, "{off}");
        // a truncated message after a complete one
        let mut frag = handshake(HS_SERVER_HELLO_DONE, &[]);
        frag.extend(&handshake(HS_CERTIFICATE, &[0, 0, 9, 1, 2])[..6]);
        let (m, e) = parse_handshakes(&frag);
        assert_eq!(m, vec![Handshake::ServerHelloDone]);
        assert_eq!(
            plain(e),
            Some((
                4,
                "truncated handshake message type 11: 6 of 9 bytes present".to_owned()
            ))
        );
        // a certificate list longer than the message
        let (_, e) = parse_handshakes(&handshake(HS_CERTIFICATE, &[0, 0, 9, 0, 0, 1, 0]));
        assert_eq!(
            plain(e),
            Some((4, "certificate list length exceeds the message".to_owned()))
        );
    }

    #[test]
    fn certificate_messages_tls12_and_tls13_layouts() {
        let a = rcgen_cert(&["a.example"], "a", (2020, 1, 1), (2030, 1, 1));
        let b = rcgen_cert(&["b.example"], "b", (2020, 1, 1), (2030, 1, 1));
        let mut list = Vec::new();
        for c in [&a, &b] {
            list.extend(&(c.len() as u32).to_be_bytes()[1..]);
            list.extend(c.iter());
        }
        let mut body12 = (list.len() as u32).to_be_bytes()[1..].to_vec();
        body12.extend(&list);
        let (m, e) = parse_handshakes(&handshake(HS_CERTIFICATE, &body12));
        assert_eq!(e, None);
        assert_eq!(
            m,
            vec![Handshake::Certificate {
                chain: vec![a.clone(), b.clone()]
            }]
        );

        // TLS 1.3: empty request context, per-entry extensions
        let mut list13 = Vec::new();
        for c in [&a, &b] {
            list13.extend(&(c.len() as u32).to_be_bytes()[1..]);
            list13.extend(c.iter());
            list13.extend([0, 0]);
        }
        let mut body13 = vec![0];
        body13.extend(&(list13.len() as u32).to_be_bytes()[1..]);
        body13.extend(&list13);
        assert_eq!(
            parse_certificate_tls13(&body13),
            Ok(vec![a.clone(), b.clone()])
        );
        // the generic parser falls back to the 1.3 layout
        let (m, _) = parse_handshakes(&handshake(HS_CERTIFICATE, &body13));
        assert_eq!(m, vec![Handshake::Certificate { chain: vec![a, b] }]);
        assert_eq!(
            parse_certificate_tls13(&[0, 0, 0, 4, 0, 0, 9, 0]),
            Err(TlsError::new(
                4,
                TlsErrorKind::Malformed("certificate length exceeds the certificate list")
            ))
        );
    }

    #[test]
    fn reassembler_joins_messages_split_across_records() {
        let a = rcgen_cert(&["a.example"], "a", (2020, 1, 1), (2030, 1, 1));
        let mut body = ((a.len() + 3) as u32).to_be_bytes()[1..].to_vec();
        body.extend(&(a.len() as u32).to_be_bytes()[1..]);
        body.extend(&a);
        let mut flight = server_hello_13();
        flight.extend(handshake(HS_CERTIFICATE, &body));
        flight.extend(handshake(HS_SERVER_HELLO_DONE, &[]));
        // one record: everything at once
        let (m, e) = HandshakeReassembler::new().push(&flight);
        assert_eq!((m.len(), e), (3, None));
        // split in 7-byte records: same messages, nothing pending at the end
        let mut r = HandshakeReassembler::new();
        let mut all = Vec::new();
        for chunk in flight.chunks(7) {
            let (m, e) = r.push(chunk);
            assert_eq!(e, None);
            all.extend(m);
        }
        assert_eq!(all.len(), 3);
        assert_eq!(all[1], Handshake::Certificate { chain: vec![a] });
        assert_eq!(r.pending(), 0);
        // an absurd length is an error, not a 16 MiB buffer
        let (m, e) = HandshakeReassembler::new().push(&[11, 0xff, 0xff, 0xff]);
        assert!(m.is_empty());
        assert_eq!(
            e.unwrap().kind.to_string(),
            "handshake message length 16777215 exceeds 262144"
        );
    }

    #[test]
    fn alerts_by_name() {
        assert_eq!(
            parse_alert(&[2, 40]),
            Some(("fatal".into(), "handshake_failure".into(), 40))
        );
        assert_eq!(
            parse_alert(&[1, 0]),
            Some(("warning".into(), "close_notify".into(), 0))
        );
        assert_eq!(
            parse_alert(&[2, 21]),
            Some(("fatal".into(), "decryption_failed".into(), 21))
        );
        assert_eq!(
            parse_alert(&[2, 116]),
            Some(("fatal".into(), "certificate_required".into(), 116))
        );
        assert_eq!(
            parse_alert(&[7, 200]),
            Some(("level_7".into(), "unknown_200".into(), 200))
        );
        let enc = unhex(NDPI_ENCRYPTED_ALERT);
        let (r, _) = split_records(&enc);
        assert_eq!(r[0].content_type, CT_ALERT);
        assert_eq!(
            parse_alert(r[0].fragment(&enc)),
            None,
            "an encrypted alert is not decoded"
        );
    }

    #[test]
    fn names_of_versions_and_suites() {
        assert_eq!(
            [0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x7f1c, 0x1a1a].map(version_name),
            [
                "SSLv3",
                "TLSv1.0",
                "TLSv1.1",
                "TLSv1.2",
                "TLSv1.3",
                "0x7f1c",
                "GREASE(0x1a1a)"
            ]
        );
        assert!(
            CIPHER_SUITES.windows(2).all(|w| w[0].0 < w[1].0),
            "table sorted for binary search"
        );
        assert_eq!(cipher_suite_name(0x000a), "TLS_RSA_WITH_3DES_EDE_CBC_SHA");
        assert_eq!(cipher_suite_name(0x0005), "TLS_RSA_WITH_RC4_128_SHA");
        assert_eq!(
            cipher_suite_name(0xc030),
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        );
        assert_eq!(
            cipher_suite_name(0xcca8),
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(cipher_suite_name(0x1301), "TLS_AES_128_GCM_SHA256");
        assert_eq!(cipher_suite_name(0xfefe), "0xFEFE");
        assert!(cipher_suite_is_weak(0x0005) && cipher_suite_is_weak(0x002f));
        assert!(!cipher_suite_is_weak(0xc02f) && !cipher_suite_is_weak(0x1301));
    }

    fn real_inputs() -> Vec<Vec<u8>> {
        let mut v = vec![unhex(JOVAIR_CLIENT_HELLO), unhex(NDPI_CLIENT_HELLO)];
        let mut flight = record(CT_HANDSHAKE, &server_hello_13());
        flight.extend(record(CT_HANDSHAKE, &client_hello_13()));
        v.push(flight);
        v
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600), now in any::<i64>()) {
            let _ = split_records(&b);
            let _ = parse_handshakes(&b);
            let _ = parse_certificate_tls13(&b);
            let _ = parse_alert(&b);
            let _ = cert_facts(&b, now);
            let _ = check_name(&b, "x.example");
            let mut r = HandshakeReassembler::new();
            for c in b.chunks(37) {
                let _ = r.push(c);
            }
            prop_assert!(r.pending() <= MAX_HANDSHAKE_MESSAGE_LEN + 37);
        }

        #[test]
        fn mutated_real_records_never_panic(
            which in 0usize..3,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut b = real_inputs().swap_remove(which);
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            b.truncate(cut % (b.len() + 1));
            let (recs, _) = split_records(&b);
            for r in &recs {
                let f = r.fragment(&b);
                let _ = parse_handshakes(f);
                let _ = parse_alert(f);
            }
            let _ = parse_handshakes(b.get(5..).unwrap_or(&[]));
        }
    }
}
