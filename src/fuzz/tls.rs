//! Stage `tls`: mutations of the ClientHello the client sends right after the X.224 Connection
//! Confirm (MS-RDPBCGR 5.4.5): the record layer (RFC 8446 5.1, RFC 5246 6.2.1), the handshake
//! header and the ClientHello body (RFC 8446 4.1.2): versions, random, session id, cipher suites,
//! compression methods and extensions with their length fields.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u8s, upto};
use super::EncodeCtx;

/// One structured mutation of the ClientHello; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum TlsMutation {
    RecordType(u8),
    RecordVersion(u16),
    /// The record length field (default: the real length).
    RecordLength(u16),
    /// Split the handshake message into records of at most this many bytes (0 = one record).
    Fragment(u16),
    HandshakeType(u8),
    /// The 24-bit handshake length field (default: the real length).
    HandshakeLength(u32),
    LegacyVersion(u16),
    /// Session id of `len` bytes (default 32).
    SessionId {
        len: u8,
    },
    /// The session id length byte (default: the real length).
    SessionIdLength(u8),
    /// Offer this many cipher suites (from a fixed list, then the grease value 0x0a0a repeated).
    SuiteCount(u16),
    /// The cipher suites length field (default: 2 x count).
    SuitesLength(u16),
    /// Offer only this suite.
    OnlySuite(u16),
    /// Compression methods: `len` bytes of `value` (default: one null method).
    Compression {
        len: u8,
        value: u8,
    },
    /// The extensions length field (default: the real length).
    ExtensionsLength(u16),
    /// Drop the extension at this index (mod the number of extensions).
    DropExtension(u8),
    /// The length field of the extension at `index` (mod the number of extensions).
    ExtensionLength {
        index: u8,
        length: u16,
    },
    /// Append an extension of this type with `len` zero bytes.
    AddExtension {
        ext_type: u16,
        len: u16,
    },
    /// The key_share entry's key length (default 32, x25519).
    KeyShareLength(u16),
    /// Only this version in supported_versions.
    SupportedVersion(u16),
    /// Send this many extra records of the same type after the ClientHello.
    ExtraRecords(u8),
    Havoc(Havoc),
}

/// A case of the `tls` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCase {
    pub mutations: Vec<TlsMutation>,
}

/// Cipher suites of the valid ClientHello: TLS 1.3, ECDHE-RSA/ECDSA GCM, RSA GCM/CBC.
const SUITES: &[u16] = &[
    0x1301, 0x1302, 0x1303, 0xc02f, 0xc030, 0xc02b, 0xc02c, 0xc027, 0xc028, 0xc013, 0xc014, 0x009c,
    0x009d, 0x002f, 0x0035,
];

fn ext(ty: u16, body: Vec<u8>) -> (u16, Vec<u8>) {
    (ty, body)
}

fn u16_list(items: &[u16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + 2 * items.len());
    b.extend_from_slice(&((2 * items.len()) as u16).to_be_bytes());
    for i in items {
        b.extend_from_slice(&i.to_be_bytes());
    }
    b
}

/// Encodes the ClientHello records from `mutations` (none: the valid ClientHello).
pub fn encode(mutations: &[TlsMutation], _ctx: &EncodeCtx) -> Vec<u8> {
    let mut record_type = 0x16u8;
    let mut record_version = 0x0301u16;
    let mut record_length = None;
    let mut fragment = 0u16;
    let mut hs_type = 1u8;
    let mut hs_length = None;
    let mut legacy_version = 0x0303u16;
    let mut session_id_len = 32u8;
    let mut session_id_len_field = None;
    let mut suites: Vec<u16> = SUITES.to_vec();
    let mut suites_length = None;
    let mut compression = vec![0u8];
    let mut extensions_length = None;
    let mut drop_ext = Vec::new();
    let mut ext_length = Vec::new();
    let mut add_ext = Vec::new();
    let mut key_len = 32u16;
    let mut versions: Vec<u16> = vec![0x0304, 0x0303];
    let mut extra_records = 0u8;
    let mut havocs = Vec::new();
    for m in mutations {
        match m {
            TlsMutation::RecordType(v) => record_type = *v,
            TlsMutation::RecordVersion(v) => record_version = *v,
            TlsMutation::RecordLength(v) => record_length = Some(*v),
            TlsMutation::Fragment(v) => fragment = *v,
            TlsMutation::HandshakeType(v) => hs_type = *v,
            TlsMutation::HandshakeLength(v) => hs_length = Some(*v & 0xff_ffff),
            TlsMutation::LegacyVersion(v) => legacy_version = *v,
            TlsMutation::SessionId { len } => session_id_len = *len,
            TlsMutation::SessionIdLength(v) => session_id_len_field = Some(*v),
            TlsMutation::SuiteCount(n) => {
                // INVARIANT: at most 0x7fff suites, so the list length fits in u16.
                let n = usize::from(*n).min(0x7fff);
                suites = SUITES
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0x0a0a))
                    .take(n)
                    .collect();
            }
            TlsMutation::SuitesLength(v) => suites_length = Some(*v),
            TlsMutation::OnlySuite(s) => suites = vec![*s],
            TlsMutation::Compression { len, value } => {
                compression = vec![*value; usize::from(*len)]
            }
            TlsMutation::ExtensionsLength(v) => extensions_length = Some(*v),
            TlsMutation::DropExtension(i) => drop_ext.push(*i),
            TlsMutation::ExtensionLength { index, length } => ext_length.push((*index, *length)),
            TlsMutation::AddExtension { ext_type, len } => add_ext.push((*ext_type, *len)),
            TlsMutation::KeyShareLength(v) => key_len = *v,
            TlsMutation::SupportedVersion(v) => versions = vec![*v],
            TlsMutation::ExtraRecords(n) => extra_records = *n,
            TlsMutation::Havoc(h) => havocs.push(h.clone()),
        }
    }

    // Extensions (RFC 8446 4.2).
    let mut exts: Vec<(u16, Vec<u8>)> = Vec::new();
    exts.push(ext(0x000a, u16_list(&[0x001d, 0x0017, 0x0018]))); // supported_groups
    exts.push(ext(0x000b, vec![1, 0])); // ec_point_formats: uncompressed
    exts.push(ext(
        0x000d,
        u16_list(&[
            0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0403, 0x0503, 0x0203, 0x0201,
        ]),
    )); // signature_algorithms
    let mut sv = vec![(2 * versions.len()) as u8];
    for v in &versions {
        sv.extend_from_slice(&v.to_be_bytes());
    }
    exts.push(ext(0x002b, sv)); // supported_versions
    let key: Vec<u8> = (0..key_len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(9))
        .collect();
    let mut ks = Vec::new();
    ks.extend_from_slice(&((4 + key.len()) as u16).to_be_bytes());
    ks.extend_from_slice(&0x001du16.to_be_bytes());
    ks.extend_from_slice(&key_len.to_be_bytes());
    ks.extend_from_slice(&key);
    exts.push(ext(0x0033, ks)); // key_share: x25519
    exts.push(ext(0x0017, Vec::new())); // extended_master_secret
    exts.push(ext(0xff01, vec![0])); // renegotiation_info
    for i in drop_ext {
        if !exts.is_empty() {
            let k = usize::from(i) % exts.len();
            exts.remove(k);
        }
    }
    for (t, len) in add_ext {
        exts.push((
            t,
            vec![0u8; usize::from(len).min(havoc::MAX_INSERT as usize)],
        ));
    }
    let mut ext_bytes = Vec::new();
    let n_ext = exts.len();
    for (k, (t, body)) in exts.iter().enumerate() {
        ext_bytes.extend_from_slice(&t.to_be_bytes());
        let mut len = body.len().min(0xffff) as u16;
        for (index, length) in &ext_length {
            if n_ext > 0 && usize::from(*index) % n_ext == k {
                len = *length;
            }
        }
        ext_bytes.extend_from_slice(&len.to_be_bytes());
        ext_bytes.extend_from_slice(body);
    }

    // ClientHello body.
    let mut body = Vec::new();
    body.extend_from_slice(&legacy_version.to_be_bytes());
    body.extend((0u8..32).map(|i| i.wrapping_mul(7).wrapping_add(1))); // random
    body.push(session_id_len_field.unwrap_or(session_id_len));
    body.extend(std::iter::repeat_n(0x5a, usize::from(session_id_len)));
    body.extend_from_slice(
        &suites_length
            .unwrap_or((2 * suites.len()).min(0xffff) as u16)
            .to_be_bytes(),
    );
    for s in &suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.push(compression.len() as u8);
    body.extend_from_slice(&compression);
    body.extend_from_slice(
        &extensions_length
            .unwrap_or(ext_bytes.len().min(0xffff) as u16)
            .to_be_bytes(),
    );
    body.extend_from_slice(&ext_bytes);

    let mut hs = Vec::with_capacity(4 + body.len());
    hs.push(hs_type);
    let l = hs_length.unwrap_or(body.len().min(0xff_ffff) as u32);
    hs.extend_from_slice(&l.to_be_bytes()[1..]);
    hs.extend_from_slice(&body);

    let chunk = if fragment == 0 {
        hs.len().max(1)
    } else {
        usize::from(fragment)
    };
    let mut out = Vec::new();
    for piece in hs.chunks(chunk) {
        out.push(record_type);
        out.extend_from_slice(&record_version.to_be_bytes());
        let l = record_length.unwrap_or(piece.len().min(0xffff) as u16);
        out.extend_from_slice(&l.to_be_bytes());
        out.extend_from_slice(piece);
    }
    for _ in 0..extra_records {
        out.extend_from_slice(&[record_type, 0x03, 0x03, 0x00, 0x01, 0x00]);
    }
    havoc::apply_all(&havocs, &mut out);
    out
}

/// One mutation, boundary-biased.
pub fn mutation() -> BoxedStrategy<TlsMutation> {
    use TlsMutation as M;
    let versions = &[0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x7f1c, 0xfefd];
    prop_oneof![
        2 => u8s(&[0x14, 0x15, 0x16, 0x17, 0x18]).prop_map(M::RecordType),
        2 => u16s(versions).prop_map(M::RecordVersion),
        3 => u16s(&[16384, 16385, 18432]).prop_map(M::RecordLength),
        2 => u16s(&[1, 5, 100]).prop_map(M::Fragment),
        1 => u8s(&[1, 2, 11, 16]).prop_map(M::HandshakeType),
        3 => upto(0xff_ffff, &[16384, 0x1_0000]).prop_map(|v| M::HandshakeLength(v as u32)),
        2 => u16s(versions).prop_map(M::LegacyVersion),
        1 => u8s(&[32, 33]).prop_map(|len| M::SessionId { len }),
        2 => u8s(&[32, 33]).prop_map(M::SessionIdLength),
        2 => upto(0x7fff, &[1, 2]).prop_map(|v| M::SuiteCount(v as u16)),
        2 => u16s(&[1, 30, 31]).prop_map(M::SuitesLength),
        1 => u16s(&[0x00ff, 0x5600, 0x1301, 0xc02f]).prop_map(M::OnlySuite),
        1 => (u8s(&[]), u8s(&[1])).prop_map(|(len, value)| M::Compression { len, value }),
        2 => u16s(&[]).prop_map(M::ExtensionsLength),
        1 => u8s(&[]).prop_map(M::DropExtension),
        2 => (u8s(&[]), u16s(&[])).prop_map(|(index, length)| M::ExtensionLength { index, length }),
        2 => (u16s(&[0x0000, 0x0029, 0x002a, 0x002d, 0x0039, 0xfe0d]), upto(havoc::MAX_INSERT, &[]).prop_map(|v| v as u16))
            .prop_map(|(ext_type, len)| M::AddExtension { ext_type, len }),
        1 => u16s(&[32, 33, 65, 97]).prop_map(M::KeyShareLength),
        1 => u16s(versions).prop_map(M::SupportedVersion),
        1 => u8s(&[]).prop_map(M::ExtraRecords),
        3 => Havoc::strategy(300).prop_map(M::Havoc),
    ]
    .boxed()
}

/// A whole case: one to four mutations.
pub fn strategy() -> BoxedStrategy<TlsCase> {
    proptest::collection::vec(mutation(), 1..=4)
        .prop_map(|mutations| TlsCase { mutations })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tls::{parse_handshakes, split_records, Handshake};

    #[test]
    fn base_client_hello_parses() {
        let b = encode(&[], &EncodeCtx::default());
        let (records, err) = split_records(&b);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(records.len(), 1);
        let (hs, err) = parse_handshakes(&b[5..]);
        assert!(err.is_none(), "{err:?}");
        assert!(
            matches!(hs.first(), Some(Handshake::ClientHello { .. })),
            "{hs:?}"
        );
    }

    #[test]
    fn fragment_splits_into_records() {
        let b = encode(&[TlsMutation::Fragment(100)], &EncodeCtx::default());
        let (records, err) = split_records(&b);
        assert!(err.is_none());
        assert!(records.len() > 2);
        let b = encode(&[TlsMutation::RecordLength(3)], &EncodeCtx::default());
        assert_eq!(&b[3..5], &[0, 3]);
    }
}
