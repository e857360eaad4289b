//! The probe's own wire as pcapng: the real packets the probe's packet socket captured (LINKTYPE_RAW,
//! kernel timestamps), with the same stage comments and TLS secrets the synthetic writer gives.
//!
//! Each event's comments go to the packet that carried it: a data event's to the first packet of
//! its direction whose sequence range holds the event's first byte (its first transmission, not a
//! retransmission), `Connected` to the client's first SYN, `Fin` / `Rst` to the first FIN / RST of
//! that direction; an event no packet carries (or whose packet the capture lost) comments the first
//! packet at or after its time, else the last packet.

use std::io::Write;
use std::net::SocketAddr;

use super::{pcapng, plan_comments, write_head, WriteError};
use crate::capture::reader::packet::{parse, Parsed};
use crate::probe::wire::{WireCaptured, LINKTYPE_RAW};
use crate::trace::{Dir, EventKind, Layer, Trace};

/// What the writer needs of one captured TCP packet.
#[derive(Clone, Copy, Debug)]
struct Seg {
    dir: Dir,
    seq: u32,
    len: u32,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

fn di(d: Dir) -> usize {
    match d {
        Dir::C2S => 0,
        Dir::S2C => 1,
    }
}

/// Writes the captured packets of `wire` with `trace`'s comments and secrets.
pub(super) fn write_wire<W: Write>(
    trace: &Trace,
    wire: &WireCaptured,
    labels: &[String],
    mut out: W,
) -> Result<(), WriteError> {
    let plan = plan_comments(trace, labels);
    let comments = comments_per_packet(trace, wire, &plan.events);
    write_blocks(
        trace,
        wire,
        &plan.section,
        &plan.events,
        &comments,
        &mut out,
    )
}

/// The comments of each captured packet (indexed like `wire.packets`).
fn comments_per_packet(
    trace: &Trace,
    wire: &WireCaptured,
    plan: &[super::EventNotes],
) -> Vec<Vec<String>> {
    let segs: Vec<Option<Seg>> = wire
        .packets
        .iter()
        .map(|p| match parse(LINKTYPE_RAW, &p.data) {
            Parsed::Tcp(s) => {
                let dir = if same(s.src, trace.client) {
                    Dir::C2S
                } else {
                    Dir::S2C
                };
                Some(Seg {
                    dir,
                    seq: s.seq,
                    len: s.payload.len() as u32 + s.missing,
                    syn: s.flags.syn,
                    ack: s.flags.ack,
                    fin: s.flags.fin,
                    rst: s.flags.rst,
                })
            }
            _ => None,
        })
        .collect();
    // Sequence number of each direction's first data byte (after its SYN; the first packet's own
    // sequence number when the SYN was not captured).
    let mut base: [Option<u32>; 2] = [None, None];
    for s in segs.iter().flatten() {
        let b = &mut base[di(s.dir)];
        if s.syn {
            *b = Some(s.seq.wrapping_add(1));
        } else if b.is_none() {
            *b = Some(s.seq);
        }
    }

    let n = wire.packets.len();
    let mut comments: Vec<Vec<String>> = vec![Vec::new(); n];
    let at_or_after = |t_us: u64| {
        wire.packets
            .iter()
            .position(|p| p.t_us >= t_us)
            .or(n.checked_sub(1))
    };
    let mut offset = [0u64; 2];
    for (ev, notes) in trace.events.iter().zip(plan) {
        let carrier = match &ev.kind {
            EventKind::Data {
                dir,
                layer: Layer::Wire,
                bytes,
            } => {
                let o = offset[di(*dir)];
                offset[di(*dir)] += bytes.len() as u64;
                let b = base[di(*dir)];
                segs.iter().position(|s| {
                    s.is_some_and(|s| {
                        let rel = u64::from(s.seq.wrapping_sub(b.unwrap_or(s.seq)));
                        s.dir == *dir && s.len > 0 && rel <= o && o < rel + u64::from(s.len)
                    })
                })
            }
            EventKind::Elided {
                dir,
                layer: Layer::Wire,
                len,
            } => {
                offset[di(*dir)] += len;
                None
            }
            EventKind::Connected => segs
                .iter()
                .position(|s| s.is_some_and(|s| s.dir == Dir::C2S && s.syn && !s.ack)),
            EventKind::Fin { dir } => segs
                .iter()
                .position(|s| s.is_some_and(|s| s.dir == *dir && s.fin)),
            EventKind::Rst { dir } => segs
                .iter()
                .position(|s| s.is_some_and(|s| s.dir == *dir && s.rst)),
            _ => None,
        };
        if notes.first.is_empty() && notes.last.is_empty() {
            continue;
        }
        if let Some(i) = carrier.or_else(|| at_or_after(ev.t_us)) {
            comments[i].extend(notes.first.iter().cloned());
        }
        if let Some(last) = n.checked_sub(1) {
            comments[last].extend(notes.last.iter().cloned());
        }
    }

    comments
}

fn write_blocks<W: Write>(
    trace: &Trace,
    wire: &WireCaptured,
    plan_section: &[String],
    plan_events: &[super::EventNotes],
    comments: &[Vec<String>],
    out: &mut W,
) -> Result<(), WriteError> {
    let n = wire.packets.len();
    let mut block = Vec::new();
    let mut section = vec![format!(
        "written by rdprobe {}: the probe's own packets as captured on the wire (packet socket, \
         from before the SYN), connection between client {} and server {}",
        env!("CARGO_PKG_VERSION"),
        trace.client,
        trace.server
    )];
    if wire.dropped > 0 {
        section.push(format!(
            "{} packets of the connection were not kept (capture bounds)",
            wire.dropped
        ));
    }
    section.extend(plan_section.iter().cloned());
    if n == 0 {
        // No packet to carry them: every comment goes to the section header.
        for notes in plan_events {
            section.extend(notes.first.iter().cloned());
            section.extend(notes.last.iter().cloned());
        }
    }
    let interface = ("rdprobe-wire", LINKTYPE_RAW as u16);
    write_head(out, &mut block, &section, interface, &trace.keylog)?;
    for (p, c) in wire.packets.iter().zip(comments) {
        pcapng::epb(&mut block, p.t_us, &p.data, c)?;
        out.write_all(&block)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::wire::WirePacket;

    fn tcp(c2s: bool, seq: u32, ack: u32, syn: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sp, dp) = if c2s {
            ([10, 0, 0, 2], [10, 0, 0, 1], 40000, 3389)
        } else {
            ([10, 0, 0, 1], [10, 0, 0, 2], 3389, 40000)
        };
        let mut b = etherparse::PacketBuilder::ipv4(src, dst, if c2s { 64 } else { 63 })
            .tcp(sp, dp, seq, 64000);
        if syn {
            b = b.syn();
        }
        if fin {
            b = b.fin();
        }
        if ack != 0 {
            b = b.ack(ack);
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Each event's comment lands on the packet that carried it: the first transmission of a
    /// retransmitted segment, the FIN of its direction; a note on the next packet after it.
    #[test]
    fn comments_land_on_the_packets_that_carried_the_events() {
        // X.224 Connection Request / Confirm with RDP_NEG_REQ / RDP_NEG_RSP (19 bytes each).
        let cr = [
            3u8, 0, 0, 19, 14, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 3, 0, 0, 0,
        ];
        let cc = [
            3u8, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, 2, 0, 8, 0, 1, 0, 0, 0,
        ];
        let pk = |t_us: u64, data: Vec<u8>| WirePacket { t_us, data };
        let wire = WireCaptured {
            packets: vec![
                pk(10, tcp(true, 1000, 0, true, false, &[])),
                pk(11, tcp(false, 5000, 1001, true, false, &[])),
                pk(12, tcp(true, 1001, 5001, false, false, &[])),
                pk(13, tcp(true, 1001, 5001, false, false, &cr)),
                pk(40, tcp(true, 1001, 5001, false, false, &cr)), // retransmission
                pk(41, tcp(false, 5001, 1020, false, false, &cc)),
                pk(50, tcp(true, 1020, 5020, false, true, &[])),
            ],
            dropped: 0,
        };
        let mut t = Trace::new(
            "10.0.0.2:40000".parse().unwrap(),
            "10.0.0.1:3389".parse().unwrap(),
        );
        t.push_at(10, None, EventKind::Connected);
        t.push_at(
            13,
            None,
            EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Wire,
                bytes: bytes::Bytes::copy_from_slice(&cr),
            },
        );
        t.push_at(
            41,
            None,
            EventKind::Data {
                dir: Dir::S2C,
                layer: Layer::Wire,
                bytes: bytes::Bytes::copy_from_slice(&cc),
            },
        );
        t.push_at(45, None, EventKind::Note("a note".into()));
        t.push_at(50, None, EventKind::Fin { dir: Dir::C2S });
        let labels: Vec<String> = ["tcp: connect", "x224: request", "x224: confirm", "", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let plan = plan_comments(&t, &labels);
        let c = comments_per_packet(&t, &wire, &plan.events);
        assert!(c[0].iter().any(|s| s.contains("tcp: connect")), "{c:?}");
        assert!(c[3].iter().any(|s| s.contains("x224: request")), "{c:?}");
        assert!(c[4].is_empty(), "not on the retransmission: {c:?}");
        assert!(c[5].iter().any(|s| s.contains("x224: confirm")), "{c:?}");
        assert!(c[6].iter().any(|s| s.contains("a note")), "{c:?}");

        // The whole file reads back as the same conversation.
        t.wire = Some(std::sync::Arc::new(wire));
        let mut out = Vec::new();
        crate::capture::writer::write_pcapng(&t, &labels, &mut out).unwrap();
        let back: Vec<Trace> = crate::capture::reader::read_conversations(
            std::io::Cursor::new(out),
            crate::capture::reader::ReaderOptions::default(),
        )
        .unwrap()
        .filter_map(Result::ok)
        .collect();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].stream(Dir::C2S, Layer::Wire), cr.to_vec());
        let ev = back[0].tcp.as_deref().expect("evidence");
        assert_eq!(ev.c2s.retransmissions, 1);
        assert_eq!(ev.s2c.ttl_max, Some(63));
    }
}
