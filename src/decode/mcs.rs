//! MCS / GCC decoding for the `mcs` and `channels` stages (MS-RDPBCGR 2.2.1.3-2.2.1.8), using
//! ironrdp-pdu's types where they decode the PDU. Pure, no I/O, never panics.
//!
//! The connect PDUs go through `ironrdp_pdu::mcs::ConnectInitial` / `ConnectResponse` first. When
//! ironrdp-pdu rejects them, a hand-written walk of the GCC user data blocks takes over, because
//! real servers send data it refuses: ironrdp-pdu caps the server certificate in the server security
//! block at 1024 bytes (an X.509 chain of a Windows server in standard RDP security mode is larger),
//! requires serverRandomLen == 32, and rejects unknown encryption method bits. The MCS result of a
//! Connect Response is always read by hand: ironrdp-pdu reads and drops it.
//!
//! The domain PDUs (erect domain, attach user, channel join, send data, disconnect provider
//! ultimatum) and the Connect-Initial header are read by `wire::mcs` (`DomainPdu`); this module
//! names them and turns their fields into facts.
//!
//! INVARIANT: every length read from the input is checked against the bytes present before it is
//! used to slice or to allocate.

use ironrdp_pdu::gcc;
use ironrdp_pdu::mcs::{ConnectInitial, ConnectResponse};
use serde_json::json;

use super::pdu::{DomainKind, ShareKind};
use super::x224::protocol_names;
use crate::report::Facts;
use crate::wire::asn1;
use crate::wire::gcc as wire_gcc;
use crate::wire::mcs::DomainPdu;
use crate::wire::servercert::{ChainEnd, ServerCertificate};

// ---------------------------------------------------------------------------------------------
// Small readers

use crate::wire::cursor::utf16z;
pub(crate) use crate::wire::cursor::{le16, le32};

/// An 8-bit string up to the first NUL (channel names are ANSI).
fn ansiz(b: &[u8]) -> String {
    b.iter()
        .take_while(|&&c| c != 0)
        .map(|&c| char::from(c))
        .collect()
}

/// One BER TLV (T.125 uses BER for the connect PDUs): (tag bytes, content, total length).
/// Tags of one byte, or the two-byte application tags 0x7f 0x65 / 0x7f 0x66.
pub(crate) fn ber_tlv(buf: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let (h, content, _) = asn1::read_tlv(buf, asn1::TagForm::UpToTwo).ok()?;
    Some((buf.get(..h.tag_len)?, content, h.header_len + h.len))
}

// ---------------------------------------------------------------------------------------------
// Names

pub use crate::codes::{
    disconnect_reason_name, encryption_level_name, encryption_method_names, mcs_result_name,
    rdp_version_name,
};
use crate::codes::{license_error_name, license_state_name, server_early_caps_names};

/// errorInfo of a Set Error Info PDU (MS-RDPBCGR 2.2.5.1.1), as the spec spells it.
pub use crate::codes::error_info_name;

// ---------------------------------------------------------------------------------------------
// Connect Initial

/// What rdprobe reports of the client GCC blocks, filled by ironrdp-pdu or by the hand walk.
#[derive(Default)]
struct ClientBlocks {
    version: Option<u32>,
    desktop: Option<(u16, u16)>,
    build: Option<u32>,
    name: Option<String>,
    keyboard_layout: Option<u32>,
    server_selected_protocol: Option<u32>,
    early_capability_flags: Option<u16>,
    encryption_methods: Option<u32>,
    ext_encryption_methods: Option<u32>,
    channels: Option<Vec<String>>,
}

/// Facts of a client MCS Connect Initial (client core/security/network data).
///
/// Keys: "client_rdp_version", "desktop" ("WxH"), "client_build", "client_name", "keyboard_layout",
/// "server_selected_protocol" (the client core data's echo of the protocol the server selected at
/// X.224, MS-RDPBCGR 2.2.1.3.2; the client's *requested* protocols travel only in the X.224 request),
/// "client_early_capability_flags", "encryption_methods" (names), "ext_encryption_methods",
/// "channels" (names). "gcc_decoder" says "rdprobe" when ironrdp-pdu refused the PDU, with its error
/// in "ironrdp_error".
pub fn connect_initial_facts(x224_user_data: &[u8]) -> Result<Facts, String> {
    let mut facts = Facts::new();
    let blocks = match ironrdp_core::decode::<ConnectInitial>(x224_user_data) {
        Ok(ci) => client_blocks_from_ironrdp(ci.conference_create_request.gcc_blocks()),
        Err(e) => {
            let user_data = connect_initial_user_data(x224_user_data)?;
            let b = walk_client_blocks(user_data)?;
            facts.insert("gcc_decoder".into(), json!("rdprobe"));
            facts.insert("ironrdp_error".into(), json!(e.to_string()));
            b
        }
    };
    if let Some(v) = blocks.version {
        facts.insert("client_rdp_version".into(), json!(rdp_version_name(v)));
    }
    if let Some((w, h)) = blocks.desktop {
        facts.insert("desktop".into(), json!(format!("{w}x{h}")));
    }
    if let Some(b) = blocks.build {
        facts.insert("client_build".into(), json!(b));
    }
    if let Some(n) = blocks.name {
        facts.insert("client_name".into(), json!(n));
    }
    if let Some(k) = blocks.keyboard_layout {
        facts.insert("keyboard_layout".into(), json!(format!("0x{k:08x}")));
    }
    if let Some(p) = blocks.server_selected_protocol {
        facts.insert("server_selected_protocol".into(), json!(protocol_names(p)));
    }
    if let Some(f) = blocks.early_capability_flags {
        facts.insert(
            "client_early_capability_flags".into(),
            json!(format!("0x{f:04x}")),
        );
    }
    if let Some(m) = blocks.encryption_methods {
        facts.insert(
            "encryption_methods".into(),
            json!(encryption_method_names(m)),
        );
    }
    if let Some(m) = blocks.ext_encryption_methods.filter(|&m| m != 0) {
        facts.insert(
            "ext_encryption_methods".into(),
            json!(encryption_method_names(m)),
        );
    }
    if let Some(c) = blocks.channels {
        facts.insert("channels".into(), json!(c));
    }
    Ok(facts)
}

fn client_blocks_from_ironrdp(g: &gcc::ClientGccBlocks) -> ClientBlocks {
    let core = &g.core;
    ClientBlocks {
        version: Some(core.version.0),
        desktop: Some((core.desktop_width, core.desktop_height)),
        build: Some(core.client_build),
        name: Some(core.client_name.trim_end_matches('\0').to_owned()),
        keyboard_layout: Some(core.keyboard_layout),
        server_selected_protocol: core
            .optional_data
            .server_selected_protocol
            .map(|p| p.bits()),
        early_capability_flags: core.optional_data.early_capability_flags.map(|f| f.bits()),
        encryption_methods: Some(g.security.encryption_methods.bits()),
        ext_encryption_methods: Some(g.security.ext_encryption_methods),
        channels: g.network.as_ref().map(|n| {
            n.channels
                .iter()
                .map(|c| ansiz(c.name.as_bytes()))
                .collect()
        }),
    }
}

/// The userData OCTET STRING of a BER Connect-Initial (T.125 7, application tag 101).
fn connect_initial_user_data(ud: &[u8]) -> Result<&[u8], String> {
    use crate::wire::mcs::{connect_initial, ConnectInitialError as E};
    match connect_initial(ud) {
        Ok(r) => Ok(ud.get(r).unwrap_or_default()),
        Err(E::Header(_)) => Err("mcs connect initial: unreadable BER header".into()),
        Err(E::Tag(tag, n)) => Err(format!(
            "mcs connect initial: unexpected tag {:02x?}",
            &tag[..n]
        )),
        Err(E::Field(field, _)) => Err(format!("mcs connect initial: field {field} unreadable")),
        Err(E::UserData(_)) => Err("mcs connect initial: userData unreadable".into()),
        Err(E::UserDataNotOctetString) => {
            Err("mcs connect initial: userData is not an OCTET STRING".into())
        }
    }
}

/// The GCC user data blocks after the H.221 key ("Duca" client-to-server, "McDn" server-to-client)
/// of a T.124 ConferenceCreateRequest/Response (MS-RDPBCGR 2.2.1.3.1 / 2.2.1.4.1).
fn gcc_blocks_after_key<'a>(user_data: &'a [u8], key: &[u8; 4]) -> Result<&'a [u8], String> {
    match wire_gcc::blocks_after_key(user_data, key) {
        Ok((blocks, _)) => Ok(blocks),
        Err(wire_gcc::UserDataError::NoKey) => Err(format!(
            "gcc: H.221 key {:?} not found",
            String::from_utf8_lossy(key)
        )),
        Err(wire_gcc::UserDataError::Length(_)) => Err("gcc: unreadable user data length".into()),
    }
}

/// Splits GCC user data into (block type, block body without its 4-byte header) (MS-RDPBCGR
/// 2.2.1.3.1 TS_UD_HEADER). Stops at a malformed header, returning what came before it.
fn gcc_blocks(b: &[u8]) -> (Vec<(u16, &[u8])>, Option<String>) {
    let (list, err) = wire_gcc::blocks(b, 0);
    (
        list.into_iter().map(|r| (r.ty, r.body)).collect(),
        err.map(|e| block_error_text(&e)),
    )
}

/// The decoder's words for a broken block walk (the "gcc_error" fact).
fn block_error_text(e: &wire_gcc::BlockError) -> String {
    match *e {
        wire_gcc::BlockError::TruncatedHeader { .. } => "gcc: truncated block header".into(),
        wire_gcc::BlockError::BadLength { ty, len, left, .. } => {
            format!("gcc: block 0x{ty:04x} length {len} invalid ({left} bytes left)")
        }
    }
}

/// The client GCC user data blocks of an MCS Connect Initial as (block type, offset of the block body
/// within `x224_user_data`, body length), body without its 4-byte TS_UD_HEADER; for tools that
/// rewrite fields in place (sanitize). Stops at a malformed block header.
pub fn client_gcc_block_offsets(x224_user_data: &[u8]) -> Result<Vec<(u16, usize, usize)>, String> {
    let user_data = connect_initial_user_data(x224_user_data)?;
    let blocks = gcc_blocks_after_key(user_data, b"Duca")?;
    let (list, _) = gcc_blocks(blocks);
    let base = x224_user_data.as_ptr() as usize;
    Ok(list
        .into_iter()
        .map(|(ty, body)| (ty, body.as_ptr() as usize - base, body.len()))
        .collect())
}

fn walk_client_blocks(user_data: &[u8]) -> Result<ClientBlocks, String> {
    let blocks = gcc_blocks_after_key(user_data, b"Duca")?;
    let (list, _) = gcc_blocks(blocks);
    let mut c = ClientBlocks::default();
    for (ty, body) in list {
        match ty {
            // CS_CORE (MS-RDPBCGR 2.2.1.3.2)
            0xc001 => {
                c.version = le32(body, 0);
                c.desktop = le16(body, 4).zip(le16(body, 6));
                c.keyboard_layout = le32(body, 12);
                c.build = le32(body, 16);
                c.name = body.get(20..52).map(utf16z);
                c.early_capability_flags = le16(body, 140);
                c.server_selected_protocol = le32(body, 208);
            }
            // CS_SECURITY (2.2.1.3.3)
            0xc002 => {
                c.encryption_methods = le32(body, 0);
                c.ext_encryption_methods = le32(body, 4);
            }
            // CS_NET (2.2.1.3.4)
            0xc003 => {
                let count = le32(body, 0).unwrap_or(0) as usize;
                let names = body
                    .get(4..)
                    .unwrap_or(&[])
                    .chunks_exact(12)
                    .take(count)
                    .map(|d| ansiz(&d[..8]))
                    .collect();
                c.channels = Some(names);
            }
            _ => {}
        }
    }
    if c.version.is_none() {
        return Err("gcc: client core data block (0xC001) missing".into());
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// Connect Response

/// What rdprobe reports of the server GCC blocks, filled by ironrdp-pdu or by the hand walk.
#[derive(Default)]
struct ServerBlocks {
    version: Option<u32>,
    client_requested_protocols: Option<u32>,
    early_capability_flags: Option<u32>,
    encryption_method: Option<u32>,
    encryption_level: Option<u32>,
    server_random_present: Option<bool>,
    server_cert: Option<Vec<u8>>,
    io_channel: Option<u16>,
    channel_ids: Option<Vec<u16>>,
    message_channel: Option<u16>,
}

/// Facts of a server MCS Connect Response: result, server core data (RDP version, client requested
/// protocols echo, early capability flags), server security data (encryption method and level, server
/// random present, certificate type and key size), network data (I/O channel, channel ids).
///
/// Keys: "result" (T.125 name, "rt-successful" on success), "server_rdp_version",
/// "client_requested_protocols_echo", "early_capability_flags", "encryption_method",
/// "encryption_level", "server_random_present", "server_certificate_type" ("proprietary" / "x509"),
/// "server_certificate_temporary", "server_key_bits", "server_certificate_chain_len",
/// "server_certificate_subject", "io_channel", "channel_ids", "mcs_message_channel". A response
/// with a failure result and no user data gives only "result". When the GCC data cannot be read,
/// "gcc_error" says why (the result is still reported).
pub fn connect_response_facts(x224_user_data: &[u8]) -> Result<Facts, String> {
    let cr = wire_gcc::connect_response(x224_user_data).map_err(|e| match e {
        wire_gcc::ConnectResponseError::Header(_) => {
            "mcs connect response: unreadable BER header".to_string()
        }
        wire_gcc::ConnectResponseError::Tag(tag) => {
            format!("mcs connect response: unexpected tag {tag:02x?}")
        }
        wire_gcc::ConnectResponseError::ResultUnreadable(_) => {
            "mcs connect response: result unreadable".into()
        }
        wire_gcc::ConnectResponseError::ResultNotEnumerated { .. } => {
            "mcs connect response: result is not a one-byte ENUMERATED".into()
        }
    })?;
    let mut facts = Facts::new();
    facts.insert("result".into(), json!(mcs_result_name(cr.result)));
    let user_data = cr.user_data.map(|(u, _)| u);
    let Some(user_data) = user_data else {
        if cr.result == 0 {
            facts.insert(
                "gcc_error".into(),
                json!("connect response without user data"),
            );
        }
        return Ok(facts);
    };
    let blocks = match ironrdp_core::decode::<ConnectResponse>(x224_user_data) {
        Ok(cr) => server_blocks_from_ironrdp(cr.conference_create_response.gcc_blocks()),
        Err(e) => {
            facts.insert("gcc_decoder".into(), json!("rdprobe"));
            facts.insert("ironrdp_error".into(), json!(e.to_string()));
            match walk_server_blocks(user_data) {
                Ok(b) => b,
                Err(e) => {
                    facts.insert("gcc_error".into(), json!(e));
                    return Ok(facts);
                }
            }
        }
    };
    server_facts(&blocks, &mut facts);
    Ok(facts)
}

fn server_blocks_from_ironrdp(g: &gcc::ServerGccBlocks) -> ServerBlocks {
    ServerBlocks {
        version: Some(g.core.version.0),
        client_requested_protocols: g
            .core
            .optional_data
            .client_requested_protocols
            .map(|p| p.bits()),
        early_capability_flags: g
            .core
            .optional_data
            .early_capability_flags
            .map(|f| f.bits()),
        encryption_method: Some(g.security.encryption_method.bits()),
        encryption_level: Some(encryption_level_u32(g.security.encryption_level)),
        server_random_present: Some(g.security.server_random.is_some()),
        server_cert: (!g.security.server_cert.is_empty()).then(|| g.security.server_cert.clone()),
        io_channel: Some(g.network.io_channel),
        channel_ids: Some(g.network.channel_ids.clone()),
        message_channel: g.message_channel.as_ref().map(|m| m.mcs_message_channel_id),
    }
}

fn encryption_level_u32(l: gcc::EncryptionLevel) -> u32 {
    match l {
        gcc::EncryptionLevel::None => 0,
        gcc::EncryptionLevel::Low => 1,
        gcc::EncryptionLevel::ClientCompatible => 2,
        gcc::EncryptionLevel::High => 3,
        gcc::EncryptionLevel::Fips => 4,
    }
}

/// The hand walk of the server GCC blocks (MS-RDPBCGR 2.2.1.4.2-2.2.1.4.5).
fn walk_server_blocks(user_data: &[u8]) -> Result<ServerBlocks, String> {
    let blocks = gcc_blocks_after_key(user_data, b"McDn")?;
    let (list, err) = wire_gcc::server_blocks(blocks, 0);
    if list.is_empty() {
        return Err(err
            .map(|e| block_error_text(&e))
            .unwrap_or_else(|| "gcc: no server data blocks".into()));
    }
    let mut s = ServerBlocks::default();
    for block in list {
        match block {
            wire_gcc::ServerBlock::Core(c) => {
                s.version = c.version;
                s.client_requested_protocols = c.client_requested_protocols;
                s.early_capability_flags = c.early_capability_flags;
            }
            wire_gcc::ServerBlock::Security(sec) => {
                s.encryption_method = sec.encryption_method;
                s.encryption_level = sec.encryption_level;
                if sec.encryption_method == Some(0) && sec.encryption_level == Some(0) {
                    s.server_random_present = Some(false);
                } else if let Some((rl, _)) = sec.lengths {
                    s.server_random_present = Some(rl > 0 && sec.server_random.is_some());
                    s.server_cert = sec
                        .server_certificate
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec);
                }
            }
            wire_gcc::ServerBlock::Net(n) => {
                s.io_channel = n.io_channel;
                s.channel_ids = Some(n.channel_ids);
            }
            wire_gcc::ServerBlock::MessageChannel(m) => s.message_channel = m,
            _ => {}
        }
    }
    Ok(s)
}

fn server_facts(s: &ServerBlocks, facts: &mut Facts) {
    if let Some(v) = s.version {
        facts.insert("server_rdp_version".into(), json!(rdp_version_name(v)));
    }
    if let Some(p) = s.client_requested_protocols {
        facts.insert(
            "client_requested_protocols_echo".into(),
            json!(protocol_names(p)),
        );
    }
    if let Some(f) = s.early_capability_flags {
        facts.insert(
            "early_capability_flags".into(),
            json!(server_early_caps_names(f)),
        );
    }
    if let Some(m) = s.encryption_method {
        facts.insert(
            "encryption_method".into(),
            json!(encryption_method_names(m).join(",")),
        );
    }
    if let Some(l) = s.encryption_level {
        facts.insert("encryption_level".into(), json!(encryption_level_name(l)));
    }
    if let Some(r) = s.server_random_present {
        facts.insert("server_random_present".into(), json!(r));
    }
    if let Some(cert) = &s.server_cert {
        for (k, v) in server_certificate_facts(cert) {
            facts.insert(k, v);
        }
    }
    if let Some(io) = s.io_channel {
        facts.insert("io_channel".into(), json!(io));
    }
    if let Some(ids) = &s.channel_ids {
        facts.insert("channel_ids".into(), json!(ids));
    }
    if let Some(m) = s.message_channel {
        facts.insert("mcs_message_channel".into(), json!(m));
    }
}

/// Facts of the serverCertificate of the server security data (MS-RDPBCGR 2.2.1.4.3.1):
/// a proprietary certificate (dwVersion 1, 2.2.1.4.3.1.1: the RSA key's bit length) or an X.509
/// chain (dwVersion 2, 2.2.1.4.3.1.2?; the server's certificate is the last of the chain). The top
/// bit of dwVersion marks a temporary certificate.
pub fn server_certificate_facts(cert: &[u8]) -> Facts {
    let mut f = Facts::new();
    // A key no RSA encryption can use (zero, even or short modulus, exponent below 3) is the
    // server's fault whatever the client does with it: the stage machine fails on it.
    if let Err(crate::rdpsec::cert::CertError::Unusable(why)) =
        crate::rdpsec::cert::server_public_key(cert)
    {
        f.insert(
            "server_key_error".into(),
            json!(format!("unusable rsa key: {why}")),
        );
    }
    let Ok(parsed) = ServerCertificate::parse(cert) else {
        f.insert(
            "server_certificate_error".into(),
            json!("certificate shorter than dwVersion"),
        );
        return f;
    };
    let temporary = match &parsed {
        ServerCertificate::Proprietary { temporary, .. }
        | ServerCertificate::X509 { temporary, .. }
        | ServerCertificate::Unknown { temporary, .. } => *temporary,
    };
    f.insert("server_certificate_temporary".into(), json!(temporary));
    match parsed {
        ServerCertificate::Proprietary { cert, .. } => {
            f.insert("server_certificate_type".into(), json!("proprietary"));
            match cert.rsa1_blob() {
                Some(b) => {
                    if let Some(bits) = le32(b, 8) {
                        f.insert("server_key_bits".into(), json!(bits));
                    }
                }
                None => {
                    f.insert(
                        "server_certificate_error".into(),
                        json!("proprietary certificate without an RSA1 key blob"),
                    );
                }
            }
        }
        ServerCertificate::X509 { chain, end, .. } => {
            f.insert("server_certificate_type".into(), json!("x509"));
            if let ChainEnd::EntryOverrun { .. } = end {
                f.insert(
                    "server_certificate_error".into(),
                    json!("x509 chain entry exceeds the certificate data"),
                );
            }
            f.insert("server_certificate_chain_len".into(), json!(chain.len()));
            if let Some(leaf) = chain.last() {
                match super::tls::cert_facts(leaf, 0) {
                    Ok(c) => {
                        f.insert("server_key_bits".into(), json!(c.key_bits));
                        f.insert("server_certificate_subject".into(), json!(c.subject));
                    }
                    Err(e) => {
                        f.insert("server_certificate_error".into(), json!(e.to_string()));
                    }
                }
            }
        }
        ServerCertificate::Unknown { version, .. } => {
            f.insert(
                "server_certificate_type".into(),
                json!(format!("unknown ({version})")),
            );
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// Domain PDUs

/// [`domain_pdu`] with the PDU's display name ("attach user confirm"), for callers that print it.
pub fn classify_domain_pdu(x224_user_data: &[u8]) -> Option<(&'static str, Facts)> {
    domain_pdu(x224_user_data).map(|(k, f)| (k.name(), f))
}

/// Classifies an MCS domain PDU (T.125 DomainMCSPDU, PER) in X.224 data user data as its
/// [`DomainKind`]. For send data PDUs the facts MUST include
/// "payload_offset" (u64: offset of the user data within `x224_user_data`) and "channel_id"; for the
/// ultimatum "reason"; for confirms "result" and "initiator" / "channel_id".
///
/// Send data facts also carry "initiator", "payload_len" (the PER length) and "truncated": true when
/// fewer bytes than announced are present (the payload then runs to the end of the input).
pub fn domain_pdu(x224_user_data: &[u8]) -> Option<(DomainKind, Facts)> {
    let mut f = Facts::new();
    let name = match DomainPdu::parse(x224_user_data).ok()? {
        DomainPdu::ErectDomainRequest => DomainKind::ErectDomainRequest,
        DomainPdu::DisconnectProviderUltimatum { reason } => {
            f.insert("reason".into(), json!(disconnect_reason_name(reason)));
            DomainKind::DisconnectProviderUltimatum
        }
        DomainPdu::AttachUserRequest => DomainKind::AttachUserRequest,
        DomainPdu::AttachUserConfirm { result, initiator } => {
            f.insert("result".into(), json!(mcs_result_name(result)));
            if let Some(u) = initiator {
                f.insert("initiator".into(), json!(u));
            }
            DomainKind::AttachUserConfirm
        }
        DomainPdu::ChannelJoinRequest {
            initiator,
            channel_id,
        } => {
            f.insert("initiator".into(), json!(initiator));
            f.insert("channel_id".into(), json!(channel_id));
            DomainKind::ChannelJoinRequest
        }
        DomainPdu::ChannelJoinConfirm {
            result,
            initiator,
            requested,
            channel_id,
        } => {
            f.insert("result".into(), json!(mcs_result_name(result)));
            if let Some(u) = initiator {
                f.insert("initiator".into(), json!(u));
            }
            if let Some(r) = requested {
                f.insert("requested_channel_id".into(), json!(r));
            }
            // Without the optional channelId, the requested one is the joined one.
            if let Some(c) = channel_id.or(requested) {
                f.insert("channel_id".into(), json!(c));
            }
            DomainKind::ChannelJoinConfirm
        }
        DomainPdu::SendDataRequest(sd) => {
            send_data_facts(&sd, &mut f);
            DomainKind::SendDataRequest
        }
        DomainPdu::SendDataIndication(sd) => {
            send_data_facts(&sd, &mut f);
            DomainKind::SendDataIndication
        }
    };
    Some((name, f))
}

fn send_data_facts(sd: &crate::wire::mcs::SendData, f: &mut Facts) {
    f.insert("initiator".into(), json!(sd.initiator));
    f.insert("channel_id".into(), json!(sd.channel_id));
    f.insert("payload_offset".into(), json!(sd.payload.start as u64));
    f.insert("payload_len".into(), json!(sd.announced_len as u64));
    if sd.truncated() {
        f.insert("truncated".into(), json!(true));
    }
}

// ---------------------------------------------------------------------------------------------
// Share PDUs, security header, licensing (read by `wire::share`, named here)

use crate::wire::share::{
    self as wshare, ActivePdu, LicensingMessage, Payload, SecuredBody, ShareControlBody,
    ShareControlPdu,
};
/// Security header flags (MS-RDPBCGR 2.2.8.1.1.2.1 TS_SECURITY_HEADER).
pub use crate::wire::share::{
    SEC_AUTODETECT_REQ, SEC_AUTODETECT_RSP, SEC_ENCRYPT, SEC_EXCHANGE_PKT, SEC_FLAGSHI_VALID,
    SEC_HEARTBEAT, SEC_IGNORE_SEQNO, SEC_INFO_PKT, SEC_LICENSE_ENCRYPT, SEC_LICENSE_PKT,
    SEC_REDIRECTION_PKT, SEC_RESET_SEQNO, SEC_SECURE_CHECKSUM, SEC_TRANSPORT_REQ,
    SEC_TRANSPORT_RSP,
};

/// [`share_pdu`] with the PDU's display name ("client info"), for callers that print it.
pub fn classify_share_pdu(
    payload: &[u8],
    has_security_header: bool,
) -> Option<(&'static str, Facts)> {
    share_pdu(payload, has_security_header).map(|(k, f)| (k.name(), f))
}

/// Classifies the payload of a send data request/indication as its [`ShareKind`] (the stage
/// machine places it by [`ShareKind::stage`]). `has_security_header`: standard RDP
/// security (every PDU has a basic security header); otherwise only PDUs with SEC_EXCHANGE_PKT /
/// SEC_INFO_PKT / SEC_LICENSE_PKT flags do (detect those by their flags).
///
/// What is read, per MS-RDPBCGR (the reading itself is [`Payload::parse`]):
/// * Standard RDP security (`has_security_header`): every slow-path PDU starts with a security
///   header (2.2.8.1.1.2) when an encryption level other than NONE was negotiated; its SEC_ENCRYPT
///   PDUs are "encrypted pdu" (nothing more is readable without the session keys). With level NONE
///   (what IronRDP's connector negotiates) share PDUs carry no header: a payload that is exactly a
///   share control PDU is read as one.
/// * Enhanced security (TLS, CredSSP): only the Client Info PDU (2.2.1.11.1: SEC_INFO_PKT), the
///   licensing PDUs (2.2.1.12: SEC_LICENSE_PKT), auto-detect (2.2.14: SEC_AUTODETECT_*),
///   multitransport (2.2.15: SEC_TRANSPORT_*), heartbeat (2.2.16: SEC_HEARTBEAT) and redirection
///   PDUs carry a basic 4-byte security header; IronRDP's connector encodes them the same way. Share
///   control PDUs have none. The payload is read as a share control PDU when it is exactly one,
///   else as a security header with one of those flags.
///
/// Order: a payload that is exactly one share control PDU (totalLength equal to its length, a
/// valid pduType carrying TS_PROTOCOL_VERSION) is read as one in both modes; otherwise a security
/// header is read. Each reading is validated (lengths must agree) before it is accepted; None when
/// neither fits (e.g. virtual channel data).
///
/// Facts: "security_flags" (names) when a header was read, and per PDU: "error_info" (e.g.
/// "ERRINFO_LOGOFF_BY_USER (0x0000000C)") with "error_info_code" (u32) for set error info;
/// "error_code", "state_transition", "valid_client" for a license error alert; "share_id",
/// "source_descriptor", "capability_sets" for demand/confirm active; "action" for control;
/// "info_type" for save session info; "monitor_count" for monitor layout; "user", "domain",
/// "info_flags" for an unencrypted client info; "compressed" when the data PDU is compressed.
pub fn share_pdu(payload: &[u8], has_security_header: bool) -> Option<(ShareKind, Facts)> {
    match Payload::parse(payload, 0, has_security_header).ok()? {
        Payload::ShareControl(s) => Some(share_control(payload, &s)),
        Payload::Secured { header, body } => {
            let (kind, mut f) = secured(payload, &header, body);
            f.insert("security_flags".into(), json!(header.names()));
            Some((kind, f))
        }
    }
}

/// What follows a basic security header.
fn secured(p: &[u8], h: &wshare::SecurityHeader, body: SecuredBody) -> (ShareKind, Facts) {
    let mut f = Facts::new();
    let kind = match body {
        SecuredBody::SecurityExchange(x) => {
            f.insert("encrypted_client_random_len".into(), json!(x.random.len()));
            ShareKind::SecurityExchange
        }
        SecuredBody::Licensing(l) => return license_pdu(l.message),
        SecuredBody::Encrypted if h.has(SEC_INFO_PKT) => ShareKind::ClientInfoEncrypted,
        SecuredBody::Encrypted if h.has(SEC_LICENSE_PKT) => ShareKind::LicensePduEncrypted,
        SecuredBody::Encrypted => ShareKind::Encrypted,
        SecuredBody::ClientInfo(info) => {
            if let Some(c) = info {
                let text = |r: std::ops::Range<usize>| {
                    let s = p.get(r).unwrap_or_default();
                    if c.unicode() {
                        utf16z(s)
                    } else {
                        ansiz(s)
                    }
                };
                f.insert("info_flags".into(), json!(format!("0x{:08x}", c.flags)));
                f.insert("user".into(), json!(text(c.user_name.clone())));
                f.insert("domain".into(), json!(text(c.domain.clone())));
            }
            ShareKind::ClientInfo
        }
        SecuredBody::AutoDetect(ad) => {
            if let Some(ad) = ad {
                f.insert("type".into(), json!(format!("0x{:04x}", ad.request_type)));
            }
            if h.has(SEC_AUTODETECT_REQ) {
                ShareKind::AutoDetectRequest
            } else {
                ShareKind::AutoDetectResponse
            }
        }
        SecuredBody::MultitransportRequest => ShareKind::MultitransportRequest,
        SecuredBody::MultitransportResponse => ShareKind::MultitransportResponse,
        SecuredBody::Heartbeat => ShareKind::Heartbeat,
        SecuredBody::ServerRedirection => ShareKind::ServerRedirection,
        // An unencrypted PDU behind a header (encryption level low, server to client).
        SecuredBody::ShareControl(s) => {
            return share_control(p.get(wshare::SECURITY_HEADER_LEN..).unwrap_or_default(), &s)
        }
    };
    (kind, f)
}

/// Licensing PDU after its security header (MS-RDPBCGR 2.2.1.12.1.1 LICENSE_PREAMBLE,
/// MS-RDPELE 2.2.2).
fn license_pdu(m: LicensingMessage) -> (ShareKind, Facts) {
    let mut f = Facts::new();
    let kind = match m {
        LicensingMessage::LicenseRequest => ShareKind::ServerLicenseRequest,
        LicensingMessage::PlatformChallenge => ShareKind::LicensePlatformChallenge,
        LicensingMessage::NewLicense => ShareKind::LicenseNewLicense,
        LicensingMessage::UpgradeLicense => ShareKind::LicenseUpgradeLicense,
        LicensingMessage::LicenseInfo => ShareKind::ClientLicenseInfo,
        LicensingMessage::NewLicenseRequest => ShareKind::ClientNewLicenseRequest,
        LicensingMessage::PlatformChallengeResponse => ShareKind::LicensePlatformChallengeResponse,
        LicensingMessage::ErrorAlert(e) => {
            f.insert("error_code".into(), json!(license_error_name(e.error_code)));
            f.insert(
                "state_transition".into(),
                json!(license_state_name(e.state_transition)),
            );
            // STATUS_VALID_CLIENT with ST_NO_TRANSITION is how a server says "licensing done".
            f.insert("valid_client".into(), json!(e.is_valid_client()));
            ShareKind::LicenseErrorAlert
        }
    };
    (kind, f)
}

/// A share control PDU (MS-RDPBCGR 2.2.8.1.1.1.1) that covers exactly `p`.
fn share_control(p: &[u8], s: &ShareControlPdu) -> (ShareKind, Facts) {
    let mut f = Facts::new();
    let kind = match &s.body {
        ShareControlBody::FlowControl { .. } => ShareKind::FlowControl,
        ShareControlBody::DemandActive(a) => {
            active_facts(p, a, &mut f);
            ShareKind::DemandActive
        }
        ShareControlBody::ConfirmActive(a) => {
            active_facts(p, a, &mut f);
            ShareKind::ConfirmActive
        }
        ShareControlBody::DeactivateAll { share_id } => {
            if let Some(id) = share_id {
                f.insert("share_id".into(), json!(format!("0x{id:08x}")));
            }
            ShareKind::DeactivateAll
        }
        ShareControlBody::ServerRedirection => ShareKind::ServerRedirection,
        ShareControlBody::Data(d) => return data_pdu(d),
    };
    (kind, f)
}

/// Demand/confirm active facts: the shareId, the sourceDescriptor (up to its NUL) and
/// numberCapabilities, each when the PDU holds it.
fn active_facts(p: &[u8], a: &ActivePdu, f: &mut Facts) {
    if let Some(id) = a.share_id {
        f.insert("share_id".into(), json!(format!("0x{id:08x}")));
    }
    if let Some(sd) = a.source_descriptor.clone().and_then(|r| p.get(r)) {
        f.insert("source_descriptor".into(), json!(ansiz(sd)));
    }
    if let Some(n) = a.number_capabilities {
        f.insert("capability_sets".into(), json!(n));
    }
}

/// A data PDU (share data header, MS-RDPBCGR 2.2.8.1.1.1.2) by pduType2.
fn data_pdu(d: &wshare::ShareData) -> (ShareKind, Facts) {
    use crate::wire::share::*;
    let mut f = Facts::new();
    if d.compressed() {
        f.insert("compressed".into(), json!(true));
    }
    match d.body {
        DataBody::Control { action: Some(a) } => {
            let action = match a {
                1 => "request control".to_owned(),
                2 => "granted control".to_owned(),
                3 => "detach".to_owned(),
                4 => "cooperate".to_owned(),
                a => format!("0x{a:04x}"),
            };
            f.insert("action".into(), json!(action));
        }
        DataBody::SaveSessionInfo { info_type: Some(t) } => {
            let it = match t {
                0 => "INFOTYPE_LOGON".to_owned(),
                1 => "INFOTYPE_LOGON_LONG".to_owned(),
                2 => "INFOTYPE_LOGON_PLAINNOTIFY".to_owned(),
                3 => "INFOTYPE_LOGON_EXTENDED_INFO".to_owned(),
                t => format!("0x{t:08x}"),
            };
            f.insert("info_type".into(), json!(it));
        }
        DataBody::SetErrorInfo {
            error_info: Some(code),
        } => {
            let name = error_info_name(code).unwrap_or("ERRINFO");
            f.insert("error_info".into(), json!(format!("{name} (0x{code:08X})")));
            f.insert("error_info_code".into(), json!(code));
        }
        DataBody::MonitorLayout {
            monitor_count: Some(n),
        } => {
            f.insert("monitor_count".into(), json!(n));
        }
        _ => {}
    }
    let kind = match d.pdu_type2 {
        PDUTYPE2_UPDATE => ShareKind::Update,
        PDUTYPE2_CONTROL => ShareKind::Control,
        PDUTYPE2_POINTER => ShareKind::Pointer,
        PDUTYPE2_INPUT => ShareKind::Input,
        PDUTYPE2_SYNCHRONIZE => ShareKind::Synchronize,
        PDUTYPE2_REFRESH_RECT => ShareKind::RefreshRect,
        PDUTYPE2_PLAY_SOUND => ShareKind::PlaySound,
        PDUTYPE2_SUPPRESS_OUTPUT => ShareKind::SuppressOutput,
        PDUTYPE2_SHUTDOWN_REQUEST => ShareKind::ShutdownRequest,
        PDUTYPE2_SHUTDOWN_DENIED => ShareKind::ShutdownDenied,
        PDUTYPE2_SAVE_SESSION_INFO => ShareKind::SaveSessionInfo,
        PDUTYPE2_FONTLIST => ShareKind::FontList,
        PDUTYPE2_FONTMAP => ShareKind::FontMap,
        PDUTYPE2_SET_KEYBOARD_INDICATORS => ShareKind::SetKeyboardIndicators,
        PDUTYPE2_BITMAPCACHE_PERSISTENT_LIST => ShareKind::BitmapCachePersistentList,
        PDUTYPE2_BITMAPCACHE_ERROR_PDU => ShareKind::BitmapCacheError,
        PDUTYPE2_SET_KEYBOARD_IME_STATUS => ShareKind::SetKeyboardImeStatus,
        PDUTYPE2_OFFSCRCACHE_ERROR_PDU => ShareKind::OffscreenCacheError,
        PDUTYPE2_SET_ERROR_INFO_PDU => ShareKind::SetErrorInfo,
        PDUTYPE2_DRAWNINEGRID_ERROR_PDU => ShareKind::DrawNineGridCacheError,
        PDUTYPE2_DRAWGDIPLUS_ERROR_PDU => ShareKind::GdiPlusError,
        PDUTYPE2_ARC_STATUS_PDU => ShareKind::AutoReconnectStatus,
        PDUTYPE2_STATUS_INFO_PDU => ShareKind::StatusInfo,
        PDUTYPE2_MONITOR_LAYOUT_PDU => ShareKind::MonitorLayout,
        PDUTYPE2_FRAME_ACKNOWLEDGE_PDU => ShareKind::FrameAcknowledge,
        t => {
            f.insert("pdu_type2".into(), json!(format!("0x{t:02x}")));
            ShareKind::OtherData
        }
    };
    (kind, f)
}

/// Serializes facts for snapshots: one "key=value" per line, sorted.
#[cfg(test)]
fn facts_text(f: &Facts) -> String {
    f.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use ironrdp_pdu::mcs::{self as imcs, McsMessage};
    use ironrdp_pdu::rdp::capability_sets::{
        ClientConfirmActive, DemandActive, ServerDemandActive,
    };
    use ironrdp_pdu::rdp::client_info::CompressionType;
    use ironrdp_pdu::rdp::finalization_messages::{
        ControlAction, ControlPdu, FontPdu, SequenceFlags, SynchronizePdu,
    };
    use ironrdp_pdu::rdp::headers::{
        CompressionFlags, ServerDeactivateAll, ShareControlHeader, ShareControlPdu,
        ShareDataHeader, ShareDataPdu, StreamPriority,
    };
    use ironrdp_pdu::rdp::server_error_info::{
        ErrorInfo, ProtocolIndependentCode, ServerSetErrorInfoPdu,
    };
    use ironrdp_pdu::rdp::server_license::{LicensePdu, LicensingErrorMessage};
    use ironrdp_pdu::x224::X224;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// MCS Connect Response (X.224 user data) of a Windows server in standard RDP security mode
    /// (High, 128-bit, proprietary 512-bit RSA certificate), from the public capture
    /// zeek_rdp-proprietary-encryption.pcap (connection 2).
    const ZEEK_CONNECT_RESPONSE: &str = "7f668201450a0100020100301a020122020103020100020101020100020101020300fff80201020482011f000500147c00012a14760a01010001c0004d63446e8108010c0c000400080000000000030c1000eb030400ec03ed03ee03ef03020cec00020000000300000020000000b8000000e323f12bc9f1f51e9a057145b003a36e7ef07062824ecfa2770ae91f9d0337d101000000010000000100000006005c005253413148000000000200003f0000000100010093520ce9c5325c8105a65db24edf8647d786d359cddbeeb0588d99e0d0ff10767b2ede328dcdade65132b01b8c2c1871be890b947c791409adc8f63377f974b100000000000000000800480046ba0119957ae7a7ec0604e057a05155891409d81df96ef52cb67adfff429d95ba49fbc65b140c694f8583d2aad9920ad53d530498d0aaf15e9d62b685c876200000000000000000";
    /// The matching MCS Connect Initial of the client (mstsc 6.0, "FROG-POND").
    const ZEEK_CONNECT_INITIAL: &str = "7f658201a00401010401010101ff30190201220201020201000201010201000201010202ffff020102301902010102010102010102010102010002010102020420020102301c0202ffff0202fc170202ffff0201010201000201010202ffff0201020482013f000500147c00018136000800100001c00044756361812801c0d800040008008004600301ca03aa0904000070170000460052004f0047002d0050004f004e004400000000000000000000000000000004000000000000000c0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001ca01000000000018000f000b000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000004c00c000d0000000000000002c00c001b0000000000000003c0380004000000726470647200000000008080726470736e640000000000c0647264796e766300000080c0636c6970726472000000a0c0";

    /// X.224 user data of an IronRDP-encoded PDU (TPKT 4 + X.224 data header 3 stripped).
    fn x224_ud<T: ironrdp_core::Encode>(pdu: &T) -> Vec<u8> {
        ironrdp_core::encode_vec(pdu).unwrap()[7..].to_vec()
    }

    #[test]
    fn zeek_connect_response_standard_security() {
        let f = connect_response_facts(&unhex(ZEEK_CONNECT_RESPONSE)).unwrap();
        expect![[r#"
            channel_ids=[1004,1005,1006,1007]
            client_requested_protocols_echo=["PROTOCOL_RDP"]
            encryption_level="high"
            encryption_method="128bit"
            io_channel=1003
            result="rt-successful"
            server_certificate_temporary=false
            server_certificate_type="proprietary"
            server_key_bits=512
            server_random_present=true
            server_rdp_version="RDP 5.0+"
        "#]]
        .assert_eq(&facts_text(&f));
    }

    #[test]
    fn zeek_connect_initial() {
        let f = connect_initial_facts(&unhex(ZEEK_CONNECT_INITIAL)).unwrap();
        expect![[r#"
            channels=["rdpdr","rdpsnd","drdynvc","cliprdr"]
            client_build=6000
            client_early_capability_flags="0x000b"
            client_name="FROG-POND"
            client_rdp_version="RDP 5.0+"
            desktop="1152x864"
            encryption_methods=["40bit","56bit","128bit","fips"]
            keyboard_layout="0x00000409"
            server_selected_protocol=["PROTOCOL_RDP"]
        "#]]
        .assert_eq(&facts_text(&f));
    }

    fn server_blocks(security: gcc::ServerSecurityData, requested: u32) -> gcc::ServerGccBlocks {
        gcc::ServerGccBlocks {
            core: gcc::ServerCoreData {
                version: gcc::RdpVersion::V10_7,
                optional_data: gcc::ServerCoreOptionalData {
                    client_requested_protocols: Some(
                        ironrdp_pdu::nego::SecurityProtocol::from_bits_retain(requested),
                    ),
                    early_capability_flags: Some(
                        gcc::ServerEarlyCapabilityFlags::from_bits_retain(0x0d),
                    ),
                },
            },
            network: gcc::ServerNetworkData {
                channel_ids: vec![1004, 1005],
                io_channel: 1003,
            },
            security,
            message_channel: Some(gcc::ServerMessageChannelData {
                mcs_message_channel_id: 1006,
            }),
            multi_transport_channel: None,
        }
    }

    fn connect_response(blocks: gcc::ServerGccBlocks) -> Vec<u8> {
        let cr = imcs::ConnectResponse {
            conference_create_response: gcc::ConferenceCreateResponse::new(1002, blocks).unwrap(),
            called_connect_id: 0,
            domain_parameters: imcs::DomainParameters::target(),
        };
        ironrdp_core::encode_vec(&cr).unwrap()
    }

    #[test]
    fn ironrdp_connect_response_tls_mode() {
        let ud = connect_response(server_blocks(gcc::ServerSecurityData::no_security(), 0x3));
        let f = connect_response_facts(&ud).unwrap();
        expect![[r#"
            channel_ids=[1004,1005]
            client_requested_protocols_echo=["PROTOCOL_SSL","PROTOCOL_HYBRID"]
            early_capability_flags=["RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V1","RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V2","RNS_UD_SC_SKIP_CHANNELJOIN_SUPPORTED"]
            encryption_level="none"
            encryption_method="none"
            io_channel=1003
            mcs_message_channel=1006
            result="rt-successful"
            server_random_present=false
            server_rdp_version="RDP 10.7"
        "#]].assert_eq(&facts_text(&f));
    }

    /// An X.509 chain in the server security data (MS-RDPBCGR 2.2.1.4.3.1, dwVersion 2) larger than
    /// ironrdp-pdu's 1024-byte limit: the hand walk takes over and reads the leaf (last) certificate.
    #[test]
    fn x509_chain_beyond_ironrdp_limit_falls_back_to_hand_walk() {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let cert = |cn: &str, bits: u32| {
            let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
            let mut n = x509::X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
            let n = n.build();
            let mut b = x509::X509Builder::new().unwrap();
            b.set_subject_name(&n).unwrap();
            b.set_issuer_name(&n).unwrap();
            b.set_pubkey(&key).unwrap();
            b.set_not_before(&Asn1Time::from_unix(0).unwrap()).unwrap();
            b.set_not_after(&Asn1Time::from_unix(2_000_000_000).unwrap())
                .unwrap();
            b.sign(&key, MessageDigest::sha256()).unwrap();
            b.build().to_der().unwrap()
        };
        let chain = [cert("Terminal Server LS CA", 2048), cert("WIN2008R2", 2048)];
        let mut blob = 0x8000_0002u32.to_le_bytes().to_vec();
        blob.extend((chain.len() as u32).to_le_bytes());
        for c in &chain {
            blob.extend((c.len() as u32).to_le_bytes());
            blob.extend(c);
        }
        blob.extend([0u8; 16]);
        assert!(blob.len() > 1024);
        let sec = gcc::ServerSecurityData {
            encryption_method: gcc::EncryptionMethod::BIT_128,
            encryption_level: gcc::EncryptionLevel::ClientCompatible,
            server_random: Some([0x5a; 32]),
            server_cert: blob,
        };
        let ud = connect_response(server_blocks(sec, 0));
        let f = connect_response_facts(&ud).unwrap();
        assert_eq!(f["gcc_decoder"], json!("rdprobe"));
        assert!(
            f["ironrdp_error"]
                .as_str()
                .unwrap()
                .contains("serverCetLen"),
            "{}",
            f["ironrdp_error"]
        );
        let mut shown = f.clone();
        shown.remove("ironrdp_error");
        expect![[r#"
            channel_ids=[1004,1005]
            client_requested_protocols_echo=["PROTOCOL_RDP"]
            early_capability_flags=["RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V1","RNS_UD_SC_EDGE_ACTIONS_SUPPORTED_V2","RNS_UD_SC_SKIP_CHANNELJOIN_SUPPORTED"]
            encryption_level="client_compatible"
            encryption_method="128bit"
            gcc_decoder="rdprobe"
            io_channel=1003
            mcs_message_channel=1006
            result="rt-successful"
            server_certificate_chain_len=2
            server_certificate_subject="CN=WIN2008R2"
            server_certificate_temporary=true
            server_certificate_type="x509"
            server_key_bits=2048
            server_random_present=true
            server_rdp_version="RDP 10.7"
        "#]].assert_eq(&facts_text(&shown));
    }

    /// The hand walk and ironrdp-pdu agree on the real captures.
    #[test]
    fn hand_walk_matches_ironrdp_on_real_pdus() {
        let cr = unhex(ZEEK_CONNECT_RESPONSE);
        let via_ironrdp = connect_response_facts(&cr).unwrap();
        let (_, body, _) = ber_tlv(&cr).unwrap();
        let user_data = body
            .windows(4)
            .position(|w| w == b"McDn")
            .map(|_| body)
            .unwrap();
        let mut by_hand = Facts::new();
        by_hand.insert("result".into(), json!("rt-successful"));
        server_facts(&walk_server_blocks(user_data).unwrap(), &mut by_hand);
        assert_eq!(by_hand, via_ironrdp);

        let ci = unhex(ZEEK_CONNECT_INITIAL);
        let hand = walk_client_blocks(connect_initial_user_data(&ci).unwrap()).unwrap();
        let iron = ironrdp_core::decode::<ConnectInitial>(&ci).unwrap();
        let iron = client_blocks_from_ironrdp(iron.conference_create_request.gcc_blocks());
        assert_eq!(hand.name, iron.name);
        assert_eq!(hand.desktop, iron.desktop);
        assert_eq!(hand.build, iron.build);
        assert_eq!(hand.channels, iron.channels);
        assert_eq!(hand.encryption_methods, iron.encryption_methods);
        assert_eq!(hand.server_selected_protocol, iron.server_selected_protocol);
        assert_eq!(hand.early_capability_flags, iron.early_capability_flags);
    }

    #[test]
    fn connect_response_failure_result_and_garbage() {
        // rt-user-rejected, no user data
        let f = connect_response_facts(&unhex("7f66050a010f0200")).unwrap();
        assert_eq!(f["result"], json!("rt-user-rejected"));
        assert_eq!(f.len(), 1);
        assert!(connect_response_facts(&unhex("7f6505")).is_err());
        assert!(connect_response_facts(&unhex("7f650000"))
            .unwrap_err()
            .contains("unexpected tag"));
        // successful result, user data cut short: the result is still reported
        let mut cr = unhex(ZEEK_CONNECT_RESPONSE);
        cr[3] = 0x45 - 0x40; // shrink the outer length so the user data is cut
        let f = connect_response_facts(&cr[..80]);
        assert!(f.is_err() || f.as_ref().unwrap()["result"] == json!("rt-successful"));
        assert!(connect_initial_facts(&[0x7f, 0x65, 0x00]).is_err());
    }

    #[test]
    fn domain_pdus_from_ironrdp_and_the_capture() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                x224_ud(&X224(McsMessage::ErectDomainRequest(
                    imcs::ErectDomainPdu {
                        sub_height: 0,
                        sub_interval: 0,
                    },
                ))),
                "erect domain request",
            ),
            (
                x224_ud(&X224(McsMessage::AttachUserRequest(
                    imcs::AttachUserRequest,
                ))),
                " attach user request",
            ),
            (
                x224_ud(&X224(McsMessage::AttachUserConfirm(
                    imcs::AttachUserConfirm {
                        result: 0,
                        initiator_id: 1007,
                    },
                ))),
                "attach user confirm",
            ),
            (
                x224_ud(&X224(McsMessage::ChannelJoinRequest(
                    imcs::ChannelJoinRequest {
                        initiator_id: 1007,
                        channel_id: 1003,
                    },
                ))),
                "channel join request",
            ),
            (
                x224_ud(&X224(McsMessage::ChannelJoinConfirm(
                    imcs::ChannelJoinConfirm {
                        result: 0,
                        initiator_id: 1007,
                        requested_channel_id: 1004,
                        channel_id: 1004,
                    },
                ))),
                "channel join confirm",
            ),
            (
                x224_ud(&X224(McsMessage::DisconnectProviderUltimatum(
                    imcs::DisconnectProviderUltimatum::from_reason(
                        imcs::DisconnectReason::UserRequested,
                    ),
                ))),
                "disconnect provider ultimatum",
            ),
            (
                x224_ud(&X224(McsMessage::SendDataRequest(imcs::SendDataRequest {
                    initiator_id: 1007,
                    channel_id: 1003,
                    user_data: b"hello".as_slice().into(),
                }))),
                "send data request",
            ),
            (
                x224_ud(&X224(McsMessage::SendDataIndication(
                    imcs::SendDataIndication {
                        initiator_id: 1002,
                        channel_id: 1003,
                        user_data: vec![7u8; 300].into(),
                    },
                ))),
                "send data indication",
            ),
            // the capture: attach user confirm, channel join confirm and request, the server's first send data
            (unhex("2e000007"), "attach user confirm"),
            (unhex("3e00000703eb03eb"), "channel join confirm"),
            (unhex("38000703eb"), "channel join request"),
            (
                unhex("68000103eb701c880202032d978c4675476d4aa3cd471b31ab7951bb8445b8da0a6273"),
                "send data indication",
            ),
        ];
        let mut out = String::new();
        for (ud, want) in &cases {
            let (name, f) = classify_domain_pdu(ud).unwrap_or_else(|| panic!("{want}: {ud:02x?}"));
            assert_eq!(name, want.trim());
            out.push_str(&format!("{name}: {}", facts_text(&f).replace('\n', " ")));
            out.push('\n');
        }
        expect![[r#"
            erect domain request: 
            attach user request: 
            attach user confirm: initiator=1007 result="rt-successful" 
            channel join request: channel_id=1003 initiator=1007 
            channel join confirm: channel_id=1004 initiator=1007 requested_channel_id=1004 result="rt-successful" 
            disconnect provider ultimatum: reason="rn-user-requested" 
            send data request: channel_id=1003 initiator=1007 payload_len=5 payload_offset=7 
            send data indication: channel_id=1003 initiator=1002 payload_len=300 payload_offset=8 
            attach user confirm: initiator=1008 result="rt-successful" 
            channel join confirm: channel_id=1003 initiator=1008 requested_channel_id=1003 result="rt-successful" 
            channel join request: channel_id=1003 initiator=1008 
            send data indication: channel_id=1003 initiator=1002 payload_len=28 payload_offset=7 
        "#]].assert_eq(&out);
        // the payload offset points at the user data
        let ud = &cases[6].0;
        let (_, f) = classify_domain_pdu(ud).unwrap();
        let off = f["payload_offset"].as_u64().unwrap() as usize;
        assert_eq!(&ud[off..], b"hello");
        let ud = &cases[7].0;
        let (_, f) = classify_domain_pdu(ud).unwrap();
        assert_eq!(
            ud.len() - f["payload_offset"].as_u64().unwrap() as usize,
            300
        );
        assert_eq!(f.get("truncated"), None);
        assert_eq!(classify_domain_pdu(&[0xff]), None);
        assert_eq!(classify_domain_pdu(&[]), None);
        assert_eq!(
            classify_domain_pdu(&[0x64, 0x00]),
            None,
            "send data request cut in the header"
        );
    }

    fn share(pdu: ShareControlPdu) -> Vec<u8> {
        ironrdp_core::encode_vec(&ShareControlHeader {
            share_control_pdu: pdu,
            pdu_source: 1002,
            share_id: 0x0001_03ea,
        })
        .unwrap()
    }

    fn data(pdu: ShareDataPdu) -> Vec<u8> {
        share(ShareControlPdu::Data(ShareDataHeader {
            share_data_pdu: pdu,
            stream_priority: StreamPriority::Low,
            compression_flags: CompressionFlags::empty(),
            compression_type: CompressionType::K8,
        }))
    }

    fn sec(flags: u16, body: &[u8]) -> Vec<u8> {
        let mut v = flags.to_le_bytes().to_vec();
        v.extend([0, 0]);
        v.extend(body);
        v
    }

    /// TS_INFO_PACKET with INFO_UNICODE, domain "CORP", user "alice" (MS-RDPBCGR 2.2.1.11.1.1).
    fn client_info_packet() -> Vec<u8> {
        let w = |s: &str| {
            s.encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>()
        };
        let (d, u) = (w("CORP"), w("alice"));
        let mut b = 0u32.to_le_bytes().to_vec();
        b.extend(0x0000_0013u32.to_le_bytes());
        for n in [d.len(), u.len(), 0, 0, 0] {
            b.extend((n as u16).to_le_bytes());
        }
        b.extend(&d);
        b.extend([0, 0]);
        b.extend(&u);
        b.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn share_pdus_tls_mode() {
        let cases: Vec<Vec<u8>> = vec![
            share(ShareControlPdu::ServerDemandActive(ServerDemandActive {
                pdu: DemandActive {
                    source_descriptor: "RDP".into(),
                    capability_sets: vec![],
                },
            })),
            share(ShareControlPdu::ClientConfirmActive(ClientConfirmActive {
                originator_id: 0x03ea,
                pdu: DemandActive {
                    source_descriptor: "MSTSC".into(),
                    capability_sets: vec![],
                },
            })),
            share(ShareControlPdu::ServerDeactivateAll(ServerDeactivateAll)),
            data(ShareDataPdu::Synchronize(SynchronizePdu {
                target_user_id: 1002,
            })),
            data(ShareDataPdu::Control(ControlPdu {
                action: ControlAction::Cooperate,
                grant_id: 0,
                control_id: 0,
            })),
            data(ShareDataPdu::FontList(FontPdu {
                number: 0,
                total_number: 0,
                flags: SequenceFlags::FIRST | SequenceFlags::LAST,
                entry_size: 50,
            })),
            data(ShareDataPdu::FontMap(FontPdu {
                number: 0,
                total_number: 0,
                flags: SequenceFlags::FIRST | SequenceFlags::LAST,
                entry_size: 4,
            })),
            data(ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(
                ErrorInfo::ProtocolIndependentCode(ProtocolIndependentCode::LogoffByUser),
            ))),
            data(ShareDataPdu::ShutdownRequest),
            ironrdp_core::encode_vec(&LicensePdu::from(
                LicensingErrorMessage::new_valid_client().unwrap(),
            ))
            .unwrap(),
            sec(SEC_INFO_PKT, &client_info_packet()),
            sec(SEC_AUTODETECT_REQ, &[6, 0, 1, 0, 0x01, 0x10]),
            sec(SEC_HEARTBEAT, &[0, 0, 0, 0]),
        ];
        let mut out = String::new();
        for p in &cases {
            let (name, f) = classify_share_pdu(p, false).unwrap_or_else(|| panic!("{p:02x?}"));
            out.push_str(&format!("{name}: {}", facts_text(&f).replace('\n', " ")));
            out.push('\n');
        }
        expect![[r#"
            demand active: capability_sets=0 share_id="0x000103ea" source_descriptor="RDP" 
            confirm active: capability_sets=0 share_id="0x000103ea" source_descriptor="MSTSC" 
            deactivate all: share_id="0x000103ea" 
            synchronize: 
            control: action="cooperate" 
            font list: 
            font map: 
            set error info: error_info="ERRINFO_LOGOFF_BY_USER (0x0000000C)" error_info_code=12 
            shutdown request: 
            license error alert: error_code="STATUS_VALID_CLIENT" security_flags=["SEC_LICENSE_PKT"] state_transition="ST_NO_TRANSITION" valid_client=true 
            client info: domain="CORP" info_flags="0x00000013" security_flags=["SEC_INFO_PKT"] user="alice" 
            auto-detect request: security_flags=["SEC_AUTODETECT_REQ"] type="0x1001" 
            heartbeat: security_flags=["SEC_HEARTBEAT"] 
        "#]].assert_eq(&out);
        // virtual channel data (CHANNEL_PDU_HEADER) is none of these
        assert_eq!(
            classify_share_pdu(&[5, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3, 4, 5], false),
            None
        );
    }

    #[test]
    fn share_pdus_standard_security() {
        // from the capture: security exchange, encrypted client info, encrypted license, encrypted data
        let cases = [
            unhex("01020000480000008b689c55b7c81a58755f6260006995ae78bab756234acd65b0ecb8dcbb9ea69b6520eaecea70ae4adc82423bee7e0718577ac4be710f16a2bd1d5464598177440000000000000000"),
            sec(SEC_INFO_PKT | SEC_ENCRYPT, &[0x11; 40]),
            unhex("880202032d978c4675476d4aa3cd471b31ab7951bb8445b8da0a6273"),
            sec(SEC_ENCRYPT, &[0x22; 64]),
            // encryption level NONE: a bare share control PDU
            data(ShareDataPdu::Synchronize(SynchronizePdu { target_user_id: 1002 })),
            // a basic header without SEC_ENCRYPT (level low, server to client)
            sec(0, &data(ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(ErrorInfo::ProtocolIndependentCode(ProtocolIndependentCode::ServerDeniedConnection))))),
            // license error alert, unencrypted: ERR_NO_LICENSE_SERVER, ST_TOTAL_ABORT
            sec(SEC_LICENSE_PKT, &[0xff, 0x03, 0x10, 0x00, 6, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0]),
        ];
        let mut out = String::new();
        for p in &cases {
            let (name, f) = classify_share_pdu(p, true).unwrap_or_else(|| panic!("{p:02x?}"));
            out.push_str(&format!("{name}: {}", facts_text(&f).replace('\n', " ")));
            out.push('\n');
        }
        expect![[r#"
            security exchange: encrypted_client_random_len=72 security_flags=["SEC_EXCHANGE_PKT","SEC_LICENSE_ENCRYPT"] 
            client info (encrypted): security_flags=["SEC_ENCRYPT","SEC_INFO_PKT"] 
            license pdu (encrypted): security_flags=["SEC_ENCRYPT","SEC_LICENSE_PKT","SEC_LICENSE_ENCRYPT"] 
            encrypted pdu: security_flags=["SEC_ENCRYPT"] 
            synchronize: 
            set error info: error_info="ERRINFO_SERVER_DENIED_CONNECTION (0x00000007)" error_info_code=7 security_flags=[] 
            license error alert: error_code="ERR_NO_LICENSE_SERVER" security_flags=["SEC_LICENSE_PKT"] state_transition="ST_TOTAL_ABORT" valid_client=false 
        "#]].assert_eq(&out);
    }

    #[test]
    fn names() {
        assert_eq!(rdp_version_name(0x0008_000c), "RDP 10.7");
        assert_eq!(rdp_version_name(0x0008_0004), "RDP 5.0+");
        assert_eq!(rdp_version_name(0x0008_0099), "0x00080099");
        assert_eq!(encryption_method_names(0), vec!["none"]);
        assert_eq!(encryption_method_names(0x12), vec!["128bit", "fips"]);
        assert_eq!(encryption_level_name(2), "client_compatible");
        assert_eq!(mcs_result_name(14), "rt-unspecified-failure");
        assert_eq!(mcs_result_name(200), "rt-200");
        assert_eq!(error_info_name(7), Some("ERRINFO_SERVER_DENIED_CONNECTION"));
    }

    fn real_pdus() -> Vec<Vec<u8>> {
        vec![
            unhex(ZEEK_CONNECT_RESPONSE),
            unhex(ZEEK_CONNECT_INITIAL),
            connect_response(server_blocks(gcc::ServerSecurityData::no_security(), 3)),
            unhex("64000703eb705001020000480000008b689c55b7c81a58755f6260006995ae78bab756234acd65b0ecb8dcbb9ea69b6520eaecea70ae4adc82423bee7e0718577ac4be710f16a2bd1d5464598177440000000000000000"),
            data(ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(ErrorInfo::ProtocolIndependentCode(ProtocolIndependentCode::LogoffByUser)))),
            sec(SEC_INFO_PKT, &client_info_packet()),
        ]
    }

    fn all_decoders(b: &[u8]) {
        let _ = connect_initial_facts(b);
        let _ = connect_response_facts(b);
        let _ = server_certificate_facts(b);
        if let Some((_, f)) = classify_domain_pdu(b) {
            if let Some(off) = f.get("payload_offset").and_then(|v| v.as_u64()) {
                let p = b.get(off as usize..).unwrap_or(&[]);
                let _ = classify_share_pdu(p, true);
                let _ = classify_share_pdu(p, false);
            }
        }
        let _ = classify_share_pdu(b, true);
        let _ = classify_share_pdu(b, false);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            all_decoders(&b);
            let mut prefixed = vec![0x7f, 0x66, 0x82, 0x01, 0x45, 0x0a, 0x01, 0x00];
            prefixed.extend(&b);
            all_decoders(&prefixed);
        }

        #[test]
        fn mutated_real_pdus_never_panic(
            which in 0usize..6,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut b = real_pdus().swap_remove(which);
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            b.truncate(cut % (b.len() + 1));
            all_decoders(&b);
        }
    }
}
