//! NTLM messages (MS-NLMP 2.2.1): the signature and message type, the security-buffer fields
//! (len, maxlen, offset) that point into the payload, the VERSION structure (2.2.2.10), the
//! target info AV pairs (2.2.2.1), and a NEGOTIATE_MESSAGE writer. Pure, never panics; a field
//! that points outside the message is an error with the offset of the field.

use std::fmt;

use super::cursor::{le16, le32};
use super::WireError;

/// "NTLMSSP\0" (MS-NLMP 2.2.1.1).
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// NTLMSSP_NEGOTIATE_UNICODE (MS-NLMP 2.2.2.5 flag A).
pub const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
/// NTLMSSP_NEGOTIATE_VERSION (flag T).
pub const NEGOTIATE_VERSION: u32 = 0x0200_0000;

/// MessageType values.
pub const NEGOTIATE: u32 = 1;
pub const CHALLENGE: u32 = 2;
pub const AUTHENTICATE: u32 = 3;

/// AV pair ids (MS-NLMP 2.2.2.1).
pub const AV_EOL: u16 = 0;
pub const AV_NB_COMPUTER_NAME: u16 = 1;
pub const AV_NB_DOMAIN_NAME: u16 = 2;
pub const AV_DNS_COMPUTER_NAME: u16 = 3;
pub const AV_DNS_DOMAIN_NAME: u16 = 4;
pub const AV_DNS_TREE_NAME: u16 = 5;
pub const AV_TIMESTAMP: u16 = 7;

/// Offsets of the security-buffer fields and of VERSION in each message's fixed part.
pub mod layout {
    /// NEGOTIATE: DomainNameFields, WorkstationFields; VERSION.
    pub const NEGOTIATE_FIELDS: [usize; 2] = [16, 24];
    pub const NEGOTIATE_VERSION: usize = 32;
    /// CHALLENGE: TargetNameFields, TargetInfoFields; VERSION.
    pub const CHALLENGE_TARGET_NAME: usize = 12;
    pub const CHALLENGE_TARGET_INFO: usize = 40;
    pub const CHALLENGE_VERSION: usize = 48;
    /// AUTHENTICATE: Lm, Nt, Domain, User, Workstation, EncryptedRandomSessionKey; VERSION.
    pub const AUTHENTICATE_LM: usize = 12;
    pub const AUTHENTICATE_NT: usize = 20;
    pub const AUTHENTICATE_DOMAIN: usize = 28;
    pub const AUTHENTICATE_USER: usize = 36;
    pub const AUTHENTICATE_WORKSTATION: usize = 44;
    pub const AUTHENTICATE_SESSION_KEY: usize = 52;
    pub const AUTHENTICATE_VERSION: usize = 64;
    /// NegotiateFlags of each message.
    pub const NEGOTIATE_FLAGS: usize = 12;
    pub const CHALLENGE_FLAGS: usize = 20;
    pub const AUTHENTICATE_FLAGS: usize = 60;
}

/// The NTLM message inside a token (raw, or wrapped in SPNEGO): from its signature on.
pub fn find(token: &[u8]) -> Option<&[u8]> {
    let start = token
        .windows(SIGNATURE.len())
        .position(|w| w == SIGNATURE)?;
    token.get(start..)
}

/// The MessageType of a message that starts with the signature.
pub fn message_type(msg: &[u8]) -> Result<u32, WireError> {
    le32(msg, 8).ok_or_else(|| WireError::truncated(msg.len(), 12 - msg.len().min(12)))
}

/// A security-buffer field: `len` bytes at `offset` of the message (`max_len` is not used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityBuffer {
    pub len: u16,
    pub max_len: u16,
    pub offset: u32,
}

impl SecurityBuffer {
    /// The field at byte `at` of the message.
    pub fn read(msg: &[u8], at: usize) -> Result<SecurityBuffer, WireError> {
        match (le16(msg, at), le16(msg, at + 2), le32(msg, at + 4)) {
            (Some(len), Some(max_len), Some(offset)) => Ok(SecurityBuffer {
                len,
                max_len,
                offset,
            }),
            _ => Err(WireError::truncated(
                msg.len(),
                (at + 8).saturating_sub(msg.len()),
            )),
        }
    }

    /// The bytes the field at `at` points at; None when it is empty; an error (at the field) when
    /// it points outside the message.
    pub fn payload(msg: &[u8], at: usize) -> Result<Option<&[u8]>, WireError> {
        let b = SecurityBuffer::read(msg, at)?;
        if b.len == 0 {
            return Ok(None);
        }
        let start = usize::try_from(b.offset)
            .map_err(|_| WireError::invalid(at, "security buffer offset"))?;
        start
            .checked_add(usize::from(b.len))
            .and_then(|end| msg.get(start..end))
            .map(Some)
            .ok_or_else(|| WireError::invalid(at, "security buffer points outside the message"))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.max_len.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
    }
}

/// The VERSION structure (MS-NLMP 2.2.2.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub build: u16,
    /// NTLMRevisionCurrent (15 = NTLMSSP_REVISION_W2K3).
    pub revision: u8,
}

impl Version {
    /// The VERSION at `at`; None when it is not there or all zero (not filled in).
    pub fn read(msg: &[u8], at: usize) -> Option<Version> {
        let v = msg.get(at..at.checked_add(8)?)?;
        if v.iter().all(|&b| b == 0) {
            return None;
        }
        Some(Version {
            major: v[0],
            minor: v[1],
            build: u16::from_le_bytes([v[2], v[3]]),
            revision: v[7],
        })
    }

    /// Whether the VERSION field at `at` exists: the flag is set and no payload of the fields at
    /// `fields` starts before its end.
    pub fn present(msg: &[u8], flags: u32, at: usize, fields: &[usize]) -> bool {
        if flags & NEGOTIATE_VERSION == 0 || msg.len() < at + 8 {
            return false;
        }
        fields.iter().all(|&f| match SecurityBuffer::read(msg, f) {
            Ok(b) => b.len == 0 || b.offset as usize >= at + 8,
            Err(_) => false,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.major, self.minor]);
        out.extend_from_slice(&self.build.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, self.revision]);
    }
}

impl fmt::Display for Version {
    /// "major.minor.build".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// One AV pair of a target info, with the offset of its id within the target info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvPair<'a> {
    pub id: u16,
    pub value: &'a [u8],
    pub at: usize,
}

/// Why a target info could not be walked to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvError {
    /// The list ends without MsvAvEOL.
    NoEol { at: usize },
    /// The pair `id` announces more bytes than the target info holds.
    PairExceeds { id: u16, at: usize },
}

/// The AV pairs of a target info up to MsvAvEOL (not yielded); the walk ends at the first error.
pub fn av_pairs(info: &[u8]) -> impl Iterator<Item = Result<AvPair<'_>, AvError>> {
    let mut pos = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let (Some(id), Some(len)) = (le16(info, pos), le16(info, pos + 2)) else {
            done = true;
            return Some(Err(AvError::NoEol { at: pos }));
        };
        if id == AV_EOL {
            done = true;
            return None;
        }
        let Some(value) = info.get(pos + 4..pos + 4 + usize::from(len)) else {
            done = true;
            return Some(Err(AvError::PairExceeds { id, at: pos }));
        };
        let at = pos;
        pos += 4 + usize::from(len);
        Some(Ok(AvPair { id, value, at }))
    })
}

/// Writes AV pairs and the MsvAvEOL. None when a value is longer than 65535 bytes.
pub fn emit_av_pairs(pairs: &[(u16, &[u8])], out: &mut Vec<u8>) -> Option<()> {
    for (id, v) in pairs {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&u16::try_from(v.len()).ok()?.to_le_bytes());
        out.extend_from_slice(v);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    Some(())
}

/// A NEGOTIATE_MESSAGE without domain or workstation (MS-NLMP 2.2.1.1), with a VERSION.
pub fn negotiate(flags: u32, version: Version) -> Vec<u8> {
    let mut m = SIGNATURE.to_vec();
    m.extend_from_slice(&NEGOTIATE.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    // DomainNameFields and WorkstationFields: empty, pointing at the end of the fixed part.
    for _ in 0..2 {
        SecurityBuffer {
            len: 0,
            max_len: 0,
            offset: 40,
        }
        .emit(&mut m);
    }
    version.emit(&mut m);
    m
}

/// The contract on `data`: nothing panics, payloads lie inside the message, AV pairs inside the
/// target info, and a walk of AV pairs written again reads back the same.
#[doc(hidden)]
pub fn exercise(data: &[u8]) {
    let msg = find(data).unwrap_or(data);
    let _ = message_type(msg);
    for at in [12, 16, 20, 24, 28, 36, 40, 44, 52] {
        if let Ok(Some(p)) = SecurityBuffer::payload(msg, at) {
            let start = p.as_ptr() as usize - msg.as_ptr() as usize;
            assert!(start + p.len() <= msg.len(), "a payload past the end");
        }
        let _ = Version::present(msg, u32::MAX, at, &[12, 40]);
        let _ = Version::read(msg, at);
    }
    let pairs: Vec<_> = av_pairs(data).map_while(Result::ok).collect();
    for p in &pairs {
        assert!(
            p.at + 4 + p.value.len() <= data.len(),
            "an AV pair past the end"
        );
    }
    let mut again = Vec::new();
    let list: Vec<(u16, &[u8])> = pairs.iter().map(|p| (p.id, p.value)).collect();
    if emit_av_pairs(&list, &mut again).is_some() {
        let back: Vec<_> = av_pairs(&again)
            .collect::<Result<_, _>>()
            .expect("re-emitted pairs walk");
        assert_eq!(back.len(), pairs.len());
        assert!(back
            .iter()
            .zip(&pairs)
            .all(|(a, b)| a.id == b.id && a.value == b.value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negotiate_reads_back() {
        let v = Version {
            major: 10,
            minor: 0,
            build: 19041,
            revision: 15,
        };
        let m = negotiate(0xe208_8297, v);
        assert_eq!(m.len(), 40);
        assert_eq!(find(&m), Some(&m[..]));
        assert_eq!(message_type(&m), Ok(NEGOTIATE));
        assert!(Version::present(
            &m,
            0xe208_8297,
            32,
            &layout::NEGOTIATE_FIELDS
        ));
        assert_eq!(Version::read(&m, 32), Some(v));
        assert_eq!(v.to_string(), "10.0.19041");
        assert_eq!(SecurityBuffer::payload(&m, 16), Ok(None));
    }

    #[test]
    fn a_field_outside_the_message_is_an_error_at_the_field() {
        let mut m = SIGNATURE.to_vec();
        m.extend_from_slice(&CHALLENGE.to_le_bytes());
        SecurityBuffer {
            len: 4,
            max_len: 4,
            offset: 200,
        }
        .emit(&mut m);
        let e = SecurityBuffer::payload(&m, 12).unwrap_err();
        assert_eq!(e.at, 12);
        assert!(SecurityBuffer::payload(&m, 16).unwrap_err().is_truncated());
    }

    #[test]
    fn av_pairs_walk_and_stop() {
        let mut info = Vec::new();
        emit_av_pairs(
            &[(AV_NB_DOMAIN_NAME, b"D\0"), (AV_TIMESTAMP, &[1; 8])],
            &mut info,
        )
        .unwrap();
        let p: Vec<_> = av_pairs(&info).collect::<Result<_, _>>().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[1].id, p[1].at), (AV_TIMESTAMP, 6));
        assert_eq!(
            av_pairs(&info[..4]).last(),
            Some(Err(AvError::PairExceeds {
                id: AV_NB_DOMAIN_NAME,
                at: 0
            }))
        );
        assert_eq!(
            av_pairs(&info[..8]).last(),
            Some(Err(AvError::NoEol { at: 6 }))
        );
    }

    proptest! {
        #[test]
        fn random_bytes_hold_the_contract(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            exercise(&data);
            let mut m = SIGNATURE.to_vec();
            m.extend_from_slice(&data);
            exercise(&m);
        }

        #[test]
        fn written_pairs_read_back(pairs in proptest::collection::vec((1u16.., proptest::collection::vec(any::<u8>(), 0..40)), 0..6)) {
            let list: Vec<(u16, &[u8])> = pairs.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            let mut info = Vec::new();
            emit_av_pairs(&list, &mut info).unwrap();
            let back: Vec<_> = av_pairs(&info).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back.len(), list.len());
            for (b, (id, v)) in back.iter().zip(&list) {
                prop_assert_eq!(b.id, *id);
                prop_assert_eq!(b.value, *v);
            }
        }
    }
}
