//! The legacy two-channel HTTP transport of MS-TSGU (3.3.5.1, no WebSocket): two TLS connections
//! carrying the same `RDG-Connection-Id`. The OUT channel (`RDG_OUT_DATA`) is answered `200 OK` with
//! no length, a short seed entity body, then the gateway's packets back to back on the raw stream
//! (HTTP/1.0 semantics: the body ends with the connection). The IN channel (`RDG_IN_DATA`) is
//! authorized with an empty request, answered `200 OK`, and then the client sends the request head a
//! second time with `Transfer-Encoding: chunked` and each packet as one chunk.
//!
//! The wire details follow what FreeRDP 2.11 sends and accepts (it skips a 10-byte seed; Windows
//! sends `AB CD` five times); the lab gateway plays the server side, the probe the client side.
//!
//! Chunked transfer coding is written by hand (RFC 9112 7.1): the available crates decode whole
//! bodies from a buffered reader; here each chunk is a packet that must be read with the stage
//! deadline, a size bound and without blocking the other channel.
//!
//! INVARIANT: every read has the caller's deadline; a chunk is at most [`MAX_CHUNK_LEN`] bytes, the
//! packet buffer at most `tsgu::MAX_PACKET_LEN` plus one chunk.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tsgu::{self, Packet};
use super::ws::RecvError;
use super::BoxIo;

/// The seed entity body the gateway sends after the OUT channel's `200 OK` (Windows: `AB CD` × 5).
pub const SEED: [u8; 10] = [0xAB, 0xCD, 0xAB, 0xCD, 0xAB, 0xCD, 0xAB, 0xCD, 0xAB, 0xCD];
/// Largest chunk either end accepts, in bytes.
pub const MAX_CHUNK_LEN: usize = tsgu::MAX_PACKET_LEN;
/// Longest chunk-size line (hex digits, extensions, CRLF).
const MAX_SIZE_LINE: usize = 64;

/// One packet as one HTTP chunk: `<hex length>\r\n<bytes>\r\n`.
pub fn chunk(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{:X}\r\n", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.extend_from_slice(b"\r\n");
    v
}

/// Where the chunk decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Ended,
}

/// Incremental decoder of a chunked body (RFC 9112 7.1): consumes what it can from `input`, appends
/// chunk data to `out`.
#[derive(Clone, Debug)]
pub struct Dechunker {
    state: ChunkState,
    /// Byte offset in the chunked body (for errors).
    at: u64,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker {
            state: ChunkState::Size,
            at: 0,
        }
    }
}

impl Dechunker {
    /// True once the last (zero-size) chunk was read.
    pub fn ended(&self) -> bool {
        self.state == ChunkState::Ended
    }

    /// Decodes from `input` into `out`; what was used is removed from `input`.
    pub fn feed(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Ended => break,
                ChunkState::Size => {
                    let rest = &input[pos..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_SIZE_LINE {
                            return Err(format!(
                                "chunk size line longer than {MAX_SIZE_LINE} bytes at body offset {}",
                                self.at
                            ));
                        }
                        break;
                    };
                    if nl > MAX_SIZE_LINE {
                        return Err(format!(
                            "chunk size line longer than {MAX_SIZE_LINE} bytes at body offset {}",
                            self.at
                        ));
                    }
                    let line = String::from_utf8_lossy(&rest[..nl]);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let n = usize::from_str_radix(hex, 16).map_err(|_| {
                        format!("bad chunk size {hex:?} at body offset {}", self.at)
                    })?;
                    if n > MAX_CHUNK_LEN {
                        return Err(format!(
                            "chunk of {n} bytes (more than {MAX_CHUNK_LEN}) at body offset {}",
                            self.at
                        ));
                    }
                    pos += nl + 1;
                    self.at += nl as u64 + 1;
                    self.state = if n == 0 {
                        ChunkState::Ended
                    } else {
                        ChunkState::Data(n)
                    };
                }
                ChunkState::Data(left) => {
                    let avail = input.len() - pos;
                    if avail == 0 {
                        break;
                    }
                    let take = left.min(avail);
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    self.at += take as u64;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if input.len() - pos < 2 {
                        break;
                    }
                    if &input[pos..pos + 2] != b"\r\n" {
                        return Err(format!(
                            "chunk not followed by CRLF at body offset {}",
                            self.at
                        ));
                    }
                    pos += 2;
                    self.at += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
        input.drain(..pos);
        Ok(())
    }
}

/// The two channels as one packet stream: packets are read from `rx` and written to `tx`.
///
/// Client: `rx` is the OUT channel (raw packets), `tx` the IN channel (chunks). Lab gateway: `rx` is
/// the IN channel (chunks), `tx` the OUT channel (raw packets).
pub struct HttpChannel {
    rx: BoxIo,
    rx_buf: Vec<u8>,
    /// `Some` when `rx` carries chunks.
    dechunk: Option<Dechunker>,
    packets: Vec<u8>,
    tx: BoxIo,
    chunk_tx: bool,
}

impl HttpChannel {
    /// The client's view: read raw packets from `out` (with `leftover` already read past the seed),
    /// write chunks to `in_`.
    pub fn client(out: BoxIo, leftover: Vec<u8>, in_: BoxIo) -> Self {
        HttpChannel {
            rx: out,
            rx_buf: Vec::new(),
            dechunk: None,
            packets: leftover,
            tx: in_,
            chunk_tx: true,
        }
    }

    /// The gateway's view: read chunks from `in_` (`leftover`: body bytes read with its head),
    /// write raw packets to `out`.
    pub fn server(in_: BoxIo, leftover: Vec<u8>, chunked: bool, out: BoxIo) -> Self {
        let (rx_buf, packets) = if chunked {
            (leftover, Vec::new())
        } else {
            (Vec::new(), leftover)
        };
        HttpChannel {
            rx: in_,
            rx_buf,
            dechunk: chunked.then(Dechunker::default),
            packets,
            tx: out,
            chunk_tx: false,
        }
    }

    /// Sends bytes as one packet within `timeout`.
    pub async fn send_raw(&mut self, b: Vec<u8>, timeout: Duration) -> std::io::Result<()> {
        let wire = if self.chunk_tx { chunk(&b) } else { b };
        crate::net::write_all(&mut self.tx, &wire, timeout).await
    }

    /// Receives one packet within `timeout`. Cancel-safe: bytes are kept in the buffers between calls.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Packet, RecvError> {
        let start = Instant::now();
        loop {
            if let Some(d) = &mut self.dechunk {
                d.feed(&mut self.rx_buf, &mut self.packets)
                    .map_err(RecvError::Malformed)?;
            }
            match tsgu::packet_len(&self.packets) {
                Err(e) => return Err(RecvError::Malformed(e.to_string())),
                Ok(Some(n)) if self.packets.len() >= n => {
                    let p = tsgu::decode(&self.packets[..n]);
                    self.packets.drain(..n);
                    return p.map_err(|e| RecvError::Malformed(e.to_string()));
                }
                _ => {}
            }
            if self.dechunk.as_ref().is_some_and(Dechunker::ended) {
                return Err(RecvError::Closed(None));
            }
            if self.packets.len() + self.rx_buf.len() > tsgu::MAX_PACKET_LEN + MAX_CHUNK_LEN {
                return Err(RecvError::Malformed("too many bytes buffered".into()));
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(RecvError::Timeout(start.elapsed().as_millis() as u64));
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(left, self.rx.read(&mut chunk)).await {
                Err(_) => return Err(RecvError::Timeout(start.elapsed().as_millis() as u64)),
                Ok(Ok(0)) => return Err(RecvError::Closed(None)),
                Ok(Ok(n)) => {
                    if self.dechunk.is_some() {
                        self.rx_buf.extend_from_slice(&chunk[..n]);
                    } else {
                        self.packets.extend_from_slice(&chunk[..n]);
                    }
                }
                Ok(Err(e)) => {
                    return Err(match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => RecvError::Closed(None),
                        _ => RecvError::Io(e.to_string()),
                    })
                }
            }
        }
    }

    /// Ends both channels (the chunked side with its last chunk), best effort within `timeout`.
    pub async fn close(&mut self, timeout: Duration) {
        let (tx, rx, chunk_tx) = (&mut self.tx, &mut self.rx, self.chunk_tx);
        let _ = tokio::time::timeout(timeout, async {
            if chunk_tx {
                let _ = tx.write_all(b"0\r\n\r\n").await;
            }
            let _ = tx.shutdown().await;
            let _ = rx.shutdown().await;
        })
        .await;
    }

    /// The stream packets are written to (to reset it, for a fault).
    pub fn tx_mut(&mut self) -> &mut BoxIo {
        &mut self.tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_in_pieces_and_bad_chunks_are_errors() {
        let mut wire = chunk(b"hello");
        wire.extend(chunk(&[7u8; 300]));
        wire.extend_from_slice(b"0\r\n\r\n");
        // Fed one byte at a time: the same data, then the end.
        let mut d = Dechunker::default();
        let (mut input, mut out) = (Vec::new(), Vec::new());
        for b in &wire {
            input.push(*b);
            d.feed(&mut input, &mut out).unwrap();
        }
        assert!(d.ended());
        assert_eq!(&out[..5], b"hello");
        assert_eq!(out.len(), 305);
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"FFFFFFFF\r\n"] {
            let mut d = Dechunker::default();
            let mut input = bad.to_vec();
            assert!(d.feed(&mut input, &mut Vec::new()).is_err(), "{bad:?}");
        }
        // An endless size line is refused once it passes the bound.
        let mut d = Dechunker::default();
        let mut input = vec![b'1'; 100];
        assert!(d.feed(&mut input, &mut Vec::new()).is_err());
    }
}
