//! The capture reader over the public corpus (read-only, never copied into the repository):
//! `../shared/corpus` beside the checkout or `$RDPROBE_CORPUS`. Expected conversations per file come from the
//! corpus's INDEX.md / expected.json ground truth. Skips with a notice only when the folder is absent.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use rdprobe::capture::reader::{read_conversations, CaptureError, ReaderOptions};
use rdprobe::trace::{Dir, EventKind, Layer, Trace};

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("RDPROBE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus")));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "corpus tests skipped: {} does not exist (set RDPROBE_CORPUS)",
            dir.display()
        );
        None
    }
}

fn read(dir: &std::path::Path, name: &str) -> (Vec<Trace>, Option<CaptureError>) {
    let f = File::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let it = read_conversations(BufReader::new(f), ReaderOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut traces = Vec::new();
    let mut err = None;
    for r in it {
        match r {
            Ok(t) => traces.push(t),
            Err(e) => {
                assert!(err.is_none(), "{name}: a second error after {err:?}");
                err = Some(e);
            }
        }
    }
    (traces, err)
}

fn summary(t: &Trace) -> String {
    let mut kinds = Vec::new();
    for e in &t.events {
        let k = match &e.kind {
            EventKind::Data { dir, layer, bytes } => format!("{dir:?}/{layer:?}:{}", bytes.len()),
            EventKind::Elided { dir, layer, len } => format!("elided {dir:?}/{layer:?}:{len}"),
            EventKind::Gap { dir, len } => format!("GAP {dir:?}:{len}"),
            EventKind::TlsSession(i) => format!(
                "TLS {} {} certs={}",
                i.version,
                i.cipher_suite,
                i.certificates.len()
            ),
            other => format!("{other:?}"),
        };
        kinds.push(format!("f{}:{k}", e.frame.unwrap_or(0)));
    }
    format!("{} -> {}: {}", t.client, t.server, kinds.join(", "))
}

fn ports(traces: &[Trace]) -> Vec<(u16, u16)> {
    traces
        .iter()
        .map(|t| (t.client.port(), t.server.port()))
        .collect()
}

fn last_kind(t: &Trace) -> &EventKind {
    &t.events.last().expect("a trace has events").kind
}

/// Every file: no panic, and the RDP conversations (client port, server port) INDEX.md lists.
#[test]
fn corpus_conversations_match_index() {
    let Some(dir) = corpus() else { return };
    // (file, expected (client port, server port) — client port 0 = not given in INDEX.md)
    let expected: &[(&str, &[(u16, u16)])] = &[
        (
            "zeek_rdp-proprietary-encryption.pcap",
            &[(1311, 3389), (1312, 3389)],
        ),
        ("zeek_rdp-to-ssl.pcap", &[(49206, 3389), (49207, 3389)]),
        ("zeek_rdp-no-cookie-mstshash.pcap", &[(50204, 3389)]),
        ("zeek_rdp-x509.pcap", &[(54990, 3389)]),
        ("zeek_rdp-unknown-keyboard.pcap", &[(54990, 3389)]),
        ("zeek_rdp-invalid-length.pcap", &[(45257, 3389)]),
        ("zeek_rdpeudp-handshake-fail.pcap", &[]),
        ("zeek_rdpeudp-handshake-success.pcap", &[]),
        ("zeek_rdpeudp2-handshake-success.pcap", &[]),
        ("suricata_RDP-003.pcap", &[(13178, 3389)]),
        ("ndpi_rdp.pcap", &[(52494, 3389)]),
        ("ndpi_rdp3.pcap", &[(1685, 3389)]),
        ("ndpi_rdp_over_tls.pcap", &[(0, 3389)]),
        ("ndpi_rdp2.pcap", &[]),
        ("jovair_rdp-tls-decryptable.pcap", &[(59921, 3389)]),
        ("arkime_socks5-rdp.pcap", &[(0, 42356)]),
        ("ndpi_tcp_scan.pcapng", &[(43067, 3389)]),
        ("ndpi_synscan.pcap", &[(36050, 3389), (36051, 3389)]),
    ];
    let mut failures = Vec::new();
    for (name, want) in expected {
        let (traces, err) = read(&dir, name);
        for t in &traces {
            eprintln!(
                "{name}: {}",
                summary(t).chars().take(1500).collect::<String>()
            );
        }
        if let Some(e) = &err {
            eprintln!("{name}: error: {e}");
        }
        let mut got = ports(&traces);
        got.sort();
        let mut want: Vec<(u16, u16)> = want.to_vec();
        want.sort();
        let matches = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| (w.0 == 0 || g.0 == w.0) && g.1 == w.1);
        if !matches {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
        // Only the jovair capture is damaged (its last record is cut short).
        if *name == "jovair_rdp-tls-decryptable.pcap" {
            let e = err.as_ref().expect("jovair's last record is cut short");
            // 5,967 whole packets, then 2 bytes of a 5,968th record header.
            assert_eq!(e.frame(), Some(5968), "{e}");
            assert_eq!(e.offset(), 1_194_407, "{e}");
            assert!(e.to_string().contains("truncated"), "{e}");
            // The conversation before the damage is still there, with its TLS handshake facts.
            let t = &traces[0];
            let tls = t.events.iter().find_map(|e| match &e.kind {
                EventKind::TlsSession(i) => Some(i.clone()),
                _ => None,
            });
            let tls = tls.expect("tls session");
            assert_eq!(
                (tls.version.as_str(), tls.cipher_suite.as_str()),
                ("TLSv1.0", "TLS_RSA_WITH_AES_128_CBC_SHA")
            );
        } else if let Some(e) = err {
            failures.push(format!("{name}: unexpected error {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// How each conversation ended, as INDEX.md describes it.
#[test]
fn corpus_endings_match_index() {
    let Some(dir) = corpus() else { return };
    // zeek proprietary: #1 client FIN then server RST; both yielded.
    let (t, _) = read(&dir, "zeek_rdp-proprietary-encryption.pcap");
    let c1 = t
        .iter()
        .find(|t| t.client.port() == 1311)
        .expect("conn 1311");
    assert!(c1
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Fin { dir: Dir::C2S })));
    assert!(
        matches!(last_kind(c1), EventKind::Rst { dir: Dir::S2C }),
        "{}",
        summary(c1)
    );
    // The X.224 request is the first client bytes.
    assert_eq!(&c1.stream(Dir::C2S, Layer::Wire)[..2], &[3, 0]);

    // tcp_scan: SYN answered by RST -> refused.
    let (t, _) = read(&dir, "ndpi_tcp_scan.pcapng");
    assert!(matches!(
        last_kind(&t[0]),
        EventKind::ConnectFailed(rdprobe::trace::ConnectFailure::Refused)
    ));

    // synscan: SYN never answered -> timed out at capture end.
    let (t, _) = read(&dir, "ndpi_synscan.pcap");
    for tr in &t {
        assert!(tr.events.iter().any(|e| matches!(
            e.kind,
            EventKind::ConnectFailed(rdprobe::trace::ConnectFailure::TimedOut { .. })
        )));
        assert!(matches!(last_kind(tr), EventKind::CaptureEnd));
    }

    // no-cookie: every packet twice; duplicates must not duplicate bytes; ends with client RST.
    let (t, _) = read(&dir, "zeek_rdp-no-cookie-mstshash.pcap");
    let tr = &t[0];
    assert!(
        matches!(last_kind(tr), EventKind::Rst { dir: Dir::C2S }),
        "{}",
        summary(tr)
    );
    assert!(
        !tr.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Gap { .. })),
        "{}",
        summary(tr)
    );
    let tls = tr.events.iter().find_map(|e| match &e.kind {
        EventKind::TlsSession(i) => Some(i.clone()),
        _ => None,
    });
    let tls = tls.expect("tls session from the cleartext handshake");
    assert_eq!(tls.version, "TLSv1.2");
    assert_eq!(tls.cipher_suite, "TLS_RSA_WITH_AES_256_GCM_SHA384");
    assert!(!tls.certificates.is_empty());

    // ndpi_rdp: capture ends before MCS, no FIN/RST.
    let (t, _) = read(&dir, "ndpi_rdp.pcap");
    assert!(matches!(last_kind(&t[0]), EventKind::CaptureEnd));

    // socks5: the preamble is skipped, the client stream starts with the X.224 CR.
    let (t, _) = read(&dir, "arkime_socks5-rdp.pcap");
    let c = t[0].stream(Dir::C2S, Layer::Wire);
    assert_eq!(&c[..2], &[3, 0], "{}", summary(&t[0]));
    assert_eq!(c[5], 0xE0);
    let s = t[0].stream(Dir::S2C, Layer::Wire);
    assert_eq!(
        s[5], 0xD0,
        "server stream starts with the connection confirm"
    );
}

/// RDP over UDP (MS-RDPEUDP) flows are listed, as INDEX.md describes them, and nowhere else.
#[test]
fn corpus_rdp_udp_flows_match_index() {
    let Some(dir) = corpus() else { return };
    // (file, [(client, server, answered, mid-stream, datagrams c->s + s->c)])
    type Flow = (&'static str, &'static str, bool, bool, u64);
    let expected: &[(&str, &[Flow])] = &[
        (
            "zeek_rdpeudp-handshake-fail.pcap",
            &[("192.168.38.1:63568", "192.168.38.102:3389", false, false, 3)],
        ),
        (
            "zeek_rdpeudp-handshake-success.pcap",
            &[("[::1]:61291", "[::1]:3389", true, false, 10)],
        ),
        (
            "zeek_rdpeudp2-handshake-success.pcap",
            &[("192.168.57.5:65368", "192.168.57.8:3389", true, false, 10)],
        ),
        (
            "ndpi_rdp2.pcap",
            &[
                (
                    "192.168.122.181:54759",
                    "192.168.122.2:3389",
                    true,
                    false,
                    6,
                ),
                ("10.8.37.100:51652", "10.100.2.87:3389", false, true, 26),
                ("10.50.181.210:60355", "10.50.73.36:3389", true, false, 7),
            ],
        ),
    ];
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    assert!(names.len() >= 18, "corpus has {} captures", names.len());
    for name in &names {
        let f = File::open(dir.join(name)).unwrap();
        let mut it = read_conversations(BufReader::new(f), ReaderOptions::default()).unwrap();
        for _ in it.by_ref() {}
        let got: Vec<(String, String, bool, bool, u64)> = it
            .udp_flows()
            .iter()
            .map(|f| {
                (
                    f.client.to_string(),
                    f.server.to_string(),
                    f.syn_ack_frame.is_some(),
                    f.mid_stream,
                    f.datagrams[0] + f.datagrams[1],
                )
            })
            .collect();
        let want: Vec<(String, String, bool, bool, u64)> = expected
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.to_vec())
            .unwrap_or_default()
            .into_iter()
            .map(|(c, s, a, m, d)| (c.to_owned(), s.to_owned(), a, m, d))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
