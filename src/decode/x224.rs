//! TPKT (RFC 1006) framing, fast-path framing and X.224 connection PDUs with the RDP negotiation
//! structures (MS-RDPBCGR 2.2.1.1 / 2.2.1.2). Pure, never panics.
//!
//! The bytes are read by `wire::x224` (typed TPDUs, errors with byte offsets); this module turns
//! them into the report's facts and names.

use serde_json::json;

use crate::wire::x224 as wx;

use crate::report::Facts;

/// TPKT header size: version (1), reserved (1), length (2).
pub const TPKT_HEADER_LEN: usize = wx::TPKT_HEADER_LEN;

/// Security protocol flags (MS-RDPBCGR 2.2.1.1.1 requestedProtocols).
pub const PROTOCOL_SSL: u32 = 0x1;
pub const PROTOCOL_HYBRID: u32 = 0x2;
pub const PROTOCOL_RDSTLS: u32 = 0x4;
pub const PROTOCOL_HYBRID_EX: u32 = 0x8;
pub const PROTOCOL_RDSAAD: u32 = 0x10;

/// The named protocol flags, in the order their names are listed.
const PROTOCOL_FLAG_NAMES: [(u32, &str); 5] = [
    (PROTOCOL_SSL, "PROTOCOL_SSL"),
    (PROTOCOL_HYBRID, "PROTOCOL_HYBRID"),
    (PROTOCOL_RDSTLS, "PROTOCOL_RDSTLS"),
    (PROTOCOL_HYBRID_EX, "PROTOCOL_HYBRID_EX"),
    (PROTOCOL_RDSAAD, "PROTOCOL_RDSAAD"),
];

/// Names of the set protocol flags ("PROTOCOL_RDP" for zero).
pub fn protocol_names(p: u32) -> Vec<String> {
    if p == 0 {
        return vec!["PROTOCOL_RDP".into()];
    }
    let mut v = Vec::new();
    let mut known = 0;
    for (bit, name) in PROTOCOL_FLAG_NAMES {
        known |= bit;
        if p & bit != 0 {
            v.push(name.to_owned());
        }
    }
    if p & !known != 0 {
        v.push(format!("0x{:x}", p & !known));
    }
    v
}

/// The protocol flags of a `protocol_names(..).join("|")` text ("PROTOCOL_SSL|PROTOCOL_HYBRID"),
/// as IronRDP's type: the reader of the names a report carries (e.g. a protocol mismatch read back
/// from JSON). `None` when a part is no such name.
pub fn parse_protocol_names(s: &str) -> Option<ironrdp_pdu::nego::SecurityProtocol> {
    let mut bits = 0u32;
    for part in s.split('|').map(str::trim) {
        let part = part.to_ascii_uppercase();
        bits |= if part == "PROTOCOL_RDP" {
            0
        } else if let Some(hex) = part.strip_prefix("0X") {
            u32::from_str_radix(hex, 16).ok()?
        } else {
            PROTOCOL_FLAG_NAMES
                .iter()
                .find(|(_, n)| *n == part)
                .map(|(b, _)| *b)?
        };
    }
    Some(ironrdp_pdu::nego::SecurityProtocol::from_bits_retain(bits))
}

/// Name of an RDP_NEG_FAILURE code (MS-RDPBCGR 2.2.1.2.2).
pub fn failure_code_name(code: u32) -> &'static str {
    crate::codes::neg_failure_name(code).unwrap_or("UNKNOWN_FAILURE_CODE")
}

/// RDP_NEG_RSP flags (MS-RDPBCGR 2.2.1.2.1).
pub fn response_flag_names(f: u8) -> Vec<String> {
    let mut v = Vec::new();
    for (bit, name) in [
        (0x01, "EXTENDED_CLIENT_DATA_SUPPORTED"),
        (0x02, "DYNVC_GFX_PROTOCOL_SUPPORTED"),
        (0x04, "NEGRSP_FLAG_RESERVED"),
        (0x08, "RESTRICTED_ADMIN_MODE_SUPPORTED"),
        (0x10, "REDIRECTED_AUTHENTICATION_MODE_SUPPORTED"),
    ] {
        if f & bit != 0 {
            v.push(name.to_owned());
        }
    }
    v
}

/// RDP_NEG_REQ flags (MS-RDPBCGR 2.2.1.1.1).
pub fn request_flag_names(f: u8) -> Vec<String> {
    let mut v = Vec::new();
    for (bit, name) in [
        (0x01, "RESTRICTED_ADMIN_MODE_REQUIRED"),
        (0x02, "REDIRECTED_AUTHENTICATION_MODE_REQUIRED"),
        (0x08, "CORRELATION_INFO_PRESENT"),
    ] {
        if f & bit != 0 {
            v.push(name.to_owned());
        }
    }
    v
}

/// Result of trying to frame the next PDU of an RDP stream (TPKT or fast-path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete TPKT PDU of this total length.
    Tpkt(usize),
    /// A complete fast-path PDU of this total length.
    FastPath(usize),
    /// Not enough bytes yet.
    Incomplete,
    /// Not a TPKT/fast-path header: what is wrong (offset is the start of the PDU).
    Invalid(String),
}

/// Frames the next TPKT (RFC 1006) or fast-path (MS-RDPBCGR 2.2.9.1.2) PDU at the start of `buf`.
pub fn frame(buf: &[u8]) -> Frame {
    match wx::frame(buf) {
        Ok(None) => Frame::Incomplete,
        Ok(Some((wx::FrameKind::Tpkt, len))) => Frame::Tpkt(len),
        Ok(Some((wx::FrameKind::FastPath, len))) => Frame::FastPath(len),
        Err(e) => Frame::Invalid(e.kind.to_string()),
    }
}

/// X.224 TPDU codes (ITU-T X.224 13.3; upper nibble).
pub const X224_CR: u8 = wx::CODE_CR;
pub const X224_CC: u8 = wx::CODE_CC;
pub const X224_DR: u8 = wx::CODE_DR;
pub const X224_DATA: u8 = wx::CODE_DATA;

/// A decoded TPKT PDU.
#[derive(Clone, Debug, PartialEq)]
pub enum X224 {
    ConnectionRequest(Facts),
    /// RDP_NEG_RSP (or no negotiation data: selected = PROTOCOL_RDP).
    ConnectionConfirm {
        selected: u32,
        flags: u8,
        facts: Facts,
    },
    NegotiationFailure {
        code: u32,
    },
    DisconnectRequest,
    /// Data TPDU: the user data offset within the PDU.
    Data {
        user_data_offset: usize,
    },
    /// Malformed: what and the offset within the PDU.
    Malformed {
        what: String,
        offset: usize,
    },
}

/// Decodes a complete TPKT PDU (as framed by [`frame`]) with `wire::x224` and turns it into the
/// facts the report shows.
pub fn decode_tpkt(pdu: &[u8]) -> X224 {
    match wx::Tpdu::parse(pdu) {
        Ok(wx::Tpdu::Data { user_data }) => X224::Data {
            user_data_offset: user_data.start,
        },
        Ok(wx::Tpdu::DisconnectRequest) => X224::DisconnectRequest,
        Ok(wx::Tpdu::ConnectionRequest(cr)) => X224::ConnectionRequest(request_facts(&cr)),
        Ok(wx::Tpdu::ConnectionConfirm(cc)) => confirm(&cc),
        Err(e) => X224::Malformed {
            what: e.kind.to_string(),
            offset: e.at,
        },
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn request_facts(cr: &wx::ConnectionRequest<'_>) -> Facts {
    let mut facts = Facts::new();
    match cr.token {
        Some(wx::RequestToken::Cookie(v) | wx::RequestToken::OtherCookie(v)) => {
            facts.insert("cookie".into(), json!(lossy(v)));
        }
        Some(wx::RequestToken::RoutingToken(v)) => {
            facts.insert("routing_token".into(), json!(format!("msts={}", lossy(v))));
        }
        Some(wx::RequestToken::Opaque(v)) => {
            facts.insert("routing_token".into(), json!(lossy(v)));
        }
        None => {}
    }
    let Some(neg) = cr.neg else {
        facts.insert("requested_protocols".into(), json!(protocol_names(0)));
        facts.insert("requested_protocols_value".into(), json!(0));
        facts.insert("neg_req".into(), json!(false));
        return facts;
    };
    let protocols = neg.protocols.bits();
    facts.insert(
        "requested_protocols".into(),
        json!(protocol_names(protocols)),
    );
    facts.insert("requested_protocols_value".into(), json!(protocols));
    facts.insert(
        "request_flags".into(),
        json!(request_flag_names(neg.flags.bits())),
    );
    facts.insert("neg_req".into(), json!(true));
    if !cr.correlation_info.is_empty() {
        facts.insert(
            "correlation_info_len".into(),
            json!(cr.correlation_info.len()),
        );
    }
    facts
}

fn confirm(cc: &wx::ConnectionConfirm) -> X224 {
    let mut facts = Facts::new();
    match cc.negotiation {
        wx::Negotiation::None => {
            // No RDP_NEG_RSP: a pre-RDP-5.2 server selecting standard RDP security.
            facts.insert("selected_protocol".into(), json!("PROTOCOL_RDP"));
            facts.insert("neg_rsp".into(), json!(false));
            X224::ConnectionConfirm {
                selected: 0,
                flags: 0,
                facts,
            }
        }
        wx::Negotiation::Response { flags, selected } => {
            let (flags, value) = (flags.bits(), selected.bits());
            let names = protocol_names(value);
            facts.insert(
                "selected_protocol".into(),
                json!(names.first().cloned().unwrap_or_default()),
            );
            facts.insert("selected_protocol_value".into(), json!(value));
            facts.insert("response_flags".into(), json!(response_flag_names(flags)));
            facts.insert("neg_rsp".into(), json!(true));
            X224::ConnectionConfirm {
                selected: value,
                flags,
                facts,
            }
        }
        wx::Negotiation::Failure { code } => X224::NegotiationFailure {
            code: u32::from(code),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_read_back() {
        for p in [0u32, 1, 2, 3, 8, 0xb, 0x1f, 0x20, 0x23, u32::MAX] {
            let text = protocol_names(p).join("|");
            assert_eq!(
                parse_protocol_names(&text).map(|s| s.bits()),
                Some(p),
                "{text}"
            );
        }
        assert_eq!(parse_protocol_names(""), None);
        assert_eq!(parse_protocol_names("PROTOCOL_SSL|NLA"), None);
    }

    #[test]
    fn decodes_request_with_cookie() {
        let mut pdu = vec![0x03, 0, 0, 0, 0, 0xE0, 0, 0, 0, 0, 0];
        pdu.extend_from_slice(b"Cookie: mstshash=alice\r\n");
        pdu.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x0b, 0, 0, 0]);
        let l = pdu.len();
        pdu[2..4].copy_from_slice(&(l as u16).to_be_bytes());
        pdu[4] = (l - 5) as u8;
        assert_eq!(frame(&pdu), Frame::Tpkt(l));
        let X224::ConnectionRequest(f) = decode_tpkt(&pdu) else {
            panic!("not a CR")
        };
        assert_eq!(f["cookie"], "alice");
        assert_eq!(
            f["requested_protocols"],
            json!(["PROTOCOL_SSL", "PROTOCOL_HYBRID", "PROTOCOL_HYBRID_EX"])
        );
    }

    #[test]
    fn decodes_failure_and_flags_bad_length() {
        let pdu = [
            0x03, 0, 0, 19, 14, 0xD0, 0, 0, 0x12, 0x34, 0, 0x03, 0, 0x08, 0, 0x05, 0, 0, 0,
        ];
        assert_eq!(decode_tpkt(&pdu), X224::NegotiationFailure { code: 5 });
        let mut bad = pdu;
        bad[4] = 13;
        assert!(matches!(
            decode_tpkt(&bad),
            X224::Malformed { offset: 4, .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = frame(&data);
            let _ = decode_tpkt(&data);
        }
    }
}
