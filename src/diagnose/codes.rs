//! The code tables `rdprobe explain` reads: the rows of [`crate::codes`] that carry a meaning.
//! Rows that only name a code (decode reports the name) are left out here, so `explain` says
//! nothing it cannot explain.

pub use crate::codes::{
    Code, CMD_CREDSSP, CMD_FULL, CMD_GATEWAY, CMD_LICENSING, CMD_LOCAL, CMD_MCS, CMD_PROBE,
    CMD_TCP, CMD_TLS, CMD_X224, EXTENDED_REASONS, GATEWAY_HRESULTS, MSTSC_DOCUMENTED,
    MSTSC_INTERNAL, NEG_FAILURES, NTSTATUS, SET_ERROR_INFO,
};

/// Finds the explained row of `code` in `table`.
pub fn find(table: &'static [Code], code: u32) -> Option<&'static Code> {
    crate::codes::find(table, code).filter(|e| e.is_explained())
}

/// Finds an explained row by name (case-insensitive) in `table`.
pub fn find_name(table: &'static [Code], name: &str) -> Option<&'static Code> {
    crate::codes::find_name(table, name).filter(|e| e.is_explained())
}

/// NTSTATUS / HRESULT name of a CredSSP errorCode that explain can explain.
pub fn ntstatus_name(code: u32) -> Option<&'static str> {
    find(NTSTATUS, code).map(|e| e.name)
}
