//! Test harness shared by the integration tests: real peers (xrdp, freerdp-shadow-cli under Xvfb,
//! xfreerdp, tshark) on free loopback ports, misbehaving in-process servers, and a raw X.224 client.
//!
//! Use it from an integration test with `mod common;` and `use common::*;`. Every peer is stopped by
//! PID when its value drops (also when the test panics); a missing binary is an error naming the
//! Debian package to install, never a silent pass. All helpers are synchronous (std threads), so they
//! work the same from `#[test]` and `#[tokio::test]` — in async tests, start peers before awaiting.
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! let xrdp = Xrdp::start(XrdpOpts::tls())?;                      // or XrdpOpts { cert: CertKind::Expired, ..XrdpOpts::tls() }
//! let shadow = FreerdpShadow::start("nla", &[("alice", "secret")])?;
//! let silent = BadServer::silent();
//! let outcome = x224_negotiate(xrdp.port(), PROTOCOL_HYBRID, Duration::from_secs(5))?;
//! let run = xfreerdp_auth_only(shadow.port(), "alice", "secret", &[], Duration::from_secs(20))?;
//! let rows = tshark_fields(&pcap, &["-d", &format!("tcp.port=={},tpkt", xrdp.port())], &["x224.type"]);
//! ```

// Each integration test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod bad;
pub mod browser;
pub mod certs;
pub mod clients;
pub mod net;
pub mod pg_server;
pub mod process;
pub mod shadow;
pub mod tls;
pub mod xrdp;

pub use bad::{
    BadServer, ConnRecord, CredsspErrorOpts, CredsspErrorServer, ErrorAt, ErrorEncoding,
    TlsOrderOpts, TlsOrderServer,
};
pub use certs::TestCert;
pub use clients::{
    tshark, tshark_fields, tshark_summary, tshark_verbose, xfreerdp, xfreerdp_auth_only,
    xfreerdp_on, XfreerdpRun,
};
pub use net::*;
pub use pg_server::Postgres;
pub use process::{find_binary, require_binary, ProcessGuard};
pub use shadow::{nt_hash_hex, sam_line, FreerdpShadow, Xvfb};
pub use tls::{tls_after_x224, TlsFacts, TlsRange};
pub use xrdp::{CertKind, Xrdp, XrdpOpts, LEGACY_TLS10_CIPHERS};

pub use std::time::Duration;
