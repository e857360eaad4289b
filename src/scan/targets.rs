//! The targets of a scan: HOST, HOST:PORT, [V6]:PORT and CIDR ranges, from the command line and from
//! files (one per line, `#` comments). Nothing is expanded ahead: [`Targets::iter`] walks the
//! specs, reads files line by line and steps through CIDR ranges as it goes, so a /8 costs no memory.
//! [`Shard`] keeps a deterministic share of the list.

use std::io::BufRead as _;

use std::net::IpAddr;
use std::path::PathBuf;

/// Longest line read from a targets file (longer ones are an error, not an allocation).
pub const MAX_LINE_LEN: usize = 4096;

/// Why a target list cannot be used. Messages name the file and line.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Invalid(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {target} is not a loopback address (127.0.0.0/8, ::1, localhost); pass --allow-remote to scan other hosts")]
    Remote { what: String, target: String },
}

/// One target: a host (an IP address as text, or a name) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// The key a target is known by in results, stores and shards: `host:port`, `[v6]:port`.
    pub fn key(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One entry as written: a host with or without a port, or a range.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Spec {
    Host { host: String, port: Option<u16> },
    Cidr { first: u128, last: u128, v6: bool },
}

/// Parses one entry: `10.0.0.5`, `10.0.0.5:3390`, `[::1]:3389`, `rdp01.example`, `10.0.0.0/24`.
fn parse_spec(s: &str) -> Result<Spec, String> {
    let s = s.trim();
    if let Some((net, bits)) = s.split_once('/') {
        let ip: IpAddr = net
            .parse()
            .map_err(|_| format!("invalid CIDR range `{s}`"))?;
        let bits: u32 = bits
            .parse()
            .map_err(|_| format!("invalid prefix length in `{s}`"))?;
        let (v, width, v6) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, false),
            IpAddr::V6(a) => (u128::from(a), 128, true),
        };
        if bits > width {
            return Err(format!("prefix length {bits} over {width} in `{s}`"));
        }
        let host_bits = width - bits;
        let mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        return Ok(Spec::Cidr {
            first: v & !mask,
            last: (v & !mask) | mask,
            v6,
        });
    }
    // A bare host keeps "no port" so that --ports applies; HOST:PORT names its own.
    let has_port = s.starts_with('[') || (s.matches(':').count() == 1);
    let (host, port) = crate::parse::target(s)?;
    if host.is_empty() {
        return Err(format!("invalid target `{s}`"));
    }
    Ok(Spec::Host {
        host,
        port: has_port.then_some(port),
    })
}

fn ip_of(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

/// Where entries come from.
#[derive(Clone, Debug)]
enum Source {
    Arg(String),
    File(PathBuf),
}

/// The target list: command-line entries and files, and the ports for entries without one.
#[derive(Clone, Debug)]
pub struct Targets {
    sources: Vec<Source>,
    ports: Vec<u16>,
}

impl Targets {
    /// Each argument is an entry, or (when a file of that name exists, or it is `@FILE`) a file of
    /// entries. `ports` apply to entries without a port (default 3389).
    pub fn new(args: &[String], ports: &[u16]) -> Result<Targets, TargetError> {
        let mut sources = Vec::new();
        for a in args {
            if let Some(f) = a.strip_prefix('@') {
                sources.push(Source::File(PathBuf::from(f)));
            } else if std::path::Path::new(a).is_file() {
                sources.push(Source::File(PathBuf::from(a)));
            } else {
                parse_spec(a).map_err(TargetError::Invalid)?;
                sources.push(Source::Arg(a.clone()));
            }
        }
        if sources.is_empty() {
            return Err(TargetError::Invalid("no targets".into()));
        }
        let ports = if ports.is_empty() {
            vec![3389]
        } else {
            ports.to_vec()
        };
        Ok(Targets { sources, ports })
    }

    /// Every target in order: entries in the order given, each range address by address, each
    /// address with each port. Lazy; an unreadable file or a bad line ends it with an error.
    pub fn iter(&self) -> TargetIter<'_> {
        TargetIter {
            t: self,
            source: 0,
            lines: None,
            line_no: 0,
            file: String::new(),
            current: None,
            port_idx: 0,
            done: false,
        }
    }
}

/// An entry being expanded: the next address of a range (or the host) and the ports still to give.
struct Expanding {
    spec: Spec,
    next: u128,
}

pub struct TargetIter<'a> {
    t: &'a Targets,
    source: usize,
    lines: Option<std::io::BufReader<std::fs::File>>,
    line_no: usize,
    file: String,
    current: Option<Expanding>,
    port_idx: usize,
    done: bool,
}

impl TargetIter<'_> {
    /// The next entry from the sources, or None at the end.
    fn next_spec(&mut self) -> Result<Option<Spec>, TargetError> {
        loop {
            if let Some(r) = self.lines.as_mut() {
                let mut line = Vec::new();
                let n = std::io::Read::take(&mut *r, MAX_LINE_LEN as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(|source| TargetError::Io {
                        path: self.file.clone(),
                        source,
                    })?;
                if n == 0 {
                    self.lines = None;
                    continue;
                }
                self.line_no += 1;
                if line.len() > MAX_LINE_LEN {
                    return Err(TargetError::Invalid(format!(
                        "{} line {}: longer than {MAX_LINE_LEN} bytes",
                        self.file, self.line_no
                    )));
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.split('#').next().unwrap_or("").trim();
                if text.is_empty() {
                    continue;
                }
                return parse_spec(text).map(Some).map_err(|e| {
                    TargetError::Invalid(format!("{} line {}: {e}", self.file, self.line_no))
                });
            }
            let Some(src) = self.t.sources.get(self.source) else {
                return Ok(None);
            };
            self.source += 1;
            match src {
                Source::Arg(a) => return parse_spec(a).map(Some).map_err(TargetError::Invalid),
                Source::File(p) => {
                    self.file = p.display().to_string();
                    self.line_no = 0;
                    let f = std::fs::File::open(p).map_err(|source| TargetError::Io {
                        path: self.file.clone(),
                        source,
                    })?;
                    self.lines = Some(std::io::BufReader::new(f));
                }
            }
        }
    }
}

impl Iterator for TargetIter<'_> {
    type Item = Result<Target, TargetError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let Some(cur) = self.current.as_mut() else {
                match self.next_spec() {
                    Ok(Some(spec)) => {
                        let next = match &spec {
                            Spec::Cidr { first, .. } => *first,
                            Spec::Host { .. } => 0,
                        };
                        self.current = Some(Expanding { spec, next });
                        self.port_idx = 0;
                        continue;
                    }
                    Ok(None) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            };
            match &cur.spec {
                Spec::Host {
                    host,
                    port: Some(p),
                } => {
                    let t = Target {
                        host: host.clone(),
                        port: *p,
                    };
                    self.current = None;
                    return Some(Ok(t));
                }
                Spec::Host { host, port: None } => {
                    let t = Target {
                        host: host.clone(),
                        port: self.t.ports[self.port_idx],
                    };
                    self.port_idx += 1;
                    if self.port_idx == self.t.ports.len() {
                        self.current = None;
                    }
                    return Some(Ok(t));
                }
                Spec::Cidr { last, v6, .. } => {
                    let (last, v6) = (*last, *v6);
                    let t = Target {
                        host: ip_of(cur.next, v6).to_string(),
                        port: self.t.ports[self.port_idx],
                    };
                    self.port_idx += 1;
                    if self.port_idx == self.t.ports.len() {
                        self.port_idx = 0;
                        if cur.next == last {
                            self.current = None;
                        } else {
                            cur.next += 1;
                        }
                    }
                    return Some(Ok(t));
                }
            }
        }
    }
}

/// Is this host one `scan` may reach without `--allow-remote`: a loopback address or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => crate::lab::is_loopback(ip),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Refuses a non-loopback target (unless remote targets are allowed).
pub fn check_target(t: &Target, allow_remote: bool) -> Result<(), TargetError> {
    if allow_remote || is_loopback_host(&t.host) {
        Ok(())
    } else {
        Err(TargetError::Remote {
            what: "target".into(),
            target: t.key(),
        })
    }
}

/// A deterministic share of a target list: shard `k` of `n` (1-based) keeps the targets whose key
/// hashes to it (FNV-1a 64), whatever the order of the list, so the shards are disjoint and
/// together complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub k: u64,
    pub n: u64,
}

impl Shard {
    pub const ALL: Shard = Shard { k: 1, n: 1 };

    pub fn contains(&self, t: &Target) -> bool {
        self.n <= 1 || fnv1a(t.key().as_bytes()) % self.n == self.k - 1
    }

    /// `K/N` (1 <= K <= N); `N` alone takes K from the environment: a Kubernetes Indexed Job's
    /// `JOB_COMPLETION_INDEX` (0-based) or a Slurm array's `SLURM_ARRAY_TASK_ID`; `auto` takes both
    /// from Slurm (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`).
    pub fn parse(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let num = |v: &str, what: &str| -> Result<u64, String> {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{what} `{v}` is not a number"))
        };
        let slurm_k = |n_min: Option<String>| -> Result<Option<u64>, String> {
            let Some(id) = env("SLURM_ARRAY_TASK_ID") else {
                return Ok(None);
            };
            let id = num(&id, "SLURM_ARRAY_TASK_ID")?;
            let min = match n_min {
                Some(m) => num(&m, "SLURM_ARRAY_TASK_MIN")?,
                None => 0,
            };
            Ok(Some(id.saturating_sub(min) + 1))
        };
        let (k, n) = if s.trim() == "auto" {
            let n = env("SLURM_ARRAY_TASK_COUNT")
                .ok_or("--shard auto needs SLURM_ARRAY_TASK_COUNT (or give --shard K/N)")?;
            let n = num(&n, "SLURM_ARRAY_TASK_COUNT")?;
            let k = slurm_k(env("SLURM_ARRAY_TASK_MIN"))?
                .ok_or("--shard auto needs SLURM_ARRAY_TASK_ID")?;
            (k, n)
        } else if let Some((k, n)) = s.split_once('/') {
            (num(k, "shard")?, num(n, "shard count")?)
        } else {
            let n = num(s, "shard count")?;
            let k = match env("JOB_COMPLETION_INDEX") {
                Some(i) => num(&i, "JOB_COMPLETION_INDEX")? + 1,
                None => slurm_k(env("SLURM_ARRAY_TASK_MIN"))?.ok_or(
                    "--shard N takes the shard from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID; neither is set",
                )?,
            };
            (k, n)
        };
        if n == 0 || k == 0 || k > n {
            return Err(format!("shard {k}/{n}: needs 1 <= K <= N"));
        }
        Ok(Shard { k, n })
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(args: &[&str], ports: &[u16]) -> Vec<String> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Targets::new(&a, ports)
            .unwrap()
            .iter()
            .map(|t| t.unwrap().key())
            .collect()
    }

    #[test]
    fn entries_ranges_and_ports() {
        assert_eq!(
            keys(&["127.0.0.0/31", "localhost", "127.0.0.9:5"], &[1, 2]),
            [
                "127.0.0.0:1",
                "127.0.0.0:2",
                "127.0.0.1:1",
                "127.0.0.1:2",
                "localhost:1",
                "localhost:2",
                "127.0.0.9:5"
            ]
        );
        assert_eq!(keys(&["::1", "[::1]:7"], &[]), ["[::1]:3389", "[::1]:7"]);
        assert_eq!(keys(&["10.1.2.3/32"], &[]), ["10.1.2.3:3389"]);
        assert_eq!(keys(&["127.0.0.0/28"], &[]).len(), 16);
        // A /8 is not expanded ahead.
        let a = vec!["10.0.0.0/8".to_string()];
        let t = Targets::new(&a, &[1]).unwrap();
        assert_eq!(
            t.iter().nth(70_000).unwrap().unwrap().key(),
            "10.1.17.112:1"
        );
        assert_eq!(t.iter().count(), 1 << 24);
        let a = vec!["::/0".to_string()];
        assert_eq!(
            Targets::new(&a, &[1])
                .unwrap()
                .iter()
                .nth(2)
                .unwrap()
                .unwrap()
                .key(),
            "[::2]:1"
        );
        for bad in ["10.0.0.0/33", "h:99999", "1.2.3.4/x", ""] {
            assert!(Targets::new(&[bad.to_string()], &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_with_comments() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.txt");
        std::fs::write(
            &f,
            "# lab\n127.0.0.1:3390 # xrdp\n\n  127.0.0.2\n127.0.0.4/31\n",
        )
        .unwrap();
        let got = keys(&[f.to_str().unwrap()], &[3389]);
        assert_eq!(
            got,
            [
                "127.0.0.1:3390",
                "127.0.0.2:3389",
                "127.0.0.4:3389",
                "127.0.0.5:3389"
            ]
        );
        std::fs::write(&f, "127.0.0.1\nnot a:host:x\n").unwrap();
        let a = vec![f.to_str().unwrap().to_string()];
        let t = Targets::new(&a, &[]).unwrap();
        let err = t.iter().find_map(|r| r.err()).unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn loopback_only_unless_allowed() {
        let t = |h: &str| Target {
            host: h.into(),
            port: 1,
        };
        for ok in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "localhost",
            "::ffff:127.0.0.1",
        ] {
            assert!(check_target(&t(ok), false).is_ok(), "{ok}");
        }
        for bad in ["10.0.0.1", "192.168.1.1", "example.com", "::2", "0.0.0.0"] {
            assert!(check_target(&t(bad), false).is_err(), "{bad}");
            assert!(check_target(&t(bad), true).is_ok(), "{bad}");
        }
    }

    #[test]
    fn shards_are_disjoint_and_complete() {
        let a = vec!["127.0.0.0/24".to_string()];
        let all: Vec<Target> = Targets::new(&a, &[3389, 3390])
            .unwrap()
            .iter()
            .map(|t| t.unwrap())
            .collect();
        let n = 7;
        let mut seen = 0;
        for k in 1..=n {
            let s = Shard { k, n };
            let mine = all.iter().filter(|t| s.contains(t)).count();
            assert!(mine > 30, "shard {k}: {mine}");
            seen += mine;
        }
        assert_eq!(seen, all.len());
        let none = |_: &str| None;
        assert_eq!(Shard::parse("3/16", &none), Ok(Shard { k: 3, n: 16 }));
        assert!(Shard::parse("0/16", &none).is_err());
        assert!(Shard::parse("17/16", &none).is_err());
        assert!(Shard::parse("16", &none).is_err());
        let k8s = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "0".to_string());
        assert_eq!(Shard::parse("4", &k8s), Ok(Shard { k: 1, n: 4 }));
        let slurm = |v: &str| match v {
            "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("8".to_string()),
            _ => None,
        };
        assert_eq!(Shard::parse("auto", &slurm), Ok(Shard { k: 5, n: 8 }));
    }
}
