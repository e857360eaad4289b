//! The code tables `rdprobe explain` reads: the rows of [`crate::codes`] that carry a meaning, and
//! the explanations of NTSTATUS codes, keyed by code (their names are only in
//! [`crate::codes::NTSTATUS_NAMES`]). Rows that only name a code (decode reports the name) are left
//! out here, so `explain` says nothing it cannot explain.

use crate::stage::Stage;

pub use crate::codes::{
    Code, CMD_CREDSSP, CMD_FULL, CMD_GATEWAY, CMD_LICENSING, CMD_LOCAL, CMD_MCS, CMD_PROBE,
    CMD_TCP, CMD_TLS, CMD_X224, EXTENDED_REASONS, GATEWAY_HRESULTS, MSTSC_DOCUMENTED,
    MSTSC_INTERNAL, NEG_FAILURES, SET_ERROR_INFO,
};

/// An explained NTSTATUS row: the name comes from [`crate::codes::NTSTATUS_NAMES`] when compiled
/// (a code without a name there does not compile).
const fn nt(code: u32, meaning: &'static str) -> Code {
    let name = match crate::codes::ntstatus_name(code) {
        Some(n) => n,
        None => panic!("an explained NTSTATUS code has no name in codes::NTSTATUS_NAMES"),
    };
    Code {
        code,
        name,
        stage: Stage::Credssp,
        meaning,
        command: CMD_CREDSSP,
    }
}

/// What the NTSTATUS (and SSPI HRESULT) codes seen in CredSSP TSRequest.errorCode mean
/// (MS-CSSP 2.2.1, MS-ERREF).
pub static NTSTATUS: &[Code] = &[
    nt(0xC000006D, "the user name or password is wrong (the server does not say which)"),
    nt(0xC000006A, "the password is wrong"),
    nt(0xC0000064, "the user does not exist (on the server or in the domain given)"),
    nt(0xC000006E, "an account restriction prevents the logon (e.g. a blank password, which Windows allows only at the console)"),
    nt(0xC000006F, "the account may not log on at this time of day"),
    nt(0xC0000070, "the account may not log on from this workstation"),
    nt(0xC0000071, "the password has expired"),
    nt(0xC0000072, "the account is disabled"),
    nt(0xC0000193, "the account has expired"),
    nt(0xC0000224, "the password must be changed before the first logon"),
    nt(0xC0000234, "the account is locked out after too many failed logons"),
    nt(0xC000015B, "the user has not been granted the remote interactive logon right ('Allow log on through Remote Desktop Services')"),
    nt(0xC0000022, "access denied to the user"),
    nt(0xC000005E, "the server could not reach a domain controller to check the credentials"),
    nt(0xC0000133, "the clocks of the server and the domain controller differ too much"),
    nt(0xC000018B, "the server's trust relationship with the domain is broken"),
    nt(0xC0000413, "selective authentication across a forest trust does not allow this user on this server"),
    nt(0xC0000380, "the smart card PIN is wrong"),
    nt(0x8009030C, "the logon was denied (an SSPI HRESULT some servers put in errorCode)"),
    nt(0x8009030E, "no credentials are available to the security package"),
    nt(0x80090302, "the security package rejected the request: often a CredSSP version / 'encryption oracle remediation' mismatch \
       between an updated and an unpatched peer"),
    nt(0x80090308, "the NTLM / SPNEGO token was invalid"),
    nt(0x80090311, "no authority (domain controller) could be contacted"),
    nt(0x80090322, "the target principal name is wrong (Kerberos SPN mismatch)"),
];

/// Finds the explained row of `code` in `table`.
pub fn find(table: &'static [Code], code: u32) -> Option<&'static Code> {
    crate::codes::find(table, code).filter(|e| e.is_explained())
}

/// Finds an explained row by name (case-insensitive) in `table`.
pub fn find_name(table: &'static [Code], name: &str) -> Option<&'static Code> {
    crate::codes::find_name(table, name).filter(|e| e.is_explained())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntstatus_explanations_take_their_names_from_the_one_table() {
        for e in NTSTATUS {
            assert!(e.is_explained(), "{}", e.name);
            assert_eq!(crate::codes::ntstatus_name(e.code), Some(e.name));
        }
        for (i, a) in NTSTATUS.iter().enumerate() {
            assert!(
                NTSTATUS[i + 1..].iter().all(|b| b.code != a.code),
                "{}",
                a.name
            );
        }
        // Named, not explained: decode names it, explain does not list it.
        assert_eq!(
            crate::codes::ntstatus_name(0xC000_0203),
            Some("STATUS_USER_SESSION_DELETED")
        );
        assert!(find(NTSTATUS, 0xC000_0203).is_none());
        assert_eq!(
            find_name(NTSTATUS, "status_logon_failure").map(|e| e.code),
            Some(0xC000_006D)
        );
    }
}
