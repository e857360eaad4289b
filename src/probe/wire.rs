//! The probe's own wire: a packet socket that captures the real packets of the probe's one TCP
//! connection (and the ICMP errors about it) from before the SYN to after the last FIN, so the
//! pcapng holds what crossed the wire (real TTLs, IP IDs, retransmissions, SYN retries, the real RST
//! headers) instead of packets rebuilt from the socket's bytes.
//!
//! Linux `AF_PACKET` / `SOCK_DGRAM` socket (packets from the network header on, whatever the link
//! type: Ethernet, loopback, tun, WireGuard alike) with a classic BPF filter attached *before* the
//! socket is bound, so nothing unfiltered is ever queued. The kernel filter keeps TCP packets from
//! or to the probe's local port and ICMP / ICMPv6; the exact 4-tuple (and the flow an ICMP error
//! quotes) is checked here with the capture reader's packet parser.
//!
//! Why a raw packet socket and not libpcap (the `pcap` crate): the capture needs one filter for one
//! known port and nothing else of libpcap, while the `pcap` crate would make libpcap a build- and
//! run-time requirement of every rdprobe binary (libpcap-dev to build, libpcap.so to start), also
//! for the users who never capture. `libc` is already a dependency; the BPF program is 22
//! instructions built below. When the socket cannot be opened (no CAP_NET_RAW, not Linux) the probe
//! falls back to the synthetic writer and says so (`capture=synthetic`).
//!
//! Bounded: at most [`MAX_PACKETS`] packets and [`MAX_BYTES`] bytes are kept (then counted only);
//! the capture thread polls a stop flag every 20 ms and never outlives its handle.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most packets one probe's capture keeps.
pub const MAX_PACKETS: usize = 200_000;
/// Most packet bytes one probe's capture keeps.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// One captured packet: the IP header on (LINKTYPE_RAW), stamped by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WirePacket {
    /// Microseconds since the Unix epoch (kernel receive / transmit time).
    pub t_us: u64,
    /// The packet from its IP header on.
    pub data: Vec<u8>,
}

/// What the capture saw, once stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireCaptured {
    pub packets: Vec<WirePacket>,
    /// Packets of the flow not kept (beyond [`MAX_PACKETS`] / [`MAX_BYTES`]).
    pub dropped: u64,
}

/// Why the wire could not be captured (the probe falls back to the synthetic capture).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("opening a packet socket needs CAP_NET_RAW (run as root): {0}")]
    Permission(std::io::Error),
    #[error("packet socket setup failed at {step}: {err}")]
    Setup {
        step: &'static str,
        err: std::io::Error,
    },
    #[error("packet capture is only implemented on Linux")]
    Unsupported,
}

#[derive(Default)]
struct Shared {
    captured: WireCaptured,
    bytes: usize,
    /// How far the flow's close has come (see [`Closing`]).
    closing: Closing,
}

/// The end of the flow as the captured packets show it: a RST, or both FINs and an ACK after
/// them, ends it (nothing more of the flow is coming).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closing {
    fin_from: [Option<SocketAddr>; 2],
    pub done: bool,
}

impl Closing {
    /// Takes one TCP segment of the flow.
    pub fn segment(&mut self, src: SocketAddr, flags: crate::capture::reader::packet::Flags) {
        if self.done {
            return;
        }
        if flags.rst {
            self.done = true;
            return;
        }
        let both = self.fin_from[0].is_some() && self.fin_from[1].is_some();
        if flags.fin {
            match self.fin_from {
                [None, _] => self.fin_from[0] = Some(src),
                [Some(a), None] if a != src => self.fin_from[1] = Some(src),
                _ => {}
            }
        } else if both && flags.ack {
            // The ACK of the second FIN.
            self.done = true;
        }
    }
}

/// A running capture of one flow; stopped (and its thread joined) by [`WireCapture::stop`] or on
/// drop.
pub struct WireCapture {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The flow; the local address is completed once connected.
    flow: Arc<Mutex<(SocketAddr, SocketAddr)>>,
}

impl WireCapture {
    /// Starts capturing the TCP flow between `local` (its port must be bound already; its address
    /// may be unspecified until the connect picks it) and `remote`, and ICMP errors about it.
    pub fn start(local: SocketAddr, remote: SocketAddr) -> Result<WireCapture, CaptureError> {
        let sock = sys::open(local.port())?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let flow = Arc::new(Mutex::new((local, remote)));
        let (st, sh, fl) = (stop.clone(), shared.clone(), flow.clone());
        let thread = std::thread::Builder::new()
            .name("rdprobe-wire".into())
            .spawn(move || capture_loop(sock, &st, &sh, &fl))
            .map_err(|err| CaptureError::Setup {
                step: "thread",
                err,
            })?;
        Ok(WireCapture {
            stop,
            shared,
            thread: Some(thread),
            flow,
        })
    }

    /// Names the local address once the connect chose it (filters packets of other local
    /// addresses with the same port from then on).
    pub fn set_local(&self, local: SocketAddr) {
        self.flow.lock().unwrap_or_else(|e| e.into_inner()).0 = local;
    }

    /// Stops once the flow has ended on the wire (a RST, or both FINs acknowledged) or after
    /// `linger` at the most (the last FIN/ACKs of a close may still be on their way), joins the
    /// thread and returns the packets in capture order.
    pub fn stop(mut self, linger: Duration) -> WireCaptured {
        let until = std::time::Instant::now() + linger;
        while std::time::Instant::now() < until {
            if self
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .closing
                .done
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.halt();
        let mut sh = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut sh.captured)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WireCapture {
    fn drop(&mut self) {
        self.halt();
    }
}

fn capture_loop(
    sock: sys::PacketSocket,
    stop: &AtomicBool,
    shared: &Mutex<Shared>,
    flow: &Mutex<(SocketAddr, SocketAddr)>,
) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let Some((n, t_us)) = sock.recv(&mut buf) else {
            continue;
        };
        let data = &buf[..n];
        let (local, remote) = *flow.lock().unwrap_or_else(|e| e.into_inner());
        if !belongs(data, local, remote) {
            continue;
        }
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let crate::capture::reader::packet::Parsed::Tcp(s) =
            crate::capture::reader::packet::parse(LINKTYPE_RAW, data)
        {
            sh.closing.segment(s.src, s.flags);
        }
        if sh.captured.packets.len() >= MAX_PACKETS || sh.bytes + n > MAX_BYTES {
            sh.captured.dropped += 1;
            continue;
        }
        sh.bytes += n;
        sh.captured.packets.push(WirePacket {
            t_us,
            data: data.to_vec(),
        });
    }
}

fn addr_matches(want: SocketAddr, got: SocketAddr) -> bool {
    want.port() == got.port() && (want.ip().is_unspecified() || same_ip(want.ip(), got.ip()))
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// True when `ip_packet` is a TCP packet of the flow (either direction) or an ICMP error quoting
/// one of the flow's packets.
pub fn belongs(ip_packet: &[u8], local: SocketAddr, remote: SocketAddr) -> bool {
    use crate::capture::reader::packet::{parse, Parsed};
    let is_flow = |a: SocketAddr, b: SocketAddr| {
        (addr_matches(local, a) && addr_matches(remote, b))
            || (addr_matches(local, b) && addr_matches(remote, a))
    };
    match parse(LINKTYPE_RAW, ip_packet) {
        Parsed::Tcp(s) => is_flow(s.src, s.dst),
        Parsed::Icmp(e) => is_flow(e.quoted_src, e.quoted_dst),
        _ => false,
    }
}

/// pcap LINKTYPE_RAW: the packet begins with its IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;

/// The classic BPF program the kernel runs on every packet before queueing it (offsets from the
/// network header, as a SOCK_DGRAM packet socket sees it): accept IPv4/IPv6 TCP with `port` as its
/// source or destination port, and ICMP / ICMPv6; drop everything else.
pub fn bpf_program(port: u16) -> Vec<(u16, u8, u8, u32)> {
    // Opcodes (linux/filter.h).
    const LDB_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LDH_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDH_IND: u16 = 0x48; // BPF_LD | BPF_H | BPF_IND
    const LDXB_MSH: u16 = 0xb1; // BPF_LDX | BPF_B | BPF_MSH: X = 4 * (pkt[k] & 0xf)
    const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ACCEPT: u8 = 20;
    const DROP: u8 = 21;
    const V6: u8 = 12;
    let p = u32::from(port);
    // (opcode, jump-if-true target, jump-if-false target, k) with absolute targets, made relative
    // below (a jump's offset counts from the next instruction).
    let abs: [(u16, u8, u8, u32); 22] = [
        (LDB_ABS, 0, 0, 0),    // 0: A = version/IHL
        (AND_K, 0, 0, 0xf0),   // 1: A &= 0xf0
        (JEQ_K, 3, V6, 0x40),  // 2: IPv4?
        (LDB_ABS, 0, 0, 9),    // 3: A = protocol
        (JEQ_K, ACCEPT, 5, 1), // 4: ICMP
        (JEQ_K, 6, DROP, 6),   // 5: TCP?
        (LDXB_MSH, 0, 0, 0),   // 6: X = IPv4 header length
        (LDH_IND, 0, 0, 0),    // 7: A = source port
        (JEQ_K, ACCEPT, 9, p), // 8
        (LDH_IND, 0, 0, 2),    // 9: A = destination port
        (JEQ_K, ACCEPT, DROP, p),
        (RET_K, 0, 0, 0),         // 11: unused
        (JEQ_K, 13, DROP, 0x60),  // 12: IPv6?
        (LDB_ABS, 0, 0, 6),       // 13: A = next header
        (JEQ_K, ACCEPT, 15, 58),  // 14: ICMPv6
        (JEQ_K, 16, DROP, 6),     // 15: TCP?
        (LDH_ABS, 0, 0, 40),      // 16: A = source port
        (JEQ_K, ACCEPT, 18, p),   // 17
        (LDH_ABS, 0, 0, 42),      // 18: A = destination port
        (JEQ_K, ACCEPT, DROP, p), // 19
        (RET_K, 0, 0, 0x40000),   // 20: accept (whole packet)
        (RET_K, 0, 0, 0),         // 21: drop
    ];
    abs.iter()
        .enumerate()
        .map(|(i, &(code, jt, jf, k))| {
            if code == JEQ_K {
                let rel = |t: u8| t - (i as u8) - 1;
                (code, rel(jt), rel(jf), k)
            } else {
                (code, 0, 0, k)
            }
        })
        .collect()
}

#[cfg(target_os = "linux")]
mod sys {
    use super::CaptureError;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // linux/if_packet.h, asm-generic/socket.h, asm-generic/sockios.h (not all in libc).
    const PACKET_OUTGOING: u8 = 4;
    const SO_ATTACH_FILTER: libc::c_int = 26;
    const SIOCGSTAMP: libc::c_ulong = 0x8906;

    pub struct PacketSocket {
        fd: OwnedFd,
        /// The loopback interface: a packet sent on it is seen twice (outgoing and incoming);
        /// only the incoming copy is kept, as libpcap does.
        lo_ifindex: i32,
    }

    fn last_err(step: &'static str) -> CaptureError {
        CaptureError::Setup {
            step,
            err: std::io::Error::last_os_error(),
        }
    }

    pub fn open(port: u16) -> Result<PacketSocket, CaptureError> {
        // SAFETY: plain syscalls on a descriptor owned here; every pointer passed points at a live
        // local of the size given.
        unsafe {
            // Protocol 0: the socket receives nothing until bound, so no packet is queued before
            // the filter is in place.
            let raw = libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if raw < 0 {
                let e = std::io::Error::last_os_error();
                return Err(match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EACCES) => CaptureError::Permission(e),
                    _ => CaptureError::Setup {
                        step: "socket",
                        err: e,
                    },
                });
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let mut insns: Vec<libc::sock_filter> = super::bpf_program(port)
                .into_iter()
                .map(|(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
                .collect();
            let prog = libc::sock_fprog {
                len: insns.len() as u16,
                filter: insns.as_mut_ptr(),
            };
            if libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            ) < 0
            {
                return Err(last_err("attach filter"));
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            if libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            ) < 0
            {
                return Err(last_err("receive timeout"));
            }
            let rcvbuf: libc::c_int = 4 * 1024 * 1024;
            // Best effort: a smaller buffer only risks drops under load.
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&rcvbuf as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = 0;
            if libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            ) < 0
            {
                return Err(last_err("bind"));
            }
            let lo_ifindex = libc::if_nametoindex(c"lo".as_ptr()) as i32;
            Ok(PacketSocket { fd, lo_ifindex })
        }
    }

    impl PacketSocket {
        /// One packet into `buf` (length, kernel time in µs), or None on the 20 ms timeout, an
        /// error, or a loopback duplicate.
        pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, u64)> {
            // SAFETY: `buf` and `sll` are live locals of the sizes given.
            unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                let n = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                );
                if n <= 0 {
                    return None;
                }
                if sll.sll_pkttype == PACKET_OUTGOING && sll.sll_ifindex == self.lo_ifindex {
                    return None;
                }
                let mut tv: libc::timeval = std::mem::zeroed();
                let t_us = if libc::ioctl(self.fd.as_raw_fd(), SIOCGSTAMP as _, &mut tv) == 0 {
                    (tv.tv_sec as u64) * 1_000_000 + tv.tv_usec as u64
                } else {
                    crate::trace::now_us()
                };
                Some((n as usize, t_us))
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::CaptureError;
    pub struct PacketSocket;
    pub fn open(_port: u16) -> Result<PacketSocket, CaptureError> {
        Err(CaptureError::Unsupported)
    }
    impl PacketSocket {
        pub fn recv(&self, _buf: &mut [u8]) -> Option<(usize, u64)> {
            std::thread::sleep(std::time::Duration::from_millis(20));
            None
        }
    }
}

/// The kernel's view of one TCP socket (`TCP_INFO`, linux/tcp.h): what it retransmitted and how
/// it measured the path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelTcpInfo {
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u32,
    /// Smoothed round-trip time, microseconds (`tcpi_rtt`).
    pub rtt_us: u32,
    /// Round-trip time variance, microseconds (`tcpi_rttvar`).
    pub rttvar_us: u32,
    /// Path MTU the kernel uses (`tcpi_pmtu`).
    pub pmtu: u32,
    /// Maximum segment size the kernel sends (`tcpi_snd_mss`).
    pub snd_mss: u32,
    /// Maximum segment size seen from the peer (`tcpi_rcv_mss`).
    pub rcv_mss: u32,
    /// Segments sent but not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// Segments the kernel counts as lost (`tcpi_lost`).
    pub lost: u32,
}

/// Reads `TCP_INFO` of a connected TCP socket.
#[cfg(target_os = "linux")]
pub fn tcp_info(fd: std::os::fd::BorrowedFd<'_>) -> Option<KernelTcpInfo> {
    use std::os::fd::AsRawFd;
    // SAFETY: `info` is a live local of the size given; the kernel writes at most that many bytes.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        if libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        ) < 0
        {
            return None;
        }
        Some(KernelTcpInfo {
            total_retrans: info.tcpi_total_retrans,
            rtt_us: info.tcpi_rtt,
            rttvar_us: info.tcpi_rttvar,
            pmtu: info.tcpi_pmtu,
            snd_mss: info.tcpi_snd_mss,
            rcv_mss: info.tcpi_rcv_mss,
            unacked: info.tcpi_unacked,
            lost: info.tcpi_lost,
        })
    }
}

#[cfg(not(target_os = "linux"))]
pub fn tcp_info(_fd: std::os::fd::BorrowedFd<'_>) -> Option<KernelTcpInfo> {
    None
}

/// Sets `TCP_MAXSEG` on a socket before its connect: the SYN announces `mss` and the kernel sends
/// no larger segment.
#[cfg(unix)]
pub fn set_mss(fd: std::os::fd::BorrowedFd<'_>, mss: u16) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::from(mss);
    // SAFETY: `v` is a live local of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A path-MTU search of the live probe: the connection stalled waiting for the server after the
/// server had acknowledged everything the client sent, and was retried with clamped MSS values.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MssSearch {
    /// The stage that stalled at the connection's own segment size.
    pub stalled_stage: String,
    /// The segment size the kernel used on the stalled connection (`tcpi_snd_mss`).
    pub first_mss: Option<u32>,
    /// The largest clamped MSS that passed the stage that stalled.
    pub passed: Option<u16>,
    /// Clamped MSS values that stalled too.
    pub stalled: Vec<u16>,
}

/// The TCP evidence of the captured packets, read by the capture reader from a pcapng of them
/// exactly as `analyze` reads the probe's capture (so the live evidence equals the offline one),
/// and the time of the client's first SYN. None when nothing was captured.
#[allow(clippy::type_complexity)]
pub fn evidence_of(
    trace: &crate::trace::Trace,
    captured: &WireCaptured,
) -> Option<(Option<Box<crate::evidence::TcpEvidence>>, Option<u64>)> {
    use crate::capture::reader::packet::{parse, Parsed};
    if captured.packets.is_empty() {
        return None;
    }
    let first_syn = captured
        .packets
        .iter()
        .find(|p| {
            matches!(parse(LINKTYPE_RAW, &p.data),
            Parsed::Tcp(s) if s.flags.syn && !s.flags.ack)
        })
        .map(|p| p.t_us);
    let mut bare = crate::trace::Trace::new(trace.client, trace.server);
    bare.wire = Some(Arc::new(captured.clone()));
    let mut pcap = Vec::new();
    if crate::capture::writer::write_pcapng(&bare, &[], &mut pcap).is_err() {
        return Some((None, first_syn));
    }
    let tcp = crate::capture::reader::read_conversations(
        std::io::Cursor::new(pcap),
        crate::capture::reader::ReaderOptions::default(),
    )
    .ok()
    .and_then(|mut it| {
        it.find_map(|c| {
            c.ok().filter(|t| {
                t.server.port() == trace.server.port() && t.client.port() == trace.client.port()
            })
        })
    })
    .and_then(|t| t.tcp);
    Some((tcp, first_syn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capture stops as soon as the close is complete: both FINs and the last ACK, or a RST;
    /// a FIN from one side alone (or twice) is not the end.
    #[test]
    fn the_close_is_done_after_both_fins_and_the_last_ack_or_a_reset() {
        use crate::capture::reader::packet::Flags;
        let (c, s): (SocketAddr, SocketAddr) = (
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:3389".parse().unwrap(),
        );
        let f = |fin, ack, rst| Flags {
            syn: false,
            ack,
            fin,
            rst,
        };
        let mut k = Closing::default();
        k.segment(c, f(true, true, false));
        k.segment(c, f(true, true, false));
        k.segment(s, f(false, true, false));
        assert!(!k.done, "one FIN (sent twice) and its ACK");
        k.segment(s, f(true, true, false));
        assert!(!k.done, "the second FIN is not acknowledged yet");
        k.segment(c, f(false, true, false));
        assert!(k.done);
        let mut k = Closing::default();
        k.segment(s, f(false, false, true));
        assert!(k.done, "a reset ends it");
    }

    #[test]
    fn bpf_jumps_land_on_accept_or_drop() {
        let prog = bpf_program(3389);
        assert_eq!(prog.len(), 22);
        for (i, &(code, jt, jf, _)) in prog.iter().enumerate() {
            if code == 0x15 {
                assert!(i + 1 + (jt as usize) < prog.len());
                assert!(i + 1 + (jf as usize) < prog.len());
            }
        }
        // The IPv4 TCP branch compares the port.
        assert_eq!(prog[8].3, 3389);
        assert_eq!(prog[19].3, 3389);
    }

    #[test]
    fn belongs_keeps_the_flow_and_drops_others() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:3389".parse().unwrap();
        let mk = |sp: u16, dp: u16| {
            let b = etherparse::PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
                .tcp(sp, dp, 1, 1000);
            let mut v = Vec::new();
            b.write(&mut v, &[]).unwrap();
            v
        };
        assert!(belongs(&mk(40000, 3389), local, remote));
        assert!(belongs(&mk(3389, 40000), local, remote));
        assert!(!belongs(&mk(40001, 3389), local, remote));
        assert!(!belongs(&mk(40000, 3390), local, remote));
        let any: SocketAddr = "0.0.0.0:40000".parse().unwrap();
        assert!(belongs(&mk(40000, 3389), any, remote));
    }
}
