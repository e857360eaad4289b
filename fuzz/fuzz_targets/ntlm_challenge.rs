//! Fuzzes a server TSRequest with an NTLM CHALLENGE (MS-CSSP 2.2.1, MS-NLMP 2.2.1.2) as the decoder
//! reads it (decode/credssp.rs), or a bare NTLM message. Property: no panic.
//! Seeds: any bytes; `rdprobe lab --mutate-server` produces structured ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rdprobe::fuzz::parsers::ntlm_challenge(data);
});
