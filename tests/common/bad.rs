//! Misbehaving servers, in-process on std threads (no runtime needed): each listens on a free
//! 127.0.0.1 port, records what it received per connection, and stops on drop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::certs::{rand_u32, TestCert};
use super::net::{self, PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX, PROTOCOL_RDP, PROTOCOL_SSL};

/// Read poll interval: how quickly a handler notices that its server was dropped.
const POLL: Duration = Duration::from_millis(100);
/// No handler outlives this, whatever the client does.
const HANDLER_DEADLINE: Duration = Duration::from_secs(120);
/// Largest TPKT / TSRequest a handler accepts (bytes).
const MAX_PDU: usize = 64 * 1024;

/// What one accepted connection delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnRecord {
    /// Every byte read from the socket, in order (TLS records as ciphertext).
    pub received: Vec<u8>,
    /// Decoded messages, where the server understands them (X.224 request, cleartext TSRequests).
    pub messages: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    bytes_sent: AtomicU64,
    conns: Mutex<Vec<ConnRecord>>,
    /// Clones of open sockets, so drop can shut them down and wake blocked handlers.
    open: Mutex<Vec<Option<TcpStream>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A handler's view of its connection.
struct Conn {
    shared: Arc<Shared>,
    index: usize,
    deadline: Instant,
}

impl Conn {
    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst) || Instant::now() > self.deadline
    }

    fn record(&self, bytes: &[u8]) {
        let mut conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns[self.index].received.extend_from_slice(bytes);
    }

    fn message(&self, msg: &[u8]) {
        let mut conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns[self.index].messages.push(msg.to_vec());
    }

    fn sent(&self, n: usize) {
        self.shared.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
    }

    /// Forgets the registry's clone of the socket, so that dropping the handler's stream really
    /// closes it (a FIN, or a RST with zero linger).
    fn unregister(&self) {
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open[self.index] = None;
    }

    /// Reads some bytes, polling for stop; `None` at EOF, error, stop or deadline.
    fn read_some(&self, stream: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
        loop {
            if self.stopped() {
                return None;
            }
            match stream.read(buf) {
                Ok(0) => return None,
                Ok(n) => {
                    self.record(&buf[..n]);
                    return Some(n);
                }
                Err(e) if is_timeout(&e) => continue,
                Err(_) => return None,
            }
        }
    }

    fn read_exact(&self, stream: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
        let mut out = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            filled += self.read_some(stream, &mut out[filled..])?;
        }
        Some(out)
    }

    /// Reads one TPKT and records it as a message.
    fn read_tpkt(&self, stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut pdu = self.read_exact(stream, 4)?;
        let total = usize::from(u16::from_be_bytes([pdu[2], pdu[3]]));
        if pdu[0] != 0x03 || !(4..=MAX_PDU).contains(&total) {
            return None;
        }
        pdu.extend(self.read_exact(stream, total - 4)?);
        self.message(&pdu);
        Some(pdu)
    }

    /// Reads one TLS record (header + body).
    fn read_tls_record(&self, stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut rec = self.read_exact(stream, 5)?;
        let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
        rec.extend(self.read_exact(stream, len)?);
        self.message(&rec);
        Some(rec)
    }

    /// Keeps the connection open, recording what arrives, until EOF or stop.
    fn hold(&self, stream: &mut TcpStream) {
        let mut buf = [0u8; 4096];
        while self.read_some(stream, &mut buf).is_some() {}
    }

    /// Keeps the connection open without reading, until stop or the deadline.
    fn idle(&self) {
        while !self.stopped() {
            std::thread::sleep(POLL);
        }
    }

    fn write_all(&self, stream: &mut TcpStream, bytes: &[u8]) -> Option<()> {
        stream.write_all(bytes).ok()?;
        self.sent(bytes.len());
        Some(())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Makes the next close of `stream` send a RST instead of a FIN (SO_LINGER with zero timeout).
pub fn set_zero_linger(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket owned by `stream`; the option value is a properly sized
    // `linger` that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an integer socket option on `fd`.
fn set_int_option(
    fd: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is a live socket owned by the caller; the option value is a c_int that
    // outlives the call, with its size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes a listener's connections take as few bytes as the kernel allows before the peer's writes
/// block: the smallest receive buffer (SO_RCVBUF) and a 536-byte MSS (TCP_MAXSEG), so that the
/// client's send buffer does not grow to megabytes on loopback. Measured: a client absorbs about
/// 35 KB into the two buffers, against 1.7 MB with the default MSS.
fn tiny_window(listener: &TcpListener) -> io::Result<()> {
    set_int_option(listener, libc::SOL_SOCKET, libc::SO_RCVBUF, 1)?;
    set_int_option(listener, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536)
}

type Handler = dyn Fn(&mut TcpStream, &Conn) + Send + Sync;

/// The accept loop shared by every bad server.
struct Core {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Core {
    fn start(name: &str, handler: Arc<Handler>) -> Result<Self> {
        Self::start_tuned(name, handler, |_| Ok(()))
    }

    /// [`Core::start`] with `tune` applied to the listening socket first (accepted sockets inherit
    /// its options).
    fn start_tuned(
        name: &str,
        handler: Arc<Handler>,
        tune: impl FnOnce(&TcpListener) -> io::Result<()>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind bad server")?;
        tune(&listener).context("tune the bad server's listener")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || accept_loop(listener, accept_shared, handler))?;
        Ok(Self {
            port,
            shared,
            accept: Some(accept),
        })
    }

    fn connections(&self) -> Vec<ConnRecord> {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, handler: Arc<Handler>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(POLL));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                let index = {
                    let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
                    conns.push(ConnRecord::default());
                    let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
                    open.push(stream.try_clone().ok());
                    conns.len() - 1
                };
                let conn = Conn {
                    shared: shared.clone(),
                    index,
                    deadline: Instant::now() + HANDLER_DEADLINE,
                };
                let handler = handler.clone();
                let thread = std::thread::spawn(move || {
                    handler(&mut stream, &conn);
                    conn.unregister();
                    drop(stream);
                });
                shared
                    .threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(thread);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self
            .shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The protocol a well-behaved server would select for a request: SSL when offered, else RDP.
fn ssl_or_rdp(request: &[u8]) -> u32 {
    match net::requested_protocols(request) {
        Some(p) if p & PROTOCOL_SSL != 0 => PROTOCOL_SSL,
        _ => PROTOCOL_RDP,
    }
}

/// A scripted misbehaving server. See the constructors for what each does.
pub struct BadServer {
    core: Core,
    kind: &'static str,
}

impl std::fmt::Debug for BadServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BadServer")
            .field("kind", &self.kind)
            .field("port", &self.core.port)
            .finish()
    }
}

impl BadServer {
    fn start(kind: &'static str, handler: Arc<Handler>) -> Self {
        let core = Core::start(kind, handler).unwrap_or_else(|e| panic!("start {kind}: {e:#}"));
        Self { core, kind }
    }

    /// Accepts and never sends a byte; records what it receives; holds the connection open.
    pub fn silent() -> Self {
        Self::start("silent", Arc::new(|s, c| c.hold(s)))
    }

    /// Reads the X.224 request, answers 64 random bytes that are not a TPKT (first byte never
    /// 0x03), then holds the connection open.
    pub fn garbage() -> Self {
        Self::start(
            "garbage",
            Arc::new(|s, c| {
                if c.read_tpkt(s).is_none() {
                    return;
                }
                let mut junk = Vec::with_capacity(64);
                while junk.len() < 64 {
                    junk.extend_from_slice(&rand_u32().to_le_bytes());
                }
                junk[0] = 0x7F; // not TPKT (0x03), not a fast-path header a client would accept
                if c.write_all(s, &junk).is_some() {
                    c.hold(s);
                }
            }),
        )
    }

    /// Reads the X.224 request, sends a TPKT header promising 1000 bytes and only 10 bytes in
    /// total, then holds the connection open.
    pub fn tpkt_never_delivered() -> Self {
        Self::start(
            "tpkt-never-delivered",
            Arc::new(|s, c| {
                if c.read_tpkt(s).is_none() {
                    return;
                }
                let partial = [0x03, 0x00, 0x03, 0xE8, 0x0E, 0xD0, 0x00, 0x00, 0x12, 0x34];
                if c.write_all(s, &partial).is_some() {
                    c.hold(s);
                }
            }),
        )
    }

    /// Reads the X.224 request and sends a valid Connection Confirm (SSL if offered, else RDP) one
    /// byte every 2 s, then holds the connection open.
    pub fn drip() -> Self {
        Self::drip_every(Duration::from_secs(2))
    }

    /// [`BadServer::drip`] with another interval.
    pub fn drip_every(interval: Duration) -> Self {
        Self::start(
            "drip",
            Arc::new(move |s, c| {
                let Some(request) = c.read_tpkt(s) else {
                    return;
                };
                let confirm = net::connection_confirm(ssl_or_rdp(&request), 0x01);
                for byte in confirm {
                    if c.write_all(s, &[byte]).is_none() {
                        return;
                    }
                    let until = Instant::now() + interval;
                    while Instant::now() < until {
                        if c.stopped() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                c.hold(s);
            }),
        )
    }

    /// Reads the X.224 request, then sends without end: a TPKT header promising 65535 bytes
    /// followed by zero bytes, for as long as the client reads (see [`BadServer::bytes_sent`]).
    pub fn endless() -> Self {
        Self::start(
            "endless",
            Arc::new(|s, c| {
                if c.read_tpkt(s).is_none() {
                    return;
                }
                let _ = s.set_write_timeout(Some(POLL));
                if c.write_all(s, &[0x03, 0x00, 0xFF, 0xFF]).is_none() {
                    return;
                }
                let chunk = vec![0u8; 16 * 1024];
                while !c.stopped() {
                    match s.write(&chunk) {
                        Ok(0) => return,
                        Ok(n) => c.sent(n),
                        Err(e) if is_timeout(&e) => continue,
                        Err(_) => return,
                    }
                }
            }),
        )
    }

    /// Answers a valid Connection Confirm selecting PROTOCOL_SSL, reads the TLS ClientHello record,
    /// then resets the connection (RST, zero linger) — what endpoint security products do.
    pub fn reset_after_client_hello() -> Self {
        Self::start(
            "reset-after-client-hello",
            Arc::new(|s, c| {
                if c.read_tpkt(s).is_none() {
                    return;
                }
                if c.write_all(s, &net::connection_confirm(PROTOCOL_SSL, 0x01))
                    .is_none()
                {
                    return;
                }
                if c.read_tls_record(s).is_none() {
                    return;
                }
                let _ = set_zero_linger(s);
                // The accept loop unregisters and drops the stream: the close sends the RST.
            }),
        )
    }

    /// Reads the X.224 request, then resets the connection (RST) without answering.
    pub fn reset_after_request() -> Self {
        Self::start(
            "reset-after-request",
            Arc::new(|s, c| {
                if c.read_tpkt(s).is_some() {
                    let _ = set_zero_linger(s);
                }
            }),
        )
    }

    /// Accepts and never reads a byte (nor sends one), with the smallest receive window the kernel
    /// allows: a client write of more than about 35 KB blocks until the client gives up. Holds the
    /// connection until the server is dropped.
    pub fn deaf() -> Self {
        let core = Core::start_tuned("deaf", Arc::new(|_s, c| c.idle()), tiny_window)
            .unwrap_or_else(|e| panic!("start deaf: {e:#}"));
        Self { core, kind: "deaf" }
    }

    /// Reads the X.224 request, answers a valid Connection Confirm (SSL if offered, else RDP), then
    /// never reads again, with the smallest receive window (see [`BadServer::deaf`]).
    pub fn deaf_after_confirm() -> Self {
        let core = Core::start_tuned(
            "deaf-after-confirm",
            Arc::new(|s, c| {
                let Some(request) = c.read_tpkt(s) else {
                    return;
                };
                if c.write_all(s, &net::connection_confirm(ssl_or_rdp(&request), 0x01))
                    .is_some()
                {
                    c.idle();
                }
            }),
            tiny_window,
        )
        .unwrap_or_else(|e| panic!("start deaf-after-confirm: {e:#}"));
        Self {
            core,
            kind: "deaf-after-confirm",
        }
    }

    /// Answers a valid Connection Confirm (SSL if offered, else RDP), then closes (FIN).
    pub fn confirm_then_close() -> Self {
        Self::start(
            "confirm-then-close",
            Arc::new(|s, c| {
                let Some(request) = c.read_tpkt(s) else {
                    return;
                };
                let _ = c.write_all(s, &net::connection_confirm(ssl_or_rdp(&request), 0x01));
                let _ = s.shutdown(Shutdown::Write);
            }),
        )
    }

    /// Selects standard RDP security (PROTOCOL_RDP) with 128-bit RC4 and answers the MCS Connect
    /// Initial with a Connect Response whose server certificate is a proprietary one with the given
    /// little-endian RSA modulus and exponent (MS-RDPBCGR 2.2.1.4.3.1.1), then keeps reading what
    /// the client sends. With an all-zero modulus this is the hostile server that made the probe
    /// divide by zero.
    pub fn rdp_security_key(modulus_le: Vec<u8>, exponent: u32) -> Self {
        Self::start(
            "rdp-security-key",
            Arc::new(move |s, c| {
                if c.read_tpkt(s).is_none() {
                    return;
                }
                if c.write_all(s, &net::connection_confirm(PROTOCOL_RDP, 0x01))
                    .is_none()
                {
                    return;
                }
                if c.read_tpkt(s).is_none() {
                    return;
                }
                let cert = proprietary_certificate(&modulus_le, exponent);
                if c.write_all(s, &connect_response_rdp_security(cert))
                    .is_none()
                {
                    return;
                }
                c.hold(s);
            }),
        )
    }

    pub fn port(&self) -> u16 {
        self.core.port
    }

    pub fn addr(&self) -> SocketAddr {
        net::loopback(self.core.port)
    }

    /// `"127.0.0.1:port"`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.core.port)
    }

    /// Connections accepted so far, with what each delivered.
    pub fn connections(&self) -> Vec<ConnRecord> {
        self.core.connections()
    }

    /// Bytes received on each connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.connections().into_iter().map(|c| c.received).collect()
    }

    /// Bytes this server has written, over all connections.
    pub fn bytes_sent(&self) -> u64 {
        self.core.shared.bytes_sent.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        net::wait_until(timeout, Duration::from_millis(10), || {
            (self.connections().len() >= n).then_some(())
        })
        .is_some()
    }
}

/// Where [`CredsspErrorServer`] answers with its TSRequest errorCode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAt {
    /// Answers the first TSRequest (NTLM NEGOTIATE) with the error.
    Negotiate,
    /// Answers NEGOTIATE with an NTLM CHALLENGE, then the AUTHENTICATE TSRequest with the error —
    /// what Windows does on a wrong password.
    Authenticate,
}

/// How the errorCode INTEGER is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorEncoding {
    /// Minimal two's complement of the NTSTATUS as an i32: 0xC000006D is `02 04 C0 00 00 6D`, as
    /// Windows and FreeRDP 3 send it.
    Signed,
    /// A non-negative DER INTEGER: 0xC000006D is `02 05 00 C0 00 00 6D` (sspi 0.23 rejects it).
    Unsigned,
}

/// Options of a [`CredsspErrorServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredsspErrorOpts {
    pub at: ErrorAt,
    /// The NTSTATUS to send.
    pub code: u32,
    pub encoding: ErrorEncoding,
    /// TSRequest version the server announces.
    pub version: u8,
}

impl Default for CredsspErrorOpts {
    fn default() -> Self {
        Self {
            at: ErrorAt::Authenticate,
            code: STATUS_LOGON_FAILURE,
            encoding: ErrorEncoding::Signed,
            version: 6,
        }
    }
}

/// NTSTATUS STATUS_LOGON_FAILURE.
pub const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;

/// A small CredSSP server (MS-CSSP) that refuses every logon with a TSRequest errorCode: X.224
/// Connection Confirm selecting PROTOCOL_HYBRID, TLS (OpenSSL, self-signed RSA certificate), then
/// per [`CredsspErrorOpts`] an NTLM CHALLENGE and a TSRequest carrying `errorCode`, then a TLS
/// close_notify and FIN. A client offering no HYBRID gets RDP_NEG_FAILURE HYBRID_REQUIRED_BY_SERVER.
/// `messages` of each connection: the X.224 request, then the cleartext TSRequests received.
pub struct CredsspErrorServer {
    core: Core,
    cert: TestCert,
    opts: CredsspErrorOpts,
}

impl std::fmt::Debug for CredsspErrorServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredsspErrorServer")
            .field("port", &self.core.port)
            .field("opts", &self.opts)
            .finish()
    }
}

impl CredsspErrorServer {
    /// Wrong-password behaviour of Windows: STATUS_LOGON_FAILURE after the AUTHENTICATE message.
    pub fn logon_failure() -> Self {
        Self::start(CredsspErrorOpts::default()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn start(opts: CredsspErrorOpts) -> Result<Self> {
        let cert = TestCert::valid("credssp-error.rdprobe.test")?;
        let acceptor = Arc::new(tls_acceptor(&cert)?);
        let handler: Arc<Handler> = Arc::new(move |s, c| {
            let _ = credssp_session(s, c, &acceptor, &opts);
        });
        Ok(Self {
            core: Core::start("credssp-error", handler)?,
            cert,
            opts,
        })
    }

    pub fn port(&self) -> u16 {
        self.core.port
    }

    pub fn addr(&self) -> SocketAddr {
        net::loopback(self.core.port)
    }

    /// `"127.0.0.1:port"`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.core.port)
    }

    /// The certificate it presents.
    pub fn cert(&self) -> &TestCert {
        &self.cert
    }

    pub fn opts(&self) -> CredsspErrorOpts {
        self.opts
    }

    pub fn connections(&self) -> Vec<ConnRecord> {
        self.core.connections()
    }

    /// The cleartext TSRequests received, over all connections.
    pub fn ts_requests(&self) -> Vec<Vec<u8>> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.messages.into_iter().skip(1))
            .collect()
    }

    /// NTLM message types (1 NEGOTIATE, 3 AUTHENTICATE) found in the TSRequests received.
    pub fn ntlm_messages(&self) -> Vec<u32> {
        self.ts_requests()
            .iter()
            .filter_map(|req| ntlm_message_type(req))
            .collect()
    }

    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        net::wait_until(timeout, Duration::from_millis(10), || {
            (self.connections().len() >= n).then_some(())
        })
        .is_some()
    }
}

fn tls_acceptor(cert: &TestCert) -> Result<openssl::ssl::SslAcceptor> {
    use openssl::pkey::PKey;
    use openssl::ssl::{SslAcceptor, SslMethod};
    use openssl::x509::X509;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    let key = PKey::private_key_from_der(&cert.key_der)?;
    let x509 = X509::from_der(&cert.der)?;
    builder.set_private_key(&key)?;
    builder.set_certificate(&x509)?;
    builder.check_private_key()?;
    Ok(builder.build())
}

/// A TLS stream over the handler's socket. The socket keeps its short poll timeout; reads retry
/// until the connection's stop flag or deadline.
fn credssp_session(
    stream: &mut TcpStream,
    conn: &Conn,
    acceptor: &openssl::ssl::SslAcceptor,
    opts: &CredsspErrorOpts,
) -> Option<()> {
    let request = conn.read_tpkt(stream)?;
    let requested = net::requested_protocols(&request).unwrap_or(PROTOCOL_RDP);
    if requested & (PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX) == 0 {
        conn.write_all(
            stream,
            &net::connection_failure(net::HYBRID_REQUIRED_BY_SERVER),
        )?;
        return Some(());
    }
    conn.write_all(stream, &net::connection_confirm(PROTOCOL_HYBRID, 0x01))?;

    // From here on the handshake owns the socket: give it a plain deadline, no polling.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let tcp = stream.try_clone().ok()?;
    let mut tls = acceptor.accept(tcp).ok()?;

    let first = read_ts_request(&mut tls)?;
    conn.message(&first);
    let spnego = contains(&first, &SPNEGO_OID);
    if opts.at == ErrorAt::Authenticate {
        let challenge = ntlm_challenge();
        let token = if spnego {
            spnego_response(&challenge)
        } else {
            challenge
        };
        tls.write_all(&ts_request(opts.version, Some(&token), None))
            .ok()?;
        let second = read_ts_request(&mut tls)?;
        conn.message(&second);
    }
    let error = ts_request(opts.version, None, Some((opts.code, opts.encoding)));
    tls.write_all(&error).ok()?;
    conn.sent(error.len());
    let _ = tls.shutdown();
    Some(())
}

/// Reads one DER SEQUENCE (a TSRequest) of at most [`MAX_PDU`] bytes.
fn read_ts_request(tls: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = [0u8; 2];
    tls.read_exact(&mut head).ok()?;
    if head[0] != 0x30 {
        return None;
    }
    let mut out = head.to_vec();
    let len = if head[1] & 0x80 == 0 {
        usize::from(head[1])
    } else {
        let n = usize::from(head[1] & 0x7F);
        if !(1..=3).contains(&n) {
            return None;
        }
        let mut len_bytes = vec![0u8; n];
        tls.read_exact(&mut len_bytes).ok()?;
        out.extend_from_slice(&len_bytes);
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if len > MAX_PDU {
        return None;
    }
    let start = out.len();
    out.resize(start + len, 0);
    tls.read_exact(&mut out[start..]).ok()?;
    Some(out)
}

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        let len = u16::try_from(len).expect("der content under 64 KiB");
        out.push(0x82);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(content);
    out
}

/// Minimal two's complement DER INTEGER content of `v`.
fn der_int_signed(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// A TSRequest (MS-CSSP 2.2.1): version, optional negoTokens with one token, optional errorCode.
fn ts_request(version: u8, token: Option<&[u8]>, error: Option<(u32, ErrorEncoding)>) -> Vec<u8> {
    let mut body = tlv(0xA0, &tlv(0x02, &[version]));
    if let Some(token) = token {
        let nego_data = tlv(0x30, &tlv(0x30, &tlv(0xA0, &tlv(0x04, token))));
        body.extend(tlv(0xA1, &nego_data));
    }
    if let Some((code, encoding)) = error {
        let int = match encoding {
            ErrorEncoding::Signed => der_int_signed(i64::from(code as i32)),
            ErrorEncoding::Unsigned => der_int_signed(i64::from(code)),
        };
        body.extend(tlv(0xA4, &tlv(0x02, &int)));
    }
    tlv(0x30, &body)
}

/// DER of the SPNEGO OID 1.3.6.1.5.5.2.
const SPNEGO_OID: [u8; 8] = [0x06, 0x06, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x02];
/// DER of the NTLMSSP OID 1.3.6.1.4.1.311.2.2.10.
const NTLMSSP_OID: [u8; 12] = [
    0x06, 0x0A, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0A,
];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The NTLM message type after the first "NTLMSSP\0" signature in `bytes`.
pub fn ntlm_message_type(bytes: &[u8]) -> Option<u32> {
    let at = bytes.windows(8).position(|w| w == b"NTLMSSP\0")?;
    let t = bytes.get(at + 8..at + 12)?;
    Some(u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
}

/// SPNEGO negTokenResp (RFC 4178 4.2.2): accept-incomplete, NTLMSSP, the response token.
fn spnego_response(token: &[u8]) -> Vec<u8> {
    let mut seq = tlv(0xA0, &tlv(0x0A, &[0x01]));
    seq.extend(tlv(0xA1, &NTLMSSP_OID));
    seq.extend(tlv(0xA2, &tlv(0x04, token)));
    tlv(0xA1, &tlv(0x30, &seq))
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// An NTLM CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) from server ERRSRV of workgroup RDPROBE, with a
/// target info list of NetBIOS/DNS names and a timestamp, and version 10.0.17763.
fn ntlm_challenge() -> Vec<u8> {
    /// Offset of the payload: the fixed header with its Version field (bytes).
    const PAYLOAD_OFFSET: u32 = 56;
    let target_name = utf16le("ERRSRV");
    let mut info = Vec::new();
    let mut av = |id: u16, value: &[u8]| {
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(value.len() as u16).to_le_bytes());
        info.extend_from_slice(value);
    };
    av(2, &utf16le("RDPROBE")); // MsvAvNbDomainName
    av(1, &utf16le("ERRSRV")); // MsvAvNbComputerName
    av(4, &utf16le("rdprobe.test")); // MsvAvDnsDomainName
    av(3, &utf16le("errsrv.rdprobe.test")); // MsvAvDnsComputerName
    let unix_100ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() / 100)
        .unwrap_or(0) as u64;
    av(7, &(unix_100ns + 116_444_736_000_000_000).to_le_bytes()); // MsvAvTimestamp (FILETIME)
    av(0, &[]); // MsvAvEOL

    let flags: u32 = 0xE28A_8235;
    let mut msg = b"NTLMSSP\0".to_vec();
    msg.extend_from_slice(&2u32.to_le_bytes());
    let name_len = target_name.len() as u16;
    msg.extend_from_slice(&name_len.to_le_bytes());
    msg.extend_from_slice(&name_len.to_le_bytes());
    msg.extend_from_slice(&PAYLOAD_OFFSET.to_le_bytes());
    msg.extend_from_slice(&flags.to_le_bytes());
    msg.extend_from_slice(&rand_u32().to_le_bytes());
    msg.extend_from_slice(&rand_u32().to_le_bytes());
    msg.extend_from_slice(&[0u8; 8]);
    let info_len = info.len() as u16;
    msg.extend_from_slice(&info_len.to_le_bytes());
    msg.extend_from_slice(&info_len.to_le_bytes());
    msg.extend_from_slice(&(PAYLOAD_OFFSET + u32::from(name_len)).to_le_bytes());
    msg.extend_from_slice(&[10, 0]);
    msg.extend_from_slice(&17763u16.to_le_bytes());
    msg.extend_from_slice(&[0, 0, 0, 0x0F]);
    debug_assert_eq!(msg.len(), PAYLOAD_OFFSET as usize);
    msg.extend_from_slice(&target_name);
    msg.extend_from_slice(&info);
    msg
}

/// What [`TlsOrderServer`] offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOrderOpts {
    /// OpenSSL cipher list for TLS 1.2, in the server's order.
    pub ciphers: &'static str,
    /// TLS 1.3 suites, in the server's order.
    pub suites13: &'static str,
    /// SSL_OP_CIPHER_SERVER_PREFERENCE: pick by the server's order instead of the client's.
    pub server_preference: bool,
    /// SSL_OP_PRIORITIZE_CHACHA (with `server_preference`): pick ChaCha20 first when it is the
    /// client's first suite, else by the server's order.
    pub prioritize_chacha: bool,
}

/// A TLS-only server on OpenSSL (TLS 1.2 and 1.3) with a chosen cipher order: answers an X.224
/// request offering SSL with PROTOCOL_SSL (else SSL_REQUIRED_BY_SERVER), runs the handshake, then
/// waits for the client to close. xrdp and freerdp-shadow both follow the client's order; this one
/// can follow its own.
pub struct TlsOrderServer {
    core: Core,
}

impl std::fmt::Debug for TlsOrderServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOrderServer")
            .field("port", &self.core.port)
            .finish()
    }
}

impl TlsOrderServer {
    pub fn start(opts: TlsOrderOpts) -> Result<Self> {
        use openssl::ssl::{SslOptions, SslVersion};
        let cert = TestCert::valid("tls-order.rdprobe.test")?;
        let acceptor = {
            use openssl::pkey::PKey;
            use openssl::ssl::{SslAcceptor, SslMethod};
            use openssl::x509::X509;
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
            let key = PKey::private_key_from_der(&cert.key_der)?;
            let x509 = X509::from_der(&cert.der)?;
            b.set_private_key(&key)?;
            b.set_certificate(&x509)?;
            b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
            b.set_cipher_list(opts.ciphers)?;
            b.set_ciphersuites(opts.suites13)?;
            if opts.server_preference {
                b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
            } else {
                b.clear_options(SslOptions::CIPHER_SERVER_PREFERENCE);
            }
            if opts.prioritize_chacha {
                b.set_options(SslOptions::PRIORITIZE_CHACHA);
            }
            Arc::new(b.build())
        };
        let handler: Arc<Handler> = Arc::new(move |s, c| {
            let _ = tls_order_session(s, c, &acceptor);
        });
        Ok(Self {
            core: Core::start("tls-order", handler)?,
        })
    }

    pub fn port(&self) -> u16 {
        self.core.port
    }

    pub fn connections(&self) -> Vec<ConnRecord> {
        self.core.connections()
    }
}

fn tls_order_session(
    stream: &mut TcpStream,
    conn: &Conn,
    acceptor: &openssl::ssl::SslAcceptor,
) -> Option<()> {
    let request = conn.read_tpkt(stream)?;
    let requested = net::requested_protocols(&request).unwrap_or(PROTOCOL_RDP);
    if requested & PROTOCOL_SSL == 0 {
        conn.write_all(
            stream,
            &net::connection_failure(net::SSL_REQUIRED_BY_SERVER),
        )?;
        return Some(());
    }
    conn.write_all(stream, &net::connection_confirm(PROTOCOL_SSL, 0))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut tls = acceptor.accept(stream.try_clone().ok()?).ok()?;
    let mut sink = [0u8; 256];
    while matches!(tls.read(&mut sink), Ok(n) if n > 0) {}
    Some(())
}

/// A proprietary server certificate (MS-RDPBCGR 2.2.1.4.3.1.1) around an RSA1 public key blob; the
/// signature is zeros (the probe does not check it).
pub fn proprietary_certificate(modulus_le: &[u8], exponent: u32) -> Vec<u8> {
    let keylen = modulus_le.len() + 8;
    let mut blob = Vec::new();
    blob.extend_from_slice(&0x3141_5352u32.to_le_bytes()); // "RSA1"
    blob.extend_from_slice(&(keylen as u32).to_le_bytes());
    blob.extend_from_slice(&((modulus_le.len() * 8) as u32).to_le_bytes());
    blob.extend_from_slice(&(modulus_le.len().saturating_sub(1) as u32).to_le_bytes());
    blob.extend_from_slice(&exponent.to_le_bytes());
    blob.extend_from_slice(modulus_le);
    blob.extend_from_slice(&[0u8; 8]);
    let mut cert = Vec::new();
    cert.extend_from_slice(&1u32.to_le_bytes()); // CERT_CHAIN_VERSION_1
    cert.extend_from_slice(&1u32.to_le_bytes()); // SIGNATURE_ALG_RSA
    cert.extend_from_slice(&1u32.to_le_bytes()); // KEY_EXCHANGE_ALG_RSA
    cert.extend_from_slice(&0x0006u16.to_le_bytes()); // BB_RSA_KEY_BLOB
    cert.extend_from_slice(&(blob.len() as u16).to_le_bytes());
    cert.extend_from_slice(&blob);
    cert.extend_from_slice(&0x0008u16.to_le_bytes()); // BB_RSA_SIGNATURE_BLOB
    cert.extend_from_slice(&72u16.to_le_bytes());
    cert.extend_from_slice(&[0u8; 72]);
    cert
}

/// TPKT + X.224 Data + MCS Connect Response selecting 128-bit RC4 at level client compatible, a
/// fixed server random and `cert` as the server certificate (built with IronRDP's PDU types).
pub fn connect_response_rdp_security(cert: Vec<u8>) -> Vec<u8> {
    use ironrdp_pdu::gcc::{
        ConferenceCreateResponse, EncryptionLevel, EncryptionMethod, RdpVersion, ServerCoreData,
        ServerCoreOptionalData, ServerGccBlocks, ServerNetworkData, ServerSecurityData,
    };
    use ironrdp_pdu::mcs::{ConnectResponse, DomainParameters};
    let blocks = ServerGccBlocks {
        core: ServerCoreData {
            version: RdpVersion::V5_PLUS,
            optional_data: ServerCoreOptionalData {
                client_requested_protocols: Some(ironrdp_pdu::nego::SecurityProtocol::empty()),
                early_capability_flags: None,
            },
        },
        network: ServerNetworkData {
            channel_ids: vec![],
            io_channel: 1003,
        },
        security: ServerSecurityData {
            encryption_method: EncryptionMethod::BIT_128,
            encryption_level: EncryptionLevel::ClientCompatible,
            server_random: Some([0x5A; 32]),
            server_cert: cert,
        },
        message_channel: None,
        multi_transport_channel: None,
    };
    let response = ConnectResponse {
        conference_create_response: ConferenceCreateResponse::new(1002, blocks)
            .expect("connect response fits"),
        called_connect_id: 0,
        domain_parameters: DomainParameters::target(),
    };
    let mcs = ironrdp_core::encode_vec(&response).expect("encode connect response");
    let mut pdu = vec![0x03, 0x00, 0x00, 0x00, 0x02, 0xF0, 0x80];
    pdu.extend_from_slice(&mcs);
    let len = pdu.len() as u16;
    pdu[2..4].copy_from_slice(&len.to_be_bytes());
    pdu
}
