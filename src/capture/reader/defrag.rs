//! IP fragment reassembly for TCP datagrams (RFC 791 section 3.2, RFC 8200 section 4.5).
//!
//! Written here rather than taken from etherparse's `IpDefragPool`: that pool is documented as not
//! safe against memory exhaustion and offers no way to bound the number of datagrams it holds, and a
//! capture is untrusted input. This one holds at most [`MAX_DATAGRAMS`] datagrams of at most
//! [`MAX_DATAGRAM_LEN`] bytes and [`MAX_HELD_BYTES`] in all, evicting the oldest; a datagram whose
//! fragments overlap with different bytes is dropped (RFC 5722's rule for IPv6, applied to both).
//!
//! INVARIANT: `held` is the sum of the bytes of every piece in `table`, and never exceeds
//! `MAX_HELD_BYTES` after `push` returns.

use std::collections::HashMap;
use std::net::IpAddr;

use super::packet::Fragment;

/// Largest reassembled IP payload (bytes): the 16-bit IP length field's limit.
pub const MAX_DATAGRAM_LEN: usize = 65_535;
/// Most datagrams held in reassembly at once.
pub const MAX_DATAGRAMS: usize = 1024;
/// Most fragment bytes held in all (bytes).
pub const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;
/// A datagram whose next fragment does not come within this much capture time is dropped (µs).
pub const FRAGMENT_TIMEOUT_US: u64 = 30_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
}

#[derive(Debug, Default)]
struct Datagram {
    /// (offset, bytes), in arrival order.
    pieces: Vec<(usize, Vec<u8>)>,
    /// Payload length, known once the last fragment (more = false) arrived.
    total: Option<usize>,
    last_t_us: u64,
}

/// What [`Defrag::push`] concluded about a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Held until the rest arrives.
    Held,
    /// The datagram is complete: its whole IP payload (TCP header first).
    Complete {
        src: IpAddr,
        dst: IpAddr,
        payload: Vec<u8>,
    },
    /// The fragment (and its datagram) was dropped: why.
    Dropped(&'static str),
}

/// Reassembles fragmented TCP datagrams of a whole capture.
#[derive(Debug, Default)]
pub struct Defrag {
    table: HashMap<Key, Datagram>,
    held: usize,
    /// Datagrams dropped (overlap, timeout, limits, truncated fragments).
    pub dropped: u64,
    last_expire_us: u64,
}

impl Defrag {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one fragment seen at capture time `t_us`.
    pub fn push(&mut self, f: &Fragment<'_>, t_us: u64) -> Outcome {
        let key = Key {
            src: f.src,
            dst: f.dst,
            id: f.id,
        };
        if f.truncated {
            self.drop_key(&key);
            return Outcome::Dropped("fragment cut by the snaplen");
        }
        let end = f.offset + f.data.len();
        if end > MAX_DATAGRAM_LEN || (f.more && !f.data.len().is_multiple_of(8)) {
            self.drop_key(&key);
            return Outcome::Dropped("fragment beyond the ip length limit or misaligned");
        }
        self.expire(t_us);
        if !self.table.contains_key(&key) {
            while self.table.len() >= MAX_DATAGRAMS
                || (self.held + f.data.len() > MAX_HELD_BYTES && !self.table.is_empty())
            {
                self.evict_oldest();
            }
        }
        let d = self.table.entry(key).or_default();
        d.last_t_us = t_us;
        if !f.more {
            if d.total.is_some_and(|t| t != end) {
                self.drop_key(&key);
                return Outcome::Dropped("two last fragments disagree on the length");
            }
            d.total = Some(end);
        }
        if d.total.is_some_and(|t| end > t) {
            self.drop_key(&key);
            return Outcome::Dropped("fragment beyond the datagram's last fragment");
        }
        let mut duplicate = false;
        for (o, bytes) in &d.pieces {
            let (a, b) = (f.offset.max(*o), end.min(o + bytes.len()));
            if a < b {
                if f.data[a - f.offset..b - f.offset] != bytes[a - o..b - o] {
                    self.drop_key(&key);
                    return Outcome::Dropped("overlapping fragments with different bytes");
                }
                duplicate |= a == f.offset && b == end;
            }
        }
        if !duplicate {
            d.pieces.push((f.offset, f.data.to_vec()));
            self.held += f.data.len();
        }
        let Some(total) = d.total else {
            return Outcome::Held;
        };
        if !covers(&d.pieces, total) {
            return Outcome::Held;
        }
        let Some(d) = self.table.remove(&key) else {
            return Outcome::Held;
        };
        let mut payload = vec![0u8; total];
        for (o, bytes) in &d.pieces {
            self.held -= bytes.len();
            payload[*o..o + bytes.len()].copy_from_slice(bytes);
        }
        Outcome::Complete {
            src: key.src,
            dst: key.dst,
            payload,
        }
    }

    /// Datagrams still waiting for fragments.
    pub fn pending(&self) -> usize {
        self.table.len()
    }

    fn drop_key(&mut self, key: &Key) {
        if let Some(d) = self.table.remove(key) {
            self.held -= d.pieces.iter().map(|p| p.1.len()).sum::<usize>();
            self.dropped += 1;
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self
            .table
            .iter()
            .min_by_key(|(_, d)| d.last_t_us)
            .map(|(k, _)| *k)
        {
            self.drop_key(&k);
        }
    }

    /// Drops datagrams idle for [`FRAGMENT_TIMEOUT_US`] (checked at most once a second of capture time).
    fn expire(&mut self, t_us: u64) {
        if t_us < self.last_expire_us.saturating_add(1_000_000) {
            return;
        }
        self.last_expire_us = t_us;
        let stale: Vec<Key> = self
            .table
            .iter()
            .filter(|(_, d)| d.last_t_us.saturating_add(FRAGMENT_TIMEOUT_US) < t_us)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.drop_key(&k);
        }
    }
}

/// Whether `pieces` cover `0..total` without a hole.
fn covers(pieces: &[(usize, Vec<u8>)], total: usize) -> bool {
    let mut spans: Vec<(usize, usize)> = pieces.iter().map(|(o, b)| (*o, o + b.len())).collect();
    spans.sort_unstable();
    let mut reached = 0usize;
    for (a, b) in spans {
        if a > reached {
            return false;
        }
        reached = reached.max(b);
    }
    reached >= total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(id: u32, offset: usize, more: bool, data: &[u8]) -> Fragment<'_> {
        Fragment {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            id,
            offset,
            more,
            data,
            truncated: false,
        }
    }

    #[test]
    fn out_of_order_and_duplicate_fragments_reassemble() {
        let data: Vec<u8> = (0..40u8).collect();
        let mut d = Defrag::new();
        assert_eq!(d.push(&frag(7, 32, false, &data[32..]), 1), Outcome::Held);
        assert_eq!(d.push(&frag(7, 0, true, &data[..16]), 2), Outcome::Held);
        assert_eq!(d.push(&frag(7, 0, true, &data[..16]), 3), Outcome::Held);
        let Outcome::Complete { payload, .. } = d.push(&frag(7, 16, true, &data[16..32]), 4) else {
            panic!("not complete");
        };
        assert_eq!(payload, data);
        assert_eq!((d.pending(), d.held, d.dropped), (0, 0, 0));
    }

    #[test]
    fn hostile_fragments_are_dropped_and_bounded() {
        let mut d = Defrag::new();
        let a = [1u8; 16];
        let b = [2u8; 16];
        d.push(&frag(1, 0, true, &a), 1);
        assert!(matches!(
            d.push(&frag(1, 8, true, &b), 2),
            Outcome::Dropped(_)
        ));
        assert!(matches!(
            d.push(&frag(2, 65_528, true, &a), 3),
            Outcome::Dropped(_)
        ));
        // Many datagrams that never complete: the table stays bounded.
        let big = vec![0u8; 1480];
        for id in 0..(MAX_DATAGRAMS as u32 * 3) {
            d.push(&frag(100 + id, 0, true, &big), 10);
        }
        assert!(d.pending() <= MAX_DATAGRAMS);
        assert!(d.held <= MAX_HELD_BYTES);
        // Stale datagrams expire.
        d.push(&frag(9, 0, true, &a), 10 + FRAGMENT_TIMEOUT_US + 1);
        assert_eq!(d.pending(), 1);
    }
}
