//! The design invariant: the verdict of a live probe equals `analyze` of the capture that probe wrote.
//! Held for every built-in lab scenario and for the real servers of the probe suite.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rdprobe::capture::reader::{read_conversations, ReaderOptions};
use rdprobe::probe::{Credentials, ProbeOptions, ProbeResult};
use rdprobe::report::ConnectionReport;
use rdprobe::stage::{Stage, Verdict};

fn verdict_key(v: &Verdict) -> String {
    match v {
        Verdict::Ok => "ok".into(),
        Verdict::Failed { kind, by } => format!("{}/{by}", kind.name()),
    }
}

fn shape(r: &ConnectionReport) -> (Vec<(Stage, String)>, Stage, String) {
    (
        r.stages
            .iter()
            .map(|s| (s.stage, verdict_key(&s.verdict)))
            .collect(),
        r.last_stage,
        verdict_key(&r.verdict),
    )
}

/// Writes the probe's capture, reads it back with the capture reader and decodes it.
fn analyze_written(res: &ProbeResult) -> ConnectionReport {
    let mut buf = Vec::new();
    rdprobe::capture::writer::write_pcapng(&res.trace, &res.labels, &mut buf)
        .expect("write pcapng");
    let convs: Vec<_> = read_conversations(std::io::Cursor::new(buf), ReaderOptions::default())
        .expect("open capture")
        .collect();
    assert_eq!(convs.len(), 1, "one conversation in the probe's capture");
    let trace = convs.into_iter().next().unwrap().expect("conversation");
    rdprobe::decode::decode(&trace).report
}

fn check(name: &str, res: &ProbeResult) {
    let live = &res.report;
    let offline = analyze_written(res);
    assert_eq!(
        shape(live),
        shape(&offline),
        "{name}: live and analyzed verdicts differ\nLIVE:\n{}\nANALYZED:\n{}",
        rdprobe::report::render_text(live),
        rdprobe::report::render_text(&offline)
    );
}

fn opts(addr: SocketAddr) -> ProbeOptions {
    let mut o = ProbeOptions::new(addr.ip().to_string(), addr.port());
    o.stage_timeout = Duration::from_millis(1500);
    o.deadline = Duration::from_secs(20);
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn every_builtin_lab_scenario() {
    let mut checked = 0;
    for (name, _) in rdprobe::scenario::builtin_names() {
        let sc = rdprobe::scenario::builtin(name).unwrap();
        let lab = rdprobe::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), sc.clone())
            .expect("lab");
        let mut o = opts(lab.addr);
        if let Some((user, password)) = rdprobe::lab::demo_credentials(&sc) {
            o.credentials = Some(Credentials {
                user,
                domain: None,
                password,
            });
        }
        let res = rdprobe::probe::probe(&o).await;
        lab.stop();
        check(name, &res);
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} scenarios");
}

#[tokio::test(flavor = "multi_thread")]
async fn real_servers() {
    for (name, xo) in [
        ("xrdp negotiate", XrdpOpts::negotiate()),
        ("xrdp tls10", XrdpOpts::tls10_only()),
        ("xrdp expired", XrdpOpts::expired_cert()),
        ("xrdp unreadable cert", XrdpOpts::unreadable_cert()),
        ("xrdp rdp", XrdpOpts::rdp("high")),
    ] {
        let xrdp = Xrdp::start(xo).expect("start xrdp");
        let res = rdprobe::probe::probe(&opts(xrdp.addr())).await;
        check(name, &res);
    }
    let shadow =
        FreerdpShadow::start("nla", &[("alice", "Secret123!")]).expect("start freerdp-shadow");
    for password in ["Secret123!", "wrong"] {
        let mut o = opts(SocketAddr::from(([127, 0, 0, 1], shadow.port())));
        o.credentials = Some(Credentials {
            user: "alice".into(),
            domain: None,
            password: password.into(),
        });
        let res = rdprobe::probe::probe(&o).await;
        check(
            &format!("freerdp-shadow nla password={}", password.len()),
            &res,
        );
    }
    let srv = CredsspErrorServer::logon_failure();
    let mut o = opts(srv.addr());
    o.credentials = Some(Credentials {
        user: "bob".into(),
        domain: None,
        password: "x".into(),
    });
    check("credssp errorCode", &rdprobe::probe::probe(&o).await);
    for bad in [
        BadServer::silent(),
        BadServer::garbage(),
        BadServer::reset_after_client_hello(),
    ] {
        let res = rdprobe::probe::probe(&opts(bad.addr())).await;
        check("bad server", &res);
    }
}
