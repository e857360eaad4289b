//! Fuzzes the stage decoder: any bytes as a Trace with arbitrary events (the format of
//! `rdprobe::fuzz::trace_bytes`), decoded. Properties: no panic, one label per event, the same
//! report with and without labels.
//! Seeds: `fuzz/corpus/decode_trace/` (lab conversations the probe recorded, written by the
//! `decode_trace_seed_corpus` test of tests/fuzz.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rdprobe::fuzz::trace_bytes::check_decode(data);
});
