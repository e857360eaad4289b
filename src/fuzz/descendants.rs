//! The descendants of the watched process (a server that forks a process per connection, as xrdp
//! does): each child as it is forked, and how it ended (exit code, or the signal and whether it
//! dumped core). A child that dies of a signal while the listener lives on is a crash the fuzzer
//! would otherwise see only as an abrupt close.
//!
//! Two sources, the first that works:
//!
//! * the Linux process events connector (`NETLINK_CONNECTOR`, group `CN_IDX_PROC`,
//!   `linux/cn_proc.h`): the kernel reports every fork and exit with the exit status, even of a
//!   child its parent reaps at once. It needs `CAP_NET_ADMIN` (root). The reader is hand-written:
//!   the `cnproc` crate does not expose the exit status or the thread-group ids this needs, and the
//!   protocol is four fixed C structs read from one socket;
//! * otherwise `/proc/PID/task/*/children` polled at each check: children are seen while they
//!   live, and an exit status only when a child is caught as a zombie (field 52 of
//!   `/proc/PID/stat`) before its parent reaps it.
//!
//! Every parse here is pure and bounded ([`parse_events`], [`parse_exit_code`]); a malformed
//! message is skipped, never trusted.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

/// How a descendant ended: the status `wait(2)` gives its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildEnd {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
        core_dumped: bool,
    },
    /// Reaped before it could be read (the /proc fallback only).
    Unknown,
}

impl ChildEnd {
    /// Decodes a wait status (`WIFEXITED`/`WEXITSTATUS`, `WTERMSIG`, `WCOREDUMP`).
    pub fn from_wait_status(status: u32) -> ChildEnd {
        let sig = (status & 0x7f) as i32;
        if sig == 0 {
            ChildEnd::Exited {
                code: ((status >> 8) & 0xff) as i32,
            }
        } else {
            ChildEnd::Signaled {
                signal: sig,
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

/// One descendant that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Death {
    pub pid: u32,
    pub end: ChildEnd,
    /// The epoch the descendant was born in (see [`Descendants::set_epoch`]).
    pub epoch: u64,
}

/// When a live descendant was born: its `/proc` start time (poll mode; 0 from the connector) and
/// the epoch it was first seen in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Born {
    start: u64,
    epoch: u64,
}

/// What the kernel reported (`struct proc_event`, the parts used here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new task: a process when `child_pid == child_tgid`, else a thread.
    Fork {
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    /// A task ended; `exit_code` is its wait status.
    Exit { pid: u32, tgid: u32, exit_code: u32 },
}

const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const PROC_EVENT_HDR: usize = 16;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The process events in one datagram from the connector socket (netlink messages, each a
/// `cn_msg` carrying a `proc_event`); anything short or of another kind is skipped.
pub fn parse_events(buf: &[u8], out: &mut Vec<Event>) {
    let mut at = 0usize;
    while at + NLMSG_HDRLEN <= buf.len() {
        let Some(len) = u32_at(buf, at).map(|l| l as usize) else {
            return;
        };
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return;
        }
        let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let msg = &buf[at + NLMSG_HDRLEN..at + len];
        if ty == NLMSG_DONE && msg.len() >= CN_MSG_LEN + PROC_EVENT_HDR {
            let ev = &msg[CN_MSG_LEN..];
            let what = u32_at(ev, 0).unwrap_or(0);
            let d = &ev[PROC_EVENT_HDR..];
            match what {
                PROC_EVENT_FORK => {
                    if let (Some(parent_tgid), Some(child_pid), Some(child_tgid)) =
                        (u32_at(d, 4), u32_at(d, 8), u32_at(d, 12))
                    {
                        out.push(Event::Fork {
                            parent_tgid,
                            child_pid,
                            child_tgid,
                        });
                    }
                }
                PROC_EVENT_EXIT => {
                    if let (Some(pid), Some(tgid), Some(exit_code)) =
                        (u32_at(d, 0), u32_at(d, 4), u32_at(d, 8))
                    {
                        out.push(Event::Exit {
                            pid,
                            tgid,
                            exit_code,
                        });
                    }
                }
                _ => {}
            }
        } else if ty == NLMSG_ERROR {
            // An acknowledgement of the subscription (or its refusal): nothing to record.
        }
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        at += (len + 3) & !3;
    }
}

/// Field 52 (`exit_code`, the wait status) of a `/proc/PID/stat` line, as a zombie shows it.
pub fn parse_exit_code(stat: &str) -> Option<u32> {
    // After the state (field 3), field 52 is the 50th word.
    let mut words = stat[stat.rfind(')')? + 1..].split_whitespace();
    words.nth(49)?.parse().ok()
}

/// The process events connector, subscribed.
struct Connector {
    fd: OwnedFd,
}

impl Connector {
    fn open() -> std::io::Result<Connector> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A burst of forks elsewhere on the machine must not overflow the queue between checks.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt reads `size` for its length; failure leaves the default size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: zeroed sockaddr_nl is valid; bind reads it for its length.
        let rc = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            sa.nl_groups = CN_IDX_PROC;
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // nlmsghdr + cn_msg + PROC_CN_MCAST_LISTEN.
        let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
        let mut msg = Vec::with_capacity(total);
        msg.extend((total as u32).to_ne_bytes());
        msg.extend(NLMSG_DONE.to_ne_bytes());
        msg.extend(0u16.to_ne_bytes()); // flags
        msg.extend(0u32.to_ne_bytes()); // seq
        msg.extend(std::process::id().to_ne_bytes());
        msg.extend(CN_IDX_PROC.to_ne_bytes());
        msg.extend(CN_VAL_PROC.to_ne_bytes());
        msg.extend(0u32.to_ne_bytes()); // seq
        msg.extend(0u32.to_ne_bytes()); // ack
        msg.extend(4u16.to_ne_bytes()); // len
        msg.extend(0u16.to_ne_bytes()); // flags
        msg.extend(PROC_CN_MCAST_LISTEN.to_ne_bytes());
        // SAFETY: send reads `msg` for its length.
        let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Connector { fd })
    }

    /// Every event queued now (never blocks). `lost` is set when the kernel dropped some.
    fn drain(&self, out: &mut Vec<Event>, lost: &mut bool) {
        let mut buf = [0u8; 8192];
        // Bounded: at most this many datagrams per call; the rest wait for the next one.
        for _ in 0..100_000 {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                    *lost = true;
                    continue;
                }
                return;
            }
            if n == 0 {
                return;
            }
            parse_events(&buf[..n as usize], out);
        }
    }
}

/// How descendants are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The kernel's process events (every fork and exit status).
    ProcConnector,
    /// `/proc/PID/task/*/children` polled (exit statuses only of zombies caught in time).
    ProcPoll,
}

/// Most descendants tracked at once (a fork bomb does not grow the table without bound).
pub const MAX_TRACKED: usize = 65_536;

/// The live descendants of one process and the deaths not yet handed out.
pub struct Descendants {
    root: u32,
    connector: Option<Connector>,
    /// Live descendants (thread-group ids) → when they were born.
    live: HashMap<u32, Born>,
    /// The epoch a descendant seen from now on is born in.
    epoch: u64,
    deaths: Vec<Death>,
    events: Vec<Event>,
    /// Descendants seen over the watch.
    pub seen: u64,
    /// The kernel dropped events (the connector's queue overflowed).
    pub lost_events: bool,
}

impl Descendants {
    /// Watches the descendants of `root` from now on (those alive now included).
    pub fn new(root: u32) -> Descendants {
        Descendants::with_connector(root, Connector::open().ok())
    }

    /// Watches by polling `/proc` only (what [`Descendants::new`] falls back to without the
    /// connector).
    pub fn polling(root: u32) -> Descendants {
        Descendants::with_connector(root, None)
    }

    fn with_connector(root: u32, connector: Option<Connector>) -> Descendants {
        let mut d = Descendants {
            root,
            connector,
            live: HashMap::new(),
            epoch: 0,
            deaths: Vec::new(),
            events: Vec::new(),
            seen: 0,
            lost_events: false,
        };
        d.poll_proc();
        d
    }

    pub fn source(&self) -> Source {
        if self.connector.is_some() {
            Source::ProcConnector
        } else {
            Source::ProcPoll
        }
    }

    /// The root changed (a restarted lab): its old descendants are forgotten.
    pub fn reset(&mut self, root: u32) {
        self.root = root;
        self.live.clear();
        self.deaths.clear();
        self.update();
    }

    /// Descendants seen from now on are born in `epoch` (a fuzz case numbers its own, so that a
    /// death is put down to the case whose connection the child served, however late it comes).
    /// What happened before is read first, under the old epoch.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.update();
        self.epoch = epoch;
    }

    /// Live descendants born in `epoch`.
    pub fn live_in(&self, epoch: u64) -> usize {
        self.live.values().filter(|b| b.epoch == epoch).count()
    }

    /// Reads what happened since the last call.
    pub fn update(&mut self) {
        if let Some(c) = &self.connector {
            let mut events = std::mem::take(&mut self.events);
            c.drain(&mut events, &mut self.lost_events);
            for e in events.drain(..) {
                self.apply(e);
            }
            self.events = events;
            if self.lost_events {
                // Forks may have been missed: the children alive now are found in /proc.
                self.poll_proc();
            }
        } else {
            self.poll_proc();
        }
    }

    fn apply(&mut self, e: Event) {
        match e {
            Event::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            } => {
                let ours = parent_tgid == self.root || self.live.contains_key(&parent_tgid);
                if ours
                    && child_pid == child_tgid
                    && self.live.len() < MAX_TRACKED
                    && self
                        .live
                        .insert(
                            child_tgid,
                            Born {
                                start: 0,
                                epoch: self.epoch,
                            },
                        )
                        .is_none()
                {
                    self.seen += 1;
                }
            }
            Event::Exit {
                pid,
                tgid,
                exit_code,
            } => {
                if pid == tgid {
                    if let Some(born) = self.live.remove(&tgid) {
                        self.deaths.push(Death {
                            pid,
                            end: ChildEnd::from_wait_status(exit_code),
                            epoch: born.epoch,
                        });
                    }
                }
            }
        }
    }

    /// The descendants in `/proc` now (children of children too); those gone since the last poll
    /// are deaths (with their status when caught as zombies).
    fn poll_proc(&mut self) {
        let mut now: HashMap<u32, u64> = HashMap::new();
        let mut todo = vec![self.root];
        let mut zombies = Vec::new();
        while let Some(p) = todo.pop() {
            if now.len() >= MAX_TRACKED {
                break;
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let Ok(s) = std::fs::read_to_string(t.path().join("children")) else {
                    continue;
                };
                for c in s.split_whitespace().filter_map(|w| w.parse::<u32>().ok()) {
                    let Ok(stat) = std::fs::read_to_string(format!("/proc/{c}/stat")) else {
                        continue;
                    };
                    let Some((state, start)) = super::watch::parse_stat(&stat) else {
                        continue;
                    };
                    if state == 'Z' {
                        zombies.push((c, parse_exit_code(&stat)));
                        continue;
                    }
                    if now.insert(c, start).is_none() {
                        todo.push(c);
                    }
                }
            }
        }
        let connector = self.connector.is_some();
        for (c, status) in zombies {
            let born = self.live.remove(&c);
            if born.is_some() || !connector {
                if let Some(st) = status {
                    self.deaths.push(Death {
                        pid: c,
                        end: ChildEnd::from_wait_status(st),
                        epoch: born.map_or(self.epoch, |b| b.epoch),
                    });
                }
            }
        }
        // The descendants in /proc now, each with the epoch it was first seen in (a pid whose
        // start time changed is a new process).
        let now: HashMap<u32, Born> = now
            .into_iter()
            .map(|(c, start)| {
                let born = match self.live.get(&c) {
                    Some(b) if b.start == start || b.start == 0 => Born { start, ..*b },
                    _ => {
                        self.seen += 1;
                        Born {
                            start,
                            epoch: self.epoch,
                        }
                    }
                };
                (c, born)
            })
            .collect();
        if !connector {
            let gone: BTreeSet<u32> = self
                .live
                .keys()
                .filter(|c| !now.contains_key(c))
                .copied()
                .collect();
            for c in gone {
                let epoch = self.live.remove(&c).map_or(self.epoch, |b| b.epoch);
                if !self.deaths.iter().any(|d| d.pid == c) {
                    self.deaths.push(Death {
                        pid: c,
                        end: ChildEnd::Unknown,
                        epoch,
                    });
                }
            }
            self.live = now;
        } else {
            for (c, born) in now {
                self.live.entry(c).or_insert(born);
            }
        }
    }

    /// Live descendants now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Whether `pid` is a live descendant.
    pub fn is_live(&self, pid: u32) -> bool {
        self.live.contains_key(&pid)
    }

    /// The live descendants.
    pub fn live_pids(&self) -> Vec<u32> {
        self.live.keys().copied().collect()
    }

    /// The deaths since the last call.
    pub fn take_deaths(&mut self) -> Vec<Death> {
        std::mem::take(&mut self.deaths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A death is put down to the epoch its descendant was born in, not the one it died in: a
    /// child that serves case 1 and dies while case 2 runs is case 1's.
    #[test]
    fn a_death_carries_the_epoch_its_descendant_was_born_in() {
        let root = u32::MAX;
        let mut d = Descendants::with_connector(root, None);
        d.epoch = 1;
        d.apply(Event::Fork {
            parent_tgid: root,
            child_pid: 10,
            child_tgid: 10,
        });
        d.epoch = 2;
        d.apply(Event::Fork {
            parent_tgid: root,
            child_pid: 11,
            child_tgid: 11,
        });
        // A thread of child 11 is not a descendant of its own.
        d.apply(Event::Fork {
            parent_tgid: 11,
            child_pid: 12,
            child_tgid: 11,
        });
        assert_eq!((d.live_in(1), d.live_in(2), d.live()), (1, 1, 2));
        d.apply(Event::Exit {
            pid: 10,
            tgid: 10,
            exit_code: 6,
        });
        assert_eq!(
            d.take_deaths(),
            vec![Death {
                pid: 10,
                end: ChildEnd::Signaled {
                    signal: 6,
                    core_dumped: false
                },
                epoch: 1
            }]
        );
        assert_eq!((d.live_in(1), d.live_in(2)), (0, 1));
    }

    fn nl(what: u32, data: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend(what.to_ne_bytes());
        ev.extend(0u32.to_ne_bytes());
        ev.extend(0u64.to_ne_bytes());
        for d in data {
            ev.extend(d.to_ne_bytes());
        }
        let mut cn = vec![0u8; CN_MSG_LEN];
        cn.extend(ev);
        let len = (NLMSG_HDRLEN + cn.len()) as u32;
        let mut m = Vec::new();
        m.extend(len.to_ne_bytes());
        m.extend(NLMSG_DONE.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(cn);
        m
    }

    #[test]
    fn wait_statuses() {
        assert_eq!(
            ChildEnd::from_wait_status(3 << 8),
            ChildEnd::Exited { code: 3 }
        );
        assert_eq!(
            ChildEnd::from_wait_status(6 | 0x80),
            ChildEnd::Signaled {
                signal: 6,
                core_dumped: true
            }
        );
        assert_eq!(
            ChildEnd::from_wait_status(11),
            ChildEnd::Signaled {
                signal: 11,
                core_dumped: false
            }
        );
    }

    #[test]
    fn connector_messages_parse_and_hostile_ones_are_skipped() {
        let mut buf = nl(PROC_EVENT_FORK, &[10, 10, 11, 11]);
        buf.extend(nl(PROC_EVENT_EXIT, &[11, 11, 6, 17]));
        let mut out = Vec::new();
        parse_events(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                Event::Fork {
                    parent_tgid: 10,
                    child_pid: 11,
                    child_tgid: 11
                },
                Event::Exit {
                    pid: 11,
                    tgid: 11,
                    exit_code: 6
                }
            ]
        );
        // Truncated and lying lengths: nothing read past the buffer, no panic.
        for cut in 0..buf.len() {
            let mut o = Vec::new();
            parse_events(&buf[..cut], &mut o);
            assert!(o.len() <= 1);
        }
        let mut lying = buf.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        let mut o = Vec::new();
        parse_events(&lying, &mut o);
        assert!(o.is_empty());
    }

    #[test]
    fn zombie_exit_code_is_field_52() {
        let fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        let stat = format!("77 (a) b) {}", fields.join(" "));
        assert_eq!(parse_exit_code(&stat), Some(52));
        assert_eq!(parse_exit_code("77 (x) Z 1 2"), None);
    }

    /// A real process tree: a shell whose child kills itself with SIGSEGV, watched from the shell.
    #[test]
    fn a_real_child_killed_by_a_signal_is_reported() {
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 0.3; /bin/sh -c 'kill -SEGV $$'; sleep 0.5"])
            .spawn()
            .expect("spawn /bin/sh");
        let mut d = Descendants::new(sh.id());
        let started = std::time::Instant::now();
        let mut deaths = Vec::new();
        while started.elapsed() < std::time::Duration::from_secs(3) {
            d.update();
            deaths.extend(d.take_deaths());
            if deaths
                .iter()
                .any(|x| matches!(x.end, ChildEnd::Signaled { signal: 11, .. }))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = sh.kill();
        let _ = sh.wait();
        eprintln!("source {:?}, deaths {deaths:?}", d.source());
        if d.source() == Source::ProcConnector {
            assert!(
                deaths
                    .iter()
                    .any(|x| matches!(x.end, ChildEnd::Signaled { signal: 11, .. })),
                "{deaths:?}"
            );
        }
        assert!(d.seen >= 1, "children seen: {}", d.seen);
    }

    /// Without the connector: children are found in /proc while they live.
    #[test]
    fn polling_sees_live_children_and_their_end() {
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 0.4 & sleep 0.4 & wait"])
            .spawn()
            .expect("spawn /bin/sh");
        let mut d = Descendants::polling(sh.id());
        assert_eq!(d.source(), Source::ProcPoll);
        let started = std::time::Instant::now();
        let mut max_live = 0;
        let mut deaths = Vec::new();
        while started.elapsed() < std::time::Duration::from_secs(2) {
            d.update();
            max_live = max_live.max(d.live());
            deaths.extend(d.take_deaths());
            if deaths.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = sh.wait();
        assert_eq!(max_live, 2, "live children");
        assert!(d.seen >= 2, "seen {}", d.seen);
        assert!(deaths.len() >= 2, "{deaths:?}");
    }
}
