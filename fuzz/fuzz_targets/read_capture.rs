//! Fuzzes the capture reader: any bytes as a pcap / pcapng file, read to the end.
//! Properties: no panic, no unbounded allocation, at most one error and nothing after it; every
//! conversation found also goes through the stage decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdprobe::capture::reader::{read_conversations, KeyLog, ReaderOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ReaderOptions {
        // A key log makes the TLS decryption paths reachable for records in the input.
        keylog: Some(KeyLog::parse(
            "CLIENT_RANDOM 0000000000000000000000000000000000000000000000000000000000000000 \
             000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        )),
        max_retained_per_direction: 64 * 1024,
    };
    let Ok(it) = read_conversations(data, opts) else { return };
    let mut errored = false;
    for item in it {
        assert!(!errored, "nothing may follow the error");
        match item {
            Ok(trace) => {
                // INVARIANT: events are in non-decreasing time order.
                assert!(trace.events.windows(2).all(|w| w[0].t_us <= w[1].t_us));
                // The decoder over what the reader made: stages never run backwards.
                let report = rdprobe::decode::decode_report(&trace);
                assert!(report.stages.windows(2).all(|w| w[0].stage < w[1].stage));
            }
            Err(_) => errored = true,
        }
    }
});
