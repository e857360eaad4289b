//! Watching a local target process while fuzzing it (`--lab`, `--pid`): whether it is still
//! running (for a child of ours: its exit code or the signal that ended it) and its resident memory
//! (`VmRSS` of `/proc/PID/status`, proc(5)) over the run.
//!
//! The parsing is pure ([`parse_vm_rss_kib`], [`parse_stat`]); [`Watcher`] is the thin
//! wrapper that reads `/proc` and reaps the child.
//!
//! INVARIANT: a watched PID that is not our child is identified by its start time as well, so a
//! PID reused by another process after the target died reads as [`ProcessFate::Vanished`], never
//! as the target still running.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::descendants::{ChildEnd, Descendants};
use std::collections::BTreeSet;

/// What became of the watched process; part of a finding's [`super::Signature`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProcessFate {
    /// Not watched, or still running with its memory within bounds.
    #[default]
    Running,
    /// Our child exited with this code.
    Exited { code: i32 },
    /// Our child was ended by this signal (SIGSEGV 11, SIGABRT 6, …).
    Signaled { signal: i32 },
    /// A process we did not start is gone (its exit status is its parent's to read).
    Vanished,
    /// Its resident memory grew past the run's limit.
    RssGrowth,
    /// A descendant (a process forked per connection) was ended by this signal while the
    /// watched process lives on.
    ChildSignaled { signal: i32 },
    /// A descendant exited with a code the valid handshakes never gave.
    ChildExited { code: i32 },
}

impl ProcessFate {
    /// Whether the process is dead (it cannot serve anything until restarted).
    pub fn is_dead(self) -> bool {
        matches!(
            self,
            ProcessFate::Exited { .. } | ProcessFate::Signaled { .. } | ProcessFate::Vanished
        )
    }

    /// Whether a descendant died (the watched process itself lives on).
    pub fn is_child_death(self) -> bool {
        matches!(
            self,
            ProcessFate::ChildSignaled { .. } | ProcessFate::ChildExited { .. }
        )
    }
}

impl ProcessFate {
    /// Whether `observed` in a replay agrees with this fate: the same, or a death of a process
    /// that is not our child (its exit status cannot be known) where a death was expected.
    pub fn reproduced_by(self, observed: ProcessFate) -> bool {
        self == observed || (self.is_dead() && observed == ProcessFate::Vanished)
    }
}

impl fmt::Display for ProcessFate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessFate::Running => f.write_str("running"),
            ProcessFate::Exited { code } => write!(f, "exited with code {code}"),
            ProcessFate::Signaled { signal } => match signal_name(*signal) {
                Some(n) => write!(f, "exited with signal {signal} ({n})"),
                None => write!(f, "exited with signal {signal}"),
            },
            ProcessFate::Vanished => f.write_str("vanished"),
            ProcessFate::RssGrowth => f.write_str("rss growth"),
            ProcessFate::ChildSignaled { signal } => match signal_name(*signal) {
                Some(n) => write!(f, "child exited with signal {signal} ({n})"),
                None => write!(f, "child exited with signal {signal}"),
            },
            ProcessFate::ChildExited { code } => write!(f, "child exited with code {code}"),
        }
    }
}

/// The usual name of a Linux signal number (signal(7)).
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB (proc(5): "VmRSS:   1234 kB").
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n = words.next()?.parse::<u64>().ok()?;
    match words.next() {
        Some("kB") | None => Some(n),
        Some(_) => None,
    }
}

/// Field 3 (`state`: R, S, D, Z zombie, X dead, …) and field 22 (`starttime`, clock ticks since
/// boot) of a `/proc/PID/stat` line (proc(5)). The command name (field 2) may hold spaces and
/// parentheses: fields are counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let mut words = stat_fields(stat)?;
    let state = words.next()?.chars().next()?;
    // After the state (field 3), starttime (field 22) is the 19th word.
    let start = words.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The fields of a `/proc/PID/stat` line from field 3 (`state`) on: counted after the last `)`,
/// since the command name (field 2) may hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// Fields 14 and 15 (`utime`, `stime`, clock ticks) of a `/proc/PID/stat` line, summed.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // After the state (field 3), utime (field 14) is the 12th word.
    let mut words = stat_fields(stat)?.skip(11);
    let utime: u64 = words.next()?.parse().ok()?;
    let stime: u64 = words.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// CPU time (user + system) `pid` has used so far, if it is running and readable.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&s)?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)?;
    Some(Duration::from_millis(ticks.saturating_mul(1000) / hz))
}

/// Resident memory of `pid` in KiB, if it is running and readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&s)
}

/// The start time of `pid` while it is alive (a zombie has died: it only waits to be reaped).
fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    match parse_stat(&s)? {
        ('Z' | 'X' | 'x', _) => None,
        (_, start) => Some(start),
    }
}

/// Why a process cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no process {0} (or /proc/{0} is not readable)")]
    NoProcess(u32),
    #[error("cannot start the lab process {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the lab process did not listen on {addr} within {ms} ms ({fate})")]
    NotListening {
        addr: SocketAddr,
        ms: u64,
        fate: ProcessFate,
    },
    #[error("cannot pick a free loopback port: {0}")]
    Port(std::io::Error),
}

/// How to start the lab process again after it died: `EXE lab --listen ADDR --scenario S
/// [--plant BUG]…`.
#[derive(Clone, Debug)]
pub struct LabCommand {
    pub exe: PathBuf,
    pub addr: SocketAddr,
    pub scenario: String,
    /// Planted bugs to arm (test-only, see [`crate::lab::planted`]).
    pub plant: Vec<String>,
}

impl LabCommand {
    /// A lab command on a free loopback port.
    pub fn on_free_port(
        exe: &Path,
        scenario: &str,
        plant: &[String],
    ) -> Result<LabCommand, WatchError> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(WatchError::Port)?;
        let addr = l.local_addr().map_err(WatchError::Port)?;
        drop(l);
        Ok(LabCommand {
            exe: exe.to_owned(),
            addr,
            scenario: scenario.to_owned(),
            plant: plant.to_vec(),
        })
    }

    fn spawn(&self) -> Result<Child, WatchError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("lab")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--scenario")
            .arg(&self.scenario);
        for p in &self.plant {
            cmd.arg("--plant").arg(p);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().map_err(|source| WatchError::Spawn {
            exe: self.exe.clone(),
            source,
        })
    }
}

/// How long a (re)started lab process gets to listen.
pub const LAB_START: Duration = Duration::from_secs(10);

enum Kind {
    /// Our child; `lab` restarts it after a death.
    Child {
        child: Child,
        lab: Option<LabCommand>,
        fate: Option<ProcessFate>,
    },
    /// A process the user started: identified by PID and start time.
    Pid { start: Option<u64>, gone: bool },
}

/// Memory and life of the watched process over a run (in the run's summary).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessStats {
    pub pid: u32,
    /// Whether the process is our child (exit codes and signals are known).
    pub child: bool,
    /// RSS after the baseline handshake, in KiB.
    pub rss_baseline_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub rss_last_kib: Option<u64>,
    /// RSS samples taken (one after every case).
    pub samples: u64,
    /// Deaths seen over the run (each one restarted when the process is our lab).
    pub deaths: u64,
    pub restarts: u64,
    /// How its descendants (processes forked per connection) are watched.
    #[serde(default)]
    pub descendants: Option<super::descendants::Source>,
    /// Descendants seen over the run.
    #[serde(default)]
    pub children_seen: u64,
    /// Descendants that died of a signal or with an unexpected exit code.
    #[serde(default)]
    pub child_deaths: u64,
    /// The last such death: "pid 1234 exited with signal 6 (SIGABRT), core dumped".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_child_death: Option<String>,
}

/// Watches one process; see the module docs.
pub struct Watcher {
    kind: Kind,
    pid: u32,
    /// RSS growth over the baseline that counts as a finding, in KiB; None: not checked.
    pub rss_growth_limit_kib: Option<u64>,
    stats: ProcessStats,
    rss_flagged: bool,
    descendants: Option<Descendants>,
    /// Exit codes of descendants that are not findings: 0 and those the valid handshakes gave.
    normal_codes: BTreeSet<i32>,
    /// The epoch descendants are born in now: 0 before the baseline ended (those still alive then
    /// are the idle ones: helpers, not connections), then one more for every trial.
    epoch: u64,
    /// The epoch of the trial under way ([`Watcher::begin_trial`]): only the deaths of children
    /// born in it are its own.
    trial: Option<u64>,
}

/// The longest a trial (a shrink step or the recording of a minimal case) waits for the children
/// of earlier cases to end before it starts, and for its own to end after it. Generous: a trial
/// must not be told a death that is not its own, nor miss its own on a loaded machine.
pub const TRIAL_SETTLE: Duration = Duration::from_secs(3);

impl Watcher {
    /// Watches a process the user started.
    pub fn pid(pid: u32) -> Result<Watcher, WatchError> {
        let start = start_time(pid);
        if start.is_none() && rss_kib(pid).is_none() {
            return Err(WatchError::NoProcess(pid));
        }
        Ok(Watcher::new(Kind::Pid { start, gone: false }, pid, false))
    }

    /// Watches a child of ours (it is killed when the watcher drops).
    pub fn child(child: Child) -> Watcher {
        Watcher::child_with(child, None)
    }

    fn child_with(child: Child, lab: Option<LabCommand>) -> Watcher {
        let pid = child.id();
        let kind = Kind::Child {
            child,
            lab,
            fate: None,
        };
        Watcher::new(kind, pid, true)
    }

    /// A watcher of `pid` (`child`: one of ours) before its first sample, with its descendants
    /// watched.
    fn new(kind: Kind, pid: u32, child: bool) -> Watcher {
        Watcher {
            kind,
            pid,
            rss_growth_limit_kib: None,
            stats: ProcessStats {
                pid,
                child,
                ..ProcessStats::default()
            },
            rss_flagged: false,
            descendants: None,
            normal_codes: BTreeSet::from([0]),
            epoch: 0,
            trial: None,
        }
        .with_descendants()
    }

    fn with_descendants(mut self) -> Watcher {
        let d = Descendants::new(self.pid);
        self.stats.descendants = Some(d.source());
        self.descendants = Some(d);
        self
    }

    /// Reads the descendants' forks and exits; returns the first death that is a finding (a
    /// signal, or an exit code the valid handshakes never gave) since the last call.
    pub fn child_fate(&mut self) -> Option<ProcessFate> {
        let d = self.descendants.as_mut()?;
        d.update();
        self.stats.children_seen = d.seen;
        let mut first = None;
        for death in d.take_deaths() {
            // A death from before the trial is not the trial's: its case was another.
            let earlier = self.trial.is_some_and(|t| death.epoch < t);
            let (fate, core) = match death.end {
                ChildEnd::Signaled {
                    signal,
                    core_dumped,
                } => (ProcessFate::ChildSignaled { signal }, core_dumped),
                ChildEnd::Exited { code } if !self.normal_codes.contains(&code) => {
                    (ProcessFate::ChildExited { code }, false)
                }
                _ => continue,
            };
            self.stats.child_deaths += 1;
            let inner = match fate {
                ProcessFate::ChildSignaled { signal } => ProcessFate::Signaled { signal },
                ProcessFate::ChildExited { code } => ProcessFate::Exited { code },
                f => f,
            };
            if earlier {
                continue;
            }
            self.stats.last_child_death = Some(format!(
                "pid {} {inner}{}",
                death.pid,
                if core { ", core dumped" } else { "" }
            ));
            first.get_or_insert(fate);
        }
        first
    }

    /// After the baseline handshakes: the exit codes their children gave are normal, and the
    /// descendants alive now are the idle ones (helpers, not connections).
    pub fn baseline_done(&mut self) {
        let Some(d) = self.descendants.as_mut() else {
            return;
        };
        d.update();
        self.stats.children_seen = d.seen;
        for death in d.take_deaths() {
            if let ChildEnd::Exited { code } = death.end {
                self.normal_codes.insert(code);
            }
        }
        self.epoch = 1;
        d.set_epoch(self.epoch);
    }

    /// Starts a trial whose child deaths are its own (a shrink step, the recording of a minimal
    /// case): waits up to [`TRIAL_SETTLE`] for the children serving earlier cases to end, forgets
    /// their deaths, and until [`Watcher::end_trial`] counts only the children born from now on;
    /// [`Watcher::settle_children`] then waits for those to end. Without it a child that died
    /// late, under load, would be put down to the next trial's case.
    pub async fn begin_trial(&mut self) {
        self.end_trial();
        if self.descendants.is_none() {
            return;
        }
        let deadline = Instant::now() + TRIAL_SETTLE;
        loop {
            if let Some(d) = self.descendants.as_mut() {
                d.update();
            }
            if self.busy_children() == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Earlier deaths still count in the statistics; they are not this trial's fate.
        self.trial = Some(self.epoch + 1);
        let _ = self.child_fate();
        self.epoch += 1;
        if let Some(d) = self.descendants.as_mut() {
            d.set_epoch(self.epoch);
        }
    }

    /// Live descendants serving connections: all of them during the baseline, afterwards those
    /// born since (the ones alive when it ended are idle helpers).
    fn busy_children(&self) -> usize {
        let Some(d) = self.descendants.as_ref() else {
            return 0;
        };
        if self.epoch == 0 {
            d.live()
        } else {
            d.live() - d.live_in(0)
        }
    }

    /// Ends the trial [`Watcher::begin_trial`] started: deaths count whatever their epoch again.
    pub fn end_trial(&mut self) {
        self.trial = None;
    }

    /// Waits up to `within` for the descendants serving connections to end (a child handling the
    /// case's connection exits when it closes, or dies of it); returns the first death that is a
    /// finding.
    pub async fn settle_children(&mut self, within: Duration) -> Option<ProcessFate> {
        self.descendants.as_ref()?;
        // In a trial its own children are waited for, and long enough for a loaded machine.
        let deadline = Instant::now() + self.trial.map_or(within, |_| within.max(TRIAL_SETTLE));
        let mut found = None;
        loop {
            if let Some(f) = self.child_fate() {
                found.get_or_insert(f);
            }
            let d = self.descendants.as_ref()?;
            let done = match self.trial {
                Some(t) => d.live_in(t) == 0,
                None => self.busy_children() == 0,
            };
            if done || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Starts the lab process of `lab`, waits until it listens, and watches it; after a death the
    /// fuzzer restarts it with [`Watcher::restart`].
    pub async fn spawn_lab(lab: LabCommand) -> Result<Watcher, WatchError> {
        let child = lab.spawn()?;
        let mut w = Watcher::child_with(child, Some(lab));
        w.wait_listening().await?;
        Ok(w)
    }

    pub fn pid_of(&self) -> u32 {
        self.pid
    }

    /// Whether [`Watcher::restart`] can bring the process back.
    pub fn restartable(&self) -> bool {
        matches!(&self.kind, Kind::Child { lab: Some(_), .. })
    }

    /// The process's fate now (reaps our child if it ended), without blocking.
    pub fn fate(&mut self) -> ProcessFate {
        match &mut self.kind {
            Kind::Child { child, fate, .. } => {
                if let Some(f) = fate {
                    return *f;
                }
                let f = match child.try_wait() {
                    Ok(Some(status)) => exit_fate(status),
                    Ok(None) => return ProcessFate::Running,
                    Err(_) => ProcessFate::Vanished,
                };
                *fate = Some(f);
                self.stats.deaths += 1;
                f
            }
            Kind::Pid { start, gone } => {
                if *gone {
                    return ProcessFate::Vanished;
                }
                let now = start_time(self.pid);
                if now.is_none() || (start.is_some() && now != *start) {
                    *gone = true;
                    self.stats.deaths += 1;
                    return ProcessFate::Vanished;
                }
                ProcessFate::Running
            }
        }
    }

    /// Waits up to `within` for the process to die (a crash takes a moment after the reset the
    /// fuzzer saw); returns its fate then.
    pub async fn settle(&mut self, within: Duration) -> ProcessFate {
        let deadline = Instant::now() + within;
        loop {
            let f = self.fate();
            if f.is_dead() || Instant::now() >= deadline {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Samples RSS; returns [`ProcessFate::RssGrowth`] the first time it exceeds the baseline by
    /// more than the limit (the first sample is the baseline).
    pub fn sample_rss(&mut self) -> Option<ProcessFate> {
        let rss = rss_kib(self.pid)?;
        self.stats.samples += 1;
        self.stats.rss_last_kib = Some(rss);
        self.stats.rss_peak_kib = Some(self.stats.rss_peak_kib.unwrap_or(0).max(rss));
        let base = *self.stats.rss_baseline_kib.get_or_insert(rss);
        let limit = self.rss_growth_limit_kib?;
        if !self.rss_flagged && rss.saturating_sub(base) > limit {
            self.rss_flagged = true;
            return Some(ProcessFate::RssGrowth);
        }
        None
    }

    /// RSS now, in KiB.
    pub fn rss_now(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    pub fn stats(&self) -> ProcessStats {
        self.stats.clone()
    }

    /// Restarts a dead lab process on the same address and waits until it listens.
    pub async fn restart(&mut self) -> Result<(), WatchError> {
        let Kind::Child { child, lab, fate } = &mut self.kind else {
            return Err(WatchError::NoProcess(self.pid));
        };
        let Some(cmd) = lab.clone() else {
            return Err(WatchError::NoProcess(self.pid));
        };
        let _ = child.kill();
        let _ = child.wait();
        *child = cmd.spawn()?;
        *fate = None;
        self.pid = child.id();
        self.stats.pid = self.pid;
        if let Some(d) = self.descendants.as_mut() {
            d.reset(self.pid);
        }
        self.stats.restarts += 1;
        // The new process has a baseline of its own.
        self.stats.rss_baseline_kib = None;
        self.wait_listening().await
    }

    async fn wait_listening(&mut self) -> Result<(), WatchError> {
        let Kind::Child { lab: Some(cmd), .. } = &self.kind else {
            return Ok(());
        };
        let addr = cmd.addr;
        let started = Instant::now();
        while started.elapsed() < LAB_START {
            let f = self.fate();
            if f.is_dead() {
                return Err(WatchError::NotListening {
                    addr,
                    ms: started.elapsed().as_millis() as u64,
                    fate: f,
                });
            }
            let c = tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if let Ok(Ok(s)) = c {
                drop(s);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(WatchError::NotListening {
            addr,
            ms: started.elapsed().as_millis() as u64,
            fate: self.fate(),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Kind::Child { child, .. } = &mut self.kind {
            // INVARIANT: only our own child, by its handle (its PID), never by name.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn exit_fate(status: std::process::ExitStatus) -> ProcessFate {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ProcessFate::Exited { code },
        (None, Some(signal)) => ProcessFate::Signaled { signal },
        (None, None) => ProcessFate::Vanished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_lines() {
        let s = "Name:\trdprobe\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(s), Some(5120));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn start_time_after_a_hostile_command_name() {
        let fields: Vec<String> = (4..=30).map(|i| i.to_string()).collect();
        let stat = format!("4242 (a) b (c) Z {}", fields.join(" "));
        assert_eq!(parse_stat(&stat), Some(('Z', 22)));
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        assert_eq!(parse_stat("no parens"), None);
        // utime is field 14, stime 15.
        assert_eq!(parse_cpu_ticks(&stat), Some(14 + 15));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn own_process_is_running_with_rss() {
        let mut w = Watcher::pid(std::process::id()).expect("self");
        assert_eq!(w.fate(), ProcessFate::Running);
        assert!(w.sample_rss().is_none());
        assert!(w.stats().rss_baseline_kib.is_some_and(|k| k > 0));
        assert!(matches!(
            Watcher::pid(u32::MAX),
            Err(WatchError::NoProcess(_))
        ));
    }

    /// Real processes: a child killed by SIGSEGV reads as that signal, one that exits as its code;
    /// a process watched by PID reads as vanished once it died, even before it is reaped.
    #[tokio::test]
    async fn real_children_end_with_their_signal_or_code() {
        let sh = |script: &str| {
            Command::new("/bin/sh")
                .args(["-c", script])
                .spawn()
                .expect("spawn /bin/sh")
        };
        let mut w = Watcher::child(sh("kill -SEGV $$"));
        assert_eq!(
            w.settle(Duration::from_secs(5)).await,
            ProcessFate::Signaled { signal: 11 }
        );
        let mut w = Watcher::child(sh("exit 3"));
        assert_eq!(
            w.settle(Duration::from_secs(5)).await,
            ProcessFate::Exited { code: 3 }
        );
        let mut child = sh("sleep 0.2");
        let mut w = Watcher::pid(child.id()).expect("watch");
        assert_eq!(w.fate(), ProcessFate::Running);
        // Not reaped yet: a zombie, which is dead.
        assert_eq!(
            w.settle(Duration::from_secs(5)).await,
            ProcessFate::Vanished
        );
        assert_eq!(w.stats().deaths, 1);
        let _ = child.wait();
    }

    #[test]
    fn fates_read_as_sentences() {
        assert_eq!(
            ProcessFate::Signaled { signal: 11 }.to_string(),
            "exited with signal 11 (SIGSEGV)"
        );
        assert_eq!(
            ProcessFate::Exited { code: 3 }.to_string(),
            "exited with code 3"
        );
        assert!(ProcessFate::Vanished.is_dead());
        assert!(!ProcessFate::RssGrowth.is_dead());
    }
}
