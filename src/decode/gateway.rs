//! The RD Gateway hop from a capture (MS-TSGU over HTTPS): the stages `gw_tcp` … `gw_channel` with
//! the verdicts and facts the live probe gives ([`crate::gateway::client`]), then the inner RDP
//! carried in the channel's DATA packets, decoded by the ordinary stage machine.
//!
//! Input: the client↔gateway conversation as a Trace whose inner layer is the decrypted HTTPS (the
//! capture reader decrypts it with the capture's TLS secrets). Layers, bottom up: TLS records (wire,
//! [`super::tls`]), HTTP/1.1 heads ([`crate::gateway::http::parse_head`]), WebSocket frames (RFC 6455;
//! headers by tungstenite's `FrameHeader::parse`), MS-TSGU packets ([`crate::gateway::tsgu::decode`]),
//! and the DATA payloads: the inner RDP conversation, its own TLS decrypted when the trace's key log
//! holds that session's secrets too (`probe --gateway` writes both).
//!
//! Without the secrets of the outer TLS, `gw_tcp` and `gw_tls` are decoded from the handshake and the
//! rest is reported as encrypted (facts and a note), never guessed.
//!
//! INVARIANT: pure (no I/O), never panics, bounded by the Trace (which the reader bounds): every
//! parser here works on byte slices the Trace already holds and stops at the first malformed unit.

use std::io::Cursor;

use bytes::Bytes;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

mod legacy;

pub use legacy::{legacy_channel, LegacyPairs, LegacyRole, MAX_HELD};

use super::Decoded;
use crate::capture::tlsdecrypt::{KeyLog, TlsDecryptor, TlsOutput, TlsStart};
use crate::gateway::http::{self, Head, HeadError};
use crate::gateway::tsgu::{self, Hresult, Packet};
use crate::report::{ConnectionReport, Facts, StageReport};
use crate::stage::{FailureKind, Side, Stage, TlsAlert, Verdict};
use crate::trace::{Dir, EventKind, Layer, Trace};

/// Most HTTP request/response pairs read (the probe sends three requests at most; mstsc four).
const MAX_EXCHANGES: usize = 16;
/// A client close this long after its own unanswered request means it waited and gave up (as in
/// the stage machine), in microseconds.
const CLIENT_WAIT_MIN_US: u64 = 500_000;
/// Most WebSocket payload bytes buffered while a packet is incomplete (as the live side bounds it).
const MAX_WS_BUFFER: usize = tsgu::MAX_PACKET_LEN + crate::gateway::ws::MAX_MESSAGE_LEN;

/// Whether a conversation is an HTTPS one (an RD Gateway's) rather than RDP: the client's first bytes
/// are a TLS record holding a ClientHello (an RDP client always starts with an X.224 TPKT).
pub fn is_gateway(trace: &Trace) -> bool {
    let mut head = [0u8; 6];
    let mut n = 0;
    for (_, bytes) in trace.data(Dir::C2S, Layer::Wire) {
        let take = (head.len() - n).min(bytes.len());
        head[n..n + take].copy_from_slice(&bytes[..take]);
        n += take;
        if n == head.len() {
            break;
        }
    }
    n == head.len() && head[0] == 0x16 && head[1] == 3 && head[5] == 1
}

/// Decodes a gateway conversation ([`is_gateway`]).
pub fn decode(trace: &Trace) -> Decoded {
    let mut d = Dec::new(trace);
    let report = match d.hop() {
        Some(channel) => d.inner(channel),
        None => d.hop_only(),
    };
    Decoded {
        report,
        labels: Vec::new(),
    }
}

/// One direction of one layer as a contiguous stream, with the time each byte arrived.
struct Flow {
    bytes: Vec<u8>,
    /// (end offset, exclusive; time of the event that delivered the bytes before it).
    marks: Vec<(usize, u64)>,
}

impl Flow {
    fn of(trace: &Trace, dir: Dir, layer: Layer) -> Flow {
        Flow::first(trace, dir, layer, usize::MAX)
    }

    /// The first `limit` bytes of one direction and layer.
    fn first(trace: &Trace, dir: Dir, layer: Layer, limit: usize) -> Flow {
        let mut f = Flow {
            bytes: Vec::new(),
            marks: Vec::new(),
        };
        for (t_us, bytes) in trace.data(dir, layer) {
            let take = bytes.len().min(limit - f.bytes.len());
            f.bytes.extend_from_slice(&bytes[..take]);
            f.marks.push((f.bytes.len(), t_us));
            if f.bytes.len() >= limit {
                break;
            }
        }
        f
    }

    /// When the byte at `off` arrived (the last event's time past the end).
    fn t_at(&self, off: usize) -> u64 {
        let i = self.marks.partition_point(|(end, _)| *end <= off);
        self.marks
            .get(i)
            .or(self.marks.last())
            .map(|m| m.1)
            .unwrap_or(0)
    }
}

/// A stage being built.
struct St {
    stage: Stage,
    start_us: u64,
    facts: Facts,
}

/// The channel once open: the packets after it, and when it opened.
struct Channel {
    target: String,
    port: u16,
    opened_us: u64,
    c2s: Vec<(Packet, u64)>,
    s2c: Vec<(Packet, u64)>,
}

struct Dec<'a> {
    trace: &'a Trace,
    /// The legacy transport's IN channel conversation, paired with this OUT channel's.
    in_tr: Option<&'a Trace>,
    stages: Vec<StageReport>,
    notes: Vec<String>,
    wire: [Flow; 2],
    target: Option<String>,
}

// The rules the live client ([`crate::gateway::client`]) judges the gateway's answers by, shared
// so that live and offline agree: the verdicts of a failing answer and the facts of an HTTP answer
// and of an MS-TSGU answer ([`answer_facts`]).

/// A failure the gateway caused.
pub(crate) fn fail(kind: FailureKind) -> Verdict {
    Verdict::Failed {
        kind,
        by: Side::Server,
    }
}

/// The failure an MS-TSGU answer's error HRESULT `code` gives its stage.
pub(crate) fn hresult_verdict(code: u32) -> Verdict {
    fail(FailureKind::GatewayError(crate::stage::GatewayHresult {
        code,
    }))
}

/// The failure an HTTP answer with an unwanted status gives its stage (with its `Location`).
pub(crate) fn http_status_verdict(h: &Head) -> Verdict {
    fail(FailureKind::HttpStatus {
        status: h.status,
        reason: h.reason.clone(),
        location: h.header("location").map(str::to_owned),
    })
}

fn stopped() -> Verdict {
    Verdict::Failed {
        kind: FailureKind::Stopped,
        by: Side::Client,
    }
}

/// What a packet is to a side waiting for the gateway's answer of type `ty`.
pub(crate) enum Awaited {
    /// The answer.
    Answer,
    /// Passed over while waiting: a keepalive, or a service message (with its note).
    Skip(Option<String>),
    /// The wait ends here: a CLOSE_CHANNEL (with its HRESULT) or a packet the gateway should not send.
    Fails(Verdict),
}

/// Whether `p` is the answer of type `ty` a side waits for ([`Awaited`]).
pub(crate) fn awaited(p: &Packet, ty: u16) -> Awaited {
    match (p, ty) {
        (Packet::HandshakeResponse { .. }, tsgu::ty::HANDSHAKE_RESPONSE)
        | (Packet::TunnelResponse { .. }, tsgu::ty::TUNNEL_RESPONSE)
        | (Packet::TunnelAuthResponse { .. }, tsgu::ty::TUNNEL_AUTH_RESPONSE)
        | (Packet::ChannelResponse { .. }, tsgu::ty::CHANNEL_RESPONSE) => Awaited::Answer,
        (Packet::Keepalive, _) => Awaited::Skip(None),
        (Packet::Other { ty: other, .. }, _) => Awaited::Skip(Some(format!(
            "the gateway sent a packet of type 0x{other:02X}"
        ))),
        (Packet::CloseChannel { status }, _) => Awaited::Fails(if *status != 0 {
            hresult_verdict(*status)
        } else {
            fail(FailureKind::Closed {
                tls_close_notify: false,
            })
        }),
        (other, _) => Awaited::Fails(fail(FailureKind::ProtocolError {
            what: format!("unexpected {} packet", other.name()),
            offset: None,
        })),
    }
}

/// Records the facts of an HTTP answer on `gw_http` in `to`: status, reason, the `Server` header,
/// a redirect's `Location`, the authentication schemes offered and the content type.
pub(crate) fn http_facts(h: &Head, to: &mut Facts) {
    let mut fact = |k: &str, v| {
        to.insert(k.to_owned(), v);
    };
    fact("status", json!(h.status));
    fact("reason", json!(h.reason));
    if let Some(s) = h.header("server") {
        fact("server_header", json!(s));
    }
    if let Some(l) = h.header("location") {
        fact("location", json!(l));
    }
    let sch = http::schemes(h);
    if !sch.is_empty() {
        fact("www_authenticate", json!(sch));
    }
    if let Some(c) = h.header("content-type") {
        fact("content_type", json!(c));
    }
}

/// Records the facts of the gateway's MS-TSGU answer `p` in `to` ([`answer_facts`]); its failure
/// when it carries an error HRESULT.
pub(crate) fn record_answer(p: &Packet, to: &mut Facts) -> Option<Verdict> {
    let (facts, code) = answer_facts(p);
    to.extend(facts.into_iter().map(|(k, v)| (k.to_owned(), v)));
    (code != 0).then(|| hresult_verdict(code))
}

impl St {
    fn new(stage: Stage, start_us: u64) -> St {
        St {
            stage,
            start_us,
            facts: Facts::new(),
        }
    }
    fn fact(&mut self, k: &str, v: serde_json::Value) {
        self.facts.insert(k.to_owned(), v);
    }
}

/// The facts an MS-TSGU answer gives its stage (`gw_tunnel`: handshake, tunnel, tunnel
/// authorization; `gw_channel`: channel), live ([`crate::gateway::client`]) and offline alike, and
/// its HRESULT (0: success; else `hresult`, `hresult_name` and the tunnel `step` are among the facts).
pub fn answer_facts(p: &Packet) -> (Vec<(&'static str, serde_json::Value)>, u32) {
    let mut f = Vec::new();
    let (code, step) = match p {
        Packet::HandshakeResponse {
            error_code,
            server_version,
            ..
        } => {
            f.push(("handshake_server_version", json!(server_version)));
            (*error_code, Some("handshake"))
        }
        Packet::TunnelResponse {
            server_version,
            status_code,
            tunnel_id,
            caps,
            consent,
        } => {
            f.push(("server_version", json!(server_version)));
            if let Some(id) = tunnel_id {
                f.push(("tunnel_id", json!(id)));
            }
            if let Some(c) = caps {
                f.push(("capabilities", json!(tsgu::caps_names(*c))));
            }
            if let Some(m) = consent {
                f.push(("consent_message_bytes", json!(m.len())));
            }
            (*status_code, Some("tunnel_create"))
        }
        Packet::TunnelAuthResponse {
            error_code,
            redir_flags,
            idle_timeout_min,
        } => {
            let mut policy = serde_json::Map::new();
            if let Some(fl) = redir_flags {
                policy.insert("redirection_flags".into(), json!(format!("0x{fl:08X}")));
            }
            if let Some(i) = idle_timeout_min {
                policy.insert("idle_timeout_min".into(), json!(i));
            }
            f.push(("tunnel_policy", serde_json::Value::Object(policy)));
            (*error_code, Some("tunnel_auth"))
        }
        Packet::ChannelResponse {
            error_code,
            channel_id,
        } => {
            if let Some(id) = channel_id {
                f.push(("channel_id", json!(id)));
            }
            (*error_code, None)
        }
        _ => (0, None),
    };
    if code != 0 {
        f.push(("hresult", json!(format!("0x{code:08X}"))));
        f.push(("hresult_name", json!(Hresult(code).label())));
        if let Some(s) = step {
            f.push(("step", json!(s)));
        }
    }
    (f, code)
}

/// An HTTP request and the answer to it (when one came), with their times.
struct Exchange {
    req: Head,
    req_t: u64,
    resp: Option<(Head, u64)>,
}

/// The result of walking the HTTP heads: the exchanges, where the WebSocket starts in each inner
/// stream (after a 101), or why the answer was unreadable.
struct Heads {
    ex: Vec<Exchange>,
    /// Where the tunnel's bytes start in each inner stream: after a 101 (WebSocket), or after the
    /// `200 OK` to `RDG_OUT_DATA` (the legacy OUT channel: its seed, then raw packets).
    ws_from: Option<(usize, usize)>,
    /// Where the client's stream is after the last request head read.
    c_end: usize,
    bad_answer: Option<(HeadError, u64)>,
}

fn read_heads(c: &Flow, s: &Flow) -> Heads {
    let mut out = Heads {
        ex: Vec::new(),
        ws_from: None,
        c_end: 0,
        bad_answer: None,
    };
    let (mut co, mut so) = (0usize, 0usize);
    while out.ex.len() < MAX_EXCHANGES {
        let Ok(Some((req, n))) = http::parse_head(&c.bytes[co..], true) else {
            break;
        };
        let req_t = c.t_at(co + n - 1);
        co += n;
        let resp = match http::parse_head(&s.bytes[so..], false) {
            Ok(Some((h, n))) => {
                let t = s.t_at(so + n - 1);
                so += n;
                Some((h, t))
            }
            Ok(None) => None,
            Err(e) => {
                out.bad_answer = Some((e, s.t_at(so)));
                None
            }
        };
        // The legacy OUT channel's 200 has no length: its body is the rest of the stream.
        let upgraded = resp.as_ref().is_some_and(|(h, _)| {
            h.status == 101 || (h.status == 200 && req.method.eq_ignore_ascii_case("RDG_OUT_DATA"))
        });
        out.c_end = co;
        if let Some((h, _)) = &resp {
            if !upgraded {
                let body = h.content_length().unwrap_or(0);
                so += body.min(s.bytes.len() - so);
            }
        }
        let done = resp.is_none();
        out.ex.push(Exchange { req, req_t, resp });
        if upgraded {
            out.ws_from = Some((co, so));
            break;
        }
        if done {
            break;
        }
    }
    out
}

/// MS-TSGU packets of one direction of the tunnel (WebSocket messages, the legacy IN channel's
/// chunks or the legacy OUT channel's raw stream), and how that stream ended.
#[derive(Default)]
struct TunnelPackets {
    packets: Vec<(Packet, u64)>,
    /// A close frame (its status code) and when.
    close: Option<(Option<u16>, u64)>,
    /// Malformed framing or packet, and when.
    error: Option<(String, u64)>,
}

fn ws_packets(f: &Flow, from: usize) -> TunnelPackets {
    let mut out = TunnelPackets {
        packets: Vec::new(),
        close: None,
        error: None,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut off = from;
    while off < f.bytes.len() {
        let mut cur = Cursor::new(&f.bytes[off..]);
        let (h, len) = match FrameHeader::parse(&mut cur) {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => {
                out.error = Some((format!("websocket: {e}"), f.t_at(off)));
                break;
            }
        };
        let hl = cur.position() as usize;
        let avail = f.bytes.len() - off - hl;
        if len > avail as u64 {
            break;
        }
        let len = len as usize;
        let end = off + hl + len;
        let t = f.t_at(end.saturating_sub(1));
        let mut payload = f.bytes[off + hl..end].to_vec();
        // RFC 6455 5.3 unmasking: tungstenite keeps its mask function private, and it is one XOR.
        if let Some(m) = h.mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        off = end;
        match h.opcode {
            OpCode::Data(Data::Binary) | OpCode::Data(Data::Continue) => {
                if buf.len() + payload.len() > MAX_WS_BUFFER {
                    out.error = Some(("too many bytes buffered".into(), t));
                    break;
                }
                buf.extend_from_slice(&payload);
                if !take_packets(&mut buf, t, &mut out) {
                    return out;
                }
            }
            OpCode::Control(Control::Close) => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                out.close = Some((code, t));
                break;
            }
            _ => {}
        }
    }
    out
}

/// Moves the complete MS-TSGU packets at the front of `buf` to `out`, stamped `t`; false (with
/// `out.error` set) at a malformed one.
fn take_packets(buf: &mut Vec<u8>, t: u64, out: &mut TunnelPackets) -> bool {
    loop {
        match tsgu::packet_len(buf) {
            Err(e) => {
                out.error = Some((format!("malformed packet: {e}"), t));
                return false;
            }
            Ok(Some(n)) if buf.len() >= n => {
                match tsgu::decode(&buf[..n]) {
                    Ok(p) => out.packets.push((p, t)),
                    Err(e) => {
                        out.error = Some((format!("malformed packet: {e}"), t));
                        return false;
                    }
                }
                buf.drain(..n);
            }
            _ => return true,
        }
    }
}

/// The legacy OUT channel's packets: raw, back to back from `from` (after the seed) on.
fn raw_packets(f: &Flow, from: usize) -> TunnelPackets {
    legacy_packets(f, from, None)
}

/// The legacy IN channel's packets: one per chunk of the chunked request body starting at `from`
/// (decoded by the transport's own [`crate::gateway::legacy::Dechunker`]).
fn chunked_packets(f: &Flow, from: usize) -> TunnelPackets {
    legacy_packets(f, from, Some(crate::gateway::legacy::Dechunker::default()))
}

fn legacy_packets(
    f: &Flow,
    from: usize,
    mut dechunk: Option<crate::gateway::legacy::Dechunker>,
) -> TunnelPackets {
    let mut out = TunnelPackets::default();
    let (mut pending, mut buf) = (Vec::new(), Vec::new());
    let mut start = from;
    // Event by event, so that each packet carries the time of the bytes that completed it.
    for &(end, t) in &f.marks {
        if end <= start {
            continue;
        }
        let bytes = &f.bytes[start..end];
        start = end;
        match dechunk.as_mut() {
            Some(d) => {
                pending.extend_from_slice(bytes);
                if let Err(e) = d.feed(&mut pending, &mut buf) {
                    out.error = Some((format!("chunked body: {e}"), t));
                    break;
                }
            }
            None => buf.extend_from_slice(bytes),
        }
        if buf.len() + pending.len() > MAX_WS_BUFFER {
            out.error = Some(("too many bytes buffered".into(), t));
            break;
        }
        if !take_packets(&mut buf, t, &mut out) {
            break;
        }
        if dechunk.as_ref().is_some_and(|d| d.ended()) {
            // The last chunk: the client ended its side of the tunnel.
            out.close = Some((None, t));
            break;
        }
    }
    out
}

impl<'a> Dec<'a> {
    fn new(trace: &'a Trace) -> Self {
        Dec {
            trace,
            in_tr: trace.legacy_in.as_deref(),
            stages: Vec::new(),
            notes: Vec::new(),
            wire: [
                Flow::of(trace, Dir::C2S, Layer::Wire),
                Flow::of(trace, Dir::S2C, Layer::Wire),
            ],
            target: None,
        }
    }

    /// Wire bytes of each direction that arrived in `(from, to]`.
    fn bytes_between(&self, from: u64, to: u64) -> (u64, u64) {
        let mut n = [0u64; 2];
        for e in self.events() {
            if let EventKind::Data {
                dir,
                layer: Layer::Wire,
                bytes,
            } = &e.kind
            {
                if e.t_us > from && e.t_us <= to {
                    n[usize::from(*dir == Dir::S2C)] += bytes.len() as u64;
                }
            }
        }
        (n[0], n[1])
    }

    fn end(&mut self, st: St, end_us: u64, verdict: Verdict) {
        let end_us = end_us.max(st.start_us);
        let (c2s, s2c) = self.bytes_between(st.start_us, end_us);
        self.stages.push(StageReport {
            stage: st.stage,
            verdict,
            start_us: st.start_us,
            duration_ms: (end_us - st.start_us) as f64 / 1000.0,
            bytes_c2s: c2s,
            bytes_s2c: s2c,
            frames: Vec::new(),
            facts: st.facts,
        });
    }

    fn last_t(&self) -> u64 {
        self.events().map(|e| e.t_us).max().unwrap_or(0)
    }

    /// The events of the conversation and, for the legacy transport, its IN channel's (each in
    /// time order; not merged).
    fn events(&self) -> impl Iterator<Item = &'a crate::trace::Event> {
        let a: &'a Trace = self.trace;
        let b: Option<&'a Trace> = self.in_tr;
        a.events
            .iter()
            .chain(b.into_iter().flat_map(|t| t.events.iter()))
    }

    /// How a wait for the gateway that began at `since` ended (the event that ended it, and when).
    fn end_verdict(&self, since: u64) -> (Verdict, u64) {
        let found = self.end_verdict_in(self.trace, since);
        match (
            found,
            self.in_tr.and_then(|t| self.end_verdict_in(t, since)),
        ) {
            (Some(a), Some(b)) => {
                if b.1 < a.1 {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => (
                Verdict::Failed {
                    kind: FailureKind::CaptureEnded,
                    by: Side::Network,
                },
                self.last_t(),
            ),
        }
    }

    /// [`Self::end_verdict`] in one conversation's events.
    fn end_verdict_in(&self, tr: &Trace, since: u64) -> Option<(Verdict, u64)> {
        for e in &tr.events {
            if e.t_us < since {
                continue;
            }
            let v = match &e.kind {
                EventKind::Rst { dir: Dir::S2C } => fail(FailureKind::Reset),
                EventKind::Fin { dir: Dir::S2C } => fail(FailureKind::Closed {
                    tls_close_notify: false,
                }),
                EventKind::Timeout { after_ms, .. } => fail(FailureKind::TimedOut {
                    waiting_for: Side::Server,
                    after_ms: *after_ms,
                }),
                EventKind::Fin { dir: Dir::C2S } | EventKind::Rst { dir: Dir::C2S } => {
                    let waited = e.t_us.saturating_sub(since);
                    if waited >= CLIENT_WAIT_MIN_US {
                        fail(FailureKind::TimedOut {
                            waiting_for: Side::Server,
                            after_ms: waited / 1000,
                        })
                    } else {
                        stopped()
                    }
                }
                EventKind::CaptureEnd => Verdict::Failed {
                    kind: FailureKind::CaptureEnded,
                    by: Side::Network,
                },
                _ => continue,
            };
            return Some((v, e.t_us));
        }
        None
    }

    /// The gateway stages; the open channel when they all passed and the client used it.
    fn hop(&mut self) -> Option<Channel> {
        let tr = self.trace;
        let t0 = tr
            .connect_start_us
            .unwrap_or_else(|| tr.events.first().map(|e| e.t_us).unwrap_or(0));
        // --- gw_tcp ---
        let mut st = St::new(Stage::GwTcp, t0);
        st.fact("gateway", json!(tr.server.to_string()));
        st.fact("address", json!(tr.server.to_string()));
        let mut connected_at = None;
        for e in &tr.events {
            match &e.kind {
                EventKind::Connected => {
                    connected_at = Some(e.t_us);
                    break;
                }
                EventKind::ConnectFailed(f) => {
                    use crate::trace::ConnectFailure as C;
                    let v = match f {
                        C::Refused => fail(FailureKind::Refused),
                        C::TimedOut { after_ms } => fail(FailureKind::TimedOut {
                            waiting_for: Side::Server,
                            after_ms: *after_ms,
                        }),
                        C::Unreachable { detail } => fail(FailureKind::Unreachable {
                            detail: detail.clone(),
                        }),
                    };
                    self.end(st, e.t_us, v);
                    return None;
                }
                EventKind::Data { .. } => break,
                _ => {}
            }
        }
        let t_conn = connected_at.unwrap_or(t0);
        if connected_at.is_none() {
            self.notes
                .push("capture starts mid-connection: tcp handshake not seen".into());
        }
        self.end(st, t_conn, Verdict::Ok);

        // --- gw_tls ---
        let mut st = St::new(Stage::GwTls, t_conn);
        let tls_end = match self.tls_stage(&mut st) {
            Ok(t) => t,
            Err((v, t)) => {
                self.end(st, t, v);
                return None;
            }
        };
        let c = Flow::of(tr, Dir::C2S, Layer::Inner);
        let s = Flow::of(tr, Dir::S2C, Layer::Inner);
        if c.bytes.is_empty() && self.has_secrets() {
            // Secrets but no request: the client ended the hop after the handshake.
            self.end(st, tls_end, Verdict::Ok);
            match self.end_verdict(tls_end) {
                (
                    Verdict::Failed {
                        kind: FailureKind::Stopped,
                        ..
                    },
                    _,
                ) => self.stop_last(tls_end),
                (v, t) => {
                    let mut h = St::new(Stage::GwHttp, tls_end);
                    h.fact("waiting_for", json!("the client's request"));
                    self.end(h, t, v);
                }
            }
            return None;
        }
        if c.bytes.is_empty() {
            // No cleartext: the rest of the hop is encrypted (no secrets for it in the capture).
            st.fact("encrypted", json!(true));
            let (ec, es) = self.bytes_between(tls_end, self.last_t());
            st.fact("encrypted_bytes_c2s", json!(ec));
            st.fact("encrypted_bytes_s2c", json!(es));
            self.notes.push("the HTTPS of the gateway hop is encrypted and the capture has no TLS secrets for it: gw_http, gw_auth, gw_tunnel, gw_channel and the inner RDP are not visible (analyze --keylog FILE, or a capture written by rdprobe probe --gateway)".into());
            self.end(st, tls_end, Verdict::Ok);
            return None;
        }
        self.end(st, tls_end, Verdict::Ok);

        // --- gw_http, gw_auth ---
        let heads = read_heads(&c, &s);
        let Some(first) = heads.ex.first() else {
            let mut st = St::new(Stage::GwHttp, tls_end);
            st.fact("transport", json!("unknown"));
            let v = fail(FailureKind::ProtocolError {
                what: "the client's first bytes inside TLS are not an HTTP request".into(),
                offset: Some(0),
            });
            self.end(st, c.t_at(0), v);
            return None;
        };
        let mut st = St::new(Stage::GwHttp, tls_end);
        let websocket = first
            .req
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        st.fact(
            "transport",
            json!(if websocket { "websocket" } else { "http" }),
        );
        st.fact("method", json!(first.req.method));
        let Some((resp0, t_resp0)) = &first.resp else {
            let (v, t) = self.no_answer(&heads, first.req_t);
            self.end(st, t, v);
            return None;
        };
        http_facts(resp0, &mut st.facts);
        // The legacy transport's IN channel without its OUT channel (a capture taken where only
        // one of them passed, e.g. two gateway nodes): the gateway's answers are not here.
        let in_alone = first.req.method.eq_ignore_ascii_case("RDG_IN_DATA");
        if in_alone {
            self.notes.push("this is the legacy transport's IN channel (RDG_IN_DATA) alone: its OUT channel (RDG_OUT_DATA, with the gateway's answers) is not in the capture; a gateway farm may have taken it on another node".into());
        }
        let (mut a, upgraded_at) = match resp0.status {
            // 101: the WebSocket; 200 to RDG_OUT_DATA: the legacy transport's OUT channel.
            101 | 200 if heads.ws_from.is_some() || in_alone => {
                self.end(st, *t_resp0, Verdict::Ok);
                let mut a = St::new(Stage::GwAuth, *t_resp0);
                a.fact("scheme", json!("none"));
                a.fact("status", json!(resp0.status));
                (a, *t_resp0)
            }
            401 => {
                self.end(st, *t_resp0, Verdict::Ok);
                let offered = http::schemes(resp0);
                let mut a = St::new(Stage::GwAuth, *t_resp0);
                a.fact("www_authenticate", json!(offered));
                match self.auth(&heads, &mut a) {
                    Ok(t) => (a, t),
                    Err((v, t)) => {
                        self.end(a, t, v);
                        return None;
                    }
                }
            }
            _ => {
                let v = http_status_verdict(resp0);
                self.end(st, *t_resp0, v);
                return None;
            }
        };
        let (Some((co, so)), Some(last)) = (heads.ws_from, heads.ex.last()) else {
            self.end(a, upgraded_at, Verdict::Ok);
            return None;
        };
        let legacy = last.resp.as_ref().filter(|(h, _)| h.status == 200);
        let (cw, sw) = if let Some((h200, _)) = legacy {
            match self.legacy(&s, so, &mut a, h200, upgraded_at) {
                Ok((cw, sw, ready)) => {
                    self.end(a, ready, Verdict::Ok);
                    (cw, sw)
                }
                Err((v, t)) => {
                    self.end(a, t, v);
                    return None;
                }
            }
        } else {
            if let (Some(key), Some((h, _))) = (last.req.header("sec-websocket-key"), &last.resp) {
                if h.header("sec-websocket-accept") != Some(http::websocket_accept(key).as_str()) {
                    self.notes.push(
                        "the gateway's Sec-WebSocket-Accept does not match the key sent (RFC 6455 4.2.2)"
                            .into(),
                    );
                }
            }
            a.fact("transport", json!("websocket"));
            self.end(a, upgraded_at, Verdict::Ok);
            (ws_packets(&c, co), ws_packets(&s, so))
        };
        if cw.packets.is_empty() {
            self.stop_last(upgraded_at);
            return None;
        }
        self.tunnel_and_channel(cw, sw)
    }

    /// The legacy transport after the OUT channel's `200 OK` (`out` from `so` on: the seed, then the
    /// gateway's raw packets): the IN channel as the live probe opens it (RDG_IN_DATA, its
    /// authentication, then the chunked request whose chunks are the client's packets). Returns
    /// both directions' packets and when the IN channel was ready, or gw_auth's failure as the live
    /// probe judges it.
    #[allow(clippy::type_complexity)]
    fn legacy(
        &mut self,
        out: &Flow,
        so: usize,
        a: &mut St,
        h200: &Head,
        since: u64,
    ) -> Result<(TunnelPackets, TunnelPackets, u64), (Verdict, u64)> {
        let seed = crate::gateway::legacy::SEED.len();
        let refused = || {
            fail(FailureKind::HttpStatus {
                status: 200,
                reason: h200.reason.clone(),
                location: None,
            })
        };
        let body = out.bytes.len().saturating_sub(so);
        if body < seed {
            // No seed: a 200 to a WebSocket upgrade is a refused upgrade (live: the same verdict).
            a.fact("seed", json!(format!("closed after {body} seed bytes")));
            return Err((refused(), out.t_at(so)));
        }
        a.fact("seed_bytes", json!(seed));
        let Some(in_tr) = self.in_tr else {
            self.notes.push("the gateway answered RDG_OUT_DATA with the legacy transport's OUT channel, but the capture holds no IN channel (RDG_IN_DATA with the same RDG-Connection-Id, or from the same client address)".into());
            return Err((refused(), since));
        };
        a.fact("transport", json!("http"));
        a.fact("out_address", json!(self.trace.server.to_string()));
        a.fact("in_address", json!(in_tr.server.to_string()));
        a.fact("in_local", json!(in_tr.client.to_string()));
        let ic = Flow::of(in_tr, Dir::C2S, Layer::Inner);
        let is = Flow::of(in_tr, Dir::S2C, Layer::Inner);
        if ic.bytes.is_empty() {
            self.notes.push("the legacy transport's IN channel is encrypted and the capture has no TLS secrets for it: the client's packets (gw_tunnel on) are not visible".into());
            return Err((
                Verdict::Failed {
                    kind: FailureKind::CaptureEnded,
                    by: Side::Network,
                },
                since,
            ));
        }
        let ih = read_heads(&ic, &is);
        if let Some((h, _)) = ih.ex.first().and_then(|x| x.resp.as_ref()) {
            a.fact("in_first_status", json!(h.status));
        }
        let chunked = ih.ex.iter().position(|x| {
            x.req
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        });
        let accepted = |k: usize| {
            k > 0
                && ih.ex[k - 1]
                    .resp
                    .as_ref()
                    .is_some_and(|(h, _)| h.status == 200)
        };
        if let Some(k) = chunked.filter(|k| accepted(*k)) {
            a.fact("in_status", json!(200));
            let ready = ih.ex[k].req_t;
            let cw = chunked_packets(&ic, ih.c_end);
            let sw = raw_packets(out, so + seed);
            return Ok((cw, sw, ready));
        }
        a.fact("failed_channel", json!("in"));
        // The IN channel's last answer, or how the wait for one ended.
        match ih.ex.iter().rev().find_map(|x| x.resp.as_ref()) {
            Some((h, t)) if h.status != 200 => {
                a.fact("in_status", json!(h.status));
                Err((http_status_verdict(h), *t))
            }
            _ => {
                let from = ih.ex.last().map(|x| x.req_t).unwrap_or(since);
                Err(self.end_verdict_in(in_tr, from).unwrap_or((
                    Verdict::Failed {
                        kind: FailureKind::CaptureEnded,
                        by: Side::Network,
                    },
                    self.last_t(),
                )))
            }
        }
    }

    /// Whether the key log holds this session's secrets (by the ClientHello's random).
    fn has_secrets(&self) -> bool {
        let c = &self.wire[0].bytes;
        let Some(cr) = c.get(11..43).and_then(|r| <[u8; 32]>::try_from(r).ok()) else {
            return false;
        };
        !KeyLog::parse(&self.trace.keylog.join("\n"))
            .lines_for(&cr)
            .is_empty()
    }

    /// The verdict when a request got no HTTP answer.
    fn no_answer(&self, heads: &Heads, since: u64) -> (Verdict, u64) {
        match &heads.bad_answer {
            Some((HeadError::NotHttp(_) | HeadError::TooLarge, t)) => {
                let e = heads.bad_answer.as_ref().map(|(e, _)| e.to_string());
                (
                    fail(FailureKind::ProtocolError {
                        what: format!(
                            "the gateway's answer is not HTTP: {}",
                            e.unwrap_or_default()
                        ),
                        offset: None,
                    }),
                    *t,
                )
            }
            _ => self.end_verdict(since),
        }
    }

    /// The client stopped on purpose after the last stage that passed (`--stop-after`).
    fn stop_last(&mut self, _at: u64) {
        if let Some(last) = self.stages.last() {
            let at = last.stage;
            self.notes.push(format!("stopped after {at} by request"));
        }
    }

    /// gw_tls from the handshake on the wire (and the session the reader decrypted): the time the
    /// handshake completed, or its failure.
    fn tls_stage(&mut self, st: &mut St) -> Result<u64, (Verdict, u64)> {
        use super::tls::{parse_alert, split_records, Handshake, HandshakeReassembler};
        let session = self.trace.events.iter().find_map(|e| match &e.kind {
            EventKind::TlsSession(i) => Some((i.clone(), e.t_us)),
            _ => None,
        });
        let mut sni = None;
        {
            let c = &self.wire[0];
            let (recs, _) = split_records(&c.bytes);
            let mut re = HandshakeReassembler::new();
            for r in recs.iter().take_while(|r| r.content_type == 22) {
                for h in re.push(r.fragment(&c.bytes)).0 {
                    if let Handshake::ClientHello { sni: s, .. } = h {
                        sni = s;
                    }
                }
            }
        }
        let s = &self.wire[1];
        let (recs, _) = split_records(&s.bytes);
        let mut re = HandshakeReassembler::new();
        let mut version = None;
        let mut suite = None;
        let mut chain: Vec<Vec<u8>> = Vec::new();
        let mut s_app = None;
        for r in &recs {
            match r.content_type {
                22 if s_app.is_none() => {
                    for h in re.push(r.fragment(&s.bytes)).0 {
                        match h {
                            Handshake::ServerHello {
                                version: v,
                                selected_version,
                                cipher_suite,
                            } => {
                                version = Some(selected_version.unwrap_or(v));
                                suite = Some(cipher_suite);
                            }
                            Handshake::Certificate { chain: c } => chain = c,
                            _ => {}
                        }
                    }
                }
                21 if s_app.is_none() => {
                    if let Some((_, _, code)) = parse_alert(r.fragment(&s.bytes)) {
                        let t = s.t_at(r.offset);
                        return Err((fail(FailureKind::TlsAlert(TlsAlert::fatal(code))), t));
                    }
                }
                23 if s_app.is_none() => s_app = Some(s.t_at(r.offset + r.len + 4)),
                _ => {}
            }
        }
        let c = &self.wire[0];
        let (crecs, _) = split_records(&c.bytes);
        let c_app = crecs
            .iter()
            .find(|r| r.content_type == 23)
            .map(|r| c.t_at(r.offset + r.len + 4));
        let done = match (&session, s_app, c_app) {
            (Some((_, t)), _, _) => Some(*t),
            (None, Some(ts), Some(tc)) => Some(ts.max(tc)),
            _ => None,
        };
        let (info, _) = session.clone().unzip();
        let version_name = info
            .as_ref()
            .map(|i| i.version.clone())
            .filter(|v| !v.is_empty())
            .or_else(|| version.map(super::tls::version_name));
        if let Some(v) = version_name {
            st.fact("version", json!(v));
        }
        let suite_name = info
            .as_ref()
            .map(|i| i.cipher_suite.clone())
            .filter(|v| !v.is_empty())
            .or_else(|| suite.map(crate::capture::tlsdecrypt::suite_name));
        if let Some(c) = suite_name {
            st.fact("cipher_suite", json!(c));
        }
        if let Some(i) = &info {
            if !i.certificates.is_empty() {
                chain = i.certificates.clone();
            }
        }
        if let Some(leaf) = chain.first() {
            let now = (done.unwrap_or(st.start_us) / 1_000_000) as i64;
            if let Ok(f) = super::tls::cert_facts(leaf, now) {
                st.fact("cert_subject", json!(f.subject));
                st.fact("cert_issuer", json!(f.issuer));
                st.fact("cert_not_after", json!(f.not_after));
                st.fact("cert_expired", json!(f.expired));
                st.fact("cert_self_signed", json!(f.self_signed));
            }
            if let Some(name) = &sni {
                st.fact(
                    "cert_name_matches",
                    json!(super::tls::check_name(leaf, name)),
                );
            }
        }
        match done {
            Some(t) => Ok(t),
            None => {
                let since = c.marks.first().map(|m| m.1).unwrap_or(st.start_us);
                let (v, t) = self.end_verdict(since);
                let v = match v {
                    Verdict::Failed {
                        kind: FailureKind::Closed { .. },
                        by,
                    } => Verdict::Failed {
                        kind: FailureKind::TlsFailure {
                            detail: "the gateway closed the connection during the TLS handshake"
                                .into(),
                        },
                        by,
                    },
                    v => v,
                };
                Err((v, t))
            }
        }
    }

    /// gw_auth after a 401: the scheme the client chose, the rounds, the outcome. Returns when the
    /// upgrade (101) came, or the failure.
    fn auth(&mut self, heads: &Heads, a: &mut St) -> Result<u64, (Verdict, u64)> {
        // The request that starts authentication: the one after the first 401 (rdprobe, mstsc),
        // or the first itself when it already carries the NTLM NEGOTIATE (FreeRDP), the 401 then
        // being the CHALLENGE.
        let k = usize::from(heads.ex[0].req.header("authorization").is_none());
        let Some(second) = heads.ex.get(k) else {
            // The client did not try: no credentials, no scheme it speaks, or a stop on purpose.
            a.fact("scheme", json!("none"));
            let t0 = heads.ex[0].resp.as_ref().map(|r| r.1).unwrap_or(0);
            let (v, t) = self.end_verdict(t0);
            return Err(match v {
                Verdict::Failed {
                    kind: FailureKind::Stopped,
                    ..
                } => (
                    fail(FailureKind::HttpStatus {
                        status: 401,
                        reason: "Unauthorized (the client did not authenticate)".into(),
                        location: None,
                    }),
                    t,
                ),
                v => (v, t),
            });
        };
        let authz = second.req.header("authorization").unwrap_or("");
        let scheme = authz.split_whitespace().next().unwrap_or("").to_owned();
        let token = http::token_of(authz, &scheme).and_then(http::unb64);
        let mut last = second;
        if scheme.eq_ignore_ascii_case("Basic") {
            if let Some(t) = token {
                // user[:password]: only the name before the colon is read; the rest is dropped.
                let who = t.split(|b| *b == b':').next().unwrap_or(&[]);
                let who = String::from_utf8_lossy(who).into_owned();
                match who.split_once('\\') {
                    Some((d, u)) => {
                        a.fact("user", json!(u));
                        a.fact("domain", json!(d));
                    }
                    None => a.fact("user", json!(who)),
                }
            }
            a.fact("scheme", json!("Basic"));
            a.fact("credentials_sent", json!(true));
        } else {
            let scheme_name = if scheme.eq_ignore_ascii_case("Negotiate") {
                "Negotiate"
            } else {
                "NTLM"
            };
            let Some((h1, t1)) = &second.resp else {
                a.fact("scheme", json!(scheme_name));
                let (v, t) = self.no_answer(heads, second.req_t);
                return Err((v, t));
            };
            let challenge = h1
                .headers_named("www-authenticate")
                .find_map(|v| http::token_of(v, &scheme))
                .filter(|t| !t.is_empty())
                .and_then(http::unb64);
            let Some(_challenge) = challenge else {
                a.fact("scheme", json!(scheme_name));
                a.fact("status", json!(h1.status));
                return Err((
                    if h1.status == 101 {
                        fail(FailureKind::ProtocolError {
                            what: "upgraded after the NTLM NEGOTIATE alone".into(),
                            offset: None,
                        })
                    } else {
                        http_status_verdict(h1)
                    },
                    *t1,
                ));
            };
            let Some(third) = heads.ex.get(k + 1) else {
                a.fact("scheme", json!(scheme_name));
                let (v, t) = self.end_verdict(*t1);
                return Err((
                    match v {
                        Verdict::Failed {
                            kind: FailureKind::Stopped,
                            ..
                        } => fail(FailureKind::AuthFailure(crate::stage::AuthFailure {
                            ntstatus: None,
                            detail: "ntlm: the client did not answer the gateway's CHALLENGE"
                                .into(),
                        })),
                        v => v,
                    },
                    t,
                ));
            };
            let auth_token = third
                .req
                .header("authorization")
                .and_then(|v| http::token_of(v, &scheme))
                .and_then(http::unb64);
            if let Some(f) = auth_token.as_deref().and_then(super::credssp::parse_ntlm) {
                if let Some(u) = f.user.filter(|u| !u.is_empty()) {
                    a.fact("user", json!(u));
                }
                if let Some(d) = f.domain.filter(|d| !d.is_empty()) {
                    a.fact("domain", json!(d));
                }
            }
            a.fact("scheme", json!(scheme_name));
            a.fact("authenticate_sent", json!(true));
            a.fact("credentials_sent", json!(true));
            last = third;
        }
        let Some((h, t)) = &last.resp else {
            let (v, t) = self.no_answer(heads, last.req_t);
            return Err((v, t));
        };
        a.fact("status", json!(h.status));
        if let Some(sv) = h.header("server") {
            a.fact("server_header", json!(sv));
        }
        if h.status == 101
            || (h.status == 200
                && (last.req.method.eq_ignore_ascii_case("RDG_OUT_DATA")
                    || last.req.method.eq_ignore_ascii_case("RDG_IN_DATA")))
        {
            return Ok(*t);
        }
        let sch = http::schemes(h);
        if !sch.is_empty() {
            a.fact("www_authenticate", json!(sch));
        }
        if let Some(l) = h.header("location") {
            a.fact("location", json!(l));
        }
        Err((http_status_verdict(h), *t))
    }

    /// gw_tunnel and gw_channel from the packets of both directions.
    fn tunnel_and_channel(&mut self, cw: TunnelPackets, sw: TunnelPackets) -> Option<Channel> {
        let mut ci = 0usize;
        let mut si = 0usize;
        let start = cw.packets.first().map(|p| p.1).unwrap_or(0);
        let mut st = St::new(Stage::GwTunnel, start);
        // The client's request of each step, then the gateway's answer.
        macro_rules! request {
            ($pat:pat) => {{
                match cw.packets.get(ci) {
                    Some((p @ $pat, t)) => {
                        ci += 1;
                        Some((p.clone(), *t))
                    }
                    _ => None,
                }
            }};
        }
        macro_rules! answer {
            ($st:expr, $ty:expr, $name:expr, $since:expr) => {
                match self.expect(&sw, &mut si, $ty, $since) {
                    Ok(p) => p,
                    Err((v, t)) => {
                        $st.fact("waiting_for", json!($name));
                        self.end($st, t, v);
                        return None;
                    }
                }
            };
        }
        let Some((_, t_req)) = request!(Packet::HandshakeRequest { .. }) else {
            self.stop_last(start);
            return None;
        };
        let (p, t) = answer!(
            st,
            tsgu::ty::HANDSHAKE_RESPONSE,
            "HANDSHAKE_RESPONSE",
            t_req
        );
        if let Some(v) = record_answer(&p, &mut st.facts) {
            self.end(st, t, v);
            return None;
        }
        let Some((_, t_req)) = request!(Packet::TunnelCreate { .. }) else {
            return self.stop_mid(st);
        };
        let (p, t) = answer!(st, tsgu::ty::TUNNEL_RESPONSE, "TUNNEL_RESPONSE", t_req);
        if let Some(v) = record_answer(&p, &mut st.facts) {
            self.end(st, t, v);
            return None;
        }
        let Some((_, t_req)) = request!(Packet::TunnelAuth { .. }) else {
            return self.stop_mid(st);
        };
        let (p, t_tunnel) = answer!(
            st,
            tsgu::ty::TUNNEL_AUTH_RESPONSE,
            "TUNNEL_AUTH_RESPONSE",
            t_req
        );
        if let Some(v) = record_answer(&p, &mut st.facts) {
            self.end(st, t_tunnel, v);
            return None;
        }
        self.end(st, t_tunnel, Verdict::Ok);

        // --- gw_channel ---
        let Some((
            Packet::ChannelCreate {
                resources, port, ..
            },
            t_req,
        )) = request!(Packet::ChannelCreate { .. })
        else {
            self.stop_last(t_tunnel);
            return None;
        };
        let target = resources.first().cloned().unwrap_or_default();
        self.target = Some(format!("{target}:{port}"));
        let mut st = St::new(Stage::GwChannel, t_req);
        st.fact("target", json!(target));
        st.fact("port", json!(port));
        st.fact(
            "name_form",
            json!(crate::gateway::client::name_form(&target)),
        );
        let (p, t_open) = answer!(st, tsgu::ty::CHANNEL_RESPONSE, "CHANNEL_RESPONSE", t_req);
        if let Some(v) = record_answer(&p, &mut st.facts) {
            self.end(st, t_open, v);
            return None;
        }
        self.end(st, t_open, Verdict::Ok);
        let c2s: Vec<(Packet, u64)> = cw.packets[ci..].to_vec();
        // A channel closed before any data: the client stopped after gw_channel on purpose.
        if matches!(c2s.first(), None | Some((Packet::CloseChannel { .. }, _))) {
            self.stop_last(t_open);
            return None;
        }
        Some(Channel {
            target,
            port,
            opened_us: t_open,
            c2s,
            s2c: sw.packets[si..].to_vec(),
        })
    }

    /// A stop on purpose in the middle of a stage cannot come from the probe; a client that stops
    /// sending there simply closed: judged by how the conversation ended.
    fn stop_mid(&mut self, st: St) -> Option<Channel> {
        let since = self
            .stages
            .last()
            .map(|s| s.start_us)
            .unwrap_or(st.start_us);
        let (v, t) = self.end_verdict(since);
        self.end(st, t, v);
        None
    }

    /// The gateway's answer of type `ty` among its packets from `*si` on, skipping keepalives and
    /// service messages; else how the wait that began at `since` ended.
    fn expect(
        &mut self,
        sw: &TunnelPackets,
        si: &mut usize,
        ty: u16,
        since: u64,
    ) -> Result<(Packet, u64), (Verdict, u64)> {
        while let Some((p, t)) = sw.packets.get(*si) {
            *si += 1;
            match awaited(p, ty) {
                Awaited::Answer => return Ok((p.clone(), *t)),
                Awaited::Skip(note) => self.notes.extend(note),
                Awaited::Fails(v) => return Err((v, *t)),
            }
        }
        if let Some((e, t)) = &sw.error {
            return Err((
                fail(FailureKind::ProtocolError {
                    what: e.clone(),
                    offset: None,
                }),
                *t,
            ));
        }
        if let Some((_, t)) = sw.close {
            return Err((
                fail(FailureKind::Closed {
                    tls_close_notify: false,
                }),
                t,
            ));
        }
        Err(self.end_verdict(since))
    }

    /// The report of a hop that ended before the channel carried RDP.
    fn hop_only(&mut self) -> ConnectionReport {
        let gateway = self.trace.server.to_string();
        let target = self.target.clone().unwrap_or_else(|| "?".into());
        let encrypted = self
            .stages
            .iter()
            .any(|s| s.stage == Stage::GwTls && s.facts.get("encrypted") == Some(&json!(true)));
        let mut r = hop_report(
            std::mem::take(&mut self.stages),
            std::mem::take(&mut self.notes),
            &self.trace.client.to_string(),
            &target,
            &gateway,
            &gateway,
            0,
        );
        r.tcp = self.trace.tcp.clone();
        // Without secrets the hop is known up to gw_tls only: not a failure.
        if encrypted {
            r.last_stage = Stage::GwTls;
            r.verdict = Verdict::Ok;
            r.ended_by = None;
            if let Some(s) = r.stages.last_mut() {
                s.verdict = Verdict::Ok;
            }
            r.summary = "gateway hop: tcp and tls decoded; the rest is encrypted (no TLS secrets in the capture)".into();
        }
        r
    }

    /// The inner RDP of the channel, decoded by the stage machine, after the gateway stages.
    fn inner(&mut self, ch: Channel) -> ConnectionReport {
        let tr = self.trace;
        let mut inner = Trace::new(tr.client, tr.server);
        inner.push_at(ch.opened_us, None, EventKind::Connected);
        let keylog = KeyLog::parse(&tr.keylog.join("\n"));
        let mut tls = TlsState::default();
        // Both directions' packets and the outer connection's ending events, in time order.
        let mut items: Vec<(u64, u8, Item)> = Vec::new();
        for (p, t) in ch.c2s {
            items.push((t, 1, Item::Packet(Dir::C2S, p)));
        }
        for (p, t) in ch.s2c {
            items.push((t, 2, Item::Packet(Dir::S2C, p)));
        }
        for e in self.events() {
            if e.t_us < ch.opened_us {
                continue;
            }
            let keep = matches!(
                e.kind,
                EventKind::Fin { .. }
                    | EventKind::Rst { .. }
                    | EventKind::Timeout { .. }
                    | EventKind::ClientRejected { .. }
                    | EventKind::StoppedAfter(_)
                    | EventKind::CaptureEnd
            );
            if keep {
                // The probe's stop rides as a comment on the next frame: it came before that frame.
                let o = if matches!(e.kind, EventKind::StoppedAfter(_)) {
                    0
                } else {
                    3
                };
                items.push((e.t_us, o, Item::Event(e.kind.clone())));
            }
        }
        items.sort_by_key(|(t, o, _)| (*t, *o));
        let mut fin = [false; 2];
        for (t, _, it) in items {
            match it {
                Item::Packet(dir, Packet::Data(d)) => {
                    if fin[usize::from(dir == Dir::S2C)] {
                        continue;
                    }
                    inner.push_at(
                        t,
                        None,
                        EventKind::Data {
                            dir,
                            layer: Layer::Wire,
                            bytes: Bytes::from(d.clone()),
                        },
                    );
                    tls.feed(&mut inner, dir, &d, t, &keylog);
                }
                Item::Packet(dir, Packet::CloseChannel { .. }) => {
                    let i = usize::from(dir == Dir::S2C);
                    if !fin[i] {
                        fin[i] = true;
                        inner.push_at(t, None, EventKind::Fin { dir });
                    }
                }
                Item::Packet(..) => {}
                Item::Event(k) => match k {
                    EventKind::StoppedAfter(_) => {
                        // The probe stopped (or was done once connected) and closes the channel
                        // from here: a server close that crosses it in the tunnel came second.
                        inner.push_at(t, None, k);
                        if !fin[0] {
                            fin[0] = true;
                            inner.push_at(t, None, EventKind::Fin { dir: Dir::C2S });
                        }
                    }
                    EventKind::Fin { dir } | EventKind::Rst { dir } => {
                        let i = usize::from(dir == Dir::S2C);
                        if !fin[i] {
                            fin[i] = true;
                            inner.push_at(t, None, k);
                        }
                    }
                    k => inner.push_at(t, None, k),
                },
            }
        }
        inner.keylog = tls.keylog;
        let mut r = super::machine::run(&inner, false).report;
        for s in &mut r.stages {
            if s.stage == Stage::Tcp {
                s.facts
                    .insert("via_gateway".into(), json!(tr.server.to_string()));
                s.facts
                    .insert("server".into(), json!(format!("{}:{}", ch.target, ch.port)));
            }
        }
        let mut stages = std::mem::take(&mut self.stages);
        stages.append(&mut r.stages);
        r.stages = stages;
        r.server = format!("{}:{} via gateway {}", ch.target, ch.port, tr.server);
        r.notes.append(&mut self.notes);
        r.tcp = tr.tcp.clone();
        r
    }
}

enum Item {
    Packet(Dir, Packet),
    Event(EventKind),
}

/// Where the inner RDP's TLS starts in each direction (after the X.224 TPKT), and its decryption.
struct TlsState {
    start: [TlsStart; 2],
    dec: TlsDecryptor,
    keylog: Vec<String>,
}

impl Default for TlsState {
    fn default() -> Self {
        TlsState {
            start: [TlsStart::after_tpkt(), TlsStart::after_tpkt()],
            dec: TlsDecryptor::default(),
            keylog: Vec::new(),
        }
    }
}

impl TlsState {
    fn feed(&mut self, inner: &mut Trace, dir: Dir, bytes: &[u8], t: u64, keylog: &KeyLog) {
        let Some((_, from)) = self.start[usize::from(dir == Dir::S2C)].feed(bytes) else {
            return;
        };
        let mut out = Vec::new();
        self.dec.feed(dir, &bytes[from..], 0, t, keylog, &mut out);
        for o in out {
            match o {
                TlsOutput::Inner { dir, bytes, .. } => inner.push_at(
                    t,
                    None,
                    EventKind::Data {
                        dir,
                        layer: Layer::Inner,
                        bytes: Bytes::from(bytes),
                    },
                ),
                TlsOutput::Session { info, .. } => {
                    inner.push_at(t, None, EventKind::TlsSession(info))
                }
                TlsOutput::Note { text, .. } => inner.push_at(t, None, EventKind::Note(text)),
                TlsOutput::Keylog(lines) => self.keylog = lines,
            }
        }
    }
}

/// The report of a gateway hop that failed or stopped before the channel carried RDP (live and
/// offline alike): the failing stage's verdict, or a stop after the last stage that passed.
pub fn hop_report(
    mut stages: Vec<StageReport>,
    notes: Vec<String>,
    client: &str,
    target: &str,
    gateway: &str,
    gateway_addr: &str,
    deadline_ms: u64,
) -> ConnectionReport {
    let failed = stages.iter().find(|s| !s.verdict.is_ok());
    let (last_stage, verdict) = match failed {
        Some(s) => (s.stage, s.verdict.clone()),
        None => match stages.last() {
            Some(s) => (s.stage, stopped()),
            None => (
                Stage::GwTcp,
                fail(FailureKind::TimedOut {
                    waiting_for: Side::Server,
                    after_ms: deadline_ms,
                }),
            ),
        },
    };
    // A stopped run: the last stage that passed carries the stop, like a direct probe's report.
    if let (
        Some(last),
        Verdict::Failed {
            kind: FailureKind::Stopped,
            ..
        },
    ) = (stages.last_mut(), &verdict)
    {
        last.verdict = verdict.clone();
    }
    let ended_by = match &verdict {
        Verdict::Failed {
            kind: FailureKind::Stopped,
            ..
        } => Some(Side::Client),
        Verdict::Failed { by, .. } => Some(*by),
        Verdict::Ok => None,
    };
    let summary = match &verdict {
        Verdict::Failed {
            kind: FailureKind::Stopped,
            ..
        } => format!("stopped after {last_stage} by request: the gateway hop passed up to it"),
        v => format!(
            "the gateway hop failed at {last_stage}: {v} (gateway {gateway}, target {target})"
        ),
    };
    ConnectionReport {
        client: client.to_owned(),
        server: format!("{target} via gateway {gateway} ({gateway_addr})"),
        stages,
        last_stage,
        verdict,
        ended_by,
        summary,
        notes,
        tcp: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A WebSocket binary frame (masked when from the client).
    fn frame(payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        if payload.len() < 126 {
            f.push(m | payload.len() as u8);
        } else {
            f.push(m | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        if masked {
            let key = [1, 2, 3, 4];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    /// A gateway conversation whose TLS is already decrypted: wire records stand in for the
    /// handshake, the inner layer holds HTTP, WebSocket and MS-TSGU; the channel answer is `code`.
    fn conversation(code: u32) -> (Vec<u8>, Vec<u8>, Trace) {
        let mut c = b"RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
        let mut s = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec();
        for p in [
            Packet::HandshakeRequest {
                major: 1,
                minor: 0,
                client_version: 0,
                extended_auth: 0,
            },
            Packet::TunnelCreate {
                caps: 2,
                paa_cookie: None,
            },
            Packet::TunnelAuth {
                client_name: "x".into(),
            },
            Packet::ChannelCreate {
                resources: vec!["rdp01".into()],
                alt_resources: vec![],
                port: 3389,
                protocol: 3,
            },
        ] {
            c.extend(frame(&p.encode(), true));
        }
        for p in [
            Packet::HandshakeResponse {
                error_code: 0,
                major: 1,
                minor: 0,
                server_version: 0,
                extended_auth: 0,
            },
            Packet::TunnelResponse {
                server_version: 5,
                status_code: 0,
                tunnel_id: Some(1),
                caps: Some(2),
                consent: None,
            },
            Packet::TunnelAuthResponse {
                error_code: 0,
                redir_flags: None,
                idle_timeout_min: None,
            },
            Packet::ChannelResponse {
                error_code: code,
                channel_id: Some(1),
            },
        ] {
            s.extend(frame(&p.encode(), false));
        }
        let a: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let tr = Trace::new(a, b);
        (c, s, tr)
    }

    fn trace_of(c: &[u8], s: &[u8], mut tr: Trace) -> Trace {
        let hello = [0x16, 3, 1, 0, 4, 1, 0, 0, 0];
        let app = [0x17, 3, 3, 0, 1, 0];
        tr.push_at(1_000_000, None, EventKind::Connected);
        let push = |tr: &mut Trace, dir, layer, b: &[u8]| {
            let t = tr.events.last().map_or(0, |e| e.t_us) + 1000;
            tr.push_at(
                t,
                None,
                EventKind::Data {
                    dir,
                    layer,
                    bytes: Bytes::copy_from_slice(b),
                },
            );
        };
        push(&mut tr, Dir::C2S, Layer::Wire, &hello);
        push(&mut tr, Dir::S2C, Layer::Wire, &app);
        push(&mut tr, Dir::C2S, Layer::Wire, &app);
        // Interleave the inner streams in 40-byte steps (answers after requests).
        let (mut i, mut j) = (0, 0);
        while i < c.len() || j < s.len() {
            if i < c.len() {
                let n = (c.len() - i).min(40);
                push(&mut tr, Dir::C2S, Layer::Inner, &c[i..i + n]);
                i += n;
            }
            if j < s.len() {
                let n = (s.len() - j).min(40);
                push(&mut tr, Dir::S2C, Layer::Inner, &s[j..j + n]);
                j += n;
            }
        }
        tr.push_at(0, None, EventKind::Fin { dir: Dir::C2S });
        tr
    }

    #[test]
    fn what_a_waiting_side_makes_of_each_packet() {
        let answer = Packet::TunnelAuthResponse {
            error_code: 0,
            redir_flags: None,
            idle_timeout_min: None,
        };
        assert!(matches!(
            awaited(&answer, tsgu::ty::TUNNEL_AUTH_RESPONSE),
            Awaited::Answer
        ));
        // The right answer to another request ends the wait.
        assert!(matches!(
            awaited(&answer, tsgu::ty::CHANNEL_RESPONSE),
            Awaited::Fails(Verdict::Failed {
                kind: FailureKind::ProtocolError { .. },
                by: Side::Server
            })
        ));
        assert!(matches!(
            awaited(&Packet::Keepalive, tsgu::ty::CHANNEL_RESPONSE),
            Awaited::Skip(None)
        ));
        let service = Packet::Other {
            ty: tsgu::ty::SERVICE_MESSAGE,
            body: vec![],
        };
        assert!(matches!(
            awaited(&service, tsgu::ty::CHANNEL_RESPONSE),
            Awaited::Skip(Some(n)) if n == "the gateway sent a packet of type 0x0B"
        ));
        let close = |status| awaited(&Packet::CloseChannel { status }, tsgu::ty::CHANNEL_RESPONSE);
        assert!(matches!(
            close(0),
            Awaited::Fails(Verdict::Failed {
                kind: FailureKind::Closed { .. },
                ..
            })
        ));
        assert!(matches!(
            close(0x8007_59DA),
            Awaited::Fails(Verdict::Failed {
                kind: FailureKind::GatewayError(crate::stage::GatewayHresult { code: 0x8007_59DA }),
                ..
            })
        ));
    }

    #[test]
    fn the_hop_decodes_to_the_channel_hresult() {
        let (c, s, tr) = conversation(0x8007_59DA);
        let tr = trace_of(&c, &s, tr);
        assert!(is_gateway(&tr));
        let r = decode(&tr).report;
        assert_eq!(r.last_stage, Stage::GwChannel, "{}", r.summary);
        assert!(matches!(
            r.verdict.failure(),
            Some(FailureKind::GatewayError(h)) if h.name() == "E_PROXY_RAP_ACCESSDENIED"
        ));
        assert_eq!(
            r.fact(Stage::GwChannel, "name_form"),
            Some(&json!("netbios"))
        );
        assert_eq!(r.fact(Stage::GwTunnel, "tunnel_id"), Some(&json!(1)));
        // An open channel with no data and the client closing: the probe's --stop-after gw_channel.
        let (c, s, tr) = conversation(0);
        let r = decode(&trace_of(&c, &s, tr)).report;
        assert_eq!(r.last_stage, Stage::GwChannel);
        assert!(matches!(r.verdict.failure(), Some(FailureKind::Stopped)));
    }

    /// The legacy transport's two conversations for one tunnel (`id` in both requests): the OUT
    /// channel (200, seed, the gateway's packets raw) and the IN channel (authorized, then the
    /// client's packets as chunks); the channel answer is `code`.
    fn legacy_pair(code: u32, id: &str) -> (Trace, Trace) {
        let (ws_c, ws_s, _) = conversation(code);
        // No identifier: no header.
        let id = if id.is_empty() {
            String::new()
        } else {
            format!("RDG-Connection-Id: {id}\r\n")
        };
        // The packets out of the WebSocket conversation's frames.
        let unframe = |b: &[u8], masked: bool| -> Vec<Vec<u8>> {
            let at = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let (mut off, mut out) = (at, Vec::new());
            while off < b.len() {
                let len = usize::from(b[off + 1] & 0x7F);
                let (len, hl) = if len == 126 {
                    (usize::from(u16::from_be_bytes([b[off + 2], b[off + 3]])), 4)
                } else {
                    (len, 2)
                };
                let hl = hl + if masked { 4 } else { 0 };
                let mut p = b[off + hl..off + hl + len].to_vec();
                if masked {
                    let key = &b[off + hl - 4..off + hl];
                    for (i, x) in p.iter_mut().enumerate() {
                        *x ^= key[i % 4];
                    }
                }
                out.push(p);
                off += hl + len;
            }
            out
        };
        let out_c = format!(
            "RDG_OUT_DATA /remoteDesktopGateway/ HTTP/1.1\r\n{id}Content-Length: 0\r\n\r\n"
        )
        .into_bytes();
        let mut out_s = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        out_s.extend_from_slice(&crate::gateway::legacy::SEED);
        for p in unframe(&ws_s, false) {
            out_s.extend(p);
        }
        let mut in_c = format!("RDG_IN_DATA /remoteDesktopGateway/ HTTP/1.1\r\n{id}Content-Length: 0\r\n\r\nRDG_IN_DATA /remoteDesktopGateway/ HTTP/1.1\r\n{id}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
        let in_s = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        for p in unframe(&ws_c, true) {
            in_c.extend(crate::gateway::legacy::chunk(&p));
        }
        let gw: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let out = trace_of(
            &out_c,
            &out_s,
            Trace::new("127.0.0.1:50000".parse().unwrap(), gw),
        );
        let in_ = trace_of(
            &in_c,
            &in_s,
            Trace::new("127.0.0.1:50001".parse().unwrap(), gw),
        );
        (out, in_)
    }

    #[test]
    fn the_legacy_transports_two_channels_pair_and_decode_as_one_tunnel() {
        let (out, in_) = legacy_pair(0x8007_59DA, "{A}");
        assert_eq!(
            legacy_channel(&out),
            Some((LegacyRole::Out, Some("{a}".into())))
        );
        assert_eq!(
            legacy_channel(&in_),
            Some((LegacyRole::In, Some("{a}".into())))
        );
        // Alone, the OUT channel's 200 is not a tunnel: no IN channel in the capture.
        let r = decode(&out).report;
        assert_eq!(r.last_stage, Stage::GwAuth, "{}", r.summary);
        // Paired (the IN channel first, an unrelated tunnel's IN channel between): one report,
        // the channel's HRESULT read from the IN channel's chunks and the OUT channel's packets.
        let (_, other_in) = legacy_pair(0, "{B}");
        let convs: Vec<Result<Trace, ()>> = vec![Ok(in_), Ok(other_in), Ok(out)];
        let paired: Vec<Trace> = LegacyPairs::new(convs.into_iter())
            .map(Result::unwrap)
            .collect();
        assert_eq!(paired.len(), 2, "the pair, then the unpaired channel");
        assert!(paired[0].legacy_in.is_some());
        let r = decode(&paired[0]).report;
        assert_eq!(r.last_stage, Stage::GwChannel, "{}", r.summary);
        assert!(matches!(
            r.verdict.failure(),
            Some(FailureKind::GatewayError(h)) if h.name() == "E_PROXY_RAP_ACCESSDENIED"
        ));
        assert_eq!(r.fact(Stage::GwAuth, "transport"), Some(&json!("http")));
        assert_eq!(r.fact(Stage::GwTunnel, "tunnel_id"), Some(&json!(1)));
        assert!(paired[1].legacy_in.is_none());
        // The IN channel alone: accepted at gw_auth, and the report says its OUT channel is missing.
        let r = decode(&paired[1]).report;
        assert_eq!(r.last_stage, Stage::GwAuth, "{}", r.summary);
        assert!(r
            .stage(Stage::GwAuth)
            .is_some_and(|s| s.facts.get("status") == Some(&json!(200))));
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("IN channel (RDG_IN_DATA) alone")),
            "{:?}",
            r.notes
        );
        // Without identifiers: the same client address and gateway, nearest in time.
        let (out, in_) = legacy_pair(0x8007_59DA, "");
        assert_eq!(legacy_channel(&in_), Some((LegacyRole::In, None)));
        let convs: Vec<Result<Trace, ()>> = vec![Ok(out), Ok(in_)];
        let paired: Vec<Trace> = LegacyPairs::new(convs.into_iter())
            .map(Result::unwrap)
            .collect();
        assert_eq!(paired.len(), 1);
        let r = decode(&paired[0]).report;
        assert_eq!(r.last_stage, Stage::GwChannel, "{}", r.summary);
    }

    /// Unpaired channels are held back at most [`legacy::MAX_HELD`] at a time, none is lost, and
    /// a capture error still ends the stream after them.
    #[test]
    fn unpaired_legacy_channels_are_bounded_and_kept() {
        let n = legacy::MAX_HELD + 5;
        let mut convs: Vec<Result<Trace, &str>> = (0..n)
            .map(|i| Ok(legacy_pair(0, &format!("{{{i}}}")).1))
            .collect();
        convs.push(Err("damaged"));
        let mut it = LegacyPairs::new(convs.into_iter());
        let mut got = 0;
        // Before the input ends, the channels beyond the bound went on.
        for _ in 0..5 {
            assert!(matches!(it.next(), Some(Ok(_))));
            got += 1;
        }
        for x in it.by_ref() {
            match x {
                Ok(t) => {
                    assert!(t.legacy_in.is_none());
                    got += 1;
                }
                Err(e) => {
                    assert_eq!(e, "damaged");
                    assert_eq!(got, n, "the error comes after every channel");
                }
            }
        }
        assert_eq!(got, n);
    }

    /// Hostile legacy channels: every truncation and byte flip of the IN channel's chunked stream
    /// and of the OUT channel's raw packets decode without a panic and end at a gateway stage.
    #[test]
    fn truncated_and_flipped_legacy_channels_never_panic() {
        let (out, in_) = legacy_pair(0x8007_59DD, "{C}");
        let stream = |t: &Trace, dir| t.stream(dir, Layer::Inner);
        let with = |t: &Trace, c: &[u8], s: &[u8], port: u16| {
            trace_of(
                c,
                s,
                Trace::new(SocketAddr::from(([127, 0, 0, 1], port)), t.server),
            )
        };
        let (ic, is) = (stream(&in_, Dir::C2S), stream(&in_, Dir::S2C));
        let (oc, os) = (stream(&out, Dir::C2S), stream(&out, Dir::S2C));
        let run = |o: Trace, i: Trace| {
            let mut o = o;
            o.legacy_in = Some(Box::new(i));
            let r = decode(&o).report;
            assert!(r.last_stage.is_gateway(), "{}", r.summary);
        };
        for n in 0..ic.len() {
            run(
                with(&out, &oc, &os, 50000),
                with(&in_, &ic[..n], &is, 50001),
            );
            let mut c2 = ic.clone();
            c2[n] ^= 0xA5;
            run(with(&out, &oc, &os, 50000), with(&in_, &c2, &is, 50001));
        }
        for n in 0..os.len() {
            run(
                with(&out, &oc, &os[..n], 50000),
                with(&in_, &ic, &is, 50001),
            );
            let mut s2 = os.clone();
            s2[n] ^= 0xA5;
            run(with(&out, &oc, &s2, 50000), with(&in_, &ic, &is, 50001));
        }
    }

    /// Hostile input: every truncation and a byte flip at every offset of the inner streams decode
    /// without a panic and end at a gateway stage.
    #[test]
    fn truncated_and_flipped_conversations_never_panic() {
        let (c, s, tr) = conversation(0x8007_59DD);
        for n in 0..c.len() {
            let _ = decode(&trace_of(&c[..n], &s, tr.clone()));
        }
        for n in 0..s.len() {
            let _ = decode(&trace_of(&c, &s[..n], tr.clone()));
        }
        for i in 0..s.len() {
            let mut s2 = s.clone();
            s2[i] ^= 0xA5;
            let r = decode(&trace_of(&c, &s2, tr.clone())).report;
            assert!(r.last_stage.is_gateway(), "{i}: {}", r.summary);
        }
        for i in 0..c.len() {
            let mut c2 = c.clone();
            c2[i] = c2[i].wrapping_add(0x41);
            let _ = decode(&trace_of(&c2, &s, tr.clone()));
        }
    }
}
