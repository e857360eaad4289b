//! TLS record layer and handshake-message framing (RFC 5246, RFC 8446), and the cleartext
//! handshake messages rdprobe reads (ClientHello, ServerHello, Certificate): pure, no I/O.
//!
//! This is the one record rule of the project: the analyzer's stage machine, capture decryption,
//! the TLS enumeration and the sanitizer all frame records with [`RecordHeader::parse`] and
//! handshake messages with [`HandshakeHeader::parse`].
//!
//! Contract (as the rest of `wire`): nothing here panics on any input, every error carries the
//! byte offset where it was found ([`TlsError`]), and nothing allocates from a length field before
//! checking that the bytes it announces are present (the reassembler bounds what it buffers).

use std::fmt;

/// TLS record content types (RFC 8446 B.1).
pub const CT_CHANGE_CIPHER_SPEC: u8 = 20;
pub const CT_ALERT: u8 = 21;
pub const CT_HANDSHAKE: u8 = 22;
pub const CT_APPLICATION_DATA: u8 = 23;
/// RFC 6520 heartbeat (still a valid record type on the wire).
pub const CT_HEARTBEAT: u8 = 24;

/// Size of a TLS record header: type (1) + version (2) + length (2).
pub const RECORD_HEADER_LEN: usize = 5;

/// Largest record fragment accepted: 2^14 plaintext + 2048 bytes of expansion (RFC 5246 6.2.3,
/// the TLSCiphertext bound; RFC 8446 allows only 2^14 + 256, older stacks use the larger bound).
pub const MAX_FRAGMENT_LEN: usize = (1 << 14) + 2048;

/// Size of a handshake message header: msg_type (1) + length (3) (RFC 8446 4).
pub const HANDSHAKE_HEADER_LEN: usize = 4;

/// Largest handshake message [`HandshakeReassembler`] buffers (bytes of header + body). Certificate
/// chains of real RDP servers are a few KiB; 256 KiB bounds memory on hostile input.
pub const MAX_HANDSHAKE_MESSAGE_LEN: usize = 256 * 1024;

/// Handshake message types (RFC 8446 B.3, RFC 5246 7.4).
pub const HS_CLIENT_HELLO: u8 = 1;
pub const HS_SERVER_HELLO: u8 = 2;
pub const HS_NEW_SESSION_TICKET: u8 = 4;
pub const HS_ENCRYPTED_EXTENSIONS: u8 = 8;
pub const HS_CERTIFICATE: u8 = 11;
pub const HS_SERVER_KEY_EXCHANGE: u8 = 12;
pub const HS_CERTIFICATE_REQUEST: u8 = 13;
pub const HS_SERVER_HELLO_DONE: u8 = 14;
pub const HS_CERTIFICATE_VERIFY: u8 = 15;
pub const HS_CLIENT_KEY_EXCHANGE: u8 = 16;
pub const HS_FINISHED: u8 = 20;

/// Extension numbers read here (RFC 6066 3, RFC 8446 4.2.1).
pub const EXT_SERVER_NAME: u16 = 0;
pub const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// What is wrong with TLS bytes. `Display` gives the text the analyzer reports (without the
/// offset: [`TlsError`]'s `Display` adds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsErrorKind {
    /// Fewer than 5 bytes where a record header should start.
    TruncatedRecordHeader { have: usize },
    /// An SSL 2.0 record header (a ClientHello in the SSLv2-compatible format, RFC 5246 E.2).
    Sslv2,
    /// A content type outside 20..=24.
    ContentType(u8),
    /// A record version whose major byte is not 3.
    Version(u16),
    /// A fragment length above [`MAX_FRAGMENT_LEN`].
    RecordTooLong(usize),
    /// The stream ends inside a record: `have` of `total` bytes (header included).
    TruncatedRecord { have: usize, total: usize },
    /// Fewer than 4 bytes where a handshake header should start.
    TruncatedHandshakeHeader { have: usize },
    /// The bytes end inside a handshake message: `have` of `total` bytes (header included).
    TruncatedHandshake {
        msg_type: u8,
        have: usize,
        total: usize,
    },
    /// A handshake message longer than [`MAX_HANDSHAKE_MESSAGE_LEN`] (its body length).
    HandshakeTooLong(usize),
    /// A hello message ends inside `field`.
    HelloTruncated {
        hello: &'static str,
        field: &'static str,
    },
    /// A handshake body field is inconsistent.
    Malformed(&'static str),
}

impl fmt::Display for TlsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TlsErrorKind::TruncatedRecordHeader { have } => write!(
                f,
                "truncated TLS record header ({have} of {RECORD_HEADER_LEN} bytes)"
            ),
            TlsErrorKind::Sslv2 => f.write_str("SSLv2-format record (not TLS)"),
            TlsErrorKind::ContentType(ct) => write!(f, "invalid TLS record content type {ct}"),
            TlsErrorKind::Version(v) => write!(f, "invalid TLS record version 0x{v:04x}"),
            TlsErrorKind::RecordTooLong(len) => {
                write!(f, "TLS record length {len} exceeds {MAX_FRAGMENT_LEN}")
            }
            TlsErrorKind::TruncatedRecord { have, total } => {
                write!(f, "truncated TLS record: {have} of {total} bytes present")
            }
            TlsErrorKind::TruncatedHandshakeHeader { have } => write!(
                f,
                "truncated handshake header ({have} of {HANDSHAKE_HEADER_LEN} bytes)"
            ),
            TlsErrorKind::TruncatedHandshake {
                msg_type,
                have,
                total,
            } => write!(
                f,
                "truncated handshake message type {msg_type}: {have} of {total} bytes present"
            ),
            TlsErrorKind::HandshakeTooLong(len) => write!(
                f,
                "handshake message length {len} exceeds {MAX_HANDSHAKE_MESSAGE_LEN}"
            ),
            TlsErrorKind::HelloTruncated { hello, field } => {
                write!(f, "{hello} truncated in {field}")
            }
            TlsErrorKind::Malformed(what) => f.write_str(what),
        }
    }
}

/// A TLS decoding error and the byte offset where it was found (relative to the bytes the
/// function was given, or to all bytes pushed into a [`HandshakeReassembler`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsError {
    pub at: usize,
    pub kind: TlsErrorKind,
}

impl TlsError {
    pub fn new(at: usize, kind: TlsErrorKind) -> TlsError {
        TlsError { at, kind }
    }

    fn malformed(at: usize, what: &'static str) -> TlsError {
        TlsError::new(at, TlsErrorKind::Malformed(what))
    }

    /// More bytes could complete what is there (the error is not about the bytes present).
    pub fn is_truncated(&self) -> bool {
        matches!(
            self.kind,
            TlsErrorKind::TruncatedRecordHeader { .. }
                | TlsErrorKind::TruncatedRecord { .. }
                | TlsErrorKind::TruncatedHandshakeHeader { .. }
                | TlsErrorKind::TruncatedHandshake { .. }
        )
    }

    /// The same error with its offset moved by `by` (an error of a sub-slice, placed in the whole).
    pub fn shifted(self, by: usize) -> TlsError {
        TlsError {
            at: self.at.saturating_add(by),
            kind: self.kind,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.at)
    }
}

impl std::error::Error for TlsError {}

/// A TLS record header (RFC 8446 5.1, RFC 5246 6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub content_type: u8,
    /// legacy_record_version
    pub version: u16,
    /// Length of the fragment that follows (without the 5-byte header).
    pub len: usize,
}

impl RecordHeader {
    /// Reads and checks the record header at the start of `b` (`at` is its offset, for the error).
    ///
    /// The rule: content type 20..=24 (heartbeat included), major version 3 (any minor: the
    /// record version is legacy and stacks write 3.0–3.4 there), fragment length at most
    /// [`MAX_FRAGMENT_LEN`]. A first byte with the high bit set and a third byte of 1 is an
    /// SSL 2.0 ClientHello (RFC 5246 E.2), reported as such.
    pub fn parse(b: &[u8], at: usize) -> Result<RecordHeader, TlsError> {
        let Some(h) = b.first_chunk::<RECORD_HEADER_LEN>() else {
            return Err(TlsError::new(
                at,
                TlsErrorKind::TruncatedRecordHeader { have: b.len() },
            ));
        };
        let ct = h[0];
        let version = u16::from_be_bytes([h[1], h[2]]);
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let kind = if ct & 0x80 != 0 && h[2] == 0x01 {
            TlsErrorKind::Sslv2
        } else if !(CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(&ct) {
            TlsErrorKind::ContentType(ct)
        } else if h[1] != 3 {
            TlsErrorKind::Version(version)
        } else if len > MAX_FRAGMENT_LEN {
            TlsErrorKind::RecordTooLong(len)
        } else {
            return Ok(RecordHeader {
                content_type: ct,
                version,
                len,
            });
        };
        Err(TlsError::new(at, kind))
    }

    /// Header and fragment length together.
    pub fn total_len(&self) -> usize {
        RECORD_HEADER_LEN + self.len
    }

    /// Appends the 5 header bytes (the length saturates at 0xffff; [`RecordHeader::parse`]
    /// never yields one above [`MAX_FRAGMENT_LEN`]).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.content_type);
        out.extend_from_slice(&self.version.to_be_bytes());
        let len = u16::try_from(self.len).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// One TLS record found in a byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub content_type: u8,
    /// legacy_record_version
    pub version: u16,
    /// Byte offset of the record header in the stream.
    pub offset: usize,
    /// Length of the fragment (without the 5-byte header).
    pub len: usize,
}

impl Record {
    /// The fragment of this record within the stream it was split from.
    pub fn fragment<'a>(&self, stream: &'a [u8]) -> &'a [u8] {
        let start = self.offset.saturating_add(RECORD_HEADER_LEN);
        let end = start.saturating_add(self.len);
        stream.get(start..end).unwrap_or(&[])
    }
}

/// Splits a stream into TLS records. Returns the complete records and, if the stream does not end
/// on a record boundary or a header is invalid, the error at its offset.
///
/// A header error stops the split (what follows cannot be framed); a truncated last record is
/// reported as [`TlsErrorKind::TruncatedRecord`], so a caller reading a live stream can tell
/// "wait for more" ([`TlsError::is_truncated`]) from "garbage".
pub fn split_records(stream: &[u8]) -> (Vec<Record>, Option<TlsError>) {
    let mut records = Vec::new();
    let mut off = 0usize;
    while let Some(rest) = stream.get(off..).filter(|r| !r.is_empty()) {
        let h = match RecordHeader::parse(rest, off) {
            Ok(h) => h,
            Err(e) => return (records, Some(e)),
        };
        let total = h.total_len();
        if rest.len() < total {
            let kind = TlsErrorKind::TruncatedRecord {
                have: rest.len(),
                total,
            };
            return (records, Some(TlsError::new(off, kind)));
        }
        records.push(Record {
            content_type: h.content_type,
            version: h.version,
            offset: off,
            len: h.len,
        });
        off += total;
    }
    (records, None)
}

/// A handshake message header (RFC 8446 4): type and 24-bit body length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeHeader {
    pub msg_type: u8,
    /// Length of the body (without the 4-byte header).
    pub len: usize,
}

impl HandshakeHeader {
    /// Reads the handshake header at the start of `b` (`at` is its offset, for the error). Any
    /// 24-bit length reads: bounding it is the caller's choice ([`MAX_HANDSHAKE_MESSAGE_LEN`]).
    pub fn parse(b: &[u8], at: usize) -> Result<HandshakeHeader, TlsError> {
        let Some(h) = b.first_chunk::<HANDSHAKE_HEADER_LEN>() else {
            return Err(TlsError::new(
                at,
                TlsErrorKind::TruncatedHandshakeHeader { have: b.len() },
            ));
        };
        Ok(HandshakeHeader {
            msg_type: h[0],
            len: (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]),
        })
    }

    /// Header and body length together.
    pub fn total_len(&self) -> usize {
        HANDSHAKE_HEADER_LEN + self.len
    }

    /// Appends the 4 header bytes (the length keeps its low 24 bits).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.msg_type);
        out.extend_from_slice(&(self.len as u32).to_be_bytes()[1..]);
    }
}

/// The next whole handshake message of `b`: its header and body, or an error at `at` (the offset
/// of `b`) when `b` ends inside it.
pub fn handshake_message(b: &[u8], at: usize) -> Result<(HandshakeHeader, &[u8]), TlsError> {
    let h = HandshakeHeader::parse(b, at)?;
    let total = h.total_len();
    let body = b.get(HANDSHAKE_HEADER_LEN..total).ok_or(TlsError::new(
        at,
        TlsErrorKind::TruncatedHandshake {
            msg_type: h.msg_type,
            have: b.len(),
            total,
        },
    ))?;
    Ok((h, body))
}

/// A decoded handshake message (only what rdprobe reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    ClientHello {
        /// legacy_version
        version: u16,
        /// supported_versions extension, if present
        supported_versions: Vec<u16>,
        cipher_suites: Vec<u16>,
        sni: Option<String>,
    },
    ServerHello {
        version: u16,
        /// supported_versions extension (TLS 1.3 selected version), if present
        selected_version: Option<u16>,
        cipher_suite: u16,
    },
    /// DER certificates, leaf first (TLS <= 1.2 only: in 1.3 it is encrypted).
    Certificate {
        chain: Vec<Vec<u8>>,
    },
    ServerHelloDone,
    ClientKeyExchange,
    Finished,
    Other {
        msg_type: u8,
    },
}

/// A bounds-checked big-endian reader over a slice; every read returns None past the end.
struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Rd { buf, pos: 0 }
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|s| (usize::from(s[0]) << 16) | (usize::from(s[1]) << 8) | usize::from(s[2]))
    }
    /// A vector with a 1-, 2- or 3-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn vec24(&mut self) -> Option<&'a [u8]> {
        let n = self.u24()?;
        self.take(n)
    }
}

/// Decodes the handshake messages in the concatenated fragments of handshake records
/// (messages may span records). Stops at the first malformed message and reports its offset.
///
/// A message whose header announces more bytes than `fragments` holds is reported as
/// [`TlsErrorKind::TruncatedHandshake`] at its offset: when decoding record by record, feed the
/// records to a [`HandshakeReassembler`] instead, which carries such a message over to the next
/// record.
pub fn parse_handshakes(fragments: &[u8]) -> (Vec<Handshake>, Option<TlsError>) {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(rest) = fragments.get(off..).filter(|r| !r.is_empty()) {
        let (h, body) = match handshake_message(rest, off) {
            Ok(m) => m,
            Err(e) => return (out, Some(e)),
        };
        match parse_handshake_body(h.msg_type, body) {
            Ok(m) => out.push(m),
            Err(e) => return (out, Some(e.shifted(off + HANDSHAKE_HEADER_LEN))),
        }
        off += h.total_len();
    }
    (out, None)
}

/// Reassembles handshake messages that span records (RFC 8446 5.1: a message may be split over
/// several records and several messages may share one). Feed it the fragments of the plaintext
/// handshake records of one direction, in order.
///
/// INVARIANT: the buffer never holds more than [`MAX_HANDSHAKE_MESSAGE_LEN`] plus one record fragment.
#[derive(Clone, Debug, Default)]
pub struct HandshakeReassembler {
    buf: Vec<u8>,
    /// Bytes consumed before `buf[0]` (offsets in errors are relative to all bytes pushed).
    base: usize,
    failed: bool,
}

impl HandshakeReassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one record fragment; returns the messages completed by it and, on a malformed message,
    /// the error (its offset over all bytes pushed so far). After an error it returns nothing.
    pub fn push(&mut self, fragment: &[u8]) -> (Vec<Handshake>, Option<TlsError>) {
        let mut out = Vec::new();
        let err = self.push_raw(fragment, |h, body| {
            parse_handshake_body(h.msg_type, body).map(|m| out.push(m))
        });
        (out, err)
    }

    /// Adds one record fragment and hands each message it completes to `each` (header and body)
    /// without decoding it; an error of `each` (offset within the body) stops the reassembler as a
    /// malformed message does. Returns the first error, offsets over all bytes pushed so far.
    pub fn push_raw(
        &mut self,
        fragment: &[u8],
        mut each: impl FnMut(HandshakeHeader, &[u8]) -> Result<(), TlsError>,
    ) -> Option<TlsError> {
        if self.failed {
            return None;
        }
        self.buf.extend_from_slice(fragment);
        let mut off = 0usize;
        let err = loop {
            let rest = self.buf.get(off..).unwrap_or_default();
            let Ok(h) = HandshakeHeader::parse(rest, 0) else {
                break None;
            };
            let total = h.total_len();
            if total > MAX_HANDSHAKE_MESSAGE_LEN {
                let kind = TlsErrorKind::HandshakeTooLong(h.len);
                break Some(TlsError::new(self.base + off, kind));
            }
            let Some(body) = rest.get(HANDSHAKE_HEADER_LEN..total) else {
                break None;
            };
            if let Err(e) = each(h, body) {
                break Some(e.shifted(self.base + off + HANDSHAKE_HEADER_LEN));
            }
            off += total;
        };
        if err.is_some() {
            self.failed = true;
            self.buf = Vec::new();
        } else {
            self.buf.drain(..off);
            self.base += off;
        }
        err
    }

    /// Bytes of an incomplete message waiting for the next record.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The reassembler stopped at an error (or [`HandshakeReassembler::stop`]).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Stops the reassembler and drops what it buffers (e.g. the stream lost bytes).
    pub fn stop(&mut self) {
        self.failed = true;
        self.buf = Vec::new();
    }
}

/// Decodes one handshake body. Errors carry an offset within `body`.
fn parse_handshake_body(msg_type: u8, body: &[u8]) -> Result<Handshake, TlsError> {
    match msg_type {
        HS_CLIENT_HELLO => parse_client_hello(body),
        HS_SERVER_HELLO => parse_server_hello(body),
        HS_CERTIFICATE => parse_certificate(body).map(|chain| Handshake::Certificate { chain }),
        HS_SERVER_HELLO_DONE => Ok(Handshake::ServerHelloDone),
        HS_CLIENT_KEY_EXCHANGE => Ok(Handshake::ClientKeyExchange),
        HS_FINISHED => Ok(Handshake::Finished),
        t => Ok(Handshake::Other { msg_type: t }),
    }
}

/// ClientHello (RFC 8446 4.1.2, RFC 5246 7.4.1.2; extensions are optional before TLS 1.2).
fn parse_client_hello(body: &[u8]) -> Result<Handshake, TlsError> {
    let mut r = Rd::new(body);
    let short = |r: &Rd<'_>, field: &'static str| {
        TlsError::new(
            r.pos,
            TlsErrorKind::HelloTruncated {
                hello: "client hello",
                field,
            },
        )
    };
    let version = r.u16().ok_or_else(|| short(&r, "legacy_version"))?;
    r.take(32).ok_or_else(|| short(&r, "random"))?;
    r.vec8().ok_or_else(|| short(&r, "legacy_session_id"))?;
    let at = r.pos;
    let suites = r.vec16().ok_or_else(|| short(&r, "cipher_suites"))?;
    if suites.len() % 2 != 0 {
        return Err(TlsError::malformed(
            at,
            "client hello cipher_suites length is odd",
        ));
    }
    let cipher_suites = suites
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    r.vec8()
        .ok_or_else(|| short(&r, "legacy_compression_methods"))?;
    let mut supported_versions = Vec::new();
    let mut sni = None;
    if r.remaining() > 0 {
        let ext_base = r.pos + 2;
        let exts = r.vec16().ok_or_else(|| short(&r, "extensions"))?;
        for (ty, data, data_off) in extensions(exts)
            .map_err(|o| TlsError::malformed(ext_base + o, "malformed client hello extension"))?
        {
            match ty {
                EXT_SUPPORTED_VERSIONS => {
                    let mut e = Rd::new(data);
                    let list = e.vec8().filter(|l| l.len() % 2 == 0).ok_or_else(|| {
                        TlsError::malformed(
                            ext_base + data_off,
                            "malformed supported_versions extension",
                        )
                    })?;
                    supported_versions = list
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect();
                }
                EXT_SERVER_NAME => {
                    sni = parse_sni(data);
                }
                _ => {}
            }
        }
    }
    Ok(Handshake::ClientHello {
        version,
        supported_versions,
        cipher_suites,
        sni,
    })
}

/// The first host_name of a server_name extension (RFC 6066 3).
fn parse_sni(data: &[u8]) -> Option<String> {
    let mut e = Rd::new(data);
    let list = e.vec16()?;
    let mut l = Rd::new(list);
    while l.remaining() > 0 {
        let name_type = l.u8()?;
        let name = l.vec16()?;
        if name_type == 0 {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    None
}

/// Splits an extensions block into (type, data, offset of data within the block).
/// Error: offset of the malformed extension.
#[allow(clippy::type_complexity)]
fn extensions(block: &[u8]) -> Result<Vec<(u16, &[u8], usize)>, usize> {
    let mut r = Rd::new(block);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let at = r.pos;
        let ty = r.u16().ok_or(at)?;
        let data = r.vec16().ok_or(at)?;
        out.push((ty, data, at + 4));
    }
    Ok(out)
}

/// ServerHello (RFC 8446 4.1.3; a HelloRetryRequest has the same layout and is reported as one).
fn parse_server_hello(body: &[u8]) -> Result<Handshake, TlsError> {
    let mut r = Rd::new(body);
    let short = |r: &Rd<'_>, field: &'static str| {
        TlsError::new(
            r.pos,
            TlsErrorKind::HelloTruncated {
                hello: "server hello",
                field,
            },
        )
    };
    let version = r.u16().ok_or_else(|| short(&r, "legacy_version"))?;
    r.take(32).ok_or_else(|| short(&r, "random"))?;
    r.vec8()
        .ok_or_else(|| short(&r, "legacy_session_id_echo"))?;
    let cipher_suite = r.u16().ok_or_else(|| short(&r, "cipher_suite"))?;
    r.u8()
        .ok_or_else(|| short(&r, "legacy_compression_method"))?;
    let mut selected_version = None;
    if r.remaining() > 0 {
        let ext_base = r.pos + 2;
        let exts = r.vec16().ok_or_else(|| short(&r, "extensions"))?;
        for (ty, data, data_off) in extensions(exts)
            .map_err(|o| TlsError::malformed(ext_base + o, "malformed server hello extension"))?
        {
            if ty == EXT_SUPPORTED_VERSIONS {
                let v = data
                    .first_chunk::<2>()
                    .filter(|_| data.len() == 2)
                    .ok_or_else(|| {
                        TlsError::malformed(
                            ext_base + data_off,
                            "malformed supported_versions extension",
                        )
                    })?;
                selected_version = Some(u16::from_be_bytes(*v));
            }
        }
    }
    Ok(Handshake::ServerHello {
        version,
        selected_version,
        cipher_suite,
    })
}

/// Certificate, TLS <= 1.2 layout (RFC 5246 7.4.2): `opaque ASN.1Cert<1..2^24-1>; ASN.1Cert
/// certificate_list<0..2^24-1>`. Falls back to the TLS 1.3 layout when the first byte is a
/// plausible certificate_request_context length and the 1.2 reading fails.
pub fn parse_certificate(body: &[u8]) -> Result<Vec<Vec<u8>>, TlsError> {
    match parse_certificate_tls12(body) {
        Ok(c) => Ok(c),
        Err(e) => parse_certificate_tls13(body).map_err(|_| e),
    }
}

fn parse_certificate_tls12(body: &[u8]) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut r = Rd::new(body);
    let list = r
        .vec24()
        .ok_or_else(|| TlsError::malformed(0, "certificate list length exceeds the message"))?;
    if r.remaining() != 0 {
        return Err(TlsError::malformed(
            r.pos,
            "trailing bytes after the certificate list",
        ));
    }
    let mut l = Rd::new(list);
    let mut chain = Vec::new();
    while l.remaining() > 0 {
        let at = 3 + l.pos;
        let cert = l.vec24().ok_or_else(|| {
            TlsError::malformed(at, "certificate length exceeds the certificate list")
        })?;
        chain.push(cert.to_vec());
    }
    Ok(chain)
}

/// Certificate, TLS 1.3 layout (RFC 8446 4.4.2): `opaque certificate_request_context<0..2^8-1>;
/// CertificateEntry certificate_list<0..2^24-1>` where each entry is `opaque cert_data<1..2^24-1>;
/// Extension extensions<0..2^16-1>`. Returns the DER certificates, leaf first. Errors carry an
/// offset within `body` (the message body, without the 4-byte handshake header).
pub fn parse_certificate_tls13(body: &[u8]) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut r = Rd::new(body);
    r.vec8()
        .ok_or_else(|| TlsError::malformed(0, "certificate_request_context exceeds the message"))?;
    let list_off = r.pos + 3;
    let list = r
        .vec24()
        .ok_or_else(|| TlsError::malformed(r.pos, "certificate list length exceeds the message"))?;
    if r.remaining() != 0 {
        return Err(TlsError::malformed(
            r.pos,
            "trailing bytes after the certificate list",
        ));
    }
    let mut l = Rd::new(list);
    let mut chain = Vec::new();
    while l.remaining() > 0 {
        let at = list_off + l.pos;
        let cert = l.vec24().ok_or_else(|| {
            TlsError::malformed(at, "certificate length exceeds the certificate list")
        })?;
        let at = list_off + l.pos;
        l.vec16().ok_or_else(|| {
            TlsError::malformed(
                at,
                "certificate entry extensions exceed the certificate list",
            )
        })?;
        chain.push(cert.to_vec());
    }
    Ok(chain)
}

/// Runs the readers of this module over `data` and checks the contract: headers that read emit
/// back as themselves, records split by [`split_records`] tile the stream, and the reassembler
/// gives the same messages whether the bytes come at once or in pieces.
pub(crate) fn exercise(data: &[u8]) {
    if let Ok(h) = RecordHeader::parse(data, 0) {
        let mut again = Vec::new();
        h.emit(&mut again);
        assert_eq!(
            again.as_slice(),
            &data[..RECORD_HEADER_LEN],
            "record header"
        );
    }
    let (records, err) = split_records(data);
    let framed: usize = records.iter().map(|r| r.len + RECORD_HEADER_LEN).sum();
    assert_eq!(framed, err.map_or(data.len(), |e| e.at), "records tile");
    if let Ok((h, body)) = handshake_message(data, 0) {
        let mut again = Vec::new();
        h.emit(&mut again);
        again.extend_from_slice(body);
        assert_eq!(again.as_slice(), &data[..h.total_len()], "handshake header");
    }
    let (whole, err) = parse_handshakes(data);
    let mut r = HandshakeReassembler::new();
    let mut pieces = Vec::new();
    let mut rerr = None;
    for chunk in data.chunks(7) {
        let (m, e) = r.push(chunk);
        pieces.extend(m);
        rerr = rerr.or(e);
    }
    // Without a length above the reassembler's bound, both read the same messages.
    if rerr.is_none() {
        let n = pieces.len();
        assert_eq!(whole.get(..n), Some(pieces.as_slice()), "reassembled");
        if err.is_none() {
            assert_eq!(whole.len(), n, "reassembled all");
        }
    }
    assert!(
        r.pending() <= MAX_HANDSHAKE_MESSAGE_LEN + 7,
        "reassembler bound"
    );
    for m in whole.iter().chain(&pieces) {
        if let Handshake::Certificate { chain } = m {
            assert!(chain.iter().map(Vec::len).sum::<usize>() <= data.len());
        }
    }
    let _ = parse_certificate_tls13(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(ct: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        RecordHeader {
            content_type: ct,
            version: 0x0303,
            len: body.len(),
        }
        .emit(&mut v);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn the_record_rule() {
        let ok = |b: &[u8]| RecordHeader::parse(b, 9).map(|h| h.content_type);
        // heartbeat records frame like the others
        assert_eq!(ok(&[24, 3, 3, 0, 3]), Ok(24));
        // the record version is legacy: any 3.x frames
        assert_eq!(ok(&[23, 3, 7, 0, 0]), Ok(23));
        let err = |b: &[u8]| RecordHeader::parse(b, 9).unwrap_err();
        assert_eq!(err(&[25, 3, 3, 0, 0]).kind, TlsErrorKind::ContentType(25));
        assert_eq!(err(&[22, 2, 0, 0, 0]).kind, TlsErrorKind::Version(0x0200));
        // an SSLv2-compatible ClientHello: 2-byte length with the high bit, then msg type 1
        assert_eq!(
            err(&[0x80, 0x2e, 0x01, 0x03, 0x01]).kind,
            TlsErrorKind::Sslv2
        );
        let e = err(&[23, 3, 3, 0x48, 0x01]);
        assert_eq!((e.at, e.kind), (9, TlsErrorKind::RecordTooLong(18433)));
        assert_eq!(
            e.to_string(),
            "TLS record length 18433 exceeds 18432 at byte 9"
        );
        assert!(err(&[23, 3]).is_truncated());
    }

    #[test]
    fn a_message_split_over_heartbeat_interleaved_records_reassembles() {
        let mut ch = vec![HS_SERVER_HELLO_DONE, 0, 0, 0, HS_FINISHED, 0, 0, 2, 7, 7];
        let tail = ch.split_off(6);
        let mut stream = record(CT_HANDSHAKE, &ch);
        stream.extend(record(CT_HEARTBEAT, &[1, 0, 0]));
        stream.extend(record(CT_HANDSHAKE, &tail));
        let (recs, err) = split_records(&stream);
        assert_eq!(err, None);
        assert_eq!(recs.len(), 3);
        let mut r = HandshakeReassembler::new();
        let mut got = Vec::new();
        for rec in recs.iter().filter(|r| r.content_type == CT_HANDSHAKE) {
            let (m, e) = r.push(rec.fragment(&stream));
            assert_eq!(e, None);
            got.extend(m);
        }
        assert_eq!(got, vec![Handshake::ServerHelloDone, Handshake::Finished]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn push_raw_errors_stop_the_reassembler_with_offsets_over_all_bytes() {
        let mut r = HandshakeReassembler::new();
        let e = r.push_raw(&[20, 0, 0, 1, 9, 20, 0, 0, 2, 1, 1], |h, body| {
            if body.len() == 2 {
                Err(TlsError::malformed(1, "second"))
            } else {
                assert_eq!(h.msg_type, 20);
                Ok(())
            }
        });
        assert_eq!(e, Some(TlsError::malformed(5 + 4 + 1, "second")));
        assert!(r.failed());
        assert_eq!(r.push_raw(&[20, 0, 0, 0], |_, _| Ok(())), None);
    }

    proptest! {
        #[test]
        fn record_headers_round_trip(ct in 20u8..=24, minor: u8, len in 0usize..=MAX_FRAGMENT_LEN) {
            let h = RecordHeader { content_type: ct, version: 0x0300 | u16::from(minor), len };
            let mut b = Vec::new();
            h.emit(&mut b);
            prop_assert_eq!(RecordHeader::parse(&b, 0), Ok(h));
        }

        #[test]
        fn handshake_headers_round_trip(msg_type: u8, len in 0usize..(1 << 24)) {
            let h = HandshakeHeader { msg_type, len };
            let mut b = Vec::new();
            h.emit(&mut b);
            prop_assert_eq!(HandshakeHeader::parse(&b, 0), Ok(h));
        }

        #[test]
        fn records_of_any_bodies_split_back(bodies in proptest::collection::vec((20u8..=24, proptest::collection::vec(any::<u8>(), 0..40)), 0..6)) {
            let mut s = Vec::new();
            for (ct, b) in &bodies {
                s.extend(record(*ct, b));
            }
            let (recs, err) = split_records(&s);
            prop_assert_eq!(err, None);
            prop_assert_eq!(recs.len(), bodies.len());
            for (r, (ct, b)) in recs.iter().zip(&bodies) {
                prop_assert_eq!(r.content_type, *ct);
                prop_assert_eq!(r.fragment(&s), b.as_slice());
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            exercise(&data);
        }

        #[test]
        fn never_panics_on_framed_handshakes(msg_type in 0u8..25, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = Vec::new();
            HandshakeHeader { msg_type, len: body.len() }.emit(&mut data);
            data.extend(body);
            exercise(&data);
        }
    }
}
