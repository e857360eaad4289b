//! The client of standard RDP security, from the MCS Connect Response to `connected`
//! (MS-RDPBCGR 1.3.1.1): channel connection, security exchange (5.3.2), encrypted Client Info PDU,
//! licensing, capabilities exchange and connection finalization.
//!
//! IronRDP's sequences do the unencrypted work: `ChannelConnectionSequence` for the MCS domain
//! PDUs, `LicenseExchangeSequence` and `ConnectionActivationSequence` for licensing and the share
//! PDUs. Between them and the socket sits a shim that decrypts what the server sends (and strips
//! the security header) and encrypts and signs what IronRDP writes. Every wait has a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ironrdp_connector::{
    ChannelConnectionSequence, ChannelConnectionState, LicenseExchangeSequence,
    LicenseExchangeState, Sequence as _,
};
use ironrdp_core::WriteBuf;
use ironrdp_pdu::x224::X224;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::cert::{self, RsaKey};
use super::crypt::SecurityContext;
use super::flags::*;
use super::gcc::{self, ServerData};
use super::keys::{self, Method};
use crate::decode::x224::{frame, Frame};
use crate::probe::tap::SharedTrace;
use crate::probe::{Credentials, ProbeOptions, MAX_PDU_LEN};
use crate::stage::Stage;
use crate::trace::{Dir, EventKind, Layer};
use crate::wire::share::{ERROR_ALERT, LICENSE_REQUEST, NEW_LICENSE, STATUS_VALID_CLIENT};

/// What the walk reached and learned (also summarized in a trace Note).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkSummary {
    pub method: Method,
    pub level: u32,
    pub key_bits: u32,
    pub key_source: &'static str,
    /// The last stage completed.
    pub reached: Stage,
    /// Server PDUs whose signature did not verify.
    pub bad_signatures: u32,
    /// How licensing ended ("valid client", "new license", "skipped").
    pub licensing: String,
}

/// Why the walk stopped before `connected`.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("server security data unusable: {0}")]
    ServerData(String),
    #[error("the server selected encryption method 0x{0:x}, which standard RDP security does not define")]
    UnknownMethod(u32),
    #[error("the server sent no server random")]
    NoServerRandom,
    #[error("server certificate: {0}")]
    Certificate(#[from] cert::CertError),
    #[error("timed out after {0} ms waiting for the server")]
    Timeout(u64),
    #[error("the server closed the connection")]
    Closed,
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("malformed pdu from the server: {0}")]
    Malformed(String),
    #[error("{stage}: {detail}")]
    Sequence { stage: Stage, detail: String },
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("stopped after {0} by request")]
    Stopped(Stage),
}

/// One frame from the server.
pub enum Pdu {
    Tpkt(Vec<u8>),
    FastPath(Vec<u8>),
}

struct Io<'a, S: ?Sized> {
    stream: &'a mut S,
    buf: &'a mut BytesMut,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin + ?Sized> Io<'_, S> {
    async fn read(&mut self) -> Result<Pdu, WalkError> {
        use crate::net::framed::{self, ReadError, Reader};
        let start = Instant::now();
        let r = Reader::default()
            .read_within(self.stream, self.buf, self.timeout, framed::rdp)
            .await;
        match r {
            Ok(pdu) if pdu.first() == Some(&crate::wire::x224::TPKT_VERSION) => {
                Ok(Pdu::Tpkt(pdu.to_vec()))
            }
            Ok(pdu) => Ok(Pdu::FastPath(pdu.to_vec())),
            Err(ReadError::Timeout) => Err(WalkError::Timeout(start.elapsed().as_millis() as u64)),
            Err(ReadError::Closed) => Err(WalkError::Closed),
            Err(ReadError::Io(e)) => Err(WalkError::Io(e)),
            Err(ReadError::Framing(what)) => Err(WalkError::Malformed(what)),
            // TPKT and fast-path lengths stay below the bound: only the buffer can pass it.
            Err(ReadError::Length { .. } | ReadError::Overflow { .. }) => {
                Err(WalkError::Malformed(format!(
                    "more than {MAX_PDU_LEN} bytes without a complete pdu"
                )))
            }
        }
    }

    /// The next slow-path PDU, opened; `None` after skipping a fast-path PDU (its security
    /// counters still advance). A slow-path PDU that is not a Send Data Indication ends the walk.
    async fn read_opened(
        &mut self,
        ctx: &mut SecurityContext,
        bad: &mut u32,
    ) -> Result<Option<Opened>, WalkError> {
        match self.read().await? {
            Pdu::FastPath(p) => {
                skip_fast_path(ctx, &p, bad);
                Ok(None)
            }
            Pdu::Tpkt(p) => match open(ctx, &p, bad)? {
                Some(o) => Ok(Some(o)),
                None => Err(WalkError::Closed),
            },
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), WalkError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let w = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, w).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WalkError::Write(e)),
            Err(_) => Err(WalkError::Timeout(self.timeout.as_millis() as u64)),
        }
    }
}

/// A license cache that has nothing and keeps nothing.
#[derive(Debug)]
pub struct NoLicenseCache;

impl ironrdp_connector::LicenseCache for NoLicenseCache {
    fn get_license(
        &self,
        _: ironrdp_pdu::rdp::server_license::LicenseInformation,
    ) -> ironrdp_connector::ConnectorResult<Option<Vec<u8>>> {
        Ok(None)
    }

    fn store_license(
        &self,
        _: ironrdp_pdu::rdp::server_license::LicenseInformation,
    ) -> ironrdp_connector::ConnectorResult<()> {
        Ok(())
    }
}

/// The Connect Response the server sent on this conversation: the first TPKT PDU of the server's
/// wire stream that reads as one.
pub fn find_connect_response(shared: &SharedTrace) -> Option<Vec<u8>> {
    let stream = shared.snapshot().stream(Dir::S2C, Layer::Wire);
    let mut rest = &stream[..];
    for _ in 0..64 {
        match frame(rest) {
            Frame::Tpkt(n) => {
                if gcc::parse_connect_response(&rest[..n]).is_ok() {
                    return Some(rest[..n].to_vec());
                }
                rest = &rest[n..];
            }
            Frame::FastPath(n) => rest = &rest[n..],
            _ => return None,
        }
    }
    None
}

/// The probe's hand-over: the server selected standard RDP security with encryption, IronRDP's
/// connector stopped at the Connect Response, and `stream` / `leftover` continue the same
/// connection. Records what it learns and how it ends into `shared`; does not close the stream.
pub async fn continue_probe<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    opts: &ProbeOptions,
    stream: &mut S,
    leftover: &mut BytesMut,
    shared: &SharedTrace,
) -> Result<WalkSummary, WalkError> {
    if opts.stop_after.is_some_and(|s| s <= Stage::Mcs) {
        let res = Err(WalkError::Stopped(Stage::Mcs));
        record(shared, &res);
        return res;
    }
    let res = match find_connect_response(shared) {
        None => Err(WalkError::ServerData(
            "no readable mcs connect response in the trace".into(),
        )),
        Some(pdu) => match gcc::parse_connect_response(&pdu) {
            Ok(server) => {
                let client = shared.snapshot().client;
                walk(
                    stream,
                    leftover,
                    &server,
                    opts.credentials.as_ref(),
                    opts.stage_timeout,
                    opts.stop_after,
                    client,
                )
                .await
            }
            Err(e) => Err(WalkError::ServerData(e)),
        },
    };
    record(shared, &res);
    res
}

/// Writes the outcome of a walk into the trace: a note with what was negotiated, and the events
/// decode needs (timeouts, the stop, the client-side end).
pub fn record(shared: &SharedTrace, res: &Result<WalkSummary, WalkError>) {
    match res {
        Ok(s) => {
            shared.push(EventKind::Note(format!(
                "standard RDP security: {} encryption at level {}, server {}-bit RSA key ({}), \
                 licensing: {}{}",
                s.method.name(),
                crate::decode::mcs::encryption_level_name(s.level),
                s.key_bits,
                s.key_source,
                s.licensing,
                if s.bad_signatures > 0 {
                    format!(
                        "; {} server pdus failed the signature check",
                        s.bad_signatures
                    )
                } else {
                    String::new()
                }
            )));
            shared.push(EventKind::StoppedAfter(s.reached));
        }
        Err(WalkError::Stopped(stage)) => shared.push(EventKind::StoppedAfter(*stage)),
        Err(WalkError::Timeout(ms)) => shared.push(EventKind::Timeout {
            waiting_for: Dir::S2C,
            after_ms: *ms,
        }),
        Err(WalkError::Closed) => {}
        Err(WalkError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) => {}
        // The server's data could not be used (unusable key, malformed PDU, broken sequence).
        Err(
            e @ (WalkError::ServerData(_)
            | WalkError::UnknownMethod(_)
            | WalkError::NoServerRandom
            | WalkError::Certificate(_)
            | WalkError::Malformed(_)
            | WalkError::Sequence { .. }),
        ) => shared.push(EventKind::ClientRejected {
            what: format!("standard RDP security: {e}"),
        }),
        Err(e) => shared.push(EventKind::Note(format!(
            "standard RDP security: client stopped: {e}"
        ))),
    }
}

/// 32 random bytes (a client random).
pub fn random32() -> [u8; 32] {
    let mut r = [0u8; 32];
    if openssl::rand::rand_bytes(&mut r).is_err() {
        // OpenSSL's generator failing is not recoverable in any useful way; a time-derived random
        // still lets the probe work (the session carries no secret worth protecting).
        let t = crate::trace::now_us().to_le_bytes();
        for (i, b) in r.iter_mut().enumerate() {
            *b = t[i % 8] ^ (i as u8).wrapping_mul(151);
        }
    }
    r
}

/// Reads one frame from the server within `timeout` (`leftover` holds what was read past it).
pub async fn read_frame<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    leftover: &mut BytesMut,
    timeout: Duration,
) -> Result<Pdu, WalkError> {
    Io {
        stream,
        buf: leftover,
        timeout,
    }
    .read()
    .await
}

/// Encodes an MCS Send Data Request on `channel` with `user_data`.
pub fn send_data_request(
    initiator: u16,
    channel: u16,
    user_data: Vec<u8>,
) -> Result<Vec<u8>, WalkError> {
    let pdu = ironrdp_pdu::mcs::SendDataRequest {
        initiator_id: initiator,
        channel_id: channel,
        user_data: std::borrow::Cow::Owned(user_data),
    };
    ironrdp_core::encode_vec(&X224(pdu)).map_err(|e| WalkError::Malformed(e.to_string()))
}

/// The security header plus sealed data of an encrypted PDU.
pub fn seal(ctx: &mut SecurityContext, flags: u16, plain: &[u8]) -> Vec<u8> {
    crate::wire::share::secured(flags | SEC_ENCRYPT, &ctx.encrypt(plain))
}

/// A server PDU after the security layer: its flags and cleartext payload (header removed).
pub struct Opened {
    pub initiator: u16,
    pub channel: u16,
    pub flags: u16,
    pub payload: Vec<u8>,
}

/// Opens a slow-path server PDU: decrypts it if SEC_ENCRYPT is set, strips the header either way.
/// `None` when it is not a Send Data Indication (e.g. a disconnect provider ultimatum).
pub fn open(
    ctx: &mut SecurityContext,
    pdu: &[u8],
    bad: &mut u32,
) -> Result<Option<Opened>, WalkError> {
    let Ok(ind) = ironrdp_pdu::mcs::decode_send_data_indication(pdu) else {
        return Ok(None);
    };
    let ud = ind.user_data;
    let Ok(header) = crate::wire::share::SecurityHeader::parse(ud, 0) else {
        return Err(WalkError::Malformed(format!(
            "security header of {} bytes",
            ud.len()
        )));
    };
    let flags = header.flags;
    let payload = if flags & SEC_ENCRYPT != 0 {
        let d = ctx
            .decrypt(&ud[4..], flags & SEC_SECURE_CHECKSUM != 0)
            .map_err(|e| WalkError::Malformed(e.to_string()))?;
        if !d.signature_ok {
            *bad += 1;
        }
        d.plaintext
    } else {
        ud[4..].to_vec()
    };
    Ok(Some(Opened {
        initiator: ind.initiator_id,
        channel: ind.channel_id,
        flags,
        payload,
    }))
}

/// Decrypts an encrypted fast-path PDU to keep the cipher state in step (its content is not
/// needed before `connected`). MS-RDPBCGR 2.2.9.1.2.
pub fn skip_fast_path(ctx: &mut SecurityContext, pdu: &[u8], bad: &mut u32) {
    let Some(&h) = pdu.first() else { return };
    let enc = (h >> 6) & 0x2 != 0;
    if !enc {
        return;
    }
    let salted = (h >> 6) & 0x1 != 0;
    let hl = if pdu.get(1).is_some_and(|b| b & 0x80 != 0) {
        3
    } else {
        2
    };
    if let Some(rest) = pdu.get(hl..) {
        if let Ok(d) = ctx.decrypt(rest, salted) {
            if !d.signature_ok {
                *bad += 1;
            }
        }
    }
}

/// Re-encodes a server PDU without its security layer, as IronRDP's sequences expect it.
pub fn indication(initiator: u16, channel: u16, user_data: Vec<u8>) -> Result<Vec<u8>, WalkError> {
    let pdu = ironrdp_pdu::mcs::SendDataIndication {
        initiator_id: initiator,
        channel_id: channel,
        user_data: std::borrow::Cow::Owned(user_data),
    };
    ironrdp_core::encode_vec(&X224(pdu)).map_err(|e| WalkError::Malformed(e.to_string()))
}

/// Splits IronRDP's output into TPKT PDUs and seals the user data of each Send Data Request.
/// `header_flags`: Some(flags) prepends a security header and encrypts (activation PDUs);
/// licensing PDUs already carry their header and are encrypted only when `encrypt_license`.
pub fn seal_output(
    ctx: &mut SecurityContext,
    out: &[u8],
    activation: bool,
    encrypt_license: bool,
) -> Result<Vec<u8>, WalkError> {
    let mut sent = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let n = match frame(rest) {
            Frame::Tpkt(n) => n,
            other => {
                return Err(WalkError::Malformed(format!(
                    "client output is not TPKT: {other:?}"
                )))
            }
        };
        let pdu = &rest[..n];
        rest = &rest[n..];
        let req = ironrdp_core::decode::<X224<ironrdp_pdu::mcs::SendDataRequest<'_>>>(pdu)
            .map_err(|e| WalkError::Malformed(e.to_string()))?
            .0;
        let ud = req.user_data.as_ref();
        let user_data = if activation {
            seal(ctx, 0, ud)
        } else if let (true, Ok(h)) = (
            encrypt_license,
            crate::wire::share::SecurityHeader::parse(ud, 0),
        ) {
            seal(ctx, h.flags, ud.get(4..).unwrap_or_default())
        } else {
            ud.to_vec()
        };
        sent.extend_from_slice(&send_data_request(
            req.initiator_id,
            req.channel_id,
            user_data,
        )?);
    }
    Ok(sent)
}

/// The channel connection (MS-RDPBCGR 2.2.1.5-2.2.1.8) with IronRDP's sequence: erect domain,
/// attach user, a join for the user channel, the I/O channel and every static channel of the
/// Connect Response. Returns the user channel id.
pub async fn join_channels<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    leftover: &mut BytesMut,
    server: &ServerData,
    timeout: Duration,
) -> Result<u16, WalkError> {
    let mut io = Io {
        stream,
        buf: leftover,
        timeout,
    };
    let mut static_ids = server.channel_ids.clone();
    if let Some(m) = server.message_channel {
        static_ids.push(m);
    }
    let mut channels = ChannelConnectionSequence::new(server.io_channel, static_ids);
    let mut out = WriteBuf::new();
    loop {
        if let ChannelConnectionState::AllJoined { user_channel_id } = channels.state {
            return Ok(user_channel_id);
        }
        out.clear();
        let res = match channels.next_pdu_hint() {
            Some(_) => match io.read().await? {
                Pdu::Tpkt(p) => channels.step(&p, None, &mut out),
                Pdu::FastPath(_) => continue,
            },
            None => channels.step_no_input(&mut out),
        };
        res.map_err(|e| WalkError::Sequence {
            stage: Stage::Channels,
            detail: e.to_string(),
        })?;
        io.send(out.filled()).await?;
    }
}

/// Walks the connection from the Connect Response on. `server` is what the Connect Response said.
#[allow(clippy::too_many_arguments)]
pub async fn walk<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    leftover: &mut BytesMut,
    server: &ServerData,
    credentials: Option<&Credentials>,
    timeout: Duration,
    stop_after: Option<Stage>,
    client_addr: SocketAddr,
) -> Result<WalkSummary, WalkError> {
    let method = Method::from_bit(server.encryption_method)
        .ok_or(WalkError::UnknownMethod(server.encryption_method))?;
    let server_random = server.server_random.ok_or(WalkError::NoServerRandom)?;
    let key: RsaKey = cert::server_public_key(&server.server_certificate)?;
    let mut io = Io {
        stream,
        buf: leftover,
        timeout,
    };
    let stop = |s: Stage| stop_after.is_some_and(|st| st <= s);

    // --- channels (MS-RDPBCGR 2.2.1.5-2.2.1.8) ---
    let user_channel = join_channels(io.stream, io.buf, server, timeout).await?;
    let mut out = WriteBuf::new();
    if stop(Stage::Channels) {
        return Err(WalkError::Stopped(Stage::Channels));
    }

    // --- security exchange (MS-RDPBCGR 2.2.1.10, 5.3.4) ---
    let client_random = random32();
    let encrypted = cert::encrypt_client_random(&key, &client_random);
    let mut ud = Vec::with_capacity(8 + encrypted.len());
    crate::wire::share::SecurityHeader::new(SEC_EXCHANGE_PKT).emit(&mut ud);
    crate::wire::share::SecurityExchange::emit_body(encrypted.len() as u32, &encrypted, &mut ud);
    io.send(&send_data_request(user_channel, server.io_channel, ud)?)
        .await?;
    let mut ctx = match method {
        Method::Fips => SecurityContext::fips(&keys::derive_fips(&client_random, &server_random)),
        m => SecurityContext::rc4(&keys::derive_rc4(m, &client_random, &server_random)),
    };

    // --- client info (MS-RDPBCGR 2.2.1.11) ---
    let info = client_info(credentials, client_addr);
    let info_bytes =
        ironrdp_core::encode_vec(&info).map_err(|e| WalkError::Malformed(e.to_string()))?;
    io.send(&send_data_request(
        user_channel,
        server.io_channel,
        seal(&mut ctx, SEC_INFO_PKT, &info_bytes),
    )?)
    .await?;
    if stop(Stage::Security) {
        return Err(WalkError::Stopped(Stage::Security));
    }

    // --- licensing (MS-RDPBCGR 2.2.1.12) ---
    let mut bad = 0u32;
    let (user, domain) = match credentials {
        Some(c) => (c.user.clone(), c.domain.clone()),
        None => (String::new(), None),
    };
    let mut lic = LicenseExchangeSequence::new(
        server.io_channel,
        user,
        domain,
        [0; 4],
        Arc::new(NoLicenseCache),
    );
    let mut pending: Option<Opened> = None;
    let mut licensing = String::from("skipped by the server");
    loop {
        if matches!(lic.state, LicenseExchangeState::LicenseExchanged) {
            break;
        }
        let Some(opened) = io.read_opened(&mut ctx, &mut bad).await? else {
            continue;
        };
        if opened.flags & SEC_LICENSE_PKT == 0 {
            // No licensing PDU: the server went straight to capabilities.
            pending = Some(opened);
            break;
        }
        let encrypt_license = opened.flags & SEC_LICENSE_ENCRYPT_CS != 0;
        // bMsgType of the preamble; dwErrorCode of an error message after it.
        match opened.payload.first().copied() {
            Some(ERROR_ALERT) => {
                licensing = match crate::wire::cursor::le32(&opened.payload, 4) {
                    Some(STATUS_VALID_CLIENT) => {
                        "valid client (license error alert STATUS_VALID_CLIENT)".into()
                    }
                    Some(c) => format!("license error alert 0x{c:08x}"),
                    None => "license error alert".into(),
                }
            }
            Some(NEW_LICENSE) => licensing = "new license issued".into(),
            Some(LICENSE_REQUEST) if !licensing.contains("valid") => {
                licensing = "server license request".into()
            }
            _ => {}
        }
        // IronRDP's sequence reads the PDU with its header, in the clear.
        let hdr = crate::wire::share::secured(opened.flags & !SEC_ENCRYPT, &opened.payload);
        let input = indication(opened.initiator, opened.channel, hdr)?;
        out.clear();
        lic.step(&input, None, &mut out)
            .map_err(|e| WalkError::Sequence {
                stage: Stage::Licensing,
                detail: e.to_string(),
            })?;
        if !out.filled().is_empty() {
            let sealed = seal_output(&mut ctx, out.filled(), false, encrypt_license)?;
            io.send(&sealed).await?;
        }
    }
    if stop(Stage::Licensing) {
        return Err(WalkError::Stopped(Stage::Licensing));
    }

    // --- capabilities and finalization (MS-RDPBCGR 2.2.1.13-2.2.1.22) ---
    let config = connector_config(credentials);
    let mut act = ironrdp_connector::connection_activation::ConnectionActivationSequence::new(
        config,
        server.io_channel,
        user_channel,
    );
    use ironrdp_connector::connection_activation::ConnectionActivationState as A;
    loop {
        match act.connection_activation_state() {
            A::Finalized { .. } => break,
            A::Redirected { .. } => {
                return Err(WalkError::Sequence {
                    stage: Stage::Capabilities,
                    detail: "server sent a redirection".into(),
                })
            }
            _ => {}
        }
        out.clear();
        let res = match act.next_pdu_hint() {
            Some(_) => {
                let opened = match pending.take() {
                    Some(o) => o,
                    None => match io.read_opened(&mut ctx, &mut bad).await? {
                        Some(o) => o,
                        None => continue,
                    },
                };
                if opened.flags & SEC_LICENSE_PKT != 0 {
                    continue;
                }
                let input = indication(opened.initiator, opened.channel, opened.payload)?;
                act.step(&input, None, &mut out)
            }
            None => act.step_no_input(&mut out),
        };
        res.map_err(|e| WalkError::Sequence {
            stage: Stage::Capabilities,
            detail: e.to_string(),
        })?;
        if !out.filled().is_empty() {
            let sealed = seal_output(&mut ctx, out.filled(), true, false)?;
            io.send(&sealed).await?;
        }
    }
    Ok(WalkSummary {
        method,
        level: server.encryption_level,
        key_bits: key.bits,
        key_source: key.source,
        reached: Stage::Connected,
        bad_signatures: bad,
        licensing,
    })
}

/// TS_INFO_PACKET (MS-RDPBCGR 2.2.1.11.1.1) with the flags xrdp and Windows expect
/// (INFO_MOUSE | INFO_DISABLECTRLALTDEL | INFO_UNICODE | INFO_MAXIMIZESHELL at least).
pub fn client_info(
    credentials: Option<&Credentials>,
    client_addr: SocketAddr,
) -> ironrdp_pdu::rdp::client_info::ClientInfo {
    use ironrdp_pdu::rdp::client_info::{
        AddressFamily, ClientInfo, ClientInfoFlags, CompressionType, Credentials as C,
        ExtendedClientInfo, ExtendedClientOptionalInfo,
    };
    let flags = ClientInfoFlags::MOUSE
        | ClientInfoFlags::UNICODE
        | ClientInfoFlags::DISABLE_CTRL_ALT_DEL
        | ClientInfoFlags::LOGON_NOTIFY
        | ClientInfoFlags::LOGON_ERRORS
        | ClientInfoFlags::ENABLE_WINDOWS_KEY
        | ClientInfoFlags::MAXIMIZE_SHELL
        | ClientInfoFlags::NO_AUDIO_PLAYBACK;
    // INVARIANT: the password never enters a Client Info PDU. Standard RDP security does not
    // authenticate the server (any server, or anyone in the middle, that selects PROTOCOL_RDP
    // decrypts this PDU), so only the user name and domain go; no AUTOLOGON, since there is no
    // password to log on with. The probe authenticates only under NLA.
    let creds = match credentials {
        Some(c) => C {
            username: c.user.clone(),
            password: String::new(),
            domain: c.domain.clone(),
        },
        None => C {
            username: String::new(),
            password: String::new(),
            domain: None,
        },
    };
    ClientInfo {
        credentials: creds,
        password_cookie: None,
        code_page: 0,
        flags,
        compression_type: CompressionType::K8,
        alternate_shell: String::new(),
        work_dir: String::new(),
        extra_info: ExtendedClientInfo {
            address_family: match client_addr {
                SocketAddr::V4(_) => AddressFamily::INET,
                SocketAddr::V6(_) => AddressFamily::INET_6,
            },
            address: client_addr.ip().to_string(),
            dir: "C:\\Windows\\System32\\mstscax.dll".into(),
            optional_data: ExtendedClientOptionalInfo::builder()
                .timezone(Default::default())
                .session_id(0)
                .performance_flags(Default::default())
                .build(),
        },
    }
}

/// The IronRDP configuration the activation sequence needs (capability sets of the Confirm Active):
/// the probe's client configuration for standard RDP security, announcing a Windows XP-era build.
fn connector_config(credentials: Option<&Credentials>) -> ironrdp_connector::Config {
    let mut config = crate::probe::client_config(
        credentials,
        ironrdp_pdu::nego::SecurityProtocol::empty(),
        None,
    );
    config.client_build = 2600;
    config
}
