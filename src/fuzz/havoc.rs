//! Byte-level havoc on a valid encoding, shared by every stage: flips, overwrites, inserts,
//! truncation. Offsets are taken modulo the PDU length, so any value is meaningful for any PDU and
//! a case stays replayable when the PDU it applies to changes size.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::ladder::{upto, Ladder};

/// Largest number of bytes one havoc operation inserts.
pub const MAX_INSERT: u64 = 4096;

/// One byte-level operation, applied after the structured encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Havoc {
    /// XOR the byte at `at` (mod length) with `xor`.
    Flip { at: u32, xor: u8 },
    /// Set the byte at `at` (mod length) to `value`.
    Set { at: u32, value: u8 },
    /// Insert `len` copies of `byte` at `at` (mod length + 1).
    Insert { at: u32, len: u32, byte: u8 },
    /// Keep only the first `keep` bytes.
    Truncate { keep: u32 },
}

impl Havoc {
    pub fn apply(&self, pdu: &mut Vec<u8>) {
        match *self {
            Havoc::Flip { at, xor } => {
                if !pdu.is_empty() {
                    let i = at as usize % pdu.len();
                    pdu[i] ^= xor;
                }
            }
            Havoc::Set { at, value } => {
                if !pdu.is_empty() {
                    let i = at as usize % pdu.len();
                    pdu[i] = value;
                }
            }
            Havoc::Insert { at, len, byte } => {
                let i = at as usize % (pdu.len() + 1);
                // INVARIANT: bounded by MAX_INSERT whatever a replayed case file says.
                let n = (len as u64).min(MAX_INSERT) as usize;
                pdu.splice(i..i, std::iter::repeat_n(byte, n));
            }
            Havoc::Truncate { keep } => pdu.truncate(keep as usize),
        }
    }

    /// Offsets up to `max_at` (the PDU sizes of the stage).
    pub fn strategy(max_at: u64) -> BoxedStrategy<Havoc> {
        let at = move || upto(max_at, &[4, 5, 6, 7]).prop_map(|v| v as u32);
        let byte = || upto(0xff, &[0x7f, 0x80]).prop_map(|v| v as u8);
        prop_oneof![
            3 => (at(), Ladder::new(1, 0xff, &[0x80]).prop_map(|v| v as u8))
                .prop_map(|(at, xor)| Havoc::Flip { at, xor }),
            2 => (at(), byte()).prop_map(|(at, value)| Havoc::Set { at, value }),
            2 => (at(), upto(MAX_INSERT, &[]).prop_map(|v| v as u32), byte())
                .prop_map(|(at, len, byte)| Havoc::Insert { at, len, byte }),
            1 => upto(max_at, &[]).prop_map(|v| Havoc::Truncate { keep: v as u32 }),
        ]
        .boxed()
    }
}

/// Applies every havoc operation in order.
pub fn apply_all(ops: &[Havoc], pdu: &mut Vec<u8>) {
    for op in ops {
        op.apply(pdu);
    }
}

/// `len` bytes of filler derived from `fill` (printable when `fill` is, so cookies stay readable).
pub fn filler(len: usize, fill: u8) -> Vec<u8> {
    vec![fill; len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn havoc_is_total() {
        let mut v = Vec::new();
        for op in [
            Havoc::Flip { at: 9, xor: 1 },
            Havoc::Set { at: 3, value: 7 },
            Havoc::Truncate { keep: 100 },
        ] {
            op.apply(&mut v);
        }
        assert!(v.is_empty());
        Havoc::Insert {
            at: 77,
            len: u32::MAX,
            byte: 0x41,
        }
        .apply(&mut v);
        assert_eq!(v.len(), MAX_INSERT as usize);
        Havoc::Flip { at: 4097, xor: 1 }.apply(&mut v);
        assert_eq!(v[1], 0x40);
        Havoc::Truncate { keep: 2 }.apply(&mut v);
        assert_eq!(v, vec![0x41, 0x40]);
    }
}
