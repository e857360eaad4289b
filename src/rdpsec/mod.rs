//! Standard RDP security (MS-RDPBCGR 5.3): the security exchange, session keys, RC4 and FIPS
//! encryption with signatures, and a client that walks a server in this mode from the MCS Connect
//! Response to `connected`.
//!
//! The pure parts (`keys`, `crypt`, `cert`, `gcc`) do no I/O and never panic on any input;
//! `client` is the thin async driver the probe hands over to when the server selected
//! PROTOCOL_RDP with encryption (IronRDP's connector only does encryption level NONE).
//!
//! INVARIANT: every byte the client sends or receives goes through the probe's tapped socket, so
//! the Trace holds the whole conversation; the secrets (client random, keys, password) never enter
//! the Trace, the report or the logs.

pub mod cert;
pub mod client;
pub mod crypt;
pub mod gcc;
pub mod keys;

pub use keys::Method;

/// Basic security header flags (MS-RDPBCGR 2.2.8.1.1.2.1).
pub mod flags {
    pub const SEC_EXCHANGE_PKT: u16 = 0x0001;
    pub const SEC_TRANSPORT_REQ: u16 = 0x0002;
    pub const SEC_ENCRYPT: u16 = 0x0008;
    pub const SEC_RESET_SEQNO: u16 = 0x0010;
    pub const SEC_IGNORE_SEQNO: u16 = 0x0020;
    pub const SEC_INFO_PKT: u16 = 0x0040;
    pub const SEC_LICENSE_PKT: u16 = 0x0080;
    pub const SEC_LICENSE_ENCRYPT_CS: u16 = 0x0200;
    pub const SEC_REDIRECTION_PKT: u16 = 0x0400;
    pub const SEC_SECURE_CHECKSUM: u16 = 0x0800;
    pub const SEC_AUTODETECT_REQ: u16 = 0x1000;
    pub const SEC_HEARTBEAT: u16 = 0x4000;
    pub const SEC_FLAGSHI_VALID: u16 = 0x8000;
}
