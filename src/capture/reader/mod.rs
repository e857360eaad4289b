//! Capture reader: pcap / pcapng in, one [`Trace`] per RDP conversation out.
//!
//! Streaming: records are read one at a time, TCP is reassembled per direction
//! ([`crate::capture::reassembly`]), RDP is recognized by content (TPKT + X.224 Connection Request,
//! MS-RDPBCGR 2.2.1.1, on any port), TLS after the X.224 exchange is decrypted when secrets are known
//! ([`crate::capture::tlsdecrypt`]), and each conversation is yielded when it closes (FIN both ways,
//! RST) or at the end of the capture. Fragmented IP datagrams carrying TCP are reassembled first
//! ([`defrag`], bounded).
//!
//! INVARIANT: memory is bounded by the live conversations: each keeps at most
//! `max_retained_per_direction` bytes of data per direction and layer (the rest is counted in
//! `Elided` events) and at most [`MAX_EVENTS_PER_CONVERSATION`] events (consecutive gaps of a
//! direction are one event), the out-of-order buffers are capped, and so is the number of
//! conversations.

pub mod defrag;
pub mod file;
pub mod map;
pub mod packet;
pub mod rdpeudp;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::capture::reassembly::{Output, Reassembler};
pub use crate::capture::tlsdecrypt::KeyLog;
use crate::capture::tlsdecrypt::{TlsDecryptor, TlsOutput, TlsStart};
use crate::evidence::{IcmpFact, PacketFacts, Tracker};
use crate::trace::{ConnectFailure, Dir, Event, EventKind, Layer, Trace};
use file::{Record, RecordReader, SECRETS_TLS_KEYLOG};

/// Most conversations tracked at once (RDP, undecided and ignored ones); the least recently active
/// eighth is dropped when the table is full.
pub const MAX_CONVERSATIONS: usize = 65_536;
/// Bytes of each direction examined to recognize RDP (a tunnel preamble must fit in it).
const CLASSIFY_PREFIX: usize = 4096;
/// Most buffered items of a conversation not yet recognized.
const MAX_PENDING_ITEMS: usize = 256;
/// Most events kept in one conversation's Trace: data, gaps, elided counts, notes and connection
/// events, each counting one. Beyond it the conversation is truncated for memory (one note says so):
/// later data and gaps are counted into one elided or gap event per direction and layer, later notes
/// and TLS facts are counted and dropped, and the events that end a conversation (FIN, RST, connect
/// failure, capture end: a handful by construction) are still kept, so decoding still ends with a
/// verdict. A connection sequence (what the verdict is about) stays far below it; a long session of
/// small PDUs may reach it, and then its later bytes are counted as those beyond
/// `max_retained_per_direction` are. At 120 bytes an event (plus notes), the cap is about 8 MiB.
pub const MAX_EVENTS_PER_CONVERSATION: usize = 65_536;
/// Room beyond [`MAX_EVENTS_PER_CONVERSATION`] for the events that end a conversation.
const END_EVENTS_SLACK: usize = 16;
/// Recent events looked back over to merge a gap or an elided count into an earlier one.
const MERGE_LOOKBACK: usize = 4;
/// The well-known RDP port (used only for conversations whose start was not captured).
const RDP_PORT: u16 = 3389;
/// Key log lines a gateway conversation carries (its own and the inner RDP session's among them).
const MAX_GATEWAY_KEYLOG_LINES: usize = 4096;

/// What is wrong with a capture file, and where.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("read error at byte offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("not a pcap or pcapng file: {what} at byte offset 0")]
    NotACapture { what: String },
    #[error("truncated {what} at byte offset {offset}{}: need {need} bytes, the file has {have}", frame_suffix(*.frame))]
    Truncated {
        offset: u64,
        frame: Option<u64>,
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("malformed {what} at byte offset {offset}{}: {detail}", frame_suffix(*.frame))]
    Malformed {
        offset: u64,
        frame: Option<u64>,
        what: &'static str,
        detail: String,
    },
}

fn frame_suffix(frame: Option<u64>) -> String {
    frame.map(|f| format!(" (frame {f})")).unwrap_or_default()
}

impl CaptureError {
    /// Byte offset in the file where the problem is.
    pub fn offset(&self) -> u64 {
        match self {
            CaptureError::Io { offset, .. }
            | CaptureError::Truncated { offset, .. }
            | CaptureError::Malformed { offset, .. } => *offset,
            CaptureError::NotACapture { .. } => 0,
        }
    }

    /// The frame the problem is in (or after), when known.
    pub fn frame(&self) -> Option<u64> {
        match self {
            CaptureError::Truncated { frame, .. } | CaptureError::Malformed { frame, .. } => *frame,
            _ => None,
        }
    }
}

/// How to read a capture.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// TLS secrets (merged with the capture's own Decryption Secrets Blocks).
    pub keylog: Option<KeyLog>,
    /// Data bytes kept per direction and layer; beyond this, `Elided` events count them.
    pub max_retained_per_direction: usize,
    /// Server ports of RD Gateways (none by default: most HTTPS on 443 is no gateway): an HTTPS
    /// conversation to one of them is kept (as a gateway hop) even without TLS secrets for it. With secrets, an HTTPS conversation is kept
    /// when its first request is an RD Gateway one (`RDG_OUT_DATA`, `RDG_IN_DATA`, `RPC_IN_DATA`…).
    pub gateway_ports: Vec<u16>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            keylog: None,
            max_retained_per_direction: 1024 * 1024,
            gateway_ports: Vec::new(),
        }
    }
}

/// Streams the RDP conversations of a capture. See the module documentation.
///
/// Fails at once only when the file header is unreadable; damage later in the file ends the
/// iterator with one `Err` after the conversations found before it.
pub fn read_conversations<R: Read>(
    input: R,
    opts: ReaderOptions,
) -> Result<Conversations<R>, CaptureError> {
    Ok(Conversations::with_reader(RecordReader::new(input)?, opts))
}

/// Like [`read_conversations`], for a file: a regular file is read through a memory map when it
/// can be (see [`map`]), which spares copying its bytes; anything else is read as usual.
pub fn read_capture_file(
    mut file: std::fs::File,
    opts: ReaderOptions,
) -> Result<Conversations<Box<dyn Read + Send>>, CaptureError> {
    let map = map::map_file(&mut file);
    let input: Box<dyn Read + Send> = Box::new(file);
    Ok(Conversations::with_reader(
        RecordReader::with_map(input, map)?,
        opts,
    ))
}

impl<R: Read> Conversations<R> {
    fn with_reader(reader: RecordReader<R>, opts: ReaderOptions) -> Self {
        Conversations {
            reader,
            engine: Engine {
                keylog: opts.keylog.clone().unwrap_or_default(),
                opts,
                table: HashMap::default(),
                queue: VecDeque::new(),
                closing: Vec::new(),
                closing_note: None,
                closing_err: None,
                next_id: 0,
                last_t_us: 0,
                last_frame: 0,
                stats: ReaderStats::default(),
                defrag: defrag::Defrag::new(),
                udp: rdpeudp::UdpFlows::default(),
                outs: Vec::new(),
            },
            finished: false,
        }
    }
}

/// Counters about what was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Packet records read.
    pub frames: u64,
    /// Frames that carried a TCP segment.
    pub tcp_segments: u64,
    /// TCP conversations tracked (RDP or not).
    pub conversations_seen: u64,
    /// RDP conversations yielded.
    pub rdp_conversations: u64,
    /// Conversations dropped because the table was full.
    pub evicted: u64,
    /// Decryption Secrets Blocks with TLS key logs.
    pub secrets_blocks: u64,
    /// Frames that carried a fragment of a TCP-carrying IP datagram.
    pub ip_fragments: u64,
    /// Fragmented datagrams reassembled (their TCP segment counts once, at the last fragment).
    pub reassembled_datagrams: u64,
    /// Fragmented datagrams dropped, never guessed: overlapping fragments that disagree, a
    /// fragment that never came in time, the reassembly table's limits, truncated fragments.
    /// Their TCP bytes show as gaps. Read from the reassembler by [`Conversations::stats`].
    pub dropped_datagrams: u64,
    /// Most bytes IP reassembly held at once (bounded by [`defrag::MAX_HELD_BYTES`]).
    pub peak_fragment_bytes: u64,
    /// RDP conversations truncated for memory (see [`MAX_EVENTS_PER_CONVERSATION`]).
    pub truncated_conversations: u64,
}

/// Iterator over the RDP conversations of a capture (see [`read_conversations`]).
pub struct Conversations<R: Read> {
    reader: RecordReader<R>,
    engine: Engine,
    finished: bool,
}

struct Engine {
    opts: ReaderOptions,
    keylog: KeyLog,
    /// foldhash: the per-segment lookup with SipHash was a tenth of the reader's time; foldhash is
    /// seeded per process, so a crafted capture cannot aim collisions at it. Boxed: growing the
    /// table moves and re-allocates pointers, not every live conversation's state.
    table: HashMap<ConnKey, Box<Conn>, foldhash::fast::RandomState>,
    queue: VecDeque<Result<Trace, CaptureError>>,
    /// At the end of input: the conversations still to flush, last id first, then the error.
    /// Flushed one per `next` so that a capture ending with thousands live holds one finished
    /// trace at a time, not all of them.
    closing: Vec<Conn>,
    closing_note: Option<String>,
    closing_err: Option<CaptureError>,
    next_id: u64,
    last_t_us: u64,
    last_frame: u64,
    stats: ReaderStats,
    defrag: defrag::Defrag,
    udp: rdpeudp::UdpFlows,
    /// Reassembly outputs of the segment being handled (kept for its allocation).
    outs: Vec<Output>,
}

impl<R: Read> Conversations<R> {
    /// Counters so far.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            // INVARIANT: counted once, by the reassembler (it also drops datagrams as they expire).
            dropped_datagrams: self.engine.defrag.dropped,
            peak_fragment_bytes: self.engine.defrag.peak_held as u64,
            ..self.engine.stats.clone()
        }
    }

    /// Bytes of the file consumed so far.
    pub fn offset(&self) -> u64 {
        self.reader.offset()
    }

    /// RDP-UDP (MS-RDPEUDP) flows seen so far, in the order they started (listed, not decoded).
    pub fn udp_flows(&self) -> Vec<rdpeudp::UdpFlow> {
        self.engine.udp.flows()
    }

    /// The key log: the caller's plus every Decryption Secrets Block read so far.
    pub fn keylog(&self) -> &KeyLog {
        &self.engine.keylog
    }

    fn step(&mut self) {
        let table = &mut self.engine.table;
        self.reader.release_map(|at| {
            for c in table.values_mut() {
                c.own_bytes_in(at);
            }
        });
        match self.reader.next_record() {
            Ok(Some(Record::Secrets(stype, data))) => {
                if stype == SECRETS_TLS_KEYLOG {
                    self.engine.stats.secrets_blocks += 1;
                    let k = KeyLog::parse(&String::from_utf8_lossy(data));
                    self.engine.keylog.merge(k);
                }
            }
            Ok(Some(Record::Packet(p))) => {
                let e = &mut self.engine;
                e.stats.frames = p.frame;
                e.last_frame = p.frame;
                e.last_t_us = e.last_t_us.max(p.t_us);
                match packet::parse(p.linktype, p.data) {
                    packet::Parsed::Tcp(mut seg) => {
                        seg.backing = p.backing;
                        e.stats.tcp_segments += 1;
                        if let Some(what) = p.client_rejected {
                            // Before the packet's own events: the rejection came first.
                            e.client_rejected(&seg, what, p.frame, p.t_us);
                        }
                        if let Some(stage) = p.stopped_after {
                            // Before the packet's own events: the probe stopped, then this frame.
                            e.stopped_after(&seg, stage, p.frame, p.t_us);
                        }
                        e.segment(&seg, p.frame, p.t_us);
                    }
                    packet::Parsed::Fragment(f) => {
                        e.stats.ip_fragments += 1;
                        if let defrag::Outcome::Complete { src, dst, payload } =
                            e.defrag.push(&f, p.t_us)
                        {
                            e.stats.reassembled_datagrams += 1;
                            if let Some(seg) = packet::tcp_in(src, dst, &payload) {
                                e.stats.tcp_segments += 1;
                                e.segment(&seg, p.frame, p.t_us);
                            }
                        }
                    }
                    packet::Parsed::Udp(d) => {
                        e.udp.observe(d.src, d.dst, d.payload, p.frame, p.t_us);
                    }
                    packet::Parsed::Icmp(icmp) => e.icmp(&icmp, p.frame, p.t_us),
                    packet::Parsed::Other => {}
                }
            }
            Ok(None) => {
                self.finished = true;
                self.engine.finish(None);
            }
            Err(err) => {
                self.finished = true;
                self.engine.finish(Some(err));
            }
        }
    }
}

impl<R: Read> Iterator for Conversations<R> {
    type Item = Result<Trace, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.engine.queue.pop_front() {
                return Some(x);
            }
            if self.finished {
                match self.engine.close_next()? {
                    Ok(()) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            self.step();
        }
    }
}

impl Engine {
    /// A capture written by rdprobe says its client rejected the server's data here.
    fn client_rejected(&mut self, seg: &packet::Segment<'_>, what: &[u8], frame: u64, t_us: u64) {
        let key = ConnKey::of(seg.src, seg.dst);
        if let Some(c) = self.table.get_mut(&key) {
            let what = String::from_utf8_lossy(what).into_owned();
            c.event(t_us, Some(frame), EventKind::ClientRejected { what });
        }
    }

    /// A capture written by rdprobe says its probe stopped on purpose after this stage here (an
    /// unknown stage name is ignored: the comment is then only a comment).
    fn stopped_after(&mut self, seg: &packet::Segment<'_>, stage: &[u8], frame: u64, t_us: u64) {
        let name: String = String::from_utf8_lossy(stage)
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(stage) = crate::stage::Stage::parse(&name) else {
            return;
        };
        let key = ConnKey::of(seg.src, seg.dst);
        if let Some(c) = self.table.get_mut(&key) {
            c.event(t_us, Some(frame), EventKind::StoppedAfter(stage));
        }
    }

    fn segment(&mut self, seg: &packet::Segment<'_>, frame: u64, t_us: u64) {
        let key = ConnKey::of(seg.src, seg.dst);
        let f = seg.flags;
        // A new SYN on the ports of a conversation that already started another: port reuse.
        if f.syn && !f.ack {
            let reuse = self.table.get(&key).is_some_and(|c| {
                c.client_isn.is_some_and(|isn| isn != seg.seq)
                    || (c.client_isn.is_none() && c.any_data)
            });
            if reuse {
                if let Some(mut c) = self.table.remove(&key) {
                    c.end_note = Some(format!(
                        "a new syn at frame {frame} reused this conversation's ports"
                    ));
                    self.emit(*c, End::Evicted, t_us);
                }
            }
        }
        if self.table.len() >= MAX_CONVERSATIONS
            && sides_of_new(seg).is_some()
            && !self.table.contains_key(&key)
        {
            self.evict(t_us);
        }
        // One lookup for a segment of a conversation already followed (nearly all of them).
        let c = match self.table.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let Some((client, server, known)) = sides_of_new(seg) else {
                    return;
                };
                let mut c = Conn::new(self.next_id, client, server, known);
                c.mid_start = !f.syn;
                self.next_id += 1;
                self.stats.conversations_seen += 1;
                v.insert(Box::new(c))
            }
        };
        c.last_t = t_us;
        c.last_frame = frame;
        if c.class == Class::NotRdp {
            if f.rst || (f.fin && c.fin[usize::from(seg.src != c.client)]) {
                self.table.remove(&key);
            } else if f.fin {
                c.fin[usize::from(seg.src != c.client)] = true;
            }
            return;
        }
        // SYN-ACK seen first (no SYN): the SYN-ACK sender is the server.
        if f.syn && f.ack && !c.client_known && c.class == Class::Pending {
            if seg.src == c.client {
                c.flip();
            }
            c.client_known = true;
        }
        let dir = if seg.src == c.client {
            Dir::C2S
        } else {
            Dir::S2C
        };
        if let Some(t) = &mut c.tcp {
            t.packet(
                dir,
                &PacketFacts {
                    t_us,
                    frame: Some(frame),
                    seq: seg.seq,
                    ack: f.ack.then_some(seg.ack),
                    syn: f.syn,
                    fin: f.fin,
                    rst: f.rst,
                    payload_len: u32::try_from(seg.payload.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(seg.missing),
                    ttl: seg.hdr.ttl,
                    ip_id: seg.hdr.ip_id,
                    df: seg.hdr.df,
                    window: seg.hdr.window,
                },
            );
        }
        // Reused across segments (always drained by `outputs`): no allocation per segment.
        let mut outs = std::mem::take(&mut self.outs);
        if f.syn {
            if dir == Dir::C2S && !f.ack {
                c.syns += 1;
                if c.syns == 1 {
                    c.first_syn_t = t_us;
                }
                c.client_isn.get_or_insert(seg.seq);
                c.c2s.set_isn(seg.seq);
            } else if dir == Dir::S2C && f.ack {
                c.s2c.set_isn(seg.seq);
                c.c2s.set_isn(seg.ack.wrapping_sub(1));
                if !c.connected {
                    c.connected = true;
                    c.event(t_us, Some(frame), EventKind::Connected);
                }
            }
        }
        if f.rst {
            let refused = dir == Dir::S2C && !c.connected && c.syns > 0 && !c.any_data;
            if refused {
                c.event(
                    t_us,
                    Some(frame),
                    EventKind::ConnectFailed(ConnectFailure::Refused),
                );
            } else {
                for d in [Dir::C2S, Dir::S2C] {
                    c.reasm(d).flush(frame, t_us, &mut outs);
                    c.outputs(d, &mut outs, &self.keylog, &self.opts);
                }
                c.event(t_us, Some(frame), EventKind::Rst { dir });
            }
            if let Some(c) = self.table.remove(&key) {
                self.emit(*c, End::Closed, t_us);
            }
            self.outs = outs;
            return;
        }
        if f.ack {
            c.reasm(dir.reverse())
                .peer_ack(seg.ack, frame, t_us, &mut outs);
            c.outputs(dir.reverse(), &mut outs, &self.keylog, &self.opts);
        }
        if !seg.payload.is_empty() || seg.missing > 0 || f.fin {
            let seq = if f.syn {
                seg.seq.wrapping_add(1)
            } else {
                seg.seq
            };
            c.reasm(dir).segment(
                seq,
                seg.payload(),
                seg.missing,
                f.fin,
                frame,
                t_us,
                &mut outs,
            );
            c.outputs(dir, &mut outs, &self.keylog, &self.opts);
        }
        let closed = c.fin[0] && c.fin[1];
        self.outs = outs;
        if closed {
            if let Some(c) = self.table.remove(&key) {
                self.emit(*c, End::Closed, t_us);
            }
        }
    }

    /// An ICMP error: recorded on the conversation of the TCP packet it quotes.
    fn icmp(&mut self, icmp: &packet::IcmpError, frame: u64, t_us: u64) {
        let key = ConnKey::of(icmp.quoted_src, icmp.quoted_dst);
        let Some(c) = self.table.get_mut(&key) else {
            return;
        };
        let about = if icmp.quoted_src == c.client {
            Dir::C2S
        } else {
            Dir::S2C
        };
        if let Some(t) = &mut c.tcp {
            t.icmp(IcmpFact {
                t_us,
                frame: Some(frame),
                from: icmp.from.to_string(),
                about,
                what: icmp.describe(),
                mtu: icmp.mtu,
            });
        }
    }

    /// Drops the least recently active eighth of the table.
    fn evict(&mut self, t_us: u64) {
        let mut ages: Vec<(u64, ConnKey)> =
            self.table.iter().map(|(k, c)| (c.last_t, *k)).collect();
        ages.sort_unstable_by_key(|a| a.0);
        for (_, k) in ages.into_iter().take(MAX_CONVERSATIONS / 8) {
            if let Some(mut c) = self.table.remove(&k) {
                self.stats.evicted += 1;
                c.end_note = Some(format!(
                    "stopped following this conversation: more than {MAX_CONVERSATIONS} live conversations"
                ));
                self.emit(*c, End::Evicted, t_us);
            }
        }
    }

    fn emit(&mut self, c: Conn, end: End, t_us: u64) {
        if let Some((t, truncated)) = c.finalize(end, t_us, &self.keylog, &self.opts) {
            self.stats.rdp_conversations += 1;
            self.stats.truncated_conversations += u64::from(truncated);
            self.queue.push_back(Ok(t));
        }
    }

    /// End of input (clean or damaged): every live conversation is to be flushed, then the error
    /// (see [`Engine::close_next`]).
    fn finish(&mut self, err: Option<CaptureError>) {
        self.closing = self.table.drain().map(|(_, c)| *c).collect();
        self.closing
            .sort_unstable_by_key(|c| std::cmp::Reverse(c.id));
        self.closing_note = err.as_ref().map(|e| match e {
            CaptureError::Truncated { .. } => format!("capture cut short: {e}"),
            _ => format!("capture damaged: {e}"),
        });
        self.closing_err = err;
    }

    /// After [`Engine::finish`]: flushes the next live conversation, in the order they started
    /// (`Ok`, its trace queued if it was RDP), or hands over the error once none is left (`Err`);
    /// `None` when both are done.
    fn close_next(&mut self) -> Option<Result<(), CaptureError>> {
        if let Some(mut c) = self.closing.pop() {
            c.end_note = self.closing_note.clone();
            self.emit(c, End::Eof, self.last_t_us);
            return Some(Ok(()));
        }
        self.closing_err.take().map(Err)
    }
}

/// Who is the client and who the server of a conversation `seg` would start, and whether that is
/// known (a SYN or SYN-ACK) or guessed; `None` when `seg` starts none (no SYN, no payload, or a
/// RST).
fn sides_of_new(seg: &packet::Segment<'_>) -> Option<(SocketAddr, SocketAddr, bool)> {
    let f = seg.flags;
    let has_payload = !seg.payload.is_empty() || seg.missing > 0;
    if f.syn && !f.ack {
        Some((seg.src, seg.dst, true))
    } else if f.syn && f.ack {
        Some((seg.dst, seg.src, true))
    } else if has_payload && !f.rst {
        // Mid-connection: guess from ports until the content says otherwise.
        if seg.dst.port() == RDP_PORT
            || (seg.src.port() != RDP_PORT && seg.dst.port() < seg.src.port())
        {
            Some((seg.src, seg.dst, false))
        } else {
            Some((seg.dst, seg.src, false))
        }
    } else {
        None
    }
}

/// Conversation key: the two endpoints, lower first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey(SocketAddr, SocketAddr);

impl ConnKey {
    fn of(a: SocketAddr, b: SocketAddr) -> ConnKey {
        if a <= b {
            ConnKey(a, b)
        } else {
            ConnKey(b, a)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Pending,
    Rdp,
    NotRdp,
}

enum PendingItem {
    Data {
        dir: Dir,
        bytes: Bytes,
        frame: u64,
        t_us: u64,
    },
    Event(Event),
}

enum End {
    Closed,
    Eof,
    Evicted,
}

struct Conn {
    id: u64,
    client: SocketAddr,
    server: SocketAddr,
    /// The client is known (from a SYN, SYN-ACK or an X.224 Connection Request).
    client_known: bool,
    class: Class,
    c2s: Reassembler,
    s2c: Reassembler,
    client_isn: Option<u32>,
    syns: u32,
    first_syn_t: u64,
    connected: bool,
    fin: [bool; 2],
    any_data: bool,
    last_t: u64,
    last_frame: u64,
    pending: Vec<PendingItem>,
    prefix: [Vec<u8>; 2],
    events: Timeline,
    retained: [usize; 4],
    /// Per direction, where TLS starts in the wire stream.
    wire: [TlsStart; 2],
    tls: Option<Box<TlsDecryptor>>,
    keylog_lines: Vec<String>,
    /// HTTPS from the first byte, kept as a possible RD Gateway hop (decided at the end).
    https: bool,
    mid_start: bool,
    end_note: Option<String>,
    /// TCP / IP evidence (dropped once the conversation is known not to be RDP).
    tcp: Option<Box<Tracker>>,
}

fn di(dir: Dir) -> usize {
    match dir {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

/// TPKT (RFC 1006) + X.224 Connection Request (X.224 13.3, MS-RDPBCGR 2.2.1.1) at the start of `b`.
fn is_connection_request(b: &[u8]) -> bool {
    if b.len() < 11 || b[0] != 3 || b[1] != 0 {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    (11..=4096).contains(&len)
        && usize::from(b[4]) == len - 5
        && b[5] & 0xF0 == 0xE0
        && b[6] == 0
        && b[7] == 0
}

fn looks_tpkt(b: &[u8]) -> bool {
    b.len() >= 5 && b[0] == 3 && b[1] == 0 && u16::from_be_bytes([b[2], b[3]]) >= 7
}

/// Whether `b` starts with a TLS record header, by the one record rule ([`crate::wire::tls`]).
fn looks_tls(b: &[u8]) -> bool {
    crate::wire::tls::RecordHeader::parse(b, 0).is_ok()
}

impl Conn {
    fn new(id: u64, client: SocketAddr, server: SocketAddr, client_known: bool) -> Conn {
        Conn {
            id,
            client,
            server,
            client_known,
            class: Class::Pending,
            c2s: Reassembler::new(),
            s2c: Reassembler::new(),
            client_isn: None,
            syns: 0,
            first_syn_t: 0,
            connected: false,
            fin: [false; 2],
            any_data: false,
            last_t: 0,
            last_frame: 0,
            pending: Vec::new(),
            prefix: [Vec::new(), Vec::new()],
            events: Timeline::default(),
            retained: [0; 4],
            wire: [
                TlsStart::after_tpkt_or_at_once(),
                TlsStart::after_tpkt_or_at_once(),
            ],
            tls: None,
            keylog_lines: Vec::new(),
            https: false,
            mid_start: false,
            end_note: None,
            tcp: Some(Box::default()),
        }
    }

    /// Copies the bytes this conversation holds that are slices of the address range `at` (pages
    /// of a mapped capture about to be released). Timeline data is appended in file order, so
    /// the walk resumes where the last one stopped and stops at the first slice beyond `at`.
    fn own_bytes_in(&mut self, release: &file::MapRelease) {
        use crate::capture::reassembly::own_if_in;
        let at = &release.due;
        self.c2s.own_bytes_in(at);
        self.s2c.own_bytes_in(at);
        for item in &mut self.pending {
            match item {
                PendingItem::Data { bytes, .. }
                | PendingItem::Event(Event {
                    kind: EventKind::Data { bytes, .. },
                    ..
                }) => {
                    own_if_in(bytes, at);
                }
                PendingItem::Event(_) => {}
            }
        }
        let events = &mut self.events.events;
        while let Some(e) = events.get_mut(self.events.owned_upto) {
            if let EventKind::Data { bytes, .. } = &mut e.kind {
                if !own_if_in(bytes, at) && release.after(bytes) {
                    break;
                }
            }
            self.events.owned_upto += 1;
        }
    }

    fn reasm(&mut self, dir: Dir) -> &mut Reassembler {
        match dir {
            Dir::C2S => &mut self.c2s,
            Dir::S2C => &mut self.s2c,
        }
    }

    /// Records a non-data event (buffered while the conversation is not yet recognized).
    fn event(&mut self, t_us: u64, frame: Option<u64>, kind: EventKind) {
        match self.class {
            Class::NotRdp => {}
            Class::Pending => {
                if let EventKind::Gap { dir, len } = kind {
                    if merge_pending_gap(&mut self.pending, dir, len) {
                        return;
                    }
                }
                self.pending
                    .push(PendingItem::Event(Event { t_us, frame, kind }))
            }
            Class::Rdp => self.events.push(t_us, frame, kind),
        }
    }

    /// Swaps client and server (only while nothing has been emitted).
    fn flip(&mut self) {
        std::mem::swap(&mut self.client, &mut self.server);
        std::mem::swap(&mut self.c2s, &mut self.s2c);
        self.prefix.swap(0, 1);
        if let Some(t) = &mut self.tcp {
            t.flip();
        }
        for item in &mut self.pending {
            match item {
                PendingItem::Data { dir, .. } => *dir = dir.reverse(),
                PendingItem::Event(e) => flip_event(&mut e.kind),
            }
        }
    }

    /// Decides whether this is RDP. `last`: no more data will come.
    fn classify(&mut self, last: bool) -> Class {
        if self.class != Class::Pending {
            return self.class;
        }
        let (c, s) = (&self.prefix[0], &self.prefix[1]);
        if is_connection_request(c) {
            return Class::Rdp;
        }
        if !self.client_known && is_connection_request(s) {
            self.flip();
            self.client_known = true;
            return Class::Rdp;
        }
        // A tunnel preamble (e.g. SOCKS5) before the Connection Request.
        if let Some(at) = (1..c.len().saturating_sub(10)).find(|&i| is_connection_request(&c[i..]))
        {
            self.trim_preamble(at);
            return Class::Rdp;
        }
        let on_rdp_port = self.server.port() == RDP_PORT
            || (!self.client_known && self.client.port() == RDP_PORT);
        if on_rdp_port && (looks_tpkt(c) || looks_tls(c) || looks_tpkt(s) || looks_tls(s)) {
            if !self.client_known
                && self.client.port() == RDP_PORT
                && self.server.port() != RDP_PORT
            {
                self.flip();
            }
            return Class::Rdp;
        }
        let full = c.len() >= CLASSIFY_PREFIX
            || s.len() >= CLASSIFY_PREFIX
            || self.pending.len() >= MAX_PENDING_ITEMS;
        if !last && !full {
            return Class::Pending;
        }
        // A connection attempt to the RDP port that never carried data: a tcp-stage failure.
        if on_rdp_port && !self.any_data && self.syns > 0 {
            return Class::Rdp;
        }
        Class::NotRdp
    }

    /// An HTTPS conversation worth decoding as an RD Gateway hop: the client (known from its SYN)
    /// starts with a TLS ClientHello, and the capture has the secrets of that session or the server
    /// port is a gateway port.
    fn maybe_gateway(&self, keylog: &KeyLog, opts: &ReaderOptions) -> bool {
        let c = &self.prefix[0];
        if !self.client_known || c.len() < 43 || c[0] != 0x16 || c[1] != 3 || c[5] != 1 {
            return false;
        }
        if opts.gateway_ports.contains(&self.server.port()) {
            return true;
        }
        // ClientHello.random: after the record header (5), handshake header (4) and version (2).
        let mut cr = [0u8; 32];
        cr.copy_from_slice(&c[11..43]);
        !keylog.lines_for(&cr).is_empty()
    }

    /// Whether a kept HTTPS conversation is an RD Gateway's: its first request is a gateway one, or
    /// (no cleartext) it went to a gateway port.
    fn is_gateway_hop(&self, opts: &ReaderOptions) -> bool {
        let mut first = Vec::new();
        for e in self.events.iter() {
            if let EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Inner,
                bytes,
            } = &e.kind
            {
                first.extend_from_slice(&bytes[..bytes.len().min(256 - first.len())]);
                if first.len() >= 256 {
                    break;
                }
            }
        }
        if first.is_empty() {
            // No cleartext: a gateway port, or a session with secrets that carried no request
            // (a client that stopped after the handshake).
            return opts.gateway_ports.contains(&self.server.port())
                || !self.keylog_lines.is_empty();
        }
        let line = first.split(|b| *b == b'\n').next().unwrap_or(&[]);
        let line = String::from_utf8_lossy(line);
        [
            "RDG_OUT_DATA ",
            "RDG_IN_DATA ",
            "RPC_IN_DATA ",
            "RPC_OUT_DATA ",
        ]
        .iter()
        .any(|m| line.starts_with(m))
            || line.contains("/remoteDesktopGateway/")
            || line.contains("/rpc/rpcproxy.dll")
    }

    /// Drops the client bytes before offset `at` and the server bytes sent before them.
    fn trim_preamble(&mut self, at: usize) {
        let mut skip = at;
        let mut server_dropped = 0usize;
        let mut client_dropped = 0usize;
        let mut reached = false;
        let mut kept = Vec::with_capacity(self.pending.len());
        let mut note_at = None;
        for item in std::mem::take(&mut self.pending) {
            match item {
                PendingItem::Data {
                    dir: Dir::C2S,
                    bytes,
                    frame,
                    t_us,
                } if !reached => {
                    if bytes.len() <= skip {
                        skip -= bytes.len();
                        client_dropped += bytes.len();
                    } else {
                        client_dropped += skip;
                        let rest = bytes.slice(skip..);
                        skip = 0;
                        reached = true;
                        note_at = Some((t_us, frame));
                        kept.push(PendingItem::Data {
                            dir: Dir::C2S,
                            bytes: rest,
                            frame,
                            t_us,
                        });
                    }
                }
                PendingItem::Data {
                    dir: Dir::S2C,
                    bytes,
                    ..
                } if !reached => server_dropped += bytes.len(),
                other => kept.push(other),
            }
        }
        self.pending = kept;
        let (t, f) = note_at.unwrap_or((0, 0));
        let pos = self
            .pending
            .iter()
            .position(|i| matches!(i, PendingItem::Data { dir: Dir::C2S, .. }))
            .unwrap_or(0);
        self.pending.insert(
            pos,
            PendingItem::Event(Event {
                t_us: t,
                frame: Some(f).filter(|f| *f > 0),
                kind: EventKind::Note(format!(
                    "rdp starts after a non-rdp preamble: skipped {client_dropped} client and {server_dropped} server bytes (tunnel or proxy handshake)"
                )),
            }),
        );
        self.prefix = [Vec::new(), Vec::new()];
    }

    /// Data delivered by reassembly.
    fn data(
        &mut self,
        dir: Dir,
        bytes: Bytes,
        frame: u64,
        t_us: u64,
        keylog: &KeyLog,
        opts: &ReaderOptions,
    ) {
        self.any_data = true;
        match self.class {
            Class::NotRdp => {}
            Class::Pending => {
                let p = &mut self.prefix[di(dir)];
                let room = CLASSIFY_PREFIX.saturating_sub(p.len());
                p.extend_from_slice(&bytes[..room.min(bytes.len())]);
                self.pending.push(PendingItem::Data {
                    dir,
                    bytes,
                    frame,
                    t_us,
                });
                self.try_classify(false, keylog, opts);
            }
            Class::Rdp => self.rdp_data(dir, bytes, frame, t_us, keylog, opts),
        }
    }

    fn try_classify(&mut self, last: bool, keylog: &KeyLog, opts: &ReaderOptions) {
        let class = match self.classify(last) {
            Class::NotRdp if self.maybe_gateway(keylog, opts) => {
                self.https = true;
                Class::Rdp
            }
            c => c,
        };
        match class {
            Class::Pending => {}
            Class::NotRdp => {
                self.class = Class::NotRdp;
                self.pending = Vec::new();
                self.prefix = [Vec::new(), Vec::new()];
                // Ignored from now on: free what reassembly holds.
                self.c2s = Reassembler::new();
                self.s2c = Reassembler::new();
                self.tcp = None;
            }
            Class::Rdp => {
                self.class = Class::Rdp;
                self.prefix = [Vec::new(), Vec::new()];
                if self.mid_start {
                    let t0 = self.pending_first_t();
                    self.events.push(
                        t0,
                        None,
                        EventKind::Note(
                            "capture starts mid-connection: tcp handshake not seen".into(),
                        ),
                    );
                }
                for item in std::mem::take(&mut self.pending) {
                    match item {
                        PendingItem::Data {
                            dir,
                            bytes,
                            frame,
                            t_us,
                        } => self.rdp_data(dir, bytes, frame, t_us, keylog, opts),
                        PendingItem::Event(e) => {
                            if let EventKind::Gap { dir, .. } = e.kind {
                                self.wire_gap(dir, e.frame, e.t_us);
                            }
                            self.events.push(e.t_us, e.frame, e.kind);
                        }
                    }
                }
            }
        }
    }

    fn pending_first_t(&self) -> u64 {
        match self.pending.first() {
            Some(PendingItem::Data { t_us, .. }) => *t_us,
            Some(PendingItem::Event(e)) => e.t_us,
            None => self.last_t,
        }
    }

    fn rdp_data(
        &mut self,
        dir: Dir,
        bytes: Bytes,
        frame: u64,
        t_us: u64,
        keylog: &KeyLog,
        opts: &ReaderOptions,
    ) {
        // Find where TLS starts in this direction (after the first TPKT, or at once when the capture
        // starts inside TLS).
        let tls_input = self.wire[di(dir)].feed(&bytes);
        // The TLS layer reads the bytes before they move into the timeline (its outputs come after
        // the wire data event, as before): the segment's `Bytes` is moved, not cloned and dropped.
        let mut out = Vec::new();
        if let Some((head, from)) = &tls_input {
            let tls = self
                .tls
                .get_or_insert_with(|| Box::new(TlsDecryptor::new()));
            if !head.is_empty() {
                tls.feed(dir, head, frame, t_us, keylog, &mut out);
            }
            if *from < bytes.len() {
                tls.feed(dir, &bytes[*from..], frame, t_us, keylog, &mut out);
            }
        }
        self.events.data(
            &mut self.retained[di(dir) * 2],
            opts.max_retained_per_direction,
            dir,
            Layer::Wire,
            bytes,
            frame,
            t_us,
        );
        if !out.is_empty() {
            self.tls_outputs(out, opts);
        }
    }

    fn tls_outputs(&mut self, out: Vec<TlsOutput>, opts: &ReaderOptions) {
        for o in out {
            match o {
                TlsOutput::Inner {
                    dir,
                    bytes,
                    frame,
                    t_us,
                } => self.events.data(
                    &mut self.retained[di(dir) * 2 + 1],
                    opts.max_retained_per_direction,
                    dir,
                    Layer::Inner,
                    Bytes::from(bytes),
                    frame,
                    t_us,
                ),
                TlsOutput::Session { info, frame, t_us } => {
                    self.events
                        .push(t_us, Some(frame), EventKind::TlsSession(info))
                }
                TlsOutput::Note { text, frame, t_us } => {
                    self.events.push(t_us, Some(frame), EventKind::Note(text))
                }
                TlsOutput::Keylog(lines) => self.keylog_lines = lines,
            }
        }
    }

    /// A gap in `dir`: stream parsing above TCP stops there (never guessed over).
    fn wire_gap(&mut self, dir: Dir, frame: Option<u64>, t_us: u64) {
        if !self.wire[di(dir)].is_tls() {
            self.wire[di(dir)].give_up();
        } else if self.tls.as_mut().is_some_and(|t| t.gap(dir)) {
            let side = dir.sender();
            self.events.push(
                t_us,
                frame,
                EventKind::Note(format!(
                    "tls decryption of the {side}'s records stopped at a gap in the capture"
                )),
            );
        }
    }

    /// Turns reassembly outputs of `dir` into events.
    fn outputs(&mut self, dir: Dir, outs: &mut Vec<Output>, keylog: &KeyLog, opts: &ReaderOptions) {
        for o in outs.drain(..) {
            match o {
                Output::Data { bytes, frame, t_us } => {
                    self.data(dir, bytes, frame, t_us, keylog, opts)
                }
                Output::Gap { len, frame, t_us } => {
                    if self.class == Class::Rdp {
                        self.wire_gap(dir, Some(frame), t_us);
                    }
                    self.event(t_us, Some(frame), EventKind::Gap { dir, len });
                    // Gaps count toward the items buffered before recognition, like data.
                    if self.class == Class::Pending && self.pending.len() >= MAX_PENDING_ITEMS {
                        self.try_classify(false, keylog, opts);
                    }
                }
                Output::Fin { frame, t_us } => {
                    self.fin[di(dir)] = true;
                    self.event(t_us, Some(frame), EventKind::Fin { dir });
                }
            }
        }
    }

    /// Delivers everything still held by reassembly (holes become gaps).
    fn flush_all(&mut self, keylog: &KeyLog, opts: &ReaderOptions) {
        let mut outs = Vec::new();
        for d in [Dir::C2S, Dir::S2C] {
            let (f, t) = (self.last_frame, self.last_t);
            self.reasm(d).flush(f, t, &mut outs);
            self.outputs(d, &mut outs, keylog, opts);
        }
    }

    /// Ends the conversation: the Trace if it is RDP.
    fn finalize(
        mut self,
        end: End,
        t_us: u64,
        keylog: &KeyLog,
        opts: &ReaderOptions,
    ) -> Option<(Trace, bool)> {
        self.flush_all(keylog, opts);
        if self.class == Class::Pending {
            self.try_classify(true, keylog, opts);
        }
        if self.class != Class::Rdp {
            return None;
        }
        if self.https && !self.is_gateway_hop(opts) {
            return None;
        }
        if let Some(note) = self.end_note.take() {
            self.events.push_end(t_us, None, EventKind::Note(note));
        }
        let ended = self
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Rst { .. } | EventKind::ConnectFailed(_)))
            || (self.fin[0] && self.fin[1]);
        if !matches!(end, End::Closed) && !ended {
            if self.syns > 0 && !self.connected && !self.any_data {
                let after_ms = t_us.saturating_sub(self.first_syn_t) / 1000;
                self.events.push_end(
                    t_us,
                    Some(self.last_frame),
                    EventKind::ConnectFailed(ConnectFailure::TimedOut { after_ms }),
                );
            }
            if matches!(end, End::Eof) {
                self.events.push_end(t_us, None, EventKind::CaptureEnd);
            }
        }
        let mut trace = Trace::new(self.client, self.server);
        let (events, truncated) = self.events.finish();
        trace.events = events;
        trace.keylog = self.keylog_lines;
        if self.https {
            // The channel's own TLS (the inner RDP) needs its secrets too: the decoder picks them
            // by the inner ClientHello, so the hop carries the capture's whole key log (bounded).
            trace.keylog = keylog.all_lines(MAX_GATEWAY_KEYLOG_LINES);
        }
        trace.tcp = self.tcp.map(|t| Box::new(t.finish()));
        trace.connect_start_us = (self.syns > 0).then_some(self.first_syn_t);
        Some((trace, truncated))
    }
}

fn flip_event(kind: &mut EventKind) {
    match kind {
        EventKind::Data { dir, .. }
        | EventKind::Elided { dir, .. }
        | EventKind::Gap { dir, .. }
        | EventKind::Fin { dir }
        | EventKind::Rst { dir } => *dir = dir.reverse(),
        _ => {}
    }
}

/// One conversation's events, bounded (see [`MAX_EVENTS_PER_CONVERSATION`]).
#[derive(Default)]
struct Timeline {
    events: Vec<Event>,
    /// Index of the note saying the conversation was truncated, once the cap was reached.
    marker: Option<usize>,
    /// Events counted but not stored since the cap was reached.
    not_stored: u64,
    /// Where the counts after the cap go: Elided (wire, inner) and Gap, for each direction.
    overflow: [Option<usize>; 6],
    /// Events before this index hold no slice of a mapped capture's released pages.
    owned_upto: usize,
}

impl Timeline {
    fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.events.iter()
    }

    fn push(&mut self, t_us: u64, frame: Option<u64>, kind: EventKind) {
        if let EventKind::Gap { dir, len } = kind {
            if merge_gap(&mut self.events, dir, len) {
                return;
            }
        }
        if self.events.len() < MAX_EVENTS_PER_CONVERSATION {
            push_event(&mut self.events, t_us, frame, kind);
        } else {
            self.over_cap(t_us, frame, kind, false);
        }
    }

    /// Like `push`, for the few events that end a conversation: kept beyond the cap (within
    /// [`END_EVENTS_SLACK`]) so the verdict can still be decided.
    fn push_end(&mut self, t_us: u64, frame: Option<u64>, kind: EventKind) {
        if self.events.len() < MAX_EVENTS_PER_CONVERSATION {
            push_event(&mut self.events, t_us, frame, kind);
        } else {
            self.over_cap(t_us, frame, kind, true);
        }
    }

    fn over_cap(&mut self, t_us: u64, frame: Option<u64>, kind: EventKind, end: bool) {
        if self.marker.is_none() {
            self.marker = Some(self.events.len());
            // The text is written by `finish`, with the counts.
            push_event(
                &mut self.events,
                t_us,
                frame,
                EventKind::Note(String::new()),
            );
        }
        let (slot, counted) = match kind {
            EventKind::Data { dir, layer, bytes } => (
                di(dir) * 2 + usize::from(layer == Layer::Inner),
                EventKind::Elided {
                    dir,
                    layer,
                    len: bytes.len() as u64,
                },
            ),
            EventKind::Elided { dir, layer, len } => (
                di(dir) * 2 + usize::from(layer == Layer::Inner),
                EventKind::Elided { dir, layer, len },
            ),
            EventKind::Gap { dir, len } => (4 + di(dir), EventKind::Gap { dir, len }),
            EventKind::Connected
            | EventKind::ConnectFailed(_)
            | EventKind::Fin { .. }
            | EventKind::Rst { .. }
            | EventKind::CaptureEnd
                if self.events.len() < MAX_EVENTS_PER_CONVERSATION + END_EVENTS_SLACK =>
            {
                push_event(&mut self.events, t_us, frame, kind);
                return;
            }
            EventKind::Note(_)
                if end && self.events.len() < MAX_EVENTS_PER_CONVERSATION + END_EVENTS_SLACK =>
            {
                push_event(&mut self.events, t_us, frame, kind);
                return;
            }
            _ => {
                self.not_stored += 1;
                return;
            }
        };
        self.not_stored += 1;
        let add = match &counted {
            EventKind::Elided { len, .. } | EventKind::Gap { len, .. } => *len,
            _ => 0,
        };
        if let Some(at) = self.overflow[slot] {
            if let Some(EventKind::Elided { len, .. } | EventKind::Gap { len, .. }) =
                self.events.get_mut(at).map(|e| &mut e.kind)
            {
                *len = len.saturating_add(add);
            }
            return;
        }
        self.overflow[slot] = Some(self.events.len());
        push_event(&mut self.events, t_us, frame, counted);
    }

    /// Appends data, keeping at most `limit` bytes per direction and layer; the rest is counted.
    #[allow(clippy::too_many_arguments)]
    fn data(
        &mut self,
        retained: &mut usize,
        limit: usize,
        dir: Dir,
        layer: Layer,
        bytes: Bytes,
        frame: u64,
        t_us: u64,
    ) {
        let room = limit.saturating_sub(*retained);
        let len = bytes.len();
        let keep = room.min(len);
        if keep > 0 {
            *retained += keep;
            // Moved, not sliced, when kept whole: no reference count taken and dropped per segment.
            let bytes = if keep == len {
                bytes
            } else {
                bytes.slice(..keep)
            };
            self.push(t_us, Some(frame), EventKind::Data { dir, layer, bytes });
        }
        let elided = (len - keep) as u64;
        if elided == 0 {
            return;
        }
        // Merge with a recent Elided of the same direction and layer to keep the timeline small.
        let n = self.events.len();
        for e in self
            .events
            .iter_mut()
            .skip(n.saturating_sub(MERGE_LOOKBACK))
            .rev()
        {
            if let EventKind::Elided {
                dir: d,
                layer: l,
                len,
            } = &mut e.kind
            {
                if *d == dir && *l == layer {
                    *len += elided;
                    return;
                }
            }
        }
        self.push(
            t_us,
            Some(frame),
            EventKind::Elided {
                dir,
                layer,
                len: elided,
            },
        );
    }

    /// The events, with the truncation note written; whether the conversation was truncated.
    fn finish(mut self) -> (Vec<Event>, bool) {
        let Some(at) = self.marker else {
            return (self.events, false);
        };
        if let Some(e) = self.events.get_mut(at) {
            e.kind = EventKind::Note(format!(
                "conversation truncated for memory: more than {MAX_EVENTS_PER_CONVERSATION} events; {} later events were counted, not stored (their bytes show as elided or missing)",
                self.not_stored
            ));
        }
        (self.events, true)
    }
}

/// Adds a gap of `len` bytes in `dir` to the previous gap of that direction, when nothing but gaps
/// of the other direction and notes came since. The direction's stream above TCP already stopped at
/// the first gap, so one gap holding the sum says the same as consecutive ones.
fn merge_gap(events: &mut [Event], dir: Dir, len: u64) -> bool {
    let n = events.len();
    let recent = events[n.saturating_sub(MERGE_LOOKBACK)..].iter_mut();
    merge_gap_into(recent.rev().map(|e| Some(&mut e.kind)), dir, len)
}

/// Like [`merge_gap`], for the items of a conversation not yet recognized.
fn merge_pending_gap(items: &mut [PendingItem], dir: Dir, len: u64) -> bool {
    let n = items.len();
    let recent = items[n.saturating_sub(MERGE_LOOKBACK)..].iter_mut();
    let kinds = recent.rev().map(|item| match item {
        PendingItem::Event(e) => Some(&mut e.kind),
        _ => None,
    });
    merge_gap_into(kinds, dir, len)
}

/// The walk of [`merge_gap`] over the most recent items first (`None`: an item that is not an event).
fn merge_gap_into<'a>(
    recent: impl Iterator<Item = Option<&'a mut EventKind>>,
    dir: Dir,
    len: u64,
) -> bool {
    for kind in recent {
        match kind {
            Some(EventKind::Gap { dir: d, len: l }) if *d == dir => {
                *l = l.saturating_add(len);
                return true;
            }
            Some(EventKind::Gap { .. } | EventKind::Note(_)) => {}
            _ => return false,
        }
    }
    false
}

fn push_event(events: &mut Vec<Event>, t_us: u64, frame: Option<u64>, kind: EventKind) {
    let t = t_us.max(events.last().map(|e| e.t_us).unwrap_or(0));
    events.push(Event {
        t_us: t,
        frame,
        kind,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: Bytes) -> EventKind {
        EventKind::Data {
            dir: Dir::C2S,
            layer: Layer::Wire,
            bytes,
        }
    }

    /// Before a mapped capture's pages are released, an open conversation copies the slices it
    /// holds of them, and only those: the walk stops at the first slice beyond, and resumes there.
    #[test]
    fn slices_of_released_pages_are_copied_and_the_rest_kept() {
        let file = Bytes::from((0..=255u8).cycle().take(4096).collect::<Vec<u8>>());
        let base = file.as_ptr() as usize;
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:3389".parse().unwrap();
        let mut c = Conn::new(0, a, b, true);
        let slices = [0..100, 100..1000, 1000..2000, 3000..4000];
        for (i, r) in slices.iter().enumerate() {
            c.events
                .push(i as u64, Some(i as u64), data(file.slice(r.clone())));
        }
        let held = |c: &Conn| -> Vec<(usize, Vec<u8>)> {
            c.events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Data { bytes, .. } => {
                        Some((bytes.as_ptr() as usize, bytes.to_vec()))
                    }
                    _ => None,
                })
                .collect()
        };
        let before = held(&c);
        c.own_bytes_in(&file::MapRelease {
            due: base..base + 1000,
            map_end: base + 4096,
        });
        let after = held(&c);
        assert_eq!(
            before.iter().map(|x| &x.1).collect::<Vec<_>>(),
            after.iter().map(|x| &x.1).collect::<Vec<_>>(),
            "same bytes"
        );
        assert_ne!(after[0].0, before[0].0, "the first slice is copied");
        assert_ne!(after[1].0, before[1].0, "the second slice is copied");
        assert_eq!(after[2].0, before[2].0, "a slice beyond stays a slice");
        assert_eq!(
            c.events.owned_upto, 2,
            "the walk stopped at the first slice beyond"
        );
        c.own_bytes_in(&file::MapRelease {
            due: base + 1000..base + 3500,
            map_end: base + 4096,
        });
        let last = held(&c);
        assert_ne!(last[2].0, before[2].0);
        assert_ne!(
            last[3].0, before[3].0,
            "a slice that starts in the range is copied"
        );
        assert_eq!(last[1].0, after[1].0, "copies are not copied again");
    }
}
