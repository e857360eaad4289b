//! decode: turns a Trace into stages and verdicts. Pure code, no I/O.
//!
//! INVARIANT: the verdict of a live probe equals `decode` of the capture that probe wrote.

pub mod credssp;
pub mod mcs;
pub mod tls;
