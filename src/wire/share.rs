//! What rides in the user data of an MCS Send Data PDU before the session is up (MS-RDPBCGR
//! 2.2.8.1.1): the basic security header and its flags (2.2.8.1.1.2.1), the Security Exchange
//! (2.2.1.10.1), the Client Info packet's strings (2.2.1.11.1.1), the licensing preamble and
//! messages (2.2.1.12, MS-RDPELE 2.2.2), the auto-detect header (2.2.14.1), the share control
//! header (2.2.8.1.1.1.1) and the share data header (2.2.8.1.1.1.2) with the bodies rdprobe
//! reports (Demand / Confirm Active, Deactivate All, Control, Save Session Info, Set Error Info,
//! Monitor Layout). [`Payload::parse`] reads one payload the way the analyzer always has; the
//! writers are the ones the lab, the fuzzer and the standard-security client use.
//!
//! Hand-written rather than ironrdp-pdu's `rdp::headers`, `rdp::server_license` and
//! `rdp::capability_sets` decoders: those decode a whole PDU or fail, without offsets, and refuse
//! what a diagnostics tool must still name (an unknown pduType2, capability sets that do not
//! parse, a licensing message whose blobs are cut, a Client Info whose password field is absent);
//! and its `BasicSecurityHeaderFlags` names 0x0100 / 0x0200 LICENSE_ENCRYPT_CS / _SC where the
//! reports have always said SEC_LICENSE_ENCRYPT for 0x0200. Readers never panic, report absolute
//! offsets ([`WireError`]) and allocate nothing from a length they read.

use std::ops::Range;

use super::cursor::{le16, le32, Cursor, WireError};

// ---------------------------------------------------------------------------------------------
// Basic security header (2.2.8.1.1.2.1)

pub const SEC_EXCHANGE_PKT: u16 = 0x0001;
pub const SEC_TRANSPORT_REQ: u16 = 0x0002;
pub const SEC_TRANSPORT_RSP: u16 = 0x0004;
pub const SEC_ENCRYPT: u16 = 0x0008;
pub const SEC_RESET_SEQNO: u16 = 0x0010;
pub const SEC_IGNORE_SEQNO: u16 = 0x0020;
pub const SEC_INFO_PKT: u16 = 0x0040;
pub const SEC_LICENSE_PKT: u16 = 0x0080;
/// SEC_LICENSE_ENCRYPT_CS / SEC_LICENSE_ENCRYPT_SC: the licensing PDU is encrypted.
pub const SEC_LICENSE_ENCRYPT: u16 = 0x0200;
pub const SEC_REDIRECTION_PKT: u16 = 0x0400;
pub const SEC_SECURE_CHECKSUM: u16 = 0x0800;
pub const SEC_AUTODETECT_REQ: u16 = 0x1000;
pub const SEC_AUTODETECT_RSP: u16 = 0x2000;
pub const SEC_HEARTBEAT: u16 = 0x4000;
pub const SEC_FLAGSHI_VALID: u16 = 0x8000;

/// Flags that say "this PDU carries a security header even under Enhanced RDP Security (TLS/NLA)".
pub const SEC_ENHANCED_HEADER_FLAGS: u16 = SEC_EXCHANGE_PKT
    | SEC_TRANSPORT_REQ
    | SEC_TRANSPORT_RSP
    | SEC_INFO_PKT
    | SEC_LICENSE_PKT
    | SEC_REDIRECTION_PKT
    | SEC_AUTODETECT_REQ
    | SEC_AUTODETECT_RSP
    | SEC_HEARTBEAT;

/// Every flag with the name the spec gives it, in bit order (SEC_LICENSE_ENCRYPT for 0x0200).
pub const SECURITY_FLAGS: [(u16, &str); 15] = [
    (SEC_EXCHANGE_PKT, "SEC_EXCHANGE_PKT"),
    (SEC_TRANSPORT_REQ, "SEC_TRANSPORT_REQ"),
    (SEC_TRANSPORT_RSP, "SEC_TRANSPORT_RSP"),
    (SEC_ENCRYPT, "SEC_ENCRYPT"),
    (SEC_RESET_SEQNO, "SEC_RESET_SEQNO"),
    (SEC_IGNORE_SEQNO, "SEC_IGNORE_SEQNO"),
    (SEC_INFO_PKT, "SEC_INFO_PKT"),
    (SEC_LICENSE_PKT, "SEC_LICENSE_PKT"),
    (SEC_LICENSE_ENCRYPT, "SEC_LICENSE_ENCRYPT"),
    (SEC_REDIRECTION_PKT, "SEC_REDIRECTION_PKT"),
    (SEC_SECURE_CHECKSUM, "SEC_SECURE_CHECKSUM"),
    (SEC_AUTODETECT_REQ, "SEC_AUTODETECT_REQ"),
    (SEC_AUTODETECT_RSP, "SEC_AUTODETECT_RSP"),
    (SEC_HEARTBEAT, "SEC_HEARTBEAT"),
    (SEC_FLAGSHI_VALID, "SEC_FLAGSHI_VALID"),
];

/// Size of the basic security header (flags, flagsHi).
pub const SECURITY_HEADER_LEN: usize = 4;

/// TS_SECURITY_HEADER: flags and flagsHi.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityHeader {
    pub flags: u16,
    pub flags_hi: u16,
}

impl SecurityHeader {
    /// A header with `flags` and flagsHi 0.
    pub fn new(flags: u16) -> SecurityHeader {
        SecurityHeader { flags, flags_hi: 0 }
    }

    /// Reads the 4-byte header at the start of `b`, whose first byte is at offset `base`.
    pub fn parse(b: &[u8], base: usize) -> Result<SecurityHeader, WireError> {
        let mut c = Cursor::at(b, base);
        let flags = c.read_u16_le()?;
        let flags_hi = c.read_u16_le()?;
        Ok(SecurityHeader { flags, flags_hi })
    }

    /// Any of `flags` is set.
    pub fn has(&self, flags: u16) -> bool {
        self.flags & flags != 0
    }

    /// The names of the flags set (unknown bits have none: every bit has a name).
    pub fn names(&self) -> Vec<&'static str> {
        SECURITY_FLAGS
            .iter()
            .filter(|(b, _)| self.flags & b != 0)
            .map(|&(_, n)| n)
            .collect()
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.flags_hi.to_le_bytes());
    }
}

/// A basic security header with `flags` (flagsHi 0) and `body` in the clear after it.
pub fn secured(flags: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SECURITY_HEADER_LEN + body.len());
    SecurityHeader::new(flags).emit(&mut out);
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// Security Exchange (2.2.1.10.1), Client Info (2.2.1.11.1.1), auto-detect (2.2.14.1)

/// TS_SECURITY_PACKET after its security header: length and the encrypted client random.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityExchange {
    pub length: u32,
    /// Where the encrypted client random lies.
    pub random: Range<usize>,
}

impl SecurityExchange {
    /// Reads `b` (the body after the header); the length must cover exactly the rest of `b`.
    pub fn parse(b: &[u8], base: usize) -> Result<SecurityExchange, WireError> {
        let mut c = Cursor::at(b, base);
        let length = c.read_u32_le()?;
        let start = c.offset();
        let rest = c.remaining().len();
        if usize::try_from(length).ok() != Some(rest) {
            return Err(WireError::invalid(
                base,
                "security exchange length does not match the encrypted random",
            ));
        }
        Ok(SecurityExchange {
            length,
            random: start..start + rest,
        })
    }

    /// Writes the body: `length` (what the field says) then `random`.
    pub fn emit_body(length: u32, random: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(random);
    }
}

/// TS_INFO_PACKET: the fixed part and where the domain and user name lie (never the password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub code_page: u32,
    pub flags: u32,
    /// cbDomain, cbUserName, cbPassword, cbAlternateShell, cbWorkingDir.
    pub cb: [u16; 5],
    pub domain: Range<usize>,
    pub user_name: Range<usize>,
}

/// INFO_UNICODE: the strings are UTF-16LE.
pub const INFO_UNICODE: u32 = 0x0000_0010;
/// Offset of the Domain string in a TS_INFO_PACKET.
const INFO_STRINGS_AT: usize = 18;

impl ClientInfo {
    /// Reads the fixed part, then the domain and the user name (each followed by its NUL).
    pub fn parse(b: &[u8], base: usize) -> Result<ClientInfo, WireError> {
        let mut c = Cursor::at(b, base);
        let code_page = c.read_u32_le()?;
        let flags = c.read_u32_le()?;
        let mut cb = [0u16; 5];
        for v in &mut cb {
            *v = c.read_u16_le()?;
        }
        let domain_at = c.offset();
        c.skip(usize::from(cb[0]))?;
        let domain = domain_at..c.offset();
        let nul = if flags & INFO_UNICODE != 0 { 2 } else { 1 };
        // The user name follows the domain's terminating NUL (which need not be there when the
        // user name is empty and the packet ends).
        let user_at = INFO_STRINGS_AT + usize::from(cb[0]) + nul;
        let user_name = b
            .get(user_at..user_at + usize::from(cb[1]))
            .map(|_| base + user_at..base + user_at + usize::from(cb[1]))
            .ok_or_else(|| {
                WireError::truncated(
                    base + b.len().min(user_at),
                    (user_at + usize::from(cb[1])).saturating_sub(b.len()),
                )
            })?;
        Ok(ClientInfo {
            code_page,
            flags,
            cb,
            domain,
            user_name,
        })
    }

    pub fn unicode(&self) -> bool {
        self.flags & INFO_UNICODE != 0
    }
}

/// The auto-detect request / response header (2.2.14.1): headerLength, headerTypeId,
/// sequenceNumber, requestType / responseType.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoDetectHeader {
    pub header_length: u8,
    pub header_type_id: u8,
    pub sequence_number: u16,
    pub request_type: u16,
}

impl AutoDetectHeader {
    pub fn parse(b: &[u8], base: usize) -> Result<AutoDetectHeader, WireError> {
        let mut c = Cursor::at(b, base);
        Ok(AutoDetectHeader {
            header_length: c.read_u8()?,
            header_type_id: c.read_u8()?,
            sequence_number: c.read_u16_le()?,
            request_type: c.read_u16_le()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Licensing (2.2.1.12, MS-RDPELE 2.2.2)

/// bMsgType of the licensing preamble.
pub const LICENSE_REQUEST: u8 = 0x01;
pub const PLATFORM_CHALLENGE: u8 = 0x02;
pub const NEW_LICENSE: u8 = 0x03;
pub const UPGRADE_LICENSE: u8 = 0x04;
pub const LICENSE_INFO: u8 = 0x12;
pub const NEW_LICENSE_REQUEST: u8 = 0x13;
pub const PLATFORM_CHALLENGE_RESPONSE: u8 = 0x15;
pub const ERROR_ALERT: u8 = 0xff;
/// Preamble flags: the version (low 4 bits) and EXTENDED_ERROR_MSG_SUPPORTED.
pub const PREAMBLE_VERSION_3_0: u8 = 0x03;
pub const EXTENDED_ERROR_MSG_SUPPORTED: u8 = 0x80;
/// dwErrorCode STATUS_VALID_CLIENT and the state transitions of LICENSE_ERROR_MESSAGE.
pub const STATUS_VALID_CLIENT: u32 = 0x07;
pub const ST_TOTAL_ABORT: u32 = 1;
pub const ST_NO_TRANSITION: u32 = 2;
/// wBlobType BB_ERROR_BLOB.
pub const BB_ERROR_BLOB: u16 = 0x0004;
/// Size of the licensing preamble.
pub const PREAMBLE_LEN: usize = 4;

/// LICENSE_PREAMBLE: bMsgType, flags, wMsgSize (the size of the message with the preamble).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LicensePreamble {
    pub msg_type: u8,
    pub flags: u8,
    pub msg_size: u16,
}

impl LicensePreamble {
    /// Reads the preamble at the start of `msg`; wMsgSize must be at least the preamble and at
    /// most the bytes present.
    pub fn parse(msg: &[u8], base: usize) -> Result<LicensePreamble, WireError> {
        let mut c = Cursor::at(msg, base);
        let p = LicensePreamble {
            msg_type: c.read_u8()?,
            flags: c.read_u8()?,
            msg_size: c.read_u16_le()?,
        };
        let size = usize::from(p.msg_size);
        if size < PREAMBLE_LEN {
            return Err(WireError::invalid(
                base + 2,
                "licensing wMsgSize smaller than the preamble",
            ));
        }
        if size > msg.len() {
            return Err(WireError::truncated(base + msg.len(), size - msg.len()));
        }
        Ok(p)
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.msg_type, self.flags]);
        out.extend_from_slice(&self.msg_size.to_le_bytes());
    }
}

/// A licensing message: preamble (wMsgSize = its length, u16::MAX when longer) and `body`.
pub fn license_message(msg_type: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE_LEN + body.len());
    LicensePreamble {
        msg_type,
        flags,
        msg_size: u16::try_from(PREAMBLE_LEN + body.len()).unwrap_or(u16::MAX),
    }
    .emit(&mut out);
    out.extend_from_slice(body);
    out
}

/// A LICENSE_BINARY_BLOB (wBlobType, wBlobLen, data): its length field and where its data lies
/// (to the end of the input when fewer bytes than announced are there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseBlob {
    pub ty: u16,
    pub len: u16,
    pub data: Range<usize>,
}

impl LicenseBlob {
    pub fn parse(b: &[u8], base: usize) -> Result<LicenseBlob, WireError> {
        let mut c = Cursor::at(b, base);
        let ty = c.read_u16_le()?;
        let len = c.read_u16_le()?;
        let start = c.offset();
        let n = usize::from(len).min(c.remaining().len());
        Ok(LicenseBlob {
            ty,
            len,
            data: start..start + n,
        })
    }

    /// Writes a blob of `ty` with `data` (its length field saturates at u16::MAX).
    pub fn emit(ty: u16, data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(data);
    }
}

/// LICENSE_ERROR_MESSAGE (2.2.1.12.1.3): dwErrorCode, dwStateTransition, bbErrorInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseErrorMessage {
    pub error_code: u32,
    pub state_transition: u32,
    /// bbErrorInfo, when its header is there.
    pub error_info: Option<LicenseBlob>,
}

impl LicenseErrorMessage {
    /// Reads the message after its preamble (`b` starts at dwErrorCode).
    pub fn parse(b: &[u8], base: usize) -> Result<LicenseErrorMessage, WireError> {
        let mut c = Cursor::at(b, base);
        let error_code = c.read_u32_le()?;
        let state_transition = c.read_u32_le()?;
        let error_info = LicenseBlob::parse(c.remaining(), c.offset()).ok();
        Ok(LicenseErrorMessage {
            error_code,
            state_transition,
            error_info,
        })
    }

    /// The whole message with its preamble (`flags`), bbErrorInfo of `error_info_type` with
    /// `error_info`.
    pub fn emit(&self, flags: u8, error_info_type: u16, error_info: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(12 + error_info.len());
        body.extend_from_slice(&self.error_code.to_le_bytes());
        body.extend_from_slice(&self.state_transition.to_le_bytes());
        LicenseBlob::emit(error_info_type, error_info, &mut body);
        license_message(ERROR_ALERT, flags, &body)
    }

    /// STATUS_VALID_CLIENT with ST_NO_TRANSITION: how a server says "licensing done".
    pub fn is_valid_client(&self) -> bool {
        self.error_code == STATUS_VALID_CLIENT
    }
}

/// The licensing messages by bMsgType; only the error message is read further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LicensingMessage {
    LicenseRequest,
    PlatformChallenge,
    NewLicense,
    UpgradeLicense,
    LicenseInfo,
    NewLicenseRequest,
    PlatformChallengeResponse,
    ErrorAlert(LicenseErrorMessage),
}

/// A licensing PDU after its security header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicensingPdu {
    pub preamble: LicensePreamble,
    pub message: LicensingMessage,
}

impl LicensingPdu {
    pub fn parse(msg: &[u8], base: usize) -> Result<LicensingPdu, WireError> {
        let preamble = LicensePreamble::parse(msg, base)?;
        let body = msg.get(PREAMBLE_LEN..).unwrap_or_default();
        let message = match preamble.msg_type {
            LICENSE_REQUEST => LicensingMessage::LicenseRequest,
            PLATFORM_CHALLENGE => LicensingMessage::PlatformChallenge,
            NEW_LICENSE => LicensingMessage::NewLicense,
            UPGRADE_LICENSE => LicensingMessage::UpgradeLicense,
            LICENSE_INFO => LicensingMessage::LicenseInfo,
            NEW_LICENSE_REQUEST => LicensingMessage::NewLicenseRequest,
            PLATFORM_CHALLENGE_RESPONSE => LicensingMessage::PlatformChallengeResponse,
            ERROR_ALERT => {
                LicensingMessage::ErrorAlert(LicenseErrorMessage::parse(body, base + PREAMBLE_LEN)?)
            }
            _ => return Err(WireError::invalid(base, "unknown licensing bMsgType")),
        };
        Ok(LicensingPdu { preamble, message })
    }
}

// ---------------------------------------------------------------------------------------------
// Share control header (2.2.8.1.1.1.1) and share data header (2.2.8.1.1.1.2)

/// Share control PDU types, the low 4 bits of pduType.
pub const PDUTYPE_DEMANDACTIVEPDU: u16 = 0x1;
pub const PDUTYPE_CONFIRMACTIVEPDU: u16 = 0x3;
pub const PDUTYPE_DEACTIVATEALLPDU: u16 = 0x6;
pub const PDUTYPE_DATAPDU: u16 = 0x7;
pub const PDUTYPE_SERVER_REDIR_PKT: u16 = 0xa;
/// TS_PROTOCOL_VERSION in the high 12 bits of pduType.
pub const TS_PROTOCOL_VERSION: u16 = 0x1;
/// totalLength of a flow control PDU.
pub const FLOW_CONTROL_MARKER: u16 = 0x8000;
/// pduTypeFlow of a flow control PDU: FLOW_TEST, FLOW_RESPONSE, FLOW_STOP.
pub const FLOW_PDU_TYPES: std::ops::RangeInclusive<u8> = 0x41..=0x43;
/// Size of a share control header (totalLength, pduType, pduSource).
pub const SHARE_CONTROL_HEADER_LEN: usize = 6;
/// Size of share control header + share data header.
pub const SHARE_DATA_HEADER_END: usize = 18;
/// PACKET_COMPRESSED in the share data header's compressedType.
pub const PACKET_COMPRESSED: u8 = 0x20;
/// STREAM_LOW: the stream id of the share data header servers send.
pub const STREAM_LOW: u8 = 1;

/// pduType2 of the share data header (2.2.8.1.1.1.2).
pub const PDUTYPE2_UPDATE: u8 = 0x02;
pub const PDUTYPE2_CONTROL: u8 = 0x14;
pub const PDUTYPE2_POINTER: u8 = 0x1b;
pub const PDUTYPE2_INPUT: u8 = 0x1c;
pub const PDUTYPE2_SYNCHRONIZE: u8 = 0x1f;
pub const PDUTYPE2_REFRESH_RECT: u8 = 0x21;
pub const PDUTYPE2_PLAY_SOUND: u8 = 0x22;
pub const PDUTYPE2_SUPPRESS_OUTPUT: u8 = 0x23;
pub const PDUTYPE2_SHUTDOWN_REQUEST: u8 = 0x24;
pub const PDUTYPE2_SHUTDOWN_DENIED: u8 = 0x25;
pub const PDUTYPE2_SAVE_SESSION_INFO: u8 = 0x26;
pub const PDUTYPE2_FONTLIST: u8 = 0x27;
pub const PDUTYPE2_FONTMAP: u8 = 0x28;
pub const PDUTYPE2_SET_KEYBOARD_INDICATORS: u8 = 0x29;
pub const PDUTYPE2_BITMAPCACHE_PERSISTENT_LIST: u8 = 0x2b;
pub const PDUTYPE2_BITMAPCACHE_ERROR_PDU: u8 = 0x2c;
pub const PDUTYPE2_SET_KEYBOARD_IME_STATUS: u8 = 0x2d;
pub const PDUTYPE2_OFFSCRCACHE_ERROR_PDU: u8 = 0x2e;
pub const PDUTYPE2_SET_ERROR_INFO_PDU: u8 = 0x2f;
pub const PDUTYPE2_DRAWNINEGRID_ERROR_PDU: u8 = 0x30;
pub const PDUTYPE2_DRAWGDIPLUS_ERROR_PDU: u8 = 0x31;
pub const PDUTYPE2_ARC_STATUS_PDU: u8 = 0x32;
pub const PDUTYPE2_STATUS_INFO_PDU: u8 = 0x36;
pub const PDUTYPE2_MONITOR_LAYOUT_PDU: u8 = 0x37;
pub const PDUTYPE2_FRAME_ACKNOWLEDGE_PDU: u8 = 0x38;

/// totalLength, pduType (type and version), pduSource. For a flow control PDU: the marker,
/// pduTypeFlow with its pad byte, and the pduSource at the end of the PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareControlHeader {
    pub total_length: u16,
    pub pdu_type: u16,
    pub pdu_source: u16,
}

impl ShareControlHeader {
    /// The PDU type (low 4 bits of pduType).
    pub fn kind(&self) -> u16 {
        self.pdu_type & 0xf
    }

    /// The protocol version (high 12 bits of pduType).
    pub fn version(&self) -> u16 {
        self.pdu_type >> 4
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.total_length.to_le_bytes());
        out.extend_from_slice(&self.pdu_type.to_le_bytes());
        out.extend_from_slice(&self.pdu_source.to_le_bytes());
    }
}

/// The fields of a Demand Active (2.2.1.13.1.1) or Confirm Active (2.2.1.13.2.1) PDU, each read
/// while the PDU holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivePdu {
    pub share_id: Option<u32>,
    /// originatorId (Confirm Active only).
    pub originator_id: Option<u16>,
    pub length_source_descriptor: Option<u16>,
    pub length_combined_capabilities: Option<u16>,
    /// Where sourceDescriptor lies.
    pub source_descriptor: Option<Range<usize>>,
    pub number_capabilities: Option<u16>,
}

impl ActivePdu {
    /// Reads from `p`, the whole share control PDU (header included) at `base`.
    pub fn parse(p: &[u8], base: usize, confirm: bool) -> ActivePdu {
        let mut a = ActivePdu {
            share_id: le32(p, 6),
            ..ActivePdu::default()
        };
        let mut at = 10;
        if confirm {
            a.originator_id = le16(p, at);
            at += 2;
        }
        a.length_source_descriptor = le16(p, at);
        a.length_combined_capabilities = le16(p, at + 2);
        let sd_at = at + 4;
        if let Some(n) = a.length_source_descriptor.map(usize::from) {
            if p.get(sd_at..sd_at + n).is_some() {
                a.source_descriptor = Some(base + sd_at..base + sd_at + n);
                a.number_capabilities = le16(p, sd_at + n);
            }
        }
        a
    }
}

/// What rdprobe reads of a share data PDU's body (after the share data header), by pduType2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataBody {
    /// TS_CONTROL_PDU (2.2.1.15.1): action.
    Control { action: Option<u16> },
    /// TS_SAVE_SESSION_INFO_PDU_DATA (2.2.10.1.1): infoType.
    SaveSessionInfo { info_type: Option<u32> },
    /// TS_SET_ERROR_INFO_PDU (2.2.5.1.1): errorInfo.
    SetErrorInfo { error_info: Option<u32> },
    /// TS_MONITOR_LAYOUT_PDU (2.2.12.1): monitorCount.
    MonitorLayout { monitor_count: Option<u32> },
    /// A compressed body (not read) or one rdprobe does not read.
    Other,
}

/// A share data header and where its data lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareData {
    pub share_id: u32,
    pub stream_id: u8,
    pub uncompressed_length: u16,
    pub pdu_type2: u8,
    pub compressed_type: u8,
    /// compressedLength, when the PDU holds it.
    pub compressed_length: Option<u16>,
    /// Where the data after the header lies (empty when the PDU ends within the header).
    pub data: Range<usize>,
    pub body: DataBody,
}

impl ShareData {
    /// Reads from `p`, the whole share control PDU (header included) at `base`; the header must
    /// be there up to compressedType.
    pub fn parse(p: &[u8], base: usize) -> Result<ShareData, WireError> {
        let mut c = Cursor::at(
            p.get(SHARE_CONTROL_HEADER_LEN..).unwrap_or_default(),
            base + 6,
        );
        let share_id = c.read_u32_le()?;
        c.skip(1)?; // pad1
        let stream_id = c.read_u8()?;
        let uncompressed_length = c.read_u16_le()?;
        let pdu_type2 = c.read_u8()?;
        let compressed_type = c.read_u8()?;
        let compressed_length = c.read_u16_le().ok();
        let d = p.get(SHARE_DATA_HEADER_END..).unwrap_or_default();
        let start = base + p.len().min(SHARE_DATA_HEADER_END);
        let compressed = compressed_type & PACKET_COMPRESSED != 0;
        let body = if compressed {
            DataBody::Other
        } else {
            match pdu_type2 {
                PDUTYPE2_CONTROL => DataBody::Control { action: le16(d, 0) },
                PDUTYPE2_SAVE_SESSION_INFO => DataBody::SaveSessionInfo {
                    info_type: le32(d, 0),
                },
                PDUTYPE2_SET_ERROR_INFO_PDU => DataBody::SetErrorInfo {
                    error_info: le32(d, 0),
                },
                PDUTYPE2_MONITOR_LAYOUT_PDU => DataBody::MonitorLayout {
                    monitor_count: le32(d, 0),
                },
                _ => DataBody::Other,
            }
        };
        Ok(ShareData {
            share_id,
            stream_id,
            uncompressed_length,
            pdu_type2,
            compressed_type,
            compressed_length,
            data: start..start + d.len(),
            body,
        })
    }

    /// PACKET_COMPRESSED is set: the body is not read.
    pub fn compressed(&self) -> bool {
        self.compressed_type & PACKET_COMPRESSED != 0
    }
}

/// The body of a share control PDU by its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareControlBody {
    /// A flow control PDU (2.2.8.1.1.1.1 note) with its pduTypeFlow.
    FlowControl {
        pdu_type_flow: u8,
    },
    DemandActive(ActivePdu),
    ConfirmActive(ActivePdu),
    /// Deactivate All (2.2.3.1): the shareId when the PDU holds it.
    DeactivateAll {
        share_id: Option<u32>,
    },
    ServerRedirection,
    Data(ShareData),
}

/// A share control PDU that covers exactly its input (or a flow control PDU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareControlPdu {
    pub header: ShareControlHeader,
    pub body: ShareControlBody,
}

impl ShareControlPdu {
    /// Reads `p` as one share control PDU: totalLength equal to `p`'s length, a pduType with
    /// TS_PROTOCOL_VERSION and a known type; or a flow control PDU (marker 0x8000, a known
    /// pduTypeFlow, at least 8 bytes).
    pub fn parse(p: &[u8], base: usize) -> Result<ShareControlPdu, WireError> {
        let mut c = Cursor::at(p, base);
        let total_length = c.read_u16_le()?;
        let pdu_type = c.read_u16_le()?;
        if total_length == FLOW_CONTROL_MARKER {
            if p.len() < 8 {
                return Err(WireError::truncated(base + p.len(), 8 - p.len()));
            }
            let flow = pdu_type.to_le_bytes()[0];
            if !FLOW_PDU_TYPES.contains(&flow) {
                return Err(WireError::invalid(base + 2, "unknown pduTypeFlow"));
            }
            return Ok(ShareControlPdu {
                header: ShareControlHeader {
                    total_length,
                    pdu_type,
                    pdu_source: le16(p, 6).unwrap_or_default(),
                },
                body: ShareControlBody::FlowControl {
                    pdu_type_flow: flow,
                },
            });
        }
        if usize::from(total_length) != p.len() {
            return Err(WireError::invalid(
                base,
                "share control totalLength is not the PDU's length",
            ));
        }
        let pdu_source = c.read_u16_le()?;
        let header = ShareControlHeader {
            total_length,
            pdu_type,
            pdu_source,
        };
        if header.version() != TS_PROTOCOL_VERSION {
            return Err(WireError::invalid(
                base + 2,
                "share control pduType without TS_PROTOCOL_VERSION",
            ));
        }
        let body = match header.kind() {
            PDUTYPE_DEMANDACTIVEPDU => {
                ShareControlBody::DemandActive(ActivePdu::parse(p, base, false))
            }
            PDUTYPE_CONFIRMACTIVEPDU => {
                ShareControlBody::ConfirmActive(ActivePdu::parse(p, base, true))
            }
            PDUTYPE_DEACTIVATEALLPDU => ShareControlBody::DeactivateAll {
                share_id: le32(p, 6),
            },
            PDUTYPE_SERVER_REDIR_PKT => ShareControlBody::ServerRedirection,
            PDUTYPE_DATAPDU => ShareControlBody::Data(ShareData::parse(p, base)?),
            _ => {
                return Err(WireError::invalid(
                    base + 2,
                    "unknown share control pduType",
                ))
            }
        };
        Ok(ShareControlPdu { header, body })
    }
}

/// A share data header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareDataHeader {
    pub share_id: u32,
    pub stream_id: u8,
    pub uncompressed_length: u16,
    pub pdu_type2: u8,
    pub compressed_type: u8,
    pub compressed_length: u16,
}

impl ShareDataHeader {
    /// An uncompressed header on the low stream for `data_len` bytes of data (uncompressedLength
    /// counts the data and the 4 bytes from pduType2 on, as Windows servers write it).
    pub fn new(share_id: u32, pdu_type2: u8, data_len: usize) -> ShareDataHeader {
        ShareDataHeader {
            share_id,
            stream_id: STREAM_LOW,
            uncompressed_length: u16::try_from(data_len + 4).unwrap_or(u16::MAX),
            pdu_type2,
            compressed_type: 0,
            compressed_length: 0,
        }
    }

    /// The whole share data PDU: share control header (PDUTYPE_DATAPDU, `pdu_source`), this
    /// header and `data`; totalLength saturates at u16::MAX.
    pub fn emit_pdu(&self, pdu_source: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SHARE_DATA_HEADER_END + data.len());
        ShareControlHeader {
            total_length: u16::try_from(SHARE_DATA_HEADER_END + data.len()).unwrap_or(u16::MAX),
            pdu_type: TS_PROTOCOL_VERSION << 4 | PDUTYPE_DATAPDU,
            pdu_source,
        }
        .emit(&mut out);
        out.extend_from_slice(&self.share_id.to_le_bytes());
        out.extend_from_slice(&[0, self.stream_id]);
        out.extend_from_slice(&self.uncompressed_length.to_le_bytes());
        out.extend_from_slice(&[self.pdu_type2, self.compressed_type]);
        out.extend_from_slice(&self.compressed_length.to_le_bytes());
        out.extend_from_slice(data);
        out
    }
}

/// A Deactivate All PDU (2.2.3.1): share control header, shareId, lengthSourceDescriptor and
/// `source_descriptor`; the lengths saturate at u16::MAX.
pub fn deactivate_all(pdu_source: u16, share_id: u32, source_descriptor: &[u8]) -> Vec<u8> {
    let n = source_descriptor.len();
    let mut out = Vec::with_capacity(12 + n);
    ShareControlHeader {
        total_length: u16::try_from(12 + n).unwrap_or(u16::MAX),
        pdu_type: TS_PROTOCOL_VERSION << 4 | PDUTYPE_DEACTIVATEALLPDU,
        pdu_source,
    }
    .emit(&mut out);
    out.extend_from_slice(&share_id.to_le_bytes());
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(source_descriptor);
    out
}

// ---------------------------------------------------------------------------------------------
// One payload

/// What follows a basic security header, by its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecuredBody {
    SecurityExchange(SecurityExchange),
    /// An unencrypted licensing PDU.
    Licensing(LicensingPdu),
    /// SEC_ENCRYPT: nothing more is readable without the session keys (the flags tell a Client
    /// Info or a licensing PDU from the rest).
    Encrypted,
    /// A Client Info PDU in the clear; None when its packet does not read.
    ClientInfo(Option<ClientInfo>),
    /// Auto-detect request or response (the flags tell which); None when the header is cut.
    AutoDetect(Option<AutoDetectHeader>),
    MultitransportRequest,
    MultitransportResponse,
    Heartbeat,
    ServerRedirection,
    /// A share control PDU behind a header without SEC_ENCRYPT (standard security, encryption
    /// level low, server to client).
    ShareControl(ShareControlPdu),
}

/// The payload of a Send Data Request / Indication on the I/O channel, as rdprobe reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Exactly one share control PDU, no security header.
    ShareControl(ShareControlPdu),
    Secured {
        header: SecurityHeader,
        body: SecuredBody,
    },
}

impl Payload {
    /// Reads one payload at offset `base`. `standard`: standard RDP security (every PDU may
    /// carry a basic security header); otherwise only PDUs whose flags include one of
    /// [`SEC_ENHANCED_HEADER_FLAGS`] do.
    ///
    /// A payload that is exactly one share control PDU is read as one first in both modes: under
    /// standard security that is encryption level NONE, and the alternative reading
    /// (totalLength as security flags) would have to be a header whose flagsHi happens to look
    /// like a pduType. Otherwise a security header is read, and what follows it by the first of
    /// its flags that says (exchange, licensing in the clear, encryption, client info,
    /// auto-detect, multitransport, heartbeat, redirection; else, under standard security, a
    /// share control PDU). Each reading is validated (lengths must agree).
    pub fn parse(p: &[u8], base: usize, standard: bool) -> Result<Payload, WireError> {
        let as_share = match ShareControlPdu::parse(p, base) {
            Ok(s) => return Ok(Payload::ShareControl(s)),
            Err(e) => e,
        };
        let header = SecurityHeader::parse(p, base)?;
        if !standard && !header.has(SEC_ENHANCED_HEADER_FLAGS) {
            return Err(as_share);
        }
        let b = p.get(SECURITY_HEADER_LEN..).unwrap_or_default();
        let at = base + SECURITY_HEADER_LEN;
        let body = if header.has(SEC_EXCHANGE_PKT) {
            SecuredBody::SecurityExchange(SecurityExchange::parse(b, at)?)
        } else if header.has(SEC_LICENSE_PKT) && !header.has(SEC_ENCRYPT) {
            SecuredBody::Licensing(LicensingPdu::parse(b, at)?)
        } else if header.has(SEC_ENCRYPT) {
            SecuredBody::Encrypted
        } else if header.has(SEC_INFO_PKT) {
            SecuredBody::ClientInfo(ClientInfo::parse(b, at).ok())
        } else if header.has(SEC_AUTODETECT_REQ | SEC_AUTODETECT_RSP) {
            SecuredBody::AutoDetect(AutoDetectHeader::parse(b, at).ok())
        } else if header.has(SEC_TRANSPORT_REQ) {
            SecuredBody::MultitransportRequest
        } else if header.has(SEC_TRANSPORT_RSP) {
            SecuredBody::MultitransportResponse
        } else if header.has(SEC_HEARTBEAT) {
            SecuredBody::Heartbeat
        } else if header.has(SEC_REDIRECTION_PKT) {
            SecuredBody::ServerRedirection
        } else if standard {
            SecuredBody::ShareControl(ShareControlPdu::parse(b, at)?)
        } else {
            return Err(as_share);
        };
        Ok(Payload::Secured { header, body })
    }
}

/// Runs the readers over `data` (never panics, offsets within the input) and checks that the
/// writers' output reads back: part of [`super::exercise`].
pub(crate) fn exercise(data: &[u8]) {
    let end = 1 + data.len();
    for standard in [false, true] {
        if let Ok(p) = Payload::parse(data, 1, standard) {
            check_ranges(&p, end);
        }
    }
    let _ = LicensingPdu::parse(data, 1);
    let _ = ClientInfo::parse(data, 1);
    let _ = SecurityExchange::parse(data, 1);
    // The writers, fed from the input, read back as what they wrote.
    let (head, rest) = data.split_at(data.len().min(8));
    let word = |i: usize| le16(head, i).unwrap_or_default();
    let flags = word(0);
    let sec = secured(flags, rest);
    assert_eq!(
        SecurityHeader::parse(&sec, 0),
        Ok(SecurityHeader::new(flags))
    );
    let pdu_type2 = head.get(2).copied().unwrap_or_default();
    let hdr = ShareDataHeader::new(le32(head, 4).unwrap_or_default(), pdu_type2, rest.len());
    let pdu = hdr.emit_pdu(word(2), rest);
    // (a PDU of exactly 0x8000 bytes has the flow control marker as its totalLength)
    if pdu.len() <= usize::from(u16::MAX) && pdu.len() != usize::from(FLOW_CONTROL_MARKER) {
        match ShareControlPdu::parse(&pdu, 0).map(|s| s.body) {
            Ok(ShareControlBody::Data(d)) => {
                assert_eq!(
                    (d.share_id, d.pdu_type2, d.stream_id),
                    (hdr.share_id, pdu_type2, STREAM_LOW)
                );
                assert_eq!(&pdu[d.data], rest, "share data does not read back");
            }
            other => panic!("a written share data PDU reads back as {other:?}"),
        }
    }
    let msg_type = head.first().copied().unwrap_or_default();
    let msg = license_message(msg_type, PREAMBLE_VERSION_3_0, rest);
    let read = LicensingPdu::parse(&msg, 0);
    let known = matches!(
        msg_type,
        LICENSE_REQUEST
            | PLATFORM_CHALLENGE
            | NEW_LICENSE
            | UPGRADE_LICENSE
            | LICENSE_INFO
            | NEW_LICENSE_REQUEST
            | PLATFORM_CHALLENGE_RESPONSE
    );
    if known && msg.len() <= usize::from(u16::MAX) {
        assert!(
            read.is_ok(),
            "a written licensing message does not read back"
        );
    }
    if let Ok(l) = read {
        assert_eq!(
            usize::from(l.preamble.msg_size),
            msg.len().min(usize::from(u16::MAX))
        );
    }
    let alert = LicenseErrorMessage {
        error_code: le32(head, 0).unwrap_or_default(),
        state_transition: le32(head, 4).unwrap_or_default(),
        error_info: None,
    };
    let msg = alert.emit(
        EXTENDED_ERROR_MSG_SUPPORTED | PREAMBLE_VERSION_3_0,
        BB_ERROR_BLOB,
        rest,
    );
    if msg.len() <= usize::from(u16::MAX) {
        match LicensingPdu::parse(&msg, 0).map(|l| l.message) {
            Ok(LicensingMessage::ErrorAlert(e)) => {
                assert_eq!(
                    (e.error_code, e.state_transition),
                    (alert.error_code, alert.state_transition)
                );
                let blob = e.error_info.expect("the error blob reads back");
                assert_eq!((blob.ty, &msg[blob.data]), (BB_ERROR_BLOB, rest));
            }
            other => panic!("a written license error reads back as {other:?}"),
        }
    }
}

/// Every range a payload reports lies within the input (which ends at `end`).
fn check_ranges(p: &Payload, end: usize) {
    let within = |r: &Range<usize>| assert!(r.start <= r.end && r.end <= end, "{r:?} past {end}");
    let share = |s: &ShareControlPdu| match &s.body {
        ShareControlBody::DemandActive(a) | ShareControlBody::ConfirmActive(a) => {
            if let Some(r) = &a.source_descriptor {
                within(r);
            }
        }
        ShareControlBody::Data(d) => within(&d.data),
        _ => {}
    };
    match p {
        Payload::ShareControl(s) => share(s),
        Payload::Secured { body, .. } => match body {
            SecuredBody::SecurityExchange(x) => within(&x.random),
            SecuredBody::ClientInfo(Some(c)) => {
                within(&c.domain);
                within(&c.user_name);
            }
            SecuredBody::Licensing(LicensingPdu {
                message: LicensingMessage::ErrorAlert(e),
                ..
            }) => {
                if let Some(b) = &e.error_info {
                    within(&b.data);
                }
            }
            SecuredBody::ShareControl(s) => share(s),
            _ => {}
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::rdp::capability_sets::{
        ClientConfirmActive, DemandActive, ServerDemandActive,
    };
    use ironrdp_pdu::rdp::headers as ih;
    use ironrdp_pdu::rdp::server_license::{LicensePdu, LicensingErrorMessage};
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    fn ironrdp_share(pdu: ih::ShareControlPdu) -> Vec<u8> {
        ironrdp_core::encode_vec(&ih::ShareControlHeader {
            share_control_pdu: pdu,
            pdu_source: 1002,
            share_id: 0x0001_03ea,
        })
        .unwrap()
    }

    #[test]
    fn the_security_exchange_of_a_real_capture() {
        // zeek_rdp-proprietary-encryption.pcap: the client's Security Exchange PDU (72-byte random).
        let p = unhex("01020000480000008b689c55b7c81a58755f6260006995ae78bab756234acd65b0ecb8dcbb9ea69b6520eaecea70ae4adc82423bee7e0718577ac4be710f16a2bd1d5464598177440000000000000000");
        let Ok(Payload::Secured { header, body }) = Payload::parse(&p, 100, true) else {
            panic!("not a secured payload");
        };
        assert_eq!(
            header,
            SecurityHeader {
                flags: SEC_EXCHANGE_PKT | SEC_LICENSE_ENCRYPT,
                flags_hi: 0
            }
        );
        assert_eq!(header.names(), ["SEC_EXCHANGE_PKT", "SEC_LICENSE_ENCRYPT"]);
        assert_eq!(
            body,
            SecuredBody::SecurityExchange(SecurityExchange {
                length: 72,
                random: 108..180
            })
        );
        // the writer gives the same bytes
        let mut again = Vec::new();
        header.emit(&mut again);
        SecurityExchange::emit_body(72, &p[8..], &mut again);
        assert_eq!(again, p);
        // a length that does not cover the random is refused where the length is
        let mut bad = p.clone();
        bad[4] = 71;
        assert_eq!(
            SecurityExchange::parse(&bad[4..], 4),
            Err(WireError::invalid(
                4,
                "security exchange length does not match the encrypted random"
            ))
        );
        assert_eq!(
            Payload::parse(&p[..3], 0, true),
            Err(WireError::truncated(2, 1))
        );
    }

    #[test]
    fn licensing_reads_and_writes_what_ironrdp_does() {
        let ironrdp = ironrdp_core::encode_vec(&LicensePdu::from(
            LicensingErrorMessage::new_valid_client().unwrap(),
        ))
        .unwrap();
        let ours = secured(
            SEC_LICENSE_PKT,
            &LicenseErrorMessage {
                error_code: STATUS_VALID_CLIENT,
                state_transition: ST_NO_TRANSITION,
                error_info: None,
            }
            .emit(PREAMBLE_VERSION_3_0, BB_ERROR_BLOB, &[]),
        );
        assert_eq!(ours, ironrdp, "STATUS_VALID_CLIENT byte for byte");
        assert_eq!(ours, unhex("80000000 ff031000 07000000 02000000 04000000"));
        let Ok(Payload::Secured {
            body: SecuredBody::Licensing(l),
            ..
        }) = Payload::parse(&ours, 0, false)
        else {
            panic!("not licensing");
        };
        assert_eq!(
            l.preamble,
            LicensePreamble {
                msg_type: ERROR_ALERT,
                flags: 3,
                msg_size: 16
            }
        );
        let LicensingMessage::ErrorAlert(e) = l.message else {
            panic!("not an alert")
        };
        assert!(e.is_valid_client());
        assert_eq!(
            e.error_info,
            Some(LicenseBlob {
                ty: BB_ERROR_BLOB,
                len: 0,
                data: 20..20
            })
        );
        // wMsgSize past the end, or below the preamble, or an unknown type: refused with offsets
        assert_eq!(
            LicensePreamble::parse(&[0xff, 3, 20, 0, 7, 0, 0, 0], 4),
            Err(WireError::truncated(12, 12))
        );
        assert_eq!(
            LicensePreamble::parse(&[0xff, 3, 3, 0], 4),
            Err(WireError::invalid(
                6,
                "licensing wMsgSize smaller than the preamble"
            ))
        );
        assert_eq!(
            LicensingPdu::parse(&[0x42, 3, 4, 0], 4),
            Err(WireError::invalid(4, "unknown licensing bMsgType"))
        );
        // an alert cut in dwStateTransition
        assert_eq!(
            LicensingPdu::parse(&[0xff, 3, 10, 0, 7, 0, 0, 0, 2, 0], 0),
            Err(WireError::truncated(8, 2))
        );
        // a blob that announces more than is there runs to the end
        assert_eq!(
            LicenseBlob::parse(&[4, 0, 9, 0, 1, 2], 10),
            Ok(LicenseBlob {
                ty: 4,
                len: 9,
                data: 14..16
            })
        );
        let mut b = Vec::new();
        LicenseBlob::emit(0x0e, b"microsoft.com\0", &mut b);
        assert_eq!(&b[..4], &[0x0e, 0, 14, 0]);
    }

    #[test]
    fn demand_and_confirm_active_from_ironrdp() {
        let demand = ironrdp_share(ih::ShareControlPdu::ServerDemandActive(
            ServerDemandActive {
                pdu: DemandActive {
                    source_descriptor: "RDP".into(),
                    capability_sets: vec![],
                },
            },
        ));
        let Ok(Payload::ShareControl(s)) = Payload::parse(&demand, 0, false) else {
            panic!("not a share control PDU");
        };
        assert_eq!(
            s.header,
            ShareControlHeader {
                total_length: demand.len() as u16,
                pdu_type: 0x11,
                pdu_source: 1002
            }
        );
        let ShareControlBody::DemandActive(a) = s.body else {
            panic!("not a demand active")
        };
        assert_eq!(a.share_id, Some(0x0001_03ea));
        assert_eq!(a.originator_id, None);
        // IronRDP writes the descriptor with its NUL
        assert_eq!(a.length_source_descriptor, Some(4));
        assert_eq!(&demand[a.source_descriptor.unwrap()], b"RDP\0");
        assert_eq!(a.number_capabilities, Some(0));

        let confirm = ironrdp_share(ih::ShareControlPdu::ClientConfirmActive(
            ClientConfirmActive {
                originator_id: 0x03ea,
                pdu: DemandActive {
                    source_descriptor: "MSTSC".into(),
                    capability_sets: vec![],
                },
            },
        ));
        let Ok(Payload::ShareControl(ShareControlPdu {
            body: ShareControlBody::ConfirmActive(a),
            ..
        })) = Payload::parse(&confirm, 0, true)
        else {
            panic!("not a confirm active");
        };
        assert_eq!(a.originator_id, Some(0x03ea));
        assert_eq!(&confirm[a.source_descriptor.unwrap()], b"MSTSC\0");
        assert_eq!(a.number_capabilities, Some(0));
        // a sourceDescriptor longer than the PDU is not there, the rest is
        let mut cut = demand.clone();
        cut[10] = 200;
        let Ok(Payload::ShareControl(ShareControlPdu {
            body: ShareControlBody::DemandActive(a),
            ..
        })) = Payload::parse(&cut, 0, false)
        else {
            panic!("not a demand active");
        };
        assert_eq!(
            (
                a.length_source_descriptor,
                a.source_descriptor,
                a.number_capabilities
            ),
            (Some(200), None, None)
        );
    }

    #[test]
    fn share_data_written_and_read() {
        // The lab's Set Error Info (ERRINFO_RPC_INITIATED_DISCONNECT_BYUSER, 0x0000000b).
        let p = ShareDataHeader::new(0x0001_03ea, PDUTYPE2_SET_ERROR_INFO_PDU, 4)
            .emit_pdu(1002, &11u32.to_le_bytes());
        assert_eq!(
            p,
            unhex("1600 1700 ea03 ea030100 00 01 0800 2f 00 0000 0b000000")
        );
        let Ok(Payload::ShareControl(s)) = Payload::parse(&p, 7, false) else {
            panic!("not share control")
        };
        let ShareControlBody::Data(d) = s.body else {
            panic!("not data")
        };
        assert_eq!(
            d,
            ShareData {
                share_id: 0x0001_03ea,
                stream_id: STREAM_LOW,
                uncompressed_length: 8,
                pdu_type2: PDUTYPE2_SET_ERROR_INFO_PDU,
                compressed_type: 0,
                compressed_length: Some(0),
                data: 25..29,
                body: DataBody::SetErrorInfo {
                    error_info: Some(11)
                },
            }
        );
        // IronRDP's Control (cooperate) reads as one, its action read
        let control = ironrdp_share(ih::ShareControlPdu::Data(ih::ShareDataHeader {
            share_data_pdu: ih::ShareDataPdu::Control(
                ironrdp_pdu::rdp::finalization_messages::ControlPdu {
                    action: ironrdp_pdu::rdp::finalization_messages::ControlAction::Cooperate,
                    grant_id: 0,
                    control_id: 0,
                },
            ),
            stream_priority: ih::StreamPriority::Low,
            compression_flags: ih::CompressionFlags::empty(),
            compression_type: ironrdp_pdu::rdp::client_info::CompressionType::K8,
        }));
        let Ok(Payload::ShareControl(ShareControlPdu {
            body: ShareControlBody::Data(d),
            ..
        })) = Payload::parse(&control, 0, false)
        else {
            panic!("not data");
        };
        assert_eq!(d.body, DataBody::Control { action: Some(4) });
        // compressed: the body is not read
        let mut c = control.clone();
        c[15] |= PACKET_COMPRESSED;
        let Ok(Payload::ShareControl(ShareControlPdu {
            body: ShareControlBody::Data(d),
            ..
        })) = Payload::parse(&c, 0, false)
        else {
            panic!("not data");
        };
        assert!(d.compressed());
        assert_eq!(d.body, DataBody::Other);
        // cut within the share data header: not a share PDU, and not a secured one under TLS
        let mut short = p[..15].to_vec();
        short[0] = 15;
        assert_eq!(
            ShareControlPdu::parse(&short, 0),
            Err(WireError::truncated(15, 1))
        );
        assert!(Payload::parse(&short, 0, false).is_err());
        // the lab's Deactivate All
        let da = deactivate_all(1002, 0x0001_03ea, &[0]);
        assert_eq!(da, unhex("0d00 1600 ea03 ea030100 0100 00"));
        assert_eq!(
            ShareControlPdu::parse(&da, 0).map(|s| s.body),
            Ok(ShareControlBody::DeactivateAll {
                share_id: Some(0x0001_03ea)
            })
        );
        // a flow control PDU (FLOW_TEST)
        assert_eq!(
            ShareControlPdu::parse(&[0, 0x80, 0x41, 0, 1, 2, 0xea, 3], 0).map(|s| s.body),
            Ok(ShareControlBody::FlowControl {
                pdu_type_flow: 0x41
            })
        );
        assert_eq!(
            ShareControlPdu::parse(&[0, 0x80, 0x44, 0, 1, 2, 0xea, 3], 0),
            Err(WireError::invalid(2, "unknown pduTypeFlow"))
        );
    }

    #[test]
    fn client_info_autodetect_and_the_header_rules() {
        // TS_INFO_PACKET with INFO_UNICODE, domain "CORP", user "alice"
        let w = |s: &str| {
            s.encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>()
        };
        let (d, u) = (w("CORP"), w("alice"));
        let mut info = 0u32.to_le_bytes().to_vec();
        info.extend(0x13u32.to_le_bytes());
        for n in [d.len(), u.len(), 0, 0, 0] {
            info.extend((n as u16).to_le_bytes());
        }
        info.extend(&d);
        info.extend([0, 0]);
        info.extend(&u);
        info.extend([0; 8]);
        let p = secured(SEC_INFO_PKT, &info);
        let Ok(Payload::Secured {
            body: SecuredBody::ClientInfo(Some(c)),
            ..
        }) = Payload::parse(&p, 0, false)
        else {
            panic!("not a client info");
        };
        assert!(c.unicode());
        assert_eq!(c.cb, [8, 10, 0, 0, 0]);
        assert_eq!((&p[c.domain], &p[c.user_name]), (&d[..], &u[..]));
        // a user name past the end: the packet does not read, the PDU is still a Client Info
        assert_eq!(
            ClientInfo::parse(&info[..30], 4),
            Err(WireError::truncated(32, 8))
        );
        assert_eq!(
            Payload::parse(&secured(SEC_INFO_PKT, &info[..30]), 0, false).map(|p| matches!(
                p,
                Payload::Secured {
                    body: SecuredBody::ClientInfo(None),
                    ..
                }
            )),
            Ok(true)
        );
        let ad = secured(SEC_AUTODETECT_REQ, &[6, 0, 1, 0, 0x01, 0x10]);
        assert_eq!(
            Payload::parse(&ad, 0, false),
            Ok(Payload::Secured {
                header: SecurityHeader::new(SEC_AUTODETECT_REQ),
                body: SecuredBody::AutoDetect(Some(AutoDetectHeader {
                    header_length: 6,
                    header_type_id: 0,
                    sequence_number: 1,
                    request_type: 0x1001
                }))
            })
        );
        // under TLS a header without the enhanced-security flags is nothing; under standard
        // security an encrypted PDU is read as one and a clear one as the share PDU after it
        let enc = secured(SEC_ENCRYPT, &[0x22; 20]);
        assert!(Payload::parse(&enc, 0, false).is_err());
        assert_eq!(
            Payload::parse(&enc, 0, true),
            Ok(Payload::Secured {
                header: SecurityHeader::new(SEC_ENCRYPT),
                body: SecuredBody::Encrypted
            })
        );
        let data =
            ShareDataHeader::new(1, PDUTYPE2_SYNCHRONIZE, 4).emit_pdu(1002, &[1, 0, 0xea, 3]);
        let clear = secured(0, &data);
        assert!(matches!(
            Payload::parse(&clear, 0, true),
            Ok(Payload::Secured {
                body: SecuredBody::ShareControl(_),
                ..
            })
        ));
        assert!(Payload::parse(&clear, 0, false).is_err());
        // virtual channel data (CHANNEL_PDU_HEADER) is none of these
        assert!(Payload::parse(&[5, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3, 4, 5], 0, false).is_err());
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    proptest! {
        /// Arbitrary bytes: no panic in either mode, every range within the input, and a
        /// reading that fails reports an offset within (or just past) the input.
        #[test]
        fn payloads_never_panic(p in bytes(200), base in 0usize..1000) {
            for standard in [false, true] {
                match Payload::parse(&p, base, standard) {
                    Ok(r) => check_ranges(&r, base + p.len()),
                    Err(e) => prop_assert!(e.at >= base && e.at <= base + p.len(), "{e}"),
                }
            }
            super::exercise(&p);
        }

        /// Real PDUs with bytes flipped and cut: no panic.
        #[test]
        fn mutated_pdus_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut p = match which {
                0 => ShareDataHeader::new(0x0001_03ea, PDUTYPE2_CONTROL, 8).emit_pdu(1002, &[4, 0, 0, 0, 0, 0, 0, 0]),
                1 => secured(SEC_LICENSE_PKT, &LicenseErrorMessage { error_code: 6, state_transition: 1, error_info: None }.emit(3, BB_ERROR_BLOB, b"x")),
                2 => ironrdp_share(ih::ShareControlPdu::ServerDemandActive(ServerDemandActive {
                    pdu: DemandActive { source_descriptor: "RDP".into(), capability_sets: vec![] },
                })),
                _ => deactivate_all(1002, 7, b"RDP\0"),
            };
            for (i, x) in flips {
                let n = p.len();
                p[i % n] ^= x;
            }
            p.truncate(cut % (p.len() + 1));
            for standard in [false, true] {
                if let Ok(r) = Payload::parse(&p, 3, standard) {
                    check_ranges(&r, 3 + p.len());
                }
            }
        }

        /// A written share data PDU reads back as what was written.
        #[test]
        fn share_data_round_trips(share_id: u32, pdu_type2: u8, source: u16, data in bytes(300)) {
            let h = ShareDataHeader::new(share_id, pdu_type2, data.len());
            let p = h.emit_pdu(source, &data);
            let s = ShareControlPdu::parse(&p, 0).expect("reads back");
            prop_assert_eq!(s.header, ShareControlHeader { total_length: p.len() as u16, pdu_type: 0x17, pdu_source: source });
            let ShareControlBody::Data(d) = s.body else { panic!("not data") };
            prop_assert_eq!(
                (d.share_id, d.stream_id, d.uncompressed_length, d.pdu_type2, d.compressed_type, d.compressed_length),
                (share_id, STREAM_LOW, h.uncompressed_length, pdu_type2, 0, Some(0))
            );
            prop_assert_eq!(&p[d.data], &data[..]);
            // without a security header it is the payload, with one it is under standard security
            prop_assert!(matches!(Payload::parse(&p, 0, false), Ok(Payload::ShareControl(_))));
            let sec = secured(0, &p);
            let standard = matches!(
                Payload::parse(&sec, 0, true),
                Ok(Payload::Secured { body: SecuredBody::ShareControl(_), .. }) | Ok(Payload::ShareControl(_))
            );
            prop_assert!(standard);
        }

        /// Deactivate All, the Security Exchange and the security header read back.
        #[test]
        fn small_writers_round_trip(share_id: u32, source: u16, descriptor in bytes(40), flags: u16, flags_hi: u16, random in bytes(300)) {
            let p = deactivate_all(source, share_id, &descriptor);
            prop_assert_eq!(
                ShareControlPdu::parse(&p, 0).map(|s| s.body),
                Ok(ShareControlBody::DeactivateAll { share_id: Some(share_id) })
            );
            let mut x = Vec::new();
            SecurityHeader { flags, flags_hi }.emit(&mut x);
            SecurityExchange::emit_body(random.len() as u32, &random, &mut x);
            prop_assert_eq!(SecurityHeader::parse(&x, 9), Ok(SecurityHeader { flags, flags_hi }));
            let e = SecurityExchange::parse(&x[4..], 13).expect("reads back");
            prop_assert_eq!(e.length as usize, random.len());
            prop_assert_eq!(&x[e.random.start - 9..e.random.end - 9], &random[..]);
        }

        /// Licensing messages of every type read back with their preamble; an error message
        /// with its codes and blob.
        #[test]
        fn licensing_round_trips(ty in proptest::sample::select(vec![LICENSE_REQUEST, PLATFORM_CHALLENGE, NEW_LICENSE, UPGRADE_LICENSE, LICENSE_INFO, NEW_LICENSE_REQUEST, PLATFORM_CHALLENGE_RESPONSE]),
                                 flags: u8, body in bytes(300), code: u32, st: u32, blob_type: u16) {
            let m = license_message(ty, flags, &body);
            let l = LicensingPdu::parse(&m, 0).expect("reads back");
            prop_assert_eq!(l.preamble, LicensePreamble { msg_type: ty, flags, msg_size: m.len() as u16 });
            let alert = LicenseErrorMessage { error_code: code, state_transition: st, error_info: None };
            let m = secured(SEC_LICENSE_PKT, &alert.emit(flags, blob_type, &body));
            let Ok(Payload::Secured { body: SecuredBody::Licensing(l), .. }) = Payload::parse(&m, 0, false) else {
                panic!("not licensing");
            };
            let LicensingMessage::ErrorAlert(e) = l.message else { panic!("not an alert") };
            prop_assert_eq!((e.error_code, e.state_transition), (code, st));
            let b = e.error_info.expect("blob");
            prop_assert_eq!((b.ty, usize::from(b.len)), (blob_type, body.len()));
            prop_assert_eq!(&m[b.data], &body[..]);
        }
    }
}
