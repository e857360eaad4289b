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

/// Basic security header flags (MS-RDPBCGR 2.2.8.1.1.2.1), defined once in `wire::share`.
pub mod flags {
    pub use crate::wire::share::{
        SEC_AUTODETECT_REQ, SEC_ENCRYPT, SEC_EXCHANGE_PKT, SEC_FLAGSHI_VALID, SEC_HEARTBEAT,
        SEC_IGNORE_SEQNO, SEC_INFO_PKT, SEC_LICENSE_PKT, SEC_REDIRECTION_PKT, SEC_RESET_SEQNO,
        SEC_SECURE_CHECKSUM, SEC_TRANSPORT_REQ,
    };
    /// SEC_LICENSE_ENCRYPT_CS: the client encrypts its licensing PDUs.
    pub const SEC_LICENSE_ENCRYPT_CS: u16 = crate::wire::share::SEC_LICENSE_ENCRYPT;
}
