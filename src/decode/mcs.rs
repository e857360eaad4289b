//! MCS / GCC decoding for the `mcs` and `channels` stages (MS-RDPBCGR 2.2.1.3-2.2.1.8), using
//! ironrdp-pdu's types where they decode the PDU. Pure, no I/O, never panics.

use crate::report::Facts;

/// Facts of a client MCS Connect Initial (client core/security/network data).
pub fn connect_initial_facts(x224_user_data: &[u8]) -> Result<Facts, String> {
    let _ = x224_user_data;
    Err("not implemented".to_owned())
}

/// Facts of a server MCS Connect Response: result, server core data (RDP version, client requested
/// protocols echo, early capability flags), server security data (encryption method and level, server
/// random present, certificate type and key size), network data (I/O channel, channel ids).
pub fn connect_response_facts(x224_user_data: &[u8]) -> Result<Facts, String> {
    let _ = x224_user_data;
    Err("not implemented".to_owned())
}
