//! Stage `channels`: mutations of the channel connection PDUs (MS-RDPBCGR 2.2.1.5-2.2.1.8): MCS
//! Erect Domain Request, Attach User Request and Channel Join Requests (T.125 DomainMCSPDU, PER):
//! choice bytes, PER integers, initiator and channel ids, skipped and extra PDUs.
//!
//! The joins depend on what the server assigned (user channel from the Attach User Confirm, I/O
//! and static channel ids from the Connect Response), so a case is sent in two phases: erect domain
//! and attach user, then, after the confirm, the joins.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u32s, u8s, upto};
use super::EncodeCtx;
use crate::wire::mcs::{self, DomainPdu};

/// MCS user ids are sent as offsets from 1001 (T.125 UserId, MS-RDPBCGR 2.2.1.6).
pub use crate::wire::mcs::USER_ID_BASE;
/// Most extra joins a case adds.
pub const MAX_EXTRA_JOINS: u64 = 64;

/// One structured mutation of the channel connection PDUs; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum ChannelsMutation {
    /// The Erect Domain Request choice byte (default 0x04).
    ErectChoice(u8),
    ErectSubHeight(u32),
    ErectSubInterval(u32),
    /// The PER length byte of subHeight (default: the real length).
    ErectHeightLength(u8),
    SkipErect,
    /// The Attach User Request choice byte (default 0x28).
    AttachChoice(u8),
    /// Bytes after the Attach User Request.
    AttachTrailing {
        len: u16,
    },
    SkipAttach,
    /// The Channel Join Request choice byte (default 0x38).
    JoinChoice(u8),
    /// The initiator of every join, as sent (user id - 1001; default: the assigned user).
    JoinInitiator(u16),
    /// The channel id of join `index` (mod the number of joins).
    JoinChannel {
        index: u8,
        id: u16,
    },
    /// Append a join for this channel id.
    ExtraJoin {
        id: u16,
    },
    /// Append `count` joins of the I/O channel.
    RepeatJoins(u8),
    DropJoin(u8),
    /// Keep only this many bytes of each join's MCS PDU.
    JoinTruncate(u8),
    /// The TPKT length of PDU `pdu` (0 erect, 1 attach, 2.. joins).
    TpktLength {
        pdu: u8,
        value: u16,
    },
    /// Byte havoc on PDU `pdu` (0 erect, 1 attach, 2.. joins).
    Havoc {
        pdu: u8,
        op: Havoc,
    },
}

/// A case of the `channels` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsCase {
    pub mutations: Vec<ChannelsMutation>,
}

/// TPKT + X.224 Data header around an MCS PDU (`tpkt_length` overrides the real length).
pub(super) fn wrap(mcs: &[u8], tpkt_length: Option<u16>) -> Vec<u8> {
    let total = 7 + mcs.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(
        &tpkt_length
            .unwrap_or(total.min(0xffff) as u16)
            .to_be_bytes(),
    );
    out.extend_from_slice(&[0x02, 0xf0, 0x80]);
    out.extend_from_slice(mcs);
    out
}

/// PER INTEGER with a length determinant (T.125 uses unconstrained INTEGERs here).
fn per_uint(v: u32, len_override: Option<u8>) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count().min(3);
    let c = &b[skip..];
    let mut out = vec![len_override.unwrap_or(c.len() as u8)];
    out.extend_from_slice(c);
    out
}

fn tpkt_override(mutations: &[ChannelsMutation], pdu: usize) -> Option<u16> {
    mutations.iter().rev().find_map(|m| match m {
        ChannelsMutation::TpktLength { pdu: p, value } if usize::from(*p) == pdu => Some(*value),
        _ => None,
    })
}

fn havoc_for(mutations: &[ChannelsMutation], pdu: usize, bytes: &mut Vec<u8>) {
    for m in mutations {
        if let ChannelsMutation::Havoc { pdu: p, op } = m {
            if usize::from(*p) == pdu {
                op.apply(bytes);
            }
        }
    }
}

/// Phase one: Erect Domain Request and Attach User Request, as one write.
pub fn encode_phase_one(mutations: &[ChannelsMutation]) -> Vec<u8> {
    use ChannelsMutation as M;
    let (mut erect_choice, mut height, mut interval, mut height_len) = (0x04u8, 0u32, 0u32, None);
    let (mut skip_erect, mut skip_attach) = (false, false);
    let mut attach_choice = 0x28u8;
    let mut trailing = 0u16;
    for m in mutations {
        match m {
            M::ErectChoice(v) => erect_choice = *v,
            M::ErectSubHeight(v) => height = *v,
            M::ErectSubInterval(v) => interval = *v,
            M::ErectHeightLength(v) => height_len = Some(*v),
            M::SkipErect => skip_erect = true,
            M::AttachChoice(v) => attach_choice = *v,
            M::AttachTrailing { len } => trailing = *len,
            M::SkipAttach => skip_attach = true,
            _ => {}
        }
    }
    let mut out = Vec::new();
    if !skip_erect {
        let mut mcs = vec![erect_choice];
        mcs.extend(per_uint(height, height_len));
        mcs.extend(per_uint(interval, None));
        let mut pdu = wrap(&mcs, tpkt_override(mutations, 0));
        havoc_for(mutations, 0, &mut pdu);
        out.extend(pdu);
    }
    if !skip_attach {
        let mut mcs = vec![attach_choice];
        mcs.extend(std::iter::repeat_n(
            0u8,
            usize::from(trailing).min(havoc::MAX_INSERT as usize),
        ));
        let mut pdu = wrap(&mcs, tpkt_override(mutations, 1));
        havoc_for(mutations, 1, &mut pdu);
        out.extend(pdu);
    }
    out
}

/// Phase two: the Channel Join Requests, one PDU each (user channel, I/O channel, static channels).
pub fn encode_joins(mutations: &[ChannelsMutation], ctx: &EncodeCtx) -> Vec<Vec<u8>> {
    use ChannelsMutation as M;
    let user = ctx.user_channel.unwrap_or(USER_ID_BASE);
    let mut ids: Vec<u16> = vec![user, ctx.io_channel];
    ids.extend_from_slice(&ctx.static_channels);
    let mut choice = 0x38u8;
    let mut initiator = user.wrapping_sub(USER_ID_BASE);
    let mut truncate = None;
    for m in mutations {
        match m {
            M::JoinChoice(v) => choice = *v,
            M::JoinInitiator(v) => initiator = *v,
            M::JoinChannel { index, id } if !ids.is_empty() => {
                let k = usize::from(*index) % ids.len();
                ids[k] = *id;
            }
            M::ExtraJoin { id } => ids.push(*id),
            M::RepeatJoins(n) => {
                let n = u64::from(*n).min(MAX_EXTRA_JOINS) as usize;
                ids.extend(std::iter::repeat_n(ctx.io_channel, n));
            }
            M::DropJoin(i) if !ids.is_empty() => {
                let k = usize::from(*i) % ids.len();
                ids.remove(k);
            }
            M::JoinTruncate(k) => truncate = Some(usize::from(*k)),
            _ => {}
        }
    }
    ids.iter()
        .enumerate()
        .map(|(k, id)| {
            let mut mcs = vec![choice];
            mcs.extend_from_slice(&initiator.to_be_bytes());
            mcs.extend_from_slice(&id.to_be_bytes());
            if let Some(t) = truncate {
                mcs.truncate(t);
            }
            let mut pdu = wrap(&mcs, tpkt_override(mutations, 2 + k));
            havoc_for(mutations, 2 + k, &mut pdu);
            pdu
        })
        .collect()
}

/// A reply of the channel connection (MCS domain PDU in X.224 data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainReply {
    /// Attach User Confirm: result and the assigned user id (absolute).
    AttachConfirm { result: u8, user: Option<u16> },
    /// Channel Join Confirm: result and the channel id.
    JoinConfirm { result: u8, channel: Option<u16> },
    /// Disconnect Provider Ultimatum.
    Ultimatum,
    /// Any other well-formed domain PDU (choice number).
    Other(u8),
}

/// Reads the MCS domain PDU of a TPKT/X.224 data PDU. None when it is not one.
pub fn domain_reply(pdu: &[u8]) -> Option<DomainReply> {
    if pdu.get(4..7)? != [0x02, 0xf0, 0x80] {
        return None;
    }
    let b = pdu.get(7..)?;
    let choice = *b.first()? >> 2;
    Some(match DomainPdu::parse(b) {
        Ok(DomainPdu::AttachUserConfirm { result, initiator }) => DomainReply::AttachConfirm {
            result,
            user: initiator,
        },
        Ok(DomainPdu::ChannelJoinConfirm {
            result, channel_id, ..
        }) => DomainReply::JoinConfirm {
            result,
            channel: channel_id,
        },
        // A confirm without its result byte is no reply.
        _ if choice == mcs::ATTACH_USER_CONFIRM || choice == mcs::CHANNEL_JOIN_CONFIRM => {
            return None
        }
        _ if choice == mcs::DISCONNECT_PROVIDER_ULTIMATUM => DomainReply::Ultimatum,
        _ => DomainReply::Other(choice),
    })
}

/// One mutation, boundary-biased.
pub fn mutation() -> BoxedStrategy<ChannelsMutation> {
    use ChannelsMutation as M;
    let ids = &[1001, 1002, 1003, 1004, 1005, 1006, 1007];
    let pdu = || upto(8, &[]).prop_map(|v| v as u8);
    prop_oneof![
        2 => u8s(&[0x04, 0x28, 0x38, 0x20]).prop_map(M::ErectChoice),
        1 => u32s(&[]).prop_map(M::ErectSubHeight),
        1 => u32s(&[]).prop_map(M::ErectSubInterval),
        1 => u8s(&[]).prop_map(M::ErectHeightLength),
        1 => Just(M::SkipErect),
        2 => u8s(&[0x04, 0x28, 0x38]).prop_map(M::AttachChoice),
        1 => upto(havoc::MAX_INSERT, &[]).prop_map(|v| M::AttachTrailing { len: v as u16 }),
        1 => Just(M::SkipAttach),
        2 => u8s(&[0x04, 0x28, 0x38, 0x3a]).prop_map(M::JoinChoice),
        2 => u16s(&[1, 2, 3]).prop_map(M::JoinInitiator),
        3 => (u8s(&[]), u16s(ids)).prop_map(|(index, id)| M::JoinChannel { index, id }),
        2 => u16s(ids).prop_map(|id| M::ExtraJoin { id }),
        1 => upto(MAX_EXTRA_JOINS, &[]).prop_map(|v| M::RepeatJoins(v as u8)),
        1 => u8s(&[]).prop_map(M::DropJoin),
        1 => upto(5, &[]).prop_map(|v| M::JoinTruncate(v as u8)),
        2 => (pdu(), u16s(&[7, 8, 12, 11])).prop_map(|(pdu, value)| M::TpktLength { pdu, value }),
        3 => (pdu(), Havoc::strategy(12)).prop_map(|(pdu, op)| M::Havoc { pdu, op }),
    ]
    .boxed()
}

/// A whole case: one to four mutations.
pub fn strategy() -> BoxedStrategy<ChannelsCase> {
    proptest::collection::vec(mutation(), 1..=4)
        .prop_map(|mutations| ChannelsCase { mutations })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_core::decode;
    use ironrdp_pdu::mcs::{AttachUserRequest, ChannelJoinRequest, ErectDomainPdu};
    use ironrdp_pdu::x224::X224;

    #[test]
    fn base_pdus_are_what_ironrdp_decodes() {
        let one = encode_phase_one(&[]);
        let erect_len = usize::from(u16::from_be_bytes([one[2], one[3]]));
        decode::<X224<ErectDomainPdu>>(&one[..erect_len]).expect("erect domain");
        decode::<X224<AttachUserRequest>>(&one[erect_len..]).expect("attach user");
        let ctx = EncodeCtx {
            user_channel: Some(1007),
            io_channel: 1003,
            static_channels: vec![1004, 1005],
            ..EncodeCtx::default()
        };
        let joins = encode_joins(&[], &ctx);
        assert_eq!(joins.len(), 4);
        let j = decode::<X224<ChannelJoinRequest>>(&joins[1])
            .expect("join")
            .0;
        assert_eq!(j.channel_id, 1003);
        assert_eq!(j.initiator_id, 1007);
    }

    #[test]
    fn replies() {
        // Attach User Confirm, rt-successful, initiator 1007 (offset 6).
        let p = wrap(&[0x2e, 0x00, 0x00, 0x06], None);
        assert_eq!(
            domain_reply(&p),
            Some(DomainReply::AttachConfirm {
                result: 0,
                user: Some(1007)
            })
        );
        let p = wrap(&[0x3e, 0x00, 0x00, 0x06, 0x03, 0xeb, 0x03, 0xeb], None);
        assert_eq!(
            domain_reply(&p),
            Some(DomainReply::JoinConfirm {
                result: 0,
                channel: Some(1003)
            })
        );
        assert_eq!(domain_reply(&[0x03]), None);
    }

    #[test]
    fn join_mutations() {
        let ctx = EncodeCtx {
            user_channel: Some(1007),
            io_channel: 1003,
            static_channels: vec![],
            ..EncodeCtx::default()
        };
        let joins = encode_joins(
            &[
                ChannelsMutation::JoinChannel { index: 3, id: 0 },
                ChannelsMutation::RepeatJoins(2),
            ],
            &ctx,
        );
        assert_eq!(joins.len(), 4);
        assert_eq!(&joins[1][10..12], &[0, 0]);
    }
}
