//! Server side of CredSSP for the lab (MS-CSSP 3.1.5), on sspi's `CredSspServer` with NTLM.
//!
//! ironrdp-acceptor's `CredsspSequence` knows a single identity; the lab checks several users, so it
//! supplies its own `CredentialsProxy`. Rejections are encoded by hand: TSRequest.errorCode as a 4-byte
//! INTEGER like Windows, or strictly DER, or not at all (see [`crate::scenario::ErrorCodeEncoding`]).

use sspi::credssp::{CredSspServer, CredentialsProxy, ServerError, ServerState, TsRequest};
use sspi::generator::GeneratorState;
use sspi::{AuthIdentity, Username};

use crate::scenario::{ErrorCodeEncoding, NtStatus, User};

/// The users a lab scenario accepts.
#[derive(Debug)]
pub(crate) struct LabCredentials {
    users: Vec<User>,
}

impl LabCredentials {
    pub(crate) fn new(users: Vec<User>) -> Self {
        LabCredentials { users }
    }

    fn identity(u: &User, as_named: &Username) -> std::io::Result<AuthIdentity> {
        Ok(AuthIdentity {
            username: as_named.clone(),
            password: u
                .secret()
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the account's password variable is unset",
                    )
                })?
                .into(),
        })
    }
}

impl CredentialsProxy for LabCredentials {
    type AuthenticationData = AuthIdentity;

    fn auth_data_by_user(&mut self, username: &Username) -> std::io::Result<AuthIdentity> {
        let account = username.account_name();
        let domain = match username.parts() {
            sspi::UsernameParts::DownLevelLogonName(p) => p.netbios_domain(),
            sspi::UsernameParts::UserPrincipalName(_) => None,
        };
        let user = self.users.iter().find(|u| {
            u.name.eq_ignore_ascii_case(account)
                && match (&u.domain, domain) {
                    (Some(d), Some(cd)) => d.eq_ignore_ascii_case(cd),
                    (Some(d), None) => d.is_empty(),
                    (None, _) => true,
                }
        });
        match user {
            Some(u) => Self::identity(u, username),
            None => Err(std::io::Error::other("unknown user")),
        }
    }

    fn auth_data(&mut self) -> std::io::Result<Vec<AuthIdentity>> {
        Ok(self
            .users
            .iter()
            .filter_map(|u| {
                let name = Username::new(&u.name, u.domain.as_deref()).ok()?;
                Self::identity(u, &name).ok()
            })
            .collect())
    }
}

/// Which NTLM message a negoToken carries (MS-NLMP 2.2.1): 1 NEGOTIATE, 2 CHALLENGE, 3 AUTHENTICATE.
pub(crate) fn ntlm_message_type(token: &[u8]) -> Option<u32> {
    crate::wire::ntlm::message_type(crate::wire::ntlm::find(token)?).ok()
}

/// Length of an NTLM message signature (MS-NLMP 2.2.2.9), in bytes.
const NTLM_SIGNATURE_LEN: usize = 16;

/// Runs one `process` call of the CredSSP server to completion. NTLM needs no network; a network
/// request (Kerberos) is answered with an error.
pub(crate) fn process(
    server: &mut CredSspServer<LabCredentials>,
    request: TsRequest,
) -> Result<ServerState, ServerError> {
    // sspi 0.23.0 splits pubKeyAuth and authInfo at the 16-byte NTLM signature (MS-NLMP 2.2.2.9)
    // without checking their length and panics on a shorter one (found by `rdprobe fuzz --stage
    // credssp` in rounds 2 and 3): refuse those here, as a logon failure.
    for (name, field) in [
        ("pubKeyAuth", &request.pub_key_auth),
        ("authInfo", &request.auth_info),
    ] {
        if field.as_ref().is_some_and(|f| f.len() < NTLM_SIGNATURE_LEN) {
            return Err(ServerError {
                ts_request: None,
                error: sspi::Error::new(
                    sspi::ErrorKind::InvalidToken,
                    format!("{name} shorter than the {NTLM_SIGNATURE_LEN}-byte NTLM signature"),
                ),
            });
        }
    }
    let mut generator = server.process(request);
    let mut state = generator.start();
    // INVARIANT: bounded — each resume answers one network request with an error; NTLM makes none.
    for _ in 0..8 {
        match state {
            GeneratorState::Completed(result) => return result,
            GeneratorState::Suspended(_) => {
                state = generator.resume(Err(sspi::Error::new(
                    sspi::ErrorKind::NoAuthenticatingAuthority,
                    "the lab has no network for authentication",
                )));
            }
        }
    }
    match state {
        GeneratorState::Completed(result) => result,
        GeneratorState::Suspended(_) => Err(ServerError {
            ts_request: None,
            error: sspi::Error::new(sspi::ErrorKind::InternalError, "too many network requests"),
        }),
    }
}

/// Encodes a TSRequest `{ version, errorCode }` (MS-CSSP 2.2.1). `None` for [`ErrorCodeEncoding::None`].
pub(crate) fn encode_error_ts_request(
    version: u32,
    status: NtStatus,
    encoding: ErrorCodeEncoding,
) -> Option<Vec<u8>> {
    use crate::wire::credssp::{ts_request_error, ErrorCodeEncoding as Wire};
    let enc = match encoding {
        ErrorCodeEncoding::None => return None,
        ErrorCodeEncoding::Int4 => Wire::Windows4Byte,
        ErrorCodeEncoding::Der => Wire::StrictDer,
    };
    Some(ts_request_error(version, status.0, enc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_ts_request_encodings() {
        let w = encode_error_ts_request(6, NtStatus::LOGON_FAILURE, ErrorCodeEncoding::Int4)
            .expect("some");
        assert_eq!(
            w,
            [
                0x30, 0x0d, 0xa0, 0x03, 0x02, 0x01, 0x06, 0xa4, 0x06, 0x02, 0x04, 0xc0, 0x00, 0x00,
                0x6d
            ]
        );
        let d = encode_error_ts_request(6, NtStatus::LOGON_FAILURE, ErrorCodeEncoding::Der)
            .expect("some");
        assert_eq!(
            &d[7..],
            [0xa4, 0x07, 0x02, 0x05, 0x00, 0xc0, 0x00, 0x00, 0x6d]
        );
        assert_eq!(d[1] as usize, d.len() - 2);
        assert!(
            encode_error_ts_request(6, NtStatus::LOGON_FAILURE, ErrorCodeEncoding::None).is_none()
        );
        // sspi reads the Windows form back.
        let ts = TsRequest::from_buffer(&w).expect("sspi decodes a 4-byte errorCode");
        assert_eq!(ts.error_code.map(|c| c.0), Some(0xC000_006D));
    }

    #[test]
    fn ntlm_types() {
        let mut t = b"\x60\x10junkNTLMSSP\0".to_vec();
        t.extend_from_slice(&3u32.to_le_bytes());
        assert_eq!(ntlm_message_type(&t), Some(3));
        assert_eq!(ntlm_message_type(b"NTLMSSP\0\x01"), None);
        assert_eq!(ntlm_message_type(b""), None);
    }
}
