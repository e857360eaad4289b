//! Streaming pcap / pcapng record reader: yields packet records and Decryption Secrets Blocks.
//!
//! Formats: libpcap (both byte orders, microsecond and nanosecond magic; <https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html>)
//! and pcapng (several sections and interfaces, per-interface `if_tsresol` / `if_tsoffset`,
//! Enhanced / Simple / obsolete Packet Blocks, Decryption Secrets Blocks;
//! <https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html>).
//!
//! INVARIANT: no allocation is sized from a length read from the file unless that length was first
//! checked against [`MAX_BLOCK_LEN`] / [`MAX_FRAME_LEN`]; buffers grow only as bytes actually arrive.

use std::io::{self, Read};

use bytes::Bytes;

use super::map::Mapped;
use super::CaptureError;

/// Largest packet record accepted (captured bytes), as Wireshark's `WTAP_MAX_PACKET_SIZE_STANDARD`.
pub const MAX_FRAME_LEN: u32 = 262_144;
/// Largest pcapng block accepted (bytes, including header and trailer): a packet plus generous
/// options, or a large Decryption Secrets Block.
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;
/// Most interfaces accepted in one pcapng section.
pub const MAX_INTERFACES: usize = 4096;

// pcapng block types (pcapng draft section 10.1): pcap-file's, and the Decryption Secrets Block's
// (which pcap-file does not know) from the writer. pcap-file's parser is not used for the records
// themselves: its errors carry no byte offset or frame number (`InvalidField("...")`), it knows no
// Decryption Secrets Block, and it does not read classic pcap and pcapng through one window or map
// that this reader hands out slices of.
use crate::capture::writer::{DSB_TYPE as BT_DSB, SECRETS_TYPE_TLS_KEYLOG};
use pcap_file::pcapng::blocks::{
    ENHANCED_PACKET_BLOCK as BT_EPB, INTERFACE_DESCRIPTION_BLOCK as BT_IDB, PACKET_BLOCK as BT_OPB,
    SECTION_HEADER_BLOCK as BT_SHB, SIMPLE_PACKET_BLOCK as BT_SPB,
};
/// Decryption Secrets Block secrets type "TLSK": an SSLKEYLOGFILE text.
pub const SECRETS_TLS_KEYLOG: u32 = SECRETS_TYPE_TLS_KEYLOG;

/// One packet record.
#[derive(Debug)]
pub struct Packet<'a> {
    /// 1-based frame number (counts packet records only, like Wireshark).
    pub frame: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Microseconds since the Unix epoch.
    pub t_us: u64,
    /// LINKTYPE_* of the record's interface.
    pub linktype: u32,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Original length on the wire.
    pub orig_len: u32,
    /// What rdprobe's client rejected, from a packet comment rdprobe wrote
    /// ([`crate::trace::CLIENT_REJECTED_COMMENT`]).
    pub client_rejected: Option<&'a [u8]>,
    /// The stage after which rdprobe stopped on purpose, from a packet comment rdprobe wrote
    /// ([`crate::trace::STOPPED_AFTER_COMMENT`]).
    pub stopped_after: Option<&'a [u8]>,
    /// The mapped file `data` is a slice of, when the file is read through a map: slices of `data`
    /// can be kept without a copy ([`Bytes::slice_ref`]).
    pub backing: Option<&'a Bytes>,
}

/// What the reader found next.
#[derive(Debug)]
pub enum Record<'a> {
    Packet(Packet<'a>),
    /// A Decryption Secrets Block: (secrets type, data).
    Secrets(u32, &'a [u8]),
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// if_tsoffset, seconds.
    offset_sec: i64,
}

enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        linktype: u32,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// Streaming record reader over any `Read`.
pub struct RecordReader<R: Read> {
    src: Window<R>,
    format: Format,
    /// Byte offset of the next unread byte.
    offset: u64,
    frame: u64,
    done: bool,
    last_t_us: u64,
}

fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    let a = [b[at], b[at + 1]];
    if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

/// First size of the read window (bytes): one `read` call fills at most this much at a time.
const WINDOW_LEN: usize = 1024 * 1024;

/// A read window over the input: large reads straight into one reusable buffer, records handed out
/// as slices of it (no copy per record).
///
/// Hand-written rather than `BufReader` + `Read::take`: that pair copies every byte a second time
/// (from the `BufReader`'s buffer into the record buffer), which was the reader's largest user-space
/// cost on big captures. `mmap` is not used: a capture still being written (or truncated under us)
/// would turn into SIGBUS.
///
/// INVARIANT: `start <= end <= buf.len()`; `cur` lies within `..start` (the last record taken);
/// beyond its first [`WINDOW_LEN`] the buffer grows only when it is entirely full of bytes that
/// actually arrived.
struct Window<R: Read> {
    input: R,
    buf: Vec<u8>,
    /// First unconsumed byte.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
    /// The bytes handed out by the last `take`.
    cur: (usize, usize),
    /// While set, the bytes come from this map of the file, and `start` / `cur` are offsets into it
    /// (`buf` is unused); at its end the window goes on with `read` (the file may have grown).
    map: Option<Mapped>,
}

/// Pages of a mapped file this far behind the reader are released (bytes; see
/// [`Mapped::release_before`]): far enough that conversations still open rarely read them back,
/// near enough to keep the resident set small.
const MAP_RELEASE_LAG: usize = 16 * 1024 * 1024;
/// How often (bytes read) released pages are given back.
const MAP_RELEASE_STEP: usize = 4 * 1024 * 1024;
/// A page of memory (bytes), at least.
const PAGE: usize = 4096;

/// Pages of a mapped capture about to be released: their addresses, and where the map ends.
#[derive(Clone, Debug)]
pub struct MapRelease {
    pub due: std::ops::Range<usize>,
    pub map_end: usize,
}

impl MapRelease {
    /// Whether `b` is a slice of the map beyond the pages due (kept as it is).
    pub fn after(&self, b: &[u8]) -> bool {
        (self.due.end..self.map_end).contains(&(b.as_ptr() as usize))
    }
}

fn shrank() -> io::Error {
    io::Error::other("the file shrank while it was being read")
}

impl<R: Read> Window<R> {
    fn new(input: R) -> Self {
        Window {
            input,
            buf: Vec::new(),
            start: 0,
            end: 0,
            cur: (0, 0),
            map: None,
        }
    }

    /// Takes `n` bytes from the map, or leaves map mode when the map ends within them.
    fn take_mapped(&mut self, n: usize) -> io::Result<Option<usize>> {
        let Some(m) = &mut self.map else {
            return Ok(None);
        };
        let len = m.bytes.len();
        if len - self.start >= n {
            // Touching the last byte taken makes a file that shrank under the map show here, at the
            // record it cut, rather than later in whoever reads the record (see `map`). Only a
            // take that ends in another page than it starts can find a page gone; the byte is
            // next to the next record's header, which is read next anyway.
            let last = self.start + n;
            if n > 0 && (last - 1) / PAGE != self.start / PAGE {
                std::hint::black_box(m.bytes[last - 1]);
            }
            if m.shrunk() {
                return Err(shrank());
            }
            self.cur = (self.start, last);
            self.start = last;
            // The next record's block and packet headers: asked for now, they are in cache when
            // it is parsed (a map meets each record's headers cold). Only its first lines: most
            // payload bytes are never read, and prefetching them spends the bandwidth the map saves.
            crate::cpu::prefetch_bytes(&m.bytes[last..]);
            return Ok(Some(n));
        }
        // The map ends within this take: its unread tail moves to the buffer, and `read` goes on
        // from where the map ends (the input was positioned there when the map was made).
        self.buf = m.bytes[self.start..].to_vec();
        self.end = self.buf.len();
        self.start = 0;
        self.map = None;
        Ok(None)
    }

    /// A hint for pcapng: asks for the end of the block that follows the last take (its trailer,
    /// which shares a line with the header of the block after it). Reading a block's trailer is
    /// the first touch of that line; asked for a record ahead, it is in cache by then. The length
    /// is read from the following block's header, which the last take's prefetch brought in.
    fn prefetch_following_block_end(&self, big_endian: bool) {
        let Some(m) = &self.map else {
            return;
        };
        let Some(len) = m.bytes.get(self.start + 4..self.start + 8) else {
            return;
        };
        let end = self.start + u32_at(len, 0, big_endian) as usize;
        if let Some(tail) = end.checked_sub(4).and_then(|at| m.bytes.get(at..)) {
            crate::cpu::prefetch_bytes(tail);
        }
    }

    /// The addresses of the map's pages due to be released (see [`MAP_RELEASE_LAG`]), if any.
    fn release_due(&self) -> Option<MapRelease> {
        let m = self.map.as_ref()?;
        let below = self.start.checked_sub(MAP_RELEASE_LAG)?;
        if below < m.released() + MAP_RELEASE_STEP {
            return None;
        }
        let base = m.bytes.as_ptr() as usize;
        Some(MapRelease {
            due: base + m.released()..base + below,
            map_end: base + m.bytes.len(),
        })
    }

    /// When pages are due (see [`Window::release_due`]): lets `before` copy the slices it holds of
    /// them, then releases them.
    fn release(&mut self, before: impl FnOnce(&MapRelease)) {
        let Some(r) = self.release_due() else {
            return;
        };
        before(&r);
        if let Some(m) = &mut self.map {
            m.release_before(r.due.end - m.bytes.as_ptr() as usize);
        }
    }

    /// The mapped file the bytes of the last `take` are a slice of, if any.
    fn backing(&self) -> Option<&Bytes> {
        self.map.as_ref().map(|m| &m.bytes)
    }

    /// Consumes up to `n` bytes (fewer only at the end of the input); returns how many. They are
    /// available through [`Window::cur`] until the next `take`.
    fn take(&mut self, n: u64) -> io::Result<usize> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(got) = self.take_mapped(n)? {
            return Ok(got);
        }
        while self.end - self.start < n {
            if self.end == self.buf.len() {
                if self.start > 0 {
                    // Keep the unconsumed tail (less than one record) at the front.
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else if self.buf.is_empty() {
                    self.buf = vec![0; WINDOW_LEN];
                } else {
                    // Full of real bytes: grow (the callers bound `n` by MAX_BLOCK_LEN).
                    let len = self.buf.len() * 2;
                    self.buf.resize(len, 0);
                }
            }
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(got) => self.end += got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let got = n.min(self.end - self.start);
        self.cur = (self.start, self.start + got);
        self.start += got;
        Ok(got)
    }

    /// The bytes of the last `take`.
    fn cur(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m.bytes[self.cur.0..self.cur.1],
            None => &self.buf[self.cur.0..self.cur.1],
        }
    }
}

fn describe_magic(m: &[u8]) -> String {
    if m.starts_with(&[0x89, b'P', b'N', b'G']) {
        return "a png image".into();
    }
    if m.starts_with(b"%PDF") {
        return "a pdf document".into();
    }
    if m.starts_with(&[0x1f, 0x8b]) {
        return "gzip data (decompress it first)".into();
    }
    if m.starts_with(b"PK") {
        return "a zip archive".into();
    }
    let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    format!("unknown magic {}", hex.join(" "))
}

impl<R: Read> RecordReader<R> {
    /// Reads the file header (pcap global header or the first pcapng Section Header Block).
    pub fn new(input: R) -> Result<Self, CaptureError> {
        Self::with_window(Window::new(input))
    }

    /// Like [`RecordReader::new`], with the file's first bytes read from `map` (see
    /// [`super::map::map_file`]; `input` is positioned at the map's end): records are then slices
    /// of the map and carry [`Packet::backing`].
    pub fn with_map(input: R, map: Option<Mapped>) -> Result<Self, CaptureError> {
        let mut src = Window::new(input);
        src.map = map;
        Self::with_window(src)
    }

    /// Reads the file header from `src`.
    fn with_window(mut src: Window<R>) -> Result<Self, CaptureError> {
        let got = src.take(4).map_err(|e| CaptureError::Io {
            offset: 0,
            source: e,
        })?;
        if got < 4 {
            return Err(CaptureError::Truncated {
                offset: 0,
                frame: None,
                what: "file header",
                need: 4,
                have: got as u64,
            });
        }
        let b = src.cur();
        let magic = [b[0], b[1], b[2], b[3]];
        let mut r = RecordReader {
            src,
            format: Format::PcapNg {
                big_endian: false,
                interfaces: Vec::new(),
            },
            offset: 0,
            frame: 0,
            done: false,
            last_t_us: 0,
        };
        match magic {
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => {
                let big_endian = magic[0] == 0xa1;
                let nanos = magic == [0xa1, 0xb2, 0x3c, 0x4d] || magic == [0x4d, 0x3c, 0xb2, 0xa1];
                let got = r.src.take(20).map_err(|e| CaptureError::Io {
                    offset: 4,
                    source: e,
                })?;
                if got < 20 {
                    return Err(CaptureError::Truncated {
                        offset: 0,
                        frame: None,
                        what: "pcap global header",
                        need: 24,
                        have: 4 + got as u64,
                    });
                }
                // version(2+2) thiszone(4) sigfigs(4) snaplen(4) network(4); the upper bits of
                // `network` may carry FCS information (pcap draft 4): keep the low 16 bits.
                let linktype = u32_at(r.src.cur(), 16, big_endian) & 0xFFFF;
                r.format = Format::Pcap {
                    big_endian,
                    nanos,
                    linktype,
                };
                r.offset = 24;
                Ok(r)
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                r.read_shb_after_type(0, None)?;
                Ok(r)
            }
            _ => Err(CaptureError::NotACapture {
                what: describe_magic(&magic),
            }),
        }
    }

    /// Byte offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// When the file is mapped and the reader left pages far behind: hands their addresses to
    /// `before`, which copies the slices of them still held (touching released pages maps them
    /// again, as much as a whole large page-cache folio each), then releases them.
    pub fn release_map(&mut self, before: impl FnOnce(&MapRelease)) {
        self.src.release(before);
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frame
    }

    /// Reads a Section Header Block starting at `start` whose 4-byte type was already consumed
    /// (and, when `len_bytes` is given, its length field too, byte order still unknown).
    fn read_shb_after_type(
        &mut self,
        start: u64,
        len_bytes: Option<[u8; 4]>,
    ) -> Result<(), CaptureError> {
        let need = if len_bytes.is_some() { 4 } else { 8 };
        let got = self.src.take(need).map_err(|e| CaptureError::Io {
            offset: start + 12 - need,
            source: e,
        })?;
        if (got as u64) < need {
            return Err(CaptureError::Truncated {
                offset: start,
                frame: self.frame_hint(),
                what: "pcapng section header block",
                need: 12,
                have: 12 - need + got as u64,
            });
        }
        let (len, bom) = match len_bytes {
            Some(l) => (
                l,
                [
                    self.src.cur()[0],
                    self.src.cur()[1],
                    self.src.cur()[2],
                    self.src.cur()[3],
                ],
            ),
            None => (
                [
                    self.src.cur()[0],
                    self.src.cur()[1],
                    self.src.cur()[2],
                    self.src.cur()[3],
                ],
                [
                    self.src.cur()[4],
                    self.src.cur()[5],
                    self.src.cur()[6],
                    self.src.cur()[7],
                ],
            ),
        };
        let big_endian = match bom {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => {
                return Err(CaptureError::Malformed {
                    offset: start + 8,
                    frame: self.frame_hint(),
                    what: "pcapng section header block",
                    detail: format!(
                        "bad byte-order magic {:02x}{:02x}{:02x}{:02x}",
                        bom[0], bom[1], bom[2], bom[3]
                    ),
                })
            }
        };
        let total = u32_at(&len, 0, big_endian);
        self.check_block_len(start, total, 28)?;
        // Skip the rest of the block (version, section length, options, trailer).
        let rest = u64::from(total) - 12;
        let got = self.src.take(rest).map_err(|e| CaptureError::Io {
            offset: start + 12,
            source: e,
        })?;
        if (got as u64) < rest {
            return Err(CaptureError::Truncated {
                offset: start,
                frame: self.frame_hint(),
                what: "pcapng section header block",
                need: u64::from(total),
                have: 12 + got as u64,
            });
        }
        self.format = Format::PcapNg {
            big_endian,
            interfaces: Vec::new(),
        };
        self.offset = start + u64::from(total);
        Ok(())
    }

    fn frame_hint(&self) -> Option<u64> {
        if self.frame == 0 {
            None
        } else {
            Some(self.frame)
        }
    }

    fn check_block_len(&self, offset: u64, total: u32, min: u32) -> Result<(), CaptureError> {
        if total < min || !total.is_multiple_of(4) || total > MAX_BLOCK_LEN {
            return Err(CaptureError::Malformed {
                offset,
                frame: self.frame_hint(),
                what: "pcapng block",
                detail: format!(
                    "block length {total} is invalid (must be a multiple of 4 between {min} and {MAX_BLOCK_LEN})"
                ),
            });
        }
        Ok(())
    }

    /// The next record, `Ok(None)` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        let res = match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        match res {
            Ok(Some(kind)) => Ok(Some(self.materialize(kind))),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn materialize(&self, k: RecKind) -> Record<'_> {
        match k {
            RecKind::Packet {
                offset,
                t_us,
                linktype,
                data_at,
                data_len,
                orig_len,
                rejected,
                stopped,
            } => Record::Packet(Packet {
                frame: self.frame,
                offset,
                t_us,
                linktype,
                data: &self.src.cur()[data_at..data_at + data_len],
                orig_len,
                client_rejected: rejected.map(|(a, n)| &self.src.cur()[a..a + n]),
                stopped_after: stopped.map(|(a, n)| &self.src.cur()[a..a + n]),
                backing: self.src.backing(),
            }),
            RecKind::Secrets {
                stype,
                data_at,
                data_len,
            } => Record::Secrets(stype, &self.src.cur()[data_at..data_at + data_len]),
        }
    }

    fn next_pcap(&mut self) -> Result<Option<RecKind>, CaptureError> {
        let Format::Pcap {
            big_endian,
            nanos,
            linktype,
        } = self.format
        else {
            return Ok(None);
        };
        let start = self.offset;
        let got = self.src.take(16).map_err(|e| CaptureError::Io {
            offset: start,
            source: e,
        })?;
        if got == 0 {
            return Ok(None);
        }
        let frame = self.frame + 1;
        if got < 16 {
            return Err(CaptureError::Truncated {
                offset: start,
                frame: Some(frame),
                what: "pcap record header",
                need: 16,
                have: got as u64,
            });
        }
        let sec = u32_at(self.src.cur(), 0, big_endian);
        let frac = u32_at(self.src.cur(), 4, big_endian);
        let incl = u32_at(self.src.cur(), 8, big_endian);
        let orig = u32_at(self.src.cur(), 12, big_endian);
        if incl > MAX_FRAME_LEN {
            return Err(CaptureError::Malformed {
                offset: start,
                frame: Some(frame),
                what: "pcap record header",
                detail: format!("captured length {incl} exceeds the limit of {MAX_FRAME_LEN}"),
            });
        }
        let got = self
            .src
            .take(u64::from(incl))
            .map_err(|e| CaptureError::Io {
                offset: start + 16,
                source: e,
            })?;
        if got < incl as usize {
            return Err(CaptureError::Truncated {
                offset: start,
                frame: Some(frame),
                what: "pcap record",
                need: 16 + u64::from(incl),
                have: 16 + got as u64,
            });
        }
        self.frame = frame;
        self.offset = start + 16 + u64::from(incl);
        let frac_us = if nanos {
            u64::from(frac) / 1000
        } else {
            u64::from(frac)
        };
        let t_us = u64::from(sec) * 1_000_000 + frac_us;
        self.last_t_us = t_us;
        Ok(Some(RecKind::Packet {
            offset: start,
            t_us,
            linktype,
            data_at: 0,
            data_len: incl as usize,
            orig_len: orig.max(incl),
            rejected: None,
            stopped: None,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<RecKind>, CaptureError> {
        loop {
            let big_endian = match &self.format {
                Format::PcapNg { big_endian, .. } => *big_endian,
                Format::Pcap { .. } => return Ok(None),
            };
            let start = self.offset;
            let got = self.src.take(8).map_err(|e| CaptureError::Io {
                offset: start,
                source: e,
            })?;
            if got == 0 {
                return Ok(None);
            }
            if got == 8 && u32_at(self.src.cur(), 0, false) == BT_SHB {
                // A new section: its byte order may differ from the previous one.
                let len = [
                    self.src.cur()[4],
                    self.src.cur()[5],
                    self.src.cur()[6],
                    self.src.cur()[7],
                ];
                self.read_shb_after_type(start, Some(len))?;
                continue;
            }
            if got < 8 {
                return Err(CaptureError::Truncated {
                    offset: start,
                    frame: self.frame_hint(),
                    what: "pcapng block header",
                    need: 8,
                    have: got as u64,
                });
            }
            let btype = u32_at(self.src.cur(), 0, big_endian);
            let total = u32_at(self.src.cur(), 4, big_endian);
            self.check_block_len(start, total, 12)?;
            // Read body + trailing length.
            let rest = u64::from(total) - 8;
            let got = self.src.take(rest).map_err(|e| CaptureError::Io {
                offset: start + 8,
                source: e,
            })?;
            if (got as u64) < rest {
                return Err(CaptureError::Truncated {
                    offset: start,
                    frame: if btype == BT_EPB || btype == BT_SPB || btype == BT_OPB {
                        Some(self.frame + 1)
                    } else {
                        self.frame_hint()
                    },
                    what: "pcapng block",
                    need: u64::from(total),
                    have: 8 + got as u64,
                });
            }
            self.src.prefetch_following_block_end(big_endian);
            let body_len = rest as usize - 4;
            let trailer = u32_at(self.src.cur(), body_len, big_endian);
            if trailer != total {
                return Err(CaptureError::Malformed {
                    offset: start,
                    frame: self.frame_hint(),
                    what: "pcapng block",
                    detail: format!(
                        "trailing block length {trailer} does not match leading length {total}"
                    ),
                });
            }
            self.offset = start + u64::from(total);
            match btype {
                BT_IDB => self.read_idb(start, body_len, big_endian)?,
                BT_EPB | BT_OPB => {
                    let (hdr, ifid) = if btype == BT_EPB {
                        if body_len < 20 {
                            return Err(self.short_block(start, "enhanced packet block"));
                        }
                        (20usize, u32_at(self.src.cur(), 0, big_endian))
                    } else {
                        if body_len < 20 {
                            return Err(self.short_block(start, "packet block"));
                        }
                        (20usize, u32::from(u16_at(self.src.cur(), 0, big_endian)))
                    };
                    let ts_hi = u32_at(self.src.cur(), 4, big_endian);
                    let ts_lo = u32_at(self.src.cur(), 8, big_endian);
                    let cap = u32_at(self.src.cur(), 12, big_endian);
                    let orig = u32_at(self.src.cur(), 16, big_endian);
                    let frame = self.frame + 1;
                    if cap as usize > body_len - hdr || cap > MAX_FRAME_LEN {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            frame: Some(frame),
                            what: "enhanced packet block",
                            detail: format!(
                                "captured length {cap} exceeds the block body ({} bytes)",
                                body_len - hdr
                            ),
                        });
                    }
                    let iface = self.interface(start, frame, ifid)?;
                    let ts = (u64::from(ts_hi) << 32) | u64::from(ts_lo);
                    let t_us = ts_to_us(ts, iface);
                    self.frame = frame;
                    self.last_t_us = t_us;
                    let opts_at = hdr + (cap as usize).div_ceil(4) * 4;
                    let observer = |marker: &str| {
                        if btype == BT_EPB && opts_at < body_len {
                            marked_comment(
                                &self.src.cur()[opts_at..body_len],
                                big_endian,
                                marker.as_bytes(),
                            )
                            .map(|(a, n)| (opts_at + a, n))
                        } else {
                            None
                        }
                    };
                    let rejected = observer(crate::trace::CLIENT_REJECTED_COMMENT);
                    let stopped = observer(crate::trace::STOPPED_AFTER_COMMENT);
                    return Ok(Some(RecKind::Packet {
                        offset: start,
                        t_us,
                        linktype: iface.linktype,
                        data_at: hdr,
                        data_len: cap as usize,
                        orig_len: orig.max(cap),
                        rejected,
                        stopped,
                    }));
                }
                BT_SPB => {
                    if body_len < 4 {
                        return Err(self.short_block(start, "simple packet block"));
                    }
                    let frame = self.frame + 1;
                    let orig = u32_at(self.src.cur(), 0, big_endian);
                    let iface = self.interface(start, frame, 0)?;
                    let cap = (body_len - 4)
                        .min(orig as usize)
                        .min(MAX_FRAME_LEN as usize);
                    self.frame = frame;
                    return Ok(Some(RecKind::Packet {
                        offset: start,
                        t_us: self.last_t_us,
                        linktype: iface.linktype,
                        data_at: 4,
                        data_len: cap,
                        orig_len: orig.max(cap as u32),
                        rejected: None,
                        stopped: None,
                    }));
                }
                BT_DSB => {
                    if body_len < 8 {
                        return Err(self.short_block(start, "decryption secrets block"));
                    }
                    let stype = u32_at(self.src.cur(), 0, big_endian);
                    let slen = u32_at(self.src.cur(), 4, big_endian) as usize;
                    if slen > body_len - 8 {
                        return Err(CaptureError::Malformed {
                            offset: start,
                            frame: self.frame_hint(),
                            what: "decryption secrets block",
                            detail: format!(
                                "secrets length {slen} exceeds the block body ({} bytes)",
                                body_len - 8
                            ),
                        });
                    }
                    return Ok(Some(RecKind::Secrets {
                        stype,
                        data_at: 8,
                        data_len: slen,
                    }));
                }
                // Name resolution, interface statistics, custom and unknown blocks: skipped.
                _ => {}
            }
        }
    }

    fn short_block(&self, offset: u64, what: &'static str) -> CaptureError {
        CaptureError::Malformed {
            offset,
            frame: self.frame_hint(),
            what,
            detail: "block body too short".into(),
        }
    }

    fn interface(&self, offset: u64, frame: u64, id: u32) -> Result<Interface, CaptureError> {
        let Format::PcapNg { interfaces, .. } = &self.format else {
            return Err(CaptureError::Malformed {
                offset,
                frame: Some(frame),
                what: "packet block",
                detail: "not in a pcapng section".into(),
            });
        };
        interfaces
            .get(id as usize)
            .copied()
            .ok_or_else(|| CaptureError::Malformed {
                offset,
                frame: Some(frame),
                what: "packet block",
                detail: format!(
                    "interface id {id} is not defined (section has {} interfaces)",
                    interfaces.len()
                ),
            })
    }

    fn read_idb(&mut self, start: u64, body_len: usize, be: bool) -> Result<(), CaptureError> {
        if body_len < 8 {
            return Err(self.short_block(start, "interface description block"));
        }
        let linktype = u32::from(u16_at(self.src.cur(), 0, be));
        let mut iface = Interface {
            linktype,
            units_per_sec: 1_000_000,
            offset_sec: 0,
        };
        // Options: code(2) len(2) value padded to 4.
        let mut at = 8usize;
        while at + 4 <= body_len {
            let code = u16_at(self.src.cur(), at, be);
            let len = usize::from(u16_at(self.src.cur(), at + 2, be));
            let v = at + 4;
            if code == 0 || v + len > body_len {
                break;
            }
            match (code, len) {
                (9, 1) => {
                    let r = self.src.cur()[v];
                    let exp = u32::from(r & 0x7F);
                    iface.units_per_sec = if r & 0x80 != 0 {
                        if exp >= 64 {
                            0
                        } else {
                            1u64 << exp
                        }
                    } else {
                        10u64.checked_pow(exp).unwrap_or(0)
                    };
                }
                (14, 8) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&self.src.cur()[v..v + 8]);
                    iface.offset_sec = if be {
                        i64::from_be_bytes(a)
                    } else {
                        i64::from_le_bytes(a)
                    };
                }
                _ => {}
            }
            at = v + len.div_ceil(4) * 4;
        }
        if iface.units_per_sec == 0 {
            return Err(CaptureError::Malformed {
                offset: start,
                frame: self.frame_hint(),
                what: "interface description block",
                detail: "if_tsresol is out of range".into(),
            });
        }
        if let Format::PcapNg { interfaces, .. } = &mut self.format {
            if interfaces.len() >= MAX_INTERFACES {
                return Err(CaptureError::Malformed {
                    offset: start,
                    frame: self.frame_hint(),
                    what: "interface description block",
                    detail: format!("more than {MAX_INTERFACES} interfaces in one section"),
                });
            }
            interfaces.push(iface);
        }
        Ok(())
    }
}

/// Converts a pcapng timestamp in interface units to microseconds since the epoch.
fn ts_to_us(ts: u64, iface: Interface) -> u64 {
    let us = (u128::from(ts) * 1_000_000) / u128::from(iface.units_per_sec.max(1));
    let us = i128::try_from(us).unwrap_or(i128::MAX) + i128::from(iface.offset_sec) * 1_000_000;
    us.clamp(0, i128::from(u64::MAX)) as u64
}

/// Longest observer text taken from a comment (bytes).
const MAX_REJECTED_LEN: usize = 1024;

/// Finds the comment of rdprobe's observer that carries `marker` among a packet block's options
/// (pcapng 4.2: code, length, value padded to 4 bytes; `opt_comment` is code 1) and returns where
/// the text after the marker is.
fn marked_comment(opts: &[u8], big_endian: bool, marker: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0usize;
    while at + 4 <= opts.len() {
        let code = u16_at(opts, at, big_endian);
        let len = usize::from(u16_at(opts, at + 2, big_endian));
        let value = opts.get(at + 4..at + 4 + len)?;
        if code == 0 {
            return None;
        }
        if code == 1 {
            if let Some(pos) = value.windows(marker.len()).position(|w| w == marker) {
                let start = pos + marker.len();
                let n = (value.len() - start).min(MAX_REJECTED_LEN);
                return Some((at + 4 + start, n));
            }
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

enum RecKind {
    Packet {
        offset: u64,
        t_us: u64,
        linktype: u32,
        data_at: usize,
        data_len: usize,
        orig_len: u32,
        /// Where the text of a client-rejected comment is in the block, if it has one.
        rejected: Option<(usize, usize)>,
        /// Where the stage name of a stopped-on-purpose comment is, if it has one.
        stopped: Option<(usize, usize)>,
    },
    Secrets {
        stype: u32,
        data_at: usize,
        data_len: usize,
    },
}
