//! The pure decoders (decode::tls, decode::mcs) against real handshakes of the public corpus
//! (`../shared/corpus` beside the checkout or `$RDPROBE_CORPUS`, read-only), with expected values from the corpus's
//! upstream ground truth (Zeek ssl.log / x509.log / rdp.log). Skips with a notice only when the
//! folder is absent.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use rdprobe::capture::reader::{read_conversations, ReaderOptions};
use rdprobe::decode::{mcs, tls};
use rdprobe::trace::{Dir, Layer, Trace};

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("RDPROBE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus")));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "decoder corpus tests skipped: {} does not exist (set RDPROBE_CORPUS)",
            dir.display()
        );
        None
    }
}

fn traces(dir: &std::path::Path, name: &str) -> Vec<Trace> {
    let f = File::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    read_conversations(BufReader::new(f), ReaderOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .filter_map(Result::ok)
        .collect()
}

/// Splits a wire stream into TPKT PDUs and TLS records, in order, until something else appears.
fn frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= stream.len() {
        let len = match stream[i] {
            3 => usize::from(u16::from_be_bytes([stream[i + 2], stream[i + 3]])),
            20..=23 => 5 + usize::from(u16::from_be_bytes([stream[i + 3], stream[i + 4]])),
            _ => break,
        };
        if len < 4 || i + len > stream.len() {
            break;
        }
        out.push(&stream[i..i + len]);
        i += len;
    }
    out
}

/// The server's MCS Connect Response (X.224 user data) in a trace, if any.
fn connect_response(t: &Trace) -> Option<Vec<u8>> {
    let s = t.stream(Dir::S2C, Layer::Wire);
    frames(&s)
        .into_iter()
        .find(|f| f[0] == 3 && f.len() > 9 && f[7..].starts_with(&[0x7f, 0x66]))
        .map(|f| f[7..].to_vec())
}

/// All plaintext handshake messages the server sent, reassembled across records.
fn server_handshakes(t: &Trace) -> Vec<tls::Handshake> {
    let s = t.stream(Dir::S2C, Layer::Wire);
    let mut r = tls::HandshakeReassembler::new();
    let mut out = Vec::new();
    for f in frames(&s) {
        if f[0] == tls::CT_CHANGE_CIPHER_SPEC {
            break;
        }
        if f[0] == tls::CT_HANDSHAKE {
            let (m, e) = r.push(&f[5..]);
            assert_eq!(e, None);
            out.extend(m);
        }
    }
    out
}

#[test]
fn zeek_x509_connect_response_chain_matches_zeek_x509_log() {
    let Some(dir) = corpus() else { return };
    let ts = traces(&dir, "zeek_rdp-x509.pcap");
    let cr = ts
        .iter()
        .find_map(connect_response)
        .expect("a connect response");
    let f = mcs::connect_response_facts(&cr).unwrap();
    // Zeek x509.log: two RSA-512 certificates, the server's (ncalrpc:SERVR) issued by L=TURNBKL+CN=SERVR.
    assert_eq!(f["result"], "rt-successful");
    assert_eq!(f["server_certificate_type"], "x509");
    assert_eq!(f["server_certificate_chain_len"], 2);
    assert_eq!(f["server_key_bits"], 512);
    let subject = f["server_certificate_subject"].as_str().unwrap();
    assert!(subject.contains("CN=ncalrpc:SERVR"), "{subject}");
    assert_eq!(f["server_random_present"], true);
    assert_ne!(f["encryption_method"], "none");
}

#[test]
fn zeek_tls12_server_flight_matches_zeek_ssl_log() {
    let Some(dir) = corpus() else { return };
    let ts = traces(&dir, "zeek_rdp-no-cookie-mstshash.pcap");
    let t = ts
        .iter()
        .find(|t| t.server.port() == 3389)
        .expect("the RDP conversation");
    let msgs = server_handshakes(t);
    let (version, suite) = msgs
        .iter()
        .find_map(|m| match m {
            tls::Handshake::ServerHello {
                version,
                selected_version,
                cipher_suite,
            } => Some((selected_version.unwrap_or(*version), *cipher_suite)),
            _ => None,
        })
        .expect("server hello");
    // Zeek ssl.log: TLSv12, TLS_RSA_WITH_AES_256_GCM_SHA384, subject == issuer == CN=CLK-456040-D.one.phoenix.gov
    assert_eq!(tls::version_name(version), "TLSv1.2");
    assert_eq!(
        tls::cipher_suite_name(suite),
        "TLS_RSA_WITH_AES_256_GCM_SHA384"
    );
    let chain = msgs
        .iter()
        .find_map(|m| match m {
            tls::Handshake::Certificate { chain } => Some(chain.clone()),
            _ => None,
        })
        .expect("certificate");
    let c = tls::cert_facts(&chain[0], 1_740_000_000).unwrap();
    assert_eq!(c.subject, "CN=CLK-456040-D.one.phoenix.gov");
    assert_eq!(c.issuer, c.subject);
    assert!(c.self_signed);
    assert_eq!(
        c.sha256,
        "2f24fa5efe1c62447b32aa41af38c4176d03a62ca9c3c8d491946ed283b86cca"
    );
    assert!(tls::check_name(&chain[0], "clk-456040-d.one.phoenix.gov"));
    assert!(msgs.contains(&tls::Handshake::ServerHelloDone));
}

#[test]
fn jovair_tls10_certificate_key_matches_the_bundled_server_key() {
    let Some(dir) = corpus() else { return };
    let ts = traces(&dir, "jovair_rdp-tls-decryptable.pcap");
    let t = ts
        .iter()
        .find(|t| t.server.port() == 3389)
        .expect("the RDP conversation");
    let msgs = server_handshakes(t);
    let Some(tls::Handshake::ServerHello { version, .. }) = msgs.first() else {
        panic!("{msgs:?}")
    };
    assert_eq!(tls::version_name(*version), "TLSv1.0");
    let chain = msgs
        .iter()
        .find_map(|m| match m {
            tls::Handshake::Certificate { chain } => Some(chain.clone()),
            _ => None,
        })
        .expect("certificate");
    let c = tls::cert_facts(&chain[0], 1_503_500_000).unwrap();
    let pem = std::fs::read(dir.join("jovair_rdp-tls-decryptable.server-key.pem")).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    assert_eq!((c.key_type.as_str(), c.key_bits), ("RSA", key.bits()));
    let x = openssl::x509::X509::from_der(&chain[0]).unwrap();
    assert!(
        x.public_key().unwrap().public_eq(&key),
        "certificate key is the bundled private key's"
    );
}

#[test]
fn zeek_proprietary_connection_domain_pdus_in_order() {
    let Some(dir) = corpus() else { return };
    let ts = traces(&dir, "zeek_rdp-proprietary-encryption.pcap");
    let t = ts
        .iter()
        .find(|t| connect_response(t).is_some())
        .expect("connection 2");
    let mut names = Vec::new();
    for dir in [Dir::C2S, Dir::S2C] {
        let s = t.stream(dir, Layer::Wire);
        for f in frames(&s)
            .into_iter()
            .filter(|f| f[0] == 3 && f.len() > 7 && f[5] == 0xf0)
        {
            let ud = &f[7..];
            if ud.starts_with(&[0x7f]) {
                continue;
            }
            let (name, facts) = mcs::classify_domain_pdu(ud).unwrap_or_else(|| panic!("{ud:02x?}"));
            let mut n = name.to_owned();
            if let Some(off) = facts.get("payload_offset").and_then(|v| v.as_u64()) {
                let (share, _) = mcs::classify_share_pdu(&ud[off as usize..], true)
                    .unwrap_or(("?", Default::default()));
                n = format!("{name} / {share}");
            }
            names.push(n);
            if names.len() >= 12 * (1 + usize::from(dir == Dir::S2C)) {
                break;
            }
        }
    }
    let text = names.join("\n");
    // client: erect domain, attach user, 6 joins, security exchange, client info; server: confirm, joins, license
    assert!(
        text.starts_with("erect domain request\nattach user request\nchannel join request"),
        "{text}"
    );
    assert!(
        text.contains("send data request / security exchange"),
        "{text}"
    );
    assert!(
        text.contains("send data request / client info (encrypted)"),
        "{text}"
    );
    assert!(text.contains("attach user confirm"), "{text}");
    assert!(
        text.contains("send data indication / license pdu (encrypted)"),
        "{text}"
    );
    assert_eq!(text.matches("channel join confirm").count(), 6, "{text}");
}

/// With the bundled server key, the static-RSA TLS 1.0 session decrypts and every stage decodes as
/// INDEX.md's decrypted tshark view says; with another server's key it says so and falls back to
/// the record-size view.
#[test]
fn jovair_rsa_key_decrypts_the_whole_connection_sequence() {
    let Some(dir) = corpus() else { return };
    let read = |keylog: rdprobe::capture::reader::KeyLog| {
        let f = File::open(dir.join("jovair_rdp-tls-decryptable.pcap")).unwrap();
        let opts = ReaderOptions {
            keylog: Some(keylog),
            ..ReaderOptions::default()
        };
        let t = read_conversations(BufReader::new(f), opts)
            .unwrap()
            .filter_map(Result::ok)
            .find(|t| t.server.port() == 3389)
            .expect("the RDP conversation");
        rdprobe::decode::decode_report(&t)
    };
    let mut kl = rdprobe::capture::reader::KeyLog::default();
    let pem = std::fs::read(dir.join("jovair_rdp-tls-decryptable.server-key.pem")).unwrap();
    kl.add_rsa_key(&pem)
        .expect("the bundled key (PEM after Bag Attributes lines)");
    let r = read(kl);
    let stage = |name: &str| {
        r.stages
            .iter()
            .find(|s| s.stage.as_str() == name)
            .unwrap_or_else(|| panic!("no {name} stage: {r:?}"))
    };
    let frames = |name: &str| stage(name).frames.clone();
    assert_eq!(frames("x224"), vec![4, 6]);
    assert_eq!(frames("tls"), vec![8, 9, 11, 12]);
    assert_eq!(frames("mcs"), vec![14, 15]);
    assert_eq!(frames("security"), vec![40]);
    assert_eq!(frames("licensing"), vec![41]);
    assert_eq!(&frames("capabilities")[..2], &[43, 45]);
    let mcs = &stage("mcs").facts;
    assert_eq!(mcs["client_name"], "doskop");
    assert_eq!(mcs["client_build"], 2600);
    assert_eq!(mcs["keyboard_layout"], "0x00000409");
    assert_eq!(
        mcs["channels"],
        serde_json::json!(["cliprdr", "rdpsnd", "snddbg", "rdpdr"])
    );
    assert_eq!(mcs["encryption_method"], "none");
    assert_eq!(
        stage("licensing").facts["license_error_code"],
        "STATUS_VALID_CLIENT"
    );
    assert_eq!(r.last_stage.as_str(), "connected");
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("close_notify from client")),
        "the client's close_notify is visible only decrypted: {:?}",
        r.notes
    );

    // Another server's key: a clear note, and the stages come from record sizes as without a key.
    let other = openssl::rsa::Rsa::generate(2048).unwrap();
    let mut kl = rdprobe::capture::reader::KeyLog::default();
    kl.add_rsa_key(&other.private_key_to_pem().unwrap())
        .unwrap();
    let r = read(kl);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("does not decrypt this session's premaster secret")),
        "{:?}",
        r.notes
    );
    assert!(r.stages.iter().all(|s| s.stage.as_str() != "licensing"));
    assert_eq!(r.last_stage.as_str(), "connected");
}
