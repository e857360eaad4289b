//! decode: turns a Trace into stages and verdicts. Pure code, no I/O.
//!
//! INVARIANT: the verdict of a live probe equals `decode` of the capture that probe wrote.

pub mod credssp;
pub mod mcs;
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
    machine::run(trace, true)
}

/// Decodes one conversation without building capture labels (`Decoded::labels` is empty): the fast
/// path for `analyze`.
pub fn decode_report(trace: &Trace) -> ConnectionReport {
    machine::run(trace, false).report
}

mod machine;
