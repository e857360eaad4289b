//! Stage `credssp`: mutations of a TSRequest (MS-CSSP 2.2.1) the client sends inside TLS, with its
//! ASN.1 DER structure (version, negoTokens, authInfo, pubKeyAuth, errorCode, clientNonce, tags
//! and lengths, nesting) and the NTLM message it carries.
//!
//! A case names its round (MS-CSSP 3.1.5): 1 is the first TSRequest with NTLM NEGOTIATE
//! (MS-NLMP 2.2.1.1: signature, message type, flags, domain / workstation fields, version),
//! built here; 2 is the TSRequest with NTLM AUTHENTICATE (MS-NLMP 2.2.1.3) and pubKeyAuth (and
//! clientNonce from version 5), and 3 the one with authInfo (the encrypted TSCredentials). Rounds
//! 2 and 3 need a valid first round trip (credentials): IronRDP's client computes the valid
//! message, which is parsed and re-encoded here with the mutations applied to its real fields.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::havoc::{self, Havoc};
use super::ladder::{u16s, u32s, u8s, upto};
use super::EncodeCtx;
use crate::wire::{credssp, ntlm};

/// Deepest extra SEQUENCE nesting a case asks for.
pub const MAX_NESTING: u64 = credssp::MAX_NESTING as u64;

/// One structured mutation of the TSRequest; later ones override earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum CredsspMutation {
    /// TSRequest.version (default 6), as a minimal DER INTEGER.
    Version(u32),
    /// TSRequest.version as raw INTEGER content: `len` bytes of `fill` (zero length is invalid DER).
    VersionRaw {
        len: u8,
        fill: u8,
    },
    /// The outer SEQUENCE tag (default 0x30).
    OuterTag(u8),
    /// The outer SEQUENCE length (default: the real length).
    OuterLength(u32),
    /// Encode the outer length in long form with this many length bytes (non-minimal BER).
    OuterLongForm(u8),
    /// The context tag of field `field` (0 version … 5 clientNonce; default 0xA0 + field).
    FieldTag {
        field: u8,
        tag: u8,
    },
    /// The explicit-tag length of field `field` (default: the real length).
    FieldLength {
        field: u8,
        length: u32,
    },
    /// Leave negoTokens out.
    NoNegoTokens,
    /// Repeat the NegoDataItem this many times (default 1).
    NegoTokenCount(u8),
    /// The negoToken OCTET STRING length (default: the real length).
    NegoTokenLength(u32),
    /// Wrap the NegoData SEQUENCE in this many extra SEQUENCEs.
    Nesting(u16),
    /// Replace the NTLMSSP signature's last byte.
    NtlmSignature(u8),
    NtlmMessageType(u32),
    NtlmFlags(u32),
    /// DomainNameFields: length, maximum length, offset.
    NtlmDomain {
        len: u16,
        max_len: u16,
        offset: u32,
    },
    NtlmWorkstation {
        len: u16,
        max_len: u16,
        offset: u32,
    },
    /// Payload bytes after the fixed NEGOTIATE fields.
    NtlmPayload {
        len: u16,
        fill: u8,
    },
    /// Keep only the first bytes of the NTLM message.
    NtlmTruncate(u8),
    /// authInfo of `len` bytes.
    AuthInfo {
        len: u16,
    },
    /// pubKeyAuth of `len` bytes.
    PubKeyAuth {
        len: u16,
    },
    ErrorCode(u32),
    /// clientNonce of `len` bytes (32 is valid).
    ClientNonce {
        len: u16,
    },
    /// Keep only the first `len` bytes of field `field`'s OCTET STRING (1 the NTLM token,
    /// 2 authInfo, 3 pubKeyAuth, 5 clientNonce).
    FieldTruncate {
        field: u8,
        len: u16,
    },
    /// XOR byte `at` (modulo its length) of field `field`'s OCTET STRING with `xor`.
    FieldFlip {
        field: u8,
        at: u16,
        xor: u8,
    },
    /// A security buffer of the NTLM AUTHENTICATE message (MS-NLMP 2.2.1.3): 0 LmChallengeResponse,
    /// 1 NtChallengeResponse, 2 DomainName, 3 UserName, 4 Workstation,
    /// 5 EncryptedRandomSessionKey.
    NtlmAuthField {
        field: u8,
        len: u16,
        max_len: u16,
        offset: u32,
    },
    Havoc(Havoc),
}

/// A case of the `credssp` stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredsspCase {
    /// Which client TSRequest is mutated: 1 NEGOTIATE, 2 AUTHENTICATE + pubKeyAuth, 3 authInfo.
    #[serde(default = "first_round")]
    pub round: u8,
    pub mutations: Vec<CredsspMutation>,
}

fn first_round() -> u8 {
    1
}

impl Default for CredsspCase {
    fn default() -> Self {
        CredsspCase {
            round: 1,
            mutations: Vec::new(),
        }
    }
}

/// The last round a case can name.
pub const ROUNDS: u8 = 3;

/// The fields of a TSRequest the encoder starts from (MS-CSSP 2.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseTsRequest {
    pub version: u32,
    pub nego_token: Option<Vec<u8>>,
    pub auth_info: Option<Vec<u8>>,
    pub pub_key_auth: Option<Vec<u8>>,
    pub error_code: Option<u32>,
    pub client_nonce: Option<Vec<u8>>,
}

impl BaseTsRequest {
    /// A TSRequest as IronRDP's client encoded it (rounds 2 and 3).
    pub fn parse(valid: &[u8]) -> Option<BaseTsRequest> {
        let r = sspi::credssp::TsRequest::from_buffer(valid).ok()?;
        Some(BaseTsRequest {
            version: r.version,
            nego_token: r.nego_tokens,
            auth_info: r.auth_info,
            pub_key_auth: r.pub_key_auth,
            error_code: r.error_code.map(|c| c.0),
            client_nonce: r.client_nonce.map(|n| n.to_vec()),
        })
    }
}

/// NEGOTIATE flags of the valid message: UNICODE, OEM, REQUEST_TARGET, SIGN, SEAL, NTLM,
/// ALWAYS_SIGN, EXTENDED_SESSIONSECURITY, VERSION, 128, KEY_EXCH, 56.
pub const BASE_NTLM_FLAGS: u32 = 0xe208_8297;

/// The NTLM NEGOTIATE message (MS-NLMP 2.2.1.1) with mutations.
fn ntlm_negotiate(mutations: &[CredsspMutation]) -> Vec<u8> {
    let mut last_sig = 0u8;
    let mut ty = 1u32;
    let mut flags = BASE_NTLM_FLAGS;
    let mut domain = (0u16, 0u16, 40u32);
    let mut ws = (0u16, 0u16, 40u32);
    let mut payload = Vec::new();
    let mut truncate = None;
    for m in mutations {
        match m {
            CredsspMutation::NtlmSignature(b) => last_sig = *b,
            CredsspMutation::NtlmMessageType(t) => ty = *t,
            CredsspMutation::NtlmFlags(f) => flags = *f,
            CredsspMutation::NtlmDomain {
                len,
                max_len,
                offset,
            } => domain = (*len, *max_len, *offset),
            CredsspMutation::NtlmWorkstation {
                len,
                max_len,
                offset,
            } => ws = (*len, *max_len, *offset),
            CredsspMutation::NtlmPayload { len, fill } => {
                payload = havoc::filler(usize::from(*len).min(havoc::MAX_INSERT as usize), *fill)
            }
            CredsspMutation::NtlmTruncate(k) => truncate = Some(usize::from(*k)),
            _ => {}
        }
    }
    // The signature's last byte is a mutation's (NUL when valid).
    let mut m = ntlm::SIGNATURE[..7].to_vec();
    m.push(last_sig);
    m.extend_from_slice(&ty.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    for (len, max_len, offset) in [domain, ws] {
        ntlm::SecurityBuffer {
            len,
            max_len,
            offset,
        }
        .emit(&mut m);
    }
    // Version: 10.0 build 19041, NTLMSSP_REVISION_W2K3 (MS-NLMP 2.2.2.10).
    ntlm::Version {
        major: 10,
        minor: 0,
        build: 19041,
        revision: 0x0f,
    }
    .emit(&mut m);
    m.extend_from_slice(&payload);
    if let Some(k) = truncate {
        m.truncate(k);
    }
    m
}

/// Encodes the TSRequest from `mutations` (none: the valid first TSRequest with NTLM NEGOTIATE).
pub fn encode(mutations: &[CredsspMutation], _ctx: &EncodeCtx) -> Vec<u8> {
    let base = BaseTsRequest {
        version: 6,
        nego_token: Some(ntlm_negotiate(mutations)),
        ..BaseTsRequest::default()
    };
    encode_from(&base, mutations)
}

/// Encodes a later round's TSRequest: `valid` (as IronRDP's client encoded it) with `mutations`
/// applied to its fields; the NTLM mutations apply to the AUTHENTICATE message it carries. An
/// unreadable `valid` is sent as is, with only the byte havoc applied.
pub fn encode_round(valid: &[u8], mutations: &[CredsspMutation]) -> Vec<u8> {
    let Some(mut base) = BaseTsRequest::parse(valid) else {
        let mut out = valid.to_vec();
        let havocs: Vec<Havoc> = mutations
            .iter()
            .filter_map(|m| match m {
                CredsspMutation::Havoc(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        havoc::apply_all(&havocs, &mut out);
        return out;
    };
    if let Some(token) = &mut base.nego_token {
        ntlm_authenticate_mutate(token, mutations);
    }
    encode_from(&base, mutations)
}

/// Applies the NTLM mutations to an NTLM message in place (MS-NLMP 2.2.1.3 offsets for the
/// AUTHENTICATE security buffers and flags).
fn ntlm_authenticate_mutate(m: &mut Vec<u8>, mutations: &[CredsspMutation]) {
    fn put(m: &mut [u8], at: usize, bytes: &[u8]) {
        if let Some(dst) = m.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
    fn buffer(m: &mut [u8], at: usize, len: u16, max_len: u16, offset: u32) {
        put(m, at, &len.to_le_bytes());
        put(m, at + 2, &max_len.to_le_bytes());
        put(m, at + 4, &offset.to_le_bytes());
    }
    for mu in mutations {
        match mu {
            CredsspMutation::NtlmSignature(b) => put(m, 7, &[*b]),
            CredsspMutation::NtlmMessageType(t) => put(m, 8, &t.to_le_bytes()),
            CredsspMutation::NtlmFlags(f) => put(m, 60, &f.to_le_bytes()),
            CredsspMutation::NtlmDomain {
                len,
                max_len,
                offset,
            } => buffer(m, 28, *len, *max_len, *offset),
            CredsspMutation::NtlmWorkstation {
                len,
                max_len,
                offset,
            } => buffer(m, 44, *len, *max_len, *offset),
            CredsspMutation::NtlmAuthField {
                field,
                len,
                max_len,
                offset,
            } => buffer(m, 12 + 8 * usize::from(*field % 6), *len, *max_len, *offset),
            CredsspMutation::NtlmPayload { len, fill } => m.extend(havoc::filler(
                usize::from(*len).min(havoc::MAX_INSERT as usize),
                *fill,
            )),
            CredsspMutation::NtlmTruncate(k) => m.truncate(usize::from(*k)),
            _ => {}
        }
    }
}

/// Encodes a TSRequest from `base` with `mutations` (the DER structure and the fields; the NTLM
/// token is taken from `base` as it is), through the project's writer
/// ([`credssp::TsRequest::emit_as`]) with the mutations' deviations as its [`credssp::Layout`].
fn encode_from(base: &BaseTsRequest, mutations: &[CredsspMutation]) -> Vec<u8> {
    let mut layout = credssp::Layout {
        nego_token_repeat: Some(1),
        ..credssp::Layout::default()
    };
    let mut version = base.version;
    let mut nego = base.nego_token.is_some();
    let mut token = base.nego_token.clone().unwrap_or_default();
    let mut auth_info = base.auth_info.clone();
    let mut pub_key_auth = base.pub_key_auth.clone();
    let mut error_code = base.error_code;
    let mut client_nonce = base.client_nonce.clone();
    let mut havocs = Vec::new();
    let blob = |len: u16, seed: u8| -> Vec<u8> {
        (0..usize::from(len).min(havoc::MAX_INSERT as usize))
            .map(|i| (i as u8).wrapping_add(seed))
            .collect()
    };
    for m in mutations {
        match m {
            CredsspMutation::Version(v) => {
                version = *v;
                layout.version_content = None;
            }
            CredsspMutation::VersionRaw { len, fill } => {
                layout.version_content = Some(vec![*fill; usize::from(*len)])
            }
            CredsspMutation::OuterTag(t) => layout.outer_tag = *t,
            CredsspMutation::OuterLength(l) => layout.outer_len = Some(*l),
            CredsspMutation::OuterLongForm(n) => layout.outer_long_form = Some(*n),
            CredsspMutation::FieldTag { field, tag } => {
                layout.field_tags[usize::from(*field) % 6] = *tag
            }
            CredsspMutation::FieldLength { field, length } => {
                layout.field_lens[usize::from(*field) % 6] = Some(*length)
            }
            CredsspMutation::NoNegoTokens => nego = false,
            CredsspMutation::NegoTokenCount(n) => layout.nego_token_repeat = Some(*n),
            CredsspMutation::NegoTokenLength(l) => layout.nego_token_len = Some(*l),
            CredsspMutation::Nesting(d) => layout.nego_nesting = *d,
            CredsspMutation::AuthInfo { len } => auth_info = Some(blob(*len, 0x21)),
            CredsspMutation::PubKeyAuth { len } => pub_key_auth = Some(blob(*len, 0x42)),
            CredsspMutation::ErrorCode(c) => error_code = Some(*c),
            CredsspMutation::ClientNonce { len } => client_nonce = Some(blob(*len, 0x63)),
            CredsspMutation::FieldTruncate { field, len } => {
                if let Some(f) = octets(
                    *field,
                    &mut token,
                    &mut auth_info,
                    &mut pub_key_auth,
                    &mut client_nonce,
                ) {
                    f.truncate(usize::from(*len));
                }
            }
            CredsspMutation::FieldFlip { field, at, xor } => {
                if let Some(f) = octets(
                    *field,
                    &mut token,
                    &mut auth_info,
                    &mut pub_key_auth,
                    &mut client_nonce,
                ) {
                    if !f.is_empty() {
                        let i = usize::from(*at) % f.len();
                        f[i] ^= *xor;
                    }
                }
            }
            CredsspMutation::Havoc(h) => havocs.push(h.clone()),
            _ => {}
        }
    }
    fn field(b: &Option<Vec<u8>>) -> Option<credssp::Field<'_>> {
        b.as_deref().map(|bytes| credssp::Field { at: 0, bytes })
    }
    let request = credssp::TsRequest {
        version,
        nego_tokens: if nego {
            vec![credssp::Field {
                at: 0,
                bytes: &token,
            }]
        } else {
            Vec::new()
        },
        auth_info: field(&auth_info),
        pub_key_auth: field(&pub_key_auth),
        error_code: error_code.map(|c| (c, 0)),
        client_nonce: field(&client_nonce),
    };
    let mut out = request.emit_as(&layout);
    havoc::apply_all(&havocs, &mut out);
    out
}

/// The OCTET STRING content of TSRequest field `field`, if the request has it.
fn octets<'a>(
    field: u8,
    token: &'a mut Vec<u8>,
    auth_info: &'a mut Option<Vec<u8>>,
    pub_key_auth: &'a mut Option<Vec<u8>>,
    client_nonce: &'a mut Option<Vec<u8>>,
) -> Option<&'a mut Vec<u8>> {
    match field {
        1 => Some(token),
        2 => auth_info.as_mut(),
        3 => pub_key_auth.as_mut(),
        5 => client_nonce.as_mut(),
        _ => None,
    }
}

/// pubKeyAuth of a TSRequest (for planted bugs and tests), as sspi reads it.
pub fn pub_key_auth_len(b: &[u8]) -> Option<usize> {
    sspi::credssp::TsRequest::from_buffer(b)
        .ok()?
        .pub_key_auth
        .map(|v| v.len())
}

/// One mutation, boundary-biased.
pub fn mutation() -> BoxedStrategy<CredsspMutation> {
    use CredsspMutation as M;
    prop_oneof![
        4 => u32s(&[2, 5, 6, 7]).prop_map(M::Version),
        1 => (upto(0xff, &[9]).prop_map(|v| v as u8), u8s(&[0x80])).prop_map(|(len, fill)| M::VersionRaw { len, fill }),
        1 => u8s(&[0x30, 0x31, 0xa0]).prop_map(M::OuterTag),
        2 => u32s(&[]).prop_map(M::OuterLength),
        1 => upto(126, &[5, 9]).prop_map(|v| M::OuterLongForm(v as u8)),
        1 => (upto(5, &[]).prop_map(|v| v as u8), u8s(&[0xa0, 0xa6, 0x80, 0x30])).prop_map(|(field, tag)| M::FieldTag { field, tag }),
        2 => (upto(5, &[]).prop_map(|v| v as u8), u32s(&[])).prop_map(|(field, length)| M::FieldLength { field, length }),
        1 => Just(M::NoNegoTokens),
        1 => u8s(&[2]).prop_map(M::NegoTokenCount),
        2 => u32s(&[]).prop_map(M::NegoTokenLength),
        1 => upto(MAX_NESTING, &[100]).prop_map(|v| M::Nesting(v as u16)),
        1 => u8s(&[0]).prop_map(M::NtlmSignature),
        2 => u32s(&[1, 2, 3]).prop_map(M::NtlmMessageType),
        2 => u32s(&[BASE_NTLM_FLAGS as u64]).prop_map(M::NtlmFlags),
        2 => (u16s(&[]), u16s(&[]), u32s(&[40])).prop_map(|(len, max_len, offset)| M::NtlmDomain { len, max_len, offset }),
        1 => (u16s(&[]), u16s(&[]), u32s(&[40])).prop_map(|(len, max_len, offset)| M::NtlmWorkstation { len, max_len, offset }),
        1 => (upto(havoc::MAX_INSERT, &[]).prop_map(|v| v as u16), u8s(&[])).prop_map(|(len, fill)| M::NtlmPayload { len, fill }),
        1 => upto(40, &[8, 12, 16]).prop_map(|v| M::NtlmTruncate(v as u8)),
        1 => upto(havoc::MAX_INSERT, &[]).prop_map(|v| M::AuthInfo { len: v as u16 }),
        1 => upto(havoc::MAX_INSERT, &[]).prop_map(|v| M::PubKeyAuth { len: v as u16 }),
        1 => u32s(&[0xc000_006d, 0xc000_0022]).prop_map(M::ErrorCode),
        1 => upto(havoc::MAX_INSERT, &[32]).prop_map(|v| M::ClientNonce { len: v as u16 }),
        3 => Havoc::strategy(100).prop_map(M::Havoc),
    ]
    .boxed()
}

/// Mutations of the later rounds' real fields.
fn deep_mutation() -> BoxedStrategy<CredsspMutation> {
    use CredsspMutation as M;
    let field = || prop_oneof![Just(1u8), Just(2u8), Just(3u8), Just(5u8)];
    prop_oneof![
        3 => (field(), upto(512, &[0, 15, 16, 31, 32, 47, 48])).prop_map(|(field, len)| M::FieldTruncate { field, len: len as u16 }),
        3 => (field(), u16s(&[0, 15, 16]), u8s(&[1, 0x80])).prop_map(|(field, at, xor)| M::FieldFlip { field, at, xor }),
        3 => (upto(5, &[]).prop_map(|v| v as u8), u16s(&[0, 16, 24]), u16s(&[]), u32s(&[88])).prop_map(|(field, len, max_len, offset)| M::NtlmAuthField { field, len, max_len, offset }),
    ]
    .boxed()
}

/// A whole case of round 1: one to four mutations.
pub fn strategy() -> BoxedStrategy<CredsspCase> {
    proptest::collection::vec(mutation(), 1..=4)
        .prop_map(|mutations| CredsspCase {
            round: 1,
            mutations,
        })
        .boxed()
}

/// Cases of every round (a target with credentials): round 1 a quarter of the time, the
/// AUTHENTICATE round half, the authInfo round a quarter; later rounds mix the structural
/// mutations with ones of the real fields.
pub fn strategy_all_rounds() -> BoxedStrategy<CredsspCase> {
    let later = |round: u8| {
        proptest::collection::vec(prop_oneof![1 => mutation(), 1 => deep_mutation()], 1..=4)
            .prop_map(move |mutations| CredsspCase { round, mutations })
    };
    prop_oneof![1 => strategy(), 2 => later(2), 1 => later(3)].boxed()
}

/// TSRequest.version of a DER TSRequest, if the first field is a readable INTEGER (any length up to
/// 8 bytes, so non-minimal encodings count too).
pub fn ts_request_version(b: &[u8]) -> Option<u64> {
    use crate::wire::asn1::{read_header_long, TagForm};
    // The SEQUENCE, then the [0] tag: only their headers; then the INTEGER.
    let mut b = b;
    for tag in [0x30, 0xa0] {
        let h = read_header_long(b, TagForm::OneByte).ok()?;
        if h.tag != tag {
            return None;
        }
        b = b.get(h.header_len..)?;
    }
    let h = read_header_long(b, TagForm::OneByte).ok()?;
    if h.tag != 0x02 || h.len == 0 || h.len > 8 {
        return None;
    }
    let v = b.get(h.header_len..h.header_len + h.len)?;
    Some(v.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round-2 TSRequest as a client sends it: AUTHENTICATE token, pubKeyAuth, clientNonce.
    fn valid_round_two() -> Vec<u8> {
        let mut auth = b"NTLMSSP\0".to_vec();
        auth.extend_from_slice(&3u32.to_le_bytes());
        auth.resize(88, 0x11);
        let valid = sspi::credssp::TsRequest {
            version: 6,
            nego_tokens: Some(auth),
            pub_key_auth: Some(vec![7; 48]),
            client_nonce: Some([9; 32]),
            ..Default::default()
        };
        let mut bytes = Vec::new();
        valid.encode_ts_request(&mut bytes).expect("encode");
        bytes
    }

    /// The bytes of the first `n` cases of every round drawn from a fixed seed: round 1 from
    /// [`encode`], later rounds from [`encode_round`] over [`valid_round_two`].
    fn fixed_seed_cases(n: usize) -> Vec<(CredsspCase, Vec<u8>)> {
        use proptest::strategy::{Strategy, ValueTree};
        let strategy = strategy_all_rounds();
        let mut runner = crate::fuzz::runner_for(0x00C0_FFEE);
        let valid = valid_round_two();
        (0..n)
            .map(|_| {
                let case = strategy.new_tree(&mut runner).expect("tree").current();
                let bytes = if case.round == 1 {
                    encode(&case.mutations, &EncodeCtx::default())
                } else {
                    encode_round(&valid, &case.mutations)
                };
                (case, bytes)
            })
            .collect()
    }

    /// The bytes of the fixed seed's cases, as the fuzzer's own writer wrote them before it wrote
    /// through `wire::credssp`: a SHA-256 over each case's length and bytes.
    #[test]
    fn fixed_seed_cases_keep_their_bytes() {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (_, bytes) in fixed_seed_cases(4000) {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        assert_eq!(
            hex::encode(h.finalize()),
            "8b0b30c16420205ddde161926ea91b0f9121db9c5dafa6f4a57c31c3c56ff8d4"
        );
    }

    #[test]
    fn base_ts_request_parses_with_ntlm_negotiate() {
        let b = encode(&[], &EncodeCtx::default());
        let f = crate::decode::credssp::parse_ts_request(&b).expect("valid TSRequest");
        assert_eq!(f.version, 6);
        let tok = f.nego_token.expect("token");
        let n = crate::decode::credssp::parse_ntlm(&tok).expect("ntlm");
        assert_eq!(
            n.message_type,
            Some(crate::decode::credssp::NtlmMessageType::Negotiate)
        );
        let sspi = sspi::credssp::TsRequest::from_buffer(&b).expect("sspi parses it");
        assert_eq!(sspi.version, 6);
        assert_eq!(ts_request_version(&b), Some(6));
    }

    #[test]
    fn version_mutations() {
        let ctx = EncodeCtx::default();
        assert_eq!(
            ts_request_version(&encode(&[CredsspMutation::Version(0)], &ctx)),
            Some(0)
        );
        assert_eq!(
            ts_request_version(&encode(&[CredsspMutation::Version(0xffff_ffff)], &ctx)),
            Some(0xffff_ffff)
        );
        let b = encode(&[CredsspMutation::OuterLongForm(4)], &ctx);
        assert_eq!(b[1], 0x84);
        assert_eq!(ts_request_version(&b), Some(6));
        let b = encode(&[CredsspMutation::OuterLongForm(8)], &ctx);
        assert_eq!(ts_request_version(&b), Some(6), "eight length bytes");
        let b = encode(&[CredsspMutation::OuterLongForm(9)], &ctx);
        assert_eq!(ts_request_version(&b), None);
        let b = encode(&[CredsspMutation::Nesting(3)], &ctx);
        assert!(crate::decode::credssp::der_frame_len(&b) == Some(b.len()));
    }

    #[test]
    fn later_rounds_mutate_the_real_fields() {
        // A round-2 TSRequest as a client sends it: AUTHENTICATE token, pubKeyAuth, clientNonce.
        let mut auth = b"NTLMSSP\0".to_vec();
        auth.extend_from_slice(&3u32.to_le_bytes());
        auth.resize(88, 0);
        let valid = sspi::credssp::TsRequest {
            version: 6,
            nego_tokens: Some(auth.clone()),
            pub_key_auth: Some(vec![7; 48]),
            client_nonce: Some([9; 32]),
            ..Default::default()
        };
        let mut bytes = Vec::new();
        valid.encode_ts_request(&mut bytes).expect("encode");
        // No mutation: the same fields back.
        let same = BaseTsRequest::parse(&encode_round(&bytes, &[])).expect("parse");
        assert_eq!(same, BaseTsRequest::parse(&bytes).expect("parse"));
        assert_eq!(same.pub_key_auth.as_deref(), Some(&[7u8; 48][..]));
        let cut = encode_round(
            &bytes,
            &[CredsspMutation::FieldTruncate { field: 3, len: 15 }],
        );
        assert_eq!(pub_key_auth_len(&cut), Some(15));
        let flipped = BaseTsRequest::parse(&encode_round(
            &bytes,
            &[CredsspMutation::FieldFlip {
                field: 5,
                at: 33,
                xor: 0xff,
            }],
        ))
        .expect("parse");
        assert_eq!(flipped.client_nonce.expect("nonce")[1], 9 ^ 0xff);
        let nt = BaseTsRequest::parse(&encode_round(
            &bytes,
            &[CredsspMutation::NtlmAuthField {
                field: 1,
                len: 0xffff,
                max_len: 0xffff,
                offset: 0x1000,
            }],
        ))
        .expect("parse");
        let tok = nt.nego_token.expect("token");
        assert_eq!(&tok[20..28], &[0xff, 0xff, 0xff, 0xff, 0, 0x10, 0, 0]);
        // Unreadable input is sent as is.
        assert_eq!(encode_round(b"junk", &[]), b"junk");
    }
}
