//! Fuzzes a server licensing PDU (MS-RDPELE 2.2.2) as X.224 user data: the decoder's domain PDU and
//! share PDU classification with and without a security header (decode/mcs.rs). Property: no panic.
//! Seeds: any bytes; `rdprobe lab --mutate-server` produces structured ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rdprobe::fuzz::parsers::licensing(data);
});
