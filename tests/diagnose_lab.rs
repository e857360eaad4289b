//! Issue 7 proof: every built-in fault scenario of the lab, probed live, produces the right fault class
//! with its cause first — and analyzing the probe's capture diagnoses the same.

use std::net::SocketAddr;
use std::time::Duration;

use rdprobe::diagnose::{diagnose, FaultClass};
use rdprobe::probe::{Credentials, ProbeOptions, Protocol};

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_scenario_is_diagnosed() {
    use FaultClass as F;
    // (scenario, protocols offered (empty = default), fault class, first cause)
    let table: &[(&str, &[Protocol], FaultClass, &str)] = &[
        ("nla-required", &[Protocol::Ssl], F::Policy, "nla_required"),
        (
            "ssl-required",
            &[Protocol::Hybrid],
            F::Policy,
            "tls_required",
        ),
        (
            "rdp-security-only",
            &[Protocol::Hybrid],
            F::Policy,
            "rdp_security_only",
        ),
        (
            "tls-reset-at-client-hello",
            &[],
            F::ServerConfiguration,
            "endpoint_security_server",
        ),
        (
            "no-certificate",
            &[],
            F::ServerConfiguration,
            "server_cannot_create_keys",
        ),
        (
            "firewall-drop-after-x224",
            &[],
            F::Network,
            "middlebox_drops",
        ),
        ("x224-silent", &[], F::ServerHealth, "server_hung"),
        (
            "wrong-password",
            &[],
            F::Credentials,
            "wrong_password_or_user",
        ),
        ("account-locked", &[], F::Credentials, "account_locked_out"),
        ("account-expired", &[], F::Credentials, "account_expired"),
        (
            "password-must-change",
            &[],
            F::Credentials,
            "password_must_change",
        ),
        (
            "denied-after-mcs",
            &[],
            F::ServerConfiguration,
            "server_denied_connection",
        ),
        (
            "reset-in-credssp",
            &[],
            F::ServerConfiguration,
            "credssp_server_failure",
        ),
    ];
    let mut wrong = Vec::new();
    for (name, protocols, class, cause) in table {
        let sc = rdprobe::scenario::builtin(name).unwrap_or_else(|| panic!("no scenario {name}"));
        let lab =
            rdprobe::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), sc.clone()).unwrap();
        let mut o = ProbeOptions::new("127.0.0.1", lab.addr.port());
        o.stage_timeout = Duration::from_millis(1500);
        o.protocols = protocols.to_vec();
        if let Some((user, password)) = rdprobe::lab::demo_credentials(&sc) {
            o.credentials = Some(Credentials {
                user,
                domain: None,
                password,
            });
        }
        let res = rdprobe::probe::probe(&o).await;
        lab.stop();
        let live = diagnose(&res.report);
        let first = live
            .causes
            .first()
            .map(|c| c.id.as_str())
            .unwrap_or("<none>");
        if live.fault_class != *class || first != *cause {
            wrong.push(format!(
                "{name}: got {:?} / {first}, expected {class:?} / {cause}\n{}",
                live.fault_class,
                rdprobe::report::render_text(&res.report)
            ));
        }
        // The same from the capture.
        let mut buf = Vec::new();
        rdprobe::capture::writer::write_pcapng(&res.trace, &res.labels, &mut buf).unwrap();
        let trace = rdprobe::capture::reader::read_conversations(
            std::io::Cursor::new(buf),
            Default::default(),
        )
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
        let offline = diagnose(&rdprobe::decode::decode(&trace).report);
        assert_eq!(
            offline.fault_class, live.fault_class,
            "{name}: analyze diagnoses differently"
        );
        assert_eq!(
            offline.causes.first().map(|c| c.id.as_str()),
            live.causes.first().map(|c| c.id.as_str()),
            "{name}: analyze names another first cause"
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
