//! Fuzzes all of `rdprobe::wire` (cursor reads in an order the input chooses, BER/DER headers and
//! TLVs in every tag form, re-encoded and read back; the MCS Connect Response envelope, the GCC
//! server data blocks typed and re-emitted, the server certificate and its RSA key; TPKT /
//! fast-path framing, the X.224 TPDUs and the MCS domain PDUs, re-emitted and read back; the basic
//! security header, licensing and the share control / data PDUs, their writers read back): see
//! `rdprobe::wire::exercise`.
//! Properties: no panic, offsets within the input, writer output reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rdprobe::wire::exercise(data);
});
