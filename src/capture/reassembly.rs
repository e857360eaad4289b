//! TCP stream reassembly for one direction of a conversation (RFC 9293 sequence space).
//!
//! Segments arrive in capture order; the reassembler delivers the contiguous byte stream.
//! Retransmitted and overlapping bytes are dropped (the first copy seen wins), out-of-order segments
//! wait in a bounded buffer, and bytes the capture never saw become explicit gaps — never guessed.
//! A hole is declared lost when the peer acknowledges data beyond it, when the out-of-order buffer
//! overflows, or when the stream is flushed (FIN/RST delivered, capture end). Bytes cut off by the
//! snaplen are a gap of exactly the missing length.
//!
//! INVARIANT: `next` only grows; every byte offset below `next` was delivered exactly once, either as
//! data or inside a gap. Pieces in `pending` never overlap each other and all start above `next`.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

/// Most bytes held out of order per direction before the first hole is declared lost.
pub const MAX_OOO_BYTES: usize = 4 * 1024 * 1024;
/// Most out-of-order pieces held per direction.
pub const MAX_OOO_PIECES: usize = 4096;
/// An acknowledgement further than this beyond the delivered stream is not trusted (bytes).
const MAX_ACK_JUMP: u64 = 1 << 30;
/// First and largest chunk of the copy arena (bytes): payloads are copied into shared chunks instead
/// of one allocation per segment; chunks double from the first size up to the largest, so a quiet
/// conversation holds little.
const ARENA_FIRST: usize = 4 * 1024;
const ARENA_MAX: usize = 64 * 1024;

/// A segment's captured payload, with the buffer it is a slice of when that buffer may be shared
/// (a mapped capture file): then delivered data is a slice of it, not a copy.
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    pub bytes: &'a [u8],
    pub backing: Option<&'a Bytes>,
}

impl<'a> Payload<'a> {
    fn skip(self, n: usize) -> Payload<'a> {
        Payload {
            bytes: &self.bytes[n..],
            backing: self.backing,
        }
    }

    /// `bytes` as a slice of the backing buffer, when it lies inside it.
    fn shared(&self) -> Option<Bytes> {
        let backing = self.backing?;
        let base = backing.as_ptr() as usize;
        let at = self.bytes.as_ptr() as usize;
        let inside = at >= base && at + self.bytes.len() <= base + backing.len();
        inside.then(|| backing.slice_ref(self.bytes))
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Payload {
            bytes,
            backing: None,
        }
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Payload<'a> {
    fn from(bytes: &'a [u8; N]) -> Self {
        Payload::from(&bytes[..])
    }
}

/// Replaces `b` by a copy of its bytes when it is a slice of the address range `at`.
pub fn own_if_in(b: &mut Bytes, at: &std::ops::Range<usize>) -> bool {
    let p = b.as_ptr() as usize;
    let inside = !b.is_empty() && at.contains(&p);
    if inside {
        *b = Bytes::copy_from_slice(b);
    }
    inside
}

/// What the reassembler delivers, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Data { bytes: Bytes, frame: u64, t_us: u64 },
    Gap { len: u64, frame: u64, t_us: u64 },
    Fin { frame: u64, t_us: u64 },
}

#[derive(Debug)]
enum PieceKind {
    Data(Bytes),
    /// Bytes known to be missing (snaplen truncation).
    Missing(u64),
    /// The FIN's sequence number (length 1 in sequence space).
    Fin,
}

#[derive(Debug)]
struct Piece {
    kind: PieceKind,
    frame: u64,
    t_us: u64,
}

impl Piece {
    fn len(&self) -> u64 {
        match &self.kind {
            PieceKind::Data(d) => d.len() as u64,
            PieceKind::Missing(n) => *n,
            PieceKind::Fin => 1,
        }
    }
}

/// One direction of a TCP conversation.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// Sequence number of stream offset 0.
    base: Option<u32>,
    /// Next stream offset to deliver.
    next: u64,
    pending: BTreeMap<u64, Piece>,
    pending_bytes: usize,
    fin_delivered: bool,
    /// Where payload copies go (see [`ARENA_MAX`]).
    arena: BytesMut,
    arena_chunk: usize,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies the out-of-order pieces that are slices of the address range `at` (see
    /// [`crate::capture::reader::file::RecordReader::release_map`]).
    pub fn own_bytes_in(&mut self, at: &std::ops::Range<usize>) {
        for p in self.pending.values_mut() {
            if let PieceKind::Data(b) = &mut p.kind {
                own_if_in(b, at);
            }
        }
    }

    /// The stream starts after this initial sequence number (from a SYN / SYN-ACK).
    pub fn set_isn(&mut self, isn: u32) {
        if self.base.is_none() {
            self.base = Some(isn.wrapping_add(1));
        }
    }

    /// Whether the stream position is known (a SYN or a first segment was seen).
    pub fn started(&self) -> bool {
        self.base.is_some()
    }

    /// Bytes delivered so far (data and gaps).
    pub fn delivered(&self) -> u64 {
        self.next
    }

    pub fn fin_delivered(&self) -> bool {
        self.fin_delivered
    }

    /// `b` as owned bytes: a slice of its backing buffer when it has one, else a copy in the arena.
    fn copy(&mut self, p: Payload<'_>) -> Bytes {
        if let Some(shared) = p.shared() {
            return shared;
        }
        let b = p.bytes;
        if self.arena.capacity() < b.len() {
            self.arena_chunk = (self.arena_chunk * 2).clamp(ARENA_FIRST, ARENA_MAX);
            self.arena = BytesMut::with_capacity(self.arena_chunk.max(b.len()));
        }
        self.arena.extend_from_slice(b);
        self.arena.split().freeze()
    }

    /// Stream offset of a sequence number, unwrapped to the 2^32 window closest to `next`.
    fn offset_of(&self, seq: u32) -> Option<i64> {
        let base = self.base?;
        let diff = u64::from(seq.wrapping_sub(base));
        let next = self.next as i64;
        let hi = (self.next & !0xFFFF_FFFF) as i64;
        let cands = [
            hi + diff as i64,
            hi + diff as i64 - (1i64 << 32),
            hi + diff as i64 + (1i64 << 32),
        ];
        cands.into_iter().min_by_key(|c| (c - next).abs())
    }

    /// Feeds one segment: `payload` captured bytes at `seq`, `missing` more bytes the snaplen cut off,
    /// `fin` when the FIN flag is set.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        seq: u32,
        payload: Payload<'_>,
        missing: u32,
        fin: bool,
        frame: u64,
        t_us: u64,
        out: &mut Vec<Output>,
    ) {
        if self.base.is_none() {
            if payload.bytes.is_empty() && missing == 0 && !fin {
                return;
            }
            self.base = Some(seq);
        }
        let Some(start) = self.offset_of(seq) else {
            return;
        };
        let data_end = start + payload.bytes.len() as i64;
        let claimed_end = data_end + i64::from(missing);
        let next = self.next as i64;
        // Fast path: in order with nothing pending.
        if self.pending.is_empty() && start <= next {
            if data_end > next {
                let skip = (next - start) as usize;
                let bytes = self.copy(payload.skip(skip));
                self.next += bytes.len() as u64;
                out.push(Output::Data { bytes, frame, t_us });
            }
            if missing > 0 && claimed_end > self.next as i64 {
                let len = (claimed_end - self.next as i64) as u64;
                self.next += len;
                out.push(Output::Gap { len, frame, t_us });
            }
            if fin && claimed_end == self.next as i64 && !self.fin_delivered {
                self.fin_delivered = true;
                self.next += 1;
                out.push(Output::Fin { frame, t_us });
            }
            return;
        }
        if !payload.bytes.is_empty() {
            let copy = self.copy(payload);
            self.insert(start, PieceKind::Data(copy), frame, t_us);
        }
        if missing > 0 {
            self.insert(
                data_end,
                PieceKind::Missing(u64::from(missing)),
                frame,
                t_us,
            );
        }
        if fin && !self.fin_delivered {
            self.insert(claimed_end, PieceKind::Fin, frame, t_us);
        }
        self.drain(out);
        if self.pending_bytes > MAX_OOO_BYTES || self.pending.len() > MAX_OOO_PIECES {
            self.skip_first_hole(u64::MAX, frame, t_us, out);
        }
    }

    /// Inserts a piece, keeping only the parts not already delivered or pending (first copy wins).
    fn insert(&mut self, start: i64, kind: PieceKind, frame: u64, t_us: u64) {
        let total = match &kind {
            PieceKind::Data(d) => d.len() as i64,
            PieceKind::Missing(n) => *n as i64,
            PieceKind::Fin => 1,
        };
        let end = start + total;
        let next = self.next as i64;
        if end <= next {
            return;
        }
        // Uncovered sub-ranges of [max(start,next), end).
        let mut cursor = start.max(next) as u64;
        let end = end as u64;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        // Pieces that may overlap: the one starting before cursor and those starting in [cursor, end).
        if let Some((&s, p)) = self.pending.range(..cursor).next_back() {
            let pe = s + p.len();
            if pe > cursor {
                cursor = pe.min(end);
            }
        }
        for (&s, p) in self.pending.range(cursor..end) {
            if s > cursor {
                ranges.push((cursor, s));
            }
            cursor = cursor.max(s + p.len());
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            ranges.push((cursor, end));
        }
        for (rs, re) in ranges {
            let piece_kind = match &kind {
                PieceKind::Data(d) => {
                    let a = (rs as i64 - start) as usize;
                    let b = (re as i64 - start) as usize;
                    self.pending_bytes += b - a;
                    PieceKind::Data(d.slice(a..b))
                }
                PieceKind::Missing(_) => PieceKind::Missing(re - rs),
                PieceKind::Fin => PieceKind::Fin,
            };
            self.pending.insert(
                rs,
                Piece {
                    kind: piece_kind,
                    frame,
                    t_us,
                },
            );
        }
    }

    /// Delivers pending pieces that start at the stream position.
    fn drain(&mut self, out: &mut Vec<Output>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next {
                // INVARIANT: pending pieces never start below `next`.
                debug_assert!(*entry.key() > self.next);
                break;
            }
            let piece = entry.remove();
            self.deliver(piece, out);
        }
    }

    fn deliver(&mut self, piece: Piece, out: &mut Vec<Output>) {
        let Piece { kind, frame, t_us } = piece;
        match kind {
            PieceKind::Data(bytes) => {
                self.pending_bytes -= bytes.len();
                self.next += bytes.len() as u64;
                out.push(Output::Data { bytes, frame, t_us });
            }
            PieceKind::Missing(len) => {
                self.next += len;
                out.push(Output::Gap { len, frame, t_us });
            }
            PieceKind::Fin => {
                self.next += 1;
                if !self.fin_delivered {
                    self.fin_delivered = true;
                    out.push(Output::Fin { frame, t_us });
                }
            }
        }
    }

    /// Declares the first hole lost: a gap up to the first pending piece (or up to `limit`, if nothing
    /// is pending below it), then delivers what follows.
    fn skip_first_hole(&mut self, limit: u64, frame: u64, t_us: u64, out: &mut Vec<Output>) {
        let first = self
            .pending
            .first_key_value()
            .map(|(&s, p)| (s, p.frame, p.t_us));
        let (to, f, t) = match first {
            Some((s, pf, pt)) if s <= limit => (s, pf, pt),
            _ => (limit, frame, t_us),
        };
        if to == u64::MAX || to <= self.next {
            self.drain(out);
            return;
        }
        out.push(Output::Gap {
            len: to - self.next,
            frame: f,
            t_us: t.max(t_us),
        });
        self.next = to;
        self.drain(out);
    }

    /// The peer acknowledged everything before `ack`: holes below it are capture loss.
    pub fn peer_ack(&mut self, ack: u32, frame: u64, t_us: u64, out: &mut Vec<Output>) {
        if self.fin_delivered {
            return;
        }
        let Some(a) = self.offset_of(ack) else { return };
        if a <= self.next as i64 || (a as u64 - self.next) > MAX_ACK_JUMP {
            return;
        }
        let mut a = a as u64;
        // An ACK of a FIN we hold covers one sequence number past the data.
        if let Some((&s, p)) = self.pending.last_key_value() {
            if matches!(p.kind, PieceKind::Fin) && s + 1 == a {
                a = s;
            }
        }
        while self.next < a {
            let before = self.next;
            self.skip_first_hole(a, frame, t_us, out);
            if self.next == before {
                break;
            }
        }
    }

    /// Delivers everything pending, declaring every remaining hole a gap (end of the stream).
    pub fn flush(&mut self, frame: u64, t_us: u64, out: &mut Vec<Output>) {
        while let Some((&s, _)) = self.pending.first_key_value() {
            if s > self.next {
                self.skip_first_hole(u64::MAX - 1, frame, t_us, out);
            } else {
                self.drain(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(out: &[Output]) -> Vec<u8> {
        out.iter()
            .flat_map(|o| match o {
                Output::Data { bytes, .. } => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn reorder_overlap_and_gap() {
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        r.set_isn(999);
        r.segment(1000, b"abcd".into(), 0, false, 1, 1, &mut out);
        r.segment(1008, b"ijkl".into(), 0, false, 2, 2, &mut out); // out of order
        r.segment(1002, b"cdefgh".into(), 0, false, 3, 3, &mut out); // overlaps both sides
        r.segment(1000, b"abcd".into(), 0, false, 4, 4, &mut out); // retransmission
        r.segment(1016, b"qr".into(), 0, true, 5, 5, &mut out); // hole 1012..1016, FIN after
        assert_eq!(data(&out), b"abcdefghijkl");
        r.peer_ack(1019, 6, 6, &mut out);
        assert!(
            out.contains(&Output::Gap {
                len: 4,
                frame: 5,
                t_us: 6
            }),
            "{out:?}"
        );
        assert_eq!(out.last(), Some(&Output::Fin { frame: 5, t_us: 5 }));
        assert_eq!(data(&out), b"abcdefghijklqr");
    }

    #[test]
    fn truncated_segment_is_exact_gap() {
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        r.segment(u32::MAX - 1, b"ab".into(), 5, false, 1, 1, &mut out); // wraps the sequence space
        r.segment(5, b"xy".into(), 0, false, 2, 2, &mut out);
        assert_eq!(
            out,
            vec![
                Output::Data {
                    bytes: Bytes::from_static(b"ab"),
                    frame: 1,
                    t_us: 1
                },
                Output::Gap {
                    len: 5,
                    frame: 1,
                    t_us: 1
                },
                Output::Data {
                    bytes: Bytes::from_static(b"xy"),
                    frame: 2,
                    t_us: 2
                },
            ]
        );
    }
}
