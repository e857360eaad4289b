//! The Trace: one TCP conversation as a timeline of directional byte segments and connection events.
//!
//! The live probe produces one by tapping its socket (and a second tap above TLS for the inner
//! stream); the capture reader produces one by reassembling TCP (and decrypting TLS when secrets are
//! known). Everything downstream (decode, pcapng writer, scenario derivation) takes a Trace.
//!
//! INVARIANT: `events` are in non-decreasing `t_us` order, and within one direction and layer the
//! `Data` events are the contiguous byte stream of that direction (gaps are explicit `Gap` events).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::stage::Stage;

/// Direction of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Client to server.
    C2S,
    /// Server to client.
    S2C,
}

impl Dir {
    pub fn from_side(side: crate::stage::Side) -> Dir {
        match side {
            crate::stage::Side::Server => Dir::S2C,
            _ => Dir::C2S,
        }
    }

    pub fn sender(self) -> crate::stage::Side {
        match self {
            Dir::C2S => crate::stage::Side::Client,
            Dir::S2C => crate::stage::Side::Server,
        }
    }

    pub fn reverse(self) -> Dir {
        match self {
            Dir::C2S => Dir::S2C,
            Dir::S2C => Dir::C2S,
        }
    }
}

/// Which layer a data segment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// What crossed TCP (ciphertext after a TLS upgrade).
    Wire,
    /// Cleartext above TLS (known live from the tap above TLS, offline only by decryption).
    Inner,
}

/// How a TCP connect attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    Refused,
    TimedOut { after_ms: u64 },
    Unreachable { detail: String },
}

/// TLS session facts known to an endpoint (the probe's TLS stack) or recovered by decryption.
/// With TLS 1.3 the certificate is encrypted on the wire, so this is where it comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSessionInfo {
    /// e.g. "TLSv1.3"
    pub version: String,
    /// IANA name, e.g. "TLS13_AES_256_GCM_SHA384"
    pub cipher_suite: String,
    /// DER certificates, leaf first.
    #[serde(skip)]
    pub certificates: Vec<Vec<u8>>,
    /// Which TLS engine the probe used ("rustls" or "openssl-legacy").
    pub engine: String,
}

/// One thing that happened on the conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// SYN / SYN-ACK / ACK completed.
    Connected,
    /// The connect attempt failed.
    ConnectFailed(ConnectFailure),
    /// Bytes sent in one direction on one layer.
    Data {
        dir: Dir,
        layer: Layer,
        bytes: Bytes,
    },
    /// Bytes that crossed but were not retained (bounded memory for long sessions): counted, not kept.
    Elided { dir: Dir, layer: Layer, len: u64 },
    /// Bytes missing from a direction's stream (capture loss); `len` bytes were skipped.
    Gap { dir: Dir, len: u64 },
    /// A FIN from the sender of `dir`.
    Fin { dir: Dir },
    /// A RST from the sender of `dir`.
    Rst { dir: Dir },
    /// The observer gave up waiting for `waiting_for`'s sender after `after_ms` of silence.
    Timeout { waiting_for: Dir, after_ms: u64 },
    /// The TLS handshake completed (or failed) in the observer's TLS stack.
    TlsSession(TlsSessionInfo),
    /// The observer's own TLS stack failed (e.g. no common protocol version) with this message.
    TlsError { message: String },
    /// The observer stopped on purpose after this stage (probe `--stop-after`).
    StoppedAfter(Stage),
    /// The observer's own RDP stack rejected what the server sent (a PDU it could not decode or
    /// use): the server's protocol error, whatever decode's own parsers make of the bytes.
    ClientRejected { what: String },
    /// Free-text note from the observer (shown in reports, never a secret).
    Note(String),
    /// The capture ended here (analyze only).
    CaptureEnd,
}

/// The note the probe records when the server ends the TLS session (close_notify) before TCP:
/// its TLS stack reports the alert as an end of stream, not as bytes the Trace could hold.
pub const SERVER_CLOSE_NOTIFY_NOTE: &str = "tls alert from server: warning close_notify";

/// Whether a note says the server sent close_notify ([`SERVER_CLOSE_NOTIFY_NOTE`], also as written
/// into captures by earlier versions: a note naming close_notify from the server).
pub fn is_server_close_notify_note(note: &str) -> bool {
    note.contains("close_notify") && note.contains("from server")
}

/// An event with its time and, for traces read from a capture, the frame number behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Microseconds since the Unix epoch.
    pub t_us: u64,
    /// 1-based capture frame number, when known.
    pub frame: Option<u64>,
    pub kind: EventKind,
}

/// One TCP conversation.
#[derive(Clone, Debug)]
pub struct Trace {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub events: Vec<Event>,
    /// TLS secrets in SSLKEYLOGFILE format, one line each (e.g. "CLIENT_RANDOM <hex> <hex>").
    pub keylog: Vec<String>,
    /// What TCP and IP said (retransmissions, unacknowledged bytes, TTLs, where each RST came from,
    /// ICMP errors), when the observer saw the packets (captures).
    pub tcp: Option<Box<crate::evidence::TcpEvidence>>,
    /// When the first SYN left (live probe: just before `connect()`; capture: the first SYN), so the
    /// `tcp` stage measures the real connect, SYN retries included.
    pub connect_start_us: Option<u64>,
    /// The probe's own packets as its packet socket captured them (live probe with capture
    /// permission); the pcapng writer writes these instead of synthetic frames.
    pub wire: Option<std::sync::Arc<crate::probe::wire::WireCaptured>>,
    /// The kernel's `TCP_INFO` of the probe's socket, read when the probe ended (live only).
    pub kernel: Option<crate::probe::wire::KernelTcpInfo>,
    /// The name resolution before the connect (live probe of a name).
    pub dns: Option<crate::net::DnsLookup>,
    /// The path-MTU search after a stall (live probe).
    pub mss_search: Option<crate::probe::wire::MssSearch>,
    /// An RD Gateway's legacy HTTP transport runs on two TCP connections: on the OUT channel's
    /// conversation, its IN channel's (paired by `decode::gateway::LegacyPairs`, decoded together).
    pub legacy_in: Option<Box<Trace>>,
}

/// How a pcapng written by rdprobe carries [`EventKind::ClientRejected`]: a packet comment that
/// starts with this, followed by what was rejected. The capture reader turns it back into the
/// event, so `analyze` of the probe's capture gives the live verdict.
pub const CLIENT_REJECTED_COMMENT: &str = "rdprobe: the client rejected the server's data: ";

/// How a pcapng written by rdprobe carries [`EventKind::StoppedAfter`]: a packet comment that
/// starts with this, followed by the stage's name. The reader turns it back into the event, so a
/// probe stopped on purpose reads as stopped from its capture too, whichever end's FIN the wire
/// shows first (the real wire can show the server's close before the probe's own).
pub const STOPPED_AFTER_COMMENT: &str = "rdprobe stopped on purpose after stage ";

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Trace {
    pub fn new(client: SocketAddr, server: SocketAddr) -> Self {
        Trace {
            client,
            server,
            events: Vec::new(),
            keylog: Vec::new(),
            tcp: None,
            connect_start_us: None,
            wire: None,
            kernel: None,
            dns: None,
            mss_search: None,
            legacy_in: None,
        }
    }

    /// Appends an event stamped now (keeps the time order invariant even if the clock steps back).
    pub fn push_now(&mut self, kind: EventKind) {
        let t = now_us().max(self.events.last().map(|e| e.t_us).unwrap_or(0));
        self.events.push(Event {
            t_us: t,
            frame: None,
            kind,
        });
    }

    pub fn push_at(&mut self, t_us: u64, frame: Option<u64>, kind: EventKind) {
        let t = t_us.max(self.events.last().map(|e| e.t_us).unwrap_or(0));
        self.events.push(Event {
            t_us: t,
            frame,
            kind,
        });
    }

    /// Bytes in one direction and layer (concatenated stream; gaps are not filled).
    pub fn stream(&self, dir: Dir, layer: Layer) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, bytes) in self.data(dir, layer) {
            out.extend_from_slice(bytes);
        }
        out
    }

    /// The data events of one direction and layer, in order: when each came and its bytes.
    pub fn data(&self, dir: Dir, layer: Layer) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.events.iter().filter_map(move |e| match &e.kind {
            EventKind::Data {
                dir: d,
                layer: l,
                bytes,
            } if *d == dir && *l == layer => Some((e.t_us, &bytes[..])),
            _ => None,
        })
    }

    pub fn start_us(&self) -> u64 {
        self.events.first().map(|e| e.t_us).unwrap_or(0)
    }

    pub fn has_inner(&self) -> bool {
        self.events.iter().any(|e| {
            matches!(
                e.kind,
                EventKind::Data {
                    layer: Layer::Inner,
                    ..
                }
            )
        })
    }
}
