//! The typed wire layer: pure readers and writers of protocol bytes, no I/O.
//!
//! Contract (as smoltcp's `wire`): nothing here panics on any input, every read is bounds-checked
//! and reports the absolute byte offset where it failed ([`WireError`]), and nothing allocates from
//! an untrusted length. `cursor` reads fixed-size integers and byte runs; `asn1` reads and writes
//! BER/DER headers and TLVs. Property tests in each module and the `wire` cargo-fuzz target hold
//! the contract.

pub mod asn1;
pub mod cursor;

pub use cursor::{Cursor, WireError, WireErrorKind};
