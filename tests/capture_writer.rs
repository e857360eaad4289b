//! Captures written by `capture::writer`, opened by tshark (the reference dissector).
//!
//! Traces are built by hand (X.224 on 3389 and elsewhere, refused and timed-out connects, FIN and
//! RST endings, a huge segment, capture gaps) and from real in-memory TLS 1.2 / 1.3 sessions
//! (rustls client and server pumping records through memory, secrets captured with `KeyLog`), so
//! the capture carries real ciphertext that tshark must decrypt with only the embedded Decryption
//! Secrets Block. tshark is required: the tests fail with an install hint when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rdprobe::capture::writer::{write_keylog, write_pcapng, MSS};
use rdprobe::trace::{ConnectFailure, Dir, Event, EventKind, Layer, Trace};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{Connection, DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};

/// 2023-11-14T22:13:20Z in microseconds: every trace starts here.
const T0: u64 = 1_700_000_000_000_000;

/// X.224 Connection Request with RDP_NEG_REQ asking for SSL|HYBRID (MS-RDPBCGR 2.2.1.1).
const X224_CR: &[u8] = &[
    0x03, 0x00, 0x00, 0x13, // TPKT, 19 bytes
    0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, // X.224 CR
    0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00,
    0x00, // RDP_NEG_REQ, PROTOCOL_SSL | PROTOCOL_HYBRID
];

/// X.224 Connection Confirm with RDP_NEG_RSP selecting `proto` (MS-RDPBCGR 2.2.1.2).
fn x224_cc(proto: u8) -> Vec<u8> {
    vec![
        0x03, 0x00, 0x00, 0x13, // TPKT
        0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34, 0x00, // X.224 CC
        0x02, 0x1f, 0x08, 0x00, proto, 0x00, 0x00, 0x00, // RDP_NEG_RSP
    ]
}

// ---------------------------------------------------------------------------------------------
// Building traces

struct Builder {
    trace: Trace,
    labels: Vec<String>,
    t: u64,
}

impl Builder {
    fn new(client: &str, server: &str) -> Self {
        Builder {
            trace: Trace::new(client.parse().unwrap(), server.parse().unwrap()),
            labels: Vec::new(),
            t: T0,
        }
    }

    /// Appends `kind` 1 ms after the previous event.
    fn push(&mut self, kind: EventKind, label: &str) -> &mut Self {
        self.t += 1000;
        self.trace.events.push(Event {
            t_us: self.t,
            frame: None,
            kind,
        });
        self.labels.push(label.to_owned());
        self
    }

    fn wire(&mut self, dir: Dir, bytes: impl Into<Bytes>, label: &str) -> &mut Self {
        self.push(
            EventKind::Data {
                dir,
                layer: Layer::Wire,
                bytes: bytes.into(),
            },
            label,
        )
    }

    fn inner(&mut self, dir: Dir, bytes: impl Into<Bytes>) -> &mut Self {
        self.push(
            EventKind::Data {
                dir,
                layer: Layer::Inner,
                bytes: bytes.into(),
            },
            "",
        )
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let f = std::fs::File::create(&path).unwrap();
        write_pcapng(&self.trace, &self.labels, std::io::BufWriter::new(f)).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------------------------
// tshark

/// Runs tshark with a private, empty configuration (no user key log file or preference can help
/// it decrypt), IP/TCP checksum validation on, and returns stdout. tshark's stderr must be empty
/// (apart from its warning about running as root): a warning about the file fails the test.
fn tshark(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("tshark")
        .args([
            "-n",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
        ])
        .args(args)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSLKEYLOGFILE")
        .output()
        .unwrap_or_else(|e| panic!("install tshark: apt-get install tshark ({e})"));
    let stderr: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        // Not about the file: tshark's note that it runs as root, and that the "tpkt" name of
        // `-d tcp.port==N,tpkt` is shared by two dissectors (the first, RFC 1006 TPKT, is used).
        .filter(|l| {
            !l.contains("Running as user")
                && !l.contains("\"tpkt\" matched 2 dissectors")
                && !l.trim().is_empty()
        })
        .map(str::to_owned)
        .collect();
    assert!(out.status.success(), "tshark {args:?} failed: {stderr:?}");
    assert!(stderr.is_empty(), "tshark {args:?} complained: {stderr:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One row per displayed frame, one column per field; repeated fields joined with '|'.
fn fields(file: &Path, extra: &[&str], filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let file = file.to_string_lossy();
    let mut args = vec![
        "-r",
        &file,
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ];
    args.extend_from_slice(extra);
    if !filter.is_empty() {
        args.extend_from_slice(&["-Y", filter]);
    }
    for f in fields {
        args.extend_from_slice(&["-e", f]);
    }
    tshark(&args)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Frame numbers matching `filter`.
fn frames(file: &Path, extra: &[&str], filter: &str) -> Vec<u64> {
    fields(file, extra, filter, &["frame.number"])
        .into_iter()
        .map(|r| r[0].parse().unwrap())
        .collect()
}

/// Expert infos at severity Error and Warning, as "Group/Protocol: summary" lines.
fn expert_problems(file: &Path, extra: &[&str]) -> Vec<String> {
    let file = file.to_string_lossy();
    let mut args = vec!["-r", &file, "-q", "-z", "expert,warn"];
    args.extend_from_slice(extra);
    let out = tshark(&args);
    let mut problems = Vec::new();
    let mut in_section = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Errors (") || t.starts_with("Warns (") {
            in_section = true;
            continue;
        }
        if t.starts_with("Notes (") || t.starts_with("Chats (") || t.starts_with("Comments (") {
            in_section = false;
            continue;
        }
        if in_section && !t.is_empty() && !t.starts_with('=') && !t.starts_with("Frequency") {
            problems.push(t.split_whitespace().skip(1).collect::<Vec<_>>().join(" "));
        }
    }
    problems
}

fn assert_clean(file: &Path, extra: &[&str], allowed: &[&str]) {
    let problems: Vec<String> = expert_problems(file, extra)
        .into_iter()
        .filter(|p| !allowed.iter().any(|a| p.contains(a)))
        .collect();
    assert!(
        problems.is_empty(),
        "tshark expert problems in {}: {problems:#?}",
        file.display()
    );
    // Every IP and TCP checksum verified good (status 1), nothing unverified or bad.
    for row in fields(
        file,
        extra,
        "",
        &["ip.checksum.status", "ipv6.src", "tcp.checksum.status"],
    ) {
        if row[1].is_empty() {
            assert_eq!(row[0], "1", "ip checksum status {row:?}");
        }
        assert_eq!(row[2], "1", "tcp checksum status {row:?}");
    }
}

/// `capinfos FILE`: the section header, interface and secrets summary.
fn capinfos(file: &Path) -> String {
    let out = Command::new("capinfos")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("install capinfos: apt-get install tshark ({e})"));
    assert!(
        out.status.success(),
        "capinfos failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The frames tshark's sequence analysis flags (lost segment, ACKed unseen, retransmission, …).
fn tcp_anomalies(file: &Path) -> Vec<Vec<String>> {
    fields(
        file,
        &[],
        "tcp.analysis.flags",
        &["frame.number", "_ws.expert.message"],
    )
}

// ---------------------------------------------------------------------------------------------
// Hand-built traces

fn x224_trace(client: &str, server: &str) -> Builder {
    let mut b = Builder::new(client, server);
    b.push(EventKind::Note("probing".into()), "")
        .push(EventKind::Connected, "tcp: connected")
        .wire(Dir::C2S, X224_CR, "x224: connection request")
        .wire(Dir::S2C, x224_cc(0x02), "x224: connection confirm")
        .push(EventKind::Fin { dir: Dir::C2S }, "tcp: fin from client")
        .push(EventKind::Fin { dir: Dir::S2C }, "")
        .push(EventKind::CaptureEnd, "");
    b
}

fn assert_x224_dissected(file: &Path, extra: &[&str]) {
    let rows = fields(
        file,
        extra,
        "cotp",
        &[
            "frame.number",
            "cotp.type",
            "rdp.negReq.requestedProtocols",
            "rdp.negReq.selectedProtocol",
            "frame.comment",
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "4");
    assert_eq!(rows[0][1], "0x0e");
    assert_eq!(rows[0][2], "0x00000003");
    assert_eq!(rows[0][4], "x224: connection request");
    assert_eq!(rows[1][0], "5");
    assert_eq!(rows[1][1], "0x0d");
    assert_eq!(rows[1][3], "0x00000002");
    assert_eq!(rows[1][4], "x224: connection confirm");
}

#[test]
fn x224_off_3389_is_dissected_with_decode_as() {
    let dir = tempfile::tempdir().unwrap();
    let b = x224_trace("192.0.2.10:50123", "192.0.2.20:33890");
    let f = b.write(dir.path(), "x224.pcapng");
    let decode_as = ["-d", "tcp.port==33890,tpkt"];
    assert_clean(&f, &decode_as, &[]);
    assert_x224_dissected(&f, &decode_as);
    assert!(tcp_anomalies(&f).is_empty(), "{:?}", tcp_anomalies(&f));

    // SYN, SYN/ACK, ACK, CR, CC, FIN/ACK, FIN/ACK with the real addresses, ports and times.
    let rows = fields(
        &f,
        &decode_as,
        "",
        &[
            "frame.number",
            "ip.src",
            "tcp.srcport",
            "tcp.dstport",
            "tcp.flags",
            "tcp.seq",
            "tcp.ack",
            "frame.time_epoch",
            "frame.comment",
        ],
    );
    let flags: Vec<&str> = rows.iter().map(|r| r[4].as_str()).collect();
    assert_eq!(
        flags,
        ["0x0002", "0x0012", "0x0010", "0x0018", "0x0018", "0x0011", "0x0011"]
    );
    assert_eq!(rows[0][1], "192.0.2.10");
    assert_eq!(
        (rows[0][2].as_str(), rows[0][3].as_str()),
        ("50123", "33890")
    );
    assert_eq!(rows[1][1], "192.0.2.20");
    // Relative sequence numbers: CR at 1..20, CC at 1..20, each FIN acknowledges the other's data.
    assert_eq!((rows[3][5].as_str(), rows[3][6].as_str()), ("1", "1"));
    assert_eq!((rows[4][5].as_str(), rows[4][6].as_str()), ("1", "20"));
    assert_eq!((rows[5][5].as_str(), rows[5][6].as_str()), ("20", "20"));
    assert_eq!((rows[6][5].as_str(), rows[6][6].as_str()), ("20", "21"));
    // The Connected event is the second one (1 ms after T0 + 1 ms).
    assert_eq!(rows[0][7], "1700000000.002000000");
    assert_eq!(rows[3][7], "1700000000.003000000");
    // The note before the connect rides on the SYN, ahead of the connect's own label.
    assert_eq!(rows[0][8], "note: probing|tcp: connected");
    assert_eq!(rows[5][8], "tcp: fin from client");

    let text = capinfos(&f);
    assert!(
        text.contains("Capture comment:     written by rdprobe"),
        "{text}"
    );
    assert!(text.contains("Capture application: rdprobe"), "{text}");
    assert!(
        text.contains("Encapsulation = Ethernet (1 - ether)"),
        "{text}"
    );
    assert!(text.contains("Time resolution = 0x06"), "{text}");
    assert!(text.contains("Strict time order:   True"), "{text}");
    assert!(!text.contains("decryption secrets"), "{text}");
}

#[test]
fn x224_on_3389_is_dissected_without_decode_as() {
    let dir = tempfile::tempdir().unwrap();
    let f = x224_trace("10.1.2.3:49999", "10.1.2.4:3389").write(dir.path(), "x224-3389.pcapng");
    assert_clean(&f, &[], &[]);
    assert_x224_dissected(&f, &[]);
    assert!(tcp_anomalies(&f).is_empty());
}

#[test]
fn x224_over_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let f = x224_trace("[2001:db8::10]:50000", "[2001:db8::20]:3389")
        .write(dir.path(), "x224-v6.pcapng");
    assert_clean(&f, &[], &[]);
    assert_x224_dissected(&f, &[]);
    let rows = fields(
        &f,
        &[],
        "tcp.flags.syn == 1 && tcp.flags.ack == 0",
        &["ipv6.src", "ipv6.dst", "tcp.options.mss_val"],
    );
    assert_eq!(
        rows,
        vec![vec!["2001:db8::10", "2001:db8::20", &MSS.to_string()]]
    );
}

#[test]
fn refused_connect_is_syn_then_rst_ack_from_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Builder::new("127.0.0.1:40000", "127.0.0.1:3389");
    b.push(
        EventKind::ConnectFailed(ConnectFailure::Refused),
        "tcp: refused",
    );
    let f = b.write(dir.path(), "refused.pcapng");
    assert_clean(&f, &[], &["Connection reset (RST)"]);
    let rows = fields(
        &f,
        &[],
        "",
        &[
            "tcp.srcport",
            "tcp.flags",
            "tcp.ack",
            "tcp.window_size_value",
            "frame.comment",
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "40000");
    assert_eq!(rows[0][1], "0x0002");
    assert_eq!(
        rows[0][4],
        "tcp: refused (tcp: connection refused (the server answered the SYN with RST/ACK))"
    );
    assert_eq!(rows[1][0], "3389");
    assert_eq!(rows[1][1], "0x0014");
    assert_eq!(rows[1][2], "1", "the RST/ACK acknowledges the SYN");
    assert_eq!(rows[1][3], "0");
}

#[test]
fn timed_out_connect_is_one_syn_at_the_start_of_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Builder::new("127.0.0.1:40001", "127.0.0.1:3389");
    b.t = T0 + 5_000_000;
    b.push(
        EventKind::ConnectFailed(ConnectFailure::TimedOut { after_ms: 3000 }),
        "",
    );
    let f = b.write(dir.path(), "timeout.pcapng");
    assert_clean(&f, &[], &[]);
    let rows = fields(
        &f,
        &[],
        "",
        &["tcp.flags", "frame.time_epoch", "frame.comment"],
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "0x0002");
    assert_eq!(rows[0][1], "1700000002.001000000");
    assert!(rows[0][2].contains("timed out after 3000 ms"), "{rows:?}");
}

#[test]
fn observer_events_become_comments_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Builder::new("127.0.0.1:40002", "127.0.0.1:3389");
    b.push(EventKind::Connected, "")
        .wire(Dir::C2S, X224_CR, "x224: connection request")
        .push(
            EventKind::TlsError {
                message: "no common version".into(),
            },
            "",
        )
        .wire(Dir::S2C, x224_cc(0x01), "")
        .push(
            EventKind::Timeout {
                waiting_for: Dir::S2C,
                after_ms: 5000,
            },
            "x224: timeout",
        )
        .push(EventKind::StoppedAfter(rdprobe::stage::Stage::X224), "")
        .push(EventKind::CaptureEnd, "");
    let f = b.write(dir.path(), "notes.pcapng");
    assert_clean(&f, &[], &[]);
    let rows = fields(&f, &[], "frame.comment", &["frame.number", "frame.comment"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], ["4", "x224: connection request"]);
    // The TLS error rides on the next frame; no frame follows the timeout and the stop, so they
    // ride on the last frame, after its own notes.
    assert_eq!(rows[1][0], "5");
    assert_eq!(
        rows[1][1],
        "tls error in rdprobe's tls stack: no common version|x224: timeout (rdprobe gave up waiting for \
         the server after 5000 ms of silence)|rdprobe stopped on purpose after stage x224"
    );
}

#[test]
fn rst_after_client_hello_sits_after_the_client_hello() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = tls_client(&rustls::version::TLS13);
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    let mut b = Builder::new("127.0.0.1:40003", "127.0.0.1:33391");
    b.push(EventKind::Connected, "")
        .wire(Dir::C2S, X224_CR, "x224: connection request")
        .wire(Dir::S2C, x224_cc(0x01), "x224: connection confirm")
        .wire(Dir::C2S, hello, "tls: client hello")
        .push(EventKind::Rst { dir: Dir::S2C }, "tls: reset by server");
    let f = b.write(dir.path(), "rst.pcapng");
    assert_clean(&f, &[], &["Connection reset (RST)"]);
    assert!(tcp_anomalies(&f).is_empty(), "{:?}", tcp_anomalies(&f));
    let hello_frames = frames(&f, &[], "tls.handshake.type == 1");
    let rst = fields(
        &f,
        &[],
        "tcp.flags.reset == 1",
        &["frame.number", "tcp.srcport", "frame.comment"],
    );
    assert_eq!(hello_frames, vec![6]);
    assert_eq!(rst, vec![vec!["7", "33391", "tls: reset by server"]]);
}

#[test]
fn huge_segment_is_split_and_acknowledged_without_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut b = Builder::new("127.0.0.1:40004", "127.0.0.1:33899");
    b.push(EventKind::Connected, "")
        .wire(Dir::C2S, X224_CR, "")
        .wire(Dir::S2C, big, "bulk")
        .wire(Dir::C2S, &b"ok"[..], "")
        .push(EventKind::Fin { dir: Dir::S2C }, "");
    let f = b.write(dir.path(), "big.pcapng");
    assert_clean(&f, &[], &[]);
    assert!(tcp_anomalies(&f).is_empty(), "{:?}", tcp_anomalies(&f));
    let rows = fields(&f, &[], "tcp.srcport == 33899 && tcp.len > 0", &["tcp.len"]);
    let total: usize = rows.iter().map(|r| r[0].parse::<usize>().unwrap()).sum();
    assert_eq!(total, 300_000);
    assert_eq!(rows.len(), 300_000usize.div_ceil(MSS));
    assert!(rows.iter().all(|r| r[0].parse::<usize>().unwrap() <= MSS));
    // The label is on the first segment only.
    assert_eq!(frames(&f, &[], "frame.comment == \"bulk\"").len(), 1);
}

#[test]
fn gap_and_elided_bytes_skip_sequence_numbers_with_a_comment() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Builder::new("127.0.0.1:40005", "127.0.0.1:3389");
    b.push(EventKind::Connected, "")
        .wire(Dir::C2S, X224_CR, "")
        .push(
            EventKind::Gap {
                dir: Dir::S2C,
                len: 100,
            },
            "",
        )
        .wire(Dir::S2C, vec![0x17u8; 10], "")
        .push(
            EventKind::Elided {
                dir: Dir::S2C,
                layer: Layer::Wire,
                len: 1000,
            },
            "",
        )
        .wire(Dir::S2C, vec![0x17u8; 10], "");
    let f = b.write(dir.path(), "gap.pcapng");
    let rows = fields(
        &f,
        &[],
        "tcp.srcport == 3389 && tcp.len > 0",
        &["tcp.seq", "frame.comment"],
    );
    assert_eq!(rows[0][0], "101");
    assert_eq!(
        rows[0][1],
        "capture gap: 100 bytes from the server are missing"
    );
    assert_eq!(rows[1][0], "1111");
    assert!(
        rows[1][1].contains("did not retain 1000 bytes from the server"),
        "{rows:?}"
    );
    // tshark sees exactly what happened: segments not captured before both.
    let lost = frames(&f, &[], "tcp.analysis.lost_segment");
    assert_eq!(lost.len(), 2, "{lost:?}");
}

// ---------------------------------------------------------------------------------------------
// Real TLS sessions in memory

#[derive(Debug, Default)]
struct KeyCapture(Mutex<Vec<String>>);

impl rustls::KeyLog for KeyCapture {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        self.0
            .lock()
            .unwrap()
            .push(format!("{label} {} {}", hex(client_random), hex(secret)));
    }
}

/// Accepts any server certificate (the test's own self-signed one); signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_client_with_keys(
    version: &'static SupportedProtocolVersion,
    keys: Arc<KeyCapture>,
) -> Connection {
    let p = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
        .with_no_client_auth();
    cfg.key_log = keys;
    let name = ServerName::try_from("rdp.test").unwrap();
    Connection::Client(rustls::ClientConnection::new(Arc::new(cfg), name).unwrap())
}

fn tls_client(version: &'static SupportedProtocolVersion) -> Connection {
    tls_client_with_keys(version, Arc::new(KeyCapture::default()))
}

fn tls_server(version: &'static SupportedProtocolVersion) -> Connection {
    let ck = rcgen::generate_simple_self_signed(vec!["rdp.test".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    Connection::Server(rustls::ServerConnection::new(Arc::new(cfg)).unwrap())
}

/// Moves every pending TLS record from `from` to `to` and records them as one wire event.
fn flight(
    b: &mut Builder,
    dir: Dir,
    from: &mut Connection,
    to: &mut Connection,
    label: &str,
) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    if buf.is_empty() {
        return false;
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
    b.wire(dir, buf, label);
    true
}

/// Minimal DER TLV (definite length, short or long form).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend_from_slice(&[0x81, n as u8]);
    } else {
        v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

/// TSRequest (MS-CSSP 2.2.1) version 6 with an NTLM NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1) token.
fn tsrequest_ntlm_negotiate() -> Vec<u8> {
    let mut ntlm = b"NTLMSSP\0".to_vec();
    ntlm.extend_from_slice(&1u32.to_le_bytes()); // NtLmNegotiate
    ntlm.extend_from_slice(&0xe208_8297u32.to_le_bytes()); // flags incl. NEGOTIATE_VERSION
    ntlm.extend_from_slice(&[0; 16]); // empty domain and workstation fields
    ntlm.extend_from_slice(&[0x0a, 0x00, 0x63, 0x45, 0x00, 0x00, 0x00, 0x0f]); // version 10.0.17763
    let nego_token = tlv(0x30, &tlv(0xa0, &tlv(0x04, &ntlm)));
    let mut body = tlv(0xa0, &tlv(0x02, &[6]));
    body.extend(tlv(0xa1, &tlv(0x30, &nego_token)));
    tlv(0x30, &body)
}

/// The server challenge of the NTLM CHALLENGE_MESSAGE: readable only after decryption.
const MARKER: &[u8; 8] = b"rdprobe!";

/// TSRequest version 6 with an NTLM CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2): target name "RDPROBE",
/// server challenge [`MARKER`], target info with the NetBIOS domain name.
fn tsrequest_ntlm_challenge() -> Vec<u8> {
    let name: Vec<u8> = "RDPROBE"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut info = vec![0x02, 0x00]; // MsvAvNbDomainName
    info.extend_from_slice(&(name.len() as u16).to_le_bytes());
    info.extend_from_slice(&name);
    info.extend_from_slice(&[0, 0, 0, 0]); // MsvAvEOL
    let fields = |len: usize, offset: usize| {
        let mut f = Vec::new();
        f.extend_from_slice(&(len as u16).to_le_bytes());
        f.extend_from_slice(&(len as u16).to_le_bytes());
        f.extend_from_slice(&(offset as u32).to_le_bytes());
        f
    };
    const HEADER: usize = 56;
    let mut ntlm = b"NTLMSSP\0".to_vec();
    ntlm.extend_from_slice(&2u32.to_le_bytes()); // NtLmChallenge
    ntlm.extend(fields(name.len(), HEADER));
    ntlm.extend_from_slice(&0xe28a_8215u32.to_le_bytes());
    ntlm.extend_from_slice(MARKER);
    ntlm.extend_from_slice(&[0; 8]); // reserved
    ntlm.extend(fields(info.len(), HEADER + name.len()));
    ntlm.extend_from_slice(&[0x0a, 0x00, 0x63, 0x45, 0x00, 0x00, 0x00, 0x0f]);
    assert_eq!(ntlm.len(), HEADER);
    ntlm.extend(name);
    ntlm.extend(info);
    let nego_token = tlv(0x30, &tlv(0xa0, &tlv(0x04, &ntlm)));
    let mut body = tlv(0xa0, &tlv(0x02, &[6]));
    body.extend(tlv(0xa1, &tlv(0x30, &nego_token)));
    tlv(0x30, &body)
}

/// A whole RDP-over-TLS conversation: optional X.224 negotiation selecting HYBRID, a real TLS
/// handshake, the client's TSRequest with NTLM NEGOTIATE, the server's TSRequest, close_notify, FINs.
fn tls_trace(
    version: &'static SupportedProtocolVersion,
    client: &str,
    server: &str,
    x224: bool,
) -> Builder {
    let keys = Arc::new(KeyCapture::default());
    let mut c = tls_client_with_keys(version, keys.clone());
    let mut s = tls_server(version);
    let mut b = Builder::new(client, server);
    b.push(EventKind::Connected, "tcp: connected");
    if x224 {
        b.wire(Dir::C2S, X224_CR, "x224: connection request");
        b.wire(Dir::S2C, x224_cc(0x02), "x224: connection confirm");
    }
    let mut round = 0;
    while c.is_handshaking() || s.is_handshaking() {
        round += 1;
        assert!(round < 10, "tls handshake does not finish");
        flight(
            &mut b,
            Dir::C2S,
            &mut c,
            &mut s,
            if round == 1 {
                "tls: client hello"
            } else {
                "tls: client flight"
            },
        );
        flight(&mut b, Dir::S2C, &mut s, &mut c, "tls: server flight");
    }
    // Session tickets and the like.
    flight(&mut b, Dir::S2C, &mut s, &mut c, "tls: server flight");

    let req = tsrequest_ntlm_negotiate();
    std::io::Write::write_all(&mut c.writer(), &req).unwrap();
    b.inner(Dir::C2S, req.clone());
    assert!(flight(
        &mut b,
        Dir::C2S,
        &mut c,
        &mut s,
        "credssp: ntlm negotiate"
    ));
    let mut got = vec![0; req.len()];
    std::io::Read::read_exact(&mut s.reader(), &mut got).unwrap();
    assert_eq!(got, req);

    let resp = tsrequest_ntlm_challenge();
    std::io::Write::write_all(&mut s.writer(), &resp).unwrap();
    assert!(flight(
        &mut b,
        Dir::S2C,
        &mut s,
        &mut c,
        "credssp: ntlm challenge"
    ));
    b.inner(Dir::S2C, resp);

    c.send_close_notify();
    flight(&mut b, Dir::C2S, &mut c, &mut s, "tls: close notify");
    b.push(EventKind::Fin { dir: Dir::C2S }, "")
        .push(EventKind::Fin { dir: Dir::S2C }, "");
    b.trace.keylog = keys.0.lock().unwrap().clone();
    assert!(!b.trace.keylog.is_empty(), "rustls logged no secrets");
    b
}

/// With only the DSB, tshark decrypts: NTLM NEGOTIATE and CHALLENGE dissected, the server
/// challenge readable, each on the frame labelled for it.
fn assert_decrypted(f: &Path, extra: &[&str]) {
    let neg = fields(f, extra, "ntlmssp.messagetype == 1", &["frame.comment"]);
    assert_eq!(
        neg,
        vec![vec!["credssp: ntlm negotiate"]],
        "ntlm negotiate not decrypted"
    );
    let hex: String = MARKER.iter().map(|x| format!("{x:02x}")).collect();
    let ch = fields(
        f,
        extra,
        "ntlmssp.messagetype == 2",
        &[
            "ntlmssp.ntlmserverchallenge",
            "ntlmssp.challenge.target_name",
            "frame.comment",
        ],
    );
    assert_eq!(ch.len(), 1, "ntlm challenge not decrypted: {ch:?}");
    assert_eq!(ch[0][0].replace(':', ""), hex);
    assert_eq!(ch[0][1], "RDPROBE");
    assert_eq!(ch[0][2], "credssp: ntlm challenge");
}

/// Checks a TLS capture; `tls_extra` is what tshark 4.0 needs to see TLS in this conversation
/// (nothing off 3389, where its heuristics find the handshake; `-d tcp.port==3389,tls` on 3389,
/// where it binds the conversation to TPKT and shows the TLS records as "TPKT continuation").
fn check_tls_capture(b: Builder, name: &str, tls_extra: &[&str], tls_version: &str, x224: bool) {
    let dir = tempfile::tempdir().unwrap();
    let f = b.write(dir.path(), name);
    let extra = tls_extra;
    assert!(capinfos(&f).contains("Number of decryption secrets in file: 1"));
    assert_clean(&f, &[], &[]);
    assert_clean(&f, extra, &[]);
    if x224 {
        assert_x224_dissected(&f, &[]);
    }
    assert!(tcp_anomalies(&f).is_empty(), "{:?}", tcp_anomalies(&f));
    let hello = fields(&f, extra, "tls.handshake.type == 1", &["frame.comment"]);
    assert_eq!(hello, vec![vec!["tls: client hello"]]);
    let sh = fields(
        &f,
        extra,
        "tls.handshake.type == 2",
        &[
            "tls.handshake.version",
            "tls.handshake.extensions.supported_version",
        ],
    );
    assert_eq!(sh.len(), 1);
    assert!(
        sh[0].join(" ").contains(tls_version),
        "server hello {sh:?} lacks {tls_version}"
    );
    assert_decrypted(&f, extra);

    // Control: the same trace without secrets stays opaque.
    let mut opaque = Builder {
        trace: b.trace.clone(),
        labels: b.labels.clone(),
        t: b.t,
    };
    opaque.trace.keylog.clear();
    let g = opaque.write(dir.path(), "opaque.pcapng");
    assert!(
        frames(&g, extra, "ntlmssp").is_empty(),
        "decrypted without secrets?"
    );

    // The SSLKEYLOGFILE the writer produces decrypts that opaque capture as well.
    let keys = dir.path().join("keys.log");
    write_keylog(&b.trace, std::fs::File::create(&keys).unwrap()).unwrap();
    let text = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(
        text,
        b.trace
            .keylog
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let opt = format!("tls.keylog_file:{}", keys.display());
    let mut with_keys = extra.to_vec();
    with_keys.extend_from_slice(&["-o", &opt]);
    assert_decrypted(&g, &with_keys);
}

#[test]
fn tls13_over_rdp_port_decrypts_with_the_embedded_secrets_only() {
    let b = tls_trace(
        &rustls::version::TLS13,
        "127.0.0.1:40010",
        "127.0.0.1:3389",
        true,
    );
    check_tls_capture(
        b,
        "tls13.pcapng",
        &["-d", "tcp.port==3389,tls"],
        "0x0304",
        true,
    );
}

#[test]
fn tls13_with_x224_off_3389_is_found_by_tshark_heuristics() {
    let b = tls_trace(
        &rustls::version::TLS13,
        "127.0.0.1:40012",
        "127.0.0.1:33390",
        true,
    );
    check_tls_capture(b, "tls13-33390.pcapng", &[], "0x0304", false);
}

#[test]
fn tls12_over_ipv6_on_another_port_decrypts_with_the_embedded_secrets_only() {
    let b = tls_trace(&rustls::version::TLS12, "[::1]:40011", "[::1]:33389", false);
    check_tls_capture(b, "tls12-v6.pcapng", &[], "0x0303", false);
}

/// The capture reader (which decrypts with the DSB it finds) recovers exactly the trace's wire and
/// inner streams and its TCP events from the written capture.
#[test]
fn capture_reader_recovers_both_layers_from_the_written_capture() {
    use rdprobe::capture::reader::{read_conversations, ReaderOptions};
    for (v, c, s) in [
        (&rustls::version::TLS13, "127.0.0.1:40020", "127.0.0.1:3389"),
        (&rustls::version::TLS12, "[::1]:40021", "[::1]:33389"),
    ] {
        let b = tls_trace(v, c, s, true);
        let mut buf = Vec::new();
        write_pcapng(&b.trace, &b.labels, &mut buf).unwrap();
        let convs: Vec<_> = read_conversations(&buf[..], ReaderOptions::default())
            .unwrap()
            .collect();
        assert_eq!(convs.len(), 1);
        let t = convs.into_iter().next().unwrap().unwrap();
        assert_eq!((t.client, t.server), (b.trace.client, b.trace.server));
        for d in [Dir::C2S, Dir::S2C] {
            for l in [Layer::Wire, Layer::Inner] {
                let (want, got) = (b.trace.stream(d, l), t.stream(d, l));
                assert!(!want.is_empty());
                assert!(
                    want == got,
                    "{d:?} {l:?}: wrote {} bytes, read {}",
                    want.len(),
                    got.len()
                );
            }
        }
        let tcp: Vec<&EventKind> = t
            .events
            .iter()
            .map(|e| &e.kind)
            .filter(|k| {
                matches!(
                    k,
                    EventKind::Connected | EventKind::Fin { .. } | EventKind::Rst { .. }
                )
            })
            .collect();
        assert_eq!(
            tcp,
            [
                &EventKind::Connected,
                &EventKind::Fin { dir: Dir::C2S },
                &EventKind::Fin { dir: Dir::S2C }
            ]
        );
    }
}
