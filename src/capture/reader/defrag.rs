//! IP fragment reassembly for TCP datagrams (RFC 791 section 3.2, RFC 8200 section 4.5).
//!
//! Written here rather than taken from etherparse's `IpDefragPool`: that pool is documented as not
//! safe against memory exhaustion and offers no way to bound the number of datagrams it holds, and a
//! capture is untrusted input.
//!
//! Bounded by construction:
//! * one datagram holds at most [`MAX_DATAGRAM_LEN`] bytes (the 16-bit IP length field; IPv6
//!   jumbograms cannot be fragmented, RFC 2675 section 3): a fragment that reaches beyond is dropped
//!   with its datagram;
//! * a datagram is one buffer indexed by offset plus an interval map of the byte ranges received
//!   ([`Datagram::covered`], non-overlapping, adjacent ranges merged), so a fragment costs
//!   O(log n) in the number of ranges plus its own length, and bytes received twice are checked
//!   against the first copy and stored once;
//! * at most [`MAX_DATAGRAMS`] datagrams and [`MAX_HELD_BYTES`] bytes of buffers are held in all,
//!   the least recently active datagram evicted first (found in O(log n)).
//!
//! Overlap policy (unchanged): fragments may overlap when they carry the same bytes (a
//! retransmission or a router's re-fragmentation); a fragment that disagrees with bytes already
//! received drops its whole datagram (RFC 5722's rule for IPv6, applied to both versions), counted
//! in [`Defrag::conflicts`] and [`Defrag::dropped`] — never guessed, so the TCP bytes show as a gap.
//!
//! INVARIANT: `held` is the sum of the buffer capacities of every datagram in `table`, and never
//! exceeds `MAX_HELD_BYTES` after `push` returns; `lru` holds exactly the stamps of `table`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::packet::Fragment;

/// Largest reassembled IP payload (bytes): the 16-bit IP length field's limit.
pub const MAX_DATAGRAM_LEN: usize = 65_535;
/// Most datagrams held in reassembly at once.
pub const MAX_DATAGRAMS: usize = 1024;
/// Most buffer bytes held in all (bytes).
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
    /// The payload received so far, at its offsets (bytes outside `covered` are zero).
    buf: Vec<u8>,
    /// Byte ranges of `buf` received: start → end, sorted, never overlapping nor touching.
    covered: BTreeMap<usize, usize>,
    /// Payload length, known once the last fragment (more = false) arrived.
    total: Option<usize>,
    last_t_us: u64,
    /// Position in [`Defrag::lru`] (the arrival count of its latest fragment).
    stamp: u64,
}

impl Datagram {
    /// End of the highest byte received.
    fn reach(&self) -> usize {
        self.covered.last_key_value().map_or(0, |(_, &e)| e)
    }

    /// Whether `data` at `offset` agrees with every byte already received.
    fn agrees(&self, offset: usize, data: &[u8]) -> bool {
        let end = offset + data.len();
        // Ranges overlapping [offset, end): those starting before `end` whose end is past `offset`
        // (sorted and disjoint, so they are the last ones starting before `end`).
        for (&s, &e) in self.covered.range(..end).rev() {
            if e <= offset {
                break;
            }
            let (a, b) = (s.max(offset), e.min(end));
            if data[a - offset..b - offset] != self.buf[a..b] {
                return false;
            }
        }
        true
    }

    /// Records `[a, b)` as received, merging the ranges it overlaps or touches.
    fn cover(&mut self, mut a: usize, mut b: usize) {
        while let Some((&s, &e)) = self.covered.range(..=b).next_back() {
            if e < a {
                break;
            }
            self.covered.remove(&s);
            a = a.min(s);
            b = b.max(e);
        }
        self.covered.insert(a, b);
    }

    /// Whether every byte of the datagram was received.
    fn complete(&self) -> bool {
        self.total.is_some_and(|t| {
            t == 0 || (self.covered.len() == 1 && self.covered.first_key_value() == Some((&0, &t)))
        })
    }
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
    /// The datagrams by latest activity (stamp → key), least recent first: eviction is O(log n).
    lru: BTreeMap<u64, Key>,
    next_stamp: u64,
    held: usize,
    /// Most bytes held at once.
    pub peak_held: usize,
    /// Datagrams dropped (overlap, timeout, limits, truncated fragments).
    pub dropped: u64,
    /// Fragments that disagreed with bytes already received (their datagram was dropped).
    pub conflicts: u64,
    /// Fragments that repeated bytes already received (checked, stored once).
    pub overlapping: u64,
    last_expire_us: u64,
}

impl Defrag {
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffer bytes held now.
    pub fn held(&self) -> usize {
        self.held
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
        let end = f.offset.saturating_add(f.data.len());
        if end > MAX_DATAGRAM_LEN || (f.more && !f.data.len().is_multiple_of(8)) {
            self.drop_key(&key);
            return Outcome::Dropped("fragment beyond the ip length limit or misaligned");
        }
        self.expire(t_us);
        if !self.table.contains_key(&key) {
            while self.table.len() >= MAX_DATAGRAMS {
                self.evict_oldest(&key);
            }
        }
        self.next_stamp += 1;
        let d = self.table.entry(key).or_default();
        d.last_t_us = t_us;
        self.lru.remove(&d.stamp);
        d.stamp = self.next_stamp;
        self.lru.insert(d.stamp, key);
        if !f.more {
            if d.total.is_some_and(|t| t != end) {
                self.drop_key(&key);
                return Outcome::Dropped("two last fragments disagree on the length");
            }
            d.total = Some(end);
        }
        if d.total.is_some_and(|t| end > t || d.reach() > t) {
            self.drop_key(&key);
            return Outcome::Dropped("fragment beyond the datagram's last fragment");
        }
        if !d.agrees(f.offset, f.data) {
            self.conflicts += 1;
            self.drop_key(&key);
            return Outcome::Dropped("overlapping fragments with different bytes");
        }
        if d.covered
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > f.offset)
        {
            self.overlapping += 1;
        }
        // Room for the buffer to reach `end`: grown geometrically up to the datagram limit, the
        // growth paid for by evicting other datagrams first.
        let cap = d.buf.capacity();
        if cap < end && !f.data.is_empty() {
            let new_cap = end.max(cap.saturating_mul(2).min(MAX_DATAGRAM_LEN));
            let grow = new_cap - cap;
            while self.held + grow > MAX_HELD_BYTES && self.table.len() > 1 {
                self.evict_oldest(&key);
            }
            let Some(d) = self.table.get_mut(&key) else {
                return Outcome::Held;
            };
            d.buf.reserve_exact(new_cap - d.buf.len());
            self.held += d.buf.capacity() - cap;
            self.peak_held = self.peak_held.max(self.held);
        }
        let Some(d) = self.table.get_mut(&key) else {
            return Outcome::Held;
        };
        if !f.data.is_empty() {
            if d.buf.len() < end {
                d.buf.resize(end, 0);
            }
            d.buf[f.offset..end].copy_from_slice(f.data);
            d.cover(f.offset, end);
        }
        if !d.complete() {
            return Outcome::Held;
        }
        let Some(d) = self.table.remove(&key) else {
            return Outcome::Held;
        };
        self.lru.remove(&d.stamp);
        self.held -= d.buf.capacity();
        let mut payload = d.buf;
        payload.truncate(d.total.unwrap_or(0));
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
            self.lru.remove(&d.stamp);
            self.held -= d.buf.capacity();
            self.dropped += 1;
        }
    }

    /// Drops the least recently active datagram other than `keep`.
    fn evict_oldest(&mut self, keep: &Key) {
        if let Some(k) = self.lru.values().find(|k| *k != keep).copied() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

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
        assert_eq!(d.overlapping, 1);
    }

    /// The datagram's payload: a recognizable pattern.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn overlapping_fragments_are_stored_once_within_the_datagram_cap() {
        // 1,000 fragments of 16 KB, all overlapping, of one 32 KB datagram; the last fragment last.
        let len = 32 * 1024;
        let data = pattern(len);
        let piece = 16 * 1024;
        let span = len - 8 - piece;
        let mut d = Defrag::new();
        for j in 0..1000usize {
            let o = match j {
                0 => 0,
                1 => span,
                _ => (j * 7919 * 8) % span / 8 * 8,
            };
            assert_eq!(
                d.push(&frag(5, o, true, &data[o..o + piece]), j as u64),
                Outcome::Held
            );
            assert!(d.held <= MAX_DATAGRAM_LEN, "{} bytes held", d.held);
        }
        let Outcome::Complete { payload, .. } =
            d.push(&frag(5, len - 8, false, &data[len - 8..]), 1000)
        else {
            panic!("not complete");
        };
        assert_eq!(payload, data);
        assert_eq!((d.pending(), d.held, d.dropped), (0, 0, 0));
        assert_eq!(d.overlapping, 999);
        assert!(d.peak_held <= MAX_DATAGRAM_LEN);
    }

    #[test]
    fn last_fragment_inside_a_held_one_is_dropped_not_a_panic() {
        let data = pattern(16);
        let mut d = Defrag::new();
        assert_eq!(d.push(&frag(3, 0, true, &data), 1), Outcome::Held);
        assert!(matches!(
            d.push(&frag(3, 8, false, &data[8..12]), 2),
            Outcome::Dropped(_)
        ));
        assert_eq!((d.pending(), d.held, d.dropped), (0, 0, 1));
    }

    #[test]
    fn conflicting_overlap_drops_the_datagram_and_is_counted() {
        let data = pattern(24);
        let mut evil = data.clone();
        evil[12] ^= 0xff;
        let mut d = Defrag::new();
        assert_eq!(d.push(&frag(4, 8, true, &data[8..24]), 1), Outcome::Held);
        // Agrees with the held bytes it overlaps: kept.
        assert_eq!(d.push(&frag(4, 0, true, &data[..16]), 2), Outcome::Held);
        assert!(matches!(
            d.push(&frag(4, 8, true, &evil[8..16]), 3),
            Outcome::Dropped(_)
        ));
        assert_eq!((d.conflicts, d.dropped, d.pending(), d.held), (1, 1, 0, 0));
        // The rest of that datagram starts afresh and is not completed by what was dropped.
        assert_eq!(d.push(&frag(4, 24, false, &[7; 4]), 4), Outcome::Held);
    }

    #[test]
    fn growing_one_datagram_evicts_others_within_the_byte_cap() {
        let mut d = Defrag::new();
        let big = vec![0u8; 8192];
        // Fill the table with small datagrams, then grow them all to 64 KB one fragment at a time.
        for id in 0..MAX_DATAGRAMS as u32 {
            d.push(&frag(id, 0, true, &big[..8]), 1);
        }
        for o in (0..65_528 - 8192).step_by(8192) {
            for id in 0..MAX_DATAGRAMS as u32 {
                d.push(&frag(id, o, true, &big), 2);
                assert!(d.held <= MAX_HELD_BYTES, "{} bytes held", d.held);
            }
        }
        assert!(d.peak_held <= MAX_HELD_BYTES);
        assert!(d.dropped > 0);
    }

    #[test]
    fn the_least_recently_active_datagram_is_evicted() {
        let data = pattern(32);
        let mut d = Defrag::new();
        for id in 0..MAX_DATAGRAMS as u32 {
            d.push(&frag(id, 0, true, &data[..8]), 1);
        }
        // Datagram 0 gets a fragment again; a new datagram then evicts datagram 1, not 0.
        d.push(&frag(0, 8, true, &data[8..16]), 2);
        d.push(&frag(5000, 0, true, &data[..8]), 3);
        assert_eq!((d.pending(), d.dropped), (MAX_DATAGRAMS, 1));
        let Outcome::Complete { payload, .. } = d.push(&frag(0, 16, false, &data[16..]), 4) else {
            panic!("datagram 0 was evicted");
        };
        assert_eq!(payload, data);
        assert!(matches!(
            d.push(&frag(1, 8, false, &data[8..16]), 5),
            Outcome::Held
        ));
    }

    /// Fragments (offset, length) of a `len`-byte datagram: a cover of every byte plus extra
    /// overlapping ones, offsets and lengths multiples of 8 except the one reaching the end.
    fn fragments(len: usize, cuts: &[usize], extra: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % len / 8 * 8).collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        points.dedup();
        let mut out: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
        for &(o, l) in extra {
            let o = o % len / 8 * 8;
            let l = (l % 64 + 1) * 8;
            out.push((o, l.min(len - o)));
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn any_order_and_overlap_gives_the_in_order_datagram(
            len in 1usize..3000,
            cuts in proptest::collection::vec(0usize..100_000, 0..40),
            extra in proptest::collection::vec((0usize..100_000, 0usize..1000), 0..40),
            order in proptest::collection::vec(0usize..1000, 0..80),
        ) {
            let data = pattern(len);
            let mut frags = fragments(len, &cuts, &extra);
            // A permutation from `order`: swap position i with order[i] % n.
            let n = frags.len();
            for (i, r) in order.iter().enumerate() {
                frags.swap(i % n, r % n);
            }
            let mut d = Defrag::new();
            let mut done = None;
            for (i, &(o, l)) in frags.iter().enumerate() {
                let more = o + l < len;
                match d.push(&frag(9, o, more, &data[o..o + l]), i as u64) {
                    Outcome::Complete { payload, .. } => {
                        done = Some(payload);
                        break;
                    }
                    Outcome::Held => {}
                    Outcome::Dropped(why) => proptest::prop_assert!(false, "dropped: {}", why),
                }
                proptest::prop_assert!(d.held <= MAX_DATAGRAM_LEN);
            }
            proptest::prop_assert_eq!(done, Some(data));
            proptest::prop_assert_eq!((d.held, d.pending()), (0, 0));
        }

        #[test]
        fn arbitrary_fragments_never_panic_and_stay_bounded(
            frags in proptest::collection::vec(
                (
                    0u32..3,
                    proptest::prop_oneof![0usize..512, 0usize..70_000],
                    proptest::bool::ANY,
                    // Few distinct byte values and lengths: overlaps often agree.
                    (0usize..64, proptest::bool::ANY)
                        .prop_map(|(n, odd)| vec![1u8; if odd { n * 3 } else { n * 8 }]),
                ),
                0..60,
            ),
        ) {
            let mut d = Defrag::new();
            for (i, (id, o, more, bytes)) in frags.iter().enumerate() {
                let out = d.push(&frag(*id, *o / 8 * 8, *more, bytes), i as u64);
                if let Outcome::Complete { payload, .. } = out {
                    proptest::prop_assert!(payload.len() <= MAX_DATAGRAM_LEN);
                }
                proptest::prop_assert!(d.held <= MAX_HELD_BYTES);
                proptest::prop_assert!(d.pending() <= MAX_DATAGRAMS);
                proptest::prop_assert_eq!(d.lru.len(), d.table.len());
                let held: usize = d.table.values().map(|x| x.buf.capacity()).sum();
                proptest::prop_assert_eq!(held, d.held);
            }
        }
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
