//! Fuzzes the capture reader: any bytes as a pcap / pcapng file, read to the end.
//! Properties: no panic, no unbounded allocation, at most one error and nothing after it; every
//! conversation found also goes through the stage decoder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rdprobe::capture::reader::{read_conversations, KeyLog, ReaderOptions};

/// A key log and an RSA key make the TLS decryption paths (key log and static RSA) reachable for
/// records in the input. Built once: RSA key generation is slow.
fn keylog() -> KeyLog {
    static KEYLOG: OnceLock<KeyLog> = OnceLock::new();
    KEYLOG
        .get_or_init(|| {
            let mut k = KeyLog::parse(
                "CLIENT_RANDOM 0000000000000000000000000000000000000000000000000000000000000000 \
                 000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            );
            let rsa = openssl::rsa::Rsa::generate(1024).expect("rsa key");
            k.add_rsa_key(&rsa.private_key_to_pem().expect("pem"))
                .expect("rsa key accepted");
            k
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let opts = ReaderOptions {
        keylog: Some(keylog()),
        max_retained_per_direction: 64 * 1024,
        ..ReaderOptions::default()
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
