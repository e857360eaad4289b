//! Deliberately planted bugs, for testing the fuzzer (`rdprobe fuzz`) against the lab: each one
//! misbehaves on one specific malformed field deep in one stage, the way real pre-authentication
//! bugs do. They are armed only through [`spawn_planted_lab`] (per listening port), never by a
//! scenario, so an ordinary lab cannot trip over them.
//!
//! The lab driver calls [`hook`] with each client PDU it reads, before decoding it; unarmed labs
//! return after one atomic load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{spawn_lab_with, LabError, LabHandle, LabLimits, ListenError};
use crate::scenario::Scenario;

/// A planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// x224: an X.224 cookie (`Cookie: mstshash=…`) longer than 200 bytes makes the connection
    /// handler hang: no reply, no reaction to the client's FIN, for [`HANG`].
    X224LongCookieHang,
    /// credssp: a TSRequest with version 0 makes the connection handler abort: TCP RST, no reply.
    CredsspVersionZeroAbort,
    /// mcs: a Connect Initial whose CS_NET channelCount exceeds 30 wedges the whole lab (its
    /// thread blocks for [`WEDGE`]): no connection is served meanwhile, then the lab recovers.
    McsManyChannelsWedge,
    /// x224: a routing token (`Cookie: msts=…`) longer than 16 bytes makes the whole lab process
    /// abort (SIGABRT), as a memory-safety bug in a C server would. Arm it only in a lab process
    /// of its own (`rdprobe lab --plant x224-routing-token-abort`): it kills the process it runs in.
    X224RoutingTokenAbort,
    /// x224: every connection whose RDP_NEG_REQ has CORRELATION_INFO_PRESENT (0x08) in its flags
    /// leaks [`LEAK_PER_CONNECTION`] bytes that are never freed (the lab's RSS grows).
    X224CorrelationLeak,
    /// credssp round 2: a TSRequest whose pubKeyAuth is shorter than the 16-byte NTLM signature
    /// (MS-NLMP 2.2.2.9) that must precede the sealed public key makes the connection handler
    /// abort: TCP RST, no reply. Reached only after a valid NEGOTIATE / CHALLENGE round trip.
    CredsspShortPubKeyAuthAbort,
    /// security (standard RDP security): a Client Info PDU whose TS_INFO_PACKET cbUserName exceeds
    /// 512 bytes (the 256 characters of MS-RDPBCGR 2.2.1.11.1.1) makes the connection handler
    /// abort: TCP RST, no reply. Reached after X.224, MCS and the channel connection.
    SecurityLongUserNameAbort,
    /// x224: a negotiation request after the cookie line whose type byte is not TYPE_RDP_NEG_REQ
    /// (0x01) makes the lab process exit with code 3 (an "unreachable" branch that calls exit). Process-killing: arm it only in
    /// a lab process of its own (`rdprobe lab --plant x224-neg-type-exit`).
    X224NegTypeExit,
    /// mcs: a Connect Initial whose CS_NET channelCount exceeds 30 makes the process serving the
    /// connection abort (SIGABRT). Meant for `rdprobe lab --fork-per-connection`, where only that
    /// connection's child dies and the listener serves on (as a crash in an xrdp child).
    McsManyChannelsAbort,
}

impl Bug {
    pub const ALL: [Bug; 9] = [
        Bug::X224LongCookieHang,
        Bug::CredsspVersionZeroAbort,
        Bug::McsManyChannelsWedge,
        Bug::X224RoutingTokenAbort,
        Bug::X224CorrelationLeak,
        Bug::CredsspShortPubKeyAuthAbort,
        Bug::SecurityLongUserNameAbort,
        Bug::X224NegTypeExit,
        Bug::McsManyChannelsAbort,
    ];

    /// The name `rdprobe lab --plant` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::X224LongCookieHang => "x224-long-cookie-hang",
            Bug::CredsspVersionZeroAbort => "credssp-version-zero-abort",
            Bug::McsManyChannelsWedge => "mcs-many-channels-wedge",
            Bug::X224RoutingTokenAbort => "x224-routing-token-abort",
            Bug::X224CorrelationLeak => "x224-correlation-leak",
            Bug::CredsspShortPubKeyAuthAbort => "credssp-short-pubkeyauth-abort",
            Bug::SecurityLongUserNameAbort => "security-long-user-name-abort",
            Bug::X224NegTypeExit => "x224-neg-type-exit",
            Bug::McsManyChannelsAbort => "mcs-many-channels-abort",
        }
    }

    pub fn parse(s: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// What [`Bug::X224CorrelationLeak`] leaks per connection, in bytes.
pub const LEAK_PER_CONNECTION: usize = 2 * 1024 * 1024;

/// How long a hung connection handler holds its connection.
pub const HANG: Duration = Duration::from_secs(30);
/// How long a wedged lab blocks its thread.
pub const WEDGE: Duration = Duration::from_millis(2500);

/// Where in the connection the driver read the PDU it hands to [`hook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum At {
    X224Request,
    TsRequest,
    /// A PDU read in this acceptor state ("BasicSettingsWaitInitial", "ChannelConnection", …).
    Acceptor(&'static str),
}

/// Armed bugs by listening port.
static ARMED: Mutex<Vec<(u16, Vec<Bug>)>> = Mutex::new(Vec::new());
/// Number of armed labs (the fast path of [`hook`]).
static ARMED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A lab with planted bugs. Dropping it disarms the bugs and stops the lab.
pub struct PlantedLab {
    lab: Option<LabHandle>,
    port: u16,
}

impl PlantedLab {
    pub fn addr(&self) -> SocketAddr {
        self.lab
            .as_ref()
            .map(|l| l.addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    pub fn handle(&self) -> Option<&LabHandle> {
        self.lab.as_ref()
    }
}

impl Drop for PlantedLab {
    fn drop(&mut self) {
        if let Some(lab) = self.lab.take() {
            lab.stop();
        }
        disarm(self.port);
    }
}

/// Starts a lab serving `scenario` with `bugs` armed. Test-only: see the module docs. With bugs,
/// `addr` must be a loopback address (a planted bug aborts or wedges the process).
pub fn spawn_planted_lab(
    addr: SocketAddr,
    scenario: Scenario,
    bugs: &[Bug],
) -> Result<PlantedLab, LabError> {
    spawn_planted_lab_with(addr, scenario, bugs, LabLimits::default())
}

/// [`spawn_planted_lab`] with explicit limits.
pub fn spawn_planted_lab_with(
    addr: SocketAddr,
    scenario: Scenario,
    bugs: &[Bug],
    limits: LabLimits,
) -> Result<PlantedLab, LabError> {
    if !bugs.is_empty() && !super::is_loopback(addr.ip()) {
        return Err(ListenError::PlantRemote(addr).into());
    }
    // INVARIANT: with a fixed port the bugs are armed before the lab listens, so no connection
    // (e.g. the first one after a restart of a lab process) is served unarmed.
    if addr.port() != 0 {
        arm(addr.port(), bugs);
    }
    let lab = match spawn_lab_with(addr, scenario, limits) {
        Ok(l) => l,
        Err(e) => {
            disarm(addr.port());
            return Err(e);
        }
    };
    let port = lab.addr.port();
    arm(port, bugs);
    Ok(PlantedLab {
        lab: Some(lab),
        port,
    })
}

pub(crate) fn arm(port: u16, bugs: &[Bug]) {
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    armed.retain(|(p, _)| *p != port);
    armed.push((port, bugs.to_vec()));
    // INVARIANT: ARMED_COUNT == ARMED.len() whenever the lock is released.
    ARMED_COUNT.store(armed.len(), Ordering::SeqCst);
}

fn disarm(port: u16) {
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    armed.retain(|(p, _)| *p != port);
    ARMED_COUNT.store(armed.len(), Ordering::SeqCst);
}

fn armed_for(port: u16) -> Vec<Bug> {
    ARMED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, b)| b.clone())
        .unwrap_or_default()
}

/// Runs the planted bugs armed for this connection's lab against `frame`. `Err` ends the
/// connection the way the bug does (the text is the lab's outcome).
pub(crate) async fn hook(raw: &TcpStream, at: At, frame: &[u8]) -> Result<(), String> {
    if ARMED_COUNT.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let Ok(local) = raw.local_addr() else {
        return Ok(());
    };
    for bug in armed_for(local.port()) {
        match (bug, at) {
            (Bug::X224LongCookieHang, At::X224Request)
                if crate::fuzz::x224::cookie_len(frame).is_some_and(|n| n > 200) =>
            {
                tokio::time::sleep(HANG).await;
                return Err("planted bug: hung on a cookie longer than 200 bytes".into());
            }
            (Bug::X224RoutingTokenAbort, At::X224Request)
                if routing_token_len(frame).is_some_and(|n| n > 16) =>
            {
                std::process::abort();
            }
            (Bug::X224NegTypeExit, At::X224Request)
                if neg_req_type(frame).is_some_and(|t| t != 0x01) =>
            {
                std::process::exit(3);
            }
            (Bug::X224CorrelationLeak, At::X224Request)
                if neg_req_flags(frame).is_some_and(|f| f & 0x08 != 0) =>
            {
                // Touch every page so the leak is resident, then never free it.
                std::mem::forget(vec![0x5au8; LEAK_PER_CONNECTION]);
            }
            (Bug::CredsspShortPubKeyAuthAbort, At::TsRequest)
                if crate::fuzz::credssp::pub_key_auth_len(frame).is_some_and(|n| n < 16) =>
            {
                // INVARIANT: SO_LINGER 0, then the driver drops every handle: a RST.
                let _ = raw.set_zero_linger();
                return Err("planted bug: aborted on a pubKeyAuth shorter than 16 bytes".into());
            }
            (Bug::SecurityLongUserNameAbort, At::Acceptor("SecureSettingsExchange"))
                if client_info_user_name_len(frame).is_some_and(|n| n > 512) =>
            {
                let _ = raw.set_zero_linger();
                return Err("planted bug: aborted on a cbUserName over 512".into());
            }
            (Bug::CredsspVersionZeroAbort, At::TsRequest)
                if crate::fuzz::credssp::ts_request_version(frame) == Some(0) =>
            {
                // INVARIANT: SO_LINGER 0, then the driver drops every handle: a RST.
                let _ = raw.set_zero_linger();
                return Err("planted bug: aborted on TSRequest version 0".into());
            }
            (Bug::McsManyChannelsAbort, At::Acceptor("BasicSettingsWaitInitial"))
                if crate::fuzz::mcs::net_channel_count(frame).is_some_and(|n| n > 30) =>
            {
                std::process::abort();
            }
            (Bug::McsManyChannelsWedge, At::Acceptor("BasicSettingsWaitInitial"))
                if crate::fuzz::mcs::net_channel_count(frame).is_some_and(|n| n > 30) =>
            {
                // Blocks the lab's thread on purpose: every connection stalls.
                std::thread::sleep(WEDGE);
                let _ = raw.set_zero_linger();
                return Err("planted bug: wedged on more than 30 channels".into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// The routing token length of an X.224 Connection Request: the bytes between `Cookie: msts=` and
/// the CR LF (MS-RDPBCGR 2.2.1.1 routingToken).
pub fn routing_token_len(request: &[u8]) -> Option<usize> {
    let var = request.get(11..)?;
    let needle = b"Cookie: msts=";
    let start = var.windows(needle.len()).position(|w| w == needle)? + needle.len();
    var[start..].windows(2).position(|w| w == b"\r\n")
}

/// The type and flags bytes of the negotiation request of an X.224 Connection Request
/// (MS-RDPBCGR 2.2.1.1.1): the two bytes after the cookie line when there is one, else after the
/// X.224 header; None when the request ends before them.
fn neg_req_head(request: &[u8]) -> Option<(u8, u8)> {
    let var = request.get(11..)?;
    let at = if var.starts_with(b"Cookie:") {
        var.windows(2).position(|w| w == b"\r\n")? + 2
    } else {
        0
    };
    match var.get(at..at + 2)? {
        [ty, flags] => Some((*ty, *flags)),
        _ => None,
    }
}

/// The flags of the RDP_NEG_REQ (type 0x01) of an X.224 Connection Request.
pub fn neg_req_flags(request: &[u8]) -> Option<u8> {
    neg_req_head(request).and_then(|(ty, flags)| (ty == 0x01).then_some(flags))
}

/// The type byte of the negotiation request that follows a complete cookie line of an X.224
/// Connection Request (None without a cookie line).
pub fn neg_req_type(request: &[u8]) -> Option<u8> {
    if !request.get(11..)?.starts_with(b"Cookie:") {
        return None;
    }
    neg_req_head(request).map(|(ty, _)| ty)
}

/// cbUserName of the TS_INFO_PACKET in a Client Info PDU sent in the clear (MS-RDPBCGR
/// 2.2.1.11: Send Data Request, basic security header with SEC_INFO_PKT, then the packet).
pub fn client_info_user_name_len(pdu: &[u8]) -> Option<u16> {
    let req =
        ironrdp_core::decode::<ironrdp_pdu::x224::X224<ironrdp_pdu::mcs::SendDataRequest<'_>>>(pdu)
            .ok()?
            .0;
    let ud: &[u8] = req.user_data.as_ref();
    let flags = u16::from_le_bytes([*ud.first()?, *ud.get(1)?]);
    if flags & crate::rdpsec::flags::SEC_INFO_PKT == 0
        || flags & crate::rdpsec::flags::SEC_ENCRYPT != 0
    {
        return None;
    }
    crate::fuzz::security::info_user_name_len(ud.get(4..)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::x224::{encode, CookieKind, X224Mutation as M};
    use crate::fuzz::EncodeCtx;

    #[test]
    fn process_bug_triggers() {
        let ctx = EncodeCtx::default();
        let token = encode(
            &[
                M::Cookie {
                    len: 17,
                    fill: b'a',
                },
                M::CookieKind(CookieKind::RoutingToken),
            ],
            &ctx,
        );
        assert_eq!(routing_token_len(&token), Some(17));
        assert_eq!(routing_token_len(&encode(&[], &ctx)), None);
        assert_eq!(
            neg_req_flags(&encode(&[M::NegFlags(0x08)], &ctx)),
            Some(0x08)
        );
        assert_eq!(neg_req_flags(&encode(&[], &ctx)), Some(0));
        assert_eq!(neg_req_type(&encode(&[M::NegType(2)], &ctx)), Some(2));
        assert_eq!(neg_req_type(&encode(&[M::NegReqAbsent], &ctx)), None);
        for b in Bug::ALL {
            assert_eq!(Bug::parse(b.name()), Some(b));
        }
    }
}
