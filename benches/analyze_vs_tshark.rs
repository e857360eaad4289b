//! Benchmark (issue 4): `rdprobe analyze` against `tshark -Y rdp.neg_type` (the closest tshark command
//! that finds the same RDP connections) on a large generated capture, in the same run.
//!
//! The capture: thousands of RDP conversations on port 3389 with long encrypted sessions, some failing at
//! each stage (refused, negotiation failure, reset after the ClientHello, silent server). Reports file
//! size, wall time, throughput, the ratio, and each tool's peak RSS.
//!
//! Run: `cargo bench --bench analyze_vs_tshark` (BENCH_MB=1024 by default; BENCH_MB=200 for a quick run;
//! BENCH_RUNS=3 runs of each tool by default, medians reported).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use bytes::Bytes;
use rdprobe::trace::{ConnectFailure, Dir, EventKind, Layer, Trace};

fn max_rss_children_kib() -> i64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

/// User + system CPU seconds of the children waited for so far.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn tpkt_cr() -> Vec<u8> {
    let mut pdu = vec![0x03, 0, 0, 0, 0, 0xE0, 0, 0, 0, 0, 0];
    pdu.extend_from_slice(b"Cookie: mstshash=bench\r\n");
    pdu.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x0b, 0, 0, 0]);
    let l = pdu.len();
    pdu[2..4].copy_from_slice(&(l as u16).to_be_bytes());
    pdu[4] = (l - 5) as u8;
    pdu
}

fn tpkt_cc(kind: u8, value: u32) -> Vec<u8> {
    let mut pdu = vec![0x03, 0, 0, 19, 14, 0xD0, 0, 0, 0x12, 0x34, 0, kind, 0, 8, 0];
    pdu.extend_from_slice(&value.to_le_bytes());
    pdu
}

fn record(ct: u8, len: usize, fill: u8) -> Vec<u8> {
    let mut r = vec![ct, 3, 3, (len >> 8) as u8, len as u8];
    r.extend(std::iter::repeat_n(fill, len));
    r
}

fn client_hello() -> Vec<u8> {
    // A handshake record carrying a minimal ClientHello header (enough for record-level decoding).
    let mut body = vec![1, 0, 0, 42, 3, 3];
    body.extend([7u8; 32]);
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    let mut r = vec![22, 3, 1, 0, body.len() as u8];
    r.extend(body);
    r
}

/// One conversation; `kind` picks how it ends.
fn conversation(i: u32, kind: u32, t0: u64, session_records: usize) -> Trace {
    let client: SocketAddr = format!(
        "10.{}.{}.{}:{}",
        1 + (i >> 16) % 200,
        (i >> 8) & 255,
        i & 255,
        40000 + (i % 20000)
    )
    .parse()
    .unwrap();
    let server: SocketAddr = "10.250.0.1:3389".parse().unwrap();
    let mut t = Trace::new(client, server);
    let mut now = t0;
    let mut push = |t: &mut Trace, k: EventKind| {
        now += 200;
        t.push_at(now, None, k);
    };
    let data = |dir, bytes: Vec<u8>| EventKind::Data {
        dir,
        layer: Layer::Wire,
        bytes: Bytes::from(bytes),
    };
    if kind == 0 {
        push(&mut t, EventKind::ConnectFailed(ConnectFailure::Refused));
        return t;
    }
    push(&mut t, EventKind::Connected);
    push(&mut t, data(Dir::C2S, tpkt_cr()));
    if kind == 1 {
        push(&mut t, data(Dir::S2C, tpkt_cc(3, 5)));
        push(&mut t, EventKind::Fin { dir: Dir::S2C });
        return t;
    }
    push(&mut t, data(Dir::S2C, tpkt_cc(2, 2)));
    push(&mut t, data(Dir::C2S, client_hello()));
    if kind == 2 {
        push(&mut t, EventKind::Rst { dir: Dir::S2C });
        return t;
    }
    if kind == 3 {
        push(&mut t, EventKind::Fin { dir: Dir::C2S });
        return t;
    }
    push(&mut t, data(Dir::S2C, record(22, 1200, 2)));
    push(&mut t, data(Dir::C2S, record(20, 1, 1)));
    for r in 0..session_records {
        let dir = if r % 3 == 0 { Dir::C2S } else { Dir::S2C };
        push(&mut t, data(dir, record(23, 1400, r as u8)));
    }
    push(&mut t, EventKind::Fin { dir: Dir::C2S });
    push(&mut t, EventKind::Fin { dir: Dir::S2C });
    t
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("analyze_vs_tshark: bench");
        return;
    }
    let target_mb: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let path = std::env::temp_dir().join(format!(
        "rdprobe-analyze-bench-{}.pcapng",
        std::process::id()
    ));
    let gen = Instant::now();
    let mut conns = 0u32;
    {
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        let mut written = 0u64;
        let t0 = 1_780_000_000_000_000u64;
        while written < target_mb * 1024 * 1024 {
            // One in five conversations fails at some stage; the rest are ~700 KB sessions.
            let kind = if conns.is_multiple_of(5) {
                (conns / 5) % 4
            } else {
                4
            };
            let tr = conversation(conns, kind, t0 + conns as u64 * 1000, 500);
            let mut buf = Vec::new();
            rdprobe::capture::writer::write_pcapng(&tr, &[], &mut buf).unwrap();
            written += buf.len() as u64;
            std::io::Write::write_all(&mut w, &buf).unwrap();
            conns += 1;
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let size_mb = size as f64 / 1e6;
    println!(
        "generated {conns} conversations, {size_mb:.0} MB in {:.1} s",
        gen.elapsed().as_secs_f64()
    );

    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let bin = env!("CARGO_BIN_EXE_rdprobe");
    let mut rd_wall = Vec::new();
    let mut rd_cpu = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        let cpu0 = children_cpu_s();
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["analyze", "--json"])
            .arg(&path)
            .stderr(Stdio::inherit())
            .output()
            .expect("run rdprobe analyze");
        rd_wall.push(t.elapsed().as_secs_f64());
        rd_cpu.push(children_cpu_s() - cpu0);
        found = String::from_utf8_lossy(&out.stdout).lines().count();
    }
    let rd_rss = max_rss_children_kib();

    let mut ts_wall = Vec::new();
    let mut streams: Vec<String> = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let ts = Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args([
                "-n",
                "-Y",
                "rdp.neg_type",
                "-T",
                "fields",
                "-e",
                "tcp.stream",
            ])
            .stderr(Stdio::null())
            .output()
            .expect("run tshark (apt-get install tshark)");
        ts_wall.push(t.elapsed().as_secs_f64());
        streams = String::from_utf8_lossy(&ts.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
    }
    let ts_rss = max_rss_children_kib();
    streams.sort();
    streams.dedup();
    let rd = median(&mut rd_wall);
    let rd_c = median(&mut rd_cpu);
    let tsh = median(&mut ts_wall);
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("capture kept at {}", path.display());
    } else {
        let _ = std::fs::remove_file(&path);
    }

    println!("median of {runs} runs each");
    println!(
        "rdprobe analyze : {rd:>7.2} s  {:>7.0} MB/s  {found} connections  (cpu {rd_c:.2} s: {:.0} MB/s per core)",
        size_mb / rd,
        size_mb / rd_c.max(1e-9)
    );
    println!(
        "tshark -Y rdp   : {tsh:>7.2} s  {:>7.0} MB/s  {} connections",
        size_mb / tsh,
        streams.len()
    );
    println!(
        "speed-up        : {:.1}x (goal >= 20x, >= 300 MB/s)",
        tsh / rd
    );
    println!(
        "peak RSS        : rdprobe {} KiB (max of children so far), tshark {} KiB",
        rd_rss, ts_rss
    );
}
