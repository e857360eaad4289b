//! T.125 MCS: the domain PDUs RDP uses (ALIGNED PER, T.125 7 / MS-RDPBCGR 2.2.1.5-2.2.1.8 and
//! 2.2.8.x) as one [`DomainPdu`] enum, and the BER Connect-Initial header down to its userData.
//! (The Connect-Response envelope is [`super::gcc::connect_response`].)
//!
//! Hand-written rather than ironrdp-pdu's `mcs` decoders: those need the TPKT/X.224 framing, stop
//! at the first problem without offsets, and refuse what a diagnostics tool must still read (a
//! confirm without its optional fields, a send-data PDU cut short). Reads are lenient the way the
//! analyzer has always been: optional trailing fields are read when present.

use std::ops::Range;

use super::asn1;
use super::cursor::{be16, WireError};

/// DomainMCSPDU choices (T.125 7: the index in the top 6 bits of the first byte).
pub const ERECT_DOMAIN_REQUEST: u8 = 1;
pub const DISCONNECT_PROVIDER_ULTIMATUM: u8 = 8;
pub const ATTACH_USER_REQUEST: u8 = 10;
pub const ATTACH_USER_CONFIRM: u8 = 11;
pub const CHANNEL_JOIN_REQUEST: u8 = 14;
pub const CHANNEL_JOIN_CONFIRM: u8 = 15;
pub const SEND_DATA_REQUEST: u8 = 25;
pub const SEND_DATA_INDICATION: u8 = 26;
/// UserIds are PER-encoded as offsets from 1001 (T.125 UserId ::= DynamicChannelId (1001..65535)).
pub const USER_ID_BASE: u16 = 1001;

/// A Send Data Request / Indication (T.125 SendDataRequest / SendDataIndication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendData {
    pub initiator: u16,
    pub channel_id: u16,
    /// dataPriority and segmentation (one byte: 0x70 is high priority, begin and end).
    pub priority_segmentation: u8,
    /// Where the user data lies in the input (to its end when fewer bytes than announced).
    pub payload: Range<usize>,
    /// The PER length of the user data.
    pub announced_len: usize,
}

impl SendData {
    /// Fewer payload bytes are present than the PER length announces.
    pub fn truncated(&self) -> bool {
        self.payload.len() < self.announced_len
    }
}

/// One MCS domain PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainPdu {
    ErectDomainRequest,
    /// The reason (3 bits, T.125 Reason: 0 rn-domain-disconnected … 4 rn-channel-purged).
    DisconnectProviderUltimatum {
        reason: u8,
    },
    AttachUserRequest,
    AttachUserConfirm {
        /// The result byte (T.125 Result index for a well-formed PDU).
        result: u8,
        /// The initiator when the PDU says it is present and holds it.
        initiator: Option<u16>,
    },
    ChannelJoinRequest {
        initiator: u16,
        channel_id: u16,
    },
    ChannelJoinConfirm {
        result: u8,
        /// Fields read while the PDU holds them.
        initiator: Option<u16>,
        requested: Option<u16>,
        /// The optional channelId, when the PDU says it is present and holds it.
        channel_id: Option<u16>,
    },
    SendDataRequest(SendData),
    SendDataIndication(SendData),
}

impl DomainPdu {
    /// Reads the domain PDU at the start of `b` (X.224 Data user data). Offsets are within `b`.
    pub fn parse(b: &[u8]) -> Result<DomainPdu, WireError> {
        // A short read is reported at the end of the input, with the bytes missing to the field's end.
        let short = |at: usize, n: usize| {
            WireError::truncated(at.min(b.len()), (at + n).saturating_sub(b.len()))
        };
        let byte = |at: usize| b.get(at).copied().ok_or_else(|| short(at, 1));
        let word = |at: usize| be16(b, at).ok_or_else(|| short(at, 2));
        let user = |at: usize| word(at).map(|v| v.wrapping_add(USER_ID_BASE));
        let b0 = byte(0)?;
        Ok(match b0 >> 2 {
            ERECT_DOMAIN_REQUEST => DomainPdu::ErectDomainRequest,
            DISCONNECT_PROVIDER_ULTIMATUM => DomainPdu::DisconnectProviderUltimatum {
                reason: ((b0 & 0x03) << 1) | (byte(1)? >> 7),
            },
            ATTACH_USER_REQUEST => DomainPdu::AttachUserRequest,
            ATTACH_USER_CONFIRM => DomainPdu::AttachUserConfirm {
                result: byte(1)?,
                // bit 1 of the choice byte: the optional initiator is present
                initiator: if b0 & 0x02 != 0 { user(2).ok() } else { None },
            },
            CHANNEL_JOIN_REQUEST => DomainPdu::ChannelJoinRequest {
                initiator: user(1)?,
                channel_id: word(3)?,
            },
            CHANNEL_JOIN_CONFIRM => DomainPdu::ChannelJoinConfirm {
                result: byte(1)?,
                initiator: user(2).ok(),
                requested: word(4).ok(),
                // bit 1 of the choice byte: the optional channelId is present
                channel_id: if b0 & 0x02 != 0 { word(6).ok() } else { None },
            },
            t @ (SEND_DATA_REQUEST | SEND_DATA_INDICATION) => {
                let initiator = user(1)?;
                let channel_id = word(3)?;
                let priority_segmentation = byte(5)?;
                let (len, n) = super::gcc::per_length(b, 6)?;
                let off = 6 + n;
                let sd = SendData {
                    initiator,
                    channel_id,
                    priority_segmentation,
                    payload: off..off.saturating_add(len).min(b.len()),
                    announced_len: len,
                };
                if t == SEND_DATA_REQUEST {
                    DomainPdu::SendDataRequest(sd)
                } else {
                    DomainPdu::SendDataIndication(sd)
                }
            }
            _ => return Err(WireError::invalid(0, "unknown DomainMCSPDU choice")),
        })
    }

    /// The choice index (T.125 7).
    pub fn choice(&self) -> u8 {
        match self {
            DomainPdu::ErectDomainRequest => ERECT_DOMAIN_REQUEST,
            DomainPdu::DisconnectProviderUltimatum { .. } => DISCONNECT_PROVIDER_ULTIMATUM,
            DomainPdu::AttachUserRequest => ATTACH_USER_REQUEST,
            DomainPdu::AttachUserConfirm { .. } => ATTACH_USER_CONFIRM,
            DomainPdu::ChannelJoinRequest { .. } => CHANNEL_JOIN_REQUEST,
            DomainPdu::ChannelJoinConfirm { .. } => CHANNEL_JOIN_CONFIRM,
            DomainPdu::SendDataRequest(_) => SEND_DATA_REQUEST,
            DomainPdu::SendDataIndication(_) => SEND_DATA_INDICATION,
        }
    }

    /// Writes the PDU; a send-data PDU is written with `payload` as its user data (its
    /// `payload` range and `announced_len` are not used). Optional fields are written up to the
    /// first absent one. `None` when a length does not fit PER's 15 bits or the reason its 3.
    pub fn emit(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let c = self.choice() << 2;
        let user = |u: u16| u.wrapping_sub(USER_ID_BASE).to_be_bytes();
        let mut out = Vec::new();
        match self {
            // subHeight and subInterval: PER INTEGERs of one byte each (what clients send).
            DomainPdu::ErectDomainRequest => out.extend_from_slice(&[c, 1, 0, 1, 0]),
            DomainPdu::DisconnectProviderUltimatum { reason } => {
                if *reason > 7 {
                    return None;
                }
                out.extend_from_slice(&[c | (reason >> 1), (reason & 1) << 7]);
            }
            DomainPdu::AttachUserRequest => out.push(c),
            DomainPdu::AttachUserConfirm { result, initiator } => {
                out.extend_from_slice(&[c | if initiator.is_some() { 2 } else { 0 }, *result]);
                if let Some(i) = initiator {
                    out.extend_from_slice(&user(*i));
                }
            }
            DomainPdu::ChannelJoinRequest {
                initiator,
                channel_id,
            } => {
                out.push(c);
                out.extend_from_slice(&user(*initiator));
                out.extend_from_slice(&channel_id.to_be_bytes());
            }
            DomainPdu::ChannelJoinConfirm {
                result,
                initiator,
                requested,
                channel_id,
            } => {
                let has_channel =
                    initiator.is_some() && requested.is_some() && channel_id.is_some();
                out.extend_from_slice(&[c | if has_channel { 2 } else { 0 }, *result]);
                if let Some(i) = initiator {
                    out.extend_from_slice(&user(*i));
                    if let Some(r) = requested {
                        out.extend_from_slice(&r.to_be_bytes());
                        if let (true, Some(ch)) = (has_channel, channel_id) {
                            out.extend_from_slice(&ch.to_be_bytes());
                        }
                    }
                }
            }
            DomainPdu::SendDataRequest(sd) | DomainPdu::SendDataIndication(sd) => {
                out.push(c);
                out.extend_from_slice(&user(sd.initiator));
                out.extend_from_slice(&sd.channel_id.to_be_bytes());
                out.push(sd.priority_segmentation);
                match u16::try_from(payload.len()) {
                    Ok(n) if n < 0x80 => out.push(n as u8),
                    Ok(n) if n < 0x4000 => out.extend_from_slice(&(n | 0x8000).to_be_bytes()),
                    _ => return None,
                }
                out.extend_from_slice(payload);
            }
        }
        Some(out)
    }
}

/// Why a Connect-Initial header could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectInitialError {
    /// The outer BER header.
    Header(WireError),
    /// Not application tag 101 (`7f 65`): the tag bytes read (one or two).
    Tag([u8; 2], usize),
    /// One of the six fields before userData (callingDomainSelector … maximumParameters).
    Field(usize, WireError),
    /// The userData TLV.
    UserData(WireError),
    /// userData is not an OCTET STRING.
    UserDataNotOctetString,
}

/// Reads a BER Connect-Initial (T.125 7, application tag 101) down to its userData OCTET STRING
/// (the GCC Conference Create Request): where the userData content lies in `ud`.
pub fn connect_initial(ud: &[u8]) -> Result<Range<usize>, ConnectInitialError> {
    use asn1::TagForm::UpToTwo;
    let (h, body, _) = asn1::read_tlv(ud, UpToTwo).map_err(ConnectInitialError::Header)?;
    if ud.get(..h.tag_len) != Some(&[0x7f, 0x65][..]) {
        let mut tag = [0u8; 2];
        let n = h.tag_len.min(2);
        tag[..n].copy_from_slice(&ud[..n]);
        return Err(ConnectInitialError::Tag(tag, n));
    }
    let mut at = h.header_len;
    let mut rest = body;
    for field in 0..6 {
        let (fh, _, tail) = asn1::read_tlv(rest, UpToTwo)
            .map_err(|e| ConnectInitialError::Field(field, WireError { at: e.at + at, ..e }))?;
        at += fh.header_len + fh.len;
        rest = tail;
    }
    let (uh, _, _) = asn1::read_tlv(rest, UpToTwo)
        .map_err(|e| ConnectInitialError::UserData(WireError { at: e.at + at, ..e }))?;
    if uh.tag_len != 1 || uh.tag != 0x04 {
        return Err(ConnectInitialError::UserDataNotOctetString);
    }
    let start = at + uh.header_len;
    Ok(start..start + uh.len)
}

/// Checks the reader/writer contract on `data` (for [`super::exercise`]).
pub(super) fn exercise(data: &[u8]) {
    match DomainPdu::parse(data) {
        Ok(pdu) => {
            if let DomainPdu::SendDataRequest(sd) | DomainPdu::SendDataIndication(sd) = &pdu {
                assert!(sd.payload.start <= sd.payload.end && sd.payload.end <= data.len());
            }
            let payload = match &pdu {
                DomainPdu::SendDataRequest(sd) | DomainPdu::SendDataIndication(sd) => {
                    data.get(sd.payload.clone()).unwrap_or_default()
                }
                _ => &[],
            };
            if let Some(again) = pdu.emit(payload) {
                let back = DomainPdu::parse(&again);
                assert_eq!(
                    back.as_ref().map(DomainPdu::choice),
                    Ok(pdu.choice()),
                    "an emitted domain PDU reads back as another"
                );
            }
        }
        Err(e) => assert!(e.at <= data.len(), "an error offset past the input"),
    }
    if let Ok(r) = connect_initial(data) {
        assert!(r.start <= r.end && r.end <= data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_core::encode_vec;
    use ironrdp_pdu::mcs;
    use ironrdp_pdu::x224::X224;
    use proptest::prelude::*;

    /// The MCS bytes of a domain PDU as IronRDP writes it (in TPKT + X.224 Data).
    fn ironrdp<T>(pdu: T) -> Vec<u8>
    where
        X224<T>: ironrdp_core::Encode,
    {
        encode_vec(&X224(pdu)).unwrap()[7..].to_vec()
    }

    #[test]
    fn reads_what_ironrdp_writes() {
        let cases: Vec<(Vec<u8>, DomainPdu)> = vec![
            (
                ironrdp(mcs::McsMessage::ErectDomainRequest(mcs::ErectDomainPdu {
                    sub_height: 0,
                    sub_interval: 0,
                })),
                DomainPdu::ErectDomainRequest,
            ),
            (
                ironrdp(mcs::McsMessage::AttachUserConfirm(mcs::AttachUserConfirm {
                    result: 0,
                    initiator_id: 1007,
                })),
                DomainPdu::AttachUserConfirm {
                    result: 0,
                    initiator: Some(1007),
                },
            ),
            (
                ironrdp(mcs::McsMessage::ChannelJoinRequest(
                    mcs::ChannelJoinRequest {
                        initiator_id: 1007,
                        channel_id: 1003,
                    },
                )),
                DomainPdu::ChannelJoinRequest {
                    initiator: 1007,
                    channel_id: 1003,
                },
            ),
            (
                ironrdp(mcs::McsMessage::DisconnectProviderUltimatum(
                    mcs::DisconnectProviderUltimatum::from_reason(
                        mcs::DisconnectReason::UserRequested,
                    ),
                )),
                DomainPdu::DisconnectProviderUltimatum { reason: 3 },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(DomainPdu::parse(&bytes), Ok(want.clone()), "{bytes:02x?}");
            // And what is written here reads back the same.
            let again = want.emit(&[]).unwrap();
            assert_eq!(DomainPdu::parse(&again), Ok(want));
        }
        let sdi = ironrdp(mcs::SendDataIndication {
            initiator_id: 1002,
            channel_id: 1003,
            user_data: std::borrow::Cow::Borrowed(&[9u8; 200][..]),
        });
        let Ok(DomainPdu::SendDataIndication(sd)) = DomainPdu::parse(&sdi) else {
            panic!("{sdi:02x?}")
        };
        assert_eq!((sd.initiator, sd.channel_id), (1002, 1003));
        assert_eq!(sd.payload, 8..208, "a two-byte PER length");
        assert!(!sd.truncated());
        let Ok(DomainPdu::SendDataIndication(cut)) = DomainPdu::parse(&sdi[..100]) else {
            panic!()
        };
        assert_eq!((cut.payload, cut.announced_len), (8..100, 200));
        assert_eq!(
            DomainPdu::parse(&sdi[..4]),
            Err(WireError::truncated(3, 1)),
            "where the channel id is cut"
        );
        assert_eq!(
            DomainPdu::parse(&[0xfc]),
            Err(WireError::invalid(0, "unknown DomainMCSPDU choice"))
        );
    }

    #[test]
    fn connect_initial_header() {
        let ci = ironrdp_pdu::mcs::ConnectInitial {
            conference_create_request: ironrdp_pdu::gcc::ConferenceCreateRequest::new(
                ironrdp_pdu::gcc::ClientGccBlocks {
                    core: ironrdp_pdu::gcc::ClientCoreData {
                        version: ironrdp_pdu::gcc::RdpVersion::V10_12,
                        desktop_width: 800,
                        desktop_height: 600,
                        color_depth: ironrdp_pdu::gcc::ColorDepth::Bpp8,
                        sec_access_sequence: ironrdp_pdu::gcc::SecureAccessSequence::Del,
                        keyboard_layout: 0x409,
                        client_build: 1,
                        client_name: "x".into(),
                        keyboard_type: ironrdp_pdu::gcc::KeyboardType::IBM_ENHANCED,
                        keyboard_subtype: 0,
                        keyboard_functional_keys_count: 12,
                        ime_file_name: String::new(),
                        optional_data: Default::default(),
                    },
                    security: ironrdp_pdu::gcc::ClientSecurityData::no_security(),
                    network: None,
                    cluster: None,
                    monitor: None,
                    message_channel: None,
                    multi_transport_channel: None,
                    monitor_extended: None,
                },
            )
            .unwrap(),
            calling_domain_selector: vec![1],
            called_domain_selector: vec![1],
            upward_flag: true,
            target_parameters: ironrdp_pdu::mcs::DomainParameters::target(),
            min_parameters: ironrdp_pdu::mcs::DomainParameters::min(),
            max_parameters: ironrdp_pdu::mcs::DomainParameters::max(),
        };
        let b = encode_vec(&ci).unwrap();
        let r = connect_initial(&b).unwrap();
        assert!(
            b[r.clone()].windows(4).any(|w| w == b"Duca"),
            "userData is the GCC request"
        );
        assert_eq!(r.end, b.len());
        let mut bad = b.clone();
        bad[1] = 0x66;
        assert_eq!(
            connect_initial(&bad),
            Err(ConnectInitialError::Tag([0x7f, 0x66], 2))
        );
        assert!(matches!(
            connect_initial(&b[..12]),
            Err(ConnectInitialError::Header(e)) if e.is_truncated()
        ));
    }

    fn pdu() -> impl Strategy<Value = DomainPdu> {
        let id = any::<u16>();
        prop_oneof![
            Just(DomainPdu::ErectDomainRequest),
            (0u8..8).prop_map(|reason| DomainPdu::DisconnectProviderUltimatum { reason }),
            Just(DomainPdu::AttachUserRequest),
            (any::<u8>(), proptest::option::of(id))
                .prop_map(|(result, initiator)| DomainPdu::AttachUserConfirm { result, initiator }),
            (id, id).prop_map(|(initiator, channel_id)| DomainPdu::ChannelJoinRequest {
                initiator,
                channel_id
            }),
            (any::<u8>(), 0usize..4, id, id, id).prop_map(|(result, n, a, b, c)| {
                DomainPdu::ChannelJoinConfirm {
                    result,
                    initiator: (n > 0).then_some(a),
                    requested: (n > 1).then_some(b),
                    channel_id: (n > 2).then_some(c),
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(p in pdu()) {
            let b = p.emit(&[]).unwrap();
            prop_assert_eq!(DomainPdu::parse(&b), Ok(p));
        }

        #[test]
        fn send_data_round_trip(req: bool, initiator: u16, channel_id: u16, prio: u8, payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let sd = SendData { initiator, channel_id, priority_segmentation: prio, payload: 0..0, announced_len: 0 };
            let p = if req { DomainPdu::SendDataRequest(sd) } else { DomainPdu::SendDataIndication(sd) };
            let b = p.emit(&payload).unwrap();
            let back = DomainPdu::parse(&b).unwrap();
            let (DomainPdu::SendDataRequest(s) | DomainPdu::SendDataIndication(s)) = &back else { panic!() };
            prop_assert_eq!(back.choice(), p.choice());
            prop_assert_eq!((s.initiator, s.channel_id, s.priority_segmentation), (initiator, channel_id, prio));
            prop_assert_eq!(&b[s.payload.clone()], &payload[..]);
            prop_assert!(!s.truncated());
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            exercise(&data);
        }
    }
}
