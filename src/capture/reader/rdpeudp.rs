//! Noticing RDP's UDP transport (MS-RDPEUDP) in a capture: rdprobe decodes RDP over TCP; UDP flows
//! that start with an RDP-UDP SYN are listed so that a capture holding only them does not read as
//! "no RDP at all", and so that an unanswered UDP SYN (UDP 3389 blocked, the client falls back to
//! TCP) is visible.
//!
//! Recognition is by content, on any port: the SYN and SYN+ACK datagrams (MS-RDPEUDP 3.1.5.1.1,
//! 3.1.5.1.2) carry an RDPUDP_FEC_HEADER with RDPUDP_FLAG_SYN (the SYN with `snSourceAck` = -1, the
//! SYN+ACK acknowledging the client's initial sequence number), then an RDPUDP_SYNDATA_PAYLOAD whose
//! MTUs are 1132..=1232, and are zero-padded to 1232 bytes.
//!
//! INVARIANT: at most [`MAX_UDP_FLOWS`] flows are tracked; later ones are only counted.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Most RDP-UDP flows tracked per capture.
pub const MAX_UDP_FLOWS: usize = 4096;
/// Length of a SYN / SYN+ACK datagram after padding (bytes; MS-RDPEUDP 3.1.5.1.1).
const SYN_DATAGRAM_LEN: usize = 1232;
/// RDPUDP_FEC_HEADER.uFlags bits (MS-RDPEUDP 2.2.2.1).
const FLAG_SYN: u16 = 0x0001;
const FLAG_ACK: u16 = 0x0004;
/// Where a flow without a visible handshake is still taken for RDP-UDP.
const RDP_UDP_PORT: u16 = 3389;

/// The handshake datagram `payload` is, if it is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynKind {
    Syn,
    SynAck,
}

/// Recognizes an RDP-UDP SYN or SYN+ACK datagram.
pub fn syn_kind(payload: &[u8]) -> Option<SynKind> {
    if payload.len() < SYN_DATAGRAM_LEN {
        return None;
    }
    let flags = u16::from_be_bytes([payload[6], payload[7]]);
    if flags & FLAG_ACK == 0 && payload[..4] != [0xFF; 4] {
        return None;
    }
    let up = u16::from_be_bytes([payload[12], payload[13]]);
    let down = u16::from_be_bytes([payload[14], payload[15]]);
    if flags & FLAG_SYN == 0 || !(1132..=1232).contains(&up) || !(1132..=1232).contains(&down) {
        return None;
    }
    Some(if flags & FLAG_ACK != 0 {
        SynKind::SynAck
    } else {
        SynKind::Syn
    })
}

/// One RDP-UDP flow, as far as rdprobe follows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UdpFlow {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Frame of the first SYN.
    pub first_frame: u64,
    /// SYN datagrams from the client (retries included).
    pub syns: u32,
    /// Frame of the server's first SYN+ACK, if it answered.
    pub syn_ack_frame: Option<u64>,
    /// The capture starts inside the flow (no SYN seen; recognized on the RDP port).
    pub mid_stream: bool,
    /// Datagrams client → server and server → client (handshake included).
    pub datagrams: [u64; 2],
    /// Capture time of the first and the last datagram (µs since the epoch).
    pub first_t_us: u64,
    pub last_t_us: u64,
}

impl UdpFlow {
    /// One line for people.
    pub fn describe(&self) -> String {
        let span_ms = self.last_t_us.saturating_sub(self.first_t_us) / 1000;
        if self.mid_stream {
            return format!(
                "{} -> {}: rdp-udp flow already running when the capture starts (handshake not seen), {} + {} datagrams over {span_ms} ms",
                self.client, self.server, self.datagrams[0], self.datagrams[1]
            );
        }
        match self.syn_ack_frame {
            Some(f) => format!(
                "{} -> {}: rdp-udp handshake answered (syn+ack at frame {f}), {} + {} datagrams over {span_ms} ms",
                self.client, self.server, self.datagrams[0], self.datagrams[1]
            ),
            None => format!(
                "{} -> {}: rdp-udp syn sent {} time(s) from frame {} over {span_ms} ms, never answered (udp blocked or not enabled on the server; clients fall back to tcp)",
                self.client, self.server, self.syns, self.first_frame
            ),
        }
    }
}

/// The RDP-UDP flows of a capture.
#[derive(Debug, Default)]
pub struct UdpFlows {
    flows: HashMap<(SocketAddr, SocketAddr), UdpFlow>,
    /// Flows beyond [`MAX_UDP_FLOWS`], not tracked.
    pub untracked: u64,
}

impl UdpFlows {
    /// Looks at one UDP datagram.
    pub fn observe(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        frame: u64,
        t_us: u64,
    ) {
        let kind = syn_kind(payload);
        if let Some(f) = self.flows.get_mut(&(src, dst)) {
            f.datagrams[0] += 1;
            f.last_t_us = t_us;
            if kind == Some(SynKind::Syn) {
                f.syns += 1;
            }
            return;
        }
        if let Some(f) = self.flows.get_mut(&(dst, src)) {
            f.datagrams[1] += 1;
            f.last_t_us = t_us;
            if kind == Some(SynKind::SynAck) && f.syn_ack_frame.is_none() {
                f.syn_ack_frame = Some(frame);
            }
            return;
        }
        // A flow whose handshake the capture did not see: only on the RDP port, by its FEC header
        // (RDPUDP_FLAG_ACK set, a receive window).
        let mid_stream = kind.is_none()
            && (dst.port() == RDP_UDP_PORT || src.port() == RDP_UDP_PORT)
            && payload.len() >= 8
            && u16::from_be_bytes([payload[6], payload[7]]) & FLAG_ACK != 0;
        if kind == Some(SynKind::SynAck) || (kind.is_none() && !mid_stream) {
            return;
        }
        if self.flows.len() >= MAX_UDP_FLOWS {
            self.untracked += 1;
            return;
        }
        // Mid-stream: the side on the RDP port is the server.
        let (client, server, dir) = if mid_stream && src.port() == RDP_UDP_PORT {
            (dst, src, 1)
        } else {
            (src, dst, 0)
        };
        let mut datagrams = [0, 0];
        datagrams[dir] = 1;
        self.flows.insert(
            (client, server),
            UdpFlow {
                client,
                server,
                first_frame: frame,
                syns: u32::from(!mid_stream),
                syn_ack_frame: None,
                mid_stream,
                datagrams,
                first_t_us: t_us,
                last_t_us: t_us,
            },
        );
    }

    /// The flows, in the order they started.
    pub fn flows(&self) -> Vec<UdpFlow> {
        let mut v: Vec<UdpFlow> = self.flows.values().cloned().collect();
        v.sort_by_key(|f| f.first_frame);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(flags: u16) -> Vec<u8> {
        let mut d = vec![0u8; SYN_DATAGRAM_LEN];
        d[..4].copy_from_slice(&[0xFF; 4]);
        d[4..6].copy_from_slice(&64u16.to_be_bytes());
        d[6..8].copy_from_slice(&flags.to_be_bytes());
        d[12..14].copy_from_slice(&1232u16.to_be_bytes());
        d[14..16].copy_from_slice(&1232u16.to_be_bytes());
        d
    }

    #[test]
    fn recognizes_syn_and_syn_ack_only() {
        assert_eq!(syn_kind(&syn(0x1801)), Some(SynKind::Syn));
        assert_eq!(syn_kind(&syn(0x1005)), Some(SynKind::SynAck));
        let mut syn_ack = syn(0x1005);
        syn_ack[..4].copy_from_slice(&[0xa7, 0xeb, 0x5d, 0xa4]);
        assert_eq!(syn_kind(&syn_ack), Some(SynKind::SynAck));
        let mut not_syn = syn(0x0001);
        not_syn[..4].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(syn_kind(&not_syn), None);
        assert_eq!(syn_kind(&syn(0x0004)), None);
        assert_eq!(syn_kind(&syn(0x1801)[..100]), None);
        let mut bad_mtu = syn(0x0001);
        bad_mtu[12] = 0;
        assert_eq!(syn_kind(&bad_mtu), None);
    }

    #[test]
    fn flows_answered_and_not() {
        let c: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let s: SocketAddr = "10.0.0.2:3389".parse().unwrap();
        let c2: SocketAddr = "10.0.0.3:5000".parse().unwrap();
        let mut u = UdpFlows::default();
        u.observe(c, s, &syn(0x1801), 1, 0);
        u.observe(s, c, &syn(0x1005), 2, 1000);
        u.observe(c, s, b"data", 3, 2000);
        u.observe(c2, s, &syn(0x0001), 4, 3000);
        u.observe(c2, s, &syn(0x0001), 5, 4000);
        u.observe(s, c2, b"not a syn", 6, 5000);
        let s2: SocketAddr = "10.0.0.9:3389".parse().unwrap();
        let mut ack = vec![0u8; 40];
        ack[7] = 0x04;
        u.observe(s2, c, &ack, 7, 6000);
        u.observe(c, s2, &ack, 8, 7000);
        u.observe(c, "10.0.0.9:53".parse().unwrap(), &ack, 9, 7000);
        let f = u.flows();
        assert_eq!(f.len(), 3);
        assert!(f[2].mid_stream);
        assert_eq!((f[2].client, f[2].server, f[2].datagrams), (c, s2, [1, 1]));
        assert_eq!((f[0].syn_ack_frame, f[0].datagrams), (Some(2), [2, 1]));
        assert_eq!((f[1].syns, f[1].syn_ack_frame), (2, None));
        assert!(
            f[1].describe().contains("never answered"),
            "{}",
            f[1].describe()
        );
    }
}
