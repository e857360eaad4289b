//! Issue 3 proof: the live probe against real servers (xrdp, freerdp-shadow-cli) and hostile test
//! servers, all on free loopback ports started by the harness.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ironrdp_pdu::nego::SecurityProtocol;
use rdprobe::probe::{self, Credentials, ProbeOptions, ProbeResult, Protocol};
use rdprobe::report::ConnectionReport;
use rdprobe::stage::{FailureKind, Side, Stage, Verdict};

fn opts(port: u16) -> ProbeOptions {
    let mut o = ProbeOptions::new("127.0.0.1", port);
    o.stage_timeout = Duration::from_secs(5);
    o.deadline = Duration::from_secs(30);
    o
}

async fn run(o: &ProbeOptions) -> ProbeResult {
    probe::probe(o).await
}

fn stages(r: &ConnectionReport) -> Vec<Stage> {
    r.stages.iter().map(|s| s.stage).collect()
}

fn fact<'a>(r: &'a ConnectionReport, stage: Stage, key: &str) -> &'a serde_json::Value {
    r.fact(stage, key).unwrap_or_else(|| {
        panic!(
            "no fact {stage}.{key} in report:\n{}",
            rdprobe::report::render_text(r)
        )
    })
}

fn failure(r: &ConnectionReport) -> (&FailureKind, Side) {
    match &r.verdict {
        Verdict::Failed { kind, by } => (kind, *by),
        Verdict::Ok => panic!(
            "expected a failure, got ok:\n{}",
            rdprobe::report::render_text(r)
        ),
    }
}

fn assert_connected(r: &ConnectionReport) {
    assert!(
        r.verdict.is_ok() && r.last_stage == Stage::Connected,
        "expected connected:\n{}",
        rdprobe::report::render_text(r)
    );
    for s in &r.stages {
        assert!(s.verdict.is_ok(), "stage {} not ok", s.stage);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn xrdp_negotiate_walks_to_connected() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp");
    let res = run(&opts(xrdp.port())).await;
    let r = &res.report;
    assert_connected(r);
    assert_eq!(
        stages(r),
        vec![
            Stage::Tcp,
            Stage::X224,
            Stage::Tls,
            Stage::Mcs,
            Stage::Channels,
            Stage::Security,
            Stage::Licensing,
            Stage::Capabilities,
            Stage::Connected
        ]
    );
    assert_eq!(fact(r, Stage::X224, "selected_protocol"), "PROTOCOL_SSL");
    assert!(fact(r, Stage::Tls, "version")
        .as_str()
        .unwrap()
        .starts_with("TLSv1."));
    assert!(!fact(r, Stage::Tls, "cipher_suite")
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(fact(r, Stage::Tls, "cert_self_signed"), true);
    assert_eq!(fact(r, Stage::Tls, "cert_expired"), false);
    assert!(fact(r, Stage::Tls, "cert_subject")
        .as_str()
        .unwrap()
        .contains("CN="));
    assert!(r
        .stage(Stage::Mcs)
        .unwrap()
        .facts
        .contains_key("server_rdp_version"));
    assert!(!res.trace.keylog.is_empty(), "TLS secrets recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn xrdp_tls_only_connected_and_expired_certificate_flagged() {
    let xrdp = Xrdp::start(XrdpOpts::tls()).expect("start xrdp");
    let r = run(&opts(xrdp.port())).await.report;
    assert_connected(&r);
    assert_eq!(fact(&r, Stage::X224, "selected_protocol"), "PROTOCOL_SSL");
    drop(xrdp);

    let xrdp = Xrdp::start(XrdpOpts::expired_cert()).expect("start xrdp (expired cert)");
    let r = run(&opts(xrdp.port())).await.report;
    assert_connected(&r);
    assert_eq!(fact(&r, Stage::Tls, "cert_expired"), true);
    assert!(fact(&r, Stage::Tls, "cert_days_left").as_i64().unwrap() < 0);
    assert!(
        fact(&r, Stage::Tls, "cert_not_after")
            .as_str()
            .unwrap()
            .len()
            >= 10
    );
    assert!(
        fact(&r, Stage::Tls, "cert_not_before")
            .as_str()
            .unwrap()
            .len()
            >= 10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn negotiation_failures_by_name() {
    // TLS-only xrdp offered only HYBRID.
    let xrdp = Xrdp::start(XrdpOpts::tls()).expect("start xrdp");
    let mut o = opts(xrdp.port());
    o.protocols = vec![Protocol::Hybrid];
    let r = run(&o).await.report;
    let (kind, by) = failure(&r);
    assert_eq!(r.last_stage, Stage::X224);
    assert_eq!(by, Side::Server);
    assert!(
        matches!(kind, FailureKind::NegotiationFailure(n) if n.code == 1 && n.name() == "SSL_REQUIRED_BY_SERVER"),
        "{kind:?}"
    );
    assert_eq!(
        rdprobe::report::exit_code(&r),
        rdprobe::report::exit::REFUSED
    );
    drop(xrdp);

    // Unreadable certificate.
    let xrdp = Xrdp::start(XrdpOpts::unreadable_cert()).expect("start xrdp");
    let r = run(&opts(xrdp.port())).await.report;
    let (kind, _) = failure(&r);
    assert!(
        matches!(kind, FailureKind::NegotiationFailure(n) if n.code == 3 && n.name() == "SSL_CERT_NOT_ON_SERVER"),
        "{kind:?}"
    );
    drop(xrdp);

    // RDP-security-only xrdp offered only HYBRID selects PROTOCOL_RDP: a mismatch, not a failure code.
    let xrdp = Xrdp::start(XrdpOpts::rdp("high")).expect("start xrdp");
    let mut o = opts(xrdp.port());
    o.protocols = vec![Protocol::Hybrid];
    let r = run(&o).await.report;
    let (kind, by) = failure(&r);
    assert_eq!(by, Side::Server);
    assert!(
        matches!(kind, FailureKind::ProtocolMismatch { requested, selected }
            if *requested == SecurityProtocol::HYBRID && selected.is_empty()),
        "{kind:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nla_only_shadow_offered_ssl_says_hybrid_required() {
    let shadow =
        FreerdpShadow::start("nla", &[("alice", "Secret123!")]).expect("start freerdp-shadow");
    let mut o = opts(shadow.port());
    o.protocols = vec![Protocol::Ssl];
    let r = run(&o).await.report;
    let (kind, _) = failure(&r);
    assert!(
        matches!(kind, FailureKind::NegotiationFailure(n) if n.code == 5 && n.name() == "HYBRID_REQUIRED_BY_SERVER"),
        "{kind:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rdp_security_server_reports_security_data_at_mcs() {
    let xrdp = Xrdp::start(XrdpOpts::rdp("high")).expect("start xrdp");
    // Default offer (TLS/NLA): the server picks standard RDP security; the probe follows like mstsc.
    let r = run(&opts(xrdp.port())).await.report;
    assert!(
        stages(&r).contains(&Stage::Mcs),
        "{}",
        rdprobe::report::render_text(&r)
    );
    assert_eq!(fact(&r, Stage::X224, "selected_protocol"), "PROTOCOL_RDP");
    let level = fact(&r, Stage::Mcs, "encryption_level")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        level == "high" || level == "client_compatible",
        "level {level}"
    );
    assert_ne!(fact(&r, Stage::Mcs, "encryption_method"), "none");
    assert_eq!(fact(&r, Stage::Mcs, "server_random_present"), true);
    assert!(fact(&r, Stage::Mcs, "server_key_bits").as_u64().unwrap() >= 512);
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("reconnected offering PROTOCOL_RDP")));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls10_only_server_is_reported_as_legacy_and_walked() {
    let xrdp = Xrdp::start(XrdpOpts::tls10_only()).expect("start xrdp (TLS 1.0)");
    let r = run(&opts(xrdp.port())).await.report;
    assert_connected(&r);
    assert_eq!(fact(&r, Stage::Tls, "version"), "TLSv1.0");
    assert_eq!(fact(&r, Stage::Tls, "legacy_only"), true);
    assert!(
        r.notes.iter().any(|n| n.contains("speaks only TLSv1.0")),
        "{:?}",
        r.notes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn freerdp_shadow_nla_right_and_wrong_password() {
    let shadow =
        FreerdpShadow::start("nla", &[("alice", "Secret123!")]).expect("start freerdp-shadow");
    let mut o = opts(shadow.port());
    o.credentials = Some(Credentials {
        user: "alice".into(),
        domain: None,
        password: "Secret123!".into(),
    });
    let res = run(&o).await;
    let r = &res.report;
    assert_connected(r);
    assert!(stages(r).contains(&Stage::Credssp));
    assert!(r
        .stage(Stage::Credssp)
        .unwrap()
        .facts
        .contains_key("ntlm_nb_computer_name"));
    // The password never appears in the trace's notes, the report or the keylog.
    let json = serde_json::to_string(r).unwrap();
    assert!(!json.contains("Secret123!"));

    o.credentials.as_mut().unwrap().password = "wrong".into();
    let r = run(&o).await.report;
    let (kind, by) = failure(&r);
    assert_eq!(
        r.last_stage,
        Stage::Credssp,
        "{}",
        rdprobe::report::render_text(&r)
    );
    assert_eq!(by, Side::Server);
    match kind {
        FailureKind::AuthFailure(rdprobe::stage::AuthFailure {
            ntstatus: None,
            detail,
        }) => {
            assert!(detail.contains("without a TSRequest errorCode"), "{detail}");
            assert!(detail.contains("close_notify"), "{detail}");
        }
        other => panic!("expected auth failure without errorCode, got {other:?}"),
    }
    assert_eq!(rdprobe::report::exit_code(&r), rdprobe::report::exit::AUTH);
}

#[tokio::test(flavor = "multi_thread")]
async fn nla_without_credentials_reads_the_ntlm_challenge() {
    let shadow =
        FreerdpShadow::start("nla", &[("alice", "Secret123!")]).expect("start freerdp-shadow");
    let r = run(&opts(shadow.port())).await.report;
    assert_eq!(
        r.last_stage,
        Stage::Credssp,
        "{}",
        rdprobe::report::render_text(&r)
    );
    assert!(matches!(
        r.verdict,
        Verdict::Failed {
            kind: FailureKind::Stopped,
            ..
        }
    ));
    assert!(r
        .stage(Stage::Credssp)
        .unwrap()
        .facts
        .contains_key("ntlm_nb_computer_name"));
    assert_eq!(rdprobe::report::exit_code(&r), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn credssp_error_code_is_named() {
    let srv = CredsspErrorServer::logon_failure();
    let mut o = opts(srv.port());
    o.credentials = Some(Credentials {
        user: "bob".into(),
        domain: Some("CORP".into()),
        password: "nope".into(),
    });
    let r = run(&o).await.report;
    let (kind, by) = failure(&r);
    assert_eq!(by, Side::Server);
    assert!(
        matches!(kind, FailureKind::AuthFailure(a) if a.ntstatus == Some(0xC000_006D) && a.name() == Some("STATUS_LOGON_FAILURE")),
        "{kind:?}"
    );
    assert_eq!(
        fact(&r, Stage::Credssp, "error_name"),
        "STATUS_LOGON_FAILURE"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_faults_have_precise_verdicts_within_deadlines() {
    // Closed port.
    let r = run(&opts(closed_port())).await.report;
    assert!(matches!(failure(&r), (FailureKind::Refused, _)));
    assert_eq!(r.last_stage, Stage::Tcp);
    assert_eq!(
        rdprobe::report::exit_code(&r),
        rdprobe::report::exit::NETWORK
    );

    let mut o = opts(0);
    o.stage_timeout = Duration::from_millis(800);
    o.deadline = Duration::from_secs(6);

    // Accepts and never answers: timed out at x224 within the deadline.
    let silent = BadServer::silent();
    o.port = silent.port();
    let t = Instant::now();
    let r = run(&o).await.report;
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(r.last_stage, Stage::X224);
    assert!(matches!(
        failure(&r),
        (
            FailureKind::TimedOut {
                waiting_for: Side::Server,
                ..
            },
            Side::Server
        )
    ));

    // Resets after reading the ClientHello: reset at tls by the server.
    let rst = BadServer::reset_after_client_hello();
    o.port = rst.port();
    let r = run(&o).await.report;
    assert_eq!(
        r.last_stage,
        Stage::Tls,
        "{}",
        rdprobe::report::render_text(&r)
    );
    assert!(matches!(failure(&r), (FailureKind::Reset, Side::Server)));

    // Garbage instead of an X.224 confirm: protocol error at byte 0 of the server's stream.
    let garbage = BadServer::garbage();
    o.port = garbage.port();
    let r = run(&o).await.report;
    assert_eq!(r.last_stage, Stage::X224);
    match failure(&r) {
        (
            FailureKind::ProtocolError {
                offset: Some(0), ..
            },
            Side::Server,
        ) => {}
        other => panic!("{other:?}"),
    }

    // A TPKT length never delivered, one byte every 2 s, an endless stream: all bounded.
    for srv in [
        BadServer::tpkt_never_delivered(),
        BadServer::drip(),
        BadServer::endless(),
    ] {
        o.port = srv.port();
        let t = Instant::now();
        let r = run(&o).await.report;
        assert!(
            t.elapsed() < Duration::from_secs(7),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(
            r.last_stage,
            Stage::X224,
            "{}",
            rdprobe::report::render_text(&r)
        );
        assert!(
            matches!(
                failure(&r).0,
                FailureKind::TimedOut { .. } | FailureKind::ProtocolError { .. }
            ),
            "{}",
            rdprobe::report::render_text(&r)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_loopback_probe_and_capture() {
    let sc = rdprobe::scenario::builtin("healthy-tls").expect("builtin");
    let lab = rdprobe::lab::spawn_lab("[::1]:0".parse().unwrap(), sc).expect("lab on ::1");
    let mut o = ProbeOptions::new("::1", lab.addr.port());
    o.stage_timeout = Duration::from_secs(3);
    let res = run(&o).await;
    lab.stop();
    assert_connected(&res.report);
    assert!(
        res.report.server.starts_with("[::1]:"),
        "{}",
        res.report.server
    );
    let mut buf = Vec::new();
    rdprobe::capture::writer::write_pcapng(&res.trace, &res.labels, &mut buf).unwrap();
    let convs: Vec<_> =
        rdprobe::capture::reader::read_conversations(std::io::Cursor::new(buf), Default::default())
            .unwrap()
            .collect();
    let trace = convs.into_iter().next().unwrap().unwrap();
    assert!(trace.server.is_ipv6());
    assert_eq!(
        rdprobe::decode::decode(&trace).report.last_stage,
        Stage::Connected
    );
}
