//! The command line (the binary's modules, not the library's). `main.rs` parses the arguments and
//! dispatches; each command has a module here with its arguments, their validation into library
//! options, the run and the printing: probe, analyze (and `analyze_view`), lab (lab, demo,
//! scenarios; and `lab_gateway`), replay, enumerate, fuzz, sanitize, explain, check, scan (scan,
//! diff). `common` holds what they share: usage errors, logging, durations, targets, the password
//! and signals.

pub mod analyze;
pub mod analyze_par;
pub mod analyze_view;
pub mod check;
pub mod common;
pub mod correlate;
pub mod enumerate;
pub mod explain;
pub mod fuzz;
pub mod lab;
pub mod lab_fork;
pub mod lab_gateway;
pub mod probe;
pub mod probe_all;
pub mod replay;
pub mod sanitize;
pub mod scan;

pub(crate) use common::*;
