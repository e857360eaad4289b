//! Stage `licensing` (standard RDP security): mutations of the client's licensing PDU
//! (MS-RDPBCGR 2.2.1.12, MS-RDPELE 2.2.2). What the valid PDU is depends on the server's flow:
//! after a Server License Request it is the Client New License Request (MS-RDPELE 2.2.2.2) that
//! IronRDP's license sequence computes; after a license error alert STATUS_VALID_CLIENT (what
//! xrdp and the lab send: the flow expects nothing more) it is a client LICENSE_ERROR_MESSAGE
//! (2.2.1.12.1.3) answering STATUS_VALID_CLIENT, sent where a client would answer. Mutations
//! cover the preamble (bMsgType, flags, wMsgSize), the security header, the blobs' types and
//! lengths, truncation, extra bytes and havoc.
//!
//! Pure: no I/O, never panics.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u8s, upto};
use crate::wire::share::{self, LicenseErrorMessage, SEC_LICENSE_PKT};

/// Most blobs a case addresses in one message.
pub const MAX_BLOBS: usize = 8;

/// One structured mutation; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum LicensingMutation {
    /// Preamble bMsgType (0x13 new license request, 0x12 license info, 0x15 platform challenge
    /// response, 0xFF error alert).
    MsgType(u8),
    /// Preamble flags (default PREAMBLE_VERSION_3_0 | EXTENDED_ERROR_MSG_SUPPORTED, 0x83).
    PreambleFlags(u8),
    /// Preamble wMsgSize (default: the real size).
    MsgSize(u16),
    /// The security header flags (default SEC_LICENSE_PKT).
    HeaderFlags(u16),
    /// wBlobType of blob `index` (in message order).
    BlobType {
        index: u8,
        ty: u16,
    },
    /// wBlobLen of blob `index` (the bytes that follow are left as they were).
    BlobLength {
        index: u8,
        len: u16,
    },
    /// Keep only the first bytes of the message (after the security header).
    Truncate(u16),
    /// Bytes appended to the message.
    Extra {
        len: u16,
        fill: u8,
    },
    Havoc(Havoc),
}

/// A case of the `licensing` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicensingCase {
    pub mutations: Vec<LicensingMutation>,
}

/// bMsgType of a client LICENSE_ERROR_MESSAGE and of a Client New License Request, and
/// STATUS_VALID_CLIENT (MS-RDPBCGR 2.2.1.12.1.3).
pub use crate::wire::share::{ERROR_ALERT, NEW_LICENSE_REQUEST, STATUS_VALID_CLIENT};

/// A client LICENSE_ERROR_MESSAGE answering STATUS_VALID_CLIENT: preamble (version 3 with
/// EXTENDED_ERROR_MSG_SUPPORTED), dwErrorCode, dwStateTransition ST_NO_TRANSITION, bbErrorInfo
/// as an empty BB_ERROR_BLOB.
pub fn valid_client_answer() -> Vec<u8> {
    LicenseErrorMessage {
        error_code: STATUS_VALID_CLIENT,
        state_transition: share::ST_NO_TRANSITION,
        error_info: None,
    }
    .emit(
        share::PREAMBLE_VERSION_3_0 | share::EXTENDED_ERROR_MSG_SUPPORTED,
        share::BB_ERROR_BLOB,
        &[],
    )
}

/// Offsets of the blobs (wBlobType, wBlobLen, data) of a licensing message, by message type:
/// the error message's bbErrorInfo follows 8 bytes of codes; the new license request's
/// EncryptedPreMasterSecret, ClientUserName and ClientMachineName follow the key exchange
/// algorithm, platform id and client random (40 bytes).
pub fn blob_offsets(msg: &[u8]) -> Vec<usize> {
    let first = match msg.first() {
        Some(&ERROR_ALERT) => 4 + 8,
        Some(&NEW_LICENSE_REQUEST) => 4 + 40,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut at = first;
    while out.len() < MAX_BLOBS {
        let Some(h) = msg.get(at..at + 4) else { break };
        out.push(at);
        at += 4 + usize::from(u16::from_le_bytes([h[2], h[3]]));
    }
    out
}

/// The licensing PDU's user data (security header + message) from the valid `msg` with the
/// mutations: the header flags and the plaintext message; the caller encrypts when it must.
pub fn encode(mutations: &[LicensingMutation], msg: &[u8]) -> (u16, Vec<u8>) {
    let mut flags = SEC_LICENSE_PKT;
    let mut m = msg.to_vec();
    // Blob offsets are those of the valid message: a blob mutation names the field it hits.
    let blobs = blob_offsets(msg);
    let mut size = None;
    let mut havocs = Vec::new();
    let put = |m: &mut Vec<u8>, at: usize, v: &[u8]| {
        if let Some(d) = m.get_mut(at..at + v.len()) {
            d.copy_from_slice(v);
        }
    };
    for mu in mutations {
        match mu {
            LicensingMutation::MsgType(t) => put(&mut m, 0, &[*t]),
            LicensingMutation::PreambleFlags(f) => put(&mut m, 1, &[*f]),
            LicensingMutation::MsgSize(s) => size = Some(*s),
            LicensingMutation::HeaderFlags(f) => flags = *f,
            LicensingMutation::BlobType { index, ty } => {
                if let Some(at) = blobs.get(usize::from(*index)) {
                    put(&mut m, *at, &ty.to_le_bytes());
                }
            }
            LicensingMutation::BlobLength { index, len } => {
                if let Some(at) = blobs.get(usize::from(*index)) {
                    put(&mut m, at + 2, &len.to_le_bytes());
                }
            }
            LicensingMutation::Truncate(n) => m.truncate(usize::from(*n)),
            LicensingMutation::Extra { len, fill } => m.extend(havoc::filler(
                usize::from(*len).min(havoc::MAX_INSERT as usize),
                *fill,
            )),
            LicensingMutation::Havoc(h) => havocs.push(h.clone()),
        }
    }
    if let Some(s) = size {
        put(&mut m, 2, &s.to_le_bytes());
    }
    havoc::apply_all(&havocs, &mut m);
    (flags, m)
}

/// One mutation, boundary-biased.
pub fn mutation() -> BoxedStrategy<LicensingMutation> {
    use LicensingMutation as M;
    prop_oneof![
        2 => u8s(&[0x12, 0x13, 0x15, 0xff, 0x01, 0x02]).prop_map(M::MsgType),
        1 => u8s(&[0x03, 0x83, 0x80]).prop_map(M::PreambleFlags),
        3 => u16s(&[0, 3, 4, 5, 20]).prop_map(M::MsgSize),
        1 => u16s(&[0x0080, 0x0088, 0x0280]).prop_map(M::HeaderFlags),
        2 => (upto(3, &[]).prop_map(|v| v as u8), u16s(&[1, 2, 4, 0x0f, 0x10])).prop_map(|(index, ty)| M::BlobType { index, ty }),
        3 => (upto(3, &[]).prop_map(|v| v as u8), u16s(&[0, 1, 64, 72, 0xffff])).prop_map(|(index, len)| M::BlobLength { index, len }),
        2 => upto(64, &[0, 1, 3, 4, 8, 12, 15]).prop_map(|v| M::Truncate(v as u16)),
        1 => (upto(havoc::MAX_INSERT, &[1]).prop_map(|v| v as u16), u8s(&[])).prop_map(|(len, fill)| M::Extra { len, fill }),
        3 => Havoc::strategy(64).prop_map(M::Havoc),
    ]
    .boxed()
}

/// A whole case: one to four mutations.
pub fn strategy() -> BoxedStrategy<LicensingCase> {
    proptest::collection::vec(mutation(), 1..=4)
        .prop_map(|mutations| LicensingCase { mutations })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valid_client_answer_is_a_well_formed_error_message() {
        let m = valid_client_answer();
        assert_eq!(m.len(), 16);
        assert_eq!(u16::from_le_bytes([m[2], m[3]]), 16);
        assert_eq!(blob_offsets(&m), vec![12]);
        let (flags, same) = encode(&[], &m);
        assert_eq!(flags, SEC_LICENSE_PKT);
        assert_eq!(same, m);
        let (_, b) = encode(
            &[LicensingMutation::BlobLength {
                index: 0,
                len: 0xffff,
            }],
            &m,
        );
        assert_eq!(&b[14..16], &[0xff, 0xff]);
        let (_, b) = encode(&[LicensingMutation::MsgSize(3)], &m);
        assert_eq!(&b[2..4], &[3, 0]);
        // Blobs that run past the end stop the walk; a short message has none.
        assert!(blob_offsets(&[NEW_LICENSE_REQUEST, 0x83, 4, 0]).is_empty());
    }
}
