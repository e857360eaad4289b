//! One packet stream over either MS-TSGU transport: a WebSocket ([`super::ws`]) or the legacy
//! two-channel HTTP transport ([`super::legacy`]). The probe's tunnel steps, the lab gateway's and
//! the channel relay are written once against it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::legacy::HttpChannel;
use super::tsgu::Packet;
use super::ws::{PacketStream, RecvError, MAX_DATA_CHUNK};
use super::BoxIo;

/// The transport a tunnel runs on.
pub enum Tunnel {
    WebSocket(Box<PacketStream<BoxIo>>),
    Http(HttpChannel),
}

impl Tunnel {
    /// `websocket` or `http`.
    pub fn name(&self) -> &'static str {
        match self {
            Tunnel::WebSocket(_) => "websocket",
            Tunnel::Http(_) => "http",
        }
    }

    /// Sends one packet within `timeout`.
    pub async fn send(&mut self, p: &Packet, timeout: Duration) -> std::io::Result<()> {
        self.send_raw(p.encode(), timeout).await
    }

    /// Sends bytes as one packet (one WebSocket message, one chunk, or raw on the OUT channel).
    pub async fn send_raw(&mut self, b: Vec<u8>, timeout: Duration) -> std::io::Result<()> {
        match self {
            Tunnel::WebSocket(ps) => ps.send_raw(b, timeout).await,
            Tunnel::Http(h) => h.send_raw(b, timeout).await,
        }
    }

    /// Receives one packet within `timeout` (cancel-safe).
    pub async fn recv(&mut self, timeout: Duration) -> Result<Packet, RecvError> {
        match self {
            Tunnel::WebSocket(ps) => ps.recv(timeout).await,
            Tunnel::Http(h) => h.recv(timeout).await,
        }
    }

    /// Closes the transport, best effort within `timeout`.
    pub async fn close(&mut self, timeout: Duration) {
        match self {
            Tunnel::WebSocket(ps) => ps.close(timeout).await,
            Tunnel::Http(h) => h.close(timeout).await,
        }
    }

    /// Relays the channel: bytes from `local` go out as DATA packets, DATA packets come in to `local`,
    /// until either side ends, a CLOSE_CHANNEL arrives (answered), or nothing moves for `idle`.
    /// Returns how it ended, one sentence.
    pub async fn relay<L: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut local: L,
        idle: Duration,
        write_timeout: Duration,
    ) -> String {
        enum Ev {
            Local(Result<std::io::Result<usize>, tokio::time::error::Elapsed>),
            Remote(Result<Packet, RecvError>),
        }
        let mut chunk = vec![0u8; MAX_DATA_CHUNK];
        loop {
            // Both reads are cancel-safe: a read that loses the race has consumed nothing.
            let ev = tokio::select! {
                r = tokio::time::timeout(idle, local.read(&mut chunk)) => Ev::Local(r),
                r = self.recv(idle) => Ev::Remote(r),
            };
            match ev {
                Ev::Local(Err(_)) => {
                    self.close(write_timeout).await;
                    return format!("idle for {} ms", idle.as_millis());
                }
                Ev::Local(Ok(Ok(0))) | Ev::Local(Ok(Err(_))) => {
                    let _ = self
                        .send(&Packet::CloseChannel { status: 0 }, write_timeout)
                        .await;
                    self.close(write_timeout).await;
                    return "the local end closed".into();
                }
                Ev::Local(Ok(Ok(n))) => {
                    if let Err(e) = self
                        .send(&Packet::Data(chunk[..n].to_vec()), write_timeout)
                        .await
                    {
                        return format!("send failed: {e}");
                    }
                }
                Ev::Remote(Ok(Packet::Data(d))) => {
                    let w = tokio::time::timeout(write_timeout, local.write_all(&d)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        return "the local end stopped reading".into();
                    }
                }
                Ev::Remote(Ok(Packet::CloseChannel { status })) => {
                    let _ = self
                        .send(&Packet::CloseChannelResponse { status: 0 }, write_timeout)
                        .await;
                    let _ = tokio::time::timeout(write_timeout, local.shutdown()).await;
                    return format!("the peer closed the channel (status 0x{status:08X})");
                }
                Ev::Remote(Ok(Packet::CloseChannelResponse { .. })) => {
                    let _ = tokio::time::timeout(write_timeout, local.shutdown()).await;
                    return "the peer confirmed the close".into();
                }
                Ev::Remote(Ok(_)) => {}
                Ev::Remote(Err(e)) => {
                    let _ = tokio::time::timeout(write_timeout, local.shutdown()).await;
                    return e.to_string();
                }
            }
        }
    }
}
