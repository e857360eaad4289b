//! The CredSSP question without credentials: on a TLS stream after the server selected HYBRID or
//! HYBRID_EX, send a TSRequest carrying an NTLM NEGOTIATE (MS-CSSP 2.2.1, MS-NLMP 2.2.1.1) and read
//! the server's TSRequest with the CHALLENGE, whose target info names the server (MS-NLMP 2.2.2.1).
//! The TSRequest is read and written by `wire::credssp`, the NTLM message by `decode::credssp`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::decode::credssp::{self as dc, NtlmFacts, NtlmMessageType};
use crate::wire::credssp::{self as wc, TsRequest};

/// The TSRequest version sent (what sspi 0.23, and so `rdprobe probe`, sends).
pub const CLIENT_TS_REQUEST_VERSION: u32 = 6;

/// NEGOTIATE flags (what sspi sends): UNICODE, OEM, REQUEST_TARGET, SIGN, SEAL, NTLM,
/// ALWAYS_SIGN, EXTENDED_SESSIONSECURITY, VERSION, 128, KEY_EXCH, 56 (MS-NLMP 2.2.2.5).
pub const NEGOTIATE_FLAGS: u32 = 0xe208_8297;

/// Largest server TSRequest read, in bytes (a CHALLENGE is a few hundred bytes).
pub const MAX_TS_REQUEST_LEN: usize = 64 * 1024;

/// An NTLM NEGOTIATE_MESSAGE without domain or workstation (MS-NLMP 2.2.1.1), with a VERSION.
pub fn negotiate_message() -> Vec<u8> {
    // VERSION: 10.0 build 19041, NTLMSSP_REVISION_W2K3 (MS-NLMP 2.2.2.10).
    crate::wire::ntlm::negotiate(
        NEGOTIATE_FLAGS,
        crate::wire::ntlm::Version {
            major: 10,
            minor: 0,
            build: 19041,
            revision: 0x0f,
        },
    )
}

/// What the server answered to the NEGOTIATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The server's TSRequest version.
    pub version: u32,
    pub ntlm: NtlmFacts,
}

/// Reads one DER TLV (the server's TSRequest) with a deadline, at most [`MAX_TS_REQUEST_LEN`].
async fn read_der<S: AsyncRead + Unpin>(s: &mut S, timeout: Duration) -> Result<Vec<u8>, String> {
    use crate::net::framed::{Framing, Reader};
    let frame = |b: &[u8]| match wc::frame_len(b) {
        Some(total) if total > MAX_TS_REQUEST_LEN => Err(format!(
            "server ts request of {total} bytes exceeds {MAX_TS_REQUEST_LEN}"
        )),
        Some(total) => Ok(Framing::Pdu(total)),
        None if b.len() > 6 => Err("the server's answer is not a der ts request".into()),
        None => Ok(Framing::Need(1)),
    };
    // Reads ahead in chunks (what follows the TSRequest is not used): room for one past the PDU.
    let reader = Reader {
        max_len: MAX_TS_REQUEST_LEN + 16 * 1024,
        exact: false,
    };
    let r = reader
        .read_within(s, &mut bytes::BytesMut::new(), timeout, frame)
        .await;
    r.map(|v| v.to_vec())
        .map_err(|e| super::read_error_text(e, timeout, "the server's ts request", "read: "))
}

/// Sends the NEGOTIATE and reads the CHALLENGE. Every wait is bounded by `timeout`.
pub async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    timeout: Duration,
) -> Result<Challenge, String> {
    let req = wc::ts_request_nego(CLIENT_TS_REQUEST_VERSION, &negotiate_message());
    match tokio::time::timeout(timeout, async {
        s.write_all(&req).await?;
        s.flush().await
    })
    .await
    {
        Err(_) => {
            return Err(format!(
                "write of the ts request timed out after {} ms: the server stopped reading",
                timeout.as_millis()
            ))
        }
        Ok(Err(e)) => return Err(format!("write: {e}")),
        Ok(Ok(())) => {}
    }
    let der = read_der(s, timeout).await?;
    interpret(&der)
}

/// The server's TSRequest → its version and the CHALLENGE's facts.
pub fn interpret(der: &[u8]) -> Result<Challenge, String> {
    let ts = TsRequest::parse(der)
        .map_err(|e| format!("malformed ts request at byte {}: {}", e.at, e.kind))?;
    if let Some((code, _)) = ts.error_code {
        let name = dc::ntstatus_name(code)
            .map(|n| format!("{n} "))
            .unwrap_or_default();
        return Err(format!(
            "the server answered errorCode {name}(0x{code:08X})"
        ));
    }
    let token = ts
        .nego_token()
        .ok_or("the server's ts request carries no negoToken")?;
    let ntlm = dc::parse_ntlm(token).ok_or("the server's negoToken holds no ntlm message")?;
    if ntlm.message_type != Some(NtlmMessageType::Challenge) {
        return Err(format!(
            "the server sent ntlm {:?}, not a challenge",
            ntlm.message_type
        ));
    }
    Ok(Challenge {
        version: ts.version,
        ntlm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_decodes_as_a_negotiate_with_the_flags() {
        let m = negotiate_message();
        assert_eq!(m.len(), 40);
        let f = dc::parse_ntlm(&m).expect("ntlm");
        assert_eq!(f.message_type, Some(NtlmMessageType::Negotiate));
        assert_eq!(f.negotiate_flags, NEGOTIATE_FLAGS);
        assert_eq!(f.error, None);
        assert_eq!(f.os_version.as_deref(), Some("10.0.19041"));
        let ts = dc::parse_ts_request(&dc::encode_ts_request_nego(6, &m)).expect("ts request");
        assert_eq!(ts.version, 6);
        assert_eq!(ts.nego_token.as_deref(), Some(&m[..]));
    }

    #[test]
    fn an_error_code_or_a_non_challenge_is_an_error_not_facts() {
        let e = interpret(&dc::encode_ts_request_error(6, 0xC000_006D)).unwrap_err();
        assert!(e.contains("0xC000006D"), "{e}");
        let neg = dc::encode_ts_request_nego(6, &negotiate_message());
        assert!(interpret(&neg).unwrap_err().contains("not a challenge"));
        assert!(interpret(&[0x30, 0x03, 0x02]).is_err());
    }

    #[tokio::test]
    async fn a_silent_or_oversized_server_ends_with_an_error() {
        let (mut a, _b) = tokio::io::duplex(1024);
        let e = challenge(&mut a, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        let (mut a, mut b) = tokio::io::duplex(1024);
        // A DER header announcing 16 MiB.
        b.write_all(&[0x30, 0x84, 0x01, 0, 0, 0]).await.unwrap();
        let e = challenge(&mut a, Duration::from_secs(1)).await.unwrap_err();
        assert!(e.contains("exceeds"), "{e}");
    }
}
