//! `rdprobe explain` tables and `diagnose()`: snapshot tests of explain output, completeness of every
//! table against its specification, and one hand-built ConnectionReport per cause the diagnosis must
//! put first.

use expect_test::expect;
use serde_json::{json, Value};

use ironrdp_pdu::nego::SecurityProtocol;
use rdprobe::decode::x224::parse_protocol_names;
use rdprobe::diagnose::{
    self, explain, explain_str, render_diagnosis, render_explanations, FaultClass,
};
use rdprobe::report::{ConnectionReport, StageReport};
use rdprobe::stage::{AuthFailure, FailureKind, NegFailure, Side, Stage, TlsAlert, Verdict};

// ------------------------------------------------------------------------------------------------
// explain: snapshots
// ------------------------------------------------------------------------------------------------

#[test]
fn explain_0x904_ext_0x7_snapshot() {
    let out = render_explanations(&explain_str("0x904", Some("0x7")).unwrap());
    expect![[r#"
        0x904 (2308)  mstsc disconnect  disconnectReasonAtClientWinsockFDCLOSE
          meaning: socket closed: the TCP connection was closed (FIN) or reset (RST) under the client during
                   connection setup or the session. During setup it covers a firewall or IPS resetting the port,
                   endpoint security killing the socket at the TLS ClientHello, a server that cannot use its
                   certificate or keys, a security-layer / NLA mismatch the server answers with a close, packet loss,
                   and a server denying the connection. rdprobe's verdict tells them apart: refused or timed out at
                   tcp = firewall or Remote Desktop off; RST right after the ClientHello with no TLS alert = endpoint
                   security or an IPS; FIN or handshake_failure right after the ClientHello = the server cannot use
                   its certificate or keys; RDP_NEG_FAILURE or a protocol mismatch at x224 = security-layer / NLA
                   policy; a timeout mid-stage = packet loss; an auth failure at credssp = credentials
          stage:   tls
          tells the causes apart: rdprobe probe HOST --stop-after tls --pcap out.pcapng

        0x7 (7)  extended reason  exDiscReasonServerDeniedConnection
          meaning: with 0x904 this value comes from mstsc itself, not from the server: the socket closed (FIN or RST)
                   while the connection was still being set up and the server had sent no Set Error Info, so the
                   client guessed 'server denied the connection'. It narrows 0x904 to the setup phase (X.224, TLS,
                   CredSSP); the stage where rdprobe sees the connection die tells the causes apart
          stage:   tls
          tells the causes apart: rdprobe probe HOST --stop-after tls --pcap out.pcapng
    "#]]
    .assert_eq(&out);
    // The same through the numeric API and decimal text.
    assert_eq!(
        explain(0x904, Some(7)),
        explain_str("2308", Some("7")).unwrap()
    );
}

#[test]
fn explain_logon_failure_snapshot() {
    let out = render_explanations(&explain_str("STATUS_LOGON_FAILURE", None).unwrap());
    expect![[r#"
        0xC000006D (3221225581)  ntstatus  STATUS_LOGON_FAILURE
          meaning: the user name or password is wrong (the server does not say which)
          stage:   credssp
          tells the causes apart: rdprobe probe HOST --user USER --stop-after credssp --pcap out.pcapng
    "#]]
    .assert_eq(&out);
    // Hex, bare hex and the signed decimal form some logs print give the same answer.
    for s in ["0xC000006D", "c000006d", "-1073741715", "3221225581"] {
        assert_eq!(
            explain_str(s, None).unwrap(),
            explain_str("STATUS_LOGON_FAILURE", None).unwrap(),
            "{s}"
        );
    }
}

#[test]
fn explain_hybrid_required_snapshot() {
    let out = render_explanations(&explain_str("hybrid_required_by_server", None).unwrap());
    expect![[r#"
        0x5 (5)  negotiation failure  HYBRID_REQUIRED_BY_SERVER
          meaning: the server requires CredSSP / Network Level Authentication and the client did not offer it (policy
                   'Require user authentication for remote connections by using Network Level Authentication')
          stage:   x224
          tells the causes apart: rdprobe enum HOST
    "#]]
    .assert_eq(&out);
}

#[test]
fn explain_code_known_in_several_tables() {
    // 0x3 is an mstsc reason, a Set Error Info code and an RDP_NEG_FAILURE code.
    let kinds: Vec<&str> = explain(0x3, None).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        ["mstsc disconnect", "set error info", "negotiation failure"]
    );
    let out = render_explanations(&explain(0x3, None));
    expect![[r#"
        0x3 (3)  mstsc disconnect  disconnectReasonByServer
          meaning: the server disconnected the session (not an error code by itself; the extended reason says why)
          stage:   connected
          tells the causes apart: rdprobe probe HOST --user USER --pcap out.pcapng

        0x3 (3)  set error info  ERRINFO_IDLE_TIMEOUT
          meaning: the server's idle session limit elapsed
          stage:   connected
          tells the causes apart: rdprobe probe HOST --user USER --pcap out.pcapng

        0x3 (3)  negotiation failure  SSL_CERT_NOT_ON_SERVER
          meaning: the server has no usable authentication certificate and cannot start TLS: its certificate is
                   missing or its private key cannot be read or created (MachineKeys permissions, often after cloning
                   a VM)
          stage:   x224
          tells the causes apart: rdprobe enum HOST
    "#]]
    .assert_eq(&out);
}

#[test]
fn explain_extended_protocol_range_is_set_error_info() {
    let ex = explain(0x3, Some(0x10D3));
    let last = ex.last().unwrap();
    assert_eq!(last.kind, "extended reason");
    assert_eq!(last.name, "ERRINFO_CONNECT_FAILED");
    assert!(last.meaning.contains("Set Error Info"), "{}", last.meaning);
}

#[test]
fn explain_str_errors_and_unknowns() {
    assert!(explain_str("not a code!", None).is_err());
    assert!(explain_str("", None).is_err());
    assert!(explain_str("0x904", Some("??")).is_err());
    assert_eq!(
        explain_str("0x904", None).unwrap().len(),
        1,
        "0x904 alone is one mstsc reason"
    );
    assert!(explain_str("STATUS_NO_SUCH_THING", None)
        .unwrap()
        .is_empty());
    assert!(explain(0xDEAD_BEEF, None).is_empty());
    // The error message is lowercase without trailing punctuation (house style).
    let msg = explain_str("a b", None).unwrap_err().to_string();
    assert!(msg.starts_with("cannot read"), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    // Names of the extended reasons work for --ext.
    let ex = explain_str("0x904", Some("exDiscReasonServerDeniedConnection")).unwrap();
    assert_eq!(ex.len(), 2);
}

#[test]
fn explanations_serialize_for_json() {
    let v = serde_json::to_value(explain(0x904, Some(7))).unwrap();
    assert_eq!(v[0]["kind"], "mstsc disconnect");
    assert_eq!(v[0]["stage"], "tls");
    assert_eq!(v[1]["code"], "0x7");
}

// ------------------------------------------------------------------------------------------------
// explain: completeness against the specifications
// ------------------------------------------------------------------------------------------------

fn assert_table(kind: &str, expected: &[(u32, &str)]) {
    for (code, name) in expected {
        let ex = explain(*code, None);
        let found = ex.iter().find(|e| e.kind == kind);
        let Some(e) = found else {
            panic!("{kind} 0x{code:X} {name} missing (got {ex:?})");
        };
        assert_eq!(e.name, *name, "{kind} 0x{code:X}");
        assert!(
            !e.meaning.is_empty() && !e.command.is_empty(),
            "{kind} 0x{code:X} needs meaning and command"
        );
        assert!(
            e.command.starts_with("rdprobe "),
            "{kind} 0x{code:X}: {}",
            e.command
        );
        // The name alone finds it too.
        let by_name = explain_str(name, None).unwrap();
        assert!(
            by_name.iter().any(|x| x.kind == kind && x.code == e.code),
            "{name} by name"
        );
    }
}

/// MS-RDPBCGR 2.2.1.2.2 RDP_NEG_FAILURE failureCode.
#[test]
fn negotiation_failure_table_is_complete() {
    assert_table(
        "negotiation failure",
        &[
            (0x1, "SSL_REQUIRED_BY_SERVER"),
            (0x2, "SSL_NOT_ALLOWED_BY_SERVER"),
            (0x3, "SSL_CERT_NOT_ON_SERVER"),
            (0x4, "INCONSISTENT_FLAGS"),
            (0x5, "HYBRID_REQUIRED_BY_SERVER"),
            (0x6, "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER"),
        ],
    );
}

/// The names decode::x224 reports must be the names explain knows.
#[test]
fn negotiation_failure_names_match_the_decoder() {
    for code in 1..=7u32 {
        let name = rdprobe::decode::x224::failure_code_name(code);
        let ex = explain(code, None);
        assert!(
            ex.iter()
                .any(|e| e.kind == "negotiation failure" && e.name == name),
            "{code} {name}"
        );
    }
}

/// MS-RDPBCGR 2.2.5.1.1 Set Error Info errorInfo, every value.
#[test]
fn set_error_info_table_is_complete() {
    assert_table(
        "set error info",
        &[
            (0x0000_0000, "ERRINFO_NONE"),
            (0x0000_0001, "ERRINFO_RPC_INITIATED_DISCONNECT"),
            (0x0000_0002, "ERRINFO_RPC_INITIATED_LOGOFF"),
            (0x0000_0003, "ERRINFO_IDLE_TIMEOUT"),
            (0x0000_0004, "ERRINFO_LOGON_TIMEOUT"),
            (0x0000_0005, "ERRINFO_DISCONNECTED_BY_OTHER_CONNECTION"),
            (0x0000_0006, "ERRINFO_OUT_OF_MEMORY"),
            (0x0000_0007, "ERRINFO_SERVER_DENIED_CONNECTION"),
            (0x0000_0009, "ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES"),
            (0x0000_000A, "ERRINFO_SERVER_FRESH_CREDENTIALS_REQUIRED"),
            (0x0000_000B, "ERRINFO_RPC_INITIATED_DISCONNECT_BY_USER"),
            (0x0000_000C, "ERRINFO_LOGOFF_BY_USER"),
            (0x0000_000F, "ERRINFO_CLOSE_STACK_ON_DRIVER_NOT_READY"),
            (0x0000_0010, "ERRINFO_SERVER_DWM_CRASH"),
            (0x0000_0011, "ERRINFO_CLOSE_STACK_ON_DRIVER_FAILURE"),
            (0x0000_0012, "ERRINFO_CLOSE_STACK_ON_DRIVER_IFACE_FAILURE"),
            (0x0000_0017, "ERRINFO_SERVER_WINLOGON_CRASH"),
            (0x0000_0018, "ERRINFO_SERVER_CSRSS_CRASH"),
            (0x0000_0019, "ERRINFO_SERVER_SHUTDOWN"),
            (0x0000_001A, "ERRINFO_SERVER_REBOOT"),
            (0x0000_0100, "ERRINFO_LICENSE_INTERNAL"),
            (0x0000_0101, "ERRINFO_LICENSE_NO_LICENSE_SERVER"),
            (0x0000_0102, "ERRINFO_LICENSE_NO_LICENSE"),
            (0x0000_0103, "ERRINFO_LICENSE_BAD_CLIENT_MSG"),
            (0x0000_0104, "ERRINFO_LICENSE_HWID_DOESNT_MATCH_LICENSE"),
            (0x0000_0105, "ERRINFO_LICENSE_BAD_CLIENT_LICENSE"),
            (0x0000_0106, "ERRINFO_LICENSE_CANT_FINISH_PROTOCOL"),
            (0x0000_0107, "ERRINFO_LICENSE_CLIENT_ENDED_PROTOCOL"),
            (0x0000_0108, "ERRINFO_LICENSE_BAD_CLIENT_ENCRYPTION"),
            (0x0000_0109, "ERRINFO_LICENSE_CANT_UPGRADE_LICENSE"),
            (0x0000_010A, "ERRINFO_LICENSE_NO_REMOTE_CONNECTIONS"),
            (0x0000_0400, "ERRINFO_CB_DESTINATION_NOT_FOUND"),
            (0x0000_0402, "ERRINFO_CB_LOADING_DESTINATION"),
            (0x0000_0404, "ERRINFO_CB_REDIRECTING_TO_DESTINATION"),
            (0x0000_0405, "ERRINFO_CB_SESSION_ONLINE_VM_WAKE"),
            (0x0000_0406, "ERRINFO_CB_SESSION_ONLINE_VM_BOOT"),
            (0x0000_0407, "ERRINFO_CB_SESSION_ONLINE_VM_NO_DNS"),
            (0x0000_0408, "ERRINFO_CB_DESTINATION_POOL_NOT_FREE"),
            (0x0000_0409, "ERRINFO_CB_CONNECTION_CANCELLED"),
            (0x0000_0410, "ERRINFO_CB_CONNECTION_ERROR_INVALID_SETTINGS"),
            (0x0000_0411, "ERRINFO_CB_SESSION_ONLINE_VM_BOOT_TIMEOUT"),
            (0x0000_0412, "ERRINFO_CB_SESSION_ONLINE_VM_SESSMON_FAILED"),
            (0x0000_10C9, "ERRINFO_UNKNOWN_DATA_PDU_TYPE"),
            (0x0000_10CA, "ERRINFO_UNKNOWN_PDU_TYPE"),
            (0x0000_10CB, "ERRINFO_DATA_PDU_SEQUENCE"),
            (0x0000_10CD, "ERRINFO_CONTROL_PDU_SEQUENCE"),
            (0x0000_10CE, "ERRINFO_INVALID_CONTROL_PDU_ACTION"),
            (0x0000_10CF, "ERRINFO_INVALID_INPUT_PDU_TYPE"),
            (0x0000_10D0, "ERRINFO_INVALID_INPUT_PDU_MOUSE"),
            (0x0000_10D1, "ERRINFO_INVALID_REFRESH_RECT_PDU"),
            (0x0000_10D2, "ERRINFO_CREATE_USER_DATA_FAILED"),
            (0x0000_10D3, "ERRINFO_CONNECT_FAILED"),
            (0x0000_10D4, "ERRINFO_CONFIRM_ACTIVE_HAS_WRONG_SHAREID"),
            (0x0000_10D5, "ERRINFO_CONFIRM_ACTIVE_HAS_WRONG_ORIGINATOR"),
            (0x0000_10DA, "ERRINFO_PERSISTENT_KEY_PDU_BAD_LENGTH"),
            (0x0000_10DB, "ERRINFO_PERSISTENT_KEY_PDU_ILLEGAL_FIRST"),
            (
                0x0000_10DC,
                "ERRINFO_PERSISTENT_KEY_PDU_TOO_MANY_TOTAL_KEYS",
            ),
            (
                0x0000_10DD,
                "ERRINFO_PERSISTENT_KEY_PDU_TOO_MANY_CACHE_KEYS",
            ),
            (0x0000_10DE, "ERRINFO_INPUT_PDU_BAD_LENGTH"),
            (0x0000_10DF, "ERRINFO_BITMAP_CACHE_ERROR_PDU_BAD_LENGTH"),
            (0x0000_10E0, "ERRINFO_SECURITY_DATA_TOO_SHORT"),
            (0x0000_10E1, "ERRINFO_VCHANNEL_DATA_TOO_SHORT"),
            (0x0000_10E2, "ERRINFO_SHARE_DATA_TOO_SHORT"),
            (0x0000_10E3, "ERRINFO_BAD_SUPPRESS_OUTPUT_PDU"),
            (0x0000_10E5, "ERRINFO_CONFIRM_ACTIVE_PDU_TOO_SHORT"),
            (0x0000_10E7, "ERRINFO_CAPABILITY_SET_TOO_SMALL"),
            (0x0000_10E8, "ERRINFO_CAPABILITY_SET_TOO_LARGE"),
            (0x0000_10E9, "ERRINFO_NO_CURSOR_CACHE"),
            (0x0000_10EA, "ERRINFO_BAD_CAPABILITIES"),
            (0x0000_10EC, "ERRINFO_VIRTUAL_CHANNEL_DECOMPRESSION"),
            (0x0000_10ED, "ERRINFO_INVALID_VC_COMPRESSION_TYPE"),
            (0x0000_10EF, "ERRINFO_INVALID_CHANNEL_ID"),
            (0x0000_10F0, "ERRINFO_VCHANNELS_TOO_MANY"),
            (0x0000_10F3, "ERRINFO_REMOTEAPP_NOT_ENABLED"),
            (0x0000_10F4, "ERRINFO_CACHE_CAP_NOT_SET"),
            (0x0000_10F5, "ERRINFO_BITMAP_CACHE_ERROR_PDU_BAD_LENGTH2"),
            (0x0000_10F6, "ERRINFO_OFFSCREEN_CACHE_ERROR_PDU_BAD_LENGTH"),
            (
                0x0000_10F7,
                "ERRINFO_DRAWNINEGRID_CACHE_ERROR_PDU_BAD_LENGTH",
            ),
            (0x0000_10F8, "ERRINFO_GDIPLUS_PDU_BAD_LENGTH"),
            (0x0000_1111, "ERRINFO_SECURITY_DATA_TOO_SHORT2"),
            (0x0000_1112, "ERRINFO_SECURITY_DATA_TOO_SHORT3"),
            (0x0000_1113, "ERRINFO_SECURITY_DATA_TOO_SHORT4"),
            (0x0000_1114, "ERRINFO_SECURITY_DATA_TOO_SHORT5"),
            (0x0000_1115, "ERRINFO_SECURITY_DATA_TOO_SHORT6"),
            (0x0000_1116, "ERRINFO_SECURITY_DATA_TOO_SHORT7"),
            (0x0000_1117, "ERRINFO_SECURITY_DATA_TOO_SHORT8"),
            (0x0000_1118, "ERRINFO_SECURITY_DATA_TOO_SHORT9"),
            (0x0000_1119, "ERRINFO_SECURITY_DATA_TOO_SHORT10"),
            (0x0000_111A, "ERRINFO_SECURITY_DATA_TOO_SHORT11"),
            (0x0000_111B, "ERRINFO_SECURITY_DATA_TOO_SHORT12"),
            (0x0000_111C, "ERRINFO_SECURITY_DATA_TOO_SHORT13"),
            (0x0000_111D, "ERRINFO_SECURITY_DATA_TOO_SHORT14"),
            (0x0000_111E, "ERRINFO_SECURITY_DATA_TOO_SHORT15"),
            (0x0000_111F, "ERRINFO_SECURITY_DATA_TOO_SHORT16"),
            (0x0000_1120, "ERRINFO_SECURITY_DATA_TOO_SHORT17"),
            (0x0000_1121, "ERRINFO_SECURITY_DATA_TOO_SHORT18"),
            (0x0000_1122, "ERRINFO_SECURITY_DATA_TOO_SHORT19"),
            (0x0000_1123, "ERRINFO_SECURITY_DATA_TOO_SHORT20"),
            (0x0000_1124, "ERRINFO_SECURITY_DATA_TOO_SHORT21"),
            (0x0000_1125, "ERRINFO_SECURITY_DATA_TOO_SHORT22"),
            (0x0000_1126, "ERRINFO_SECURITY_DATA_TOO_SHORT23"),
            (0x0000_1129, "ERRINFO_BAD_MONITOR_DATA"),
            (0x0000_112A, "ERRINFO_VC_DECOMPRESSED_REASSEMBLE_FAILED"),
            (0x0000_112B, "ERRINFO_VC_DATA_TOO_LONG"),
            (0x0000_112C, "ERRINFO_BAD_FRAME_ACK_DATA"),
            (0x0000_112D, "ERRINFO_GRAPHICS_MODE_NOT_SUPPORTED"),
            (0x0000_112E, "ERRINFO_GRAPHICS_SUBSYSTEM_RESET_FAILED"),
            (0x0000_112F, "ERRINFO_GRAPHICS_SUBSYSTEM_FAILED"),
            (0x0000_1130, "ERRINFO_TIMEZONE_KEY_NAME_LENGTH_TOO_SHORT"),
            (0x0000_1131, "ERRINFO_TIMEZONE_KEY_NAME_LENGTH_TOO_LONG"),
            (0x0000_1132, "ERRINFO_DYNAMIC_DST_DISABLED_FIELD_MISSING"),
            (0x0000_1133, "ERRINFO_VC_DECODING_ERROR"),
            (0x0000_1134, "ERRINFO_VIRTUALDESKTOPTOOLARGE"),
            (0x0000_1135, "ERRINFO_MONITORGEOMETRYVALIDATIONFAILED"),
            (0x0000_1136, "ERRINFO_INVALIDMONITORCOUNT"),
            (0x0000_1191, "ERRINFO_UPDATE_SESSION_KEY_FAILED"),
            (0x0000_1192, "ERRINFO_DECRYPT_FAILED"),
            (0x0000_1193, "ERRINFO_ENCRYPT_FAILED"),
            (0x0000_1194, "ERRINFO_ENCRYPTION_PACKAGE_MISMATCH"),
            (0x0000_1195, "ERRINFO_DECRYPT_FAILED2"),
        ],
    );
}

/// Microsoft "IMsTscAxEvents::OnDisconnected": the documented disconnect reasons.
#[test]
fn mstsc_disconnect_table_is_complete() {
    assert_table(
        "mstsc disconnect",
        &[
            (0, "disconnectReasonNoInfo"),
            (1, "disconnectReasonLocalNotError"),
            (2, "disconnectReasonRemoteByUser"),
            (3, "disconnectReasonByServer"),
            (260, "disconnectReasonDNSLookupFailed"),
            (262, "disconnectReasonOutOfMemory"),
            (264, "disconnectReasonConnectionTimedOut"),
            (516, "disconnectReasonSocketConnectFailed"),
            (518, "disconnectReasonOutOfMemory2"),
            (520, "disconnectReasonHostNotFound"),
            (772, "disconnectReasonWinsockSendFailed"),
            (774, "disconnectReasonOutOfMemory3"),
            (776, "disconnectReasonInvalidIPAddr"),
            (1028, "disconnectReasonSocketRecvFailed"),
            (1030, "disconnectReasonInvalidSecurityData"),
            (1032, "disconnectReasonInternalError"),
            (1286, "disconnectReasonInvalidEncryption"),
            (1288, "disconnectReasonDNSLookupFailed2"),
            (1540, "disconnectReasonGetHostByNameFailed"),
            (1542, "disconnectReasonInvalidServerSecurityInfo"),
            (1544, "disconnectReasonTimerError"),
            (1796, "disconnectReasonTimeoutOccurred"),
            (1798, "disconnectReasonServerCertificateUnpackErr"),
            (2052, "disconnectReasonInvalidIP"),
            (2056, "disconnectReasonLicensingFailed"),
            (2308, "disconnectReasonAtClientWinsockFDCLOSE"),
            (2310, "disconnectReasonInternalSecurityError"),
            (2312, "disconnectReasonLicensingTimeout"),
            (2566, "disconnectReasonInternalSecurityError2"),
            (2822, "disconnectReasonEncryptionError"),
            (3078, "disconnectReasonDecryptionError"),
            (3080, "disconnectReasonClientDecompressionError"),
        ],
    );
}

/// Microsoft "ExtendedDisconnectReasonCode enumeration": every member.
#[test]
fn extended_reason_table_is_complete() {
    let members: &[(u32, &str)] = &[
        (0, "exDiscReasonNoInfo"),
        (1, "exDiscReasonAPIInitiatedDisconnect"),
        (2, "exDiscReasonAPIInitiatedLogoff"),
        (3, "exDiscReasonServerIdleTimeout"),
        (4, "exDiscReasonServerLogonTimeout"),
        (5, "exDiscReasonReplacedByOtherConnection"),
        (6, "exDiscReasonOutOfMemory"),
        (7, "exDiscReasonServerDeniedConnection"),
        (8, "exDiscReasonServerDeniedConnectionFips"),
        (9, "exDiscReasonServerInsufficientPrivileges"),
        (10, "exDiscReasonServerFreshCredsRequired"),
        (11, "exDiscReasonRpcInitiatedDisconnectByUser"),
        (12, "exDiscReasonLogoffByUser"),
        (256, "exDiscReasonLicenseInternal"),
        (257, "exDiscReasonLicenseNoLicenseServer"),
        (258, "exDiscReasonLicenseNoLicense"),
        (259, "exDiscReasonLicenseErrClientMsg"),
        (260, "exDiscReasonLicenseHwidDoesntMatchLicense"),
        (261, "exDiscReasonLicenseErrClientLicense"),
        (262, "exDiscReasonLicenseCantFinishProtocol"),
        (263, "exDiscReasonLicenseClientEndedProtocol"),
        (264, "exDiscReasonLicenseErrClientEncryption"),
        (265, "exDiscReasonLicenseCantUpgradeLicense"),
        (266, "exDiscReasonLicenseNoRemoteConnections"),
        (267, "exDiscReasonLicenseCreatingLicStoreAccDenied"),
        (768, "exDiscReasonRdpEncInvalidCredentials"),
        (4096, "exDiscReasonProtocolRangeStart"),
        (32767, "exDiscReasonProtocolRangeEnd"),
    ];
    for (code, name) in members {
        // Through --ext, as mstsc shows it next to a disconnect reason.
        let ex = explain(0x3, Some(*code));
        let e = ex.last().unwrap();
        assert_eq!(e.kind, "extended reason", "{code}");
        assert_eq!(e.name, *name, "{code}");
        let by_name = explain_str(name, None).unwrap();
        assert!(
            by_name.iter().any(|x| x.kind == "extended reason"),
            "{name}"
        );
    }
}

/// The NTSTATUS codes CredSSP servers send in TSRequest.errorCode (MS-CSSP 2.2.1, MS-ERREF 2.3).
#[test]
fn ntstatus_table_has_the_common_credssp_codes() {
    assert_table(
        "ntstatus",
        &[
            (0xC000006D, "STATUS_LOGON_FAILURE"),
            (0xC000006A, "STATUS_WRONG_PASSWORD"),
            (0xC0000064, "STATUS_NO_SUCH_USER"),
            (0xC000006E, "STATUS_ACCOUNT_RESTRICTION"),
            (0xC000006F, "STATUS_INVALID_LOGON_HOURS"),
            (0xC0000070, "STATUS_INVALID_WORKSTATION"),
            (0xC0000071, "STATUS_PASSWORD_EXPIRED"),
            (0xC0000072, "STATUS_ACCOUNT_DISABLED"),
            (0xC0000193, "STATUS_ACCOUNT_EXPIRED"),
            (0xC0000224, "STATUS_PASSWORD_MUST_CHANGE"),
            (0xC0000234, "STATUS_ACCOUNT_LOCKED_OUT"),
            (0xC000015B, "STATUS_LOGON_TYPE_NOT_GRANTED"),
            (0xC0000022, "STATUS_ACCESS_DENIED"),
            (0xC000005E, "STATUS_NO_LOGON_SERVERS"),
            (0xC0000133, "STATUS_TIME_DIFFERENCE_AT_DC"),
        ],
    );
}

/// Every row of every table is reachable and consistent: hex code string, non-empty texts.
#[test]
fn every_table_row_explains_itself() {
    use rdprobe::diagnose::codes;
    for (kind, table) in [
        ("mstsc disconnect", codes::MSTSC_DOCUMENTED),
        ("mstsc disconnect", codes::MSTSC_INTERNAL),
        ("negotiation failure", codes::NEG_FAILURES),
        ("ntstatus", codes::NTSTATUS),
        ("set error info", codes::SET_ERROR_INFO),
    ] {
        let mut seen = std::collections::HashSet::new();
        for row in table {
            assert!(seen.insert(row.code), "{kind} 0x{:X} twice", row.code);
            let ex = explain(row.code, None);
            let e = ex
                .iter()
                .find(|e| e.kind == kind)
                .unwrap_or_else(|| panic!("{kind} 0x{:X}", row.code));
            assert_eq!(e.code, format!("0x{:X}", row.code));
            assert!(e.meaning.len() > 10, "{kind} {}", row.name);
        }
    }
    // Internal mstsc codes never shadow documented ones.
    for row in codes::MSTSC_INTERNAL {
        assert!(
            codes::find(codes::MSTSC_DOCUMENTED, row.code).is_none(),
            "0x{:X}",
            row.code
        );
    }
}

// ------------------------------------------------------------------------------------------------
// diagnose: hand-built reports
// ------------------------------------------------------------------------------------------------

/// One stage of a hand-built report: stage, bytes c->s, bytes s->c, facts.
struct S(Stage, u64, u64, Vec<(&'static str, Value)>);

fn report(stages: Vec<S>, kind: FailureKind, by: Side) -> ConnectionReport {
    let n = stages.len();
    let last = stages.last().map(|s| s.0).unwrap_or(Stage::Tcp);
    let verdict = Verdict::Failed { kind, by };
    let stages = stages
        .into_iter()
        .enumerate()
        .map(|(i, S(stage, c2s, s2c, facts))| StageReport {
            stage,
            verdict: if i + 1 == n {
                verdict.clone()
            } else {
                Verdict::Ok
            },
            start_us: 1_700_000_000_000_000 + i as u64 * 1000,
            duration_ms: 0.0,
            bytes_c2s: c2s,
            bytes_s2c: s2c,
            frames: Vec::new(),
            facts: facts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
        .collect();
    ConnectionReport {
        client: "127.0.0.1:50000".into(),
        server: "127.0.0.1:3389".into(),
        stages,
        last_stage: last,
        verdict,
        ended_by: Some(by),
        summary: String::new(),
        notes: Vec::new(),
        tcp: None,
    }
}

fn tcp() -> S {
    S(Stage::Tcp, 0, 0, vec![("server", json!("127.0.0.1:3389"))])
}

fn x224(selected: &str) -> S {
    S(
        Stage::X224,
        19,
        19,
        vec![
            (
                "requested_protocols",
                json!(["PROTOCOL_SSL", "PROTOCOL_HYBRID"]),
            ),
            ("selected_protocol", json!(selected)),
            (
                "pdus",
                json!(["client: connection request", "server: connection confirm"]),
            ),
        ],
    )
}

fn client_hello_only(extra: Vec<(&'static str, Value)>) -> S {
    let mut facts = vec![
        ("pdus", json!(["client: client hello"])),
        ("client_versions", json!(["TLSv1.3", "TLSv1.2"])),
    ];
    facts.extend(extra);
    S(Stage::Tls, 517, 0, facts)
}

#[track_caller]
fn check(r: &ConnectionReport, class: FaultClass, first: &str) -> diagnose::Diagnosis {
    let d = diagnose::diagnose(r);
    assert_eq!(d.fault_class, class, "{d:#?}");
    assert_eq!(
        d.causes.first().map(|c| c.id.as_str()),
        Some(first),
        "{d:#?}"
    );
    assert!(!d.evidence.is_empty(), "{d:#?}");
    d
}

#[test]
fn ok_report_is_no_fault() {
    let mut r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID")],
        FailureKind::Stopped,
        Side::Client,
    );
    r.verdict = Verdict::Ok;
    r.last_stage = Stage::Connected;
    for s in &mut r.stages {
        s.verdict = Verdict::Ok;
    }
    let d = diagnose::diagnose(&r);
    assert_eq!(d.fault_class, FaultClass::None);
    assert!(d.causes.is_empty());
    assert!(
        d.evidence[0].contains("every stage passed"),
        "{:?}",
        d.evidence
    );

    // Connected despite an expired certificate (rdprobe does not verify): no fault, a latent cause.
    r.stages.push(StageReport {
        stage: Stage::Tls,
        verdict: Verdict::Ok,
        start_us: 0,
        duration_ms: 1.0,
        bytes_c2s: 500,
        bytes_s2c: 1300,
        frames: Vec::new(),
        facts: [
            ("cert_expired".to_owned(), json!(true)),
            ("cert_not_after".to_owned(), json!("2021-01-01T00:00:00Z")),
        ]
        .into_iter()
        .collect(),
    });
    let d = diagnose::diagnose(&r);
    assert_eq!(d.fault_class, FaultClass::None);
    assert_eq!(
        d.causes.first().map(|c| c.id.as_str()),
        Some("tls_cert_expired")
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("expired on 2021-01-01")),
        "{:?}",
        d.evidence
    );
}

#[test]
fn stopped_by_request_is_no_fault() {
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID")],
        FailureKind::Stopped,
        Side::Client,
    );
    let d = diagnose::diagnose(&r);
    assert_eq!(d.fault_class, FaultClass::None);
    assert!(d.causes.is_empty(), "{d:#?}");
}

#[test]
fn name_resolution_or_routing() {
    let r = report(
        vec![tcp()],
        FailureKind::Unreachable {
            detail: "failed to resolve rdp01.corp.example".into(),
        },
        Side::Network,
    );
    let d = check(&r, FaultClass::Network, "name_resolution_or_routing");
    assert!(
        d.causes[0].remedy.contains("IP address directly"),
        "{}",
        d.causes[0].remedy
    );
}

#[test]
fn refused_on_3389_means_remote_desktop_disabled() {
    let r = report(vec![tcp()], FailureKind::Refused, Side::Server);
    let d = check(
        &r,
        FaultClass::ServerConfiguration,
        "remote_desktop_disabled",
    );
    assert!(d.causes.iter().any(|c| c.id == "firewall_rejects"));
    assert!(
        d.evidence[0].contains("refused") && d.evidence[0].contains("3389"),
        "{:?}",
        d.evidence
    );
}

#[test]
fn refused_by_the_network_means_firewall_blocking() {
    let r = report(vec![tcp()], FailureKind::Refused, Side::Network);
    check(&r, FaultClass::Network, "firewall_rejects");
}

#[test]
fn timeout_at_tcp_means_firewall_dropping() {
    let r = report(
        vec![tcp()],
        FailureKind::TimedOut {
            waiting_for: Side::Server,
            after_ms: 10000,
        },
        Side::Server,
    );
    let d = check(&r, FaultClass::Network, "firewall_drops");
    assert!(d.evidence[0].contains("10000 ms"), "{:?}", d.evidence);
}

#[test]
fn expired_certificate() {
    let tls = S(
        Stage::Tls,
        600,
        1800,
        vec![
            (
                "pdus",
                json!([
                    "client: client hello",
                    "server: server hello, certificate, server hello done"
                ]),
            ),
            ("cert_expired", json!(true)),
            ("cert_not_after", json!("2023-01-01T00:00:00Z")),
            ("cert_self_signed", json!(true)),
        ],
    );
    let r = report(
        vec![tcp(), x224("PROTOCOL_SSL"), tls],
        FailureKind::TlsAlert(TlsAlert::fatal(45)),
        Side::Client,
    );
    let d = check(&r, FaultClass::ServerConfiguration, "tls_cert_expired");
    assert!(
        d.causes[0].remedy.contains("Remote Desktop > Certificates"),
        "{}",
        d.causes[0].remedy
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("expired on 2023-01-01")),
        "{:?}",
        d.evidence
    );
}

#[test]
fn ssl_cert_not_on_server_means_machinekeys() {
    let r = report(
        vec![tcp(), x224("")],
        FailureKind::NegotiationFailure(NegFailure { code: 3 }),
        Side::Server,
    );
    let d = check(
        &r,
        FaultClass::ServerConfiguration,
        "server_cannot_create_keys",
    );
    assert!(d.causes[0].remedy.contains("MachineKeys"));
    assert!(
        d.evidence[0].contains("SSL_CERT_NOT_ON_SERVER (0x00000003)"),
        "{:?}",
        d.evidence
    );
}

#[test]
fn handshake_failure_alert_from_server_means_keys() {
    let tls = S(
        Stage::Tls,
        517,
        7,
        vec![
            (
                "pdus",
                json!([
                    "client: client hello",
                    "server: alert fatal handshake_failure"
                ]),
            ),
            ("alert", json!("fatal handshake_failure (40) from server")),
        ],
    );
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID"), tls],
        FailureKind::TlsAlert(TlsAlert::fatal(40)),
        Side::Server,
    );
    let d = check(
        &r,
        FaultClass::ServerConfiguration,
        "server_cannot_create_keys",
    );
    assert_eq!(
        d.evidence[0],
        "TLS alert fatal handshake_failure (40) from server after the client's ClientHello"
    );
}

#[test]
fn close_right_after_client_hello_means_keys() {
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID"), client_hello_only(vec![])],
        FailureKind::Closed {
            tls_close_notify: false,
        },
        Side::Server,
    );
    let d = check(
        &r,
        FaultClass::ServerConfiguration,
        "server_cannot_create_keys",
    );
    assert!(
        d.evidence[0].starts_with("FIN from server after the client's ClientHello"),
        "{:?}",
        d.evidence
    );
}

#[test]
fn nla_mismatch_hybrid_required() {
    let r = report(
        vec![tcp(), x224("")],
        FailureKind::NegotiationFailure(NegFailure { code: 5 }),
        Side::Server,
    );
    let d = check(&r, FaultClass::Policy, "nla_required");
    assert!(d.causes[0].remedy.contains("Network Level Authentication"));
}

#[test]
fn security_layer_mismatch_ssl_required_and_not_allowed() {
    let r = report(
        vec![tcp(), x224("")],
        FailureKind::NegotiationFailure(NegFailure { code: 1 }),
        Side::Server,
    );
    check(&r, FaultClass::Policy, "tls_required");
    let r = report(
        vec![tcp(), x224("")],
        FailureKind::NegotiationFailure(NegFailure { code: 2 }),
        Side::Server,
    );
    let d = check(&r, FaultClass::Policy, "rdp_security_only");
    assert!(d.causes[0]
        .remedy
        .contains("Require use of specific security layer"));
}

#[test]
fn protocol_mismatch_server_selected_rdp() {
    let r = report(
        vec![tcp(), x224("PROTOCOL_RDP")],
        FailureKind::ProtocolMismatch {
            requested: SecurityProtocol::HYBRID,
            selected: SecurityProtocol::empty(),
        },
        Side::Server,
    );
    let d = check(&r, FaultClass::Policy, "rdp_security_only");
    assert!(
        d.evidence[0].contains("requested PROTOCOL_HYBRID"),
        "{:?}",
        d.evidence
    );
}

#[test]
fn reset_right_after_client_hello_means_endpoint_security() {
    let r = report(
        vec![
            tcp(),
            x224("PROTOCOL_HYBRID"),
            client_hello_only(vec![("ended_after_ms", json!(2))]),
        ],
        FailureKind::Reset,
        Side::Server,
    );
    let d = check(
        &r,
        FaultClass::ServerConfiguration,
        "endpoint_security_server",
    );
    assert!(
        d.evidence[0]
            .starts_with("RST from server 2 ms after the client's ClientHello, no TLS alert"),
        "{:?}",
        d.evidence
    );
    assert!(
        d.evidence[0].contains("517 bytes from the client and 0 from the server"),
        "{:?}",
        d.evidence
    );
    assert!(d.causes.iter().any(|c| c.id == "middlebox_reset"));
    expect![[r#"
        diagnosis: server configuration
          evidence: RST from server 2 ms after the client's ClientHello, no TLS alert (517 bytes from the client and 0
                    from the server in the tls stage)
          evidence: the server sent nothing in the tls stage before the reset although it had selected PROTOCOL_HYBRID
          evidence: X.224 negotiation passed: the server selected PROTOCOL_HYBRID
          1. endpoint security on the server (antivirus / EDR / host IPS) kills the socket at the encrypted handshake
             [endpoint_security_server]
             remedy: Look in the server's security product log for blocked RDP or 'network attack' events
                     (Bitdefender, Kaspersky, ...); add an exception for the Remote Desktop Services / port 3389 or
                     turn off its encrypted-traffic scanning, then probe again with --pcap.
          2. a middlebox (IPS, next-generation firewall, TLS-inspecting proxy) resets the connection; it can forge the
             reset in the server's name [middlebox_reset]
             remedy: Probe from the server's own subnet and from the client's network: if only the remote probe is
                     reset, check the IPS / firewall logs for RDP or TLS signatures and exempt port 3389 from TLS
                     inspection.
          3. the server cannot create or read its TLS keys (MachineKeys permissions broken, typically after cloning a
             VM or hardening) [server_cannot_create_keys]
             remedy: On the server check the permissions of C:\ProgramData\Microsoft\Crypto\RSA\MachineKeys against
                     Microsoft's defaults (NETWORK SERVICE must read the Remote Desktop key), look for Schannel errors
                     (events 36870 / 36874) in the System log, then delete the Remote Desktop certificate in
                     certlm.msc and restart the Remote Desktop Services service so that certificate and key are
                     created again.
    "#]]
    .assert_eq(&render_diagnosis(&d));
}

#[test]
fn reset_by_client_or_network_side() {
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID"), client_hello_only(vec![])],
        FailureKind::Reset,
        Side::Client,
    );
    let d = check(
        &r,
        FaultClass::ClientConfiguration,
        "endpoint_security_client",
    );
    assert!(
        d.evidence[0].starts_with("RST from client after the client's ClientHello"),
        "{:?}",
        d.evidence
    );
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID"), client_hello_only(vec![])],
        FailureKind::Reset,
        Side::Network,
    );
    check(&r, FaultClass::Network, "middlebox_reset");
}

#[test]
fn timeout_mid_handshake_means_packet_loss() {
    let tls = S(
        Stage::Tls,
        517,
        1460,
        vec![(
            "pdus",
            json!(["client: client hello", "server: server hello"]),
        )],
    );
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID"), tls],
        FailureKind::TimedOut {
            waiting_for: Side::Server,
            after_ms: 5000,
        },
        Side::Server,
    );
    let d = check(&r, FaultClass::Network, "packet_loss");
    assert!(
        d.evidence[0].contains("5000 ms") && d.evidence[0].contains("1460 from the server"),
        "{:?}",
        d.evidence
    );
}

#[test]
fn timeout_with_silent_server_after_client_hello_means_a_dropping_middlebox() {
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID"), client_hello_only(vec![])],
        FailureKind::TimedOut {
            waiting_for: Side::Server,
            after_ms: 10000,
        },
        Side::Server,
    );
    let d = check(&r, FaultClass::Network, "middlebox_drops");
    assert!(d.causes.iter().any(|c| c.id == "packet_loss"));
}

#[test]
fn denied_after_mcs() {
    let mcs = S(
        Stage::Mcs,
        400,
        11,
        vec![(
            "pdus",
            json!([
                "client: mcs connect initial",
                "server: mcs connect response"
            ]),
        )],
    );
    let r = report(
        vec![
            tcp(),
            x224("PROTOCOL_SSL"),
            S(Stage::Tls, 600, 1800, vec![("version", json!("TLSv1.2"))]),
            mcs,
        ],
        FailureKind::Denied {
            detail: "MCS connect response result rt-user-rejected".into(),
        },
        Side::Server,
    );
    let d = check(
        &r,
        FaultClass::ServerConfiguration,
        "server_denied_connection",
    );
    assert!(
        d.evidence.iter().any(|e| e.contains("TLS passed: TLSv1.2")),
        "{:?}",
        d.evidence
    );
}

#[test]
fn early_user_authorization_denied() {
    let cred = S(
        Stage::Credssp,
        900,
        300,
        vec![("early_user_auth", json!("access_denied"))],
    );
    let r = report(
        vec![tcp(), x224("PROTOCOL_HYBRID_EX"), S(Stage::Tls, 600, 1800, vec![]), cred],
        FailureKind::Denied {
            detail: "Early User Authorization Result ACCESS_DENIED (0x00000005): the user may not log on remotely".into(),
        },
        Side::Server,
    );
    check(&r, FaultClass::Policy, "user_not_authorized");
}

#[test]
fn set_error_info_codes_drive_the_cause() {
    for (code, class, first) in [
        (0x9u32, FaultClass::Policy, "user_not_authorized"),
        (
            0x7,
            FaultClass::ServerConfiguration,
            "server_denied_connection",
        ),
        (0x102, FaultClass::ServerConfiguration, "licensing_failed"),
        (0x3, FaultClass::Policy, "session_time_limit"),
        (
            0x1194,
            FaultClass::ClientConfiguration,
            "rdp_encryption_level",
        ),
    ] {
        let sec = S(
            Stage::Security,
            300,
            40,
            vec![("set_error_info", json!(code))],
        );
        let r = report(
            vec![tcp(), x224("PROTOCOL_SSL"), sec],
            FailureKind::Denied {
                detail: "MCS disconnect provider ultimatum".into(),
            },
            Side::Server,
        );
        let d = check(&r, class, first);
        assert!(
            d.evidence
                .iter()
                .any(|e| e.contains(&format!("(0x{code:08X})"))),
            "{code:x}: {:?}",
            d.evidence
        );
        // Also as decode::mcs writes it: "NAME (0x...)".
        let name = rdprobe::diagnose::codes::find(rdprobe::diagnose::codes::SET_ERROR_INFO, code)
            .unwrap()
            .name;
        let sec = S(
            Stage::Security,
            300,
            40,
            vec![("set_error_info", json!(format!("{name} (0x{code:08X})")))],
        );
        let r = report(
            vec![tcp(), x224("PROTOCOL_SSL"), sec],
            FailureKind::Denied { detail: "x".into() },
            Side::Server,
        );
        check(&r, class, first);
        // Also given as a hex string.
        let sec = S(
            Stage::Security,
            300,
            40,
            vec![("set_error_info", json!(format!("0x{code:x}")))],
        );
        let r = report(
            vec![tcp(), x224("PROTOCOL_SSL"), sec],
            FailureKind::Denied { detail: "x".into() },
            Side::Server,
        );
        check(&r, class, first);
    }
}

#[test]
fn each_ntstatus_is_its_own_cause() {
    let cases: &[(u32, FaultClass, &str)] = &[
        (
            0xC000006D,
            FaultClass::Credentials,
            "wrong_password_or_user",
        ),
        (0xC000006A, FaultClass::Credentials, "wrong_password"),
        (0xC0000064, FaultClass::Credentials, "no_such_user"),
        (0xC0000071, FaultClass::Credentials, "password_expired"),
        (0xC0000224, FaultClass::Credentials, "password_must_change"),
        (0xC0000072, FaultClass::Credentials, "account_disabled"),
        (0xC0000234, FaultClass::Credentials, "account_locked_out"),
        (0xC0000193, FaultClass::Credentials, "account_expired"),
        (0xC000006E, FaultClass::Credentials, "account_restriction"),
        (0xC000006F, FaultClass::Policy, "logon_hours"),
        (0xC0000070, FaultClass::Policy, "workstation_restriction"),
        (0xC000015B, FaultClass::Policy, "logon_type_not_granted"),
        (0xC0000022, FaultClass::Policy, "access_denied"),
        (0xC000005E, FaultClass::ServerHealth, "no_logon_servers"),
        (0xC0000133, FaultClass::ServerConfiguration, "time_skew"),
        (0x12345678, FaultClass::Credentials, "auth_failure_other"),
    ];
    let mut remedies = std::collections::HashSet::new();
    for (code, class, first) in cases {
        let cred = S(
            Stage::Credssp,
            1200,
            400,
            vec![
                ("ntlm_user", json!("alice")),
                ("ntlm_dns_computer_name", json!("srv01.corp.example")),
                ("error_code", json!(format!("0x{code:08X}"))),
            ],
        );
        let r = report(
            vec![
                tcp(),
                x224("PROTOCOL_HYBRID"),
                S(Stage::Tls, 600, 1800, vec![]),
                cred,
            ],
            FailureKind::AuthFailure(AuthFailure {
                ntstatus: Some(*code),
                detail: "server answered with a TSRequest errorCode".into(),
            }),
            Side::Server,
        );
        let d = check(&r, *class, first);
        assert!(
            d.evidence[0].contains(&format!("0x{code:08X}")),
            "{:?}",
            d.evidence
        );
        assert!(d.evidence[0].contains("\"alice\""), "{:?}", d.evidence);
        assert!(
            d.evidence.iter().any(|e| e.contains("srv01.corp.example")),
            "{:?}",
            d.evidence
        );
        assert!(
            remedies.insert(d.causes[0].remedy.clone()),
            "0x{code:08X} shares a remedy"
        );
    }
}

#[test]
fn freerdp2_bare_close_after_authenticate() {
    let cred = S(
        Stage::Credssp,
        1200,
        400,
        vec![(
            "pdus",
            json!([
                "client: ntlm negotiate",
                "server: ntlm challenge",
                "client: ntlm authenticate + pubKeyAuth"
            ]),
        )],
    );
    let r = report(
        vec![
            tcp(),
            x224("PROTOCOL_HYBRID"),
            S(Stage::Tls, 600, 1800, vec![]),
            cred,
        ],
        FailureKind::AuthFailure(AuthFailure {
            ntstatus: None,
            detail:
                "server closed the connection (TLS close_notify) right after the NTLM AUTHENTICATE"
                    .into(),
        }),
        Side::Server,
    );
    let d = check(
        &r,
        FaultClass::Credentials,
        "credentials_rejected_no_error_code",
    );
    assert!(
        d.evidence[0].contains("no TSRequest errorCode"),
        "{:?}",
        d.evidence
    );
    assert!(d.evidence[0].contains("close_notify"), "{:?}", d.evidence);
}

/// Every kind, side and stage with no facts at all: no panic, a cause for every failure but a stop.
#[test]
fn diagnose_is_total() {
    let kinds = [
        FailureKind::Refused,
        FailureKind::Unreachable {
            detail: String::new(),
        },
        FailureKind::TimedOut {
            waiting_for: Side::Server,
            after_ms: 0,
        },
        FailureKind::TimedOut {
            waiting_for: Side::Client,
            after_ms: 1,
        },
        FailureKind::Reset,
        FailureKind::Closed {
            tls_close_notify: true,
        },
        FailureKind::Closed {
            tls_close_notify: false,
        },
        FailureKind::NegotiationFailure(NegFailure { code: 0xFFFF_FFFF }),
        FailureKind::ProtocolMismatch {
            requested: SecurityProtocol::from_bits_retain(u32::MAX),
            selected: SecurityProtocol::empty(),
        },
        FailureKind::TlsAlert(TlsAlert {
            level: 0,
            code: 255,
        }),
        FailureKind::TlsFailure {
            detail: String::new(),
        },
        FailureKind::AuthFailure(AuthFailure {
            ntstatus: None,
            detail: String::new(),
        }),
        FailureKind::Denied {
            detail: String::new(),
        },
        FailureKind::ProtocolError {
            what: String::new(),
            offset: Some(u64::MAX),
        },
        FailureKind::Stopped,
        FailureKind::CaptureEnded,
    ];
    for kind in &kinds {
        for by in [Side::Client, Side::Server, Side::Network] {
            for stage in Stage::ALL {
                let r = report(vec![S(stage, 0, 0, vec![])], kind.clone(), by);
                let d = diagnose::diagnose(&r);
                if matches!(kind, FailureKind::Stopped) {
                    assert!(d.causes.is_empty());
                } else {
                    assert!(!d.causes.is_empty(), "{kind:?} {by} {stage}");
                    assert!(!d.evidence.is_empty(), "{kind:?} {by} {stage}");
                }
                let json = serde_json::to_value(&d).unwrap();
                assert!(json["fault_class"].is_string());
                assert!(!render_diagnosis(&d).is_empty());
            }
        }
    }
}

#[test]
fn reset_right_after_authenticate_lists_rejected_credentials() {
    let cred = S(
        Stage::Credssp,
        393,
        105,
        vec![(
            "pdus",
            json!([
                "client: ntlm negotiate",
                "server: ntlm challenge",
                "client: ntlm authenticate + pubKeyAuth"
            ]),
        )],
    );
    let r = report(
        vec![
            tcp(),
            x224("PROTOCOL_HYBRID_EX"),
            S(Stage::Tls, 214, 1281, vec![]),
            cred,
        ],
        FailureKind::Reset,
        Side::Server,
    );
    let d = check(
        &r,
        FaultClass::ServerConfiguration,
        "credssp_server_failure",
    );
    assert_eq!(d.causes[1].id, "credentials_rejected_no_error_code");
    assert!(
        d.evidence[0].starts_with("RST from server after the client's NTLM AUTHENTICATE"),
        "{:?}",
        d.evidence
    );
}

/// A protocol mismatch is judged on the protocol flags, not on words in their names: HYBRID_EX
/// selected for a client that offered only TLS means NLA is required; HYBRID selected for a client
/// that offered HYBRID_EX (NLA, but not the protocol the server chose) is the mismatch itself.
#[test]
fn protocol_mismatch_judged_on_flags() {
    let mismatch = |requested: &str, selected: &str| {
        report(
            vec![tcp(), x224(selected)],
            FailureKind::ProtocolMismatch {
                requested: parse_protocol_names(requested).expect("flags"),
                selected: parse_protocol_names(selected).expect("flags"),
            },
            Side::Server,
        )
    };
    let d = check(
        &mismatch("PROTOCOL_SSL", "PROTOCOL_HYBRID_EX"),
        FaultClass::Policy,
        "nla_required",
    );
    assert!(
        d.evidence[0].contains("selected PROTOCOL_HYBRID_EX"),
        "{d:?}"
    );
    check(
        &mismatch("PROTOCOL_SSL|PROTOCOL_HYBRID_EX", "PROTOCOL_HYBRID"),
        FaultClass::Policy,
        "protocol_mismatch",
    );
    check(
        &mismatch("PROTOCOL_HYBRID", "PROTOCOL_SSL"),
        FaultClass::Policy,
        "tls_required",
    );
    // A flag without a name (the JSON can no longer carry words that are no protocol): nothing
    // but the mismatch.
    check(
        &mismatch("PROTOCOL_SSL", "0x20"),
        FaultClass::Policy,
        "protocol_mismatch",
    );
}
