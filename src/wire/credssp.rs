//! CredSSP TSRequest (MS-CSSP 2.2.1), typed with byte offsets, and its writer.
//!
//! `TSRequest ::= SEQUENCE { version [0] INTEGER, negoTokens [1] NegoData OPTIONAL, authInfo [2]
//! OCTET STRING OPTIONAL, pubKeyAuth [3] OCTET STRING OPTIONAL, errorCode [4] INTEGER OPTIONAL,
//! clientNonce [5] OCTET STRING OPTIONAL }`, `NegoData ::= SEQUENCE OF SEQUENCE { negoToken [0]
//! OCTET STRING }`. Read by hand because sspi's decoder rejects the strictly-DER errorCode encoding
//! and gives no offset on malformed input. Fields are accepted in any order; unknown context tags
//! are skipped (forward compatibility); bytes after the SEQUENCE are an error.
//!
//! Never panics; every length is checked against the bytes present before it is used; the only
//! allocation is the list of negoTokens, one entry per token present in the input.

use std::fmt;

use super::asn1;

/// Why a TSRequest could not be read: what, and the absolute offset of the element at fault. The
/// texts are part of the analyzer's output (a `protocol_error`'s `what`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsRequestError {
    pub at: usize,
    pub kind: TsRequestErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TsRequestErrorKind {
    Empty,
    NotASequence {
        tag: u8,
    },
    Trailing {
        bytes: usize,
    },
    BadHeader {
        tag: u8,
    },
    LengthExceeds {
        tag: u8,
        len: usize,
        available: usize,
    },
    /// Inside the explicit tag of `field`: another tag than the type's.
    WrongInnerTag {
        field: &'static str,
        want: u8,
        got: u8,
    },
    EmptyField {
        field: &'static str,
    },
    EmptyInteger {
        field: &'static str,
    },
    IntegerTooLong {
        field: &'static str,
        len: usize,
    },
    NegoTokensItem {
        tag: u8,
    },
    UnexpectedTag {
        tag: u8,
    },
    NoVersion,
}

impl fmt::Display for TsRequestErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TsRequestErrorKind as K;
        match *self {
            K::Empty => write!(f, "empty TSRequest"),
            K::NotASequence { tag } => {
                write!(f, "expected a TSRequest SEQUENCE (0x30), got 0x{tag:02x}")
            }
            K::Trailing { bytes } => write!(f, "{bytes} trailing bytes after the TSRequest"),
            K::BadHeader { tag } => write!(f, "invalid DER header (tag 0x{tag:02x})"),
            K::LengthExceeds {
                tag,
                len,
                available,
            } => write!(
                f,
                "DER length {len} of tag 0x{tag:02x} exceeds the {available} bytes available"
            ),
            K::WrongInnerTag { field, want, got } => {
                write!(f, "{field}: expected tag 0x{want:02x}, got 0x{got:02x}")
            }
            K::EmptyField { field } => write!(f, "{field}: empty"),
            K::EmptyInteger { field } => write!(f, "{field}: empty INTEGER"),
            K::IntegerTooLong { field, len } => {
                write!(f, "{field}: INTEGER of {len} bytes does not fit 32 bits")
            }
            K::NegoTokensItem { tag } => {
                write!(f, "negoTokens: expected SEQUENCE, got 0x{tag:02x}")
            }
            K::UnexpectedTag { tag } => write!(f, "unexpected tag 0x{tag:02x} in TSRequest"),
            K::NoVersion => write!(f, "TSRequest without version"),
        }
    }
}

impl fmt::Display for TsRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.at)
    }
}

impl std::error::Error for TsRequestError {}

fn err(at: usize, kind: TsRequestErrorKind) -> TsRequestError {
    TsRequestError { at, kind }
}

/// Bytes of one field and the absolute offset of their first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    pub at: usize,
    pub bytes: &'a [u8],
}

/// One TSRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TsRequest<'a> {
    pub version: u32,
    /// Every negoToken (SPNEGO or raw NTLMSSP), in order.
    pub nego_tokens: Vec<Field<'a>>,
    pub auth_info: Option<Field<'a>>,
    pub pub_key_auth: Option<Field<'a>>,
    /// errorCode (version 3 and later): an NTSTATUS, with the offset of its INTEGER.
    pub error_code: Option<(u32, usize)>,
    pub client_nonce: Option<Field<'a>>,
}

/// Largest DER length accepted by [`frame_len`]: 4 length bytes.
pub const MAX_DER_LENGTH_BYTES: usize = asn1::MAX_LENGTH_BYTES;

/// Tag, header length and content length of the DER header at the start of `buf`.
fn header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let h = asn1::read_header(buf, asn1::TagForm::LowOnly).ok()?;
    Some((h.tag, h.header_len, h.len))
}

/// Length of the DER TLV at the start of `buf` (header + content) as soon as its header is
/// readable, even when the content is not all there yet; None when the header is incomplete or
/// not a supported DER header. Frames TSRequests in a TLS stream. BER's non-minimal length
/// encodings are accepted (some stacks send `0x82 0x00 0x7f`).
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let (_, h, len) = header(buf)?;
    h.checked_add(len)
}

/// One TLV inside a parent, with absolute offsets.
struct Tlv<'a> {
    tag: u8,
    offset: usize,
    content_offset: usize,
    content: &'a [u8],
}

/// Consecutive TLVs of `buf`, whose first byte is at absolute offset `base`.
struct TlvIter<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> TlvIter<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        TlvIter { buf, pos: 0, base }
    }

    fn next_tlv(&mut self) -> Option<Result<Tlv<'a>, TsRequestError>> {
        let rest = self.buf.get(self.pos..)?;
        let &first = rest.first()?;
        let offset = self.base + self.pos;
        let Some((tag, h, len)) = header(rest) else {
            return Some(Err(err(
                offset,
                TsRequestErrorKind::BadHeader { tag: first },
            )));
        };
        let Some(content) = h.checked_add(len).and_then(|end| rest.get(h..end)) else {
            return Some(Err(err(
                offset,
                TsRequestErrorKind::LengthExceeds {
                    tag,
                    len,
                    available: rest.len() - h.min(rest.len()),
                },
            )));
        };
        self.pos += h + len;
        Some(Ok(Tlv {
            tag,
            offset,
            content_offset: offset + h,
            content,
        }))
    }
}

/// The TLV inside an explicit context tag, checked to have tag `want`.
fn inner<'a>(outer: &Tlv<'a>, want: u8, field: &'static str) -> Result<Tlv<'a>, TsRequestError> {
    let mut it = TlvIter::new(outer.content, outer.content_offset);
    match it.next_tlv() {
        Some(Ok(t)) if t.tag == want => Ok(t),
        Some(Ok(t)) => Err(err(
            t.offset,
            TsRequestErrorKind::WrongInnerTag {
                field,
                want,
                got: t.tag,
            },
        )),
        Some(Err(e)) => Err(e),
        None => Err(err(
            outer.content_offset,
            TsRequestErrorKind::EmptyField { field },
        )),
    }
}

/// An unsigned 32-bit value from an INTEGER's content. Accepts the strictly-DER 5-byte encoding
/// of values >= 2^31 (leading 0x00) and the 4-byte encoding Windows uses for NTSTATUS (which DER
/// would read as negative): both give the same u32. Shorter negative encodings are sign-extended.
fn integer_u32(content: &[u8], at: usize, field: &'static str) -> Result<u32, TsRequestError> {
    match *content {
        [] => Err(err(at, TsRequestErrorKind::EmptyInteger { field })),
        [first, ..] if content.len() <= 4 => {
            let mut v: u32 = if first & 0x80 != 0 { u32::MAX } else { 0 };
            for &b in content {
                v = (v << 8) | u32::from(b);
            }
            Ok(v)
        }
        [0, a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(err(
            at,
            TsRequestErrorKind::IntegerTooLong {
                field,
                len: content.len(),
            },
        )),
    }
}

fn octets<'a>(f: &Tlv<'a>, field: &'static str) -> Result<Field<'a>, TsRequestError> {
    let os = inner(f, 0x04, field)?;
    Ok(Field {
        at: os.content_offset,
        bytes: os.content,
    })
}

impl<'a> TsRequest<'a> {
    /// Reads one TSRequest that fills `buf` exactly.
    pub fn parse(buf: &'a [u8]) -> Result<TsRequest<'a>, TsRequestError> {
        let mut top = TlvIter::new(buf, 0);
        let seq = match top.next_tlv() {
            Some(Ok(t)) if t.tag == 0x30 => t,
            Some(Ok(t)) => return Err(err(0, TsRequestErrorKind::NotASequence { tag: t.tag })),
            Some(Err(e)) => return Err(e),
            None => return Err(err(0, TsRequestErrorKind::Empty)),
        };
        if top.pos < buf.len() {
            return Err(err(
                top.pos,
                TsRequestErrorKind::Trailing {
                    bytes: buf.len() - top.pos,
                },
            ));
        }
        let mut ts = TsRequest::default();
        let mut have_version = false;
        let mut fields = TlvIter::new(seq.content, seq.content_offset);
        while let Some(f) = fields.next_tlv() {
            let f = f?;
            match f.tag {
                0xa0 => {
                    let i = inner(&f, 0x02, "version")?;
                    ts.version = integer_u32(i.content, i.offset, "version")?;
                    have_version = true;
                }
                0xa1 => {
                    let list = inner(&f, 0x30, "negoTokens")?;
                    let mut items = TlvIter::new(list.content, list.content_offset);
                    while let Some(item) = items.next_tlv() {
                        let item = item?;
                        if item.tag != 0x30 {
                            return Err(err(
                                item.offset,
                                TsRequestErrorKind::NegoTokensItem { tag: item.tag },
                            ));
                        }
                        let mut tok = TlvIter::new(item.content, item.content_offset);
                        while let Some(t) = tok.next_tlv() {
                            let t = t?;
                            if t.tag == 0xa0 {
                                ts.nego_tokens.push(octets(&t, "negoToken")?);
                            }
                        }
                    }
                }
                0xa2 => ts.auth_info = Some(octets(&f, "authInfo")?),
                0xa3 => ts.pub_key_auth = Some(octets(&f, "pubKeyAuth")?),
                0xa4 => {
                    let i = inner(&f, 0x02, "errorCode")?;
                    let code = integer_u32(i.content, i.offset, "errorCode")?;
                    ts.error_code = Some((code, i.offset));
                }
                0xa5 => ts.client_nonce = Some(octets(&f, "clientNonce")?),
                t if t & 0xe0 == 0xa0 => {}
                t => return Err(err(f.offset, TsRequestErrorKind::UnexpectedTag { tag: t })),
            }
        }
        if !have_version {
            return Err(err(seq.content_offset, TsRequestErrorKind::NoVersion));
        }
        Ok(ts)
    }

    /// The first negoToken's bytes.
    pub fn nego_token(&self) -> Option<&'a [u8]> {
        self.nego_tokens.first().map(|f| f.bytes)
    }

    /// Writes the TSRequest in DER (errorCode in strict DER; [`ts_request_error`] writes it as
    /// Windows does), fields in the order of the ASN.1 definition.
    pub fn emit(&self) -> Vec<u8> {
        self.emit_as(&Layout::default())
    }

    /// Writes the TSRequest with `layout`'s deviations from DER (tags, lengths, repetitions and
    /// nesting a fuzzer asks for); [`Layout::default`] writes what [`TsRequest::emit`] writes.
    pub fn emit_as(&self, layout: &Layout) -> Vec<u8> {
        let field = |i: usize, inner: Vec<u8>| {
            asn1::tlv_with(
                layout.field_tags[i],
                &inner,
                layout.field_lens[i].map(|l| l as usize),
                None,
            )
        };
        let version = match &layout.version_content {
            Some(raw) => raw.clone(),
            None => uint(self.version),
        };
        let mut body = field(0, asn1::tlv(0x02, &version));
        if !self.nego_tokens.is_empty() {
            let token = |t: &Field<'_>| {
                let len = layout.nego_token_len.map(|l| l as usize);
                let octets = asn1::tlv_with(0x04, t.bytes, len, None);
                asn1::tlv(0x30, &asn1::tlv(0xa0, &octets))
            };
            let mut items = Vec::new();
            match layout.nego_token_repeat {
                Some(n) => {
                    let item = token(&self.nego_tokens[0]);
                    for _ in 0..n {
                        items.extend_from_slice(&item);
                    }
                }
                None => self.nego_tokens.iter().for_each(|t| items.extend(token(t))),
            }
            let mut nego_data = asn1::tlv(0x30, &items);
            // INVARIANT: at most MAX_NESTING extra SEQUENCEs, whatever the layout asks.
            for _ in 0..layout.nego_nesting.min(MAX_NESTING) {
                nego_data = asn1::tlv(0x30, &nego_data);
            }
            body.extend(field(1, nego_data));
        }
        for (i, f) in [(2, self.auth_info), (3, self.pub_key_auth)] {
            if let Some(f) = f {
                body.extend(field(i, asn1::tlv(0x04, f.bytes)));
            }
        }
        if let Some((code, _)) = self.error_code {
            body.extend(field(4, asn1::tlv(0x02, &uint(code))));
        }
        if let Some(f) = self.client_nonce {
            body.extend(field(5, asn1::tlv(0x04, f.bytes)));
        }
        asn1::tlv_with(
            layout.outer_tag,
            &body,
            layout.outer_len.map(|l| l as usize),
            layout.outer_long_form,
        )
    }
}

/// Most extra SEQUENCEs [`Layout::nego_nesting`] wraps around NegoData.
pub const MAX_NESTING: u16 = 512;

/// How [`TsRequest::emit_as`] lays a TSRequest out. The default is the DER of the ASN.1
/// definition; every other value is a deliberate deviation, for fuzzing a peer's reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The outer SEQUENCE tag (0x30).
    pub outer_tag: u8,
    /// The outer length written instead of the real one.
    pub outer_len: Option<u32>,
    /// The outer length in long form with this many length bytes (non-minimal BER).
    pub outer_long_form: Option<u8>,
    /// The explicit context tags of fields 0 (version) to 5 (clientNonce): 0xA0 + field.
    pub field_tags: [u8; 6],
    /// Each field's explicit-tag length written instead of the real one.
    pub field_lens: [Option<u32>; 6],
    /// The version INTEGER's content instead of the minimal encoding of `version`.
    pub version_content: Option<Vec<u8>>,
    /// The length every negoToken OCTET STRING says instead of its real one.
    pub nego_token_len: Option<u32>,
    /// The first negoToken written this many times instead of every token once (`Some(0)`: an
    /// empty NegoData).
    pub nego_token_repeat: Option<u8>,
    /// Extra SEQUENCEs wrapped around NegoData (at most [`MAX_NESTING`]).
    pub nego_nesting: u16,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            outer_tag: 0x30,
            outer_len: None,
            outer_long_form: None,
            field_tags: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5],
            field_lens: [None; 6],
            version_content: None,
            nego_token_len: None,
            nego_token_repeat: None,
            nego_nesting: 0,
        }
    }
}

fn uint(v: u32) -> Vec<u8> {
    asn1::uint_content(u64::from(v))
}

/// Encoding of the errorCode INTEGER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCodeEncoding {
    /// What Windows and FreeRDP 3 send: the 4 bytes of the NTSTATUS (0xC000006D → `02 04 C0 00 00 6D`).
    Windows4Byte,
    /// Strict DER of the unsigned value (0xC000006D → `02 05 00 C0 00 00 6D`).
    StrictDer,
}

/// A TSRequest carrying only version and errorCode (MS-CSSP 3.1.5.2: what a server sends when
/// authentication fails).
pub fn ts_request_error(version: u32, ntstatus: u32, enc: ErrorCodeEncoding) -> Vec<u8> {
    let code = match enc {
        ErrorCodeEncoding::Windows4Byte => ntstatus.to_be_bytes().to_vec(),
        ErrorCodeEncoding::StrictDer => uint(ntstatus),
    };
    let mut body = asn1::tlv(0xa0, &asn1::tlv(0x02, &uint(version)));
    body.extend(asn1::tlv(0xa4, &asn1::tlv(0x02, &code)));
    asn1::tlv(0x30, &body)
}

/// A TSRequest carrying version and one negoToken (MS-CSSP 2.2.1.1).
pub fn ts_request_nego(version: u32, token: &[u8]) -> Vec<u8> {
    TsRequest {
        version,
        nego_tokens: vec![Field {
            at: 0,
            bytes: token,
        }],
        ..TsRequest::default()
    }
    .emit()
}

/// The contract on `data`: parsing never panics, offsets stay inside the input, a TSRequest read
/// is re-emitted and reads back with the same values, and the frame length agrees with the parse.
/// The bytes of a TSRequest's fields, for comparisons.
type Owned<'b> = (
    Vec<Vec<u8>>,
    Option<&'b [u8]>,
    Option<&'b [u8]>,
    Option<&'b [u8]>,
);

#[doc(hidden)]
pub fn exercise(data: &[u8]) {
    match TsRequest::parse(data) {
        Ok(ts) => {
            assert_eq!(frame_len(data), Some(data.len()), "a TSRequest frames");
            let fields = ts
                .nego_tokens
                .iter()
                .chain(&ts.auth_info)
                .chain(&ts.pub_key_auth)
                .chain(&ts.client_nonce);
            for f in fields {
                assert!(f.at + f.bytes.len() <= data.len(), "a field past the end");
            }
            let again = ts.emit();
            let back = TsRequest::parse(&again).expect("an emitted TSRequest reads back");
            assert_eq!(back.version, ts.version);
            assert_eq!(back.error_code.map(|e| e.0), ts.error_code.map(|e| e.0));
            fn bytes<'b>(t: &TsRequest<'b>) -> Owned<'b> {
                (
                    t.nego_tokens
                        .iter()
                        .map(|f| f.bytes.to_vec())
                        .collect::<Vec<_>>(),
                    t.auth_info.map(|f| f.bytes),
                    t.pub_key_auth.map(|f| f.bytes),
                    t.client_nonce.map(|f| f.bytes),
                )
            }
            assert!(
                bytes(&back) == bytes(&ts),
                "an emitted TSRequest reads back other bytes"
            );
        }
        Err(e) => assert!(e.at <= data.len(), "an error offset past the end"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writers_read_back_with_offsets() {
        let b = ts_request_nego(6, b"NTLMSSP\0token");
        let ts = TsRequest::parse(&b).unwrap();
        assert_eq!(ts.version, 6);
        let tok = ts.nego_tokens[0];
        assert_eq!(tok.bytes, b"NTLMSSP\0token");
        assert_eq!(&b[tok.at..tok.at + tok.bytes.len()], tok.bytes);
        for enc in [
            ErrorCodeEncoding::Windows4Byte,
            ErrorCodeEncoding::StrictDer,
        ] {
            let b = ts_request_error(3, 0xC000_006D, enc);
            let ts = TsRequest::parse(&b).unwrap();
            let (code, at) = ts.error_code.unwrap();
            assert_eq!(code, 0xC000_006D);
            assert_eq!(b[at], 0x02, "the offset is the INTEGER's");
        }
        assert_eq!(
            ts_request_error(2, 0xC000_006D, ErrorCodeEncoding::Windows4Byte),
            [0x30, 0x0d, 0xa0, 0x03, 0x02, 0x01, 0x02, 0xa4, 0x06, 0x02, 0x04, 0xc0, 0, 0, 0x6d]
        );
    }

    #[test]
    fn errors_name_the_element_and_its_offset() {
        let e = TsRequest::parse(&[0x30, 0x05, 0xa0, 0x03, 0x02, 0x01]).unwrap_err();
        assert_eq!(e.at, 0);
        assert_eq!(
            e.kind.to_string(),
            "DER length 5 of tag 0x30 exceeds the 4 bytes available"
        );
        let e = TsRequest::parse(&[0x30, 0x03, 0xa0, 0x01, 0x04]).unwrap_err();
        assert_eq!(e.to_string(), "invalid DER header (tag 0x04) at byte 4");
        let e = TsRequest::parse(&[0x30, 0x02, 0xa6, 0x00]).unwrap_err();
        assert_eq!(e.kind, TsRequestErrorKind::NoVersion);
        assert_eq!(e.at, 2);
    }

    fn field() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..200)
    }

    proptest! {
        #[test]
        fn random_bytes_hold_the_contract(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            exercise(&data);
        }

        #[test]
        fn emitted_requests_read_back(
            version: u32,
            tokens in proptest::collection::vec(field(), 0..3),
            auth in proptest::option::of(field()),
            code: Option<u32>,
            nonce in proptest::option::of(field()),
        ) {
            fn f(b: &Vec<u8>) -> Field<'_> {
                Field { at: 0, bytes: b.as_slice() }
            }
            let ts = TsRequest {
                version,
                nego_tokens: tokens.iter().map(f).collect(),
                auth_info: auth.as_ref().map(f),
                pub_key_auth: None,
                error_code: code.map(|c| (c, 0)),
                client_nonce: nonce.as_ref().map(f),
            };
            let b = ts.emit();
            exercise(&b);
            let back = TsRequest::parse(&b).unwrap();
            prop_assert_eq!(back.version, version);
            prop_assert_eq!(back.nego_tokens.len(), tokens.len());
            prop_assert_eq!(back.error_code.map(|c| c.0), code);
            prop_assert_eq!(back.client_nonce.map(|f| f.bytes.to_vec()), nonce);
        }
    }
}
