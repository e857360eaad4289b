//! The fuzzer's connection driver: one TCP connection per case. It steps IronRDP's
//! `ClientConnector` as the probe does (`probe::step`: every read under a deadline) through the
//! valid stages before the fuzzed one: the connector's X.224 Connection Request, TLS with the
//! probe's rustls configuration, CredSSP with IronRDP's `CredsspSequence`, the connector's MCS
//! Connect Initial. At the fuzzed stage the case's PDU (from the stage's encoder in `fuzz::*`) is
//! sent in place of the connector's, and the answer is classified. Everything crosses the probe's
//! taps, so the Trace of a case is a capture `rdprobe analyze` understands.
//!
//! Hand-written still, where the connector cannot do what a case needs: the `channels` stage (the
//! case is all of the stage's PDUs, its joins built from the server's answers to the mutated
//! ones), the standard-RDP-security stages `security` and `licensing` (IronRDP's connector does
//! not encrypt: `rdpsec` drives them from the X.224 confirm) and the RD Gateway stages.
//!
//! INVARIANT: every wait has a deadline (`Target::timeout`, and the FIN grace after a silence), so
//! a case ends in bounded time whatever the target does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ironrdp_connector::credssp::CredsspSequence;
use ironrdp_connector::{ClientConnector, ClientConnectorState};
use ironrdp_core::WriteBuf;
use ironrdp_pdu::nego::SecurityProtocol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::channels::{self, DomainReply};
use super::oracle::ResponseClass;
use super::{Case, EncodeCtx, FuzzStage};
use crate::decode::x224::{self as dx224, Frame, X224};
use crate::net::framed::ReadError;
use crate::probe::step::{self, StepError};
use crate::probe::tap::{SharedTrace, Tap};
use crate::probe::Credentials;
use crate::trace::{Dir, EventKind, Layer, Trace};

/// Largest reply the observer buffers before calling it malformed, in bytes.
pub const MAX_REPLY: usize = 256 * 1024;

/// PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX (MS-RDPBCGR 2.2.1.1.1).
pub const ALL_ENHANCED: u32 = 0x1 | 0x2 | 0x8;

/// Where and how to fuzz.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Name for CredSSP (the SPN host); the address when none was given.
    pub host: String,
    pub credentials: Option<Credentials>,
    /// Deadline for every wait on the target (connect, each reply).
    pub timeout: Duration,
    /// How long to wait for the reply to the mutated PDU before half-closing; the target then has
    /// `timeout` to react (reply or close) before the case counts as a hang. Short values keep
    /// cases that leave the target waiting for more bytes cheap.
    pub quiet: Duration,
    /// requestedProtocols of the valid X.224 request; None picks per stage.
    pub protocols: Option<u32>,
    /// How the target answers the valid PDU of the fuzzed stage: a valid reply for a healthy
    /// server, or what it answers instead (a close, a refusal, a reset, silence), learned before
    /// the first case. Liveness means answering the valid PDU this way; findings are deviations.
    pub baseline: ResponseClass,
}

impl Target {
    pub fn new(addr: SocketAddr) -> Target {
        Target {
            addr,
            host: addr.ip().to_string(),
            credentials: None,
            timeout: Duration::from_secs(2),
            quiet: Duration::from_secs(2),
            protocols: None,
            baseline: ResponseClass::ValidReply,
        }
    }

    /// requestedProtocols of the valid X.224 request for `stage`.
    pub fn requested_protocols(&self, stage: FuzzStage) -> u32 {
        if let Some(p) = self.protocols {
            return p;
        }
        match stage {
            FuzzStage::Mcs | FuzzStage::Channels if self.credentials.is_none() => 0x1,
            // Standard RDP security: PROTOCOL_RDP alone.
            FuzzStage::Security | FuzzStage::Licensing => 0,
            _ => ALL_ENHANCED,
        }
    }
}

/// What one case did.
#[derive(Clone, Debug)]
pub struct CaseRun {
    pub class: ResponseClass,
    /// One line: what the target answered (or why the case did not get to send).
    pub detail: String,
    /// The mutated bytes as sent (the join PDUs concatenated for `channels`).
    pub sent: Vec<u8>,
    pub trace: Trace,
    pub elapsed: Duration,
    /// From sending the (mutated) PDU to the verdict on the answer; None if it was not sent.
    pub answer_time: Option<Duration>,
}

/// How a wait for a reply ended.
enum Judge {
    NeedMore,
    Reply(ResponseClass, String),
}

type Io = Box<dyn IoStream>;
trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// How a case ended before the end of its last stage: with the answer to its PDU (or what
/// happened instead), or in a valid stage before it (`PrefixFailed`, `Refused`, or the class of
/// what ended it).
struct Ended(ResponseClass, String);

fn prefix(detail: impl Into<String>) -> Ended {
    Ended(ResponseClass::PrefixFailed, detail.into())
}

/// Runs one case against the target, recording everything into a Trace.
pub async fn run_case(target: &Target, case: &Case) -> CaseRun {
    let started = Instant::now();
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let shared = SharedTrace::new(Trace::new(unspecified, target.addr));
    let mut sent = Vec::new();
    let mut sent_at = None;
    let (class, detail) = match drive(target, case, &shared, &mut sent, &mut sent_at).await {
        Ok(v) => v,
        Err(Ended(class, detail)) => (class, detail),
    };
    let established = shared.has_event(|k| matches!(k, EventKind::Connected));
    let reset = shared.has_event(|k| matches!(k, EventKind::Rst { .. }));
    if established && !reset && !shared.fin_seen(Dir::C2S) {
        shared.fin(Dir::C2S);
    }
    CaseRun {
        class,
        detail,
        sent,
        trace: shared.snapshot(),
        elapsed: started.elapsed(),
        answer_time: sent_at.map(|t| t.elapsed()),
    }
}

async fn drive(
    target: &Target,
    case: &Case,
    shared: &SharedTrace,
    sent: &mut Vec<u8>,
    sent_at: &mut Option<Instant>,
) -> Result<(ResponseClass, String), Ended> {
    let stage = case.stage();
    let mut run = Run {
        target,
        case,
        shared,
        sent,
        sent_at,
        ctx: EncodeCtx {
            requested_protocols: target.requested_protocols(stage),
            ..EncodeCtx::default()
        },
    };
    if stage.is_gateway() {
        return gateway_stages(run).await;
    }
    let (mut wire, local) = connect(target, shared).await?;
    let requested = SecurityProtocol::from_bits_truncate(run.ctx.requested_protocols);
    let mut connector = connector(target, requested, local);
    let mut buf = BytesMut::new();
    run.x224(&mut connector, &mut wire, local, &mut buf).await?;
    if matches!(stage, FuzzStage::Security | FuzzStage::Licensing) {
        let selected = run.ctx.selected_protocol;
        if selected != 0 {
            return Err(prefix(format!(
                "{stage}: the target selected protocol 0x{selected:x}: the {stage} stage exists \
                 with standard RDP security only (PROTOCOL_RDP, --security rdp)"
            )));
        }
        return rdpsec_stages(run, wire, buf.to_vec()).await;
    }
    let mut io = run.security_upgrade(&mut connector, wire, &mut buf).await?;
    run.mcs(&mut connector, &mut io, &mut buf).await?;
    run.channels(&mut io, buf.to_vec()).await
}

/// TCP to the target, recorded in the trace: the tapped stream and its local address.
async fn connect(
    target: &Target,
    shared: &SharedTrace,
) -> Result<(Tap<TcpStream>, SocketAddr), Ended> {
    use crate::trace::ConnectFailure;
    let tcp = match tokio::time::timeout(target.timeout, TcpStream::connect(target.addr)).await {
        Err(_) => {
            shared.push(EventKind::ConnectFailed(ConnectFailure::TimedOut {
                after_ms: target.timeout.as_millis() as u64,
            }));
            return Err(Ended(
                ResponseClass::Refused,
                "tcp connect timed out".into(),
            ));
        }
        Ok(Err(e)) => {
            let f = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ConnectFailure::Refused
            } else {
                ConnectFailure::Unreachable {
                    detail: e.to_string(),
                }
            };
            shared.push(EventKind::ConnectFailed(f));
            return Err(Ended(
                ResponseClass::Refused,
                format!("tcp connect failed: {e}"),
            ));
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    shared.set_addrs(local, target.addr);
    shared.push(EventKind::Connected);
    Ok((Tap::new(tcp, shared.clone(), Layer::Wire), local))
}

/// One case on its way through the stages: what its PDUs need to know, and where it records
/// what it sent. Each stage either hands on to the next or ends the case (`Err`): with the
/// answer to the case's PDU, or with the valid stage that failed.
struct Run<'a> {
    target: &'a Target,
    case: &'a Case,
    shared: &'a SharedTrace,
    sent: &'a mut Vec<u8>,
    sent_at: &'a mut Option<Instant>,
    ctx: EncodeCtx,
}

/// What a hand-driven stage sequence takes of a [`Run`]: the target, the case, the trace and what
/// was sent when.
type RunParts<'a> = (
    &'a Target,
    &'a Case,
    &'a SharedTrace,
    &'a mut Vec<u8>,
    &'a mut Option<Instant>,
);

impl<'a> Run<'a> {
    /// The run's target, case, trace and record of what was sent (for the hand-driven stages).
    fn parts(self) -> RunParts<'a> {
        (self.target, self.case, self.shared, self.sent, self.sent_at)
    }
}

impl Run<'_> {
    /// Sends the case's PDU and judges the answer (`buf`: bytes already read past the last
    /// valid reply).
    async fn send_case<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        bytes: &[u8],
        buf: Vec<u8>,
        judge: fn(&[u8]) -> Judge,
        short: bool,
    ) -> Ended {
        note_sent(
            self.shared,
            self.case.stage(),
            bytes,
            self.sent,
            self.sent_at,
        );
        if let Err(e) = write(io, bytes, self.target.timeout).await {
            let (class, detail) = write_failed(&e);
            return Ended(class, detail);
        }
        let (class, detail) = observe_with(io, self.target, self.shared, buf, judge, short).await;
        Ended(class, detail)
    }

    /// The connector's Connection Request, or the case's in its place; then the confirm, stepped
    /// by the connector (the selected protocol goes to `ctx`).
    async fn x224(
        &mut self,
        connector: &mut ClientConnector,
        wire: &mut Tap<TcpStream>,
        local: SocketAddr,
        buf: &mut BytesMut,
    ) -> Result<(), Ended> {
        let timeout = self.target.timeout;
        let requested = SecurityProtocol::from_bits_truncate(self.ctx.requested_protocols);
        let mut out = WriteBuf::new();
        connector
            .initiate_with_security_protocol(requested, &mut out)
            .map_err(|e| prefix(format!("x224 request: {e}")))?;
        if let Case::X224(c) = self.case {
            let bytes = super::x224::encode(&c.mutations, &self.ctx);
            let short = short_tpkt(&bytes);
            return Err(self
                .send_case(wire, &bytes, Vec::new(), judge_x224, short)
                .await);
        }
        write(wire, out.filled(), timeout)
            .await
            .map_err(|e| prefix(format!("x224 request: {e}")))?;
        match step::step(connector, wire, buf, &mut out, timeout).await {
            Ok(_) => {}
            Err(StepError::Read(e)) => {
                let (class, detail) = read_outcome(e, buf);
                return Err(Ended(class, format!("x224 confirm: {detail}")));
            }
            Err(StepError::Rejected { pdu, error }) => match dx224::decode_tpkt(&pdu) {
                X224::NegotiationFailure { code } => {
                    return Err(prefix(format!(
                        "x224: the target answered RDP_NEG_FAILURE {} (0x{code:08x}) to requestedProtocols 0x{:x}",
                        dx224::failure_code_name(code),
                        self.ctx.requested_protocols
                    )))
                }
                // A server that selects standard RDP security whatever was offered (IronRDP
                // refuses a protocol it did not request): a connector for standard RDP security
                // takes the same confirm, so the stages after it run as against any such server.
                X224::ConnectionConfirm { selected: 0, .. } => {
                    *connector = standard_rdp_connector(self.target, local, &pdu)
                        .map_err(|e| prefix(format!("x224 confirm: {e}")))?;
                }
                X224::ConnectionConfirm { .. } => {
                    return Err(prefix(format!("x224 confirm: {error}")))
                }
                other => return Err(prefix(format!("x224: unexpected reply {other:?}"))),
            },
        }
        self.ctx.selected_protocol = match &connector.state {
            ClientConnectorState::EnhancedSecurityUpgrade { selected_protocol } => {
                selected_protocol.bits()
            }
            _ => 0,
        };
        Ok(())
    }

    /// TLS with the probe's rustls (or the case's ClientHello in its place), then CredSSP with
    /// IronRDP's `CredsspSequence` (one round replaced by the case's) when the target selected
    /// it: the stream the MCS stage runs on.
    async fn security_upgrade(
        &mut self,
        connector: &mut ClientConnector,
        mut wire: Tap<TcpStream>,
        buf: &mut BytesMut,
    ) -> Result<Io, Ended> {
        let selected = self.ctx.selected_protocol;
        if selected & ALL_ENHANCED == 0 {
            match self.case {
                Case::Tls(_) => {
                    return Err(prefix(format!(
                        "tls: the target selected protocol 0x{selected:x} (no TLS)"
                    )))
                }
                Case::Credssp(_) => {
                    return Err(prefix(format!(
                        "credssp: the target selected protocol 0x{selected:x} (no CredSSP)"
                    )))
                }
                _ => {}
            }
            connector.mark_security_upgrade_as_done();
            return Ok(Box::new(wire));
        }
        if let Case::Tls(c) = self.case {
            let bytes = super::tls::encode(&c.mutations, &self.ctx);
            let short = short_tls(&bytes);
            return Err(self
                .send_case(&mut wire, &bytes, Vec::new(), judge_tls, short)
                .await);
        }
        if !buf.is_empty() {
            return Err(prefix("tls: the target sent bytes after the X.224 confirm"));
        }
        let (mut inner, certificates) = tls_upgrade(self.target, self.shared, wire).await?;
        connector.mark_security_upgrade_as_done();
        if !connector.should_perform_credssp() {
            if matches!(self.case, Case::Credssp(_)) {
                return Err(prefix(format!(
                    "credssp: the target selected protocol 0x{selected:x} (no CredSSP)"
                )));
            }
            return Ok(inner);
        }
        let leaf = certificates.first().cloned();
        let leaf = || {
            leaf.clone()
                .ok_or_else(|| prefix("tls: no server certificate"))
        };
        let target = self.target;
        match self.case {
            Case::Credssp(c) if c.round > 1 => {
                let later = Later {
                    case: c,
                    shared: self.shared,
                    sent: self.sent,
                    sent_at: self.sent_at,
                    ctx: &self.ctx,
                };
                let leaf = leaf()?;
                let end = credssp_exchange(target, &mut inner, selected, &leaf, Some(later));
                Err(match end.await? {
                    CredsspEnd::Observed(class, detail) => Ended(class, detail),
                    CredsspEnd::Done(_) => prefix(format!(
                        "credssp: the exchange ended before round {}",
                        c.round
                    )),
                })
            }
            Case::Credssp(c) => {
                let bytes = super::credssp::encode(&c.mutations, &self.ctx);
                let short = short_der(&bytes);
                Err(self
                    .send_case(&mut inner, &bytes, Vec::new(), judge_credssp, short)
                    .await)
            }
            _ => {
                *buf = match credssp_exchange(target, &mut inner, selected, &leaf()?, None).await? {
                    CredsspEnd::Done(rest) => rest,
                    CredsspEnd::Observed(_, detail) => return Err(prefix(detail)),
                };
                connector.mark_credssp_as_done();
                Ok(inner)
            }
        }
    }

    /// The connector's Connect Initial, or the case's in its place; then the Connect Response,
    /// whose channel ids go to `ctx`.
    async fn mcs(
        &mut self,
        connector: &mut ClientConnector,
        io: &mut Io,
        buf: &mut BytesMut,
    ) -> Result<(), Ended> {
        let timeout = self.target.timeout;
        let mut out = WriteBuf::new();
        step::step(connector, io, buf, &mut out, timeout)
            .await
            .map_err(|e| prefix(format!("mcs connect initial: {e}")))?;
        if let Case::Mcs(c) = self.case {
            let bytes = super::mcs::encode(&c.mutations, &self.ctx);
            let short = short_tpkt(&bytes);
            return Err(self
                .send_case(io, &bytes, buf.to_vec(), judge_mcs, short)
                .await);
        }
        let ci =
            joins_awaited(out.filled()).map_err(|e| prefix(format!("mcs connect initial: {e}")))?;
        write(io, &ci, timeout)
            .await
            .map_err(|e| prefix(format!("mcs connect initial: {e}")))?;
        let pdu = match step::step(connector, io, buf, &mut out, timeout).await {
            Ok((pdu, _)) => pdu.unwrap_or_default(),
            Err(StepError::Read(e)) => {
                let (class, detail) = read_outcome(e, buf);
                return Err(Ended(class, format!("mcs connect response: {detail}")));
            }
            // IronRDP also refuses a valid response it cannot go on from (a server that wants
            // standard RDP security encryption): the channel joins need only the channel ids.
            Err(StepError::Rejected { pdu, error }) => match judge_mcs_pdu(&pdu) {
                (ResponseClass::ValidReply, _) => {
                    self.shared.push(EventKind::Note(format!(
                        "rdprobe fuzz: the client goes on without IronRDP after the connect response: {error}"
                    )));
                    pdu
                }
                (_, what) => return Err(prefix(format!("mcs: {what}"))),
            },
        };
        let facts = crate::decode::mcs::connect_response_facts(pdu.get(7..).unwrap_or_default())
            .map_err(|e| prefix(format!("mcs connect response: {e}")))?;
        self.ctx.io_channel = facts
            .get("io_channel")
            .and_then(|v| v.as_u64())
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(|| prefix("mcs connect response: no I/O channel"))?;
        self.ctx.static_channels = facts
            .get("channel_ids")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().and_then(|v| u16::try_from(v).ok()))
                    .filter(|v| *v != 0)
                    .collect()
            })
            .unwrap_or_default();
        Ok(())
    }

    /// The channels stage. The case is every PDU of the stage (erect domain, attach user, the
    /// joins, mutated together, the joins built from the server's answers), so the connector's
    /// own channel connection is not stepped.
    async fn channels(
        &mut self,
        io: &mut Io,
        rest: Vec<u8>,
    ) -> Result<(ResponseClass, String), Ended> {
        let (target, shared, stage) = (self.target, self.shared, self.case.stage());
        let Case::Channels(c) = self.case else {
            return Err(prefix(format!("stage {stage} is not fuzzable")));
        };
        let one = channels::encode_phase_one(&c.mutations);
        note_sent(shared, stage, &one, self.sent, self.sent_at);
        if let Err(e) = write(io, &one, target.timeout).await {
            return Ok(write_failed(&e));
        }
        let (pdu, rest) =
            match read_domain_reply(io, target, shared, rest, "the attach user confirm").await {
                Ok(v) => v,
                Err(outcome) => return Ok(outcome),
            };
        match channels::domain_reply(&pdu) {
            Some(DomainReply::AttachConfirm {
                result: 0,
                user: Some(u),
            }) => self.ctx.user_channel = Some(u),
            other => {
                return Ok(refused_confirm(other, "an", "attach user confirm", |r| {
                    matches!(r, DomainReply::AttachConfirm { .. })
                }))
            }
        }
        let joins = channels::encode_joins(&c.mutations, &self.ctx);
        let mut buf = rest;
        for (k, join) in joins.iter().enumerate() {
            self.sent.extend_from_slice(join);
            if let Err(e) = write(io, join, target.timeout).await {
                return Ok(write_failed(&e));
            }
            let waiting_for = format!("join confirm {k}");
            let taken = std::mem::take(&mut buf);
            let (pdu, rest) = match read_domain_reply(io, target, shared, taken, &waiting_for).await
            {
                Ok(v) => v,
                Err(outcome) => return Ok(outcome),
            };
            buf = rest;
            match channels::domain_reply(&pdu) {
                Some(DomainReply::JoinConfirm { result: 0, .. }) => {}
                other => {
                    return Ok(refused_confirm(other, "a", "channel join confirm", |r| {
                        matches!(r, DomainReply::JoinConfirm { .. })
                    }))
                }
            }
        }
        Ok((
            ResponseClass::ValidReply,
            format!("{} channel joins confirmed", joins.len()),
        ))
    }
}

/// The probe's IronRDP client for `requested`, offering the static channels of the fuzzer's valid
/// Connect Initial ([`super::mcs::BASE_CHANNELS`]) so that the `channels` stage joins the same
/// channels whichever Connect Initial came before. Its password stays empty: CredSSP takes the
/// target's credentials itself, and nothing else the session sends may carry one.
fn connector(target: &Target, requested: SecurityProtocol, local: SocketAddr) -> ClientConnector {
    let user = target.credentials.as_ref().map(|c| Credentials {
        user: c.user.clone(),
        domain: c.domain.clone(),
        password: String::new(),
    });
    let config = crate::probe::client_config(
        user.as_ref(),
        requested,
        Some(super::x224::BASE_COOKIE.to_owned()),
    );
    let mut connector = ClientConnector::new(config, local);
    for name in super::mcs::BASE_CHANNELS {
        if let Some(name) = ironrdp_pdu::gcc::ChannelName::from_utf8(name) {
            connector.attach_dynamic_static_channel(NamedChannel(name));
        }
    }
    connector
}

/// The connector's Connect Initial without RNS_UD_CS_SUPPORT_SKIP_CHANNELJOIN (MS-RDPBCGR
/// 2.2.1.3.2), which IronRDP always announces: a server that may skip the channel joins never
/// awaits them, and the `channels` stage fuzzes the joins. The rest is the connector's, re-encoded
/// by IronRDP.
fn joins_awaited(connect_initial: &[u8]) -> Result<Vec<u8>, String> {
    use ironrdp_pdu::gcc::ClientEarlyCapabilityFlags as F;
    use ironrdp_pdu::mcs::ConnectInitial;
    use ironrdp_pdu::x224::{X224Data, X224};
    let data = ironrdp_core::decode::<X224<X224Data<'_>>>(connect_initial)
        .map_err(|e| e.to_string())?
        .0
        .data;
    let ci = ironrdp_core::decode::<ConnectInitial>(&data).map_err(|e| e.to_string())?;
    let mut blocks = ci.conference_create_request.into_gcc_blocks();
    if let Some(f) = blocks.core.optional_data.early_capability_flags.as_mut() {
        f.remove(F::SUPPORT_SKIP_CHANNELJOIN);
    }
    let ci = ConnectInitial {
        conference_create_request: ironrdp_pdu::gcc::ConferenceCreateRequest::new(blocks)
            .map_err(|e| e.to_string())?,
        ..ci
    };
    let data = ironrdp_core::encode_vec(&ci).map_err(|e| e.to_string())?;
    ironrdp_core::encode_vec(&X224(X224Data {
        data: std::borrow::Cow::Owned(data),
    }))
    .map_err(|e| e.to_string())
}

/// A connector for standard RDP security that has taken `confirm` (PROTOCOL_RDP selected) in
/// answer to a Connection Request like the one already sent.
fn standard_rdp_connector(
    target: &Target,
    local: SocketAddr,
    confirm: &[u8],
) -> Result<ClientConnector, ironrdp_connector::ConnectorError> {
    use ironrdp_connector::Sequence as _;
    let none = SecurityProtocol::empty();
    let mut c = connector(target, none, local);
    let mut out = WriteBuf::new();
    c.initiate_with_security_protocol(none, &mut out)?;
    out.clear();
    c.step(confirm, None, &mut out)?;
    Ok(c)
}

/// A static virtual channel offered by name only: a session never gets as far as using it.
#[derive(Debug)]
struct NamedChannel(ironrdp_pdu::gcc::ChannelName);

ironrdp_core::impl_as_any!(NamedChannel);

impl ironrdp_svc::SvcProcessor for NamedChannel {
    fn channel_name(&self) -> ironrdp_pdu::gcc::ChannelName {
        self.0.clone()
    }

    fn process(&mut self, _payload: &[u8]) -> ironrdp_pdu::PduResult<Vec<ironrdp_svc::SvcMessage>> {
        Ok(Vec::new())
    }
}

impl ironrdp_svc::SvcClientProcessor for NamedChannel {}

/// The TLS upgrade with the probe's rustls configuration (a recording verifier, the key log in the
/// trace): the inner stream, tapped, and the server's certificate chain.
async fn tls_upgrade(
    target: &Target,
    shared: &SharedTrace,
    wire: Tap<TcpStream>,
) -> Result<(Io, Vec<Vec<u8>>), Ended> {
    let (config, verifier) =
        crate::probe::tls::rustls_config(shared.clone(), crate::probe::tls::TlsVersions::Both);
    let conn = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("rdp-server")
        .map_err(|e| prefix(format!("tls: {e}")))?
        .to_owned();
    let tls = match tokio::time::timeout(target.timeout, conn.connect(name, wire)).await {
        Err(_) => return Err(prefix("tls: handshake timed out")),
        Ok(Err(e)) => {
            shared.push(EventKind::TlsError {
                message: e.to_string(),
            });
            return Err(prefix(format!("tls: {e}")));
        }
        Ok(Ok(s)) => s,
    };
    let info = crate::probe::tls::rustls_session_info(tls.get_ref().1, &verifier);
    let certificates = info.certificates.clone();
    shared.push(EventKind::TlsSession(info));
    Ok((
        Box::new(Tap::new(tls, shared.clone(), Layer::Inner)),
        certificates,
    ))
}

/// Encryption methods offered for standard RDP security: 40-bit, 128-bit, 56-bit, FIPS
/// (MS-RDPBCGR 2.2.1.3.3).
const RDP_METHODS: u32 = 0x01 | 0x02 | 0x08 | 0x10;

/// Standard RDP security (MS-RDPBCGR 5.3) from the X.224 confirm: the Connect Initial offering
/// every method, the channel connection (IronRDP's sequence), then the Security Exchange and
/// Client Info PDUs (mutated for `security`) encrypted with the session keys of the client random
/// sent, and for `licensing` the server's first licensing PDU and the client's answer, mutated.
/// The crypto is `rdpsec`'s, the probe's own.
async fn rdpsec_stages(
    run: Run<'_>,
    mut wire: Tap<TcpStream>,
    rest: Vec<u8>,
) -> Result<(ResponseClass, String), Ended> {
    let (target, case, shared, sent, sent_at) = run.parts();
    use crate::rdpsec::client as rc;
    use crate::rdpsec::flags::{SEC_ENCRYPT, SEC_LICENSE_ENCRYPT_CS, SEC_LICENSE_PKT};
    use crate::rdpsec::{cert, crypt::SecurityContext, gcc, keys, Method};
    let stage = case.stage();
    let walk = |what: &str, e: rc::WalkError| prefix(format!("{what}: {e}"));
    // --- mcs ---
    let ci = gcc::connect_initial(&gcc::InitialOptions::new(RDP_METHODS))
        .map_err(|e| prefix(format!("mcs connect initial: {e}")))?;
    write(&mut wire, &ci, target.timeout)
        .await
        .map_err(|e| prefix(format!("mcs connect initial: {e}")))?;
    let (pdu, rest) = read_pdu(&mut wire, target.timeout, rest, tpkt_len)
        .await
        .map_err(|e| Ended(e.0, format!("mcs connect response: {}", e.1)))?;
    let server = gcc::parse_connect_response(&pdu)
        .map_err(|e| prefix(format!("mcs connect response: {e}")))?;
    if server.result != 0 {
        return Err(prefix(format!(
            "mcs connect response {}",
            crate::decode::mcs::mcs_result_name(server.result)
        )));
    }
    let mut leftover = bytes::BytesMut::from(&rest[..]);
    // --- channels ---
    let user = rc::join_channels(&mut wire, &mut leftover, &server, target.timeout)
        .await
        .map_err(|e| walk("channels", e))?;
    // --- security exchange (2.2.1.10) and client info (2.2.1.11) ---
    let none = Vec::new();
    let muts = match case {
        Case::Security(c) => &c.mutations,
        _ => &none,
    };
    let mut ctx = if server.encryption_method == 0 {
        None
    } else {
        let method = Method::from_bit(server.encryption_method).ok_or_else(|| {
            walk(
                "security",
                rc::WalkError::UnknownMethod(server.encryption_method),
            )
        })?;
        let server_random = server
            .server_random
            .ok_or_else(|| walk("security", rc::WalkError::NoServerRandom))?;
        let key = cert::server_public_key(&server.server_certificate)
            .map_err(|e| walk("security", e.into()))?;
        let client_random = rc::random32();
        let encrypted = cert::encrypt_client_random(&key, &client_random);
        if let Some(ud) = super::security::exchange_user_data(muts, &encrypted) {
            let pdu = rc::send_data_request(user, server.io_channel, ud)
                .map_err(|e| walk("security exchange", e))?;
            if stage == FuzzStage::Security {
                note_sent(shared, stage, &pdu, sent, sent_at);
            }
            if let Err(e) = write(&mut wire, &pdu, target.timeout).await {
                return match stage {
                    FuzzStage::Security => Ok(write_failed(&e)),
                    _ => Err(prefix(format!("security exchange: {e}"))),
                };
            }
        }
        Some(match method {
            Method::Fips => {
                SecurityContext::fips(&keys::derive_fips(&client_random, &server_random))
            }
            m => SecurityContext::rc4(&keys::derive_rc4(m, &client_random, &server_random)),
        })
    };
    let client = shared.snapshot().client;
    let user_name = target
        .credentials
        .as_ref()
        .map(|c| c.user.clone())
        .unwrap_or_default();
    let info = super::security::info_packet(muts, &user_name, client);
    let (flags, encrypt) = super::security::info_header(muts, ctx.is_some());
    let ud = match ctx.as_mut() {
        Some(c) if encrypt => rc::seal(c, flags, &info),
        _ => crate::wire::share::secured(flags, &info),
    };
    let pdu =
        rc::send_data_request(user, server.io_channel, ud).map_err(|e| walk("client info", e))?;
    if stage == FuzzStage::Security {
        note_sent(shared, stage, &pdu, sent, sent_at);
        if let Err(e) = write(&mut wire, &pdu, target.timeout).await {
            return Ok(write_failed(&e));
        }
        let buf = leftover.to_vec();
        return Ok(observe_with(&mut wire, target, shared, buf, judge_rdpsec_reply, false).await);
    }
    write(&mut wire, &pdu, target.timeout)
        .await
        .map_err(|e| prefix(format!("client info: {e}")))?;

    // --- licensing (2.2.1.12) ---
    let Case::Licensing(lc) = case else {
        return Err(prefix(format!("stage {stage} is not fuzzable")));
    };
    // A context that never decrypts anything when the server does not encrypt.
    let mut cipher = ctx.unwrap_or_else(|| {
        SecurityContext::rc4(&keys::derive_rc4(Method::Rc4_128, &[0; 32], &[0; 32]))
    });
    let mut bad = 0u32;
    let opened = loop {
        match rc::read_frame(&mut wire, &mut leftover, target.timeout)
            .await
            .map_err(|e| walk("licensing", e))?
        {
            rc::Pdu::FastPath(p) => rc::skip_fast_path(&mut cipher, &p, &mut bad),
            rc::Pdu::Tpkt(p) => match rc::open(&mut cipher, &p, &mut bad) {
                Ok(Some(o)) => break o,
                Ok(None) => return Err(prefix("licensing: the server sent a non-data PDU")),
                Err(e) => return Err(walk("licensing", e)),
            },
        }
    };
    if opened.flags & SEC_LICENSE_PKT == 0 {
        return Err(prefix(format!(
            "licensing: the server sent no licensing PDU (security flags 0x{:04x})",
            opened.flags
        )));
    }
    let flow = match opened.payload.first() {
        Some(&crate::wire::share::LICENSE_REQUEST) => "after the server's license request",
        _ => "after the server's STATUS_VALID_CLIENT",
    };
    let (valid, encrypt_license) = match opened.payload.first() {
        Some(&crate::wire::share::LICENSE_REQUEST) => {
            // Server License Request: IronRDP's sequence answers with a New License Request.
            let mut lic = ironrdp_connector::LicenseExchangeSequence::new(
                server.io_channel,
                user_name.clone(),
                None,
                [0; 4],
                std::sync::Arc::new(rc::NoLicenseCache),
            );
            let hdr = crate::wire::share::secured(opened.flags & !SEC_ENCRYPT, &opened.payload);
            let input = rc::indication(opened.initiator, opened.channel, hdr)
                .map_err(|e| walk("licensing", e))?;
            let mut out = WriteBuf::new();
            ironrdp_connector::Sequence::step(&mut lic, &input, None, &mut out)
                .map_err(|e| prefix(format!("licensing: {e}")))?;
            let req = ironrdp_core::decode::<
                ironrdp_pdu::x224::X224<ironrdp_pdu::mcs::SendDataRequest<'_>>,
            >(out.filled())
            .map_err(|e| prefix(format!("licensing: {e}")))?
            .0;
            let ud = req.user_data.as_ref();
            let msg = ud.get(4..).unwrap_or_default().to_vec();
            (msg, opened.flags & SEC_LICENSE_ENCRYPT_CS != 0)
        }
        _ => {
            // An error alert (STATUS_VALID_CLIENT): the server goes on by itself; let what it
            // sends meanwhile pass so the answer judged is the one to the case.
            let until = Instant::now() + target.quiet;
            for _ in 0..16 {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rc::read_frame(&mut wire, &mut leftover, left).await {
                    Ok(_) => {}
                    Err(rc::WalkError::Timeout(_)) => break,
                    Err(e) => return Err(walk("licensing", e)),
                }
            }
            (super::licensing::valid_client_answer(), false)
        }
    };
    let (flags, msg) = super::licensing::encode(&lc.mutations, &valid);
    let ud = if encrypt_license {
        rc::seal(&mut cipher, flags, &msg)
    } else {
        crate::wire::share::secured(flags, &msg)
    };
    let pdu =
        rc::send_data_request(user, server.io_channel, ud).map_err(|e| walk("licensing", e))?;
    note_sent(shared, stage, &pdu, sent, sent_at);
    if let Err(e) = write(&mut wire, &pdu, target.timeout).await {
        return Ok(write_failed(&e));
    }
    let buf = leftover.to_vec();
    let (class, detail) =
        observe_with(&mut wire, target, shared, buf, judge_rdpsec_reply, false).await;
    Ok((class, format!("{flow}: {detail}")))
}

/// What a server in standard RDP security sends after the Client Info or a client licensing
/// PDU: a Send Data Indication (a licensing PDU, a Demand Active, …) is a valid reply, a license
/// error alert other than STATUS_VALID_CLIENT (readable when in the clear) or a Disconnect
/// Provider Ultimatum an error reply.
fn judge_rdpsec_reply(b: &[u8]) -> Judge {
    let fast_path = Judge::Reply(ResponseClass::ValidReply, "fast-path PDU".into());
    judge_framed(b, fast_path, |pdu| {
        let (class, what) = judge_rdpsec_pdu(pdu);
        Judge::Reply(class, what)
    })
}

/// Judges a reply framed as TPKT or fast-path: a whole TPKT PDU by `tpkt`, a fast-path PDU in its
/// place as `fast_path`; an incomplete one needs more, an invalid frame is malformed.
fn judge_framed(b: &[u8], fast_path: Judge, tpkt: impl FnOnce(&[u8]) -> Judge) -> Judge {
    match dx224::frame(b) {
        Frame::Incomplete => Judge::NeedMore,
        Frame::Invalid(what) => Judge::Reply(ResponseClass::MalformedReply, what),
        Frame::FastPath(_) => fast_path,
        Frame::Tpkt(n) => tpkt(&b[..n]),
    }
}

fn judge_rdpsec_pdu(pdu: &[u8]) -> (ResponseClass, String) {
    use crate::rdpsec::flags::{SEC_ENCRYPT, SEC_LICENSE_PKT};
    if let Ok(ind) = ironrdp_pdu::mcs::decode_send_data_indication(pdu) {
        let ud: &[u8] = ind.user_data;
        let Some(h) = ud.get(..4) else {
            return (
                ResponseClass::MalformedReply,
                format!("send data indication with {} bytes of user data", ud.len()),
            );
        };
        let flags = u16::from_le_bytes([h[0], h[1]]);
        // A license error message in the clear: security header, preamble, dwErrorCode.
        if flags & SEC_LICENSE_PKT != 0
            && flags & SEC_ENCRYPT == 0
            && ud.get(4) == Some(&crate::wire::share::ERROR_ALERT)
        {
            let code = crate::wire::cursor::le32(ud, 8).unwrap_or(0);
            return if code == super::licensing::STATUS_VALID_CLIENT {
                (
                    ResponseClass::ValidReply,
                    "license error alert STATUS_VALID_CLIENT".into(),
                )
            } else {
                (
                    ResponseClass::ErrorReply,
                    format!("license error alert 0x{code:08x}"),
                )
            };
        }
        return (
            ResponseClass::ValidReply,
            format!("server pdu with security flags 0x{flags:04x}"),
        );
    }
    match dx224::decode_tpkt(pdu) {
        X224::Data { user_data_offset } => {
            match crate::decode::mcs::classify_domain_pdu(&pdu[user_data_offset.min(pdu.len())..]) {
                Some(("disconnect provider ultimatum", _)) => (
                    ResponseClass::ErrorReply,
                    "disconnect provider ultimatum".into(),
                ),
                Some((name, _)) => (ResponseClass::MalformedReply, format!("unexpected {name}")),
                None => (ResponseClass::MalformedReply, "unreadable MCS PDU".into()),
            }
        }
        X224::DisconnectRequest => (ResponseClass::ErrorReply, "X.224 disconnect request".into()),
        other => (
            ResponseClass::MalformedReply,
            format!("unexpected X.224 PDU {other:?}"),
        ),
    }
}

/// Frames a TPKT or fast-path PDU for [`read_pdu`].
fn tpkt_len(b: &[u8]) -> Result<Option<usize>, String> {
    match dx224::frame(b) {
        Frame::Tpkt(n) | Frame::FastPath(n) => Ok(Some(n)),
        Frame::Incomplete => Ok(None),
        Frame::Invalid(what) => Err(what),
    }
}

/// Records the mutated PDU about to be sent: a note in the trace, its bytes, and the time of the
/// first one.
fn note_sent(
    shared: &SharedTrace,
    stage: FuzzStage,
    bytes: &[u8],
    sent: &mut Vec<u8>,
    sent_at: &mut Option<Instant>,
) {
    shared.push(EventKind::Note(format!(
        "rdprobe fuzz: mutated {stage} PDU of {} bytes",
        bytes.len()
    )));
    sent.extend_from_slice(bytes);
    sent_at.get_or_insert_with(Instant::now);
}

/// Writes and flushes `bytes` within `timeout`; a target that stops reading (its receive window
/// stays shut) ends the write with `TimedOut`.
async fn write<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let w = async {
        s.write_all(bytes).await?;
        s.flush().await
    };
    match tokio::time::timeout(timeout, w).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "write timed out after {} ms: the target stopped reading",
                timeout.as_millis()
            ),
        )),
    }
}

fn write_failed(e: &std::io::Error) -> (ResponseClass, String) {
    match e.kind() {
        std::io::ErrorKind::TimedOut => (ResponseClass::Silence, e.to_string()),
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => (
            ResponseClass::Reset,
            format!("reset while the fuzzer was sending: {e}"),
        ),
        _ => (ResponseClass::Close, format!("send failed: {e}")),
    }
}

/// Reads one PDU framed by `frame` (its total length once the header is readable). Errors carry
/// the class of what happened instead (close, reset, silence, malformed).
async fn read_pdu<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    timeout: Duration,
    buf: Vec<u8>,
    frame: impl Fn(&[u8]) -> Result<Option<usize>, String>,
) -> Result<(Vec<u8>, Vec<u8>), (ResponseClass, String)> {
    use crate::net::framed::{Framing, Reader};
    let mut buf = bytes::BytesMut::from(&buf[..]);
    let reader = Reader {
        max_len: MAX_REPLY,
        exact: false,
    };
    let r = reader
        .read_within(s, &mut buf, timeout, |b| {
            frame(b).map(|n| n.map_or(Framing::Need(1), Framing::Pdu))
        })
        .await;
    match r {
        Ok(pdu) => Ok((pdu.to_vec(), buf.to_vec())),
        Err(e) => Err(read_outcome(e, &buf)),
    }
}

/// The class of a read that got no PDU (`buf`: the bytes of an incomplete one).
fn read_outcome(e: ReadError, buf: &[u8]) -> (ResponseClass, String) {
    match e {
        ReadError::Timeout => (
            ResponseClass::Silence,
            "no reply before the deadline".into(),
        ),
        ReadError::Closed => eof_class(buf),
        ReadError::Io(e) => read_error_class(&e, buf),
        ReadError::Length { len } => (
            ResponseClass::MalformedReply,
            format!("reply length {len} out of range"),
        ),
        ReadError::Overflow { .. } => (ResponseClass::MalformedReply, "reply too long".into()),
        ReadError::Framing(what) => (ResponseClass::MalformedReply, what),
    }
}

fn eof_class(buf: &[u8]) -> (ResponseClass, String) {
    if buf.is_empty() {
        (ResponseClass::Close, "closed without a reply".into())
    } else {
        (
            ResponseClass::MalformedReply,
            format!("closed after {} bytes of an incomplete reply", buf.len()),
        )
    }
}

fn read_error_class(e: &std::io::Error, buf: &[u8]) -> (ResponseClass, String) {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe if buf.is_empty() => {
            (ResponseClass::Reset, "reset without a reply".into())
        }
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => (
            ResponseClass::MalformedReply,
            format!("reset after {} bytes of an incomplete reply", buf.len()),
        ),
        // rustls: a FIN without close_notify.
        K::UnexpectedEof => (
            ResponseClass::Close,
            "closed (no TLS close_notify) without a reply".into(),
        ),
        // rustls: an alert from the peer, or undecryptable records.
        K::InvalidData => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(a)) => {
                (ResponseClass::ErrorReply, format!("TLS alert {a:?}"))
            }
            _ => (ResponseClass::MalformedReply, format!("TLS error: {e}")),
        },
        _ => (ResponseClass::Reset, format!("read failed: {e}")),
    }
}

async fn observe<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    target: &Target,
    shared: &SharedTrace,
    judge: fn(&[u8]) -> Judge,
    short: bool,
) -> (ResponseClass, String) {
    observe_with(s, target, shared, Vec::new(), judge, short).await
}

/// Records that the fuzzer gave up waiting for the target (before it half-closes), so the
/// capture reads as "timed out waiting for the server", as a probe's would.
fn push_timeout(shared: &SharedTrace, after: Duration) {
    shared.push(EventKind::Timeout {
        waiting_for: Dir::S2C,
        after_ms: after.as_millis() as u64,
    });
}

/// Waits for the reply to the mutated PDU and classifies it. `short`: the PDU's own length field
/// promised more bytes than were sent, so the target will wait for them: half-close at once
/// instead of waiting `quiet` first (the classes are the same, the case is much cheaper).
async fn observe_with<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    target: &Target,
    shared: &SharedTrace,
    mut buf: Vec<u8>,
    judge: fn(&[u8]) -> Judge,
    short: bool,
) -> (ResponseClass, String) {
    if short {
        return silence_then_fin(s, target, shared, buf, judge, false).await;
    }
    let deadline = tokio::time::Instant::now() + target.quiet;
    loop {
        if !buf.is_empty() {
            if let Judge::Reply(class, detail) = judge(&buf) {
                return (class, detail);
            }
        }
        if buf.len() > MAX_REPLY {
            return (ResponseClass::MalformedReply, "reply too long".into());
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => {
                push_timeout(shared, target.quiet);
                return silence_then_fin(s, target, shared, buf, judge, true).await;
            }
            Ok(Ok(0)) => return eof_class(&buf),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return read_error_class(&e, &buf),
        }
    }
}

/// Whether a TPKT PDU (RFC 1006) declares more bytes than `b` holds.
fn short_tpkt(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] == 3 && usize::from(u16::from_be_bytes([b[2], b[3]])) > b.len()
}

/// Whether the TLS records in `b` (RFC 8446 5.1) declare more bytes than it holds.
fn short_tls(b: &[u8]) -> bool {
    let mut at = 0usize;
    while at < b.len() {
        let Some(h) = b.get(at..at + 5) else {
            return true;
        };
        at += 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
    }
    at > b.len()
}

/// Whether a DER TLV declares more bytes than `b` holds.
fn short_der(b: &[u8]) -> bool {
    crate::decode::credssp::der_frame_len(b).is_some_and(|n| n > b.len())
}

/// No (complete) reply within `quiet`: half-close and give the target `timeout` to react. A reply
/// that still arrives is judged as usual (the target was slow); a close means it was waiting for
/// more bytes; nothing at all is a hang.
async fn silence_then_fin<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    target: &Target,
    shared: &SharedTrace,
    mut buf: Vec<u8>,
    judge: fn(&[u8]) -> Judge,
    timeout_recorded: bool,
) -> (ResponseClass, String) {
    let quiet = target.quiet.as_millis();
    let _ = tokio::time::timeout(target.timeout, s.shutdown()).await;
    let deadline = tokio::time::Instant::now() + target.timeout;
    let mut chunk = [0u8; 8192];
    loop {
        if !buf.is_empty() {
            if let Judge::Reply(class, detail) = judge(&buf) {
                return (class, format!("{detail} (after the client's FIN)"));
            }
        }
        if buf.len() > MAX_REPLY {
            return (ResponseClass::MalformedReply, "reply too long".into());
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) if buf.is_empty() => {
                if !timeout_recorded {
                    push_timeout(shared, target.timeout);
                }
                return (
                    ResponseClass::Silence,
                    format!(
                    "no reply within {quiet} ms and no reaction to the client's FIN within {} ms",
                    target.timeout.as_millis()
                ),
                );
            }
            Err(_) => {
                return (
                    ResponseClass::MalformedReply,
                    format!("{} bytes of an incomplete reply, then silence", buf.len()),
                )
            }
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => {
                return (
                    ResponseClass::AwaitedMore,
                    format!("no reply within {quiet} ms; closed after the client's FIN"),
                )
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    ResponseClass::MalformedReply,
                    format!("closed after {} bytes of an incomplete reply", buf.len()),
                )
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads the next MCS domain reply within the quiet window. `Err` is the case's outcome: on
/// silence, what the target does after the client's FIN; otherwise the read failure, saying
/// which reply was awaited.
async fn read_domain_reply<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    io: &mut S,
    target: &Target,
    shared: &SharedTrace,
    buf: Vec<u8>,
    waiting_for: &str,
) -> Result<(Vec<u8>, Vec<u8>), (ResponseClass, String)> {
    match read_pdu(io, target.quiet, buf, tpkt_len).await {
        Ok(v) => Ok(v),
        Err((ResponseClass::Silence, _)) => {
            push_timeout(shared, target.quiet);
            Err(silence_then_fin(io, target, shared, Vec::new(), judge_domain, true).await)
        }
        Err((class, detail)) => Err((class, format!("waiting for {waiting_for}: {detail}"))),
    }
}

/// The outcome when a domain reply is not the awaited confirm with a usable success: the
/// confirm's own failure result (`is_awaited` tells its kind), an ultimatum, or anything else.
fn refused_confirm(
    reply: Option<DomainReply>,
    article: &str,
    name: &str,
    is_awaited: fn(&DomainReply) -> bool,
) -> (ResponseClass, String) {
    match reply {
        Some(
            r @ (DomainReply::AttachConfirm { result, .. }
            | DomainReply::JoinConfirm { result, .. }),
        ) if is_awaited(&r) => (
            ResponseClass::ErrorReply,
            format!("{name} {}", crate::decode::mcs::mcs_result_name(result)),
        ),
        Some(DomainReply::Ultimatum) => (
            ResponseClass::ErrorReply,
            "disconnect provider ultimatum".into(),
        ),
        other => (
            ResponseClass::MalformedReply,
            format!("expected {article} {name}, got {other:?}"),
        ),
    }
}

/// A late reply of the channel connection (after the client's FIN).
fn judge_domain(b: &[u8]) -> Judge {
    match tpkt_len(b) {
        Ok(None) => Judge::NeedMore,
        Err(what) => Judge::Reply(ResponseClass::MalformedReply, what),
        Ok(Some(n)) if b.len() < n => Judge::NeedMore,
        Ok(Some(n)) => match channels::domain_reply(&b[..n]) {
            Some(DomainReply::AttachConfirm { result: 0, .. })
            | Some(DomainReply::JoinConfirm { result: 0, .. }) => {
                Judge::Reply(ResponseClass::ValidReply, "late confirm".into())
            }
            Some(DomainReply::AttachConfirm { .. })
            | Some(DomainReply::JoinConfirm { .. })
            | Some(DomainReply::Ultimatum) => {
                Judge::Reply(ResponseClass::ErrorReply, "late refusal".into())
            }
            other => Judge::Reply(
                ResponseClass::MalformedReply,
                format!("unexpected domain PDU {other:?}"),
            ),
        },
    }
}

/// X.224 Connection Confirm (MS-RDPBCGR 2.2.1.2) or a refusal.
fn judge_x224(b: &[u8]) -> Judge {
    let fast_path = Judge::Reply(
        ResponseClass::MalformedReply,
        "fast-path PDU instead of a Connection Confirm".into(),
    );
    judge_framed(b, fast_path, |pdu| match dx224::decode_tpkt(pdu) {
        X224::ConnectionConfirm { selected, .. } => Judge::Reply(
            ResponseClass::ValidReply,
            format!("connection confirm, selected protocol 0x{selected:x}"),
        ),
        X224::NegotiationFailure { code } => Judge::Reply(
            ResponseClass::ErrorReply,
            format!("RDP_NEG_FAILURE {}", dx224::failure_code_name(code)),
        ),
        X224::DisconnectRequest => {
            Judge::Reply(ResponseClass::ErrorReply, "X.224 disconnect request".into())
        }
        // xrdp refuses a malformed request with an MCS Disconnect Provider Ultimatum.
        X224::Data { user_data_offset } => {
            match crate::decode::mcs::classify_domain_pdu(&pdu[user_data_offset.min(pdu.len())..]) {
                Some(("disconnect provider ultimatum", _)) => Judge::Reply(
                    ResponseClass::ErrorReply,
                    "disconnect provider ultimatum".into(),
                ),
                _ => Judge::Reply(
                    ResponseClass::MalformedReply,
                    "X.224 data instead of a connection confirm".into(),
                ),
            }
        }
        X224::Malformed { what, offset } => Judge::Reply(
            ResponseClass::MalformedReply,
            format!("{what} at byte {offset}"),
        ),
        other => Judge::Reply(
            ResponseClass::MalformedReply,
            format!("unexpected X.224 PDU {other:?}"),
        ),
    })
}

/// ServerHello (RFC 8446 4.1.3) or an alert (RFC 8446 6).
fn judge_tls(b: &[u8]) -> Judge {
    if b.len() < 6 {
        return Judge::NeedMore;
    }
    match b[0] {
        0x16 if b[5] == 2 => Judge::Reply(ResponseClass::ValidReply, "server hello".into()),
        0x16 => Judge::Reply(
            ResponseClass::MalformedReply,
            format!("handshake message type {} instead of a server hello", b[5]),
        ),
        0x15 => {
            if b.len() < 7 {
                return Judge::NeedMore;
            }
            let name = crate::decode::tls::alert_description_name(b[6]).unwrap_or("unknown");
            Judge::Reply(
                ResponseClass::ErrorReply,
                format!("TLS alert level {} {name} ({})", b[5], b[6]),
            )
        }
        // A TPKT: an RDP-level refusal in the clear (xrdp sends a Disconnect Provider Ultimatum).
        0x03 => match judge_x224(b) {
            Judge::Reply(ResponseClass::ErrorReply, what) => {
                Judge::Reply(ResponseClass::ErrorReply, what)
            }
            Judge::NeedMore => Judge::NeedMore,
            Judge::Reply(_, what) => Judge::Reply(
                ResponseClass::MalformedReply,
                format!("TPKT instead of a server hello: {what}"),
            ),
        },
        t => Judge::Reply(
            ResponseClass::MalformedReply,
            format!("record type 0x{t:02x} instead of a server hello"),
        ),
    }
}

/// A TSRequest (MS-CSSP 2.2.1) with a token, or with an errorCode.
fn judge_credssp(b: &[u8]) -> Judge {
    if b[0] != 0x30 {
        return Judge::Reply(
            ResponseClass::MalformedReply,
            format!("byte 0x{:02x} does not start a TSRequest", b[0]),
        );
    }
    let Some(n) = crate::decode::credssp::der_frame_len(b) else {
        return if b.len() > 6 {
            Judge::Reply(
                ResponseClass::MalformedReply,
                "unreadable DER length".into(),
            )
        } else {
            Judge::NeedMore
        };
    };
    if b.len() < n {
        return Judge::NeedMore;
    }
    match crate::decode::credssp::parse_ts_request(&b[..n]) {
        Ok(f) => match f.error_code {
            Some(code) => Judge::Reply(
                ResponseClass::ErrorReply,
                format!(
                    "TSRequest errorCode {} (0x{code:08X})",
                    crate::decode::credssp::ntstatus_name(code).unwrap_or("NTSTATUS")
                ),
            ),
            None => Judge::Reply(
                ResponseClass::ValidReply,
                format!("TSRequest version {}", f.version),
            ),
        },
        Err((what, at)) => Judge::Reply(
            ResponseClass::MalformedReply,
            format!("TSRequest: {what} at byte {at}"),
        ),
    }
}

fn judge_mcs(b: &[u8]) -> Judge {
    let fast_path = Judge::Reply(
        ResponseClass::MalformedReply,
        "fast-path PDU instead of an MCS Connect Response".into(),
    );
    judge_framed(b, fast_path, |pdu| {
        let (class, what) = judge_mcs_pdu(pdu);
        Judge::Reply(class, what)
    })
}

/// MCS Connect Response (MS-RDPBCGR 2.2.1.4), a Disconnect Provider Ultimatum or an X.224 DR.
fn judge_mcs_pdu(pdu: &[u8]) -> (ResponseClass, String) {
    match dx224::decode_tpkt(pdu) {
        X224::Data { user_data_offset } => {
            let ud = &pdu[user_data_offset.min(pdu.len())..];
            if ud.starts_with(&[0x7f, 0x66]) {
                match crate::decode::mcs::connect_response_facts(ud) {
                    Ok(f) => {
                        let result = f
                            .get("result")
                            .and_then(|v| v.as_str())
                            .unwrap_or("")
                            .to_owned();
                        if result == "rt-successful" {
                            (
                                ResponseClass::ValidReply,
                                "connect response rt-successful".into(),
                            )
                        } else {
                            (
                                ResponseClass::ErrorReply,
                                format!("connect response {result}"),
                            )
                        }
                    }
                    Err(e) => (ResponseClass::MalformedReply, e),
                }
            } else {
                match crate::decode::mcs::classify_domain_pdu(ud) {
                    Some(("disconnect provider ultimatum", _)) => (
                        ResponseClass::ErrorReply,
                        "disconnect provider ultimatum".into(),
                    ),
                    Some((name, _)) => (
                        ResponseClass::MalformedReply,
                        format!("{name} instead of a connect response"),
                    ),
                    None => (
                        ResponseClass::MalformedReply,
                        "unreadable MCS PDU instead of a connect response".into(),
                    ),
                }
            }
        }
        X224::DisconnectRequest => (ResponseClass::ErrorReply, "X.224 disconnect request".into()),
        X224::Malformed { what, offset } => (
            ResponseClass::MalformedReply,
            format!("{what} at byte {offset}"),
        ),
        other => (
            ResponseClass::MalformedReply,
            format!("unexpected X.224 PDU {other:?}"),
        ),
    }
}

/// The mutated round of a later-round credssp case, and where to record it.
struct Later<'a> {
    case: &'a super::credssp::CredsspCase,
    shared: &'a SharedTrace,
    sent: &'a mut Vec<u8>,
    sent_at: &'a mut Option<Instant>,
    ctx: &'a EncodeCtx,
}

/// How a CredSSP exchange ended.
enum CredsspEnd {
    /// Valid to the end; the bytes read past the last server message.
    Done(BytesMut),
    /// A round was mutated: how the target answered it.
    Observed(ResponseClass, String),
}

/// A CredSSP exchange (MS-CSSP 3.1.5) with IronRDP's client, as the probe runs it. With `later`,
/// the client message of round `later.case.round` is replaced by its mutation and the answer to
/// it is judged: a TSRequest (round 2: the server's pubKeyAuth), or after the credentials
/// (round 3) the Early User Authorization Result (HYBRID_EX) or the MCS Connect Response to a
/// valid Connect Initial sent right after (HYBRID).
async fn credssp_exchange(
    target: &Target,
    io: &mut Io,
    selected: u32,
    leaf: &[u8],
    mut later: Option<Later<'_>>,
) -> Result<CredsspEnd, Ended> {
    let Some(creds) = &target.credentials else {
        return Err(prefix(
            "credssp: the target selected NLA (CredSSP): fuzzing a later stage or round needs --user",
        ));
    };
    let public_key = crate::probe::subject_public_key(leaf)
        .ok_or_else(|| prefix("credssp: unreadable server public key"))?;
    let (mut seq, mut ts_request) = CredsspSequence::init(
        ironrdp_connector::Credentials::UsernamePassword {
            username: creds.user.clone(),
            password: creds.password.clone(),
        },
        creds.domain.as_deref(),
        SecurityProtocol::from_bits_truncate(selected),
        ironrdp_connector::ServerName::new(target.host.clone()),
        public_key,
        None,
    )
    .map_err(|e| prefix(format!("credssp: {e}")))?;
    let mut out = WriteBuf::new();
    let mut buf = BytesMut::new();
    let mut round = 0u8;
    // INVARIANT: NTLM takes three client messages (+ the final credentials); a server that keeps
    // asking is cut off.
    for _ in 0..8 {
        let state = step::credssp_process(&mut seq, ts_request)
            .map_err(|e| prefix(format!("credssp: {e}")))?;
        out.clear();
        let w = seq
            .handle_process_result(state, &mut out)
            .map_err(|e| prefix(format!("credssp: {e}")))?;
        if w.size().is_some() {
            round = round.saturating_add(1);
            if let Some(l) = later.as_mut().filter(|l| l.case.round == round) {
                let bytes = super::credssp::encode_round(out.filled(), &l.case.mutations);
                note_sent(l.shared, FuzzStage::Credssp, &bytes, l.sent, l.sent_at);
                l.shared.push(EventKind::Note(format!(
                    "rdprobe fuzz: credssp round {round} mutated"
                )));
                if let Err(e) = write(io, &bytes, target.timeout).await {
                    let (class, detail) = write_failed(&e);
                    return Ok(CredsspEnd::Observed(class, detail));
                }
                let judge: fn(&[u8]) -> Judge = if round >= 3 {
                    if selected & 0x8 == 0 {
                        // HYBRID: the server answers the credentials with nothing; the next
                        // client PDU is the Connect Initial.
                        let ci = super::mcs::encode(&[], l.ctx);
                        if let Err(e) = write(io, &ci, target.timeout).await {
                            let (class, detail) = write_failed(&e);
                            return Ok(CredsspEnd::Observed(class, detail));
                        }
                    }
                    judge_after_credentials
                } else {
                    judge_credssp
                };
                let (class, detail) =
                    observe_with(io, target, l.shared, buf.to_vec(), judge, short_der(&bytes))
                        .await;
                return Ok(CredsspEnd::Observed(
                    class,
                    format!("round {round}: {detail}"),
                ));
            }
            write(io, out.filled(), target.timeout)
                .await
                .map_err(|e| prefix(format!("credssp: {e}")))?;
        }
        match step::credssp_read(&mut seq, io, &mut buf, target.timeout).await {
            Ok(Some(next)) => ts_request = next,
            Ok(None) => return Ok(CredsspEnd::Done(buf)),
            Err(StepError::Read(e)) => {
                return Err(prefix(format!("credssp: {}", read_outcome(e, &buf).1)))
            }
            Err(StepError::Rejected { error, .. }) => {
                return Err(prefix(format!("credssp: {error}")))
            }
        }
    }
    Err(prefix("credssp: too many round trips"))
}

/// What follows the client's credentials (MS-CSSP 3.1.5 step 5): the Early User Authorization
/// Result with HYBRID_EX (MS-RDPBCGR 2.2.10.2: SUCCESS 0, ACCESS_DENIED 5), a TSRequest with an
/// errorCode, or (HYBRID) the MCS Connect Response.
fn judge_after_credentials(b: &[u8]) -> Judge {
    match b[0] {
        0x30 => judge_credssp(b),
        0x03 => judge_mcs(b),
        _ if b.len() < 4 => Judge::NeedMore,
        _ => match u32::from_le_bytes([b[0], b[1], b[2], b[3]]) {
            0 => Judge::Reply(
                ResponseClass::ValidReply,
                "early user authorization result SUCCESS".into(),
            ),
            5 => Judge::Reply(
                ResponseClass::ErrorReply,
                "early user authorization result ACCESS_DENIED".into(),
            ),
            v => Judge::Reply(
                ResponseClass::MalformedReply,
                format!("0x{v:08x} instead of an early user authorization result"),
            ),
        },
    }
}

/// The gateway stages: TCP and TLS to the gateway, then the first HTTP request (`gw_http`), or the
/// upgrade with Basic credentials and the tunnel packets before the mutated one (`gw_tunnel`,
/// `gw_channel`). See [`super::gateway`].
async fn gateway_stages(run: Run<'_>) -> Result<(ResponseClass, String), Ended> {
    let (target, case, shared, sent, sent_at) = run.parts();
    use super::gateway as g;
    let stage = case.stage();
    let tcp = match tokio::time::timeout(target.timeout, TcpStream::connect(target.addr)).await {
        Err(_) => {
            return Err(Ended(
                ResponseClass::Refused,
                "tcp connect timed out".into(),
            ))
        }
        Ok(Err(e)) => {
            return Err(Ended(
                ResponseClass::Refused,
                format!("tcp connect failed: {e}"),
            ))
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    if let Ok(local) = tcp.local_addr() {
        shared.set_addrs(local, target.addr);
    }
    shared.push(EventKind::Connected);
    let wire = Tap::new(tcp, shared.clone(), Layer::Wire);
    // INVARIANT: the prefix may send Basic credentials: the TLS secrets go to a scratch trace, so
    // a finding's capture cannot reveal them.
    let scratch = SharedTrace::new(Trace::new(target.addr, target.addr));
    let (config, _) =
        crate::probe::tls::rustls_config(scratch, crate::probe::tls::TlsVersions::Both);
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_sni = false;
    let name = rustls::pki_types::ServerName::try_from("rd-gateway")
        .map_err(|e| prefix(format!("tls: {e}")))?
        .to_owned();
    let mut io: Io = match tokio::time::timeout(
        target.timeout,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, wire),
    )
    .await
    {
        Err(_) => return Err(prefix("gw_tls: handshake timed out")),
        Ok(Err(e)) => return Err(prefix(format!("gw_tls: {e}"))),
        Ok(Ok(s)) => Box::new(s),
    };
    let host = target.addr.to_string();
    if let Case::GwHttp(c) = case {
        let bytes = g::encode_http(&c.mutations, &host);
        note_sent(shared, stage, &bytes, sent, sent_at);
        if let Err(e) = write(&mut io, &bytes, target.timeout).await {
            return Ok(write_failed(&e));
        }
        return Ok(observe(&mut io, target, shared, judge_gw_http, false).await);
    }
    // The upgrade, authenticated.
    let mut req = g::encode_http(&[], &host);
    if let Some(c) = &target.credentials {
        let auth = g::basic(&c.user, c.domain.as_deref(), &c.password);
        req.truncate(req.len() - 2);
        req.extend_from_slice(format!("Authorization: {auth}\r\n\r\n").as_bytes());
    }
    write(&mut io, &req, target.timeout)
        .await
        .map_err(|e| prefix(format!("gw_http: {e}")))?;
    let mut buf = Vec::new();
    let head = crate::gateway::http::read_head(&mut io, &mut buf, target.timeout, false)
        .await
        .map_err(|e| prefix(format!("gw_http: {e}")))?;
    if head.status != 101 {
        return Err(prefix(format!(
            "gw_auth: the gateway answered {} {} to the upgrade{}",
            head.status,
            head.reason,
            if target.credentials.is_none() {
                " (no credentials given: --user and RDPROBE_PASSWORD for Basic)"
            } else {
                ""
            }
        )));
    }
    let (before, mutated) = match case {
        Case::GwTunnel(c) => (c.packet as usize, g::encode_tunnel(c)),
        Case::GwChannel(c) => (3, g::encode_channel(&c.mutations)),
        _ => return Err(prefix("not a gateway case")),
    };
    for p in g::tunnel_packets().iter().take(before) {
        write(&mut io, &g::ws_frame(&p.encode()), target.timeout)
            .await
            .map_err(|e| prefix(format!("gw_tunnel: {e}")))?;
        let answer = g::read_frame(&mut io, &mut buf, target.timeout)
            .await
            .map_err(|e| prefix(format!("gw_tunnel: {} answered: {e}", p.name())))?;
        let (class, detail) = g::judge_packet(&answer);
        if class != ResponseClass::ValidReply {
            return Err(prefix(format!("gw_tunnel: {} answered {detail}", p.name())));
        }
    }
    let frame = g::ws_frame(&mutated);
    note_sent(shared, stage, &mutated, sent, sent_at);
    if let Err(e) = write(&mut io, &frame, target.timeout).await {
        return Ok(write_failed(&e));
    }
    let short = crate::gateway::tsgu::packet_len(&mutated)
        .ok()
        .flatten()
        .is_some_and(|n| n > mutated.len());
    Ok(observe_with(&mut io, target, shared, buf, judge_gw_packet, short).await)
}

fn judge_gw_http(b: &[u8]) -> Judge {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        if b.len() >= 8 && !b[..8].iter().all(|x| x.is_ascii_graphic() || *x == b' ') {
            return Judge::Reply(
                ResponseClass::MalformedReply,
                "an answer that is not HTTP".into(),
            );
        }
        return Judge::NeedMore;
    };
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hs);
    match r.parse(&b[..end + 4]) {
        Ok(httparse::Status::Complete(_)) => {
            let (class, detail) = super::gateway::judge_http_status(r.code.unwrap_or(0));
            Judge::Reply(class, detail)
        }
        _ => Judge::Reply(
            ResponseClass::MalformedReply,
            "a malformed HTTP head".into(),
        ),
    }
}

fn judge_gw_packet(b: &[u8]) -> Judge {
    let mut at = 0;
    loop {
        match super::gateway::parse_frame(&b[at..]) {
            Err(e) => return Judge::Reply(ResponseClass::MalformedReply, e),
            Ok(None) => return Judge::NeedMore,
            Ok(Some((0x2, payload, _))) => {
                let (class, detail) = super::gateway::judge_packet(&payload);
                return Judge::Reply(class, detail);
            }
            Ok(Some((0x8, _, _))) => {
                return Judge::Reply(
                    ResponseClass::Close,
                    "websocket close without a reply".into(),
                )
            }
            Ok(Some((_, _, n))) => at += n,
        }
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;

    /// A target that never reads: the case's write ends at the target timeout, classed as a hang.
    #[tokio::test]
    async fn a_write_to_a_target_that_never_reads_is_silence() {
        let (mut client, _server) = tokio::io::duplex(64);
        let e = tokio::time::timeout(
            Duration::from_secs(5),
            write(&mut client, &[0u8; 4096], Duration::from_millis(200)),
        )
        .await
        .expect("the write has a deadline")
        .expect_err("the write cannot complete");
        let (class, detail) = write_failed(&e);
        assert_eq!(class, ResponseClass::Silence);
        assert!(detail.contains("stopped reading"), "{detail}");
    }
}

#[cfg(test)]
mod tests;
