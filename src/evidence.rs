//! TCP and IP evidence of one conversation: what the transport says about who sent what and what the
//! path did with it (retransmissions, bytes never acknowledged, SYN retries, zero windows, TTL / hop
//! limit, IP ID, DF, ICMP errors about the flow, and where each RST / FIN came from).
//!
//! [`Tracker`] is fed one packet at a time (by the capture reader) and keeps a summary per direction
//! plus a bounded list of notable packets; [`Tracker::finish`] yields the [`TcpEvidence`] that rides in
//! the [`crate::trace::Trace`] and in the report. Pure: no I/O, no clock.
//!
//! INVARIANT: memory is bounded whatever the packets: the per-direction window of unacknowledged
//! segments holds at most [`MAX_TRACKED_SEGMENTS`], and the notable, end-packet and ICMP lists at most
//! [`MAX_NOTABLE`], [`MAX_END_PACKETS`] and [`MAX_ICMP`] entries.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::trace::Dir;

/// Unacknowledged segments tracked per direction (older ones are forgotten, oldest first).
pub const MAX_TRACKED_SEGMENTS: usize = 256;
/// Notable packets listed per conversation.
pub const MAX_NOTABLE: usize = 32;
/// RST / FIN packets kept with their header facts.
pub const MAX_END_PACKETS: usize = 8;
/// ICMP errors kept per conversation.
pub const MAX_ICMP: usize = 8;
/// Retransmissions of never-acknowledged data from which the data counts as dropped on the path.
pub const DROPPED_MIN_RETRANSMISSIONS: u32 = 2;
/// Payload size from which a segment counts as full-size for a path-MTU black hole.
pub const FULL_SIZE_MIN: u32 = 1200;
/// Holes in one direction's sequence space tracked at once.
pub const MAX_HOLES: usize = 16;
/// How long a hole must stay open after a packet of the sender showed it, while the conversation
/// goes on, for its bytes to count as lost on the path. The bytes were sent before that packet, so
/// by then the sender's retransmission timer had fired at least once (Linux's minimum RTO is
/// 200 ms, Windows' 300 ms) and the retransmission did not arrive either.
pub const MISSING_MIN_SPAN_US: u64 = 400_000;
/// Size from which a hole that never filled, larger than every segment that arrived, reads as
/// full-size segments lost (576: the IPv4 datagram every path must carry).
pub const MISSING_MTU_MIN: u32 = 576;

/// Header facts of one packet, as the tracker needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketFacts {
    pub t_us: u64,
    pub frame: Option<u64>,
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload_len: u32,
    pub ttl: u8,
    pub ip_id: Option<u16>,
    pub df: bool,
    pub window: u16,
}

/// What one direction's packets say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEvidence {
    /// Packets seen (RST included).
    pub packets: u64,
    /// Lowest and highest TTL / hop limit of this sender's packets other than RSTs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_min: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_max: Option<u8>,
    /// Hops between the sender and the observer, estimated from `ttl_max` and the nearest common
    /// initial TTL (32, 64, 128, 255).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<u8>,
    /// Data packets with the IPv4 Don't Fragment bit (or IPv6) / all data packets.
    pub df_packets: u64,
    pub data_packets: u64,
    /// Last IPv4 Identification of a non-RST packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ip_id: Option<u16>,
    /// Largest payload of one segment.
    pub max_segment: u32,
    /// Largest payload of a segment the peer acknowledged.
    pub max_acked_segment: u32,
    /// Data segments sent again (same bytes), and their bytes.
    pub retransmissions: u64,
    pub retransmitted_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_retransmission_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_retransmission_us: Option<u64>,
    /// Bytes sent that the peer never acknowledged (as far as the observer saw).
    pub unacked_bytes: u64,
    /// Retransmissions of the never-acknowledged bytes, the first time they were sent and the time
    /// of the last retransmission.
    pub unacked_retransmissions: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unacked_since_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unacked_last_us: Option<u64>,
    /// Smallest payload among the never-acknowledged retransmitted segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unacked_min_segment: Option<u32>,
    /// SYNs (client) / SYN-ACKs (server) beyond the first.
    pub syn_retries: u32,
    /// Packets advertising a zero window (RST excluded).
    pub zero_windows: u32,
    /// The receiver's view of loss: bytes of this sender's stream that never reached the observer
    /// although later packets of the sender did, and that the receiver never acknowledged (a hole
    /// in the sender's sequence space that stayed open). Bytes the receiver acknowledged were only
    /// missed by the capture and are not counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_bytes: u64,
    /// Largest single hole among them.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub missing_largest: u32,
    /// The first such hole: the sender's last packet before it (its bytes were sent after), the
    /// packet of the sender that showed it, and the last packet of the conversation (it was still
    /// open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_since_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_seen_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_last_us: Option<u64>,
}

impl DirEvidence {
    /// The sender's bytes were retransmitted and never acknowledged: the path (or the peer) lost them.
    pub fn dropped(&self) -> bool {
        self.unacked_bytes > 0 && self.unacked_retransmissions >= DROPPED_MIN_RETRANSMISSIONS
    }

    /// Retransmission span of the never-acknowledged bytes, in milliseconds.
    pub fn unacked_span_ms(&self) -> u64 {
        span_us(self.unacked_since_us, self.unacked_last_us) / 1000
    }

    /// Seen from the receiving end: bytes of this sender never arrived although its later packets
    /// did, and the hole stayed open longer than retransmission would take to fill it.
    pub fn missing(&self) -> bool {
        self.missing_bytes > 0
            && span_us(self.missing_seen_us, self.missing_last_us) >= MISSING_MIN_SPAN_US
    }

    /// How long the receiver went without the missing bytes, at most (from the sender's last
    /// packet before them to the end), in milliseconds.
    pub fn missing_span_ms(&self) -> u64 {
        span_us(self.missing_since_us, self.missing_last_us) / 1000
    }

    /// Seen from the receiving end: the bytes that never arrived form a hole larger than every
    /// segment that did (and at least [`MISSING_MTU_MIN`]), all of which had DF: full-size
    /// segments lost while small ones pass, a path-MTU black hole.
    pub fn missing_looks_like_mtu(&self) -> bool {
        self.missing()
            && self.missing_largest >= MISSING_MTU_MIN
            && self.missing_largest > self.max_segment
            && self.df_packets == self.data_packets
    }

    /// The dropped segments were full-size with DF while smaller ones got through: a path-MTU black
    /// hole rather than plain loss.
    pub fn mtu_black_hole(&self) -> bool {
        self.dropped()
            && self
                .unacked_min_segment
                .is_some_and(|m| m >= FULL_SIZE_MIN && m > self.max_acked_segment)
            && self.max_acked_segment > 0
            && self.df_packets == self.data_packets
    }
}

impl DirState {
    /// A packet of this direction's sender (not a SYN or RST): a sequence number past everything
    /// seen opens a hole (the bytes between were sent and not seen: a pure ACK or FIN carries the
    /// sender's next sequence number too); data at the edge of a hole fills it.
    fn track_holes(&mut self, p: &PacketFacts, prev_t: u64) {
        let Some(mut h) = self.high else {
            return;
        };
        let end = p.seq.wrapping_add(p.payload_len);
        if self.fin_seq == Some(h) {
            h = h.wrapping_add(1);
        }
        if p.fin && self.fin_seq.is_none_or(|f| seq_after(end, f)) {
            self.fin_seq = Some(end);
        }
        if p.payload_len > 0 {
            self.holes.retain_mut(|hole| {
                if !seq_after(p.seq, hole.from) && seq_after(end, hole.from) {
                    hole.from = end;
                } else if seq_after(hole.to, p.seq)
                    && !seq_after(hole.to, end)
                    && seq_after(p.seq, hole.from)
                {
                    hole.to = p.seq;
                }
                seq_after(hole.to, hole.from)
            });
        }
        if seq_after(p.seq, h) {
            if self.holes.len() >= MAX_HOLES {
                self.holes.remove(0);
            }
            self.holes.push(Hole {
                from: h,
                to: p.seq,
                after_t: prev_t,
                t: p.t_us,
            });
            if p.payload_len == 0 {
                self.high = Some(p.seq);
            }
        }
    }
}

/// Who most likely sent a RST / FIN, from its headers compared with the sender's other packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// Its TTL fits the sender's own packets: the host itself sent it.
    Host,
    /// Its TTL does not fit: a device in the path forged it in the sender's name.
    Injected,
    /// No other packet of the sender to compare with.
    Unknown,
}

/// A RST or FIN with its header facts and provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndPacket {
    /// "rst" or "fin".
    pub kind: String,
    /// Direction it travelled (its apparent sender is the direction's sender).
    pub dir: Dir,
    pub t_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    pub ttl: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_id: Option<u16>,
    pub window: u16,
    /// Estimated hops between its real sender and the observer.
    pub hops: u8,
    pub provenance: Provenance,
    /// Why, in words.
    pub evidence: String,
}

/// An ICMP error about the conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpFact {
    pub t_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    /// Sender of the ICMP message.
    pub from: String,
    /// Direction of the packet it is about.
    pub about: Dir,
    /// What it says ("fragmentation needed (next-hop MTU 1400)", "destination administratively
    /// prohibited", ...).
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A packet worth showing (bounded list, in time order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notable {
    pub t_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    pub dir: Dir,
    pub what: String,
}

/// The TCP / IP evidence of one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpEvidence {
    pub c2s: DirEvidence,
    pub s2c: DirEvidence,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ends: Vec<EndPacket>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmp: Vec<IcmpFact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notable: Vec<Notable>,
    /// Notable packets not listed (beyond [`MAX_NOTABLE`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notable_more: u64,
}

/// Microseconds from `from` to `to`, 0 unless both are known.
fn span_us(from: Option<u64>, to: Option<u64>) -> u64 {
    match (from, to) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}

impl TcpEvidence {
    pub fn dir(&self, dir: Dir) -> &DirEvidence {
        match dir {
            Dir::C2S => &self.c2s,
            Dir::S2C => &self.s2c,
        }
    }

    /// The first RST that travelled in `dir`.
    pub fn first_rst(&self, dir: Dir) -> Option<&EndPacket> {
        self.ends.iter().find(|e| e.kind == "rst" && e.dir == dir)
    }

    /// One line on retransmissions, when there were any ("the client retransmitted 23 segments
    /// (31 KB), the server 19: packet loss on the path").
    pub fn loss_summary(&self) -> Option<String> {
        let (c, s) = (&self.c2s, &self.s2c);
        if c.retransmissions + s.retransmissions == 0 && c.syn_retries + s.syn_retries == 0 {
            return None;
        }
        let mut parts = Vec::new();
        for (who, d) in [("client", c), ("server", s)] {
            if d.retransmissions > 0 {
                parts.push(format!(
                    "the {who} retransmitted {} segment{} ({} bytes)",
                    d.retransmissions,
                    if d.retransmissions == 1 { "" } else { "s" },
                    d.retransmitted_bytes
                ));
            }
            if d.syn_retries > 0 {
                parts.push(format!(
                    "the {who} sent its {} {} more time{}",
                    if who == "client" { "SYN" } else { "SYN-ACK" },
                    d.syn_retries,
                    if d.syn_retries == 1 { "" } else { "s" }
                ));
            }
        }
        Some(format!("{}: packet loss on the path", parts.join(", ")))
    }
}

/// Nearest common initial TTL at or above `ttl`.
pub fn initial_ttl(ttl: u8) -> u8 {
    [32u8, 64, 128, 255]
        .into_iter()
        .find(|&i| ttl <= i)
        .unwrap_or(255)
}

/// Estimated hops from a packet's sender to the observer.
pub fn hops(ttl: u8) -> u8 {
    initial_ttl(ttl) - ttl
}

/// `a` is after `b` in sequence space (RFC 793 arithmetic).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    seq: u32,
    len: u32,
    first_t: u64,
    retx: u32,
    last_retx_t: u64,
}

/// A hole in a sender's sequence space: bytes `from..to` not seen, first noticed at `t`.
#[derive(Clone, Copy, Debug)]
struct Hole {
    from: u32,
    to: u32,
    /// The sender's last packet before the hole showed.
    after_t: u64,
    t: u64,
}

#[derive(Default, Debug)]
struct DirState {
    /// Holes not filled yet, oldest first (at most [`MAX_HOLES`]).
    holes: Vec<Hole>,
    /// Time of this sender's last packet.
    last_t: u64,
    /// Sequence number of this sender's FIN (it takes one number of its own).
    fin_seq: Option<u32>,
    ev: DirEvidence,
    /// Next sequence number after the highest byte sent (`None` before the first packet).
    high: Option<u32>,
    /// Highest ACK the peer sent for this direction.
    acked: Option<u32>,
    /// Sent, not yet acknowledged segments, in sequence order.
    window: VecDeque<Seg>,
    syns: u32,
}

/// Feeds on packets of one conversation; see the module documentation.
#[derive(Default, Debug)]
pub struct Tracker {
    dirs: [DirState; 2],
    ends: Vec<(Dir, PacketFacts, bool)>,
    icmp: Vec<IcmpFact>,
    notable: Vec<Notable>,
    notable_more: u64,
    /// Time of the last packet.
    last_t: u64,
}

fn di(dir: Dir) -> usize {
    match dir {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker::default()
    }

    /// Client and server were guessed the wrong way round: swap the directions.
    pub fn flip(&mut self) {
        self.dirs.swap(0, 1);
        for e in &mut self.ends {
            e.0 = e.0.reverse();
        }
        for i in &mut self.icmp {
            i.about = i.about.reverse();
        }
        for n in &mut self.notable {
            n.dir = n.dir.reverse();
        }
    }

    fn note(&mut self, t_us: u64, frame: Option<u64>, dir: Dir, what: String) {
        if self.notable.len() < MAX_NOTABLE {
            self.notable.push(Notable {
                t_us,
                frame,
                dir,
                what,
            });
        } else {
            self.notable_more += 1;
        }
    }

    /// One TCP packet travelling in `dir`.
    pub fn packet(&mut self, dir: Dir, p: &PacketFacts) {
        let who = dir.sender();
        self.last_t = self.last_t.max(p.t_us);
        let prev_t = {
            let d = &mut self.dirs[di(dir)];
            std::mem::replace(&mut d.last_t, p.t_us)
        };
        {
            let d = &mut self.dirs[di(dir)];
            d.ev.packets += 1;
            if !p.rst {
                d.ev.ttl_min = Some(d.ev.ttl_min.map_or(p.ttl, |m| m.min(p.ttl)));
                d.ev.ttl_max = Some(d.ev.ttl_max.map_or(p.ttl, |m| m.max(p.ttl)));
                if p.ip_id.is_some() {
                    d.ev.last_ip_id = p.ip_id;
                }
            }
        }
        if p.rst || p.fin {
            if self.ends.len() < MAX_END_PACKETS {
                self.ends.push((dir, *p, p.rst));
            }
            if p.rst {
                self.note(
                    p.t_us,
                    p.frame,
                    dir,
                    format!("RST from {who} (TTL {})", p.ttl),
                );
                return;
            }
        }
        // The peer's acknowledgement of the other direction.
        if let Some(ack) = p.ack {
            let o = &mut self.dirs[di(dir.reverse())];
            if o.acked.is_none_or(|a| seq_after(ack, a)) {
                o.acked = Some(ack);
                while let Some(f) = o.window.front() {
                    if seq_after(f.seq.wrapping_add(f.len), ack) {
                        break;
                    }
                    o.ev.max_acked_segment = o.ev.max_acked_segment.max(f.len);
                    o.window.pop_front();
                }
            }
        }
        if p.window == 0 && !p.syn {
            let d = &mut self.dirs[di(dir)];
            d.ev.zero_windows += 1;
            if d.ev.zero_windows == 1 {
                self.note(p.t_us, p.frame, dir, format!("zero window from {who}"));
            }
        }
        if p.syn {
            let d = &mut self.dirs[di(dir)];
            d.syns += 1;
            d.high = Some(p.seq.wrapping_add(1));
            if d.syns > 1 {
                d.ev.syn_retries += 1;
                let what = format!(
                    "{} retransmitted ({} of them)",
                    if p.ack.is_some() { "SYN-ACK" } else { "SYN" },
                    d.syns
                );
                self.note(p.t_us, p.frame, dir, what);
            }
            return;
        }
        let d = &mut self.dirs[di(dir)];
        d.track_holes(p, prev_t);
        if p.payload_len == 0 {
            return;
        }
        d.ev.data_packets += 1;
        d.ev.df_packets += u64::from(p.df);
        d.ev.max_segment = d.ev.max_segment.max(p.payload_len);
        let end = p.seq.wrapping_add(p.payload_len);
        match d.high {
            Some(h) if !seq_after(end, h) => {
                // Nothing new: a retransmission (or a keep-alive probe of one byte).
                d.ev.retransmissions += 1;
                d.ev.retransmitted_bytes += u64::from(p.payload_len);
                d.ev.first_retransmission_us.get_or_insert(p.t_us);
                d.ev.last_retransmission_us = Some(p.t_us);
                let idx = d
                    .window
                    .partition_point(|s| seq_after(p.seq, s.seq) || s.seq == p.seq);
                let mut count = 0;
                if idx > 0 {
                    let s = &mut d.window[idx - 1];
                    if !seq_after(p.seq, s.seq.wrapping_add(s.len)) {
                        s.retx += 1;
                        s.last_retx_t = p.t_us;
                        count = s.retx;
                    }
                }
                if count == 1 || (count == 0 && d.ev.retransmissions == 1) {
                    let what = format!(
                        "{who} retransmitted {} bytes at relative seq {}",
                        p.payload_len, p.seq
                    );
                    self.note(p.t_us, p.frame, dir, what);
                }
            }
            _ => {
                // New bytes (a partly new segment counts as new).
                if d.window.len() >= MAX_TRACKED_SEGMENTS {
                    d.window.pop_front();
                }
                d.window.push_back(Seg {
                    seq: p.seq,
                    len: p.payload_len,
                    first_t: p.t_us,
                    retx: 0,
                    last_retx_t: 0,
                });
                d.high = Some(end);
            }
        }
    }

    /// An ICMP error quoting a packet of this conversation that travelled in `about`.
    pub fn icmp(&mut self, fact: IcmpFact) {
        let what = format!("ICMP from {}: {}", fact.from, fact.what);
        let (t, f, dir) = (fact.t_us, fact.frame, fact.about);
        if self.icmp.len() < MAX_ICMP {
            self.icmp.push(fact);
        }
        self.note(t, f, dir, what);
    }

    /// The evidence so far.
    pub fn finish(&self) -> TcpEvidence {
        let mut out = TcpEvidence {
            icmp: self.icmp.clone(),
            notable: self.notable.clone(),
            notable_more: self.notable_more,
            ..TcpEvidence::default()
        };
        for dir in [Dir::C2S, Dir::S2C] {
            let d = &self.dirs[di(dir)];
            let mut ev = d.ev.clone();
            ev.hops = ev.ttl_max.map(hops);
            // Unacknowledged: what is left in the window beyond the peer's highest ACK.
            let mut unacked = 0u64;
            for s in &d.window {
                let end = s.seq.wrapping_add(s.len);
                let from = match d.acked {
                    Some(a) if seq_after(a, s.seq) => a,
                    _ => s.seq,
                };
                if seq_after(end, from) {
                    unacked += u64::from(end.wrapping_sub(from));
                    if s.retx > 0 {
                        ev.unacked_retransmissions += s.retx;
                        ev.unacked_last_us = Some(
                            ev.unacked_last_us
                                .map_or(s.last_retx_t, |t| t.max(s.last_retx_t)),
                        );
                        ev.unacked_min_segment =
                            Some(ev.unacked_min_segment.map_or(s.len, |m| m.min(s.len)));
                    }
                    ev.unacked_since_us.get_or_insert(s.first_t);
                }
            }
            ev.unacked_bytes = unacked;
            if ev.unacked_retransmissions == 0 {
                ev.unacked_last_us = None;
            }
            // Holes still open: the part the receiver never acknowledged never reached it.
            for h in &d.holes {
                let from = match d.acked {
                    Some(a) if seq_after(a, h.from) => a,
                    _ => h.from,
                };
                if seq_after(h.to, from) {
                    let len = h.to.wrapping_sub(from);
                    ev.missing_bytes += u64::from(len);
                    ev.missing_largest = ev.missing_largest.max(len);
                    ev.missing_since_us.get_or_insert(h.after_t);
                    ev.missing_seen_us.get_or_insert(h.t);
                }
            }
            if ev.missing_bytes > 0 {
                ev.missing_last_us = Some(self.last_t);
            }
            match dir {
                Dir::C2S => out.c2s = ev,
                Dir::S2C => out.s2c = ev,
            }
        }
        for (dir, p, rst) in &self.ends {
            let sender = out.dir(*dir);
            let (provenance, evidence) = provenance(*dir, p, sender);
            out.ends.push(EndPacket {
                kind: if *rst { "rst" } else { "fin" }.into(),
                dir: *dir,
                t_us: p.t_us,
                frame: p.frame,
                ttl: p.ttl,
                ip_id: p.ip_id,
                window: p.window,
                hops: hops(p.ttl),
                provenance,
                evidence,
            });
        }
        out
    }
}

/// Compares a RST / FIN with the other packets of its apparent sender.
fn provenance(dir: Dir, p: &PacketFacts, sender: &DirEvidence) -> (Provenance, String) {
    let who = dir.sender();
    let what = if p.rst { "RST" } else { "FIN" };
    let (Some(lo), Some(hi)) = (sender.ttl_min, sender.ttl_max) else {
        return (
            Provenance::Unknown,
            format!(
                "{what} with TTL {}: no other packet of the {who} to compare with",
                p.ttl
            ),
        );
    };
    let range = if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo}-{hi}")
    };
    let ip_id = match (p.ip_id, sender.last_ip_id) {
        (Some(a), Some(b)) => format!(", IP ID {a} (the {who}'s last was {b})"),
        _ => String::new(),
    };
    if (lo..=hi).contains(&p.ttl) {
        (
            Provenance::Host,
            format!(
                "{what} TTL {} fits the {who}'s own packets (TTL {range}, {} hop{} away){ip_id}: sent by the {who} host",
                p.ttl,
                hops(hi),
                if hops(hi) == 1 { "" } else { "s" }
            ),
        )
    } else {
        let (h, peer) = (hops(p.ttl), hops(hi));
        let place = if initial_ttl(p.ttl) == initial_ttl(hi) && h < peer {
            format!(
                "{h} hop{} from the observer, {} hop{} short of the {who}",
                if h == 1 { "" } else { "s" },
                peer - h,
                if peer - h == 1 { "" } else { "s" }
            )
        } else {
            format!("{h} hop{} from the observer", if h == 1 { "" } else { "s" })
        };
        (
            Provenance::Injected,
            format!(
                "{what} TTL {} where every other packet of the {who} had TTL {range}{ip_id}: injected by a device in the path ({place})",
                p.ttl
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(t_ms: u64, seq: u32, ack: Option<u32>, len: u32, ttl: u8) -> PacketFacts {
        PacketFacts {
            t_us: t_ms * 1000,
            frame: None,
            seq,
            ack,
            payload_len: len,
            ttl,
            df: true,
            window: 1000,
            ..PacketFacts::default()
        }
    }

    #[test]
    fn retransmitted_never_acked_is_dropped() {
        let mut t = Tracker::new();
        t.packet(
            Dir::C2S,
            &PacketFacts {
                syn: true,
                ..pkt(0, 99, None, 0, 64)
            },
        );
        t.packet(
            Dir::S2C,
            &PacketFacts {
                syn: true,
                ..pkt(1, 499, Some(100), 0, 63)
            },
        );
        t.packet(Dir::C2S, &pkt(2, 100, Some(500), 40, 64));
        t.packet(Dir::S2C, &pkt(3, 500, Some(140), 19, 63));
        for i in 0..7 {
            t.packet(Dir::C2S, &pkt(10 + (1 << i) * 100, 140, Some(519), 300, 64));
        }
        let e = t.finish();
        assert_eq!(e.c2s.retransmissions, 6);
        assert_eq!(e.c2s.unacked_bytes, 300);
        assert_eq!(e.c2s.unacked_retransmissions, 6);
        assert!(e.c2s.dropped());
        assert_eq!(e.c2s.unacked_span_ms(), 6400 - 100);
        assert!(!e.s2c.dropped());
        assert_eq!(e.s2c.hops, Some(1));
    }

    #[test]
    fn rst_ttl_tells_host_from_injected() {
        // The server's data at TTL 63, then a RST at `ttl`.
        let rst_at = |ttl: u8| {
            let mut t = Tracker::new();
            t.packet(Dir::S2C, &pkt(1, 500, Some(140), 19, 63));
            t.packet(
                Dir::S2C,
                &PacketFacts {
                    rst: true,
                    ..pkt(2, 519, None, 0, ttl)
                },
            );
            t.finish().first_rst(Dir::S2C).unwrap().clone()
        };
        let r = rst_at(64);
        assert_eq!(r.provenance, Provenance::Injected);
        assert_eq!(r.hops, 0);
        assert!(
            r.evidence.contains("1 hop short of the server"),
            "{}",
            r.evidence
        );
        assert_eq!(rst_at(63).provenance, Provenance::Host);
    }

    #[test]
    fn full_size_segments_lost_while_small_pass_is_mtu() {
        let mut t = Tracker::new();
        t.packet(Dir::S2C, &pkt(1, 1000, Some(1), 500, 63));
        t.packet(Dir::C2S, &pkt(2, 1, Some(1500), 0, 64));
        for i in 0..4 {
            t.packet(Dir::S2C, &pkt(3 + i * 200, 1500, Some(1), 1448, 63));
        }
        let e = t.finish();
        assert!(e.s2c.mtu_black_hole(), "{e:?}");
        assert_eq!(e.s2c.max_acked_segment, 500);
    }

    /// The client's end of a path-MTU black hole: the server's small segments arrive, its large
    /// one never does; the server's later ACK carries a sequence number past the hole, and the
    /// client never acknowledges the bytes in it.
    fn receiver_sees_a_hole(client_acks: u32, fill: bool) -> TcpEvidence {
        let mut t = Tracker::new();
        t.packet(Dir::C2S, &pkt(0, 1, Some(1), 200, 64));
        t.packet(Dir::S2C, &pkt(10, 1, Some(201), 127, 63));
        t.packet(Dir::S2C, &pkt(11, 128, Some(201), 6, 63));
        t.packet(Dir::C2S, &pkt(20, 201, Some(134), 6, 64));
        // The server's ACK of the client's 6 bytes: sequence 1281, 1,147 bytes past 134.
        t.packet(Dir::S2C, &pkt(60, 1281, Some(207), 0, 63));
        if fill {
            t.packet(Dir::S2C, &pkt(300, 134, Some(207), 1147, 63));
        }
        t.packet(Dir::C2S, &pkt(4000, 207, Some(client_acks), 0, 64));
        t.packet(Dir::S2C, &pkt(4040, 1281, Some(208), 0, 63));
        t.finish()
    }

    #[test]
    fn a_hole_the_receiver_never_acknowledged_is_missing_and_reads_as_mtu() {
        let e = receiver_sees_a_hole(134, false);
        assert_eq!(e.s2c.missing_bytes, 1147, "{e:?}");
        assert_eq!(e.s2c.missing_largest, 1147);
        assert_eq!(
            e.s2c.missing_span_ms(),
            4029,
            "from the server's last packet before the hole"
        );
        assert!(e.s2c.missing() && e.s2c.missing_looks_like_mtu(), "{e:?}");
        assert!(
            !e.s2c.dropped(),
            "the sender's retransmissions are not in view"
        );
        assert_eq!(e.c2s.missing_bytes, 0);
    }

    #[test]
    fn a_hole_the_receiver_acknowledged_is_capture_loss_not_missing() {
        let e = receiver_sees_a_hole(1281, false);
        assert_eq!(e.s2c.missing_bytes, 0, "{e:?}");
        assert!(!e.s2c.missing());
    }

    #[test]
    fn a_hole_filled_by_a_retransmission_is_not_missing() {
        let e = receiver_sees_a_hole(134, true);
        assert_eq!(e.s2c.missing_bytes, 0, "{e:?}");
    }

    #[test]
    fn a_fin_takes_a_sequence_number_and_opens_no_hole() {
        let mut t = Tracker::new();
        t.packet(Dir::C2S, &pkt(0, 1, Some(1), 100, 64));
        t.packet(
            Dir::C2S,
            &PacketFacts {
                fin: true,
                ..pkt(10, 101, Some(1), 0, 64)
            },
        );
        // The client's last ACK after its FIN carries 102.
        t.packet(Dir::C2S, &pkt(2000, 102, Some(2), 0, 64));
        t.packet(Dir::S2C, &pkt(2001, 1, Some(101), 0, 64));
        assert_eq!(t.finish().c2s.missing_bytes, 0);
    }

    #[test]
    fn a_short_lived_hole_is_not_yet_missing_and_small_holes_are_not_mtu() {
        let mut t = Tracker::new();
        t.packet(Dir::S2C, &pkt(0, 1, Some(1), 100, 63));
        t.packet(Dir::S2C, &pkt(10, 401, Some(1), 100, 63));
        t.packet(Dir::C2S, &pkt(200, 1, Some(101), 0, 64));
        let e = t.finish();
        assert_eq!(e.s2c.missing_bytes, 300, "{e:?}");
        assert!(!e.s2c.missing(), "open for 190 ms after it showed only");
        t.packet(Dir::C2S, &pkt(2000, 1, Some(101), 0, 64));
        let e = t.finish();
        assert!(e.s2c.missing() && !e.s2c.missing_looks_like_mtu(), "{e:?}");
    }
}
