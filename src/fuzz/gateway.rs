//! Stages `gw_http`, `gw_tunnel`, `gw_channel`: mutations of what a client sends an RD Gateway
//! (MS-TSGU): the first HTTP request (`RDG_OUT_DATA` with the WebSocket upgrade, sent without
//! credentials so that no case carries a password), the HANDSHAKE_REQUEST, TUNNEL_CREATE or
//! TUNNEL_AUTH packet (2.2.10.10, 2.2.10.18, 2.2.10.14), and the CHANNEL_CREATE packet (2.2.10.2)
//! with its resource name. The valid stages before the fuzzed one are driven here: TLS, the upgrade
//! with Basic credentials (the lab gateway accepts them; they are never part of a case, and the
//! case's capture keeps no TLS secret), then the valid tunnel packets.
//!
//! WebSocket frames are written and read by hand (RFC 6455 5.2: masked binary frames out, unmasked
//! frames in): the fuzzer must send a packet exactly as mutated, one frame per packet, and judge
//! the answer from the raw bytes with the session's shared observer.
//!
//! INVARIANT: every wait has the target's deadline; lengths a case asks for are bounded
//! ([`MAX_NAME`], `havoc::MAX_INSERT`).

use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u32s, u8s, upto};
use crate::gateway::http;
use crate::gateway::tsgu::{self, Packet};

/// Longest resource name or header value a case asks for, in characters.
pub const MAX_NAME: u64 = 4096;
/// The resource name of the valid CHANNEL_CREATE.
pub const BASE_RESOURCE: &str = "rdp01";
/// The masking key of the fuzzer's WebSocket frames (any key is valid).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x08];

/// One mutation of the first HTTP request; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum HttpMutation {
    /// The method (index into [`METHODS`]).
    Method(u8),
    /// The request target: `len` bytes of `fill` appended to the path.
    Path {
        len: u32,
        fill: u8,
    },
    /// The `HTTP/x.y` version (index into [`VERSIONS`]).
    Version(u8),
    /// The `RDG-Connection-Id` value: `len` bytes of `fill` (0: the header left out).
    ConnectionId {
        len: u32,
        fill: u8,
    },
    /// The `Sec-WebSocket-Key` value: `len` bytes of `fill` (0: the header left out).
    WebSocketKey {
        len: u32,
        fill: u8,
    },
    /// `count` extra headers `X-Fuzz-N: v`.
    ExtraHeaders(u16),
    /// An `Authorization` header of scheme index (into [`SCHEMES`]) and a `len`-byte token of `fill`.
    Authorization {
        scheme: u8,
        len: u32,
        fill: u8,
    },
    /// Lines end with LF alone.
    BareLf,
    Havoc(Havoc),
}

pub const METHODS: [&str; 6] = [
    "RDG_OUT_DATA",
    "RDG_IN_DATA",
    "GET",
    "RPC_IN_DATA",
    "RDG_OUT_DATAX",
    "",
];
pub const VERSIONS: [&str; 4] = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9"];
pub const SCHEMES: [&str; 4] = ["NTLM", "Negotiate", "Basic", "Bearer"];

/// A case of the `gw_http` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GwHttpCase {
    pub mutations: Vec<HttpMutation>,
}

/// Encodes the first request for `host` (none: the valid unauthenticated upgrade request).
pub fn encode_http(mutations: &[HttpMutation], host: &str) -> Vec<u8> {
    let mut method = METHODS[0].to_owned();
    let mut path = "/remoteDesktopGateway/".to_owned();
    let mut version = VERSIONS[0];
    let mut conn_id = Some("{8C0A1F7E-0000-4000-8000-000000000001}".to_owned());
    let mut key = Some("dGhlIHNhbXBsZSBub25jZQ==".to_owned());
    let mut extra = 0u16;
    let mut auth = None;
    let mut eol = "\r\n";
    let mut havocs = Vec::new();
    let fill = |len: u32, b: u8| -> String {
        let c = if b.is_ascii_graphic() { b as char } else { 'A' };
        std::iter::repeat_n(c, (len as u64).min(MAX_NAME) as usize).collect()
    };
    for m in mutations {
        match m {
            HttpMutation::Method(i) => method = METHODS[*i as usize % METHODS.len()].to_owned(),
            HttpMutation::Path { len, fill: f } => path.push_str(&fill(*len, *f)),
            HttpMutation::Version(i) => version = VERSIONS[*i as usize % VERSIONS.len()],
            HttpMutation::ConnectionId { len, fill: f } => {
                conn_id = (*len > 0).then(|| fill(*len, *f))
            }
            HttpMutation::WebSocketKey { len, fill: f } => key = (*len > 0).then(|| fill(*len, *f)),
            HttpMutation::ExtraHeaders(n) => extra = (*n).min(256),
            HttpMutation::Authorization {
                scheme,
                len,
                fill: f,
            } => {
                auth = Some(format!(
                    "{} {}",
                    SCHEMES[*scheme as usize % SCHEMES.len()],
                    fill(*len, *f)
                ))
            }
            HttpMutation::BareLf => eol = "\n",
            HttpMutation::Havoc(h) => havocs.push(h.clone()),
        }
    }
    let mut r = format!("{method} {path} {version}{eol}Host: {host}{eol}Connection: Upgrade{eol}Upgrade: websocket{eol}Sec-WebSocket-Version: 13{eol}");
    if let Some(k) = key {
        r.push_str(&format!("Sec-WebSocket-Key: {k}{eol}"));
    }
    if let Some(c) = conn_id {
        r.push_str(&format!("RDG-Connection-Id: {c}{eol}"));
    }
    for i in 0..extra {
        r.push_str(&format!("X-Fuzz-{i}: v{eol}"));
    }
    if let Some(a) = auth {
        r.push_str(&format!("Authorization: {a}{eol}"));
    }
    r.push_str(eol);
    let mut b = r.into_bytes();
    havoc::apply_all(&havocs, &mut b);
    b
}

fn http_mutation() -> BoxedStrategy<HttpMutation> {
    let len = || upto(MAX_NAME, &[0, 1, 38, 39, 255, 256, 1024]).prop_map(|v| v as u32);
    prop_oneof![
        1 => (0u8..METHODS.len() as u8).prop_map(HttpMutation::Method),
        1 => (len(), u8s(&[0x20, 0x2f])).prop_map(|(len, fill)| HttpMutation::Path { len, fill }),
        1 => (0u8..VERSIONS.len() as u8).prop_map(HttpMutation::Version),
        2 => (len(), u8s(&[0x7b])).prop_map(|(len, fill)| HttpMutation::ConnectionId { len, fill }),
        1 => (len(), u8s(&[0x3d])).prop_map(|(len, fill)| HttpMutation::WebSocketKey { len, fill }),
        1 => upto(256, &[63, 64, 65]).prop_map(|v| HttpMutation::ExtraHeaders(v as u16)),
        2 => (0u8..SCHEMES.len() as u8, len(), u8s(&[0x3d]))
            .prop_map(|(scheme, len, fill)| HttpMutation::Authorization { scheme, len, fill }),
        1 => Just(HttpMutation::BareLf),
        2 => Havoc::strategy(256).prop_map(HttpMutation::Havoc),
    ]
    .boxed()
}

pub fn http_strategy() -> BoxedStrategy<GwHttpCase> {
    proptest::collection::vec(http_mutation(), 1..=3)
        .prop_map(|mutations| GwHttpCase { mutations })
        .boxed()
}

/// One mutation of an MS-TSGU packet's bytes (header fields, then body bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum PacketMutation {
    /// HTTP_PACKET_HEADER packetType.
    Type(u16),
    Reserved(u16),
    /// HTTP_PACKET_HEADER packetLength (default: the real length).
    Length(u32),
    /// One body byte (offset after the header, modulo the body length).
    Byte {
        at: u32,
        value: u8,
    },
    /// A 16-bit body field (offset after the header, modulo the body length).
    Word {
        at: u32,
        value: u16,
    },
    /// Bytes after the packet.
    Trailing {
        len: u32,
        fill: u8,
    },
    Havoc(Havoc),
}

fn apply_packet(mutations: &[PacketMutation], b: &mut Vec<u8>) {
    for m in mutations {
        let body = b.len().saturating_sub(tsgu::HEADER_LEN);
        match m {
            // A havoc before may have truncated the header: header fields apply when present.
            PacketMutation::Type(v) if b.len() >= 2 => b[0..2].copy_from_slice(&v.to_le_bytes()),
            PacketMutation::Reserved(v) if b.len() >= 4 => {
                b[2..4].copy_from_slice(&v.to_le_bytes())
            }
            PacketMutation::Length(v) if b.len() >= 8 => b[4..8].copy_from_slice(&v.to_le_bytes()),
            PacketMutation::Byte { at, value } if body > 0 => {
                b[tsgu::HEADER_LEN + *at as usize % body] = *value;
            }
            PacketMutation::Word { at, value } if body > 1 => {
                let i = tsgu::HEADER_LEN + *at as usize % (body - 1);
                b[i..i + 2].copy_from_slice(&value.to_le_bytes());
            }
            PacketMutation::Trailing { len, fill } => {
                b.extend(std::iter::repeat_n(
                    *fill,
                    (*len as u64).min(havoc::MAX_INSERT) as usize,
                ));
            }
            PacketMutation::Havoc(h) => h.apply(b),
            _ => {}
        }
    }
}

fn packet_mutation() -> BoxedStrategy<PacketMutation> {
    prop_oneof![
        1 => u16s(&[0, 1, 2, 4, 8, 0x0a, 0x10, 0xffff]).prop_map(PacketMutation::Type),
        1 => u16s(&[1]).prop_map(PacketMutation::Reserved),
        2 => u32s(&[0, 7, 8, 9, 0xffff, 0x10040, 0x7fff_ffff, 0xffff_ffff]).prop_map(PacketMutation::Length),
        2 => (upto(64, &[]), u8s(&[0, 0xff])).prop_map(|(at, value)| PacketMutation::Byte { at: at as u32, value }),
        2 => (upto(64, &[]), u16s(&[0, 0xffff, 0x8000])).prop_map(|(at, value)| PacketMutation::Word { at: at as u32, value }),
        1 => (upto(havoc::MAX_INSERT, &[]), u8s(&[])).prop_map(|(len, fill)| PacketMutation::Trailing { len: len as u32, fill }),
        2 => Havoc::strategy(64).prop_map(PacketMutation::Havoc),
    ]
    .boxed()
}

/// Which tunnel packet a `gw_tunnel` case mutates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelPacket {
    #[default]
    Handshake,
    TunnelCreate,
    TunnelAuth,
}

/// A case of the `gw_tunnel` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GwTunnelCase {
    pub packet: TunnelPacket,
    pub mutations: Vec<PacketMutation>,
}

/// The valid packets of the tunnel, in order (the probe's, as `rdprobe-fuzz`).
pub fn tunnel_packets() -> [Packet; 3] {
    tsgu::tunnel_requests("rdprobe-fuzz")
}

pub fn encode_tunnel(c: &GwTunnelCase) -> Vec<u8> {
    let mut b = tunnel_packets()[c.packet as usize].encode();
    apply_packet(&c.mutations, &mut b);
    b
}

pub fn tunnel_strategy() -> BoxedStrategy<GwTunnelCase> {
    (
        prop_oneof![
            Just(TunnelPacket::Handshake),
            Just(TunnelPacket::TunnelCreate),
            Just(TunnelPacket::TunnelAuth)
        ],
        proptest::collection::vec(packet_mutation(), 1..=3),
    )
        .prop_map(|(packet, mutations)| GwTunnelCase { packet, mutations })
        .boxed()
}

/// One mutation of the CHANNEL_CREATE packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum ChannelMutation {
    /// The resource name: `len` characters of `fill` (a letter index).
    ResourceName {
        len: u32,
        fill: u8,
    },
    /// More resource names (copies of the first).
    Resources(u8),
    /// Alternative resource names (copies of the first).
    AltResources(u8),
    Port(u16),
    Protocol(u16),
    Packet(PacketMutation),
}

/// A case of the `gw_channel` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GwChannelCase {
    pub mutations: Vec<ChannelMutation>,
}

pub fn encode_channel(mutations: &[ChannelMutation]) -> Vec<u8> {
    let mut name = BASE_RESOURCE.to_owned();
    let (mut n, mut alt, mut port, mut protocol) = (1usize, 0usize, 3389u16, 3u16);
    let mut packet = Vec::new();
    for m in mutations {
        match m {
            ChannelMutation::ResourceName { len, fill } => {
                let c = (b'a' + fill % 26) as char;
                name = std::iter::repeat_n(c, (*len as u64).min(MAX_NAME) as usize).collect();
            }
            ChannelMutation::Resources(k) => n = (*k as usize).min(16),
            ChannelMutation::AltResources(k) => alt = (*k as usize).min(16),
            ChannelMutation::Port(p) => port = *p,
            ChannelMutation::Protocol(p) => protocol = *p,
            ChannelMutation::Packet(p) => packet.push(p.clone()),
        }
    }
    let mut b = Packet::ChannelCreate {
        resources: vec![name.clone(); n],
        alt_resources: vec![name; alt],
        port,
        protocol,
    }
    .encode();
    apply_packet(&packet, &mut b);
    b
}

fn channel_mutation() -> BoxedStrategy<ChannelMutation> {
    prop_oneof![
        3 => (upto(MAX_NAME, &[0, 1, 255, 256, 257, 1024]), u8s(&[]))
            .prop_map(|(len, fill)| ChannelMutation::ResourceName { len: len as u32, fill }),
        1 => upto(16, &[]).prop_map(|v| ChannelMutation::Resources(v as u8)),
        1 => upto(16, &[]).prop_map(|v| ChannelMutation::AltResources(v as u8)),
        1 => u16s(&[0, 3389, 0xffff]).prop_map(ChannelMutation::Port),
        1 => u16s(&[0, 3, 0xffff]).prop_map(ChannelMutation::Protocol),
        3 => packet_mutation().prop_map(ChannelMutation::Packet),
    ]
    .boxed()
}

pub fn channel_strategy() -> BoxedStrategy<GwChannelCase> {
    proptest::collection::vec(channel_mutation(), 1..=3)
        .prop_map(|mutations| GwChannelCase { mutations })
        .boxed()
}

/// `b` as one masked binary WebSocket frame (RFC 6455 5.2), as a client sends it.
pub fn ws_frame(b: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82];
    match b.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(b.iter().enumerate().map(|(i, x)| x ^ MASK[i % 4]));
    f
}

/// One complete server frame at the start of `b`: (opcode, payload, frame length). None: more
/// bytes needed. Err: not a frame a server may send (masked, reserved bits, absurd length).
pub fn parse_frame(b: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x70 != 0 {
        return Err(format!("reserved bits set in frame byte 0x{:02x}", b[0]));
    }
    if b[1] & 0x80 != 0 {
        return Err("masked frame from the server".into());
    }
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[2..10]);
            let n = u64::from_be_bytes(v);
            if n > crate::gateway::ws::MAX_MESSAGE_LEN as u64 {
                return Err(format!("frame of {n} bytes"));
            }
            (n as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return Ok(None);
    }
    Ok(Some((b[0] & 0x0f, b[at..at + len].to_vec(), at + len)))
}

/// Reads one server frame's payload (binary) within `t`; `buf` keeps what follows.
pub async fn read_frame<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    buf: &mut Vec<u8>,
    t: Duration,
) -> Result<Vec<u8>, String> {
    let deadline = tokio::time::Instant::now() + t;
    loop {
        if let Some((op, payload, n)) = parse_frame(buf)? {
            buf.drain(..n);
            match op {
                0x2 => return Ok(payload),
                0x8 => return Err("websocket close".into()),
                _ => continue,
            }
        }
        if buf.len() > crate::gateway::ws::MAX_MESSAGE_LEN {
            return Err("frame too long".into());
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return Err(format!("no answer within {} ms", t.as_millis())),
            Ok(Ok(0)) => return Err("closed".into()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// The Basic `Authorization` value for the prefix (never part of a case).
pub fn basic(user: &str, domain: Option<&str>, password: &str) -> String {
    let who = match domain {
        Some(d) => format!("{d}\\{user}"),
        None => user.to_owned(),
    };
    format!(
        "Basic {}",
        http::b64(format!("{who}:{password}").as_bytes())
    )
}

/// The status class of an HTTP answer head: 1xx-3xx and 401 are answers a healthy gateway gives
/// a request (the valid unauthenticated request gets 401), other 4xx/5xx are refusals.
pub fn judge_http_status(status: u16) -> (super::ResponseClass, String) {
    use super::ResponseClass as R;
    match status {
        100..=399 | 401 => (R::ValidReply, format!("HTTP {status}")),
        400..=599 => (R::ErrorReply, format!("HTTP {status}")),
        s => (R::MalformedReply, format!("HTTP status {s}")),
    }
}

/// The class of a gateway's answer packet: a response with status 0 is valid, another status an
/// error reply; a close packet or frame is a refusal too.
pub fn judge_packet(payload: &[u8]) -> (super::ResponseClass, String) {
    use super::ResponseClass as R;
    match tsgu::decode(payload) {
        Err(e) => (R::MalformedReply, format!("undecodable packet: {e}")),
        Ok(p) => {
            let code = match &p {
                Packet::HandshakeResponse { error_code, .. } => Some(*error_code),
                Packet::TunnelResponse { status_code, .. } => Some(*status_code),
                Packet::TunnelAuthResponse { error_code, .. } => Some(*error_code),
                Packet::ChannelResponse { error_code, .. } => Some(*error_code),
                Packet::CloseChannel { status } => {
                    return (R::ErrorReply, format!("CLOSE_CHANNEL 0x{status:08X}"))
                }
                _ => None,
            };
            match code {
                Some(0) => (R::ValidReply, p.name().to_owned()),
                Some(c) => (
                    R::ErrorReply,
                    format!("{} {}", p.name(), tsgu::Hresult(c).label()),
                ),
                None => (R::ValidReply, p.name().to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_encodings_decode() {
        let r = encode_http(&[], "gw");
        assert!(r.starts_with(b"RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\n"));
        assert!(r.ends_with(b"\r\n\r\n"));
        for (i, p) in tunnel_packets().iter().enumerate() {
            let c = GwTunnelCase {
                packet: [
                    TunnelPacket::Handshake,
                    TunnelPacket::TunnelCreate,
                    TunnelPacket::TunnelAuth,
                ][i],
                mutations: Vec::new(),
            };
            assert_eq!(tsgu::decode(&encode_tunnel(&c)).unwrap(), *p);
        }
        match tsgu::decode(&encode_channel(&[])).unwrap() {
            Packet::ChannelCreate {
                resources, port, ..
            } => {
                assert_eq!((resources, port), (vec![BASE_RESOURCE.to_owned()], 3389))
            }
            other => panic!("{other:?}"),
        }
        // Header mutations after a truncation do not panic.
        let short = encode_channel(&[
            ChannelMutation::Packet(PacketMutation::Havoc(Havoc::Truncate { keep: 3 })),
            ChannelMutation::Packet(PacketMutation::Length(9)),
            ChannelMutation::Packet(PacketMutation::Type(1)),
        ]);
        assert_eq!(short.len(), 3);
        let long = encode_channel(&[ChannelMutation::ResourceName { len: 300, fill: 0 }]);
        match tsgu::decode(&long).unwrap() {
            Packet::ChannelCreate { resources, .. } => assert_eq!(resources[0].len(), 300),
            other => panic!("{other:?}"),
        }
        // A client frame unmasks to the payload.
        let f = ws_frame(&[1, 2, 3]);
        assert_eq!(f[0], 0x82);
        let un: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ MASK[i % 4])
            .collect();
        assert_eq!(un, [1, 2, 3]);
        assert_eq!(
            parse_frame(&[0x82, 2, 9, 9, 7]).unwrap(),
            Some((2, vec![9, 9], 4))
        );
        assert!(parse_frame(&[0x82, 0x82]).is_err());
    }
}
