//! Fuzzes an MCS Connect Response (a whole TPKT PDU): the GCC server data as the standard-security
//! walk (rdpsec/gcc.rs) and the decoder (decode/mcs.rs) read them, and the certificate inside.
//! Property: no panic.
//! Seeds: any bytes; `rdprobe lab --mutate-server` produces structured ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rdprobe::fuzz::parsers::gcc_server_data(data);
});
