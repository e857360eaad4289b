//! The per-connection driver: steps `ironrdp_acceptor::Acceptor` one PDU at a time, does TLS and
//! CredSSP itself, and injects the scenario's faults at the named points.
//!
//! Why not the stock `accept_begin`: on a failing step the acceptor has already encoded the refusal
//! (RDP_NEG_FAILURE, access denied) into the output buffer and the stock helper drops it; it also
//! panics in debug builds when TLS bytes arrive in the same segment as the X.224 request. Here the
//! X.224 negotiation is decided by [`crate::scenario::Security::negotiate`] and the acceptor is built
//! with exactly the selected protocol, so its state always matches what went on the wire.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ironrdp_acceptor::{Acceptor, DesktopSize};
use ironrdp_connector::Sequence;
use ironrdp_core::{decode, encode_vec, WriteBuf};
use ironrdp_pdu::nego::{self, SecurityProtocol};
use ironrdp_pdu::rdp::capability_sets::{self as caps, CapabilitySet};
use ironrdp_pdu::x224::X224;
use ironrdp_pdu::PduHint;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::credssp::{self, LabCredentials};
use super::io::{AsyncIo, DerSequenceHint, LabTcp, Prefixed, WireState, MAX_PDU_LEN};
use super::mutate::{self, Body, ServerCase};
use super::tls::{handshake_failure_alert, TlsServer};
use super::ConnectionOutcome;
use crate::scenario::{
    EndKind, FaultAction, FaultPoint, Negotiation, NtStatus, Protocol, Scenario,
};

/// What every connection of one lab shares.
pub(crate) struct LabCtx {
    pub scenario: Scenario,
    /// `None` when the scenario has no certificate (`certificate = "none"`).
    pub tls: Option<TlsServer>,
    /// subjectPublicKey of the certificate, for CredSSP's public key binding.
    pub public_key: Vec<u8>,
    /// Longest one connection lives ([`super::LabLimits::connection_timeout`]).
    pub connection_timeout: Duration,
}

/// Name handed to sspi's NTLM server configuration. sspi 0.23's server sends empty computer and
/// domain names in the CHALLENGE target info whatever this says (MS-NLMP 2.2.2.1), so the lab cannot
/// announce a server name there.
const NTLM_CONFIG_NAME: &str = "RDPROBE-LAB";

/// Largest TLS record the lab reads before handing the ClientHello to the TLS engine (RFC 8446 5.1:
/// 2^14 plaintext plus expansion).
const MAX_TLS_RECORD: usize = 16_384 + 2_048;
/// Longest the lab drains a closing connection so that it ends with a FIN rather than a RST.
const DRAIN_MS: u64 = 2_000;

/// How a connection ended early.
#[derive(Debug)]
pub(crate) enum End {
    /// The scenario ended it (fault, rejection, refusal); the text says how.
    Scenario(String),
    /// The client closed (FIN) or reset.
    ClientGone(String),
    /// The client was silent past `link.read_timeout_ms`.
    Timeout(&'static str),
    /// The client sent something the lab cannot parse or the acceptor refused.
    Protocol(String),
    /// The connection outlived the lab's total per-connection deadline.
    Deadline(Duration),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Scenario(s) => write!(f, "{s}"),
            End::ClientGone(s) => write!(f, "client went away: {s}"),
            End::Timeout(what) => write!(f, "timed out waiting for the client's {what}"),
            End::Protocol(s) => write!(f, "protocol error: {s}"),
            End::Deadline(d) => write!(
                f,
                "closed at the connection deadline ({} ms)",
                d.as_millis()
            ),
        }
    }
}

enum Layer {
    Plain(LabTcp),
    Upper(Box<dyn AsyncIo>),
    Gone,
}

struct Conn<'a> {
    ctx: &'a LabCtx,
    /// 1-based connection number.
    n: u64,
    layer: Layer,
    /// A second handle on the same socket, for shutdown, SO_LINGER and draining.
    raw: TcpStream,
    rbuf: Vec<u8>,
    wire: Rc<RefCell<WireState>>,
    read_timeout: Duration,
    /// What to do once an armed truncation has cut the stream.
    after_truncate: EndKind,
    outcome: ConnectionOutcome,
    /// The server-side mutation this connection plays (`[mutate]`), with its case number.
    case: Option<(u64, ServerCase)>,
    /// The mutation was sent (each connection sends one).
    mutated: bool,
    /// Writes made in the channel connection state so far.
    channel_writes: usize,
}

/// Where the lab is about to write a PDU that a server-side mutation may replace.
#[derive(Clone, Copy, Debug)]
enum Site {
    X224Confirm,
    TlsFlight,
    TsRequest(u8),
    EarlyUserAuth,
    ConnectResponse,
    Channels(usize),
    Licensing,
    DemandActive,
}

/// Serves one connection to the end. Never panics on client input; every read and write has a
/// deadline, and the whole connection ends at `ctx.connection_timeout`.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Rc<LabCtx>,
    n: u64,
) -> ConnectionOutcome {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + ctx.connection_timeout;
    let mut outcome = ConnectionOutcome {
        n,
        peer,
        selected: None,
        last_point: None,
        user: None,
        result: String::new(),
        duration_ms: 0,
    };
    let _ = tcp.set_nodelay(true);
    let raw = match tcp.into_std().and_then(|s| {
        let dup = s.try_clone()?;
        Ok((TcpStream::from_std(s)?, TcpStream::from_std(dup)?))
    }) {
        Ok((main, dup)) => (main, dup),
        Err(e) => {
            outcome.result = format!("cannot set up the socket: {e}");
            return outcome;
        }
    };
    let wire = Rc::new(RefCell::new(WireState {
        delay: Duration::from_millis(ctx.scenario.link.write_delay_ms),
        turn_delays: ctx
            .scenario
            .link
            .response_delays_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        ..WireState::default()
    }));
    let mut conn = Conn {
        ctx: &ctx,
        n,
        layer: Layer::Plain(LabTcp::new(raw.0, wire.clone())),
        raw: raw.1,
        rbuf: Vec::new(),
        wire,
        read_timeout: Duration::from_millis(ctx.scenario.link.read_timeout_ms.max(1)),
        after_truncate: EndKind::Silence,
        outcome,
        case: ctx.scenario.mutate.as_ref().map(|m| {
            (
                m.case_for(n),
                mutate::case_for(m.stage, m.seed, m.case_for(n)),
            )
        }),
        mutated: false,
        channel_writes: 0,
    };
    // INVARIANT: everything the connection does, the scenario's own delays and holds included,
    // happens inside this deadline; only the FIN after it is outside (it does not wait).
    let result = tokio::time::timeout_at(deadline, conn.run())
        .await
        .unwrap_or(Err(End::Deadline(ctx.connection_timeout)));
    conn.outcome.result = match result {
        Ok(()) => "connected".to_owned(),
        Err(e) => {
            match e {
                End::Scenario(_) => {}
                End::Deadline(_) => conn.close_now().await,
                // Anything else not ended by the scenario itself ends with a FIN, within the deadline.
                _ => {
                    let _ = tokio::time::timeout_at(deadline, conn.end(EndKind::Close)).await;
                }
            }
            e.to_string()
        }
    };
    if let Some((k, case)) = &conn.case {
        conn.outcome.result = format!(
            "{} case {k}: {}; {}",
            case.stage(),
            if conn.mutated {
                "mutated"
            } else {
                "not reached"
            },
            conn.outcome.result
        );
    }
    tracing::debug!(n, %peer, result = %conn.outcome.result, "lab connection done");
    conn.outcome.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    conn.outcome
}

impl Conn<'_> {
    fn scenario(&self) -> &Scenario {
        &self.ctx.scenario
    }

    fn io(&mut self) -> Option<&mut dyn AsyncIo> {
        match &mut self.layer {
            Layer::Plain(t) => Some(t),
            Layer::Upper(b) => Some(b.as_mut()),
            Layer::Gone => None,
        }
    }

    /// Reads more bytes into `rbuf`, within the read deadline.
    async fn read_more(&mut self, what: &'static str) -> Result<(), End> {
        if self.rbuf.len() > MAX_PDU_LEN {
            return Err(End::Protocol(format!(
                "{what} is longer than {MAX_PDU_LEN} bytes"
            )));
        }
        let timeout = self.read_timeout;
        let mut chunk = [0u8; 8192];
        let Some(io) = self.io() else {
            return Err(End::ClientGone("connection already closed".to_owned()));
        };
        match tokio::time::timeout(timeout, io.read(&mut chunk)).await {
            Err(_) => Err(End::Timeout(what)),
            Ok(Ok(0)) => Err(End::ClientGone(format!(
                "closed while the lab waited for the {what}"
            ))),
            Ok(Ok(k)) => {
                self.rbuf.extend_from_slice(&chunk[..k]);
                Ok(())
            }
            Ok(Err(e)) => {
                if self.wire.borrow().truncated {
                    Err(self.end_truncated().await)
                } else {
                    Err(End::ClientGone(format!(
                        "{e} while the lab waited for the {what}"
                    )))
                }
            }
        }
    }

    /// Reads one PDU that `hint` frames; PDUs the hint does not match (e.g. fast-path input) are dropped.
    /// Each read waits at most the read timeout (the connection's total deadline bounds the rest).
    async fn read_frame(&mut self, hint: &dyn PduHint, what: &'static str) -> Result<Vec<u8>, End> {
        use crate::net::framed::{self, ReadError, Reader};
        let reader = Reader {
            max_len: MAX_PDU_LEN,
            exact: false,
        };
        let mut buf = bytes::BytesMut::from(&self.rbuf[..]);
        let idle = self.read_timeout;
        let io: &mut dyn AsyncIo = match &mut self.layer {
            Layer::Plain(t) => t,
            Layer::Upper(b) => b.as_mut(),
            Layer::Gone => return Err(End::ClientGone("connection already closed".to_owned())),
        };
        let r = reader
            .read_idle(io, &mut buf, idle, framed::hint(hint))
            .await;
        self.rbuf = buf.to_vec();
        match r {
            Ok(pdu) => Ok(pdu.to_vec()),
            Err(ReadError::Length { len }) => Err(End::Protocol(format!(
                "{what}: implausible PDU length {len}"
            ))),
            Err(ReadError::Framing(e)) => Err(End::Protocol(format!("{what}: {e}"))),
            Err(ReadError::Overflow { .. }) => Err(End::Protocol(format!(
                "{what} is longer than {MAX_PDU_LEN} bytes"
            ))),
            Err(ReadError::Timeout) => Err(End::Timeout(what)),
            Err(ReadError::Closed) => Err(End::ClientGone(format!(
                "closed while the lab waited for the {what}"
            ))),
            Err(ReadError::Io(e)) => {
                if self.wire.borrow().truncated {
                    Err(self.end_truncated().await)
                } else {
                    Err(End::ClientGone(format!(
                        "{e} while the lab waited for the {what}"
                    )))
                }
            }
        }
    }

    /// Writes `bytes` on the current layer (TLS once it is up).
    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        let timeout = self.read_timeout;
        let Some(io) = self.io() else {
            return Err(End::ClientGone("connection already closed".to_owned()));
        };
        let res = tokio::time::timeout(timeout, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await;
        let truncated = self.wire.borrow().truncated;
        if truncated {
            return Err(self.end_truncated().await);
        }
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::ClientGone(format!("write failed: {e}"))),
            Err(_) => Err(End::Timeout("reading of the server's data")),
        }
    }

    /// Writes the PDU of `site`, or the connection's server-side mutation of it; after a mutation
    /// with `close_after` the connection ends.
    async fn send(&mut self, site: Site, bytes: &[u8]) -> Result<(), End> {
        let out = match &self.case {
            Some((_, c)) if !self.mutated => apply(c, site, bytes),
            _ => None,
        };
        let Some(out) = out else {
            return self.write(bytes).await;
        };
        self.mutated = true;
        tracing::debug!(
            n = self.n,
            ?site,
            len = out.len(),
            "lab sends a mutated pdu"
        );
        self.write(&out).await?;
        self.after_mutation(site).await
    }

    /// Ends the connection after a mutation that asks for it.
    async fn after_mutation(&mut self, site: Site) -> Result<(), End> {
        if self.case.as_ref().is_some_and(|(_, c)| c.close_after) {
            self.end(EndKind::Close).await;
            return Err(End::Scenario(format!(
                "sent a mutated pdu at {site:?}, then close"
            )));
        }
        Ok(())
    }

    async fn end_truncated(&mut self) -> End {
        let then = self.after_truncate;
        self.end(then).await;
        End::Scenario(format!(
            "truncated the server's data, then {}",
            end_name(then)
        ))
    }

    /// Ends the connection the given way. Afterwards the connection is gone.
    async fn end(&mut self, kind: EndKind) {
        {
            let mut w = self.wire.borrow_mut();
            w.truncated = false;
            w.truncate_left = None;
            w.delay = Duration::ZERO;
            w.turn_delays.clear();
        }
        match kind {
            EndKind::Reset => {
                // INVARIANT: SO_LINGER 0 then close of every handle on the socket sends a RST.
                let _ = self.raw.set_zero_linger();
                self.layer = Layer::Gone;
                return;
            }
            EndKind::CloseNotify => {
                if let Some(io) = self.io() {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(DRAIN_MS), io.shutdown()).await;
                }
            }
            EndKind::Close => {}
            EndKind::Silence => {
                let hold = Duration::from_millis(self.scenario().link.hold_ms);
                self.drain(hold).await;
            }
        }
        let _ = self.raw.shutdown().await;
        self.drain(Duration::from_millis(DRAIN_MS)).await;
        self.layer = Layer::Gone;
    }

    /// Closes at once (FIN; a RST if the client's bytes are unread), without draining.
    async fn close_now(&mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.raw.shutdown()).await;
        self.layer = Layer::Gone;
    }

    /// Reads and discards until the client closes or `limit` passes.
    async fn drain(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut sink = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.raw.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    fn reached(&mut self, p: FaultPoint) {
        self.outcome.last_point = Some(p);
    }

    /// Runs the faults of `point`. `Err` when one of them ended the connection.
    async fn fault(&mut self, point: FaultPoint, acceptor: Option<&Acceptor>) -> Result<(), End> {
        self.reached(point);
        let faults: Vec<FaultAction> = self
            .scenario()
            .faults_at(point, self.n)
            .map(|f| f.action.clone())
            .collect();
        for action in faults {
            tracing::debug!(n = self.n, %point, action = action.name(), "lab fault");
            let done = |what: &str| End::Scenario(format!("fault at {point}: {what}"));
            match action {
                FaultAction::Delay { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
                FaultAction::Reset => {
                    self.end(EndKind::Reset).await;
                    return Err(done("reset"));
                }
                FaultAction::Close => {
                    self.end(EndKind::Close).await;
                    return Err(done("close"));
                }
                FaultAction::CloseNotify => {
                    self.end(EndKind::CloseNotify).await;
                    return Err(done("close_notify"));
                }
                FaultAction::Silence => {
                    self.end(EndKind::Silence).await;
                    return Err(done("silence"));
                }
                FaultAction::Truncate { bytes, then } => {
                    self.after_truncate = then;
                    self.wire.borrow_mut().truncate_left = Some(bytes);
                }
                FaultAction::Malformed { bytes, then } => {
                    self.write(&bytes).await?;
                    self.end(then).await;
                    return Err(done(&format!(
                        "sent {} malformed bytes, then {}",
                        bytes.len(),
                        end_name(then)
                    )));
                }
                FaultAction::Disconnect => {
                    let mut buf = WriteBuf::new();
                    // Set Error Info travels on the user's channel: only once channels are joined.
                    let joined = !matches!(
                        point,
                        FaultPoint::X224Request
                            | FaultPoint::X224Confirm
                            | FaultPoint::TlsClientHello
                            | FaultPoint::TlsDone
                            | FaultPoint::CredsspNegotiate
                            | FaultPoint::CredsspChallenge
                            | FaultPoint::CredsspAuthenticate
                            | FaultPoint::McsConnectInitial
                            | FaultPoint::McsConnectResponse
                    );
                    if let Some(a) = acceptor.filter(|_| joined) {
                        if let Ok(k) = a.encode_access_denied(&mut buf) {
                            if k > 0 {
                                let denied = buf[..k].to_vec();
                                self.write(&denied).await?;
                            }
                        }
                    }
                    let dpum = ironrdp_pdu::mcs::DisconnectProviderUltimatum::from_reason(
                        ironrdp_pdu::mcs::DisconnectReason::ProviderInitiated,
                    );
                    if let Ok(bytes) = encode_vec(&X224(dpum)) {
                        self.write(&bytes).await?;
                    }
                    self.end(EndKind::Close).await;
                    return Err(done("MCS disconnect provider ultimatum"));
                }
            }
        }
        Ok(())
    }

    async fn run(&mut self) -> Result<(), End> {
        // X.224 Connection Request (MS-RDPBCGR 2.2.1.1).
        let request = self
            .read_frame(&ironrdp_pdu::X224_HINT, "X.224 Connection Request")
            .await?;
        super::planted::hook(&self.raw, super::planted::At::X224Request, &request)
            .await
            .map_err(End::Scenario)?;
        self.fault(FaultPoint::X224Request, None).await?;
        let cr = decode::<X224<nego::ConnectionRequest>>(&request)
            .map_err(|e| End::Protocol(format!("X.224 Connection Request: {e}")))?
            .0;
        let requested = cr.protocol;
        let selected = match self.scenario().security.negotiate(requested.bits()) {
            Negotiation::Fail(code) => {
                // RDP_NEG_FAILURE (MS-RDPBCGR 2.2.1.2.2), then close as Windows does.
                let confirm = nego::ConnectionConfirm::Failure {
                    code: nego::FailureCode::from(code.0),
                };
                let bytes = encode_vec(&X224(confirm)).map_err(|e| End::Protocol(e.to_string()))?;
                self.send(Site::X224Confirm, &bytes).await?;
                self.fault(FaultPoint::X224Confirm, None).await?;
                self.end(EndKind::Close).await;
                return Err(End::Scenario(format!("answered RDP_NEG_FAILURE {code}")));
            }
            Negotiation::Select(p) => p,
        };
        self.outcome.selected = Some(selected);

        // The acceptor is built with exactly the selected protocol, so it selects it too.
        let security = SecurityProtocol::from_bits_truncate(selected.flag());
        let mut acceptor = Acceptor::new(security, desktop_size(), server_capabilities(), None);
        let feed = if selected != Protocol::Rdp && !requested.contains(security) {
            // Forced selection of a protocol the client did not offer: let the acceptor believe it did.
            let mut forced = cr.clone();
            forced.protocol |= security;
            encode_vec(&X224(forced)).map_err(|e| End::Protocol(e.to_string()))?
        } else {
            request
        };
        let mut buf = WriteBuf::new();
        acceptor
            .step(&feed, None, &mut buf)
            .map_err(|e| End::Protocol(format!("X.224 Connection Request: {e}")))?;
        buf.clear();
        let written = acceptor
            .step_no_input(&mut buf)
            .map_err(|e| End::Protocol(format!("X.224 Connection Confirm: {e}")))?;
        if let Some(k) = written.size() {
            let confirm = buf[..k].to_vec();
            self.send(Site::X224Confirm, &confirm).await?;
        }
        self.fault(FaultPoint::X224Confirm, Some(&acceptor)).await?;
        if acceptor.reached_security_upgrade().is_none() {
            return Err(End::Protocol(format!(
                "acceptor in state {} after the confirm",
                acceptor.state().name()
            )));
        }
        acceptor.mark_security_upgrade_as_done();

        if selected.uses_tls() {
            self.tls_upgrade().await?;
            self.fault(FaultPoint::TlsDone, Some(&acceptor)).await?;
        }
        if selected.uses_credssp() {
            self.credssp(selected == Protocol::HybridEx).await?;
            if !acceptor.should_perform_credssp() {
                return Err(End::Protocol(
                    "acceptor not in the CredSSP state".to_owned(),
                ));
            }
            acceptor.mark_credssp_as_done();
        }
        self.finish(&mut acceptor).await
    }

    /// Reads the ClientHello record, runs its faults, then hands it to the TLS engine.
    async fn tls_upgrade(&mut self) -> Result<(), End> {
        let record_len = loop {
            if self.rbuf.len() >= 5 {
                if self.rbuf[0] != 0x16 {
                    return Err(End::Protocol(format!(
                        "expected a TLS handshake record, got content type 0x{:02x}",
                        self.rbuf[0]
                    )));
                }
                let len = usize::from(u16::from_be_bytes([self.rbuf[3], self.rbuf[4]]));
                if len > MAX_TLS_RECORD {
                    return Err(End::Protocol(format!("TLS record of {len} bytes")));
                }
                if self.rbuf.len() >= 5 + len {
                    break len;
                }
            }
            self.read_more("TLS ClientHello").await?;
        };
        let _ = record_len;
        self.fault(FaultPoint::TlsClientHello, None).await?;
        let Some(tls) = self.ctx.tls.clone() else {
            // No certificate: a fatal handshake_failure alert, as Schannel without a usable key.
            let alert = handshake_failure_alert([self.rbuf[1], self.rbuf[2]]);
            self.write(&alert).await?;
            self.end(EndKind::Close).await;
            return Err(End::Scenario(
                "no certificate: sent TLS alert handshake_failure".to_owned(),
            ));
        };
        let Layer::Plain(tcp) = std::mem::replace(&mut self.layer, Layer::Gone) else {
            return Err(End::Protocol("TLS upgrade twice".to_owned()));
        };
        let stream = Prefixed::new(std::mem::take(&mut self.rbuf), tcp);
        let timeout = self.read_timeout;
        if let Some((
            _,
            ServerCase {
                body: Body::Tls(c), ..
            },
        )) = &self.case
        {
            self.wire.borrow_mut().tls_mutator = Some(mutate::TlsWriteMutator::new(c.clone()));
        }
        let upgraded: Result<Box<dyn AsyncIo>, String> = match tls {
            TlsServer::Rustls(acceptor) => {
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => Ok(Box::new(s)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            }
            TlsServer::OpenSsl(acceptor) => {
                let ssl = openssl::ssl::Ssl::new(acceptor.context())
                    .map_err(|e| End::Protocol(e.to_string()))?;
                let mut s = tokio_openssl::SslStream::new(ssl, stream)
                    .map_err(|e| End::Protocol(e.to_string()))?;
                match tokio::time::timeout(timeout, std::pin::Pin::new(&mut s).accept()).await {
                    Ok(Ok(())) => Ok(Box::new(s)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            }
        };
        if let Some(m) = self.wire.borrow_mut().tls_mutator.take() {
            self.mutated |= m.done;
        }
        match upgraded {
            Ok(io) => {
                self.layer = Layer::Upper(io);
                if self.mutated {
                    self.after_mutation(Site::TlsFlight).await?;
                }
                Ok(())
            }
            Err(e) => {
                if self.wire.borrow().truncated {
                    return Err(self.end_truncated().await);
                }
                if e == "timed out" {
                    Err(End::Timeout("TLS handshake"))
                } else {
                    Err(End::Protocol(format!("TLS handshake: {e}")))
                }
            }
        }
    }

    /// CredSSP (MS-CSSP 3.1.5) over the TLS layer; with HYBRID_EX, also the Early User Authorization
    /// Result PDU (MS-RDPBCGR 2.2.10.2).
    async fn credssp(&mut self, hybrid_ex: bool) -> Result<(), End> {
        let scenario = self.scenario().clone();
        let mut server = sspi::credssp::CredSspServer::new(
            self.ctx.public_key.clone(),
            LabCredentials::new(scenario.identity.users.clone()),
            sspi::credssp::ServerMode::Ntlm(sspi::ntlm::NtlmConfig::new(
                NTLM_CONFIG_NAME.to_owned(),
            )),
        )
        .map_err(|e| End::Protocol(format!("CredSSP server: {e}")))?;
        let mut count = 0u32;
        let mut replies = 0u8;
        loop {
            let frame = self
                .read_frame(&DerSequenceHint, "CredSSP TSRequest")
                .await?;
            super::planted::hook(&self.raw, super::planted::At::TsRequest, &frame)
                .await
                .map_err(End::Scenario)?;
            count += 1;
            let request = sspi::credssp::TsRequest::from_buffer(&frame)
                .map_err(|e| End::Protocol(format!("TSRequest {count}: {e}")))?;
            let client_version = request.version;
            let ntlm = request
                .nego_tokens
                .as_deref()
                .and_then(credssp::ntlm_message_type);
            let is_authenticate =
                ntlm == Some(3) || (ntlm.is_none() && count == 2 && request.pub_key_auth.is_some());
            let is_negotiate = ntlm == Some(1) || (ntlm.is_none() && count == 1);
            if is_negotiate {
                self.fault(FaultPoint::CredsspNegotiate, None).await?;
            }
            if is_authenticate {
                self.fault(FaultPoint::CredsspAuthenticate, None).await?;
                if let Some(status) = scenario.credssp.reject {
                    return Err(self.reject(client_version, status).await);
                }
            }
            match credssp::process(&mut server, request) {
                Ok(sspi::credssp::ServerState::ReplyNeeded(reply)) => {
                    let len = usize::from(
                        reply
                            .buffer_len()
                            .map_err(|e| End::Protocol(format!("TSRequest encode: {e}")))?,
                    );
                    let mut out = Vec::with_capacity(len);
                    reply
                        .encode_ts_request(&mut out)
                        .map_err(|e| End::Protocol(format!("TSRequest encode: {e}")))?;
                    self.send(Site::TsRequest(replies), &out).await?;
                    replies = replies.saturating_add(1);
                    if is_negotiate {
                        self.fault(FaultPoint::CredsspChallenge, None).await?;
                    }
                }
                Ok(sspi::credssp::ServerState::Finished(identity)) => {
                    self.outcome.user = Some(identity.username.inner().to_owned());
                    if hybrid_ex {
                        let denied = scenario.credssp.early_user_auth_denied;
                        // Early User Authorization Result: SUCCESS 0 / ACCESS_DENIED 5, little-endian u32.
                        let code: u32 = if denied { 5 } else { 0 };
                        self.send(Site::EarlyUserAuth, &code.to_le_bytes()).await?;
                        if denied {
                            self.end(EndKind::Close).await;
                            return Err(End::Scenario(
                                "sent Early User Authorization Result ACCESS_DENIED".to_owned(),
                            ));
                        }
                    }
                    return Ok(());
                }
                Err(err) => {
                    if is_authenticate || count >= 2 {
                        tracing::debug!(error = %err.error, "CredSSP logon failed");
                        return Err(self.reject(client_version, NtStatus::LOGON_FAILURE).await);
                    }
                    return Err(End::Protocol(format!("CredSSP: {}", err.error)));
                }
            }
        }
    }

    async fn reject(&mut self, client_version: u32, status: NtStatus) -> End {
        let c = self.scenario().credssp.clone();
        let version = client_version.clamp(2, 6);
        if let Some(bytes) = credssp::encode_error_ts_request(version, status, c.error_code) {
            if let Err(e) = self.write(&bytes).await {
                return e;
            }
        }
        self.end(c.after_reject).await;
        End::Scenario(format!("rejected the logon with {status}"))
    }

    /// MCS, channels, security, licensing, capabilities, finalization: the acceptor's own steps.
    async fn finish(&mut self, acceptor: &mut Acceptor) -> Result<(), End> {
        let check_client_info = self.scenario().identity.check_client_info;
        let mut buf = WriteBuf::new();
        // INVARIANT: every iteration either reads a PDU (with a deadline) or moves the acceptor to
        // another state; a step that does neither is an error, so the loop cannot spin.
        let mut idle_steps = 0u32;
        loop {
            if acceptor.get_result().is_some() {
                self.fault(FaultPoint::Connected, None).await?;
                let hold = Duration::from_millis(self.scenario().link.hold_ms);
                self.hold_connected(hold).await;
                return Ok(());
            }
            let before = acceptor.state().name();
            buf.clear();
            let step = match acceptor.next_pdu_hint() {
                Some(hint) => {
                    idle_steps = 0;
                    let frame = self.read_frame(hint, pdu_name(before)).await?;
                    super::planted::hook(&self.raw, super::planted::At::Acceptor(before), &frame)
                        .await
                        .map_err(End::Scenario)?;
                    if before == "BasicSettingsWaitInitial" {
                        self.fault(FaultPoint::McsConnectInitial, Some(acceptor))
                            .await?;
                    }
                    if self.case.is_some() && before != "ChannelConnection" {
                        if let Some(confirm) = mutate::join_confirm_for(&frame) {
                            // A standard-security client that joins channels the acceptor skipped
                            // (the lab's mutated Connect Response asked for encryption): confirm
                            // them so the client goes on to its Security Exchange.
                            self.write(&confirm).await?;
                            continue;
                        }
                    }
                    if before == "SecureSettingsExchange" && check_client_info {
                        self.check_client_info(&frame, acceptor).await?;
                    }
                    acceptor.step(&frame, None, &mut buf)
                }
                None => {
                    idle_steps += 1;
                    if idle_steps > 16 {
                        return Err(End::Protocol(format!("acceptor stuck in state {before}")));
                    }
                    acceptor.step_no_input(&mut buf)
                }
            };
            match step {
                Ok(written) => {
                    if let Some(k) = written.size() {
                        let out = buf[..k].to_vec();
                        let site = match before {
                            "BasicSettingsSendResponse" => Some(Site::ConnectResponse),
                            "ChannelConnection" => {
                                self.channel_writes += 1;
                                Some(Site::Channels(self.channel_writes - 1))
                            }
                            "LicensingExchange" => Some(Site::Licensing),
                            "CapabilitiesSendServer" => Some(Site::DemandActive),
                            _ => None,
                        };
                        match site {
                            Some(site) => self.send(site, &out).await?,
                            None => self.write(&out).await?,
                        }
                        if before == "LicensingExchange" {
                            self.error_pdus(&out).await?;
                        }
                    }
                }
                Err(e) => {
                    // The acceptor may have encoded a refusal (access denied): send it before closing.
                    if !buf.filled().is_empty() {
                        let out = buf.filled().to_vec();
                        let _ = self.write(&out).await;
                    }
                    return Err(End::Protocol(format!("in {before}: {e}")));
                }
            }
            let after = acceptor.state().name();
            match (before, after) {
                ("BasicSettingsSendResponse", _) => {
                    self.fault(FaultPoint::McsConnectResponse, Some(acceptor))
                        .await?
                }
                ("ChannelConnection", "RdpSecurityCommencement") => {
                    self.fault(FaultPoint::Channels, Some(acceptor)).await?
                }
                ("LicensingExchange", _) => {
                    self.fault(FaultPoint::Licensing, Some(acceptor)).await?
                }
                ("CapabilitiesSendServer", _) => {
                    self.fault(FaultPoint::Capabilities, Some(acceptor)).await?
                }
                _ => {}
            }
        }
    }

    /// Server-side mutation `error`: error and disconnect PDUs after the licensing PDU.
    async fn error_pdus(&mut self, licensing: &[u8]) -> Result<(), End> {
        let pdus = match &self.case {
            Some((
                _,
                ServerCase {
                    body: Body::Error(c),
                    ..
                },
            )) if !self.mutated => mutate::error_pdus(c, Some(licensing)),
            _ => return Ok(()),
        };
        self.mutated = true;
        for p in pdus {
            self.write(&p).await?;
        }
        self.after_mutation(Site::Licensing).await
    }

    /// TLS / RDP security with `identity.check_client_info`: deny a Client Info PDU (MS-RDPBCGR
    /// 2.2.1.11) whose credentials match no user.
    async fn check_client_info(&mut self, frame: &[u8], acceptor: &Acceptor) -> Result<(), End> {
        let Ok(X224(data)) = decode::<X224<ironrdp_pdu::mcs::SendDataRequest<'_>>>(frame) else {
            return Ok(());
        };
        let Ok(info) = decode::<ironrdp_pdu::rdp::ClientInfoPdu>(data.user_data.as_ref()) else {
            return Ok(());
        };
        let c = &info.client_info.credentials;
        let ok = self
            .scenario()
            .find_user(&c.username, c.domain.as_deref().filter(|d| !d.is_empty()))
            .is_some_and(|u| u.secret().is_some_and(|p| p == c.password));
        if ok {
            self.outcome.user = Some(c.username.clone());
            return Ok(());
        }
        let mut buf = WriteBuf::new();
        if let Ok(k) = acceptor.encode_access_denied(&mut buf) {
            if k > 0 {
                let out = buf[..k].to_vec();
                self.write(&out).await?;
            }
        }
        self.end(EndKind::Close).await;
        Err(End::Scenario(format!(
            "denied Client Info credentials of `{}`",
            c.username
        )))
    }

    /// Keeps a connected session open (discarding input) until the client leaves or `hold` passes.
    async fn hold_connected(&mut self, hold: Duration) {
        let deadline = tokio::time::Instant::now() + hold;
        let mut sink = [0u8; 4096];
        loop {
            let Some(io) = self.io() else { return };
            match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Err(_) => {
                    // Time is up: tell the client, then close.
                    let dpum = ironrdp_pdu::mcs::DisconnectProviderUltimatum::from_reason(
                        ironrdp_pdu::mcs::DisconnectReason::ProviderInitiated,
                    );
                    if let Ok(bytes) = encode_vec(&X224(dpum)) {
                        let _ = self.write(&bytes).await;
                    }
                    break;
                }
                Ok(Ok(_)) => {}
            }
        }
        self.end(EndKind::Close).await;
    }
}

fn end_name(k: EndKind) -> &'static str {
    match k {
        EndKind::Close => "close",
        EndKind::CloseNotify => "close_notify",
        EndKind::Reset => "reset",
        EndKind::Silence => "silence",
    }
}

fn pdu_name(state: &str) -> &'static str {
    match state {
        "BasicSettingsWaitInitial" => "MCS Connect Initial",
        "ChannelConnection" => "channel connection PDU",
        "SecureSettingsExchange" => "Client Info PDU",
        "CapabilitiesWaitConfirm" => "Confirm Active PDU",
        "ConnectionFinalization" => "finalization PDU",
        _ => "next PDU",
    }
}

fn desktop_size() -> DesktopSize {
    DesktopSize {
        width: 1024,
        height: 768,
    }
}

/// The Demand Active capability sets (MS-RDPBCGR 2.2.7): a minimal, plausible server.
fn server_capabilities() -> Vec<CapabilitySet> {
    let size = desktop_size();
    vec![
        CapabilitySet::General(caps::General {
            major_platform_type: caps::MajorPlatformType::WINDOWS,
            extra_flags: caps::GeneralExtraFlags::FASTPATH_OUTPUT_SUPPORTED
                | caps::GeneralExtraFlags::NO_BITMAP_COMPRESSION_HDR
                | caps::GeneralExtraFlags::LONG_CREDENTIALS_SUPPORTED,
            ..Default::default()
        }),
        CapabilitySet::Bitmap(caps::Bitmap {
            pref_bits_per_pix: 32,
            desktop_width: size.width,
            desktop_height: size.height,
            desktop_resize_flag: false,
            drawing_flags: caps::BitmapDrawingFlags::empty(),
        }),
        CapabilitySet::Order(caps::Order::new(
            caps::OrderFlags::NEGOTIATE_ORDER_SUPPORT
                | caps::OrderFlags::ZERO_BOUNDS_DELTAS_SUPPORT,
            caps::OrderSupportExFlags::empty(),
            0,
            0,
        )),
        CapabilitySet::Pointer(caps::Pointer {
            color_pointer_cache_size: 25,
            pointer_cache_size: 25,
        }),
        CapabilitySet::Input(caps::Input {
            input_flags: caps::InputFlags::SCANCODES
                | caps::InputFlags::MOUSEX
                | caps::InputFlags::FASTPATH_INPUT
                | caps::InputFlags::UNICODE
                | caps::InputFlags::FASTPATH_INPUT_2,
            keyboard_layout: 0,
            keyboard_type: None,
            keyboard_subtype: 0,
            keyboard_function_key: 0,
            keyboard_ime_filename: String::new(),
        }),
        CapabilitySet::VirtualChannel(caps::VirtualChannel {
            flags: caps::VirtualChannelFlags::NO_COMPRESSION,
            chunk_size: None,
        }),
        CapabilitySet::MultiFragmentUpdate(caps::MultifragmentUpdate {
            max_request_size: 8 * 1024 * 1024,
        }),
    ]
}

/// The mutation of `case` for the PDU of `site`, or `None` when the case is for another PDU.
fn apply(case: &ServerCase, site: Site, pdu: &[u8]) -> Option<Vec<u8>> {
    match (&case.body, site) {
        (Body::X224(c), Site::X224Confirm) => Some(mutate::x224_apply(c, pdu)),
        (Body::Credssp(c), Site::TsRequest(round)) => mutate::tsrequest_apply(c, round, pdu),
        (Body::Credssp(c), Site::EarlyUserAuth) => mutate::early_user_auth_apply(c, pdu),
        (Body::Mcs(c), Site::ConnectResponse) => Some(mutate::connect_response_apply(c, pdu)),
        (Body::Channels(c), Site::Channels(i)) => mutate::channels_apply(c, i, pdu),
        (Body::Licensing(c), Site::Licensing) => Some(mutate::licensing_apply(c, pdu)),
        (Body::Capabilities(c), Site::DemandActive) => Some(mutate::demand_active_apply(c, pdu)),
        _ => None,
    }
}
