//! The RD Gateway hop (issue 15): the lab's fake RD Gateway is a real gateway for the real client
//! (xfreerdp 2.11 `/g:`), `rdprobe probe --gateway` crosses it to the lab server and to xrdp, and
//! every gateway fault scenario gives the probe the right stage, verdict and diagnosis.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rdprobe::diagnose::{diagnose, FaultClass};
use rdprobe::gateway::client::{probe, GatewayOptions, Transport};
use rdprobe::lab::gateway::{spawn_gateway, GatewayConfig, GatewayHandle};
use rdprobe::lab::{LabHandle, LabLimits};
use rdprobe::probe::{Credentials, ProbeOptions};
use rdprobe::stage::{FailureKind, Stage, Verdict};

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The lab server and the lab gateway in front of it, both playing `name`.
fn gateway_to_lab(name: &str) -> (LabHandle, GatewayHandle) {
    let sc = rdprobe::scenario::builtin(name).expect("built-in scenario");
    let lab = rdprobe::lab::spawn_lab(loopback0(), sc.clone()).expect("lab");
    let gw = gateway_to(name, lab.addr);
    (lab, gw)
}

fn gateway_to(name: &str, target: SocketAddr) -> GatewayHandle {
    let mut sc = rdprobe::scenario::builtin(name).expect("built-in scenario");
    sc.link.read_timeout_ms = 5_000;
    spawn_gateway(
        loopback0(),
        GatewayConfig {
            scenario: sc,
            target,
            limits: LabLimits::default(),
        },
    )
    .expect("gateway")
}

fn creds() -> Credentials {
    Credentials {
        user: "user".into(),
        domain: None,
        password: "pass".into(),
    }
}

fn opts(target: &str) -> ProbeOptions {
    let mut o = ProbeOptions::new(target, 3389);
    o.stage_timeout = Duration::from_secs(2);
    o.deadline = Duration::from_secs(20);
    o.credentials = Some(creds());
    o
}

fn gw_opts(gw: &GatewayHandle, password: &str) -> GatewayOptions {
    let mut g = GatewayOptions::new("127.0.0.1", gw.addr.port());
    g.credentials = Some(Credentials {
        password: password.into(),
        ..creds()
    });
    g
}

/// The gateway's outcomes once `n` connections have ended (a relay ends after the client closes).
fn wait_outcomes(gw: &GatewayHandle, n: usize) -> Vec<rdprobe::lab::gateway::GatewayOutcome> {
    for _ in 0..100 {
        if gw.outcomes().len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    gw.outcomes()
}

fn stages(r: &rdprobe::report::ConnectionReport) -> Vec<Stage> {
    r.stages.iter().map(|s| s.stage).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_through_the_lab_gateway_reaches_connected_on_the_lab_server() {
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let res = probe(&opts("rdp01.corp.example"), &gw_opts(&gw, "pass")).await;
    let r = &res.report;
    assert!(r.verdict.is_ok(), "{}", rdprobe::report::render_text(r));
    assert_eq!(r.last_stage, Stage::Connected);
    let st = stages(r);
    assert_eq!(
        &st[..7],
        &[
            Stage::GwTcp,
            Stage::GwTls,
            Stage::GwHttp,
            Stage::GwAuth,
            Stage::GwTunnel,
            Stage::GwChannel,
            Stage::Tcp
        ]
    );
    assert_eq!(
        r.fact(Stage::GwHttp, "status"),
        Some(&serde_json::json!(401))
    );
    assert_eq!(
        r.fact(Stage::GwHttp, "www_authenticate"),
        Some(&serde_json::json!(["NTLM", "Basic"]))
    );
    assert_eq!(
        r.fact(Stage::GwAuth, "scheme"),
        Some(&serde_json::json!("NTLM"))
    );
    assert_eq!(
        r.fact(Stage::GwAuth, "status"),
        Some(&serde_json::json!(101))
    );
    assert_eq!(
        r.fact(Stage::GwTunnel, "tunnel_id"),
        Some(&serde_json::json!(1))
    );
    assert_eq!(
        r.fact(Stage::GwChannel, "name_form"),
        Some(&serde_json::json!("fqdn"))
    );
    // The inner RDP went through the channel: NLA with the lab's user succeeded.
    assert_eq!(
        r.fact(Stage::Credssp, "early_user_auth"),
        Some(&serde_json::json!("success"))
    );
    let out = wait_outcomes(&gw, 1);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].resources, ["rdp01.corp.example"]);
    assert_eq!(out[0].user.as_deref(), Some("user"));
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_authentication_at_the_gateway() {
    let sc = {
        let mut s = rdprobe::scenario::builtin("gw-healthy").unwrap();
        s.gateway.as_mut().unwrap().schemes = vec!["Basic".into()];
        s
    };
    let lab = rdprobe::lab::spawn_lab(loopback0(), sc.clone()).unwrap();
    let gw = spawn_gateway(
        loopback0(),
        GatewayConfig {
            scenario: sc,
            target: lab.addr,
            limits: LabLimits::default(),
        },
    )
    .unwrap();
    let mut o = opts("rdp01");
    o.stop_after = Some(Stage::GwChannel);
    let (ok, hop) = rdprobe::gateway::client::probe_with_capture(&o, &gw_opts(&gw, "pass")).await;
    let ok = ok.report;
    // Basic carries the password: its capture keeps no TLS secret.
    assert!(hop.expect("gateway trace").keylog.is_empty());
    assert_eq!(
        ok.fact(Stage::GwAuth, "scheme"),
        Some(&serde_json::json!("Basic"))
    );
    assert_eq!(ok.last_stage, Stage::GwChannel);
    assert!(matches!(ok.verdict.failure(), Some(FailureKind::Stopped)));
    let bad = probe(&o, &gw_opts(&gw, "wrong")).await.report;
    assert_eq!(bad.last_stage, Stage::GwAuth);
    assert!(matches!(
        bad.verdict.failure(),
        Some(FailureKind::HttpStatus { status: 401, .. })
    ));
    let d = diagnose(&bad);
    assert_eq!(d.fault_class, FaultClass::Credentials);
    assert_eq!(d.causes[0].id, "gw_wrong_credentials");
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_through_the_lab_gateway_reaches_connected_on_xrdp() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("xrdp (scripts/install-peers.sh)");
    let gw = gateway_to("gw-healthy", xrdp.addr());
    let res = probe(&opts("xrdp01"), &gw_opts(&gw, "pass")).await;
    let r = &res.report;
    assert!(r.verdict.is_ok(), "{}", rdprobe::report::render_text(r));
    assert_eq!(r.last_stage, Stage::Connected);
    assert_eq!(stages(r)[5], Stage::GwChannel);
    assert_eq!(
        r.fact(Stage::GwChannel, "name_form"),
        Some(&serde_json::json!("netbios"))
    );
}

// --- the legacy two-channel HTTP transport ---

fn http_opts(gw: &GatewayHandle) -> GatewayOptions {
    let mut g = gw_opts(gw, "pass");
    g.transport = Transport::Http;
    g
}

/// `--gateway-transport http` reaches connected through the lab gateway on the lab server and on
/// xrdp; the report names the transport and the address of each channel, and the gateway saw an
/// OUT channel that relayed and an IN channel that joined it.
#[tokio::test(flavor = "multi_thread")]
async fn probe_over_the_legacy_http_transport_reaches_connected() {
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let r = probe(&opts("rdp01.corp.example"), &http_opts(&gw))
        .await
        .report;
    assert!(r.verdict.is_ok(), "{}", rdprobe::report::render_text(&r));
    assert_eq!(r.last_stage, Stage::Connected);
    let j = |s, k| r.fact(s, k).cloned();
    assert_eq!(
        j(Stage::GwHttp, "transport"),
        Some(serde_json::json!("http"))
    );
    assert_eq!(
        j(Stage::GwAuth, "transport"),
        Some(serde_json::json!("http"))
    );
    assert_eq!(
        j(Stage::GwTunnel, "transport"),
        Some(serde_json::json!("http"))
    );
    assert_eq!(j(Stage::GwAuth, "scheme"), Some(serde_json::json!("NTLM")));
    assert_eq!(j(Stage::GwAuth, "status"), Some(serde_json::json!(200)));
    assert_eq!(j(Stage::GwAuth, "seed_bytes"), Some(serde_json::json!(10)));
    assert_eq!(j(Stage::GwAuth, "in_status"), Some(serde_json::json!(200)));
    let gw_addr = serde_json::json!(gw.addr.to_string());
    assert_eq!(j(Stage::GwAuth, "out_address"), Some(gw_addr.clone()));
    assert_eq!(j(Stage::GwAuth, "in_address"), Some(gw_addr));
    assert_eq!(
        r.fact(Stage::Credssp, "early_user_auth"),
        Some(&serde_json::json!("success"))
    );
    let out = wait_outcomes(&gw, 2);
    assert!(
        out.iter()
            .any(|o| o.step == "relay" && o.resources == ["rdp01.corp.example"]),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|o| o.step == "in_channel" && o.result.contains("joined")),
        "{out:?}"
    );
    // xrdp behind the gateway, over the same transport.
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("xrdp (scripts/install-peers.sh)");
    let gw2 = gateway_to("gw-healthy", xrdp.addr());
    let r = probe(&opts("xrdp01"), &http_opts(&gw2)).await.report;
    assert!(r.verdict.is_ok(), "{}", rdprobe::report::render_text(&r));
    assert_eq!(r.last_stage, Stage::Connected);
    assert_eq!(
        r.fact(Stage::GwTunnel, "transport"),
        Some(&serde_json::json!("http"))
    );
}

/// `auto` asks for WebSocket and takes the legacy transport from a gateway that answers the upgrade
/// with the legacy OUT channel; `websocket` alone stops there with the 200 and its diagnosis.
#[tokio::test(flavor = "multi_thread")]
async fn auto_falls_back_to_http_on_a_gateway_without_websocket() {
    let (_lab, gw) = gateway_to_lab("gw-http-only");
    let mut g = gw_opts(&gw, "pass");
    assert_eq!(g.transport, Transport::Auto);
    let r = probe(&opts("rdp01"), &g).await.report;
    assert!(r.verdict.is_ok(), "{}", rdprobe::report::render_text(&r));
    assert_eq!(
        r.fact(Stage::GwHttp, "transport"),
        Some(&serde_json::json!("websocket"))
    );
    assert_eq!(
        r.fact(Stage::GwTunnel, "transport"),
        Some(&serde_json::json!("http"))
    );
    g.transport = Transport::WebSocket;
    let r = probe(&opts("rdp01"), &g).await.report;
    assert_eq!(r.last_stage, Stage::GwAuth);
    assert!(matches!(
        r.verdict.failure(),
        Some(FailureKind::HttpStatus { status: 200, .. })
    ));
    assert_eq!(diagnose(&r).causes[0].id, "gw_websocket_refused");
    // A gateway without the legacy transport: `http` is refused with 501 before authentication.
    let sc = {
        let mut s = rdprobe::scenario::builtin("gw-healthy").unwrap();
        s.gateway.as_mut().unwrap().legacy_http = false;
        s
    };
    let gw3 = spawn_gateway(
        loopback0(),
        GatewayConfig {
            scenario: sc,
            target: _lab.addr,
            limits: LabLimits::default(),
        },
    )
    .unwrap();
    let r = probe(&opts("rdp01"), &http_opts(&gw3)).await.report;
    assert_eq!(r.last_stage, Stage::GwHttp);
    assert!(matches!(
        r.verdict.failure(),
        Some(FailureKind::HttpStatus { status: 501, .. })
    ));
}

/// The real client over the legacy transport: xfreerdp 2.11 `/gt:http,no-websockets` through the lab
/// gateway reaches the same end as directly, on the lab server and on xrdp; and `/gt:http` (WebSocket
/// first) falls back to the legacy transport on a gateway without WebSocket.
#[test]
fn xfreerdp_over_the_legacy_http_transport() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let (lab, gw) = gateway_to_lab("gw-healthy");
    let direct = xfreerdp_auth_only(
        lab.addr.port(),
        "user",
        "pass",
        &[],
        Duration::from_secs(30),
    )
    .expect("xfreerdp");
    assert_eq!(direct.code, Some(0), "{}", direct.output);
    let run = xfreerdp_via_gt(&gw, "pass", "/gt:http,no-websockets", &[]);
    assert_eq!(run.code, direct.code, "{}", run.output);
    let out = wait_outcomes(&gw, 2);
    assert!(
        out.iter()
            .any(|o| o.step == "relay" && o.resources == ["rdp01"]),
        "{out:?}"
    );
    assert!(out.iter().any(|o| o.step == "in_channel"), "{out:?}");
    let bad = xfreerdp_via_gt(&gw, "wrong", "/gt:http,no-websockets", &[]);
    assert_ne!(bad.code, Some(0), "{}", bad.output);
    // Falling back: WebSocket asked, the legacy transport answered.
    let (_lab2, gw2) = gateway_to_lab("gw-http-only");
    let run = xfreerdp_via(&gw2, "pass", &[]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(
        wait_outcomes(&gw2, 2)
            .iter()
            .any(|o| o.step == "in_channel"),
        "{:?}",
        gw2.outcomes()
    );
    // xrdp behind the gateway.
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("xrdp (scripts/install-peers.sh)");
    let direct = xfreerdp_auth_only(xrdp.port(), "user", "pass", &[], Duration::from_secs(30))
        .expect("xfreerdp");
    let gw3 = gateway_to("gw-healthy", xrdp.addr());
    let run = xfreerdp_via_gt(&gw3, "pass", "/gt:http,no-websockets", &[]);
    assert_eq!(run.code, direct.code, "{}", run.output);
    assert_eq!(run.code, Some(0), "{}", run.output);
}

/// Every gateway fault scenario: the stage it fails at, the verdict, the fault class and the first
/// cause of the diagnosis.
#[tokio::test(flavor = "multi_thread")]
async fn every_gateway_fault_scenario_is_diagnosed() {
    every_fault_over(Transport::Auto).await;
}

/// The same faults over the legacy HTTP transport (the upgrade refusal does not apply to it).
#[tokio::test(flavor = "multi_thread")]
async fn every_gateway_fault_scenario_is_diagnosed_over_http() {
    every_fault_over(Transport::Http).await;
}

async fn every_fault_over(transport: Transport) {
    use FaultClass as F;
    type Check = fn(&FailureKind) -> bool;
    let table: &[(&str, &str, Stage, Check, FaultClass, &str)] = &[
        (
            "gw-negotiate-only",
            "pass",
            Stage::GwAuth,
            |k| matches!(k, FailureKind::HttpStatus { status: 401, .. }),
            F::ClientConfiguration,
            "gw_auth_scheme_unsupported",
        ),
        (
            "gw-healthy",
            "wrong",
            Stage::GwAuth,
            |k| matches!(k, FailureKind::HttpStatus { status: 401, .. }),
            F::Credentials,
            "gw_wrong_credentials",
        ),
        (
            "gw-forbidden",
            "pass",
            Stage::GwHttp,
            |k| matches!(k, FailureKind::HttpStatus { status: 403, .. }),
            F::Policy,
            "gw_forbidden",
        ),
        (
            "gw-login-redirect",
            "pass",
            Stage::GwHttp,
            |k| {
                matches!(k, FailureKind::HttpStatus { status: 302, location: Some(l), .. }
                    if l.starts_with("https://login.corp.example/"))
            },
            F::ServerConfiguration,
            "gw_login_redirect",
        ),
        (
            "gw-websocket-refused",
            "pass",
            Stage::GwAuth,
            |k| matches!(k, FailureKind::HttpStatus { status: 200, .. }),
            F::ServerConfiguration,
            "gw_websocket_refused",
        ),
        (
            "gw-reset-after-ntlm",
            "pass",
            Stage::GwAuth,
            |k| matches!(k, FailureKind::Reset),
            F::ServerConfiguration,
            "gw_reset_after_auth",
        ),
        (
            "gw-tunnel-refused",
            "pass",
            Stage::GwTunnel,
            |k| matches!(k, FailureKind::GatewayError(h) if h.name() == "E_PROXY_NAP_ACCESSDENIED"),
            F::Policy,
            "gw_cap_denied",
        ),
        (
            "gw-rap-denied",
            "pass",
            Stage::GwChannel,
            |k| matches!(k, FailureKind::GatewayError(h) if h.code == 0x8007_59DA && h.name() == "E_PROXY_RAP_ACCESSDENIED"),
            F::Policy,
            "gw_rap_denied",
        ),
        (
            "gw-target-unreachable",
            "pass",
            Stage::GwChannel,
            |k| matches!(k, FailureKind::GatewayError(h) if h.name() == "E_PROXY_TS_CONNECTFAILED"),
            F::Network,
            "gw_target_unreachable",
        ),
        (
            "gw-slow-tunnel",
            "pass",
            Stage::GwTunnel,
            |k| matches!(k, FailureKind::TimedOut { .. }),
            F::ServerHealth,
            "gw_slow",
        ),
        (
            "gw-slow-channel",
            "pass",
            Stage::GwChannel,
            |k| matches!(k, FailureKind::TimedOut { .. }),
            F::Network,
            "gw_target_unreachable",
        ),
    ];
    for (name, password, stage, check, class, cause) in table {
        if transport == Transport::Http && *name == "gw-websocket-refused" {
            continue;
        }
        let (_lab, gw) = gateway_to_lab(name);
        let mut g = gw_opts(&gw, password);
        g.transport = transport;
        // `rdp01` is the NetBIOS form: gw-rap-denied lists it as denied.
        let r = probe(&opts("rdp01"), &g).await.report;
        if *stage > Stage::GwAuth {
            assert_eq!(
                r.fact(Stage::GwTunnel, "transport"),
                Some(&serde_json::json!(if transport == Transport::Http {
                    "http"
                } else {
                    "websocket"
                })),
                "{name}"
            );
        }
        let text = rdprobe::report::render_text(&r);
        assert_eq!(r.last_stage, *stage, "{name}: {text}");
        let kind = r.verdict.failure().expect("a failure");
        assert!(check(kind), "{name}: {kind:?}");
        assert!(
            matches!(r.verdict, Verdict::Failed { .. }),
            "{name}: {text}"
        );
        let d = diagnose(&r);
        assert_eq!(d.fault_class, *class, "{name}: {d:?}");
        assert_eq!(d.causes[0].id, *cause, "{name}: {d:?}");
        assert_ne!(rdprobe::report::exit_code(&r), 0, "{name}");
    }
    // The RAP compares names literally: the FQDN the policy lists passes where `rdp01` failed.
    let (_lab, gw) = gateway_to_lab("gw-rap-denied");
    let mut g = gw_opts(&gw, "pass");
    g.transport = transport;
    let r = probe(&opts("rdp01.corp.example"), &g).await.report;
    assert!(r.verdict.is_ok(), "{}", rdprobe::report::render_text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_gateway_certificate_is_reported_on_a_healthy_run() {
    let (_lab, gw) = gateway_to_lab("gw-expired-certificate");
    let r = probe(&opts("rdp01"), &gw_opts(&gw, "pass")).await.report;
    assert!(r.verdict.is_ok(), "{}", rdprobe::report::render_text(&r));
    assert_eq!(
        r.fact(Stage::GwTls, "cert_expired"),
        Some(&serde_json::json!(true))
    );
    let d = diagnose(&r);
    assert!(
        d.causes.iter().any(|c| c.id == "gw_tls_cert_expired"),
        "{d:?}"
    );
}

// --- the real client: xfreerdp 2.11 through the lab gateway ---

fn xfreerdp_via(gw: &GatewayHandle, gw_password: &str, extra: &[&str]) -> XfreerdpRun {
    xfreerdp_via_gt(gw, gw_password, "/gt:http", extra)
}

/// xfreerdp through the gateway with this `/gt:` (`/gt:http,no-websockets`: the legacy transport).
fn xfreerdp_via_gt(gw: &GatewayHandle, gw_password: &str, gt: &str, extra: &[&str]) -> XfreerdpRun {
    let g = format!("/g:127.0.0.1:{}", gw.addr.port());
    let gp = format!("/gp:{gw_password}");
    let mut args = vec![
        "/v:rdp01:3389",
        "/u:user",
        "/p:pass",
        g.as_str(),
        "/gu:user",
        gp.as_str(),
        gt,
        "/cert:ignore",
        "+auth-only",
    ];
    args.extend_from_slice(extra);
    xfreerdp(&args, Duration::from_secs(30)).expect("xfreerdp (scripts/install-peers.sh)")
}

#[test]
fn xfreerdp_connects_through_the_lab_gateway_to_the_lab_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let (lab, gw) = gateway_to_lab("gw-healthy");
    // Directly: exit 0.
    let direct = xfreerdp_auth_only(
        lab.addr.port(),
        "user",
        "pass",
        &[],
        Duration::from_secs(30),
    )
    .expect("xfreerdp");
    assert_eq!(direct.code, Some(0), "{}", direct.output);
    // Through the gateway: the same end.
    let run = xfreerdp_via(&gw, "pass", &[]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    let out = wait_outcomes(&gw, 1);
    assert!(
        out.iter().any(|o| o.step == "relay"
            && o.resources == ["rdp01"]
            && o.user.as_deref() == Some("user")),
        "{out:?}"
    );
    // A wrong gateway password is xfreerdp's own failure, at the gateway.
    let bad = xfreerdp_via(&gw, "wrong", &[]);
    assert_ne!(bad.code, Some(0), "{}", bad.output);
    assert!(bad.output.contains("ACCESS_DENIED"), "{}", bad.output);
}

#[test]
fn xfreerdp_connects_through_the_lab_gateway_to_xrdp() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("xrdp (scripts/install-peers.sh)");
    let direct = xfreerdp_auth_only(xrdp.port(), "user", "pass", &[], Duration::from_secs(30))
        .expect("xfreerdp");
    let gw = gateway_to("gw-healthy", xrdp.addr());
    let run = xfreerdp_via(&gw, "pass", &[]);
    assert_eq!(
        run.code, direct.code,
        "direct {:?}\n{}",
        direct.code, run.output
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
}

#[test]
fn xfreerdp_fails_on_each_gateway_fault() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    for name in [
        "gw-forbidden",
        "gw-login-redirect",
        "gw-websocket-refused",
        "gw-negotiate-only",
        "gw-reset-after-ntlm",
        "gw-tunnel-refused",
        "gw-rap-denied",
        "gw-target-unreachable",
    ] {
        let (_lab, gw) = gateway_to_lab(name);
        let run = xfreerdp_via(&gw, "pass", &[]);
        assert!(
            run.code.is_some_and(|c| c != 0),
            "{name}: {:?}\n{}",
            run.code,
            run.output
        );
    }
}

// --- the command line ---

/// Runs `rdprobe ARGS` with `env`, killed (by its PID) after `limit`. Returns (code, stdout, stderr).
fn rdprobe_cli(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String, String) {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdprobe"));
    cmd.args(args)
        .env_remove("RDPROBE_PASSWORD")
        .env_remove("RDPROBE_GATEWAY_PASSWORD")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = ProcessGuard::spawn("rdprobe", &mut cmd).expect("spawn rdprobe");
    let status = child.wait_timeout(limit);
    child.kill();
    (
        status.and_then(|s| s.code()),
        std::fs::read_to_string(out).unwrap_or_default(),
        std::fs::read_to_string(err).unwrap_or_default(),
    )
}

#[test]
fn cli_probe_through_the_gateway_json_exit_codes_and_secrets() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let g = format!("127.0.0.1:{}", gw.addr.port());
    // The gateway password comes from RDPROBE_GATEWAY_PASSWORD, the server's from RDPROBE_PASSWORD.
    let (code, out, err) = rdprobe_cli(
        &[
            "probe",
            "rdp01",
            "--gateway",
            &g,
            "--user",
            "user",
            "--json",
            "--timeout",
            "3s",
        ],
        &[
            ("RDPROBE_PASSWORD", "pass"),
            ("RDPROBE_GATEWAY_PASSWORD", "pass"),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["last_stage"], "connected");
    assert_eq!(v["stages"][0]["stage"], "gw_tcp");
    assert_eq!(v["stages"][5]["stage"], "gw_channel");
    assert_eq!(v["stages"][6]["stage"], "tcp");
    assert_eq!(v["stages"][4]["facts"]["transport"], "websocket");
    // The legacy transport from the command line.
    let (code, out, err) = rdprobe_cli(
        &[
            "probe",
            "rdp01",
            "--gateway",
            &g,
            "--gateway-transport",
            "http",
            "--user",
            "user",
            "--json",
            "--timeout",
            "3s",
        ],
        &[
            ("RDPROBE_PASSWORD", "pass"),
            ("RDPROBE_GATEWAY_PASSWORD", "pass"),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["last_stage"], "connected");
    assert_eq!(v["stages"][4]["stage"], "gw_tunnel");
    assert_eq!(v["stages"][4]["facts"]["transport"], "http");
    assert_eq!(v["stages"][3]["facts"]["in_address"], g.as_str());
    // A wrong gateway password alone: the gateway refuses (exit 5, auth), the server is not reached.
    let (code, out, err) = rdprobe_cli(
        &[
            "probe",
            "rdp01",
            "--gateway",
            &g,
            "--user",
            "user",
            "--json",
            "--timeout",
            "3s",
        ],
        &[
            ("RDPROBE_PASSWORD", "pass"),
            ("RDPROBE_GATEWAY_PASSWORD", "Secr3t-canary"),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(rdprobe::report::exit::AUTH), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["last_stage"], "gw_auth");
    assert_eq!(v["verdict"]["kind"], "http_status");
    assert_eq!(v["verdict"]["status"], 401);
    assert_eq!(v["diagnosis"]["causes"][0]["id"], "gw_wrong_credentials");
    assert!(!out.contains("Secr3t-canary") && !err.contains("Secr3t-canary"));
    // --stop-after a gateway stage needs --gateway.
    let (code, _, err) = rdprobe_cli(
        &["probe", "127.0.0.1:9", "--stop-after", "gw_tunnel"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn cli_lab_gateway_serves_and_refuses_remote_targets() {
    let (code, _, err) = rdprobe_cli(
        &[
            "lab",
            "--gateway-listen",
            "127.0.0.1:0",
            "--target",
            "192.0.2.1:3389",
        ],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--allow-remote"), "{err}");
    let (code, _, err) = rdprobe_cli(
        &["lab", "--gateway-listen", "0.0.0.0:0"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{err}");
}

/// A client that connects and says nothing, or sends an endless head, is closed at the deadline.
#[test]
fn the_lab_gateway_never_hangs_on_a_client() {
    use std::io::{Read, Write};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let mut sc = rdprobe::scenario::builtin("gw-healthy").unwrap();
    sc.link.read_timeout_ms = 300;
    let gw = spawn_gateway(
        loopback0(),
        GatewayConfig {
            scenario: sc,
            target: SocketAddr::from(([127, 0, 0, 1], 9)),
            limits: LabLimits::default(),
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut silent = std::net::TcpStream::connect(gw.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 16];
    let n = silent.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Not TLS at all: the handshake fails at once.
    let mut junk = std::net::TcpStream::connect(gw.addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = junk.write_all(&[b'A'; 4096]);
    let _ = junk.read(&mut b);
    let out = wait_outcomes(&gw, 2);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|o| o.step == "tls"), "{out:?}");
}

// --- enum --gateway ---

#[tokio::test(flavor = "multi_thread")]
async fn enum_gateway_reports_tls_schemes_and_transports() {
    use rdprobe::gateway::survey::survey;
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let s = survey("127.0.0.1", gw.addr.port(), Duration::from_secs(3))
        .await
        .expect("survey");
    assert!(s.tls.iter().all(|t| t.accepted), "{:?}", s.tls);
    assert_eq!(s.certificate["subject"], "CN=rdprobe-lab");
    assert_eq!(s.auth_schemes, ["NTLM", "Basic"]);
    let by = |t: &str| {
        s.transports
            .iter()
            .find(|a| a.transport == t)
            .unwrap()
            .clone()
    };
    assert_eq!(by("websocket").status, Some(401));
    assert_eq!(by("websocket").offered, Some(true));
    // The legacy HTTP transport answers (authentication first, as for WebSocket).
    assert_eq!(by("http").status, Some(401));
    assert_eq!(by("http").offered, Some(true));
    for rpc in ["rpc_in", "rpc_out"] {
        assert_eq!(by(rpc).status, Some(404));
        assert_eq!(by(rpc).meaning, "not offered");
        assert_eq!(by(rpc).offered, Some(false));
    }
    let text = rdprobe::gateway::survey::render(&s);
    assert!(
        text.contains("transports answering: websocket, http; not offered: rpc_in, rpc_out"),
        "{text}"
    );
    // A gateway without the legacy transport: 501 before authentication, "not offered".
    let sc = {
        let mut s = rdprobe::scenario::builtin("gw-healthy").unwrap();
        s.gateway.as_mut().unwrap().legacy_http = false;
        s
    };
    let gw2 = spawn_gateway(
        loopback0(),
        GatewayConfig {
            scenario: sc,
            target: loopback0(),
            limits: LabLimits::default(),
        },
    )
    .unwrap();
    let s2 = survey("127.0.0.1", gw2.addr.port(), Duration::from_secs(3))
        .await
        .expect("survey");
    let http = s2
        .transports
        .iter()
        .find(|a| a.transport == "http")
        .unwrap();
    assert_eq!(
        (http.status, http.meaning.as_str()),
        (Some(501), "not offered")
    );
    assert_eq!(http.offered, Some(false));
    let ws = s2
        .transports
        .iter()
        .find(|a| a.transport == "websocket")
        .unwrap();
    assert_eq!(ws.offered, Some(true));
    // A reverse proxy's login redirect shows with its Location on every transport.
    let (_lab, gw) = gateway_to_lab("gw-login-redirect");
    let s = survey("127.0.0.1", gw.addr.port(), Duration::from_secs(3))
        .await
        .expect("survey");
    let ws = s
        .transports
        .iter()
        .find(|a| a.transport == "websocket")
        .unwrap();
    assert_eq!(ws.status, Some(302));
    assert_eq!(ws.meaning, "redirected");
    assert!(ws
        .location
        .as_deref()
        .unwrap()
        .starts_with("https://login.corp.example/"));
    assert!(s.auth_schemes.is_empty());
}

// --- hostile or wrong gateways ---

/// `--gateway` pointed at an RDP server (no HTTPS there): the hop fails at gw_tls, bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_that_is_an_rdp_server_fails_at_gw_tls() {
    let lab = rdprobe::lab::spawn_lab(
        loopback0(),
        rdprobe::scenario::builtin("healthy-nla").unwrap(),
    )
    .unwrap();
    let mut g = GatewayOptions::new("127.0.0.1", lab.addr.port());
    g.credentials = Some(creds());
    let started = std::time::Instant::now();
    let r = probe(&opts("rdp01"), &g).await.report;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        r.last_stage,
        Stage::GwTls,
        "{}",
        rdprobe::report::render_text(&r)
    );
    assert!(!r.verdict.is_ok());
    let d = diagnose(&r);
    assert!(d.causes.iter().any(|c| c.id == "gw_tls_failed"), "{d:?}");
}

/// A "gateway" that answers HTTPS with an endless header: the probe stops at gw_http within its
/// deadline and bound, with a protocol error, not a hang or an unbounded buffer.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_http_head_is_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = rdprobe::lab::tls::certificate(rdprobe::scenario::CertificateKind::SelfSigned, "gw")
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(m.cert_der.clone())],
        rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
            m.key_pkcs8_der.clone(),
        )),
    )
    .unwrap();
    let acc = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let l = tokio::net::TcpListener::bind(loopback0()).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut s = acc.accept(s).await.unwrap();
        let mut b = [0u8; 4096];
        let _ = s.read(&mut b).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let line = [b'X'; 1024];
        for _ in 0..200 {
            if s.write_all(&line).await.is_err() {
                break;
            }
        }
    });
    let mut g = GatewayOptions::new("127.0.0.1", port);
    g.credentials = Some(creds());
    let r = probe(&opts("rdp01"), &g).await.report;
    assert_eq!(
        r.last_stage,
        Stage::GwHttp,
        "{}",
        rdprobe::report::render_text(&r)
    );
    assert!(
        matches!(r.verdict.failure(), Some(FailureKind::ProtocolError { what, .. }) if what.contains("not HTTP")),
        "{:?}",
        r.verdict
    );
    server.abort();
}

// --- captures: the inner RDP of the channel ---

/// The capture of a probe through the gateway holds the channel's RDP; analyzing it gives the same
/// inner stages and verdicts as live (the gateway stages are live-only for now).
#[tokio::test(flavor = "multi_thread")]
async fn the_inner_capture_analyzes_like_the_live_inner_stages() {
    use rdprobe::capture::reader::{read_conversations, ReaderOptions};
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let res = probe(&opts("rdp01"), &gw_opts(&gw, "pass")).await;
    let mut buf = Vec::new();
    rdprobe::capture::writer::write_pcapng(&res.trace, &res.labels, &mut buf).expect("pcapng");
    let convs: Vec<_> = read_conversations(std::io::Cursor::new(buf), ReaderOptions::default())
        .expect("open capture")
        .collect();
    assert_eq!(convs.len(), 1);
    let offline = rdprobe::decode::decode(&convs.into_iter().next().unwrap().unwrap()).report;
    let inner = |r: &rdprobe::report::ConnectionReport| -> Vec<(Stage, bool)> {
        r.stages
            .iter()
            .filter(|s| !s.stage.is_gateway())
            .map(|s| (s.stage, s.verdict.is_ok()))
            .collect()
    };
    assert_eq!(inner(&res.report), inner(&offline));
    assert_eq!(res.report.last_stage, offline.last_stage);
    assert_eq!(res.report.verdict, offline.verdict);
}

/// `--gateway-pcap`: the client↔gateway conversation with its TLS secrets; tshark decrypts it and
/// sees the 401 / 401 / 101 of the NTLM rounds and the upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_capture_decrypts_in_tshark() {
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let (res, hop) =
        rdprobe::gateway::client::probe_with_capture(&opts("rdp01"), &gw_opts(&gw, "pass")).await;
    assert!(res.report.verdict.is_ok());
    let hop = hop.expect("gateway trace");
    assert!(!hop.keylog.is_empty(), "TLS secrets recorded");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("hop.pcapng");
    let f = std::fs::File::create(&pcap).unwrap();
    rdprobe::capture::writer::write_pcapng(&hop, &[], std::io::BufWriter::new(f)).unwrap();
    let decode = format!("tcp.port=={},tls", gw.addr.port());
    let rows = tshark_fields(
        &pcap,
        &["-d", &decode, "-Y", "http.response"],
        &["http.response.code"],
    );
    let codes: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(codes, ["401", "401", "101"], "{rows:?}");
}

#[test]
fn explain_knows_the_gateway_hresults() {
    for (text, name) in [
        ("E_PROXY_RAP_ACCESSDENIED", "E_PROXY_RAP_ACCESSDENIED"),
        ("0x800759DD", "E_PROXY_TS_CONNECTFAILED"),
        ("0x59DB", "E_PROXY_NAP_ACCESSDENIED"),
    ] {
        let ex = rdprobe::diagnose::explain_str(text, None).expect("readable");
        let e = ex
            .iter()
            .find(|e| e.kind == rdprobe::diagnose::KIND_GATEWAY)
            .unwrap_or_else(|| panic!("{text}: {ex:?}"));
        assert_eq!(e.name, name);
        assert!(e.stage.is_gateway());
    }
}
