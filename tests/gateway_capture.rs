//! Live = offline across the RD Gateway hop (issue 15): for every lab gateway scenario, the probe's
//! capture of the client↔gateway conversation, read back and decoded (HTTP, WebSocket, MS-TSGU and
//! the inner RDP in the channel), gives the stages, verdicts and facts the live probe gave; a real
//! client's capture without secrets gives the gateway's TCP and TLS and says the rest is encrypted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rdprobe::capture::reader::{read_conversations, ReaderOptions};
use rdprobe::gateway::client::{
    probe_with_capture, probe_with_captures, GatewayOptions, Transport,
};
use rdprobe::lab::gateway::{spawn_gateway, GatewayConfig, GatewayHandle};
use rdprobe::lab::{LabHandle, LabLimits};
use rdprobe::probe::{Credentials, ProbeOptions};
use rdprobe::report::ConnectionReport;
use rdprobe::stage::{FailureKind, Stage, Verdict};
use serde_json::{json, Value};

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn gateway_to_lab(name: &str) -> (LabHandle, GatewayHandle) {
    let sc = rdprobe::scenario::builtin(name).expect("built-in scenario");
    let lab = rdprobe::lab::spawn_lab(loopback0(), sc.clone()).expect("lab");
    let mut gsc = sc;
    gsc.link.read_timeout_ms = 5_000;
    let gw = spawn_gateway(
        loopback0(),
        GatewayConfig {
            scenario: gsc,
            target: lab.addr,
            limits: LabLimits::default(),
        },
    )
    .expect("gateway");
    (lab, gw)
}

fn creds(password: &str) -> Credentials {
    Credentials {
        user: "user".into(),
        domain: None,
        password: password.into(),
    }
}

fn opts(target: &str, stop_after: Option<Stage>) -> ProbeOptions {
    let mut o = ProbeOptions::new(target, 3389);
    o.stage_timeout = Duration::from_secs(2);
    o.deadline = Duration::from_secs(20);
    o.credentials = Some(creds("pass"));
    o.stop_after = stop_after;
    o
}

fn gw_opts(gw: &GatewayHandle, password: &str) -> GatewayOptions {
    let mut g = GatewayOptions::new("127.0.0.1", gw.addr.port());
    g.credentials = Some(creds(password));
    g
}

/// The facts compared per gateway stage (what a user reads to tell one gateway failure from another).
fn compared(stage: Stage) -> &'static [&'static str] {
    match stage {
        Stage::GwTcp => &["address"],
        Stage::GwTls => &["version", "cipher_suite", "cert_subject", "cert_expired"],
        Stage::GwHttp => &[
            "transport",
            "method",
            "status",
            "reason",
            "www_authenticate",
            "location",
            "server_header",
        ],
        // (`user`: offline only once an NTLM AUTHENTICATE or Basic token names it; checked below.)
        Stage::GwAuth => &["scheme", "status", "www_authenticate", "credentials_sent"],
        Stage::GwTunnel => &[
            "hresult",
            "hresult_name",
            "step",
            "tunnel_id",
            "capabilities",
            "server_version",
            "tunnel_policy",
            "waiting_for",
        ],
        Stage::GwChannel => &[
            "target",
            "port",
            "name_form",
            "hresult_name",
            "channel_id",
            "waiting_for",
        ],
        Stage::Tcp => &["via_gateway", "server"],
        Stage::Credssp => &["early_user_auth"],
        _ => &[],
    }
}

/// A verdict without what depends on timing (how long a timeout waited).
fn verdict_key(v: &Verdict) -> Value {
    match v {
        Verdict::Ok => json!("ok"),
        Verdict::Failed { kind, by } => {
            let detail = match kind {
                FailureKind::HttpStatus {
                    status, location, ..
                } => json!({ "status": status, "location": location }),
                FailureKind::GatewayError(h) => json!({ "code": h.code, "name": h.name() }),
                FailureKind::TimedOut { waiting_for, .. } => json!({ "waiting_for": waiting_for }),
                FailureKind::AuthFailure(a) => json!({ "ntstatus": a.ntstatus }),
                _ => Value::Null,
            };
            json!({ "kind": kind.name(), "by": by, "detail": detail })
        }
    }
}

/// What must be equal live and offline: each stage with its verdict and compared facts, the last
/// stage, the verdict and who ended the connection.
fn key(r: &ConnectionReport) -> Value {
    let stages: Vec<Value> = r
        .stages
        .iter()
        .map(|s| {
            let facts: serde_json::Map<String, Value> = compared(s.stage)
                .iter()
                .filter_map(|k| s.facts.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect();
            json!({ "stage": s.stage, "verdict": verdict_key(&s.verdict), "facts": facts })
        })
        .collect();
    json!({
        "stages": stages,
        "last_stage": r.last_stage,
        "verdict": verdict_key(&r.verdict),
        "ended_by": r.ended_by,
    })
}

/// What `rdprobe analyze` does: the capture's conversations, the legacy transport's two channels
/// paired into one, each decoded.
fn analyze_bytes(pcap: &[u8]) -> Vec<ConnectionReport> {
    analyze_with(pcap, ReaderOptions::default())
}

fn analyze_with(pcap: &[u8], opts: ReaderOptions) -> Vec<ConnectionReport> {
    let convs =
        read_conversations(std::io::Cursor::new(pcap.to_vec()), opts).expect("open capture");
    rdprobe::decode::gateway::LegacyPairs::new(convs)
        .map(|t| rdprobe::decode::decode_report(&t.expect("conversation")))
        .collect()
}

/// Probes through the lab gateway playing `name` (WebSocket asked for, as by default), writes the
/// gateway capture, analyzes it.
async fn live_and_offline(
    name: &str,
    target: &str,
    password: &str,
    stop_after: Option<Stage>,
) -> (ConnectionReport, ConnectionReport) {
    live_and_offline_over(name, target, password, stop_after, Transport::Auto).await
}

/// [`live_and_offline`] over a chosen transport: the legacy one's capture holds the OUT and the IN
/// channel as two TCP conversations (as `probe --gateway --pcap` writes them), which analyze pairs
/// into one report.
async fn live_and_offline_over(
    name: &str,
    target: &str,
    password: &str,
    stop_after: Option<Stage>,
    transport: Transport,
) -> (ConnectionReport, ConnectionReport) {
    let (_lab, gw) = gateway_to_lab(name);
    let mut g = gw_opts(&gw, password);
    g.transport = transport;
    let (res, captures) = probe_with_captures(&opts(target, stop_after), &g).await;
    assert!(!captures.is_empty(), "{name}: no gateway capture");
    let all: Vec<(&rdprobe::trace::Trace, &[String])> =
        captures.iter().map(|t| (t, &[][..])).collect();
    let mut pcap = Vec::new();
    rdprobe::capture::writer::write_pcapng_many(&all, &mut pcap).expect("pcapng");
    let mut offline = analyze_bytes(&pcap);
    assert_eq!(
        offline.len(),
        1,
        "{name} ({transport:?}): one gateway connection in the capture ({} conversations)",
        captures.len()
    );
    (res.report, offline.remove(0))
}

fn assert_same(what: &str, live: &ConnectionReport, offline: &ConnectionReport) {
    let (l, o) = (key(live), key(offline));
    assert_eq!(
        l,
        o,
        "{what}: live and analyze differ\nlive:\n{}\nanalyze:\n{}",
        rdprobe::report::render_text(live),
        rdprobe::report::render_text(offline)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_gateway_scenario_analyzes_like_the_live_probe() {
    let names: Vec<&str> = rdprobe::scenario::builtin_names()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("gw-"))
        .collect();
    assert!(names.len() >= 12, "{names:?}");
    // Every scenario over both transports: WebSocket asked for (a gateway without it, as
    // gw-http-only, answers with the legacy transport's OUT channel) and the legacy HTTP transport
    // (its OUT and IN channels are two TCP conversations, paired by analyze).
    let mut failed_at = Vec::new();
    let mut legacy_connected = 0;
    for transport in [Transport::Auto, Transport::Http] {
        for name in &names {
            // `rdp01` (NetBIOS form) is what gw-rap-denied denies.
            let (live, offline) =
                live_and_offline_over(name, "rdp01", "pass", None, transport).await;
            assert_same(&format!("{name} ({transport:?})"), &live, &offline);
            let http = live.fact(Stage::GwAuth, "transport") == Some(&json!("http"));
            if http && live.verdict.is_ok() {
                legacy_connected += 1;
            }
            failed_at.push((name.to_string(), live.last_stage));
        }
    }
    assert!(
        legacy_connected >= 2,
        "the legacy transport reached connected (gw-http-only, and --gateway-transport http)"
    );
    // The runs covered every gateway stage's failure and a connected session.
    for st in [
        Stage::GwHttp,
        Stage::GwAuth,
        Stage::GwTunnel,
        Stage::GwChannel,
        Stage::Connected,
    ] {
        assert!(
            failed_at.iter().any(|(_, s)| *s == st),
            "{st}: {failed_at:?}"
        );
    }
    // A wrong gateway password: the last NTLM round's 401.
    let (live, offline) = live_and_offline("gw-healthy", "rdp01", "wrong", None).await;
    assert!(matches!(
        live.verdict.failure(),
        Some(FailureKind::HttpStatus { status: 401, .. })
    ));
    assert_same("gw-healthy with a wrong password", &live, &offline);
    // The inner RDP came out of the channel: NLA with the lab's user, offline too.
    let (live, offline) = live_and_offline("gw-healthy", "rdp01.corp.example", "pass", None).await;
    assert!(live.verdict.is_ok());
    assert_eq!(
        offline.fact(Stage::Credssp, "early_user_auth"),
        Some(&json!("success")),
        "{}",
        rdprobe::report::render_text(&offline)
    );
    assert_eq!(
        offline.fact(Stage::GwAuth, "user"),
        Some(&json!("user")),
        "the NTLM AUTHENTICATE names the user"
    );
    assert_same("gw-healthy to the FQDN", &live, &offline);
}

#[tokio::test(flavor = "multi_thread")]
async fn stops_on_purpose_at_each_gateway_stage_analyze_as_stops() {
    // (A stop right after the 401 is, on the wire, a client that did not authenticate: analyze says
    // so at gw_auth; not compared here.)
    for transport in [Transport::Auto, Transport::Http] {
        for st in [
            Stage::GwTls,
            Stage::GwAuth,
            Stage::GwTunnel,
            Stage::GwChannel,
        ] {
            let (live, offline) =
                live_and_offline_over("gw-healthy", "rdp01", "pass", Some(st), transport).await;
            assert_eq!(live.last_stage, st);
            assert!(matches!(live.verdict.failure(), Some(FailureKind::Stopped)));
            assert_same(
                &format!("--stop-after {st} ({transport:?})"),
                &live,
                &offline,
            );
        }
    }
}

/// The CLI: `probe --gateway --pcap F` writes one capture that `analyze` turns into the same report.
#[test]
fn cli_probe_gateway_pcap_then_analyze() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let (_lab, gw) = gateway_to_lab("gw-rap-denied");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("through-gateway.pcapng");
    let g = format!("127.0.0.1:{}", gw.addr.port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args([
            "probe",
            "rdp01",
            "--gateway",
            &g,
            "--user",
            "user",
            "--json",
        ])
        .args(["--timeout", "3s", "--pcap"])
        .arg(&pcap)
        .env("RDPROBE_PASSWORD", "pass")
        .output()
        .expect("rdprobe");
    let live: Value = serde_json::from_slice(&out.stdout).expect("probe json");
    assert_eq!(live["last_stage"], "gw_channel");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .args(["analyze", "--json"])
        .arg(&pcap)
        .output()
        .expect("rdprobe analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let offline: Value = serde_json::from_str(text.lines().next().unwrap_or("")).expect("json");
    for k in ["last_stage", "verdict", "ended_by"] {
        assert_eq!(live[k], offline[k], "{k}");
    }
    assert_eq!(offline["verdict"]["name"], "E_PROXY_RAP_ACCESSDENIED");
    assert_eq!(
        offline["diagnosis"]["causes"][0]["id"],
        live["diagnosis"]["causes"][0]["id"]
    );
    assert!(!std::fs::read(&pcap)
        .unwrap()
        .windows(4)
        .any(|w| w == b"pass"));
    // The scenario a replay would serve: the RAP denies the name that was sent.
    let toml = dir.path().join("replay.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .arg("replay")
        .arg(&pcap)
        .args(["--as-server", "--emit-scenario"])
        .arg(&toml)
        .output()
        .expect("rdprobe replay");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let sc = rdprobe::scenario::Scenario::from_toml(&std::fs::read_to_string(&toml).unwrap())
        .expect("the emitted scenario loads");
    assert_eq!(sc.gateway.expect("[gateway]").rap_deny, ["rdp01"]);
    // Driving the captured client again is for RDP servers, not for a gateway: a usage error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
        .arg("replay")
        .arg(&pcap)
        .args(["--as-client", "--target", "127.0.0.1:9"])
        .output()
        .expect("rdprobe replay");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// xfreerdp (`+auth-only`, to `rdp01`) through the gateway on `gw_port` with `/gt:{transport}`,
/// captured on loopback by dumpcap into `pcap`: the run and the capture's bytes. dumpcap is this
/// test's own child, stopped through its guard (also when the run fails).
fn xfreerdp_captured(
    gw_port: u16,
    transport: &str,
    pcap: &std::path::Path,
) -> (XfreerdpRun, Vec<u8>) {
    let filter = format!("tcp port {gw_port}");
    let mut cap = ProcessGuard::spawn(
        "dumpcap",
        std::process::Command::new("dumpcap")
            .args(["-q", "-i", "lo", "-f", &filter, "-w"])
            .arg(pcap)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .expect("dumpcap (scripts/install-peers.sh installs tshark)");
    std::thread::sleep(Duration::from_millis(1500));
    let g = format!("/g:127.0.0.1:{gw_port}");
    let gt = format!("/gt:{transport}");
    let run = xfreerdp(
        &[
            "/v:rdp01:3389",
            "/u:user",
            "/p:pass",
            g.as_str(),
            "/gu:user",
            "/gp:pass",
            gt.as_str(),
            "/cert:ignore",
            "+auth-only",
        ],
        Duration::from_secs(30),
    )
    .expect("xfreerdp (scripts/install-peers.sh)");
    std::thread::sleep(Duration::from_millis(800));
    cap.kill();
    let bytes = std::fs::read(pcap).expect("dumpcap wrote no capture (apt-get install tshark)");
    (run, bytes)
}

/// xfreerdp through the lab gateway, captured on loopback by dumpcap (no TLS secrets): analyze
/// reports the gateway's TCP and TLS and says the rest is encrypted, without panicking.
#[test]
fn a_real_clients_gateway_capture_without_secrets() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let dir = tempfile::tempdir().unwrap();
    let port = gw.addr.port();
    let (run, bytes) = xfreerdp_captured(port, "http", &dir.path().join("xfreerdp-gateway.pcapng"));
    // Without secrets, the lab's port is no gateway port unless named: not decoded by default.
    assert!(analyze_bytes(&bytes).is_empty());
    let opts = ReaderOptions {
        gateway_ports: vec![port],
        ..ReaderOptions::default()
    };
    let reports: Vec<ConnectionReport> = read_conversations(std::io::Cursor::new(bytes), opts)
        .expect("capture")
        .map(|t| rdprobe::decode::decode_report(&t.expect("conversation")))
        .collect();
    assert!(!reports.is_empty(), "xfreerdp: {run:?}");
    for r in &reports {
        let text = rdprobe::report::render_text(r);
        assert_eq!(r.stages[0].stage, Stage::GwTcp, "{text}");
        assert!(r.stages[0].verdict.is_ok(), "{text}");
        let tls = r.stage(Stage::GwTls).expect("gw_tls");
        assert!(tls.verdict.is_ok(), "{text}");
        assert!(tls.facts.contains_key("version"), "{text}");
        assert_eq!(tls.facts.get("encrypted"), Some(&json!(true)), "{text}");
        assert!(r.stage(Stage::GwHttp).is_none(), "{text}");
        assert!(r.notes.iter().any(|n| n.contains("encrypted")), "{text}");
    }
}

/// xfreerdp over the legacy HTTP transport (`/gt:http,no-websockets`) through the lab gateway (its
/// own process, writing its TLS secrets to $SSLKEYLOGFILE), captured on loopback by dumpcap: with
/// the key log, analyze pairs the OUT and IN conversations into one connection and decodes the
/// tunnel from them (the OUT channel's 200 and seed, the IN channel's chunks) to the open channel
/// and the inner RDP; without it, both conversations stay encrypted beyond gw_tls.
#[test]
fn a_real_clients_legacy_transport_capture_pairs_both_channels() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("lab-keys.log");
    let (gw_port, lab_port) = (free_port(), free_port());
    let mut lab = ProcessGuard::spawn(
        "rdprobe lab",
        std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
            .args(["lab", "--scenario", "gw-healthy", "--listen"])
            .arg(format!("127.0.0.1:{lab_port}"))
            .arg("--gateway-listen")
            .arg(format!("127.0.0.1:{gw_port}"))
            .env("SSLKEYLOGFILE", &keys)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .expect("spawn rdprobe lab");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            port_accepts(gw_port).then_some(())
        })
        .is_some(),
        "the lab gateway listens"
    );
    let (run, bytes) = xfreerdp_captured(
        gw_port,
        "http,no-websockets",
        &dir.path().join("xfreerdp-legacy.pcapng"),
    );
    // The lab is this test's own child: stopped through its handle.
    lab.kill();
    assert_eq!(
        run.code,
        Some(0),
        "xfreerdp through the lab gateway: {}",
        run.output
    );
    let keylog = rdprobe::capture::tlsdecrypt::KeyLog::parse(
        &std::fs::read_to_string(&keys).expect("the lab wrote its TLS secrets"),
    );
    // Without the key log: two encrypted conversations (nothing tells the channels apart).
    let opts = ReaderOptions {
        gateway_ports: vec![gw_port],
        ..ReaderOptions::default()
    };
    let plain = analyze_with(&bytes, opts.clone());
    assert_eq!(plain.len(), 2, "the OUT and the IN channel's conversations");
    for r in &plain {
        assert_eq!(r.fact(Stage::GwTls, "encrypted"), Some(&json!(true)));
    }
    // With it: one connection, the legacy transport's tunnel decoded from both channels.
    let reports = analyze_with(
        &bytes,
        ReaderOptions {
            keylog: Some(keylog),
            ..opts
        },
    );
    assert_eq!(
        reports.len(),
        1,
        "the two channels paired into one connection"
    );
    let r = &reports[0];
    let text = rdprobe::report::render_text(r);
    for st in [
        Stage::GwTcp,
        Stage::GwTls,
        Stage::GwHttp,
        Stage::GwAuth,
        Stage::GwTunnel,
        Stage::GwChannel,
    ] {
        let s = r
            .stage(st)
            .unwrap_or_else(|| panic!("{st} missing:\n{text}"));
        assert!(s.verdict.is_ok(), "{st}:\n{text}");
    }
    assert_eq!(
        r.fact(Stage::GwHttp, "method"),
        Some(&json!("RDG_OUT_DATA")),
        "{text}"
    );
    assert_eq!(r.fact(Stage::GwAuth, "status"), Some(&json!(200)), "{text}");
    assert_eq!(
        r.fact(Stage::GwAuth, "transport"),
        Some(&json!("http")),
        "{text}"
    );
    assert_eq!(
        r.fact(Stage::GwAuth, "in_status"),
        Some(&json!(200)),
        "{text}"
    );
    assert_eq!(
        r.fact(Stage::GwChannel, "target"),
        Some(&json!("rdp01")),
        "{text}"
    );
    // The inner RDP came out of the tunnel (the lab's TLS secrets decrypt it too): NLA and the
    // whole connection sequence (2.11's +auth-only runs it to the end).
    for st in [Stage::X224, Stage::Tls, Stage::Credssp, Stage::Mcs] {
        assert!(
            r.stage(st).is_some_and(|s| s.verdict.is_ok()),
            "{st}:\n{text}"
        );
    }
    assert_eq!(r.last_stage, Stage::Connected, "{text}");
    assert!(r.verdict.is_ok(), "{text}");
}

/// `replay --as-server` of a gateway capture serves the recorded gateway's fault: the probe through
/// the replayed gateway meets the same stage and verdict as through the original, for each fault
/// (401 with Negotiate only, 403, 302, tunnel refused, RAP denied, target unreachable, reset).
#[test]
fn replayed_gateway_captures_fail_the_same_way() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "gw-negotiate-only",
        "gw-forbidden",
        "gw-login-redirect",
        "gw-websocket-refused",
        "gw-reset-after-ntlm",
        "gw-tunnel-refused",
        "gw-rap-denied",
        "gw-target-unreachable",
    ] {
        let (live, hop) = rt.block_on(async {
            let (_lab, gw) = gateway_to_lab(name);
            let (res, hop) = probe_with_capture(&opts("rdp01", None), &gw_opts(&gw, "pass")).await;
            (res.report, hop.expect("gateway capture"))
        });
        let pcap = dir.path().join(format!("{name}.pcapng"));
        let f = std::fs::File::create(&pcap).unwrap();
        rdprobe::capture::writer::write_pcapng(&hop, &[], std::io::BufWriter::new(f)).unwrap();
        let port = free_port();
        let mut child = ProcessGuard::spawn(
            "rdprobe replay",
            std::process::Command::new(env!("CARGO_BIN_EXE_rdprobe"))
                .arg("replay")
                .arg(&pcap)
                .args(["--as-server", "--listen", &format!("127.0.0.1:{port}")])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        )
        .expect("spawn rdprobe replay");
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                port_accepts(port).then_some(())
            })
            .is_some(),
            "{name}: the replayed gateway listens"
        );
        let mut g = GatewayOptions::new("127.0.0.1", port);
        g.credentials = Some(creds("pass"));
        let replayed = rt
            .block_on(probe_with_capture(&opts("rdp01", None), &g))
            .0
            .report;
        assert_eq!(
            (live.last_stage, verdict_key(&live.verdict)),
            (replayed.last_stage, verdict_key(&replayed.verdict)),
            "{name}: original\n{}\nreplayed\n{}",
            rdprobe::report::render_text(&live),
            rdprobe::report::render_text(&replayed)
        );
        // SIGTERM to this test's own child, by its PID.
        unsafe { libc::kill(child.pid() as i32, libc::SIGTERM) };
        let _ = child.wait_timeout(Duration::from_secs(5));
    }
}

/// After Basic authentication the capture keeps no TLS secret (they would reveal the password):
/// analyze shows the gateway's TCP and TLS and says the rest is encrypted, and the password is in
/// no byte of the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_basic_authentication_capture_is_encrypted_beyond_tls() {
    let mut sc = rdprobe::scenario::builtin("gw-healthy").expect("built-in scenario");
    let lab = rdprobe::lab::spawn_lab(loopback0(), sc.clone()).expect("lab");
    sc.link.read_timeout_ms = 5_000;
    if let Some(g) = sc.gateway.as_mut() {
        g.schemes = vec!["Basic".into()];
    }
    let gw = spawn_gateway(
        loopback0(),
        GatewayConfig {
            scenario: sc,
            target: lab.addr,
            limits: LabLimits::default(),
        },
    )
    .expect("gateway");
    let mut g = gw_opts(&gw, "Basic-canary-pw");
    g.credentials = Some(creds("Basic-canary-pw"));
    let (res, hop) = probe_with_capture(&opts("rdp01", Some(Stage::GwTunnel)), &g).await;
    // The lab accepts only `pass`: the canary password is refused, at gw_auth.
    assert_eq!(res.report.last_stage, Stage::GwAuth);
    let hop = hop.expect("gateway capture");
    assert!(hop.keylog.is_empty());
    let mut pcap = Vec::new();
    rdprobe::capture::writer::write_pcapng(&hop, &[], &mut pcap).expect("pcapng");
    assert!(!pcap.windows(15).any(|w| w == b"Basic-canary-pw"));
    let opts = ReaderOptions {
        gateway_ports: vec![gw.addr.port()],
        ..ReaderOptions::default()
    };
    let reports: Vec<ConnectionReport> = read_conversations(std::io::Cursor::new(pcap), opts)
        .expect("capture")
        .map(|t| rdprobe::decode::decode_report(&t.expect("conversation")))
        .collect();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(
        r.last_stage,
        Stage::GwTls,
        "{}",
        rdprobe::report::render_text(r)
    );
    assert_eq!(r.fact(Stage::GwTls, "encrypted"), Some(&json!(true)));
    assert_eq!(
        r.fact(Stage::GwTls, "version"),
        res.report.fact(Stage::GwTls, "version")
    );
}

/// The legacy HTTP transport's two channels are two TCP connections: the probe's capture holds both
/// (distinct client ports, same gateway), and its one key log decrypts both TLS sessions: the OUT
/// conversation opens with `RDG_OUT_DATA`, the IN one with `RDG_IN_DATA`, same `RDG-Connection-Id`,
/// and the IN channel carries the client's packets as chunks.
#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_transport_capture_holds_both_channels_decryptable() {
    use rdprobe::trace::{Dir, Layer};
    let (_lab, gw) = gateway_to_lab("gw-healthy");
    let mut g = gw_opts(&gw, "pass");
    g.transport = rdprobe::gateway::client::Transport::Http;
    let (res, captures) =
        rdprobe::gateway::client::probe_with_captures(&opts("rdp01.corp.example", None), &g).await;
    assert!(
        res.report.verdict.is_ok(),
        "{}",
        rdprobe::report::render_text(&res.report)
    );
    assert_eq!(captures.len(), 2, "the OUT and the IN channel");
    assert_ne!(captures[0].client.port(), captures[1].client.port());
    assert_eq!(captures[0].server, captures[1].server);
    assert!(
        !captures[1].keylog.is_empty(),
        "the IN channel's TLS secrets"
    );
    let all: Vec<(&rdprobe::trace::Trace, &[String])> =
        captures.iter().map(|t| (t, &[][..])).collect();
    let mut pcap = Vec::new();
    rdprobe::capture::writer::write_pcapng_many(&all, &mut pcap).expect("pcapng");
    let convs: Vec<rdprobe::trace::Trace> =
        read_conversations(std::io::Cursor::new(pcap), ReaderOptions::default())
            .expect("open capture")
            .map(|t| t.expect("conversation"))
            .collect();
    assert_eq!(convs.len(), 2, "two TCP conversations in one capture");
    let heads: Vec<String> = convs
        .iter()
        .map(|t| String::from_utf8_lossy(&t.stream(Dir::C2S, Layer::Inner)).into_owned())
        .collect();
    let out = heads
        .iter()
        .find(|h| h.starts_with("RDG_OUT_DATA"))
        .expect("the OUT channel decrypted");
    let in_ = heads
        .iter()
        .find(|h| h.starts_with("RDG_IN_DATA"))
        .expect("the IN channel decrypted");
    let conn_id = |h: &str| {
        h.lines()
            .find_map(|l| l.strip_prefix("RDG-Connection-Id: ").map(str::to_owned))
            .expect("RDG-Connection-Id")
    };
    assert_eq!(conn_id(out), conn_id(in_), "one tunnel");
    assert!(
        in_.contains("Transfer-Encoding: chunked"),
        "the IN channel's chunked request"
    );
    // Past the chunked head, the client's packets: more than the heads alone.
    let chunked_at = in_.find("Transfer-Encoding: chunked").unwrap();
    assert!(
        in_.len() > chunked_at + 200,
        "the IN channel carries the client's packets"
    );
}
