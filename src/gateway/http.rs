//! HTTP/1.1 for the gateway hop: one message head at a time, with a deadline and a size bound, for
//! both ends (the probe reads responses, the lab gateway reads requests); the WebSocket key / accept
//! pair (RFC 6455 4.2.2) and the `Authorization` / `WWW-Authenticate` tokens (RFC 4559 for NTLM,
//! RFC 7617 for Basic). Heads are parsed by `httparse`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest HTTP head either end reads, in bytes (status line or request line plus headers).
pub const MAX_HEAD_LEN: usize = 32 * 1024;
/// Most headers in one head.
const MAX_HEADERS: usize = 64;
/// Largest response body the probe reads (a login page, an error page), in bytes; the rest is left.
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// Why a head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("closed by the peer after {0} bytes")]
    Closed(usize),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("head larger than {MAX_HEAD_LEN} bytes")]
    TooLarge,
    #[error("not HTTP: {0}")]
    NotHttp(String),
}

/// A parsed head: the start line's parts and the headers in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Request: method; response: empty.
    pub method: String,
    /// Request: path; response: empty.
    pub path: String,
    /// Response: status; request: 0.
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of that header name, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Content-Length`, when present and a number.
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.trim().parse().ok()
    }
}

/// Reads one head from `s` (bytes already buffered in `buf` count), within `timeout`. On success the
/// head is removed from `buf` and what followed it stays there.
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    timeout: Duration,
    request: bool,
) -> Result<Head, HeadError> {
    let start = Instant::now();
    loop {
        if let Some(end) = find_end(buf) {
            let head = parse(&buf[..end], request)?;
            buf.drain(..end);
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD_LEN {
            return Err(HeadError::TooLarge);
        }
        // A TLS record or RDP data where HTTP was expected is not worth waiting for.
        if buf.len() >= 8 && !buf[..8].iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(HeadError::NotHttp(preview(buf)));
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(HeadError::Timeout(start.elapsed().as_millis() as u64));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => return Err(HeadError::Timeout(start.elapsed().as_millis() as u64)),
            Ok(Ok(0)) => return Err(HeadError::Closed(buf.len())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(HeadError::Io(e)),
        }
    }
}

/// Reads up to `n` body bytes (bounded by [`MAX_BODY_LEN`]) within `timeout`; what arrived in time.
pub async fn read_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    n: usize,
    timeout: Duration,
) -> Vec<u8> {
    let want = n.min(MAX_BODY_LEN);
    let start = Instant::now();
    while buf.len() < want {
        let left = timeout.saturating_sub(start.elapsed());
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
            _ => break,
        }
    }
    let take = want.min(buf.len());
    let body = buf[..take].to_vec();
    buf.drain(..take);
    body
}

/// Parses one head at the start of `buf` without I/O (for `analyze` of a capture): `Ok(None)` while
/// the head is incomplete, else the head and its length in bytes. Bounded like [`read_head`].
pub fn parse_head(buf: &[u8], request: bool) -> Result<Option<(Head, usize)>, HeadError> {
    match find_end(&buf[..buf.len().min(MAX_HEAD_LEN)]) {
        Some(end) => Ok(Some((parse(&buf[..end], request)?, end))),
        None if buf.len() >= MAX_HEAD_LEN => Err(HeadError::TooLarge),
        None if buf.len() >= 8 && !buf[..8].iter().all(|b| b.is_ascii_graphic() || *b == b' ') => {
            Err(HeadError::NotHttp(preview(buf)))
        }
        None => Ok(None),
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn preview(b: &[u8]) -> String {
    let p: Vec<String> = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
    format!("first bytes {}", p.join(" "))
}

fn parse(b: &[u8], request: bool) -> Result<Head, HeadError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = Head::default();
    let bad = |e: httparse::Error| HeadError::NotHttp(e.to_string());
    if request {
        let mut r = httparse::Request::new(&mut hs);
        if let httparse::Status::Partial = r.parse(b).map_err(bad)? {
            return Err(HeadError::NotHttp("partial head".into()));
        }
        head.method = r.method.unwrap_or_default().to_owned();
        head.path = r.path.unwrap_or_default().to_owned();
        head.headers = collect(r.headers);
    } else {
        let mut r = httparse::Response::new(&mut hs);
        if let httparse::Status::Partial = r.parse(b).map_err(bad)? {
            return Err(HeadError::NotHttp("partial head".into()));
        }
        head.status = r.code.unwrap_or_default();
        head.reason = r.reason.unwrap_or_default().to_owned();
        head.headers = collect(r.headers);
    }
    Ok(head)
}

fn collect(hs: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    hs.iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect()
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2).
pub fn websocket_accept(key: &str) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh `Sec-WebSocket-Key`.
pub fn websocket_key() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let mut seed = [0u8; 16];
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    seed.copy_from_slice(&t.to_le_bytes());
    b64(&seed)
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Decodes base64, bounded by [`MAX_HEAD_LEN`] (a token inside one head).
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    if s.len() > MAX_HEAD_LEN {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

/// The authentication schemes of `WWW-Authenticate` headers (`["Negotiate", "NTLM", "Basic"]`).
pub fn schemes(head: &Head) -> Vec<String> {
    head.headers_named("www-authenticate")
        .flat_map(|v| v.split(','))
        .filter_map(|part| {
            let w = part.split_whitespace().next()?;
            // `realm="x"` after a comma belongs to the previous scheme.
            (!w.contains('=')).then(|| w.to_owned())
        })
        .collect()
}

/// The token of `scheme` in an `Authorization` or `WWW-Authenticate` value (`NTLM TlRMTVNT...`).
pub fn token_of<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn heads_are_bounded_and_parsed() {
        let mut input: &[u8] =
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\nrest";
        let mut buf = Vec::new();
        let h = read_head(&mut input, &mut buf, Duration::from_secs(1), false)
            .await
            .unwrap();
        assert_eq!(h.status, 401);
        assert_eq!(schemes(&h), ["Negotiate", "NTLM", "Basic"]);
        assert_eq!(buf, b"rest");
        let mut tls: &[u8] = &[0x16, 3, 1, 0, 0x80, 1, 0, 0, 0x7c, 3, 3];
        let mut buf = Vec::new();
        assert!(matches!(
            read_head(&mut tls, &mut buf, Duration::from_secs(1), false).await,
            Err(HeadError::NotHttp(_))
        ));
    }
}
