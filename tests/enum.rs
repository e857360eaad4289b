//! Issue 7 proof: `rdprobe enum` against real servers (xrdp in its three security layers,
//! freerdp-shadow with NLA), cross-checked field by field with nmap's `rdp-enum-encryption` and
//! `rdp-ntlm-info` on everything both report.
//!
//! nmap's meaning of "SUCCESS" in `rdp-enum-encryption` is "the server answered this offer with an
//! RDP_NEG_RSP", not "the server selected it": offered HYBRID, xrdp (which has no NLA) answers
//! RDP_NEG_RSP selecting PROTOCOL_SSL or PROTOCOL_RDP, and nmap prints "CredSSP (NLA): SUCCESS".
//! The tests compare nmap's SUCCESS with rdprobe's "answered with a negotiation response" and
//! assert the known inaccuracy explicitly where rdprobe says "not accepted".

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use common::*;
use rdprobe::enumerate::tls::Preference;
use rdprobe::enumerate::{enumerate, EnumOptions, EnumReport};

/// What nmap's two scripts said.
#[derive(Debug, Default)]
struct Nmap {
    /// Lines "NAME: SUCCESS" of the Security layer table.
    layers: BTreeSet<String>,
    /// "RDP Encryption level: X".
    level: Option<String>,
    /// Lines "40-bit RC4: SUCCESS" etc.
    ciphers: BTreeSet<String>,
    /// rdp-ntlm-info elements.
    ntlm: BTreeMap<String, String>,
    enum_script_ran: bool,
    /// rdp-enum-encryption's error output, when the script failed.
    enum_script_error: Option<String>,
    elapsed: Duration,
}

fn unescape(s: &str) -> String {
    s.replace("&#xa;", "\n")
        .replace("&#xd;", "\r")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn run_nmap(port: u16) -> Nmap {
    require_binary("nmap", "nmap").expect("nmap is needed: apt-get install nmap");
    let start = Instant::now();
    let out = std::process::Command::new("nmap")
        .args([
            "-n",
            "-Pn",
            "-sT",
            "-p",
            &port.to_string(),
            "--script",
            "+rdp-enum-encryption,+rdp-ntlm-info",
            "-oX",
            "-",
            "127.0.0.1",
        ])
        .output()
        .expect("run nmap");
    let elapsed = start.elapsed();
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "nmap ({} ms): {}",
        elapsed.as_millis(),
        xml.lines()
            .filter(|l| l.contains("<script"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(out.status.success(), "nmap failed: {xml}");
    let mut n = Nmap {
        elapsed,
        ..Nmap::default()
    };
    if let Some(at) = xml.find("<script id=\"rdp-enum-encryption\" output=\"") {
        n.enum_script_ran = true;
        let rest = &xml[at + "<script id=\"rdp-enum-encryption\" output=\"".len()..];
        let text = unescape(&rest[..rest.find('"').unwrap_or(0)]);
        if text.contains("ERROR: Script execution failed") {
            n.enum_script_error = Some(text.trim().to_owned());
        }
        let mut section = "";
        for line in text.lines() {
            let t = line.trim();
            if t == "Security layer" {
                section = "layers";
            } else if let Some(l) = t.strip_prefix("RDP Encryption level: ") {
                section = "ciphers";
                n.level = Some(l.to_owned());
            } else if t.starts_with("RDP Protocol Version") {
                section = "";
            } else if let Some(name) = t.strip_suffix(": SUCCESS") {
                match section {
                    "layers" => {
                        n.layers.insert(name.to_owned());
                    }
                    "ciphers" => {
                        n.ciphers.insert(name.to_owned());
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(at) = xml.find("<script id=\"rdp-ntlm-info\"") {
        let rest = &xml[at..];
        let end = rest.find("</script>").unwrap_or(rest.len());
        let mut body = &rest[..end];
        while let Some(i) = body.find("<elem key=\"") {
            body = &body[i + "<elem key=\"".len()..];
            let k_end = body.find('"').unwrap_or(0);
            let key = body[..k_end].to_owned();
            let v_start = body.find('>').map(|x| x + 1).unwrap_or(0);
            let v_end = body.find("</elem>").unwrap_or(v_start);
            n.ntlm.insert(key, unescape(&body[v_start..v_end]));
            body = &body[v_end..];
        }
    }
    n
}

async fn run_enum(port: u16) -> EnumReport {
    let mut o = EnumOptions::new("127.0.0.1", port);
    o.timeout = Duration::from_secs(5);
    let r = enumerate(&o).await;
    eprintln!("{}", rdprobe::enumerate::render::render_text(&r));
    r
}

/// nmap's protocol names and the requestedProtocols value each one offers.
const NMAP_LAYERS: [(&str, u32); 5] = [
    ("Native RDP", 0),
    ("SSL", PROTOCOL_SSL),
    ("CredSSP (NLA)", PROTOCOL_SSL | PROTOCOL_HYBRID),
    ("RDSTLS", PROTOCOL_RDSTLS),
    ("CredSSP with Early User Auth", PROTOCOL_HYBRID_EX),
];

/// Field-by-field agreement on everything both tools report. Returns the documented
/// disagreements (nmap's "SUCCESS" for a protocol rdprobe found not accepted).
fn cross_check(r: &EnumReport, n: &Nmap) -> Vec<String> {
    eprintln!(
        "wall time: rdprobe enum {} ms ({} connections), nmap scripts {} ms",
        r.elapsed_ms,
        r.connections,
        n.elapsed.as_millis()
    );
    let mut inaccurate = Vec::new();
    assert!(n.enum_script_ran, "nmap's rdp-enum-encryption did not run");
    if let Some(e) = &n.enum_script_error {
        // nmap's script aborts when a protocol it offers is refused on a server that needs TLS:
        // nothing to compare for protocols and methods; rdprobe must still have answers.
        assert!(
            r.protocols.iter().all(|p| p.error.is_none()),
            "{:?}",
            r.protocols
        );
        inaccurate.push(format!("nmap rdp-enum-encryption failed: {e}"));
    } else {
        layers_and_methods(r, n, &mut inaccurate);
    }
    ntlm_info(r, n);
    inaccurate
}

fn layers_and_methods(r: &EnumReport, n: &Nmap, inaccurate: &mut Vec<String>) {
    // Security layers.
    for (name, offered) in NMAP_LAYERS {
        let nmap_success = n.layers.contains(name);
        if offered == PROTOCOL_SSL | PROTOCOL_HYBRID {
            // nmap offers SSL|HYBRID, rdprobe HYBRID alone: the server answers both or neither with
            // a negotiation response unless it answers the lone HYBRID with a failure.
            let ours = r.protocol(PROTOCOL_HYBRID).expect("hybrid asked");
            if ours.accepted {
                assert!(
                    nmap_success,
                    "rdprobe: HYBRID accepted; nmap: no {name} SUCCESS"
                );
            } else if nmap_success {
                // The documented inaccuracy: nmap's SUCCESS although the server does not select
                // HYBRID (xrdp has no NLA).
                assert_ne!(ours.selected_value, Some(PROTOCOL_HYBRID));
                inaccurate.push(format!(
                    "nmap says `{name}: SUCCESS`; rdprobe: HYBRID not accepted ({})",
                    ours.selected
                        .as_deref()
                        .or(ours.failure_name.as_deref())
                        .unwrap_or("no answer")
                ));
            }
            continue;
        }
        let ours = r.protocol(offered).expect("protocol asked");
        let ours_rsp = ours.response == "negotiation response";
        assert_eq!(
            nmap_success, ours_rsp,
            "{name}: nmap SUCCESS={nmap_success}, rdprobe answer {:?}",
            ours
        );
        if nmap_success && !ours.accepted {
            inaccurate.push(format!(
                "nmap says `{name}: SUCCESS`; rdprobe: not accepted (server selected {})",
                ours.selected.as_deref().unwrap_or("?")
            ));
        }
    }
    // RDP encryption methods and level, when nmap could ask (it asks on a PROTOCOL_RDP request).
    if let Some(sec) = &r.rdp_security {
        let level = n.level.as_deref().map(|l| match l {
            "None" => "none",
            "Low" => "low",
            "Client Compatible" => "client_compatible",
            "High" => "high",
            "FIPS Compliant" => "fips",
            other => other,
        });
        assert_eq!(level, sec.level.as_deref(), "encryption level");
        for m in &sec.methods {
            let nmap_name = match m.method.name() {
                "40bit" => "40-bit RC4",
                "56bit" => "56-bit RC4",
                "128bit" => "128-bit RC4",
                _ => "FIPS 140-1",
            };
            assert_eq!(
                n.ciphers.contains(nmap_name),
                m.accepted,
                "{nmap_name}: nmap vs rdprobe {m:?}"
            );
        }
    } else {
        assert!(
            n.ciphers.is_empty(),
            "nmap found RDP encryption methods {:?}, rdprobe did not ask (PROTOCOL_RDP not accepted)",
            n.ciphers
        );
    }
}

fn ntlm_info(r: &EnumReport, n: &Nmap) {
    match &r.credssp {
        Some(c) if c.error.is_none() => {
            for (key, ours) in [
                ("NetBIOS_Computer_Name", &c.nb_computer_name),
                ("NetBIOS_Domain_Name", &c.nb_domain_name),
                ("DNS_Computer_Name", &c.dns_computer_name),
                ("DNS_Domain_Name", &c.dns_domain_name),
                ("DNS_Tree_Name", &c.dns_tree_name),
                ("Product_Version", &c.os_version),
            ] {
                assert_eq!(
                    n.ntlm.get(key).filter(|v| !v.is_empty()),
                    ours.as_ref().filter(|v| !v.is_empty()),
                    "{key}: nmap {:?} vs rdprobe {:?}",
                    n.ntlm,
                    c
                );
            }
            assert_eq!(
                n.ntlm.contains_key("System_Time"),
                c.server_time.is_some(),
                "System_Time present in one only"
            );
        }
        _ => assert!(
            n.ntlm.is_empty(),
            "nmap found NTLM info {:?}, rdprobe none",
            n.ntlm
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn xrdp_negotiate_agrees_with_nmap() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp (apt-get install xrdp)");
    let r = run_enum(xrdp.port()).await;
    let n = run_nmap(xrdp.port());
    assert!(r.accepts(0) && r.accepts(PROTOCOL_SSL));
    assert!(!r.accepts(PROTOCOL_HYBRID) && !r.accepts(PROTOCOL_HYBRID_EX));
    let sec = r.rdp_security.as_ref().expect("rdp security enumerated");
    assert_eq!(sec.level.as_deref(), Some("high"));
    assert_eq!(sec.certificate_type.as_deref(), Some("proprietary"));
    assert!(sec.key_bits.unwrap_or(0) >= 512);
    let tls = r.tls.as_ref().expect("tls enumerated");
    let v12 = tls
        .versions
        .iter()
        .find(|v| v.version == "TLSv1.2")
        .unwrap();
    assert!(v12.accepted && v12.cipher_suites.len() > 1, "{v12:?}");
    let v10 = tls
        .versions
        .iter()
        .find(|v| v.version == "TLSv1.0")
        .unwrap();
    assert!(
        !v10.accepted,
        "xrdp's default ssl_protocols exclude TLS 1.0"
    );
    let cert = tls.certificate.as_ref().expect("certificate audited");
    assert!(cert.self_signed && cert.findings.iter().any(|f| f == "self-signed"));
    assert!(r.credssp.is_none(), "xrdp has no NLA");
    let inaccurate = cross_check(&r, &n);
    // nmap's known inaccuracy on xrdp: CredSSP SUCCESS without NLA.
    assert!(
        inaccurate.iter().any(|i| i.contains("CredSSP (NLA)")),
        "expected nmap's CredSSP SUCCESS on xrdp to be flagged: {inaccurate:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn xrdp_tls_only_agrees_with_nmap() {
    let xrdp = Xrdp::start(XrdpOpts::tls()).expect("start xrdp");
    let r = run_enum(xrdp.port()).await;
    let n = run_nmap(xrdp.port());
    assert!(r.accepts(PROTOCOL_SSL) && !r.accepts(0));
    assert!(r.rdp_security.is_none());
    let notes = cross_check(&r, &n);
    // nmap cannot enumerate a TLS-only xrdp (its script fails); rdprobe reports what it offers.
    assert!(
        notes
            .iter()
            .any(|n| n.contains("nmap rdp-enum-encryption failed")),
        "expected nmap's failure on a TLS-only server: {notes:?}"
    );
    let v12 = r
        .tls
        .as_ref()
        .unwrap()
        .versions
        .iter()
        .find(|v| v.version == "TLSv1.2")
        .unwrap();
    assert!(v12.accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn xrdp_rdp_only_agrees_with_nmap_on_methods_and_level() {
    for level in ["high", "fips"] {
        let xrdp = Xrdp::start(XrdpOpts::rdp(level)).expect("start xrdp");
        let r = run_enum(xrdp.port()).await;
        let n = run_nmap(xrdp.port());
        assert!(r.accepts(0) && !r.accepts(PROTOCOL_SSL));
        assert!(r.tls.is_none());
        let sec = r.rdp_security.as_ref().expect("rdp security enumerated");
        assert_eq!(sec.level.as_deref(), Some(level));
        let accepted: Vec<&str> = sec
            .methods
            .iter()
            .filter(|m| m.accepted)
            .map(|m| m.method.name())
            .collect();
        assert_eq!(
            accepted,
            if level == "fips" {
                vec!["fips"]
            } else {
                vec!["128bit"]
            }
        );
        cross_check(&r, &n);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn freerdp_shadow_nla_agrees_with_nmap_on_ntlm_info() {
    let shadow = FreerdpShadow::start("nla", &[("alice", "secret-pw")])
        .expect("start freerdp-shadow-cli (apt-get install freerdp2-shadow-x11 xvfb)");
    let r = run_enum(shadow.port()).await;
    let c = r.credssp.as_ref().expect("credssp enumerated");
    assert!(c.error.is_none(), "{c:?}");
    assert!(c.version.is_some());
    assert!(
        c.nb_computer_name.is_some() || c.dns_computer_name.is_some(),
        "{c:?}"
    );
    assert!(r.accepts(PROTOCOL_HYBRID));
    let n = run_nmap(shadow.port());
    assert!(
        n.ntlm.contains_key("NetBIOS_Computer_Name") || n.ntlm.contains_key("DNS_Computer_Name"),
        "nmap's rdp-ntlm-info found nothing: {n:?}"
    );
    cross_check(&r, &n);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_checked_auth_only() {
    let shadow = FreerdpShadow::start("nla", &[("alice", "secret-pw")]).expect("start shadow");
    let mut o = EnumOptions::new("127.0.0.1", shadow.port());
    o.timeout = Duration::from_secs(5);
    o.skip_ciphers = true;
    o.credentials = Some(rdprobe::probe::Credentials {
        user: "alice".into(),
        domain: None,
        password: "secret-pw".into(),
    });
    let good = enumerate(&o).await;
    let c = good.credentials.as_ref().expect("credentials checked");
    assert!(c.accepted, "{c:?}");
    o.credentials = Some(rdprobe::probe::Credentials {
        user: "alice".into(),
        domain: None,
        password: "wrong".into(),
    });
    let bad = enumerate(&o).await;
    let c = bad.credentials.as_ref().expect("credentials checked");
    assert!(!c.accepted, "{c:?}");
}

fn version<'a>(r: &'a EnumReport, name: &str) -> &'a rdprobe::enumerate::TlsVersionResult {
    r.tls
        .as_ref()
        .expect("tls enumerated")
        .versions
        .iter()
        .find(|v| v.version == name)
        .expect("version asked")
}

/// Both real servers follow the client's cipher order (xrdp and freerdp-shadow leave OpenSSL's
/// SSL_OP_CIPHER_SERVER_PREFERENCE off): rdprobe says so and lists the suites as offered.
#[tokio::test(flavor = "multi_thread")]
async fn xrdp_and_shadow_follow_the_clients_cipher_order() {
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp");
    let shadow = FreerdpShadow::start("nla", &[("alice", "pw")]).expect("start shadow");
    for port in [xrdp.port(), shadow.port()] {
        let r = run_enum(port).await;
        for name in ["TLSv1.2", "TLSv1.3"] {
            let v = version(&r, name);
            assert!(v.accepted && v.cipher_suites.len() >= 2, "{v:?}");
            assert_eq!(v.preference, Preference::Client, "{v:?}");
            // N suites: the one that chose the version, the order check, N - 2 more, and no
            // refusal: both speak the suite offered last (rdprobe's guess), and picking it
            // ends the list. TLS 1.2 on a server that answers fast is eliminated per key
            // exchange group, one refusal for each group without the guess (DHE, other).
            let refusals = v.attempts - v.cipher_suites.len();
            if name == "TLSv1.3" || port == shadow.port() {
                assert_eq!(refusals, 0, "{v:?}");
            } else {
                assert!(refusals == 0 || refusals == 2, "{v:?}");
            }
        }
        if port == shadow.port() {
            // 8 protocol questions, 3 of which (HYBRID, all, the common offer) leave a
            // connection for the 3 version hellos; each further hello of the eliminations
            // needs one more (13 TLS 1.2 and 3 TLS 1.3 suites here, no refusal: 22 in all); up
            // to 2 are opened ahead and not needed when the lists ended.
            let further: usize = ["TLSv1.2", "TLSv1.3"]
                .iter()
                .map(|n| version(&r, n).attempts - 1)
                .sum();
            let needed = 8 + further;
            assert!(
                (needed..=needed + 2).contains(&r.connections),
                "{} connections for {needed} questions",
                r.connections
            );
        }
        // OpenSSL's first TLS 1.2 suite that an RSA server speaks, and RFC 8446's first.
        assert_eq!(
            version(&r, "TLSv1.2").cipher_suites[0],
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        );
        assert_eq!(
            version(&r, "TLSv1.3").cipher_suites[0],
            "TLS_AES_128_GCM_SHA256"
        );
    }
}

/// A version's result, asserted to say whose order decides and to list exactly `suites`.
fn listed<'a>(
    r: &'a EnumReport,
    name: &str,
    preference: Preference,
    suites: &[&str],
) -> &'a rdprobe::enumerate::TlsVersionResult {
    let v = version(r, name);
    assert_eq!(v.preference, preference, "{v:?}");
    assert_eq!(v.cipher_suites, suites, "{v:?}");
    v
}

/// Starts a [`TlsOrderServer`] with `opts` and enumerates it.
async fn enum_tls_order_server(opts: TlsOrderOpts) -> EnumReport {
    let srv = TlsOrderServer::start(opts).expect("start the tls order server");
    run_enum(srv.port()).await
}

/// A server that picks by its own order: rdprobe lists its full order of preference.
#[tokio::test(flavor = "multi_thread")]
async fn cipher_suites_are_listed_in_the_servers_order_of_preference() {
    let ciphers = "AES128-SHA:ECDHE-RSA-AES256-GCM-SHA384:AES256-SHA";
    let suites13 = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";
    let r = enum_tls_order_server(TlsOrderOpts {
        ciphers,
        suites13,
        server_preference: true,
        prioritize_chacha: false,
    })
    .await;
    let v12 = listed(
        &r,
        "TLSv1.2",
        Preference::Server,
        &[
            "TLS_RSA_WITH_AES_128_CBC_SHA",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_RSA_WITH_AES_256_CBC_SHA",
        ],
    );
    // The first pick, the order check (the same pick again), two more, the refusal.
    assert_eq!(v12.attempts, 5, "{v12:?}");
    listed(
        &r,
        "TLSv1.3",
        Preference::Server,
        &["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"],
    );
    assert!(!version(&r, "TLSv1.1").accepted && !version(&r, "TLSv1.0").accepted);
    let text = rdprobe::enumerate::render::render_text(&r);
    assert!(text.contains("server's order of preference"), "{text}");

    // The same suites, the client's order: the list follows OpenSSL's order, said so.
    let r = enum_tls_order_server(TlsOrderOpts {
        ciphers,
        suites13,
        server_preference: false,
        prioritize_chacha: false,
    })
    .await;
    let v12 = version(&r, "TLSv1.2");
    assert_eq!(v12.preference, Preference::Client, "{v12:?}");
    assert_eq!(
        v12.cipher_suites[0],
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
    );
    assert_eq!(v12.cipher_suites.len(), 3);
    let v13 = listed(
        &r,
        "TLSv1.3",
        Preference::Client,
        &["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"],
    );
    let text = rdprobe::enumerate::render::render_text(&r);
    assert!(text.contains("follows the client's order"), "{text}");
    // Neither guess (ECDHE-RSA-AES128-GCM-SHA256, TLS_AES_256_GCM_SHA384) is spoken here: each
    // list ends with a refusal.
    assert!(v12.attempts > v12.cipher_suites.len(), "{v12:?}");
    assert_eq!(v13.attempts, 3, "{v13:?}");
}

/// A server that picks by its own order but ChaCha20 first when the client lists it first
/// (OpenSSL's SSL_OP_PRIORITIZE_CHACHA): no elimination step leads with a ChaCha20 suite, so it
/// reads as picking by its own order and its full order is listed.
#[tokio::test(flavor = "multi_thread")]
async fn a_chacha_prioritizing_server_reads_as_server_order() {
    let r = enum_tls_order_server(TlsOrderOpts {
        ciphers: "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:\
                  ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA",
        suites13: "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
        server_preference: true,
        prioritize_chacha: true,
    })
    .await;
    listed(
        &r,
        "TLSv1.3",
        Preference::Server,
        &[
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS_AES_128_GCM_SHA256",
        ],
    );
    listed(
        &r,
        "TLSv1.2",
        Preference::Server,
        &[
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_AES_128_CBC_SHA",
        ],
    );
}

/// On a server that follows the client's order, the suite offered last (a likely one) ends the
/// list when the server picks it: no refusal handshake. The list is the same as without the
/// guess, in OpenSSL's order (RFC 8446's for TLS 1.3), not in the order found.
#[tokio::test(flavor = "multi_thread")]
async fn a_picked_guess_ends_the_list_without_a_refusal() {
    let r = enum_tls_order_server(TlsOrderOpts {
        ciphers: "ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA:ECDHE-RSA-AES256-GCM-SHA384",
        suites13: "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
        server_preference: false,
        prioritize_chacha: false,
    })
    .await;
    let v13 = listed(
        &r,
        "TLSv1.3",
        Preference::Client,
        &[
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
        ],
    );
    // The range hello, the order check, one more: the third pick is the guess.
    assert_eq!(v13.attempts, 3, "{v13:?}");
    let v12 = listed(
        &r,
        "TLSv1.2",
        Preference::Client,
        &[
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_AES_256_CBC_SHA",
        ],
    );
    // Sequential (3 handshakes, no refusal) or per key exchange group on a server that
    // answers fast (the ECDHE group ends on the guess; DHE and the others end on a refusal).
    assert!(v12.attempts == 3 || v12.attempts == 5, "{v12:?}");
}

/// Connections carry more than one question: on freerdp-shadow (~40 ms of server CPU per
/// connection) the CredSSP question rides on a TLS handshake and `--no-ciphers` needs no
/// connection beyond the eight protocol questions.
#[tokio::test(flavor = "multi_thread")]
async fn questions_share_connections() {
    let shadow = FreerdpShadow::start("nla", &[("alice", "pw")]).expect("start shadow");
    let mut o = EnumOptions::new("127.0.0.1", shadow.port());
    o.skip_ciphers = true;
    let r = enumerate(&o).await;
    let c = r.credssp.as_ref().expect("credssp enumerated");
    assert!(c.error.is_none() && c.nb_computer_name.is_some(), "{c:?}");
    assert!(version(&r, "TLSv1.2").accepted && version(&r, "TLSv1.3").accepted);
    assert_eq!(r.connections, 8, "{r:?}");
    let xrdp = Xrdp::start(XrdpOpts::negotiate()).expect("start xrdp");
    let mut o = EnumOptions::new("127.0.0.1", xrdp.port());
    o.skip_ciphers = true;
    let r = enumerate(&o).await;
    // 8 protocol questions; the 4 method queries and 2 of the 3 version hellos reuse them.
    assert_eq!(r.rdp_security.as_ref().map(|s| s.methods.len()), Some(4));
    assert_eq!(r.connections, 9, "{r:?}");
}

/// Manual helper: `HOLD_XRDP=negotiate cargo test --test enum hold -- --ignored --nocapture`
/// keeps an xrdp (or `HOLD_XRDP=shadow`: freerdp-shadow) running for `HOLD_SECS` (default 300) s
/// and prints its port (for timing the CLI by hand).
#[test]
#[ignore]
fn hold() {
    let secs = std::env::var("HOLD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    if std::env::var("HOLD_XRDP").as_deref() == Ok("shadow") {
        let shadow = FreerdpShadow::start("nla", &[("alice", "pw")]).expect("shadow");
        println!("PORT {}", shadow.port());
        std::thread::sleep(Duration::from_secs(secs));
        return;
    }
    let opts = match std::env::var("HOLD_XRDP").as_deref() {
        Ok("tls") => XrdpOpts::tls(),
        Ok("rdp") => XrdpOpts::rdp("high"),
        _ => XrdpOpts::negotiate(),
    };
    let xrdp = Xrdp::start(opts).expect("xrdp");
    println!("PORT {}", xrdp.port());
    std::thread::sleep(Duration::from_secs(secs));
}
