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
}

impl ConnectionReport {
    pub fn stage(&self, stage: Stage) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    pub fn fact(&self, stage: Stage, key: &str) -> Option<&serde_json::Value> {
        self.stage(stage).and_then(|s| s.facts.get(key))
    }
}
