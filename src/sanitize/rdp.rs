//! Masks in the cleartext RDP streams: everything before TLS, and all of a connection under standard
//! RDP security (where the "encryption" is RC4 with 40/56/128-bit keys, or 3DES, keyed by a client
//! random sent under a server key that may be 512 bits: breakable, so treated like cleartext).
//!
//! Rules (MS-RDPBCGR section numbers):
//! * X.224 Connection Request (2.2.1.1): every `Cookie: ` line before TLS, found by search (a
//!   request that does not decode, such as a fuzz case, still has one): the value after
//!   `mstshash=` / `msts=` becomes `x`, up to CR/LF or the first non-printable byte; an opaque
//!   routing token (`tsv://…`) at the start of the request likewise.
//! * MCS Connect Initial, Client Core Data (2.2.1.3.2): clientName and clientDigProductId become
//!   `x` in UTF-16 (NUL terminators and lengths kept).
//! * Security Exchange (2.2.1.10): the encrypted client random is zeroed (flags and length kept).
//! * Client Info (2.2.1.11), clear or encrypted: zeroed after the security header.
//! * Any other encrypted PDU, either direction: zeroed after the security header (flags kept; FIPS
//!   keeps its length/version/padding bytes); the MAC goes too.
//! * Cleartext user data: fast-path input and output (2.2.8.1.2, 2.2.9.1.2) after their header,
//!   slow-path input and other data PDUs after the share data header (the connection-sequence PDUs
//!   the stage machine reads are kept), virtual channel data after the channel PDU header, client
//!   licensing PDUs (user and machine names) after the preamble, Save Session Info (user and
//!   domain) after its infoType, server redirection (user, domain, password cookie).
//! * Once a direction carried send-data PDUs, bytes after a point where framing is lost are zeroed
//!   (a gap or garbage: whatever it is, it is not readable as a connection sequence PDU).

use super::SanitizeStats;
use crate::decode::pdu::ShareKind;
use crate::decode::{mcs, x224};

/// The share data PDU types (pduType2, 2.2.8.1.1.1.2) a client sends that carry no user data.
const CLIENT_KEEP_PDU2: &[u8] = &[
    0x14, // control
    0x1f, // synchronize
    0x27, // font list
    0x24, // shutdown request
    0x23, // suppress output
    0x21, // refresh rect
    0x38, // frame acknowledge
];
/// The same for the server.
const SERVER_KEEP_PDU2: &[u8] = &[
    0x14, // control
    0x1f, // synchronize
    0x28, // font map
    0x2f, // set error info
    0x37, // monitor layout
    0x25, // shutdown denied
    0x29, // set keyboard indicators
    0x2d, // set keyboard IME status
    0x36, // status info
    0x22, // play sound
];
/// Save Session Info (2.2.10.1): the infoType (4 bytes) stays, the logon data goes.
const PDU2_SAVE_SESSION_INFO: u8 = 0x26;
/// Share control header + share data header.
const SHARE_DATA_HEADER_LEN: usize = 18;

/// Where TLS starts in each direction's stream (the wire bytes from there are TLS records).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TlsStarts {
    pub c2s: Option<usize>,
    pub s2c: Option<usize>,
}

/// The TPKT / fast-path PDUs at the start of a stream, up to TLS, the end, or lost framing.
struct Walk {
    pdus: Vec<(usize, usize)>,
    /// Where a TLS handshake record starts at a PDU boundary.
    tls_at: Option<usize>,
    /// Where the walk stopped.
    end: usize,
}

fn walk(stream: &[u8]) -> Walk {
    let mut pdus = Vec::new();
    let mut pos = 0usize;
    loop {
        let rest = &stream[pos..];
        if rest.is_empty() {
            return Walk {
                pdus,
                tls_at: None,
                end: pos,
            };
        }
        if rest.len() >= 2 && rest[0] == 0x16 && rest[1] == 0x03 {
            return Walk {
                pdus,
                tls_at: Some(pos),
                end: pos,
            };
        }
        let len = match x224::frame(rest) {
            x224::Frame::Tpkt(l) | x224::Frame::FastPath(l) if l > 0 && l <= rest.len() => l,
            _ => {
                return Walk {
                    pdus,
                    tls_at: None,
                    end: pos,
                }
            }
        };
        pdus.push((pos, len));
        pos += len;
    }
}

/// What the server said about the connection (read before anything is masked).
#[derive(Default)]
struct View {
    fips: bool,
    /// Encryption level NONE (or method none): share PDUs carry no security header.
    level_none: bool,
    /// Encryption negotiated (level above NONE).
    encrypted: bool,
    io_channel: Option<u64>,
    message_channel: Option<u64>,
}

impl View {
    fn read(s2c: &[u8], w: &Walk) -> View {
        let mut v = View::default();
        for &(pos, len) in &w.pdus {
            let pdu = &s2c[pos..pos + len];
            let x224::X224::Data { user_data_offset } = x224::decode_tpkt(pdu) else {
                continue;
            };
            let ud = &pdu[user_data_offset.min(pdu.len())..];
            if !ud.starts_with(&[0x7f, 0x66]) {
                continue;
            }
            if let Ok(f) = mcs::connect_response_facts(ud) {
                let s = |k: &str| f.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
                let method = s("encryption_method");
                let level = s("encryption_level");
                v.fips = method.contains("fips") || level == "fips";
                v.level_none = level == "none" || method == "none";
                v.encrypted = !level.is_empty() && level != "none";
                v.io_channel = f.get("io_channel").and_then(|x| x.as_u64());
                v.message_channel = f.get("mcs_message_channel").and_then(|x| x.as_u64());
            }
            break;
        }
        v
    }

    /// Whether `channel` carries virtual channel data (not the I/O or message channel).
    fn is_virtual_channel(&self, channel: u64) -> bool {
        match self.io_channel {
            Some(io) => channel != io && Some(channel) != self.message_channel,
            None => false,
        }
    }

    /// Bytes of an encrypted PDU's security header that stay: the flags, and for FIPS the
    /// length/version/padding (2.2.8.1.1.2.3); the MAC is zeroed with the data.
    fn encrypted_keep(&self) -> usize {
        if self.fips {
            8
        } else {
            4
        }
    }
}

/// Zeroes `p[from..]`; whether anything was there to zero.
fn zero_from(p: &mut [u8], from: usize) -> bool {
    match p.get_mut(from..) {
        Some(rest) if !rest.is_empty() => {
            rest.fill(0);
            true
        }
        _ => false,
    }
}

/// Replaces every byte that is not NUL or `.` by `x` (text of any encoding keeps its length, its
/// terminators and its dots; UTF-16 and UTF-32 code units stay valid).
pub(super) fn mask_text(b: &mut [u8]) {
    for c in b {
        if *c != 0 && *c != b'.' {
            *c = b'x';
        }
    }
}

/// Masks the value of every `Cookie: ` line in `region` (the X.224 Connection Request before TLS):
/// after `mstshash=` / `msts=` / `mstshash`, up to CR, LF or the first byte that is not printable.
pub(super) fn mask_cookies(region: &mut [u8]) -> usize {
    const KEY: &[u8] = b"Cookie: ";
    let mut n = 0;
    let mut at = 0usize;
    while let Some(i) = find(&region[at..], KEY) {
        let mut v = at + i + KEY.len();
        for prefix in [&b"mstshash="[..], b"msts=", b"mstshash"] {
            if region[v..].starts_with(prefix) {
                v += prefix.len();
                break;
            }
        }
        let len = region[v..]
            .iter()
            .take_while(|&&c| (0x20..0x7f).contains(&c))
            .count();
        if len > 0 {
            region[v..v + len].fill(b'x');
            n += 1;
        }
        at = v + len;
    }
    n
}

/// Masks an opaque routing token (MS-RDPBCGR 2.2.1.1: e.g. `tsv://MS Terminal Services
/// Plugin.1.Farm` for a connection broker) at the start of a Connection Request's variable part,
/// when the stream starts with one (TPKT, CR TPDU code); `Cookie: ` lines are left to
/// [`mask_cookies`]. The printable run up to CR/LF becomes `x`.
pub(super) fn mask_routing_token(stream: &mut [u8]) -> usize {
    let Some(line) = crate::wire::x224::request_variable_part(stream) else {
        return 0;
    };
    let var = &mut stream[line];
    if var.starts_with(b"Cookie: ") {
        return 0;
    }
    let len = var
        .iter()
        .take_while(|&&c| (0x20..0x7f).contains(&c))
        .count();
    var[..len].fill(b'x');
    usize::from(len > 0)
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Masks the names in the Client Core Data of a Connect Initial (X.224 user data). Whether a
/// core data block was found.
pub(super) fn mask_client_core(ud: &mut [u8]) -> bool {
    let Ok(blocks) = mcs::client_gcc_block_offsets(ud) else {
        return false;
    };
    let mut found = false;
    for (ty, off, len) in blocks {
        if ty != 0xc001 {
            continue;
        }
        found = true;
        let body = &mut ud[off..off + len];
        // clientName (32 bytes at 20), clientDigProductId (64 bytes at 142), MS-RDPBCGR 2.2.1.3.2.
        for (from, to) in [(20usize, 52usize), (142, 206)] {
            let to = to.min(body.len());
            if from < to {
                mask_utf16z(&mut body[from..to]);
            }
        }
    }
    found
}

/// A fixed-size UTF-16 field: characters before the first NUL become `x`, what follows it zero.
fn mask_utf16z(b: &mut [u8]) {
    let mut ended = false;
    for c in b.chunks_mut(2) {
        if ended || c.iter().all(|&x| x == 0) {
            ended = true;
            c.fill(0);
        } else {
            c[0] = b'x';
            if let Some(hi) = c.get_mut(1) {
                *hi = 0;
            }
        }
    }
}

/// Zeroes the body of a fast-path PDU (input or output) after its header byte and length.
pub(super) fn mask_fast_path(p: &mut [u8]) -> bool {
    let len_bytes = match p.get(1) {
        Some(b) if b & 0x80 != 0 => 2,
        Some(_) => 1,
        None => return false,
    };
    zero_from(p, 1 + len_bytes)
}

/// Virtual channel data (2.2.6.1): the security header (if any) and CHANNEL_PDU_HEADER stay.
fn mask_channel(p: &mut [u8], v: &View) -> bool {
    if v.encrypted {
        let flags = mcs::le16(p, 0).unwrap_or(0);
        if flags & mcs::SEC_ENCRYPT != 0 {
            return zero_from(p, v.encrypted_keep());
        }
        zero_from(p, 4 + 8)
    } else {
        zero_from(p, 8)
    }
}

/// One send-data payload of the I/O (or message) channel.
fn mask_payload(p: &mut [u8], channel: u64, from_client: bool, v: &View, st: &mut SanitizeStats) {
    if v.is_virtual_channel(channel) {
        if mask_channel(p, v) {
            st.user_data_masked += 1;
        }
        return;
    }
    let Some((kind, facts)) = mcs::share_pdu(p, true) else {
        // Unreadable on the I/O channel: keep what could be a security header only.
        if zero_from(p, 4) {
            st.user_data_masked += 1;
        }
        return;
    };
    let header = facts.contains_key("security_flags");
    let flags = if header {
        mcs::le16(p, 0).unwrap_or(0)
    } else {
        0
    };
    let base = if header { 4 } else { 0 };
    if kind == ShareKind::SecurityExchange {
        // flags, flagsHi, length stay; the encrypted client random goes.
        if zero_from(p, 8) {
            st.security_exchange_masked += 1;
        }
    } else if matches!(kind, ShareKind::ClientInfo | ShareKind::ClientInfoEncrypted) {
        let keep = if flags & mcs::SEC_ENCRYPT != 0 {
            v.encrypted_keep()
        } else {
            4
        };
        if zero_from(p, keep) {
            st.client_info_masked += 1;
        }
    } else if flags & mcs::SEC_ENCRYPT != 0 {
        if zero_from(p, v.encrypted_keep()) {
            st.encrypted_pdus_masked += 1;
        }
    } else if kind == ShareKind::ServerRedirection {
        if zero_from(p, base + 4) {
            st.user_data_masked += 1;
        }
    } else if from_client && flags & mcs::SEC_LICENSE_PKT != 0 {
        // Client licensing PDUs name the user and the machine: the preamble stays.
        if zero_from(p, base + 4) {
            st.user_data_masked += 1;
        }
    } else if let Some(pdu2) = data_pdu_type(p, base) {
        let keep: &[u8] = if from_client {
            CLIENT_KEEP_PDU2
        } else {
            SERVER_KEEP_PDU2
        };
        let from = if keep.contains(&pdu2) {
            None
        } else if pdu2 == PDU2_SAVE_SESSION_INFO && !from_client {
            Some(base + SHARE_DATA_HEADER_LEN + 4)
        } else {
            Some(base + SHARE_DATA_HEADER_LEN)
        };
        if from.is_some_and(|f| zero_from(p, f)) {
            st.user_data_masked += 1;
        }
    }
}

/// pduType2 of a share data PDU starting at `base`, if it is one.
fn data_pdu_type(p: &[u8], base: usize) -> Option<u8> {
    const PDUTYPE_DATAPDU: u16 = 0x7;
    let total = mcs::le16(p, base)?;
    let ty = mcs::le16(p, base + 2)?;
    if total == 0x8000 || ty & 0xf != PDUTYPE_DATAPDU || p.len() < base + SHARE_DATA_HEADER_LEN {
        return None;
    }
    p.get(base + 14).copied()
}

/// Masks one direction's walked PDUs. Returns whether any send-data PDU was seen.
fn mask_direction(
    s: &mut [u8],
    w: &Walk,
    from_client: bool,
    v: &View,
    st: &mut SanitizeStats,
) -> bool {
    let mut send_data = false;
    for &(pos, len) in &w.pdus {
        let pdu = &mut s[pos..pos + len];
        if pdu[0] != 0x03 {
            // Fast-path: input from the client, updates from the server.
            if mask_fast_path(pdu) {
                st.user_data_masked += 1;
            }
            continue;
        }
        let x224::X224::Data { user_data_offset } = x224::decode_tpkt(pdu) else {
            continue;
        };
        let Some(ud) = pdu.get_mut(user_data_offset..) else {
            continue;
        };
        if from_client && ud.starts_with(&[0x7f, 0x65]) {
            if mask_client_core(ud) {
                st.client_data_masked += 1;
            }
            continue;
        }
        let Some((kind, facts)) = mcs::domain_pdu(ud) else {
            continue;
        };
        if !kind.is_send_data() {
            continue;
        }
        send_data = true;
        let off = facts
            .get("payload_offset")
            .and_then(|x| x.as_u64())
            .unwrap_or(0) as usize;
        let plen = facts
            .get("payload_len")
            .and_then(|x| x.as_u64())
            .unwrap_or(0) as usize;
        let channel = facts
            .get("channel_id")
            .and_then(|x| x.as_u64())
            .unwrap_or(0);
        let end = off.saturating_add(plen).min(ud.len());
        if let Some(p) = ud.get_mut(off..end) {
            mask_payload(p, channel, from_client, v, st);
        }
        // Bytes after the announced payload inside the TPKT: not part of any PDU.
        if end < ud.len() && zero_from(ud, end) {
            st.user_data_masked += 1;
        }
    }
    send_data
}

/// Masks both wire streams of one conversation in place; returns where TLS starts in each.
pub(super) fn mask_streams(c2s: &mut [u8], s2c: &mut [u8], st: &mut SanitizeStats) -> TlsStarts {
    let wc = walk(c2s);
    let ws = walk(s2c);
    let v = View::read(s2c, &ws);
    // Cookies: by search, before TLS (all of the stream when framing never reached TLS).
    let region = wc.tls_at.unwrap_or(c2s.len());
    st.cookies_masked += mask_cookies(&mut c2s[..region]);
    st.cookies_masked += mask_routing_token(&mut c2s[..region]);
    for (s, w, from_client) in [(&mut *c2s, &wc, true), (&mut *s2c, &ws, false)] {
        let seen = mask_direction(s, w, from_client, &v, st);
        if seen && w.tls_at.is_none() && zero_from(s, w.end) {
            st.user_data_masked += 1;
        }
    }
    TlsStarts {
        c2s: wc.tls_at,
        s2c: ws.tls_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpkt_data(ud: &[u8]) -> Vec<u8> {
        let mut v = vec![3, 0, 0, 0, 2, 0xf0, 0x80];
        v.extend_from_slice(ud);
        let l = v.len() as u16;
        v[2..4].copy_from_slice(&l.to_be_bytes());
        v
    }

    /// MCS send data request (client) or indication (server) on `channel`.
    fn send_data(channel: u16, payload: &[u8], request: bool) -> Vec<u8> {
        let mut ud = vec![if request { 0x64 } else { 0x68 }, 0, 6];
        ud.extend_from_slice(&channel.to_be_bytes());
        ud.push(0x70);
        let n = payload.len();
        if n < 0x80 {
            ud.push(n as u8);
        } else {
            ud.extend_from_slice(&[0x80 | (n >> 8) as u8, n as u8]);
        }
        ud.extend_from_slice(payload);
        tpkt_data(&ud)
    }

    /// A share data PDU (no security header: encryption level NONE).
    fn share_data(pdu2: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((18 + body.len()) as u16).to_le_bytes());
        v.extend_from_slice(&0x17u16.to_le_bytes());
        v.extend_from_slice(&1007u16.to_le_bytes());
        v.extend_from_slice(&0x0001_03eau32.to_le_bytes());
        v.extend_from_slice(&[0, 1]);
        v.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
        v.extend_from_slice(&[pdu2, 0, 0, 0]);
        v.extend_from_slice(body);
        v
    }

    fn sec(flags: u16, body: &[u8]) -> Vec<u8> {
        let mut v = flags.to_le_bytes().to_vec();
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(body);
        v
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    fn has(hay: &[u8], needle: &[u8]) -> bool {
        find(hay, needle).is_some()
    }

    /// The payload of the first send-data PDU of a stream.
    fn payload_of(stream: &[u8]) -> Vec<u8> {
        let ud = &stream[7..];
        let (_, f) = mcs::classify_domain_pdu(ud).unwrap();
        let off = f["payload_offset"].as_u64().unwrap() as usize;
        ud[off..].to_vec()
    }

    fn io_view() -> View {
        View {
            io_channel: Some(1003),
            message_channel: None,
            ..View::default()
        }
    }

    #[test]
    fn cookie_of_a_request_that_does_not_decode_is_masked() {
        // TPDU code 0x50 (not CR) and a TPKT length that disagrees: decode_tpkt refuses it.
        let mut cr = vec![3, 0, 0, 99, 0x20, 0x50, 0, 0, 0, 0, 0];
        cr.extend_from_slice(b"Cookie: mstshash=canaryuser\r\n\x01\x00\x08\x00\x03\x00\x00\x00");
        assert!(!matches!(
            x224::decode_tpkt(&cr),
            x224::X224::ConnectionRequest(_)
        ));
        let len = cr.len();
        let mut s2c = Vec::new();
        let mut st = SanitizeStats::default();
        mask_streams(&mut cr, &mut s2c, &mut st);
        assert_eq!(st.cookies_masked, 1);
        assert_eq!(cr.len(), len);
        assert!(has(&cr, b"Cookie: mstshash=xxxxxxxxxx\r\n"));
        assert!(!has(&cr, b"canary"));
    }

    #[test]
    fn routing_token_and_unterminated_cookie_are_masked() {
        let mut a =
            b"\x03\x00\x00\x30\x2b\xe0\0\0\0\0\0Cookie: msts=3640205228.15629.0000\r\n".to_vec();
        assert_eq!(mask_cookies(&mut a), 1);
        assert!(has(&a, b"Cookie: msts=xxxxxxxxxxxxxxxxxxxxx\r\n"));
        let mut b = b"Cookie: mstshash=bob\x00\x01rest".to_vec();
        assert_eq!(mask_cookies(&mut b), 1);
        assert_eq!(&b, b"Cookie: mstshash=xxx\x00\x01rest");
        let mut c = b"Cookie: mstshashcarol\r\n".to_vec();
        assert_eq!(mask_cookies(&mut c), 1);
        assert_eq!(&c, b"Cookie: mstshashxxxxx\r\n");
    }

    #[test]
    fn an_opaque_routing_token_is_masked() {
        let mut cr = b"\x03\x00\x00\x3b\x36\xe0\0\0\0\0\0tsv://MS Terminal Services Plugin.1.CorpFarm\r\n\x01\x00\x08\x00\x03\x00\x00\x00".to_vec();
        let len = cr.len();
        let mut st = SanitizeStats::default();
        mask_streams(&mut cr, &mut Vec::new(), &mut st);
        assert_eq!(st.cookies_masked, 1);
        assert_eq!(cr.len(), len);
        assert!(!has(&cr, b"CorpFarm") && !has(&cr, b"tsv:"));
        assert!(
            has(&cr, b"xx\r\n\x01\x00\x08\x00"),
            "negotiation request kept"
        );
        // A request without cookie or token: nothing to do.
        let mut plain =
            b"\x03\x00\x00\x13\x0e\xe0\0\0\0\0\0\x01\x00\x08\x00\x03\x00\x00\x00".to_vec();
        assert_eq!(mask_routing_token(&mut plain), 0);
    }

    #[test]
    fn client_core_data_names_are_masked_keeping_the_structure() {
        let mut o = crate::rdpsec::gcc::InitialOptions::new(0x3);
        o.client_name = "CANARYHOST".into();
        let mut ci = crate::rdpsec::gcc::connect_initial(&o).unwrap();
        let before = mcs::connect_initial_facts(&ci[7..]).unwrap();
        assert_eq!(before["client_name"], "CANARYHOST");
        let len = ci.len();
        let mut st = SanitizeStats::default();
        mask_streams(&mut ci, &mut Vec::new(), &mut st);
        assert_eq!(st.client_data_masked, 1);
        assert_eq!(ci.len(), len);
        assert!(!has(&ci, &utf16("CANARY")));
        let after = mcs::connect_initial_facts(&ci[7..]).unwrap();
        assert_eq!(after["client_name"], "xxxxxxxxxx");
        assert_eq!(after["desktop"], before["desktop"]);
        assert_eq!(after["encryption_methods"], before["encryption_methods"]);
        assert!(
            !after.contains_key("gcc_decoder"),
            "ironrdp still decodes it"
        );
    }

    #[test]
    fn mask_utf16z_keeps_terminator_and_zeroes_the_tail() {
        let mut b = utf16("ab");
        b.extend_from_slice(&[0, 0, b'z', 0]);
        mask_utf16z(&mut b);
        assert_eq!(b, [b'x', 0, b'x', 0, 0, 0, 0, 0]);
    }

    #[test]
    fn security_exchange_loses_the_encrypted_random_not_its_length() {
        let mut body = 72u32.to_le_bytes().to_vec();
        body.extend(std::iter::repeat_n(0xab, 72));
        let mut s = send_data(1003, &sec(mcs::SEC_EXCHANGE_PKT, &body), true);
        let mut st = SanitizeStats::default();
        mask_streams(&mut s, &mut Vec::new(), &mut st);
        assert_eq!(st.security_exchange_masked, 1);
        let p = payload_of(&s);
        assert_eq!(&p[4..8], &72u32.to_le_bytes());
        assert!(p[8..].iter().all(|&b| b == 0));
        assert_eq!(
            mcs::classify_share_pdu(&p, true).unwrap().0,
            "security exchange"
        );
    }

    #[test]
    fn encrypted_client_info_is_zeroed_after_the_flags_and_fips_keeps_its_header() {
        let body: Vec<u8> = (1..=40).collect();
        let pdu = sec(mcs::SEC_INFO_PKT | mcs::SEC_ENCRYPT, &body);
        for (fips, keep) in [(false, 4usize), (true, 8)] {
            let mut p = pdu.clone();
            let v = View {
                fips,
                encrypted: true,
                ..io_view()
            };
            let mut st = SanitizeStats::default();
            mask_payload(&mut p, 1003, true, &v, &mut st);
            assert_eq!(st.client_info_masked, 1);
            assert_eq!(&p[..keep], &pdu[..keep]);
            assert!(p[keep..].iter().all(|&b| b == 0), "fips {fips}: {p:?}");
            assert_eq!(
                mcs::classify_share_pdu(&p, true).unwrap().0,
                "client info (encrypted)"
            );
        }
    }

    #[test]
    fn cleartext_client_info_is_zeroed() {
        let mut info = vec![0u8; 18];
        info[4..8].copy_from_slice(&0x10u32.to_le_bytes());
        info[10..12].copy_from_slice(&12u16.to_le_bytes());
        info.extend_from_slice(&[0, 0]);
        info.extend_from_slice(&utf16("canary"));
        info.extend_from_slice(&[0; 10]);
        let mut s = send_data(1003, &sec(mcs::SEC_INFO_PKT, &info), true);
        assert!(has(&s, &utf16("canary")));
        let mut st = SanitizeStats::default();
        mask_streams(&mut s, &mut Vec::new(), &mut st);
        assert_eq!(st.client_info_masked, 1);
        assert!(!has(&s, &utf16("canary")));
        assert_eq!(
            mcs::classify_share_pdu(&payload_of(&s), true).unwrap().0,
            "client info"
        );
    }

    #[test]
    fn other_encrypted_pdus_are_zeroed_both_ways() {
        let body: Vec<u8> = (1..=30).collect();
        for from_client in [true, false] {
            let mut p = sec(mcs::SEC_ENCRYPT, &body);
            let mut st = SanitizeStats::default();
            let v = View {
                encrypted: true,
                ..io_view()
            };
            mask_payload(&mut p, 1003, from_client, &v, &mut st);
            assert_eq!(st.encrypted_pdus_masked, 1);
            assert!(p[4..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn slow_path_input_is_zeroed_and_finalization_pdus_kept() {
        let input = share_data(0x1c, b"\x01\x00\x00\x00keystrokes");
        let sync = share_data(0x1f, &[1, 0, 0xea, 0x03]);
        let mut s = send_data(1003, &input, true);
        s.extend(send_data(1003, &sync, true));
        let mut st = SanitizeStats::default();
        mask_streams(&mut s, &mut Vec::new(), &mut st);
        assert_eq!(st.user_data_masked, 1);
        assert!(!has(&s, b"keystrokes"));
        assert!(has(&s, &input[..18]), "share headers kept");
        assert!(has(&s, &sync), "synchronize kept");
    }

    #[test]
    fn fast_path_input_and_output_are_zeroed_after_the_header() {
        let mut fp = vec![0x04, 12];
        fp.extend_from_slice(b"secretkeys");
        let mut c2s = send_data(1003, &share_data(0x1f, &[1, 0, 0xea, 0x03]), true);
        c2s.extend_from_slice(&fp);
        let mut s2c = fp.clone();
        let mut st = SanitizeStats::default();
        mask_streams(&mut c2s, &mut s2c, &mut st);
        assert_eq!(st.user_data_masked, 2);
        assert!(!has(&c2s, b"secret") && !has(&s2c, b"secret"));
        assert!(c2s.ends_with(&[0x04, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(matches!(x224::frame(&s2c), x224::Frame::FastPath(12)));
    }

    #[test]
    fn virtual_channel_data_is_zeroed_after_the_channel_header() {
        let mut p = 9u32.to_le_bytes().to_vec();
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(b"clipboard");
        let keep = p[..8].to_vec();
        for from_client in [true, false] {
            let mut q = p.clone();
            let mut st = SanitizeStats::default();
            mask_payload(&mut q, 1004, from_client, &io_view(), &mut st);
            assert_eq!(st.user_data_masked, 1);
            assert_eq!(&q[..8], &keep[..]);
            assert!(q[8..].iter().all(|&b| b == 0));
        }
        // The I/O channel's own synchronize is not channel data.
        let mut sync = share_data(0x1f, &[1, 0, 0xea, 0x03]);
        let orig = sync.clone();
        mask_payload(
            &mut sync,
            1003,
            true,
            &io_view(),
            &mut SanitizeStats::default(),
        );
        assert_eq!(sync, orig);
    }

    #[test]
    fn save_session_info_keeps_its_type_and_loses_the_logon_names() {
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&utf16("CORPDOMAIN"));
        let mut p = share_data(0x26, &body);
        let mut st = SanitizeStats::default();
        mask_payload(&mut p, 1003, false, &io_view(), &mut st);
        assert_eq!(st.user_data_masked, 1);
        assert_eq!(&p[18..22], &1u32.to_le_bytes());
        assert!(!has(&p, &utf16("CORP")));
        let (name, f) = mcs::classify_share_pdu(&p, true).unwrap();
        assert_eq!(name, "save session info");
        assert!(f.contains_key("info_type"));
    }

    #[test]
    fn client_license_pdu_loses_user_and_machine_names() {
        let mut body = vec![0x13, 0x03];
        let names = b"canaryuser\0canaryhost\0";
        body.extend_from_slice(&((4 + names.len()) as u16).to_le_bytes());
        body.extend_from_slice(names);
        let mut p = sec(mcs::SEC_LICENSE_PKT, &body);
        let mut st = SanitizeStats::default();
        mask_payload(&mut p, 1003, true, &io_view(), &mut st);
        assert_eq!(st.user_data_masked, 1);
        assert!(!has(&p, b"canary"));
        assert_eq!(&p[4..8], &body[..4], "preamble kept");
    }

    #[test]
    fn bytes_after_lost_framing_are_zeroed_once_data_flowed() {
        let mut s = send_data(1003, &share_data(0x1f, &[1, 0, 0xea, 0x03]), true);
        let sync_len = s.len();
        s.extend_from_slice(b"\xffgarbage with a password");
        let mut st = SanitizeStats::default();
        mask_streams(&mut s, &mut Vec::new(), &mut st);
        assert!(s[sync_len..].iter().all(|&b| b == 0));
        // Before any data PDU (an X.224 fuzz case), what follows is left alone.
        let mut t = b"\x03\x00\x00\x0bgarbage".to_vec();
        let orig = t.clone();
        mask_streams(&mut t, &mut Vec::new(), &mut SanitizeStats::default());
        assert_eq!(t, orig);
    }

    #[test]
    fn tls_stops_the_walk_and_is_left_alone() {
        let mut cr = b"\x03\x00\x00\x13\x0e\xe0\0\0\0\0\0\x01\x00\x08\x00\x03\x00\x00\x00".to_vec();
        let cr_len = cr.len();
        cr.extend_from_slice(b"\x16\x03\x01\x00\x05Cookie: mstshash=x");
        let orig = cr.clone();
        let mut st = SanitizeStats::default();
        let tls = mask_streams(&mut cr, &mut Vec::new(), &mut st);
        assert_eq!(tls.c2s, Some(cr_len));
        assert_eq!(cr, orig);
    }
}
