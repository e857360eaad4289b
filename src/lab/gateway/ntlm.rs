//! Server side of NTLM over HTTP (RFC 4559 style: `Authorization: NTLM <token>` rounds) for the lab
//! gateway, on sspi's NTLM acceptor like the lab's CredSSP.

use sspi::{
    AuthIdentity, AuthIdentityBuffers, BufferType, DataRepresentation, Ntlm, SecurityBuffer,
    ServerRequestFlags, Sspi as _, Username,
};

use crate::scenario::User;

/// One NTLM exchange (NEGOTIATE → CHALLENGE → AUTHENTICATE) on one HTTP connection.
pub(crate) struct NtlmServer {
    ntlm: Ntlm,
    users: Vec<User>,
}

/// What an NTLM round gave.
pub(crate) enum Round {
    /// Send this CHALLENGE back in a 401.
    Challenge(Vec<u8>),
    /// The AUTHENTICATE checked out for this user.
    Accepted(String),
    /// Wrong user, wrong password or a bad token: what went wrong.
    Rejected(String),
}

impl NtlmServer {
    pub(crate) fn new(users: Vec<User>) -> Self {
        NtlmServer {
            ntlm: Ntlm::new(),
            users,
        }
    }

    /// Processes one client token (type 1 or type 3). Never panics on hostile tokens (sspi's
    /// parsers check lengths; its `expect`s only guard states this code never enters).
    pub(crate) fn round(&mut self, token: &[u8]) -> Round {
        match crate::lab::credssp::ntlm_message_type(token) {
            Some(1) => match self.accept(token, &mut None) {
                Ok(challenge) => Round::Challenge(challenge),
                Err(e) => Round::Rejected(format!("bad NEGOTIATE: {e}")),
            },
            Some(3) => {
                let (name, domain) = authenticate_user(token).unwrap_or_default();
                let Some(user) = self.users.iter().find(|u| {
                    u.name.eq_ignore_ascii_case(&name)
                        && u.domain
                            .as_deref()
                            .is_none_or(|d| d.eq_ignore_ascii_case(&domain))
                }) else {
                    return Round::Rejected(format!("unknown user {name:?}"));
                };
                let Some(password) = user.secret() else {
                    return Round::Rejected("the account's password variable is unset".into());
                };
                let Ok(username) =
                    Username::new(&name, (!domain.is_empty()).then_some(domain.as_str()))
                else {
                    return Round::Rejected(format!("bad user name {name:?}"));
                };
                let identity = AuthIdentity {
                    username,
                    password: password.into(),
                };
                let r = self
                    .accept(token, &mut Some(identity.into()))
                    .and_then(|_| self.ntlm.complete_auth_token(&mut []));
                match r {
                    Ok(_) => Round::Accepted(name),
                    Err(e) => Round::Rejected(format!("logon failure for {name:?}: {e}")),
                }
            }
            _ => Round::Rejected("not an NTLM NEGOTIATE or AUTHENTICATE".into()),
        }
    }

    /// One step of sspi's NTLM acceptor on the client's `token` (with the account's credentials
    /// for an AUTHENTICATE): the token to answer with.
    fn accept(
        &mut self,
        token: &[u8],
        creds: &mut Option<AuthIdentityBuffers>,
    ) -> sspi::Result<Vec<u8>> {
        let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        self.ntlm
            .accept_security_context()
            .with_credentials_handle(creds)
            .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(&mut input)
            .with_output(&mut output)
            .execute(&mut self.ntlm)
            .and_then(|mut g| g.resolve_to_result())?;
        Ok(output.swap_remove(0).buffer)
    }
}

/// User and domain names of an NTLM AUTHENTICATE (MS-NLMP 2.2.1.3), when Unicode.
fn authenticate_user(t: &[u8]) -> Option<(String, String)> {
    let field = |at: usize| -> Option<String> {
        let len = u16::from_le_bytes([*t.get(at)?, *t.get(at + 1)?]) as usize;
        let off = u32::from_le_bytes([
            *t.get(at + 4)?,
            *t.get(at + 5)?,
            *t.get(at + 6)?,
            *t.get(at + 7)?,
        ]) as usize;
        let b = t.get(off..off.checked_add(len)?)?;
        let u: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(String::from_utf16_lossy(&u))
    };
    Some((field(36)?, field(28)?))
}
