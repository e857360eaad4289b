//! Synthetic Ethernet II / IPv4 or IPv6 / TCP frames with correct checksums.
//!
//! IPv4: RFC 791 (header checksum), IPv6: RFC 8200, TCP: RFC 9293 (header, pseudo-header checksum
//! section 3.1; for IPv6 the pseudo-header of RFC 8200 section 8.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// IPv4 header length without options (bytes).
const IPV4_HEADER_LEN: usize = 20;
/// IPv6 fixed header length (bytes).
const IPV6_HEADER_LEN: usize = 40;
/// TCP header length without options (bytes).
const TCP_HEADER_LEN: usize = 20;
/// Length of the MSS option (kind 2) in bytes.
const TCP_MSS_OPTION_LEN: usize = 4;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const IP_PROTO_TCP: u8 = 6;
/// Hop limit / TTL of the synthetic packets (the Linux default).
const HOP_LIMIT: u8 = 64;

/// Locally administered MAC of the client (the 0x02 bit of the first octet marks it as synthetic).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Locally administered MAC of the server.
pub const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// The two IP addresses of the conversation, in one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpPair {
    V4 { client: Ipv4Addr, server: Ipv4Addr },
    V6 { client: Ipv6Addr, server: Ipv6Addr },
}

impl IpPair {
    /// Chooses one family for both ends: IPv4 when both addresses are IPv4 or IPv4-mapped IPv6
    /// (a dual-stack socket reports `::ffff:a.b.c.d`), otherwise IPv6 with IPv4 addresses mapped.
    pub fn from_addrs(client: SocketAddr, server: SocketAddr) -> IpPair {
        match (client.ip().to_canonical(), server.ip().to_canonical()) {
            (IpAddr::V4(c), IpAddr::V4(s)) => IpPair::V4 {
                client: c,
                server: s,
            },
            (c, s) => IpPair::V6 {
                client: to_v6(c),
                server: to_v6(s),
            },
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// One TCP segment to frame.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// True when the client sends it.
    pub from_client: bool,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// MSS option to announce (SYN and SYN/ACK only).
    pub mss: Option<u16>,
    /// IPv4 identification field (ignored for IPv6).
    pub ip_id: u16,
    pub payload: &'a [u8],
}

/// Largest TCP payload a frame may carry so that the IPv4 total length (16 bits) cannot overflow.
pub const MAX_PAYLOAD: usize =
    u16::MAX as usize - IPV6_HEADER_LEN - TCP_HEADER_LEN - TCP_MSS_OPTION_LEN;

/// Appends the Ethernet frame of `seg` to `out` (cleared first).
///
/// INVARIANT: `seg.payload.len() <= MAX_PAYLOAD`; longer payloads are cut there (callers split first).
pub fn build_frame(out: &mut Vec<u8>, ips: &IpPair, seg: &Segment<'_>) {
    out.clear();
    let payload = &seg.payload[..seg.payload.len().min(MAX_PAYLOAD)];
    let opt_len = if seg.mss.is_some() {
        TCP_MSS_OPTION_LEN
    } else {
        0
    };
    let tcp_len = TCP_HEADER_LEN + opt_len + payload.len();

    let (src_mac, dst_mac) = if seg.from_client {
        (CLIENT_MAC, SERVER_MAC)
    } else {
        (SERVER_MAC, CLIENT_MAC)
    };
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    let ethertype = match ips {
        IpPair::V4 { .. } => ETHERTYPE_IPV4,
        IpPair::V6 { .. } => ETHERTYPE_IPV6,
    };
    out.extend_from_slice(&ethertype.to_be_bytes());

    // Pseudo-header sum for the TCP checksum, accumulated while writing the IP header.
    let mut pseudo = Checksum::default();
    match *ips {
        IpPair::V4 { client, server } => {
            let (src, dst) = if seg.from_client {
                (client, server)
            } else {
                (server, client)
            };
            let ip_start = out.len();
            // INVARIANT: tcp_len <= MAX_PAYLOAD + 44 < 65535 - 20, so the total length fits.
            let total_len = (IPV4_HEADER_LEN + tcp_len) as u16;
            out.push(0x45); // version 4, IHL 5 words
            out.push(0x00); // DSCP/ECN
            out.extend_from_slice(&total_len.to_be_bytes());
            out.extend_from_slice(&seg.ip_id.to_be_bytes());
            out.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, fragment offset 0
            out.push(HOP_LIMIT);
            out.push(IP_PROTO_TCP);
            out.extend_from_slice(&[0, 0]); // header checksum, filled below
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            let mut c = Checksum::default();
            c.add(&out[ip_start..]);
            let sum = c.finish();
            out[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());

            pseudo.add(&src.octets());
            pseudo.add(&dst.octets());
            pseudo.add(&[0, IP_PROTO_TCP]);
            pseudo.add(&(tcp_len as u16).to_be_bytes());
        }
        IpPair::V6 { client, server } => {
            let (src, dst) = if seg.from_client {
                (client, server)
            } else {
                (server, client)
            };
            out.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, class 0, flow 0
            out.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            out.push(IP_PROTO_TCP);
            out.push(HOP_LIMIT);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());

            pseudo.add(&src.octets());
            pseudo.add(&dst.octets());
            pseudo.add(&(tcp_len as u32).to_be_bytes());
            pseudo.add(&[0, 0, 0, IP_PROTO_TCP]);
        }
    }

    let tcp_start = out.len();
    out.extend_from_slice(&seg.src_port.to_be_bytes());
    out.extend_from_slice(&seg.dst_port.to_be_bytes());
    out.extend_from_slice(&seg.seq.to_be_bytes());
    out.extend_from_slice(&seg.ack.to_be_bytes());
    let data_offset_words = ((TCP_HEADER_LEN + opt_len) / 4) as u8;
    out.push(data_offset_words << 4);
    out.push(seg.flags);
    out.extend_from_slice(&seg.window.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // checksum, filled below
    out.extend_from_slice(&[0, 0]); // urgent pointer
    if let Some(mss) = seg.mss {
        out.push(2); // kind: maximum segment size
        out.push(TCP_MSS_OPTION_LEN as u8);
        out.extend_from_slice(&mss.to_be_bytes());
    }
    out.extend_from_slice(payload);
    pseudo.add(&out[tcp_start..]);
    let sum = pseudo.finish();
    out[tcp_start + 16..tcp_start + 18].copy_from_slice(&sum.to_be_bytes());
}

/// The Internet checksum (RFC 1071): one's complement of the one's complement sum of 16-bit words.
#[derive(Default)]
struct Checksum {
    sum: u64,
    /// A byte left over from an odd-length chunk (its 16-bit word continues in the next chunk).
    odd: Option<u8>,
}

impl Checksum {
    fn add(&mut self, mut data: &[u8]) {
        if let Some(hi) = self.odd.take() {
            match data.split_first() {
                Some((lo, rest)) => {
                    self.sum += u64::from(u16::from_be_bytes([hi, *lo]));
                    data = rest;
                }
                None => {
                    self.odd = Some(hi);
                    return;
                }
            }
        }
        let mut chunks = data.chunks_exact(2);
        for w in &mut chunks {
            self.sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = chunks.remainder() {
            self.odd = Some(*last);
        }
    }

    fn finish(mut self) -> u16 {
        if let Some(hi) = self.odd.take() {
            self.sum += u64::from(u16::from_be_bytes([hi, 0]));
        }
        let mut s = self.sum;
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        !(s as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(payload: &[u8], mss: Option<u16>) -> Segment<'_> {
        Segment {
            from_client: true,
            src_port: 50000,
            dst_port: 3389,
            seq: 0x1234_5678,
            ack: 0x9abc_def0,
            flags: TCP_PSH | TCP_ACK,
            window: 65535,
            mss,
            ip_id: 7,
            payload,
        }
    }

    #[test]
    fn ipv4_checksums_match_etherparse() {
        let ips = IpPair::from_addrs(
            "10.0.0.1:50000".parse().unwrap(),
            "10.0.0.2:3389".parse().unwrap(),
        );
        for payload in [
            &b""[..],
            b"a",
            b"odd length payload!",
            b"even length payload!",
        ] {
            let mut f = Vec::new();
            build_frame(&mut f, &ips, &seg(payload, None));
            let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!("not ipv4")
            };
            let iph = ip.header().to_header();
            assert_eq!(iph.header_checksum, iph.calc_header_checksum());
            let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
                panic!("not tcp")
            };
            let th = tcp.to_header();
            assert_eq!(th.checksum, th.calc_checksum_ipv4(&iph, payload).unwrap());
            assert_eq!(tcp.payload(), payload);
        }
    }

    #[test]
    fn ipv6_checksum_with_mss_option_matches_etherparse() {
        let ips = IpPair::from_addrs(
            "[::1]:50000".parse().unwrap(),
            "[2001:db8::2]:3389".parse().unwrap(),
        );
        let mut f = Vec::new();
        build_frame(&mut f, &ips, &seg(b"xyz", Some(1440)));
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
            panic!("not ipv6")
        };
        let iph = ip.header().to_header();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not tcp")
        };
        let th = tcp.to_header();
        assert_eq!(th.checksum, th.calc_checksum_ipv6(&iph, b"xyz").unwrap());
        assert_eq!(tcp.options(), &[2, 4, 0x05, 0xa0]);
    }

    #[test]
    fn mapped_v4_is_framed_as_ipv4_and_mixed_families_as_ipv6() {
        let c: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let s: SocketAddr = "127.0.0.1:3389".parse().unwrap();
        assert!(matches!(IpPair::from_addrs(c, s), IpPair::V4 { .. }));
        let s6: SocketAddr = "[::1]:3389".parse().unwrap();
        let s4: SocketAddr = "127.0.0.1:3389".parse().unwrap();
        assert!(matches!(IpPair::from_addrs(s4, s6), IpPair::V6 { .. }));
    }
}
