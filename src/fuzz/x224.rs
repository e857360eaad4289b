//! Stage `x224`: mutations of the X.224 Connection Request (MS-RDPBCGR 2.2.1.1): TPKT header
//! (RFC 1006), X.224 CR TPDU fields (ITU-T X.224 13.3), the routing token or cookie, RDP_NEG_REQ
//! (2.2.1.1.1) and RDP_NEG_CORRELATION_INFO (2.2.1.1.2).

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u8s, upto, Ladder};
use super::EncodeCtx;

/// Longest cookie identifier a case asks for, in bytes.
pub const MAX_COOKIE: u64 = 8192;

/// What precedes the identifier of the cookie line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieKind {
    /// `Cookie: mstshash=` (the user name cookie).
    Mstshash,
    /// `Cookie: msts=` (a load balancer routing token).
    RoutingToken,
    /// `Cookie: mstshash` without the `=`.
    NoEquals,
    /// No cookie line at all.
    Absent,
}

/// How the cookie line ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Terminator {
    CrLf,
    Cr,
    Lf,
    None,
}

/// One structured mutation of the Connection Request; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum X224Mutation {
    TpktVersion(u8),
    TpktReserved(u8),
    /// The TPKT length field (default: the real length).
    TpktLength(u16),
    /// The X.224 length indicator (default: the real header length).
    LengthIndicator(u8),
    /// The TPDU code byte (default 0xE0, Connection Request).
    TpduCode(u8),
    DstRef(u16),
    SrcRef(u16),
    ClassOption(u8),
    /// The cookie identifier: `len` bytes of `fill`.
    Cookie {
        len: u32,
        fill: u8,
    },
    CookieKind(CookieKind),
    CookieTerminator(Terminator),
    /// Leave RDP_NEG_REQ out.
    NegReqAbsent,
    NegType(u8),
    NegFlags(u8),
    /// The RDP_NEG_REQ length field (default 8).
    NegLength(u16),
    NegProtocols(u32),
    /// Append RDP_NEG_CORRELATION_INFO with this length field (36 is valid).
    Correlation {
        length: u16,
    },
    /// Bytes after the negotiation request.
    Trailing {
        len: u32,
        fill: u8,
    },
    Havoc(Havoc),
}

/// A case of the `x224` stage: the valid request with these mutations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X224Case {
    pub mutations: Vec<X224Mutation>,
}

struct Fields {
    tpkt_version: u8,
    tpkt_reserved: u8,
    tpkt_length: Option<u16>,
    li: Option<u8>,
    code: u8,
    dst_ref: u16,
    src_ref: u16,
    class: u8,
    cookie: Vec<u8>,
    cookie_kind: CookieKind,
    terminator: Terminator,
    neg: bool,
    neg_type: u8,
    neg_flags: u8,
    neg_length: u16,
    neg_protocols: u32,
    correlation: Option<u16>,
    trailing: Vec<u8>,
}

/// The cookie identifier of the valid request.
pub const BASE_COOKIE: &str = "rdprobe";

/// Encodes a Connection Request from `mutations` (none: the valid request) for `ctx`.
pub fn encode(mutations: &[X224Mutation], ctx: &EncodeCtx) -> Vec<u8> {
    let mut f = Fields {
        tpkt_version: 3,
        tpkt_reserved: 0,
        tpkt_length: None,
        li: None,
        code: 0xE0,
        dst_ref: 0,
        src_ref: 0,
        class: 0,
        cookie: BASE_COOKIE.as_bytes().to_vec(),
        cookie_kind: CookieKind::Mstshash,
        terminator: Terminator::CrLf,
        neg: true,
        neg_type: 0x01,
        neg_flags: 0,
        neg_length: 8,
        neg_protocols: ctx.requested_protocols,
        correlation: None,
        trailing: Vec::new(),
    };
    let mut havocs = Vec::new();
    for m in mutations {
        match m {
            X224Mutation::TpktVersion(v) => f.tpkt_version = *v,
            X224Mutation::TpktReserved(v) => f.tpkt_reserved = *v,
            X224Mutation::TpktLength(v) => f.tpkt_length = Some(*v),
            X224Mutation::LengthIndicator(v) => f.li = Some(*v),
            X224Mutation::TpduCode(v) => f.code = *v,
            X224Mutation::DstRef(v) => f.dst_ref = *v,
            X224Mutation::SrcRef(v) => f.src_ref = *v,
            X224Mutation::ClassOption(v) => f.class = *v,
            X224Mutation::Cookie { len, fill } => {
                f.cookie = havoc::filler((*len as u64).min(MAX_COOKIE) as usize, *fill)
            }
            X224Mutation::CookieKind(k) => f.cookie_kind = *k,
            X224Mutation::CookieTerminator(t) => f.terminator = *t,
            X224Mutation::NegReqAbsent => f.neg = false,
            X224Mutation::NegType(v) => f.neg_type = *v,
            X224Mutation::NegFlags(v) => f.neg_flags = *v,
            X224Mutation::NegLength(v) => f.neg_length = *v,
            X224Mutation::NegProtocols(v) => f.neg_protocols = *v,
            X224Mutation::Correlation { length } => f.correlation = Some(*length),
            X224Mutation::Trailing { len, fill } => {
                f.trailing = havoc::filler((*len as u64).min(havoc::MAX_INSERT) as usize, *fill)
            }
            X224Mutation::Havoc(h) => havocs.push(h.clone()),
        }
    }
    let mut var = Vec::new();
    let prefix: &[u8] = match f.cookie_kind {
        CookieKind::Mstshash => b"Cookie: mstshash=",
        CookieKind::RoutingToken => b"Cookie: msts=",
        CookieKind::NoEquals => b"Cookie: mstshash",
        CookieKind::Absent => b"",
    };
    if f.cookie_kind != CookieKind::Absent {
        var.extend_from_slice(prefix);
        var.extend_from_slice(&f.cookie);
        var.extend_from_slice(match f.terminator {
            Terminator::CrLf => b"\r\n",
            Terminator::Cr => b"\r",
            Terminator::Lf => b"\n",
            Terminator::None => b"",
        });
    }
    if f.neg {
        var.push(f.neg_type);
        var.push(f.neg_flags);
        var.extend_from_slice(&f.neg_length.to_le_bytes());
        var.extend_from_slice(&f.neg_protocols.to_le_bytes());
    }
    if let Some(length) = f.correlation {
        // RDP_NEG_CORRELATION_INFO: type 6, flags 0, length, correlationId (16), reserved (16).
        var.push(0x06);
        var.push(0);
        var.extend_from_slice(&length.to_le_bytes());
        var.extend(1u8..=16);
        var.extend_from_slice(&[0u8; 16]);
    }
    var.extend_from_slice(&f.trailing);
    let li = f.li.unwrap_or((6 + var.len()).min(0xff) as u8);
    let total = 4 + 1 + 6 + var.len();
    let mut out = Vec::with_capacity(total);
    out.push(f.tpkt_version);
    out.push(f.tpkt_reserved);
    let len = f.tpkt_length.unwrap_or(total.min(0xffff) as u16);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(li);
    out.push(f.code);
    out.extend_from_slice(&f.dst_ref.to_be_bytes());
    out.extend_from_slice(&f.src_ref.to_be_bytes());
    out.push(f.class);
    out.extend_from_slice(&var);
    havoc::apply_all(&havocs, &mut out);
    out
}

/// One mutation, boundary-biased.
pub fn mutation() -> BoxedStrategy<X224Mutation> {
    use X224Mutation as M;
    let printable = || Ladder::new(0x20, 0x7e, &[0x41, 0x61]).prop_map(|v| v as u8);
    prop_oneof![
        1 => u8s(&[3]).prop_map(M::TpktVersion),
        1 => u8s(&[]).prop_map(M::TpktReserved),
        3 => u16s(&[11, 19, 27, 43]).prop_map(M::TpktLength),
        2 => u8s(&[6, 14, 35]).prop_map(M::LengthIndicator),
        1 => u8s(&[0xE0, 0xD0, 0xF0, 0x80]).prop_map(M::TpduCode),
        1 => u16s(&[]).prop_map(M::DstRef),
        1 => u16s(&[]).prop_map(M::SrcRef),
        1 => u8s(&[]).prop_map(M::ClassOption),
        4 => (upto(MAX_COOKIE, &[200, 255, 256, 1024]).prop_map(|v| v as u32), printable())
            .prop_map(|(len, fill)| M::Cookie { len, fill }),
        1 => prop_oneof![
            Just(CookieKind::Mstshash),
            Just(CookieKind::RoutingToken),
            Just(CookieKind::NoEquals),
            Just(CookieKind::Absent)
        ]
        .prop_map(M::CookieKind),
        1 => prop_oneof![
            Just(Terminator::CrLf),
            Just(Terminator::Cr),
            Just(Terminator::Lf),
            Just(Terminator::None)
        ]
        .prop_map(M::CookieTerminator),
        1 => Just(M::NegReqAbsent),
        1 => u8s(&[1, 2, 3, 6]).prop_map(M::NegType),
        2 => u8s(&[1, 2, 8]).prop_map(M::NegFlags),
        2 => u16s(&[8]).prop_map(M::NegLength),
        3 => upto(0xffff_ffff, &[0xb, 0x10]).prop_map(|v| M::NegProtocols(v as u32)),
        1 => u16s(&[36]).prop_map(|length| M::Correlation { length }),
        1 => (upto(havoc::MAX_INSERT, &[]).prop_map(|v| v as u32), u8s(&[]))
            .prop_map(|(len, fill)| M::Trailing { len, fill }),
        3 => Havoc::strategy(64).prop_map(M::Havoc),
    ]
    .boxed()
}

/// A whole case: one to four mutations.
pub fn strategy() -> BoxedStrategy<X224Case> {
    proptest::collection::vec(mutation(), 1..=4)
        .prop_map(|mutations| X224Case { mutations })
        .boxed()
}

/// The cookie identifier length of a request (for tests and planted bugs): the bytes between
/// `Cookie: mstshash=` and the CR LF, if any.
pub fn cookie_len(request: &[u8]) -> Option<usize> {
    let var = request.get(11..)?;
    let start = find(var, b"Cookie: mstshash=")? + 17;
    let end = find(&var[start..], b"\r\n")?;
    Some(end)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_core::decode;
    use ironrdp_pdu::nego::ConnectionRequest;
    use ironrdp_pdu::x224::X224;

    #[test]
    fn base_request_is_what_ironrdp_decodes() {
        let ctx = EncodeCtx::default();
        let bytes = encode(&[], &ctx);
        let cr = decode::<X224<ConnectionRequest>>(&bytes)
            .expect("valid request")
            .0;
        assert_eq!(cr.protocol.bits(), ctx.requested_protocols);
        assert_eq!(cookie_len(&bytes), Some(BASE_COOKIE.len()));
        assert_eq!(
            crate::decode::x224::frame(&bytes),
            crate::decode::x224::Frame::Tpkt(bytes.len())
        );
    }

    #[test]
    fn mutations_land_in_their_fields() {
        let ctx = EncodeCtx::default();
        let b = encode(
            &[
                X224Mutation::Cookie {
                    len: 201,
                    fill: b'a',
                },
                X224Mutation::NegProtocols(0xdead_beef),
            ],
            &ctx,
        );
        assert_eq!(cookie_len(&b), Some(201));
        assert_eq!(u16::from_be_bytes([b[2], b[3]]) as usize, b.len());
        assert_eq!(&b[b.len() - 4..], &0xdead_beefu32.to_le_bytes());
        let b = encode(&[X224Mutation::TpktLength(7)], &ctx);
        assert_eq!(&b[2..4], &[0, 7]);
        let b = encode(&[X224Mutation::NegReqAbsent], &ctx);
        assert!(b.ends_with(b"\r\n"));
    }

    #[test]
    fn case_json_round_trips() {
        let c = X224Case {
            mutations: vec![
                X224Mutation::Cookie {
                    len: 201,
                    fill: b'a',
                },
                X224Mutation::NegReqAbsent,
                X224Mutation::Havoc(Havoc::Flip { at: 3, xor: 1 }),
            ],
        };
        let j = serde_json::to_string(&c).expect("json");
        assert!(
            j.contains(r#"{"field":"cookie","value":{"len":201,"fill":97}}"#),
            "{j}"
        );
        let back: X224Case = serde_json::from_str(&j).expect("parse");
        assert_eq!(back, c);
    }
}
