//! The one reader of framed PDUs from a byte stream: TPKT / fast-path, TLS records, DER
//! TSRequests, whatever a framing function can size from the first bytes. Every read waits under
//! one deadline, the buffered bytes and every PDU length are bounded, and a failure says which:
//! silence, close, reset (with the bytes of an incomplete PDU left in the buffer for the caller to
//! judge), an out-of-range length or a framing error.
//!
//! Not `ironrdp_async::Framed` under `tokio::time::timeout`: `Framed` owns its stream (the probe
//! reads through a recording tap by `&mut`, the fuzzer through either TCP or TLS), grows its buffer
//! to whatever length a hint announces (no `MAX_PDU_LEN`), turns every failure into an
//! `io::Error` (the callers tell a close from a reset from a bad length), and always reads ahead,
//! where `enum` must leave bytes past the PDU in the socket for the TLS handshake that follows.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Longest PDU read from a peer (1 MiB: a TSRequest with a certificate chain, a large bitmap
/// update), and most bytes buffered without a complete one.
pub const MAX_PDU_LEN: usize = 1024 * 1024;

/// What a framing function makes of the bytes buffered so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// More bytes are needed: at least this many (used only by exact readers; 1 when unknown).
    Need(usize),
    /// A PDU of this total length starts the buffer.
    Pdu(usize),
    /// Bytes of this length start the buffer and are to be dropped (the caller keeps them
    /// elsewhere, e.g. in a recorded trace).
    Skip(usize),
}

/// Why no PDU was read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The deadline passed before a whole PDU arrived.
    #[error("timed out")]
    Timeout,
    /// The peer closed the stream (what it sent of a PDU is still in the buffer).
    #[error("closed")]
    Closed,
    /// The read failed (a reset; a TLS error).
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// A framed length of zero or above the limit.
    #[error("PDU length {len} out of range")]
    Length { len: usize },
    /// More than the limit buffered without a complete PDU.
    #[error("more than {limit} bytes without a complete PDU")]
    Overflow { limit: usize },
    /// The framing function refused the bytes.
    #[error("{0}")]
    Framing(String),
}

/// How to read: the length bound, and whether to read only the bytes a PDU needs.
#[derive(Clone, Copy, Debug)]
pub struct Reader {
    /// Longest PDU, and most bytes buffered.
    pub max_len: usize,
    /// Read no byte past the PDU (the stream is handed on after it); else read ahead in 16 KiB
    /// chunks and leave what follows the PDU in the buffer.
    pub exact: bool,
}

/// How long a read may wait.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Until one deadline for the whole PDU.
    Until(Instant),
    /// This long for each read.
    Idle(Duration),
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            max_len: MAX_PDU_LEN,
            exact: false,
        }
    }
}

impl Reader {
    /// Reads one PDU sized by `frame` into `buf` (which may hold bytes read before) and splits it
    /// off, waiting until `deadline` at most.
    pub async fn read<S, F>(
        &self,
        stream: &mut S,
        buf: &mut BytesMut,
        deadline: Instant,
        frame: F,
    ) -> Result<BytesMut, ReadError>
    where
        S: AsyncRead + Unpin + ?Sized,
        F: FnMut(&[u8]) -> Result<Framing, String>,
    {
        self.read_waiting(stream, buf, Wait::Until(deadline), frame)
            .await
    }

    /// [`Reader::read`] where each read waits at most `idle` (a peer that keeps sending, however
    /// slowly, is bounded by the caller's overall deadline): the lab's rule for clients.
    pub async fn read_idle<S, F>(
        &self,
        stream: &mut S,
        buf: &mut BytesMut,
        idle: Duration,
        frame: F,
    ) -> Result<BytesMut, ReadError>
    where
        S: AsyncRead + Unpin + ?Sized,
        F: FnMut(&[u8]) -> Result<Framing, String>,
    {
        self.read_waiting(stream, buf, Wait::Idle(idle), frame)
            .await
    }

    async fn read_waiting<S, F>(
        &self,
        stream: &mut S,
        buf: &mut BytesMut,
        wait: Wait,
        mut frame: F,
    ) -> Result<BytesMut, ReadError>
    where
        S: AsyncRead + Unpin + ?Sized,
        F: FnMut(&[u8]) -> Result<Framing, String>,
    {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let need = if buf.is_empty() {
                1
            } else {
                match frame(buf).map_err(ReadError::Framing)? {
                    Framing::Need(n) => n.max(1),
                    Framing::Pdu(n) | Framing::Skip(n) if n == 0 || n > self.max_len => {
                        return Err(ReadError::Length { len: n })
                    }
                    Framing::Pdu(n) if buf.len() >= n => return Ok(buf.split_to(n)),
                    Framing::Skip(n) if buf.len() >= n => {
                        let _ = buf.split_to(n);
                        continue;
                    }
                    Framing::Pdu(n) | Framing::Skip(n) => n - buf.len(),
                }
            };
            let deadline = match wait {
                Wait::Until(d) => d,
                Wait::Idle(idle) => Instant::now() + idle,
            };
            if Instant::now() >= deadline {
                return Err(ReadError::Timeout);
            }
            let want = if self.exact {
                need.min(chunk.len())
            } else {
                chunk.len()
            };
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..want])).await {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Ok(0)) => return Err(ReadError::Closed),
                Ok(Ok(n)) => {
                    if buf.len() + n > self.max_len {
                        return Err(ReadError::Overflow {
                            limit: self.max_len,
                        });
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok(Err(e)) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// [`Reader::read`] with a timeout from now.
    pub async fn read_within<S, F>(
        &self,
        stream: &mut S,
        buf: &mut BytesMut,
        timeout: Duration,
        frame: F,
    ) -> Result<BytesMut, ReadError>
    where
        S: AsyncRead + Unpin + ?Sized,
        F: FnMut(&[u8]) -> Result<Framing, String>,
    {
        self.read(stream, buf, Instant::now() + timeout, frame)
            .await
    }
}

/// Frames TPKT and fast-path PDUs (MS-RDPBCGR 2.2.9.1.2) with [`crate::wire::x224::frame_header`].
pub fn rdp(buf: &[u8]) -> Result<Framing, String> {
    use crate::wire::x224;
    match x224::frame_header(buf) {
        Ok(Some((_, n))) => Ok(Framing::Pdu(n)),
        // A TPKT header is 4 bytes, a fast-path one 2 or 3.
        Ok(None) if buf.first() == Some(&x224::TPKT_VERSION) => Ok(Framing::Need(
            x224::TPKT_HEADER_LEN.saturating_sub(buf.len()),
        )),
        Ok(None) => Ok(Framing::Need(1)),
        Err(e) => Err(e.kind.to_string()),
    }
}

/// Frames what an IronRDP `PduHint` can size; PDUs it does not match are skipped.
pub fn hint(h: &dyn ironrdp_pdu::PduHint) -> impl FnMut(&[u8]) -> Result<Framing, String> + '_ {
    move |buf| match h.find_size(buf) {
        Ok(Some((true, n))) => Ok(Framing::Pdu(n)),
        Ok(Some((false, n))) => Ok(Framing::Skip(n)),
        Ok(None) => Ok(Framing::Need(1)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn tpkt(n: usize) -> Vec<u8> {
        let mut v = vec![3, 0, 0, 0, 2, 0xf0, 0x80];
        v.resize(n, 0xab);
        v[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        v
    }

    #[tokio::test]
    async fn reads_pdus_split_and_joined_and_leaves_the_rest() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut wire = tpkt(100);
        wire.extend(tpkt(9));
        wire.extend([0x03, 0x00]);
        let w = tokio::spawn(async move {
            for c in wire.chunks(7) {
                a.write_all(c).await.unwrap();
                tokio::task::yield_now().await;
            }
            a
        });
        let mut buf = BytesMut::new();
        let r = Reader::default();
        let t = Duration::from_secs(5);
        assert_eq!(
            r.read_within(&mut b, &mut buf, t, rdp).await.unwrap()[..],
            tpkt(100)[..]
        );
        assert_eq!(
            r.read_within(&mut b, &mut buf, t, rdp).await.unwrap()[..],
            tpkt(9)[..]
        );
        let a = w.await.unwrap();
        // Half a header, then silence: a timeout, with the half kept; then the close.
        let t0 = std::time::Instant::now();
        let e = r
            .read_within(&mut b, &mut buf, Duration::from_millis(100), rdp)
            .await;
        assert!(matches!(e, Err(ReadError::Timeout)), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(&buf[..], &[3, 0]);
        drop(a);
        let e = r.read_within(&mut b, &mut buf, t, rdp).await;
        assert!(matches!(e, Err(ReadError::Closed)), "{e:?}");
    }

    #[tokio::test]
    async fn bounds_lengths_and_buffering_and_reads_exactly() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let t = Duration::from_secs(5);
        let small = Reader {
            max_len: 50,
            exact: false,
        };
        // A header announcing more than the limit.
        a.write_all(&tpkt(100)[..7]).await.unwrap();
        let mut buf = BytesMut::new();
        let e = small.read_within(&mut b, &mut buf, t, rdp).await;
        assert!(matches!(e, Err(ReadError::Length { len: 100 })), "{e:?}");
        // A framing that never completes: the buffer stops at the limit.
        a.write_all(&[0u8; 100]).await.unwrap();
        let mut buf = BytesMut::new();
        let e = small
            .read_within(&mut b, &mut buf, t, |_| Ok(Framing::Need(1)))
            .await;
        assert!(matches!(e, Err(ReadError::Overflow { limit: 50 })), "{e:?}");
        // Bytes that frame nothing are refused with the framer's words.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[0x05, 0]).await.unwrap();
        let e = Reader::default()
            .read_within(&mut b, &mut BytesMut::new(), t, rdp)
            .await;
        assert!(
            matches!(&e, Err(ReadError::Framing(w)) if w.contains("0x05")),
            "{e:?}"
        );
        // An exact reader leaves the next PDU's bytes in the stream.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut wire = tpkt(20);
        wire.extend(b"after");
        a.write_all(&wire).await.unwrap();
        let exact = Reader {
            max_len: MAX_PDU_LEN,
            exact: true,
        };
        let mut buf = BytesMut::new();
        let pdu = exact.read_within(&mut b, &mut buf, t, rdp).await.unwrap();
        assert_eq!(pdu.len(), 20);
        assert!(buf.is_empty());
        let mut rest = [0u8; 5];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"after");
    }

    /// A peer that sends a PDU a byte at a time, each within the idle time: an idle reader gets
    /// the PDU, a deadline reader with the same time does not.
    #[tokio::test]
    async fn an_idle_wait_is_per_read_a_deadline_per_pdu() {
        async fn dribble(mut a: tokio::io::DuplexStream) {
            for b in tpkt(12) {
                tokio::time::sleep(Duration::from_millis(40)).await;
                if a.write_all(&[b]).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let r = Reader::default();
        let wait = Duration::from_millis(200);
        let (a, mut b) = tokio::io::duplex(64);
        let w = tokio::spawn(dribble(a));
        let pdu = r.read_idle(&mut b, &mut BytesMut::new(), wait, rdp).await;
        assert_eq!(pdu.unwrap()[..], tpkt(12)[..]);
        w.abort();
        let (a, mut b) = tokio::io::duplex(64);
        let w = tokio::spawn(dribble(a));
        let e = r.read_within(&mut b, &mut BytesMut::new(), wait, rdp).await;
        assert!(matches!(e, Err(ReadError::Timeout)), "{e:?}");
        w.abort();
    }
}
