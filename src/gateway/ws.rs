//! MS-TSGU packets over the WebSocket transport (MS-TSGU 3.3.5.1: after `101 Switching Protocols`
//! each packet travels in binary WebSocket messages, a packet may span messages), for both ends.
//!
//! WebSocket framing is `tokio-tungstenite` on the raw TLS stream (the upgrade itself is done by
//! hand in [`super::client`] and the lab gateway, because its status, headers and authentication
//! rounds are facts the probe reports and faults the lab plays). Every receive has a deadline, a
//! message is bounded by [`MAX_MESSAGE_LEN`], a packet by [`super::tsgu::MAX_PACKET_LEN`].

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::tsgu::{self, Packet};

/// Largest WebSocket message either end accepts, in bytes.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// Most payload bytes in one DATA packet (its length field is 16 bits).
pub const MAX_DATA_CHUNK: usize = 0xFFFF;

/// Why no packet came.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The peer closed: a WebSocket close frame (with its code) or the stream ended.
    #[error("closed by the peer{}", .0.map(|c| format!(" (websocket close {c})")).unwrap_or_default())]
    Closed(Option<u16>),
    #[error("{0}")]
    Io(String),
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// A WebSocket carrying MS-TSGU packets.
pub struct PacketStream<S> {
    ws: WebSocketStream<S>,
    buf: Vec<u8>,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN))
        .max_frame_size(Some(MAX_MESSAGE_LEN))
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    /// Wraps a stream that just completed the upgrade; `leftover` are bytes read past the head.
    pub async fn new(stream: S, leftover: Vec<u8>, role: Role) -> Self {
        let ws = WebSocketStream::from_partially_read(stream, leftover, role, Some(config())).await;
        PacketStream {
            ws,
            buf: Vec::new(),
        }
    }

    /// Sends one packet within `timeout`.
    pub async fn send(&mut self, p: &Packet, timeout: Duration) -> std::io::Result<()> {
        self.send_raw(p.encode(), timeout).await
    }

    /// Sends bytes as one binary message within `timeout` (the fuzzer and faults send raw bytes).
    pub async fn send_raw(&mut self, b: Vec<u8>, timeout: Duration) -> std::io::Result<()> {
        match tokio::time::timeout(timeout, self.ws.send(Message::Binary(b.into()))).await {
            Err(_) => Err(crate::net::write_timed_out(timeout)),
            Ok(r) => r.map_err(std::io::Error::other),
        }
    }

    /// Receives one packet within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Packet, RecvError> {
        let start = Instant::now();
        loop {
            match tsgu::packet_len(&self.buf) {
                Err(e) => return Err(RecvError::Malformed(e.to_string())),
                Ok(Some(n)) if self.buf.len() >= n => {
                    let p = tsgu::decode(&self.buf[..n]);
                    self.buf.drain(..n);
                    return p.map_err(|e| RecvError::Malformed(e.to_string()));
                }
                _ => {}
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(RecvError::Timeout(start.elapsed().as_millis() as u64));
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return Err(RecvError::Timeout(start.elapsed().as_millis() as u64)),
                Ok(None) => return Err(RecvError::Closed(None)),
                Ok(Some(Err(e))) => return Err(ws_error(e)),
                Ok(Some(Ok(m))) => match m {
                    Message::Binary(b) => {
                        if self.buf.len() + b.len() > tsgu::MAX_PACKET_LEN + MAX_MESSAGE_LEN {
                            return Err(RecvError::Malformed("too many bytes buffered".into()));
                        }
                        self.buf.extend_from_slice(&b);
                    }
                    Message::Close(f) => {
                        return Err(RecvError::Closed(f.map(|f| u16::from(f.code))));
                    }
                    // Pings are answered by tungstenite on the next read or flush.
                    _ => {}
                },
            }
        }
    }

    /// Sends a WebSocket close within `timeout` (best effort).
    pub async fn close(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.ws.close(None)).await;
    }

    /// The stream under the WebSocket (to reset it, for a fault).
    pub fn get_mut(&mut self) -> &mut S {
        self.ws.get_mut()
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> RecvError {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => RecvError::Closed(None),
        E::Io(io) => match io.kind() {
            std::io::ErrorKind::UnexpectedEof => RecvError::Closed(None),
            _ => RecvError::Io(io.to_string()),
        },
        E::Protocol(p) => match p {
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake => {
                RecvError::Closed(None)
            }
            other => RecvError::Malformed(format!("websocket: {other}")),
        },
        other => RecvError::Malformed(format!("websocket: {other}")),
    }
}
