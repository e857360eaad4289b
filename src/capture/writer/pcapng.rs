//! pcapng block encoding: Section Header, Interface Description, Decryption Secrets and Enhanced
//! Packet Blocks (draft-ietf-opsawg-pcapng sections 4.1, 4.2, 4.7 and 4.3).
//!
//! Every block is `type (u32) | total length (u32) | body | total length (u32)`, little-endian
//! (the byte-order magic says so), with the body padded to a multiple of 4 bytes.

/// Section Header, Interface Description and Enhanced Packet Block types: pcap-file's. Its writer
/// is not used: it has no Decryption Secrets Block, which carries the key log in the capture.
pub use pcap_file::pcapng::blocks::{
    ENHANCED_PACKET_BLOCK as EPB_TYPE, INTERFACE_DESCRIPTION_BLOCK as IDB_TYPE,
    SECTION_HEADER_BLOCK as SHB_TYPE,
};
/// Decryption Secrets Block type (pcapng section 4.7).
pub const DSB_TYPE: u32 = 0x0000_000A;
/// DSB secrets type "TLSK": NSS key log (SSLKEYLOGFILE) lines.
pub const SECRETS_TYPE_TLS_KEYLOG: u32 = 0x544C_534B;

const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// Snap length announced in the IDB (bytes): larger than any frame the writer builds.
const SNAPLEN: u32 = 262_144;

const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

/// Longest option value (bytes): the option length field is 16 bits.
pub const MAX_OPTION_LEN: usize = u16::MAX as usize;

/// A block body that is too large for the 32-bit block length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockTooLarge {
    pub len: usize,
}

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn pad4(b: &mut Vec<u8>) {
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
}

/// Starts a block of type `ty` in `b` (cleared first); finish it with [`end_block`].
fn begin_block(b: &mut Vec<u8>, ty: u32) {
    b.clear();
    put_u32(b, ty);
    put_u32(b, 0); // total length, patched by end_block
}

/// Pads the body, writes the trailing length and patches the leading one.
fn end_block(b: &mut Vec<u8>) -> Result<(), BlockTooLarge> {
    pad4(b);
    let total = b.len() + 4;
    let total32 = u32::try_from(total).map_err(|_| BlockTooLarge { len: total })?;
    b[4..8].copy_from_slice(&total32.to_le_bytes());
    put_u32(b, total32);
    Ok(())
}

/// Appends one option; values longer than [`MAX_OPTION_LEN`] are cut at a UTF-8 boundary by the
/// callers ([`clip_utf8`]), and cut bluntly here as a last resort.
fn put_option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    let v = &value[..value.len().min(MAX_OPTION_LEN)];
    put_u16(b, code);
    put_u16(b, v.len() as u16);
    b.extend_from_slice(v);
    pad4(b);
}

fn end_options(b: &mut Vec<u8>, any: bool) {
    if any {
        put_u16(b, OPT_ENDOFOPT);
        put_u16(b, 0);
    }
}

/// Cuts `s` to at most [`MAX_OPTION_LEN`] bytes at a character boundary, marking the cut with "…".
pub fn clip_utf8(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_OPTION_LEN {
        return s.into();
    }
    let mut end = MAX_OPTION_LEN - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// Section Header Block (version 1.0, section length unknown) with comments and the writing application.
pub fn shb(b: &mut Vec<u8>, comments: &[String], user_appl: &str) -> Result<(), BlockTooLarge> {
    begin_block(b, SHB_TYPE);
    put_u32(b, BYTE_ORDER_MAGIC);
    put_u16(b, 1); // major version
    put_u16(b, 0); // minor version
    b.extend_from_slice(&u64::MAX.to_le_bytes()); // section length: not specified
    for c in comments {
        put_option(b, OPT_COMMENT, clip_utf8(c).as_bytes());
    }
    put_option(b, SHB_USERAPPL, clip_utf8(user_appl).as_bytes());
    end_options(b, true);
    end_block(b)
}

/// Interface Description Block of link type `linktype` (LINKTYPE_ETHERNET for the synthetic
/// framing, LINKTYPE_RAW for the probe's own wire), timestamps in microseconds (if_tsresol = 6).
pub fn idb_linktype(b: &mut Vec<u8>, name: &str, linktype: u16) -> Result<(), BlockTooLarge> {
    begin_block(b, IDB_TYPE);
    put_u16(b, linktype);
    put_u16(b, 0); // reserved
    put_u32(b, SNAPLEN);
    put_option(b, IF_NAME, clip_utf8(name).as_bytes());
    put_option(b, IF_TSRESOL, &[6]); // 10^-6 s
    end_options(b, true);
    end_block(b)
}

/// Decryption Secrets Block carrying an NSS key log (pcapng section 4.7): secrets type, secrets
/// length (unpadded), the secrets, padding to 32 bits, no options.
pub fn dsb_tls_keylog(b: &mut Vec<u8>, keylog: &[u8]) -> Result<(), BlockTooLarge> {
    begin_block(b, DSB_TYPE);
    put_u32(b, SECRETS_TYPE_TLS_KEYLOG);
    let len = u32::try_from(keylog.len()).map_err(|_| BlockTooLarge { len: keylog.len() })?;
    put_u32(b, len);
    b.extend_from_slice(keylog);
    end_block(b)
}

/// Enhanced Packet Block on interface 0 with a timestamp in microseconds and one `opt_comment`
/// per comment.
pub fn epb(
    b: &mut Vec<u8>,
    t_us: u64,
    frame: &[u8],
    comments: &[String],
) -> Result<(), BlockTooLarge> {
    begin_block(b, EPB_TYPE);
    put_u32(b, 0); // interface id
    put_u32(b, (t_us >> 32) as u32);
    put_u32(b, t_us as u32);
    let len = u32::try_from(frame.len()).map_err(|_| BlockTooLarge { len: frame.len() })?;
    put_u32(b, len); // captured length
    put_u32(b, len); // original length
    b.extend_from_slice(frame);
    pad4(b);
    for c in comments {
        put_option(b, OPT_COMMENT, clip_utf8(c).as_bytes());
    }
    end_options(b, !comments.is_empty());
    end_block(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn dsb_layout_is_exact() {
        // 5 bytes of secrets: padded with 3 zero bytes.
        let mut b = Vec::new();
        dsb_tls_keylog(&mut b, b"ab\ncd").unwrap();
        // type, length, secrets type, secrets length, 5 + 3 pad, trailing length
        assert_eq!(b.len(), 4 + 4 + 4 + 4 + 8 + 4);
        assert_eq!(u32_at(&b, 0), 0x0000_000A);
        assert_eq!(u32_at(&b, 4), 28);
        assert_eq!(&b[8..12], &[0x4B, 0x53, 0x4C, 0x54]); // 0x544c534b little-endian
        assert_eq!(u32_at(&b, 12), 5);
        assert_eq!(&b[16..21], b"ab\ncd");
        assert_eq!(&b[21..24], &[0, 0, 0]);
        assert_eq!(u32_at(&b, 24), 28);

        // Already aligned secrets: no padding.
        dsb_tls_keylog(&mut b, b"abcdefgh").unwrap();
        assert_eq!(b.len(), 28);
        assert_eq!(u32_at(&b, 4), 28);
        assert_eq!(u32_at(&b, 12), 8);
        assert_eq!(&b[16..24], b"abcdefgh");
        assert_eq!(u32_at(&b, 24), 28);
    }

    #[test]
    fn epb_layout_with_comment() {
        let mut b = Vec::new();
        let t: u64 = 0x0001_0002_0003_0004;
        epb(&mut b, t, &[1, 2, 3, 4, 5], &["hi".to_owned()]).unwrap();
        // header 8 + iface/ts/lens 20 + data 5+3 + comment opt 4+2+2 + endofopt 4 + trailer 4
        assert_eq!(b.len(), 8 + 20 + 8 + 8 + 4 + 4);
        assert_eq!(u32_at(&b, 0), EPB_TYPE);
        assert_eq!(u32_at(&b, 4) as usize, b.len());
        assert_eq!(u32_at(&b, 12), 0x0001_0002);
        assert_eq!(u32_at(&b, 16), 0x0003_0004);
        assert_eq!(u32_at(&b, 20), 5);
        assert_eq!(u32_at(&b, 24), 5);
        assert_eq!(&b[36..42], &[1, 0, 2, 0, b'h', b'i']);
        assert_eq!(&b[44..48], &[0, 0, 0, 0]);
        assert_eq!(u32_at(&b, b.len() - 4) as usize, b.len());
    }

    #[test]
    fn long_comment_is_clipped_at_char_boundary() {
        let s = "é".repeat(40_000); // 80 000 bytes
        let c = clip_utf8(&s);
        assert!(c.len() <= MAX_OPTION_LEN);
        assert!(c.ends_with('…'));
        let mut b = Vec::new();
        epb(&mut b, 0, &[0; 60], &[s]).unwrap();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(u32_at(&b, 4) as usize, b.len());
    }
}
