//! An offset-tracking reader over a byte slice, and offset peeks for code that reads fields at
//! fixed positions.

use std::fmt;

/// Why a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireErrorKind {
    /// The input ends before the field: `needed` more bytes than are there.
    Truncated { needed: usize },
    /// The bytes are there but do not form a valid field.
    Invalid(&'static str),
}

/// A failed read: what went wrong and at which absolute byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireError {
    pub at: usize,
    pub kind: WireErrorKind,
}

impl WireError {
    pub fn truncated(at: usize, needed: usize) -> WireError {
        WireError {
            at,
            kind: WireErrorKind::Truncated { needed },
        }
    }

    pub fn invalid(at: usize, what: &'static str) -> WireError {
        WireError {
            at,
            kind: WireErrorKind::Invalid(what),
        }
    }

    /// More bytes would (or could) make the read succeed.
    pub fn is_truncated(&self) -> bool {
        matches!(self.kind, WireErrorKind::Truncated { .. })
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WireErrorKind::Truncated { needed } => {
                write!(
                    f,
                    "truncated at byte {}: {needed} more bytes needed",
                    self.at
                )
            }
            WireErrorKind::Invalid(what) => write!(f, "{what} at byte {}", self.at),
        }
    }
}

impl std::error::Error for WireError {}

/// Reads a byte slice front to back; every read is bounds-checked and a failed read leaves the
/// position where it was. Offsets are absolute: a cursor over a sub-slice can start at the
/// sub-slice's offset in the whole message ([`Cursor::at`]).
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor::at(buf, 0)
    }

    /// A cursor over `buf`, whose first byte is at absolute offset `base`.
    pub fn at(buf: &'a [u8], base: usize) -> Cursor<'a> {
        Cursor { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.remaining().is_empty()
    }

    /// The next `n` bytes.
    pub fn read_bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let rest = self.remaining();
        let b = rest
            .get(..n)
            .ok_or_else(|| WireError::truncated(self.offset(), n - rest.len()))?;
        self.pos += n;
        Ok(b)
    }

    /// The next `N` bytes as an array.
    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.read_bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.read_bytes(n).map(|_| ())
    }

    pub fn peek_u8(&self) -> Result<u8, WireError> {
        self.remaining()
            .first()
            .copied()
            .ok_or_else(|| WireError::truncated(self.offset(), 1))
    }

    pub fn read_u8(&mut self) -> Result<u8, WireError> {
        Ok(self.read_array::<1>()?[0])
    }

    pub fn read_u16_le(&mut self) -> Result<u16, WireError> {
        self.read_array().map(u16::from_le_bytes)
    }

    pub fn read_u16_be(&mut self) -> Result<u16, WireError> {
        self.read_array().map(u16::from_be_bytes)
    }

    pub fn read_u32_le(&mut self) -> Result<u32, WireError> {
        self.read_array().map(u32::from_le_bytes)
    }

    pub fn read_u32_be(&mut self) -> Result<u32, WireError> {
        self.read_array().map(u32::from_be_bytes)
    }
}

/// The little-endian u16 at `at`, if the slice holds it (a peek for fixed-layout fields).
pub fn le16(b: &[u8], at: usize) -> Option<u16> {
    Cursor::new(b.get(at..)?).read_u16_le().ok()
}

/// The little-endian u32 at `at`, if the slice holds it.
pub fn le32(b: &[u8], at: usize) -> Option<u32> {
    Cursor::new(b.get(at..)?).read_u32_le().ok()
}

/// The big-endian u16 at `at`, if the slice holds it.
pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    Cursor::new(b.get(at..)?).read_u16_be().ok()
}

/// A UTF-16LE string up to its first NUL unit (or the end); unpaired surrogates become U+FFFD.
pub fn utf16z(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_and_reports_offsets() {
        let b = [1, 2, 3, 4, 5, 6, 7];
        let mut c = Cursor::at(&b, 100);
        assert_eq!(c.read_u8(), Ok(1));
        assert_eq!(c.read_u16_le(), Ok(0x0302));
        assert_eq!(c.read_u16_be(), Ok(0x0405));
        assert_eq!(c.offset(), 105);
        assert_eq!(
            c.read_u32_le(),
            Err(WireError::truncated(105, 2)),
            "a failed read reports where and how much"
        );
        assert_eq!(c.offset(), 105, "a failed read does not move");
        assert_eq!(c.read_bytes(2), Ok(&[6u8, 7][..]));
        assert!(c.is_empty());
        assert_eq!(le16(&b, 5), Some(0x0706));
        assert_eq!(le16(&b, 6), None);
        assert_eq!(le32(&b, usize::MAX), None);
        assert_eq!(be16(&b, 0), Some(0x0102));
    }

    proptest! {
        /// Written values read back; reads never panic and never run past the end.
        #[test]
        fn round_trip(a: u8, b: u16, c: u16, d: u32, e: u32, tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut buf = vec![a];
            buf.extend_from_slice(&b.to_le_bytes());
            buf.extend_from_slice(&c.to_be_bytes());
            buf.extend_from_slice(&d.to_le_bytes());
            buf.extend_from_slice(&e.to_be_bytes());
            buf.extend_from_slice(&tail);
            let mut cur = Cursor::new(&buf);
            prop_assert_eq!(cur.read_u8(), Ok(a));
            prop_assert_eq!(cur.read_u16_le(), Ok(b));
            prop_assert_eq!(cur.read_u16_be(), Ok(c));
            prop_assert_eq!(cur.read_u32_le(), Ok(d));
            prop_assert_eq!(cur.read_u32_be(), Ok(e));
            prop_assert_eq!(cur.read_bytes(tail.len()), Ok(&tail[..]));
            prop_assert!(cur.is_empty());
        }

        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64), ops in proptest::collection::vec(0u8..7, 0..32), n in 0usize..100) {
            let mut cur = Cursor::at(&buf, 7);
            for op in ops {
                let before = cur.offset();
                let ok = match op {
                    0 => cur.read_u8().is_ok(),
                    1 => cur.read_u16_le().is_ok(),
                    2 => cur.read_u16_be().is_ok(),
                    3 => cur.read_u32_le().is_ok(),
                    4 => cur.read_u32_be().is_ok(),
                    5 => cur.read_bytes(n).is_ok(),
                    _ => cur.peek_u8().is_ok(),
                };
                if !ok {
                    prop_assert_eq!(cur.offset(), before);
                }
                prop_assert!(cur.offset() <= 7 + buf.len());
            }
            let _ = (le16(&buf, n), le32(&buf, n), be16(&buf, n));
        }
    }
}
