//! Network helpers shared by the commands that connect (probe, enum).

use std::net::SocketAddr;
use std::time::Duration;

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
