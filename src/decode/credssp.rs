//! CredSSP TSRequest (MS-CSSP 2.2.1) and NTLM (MS-NLMP 2.2.1) decoding for the `credssp` stage:
//! pure, no I/O, never panics. Written by hand because sspi's decoder rejects strictly-DER
//! errorCode encodings and does not expose partial results on malformed input.

use serde::{Deserialize, Serialize};

/// What a TSRequest carried.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TsRequestFacts {
    pub version: u32,
    /// Raw negoTokens (SPNEGO or raw NTLMSSP), first token only.
    #[serde(skip)]
    pub nego_token: Option<Vec<u8>>,
    pub has_auth_info: bool,
    pub has_pub_key_auth: bool,
    /// NTSTATUS from errorCode (version >= 3)
    pub error_code: Option<u32>,
    pub has_client_nonce: bool,
}

/// Length of a complete DER TLV at the start of `buf` (header + content), or None if incomplete
/// or not a valid DER header. Used to frame TSRequests in the inner stream.
pub fn der_frame_len(buf: &[u8]) -> Option<usize> {
    let _ = buf;
    None
}

/// Decodes one TSRequest. On error: description and byte offset within `buf`.
pub fn parse_ts_request(buf: &[u8]) -> Result<TsRequestFacts, (String, usize)> {
    let _ = buf;
    Err(("not implemented".to_owned(), 0))
}

/// NTLM message types (MS-NLMP 2.2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NtlmMessageType {
    Negotiate,
    Challenge,
    Authenticate,
}

/// NTLM facts found in a token (raw NTLMSSP or wrapped in SPNEGO: search for "NTLMSSP\0").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NtlmFacts {
    pub message_type: Option<NtlmMessageType>,
    pub negotiate_flags: u32,
    /// From CHALLENGE target info (MsvAvNbComputerName etc.).
    pub nb_computer_name: Option<String>,
    pub nb_domain_name: Option<String>,
    pub dns_computer_name: Option<String>,
    pub dns_domain_name: Option<String>,
    pub dns_tree_name: Option<String>,
    /// "major.minor.build", from the VERSION field
    pub os_version: Option<String>,
    /// RFC 3339, from MsvAvTimestamp
    pub server_time: Option<String>,
    /// AUTHENTICATE: user and domain names (not secret; the response itself is never reported)
    pub user: Option<String>,
    pub domain: Option<String>,
    /// AUTHENTICATE carries an NTLMv2 response (the capture then holds a crackable hash).
    pub has_nt_response: bool,
}

/// Finds and decodes the NTLM message inside a negoToken.
pub fn parse_ntlm(token: &[u8]) -> Option<NtlmFacts> {
    let _ = token;
    None
}

/// Name of an NTSTATUS code seen in CredSSP errorCode, e.g. 0xC000006D -> "STATUS_LOGON_FAILURE".
pub fn ntstatus_name(code: u32) -> Option<&'static str> {
    let _ = code;
    None
}
