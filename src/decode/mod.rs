//! decode: turns a Trace into stages and verdicts. Pure code, no I/O. An RD Gateway conversation
//! (HTTPS from the first byte) goes to [`gateway`], which hands the channel's RDP to the machine.
//!
//! INVARIANT: the verdict of a live probe equals `decode` of the capture that probe wrote.

pub mod credssp;
pub mod gateway;
pub mod mcs;
pub mod pdu;
pub mod tls;
pub mod x224;

use crate::report::ConnectionReport;
use crate::trace::Trace;

/// A decoded Trace: the report and a label per trace event (for capture comments).
#[derive(Clone, Debug)]
pub struct Decoded {
    pub report: ConnectionReport,
    /// `labels[i]` names the PDUs in `trace.events[i]` ("x224: connection request"), or is empty.
    pub labels: Vec<String>,
}

/// Decodes one conversation.
pub fn decode(trace: &Trace) -> Decoded {
    if gateway::is_gateway(trace) {
        return gateway::decode(trace);
    }
    machine::run(trace, true)
}

/// Decodes one conversation without building capture labels (`Decoded::labels` is empty): the fast
/// path for `analyze`.
pub fn decode_report(trace: &Trace) -> ConnectionReport {
    if gateway::is_gateway(trace) {
        return gateway::decode(trace).report;
    }
    machine::run(trace, false).report
}

mod machine;
