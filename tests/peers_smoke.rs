//! Tests of the test harness itself: each real peer starts on a free loopback port, answers an
//! X.224 Connection Request the way the rest of the suite relies on, and is stopped by PID; each
//! misbehaving server does what its name says.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use common::*;

const T: Duration = Duration::from_secs(5);

fn negotiate(port: u16, protocols: u32) -> NegOutcome {
    x224_negotiate(port, protocols, T)
        .unwrap_or_else(|e| panic!("x224 with port {port} offering {protocols:#x}: {e:#}"))
}

fn selected(protocol: u32) -> NegOutcome {
    NegOutcome::Selected {
        protocol,
        flags: 0x01,
    }
}

fn pid_alive(pid: u32) -> bool {
    // A reaped child's /proc entry is gone (the PID could only be reused much later).
    Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------- pure helpers

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ports.len(),
        "free_port repeated a port: {ports:?}"
    );
    for port in ports {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} not bindable: {e}"));
    }
}

#[test]
fn missing_binary_names_the_package_to_install() {
    let err = require_binary("rdprobe-no-such-peer", "rdprobe-peer-pkg").unwrap_err();
    assert_eq!(
        err.to_string(),
        "rdprobe-no-such-peer not found: run scripts/install-peers.sh \
         (apt-get install rdprobe-peer-pkg)"
    );
    assert!(
        require_binary("xrdp", "xrdp").is_ok(),
        "xrdp is looked up in /usr/sbin too"
    );
}

#[test]
fn x224_encoders_round_trip() {
    let cr = connection_request(Some("alice"), PROTOCOL_SSL | PROTOCOL_HYBRID);
    assert_eq!(cr[0], 0x03);
    assert_eq!(usize::from(u16::from_be_bytes([cr[2], cr[3]])), cr.len());
    assert_eq!(
        requested_protocols(&cr),
        Some(PROTOCOL_SSL | PROTOCOL_HYBRID)
    );
    assert_eq!(
        parse_confirm(&connection_confirm(PROTOCOL_HYBRID, 0x0B)).unwrap(),
        NegOutcome::Selected {
            protocol: PROTOCOL_HYBRID,
            flags: 0x0B
        }
    );
    assert_eq!(
        parse_confirm(&connection_failure(SSL_CERT_NOT_ON_SERVER)).unwrap(),
        NegOutcome::Failure {
            code: SSL_CERT_NOT_ON_SERVER
        }
    );
    // A pre-5.2 confirm (no negotiation data) and junk.
    let bare = [0x03, 0x00, 0x00, 0x0B, 0x06, 0xD0, 0, 0, 0x12, 0x34, 0];
    assert_eq!(parse_confirm(&bare).unwrap(), NegOutcome::NoNegotiation);
    assert!(parse_confirm(&[0x7F; 19]).is_err());
    assert!(parse_confirm(&[0x03, 0x00]).is_err());
    assert_eq!(
        protocol_name(PROTOCOL_SSL | PROTOCOL_HYBRID),
        "PROTOCOL_SSL|PROTOCOL_HYBRID"
    );
}

#[test]
fn nt_hash_matches_winpr_hash_and_known_vector() {
    // MD4(UTF-16LE("password")), the classic test vector.
    assert_eq!(nt_hash_hex("password"), "8846f7eaee8fb117ad06bdd830b7586c");
    let winpr = require_binary("winpr-hash", "winpr-utils").unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(winpr)
        .args(["-u", "alice", "-p", "S3cret-pässword", "-f", "sam"])
        .output()
        .expect("run winpr-hash");
    assert!(out.status.success(), "winpr-hash failed: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sam_line("alice", "S3cret-pässword")
    );
}

#[test]
fn certificates_have_the_requested_validity() {
    let now = time::OffsetDateTime::now_utc();
    let valid = TestCert::valid("valid.test").unwrap();
    assert!(valid.not_before < now && now < valid.not_after);
    let expired = TestCert::expired("expired.test").unwrap();
    assert!(expired.not_after < now, "expired cert ends in the past");
    let parsed = openssl::x509::X509::from_der(&expired.der).unwrap();
    let end = openssl::asn1::Asn1Time::from_unix(expired.not_after.unix_timestamp()).unwrap();
    assert_eq!(
        parsed.not_after().compare(&end).unwrap(),
        std::cmp::Ordering::Equal
    );
    assert!(String::from_utf8_lossy(&expired.cert_pem).starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn process_guard_kills_its_child_when_a_test_panics() {
    let sleep = require_binary("sleep", "coreutils").unwrap();
    let pid = std::panic::catch_unwind(|| {
        let guard = ProcessGuard::spawn("sleep", Command::new(&sleep).arg("60")).unwrap();
        let pid = guard.pid();
        assert!(pid_alive(pid));
        // Unwinds like a failed assertion, without printing a panic message.
        std::panic::resume_unwind(Box::new(pid));
    })
    .unwrap_err()
    .downcast::<u32>()
    .map(|b| *b)
    .expect("panic payload is the pid");
    assert!(!pid_alive(pid), "sleep {pid} survived the panic");
}

// ---------------------------------------------------------------- xrdp

#[test]
fn xrdp_negotiate_selects_ssl_and_serves_its_certificate() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).unwrap();
    eprintln!("xrdp (negotiate) started in {:?}", xrdp.startup_time());
    assert_eq!(
        negotiate(xrdp.port(), PROTOCOL_SSL | PROTOCOL_HYBRID),
        selected(PROTOCOL_SSL)
    );
    // xrdp has no NLA: offered HYBRID only, it falls back to standard RDP security, no failure code.
    assert_eq!(
        negotiate(xrdp.port(), PROTOCOL_HYBRID),
        selected(PROTOCOL_RDP)
    );
    assert_eq!(negotiate(xrdp.port(), PROTOCOL_RDP), selected(PROTOCOL_RDP));
    let facts = tls_after_x224(xrdp.port(), PROTOCOL_SSL, TlsRange::Modern, T).unwrap();
    assert_eq!(facts.cert_der, xrdp.cert().unwrap().der);
    assert!(
        facts.version == "TLSv1.2" || facts.version == "TLSv1.3",
        "{facts:?}"
    );
    assert!(
        xrdp.log().contains("listening to port"),
        "log: {}",
        xrdp.log()
    );
}

#[test]
fn xrdp_tls_only_requires_ssl() {
    let xrdp = Xrdp::start(XrdpOpts::tls()).unwrap();
    assert_eq!(
        negotiate(xrdp.port(), PROTOCOL_HYBRID),
        NegOutcome::Failure {
            code: SSL_REQUIRED_BY_SERVER
        }
    );
    assert_eq!(
        negotiate(xrdp.port(), PROTOCOL_RDP),
        NegOutcome::Failure {
            code: SSL_REQUIRED_BY_SERVER
        }
    );
    assert_eq!(
        negotiate(
            xrdp.port(),
            PROTOCOL_HYBRID_EX | PROTOCOL_HYBRID | PROTOCOL_SSL
        ),
        selected(PROTOCOL_SSL)
    );
}

#[test]
fn xrdp_rdp_security_selects_protocol_rdp_even_for_hybrid() {
    for crypt_level in ["high", "fips"] {
        let xrdp = Xrdp::start(XrdpOpts::rdp(crypt_level)).unwrap();
        assert_eq!(
            negotiate(xrdp.port(), PROTOCOL_HYBRID),
            selected(PROTOCOL_RDP)
        );
        assert_eq!(
            negotiate(xrdp.port(), PROTOCOL_SSL | PROTOCOL_HYBRID),
            selected(PROTOCOL_RDP)
        );
    }
}

#[test]
fn xrdp_unreadable_certificate_answers_ssl_cert_not_on_server() {
    let xrdp = Xrdp::start(XrdpOpts::unreadable_cert()).unwrap();
    for offer in [
        PROTOCOL_SSL,
        PROTOCOL_SSL | PROTOCOL_HYBRID,
        PROTOCOL_HYBRID,
    ] {
        assert_eq!(
            negotiate(xrdp.port(), offer),
            NegOutcome::Failure {
                code: SSL_CERT_NOT_ON_SERVER
            },
            "offer {offer:#x}"
        );
    }
    assert!(
        xrdp.log().contains("Cannot read certificate file"),
        "log: {}",
        xrdp.log()
    );
    // With security_layer=negotiate the same certificate makes xrdp fall back to RDP silently.
    let negotiate_xrdp = Xrdp::start(XrdpOpts {
        cert: CertKind::Unreadable,
        ..XrdpOpts::negotiate()
    })
    .unwrap();
    assert_eq!(
        negotiate(negotiate_xrdp.port(), PROTOCOL_SSL),
        selected(PROTOCOL_RDP)
    );
}

#[test]
fn xrdp_corrupt_certificate_selects_ssl_then_fails_the_handshake() {
    let xrdp = Xrdp::start(XrdpOpts {
        cert: CertKind::Corrupt,
        ..XrdpOpts::tls()
    })
    .unwrap();
    let err = tls_after_x224(xrdp.port(), PROTOCOL_SSL, TlsRange::Any, T).unwrap_err();
    assert!(format!("{err:#}").contains("tls handshake"), "{err:#}");
    assert!(
        xrdp.log().contains("Error loading TLS private key"),
        "log: {}",
        xrdp.log()
    );
}

#[test]
fn xrdp_expired_certificate_is_served() {
    let xrdp = Xrdp::start(XrdpOpts::expired_cert()).unwrap();
    let facts = tls_after_x224(xrdp.port(), PROTOCOL_SSL, TlsRange::Modern, T).unwrap();
    let cert = openssl::x509::X509::from_der(&facts.cert_der).unwrap();
    let now = openssl::asn1::Asn1Time::days_from_now(0).unwrap();
    assert_eq!(
        cert.not_after().compare(&now).unwrap(),
        std::cmp::Ordering::Less
    );
    assert_eq!(facts.cert_der, xrdp.cert().unwrap().der);
}

#[test]
fn xrdp_tls10_only_speaks_only_tls10() {
    let xrdp = Xrdp::start(XrdpOpts::tls10_only()).unwrap();
    let facts = tls_after_x224(xrdp.port(), PROTOCOL_SSL, TlsRange::Tls10Only, T).unwrap();
    assert_eq!(facts.version, "TLSv1");
    assert!(
        [
            "AES128-SHA",
            "AES256-SHA",
            "DES-CBC3-SHA",
            "ECDHE-RSA-AES128-SHA",
            "ECDHE-RSA-AES256-SHA"
        ]
        .contains(&facts.cipher.as_str()),
        "{facts:?}"
    );
    let any = tls_after_x224(xrdp.port(), PROTOCOL_SSL, TlsRange::Any, T).unwrap();
    assert_eq!(
        any.version, "TLSv1",
        "best version offered is still TLS 1.0"
    );
    let modern = tls_after_x224(xrdp.port(), PROTOCOL_SSL, TlsRange::Modern, T);
    assert!(modern.is_err(), "a TLS 1.2+ client must fail: {modern:?}");
}

#[test]
fn xrdp_is_killed_and_cleaned_up_on_drop() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).unwrap();
    let (pid, port, dir) = (xrdp.pid(), xrdp.port(), xrdp.dir().to_owned());
    assert!(pid_alive(pid) && dir.exists());
    drop(xrdp);
    assert!(!pid_alive(pid), "xrdp {pid} still alive");
    assert!(!dir.exists(), "{} not removed", dir.display());
    assert!(!port_accepts(port), "port {port} still accepts");
}

// ---------------------------------------------------------------- freerdp-shadow, xfreerdp

#[test]
fn freerdp_shadow_nla_requires_hybrid_and_authenticates_xfreerdp() {
    let shadow = FreerdpShadow::start("nla", &[("alice", "S3cret!"), ("bob", "hunter2")]).unwrap();
    eprintln!(
        "freerdp-shadow (nla) started in {:?} (Xvfb {:?})",
        shadow.startup_time(),
        shadow.xvfb().startup_time()
    );
    assert_eq!(
        negotiate(shadow.port(), PROTOCOL_SSL),
        NegOutcome::Failure {
            code: HYBRID_REQUIRED_BY_SERVER
        }
    );
    assert!(matches!(
        negotiate(shadow.port(), PROTOCOL_SSL | PROTOCOL_HYBRID),
        NegOutcome::Selected {
            protocol: PROTOCOL_HYBRID,
            ..
        }
    ));

    let ok = xfreerdp_auth_only(
        shadow.port(),
        "bob",
        "hunter2",
        &[],
        Duration::from_secs(30),
    )
    .unwrap();
    eprintln!("xfreerdp +auth-only (right password) took {:?}", ok.elapsed);
    assert_eq!(ok.code, Some(0), "right password: {}", ok.output);
    let bad = xfreerdp_auth_only(
        shadow.port(),
        "alice",
        "wrong",
        &[],
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!bad.timed_out, "wrong password: {}", bad.output);
    assert_ne!(bad.code, Some(0), "wrong password accepted: {}", bad.output);
    eprintln!(
        "xfreerdp wrong password against freerdp-shadow: exit {:?}",
        bad.code
    );
}

#[test]
fn freerdp_shadow_tls_requires_ssl() {
    let mut shadow = FreerdpShadow::start("tls", &[]).unwrap();
    assert_eq!(
        negotiate(shadow.port(), PROTOCOL_HYBRID),
        NegOutcome::Failure {
            code: SSL_REQUIRED_BY_SERVER
        }
    );
    let facts = tls_after_x224(shadow.port(), PROTOCOL_SSL, TlsRange::Modern, T).unwrap();
    let pem = std::fs::read(shadow.cert_pem_path()).unwrap();
    let served = openssl::x509::X509::from_der(&facts.cert_der).unwrap();
    assert_eq!(
        served.to_pem().unwrap(),
        openssl::x509::X509::from_pem(&pem)
            .unwrap()
            .to_pem()
            .unwrap()
    );
    assert!(shadow.is_running());
    let (pid, xvfb_pid) = (shadow.pid(), shadow.xvfb().pid());
    drop(shadow);
    assert!(!pid_alive(pid) && !pid_alive(xvfb_pid));
}

#[test]
fn xfreerdp_reaches_xrdp_and_times_out_on_a_silent_server() {
    let xrdp = Xrdp::start(XrdpOpts::tls()).unwrap();
    let run = xfreerdp_auth_only(
        xrdp.port(),
        "anyone",
        "anything",
        &[],
        Duration::from_secs(30),
    )
    .unwrap();
    eprintln!(
        "xfreerdp +auth-only against xrdp: exit {:?} in {:?}",
        run.code, run.elapsed
    );
    assert!(!run.timed_out, "{}", run.output);
    assert!(
        xrdp.log().contains("requested [SSL"),
        "xrdp saw no request: {}",
        xrdp.log()
    );

    let silent = BadServer::silent();
    let run = xfreerdp_auth_only(silent.port(), "u", "p", &[], Duration::from_secs(2)).unwrap();
    assert!(run.timed_out, "xfreerdp gave up by itself: {run:?}");
    assert_eq!(run.code, None);
    let received = silent.received();
    assert!(!received.is_empty() && requested_protocols(&received[0]).is_some());
}

// ---------------------------------------------------------------- tshark

/// A classic pcap with one Ethernet/IPv4/TCP packet carrying `payload` to port 3389.
fn write_pcap(path: &Path, payload: &[u8]) {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
        .tcp(50000, 3389, 1000, 65535)
        .psh()
        .ack(1)
        .write(&mut frame, payload)
        .unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes()); // pcap magic, microseconds
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame);
    std::fs::write(path, out).unwrap();
}

#[test]
fn tshark_dissects_an_x224_request() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cr.pcap");
    write_pcap(
        &pcap,
        &connection_request(Some("alice"), PROTOCOL_SSL | PROTOCOL_HYBRID),
    );
    let rows = tshark_fields(
        &pcap,
        &[],
        &[
            "tcp.dstport",
            "rdp.rt_cookie",
            "rdp.negReq.requestedProtocols",
        ],
    );
    assert_eq!(
        rows,
        vec![vec![
            "3389".to_owned(),
            "Cookie: mstshash=alice".to_owned(),
            "0x00000003".to_owned()
        ]]
    );
    let verbose = tshark_verbose(&pcap, &[]);
    assert!(verbose.contains("ISO 8073/X.224"), "{verbose}");
    let summary = tshark_summary(&pcap, &[]);
    assert_eq!(summary.lines().count(), 1, "{summary}");
    let missing = dir.path().join("missing.pcap");
    let err = tshark(&["-r", &missing.to_string_lossy()]).unwrap_err();
    assert!(format!("{err:#}").contains("doesn't exist"), "{err:#}");
}

// ---------------------------------------------------------------- bad servers

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn send_request(s: &mut TcpStream, protocols: u32) {
    s.write_all(&connection_request(Some("smoke"), protocols))
        .unwrap();
}

#[test]
fn bad_silent_records_and_never_answers() {
    let server = BadServer::silent();
    let mut s = connect(server.port());
    send_request(&mut s, PROTOCOL_SSL);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = s.read(&mut [0u8; 16]).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(net::wait_until(T, Duration::from_millis(10), || {
        (server.received().first().map(|r| r.len())
            == Some(connection_request(Some("smoke"), 1).len()))
        .then_some(())
    })
    .is_some());
}

#[test]
fn bad_garbage_tpkt_and_confirm_then_close() {
    let garbage = BadServer::garbage();
    let mut s = connect(garbage.port());
    send_request(&mut s, PROTOCOL_SSL);
    let mut buf = [0u8; 64];
    s.read_exact(&mut buf).unwrap();
    assert_ne!(buf[0], 0x03);

    let tpkt = BadServer::tpkt_never_delivered();
    let mut s = connect(tpkt.port());
    send_request(&mut s, PROTOCOL_SSL);
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got.len(), 10);
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1000);

    let close = BadServer::confirm_then_close();
    let mut s = connect(close.port());
    send_request(&mut s, PROTOCOL_SSL | PROTOCOL_HYBRID);
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(parse_confirm(&all).unwrap(), selected(PROTOCOL_SSL));
    assert_eq!(all.len(), 19, "then EOF");
}

#[test]
fn bad_drip_sends_a_valid_confirm_slowly() {
    let server = BadServer::drip_every(Duration::from_millis(40));
    let mut s = connect(server.port());
    let started = std::time::Instant::now();
    send_request(&mut s, PROTOCOL_RDP);
    let confirm = read_tpkt(&mut s, 64).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(18 * 40),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(parse_confirm(&confirm).unwrap(), selected(PROTOCOL_RDP));
}

#[test]
fn bad_endless_never_stops_sending() {
    let server = BadServer::endless();
    let mut s = connect(server.port());
    send_request(&mut s, PROTOCOL_SSL);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    while total < 4 * 1024 * 1024 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "endless server closed after {total} bytes");
        total += n;
    }
    // The counter is bumped after each write returns, so it may trail what was already read.
    assert!(net::wait_until(T, Duration::from_millis(10), || {
        (server.bytes_sent() >= 4 * 1024 * 1024).then_some(())
    })
    .is_some());
}

#[test]
fn bad_reset_after_client_hello_and_after_request() {
    let server = BadServer::reset_after_client_hello();
    let err = tls_after_x224(server.port(), PROTOCOL_SSL, TlsRange::Modern, T).unwrap_err();
    assert!(format!("{err:#}").contains("tls handshake"), "{err:#}");
    let conns = server.connections();
    assert_eq!(conns.len(), 1);
    let hello = &conns[0].messages[1];
    assert_eq!(
        (hello[0], hello[5]),
        (0x16, 0x01),
        "a TLS handshake record with a ClientHello"
    );

    let server = BadServer::reset_after_request();
    let mut s = connect(server.port());
    send_request(&mut s, PROTOCOL_SSL);
    let err = s.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

#[test]
fn credssp_error_server_refuses_xfreerdp_with_logon_failure() {
    let server = CredsspErrorServer::logon_failure();
    assert_eq!(
        negotiate(server.port(), PROTOCOL_SSL),
        NegOutcome::Failure {
            code: HYBRID_REQUIRED_BY_SERVER
        }
    );
    let run = xfreerdp_auth_only(
        server.port(),
        "alice",
        "wrong",
        &[],
        Duration::from_secs(30),
    )
    .unwrap();
    eprintln!("xfreerdp against CredsspErrorServer: exit {:?}", run.code);
    assert!(!run.timed_out, "{}", run.output);
    assert_ne!(run.code, Some(0), "{}", run.output);
    assert!(
        run.output.contains("STATUS_LOGON_FAILURE") || run.output.contains("LOGON_FAILURE"),
        "xfreerdp did not decode the errorCode:\n{}",
        run.output
    );
    let ntlm = server.ntlm_messages();
    assert_eq!(&ntlm[..2], &[1, 3], "NEGOTIATE then AUTHENTICATE: {ntlm:?}");
}
