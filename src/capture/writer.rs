//! pcapng writer: a [`Trace`] as a capture that Wireshark and tshark open, dissect and decrypt
//! with no settings.
//!
//! Layout (draft-ietf-opsawg-pcapng): one Section Header Block (comment "written by rdprobe …"),
//! one Interface Description Block (LINKTYPE_ETHERNET, `if_tsresol` = 6, microseconds), a Decryption
//! Secrets Block with the TLS key log when the trace has one (secrets type "TLSK", before the first
//! packet so the whole capture decrypts), then one Enhanced Packet Block per synthetic frame.
//!
//! Framing: Ethernet II with locally administered MACs, IPv4 (or IPv6 when either address is IPv6;
//! IPv4-mapped addresses count as IPv4), TCP with the trace's real addresses and ports, valid IP and
//! TCP checksums, and sequence/acknowledgement numbers that follow the byte streams exactly.
//!
//! Event mapping:
//! * `Connected` → SYN, SYN/ACK, ACK (both SYNs announce MSS [`MSS`]).
//! * `ConnectFailed(Refused)` → SYN, then RST/ACK from the server. `ConnectFailed(TimedOut)` → one
//!   SYN stamped `after_ms` before the event (the kernel's retransmissions were not observed, so
//!   they are not invented; the comment says so). `ConnectFailed(Unreachable)` → the SYN.
//! * `Data { layer: Wire }` → segments of at most [`MSS`] bytes (the Ethernet MSS that fits both
//!   IPv4 and IPv6 in a 1500-byte MTU), ACK on each, PSH on the last. A pure ACK from the receiver
//!   is inserted whenever more than [`ACK_EVERY`] bytes would be unacknowledged, so tshark never
//!   sees a full window; otherwise the other side's next segment carries the acknowledgement.
//! * `Data { layer: Inner }` → no packet (the inner stream is what decryption recovers).
//! * `Elided { layer: Wire }` and `Gap` → the sender's sequence number skips the bytes (tshark shows
//!   "previous segment not captured" there) and a comment on the next frame says why.
//! * `Fin` → FIN/ACK, `Rst` → RST/ACK, from the sender of the direction.
//! * `Timeout`, `Note`, `ClientRejected`, `StoppedAfter`, `TlsError`, `TlsSession` → a comment on the next written
//!   frame or, when no frame follows, on the last one; a trace without any frame keeps them in the
//!   section header. `CaptureEnd` → nothing.
//!
//! Per-event labels (`labels[i]` for `trace.events[i]`) become `opt_comment`s of the first frame the
//! event writes. A label on an inner-stream event goes to the nearest wire data event of the same
//! direction (the one that carried those bytes).
//!
//! Dissection in tshark/Wireshark 4.0 (checked by tests/capture_writer.rs): on port 3389 the X.224
//! PDUs are dissected as RDP with no settings, but 4.0 binds that port to TPKT and shows the TLS
//! records after them as "TPKT continuation" unless decoded as TLS (`-d tcp.port==3389,tls`); on
//! other ports its TLS heuristics find the handshake (and, with the embedded secrets, CredSSP/NTLM)
//! by themselves, and `-d tcp.port==PORT,tpkt` shows the X.224 PDUs. pcapng has no way to carry a
//! "decode as", so the capture cannot do better than that.
//!
//! A trace whose `wire` holds the probe's own captured packets is written from those instead
//! (`wire.rs`: LINKTYPE_RAW, the same comments and secrets).
//!
//! INVARIANT: the writer never panics and never buffers more than one frame: it streams to `out`.

mod packet;
mod pcapng;
pub use pcapng::{DSB_TYPE, SECRETS_TYPE_TLS_KEYLOG};
mod wire;

use std::io::Write;

use crate::trace::{ConnectFailure, Dir, EventKind, Layer, Trace};

use packet::{IpPair, Segment, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

/// Largest TCP payload per frame (bytes): 1500-byte Ethernet MTU minus 40 (IPv6) and 20 (TCP),
/// so every frame looks like one a real Ethernet link carries, for IPv4 and IPv6 alike.
pub const MSS: usize = 1440;
/// Unacknowledged bytes one side may have in flight before the writer inserts a pure ACK from the
/// other side; half the 65535-byte window every frame announces (no window scaling).
pub const ACK_EVERY: usize = 32 * 1024;
/// Receive window announced on every non-RST segment (bytes, unscaled).
const WINDOW: u16 = 65535;

/// Why a capture could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the capture failed")]
    Io(#[from] std::io::Error),
    #[error("a pcapng block of {len} bytes does not fit the 32-bit block length")]
    BlockTooLarge { len: usize },
}

impl From<pcapng::BlockTooLarge> for WriteError {
    fn from(e: pcapng::BlockTooLarge) -> Self {
        WriteError::BlockTooLarge { len: e.len }
    }
}

/// Writes `trace` as pcapng. `labels[i]` is the comment for `trace.events[i]` ("x224: connection
/// request", "tls: client hello", …); an empty label means no comment, and `labels` may be shorter
/// than the events. See the module documentation for how each event is framed.
pub fn write_pcapng<W: Write>(
    trace: &Trace,
    labels: &[String],
    mut out: W,
) -> Result<(), WriteError> {
    if let Some(w) = trace.wire.as_deref().filter(|w| !w.packets.is_empty()) {
        // The probe captured its own wire: those packets, not synthetic ones.
        return wire::write_wire(trace, w, labels, out);
    }
    let plan = plan_comments(trace, labels);
    let mut block = Vec::new();

    let mut section = vec![format!(
        "written by rdprobe {}: synthetic Ethernet/IP/TCP framing around the bytes of one TCP \
         conversation between client {} and server {}",
        env!("CARGO_PKG_VERSION"),
        trace.client,
        trace.server
    )];
    section.extend(plan.section);
    write_head(&mut out, &mut block, &section, SYNTHETIC, &trace.keylog)?;

    let mut em = Emitter::new(trace, out, block);
    // INVARIANT: plan.events is indexed like trace.events (one entry per event).
    for (ev, notes) in trace.events.iter().zip(plan.events) {
        em.event(ev.t_us, &ev.kind, notes)?;
    }
    em.out.flush()?;
    Ok(())
}

/// The interface of the synthetic framing: its name and link type.
const SYNTHETIC: (&str, u16) = ("rdprobe", pcapng::LINKTYPE_ETHERNET);

/// The blocks before the first packet, whichever the framing: the Section Header Block with
/// `section`'s comments, the one Interface Description Block (`interface`: name and link type),
/// and a Decryption Secrets Block with the key log's lines when there are any.
fn write_head<'a, W: Write>(
    out: &mut W,
    block: &mut Vec<u8>,
    section: &[String],
    interface: (&str, u16),
    keylog: impl IntoIterator<Item = &'a String>,
) -> Result<(), WriteError> {
    pcapng::shb(
        block,
        section,
        concat!("rdprobe ", env!("CARGO_PKG_VERSION")),
    )?;
    out.write_all(block)?;
    pcapng::idb_linktype(block, interface.0, interface.1)?;
    out.write_all(block)?;
    let mut secrets = Vec::new();
    for line in keylog {
        secrets.extend_from_slice(line.trim_end_matches(['\r', '\n']).as_bytes());
        secrets.push(b'\n');
    }
    if !secrets.is_empty() {
        pcapng::dsb_tls_keylog(block, &secrets)?;
        out.write_all(block)?;
    }
    Ok(())
}

/// Writes several TCP conversations (e.g. the two channels of the legacy RD Gateway transport) into
/// one pcapng: one section, one key log block with every conversation's secrets, and the frames of
/// all conversations merged in time order. `traces[i].1` labels `traces[i].0`'s events as in
/// [`write_pcapng`]. One conversation is written exactly as [`write_pcapng`] writes it.
pub fn write_pcapng_many<W: Write>(
    traces: &[(&Trace, &[String])],
    mut out: W,
) -> Result<(), WriteError> {
    match traces {
        [] => return Ok(()),
        [(t, l)] => return write_pcapng(t, l, out),
        _ => {}
    }
    let plans: Vec<Plan> = traces.iter().map(|(t, l)| plan_comments(t, l)).collect();
    let mut block = Vec::new();
    let conversations: Vec<String> = traces
        .iter()
        .map(|(t, _)| format!("{} - {}", t.client, t.server))
        .collect();
    let mut section = vec![format!(
        "written by rdprobe {}: synthetic Ethernet/IP/TCP framing around the bytes of {} TCP \
         conversations: {}",
        env!("CARGO_PKG_VERSION"),
        traces.len(),
        conversations.join(", ")
    )];
    for p in &plans {
        section.extend(p.section.iter().cloned());
    }
    let keylog: Vec<&String> = traces.iter().flat_map(|(t, _)| &t.keylog).collect();
    write_head(&mut out, &mut block, &section, SYNTHETIC, keylog)?;

    // Each conversation's frames are built into its own buffer, then copied out; the next event is
    // always the earliest one left across the conversations.
    let mut ems: Vec<Emitter<Vec<u8>>> = traces
        .iter()
        .map(|(t, _)| Emitter::new(t, Vec::new(), Vec::new()))
        .collect();
    let mut iters: Vec<_> = traces
        .iter()
        .zip(plans)
        .map(|((t, _), p)| t.events.iter().zip(p.events).peekable())
        .collect();
    loop {
        let next = iters
            .iter_mut()
            .enumerate()
            .filter_map(|(i, it)| it.peek().map(|(ev, _)| (ev.t_us, i)))
            .min();
        let Some((_, i)) = next else { break };
        // INVARIANT: `i` was just peeked, so the iterator has an item.
        let Some((ev, notes)) = iters[i].next() else {
            break;
        };
        ems[i].event(ev.t_us, &ev.kind, notes)?;
        out.write_all(&ems[i].out)?;
        ems[i].out.clear();
    }
    out.flush()?;
    Ok(())
}

/// Writes `trace.keylog` as an SSLKEYLOGFILE (NSS key log format: one secret per line).
pub fn write_keylog<W: Write>(trace: &Trace, mut out: W) -> std::io::Result<()> {
    for line in &trace.keylog {
        out.write_all(line.trim_end_matches(['\r', '\n']).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Creates (or truncates) `path` for a file that holds secrets (a key log, a capture with embedded
/// TLS secrets, a fuzz finding): mode 0600 whatever the umask, and an existing file is narrowed to
/// 0600 before anything is written to it.
pub fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        o.mode(0o600);
        let f = o.open(path)?;
        // INVARIANT: mode() applies only to a new file (and the umask may narrow it further, never
        // widen it); an existing file keeps its old bits unless they are set here.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    o.open(path)
}

/// Comments for the frames of one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct EventNotes {
    /// On the event's first frame.
    first: Vec<String>,
    /// On the event's last frame (comments that no later frame could carry).
    last: Vec<String>,
}

#[derive(Debug, Default)]
struct Plan {
    /// Indexed like `trace.events`.
    events: Vec<EventNotes>,
    /// Comments with no frame to carry them (a trace that writes no frame at all).
    section: Vec<String>,
}

/// True when the event writes at least one frame.
fn writes_frames(kind: &EventKind) -> bool {
    match kind {
        EventKind::Connected
        | EventKind::ConnectFailed(_)
        | EventKind::Fin { .. }
        | EventKind::Rst { .. } => true,
        EventKind::Data {
            layer: Layer::Wire,
            bytes,
            ..
        } => !bytes.is_empty(),
        _ => false,
    }
}

fn side_name(dir: Dir) -> &'static str {
    match dir {
        Dir::C2S => "client",
        Dir::S2C => "server",
    }
}

/// The comment an event carries by itself (what the capture cannot show otherwise).
fn derived_comment(kind: &EventKind) -> Option<String> {
    Some(match kind {
        EventKind::ConnectFailed(ConnectFailure::Refused) => {
            "tcp: connection refused (the server answered the SYN with RST/ACK)".to_owned()
        }
        EventKind::ConnectFailed(ConnectFailure::TimedOut { after_ms }) => {
            format!("tcp: connect timed out after {after_ms} ms without a SYN/ACK (SYN retransmissions not shown)")
        }
        EventKind::ConnectFailed(ConnectFailure::Unreachable { detail }) => {
            format!("tcp: destination unreachable: {detail}")
        }
        EventKind::Timeout {
            waiting_for,
            after_ms,
        } => format!(
            "rdprobe gave up waiting for the {} after {after_ms} ms of silence",
            side_name(*waiting_for)
        ),
        EventKind::TlsSession(info) => {
            let mut s = String::from("tls session:");
            for part in [&info.version, &info.cipher_suite] {
                if !part.is_empty() {
                    s.push(' ');
                    s.push_str(part);
                }
            }
            if !info.engine.is_empty() {
                s.push_str(&format!(" (via {})", info.engine));
            }
            s
        }
        EventKind::TlsError { message } => format!("tls error in rdprobe's tls stack: {message}"),
        EventKind::StoppedAfter(stage) => {
            format!("{}{stage}", crate::trace::STOPPED_AFTER_COMMENT)
        }
        EventKind::Note(text) => format!("note: {text}"),
        EventKind::ClientRejected { what } => {
            format!("{}{what}", crate::trace::CLIENT_REJECTED_COMMENT)
        }
        EventKind::Elided {
            dir,
            layer: Layer::Wire,
            len,
        } => format!(
            "rdprobe did not retain {len} bytes from the {} here: sequence numbers skip them",
            side_name(*dir)
        ),
        EventKind::Gap { dir, len } => format!(
            "capture gap: {len} bytes from the {} are missing",
            side_name(*dir)
        ),
        EventKind::Connected
        | EventKind::Data { .. }
        | EventKind::Elided { .. }
        | EventKind::Fin { .. }
        | EventKind::Rst { .. }
        | EventKind::CaptureEnd => return None,
    })
}

fn combine(label: Option<&str>, derived: Option<String>) -> Option<String> {
    match (label, derived) {
        (Some(l), Some(d)) => Some(format!("{l} ({d})")),
        (Some(l), None) => Some(l.to_owned()),
        (None, d) => d,
    }
}

/// The element of sorted `idx` closest to `i` (ties go to the earlier one).
fn nearest(idx: &[usize], i: usize) -> Option<usize> {
    let pos = idx.partition_point(|&x| x < i);
    let before = pos.checked_sub(1).and_then(|p| idx.get(p)).copied();
    let after = idx.get(pos).copied();
    match (before, after) {
        (Some(b), Some(a)) => Some(if i - b <= a - i { b } else { a }),
        (b, a) => b.or(a),
    }
}

fn di(dir: Dir) -> usize {
    match dir {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

/// Decides which frame carries which comment, before anything is written.
///
/// INVARIANT: every non-empty label and every derived comment ends up in exactly one place.
fn plan_comments(trace: &Trace, labels: &[String]) -> Plan {
    let events = &trace.events;
    let mut wire_idx: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (i, ev) in events.iter().enumerate() {
        if let EventKind::Data {
            dir,
            layer: Layer::Wire,
            bytes,
        } = &ev.kind
        {
            if !bytes.is_empty() {
                wire_idx[di(*dir)].push(i);
            }
        }
    }

    // (source event index, text) so that each frame lists its comments in event order.
    let mut first: Vec<Vec<(usize, String)>> = vec![Vec::new(); events.len()];
    let mut pending: Vec<(usize, String)> = Vec::new();
    let mut last_frame_event = None;
    for (i, ev) in events.iter().enumerate() {
        let label = labels.get(i).map(|l| l.trim()).filter(|l| !l.is_empty());
        if writes_frames(&ev.kind) {
            first[i].append(&mut pending);
            if let Some(c) = combine(label, derived_comment(&ev.kind)) {
                first[i].push((i, c));
            }
            last_frame_event = Some(i);
            continue;
        }
        if let (
            EventKind::Data {
                dir,
                layer: Layer::Inner,
                ..
            },
            Some(l),
        ) = (&ev.kind, label)
        {
            if let Some(j) = nearest(&wire_idx[di(*dir)], i) {
                first[j].push((i, l.to_owned()));
                continue;
            }
        }
        if let Some(c) = combine(label, derived_comment(&ev.kind)) {
            pending.push((i, c));
        }
    }

    let mut plan = Plan {
        events: first
            .into_iter()
            .map(|mut v| {
                v.sort_by_key(|(i, _)| *i);
                EventNotes {
                    first: v.into_iter().map(|(_, c)| c).collect(),
                    last: Vec::new(),
                }
            })
            .collect(),
        section: Vec::new(),
    };
    let leftovers = pending.into_iter().map(|(_, c)| c);
    match last_frame_event.and_then(|j| plan.events.get_mut(j)) {
        Some(n) => n.last.extend(leftovers),
        None => plan.section.extend(leftovers),
    }
    plan
}

/// TCP state of one sender.
#[derive(Clone, Copy, Debug)]
struct Half {
    /// Sequence number of the next byte (or SYN/FIN) this side sends.
    next_seq: u32,
    /// Highest acknowledgement the other side has sent for this side's stream.
    acked: u32,
    /// Next IPv4 identification.
    ip_id: u16,
    /// This side sent a RST: it acknowledges nothing any more.
    reset: bool,
}

struct Emitter<W: Write> {
    out: W,
    ips: IpPair,
    /// Client port, server port.
    ports: [u16; 2],
    half: [Half; 2],
    frame: Vec<u8>,
    block: Vec<u8>,
    last_ts: u64,
    /// When the SYN left, if the observer knew (else at the Connected event).
    connect_start_us: Option<u64>,
}

/// FNV-1a, for deterministic initial sequence numbers (same trace, same bytes).
fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl<W: Write> Emitter<W> {
    fn new(trace: &Trace, out: W, block: Vec<u8>) -> Self {
        let seed = format!("{}|{}|{}", trace.client, trace.server, trace.start_us());
        let h = fnv1a(seed.as_bytes(), 0xcbf2_9ce4_8422_2325);
        let half = |isn: u32| Half {
            next_seq: isn,
            acked: isn,
            ip_id: (isn >> 16) as u16,
            reset: false,
        };
        Emitter {
            out,
            ips: IpPair::from_addrs(trace.client, trace.server),
            ports: [trace.client.port(), trace.server.port()],
            half: [half(h as u32), half((h >> 32) as u32)],
            frame: Vec::with_capacity(MSS + 128),
            block,
            last_ts: 0,
            connect_start_us: trace.connect_start_us,
        }
    }

    /// Writes one frame from `from` (0 client, 1 server) with `seq`; sets the acknowledgement to
    /// everything the other side has sent when `flags` has ACK.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        from: usize,
        t_us: u64,
        flags: u8,
        seq: u32,
        mss: bool,
        payload: &[u8],
        comments: &[String],
    ) -> Result<(), WriteError> {
        let peer = 1 - from;
        let ack = if flags & TCP_ACK != 0 {
            let a = self.half[peer].next_seq;
            self.half[peer].acked = a;
            a
        } else {
            0
        };
        let ip_id = self.half[from].ip_id;
        self.half[from].ip_id = ip_id.wrapping_add(1);
        let seg = Segment {
            from_client: from == 0,
            src_port: self.ports[from],
            dst_port: self.ports[peer],
            seq,
            ack,
            flags,
            window: if flags & TCP_RST != 0 { 0 } else { WINDOW },
            mss: mss.then_some(MSS as u16),
            ip_id,
            payload,
        };
        packet::build_frame(&mut self.frame, &self.ips, &seg);
        // INVARIANT: frame timestamps never go backwards, whatever the trace says.
        let ts = t_us.max(self.last_ts);
        self.last_ts = ts;
        pcapng::epb(&mut self.block, ts, &self.frame, comments)?;
        self.out.write_all(&self.block)?;
        Ok(())
    }

    /// Sends a control segment (SYN/FIN/RST, no payload) from `from` at its next sequence number.
    fn control(
        &mut self,
        from: usize,
        t_us: u64,
        flags: u8,
        comments: &[String],
    ) -> Result<(), WriteError> {
        let seq = self.half[from].next_seq;
        self.send(from, t_us, flags, seq, flags & TCP_SYN != 0, &[], comments)?;
        if flags & (TCP_SYN | TCP_FIN) != 0 {
            self.half[from].next_seq = seq.wrapping_add(1);
        }
        if flags & TCP_RST != 0 {
            self.half[from].reset = true;
        }
        Ok(())
    }

    fn event(&mut self, t_us: u64, kind: &EventKind, notes: EventNotes) -> Result<(), WriteError> {
        let EventNotes { first, last } = notes;
        let both = || -> Vec<String> { first.iter().chain(last.iter()).cloned().collect() };
        match kind {
            EventKind::Connected => {
                let syn_t = self.connect_start_us.map_or(t_us, |s| s.min(t_us));
                self.control(0, syn_t, TCP_SYN, &first)?;
                self.control(1, t_us, TCP_SYN | TCP_ACK, &[])?;
                self.control(0, t_us, TCP_ACK, &last)?;
            }
            EventKind::ConnectFailed(ConnectFailure::Refused) => {
                self.control(0, t_us, TCP_SYN, &first)?;
                // A closed port answers with sequence number 0 and acknowledges the SYN.
                self.send(1, t_us, TCP_RST | TCP_ACK, 0, false, &[], &last)?;
                self.half[1].reset = true;
            }
            EventKind::ConnectFailed(ConnectFailure::TimedOut { after_ms }) => {
                let t = t_us.saturating_sub(after_ms.saturating_mul(1000));
                self.control(0, t, TCP_SYN, &both())?;
            }
            EventKind::ConnectFailed(ConnectFailure::Unreachable { .. }) => {
                self.control(0, t_us, TCP_SYN, &both())?;
            }
            EventKind::Data {
                dir,
                layer: Layer::Wire,
                bytes,
            } => self.data(di(*dir), t_us, bytes, first, last)?,
            EventKind::Elided {
                dir,
                layer: Layer::Wire,
                len,
            }
            | EventKind::Gap { dir, len } => {
                let h = &mut self.half[di(*dir)];
                // Sequence space is modulo 2^32: the truncation is the arithmetic TCP does.
                h.next_seq = h.next_seq.wrapping_add(*len as u32);
            }
            EventKind::Fin { dir } => self.control(di(*dir), t_us, TCP_FIN | TCP_ACK, &both())?,
            EventKind::Rst { dir } => self.control(di(*dir), t_us, TCP_RST | TCP_ACK, &both())?,
            EventKind::Data {
                layer: Layer::Inner,
                ..
            }
            | EventKind::Elided {
                layer: Layer::Inner,
                ..
            }
            | EventKind::Timeout { .. }
            | EventKind::TlsSession(_)
            | EventKind::TlsError { .. }
            | EventKind::StoppedAfter(_)
            | EventKind::Note(_)
            | EventKind::ClientRejected { .. }
            | EventKind::CaptureEnd => {}
        }
        Ok(())
    }

    fn data(
        &mut self,
        from: usize,
        t_us: u64,
        bytes: &[u8],
        first: Vec<String>,
        last: Vec<String>,
    ) -> Result<(), WriteError> {
        let peer = 1 - from;
        let n = bytes.len().div_ceil(MSS);
        let mut first = Some(first);
        for (k, chunk) in bytes.chunks(MSS).enumerate() {
            let in_flight = self.half[from].next_seq.wrapping_sub(self.half[from].acked) as usize;
            if !self.half[peer].reset && in_flight + chunk.len() > ACK_EVERY {
                let seq = self.half[peer].next_seq;
                self.send(peer, t_us, TCP_ACK, seq, false, &[], &[])?;
            }
            let is_last = k + 1 == n;
            let mut comments = first.take().unwrap_or_default();
            if is_last {
                comments.extend(last.iter().cloned());
            }
            let flags = if is_last { TCP_PSH | TCP_ACK } else { TCP_ACK };
            let seq = self.half[from].next_seq;
            self.send(from, t_us, flags, seq, false, chunk, &comments)?;
            // INVARIANT: chunk.len() <= MSS, so the cast is exact.
            self.half[from].next_seq = seq.wrapping_add(chunk.len() as u32);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Stage;
    use crate::trace::{Event, TlsSessionInfo};
    use bytes::Bytes;

    fn trace(kinds: Vec<EventKind>) -> Trace {
        let mut t = Trace::new(
            "127.0.0.1:50000".parse().unwrap(),
            "127.0.0.1:3389".parse().unwrap(),
        );
        for (i, k) in kinds.into_iter().enumerate() {
            t.events.push(Event {
                t_us: 1_700_000_000_000_000 + i as u64 * 1000,
                frame: None,
                kind: k,
            });
        }
        t
    }

    fn wire(dir: Dir, b: &'static [u8]) -> EventKind {
        EventKind::Data {
            dir,
            layer: Layer::Wire,
            bytes: Bytes::from_static(b),
        }
    }

    fn inner(dir: Dir, b: &'static [u8]) -> EventKind {
        EventKind::Data {
            dir,
            layer: Layer::Inner,
            bytes: Bytes::from_static(b),
        }
    }

    /// An X.224 Connection Request and its Confirm (PROTOCOL_SSL).
    const CR: &[u8] =
        b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00";
    const CC: &[u8] =
        b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x00\x08\x00\x01\x00\x00\x00";

    /// The report `analyze` gives of the pcapng written of `t` with `labels`.
    fn written_and_read_back(t: &Trace, labels: &[String]) -> crate::report::ConnectionReport {
        let mut out = Vec::new();
        write_pcapng(t, labels, &mut out).unwrap();
        let mut convs = crate::capture::reader::read_conversations(
            &out[..],
            crate::capture::reader::ReaderOptions::default(),
        )
        .unwrap();
        crate::decode::decode(&convs.next().unwrap().unwrap()).report
    }

    fn l(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// What the probe's own stack rejected is the server's protocol error, live and in `analyze`
    /// of the capture the probe wrote (the comment carries it back).
    #[test]
    fn a_client_rejection_survives_the_capture() {
        let t = trace(vec![
            EventKind::Connected,
            wire(Dir::C2S, CR),
            wire(Dir::S2C, CC),
            EventKind::ClientRejected {
                what: "x224: [decode error] <odd> (fuzzed)".into(),
            },
            EventKind::Fin { dir: Dir::C2S },
        ]);
        let live = crate::decode::decode(&t);
        let crate::stage::Verdict::Failed { kind, by } = &live.report.verdict else {
            panic!("{:?}", live.report.verdict)
        };
        assert_eq!(*by, crate::stage::Side::Server);
        assert!(
            matches!(kind, crate::stage::FailureKind::ProtocolError { what, .. }
                if what == "the client rejected the server's data: x224: [decode error] <odd> (fuzzed)"),
            "{kind:?}"
        );
        let back = written_and_read_back(&t, &live.labels);
        assert_eq!(back.verdict, live.report.verdict);
        assert_eq!(back.last_stage, live.report.last_stage);
    }

    /// A probe that stopped on purpose reads as stopped from its capture too, even when the wire
    /// shows the server's FIN before the probe's own (as a real capture can): the comment carries
    /// the stop back before that FIN.
    #[test]
    fn a_stop_on_purpose_survives_the_capture_before_the_servers_fin() {
        let t = trace(vec![
            EventKind::Connected,
            wire(Dir::C2S, CR),
            wire(Dir::S2C, CC),
            EventKind::StoppedAfter(Stage::X224),
            EventKind::Fin { dir: Dir::S2C },
            EventKind::Fin { dir: Dir::C2S },
        ]);
        let live = crate::decode::decode(&t);
        assert_eq!(
            live.report.verdict,
            crate::stage::Verdict::Failed {
                kind: crate::stage::FailureKind::Stopped,
                by: crate::stage::Side::Client,
            },
            "{}",
            live.report.summary
        );
        let back = written_and_read_back(&t, &live.labels);
        assert_eq!(back.verdict, live.report.verdict, "{}", back.summary);
        assert_eq!(back.last_stage, live.report.last_stage);
    }

    #[test]
    fn notes_go_to_next_frame_and_trailing_ones_to_the_last() {
        let t = trace(vec![
            EventKind::Note("resolving".into()),
            EventKind::Connected,
            wire(Dir::C2S, b"cr"),
            EventKind::Timeout {
                waiting_for: Dir::S2C,
                after_ms: 5000,
            },
            EventKind::StoppedAfter(Stage::X224),
            EventKind::CaptureEnd,
        ]);
        let p = plan_comments(&t, &l(&["", "tcp: connected", "x224: connection request"]));
        assert_eq!(p.events[1].first, l(&["note: resolving", "tcp: connected"]));
        assert_eq!(p.events[2].first, l(&["x224: connection request"]));
        assert_eq!(
            p.events[2].last,
            l(&[
                "rdprobe gave up waiting for the server after 5000 ms of silence",
                "rdprobe stopped on purpose after stage x224"
            ])
        );
        assert!(p.section.is_empty());
    }

    #[test]
    fn inner_labels_go_to_the_nearest_wire_event_of_the_same_direction() {
        let t = trace(vec![
            inner(Dir::C2S, b"a"), // 0 -> 1
            wire(Dir::C2S, b"A"),  // 1
            wire(Dir::S2C, b"B"),  // 2
            inner(Dir::S2C, b"b"), // 3 -> 2
            inner(Dir::C2S, b"c"), // 4 -> 5
            wire(Dir::C2S, b"C"),  // 5
        ]);
        let p = plan_comments(
            &t,
            &l(&[
                "credssp: a",
                "",
                "",
                "credssp: b",
                "credssp: c",
                "tls: app data",
            ]),
        );
        assert_eq!(p.events[1].first, l(&["credssp: a"]));
        assert_eq!(p.events[2].first, l(&["credssp: b"]));
        assert_eq!(p.events[5].first, l(&["credssp: c", "tls: app data"]));
    }

    #[test]
    fn comments_without_any_frame_stay_in_the_section_header() {
        let t = trace(vec![
            EventKind::Note("dns failed".into()),
            EventKind::TlsSession(TlsSessionInfo::default()),
            inner(Dir::C2S, b"x"),
        ]);
        let p = plan_comments(&t, &l(&["", "", "orphan"]));
        assert_eq!(
            p.section,
            l(&["note: dns failed", "tls session:", "orphan"])
        );
        let mut out = Vec::new();
        write_pcapng(&t, &[], &mut out).unwrap();
        // SHB + IDB only, no EPB
        assert_eq!(
            u32::from_le_bytes(out[0..4].try_into().unwrap()),
            pcapng::SHB_TYPE
        );
    }

    #[test]
    fn huge_event_is_split_and_acked() {
        static BIG: [u8; 100_000] = [0x5a; 100_000];
        let t = trace(vec![EventKind::Connected, wire(Dir::S2C, &BIG)]);
        let mut out = Vec::new();
        write_pcapng(&t, &[], &mut out).unwrap();
        let mut off = 0;
        let mut epbs = 0;
        while off + 8 <= out.len() {
            let ty = u32::from_le_bytes(out[off..off + 4].try_into().unwrap());
            let len = u32::from_le_bytes(out[off + 4..off + 8].try_into().unwrap()) as usize;
            if ty == pcapng::EPB_TYPE {
                epbs += 1;
            }
            off += len;
        }
        assert_eq!(off, out.len());
        let data_frames = 100_000usize.div_ceil(MSS);
        let acks = (100_000 - 1) / ACK_EVERY; // one pure ACK per ACK_EVERY bytes in flight
        assert_eq!(epbs, 3 + data_frames + acks);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn never_panics_on_arbitrary_traces(ops in proptest::collection::vec((0u8..12, 0usize..4000, proptest::bool::ANY, 0u64..u64::MAX), 0..40)) {
            let mut kinds = Vec::new();
            for (op, n, c2s, x) in ops {
                let dir = if c2s { Dir::C2S } else { Dir::S2C };
                kinds.push(match op {
                    0 => EventKind::Connected,
                    1 => EventKind::ConnectFailed(ConnectFailure::Refused),
                    2 => EventKind::ConnectFailed(ConnectFailure::TimedOut { after_ms: x }),
                    3 => EventKind::Data { dir, layer: Layer::Wire, bytes: Bytes::from(vec![7u8; n]) },
                    4 => EventKind::Data { dir, layer: Layer::Inner, bytes: Bytes::from(vec![7u8; n]) },
                    5 => EventKind::Elided { dir, layer: Layer::Wire, len: x },
                    6 => EventKind::Gap { dir, len: x },
                    7 => EventKind::Fin { dir },
                    8 => EventKind::Rst { dir },
                    9 => EventKind::Timeout { waiting_for: dir, after_ms: x },
                    10 => EventKind::Note("n".repeat(n * 20)),
                    _ => EventKind::CaptureEnd,
                });
            }
            let t = trace(kinds);
            let labels: Vec<String> = (0..t.events.len()).map(|i| if i % 2 == 0 { format!("l{i}") } else { String::new() }).collect();
            let mut out = Vec::new();
            write_pcapng(&t, &labels, &mut out).unwrap();
            proptest::prop_assert_eq!(out.len() % 4, 0);
        }
    }
}
