//! MS-TSGU HTTP transport packets (MS-TSGU 2.2.10): typed, both directions, no I/O.
//!
//! The result codes' names live in [`crate::codes`] (one table for decode, diagnose and explain).
//! Both ends of rdprobe's gateway hop use these: the probe's client ([`super::client`]) and the lab's
//! fake RD Gateway ([`crate::lab::gateway`]). ironrdp-mstsgu 0.1.0 has the same packets but keeps them
//! crate-private, so they are written here from the specification.
//!
//! Every decoder returns [`PduError`] on short or inconsistent input and never panics; lengths come
//! from the packet and are checked against what is there before use.

use std::fmt;

/// Bytes of the HTTP_PACKET_HEADER (MS-TSGU 2.2.10.9): type u16, reserved u16, length u32.
pub const HEADER_LEN: usize = 8;
/// Largest packet either end accepts, in bytes (a data packet carries at most 65535 bytes of payload).
pub const MAX_PACKET_LEN: usize = 64 * 1024 + 64;

/// HTTP_PACKET_TYPE (MS-TSGU 2.2.5.3.3).
pub mod ty {
    pub const HANDSHAKE_REQUEST: u16 = 0x01;
    pub const HANDSHAKE_RESPONSE: u16 = 0x02;
    pub const EXTENDED_AUTH_MSG: u16 = 0x03;
    pub const TUNNEL_CREATE: u16 = 0x04;
    pub const TUNNEL_RESPONSE: u16 = 0x05;
    pub const TUNNEL_AUTH: u16 = 0x06;
    pub const TUNNEL_AUTH_RESPONSE: u16 = 0x07;
    pub const CHANNEL_CREATE: u16 = 0x08;
    pub const CHANNEL_RESPONSE: u16 = 0x09;
    pub const DATA: u16 = 0x0A;
    pub const SERVICE_MESSAGE: u16 = 0x0B;
    pub const REAUTH_MESSAGE: u16 = 0x0C;
    pub const KEEPALIVE: u16 = 0x0D;
    pub const CLOSE_CHANNEL: u16 = 0x10;
    pub const CLOSE_CHANNEL_RESPONSE: u16 = 0x11;
}

/// HTTP_CAPABILITY_TYPE flags (MS-TSGU 2.2.5.3.9).
pub mod caps {
    pub const QUAR_SOH: u32 = 0x01;
    pub const IDLE_TIMEOUT: u32 = 0x02;
    pub const MESSAGING_CONSENT_SIGN: u32 = 0x04;
    pub const MESSAGING_SERVICE_MSG: u32 = 0x08;
    pub const REAUTH: u32 = 0x10;
    pub const UDP_TRANSPORT: u32 = 0x20;
}

/// Names of the capability flags set in `v`, in bit order.
pub fn caps_names(v: u32) -> Vec<&'static str> {
    [
        (caps::QUAR_SOH, "quar_soh"),
        (caps::IDLE_TIMEOUT, "idle_timeout"),
        (caps::MESSAGING_CONSENT_SIGN, "consent_sign"),
        (caps::MESSAGING_SERVICE_MSG, "service_msg"),
        (caps::REAUTH, "reauth"),
        (caps::UDP_TRANSPORT, "udp_transport"),
    ]
    .iter()
    .filter(|(b, _)| v & b != 0)
    .map(|(_, n)| *n)
    .collect()
}

/// Why bytes are not a valid packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("{what}: need {need} bytes, have {have}")]
    Short {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("packet length {0} out of range")]
    Length(u32),
    #[error("unknown packet type 0x{0:04x}")]
    UnknownType(u16),
    #[error("{0}")]
    Invalid(String),
}

/// One MS-TSGU packet, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// HTTP_HANDSHAKE_REQUEST_PACKET (2.2.10.10).
    HandshakeRequest {
        major: u8,
        minor: u8,
        client_version: u16,
        extended_auth: u16,
    },
    /// HTTP_HANDSHAKE_RESPONSE_PACKET (2.2.10.11).
    HandshakeResponse {
        error_code: u32,
        major: u8,
        minor: u8,
        server_version: u16,
        extended_auth: u16,
    },
    /// HTTP_TUNNEL_PACKET (2.2.10.18).
    TunnelCreate {
        caps: u32,
        paa_cookie: Option<Vec<u8>>,
    },
    /// HTTP_TUNNEL_RESPONSE (2.2.10.20).
    TunnelResponse {
        server_version: u16,
        status_code: u32,
        tunnel_id: Option<u32>,
        caps: Option<u32>,
        consent: Option<Vec<u8>>,
    },
    /// HTTP_TUNNEL_AUTH_PACKET (2.2.10.14).
    TunnelAuth {
        client_name: String,
    },
    /// HTTP_TUNNEL_AUTH_RESPONSE (2.2.10.16).
    TunnelAuthResponse {
        error_code: u32,
        redir_flags: Option<u32>,
        idle_timeout_min: Option<u32>,
    },
    /// HTTP_CHANNEL_PACKET (2.2.10.2): the resource names as sent, the port and protocol (3 = TCP).
    ChannelCreate {
        resources: Vec<String>,
        alt_resources: Vec<String>,
        port: u16,
        protocol: u16,
    },
    /// HTTP_CHANNEL_RESPONSE (2.2.10.4).
    ChannelResponse {
        error_code: u32,
        channel_id: Option<u32>,
    },
    /// HTTP_DATA_PACKET (2.2.10.6).
    Data(Vec<u8>),
    /// HTTP_KEEPALIVE_PACKET (2.2.10.15).
    Keepalive,
    /// HTTP_CLOSE_PACKET (2.2.10.5), both directions.
    CloseChannel {
        status: u32,
    },
    CloseChannelResponse {
        status: u32,
    },
    /// Service message, reauth, extended auth: kept as bytes.
    Other {
        ty: u16,
        body: Vec<u8>,
    },
}

impl Packet {
    /// The MS-TSGU name of the packet type.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::HandshakeRequest { .. } => "HANDSHAKE_REQUEST",
            Packet::HandshakeResponse { .. } => "HANDSHAKE_RESPONSE",
            Packet::TunnelCreate { .. } => "TUNNEL_CREATE",
            Packet::TunnelResponse { .. } => "TUNNEL_RESPONSE",
            Packet::TunnelAuth { .. } => "TUNNEL_AUTH",
            Packet::TunnelAuthResponse { .. } => "TUNNEL_AUTH_RESPONSE",
            Packet::ChannelCreate { .. } => "CHANNEL_CREATE",
            Packet::ChannelResponse { .. } => "CHANNEL_RESPONSE",
            Packet::Data(_) => "DATA",
            Packet::Keepalive => "KEEPALIVE",
            Packet::CloseChannel { .. } => "CLOSE_CHANNEL",
            Packet::CloseChannelResponse { .. } => "CLOSE_CHANNEL_RESPONSE",
            Packet::Other { .. } => "OTHER",
        }
    }

    /// The answer a client's request waits for: its packet type and MS-TSGU name (`None` for a
    /// packet that is not such a request).
    pub fn answer(&self) -> Option<(u16, &'static str)> {
        match self {
            Packet::HandshakeRequest { .. } => Some((ty::HANDSHAKE_RESPONSE, "HANDSHAKE_RESPONSE")),
            Packet::TunnelCreate { .. } => Some((ty::TUNNEL_RESPONSE, "TUNNEL_RESPONSE")),
            Packet::TunnelAuth { .. } => Some((ty::TUNNEL_AUTH_RESPONSE, "TUNNEL_AUTH_RESPONSE")),
            Packet::ChannelCreate { .. } => Some((ty::CHANNEL_RESPONSE, "CHANNEL_RESPONSE")),
            _ => None,
        }
    }

    /// Encodes the packet with its header.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        let t = match self {
            Packet::HandshakeRequest {
                major,
                minor,
                client_version,
                extended_auth,
            } => {
                b.push(*major);
                b.push(*minor);
                put16(&mut b, *client_version);
                put16(&mut b, *extended_auth);
                ty::HANDSHAKE_REQUEST
            }
            Packet::HandshakeResponse {
                error_code,
                major,
                minor,
                server_version,
                extended_auth,
            } => {
                put32(&mut b, *error_code);
                b.push(*major);
                b.push(*minor);
                put16(&mut b, *server_version);
                put16(&mut b, *extended_auth);
                ty::HANDSHAKE_RESPONSE
            }
            Packet::TunnelCreate { caps, paa_cookie } => {
                put32(&mut b, *caps);
                put16(&mut b, u16::from(paa_cookie.is_some()));
                put16(&mut b, 0);
                if let Some(c) = paa_cookie {
                    put_blob16(&mut b, c);
                }
                ty::TUNNEL_CREATE
            }
            Packet::TunnelResponse {
                server_version,
                status_code,
                tunnel_id,
                caps,
                consent,
            } => {
                put16(&mut b, *server_version);
                put32(&mut b, *status_code);
                let fields = u16::from(tunnel_id.is_some())
                    | (u16::from(caps.is_some()) << 1)
                    | (u16::from(consent.is_some()) << 4);
                put16(&mut b, fields);
                put16(&mut b, 0);
                put32_opt(&mut b, *tunnel_id);
                put32_opt(&mut b, *caps);
                if let Some(m) = consent {
                    put_blob16(&mut b, m);
                }
                ty::TUNNEL_RESPONSE
            }
            Packet::TunnelAuth { client_name } => {
                put16(&mut b, 0);
                put_blob16(&mut b, &utf16z(client_name));
                ty::TUNNEL_AUTH
            }
            Packet::TunnelAuthResponse {
                error_code,
                redir_flags,
                idle_timeout_min,
            } => {
                put32(&mut b, *error_code);
                let fields =
                    u16::from(redir_flags.is_some()) | (u16::from(idle_timeout_min.is_some()) << 1);
                put16(&mut b, fields);
                put16(&mut b, 0);
                put32_opt(&mut b, *redir_flags);
                put32_opt(&mut b, *idle_timeout_min);
                ty::TUNNEL_AUTH_RESPONSE
            }
            Packet::ChannelCreate {
                resources,
                alt_resources,
                port,
                protocol,
            } => {
                b.push(resources.len().min(255) as u8);
                b.push(alt_resources.len().min(255) as u8);
                put16(&mut b, *port);
                put16(&mut b, *protocol);
                for r in resources
                    .iter()
                    .take(255)
                    .chain(alt_resources.iter().take(255))
                {
                    put_blob16(&mut b, &utf16z(r));
                }
                ty::CHANNEL_CREATE
            }
            Packet::ChannelResponse {
                error_code,
                channel_id,
            } => {
                put32(&mut b, *error_code);
                put16(&mut b, u16::from(channel_id.is_some()));
                put16(&mut b, 0);
                put32_opt(&mut b, *channel_id);
                ty::CHANNEL_RESPONSE
            }
            Packet::Data(d) => {
                put_blob16(&mut b, d);
                ty::DATA
            }
            Packet::Keepalive => ty::KEEPALIVE,
            Packet::CloseChannel { status } => {
                put32(&mut b, *status);
                ty::CLOSE_CHANNEL
            }
            Packet::CloseChannelResponse { status } => {
                put32(&mut b, *status);
                ty::CLOSE_CHANNEL_RESPONSE
            }
            Packet::Other { ty, body } => {
                b.extend_from_slice(body);
                *ty
            }
        };
        let mut out = Vec::with_capacity(HEADER_LEN + b.len());
        put16(&mut out, t);
        put16(&mut out, 0);
        put32(&mut out, (HEADER_LEN + b.len()) as u32);
        out.extend_from_slice(&b);
        out
    }
}

/// The requests that open a tunnel, in order (MS-TSGU 3.3.5.1): the handshake (version 1.0, no
/// extended authentication), the tunnel asking for the idle timeout and service messages, and the
/// tunnel authorization as `client_name`. The probe sends them, the fuzzer mutates them.
pub fn tunnel_requests(client_name: &str) -> [Packet; 3] {
    [
        Packet::HandshakeRequest {
            major: 1,
            minor: 0,
            client_version: 0,
            extended_auth: 0,
        },
        Packet::TunnelCreate {
            caps: caps::IDLE_TIMEOUT | caps::MESSAGING_SERVICE_MSG,
            paa_cookie: None,
        },
        Packet::TunnelAuth {
            client_name: client_name.to_owned(),
        },
    ]
}

/// The total length of the packet starting at `buf`, once its header is there: `Ok(None)` while
/// fewer than 8 bytes are buffered, an error for a length outside `8..=MAX_PACKET_LEN`.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, PduError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if (len as usize) < HEADER_LEN || len as usize > MAX_PACKET_LEN {
        return Err(PduError::Length(len));
    }
    Ok(Some(len as usize))
}

/// Decodes one whole packet (header included; `buf` is exactly the packet).
pub fn decode(buf: &[u8]) -> Result<Packet, PduError> {
    let len = packet_len(buf)?.ok_or(PduError::Short {
        what: "HTTP_PACKET_HEADER",
        need: HEADER_LEN,
        have: buf.len(),
    })?;
    if buf.len() < len {
        return Err(PduError::Short {
            what: "packet",
            need: len,
            have: buf.len(),
        });
    }
    let t = u16::from_le_bytes([buf[0], buf[1]]);
    let mut r = Reader {
        b: &buf[HEADER_LEN..len],
        at: 0,
    };
    let p = match t {
        ty::HANDSHAKE_REQUEST => Packet::HandshakeRequest {
            major: r.u8("HANDSHAKE_REQUEST")?,
            minor: r.u8("HANDSHAKE_REQUEST")?,
            client_version: r.u16("HANDSHAKE_REQUEST")?,
            extended_auth: r.u16("HANDSHAKE_REQUEST")?,
        },
        ty::HANDSHAKE_RESPONSE => Packet::HandshakeResponse {
            error_code: r.u32("HANDSHAKE_RESPONSE")?,
            major: r.u8("HANDSHAKE_RESPONSE")?,
            minor: r.u8("HANDSHAKE_RESPONSE")?,
            server_version: r.u16("HANDSHAKE_RESPONSE")?,
            extended_auth: r.u16("HANDSHAKE_RESPONSE")?,
        },
        ty::TUNNEL_CREATE => {
            let caps = r.u32("TUNNEL_CREATE")?;
            let fields = r.u16("TUNNEL_CREATE")?;
            r.u16("TUNNEL_CREATE")?;
            let paa_cookie = r
                .blob16_if(fields & 1 != 0, "PAA cookie")?
                .map(<[u8]>::to_vec);
            Packet::TunnelCreate { caps, paa_cookie }
        }
        ty::TUNNEL_RESPONSE => {
            let server_version = r.u16("TUNNEL_RESPONSE")?;
            let status_code = r.u32("TUNNEL_RESPONSE")?;
            let fields = r.u16("TUNNEL_RESPONSE")?;
            r.u16("TUNNEL_RESPONSE")?;
            let tunnel_id = r.u32_if(fields & 0x1 != 0, "tunnel id")?;
            let caps = r.u32_if(fields & 0x2 != 0, "caps")?;
            if fields & 0x4 != 0 {
                // HTTP_TUNNEL_RESPONSE_FIELD_SOH_REQ (MS-TSGU 2.2.10.20): a 16-byte GUID nonce,
                // then the server certificate as an HTTP_UNICODE_STRING.
                r.bytes("nonce", 16)?;
                r.blob16("server certificate")?;
            }
            let consent = r
                .blob16_if(fields & 0x10 != 0, "consent message")?
                .map(<[u8]>::to_vec);
            Packet::TunnelResponse {
                server_version,
                status_code,
                tunnel_id,
                caps,
                consent,
            }
        }
        ty::TUNNEL_AUTH => {
            let fields = r.u16("TUNNEL_AUTH")?;
            let n = r.u16("TUNNEL_AUTH")? as usize;
            let name = crate::wire::cursor::utf16z(r.bytes("client name", n)?);
            r.blob16_if(fields & 1 != 0, "statement of health")?;
            Packet::TunnelAuth { client_name: name }
        }
        ty::TUNNEL_AUTH_RESPONSE => {
            let error_code = r.u32("TUNNEL_AUTH_RESPONSE")?;
            let fields = r.u16("TUNNEL_AUTH_RESPONSE")?;
            r.u16("TUNNEL_AUTH_RESPONSE")?;
            let redir_flags = r.u32_if(fields & 1 != 0, "redirection flags")?;
            let idle_timeout_min = r.u32_if(fields & 2 != 0, "idle timeout")?;
            Packet::TunnelAuthResponse {
                error_code,
                redir_flags,
                idle_timeout_min,
            }
        }
        ty::CHANNEL_CREATE => {
            let n = r.u8("CHANNEL_CREATE")? as usize;
            let n_alt = r.u8("CHANNEL_CREATE")? as usize;
            let port = r.u16("CHANNEL_CREATE")?;
            let protocol = r.u16("CHANNEL_CREATE")?;
            let mut resources = Vec::with_capacity(n);
            let mut alt_resources = Vec::with_capacity(n_alt);
            for i in 0..n + n_alt {
                let s = crate::wire::cursor::utf16z(r.blob16("resource name")?);
                if i < n {
                    resources.push(s);
                } else {
                    alt_resources.push(s);
                }
            }
            Packet::ChannelCreate {
                resources,
                alt_resources,
                port,
                protocol,
            }
        }
        ty::CHANNEL_RESPONSE => {
            let error_code = r.u32("CHANNEL_RESPONSE")?;
            let fields = r.u16("CHANNEL_RESPONSE")?;
            r.u16("CHANNEL_RESPONSE")?;
            // Lenient: a channel id flagged but not there is read as absent.
            let channel_id = r.u32_if(fields & 1 != 0 && r.left() >= 4, "channel id")?;
            Packet::ChannelResponse {
                error_code,
                channel_id,
            }
        }
        ty::DATA => Packet::Data(r.blob16("DATA")?.to_vec()),
        ty::KEEPALIVE => Packet::Keepalive,
        ty::CLOSE_CHANNEL => Packet::CloseChannel {
            status: r.u32("CLOSE_CHANNEL")?,
        },
        ty::CLOSE_CHANNEL_RESPONSE => Packet::CloseChannelResponse {
            status: r.u32("CLOSE_CHANNEL_RESPONSE")?,
        },
        ty::EXTENDED_AUTH_MSG | ty::SERVICE_MESSAGE | ty::REAUTH_MESSAGE => Packet::Other {
            ty: t,
            body: r.b.to_vec(),
        },
        other => return Err(PduError::UnknownType(other)),
    };
    Ok(p)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
    fn bytes(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], PduError> {
        if self.left() < n {
            return Err(PduError::Short {
                what,
                need: n,
                have: self.left(),
            });
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, PduError> {
        Ok(self.bytes(what, 1)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, PduError> {
        let b = self.bytes(what, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, PduError> {
        let b = self.bytes(what, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// An optional u32 field, there when its `fieldsPresent` flag is set.
    fn u32_if(&mut self, present: bool, what: &'static str) -> Result<Option<u32>, PduError> {
        present.then(|| self.u32(what)).transpose()
    }
    /// Bytes after their u16 length (a blob or an HTTP_UNICODE_STRING).
    fn blob16(&mut self, what: &'static str) -> Result<&'a [u8], PduError> {
        let n = self.u16(what)? as usize;
        self.bytes(what, n)
    }
    /// An optional [`Reader::blob16`], there when its `fieldsPresent` flag is set.
    fn blob16_if(
        &mut self,
        present: bool,
        what: &'static str,
    ) -> Result<Option<&'a [u8]>, PduError> {
        present.then(|| self.blob16(what)).transpose()
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
/// An optional u32 field (written when there; its `fieldsPresent` flag says so).
fn put32_opt(b: &mut Vec<u8>, v: Option<u32>) {
    if let Some(v) = v {
        put32(b, v);
    }
}
/// `v` after its u16 length, cut to 65535 bytes.
fn put_blob16(b: &mut Vec<u8>, v: &[u8]) {
    let v = &v[..v.len().min(u16::MAX as usize)];
    put16(b, v.len() as u16);
    b.extend_from_slice(v);
}

/// UTF-16LE with a terminating NUL, at most 32767 code units.
fn utf16z(s: &str) -> Vec<u8> {
    let mut out: Vec<u8> = s
        .encode_utf16()
        .take(32_000)
        .flat_map(|u| u.to_le_bytes())
        .collect();
    out.extend_from_slice(&[0, 0]);
    out
}

/// An MS-TSGU result code with its name, as the gateway's HRESULTs are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hresult(pub u32);

impl Hresult {
    /// The code's name (from [`crate::codes`]); Win32 codes (0x000059DA) and their HRESULT form
    /// (0x800759DA) share one.
    pub fn name(self) -> Option<&'static str> {
        crate::codes::gateway_hresult_name(self.0)
    }

    pub fn meaning(self) -> Option<&'static str> {
        crate::codes::gateway_hresult_meaning(self.0)
    }

    /// The name, or the code in hex when it has none.
    pub fn label(self) -> String {
        self.name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("0x{:08X}", self.0))
    }

    /// A code by name (`E_PROXY_RAP_ACCESSDENIED`) or number (`0x800759DA`, decimal).
    pub fn parse(s: &str) -> Option<Hresult> {
        let t = s.trim();
        if let Some(c) = crate::codes::gateway_hresult_code(t) {
            return Some(Hresult(c));
        }
        if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            return u32::from_str_radix(h, 16).ok().map(Hresult);
        }
        t.parse().ok().map(Hresult)
    }

    pub fn is_failure(self) -> bool {
        self.0 & 0x8000_0000 != 0 || (self.0 != 0 && self.0 & 0xFFFF_0000 == 0)
    }
}

impl fmt::Display for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (0x{:08X})", self.0),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_packet() {
        let pkts = vec![
            Packet::HandshakeRequest {
                major: 1,
                minor: 0,
                client_version: 0,
                extended_auth: 0,
            },
            Packet::TunnelResponse {
                server_version: 5,
                status_code: 0,
                tunnel_id: Some(7),
                caps: Some(caps::MESSAGING_SERVICE_MSG),
                consent: None,
            },
            Packet::TunnelAuth {
                client_name: "rdprobe".into(),
            },
            Packet::ChannelCreate {
                resources: vec!["rdp01.corp.example".into()],
                alt_resources: vec![],
                port: 3389,
                protocol: 3,
            },
            Packet::ChannelResponse {
                error_code: 0x8007_59DA,
                channel_id: None,
            },
            Packet::Data(vec![3, 0, 0, 11]),
            Packet::CloseChannel { status: 0 },
            // Every optional field present.
            Packet::TunnelCreate {
                caps: caps::IDLE_TIMEOUT,
                paa_cookie: Some(b"cookie".to_vec()),
            },
            Packet::TunnelResponse {
                server_version: 5,
                status_code: 0x8007_59D8,
                tunnel_id: Some(9),
                caps: Some(caps::IDLE_TIMEOUT | caps::REAUTH),
                consent: Some(vec![0x41, 0, 0, 0]),
            },
            Packet::TunnelAuthResponse {
                error_code: 0,
                redir_flags: Some(0x8000_0000),
                idle_timeout_min: Some(30),
            },
            Packet::ChannelResponse {
                error_code: 0,
                channel_id: Some(3),
            },
        ];
        for p in pkts {
            let b = p.encode();
            assert_eq!(packet_len(&b).unwrap(), Some(b.len()));
            assert_eq!(decode(&b).unwrap(), p);
        }
    }

    /// A TUNNEL_RESPONSE asking for a statement of health (SOH_REQ) carries a 16-byte nonce and
    /// the server certificate before the consent message, which must still be read.
    #[test]
    fn tunnel_response_with_soh_request_reads_the_fields_after_it() {
        let mut body = Vec::new();
        put16(&mut body, 5);
        put32(&mut body, 0);
        put16(&mut body, 0x1 | 0x4 | 0x10);
        put16(&mut body, 0);
        put32(&mut body, 9);
        body.extend_from_slice(&[0xAB; 16]);
        put_blob16(&mut body, &[0x43, 0, 0x4E, 0]);
        put_blob16(&mut body, &[0x41, 0, 0, 0]);
        let mut b = Vec::new();
        put16(&mut b, ty::TUNNEL_RESPONSE);
        put16(&mut b, 0);
        put32(&mut b, (8 + body.len()) as u32);
        b.extend_from_slice(&body);
        assert_eq!(
            decode(&b).unwrap(),
            Packet::TunnelResponse {
                server_version: 5,
                status_code: 0,
                tunnel_id: Some(9),
                caps: None,
                consent: Some(vec![0x41, 0, 0, 0]),
            }
        );
    }

    #[test]
    fn short_and_hostile_input_is_an_error() {
        assert!(decode(&[]).is_err());
        assert!(matches!(
            packet_len(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(PduError::Length(_))
        ));
        // A DATA packet whose cbDataLen says more than is there.
        let mut d = Packet::Data(vec![1, 2, 3]).encode();
        d[8] = 200;
        assert!(decode(&d).is_err());
        // An optional field flagged but cut short: an error naming the field.
        let mut b = Packet::TunnelAuthResponse {
            error_code: 0,
            redir_flags: Some(1),
            idle_timeout_min: Some(2),
        }
        .encode();
        b.truncate(b.len() - 2);
        b[4] = b.len() as u8;
        assert!(matches!(
            decode(&b),
            Err(PduError::Short {
                what: "idle timeout",
                ..
            })
        ));
        let mut b = Packet::TunnelCreate {
            caps: 0,
            paa_cookie: Some(vec![7; 10]),
        }
        .encode();
        b.truncate(b.len() - 1);
        b[4] = b.len() as u8;
        assert!(matches!(
            decode(&b),
            Err(PduError::Short {
                what: "PAA cookie",
                need: 10,
                have: 9
            })
        ));
        for n in 0..64u8 {
            let mut b = vec![n % 0x12, 0, 0, 0, 12, 0, 0, 0, n, n, n, n];
            b.truncate(8 + (n as usize % 5));
            let _ = decode(&b);
        }
    }

    #[test]
    fn hresult_names() {
        assert_eq!(Hresult(0x59DA).name(), Some("E_PROXY_RAP_ACCESSDENIED"));
        assert_eq!(
            Hresult::parse("E_PROXY_TS_CONNECTFAILED"),
            Some(Hresult(0x8007_59DD))
        );
        assert_eq!(Hresult(0x1234_5678).label(), "0x12345678");
    }
}
