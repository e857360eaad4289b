//! The MCS Connect Initial a standard-RDP-security client sends (built with ironrdp-pdu's GCC
//! types, MS-RDPBCGR 2.2.1.3) and the server data of the Connect Response read by hand
//! (MS-RDPBCGR 2.2.1.4): ironrdp-pdu refuses certificates over 1024 bytes and unknown methods,
//! which real servers send. Pure, never panics.

use ironrdp_pdu::gcc;

// The server data are read by the wire layer's GCC reader (one parser for decode and rdpsec).
use crate::wire::gcc as wire_gcc;

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
    let cr = wire_gcc::connect_response(ud).map_err(|e| match e {
        wire_gcc::ConnectResponseError::Header(_) => {
            "mcs connect response: unreadable BER header".to_string()
        }
        wire_gcc::ConnectResponseError::Tag(tag) => {
            format!("not an mcs connect response (tag {tag:02x?})")
        }
        wire_gcc::ConnectResponseError::ResultUnreadable(_) => {
            "mcs connect response: result unreadable".into()
        }
        wire_gcc::ConnectResponseError::ResultNotEnumerated { .. } => {
            "mcs connect response: result is not a one-byte ENUMERATED".into()
        }
    })?;
    let mut sd = ServerData {
        result: cr.result,
        ..ServerData::default()
    };
    let Some((user_data, _)) = cr.user_data else {
        return if sd.result == 0 {
            Err("mcs connect response without user data".into())
        } else {
            Ok(sd)
        };
    };
    // GCC Conference Create Response (PER): the server data follow the H.221 key "McDn" and a PER
    // length determinant.
    let (blocks, _) = wire_gcc::blocks_after_key(user_data, b"McDn").map_err(|e| match e {
        wire_gcc::UserDataError::NoKey => "gcc: no McDn key in the conference create response",
        wire_gcc::UserDataError::Length(_) => "gcc: truncated length",
    })?;
    let (list, err) = wire_gcc::server_blocks(blocks, 0);
    let mut saw_security = false;
    for block in list {
        match block {
            wire_gcc::ServerBlock::Core(c) => {
                sd.rdp_version = c.version;
                sd.client_requested_protocols = c.client_requested_protocols;
                sd.early_capability_flags = c.early_capability_flags;
            }
            wire_gcc::ServerBlock::Security(sec) => {
                saw_security = true;
                sd.encryption_method = sec
                    .encryption_method
                    .ok_or("gcc: security block too short")?;
                sd.encryption_level = sec
                    .encryption_level
                    .ok_or("gcc: security block too short")?;
                if let Some((rl, cl)) = sec.lengths {
                    if rl == 32 {
                        if let Some(r) = sec.server_random {
                            let mut a = [0u8; 32];
                            a.copy_from_slice(r);
                            sd.server_random = Some(a);
                        }
                    }
                    if cl as usize > MAX_SERVER_CERT {
                        return Err(format!("gcc: server certificate of {cl} bytes"));
                    }
                    if let Some(c) = sec.server_certificate {
                        sd.server_certificate = c.to_vec();
                    }
                }
            }
            wire_gcc::ServerBlock::Net(n) => {
                sd.io_channel = n.io_channel.unwrap_or(0);
                sd.channel_ids = n.channel_ids;
            }
            wire_gcc::ServerBlock::MessageChannel(m) => sd.message_channel = m,
            _ => {}
        }
    }
    // A bad block length is an error (after those of the blocks before it); a partial header
    // after the last block is ignored.
    if let Some(wire_gcc::BlockError::BadLength { ty, len, .. }) = err {
        return Err(format!(
            "gcc: block 0x{ty:04x} length {len} exceeds the data"
        ));
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
