//! The oracles: how the target answered one case (response class), whether it still serves a fresh
//! valid handshake (liveness), and the signature findings are deduplicated by.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::watch::ProcessFate;
use super::FuzzStage;

/// How the target answered a mutated PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseClass {
    /// A well-formed reply of the kind the stage expects (Connection Confirm, ServerHello,
    /// TSRequest with a token, MCS Connect Response with rt-successful, join confirms).
    ValidReply,
    /// A well-formed refusal: RDP_NEG_FAILURE, X.224 disconnect, TLS alert, TSRequest errorCode,
    /// MCS Connect Response with a failure result, Disconnect Provider Ultimatum, a failed confirm.
    ErrorReply,
    /// Bytes that are not a well-formed reply of this stage (or a partial one before the deadline).
    MalformedReply,
    /// The target reset the connection (TCP RST) without a reply.
    Reset,
    /// The target closed the connection (FIN or TLS close_notify) without a reply.
    Close,
    /// No reply before the deadline; the target closed when the fuzzer half-closed its side (it
    /// was waiting for more bytes, as a length field asked it to).
    AwaitedMore,
    /// No reply before the deadline and no reaction to the fuzzer's FIN either: a hang.
    Silence,
    /// The TCP connection was refused or timed out (the target is not listening).
    Refused,
    /// The valid stages before the target stage failed (the target answered them in the baseline).
    PrefixFailed,
}

impl ResponseClass {
    pub const ALL: [ResponseClass; 9] = [
        ResponseClass::ValidReply,
        ResponseClass::ErrorReply,
        ResponseClass::MalformedReply,
        ResponseClass::Reset,
        ResponseClass::Close,
        ResponseClass::AwaitedMore,
        ResponseClass::Silence,
        ResponseClass::Refused,
        ResponseClass::PrefixFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseClass::ValidReply => "valid_reply",
            ResponseClass::ErrorReply => "error_reply",
            ResponseClass::MalformedReply => "malformed_reply",
            ResponseClass::Reset => "reset",
            ResponseClass::Close => "close",
            ResponseClass::AwaitedMore => "awaited_more",
            ResponseClass::Silence => "silence",
            ResponseClass::Refused => "refused",
            ResponseClass::PrefixFailed => "prefix_failed",
        }
    }

    /// Classes that call for an immediate liveness check (the target may be hurt).
    pub fn suspicious(self) -> bool {
        matches!(
            self,
            ResponseClass::Reset
                | ResponseClass::Silence
                | ResponseClass::Refused
                | ResponseClass::PrefixFailed
                | ResponseClass::MalformedReply
        )
    }
}

impl fmt::Display for ResponseClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the target still completes a valid handshake to the fuzzed stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Not checked after this case (checked every N cases and after suspicious ones).
    Unchecked,
    /// A fresh valid handshake succeeded at once.
    Alive,
    /// The first fresh handshake failed, a later one within the recovery window succeeded.
    Hung,
    /// No fresh handshake succeeded within the recovery window.
    Down,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Unchecked => "unchecked",
            Liveness::Alive => "alive",
            Liveness::Hung => "hung",
            Liveness::Down => "down",
        }
    }

    /// For signatures: a case without a check counts as alive (nothing says otherwise).
    pub fn for_signature(self) -> Liveness {
        match self {
            Liveness::Unchecked => Liveness::Alive,
            l => l,
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What findings are deduplicated by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Signature {
    pub stage: FuzzStage,
    pub class: ResponseClass,
    pub liveness: Liveness,
    /// What became of the watched target process (`--lab`, `--pid`); `running` when unwatched.
    #[serde(default)]
    pub process: ProcessFate,
    /// How the target answers the valid PDU of the stage (see `Target::baseline`).
    #[serde(default = "valid_reply", skip_serializing_if = "is_valid_reply")]
    pub baseline: ResponseClass,
}

fn valid_reply() -> ResponseClass {
    ResponseClass::ValidReply
}

fn is_valid_reply(c: &ResponseClass) -> bool {
    *c == ResponseClass::ValidReply
}

impl Signature {
    /// A signature of an unwatched target.
    pub fn new(stage: FuzzStage, class: ResponseClass, liveness: Liveness) -> Signature {
        Signature {
            stage,
            class,
            liveness,
            process: ProcessFate::Running,
            baseline: ResponseClass::ValidReply,
        }
    }

    /// The same signature against a target whose valid PDU gets `baseline`.
    pub fn against(self, baseline: ResponseClass) -> Signature {
        Signature { baseline, ..self }
    }
}

impl Signature {
    /// Whether this signature is a finding: the target hung, reset, sent malformed data, stopped
    /// listening or stopped serving valid handshakes. Valid and error replies, closes and waits for
    /// more bytes are how a healthy server treats malformed input.
    ///
    /// Against a target that does not answer the valid PDU with a valid reply (a server that closes
    /// after the client's Connect Initial, say), the answer it gives the valid PDU is no finding
    /// either, and a valid reply to a mutated PDU is one: another answer than the baseline's,
    /// except the refusals (error reply, close, waiting for more) a healthy server gives.
    pub fn is_finding(&self) -> bool {
        if self.process != ProcessFate::Running
            || matches!(self.liveness, Liveness::Hung | Liveness::Down)
        {
            return true;
        }
        if self.class == self.baseline {
            return false;
        }
        matches!(
            self.class,
            ResponseClass::Reset
                | ResponseClass::Silence
                | ResponseClass::MalformedReply
                | ResponseClass::Refused
                | ResponseClass::PrefixFailed
        ) || (self.class == ResponseClass::ValidReply && self.baseline != ResponseClass::ValidReply)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.stage, self.class, self.liveness)?;
        match self.process {
            ProcessFate::Running => Ok(()),
            p => write!(f, "/{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_the_anomalies() {
        let sig = |class, liveness| Signature::new(FuzzStage::X224, class, liveness);
        assert!(!sig(ResponseClass::Close, Liveness::Alive).is_finding());
        assert!(!sig(ResponseClass::ErrorReply, Liveness::Alive).is_finding());
        assert!(!sig(ResponseClass::AwaitedMore, Liveness::Alive).is_finding());
        assert!(sig(ResponseClass::Close, Liveness::Hung).is_finding());
        assert!(sig(ResponseClass::Silence, Liveness::Alive).is_finding());
        assert!(sig(ResponseClass::Reset, Liveness::Alive).is_finding());
        assert_eq!(
            sig(ResponseClass::Silence, Liveness::Hung).to_string(),
            "x224/silence/hung"
        );
        assert_eq!(Liveness::Unchecked.for_signature(), Liveness::Alive);
        let crash = Signature {
            process: ProcessFate::Signaled { signal: 11 },
            ..sig(ResponseClass::Close, Liveness::Down)
        };
        assert!(crash.is_finding());
        assert_eq!(
            crash.to_string(),
            "x224/close/down/exited with signal 11 (SIGSEGV)"
        );
        assert_ne!(crash, sig(ResponseClass::Close, Liveness::Down));
    }

    #[test]
    fn findings_deviate_from_the_baseline() {
        let sig = |class, baseline| {
            Signature::new(FuzzStage::Mcs, class, Liveness::Alive).against(baseline)
        };
        // A server that closes after a valid Connect Initial.
        assert!(!sig(ResponseClass::Close, ResponseClass::Close).is_finding());
        assert!(!sig(ResponseClass::ErrorReply, ResponseClass::Close).is_finding());
        assert!(sig(ResponseClass::ValidReply, ResponseClass::Close).is_finding());
        assert!(sig(ResponseClass::Reset, ResponseClass::Close).is_finding());
        assert!(sig(ResponseClass::Silence, ResponseClass::Close).is_finding());
        // One that resets: resets are its normal answer, a hang is not.
        assert!(!sig(ResponseClass::Reset, ResponseClass::Reset).is_finding());
        assert!(sig(ResponseClass::Silence, ResponseClass::Reset).is_finding());
        let down = Signature::new(FuzzStage::Mcs, ResponseClass::Close, Liveness::Down)
            .against(ResponseClass::Close);
        assert!(down.is_finding());
        // The baseline is in case.json only when it is not a valid reply.
        let json = serde_json::to_string(&sig(ResponseClass::Reset, ResponseClass::ValidReply))
            .expect("json");
        assert!(!json.contains("baseline"), "{json}");
        let json =
            serde_json::to_string(&sig(ResponseClass::Reset, ResponseClass::Close)).expect("json");
        assert!(json.contains("\"baseline\":\"close\""), "{json}");
    }
}
