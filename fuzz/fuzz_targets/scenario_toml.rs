//! Fuzzes the scenario file parser: any bytes as scenario TOML. Properties: no panic, and a
//! scenario that parses survives `to_toml` and parsing again unchanged.
//! Seeds: `fixtures/scenarios/` (from fuzz/: `cargo +nightly fuzz run scenario_toml corpus/scenario_toml
//! ../fixtures/scenarios`; libFuzzer adds new inputs to the first directory only).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rdprobe::fuzz::trace_bytes::check_scenario_toml(data);
});
