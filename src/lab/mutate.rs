//! Server-side mutation: what the lab sends, mutated, to test the robustness of clients.
//!
//! The fuzzer ([`crate::fuzz`]) mutates what a client sends; this is the same pointed the other
//! way. A scenario's `[mutate]` section names a stage, a seed and optionally a case; at that stage
//! the lab replaces the PDU it would send by a structured mutation of it: the fields of the
//! X.224 Connection Confirm, the server's TLS records and certificate, the NTLM CHALLENGE and the
//! other TSRequests, the MCS Connect Response with its GCC server data and server certificate
//! (proprietary RSA keys with zero, one, even or tiny moduli and odd exponents; X.509 chains),
//! the Attach User / Channel Join Confirms, licensing PDUs, the Demand Active, error and
//! disconnect PDUs. Field values come from the fuzzer's boundary ladders and byte havoc
//! ([`crate::fuzz::ladder`], [`crate::fuzz::havoc`]) drawn with proptest's ChaCha runner
//! ([`crate::fuzz::runner_for`]).
//!
//! INVARIANT: a case is a pure function of (stage, seed, case number): [`case_for`] seeds a fresh
//! runner from the three, so case `k` costs one draw and replays the same on every run. Applying
//! a case never panics and every length it writes is bounded.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde::{Deserialize, Serialize};

use crate::fuzz::havoc::{self, Havoc};
use crate::fuzz::ladder::{u16s, u32s, u8s, upto};
use crate::scenario::MutateStage;
use crate::wire::share;

/// Largest certificate, blob or filler a case writes (bytes).
pub const MAX_FILL: u64 = 8192;

/// One server-side case: a mutation of the stage's PDU, then either carry on (the lab answers
/// whatever the client does next, within its read deadline) or close the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCase {
    pub body: Body,
    /// Close (FIN) right after the mutated PDU instead of carrying on.
    pub close_after: bool,
}

/// The stage-specific part of a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Body {
    X224(X224Case),
    Tls(TlsCase),
    Credssp(CredsspCase),
    Mcs(McsCase),
    Channels(ChannelsCase),
    Licensing(LicensingCase),
    Capabilities(CapsCase),
    Error(ErrorCase),
}

impl ServerCase {
    pub fn stage(&self) -> MutateStage {
        match self.body {
            Body::X224(_) => MutateStage::X224,
            Body::Tls(_) => MutateStage::Tls,
            Body::Credssp(_) => MutateStage::Credssp,
            Body::Mcs(_) => MutateStage::Mcs,
            Body::Channels(_) => MutateStage::Channels,
            Body::Licensing(_) => MutateStage::Licensing,
            Body::Capabilities(_) => MutateStage::Capabilities,
            Body::Error(_) => MutateStage::Error,
        }
    }

    /// One line, for logs and the lab's connection outcome.
    pub fn summary(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.stage().to_string())
    }
}

/// Mixes seed and case number into one runner seed (splitmix64), so neighbouring cases and seeds
/// draw unrelated values.
fn mix(stage: MutateStage, seed: u64, case: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(case)
        .wrapping_add((stage as u64) << 56);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Case `case` of `seed` for `stage`.
pub fn case_for(stage: MutateStage, seed: u64, case: u64) -> ServerCase {
    let mut runner = crate::fuzz::runner_for(mix(stage, seed, case));
    let strategy = strategy(stage);
    match strategy.new_tree(&mut runner) {
        Ok(t) => t.current(),
        // proptest's plain strategies never reject; keep a valid fallback anyway.
        Err(_) => ServerCase {
            body: Body::X224(X224Case::default()),
            close_after: false,
        },
    }
}

/// The proptest strategy of a stage's cases.
pub fn strategy(stage: MutateStage) -> BoxedStrategy<ServerCase> {
    let body = match stage {
        MutateStage::X224 => x224_strategy().prop_map(Body::X224).boxed(),
        MutateStage::Tls => tls_strategy().prop_map(Body::Tls).boxed(),
        MutateStage::Credssp => credssp_strategy().prop_map(Body::Credssp).boxed(),
        MutateStage::Mcs => mcs_strategy().prop_map(Body::Mcs).boxed(),
        MutateStage::Channels => channels_strategy().prop_map(Body::Channels).boxed(),
        MutateStage::Licensing => licensing_strategy().prop_map(Body::Licensing).boxed(),
        MutateStage::Capabilities => caps_strategy().prop_map(Body::Capabilities).boxed(),
        MutateStage::Error => error_strategy().prop_map(Body::Error).boxed(),
    };
    (body, prop::bool::weighted(0.25))
        .prop_map(|(body, close_after)| ServerCase { body, close_after })
        .boxed()
}

fn havocs(max_at: u64, n: usize) -> BoxedStrategy<Vec<Havoc>> {
    prop::collection::vec(Havoc::strategy(max_at), 0..=n).boxed()
}

fn fill_len() -> BoxedStrategy<u16> {
    upto(MAX_FILL, &[1, 8, 63, 64, 65, 256, 1024])
        .prop_map(|v| v as u16)
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// little helpers

fn set_u8(b: &mut [u8], at: usize, v: u8) {
    if let Some(x) = b.get_mut(at) {
        *x = v;
    }
}

fn set_le16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at.saturating_add(2)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn set_be16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at.saturating_add(2)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn set_le32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at.saturating_add(4)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn set_be24(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at.saturating_add(3)) {
        s.copy_from_slice(&v.to_be_bytes()[1..]);
    }
}

fn rd_le16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn rd_le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn rd_be24(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at.checked_add(3)?)
        .map(|s| (usize::from(s[0]) << 16) | (usize::from(s[1]) << 8) | usize::from(s[2]))
}

/// Bytes from a 64-bit seed (xorshift), for moduli and randoms that must look random but replay.
fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A mutation of a stage whose havoc applies to the finished PDU, after every other mutation.
trait FinalHavoc {
    fn havoc(&self) -> Option<&Havoc>;
}

macro_rules! final_havoc {
    ($($t:ty),*) => {$(
        impl FinalHavoc for $t {
            fn havoc(&self) -> Option<&Havoc> {
                match self {
                    Self::Havoc(h) => Some(h),
                    _ => None,
                }
            }
        }
    )*};
}
final_havoc!(
    CredsspMutation,
    McsMutation,
    LicensingMutation,
    CapsMutation
);

/// The finished PDU `out` with the havoc mutations among `mutations` applied, in their order: the
/// last step of every stage's mutation.
fn havocked<M: FinalHavoc>(mutations: &[M], mut out: Vec<u8>) -> Vec<u8> {
    for h in mutations.iter().filter_map(FinalHavoc::havoc) {
        h.apply(&mut out);
    }
    out
}

/// A TPKT + X.224 Data + MCS Send Data Indication around `payload`, with the initiator and
/// channel of `template` (a PDU of the same kind the lab sent), or 1002 / 1003.
pub fn send_data_indication(template: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let (initiator, channel) = template
        .and_then(sdi_split)
        .map(|s| (s.initiator, s.channel))
        .unwrap_or((1002, 1003));
    let mut mcs = vec![0x68];
    mcs.extend_from_slice(&initiator.to_be_bytes());
    mcs.extend_from_slice(&channel.to_be_bytes());
    mcs.push(0x70);
    let n = payload.len().min(0x3fff);
    if n < 0x80 {
        mcs.push(n as u8);
    } else {
        mcs.extend_from_slice(&(0x8000u16 | n as u16).to_be_bytes());
    }
    mcs.extend_from_slice(&payload[..n]);
    tpkt_data(&mcs)
}

/// TPKT + X.224 Data TPDU around `body` (the TPKT length saturates at 0xffff).
fn tpkt_data(body: &[u8]) -> Vec<u8> {
    let mut out = vec![3, 0, 0, 0, 2, 0xf0, 0x80];
    out.extend_from_slice(body);
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX);
    set_be16(&mut out, 2, len);
    out
}

struct Sdi<'a> {
    initiator: u16,
    channel: u16,
    payload: &'a [u8],
}

/// Splits a TPKT / X.224 / MCS Send Data Indication.
fn sdi_split(pdu: &[u8]) -> Option<Sdi<'_>> {
    if pdu.len() < 15 || pdu[0] != 3 || pdu[7] >> 2 != 26 {
        return None;
    }
    let initiator = u16::from_be_bytes([pdu[8], pdu[9]]);
    let channel = u16::from_be_bytes([pdu[10], pdu[11]]);
    let l0 = pdu[13];
    let (len, at): (usize, usize) = if l0 & 0x80 == 0 {
        (usize::from(l0), 14)
    } else {
        (
            (usize::from(l0 & 0x3f) << 8) | usize::from(*pdu.get(14)?),
            15,
        )
    };
    let payload = pdu.get(at..at.checked_add(len)?.min(pdu.len()))?;
    Some(Sdi {
        initiator,
        channel,
        payload,
    })
}

// ---------------------------------------------------------------------------------------------
// x224: the Connection Confirm (MS-RDPBCGR 2.2.1.2)

/// One edit of the 19-byte Connection Confirm (TPKT, X.224 CC, RDP_NEG_RSP / RDP_NEG_FAILURE).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum X224Mutation {
    TpktVersion(u8),
    TpktLength(u16),
    /// X.224 length indicator.
    LengthIndicator(u8),
    /// X.224 TPDU code (0xd0 Connection Confirm).
    TpduCode(u8),
    Class(u8),
    /// RDP_NEG type (2 response, 3 failure).
    NegType(u8),
    NegFlags(u8),
    NegLength(u16),
    /// selectedProtocol or failureCode.
    NegValue(u32),
    /// Drop the RDP_NEG structure (a pre-RDP-5 server).
    DropNeg,
    /// Append `len` bytes of `byte`.
    Append {
        len: u16,
        byte: u8,
    },
    Havoc(Havoc),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X224Case {
    pub mutations: Vec<X224Mutation>,
}

fn x224_strategy() -> BoxedStrategy<X224Case> {
    let m = prop_oneof![
        1 => u8s(&[3]).prop_map(X224Mutation::TpktVersion),
        1 => u16s(&[19, 11]).prop_map(X224Mutation::TpktLength),
        1 => u8s(&[14, 6]).prop_map(X224Mutation::LengthIndicator),
        1 => u8s(&[0xd0, 0xe0, 0xf0, 0x80]).prop_map(X224Mutation::TpduCode),
        1 => u8s(&[]).prop_map(X224Mutation::Class),
        2 => u8s(&[1, 2, 3]).prop_map(X224Mutation::NegType),
        2 => u8s(&[0x1f, 0x20]).prop_map(X224Mutation::NegFlags),
        1 => u16s(&[8]).prop_map(X224Mutation::NegLength),
        3 => u32s(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 0xb]).prop_map(X224Mutation::NegValue),
        1 => Just(X224Mutation::DropNeg),
        1 => (fill_len(), u8s(&[])).prop_map(|(len, byte)| X224Mutation::Append { len, byte }),
        2 => Havoc::strategy(19).prop_map(X224Mutation::Havoc),
    ];
    prop::collection::vec(m, 1..=3)
        .prop_map(|mutations| X224Case { mutations })
        .boxed()
}

/// Applies an x224 case to the Connection Confirm the lab would send.
pub fn x224_apply(c: &X224Case, pdu: &[u8]) -> Vec<u8> {
    let mut b = pdu.to_vec();
    for m in &c.mutations {
        match *m {
            X224Mutation::TpktVersion(v) => set_u8(&mut b, 0, v),
            X224Mutation::TpktLength(v) => set_be16(&mut b, 2, v),
            X224Mutation::LengthIndicator(v) => set_u8(&mut b, 4, v),
            X224Mutation::TpduCode(v) => set_u8(&mut b, 5, v),
            X224Mutation::Class(v) => set_u8(&mut b, 10, v),
            X224Mutation::NegType(v) => set_u8(&mut b, 11, v),
            X224Mutation::NegFlags(v) => set_u8(&mut b, 12, v),
            X224Mutation::NegLength(v) => set_le16(&mut b, 13, v),
            X224Mutation::NegValue(v) => set_le32(&mut b, 15, v),
            X224Mutation::DropNeg => {
                b.truncate(11);
                set_be16(&mut b, 2, 11);
                set_u8(&mut b, 4, 6);
            }
            X224Mutation::Append { len, byte } => {
                b.extend(std::iter::repeat_n(byte, usize::from(len)));
            }
            X224Mutation::Havoc(ref h) => h.apply(&mut b),
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------
// tls: the server's records (RFC 5246 / 8446 5.1, Certificate 7.4.2)

/// Which record of the server's TLS output a case edits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsTarget {
    /// The record that carries the Certificate handshake message (TLS 1.2 and older; under TLS
    /// 1.3 it is encrypted and nothing matches).
    #[default]
    Certificate,
    /// The `n`-th record the server writes (0 = the one with the ServerHello).
    Record(u8),
}

/// One edit of the targeted record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TlsMutation {
    /// Cut the first certificate's DER after `keep` bytes (lengths follow).
    CertTruncate {
        keep: u16,
    },
    /// XOR one byte of the first certificate's DER (mod its length).
    CertFlip {
        at: u16,
        xor: u8,
    },
    /// Replace the first certificate by `len` bytes of `byte` (lengths follow).
    CertGarbage {
        len: u16,
        byte: u8,
    },
    /// An empty certificate_list.
    CertDrop,
    /// The first certificate `times` more times in the list.
    CertRepeat {
        times: u8,
    },
    /// Lies, written after the consistent edits:
    CertListLength {
        value: u32,
    },
    CertEntryLength {
        value: u32,
    },
    HandshakeType {
        value: u8,
    },
    HandshakeLength {
        value: u32,
    },
    ContentType {
        value: u8,
    },
    RecordVersion {
        value: u16,
    },
    RecordLength {
        value: u16,
    },
    /// Byte havoc on the whole record (header included).
    Havoc(Havoc),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCase {
    pub target: TlsTarget,
    pub mutations: Vec<TlsMutation>,
}

fn tls_strategy() -> BoxedStrategy<TlsCase> {
    let cert = prop_oneof![
        3 => u16s(&[0, 1, 2, 4, 100, 500]).prop_map(|keep| TlsMutation::CertTruncate { keep }),
        3 => (u16s(&[0, 1, 4, 100, 200, 300]), 1u8..=255).prop_map(|(at, xor)| TlsMutation::CertFlip { at, xor }),
        1 => (fill_len(), u8s(&[0x30])).prop_map(|(len, byte)| TlsMutation::CertGarbage { len, byte }),
        1 => Just(TlsMutation::CertDrop),
        1 => (1u8..=8).prop_map(|times| TlsMutation::CertRepeat { times }),
        1 => u32s(&[0xff_ffff]).prop_map(|value| TlsMutation::CertListLength { value }),
        1 => u32s(&[0xff_ffff]).prop_map(|value| TlsMutation::CertEntryLength { value }),
        1 => u32s(&[0xff_ffff]).prop_map(|value| TlsMutation::HandshakeLength { value }),
        2 => Havoc::strategy(2048).prop_map(TlsMutation::Havoc),
    ];
    let record = prop_oneof![
        1 => u8s(&[20, 21, 22, 23, 24]).prop_map(|value| TlsMutation::ContentType { value }),
        1 => u16s(&[0x0300, 0x0301, 0x0302, 0x0303, 0x0304]).prop_map(|value| TlsMutation::RecordVersion { value }),
        1 => u16s(&[0x4000, 0x4800]).prop_map(|value| TlsMutation::RecordLength { value }),
        1 => u8s(&[1, 2, 11, 12, 13, 14, 20]).prop_map(|value| TlsMutation::HandshakeType { value }),
        1 => u32s(&[0xff_ffff]).prop_map(|value| TlsMutation::HandshakeLength { value }),
        3 => Havoc::strategy(512).prop_map(TlsMutation::Havoc),
    ];
    prop_oneof![
        3 => prop::collection::vec(cert, 1..=3).prop_map(|mutations| TlsCase {
            target: TlsTarget::Certificate,
            mutations,
        }),
        2 => (0u8..6, prop::collection::vec(record, 1..=3)).prop_map(|(n, mutations)| TlsCase {
            target: TlsTarget::Record(n),
            mutations,
        }),
    ]
    .boxed()
}

/// Where the Certificate handshake message sits in a record: (message start, message length).
fn find_certificate(record: &[u8]) -> Option<(usize, usize)> {
    if record.first() != Some(&22) {
        return None;
    }
    let mut p = 5usize;
    while p + 4 <= record.len() {
        let len = rd_be24(record, p + 1)?;
        if record[p] == 11 {
            return Some((p, len));
        }
        p = p.checked_add(4 + len)?;
    }
    None
}

/// Applies a TLS case to one complete record (header included); `None` when the case does not
/// target it.
fn tls_record_apply(c: &TlsCase, index: usize, record: &[u8]) -> Option<Vec<u8>> {
    let cert_at = find_certificate(record);
    match c.target {
        TlsTarget::Certificate if cert_at.is_none() => return None,
        TlsTarget::Record(n) if usize::from(n) != index => return None,
        _ => {}
    }
    let mut rec = record.to_vec();
    // Consistent edits of the first certificate: rebuild the message with fixed-up lengths.
    if let Some((hs, hs_len)) = cert_at {
        let body_end = (hs + 4 + hs_len).min(rec.len());
        let body = rec.get(hs + 4..body_end).unwrap_or(&[]).to_vec();
        // certificate_list<3> { cert_data<3> ... } (TLS 1.2)
        let mut certs: Vec<Vec<u8>> = Vec::new();
        let mut p = 3usize;
        while p + 3 <= body.len() {
            let Some(l) = rd_be24(&body, p) else { break };
            let Some(der) = body.get(p + 3..p + 3 + l) else {
                break;
            };
            certs.push(der.to_vec());
            p += 3 + l;
        }
        let mut edited = false;
        for m in &c.mutations {
            match *m {
                TlsMutation::CertTruncate { keep } => {
                    if let Some(first) = certs.first_mut() {
                        let k = usize::from(keep) % (first.len() + 1);
                        first.truncate(k);
                    }
                    edited = true;
                }
                TlsMutation::CertFlip { at, xor } => {
                    if let Some(first) = certs.first_mut().filter(|f| !f.is_empty()) {
                        let i = usize::from(at) % first.len();
                        first[i] ^= xor;
                    }
                    edited = true;
                }
                TlsMutation::CertGarbage { len, byte } => {
                    let g = vec![byte; usize::from(len).min(MAX_FILL as usize)];
                    match certs.first_mut() {
                        Some(first) => *first = g,
                        None => certs.push(g),
                    }
                    edited = true;
                }
                TlsMutation::CertDrop => {
                    certs.clear();
                    edited = true;
                }
                TlsMutation::CertRepeat { times } => {
                    if let Some(first) = certs.first().cloned() {
                        for _ in 0..times.min(8) {
                            certs.insert(0, first.clone());
                        }
                    }
                    edited = true;
                }
                _ => {}
            }
        }
        if edited {
            let mut list = Vec::new();
            for der in &certs {
                list.extend_from_slice(&(der.len() as u32).to_be_bytes()[1..]);
                list.extend_from_slice(der);
            }
            let mut msg = vec![11];
            msg.extend_from_slice(&((list.len() + 3) as u32).to_be_bytes()[1..]);
            msg.extend_from_slice(&(list.len() as u32).to_be_bytes()[1..]);
            msg.extend_from_slice(&list);
            let tail = rec.get(body_end..).unwrap_or(&[]).to_vec();
            rec.truncate(hs);
            rec.extend_from_slice(&msg);
            rec.extend_from_slice(&tail);
            let body_len = u16::try_from(rec.len() - 5).unwrap_or(u16::MAX);
            set_be16(&mut rec, 3, body_len);
        }
    }
    let hs = cert_at.map_or(5, |(hs, _)| hs);
    for m in &c.mutations {
        match *m {
            TlsMutation::CertListLength { value } => set_be24(&mut rec, hs + 4, value),
            TlsMutation::CertEntryLength { value } => set_be24(&mut rec, hs + 7, value),
            TlsMutation::HandshakeType { value } => set_u8(&mut rec, hs, value),
            TlsMutation::HandshakeLength { value } => set_be24(&mut rec, hs + 1, value),
            TlsMutation::ContentType { value } => set_u8(&mut rec, 0, value),
            TlsMutation::RecordVersion { value } => set_be16(&mut rec, 1, value),
            TlsMutation::RecordLength { value } => set_be16(&mut rec, 3, value),
            TlsMutation::Havoc(ref h) => h.apply(&mut rec),
            _ => {}
        }
    }
    Some(rec)
}

/// Applies a certificate case to an encrypted record (TLS 1.3's flight after the ServerHello):
/// truncation, flips and garbage hit the ciphertext, the record length follows.
fn tls_encrypted_apply(c: &TlsCase, record: &[u8]) -> Vec<u8> {
    let mut body = record.get(5..).unwrap_or(&[]).to_vec();
    for m in &c.mutations {
        match *m {
            TlsMutation::CertTruncate { keep } => body.truncate(usize::from(keep)),
            TlsMutation::CertFlip { at, xor } if !body.is_empty() => {
                let i = usize::from(at) % body.len();
                body[i] ^= xor;
            }
            TlsMutation::CertGarbage { len, byte } => {
                body = vec![byte; usize::from(len).min(MAX_FILL as usize)]
            }
            TlsMutation::CertDrop => body.clear(),
            _ => {}
        }
    }
    let mut rec = record.get(..5).unwrap_or(&[]).to_vec();
    rec.resize(5, 0);
    set_be16(&mut rec, 3, u16::try_from(body.len()).unwrap_or(u16::MAX));
    rec.extend_from_slice(&body);
    for m in &c.mutations {
        match *m {
            TlsMutation::RecordLength { value } => set_be16(&mut rec, 3, value),
            TlsMutation::Havoc(ref h) => h.apply(&mut rec),
            _ => {}
        }
    }
    rec
}

/// Follows the server's TLS output across writes and mutates the targeted record once.
#[derive(Debug)]
pub struct TlsWriteMutator {
    case: TlsCase,
    /// Records seen so far.
    records: usize,
    /// Bytes of a record that continue in the next write.
    carry: usize,
    pub done: bool,
}

impl TlsWriteMutator {
    pub fn new(case: TlsCase) -> Self {
        TlsWriteMutator {
            case,
            records: 0,
            carry: 0,
            done: false,
        }
    }

    /// The bytes to send instead of `buf`, or `None` to send `buf` as is.
    pub fn on_write(&mut self, buf: &[u8]) -> Option<Vec<u8>> {
        let mut p = self.carry.min(buf.len());
        self.carry -= p;
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0usize;
        while p < buf.len() {
            if p + 5 > buf.len() {
                // A header split over writes: stop following (nothing more is mutated).
                self.done = true;
                break;
            }
            let len = usize::from(u16::from_be_bytes([buf[p + 3], buf[p + 4]]));
            let end = p + 5 + len;
            if end > buf.len() {
                self.carry = end - buf.len();
                self.records += 1;
                break;
            }
            if !self.done {
                let rec = &buf[p..end];
                let applied = tls_record_apply(&self.case, self.records, rec).or_else(|| {
                    // TLS 1.3 encrypts the Certificate: the first encrypted record stands in.
                    (self.case.target == TlsTarget::Certificate && rec[0] == 23)
                        .then(|| tls_encrypted_apply(&self.case, rec))
                });
                if let Some(rec) = applied {
                    let o = out.get_or_insert_with(Vec::new);
                    o.extend_from_slice(&buf[copied..p]);
                    o.extend_from_slice(&rec);
                    copied = end;
                    self.done = true;
                }
            }
            self.records += 1;
            p = end;
        }
        out.map(|mut o| {
            o.extend_from_slice(&buf[copied..]);
            o
        })
    }
}

// ---------------------------------------------------------------------------------------------
// credssp: TSRequests (MS-CSSP 2.2.1) and the NTLM CHALLENGE (MS-NLMP 2.2.1.2)

/// A field of the NTLM CHALLENGE message, by offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NtlmField {
    MessageType,
    TargetNameLen,
    TargetNameMaxLen,
    TargetNameOffset,
    NegotiateFlags,
    TargetInfoLen,
    TargetInfoMaxLen,
    TargetInfoOffset,
    ProductMajor,
    ProductMinor,
    ProductBuild,
    NtlmRevision,
}

impl NtlmField {
    /// (offset, width in bytes)
    fn at(self) -> (usize, usize) {
        match self {
            NtlmField::MessageType => (8, 4),
            NtlmField::TargetNameLen => (12, 2),
            NtlmField::TargetNameMaxLen => (14, 2),
            NtlmField::TargetNameOffset => (16, 4),
            NtlmField::NegotiateFlags => (20, 4),
            NtlmField::TargetInfoLen => (40, 2),
            NtlmField::TargetInfoMaxLen => (42, 2),
            NtlmField::TargetInfoOffset => (44, 4),
            NtlmField::ProductMajor => (48, 1),
            NtlmField::ProductMinor => (49, 1),
            NtlmField::ProductBuild => (50, 2),
            NtlmField::NtlmRevision => (55, 1),
        }
    }
}

/// One edit of a server TSRequest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CredsspMutation {
    /// An NTLM CHALLENGE field (little-endian, truncated to its width).
    Ntlm { field: NtlmField, value: u32 },
    /// AV pair `index` of the target info: its AvId and AvLen (MS-NLMP 2.2.2.1).
    AvPair { index: u8, id: u16, len: u16 },
    /// The MsvAvTimestamp value (FILETIME).
    AvTimestamp { value: u64 },
    /// Append an AV pair with `len` bytes of `byte` to the target info (the lengths follow).
    AvAppend { id: u16, len: u16, byte: u8 },
    /// Cut the NTLM message after `keep` bytes.
    NtlmTruncate { keep: u16 },
    /// Byte havoc on the NTLM message (re-wrapped in valid DER).
    NtlmHavoc(Havoc),
    /// TSRequest.version.
    Version { value: u32 },
    /// Add a TSRequest.errorCode.
    ErrorCode { value: u32 },
    /// Drop negoTokens.
    DropToken,
    /// Byte havoc on the encoded TSRequest (the DER breaks).
    Havoc(Havoc),
}

/// Which server message: 0 the CHALLENGE TSRequest, 1 the pubKeyAuth TSRequest, 2 the Early
/// User Authorization Result (HYBRID_EX).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredsspCase {
    pub round: u8,
    pub mutations: Vec<CredsspMutation>,
}

fn credssp_strategy() -> BoxedStrategy<CredsspCase> {
    let field = prop_oneof![
        Just(NtlmField::MessageType),
        Just(NtlmField::TargetNameLen),
        Just(NtlmField::TargetNameMaxLen),
        Just(NtlmField::TargetNameOffset),
        Just(NtlmField::NegotiateFlags),
        Just(NtlmField::TargetInfoLen),
        Just(NtlmField::TargetInfoMaxLen),
        Just(NtlmField::TargetInfoOffset),
        Just(NtlmField::ProductMajor),
        Just(NtlmField::ProductMinor),
        Just(NtlmField::ProductBuild),
        Just(NtlmField::NtlmRevision),
    ];
    let m = prop_oneof![
        4 => (field, u32s(&[2, 3, 48, 56, 0xe2898235])).prop_map(|(field, value)| CredsspMutation::Ntlm { field, value }),
        2 => (0u8..8, u16s(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), u16s(&[4, 8])).prop_map(|(index, id, len)| CredsspMutation::AvPair { index, id, len }),
        2 => prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(i64::MAX as u64),
            Just(0x01d0_0000_0000_0000),
            Just(116_444_736_000_000_000),
            any::<u64>(),
        ].prop_map(|value| CredsspMutation::AvTimestamp { value }),
        1 => (u16s(&[0, 1, 2, 3, 4, 5, 7, 9]), fill_len(), u8s(&[])).prop_map(|(id, len, byte)| CredsspMutation::AvAppend { id, len, byte }),
        1 => u16s(&[0, 8, 12, 32, 40, 48, 56]).prop_map(|keep| CredsspMutation::NtlmTruncate { keep }),
        2 => Havoc::strategy(256).prop_map(CredsspMutation::NtlmHavoc),
        1 => u32s(&[2, 3, 5, 6, 7]).prop_map(|value| CredsspMutation::Version { value }),
        1 => u32s(&[0xC000_006D, 0xC000_0022]).prop_map(|value| CredsspMutation::ErrorCode { value }),
        1 => Just(CredsspMutation::DropToken),
        2 => Havoc::strategy(300).prop_map(CredsspMutation::Havoc),
    ];
    let eua = prop_oneof![
        u32s(&[0, 5]).prop_map(|value| CredsspMutation::Version { value }),
        Havoc::strategy(4).prop_map(CredsspMutation::Havoc),
    ];
    prop_oneof![
        6 => prop::collection::vec(m.clone(), 1..=3).prop_map(|mutations| CredsspCase { round: 0, mutations }),
        1 => prop::collection::vec(m, 1..=2).prop_map(|mutations| CredsspCase { round: 1, mutations }),
        1 => prop::collection::vec(eua, 1..=2).prop_map(|mutations| CredsspCase { round: 2, mutations }),
    ]
    .boxed()
}

/// Walks the AV pairs of a CHALLENGE: (offset of each pair in `msg`).
fn av_pairs(msg: &[u8]) -> Vec<usize> {
    let Some(off) = rd_le32(msg, 44) else {
        return Vec::new();
    };
    let mut p = off as usize;
    let mut out = Vec::new();
    while out.len() < 64 && p + 4 <= msg.len() {
        out.push(p);
        let id = rd_le16(msg, p).unwrap_or(0);
        if id == 0 {
            break;
        }
        p += 4 + usize::from(rd_le16(msg, p + 2).unwrap_or(0));
    }
    out
}

fn ntlm_apply(c: &CredsspCase, msg: &mut Vec<u8>) {
    for m in &c.mutations {
        match *m {
            CredsspMutation::Ntlm { field, value } => {
                let (at, w) = field.at();
                if let Some(s) = msg.get_mut(at..at + w) {
                    s.copy_from_slice(&value.to_le_bytes()[..w]);
                }
            }
            CredsspMutation::AvPair { index, id, len } => {
                let pairs = av_pairs(msg);
                if let Some(&p) = pairs.get(usize::from(index) % pairs.len().max(1)) {
                    set_le16(msg, p, id);
                    set_le16(msg, p + 2, len);
                }
            }
            CredsspMutation::AvTimestamp { value } => {
                for p in av_pairs(msg) {
                    if rd_le16(msg, p) == Some(7) {
                        if let Some(s) = msg.get_mut(p + 4..p + 12) {
                            s.copy_from_slice(&value.to_le_bytes());
                        }
                    }
                }
            }
            CredsspMutation::AvAppend { id, len, byte } => {
                // Before MsvAvEOL when there is one, else at the end; TargetInfoLen follows.
                let pairs = av_pairs(msg);
                let at = pairs
                    .last()
                    .copied()
                    .filter(|&p| rd_le16(msg, p) == Some(0))
                    .unwrap_or(msg.len());
                let n = usize::from(len).min(MAX_FILL as usize);
                let mut pair = id.to_le_bytes().to_vec();
                pair.extend_from_slice(&(n as u16).to_le_bytes());
                pair.extend(std::iter::repeat_n(byte, n));
                let grow = pair.len();
                msg.splice(at..at, pair);
                let ti = rd_le16(msg, 40).unwrap_or(0).saturating_add(grow as u16);
                set_le16(msg, 40, ti);
                set_le16(msg, 42, ti);
            }
            CredsspMutation::NtlmTruncate { keep } => msg.truncate(usize::from(keep)),
            CredsspMutation::NtlmHavoc(ref h) => h.apply(msg),
            _ => {}
        }
    }
}

/// Applies a credssp case to the server TSRequest of `round` (0 CHALLENGE, 1 pubKeyAuth); `None`
/// when the case targets another round.
pub fn tsrequest_apply(c: &CredsspCase, round: u8, pdu: &[u8]) -> Option<Vec<u8>> {
    if c.round != round {
        return None;
    }
    let out = match sspi::credssp::TsRequest::from_buffer(pdu) {
        Ok(mut ts) => {
            if let Some(tok) = ts.nego_tokens.as_mut() {
                ntlm_apply(c, tok);
            }
            if let Some(pk) = ts.pub_key_auth.as_mut() {
                for m in &c.mutations {
                    if let CredsspMutation::NtlmHavoc(h) = m {
                        h.apply(pk);
                    }
                }
            }
            for m in &c.mutations {
                match *m {
                    CredsspMutation::Version { value } => ts.version = value,
                    CredsspMutation::ErrorCode { value } => {
                        ts.error_code = Some(sspi::credssp::NStatusCode(value))
                    }
                    CredsspMutation::DropToken => ts.nego_tokens = None,
                    _ => {}
                }
            }
            let mut v = Vec::new();
            match ts.encode_ts_request(&mut v) {
                Ok(()) => v,
                Err(_) => pdu.to_vec(),
            }
        }
        Err(_) => pdu.to_vec(),
    };
    Some(havocked(&c.mutations, out))
}

/// Applies a round-2 credssp case to the Early User Authorization Result (4 bytes).
pub fn early_user_auth_apply(c: &CredsspCase, pdu: &[u8]) -> Option<Vec<u8>> {
    if c.round != 2 {
        return None;
    }
    let mut out = pdu.to_vec();
    for m in &c.mutations {
        match *m {
            CredsspMutation::Version { value } => out = value.to_le_bytes().to_vec(),
            CredsspMutation::Havoc(ref h) => h.apply(&mut out),
            _ => {}
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// server certificates (MS-RDPBCGR 2.2.1.4.3.1): proprietary RSA keys and X.509 chains

/// An RSA modulus shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modulus {
    Zero,
    One,
    /// Random bytes with the lowest bit cleared.
    Even,
    /// All bytes 0xff.
    Ones,
    /// Random, odd, top bit set: a plausible key.
    Plausible,
}

/// A proprietary certificate (dwVersion 1) with an RSA1 public key blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proprietary {
    pub modulus: Modulus,
    /// Modulus bytes written (the 8 zero padding bytes included in keylen by Windows).
    pub modulus_len: u16,
    pub exponent: u32,
    /// Replaces the keylen / bitlen / datalen fields (default: consistent with the modulus).
    pub keylen: Option<u32>,
    pub bitlen: Option<u32>,
    pub datalen: Option<u32>,
    pub magic: u32,
    pub blob_type: u16,
    /// Replaces wPublicKeyBlobLen.
    pub blob_len: Option<u16>,
    pub signature_len: u16,
    pub seed: u64,
}

impl Proprietary {
    /// A certificate whose fields other than the key agree with it: keylen, bitlen and datalen
    /// from the modulus, the RSA1 magic, BB_RSA_KEY_BLOB, a 72-byte signature.
    fn consistent(modulus: Modulus, modulus_len: u16, exponent: u32, seed: u64) -> Proprietary {
        Proprietary {
            modulus,
            modulus_len,
            exponent,
            keylen: None,
            bitlen: None,
            datalen: None,
            magic: 0x3141_5352,
            blob_type: 6,
            blob_len: None,
            signature_len: 72,
            seed,
        }
    }
}

/// One certificate of an X.509 chain (dwVersion 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainCert {
    /// The lab's own certificate.
    Lab,
    /// The lab's certificate cut after `keep` bytes.
    Truncated { keep: u16 },
    /// The lab's certificate with one byte flipped.
    Flipped { at: u16, xor: u8 },
    /// `len` bytes of `byte`.
    Garbage { len: u16, byte: u8 },
}

/// A server certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSpec {
    Proprietary(Proprietary),
    X509 {
        certs: Vec<ChainCert>,
        /// Replaces NumCertBlobs.
        count: Option<u32>,
        /// Replaces the first blob's length.
        first_len: Option<u32>,
    },
    /// dwVersion alone.
    Version(u32),
    /// `len` bytes of `byte`.
    Garbage {
        len: u16,
        byte: u8,
    },
}

fn modulus_strategy() -> BoxedStrategy<Modulus> {
    prop_oneof![
        3 => Just(Modulus::Zero),
        2 => Just(Modulus::One),
        2 => Just(Modulus::Even),
        1 => Just(Modulus::Ones),
        3 => Just(Modulus::Plausible),
    ]
    .boxed()
}

fn cert_strategy() -> BoxedStrategy<CertSpec> {
    let prop = (
        modulus_strategy(),
        // Mostly what fits ironrdp's 1024-byte certificate limit, so the key reaches the RSA code.
        prop_oneof![
            6 => prop::sample::select(vec![0u16, 1, 2, 8, 9, 64, 72, 128, 136, 256, 264]),
            1 => upto(4096, &[512, 520, 2048]).prop_map(|v| v as u16),
        ],
        u32s(&[3, 0x10001, 2, 1]),
        prop::option::weighted(0.2, u32s(&[0, 72, 0x7fff_ffff])),
        prop::option::weighted(0.2, u32s(&[0, 512, 511, 513])),
        prop::option::weighted(0.2, u32s(&[63, 64])),
        prop_oneof![6 => Just(0x3141_5352u32), 1 => any::<u32>()],
        prop_oneof![6 => Just(6u16), 1 => u16s(&[6, 8])],
        prop::option::weighted(0.2, u16s(&[0, 20, 92])),
        prop_oneof![4 => Just(72u16), 1 => u16s(&[64])],
        any::<u64>(),
    )
        .prop_map(
            |(
                modulus,
                modulus_len,
                exponent,
                keylen,
                bitlen,
                datalen,
                magic,
                blob_type,
                blob_len,
                signature_len,
                seed,
            )| {
                CertSpec::Proprietary(Proprietary {
                    modulus,
                    modulus_len,
                    exponent,
                    keylen,
                    bitlen,
                    datalen,
                    magic,
                    blob_type,
                    blob_len,
                    signature_len: signature_len.min(MAX_FILL as u16),
                    seed,
                })
            },
        );
    let chain_cert = prop_oneof![
        2 => Just(ChainCert::Lab),
        2 => u16s(&[0, 1, 2, 4, 100, 500]).prop_map(|keep| ChainCert::Truncated { keep }),
        2 => (u16s(&[0, 1, 4, 200]), 1u8..=255).prop_map(|(at, xor)| ChainCert::Flipped { at, xor }),
        1 => (fill_len(), u8s(&[0x30])).prop_map(|(len, byte)| ChainCert::Garbage { len, byte }),
    ];
    let x509 = (
        prop::collection::vec(chain_cert, 0..=4),
        prop::option::weighted(0.25, u32s(&[0, 1, 16, 17])),
        prop::option::weighted(0.2, u32s(&[0, 0xffff_ffff])),
    )
        .prop_map(|(certs, count, first_len)| CertSpec::X509 {
            certs,
            count,
            first_len,
        });
    // A consistent key blob whose only oddity is the modulus and exponent: what reaches the RSA
    // arithmetic of a client.
    let clean = (
        modulus_strategy(),
        prop::sample::select(vec![8u16, 9, 64, 72, 136, 264]),
        u32s(&[3, 0x10001, 2, 1]),
        any::<u64>(),
    )
        .prop_map(|(modulus, modulus_len, exponent, seed)| {
            CertSpec::Proprietary(Proprietary::consistent(
                modulus,
                modulus_len,
                exponent,
                seed,
            ))
        });
    prop_oneof![
        5 => clean,
        4 => prop,
        3 => x509,
        1 => u32s(&[0, 1, 2, 3, 0x8000_0001, 0x8000_0002]).prop_map(CertSpec::Version),
        1 => (fill_len(), u8s(&[])).prop_map(|(len, byte)| CertSpec::Garbage { len, byte }),
    ]
    .boxed()
}

/// The lab's self-signed certificate (DER), for X.509 chains; empty if it cannot be made.
fn lab_cert_der() -> Vec<u8> {
    super::tls::certificate(crate::scenario::CertificateKind::SelfSigned, "rdprobe-lab")
        .ok()
        .flatten()
        .map(|m| m.cert_der.clone())
        .unwrap_or_default()
}

impl CertSpec {
    /// The serverCertificate bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            CertSpec::Proprietary(p) => {
                let n = usize::from(p.modulus_len).min(4096);
                let mut m = seeded_bytes(p.seed, n);
                match p.modulus {
                    Modulus::Zero => m.fill(0),
                    Modulus::One => {
                        m.fill(0);
                        if let Some(b) = m.first_mut() {
                            *b = 1;
                        }
                    }
                    Modulus::Even => {
                        if let Some(b) = m.first_mut() {
                            *b &= 0xfe;
                        }
                    }
                    Modulus::Ones => m.fill(0xff),
                    Modulus::Plausible => {
                        // little-endian: lowest byte first, then 8 zero padding bytes at the top
                        if let Some(b) = m.first_mut() {
                            *b |= 1;
                        }
                        let top = n.saturating_sub(9);
                        if let Some(b) = m.get_mut(top) {
                            *b |= 0x80;
                        }
                        for b in m.iter_mut().skip(n.saturating_sub(8)) {
                            *b = 0;
                        }
                    }
                }
                let keylen = p.keylen.unwrap_or(n as u32);
                let bitlen = p
                    .bitlen
                    .unwrap_or((n.saturating_sub(8) as u32).saturating_mul(8));
                let datalen = p.datalen.unwrap_or((bitlen / 8).saturating_sub(1));
                let mut blob = Vec::with_capacity(20 + n);
                blob.extend_from_slice(&p.magic.to_le_bytes());
                blob.extend_from_slice(&keylen.to_le_bytes());
                blob.extend_from_slice(&bitlen.to_le_bytes());
                blob.extend_from_slice(&datalen.to_le_bytes());
                blob.extend_from_slice(&p.exponent.to_le_bytes());
                blob.extend_from_slice(&m);
                let blob_len = p
                    .blob_len
                    .unwrap_or(u16::try_from(blob.len()).unwrap_or(u16::MAX));
                let mut c = Vec::new();
                c.extend_from_slice(&1u32.to_le_bytes()); // dwVersion CERT_CHAIN_VERSION_1
                c.extend_from_slice(&1u32.to_le_bytes()); // dwSigAlgId SIGNATURE_ALG_RSA
                c.extend_from_slice(&1u32.to_le_bytes()); // dwKeyAlgId KEY_EXCHANGE_ALG_RSA
                c.extend_from_slice(&p.blob_type.to_le_bytes());
                c.extend_from_slice(&blob_len.to_le_bytes());
                c.extend_from_slice(&blob);
                c.extend_from_slice(&8u16.to_le_bytes()); // BB_RSA_SIGNATURE_BLOB
                c.extend_from_slice(&p.signature_len.to_le_bytes());
                c.extend(seeded_bytes(
                    p.seed ^ 0x5a5a,
                    usize::from(p.signature_len).min(MAX_FILL as usize),
                ));
                c
            }
            CertSpec::X509 {
                certs,
                count,
                first_len,
            } => {
                let lab = if certs.is_empty() {
                    Vec::new()
                } else {
                    lab_cert_der()
                };
                let mut c = Vec::new();
                c.extend_from_slice(&0x8000_0002u32.to_le_bytes());
                c.extend_from_slice(&count.unwrap_or(certs.len() as u32).to_le_bytes());
                for (i, cc) in certs.iter().enumerate() {
                    let der = match *cc {
                        ChainCert::Lab => lab.clone(),
                        ChainCert::Truncated { keep } => {
                            lab[..usize::from(keep).min(lab.len())].to_vec()
                        }
                        ChainCert::Flipped { at, xor } => {
                            let mut d = lab.clone();
                            if !d.is_empty() {
                                let k = usize::from(at) % d.len();
                                d[k] ^= xor;
                            }
                            d
                        }
                        ChainCert::Garbage { len, byte } => {
                            vec![byte; usize::from(len).min(MAX_FILL as usize)]
                        }
                    };
                    let len = match (i, first_len) {
                        (0, Some(l)) => *l,
                        _ => der.len() as u32,
                    };
                    c.extend_from_slice(&len.to_le_bytes());
                    c.extend_from_slice(&der);
                }
                c.extend_from_slice(&[0u8; 16]); // padding (MS-RDPBCGR 2.2.1.4.3.1: 8 + 4 * count bytes)
                c
            }
            CertSpec::Version(v) => v.to_le_bytes().to_vec(),
            CertSpec::Garbage { len, byte } => {
                vec![*byte; usize::from(*len).min(MAX_FILL as usize)]
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mcs: the Connect Response (T.125 BER, T.124 GCC PER, MS-RDPBCGR 2.2.1.4)

/// One edit of the Connect Response. The blocks are rebuilt with consistent lengths, then the
/// lies (`*Length` fields) and havoc are written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum McsMutation {
    /// Standard RDP security: SC_SECURITY with this method and level, a server random of
    /// `random_len` bytes and a server certificate.
    Security {
        method: u32,
        level: u32,
        random_len: u16,
        cert: CertSpec,
        /// Replace serverRandomLen / serverCertLen.
        random_len_field: Option<u32>,
        cert_len_field: Option<u32>,
    },
    /// SC_SECURITY with only method and level (none: 0/0 is what a TLS server sends).
    SecurityShort {
        method: u32,
        level: u32,
    },
    /// MCS result (0 rt-successful).
    Result(u8),
    CoreVersion(u32),
    CoreRequestedProtocols(u32),
    CoreEarlyCapabilities(u32),
    /// Keep only this many bytes of SC_CORE's data.
    CoreTruncate(u8),
    NetIoChannel(u16),
    /// The channelCount field of SC_NET (the ids written stay).
    NetCount(u16),
    /// Replace the channel ids by `n` ids from `first`.
    NetChannels {
        n: u8,
        first: u16,
    },
    DropBlock(u8),
    DuplicateBlock(u8),
    AddBlock {
        block_type: u16,
        len: u16,
    },
    BlockType {
        index: u8,
        value: u16,
    },
    BlockLength {
        index: u8,
        value: u16,
    },
    /// Lies about the framing:
    TpktLength(u16),
    BerLength(u32),
    UserDataLength(u32),
    GccLength(u16),
    BlocksLength(u16),
    Havoc(Havoc),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McsCase {
    pub mutations: Vec<McsMutation>,
}

fn security_strategy() -> BoxedStrategy<McsMutation> {
    (
        prop_oneof![
            Just(0x1u32),
            Just(0x2u32),
            Just(0x8u32),
            Just(0x10u32),
            u32s(&[0, 1, 2, 8, 0x10])
        ],
        prop_oneof![8 => 1u32..=4, 1 => u32s(&[0, 4])],
        prop_oneof![8 => Just(32u16), 1 => u16s(&[0, 31, 33])],
        cert_strategy(),
        prop::option::weighted(0.1, u32s(&[0, 32, 0xffff_ffff])),
        prop::option::weighted(0.1, u32s(&[0, 0xffff_ffff, 0x10001])),
    )
        .prop_map(
            |(method, level, random_len, cert, random_len_field, cert_len_field)| {
                McsMutation::Security {
                    method,
                    level,
                    random_len: random_len.min(MAX_FILL as u16),
                    cert,
                    random_len_field,
                    cert_len_field,
                }
            },
        )
        .boxed()
}

fn mcs_strategy() -> BoxedStrategy<McsCase> {
    let other = prop_oneof![
        1 => (u32s(&[1, 2, 8, 0x10]), u32s(&[1, 2, 3, 4])).prop_map(|(method, level)| McsMutation::SecurityShort { method, level }),
        1 => u8s(&[1, 2, 14, 15]).prop_map(McsMutation::Result),
        1 => u32s(&[0x0008_0001, 0x0008_0004, 0x0008_0012]).prop_map(McsMutation::CoreVersion),
        1 => u32s(&[0, 1, 2, 3, 8, 0xb]).prop_map(McsMutation::CoreRequestedProtocols),
        1 => u32s(&[1, 2, 4, 8, 0x10]).prop_map(McsMutation::CoreEarlyCapabilities),
        1 => (0u8..12).prop_map(McsMutation::CoreTruncate),
        1 => u16s(&[1003, 1002]).prop_map(McsMutation::NetIoChannel),
        1 => u16s(&[31, 32]).prop_map(McsMutation::NetCount),
        1 => ((0u8..=40), u16s(&[1003, 1004])).prop_map(|(n, first)| McsMutation::NetChannels { n, first }),
        1 => (0u8..5).prop_map(McsMutation::DropBlock),
        1 => (0u8..5).prop_map(McsMutation::DuplicateBlock),
        1 => (u16s(&[0x0c01, 0x0c02, 0x0c03, 0x0c04, 0x0c08]), u16s(&[0, 4, 8])).prop_map(|(block_type, len)| McsMutation::AddBlock { block_type, len: len.min(MAX_FILL as u16) }),
        1 => ((0u8..5), u16s(&[0x0c01, 0x0c02, 0x0c03, 0x0c04, 0x0c08])).prop_map(|(index, value)| McsMutation::BlockType { index, value }),
        1 => ((0u8..5), u16s(&[0, 3, 4, 12, 16])).prop_map(|(index, value)| McsMutation::BlockLength { index, value }),
        1 => u16s(&[]).prop_map(McsMutation::TpktLength),
        1 => u32s(&[0x7f, 0x80]).prop_map(McsMutation::BerLength),
        1 => u32s(&[0x7f, 0x80]).prop_map(McsMutation::UserDataLength),
        1 => u16s(&[0x7f, 0x80, 0x3fff]).prop_map(McsMutation::GccLength),
        1 => u16s(&[0x7f, 0x80, 0x3fff]).prop_map(McsMutation::BlocksLength),
        2 => Havoc::strategy(256).prop_map(McsMutation::Havoc),
    ];
    prop_oneof![
        // Mostly: standard RDP security with a certificate, plus up to one other edit.
        3 => (security_strategy(), prop::option::weighted(0.3, other.clone())).prop_map(|(s, rest)| {
            let mut mutations = vec![s];
            mutations.extend(rest);
            McsCase { mutations }
        }),
        2 => prop::collection::vec(other, 1..=3).prop_map(|mutations| McsCase { mutations }),
    ]
    .boxed()
}

/// BER length octets (the Connect Response fits in a TPKT, so at most two length bytes).
fn ber_len(n: usize) -> Vec<u8> {
    crate::wire::asn1::len_bytes(n.min(usize::from(u16::MAX)))
}

/// PER length determinant (up to 0x3fff).
fn per_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let n = n.min(0x3fff) as u16 | 0x8000;
        n.to_be_bytes().to_vec()
    }
}

/// Overwrites a BER / PER length at `at` of `b` with `value`, in the width already there.
fn lie_ber(b: &mut [u8], at: usize, value: u32) {
    match b.get(at).copied() {
        Some(x) if x < 0x80 => set_u8(b, at, value as u8),
        Some(0x81) => set_u8(b, at + 1, value as u8),
        Some(0x82) => set_be16(b, at + 1, value as u16),
        _ => {}
    }
}

fn lie_per(b: &mut [u8], at: usize, value: u16) {
    match b.get(at).copied() {
        Some(x) if x < 0x80 => set_u8(b, at, (value & 0x7f) as u8),
        Some(_) => set_be16(b, at, 0x8000 | (value & 0x3fff)),
        None => {}
    }
}

/// The server data blocks of a Connect Response the lab encoded (after the "McDn" key).
/// Server data blocks: (type, data).
type Blocks = Vec<(u16, Vec<u8>)>;

fn server_blocks(pdu: &[u8]) -> Option<(u8, Blocks)> {
    let at = pdu.windows(4).position(|w| w == b"McDn")?;
    let mut pos = at + 4;
    let l0 = *pdu.get(pos)?;
    let len = if l0 & 0x80 == 0 {
        pos += 1;
        usize::from(l0)
    } else {
        pos += 2;
        (usize::from(l0 & 0x3f) << 8) | usize::from(*pdu.get(pos - 1)?)
    };
    let data = pdu.get(pos..(pos + len).min(pdu.len()))?;
    let mut blocks = Vec::new();
    let mut p = 0;
    while p + 4 <= data.len() {
        let ty = rd_le16(data, p)?;
        let bl = usize::from(rd_le16(data, p + 2)?);
        if bl < 4 || p + bl > data.len() {
            break;
        }
        blocks.push((ty, data[p + 4..p + bl].to_vec()));
        p += bl;
    }
    // result: 7f 66 LEN 0a 01 RESULT
    let (_, body, _) = crate::decode::mcs::ber_tlv(pdu.get(7..)?)?;
    let result = body.get(2).copied().unwrap_or(0);
    Some((result, blocks))
}

/// Applies an mcs case to the Connect Response the lab would send.
pub fn connect_response_apply(c: &McsCase, pdu: &[u8]) -> Vec<u8> {
    let Some((mut result, mut blocks)) = server_blocks(pdu) else {
        return havocked(&c.mutations, pdu.to_vec());
    };
    let idx = |blocks: &Blocks, ty: u16| blocks.iter().position(|b| b.0 == ty);
    for m in &c.mutations {
        match m {
            McsMutation::Security {
                method,
                level,
                random_len,
                cert,
                random_len_field,
                cert_len_field,
            } => {
                let random =
                    seeded_bytes(u64::from(*method) ^ 0x7261_6e64, usize::from(*random_len));
                let cert = cert.encode();
                let mut d = Vec::new();
                d.extend_from_slice(&method.to_le_bytes());
                d.extend_from_slice(&level.to_le_bytes());
                d.extend_from_slice(
                    &random_len_field
                        .unwrap_or(random.len() as u32)
                        .to_le_bytes(),
                );
                d.extend_from_slice(&cert_len_field.unwrap_or(cert.len() as u32).to_le_bytes());
                d.extend_from_slice(&random);
                d.extend_from_slice(&cert);
                match idx(&blocks, 0x0c02) {
                    Some(i) => blocks[i].1 = d,
                    None => blocks.push((0x0c02, d)),
                }
            }
            McsMutation::SecurityShort { method, level } => {
                let mut d = method.to_le_bytes().to_vec();
                d.extend_from_slice(&level.to_le_bytes());
                match idx(&blocks, 0x0c02) {
                    Some(i) => blocks[i].1 = d,
                    None => blocks.push((0x0c02, d)),
                }
            }
            McsMutation::Result(r) => result = *r,
            McsMutation::CoreVersion(v) => {
                if let Some(i) = idx(&blocks, 0x0c01) {
                    set_le32(&mut blocks[i].1, 0, *v);
                }
            }
            McsMutation::CoreRequestedProtocols(v) => {
                if let Some(i) = idx(&blocks, 0x0c01) {
                    set_le32(&mut blocks[i].1, 4, *v);
                }
            }
            McsMutation::CoreEarlyCapabilities(v) => {
                if let Some(i) = idx(&blocks, 0x0c01) {
                    if blocks[i].1.len() < 12 {
                        blocks[i].1.resize(12, 0);
                    }
                    set_le32(&mut blocks[i].1, 8, *v);
                }
            }
            McsMutation::CoreTruncate(k) => {
                if let Some(i) = idx(&blocks, 0x0c01) {
                    blocks[i].1.truncate(usize::from(*k));
                }
            }
            McsMutation::NetIoChannel(v) => {
                if let Some(i) = idx(&blocks, 0x0c03) {
                    set_le16(&mut blocks[i].1, 0, *v);
                }
            }
            McsMutation::NetCount(v) => {
                if let Some(i) = idx(&blocks, 0x0c03) {
                    set_le16(&mut blocks[i].1, 2, *v);
                }
            }
            McsMutation::NetChannels { n, first } => {
                if let Some(i) = idx(&blocks, 0x0c03) {
                    let io = rd_le16(&blocks[i].1, 0).unwrap_or(1003);
                    let mut d = io.to_le_bytes().to_vec();
                    d.extend_from_slice(&u16::from(*n).to_le_bytes());
                    for k in 0..u16::from(*n) {
                        d.extend_from_slice(&first.wrapping_add(k).to_le_bytes());
                    }
                    if n % 2 == 1 {
                        d.extend_from_slice(&[0, 0]);
                    }
                    blocks[i].1 = d;
                }
            }
            McsMutation::DropBlock(k) if !blocks.is_empty() => {
                let i = usize::from(*k) % blocks.len();
                blocks.remove(i);
            }
            McsMutation::DuplicateBlock(k) if !blocks.is_empty() => {
                let i = usize::from(*k) % blocks.len();
                let b = blocks[i].clone();
                blocks.insert(i, b);
            }
            McsMutation::AddBlock { block_type, len } => {
                blocks.push((
                    *block_type,
                    vec![0; usize::from(*len).min(MAX_FILL as usize)],
                ));
            }
            McsMutation::BlockType { index, value } if !blocks.is_empty() => {
                let i = usize::from(*index) % blocks.len();
                blocks[i].0 = *value;
            }
            _ => {}
        }
    }
    // Encode: blocks, GCC Conference Create Response, BER Connect-Response, X.224, TPKT.
    let mut data = Vec::new();
    let mut block_at = Vec::new();
    for (ty, d) in &blocks {
        block_at.push(data.len());
        data.extend_from_slice(&ty.to_le_bytes());
        let l = u16::try_from(d.len() + 4).unwrap_or(u16::MAX);
        data.extend_from_slice(&l.to_le_bytes());
        data.extend_from_slice(d);
    }
    for m in &c.mutations {
        if let McsMutation::BlockLength { index, value } = m {
            if !block_at.is_empty() {
                let at = block_at[usize::from(*index) % block_at.len()];
                set_le16(&mut data, at + 2, *value);
            }
        }
    }
    let data = &data[..data.len().min(0x3fff)];
    // T.124 (MS-RDPBCGR 4.1.4): object key, connectPDU length, Conference Create Response with
    // nodeID 0x79f3, tag 1, result success, one user data set with the H.221 key "McDn".
    let mut ccr = vec![0x14, 0x76, 0x0a, 0x01, 0x01, 0x00, 0x01, 0xc0, 0x00];
    ccr.extend_from_slice(b"McDn");
    let blocks_len_at = ccr.len();
    ccr.extend(per_len(data.len()));
    ccr.extend_from_slice(data);
    let mut gcc = vec![0x00, 0x05, 0x00, 0x14, 0x7c, 0x00, 0x01];
    let gcc_len_at = gcc.len();
    gcc.extend(per_len(ccr.len()));
    let blocks_len_at = gcc.len() + blocks_len_at;
    gcc.extend_from_slice(&ccr);
    // DomainParameters (T.125): 34 3 0 1 0 1 65528 2
    let dp: &[u32] = &[34, 3, 0, 1, 0, 1, 65528, 2];
    let mut dpb = Vec::new();
    for v in dp {
        let bytes: Vec<u8> = if *v < 0x80 {
            vec![*v as u8]
        } else if *v < 0x8000 {
            (*v as u16).to_be_bytes().to_vec()
        } else {
            vec![0x00, (*v >> 16) as u8, (*v >> 8) as u8, *v as u8]
        };
        dpb.push(0x02);
        dpb.push(bytes.len() as u8);
        dpb.extend_from_slice(&bytes);
    }
    let mut body = vec![0x0a, 0x01, result, 0x02, 0x01, 0x00, 0x30];
    body.extend(ber_len(dpb.len()));
    body.extend_from_slice(&dpb);
    body.push(0x04);
    let ud_len_at = body.len();
    body.extend(ber_len(gcc.len()));
    let gcc_at = body.len();
    body.extend_from_slice(&gcc);
    let mut cr = vec![0x7f, 0x66];
    cr.extend(ber_len(body.len()));
    let body_at = cr.len();
    cr.extend_from_slice(&body);
    let mut out = tpkt_data(&cr);
    let (cr_at, ber_len_at) = (7usize, 9usize);
    let body_at = cr_at + body_at;
    for m in &c.mutations {
        match *m {
            McsMutation::TpktLength(v) => set_be16(&mut out, 2, v),
            McsMutation::BerLength(v) => lie_ber(&mut out, ber_len_at, v),
            McsMutation::UserDataLength(v) => lie_ber(&mut out, body_at + ud_len_at, v),
            McsMutation::GccLength(v) => lie_per(&mut out, body_at + gcc_at + gcc_len_at, v),
            McsMutation::BlocksLength(v) => lie_per(&mut out, body_at + gcc_at + blocks_len_at, v),
            McsMutation::Havoc(ref h) => h.apply(&mut out),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// channels: Attach User Confirm, Channel Join Confirm (T.125 PER)

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChannelsMutation {
    /// The DomainMCSPDU choice byte (0x2e Attach User Confirm, 0x3e Channel Join Confirm).
    PduType(u8),
    /// The result byte (0 rt-successful).
    Result(u8),
    /// A big-endian u16 at `at` bytes into the MCS PDU (initiator, channel ids).
    U16 {
        at: u8,
        value: u16,
    },
    Havoc(Havoc),
}

/// Which of the lab's channel-connection writes (0 the Attach User Confirm, then the joins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsCase {
    pub write: u8,
    pub mutations: Vec<ChannelsMutation>,
}

fn channels_strategy() -> BoxedStrategy<ChannelsCase> {
    let m = prop_oneof![
        1 => u8s(&[0x2e, 0x3e, 0x2c, 0x20, 0x22]).prop_map(ChannelsMutation::PduType),
        1 => u8s(&[1, 2, 14, 15]).prop_map(ChannelsMutation::Result),
        2 => ((1u8..8), u16s(&[0x03e9, 0x03ea, 0x03eb])).prop_map(|(at, value)| ChannelsMutation::U16 { at, value }),
        2 => Havoc::strategy(16).prop_map(ChannelsMutation::Havoc),
    ];
    // Mostly the Attach User Confirm: a client that skips channel joins gets nothing else.
    (
        prop_oneof![3 => Just(0u8), 1 => 1u8..4],
        prop::collection::vec(m, 1..=3),
    )
        .prop_map(|(write, mutations)| ChannelsCase { write, mutations })
        .boxed()
}

/// Applies a channels case to the `index`-th channel-connection write; `None` for other writes.
pub fn channels_apply(c: &ChannelsCase, index: usize, pdu: &[u8]) -> Option<Vec<u8>> {
    if usize::from(c.write) != index {
        return None;
    }
    let mut out = pdu.to_vec();
    for m in &c.mutations {
        match *m {
            ChannelsMutation::PduType(v) => set_u8(&mut out, 7, v),
            ChannelsMutation::Result(v) => set_u8(&mut out, 8, v),
            ChannelsMutation::U16 { at, value } => set_be16(&mut out, 7 + usize::from(at), value),
            ChannelsMutation::Havoc(ref h) => h.apply(&mut out),
        }
    }
    Some(out)
}

/// The Channel Join Confirm (rt-successful) answering `frame` when it is a Channel Join Request
/// (T.125 PER, MS-RDPBCGR 2.2.1.8), else `None`.
pub fn join_confirm_for(frame: &[u8]) -> Option<Vec<u8>> {
    use crate::wire::mcs::DomainPdu;
    if frame.first() != Some(&3) {
        return None;
    }
    let DomainPdu::ChannelJoinRequest {
        initiator,
        channel_id,
    } = DomainPdu::parse(frame.get(7..)?).ok()?
    else {
        return None;
    };
    let confirm = DomainPdu::ChannelJoinConfirm {
        result: 0,
        initiator: Some(initiator),
        requested: Some(channel_id),
        channel_id: Some(channel_id),
    };
    Some(tpkt_data(&confirm.emit(&[])?))
}

// ---------------------------------------------------------------------------------------------
// licensing (MS-RDPELE 2.2.2, MS-RDPBCGR 2.2.1.12)

/// The licensing message to send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum LicensingMessage {
    /// The lab's own (a license error alert STATUS_VALID_CLIENT).
    #[default]
    Original,
    /// LICENSE_ERROR_MESSAGE with these codes and a blob of `blob_len` bytes.
    ErrorAlert {
        code: u32,
        transition: u32,
        blob_type: u16,
        blob_len: u16,
    },
    /// SERVER_LICENSE_REQUEST with a server certificate.
    Request {
        company_len: u16,
        product_len: u16,
        key_exchange: u32,
        cert: CertSpec,
        scopes: u8,
        scope_count: Option<u32>,
    },
    /// SERVER_PLATFORM_CHALLENGE with an encrypted challenge of `len` bytes.
    PlatformChallenge { len: u16 },
    /// SERVER_NEW_LICENSE (3) or SERVER_UPGRADE_LICENSE (4) with `len` bytes of license info.
    NewLicense { msg_type: u8, len: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LicensingMutation {
    /// The basic security header flags (SEC_LICENSE_PKT 0x0080).
    SecurityFlags(u16),
    MsgType(u8),
    PreambleFlags(u8),
    /// wMsgSize (default: the real size).
    MsgSize(u16),
    Havoc(Havoc),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicensingCase {
    pub message: LicensingMessage,
    pub mutations: Vec<LicensingMutation>,
}

fn licensing_strategy() -> BoxedStrategy<LicensingCase> {
    let msg = prop_oneof![
        1 => Just(LicensingMessage::Original),
        3 => (
            u32s(&[7, 8, 3, 4, 5, 6, 0xb]),
            u32s(&[1, 2, 3, 4]),
            u16s(&[4]),
            u16s(&[0, 1, 4]),
        )
            .prop_map(|(code, transition, blob_type, blob_len)| LicensingMessage::ErrorAlert {
                code,
                transition,
                blob_type,
                blob_len: blob_len.min(MAX_FILL as u16),
            }),
        4 => (
            u16s(&[0, 1, 2, 64]),
            u16s(&[0, 1, 2, 64]),
            u32s(&[1]),
            cert_strategy(),
            0u8..4,
            prop::option::weighted(0.2, u32s(&[0, 1, 0xffff])),
        )
            .prop_map(|(company_len, product_len, key_exchange, cert, scopes, scope_count)| {
                LicensingMessage::Request {
                    company_len: company_len.min(MAX_FILL as u16),
                    product_len: product_len.min(MAX_FILL as u16),
                    key_exchange,
                    cert,
                    scopes,
                    scope_count,
                }
            }),
        1 => u16s(&[0, 10, 16]).prop_map(|len| LicensingMessage::PlatformChallenge { len: len.min(MAX_FILL as u16) }),
        1 => (prop_oneof![Just(3u8), Just(4u8)], u16s(&[0, 16])).prop_map(|(msg_type, len)| LicensingMessage::NewLicense { msg_type, len: len.min(MAX_FILL as u16) }),
    ];
    let m = prop_oneof![
        1 => u16s(&[0x0080, 0x0088, 0x0008, 0x0200]).prop_map(LicensingMutation::SecurityFlags),
        1 => u8s(&[1, 2, 3, 4, 0xff]).prop_map(LicensingMutation::MsgType),
        1 => u8s(&[2, 3, 0x80, 0x82, 0x83]).prop_map(LicensingMutation::PreambleFlags),
        1 => u16s(&[4, 16]).prop_map(LicensingMutation::MsgSize),
        2 => Havoc::strategy(128).prop_map(LicensingMutation::Havoc),
    ];
    (msg, prop::collection::vec(m, 0..=2))
        .prop_map(|(message, mutations)| LicensingCase { message, mutations })
        .boxed()
}

fn blob(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + data.len());
    share::LicenseBlob::emit(ty, data, &mut b);
    b
}

/// Applies a licensing case to the licensing PDU the lab would send.
pub fn licensing_apply(c: &LicensingCase, pdu: &[u8]) -> Vec<u8> {
    let original = sdi_split(pdu).map(|s| s.payload.to_vec());
    let (msg_type, body): (u8, Vec<u8>) = match &c.message {
        LicensingMessage::Original => match original.as_ref().filter(|p| p.len() >= 8) {
            Some(p) => (p[4], p[8..].to_vec()),
            None => (0xff, Vec::new()),
        },
        LicensingMessage::ErrorAlert {
            code,
            transition,
            blob_type,
            blob_len,
        } => {
            let mut b = code.to_le_bytes().to_vec();
            b.extend_from_slice(&transition.to_le_bytes());
            b.extend(blob(*blob_type, &vec![0x41; usize::from(*blob_len)]));
            (0xff, b)
        }
        LicensingMessage::Request {
            company_len,
            product_len,
            key_exchange,
            cert,
            scopes,
            scope_count,
        } => {
            let mut b = seeded_bytes(0x6c69_6365, 32); // ServerRandom
            b.extend_from_slice(&0x0006_0000u32.to_le_bytes()); // ProductInfo.dwVersion
            b.extend_from_slice(&u32::from(*company_len).to_le_bytes());
            b.extend(std::iter::repeat_n(0x41, usize::from(*company_len)));
            b.extend_from_slice(&u32::from(*product_len).to_le_bytes());
            b.extend(std::iter::repeat_n(0x42, usize::from(*product_len)));
            b.extend(blob(0x000d, &key_exchange.to_le_bytes())); // BB_KEY_EXCHG_ALG_BLOB
            b.extend(blob(0x0003, &cert.encode())); // BB_CERTIFICATE_BLOB
            b.extend_from_slice(&scope_count.unwrap_or(u32::from(*scopes)).to_le_bytes());
            for _ in 0..*scopes {
                b.extend(blob(0x000e, b"microsoft.com\0")); // BB_SCOPE_BLOB
            }
            (0x01, b)
        }
        LicensingMessage::PlatformChallenge { len } => {
            let mut b = 0u32.to_le_bytes().to_vec();
            b.extend(blob(0x0009, &seeded_bytes(7, usize::from(*len))));
            b.extend(seeded_bytes(8, 16));
            (0x02, b)
        }
        LicensingMessage::NewLicense { msg_type, len } => {
            let mut b = blob(0x0009, &seeded_bytes(9, usize::from(*len)));
            b.extend(seeded_bytes(10, 16));
            (*msg_type, b)
        }
    };
    // Basic security header (SEC_LICENSE_PKT), licensing preamble (PREAMBLE_VERSION_3_0).
    let mut p = share::secured(
        share::SEC_LICENSE_PKT,
        &share::license_message(msg_type, share::PREAMBLE_VERSION_3_0, &body),
    );
    for m in &c.mutations {
        match *m {
            LicensingMutation::SecurityFlags(v) => set_le16(&mut p, 0, v),
            LicensingMutation::MsgType(v) => set_u8(&mut p, 4, v),
            LicensingMutation::PreambleFlags(v) => set_u8(&mut p, 5, v),
            LicensingMutation::MsgSize(v) => set_le16(&mut p, 6, v),
            _ => {}
        }
    }
    havocked(&c.mutations, send_data_indication(Some(pdu), &p))
}

// ---------------------------------------------------------------------------------------------
// capabilities: the Demand Active PDU (MS-RDPBCGR 2.2.1.13.1)

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CapsMutation {
    DropCap(u8),
    DuplicateCap(u8),
    AddCap {
        cap_type: u16,
        len: u16,
    },
    CapType {
        index: u8,
        value: u16,
    },
    /// A byte of capability set `index`'s data (mod its length).
    CapByte {
        index: u8,
        at: u16,
        value: u8,
    },
    /// Cut capability set `index`'s data after `keep` bytes (its length follows).
    CapTruncate {
        index: u8,
        keep: u16,
    },
    /// Lies, written after the rebuild:
    CapLength {
        index: u8,
        value: u16,
    },
    TotalLength(u16),
    PduType(u16),
    ShareId(u32),
    SourceDescriptorLength(u16),
    CombinedLength(u16),
    NumberCapabilities(u16),
    Havoc(Havoc),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsCase {
    pub mutations: Vec<CapsMutation>,
}

fn caps_strategy() -> BoxedStrategy<CapsCase> {
    let cap_types: &[u64] = &[1, 2, 3, 5, 8, 9, 10, 13, 14, 20, 26, 28, 29, 30];
    let m = prop_oneof![
        1 => (0u8..16).prop_map(CapsMutation::DropCap),
        1 => (0u8..16).prop_map(CapsMutation::DuplicateCap),
        1 => (u16s(cap_types), u16s(&[0, 4, 8, 24])).prop_map(|(cap_type, len)| CapsMutation::AddCap { cap_type, len: len.min(MAX_FILL as u16) }),
        1 => ((0u8..16), u16s(cap_types)).prop_map(|(index, value)| CapsMutation::CapType { index, value }),
        3 => ((0u8..16), u16s(&[]), u8s(&[])).prop_map(|(index, at, value)| CapsMutation::CapByte { index, at, value }),
        1 => ((0u8..16), u16s(&[0, 1, 2, 4])).prop_map(|(index, keep)| CapsMutation::CapTruncate { index, keep }),
        1 => ((0u8..16), u16s(&[0, 3, 4])).prop_map(|(index, value)| CapsMutation::CapLength { index, value }),
        1 => u16s(&[]).prop_map(CapsMutation::TotalLength),
        1 => u16s(&[0x11, 0x13, 0x16, 0x17, 0x01]).prop_map(CapsMutation::PduType),
        1 => u32s(&[0x103ea]).prop_map(CapsMutation::ShareId),
        1 => u16s(&[4]).prop_map(CapsMutation::SourceDescriptorLength),
        1 => u16s(&[]).prop_map(CapsMutation::CombinedLength),
        1 => u16s(&[]).prop_map(CapsMutation::NumberCapabilities),
        2 => Havoc::strategy(400).prop_map(CapsMutation::Havoc),
    ];
    prop::collection::vec(m, 1..=3)
        .prop_map(|mutations| CapsCase { mutations })
        .boxed()
}

/// Applies a capabilities case to the Demand Active the lab would send.
pub fn demand_active_apply(c: &CapsCase, pdu: &[u8]) -> Vec<u8> {
    let havoc_only = |pdu: &[u8]| havocked(&c.mutations, pdu.to_vec());
    let Some(sdi) = sdi_split(pdu) else {
        return havoc_only(pdu);
    };
    let p = sdi.payload;
    // Share Control Header: totalLength pduType pduSource; then shareId, lengthSourceDescriptor,
    // lengthCombinedCapabilities, sourceDescriptor, numberCapabilities, pad2Octets, sets, sessionId.
    let (Some(lsd), Some(lcc)) = (rd_le16(p, 10), rd_le16(p, 12)) else {
        return havoc_only(pdu);
    };
    let caps_at = 14 + usize::from(lsd);
    let Some(head) = p.get(..caps_at) else {
        return havoc_only(pdu);
    };
    let mut caps: Blocks = Vec::new();
    let mut q = caps_at + 4;
    let end = (caps_at + usize::from(lcc)).min(p.len());
    while q + 4 <= end {
        let ty = rd_le16(p, q).unwrap_or(0);
        let l = usize::from(rd_le16(p, q + 2).unwrap_or(0));
        if l < 4 || q + l > end {
            break;
        }
        caps.push((ty, p[q + 4..q + l].to_vec()));
        q += l;
    }
    let tail = p.get(end..).unwrap_or(&[]).to_vec();
    let pick =
        |caps: &Vec<(u16, Vec<u8>)>, i: u8| (!caps.is_empty()).then(|| usize::from(i) % caps.len());
    for m in &c.mutations {
        match *m {
            CapsMutation::DropCap(i) => {
                if let Some(i) = pick(&caps, i) {
                    caps.remove(i);
                }
            }
            CapsMutation::DuplicateCap(i) => {
                if let Some(i) = pick(&caps, i) {
                    let x = caps[i].clone();
                    caps.insert(i, x);
                }
            }
            CapsMutation::AddCap { cap_type, len } => {
                caps.push((cap_type, vec![0; usize::from(len)]));
            }
            CapsMutation::CapType { index, value } => {
                if let Some(i) = pick(&caps, index) {
                    caps[i].0 = value;
                }
            }
            CapsMutation::CapByte { index, at, value } => {
                if let Some(i) = pick(&caps, index) {
                    let d = &mut caps[i].1;
                    if !d.is_empty() {
                        let k = usize::from(at) % d.len();
                        d[k] = value;
                    }
                }
            }
            CapsMutation::CapTruncate { index, keep } => {
                if let Some(i) = pick(&caps, index) {
                    caps[i].1.truncate(usize::from(keep));
                }
            }
            _ => {}
        }
    }
    let mut sets = Vec::new();
    let mut set_at = Vec::new();
    for (ty, d) in &caps {
        set_at.push(sets.len());
        sets.extend_from_slice(&ty.to_le_bytes());
        sets.extend_from_slice(&u16::try_from(d.len() + 4).unwrap_or(u16::MAX).to_le_bytes());
        sets.extend_from_slice(d);
    }
    let mut out = head.to_vec();
    let combined_at = out.len();
    out.extend_from_slice(&(caps.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&sets);
    out.extend_from_slice(&tail);
    let combined = u16::try_from(4 + sets.len()).unwrap_or(u16::MAX);
    set_le16(&mut out, 12, combined);
    let total = u16::try_from(out.len()).unwrap_or(u16::MAX);
    set_le16(&mut out, 0, total);
    for m in &c.mutations {
        match *m {
            CapsMutation::CapLength { index, value } if !set_at.is_empty() => {
                let at = set_at[usize::from(index) % set_at.len()];
                set_le16(&mut out, combined_at + 4 + at + 2, value);
            }
            CapsMutation::TotalLength(v) => set_le16(&mut out, 0, v),
            CapsMutation::PduType(v) => set_le16(&mut out, 2, v),
            CapsMutation::ShareId(v) => set_le32(&mut out, 6, v),
            CapsMutation::SourceDescriptorLength(v) => set_le16(&mut out, 10, v),
            CapsMutation::CombinedLength(v) => set_le16(&mut out, 12, v),
            CapsMutation::NumberCapabilities(v) => set_le16(&mut out, combined_at, v),
            _ => {}
        }
    }
    havocked(&c.mutations, send_data_indication(Some(pdu), &out))
}

// ---------------------------------------------------------------------------------------------
// error and disconnect PDUs (MS-RDPBCGR 2.2.5.1 Set Error Info, 2.2.2.3 DPUM, 2.2.3.1 Deactivate All)

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "pdu", rename_all = "snake_case")]
pub enum ErrorPdu {
    SetErrorInfo {
        code: u32,
    },
    /// Disconnect Provider Ultimatum with this raw second byte (the reason is its top 3 bits).
    Ultimatum {
        reason_byte: u8,
    },
    DeactivateAll {
        source_len: u16,
    },
    /// A Share Data PDU with this pduType2 and `len` zero bytes of data.
    ShareData {
        pdu_type2: u8,
        len: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCase {
    pub pdus: Vec<ErrorPdu>,
    pub havoc: Vec<Havoc>,
}

impl Default for ErrorCase {
    fn default() -> Self {
        ErrorCase {
            pdus: vec![ErrorPdu::SetErrorInfo { code: 5 }],
            havoc: Vec::new(),
        }
    }
}

fn error_strategy() -> BoxedStrategy<ErrorCase> {
    let pdu = prop_oneof![
        4 => u32s(&[1, 2, 3, 4, 5, 6, 7, 9, 0xb, 0xc, 0x10c9, 0x1000, 0x0401]).prop_map(|code| ErrorPdu::SetErrorInfo { code }),
        3 => u8s(&[0x80, 0x81, 0x82, 0x83, 0xa0]).prop_map(|reason_byte| ErrorPdu::Ultimatum { reason_byte }),
        1 => u16s(&[0, 1]).prop_map(|source_len| ErrorPdu::DeactivateAll { source_len: source_len.min(MAX_FILL as u16) }),
        1 => (u8s(&[0x1f, 0x26, 0x27, 0x28, 0x2c, 0x2f, 0x36, 0x37, 0x38]), u16s(&[0, 4])).prop_map(|(pdu_type2, len)| ErrorPdu::ShareData { pdu_type2, len: len.min(MAX_FILL as u16) }),
    ];
    (prop::collection::vec(pdu, 1..=3), havocs(64, 1))
        .prop_map(|(pdus, havoc)| ErrorCase { pdus, havoc })
        .boxed()
}

/// The lab's pduSource and shareId in the share PDUs it writes.
const LAB_PDU_SOURCE: u16 = 1002;
const LAB_SHARE_ID: u32 = 0x0001_03ea;

/// Share Data PDU payload (Share Control Header + Share Data Header + data).
fn share_data(pdu_type2: u8, data: &[u8]) -> Vec<u8> {
    share::ShareDataHeader::new(LAB_SHARE_ID, pdu_type2, data.len()).emit_pdu(LAB_PDU_SOURCE, data)
}

/// The PDUs an error case sends; `template` is a Send Data Indication the lab sent (for the
/// initiator and channel).
pub fn error_pdus(c: &ErrorCase, template: Option<&[u8]>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = c
        .pdus
        .iter()
        .map(|p| match *p {
            ErrorPdu::SetErrorInfo { code } => {
                send_data_indication(template, &share_data(0x2f, &code.to_le_bytes()))
            }
            ErrorPdu::Ultimatum { reason_byte } => tpkt_data(&[0x21, reason_byte]),
            ErrorPdu::DeactivateAll { source_len } => {
                let descriptor = vec![0u8; usize::from(source_len)];
                let p = share::deactivate_all(LAB_PDU_SOURCE, LAB_SHARE_ID, &descriptor);
                send_data_indication(template, &p)
            }
            ErrorPdu::ShareData { pdu_type2, len } => {
                send_data_indication(template, &share_data(pdu_type2, &vec![0; usize::from(len)]))
            }
        })
        .collect();
    if let Some(first) = out.first_mut() {
        havoc::apply_all(&c.havoc, first);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::{gcc, mcs as imcs};

    #[test]
    fn a_join_request_gets_its_confirm() {
        let req = ironrdp_core::encode_vec(&ironrdp_pdu::x224::X224(
            imcs::McsMessage::ChannelJoinRequest(imcs::ChannelJoinRequest {
                initiator_id: 1007,
                channel_id: 1004,
            }),
        ))
        .unwrap();
        assert_eq!(
            join_confirm_for(&req),
            Some(vec![
                3, 0, 0, 15, 2, 0xf0, 0x80, 0x3e, 0, 0, 6, 3, 0xec, 3, 0xec
            ]),
            "rt-successful, initiator, requested and joined channel"
        );
        assert_eq!(join_confirm_for(&req[..11]), None, "cut short");
        let mut other = req.clone();
        other[7] = 0x28;
        assert_eq!(join_confirm_for(&other), None, "not a join request");
    }

    fn lab_connect_response() -> Vec<u8> {
        let blocks = gcc::ServerGccBlocks {
            core: gcc::ServerCoreData {
                version: gcc::RdpVersion::V5_PLUS,
                optional_data: gcc::ServerCoreOptionalData {
                    client_requested_protocols: Some(ironrdp_pdu::nego::SecurityProtocol::empty()),
                    early_capability_flags: None,
                },
            },
            network: gcc::ServerNetworkData {
                channel_ids: vec![1004],
                io_channel: 1003,
            },
            security: gcc::ServerSecurityData::no_security(),
            message_channel: None,
            multi_transport_channel: None,
        };
        let cr = imcs::ConnectResponse {
            conference_create_response: gcc::ConferenceCreateResponse::new(1002, blocks).unwrap(),
            called_connect_id: 0,
            domain_parameters: imcs::DomainParameters::target(),
        };
        let body = ironrdp_core::encode_vec(&cr).unwrap();
        tpkt_data(&body)
    }

    fn ironrdp_reads(pdu: &[u8]) -> Result<imcs::ConnectResponse, String> {
        ironrdp_core::decode::<ironrdp_pdu::x224::X224<ironrdp_pdu::x224::X224Data<'_>>>(pdu)
            .map_err(|e| e.to_string())
            .and_then(|x| {
                ironrdp_core::decode::<imcs::ConnectResponse>(x.0.data.as_ref())
                    .map_err(|e| format!("{e:?}"))
            })
    }

    /// The rebuilt Connect Response is what ironrdp encodes: without edits it decodes to the same
    /// blocks, and a standard-security edit with a proprietary key decodes with that key.
    #[test]
    fn connect_response_rebuild_decodes() {
        let orig = lab_connect_response();
        ironrdp_reads(&orig).unwrap();
        let same = connect_response_apply(&McsCase::default(), &orig);
        let cr = ironrdp_reads(&same).unwrap();
        assert_eq!(
            cr.conference_create_response
                .gcc_blocks()
                .network
                .io_channel,
            1003
        );
        let case = McsCase {
            mutations: vec![McsMutation::Security {
                method: 2,
                level: 2,
                random_len: 32,
                cert: CertSpec::Proprietary(Proprietary::consistent(Modulus::Zero, 72, 0x10001, 1)),
                random_len_field: None,
                cert_len_field: None,
            }],
        };
        let pdu = connect_response_apply(&case, &orig);
        let cr = ironrdp_reads(&pdu).unwrap();
        let sec = &cr.conference_create_response.gcc_blocks().security;
        assert_eq!(sec.server_cert.len(), 16 + 20 + 72 + 4 + 72);
        let sd = crate::rdpsec::gcc::parse_connect_response(&pdu).unwrap();
        assert_eq!(sd.server_certificate, sec.server_cert);
        // An all-zero modulus: refused as a key, not a division by zero.
        assert!(matches!(
            crate::rdpsec::cert::server_public_key(&sd.server_certificate),
            Err(crate::rdpsec::cert::CertError::Unusable(_))
        ));
    }

    /// The mutator rewrites the Certificate record of a TLS 1.2 flight with consistent lengths,
    /// follows records across writes, and mutates once.
    #[test]
    fn tls_certificate_record_is_rewritten_once() {
        let der = vec![0x30u8; 40];
        let mut cert_msg = vec![11, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        set_be24(&mut cert_msg, 1, (der.len() + 6) as u32);
        set_be24(&mut cert_msg, 4, (der.len() + 3) as u32);
        set_be24(&mut cert_msg, 7, der.len() as u32);
        cert_msg.extend_from_slice(&der);
        let record = |body: &[u8]| {
            let mut r = vec![22, 3, 3, 0, 0];
            set_be16(&mut r, 3, body.len() as u16);
            r.extend_from_slice(body);
            r
        };
        let hello = record(&[2, 0, 0, 2, 3, 3]);
        let cert = record(&cert_msg);
        let case = TlsCase {
            target: TlsTarget::Certificate,
            mutations: vec![TlsMutation::CertTruncate { keep: 10 }],
        };
        let mut m = TlsWriteMutator::new(case);
        // The ServerHello split over two writes (inside its body): nothing to change.
        assert_eq!(m.on_write(&hello[..7]), None);
        assert_eq!(m.on_write(&hello[7..]), None);
        let out = m.on_write(&cert).expect("certificate rewritten");
        assert!(m.done);
        // 30 bytes less, every length consistent.
        assert_eq!(out.len(), cert.len() - 30);
        assert_eq!(
            usize::from(u16::from_be_bytes([out[3], out[4]])),
            out.len() - 5
        );
        assert_eq!(rd_be24(&out, 6), Some(16));
        assert_eq!(rd_be24(&out, 9), Some(13));
        assert_eq!(rd_be24(&out, 12), Some(10));
        assert_eq!(m.on_write(&cert), None, "mutates once");
        // Under TLS 1.3 the first encrypted record stands in for the certificate.
        let mut m = TlsWriteMutator::new(TlsCase {
            target: TlsTarget::Certificate,
            mutations: vec![TlsMutation::CertTruncate { keep: 3 }],
        });
        let mut enc = vec![23, 3, 3, 0, 20];
        enc.extend_from_slice(&[7; 20]);
        assert_eq!(m.on_write(&enc), Some(vec![23, 3, 3, 0, 3, 7, 7, 7]));
    }

    #[test]
    fn cases_are_a_function_of_stage_seed_and_case() {
        for stage in MutateStage::ALL {
            for k in 0..20 {
                assert_eq!(case_for(stage, 7, k), case_for(stage, 7, k));
                assert_eq!(case_for(stage, 7, k).stage(), stage);
            }
            assert_ne!(
                (0..20).map(|k| case_for(stage, 7, k)).collect::<Vec<_>>(),
                (0..20).map(|k| case_for(stage, 8, k)).collect::<Vec<_>>()
            );
        }
    }
}
