//! sanitize: strips what a shared capture should not carry.
//!
//! A capture rdprobe writes holds the TLS secrets (so that Wireshark can decrypt it) and therefore the
//! NTLM exchange (a crackable NTLMv2 response) and, without NLA, the Client Info PDU. Before sharing:
//! the secrets go, the user name in the X.224 cookie is masked with `x` of the same length (lengths stay
//! valid, the capture still dissects), and cleartext Client Info PDUs (standard RDP security without
//! encryption) are zeroed after their security header. Pure: works on Traces, no I/O.

use bytes::Bytes;
use serde::Serialize;

use crate::decode::{mcs, x224};
use crate::trace::{Dir, EventKind, Layer, Trace};

/// What was removed from one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SanitizeStats {
    /// TLS secret lines removed.
    pub secrets_removed: usize,
    /// Cleartext segments above TLS dropped.
    pub inner_segments_dropped: usize,
    /// X.224 cookies / routing tokens masked.
    pub cookies_masked: usize,
    /// Cleartext Client Info PDUs zeroed.
    pub client_info_masked: usize,
}

/// Masks byte ranges of the client's wire stream in place, segment by segment.
fn apply_masks(trace: &mut Trace, masks: &[(usize, usize, u8)]) {
    if masks.is_empty() {
        return;
    }
    let mut offset = 0usize;
    for ev in &mut trace.events {
        if let EventKind::Data {
            dir: Dir::C2S,
            layer: Layer::Wire,
            bytes,
        } = &mut ev.kind
        {
            let start = offset;
            let end = offset + bytes.len();
            offset = end;
            if !masks.iter().any(|(s, l, _)| *s < end && s + l > start) {
                continue;
            }
            let mut v = bytes.to_vec();
            for (s, l, fill) in masks {
                let from = (*s).max(start);
                let to = (s + l).min(end);
                if from < to {
                    v[from - start..to - start].fill(*fill);
                }
            }
            *bytes = Bytes::from(v);
        }
    }
}

/// Finds what to mask in the client's cleartext RDP stream (before TLS, or all of it for standard
/// RDP security).
fn find_masks(stream: &[u8], stats: &mut SanitizeStats) -> Vec<(usize, usize, u8)> {
    let mut masks = Vec::new();
    let mut pos = 0usize;
    let mut tls = false;
    while pos < stream.len() && !tls {
        let rest = &stream[pos..];
        let len = match x224::frame(rest) {
            x224::Frame::Tpkt(l) | x224::Frame::FastPath(l) => l,
            _ => break,
        };
        let pdu = &rest[..len];
        match x224::decode_tpkt(pdu) {
            x224::X224::ConnectionRequest(_) => {
                // The cookie or routing token runs from byte 11 to CR LF.
                let var = &pdu[11.min(pdu.len())..];
                if let Some(end) = var.windows(2).position(|w| w == b"\r\n") {
                    let value_start = if var.starts_with(b"Cookie: mstshash=") {
                        17
                    } else if var.starts_with(b"Cookie: ") {
                        8
                    } else {
                        0
                    };
                    if end > value_start {
                        masks.push((pos + 11 + value_start, end - value_start, b'x'));
                        stats.cookies_masked += 1;
                    }
                }
            }
            x224::X224::ConnectionConfirm { .. } => {}
            x224::X224::Data { user_data_offset } => {
                let ud = &pdu[user_data_offset.min(pdu.len())..];
                if let Some((name, facts)) = mcs::classify_domain_pdu(ud) {
                    if name.starts_with("send data") {
                        let off = facts
                            .get("payload_offset")
                            .and_then(|v| v.as_u64())
                            .unwrap_or(0) as usize;
                        if let Some(payload) = ud.get(off..) {
                            let info = mcs::classify_share_pdu(payload, true)
                                .is_some_and(|(n, _)| n == "client info");
                            // Basic security header (4 bytes) then TS_INFO_PACKET.
                            if info && payload.len() > 4 {
                                let at = pos + user_data_offset + off + 4;
                                masks.push((at, payload.len() - 4, 0));
                                stats.client_info_masked += 1;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        pos += len;
        // After a confirm selecting TLS the client's stream is TLS records: stop.
        if stream.get(pos) == Some(&0x16) {
            tls = true;
        }
    }
    masks
}

/// Sanitizes one conversation in place.
pub fn sanitize_trace(trace: &mut Trace) -> SanitizeStats {
    let mut stats = SanitizeStats {
        secrets_removed: trace.keylog.len(),
        ..Default::default()
    };
    trace.keylog.clear();
    let before = trace.events.len();
    trace.events.retain(|e| {
        !matches!(
            e.kind,
            EventKind::Data {
                layer: Layer::Inner,
                ..
            }
        )
    });
    stats.inner_segments_dropped = before - trace.events.len();
    // TLS session facts (certificate, version) stay: the verdict needs them and they are no secret.
    let stream = trace.stream(Dir::C2S, Layer::Wire);
    let masks = find_masks(&stream, &mut stats);
    apply_masks(trace, &masks);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn masks_cookie_keeping_lengths() {
        let mut pdu = vec![0x03, 0, 0, 0, 0, 0xE0, 0, 0, 0, 0, 0];
        pdu.extend_from_slice(b"Cookie: mstshash=alice\r\n");
        pdu.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x03, 0, 0, 0]);
        let l = pdu.len();
        pdu[2..4].copy_from_slice(&(l as u16).to_be_bytes());
        pdu[4] = (l - 5) as u8;
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut t = Trace::new(a, a);
        // Split across two segments to exercise the per-segment mapping.
        t.push_at(
            1,
            None,
            EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Wire,
                bytes: Bytes::from(pdu[..20].to_vec()),
            },
        );
        t.push_at(
            2,
            None,
            EventKind::Data {
                dir: Dir::C2S,
                layer: Layer::Wire,
                bytes: Bytes::from(pdu[20..].to_vec()),
            },
        );
        t.keylog.push("CLIENT_RANDOM 00 11".into());
        let s = sanitize_trace(&mut t);
        assert_eq!(s.cookies_masked, 1);
        assert_eq!(s.secrets_removed, 1);
        assert!(t.keylog.is_empty());
        let out = t.stream(Dir::C2S, Layer::Wire);
        assert_eq!(out.len(), pdu.len());
        assert!(out.windows(22).any(|w| w == b"Cookie: mstshash=xxxxx"));
        assert!(!out.windows(5).any(|w| w == b"alice"));
        assert!(matches!(
            x224::decode_tpkt(&out),
            x224::X224::ConnectionRequest(_)
        ));
    }
}
