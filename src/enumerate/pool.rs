//! Connections after the X.224 exchange, ready for the next question.
//!
//! Every protocol question leaves a connection whose server has just selected a protocol; the
//! questions that follow (a TLS handshake, an MCS Connect Initial) take those first and open fresh
//! ones only when none is left. For the sequential cipher-suite elimination the pool opens
//! connections ahead (`prefetch`), so that a step waits for a TLS handshake, not for the server's
//! X.224 answer (freerdp-shadow takes ~50 ms for that).
//!
//! INVARIANT: a connection in the pool has completed the X.224 exchange with `selected` as the
//! server's selected protocol; nothing else has been sent on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{dx, negotiate, Ctx};

/// Connections left by the protocol questions, with the protocol the server selected on each.
#[derive(Default)]
pub(super) struct Spares {
    conns: Mutex<Vec<(u32, TcpStream)>>,
}

impl Spares {
    pub(super) fn put(&self, selected: u32, s: TcpStream) {
        if let Ok(mut v) = self.conns.lock() {
            v.push((selected, s));
        }
    }

    /// A connection on which the server selected `selected`, if one is left.
    pub(super) fn take(&self, selected: u32) -> Option<TcpStream> {
        let mut v = self.conns.lock().ok()?;
        let i = v.iter().position(|(p, _)| *p == selected)?;
        Some(v.swap_remove(i).1)
    }

    /// How many connections are left (the ones no question needed).
    pub(super) fn len(&self) -> usize {
        self.conns.lock().map(|v| v.len()).unwrap_or(0)
    }
}

/// A fresh connection offering `via` alone, kept only when the server selects it.
pub(super) async fn fresh(ctx: &Ctx, via: u32) -> Result<TcpStream, String> {
    let (neg, stream) = negotiate(ctx, via).await;
    let Some(s) = stream else {
        return Err(neg.error.unwrap_or(neg.response));
    };
    if neg.selected_value != Some(via) {
        super::close(s).await;
        return Err(format!(
            "the server selected {} instead of {}",
            neg.selected.unwrap_or_default(),
            dx::protocol_names(via).join(",")
        ));
    }
    Ok(s)
}

/// A connection whose server selected `via`: a spare, else a fresh one.
/// The flag says whether it was a spare (it waited, the server may have given up on it).
pub(super) async fn spare_or_fresh(
    ctx: &Ctx,
    spares: &Spares,
    via: u32,
) -> Result<(TcpStream, bool), String> {
    match spares.take(via) {
        Some(s) => Ok((s, true)),
        None => fresh(ctx, via).await.map(|s| (s, false)),
    }
}

/// Ready connections for one protocol, with connections opened ahead on request.
pub(super) struct Pool {
    ctx: Arc<Ctx>,
    spares: Arc<Spares>,
    via: u32,
    tx: mpsc::UnboundedSender<Result<TcpStream, String>>,
    ready: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<TcpStream, String>>>,
    /// Connections opened ahead and not yet claimed by `get`.
    ahead: AtomicUsize,
    /// The tasks opening them; dropping the pool aborts them and closes what they opened.
    tasks: Mutex<JoinSet<()>>,
}

impl Pool {
    pub(super) fn new(ctx: Arc<Ctx>, spares: Arc<Spares>, via: u32) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Pool {
            ctx,
            spares,
            via,
            tx,
            ready: tokio::sync::Mutex::new(rx),
            ahead: AtomicUsize::new(0),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    pub(super) fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// The protocol the server selected on every connection of the pool.
    pub(super) fn via(&self) -> u32 {
        self.via
    }

    /// A ready connection: a spare, else one opened ahead, else a fresh one.
    /// The flag says whether it waited in the pool (see [`spare_or_fresh`]).
    pub(super) async fn get(&self) -> Result<(TcpStream, bool), String> {
        if let Some(s) = self.spares.take(self.via) {
            return Ok((s, true));
        }
        let claimed = self
            .ahead
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if claimed {
            // INVARIANT: every claim matches one connection opened ahead, which sends exactly
            // one result; the sender lives as long as the pool.
            return match self.ready.lock().await.recv().await {
                Some(r) => r.map(|s| (s, true)),
                None => Err("connection pool closed".into()),
            };
        }
        fresh(&self.ctx, self.via).await.map(|s| (s, false))
    }

    /// A fresh connection, bypassing spares and connections opened ahead.
    pub(super) async fn get_fresh(&self) -> Result<TcpStream, String> {
        fresh(&self.ctx, self.via).await
    }

    /// Opens connections ahead until `depth` are open ahead and unclaimed.
    pub(super) fn prefetch(&self, depth: usize) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        while self.ahead.load(Ordering::Acquire) < depth {
            self.ahead.fetch_add(1, Ordering::AcqRel);
            let ctx = self.ctx.clone();
            let tx = self.tx.clone();
            let via = self.via;
            tasks.spawn(async move {
                let r = fresh(&ctx, via).await;
                let _ = tx.send(r);
            });
        }
    }
}
