//! The stage state machine: walks a Trace's events in time order, frames each direction's stream
//! into PDUs (TPKT / fast-path before and outside TLS, TLS records on the wire after the upgrade,
//! TSRequests then TPKT in the inner stream), assigns every PDU to a stage and finds the event that
//! ended the connection.
//!
//! INVARIANT: the result depends only on the Trace's bytes and connection events (plus the observer's
//! own TlsSession / Timeout / StoppedAfter records), never on who produced the Trace.

use serde_json::json;

use super::credssp::{self, NtlmMessageType};
use super::pdu::{
    pdu_entry, DomainKind, HandshakeMsg, NegoToken, NtlmKind, PduKind, ShareKind, TsRequestParts,
};
use super::{mcs, tls, x224, Decoded};
use crate::evidence::Provenance;
use crate::report::{ConnectionReport, Facts, StageReport};
use crate::stage::{AuthFailure, FailureKind, NegFailure, Side, Stage, TlsAlert, Verdict};
use crate::trace::{ConnectFailure, Dir, EventKind, Layer, Trace};
use ironrdp_pdu::nego::SecurityProtocol;

/// Bytes buffered per direction while waiting for a complete PDU before we call the stream malformed.
const MAX_PENDING: usize = 1024 * 1024;

/// A client FIN this long after its own unanswered PDU means it waited for the server and gave up;
/// sooner, the client simply closed (it was not waiting), in microseconds.
const CLIENT_WAIT_MIN_US: u64 = 500_000;

/// Server application data (no secrets) beyond which an encrypted session is taken as established,
/// in bytes: CredSSP and the connection sequence stay well below it, a desktop session does not.
const ENCRYPTED_SESSION_BYTES: u64 = 32 * 1024;
/// Encrypted records each way after an inferred Early User Authorization Result from which the
/// session came up (MCS Connect, Erect Domain, Attach User, channel joins, licensing, capabilities
/// and finalization are more than this each way).
const EUAR_SESSION_RECORDS: u32 = 8;

/// Bytes a record of `cleartext` bytes takes on the wire.
fn len_with_header(cleartext: usize) -> usize {
    cleartext + tls::RECORD_HEADER_LEN
}

/// The fixed per-record overhead of an AEAD cipher suite: TLS 1.2 GCM / CCM carry an 8-byte explicit
/// nonce and a 16-byte tag, ChaCha20-Poly1305 only the tag, TLS 1.3 the tag and the inner content
/// type. `None` for CBC suites (padding hides the size) and unknown ones.
fn aead_overhead(tls13: bool, suite: &str) -> Option<usize> {
    if tls13 {
        Some(17)
    } else if suite.contains("CHACHA20") {
        Some(16)
    } else if suite.contains("_GCM_") || suite.ends_with("_GCM") || suite.ends_with("_CCM") {
        Some(24)
    } else {
        None
    }
}

/// PDUs listed per stage in the `pdus` fact; later ones are counted in `pdus_more`.
const MAX_PDUS_LISTED: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// TPKT / fast-path PDUs.
    Rdp,
    /// TLS records (wire, after the X.224 exchange selected an enhanced protocol).
    Tls,
    /// TSRequests (inner, HYBRID / HYBRID_EX) until the first TPKT.
    Credssp,
    /// Stream is unusable from here (malformed or gap): ignore further bytes.
    Dead,
}

struct StreamParser {
    mode: Mode,
    buf: Vec<u8>,
    /// Stream offset of buf[0].
    base: u64,
    /// Trace event index and time of the event that delivered the newest bytes.
    ccs_seen: bool,
    /// The first byte of buf arrived in this event (for labels).
    first_event: usize,
    /// Joins handshake messages that span TLS records.
    handshake: tls::HandshakeReassembler,
    /// While `buf` holds only the header of an incomplete TLS application-data record (see
    /// [`skippable_record`]): how many of its body bytes arrived, counted, not copied.
    skip: Option<usize>,
}

impl StreamParser {
    fn new(mode: Mode) -> Self {
        StreamParser {
            mode,
            buf: Vec::new(),
            base: 0,
            ccs_seen: false,
            first_event: 0,
            handshake: tls::HandshakeReassembler::new(),
            skip: None,
        }
    }

    /// Drops what is buffered (stored and counted).
    fn clear(&mut self) {
        self.buf.clear();
        self.skip = None;
    }

    /// Bytes of an incomplete PDU held: stored plus counted.
    fn pending_len(&self) -> usize {
        self.buf.len() + self.skip.unwrap_or(0)
    }
}

/// The total length of the TLS application-data record whose valid header starts `buf`. The
/// decoder reads only the type and length of such a record (never its body: ciphertext), so
/// while one is incomplete only its header is buffered and the rest is counted — the body of a
/// record that spans segments is not copied.
fn skippable_record(buf: &[u8]) -> Option<usize> {
    tls::RecordHeader::parse(buf, 0)
        .ok()
        .filter(|h| h.content_type == tls::CT_APPLICATION_DATA)
        .map(|h| h.total_len())
}

#[derive(Default)]
struct StageAcc {
    start_us: u64,
    end_us: u64,
    bytes_c2s: u64,
    bytes_s2c: u64,
    frames: Vec<u64>,
    facts: Facts,
    /// The PDUs listed in the `pdus` fact, by direction; named only when the report is made.
    pdus: Vec<(Dir, PduKind)>,
    /// PDUs seen beyond `MAX_PDUS_LISTED`.
    pdus_more: u64,
}

struct Failure {
    stage: Stage,
    kind: FailureKind,
    by: Side,
}

struct Machine<'a> {
    trace: &'a Trace,
    /// Whether to build per-event labels (for capture comments); analyze does not need them.
    want_labels: bool,
    labels: Vec<Vec<String>>,
    stages: Vec<(Stage, StageAcc)>,
    failure: Option<Failure>,
    stopped: Option<Stage>,
    ended_by: Option<Side>,
    notes: Vec<String>,
    wire: [StreamParser; 2],
    inner: [StreamParser; 2],
    has_inner: bool,
    requested: Option<u32>,
    selected: Option<u32>,
    pending_mismatch: Option<(SecurityProtocol, SecurityProtocol)>,
    /// Time and direction of the last PDU seen (for "who was waiting").
    last_pdu: Option<(Dir, u64)>,
    /// The client sent an NTLM AUTHENTICATE that the server has not answered.
    authenticate_pending: bool,
    close_notify_from_server: bool,
    tls_done: bool,
    app_data_seen: bool,
    connected: bool,
    now: u64,
    event_idx: usize,
    frame: Option<u64>,
    certificate_seen: bool,
    tls13: bool,
    client_finished: bool,
    /// A server FIN whose meaning depends on cleartext that may be recorded after it.
    server_fin: bool,
    server_fin_at: u64,
    /// Encrypted (standard RDP security) PDUs after licensing: (client, server).
    enc_after_licensing: (u32, u32),
    /// The client's last PDU was a TLS alert (e.g. its close_notify).
    client_alert_last: bool,
    /// Encrypted server application data seen without secrets, in bytes.
    enc_server_bytes: u64,
    /// Bytes an AEAD record adds to its cleartext (explicit nonce and tag; TLS 1.3 also the inner
    /// content type), when the cipher suite has a fixed overhead: record sizes then give cleartext sizes.
    aead_overhead: Option<usize>,
    /// Encrypted CredSSP-stage records without secrets: (client, server).
    enc_credssp_records: [u32; 2],
    /// Encrypted records after HYBRID_EX's Early User Authorization Result, inferred from its size:
    /// `None` before it.
    after_euar: Option<[u32; 2]>,
}

fn di(dir: Dir) -> usize {
    match dir {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

/// How many events ahead of the one decoded the data is prefetched.
const PREFETCH_EVENTS: usize = 3;

pub(super) fn run(trace: &Trace, want_labels: bool) -> Decoded {
    let mut m = Machine::new(trace, want_labels);
    let events = &trace.events;
    for (i, ev) in events.iter().enumerate() {
        // A conversation's bytes lie scattered over the capture they were read from (conversations
        // interleave, and segments are not copied together): ask for the next ones ahead.
        if let Some(EventKind::Data { bytes, .. }) =
            events.get(i + PREFETCH_EVENTS).map(|e| &e.kind)
        {
            crate::cpu::prefetch_bytes(bytes);
        }
        m.step(i, ev);
    }
    m.finish()
}

impl<'a> Machine<'a> {
    fn new(trace: &'a Trace, want_labels: bool) -> Self {
        Machine {
            trace,
            want_labels,
            labels: if want_labels {
                vec![Vec::new(); trace.events.len()]
            } else {
                Vec::new()
            },
            stages: Vec::new(),
            failure: None,
            stopped: None,
            ended_by: None,
            notes: Vec::new(),
            wire: [StreamParser::new(Mode::Rdp), StreamParser::new(Mode::Rdp)],
            inner: [StreamParser::new(Mode::Rdp), StreamParser::new(Mode::Rdp)],
            has_inner: trace.has_inner(),
            requested: None,
            selected: None,
            pending_mismatch: None,
            last_pdu: None,
            authenticate_pending: false,
            close_notify_from_server: false,
            tls_done: false,
            app_data_seen: false,
            connected: false,
            now: trace.start_us(),
            event_idx: 0,
            frame: None,
            certificate_seen: false,
            tls13: false,
            client_finished: false,
            server_fin: false,
            server_fin_at: 0,
            enc_after_licensing: (0, 0),
            client_alert_last: false,
            enc_server_bytes: 0,
            aead_overhead: None,
            enc_credssp_records: [0, 0],
            after_euar: None,
        }
    }

    /// Handles event `i` of the trace.
    fn step(&mut self, i: usize, ev: &crate::trace::Event) {
        self.event_idx = i;
        self.now = ev.t_us;
        self.frame = ev.frame;
        self.event(&ev.kind);
    }
}

impl Machine<'_> {
    fn cur(&self) -> Stage {
        self.stages.last().map(|s| s.0).unwrap_or(Stage::Tcp)
    }

    fn acc(&mut self) -> &mut StageAcc {
        if self.stages.is_empty() {
            self.enter(Stage::Tcp);
        }
        &mut self.stages.last_mut().expect("non-empty").1
    }

    /// Moves to `stage` if it is later than the current one.
    fn enter(&mut self, stage: Stage) {
        if self.stages.last().is_some_and(|s| s.0 >= stage) {
            return;
        }
        if self.stages.is_empty() && stage != Stage::Tcp {
            // A capture that starts mid-connection: no tcp row.
            self.notes
                .push("capture starts after the TCP handshake".into());
        }
        self.pending_mismatch = None;
        let acc = StageAcc {
            start_us: self.now,
            end_us: self.now,
            ..Default::default()
        };
        self.stages.push((stage, acc));
    }

    fn fail(&mut self, kind: FailureKind, by: Side) {
        self.fail_at(kind, by, self.now);
    }

    /// Records the failure; `at` is when the ending event happened (for `ended_after_ms`).
    fn fail_at(&mut self, kind: FailureKind, by: Side, at: u64) {
        if self.failure.is_none() && self.stopped.is_none() && !self.connected {
            if let Some((dir, t)) = self.last_pdu {
                let ms = at.saturating_sub(t) as f64 / 1000.0;
                self.fact("ended_after_ms", json!(ms));
                self.fact("ended_after", json!(format!("{}'s last PDU", dir.sender())));
            }
            let stage = self.cur();
            // The failing stage lasts until the event that ended it (a timeout, a reset), not
            // only until its last PDU.
            let acc = self.acc();
            acc.end_us = acc.end_us.max(at);
            self.failure = Some(Failure { stage, kind, by });
            if self.ended_by.is_none() {
                self.ended_by = Some(by);
            }
        }
    }

    /// The tcp stage starts when the first SYN left (when the observer knows), so its duration is
    /// the real connect, SYN retries included.
    fn connect_started(&mut self) {
        if let Some(s) = self.trace.connect_start_us {
            let now = self.now;
            let acc = self.acc();
            if s < acc.start_us {
                acc.start_us = s;
            }
            let ms = now.saturating_sub(acc.start_us) as f64 / 1000.0;
            self.fact("connect_ms", json!(ms));
        }
    }

    fn fact(&mut self, key: &str, v: serde_json::Value) {
        self.acc().facts.insert(key.to_owned(), v);
    }

    fn label(&mut self, idx: usize, text: String) {
        if let Some(l) = self.labels.get_mut(idx) {
            if !l.contains(&text) {
                l.push(text);
            }
        }
    }

    /// Label for a PDU found in the inner stream: goes on the wire event that carried it.
    fn inner_label(&mut self, dir: Dir, idx: usize, text: String) {
        let evs = &self.trace.events;
        let is_wire = |k: &EventKind| matches!(k, EventKind::Data { dir: d, layer: Layer::Wire, .. } if *d == dir);
        // Both the probe's taps and the capture reader record the ciphertext before the cleartext
        // it carried: the carrier is the latest wire segment of that direction before `idx`.
        let last = idx.min(evs.len().saturating_sub(1));
        let target = (0..=last)
            .rev()
            .find(|&j| is_wire(&evs[j].kind))
            .or_else(|| (idx..evs.len()).find(|&j| is_wire(&evs[j].kind)));
        if let Some(t) = target {
            self.label(t, text);
        }
    }

    /// Accounts a PDU to a stage (entering it) and records its name.
    fn pdu(
        &mut self,
        stage: Stage,
        dir: Dir,
        len: usize,
        kind: PduKind,
        label_idx: usize,
        inner: bool,
    ) {
        self.enter(stage);
        let now = self.now;
        let frame = self.frame;
        let acc = self.acc();
        acc.end_us = now;
        match dir {
            Dir::C2S => acc.bytes_c2s += len as u64,
            Dir::S2C => acc.bytes_s2c += len as u64,
        }
        if let Some(f) = frame {
            if acc.frames.last() != Some(&f) {
                acc.frames.push(f);
            }
        }
        // Bounded: a long session lists its first PDUs and counts the rest.
        let label = self.want_labels.then(|| format!("{}: {kind}", self.cur()));
        let acc = self.acc();
        if acc.pdus.len() < MAX_PDUS_LISTED {
            acc.pdus.push((dir, kind));
        } else {
            acc.pdus_more += 1;
        }
        if let Some(text) = label {
            if inner {
                self.inner_label(dir, label_idx, text);
            } else {
                self.label(label_idx, text);
            }
        }
        self.last_pdu = Some((dir, now));
        self.client_alert_last = false;
    }

    fn event(&mut self, kind: &EventKind) {
        let inner_data = matches!(
            kind,
            EventKind::Data {
                layer: Layer::Inner,
                ..
            } | EventKind::Note(_)
                | EventKind::TlsError { .. }
                | EventKind::ClientRejected { .. }
        );
        if !inner_data {
            self.resolve_server_fin();
        }
        match kind {
            EventKind::Connected => {
                self.enter(Stage::Tcp);
                self.acc().end_us = self.now;
                self.connect_started();
                let (c, s) = (self.trace.client.to_string(), self.trace.server.to_string());
                self.fact("client", json!(c));
                self.fact("server", json!(s));
                self.label(self.event_idx, "tcp: connected".into());
            }
            EventKind::ConnectFailed(f) => {
                self.enter(Stage::Tcp);
                self.connect_started();
                self.fact("server", json!(self.trace.server.to_string()));
                // An ICMP error about the SYN says why it got no answer.
                let icmp = self.trace.tcp.as_deref().and_then(|e| {
                    e.icmp
                        .iter()
                        .find(|i| i.about == Dir::C2S)
                        .map(|i| format!("ICMP from {}: {}", i.from, i.what))
                });
                let kind = match f {
                    ConnectFailure::Refused => FailureKind::Refused,
                    ConnectFailure::TimedOut { .. } if icmp.is_some() => FailureKind::Unreachable {
                        detail: icmp.unwrap_or_default(),
                    },
                    ConnectFailure::TimedOut { after_ms } => FailureKind::TimedOut {
                        waiting_for: Side::Server,
                        after_ms: *after_ms,
                    },
                    ConnectFailure::Unreachable { detail } => FailureKind::Unreachable {
                        detail: detail.clone(),
                    },
                };
                let by = match f {
                    ConnectFailure::Refused => Side::Server,
                    _ => Side::Network,
                };
                self.fail(kind, by);
                self.label(self.event_idx, "tcp: connect failed".into());
            }
            EventKind::Data { dir, layer, bytes } => self.data(*dir, *layer, bytes),
            EventKind::Elided { dir, layer, len } => {
                if *layer == Layer::Wire || !self.has_inner {
                    let acc = self.acc();
                    match dir {
                        Dir::C2S => acc.bytes_c2s += len,
                        Dir::S2C => acc.bytes_s2c += len,
                    }
                }
                // Parsing cannot continue across bytes we did not keep.
                let p = match layer {
                    Layer::Wire => &mut self.wire[di(*dir)],
                    Layer::Inner => &mut self.inner[di(*dir)],
                };
                p.mode = Mode::Dead;
                p.clear();
            }
            EventKind::Gap { dir, len } => {
                // The receiver never acknowledging the bytes says the path lost them; otherwise
                // only the capture did.
                let lost = self
                    .trace
                    .tcp
                    .as_deref()
                    .is_some_and(|e| e.dir(*dir).missing_bytes > 0);
                self.notes.push(format!(
                    "{} bytes missing from the {}'s stream ({})",
                    len,
                    dir.sender(),
                    if lost {
                        format!(
                            "never acknowledged by the {}: lost on the path",
                            dir.reverse().sender()
                        )
                    } else {
                        "capture loss".to_owned()
                    }
                ));
                let p = &mut self.wire[di(*dir)];
                p.mode = Mode::Dead;
                p.clear();
            }
            EventKind::Fin { dir } => self.fin(*dir),
            EventKind::Rst { dir } => {
                if self.dropped_before_end(*dir) {
                    return;
                }
                let by = self.rst_sender(*dir);
                self.label(self.event_idx, format!("{}: reset by {by}", self.cur()));
                if self.connected {
                    self.notes.push(format!(
                        "{by} reset the connection after it was established"
                    ));
                }
                if self.pending_mismatch.is_some() && by == Side::Client {
                    self.fail_mismatch();
                }
                self.fail(FailureKind::Reset, by);
                self.ended_by.get_or_insert(by);
            }
            EventKind::Timeout {
                waiting_for,
                after_ms,
            } => {
                self.fail(
                    FailureKind::TimedOut {
                        waiting_for: waiting_for.sender(),
                        after_ms: *after_ms,
                    },
                    waiting_for.sender(),
                );
            }
            EventKind::TlsSession(info) => {
                self.enter(Stage::Tls);
                self.tls_done = true;
                if info.version == "TLSv1.3" {
                    self.tls13 = true;
                }
                self.fact("version", json!(info.version));
                self.fact("cipher_suite", json!(info.cipher_suite));
                if !info.engine.is_empty() {
                    self.fact("engine", json!(info.engine));
                }
                if matches!(info.version.as_str(), "TLSv1.0" | "TLSv1.1" | "SSLv3") {
                    self.fact("legacy_only", json!(true));
                    self.notes.push(format!(
                        "server speaks only {} (legacy TLS): modern clients with TLS 1.0/1.1 disabled cannot connect",
                        info.version
                    ));
                }
                if let Some(leaf) = info.certificates.first() {
                    if !self.certificate_seen {
                        self.cert_facts(leaf, info.certificates.len());
                    }
                }
            }
            EventKind::TlsError { message } => {
                if self.cur() >= Stage::Tls || self.selected.is_some() {
                    self.enter(Stage::Tls);
                }
                self.fact("client_tls_error", json!(message));
            }
            EventKind::StoppedAfter(stage) => {
                if self.failure.is_none() && !self.connected {
                    if *stage == Stage::Connected {
                        // The observer's connector reached the connected state (normally the server's
                        // Font Map already told us); it then closes: not a stop.
                        if !self.connected {
                            self.enter(Stage::Connected);
                            self.connected = true;
                        }
                    } else {
                        self.stopped = Some(*stage);
                        self.ended_by.get_or_insert(Side::Client);
                    }
                }
            }
            EventKind::ClientRejected { what } => {
                // The client's stack could not use the server's last PDU: the server's protocol
                // error, unless the bytes already told why the connection ends.
                if self.pending_mismatch.is_some() {
                    // The server selected a protocol the client cannot use: that is the reason.
                    self.fail_mismatch();
                } else if self.failure.is_none() && self.stopped.is_none() && !self.connected {
                    self.fail(
                        FailureKind::ProtocolError {
                            what: format!("the client rejected the server's data: {what}"),
                            offset: None,
                        },
                        Side::Server,
                    );
                }
            }
            EventKind::Note(n) => {
                if crate::trace::is_server_close_notify_note(n) {
                    self.close_notify_from_server = true;
                } else if !self.notes.contains(n) {
                    self.notes.push(n.clone());
                }
            }
            EventKind::CaptureEnd => {
                if self.dropped_before_end(Dir::C2S) {
                    return;
                }
                if self.failure.is_none() && self.stopped.is_none() && !self.connected {
                    self.fail(FailureKind::CaptureEnded, Side::Network);
                    self.ended_by = None;
                }
            }
        }
    }

    fn fail_mismatch(&mut self) {
        if let Some((requested, selected)) = self.pending_mismatch.take() {
            // The server chose; the client (which cannot use the choice) closes.
            self.ended_by = Some(Side::Client);
            self.fail(
                FailureKind::ProtocolMismatch {
                    requested,
                    selected,
                },
                Side::Server,
            );
        }
    }

    /// Whether TCP evidence shows data the path dropped before an event that would otherwise end
    /// the connection in `dir`'s sender's name (a client giving up with a RST, the capture ending):
    /// then the verdict is `Dropped`, by the network.
    fn dropped_before_end(&mut self, dir: Dir) -> bool {
        if self.failure.is_some() || self.stopped.is_some() || self.connected {
            return false;
        }
        let Some(ev) = self.trace.tcp.as_deref() else {
            return false;
        };
        // The client's own reset after its data went unacknowledged, or the capture ending; a RST
        // from the server answers something and is judged by its provenance instead.
        let candidates: &[Dir] = match dir {
            Dir::C2S => &[Dir::C2S, Dir::S2C],
            Dir::S2C => return false,
        };
        for &d in candidates {
            let e = ev.dir(d);
            let who = d.sender();
            let kind = if e.dropped() {
                let what = self
                    .last_pdu_of(who)
                    .map(|p| format!("the {who}'s {p}"))
                    .unwrap_or_else(|| format!("{} bytes from the {who}", e.unacked_bytes));
                self.fact("unacked_bytes", json!(e.unacked_bytes));
                FailureKind::Dropped {
                    what,
                    retransmissions: e.unacked_retransmissions,
                    over_ms: e.unacked_span_ms(),
                    mtu_black_hole: e.mtu_black_hole(),
                    never_arrived: false,
                }
            } else if e.missing() {
                // The receiving end's view: the sender's retransmissions are not in the capture,
                // the hole in its sequence space that the receiver never acknowledged is.
                self.fact("missing_bytes", json!(e.missing_bytes));
                self.fact("missing_largest", json!(e.missing_largest));
                self.fact("largest_segment_arrived", json!(e.max_segment));
                FailureKind::Dropped {
                    what: format!("{} bytes from the {who}", e.missing_bytes),
                    retransmissions: 0,
                    over_ms: e.missing_span_ms(),
                    mtu_black_hole: e.missing_looks_like_mtu(),
                    never_arrived: true,
                }
            } else {
                continue;
            };
            self.fact(
                "dropped_between",
                json!(format!("{who} and {}", who.peer_name())),
            );
            self.fail(kind, Side::Network);
            self.ended_by = Some(Side::Network);
            return true;
        }
        false
    }

    /// The last PDU `side` sent in the current stage (or the one before), pretty.
    fn last_pdu_of(&self, side: Side) -> Option<String> {
        for (_, acc) in self.stages.iter().rev().take(2) {
            if let Some((_, k)) = acc.pdus.iter().rev().find(|(d, _)| d.sender() == side) {
                return Some(k.pretty());
            }
        }
        None
    }

    /// Who sent the RST that travelled in `dir`: its apparent sender, or the network when its
    /// headers do not fit the sender's own packets (facts and a note say why).
    fn rst_sender(&mut self, dir: Dir) -> Side {
        let Some(r) = self
            .trace
            .tcp
            .as_deref()
            .and_then(|e| e.first_rst(dir))
            .cloned()
        else {
            return dir.sender();
        };
        let prov = match r.provenance {
            Provenance::Host => "host",
            Provenance::Injected => "injected",
            Provenance::Unknown => "unknown",
        };
        self.fact("reset_provenance", json!(prov));
        self.fact("reset_ttl", json!(r.ttl));
        self.fact("reset_evidence", json!(r.evidence));
        if r.provenance == Provenance::Injected {
            self.fact("reset_hops", json!(r.hops));
            self.notes.push(format!(
                "the reset in the {}'s name was not sent by the {}: {}",
                dir.sender(),
                dir.sender(),
                r.evidence
            ));
            Side::Network
        } else {
            dir.sender()
        }
    }

    fn fin(&mut self, dir: Dir) {
        let by = dir.sender();
        self.label(self.event_idx, format!("{}: fin from {by}", self.cur()));
        if self.connected || self.failure.is_some() || self.stopped.is_some() {
            self.ended_by.get_or_insert(by);
            return;
        }
        match by {
            Side::Server => {
                // A TLS stack reads to EOF before handing over the last records' cleartext, so the
                // wire FIN can precede the inner data it ends (e.g. a TSRequest errorCode): decide
                // when the next non-inner event arrives, or at the end.
                self.server_fin = true;
                self.server_fin_at = self.now;
                self.ended_by.get_or_insert(Side::Server);
            }
            _ => {
                if self.pending_mismatch.is_some() {
                    self.fail_mismatch();
                    return;
                }
                if self.close_notify_from_server {
                    // The server ended the TLS session (close_notify) and left TCP open; the client
                    // closing TCP afterwards is a consequence, not the cause.
                    self.server_fin = true;
                    self.server_fin_at = self.now;
                    self.resolve_server_fin();
                    self.ended_by = Some(Side::Server);
                    return;
                }
                // The client gave up after the path dropped data (the server's flight retransmitted
                // and never acknowledged, as the server's own capture shows it): the network.
                if self.dropped_before_end(Dir::C2S) {
                    return;
                }
                match self.last_pdu {
                    // The client was waiting for an answer (its last PDU was a request, not its own
                    // TLS alert) and gave up after a noticeable wait: the server went silent.
                    Some((Dir::C2S, t))
                        if !self.client_alert_last
                            && self.now.saturating_sub(t) >= CLIENT_WAIT_MIN_US =>
                    {
                        let after_ms = self.now.saturating_sub(t) / 1000;
                        self.fail(
                            FailureKind::TimedOut {
                                waiting_for: Side::Server,
                                after_ms,
                            },
                            Side::Server,
                        );
                        self.ended_by = Some(Side::Client);
                    }
                    _ => {
                        self.stopped = Some(self.cur());
                        self.ended_by = Some(Side::Client);
                    }
                }
            }
        }
    }

    /// Resolves a deferred server FIN into the verdict it implies.
    fn resolve_server_fin(&mut self) {
        if !std::mem::take(&mut self.server_fin) {
            return;
        }
        if self.connected || self.failure.is_some() || self.stopped.is_some() {
            return;
        }
        {
            {
                if self.cur() == Stage::Credssp && self.authenticate_pending {
                    self.fail_at(
                        FailureKind::AuthFailure(AuthFailure {
                            ntstatus: None,
                            detail: format!(
                                "server closed the connection{} right after the NTLM AUTHENTICATE without a \
                                 TSRequest errorCode: the credentials were most likely rejected (servers that send \
                                 no errorCode, e.g. FreeRDP 2 or Windows up to 2012, answer a wrong password this way)",
                                if self.close_notify_from_server {
                                    " (TLS close_notify)"
                                } else {
                                    ""
                                }
                            ),
                        }),
                        Side::Server,
                        self.server_fin_at,
                    );
                } else {
                    self.fail_at(
                        FailureKind::Closed {
                            tls_close_notify: self.close_notify_from_server,
                        },
                        Side::Server,
                        self.server_fin_at,
                    );
                }
            }
        }
    }

    fn data(&mut self, dir: Dir, layer: Layer, bytes: &[u8]) {
        let idx = self.event_idx;
        let p = match layer {
            Layer::Wire => &mut self.wire[di(dir)],
            Layer::Inner => &mut self.inner[di(dir)],
        };
        if p.mode == Mode::Dead {
            return;
        }
        let mut bytes = bytes;
        if let Some(have) = p.skip {
            // The body of an application-data record: count it; handle the record when complete.
            let total = skippable_record(&p.buf).unwrap_or(tls::RECORD_HEADER_LEN);
            let need = total.saturating_sub(tls::RECORD_HEADER_LEN + have);
            if bytes.len() < need {
                p.skip = Some(have + bytes.len());
                return;
            }
            let first_event = p.first_event;
            p.clear();
            self.tls_record_body(dir, first_event, tls::CT_APPLICATION_DATA, total, &[]);
            let p = self.parser(dir, layer);
            p.base += total as u64;
            p.first_event = idx;
            if p.mode == Mode::Dead {
                return;
            }
            bytes = &bytes[need..];
        }
        let p = self.parser(dir, layer);
        if p.buf.is_empty() {
            // Fast path: handle the complete PDUs straight from `bytes`; buffer only the tail.
            p.first_event = idx;
            let used = self.drain_slice(dir, layer, bytes);
            let p = self.parser(dir, layer);
            if p.mode != Mode::Dead {
                let tail = &bytes[used..];
                match skippable_record(tail) {
                    Some(total) if p.mode == Mode::Tls && tail.len() < total => {
                        p.buf.extend_from_slice(&tail[..tls::RECORD_HEADER_LEN]);
                        p.skip = Some(tail.len() - tls::RECORD_HEADER_LEN);
                    }
                    _ => p.buf.extend_from_slice(tail),
                }
            }
        } else {
            p.buf.extend_from_slice(bytes);
            self.drain(dir, layer);
        }
        let p = match layer {
            Layer::Wire => &mut self.wire[di(dir)],
            Layer::Inner => &mut self.inner[di(dir)],
        };
        if p.mode == Mode::Tls && p.skip.is_none() {
            // A buffered application-data record header (split across segments): count the rest.
            if let Some(total) = skippable_record(&p.buf) {
                if p.buf.len() < total {
                    p.skip = Some(p.buf.len() - tls::RECORD_HEADER_LEN);
                    p.buf.truncate(tls::RECORD_HEADER_LEN);
                }
            }
        }
        if p.buf.len() > MAX_PENDING {
            let base = p.base;
            p.mode = Mode::Dead;
            p.clear();
            self.malformed(dir, "more than 1 MiB without a complete PDU".into(), base);
        }
    }

    fn malformed(&mut self, dir: Dir, what: String, offset: u64) {
        let who = dir.sender();
        self.notes.push(format!(
            "malformed data from the {who} at byte {offset} of its stream: {what}"
        ));
        self.fail(
            FailureKind::ProtocolError {
                what,
                offset: Some(offset),
            },
            who,
        );
    }

    /// Frames and handles every complete PDU buffered for this direction and layer.
    fn drain(&mut self, dir: Dir, layer: Layer) {
        // The buffer is taken out while its PDUs are handled (no copy); handlers never append to
        // it, and one that kills the stream leaves the mode Dead so it is not put back.
        let mut buf = std::mem::take(&mut self.parser(dir, layer).buf);
        let used = self.drain_slice(dir, layer, &buf);
        let p = self.parser(dir, layer);
        if p.mode != Mode::Dead {
            buf.drain(..used);
            p.buf = buf;
        }
    }

    /// Handles every complete PDU at the start of `bytes` (the direction's stream from `base` on,
    /// with nothing buffered before it) and returns how many bytes they used.
    fn drain_slice(&mut self, dir: Dir, layer: Layer, bytes: &[u8]) -> usize {
        let mut used = 0usize;
        // A handler may switch the mode without consuming (CredSSP over, a TPKT follows): the
        // bytes are handled in the new mode at once, not when the next segment arrives (which
        // would put the PDU at that segment's time and frame). Bounded: at most a few switches.
        let mut switches = 0u8;
        while used < bytes.len() {
            let p = self.parser(dir, layer);
            if p.mode == Mode::Dead {
                break;
            }
            let (mode, first_event) = (p.mode, p.first_event);
            let Some(n) = self.pdu_in(mode, dir, layer, first_event, &bytes[used..]) else {
                break;
            };
            if n == 0 {
                let now = self.parser(dir, layer).mode;
                if now != mode && now != Mode::Dead && switches < 4 {
                    switches += 1;
                    continue;
                }
                break;
            }
            let n = n.min(bytes.len() - used);
            used += n;
            let idx = self.event_idx;
            let p = self.parser(dir, layer);
            p.base += n as u64;
            p.first_event = idx;
        }
        used
    }

    /// Handles the PDU at the start of `buf` in `mode`; its length when complete and consumed.
    fn pdu_in(
        &mut self,
        mode: Mode,
        dir: Dir,
        layer: Layer,
        first_event: usize,
        buf: &[u8],
    ) -> Option<usize> {
        match mode {
            Mode::Rdp => self.rdp_pdu(dir, layer, first_event, buf),
            Mode::Tls => self.tls_record(dir, first_event, buf),
            Mode::Credssp => self.credssp_pdu(dir, first_event, buf),
            Mode::Dead => None,
        }
    }

    fn parser(&mut self, dir: Dir, layer: Layer) -> &mut StreamParser {
        match layer {
            Layer::Wire => &mut self.wire[di(dir)],
            Layer::Inner => &mut self.inner[di(dir)],
        }
    }

    fn kill(&mut self, dir: Dir, layer: Layer) {
        let p = self.parser(dir, layer);
        p.mode = Mode::Dead;
        p.clear();
    }

    /// One TPKT / fast-path PDU; returns its length when consumed.
    fn rdp_pdu(&mut self, dir: Dir, layer: Layer, first_event: usize, buf: &[u8]) -> Option<usize> {
        let inner = layer == Layer::Inner;
        let base = self.parser(dir, layer).base;
        // A TLS record where RDP was expected (e.g. a capture missing the X.224 exchange).
        if !inner
            && buf.first() == Some(&0x16)
            && buf.get(1) == Some(&0x03)
            && self.selected.is_none()
        {
            self.parser(dir, layer).mode = Mode::Tls;
            return Some(0);
        }
        // The server's first bytes are not TPKT: whatever answers is not an RDP service.
        if dir == Dir::S2C
            && !inner
            && base == 0
            && self.selected.is_none()
            && buf.first().is_some_and(|&b| b != 0x03)
        {
            self.kill(dir, layer);
            self.malformed(dir, not_rdp_what(buf), 0);
            return None;
        }
        let len = match x224::frame(buf) {
            x224::Frame::Incomplete => return None,
            x224::Frame::Invalid(what) => {
                self.kill(dir, layer);
                self.malformed(dir, what, base);
                return None;
            }
            x224::Frame::FastPath(len) => {
                let stage = if self.connected {
                    Stage::Connected
                } else {
                    self.cur().max(Stage::Capabilities)
                };
                self.pdu(stage, dir, len, PduKind::FastPath, first_event, inner);
                return Some(len);
            }
            x224::Frame::Tpkt(len) => len,
        };
        let pdu = &buf[..len];
        match x224::decode_tpkt(pdu) {
            x224::X224::ConnectionRequest(facts) => {
                self.requested = facts
                    .get("requested_protocols_value")
                    .and_then(|v| v.as_u64())
                    .map(|v| v as u32);
                self.pdu(
                    Stage::X224,
                    dir,
                    len,
                    PduKind::ConnectionRequest,
                    first_event,
                    inner,
                );
                for (k, v) in facts {
                    self.fact(&k, v);
                }
            }
            x224::X224::ConnectionConfirm {
                selected, facts, ..
            } => {
                self.pdu(
                    Stage::X224,
                    dir,
                    len,
                    PduKind::ConnectionConfirm,
                    first_event,
                    inner,
                );
                for (k, v) in facts {
                    self.fact(&k, v);
                }
                self.selected = Some(selected);
                let requested = self.requested.unwrap_or(selected);
                let ok = if selected == 0 {
                    requested == 0
                } else {
                    selected & requested != 0
                };
                if !ok {
                    self.fact("mismatch", json!(true));
                    self.pending_mismatch = Some((
                        SecurityProtocol::from_bits_retain(requested),
                        SecurityProtocol::from_bits_retain(selected),
                    ));
                }
                if selected != 0 && !inner {
                    // Everything after the confirm is TLS on the wire, both ways.
                    self.wire[0].mode = Mode::Tls;
                    self.wire[1].mode = Mode::Tls;
                    let m = if selected & (x224::PROTOCOL_HYBRID | x224::PROTOCOL_HYBRID_EX) != 0 {
                        Mode::Credssp
                    } else {
                        Mode::Rdp
                    };
                    self.inner[0].mode = m;
                    self.inner[1].mode = m;
                }
            }
            x224::X224::NegotiationFailure { code } => {
                self.pdu(
                    Stage::X224,
                    dir,
                    len,
                    PduKind::NegotiationFailure,
                    first_event,
                    inner,
                );
                let name = x224::failure_code_name(code);
                self.fact("failure_code", json!(code));
                self.fact("failure_name", json!(name));
                self.fail(
                    FailureKind::NegotiationFailure(NegFailure { code }),
                    Side::Server,
                );
            }
            x224::X224::DisconnectRequest => {
                let stage = self.cur();
                self.pdu(stage, dir, len, PduKind::X224Disconnect, first_event, inner);
                self.fail(
                    FailureKind::Denied {
                        detail: "X.224 disconnect request".into(),
                    },
                    dir.sender(),
                );
            }
            x224::X224::Data { user_data_offset } => {
                let ud = &pdu[user_data_offset.min(pdu.len())..];
                self.mcs_pdu(dir, len, ud, first_event, inner);
            }
            x224::X224::Malformed { what, offset } => {
                let stage = if self.cur() < Stage::X224 {
                    Stage::X224
                } else {
                    self.cur()
                };
                self.pdu(stage, dir, len, PduKind::MalformedX224, first_event, inner);
                self.kill(dir, if inner { Layer::Inner } else { Layer::Wire });
                self.malformed(dir, what, base + offset as u64);
                return None;
            }
        }
        Some(len)
    }

    /// An X.224 Data TPDU: MCS connect PDUs, domain PDUs and what they carry.
    fn mcs_pdu(&mut self, dir: Dir, len: usize, ud: &[u8], first_event: usize, inner: bool) {
        // BER application tags 101 (Connect-Initial) / 102 (Connect-Response): 0x7f 0x65 / 0x7f 0x66.
        if ud.starts_with(&[0x7f, 0x65]) {
            self.pdu(
                Stage::Mcs,
                dir,
                len,
                PduKind::McsConnectInitial,
                first_event,
                inner,
            );
            match mcs::connect_initial_facts(ud) {
                Ok(f) => {
                    for (k, v) in f {
                        self.fact(&k, v);
                    }
                }
                Err(e) => self.fact("connect_initial_error", json!(e)),
            }
            return;
        }
        if ud.starts_with(&[0x7f, 0x66]) {
            self.pdu(
                Stage::Mcs,
                dir,
                len,
                PduKind::McsConnectResponse,
                first_event,
                inner,
            );
            match mcs::connect_response_facts(ud) {
                Ok(f) => {
                    let result = f.get("result").and_then(|v| v.as_str()).map(str::to_owned);
                    // Standard RDP security with encryption needs the server's RSA key for the
                    // client random: a key no client can use ends the connection here.
                    let encrypts = f
                        .get("encryption_method")
                        .and_then(|v| v.as_str())
                        .is_some_and(|m| m != "none");
                    let key_error = f
                        .get("server_key_error")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                        .filter(|_| encrypts);
                    for (k, v) in f {
                        self.fact(&k, v);
                    }
                    if let Some(e) = key_error {
                        self.fail(
                            FailureKind::ProtocolError {
                                what: format!(
                                    "server certificate of the mcs connect response: {e}"
                                ),
                                offset: None,
                            },
                            Side::Server,
                        );
                    }
                    if let Some(r) = result {
                        if r != "rt-successful" && r != "rt_successful" && r != "0" {
                            self.fail(
                                FailureKind::Denied {
                                    detail: format!("MCS connect response result {r}"),
                                },
                                Side::Server,
                            );
                        }
                    }
                }
                Err(e) => {
                    self.fact("connect_response_error", json!(e.clone()));
                }
            }
            return;
        }
        // Standard RDP security puts a security header on every PDU only when it encrypts
        // (MS-RDPBCGR 2.2.8.1.1.2.1); at ENCRYPTION_METHOD_NONE only the exchange, info and
        // licensing PDUs carry one, which the classifier detects by their flags.
        let has_sec = self.selected == Some(0)
            && self
                .stages
                .iter()
                .find(|(s, _)| *s == Stage::Mcs)
                .and_then(|(_, a)| a.facts.get("encryption_method"))
                .and_then(|v| v.as_str())
                .is_some_and(|m| m != "none");
        match mcs::domain_pdu(ud) {
            Some((kind, facts)) => {
                let stage = match kind {
                    DomainKind::DisconnectProviderUltimatum => self.cur(),
                    _ => Stage::Channels,
                };
                if kind.is_send_data() {
                    let payload = facts
                        .get("payload_offset")
                        .and_then(|v| v.as_u64())
                        .map(|o| &ud[(o as usize).min(ud.len())..])
                        .unwrap_or(&[]);
                    self.share_pdu(dir, len, payload, has_sec, first_event, inner);
                    return;
                }
                self.pdu(stage, dir, len, PduKind::Domain(kind), first_event, inner);
                if kind == DomainKind::DisconnectProviderUltimatum {
                    let reason = facts
                        .get("reason")
                        .map(|v| v.to_string().trim_matches('"').to_owned())
                        .unwrap_or_default();
                    self.fail(
                        FailureKind::Denied {
                            detail: format!("MCS disconnect provider ultimatum {reason}")
                                .trim()
                                .to_owned(),
                        },
                        dir.sender(),
                    );
                }
                let key = match kind {
                    DomainKind::AttachUserConfirm => Some("attach_user"),
                    DomainKind::ChannelJoinConfirm => Some("channel_join"),
                    _ => None,
                };
                if let Some(key) = key {
                    let mut entries = self
                        .acc()
                        .facts
                        .get(key)
                        .and_then(|v| v.as_array().cloned())
                        .unwrap_or_default();
                    entries.push(serde_json::Value::Object(facts.into_iter().collect()));
                    self.fact(key, json!(entries));
                }
            }
            None => {
                let stage = self.cur().max(Stage::Mcs);
                self.pdu(
                    stage,
                    dir,
                    len,
                    PduKind::UnrecognizedMcs,
                    first_event,
                    inner,
                );
            }
        }
    }

    fn share_pdu(
        &mut self,
        dir: Dir,
        len: usize,
        payload: &[u8],
        has_sec: bool,
        first_event: usize,
        inner: bool,
    ) {
        match mcs::share_pdu(payload, has_sec) {
            Some((ShareKind::Encrypted, _))
                if !self.connected && self.cur() >= Stage::Licensing =>
            {
                // Standard RDP security encrypts the capability exchange and finalization; without
                // the session keys the stages are inferred from the PDU order: the client sends
                // confirm active, synchronize, 2 x control and font list (5), the server answers
                // synchronize, 2 x control and font map (4) after its demand active.
                match dir {
                    Dir::C2S => self.enc_after_licensing.0 += 1,
                    Dir::S2C => self.enc_after_licensing.1 += 1,
                }
                self.pdu(
                    Stage::Capabilities,
                    dir,
                    len,
                    PduKind::Share(ShareKind::Encrypted),
                    first_event,
                    inner,
                );
                let (c, sv) = self.enc_after_licensing;
                if c >= 5 && sv >= 5 && dir == Dir::S2C {
                    self.fact(
                        "inferred",
                        json!("encrypted: capabilities and finalization inferred from PDU order"),
                    );
                    self.enter(Stage::Connected);
                    self.connected = true;
                    self.ended_by = None;
                }
            }
            Some((kind, facts)) => {
                let stage = kind.stage(self.cur(), self.connected);
                self.pdu(stage, dir, len, PduKind::Share(kind), first_event, inner);
                if kind == ShareKind::SetErrorInfo {
                    if let Some(code) = facts.get("error_info") {
                        self.fact("set_error_info", code.clone());
                    }
                }
                if kind == ShareKind::LicenseErrorAlert {
                    for (k, v) in &facts {
                        self.fact(&format!("license_{k}"), v.clone());
                    }
                }
                if kind == ShareKind::FontMap && dir == Dir::S2C {
                    self.enter(Stage::Connected);
                    self.connected = true;
                    self.ended_by = None;
                }
            }
            None => {
                let stage = if self.connected {
                    Stage::Connected
                } else {
                    self.cur().max(Stage::Security)
                };
                self.pdu(
                    stage,
                    dir,
                    len,
                    PduKind::UnrecognizedData,
                    first_event,
                    inner,
                );
            }
        }
    }

    /// One TLS record on the wire.
    fn tls_record(&mut self, dir: Dir, first_event: usize, buf: &[u8]) -> Option<usize> {
        let base = self.wire[di(dir)].base;
        if buf.len() < tls::RECORD_HEADER_LEN {
            return None;
        }
        let Ok(h) = tls::RecordHeader::parse(buf, 0) else {
            let ct = buf[0];
            let ver = u16::from_be_bytes([buf[1], buf[2]]);
            let flen = u16::from_be_bytes([buf[3], buf[4]]);
            self.kill(dir, Layer::Wire);
            let what = if self.cur() <= Stage::X224 && dir == Dir::S2C {
                format!(
                    "expected a TLS record after the X.224 confirm, got bytes {:02x?}",
                    &buf[..5]
                )
            } else {
                format!("invalid TLS record header (type {ct}, version 0x{ver:04x}, length {flen})")
            };
            if self.cur() < Stage::Tls {
                self.enter(Stage::Tls);
            }
            self.malformed(dir, what, base);
            return None;
        };
        let total = h.total_len();
        let frag = buf.get(tls::RECORD_HEADER_LEN..total)?;
        self.tls_record_body(dir, first_event, h.content_type, total, frag)
    }

    /// A complete TLS record of type `ct` and `total` bytes with its header; `frag` is its body
    /// (empty for an application-data record: never read, see [`skippable_record`]).
    fn tls_record_body(
        &mut self,
        dir: Dir,
        first_event: usize,
        ct: u8,
        total: usize,
        frag: &[u8],
    ) -> Option<usize> {
        let (base, ccs) = {
            let p = &self.wire[di(dir)];
            (p.base, p.ccs_seen)
        };
        match ct {
            tls::CT_HANDSHAKE if !ccs => {
                let (msgs, err) = self.wire[di(dir)].handshake.push(frag);
                let kinds = msgs.iter().map(|m| self.handshake_fact(m)).collect();
                self.pdu(
                    Stage::Tls,
                    dir,
                    total,
                    PduKind::TlsHandshake(kinds),
                    first_event,
                    false,
                );
                if let Some(e) = err {
                    self.fact(
                        &format!(
                            "{}_handshake_error",
                            if dir == Dir::C2S { "client" } else { "server" }
                        ),
                        json!(format!("{} at byte {}", e.kind, base + 5 + e.at as u64)),
                    );
                }
            }
            tls::CT_HANDSHAKE => {
                self.pdu(
                    Stage::Tls,
                    dir,
                    total,
                    PduKind::EncryptedHandshake { finished: true },
                    first_event,
                    false,
                );
            }
            tls::CT_CHANGE_CIPHER_SPEC => {
                self.wire[di(dir)].ccs_seen = true;
                self.pdu(
                    Stage::Tls,
                    dir,
                    total,
                    PduKind::ChangeCipherSpec,
                    first_event,
                    false,
                );
            }
            tls::CT_ALERT => {
                let stage = self.cur().max(Stage::Tls);
                let plain = if ccs { None } else { tls::parse_alert(frag) };
                match plain {
                    Some((level, desc, code)) => {
                        self.pdu(
                            stage,
                            dir,
                            total,
                            PduKind::Alert {
                                level: frag[0],
                                description: code,
                            },
                            first_event,
                            false,
                        );
                        self.client_alert_last = dir == Dir::C2S;
                        self.fact(
                            "alert",
                            json!(format!("{level} {desc} ({code}) from {}", dir.sender())),
                        );
                        if desc == "close_notify" {
                            if dir == Dir::S2C {
                                self.close_notify_from_server = true;
                            }
                        } else if level == "fatal" || self.cur() == Stage::Tls {
                            self.fail(
                                FailureKind::TlsAlert(TlsAlert {
                                    level: frag[0],
                                    code,
                                }),
                                dir.sender(),
                            );
                        }
                    }
                    None => {
                        self.pdu(
                            stage,
                            dir,
                            total,
                            PduKind::EncryptedAlert,
                            first_event,
                            false,
                        );
                        self.client_alert_last = dir == Dir::C2S;
                        if dir == Dir::S2C {
                            // After the handshake an encrypted alert is almost always close_notify.
                            self.close_notify_from_server = true;
                        }
                    }
                }
            }
            tls::CT_APPLICATION_DATA
                if self.tls13 && !self.client_finished && self.cur() <= Stage::Tls =>
            {
                // TLS 1.3: the server's encrypted flight (EncryptedExtensions .. Finished) and the
                // client's Finished travel as application data records but belong to the handshake.
                if dir == Dir::C2S {
                    self.client_finished = true;
                    self.tls_done = true;
                }
                let kind = PduKind::EncryptedHandshake {
                    finished: dir == Dir::C2S,
                };
                self.pdu(Stage::Tls, dir, total, kind, first_event, false);
            }
            tls::CT_APPLICATION_DATA => {
                if !self.has_inner {
                    // No secrets: name the encrypted stage from the handshake structure.
                    let hybrid = self.selected.is_some_and(|s| {
                        s & (x224::PROTOCOL_HYBRID | x224::PROTOCOL_HYBRID_EX) != 0
                    });
                    let stage = if self.cur() <= Stage::Tls && self.tls_handshake_done(dir) {
                        if hybrid {
                            Stage::Credssp
                        } else {
                            Stage::Mcs
                        }
                    } else {
                        self.cur().max(Stage::Tls)
                    };
                    if stage > Stage::Tls && !self.app_data_seen {
                        self.app_data_seen = true;
                        self.enter(stage);
                        self.fact("encrypted", json!(true));
                    }
                    self.pdu(
                        stage,
                        dir,
                        total,
                        PduKind::ApplicationData,
                        first_event,
                        false,
                    );
                    // `encrypted_records` is filled in at the end (one count, not one insert per record).
                    if stage == Stage::Credssp && !self.connected {
                        self.infer_from_record_size(dir, total - tls::RECORD_HEADER_LEN);
                    }
                    if dir == Dir::S2C && !self.connected {
                        self.enc_server_bytes += total as u64;
                        if self.enc_server_bytes > ENCRYPTED_SESSION_BYTES {
                            // Without secrets: a server that sends this much has a session running.
                            let b = self.enc_server_bytes;
                            self.enter(Stage::Connected);
                            self.fact(
                                "inferred",
                                json!(format!(
                                    "encrypted session: connected inferred from {b} bytes of server data"
                                )),
                            );
                            self.connected = true;
                            self.ended_by = None;
                        }
                    }
                } else if self.cur() == Stage::Tls {
                    // The TLS 1.3 encrypted handshake flights and the first records: keep in tls until
                    // the inner stream shows the next stage.
                    let acc = self.acc();
                    match dir {
                        Dir::C2S => acc.bytes_c2s += total as u64,
                        Dir::S2C => acc.bytes_s2c += total as u64,
                    }
                    self.last_pdu = Some((dir, self.now));
                } else {
                    // Labelled by the cleartext PDUs it carries (inner stream).
                    self.last_pdu = Some((dir, self.now));
                }
            }
            _ => {
                self.pdu(
                    Stage::Tls,
                    dir,
                    total,
                    PduKind::TlsRecord(ct),
                    first_event,
                    false,
                );
            }
        }
        Some(total)
    }

    /// Whether the TLS handshake looks complete as seen so far (server CCS or app data both ways).
    fn tls_handshake_done(&self, _dir: Dir) -> bool {
        self.tls_done
            || self.wire[1].ccs_seen
            || self
                .stages
                .iter()
                .filter(|(s, _)| *s == Stage::Tls)
                .flat_map(|(_, a)| &a.pdus)
                .any(|(_, k)| {
                    k.has_handshake(HandshakeMsg::ServerHello)
                        || k.has_handshake(HandshakeMsg::ServerHelloDone)
                })
    }

    fn handshake_fact(&mut self, m: &tls::Handshake) -> HandshakeMsg {
        match m {
            tls::Handshake::ClientHello {
                version,
                supported_versions,
                cipher_suites,
                sni,
            } => {
                let mut offered: Vec<String> = supported_versions
                    .iter()
                    .map(|v| tls::version_name(*v))
                    .collect();
                if offered.is_empty() {
                    offered.push(tls::version_name(*version));
                }
                self.fact("client_versions", json!(offered));
                self.fact("client_cipher_suites", json!(cipher_suites.len()));
                if let Some(s) = sni {
                    self.fact("sni", json!(s));
                }
                HandshakeMsg::ClientHello
            }
            tls::Handshake::ServerHello {
                version,
                selected_version,
                cipher_suite,
            } => {
                let v = tls::version_name(selected_version.unwrap_or(*version));
                if selected_version == &Some(0x0304) {
                    self.tls13 = true;
                }
                self.aead_overhead =
                    aead_overhead(self.tls13, &tls::cipher_suite_name(*cipher_suite));
                let legacy = matches!(v.as_str(), "TLSv1.0" | "TLSv1.1" | "SSLv3");
                self.fact("version", json!(v));
                self.fact("cipher_suite", json!(tls::cipher_suite_name(*cipher_suite)));
                if legacy {
                    self.fact("legacy_only", json!(true));
                }
                HandshakeMsg::ServerHello
            }
            tls::Handshake::Certificate { chain } => {
                if let Some(leaf) = chain.first() {
                    let n = chain.len();
                    let leaf = leaf.clone();
                    self.cert_facts(&leaf, n);
                }
                HandshakeMsg::Certificate
            }
            tls::Handshake::ServerHelloDone => HandshakeMsg::ServerHelloDone,
            tls::Handshake::ClientKeyExchange => HandshakeMsg::ClientKeyExchange,
            tls::Handshake::Finished => HandshakeMsg::Finished,
            tls::Handshake::Other { msg_type } => HandshakeMsg::from_type(*msg_type),
        }
    }

    fn cert_facts(&mut self, der: &[u8], chain_len: usize) {
        self.certificate_seen = true;
        let now = (self.now / 1_000_000) as i64;
        self.fact("cert_chain_len", json!(chain_len));
        match tls::cert_facts(der, now) {
            Ok(c) => {
                self.fact("cert_subject", json!(c.subject));
                self.fact("cert_issuer", json!(c.issuer));
                self.fact("cert_not_before", json!(c.not_before));
                self.fact("cert_not_after", json!(c.not_after));
                self.fact("cert_expired", json!(c.expired));
                self.fact("cert_not_yet_valid", json!(c.not_yet_valid));
                self.fact("cert_self_signed", json!(c.self_signed));
                self.fact("cert_key", json!(format!("{} {}", c.key_type, c.key_bits)));
                self.fact("cert_signature_algorithm", json!(c.signature_algorithm));
                self.fact("cert_days_left", json!(c.days_left));
                self.fact("cert_sha256", json!(c.sha256));
            }
            Err(e) => self.fact("cert_error", json!(e.to_string())),
        }
    }

    /// Without secrets, HYBRID_EX's CredSSP shows in record sizes: after the client's records
    /// (NEGOTIATE, AUTHENTICATE, TSCredentials) a server record of 4 cleartext bytes is the Early
    /// User Authorization Result, and a client that goes on after it was let in (an ACCESS_DENIED
    /// ends the connection); a long exchange both ways after it is a session that came up. Facts say
    /// it was inferred.
    fn infer_from_record_size(&mut self, dir: Dir, len: usize) {
        let hybrid_ex = self
            .selected
            .is_some_and(|s| s & x224::PROTOCOL_HYBRID_EX != 0);
        let Some(overhead) = self.aead_overhead.filter(|_| hybrid_ex) else {
            return;
        };
        self.enc_credssp_records[di(dir)] += 1;
        match &mut self.after_euar {
            None => {
                if dir == Dir::S2C && len == 4 + overhead && self.enc_credssp_records[0] >= 2 {
                    self.after_euar = Some([0, 0]);
                }
            }
            Some(after) => {
                after[di(dir)] += 1;
                let after = *after;
                if dir == Dir::C2S && after[0] == 1 {
                    self.fact("early_user_auth", json!("success"));
                    self.fact("inferred", json!(true));
                    self.notes.push(format!(
                        "inferred without keys: the server's {}-byte record after the client's credentials is HYBRID_EX's 4-byte Early User Authorization Result, and the client went on: NLA succeeded",
                        len_with_header(4 + overhead)
                    ));
                }
                if after[0] >= EUAR_SESSION_RECORDS && after[1] >= EUAR_SESSION_RECORDS {
                    self.enter(Stage::Connected);
                    self.fact(
                        "inferred",
                        json!(format!(
                            "encrypted session: connected inferred from {} client and {} server records after the Early User Authorization Result",
                            after[0], after[1]
                        )),
                    );
                    self.connected = true;
                    self.ended_by = None;
                }
            }
        }
    }

    /// One CredSSP message in the inner stream (TSRequest, or the 4-byte Early User Authorization Result).
    fn credssp_pdu(&mut self, dir: Dir, first_event: usize, buf: &[u8]) -> Option<usize> {
        let base = self.inner[di(dir)].base;
        let first = *buf.first()?;
        if first == 0x03 {
            // TPKT: CredSSP is over, MCS begins.
            self.inner[di(dir)].mode = Mode::Rdp;
            return Some(0);
        }
        if first != 0x30 {
            if dir == Dir::S2C
                && self
                    .selected
                    .is_some_and(|s| s & x224::PROTOCOL_HYBRID_EX != 0)
            {
                if buf.len() < 4 {
                    return None;
                }
                let v = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                self.pdu(
                    Stage::Credssp,
                    dir,
                    4,
                    PduKind::EarlyUserAuth { denied: v != 0 },
                    first_event,
                    true,
                );
                self.fact(
                    "early_user_auth",
                    json!(if v == 0 { "success" } else { "access_denied" }),
                );
                if v != 0 {
                    self.fail(
                        FailureKind::Denied {
                            detail: format!(
                                "Early User Authorization Result ACCESS_DENIED (0x{v:08x}): the user may not log on remotely"
                            ),
                        },
                        Side::Server,
                    );
                }
                self.authenticate_pending = false;
                self.inner[di(dir)].mode = Mode::Rdp;
                return Some(4);
            }
            self.kill(dir, Layer::Inner);
            self.enter(Stage::Credssp);
            self.malformed(
                dir,
                format!("expected a TSRequest (0x30), got 0x{first:02x}"),
                base,
            );
            return None;
        }
        let len = match credssp::der_frame_len(buf) {
            Some(l) if l <= buf.len() => l,
            Some(l) if l > MAX_PENDING => {
                self.kill(dir, Layer::Inner);
                self.enter(Stage::Credssp);
                self.malformed(dir, format!("TSRequest length {l} too large"), base);
                return None;
            }
            _ => {
                // Incomplete (or an unreadable header: then the MAX_PENDING bound ends it).
                if buf.len() >= 6 && credssp::der_frame_len(buf).is_none() && buf[1] > 0x84 {
                    self.kill(dir, Layer::Inner);
                    self.enter(Stage::Credssp);
                    self.malformed(dir, "invalid DER length in TSRequest".into(), base + 1);
                }
                return None;
            }
        };
        let msg = &buf[..len];
        match credssp::parse_ts_request(msg) {
            Ok(ts) => {
                let ntlm = ts.nego_token.as_deref().and_then(credssp::parse_ntlm);
                let token = match ntlm.as_ref().and_then(|n| n.message_type.as_ref()) {
                    Some(t) => Some(NegoToken::Ntlm(NtlmKind::from(t))),
                    None => ts.nego_token.as_ref().map(|_| NegoToken::Other),
                };
                let parts = TsRequestParts {
                    token,
                    pub_key_auth: ts.has_pub_key_auth,
                    auth_info: ts.has_auth_info,
                    error_code: ts.error_code.is_some(),
                };
                self.pdu(
                    Stage::Credssp,
                    dir,
                    len,
                    PduKind::TsRequest(parts),
                    first_event,
                    true,
                );
                let who = if dir == Dir::C2S { "client" } else { "server" };
                self.fact(&format!("{who}_version"), json!(ts.version));
                if dir == Dir::S2C {
                    self.authenticate_pending = false;
                    self.fact("version", json!(ts.version));
                }
                if let Some(n) = ntlm {
                    if dir == Dir::S2C && n.message_type == Some(NtlmMessageType::Challenge) {
                        for (k, v) in [
                            ("ntlm_nb_computer_name", &n.nb_computer_name),
                            ("ntlm_nb_domain_name", &n.nb_domain_name),
                            ("ntlm_dns_computer_name", &n.dns_computer_name),
                            ("ntlm_dns_domain_name", &n.dns_domain_name),
                            ("ntlm_dns_tree_name", &n.dns_tree_name),
                            ("ntlm_os_version", &n.os_version),
                            ("ntlm_server_time", &n.server_time),
                        ] {
                            if let Some(v) = v {
                                self.fact(k, json!(v));
                            }
                        }
                    }
                    if dir == Dir::C2S && n.message_type == Some(NtlmMessageType::Authenticate) {
                        self.authenticate_pending = true;
                        if let Some(u) = &n.user {
                            self.fact("ntlm_user", json!(u));
                        }
                        if n.has_nt_response {
                            self.fact("contains_ntlm_response", json!(true));
                        }
                    }
                }
                if dir == Dir::C2S && ts.has_auth_info {
                    self.authenticate_pending = true;
                }
                if let Some(code) = ts.error_code {
                    self.fact("error_code", json!(format!("0x{code:08X}")));
                    if let Some(n) = credssp::ntstatus_name(code) {
                        self.fact("error_name", json!(n));
                    }
                    self.fail(
                        FailureKind::AuthFailure(AuthFailure {
                            ntstatus: Some(code),
                            detail: "server answered with a TSRequest errorCode".into(),
                        }),
                        dir.sender(),
                    );
                }
            }
            Err((what, off)) => {
                self.pdu(
                    Stage::Credssp,
                    dir,
                    len,
                    PduKind::MalformedTsRequest,
                    first_event,
                    true,
                );
                self.kill(dir, Layer::Inner);
                self.malformed(dir, format!("TSRequest: {what}"), base + off as u64);
                return None;
            }
        }
        Some(len)
    }

    /// A client that sent later stages ahead (one segment with X.224, MCS Connect Initial, Erect
    /// Domain, Attach User and Channel Joins) and was then reset, closed or left without answer failed
    /// at the first stage whose answer never came, not at the last one it sent: the failure moves
    /// there and the stages sent ahead are folded into it (a note names them).
    fn first_unanswered(&mut self) {
        let Some(f) = &self.failure else {
            return;
        };
        if !matches!(
            f.kind,
            FailureKind::Reset
                | FailureKind::Closed { .. }
                | FailureKind::TimedOut { .. }
                | FailureKind::CaptureEnded
                | FailureKind::Dropped { .. }
        ) {
            return;
        }
        let last_answered = self.stages.iter().rposition(|(_, a)| a.bytes_s2c > 0);
        let from = last_answered.map_or(0, |i| i + 1);
        let Some(idx) = (from..self.stages.len()).find(|&i| {
            let a = &self.stages[i].1;
            a.bytes_c2s > 0 && a.bytes_s2c == 0
        }) else {
            return;
        };
        let Some(fail_idx) = self.stages.iter().position(|(s, _)| *s == f.stage) else {
            return;
        };
        if idx >= fail_idx {
            return;
        }
        let ahead: Vec<(Stage, StageAcc)> = self.stages.drain(idx + 1..).collect();
        let names: Vec<String> = ahead.iter().map(|(s, _)| s.to_string()).collect();
        let stage = self.stages[idx].0;
        let acc = &mut self.stages[idx].1;
        for (_, a) in ahead {
            acc.end_us = acc.end_us.max(a.end_us);
            acc.bytes_c2s += a.bytes_c2s;
            acc.frames.extend(a.frames);
            acc.pdus.extend(a.pdus);
            acc.pdus_more += a.pdus_more;
            for (k, v) in a.facts {
                if k.starts_with("ended_after")
                    || k.starts_with("reset_")
                    || k.starts_with("unacked")
                    || k == "dropped_between"
                {
                    acc.facts.insert(k, v);
                } else {
                    acc.facts.entry(k).or_insert(v);
                }
            }
        }
        self.notes.push(format!(
            "the client sent the {} stage{} ahead before any answer to the {stage} stage: the connection failed at {stage}, the first stage whose answer never came",
            names.join(", "),
            if names.len() == 1 { "" } else { "s" }
        ));
        if let Some(f) = &mut self.failure {
            f.stage = stage;
        }
    }

    fn finish(mut self) -> Decoded {
        self.resolve_server_fin();
        // Leftover partial PDUs at the end.
        for (i, dir) in [(0, Dir::C2S), (1, Dir::S2C)] {
            let left = self.wire[i].pending_len() + self.inner[i].pending_len();
            if left > 0 && self.wire[i].mode != Mode::Dead {
                self.notes.push(format!(
                    "{} incomplete bytes from the {} at the end",
                    left,
                    dir.sender()
                ));
                if dir == Dir::S2C && self.failure.is_none() && !self.connected {
                    // A TPKT length the server never delivered: name it.
                    let what = format!(
                        "server sent {} bytes of a PDU it never completed",
                        self.wire[i].pending_len().max(self.inner[i].pending_len())
                    );
                    self.notes.push(what);
                }
            }
        }
        if self.pending_mismatch.is_some() && self.failure.is_none() {
            self.fail_mismatch();
        }
        if self.stages.is_empty() {
            self.enter(Stage::Tcp);
        }
        self.first_unanswered();
        let mut stages: Vec<StageReport> = Vec::new();
        let failure_stage = self.failure.as_ref().map(|f| f.stage);
        for (stage, acc) in self.stages.drain(..) {
            let verdict = match (&self.failure, failure_stage) {
                (Some(f), Some(fs)) if fs == stage => Verdict::Failed {
                    kind: f.kind.clone(),
                    by: f.by,
                },
                _ => Verdict::Ok,
            };
            let mut facts = acc.facts;
            let listed = acc.pdus.len() as u64;
            if !acc.pdus.is_empty() {
                let names = acc
                    .pdus
                    .iter()
                    .map(|(d, k)| serde_json::Value::String(pdu_entry(d.sender(), k)));
                facts.insert("pdus".into(), serde_json::Value::Array(names.collect()));
            }
            if acc.pdus_more > 0 {
                facts.insert("pdus_more".into(), json!(acc.pdus_more));
            }
            if facts.contains_key("encrypted") {
                facts.insert("encrypted_records".into(), json!(listed + acc.pdus_more));
            }
            stages.push(StageReport {
                stage,
                verdict,
                start_us: acc.start_us,
                duration_ms: (acc.end_us.saturating_sub(acc.start_us)) as f64 / 1000.0,
                bytes_c2s: acc.bytes_c2s,
                bytes_s2c: acc.bytes_s2c,
                frames: acc.frames,
                facts,
            });
        }
        let last = stages.last().map(|s| s.stage).unwrap_or(Stage::Tcp);
        let (last_stage, verdict) = match &self.failure {
            Some(f) => (
                f.stage,
                Verdict::Failed {
                    kind: f.kind.clone(),
                    by: f.by,
                },
            ),
            None if self.connected => (Stage::Connected, Verdict::Ok),
            None => match self.stopped {
                Some(s) => (
                    last.min(s.max(last)),
                    Verdict::Failed {
                        kind: FailureKind::Stopped,
                        by: Side::Client,
                    },
                ),
                None => (
                    last,
                    Verdict::Failed {
                        kind: FailureKind::CaptureEnded,
                        by: Side::Network,
                    },
                ),
            },
        };
        let total_ms = stages
            .last()
            .map(|s| {
                (s.start_us + (s.duration_ms * 1000.0) as u64).saturating_sub(
                    self.trace
                        .connect_start_us
                        .map_or(self.trace.start_us(), |c| c.min(self.trace.start_us())),
                ) as f64
                    / 1000.0
            })
            .unwrap_or(0.0);
        if let Some(ev) = self.trace.tcp.as_deref() {
            if let Some(loss) = ev.loss_summary() {
                self.notes.push(loss);
            }
            for i in &ev.icmp {
                self.notes.push(format!(
                    "ICMP from {} about a {} packet: {}",
                    i.from,
                    i.about.sender(),
                    i.what
                ));
            }
            if let Some(tcp) = stages.iter_mut().find(|s| s.stage == Stage::Tcp) {
                for (key, d) in [("client", &ev.c2s), ("server", &ev.s2c)] {
                    if let (Some(ttl), Some(h)) = (d.ttl_max, d.hops) {
                        tcp.facts.insert(format!("{key}_ttl"), json!(ttl));
                        tcp.facts.insert(format!("{key}_hops"), json!(h));
                    }
                }
                let syn = ev.c2s.syn_retries;
                if syn > 0 {
                    tcp.facts.insert("syn_retries".into(), json!(syn));
                }
            }
        }
        let summary = summarize(&stages, last_stage, &verdict, self.ended_by, total_ms);
        let labels = self.labels.into_iter().map(|l| l.join("; ")).collect();
        Decoded {
            report: ConnectionReport {
                client: self.trace.client.to_string(),
                server: self.trace.server.to_string(),
                stages,
                last_stage,
                verdict,
                ended_by: self.ended_by,
                summary,
                notes: self.notes,
                tcp: self.trace.tcp.clone(),
            },
            labels,
        }
    }
}

/// "not an RDP service: the answer is not TPKT, first bytes 53 53 48 2d … \"SSH-2.0-…\"".
fn not_rdp_what(buf: &[u8]) -> String {
    let head = &buf[..buf.len().min(24)];
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!(
        "not an RDP service: the answer is not TPKT (RFC 1006); first {} byte{}: {} \"{text}\"",
        head.len(),
        if head.len() == 1 { "" } else { "s" },
        hex.join(" ")
    )
}

fn summarize(
    stages: &[StageReport],
    last: Stage,
    verdict: &Verdict,
    ended_by: Option<Side>,
    total_ms: f64,
) -> String {
    let sel = stages
        .iter()
        .find(|s| s.stage == Stage::X224)
        .and_then(|s| s.facts.get("selected_protocol"))
        .and_then(|v| v.as_str())
        .map(|s| format!(" with {s}"))
        .unwrap_or_default();
    match verdict {
        Verdict::Ok if stages
            .iter()
            .any(|s| s.stage == Stage::Connected && s.facts.contains_key("inferred")) =>
        {
            format!("connected{sel} in {total_ms:.0} ms: every stage passed (inferred without TLS keys from encrypted record sizes, direction and volume)")
        }
        Verdict::Ok => format!("connected{sel} in {total_ms:.0} ms: every stage passed"),
        Verdict::Failed {
            kind: FailureKind::Stopped,
            ..
        } => format!("stopped after {last}{sel} by the client: every stage up to it passed ({total_ms:.0} ms)"),
        Verdict::Failed { kind, by } => {
            let who = match (kind, by) {
                (FailureKind::CaptureEnded, _) => "the capture ended before the connection did".to_owned(),
                (FailureKind::Dropped { .. }, _) => "dropped between the client and the server".to_owned(),
                (FailureKind::Reset, Side::Network) => {
                    "a device in the path reset the connection (the reset does not fit the peer's own packets)".to_owned()
                }
                (FailureKind::Refused, _) => {
                    "the server host (or a firewall in front of it) refused the TCP connection".to_owned()
                }
                (FailureKind::ProtocolMismatch { .. }, _) => {
                    "the server selected a security protocol the client did not offer".to_owned()
                }
                (FailureKind::NegotiationFailure { .. }, _) => {
                    "the server refused every security protocol the client offered".to_owned()
                }
                (FailureKind::TimedOut { .. }, Side::Server) => {
                    "the server (or the network in front of it) went silent".to_owned()
                }
                (FailureKind::Unreachable { .. }, _) => "the network could not reach the server".to_owned(),
                (FailureKind::Reset, Side::Server) => {
                    "the server, or a device in front of it, reset the connection".to_owned()
                }
                (_, Side::Server) => "the server most likely ended the connection".to_owned(),
                (_, Side::Client) => "the client ended the connection".to_owned(),
                (_, Side::Network) => "the network ended the connection".to_owned(),
            };
            let closer = match ended_by {
                Some(s) if s != *by && !matches!(kind, FailureKind::CaptureEnded) => format!("; the {s} closed the socket"),
                _ => String::new(),
            };
            format!("failed at {last}: {kind} — {who}{closer}")
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::wire::mcs::{DomainPdu, SendData};
    use crate::wire::x224 as wx;

    use crate::stage::{AuthFailure, FailureKind, Side, Stage, Verdict};
    use crate::trace::{Dir, EventKind, Layer, Trace};

    /// An X.224 Connection Request (TPKT + CR TPDU + RDP_NEG_REQ offering TLS and CredSSP).
    fn connection_request() -> Vec<u8> {
        let mut pdu = vec![0x03, 0x00, 0x00, 0x13, 0x0E, 0xE0, 0, 0, 0, 0, 0];
        pdu.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00]);
        pdu
    }

    fn trace_until(end: EventKind, end_ms: u64) -> Trace {
        let a = "127.0.0.1:50000".parse().unwrap();
        let b = "127.0.0.1:3389".parse().unwrap();
        let mut t = Trace::new(a, b);
        let t0 = 1_000_000_000;
        t.push_at(t0, None, EventKind::Connected);
        t.push_at(
            t0 + 100,
            None,
            EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Wire,
                bytes: Bytes::from(connection_request()),
            },
        );
        t.push_at(t0 + end_ms * 1000, None, end);
        t
    }

    /// A TLS conversation without secrets: the X.224 exchange selecting TLS, then `server` as the
    /// server's wire bytes cut into data events at `cuts` (stream offsets).
    fn tls_trace(server: &[u8], cuts: &[usize]) -> Trace {
        let a = "127.0.0.1:50000".parse().unwrap();
        let b = "127.0.0.1:3389".parse().unwrap();
        let mut t = Trace::new(a, b);
        t.push_at(1_000_000_000, None, EventKind::Connected);
        let mut now = 1_000_000_000;
        let mut push = |t: &mut Trace, dir, bytes: &[u8]| {
            now += 100;
            let bytes = Bytes::copy_from_slice(bytes);
            let kind = EventKind::Data {
                dir,
                layer: Layer::Wire,
                bytes,
            };
            t.push_at(now, Some(now), kind);
        };
        push(&mut t, Dir::C2S, &connection_request());
        // X.224 Connection Confirm with RDP_NEG_RSP selecting TLS (PROTOCOL_SSL).
        let cc = [
            3, 0, 0, 19, 14, 0xD0, 0, 0, 0x12, 0x34, 0, 2, 0, 8, 0, 1, 0, 0, 0,
        ];
        push(&mut t, Dir::S2C, &cc);
        let mut at = 0;
        for &c in cuts.iter().chain([server.len()].iter()) {
            if c > at {
                push(&mut t, Dir::S2C, &server[at..c]);
                at = c;
            }
        }
        t
    }

    fn record(ct: u8, len: usize) -> Vec<u8> {
        let mut r = vec![ct, 3, 3, (len >> 8) as u8, len as u8];
        r.extend((0..len).map(|i| i as u8));
        r
    }

    /// The server's stream of the split tests: a handshake record, application-data records of
    /// several sizes, an alert.
    fn server_records() -> Vec<u8> {
        let mut s = record(22, 40);
        s.extend(record(20, 1));
        s.extend(record(23, 900));
        s.extend(record(23, 3));
        s.extend(record(23, 2100));
        s.extend(record(21, 2));
        s
    }

    /// An application-data record split across segments is counted, not copied: while it is
    /// incomplete the parser stores its 5-byte header only (it stored every byte so far).
    #[test]
    fn split_application_data_record_is_counted_not_copied() {
        let mut server = record(23, 2000);
        server.extend(record(23, 50));
        let t = tls_trace(&server, &[700, 1400]);
        let mut m = super::Machine::new(&t, false);
        for (i, ev) in t.events.iter().enumerate() {
            m.step(i, ev);
            if i == t.events.len() - 2 {
                // 1400 bytes of the first record arrived (700 + 700).
                assert_eq!(
                    m.wire[1].buf.len(),
                    5,
                    "stored bytes of the incomplete record"
                );
                assert_eq!(m.wire[1].pending_len(), 1400);
            }
        }
        assert_eq!(m.wire[1].pending_len(), 0, "both records complete");
        let r = m.finish().report;
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("application data (encrypted)"), "{json}");
    }

    /// Wherever the server's stream is cut (inside a header, a body, between records; one cut or
    /// two), the report is the one of the uncut stream.
    #[test]
    fn split_records_decode_as_one_stream() {
        let server = server_records();
        let whole =
            serde_json::to_string(&crate::decode::decode(&tls_trace(&server, &[])).report).unwrap();
        // Frames and times differ with the cuts; compare the parts that do not depend on them.
        let norm = |j: &str| -> serde_json::Value {
            let mut v: serde_json::Value = serde_json::from_str(j).unwrap();
            for s in v["stages"].as_array_mut().unwrap() {
                let s = s.as_object_mut().unwrap();
                for k in ["frames", "start_us", "duration_ms"] {
                    s.remove(k);
                }
            }
            v.as_object_mut().unwrap().remove("summary");
            v
        };
        let want = norm(&whole);
        assert!(whole.contains("application data (encrypted)"), "{whole}");
        for c in 1..server.len() {
            for cuts in [vec![c], vec![c, (c + 7).min(server.len())], vec![c, c + 1]] {
                let t = tls_trace(&server, &cuts);
                let got = serde_json::to_string(&crate::decode::decode(&t).report).unwrap();
                assert_eq!(norm(&got), want, "cuts {cuts:?}");
            }
        }
    }

    /// A stage that failed lasts until the event that ended it: a timeout 2 s after the request
    /// is a 2 s x224 stage (it read 0.1 ms, the time of the request alone).
    #[test]
    fn failed_stage_lasts_until_its_end() {
        let timeout = EventKind::Timeout {
            waiting_for: Dir::S2C,
            after_ms: 2000,
        };
        let r = crate::decode::decode(&trace_until(timeout, 2000)).report;
        let x224 = r.stage(Stage::X224).expect("x224 stage");
        assert!(
            matches!(
                x224.verdict,
                Verdict::Failed {
                    kind: FailureKind::TimedOut { .. },
                    by: Side::Server
                }
            ),
            "{:?}",
            x224.verdict
        );
        assert!(
            (1999.0..=2001.0).contains(&x224.duration_ms),
            "x224 lasted {} ms",
            x224.duration_ms
        );
        let rst = crate::decode::decode(&trace_until(EventKind::Rst { dir: Dir::S2C }, 35)).report;
        let x224 = rst.stage(Stage::X224).expect("x224 stage");
        assert!(matches!(
            x224.verdict,
            Verdict::Failed {
                kind: FailureKind::Reset,
                ..
            }
        ));
        assert!(
            (34.0..=35.1).contains(&x224.duration_ms),
            "{}",
            x224.duration_ms
        );
    }

    // ---- the machine at its boundary: a small Trace in, stage rows and the verdict out ----

    /// A conversation built PDU by PDU, 1 ms apart.
    struct Conv {
        t: Trace,
        now: u64,
    }

    impl Conv {
        /// Connected, then an X.224 exchange in which the client offers `requested` and the server
        /// selects `selected` (MS-RDPBCGR 2.2.1.1 / 2.2.1.2).
        fn new(requested: u8, selected: u8) -> Conv {
            let a = "127.0.0.1:50000".parse().unwrap();
            let b = "127.0.0.1:3389".parse().unwrap();
            let mut c = Conv {
                t: Trace::new(a, b),
                now: 1_000_000_000,
            };
            c.ev(EventKind::Connected);
            let mut cr = vec![3, 0, 0, 19, 14, 0xE0, 0, 0, 0, 0, 0];
            cr.extend_from_slice(&[1, 0, 8, 0, requested, 0, 0, 0]);
            c.send(Dir::C2S, &cr);
            let cc = [
                3, 0, 0, 19, 14, 0xD0, 0, 0, 0x12, 0x34, 0, 2, 0, 8, 0, selected, 0, 0, 0,
            ];
            c.send(Dir::S2C, &cc);
            c
        }

        fn ev(&mut self, kind: EventKind) {
            self.now += 1000;
            self.t.push_at(self.now, Some(self.now), kind);
        }

        fn send(&mut self, dir: Dir, bytes: &[u8]) {
            self.ev(EventKind::Data {
                dir,
                layer: Layer::Wire,
                bytes: Bytes::copy_from_slice(bytes),
            });
        }

        /// An MCS domain PDU in a TPKT.
        fn domain(&mut self, dir: Dir, pdu: &DomainPdu, payload: &[u8]) {
            let ud = pdu.emit(payload).expect("domain pdu");
            let mut b = wx::data_header(ud.len()).expect("length").to_vec();
            b.extend_from_slice(&ud);
            self.send(dir, &b);
        }

        /// `payload` in a send data request (client) or indication (server) on the I/O channel.
        fn share(&mut self, dir: Dir, payload: &[u8]) {
            let sd = SendData {
                initiator: 1007,
                channel_id: 1003,
                priority_segmentation: 0x70,
                payload: 0..0,
                announced_len: 0,
            };
            let pdu = match dir {
                Dir::C2S => DomainPdu::SendDataRequest(sd),
                Dir::S2C => DomainPdu::SendDataIndication(sd),
            };
            self.domain(dir, &pdu, payload);
        }

        fn report(&self) -> crate::report::ConnectionReport {
            crate::decode::decode(&self.t).report
        }
    }

    /// A share control PDU of `pdu_type` (MS-RDPBCGR 2.2.8.1.1.1.1) around `body`.
    fn share_control(pdu_type: u16, body: &[u8]) -> Vec<u8> {
        let total = (6 + body.len()) as u16;
        let mut p = total.to_le_bytes().to_vec();
        p.extend_from_slice(&(0x10 | pdu_type).to_le_bytes());
        p.extend_from_slice(&1007u16.to_le_bytes());
        p.extend_from_slice(body);
        p
    }

    /// A data PDU (share data header, 2.2.8.1.1.1.2) of `pdu_type2` with `data`.
    fn data_pdu(pdu_type2: u8, data: &[u8]) -> Vec<u8> {
        let mut b = 0x0001_03eau32.to_le_bytes().to_vec(); // shareId
        b.extend_from_slice(&[0, 1]); // pad1, streamId
        b.extend_from_slice(&(data.len() as u16).to_le_bytes());
        b.extend_from_slice(&[pdu_type2, 0, 0, 0]);
        b.extend_from_slice(data);
        share_control(7, &b)
    }

    /// Demand / confirm active with a source descriptor and no capability sets.
    fn active(pdu_type: u16) -> Vec<u8> {
        let mut b = 0x0001_03eau32.to_le_bytes().to_vec();
        if pdu_type == 3 {
            b.extend_from_slice(&1002u16.to_le_bytes()); // originatorId
        }
        b.extend_from_slice(&[4, 0, 0, 0]); // lengthSourceDescriptor, lengthCombinedCapabilities
        b.extend_from_slice(b"RDP\0");
        b.extend_from_slice(&[0, 0, 0, 0]); // numberCapabilities, pad
        share_control(pdu_type, &b)
    }

    /// A licensing error message with STATUS_VALID_CLIENT / ST_NO_TRANSITION behind a basic
    /// security header with SEC_LICENSE_PKT: how a server ends licensing.
    fn license_valid_client() -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0xff, 3, 16, 0];
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(&[4, 0, 0, 0]);
        p
    }

    fn pdus_of(r: &crate::report::ConnectionReport, stage: Stage) -> Vec<String> {
        r.stage(stage)
            .and_then(|s| s.facts.get("pdus"))
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }

    fn failure(r: &crate::report::ConnectionReport) -> (Stage, FailureKind, Side) {
        match &r.verdict {
            Verdict::Failed { kind, by } => (r.last_stage, kind.clone(), *by),
            Verdict::Ok => panic!("no failure: {}", r.summary),
        }
    }

    /// Standard RDP security at encryption level NONE, licensing to the first update: every share
    /// PDU lands in its stage by its kind. Flow control (its marker, not a "control" PDU) is part of
    /// the capability exchange, set error info stays in the stage it arrives in, the licensing error
    /// alert is licensing, and only the server's font map (not the client's font list) connects.
    #[test]
    fn share_pdus_land_in_their_stages_and_the_font_map_connects() {
        let mut c = Conv::new(0, 0);
        c.share(Dir::S2C, &license_valid_client());
        c.share(Dir::S2C, &active(1));
        c.share(Dir::C2S, &[0x00, 0x80, 0x41, 0, 0, 0, 0xe9, 0x03]);
        c.share(Dir::C2S, &active(3));
        c.share(Dir::C2S, &data_pdu(0x1f, &[1, 0, 0xea, 0x03]));
        c.share(Dir::C2S, &data_pdu(0x14, &[4, 0, 0, 0, 0, 0, 0, 0]));
        c.share(Dir::S2C, &data_pdu(0x2f, &0x0000_0007u32.to_le_bytes()));
        c.share(Dir::C2S, &data_pdu(0x27, &[0; 8]));
        let before_map = c.report();
        assert_eq!(before_map.last_stage, Stage::Capabilities);
        assert!(before_map.stage(Stage::Connected).is_none());
        c.share(Dir::S2C, &data_pdu(0x28, &[0; 8]));
        c.share(Dir::S2C, &data_pdu(0x02, &[0; 4]));
        c.ev(EventKind::Fin { dir: Dir::C2S });
        let r = c.report();
        let stages: Vec<Stage> = r.stages.iter().map(|s| s.stage).collect();
        assert_eq!(
            stages,
            [
                Stage::Tcp,
                Stage::X224,
                Stage::Licensing,
                Stage::Capabilities,
                Stage::Connected
            ]
        );
        assert_eq!(r.verdict, Verdict::Ok, "{}", r.summary);
        assert_eq!(
            pdus_of(&r, Stage::X224),
            ["client: connection request", "server: connection confirm"]
        );
        assert_eq!(
            pdus_of(&r, Stage::Licensing),
            ["server: license error alert"]
        );
        assert_eq!(
            pdus_of(&r, Stage::Capabilities),
            [
                "server: demand active",
                "client: flow control",
                "client: confirm active",
                "client: synchronize",
                "client: control",
                "server: set error info",
                "client: font list",
                "server: font map",
            ]
        );
        assert_eq!(pdus_of(&r, Stage::Connected), ["server: update"]);
        assert_eq!(
            r.fact(Stage::Licensing, "license_valid_client"),
            Some(&serde_json::json!(true))
        );
        assert_eq!(
            r.fact(Stage::Capabilities, "set_error_info"),
            Some(&serde_json::json!(
                "ERRINFO_SERVER_DENIED_CONNECTION (0x00000007)"
            ))
        );
    }

    /// Set error info before any other share PDU stays in the channels stage (it is not a
    /// capability-exchange PDU although its name has none of their words), and the ultimatum after
    /// it is the server's denial there.
    #[test]
    fn ultimatum_after_set_error_info_is_a_denial_in_channels() {
        let mut c = Conv::new(0, 0);
        c.domain(Dir::C2S, &DomainPdu::ErectDomainRequest, &[]);
        c.domain(Dir::C2S, &DomainPdu::AttachUserRequest, &[]);
        let confirm = DomainPdu::AttachUserConfirm {
            result: 0,
            initiator: Some(1007),
        };
        c.domain(Dir::S2C, &confirm, &[]);
        c.share(Dir::S2C, &data_pdu(0x2f, &0x0000_0009u32.to_le_bytes()));
        c.domain(
            Dir::S2C,
            &DomainPdu::DisconnectProviderUltimatum { reason: 3 },
            &[],
        );
        c.ev(EventKind::Fin { dir: Dir::S2C });
        let r = c.report();
        let (stage, kind, by) = failure(&r);
        assert_eq!(stage, Stage::Channels);
        assert_eq!(by, Side::Server);
        assert_eq!(
            kind,
            FailureKind::Denied {
                detail: "MCS disconnect provider ultimatum rn-user-requested".into()
            }
        );
        assert_eq!(
            pdus_of(&r, Stage::Channels),
            [
                "client: erect domain request",
                "client: attach user request",
                "server: attach user confirm",
                "server: set error info",
                "server: disconnect provider ultimatum",
            ]
        );
        assert_eq!(
            r.fact(Stage::Channels, "attach_user"),
            Some(&serde_json::json!([{"initiator": 1007, "result": "rt-successful"}]))
        );
        assert!(r.fact(Stage::Channels, "set_error_info").is_some());
        assert!(r.stage(Stage::Capabilities).is_none());
    }

    /// Without secrets, application data after the server's handshake flight is the next stage
    /// (mcs under TLS). A record holding only ServerHelloDone completes the flight as one holding
    /// ServerHello does; a record of another handshake message does not.
    #[test]
    fn server_hello_done_alone_ends_the_visible_handshake() {
        let hs = |msg_type: u8| vec![22, 3, 3, 0, 4, msg_type, 0, 0, 0];
        let mut done = hs(14);
        done.extend(record(23, 30));
        let r = crate::decode::decode(&tls_trace(&done, &[])).report;
        assert_eq!(pdus_of(&r, Stage::Tls), ["server: server hello done"]);
        assert_eq!(
            pdus_of(&r, Stage::Mcs),
            ["server: application data (encrypted)"]
        );
        assert_eq!(
            r.fact(Stage::Mcs, "encrypted"),
            Some(&serde_json::json!(true))
        );
        let mut other = hs(0);
        other.extend(record(23, 30));
        let r = crate::decode::decode(&tls_trace(&other, &[])).report;
        assert_eq!(
            pdus_of(&r, Stage::Tls),
            [
                "server: handshake type 0",
                "server: application data (encrypted)"
            ]
        );
        assert!(r.stage(Stage::Mcs).is_none());
    }

    /// A cleartext close_notify from the server, then its FIN: closed with close_notify (not a TLS
    /// alert failure); a fatal alert is the failure itself, named with its code.
    #[test]
    fn alerts_by_description() {
        let mut s = vec![21, 3, 3, 0, 2, 1, 0];
        let mut t = tls_trace(&s, &[]);
        t.push_at(1_000_100_000, None, EventKind::Fin { dir: Dir::S2C });
        let r = crate::decode::decode(&t).report;
        assert_eq!(
            pdus_of(&r, Stage::Tls),
            ["server: alert warning close_notify"]
        );
        let (stage, kind, by) = failure(&r);
        assert_eq!(
            (stage, kind, by),
            (
                Stage::Tls,
                FailureKind::Closed {
                    tls_close_notify: true
                },
                Side::Server
            )
        );
        s[5..7].copy_from_slice(&[2, 40]);
        let r = crate::decode::decode(&tls_trace(&s, &[])).report;
        assert_eq!(
            pdus_of(&r, Stage::Tls),
            ["server: alert fatal handshake_failure"]
        );
        assert_eq!(
            failure(&r).1,
            FailureKind::TlsAlert(crate::stage::TlsAlert::fatal(40))
        );
    }

    /// The probe's note that the server sent close_notify (its TLS stack reports it as the end of
    /// the stream) makes the server's FIN a close with close_notify; another note does not, and is
    /// kept in the notes.
    #[test]
    fn server_close_notify_note() {
        for (note, notify) in [
            (crate::trace::SERVER_CLOSE_NOTIFY_NOTE, true),
            ("tls alert from client: warning close_notify", false),
        ] {
            let mut c = Conv::new(1, 1);
            c.ev(EventKind::Note(note.into()));
            c.ev(EventKind::Fin { dir: Dir::S2C });
            let r = c.report();
            assert_eq!(
                failure(&r).1,
                FailureKind::Closed {
                    tls_close_notify: notify
                },
                "{note}"
            );
            assert_eq!(r.notes.iter().any(|n| n == note), !notify, "{:?}", r.notes);
        }
    }

    /// The client's labels on the capture name each PDU with its stage, as the pdus fact does.
    #[test]
    fn labels_name_the_pdus() {
        let mut c = Conv::new(0, 0);
        c.share(Dir::S2C, &active(1));
        let d = crate::decode::decode(&c.t);
        let labels: Vec<&str> = d
            .labels
            .iter()
            .map(String::as_str)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            labels,
            [
                "tcp: connected",
                "x224: connection request",
                "x224: connection confirm",
                "capabilities: demand active"
            ]
        );
    }

    /// NTLM message `ty` (MS-NLMP 2.2.1) in a TSRequest: the signature and type, zeros after.
    fn ntlm(ty: u32) -> Vec<u8> {
        let mut m = b"NTLMSSP\0".to_vec();
        m.extend_from_slice(&ty.to_le_bytes());
        m.extend_from_slice(&[0; 80]);
        crate::decode::credssp::encode_ts_request_nego(6, &m)
    }

    impl Conv {
        fn inner(&mut self, dir: Dir, bytes: &[u8]) {
            self.ev(EventKind::Data {
                dir,
                layer: Layer::Inner,
                bytes: Bytes::copy_from_slice(bytes),
            });
        }

        /// CredSSP to the client's AUTHENTICATE (cleartext above TLS, as with the session's keys).
        fn to_authenticate(selected: u8) -> Conv {
            let mut c = Conv::new(0x0b, selected);
            c.inner(Dir::C2S, &ntlm(1));
            c.inner(Dir::S2C, &ntlm(2));
            c.inner(Dir::C2S, &ntlm(3));
            c
        }
    }

    /// How the server answers the NTLM AUTHENTICATE decides the failure: a close without a
    /// TSRequest errorCode is the credentials most likely rejected; an errorCode is named by its
    /// NTSTATUS; HYBRID_EX's Early User Authorization Result ACCESS_DENIED is a denial.
    #[test]
    fn answers_to_the_ntlm_authenticate() {
        let mut c = Conv::to_authenticate(2);
        c.ev(EventKind::Fin { dir: Dir::S2C });
        let r = c.report();
        assert_eq!(
            pdus_of(&r, Stage::Credssp),
            [
                "client: ntlm negotiate",
                "server: ntlm challenge",
                "client: ntlm authenticate"
            ]
        );
        let (stage, kind, by) = failure(&r);
        assert_eq!((stage, by), (Stage::Credssp, Side::Server));
        assert!(
            matches!(&kind, FailureKind::AuthFailure(AuthFailure { ntstatus: None, detail })
                if detail.contains("right after the NTLM AUTHENTICATE")),
            "{kind:?}"
        );

        let mut c = Conv::to_authenticate(2);
        c.inner(
            Dir::S2C,
            &crate::decode::credssp::encode_ts_request_error(6, 0xC000_006D),
        );
        let r = c.report();
        assert_eq!(
            pdus_of(&r, Stage::Credssp).last().map(String::as_str),
            Some("server: errorCode")
        );
        assert!(
            matches!(
                failure(&r).1,
                FailureKind::AuthFailure(AuthFailure {
                    ntstatus: Some(0xC000_006D),
                    ..
                })
            ),
            "{:?}",
            r.verdict
        );

        let mut c = Conv::to_authenticate(8);
        c.inner(Dir::S2C, &[5, 0, 0, 0]);
        let r = c.report();
        assert_eq!(
            pdus_of(&r, Stage::Credssp).last().map(String::as_str),
            Some("server: early user authorization result ACCESS_DENIED")
        );
        assert!(
            matches!(failure(&r).1, FailureKind::Denied { ref detail } if detail.contains("ACCESS_DENIED")),
            "{:?}",
            r.verdict
        );
        assert_eq!(
            r.fact(Stage::Credssp, "early_user_auth"),
            Some(&serde_json::json!("access_denied"))
        );
    }
}
