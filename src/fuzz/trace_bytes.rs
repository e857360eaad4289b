//! A byte encoding of a [`Trace`] with arbitrary events, for the `decode_trace` cargo-fuzz target
//! (fuzz/fuzz_targets/decode_trace.rs): any byte string is a valid Trace, and every Trace the probe
//! records can be written as bytes (seed corpus: `fuzz/corpus/decode_trace/`).
//!
//! Format: a sequence of records `[op: u8][dt: u8]` + operands; `dt` is the time step in
//! microseconds (so the event times are non-decreasing, the Trace invariant). Data operands are
//! `[len: u16 LE][bytes]`, truncated at the end of the input. Unknown ops are skipped.

use bytes::Bytes;

use crate::stage::Stage;
use crate::trace::{ConnectFailure, Dir, EventKind, Layer, TlsSessionInfo, Trace};

/// Most events one input decodes into (bounds the work per fuzz input).
pub const MAX_EVENTS: usize = 4096;

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&x, rest) = self.b.split_first()?;
        self.b = rest;
        Some(x)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    /// `[len: u16][bytes]`, truncated to what is left.
    fn blob(&mut self) -> Option<&[u8]> {
        let n = usize::from(self.u16()?).min(self.b.len());
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Some(x)
    }

    fn text(&mut self) -> Option<String> {
        self.blob().map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

fn dir(x: u8) -> Dir {
    if x & 1 == 0 {
        Dir::C2S
    } else {
        Dir::S2C
    }
}

fn dir_byte(d: Dir) -> u8 {
    match d {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

/// Decodes any bytes into a Trace (never fails; see the module docs for the format).
pub fn trace_from_bytes(data: &[u8]) -> Trace {
    let client = std::net::SocketAddr::from(([127, 0, 0, 1], 50_000));
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], 3389));
    let mut t = Trace::new(client, server);
    let mut r = Reader { b: data };
    let mut now = 1_700_000_000_000_000u64;
    while t.events.len() < MAX_EVENTS {
        let (Some(op), Some(dt)) = (r.u8(), r.u8()) else {
            break;
        };
        now += u64::from(dt);
        let kind = match op % 16 {
            0 => EventKind::Connected,
            1 => EventKind::ConnectFailed(match r.u8().unwrap_or(0) % 3 {
                0 => ConnectFailure::Refused,
                1 => ConnectFailure::TimedOut {
                    after_ms: u64::from(r.u16().unwrap_or(0)),
                },
                _ => ConnectFailure::Unreachable {
                    detail: r.text().unwrap_or_default(),
                },
            }),
            2..=5 => {
                let k = op % 16 - 2;
                let Some(b) = r.blob() else { break };
                EventKind::Data {
                    dir: dir(k),
                    layer: if k < 2 { Layer::Wire } else { Layer::Inner },
                    bytes: Bytes::copy_from_slice(b),
                }
            }
            6 => {
                let x = r.u8().unwrap_or(0);
                EventKind::Elided {
                    dir: dir(x),
                    layer: if x & 2 == 0 {
                        Layer::Wire
                    } else {
                        Layer::Inner
                    },
                    len: u64::from(r.u16().unwrap_or(0)),
                }
            }
            7 => EventKind::Gap {
                dir: dir(r.u8().unwrap_or(0)),
                len: u64::from(r.u16().unwrap_or(0)),
            },
            8 => EventKind::Fin {
                dir: dir(r.u8().unwrap_or(0)),
            },
            9 => EventKind::Rst {
                dir: dir(r.u8().unwrap_or(0)),
            },
            10 => EventKind::Timeout {
                waiting_for: dir(r.u8().unwrap_or(0)),
                after_ms: u64::from(r.u16().unwrap_or(0)),
            },
            11 => {
                let version = r.text().unwrap_or_default();
                let cipher_suite = r.text().unwrap_or_default();
                let cert = r.blob().map(<[u8]>::to_vec);
                EventKind::TlsSession(TlsSessionInfo {
                    version,
                    cipher_suite,
                    certificates: cert.into_iter().collect(),
                    engine: "rustls".into(),
                })
            }
            12 => EventKind::TlsError {
                message: r.text().unwrap_or_default(),
            },
            13 => EventKind::StoppedAfter(
                Stage::ALL[usize::from(r.u8().unwrap_or(0)) % Stage::ALL.len()],
            ),
            14 => EventKind::Note(r.text().unwrap_or_default()),
            16 => EventKind::ClientRejected {
                what: r.text().unwrap_or_default(),
            },
            _ => EventKind::CaptureEnd,
        };
        t.push_at(now, None, kind);
    }
    t
}

fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

fn clamp16(v: u64) -> [u8; 2] {
    (v.min(u64::from(u16::MAX)) as u16).to_le_bytes()
}

/// Encodes a Trace (as the probe or the capture reader made it) in the fuzz format: seeds.
/// Data longer than 65535 bytes per event is cut; time steps are capped at 255 µs.
pub fn trace_to_bytes(t: &Trace) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = t.start_us();
    for e in &t.events {
        let dt = e.t_us.saturating_sub(last).min(255) as u8;
        last = e.t_us;
        match &e.kind {
            EventKind::Connected => out.extend_from_slice(&[0, dt]),
            EventKind::ConnectFailed(f) => {
                out.extend_from_slice(&[1, dt]);
                match f {
                    ConnectFailure::Refused => out.push(0),
                    ConnectFailure::TimedOut { after_ms } => {
                        out.push(1);
                        out.extend_from_slice(&clamp16(*after_ms));
                    }
                    ConnectFailure::Unreachable { detail } => {
                        out.push(2);
                        put_blob(&mut out, detail.as_bytes());
                    }
                }
            }
            EventKind::Data { dir, layer, bytes } => {
                let k = dir_byte(*dir) + if *layer == Layer::Inner { 2 } else { 0 };
                out.extend_from_slice(&[2 + k, dt]);
                put_blob(&mut out, bytes);
            }
            EventKind::Elided { dir, layer, len } => {
                let x = dir_byte(*dir) | if *layer == Layer::Inner { 2 } else { 0 };
                out.extend_from_slice(&[6, dt, x]);
                out.extend_from_slice(&clamp16(*len));
            }
            EventKind::Gap { dir, len } => {
                out.extend_from_slice(&[7, dt, dir_byte(*dir)]);
                out.extend_from_slice(&clamp16(*len));
            }
            EventKind::Fin { dir } => out.extend_from_slice(&[8, dt, dir_byte(*dir)]),
            EventKind::Rst { dir } => out.extend_from_slice(&[9, dt, dir_byte(*dir)]),
            EventKind::Timeout {
                waiting_for,
                after_ms,
            } => {
                out.extend_from_slice(&[10, dt, dir_byte(*waiting_for)]);
                out.extend_from_slice(&clamp16(*after_ms));
            }
            EventKind::TlsSession(info) => {
                out.extend_from_slice(&[11, dt]);
                put_blob(&mut out, info.version.as_bytes());
                put_blob(&mut out, info.cipher_suite.as_bytes());
                put_blob(
                    &mut out,
                    info.certificates.first().map(Vec::as_slice).unwrap_or(&[]),
                );
            }
            EventKind::TlsError { message } => {
                out.extend_from_slice(&[12, dt]);
                put_blob(&mut out, message.as_bytes());
            }
            EventKind::StoppedAfter(s) => {
                let i = Stage::ALL.iter().position(|x| x == s).unwrap_or(0);
                out.extend_from_slice(&[13, dt, i as u8]);
            }
            EventKind::Note(n) => {
                out.extend_from_slice(&[14, dt]);
                put_blob(&mut out, n.as_bytes());
            }
            EventKind::CaptureEnd => out.extend_from_slice(&[15, dt]),
            EventKind::ClientRejected { what } => {
                out.extend_from_slice(&[16, dt]);
                put_blob(&mut out, what.as_bytes());
            }
        }
    }
    out
}

/// The property the `decode_trace` target checks: decoding never panics, labels one-to-one with
/// events, and the report does not depend on whether labels were built.
pub fn check_decode(data: &[u8]) {
    let t = trace_from_bytes(data);
    let d = crate::decode::decode(&t);
    assert_eq!(d.labels.len(), t.events.len(), "one label per event");
    let fast = crate::decode::decode_report(&t);
    assert_eq!(
        serde_json::to_value(&d.report).ok(),
        serde_json::to_value(&fast).ok(),
        "the report does not depend on the labels"
    );
}

/// The property the `scenario_toml` target checks: parsing never panics, and a scenario that
/// parses survives `to_toml` and parsing again unchanged.
pub fn check_scenario_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = crate::scenario::Scenario::from_toml(text) else {
        return;
    };
    let again = crate::scenario::Scenario::from_toml(&s.to_toml())
        .unwrap_or_else(|e| panic!("to_toml output does not parse: {e}"));
    assert_eq!(again, s, "to_toml round trip");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_panics() {
        let mut t = Trace::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 50_000)),
            std::net::SocketAddr::from(([127, 0, 0, 1], 3389)),
        );
        t.push_at(1, None, EventKind::Connected);
        t.push_at(
            2,
            None,
            EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Wire,
                bytes: Bytes::from_static(&[3, 0, 0, 11, 6, 0xe0, 0, 0, 0, 0, 0]),
            },
        );
        t.push_at(
            3,
            None,
            EventKind::Timeout {
                waiting_for: Dir::S2C,
                after_ms: 500,
            },
        );
        let b = trace_to_bytes(&t);
        let back = trace_from_bytes(&b);
        assert_eq!(back.events.len(), 3);
        assert_eq!(back.events[1].kind, t.events[1].kind);
        check_decode(&b);
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..300u32)
                .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
                .collect();
            check_decode(&junk);
        }
        check_decode(&[]);
    }

    #[test]
    fn fixture_scenarios_round_trip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("fixtures") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                check_scenario_toml(&std::fs::read(&p).expect("read"));
                n += 1;
            }
        }
        assert!(n >= 10, "{n} fixtures");
        check_scenario_toml(b"name = 1\n[[[");
        check_scenario_toml(&[0xff, 0xfe]);
    }
}
