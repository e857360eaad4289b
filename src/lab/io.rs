//! Socket plumbing for the lab: a TCP stream whose writes can be delayed (slow link) or cut short
//! (truncate fault), a stream that replays bytes already read before the rest of the socket (for the
//! TLS upgrade), and PDU framing with a deadline on every read.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Shared, per-connection state of the server's writes.
#[derive(Debug, Default)]
pub(crate) struct WireState {
    /// Delay before every write call (slow link).
    pub delay: Duration,
    /// Bytes still allowed through before the truncation point; `None` = no truncation armed.
    pub truncate_left: Option<usize>,
    /// The truncation point was reached: further writes and reads fail so the driver notices.
    pub truncated: bool,
    /// Bytes the server wrote to TCP.
    pub bytes_out: u64,
    /// Extra delay before the server's `k`-th turn (its first write after its `k`-th read that
    /// returned data): `link.response_delays_ms`.
    pub turn_delays: Vec<Duration>,
    /// Turns taken so far.
    pub turn: usize,
    /// The client's bytes were read since the server's last write: the next write starts a turn.
    pub read_since_write: bool,
    /// Server-side mutation of the TLS handshake: rewrites the server's records as they are written.
    pub tls_mutator: Option<super::mutate::TlsWriteMutator>,
}

impl WireState {
    /// The delay for a write that starts now; consumes a turn when one starts.
    fn next_write_delay(&mut self) -> Duration {
        let mut d = self.delay;
        if self.read_since_write {
            self.read_since_write = false;
            if let Some(extra) = self.turn_delays.get(self.turn) {
                d += *extra;
            }
            self.turn = self.turn.saturating_add(1);
        }
        d
    }
}

/// The server's TCP stream, as seen by every layer above it (plain X.224, TLS).
pub(crate) struct LabTcp {
    inner: TcpStream,
    state: Rc<RefCell<WireState>>,
    sleep: Option<Pin<Box<Sleep>>>,
    slept: bool,
    /// A mutated write being sent: its bytes, how many went out, and the length of the write it
    /// replaces (what `poll_write` reports once all are out).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl LabTcp {
    pub(crate) fn new(inner: TcpStream, state: Rc<RefCell<WireState>>) -> Self {
        LabTcp {
            inner,
            state,
            sleep: None,
            slept: false,
            pending: None,
        }
    }
}

fn truncated_error() -> io::Error {
    io::Error::other("stream truncated by the scenario")
}

impl AsyncRead for LabTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.state.borrow().truncated {
            return Poll::Ready(Err(truncated_error()));
        }
        let before = buf.filled().len();
        let res = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if res.is_ok() && buf.filled().len() > before {
            self.state.borrow_mut().read_since_write = true;
        }
        Poll::Ready(res)
    }
}

impl AsyncWrite for LabTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (truncated, left) = {
            let s = self.state.borrow();
            (s.truncated, s.truncate_left)
        };
        if truncated {
            return Poll::Ready(Err(truncated_error()));
        }
        if !self.slept {
            let this = &mut *self;
            if this.sleep.is_none() {
                // INVARIANT: the delay of one write is decided once, on its first poll.
                let delay = this.state.borrow_mut().next_write_delay();
                if delay.is_zero() {
                    this.slept = true;
                } else {
                    this.sleep = Some(Box::pin(tokio::time::sleep(delay)));
                }
            }
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                this.slept = true;
            }
        }
        if self.pending.is_none() {
            let mutated = {
                let mut s = self.state.borrow_mut();
                s.tls_mutator.as_mut().and_then(|m| m.on_write(buf))
            };
            if let Some(out) = mutated {
                self.pending = Some((out, 0, buf.len()));
            }
        }
        let this = &mut *self;
        if let Some((out, sent, orig)) = this.pending.as_mut() {
            // INVARIANT: the whole mutated write goes out before the original length is reported.
            while *sent < out.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &out[*sent..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *sent += n;
                this.state.borrow_mut().bytes_out += n as u64;
            }
            let orig = *orig;
            this.pending = None;
            this.slept = false;
            return Poll::Ready(Ok(orig));
        }
        let allowed = match left {
            Some(0) => {
                self.state.borrow_mut().truncated = true;
                return Poll::Ready(Err(truncated_error()));
            }
            Some(n) => n.min(buf.len()),
            None => buf.len(),
        };
        let res = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]));
        self.slept = false;
        if let Ok(n) = res {
            let mut s = self.state.borrow_mut();
            s.bytes_out += n as u64;
            if let Some(left) = s.truncate_left.as_mut() {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    s.truncated = true;
                }
            }
        }
        Poll::Ready(res)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that first yields `prefix` (bytes already read from the socket), then the socket.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Any byte stream the driver talks through.
pub(crate) trait AsyncIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncIo for T {}

/// Largest PDU the lab accepts from a client (bytes). MCS Connect Initial is a few hundred bytes, a
/// TSRequest a few KB; this bounds what a hostile client can make the lab buffer.
pub(crate) const MAX_PDU_LEN: usize = 256 * 1024;

/// Frames a DER SEQUENCE (a TSRequest, MS-CSSP 2.2.1) from its tag and length octets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DerSequenceHint;

impl ironrdp_pdu::PduHint for DerSequenceHint {
    fn find_size(&self, bytes: &[u8]) -> ironrdp_core::DecodeResult<Option<(bool, usize)>> {
        Ok(der_sequence_len(bytes).ok().flatten().map(|n| (true, n)))
    }
}

/// Total length (header + content) of the DER SEQUENCE at the start of `b`: `Ok(None)` if more bytes are
/// needed, `Err` if it is not a SEQUENCE or its length is not representable.
pub(crate) fn der_sequence_len(b: &[u8]) -> Result<Option<usize>, &'static str> {
    use crate::wire::asn1;
    match b.first() {
        None => return Ok(None),
        Some(&tag) if tag != 0x30 => return Err("not a DER SEQUENCE"),
        Some(_) => {}
    }
    match asn1::read_header(b, asn1::TagForm::OneByte) {
        Ok(h) => Ok(h.total()),
        Err(e) if e.is_truncated() => Ok(None),
        Err(_) => Err("unsupported DER length form"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_sequence_len(&[]), Ok(None));
        assert_eq!(der_sequence_len(&[0x30]), Ok(None));
        assert_eq!(der_sequence_len(&[0x30, 0x05]), Ok(Some(7)));
        assert_eq!(der_sequence_len(&[0x30, 0x82, 0x01]), Ok(None));
        assert_eq!(der_sequence_len(&[0x30, 0x82, 0x01, 0x00]), Ok(Some(260)));
        assert!(der_sequence_len(&[0x16, 0x03]).is_err());
        assert!(der_sequence_len(&[0x30, 0x80]).is_err());
        assert!(der_sequence_len(&[0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
    }
}
