//! Network helpers shared by the commands that connect (probe, enum): name resolution with a
//! deadline, `framed`, the one deadline reader of framed PDUs, and `write_all`, the deadline write
//! (gateway client, lab gateway, legacy transport).

pub mod framed;

use std::net::SocketAddr;
use std::time::Duration;

/// Writes and flushes `b` within `t`. A peer that stops reading (its receive window stays shut)
/// ends the write with [`write_timed_out`].
pub async fn write_all<S: tokio::io::AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    b: &[u8],
    t: Duration,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let w = async {
        s.write_all(b).await?;
        s.flush().await
    };
    tokio::time::timeout(t, w)
        .await
        .unwrap_or_else(|_| Err(write_timed_out(t)))
}

/// The error of a write that did not end within `t` (kind `TimedOut`).
pub fn write_timed_out(t: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "write timed out after {} ms: the peer stopped reading",
            t.as_millis()
        ),
    )
}

/// Most addresses kept from one name resolution.
const MAX_ADDRESSES: usize = 16;

/// Resolves `host` (a name, an IP address, or a bracketed IPv6 address) to its first address,
/// within `timeout`.
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    resolve_all(host, port, timeout).await.map(|(a, _)| a)
}

/// The address to connect to and every address a name resolved to (at most 16; empty when
/// `host` was an address already), within `timeout`.
pub async fn resolve_all(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(SocketAddr, Vec<SocketAddr>), String> {
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
    {
        return Ok((SocketAddr::new(ip, port), Vec::new()));
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!("name resolution of {host} timed out")),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Ok(Ok(it)) => {
            let all: Vec<SocketAddr> = it.take(MAX_ADDRESSES).collect();
            all.first()
                .copied()
                .map(|a| (a, all))
                .ok_or_else(|| format!("{host} has no address"))
        }
    }
}

/// One name resolution as the probe's `dns` stage reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsLookup {
    /// The name looked up.
    pub name: String,
    /// Every address it resolved to (at most 16), in the resolver's order.
    pub addresses: Vec<std::net::IpAddr>,
    /// When the lookup started, microseconds since the Unix epoch.
    pub start_us: u64,
    /// How long the lookup took, microseconds.
    pub took_us: u64,
    /// Why the name did not resolve.
    pub error: Option<String>,
    /// The address the probe connected to.
    pub tried: Option<std::net::IpAddr>,
}

/// Resolves `host` when it is a name (None for an address), timing the lookup, within `timeout`.
pub async fn lookup(host: &str, port: u16, timeout: Duration) -> Option<DnsLookup> {
    if host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return None;
    }
    let start_us = crate::trace::now_us();
    let started = std::time::Instant::now();
    let r = resolve_all(host, port, timeout).await;
    let took_us = started.elapsed().as_micros() as u64;
    Some(match r {
        Ok((first, all)) => DnsLookup {
            name: host.to_owned(),
            addresses: all.iter().map(|a| a.ip()).collect(),
            start_us,
            took_us,
            error: None,
            tried: Some(first.ip()),
        },
        Err(e) => DnsLookup {
            name: host.to_owned(),
            addresses: Vec::new(),
            start_us,
            took_us,
            error: Some(e),
            tried: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_the_peer_does_not_read_times_out() {
        use tokio::io::AsyncReadExt as _;
        let (mut near, mut far) = tokio::io::duplex(8);
        write_all(&mut near, b"12345678", Duration::from_millis(200))
            .await
            .expect("fits the pipe");
        let t = Duration::from_millis(100);
        let e = write_all(&mut near, b"more than fits", t)
            .await
            .expect_err("the peer does not read");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(
            e.to_string(),
            "write timed out after 100 ms: the peer stopped reading"
        );
        let mut b = [0u8; 8];
        far.read_exact(&mut b).await.expect("read");
        assert_eq!(&b, b"12345678");
    }
}
