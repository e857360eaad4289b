//! rdprobe: takes an RDP connection apart stage by stage.
//!
//! See ARCHITECTURE.md for the code map. The shape mirrors DESIGN.md:
//! `probe` and `capture::reader` produce a [`trace::Trace`]; [`decode`] turns it into a
//! [`report::ConnectionReport`]; `capture::writer` writes it as pcapng; `lab` serves scenarios.

pub mod capture;
pub mod check;
pub mod codes;
pub mod correlate;
pub mod cpu;
pub mod decode;
pub mod diagnose;
pub mod enumerate;
pub mod evidence;
pub mod fuzz;
pub mod gateway;
pub mod html;
pub mod lab;
pub mod net;
pub mod parse;
pub mod probe;
pub mod rdpsec;
pub mod replay;
pub mod report;
pub mod sanitize;
pub mod scan;
pub mod scenario;
pub mod sorted_json;
pub mod stage;
pub mod trace;
pub mod wire;
