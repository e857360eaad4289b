//! Loopback ports and a raw X.224 negotiation client (MS-RDPBCGR 2.2.1.1–2.2.1.2).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `requestedProtocols` / `selectedProtocol` bits (MS-RDPBCGR 2.2.1.1.1).
pub const PROTOCOL_RDP: u32 = 0x0000_0000;
pub const PROTOCOL_SSL: u32 = 0x0000_0001;
pub const PROTOCOL_HYBRID: u32 = 0x0000_0002;
pub const PROTOCOL_RDSTLS: u32 = 0x0000_0004;
pub const PROTOCOL_HYBRID_EX: u32 = 0x0000_0008;

/// RDP_NEG_FAILURE `failureCode` values (MS-RDPBCGR 2.2.1.2.2).
pub const SSL_REQUIRED_BY_SERVER: u32 = 0x0000_0001;
pub const SSL_NOT_ALLOWED_BY_SERVER: u32 = 0x0000_0002;
pub const SSL_CERT_NOT_ON_SERVER: u32 = 0x0000_0003;
pub const INCONSISTENT_FLAGS: u32 = 0x0000_0004;
pub const HYBRID_REQUIRED_BY_SERVER: u32 = 0x0000_0005;
pub const SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER: u32 = 0x0000_0006;

/// Ports handed out by [`free_port`] in this process, so that two parallel tests never get the same.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that nothing listens on right now and that this process has not handed
/// out before. It lies below the kernel's ephemeral range, so no client socket (xfreerdp, a probe)
/// and no `bind(0)` can take it between this call and the peer's own bind.
pub fn free_port() -> u16 {
    let (low, high) = non_ephemeral_range();
    let span = u32::from(high - low);
    let mut candidate = super::certs::rand_u32() % span;
    for _ in 0..span.min(4096) {
        candidate = (candidate + 7919) % span; // a prime stride visits the span in a scattered order
        let port = low + candidate as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}")
}

/// Ports below the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`) and above the
/// registered well-known services: 20000 up to the range's start (32768 on Debian).
fn non_ephemeral_range() -> (u16, u16) {
    const LOW: u16 = 20000;
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    if start > LOW + 1000 {
        (LOW, start)
    } else {
        (LOW, 30000)
    }
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port on 127.0.0.1 where nothing listens (connecting is refused).
pub fn closed_port() -> u16 {
    free_port()
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)).is_ok()
}

/// What the server answered to an X.224 Connection Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegOutcome {
    /// RDP_NEG_RSP: the server selected `protocol`, with `flags`.
    Selected { protocol: u32, flags: u8 },
    /// RDP_NEG_FAILURE with `code`.
    Failure { code: u32 },
    /// A Connection Confirm without negotiation data (a pre-RDP-5.2 server: standard RDP security).
    NoNegotiation,
}

/// An X.224 Connection Request TPDU in TPKT, with an optional `Cookie: mstshash=` and an RDP_NEG_REQ
/// asking for `protocols` (MS-RDPBCGR 2.2.1.1).
pub fn connection_request(cookie: Option<&str>, protocols: u32) -> Vec<u8> {
    let mut x224 = vec![0xE0, 0, 0, 0, 0, 0]; // CR CDT, DST-REF, SRC-REF, class 0
    if let Some(cookie) = cookie {
        x224.extend_from_slice(format!("Cookie: mstshash={cookie}\r\n").as_bytes());
    }
    x224.extend_from_slice(&[0x01, 0x00, 0x08, 0x00]); // TYPE_RDP_NEG_REQ, flags, length 8
    x224.extend_from_slice(&protocols.to_le_bytes());
    let li = u8::try_from(x224.len()).expect("x224 length fits the LI octet");
    let total = u16::try_from(4 + 1 + x224.len()).expect("tpkt length");
    let mut tpkt = vec![0x03, 0x00];
    tpkt.extend_from_slice(&total.to_be_bytes());
    tpkt.push(li);
    tpkt.extend_from_slice(&x224);
    tpkt
}

/// An X.224 Connection Confirm with RDP_NEG_RSP selecting `protocol` (MS-RDPBCGR 2.2.1.2.1).
pub fn connection_confirm(protocol: u32, flags: u8) -> Vec<u8> {
    neg_confirm(0x02, flags, protocol)
}

/// An X.224 Connection Confirm with RDP_NEG_FAILURE `code` (MS-RDPBCGR 2.2.1.2.2).
pub fn connection_failure(code: u32) -> Vec<u8> {
    neg_confirm(0x03, 0, code)
}

fn neg_confirm(kind: u8, flags: u8, value: u32) -> Vec<u8> {
    let mut out = vec![
        0x03, 0x00, 0x00, 0x13, 0x0E, 0xD0, 0x00, 0x00, 0x12, 0x34, 0x00,
    ];
    out.extend_from_slice(&[kind, flags, 0x08, 0x00]);
    out.extend_from_slice(&value.to_le_bytes());
    out
}

/// `requestedProtocols` of an X.224 Connection Request (or `None` when it carries no RDP_NEG_REQ).
pub fn requested_protocols(request: &[u8]) -> Option<u32> {
    let total = usize::from(u16::from_be_bytes([*request.get(2)?, *request.get(3)?]));
    let tpdu = request.get(..total)?;
    // The RDP_NEG_REQ is the last 8 bytes of the TPDU when present.
    let neg = tpdu.get(total.checked_sub(8)?..)?;
    if total >= 4 + 7 + 8 && neg[0] == 0x01 && neg[2] == 0x08 && neg[3] == 0x00 {
        Some(u32::from_le_bytes([neg[4], neg[5], neg[6], neg[7]]))
    } else {
        None
    }
}

/// Parses a Connection Confirm TPKT.
pub fn parse_confirm(bytes: &[u8]) -> Result<NegOutcome> {
    if bytes.len() < 11 {
        bail!("connection confirm too short: {} bytes", bytes.len());
    }
    if bytes[0] != 0x03 {
        bail!("not a tpkt: first byte {:#04x}", bytes[0]);
    }
    let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if bytes[5] & 0xF0 != 0xD0 {
        bail!("not a connection confirm: x224 code {:#04x}", bytes[5]);
    }
    if total < 19 {
        return Ok(NegOutcome::NoNegotiation);
    }
    let neg = bytes
        .get(11..19)
        .context("connection confirm shorter than its tpkt length")?;
    let value = u32::from_le_bytes([neg[4], neg[5], neg[6], neg[7]]);
    match neg[0] {
        0x02 => Ok(NegOutcome::Selected {
            protocol: value,
            flags: neg[1],
        }),
        0x03 => Ok(NegOutcome::Failure { code: value }),
        other => bail!("unknown negotiation type {other:#04x}"),
    }
}

/// Reads one TPKT (header length included) from `stream`, at most `max` bytes.
pub fn read_tpkt(stream: &mut impl Read, max: usize) -> Result<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).context("read tpkt header")?;
    if header[0] != 0x03 {
        bail!("not a tpkt: first byte {:#04x}", header[0]);
    }
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !(4..=max).contains(&total) {
        bail!("tpkt length {total} out of range");
    }
    let mut out = header.to_vec();
    out.resize(total, 0);
    stream.read_exact(&mut out[4..]).context("read tpkt body")?;
    Ok(out)
}

/// Connects to 127.0.0.1:`port`, sends a Connection Request offering `protocols` and returns the
/// server's answer. Every wait is bounded by `timeout`.
pub fn x224_negotiate(port: u16, protocols: u32, timeout: Duration) -> Result<NegOutcome> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), timeout)
        .with_context(|| format!("connect 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&connection_request(Some("rdprobe"), protocols))?;
    let confirm = read_tpkt(&mut stream, 512)?;
    parse_confirm(&confirm)
}

/// Human-readable protocol bits, for messages.
pub fn protocol_name(protocol: u32) -> String {
    if protocol == PROTOCOL_RDP {
        return "PROTOCOL_RDP".into();
    }
    let names = [
        (PROTOCOL_SSL, "PROTOCOL_SSL"),
        (PROTOCOL_HYBRID, "PROTOCOL_HYBRID"),
        (PROTOCOL_RDSTLS, "PROTOCOL_RDSTLS"),
        (PROTOCOL_HYBRID_EX, "PROTOCOL_HYBRID_EX"),
    ];
    let parts: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| protocol & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    parts.join("|")
}
