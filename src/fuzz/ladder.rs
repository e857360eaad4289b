//! Boundary-value integers for structure-aware mutations, and a shrinker that is cheap against a
//! live target.
//!
//! A [`Ladder`] draws a field value from the classic boundaries (0, 1, powers of two and their
//! neighbours, the type maximum, field-specific limits) most of the time and uniformly otherwise.
//! Its value tree shrinks in two phases: a binary search over the boundaries below the value, then a
//! binary search over the integers between the last boundary that did not reproduce and the first
//! that did. Against a monotone trigger ("cookie longer than 200 bytes") that ends on the exact
//! threshold (201) in about `log2(boundaries) + log2(gap)` trials, and each trial is a live
//! connection, so this matters more than it would for an in-process property test.

use std::sync::Arc;

use proptest::prelude::Rng;
use proptest::strategy::{BoxedStrategy, NewTree, Strategy, ValueTree};
use proptest::test_runner::TestRunner;

/// The generic boundaries every ladder starts from (filtered to its range).
const COMMON: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    127,
    128,
    255,
    256,
    511,
    512,
    1023,
    1024,
    4095,
    4096,
    0x7fff,
    0x8000,
    0xfffe,
    0xffff,
    0x1_0000,
    0x7f_ffff,
    0xff_ffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// Integers in `min..=max`, boundary-biased. `Clone` is cheap (the boundaries are shared).
#[derive(Clone, Debug)]
pub struct Ladder {
    min: u64,
    max: u64,
    /// Sorted, deduplicated, all within `min..=max`.
    rungs: Arc<[u64]>,
}

impl Ladder {
    /// A ladder over `min..=max` with the common boundaries plus `extra` (and their neighbours).
    pub fn new(min: u64, max: u64, extra: &[u64]) -> Ladder {
        let (min, max) = (min.min(max), max.max(min));
        let mut v: Vec<u64> = COMMON.to_vec();
        for &e in extra {
            v.push(e);
            v.push(e.saturating_sub(1));
            v.push(e.saturating_add(1));
        }
        v.push(min);
        v.push(max);
        v.retain(|x| (min..=max).contains(x));
        v.sort_unstable();
        v.dedup();
        Ladder {
            min,
            max,
            rungs: v.into(),
        }
    }

    /// A value as the strategy would draw it (used by the other strategies' own trees).
    pub fn draw(&self, rng: &mut impl Rng) -> u64 {
        let roll = rng.next_u32() % 8;
        if roll < 6 {
            self.rungs[(rng.next_u64() % self.rungs.len() as u64) as usize]
        } else {
            let span = self.max - self.min;
            if span == u64::MAX {
                rng.next_u64()
            } else {
                self.min + rng.next_u64() % (span + 1)
            }
        }
    }

    /// The value tree for a known starting value (also used to shrink a replayed case).
    pub fn tree(&self, value: u64) -> LadderTree {
        let value = value.clamp(self.min, self.max);
        let mut cands: Vec<u64> = self.rungs.iter().copied().filter(|&r| r < value).collect();
        cands.push(value);
        let last = cands.len() - 1;
        LadderTree {
            min: self.min,
            cands: cands.into(),
            lo: 0,
            hi: last,
            cur: last,
            fine: None,
        }
    }
}

impl Strategy for Ladder {
    type Tree = LadderTree;
    type Value = u64;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let v = self.draw(runner.rng());
        Ok(self.tree(v))
    }
}

/// Binary search over integers (the second phase), with proptest's conventions: `hi` reproduces,
/// everything below `lo` is known not to.
#[derive(Clone, Debug)]
struct Fine {
    lo: u64,
    hi: u64,
    cur: u64,
}

impl Fine {
    fn reposition(&mut self) -> bool {
        let mid = self.lo + (self.hi - self.lo) / 2;
        if mid == self.cur {
            false
        } else {
            self.cur = mid;
            true
        }
    }
}

/// Shrinks a [`Ladder`] value: boundaries first, then the integers between two boundaries.
#[derive(Clone, Debug)]
pub struct LadderTree {
    min: u64,
    /// Candidate values, ascending; the last is the drawn value.
    cands: Arc<[u64]>,
    /// Smallest candidate index not yet known to pass.
    lo: usize,
    /// Smallest candidate index known to reproduce.
    hi: usize,
    cur: usize,
    fine: Option<Fine>,
}

impl LadderTree {
    /// Enters the integer phase between the last passing boundary and `cands[hi]`.
    fn start_fine(&mut self) -> bool {
        let top = self.cands[self.hi];
        // INVARIANT: lo only grows through `complicate`, so cands[lo - 1] passed when lo > 0.
        let floor = if self.lo == 0 {
            self.min
        } else {
            self.cands[self.lo - 1] + 1
        };
        self.cur = self.hi;
        if floor >= top {
            return false;
        }
        let mut f = Fine {
            lo: floor,
            hi: top,
            cur: top,
        };
        let moved = f.reposition();
        self.fine = Some(f);
        moved
    }
}

impl ValueTree for LadderTree {
    type Value = u64;

    fn current(&self) -> u64 {
        match &self.fine {
            Some(f) => f.cur,
            None => self.cands[self.cur],
        }
    }

    fn simplify(&mut self) -> bool {
        if let Some(f) = &mut self.fine {
            if f.hi <= f.lo {
                return false;
            }
            f.hi = f.cur;
            return f.reposition();
        }
        self.hi = self.cur;
        if self.lo < self.hi {
            self.cur = self.lo + (self.hi - self.lo) / 2;
            return true;
        }
        self.start_fine()
    }

    fn complicate(&mut self) -> bool {
        if let Some(f) = &mut self.fine {
            if f.hi <= f.lo {
                return false;
            }
            f.lo = f.cur + 1;
            return f.reposition();
        }
        self.lo = self.cur + 1;
        if self.lo < self.hi {
            self.cur = self.lo + (self.hi - self.lo) / 2;
            return true;
        }
        // Every boundary below `hi` passes: continue between the last of them and `hi`.
        if self.start_fine() {
            return true;
        }
        // Nothing between: `hi` itself is the answer (already known to reproduce).
        self.cur = self.hi;
        true
    }
}

/// Shorthand: a ladder over `0..=max` with extra boundaries.
pub fn upto(max: u64, extra: &[u64]) -> Ladder {
    Ladder::new(0, max, extra)
}

/// Boundary-biased values of one field width (a ladder over the whole range), for the stages'
/// mutation strategies.
pub fn u8s(extra: &[u64]) -> BoxedStrategy<u8> {
    upto(0xff, extra).prop_map(|v| v as u8).boxed()
}

/// See [`u8s`].
pub fn u16s(extra: &[u64]) -> BoxedStrategy<u16> {
    upto(0xffff, extra).prop_map(|v| v as u16).boxed()
}

/// See [`u8s`].
pub fn u32s(extra: &[u64]) -> BoxedStrategy<u32> {
    upto(0xffff_ffff, extra).prop_map(|v| v as u32).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs proptest's shrink loop (as `TestRunner::shrink` does) against `fails`.
    fn shrink(mut t: LadderTree, fails: impl Fn(u64) -> bool) -> (u64, usize) {
        let mut last = t.current();
        let mut trials = 0;
        if t.simplify() {
            loop {
                trials += 1;
                if trials > 500 {
                    break;
                }
                if fails(t.current()) {
                    last = t.current();
                    if !t.simplify() {
                        break;
                    }
                } else if !t.complicate() {
                    break;
                }
            }
        }
        (last, trials)
    }

    #[test]
    fn shrinks_to_the_exact_threshold() {
        let l = upto(0xffff_ffff, &[200]);
        for start in [201u64, 255, 256, 1000, 4096, 70_000, 0xffff_ffff] {
            let (v, trials) = shrink(l.tree(start), |x| x > 200);
            assert_eq!(v, 201, "from {start}");
            assert!(trials < 60, "from {start}: {trials} trials");
        }
        let (v, _) = shrink(l.tree(0xdead_beef), |x| x > 30);
        assert_eq!(v, 31);
        let (v, _) = shrink(l.tree(17), |x| x >= 9);
        assert_eq!(v, 9);
    }

    #[test]
    fn minimum_stays_minimum() {
        let l = Ladder::new(5, 100, &[]);
        let (v, trials) = shrink(l.tree(5), |_| true);
        assert_eq!(v, 5);
        assert_eq!(trials, 0);
        let (v, _) = shrink(l.tree(90), |_| true);
        assert_eq!(v, 5);
    }

    #[test]
    fn draws_stay_in_range_and_are_deterministic() {
        use proptest::test_runner::{Config, RngAlgorithm, TestRng};
        let l = Ladder::new(3, 40, &[30]);
        let mk = || {
            TestRunner::new_with_rng(
                Config::default(),
                TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
            )
        };
        let (mut a, mut b) = (mk(), mk());
        for _ in 0..500 {
            let x = l.new_tree(&mut a).map(|t| t.current()).unwrap_or(0);
            let y = l.new_tree(&mut b).map(|t| t.current()).unwrap_or(0);
            assert_eq!(x, y);
            assert!((3..=40).contains(&x), "{x}");
        }
    }
}
