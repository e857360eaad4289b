//! Correlating captures of the same connections taken at different points of the path (the
//! client's host, a router, the server's host): which connection is which in each capture, and
//! where on the path something went missing or was added.
//!
//! [`Collector`] turns packets into [`Flow`]s (one per TCP connection, the packets that matter:
//! SYN, SYN-ACK, data, FIN, RST; pure ACKs are only counted). [`correlate`] matches flows across
//! captures by the client's and the server's initial sequence numbers, the X.224 cookie, payload
//! hashes and timing (NAT may change addresses and ports; clocks may differ), orders the views of one
//! connection from the client's end to the server's by the hop counts their TTLs show, and compares
//! each neighbouring pair: bytes that left one vantage point and never reached the next (dropped
//! between), a reset seen by one and never sent past the other (injected, and toward whom), full-size
//! segments that never arrived while small ones did (a path-MTU black hole), packets lost on the way
//! in one direction only. Pure: no I/O, no clock, except [`read_flows`] which reads one capture.
//!
//! INVARIANT: memory is bounded whatever the captures: at most [`MAX_FLOWS`] flows per capture and
//! [`MAX_PACKETS_PER_FLOW`] kept packets per flow (later ones are counted), and comparisons walk
//! those lists only.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::net::SocketAddr;

use serde::Serialize;

use crate::capture::reader::file::{Record, RecordReader};
use crate::capture::reader::packet::{self, Segment};
use crate::capture::reader::CaptureError;
use crate::evidence::{hops, FULL_SIZE_MIN};
use crate::trace::Dir;

/// Flows kept per capture (later new flows are counted, not kept).
pub const MAX_FLOWS: usize = 4096;
/// Packets kept per flow (later ones are counted, not kept).
pub const MAX_PACKETS_PER_FLOW: usize = 8192;
/// Score from which two flows are the same connection.
pub const MATCH_MIN_SCORE: i32 = 6;
/// Two flows whose starts differ by more than this from the captures' clock offset are not the
/// same connection.
const MAX_START_SKEW_US: i64 = 30_000_000;
/// Segments this large or smaller pass every IPv4 path (536 bytes: the default MSS, RFC 879): a
/// lost segment must be larger to count toward a path-MTU black hole.
pub const MTU_MIN_SEGMENT: u32 = 536;
/// Rows of the side-by-side table before the rest is counted.
pub const DEFAULT_TABLE_ROWS: usize = 60;

/// What a kept packet was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Syn,
    SynAck,
    Data,
    Fin,
    Rst,
}

/// One kept packet of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pkt {
    pub t_us: u64,
    pub frame: u64,
    pub dir: Dir,
    pub kind: Kind,
    /// Sequence number as captured (made relative by [`Flow::rel_seq`]).
    pub seq: u32,
    /// Payload length (as the IP header says, snaplen cuts included).
    pub len: u32,
    /// Hash of the captured payload bytes (0 without payload).
    pub hash: u64,
    /// First payload bytes (zero padded), to name what a lost segment carried.
    pub head: [u8; 6],
    pub ttl: u8,
    pub df: bool,
}

/// One TCP connection as one capture saw it.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub client_isn: Option<u32>,
    pub server_isn: Option<u32>,
    /// The X.224 Connection Request's cookie or routing token line, when the capture holds it.
    pub cookie: Option<String>,
    pub first_t_us: u64,
    pub last_t_us: u64,
    pub pkts: Vec<Pkt>,
    /// Packets per direction (pure ACKs and packets beyond the cap included).
    pub packets: [u64; 2],
    /// Packets beyond [`MAX_PACKETS_PER_FLOW`], counted only.
    pub more_packets: u64,
    first_seq: [Option<u32>; 2],
}

fn di(dir: Dir) -> usize {
    match dir {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

fn payload_hash(p: &[u8]) -> u64 {
    // SipHash with fixed keys: the same bytes hash alike in every capture of one run.
    let mut h = std::hash::DefaultHasher::new();
    p.hash(&mut h);
    h.finish() | 1
}

impl Flow {
    /// Sequence number relative to the direction's first byte (ISN + 1, or the first sequence
    /// number seen when the handshake was not captured).
    pub fn rel_seq(&self, p: &Pkt) -> u32 {
        let base = match p.dir {
            Dir::C2S => self.client_isn.map(|i| i.wrapping_add(1)),
            Dir::S2C => self.server_isn.map(|i| i.wrapping_add(1)),
        }
        .or(self.first_seq[di(p.dir)])
        .unwrap_or(p.seq);
        p.seq.wrapping_sub(base)
    }

    /// Estimated hops from `dir`'s sender to the observer: the fewest any non-RST packet shows.
    pub fn hops(&self, dir: Dir) -> Option<u8> {
        self.pkts
            .iter()
            .filter(|p| p.dir == dir && p.kind != Kind::Rst)
            .map(|p| hops(p.ttl))
            .min()
    }

    fn data_hashes(&self) -> Vec<(Dir, u32, u64)> {
        let mut v: Vec<_> = self
            .pkts
            .iter()
            .filter(|p| p.kind == Kind::Data)
            .map(|p| (p.dir, p.len, p.hash))
            .collect();
        v.sort_by_key(|k| (di(k.0), k.1, k.2));
        v.dedup();
        v
    }
}

/// Turns one capture's TCP packets into flows (see the module documentation).
#[derive(Default)]
pub struct Collector {
    flows: Vec<Flow>,
    index: HashMap<(SocketAddr, SocketAddr), usize>,
    /// New flows not kept because [`MAX_FLOWS`] were.
    pub flows_dropped: u64,
}

impl Collector {
    pub fn new() -> Self {
        Collector::default()
    }

    /// One TCP segment seen at `t_us` in frame `frame`.
    pub fn segment(&mut self, seg: &Segment<'_>, frame: u64, t_us: u64) {
        let key = if seg.src <= seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        let f = seg.flags;
        let mut idx = self.index.get(&key).copied();
        // A SYN with another ISN on ports already seen: a new connection reusing them.
        if let Some(i) = idx {
            let fl = &self.flows[i];
            if f.syn && !f.ack && fl.client_isn.is_some_and(|isn| isn != seg.seq) {
                idx = None;
            }
        }
        let i = match idx {
            Some(i) => i,
            None => {
                if self.flows.len() >= MAX_FLOWS {
                    self.flows_dropped += 1;
                    return;
                }
                self.flows.push(Flow {
                    first_t_us: t_us,
                    ..Flow::default()
                });
                self.index.insert(key, self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        let fl = &mut self.flows[i];
        fl.last_t_us = fl.last_t_us.max(t_us);
        if fl.client.is_none() {
            let (c, s) = if f.syn && !f.ack {
                (seg.src, seg.dst)
            } else if f.syn && f.ack {
                (seg.dst, seg.src)
            } else if seg.dst.port() == 3389 || (seg.src.port() != 3389 && seg.dst < seg.src) {
                (seg.src, seg.dst)
            } else {
                (seg.dst, seg.src)
            };
            fl.client = Some(c);
            fl.server = Some(s);
        }
        let dir = if Some(seg.src) == fl.client {
            Dir::C2S
        } else {
            Dir::S2C
        };
        fl.packets[di(dir)] += 1;
        let len = u32::try_from(seg.payload.len())
            .unwrap_or(u32::MAX)
            .saturating_add(seg.missing);
        let kind = if f.rst {
            Kind::Rst
        } else if f.syn && f.ack {
            Kind::SynAck
        } else if f.syn {
            Kind::Syn
        } else if len > 0 {
            Kind::Data
        } else if f.fin {
            Kind::Fin
        } else {
            return; // a pure ACK: counted above
        };
        match kind {
            Kind::Syn => {
                fl.client_isn.get_or_insert(seg.seq);
            }
            Kind::SynAck => {
                fl.server_isn.get_or_insert(seg.seq);
                fl.client_isn.get_or_insert(seg.ack.wrapping_sub(1));
            }
            Kind::Data | Kind::Fin => {
                fl.first_seq[di(dir)].get_or_insert(seg.seq);
            }
            Kind::Rst => {}
        }
        if kind == Kind::Data && dir == Dir::C2S && fl.cookie.is_none() {
            fl.cookie = x224_cookie(seg.payload);
        }
        if fl.pkts.len() >= MAX_PACKETS_PER_FLOW {
            fl.more_packets += 1;
            return;
        }
        let mut head = [0u8; 6];
        let n = seg.payload.len().min(6);
        head[..n].copy_from_slice(&seg.payload[..n]);
        fl.pkts.push(Pkt {
            t_us,
            frame,
            dir,
            kind,
            seq: seg.seq,
            len,
            hash: if seg.payload.is_empty() {
                0
            } else {
                payload_hash(seg.payload)
            },
            head,
            ttl: seg.hdr.ttl,
            df: seg.hdr.df,
        });
    }

    pub fn finish(self) -> Vec<Flow> {
        self.flows
    }
}

/// The cookie ("Cookie: mstshash=…") or routing token line of an X.224 Connection Request.
fn x224_cookie(p: &[u8]) -> Option<String> {
    if p.len() < 11 || p[0] != 3 || p[5] != 0xe0 {
        return None;
    }
    let rest = &p[11..p.len().min(11 + 256)];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&rest[..end]).ok()?;
    (line.starts_with("Cookie:") || line.contains("msts")).then(|| line.to_string())
}

/// Reads one capture's TCP flows (IP fragments are not reassembled here).
pub fn read_flows<R: Read>(input: R) -> Result<(Vec<Flow>, u64), CaptureError> {
    let mut r = RecordReader::new(input)?;
    let mut c = Collector::new();
    while let Some(rec) = r.next_record()? {
        if let Record::Packet(p) = rec {
            if let packet::Parsed::Tcp(seg) = packet::parse(p.linktype, p.data) {
                c.segment(&seg, p.frame, p.t_us);
            }
        }
    }
    let dropped = c.flows_dropped;
    Ok((c.finish(), dropped))
}

/// Where a capture was taken, as one connection's TTLs show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Vantage {
    /// On the client's host: its packets show no hop, the server's some.
    Client,
    /// On the server's host.
    Server,
    /// Between them: both show hops.
    Path,
    /// Both show no hop (same host, or no packets to tell).
    Unknown,
}

impl Vantage {
    pub fn words(self) -> &'static str {
        match self {
            Vantage::Client => "client side",
            Vantage::Server => "server side",
            Vantage::Path => "in the path",
            Vantage::Unknown => "vantage unknown",
        }
    }
}

/// One capture's view of a correlated connection.
#[derive(Clone, Debug, Serialize)]
pub struct View {
    /// Index of the capture (argument order).
    pub capture: usize,
    /// The capture's name.
    pub name: String,
    pub client: String,
    pub server: String,
    pub vantage: Vantage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_hops: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_hops: Option<u8>,
    /// This capture's clock minus the first view's, at the connection's start (path delay
    /// included), in milliseconds.
    pub clock_offset_ms: f64,
    pub c2s_packets: u64,
    pub s2c_packets: u64,
    pub c2s_bytes: u64,
    pub s2c_bytes: u64,
    pub c2s_rsts: u32,
    pub s2c_rsts: u32,
    /// What analyzing this capture alone says (filled by the caller; `None` when not analyzed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alone: Option<String>,
    #[serde(skip)]
    flow: usize,
}

/// What happened between two neighbouring vantage points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The client's SYN left the upstream point and never reached the downstream one.
    SynDropped,
    /// A reset arrived at one point that the other, nearer its apparent sender, never saw:
    /// a device between them forged it.
    InjectedReset,
    /// Full-size segments (DF) left one point and never reached the other while smaller ones did.
    MtuBlackHole,
    /// Bytes left one point and never reached the other.
    Dropped,
    /// Some packets were lost between the points (their bytes arrived later, retransmitted).
    Loss,
}

/// One finding about a connection.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Direction of the packets concerned (for an injected reset: the direction it travelled).
    pub dir: Dir,
    /// The views between which it happened (capture indexes, upstream = nearer the client first).
    pub upstream: usize,
    pub downstream: usize,
    /// Who is to blame: "network" here, always; kept as a field so a reader need not infer it.
    pub party: String,
    /// The hop, in words ("between client.pcapng (client side) and server.pcapng (server side)").
    pub hop: String,
    pub packets: u64,
    pub bytes: u64,
    /// Frame in the capture that saw it (the upstream one for data, the one that saw the reset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    /// In words.
    pub what: String,
}

/// One connection seen in one or more captures.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    /// Views ordered from the client's end to the server's.
    pub views: Vec<View>,
    /// What the match rests on ("client_isn", "server_isn", "cookie", "payload", "addresses",
    /// "timing").
    pub matched_by: Vec<String>,
    pub findings: Vec<Finding>,
    /// One line: the first finding, or what every view agrees on.
    pub verdict: String,
    #[serde(skip)]
    rows: Vec<Row>,
}

/// What captures hold.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureInfo {
    pub name: String,
    pub flows: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub flows_not_kept: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The result of [`correlate`].
#[derive(Clone, Debug, Serialize)]
pub struct Correlation {
    pub captures: Vec<CaptureInfo>,
    pub connections: Vec<Connection>,
}

/// One capture's flows, as [`correlate`] takes them.
pub struct CaptureFlows {
    pub name: String,
    pub flows: Vec<Flow>,
    pub flows_not_kept: u64,
}

fn score(a: &Flow, b: &Flow, offset_us: Option<i64>) -> (i32, Vec<&'static str>) {
    let mut s = 0;
    let mut why = Vec::new();
    if a.client_isn.is_some() && a.client_isn == b.client_isn {
        s += 8;
        why.push("client_isn");
    }
    if a.server_isn.is_some() && a.server_isn == b.server_isn {
        s += 8;
        why.push("server_isn");
    }
    match (&a.cookie, &b.cookie) {
        (Some(x), Some(y)) if x == y => {
            s += 3;
            why.push("cookie");
        }
        (Some(_), Some(_)) => s -= 100,
        _ => {}
    }
    let (ha, hb) = (a.data_hashes(), b.data_hashes());
    let shared = ha
        .iter()
        .filter(|k| {
            hb.binary_search_by_key(&(di(k.0), k.1, k.2), |x| (di(x.0), x.1, x.2))
                .is_ok()
        })
        .count();
    if shared > 0 {
        s += 2 * shared.min(6) as i32;
        why.push("payload");
    }
    if a.server.map(|x| x.port()) == b.server.map(|x| x.port()) {
        s += 1;
    }
    if a.client.is_some() && a.client == b.client && a.server == b.server {
        // No NAT between the captures: the same addresses and ports.
        s += 4;
        why.push("addresses");
    }
    if let Some(off) = offset_us {
        let d = b.first_t_us as i64 - a.first_t_us as i64 - off;
        if d.abs() > MAX_START_SKEW_US {
            s -= 100;
        } else if d.abs() < 2_000_000 {
            s += 2;
            why.push("timing");
        }
    }
    (s, why)
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Matches the flows of every capture with the first capture's (and with each other's: a flow of
/// capture 3 may join a connection first seen in capture 2), then compares the views.
pub fn correlate(caps: &[CaptureFlows]) -> Correlation {
    // groups: (capture, flow) members.
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut why: Vec<Vec<&'static str>> = Vec::new();
    for (ci, cap) in caps.iter().enumerate() {
        // Clock offset of this capture against the groups' first members, from strong matches.
        let mut offs = Vec::new();
        for g in &groups {
            let (c0, f0) = g[0];
            let a = &caps[c0].flows[f0];
            for b in &cap.flows {
                if score(a, b, None).0 >= 16 {
                    offs.push(b.first_t_us as i64 - a.first_t_us as i64);
                }
            }
        }
        let off = median(offs);
        let mut cands = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            if g.iter().any(|m| m.0 == ci) {
                continue;
            }
            let (c0, f0) = g[0];
            for (fi, b) in cap.flows.iter().enumerate() {
                let (s, w) = score(&caps[c0].flows[f0], b, off);
                if s >= MATCH_MIN_SCORE {
                    cands.push((s, gi, fi, w));
                }
            }
        }
        cands.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
        let mut used_g = vec![false; groups.len()];
        let mut used_f = vec![false; cap.flows.len()];
        for (_, gi, fi, w) in cands {
            if used_g[gi] || used_f[fi] {
                continue;
            }
            used_g[gi] = true;
            used_f[fi] = true;
            groups[gi].push((ci, fi));
            for x in w {
                if !why[gi].contains(&x) {
                    why[gi].push(x);
                }
            }
        }
        for (fi, used) in used_f.iter().enumerate() {
            if !used {
                groups.push(vec![(ci, fi)]);
                why.push(Vec::new());
            }
        }
    }
    let mut connections: Vec<Connection> = groups
        .into_iter()
        .zip(why)
        .map(|(g, w)| connection(caps, &g, w))
        .collect();
    connections.sort_by_key(|c| {
        let v = &c.views[0];
        caps[v.capture].flows[v.flow].first_t_us as i64 - (v.clock_offset_ms * 1000.0) as i64
    });
    Correlation {
        captures: caps
            .iter()
            .map(|c| CaptureInfo {
                name: c.name.clone(),
                flows: c.flows.len(),
                flows_not_kept: c.flows_not_kept,
            })
            .collect(),
        connections,
    }
}

fn vantage(f: &Flow) -> Vantage {
    match (f.hops(Dir::C2S), f.hops(Dir::S2C)) {
        (Some(0), Some(s)) if s > 0 => Vantage::Client,
        (Some(c), Some(0)) if c > 0 => Vantage::Server,
        (Some(c), Some(s)) if c > 0 && s > 0 => Vantage::Path,
        (Some(0), None) => Vantage::Client,
        (None, Some(0)) => Vantage::Server,
        _ => Vantage::Unknown,
    }
}

fn connection(
    caps: &[CaptureFlows],
    members: &[(usize, usize)],
    why: Vec<&'static str>,
) -> Connection {
    let flow = |m: &(usize, usize)| &caps[m.0].flows[m.1];
    let first = flow(&members[0]).first_t_us as i64;
    let mut views: Vec<View> = members
        .iter()
        .map(|m| {
            let f = flow(m);
            let bytes = |d: Dir| {
                f.pkts
                    .iter()
                    .filter(|p| p.dir == d && p.kind == Kind::Data)
                    .map(|p| u64::from(p.len))
                    .sum()
            };
            let rsts = |d: Dir| {
                f.pkts
                    .iter()
                    .filter(|p| p.dir == d && p.kind == Kind::Rst)
                    .count() as u32
            };
            let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
            View {
                capture: m.0,
                name: caps[m.0].name.clone(),
                client: addr(f.client),
                server: addr(f.server),
                vantage: vantage(f),
                client_hops: f.hops(Dir::C2S),
                server_hops: f.hops(Dir::S2C),
                clock_offset_ms: (f.first_t_us as i64 - first) as f64 / 1000.0,
                c2s_packets: f.packets[0],
                s2c_packets: f.packets[1],
                c2s_bytes: bytes(Dir::C2S),
                s2c_bytes: bytes(Dir::S2C),
                c2s_rsts: rsts(Dir::C2S),
                s2c_rsts: rsts(Dir::S2C),
                alone: None,
                flow: m.1,
            }
        })
        .collect();
    // From the client's end to the server's: fewer hops from the client first, then more hops
    // from the server; argument order breaks ties.
    views.sort_by_key(|v| {
        (
            v.client_hops.unwrap_or(u8::MAX / 2),
            std::cmp::Reverse(v.server_hops.unwrap_or(0)),
            v.capture,
        )
    });
    let mut findings = Vec::new();
    for w in views.windows(2) {
        let (u, d) = (&w[0], &w[1]);
        compare(
            flow(&(u.capture, u.flow)),
            flow(&(d.capture, d.flow)),
            u,
            d,
            &mut findings,
        );
    }
    if views.len() == 1 && caps.len() > 1 {
        let v = &views[0];
        let f = flow(&members[0]);
        if v.s2c_packets == 0 && v.c2s_packets > 0 && v.vantage != Vantage::Server {
            let others: Vec<&str> = caps
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != v.capture)
                .map(|(_, c)| c.name.as_str())
                .collect();
            let syns = f.pkts.iter().filter(|p| p.kind == Kind::Syn).count() as u64;
            let only_syns = f.pkts.iter().all(|p| p.kind == Kind::Syn);
            findings.push(Finding {
                kind: if only_syns {
                    FindingKind::SynDropped
                } else {
                    FindingKind::Dropped
                },
                dir: Dir::C2S,
                upstream: v.capture,
                downstream: v.capture,
                party: "network".into(),
                hop: format!("between {} and {}", v.name, others.join(", ")),
                packets: v.c2s_packets,
                bytes: v.c2s_bytes,
                frame: f.pkts.first().map(|p| p.frame),
                what: format!(
                    "the client's {} never reached any other capture and nothing came back: dropped between",
                    if only_syns {
                        format!("SYN ({syns}×)")
                    } else {
                        "packets".to_string()
                    }
                ),
            });
        }
    }
    findings.sort_by_key(|f| match f.kind {
        FindingKind::InjectedReset => 0,
        FindingKind::SynDropped => 1,
        FindingKind::MtuBlackHole => 2,
        FindingKind::Dropped => 3,
        FindingKind::Loss => 4,
    });
    let verdict = match findings.first() {
        Some(f) => format!("{} ({})", f.what, f.hop),
        None if views.len() == 1 => format!("seen only in {}", views[0].name),
        None if views.iter().all(|v| v.s2c_rsts > 0) => format!(
            "every capture saw the same packets, the server's reset too: it came from the server's side of {}, not from the path between the captures",
            views[views.len() - 1].name
        ),
        None if views.iter().all(|v| v.c2s_rsts > 0) => format!(
            "every capture saw the same packets, the client's reset too: it came from the client's side of {}, not from the path between the captures",
            views[0].name
        ),
        None => "every capture saw the same packets: nothing was lost or added between them".into(),
    };
    let rows = rows(caps, &views);
    Connection {
        views,
        matched_by: why.into_iter().map(str::to_string).collect(),
        findings,
        verdict,
        rows,
    }
}

/// What the first bytes of a segment are.
fn describe(head: &[u8; 6], len: u32) -> String {
    match head {
        [3, 0, ..] => "an X.224 / RDP PDU".into(),
        [0x16, 3, _, _, _, 1] => "the TLS ClientHello".into(),
        [0x16, 3, _, _, _, 2] => "the TLS ServerHello flight".into(),
        [0x16, ..] => "a TLS handshake record".into(),
        [0x17, 3, ..] => "TLS application data".into(),
        [0x15, 3, ..] => "a TLS alert".into(),
        [0x30, ..] => "a CredSSP TSRequest".into(),
        _ if len >= FULL_SIZE_MIN => "a full-size segment".into(),
        _ => "a segment".into(),
    }
}

fn who(dir: Dir) -> (&'static str, &'static str) {
    match dir {
        Dir::C2S => ("client", "server"),
        Dir::S2C => ("server", "client"),
    }
}

/// Byte ranges [start, end) of `dir`'s data, merged.
fn ranges(f: &Flow, dir: Dir) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = f
        .pkts
        .iter()
        .filter(|p| p.dir == dir && p.kind == Kind::Data)
        .map(|p| {
            let s = u64::from(f.rel_seq(p));
            (s, s + u64::from(p.len))
        })
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn covered(r: &[(u64, u64)], s: u64, e: u64) -> bool {
    r.iter().any(|&(a, b)| a <= s && e <= b)
}

fn compare(uf: &Flow, df: &Flow, u: &View, d: &View, out: &mut Vec<Finding>) {
    let hop = format!(
        "between {} ({}) and {} ({})",
        u.name,
        u.vantage.words(),
        d.name,
        d.vantage.words()
    );
    let mut push = |kind, dir, packets, bytes, frame, what: String| {
        out.push(Finding {
            kind,
            dir,
            upstream: u.capture,
            downstream: d.capture,
            party: "network".into(),
            hop: hop.clone(),
            packets,
            bytes,
            frame,
            what,
        })
    };
    let count = |f: &Flow, dir: Dir, k: Kind| {
        f.pkts
            .iter()
            .filter(|p| p.dir == dir && p.kind == k)
            .count() as u64
    };
    // SYN never arrived.
    let (syn_u, syn_d) = (
        count(uf, Dir::C2S, Kind::Syn),
        count(df, Dir::C2S, Kind::Syn),
    );
    if syn_u > 0 && syn_d == 0 && df.pkts.is_empty() {
        push(
            FindingKind::SynDropped,
            Dir::C2S,
            syn_u,
            0,
            uf.pkts.first().map(|p| p.frame),
            format!("the client's SYN ({syn_u}×) never arrived: dropped between client and server"),
        );
    }
    // Resets seen at one point and not sent past the other.
    for (dir, seen, other, seen_view) in [(Dir::S2C, uf, df, u), (Dir::C2S, df, uf, d)] {
        let (n_seen, n_other) = (count(seen, dir, Kind::Rst), count(other, dir, Kind::Rst));
        if n_seen > n_other {
            let (from, to) = who(dir);
            let first = seen
                .pkts
                .iter()
                .find(|p| p.dir == dir && p.kind == Kind::Rst);
            push(
                FindingKind::InjectedReset,
                dir,
                n_seen - n_other,
                0,
                first.map(|p| p.frame),
                format!(
                    "a reset in the {from}'s name reached the {to} ({} saw it) that the {from} never sent: injected by a device in the path, toward the {to}",
                    seen_view.name
                ),
            );
        }
    }
    for dir in [Dir::C2S, Dir::S2C] {
        // Upstream and downstream in this direction's travel.
        let (sf, rf) = match dir {
            Dir::C2S => (uf, df),
            Dir::S2C => (df, uf),
        };
        let (from, to) = who(dir);
        let got = ranges(rf, dir);
        // The receiving side's data may all be missing only if its capture holds the flow at all.
        let lost: Vec<&Pkt> = sf
            .pkts
            .iter()
            .filter(|p| p.dir == dir && p.kind == Kind::Data)
            .filter(|p| {
                let s = u64::from(sf.rel_seq(p));
                !covered(&got, s, s + u64::from(p.len))
            })
            .collect();
        if !lost.is_empty() {
            let mut starts: Vec<u32> = lost.iter().map(|p| sf.rel_seq(p)).collect();
            starts.sort_unstable();
            starts.dedup();
            let bytes: u64 = ranges(
                &Flow {
                    pkts: lost.iter().map(|p| **p).collect(),
                    ..sf.clone()
                },
                dir,
            )
            .iter()
            .map(|r| r.1 - r.0)
            .sum();
            let small_passed = rf.pkts.iter().any(|p| p.dir == dir && p.kind == Kind::Data);
            let mtu = small_passed
                && lost.iter().all(|p| p.len > MTU_MIN_SEGMENT && p.df)
                && rf
                    .pkts
                    .iter()
                    .filter(|p| p.dir == dir && p.kind == Kind::Data)
                    .all(|p| p.len < lost.iter().map(|l| l.len).min().unwrap_or(0));
            let largest = lost.iter().map(|p| p.len).max().unwrap_or(0);
            let (kind, what) = if mtu {
                (
                    FindingKind::MtuBlackHole,
                    format!(
                        "a flight that left the {from} arrived only in part: {} full-size segment{} (up to {largest} bytes, DF) sent {}× never reached the {to} while smaller ones did: path-MTU black hole",
                        starts.len(),
                        if starts.len() == 1 { "" } else { "s" },
                        lost.len()
                    ),
                )
            } else {
                (
                    FindingKind::Dropped,
                    format!(
                        "{} ({bytes} bytes) sent by the {from} {}× never reached the {to}: dropped between",
                        describe(&lost[0].head, lost[0].len),
                        lost.len()
                    ),
                )
            };
            push(
                kind,
                dir,
                lost.len() as u64,
                bytes,
                Some(lost[0].frame),
                what,
            );
        }
        // Loss: packets the sender's side saw that the receiver's side did not, bytes delivered.
        let (ns, nr) = (sf.packets[di(dir)], rf.packets[di(dir)]);
        if lost.is_empty() && ns > nr && !rf.pkts.is_empty() {
            push(
                FindingKind::Loss,
                dir,
                ns - nr,
                0,
                None,
                format!(
                    "{} of {ns} {from}-to-{to} packets were lost on the way (retransmitted, delivered late)",
                    ns - nr
                ),
            );
        }
    }
}

/// One packet of a correlated connection, as each view saw it (the table's and the page's rows).
#[derive(Clone, Debug)]
pub struct Row {
    /// Time in the first view's clock, microseconds.
    pub t_us: i64,
    pub dir: Dir,
    pub kind: Kind,
    pub len: u32,
    /// Relative sequence number.
    pub rel: u32,
    /// Per view (in view order): frame, or `None` (not seen there).
    pub at: Vec<Option<u64>>,
}

impl Row {
    /// "SYN", "1147 B @153", "FIN @240", "RST".
    pub fn what(&self) -> String {
        match self.kind {
            Kind::Syn => "SYN".to_string(),
            Kind::SynAck => "SYN-ACK".to_string(),
            Kind::Data => format!("{} B @{}", self.len, self.rel),
            Kind::Fin => format!("FIN @{}", self.rel),
            Kind::Rst => "RST".to_string(),
        }
    }
}

fn rows(caps: &[CaptureFlows], views: &[View]) -> Vec<Row> {
    // Key: what the packet is and its n-th occurrence.
    let mut table: HashMap<(Dir, Kind, u32, u32, u64, u32), usize> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for (vi, v) in views.iter().enumerate() {
        let f = &caps[v.capture].flows[v.flow];
        let off = (v.clock_offset_ms * 1000.0) as i64;
        let mut seen: HashMap<(Dir, Kind, u32, u32, u64), u32> = HashMap::new();
        for p in &f.pkts {
            let rel = if matches!(p.kind, Kind::Syn | Kind::SynAck) {
                0
            } else {
                f.rel_seq(p)
            };
            let k = (p.dir, p.kind, rel, p.len, p.hash);
            let n = seen.entry(k).or_insert(0);
            *n += 1;
            let key = (p.dir, p.kind, rel, p.len, p.hash, *n);
            let ri = *table.entry(key).or_insert_with(|| {
                rows.push(Row {
                    t_us: p.t_us as i64 - off,
                    dir: p.dir,
                    kind: p.kind,
                    len: p.len,
                    rel,
                    at: vec![None; views.len()],
                });
                rows.len() - 1
            });
            rows[ri].at[vi] = Some(p.frame);
        }
    }
    rows.sort_by_key(|r| r.t_us);
    rows
}

impl Correlation {
    /// The side-by-side table: per connection, its views, a row per packet (frames per capture,
    /// `-` where a capture never saw it; runs seen everywhere are shortened), and the findings.
    pub fn render(&self, max_rows: usize) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (i, c) in self.connections.iter().enumerate() {
            let v0 = &c.views[0];
            let _ = writeln!(
                s,
                "connection {}: {} -> {}{}",
                i + 1,
                v0.client,
                v0.server,
                if c.matched_by.is_empty() {
                    String::new()
                } else {
                    format!("  (matched by {})", c.matched_by.join(", "))
                }
            );
            for (k, v) in c.views.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  [{}] {} ({}; client {} hops, server {} hops; clock {:+.1} ms){}{}",
                    k + 1,
                    v.name,
                    v.vantage.words(),
                    v.client_hops.map_or("?".into(), |h| h.to_string()),
                    v.server_hops.map_or("?".into(), |h| h.to_string()),
                    v.clock_offset_ms,
                    if v.client != v0.client || v.server != v0.server {
                        format!(" as {} -> {}", v.client, v.server)
                    } else {
                        String::new()
                    },
                    v.alone
                        .as_ref()
                        .map_or(String::new(), |a| format!("\n      alone: {a}")),
                );
            }
            let w = 12;
            let _ = write!(s, "  {:>10}  {:<28}", "ms", "packet");
            for k in 0..c.views.len() {
                let _ = write!(s, "{:>w$}", format!("[{}] frame", k + 1));
            }
            s.push('\n');
            let t0 = c.rows.first().map_or(0, |r| r.t_us);
            let mut shown = 0;
            let mut same_run = 0u64;
            let n = c.rows.len();
            for (ri, r) in c.rows.iter().enumerate() {
                let everywhere = r.at.iter().all(Option::is_some);
                let edge = ri < 3 || ri + 3 >= n;
                if everywhere && !edge && c.views.len() > 1 {
                    same_run += 1;
                    continue;
                }
                if same_run > 0 {
                    let _ = writeln!(
                        s,
                        "  {:>10}  … {same_run} packet(s) seen at every capture",
                        ""
                    );
                    same_run = 0;
                }
                if shown >= max_rows {
                    let _ = writeln!(s, "  … {} more row(s) (--rows)", n - ri);
                    break;
                }
                shown += 1;
                let arrow = match r.dir {
                    Dir::C2S => "C->S",
                    Dir::S2C => "S->C",
                };
                let what = r.what();
                let _ = write!(
                    s,
                    "  {:>10.1}  {:<28}",
                    (r.t_us - t0) as f64 / 1000.0,
                    format!("{arrow} {what}")
                );
                for a in &r.at {
                    let _ = write!(s, "{:>w$}", a.map_or("-".into(), |f| f.to_string()));
                }
                s.push('\n');
            }
            if same_run > 0 {
                let _ = writeln!(
                    s,
                    "  {:>10}  … {same_run} packet(s) seen at every capture",
                    ""
                );
            }
            for f in &c.findings {
                let _ = writeln!(s, "  finding: {} ({})", f.what, f.hop);
            }
            let _ = writeln!(s, "  verdict: {}\n", c.verdict);
        }
        if self.connections.is_empty() {
            s.push_str("no TCP connections in the captures\n");
        }
        s
    }

    /// Every finding of every connection.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.connections.iter().flat_map(|c| c.findings.iter())
    }
}

impl Connection {
    /// Every packet, in time order, with the frame each view saw it in.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Where this connection's view of capture `capture` is (index into `views`).
    pub fn view_of(&self, capture: usize) -> Option<&View> {
        self.views.iter().find(|v| v.capture == capture)
    }

    /// Sets what analyzing capture `capture` alone says of this connection.
    pub fn set_alone(&mut self, capture: usize, what: String) {
        if let Some(v) = self.views.iter_mut().find(|v| v.capture == capture) {
            v.alone = Some(what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::reader::packet::{Flags, HeaderFacts};

    const C: &str = "10.0.1.2:50000";
    const S: &str = "10.0.2.2:3389";

    /// One synthetic capture: packets as (time ms, dir, flags "S"/"SA"/"A"/"F"/"R", rel seq, payload).
    struct Cap {
        col: Collector,
        client: SocketAddr,
        server: SocketAddr,
        /// TTL of the client's and the server's packets as this capture sees them.
        ttl: (u8, u8),
        isn: (u32, u32),
        t0: u64,
        frame: u64,
    }

    impl Cap {
        fn at_client() -> Cap {
            Cap::new(C, (64, 63), 0)
        }
        fn at_server() -> Cap {
            Cap::new(C, (63, 64), 0)
        }
        fn new(client: &str, ttl: (u8, u8), t0_ms: u64) -> Cap {
            Cap {
                col: Collector::new(),
                client: client.parse().unwrap(),
                server: S.parse().unwrap(),
                ttl,
                isn: (1000, 5000),
                t0: 1_700_000_000_000_000 + t0_ms * 1000,
                frame: 0,
            }
        }
        fn pkt(&mut self, ms: u64, dir: Dir, flags: &str, rel: u32, payload: &[u8]) -> &mut Self {
            self.pkt_ttl(ms, dir, flags, rel, payload, None)
        }
        fn pkt_ttl(
            &mut self,
            ms: u64,
            dir: Dir,
            flags: &str,
            rel: u32,
            payload: &[u8],
            ttl: Option<u8>,
        ) -> &mut Self {
            let (src, dst, isn, peer_isn, t) = match dir {
                Dir::C2S => (self.client, self.server, self.isn.0, self.isn.1, self.ttl.0),
                Dir::S2C => (self.server, self.client, self.isn.1, self.isn.0, self.ttl.1),
            };
            let syn = flags.contains('S');
            let seq = if syn {
                isn
            } else {
                isn.wrapping_add(1).wrapping_add(rel)
            };
            let seg = Segment {
                src,
                dst,
                seq,
                ack: peer_isn.wrapping_add(1),
                flags: Flags {
                    syn,
                    ack: flags.contains('A') || !syn,
                    fin: flags.contains('F'),
                    rst: flags.contains('R'),
                },
                payload,
                backing: None,
                missing: 0,
                hdr: HeaderFacts {
                    ttl: ttl.unwrap_or(t),
                    ip_id: None,
                    df: true,
                    window: 64000,
                },
            };
            self.frame += 1;
            self.col.segment(&seg, self.frame, self.t0 + ms * 1000);
            self
        }
        /// SYN, SYN-ACK, X.224 request and confirm.
        fn handshake(&mut self) -> &mut Self {
            self.pkt(0, Dir::C2S, "S", 0, &[])
                .pkt(1, Dir::S2C, "SA", 0, &[])
                .pkt(2, Dir::C2S, "A", 0, &X224)
                .pkt(
                    3,
                    Dir::S2C,
                    "A",
                    0,
                    &[3, 0, 0, 19, 14, 0xd0, 0, 0, 0, 0, 0, 2, 0, 8, 0, 1, 0, 0, 0],
                )
        }
        /// The handshake, then the client's TLS ClientHello at 5 ms.
        fn hello(&mut self) -> &mut Self {
            self.handshake().pkt(5, Dir::C2S, "A", 40, &hello())
        }
        fn done(self, name: &str) -> CaptureFlows {
            CaptureFlows {
                name: name.into(),
                flows: self.col.finish(),
                flows_not_kept: 0,
            }
        }
    }

    const X224: [u8; 40] =
        *b"\x03\x00\x00\x28\x21\xe0\x00\x00\x00\x00\x00Cookie: mstshash=eltons\r\n\x01\x00\x08\x00";

    fn hello() -> Vec<u8> {
        let mut v = vec![0x16, 3, 1, 0, 200, 1];
        v.resize(205, 7);
        v
    }

    fn one(c: &Correlation) -> &Connection {
        assert_eq!(c.connections.len(), 1, "{}", c.render(50));
        &c.connections[0]
    }

    #[test]
    fn healthy_pair_matches_and_orders_client_first() {
        let mut a = Cap::at_client();
        let mut b = Cap::at_server();
        for c in [&mut a, &mut b] {
            c.hello()
                .pkt(7, Dir::S2C, "A", 19, &[0x16, 3, 3, 0, 60, 2, 9, 9]);
        }
        // The server's capture given first: still ordered client end first.
        let c = correlate(&[b.done("server.pcapng"), a.done("client.pcapng")]);
        let k = one(&c);
        assert_eq!(k.views[0].name, "client.pcapng");
        assert_eq!(k.views[0].vantage, Vantage::Client);
        assert_eq!(k.views[1].vantage, Vantage::Server);
        assert!(k.findings.is_empty(), "{:?}", k.findings);
        for w in ["client_isn", "server_isn", "cookie", "payload"] {
            assert!(
                k.matched_by.iter().any(|m| m == w),
                "{w}: {:?}",
                k.matched_by
            );
        }
        assert!(k.verdict.contains("nothing was lost"), "{}", k.verdict);
    }

    #[test]
    fn clienthello_dropped_between() {
        let mut a = Cap::at_client();
        a.handshake();
        for ms in [5, 300, 900] {
            a.pkt(ms, Dir::C2S, "A", 40, &hello());
        }
        let mut b = Cap::at_server();
        b.handshake();
        let c = correlate(&[a.done("c"), b.done("s")]);
        let k = one(&c);
        let f = &k.findings[0];
        assert_eq!(f.kind, FindingKind::Dropped);
        assert_eq!(f.dir, Dir::C2S);
        assert_eq!((f.packets, f.bytes), (3, 205));
        assert!(f.what.contains("TLS ClientHello"), "{}", f.what);
        assert_eq!(f.hop, "between c (client side) and s (server side)");
        assert_eq!(f.party, "network");
        assert_eq!(k.findings.len(), 1, "{:?}", k.findings);
    }

    #[test]
    fn reset_injected_toward_the_client() {
        let mut a = Cap::at_client();
        a.hello();
        // The router's reset arrives with the router's TTL (one hop nearer than the server).
        a.pkt_ttl(6, Dir::S2C, "R", 19, &[], Some(64));
        let mut b = Cap::at_server();
        b.handshake();
        let c = correlate(&[a.done("c"), b.done("s")]);
        let k = one(&c);
        assert_eq!(k.findings[0].kind, FindingKind::InjectedReset);
        assert_eq!(k.findings[0].dir, Dir::S2C);
        assert!(
            k.findings[0].what.contains("toward the client"),
            "{}",
            k.verdict
        );
        assert!(k.findings.iter().any(|f| f.kind == FindingKind::Dropped));
        assert!(k.verdict.contains("injected"), "{}", k.verdict);
    }

    #[test]
    fn reset_injected_toward_the_server() {
        let mut a = Cap::at_client();
        a.hello();
        let mut b = Cap::at_server();
        b.hello();
        b.pkt_ttl(6, Dir::C2S, "R", 243, &[], Some(64));
        let c = correlate(&[a.done("c"), b.done("s")]);
        let k = one(&c);
        assert_eq!(k.findings.len(), 1, "{:?}", k.findings);
        assert_eq!(k.findings[0].kind, FindingKind::InjectedReset);
        assert_eq!(k.findings[0].dir, Dir::C2S);
        assert!(k.findings[0].what.contains("toward the server"));
    }

    #[test]
    fn server_host_reset_is_not_the_path() {
        let mut a = Cap::at_client();
        let mut b = Cap::at_server();
        for c in [&mut a, &mut b] {
            c.hello().pkt(6, Dir::S2C, "R", 19, &[]);
        }
        let c = correlate(&[a.done("c"), b.done("s")]);
        let k = one(&c);
        assert!(k.findings.is_empty(), "{:?}", k.findings);
        assert!(
            k.verdict.contains("the server's reset too"),
            "{}",
            k.verdict
        );
    }

    /// The client's end and the server's end of a flight whose full-size segment (sent three
    /// times) never reached the client while its 300-byte tail did.
    fn mtu_twin(client_capture: &str) -> Correlation {
        let big = vec![0x16u8; 1448];
        let tail = vec![0x16u8; 300];
        let mut a = Cap::at_client();
        a.hello().pkt(8, Dir::S2C, "A", 19 + 1448, &tail);
        let mut b = Cap::at_server();
        b.hello();
        for ms in [7, 250, 700] {
            b.pkt(ms, Dir::S2C, "A", 19, &big);
        }
        b.pkt(8, Dir::S2C, "A", 19 + 1448, &tail);
        correlate(&[a.done(client_capture), b.done("s")])
    }

    #[test]
    fn full_size_flight_lost_is_an_mtu_black_hole() {
        let c = mtu_twin("c");
        let k = one(&c);
        assert_eq!(k.findings.len(), 1, "{:?}", k.findings);
        let f = &k.findings[0];
        assert_eq!(f.kind, FindingKind::MtuBlackHole);
        assert_eq!(f.dir, Dir::S2C);
        assert_eq!((f.packets, f.bytes), (3, 1448));
        assert!(f.what.contains("arrived only in part"), "{}", f.what);
    }

    /// The page of the same twin: two lanes, the full-size segment crossed out between them (sent
    /// three times: three crossed rows), the ServerHello tail drawn end to end; capture names from
    /// the command line are escaped.
    #[test]
    fn the_page_crosses_out_what_never_reached_the_next_capture() {
        let c = mtu_twin("<c>");
        let page = crate::html::correlate_page("t", &c);
        assert_eq!(page.matches("class=\"lane\"").count(), 2, "{page}");
        assert_eq!(page.matches("class=\"kpkt lost\"").count(), 3, "{page}");
        assert_eq!(page.matches("class=\"cross\"").count(), 3);
        assert!(
            page.contains("[1] &lt;c&gt;") && !page.contains("<c>"),
            "escaped"
        );
        assert!(page.contains("path-MTU black hole"));
        assert!(page.contains("content=\"default-src 'none'"));
    }

    #[test]
    fn a_lost_flight_of_one_mid_size_segment_is_mtu_too() {
        // The whole flight in one 1147-byte segment (a small certificate), never delivered, while the
        // 127-byte ServerHello passed.
        let mut a = Cap::at_client();
        let mut b = Cap::at_server();
        for c in [&mut a, &mut b] {
            c.hello().pkt(6, Dir::S2C, "A", 19, &[0x16u8; 127]);
        }
        for ms in [7, 250, 700] {
            b.pkt(ms, Dir::S2C, "A", 19 + 127, &[0x17u8; 1147]);
        }
        let c = correlate(&[a.done("c"), b.done("s")]);
        let f = &one(&c).findings[0];
        assert_eq!(
            (f.kind, f.dir, f.packets),
            (FindingKind::MtuBlackHole, Dir::S2C, 3)
        );
    }

    #[test]
    fn small_segments_lost_are_not_mtu() {
        let mut a = Cap::at_client();
        a.handshake();
        let mut b = Cap::at_server();
        b.handshake()
            .pkt(5, Dir::S2C, "A", 19, &[0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        let c = correlate(&[a.done("c"), b.done("s")]);
        let f = &one(&c).findings[0];
        assert_eq!(f.kind, FindingKind::Dropped);
        assert_eq!(f.dir, Dir::S2C);
    }

    #[test]
    fn one_way_loss_is_named_with_its_direction() {
        let mut a = Cap::at_client();
        let mut b = Cap::at_server();
        a.handshake();
        b.handshake();
        // Four client segments; the client's capture saw two of them twice (retransmitted), the
        // server's each once.
        let mut rel = 40;
        for i in 0..4u8 {
            let p = vec![
                0x17, 3, 3, 0, 20, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            let t = 10 + u64::from(i) * 10;
            a.pkt(t, Dir::C2S, "A", rel, &p);
            if i % 2 == 0 {
                a.pkt(t + 5, Dir::C2S, "A", rel, &p);
            }
            b.pkt(t + 5, Dir::C2S, "A", rel, &p);
            a.pkt(t + 6, Dir::S2C, "A", 19, &[]);
            b.pkt(t + 6, Dir::S2C, "A", 19, &[]);
            rel += p.len() as u32;
        }
        let c = correlate(&[a.done("c"), b.done("s")]);
        let k = one(&c);
        assert_eq!(k.findings.len(), 1, "{:?}", k.findings);
        let f = &k.findings[0];
        assert_eq!((f.kind, f.dir, f.packets), (FindingKind::Loss, Dir::C2S, 2));
        assert!(f.what.contains("client-to-server"), "{}", f.what);
    }

    #[test]
    fn nat_and_clock_offset_still_match() {
        let mut a = Cap::at_client();
        // Behind NAT: another client address and port, the server's clock 5 s ahead, and a NAT
        // that rewrites sequence numbers (no ISN in common).
        let mut b = Cap::new("192.0.2.7:61000", (60, 64), 5000);
        b.isn = (777, 888);
        for c in [&mut a, &mut b] {
            c.hello();
        }
        let c = correlate(&[a.done("c"), b.done("s")]);
        let k = one(&c);
        assert!(k.matched_by.iter().any(|m| m == "cookie"));
        assert!(!k.matched_by.iter().any(|m| m == "client_isn"));
        assert!(k.findings.is_empty(), "{:?}", k.findings);
        assert_eq!(k.views[1].clock_offset_ms, 5000.0);
        assert!(c.render(50).contains("as 192.0.2.7:61000 -> 10.0.2.2:3389"));
    }

    #[test]
    fn two_connections_pair_by_isn() {
        let mk = |isn: (u32, u32), cookie: &[u8; 40], at_server: bool, port: &str| {
            let mut c = if at_server {
                Cap::new(port, (63, 64), 0)
            } else {
                Cap::new(port, (64, 63), 0)
            };
            c.isn = isn;
            c.pkt(0, Dir::C2S, "S", 0, &[])
                .pkt(1, Dir::S2C, "SA", 0, &[])
                .pkt(2, Dir::C2S, "A", 0, cookie);
            c.col.finish()
        };
        let mut x2 = X224;
        x2[30] = b'X';
        let mut a = mk((1, 2), &X224, false, "10.0.1.2:1000");
        a.extend(mk((3, 4), &x2, false, "10.0.1.2:1001"));
        // The server's capture lists them the other way round.
        let mut b = mk((3, 4), &x2, true, "10.0.1.2:1001");
        b.extend(mk((1, 2), &X224, true, "10.0.1.2:1000"));
        let caps = [
            CaptureFlows {
                name: "c".into(),
                flows: a,
                flows_not_kept: 0,
            },
            CaptureFlows {
                name: "s".into(),
                flows: b,
                flows_not_kept: 0,
            },
        ];
        let c = correlate(&caps);
        assert_eq!(c.connections.len(), 2, "{}", c.render(50));
        for k in &c.connections {
            assert_eq!(k.views.len(), 2);
            assert_eq!(k.views[0].client, k.views[1].client);
        }
    }

    #[test]
    fn syn_never_answered_and_never_seen_downstream() {
        let mut a = Cap::at_client();
        for ms in [0, 1000, 3000] {
            a.pkt(ms, Dir::C2S, "S", 0, &[]);
        }
        let mut b = Cap::at_server();
        b.client = "10.0.1.9:40000".parse().unwrap();
        b.isn = (9, 10);
        b.handshake();
        let c = correlate(&[a.done("c"), b.done("s")]);
        assert_eq!(c.connections.len(), 2);
        let f: Vec<_> = c.findings().collect();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, FindingKind::SynDropped);
        assert_eq!(f[0].packets, 3);
    }

    #[test]
    fn flows_are_bounded() {
        let mut col = Collector::new();
        let s: SocketAddr = S.parse().unwrap();
        for i in 0..(MAX_FLOWS + 10) {
            let c = SocketAddr::new("10.0.0.1".parse().unwrap(), 1024 + i as u16);
            let seg = Segment {
                src: c,
                dst: s,
                seq: 1,
                ack: 0,
                flags: Flags {
                    syn: true,
                    ..Flags::default()
                },
                payload: &[],
                backing: None,
                missing: 0,
                hdr: HeaderFacts::default(),
            };
            col.segment(&seg, 1, 1);
        }
        assert_eq!(col.flows_dropped, 10);
        assert_eq!(col.finish().len(), MAX_FLOWS);
    }
}
