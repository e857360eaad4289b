//! Fuzzes a server certificate (MS-RDPBCGR 2.2.1.4.3.1: proprietary RSA1 blob or X.509 chain): the RSA key
//! standard RDP security reads from it and the encryption of a client random with that key, and
//! the decoder's certificate facts. Property: no panic (a zero modulus once divided by zero).
//! Seeds: any bytes; `rdprobe lab --mutate-server` produces structured ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rdprobe::fuzz::parsers::server_certificate(data);
});
