//! Network helpers shared by the commands that connect (probe, enum).

use std::net::SocketAddr;
use std::time::Duration;

/// Resolves `host` (a name, an IP address, or a bracketed IPv6 address) to its first address,
/// within `timeout`.
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port));
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!("name resolution of {host} timed out")),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Ok(Ok(mut it)) => it.next().ok_or_else(|| format!("{host} has no address")),
    }
}
