//! `analyze --jobs N`: the conversations a capture reader yields are decoded (stage verdicts,
//! diagnosis, the JSON line) by N threads and handed back in the reader's order, so the output is
//! byte for byte what one thread prints.
//!
//! The reader runs on a thread of its own; at most [`IN_FLIGHT_PER_JOB`] conversations per thread are
//! between the reader and the printer at any time (a token is returned when the printer takes a
//! result), so memory stays bounded by the live conversations plus that many finished ones (each
//! at most the reader's retention bound), however the decoding threads race.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rdprobe::capture::reader::CaptureError;
use rdprobe::report::ConnectionReport;
use rdprobe::trace::Trace;

/// Most conversations read but not yet printed, per decoding thread.
pub const IN_FLIGHT_PER_JOB: usize = 8;

/// One decoded connection.
pub struct Decoded {
    pub trace: Trace,
    pub report: ConnectionReport,
    /// The `--json` line (without its newline), when asked for.
    pub json: Option<String>,
}

/// The `--json` line of connection `n`: the report, its number and its diagnosis, keys sorted
/// (written directly, without a `serde_json::Value` tree: see [`rdprobe::sorted_json`]).
pub fn json_line(n: usize, r: &ConnectionReport) -> Result<String, rdprobe::sorted_json::Error> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(flatten)]
        report: &'a ConnectionReport,
        connection: usize,
        diagnosis: rdprobe::diagnose::Diagnosis,
    }
    rdprobe::sorted_json::to_string(&Line {
        report: r,
        connection: n,
        diagnosis: rdprobe::diagnose::diagnose(r),
    })
}

fn decode(n: usize, trace: Trace, json: bool) -> Decoded {
    let report = rdprobe::decode::decode_report(&trace);
    let json = if json {
        // A report always serializes (plain data); an error would be a bug, shown in the line.
        Some(json_line(n, &report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
    } else {
        None
    };
    Decoded {
        trace,
        report,
        json,
    }
}

type Item = Result<Decoded, CaptureError>;

/// The decoded conversations, in order; [`Ordered::finish`] returns the reader afterwards.
pub struct Ordered<C> {
    inner: Inner<C>,
}

enum Inner<C> {
    /// One thread: decode as the reader yields.
    Inline { conv: C, n: usize, json: bool },
    Threads {
        results: Receiver<(usize, Item)>,
        tokens: SyncSender<()>,
        held: BTreeMap<usize, Item>,
        next: usize,
        reader: Option<JoinHandle<C>>,
        workers: Vec<JoinHandle<()>>,
    },
}

/// The threads `--jobs N` means: N, or one per core for 0.
pub fn threads(jobs: usize) -> usize {
    if jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        jobs
    }
}

/// Decodes `conv`'s conversations with `jobs` threads (0: one per core; 1: this thread only).
pub fn decode_ordered<C>(conv: C, jobs: usize, json: bool) -> Ordered<C>
where
    C: Iterator<Item = Result<Trace, CaptureError>> + Send + 'static,
{
    let jobs = threads(jobs);
    if jobs <= 1 {
        return Ordered {
            inner: Inner::Inline { conv, n: 0, json },
        };
    }
    let in_flight = IN_FLIGHT_PER_JOB * jobs;
    let (tok_tx, tok_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = tok_tx.send(());
    }
    let (work_tx, work_rx) = sync_channel::<(usize, Result<Trace, CaptureError>)>(in_flight);
    let (res_tx, res_rx) = sync_channel::<(usize, Item)>(in_flight);
    let reader = std::thread::spawn(move || {
        let mut conv = conv;
        let mut seq = 0usize;
        // Take a token per conversation: waits while `in_flight` are unprinted.
        while tok_rx.recv().is_ok() {
            let Some(item) = conv.next() else {
                break;
            };
            seq += 1;
            let last = item.is_err();
            if work_tx.send((seq, item)).is_err() || last {
                break;
            }
        }
        conv
    });
    let work_rx = Arc::new(Mutex::new(work_rx));
    // The reader has a core of its own when there are more than two.
    let workers = (0..jobs.saturating_sub(1).max(1))
        .map(|_| {
            let rx = work_rx.clone();
            let tx = res_tx.clone();
            std::thread::spawn(move || loop {
                let job = match rx.lock() {
                    Ok(g) => g.recv(),
                    Err(_) => return,
                };
                let Ok((seq, item)) = job else {
                    return;
                };
                let out = item.map(|t| decode(seq, t, json));
                if tx.send((seq, out)).is_err() {
                    return;
                }
            })
        })
        .collect();
    Ordered {
        inner: Inner::Threads {
            results: res_rx,
            tokens: tok_tx,
            held: BTreeMap::new(),
            next: 1,
            reader: Some(reader),
            workers,
        },
    }
}

impl<C: Iterator<Item = Result<Trace, CaptureError>>> Iterator for Ordered<C> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        match &mut self.inner {
            Inner::Inline { conv, n, json } => {
                let item = conv.next()?;
                *n += 1;
                Some(item.map(|t| decode(*n, t, *json)))
            }
            Inner::Threads {
                results,
                tokens,
                held,
                next,
                ..
            } => loop {
                if let Some(item) = held.remove(next) {
                    *next += 1;
                    let _ = tokens.try_send(());
                    return Some(item);
                }
                // Every sender gone and nothing held for `next`: the end.
                let (seq, item) = results.recv().ok()?;
                held.insert(seq, item);
            },
        }
    }
}

impl<C> Ordered<C> {
    /// Waits for the threads and returns the reader (for what it gathered besides conversations).
    pub fn finish(self) -> Option<C> {
        match self.inner {
            Inner::Inline { conv, .. } => Some(conv),
            Inner::Threads {
                results,
                tokens,
                reader,
                workers,
                ..
            } => {
                // A reader waiting for a token or a free slot gives up when these go.
                drop(tokens);
                drop(results);
                let conv = reader.and_then(|r| r.join().ok());
                for w in workers {
                    let _ = w.join();
                }
                conv
            }
        }
    }
}

/// The conversations of several captures, one file after the other (`analyze a.pcap b.pcap …`),
/// each file with its own reader (its own secrets blocks); a later file that cannot be opened or is
/// not a capture is skipped and named in [`Files::skipped`].
///
/// The first file is read by whoever iterates. With `read_ahead` > 0 the next files are read at the
/// same time, each on a thread of its own (at most `read_ahead` at once), into a channel holding at
/// most [`IN_FLIGHT_PER_JOB`] conversations: they are handed on in file order when the files before
/// them end, so the output is the same as reading the files in turn, and memory stays bounded by
/// the readers running (each bounded) and their channels.
pub struct Files<R: std::io::Read> {
    current: Option<rdprobe::capture::reader::Conversations<R>>,
    /// The file `current` reads.
    current_path: std::path::PathBuf,
    /// The file whose damage ended the conversations (the error was the last item).
    pub damaged_file: Option<std::path::PathBuf>,
    rest: std::collections::VecDeque<std::path::PathBuf>,
    opts: rdprobe::capture::reader::ReaderOptions,
    udp: Vec<rdprobe::capture::reader::rdpeudp::UdpFlow>,
    /// Later files skipped, with why.
    pub skipped: Vec<String>,
    /// Files being read ahead, in file order.
    ahead: std::collections::VecDeque<(std::path::PathBuf, Receiver<FileItem>)>,
    read_ahead: usize,
}

/// What a file read ahead hands on.
// The large variant is the one almost every item is (a conversation): boxing it would allocate per
// conversation to shrink the two that come once per file.
#[allow(clippy::large_enum_variant)]
enum FileItem {
    Conversation(Result<Trace, CaptureError>),
    /// The file ended; its RDP-UDP flows.
    Done(Vec<rdprobe::capture::reader::rdpeudp::UdpFlow>),
    /// The file could not be opened or is not a capture.
    Skipped(String),
}

type Input = Box<dyn std::io::Read + Send>;

/// Opens `path` as a capture.
fn open_capture(
    path: &std::path::Path,
    opts: rdprobe::capture::reader::ReaderOptions,
) -> Result<rdprobe::capture::reader::Conversations<Input>, String> {
    std::fs::File::open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
        .and_then(|f| {
            rdprobe::capture::reader::read_capture_file(f, opts)
                .map_err(|e| format!("reading {}: {e}", path.display()))
        })
}

/// Reads `path` on a thread of its own into a bounded channel (the thread ends when the
/// receiver is dropped).
fn read_on_thread(
    path: std::path::PathBuf,
    opts: rdprobe::capture::reader::ReaderOptions,
) -> Receiver<FileItem> {
    let (tx, rx) = sync_channel(IN_FLIGHT_PER_JOB);
    std::thread::spawn(move || {
        let mut conv = match open_capture(&path, opts) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(FileItem::Skipped(e));
                return;
            }
        };
        for item in conv.by_ref() {
            if tx.send(FileItem::Conversation(item)).is_err() {
                return;
            }
        }
        let _ = tx.send(FileItem::Done(conv.udp_flows()));
    });
    rx
}

impl Files<Input> {
    /// `first` is the open reader of the first file (`first_path`); `rest` are read after it, up to
    /// `read_ahead` of them at the same time as the ones before (0: each when the one before ends).
    pub fn new(
        first: rdprobe::capture::reader::Conversations<Input>,
        first_path: std::path::PathBuf,
        rest: Vec<std::path::PathBuf>,
        opts: rdprobe::capture::reader::ReaderOptions,
        read_ahead: usize,
    ) -> Self {
        let mut files = Files {
            current: Some(first),
            current_path: first_path,
            damaged_file: None,
            rest: rest.into(),
            opts,
            udp: Vec::new(),
            skipped: Vec::new(),
            ahead: std::collections::VecDeque::new(),
            read_ahead,
        };
        files.start_ahead();
        files
    }

    /// Starts reading the next files until `read_ahead` are being read ahead.
    fn start_ahead(&mut self) {
        while self.ahead.len() < self.read_ahead {
            let Some(path) = self.rest.pop_front() else {
                return;
            };
            let rx = read_on_thread(path.clone(), self.opts.clone());
            self.ahead.push_back((path, rx));
        }
    }

    /// The RDP-UDP flows of every file read.
    pub fn udp_flows(&self) -> Vec<rdprobe::capture::reader::rdpeudp::UdpFlow> {
        let mut all = self.udp.clone();
        if let Some(c) = &self.current {
            all.extend(c.udp_flows());
        }
        all
    }
}

impl Iterator for Files<Input> {
    type Item = Result<Trace, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(c) = self.current.as_mut() {
                match c.next() {
                    Some(x) => {
                        if x.is_err() {
                            self.damaged_file = Some(self.current_path.clone());
                        }
                        return Some(x);
                    }
                    None => {
                        self.udp.extend(c.udp_flows());
                        self.current = None;
                    }
                }
            }
            if let Some((path, rx)) = self.ahead.front() {
                match rx.recv() {
                    Ok(FileItem::Conversation(x)) => {
                        if x.is_err() {
                            self.damaged_file = Some(path.clone());
                        }
                        return Some(x);
                    }
                    Ok(FileItem::Done(udp)) => self.udp.extend(udp),
                    Ok(FileItem::Skipped(e)) => self.skipped.push(e),
                    // INVARIANT: a reader thread sends Done or Skipped last; it can only vanish
                    // without one by panicking.
                    Err(_) => self
                        .skipped
                        .push("a capture reader stopped unexpectedly".to_string()),
                }
                self.ahead.pop_front();
                self.start_ahead();
                continue;
            }
            let path = self.rest.pop_front()?;
            match open_capture(&path, self.opts.clone()) {
                Ok(c) => {
                    self.current = Some(c);
                    self.current_path = path;
                }
                Err(e) => self.skipped.push(e),
            }
        }
    }
}
