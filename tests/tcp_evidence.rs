//! TCP and IP evidence from captures: synthetic segment sequences with chosen TTLs, times,
//! retransmissions, resets and ICMP errors, read by the capture reader, decoded and diagnosed.

use std::net::{Ipv4Addr, SocketAddr};

use etherparse::PacketBuilder;
use proptest::prelude::*;
use rdprobe::capture::reader::{read_conversations, ReaderOptions};
use rdprobe::diagnose::{diagnose, FaultClass};
use rdprobe::evidence::{PacketFacts, Provenance, Tracker};
use rdprobe::report::ConnectionReport;
use rdprobe::stage::{FailureKind, Side, Stage, Verdict};
use rdprobe::trace::{Dir, Trace};

/// X.224 Connection Request with RDP_NEG_REQ (SSL | HYBRID).
const CR: &[u8] = &[
    0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x03,
    0x00, 0x00, 0x00,
];
/// X.224 Connection Confirm selecting PROTOCOL_SSL.
const CC_SSL: &[u8] = &[
    0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34, 0x00, 0x02, 0x1f, 0x08, 0x00, 0x01,
    0x00, 0x00, 0x00,
];

/// A TLS ClientHello record (TLS 1.2, one suite, no extensions, padded by a padding extension).
fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend(std::iter::repeat_n(0x11, 32)); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0xc0, 0x2f]); // one suite
    body.extend_from_slice(&[1, 0]); // null compression
    let pad = 150u16;
    body.extend_from_slice(&(pad + 4).to_be_bytes()); // extensions length
    body.extend_from_slice(&[0x00, 0x15]); // padding extension
    body.extend_from_slice(&pad.to_be_bytes());
    body.extend(std::iter::repeat_n(0, usize::from(pad)));
    let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

const CLIENT: &str = "10.0.1.2:50000";
const SERVER: &str = "10.0.2.2:3389";

/// One packet to write: direction, TCP fields, TTL, time.
struct P {
    from_client: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: Vec<u8>,
    ttl: u8,
    t_ms: u64,
}

/// Builds a conversation packet by packet with real sequence numbers.
struct Conv {
    cseq: u32,
    sseq: u32,
    /// TTLs of the client's and the server's packets as the observer sees them.
    cttl: u8,
    sttl: u8,
    t_ms: u64,
    pkts: Vec<P>,
}

impl Conv {
    fn new(cttl: u8, sttl: u8) -> Conv {
        Conv {
            cseq: 1000,
            sseq: 90_000,
            cttl,
            sttl,
            t_ms: 0,
            pkts: Vec::new(),
        }
    }

    fn at(&mut self, t_ms: u64) -> &mut Self {
        self.t_ms = t_ms;
        self
    }

    fn push(&mut self, from_client: bool, syn: bool, ack: bool, payload: &[u8]) -> u32 {
        let (seq, a) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        let adv = payload.len() as u32 + u32::from(syn);
        if from_client {
            self.cseq += adv;
        } else {
            self.sseq += adv;
        }
        self.pkts.push(P {
            from_client,
            seq,
            ack: ack.then_some(a),
            syn,
            fin: false,
            rst: false,
            payload: payload.to_vec(),
            ttl: if from_client { self.cttl } else { self.sttl },
            t_ms: self.t_ms,
        });
        self.t_ms += 1;
        seq
    }

    fn handshake(&mut self) {
        self.push(true, true, false, &[]);
        self.push(false, true, true, &[]);
        self.push(true, false, true, &[]);
    }

    fn c(&mut self, data: &[u8]) -> u32 {
        self.push(true, false, true, data)
    }

    fn s(&mut self, data: &[u8]) -> u32 {
        self.push(false, false, true, data)
    }

    /// The same client segment again at `t_ms`.
    fn retransmit_c(&mut self, seq: u32, data: &[u8], t_ms: u64) {
        self.pkts.push(P {
            from_client: true,
            seq,
            ack: Some(self.sseq),
            syn: false,
            fin: false,
            rst: false,
            payload: data.to_vec(),
            ttl: self.cttl,
            t_ms,
        });
        self.t_ms = t_ms + 1;
    }

    /// A RST travelling from the server's address (or the client's) with `ttl`.
    fn rst(&mut self, from_client: bool, ttl: u8) {
        let (seq, ack) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        self.pkts.push(P {
            from_client,
            seq,
            ack: Some(ack),
            syn: false,
            fin: false,
            rst: true,
            payload: Vec::new(),
            ttl,
            t_ms: self.t_ms,
        });
        self.t_ms += 1;
    }

    fn ip(&self, p: &P) -> Vec<u8> {
        let (c, s): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        let (src, dst) = if p.from_client { (c, s) } else { (s, c) };
        let (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) = (src.ip(), dst.ip()) else {
            unreachable!()
        };
        let mut t = PacketBuilder::ipv4(a.octets(), b.octets(), p.ttl).tcp(
            src.port(),
            dst.port(),
            p.seq,
            if p.rst { 0 } else { 64240 },
        );
        if p.syn {
            t = t.syn();
        }
        if let Some(a) = p.ack {
            t = t.ack(a);
        }
        if p.fin {
            t = t.fin();
        }
        if p.rst {
            t = t.rst();
        }
        let mut out = Vec::new();
        t.write(&mut out, &p.payload).unwrap();
        out
    }

    /// Raw-IP pcap (link type 101) of the packets plus `extra` (time in ms, IP packet).
    fn pcap(&self, extra: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut frames: Vec<(u64, Vec<u8>)> =
            self.pkts.iter().map(|p| (p.t_ms, self.ip(p))).collect();
        frames.extend(extra.iter().cloned());
        frames.sort_by_key(|f| f.0);
        let mut v = Vec::new();
        for x in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 101] {
            if x == 0x0004_0002 {
                v.extend_from_slice(&2u16.to_le_bytes());
                v.extend_from_slice(&4u16.to_le_bytes());
            } else {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        let t0 = 1_780_000_000u64;
        for (t_ms, data) in frames {
            let us = t_ms * 1000;
            v.extend_from_slice(&((t0 + us / 1_000_000) as u32).to_le_bytes());
            v.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&data);
        }
        v
    }
}

fn one_trace(pcap: &[u8]) -> Trace {
    let mut ts: Vec<Trace> = read_conversations(pcap, ReaderOptions::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ts.len(), 1, "one conversation");
    ts.remove(0)
}

fn analyze(pcap: &[u8]) -> ConnectionReport {
    rdprobe::decode::decode_report(&one_trace(pcap))
}

fn cause_ids(r: &ConnectionReport) -> (FaultClass, Vec<&'static str>) {
    let d = diagnose(r);
    (
        d.fault_class,
        d.causes.iter().map(|c| c.id.as_str()).collect(),
    )
}

/// Client capture: X.224 done, then the ClientHello goes out `n` + 1 times, exponentially backed
/// off, and the server acknowledges none of it.
fn silent_drop(n: u32) -> Conv {
    let mut c = Conv::new(64, 63);
    c.handshake();
    c.c(CR);
    c.s(CC_SSL);
    let ch = client_hello();
    let seq = c.c(&ch);
    let mut t = c.t_ms;
    for i in 0..n {
        t += 200 << i;
        c.retransmit_c(seq, &ch, t);
    }
    c
}

#[test]
fn clienthello_retransmitted_never_acked_is_dropped_by_the_network() {
    let r = analyze(&silent_drop(6).pcap(&[]));
    assert_eq!(r.last_stage, Stage::Tls);
    let Verdict::Failed {
        kind:
            FailureKind::Dropped {
                what,
                retransmissions,
                over_ms,
                mtu_black_hole,
                ..
            },
        by,
    } = &r.verdict
    else {
        panic!("not dropped: {:?} / {}", r.verdict, r.summary);
    };
    assert_eq!(*by, Side::Network);
    assert_eq!(*retransmissions, 6);
    assert!((12_000..=12_700).contains(over_ms), "{over_ms}");
    assert!(!mtu_black_hole);
    assert_eq!(what, "the client's ClientHello");
    assert!(
        r.summary
            .contains("ClientHello retransmitted 6\u{d7} over 12.6 s, never acknowledged")
            && r.summary
                .contains("dropped between the client and the server"),
        "{}",
        r.summary
    );
    let (class, causes) = cause_ids(&r);
    assert_eq!(class, FaultClass::Network);
    assert_eq!(causes.first(), Some(&"middlebox_drops"), "{causes:?}");
    let tcp = r.tcp.as_ref().expect("evidence in the report");
    assert_eq!(tcp.c2s.unacked_bytes, client_hello().len() as u64);
    // One retransmission is not yet a drop: the capture simply ended.
    let r = analyze(&silent_drop(1).pcap(&[]));
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::CaptureEnded,
                ..
            }
        ),
        "{:?}",
        r.verdict
    );
}

/// Client capture of a reset after the ClientHello; the server's packets arrive with TTL 63.
fn reset_after_clienthello(rst_ttl: u8) -> Conv {
    let mut c = Conv::new(64, 63);
    c.handshake();
    c.c(CR);
    c.s(CC_SSL);
    c.c(&client_hello());
    c.rst(false, rst_ttl);
    c
}

#[test]
fn router_reset_is_injected_and_host_reset_is_the_hosts() {
    // The router (one hop away) answers for the server: TTL 64 where the server's packets have 63.
    let r = analyze(&reset_after_clienthello(64).pcap(&[]));
    assert_eq!(r.last_stage, Stage::Tls);
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Network
            }
        ),
        "{:?}",
        r.verdict
    );
    assert_eq!(
        r.fact(Stage::Tls, "reset_provenance"),
        Some(&serde_json::json!("injected"))
    );
    let ev = r.fact(Stage::Tls, "reset_evidence").unwrap().to_string();
    assert!(
        ev.contains("TTL 64 where every other packet of the server had TTL 63")
            && ev.contains("0 hops from the observer, 1 hop short of the server"),
        "{ev}"
    );
    let (class, causes) = cause_ids(&r);
    assert_eq!(class, FaultClass::Network);
    assert_eq!(causes.first(), Some(&"middlebox_reset"), "{causes:?}");
    assert!(!causes.contains(&"endpoint_security_server"), "{causes:?}");
    let tcp = r.tcp.as_ref().unwrap();
    assert_eq!(
        tcp.first_rst(Dir::S2C).unwrap().provenance,
        Provenance::Injected
    );

    // The server host itself resets: same TTL as its other packets.
    let r = analyze(&reset_after_clienthello(63).pcap(&[]));
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Server
            }
        ),
        "{:?}",
        r.verdict
    );
    assert_eq!(
        r.fact(Stage::Tls, "reset_provenance"),
        Some(&serde_json::json!("host"))
    );
    let (_, causes) = cause_ids(&r);
    assert_eq!(
        causes.first(),
        Some(&"endpoint_security_server"),
        "{causes:?}"
    );
    assert!(!causes.contains(&"middlebox_reset"), "{causes:?}");
}

#[test]
fn router_reset_seen_from_the_server_is_not_the_clients() {
    // Server-side capture: the client's packets arrive with TTL 63, the router's reset in the
    // client's name with 64.
    let mut c = Conv::new(63, 64);
    c.handshake();
    c.c(CR);
    c.s(CC_SSL);
    c.rst(true, 64);
    let r = analyze(&c.pcap(&[]));
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Network
            }
        ),
        "{:?} {}",
        r.verdict,
        r.summary
    );
    let (class, causes) = cause_ids(&r);
    assert_eq!(class, FaultClass::Network);
    assert!(!causes.contains(&"endpoint_security_client"), "{causes:?}");
    // The client host's own reset (TTL 63 like its packets) stays the client's.
    let mut c = Conv::new(63, 64);
    c.handshake();
    c.c(CR);
    c.s(CC_SSL);
    c.rst(true, 63);
    let r = analyze(&c.pcap(&[]));
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                by: Side::Client,
                ..
            }
        ),
        "{:?}",
        r.verdict
    );
}

#[test]
fn retransmissions_are_reported_when_the_connection_goes_on() {
    let mut c = Conv::new(64, 63);
    c.handshake();
    let seq = c.c(CR);
    c.retransmit_c(seq, CR, 300);
    c.retransmit_c(seq, CR, 900);
    c.s(CC_SSL);
    c.c(&client_hello());
    c.rst(false, 63);
    let r = analyze(&c.pcap(&[]));
    let tcp = r.tcp.as_ref().unwrap();
    assert_eq!(tcp.c2s.retransmissions, 2);
    assert_eq!(tcp.c2s.unacked_bytes, client_hello().len() as u64);
    assert!(!tcp.c2s.dropped());
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("the client retransmitted 2 segments") && n.contains("packet loss")),
        "{:?}",
        r.notes
    );
    assert_eq!(
        r.fact(Stage::Tcp, "server_hops"),
        Some(&serde_json::json!(1))
    );
    // The verdict is the server's reset, not a drop.
    assert!(matches!(
        r.verdict,
        Verdict::Failed {
            kind: FailureKind::Reset,
            by: Side::Server
        }
    ));
}

/// An ICMP destination unreachable (type 3, `code`) from `from` quoting the client's SYN.
fn icmp_about_syn(c: &Conv, from: Ipv4Addr, code: u8) -> Vec<u8> {
    let syn = c.ip(&c.pkts[0]);
    let mut body = syn[..28].to_vec(); // IP header + 8 bytes of TCP
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
    icmp.append(&mut body);
    let dst: SocketAddr = CLIENT.parse().unwrap();
    let std::net::IpAddr::V4(d) = dst.ip() else {
        unreachable!()
    };
    let mut out = Vec::new();
    let h = etherparse::Ipv4Header::new(
        icmp.len() as u16,
        64,
        etherparse::IpNumber::ICMP,
        from.octets(),
        d.octets(),
    )
    .unwrap();
    h.write(&mut out).unwrap();
    out.extend_from_slice(&icmp);
    out
}

#[test]
fn icmp_admin_prohibited_about_the_syn_is_unreachable() {
    let mut c = Conv::new(64, 63);
    c.push(true, true, false, &[]);
    c.at(1000);
    let seq = c.pkts[0].seq;
    c.pkts.push(P {
        from_client: true,
        seq,
        ack: None,
        syn: true,
        fin: false,
        rst: false,
        payload: Vec::new(),
        ttl: 64,
        t_ms: 1000,
    });
    let icmp = icmp_about_syn(&c, Ipv4Addr::new(10, 0, 1, 1), 13);
    let r = analyze(&c.pcap(&[(5, icmp)]));
    assert_eq!(r.last_stage, Stage::Tcp);
    match &r.verdict {
        Verdict::Failed {
            kind: FailureKind::Unreachable { detail },
            by: Side::Network,
        } => assert_eq!(
            detail,
            "ICMP from 10.0.1.1: destination administratively prohibited"
        ),
        v => panic!("{v:?}"),
    }
    let tcp = r.tcp.as_ref().unwrap();
    assert_eq!(tcp.c2s.syn_retries, 1);
    assert_eq!(tcp.icmp.len(), 1);
}

fn facts(t_ms: u64, seq: u32, ack: Option<u32>, len: u32) -> PacketFacts {
    PacketFacts {
        t_us: t_ms * 1000,
        seq,
        ack,
        payload_len: len,
        ttl: 64,
        df: true,
        window: 1000,
        ..PacketFacts::default()
    }
}

proptest! {
    /// Segments of random sizes, each sent 1 + r times, the peer acknowledging the first `k`: the
    /// tracker counts every retransmission, the unacknowledged bytes exactly, and calls the data
    /// dropped exactly when the unacknowledged part was retransmitted at least twice.
    #[test]
    fn retransmissions_and_unacked_bytes_are_exact(
        segs in proptest::collection::vec((1u32..1500, 0u32..4), 1..40),
        k_frac in 0.0f64..=1.0,
        isn in any::<u32>(),
    ) {
        let k = ((segs.len() as f64) * k_frac) as usize;
        let mut t = Tracker::new();
        let mut seq = isn;
        let mut ms = 0;
        let mut starts = Vec::new();
        for &(len, r) in &segs {
            starts.push(seq);
            for _ in 0..=r {
                t.packet(Dir::C2S, &facts(ms, seq, Some(7), len));
                ms += 10;
            }
            seq = seq.wrapping_add(len);
        }
        let acked_to = if k == segs.len() { seq } else { starts[k] };
        t.packet(Dir::S2C, &facts(ms, 7, Some(acked_to), 0));
        let e = t.finish();
        let retx: u32 = segs.iter().map(|s| s.1).sum();
        let unacked: u64 = segs[k..].iter().map(|s| u64::from(s.0)).sum();
        let unacked_retx: u32 = segs[k..].iter().map(|s| s.1).sum();
        prop_assert_eq!(e.c2s.retransmissions, u64::from(retx));
        prop_assert_eq!(e.c2s.unacked_bytes, unacked);
        prop_assert_eq!(e.c2s.unacked_retransmissions, unacked_retx);
        prop_assert_eq!(e.c2s.dropped(), unacked > 0 && unacked_retx >= 2);
        prop_assert_eq!(e.c2s.data_packets, segs.iter().map(|s| u64::from(s.1) + 1).sum::<u64>());
    }

    /// A RST's provenance depends only on whether its TTL lies within the sender's own TTLs.
    #[test]
    fn reset_provenance_follows_the_ttl(ttls in proptest::collection::vec(1u8..=255, 1..10), rst_ttl in 1u8..=255) {
        let mut t = Tracker::new();
        for (i, &ttl) in ttls.iter().enumerate() {
            t.packet(Dir::S2C, &PacketFacts { ttl, ..facts(i as u64, 100 + i as u32, Some(1), 1) });
        }
        t.packet(Dir::S2C, &PacketFacts { rst: true, ttl: rst_ttl, ..facts(99, 500, None, 0) });
        let e = t.finish();
        let (lo, hi) = (*ttls.iter().min().unwrap(), *ttls.iter().max().unwrap());
        let want = if (lo..=hi).contains(&rst_ttl) { Provenance::Host } else { Provenance::Injected };
        prop_assert_eq!(e.first_rst(Dir::S2C).unwrap().provenance, want);
    }
}

/// MCS Connect Initial, Erect Domain, Attach User and a Channel Join as a client pipelines them
/// (contents minimal: only the TPKT / X.224 Data framing and the MCS PDU type byte matter here).
fn pipelined_after_cr() -> Vec<u8> {
    let tpkt = |body: &[u8]| {
        let mut v = vec![0x03, 0x00, 0x00, 0x00, 0x02, 0xf0, 0x80];
        v.extend_from_slice(body);
        let l = v.len() as u16;
        v[2..4].copy_from_slice(&l.to_be_bytes());
        v
    };
    let mut out = Vec::new();
    out.extend(tpkt(&[0x7f, 0x65, 0x03, 0x04, 0x01, 0x01])); // Connect Initial (truncated BER)
    out.extend(tpkt(&[0x04, 0x01, 0x00, 0x01, 0x00])); // Erect Domain Request
    out.extend(tpkt(&[0x28])); // Attach User Request
    out.extend(tpkt(&[0x38, 0x00, 0x07, 0x03, 0xeb])); // Channel Join Request
    out
}

#[test]
fn pipelined_client_reset_before_the_x224_answer_fails_at_x224() {
    let mut c = Conv::new(64, 63);
    c.handshake();
    let mut seg = CR.to_vec();
    seg.extend(pipelined_after_cr());
    c.c(&seg);
    c.rst(false, 63);
    let r = analyze(&c.pcap(&[]));
    assert_eq!(r.last_stage, Stage::X224, "{}", r.summary);
    assert!(
        matches!(
            r.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                by: Side::Server
            }
        ),
        "{:?}",
        r.verdict
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("ahead before any answer")),
        "{:?}",
        r.notes
    );
    assert!(
        r.stages.iter().all(|s| s.stage <= Stage::X224),
        "{:?}",
        r.stages
    );
}

#[test]
fn an_answer_that_is_not_tpkt_is_not_an_rdp_service() {
    let mut c = Conv::new(64, 63);
    c.handshake();
    c.c(CR);
    c.s(b"SSH-2.0-OpenSSH_9.6\r\n");
    c.at(5000);
    c.rst(true, 64);
    let r = analyze(&c.pcap(&[]));
    assert_eq!(r.last_stage, Stage::X224);
    match &r.verdict {
        Verdict::Failed {
            kind: FailureKind::ProtocolError { what, offset },
            by: Side::Server,
        } => {
            assert!(
                what.starts_with("not an RDP service: the answer is not TPKT")
                    && what.contains("53 53 48 2d")
                    && what.contains("\"SSH-2.0-OpenSSH_9"),
                "{what}"
            );
            assert_eq!(*offset, Some(0));
        }
        v => panic!("{v:?} {}", r.summary),
    }
    let (_, causes) = cause_ids(&r);
    assert_eq!(causes.first(), Some(&"not_rdp_service"));
}

#[test]
fn the_tcp_stage_measures_the_real_connect_with_syn_retries() {
    // SYN at 0, again at 1000 and 3000 ms, SYN-ACK at 3020: the connect took 3.02 s.
    let mut c = Conv::new(64, 63);
    c.push(true, true, false, &[]);
    let isn = c.pkts[0].seq;
    for t in [1000, 3000] {
        c.pkts.push(P {
            from_client: true,
            seq: isn,
            ack: None,
            syn: true,
            fin: false,
            rst: false,
            payload: Vec::new(),
            ttl: 64,
            t_ms: t,
        });
    }
    c.at(3020);
    c.push(false, true, true, &[]);
    c.push(true, false, true, &[]);
    c.c(CR);
    c.s(CC_SSL);
    c.rst(false, 63);
    let r = analyze(&c.pcap(&[]));
    let tcp = r.stage(Stage::Tcp).expect("tcp stage");
    assert!(
        (3019.0..=3021.0).contains(&tcp.duration_ms),
        "{}",
        tcp.duration_ms
    );
    assert_eq!(tcp.facts.get("syn_retries"), Some(&serde_json::json!(2)));
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("sent its SYN 2 more times")),
        "{:?}",
        r.notes
    );
}
