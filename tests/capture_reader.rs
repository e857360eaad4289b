//! The capture reader on captures synthesized here: file formats, link types, TCP reassembly with
//! loss, RDP recognition, damaged files, and real TLS sessions (rustls, OpenSSL) decrypted from
//! their key logs.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use etherparse::PacketBuilder;
use proptest::prelude::*;
use rdprobe::capture::reader::{read_conversations, CaptureError, KeyLog, ReaderOptions};
use rdprobe::trace::{ConnectFailure, Dir, EventKind, Layer, Trace};

// ------------------------------------------------------------------------------------------------
// Synthesis helpers

/// X.224 Connection Request with RDP_NEG_REQ (requestedProtocols = SSL | HYBRID).
const CR: &[u8] = &[
    0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x03,
    0x00, 0x00, 0x00,
];
/// X.224 Connection Confirm with RDP_NEG_RSP selecting PROTOCOL_SSL.
const CC_SSL: &[u8] = &[
    0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34, 0x00, 0x02, 0x1f, 0x08, 0x00, 0x01,
    0x00, 0x00, 0x00,
];

#[derive(Clone, Copy, Default)]
struct Fl {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}

/// One TCP segment to synthesize.
#[derive(Clone)]
struct Seg {
    from_client: bool,
    seq: u32,
    ack: u32,
    flags: Fl,
    payload: Vec<u8>,
}

/// A TCP conversation that hands out correctly numbered segments.
struct Flow {
    client: SocketAddr,
    server: SocketAddr,
    cseq: u32,
    sseq: u32,
}

impl Flow {
    fn new(client: &str, server: &str) -> Flow {
        Flow {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            cseq: 1000,
            sseq: 0xFFFF_FF00, // wraps the sequence space during the test
        }
    }

    fn seg(&mut self, from_client: bool, flags: Fl, payload: &[u8]) -> Seg {
        let (seq, ack) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        let adv = payload.len() as u32 + u32::from(flags.syn) + u32::from(flags.fin);
        if from_client {
            self.cseq = self.cseq.wrapping_add(adv);
        } else {
            self.sseq = self.sseq.wrapping_add(adv);
        }
        Seg {
            from_client,
            seq,
            ack,
            flags,
            payload: payload.to_vec(),
        }
    }

    fn handshake(&mut self) -> Vec<Seg> {
        let syn = self.seg(
            true,
            Fl {
                syn: true,
                ..Fl::default()
            },
            &[],
        );
        let synack = self.seg(
            false,
            Fl {
                syn: true,
                ack: true,
                ..Fl::default()
            },
            &[],
        );
        let ack = self.seg(
            true,
            Fl {
                ack: true,
                ..Fl::default()
            },
            &[],
        );
        vec![syn, synack, ack]
    }

    fn c(&mut self, data: &[u8]) -> Seg {
        self.seg(
            true,
            Fl {
                ack: true,
                ..Fl::default()
            },
            data,
        )
    }

    fn s(&mut self, data: &[u8]) -> Seg {
        self.seg(
            false,
            Fl {
                ack: true,
                ..Fl::default()
            },
            data,
        )
    }

    fn fin(&mut self, from_client: bool) -> Seg {
        self.seg(
            from_client,
            Fl {
                ack: true,
                fin: true,
                ..Fl::default()
            },
            &[],
        )
    }

    /// IP packet of a segment.
    fn ip(&self, s: &Seg) -> Vec<u8> {
        let (src, dst) = if s.from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let b = match (src.ip(), dst.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => PacketBuilder::ipv4(a.octets(), b.octets(), 64),
            (IpAddr::V6(a), IpAddr::V6(b)) => PacketBuilder::ipv6(a.octets(), b.octets(), 64),
            _ => panic!("mixed address families"),
        };
        let mut t = b.tcp(src.port(), dst.port(), s.seq, 65535);
        if s.flags.syn {
            t = t.syn();
        }
        if s.flags.ack {
            t = t.ack(s.ack);
        }
        if s.flags.fin {
            t = t.fin();
        }
        if s.flags.rst {
            t = t.rst();
        }
        let mut out = Vec::new();
        t.write(&mut out, &s.payload).unwrap();
        out
    }
}

#[derive(Clone, Copy, Debug)]
enum Link {
    Ethernet,
    Vlan,
    QinQ,
    Sll,
    Sll2,
    Raw,
    Ipv4Only,
    Null,
}

impl Link {
    fn linktype(self) -> u32 {
        match self {
            Link::Ethernet | Link::Vlan | Link::QinQ => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
            Link::Raw => 101,
            Link::Ipv4Only => 228,
            Link::Null => 0,
        }
    }

    fn frame(self, ip: &[u8]) -> Vec<u8> {
        let v6 = ip[0] >> 4 == 6;
        let et: u16 = if v6 { 0x86dd } else { 0x0800 };
        let mut f = Vec::new();
        match self {
            Link::Ethernet | Link::Vlan | Link::QinQ => {
                f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
                if matches!(self, Link::QinQ) {
                    f.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64]);
                }
                if matches!(self, Link::Vlan | Link::QinQ) {
                    f.extend_from_slice(&[0x81, 0x00, 0x00, 0x4d]);
                }
                f.extend_from_slice(&et.to_be_bytes());
            }
            Link::Sll => {
                f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                f.extend_from_slice(&et.to_be_bytes());
            }
            Link::Sll2 => {
                f.extend_from_slice(&et.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            }
            Link::Raw | Link::Ipv4Only => {}
            Link::Null => f.extend_from_slice(&(if v6 { 30u32 } else { 2u32 }).to_le_bytes()),
        }
        f.extend_from_slice(ip);
        f
    }
}

/// One frame of a capture: link-layer bytes, how many of them are captured, interface.
struct Frame {
    data: Vec<u8>,
    caplen: usize,
    iface: u32,
}

fn frames(flow: &Flow, segs: &[Seg], link: Link) -> Vec<Frame> {
    segs.iter()
        .map(|s| {
            let data = link.frame(&flow.ip(s));
            Frame {
                caplen: data.len(),
                data,
                iface: 0,
            }
        })
        .collect()
}

/// A classic pcap file.
fn pcap(frames: &[Frame], linktype: u32, big_endian: bool, nanos: bool) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let mut v = Vec::new();
    w32(&mut v, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    w16(&mut v, 2);
    w16(&mut v, 4);
    w32(&mut v, 0);
    w32(&mut v, 0);
    w32(&mut v, 65535);
    w32(&mut v, linktype);
    for (i, f) in frames.iter().enumerate() {
        w32(&mut v, 1_700_000_000 + i as u32);
        w32(&mut v, if nanos { 500_000_000 } else { 500_000 });
        w32(&mut v, f.caplen as u32);
        w32(&mut v, f.data.len() as u32);
        v.extend_from_slice(&f.data[..f.caplen]);
    }
    v
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn block(v: &mut Vec<u8>, btype: u32, body: &[u8]) {
    let total = 12 + body.len() as u32;
    v.extend_from_slice(&btype.to_le_bytes());
    v.extend_from_slice(&total.to_le_bytes());
    v.extend_from_slice(body);
    v.extend_from_slice(&total.to_le_bytes());
}

fn opt(body: &mut Vec<u8>, code: u16, val: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(val.len() as u16).to_le_bytes());
    body.extend_from_slice(val);
    pad4(body);
}

/// A little-endian pcapng file: interfaces (linktype, tsresol), optional key log in a Decryption
/// Secrets Block, frames with comments.
fn pcapng(ifaces: &[(u32, u8)], keylog: Option<&str>, frames: &[Frame]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    opt(&mut shb, 1, b"synthesized by rdprobe tests");
    opt(&mut shb, 0, &[]);
    block(&mut v, 0x0A0D_0D0A, &shb);
    for (lt, res) in ifaces {
        let mut idb = Vec::new();
        idb.extend_from_slice(&(*lt as u16).to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&262_144u32.to_le_bytes());
        opt(&mut idb, 9, &[*res]);
        opt(&mut idb, 0, &[]);
        block(&mut v, 1, &idb);
    }
    if let Some(k) = keylog {
        let mut dsb = Vec::new();
        dsb.extend_from_slice(&0x544c_534bu32.to_le_bytes());
        dsb.extend_from_slice(&(k.len() as u32).to_le_bytes());
        dsb.extend_from_slice(k.as_bytes());
        pad4(&mut dsb);
        block(&mut v, 0x0A, &dsb);
    }
    // An unknown custom block must be skipped.
    block(&mut v, 0x0000_0BAD, &[1, 2, 3, 4, 0, 0, 0, 0]);
    for (i, f) in frames.iter().enumerate() {
        let res = ifaces[f.iface as usize].1;
        let units: u64 = if res & 0x80 != 0 {
            1 << (res & 0x7f)
        } else {
            10u64.pow(u32::from(res))
        };
        let ts = (1_700_000_000u64 + i as u64) * units + units / 2;
        let mut epb = Vec::new();
        epb.extend_from_slice(&f.iface.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(f.caplen as u32).to_le_bytes());
        epb.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&f.data[..f.caplen]);
        pad4(&mut epb);
        opt(&mut epb, 1, format!("frame {} comment", i + 1).as_bytes());
        opt(&mut epb, 0, &[]);
        block(&mut v, 6, &epb);
    }
    v
}

fn read_all(bytes: &[u8], keylog: Option<KeyLog>) -> (Vec<Trace>, Option<CaptureError>) {
    let opts = ReaderOptions {
        keylog,
        max_retained_per_direction: 1 << 20,
        ..ReaderOptions::default()
    };
    read_with(bytes, opts)
}

fn read_with(bytes: &[u8], opts: ReaderOptions) -> (Vec<Trace>, Option<CaptureError>) {
    let it = match read_conversations(bytes, opts) {
        Ok(it) => it,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut traces = Vec::new();
    let mut err = None;
    for r in it {
        match r {
            Ok(t) => {
                assert!(err.is_none(), "no trace after the error");
                traces.push(t)
            }
            Err(e) => {
                assert!(err.is_none(), "one error at most");
                err = Some(e)
            }
        }
    }
    (traces, err)
}

fn kinds(t: &Trace) -> Vec<String> {
    t.events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Data { dir, layer, bytes } => format!("{dir:?}/{layer:?}:{}", bytes.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A small RDP conversation: handshake, CR, CC, a request/response, FIN both ways.
fn rdp_conv(client: &str, server: &str) -> (Flow, Vec<Seg>) {
    let mut f = Flow::new(client, server);
    let mut s = f.handshake();
    s.push(f.c(CR));
    s.push(f.s(CC_SSL));
    s.push(f.c(b"\x03\x00\x00\x08\x02\xf0\x80\x7f"));
    s.push(f.s(b"\x03\x00\x00\x09\x02\xf0\x80\x7f\x01"));
    s.push(f.fin(true));
    s.push(f.fin(false));
    (f, s)
}

fn assert_basic_rdp(t: &Trace, client: &str, server: &str) {
    assert_eq!(t.client, client.parse::<SocketAddr>().unwrap());
    assert_eq!(t.server, server.parse::<SocketAddr>().unwrap());
    let c = t.stream(Dir::C2S, Layer::Wire);
    let s = t.stream(Dir::S2C, Layer::Wire);
    assert_eq!(c, [CR, b"\x03\x00\x00\x08\x02\xf0\x80\x7f"].concat());
    assert_eq!(
        s,
        [CC_SSL, b"\x03\x00\x00\x09\x02\xf0\x80\x7f\x01"].concat()
    );
    assert_eq!(
        kinds(t),
        vec![
            "Connected",
            "C2S/Wire:19",
            "S2C/Wire:19",
            "C2S/Wire:8",
            "S2C/Wire:9",
            "Fin { dir: C2S }",
            "Fin { dir: S2C }"
        ]
    );
    // Frame numbers: SYN-ACK is frame 2, CR frame 4, ..., server FIN frame 9.
    let frames: Vec<u64> = t.events.iter().map(|e| e.frame.unwrap()).collect();
    assert_eq!(frames, vec![2, 4, 5, 6, 7, 8, 9]);
    // Timestamps are the capture's (second i + 0.5 s).
    assert_eq!(t.events[0].t_us, 1_700_000_001_500_000);
}

// ------------------------------------------------------------------------------------------------
// Formats and link types

#[test]
fn pcap_both_byte_orders_and_nanoseconds() {
    let (f, segs) = rdp_conv("10.0.0.1:50000", "10.0.0.2:3389");
    for (be, ns) in [(false, false), (true, false), (false, true), (true, true)] {
        let file = pcap(&frames(&f, &segs, Link::Ethernet), 1, be, ns);
        let (t, err) = read_all(&file, None);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(t.len(), 1, "be={be} ns={ns}");
        assert_basic_rdp(&t[0], "10.0.0.1:50000", "10.0.0.2:3389");
    }
}

#[test]
fn every_link_type() {
    for link in [
        Link::Ethernet,
        Link::Vlan,
        Link::QinQ,
        Link::Sll,
        Link::Sll2,
        Link::Raw,
        Link::Ipv4Only,
        Link::Null,
    ] {
        let (f, segs) = rdp_conv("10.0.0.1:50000", "10.0.0.2:3389");
        let file = pcap(&frames(&f, &segs, link), link.linktype(), false, false);
        let (t, err) = read_all(&file, None);
        assert!(err.is_none(), "{link:?}: {err:?}");
        assert_eq!(t.len(), 1, "{link:?}");
        assert_basic_rdp(&t[0], "10.0.0.1:50000", "10.0.0.2:3389");
    }
    for link in [
        Link::Ethernet,
        Link::Vlan,
        Link::Sll,
        Link::Sll2,
        Link::Raw,
        Link::Null,
    ] {
        let (f, segs) = rdp_conv("[fd00::1]:50000", "[fd00::2]:3389");
        let lt = if matches!(link, Link::Raw) {
            229
        } else {
            link.linktype()
        };
        let file = pcap(&frames(&f, &segs, link), lt, false, false);
        let (t, err) = read_all(&file, None);
        assert!(err.is_none(), "v6 {link:?}: {err:?}");
        assert_eq!(t.len(), 1, "v6 {link:?}");
        assert_basic_rdp(&t[0], "[fd00::1]:50000", "[fd00::2]:3389");
    }
}

/// Splits an IP packet into fragments whose payload is at most `chunk` bytes (a multiple of 8).
fn fragment_ip(ip: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    use etherparse::{IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header};
    let v6 = ip[0] >> 4 == 6;
    let (payload, mut out) = if v6 {
        (&ip[40..], Vec::new())
    } else {
        (Ipv4Header::from_slice(ip).unwrap().1, Vec::new())
    };
    for (i, part) in payload.chunks(chunk).enumerate() {
        let offset = IpFragOffset::try_new(((i * chunk) / 8) as u16).unwrap();
        let more = (i + 1) * chunk < payload.len();
        let mut f = Vec::new();
        if v6 {
            let (mut h, _) = Ipv6Header::from_slice(ip).unwrap();
            h.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
            h.payload_length = (8 + part.len()) as u16;
            h.write(&mut f).unwrap();
            Ipv6FragmentHeader::new(IpNumber::TCP, offset, more, id)
                .write(&mut f)
                .unwrap();
        } else {
            let (mut h, _) = Ipv4Header::from_slice(ip).unwrap();
            h.identification = id as u16;
            h.dont_fragment = false;
            h.more_fragments = more;
            h.fragment_offset = offset;
            h.total_len = (h.header_len() + part.len()) as u16;
            h.write(&mut f).unwrap();
        }
        f.extend_from_slice(part);
        out.push(f);
    }
    out
}

#[test]
fn fragmented_ip_datagrams_are_reassembled() {
    // Every segment with a payload is cut into 8-byte IP fragments, sent last fragment first;
    // one fragment is sent twice. The conversation must read exactly as unfragmented.
    for (client, server, link) in [
        ("10.0.0.1:50000", "10.0.0.2:3389", Link::Ethernet),
        ("[fd00::1]:50000", "[fd00::2]:3389", Link::Raw),
    ] {
        let (f, segs) = rdp_conv(client, server);
        let mut fr = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let ip = f.ip(s);
            if s.payload.is_empty() {
                fr.push(link.frame(&ip));
                continue;
            }
            let mut parts = fragment_ip(&ip, 8, 0x4000 + i as u32);
            parts.reverse();
            parts.insert(1, parts[0].clone());
            fr.extend(parts.iter().map(|p| link.frame(p)));
        }
        let frames = whole_frames(fr);
        let lt = if client.starts_with('[') {
            229
        } else {
            link.linktype()
        };
        let file = pcap(&frames, lt, false, false);
        let (t, err) = read_all(&file, None);
        assert!(err.is_none(), "{client}: {err:?}");
        assert_eq!(t.len(), 1, "{client}");
        let c = t[0].stream(Dir::C2S, Layer::Wire);
        let s = t[0].stream(Dir::S2C, Layer::Wire);
        assert_eq!(
            c,
            [CR, b"\x03\x00\x00\x08\x02\xf0\x80\x7f"].concat(),
            "{client}"
        );
        assert_eq!(
            s,
            [CC_SSL, b"\x03\x00\x00\x09\x02\xf0\x80\x7f\x01"].concat(),
            "{client}"
        );
        assert!(
            kinds(&t[0]).contains(&"Fin { dir: S2C }".to_string()),
            "{client}: {:?}",
            kinds(&t[0])
        );
    }
}

#[test]
fn overlapping_fragments_with_different_bytes_are_not_trusted() {
    // The CR's fragments arrive twice, the second copy of one with other bytes: the datagram is
    // dropped (never guessed), so the client stream has a gap where the CR was.
    let (f, segs) = rdp_conv("10.0.0.1:50000", "10.0.0.2:3389");
    let mut fr = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let ip = f.ip(s);
        if i == 3 {
            let parts = fragment_ip(&ip, 16, 77);
            let mut evil = parts[1].clone();
            let n = evil.len();
            evil[n - 1] ^= 0xFF;
            fr.push(link_eth(&parts[0]));
            fr.push(link_eth(&evil));
            fr.extend(parts[1..].iter().map(|p| link_eth(p)));
        } else {
            fr.push(link_eth(&ip));
        }
    }
    let frames = whole_frames(fr);
    let (t, err) = read_all(&pcap(&frames, 1, false, false), None);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(t.len(), 1);
    assert!(
        kinds(&t[0]).contains(&"Gap { dir: C2S, len: 19 }".to_string()),
        "{:?}",
        kinds(&t[0])
    );
    assert_eq!(
        t[0].stream(Dir::C2S, Layer::Wire),
        b"\x03\x00\x00\x08\x02\xf0\x80\x7f",
        "a tampered datagram was delivered"
    );
    // The reader's counters say so.
    let bytes = pcap(&frames, 1, false, false);
    let mut it = read_conversations(&bytes[..], ReaderOptions::default()).expect("a pcap");
    for r in it.by_ref() {
        r.expect("no error");
    }
    let st = it.stats();
    assert_eq!(st.dropped_datagrams, 1, "{st:?}");
    assert_eq!(st.reassembled_datagrams, 0, "{st:?}");
}

/// Frames captured whole, on interface 0.
fn whole_frames(data: Vec<Vec<u8>>) -> Vec<Frame> {
    data.into_iter()
        .map(|data| Frame {
            caplen: data.len(),
            data,
            iface: 0,
        })
        .collect()
}

fn link_eth(ip: &[u8]) -> Vec<u8> {
    Link::Ethernet.frame(ip)
}

#[test]
fn pcapng_several_interfaces_and_resolutions() {
    // Interface 0: Ethernet µs; interface 1: raw IP ns; interface 2: SLL2 2^-20 s.
    let ifaces = [(1u32, 6u8), (101, 9), (276, 0x80 | 20)];
    let (f1, s1) = rdp_conv("10.0.0.1:50000", "10.0.0.2:3389");
    let (f2, s2) = rdp_conv("10.0.1.1:50001", "10.0.1.2:3389");
    let (f3, s3) = rdp_conv("[fd00::1]:50002", "[fd00::2]:3389");
    // Interleave the three conversations frame by frame.
    let mut all = Vec::new();
    let fr1 = frames(&f1, &s1, Link::Ethernet);
    let fr2 = frames(&f2, &s2, Link::Raw);
    let fr3 = frames(&f3, &s3, Link::Sll2);
    for ((a, mut b), mut c) in fr1.into_iter().zip(fr2).zip(fr3) {
        b.iface = 1;
        c.iface = 2;
        all.push(a);
        all.push(b);
        all.push(c);
    }
    let file = pcapng(&ifaces, None, &all);
    let (t, err) = read_all(&file, None);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(t.len(), 3);
    for tr in &t {
        assert_eq!(tr.stream(Dir::C2S, Layer::Wire)[..19], *CR);
        assert!(matches!(
            tr.events.last().unwrap().kind,
            EventKind::Fin { dir: Dir::S2C }
        ));
    }
    let first = t.iter().find(|t| t.client.port() == 50000).unwrap();
    // Frame numbers count the interleaved frames: conversation 1 has frames 1, 4, 7, ...
    assert_eq!(first.events[0].frame, Some(4));
    // Every interface resolution gives the same time for the same index (second + 0.5 s).
    let third = t.iter().find(|t| t.client.port() == 50002).unwrap();
    assert_eq!(third.events[0].t_us, 1_700_000_005_500_000);
    let second = t.iter().find(|t| t.client.port() == 50001).unwrap();
    assert_eq!(second.events[0].t_us, 1_700_000_004_500_000);
}

// ------------------------------------------------------------------------------------------------
// Reassembly

fn data_conv() -> (Flow, Vec<Seg>, Vec<u8>) {
    let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let mut s = f.handshake();
    s.push(f.c(CR));
    s.push(f.s(CC_SSL));
    let body: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    for chunk in body.chunks(500) {
        s.push(f.s(chunk));
    }
    (f, s, [CC_SSL, &body].concat())
}

#[test]
fn reordered_duplicated_overlapping_segments_reassemble_exactly() {
    let (mut f, mut s, server_stream) = data_conv();
    // Data segments are s[5..13]: reverse two, duplicate one, add an overlapping retransmission.
    s.swap(6, 7);
    s.swap(9, 11);
    let dup = s[8].clone();
    s.insert(9, dup);
    let mut overlap = s[10].clone();
    overlap.seq = overlap.seq.wrapping_sub(100);
    overlap.payload = [
        &server_stream[19 + 500 * 4 - 100..19 + 500 * 4],
        &overlap.payload[..],
    ]
    .concat();
    s.push(overlap);
    s.push(f.fin(true));
    s.push(f.fin(false));
    let file = pcap(&frames(&f, &s, Link::Ethernet), 1, false, false);
    let (t, err) = read_all(&file, None);
    assert!(err.is_none());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].stream(Dir::S2C, Layer::Wire), server_stream);
    assert!(!t[0]
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Gap { .. })));
}

#[test]
fn dropped_segment_is_an_exact_gap() {
    let (mut f, mut s, server_stream) = data_conv();
    // Drop the third server data segment (bytes 19+1000 .. 19+1500 of the server stream).
    s.remove(7);
    // The client acknowledges everything, then both close.
    let ack = f.c(&[]);
    s.push(ack);
    s.push(f.fin(true));
    s.push(f.fin(false));
    let file = pcap(&frames(&f, &s, Link::Ethernet), 1, false, false);
    let (t, _) = read_all(&file, None);
    let tr = &t[0];
    let gaps: Vec<(Dir, u64)> = tr
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Gap { dir, len } => Some((dir, len)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, vec![(Dir::S2C, 500)], "{:?}", kinds(tr));
    let got = tr.stream(Dir::S2C, Layer::Wire);
    assert_eq!(
        got,
        [&server_stream[..19 + 1000], &server_stream[19 + 1500..]].concat()
    );
    // The gap sits between the bytes before and after it.
    let pos = tr
        .events
        .iter()
        .position(|e| matches!(e.kind, EventKind::Gap { .. }))
        .unwrap();
    let before: usize = tr.events[..pos]
        .iter()
        .map(|e| match &e.kind {
            EventKind::Data {
                dir: Dir::S2C,
                bytes,
                ..
            } => bytes.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(before, 19 + 1000);
}

#[test]
fn dropped_segment_at_capture_end_and_lost_tail() {
    let (f, mut s, _) = data_conv();
    s.remove(7); // a hole, nothing acknowledges it, capture ends
    let file = pcap(&frames(&f, &s, Link::Ethernet), 1, false, false);
    let (t, _) = read_all(&file, None);
    let k = kinds(&t[0]);
    assert!(
        k.contains(&"Gap { dir: S2C, len: 500 }".to_string()),
        "{k:?}"
    );
    assert_eq!(k.last().unwrap(), "CaptureEnd");
}

#[test]
fn snaplen_truncated_frames_are_gaps_of_the_missing_bytes() {
    let (f, s, server_stream) = data_conv();
    let mut fr = frames(&f, &s, Link::Ethernet);
    // Cut the 2nd server data frame (s[6]) to keep only 100 payload bytes (14 eth + 20 ip + 20 tcp).
    fr[6].caplen = 54 + 100;
    let file = pcap(&fr, 1, false, false);
    let (t, _) = read_all(&file, None);
    let k = kinds(&t[0]);
    assert!(
        k.contains(&"Gap { dir: S2C, len: 400 }".to_string()),
        "{k:?}"
    );
    let got = t[0].stream(Dir::S2C, Layer::Wire);
    assert_eq!(
        got,
        [&server_stream[..19 + 600], &server_stream[19 + 1000..]].concat()
    );
    let gap = t[0]
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Gap { .. }))
        .unwrap();
    assert_eq!(gap.frame, Some(7));
}

#[test]
fn refused_and_reset_and_capture_end() {
    // SYN answered by RST: refused.
    let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let syn = f.seg(
        true,
        Fl {
            syn: true,
            ..Fl::default()
        },
        &[],
    );
    let rst = f.seg(
        false,
        Fl {
            rst: true,
            ack: true,
            ..Fl::default()
        },
        &[],
    );
    let file = pcap(&frames(&f, &[syn, rst], Link::Ethernet), 1, false, false);
    let (t, _) = read_all(&file, None);
    assert_eq!(kinds(&t[0]), vec!["ConnectFailed(Refused)"]);
    assert_eq!(t[0].events[0].frame, Some(2));

    // RST from the server mid-session.
    let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let mut s = f.handshake();
    s.push(f.c(CR));
    s.push(f.seg(
        false,
        Fl {
            rst: true,
            ack: true,
            ..Fl::default()
        },
        &[],
    ));
    let file = pcap(&frames(&f, &s, Link::Ethernet), 1, false, false);
    let (t, _) = read_all(&file, None);
    assert_eq!(
        kinds(&t[0]),
        vec!["Connected", "C2S/Wire:19", "Rst { dir: S2C }"]
    );

    // The capture ends while the conversation is open.
    let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let mut s = f.handshake();
    s.push(f.c(CR));
    let file = pcap(&frames(&f, &s, Link::Ethernet), 1, false, false);
    let (t, _) = read_all(&file, None);
    assert_eq!(kinds(&t[0]), vec!["Connected", "C2S/Wire:19", "CaptureEnd"]);

    // A SYN never answered, to the RDP port: a timeout at capture end.
    let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let s1 = f.seg(
        true,
        Fl {
            syn: true,
            ..Fl::default()
        },
        &[],
    );
    let file = pcap(
        &frames(&f, &[s1.clone(), s1], Link::Ethernet),
        1,
        false,
        false,
    );
    let (t, _) = read_all(&file, None);
    assert!(matches!(
        t[0].events[0].kind,
        EventKind::ConnectFailed(ConnectFailure::TimedOut { after_ms: 1000 })
    ));
}

#[test]
fn non_rdp_skipped_rdp_on_any_port_found_mid_connection_accepted() {
    let mut segs_all: Vec<Frame> = Vec::new();
    // HTTP on port 8080: skipped.
    let mut h = Flow::new("10.0.0.9:40000", "10.0.0.2:8080");
    let mut s = h.handshake();
    s.push(h.c(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    s.push(h.s(b"HTTP/1.1 200 OK\r\n\r\n"));
    s.push(h.fin(true));
    s.push(h.fin(false));
    segs_all.extend(frames(&h, &s, Link::Ethernet));
    // RDP on port 44444: found by content.
    let (f, s) = rdp_conv("10.0.0.1:50000", "10.0.0.2:44444");
    segs_all.extend(frames(&f, &s, Link::Ethernet));
    // Capture started mid-connection on 3389: first data is a TLS record from the server.
    let mut m = Flow::new("10.0.0.3:50001", "10.0.0.2:3389");
    let segs = vec![
        m.s(b"\x17\x03\x03\x00\x05hello"),
        m.c(b"\x17\x03\x03\x00\x02hi"),
    ];
    segs_all.extend(frames(&m, &segs, Link::Ethernet));
    let file = pcap(&segs_all, 1, false, false);
    let (t, err) = read_all(&file, None);
    assert!(err.is_none());
    let ports: Vec<u16> = t.iter().map(|t| t.server.port()).collect();
    assert_eq!(ports, vec![44444, 3389], "http skipped");
    let mid = &t[1];
    assert_eq!(mid.client, "10.0.0.3:50001".parse::<SocketAddr>().unwrap());
    assert!(kinds(mid)[0].contains("mid-connection"));
    assert_eq!(
        mid.stream(Dir::S2C, Layer::Wire),
        b"\x17\x03\x03\x00\x05hello"
    );
}

#[test]
fn retention_limit_elides_counts() {
    let (mut f, mut s, _) = data_conv();
    s.push(f.fin(true));
    s.push(f.fin(false));
    let file = pcap(&frames(&f, &s, Link::Ethernet), 1, false, false);
    let (t, _) = read_with(
        &file,
        ReaderOptions {
            keylog: None,
            max_retained_per_direction: 1000,
            ..ReaderOptions::default()
        },
    );
    let tr = &t[0];
    assert_eq!(tr.stream(Dir::S2C, Layer::Wire).len(), 1000);
    let elided: u64 = tr
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Elided {
                dir: Dir::S2C, len, ..
            } => Some(len),
            _ => None,
        })
        .sum();
    assert_eq!(elided, 19 + 4000 - 1000);
    // Consecutive elided segments are merged into one event.
    assert_eq!(
        tr.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Elided { .. }))
            .count(),
        1
    );
}

// ------------------------------------------------------------------------------------------------
// Damaged files

fn good_file() -> Vec<u8> {
    let (f, segs) = rdp_conv("10.0.0.1:50000", "10.0.0.2:3389");
    let (f2, segs2) = rdp_conv("10.0.0.1:50001", "10.0.0.2:3389");
    let mut fr = frames(&f, &segs, Link::Ethernet);
    fr.extend(frames(&f2, &segs2, Link::Ethernet));
    pcap(&fr, 1, false, false)
}

#[test]
fn damaged_files_report_offset_and_keep_earlier_conversations() {
    let good = good_file();
    // Truncated in the middle of the second conversation's 3rd frame.
    let rec = |n: usize| -> usize {
        // byte offset of record n (0-based)
        let mut off = 24;
        for _ in 0..n {
            let incl = u32::from_le_bytes(good[off + 8..off + 12].try_into().unwrap()) as usize;
            off += 16 + incl;
        }
        off
    };
    let cut = rec(11) + 20;
    let (t, err) = read_all(&good[..cut], None);
    let err = err.expect("an error");
    assert_eq!(err.offset(), rec(11) as u64, "{err}");
    assert_eq!(err.frame(), Some(12));
    assert!(err.to_string().contains("truncated pcap record"), "{err}");
    assert_eq!(
        t.len(),
        2,
        "the first conversation, and the second up to the damage"
    );
    assert_eq!(t[0].client.port(), 50000);
    assert!(matches!(
        t[1].events.last().unwrap().kind,
        EventKind::CaptureEnd
    ));
    assert!(kinds(&t[1]).iter().any(|k| k.contains("capture cut short")));

    // An absurd record length.
    let mut bad = good.clone();
    let at = rec(3);
    bad[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let (t, err) = read_all(&bad, None);
    let err = err.unwrap();
    assert_eq!(err.offset(), at as u64);
    assert_eq!(err.frame(), Some(4));
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    assert_eq!(t.len(), 1, "the open conversation is still reported");

    // Not a capture at all.
    let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
    let err = read_conversations(&png[..], ReaderOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("png"), "{err}");
    assert_eq!(err.offset(), 0);
    let err = read_conversations(&b"garbage garbage"[..], ReaderOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, CaptureError::NotACapture { .. }));
    let err = read_conversations(&b"\xd4\xc3"[..], ReaderOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, CaptureError::Truncated { .. }));
}

#[test]
fn damaged_pcapng_blocks() {
    let (f, segs) = rdp_conv("10.0.0.1:50000", "10.0.0.2:3389");
    let good = pcapng(&[(1, 6)], None, &frames(&f, &segs, Link::Ethernet));
    let (t, err) = read_all(&good, None);
    assert!(err.is_none() && t.len() == 1);
    // Find the 5th EPB and give it an absurd length.
    let mut off = 0usize;
    let mut epbs = Vec::new();
    while off + 8 <= good.len() {
        let ty = u32::from_le_bytes(good[off..off + 4].try_into().unwrap());
        let len = u32::from_le_bytes(good[off + 4..off + 8].try_into().unwrap()) as usize;
        if ty == 6 {
            epbs.push(off);
        }
        off += len;
    }
    for absurd in [0xFFFF_FFFCu32, 7, 8, 0x7FFF_FFF0] {
        let mut bad = good.clone();
        bad[epbs[4] + 4..epbs[4] + 8].copy_from_slice(&absurd.to_le_bytes());
        let (t, err) = read_all(&bad, None);
        let err = err.expect("error");
        assert_eq!(err.offset(), epbs[4] as u64, "{absurd:#x}: {err}");
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].stream(Dir::C2S, Layer::Wire),
            CR,
            "frames before the damage are kept"
        );
    }
    // Mismatched trailing length.
    let mut bad = good.clone();
    let len = u32::from_le_bytes(bad[epbs[2] + 4..epbs[2] + 8].try_into().unwrap()) as usize;
    bad[epbs[2] + len - 4] ^= 0x40;
    let (_, err) = read_all(&bad, None);
    assert!(err.unwrap().to_string().contains("trailing block length"));
    // A packet on an undefined interface.
    let mut bad = good.clone();
    bad[epbs[1] + 8] = 9;
    let (_, err) = read_all(&bad, None);
    let err = err.unwrap();
    assert!(err.to_string().contains("interface id 9"), "{err}");
    assert_eq!(err.frame(), Some(2));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_all(&data, None);
        let mut with_magic = vec![0xd4, 0xc3, 0xb2, 0xa1];
        with_magic.extend_from_slice(&data);
        let _ = read_all(&with_magic, None);
        let mut ng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        ng.extend_from_slice(&data);
        let _ = read_all(&ng, None);
    }

    #[test]
    fn mutated_captures_never_panic(muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
                                     cut in any::<prop::sample::Index>(), ng in any::<bool>()) {
        let mut file = if ng {
            let (f, segs) = data_conv_segs();
            pcapng(&[(1, 6), (101, 9)], Some("CLIENT_RANDOM 00 11"), &frames(&f, &segs, Link::Ethernet))
        } else {
            good_file()
        };
        for (i, b) in muts {
            let at = i.index(file.len());
            file[at] = b;
        }
        let keep = cut.index(file.len() + 1);
        let _ = read_all(&file[..keep], Some(KeyLog::parse("")));
    }
}

fn data_conv_segs() -> (Flow, Vec<Seg>) {
    let (f, s, _) = data_conv();
    (f, s)
}

// ------------------------------------------------------------------------------------------------
// TLS decryption with real sessions

#[derive(Debug, Default)]
struct Keys(Mutex<String>);

impl rustls::KeyLog for Keys {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut s = self.0.lock().unwrap();
        s.push_str(&format!("{label} {} {}\n", hex(client_random), hex(secret)));
    }
    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Wire records of a TLS session: (from client, bytes), in the order they were sent.
struct TlsRun {
    wire: Vec<(bool, Vec<u8>)>,
    keylog: String,
    client_plain: Vec<u8>,
    server_plain: Vec<u8>,
    cert_der: Vec<u8>,
}

fn rustls_session(suite: rustls::CipherSuite, v13: bool) -> TlsRun {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| s.suite() == suite);
    assert_eq!(provider.cipher_suites.len(), 1, "suite {suite:?} available");
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = if v13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let ck = rcgen::generate_simple_self_signed(vec!["rdp.test".to_string()]).unwrap();
    let cert_der = ck.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let keys = Arc::new(Keys::default());
    let mut client_cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider.clone())))
        .with_no_client_auth();
    client_cfg.key_log = keys.clone();
    let mut client =
        rustls::ClientConnection::new(Arc::new(client_cfg), "rdp.test".try_into().unwrap())
            .unwrap();
    let mut server = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
    let mut wire = Vec::new();
    let client_plain: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    let server_plain = b"server says hello over tls, twice over: hello".repeat(1000);
    let mut sent_c = false;
    let mut sent_s = false;
    let mut got_c = Vec::new(); // what the server received
    let mut got_s = Vec::new(); // what the client received
    fn drain(r: &mut dyn Read, into: &mut Vec<u8>) {
        let mut tmp = [0u8; 65536];
        while let Ok(n) = r.read(&mut tmp) {
            if n == 0 {
                break;
            }
            into.extend_from_slice(&tmp[..n]);
        }
    }
    for _ in 0..1000 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets().unwrap();
                drain(&mut server.reader(), &mut got_c);
            }
            wire.push((true, buf));
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
                drain(&mut client.reader(), &mut got_s);
            }
            wire.push((false, buf));
        }
        if !client.is_handshaking() && !sent_c {
            sent_c = true;
            client.writer().write_all(&client_plain).unwrap();
        }
        if got_c.len() == client_plain.len() && !sent_s {
            sent_s = true;
            server.writer().write_all(&server_plain).unwrap();
        }
        if got_s.len() == server_plain.len() && !client.wants_write() && !server.wants_write() {
            break;
        }
    }
    assert_eq!(got_c, client_plain);
    assert_eq!(got_s, server_plain, "the in-memory session completed");
    // The client ends with close_notify.
    client.send_close_notify();
    let mut buf = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut buf).unwrap();
    }
    wire.push((true, buf));
    let keylog = keys.0.lock().unwrap().clone();
    TlsRun {
        wire,
        keylog,
        client_plain,
        server_plain,
        cert_der,
    }
}

/// Frames a TLS run after an X.224 CR / CC(SSL) exchange, in ≤1200-byte segments.
fn tls_capture(run: &TlsRun, dsb: bool) -> Vec<u8> {
    let mut f = Flow::new("10.1.0.1:51000", "10.1.0.2:3389");
    let mut s = f.handshake();
    s.push(f.c(CR));
    s.push(f.s(CC_SSL));
    for (from_client, bytes) in &run.wire {
        for chunk in bytes.chunks(1200) {
            let seg = if *from_client { f.c(chunk) } else { f.s(chunk) };
            s.push(seg);
        }
    }
    s.push(f.fin(true));
    s.push(f.fin(false));
    let fr = frames(&f, &s, Link::Ethernet);
    if dsb {
        pcapng(&[(1, 6)], Some(&run.keylog), &fr)
    } else {
        pcap(&fr, 1, false, false)
    }
}

fn check_decrypted(run: &TlsRun, t: &Trace, version: &str, suite: &str) {
    assert_eq!(t.stream(Dir::C2S, Layer::Inner), run.client_plain);
    assert_eq!(t.stream(Dir::S2C, Layer::Inner), run.server_plain);
    let info = t
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::TlsSession(i) => Some(i.clone()),
            _ => None,
        })
        .expect("a TlsSession event");
    assert_eq!(info.version, version);
    assert_eq!(info.cipher_suite, suite);
    assert_eq!(
        info.certificates,
        vec![run.cert_der.clone()],
        "the certificate chain is recovered"
    );
    assert!(
        t.events.iter().any(|e| matches!(&e.kind, EventKind::Note(n) if n == "tls alert: warning close_notify from client")),
        "{:?}",
        kinds(t)
    );
    assert!(
        !t.keylog.is_empty(),
        "the session's key log lines are attached"
    );
    // Each Inner event has the frame of a packet that carried wire data of the same direction.
    for (i, e) in t.events.iter().enumerate() {
        if let EventKind::Data {
            dir,
            layer: Layer::Inner,
            ..
        } = e.kind
        {
            let wire_frame = t.events[..i].iter().rev().find_map(|w| match w.kind {
                EventKind::Data {
                    dir: d,
                    layer: Layer::Wire,
                    ..
                } if d == dir => w.frame,
                _ => None,
            });
            assert_eq!(wire_frame, e.frame);
        }
    }
}

#[test]
fn tls12_aes_gcm_decrypted() {
    let run = rustls_session(
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        false,
    );
    let (t, err) = read_all(&tls_capture(&run, false), Some(KeyLog::parse(&run.keylog)));
    assert!(err.is_none());
    check_decrypted(
        &run,
        &t[0],
        "TLSv1.2",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    );
    let run = rustls_session(
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        false,
    );
    let (t, _) = read_all(&tls_capture(&run, false), Some(KeyLog::parse(&run.keylog)));
    check_decrypted(
        &run,
        &t[0],
        "TLSv1.2",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    );
}

#[test]
fn tls12_chacha_decrypted() {
    let run = rustls_session(
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        false,
    );
    let (t, _) = read_all(&tls_capture(&run, false), Some(KeyLog::parse(&run.keylog)));
    check_decrypted(
        &run,
        &t[0],
        "TLSv1.2",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    );
}

#[test]
fn tls13_decrypted_from_pcapng_secrets_block() {
    for (suite, name) in [
        (
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            "TLS13_AES_128_GCM_SHA256",
        ),
        (
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            "TLS13_AES_256_GCM_SHA384",
        ),
        (
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            "TLS13_CHACHA20_POLY1305_SHA256",
        ),
    ] {
        let run = rustls_session(suite, true);
        // Secrets only in the file's Decryption Secrets Block.
        let (t, err) = read_all(&tls_capture(&run, true), None);
        assert!(err.is_none());
        check_decrypted(&run, &t[0], "TLSv1.3", name);
    }
}

#[test]
fn tls_without_secrets_gives_handshake_facts_only() {
    let run = rustls_session(
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        false,
    );
    let (t, _) = read_all(&tls_capture(&run, false), None);
    assert!(!t[0].has_inner());
    let info = t[0].events.iter().find_map(|e| match &e.kind {
        EventKind::TlsSession(i) => Some(i.clone()),
        _ => None,
    });
    let info = info.unwrap();
    assert_eq!(
        info.certificates,
        vec![run.cert_der.clone()],
        "tls 1.2 certificates are cleartext"
    );
    // Wrong secrets: a note, no plaintext.
    let wrong = run
        .keylog
        .lines()
        .map(|l| {
            let mut p: Vec<String> = l.split(' ').map(String::from).collect();
            p[2] = "00".repeat(48);
            p.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (t, _) = read_all(&tls_capture(&run, false), Some(KeyLog::parse(&wrong)));
    assert!(!t[0].has_inner());
    assert!(
        kinds(&t[0])
            .iter()
            .any(|k| k.contains("tls decryption stopped")),
        "{:?}",
        kinds(&t[0])
    );
}

#[test]
fn tls_decryption_stops_at_a_gap_and_never_guesses() {
    let run = rustls_session(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, true);
    let mut f = Flow::new("10.1.0.1:51000", "10.1.0.2:3389");
    let mut s = f.handshake();
    s.push(f.c(CR));
    s.push(f.s(CC_SSL));
    let mut server_segments = Vec::new();
    for (from_client, bytes) in &run.wire {
        for chunk in bytes.chunks(1200) {
            let seg = if *from_client { f.c(chunk) } else { f.s(chunk) };
            if !from_client {
                server_segments.push(s.len());
            }
            s.push(seg);
        }
    }
    // Drop a server segment in the middle of its application data.
    let drop_at = server_segments[server_segments.len() - 4];
    s.remove(drop_at);
    s.push(f.fin(true));
    s.push(f.fin(false));
    let file = pcap(&frames(&f, &s, Link::Ethernet), 1, false, false);
    let (t, _) = read_all(&file, Some(KeyLog::parse(&run.keylog)));
    let tr = &t[0];
    assert!(
        kinds(tr)
            .iter()
            .any(|k| k.contains("Gap { dir: S2C, len: 1200 }")),
        "{:?}",
        kinds(tr)
    );
    assert!(
        kinds(tr).iter().any(|k| k.contains("stopped at a gap")),
        "{:?}",
        kinds(tr)
    );
    let inner = tr.stream(Dir::S2C, Layer::Inner);
    assert!(!inner.is_empty() && inner.len() < run.server_plain.len());
    assert_eq!(
        inner[..],
        run.server_plain[..inner.len()],
        "only bytes before the gap, exactly"
    );
    // The client's direction is unaffected.
    assert_eq!(tr.stream(Dir::C2S, Layer::Inner), run.client_plain);
}

/// TLS 1.0 / 1.2 with AES-CBC (HMAC-SHA1 / SHA256) between OpenSSL peers over loopback, recorded.
fn openssl_session(version: openssl::ssl::SslVersion, cipher: &str) -> TlsRun {
    let ck = rcgen::generate_simple_self_signed(vec!["rdp.test".to_string()]).unwrap();
    // An ECDSA certificate: the ECDHE_ECDSA suites.
    let key = openssl::pkey::PKey::private_key_from_der(&ck.key_pair.serialize_der()).unwrap();
    let cert = openssl::x509::X509::from_der(ck.cert.der()).unwrap();
    openssl_session_with(version, cipher, key, cert)
}

/// A self-signed RSA-2048 server identity (for the static-RSA key exchange suites).
fn rsa_identity() -> (
    openssl::pkey::PKey<openssl::pkey::Private>,
    openssl::x509::X509,
) {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "rdp.test").unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (key, b.build())
}

fn openssl_session_with(
    version: openssl::ssl::SslVersion,
    cipher: &str,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    cert: openssl::x509::X509,
) -> TlsRun {
    use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
    let cert_der = cert.to_der().unwrap();
    let mut acc = SslAcceptor::mozilla_intermediate(SslMethod::tls()).unwrap();
    acc.set_private_key(&key).unwrap();
    acc.set_certificate(&cert).unwrap();
    acc.set_min_proto_version(Some(version)).unwrap();
    acc.set_max_proto_version(Some(version)).unwrap();
    acc.set_cipher_list(&format!("{cipher}:@SECLEVEL=0"))
        .unwrap();
    acc.set_options(openssl::ssl::SslOptions::NO_TICKET);
    let acc = acc.build();
    let log = Arc::new(Mutex::new(String::new()));
    let mut conn = SslConnector::builder(SslMethod::tls()).unwrap();
    conn.set_verify(SslVerifyMode::NONE);
    conn.set_min_proto_version(Some(version)).unwrap();
    conn.set_max_proto_version(Some(version)).unwrap();
    conn.set_cipher_list(&format!("{cipher}:@SECLEVEL=0"))
        .unwrap();
    let l2 = log.clone();
    conn.set_keylog_callback(move |_, line| {
        l2.lock().unwrap().push_str(line);
        l2.lock().unwrap().push('\n');
    });
    let conn = conn.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let wire = Arc::new(Mutex::new(Vec::<(bool, Vec<u8>)>::new()));
    let client_plain: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
    let server_plain = b"cbc says hi ".repeat(2000);
    let (w2, sp) = (wire.clone(), server_plain.clone());
    let n_expect = client_plain.len();
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut s = acc
            .accept(Rec {
                s: sock,
                w: w2,
                client: false,
            })
            .unwrap();
        let mut got = vec![0u8; n_expect];
        s.read_exact(&mut got).unwrap();
        s.write_all(&sp).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        got
    });
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut c = conn
        .connect(
            "rdp.test",
            Rec {
                s: sock,
                w: wire.clone(),
                client: true,
            },
        )
        .unwrap();
    c.write_all(&client_plain).unwrap();
    let mut got = vec![0u8; server_plain.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, server_plain);
    c.shutdown().unwrap();
    drop(c);
    let at_server = server.join().unwrap();
    assert_eq!(at_server, client_plain);
    let wire = wire.lock().unwrap().clone();
    let keylog = log.lock().unwrap().clone();
    TlsRun {
        wire,
        keylog,
        client_plain,
        server_plain,
        cert_der,
    }
}

/// Recorded writes: (from client, bytes).
type WireLog = Arc<Mutex<Vec<(bool, Vec<u8>)>>>;

/// A socket that records what it writes (in global order) for the capture.
#[derive(Debug)]
struct Rec {
    s: std::net::TcpStream,
    w: WireLog,
    client: bool,
}

impl Read for Rec {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.s.read(b)
    }
}

impl Write for Rec {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        // Record before sending so that the peer's reply is always recorded after it.
        self.w.lock().unwrap().push((self.client, b.to_vec()));
        self.s.write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

#[test]
fn tls10_and_tls12_cbc_decrypted() {
    use openssl::ssl::SslVersion;
    for (v, cipher, vname, sname) in [
        (
            SslVersion::TLS1,
            "ECDHE-ECDSA-AES128-SHA",
            "TLSv1.0",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        ),
        (
            SslVersion::TLS1_1,
            "ECDHE-ECDSA-AES256-SHA",
            "TLSv1.1",
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        ),
        (
            SslVersion::TLS1_2,
            "ECDHE-ECDSA-AES128-SHA256",
            "TLSv1.2",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        ),
        (
            SslVersion::TLS1_2,
            "ECDHE-ECDSA-AES256-SHA384",
            "TLSv1.2",
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        ),
    ] {
        let run = openssl_session(v, cipher);
        let (t, err) = read_all(&tls_capture(&run, false), Some(KeyLog::parse(&run.keylog)));
        assert!(err.is_none());
        check_decrypted(&run, &t[0], vname, sname);
    }
}

#[test]
fn static_rsa_sessions_decrypted_with_the_server_key() {
    // OpenSSL 3 negotiates the extended master secret (RFC 7627) by default, so this also checks the
    // session-hash derivation; the jovair corpus capture (Windows 7, TLS 1.0) checks the plain one.
    use openssl::ssl::SslVersion;
    for (v, cipher, vname, sname) in [
        (
            SslVersion::TLS1,
            "AES128-SHA",
            "TLSv1.0",
            "TLS_RSA_WITH_AES_128_CBC_SHA",
        ),
        (
            SslVersion::TLS1_2,
            "AES128-GCM-SHA256",
            "TLSv1.2",
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            SslVersion::TLS1_2,
            "AES256-SHA256",
            "TLSv1.2",
            "TLS_RSA_WITH_AES_256_CBC_SHA256",
        ),
    ] {
        let (key, cert) = rsa_identity();
        let pem = key.private_key_to_pem_pkcs8().unwrap();
        let run = openssl_session_with(v, cipher, key, cert);
        let mut kl = KeyLog::default();
        kl.add_rsa_key(&pem).unwrap();
        let (t, err) = read_all(&tls_capture(&run, false), Some(kl));
        assert!(err.is_none());
        check_decrypted(&run, &t[0], vname, sname);
        // The derived master secret is the one OpenSSL logged.
        let logged = run
            .keylog
            .lines()
            .find(|l| l.starts_with("CLIENT_RANDOM"))
            .unwrap();
        assert_eq!(t[0].keylog, vec![logged.to_string()], "{sname}");
    }
    // A key that is not RSA, and a file that is no key, are refused with a reason.
    let ec = rcgen::KeyPair::generate().unwrap();
    assert!(KeyLog::default()
        .add_rsa_key(ec.serialize_pem().as_bytes())
        .unwrap_err()
        .to_string()
        .contains("not an RSA key"));
    assert!(KeyLog::default()
        .add_rsa_key(b"hello")
        .unwrap_err()
        .to_string()
        .contains("no private key"));
}

// ------------------------------------------------------------------------------------------------
// Bounded on hostile shapes (captures written to a temp dir, streamed back)

/// Writes a classic pcap (Ethernet) of `frames` to `path` without holding them all.
fn write_pcap(path: &std::path::Path, frames: impl Iterator<Item = Frame>) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    w.write_all(&pcap(&[], 1, false, false)).unwrap();
    for (i, f) in frames.enumerate() {
        for x in [
            1_700_000_000 + i as u32,
            500_000,
            f.caplen as u32,
            f.data.len() as u32,
        ] {
            w.write_all(&x.to_le_bytes()).unwrap();
        }
        w.write_all(&f.data[..f.caplen]).unwrap();
    }
    w.flush().unwrap();
}

/// Reads every conversation of the file at `path`, with the reader's counters.
fn read_file(path: &std::path::Path) -> (Vec<Trace>, rdprobe::capture::reader::ReaderStats) {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut it = read_conversations(f, ReaderOptions::default()).expect("a pcap");
    let traces: Vec<Trace> = it.by_ref().map(|r| r.expect("no error")).collect();
    (traces, it.stats())
}

/// One RDP conversation (SYN seen, port 3389) of `packets` 1,400-byte data segments alternating
/// client and server, each frame captured up to `keep` payload bytes.
fn cut_conversation(packets: usize, keep: usize) -> (Flow, impl Iterator<Item = Frame>) {
    let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let mut segs = f.handshake();
    segs.push(f.c(CR));
    segs.push(f.s(CC_SSL));
    let head = segs.len();
    let payload = vec![0x17u8; 1400];
    for i in 0..packets {
        segs.push(if i % 2 == 0 {
            f.c(&payload)
        } else {
            f.s(&payload)
        });
    }
    segs.push(f.fin(true));
    segs.push(f.fin(false));
    let last = segs.len() - 2;
    let flow = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let frames = segs.into_iter().enumerate().map(move |(i, s)| {
        let data = Link::Ethernet.frame(&flow.ip(&s));
        let caplen = if (head..last).contains(&i) {
            54 + keep
        } else {
            data.len()
        };
        Frame {
            caplen,
            data,
            iface: 0,
        }
    });
    (f, frames)
}

#[test]
fn headers_only_capture_stays_a_handful_of_events() {
    // Every data segment is cut to its headers: each one is a gap. Consecutive gaps of a direction
    // are one event, so the Trace does not grow with the packet count.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headers-only.pcap");
    let packets = 200_000;
    let (_, frames) = cut_conversation(packets, 0);
    write_pcap(&path, frames);
    let (t, st) = read_file(&path);
    assert_eq!(t.len(), 1);
    let k = kinds(&t[0]);
    assert!(
        t[0].events.len() <= 10,
        "{} events: {:?}",
        t[0].events.len(),
        &k[..k.len().min(12)]
    );
    let missing = |d: Dir| -> u64 {
        t[0].events
            .iter()
            .map(|e| match e.kind {
                EventKind::Gap { dir, len } if dir == d => len,
                _ => 0,
            })
            .sum()
    };
    // Exactly the bytes that were cut, per direction.
    assert_eq!(missing(Dir::C2S), 1400 * packets as u64 / 2);
    assert_eq!(missing(Dir::S2C), 1400 * packets as u64 / 2);
    // The first gap keeps the frame of the first cut segment (frames 1-5: handshake, CR, CC).
    let first_gap = t[0]
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Gap { .. }))
        .unwrap();
    assert_eq!(first_gap.frame, Some(6));
    assert_eq!(st.truncated_conversations, 0);
    // Decoding still ends with a verdict, and a bounded list of notes.
    let r = rdprobe::decode::decode_report(&t[0]);
    assert!(r.notes.len() <= 10, "{:?}", r.notes);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("bytes missing from the client's stream")),
        "{:?}",
        r.notes
    );
    assert!(!r.summary.is_empty());
}

#[test]
fn too_many_events_truncate_the_conversation_with_a_note() {
    // One captured byte per 1,400-byte segment: data and gap alternate in each direction, nothing
    // merges, so the per-conversation cap is what bounds the Trace.
    use rdprobe::capture::reader::MAX_EVENTS_PER_CONVERSATION;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-byte.pcap");
    let packets = MAX_EVENTS_PER_CONVERSATION;
    let (_, frames) = cut_conversation(packets, 1);
    write_pcap(&path, frames);
    let (t, st) = read_file(&path);
    assert_eq!(t.len(), 1);
    let ev = &t[0].events;
    assert!(
        ev.len() <= MAX_EVENTS_PER_CONVERSATION + 32,
        "{} events",
        ev.len()
    );
    assert_eq!(st.truncated_conversations, 1);
    let note = ev
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Note(n) if n.contains("truncated for memory") => Some(n.clone()),
            _ => None,
        })
        .expect("a truncation note");
    assert!(note.contains("counted, not stored"), "{note}");
    // Every byte is still accounted for: kept, elided or missing.
    let total = |d: Dir| -> u64 {
        ev.iter()
            .map(|e| match &e.kind {
                EventKind::Data { dir, bytes, .. } if *dir == d => bytes.len() as u64,
                EventKind::Elided { dir, len, .. } | EventKind::Gap { dir, len } if *dir == d => {
                    *len
                }
                _ => 0,
            })
            .sum()
    };
    assert_eq!(total(Dir::C2S), CR.len() as u64 + 1400 * packets as u64 / 2);
    assert_eq!(
        total(Dir::S2C),
        CC_SSL.len() as u64 + 1400 * packets as u64 / 2
    );
    // The ends are kept, so the verdict is decided.
    let k = kinds(&t[0]);
    assert!(k.contains(&"Fin { dir: C2S }".to_string()));
    assert!(k.contains(&"Fin { dir: S2C }".to_string()));
    let r = rdprobe::decode::decode_report(&t[0]);
    assert!(
        r.notes.iter().any(|n| n.contains("truncated for memory")),
        "{:?}",
        r.notes
    );
    assert!(!r.summary.is_empty());
}

#[test]
fn overlapping_fragments_reassemble_within_the_datagram_cap() {
    // The client's 32 KB segment comes as one IPv4 datagram cut into 1,000 fragments of 16 KB that
    // overlap each other (same bytes), the last fragment last: it is stored once, checked, and
    // delivered exactly.
    use rdprobe::capture::reader::defrag::MAX_DATAGRAM_LEN;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fragments.pcap");
    let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
    let mut segs = f.handshake();
    segs.push(f.c(CR));
    segs.push(f.s(CC_SSL));
    let data: Vec<u8> = (0..32 * 1024 - 20).map(|i| (i % 251) as u8).collect();
    let big = f.c(&data);
    let tail = [f.fin(true), f.fin(false)];
    let ip = f.ip(&big);
    let (len, piece, n) = (32 * 1024usize, 16 * 1024usize, 1000usize);
    // Header of each fragment: the datagram's, with its own length, id and offset.
    let frag = |offset: usize, size: usize, more: bool| -> Vec<u8> {
        use etherparse::{IpFragOffset, Ipv4Header};
        let (mut h, payload) = Ipv4Header::from_slice(&ip).unwrap();
        h.identification = 0x4242;
        h.dont_fragment = false;
        h.more_fragments = more;
        h.fragment_offset = IpFragOffset::try_new((offset / 8) as u16).unwrap();
        h.total_len = (h.header_len() + size) as u16;
        let mut out = Vec::new();
        h.write(&mut out).unwrap();
        out.extend_from_slice(&payload[offset..offset + size]);
        link_eth(&out)
    };
    let span = len - 8 - piece;
    let mut all: Vec<Vec<u8>> = segs.iter().map(|s| link_eth(&f.ip(s))).collect();
    for j in 0..n - 1 {
        let o = match j {
            0 => 0,
            1 => span,
            _ => (j * 7919 * 8) % span / 8 * 8,
        };
        all.push(frag(o, piece, true));
    }
    all.push(frag(len - 8, 8, false));
    all.extend(tail.iter().map(|s| link_eth(&f.ip(s))));
    write_pcap(&path, whole_frames(all).into_iter());
    let (t, st) = read_file(&path);
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0].stream(Dir::C2S, Layer::Wire),
        [CR, &data[..]].concat(),
        "the datagram was not delivered exactly"
    );
    assert_eq!(st.ip_fragments, n as u64);
    assert_eq!((st.reassembled_datagrams, st.dropped_datagrams), (1, 0));
    assert!(
        st.peak_fragment_bytes <= MAX_DATAGRAM_LEN as u64,
        "{} bytes held for one datagram",
        st.peak_fragment_bytes
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the snaplen keeps of each segment, every byte is accounted for (kept or missing),
    /// and gaps of a direction with only the other direction's gaps between them are one event.
    #[test]
    fn cut_segments_account_for_every_byte_and_gaps_merge(
        segs in proptest::collection::vec((any::<bool>(), 1usize..600, 0usize..3, 0usize..600), 1..120),
    ) {
        let mut f = Flow::new("10.0.0.1:50000", "10.0.0.2:3389");
        let mut all = f.handshake();
        all.push(f.c(CR));
        all.push(f.s(CC_SSL));
        let mut cut = vec![usize::MAX; all.len()];
        let mut sent = [CR.len() as u64, CC_SSL.len() as u64];
        for (from_client, len, mode, keep) in &segs {
            let payload = vec![0x17u8; *len];
            all.push(if *from_client { f.c(&payload) } else { f.s(&payload) });
            sent[usize::from(!from_client)] += *len as u64;
            // mode 0: whole; 1: headers only; 2: part of the payload.
            cut.push(match mode {
                0 => usize::MAX,
                1 => 54,
                _ => 54 + keep % len,
            });
        }
        all.push(f.fin(true));
        all.push(f.fin(false));
        cut.extend([usize::MAX, usize::MAX]);
        let frames: Vec<Frame> = all
            .iter()
            .zip(&cut)
            .map(|(s, c)| {
                let data = link_eth(&f.ip(s));
                Frame { caplen: data.len().min(*c), data, iface: 0 }
            })
            .collect();
        let (t, err) = read_all(&pcap(&frames, 1, false, false), None);
        prop_assert!(err.is_none());
        prop_assert_eq!(t.len(), 1);
        let ev = &t[0].events;
        for (i, d) in [Dir::C2S, Dir::S2C].into_iter().enumerate() {
            let total: u64 = ev
                .iter()
                .map(|e| match &e.kind {
                    EventKind::Data { dir, layer: Layer::Wire, bytes } if *dir == d => bytes.len() as u64,
                    EventKind::Gap { dir, len } if *dir == d => *len,
                    _ => 0,
                })
                .sum();
            prop_assert_eq!(total, sent[i], "{:?}", d);
        }
        // No gap follows a gap of its direction with only gaps of the other direction between.
        let mut last_gap: [Option<usize>; 2] = [None, None];
        for (i, e) in ev.iter().enumerate() {
            match &e.kind {
                EventKind::Gap { dir, .. } => {
                    let k = usize::from(*dir == Dir::S2C);
                    if let Some(j) = last_gap[k] {
                        let only_gaps = ev[j + 1..i]
                            .iter()
                            .all(|x| matches!(x.kind, EventKind::Gap { .. } | EventKind::Note(_)));
                        prop_assert!(!only_gaps || i - j > 4, "unmerged gaps at {} and {}", j, i);
                    }
                    last_gap[k] = Some(i);
                }
                EventKind::Data { dir, .. } | EventKind::Fin { dir } => {
                    last_gap[usize::from(*dir == Dir::S2C)] = None;
                }
                _ => {}
            }
        }
    }
}

#[test]
fn last_fragment_inside_a_held_one_is_dropped_not_a_panic() {
    // A fragment of 16 bytes, then a "last" fragment at offset 8 that agrees with it but says the
    // datagram is 12 bytes long: the held bytes reach beyond the datagram's end. Dropped as a
    // contradiction (the reader used to index past the end of the payload and panic).
    let (f, segs) = rdp_conv("10.0.0.1:50000", "10.0.0.2:3389");
    let mut fr: Vec<Vec<u8>> = segs.iter().map(|s| link_eth(&f.ip(s))).collect();
    let ip = f.ip(&segs[3]);
    let parts = fragment_ip(&ip, 16, 99);
    let short = {
        use etherparse::{IpFragOffset, Ipv4Header};
        let (mut h, _) = Ipv4Header::from_slice(&parts[0]).unwrap();
        let body = &parts[0][h.header_len() + 8..h.header_len() + 12];
        h.more_fragments = false;
        h.fragment_offset = IpFragOffset::try_new(1).unwrap();
        h.total_len = (h.header_len() + 4) as u16;
        let mut out = Vec::new();
        h.write(&mut out).unwrap();
        out.extend_from_slice(body);
        out
    };
    fr.push(link_eth(&parts[0]));
    fr.push(link_eth(&short));
    let bytes = pcap(&whole_frames(fr), 1, false, false);
    let mut it = read_conversations(&bytes[..], ReaderOptions::default()).expect("a pcap");
    let t: Vec<Trace> = it.by_ref().map(|r| r.expect("no error")).collect();
    assert_eq!(t.len(), 1);
    assert_basic_rdp(&t[0], "10.0.0.1:50000", "10.0.0.2:3389");
    let st = it.stats();
    assert_eq!(
        (st.dropped_datagrams, st.reassembled_datagrams),
        (1, 0),
        "{st:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// Throughput (run on demand: `cargo test --release --test capture_reader -- --ignored --nocapture`)

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "throughput measurement; run with --release --ignored"]
fn throughput_large_capture() {
    let run = rustls_session(
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        false,
    );
    let conns: usize = std::env::var("RDPROBE_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let per_conn_records = 400; // × ~1.4 KB each way ≈ 1.1 MB per conversation
    let path = std::env::temp_dir().join(format!("rdprobe-throughput-{}.pcap", std::process::id()));
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        w.write_all(&pcap(&[], 1, false, false)).unwrap();
        let mut n = 0u32;
        // 20 conversations live at once, interleaved.
        for group in 0..conns / 20 {
            let mut flows: Vec<(Flow, Vec<Seg>)> = (0..20)
                .map(|i| {
                    let port = 20000 + (group * 20 + i) as u16;
                    let mut f = Flow::new(&format!("10.2.0.1:{port}"), "10.2.0.2:3389");
                    let mut s = f.handshake();
                    s.push(f.c(CR));
                    s.push(f.s(CC_SSL));
                    for (from_client, bytes) in &run.wire[..4] {
                        let seg = if *from_client { f.c(bytes) } else { f.s(bytes) };
                        s.push(seg);
                    }
                    for r in 0..per_conn_records {
                        let mut rec = vec![0x17, 0x03, 0x03, 0x05, 0x6c];
                        rec.extend((0..1388u32).map(|i| (i as u8).wrapping_mul(r as u8 | 1)));
                        let seg = if r % 2 == 0 { f.c(&rec) } else { f.s(&rec) };
                        s.push(seg);
                    }
                    s.push(f.fin(true));
                    s.push(f.fin(false));
                    (f, s)
                })
                .collect();
            let len = flows[0].1.len();
            for k in 0..len {
                for (f, s) in flows.iter_mut() {
                    let data = Link::Ethernet.frame(&f.ip(&s[k]));
                    n += 1;
                    w.write_all(&n.to_le_bytes()).unwrap();
                    w.write_all(&0u32.to_le_bytes()).unwrap();
                    w.write_all(&(data.len() as u32).to_le_bytes()).unwrap();
                    w.write_all(&(data.len() as u32).to_le_bytes()).unwrap();
                    w.write_all(&data).unwrap();
                }
            }
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let rss_before = peak_rss_kib();
    let start = std::time::Instant::now();
    let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
    let mut count = 0;
    let mut sessions = 0;
    for t in read_conversations(f, ReaderOptions::default()).unwrap() {
        let t = t.unwrap();
        count += 1;
        sessions += usize::from(
            t.events
                .iter()
                .any(|e| matches!(e.kind, EventKind::TlsSession(_))),
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    eprintln!(
        "read {} MB, {count} conversations in {secs:.2} s: {:.0} MB/s; peak rss {} MiB (before reading {} MiB)",
        size / 1_000_000,
        size as f64 / 1e6 / secs,
        peak_rss_kib() / 1024,
        rss_before / 1024
    );
    assert_eq!(count, conns / 20 * 20);
    assert_eq!(sessions, count);
}
