//! BER/DER identifier + length headers and TLVs: the one reader and writer under CredSSP's
//! TSRequest, T.125's connect PDUs, X.509 certificates and RSA keys, and the lab's and sanitizer's
//! re-encodings.
//!
//! Hand-written rather than the `der` crate (in the lock through x509-cert) on purpose: `der`
//! parses strict DER into typed values, and rdprobe must read what real peers send, which is BER
//! (non-minimal lengths such as `0x82 0x00 0x7f`, T.125's two-byte application tags), tell "not
//! all bytes yet" from "not valid" to frame a stream, and report byte offsets. Whole certificates
//! are still parsed by `x509-cert`; this module reads only headers.

use super::cursor::{Cursor, WireError};

/// Longest definite length form read (4 length bytes: up to 4 GiB, far above any PDU; callers
/// bound what they buffer).
pub const MAX_LENGTH_BYTES: usize = 4;

/// How the identifier octets are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagForm {
    /// The first byte is the tag, whatever its low bits (X.509: no high tag numbers occur).
    OneByte,
    /// One-byte tags only: the high-tag-number form (low five bits all set) is invalid.
    LowOnly,
    /// One byte, or two when the low five bits are all set (T.125's `0x7f 0x65` / `0x7f 0x66`).
    UpToTwo,
}

/// An identifier + definite length header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The first identifier byte (class, constructed bit and tag number, or 0x1f-form lead).
    pub tag: u8,
    /// Identifier bytes (1 or 2).
    pub tag_len: usize,
    /// Identifier plus length bytes.
    pub header_len: usize,
    /// Content bytes announced by the length.
    pub len: usize,
}

impl Header {
    /// Header plus content, if it fits in a usize.
    pub fn total(&self) -> Option<usize> {
        self.header_len.checked_add(self.len)
    }
}

/// Reads the header at the start of `buf`. A truncated error means more bytes may complete it;
/// an invalid one (high tag where not allowed, indefinite length, more than
/// [`MAX_LENGTH_BYTES`] length bytes) that no more bytes will.
pub fn read_header(buf: &[u8], form: TagForm) -> Result<Header, WireError> {
    header(buf, form, MAX_LENGTH_BYTES, "length of more than 4 bytes")
}

/// [`read_header`] accepting up to 8 length bytes, as many as a `u64` holds: for a fuzzer's own
/// long-form encodings (`0x88` and eight length bytes), which no peer needs.
pub fn read_header_long(buf: &[u8], form: TagForm) -> Result<Header, WireError> {
    header(buf, form, 8, "length of more than 8 bytes")
}

fn header(
    buf: &[u8],
    form: TagForm,
    max_length_bytes: usize,
    too_long: &'static str,
) -> Result<Header, WireError> {
    let mut c = Cursor::new(buf);
    let tag = c.read_u8()?;
    if tag & 0x1f == 0x1f {
        match form {
            TagForm::OneByte => {}
            TagForm::LowOnly => return Err(WireError::invalid(0, "multi-byte tag")),
            TagForm::UpToTwo => c.skip(1)?,
        }
    }
    let tag_len = c.offset();
    let l0 = c.read_u8()?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 {
            return Err(WireError::invalid(tag_len, "indefinite length"));
        }
        if n > max_length_bytes {
            return Err(WireError::invalid(tag_len, too_long));
        }
        let bytes = c.read_bytes(n)?;
        let v = bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        usize::try_from(v).map_err(|_| WireError::invalid(tag_len, "length too large"))?
    };
    Ok(Header {
        tag,
        tag_len,
        header_len: c.offset(),
        len,
    })
}

/// One complete TLV at the start of `buf`: its header, its content and the bytes after it.
pub fn read_tlv(buf: &[u8], form: TagForm) -> Result<(Header, &[u8], &[u8]), WireError> {
    let h = read_header(buf, form)?;
    let mut c = Cursor::new(buf);
    c.skip(h.header_len)?;
    let content = c.read_bytes(h.len)?;
    Ok((h, content, c.remaining()))
}

/// Appends the minimal definite length octets of `len`.
pub fn write_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// The minimal definite length octets of `len`.
pub fn len_bytes(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    write_len(len, &mut v);
    v
}

/// Long-form length octets of `len` with exactly `octets` length bytes (clamped to 1..=126; the
/// positions above the 8 bytes of a `u64` are zero): valid BER that DER forbids when not minimal,
/// as a fuzzer's mutation wants it.
pub fn len_bytes_long(len: usize, octets: u8) -> Vec<u8> {
    let n = usize::from(octets.clamp(1, 126));
    let bytes = (len as u64).to_be_bytes();
    let mut out = Vec::with_capacity(n + 1);
    out.push(0x80 | n as u8);
    for i in 0..n {
        out.push(if n - i > 8 { 0 } else { bytes[8 - (n - i)] });
    }
    out
}

/// Length octets of `len`: minimal, or long form with `long` length bytes ([`len_bytes_long`]).
pub fn len_octets(len: usize, long: Option<u8>) -> Vec<u8> {
    match long {
        Some(n) => len_bytes_long(len, n),
        None => len_bytes(len),
    }
}

/// A one-byte-tag TLV whose length octets say `len` (None: the content's real length), in long
/// form with `long` length bytes when asked: the deliberately wrong encodings a fuzzer sends.
/// With `None, None` it is [`tlv`].
pub fn tlv_with(tag: u8, content: &[u8], len: Option<usize>, long: Option<u8>) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 10);
    v.push(tag);
    v.extend(len_octets(len.unwrap_or(content.len()), long));
    v.extend_from_slice(content);
    v
}

/// A one-byte-tag TLV with a minimal length.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 10);
    v.push(tag);
    write_len(content.len(), &mut v);
    v.extend_from_slice(content);
    v
}

/// The minimal content octets of a non-negative INTEGER.
pub fn uint_content(v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    let mut out = Vec::with_capacity(9);
    if b[skip] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&b[skip..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn long_form_lengths_read_back() {
        for (len, n) in [(0usize, 1u8), (5, 3), (300, 2), (70_000, 4)] {
            let l = len_bytes_long(len, n);
            assert_eq!(l.len(), usize::from(n) + 1);
            let mut tlv = vec![0x30];
            tlv.extend_from_slice(&l);
            tlv.extend(std::iter::repeat_n(0u8, len));
            let (h, content, rest) = read_tlv(&tlv, TagForm::OneByte).expect("valid BER");
            assert_eq!((h.len, content.len(), rest.len()), (len, len, 0));
        }
    }

    #[test]
    fn headers() {
        assert_eq!(
            read_header(&[0x30, 0x82, 0x00, 0x7f], TagForm::LowOnly),
            Ok(Header {
                tag: 0x30,
                tag_len: 1,
                header_len: 4,
                len: 0x7f
            }),
            "non-minimal BER lengths are read"
        );
        assert_eq!(
            read_header(&[0x7f, 0x65, 0x81, 0x90], TagForm::UpToTwo).map(|h| (
                h.tag_len,
                h.header_len,
                h.len
            )),
            Ok((2, 4, 0x90))
        );
        assert!(
            read_header(&[0x7f, 0x65, 0x01], TagForm::LowOnly).is_err_and(|e| !e.is_truncated())
        );
        assert!(read_header(&[0x30, 0x80], TagForm::OneByte)
            .is_err_and(|e| !e.is_truncated() && e.at == 1));
        assert!(read_header(&[0x30, 0x85, 1, 2, 3, 4, 5], TagForm::OneByte)
            .is_err_and(|e| !e.is_truncated()));
        assert!(read_header(&[0x30, 0x82, 0x01], TagForm::OneByte).is_err_and(|e| e.is_truncated()));
        let eight = [0x30, 0x88, 0, 0, 0, 0, 0, 0, 0, 5];
        assert!(read_header(&eight, TagForm::OneByte).is_err_and(|e| !e.is_truncated()));
        assert_eq!(
            read_header_long(&eight, TagForm::OneByte).map(|h| (h.header_len, h.len)),
            Ok((10, 5))
        );
        assert!(
            read_header_long(&[0x30, 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 5], TagForm::OneByte)
                .is_err_and(|e| !e.is_truncated())
        );
        assert!(read_header(&[], TagForm::OneByte).is_err_and(|e| e.is_truncated()));
        assert_eq!(len_bytes(0x7f), [0x7f]);
        assert_eq!(len_bytes(0x80), [0x81, 0x80]);
        assert_eq!(len_bytes(0x1234), [0x82, 0x12, 0x34]);
        assert_eq!(len_octets(5, None), [5]);
        assert_eq!(len_octets(0x80, None), [0x81, 0x80]);
        assert_eq!(len_octets(5, Some(3)), [0x83, 0, 0, 5]);
        assert_eq!(len_octets(5, Some(10)).len(), 11);
        assert_eq!(tlv_with(0x04, &[1, 2], None, None), tlv(0x04, &[1, 2]));
        assert_eq!(tlv_with(0x04, &[1, 2], Some(9), None), [0x04, 9, 1, 2]);
        assert_eq!(tlv_with(0x30, &[1], None, Some(2)), [0x30, 0x82, 0, 1, 1]);
        assert_eq!(uint_content(0xffff_ffff), [0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(uint_content(0), [0]);
        assert_eq!(uint_content(0x80), [0, 0x80]);
        assert_eq!(uint_content(0xC000_006D), [0, 0xC0, 0, 0, 0x6D]);
    }

    proptest! {
        /// What the writer writes, the reader reads back, with the bytes after it untouched.
        #[test]
        fn round_trip(tag in any::<u8>().prop_filter("low tag", |t| t & 0x1f != 0x1f),
                      content in proptest::collection::vec(any::<u8>(), 0..600),
                      rest in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut b = tlv(tag, &content);
            let n = b.len();
            b.extend_from_slice(&rest);
            for form in [TagForm::OneByte, TagForm::LowOnly, TagForm::UpToTwo] {
                let (h, c, r) = read_tlv(&b, form).unwrap();
                prop_assert_eq!(h.tag, tag);
                prop_assert_eq!(h.total(), Some(n));
                prop_assert_eq!(c, &content[..]);
                prop_assert_eq!(r, &rest[..]);
            }
            // Every cut short of the end is "more bytes needed", never invalid.
            for cut in 0..n {
                prop_assert!(read_tlv(&b[..cut], TagForm::LowOnly).is_err_and(|e| e.is_truncated()));
            }
        }

        #[test]
        fn integers_round_trip(v: u64) {
            let c = uint_content(v);
            prop_assert!(c[0] & 0x80 == 0, "non-negative");
            prop_assert!(c.len() == 1 || c[0] != 0 || c[1] & 0x80 != 0, "minimal");
            let back = c.iter().fold(0u128, |a, &b| (a << 8) | u128::from(b));
            prop_assert_eq!(back, u128::from(v));
        }

        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..16)) {
            for form in [TagForm::OneByte, TagForm::LowOnly, TagForm::UpToTwo] {
                if let Ok(h) = read_header(&buf, form) {
                    prop_assert!(h.header_len <= buf.len() && h.header_len >= 2);
                }
                if let Ok((h, c, r)) = read_tlv(&buf, form) {
                    prop_assert_eq!(h.header_len + c.len() + r.len(), buf.len());
                }
            }
        }
    }
}
