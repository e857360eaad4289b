//! The MCS Connect Initial a standard-RDP-security client sends (built with ironrdp-pdu's GCC
//! types, MS-RDPBCGR 2.2.1.3) and the server data of the Connect Response read by hand
//! (MS-RDPBCGR 2.2.1.4): ironrdp-pdu refuses certificates over 1024 bytes and unknown methods,
//! which real servers send. Pure, never panics.

use ironrdp_pdu::gcc;

// The BER and little-endian readers are the decoder's (src/decode/mcs.rs): one parser for both.
use crate::decode::mcs::{ber_tlv, le16, le32};

/// Where the client's encryption methods go in Client Security Data (MS-RDPBCGR 2.2.1.3.3).
#[derive(Clone, Debug)]
pub struct InitialOptions {
    /// encryptionMethods bits offered.
    pub encryption_methods: u32,
    /// Client name in Client Core Data (up to 15 characters).
    pub client_name: String,
    /// Static channels to request (names up to 7 ASCII characters).
    pub channels: Vec<String>,
    pub desktop_width: u16,
    pub desktop_height: u16,
}

impl InitialOptions {
    pub fn new(encryption_methods: u32) -> Self {
        InitialOptions {
            encryption_methods,
            client_name: "rdprobe".into(),
            channels: Vec::new(),
            desktop_width: 1024,
            desktop_height: 768,
        }
    }
}

/// The complete TPKT PDU of an MCS Connect Initial for standard RDP security (selected protocol
/// PROTOCOL_RDP) offering `opts.encryption_methods`.
pub fn connect_initial(opts: &InitialOptions) -> Result<Vec<u8>, String> {
    use gcc::{
        ClientCoreData, ClientCoreOptionalData, ClientEarlyCapabilityFlags, ClientGccBlocks,
        ClientNetworkData, ClientSecurityData, ColorDepth, EncryptionMethod, HighColorDepth,
        KeyboardType, RdpVersion, SecureAccessSequence, SupportedColorDepths,
    };
    let channels = opts
        .channels
        .iter()
        .map(|n| {
            let mut name = [0u8; 8];
            for (d, s) in name.iter_mut().zip(n.bytes().take(7)) {
                *d = s;
            }
            gcc::ChannelDef {
                name: gcc::ChannelName::new(name),
                options: gcc::ChannelOptions::INITIALIZED,
            }
        })
        .collect::<Vec<_>>();
    let blocks = ClientGccBlocks {
        core: ClientCoreData {
            version: RdpVersion::V5_PLUS,
            desktop_width: opts.desktop_width,
            desktop_height: opts.desktop_height,
            color_depth: ColorDepth::Bpp8,
            sec_access_sequence: SecureAccessSequence::Del,
            keyboard_layout: 0x409,
            client_build: 2600,
            client_name: opts.client_name.chars().take(15).collect(),
            keyboard_type: KeyboardType::IBM_ENHANCED,
            keyboard_subtype: 0,
            keyboard_functional_keys_count: 12,
            ime_file_name: String::new(),
            optional_data: ClientCoreOptionalData {
                post_beta2_color_depth: Some(ColorDepth::Bpp8),
                client_product_id: Some(1),
                serial_number: Some(0),
                high_color_depth: Some(HighColorDepth::Bpp24),
                supported_color_depths: Some(
                    SupportedColorDepths::BPP24
                        | SupportedColorDepths::BPP16
                        | SupportedColorDepths::BPP15,
                ),
                early_capability_flags: Some(
                    ClientEarlyCapabilityFlags::VALID_CONNECTION_TYPE
                        | ClientEarlyCapabilityFlags::SUPPORT_ERR_INFO_PDU,
                ),
                dig_product_id: Some(String::new()),
                connection_type: Some(gcc::ConnectionType::Lan),
                server_selected_protocol: Some(ironrdp_pdu::nego::SecurityProtocol::empty()),
                desktop_physical_width: None,
                desktop_physical_height: None,
                desktop_orientation: None,
                desktop_scale_factor: None,
                device_scale_factor: None,
            },
        },
        security: ClientSecurityData {
            encryption_methods: EncryptionMethod::from_bits_retain(opts.encryption_methods),
            ext_encryption_methods: 0,
        },
        network: Some(ClientNetworkData { channels }),
        cluster: None,
        monitor: None,
        message_channel: None,
        multi_transport_channel: None,
        monitor_extended: None,
    };
    let ci =
        ironrdp_pdu::mcs::ConnectInitial::with_gcc_blocks(blocks).map_err(|e| e.to_string())?;
    let body = ironrdp_core::encode_vec(&ci).map_err(|e| e.to_string())?;
    let pdu = ironrdp_pdu::x224::X224Data {
        data: std::borrow::Cow::Owned(body),
    };
    ironrdp_core::encode_vec(&ironrdp_pdu::x224::X224(pdu)).map_err(|e| e.to_string())
}

/// What the server said in its Connect Response (MS-RDPBCGR 2.2.1.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerData {
    /// MCS result (0 = rt-successful).
    pub result: u8,
    /// SC_CORE version.
    pub rdp_version: Option<u32>,
    pub client_requested_protocols: Option<u32>,
    pub early_capability_flags: Option<u32>,
    /// SC_SECURITY encryptionMethod (one bit, or 0).
    pub encryption_method: u32,
    /// SC_SECURITY encryptionLevel.
    pub encryption_level: u32,
    pub server_random: Option<[u8; 32]>,
    /// serverCertificate, raw.
    pub server_certificate: Vec<u8>,
    /// SC_NET
    pub io_channel: u16,
    pub channel_ids: Vec<u16>,
    /// SC_MCS_MSGCHANNEL
    pub message_channel: Option<u16>,
}

/// Largest server certificate accepted (bytes); X.509 chains of Windows servers are ~2-4 KB.
pub const MAX_SERVER_CERT: usize = 64 * 1024;

/// Reads the server data blocks of an MCS Connect Response; `pdu` is the whole TPKT PDU.
pub fn parse_connect_response(pdu: &[u8]) -> Result<ServerData, String> {
    // TPKT (4) + X.224 data header (3)
    if pdu.len() < 7 || pdu[0] != 3 || pdu[5] & 0xf0 != 0xf0 {
        return Err("not a TPKT / X.224 data PDU".into());
    }
    let ud = &pdu[7..];
    let (tag, body, _) = ber_tlv(ud).ok_or("mcs connect response: unreadable BER header")?;
    if tag != [0x7f, 0x66] {
        return Err(format!("not an mcs connect response (tag {tag:02x?})"));
    }
    let (tag, result, n) = ber_tlv(body).ok_or("mcs connect response: result unreadable")?;
    if tag != [0x0a] || result.len() != 1 {
        return Err("mcs connect response: result is not a one-byte ENUMERATED".into());
    }
    let mut sd = ServerData {
        result: result[0],
        ..ServerData::default()
    };
    let mut rest = &body[n..];
    let mut user_data = None;
    for _ in 0..3 {
        let Some((tag, content, n)) = ber_tlv(rest) else {
            break;
        };
        if tag == [0x04] {
            user_data = Some(content);
        }
        rest = &rest[n..];
    }
    let Some(user_data) = user_data else {
        return if sd.result == 0 {
            Err("mcs connect response without user data".into())
        } else {
            Ok(sd)
        };
    };
    // GCC Conference Create Response (PER): the server data follow the H.221 key "McDn" and a PER
    // length determinant.
    let at = user_data
        .windows(4)
        .position(|w| w == b"McDn")
        .ok_or("gcc: no McDn key in the conference create response")?;
    let mut pos = at + 4;
    let l0 = *user_data.get(pos).ok_or("gcc: truncated length")?;
    let len = if l0 & 0x80 == 0 {
        pos += 1;
        usize::from(l0)
    } else {
        let l1 = *user_data.get(pos + 1).ok_or("gcc: truncated length")?;
        pos += 2;
        (usize::from(l0 & 0x3f) << 8) | usize::from(l1)
    };
    let blocks = user_data
        .get(pos..pos.saturating_add(len).min(user_data.len()))
        .ok_or("gcc: blocks out of range")?;
    let mut p = 0usize;
    let mut saw_security = false;
    while p + 4 <= blocks.len() {
        let ty = le16(blocks, p).unwrap_or(0);
        let blen = usize::from(le16(blocks, p + 2).unwrap_or(0));
        if blen < 4 || p + blen > blocks.len() {
            return Err(format!(
                "gcc: block 0x{ty:04x} length {blen} exceeds the data"
            ));
        }
        let b = &blocks[p + 4..p + blen];
        match ty {
            0x0c01 => {
                sd.rdp_version = le32(b, 0);
                sd.client_requested_protocols = le32(b, 4);
                sd.early_capability_flags = le32(b, 8);
            }
            0x0c02 => {
                saw_security = true;
                sd.encryption_method = le32(b, 0).ok_or("gcc: security block too short")?;
                sd.encryption_level = le32(b, 4).ok_or("gcc: security block too short")?;
                if let (Some(rl), Some(cl)) = (le32(b, 8), le32(b, 12)) {
                    let rl = rl as usize;
                    let cl = cl as usize;
                    if rl == 32 {
                        if let Some(r) = b.get(16..48) {
                            let mut a = [0u8; 32];
                            a.copy_from_slice(r);
                            sd.server_random = Some(a);
                        }
                    }
                    if cl > MAX_SERVER_CERT {
                        return Err(format!("gcc: server certificate of {cl} bytes"));
                    }
                    if let Some(c) = 16usize
                        .checked_add(rl)
                        .and_then(|a| Some((a, a.checked_add(cl)?)))
                        .and_then(|(a, e)| b.get(a..e))
                    {
                        sd.server_certificate = c.to_vec();
                    }
                }
            }
            0x0c03 => {
                sd.io_channel = le16(b, 0).unwrap_or(0);
                let count = usize::from(le16(b, 2).unwrap_or(0));
                sd.channel_ids = b
                    .get(4..)
                    .unwrap_or(&[])
                    .chunks_exact(2)
                    .take(count)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
            }
            0x0c04 => sd.message_channel = le16(b, 0),
            _ => {}
        }
        p += blen;
    }
    if !saw_security {
        return Err("gcc: no server security data".into());
    }
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_initial_carries_the_methods() {
        for bits in [0x1u32, 0x2, 0x8, 0x10, 0x1b] {
            let pdu = connect_initial(&InitialOptions::new(bits)).unwrap();
            assert_eq!(pdu[0], 3);
            assert_eq!(usize::from(u16::from_be_bytes([pdu[2], pdu[3]])), pdu.len());
            // the rdprobe decoder reads it back
            let facts = crate::decode::mcs::connect_initial_facts(&pdu[7..]).unwrap();
            let want = crate::decode::mcs::encryption_method_names(bits);
            assert_eq!(
                facts.get("encryption_methods"),
                Some(&serde_json::json!(want)),
                "{bits:#x}"
            );
        }
    }

    #[test]
    fn hostile_connect_responses_are_errors() {
        assert!(parse_connect_response(&[]).is_err());
        assert!(parse_connect_response(&[3, 0, 0, 7, 2, 0xf0, 0x80]).is_err());
        for len in 0..300usize {
            let junk: Vec<u8> = [3, 0, 0, 0, 2, 0xf0, 0x80, 0x7f, 0x66]
                .iter()
                .copied()
                .chain((0..len).map(|i| (i * 37 + 11) as u8))
                .collect();
            let _ = parse_connect_response(&junk);
        }
    }
}
