//! `--html report.html`: one self-contained page per run, for people who do not read tables.
//!
//! A connection is shown as a stage timeline, a ladder diagram (client on the left, server on the
//! right, one arrow per PDU named from the stage's `pdus` fact, and the TCP events of the Trace: the
//! handshake, FIN and RST with who sent them, timeouts, capture gaps and long silences), the
//! diagnosis (fault class, evidence, causes with remedies) and every decoded fact.
//!
//! The page is pure HTML and inline SVG with inline CSS: no script, no font, no image, nothing
//! fetched (a Content-Security-Policy of `default-src 'none'` says so to the browser too). Every
//! string that came from the wire (certificate names, cookies, NTLM names, notes) goes through
//! [`escape`]. Nothing secret is shown: the page is built from the report (the documented JSON
//! schema) and the Trace's event kinds and times, never from payload bytes or the key log.
//!
//! Connections are written as they are decoded ([`Page::connection`]), so a capture of thousands
//! of connections is streamed; the index of all connections is written last and placed first by CSS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::diagnose::{self, Diagnosis};
use crate::enumerate::EnumReport;
use crate::report::{self, ConnectionReport, StageReport};
use crate::stage::{Side, Stage, Verdict};
use crate::trace::{ConnectFailure, Dir, EventKind, Layer, Trace};

/// Connections drawn in full on one page; later ones get a row in the index only.
pub const MAX_DETAILED: usize = 500;

/// A silence this long between two events of a connection gets its own row in the ladder.
const SILENCE_US: u64 = 500_000;

/// Longest label drawn on an arrow (the full text is in the arrow's tooltip).
const MAX_LABEL: usize = 64;

/// Escapes text for HTML element content and quoted attribute values (also valid inside SVG).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters from a hostile peer: shown as a replacement, never raw.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root{--ok:#1b7f3b;--bad:#c0262d;--warn:#b85c00;--ink:#1d2330;--mute:#5b6372;--line:#d5d9e0;--band:#f4f6f9}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 "DejaVu Sans",Verdana,Arial,sans-serif;color:var(--ink);background:#fff}
main{display:flex;flex-direction:column;max-width:1100px;margin:0 auto;padding:16px 20px 40px}
header{order:-2}
#index{order:-1}
h1{font-size:22px;margin:4px 0 2px}
h2{font-size:18px;margin:0 0 6px}
h3{font-size:15px;margin:18px 0 6px;color:var(--mute);text-transform:uppercase;letter-spacing:.04em}
.sub{color:var(--mute)}
section.conn{border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:14px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:bold;vertical-align:middle}
.ok{background:var(--ok)}.bad{background:var(--bad)}.warn{background:var(--warn)}
.summary{font-size:15px;margin:6px 0 2px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
th{color:var(--mute);font-weight:normal}
td.v{word-break:break-all;font-family:"DejaVu Sans Mono",monospace;font-size:12px}
tr.failed td{color:var(--bad)}
.diag{background:#fff6f5;border-left:4px solid var(--bad);padding:8px 12px;margin:8px 0}
.diag.none{background:#f3faf5;border-left-color:var(--ok)}
.diag ol{margin:4px 0 0 0;padding-left:22px}
.diag li{margin:4px 0}
.remedy{color:var(--mute)}
ul.evidence{margin:4px 0;padding-left:20px}
svg{max-width:100%;height:auto;display:block}
svg text{font-family:"DejaVu Sans",Verdana,Arial,sans-serif}
details{margin:4px 0}
summary{cursor:pointer;color:var(--mute)}
pre{background:var(--band);padding:10px;border-radius:6px;overflow-x:auto;font-size:12px}
.notes li{color:var(--mute)}
"#;

fn page_head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        escape(title)
    );
}

const PAGE_END: &str = "</main>\n</body>\n</html>\n";

/// "2026-11-24 03:25:01.408 UTC" for microseconds since the Unix epoch.
fn utc(us: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("{us} µs"),
    }
}

/// "+12.3 ms" / "+2.001 s" after the connection's start.
fn rel(us: u64) -> String {
    if us >= 1_000_000 {
        format!("+{:.3} s", us as f64 / 1e6)
    } else {
        format!("+{:.1} ms", us as f64 / 1e3)
    }
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.3} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

/// A fact value as text (strings as they are, lists comma separated).
fn fact_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(fact_text).collect::<Vec<_>>().join(", "),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}: {}", fact_text(v)))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Ok => "ok".to_owned(),
        Verdict::Failed { kind, by } => format!("{} ({by})", kind.name()),
    }
}

fn side_name(d: Dir) -> &'static str {
    match d.sender() {
        Side::Server => "server",
        _ => "client",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

// ---------------------------------------------------------------------------------------------
// The ladder

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrowKind {
    Pdu,
    Data,
    Tcp,
    Fin,
    Rst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoteKind {
    Info,
    Trouble,
}

#[derive(Clone, Debug)]
enum Row {
    Stage {
        stage: Stage,
        failed: bool,
        text: String,
    },
    Arrow {
        dir: Dir,
        label: String,
        kind: ArrowKind,
        t: Option<u64>,
    },
    Note {
        text: String,
        kind: NoteKind,
        t: Option<u64>,
    },
}

impl Row {
    fn t(&self) -> Option<u64> {
        match self {
            Row::Stage { .. } => None,
            Row::Arrow { t, .. } | Row::Note { t, .. } => *t,
        }
    }

    fn height(&self) -> u32 {
        match self {
            Row::Stage { .. } => 26,
            Row::Arrow { .. } => 30,
            Row::Note { .. } => 24,
        }
    }
}

/// The stage an event at `t` belongs to: the last one that began at or before it.
fn stage_index_at(stages: &[StageReport], t: u64) -> usize {
    let mut idx = 0;
    for (i, s) in stages.iter().enumerate() {
        if s.start_us != 0 && s.start_us <= t {
            idx = i;
        }
    }
    idx
}

/// Splits `(sender, item)` sequences into runs of the same sender.
fn runs<T: Clone>(items: &[(Dir, T)]) -> Vec<(Dir, Vec<T>)> {
    let mut out: Vec<(Dir, Vec<T>)> = Vec::new();
    for (d, x) in items {
        match out.last_mut() {
            Some((ld, v)) if ld == d => v.push(x.clone()),
            _ => out.push((*d, vec![x.clone()])),
        }
    }
    out
}

/// The PDUs of a stage from its `pdus` fact ("client: connection request").
fn stage_pdus(s: &StageReport) -> Vec<(Dir, String)> {
    let Some(serde_json::Value::Array(list)) = s.facts.get("pdus") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|v| v.as_str())
        .map(|p| match p.split_once(": ") {
            Some(("server", name)) => (Dir::S2C, name.to_owned()),
            Some(("client", name)) => (Dir::C2S, name.to_owned()),
            _ => (Dir::C2S, p.to_owned()),
        })
        .collect()
}

/// The stage's PDUs with the time of the data behind them when that is unambiguous: the segments
/// of the stage (the cleartext ones when decrypted) either come in the same runs by sender as the
/// PDUs (several PDUs in one run of segments share its first time), or one segment per PDU in
/// each direction. Otherwise untimed, in the order decoded.
fn timed_pdus(
    pdus: Vec<(Dir, String)>,
    data: &[(Dir, Layer, u64)],
    more: u64,
) -> Vec<(Dir, String, Option<u64>)> {
    let untimed = |pdus: Vec<(Dir, String)>| pdus.into_iter().map(|(d, n)| (d, n, None)).collect();
    if more > 0 {
        return untimed(pdus);
    }
    let layer = if data.iter().any(|(_, l, _)| *l == Layer::Inner) {
        Layer::Inner
    } else {
        Layer::Wire
    };
    let segs: Vec<(Dir, u64)> = data
        .iter()
        .filter(|(_, l, _)| *l == layer)
        .map(|(d, _, t)| (*d, *t))
        .collect();
    let pdu_runs = runs(&pdus);
    let seg_runs = runs(&segs);
    if pdu_runs.len() == seg_runs.len()
        && pdu_runs
            .iter()
            .zip(&seg_runs)
            .all(|((a, _), (b, _))| a == b)
    {
        let mut out = Vec::with_capacity(pdus.len());
        for ((dir, names), (_, times)) in pdu_runs.into_iter().zip(seg_runs) {
            let t = times.first().copied();
            out.extend(names.into_iter().map(|n| (dir, n, t)));
        }
        return out;
    }
    let count = |d: Dir, v: &mut dyn Iterator<Item = Dir>| v.filter(|x| *x == d).count();
    let per_dir_match = [Dir::C2S, Dir::S2C].iter().all(|d| {
        count(*d, &mut pdus.iter().map(|p| p.0)) == count(*d, &mut segs.iter().map(|s| s.0))
    });
    if per_dir_match {
        let times =
            |d: Dir| -> Vec<u64> { segs.iter().filter(|s| s.0 == d).map(|s| s.1).collect() };
        let (c2s, s2c) = (times(Dir::C2S), times(Dir::S2C));
        let (mut ci, mut si) = (c2s.into_iter(), s2c.into_iter());
        let mut out: Vec<(Dir, String, Option<u64>)> = pdus
            .into_iter()
            .map(|(d, n)| {
                let t = if d == Dir::C2S { ci.next() } else { si.next() };
                (d, n, t)
            })
            .collect();
        out.sort_by_key(|p| p.2);
        return out;
    }
    untimed(pdus)
}

/// The ladder's rows: per stage its PDUs (timed when the Trace's data bursts line up with them)
/// and the connection events that fell in it, then silences between timed rows.
fn ladder_rows(r: &ConnectionReport, trace: Option<&Trace>) -> Vec<Row> {
    let n = r.stages.len();
    // Events per stage.
    let mut events: Vec<Vec<Row>> = vec![Vec::new(); n.max(1)];
    // Wire data segments per stage, for timing the PDUs.
    let mut data: Vec<Vec<(Dir, Layer, u64)>> = vec![Vec::new(); n.max(1)];
    // A capture's frames name their stage; otherwise (a live probe) the time does.
    let by_frame: std::collections::HashMap<u64, usize> = r
        .stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.frames.iter().map(move |f| (*f, i)))
        .collect();
    if let Some(tr) = trace {
        for e in &tr.events {
            let i = e
                .frame
                .and_then(|f| by_frame.get(&f).copied())
                .unwrap_or_else(|| stage_index_at(&r.stages, e.t_us))
                .min(n.saturating_sub(1));
            let t = Some(e.t_us);
            let row = match &e.kind {
                EventKind::Connected => Some(Row::Arrow {
                    dir: Dir::C2S,
                    label: "TCP handshake (SYN, SYN-ACK, ACK)".into(),
                    kind: ArrowKind::Tcp,
                    t,
                }),
                EventKind::ConnectFailed(f) => Some(match f {
                    ConnectFailure::Refused => Row::Arrow {
                        dir: Dir::S2C,
                        label: "RST: connection refused".into(),
                        kind: ArrowKind::Rst,
                        t,
                    },
                    ConnectFailure::TimedOut { after_ms } => Row::Note {
                        text: format!("no answer to SYN within {after_ms} ms"),
                        kind: NoteKind::Trouble,
                        t,
                    },
                    ConnectFailure::Unreachable { detail } => Row::Note {
                        text: format!("unreachable: {detail}"),
                        kind: NoteKind::Trouble,
                        t,
                    },
                }),
                EventKind::Data { dir, layer, .. } => {
                    data[i].push((*dir, *layer, e.t_us));
                    None
                }
                EventKind::Elided { .. } => None,
                EventKind::Gap { dir, len } => Some(Row::Note {
                    text: format!(
                        "capture gap: {len} bytes from the {} missing",
                        side_name(*dir)
                    ),
                    kind: NoteKind::Trouble,
                    t,
                }),
                EventKind::Fin { dir } => Some(Row::Arrow {
                    dir: *dir,
                    label: format!("FIN from the {}", side_name(*dir)),
                    kind: ArrowKind::Fin,
                    t,
                }),
                EventKind::Rst { dir } => Some(Row::Arrow {
                    dir: *dir,
                    label: format!("RST from the {}", side_name(*dir)),
                    kind: ArrowKind::Rst,
                    t,
                }),
                EventKind::Timeout {
                    waiting_for,
                    after_ms,
                } => Some(Row::Note {
                    text: format!(
                        "timeout: nothing from the {} for {after_ms} ms",
                        side_name(*waiting_for)
                    ),
                    kind: NoteKind::Trouble,
                    t,
                }),
                EventKind::TlsSession(info) => Some(Row::Note {
                    text: format!("TLS session: {} {}", info.version, info.cipher_suite),
                    kind: NoteKind::Info,
                    t,
                }),
                EventKind::TlsError { message } => Some(Row::Note {
                    text: format!("client TLS error: {message}"),
                    kind: NoteKind::Trouble,
                    t,
                }),
                EventKind::StoppedAfter(s) => Some(Row::Note {
                    text: format!("stopped on purpose after {s}"),
                    kind: NoteKind::Info,
                    t,
                }),
                EventKind::Note(text) => Some(Row::Note {
                    text: text.clone(),
                    kind: NoteKind::Info,
                    t,
                }),
                EventKind::ClientRejected { what } => Some(Row::Note {
                    text: format!("the client rejected the server's data: {what}"),
                    kind: NoteKind::Trouble,
                    t,
                }),
                EventKind::CaptureEnd => Some(Row::Note {
                    text: "the capture ends here".into(),
                    kind: NoteKind::Info,
                    t,
                }),
            };
            if let Some(row) = row {
                events[i].push(row);
            }
        }
    }

    let mut rows = Vec::new();
    for (i, s) in r.stages.iter().enumerate() {
        let failed = !s.verdict.is_ok();
        rows.push(Row::Stage {
            stage: s.stage,
            failed,
            text: format!(
                "{} — {} · {}",
                s.stage.as_str(),
                verdict_text(&s.verdict),
                ms(s.duration_ms)
            ),
        });
        let pdus = stage_pdus(s);
        let more = s
            .facts
            .get("pdus_more")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let mut stage_rows: Vec<Row> = Vec::new();
        if pdus.is_empty() {
            // No names (encrypted without keys, or a stage without PDUs): the byte counts.
            for (dir, bytes) in [(Dir::C2S, s.bytes_c2s), (Dir::S2C, s.bytes_s2c)] {
                if bytes > 0 {
                    stage_rows.push(Row::Arrow {
                        dir,
                        label: format!("{bytes} bytes"),
                        kind: ArrowKind::Data,
                        t: None,
                    });
                }
            }
        } else {
            for (dir, label, t) in timed_pdus(pdus, &data[i], more) {
                stage_rows.push(Row::Arrow {
                    dir,
                    label,
                    kind: ArrowKind::Pdu,
                    t,
                });
            }
            if more > 0 {
                stage_rows.push(Row::Note {
                    text: format!("… and {more} more PDUs"),
                    kind: NoteKind::Info,
                    t: None,
                });
            }
        }
        // Events after the PDUs, unless the PDUs are timed: then in time order (stable).
        stage_rows.append(&mut events[i]);
        if stage_rows.iter().filter(|r| r.t().is_none()).count() == 0 {
            stage_rows.sort_by_key(|r| r.t());
        }
        rows.append(&mut stage_rows);
    }

    // Silences between consecutive timed rows.
    let mut out = Vec::with_capacity(rows.len());
    let mut last_t: Option<u64> = None;
    for row in rows {
        if let (Some(prev), Some(t)) = (last_t, row.t()) {
            if t >= prev + SILENCE_US {
                out.push(Row::Note {
                    text: format!("{} without a packet", ms((t - prev) as f64 / 1000.0)),
                    kind: NoteKind::Trouble,
                    t: None,
                });
            }
        }
        if let Some(t) = row.t() {
            last_t = Some(t);
        }
        out.push(row);
    }
    out
}

const LW: u32 = 960;
const CX: u32 = 230;
const SX: u32 = 900;

fn ladder_svg(out: &mut String, r: &ConnectionReport, trace: Option<&Trace>) {
    let rows = ladder_rows(r, trace);
    let t0 = trace
        .map(|t| t.start_us())
        .filter(|t| *t > 0)
        .or_else(|| r.stages.first().map(|s| s.start_us))
        .unwrap_or(0);
    let top = 50u32;
    let height = top + rows.iter().map(Row::height).sum::<u32>() + 16;
    let _ = write!(
        out,
        "<svg class=\"ladder\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {LW} {height}\" \
         width=\"{LW}\" height=\"{height}\" role=\"img\" aria-label=\"ladder diagram\">\n\
         <defs>\
         <marker id=\"ah\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" fill=\"#1d2330\"/></marker>\
         <marker id=\"ahr\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" fill=\"#c0262d\"/></marker>\
         <marker id=\"aho\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" fill=\"#b85c00\"/></marker>\
         </defs>\n"
    );
    let _ = writeln!(
        out,
        "<text x=\"{CX}\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\" font-size=\"14\">client</text>\
         <text x=\"{CX}\" y=\"34\" text-anchor=\"middle\" font-size=\"12\" fill=\"#5b6372\">{}</text>\
         <text x=\"{SX}\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\" font-size=\"14\">server</text>\
         <text x=\"{SX}\" y=\"34\" text-anchor=\"end\" font-size=\"12\" fill=\"#5b6372\">{}</text>",
        escape(&r.client),
        escape(&r.server)
    );
    let _ = writeln!(
        out,
        "<line x1=\"{CX}\" y1=\"{top}\" x2=\"{CX}\" y2=\"{}\" stroke=\"#9aa1ad\" stroke-width=\"2\"/>\
         <line x1=\"{SX}\" y1=\"{top}\" x2=\"{SX}\" y2=\"{}\" stroke=\"#9aa1ad\" stroke-width=\"2\"/>",
        height - 8,
        height - 8
    );
    let mut y = top;
    let mut band = 0usize;
    for row in &rows {
        let h = row.height();
        match row {
            Row::Stage {
                stage,
                failed,
                text,
            } => {
                band += 1;
                let fill = if *failed {
                    "#fde8e7"
                } else if band.is_multiple_of(2) {
                    "#eef1f5"
                } else {
                    "#f6f8fa"
                };
                let stripe = if *failed { "#c0262d" } else { "#1b7f3b" };
                let _ = writeln!(
                    out,
                    "<g class=\"stage\" data-stage=\"{s}\"><rect x=\"4\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"/>\
                     <rect x=\"4\" y=\"{}\" width=\"4\" height=\"{}\" fill=\"{stripe}\"/>\
                     <text x=\"14\" y=\"{}\" font-size=\"13\" font-weight=\"bold\" fill=\"{}\">{}</text></g>",
                    y + 2,
                    LW - 8,
                    h - 4,
                    y + 2,
                    h - 4,
                    y + 18,
                    if *failed { "#c0262d" } else { "#1d2330" },
                    escape(text),
                    s = stage.as_str(),
                );
            }
            Row::Arrow {
                dir,
                label,
                kind,
                t,
            } => {
                let ly = y + h - 8;
                let (x1, x2) = match dir {
                    Dir::C2S => (CX, SX),
                    Dir::S2C => (SX, CX),
                };
                let (color, marker, extra) = match kind {
                    ArrowKind::Pdu => ("#1d2330", "ah", ""),
                    ArrowKind::Data => ("#5b6372", "ah", " stroke-dasharray=\"2 3\""),
                    ArrowKind::Tcp => ("#5b6372", "ah", ""),
                    ArrowKind::Fin => ("#b85c00", "aho", " stroke-dasharray=\"6 3\""),
                    ArrowKind::Rst => ("#c0262d", "ahr", ""),
                };
                let width = if *kind == ArrowKind::Rst { 3 } else { 2 };
                let _ = write!(
                    out,
                    "<g class=\"arrow {}\"><title>{} → {}: {}</title>\
                     <line x1=\"{x1}\" y1=\"{ly}\" x2=\"{x2}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"{width}\" marker-end=\"url(#{marker})\"{extra}/>\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" fill=\"{color}\">{}</text>",
                    match kind {
                        ArrowKind::Pdu => "pdu",
                        ArrowKind::Data => "data",
                        ArrowKind::Tcp => "tcp",
                        ArrowKind::Fin => "fin",
                        ArrowKind::Rst => "rst",
                    },
                    side_name(*dir),
                    side_name(dir.reverse()),
                    escape(label),
                    (CX + SX) / 2,
                    ly - 5,
                    escape(&truncate(label, MAX_LABEL)),
                );
                if let Some(t) = t {
                    let _ = write!(
                        out,
                        "<text x=\"{}\" y=\"{ly}\" text-anchor=\"end\" font-size=\"11\" fill=\"#5b6372\">{}</text>",
                        CX - 8,
                        rel(t.saturating_sub(t0))
                    );
                }
                out.push_str("</g>\n");
            }
            Row::Note { text, kind, t } => {
                let (color, class) = match kind {
                    NoteKind::Info => ("#5b6372", "note"),
                    NoteKind::Trouble => ("#b85c00", "note trouble"),
                };
                let _ = write!(
                    out,
                    "<g class=\"{class}\"><title>{}</title><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" font-style=\"italic\" fill=\"{color}\">{}</text>",
                    escape(text),
                    (CX + SX) / 2,
                    y + h - 8,
                    escape(&truncate(text, 90)),
                );
                if let Some(t) = t {
                    let _ = write!(
                        out,
                        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#5b6372\">{}</text>",
                        CX - 8,
                        y + h - 8,
                        rel(t.saturating_sub(t0))
                    );
                }
                out.push_str("</g>\n");
            }
        }
        y += h;
    }
    out.push_str("</svg>\n");
}

// ---------------------------------------------------------------------------------------------
// The timeline

fn timeline_svg(out: &mut String, r: &ConnectionReport) {
    let t0 = r
        .stages
        .iter()
        .map(|s| s.start_us)
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let end = r
        .stages
        .iter()
        .map(|s| s.start_us.saturating_sub(t0) as f64 / 1000.0 + s.duration_ms)
        .fold(0.0f64, f64::max)
        .max(0.001);
    let row_h = 22u32;
    let (label_w, bar_x, bar_w) = (120u32, 130u32, 680u32);
    let height = row_h * r.stages.len() as u32 + 24;
    let _ = writeln!(
        out,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {LW} {height}\" width=\"{LW}\" height=\"{height}\" role=\"img\" aria-label=\"stage timeline\">"
    );
    for (i, s) in r.stages.iter().enumerate() {
        let y = i as u32 * row_h + 4;
        let start = s.start_us.saturating_sub(t0) as f64 / 1000.0;
        let x = bar_x as f64 + start / end * bar_w as f64;
        let w = (s.duration_ms / end * bar_w as f64).max(3.0);
        let color = if s.verdict.is_ok() {
            "#1b7f3b"
        } else {
            "#c0262d"
        };
        let _ = writeln!(
            out,
            "<g class=\"tl\" data-stage=\"{st}\"><text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{st}</text>\
             <rect x=\"{bar_x}\" y=\"{}\" width=\"{bar_w}\" height=\"14\" fill=\"#f4f6f9\"/>\
             <rect x=\"{x:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"14\" rx=\"2\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#5b6372\">{} at {}</text></g>",
            label_w,
            y + 12,
            y,
            y,
            bar_x + bar_w + 8,
            y + 12,
            ms(s.duration_ms),
            rel(s.start_us.saturating_sub(t0)),
            st = s.stage.as_str(),
        );
    }
    let _ = write!(
        out,
        "<text x=\"{bar_x}\" y=\"{}\" font-size=\"11\" fill=\"#5b6372\">0</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#5b6372\">{}</text>\n</svg>\n",
        height - 4,
        bar_x + bar_w,
        height - 4,
        ms(end)
    );
}

// ---------------------------------------------------------------------------------------------
// Diagnosis, facts, one connection

fn diagnosis_html(out: &mut String, r: &ConnectionReport, d: &Diagnosis) {
    let failed = report::exit_code(r) != report::exit::SUCCESS;
    let _ = write!(
        out,
        "<div class=\"diag{}\"><strong>Diagnosis: {}</strong>",
        if failed { "" } else { " none" },
        escape(d.fault_class.as_str())
    );
    if !d.evidence.is_empty() {
        out.push_str("<ul class=\"evidence\">");
        for e in &d.evidence {
            let _ = write!(out, "<li>{}</li>", escape(e));
        }
        out.push_str("</ul>");
    }
    if !d.causes.is_empty() {
        out.push_str("<div>Likely causes, most likely first:</div><ol>");
        for c in &d.causes {
            let _ = write!(
                out,
                "<li><span class=\"cause\">{}</span> <span class=\"sub\">[{}]</span><br><span class=\"remedy\">Remedy: {}</span></li>",
                escape(&c.title),
                escape(c.id.as_str()),
                escape(&c.remedy)
            );
        }
        out.push_str("</ol>");
    }
    out.push_str("</div>\n");
}

fn stages_table(out: &mut String, r: &ConnectionReport) {
    out.push_str(
        "<table class=\"stages\"><tr><th>stage</th><th>verdict</th><th>duration</th><th>client → server</th><th>server → client</th><th>frames</th></tr>\n",
    );
    for s in &r.stages {
        let frames = if s.frames.is_empty() {
            String::new()
        } else {
            let f: Vec<String> = s.frames.iter().take(12).map(|f| f.to_string()).collect();
            format!(
                "{}{}",
                f.join(", "),
                if s.frames.len() > 12 { ", …" } else { "" }
            )
        };
        let _ = writeln!(
            out,
            "<tr data-stage=\"{}\"{}><td>{}</td><td>{}</td><td>{}</td><td>{} B</td><td>{} B</td><td>{}</td></tr>",
            s.stage.as_str(),
            if s.verdict.is_ok() { "" } else { " class=\"failed\"" },
            s.stage.as_str(),
            escape(&match &s.verdict {
                Verdict::Ok => "ok".to_owned(),
                v => v.to_string(),
            }),
            ms(s.duration_ms),
            s.bytes_c2s,
            s.bytes_s2c,
            frames
        );
    }
    out.push_str("</table>\n");
}

fn facts_html(out: &mut String, r: &ConnectionReport) {
    for s in &r.stages {
        if s.facts.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "<details class=\"facts\"{}><summary>{} — {} facts</summary><table>",
            if s.verdict.is_ok() { "" } else { " open" },
            s.stage.as_str(),
            s.facts.len()
        );
        for (k, v) in &s.facts {
            let _ = write!(
                out,
                "<tr><th>{}</th><td class=\"v\">{}</td></tr>",
                escape(k),
                escape(&fact_text(v))
            );
        }
        out.push_str("</table></details>\n");
    }
}

/// One connection's section: headline, diagnosis, timeline, ladder, stages, facts.
fn connection_section(out: &mut String, n: usize, r: &ConnectionReport, trace: Option<&Trace>) {
    let ok = report::exit_code(r) == report::exit::SUCCESS;
    let _ = write!(
        out,
        "<section class=\"conn\" id=\"c{n}\">\n<h2>Connection #{n}: {} → {} <span class=\"badge {}\">{}</span></h2>\n",
        escape(&r.client),
        escape(&r.server),
        if ok { "ok" } else { "bad" },
        escape(&format!("{} · {}", r.last_stage.as_str(), verdict_text(&r.verdict)))
    );
    if let Some(s) = r.stages.first().filter(|s| s.start_us > 0) {
        let _ = writeln!(out, "<div class=\"sub\">began {}</div>", utc(s.start_us));
    }
    let _ = writeln!(out, "<p class=\"summary\">{}</p>", escape(&r.summary));
    let d = diagnose::diagnose(r);
    diagnosis_html(out, r, &d);
    out.push_str("<h3>Timeline</h3>\n");
    timeline_svg(out, r);
    out.push_str("<h3>Ladder</h3>\n");
    ladder_svg(out, r, trace);
    out.push_str("<h3>Stages</h3>\n");
    stages_table(out, r);
    if !r.notes.is_empty() {
        out.push_str("<ul class=\"notes\">");
        for note in &r.notes {
            let _ = write!(out, "<li>note: {}</li>", escape(note));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h3>Facts</h3>\n");
    facts_html(out, r);
    out.push_str("</section>\n");
}

// ---------------------------------------------------------------------------------------------
// Pages

/// One connection on its own page (`probe --html`, `analyze --connection N --html`).
pub fn connection_page(
    title: &str,
    n: usize,
    r: &ConnectionReport,
    trace: Option<&Trace>,
) -> String {
    let mut out = String::new();
    page_head(&mut out, title);
    let _ = writeln!(
        out,
        "<header><h1>{}</h1><div class=\"sub\">rdprobe {}</div></header>",
        escape(title),
        env!("CARGO_PKG_VERSION")
    );
    connection_section(&mut out, n, r, trace);
    out.push_str(PAGE_END);
    out
}

struct IndexRow {
    n: usize,
    client: String,
    server: String,
    last_stage: &'static str,
    verdict: String,
    class: &'static str,
    ok: bool,
    summary: String,
    detailed: bool,
}

/// A page of many connections, written as they come (`analyze --html`).
pub struct Page<W: Write> {
    out: W,
    title: String,
    index: Vec<IndexRow>,
    detailed: usize,
}

impl<W: Write> Page<W> {
    /// Writes the head of the page.
    pub fn begin(mut out: W, title: &str) -> io::Result<Self> {
        let mut head = String::new();
        page_head(&mut head, title);
        out.write_all(head.as_bytes())?;
        Ok(Page {
            out,
            title: title.to_owned(),
            index: Vec::new(),
            detailed: 0,
        })
    }

    /// Writes connection `n` (in full for the first [`MAX_DETAILED`]).
    pub fn connection(
        &mut self,
        n: usize,
        r: &ConnectionReport,
        trace: Option<&Trace>,
    ) -> io::Result<()> {
        let ok = report::exit_code(r) == report::exit::SUCCESS;
        let class = if ok {
            "none"
        } else {
            diagnose::diagnose(r).fault_class.as_str()
        };
        let detailed = self.detailed < MAX_DETAILED;
        self.index.push(IndexRow {
            n,
            client: r.client.clone(),
            server: r.server.clone(),
            last_stage: r.last_stage.as_str(),
            verdict: verdict_text(&r.verdict),
            class,
            ok,
            summary: r.summary.clone(),
            detailed,
        });
        if detailed {
            self.detailed += 1;
            let mut s = String::new();
            connection_section(&mut s, n, r, trace);
            self.out.write_all(s.as_bytes())?;
        }
        Ok(())
    }

    /// Writes the header and the index (shown first by CSS) and ends the page.
    pub fn finish(mut self, source: &str) -> io::Result<W> {
        let mut s = String::new();
        let total = self.index.len();
        let ok = self.index.iter().filter(|r| r.ok).count();
        let _ = writeln!(
            s,
            "<header><h1>{}</h1><div class=\"sub\">{} · rdprobe {}</div></header>",
            escape(&self.title),
            escape(source),
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            s,
            "<section id=\"index\"><h2>{total} connection(s): {ok} ok, {} failed or cut short</h2>",
            total - ok
        );
        // Counts per failure.
        let mut groups: BTreeMap<(&str, &str, &str), (usize, usize)> = BTreeMap::new();
        for r in self.index.iter().filter(|r| !r.ok) {
            let e = groups
                .entry((r.last_stage, r.verdict.as_str(), r.class))
                .or_insert((0, r.n));
            e.0 += 1;
        }
        if !groups.is_empty() {
            let mut g: Vec<_> = groups.into_iter().collect();
            g.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
            s.push_str("<table class=\"failures\"><tr><th>count</th><th>stage</th><th>verdict</th><th>fault class</th><th>first</th></tr>\n");
            for ((stage, verdict, class), (count, first)) in g {
                let _ = writeln!(
                    s,
                    "<tr class=\"failed\"><td>{count}</td><td>{stage}</td><td>{}</td><td>{}</td><td><a href=\"#c{first}\">#{first}</a></td></tr>",
                    escape(verdict),
                    escape(class)
                );
            }
            s.push_str("</table>\n");
        }
        if total > 1 {
            // A long list is folded: the failure counts above are what a reader wants first.
            let _ = write!(
                s,
                "<details class=\"index\"{}><summary>All {total} connections</summary>",
                if total <= 50 { " open" } else { "" }
            );
            s.push_str("<table class=\"index\"><tr><th>#</th><th>client</th><th>server</th><th>last stage</th><th>verdict</th><th>summary</th></tr>\n");
            for r in &self.index {
                let num = if r.detailed {
                    format!("<a href=\"#c{0}\">{0}</a>", r.n)
                } else {
                    r.n.to_string()
                };
                let _ = writeln!(
                    s,
                    "<tr{}><td>{num}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if r.ok { "" } else { " class=\"failed\"" },
                    escape(&r.client),
                    escape(&r.server),
                    r.last_stage,
                    escape(&r.verdict),
                    escape(&r.summary)
                );
            }
            s.push_str("</table></details>\n");
        }
        if total > self.detailed {
            let _ = writeln!(
                s,
                "<p class=\"sub\">The first {} connections are drawn in full; see the others with --connection N --html.</p>",
                self.detailed
            );
        }
        if total == 0 {
            s.push_str("<p>No RDP connection found.</p>\n");
        }
        s.push_str("</section>\n");
        s.push_str(PAGE_END);
        self.out.write_all(s.as_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// `rdprobe enum --html`: what the server accepts, the certificate audit and the tables.
pub fn enum_page(r: &EnumReport) -> String {
    let mut out = String::new();
    let title = format!("rdprobe enum {}", r.target);
    page_head(&mut out, &title);
    let _ = writeln!(
        out,
        "<header><h1>{}</h1><div class=\"sub\">{}{} connections in {} ms · rdprobe {}</div></header>",
        escape(&title),
        r.address
            .as_ref()
            .map(|a| format!("{} · ", escape(a)))
            .unwrap_or_default(),
        r.connections,
        r.elapsed_ms,
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("<section class=\"conn\" id=\"protocols\"><h2>Security protocols (each offered alone)</h2><table><tr><th>offered</th><th>accepted</th><th>server answer</th><th>detail</th></tr>\n");
    for p in r.protocols.iter().chain([&r.all_offered, &r.common_offer]) {
        let detail = p
            .error
            .clone()
            .or_else(|| p.failure_name.clone())
            .or_else(|| p.selected.as_ref().map(|s| format!("selected {s}")))
            .unwrap_or_default();
        // Several protocols at once: answered with a selection is the good outcome.
        let good = if p.offered.len() > 1 {
            p.selected.is_some() && p.error.is_none()
        } else {
            p.accepted
        };
        let _ = writeln!(
            out,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if good { "" } else { " class=\"failed\"" },
            escape(&p.offered.join(" | ")),
            match (p.offered.len() > 1, good) {
                (true, true) => "answered",
                (_, true) => "yes",
                _ => "no",
            },
            escape(&p.response),
            escape(&detail)
        );
    }
    out.push_str("</table></section>\n");
    if let Some(tls) = &r.tls {
        let _ = writeln!(
            out,
            "<section class=\"conn\" id=\"tls\"><h2>TLS (via {})</h2><table><tr><th>version</th><th>accepted</th><th>cipher suites</th></tr>",
            escape(&tls.via)
        );
        for v in &tls.versions {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&v.version),
                if v.accepted { "yes" } else { "no" },
                escape(&if v.accepted {
                    v.cipher_suites.join(", ")
                } else {
                    v.error.clone().unwrap_or_default()
                })
            );
        }
        out.push_str("</table>\n");
        if let Some(c) = &tls.certificate {
            let bad = !c.findings.is_empty();
            let _ = write!(
                out,
                "<div class=\"diag{}\"><strong>Certificate: {}</strong>",
                if bad { "" } else { " none" },
                if bad {
                    "problems found"
                } else {
                    "no problem found"
                }
            );
            if bad {
                out.push_str("<ul class=\"evidence\">");
                for f in &c.findings {
                    let _ = write!(out, "<li>{}</li>", escape(f));
                }
                out.push_str("</ul>");
            }
            out.push_str("</div><table>");
            for (k, v) in [
                ("subject", c.subject.clone()),
                ("issuer", c.issuer.clone()),
                ("not before", c.not_before.clone()),
                ("not after", c.not_after.clone()),
                ("days left", c.days_left.to_string()),
                ("key", c.key.clone()),
                ("signature", c.signature_algorithm.clone()),
                ("name matches", c.name_matches.to_string()),
                ("self-signed", c.self_signed.to_string()),
                ("sha256", c.sha256.clone()),
            ] {
                let _ = write!(
                    out,
                    "<tr><th>{k}</th><td class=\"v\">{}</td></tr>",
                    escape(&v)
                );
            }
            out.push_str("</table>\n");
        }
        out.push_str("</section>\n");
    }
    if let Some(c) = &r.credssp {
        out.push_str("<section class=\"conn\" id=\"credssp\"><h2>CredSSP / NTLM</h2><table>");
        for (k, v) in [
            ("via", Some(c.via.clone())),
            ("version", c.version.map(|v| v.to_string())),
            ("NetBIOS computer", c.nb_computer_name.clone()),
            ("NetBIOS domain", c.nb_domain_name.clone()),
            ("DNS computer", c.dns_computer_name.clone()),
            ("DNS domain", c.dns_domain_name.clone()),
            ("DNS tree", c.dns_tree_name.clone()),
            ("OS version", c.os_version.clone()),
            ("server time", c.server_time.clone()),
            ("error", c.error.clone()),
        ] {
            if let Some(v) = v {
                let _ = write!(
                    out,
                    "<tr><th>{k}</th><td class=\"v\">{}</td></tr>",
                    escape(&v)
                );
            }
        }
        out.push_str("</table></section>\n");
    }
    let _ = writeln!(
        out,
        "<section class=\"conn\" id=\"full\"><h2>Everything found</h2><pre>{}</pre></section>",
        escape(&crate::enumerate::render::render_text(r))
    );
    out.push_str(PAGE_END);
    out
}

// ---------------------------------------------------------------------------------------------
// rdprobe correlate --html

/// Packet rows drawn per correlated connection (runs seen at every capture are folded first).
pub const MAX_CORRELATE_ROWS: usize = 200;

/// Width of the correlate ladder.
const KW: u32 = 960;

/// `rdprobe correlate --html`: per connection, the captures as lanes between the client and the
/// server (client's end first), one row per packet drawn from where it was first seen to where it
/// was last seen. A packet that never reached the next capture ends in a red cross between the two
/// (lost on that hop); one that appears between two captures starts with an orange dot there
/// (forged on that hop, e.g. an injected reset). Then the findings, the verdict and what each
/// capture alone says.
pub fn correlate_page(title: &str, c: &crate::correlate::Correlation) -> String {
    let mut out = String::new();
    page_head(&mut out, title);
    let lost = c.findings().count();
    let _ = writeln!(
        out,
        "<header><h1>{}</h1><div class=\"sub\">{} · rdprobe {}</div></header>",
        escape(title),
        c.captures
            .iter()
            .map(|k| format!("{} ({} connection(s))", escape(&k.name), k.flows))
            .collect::<Vec<_>>()
            .join(" · "),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "<section id=\"index\"><h2>{} connection(s), {}</h2></section>",
        c.connections.len(),
        if lost == 0 {
            "nothing lost or added between the captures".to_owned()
        } else {
            format!("{lost} finding(s) in the path")
        }
    );
    for (i, k) in c.connections.iter().enumerate() {
        correlated_section(&mut out, i + 1, k);
    }
    if c.connections.is_empty() {
        out.push_str("<p>No TCP connection in the captures.</p>\n");
    }
    out.push_str(PAGE_END);
    out
}

fn correlated_section(out: &mut String, n: usize, k: &crate::correlate::Connection) {
    let bad = !k.findings.is_empty();
    let v0 = &k.views[0];
    let _ = writeln!(
        out,
        "<section class=\"conn\" id=\"c{n}\"><h2>Connection {n} <span class=\"badge {}\">{}</span></h2>\
         <div class=\"sub\">{} → {}{}</div><p class=\"summary\">{}</p>",
        if bad { "bad" } else { "ok" },
        if bad { "network" } else { "nothing lost" },
        escape(&v0.client),
        escape(&v0.server),
        if k.matched_by.is_empty() {
            String::new()
        } else {
            format!(" · matched by {}", escape(&k.matched_by.join(", ")))
        },
        escape(&k.verdict)
    );
    if bad {
        out.push_str("<div class=\"diag\"><ul class=\"evidence findings\">");
        for f in &k.findings {
            let _ = write!(
                out,
                "<li><b>{}</b> — {}</li>",
                escape(&f.what),
                escape(&f.hop)
            );
        }
        out.push_str("</ul></div>\n");
    }
    out.push_str("<h3>Captures</h3>\n<table class=\"views\"><tr><th>#</th><th>capture</th><th>where</th><th>client hops</th><th>server hops</th><th>clock</th><th>packets C→S / S→C</th><th>alone</th></tr>\n");
    for (i, v) in k.views.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td>[{}]</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.1} ms</td><td>{} / {}</td><td>{}</td></tr>",
            i + 1,
            escape(&v.name),
            v.vantage.words(),
            v.client_hops.map_or("?".into(), |h| h.to_string()),
            v.server_hops.map_or("?".into(), |h| h.to_string()),
            v.clock_offset_ms,
            v.c2s_packets,
            v.s2c_packets,
            escape(v.alone.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>\n<h3>Packets at each capture</h3>\n");
    correlate_svg(out, k);
    out.push_str("</section>\n");
}

/// One drawn row: a packet, or a fold of packets seen at every capture.
enum KRow<'a> {
    Packet(&'a crate::correlate::Row),
    Folded(u64),
    More(usize),
}

fn correlate_svg(out: &mut String, k: &crate::correlate::Connection) {
    let rows = k.rows();
    let lanes = k.views.len();
    // Folded like the table: runs seen at every capture, away from the ends, become one row.
    let mut drawn: Vec<KRow<'_>> = Vec::new();
    let mut run = 0u64;
    for (i, r) in rows.iter().enumerate() {
        let everywhere = r.at.iter().all(Option::is_some);
        if everywhere && i >= 3 && i + 3 < rows.len() && lanes > 1 {
            run += 1;
            continue;
        }
        if run > 0 {
            drawn.push(KRow::Folded(run));
            run = 0;
        }
        if drawn.len() >= MAX_CORRELATE_ROWS {
            drawn.push(KRow::More(rows.len() - i));
            break;
        }
        drawn.push(KRow::Packet(r));
    }
    if run > 0 {
        drawn.push(KRow::Folded(run));
    }
    let (cx, sx) = (110u32, KW - 40);
    let lane_x = |i: usize| cx + (sx - cx) * (i as u32 + 1) / (lanes as u32 + 1);
    let top = 64u32;
    let step = 24u32;
    let height = top + step * drawn.len() as u32 + 16;
    let _ = write!(
        out,
        "<svg class=\"correlate\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {KW} {height}\" \
         width=\"{KW}\" height=\"{height}\" role=\"img\" aria-label=\"packets at each capture\">\n\
         <defs><marker id=\"kah\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" fill=\"#1d2330\"/></marker></defs>\n"
    );
    let _ = writeln!(
        out,
        "<text x=\"{cx}\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\" font-size=\"14\">client</text>\
         <text x=\"{sx}\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\" font-size=\"14\">server</text>\
         <line x1=\"{cx}\" y1=\"{top}\" x2=\"{cx}\" y2=\"{}\" stroke=\"#9aa1ad\" stroke-width=\"2\"/>\
         <line x1=\"{sx}\" y1=\"{top}\" x2=\"{sx}\" y2=\"{}\" stroke=\"#9aa1ad\" stroke-width=\"2\"/>",
        height - 8,
        height - 8
    );
    for (i, v) in k.views.iter().enumerate() {
        let x = lane_x(i);
        let _ = writeln!(
            out,
            "<g class=\"lane\"><title>{}</title><text x=\"{x}\" y=\"18\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"bold\">[{}] {}</text>\
             <text x=\"{x}\" y=\"34\" text-anchor=\"middle\" font-size=\"11\" fill=\"#5b6372\">{}</text>\
             <line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{}\" stroke=\"#5b6372\" stroke-width=\"1\" stroke-dasharray=\"4 3\"/></g>",
            escape(&v.name),
            i + 1,
            escape(&truncate(&v.name, 28)),
            v.vantage.words(),
            height - 8
        );
    }
    let t0 = rows.first().map_or(0, |r| r.t_us);
    let mut y = top;
    for d in &drawn {
        y += step;
        let r = match d {
            KRow::Packet(r) => *r,
            KRow::Folded(n) => {
                let _ = writeln!(
                    out,
                    "<text class=\"folded\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#5b6372\">… {n} packet(s) seen at every capture</text>",
                    (cx + sx) / 2,
                    y - 6
                );
                continue;
            }
            KRow::More(n) => {
                let _ = writeln!(
                    out,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#5b6372\">… {n} more packet(s) (see the table of rdprobe correlate)</text>",
                    (cx + sx) / 2,
                    y - 6
                );
                break;
            }
        };
        let seen: Vec<usize> = (0..lanes).filter(|&i| r.at[i].is_some()).collect();
        let (Some(&first), Some(&last)) = (seen.first(), seen.last()) else {
            continue;
        };
        // Lanes in the packet's direction of travel: the sender's end first.
        let order: Vec<usize> = match r.dir {
            Dir::C2S => (0..lanes).collect(),
            Dir::S2C => (0..lanes).rev().collect(),
        };
        let (from_end, to_end) = match r.dir {
            Dir::C2S => (cx, sx),
            Dir::S2C => (sx, cx),
        };
        let (head, tail) = match r.dir {
            Dir::C2S => (first, last),
            Dir::S2C => (last, first),
        };
        let pos = |lane: usize| order.iter().position(|&l| l == lane).unwrap_or(0);
        let mid = |a: u32, b: u32| (a + b) / 2;
        // Where it starts: the sender's end, or between the capture before its first sighting
        // and that capture (it appeared there).
        let appeared = pos(head) > 0;
        let x1 = if appeared {
            mid(lane_x(order[pos(head) - 1]), lane_x(head))
        } else {
            from_end
        };
        let lost = pos(tail) + 1 < lanes;
        let x2 = if lost {
            mid(lane_x(tail), lane_x(order[pos(tail) + 1]))
        } else {
            to_end
        };
        let missing_between = seen.len() < pos(tail) + 1 - pos(head);
        let trouble = appeared || lost || missing_between;
        let color = match (r.kind, trouble) {
            (_, true) => "#c0262d",
            (crate::correlate::Kind::Rst, _) => "#b85c00",
            _ => "#1d2330",
        };
        let frames: Vec<String> =
            r.at.iter()
                .enumerate()
                .map(|(i, f)| match f {
                    Some(f) => format!("[{}] frame {f}", i + 1),
                    None => format!("[{}] not seen", i + 1),
                })
                .collect();
        let arrow = match r.dir {
            Dir::C2S => "client → server",
            Dir::S2C => "server → client",
        };
        let _ = write!(
            out,
            "<g class=\"kpkt{}{}\"><title>{arrow}: {} ({})</title>\
             <text x=\"8\" y=\"{}\" font-size=\"11\" fill=\"#5b6372\">{:.1} ms</text>\
             <line x1=\"{x1}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\"{}/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{color}\">{}</text>",
            if lost { " lost" } else { "" },
            if appeared { " appeared" } else { "" },
            escape(&r.what()),
            frames.join(", "),
            y + 4,
            (r.t_us - t0) as f64 / 1000.0,
            if lost { "" } else { " marker-end=\"url(#kah)\"" },
            mid(x1, x2),
            y - 5,
            escape(&r.what()),
        );
        for (i, f) in r.at.iter().enumerate() {
            let x = lane_x(i);
            let between = pos(i) >= pos(head) && pos(i) <= pos(tail);
            match f {
                Some(_) => {
                    let _ = write!(
                        out,
                        "<circle cx=\"{x}\" cy=\"{y}\" r=\"4\" fill=\"{color}\"/>"
                    );
                }
                None if between => {
                    let _ = write!(
                        out,
                        "<circle class=\"unseen\" cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"#fff\" stroke=\"#c0262d\" stroke-width=\"2\"/>"
                    );
                }
                None => {}
            }
        }
        if appeared {
            let _ = write!(
                out,
                "<circle class=\"origin\" cx=\"{x1}\" cy=\"{y}\" r=\"6\" fill=\"#b85c00\"/>"
            );
        }
        if lost {
            let _ = write!(
                out,
                "<path class=\"cross\" d=\"M{},{}L{},{}M{},{}L{},{}\" stroke=\"#c0262d\" stroke-width=\"3\"/>",
                x2 - 6,
                y - 6,
                x2 + 6,
                y + 6,
                x2 - 6,
                y + 6,
                x2 + 6,
                y - 6
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralizes_markup() {
        assert_eq!(
            escape("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}c"), "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn runs_group_by_sender() {
        let r = runs(&[(Dir::C2S, 1), (Dir::C2S, 2), (Dir::S2C, 3), (Dir::C2S, 4)]);
        assert_eq!(
            r,
            vec![
                (Dir::C2S, vec![1, 2]),
                (Dir::S2C, vec![3]),
                (Dir::C2S, vec![4])
            ]
        );
    }
}
