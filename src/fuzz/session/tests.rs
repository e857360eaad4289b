//! The session at its public boundary: `run_case` against the embedded lab on a free loopback
//! port, and against peers that never answer.

use super::*;
use crate::fuzz::channels::{ChannelsCase, ChannelsMutation};
use crate::fuzz::credssp::{CredsspCase, CredsspMutation};
use crate::fuzz::mcs::{McsCase, McsMutation};
use crate::fuzz::security::{SecurityCase, SecurityMutation};
use crate::fuzz::tls::{TlsCase, TlsMutation};
use crate::fuzz::x224::{X224Case, X224Mutation};
use ironrdp_connector::Sequence as _;

fn lab(scenario: &str) -> crate::lab::LabHandle {
    let s = crate::scenario::builtin(scenario).expect("built-in scenario");
    crate::lab::spawn_lab(SocketAddr::from(([127, 0, 0, 1], 0)), s).expect("lab on loopback")
}

/// A target with short waits; `nla`: the lab's user (healthy-nla accepts user/pass).
fn target(addr: SocketAddr, nla: bool) -> Target {
    let mut t = Target::new(addr);
    t.timeout = Duration::from_secs(3);
    t.quiet = Duration::from_millis(500);
    if nla {
        t.credentials = Some(Credentials {
            user: "user".into(),
            domain: None,
            password: "pass".into(),
        });
    }
    t
}

fn credssp(round: u8, mutations: Vec<CredsspMutation>) -> Case {
    Case::Credssp(CredsspCase { round, mutations })
}

/// Runs `case` and checks its class and that the detail says `words`.
async fn expect(what: &str, t: &Target, case: &Case, class: ResponseClass, words: &str) -> CaseRun {
    let r = run_case(t, case).await;
    assert_eq!(r.class, class, "{what}: {}", r.detail);
    assert!(r.detail.contains(words), "{what}: {}", r.detail);
    r
}

/// A valid case goes through the valid stages before its own (IronRDP's connector up to MCS,
/// CredSSP with or without credentials, standard RDP security after a downgrade) and gets the
/// lab's valid answer to the stage's PDU, sent once, with its answer timed.
#[tokio::test]
async fn a_valid_case_completes_at_each_stage() {
    let nla = lab("healthy-nla");
    let tls = lab("healthy-tls");
    let rdp = lab("rdp-security-only");
    let valid = Case::valid;
    let rows: Vec<(&str, Target, Case, &str)> = vec![
        (
            "x224",
            target(nla.addr, false),
            valid(FuzzStage::X224),
            "selected protocol 0x8",
        ),
        (
            "tls",
            target(nla.addr, false),
            valid(FuzzStage::Tls),
            "server hello",
        ),
        (
            "credssp 1",
            target(nla.addr, false),
            valid(FuzzStage::Credssp),
            "TSRequest",
        ),
        (
            "credssp 2",
            target(nla.addr, true),
            credssp(2, vec![]),
            "round 2: TSRequest",
        ),
        (
            "credssp 3",
            target(nla.addr, true),
            credssp(3, vec![]),
            "SUCCESS",
        ),
        (
            "mcs",
            target(tls.addr, false),
            valid(FuzzStage::Mcs),
            "rt-successful",
        ),
        (
            "mcs after NLA",
            target(nla.addr, true),
            valid(FuzzStage::Mcs),
            "rt-successful",
        ),
        (
            "channels",
            target(tls.addr, false),
            valid(FuzzStage::Channels),
            "4 channel joins",
        ),
        (
            "channels after NLA",
            target(nla.addr, true),
            valid(FuzzStage::Channels),
            "4 channel joins",
        ),
        // rdp-security-only selects PROTOCOL_RDP whatever was requested.
        (
            "mcs downgraded",
            target(rdp.addr, false),
            valid(FuzzStage::Mcs),
            "rt-successful",
        ),
        (
            "channels downgraded",
            target(rdp.addr, false),
            valid(FuzzStage::Channels),
            "4 channel joins",
        ),
        (
            "security",
            target(rdp.addr, false),
            valid(FuzzStage::Security),
            "STATUS_VALID_CLIENT",
        ),
    ];
    for (what, t, case, words) in rows {
        let r = expect(what, &t, &case, ResponseClass::ValidReply, words).await;
        assert!(!r.sent.is_empty(), "{what}: nothing sent");
        assert!(r.answer_time.is_some(), "{what}: the answer was not timed");
        let notes = r
            .trace
            .events
            .iter()
            .filter(
                |e| matches!(&e.kind, EventKind::Note(n) if n.starts_with("rdprobe fuzz: mutated")),
            )
            .count();
        assert!(
            notes >= 1,
            "{what}: the case's PDU is not noted in the trace"
        );
    }
}

/// A mutated PDU at each stage gets the lab's answer of its kind: a refusal, a close, or the
/// close after the fuzzer's FIN when a length field promised more bytes.
#[tokio::test]
async fn a_mutated_case_gets_the_answer_of_its_kind_at_each_stage() {
    use ResponseClass as C;
    let nla = lab("healthy-nla");
    let tls = lab("healthy-tls");
    let rdp = lab("rdp-security-only");
    let x224 = |m| Case::X224(X224Case { mutations: vec![m] });
    let mcs = |m| Case::Mcs(McsCase { mutations: vec![m] });
    let rows: Vec<(&str, Target, Case, C, &str)> = vec![
        (
            "x224 protocols",
            target(nla.addr, false),
            x224(X224Mutation::NegProtocols(0x100)),
            C::ErrorReply,
            "RDP_NEG_FAILURE",
        ),
        (
            "x224 long tpkt",
            target(nla.addr, false),
            x224(X224Mutation::TpktLength(200)),
            C::AwaitedMore,
            "after the client's FIN",
        ),
        (
            "x224 tpdu code",
            target(nla.addr, false),
            x224(X224Mutation::TpduCode(0xd0)),
            C::Close,
            "without a reply",
        ),
        (
            "tls handshake type",
            target(nla.addr, false),
            Case::Tls(TlsCase {
                mutations: vec![TlsMutation::HandshakeType(2)],
            }),
            C::ErrorReply,
            "TLS alert",
        ),
        (
            "credssp 1 tag",
            target(nla.addr, false),
            credssp(1, vec![CredsspMutation::OuterTag(0x31)]),
            C::AwaitedMore,
            "after the client's FIN",
        ),
        (
            "credssp 2 no token",
            target(nla.addr, true),
            credssp(2, vec![CredsspMutation::NoNegoTokens]),
            C::ErrorReply,
            "STATUS_LOGON_FAILURE",
        ),
        (
            "mcs tag",
            target(tls.addr, false),
            mcs(McsMutation::ConnectInitialTag(0x66)),
            C::Close,
            "without a reply",
        ),
        (
            "mcs long tpkt",
            target(tls.addr, false),
            mcs(McsMutation::TpktLength(2000)),
            C::AwaitedMore,
            "after the client's FIN",
        ),
        (
            "channels join id",
            target(tls.addr, false),
            Case::Channels(ChannelsCase {
                mutations: vec![ChannelsMutation::JoinChannel { index: 1, id: 7 }],
            }),
            C::Close,
            "join confirm 1",
        ),
        (
            "security user name length",
            target(rdp.addr, false),
            Case::Security(SecurityCase {
                mutations: vec![SecurityMutation::InfoLength {
                    field: 1,
                    value: 0xfff0,
                }],
            }),
            C::Close,
            "without a reply",
        ),
    ];
    for (what, t, case, class, words) in rows {
        expect(what, &t, &case, class, words).await;
    }
}

/// The bytes before the case are IronRDP's connector's: the X.224 Connection Request it writes,
/// and, for the confirm the lab sent, its Connect Initial (the joins awaited: no
/// SUPPORT_SKIP_CHANNELJOIN) naming the fuzzer's static channels.
#[tokio::test]
async fn the_prefix_is_the_connectors() {
    use ironrdp_pdu::gcc::ClientEarlyCapabilityFlags as F;
    let tls = lab("healthy-tls");
    let t = target(tls.addr, false);
    let r = expect(
        "channels",
        &t,
        &Case::valid(FuzzStage::Channels),
        ResponseClass::ValidReply,
        "joins",
    )
    .await;
    let c2s = r.trace.stream(Dir::C2S, Layer::Wire);
    let s2c = r.trace.stream(Dir::S2C, Layer::Wire);
    let inner = r.trace.stream(Dir::C2S, Layer::Inner);
    let ssl = SecurityProtocol::SSL;
    let mut c = connector(&t, ssl, r.trace.client);
    let mut out = WriteBuf::new();
    c.initiate_with_security_protocol(ssl, &mut out).unwrap();
    assert!(
        c2s.starts_with(out.filled()),
        "the X.224 request is not the connector's"
    );
    let confirm_len = usize::from(u16::from_be_bytes([s2c[2], s2c[3]]));
    out.clear();
    c.step(&s2c[..confirm_len], None, &mut out).unwrap();
    c.mark_security_upgrade_as_done();
    out.clear();
    c.step_no_input(&mut out).unwrap();
    let ci = joins_awaited(out.filled()).unwrap();
    assert_ne!(
        &ci[..],
        out.filled(),
        "the skip-channel-join flag was not cleared"
    );
    assert!(
        inner.starts_with(&ci),
        "the Connect Initial is not the connector's"
    );
    let data =
        ironrdp_core::decode::<ironrdp_pdu::x224::X224<ironrdp_pdu::x224::X224Data<'_>>>(&ci)
            .unwrap()
            .0
            .data;
    let sent = ironrdp_core::decode::<ironrdp_pdu::mcs::ConnectInitial>(&data).unwrap();
    let blocks = sent.conference_create_request.gcc_blocks();
    let flags = blocks.core.optional_data.early_capability_flags.unwrap();
    assert!(!flags.contains(F::SUPPORT_SKIP_CHANNELJOIN));
    let names: Vec<String> = blocks
        .network
        .iter()
        .flat_map(|n| n.channels.iter())
        .filter_map(|c| c.name.as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, crate::fuzz::mcs::BASE_CHANNELS, "static channels");
}

/// A peer that accepts and never answers: a case at the first stage ends as silence after the
/// quiet time and the FIN grace; a case at a later stage ends in its prefix at the stage timeout.
/// A server that goes silent after the X.224 exchange stops the TLS upgrade at its deadline.
#[tokio::test]
async fn deadlines_hold_against_a_silent_peer() {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut t = Target::new(addr);
    t.timeout = Duration::from_millis(600);
    t.quiet = Duration::from_millis(300);
    let bound = t.quiet + t.timeout + Duration::from_millis(700);

    let r = run_case(&t, &Case::valid(FuzzStage::X224)).await;
    assert_eq!(r.class, ResponseClass::Silence, "{}", r.detail);
    assert!(r.elapsed < bound, "x224 took {:?}", r.elapsed);
    assert!(
        r.elapsed >= t.quiet + t.timeout,
        "x224 ended early: {:?}",
        r.elapsed
    );
    assert!(r.answer_time.is_some());

    for stage in [FuzzStage::Tls, FuzzStage::Mcs, FuzzStage::Channels] {
        let r = run_case(&t, &Case::valid(stage)).await;
        assert_eq!(r.class, ResponseClass::Silence, "{stage}: {}", r.detail);
        assert!(
            r.detail.starts_with("x224 confirm"),
            "{stage}: {}",
            r.detail
        );
        assert!(
            r.elapsed < t.timeout + Duration::from_millis(700),
            "{stage} took {:?}",
            r.elapsed
        );
        assert!(
            r.sent.is_empty() && r.answer_time.is_none(),
            "{stage}: the case was sent"
        );
    }
    held.abort();

    let drop = lab("firewall-drop-after-x224");
    let mut t = Target::new(drop.addr);
    t.timeout = Duration::from_millis(600);
    t.quiet = Duration::from_millis(300);
    let r = run_case(&t, &Case::valid(FuzzStage::Mcs)).await;
    assert_eq!(r.class, ResponseClass::PrefixFailed, "{}", r.detail);
    assert!(
        r.detail.contains("tls: handshake timed out"),
        "{}",
        r.detail
    );
    assert!(
        r.elapsed < t.timeout + Duration::from_millis(700),
        "took {:?}",
        r.elapsed
    );
}

/// The x224 stage's valid case is the connector's Connection Request byte for byte, for every
/// requestedProtocols the session uses: a case's mutations are of the PDU the connector sends.
#[test]
fn the_valid_x224_case_is_the_connectors_request() {
    let t = Target::new(SocketAddr::from(([127, 0, 0, 1], 3389)));
    for p in [0, 0x1, ALL_ENHANCED] {
        let protocols = SecurityProtocol::from_bits_truncate(p);
        let mut c = connector(&t, protocols, t.addr);
        let mut out = WriteBuf::new();
        c.initiate_with_security_protocol(protocols, &mut out)
            .unwrap();
        let ctx = EncodeCtx {
            requested_protocols: p,
            ..EncodeCtx::default()
        };
        assert_eq!(
            out.filled(),
            &crate::fuzz::x224::encode(&[], &ctx)[..],
            "requestedProtocols 0x{p:x}"
        );
    }
}
