//! CredSSP TSRequest (MS-CSSP 2.2.1) and NTLM (MS-NLMP 2.2.1) facts for the `credssp` stage:
//! pure, no I/O, never panics. The TSRequest is read by `wire::credssp`; NTLM is read here by hand
//! because sspi's decoder does not expose partial results on malformed input.
//!
//! INVARIANT: every length read from the input is checked against the bytes present before it is
//! used to slice or to allocate.

use crate::wire::credssp as wire;
use crate::wire::cursor::le32;
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

/// Largest DER length accepted by [`der_frame_len`]: 4 length bytes (MS-CSSP messages are far
/// smaller; the caller bounds what it buffers).
pub const MAX_DER_LENGTH_BYTES: usize = wire::MAX_DER_LENGTH_BYTES;

/// Length of a complete DER TLV at the start of `buf` (header + content), or None if incomplete
/// or not a valid DER header: [`wire::frame_len`]. Frames TSRequests in the inner stream.
pub fn der_frame_len(buf: &[u8]) -> Option<usize> {
    wire::frame_len(buf)
}

/// Decodes one TSRequest ([`wire::TsRequest::parse`]) into the facts the stage machine reports.
/// On error: description and byte offset within `buf`.
pub fn parse_ts_request(buf: &[u8]) -> Result<TsRequestFacts, (String, usize)> {
    let ts = wire::TsRequest::parse(buf).map_err(|e| (e.kind.to_string(), e.at))?;
    Ok(TsRequestFacts {
        version: ts.version,
        nego_token: ts.nego_token().map(<[u8]>::to_vec),
        has_auth_info: ts.auth_info.is_some(),
        has_pub_key_auth: ts.pub_key_auth.is_some(),
        error_code: ts.error_code.map(|(c, _)| c),
        has_client_nonce: ts.client_nonce.is_some(),
    })
}

pub use wire::ErrorCodeEncoding;

/// A TSRequest carrying only version and errorCode (MS-CSSP 2.2.1, 3.1.5.2: what a server sends
/// when authentication fails), with the errorCode INTEGER as Windows encodes it (4 bytes).
pub fn encode_ts_request_error(version: u32, ntstatus: u32) -> Vec<u8> {
    wire::ts_request_error(version, ntstatus, ErrorCodeEncoding::Windows4Byte)
}

/// [`encode_ts_request_error`] with a chosen errorCode encoding.
pub fn encode_ts_request_error_with(
    version: u32,
    ntstatus: u32,
    enc: ErrorCodeEncoding,
) -> Vec<u8> {
    wire::ts_request_error(version, ntstatus, enc)
}

/// A TSRequest carrying version and one negoToken (MS-CSSP 2.2.1.1).
pub fn encode_ts_request_nego(version: u32, token: &[u8]) -> Vec<u8> {
    wire::ts_request_nego(version, token)
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
    /// AUTHENTICATE: the client's workstation name.
    #[serde(default)]
    pub workstation: Option<String>,
    /// CHALLENGE: TargetName (the server's domain or computer name).
    #[serde(default)]
    pub target_name: Option<String>,
    /// Set when the message was cut short or a field pointed outside it: what could not be read.
    #[serde(default)]
    pub error: Option<String>,
}

use crate::wire::ntlm::{self as wn, layout, AvError, SecurityBuffer, Version};
/// The NTLMSSP signature and flags (MS-NLMP 2.2.1.1, 2.2.2.5), from `wire::ntlm`.
pub use crate::wire::ntlm::{
    NEGOTIATE_UNICODE as NTLMSSP_NEGOTIATE_UNICODE, NEGOTIATE_VERSION as NTLMSSP_NEGOTIATE_VERSION,
    SIGNATURE as NTLMSSP_SIGNATURE,
};

/// Seconds between 1601-01-01 (FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET_SECS: i64 = 11_644_473_600;

fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// OEM strings: decoded as Latin-1 (the OEM code page is not known to an observer).
fn oem(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// The payload a security-buffer field points at ([`SecurityBuffer::payload`]); Err(()) when it
/// points outside the message.
fn field(msg: &[u8], at: usize) -> Result<Option<&[u8]>, ()> {
    SecurityBuffer::payload(msg, at).map_err(|_| ())
}

/// "major.minor.build" of the VERSION at `at` when the flag says it is there and no payload
/// overlaps it.
fn version_string(msg: &[u8], flags: u32, at: usize, fields: &[usize]) -> Option<String> {
    Version::present(msg, flags, at, fields)
        .then(|| Version::read(msg, at))
        .flatten()
        .map(|v| v.to_string())
}

/// Finds and decodes the NTLM message inside a negoToken.
///
/// Returns None when the token holds no "NTLMSSP\0" signature (e.g. Kerberos). When the message is
/// truncated or a field points outside it, returns what could be read with `error` set.
pub fn parse_ntlm(token: &[u8]) -> Option<NtlmFacts> {
    let msg = wn::find(token)?;
    let mut f = NtlmFacts::default();
    let Ok(ty) = wn::message_type(msg) else {
        f.error = Some("ntlm message truncated before MessageType".to_owned());
        return Some(f);
    };
    match ty {
        wn::NEGOTIATE => parse_negotiate(msg, &mut f),
        wn::CHALLENGE => parse_challenge(msg, &mut f),
        wn::AUTHENTICATE => parse_authenticate(msg, &mut f),
        t => f.error = Some(format!("unknown ntlm MessageType {t}")),
    }
    Some(f)
}

/// NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1).
fn parse_negotiate(msg: &[u8], f: &mut NtlmFacts) {
    f.message_type = Some(NtlmMessageType::Negotiate);
    let Some(flags) = le32(msg, layout::NEGOTIATE_FLAGS) else {
        f.error = Some("ntlm negotiate truncated before NegotiateFlags".to_owned());
        return;
    };
    f.negotiate_flags = flags;
    f.os_version = version_string(
        msg,
        flags,
        layout::NEGOTIATE_VERSION,
        &layout::NEGOTIATE_FIELDS,
    );
}

/// CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) with its target info AV pairs (2.2.2.1).
fn parse_challenge(msg: &[u8], f: &mut NtlmFacts) {
    f.message_type = Some(NtlmMessageType::Challenge);
    let Some(flags) = le32(msg, layout::CHALLENGE_FLAGS) else {
        f.error = Some("ntlm challenge truncated before NegotiateFlags".to_owned());
        return;
    };
    f.negotiate_flags = flags;
    let unicode = flags & NTLMSSP_NEGOTIATE_UNICODE != 0;
    match field(msg, layout::CHALLENGE_TARGET_NAME) {
        Ok(Some(t)) => f.target_name = Some(if unicode { utf16le(t) } else { oem(t) }),
        Ok(None) => {}
        Err(()) => {
            f.error = Some("ntlm challenge TargetName points outside the message".to_owned())
        }
    }
    if msg.len() < 48 {
        f.error = Some("ntlm challenge truncated before TargetInfoFields".to_owned());
        return;
    }
    f.os_version = version_string(
        msg,
        flags,
        layout::CHALLENGE_VERSION,
        &[layout::CHALLENGE_TARGET_NAME, layout::CHALLENGE_TARGET_INFO],
    );
    let info = match field(msg, layout::CHALLENGE_TARGET_INFO) {
        Ok(Some(i)) => i,
        Ok(None) => return,
        Err(()) => {
            f.error = Some("ntlm challenge TargetInfo points outside the message".to_owned());
            return;
        }
    };
    for pair in wn::av_pairs(info) {
        let pair = match pair {
            Ok(p) => p,
            Err(AvError::NoEol { .. }) => {
                f.error = Some("ntlm target info truncated (no MsvAvEOL)".to_owned());
                return;
            }
            Err(AvError::PairExceeds { id, .. }) => {
                f.error = Some(format!(
                    "ntlm target info AV pair {id} exceeds the target info"
                ));
                return;
            }
        };
        let v = pair.value;
        match pair.id {
            wn::AV_NB_COMPUTER_NAME => f.nb_computer_name = Some(utf16le(v)),
            wn::AV_NB_DOMAIN_NAME => f.nb_domain_name = Some(utf16le(v)),
            wn::AV_DNS_COMPUTER_NAME => f.dns_computer_name = Some(utf16le(v)),
            wn::AV_DNS_DOMAIN_NAME => f.dns_domain_name = Some(utf16le(v)),
            wn::AV_DNS_TREE_NAME => f.dns_tree_name = Some(utf16le(v)),
            wn::AV_TIMESTAMP => {
                if let Some(b) = v.first_chunk::<8>() {
                    f.server_time = Some(filetime_rfc3339(u64::from_le_bytes(*b)));
                }
            }
            _ => {}
        }
    }
}

/// RFC 3339 of a FILETIME (100 ns intervals since 1601-01-01 UTC).
pub fn filetime_rfc3339(ft: u64) -> String {
    let secs = (ft / 10_000_000) as i64 - FILETIME_UNIX_OFFSET_SECS;
    super::tls::rfc3339(secs)
}

/// AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3). The responses themselves are never reported.
fn parse_authenticate(msg: &[u8], f: &mut NtlmFacts) {
    f.message_type = Some(NtlmMessageType::Authenticate);
    let Some(flags) = le32(msg, layout::AUTHENTICATE_FLAGS) else {
        f.error = Some("ntlm authenticate truncated before NegotiateFlags".to_owned());
        return;
    };
    f.negotiate_flags = flags;
    let unicode = flags & NTLMSSP_NEGOTIATE_UNICODE != 0;
    let text = |b: &[u8]| if unicode { utf16le(b) } else { oem(b) };
    let mut bad = Vec::new();
    match field(msg, layout::AUTHENTICATE_NT) {
        // An NTLMv2 response is longer than the 24 bytes of an NTLMv1 one (MS-NLMP 2.2.2.8).
        Ok(Some(nt)) => f.has_nt_response = nt.len() > 24,
        Ok(None) => {}
        Err(()) => bad.push("NtChallengeResponse"),
    }
    match field(msg, layout::AUTHENTICATE_DOMAIN) {
        Ok(d) => f.domain = d.map(text),
        Err(()) => bad.push("DomainName"),
    }
    match field(msg, layout::AUTHENTICATE_USER) {
        Ok(u) => f.user = u.map(text),
        Err(()) => bad.push("UserName"),
    }
    match field(msg, layout::AUTHENTICATE_WORKSTATION) {
        Ok(w) => f.workstation = w.map(text),
        Err(()) => bad.push("Workstation"),
    }
    f.os_version = version_string(
        msg,
        flags,
        layout::AUTHENTICATE_VERSION,
        &[
            layout::AUTHENTICATE_LM,
            layout::AUTHENTICATE_NT,
            layout::AUTHENTICATE_DOMAIN,
            layout::AUTHENTICATE_USER,
            layout::AUTHENTICATE_WORKSTATION,
            layout::AUTHENTICATE_SESSION_KEY,
        ],
    );
    if !bad.is_empty() {
        f.error = Some(format!(
            "ntlm authenticate {} points outside the message",
            bad.join(", ")
        ));
    }
}

/// The NTSTATUS names live in [`crate::codes`]; decode reports them from there.
pub use crate::codes::{ntstatus_code, ntstatus_name};

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// The CHALLENGE_MESSAGE of MS-NLMP 4.2.4.3 (NTLMv2 example): TargetName "Server", target info
    /// MsvAvNbDomainName "Domain", MsvAvNbComputerName "Server", VERSION 6.0.6000.
    const NLMP_CHALLENGE: &str = "4e544c4d53535000 02000000 0c000c00 38000000 33828ae2 0123456789abcdef
        0000000000000000 24002400 44000000 060070170000000f
        530065007200760065007200 02000c0044006f006d00610069006e00 01000c00530065007200760065007200 00000000";

    /// NEGOTIATE, CHALLENGE and AUTHENTICATE of a real NTLMv2 exchange between sspi's client and
    /// server (user "CORP\\alice" / "P4ssw0rd").
    fn sspi_exchange() -> Vec<Vec<u8>> {
        use sspi::builders::{AcquireCredentialsHandle, WithoutCredentialUse};
        use sspi::ntlm::NtlmConfig;
        use sspi::{
            AcquireCredentialsHandleResult, AuthIdentity, BufferType, ClientRequestFlags,
            CredentialUse, DataRepresentation, Ntlm, Secret, SecurityBuffer, ServerRequestFlags,
            Sspi, SspiImpl, Username,
        };
        let identity = AuthIdentity {
            username: Username::new("alice", Some("CORP")).unwrap(),
            password: Secret::from("P4ssw0rd".to_owned()),
        };
        let mut client = Ntlm::with_config(NtlmConfig::new("PROBE-WS".into()));
        let mut server = Ntlm::with_config(NtlmConfig::default());
        let handle = |ctx: &mut Ntlm, usage| {
            let AcquireCredentialsHandleResult {
                credentials_handle, ..
            } = AcquireCredentialsHandle::<'_, _, _, WithoutCredentialUse>::new()
                .with_auth_data(&identity)
                .with_credential_use(usage)
                .execute(ctx)
                .unwrap();
            credentials_handle
        };
        let mut ch = handle(&mut client, CredentialUse::Outbound);
        let mut sh = handle(&mut server, CredentialUse::Inbound);
        let mut to_client = [SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut to_server = [SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut msgs = Vec::new();
        for _ in 0..2 {
            {
                let mut b = client
                    .initialize_security_context()
                    .with_credentials_handle(&mut ch)
                    .with_context_requirements(
                        ClientRequestFlags::MUTUAL_AUTH | ClientRequestFlags::CONFIDENTIALITY,
                    )
                    .with_target_data_representation(DataRepresentation::Native)
                    .with_input(&mut to_client)
                    .with_output(&mut to_server);
                b.target_name = Some("TERMSRV/rdp.corp.example");
                SspiImpl::initialize_security_context_impl(&mut client, &mut b)
                    .unwrap()
                    .resolve_to_result()
                    .unwrap();
            }
            msgs.push(to_server[0].buffer.clone());
            to_client[0].buffer.clear();
            {
                let b = server
                    .accept_security_context()
                    .with_credentials_handle(&mut sh)
                    .with_context_requirements(ServerRequestFlags::empty())
                    .with_target_data_representation(DataRepresentation::Native)
                    .with_input(&mut to_server)
                    .with_output(&mut to_client);
                let _ = SspiImpl::accept_security_context_impl(&mut server, b)
                    .map(|mut g| g.resolve_to_result());
            }
            if !to_client[0].buffer.is_empty() {
                msgs.push(to_client[0].buffer.clone());
            }
            to_server[0].buffer.clear();
        }
        msgs
    }

    #[test]
    fn der_frame_len_bounds() {
        assert_eq!(der_frame_len(&[0x30, 0x05]), Some(7));
        assert_eq!(der_frame_len(&[0x30, 0x81, 0x80]), Some(0x83));
        assert_eq!(der_frame_len(&[0x30, 0x82, 0x01, 0x00]), Some(0x104));
        assert_eq!(
            der_frame_len(&[0x30, 0x84, 0x00, 0x01, 0x00, 0x00]),
            Some(0x10006)
        );
        assert_eq!(
            der_frame_len(&[0x30, 0x82, 0x01]),
            None,
            "incomplete length"
        );
        assert_eq!(der_frame_len(&[0x30]), None);
        assert_eq!(
            der_frame_len(&[0x30, 0x80]),
            None,
            "indefinite length is not DER"
        );
        assert_eq!(
            der_frame_len(&[0x30, 0x85, 1, 2, 3, 4, 5]),
            None,
            "more than 4 length bytes"
        );
        assert_eq!(der_frame_len(&[0x1f, 0x01, 0x00]), None, "multi-byte tag");
        assert_eq!(
            der_frame_len(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Some(0xffff_ffff + 6)
        );
    }

    #[test]
    fn error_code_both_encodings() {
        let win = encode_ts_request_error(6, 0xC000_006D);
        assert_eq!(win, unhex("300d a003020106 a406 0204c000006d"));
        let der = encode_ts_request_error_with(6, 0xC000_006D, ErrorCodeEncoding::StrictDer);
        assert_eq!(der, unhex("300e a003020106 a407 020500c000006d"));
        for b in [&win, &der] {
            let f = parse_ts_request(b).unwrap();
            assert_eq!((f.version, f.error_code), (6, Some(0xC000_006D)));
            assert_eq!(der_frame_len(b), Some(b.len()));
        }
        assert_eq!(ntstatus_name(0xC000_006D), Some("STATUS_LOGON_FAILURE"));
        // sspi (what IronRDP uses) reads the Windows encoding the same way
        let s = sspi::credssp::TsRequest::from_buffer(&win).unwrap();
        assert_eq!(s.error_code.map(|c| c.0), Some(0xC000_006D));
        // small and sign-extended values
        let f = parse_ts_request(&encode_ts_request_error_with(
            2,
            5,
            ErrorCodeEncoding::StrictDer,
        ))
        .unwrap();
        assert_eq!(f.error_code, Some(5));
        let f = parse_ts_request(&unhex("300c a003020103 a405 0203ff0022")).unwrap();
        assert_eq!(f.error_code, Some(0xffff_0022));
        let e = parse_ts_request(&unhex("300e a003020106 a407 020501c000006d")).unwrap_err();
        assert_eq!(
            e,
            (
                "errorCode: INTEGER of 5 bytes does not fit 32 bits".to_owned(),
                9
            )
        );
    }

    #[test]
    fn ts_requests_encoded_by_sspi_decode() {
        let ts = sspi::credssp::TsRequest {
            version: 6,
            nego_tokens: Some(b"NTLMSSP\0\x01\0\0\0\x07\x82\x08\xa2".to_vec()),
            auth_info: None,
            pub_key_auth: Some(vec![0xaa; 290]),
            error_code: None,
            client_nonce: Some([7; 32]),
        };
        let mut buf = Vec::new();
        ts.encode_ts_request(&mut buf).unwrap();
        assert_eq!(der_frame_len(&buf), Some(buf.len()));
        let f = parse_ts_request(&buf).unwrap();
        assert_eq!(f.version, 6);
        assert_eq!(f.nego_token.as_deref(), ts.nego_tokens.as_deref());
        assert!(f.has_pub_key_auth && f.has_client_nonce && !f.has_auth_info);
        assert_eq!(f.error_code, None);
        let n = parse_ntlm(f.nego_token.as_deref().unwrap()).unwrap();
        assert_eq!(n.message_type, Some(NtlmMessageType::Negotiate));
        assert_eq!(n.negotiate_flags, 0xa208_8207);
        // our own nego encoder round-trips through sspi
        let mine = encode_ts_request_nego(6, b"token");
        let s = sspi::credssp::TsRequest::from_buffer(&mine).unwrap();
        assert_eq!(
            (s.version, s.nego_tokens.as_deref()),
            (6, Some(&b"token"[..]))
        );
    }

    #[test]
    fn malformed_ts_requests_report_offsets() {
        let ok = encode_ts_request_error(6, 0xC000_006D);
        assert_eq!(parse_ts_request(&ok[..10]).unwrap_err().1, 0);
        assert_eq!(
            parse_ts_request(&[0x31, 0x00]).unwrap_err(),
            (
                "expected a TSRequest SEQUENCE (0x30), got 0x31".to_owned(),
                0
            )
        );
        let mut trailing = ok.clone();
        trailing.push(0);
        assert_eq!(
            parse_ts_request(&trailing).unwrap_err(),
            ("1 trailing bytes after the TSRequest".to_owned(), 15)
        );
        assert_eq!(
            parse_ts_request(&unhex("3008 a406 0204c000006d")).unwrap_err(),
            ("TSRequest without version".to_owned(), 2)
        );
        // version holds an OCTET STRING
        assert_eq!(
            parse_ts_request(&unhex("3005 a003 040106")).unwrap_err(),
            ("version: expected tag 0x02, got 0x04".to_owned(), 4)
        );
        // an inner length beyond its parent
        let e = parse_ts_request(&unhex("3007 a003020106 a109")).unwrap_err();
        assert_eq!(e.1, 7);
        // an unknown context tag is skipped, a universal one is not
        assert!(parse_ts_request(&unhex("3009 a003020106 a6020500")).is_ok());
        assert!(parse_ts_request(&unhex("3009 a003020106 04020500")).is_err());
    }

    #[test]
    fn ntlm_challenge_of_ms_nlmp_example() {
        let n = parse_ntlm(&unhex(NLMP_CHALLENGE)).unwrap();
        expect![[r#"
            NtlmFacts {
                message_type: Some(
                    Challenge,
                ),
                negotiate_flags: 3800728115,
                nb_computer_name: Some(
                    "Server",
                ),
                nb_domain_name: Some(
                    "Domain",
                ),
                dns_computer_name: None,
                dns_domain_name: None,
                dns_tree_name: None,
                os_version: Some(
                    "6.0.6000",
                ),
                server_time: None,
                user: None,
                domain: None,
                has_nt_response: false,
                workstation: None,
                target_name: Some(
                    "Server",
                ),
                error: None,
            }
        "#]]
        .assert_debug_eq(&n);
        // wrapped in SPNEGO (negTokenResp responseToken) and in a TSRequest
        let mut spnego = unhex("a181ce3081cba0030a0101a10c060a2b06010401823702020aa281b50481b2");
        spnego.extend(unhex(NLMP_CHALLENGE));
        let ts = parse_ts_request(&encode_ts_request_nego(6, &spnego)).unwrap();
        assert_eq!(
            parse_ntlm(ts.nego_token.as_deref().unwrap()),
            Some(n.clone())
        );
        // cut inside the target info
        let full = unhex(NLMP_CHALLENGE);
        let cut = parse_ntlm(&full[..full.len() - 10]).unwrap();
        assert_eq!(cut.nb_domain_name, None);
        assert_eq!(
            cut.error.as_deref(),
            Some("ntlm challenge TargetInfo points outside the message")
        );
        assert_eq!(parse_ntlm(b"no ntlm here"), None);
    }

    #[test]
    fn ntlm_exchange_from_sspi() {
        let msgs = sspi_exchange();
        assert_eq!(msgs.len(), 3, "negotiate, challenge, authenticate");
        let neg = parse_ntlm(&msgs[0]).unwrap();
        assert_eq!(neg.message_type, Some(NtlmMessageType::Negotiate));
        assert_eq!(neg.error, None);
        let ch = parse_ntlm(&msgs[1]).unwrap();
        assert_eq!(ch.message_type, Some(NtlmMessageType::Challenge));
        assert_eq!(ch.error, None);
        let t = ch
            .server_time
            .as_deref()
            .expect("sspi's challenge has MsvAvTimestamp");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.len() == 20,
            "{t}"
        );
        let au = parse_ntlm(&msgs[2]).unwrap();
        assert_eq!(au.message_type, Some(NtlmMessageType::Authenticate));
        assert_eq!(au.user.as_deref(), Some("alice"));
        assert_eq!(au.domain.as_deref(), Some("CORP"));
        // sspi 0.23 leaves the Workstation field empty even with a client computer name configured
        assert_eq!(au.workstation, None);
        assert_eq!(au.os_version.as_deref(), Some("10.0.17763"));
        assert!(
            au.has_nt_response,
            "NTLMv2 response is longer than 24 bytes"
        );
        assert_eq!(au.error, None);
        // inside TSRequests, the way they cross the wire
        for m in &msgs {
            let ts = parse_ts_request(&encode_ts_request_nego(6, m)).unwrap();
            assert_eq!(ts.nego_token.as_deref(), Some(&m[..]));
        }
    }

    #[test]
    fn filetime_and_status_names() {
        assert_eq!(
            filetime_rfc3339(116_444_736_000_000_000),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            filetime_rfc3339(133_485_408_000_000_000),
            "2024-01-01T00:00:00Z"
        );
        for (code, name) in [
            (0xC000_006D, "STATUS_LOGON_FAILURE"),
            (0xC000_006E, "STATUS_ACCOUNT_RESTRICTION"),
            (0xC000_0193, "STATUS_ACCOUNT_EXPIRED"),
            (0xC000_0224, "STATUS_PASSWORD_MUST_CHANGE"),
            (0xC000_0234, "STATUS_ACCOUNT_LOCKED_OUT"),
            (0xC000_015B, "STATUS_LOGON_TYPE_NOT_GRANTED"),
            (0xC000_0133, "STATUS_TIME_DIFFERENCE_AT_DC"),
            (0xC000_0203, "STATUS_USER_SESSION_DELETED"),
            (0x8009_030C, "SEC_E_LOGON_DENIED"),
            (0x8009_0322, "SEC_E_WRONG_PRINCIPAL"),
        ] {
            assert_eq!(ntstatus_name(code), Some(name));
        }
        assert_eq!(ntstatus_name(0x1234_5678), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = der_frame_len(&b);
            if let Ok(f) = parse_ts_request(&b) {
                if let Some(t) = f.nego_token {
                    let _ = parse_ntlm(&t);
                }
            }
            let mut with_sig = NTLMSSP_SIGNATURE.to_vec();
            with_sig.extend(&b);
            prop_assert!(parse_ntlm(&with_sig).is_some());
        }

        #[test]
        fn mutated_real_messages_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            thread_local! {
                static MSGS: Vec<Vec<u8>> = {
                    let mut v = sspi_exchange();
                    v.push(unhex(NLMP_CHALLENGE));
                    v
                };
            }
            let mut m = MSGS.with(|v| v[which % v.len()].clone());
            for (i, x) in flips {
                let n = m.len();
                m[i % n] ^= x;
            }
            m.truncate(cut % (m.len() + 1));
            let _ = parse_ntlm(&m);
            let ts = encode_ts_request_nego(6, &m);
            let mut t2 = ts.clone();
            let n = t2.len();
            t2[cut % n] ^= 0x5a;
            let _ = parse_ts_request(&t2);
            let _ = der_frame_len(&t2);
        }
    }
}
