//! TPKT (RFC 1006) and fast-path framing, and the X.224 TPDUs RDP uses (ITU-T X.224 13.3-13.7):
//! Connection Request with its cookie or routing token and RDP_NEG_REQ, Connection Confirm with
//! RDP_NEG_RSP or RDP_NEG_FAILURE (MS-RDPBCGR 2.2.1.1 / 2.2.1.2), Data and Disconnect Request.
//!
//! The field types are IronRDP's (`ironrdp_pdu::nego::{SecurityProtocol, RequestFlags,
//! ResponseFlags, FailureCode}`, unknown bits retained), but the readers are not: ironrdp-pdu's
//! `nego::ConnectionRequest` / `ConnectionConfirm` decoders report no byte offsets, stop at the
//! first problem without the fields read before it, and refuse what a diagnostics tool must still
//! read (a confirm with trailing bytes, a length indicator that disagrees, unknown TPDU codes).
//! Here every error carries the absolute offset and a typed kind whose `Display` is the text the
//! analyzer has always reported.

use std::fmt;
use std::ops::Range;

use ironrdp_pdu::nego::{FailureCode, RequestFlags, ResponseFlags, SecurityProtocol};

use super::cursor::Cursor;

/// TPKT version byte (RFC 1006).
pub const TPKT_VERSION: u8 = 3;
/// TPKT header size: version (1), reserved (1), length (2).
pub const TPKT_HEADER_LEN: usize = 4;
/// TPKT header plus the X.224 Data header (LI, code, EOT).
pub const DATA_HEADER_LEN: usize = 7;
/// Offset of a Connection Request's / Confirm's variable part: TPKT (4), LI (1), code (1),
/// DST-REF (2), SRC-REF (2), class (1).
pub const CONNECTION_VARIABLE_AT: usize = 11;

/// X.224 TPDU codes (upper nibble of the code byte).
pub const CODE_CR: u8 = 0xE0;
pub const CODE_CC: u8 = 0xD0;
pub const CODE_DR: u8 = 0x80;
pub const CODE_DATA: u8 = 0xF0;

/// RDP_NEG_* types (MS-RDPBCGR 2.2.1.1.1, 2.2.1.2.1, 2.2.1.2.2) and their fixed length.
pub const TYPE_RDP_NEG_REQ: u8 = 0x01;
pub const TYPE_RDP_NEG_RSP: u8 = 0x02;
pub const TYPE_RDP_NEG_FAILURE: u8 = 0x03;
pub const RDP_NEG_LEN: u16 = 8;

/// What is wrong with a frame or TPDU. `Display` gives the analyzer's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum X224ErrorKind {
    /// A TPKT length below TPKT + X.224 header.
    TpktLengthTooShort { len: usize },
    /// A fast-path length below 2.
    FastPathLengthTooShort { len: usize },
    /// The first byte is neither TPKT version 3 nor a fast-path action 0.
    NotAFrame { first: u8 },
    /// The PDU cannot hold TPKT + LI + code.
    TpduTooShort,
    /// A Data TPDU whose length indicator is not 2 (or that ends before its EOT byte).
    DataLengthIndicator { li: u8 },
    /// A CR/CC length indicator below its fixed header.
    LengthIndicatorTooShort { li: u8 },
    /// A CR/CC length indicator that does not match the PDU length.
    LengthIndicatorMismatch { li: u8, pdu_len: usize },
    /// A TPDU code other than CR, CC, DR, DT.
    UnknownCode { code: u8 },
    /// A `Cookie: ` line without CR LF.
    CookieUnterminated,
    /// Neither a cookie, a routing token nor RDP_NEG_REQ in a Connection Request.
    UnexpectedRequestByte { byte: u8 },
    /// Fewer than 8 bytes of RDP_NEG_REQ.
    NegReqTruncated { have: usize },
    /// RDP_NEG_REQ with a type other than 0x01.
    NegReqType { ty: u8 },
    /// RDP_NEG_REQ with a length other than 8.
    NegReqLength { len: u16 },
    /// Fewer than 8 bytes of RDP_NEG_RSP / RDP_NEG_FAILURE.
    NegRspTruncated { have: usize },
    /// RDP_NEG_RSP / FAILURE with a length other than 8.
    NegRspLength { len: u16 },
    /// A negotiation response type other than 0x02 or 0x03.
    NegRspType { ty: u8 },
}

impl fmt::Display for X224ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use X224ErrorKind as K;
        match *self {
            K::TpktLengthTooShort { len } => {
                write!(f, "TPKT length {len} is shorter than a TPKT + X.224 header")
            }
            K::FastPathLengthTooShort { len } => write!(f, "fast-path length {len} too short"),
            K::NotAFrame { first } => write!(
                f,
                "byte 0x{first:02x} starts neither a TPKT nor a fast-path PDU"
            ),
            K::TpduTooShort => write!(f, "TPKT PDU too short"),
            K::DataLengthIndicator { li } => {
                write!(f, "X.224 data header length indicator {li}, expected 2")
            }
            K::LengthIndicatorTooShort { li } => {
                write!(f, "X.224 length indicator {li} shorter than the fixed header")
            }
            K::LengthIndicatorMismatch { li, pdu_len } => write!(
                f,
                "X.224 length indicator {li} disagrees with the TPKT length {pdu_len} (expected {})",
                pdu_len.saturating_sub(TPKT_HEADER_LEN + 1)
            ),
            K::UnknownCode { code } => write!(f, "unknown X.224 TPDU code 0x{code:02x}"),
            K::CookieUnterminated => write!(f, "cookie not terminated by CR LF"),
            K::UnexpectedRequestByte { byte } => write!(
                f,
                "unexpected byte 0x{byte:02x} where RDP_NEG_REQ or a cookie was expected"
            ),
            K::NegReqTruncated { have } => write!(f, "RDP_NEG_REQ truncated: {have} of 8 bytes"),
            K::NegReqType { ty } => write!(f, "RDP_NEG_REQ type 0x{ty:02x}, expected 0x01"),
            K::NegReqLength { len } => write!(f, "RDP_NEG_REQ length {len}, expected 8"),
            K::NegRspTruncated { have } => {
                write!(f, "negotiation response truncated: {have} of 8 bytes")
            }
            K::NegRspLength { len } => write!(f, "negotiation response length {len}, expected 8"),
            K::NegRspType { ty } => write!(
                f,
                "negotiation response type 0x{ty:02x}, expected 0x02 or 0x03"
            ),
        }
    }
}

/// A failed X.224 read: what and at which byte of the PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {at}")]
pub struct X224Error {
    pub at: usize,
    pub kind: X224ErrorKind,
}

fn err(at: usize, kind: X224ErrorKind) -> X224Error {
    X224Error { at, kind }
}

/// The framing of one PDU of an RDP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Tpkt,
    FastPath,
}

/// Frames the next TPKT (RFC 1006) or fast-path (MS-RDPBCGR 2.2.9.1.2) PDU at the start of `buf`:
/// `Ok(Some((kind, total length)))` when it is all there, `Ok(None)` when more bytes are needed,
/// an error (at byte 0) when the header cannot start either.
pub fn frame(buf: &[u8]) -> Result<Option<(FrameKind, usize)>, X224Error> {
    Ok(frame_header(buf)?.filter(|&(_, len)| buf.len() >= len))
}

/// The framing and total length of the PDU at the start of `buf` once its header is there
/// (`Ok(None)` before), whether or not the rest is.
pub fn frame_header(buf: &[u8]) -> Result<Option<(FrameKind, usize)>, X224Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (kind, len) = if first == TPKT_VERSION {
        let Some(len) = super::cursor::be16(buf, 2) else {
            return Ok(None);
        };
        let len = usize::from(len);
        if len < TPKT_HEADER_LEN + 3 {
            return Err(err(0, X224ErrorKind::TpktLengthTooShort { len }));
        }
        (FrameKind::Tpkt, len)
    } else if first & 0x3 == 0 {
        // Fast-path: action bits 0; the length in one byte, or two when the top bit is set.
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let len = if b1 & 0x80 != 0 {
            let Some(&b2) = buf.get(2) else {
                return Ok(None);
            };
            (usize::from(b1 & 0x7f) << 8) | usize::from(b2)
        } else {
            usize::from(b1)
        };
        if len < 2 {
            return Err(err(0, X224ErrorKind::FastPathLengthTooShort { len }));
        }
        (FrameKind::FastPath, len)
    } else {
        return Err(err(0, X224ErrorKind::NotAFrame { first }));
    };
    Ok(Some((kind, len)))
}

/// The first line of a Connection Request's variable part (MS-RDPBCGR 2.2.1.1), without CR LF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestToken<'a> {
    /// `Cookie: mstshash=NAME`: the name.
    Cookie(&'a [u8]),
    /// `Cookie: msts=…` (a load balancer's routing token): what follows `msts=`.
    RoutingToken(&'a [u8]),
    /// Another `Cookie: ` line: what follows `Cookie: `.
    OtherCookie(&'a [u8]),
    /// An opaque routing token (a connection broker's `tsv://…`): the whole line.
    Opaque(&'a [u8]),
}

impl RequestToken<'_> {
    fn emit(&self, out: &mut Vec<u8>) {
        let (prefix, v): (&[u8], _) = match *self {
            RequestToken::Cookie(v) => (b"Cookie: mstshash=", v),
            RequestToken::RoutingToken(v) => (b"Cookie: msts=", v),
            RequestToken::OtherCookie(v) => (b"Cookie: ", v),
            RequestToken::Opaque(v) => (b"", v),
        };
        out.extend_from_slice(prefix);
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
}

/// RDP_NEG_REQ (MS-RDPBCGR 2.2.1.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegReq {
    pub flags: RequestFlags,
    pub protocols: SecurityProtocol,
}

/// An X.224 Connection Request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionRequest<'a> {
    pub token: Option<RequestToken<'a>>,
    pub neg: Option<NegReq>,
    /// Bytes after RDP_NEG_REQ (RDP_NEG_CORRELATION_INFO when the flag says so).
    pub correlation_info: &'a [u8],
}

/// What a Connection Confirm carries (MS-RDPBCGR 2.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// No negotiation data: a pre-RDP-5.2 server selecting standard RDP security.
    None,
    /// RDP_NEG_RSP.
    Response {
        flags: ResponseFlags,
        selected: SecurityProtocol,
    },
    /// RDP_NEG_FAILURE (its flags byte is reserved).
    Failure { code: FailureCode },
}

/// An X.224 Connection Confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfirm {
    pub negotiation: Negotiation,
}

/// One TPDU in a TPKT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tpdu<'a> {
    ConnectionRequest(ConnectionRequest<'a>),
    ConnectionConfirm(ConnectionConfirm),
    DisconnectRequest,
    /// Data TPDU: where the user data (MCS) lies in the PDU.
    Data {
        user_data: Range<usize>,
    },
}

impl Tpdu<'_> {
    /// Reads a complete TPKT PDU (as framed by [`frame`]). The TPKT header itself is not checked
    /// (the framer did); the X.224 header is, against the PDU's length.
    pub fn parse(pdu: &[u8]) -> Result<Tpdu<'_>, X224Error> {
        let (Some(&li), Some(&code)) = (pdu.get(4), pdu.get(5)) else {
            return Err(err(0, X224ErrorKind::TpduTooShort));
        };
        match code & 0xF0 {
            CODE_DATA => {
                if li != 2 || pdu.len() < DATA_HEADER_LEN {
                    return Err(err(4, X224ErrorKind::DataLengthIndicator { li }));
                }
                Ok(Tpdu::Data {
                    user_data: DATA_HEADER_LEN..pdu.len(),
                })
            }
            c @ (CODE_CR | CODE_CC) => {
                if li < 6 {
                    return Err(err(4, X224ErrorKind::LengthIndicatorTooShort { li }));
                }
                if TPKT_HEADER_LEN + 1 + usize::from(li) != pdu.len() {
                    return Err(err(
                        4,
                        X224ErrorKind::LengthIndicatorMismatch {
                            li,
                            pdu_len: pdu.len(),
                        },
                    ));
                }
                let var = pdu.get(CONNECTION_VARIABLE_AT..).unwrap_or_default();
                if c == CODE_CR {
                    parse_request(var, CONNECTION_VARIABLE_AT).map(Tpdu::ConnectionRequest)
                } else {
                    parse_confirm(var, CONNECTION_VARIABLE_AT).map(Tpdu::ConnectionConfirm)
                }
            }
            CODE_DR => Ok(Tpdu::DisconnectRequest),
            other => Err(err(5, X224ErrorKind::UnknownCode { code: other })),
        }
    }

    /// Writes the TPDU in a TPKT. `Data` writes only the headers, sized for `user_data`'s length.
    /// `None` when it does not fit a TPKT (or an X.224 length indicator).
    pub fn emit(&self) -> Option<Vec<u8>> {
        match self {
            Tpdu::Data { user_data } => data_header(user_data.len()).map(|h| h.to_vec()),
            Tpdu::DisconnectRequest => {
                // DST-REF, SRC-REF, reason (0: not specified).
                connection_tpdu(CODE_DR, &[])
            }
            Tpdu::ConnectionRequest(cr) => {
                let mut var = Vec::new();
                if let Some(t) = &cr.token {
                    t.emit(&mut var);
                }
                if let Some(n) = &cr.neg {
                    var.extend_from_slice(&[TYPE_RDP_NEG_REQ, n.flags.bits()]);
                    var.extend_from_slice(&RDP_NEG_LEN.to_le_bytes());
                    var.extend_from_slice(&n.protocols.bits().to_le_bytes());
                }
                var.extend_from_slice(cr.correlation_info);
                connection_tpdu(CODE_CR, &var)
            }
            Tpdu::ConnectionConfirm(cc) => {
                let (ty, flags, value) = match cc.negotiation {
                    Negotiation::None => return connection_tpdu(CODE_CC, &[]),
                    Negotiation::Response { flags, selected } => {
                        (TYPE_RDP_NEG_RSP, flags.bits(), selected.bits())
                    }
                    Negotiation::Failure { code } => (TYPE_RDP_NEG_FAILURE, 0, u32::from(code)),
                };
                let mut var = vec![ty, flags];
                var.extend_from_slice(&RDP_NEG_LEN.to_le_bytes());
                var.extend_from_slice(&value.to_le_bytes());
                connection_tpdu(CODE_CC, &var)
            }
        }
    }
}

/// TPKT + X.224 Data header for `user_data_len` bytes of user data, `None` beyond a TPKT's 64 KiB.
pub fn data_header(user_data_len: usize) -> Option<[u8; DATA_HEADER_LEN]> {
    let total = u16::try_from(user_data_len.checked_add(DATA_HEADER_LEN)?).ok()?;
    let [hi, lo] = total.to_be_bytes();
    Some([TPKT_VERSION, 0, hi, lo, 2, CODE_DATA, 0x80])
}

/// A CR/CC/DR TPDU (fixed part with zero references and class 0) with its variable part.
fn connection_tpdu(code: u8, var: &[u8]) -> Option<Vec<u8>> {
    let li = u8::try_from(6 + var.len()).ok()?;
    let total = u16::try_from(TPKT_HEADER_LEN + 1 + usize::from(li)).ok()?;
    let mut out = Vec::with_capacity(usize::from(total));
    out.extend_from_slice(&[TPKT_VERSION, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[li, code, 0, 0, 0, 0, 0]);
    out.extend_from_slice(var);
    Some(out)
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn parse_request(var: &[u8], base: usize) -> Result<ConnectionRequest<'_>, X224Error> {
    let mut token = None;
    let mut pos = 0;
    if let Some(line) = var.strip_prefix(b"Cookie: ") {
        let end = find_crlf(var).ok_or(err(base, X224ErrorKind::CookieUnterminated))?;
        // `Cookie: ` holds no CR LF, so the line ends at or after its end.
        let text = line.get(..end.saturating_sub(8)).unwrap_or_default();
        token = Some(if let Some(v) = text.strip_prefix(b"mstshash=") {
            RequestToken::Cookie(v)
        } else if let Some(v) = text.strip_prefix(b"msts=") {
            RequestToken::RoutingToken(v)
        } else {
            RequestToken::OtherCookie(text)
        });
        pos = end + 2;
    } else if let Some(&b) = var.first().filter(|&&b| b != TYPE_RDP_NEG_REQ) {
        let end =
            find_crlf(var).ok_or(err(base, X224ErrorKind::UnexpectedRequestByte { byte: b }))?;
        token = Some(RequestToken::Opaque(&var[..end]));
        pos = end + 2;
    }
    let rest = var.get(pos..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(ConnectionRequest {
            token,
            neg: None,
            correlation_info: rest,
        });
    }
    let at = base + pos;
    let mut c = Cursor::at(rest, at);
    let fixed = c
        .read_array::<8>()
        .map_err(|_| err(at, X224ErrorKind::NegReqTruncated { have: rest.len() }))?;
    if fixed[0] != TYPE_RDP_NEG_REQ {
        return Err(err(at, X224ErrorKind::NegReqType { ty: fixed[0] }));
    }
    let len = u16::from_le_bytes([fixed[2], fixed[3]]);
    if len != RDP_NEG_LEN {
        return Err(err(at + 2, X224ErrorKind::NegReqLength { len }));
    }
    Ok(ConnectionRequest {
        token,
        neg: Some(NegReq {
            flags: RequestFlags::from_bits_retain(fixed[1]),
            protocols: SecurityProtocol::from_bits_retain(u32::from_le_bytes([
                fixed[4], fixed[5], fixed[6], fixed[7],
            ])),
        }),
        correlation_info: c.remaining(),
    })
}

fn parse_confirm(var: &[u8], base: usize) -> Result<ConnectionConfirm, X224Error> {
    if var.is_empty() {
        return Ok(ConnectionConfirm {
            negotiation: Negotiation::None,
        });
    }
    // Bytes after the 8 are not read (real servers send none; the analyzer never flagged them).
    let fixed = Cursor::at(var, base)
        .read_array::<8>()
        .map_err(|_| err(base, X224ErrorKind::NegRspTruncated { have: var.len() }))?;
    let len = u16::from_le_bytes([fixed[2], fixed[3]]);
    if len != RDP_NEG_LEN {
        return Err(err(base + 2, X224ErrorKind::NegRspLength { len }));
    }
    let value = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let negotiation = match fixed[0] {
        TYPE_RDP_NEG_RSP => Negotiation::Response {
            flags: ResponseFlags::from_bits_retain(fixed[1]),
            selected: SecurityProtocol::from_bits_retain(value),
        },
        TYPE_RDP_NEG_FAILURE => Negotiation::Failure {
            code: FailureCode::from(value),
        },
        ty => return Err(err(base, X224ErrorKind::NegRspType { ty })),
    };
    Ok(ConnectionConfirm { negotiation })
}

/// Where the variable part (cookie or routing-token line, RDP_NEG_REQ) of a TPKT-framed
/// Connection Request at the start of `stream` lies, to the end of `stream` (which may hold more,
/// or less, than the PDU). Reads
/// only the fixed header (TPKT version, CR code), not the lengths, so that a stream cut short or
/// a PDU with a wrong length indicator still shows its first line.
pub fn request_variable_part(stream: &[u8]) -> Option<Range<usize>> {
    if stream.len() <= CONNECTION_VARIABLE_AT
        || stream[0] != TPKT_VERSION
        || stream[5] & 0xF0 != CODE_CR
    {
        return None;
    }
    Some(CONNECTION_VARIABLE_AT..stream.len())
}

/// Checks the reader/writer contract on `data` (for [`super::exercise`]).
pub(super) fn exercise(data: &[u8]) {
    if let Ok(Some((_, len))) = frame(data) {
        assert!(len <= data.len(), "a frame longer than its input");
    }
    match Tpdu::parse(data) {
        Ok(t) => {
            if let Tpdu::Data { user_data } = &t {
                assert!(user_data.end <= data.len() && user_data.start <= user_data.end);
            }
            // What was read writes back and reads back as the same TPDU (the writer zeroes the
            // references and class, and does not carry a confirm's unread trailing bytes; a Data
            // TPDU is its header written again before the same user data).
            let again = match &t {
                Tpdu::Data { user_data } => data_header(user_data.len()).map(|h| {
                    let mut v = h.to_vec();
                    v.extend_from_slice(data.get(user_data.clone()).unwrap_or_default());
                    v
                }),
                _ => t.emit(),
            };
            if let Some(again) = again {
                assert_eq!(
                    Tpdu::parse(&again),
                    Ok(t),
                    "an emitted TPDU does not read back"
                );
            }
        }
        Err(e) => assert!(e.at <= data.len(), "an error offset past the input"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cr(token: Option<RequestToken<'_>>, neg: Option<NegReq>) -> Vec<u8> {
        Tpdu::ConnectionRequest(ConnectionRequest {
            token,
            neg,
            correlation_info: &[],
        })
        .emit()
        .unwrap()
    }

    #[test]
    fn reads_a_request_with_a_cookie() {
        let neg = NegReq {
            flags: RequestFlags::empty(),
            protocols: SecurityProtocol::from_bits_retain(0xb),
        };
        let pdu = cr(Some(RequestToken::Cookie(b"alice")), Some(neg));
        assert_eq!(frame(&pdu), Ok(Some((FrameKind::Tpkt, pdu.len()))));
        assert_eq!(frame(&pdu[..pdu.len() - 1]), Ok(None));
        let Ok(Tpdu::ConnectionRequest(r)) = Tpdu::parse(&pdu) else {
            panic!("not a CR")
        };
        assert_eq!(r.token, Some(RequestToken::Cookie(b"alice")));
        assert_eq!(r.neg, Some(neg));
    }

    #[test]
    fn errors_say_what_and_where() {
        let pdu = [
            0x03, 0, 0, 19, 14, 0xD0, 0, 0, 0x12, 0x34, 0, 0x03, 0, 0x08, 0, 0x05, 0, 0, 0,
        ];
        assert_eq!(
            Tpdu::parse(&pdu),
            Ok(Tpdu::ConnectionConfirm(ConnectionConfirm {
                negotiation: Negotiation::Failure {
                    code: FailureCode::HYBRID_REQUIRED_BY_SERVER
                }
            }))
        );
        let mut bad = pdu;
        bad[4] = 13;
        let e = Tpdu::parse(&bad).unwrap_err();
        assert_eq!(e.at, 4);
        assert_eq!(
            e.kind.to_string(),
            "X.224 length indicator 13 disagrees with the TPKT length 19 (expected 14)"
        );
        let mut bad = pdu;
        bad[13] = 9;
        assert_eq!(
            Tpdu::parse(&bad),
            Err(X224Error {
                at: 13,
                kind: X224ErrorKind::NegRspLength { len: 9 }
            })
        );
        // A cookie without CR LF, then a negotiation request cut short, each at its byte.
        let mut pdu = cr(Some(RequestToken::Cookie(b"bob")), None);
        pdu.truncate(pdu.len() - 2);
        pdu[3] -= 2;
        pdu[4] -= 2;
        assert_eq!(
            Tpdu::parse(&pdu).unwrap_err(),
            err(11, X224ErrorKind::CookieUnterminated)
        );
        let mut pdu = cr(Some(RequestToken::Cookie(b"bob")), None);
        pdu.extend_from_slice(&[1, 0, 8]);
        pdu[3] += 3;
        pdu[4] += 3;
        assert_eq!(
            Tpdu::parse(&pdu).unwrap_err(),
            err(11 + 22, X224ErrorKind::NegReqTruncated { have: 3 })
        );
        assert_eq!(
            frame(&[0x05, 0]),
            Err(err(0, X224ErrorKind::NotAFrame { first: 5 }))
        );
        assert_eq!(
            frame(&[0x03, 0, 0, 6]),
            Err(err(0, X224ErrorKind::TpktLengthTooShort { len: 6 }))
        );
    }

    fn token() -> impl Strategy<Value = (u8, Vec<u8>)> {
        // Token text without CR LF; opaque tokens must not start with the RDP_NEG_REQ type, and
        // "other" cookies must not start with the two prefixes that make them typed.
        (0u8..4, proptest::collection::vec(0x20u8..0x7f, 1..40))
    }

    proptest! {
        /// Every Connection Request and Confirm written reads back as itself.
        #[test]
        fn round_trip(t in proptest::option::of(token()), neg in proptest::option::of((any::<u8>(), any::<u32>())),
                      corr in proptest::collection::vec(any::<u8>(), 0..36), cc in 0u8..3, rsp_flags: u8, value: u32) {
            let tok = t.as_ref().map(|(k, v)| match k {
                0 => RequestToken::Cookie(v),
                1 => RequestToken::RoutingToken(v),
                2 if !v.starts_with(b"mstshash=") && !v.starts_with(b"msts=") => RequestToken::OtherCookie(v),
                _ => RequestToken::Opaque(v),
            });
            let tok = tok.filter(|t| !matches!(t, RequestToken::Opaque(v) if v.starts_with(b"Cookie: ")));
            let neg = neg.map(|(f, p)| NegReq { flags: RequestFlags::from_bits_retain(f), protocols: SecurityProtocol::from_bits_retain(p) });
            let corr = if neg.is_some() { &corr[..] } else { &[][..] };
            let t = Tpdu::ConnectionRequest(ConnectionRequest { token: tok, neg, correlation_info: corr });
            let b = t.emit().unwrap();
            prop_assert_eq!(frame(&b), Ok(Some((FrameKind::Tpkt, b.len()))));
            prop_assert_eq!(Tpdu::parse(&b), Ok(t));
            let negotiation = match cc {
                0 => Negotiation::None,
                1 => Negotiation::Response { flags: ResponseFlags::from_bits_retain(rsp_flags), selected: SecurityProtocol::from_bits_retain(value) },
                _ => Negotiation::Failure { code: FailureCode::from(value) },
            };
            let t = Tpdu::ConnectionConfirm(ConnectionConfirm { negotiation });
            let b = t.emit().unwrap();
            prop_assert_eq!(Tpdu::parse(&b), Ok(t));
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            exercise(&data);
            let _ = request_variable_part(&data);
        }

        /// Random bytes behind a valid TPKT + CR/CC header reach the variable-part readers.
        #[test]
        fn never_panics_behind_a_header(code in prop::sample::select(vec![CODE_CR, CODE_CC]), var in proptest::collection::vec(any::<u8>(), 0..60)) {
            let mut b = connection_tpdu(code, &var).unwrap();
            exercise(&b);
            b.truncate(b.len() / 2);
            exercise(&b);
        }
    }
}
