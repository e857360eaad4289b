//! The result of decoding a Trace: one row per stage, the overall verdict and a one-line summary.
//!
//! These types are the stable JSON schema documented in the README (`rdprobe probe --json`,
//! `rdprobe analyze --json`). Renaming a field is a breaking change.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::stage::{Side, Stage, Verdict};

/// Decoded facts of one stage, by documented key (see README "JSON schema").
pub type Facts = BTreeMap<String, serde_json::Value>;

/// One stage of one connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: Stage,
    pub verdict: Verdict,
    /// Microseconds since the Unix epoch when the stage began (first byte of it, or connect start).
    pub start_us: u64,
    /// Duration from the first to the last event of the stage, in milliseconds.
    pub duration_ms: f64,
    /// Bytes the client sent during the stage (wire layer).
    pub bytes_c2s: u64,
    /// Bytes the server sent during the stage (wire layer).
    pub bytes_s2c: u64,
    /// Capture frame numbers behind this stage (analyze only; empty for a live probe).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<u64>,
    /// Decoded facts of the stage.
    pub facts: Facts,
}

/// One connection, decoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionReport {
    pub client: String,
    pub server: String,
    pub stages: Vec<StageReport>,
    /// The last stage reached (the failing one, or `connected`).
    pub last_stage: Stage,
    /// The verdict of the last stage.
    pub verdict: Verdict,
    /// Which side most likely ended the connection (None when it did not end).
    pub ended_by: Option<Side>,
    /// One-line human summary.
    pub summary: String,
    /// Observations that do not belong to one stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What TCP and IP said (captures): per-direction retransmissions, unacknowledged bytes, TTLs,
    /// where each RST / FIN came from, ICMP errors, notable packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Box<crate::evidence::TcpEvidence>>,
}

impl ConnectionReport {
    pub fn stage(&self, stage: Stage) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    pub fn fact(&self, stage: Stage, key: &str) -> Option<&serde_json::Value> {
        self.stage(stage).and_then(|s| s.facts.get(key))
    }
}

/// Human-readable one-line rendering of a fact value.
fn fact_str(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(fact_str).collect::<Vec<_>>().join(","),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}:{}", fact_str(v)))
            .collect::<Vec<_>>()
            .join("/"),
        other => other.to_string(),
    }
}

/// The facts worth a column in the table, per stage, in display order.
fn shown_facts(stage: Stage) -> &'static [&'static str] {
    match stage {
        Stage::Dns => &["name", "addresses", "tried"],
        Stage::GwTcp => &["gateway", "address"],
        Stage::GwTls => &[
            "version",
            "cipher_suite",
            "cert_subject",
            "cert_issuer",
            "cert_not_after",
            "cert_expired",
        ],
        Stage::GwHttp => &[
            "transport",
            "status",
            "server_header",
            "location",
            "www_authenticate",
        ],
        Stage::GwAuth => &["scheme", "status", "www_authenticate"],
        Stage::GwTunnel => &[
            "server_version",
            "capabilities",
            "tunnel_id",
            "hresult_name",
            "tunnel_policy",
        ],
        Stage::GwChannel => &["target", "port", "channel_id", "hresult_name"],
        Stage::Tcp => &["server", "capture", "syn_retries"],
        Stage::X224 => &[
            "requested_protocols",
            "cookie",
            "selected_protocol",
            "response_flags",
            "failure_name",
        ],
        Stage::Tls => &[
            "version",
            "cipher_suite",
            "legacy_only",
            "cert_subject",
            "cert_issuer",
            "cert_not_before",
            "cert_not_after",
            "cert_expired",
            "cert_not_yet_valid",
            "cert_self_signed",
            "cert_key",
            "alert",
            "client_tls_error",
            "encrypted",
        ],
        Stage::Credssp => &[
            "version",
            "ntlm_nb_computer_name",
            "ntlm_nb_domain_name",
            "ntlm_dns_computer_name",
            "ntlm_dns_domain_name",
            "ntlm_dns_tree_name",
            "ntlm_os_version",
            "ntlm_server_time",
            "early_user_auth",
            "error_code",
            "error_name",
            "contains_ntlm_response",
            "encrypted_records",
        ],
        Stage::Mcs => &[
            "server_rdp_version",
            "client_requested_protocols_echo",
            "encryption_method",
            "encryption_level",
            "server_random_present",
            "server_certificate_type",
            "server_key_bits",
            "result",
        ],
        Stage::Channels => &["attach_user", "channel_join"],
        Stage::Licensing => &["license_error_code", "license_state_transition"],
        Stage::Security | Stage::Capabilities | Stage::Connected => &["set_error_info"],
    }
}

/// Renders the per-stage table and the summary line, as `rdprobe probe` prints it.
pub fn render_text(r: &ConnectionReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} -> {}", r.client, r.server);
    let _ = writeln!(
        out,
        "{:<13} {:<34} {:>9} {:>8} {:>8}  facts",
        "STAGE", "VERDICT", "MS", "C->S", "S->C"
    );
    for s in &r.stages {
        let verdict = match &s.verdict {
            Verdict::Ok => "ok".to_owned(),
            Verdict::Failed { kind, by } => format!("FAILED {} ({by})", kind.name()),
        };
        let mut facts = Vec::new();
        for key in shown_facts(s.stage) {
            if let Some(v) = s.facts.get(*key) {
                if matches!(v, serde_json::Value::Bool(false)) || v.as_str() == Some("") {
                    continue;
                }
                facts.push(format!("{}={}", key, fact_str(v)));
            }
        }
        let _ = writeln!(
            out,
            "{:<13} {:<34} {:>9.1} {:>8} {:>8}  {}",
            s.stage.as_str(),
            verdict,
            s.duration_ms,
            s.bytes_c2s,
            s.bytes_s2c,
            facts.join(" ")
        );
        if let Verdict::Failed { kind, .. } = &s.verdict {
            let _ = writeln!(out, "{:<13} -> {kind}", "");
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(out, "summary: {}", r.summary);
    out
}

/// Documented exit codes (README "Exit codes").
pub mod exit {
    /// Connected, or stopped by request with every stage passed.
    pub const SUCCESS: i32 = 0;
    /// rdprobe itself failed (I/O error writing a file, internal error).
    pub const INTERNAL: i32 = 1;
    /// Bad command line.
    pub const USAGE: i32 = 2;
    /// Network-level failure: refused, unreachable, timed out, reset or closed without a protocol answer.
    pub const NETWORK: i32 = 3;
    /// The server refused: negotiation failure, protocol mismatch, denied.
    pub const REFUSED: i32 = 4;
    /// TLS failure: alert, no common version or cipher.
    pub const TLS: i32 = 5;
    /// Authentication failure (CredSSP errorCode, or a close right after the AUTHENTICATE).
    pub const AUTH: i32 = 6;
    /// Protocol error: malformed data from the peer.
    pub const PROTOCOL: i32 = 7;
    /// The capture ended before the connection did (analyze).
    pub const INCOMPLETE: i32 = 8;
    /// `replay --as-client` / `fuzz --replay`: the server no longer behaves as captured.
    pub const REPLAY_MISMATCH: i32 = 9;
    /// `fuzz`: findings were written.
    pub const FUZZ_FINDINGS: i32 = 10;
    /// `check`: an expectation did not hold (or a target gave no result).
    pub const EXPECTATION: i32 = 11;
    /// `diff`: a target regressed (fails now or earlier, a weaker protocol or TLS version, an
    /// expired certificate, a stage slower beyond the tolerance).
    pub const DIFF_REGRESSED: i32 = 12;
    /// `diff`: targets changed, none for the worse (fixed, new, missing, another certificate).
    pub const DIFF_CHANGED: i32 = 13;
    /// Interrupted by SIGINT / SIGTERM (results so far were still written).
    pub const INTERRUPTED: i32 = 130;
}

/// The exit code for a report's verdict.
pub fn exit_code(r: &ConnectionReport) -> i32 {
    use crate::stage::FailureKind as K;
    match &r.verdict {
        Verdict::Ok => exit::SUCCESS,
        Verdict::Failed { kind, .. } => match kind {
            K::Stopped => exit::SUCCESS,
            K::Refused
            | K::Unreachable { .. }
            | K::TimedOut { .. }
            | K::Reset
            | K::Closed { .. }
            | K::Dropped { .. } => exit::NETWORK,
            K::NegotiationFailure { .. } | K::ProtocolMismatch { .. } | K::Denied { .. } => {
                exit::REFUSED
            }
            K::TlsAlert { .. } | K::TlsFailure { .. } => exit::TLS,
            K::AuthFailure { .. } => exit::AUTH,
            K::HttpStatus { status: 401, .. } => exit::AUTH,
            K::HttpStatus { .. } | K::GatewayError { .. } => exit::REFUSED,
            K::ProtocolError { .. } => exit::PROTOCOL,
            K::CaptureEnded => exit::INCOMPLETE,
        },
    }
}
