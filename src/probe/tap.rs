//! A stream wrapper that records every byte read and written into the shared Trace.
//!
//! One tap sits on the TCP socket (wire layer); after a TLS upgrade a second tap sits above TLS
//! (inner layer). Reading through a tap never hides bytes: the Trace sees exactly what the socket
//! delivered, whatever the framing code above does with it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::trace::{Dir, EventKind, Layer, Trace};

/// Bytes of data retained per direction and layer before further data is only counted (Elided).
pub const MAX_RETAINED_PER_STREAM: usize = 16 * 1024 * 1024;

/// The Trace shared by the taps and the probe driver.
#[derive(Clone)]
pub struct SharedTrace {
    inner: Arc<Mutex<TraceState>>,
}

struct TraceState {
    trace: Trace,
    retained: [usize; 4],
    fin_seen: [bool; 2],
    /// The packet capture of this trace's connection and a duplicate of its socket (for
    /// `TCP_INFO` after the probe dropped its stream), until [`SharedTrace::finish_wire`].
    wire: Option<(
        Option<super::wire::WireCapture>,
        Option<std::os::fd::OwnedFd>,
    )>,
}

fn slot(dir: Dir, layer: Layer) -> usize {
    (match dir {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }) + (match layer {
        Layer::Wire => 0,
        Layer::Inner => 2,
    })
}

impl SharedTrace {
    pub fn new(trace: Trace) -> Self {
        SharedTrace {
            inner: Arc::new(Mutex::new(TraceState {
                trace,
                retained: [0; 4],
                fin_seen: [false; 2],
                wire: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TraceState> {
        // A poisoned lock only means another task panicked mid-push; the trace is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the server stopped reading: a write that began at `started` timed out, noted
    /// and counted as a timeout waiting for the server.
    pub fn write_timed_out(&self, started: std::time::Instant) {
        let after_ms = started.elapsed().as_millis() as u64;
        self.push(EventKind::Note(format!(
            "write timed out after {after_ms} ms: the server stopped reading"
        )));
        self.push(EventKind::Timeout {
            waiting_for: Dir::S2C,
            after_ms,
        });
    }

    pub fn push(&self, kind: EventKind) {
        self.lock().trace.push_now(kind);
    }

    pub fn data(&self, dir: Dir, layer: Layer, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut st = self.lock();
        let s = slot(dir, layer);
        if st.retained[s] + bytes.len() <= MAX_RETAINED_PER_STREAM {
            st.retained[s] += bytes.len();
            st.trace.push_now(EventKind::Data {
                dir,
                layer,
                bytes: Bytes::copy_from_slice(bytes),
            });
        } else {
            st.trace.push_now(EventKind::Elided {
                dir,
                layer,
                len: bytes.len() as u64,
            });
        }
    }

    /// Records a FIN from the sender of `dir`, once.
    pub fn fin(&self, dir: Dir) {
        let mut st = self.lock();
        let i = if dir == Dir::C2S { 0 } else { 1 };
        if !st.fin_seen[i] {
            st.fin_seen[i] = true;
            st.trace.push_now(EventKind::Fin { dir });
        }
    }

    pub fn fin_seen(&self, dir: Dir) -> bool {
        self.lock().fin_seen[if dir == Dir::C2S { 0 } else { 1 }]
    }

    pub fn add_keylog(&self, line: String) {
        let mut st = self.lock();
        if !st.trace.keylog.contains(&line) {
            st.trace.keylog.push(line);
        }
    }

    /// Records when the connect attempt started (the SYN leaves then).
    pub fn set_connect_start(&self, t_us: u64) {
        self.lock().trace.connect_start_us = Some(t_us);
    }

    /// Changes the recorded trace in place.
    pub fn edit(&self, f: impl FnOnce(&mut Trace)) {
        f(&mut self.lock().trace);
    }

    /// Records the name resolution before the connect.
    pub fn set_dns(&self, dns: crate::net::DnsLookup) {
        self.lock().trace.dns = Some(dns);
    }

    pub fn set_addrs(&self, client: std::net::SocketAddr, server: std::net::SocketAddr) {
        let mut st = self.lock();
        st.trace.client = client;
        st.trace.server = server;
    }

    /// Keeps the running capture of this trace's connection (and a duplicate of its socket) until
    /// [`SharedTrace::finish_wire`].
    pub fn set_wire(
        &self,
        cap: Option<super::wire::WireCapture>,
        sock: Option<std::os::fd::OwnedFd>,
    ) {
        self.lock().wire = Some((cap, sock));
    }

    /// Names the connection's local address to the running capture.
    pub fn wire_local(&self, local: std::net::SocketAddr) {
        if let Some((Some(c), _)) = &self.lock().wire {
            c.set_local(local);
        }
    }

    /// The kernel's `TCP_INFO` of the connection's socket now (while [`SharedTrace::set_wire`]
    /// keeps a duplicate of it).
    pub fn kernel_now(&self) -> Option<super::wire::KernelTcpInfo> {
        let st = self.lock();
        let fd = st.wire.as_ref()?.1.as_ref()?;
        super::wire::tcp_info(std::os::fd::AsFd::as_fd(fd))
    }

    /// Reads the socket's `TCP_INFO`, closes the duplicate, stops the capture after `linger` and
    /// keeps its packets in the trace, with the TCP evidence read from them (as `analyze` of the
    /// written capture reads it) and the first SYN as the connect start. No-op without a capture.
    pub fn finish_wire(&self, linger: std::time::Duration) {
        let Some((cap, sock)) = self.lock().wire.take() else {
            return;
        };
        let kernel = sock
            .as_ref()
            .and_then(|fd| super::wire::tcp_info(std::os::fd::AsFd::as_fd(fd)));
        drop(sock);
        let Some(cap) = cap else {
            self.lock().trace.kernel = kernel;
            return;
        };
        let captured = cap.stop(linger);
        let evidence = super::wire::evidence_of(&self.snapshot(), &captured);
        let mut st = self.lock();
        st.trace.kernel = kernel;
        if let Some((tcp, first_syn)) = evidence {
            st.trace.tcp = tcp;
            if let Some(t) = first_syn {
                st.trace.connect_start_us = Some(t);
            }
        }
        st.trace.wire = Some(std::sync::Arc::new(captured));
    }

    /// Replaces the recorded trace (used when a probe reconnects with another TLS engine).
    pub fn replace(&self, trace: Trace) {
        let mut st = self.lock();
        st.wire = None;
        st.trace = trace;
        st.retained = [0; 4];
        st.fin_seen = [false; 2];
    }

    pub fn snapshot(&self) -> Trace {
        self.lock().trace.clone()
    }

    pub fn has_event(&self, f: impl Fn(&EventKind) -> bool) -> bool {
        self.lock().trace.events.iter().any(|e| f(&e.kind))
    }
}

/// Records what passes through `S` into the shared trace at `layer`.
pub struct Tap<S> {
    inner: S,
    trace: SharedTrace,
    layer: Layer,
}

impl<S> Tap<S> {
    pub fn new(inner: S, trace: SharedTrace, layer: Layer) -> Self {
        Tap {
            inner,
            trace,
            layer,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn record_io_error(trace: &SharedTrace, layer: Layer, e: &io::Error) {
    if layer != Layer::Wire {
        return;
    }
    let reset = matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    );
    if reset && !trace.has_event(|k| matches!(k, EventKind::Rst { dir: Dir::S2C })) {
        trace.push(EventKind::Rst { dir: Dir::S2C });
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    match this.layer {
                        Layer::Wire => this.trace.fin(Dir::S2C),
                        Layer::Inner => {
                            if !this.trace.fin_seen(Dir::S2C) {
                                this.trace.push(EventKind::Note(
                                    crate::trace::SERVER_CLOSE_NOTIFY_NOTE.into(),
                                ));
                            }
                        }
                    }
                } else {
                    this.trace.data(Dir::S2C, this.layer, new);
                }
            }
            Poll::Ready(Err(e)) => record_io_error(&this.trace, this.layer, e),
            Poll::Pending => {}
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        match &res {
            Poll::Ready(Ok(n)) => this.trace.data(Dir::C2S, this.layer, &buf[..*n]),
            Poll::Ready(Err(e)) => record_io_error(&this.trace, this.layer, e),
            Poll::Pending => {}
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = res {
            if this.layer == Layer::Wire {
                this.trace.fin(Dir::C2S);
            }
        }
        res
    }
}
