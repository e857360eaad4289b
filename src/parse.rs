//! Values people type, parsed once for the command line and for the files it reads (the
//! expectations of `rdprobe check`): durations and targets. Errors are sentences for the user.

use std::net::SocketAddr;
use std::time::Duration;

/// Longest duration accepted anywhere (24 h).
const MAX_DURATION_SECS: f64 = 86_400.0;

/// Parses "5s", "500ms", "2m", "1.5s" or a bare number of seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (examples: 5s, 500ms, 2m)"))?;
    if v.is_nan() || v <= 0.0 || !v.is_finite() || v * mul > MAX_DURATION_SECS {
        return Err(format!("duration `{s}` out of range (0 < d <= 24h)"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

/// Splits HOST, HOST:PORT, [V6]:PORT or a bare IPv6 address; the port defaults to 3389.
pub fn target(t: &str) -> Result<(String, u16), String> {
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), 3389));
    }
    if let Some(rest) = t.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid target `{t}`"))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("invalid port in `{t}`"))?,
            None => 3389,
        };
        return Ok((h.to_owned(), port));
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => {
            let port: u16 = p
                .parse()
                .map_err(|_| format!("invalid port `{p}` in `{t}`"))?;
            Ok((h.to_owned(), port))
        }
        _ if !t.is_empty() => Ok((t.to_owned(), 3389)),
        _ => Err("empty target".to_owned()),
    }
}

/// A code written as a number: hex with `0x` (underscores allowed, `0xC000_006D`) or decimal.
pub fn code_number(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(&hex.replace('_', ""), 16).ok()
    } else {
        t.parse::<u32>().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_targets() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration(" 1.5s "), Ok(Duration::from_millis(1500)));
        assert!(duration("0s").is_err());
        assert!(duration("25h").is_err());
        assert!(duration("fast").is_err());
        assert_eq!(target("h"), Ok(("h".into(), 3389)));
        assert_eq!(target("h:3390"), Ok(("h".into(), 3390)));
        assert_eq!(target("[::1]:5"), Ok(("::1".into(), 5)));
        assert_eq!(target("::1"), Ok(("::1".into(), 3389)));
        assert!(target("h:99999").is_err());
        assert!(target("").is_err());
        assert_eq!(code_number("0xC000_006D"), Some(0xC000_006D));
        assert_eq!(code_number(" 5 "), Some(5));
        assert_eq!(code_number("STATUS_LOGON_FAILURE"), None);
    }
}
