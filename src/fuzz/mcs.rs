//! Stage `mcs`: mutations of the MCS Connect Initial PDU (MS-RDPBCGR 2.2.1.3): the T.125
//! Connect-Initial BER structure (domain selectors, upward flag, the three DomainParameters, the
//! userData OCTET STRING), the T.124 GCC Conference Create Request PER wrapping (object key, PER
//! lengths, the H.221 "Duca" key) and the client data blocks CS_CORE (2.2.1.3.2), CS_SECURITY
//! (2.2.1.3.3), CS_NET (2.2.1.3.4) with channel counts and names, CS_CLUSTER (2.2.1.3.5) and
//! CS_MONITOR (2.2.1.3.6).

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u32s, u8s, upto};
use super::EncodeCtx;
use crate::wire::asn1;

/// Most channel definitions a case writes (the count field may claim more).
pub const MAX_CHANNEL_DEFS: u64 = 128;
/// Most monitor definitions a case writes.
pub const MAX_MONITORS: u64 = 64;

/// One structured mutation of the Connect Initial; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum McsMutation {
    /// The TPKT length field (default: the real length).
    TpktLength(u16),
    /// The second byte of the Connect-Initial tag (default 0x65: [APPLICATION 101]).
    ConnectInitialTag(u8),
    /// The Connect-Initial BER length (default: the real length).
    BerLength(u32),
    /// Encode the Connect-Initial length in long form with this many bytes.
    BerLongForm(u8),
    /// callingDomainSelector of `len` bytes.
    CallingSelector {
        len: u16,
    },
    CalledSelector {
        len: u16,
    },
    UpwardFlag(u8),
    /// DomainParameters value: `index` 0-7 target, 8-15 minimum, 16-23 maximum parameters.
    DomainParameter {
        index: u8,
        value: u32,
    },
    /// The userData OCTET STRING length (default: the real length).
    UserDataLength(u32),
    /// The PER length of the GCC connectPDU (default: the real length).
    GccConnectLength(u16),
    /// The PER length of the GCC user data (default: the real length).
    GccUserDataLength(u16),
    /// The H.221 non-standard key (default "Duca").
    H221Key(u32),
    /// The type of block `index` (0 core, 1 security, 2 network, 3 cluster; mod the block count).
    BlockType {
        index: u8,
        value: u16,
    },
    /// The length field of block `index` (default: the real length).
    BlockLength {
        index: u8,
        value: u16,
    },
    DropBlock(u8),
    DuplicateBlock(u8),
    /// Append a block of this type with `len` zero bytes of data.
    AddBlock {
        block_type: u16,
        len: u16,
    },
    CoreVersion(u32),
    DesktopWidth(u16),
    DesktopHeight(u16),
    ColorDepth(u16),
    HighColorDepth(u16),
    SupportedColorDepths(u16),
    EarlyCapabilityFlags(u16),
    ConnectionType(u8),
    ServerSelectedProtocol(u32),
    KeyboardLayout(u32),
    /// clientName: `len` UTF-16 code units of `fill` (15 fit with the terminator; more overflow
    /// into the next fields).
    ClientName {
        len: u8,
        fill: u8,
    },
    /// Keep only this many bytes of the core block data (the optional fields are a prefix rule).
    CoreTruncate(u16),
    EncryptionMethods(u32),
    ExtEncryptionMethods(u32),
    /// Write this many channel definitions (default 2) and a matching count.
    NetChannels(u8),
    /// The CS_NET channelCount field (default: the number of definitions written).
    NetCountField(u32),
    /// Channel `index`'s 8-byte name: `len` bytes of `fill` (8 leaves no terminator).
    ChannelName {
        index: u8,
        len: u8,
        fill: u8,
    },
    ChannelOptions {
        index: u8,
        value: u32,
    },
    ClusterFlags(u32),
    ClusterSessionId(u32),
    /// Add CS_MONITOR with `monitors` definitions and this count field.
    Monitor {
        count_field: u32,
        monitors: u8,
    },
    Havoc(Havoc),
}

/// A case of the `mcs` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McsCase {
    pub mutations: Vec<McsMutation>,
}

/// Static channels of the valid request.
pub const BASE_CHANNELS: &[&str] = &["cliprdr", "rdpsnd"];

/// DomainParameters (T.125 7, MS-RDPBCGR 2.2.1.3): target, minimum, maximum.
const DOMAIN_PARAMS: [[u32; 8]; 3] = [
    [34, 2, 0, 1, 0, 1, 0xffff, 2],
    [1, 1, 1, 1, 0, 1, 0x420, 2],
    [0xffff, 0xfc17, 0xffff, 1, 0, 1, 0xffff, 2],
];

fn ber_uint(v: u32) -> Vec<u8> {
    asn1::tlv(0x02, &asn1::uint_content(u64::from(v)))
}

/// PER length determinant (X.691 10.9): one byte below 128, else two with the top bit set.
fn per_len(len: u16) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let v = 0x8000 | (len & 0x3fff);
        v.to_be_bytes().to_vec()
    }
}

struct Block {
    ty: u16,
    data: Vec<u8>,
    length: Option<u16>,
}

/// Encodes the Connect Initial (TPKT + X.224 Data + BER) from `mutations` for `ctx`.
pub fn encode(mutations: &[McsMutation], ctx: &EncodeCtx) -> Vec<u8> {
    use McsMutation as M;
    let mut tpkt_length = None;
    let mut ci_tag = 0x65u8;
    let mut ber_length = None;
    let mut ber_long = None;
    let mut calling = vec![1u8];
    let mut called = vec![1u8];
    let mut upward = 0xffu8;
    let mut params = DOMAIN_PARAMS;
    let mut user_data_length = None;
    let mut gcc_connect_length = None;
    let mut gcc_user_length = None;
    let mut h221 = *b"Duca";
    let mut core = CoreFields::new(ctx.selected_protocol);
    let mut enc = (0u32, 0u32);
    let mut n_channels = BASE_CHANNELS.len();
    let mut count_field = None;
    let mut names: Vec<Option<(u8, u8)>> = vec![None; MAX_CHANNEL_DEFS as usize];
    let mut options: Vec<Option<u32>> = vec![None; MAX_CHANNEL_DEFS as usize];
    let mut cluster = (0x0000_000du32, 0u32);
    let mut monitor = None;
    let mut block_ops = Vec::new();
    let mut havocs = Vec::new();
    for m in mutations {
        match m {
            M::TpktLength(v) => tpkt_length = Some(*v),
            M::ConnectInitialTag(v) => ci_tag = *v,
            M::BerLength(v) => ber_length = Some(*v),
            M::BerLongForm(v) => ber_long = Some(*v),
            M::CallingSelector { len } => calling = vec![1; usize::from(*len)],
            M::CalledSelector { len } => called = vec![1; usize::from(*len)],
            M::UpwardFlag(v) => upward = *v,
            M::DomainParameter { index, value } => {
                let i = usize::from(*index) % 24;
                params[i / 8][i % 8] = *value;
            }
            M::UserDataLength(v) => user_data_length = Some(*v),
            M::GccConnectLength(v) => gcc_connect_length = Some(*v),
            M::GccUserDataLength(v) => gcc_user_length = Some(*v),
            M::H221Key(v) => h221 = v.to_be_bytes(),
            M::BlockType { .. }
            | M::BlockLength { .. }
            | M::DropBlock(_)
            | M::DuplicateBlock(_)
            | M::AddBlock { .. } => block_ops.push(m.clone()),
            M::CoreVersion(v) => core.version = *v,
            M::DesktopWidth(v) => core.width = *v,
            M::DesktopHeight(v) => core.height = *v,
            M::ColorDepth(v) => core.color_depth = *v,
            M::HighColorDepth(v) => core.high_color_depth = *v,
            M::SupportedColorDepths(v) => core.supported = *v,
            M::EarlyCapabilityFlags(v) => core.early = *v,
            M::ConnectionType(v) => core.connection_type = *v,
            M::ServerSelectedProtocol(v) => core.selected = *v,
            M::KeyboardLayout(v) => core.keyboard_layout = *v,
            M::ClientName { len, fill } => core.name = Some((*len, *fill)),
            M::CoreTruncate(v) => core.truncate = Some(usize::from(*v)),
            M::EncryptionMethods(v) => enc.0 = *v,
            M::ExtEncryptionMethods(v) => enc.1 = *v,
            M::NetChannels(n) => n_channels = (u64::from(*n)).min(MAX_CHANNEL_DEFS) as usize,
            M::NetCountField(v) => count_field = Some(*v),
            M::ChannelName { index, len, fill } => {
                names[usize::from(*index) % MAX_CHANNEL_DEFS as usize] = Some((*len, *fill))
            }
            M::ChannelOptions { index, value } => {
                options[usize::from(*index) % MAX_CHANNEL_DEFS as usize] = Some(*value)
            }
            M::ClusterFlags(v) => cluster.0 = *v,
            M::ClusterSessionId(v) => cluster.1 = *v,
            M::Monitor {
                count_field,
                monitors,
            } => monitor = Some((*count_field, *monitors)),
            M::Havoc(h) => havocs.push(h.clone()),
        }
    }

    // Client data blocks.
    let mut blocks = vec![
        Block {
            ty: 0xc001,
            data: core.encode(),
            length: None,
        },
        Block {
            ty: 0xc002,
            data: [enc.0.to_le_bytes(), enc.1.to_le_bytes()].concat(),
            length: None,
        },
    ];
    let mut net = Vec::new();
    net.extend_from_slice(&count_field.unwrap_or(n_channels as u32).to_le_bytes());
    for i in 0..n_channels {
        let mut name = [0u8; 8];
        match names[i] {
            Some((len, fill)) => {
                for b in name.iter_mut().take(usize::from(len).min(8)) {
                    *b = fill;
                }
            }
            None => {
                let base = BASE_CHANNELS.get(i).copied().unwrap_or("chan");
                let s = if i < BASE_CHANNELS.len() {
                    base.to_owned()
                } else {
                    format!("ch{i}")
                };
                for (d, s) in name.iter_mut().zip(s.bytes().take(7)) {
                    *d = s;
                }
            }
        }
        net.extend_from_slice(&name);
        net.extend_from_slice(&options[i].unwrap_or(0xc000_0000).to_le_bytes());
    }
    blocks.push(Block {
        ty: 0xc003,
        data: net,
        length: None,
    });
    blocks.push(Block {
        ty: 0xc004,
        data: [cluster.0.to_le_bytes(), cluster.1.to_le_bytes()].concat(),
        length: None,
    });
    if let Some((count, monitors)) = monitor {
        let mut d = Vec::new();
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&count.to_le_bytes());
        for k in 0..u64::from(monitors).min(MAX_MONITORS) {
            let k = k as i32;
            for v in [k * 1024, 0, k * 1024 + 1023, 767] {
                d.extend_from_slice(&v.to_le_bytes());
            }
            d.extend_from_slice(&(if k == 0 { 1u32 } else { 0 }).to_le_bytes());
        }
        blocks.push(Block {
            ty: 0xc005,
            data: d,
            length: None,
        });
    }
    for op in block_ops {
        let n = blocks.len();
        match op {
            M::BlockType { index, value } if n > 0 => blocks[usize::from(index) % n].ty = value,
            M::BlockLength { index, value } if n > 0 => {
                blocks[usize::from(index) % n].length = Some(value)
            }
            M::DropBlock(i) if n > 0 => {
                blocks.remove(usize::from(i) % n);
            }
            M::DuplicateBlock(i) if n > 0 => {
                let b = &blocks[usize::from(i) % n];
                let copy = Block {
                    ty: b.ty,
                    data: b.data.clone(),
                    length: b.length,
                };
                blocks.push(copy);
            }
            M::AddBlock { block_type, len } => blocks.push(Block {
                ty: block_type,
                data: vec![0; usize::from(len).min(havoc::MAX_INSERT as usize)],
                length: None,
            }),
            _ => {}
        }
    }
    let mut user = Vec::new();
    for b in &blocks {
        user.extend_from_slice(&b.ty.to_le_bytes());
        let len = b.length.unwrap_or((4 + b.data.len()).min(0xffff) as u16);
        user.extend_from_slice(&len.to_le_bytes());
        user.extend_from_slice(&b.data);
    }

    // GCC Conference Create Request (T.124, MS-RDPBCGR 2.2.1.3.1).
    let user_len = gcc_user_length.unwrap_or(user.len().min(0x3fff) as u16);
    let mut ccr = vec![0x00, 0x08, 0x00, 0x10, 0x00, 0x01, 0xc0, 0x00];
    ccr.extend_from_slice(&h221);
    ccr.extend(per_len(user_len));
    ccr.extend_from_slice(&user);
    let mut gcc = vec![0x00, 0x05, 0x00, 0x14, 0x7c, 0x00, 0x01];
    let connect_len = gcc_connect_length.unwrap_or(ccr.len().min(0x3fff) as u16);
    gcc.extend(per_len(connect_len));
    gcc.extend_from_slice(&ccr);

    // Connect-Initial (T.125 7, BER).
    let mut body = asn1::tlv(0x04, &calling);
    body.extend(asn1::tlv(0x04, &called));
    body.extend(asn1::tlv(0x01, &[upward]));
    for set in &params {
        let seq: Vec<u8> = set.iter().flat_map(|v| ber_uint(*v)).collect();
        body.extend(asn1::tlv(0x30, &seq));
    }
    body.extend(asn1::tlv_with(
        0x04,
        &gcc,
        user_data_length.map(|l| l as usize),
        None,
    ));
    let mut ci = vec![0x7f, ci_tag];
    ci.extend(asn1::len_octets(
        ber_length.map(|l| l as usize).unwrap_or(body.len()),
        ber_long,
    ));
    ci.extend_from_slice(&body);

    let mut out = super::channels::wrap(&ci, tpkt_length);
    havoc::apply_all(&havocs, &mut out);
    out
}

/// CS_CORE fields (MS-RDPBCGR 2.2.1.3.2).
struct CoreFields {
    version: u32,
    width: u16,
    height: u16,
    color_depth: u16,
    keyboard_layout: u32,
    name: Option<(u8, u8)>,
    high_color_depth: u16,
    supported: u16,
    early: u16,
    connection_type: u8,
    selected: u32,
    truncate: Option<usize>,
}

impl CoreFields {
    fn new(selected: u32) -> Self {
        CoreFields {
            version: 0x0008_0004,
            width: 1024,
            height: 768,
            color_depth: 0xca01,
            keyboard_layout: 0x409,
            name: None,
            high_color_depth: 0x18,
            supported: 0x0f,
            early: 0x0001,
            connection_type: 0,
            selected,
            truncate: None,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(212);
        d.extend_from_slice(&self.version.to_le_bytes());
        d.extend_from_slice(&self.width.to_le_bytes());
        d.extend_from_slice(&self.height.to_le_bytes());
        d.extend_from_slice(&self.color_depth.to_le_bytes());
        d.extend_from_slice(&0xaa03u16.to_le_bytes()); // SASSequence
        d.extend_from_slice(&self.keyboard_layout.to_le_bytes());
        d.extend_from_slice(&2600u32.to_le_bytes()); // clientBuild
                                                     // clientName: 32 bytes of UTF-16LE, NUL-terminated.
        let mut name: Vec<u8> = match self.name {
            Some((len, fill)) => std::iter::repeat_n([fill, 0], usize::from(len))
                .flatten()
                .collect(),
            None => "rdprobe"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes())
                .collect(),
        };
        if name.len() < 32 {
            name.resize(32, 0);
        }
        d.extend_from_slice(&name);
        d.extend_from_slice(&4u32.to_le_bytes()); // keyboardType: IBM enhanced
        d.extend_from_slice(&0u32.to_le_bytes()); // keyboardSubType
        d.extend_from_slice(&12u32.to_le_bytes()); // keyboardFunctionKey
        d.extend_from_slice(&[0u8; 64]); // imeFileName
        d.extend_from_slice(&0xca01u16.to_le_bytes()); // postBeta2ColorDepth
        d.extend_from_slice(&1u16.to_le_bytes()); // clientProductId
        d.extend_from_slice(&0u32.to_le_bytes()); // serialNumber
        d.extend_from_slice(&self.high_color_depth.to_le_bytes());
        d.extend_from_slice(&self.supported.to_le_bytes());
        d.extend_from_slice(&self.early.to_le_bytes());
        d.extend_from_slice(&[0u8; 64]); // clientDigProductId
        d.push(self.connection_type);
        d.push(0); // pad1octet
        d.extend_from_slice(&self.selected.to_le_bytes());
        if let Some(k) = self.truncate {
            d.truncate(k);
        }
        d
    }
}

/// One mutation, boundary-biased.
pub fn mutation() -> BoxedStrategy<McsMutation> {
    use McsMutation as M;
    let block_types = &[
        0xc001, 0xc002, 0xc003, 0xc004, 0xc005, 0xc006, 0xc008, 0xc00a, 0xc00c,
    ];
    let idx = || u8s(&[]);
    prop_oneof![
        1 => u16s(&[]).prop_map(M::TpktLength),
        1 => u8s(&[0x65, 0x66]).prop_map(M::ConnectInitialTag),
        2 => u32s(&[]).prop_map(M::BerLength),
        1 => upto(126, &[5, 9]).prop_map(|v| M::BerLongForm(v as u8)),
        1 => u16s(&[]).prop_map(|len| M::CallingSelector { len }),
        1 => u16s(&[]).prop_map(|len| M::CalledSelector { len }),
        1 => u8s(&[]).prop_map(M::UpwardFlag),
        2 => (upto(23, &[]).prop_map(|v| v as u8), u32s(&[34, 0x420, 0xfc17])).prop_map(|(index, value)| M::DomainParameter { index, value }),
        2 => u32s(&[]).prop_map(M::UserDataLength),
        1 => u16s(&[0x3fff]).prop_map(M::GccConnectLength),
        2 => u16s(&[0x3fff]).prop_map(M::GccUserDataLength),
        1 => u32s(&[0x4475_6361, 0x4d63_4464]).prop_map(M::H221Key),
        2 => (idx(), u16s(block_types)).prop_map(|(index, value)| M::BlockType { index, value }),
        3 => (idx(), u16s(&[216, 12, 32, 20])).prop_map(|(index, value)| M::BlockLength { index, value }),
        1 => idx().prop_map(M::DropBlock),
        1 => idx().prop_map(M::DuplicateBlock),
        1 => (u16s(block_types), upto(havoc::MAX_INSERT, &[]).prop_map(|v| v as u16)).prop_map(|(block_type, len)| M::AddBlock { block_type, len }),
        2 => u32s(&[0x0008_0001, 0x0008_0004, 0x0008_0011]).prop_map(M::CoreVersion),
        1 => u16s(&[200, 8192]).prop_map(M::DesktopWidth),
        1 => u16s(&[200, 8192]).prop_map(M::DesktopHeight),
        1 => u16s(&[0xca00, 0xca01, 0xca02, 0xca03, 0xca04]).prop_map(M::ColorDepth),
        1 => u16s(&[4, 8, 15, 16, 24, 32]).prop_map(M::HighColorDepth),
        1 => u16s(&[]).prop_map(M::SupportedColorDepths),
        2 => u16s(&[0x20, 0x40, 0x80, 0x100, 0x200, 0x400]).prop_map(M::EarlyCapabilityFlags),
        1 => u8s(&[1, 6, 7]).prop_map(M::ConnectionType),
        2 => u32s(&[0, 1, 2, 8]).prop_map(M::ServerSelectedProtocol),
        1 => u32s(&[]).prop_map(M::KeyboardLayout),
        1 => (upto(0xff, &[15, 16, 17]).prop_map(|v| v as u8), u8s(&[0x41])).prop_map(|(len, fill)| M::ClientName { len, fill }),
        2 => upto(212, &[4, 8, 128, 136, 200]).prop_map(|v| M::CoreTruncate(v as u16)),
        1 => u32s(&[0x01, 0x02, 0x08, 0x10, 0x1b]).prop_map(M::EncryptionMethods),
        1 => u32s(&[]).prop_map(M::ExtEncryptionMethods),
        4 => upto(MAX_CHANNEL_DEFS, &[30, 31]).prop_map(|v| M::NetChannels(v as u8)),
        3 => u32s(&[30, 31]).prop_map(M::NetCountField),
        2 => (upto(MAX_CHANNEL_DEFS, &[]).prop_map(|v| v as u8), upto(8, &[]).prop_map(|v| v as u8), u8s(&[0x41, 0x80])).prop_map(|(index, len, fill)| M::ChannelName { index, len, fill }),
        1 => (upto(MAX_CHANNEL_DEFS, &[]).prop_map(|v| v as u8), u32s(&[0x8000_0000, 0xc000_0000])).prop_map(|(index, value)| M::ChannelOptions { index, value }),
        1 => u32s(&[0x0d, 0x3d]).prop_map(M::ClusterFlags),
        1 => u32s(&[]).prop_map(M::ClusterSessionId),
        2 => (u32s(&[16, 17]), upto(MAX_MONITORS, &[16, 17]).prop_map(|v| v as u8)).prop_map(|(count_field, monitors)| M::Monitor { count_field, monitors }),
        3 => Havoc::strategy(600).prop_map(M::Havoc),
    ]
    .boxed()
}

/// A whole case: one to four mutations.
pub fn strategy() -> BoxedStrategy<McsCase> {
    proptest::collection::vec(mutation(), 1..=4)
        .prop_map(|mutations| McsCase { mutations })
        .boxed()
}

/// The CS_NET channelCount of a Connect Initial PDU (TPKT included), found by walking the BER
/// and PER structure; None when the PDU is too malformed to find it. Never panics.
pub fn net_channel_count(pdu: &[u8]) -> Option<u32> {
    let blocks = client_blocks(pdu)?;
    let mut rest = blocks;
    while rest.len() >= 4 {
        let ty = u16::from_le_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        if len < 4 {
            return None;
        }
        if ty == 0xc003 {
            let d = rest.get(4..8)?;
            return Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]));
        }
        rest = rest.get(len..)?;
    }
    None
}

/// The client data blocks of a Connect Initial (after the H.221 key and its PER length).
fn client_blocks(pdu: &[u8]) -> Option<&[u8]> {
    let key = pdu.windows(4).position(|w| w == b"Duca")?;
    let rest = pdu.get(key + 4..)?;
    let first = *rest.first()?;
    let skip = if first & 0x80 != 0 { 2 } else { 1 };
    rest.get(skip..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_core::decode;
    use ironrdp_pdu::mcs::ConnectInitial;
    use ironrdp_pdu::x224::X224;

    /// The bytes of the first 3000 cases of a fixed seed, with and without standard RDP
    /// security selected: a SHA-256 over each case's length and bytes. The BER is written with
    /// `wire::asn1`; the digest was taken with the hand-written TLVs before.
    #[test]
    fn fixed_seed_cases_keep_their_bytes() {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for selected in [0, 1, 2] {
            let ctx = EncodeCtx {
                selected_protocol: selected,
                ..EncodeCtx::default()
            };
            for case in crate::fuzz::cases(super::super::FuzzStage::Mcs, 0x00C0_FFEE, 1000) {
                let super::super::Case::Mcs(c) = case else {
                    panic!("an mcs case");
                };
                let bytes = encode(&c.mutations, &ctx);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
        }
        assert_eq!(
            hex::encode(h.finalize()),
            "ccbb97f10f27180a08f3f02cc15f726cc9f986bff20f2b2bf8148f97585f4942"
        );
    }

    #[test]
    fn base_connect_initial_is_what_ironrdp_decodes() {
        let ctx = EncodeCtx {
            selected_protocol: 1,
            ..EncodeCtx::default()
        };
        let b = encode(&[], &ctx);
        let ci = decode::<X224<ironrdp_pdu::x224::X224Data<'_>>>(&b).expect("x224 data");
        let ci = decode::<ConnectInitial>(ci.0.data.as_ref()).expect("connect initial");
        let blocks = &ci.conference_create_request.gcc_blocks();
        assert_eq!(blocks.core.desktop_width, 1024);
        assert_eq!(
            blocks.network.as_ref().map(|n| n.channels.len()),
            Some(BASE_CHANNELS.len())
        );
        assert_eq!(net_channel_count(&b), Some(2));
        let facts = crate::decode::mcs::connect_initial_facts(&b[7..]);
        assert!(facts.is_ok(), "{facts:?}");
    }

    #[test]
    fn channel_counts() {
        let ctx = EncodeCtx::default();
        let b = encode(&[McsMutation::NetChannels(31)], &ctx);
        assert_eq!(net_channel_count(&b), Some(31));
        let b = encode(
            &[
                McsMutation::NetChannels(3),
                McsMutation::NetCountField(0xffff_ffff),
            ],
            &ctx,
        );
        assert_eq!(net_channel_count(&b), Some(0xffff_ffff));
        let b = encode(&[McsMutation::DropBlock(2)], &ctx);
        assert_eq!(net_channel_count(&b), None);
        assert_eq!(net_channel_count(&[]), None);
        assert_eq!(net_channel_count(b"Duca\x80"), None);
    }
}
