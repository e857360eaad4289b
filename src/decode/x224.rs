//! TPKT (RFC 1006) framing, fast-path framing and X.224 connection PDUs with the RDP negotiation
//! structures (MS-RDPBCGR 2.2.1.1 / 2.2.1.2). Pure, never panics.
//!
//! Written by hand rather than with ironrdp-pdu's decoders because a diagnostics tool needs the exact
//! byte offset of what is wrong and the fields it could read before that point.

use serde_json::json;

use crate::report::Facts;

/// TPKT header size: version (1), reserved (1), length (2).
pub const TPKT_HEADER_LEN: usize = 4;

/// Security protocol flags (MS-RDPBCGR 2.2.1.1.1 requestedProtocols).
pub const PROTOCOL_SSL: u32 = 0x1;
pub const PROTOCOL_HYBRID: u32 = 0x2;
pub const PROTOCOL_RDSTLS: u32 = 0x4;
pub const PROTOCOL_HYBRID_EX: u32 = 0x8;
pub const PROTOCOL_RDSAAD: u32 = 0x10;

/// Names of the set protocol flags ("PROTOCOL_RDP" for zero).
pub fn protocol_names(p: u32) -> Vec<String> {
    if p == 0 {
        return vec!["PROTOCOL_RDP".into()];
    }
    let mut v = Vec::new();
    for (bit, name) in [
        (PROTOCOL_SSL, "PROTOCOL_SSL"),
        (PROTOCOL_HYBRID, "PROTOCOL_HYBRID"),
        (PROTOCOL_RDSTLS, "PROTOCOL_RDSTLS"),
        (PROTOCOL_HYBRID_EX, "PROTOCOL_HYBRID_EX"),
        (PROTOCOL_RDSAAD, "PROTOCOL_RDSAAD"),
    ] {
        if p & bit != 0 {
            v.push(name.to_owned());
        }
    }
    let known =
        PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_RDSTLS | PROTOCOL_HYBRID_EX | PROTOCOL_RDSAAD;
    if p & !known != 0 {
        v.push(format!("0x{:x}", p & !known));
    }
    v
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
    let Some(&first) = buf.first() else {
        return Frame::Incomplete;
    };
    if first == 0x03 {
        if buf.len() < TPKT_HEADER_LEN {
            return Frame::Incomplete;
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if len < TPKT_HEADER_LEN + 3 {
            return Frame::Invalid(format!(
                "TPKT length {len} is shorter than a TPKT + X.224 header"
            ));
        }
        if buf.len() < len {
            return Frame::Incomplete;
        }
        return Frame::Tpkt(len);
    }
    if first & 0x3 == 0 {
        // Fast-path: action bits 0; length in 1 or 2 bytes (PER-like).
        let Some(&b1) = buf.get(1) else {
            return Frame::Incomplete;
        };
        let len = if b1 & 0x80 != 0 {
            let Some(&b2) = buf.get(2) else {
                return Frame::Incomplete;
            };
            (((b1 & 0x7f) as usize) << 8) | b2 as usize
        } else {
            b1 as usize
        };
        if len < 2 {
            return Frame::Invalid(format!("fast-path length {len} too short"));
        }
        if buf.len() < len {
            return Frame::Incomplete;
        }
        return Frame::FastPath(len);
    }
    Frame::Invalid(format!(
        "byte 0x{first:02x} starts neither a TPKT nor a fast-path PDU"
    ))
}

/// X.224 TPDU codes (ITU-T X.224 13.3; upper nibble).
pub const X224_CR: u8 = 0xE0;
pub const X224_CC: u8 = 0xD0;
pub const X224_DR: u8 = 0x80;
pub const X224_DATA: u8 = 0xF0;

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

fn malformed(what: impl Into<String>, offset: usize) -> X224 {
    X224::Malformed {
        what: what.into(),
        offset,
    }
}

/// Decodes a complete TPKT PDU (as framed by [`frame`]).
pub fn decode_tpkt(pdu: &[u8]) -> X224 {
    if pdu.len() < TPKT_HEADER_LEN + 2 {
        return malformed("TPKT PDU too short", 0);
    }
    let li = pdu[4] as usize;
    let code = pdu[5] & 0xF0;
    match code {
        X224_DATA => {
            // LI = 2: code + EOT
            if li != 2 || pdu.len() < 7 {
                return malformed(
                    format!("X.224 data header length indicator {li}, expected 2"),
                    4,
                );
            }
            X224::Data {
                user_data_offset: 7,
            }
        }
        X224_CR | X224_CC => {
            // LI counts the header after itself: code(1) dst-ref(2) src-ref(2) class(1) + variable part.
            if li < 6 {
                return malformed(
                    format!("X.224 length indicator {li} shorter than the fixed header"),
                    4,
                );
            }
            if TPKT_HEADER_LEN + 1 + li != pdu.len() {
                return malformed(
                    format!(
                        "X.224 length indicator {li} disagrees with the TPKT length {} (expected {})",
                        pdu.len(),
                        pdu.len().saturating_sub(TPKT_HEADER_LEN + 1)
                    ),
                    4,
                );
            }
            let var = &pdu[11..];
            if code == X224_CR {
                decode_cr_variable(var, 11)
            } else {
                decode_cc_variable(var, 11)
            }
        }
        X224_DR => X224::DisconnectRequest,
        other => malformed(format!("unknown X.224 TPDU code 0x{other:02x}"), 5),
    }
}

fn decode_cr_variable(var: &[u8], base: usize) -> X224 {
    let mut facts = Facts::new();
    let mut pos = 0;
    // Optional cookie or routing token, terminated by CR LF (MS-RDPBCGR 2.2.1.1).
    if var.starts_with(b"Cookie: ") {
        match find_crlf(var) {
            Some(end) => {
                let text = String::from_utf8_lossy(&var[8..end]).to_string();
                if let Some(v) = text.strip_prefix("mstshash=") {
                    facts.insert("cookie".into(), json!(v));
                } else if let Some(v) = text.strip_prefix("msts=") {
                    facts.insert("routing_token".into(), json!(format!("msts={v}")));
                } else {
                    facts.insert("cookie".into(), json!(text));
                }
                pos = end + 2;
            }
            None => return malformed("cookie not terminated by CR LF", base),
        }
    } else if !var.is_empty() && var[0] != 0x01 {
        // Opaque routing token (load balancer): runs to CR LF.
        match find_crlf(var) {
            Some(end) => {
                facts.insert(
                    "routing_token".into(),
                    json!(String::from_utf8_lossy(&var[..end]).to_string()),
                );
                pos = end + 2;
            }
            None => {
                return malformed(
                    format!(
                        "unexpected byte 0x{:02x} where RDP_NEG_REQ or a cookie was expected",
                        var[0]
                    ),
                    base,
                )
            }
        }
    }
    let rest = &var[pos..];
    if rest.is_empty() {
        facts.insert("requested_protocols".into(), json!(protocol_names(0)));
        facts.insert("requested_protocols_value".into(), json!(0));
        facts.insert("neg_req".into(), json!(false));
        return X224::ConnectionRequest(facts);
    }
    if rest.len() < 8 {
        return malformed(
            format!("RDP_NEG_REQ truncated: {} of 8 bytes", rest.len()),
            base + pos,
        );
    }
    if rest[0] != 0x01 {
        return malformed(
            format!("RDP_NEG_REQ type 0x{:02x}, expected 0x01", rest[0]),
            base + pos,
        );
    }
    let len = u16::from_le_bytes([rest[2], rest[3]]);
    if len != 8 {
        return malformed(
            format!("RDP_NEG_REQ length {len}, expected 8"),
            base + pos + 2,
        );
    }
    let flags = rest[1];
    let protocols = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    facts.insert(
        "requested_protocols".into(),
        json!(protocol_names(protocols)),
    );
    facts.insert("requested_protocols_value".into(), json!(protocols));
    facts.insert("request_flags".into(), json!(request_flag_names(flags)));
    facts.insert("neg_req".into(), json!(true));
    if rest.len() > 8 {
        facts.insert("correlation_info_len".into(), json!(rest.len() - 8));
    }
    X224::ConnectionRequest(facts)
}

fn decode_cc_variable(var: &[u8], base: usize) -> X224 {
    let mut facts = Facts::new();
    if var.is_empty() {
        // No RDP_NEG_RSP: a pre-RDP-5.2 server selecting standard RDP security.
        facts.insert("selected_protocol".into(), json!("PROTOCOL_RDP"));
        facts.insert("neg_rsp".into(), json!(false));
        return X224::ConnectionConfirm {
            selected: 0,
            flags: 0,
            facts,
        };
    }
    if var.len() < 8 {
        return malformed(
            format!("negotiation response truncated: {} of 8 bytes", var.len()),
            base,
        );
    }
    let len = u16::from_le_bytes([var[2], var[3]]);
    if len != 8 {
        return malformed(
            format!("negotiation response length {len}, expected 8"),
            base + 2,
        );
    }
    let value = u32::from_le_bytes([var[4], var[5], var[6], var[7]]);
    match var[0] {
        0x02 => {
            let flags = var[1];
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
        0x03 => X224::NegotiationFailure { code: value },
        t => malformed(
            format!("negotiation response type 0x{t:02x}, expected 0x02 or 0x03"),
            base,
        ),
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

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
