//! Link layer → IPv4/IPv6 → TCP: finds the TCP segment in one captured frame.
//!
//! Link types (<https://www.tcpdump.org/linktypes.html>): NULL/LOOP (0, 108), Ethernet (1, with
//! 802.1Q / 802.1ad tags), raw IP (12, 14, 101), Linux cooked SLL (113) and SLL2 (276), IPv4 (228),
//! IPv6 (229). Header parsing is etherparse's: a whole Ethernet / IPv4 / TCP frame through its header
//! slices, every other frame through its lax slicer, which tolerates snaplen-cut payloads.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TcpHeaderSlice};

/// TCP flags rdprobe cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// One TCP segment found in a frame.
#[derive(Debug)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: Flags,
    /// Captured payload bytes.
    pub payload: &'a [u8],
    /// The mapped capture file `payload` is a slice of, when there is one (see
    /// [`crate::capture::reassembly::Payload`]).
    pub backing: Option<&'a bytes::Bytes>,
    /// Payload bytes the IP header claims beyond what was captured (snaplen truncation).
    pub missing: u32,
    /// IP and TCP header facts (TTL / hop limit, IP ID, DF, window) for the TCP evidence.
    pub hdr: HeaderFacts,
}

impl<'a> Segment<'a> {
    /// The payload for reassembly.
    pub fn payload(&self) -> crate::capture::reassembly::Payload<'a> {
        crate::capture::reassembly::Payload {
            bytes: self.payload,
            backing: self.backing,
        }
    }
}

/// Header facts of one packet that say who sent it and how the path treats it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// IPv4 TTL or IPv6 hop limit as captured.
    pub ttl: u8,
    /// IPv4 Identification (`None` for IPv6 without a fragment header).
    pub ip_id: Option<u16>,
    /// IPv4 Don't Fragment (always true for IPv6, which routers never fragment).
    pub df: bool,
    /// TCP window (unscaled).
    pub window: u16,
}

/// An ICMP / ICMPv6 error about a TCP packet (RFC 792, RFC 4443, RFC 1191): the quoted packet names
/// the flow it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpError {
    /// Who sent the ICMP message (a router or the destination host).
    pub from: IpAddr,
    /// TTL / hop limit of the ICMP packet as captured.
    pub ttl: u8,
    /// Source and destination of the quoted TCP packet.
    pub quoted_src: SocketAddr,
    pub quoted_dst: SocketAddr,
    /// ICMP type and code.
    pub icmp_type: u8,
    pub code: u8,
    /// Next-hop MTU of a "fragmentation needed" / "packet too big".
    pub mtu: Option<u32>,
}

impl IcmpError {
    /// What the error says, in words.
    pub fn describe(&self) -> String {
        let v6 = self.from.is_ipv6();
        match (v6, self.icmp_type, self.code) {
            (false, 3, 4) | (true, 2, _) => format!(
                "{} (next-hop MTU {})",
                if v6 {
                    "packet too big"
                } else {
                    "fragmentation needed"
                },
                self.mtu.map_or("?".into(), |m| m.to_string())
            ),
            (false, 3, 9 | 10 | 13) | (true, 1, 1) => {
                "destination administratively prohibited".into()
            }
            (false, 3, 0) | (true, 1, 0) => "network unreachable".into(),
            (false, 3, 1) | (true, 1, 3) => "host unreachable".into(),
            (false, 3, 3) | (true, 1, 4) => "port unreachable".into(),
            (false, 3, c) | (true, 1, c) => format!("destination unreachable (code {c})"),
            (false, 11, _) | (true, 3, _) => "time exceeded in transit".into(),
            (_, t, c) => format!("icmp type {t} code {c}"),
        }
    }

    /// A "fragmentation needed" / "packet too big".
    pub fn is_mtu(&self) -> bool {
        matches!(
            (self.from.is_ipv6(), self.icmp_type, self.code),
            (false, 3, 4) | (true, 2, _)
        )
    }
}

/// One IP fragment of a TCP datagram (RFC 791 section 3.2, RFC 8200 section 4.5).
#[derive(Debug)]
pub struct Fragment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 Identification or IPv6 fragment header Identification.
    pub id: u32,
    /// Byte offset of `data` in the original datagram's payload.
    pub offset: usize,
    /// More fragments follow.
    pub more: bool,
    /// The fragment's captured bytes.
    pub data: &'a [u8],
    /// The fragment was cut by the snaplen (it cannot be reassembled).
    pub truncated: bool,
}

/// One UDP datagram (for noticing RDP's UDP transport, MS-RDPEUDP).
#[derive(Debug)]
pub struct Datagram<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Captured UDP payload.
    pub payload: &'a [u8],
}

/// What one frame holds, as far as rdprobe cares.
#[derive(Debug)]
pub enum Parsed<'a> {
    Tcp(Segment<'a>),
    /// A fragment of a fragmented IP datagram carrying TCP.
    Fragment(Fragment<'a>),
    Udp(Datagram<'a>),
    /// An ICMP error quoting a TCP packet.
    Icmp(IcmpError),
    Other,
}

/// Finds the TCP segment, the TCP-carrying IP fragment or the UDP datagram in one frame of
/// `linktype`; `Other` for anything else (other protocols, frames too damaged to parse).
pub fn parse(linktype: u32, data: &[u8]) -> Parsed<'_> {
    classify(linktype, data).unwrap_or(Parsed::Other)
}

/// The TCP segment of a reassembled datagram: `payload` is the whole IP payload (TCP header first).
pub fn tcp_in(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Option<Segment<'_>> {
    tcp_at(src, dst, payload, payload.len(), HeaderFacts::default())
}

/// `None`: nothing rdprobe reads (or headers that do not parse).
fn classify(linktype: u32, data: &[u8]) -> Option<Parsed<'_>> {
    if linktype == 1 {
        if let Some(seg) = ethernet_ipv4_tcp(data) {
            return Some(Parsed::Tcp(seg));
        }
    }
    classify_lax(linktype, data)
}

/// The common frame, whole: Ethernet II, IPv4 (not a fragment, its length within the frame), TCP.
/// Read with etherparse's header slices, which is much cheaper per packet than the lax slicer's
/// general walk; any other frame is `None` and goes to [`classify_lax`], which reads this one the
/// same way (a property test compares the two).
fn ethernet_ipv4_tcp(data: &[u8]) -> Option<Segment<'_>> {
    let eth = etherparse::Ethernet2HeaderSlice::from_slice(data).ok()?;
    if eth.ether_type() != EtherType::IPV4 {
        return None;
    }
    let ip = &data[eth.slice().len()..];
    let h = etherparse::Ipv4HeaderSlice::from_slice(ip).ok()?;
    let (hlen, total) = (h.slice().len(), usize::from(h.total_len()));
    if h.protocol() != etherparse::IpNumber::TCP
        || h.more_fragments()
        || h.fragments_offset().value() != 0
        || total < hlen
        || total > ip.len()
    {
        return None;
    }
    let hdr = HeaderFacts {
        ttl: h.ttl(),
        ip_id: Some(h.identification()),
        df: h.dont_fragment(),
        window: 0,
    };
    let payload = &ip[hlen..total];
    tcp_at(
        IpAddr::V4(h.source_addr()),
        IpAddr::V4(h.destination_addr()),
        payload,
        payload.len(),
        hdr,
    )
}

/// Any frame rdprobe reads, through etherparse's lax slicer (snaplen-cut payloads, VLAN tags,
/// IPv6 extension headers, fragments, ICMP errors, UDP).
fn classify_lax(linktype: u32, data: &[u8]) -> Option<Parsed<'_>> {
    let sliced = match linktype {
        // LINKTYPE_NULL / LINKTYPE_LOOP: 4-byte address family (host / network order), then IP.
        0 | 108 => LaxSlicedPacket::from_ip(data.get(4..)?).ok()?,
        1 => LaxSlicedPacket::from_ethernet(data).ok()?,
        // Raw IP: 101 (LINKTYPE_RAW), and DLT_RAW values 12 / 14 used by some systems.
        12 | 14 | 101 | 228 | 229 => LaxSlicedPacket::from_ip(data).ok()?,
        // Linux cooked capture v1: 16-byte header, protocol type at offset 14.
        113 => {
            let proto = u16::from_be_bytes([*data.get(14)?, *data.get(15)?]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), data.get(16..)?)
        }
        // Linux cooked capture v2: 20-byte header, protocol type at offset 0.
        276 => {
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), data.get(20..)?)
        }
        _ => return None,
    };
    let net = sliced.net?;
    let (src_ip, dst_ip, payload, hdr) = match &net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
                HeaderFacts {
                    ttl: h.ttl(),
                    ip_id: Some(h.identification()),
                    df: h.dont_fragment(),
                    window: 0,
                },
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
                HeaderFacts {
                    ttl: h.hop_limit(),
                    ip_id: None,
                    df: true,
                    window: 0,
                },
            )
        }
    };
    if !payload.fragmented
        && (payload.ip_number == etherparse::IpNumber::ICMP
            || payload.ip_number == etherparse::IpNumber::IPV6_ICMP)
    {
        return icmp_error(src_ip, hdr.ttl, payload.payload).map(Parsed::Icmp);
    }
    if payload.ip_number == etherparse::IpNumber::UDP && !payload.fragmented {
        let udp = etherparse::UdpHeaderSlice::from_slice(payload.payload).ok()?;
        return Some(Parsed::Udp(Datagram {
            src: SocketAddr::new(src_ip, udp.source_port()),
            dst: SocketAddr::new(dst_ip, udp.destination_port()),
            payload: &payload.payload[8..],
        }));
    }
    if payload.ip_number != etherparse::IpNumber::TCP {
        return None;
    }
    if payload.fragmented {
        return fragment(&net, src_ip, dst_ip, payload).map(Parsed::Fragment);
    }
    // Claimed IP payload length: when the payload is cut off, the header's length field was valid
    // (etherparse falls back to the slice, and says so, only then).
    let claimed_ip_payload: usize = if payload.incomplete {
        match (&net, payload.len_source) {
            (LaxNetSlice::Ipv4(v4), _) => {
                let h = v4.header();
                usize::from(h.total_len()).saturating_sub(
                    h.slice().len() + v4.extensions().auth.map(|a| a.slice().len()).unwrap_or(0),
                )
            }
            (LaxNetSlice::Ipv6(v6), _) => usize::from(v6.header().payload_length())
                .saturating_sub(v6.extensions().slice().len()),
        }
    } else {
        payload.payload.len()
    };
    tcp_at(src_ip, dst_ip, payload.payload, claimed_ip_payload, hdr).map(Parsed::Tcp)
}

/// An ICMP(v6) destination unreachable / packet too big / time exceeded quoting a TCP packet.
fn icmp_error(from: IpAddr, ttl: u8, icmp: &[u8]) -> Option<IcmpError> {
    let (t, code) = (*icmp.first()?, *icmp.get(1)?);
    let quoted = icmp.get(8..)?;
    let (qsrc, qdst, tcp) = if from.is_ipv6() {
        if !matches!(t, 1..=3) {
            return None;
        }
        // Quoted IPv6 header (40 bytes), next header must be TCP (no extension headers followed).
        if quoted.len() < 44 || quoted[0] >> 4 != 6 || quoted[6] != 6 {
            return None;
        }
        let a: [u8; 16] = quoted[8..24].try_into().ok()?;
        let b: [u8; 16] = quoted[24..40].try_into().ok()?;
        (IpAddr::from(a), IpAddr::from(b), &quoted[40..])
    } else {
        if !matches!(t, 3 | 11) {
            return None;
        }
        let ihl = usize::from(quoted.first()? & 0x0F) * 4;
        if quoted[0] >> 4 != 4 || ihl < 20 || quoted.len() < ihl + 4 || quoted[9] != 6 {
            return None;
        }
        let a: [u8; 4] = quoted[12..16].try_into().ok()?;
        let b: [u8; 4] = quoted[16..20].try_into().ok()?;
        (IpAddr::from(a), IpAddr::from(b), &quoted[ihl..])
    };
    let sp = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dp = u16::from_be_bytes([tcp[2], tcp[3]]);
    let mtu = match (from.is_ipv6(), t, code) {
        (false, 3, 4) => Some(u32::from(u16::from_be_bytes([icmp[6], icmp[7]]))),
        (true, 2, _) => Some(u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]])),
        _ => None,
    };
    Some(IcmpError {
        from,
        ttl,
        quoted_src: SocketAddr::new(qsrc, sp),
        quoted_dst: SocketAddr::new(qdst, dp),
        icmp_type: t,
        code,
        mtu,
    })
}

/// The fragment facts of a fragmented datagram's frame (`None` when they cannot be read).
fn fragment<'a>(
    net: &LaxNetSlice<'a>,
    src: IpAddr,
    dst: IpAddr,
    payload: &etherparse::LaxIpPayloadSlice<'a>,
) -> Option<Fragment<'a>> {
    let (id, offset, more) = match net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                u32::from(h.identification()),
                usize::from(h.fragments_offset().value()) * 8,
                h.more_fragments(),
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                _ => None,
            })?;
            (
                frag.identification(),
                usize::from(frag.fragment_offset().value()) * 8,
                frag.more_fragments(),
            )
        }
    };
    Some(Fragment {
        src,
        dst,
        id,
        offset,
        more,
        data: payload.payload,
        truncated: payload.incomplete,
    })
}

/// The TCP segment at the start of an IP payload that claims `claimed_ip_payload` bytes.
fn tcp_at(
    src_ip: IpAddr,
    dst_ip: IpAddr,
    ip_payload: &[u8],
    claimed_ip_payload: usize,
    mut hdr: HeaderFacts,
) -> Option<Segment<'_>> {
    let tcp = TcpHeaderSlice::from_slice(ip_payload).ok()?;
    hdr.window = tcp.window_size();
    let hlen = tcp.slice().len();
    let body = &ip_payload[hlen..];
    let claimed = claimed_ip_payload.saturating_sub(hlen).max(body.len());
    let missing = u32::try_from(claimed - body.len()).unwrap_or(u32::MAX);
    Some(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: Flags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        },
        payload: body,
        backing: None,
        missing,
        hdr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_segment(linktype: u32, data: &[u8]) -> Option<Segment<'_>> {
        match parse(linktype, data) {
            Parsed::Tcp(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn truncated_ipv4_reports_missing_bytes() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 3389, 5, 100)
            .write(&mut v, &[7u8; 500])
            .unwrap();
        let s = tcp_segment(1, &v[..54 + 100]).expect("segment");
        assert_eq!((s.payload.len(), s.missing), (100, 400));
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(1000, 3389, 5, 100)
            .write(&mut v, &[7u8; 500])
            .unwrap();
        let s = tcp_segment(101, &v[..40 + 20 + 10]).expect("segment");
        assert_eq!((s.payload.len(), s.missing), (10, 490));
    }
    /// A frame the fast path reads is read the same by the lax slicer: any byte of an Ethernet /
    /// IPv4 / TCP frame changed (lengths, flags, fragment fields, protocol, options), and any cut.
    fn same_as_lax(frame: &[u8]) -> Result<bool, proptest::test_runner::TestCaseError> {
        let Some(fast) = ethernet_ipv4_tcp(frame) else {
            return Ok(false);
        };
        let lax = match classify_lax(1, frame) {
            Some(Parsed::Tcp(s)) => s,
            other => {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "fast {fast:?}, lax {other:?}"
                )))
            }
        };
        proptest::prop_assert_eq!(format!("{fast:?}"), format!("{lax:?}"));
        Ok(true)
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_reads_what_the_lax_slicer_reads(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            edits in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..4),
            cut in 0usize..200,
            options in proptest::prelude::any::<bool>(),
        ) {
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(1000, 3389, 5, 100)
                .write(&mut v, &payload)
                .unwrap();
            if options {
                // IHL 6: four bytes of IPv4 options (NOPs) after the fixed header.
                v[14] = 0x46;
                v.splice(34..34, [1u8, 1, 1, 1]);
                let total = u16::from_be_bytes([v[16], v[17]]) + 4;
                v[16..18].copy_from_slice(&total.to_be_bytes());
            }
            proptest::prop_assert!(same_as_lax(&v)?, "an untouched frame takes the fast path");
            for (at, b) in edits {
                if let Some(x) = v.get_mut(at) {
                    *x = b;
                }
            }
            same_as_lax(&v)?;
            v.truncate(cut);
            same_as_lax(&v)?;
        }
    }
}
