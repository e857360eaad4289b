//! The MCS Connect Response envelope and the GCC Conference Create Response server data blocks
//! (T.125 / T.124, MS-RDPBCGR 2.2.1.4): one typed reader for every module that needs the server's
//! answer (the decoder's facts, the standard-security client, enumeration, the fuzzer).
//!
//! Hand-written rather than ironrdp-pdu's `ServerGccBlocks`: that decoder refuses server
//! certificates over 1024 bytes and unknown encryption methods, which real servers send, and it
//! does not report where a block broke. Nothing here panics; errors carry absolute byte offsets.

use super::asn1::{self, TagForm};
use super::cursor::{le16, le32, WireError};

/// SC_CORE (MS-RDPBCGR 2.2.1.4.2).
pub const SC_CORE: u16 = 0x0c01;
/// SC_SECURITY (2.2.1.4.3).
pub const SC_SECURITY: u16 = 0x0c02;
/// SC_NET (2.2.1.4.4).
pub const SC_NET: u16 = 0x0c03;
/// SC_MCS_MSGCHANNEL (2.2.1.4.5).
pub const SC_MCS_MSGCHANNEL: u16 = 0x0c04;
/// SC_MULTITRANSPORT (2.2.1.4.6).
pub const SC_MULTITRANSPORT: u16 = 0x0c08;

/// Why the MCS Connect Response envelope could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectResponseError<'a> {
    #[error("unreadable BER header ({0})")]
    Header(WireError),
    /// The outer tag is not [APPLICATION 102] (0x7f 0x66).
    #[error("unexpected tag {0:02x?}")]
    Tag(&'a [u8]),
    #[error("result unreadable ({0})")]
    ResultUnreadable(WireError),
    /// The result is not a one-byte ENUMERATED; `at` is the offset of its tag.
    #[error("result is not a one-byte ENUMERATED at byte {at}")]
    ResultNotEnumerated { at: usize },
}

/// The envelope of an MCS Connect Response (T.125 Connect-Response, BER).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectResponse<'a> {
    /// T.125 Result (0 = rt-successful).
    pub result: u8,
    /// The userData OCTET STRING (the GCC Conference Create Response), when one of the three
    /// fields after the result is one; with its offset in the input.
    pub user_data: Option<(&'a [u8], usize)>,
}

/// (tag bytes, content, content offset, rest) of one TLV.
type Tlv<'a> = (&'a [u8], &'a [u8], usize, &'a [u8]);

/// One BER TLV with a tag of up to two bytes.
fn tlv(buf: &[u8]) -> Result<Tlv<'_>, WireError> {
    let (h, content, rest) = asn1::read_tlv(buf, TagForm::UpToTwo)?;
    // INVARIANT: read_tlv's tag_len <= header_len <= buf.len(); `get` keeps it panic-free anyway.
    let tag = buf.get(..h.tag_len).unwrap_or_default();
    Ok((tag, content, h.header_len, rest))
}

/// Reads the envelope of an MCS Connect Response from X.224 data user data; offsets count from
/// the start of `x224_user_data`.
pub fn connect_response(
    x224_user_data: &[u8],
) -> Result<ConnectResponse<'_>, ConnectResponseError<'_>> {
    let (tag, body, body_at, _) = tlv(x224_user_data).map_err(ConnectResponseError::Header)?;
    if tag != [0x7f, 0x66] {
        return Err(ConnectResponseError::Tag(tag));
    }
    let mut at = body_at;
    let (tag, result, n, mut rest) = tlv(body)
        .map_err(|e| ConnectResponseError::ResultUnreadable(WireError { at: e.at + at, ..e }))?;
    if tag != [0x0a] || result.len() != 1 {
        return Err(ConnectResponseError::ResultNotEnumerated { at });
    }
    at += n + 1;
    let mut user_data = None;
    // calledConnectId INTEGER, domainParameters, userData OCTET STRING
    for _ in 0..3 {
        let Ok((tag, content, n, tail)) = tlv(rest) else {
            break;
        };
        if tag == [0x04] {
            user_data = Some((content, at + n));
        }
        at += rest.len() - tail.len();
        rest = tail;
    }
    Ok(ConnectResponse {
        result: result[0],
        user_data,
    })
}

/// An ALIGNED PER length determinant (X.691 10.9) at `at`: one byte, or two with the top bits 10.
/// Returns (length, bytes used). Fragmented lengths (11xxxxxx) are not used by RDP: an error.
pub fn per_length(b: &[u8], at: usize) -> Result<(usize, usize), WireError> {
    let l0 = *b.get(at).ok_or(WireError::truncated(at, 1))?;
    if l0 & 0x80 == 0 {
        Ok((usize::from(l0), 1))
    } else if l0 & 0xc0 == 0x80 {
        let l1 = *b.get(at + 1).ok_or(WireError::truncated(at + 1, 1))?;
        Ok(((usize::from(l0 & 0x3f) << 8) | usize::from(l1), 2))
    } else {
        Err(WireError::invalid(at, "fragmented PER length"))
    }
}

/// Why the GCC user data could not be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("H.221 key not found")]
    NoKey,
    #[error("unreadable user data length ({0})")]
    Length(WireError),
}

/// The GCC user data blocks after the H.221 key ("Duca" client-to-server, "McDn"
/// server-to-client) of a T.124 ConferenceCreateRequest/Response (MS-RDPBCGR 2.2.1.3.1 /
/// 2.2.1.4.1), with their offset in `user_data`. Some stacks get the PER length wrong: when it
/// runs past the data, what is there is used.
pub fn blocks_after_key<'a>(
    user_data: &'a [u8],
    key: &[u8; 4],
) -> Result<(&'a [u8], usize), UserDataError> {
    let at = user_data
        .windows(4)
        .position(|w| w == key)
        .ok_or(UserDataError::NoKey)?;
    let (len, n) = per_length(user_data, at + 4).map_err(UserDataError::Length)?;
    let start = at + 4 + n;
    let avail = user_data.len().saturating_sub(start);
    let blocks = user_data
        .get(start..start + len.min(avail))
        .unwrap_or_default();
    Ok((blocks, start))
}

/// Where the walk of TS_UD_HEADER blocks stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Fewer than 4 bytes left for a block header at `at`.
    #[error("truncated block header at byte {at}")]
    TruncatedHeader { at: usize, left: usize },
    /// The block at `at` declares a length under 4 or past the data.
    #[error("block 0x{ty:04x} at byte {at}: length {len} invalid ({left} bytes left)")]
    BadLength {
        at: usize,
        ty: u16,
        len: usize,
        left: usize,
    },
}

/// One GCC user data block (TS_UD_HEADER + body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawBlock<'a> {
    pub ty: u16,
    /// Offset of the body (after the 4-byte header), counted from the `base` given to [`blocks`].
    pub at: usize,
    pub body: &'a [u8],
}

/// Splits GCC user data into blocks (MS-RDPBCGR 2.2.1.3.1 TS_UD_HEADER); stops at a malformed
/// header, returning the blocks before it and why. `base` is the offset of `b` in the message.
pub fn blocks(mut b: &[u8], base: usize) -> (Vec<RawBlock<'_>>, Option<BlockError>) {
    let mut out = Vec::new();
    let mut at = base;
    while !b.is_empty() {
        let (Some(ty), Some(len)) = (le16(b, 0), le16(b, 2)) else {
            return (out, Some(BlockError::TruncatedHeader { at, left: b.len() }));
        };
        let len = usize::from(len);
        let (Some(body), Some(tail)) = (b.get(4..len), b.get(len..)) else {
            let left = b.len();
            return (out, Some(BlockError::BadLength { at, ty, len, left }));
        };
        out.push(RawBlock {
            ty,
            at: at + 4,
            body,
        });
        at += len;
        b = tail;
    }
    (out, None)
}

/// SC_CORE: the fields present (a short block leaves the later ones `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCore {
    pub version: Option<u32>,
    pub client_requested_protocols: Option<u32>,
    pub early_capability_flags: Option<u32>,
}

/// SC_SECURITY: encryption method and level, the server random and the server certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerSecurity<'a> {
    pub encryption_method: Option<u32>,
    pub encryption_level: Option<u32>,
    /// serverRandomLen and serverCertLen, when both are there.
    pub lengths: Option<(u32, u32)>,
    /// The serverRandom bytes, when the block holds all `lengths.0` of them.
    pub server_random: Option<&'a [u8]>,
    /// The serverCertificate bytes (maybe empty), when the block holds all `lengths.1` of them.
    pub server_certificate: Option<&'a [u8]>,
}

/// SC_NET: the I/O channel and the channel ids (as many as declared and present).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerNet {
    pub io_channel: Option<u16>,
    pub channel_ids: Vec<u16>,
}

/// One typed server data block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerBlock<'a> {
    Core(ServerCore),
    Security(ServerSecurity<'a>),
    Net(ServerNet),
    /// SC_MCS_MSGCHANNEL: MCSChannelID.
    MessageChannel(Option<u16>),
    /// SC_MULTITRANSPORT: flags.
    MultiTransport(Option<u32>),
    Other {
        ty: u16,
        body: &'a [u8],
    },
}

impl<'a> ServerBlock<'a> {
    /// Types the body of a server block; never fails (short fields are `None`).
    pub fn parse(ty: u16, b: &'a [u8]) -> ServerBlock<'a> {
        match ty {
            SC_CORE => ServerBlock::Core(ServerCore {
                version: le32(b, 0),
                client_requested_protocols: le32(b, 4),
                early_capability_flags: le32(b, 8),
            }),
            SC_SECURITY => {
                let lengths = le32(b, 8).zip(le32(b, 12));
                let (server_random, server_certificate) = match lengths {
                    Some((rl, cl)) => {
                        let rl = rl as usize;
                        let cl = cl as usize;
                        let random = 16usize.checked_add(rl).and_then(|e| b.get(16..e));
                        let cert = 16usize
                            .checked_add(rl)
                            .and_then(|a| Some((a, a.checked_add(cl)?)))
                            .and_then(|(a, e)| b.get(a..e));
                        (random, cert)
                    }
                    None => (None, None),
                };
                ServerBlock::Security(ServerSecurity {
                    encryption_method: le32(b, 0),
                    encryption_level: le32(b, 4),
                    lengths,
                    server_random,
                    server_certificate,
                })
            }
            SC_NET => {
                let count = usize::from(le16(b, 2).unwrap_or(0));
                ServerBlock::Net(ServerNet {
                    io_channel: le16(b, 0),
                    channel_ids: b
                        .get(4..)
                        .unwrap_or(&[])
                        .chunks_exact(2)
                        .take(count)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                })
            }
            SC_MCS_MSGCHANNEL => ServerBlock::MessageChannel(le16(b, 0)),
            SC_MULTITRANSPORT => ServerBlock::MultiTransport(le32(b, 0)),
            ty => ServerBlock::Other { ty, body: b },
        }
    }

    /// The block type.
    pub fn ty(&self) -> u16 {
        match self {
            ServerBlock::Core(_) => SC_CORE,
            ServerBlock::Security(_) => SC_SECURITY,
            ServerBlock::Net(_) => SC_NET,
            ServerBlock::MessageChannel(_) => SC_MCS_MSGCHANNEL,
            ServerBlock::MultiTransport(_) => SC_MULTITRANSPORT,
            ServerBlock::Other { ty, .. } => *ty,
        }
    }

    /// The body bytes of this block (without its header): the fields present, in order, up to
    /// the first absent one. Writes the server random and certificate lengths from the slices.
    pub fn body(&self) -> Vec<u8> {
        fn put32(out: &mut Vec<u8>, vals: &[Option<u32>]) {
            for v in vals.iter().map_while(|v| *v) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        match self {
            ServerBlock::Core(c) => put32(
                &mut out,
                &[
                    c.version,
                    c.client_requested_protocols,
                    c.early_capability_flags,
                ],
            ),
            ServerBlock::Security(s) => {
                put32(&mut out, &[s.encryption_method, s.encryption_level]);
                if let (Some(_), Some(_), Some(r), Some(c)) = (
                    s.encryption_method,
                    s.encryption_level,
                    s.server_random,
                    s.server_certificate,
                ) {
                    out.extend_from_slice(&(r.len() as u32).to_le_bytes());
                    out.extend_from_slice(&(c.len() as u32).to_le_bytes());
                    out.extend_from_slice(r);
                    out.extend_from_slice(c);
                }
            }
            ServerBlock::Net(n) => {
                if let Some(io) = n.io_channel {
                    out.extend_from_slice(&io.to_le_bytes());
                    out.extend_from_slice(&(n.channel_ids.len() as u16).to_le_bytes());
                    for id in &n.channel_ids {
                        out.extend_from_slice(&id.to_le_bytes());
                    }
                }
            }
            ServerBlock::MessageChannel(m) => {
                if let Some(m) = m {
                    out.extend_from_slice(&m.to_le_bytes());
                }
            }
            ServerBlock::MultiTransport(f) => put32(&mut out, &[*f]),
            ServerBlock::Other { body, .. } => out.extend_from_slice(body),
        }
        out
    }

    /// This block with its TS_UD_HEADER, appended to `out`; `None` when the body does not fit
    /// the 16-bit length.
    pub fn emit(&self, out: &mut Vec<u8>) -> Option<()> {
        let body = self.body();
        let len = u16::try_from(body.len().checked_add(4)?).ok()?;
        out.extend_from_slice(&self.ty().to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&body);
        Some(())
    }
}

/// The typed server data blocks of GCC user data (the bytes after "McDn" and its length), with
/// where the walk stopped early.
pub fn server_blocks(b: &[u8], base: usize) -> (Vec<ServerBlock<'_>>, Option<BlockError>) {
    let (raw, err) = blocks(b, base);
    (
        raw.iter()
            .map(|r| ServerBlock::parse(r.ty, r.body))
            .collect(),
        err,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (kind, u32 fields, random, certificate or body, channel ids)
    type Spec = (u8, Vec<Option<u32>>, Vec<u8>, Vec<u8>, Vec<u16>);

    fn owned_block() -> impl Strategy<Value = Spec> {
        (
            0u8..6,
            proptest::collection::vec(proptest::option::of(any::<u32>()), 3),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(any::<u16>(), 0..20),
        )
    }

    fn make<'a>(
        kind: u8,
        v: &[Option<u32>],
        random: &'a [u8],
        cert: &'a [u8],
        ids: &[u16],
    ) -> ServerBlock<'a> {
        // Canonical forms: what parse gives back from what body() writes.
        let prefix = |n: usize| -> Vec<Option<u32>> {
            let mut out: Vec<Option<u32>> = v.iter().take(n).copied().collect();
            if let Some(i) = out.iter().position(Option::is_none) {
                out.iter_mut().skip(i).for_each(|x| *x = None);
            }
            out
        };
        match kind {
            0 => {
                let p = prefix(3);
                ServerBlock::Core(ServerCore {
                    version: p[0],
                    client_requested_protocols: p[1],
                    early_capability_flags: p[2],
                })
            }
            1 => {
                let full = v[0].is_some() && v[1].is_some();
                let p = prefix(2);
                ServerBlock::Security(ServerSecurity {
                    encryption_method: p[0],
                    encryption_level: p[1],
                    lengths: full.then_some((random.len() as u32, cert.len() as u32)),
                    server_random: full.then_some(random),
                    server_certificate: full.then_some(cert),
                })
            }
            2 => ServerBlock::Net(ServerNet {
                io_channel: v[0].map(|x| x as u16),
                channel_ids: if v[0].is_some() {
                    ids.to_vec()
                } else {
                    Vec::new()
                },
            }),
            3 => ServerBlock::MessageChannel(v[0].map(|x| x as u16)),
            4 => ServerBlock::MultiTransport(v[0]),
            _ => ServerBlock::Other {
                ty: 0x0c10 | (v.len() as u16),
                body: cert,
            },
        }
    }

    proptest! {
        #[test]
        fn server_blocks_round_trip(specs in proptest::collection::vec(owned_block(), 0..6)) {
            let typed: Vec<ServerBlock<'_>> = specs
                .iter()
                .map(|(k, v, r, c, ids)| make(*k, v, r, c, ids))
                .collect();
            let mut bytes = Vec::new();
            for b in &typed {
                b.emit(&mut bytes).unwrap();
            }
            let (back, err) = server_blocks(&bytes, 9);
            prop_assert_eq!(err, None);
            prop_assert_eq!(back, typed);
        }

        #[test]
        fn server_blocks_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), base in 0usize..1000) {
            let (raw, err) = blocks(&data, base);
            let mut end = base;
            for r in &raw {
                prop_assert_eq!(r.at, end + 4);
                prop_assert_eq!(&data[r.at - base..r.at - base + r.body.len()], r.body);
                end = r.at + r.body.len();
            }
            match err {
                None => prop_assert_eq!(end, base + data.len()),
                Some(BlockError::TruncatedHeader { at, left } | BlockError::BadLength { at, left, .. }) => {
                    prop_assert_eq!(at, end);
                    prop_assert_eq!(left, base + data.len() - end);
                }
            }
            let _ = server_blocks(&data, base);
            let _ = connect_response(&data);
            let _ = blocks_after_key(&data, b"McDn");
        }

        #[test]
        fn connect_response_round_trip(result: u8, ud in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut body = asn1::tlv(0x0a, &[result]);
            body.extend(asn1::tlv(0x02, &[0]));
            body.extend(asn1::tlv(0x30, &[]));
            body.extend(asn1::tlv(0x04, &ud));
            let mut pdu = vec![0x7f, 0x66];
            pdu.extend(asn1::tlv(0, &body).into_iter().skip(1));
            let cr = connect_response(&pdu).unwrap();
            prop_assert_eq!(cr.result, result);
            let (got, at) = cr.user_data.unwrap();
            prop_assert_eq!(got, &ud[..]);
            prop_assert_eq!(&pdu[at..at + ud.len()], &ud[..]);
        }
    }

    #[test]
    fn errors_say_where() {
        let (_, err) = blocks(
            &[0x01, 0x0c, 0x08, 0x00, 1, 2, 3, 4, 0x02, 0x0c, 0xff, 0x00],
            100,
        );
        assert_eq!(
            err,
            Some(BlockError::BadLength {
                at: 108,
                ty: 0x0c02,
                len: 255,
                left: 4
            })
        );
        assert_eq!(
            per_length(&[0xc1], 0),
            Err(WireError::invalid(0, "fragmented PER length"))
        );
        assert_eq!(
            connect_response(&[0x7f, 0x66, 0x04, 0x0a, 0x02, 0, 0]),
            Err(ConnectResponseError::ResultNotEnumerated { at: 3 })
        );
    }
}
