//! Benchmark (issue 17): `rdprobe analyze --json` against `tshark -Y 'rdp || cotp'` on a capture
//! shaped like a customer's: ~200 MB, 3,120 RDP connections INTERLEAVED (up to 64 open at once,
//! their packets mixed as a span port sees them), each with the stages of a real connection — an
//! X.224 request with a cookie and RDP_NEG_REQ, the confirm, a TLS 1.2 handshake whose Certificate
//! message carries a real X.509 certificate (RSA-2048 and ECDSA P-256 made by OpenSSL and rcgen:
//! six distinct ones, the same certificate for every connection to the same server), CredSSP and
//! MCS sized records, then the session — and one in five failing (refused, RDP_NEG_FAILURE, reset
//! after the ClientHello, the client rejecting the certificate with an alert).
//!
//! Both tools run in the same process, on the same file, release build. rdprobe runs once with
//! `--jobs 1` (one core) and once with the default (every core); the report gives wall time,
//! throughput per wall second and per CPU second, the ratio to tshark, and each run's peak RSS:
//! the median of BENCH_RUNS runs after one not counted, and the best run (the one least disturbed
//! on a machine shared with other work). The capture is synced to disk before anything is timed.
//!
//! It also reads the capture as four files (`analyze f f f f`), in turn and on every core (the next
//! files read ahead while one is decoded).
//!
//! Run: `cargo bench --bench analyze_interleaved` (BENCH_MB=200, BENCH_CONNS=3120, BENCH_RUNS=3;
//! BENCH_KEEP=1 keeps the capture and prints its path).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use bytes::Bytes;
use rdprobe::trace::{ConnectFailure, Dir, EventKind, Layer, Trace};

/// Runs `cmd` to its end: (wall s, CPU s, peak RSS KiB, standard output). CPU time comes from
/// wait4's rusage; the peak RSS from the child's own VmHWM in /proc, read every 2 ms while it runs
/// (rusage's ru_maxrss would include this process's memory: a child started by vfork + exec keeps
/// the high-water mark of the memory it was started from).
// The child is reaped by wait4 (which also gives its rusage), not by Child::wait.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (f64, f64, i64, Vec<u8>) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let (done, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicI64::new(0)),
    );
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            let status = format!("/proc/{pid}/status");
            while !done.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(&status) {
                    let hwm = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
                    if let Some(kib) = hwm {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read stdout");
    // SAFETY: wait4 on our own child fills the zeroed status and rusage.
    let (status, ru) = unsafe {
        let mut status = 0;
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut ru);
        (status, ru)
    };
    let wall = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let st = std::process::ExitStatus::from_raw(status);
    assert!(st.code().is_some(), "child died: {st:?}");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        wall,
        tv(ru.ru_utime) + tv(ru.ru_stime),
        peak.load(Ordering::Relaxed),
        out,
    )
}

/// `runs` runs of the command `make` builds: median wall and CPU seconds, the highest peak RSS and
/// the last run's standard output.
/// The figures of `runs` measured runs of one command, after one run that is not counted (it
/// brings the binary and the capture's pages in).
struct Runs {
    /// Median wall and CPU seconds.
    wall: f64,
    cpu: f64,
    /// The best run's: on a machine shared with other work, the one least disturbed by it.
    best_wall: f64,
    best_cpu: f64,
    /// Peak RSS of any run (KiB).
    rss: i64,
    /// The last run's standard output.
    out: Vec<u8>,
}

fn median_run(runs: usize, make: impl Fn() -> Command) -> Runs {
    let (mut wall, mut cpu, mut rss) = (Vec::new(), Vec::new(), 0);
    let _ = run_measured(&mut make());
    let mut out = Vec::new();
    for _ in 0..runs {
        let (w, c, r, o) = run_measured(&mut make());
        wall.push(w);
        cpu.push(c);
        rss = rss.max(r);
        out = o;
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Runs {
        best_wall: best(&wall),
        best_cpu: best(&cpu),
        wall: median(&mut wall),
        cpu: median(&mut cpu),
        rss,
        out,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn tpkt_cr(i: u32) -> Vec<u8> {
    let mut pdu = vec![0x03, 0, 0, 0, 0, 0xE0, 0, 0, 0, 0, 0];
    pdu.extend_from_slice(format!("Cookie: mstshash=user{}\r\n", i % 97).as_bytes());
    pdu.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x03, 0, 0, 0]);
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

fn record(ct: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![ct, 3, 3, (body.len() >> 8) as u8, body.len() as u8];
    r.extend_from_slice(body);
    r
}

fn filled(ct: u8, len: usize, fill: u8) -> Vec<u8> {
    record(ct, &vec![fill; len])
}

fn handshake(ty: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len();
    let mut h = vec![ty, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    h.extend_from_slice(body);
    h
}

fn client_hello(sni: &str, i: u32) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend((0..32).map(|k| (i as u8).wrapping_add(k)));
    b.push(0);
    let suites = [
        0xc0, 0x30, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x2b, 0x00, 0x9d, 0x00, 0x9c,
    ];
    b.extend((suites.len() as u16).to_be_bytes());
    b.extend(suites);
    b.extend([1, 0]);
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let mut sn = Vec::new();
    sn.extend(((name.len() + 3) as u16).to_be_bytes());
    sn.push(0);
    sn.extend((name.len() as u16).to_be_bytes());
    sn.extend(name);
    ext.extend(0u16.to_be_bytes());
    ext.extend((sn.len() as u16).to_be_bytes());
    ext.extend(sn);
    // supported_groups, ec_point_formats, signature_algorithms, extended_master_secret
    ext.extend([0, 10, 0, 6, 0, 4, 0, 0x17, 0, 0x18]);
    ext.extend([0, 11, 0, 2, 1, 0]);
    ext.extend([0, 13, 0, 6, 0, 4, 4, 1, 4, 3]);
    ext.extend([0, 23, 0, 0]);
    b.extend((ext.len() as u16).to_be_bytes());
    b.extend(ext);
    record(22, &handshake(1, &b))
}

/// ServerHello + Certificate + ServerKeyExchange-sized filler + ServerHelloDone, in records of at
/// most 16 KiB as a server sends them.
fn server_flight(cert: &[u8], i: u32) -> Vec<u8> {
    let mut sh = vec![3, 3];
    sh.extend((0..32).map(|k| (i as u8) ^ k));
    sh.push(0);
    sh.extend([0xc0, 0x30, 0]);
    sh.extend([0, 4, 0, 23, 0, 0]);
    let mut msgs = handshake(2, &sh);
    let mut list = Vec::new();
    let n = cert.len();
    list.extend([(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    list.extend(cert);
    let mut body = Vec::new();
    let l = list.len();
    body.extend([(l >> 16) as u8, (l >> 8) as u8, l as u8]);
    body.extend(list);
    msgs.extend(handshake(11, &body));
    let mut ske = vec![3, 0, 23, 65, 4];
    ske.extend([0x42; 64]);
    ske.extend([4, 1, 1, 0]);
    ske.extend([0x17; 256]);
    msgs.extend(handshake(12, &ske));
    msgs.extend(handshake(14, &[]));
    msgs.chunks(16384).flat_map(|c| record(22, c)).collect()
}

/// Six real certificates: RSA-2048 (OpenSSL, self-signed) and ECDSA P-256 (rcgen).
fn certificates() -> Vec<Vec<u8>> {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let mut out = Vec::new();
    for k in 0..3 {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", &format!("rdp{k}.corp.example"))
            .unwrap();
        let name = name.build();
        let mut b = x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        out.push(b.build().to_der().unwrap());
    }
    for k in 3..6 {
        let mut p = rcgen::CertificateParams::new(vec![format!("rdp{k}.corp.example")]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("rdp{k}.corp.example"));
        let kp = rcgen::KeyPair::generate().unwrap();
        out.push(p.self_signed(&kp).unwrap().der().to_vec());
    }
    out
}

/// One conversation; one in five fails, by `i / 5 % 4`.
fn conversation(i: u32, certs: &[Vec<u8>], session_records: usize) -> Trace {
    let client: SocketAddr = format!(
        "10.{}.{}.{}:{}",
        1 + (i >> 16) % 200,
        (i >> 8) & 255,
        i & 255,
        40000 + (i % 20000)
    )
    .parse()
    .unwrap();
    let server_no = (i % 12) as usize;
    let server: SocketAddr = format!("10.250.0.{}:3389", 1 + server_no).parse().unwrap();
    // Twelve servers, six certificates: most certificates are seen on many connections.
    let cert = &certs[server_no % certs.len()];
    let sni = format!("rdp{}.corp.example", server_no % certs.len());
    let mut t = Trace::new(client, server);
    let mut now = 1_780_000_000_000_000u64;
    let mut push = |t: &mut Trace, k: EventKind| {
        now += 300;
        t.push_at(now, None, k);
    };
    let data = |dir, bytes: Vec<u8>| EventKind::Data {
        dir,
        layer: Layer::Wire,
        bytes: Bytes::from(bytes),
    };
    let fail = if i.is_multiple_of(5) {
        Some((i / 5) % 4)
    } else {
        None
    };
    if fail == Some(0) {
        push(&mut t, EventKind::ConnectFailed(ConnectFailure::Refused));
        return t;
    }
    push(&mut t, EventKind::Connected);
    push(&mut t, data(Dir::C2S, tpkt_cr(i)));
    if fail == Some(1) {
        push(&mut t, data(Dir::S2C, tpkt_cc(3, 5)));
        push(&mut t, EventKind::Fin { dir: Dir::S2C });
        return t;
    }
    push(&mut t, data(Dir::S2C, tpkt_cc(2, 2)));
    push(&mut t, data(Dir::C2S, client_hello(&sni, i)));
    if fail == Some(2) {
        push(&mut t, EventKind::Rst { dir: Dir::S2C });
        return t;
    }
    push(&mut t, data(Dir::S2C, server_flight(cert, i)));
    if fail == Some(3) {
        // The client rejects the certificate: fatal bad_certificate, then FIN.
        push(&mut t, data(Dir::C2S, record(21, &[2, 42])));
        push(&mut t, EventKind::Fin { dir: Dir::C2S });
        push(&mut t, EventKind::Fin { dir: Dir::S2C });
        return t;
    }
    let mut cke = handshake(16, &[65]);
    cke.extend([4u8; 65]);
    let mut flight = record(22, &cke);
    flight.extend(record(20, &[1]));
    flight.extend(filled(22, 40, 9));
    push(&mut t, data(Dir::C2S, flight));
    let mut fin = record(20, &[1]);
    fin.extend(filled(22, 40, 8));
    push(&mut t, data(Dir::S2C, fin));
    // CredSSP (NEGOTIATE, CHALLENGE, AUTHENTICATE, pubKeyAuth, authInfo, early user auth), then
    // MCS Connect Initial / Response, Erect Domain, Attach User, channel joins, security, licensing,
    // capabilities: encrypted records of the sizes these PDUs have.
    for (dir, len) in [
        (Dir::C2S, 80),
        (Dir::S2C, 300),
        (Dir::C2S, 600),
        (Dir::S2C, 90),
        (Dir::C2S, 120),
        (Dir::S2C, 30),
        (Dir::C2S, 450),
        (Dir::S2C, 130),
        (Dir::C2S, 40),
        (Dir::C2S, 40),
        (Dir::S2C, 40),
        (Dir::C2S, 40),
        (Dir::S2C, 40),
        (Dir::C2S, 400),
        (Dir::S2C, 60),
        (Dir::S2C, 500),
        (Dir::C2S, 450),
    ] {
        push(&mut t, data(dir, filled(23, len, len as u8)));
    }
    for r in 0..session_records {
        let (dir, len) = if r % 4 == 0 {
            (Dir::C2S, 60 + (r % 7) * 10)
        } else {
            (Dir::S2C, 1200 + (r % 5) * 400)
        };
        push(&mut t, data(dir, filled(23, len, r as u8)));
    }
    push(&mut t, EventKind::Fin { dir: Dir::C2S });
    push(&mut t, EventKind::Fin { dir: Dir::S2C });
    t
}

/// The Enhanced Packet Blocks of one conversation's pcapng (section and interface blocks dropped).
fn packet_blocks(pcapng: &[u8]) -> VecDeque<Vec<u8>> {
    let mut out = VecDeque::new();
    let mut at = 0;
    while at + 12 <= pcapng.len() {
        let ty = u32::from_le_bytes(pcapng[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(pcapng[at + 4..at + 8].try_into().unwrap()) as usize;
        if ty == 6 {
            out.push_back(pcapng[at..at + len].to_vec());
        }
        at += len;
    }
    out
}

/// Writes the interleaved capture; returns (connections, bytes).
fn generate(path: &std::path::Path, target_bytes: u64, conns: u32) -> (u32, u64) {
    use std::io::Write;
    let certs = certificates();
    // Size the sessions so that the whole file is about the target size (an average session record
    // with its TCP/IP framing is ~1,180 bytes on the wire, and four in five connections succeed).
    let per_conn = target_bytes / u64::from(conns);
    let session_records = ((per_conn as f64 * 1.25 / 1180.0) as usize).max(4);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    // Section and interface blocks of the first conversation's file start the capture.
    let mut first = Vec::new();
    rdprobe::capture::writer::write_pcapng(&conversation(0, &certs, 0), &[], &mut first).unwrap();
    let mut at = 0;
    while at + 12 <= first.len() {
        let ty = u32::from_le_bytes(first[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(first[at + 4..at + 8].try_into().unwrap()) as usize;
        if ty == 6 {
            break;
        }
        at += len;
    }
    w.write_all(&first[..at]).unwrap();
    let mut written = at as u64;
    let mut open: Vec<VecDeque<Vec<u8>>> = Vec::new();
    let mut next = 0u32;
    let mut ts = 1_780_000_000_000_000u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    loop {
        while open.len() < 64 && next < conns {
            let mut buf = Vec::new();
            let tr = conversation(next, &certs, session_records);
            rdprobe::capture::writer::write_pcapng(&tr, &[], &mut buf).unwrap();
            open.push(packet_blocks(&buf));
            next += 1;
        }
        if open.is_empty() {
            break;
        }
        // xorshift: which open connection sends next.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = (rng % open.len() as u64) as usize;
        let mut b = open[k].pop_front().expect("non-empty");
        ts += 7;
        b[12..16].copy_from_slice(&((ts >> 32) as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(ts as u32).to_le_bytes());
        w.write_all(&b).unwrap();
        written += b.len() as u64;
        if open[k].is_empty() {
            open.swap_remove(k);
        }
    }
    w.flush().unwrap();
    (conns, written)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("analyze_interleaved: bench");
        return;
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let target_mb = env("BENCH_MB", 200);
    let conns = env("BENCH_CONNS", 3120) as u32;
    let runs = env("BENCH_RUNS", 3).max(1) as usize;
    let path = std::env::temp_dir().join(format!(
        "rdprobe-interleaved-bench-{}.pcapng",
        std::process::id()
    ));
    let gen = Instant::now();
    let (conns, size) = generate(&path, target_mb * 1_000_000, conns);
    // On disk before anything is timed: the kernel writing the fresh capture back would otherwise
    // run during the first measurements.
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let size_mb = size as f64 / 1e6;
    println!(
        "generated {conns} interleaved connections (≤ 64 open at once), {size_mb:.0} MB in {:.1} s",
        gen.elapsed().as_secs_f64()
    );
    let bin = env!("CARGO_BIN_EXE_rdprobe");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut results = Vec::new();
    let mut outputs = Vec::new();
    for jobs in ["1", "0"] {
        let mut r = median_run(runs, || {
            let mut c = Command::new(bin);
            c.args(["analyze", "--json", "--jobs", jobs]).arg(&path);
            c
        });
        let found = r
            .out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        outputs.push(std::mem::take(&mut r.out));
        results.push((jobs, r, found));
    }
    assert!(
        outputs[0] == outputs[1],
        "--jobs 1 and --jobs 0 printed different output"
    );

    // Several files (`analyze a b c d`): the same capture four times, read in turn (--jobs 1) and
    // read ahead at the same time (every core); the output must be the same.
    const FILES: usize = 4;
    let mut several = Vec::new();
    let mut several_out = Vec::new();
    for jobs in ["1", "0"] {
        let mut r = median_run(runs, || {
            let mut c = Command::new(bin);
            c.args(["analyze", "--json", "--jobs", jobs])
                .args(std::iter::repeat_n(&path, FILES));
            c
        });
        several_out.push(std::mem::take(&mut r.out));
        several.push((jobs, r));
    }
    assert!(
        several_out[0] == several_out[1],
        "{FILES} files: --jobs 1 and --jobs 0 printed different output"
    );

    let ts = median_run(runs, || {
        let mut c = Command::new("tshark");
        c.arg("-r").arg(&path).args([
            "-n",
            "-Y",
            "rdp || cotp",
            "-T",
            "fields",
            "-e",
            "tcp.stream",
        ]);
        c
    });
    let (tsh, tsh_cpu, ts_rss) = (ts.wall, ts.cpu, ts.rss);
    let mut s: Vec<&[u8]> = ts
        .out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    s.sort();
    s.dedup();
    let streams = s.len();
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("capture kept at {}", path.display());
    } else {
        let _ = std::fs::remove_file(&path);
    }
    println!("median of {runs} runs each (after one not counted), {cores} cores");
    for (jobs, r, found) in &results {
        let (wall, cpu, rss) = (r.wall, r.cpu, r.rss);
        let label = if *jobs == "1" {
            "rdprobe --jobs 1".to_owned()
        } else {
            format!("rdprobe ({cores} jobs)")
        };
        println!(
            "{label:<18}: {wall:>6.2} s  {:>6.0} MB/s  {:>6.0} MB/s per core (cpu {cpu:.2} s)  \
             {found} connections  peak RSS {} MB  {:.1}x tshark ({:.1}x by CPU time)",
            size_mb / wall,
            size_mb / cpu.max(1e-9),
            rss / 1024,
            tsh / wall,
            // CPU seconds are the steadier figure on a machine busy with other work.
            tsh_cpu / cpu.max(1e-9)
        );
    }
    println!("best of {runs} runs each:");
    for (jobs, r, _) in &results {
        println!(
            "  rdprobe --jobs {jobs}: {:.2} s wall, cpu {:.2} s = {:.0} MB/s per core; \
             {:.1}x tshark's best ({:.2} s)",
            r.best_wall,
            r.best_cpu,
            size_mb / r.best_cpu.max(1e-9),
            ts.best_wall / r.best_wall,
            ts.best_wall
        );
    }
    println!(
        "{:<18}: {tsh:>6.2} s  {:>6.0} MB/s  {:>6.0} MB/s per core (cpu {tsh_cpu:.2} s)  \
         {streams} streams with rdp/cotp  peak RSS {} MB",
        "tshark -Y rdp||cotp",
        size_mb / tsh,
        size_mb / tsh_cpu.max(1e-9),
        ts_rss / 1024
    );
    for (jobs, r) in &several {
        let (wall, cpu, rss) = (r.wall, r.cpu, r.rss);
        let label = if *jobs == "1" {
            format!("{FILES} files, --jobs 1")
        } else {
            format!("{FILES} files, {cores} jobs")
        };
        println!(
            "{label:<18}: {wall:>6.2} s  {:>6.0} MB/s  {:>6.0} MB/s per core (cpu {cpu:.2} s)  \
             peak RSS {} MB  {:.1}x tshark on one file",
            FILES as f64 * size_mb / wall,
            FILES as f64 * size_mb / cpu.max(1e-9),
            rss / 1024,
            FILES as f64 * tsh / wall,
        );
    }
    println!("goal: >= 20x tshark, toward 1 GB/s per core, RSS < 100 MB");
}
