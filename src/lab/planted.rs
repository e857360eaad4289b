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

use super::{spawn_lab, LabError, LabHandle};
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
}

impl Bug {
    pub const ALL: [Bug; 3] = [
        Bug::X224LongCookieHang,
        Bug::CredsspVersionZeroAbort,
        Bug::McsManyChannelsWedge,
    ];
}

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
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.retain(|(p, _)| *p != self.port);
        ARMED_COUNT.store(armed.len(), Ordering::SeqCst);
    }
}

/// Starts a lab serving `scenario` with `bugs` armed. Test-only: see the module docs.
pub fn spawn_planted_lab(
    addr: SocketAddr,
    scenario: Scenario,
    bugs: &[Bug],
) -> Result<PlantedLab, LabError> {
    let lab = spawn_lab(addr, scenario)?;
    let port = lab.addr.port();
    {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.retain(|(p, _)| *p != port);
        armed.push((port, bugs.to_vec()));
        // INVARIANT: ARMED_COUNT == ARMED.len() whenever the lock is released.
        ARMED_COUNT.store(armed.len(), Ordering::SeqCst);
    }
    Ok(PlantedLab {
        lab: Some(lab),
        port,
    })
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
            (Bug::CredsspVersionZeroAbort, At::TsRequest)
                if crate::fuzz::credssp::ts_request_version(frame) == Some(0) =>
            {
                // INVARIANT: SO_LINGER 0, then the driver drops every handle: a RST.
                let _ = raw.set_zero_linger();
                return Err("planted bug: aborted on TSRequest version 0".into());
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
