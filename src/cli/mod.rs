//! The command line's own modules (the binary's, not the library's): how results are printed.
//! `main.rs` parses the arguments and dispatches.

pub mod analyze_par;
pub mod analyze_view;
pub mod check;
pub mod lab_fork;
pub mod lab_gateway;
pub mod scan;
