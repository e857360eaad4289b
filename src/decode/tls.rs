//! TLS record layer and handshake decoding (RFC 5246, RFC 8446) for the `tls` stage: pure, no I/O,
//! never panics on any input.

use serde::{Deserialize, Serialize};

/// TLS record content types (RFC 8446 B.1).
pub const CT_CHANGE_CIPHER_SPEC: u8 = 20;
pub const CT_ALERT: u8 = 21;
pub const CT_HANDSHAKE: u8 = 22;
pub const CT_APPLICATION_DATA: u8 = 23;

/// Size of a TLS record header: type (1) + version (2) + length (2).
pub const RECORD_HEADER_LEN: usize = 5;

/// One TLS record found in a byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub content_type: u8,
    /// legacy_record_version
    pub version: u16,
    /// Byte offset of the record header in the stream.
    pub offset: usize,
    /// Length of the fragment (without the 5-byte header).
    pub len: usize,
}

/// Splits a stream into TLS records. Returns the complete records and, if the stream does not end
/// on a record boundary or a header is invalid, the offset and a description of the problem.
pub fn split_records(stream: &[u8]) -> (Vec<Record>, Option<(usize, String)>) {
    let _ = stream;
    (Vec::new(), None)
}

/// A decoded handshake message (only what rdprobe reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    ClientHello {
        /// legacy_version
        version: u16,
        /// supported_versions extension, if present
        supported_versions: Vec<u16>,
        cipher_suites: Vec<u16>,
        sni: Option<String>,
    },
    ServerHello {
        version: u16,
        /// supported_versions extension (TLS 1.3 selected version), if present
        selected_version: Option<u16>,
        cipher_suite: u16,
    },
    /// DER certificates, leaf first (TLS <= 1.2 only: in 1.3 it is encrypted).
    Certificate { chain: Vec<Vec<u8>> },
    ServerHelloDone,
    ClientKeyExchange,
    Finished,
    Other { msg_type: u8 },
}

/// Decodes the handshake messages in the concatenated fragments of handshake records
/// (messages may span records). Stops at the first malformed message and reports its offset.
pub fn parse_handshakes(fragments: &[u8]) -> (Vec<Handshake>, Option<(usize, String)>) {
    let _ = fragments;
    (Vec::new(), None)
}

/// Decodes an alert record fragment: (level name, description name, description code).
pub fn parse_alert(fragment: &[u8]) -> Option<(String, String, u8)> {
    let _ = fragment;
    None
}

/// "TLSv1.2" etc. for a protocol version number.
pub fn version_name(v: u16) -> String {
    format!("0x{v:04x}")
}

/// IANA name of a cipher suite, e.g. "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".
pub fn cipher_suite_name(id: u16) -> String {
    format!("0x{id:04x}")
}

/// Facts of an X.509 certificate, as reported in the `tls` stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// RFC 3339
    pub not_before: String,
    /// RFC 3339
    pub not_after: String,
    pub expired: bool,
    pub not_yet_valid: bool,
    pub self_signed: bool,
    /// e.g. "RSA", "EC P-256"
    pub key_type: String,
    pub key_bits: u32,
    /// e.g. "sha256WithRSAEncryption"
    pub signature_algorithm: String,
    /// days from `now` to notAfter (negative when expired)
    pub days_left: i64,
    /// hex SHA-256 of the DER
    pub sha256: String,
}

/// Decodes a DER certificate. `now_unix` is the reference time for expired / days_left.
pub fn cert_facts(der: &[u8], now_unix: i64) -> Result<CertFacts, String> {
    let _ = (der, now_unix);
    Err("not implemented".to_owned())
}
