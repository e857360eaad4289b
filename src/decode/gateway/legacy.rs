//! Pairing the legacy HTTP transport's two conversations (MS-TSGU 3.3.5.1): the OUT channel
//! (`RDG_OUT_DATA`, answered `200 OK`, the gateway's packets) and the IN channel (`RDG_IN_DATA`, the
//! client's packets as chunks) are two TCP connections. A capture reader yields them one by one, in
//! the order they end; [`LegacyPairs`] holds a channel until its partner comes and yields the OUT
//! channel's Trace carrying the IN channel's ([`Trace::legacy_in`]), which
//! [`super::decode`] reads as one tunnel.
//!
//! Partners: the same `RDG-Connection-Id` (both requests carry it); when either lacks one, the same
//! client address and gateway, nearest in time.
//!
//! INVARIANT: bounded: at most [`MAX_HELD`] channels wait for a partner (the oldest goes on alone
//! beyond that), each a Trace the reader already bounds; only a head's worth of each stream is read
//! to classify a conversation.

use std::collections::VecDeque;

use super::{read_heads, Flow};
use crate::gateway::http;
use crate::trace::{Dir, Layer, Trace};

/// Most unpaired channels held back at once. A tunnel's two channels end at about the same time, so
/// few wait; the bound keeps a hostile capture of unpaired channels to this many Traces (each
/// bounded by the reader's retention).
pub const MAX_HELD: usize = 16;
/// Bytes of each inner stream read to classify a conversation (the heads and NTLM rounds).
const CLASSIFY_BYTES: usize = 4 * http::MAX_HEAD_LEN;

/// Which channel of the legacy transport a conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyRole {
    /// `RDG_OUT_DATA` answered `200 OK` (not upgraded to a WebSocket).
    Out,
    /// `RDG_IN_DATA`.
    In,
}

/// The legacy transport's channel a gateway conversation is, with its `RDG-Connection-Id`; `None`
/// for anything else (a WebSocket tunnel, RDP, a conversation without cleartext).
pub fn legacy_channel(trace: &Trace) -> Option<(LegacyRole, Option<String>)> {
    if !super::is_gateway(trace) {
        return None;
    }
    let c = Flow::first(trace, Dir::C2S, Layer::Inner, CLASSIFY_BYTES);
    let (req, _) = http::parse_head(&c.bytes, true).ok().flatten()?;
    let id = req
        .header("rdg-connection-id")
        .map(|v| v.trim().to_ascii_lowercase());
    if req.method.eq_ignore_ascii_case("RDG_IN_DATA") {
        return Some((LegacyRole::In, id));
    }
    if !req.method.eq_ignore_ascii_case("RDG_OUT_DATA") {
        return None;
    }
    let s = Flow::first(trace, Dir::S2C, Layer::Inner, CLASSIFY_BYTES);
    let heads = read_heads(&c, &s);
    let out = heads.ex.iter().any(|x| {
        x.req.method.eq_ignore_ascii_case("RDG_OUT_DATA")
            && x.resp.as_ref().is_some_and(|(h, _)| h.status == 200)
    });
    out.then_some((LegacyRole::Out, id))
}

/// A held channel.
struct Held {
    trace: Trace,
    role: LegacyRole,
    id: Option<String>,
    start_us: u64,
}

fn start_of(t: &Trace) -> u64 {
    t.connect_start_us
        .or_else(|| t.events.first().map(|e| e.t_us))
        .unwrap_or(0)
}

/// Conversations with the legacy transport's channels paired (see the module documentation); every
/// other item passes through unchanged, in order.
pub struct LegacyPairs<I: Iterator> {
    inner: I,
    held: VecDeque<Held>,
    /// Items to yield before reading on (channels let go, then a capture error).
    ready: VecDeque<I::Item>,
    done: bool,
}

impl<I: Iterator> LegacyPairs<I> {
    pub fn new(inner: I) -> Self {
        LegacyPairs {
            inner,
            held: VecDeque::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// The wrapped iterator (for what it gathered besides conversations).
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The wrapped iterator.
    pub fn into_inner(self) -> I {
        self.inner
    }

    /// The held channel that is `trace`'s partner.
    fn partner(&self, role: LegacyRole, id: &Option<String>, trace: &Trace) -> Option<usize> {
        let cands = self
            .held
            .iter()
            .enumerate()
            .filter(|(_, h)| h.role != role && h.trace.server == trace.server);
        match id {
            Some(id) if self.held.iter().any(|h| h.id.as_ref() == Some(id)) => cands
                .filter(|(_, h)| h.id.as_ref() == Some(id))
                .map(|(i, _)| i)
                .next(),
            _ => {
                // No identifier to match: the same client address, nearest in time.
                let t0 = start_of(trace);
                cands
                    .filter(|(_, h)| {
                        (h.id.is_none() || id.is_none()) && h.trace.client.ip() == trace.client.ip()
                    })
                    .min_by_key(|(_, h)| h.start_us.abs_diff(t0))
                    .map(|(i, _)| i)
            }
        }
    }
}

/// The OUT channel's Trace carrying the IN channel's (and its key log lines).
fn join(mut out: Trace, in_: Trace) -> Trace {
    for l in &in_.keylog {
        if !out.keylog.contains(l) {
            out.keylog.push(l.clone());
        }
    }
    out.legacy_in = Some(Box::new(in_));
    out
}

impl<I, E> Iterator for LegacyPairs<I>
where
    I: Iterator<Item = Result<Trace, E>>,
{
    type Item = Result<Trace, E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.ready.pop_front() {
                return Some(x);
            }
            if self.done {
                return self.held.pop_front().map(|h| Ok(h.trace));
            }
            let trace = match self.inner.next() {
                None => {
                    self.done = true;
                    continue;
                }
                Some(Err(e)) => {
                    // The channels read before the damage go first, unpaired; the error ends the
                    // stream after them.
                    self.ready.extend(self.held.drain(..).map(|h| Ok(h.trace)));
                    self.ready.push_back(Err(e));
                    self.done = true;
                    continue;
                }
                Some(Ok(t)) => t,
            };
            let Some((role, id)) = legacy_channel(&trace) else {
                return Some(Ok(trace));
            };
            if let Some(i) = self.partner(role, &id, &trace) {
                let other = self.held.remove(i).map(|h| h.trace)?;
                let (out, in_) = match role {
                    LegacyRole::Out => (trace, other),
                    LegacyRole::In => (other, trace),
                };
                return Some(Ok(join(out, in_)));
            }
            let start_us = start_of(&trace);
            self.held.push_back(Held {
                trace,
                role,
                id,
                start_us,
            });
            if self.held.len() > MAX_HELD {
                if let Some(h) = self.held.pop_front() {
                    return Some(Ok(h.trace));
                }
            }
        }
    }
}
