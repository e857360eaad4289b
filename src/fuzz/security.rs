//! Stage `security` (standard RDP security only): mutations of the Security Exchange PDU
//! (MS-RDPBCGR 2.2.1.10: basic security header flags, length field, the RSA-encrypted client
//! random) and of the Client Info PDU (2.2.1.11: its security header, and the TS_INFO_PACKET of
//! 2.2.1.11.1.1: code page, flags, the cb* length fields, string lengths, truncation, havoc). The
//! Client Info is encrypted and signed afterwards with the session keys of the client random the
//! case really sent, so the mutation sits inside a valid encryption layer.
//!
//! Pure: no I/O, never panics; every length a case asks for is bounded.

use std::net::SocketAddr;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u32s, u8s, upto};
use crate::probe::Credentials;
use crate::wire::share::{SecurityExchange, SecurityHeader, SEC_EXCHANGE_PKT, SEC_INFO_PKT};

/// Longest string a case puts in a TS_INFO_PACKET field, in characters.
pub const MAX_STRING: u64 = 2048;

/// One structured mutation; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum SecurityMutation {
    /// Security Exchange PDU: basic security header flags (default SEC_EXCHANGE_PKT).
    ExchangeFlags(u16),
    /// Security Exchange PDU: flagsHi (default 0).
    ExchangeFlagsHi(u16),
    /// Security Exchange PDU: the length field (default: the encrypted random's length).
    ExchangeLength(u32),
    /// Keep only the first bytes of the encrypted client random.
    RandomTruncate(u16),
    /// Bytes appended to the encrypted client random.
    RandomExtra { len: u16, fill: u8 },
    /// XOR byte `at` (modulo its length) of the encrypted client random.
    RandomFlip { at: u16, xor: u8 },
    /// Leave the Security Exchange PDU out.
    NoExchange,
    /// Client Info PDU: security header flags (default SEC_INFO_PKT; SEC_ENCRYPT is added when the
    /// server demands encryption).
    InfoHeaderFlags(u16),
    /// Send the Client Info in the clear although the server demands encryption.
    InfoInClear,
    /// TS_INFO_PACKET CodePage.
    CodePage(u32),
    /// TS_INFO_PACKET flags (default INFO_MOUSE | INFO_UNICODE | …).
    InfoFlags(u32),
    /// A cb* length field: 0 cbDomain, 1 cbUserName, 2 cbPassword, 3 cbAlternateShell,
    /// 4 cbWorkingDir (default: the real length).
    InfoLength { field: u8, value: u16 },
    /// A string of `len` characters: 0 domain, 1 user name, 2 password, 3 alternate shell,
    /// 4 working dir, 5 client address, 6 client dir.
    InfoString { field: u8, len: u16 },
    /// Keep only the first bytes of the TS_INFO_PACKET.
    InfoTruncate(u16),
    /// Byte havoc on the TS_INFO_PACKET (before encryption).
    Havoc(Havoc),
}

/// A case of the `security` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityCase {
    pub mutations: Vec<SecurityMutation>,
}

/// The user data (security header and body) of the Security Exchange PDU for `encrypted` (the
/// client random encrypted with the server's key, MS-RDPBCGR 5.3.4.1); None: left out.
pub fn exchange_user_data(mutations: &[SecurityMutation], encrypted: &[u8]) -> Option<Vec<u8>> {
    let mut flags = SEC_EXCHANGE_PKT;
    let mut flags_hi = 0u16;
    let mut length = None;
    let mut random = encrypted.to_vec();
    for m in mutations {
        match m {
            SecurityMutation::NoExchange => return None,
            SecurityMutation::ExchangeFlags(f) => flags = *f,
            SecurityMutation::ExchangeFlagsHi(f) => flags_hi = *f,
            SecurityMutation::ExchangeLength(l) => length = Some(*l),
            SecurityMutation::RandomTruncate(n) => random.truncate(usize::from(*n)),
            SecurityMutation::RandomExtra { len, fill } => random.extend(havoc::filler(
                usize::from(*len).min(havoc::MAX_INSERT as usize),
                *fill,
            )),
            SecurityMutation::RandomFlip { at, xor } if !random.is_empty() => {
                let i = usize::from(*at) % random.len();
                random[i] ^= *xor;
            }
            _ => {}
        }
    }
    let mut ud = Vec::with_capacity(8 + random.len());
    SecurityHeader { flags, flags_hi }.emit(&mut ud);
    SecurityExchange::emit_body(length.unwrap_or(random.len() as u32), &random, &mut ud);
    Some(ud)
}

fn string(len: u16, seed: char) -> String {
    std::iter::repeat_n(seed, usize::from(len).min(MAX_STRING as usize)).collect()
}

/// The TS_INFO_PACKET (MS-RDPBCGR 2.2.1.11.1.1) with the mutations: the probe's Client Info for
/// `user` (never a password: the fuzzer does not log on), strings resized, then the fixed fields
/// overwritten in place, truncated and havocked.
pub fn info_packet(mutations: &[SecurityMutation], user: &str, client: SocketAddr) -> Vec<u8> {
    let creds = Credentials {
        user: user.to_owned(),
        domain: None,
        password: String::new(),
    };
    let mut info = crate::rdpsec::client::client_info(Some(&creds), client);
    for m in mutations {
        if let SecurityMutation::InfoString { field, len } = m {
            let s = string(*len, 'a');
            match field % 7 {
                0 => info.credentials.domain = Some(s),
                1 => info.credentials.username = s,
                2 => info.credentials.password = s,
                3 => info.alternate_shell = s,
                4 => info.work_dir = s,
                5 => info.extra_info.address = s,
                _ => info.extra_info.dir = s,
            }
        }
    }
    let mut b = ironrdp_core::encode_vec(&info).unwrap_or_default();
    let mut havocs = Vec::new();
    let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| {
        if let Some(d) = b.get_mut(at..at + v.len()) {
            d.copy_from_slice(v);
        }
    };
    for m in mutations {
        match m {
            SecurityMutation::CodePage(v) => put(&mut b, 0, &v.to_le_bytes()),
            SecurityMutation::InfoFlags(v) => put(&mut b, 4, &v.to_le_bytes()),
            SecurityMutation::InfoLength { field, value } => {
                put(&mut b, 8 + 2 * usize::from(field % 5), &value.to_le_bytes())
            }
            SecurityMutation::InfoTruncate(n) => b.truncate(usize::from(*n)),
            SecurityMutation::Havoc(h) => havocs.push(h.clone()),
            _ => {}
        }
    }
    havoc::apply_all(&havocs, &mut b);
    b
}

/// The Client Info security header flags, and whether to encrypt it, given whether the server
/// demands encryption.
pub fn info_header(mutations: &[SecurityMutation], encrypted_session: bool) -> (u16, bool) {
    let mut flags = SEC_INFO_PKT;
    let mut encrypt = encrypted_session;
    for m in mutations {
        match m {
            SecurityMutation::InfoHeaderFlags(f) => flags = *f,
            SecurityMutation::InfoInClear => encrypt = false,
            _ => {}
        }
    }
    (flags, encrypt)
}

/// One mutation, boundary-biased.
pub fn mutation() -> BoxedStrategy<SecurityMutation> {
    use SecurityMutation as M;
    prop_oneof![
        1 => u16s(&[0x0001, 0x0041, 0x0008]).prop_map(M::ExchangeFlags),
        1 => u16s(&[0x8000]).prop_map(M::ExchangeFlagsHi),
        2 => u32s(&[0, 63, 64, 72, 256, 264]).prop_map(M::ExchangeLength),
        2 => upto(264, &[0, 63, 64, 71, 72]).prop_map(|v| M::RandomTruncate(v as u16)),
        1 => (upto(havoc::MAX_INSERT, &[1, 8]).prop_map(|v| v as u16), u8s(&[])).prop_map(|(len, fill)| M::RandomExtra { len, fill }),
        1 => (u16s(&[0, 63, 64]), u8s(&[1, 0x80])).prop_map(|(at, xor)| M::RandomFlip { at, xor }),
        1 => Just(M::NoExchange),
        1 => u16s(&[0x0040, 0x0048, 0x0001, 0x0080]).prop_map(M::InfoHeaderFlags),
        1 => Just(M::InfoInClear),
        1 => u32s(&[0x409]).prop_map(M::CodePage),
        2 => u32s(&[0x4000_0000, 0x0008_0000]).prop_map(M::InfoFlags),
        4 => (upto(4, &[]).prop_map(|v| v as u8), u16s(&[0, 1, 2, 510, 512, 514])).prop_map(|(field, value)| M::InfoLength { field, value }),
        3 => (upto(6, &[]).prop_map(|v| v as u8), upto(MAX_STRING, &[255, 256, 257, 511, 512])).prop_map(|(field, len)| M::InfoString { field, len: len as u16 }),
        1 => upto(1024, &[0, 18, 36]).prop_map(|v| M::InfoTruncate(v as u16)),
        3 => Havoc::strategy(256).prop_map(M::Havoc),
    ]
    .boxed()
}

/// A whole case: one to four mutations.
pub fn strategy() -> BoxedStrategy<SecurityCase> {
    proptest::collection::vec(mutation(), 1..=4)
        .prop_map(|mutations| SecurityCase { mutations })
        .boxed()
}

/// cbUserName of a TS_INFO_PACKET (for planted bugs and tests).
pub fn info_user_name_len(info: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*info.get(10)?, *info.get(11)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 50000))
    }

    #[test]
    fn valid_pdus_are_what_ironrdp_decodes() {
        let b = info_packet(&[], "alice", client());
        let info: ironrdp_pdu::rdp::client_info::ClientInfo =
            ironrdp_core::decode(&b).expect("valid TS_INFO_PACKET");
        assert_eq!(info.credentials.username, "alice");
        assert_eq!(info.credentials.password, "");
        assert_eq!(info_user_name_len(&b), Some(10));
        let ud = exchange_user_data(&[], &[1; 72]).expect("exchange");
        assert_eq!(&ud[..8], &[1, 0, 0, 0, 72, 0, 0, 0]);
        assert_eq!(ud.len(), 80);
        assert_eq!(info_header(&[], true), (SEC_INFO_PKT, true));
    }

    #[test]
    fn mutations_land_where_they_say() {
        let b = info_packet(
            &[SecurityMutation::InfoLength {
                field: 1,
                value: 0xfffe,
            }],
            "alice",
            client(),
        );
        assert_eq!(info_user_name_len(&b), Some(0xfffe));
        let b = info_packet(
            &[SecurityMutation::InfoString { field: 1, len: 300 }],
            "alice",
            client(),
        );
        assert_eq!(info_user_name_len(&b), Some(600));
        let ud = exchange_user_data(&[SecurityMutation::RandomTruncate(3)], &[1; 72]).expect("x");
        assert_eq!(ud.len(), 11);
        assert_eq!(&ud[4..8], &[3, 0, 0, 0]);
        assert!(exchange_user_data(&[SecurityMutation::NoExchange], &[1; 72]).is_none());
        assert_eq!(
            info_header(&[SecurityMutation::InfoInClear], true),
            (SEC_INFO_PKT, false)
        );
    }
}
