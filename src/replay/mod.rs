//! Replay: a captured connection turned back into a live failure.
//!
//! * As a server ([`server::derive_server`]): the captured server's behaviour becomes a lab
//!   [`crate::scenario::Scenario`] (selection or RDP_NEG_FAILURE, certificate, CredSSP rejection,
//!   where and how it ended the connection, its think time), which [`crate::lab`] serves, so any
//!   client fails at the same stage, the same way, after about the same time.
//! * As a client ([`client::derive_client`], [`client::run_client`]): the captured client's requests
//!   (protocols, cookie, TLS offer, credentials or not, where it stopped) are driven against a server
//!   again, and [`compare::compare`] says whether the server still behaves as in the capture — a
//!   regression check for a fixed server or gateway.
//!
//! Derivation and comparison are pure; only [`load_capture`] and [`client::run_client`] do I/O.

pub mod client;
pub mod compare;
pub mod gateway;
pub mod server;
pub mod timing;

use std::io::Read;

use crate::capture::reader::{read_conversations, ReaderOptions};
use crate::report::ConnectionReport;
use crate::stage::{FailureKind, Verdict};
use crate::trace::Trace;

/// Why a replay cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the capture: {0}")]
    Capture(String),
    #[error("the capture holds no RDP connection")]
    NoConnection,
    #[error("connection #{asked} does not exist: the capture holds {count}")]
    NoSuchConnection { asked: usize, count: usize },
    #[error("cannot replay this connection: {0}")]
    Unreproducible(String),
}

/// One connection of a capture, decoded.
#[derive(Clone, Debug)]
pub struct CapturedConnection {
    /// 1-based position in the capture, as `rdprobe analyze` numbers it.
    pub number: usize,
    pub trace: Trace,
    pub report: ConnectionReport,
}

/// Reads every connection of a pcap/pcapng (TLS secrets from the capture itself or `opts.keylog`).
/// A capture damaged part way yields the connections before the damage.
pub fn load_capture<R: Read>(
    input: R,
    opts: ReaderOptions,
) -> Result<Vec<CapturedConnection>, ReplayError> {
    let convs = read_conversations(input, opts).map_err(|e| ReplayError::Capture(e.to_string()))?;
    let mut out = Vec::new();
    // A gateway's legacy transport (OUT and IN channel) is one connection, as `analyze` shows it.
    for c in crate::decode::gateway::LegacyPairs::new(convs) {
        let Ok(trace) = c else { break };
        let report = crate::decode::decode(&trace).report;
        out.push(CapturedConnection {
            number: out.len() + 1,
            trace,
            report,
        });
    }
    if out.is_empty() {
        return Err(ReplayError::NoConnection);
    }
    Ok(out)
}

/// Whether a report shows a failure (not a success, not a stop on request).
pub fn is_failure(r: &ConnectionReport) -> bool {
    matches!(&r.verdict, Verdict::Failed { kind, .. } if !matches!(kind, FailureKind::Stopped))
}

/// Picks connection `n` (1-based), or by default the first failing one, else the first.
pub fn pick(
    conns: &[CapturedConnection],
    n: Option<usize>,
) -> Result<&CapturedConnection, ReplayError> {
    match n {
        Some(asked) => conns
            .get(asked.wrapping_sub(1))
            .ok_or(ReplayError::NoSuchConnection {
                asked,
                count: conns.len(),
            }),
        None => conns
            .iter()
            .find(|c| is_failure(&c.report))
            .or_else(|| conns.first())
            .ok_or(ReplayError::NoConnection),
    }
}
