//! Timing of a captured conversation: the server's think time before each of its answers, the wait
//! before it ended the connection, and when the connection failed.
//!
//! Pure code over a [`Trace`]'s wire layer (what crossed TCP): the inner layer repeats the same bytes
//! above TLS and would count every turn twice.

use serde::Serialize;

use crate::trace::{Dir, EventKind, Layer, Trace};

/// Server gaps shorter than this are processing noise (the lab's own TLS and CredSSP work takes a few
/// milliseconds) and are not replayed as delays.
pub const MIN_DELAY_MS: u64 = 15;

/// The server's timing in one conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerTiming {
    /// For each server turn (its first bytes after bytes from the client), the time since the
    /// client's last bytes, in milliseconds.
    pub turn_gaps_ms: Vec<f64>,
    /// Pauses of at least [`MIN_DELAY_MS`] between the server's own writes within one turn (a slow link
    /// that delays every write shows them), in milliseconds.
    pub intra_turn_gaps_ms: Vec<f64>,
    /// When the server ended the connection (RST or FIN) while the client waited for an answer: the
    /// time since the client's last bytes, in milliseconds.
    pub terminal_gap_ms: Option<f64>,
}

impl ServerTiming {
    /// The turn gaps as `link.response_delays_ms`: gaps under [`MIN_DELAY_MS`] become 0, trailing
    /// zeros are dropped (an empty list means "answer at once").
    pub fn response_delays_ms(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.turn_gaps_ms.iter().map(|g| replayable(*g)).collect();
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    }

    /// When every pause of the server, between turns and within them, is about the same (within a
    /// quarter of the median) and there are pauses within turns: the server (or its link) delays
    /// every write by that much. Returns that per-write delay.
    pub fn uniform_write_delay_ms(&self) -> Option<u64> {
        if self.intra_turn_gaps_ms.is_empty() || self.turn_gaps_ms.len() < 2 {
            return None;
        }
        let mut all: Vec<f64> = self
            .turn_gaps_ms
            .iter()
            .chain(&self.intra_turn_gaps_ms)
            .copied()
            .filter(|g| g.is_finite())
            .collect();
        all.sort_by(f64::total_cmp);
        let median = *all.get(all.len() / 2)?;
        let uniform = all.iter().all(|g| (g - median).abs() <= median / 4.0);
        let min = *all.first()?;
        (uniform && min >= MIN_DELAY_MS as f64).then(|| replayable(min))
    }

    /// The terminal gap as a delay, if it is long enough to replay.
    pub fn terminal_delay_ms(&self) -> Option<u64> {
        self.terminal_gap_ms.map(replayable).filter(|d| *d > 0)
    }
}

fn replayable(gap_ms: f64) -> u64 {
    if !gap_ms.is_finite() || gap_ms < MIN_DELAY_MS as f64 {
        return 0;
    }
    // INVARIANT: bounded by the scenario's MAX_DELAY_MS so the derived scenario validates.
    (gap_ms.round() as u64).min(crate::scenario::MAX_DELAY_MS)
}

fn ms(from_us: u64, to_us: u64) -> f64 {
    to_us.saturating_sub(from_us) as f64 / 1000.0
}

/// Measures the server's turn gaps and terminal gap on the wire layer.
pub fn server_timing(trace: &Trace) -> ServerTiming {
    let mut out = ServerTiming::default();
    let mut last_client: Option<u64> = None;
    let mut last_server: Option<u64> = None;
    let mut waiting = false;
    for e in &trace.events {
        match &e.kind {
            EventKind::Data {
                dir,
                layer: Layer::Wire,
                bytes,
            } if !bytes.is_empty() => match dir {
                Dir::C2S => {
                    last_client = Some(e.t_us);
                    waiting = true;
                }
                Dir::S2C => {
                    if waiting {
                        if let Some(t) = last_client {
                            out.turn_gaps_ms.push(ms(t, e.t_us));
                        }
                        waiting = false;
                    } else if let Some(t) = last_server {
                        let gap = ms(t, e.t_us);
                        if gap >= MIN_DELAY_MS as f64 {
                            out.intra_turn_gaps_ms.push(gap);
                        }
                    }
                    last_server = Some(e.t_us);
                }
            },
            EventKind::Elided {
                dir,
                layer: Layer::Wire,
                len,
            } if *len > 0 => match dir {
                Dir::C2S => {
                    last_client = Some(e.t_us);
                    waiting = true;
                }
                Dir::S2C => waiting = false,
            },
            EventKind::Rst { dir: Dir::S2C } | EventKind::Fin { dir: Dir::S2C } => {
                if waiting {
                    out.terminal_gap_ms = last_client.map(|t| ms(t, e.t_us));
                }
                break;
            }
            EventKind::Rst { dir: Dir::C2S } | EventKind::Fin { dir: Dir::C2S } => break,
            _ => {}
        }
    }
    out
}

/// Milliseconds from the start of the conversation (the TCP connect, else its first event) to the
/// event that ended it: the first RST or FIN from either side, the observer's timeout, or a failed
/// connect; without any of those, its last event.
pub fn failure_time_ms(trace: &Trace) -> Option<f64> {
    let start = trace
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Connected))
        .or_else(|| trace.events.first())?
        .t_us;
    let end = trace
        .events
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                EventKind::Rst { .. }
                    | EventKind::Fin { .. }
                    | EventKind::Timeout { .. }
                    | EventKind::ConnectFailed(_)
            )
        })
        .or_else(|| trace.events.last())?
        .t_us;
    Some(ms(start, end))
}

/// Whether two failure times agree: within `abs_ms`, or within `rel` (a fraction) of the larger.
pub fn times_agree(a_ms: f64, b_ms: f64, abs_ms: f64, rel: f64) -> bool {
    let d = (a_ms - b_ms).abs();
    d <= abs_ms || d <= rel * a_ms.max(b_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::SocketAddr;

    fn trace(events: &[(u64, EventKind)]) -> Trace {
        let a: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:3389".parse().expect("addr");
        let mut t = Trace::new(a, b);
        for (ms, k) in events {
            t.push_at(ms * 1000, None, k.clone());
        }
        t
    }

    fn data(dir: Dir, n: usize) -> EventKind {
        EventKind::Data {
            dir,
            layer: Layer::Wire,
            bytes: Bytes::from(vec![0u8; n]),
        }
    }

    #[test]
    fn turns_and_terminal_gap() {
        let t = trace(&[
            (0, EventKind::Connected),
            (1, data(Dir::C2S, 42)),
            (301, data(Dir::S2C, 19)),
            (310, data(Dir::C2S, 200)),
            (312, data(Dir::C2S, 10)),
            (315, data(Dir::S2C, 1000)),
            (316, data(Dir::S2C, 100)),
            (320, data(Dir::C2S, 50)),
            (820, EventKind::Rst { dir: Dir::S2C }),
        ]);
        let s = server_timing(&t);
        assert_eq!(s.turn_gaps_ms, vec![300.0, 3.0]);
        assert_eq!(s.terminal_gap_ms, Some(500.0));
        assert_eq!(s.response_delays_ms(), vec![300]);
        assert_eq!(s.terminal_delay_ms(), Some(500));
        assert_eq!(failure_time_ms(&t), Some(820.0));
    }

    #[test]
    fn fin_after_answer_has_no_terminal_gap() {
        let t = trace(&[
            (0, EventKind::Connected),
            (1, data(Dir::C2S, 42)),
            (2, data(Dir::S2C, 19)),
            (3, EventKind::Fin { dir: Dir::S2C }),
        ]);
        let s = server_timing(&t);
        assert_eq!(s.terminal_gap_ms, None);
        assert!(s.response_delays_ms().is_empty());
    }

    #[test]
    fn timeout_ends_the_conversation() {
        let t = trace(&[
            (10, EventKind::Connected),
            (11, data(Dir::C2S, 42)),
            (
                2011,
                EventKind::Timeout {
                    waiting_for: Dir::S2C,
                    after_ms: 2000,
                },
            ),
            (2012, EventKind::Fin { dir: Dir::C2S }),
        ]);
        assert_eq!(failure_time_ms(&t), Some(2001.0));
        assert_eq!(server_timing(&t).terminal_gap_ms, None);
    }

    #[test]
    fn every_write_delayed_is_a_slow_link() {
        let t = trace(&[
            (0, EventKind::Connected),
            (1, data(Dir::C2S, 42)),
            (201, data(Dir::S2C, 19)),
            (202, data(Dir::C2S, 200)),
            (402, data(Dir::S2C, 1000)),
            (603, data(Dir::S2C, 100)),
        ]);
        let s = server_timing(&t);
        assert_eq!(s.intra_turn_gaps_ms, vec![201.0]);
        assert_eq!(s.uniform_write_delay_ms(), Some(200));
        // Uneven pauses are think time, not a slow link.
        let t = trace(&[
            (0, EventKind::Connected),
            (1, data(Dir::C2S, 42)),
            (31, data(Dir::S2C, 19)),
            (32, data(Dir::C2S, 200)),
            (532, data(Dir::S2C, 1000)),
            (733, data(Dir::S2C, 100)),
        ]);
        assert_eq!(server_timing(&t).uniform_write_delay_ms(), None);
    }

    #[test]
    fn agreement() {
        assert!(times_agree(10.0, 200.0, 250.0, 0.5));
        assert!(times_agree(1000.0, 1400.0, 250.0, 0.5));
        assert!(!times_agree(100.0, 1400.0, 250.0, 0.5));
        assert!(times_agree(0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn empty_trace() {
        let t = trace(&[]);
        assert_eq!(failure_time_ms(&t), None);
        assert_eq!(server_timing(&t), ServerTiming::default());
    }
}
