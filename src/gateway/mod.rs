//! The RD Gateway hop (MS-TSGU over HTTPS): the typed packets ([`tsgu`]), HTTP heads and
//! authentication tokens ([`http`]), the WebSocket transport ([`ws`]) and the probe's client side
//! ([`client`]): stages `gw_tcp`, `gw_tls`, `gw_http`, `gw_auth`, `gw_tunnel`, `gw_channel`, each with
//! a deadline and its facts, then the inner RDP through the channel.
//!
//! Why not `ironrdp-mstsgu`: its `GwClient::connect` runs HTTP, authentication, handshake, tunnel and
//! channel as one call, with no deadline per step and no view of the HTTP status, the schemes offered,
//! a redirect's `Location` or the HRESULT of the step that failed; and its packet types are
//! crate-private. The probe needs each step on its own, so it drives them here on typed packets.
//!
//! INVARIANT: every wait on the gateway has the stage deadline; every length read from the gateway is
//! bounded (`http::MAX_HEAD_LEN`, `ws::MAX_MESSAGE_LEN`, `tsgu::MAX_PACKET_LEN`).

pub mod client;
pub mod http;
pub mod legacy;
pub mod survey;
pub mod transport;
pub mod tsgu;
pub mod ws;

/// A byte stream the gateway hop runs on (TLS over TCP, or a test's pipe).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;
