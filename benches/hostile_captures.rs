//! Benchmark: `rdprobe analyze` on hostile capture shapes, against `tshark` reading the same file in
//! the same run. Reports wall time and peak RSS of each tool (per child, from `wait4`).
//!
//! Shapes (generated here, in the temp dir):
//! * headers-only: one RDP conversation (port 3389, SYN seen) whose every data segment is cut by a
//!   54-byte snaplen, so each one is a gap in the stream; sizes from `BENCH_PACKETS`.
//! * fragments: one RDP conversation whose client sends a 32 KB TCP segment as one IPv4 datagram cut
//!   into 16 KB fragments that overlap each other (identical bytes), the last fragment sent last; the
//!   number of fragments from `BENCH_FRAGS`.
//!
//! Run: `cargo bench --bench hostile_captures` (BENCH_PACKETS=100000,1000000 and BENCH_FRAGS=1000,10000
//! by default). `BENCH_BIN=/path/to/rdprobe` measures another build of rdprobe (e.g. an older one);
//! `BENCH_KEEP=1` keeps the captures.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use etherparse::PacketBuilder;

const CLIENT: [u8; 4] = [10, 9, 0, 1];
const SERVER: [u8; 4] = [10, 9, 0, 2];
const CPORT: u16 = 50_000;
const SPORT: u16 = 3389;
/// Ethernet + IPv4 + TCP headers: what a headers-only snaplen keeps.
const HEADERS: u32 = 14 + 20 + 20;
/// IP payload of the fragmented datagram (TCP header + data).
const DATAGRAM: usize = 32 * 1024;
/// Bytes of each overlapping fragment.
const FRAGMENT: usize = 16 * 1024;

/// X.224 Connection Request with RDP_NEG_REQ (SSL | HYBRID).
const CR: &[u8] = &[
    0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0x00, 0x03,
    0x00, 0x00, 0x00,
];
/// X.224 Connection Confirm selecting PROTOCOL_SSL.
const CC: &[u8] = &[
    0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34, 0x00, 0x02, 0x1f, 0x08, 0x00, 0x01,
    0x00, 0x00, 0x00,
];

struct Pcap {
    w: std::io::BufWriter<std::fs::File>,
    n: u64,
}

impl Pcap {
    fn create(path: &Path, snaplen: u32) -> Pcap {
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes()).unwrap();
        w.write_all(&2u16.to_le_bytes()).unwrap();
        w.write_all(&4u16.to_le_bytes()).unwrap();
        for x in [0u32, 0, snaplen, 1] {
            w.write_all(&x.to_le_bytes()).unwrap();
        }
        Pcap { w, n: 0 }
    }

    /// One Ethernet frame, of which `caplen` bytes are captured.
    fn frame(&mut self, data: &[u8], caplen: usize) {
        let t_us = 1_780_000_000_000_000u64 + self.n * 100;
        self.n += 1;
        let cap = caplen.min(data.len());
        for x in [
            (t_us / 1_000_000) as u32,
            (t_us % 1_000_000) as u32,
            cap as u32,
            data.len() as u32,
        ] {
            self.w.write_all(&x.to_le_bytes()).unwrap();
        }
        self.w.write_all(&data[..cap]).unwrap();
    }
}

/// Sequence state of the conversation.
struct Tcp {
    cseq: u32,
    sseq: u32,
}

#[derive(Clone, Copy)]
enum Flag {
    Syn,
    SynAck,
    Ack,
    Fin,
}

impl Tcp {
    fn new() -> Tcp {
        Tcp {
            cseq: 1000,
            sseq: 7_000_000,
        }
    }

    /// An Ethernet frame with one segment; advances the sender's sequence number.
    fn seg(&mut self, from_client: bool, flag: Flag, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sp, dp) = if from_client {
            (CLIENT, SERVER, CPORT, SPORT)
        } else {
            (SERVER, CLIENT, SPORT, CPORT)
        };
        let (seq, ack) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 65_535);
        let b = match flag {
            Flag::Syn => b.syn(),
            Flag::SynAck => b.syn().ack(ack),
            Flag::Ack => b.ack(ack),
            Flag::Fin => b.fin().ack(ack),
        };
        let adv =
            payload.len() as u32 + u32::from(matches!(flag, Flag::Syn | Flag::SynAck | Flag::Fin));
        if from_client {
            self.cseq = self.cseq.wrapping_add(adv);
        } else {
            self.sseq = self.sseq.wrapping_add(adv);
        }
        let mut out = Vec::with_capacity(64 + payload.len());
        b.write(&mut out, payload).unwrap();
        out
    }
}

/// One conversation of `packets` data segments of 1,400 bytes, every one cut to its headers.
fn headers_only(path: &Path, packets: u64) {
    let mut p = Pcap::create(path, HEADERS);
    let mut t = Tcp::new();
    let full = usize::MAX;
    let f = t.seg(true, Flag::Syn, &[]);
    p.frame(&f, full);
    let f = t.seg(false, Flag::SynAck, &[]);
    p.frame(&f, full);
    let f = t.seg(true, Flag::Ack, &[]);
    p.frame(&f, full);
    let payload = vec![0x17u8; 1400];
    for i in 0..packets {
        let f = t.seg(i % 2 == 0, Flag::Ack, &payload);
        p.frame(&f, HEADERS as usize);
    }
    let f = t.seg(true, Flag::Fin, &[]);
    p.frame(&f, full);
    let f = t.seg(false, Flag::Fin, &[]);
    p.frame(&f, full);
    p.w.flush().unwrap();
}

/// One conversation whose client sends a 32 KB segment as `frags` overlapping IPv4 fragments.
fn fragments(path: &Path, frags: usize) {
    let mut p = Pcap::create(path, 65_535);
    let mut t = Tcp::new();
    let full = usize::MAX;
    for (c, fl, d) in [
        (true, Flag::Syn, &[][..]),
        (false, Flag::SynAck, &[][..]),
        (true, Flag::Ack, &[][..]),
        (true, Flag::Ack, CR),
        (false, Flag::Ack, CC),
    ] {
        let f = t.seg(c, fl, d);
        p.frame(&f, full);
    }
    let data: Vec<u8> = (0..DATAGRAM - 20).map(|i| (i % 251) as u8).collect();
    let whole = t.seg(true, Flag::Ack, &data);
    // Ethernet 14 + IPv4 20: the IP payload (TCP header first) follows.
    let (eth_ip, ip_payload) = whole.split_at(34);
    assert_eq!(ip_payload.len(), DATAGRAM);
    let frag = |offset: usize, len: usize, more: bool| -> Vec<u8> {
        let mut f = eth_ip.to_vec();
        let total = (20 + len) as u16;
        f[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
        f[14 + 4..14 + 6].copy_from_slice(&0x4242u16.to_be_bytes());
        let off = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        f[14 + 6..14 + 8].copy_from_slice(&off.to_be_bytes());
        f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let sum = ipv4_checksum(&f[14..34]);
        f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip_payload[offset..offset + len]);
        f
    };
    let span = DATAGRAM - 8 - FRAGMENT;
    for j in 0..frags.saturating_sub(1) {
        let offset = match j {
            0 => 0,
            1 => span,
            _ => (j * 7919 * 8) % span / 8 * 8,
        };
        let f = frag(offset, FRAGMENT, true);
        p.frame(&f, full);
    }
    let f = frag(DATAGRAM - 8, 8, false);
    p.frame(&f, full);
    for (c, fl) in [(true, Flag::Fin), (false, Flag::Fin)] {
        let f = t.seg(c, fl, &[]);
        p.frame(&f, full);
    }
    p.w.flush().unwrap();
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Runs `prog args` to completion under `/usr/bin/time`; (wall seconds, peak RSS KiB, stdout).
/// (The child's own `ru_maxrss` from `wait4` would include this process's size: a vfork-spawned
/// child shares our memory until it execs.)
fn measure(prog: &str, args: &[&std::ffi::OsStr]) -> (f64, u64, String) {
    let rss_file = std::env::temp_dir().join(format!("rdprobe-bench-rss-{}", std::process::id()));
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(prog)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("run /usr/bin/time (apt-get install time)");
    let secs = t.elapsed().as_secs_f64();
    let kib = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    let _ = std::fs::remove_file(&rss_file);
    (secs, kib, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sizes(var: &str, default: &str) -> Vec<u64> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn run(bin: &str, label: &str, path: &Path) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let (rd_s, rd_kib, out) = measure(
        bin,
        &["analyze".as_ref(), "--json".as_ref(), path.as_os_str()],
    );
    let verdict = out
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v.get("verdict").map(|v| v.to_string()))
        .unwrap_or_else(|| "none".into());
    let ts_args = [
        "-r",
        "",
        "-n",
        "-Y",
        "rdp.neg_type",
        "-T",
        "fields",
        "-e",
        "tcp.stream",
    ];
    let mut args: Vec<&std::ffi::OsStr> = ts_args.iter().map(|a| a.as_ref()).collect();
    args[1] = path.as_os_str();
    let (ts_s, ts_kib, _) = measure("tshark", &args);
    println!(
        "{label:<28} {:>6.0} MB | rdprobe {rd_s:>7.2} s {:>7} KiB | tshark {ts_s:>7.2} s {:>7} KiB | time ratio {:.1}x | verdict {verdict}",
        size as f64 / 1e6,
        rd_kib,
        ts_kib,
        ts_s / rd_s.max(1e-9)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("hostile_captures: bench");
        return;
    }
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rdprobe").into());
    for (tool, package) in [("tshark", "tshark"), ("/usr/bin/time", "time")] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} not found: apt-get install {package}");
            std::process::exit(1);
        }
    }
    let dir = std::env::temp_dir();
    let keep = std::env::var_os("BENCH_KEEP").is_some();
    println!("rdprobe: {bin}");
    for n in sizes("BENCH_PACKETS", "100000,1000000") {
        let path = dir.join(format!("rdprobe-headers-only-{n}.pcap"));
        headers_only(&path, n);
        run(&bin, &format!("headers-only {n} packets"), &path);
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
    }
    for n in sizes("BENCH_FRAGS", "1000,10000") {
        let path = dir.join(format!("rdprobe-fragments-{n}.pcap"));
        fragments(&path, n as usize);
        run(&bin, &format!("overlapping fragments {n}"), &path);
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
    }
}
