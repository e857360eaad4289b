//! sanitize: strips what a shared capture should not carry.
//!
//! A capture rdprobe writes holds the TLS secrets (so that Wireshark can decrypt it) and therefore the
//! NTLM exchange (a crackable NTLMv2 response) and, without NLA, the Client Info PDU. Before sharing:
//! the secrets and the decrypted layer go, and the cleartext RDP bytes lose what names or identifies
//! the user (see [`rdp`] for the rules: cookie, client core data, Client Info, Security Exchange,
//! encrypted PDUs of standard RDP security, input, virtual channel and other user data). Masks keep
//! every length and header, so the capture still dissects and analyzes. With [`Anonymizer`]
//! addresses and ports are remapped and the TLS server names (SNI, certificate names) masked.
//! Pure: works on Traces, no I/O.

mod anon;
mod rdp;

use bytes::Bytes;
use serde::Serialize;

use crate::trace::{Dir, EventKind, Layer, Trace};

pub use anon::Anonymizer;

/// What was removed from one conversation (or, summed, from a capture).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SanitizeStats {
    /// TLS secret lines removed.
    pub secrets_removed: usize,
    /// Cleartext segments above TLS dropped.
    pub inner_segments_dropped: usize,
    /// X.224 cookies / routing tokens masked.
    pub cookies_masked: usize,
    /// Client Info PDUs (cleartext or encrypted) zeroed.
    pub client_info_masked: usize,
    /// Security Exchange PDUs (the encrypted client random) zeroed.
    pub security_exchange_masked: usize,
    /// MCS Connect Initials whose Client Core Data names were masked.
    pub client_data_masked: usize,
    /// Other encrypted PDUs (standard RDP security) zeroed after their security header.
    pub encrypted_pdus_masked: usize,
    /// Cleartext user data zeroed: input, virtual channel data, updates, licensing, session info.
    pub user_data_masked: usize,
    /// Distinct IP addresses remapped (`--anonymize`).
    pub addresses_remapped: usize,
    /// Distinct ports remapped (`--anonymize`).
    pub ports_remapped: usize,
    /// TLS server names masked: SNI and certificate subject/issuer CN and SAN DNS names
    /// (`--anonymize`).
    pub tls_names_masked: usize,
}

impl SanitizeStats {
    /// Adds `o` to these counts.
    pub fn add(&mut self, o: &SanitizeStats) {
        self.secrets_removed += o.secrets_removed;
        self.inner_segments_dropped += o.inner_segments_dropped;
        self.cookies_masked += o.cookies_masked;
        self.client_info_masked += o.client_info_masked;
        self.security_exchange_masked += o.security_exchange_masked;
        self.client_data_masked += o.client_data_masked;
        self.encrypted_pdus_masked += o.encrypted_pdus_masked;
        self.user_data_masked += o.user_data_masked;
        self.addresses_remapped += o.addresses_remapped;
        self.ports_remapped += o.ports_remapped;
        self.tls_names_masked += o.tls_names_masked;
    }

    /// One line for people: what was removed.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} TLS secret line(s) removed, {} decrypted segment(s) dropped; masked: {} cookie(s), \
             {} client core data, {} Client Info, {} Security Exchange, {} other encrypted PDU(s), \
             {} user data PDU(s)",
            self.secrets_removed,
            self.inner_segments_dropped,
            self.cookies_masked,
            self.client_data_masked,
            self.client_info_masked,
            self.security_exchange_masked,
            self.encrypted_pdus_masked,
            self.user_data_masked
        );
        if self.addresses_remapped + self.ports_remapped + self.tls_names_masked > 0 {
            s.push_str(&format!(
                "; anonymized: {} address(es), {} port(s), {} TLS name(s)",
                self.addresses_remapped, self.ports_remapped, self.tls_names_masked
            ));
        }
        s
    }
}

/// Replaces one direction's wire bytes with `new` (the same length as the stream), segment by
/// segment; segments whose bytes did not change are left as they are.
fn write_back(trace: &mut Trace, dir: Dir, new: &[u8]) {
    let mut offset = 0usize;
    for ev in &mut trace.events {
        if let EventKind::Data {
            dir: d,
            layer: Layer::Wire,
            bytes,
        } = &mut ev.kind
        {
            if *d != dir {
                continue;
            }
            let end = offset + bytes.len();
            if let Some(slice) = new.get(offset..end) {
                if slice != &bytes[..] {
                    *bytes = Bytes::copy_from_slice(slice);
                }
            }
            offset = end;
        }
    }
}

/// Where TLS starts on the wire of a sanitized conversation, for [`Anonymizer`].
type TlsStarts = rdp::TlsStarts;

fn sanitize_inner(trace: &mut Trace) -> (SanitizeStats, TlsStarts) {
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
    let mut c2s = trace.stream(Dir::C2S, Layer::Wire);
    let mut s2c = trace.stream(Dir::S2C, Layer::Wire);
    let tls = rdp::mask_streams(&mut c2s, &mut s2c, &mut stats);
    write_back(trace, Dir::C2S, &c2s);
    write_back(trace, Dir::S2C, &s2c);
    (stats, tls)
}

/// Zeroes the LM and NT challenge responses and the encrypted session key of every NTLM
/// AUTHENTICATE message (MS-NLMP 2.2.1.3) in `bytes` (e.g. a CredSSP TSRequest), keeping every
/// length: what remains names the user but gives nothing to crack. How many messages were masked.
pub fn mask_ntlm_responses(bytes: &mut [u8]) -> usize {
    use crate::wire::ntlm::{layout, SecurityBuffer, AUTHENTICATE, SIGNATURE};
    let mut n = 0;
    let mut from = 0usize;
    while let Some(i) = rdp::find(&bytes[from..], SIGNATURE) {
        let start = from + i;
        from = start + SIGNATURE.len();
        let msg = &mut bytes[start..];
        if crate::wire::ntlm::message_type(msg) != Ok(AUTHENTICATE) {
            continue;
        }
        // LmChallengeResponse, NtChallengeResponse, EncryptedRandomSessionKey; a field that runs
        // past the message is masked up to its end.
        for at in [
            layout::AUTHENTICATE_LM,
            layout::AUTHENTICATE_NT,
            layout::AUTHENTICATE_SESSION_KEY,
        ] {
            let Ok(b) = SecurityBuffer::read(msg, at) else {
                continue;
            };
            let off = b.offset as usize;
            let end = off.saturating_add(usize::from(b.len)).min(msg.len());
            if off < end {
                msg[off..end].fill(0);
            }
        }
        n += 1;
    }
    n
}

/// Sanitizes one conversation in place.
pub fn sanitize_trace(trace: &mut Trace) -> SanitizeStats {
    sanitize_inner(trace).0
}

/// Sanitizes one conversation in place and anonymizes it with `anon` (one Anonymizer for every
/// conversation of a capture, so that an address maps the same way in all of them).
pub fn sanitize_and_anonymize(trace: &mut Trace, anon: &mut Anonymizer) -> SanitizeStats {
    let (mut stats, tls) = sanitize_inner(trace);
    anon.anonymize(trace, tls, &mut stats);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::x224;
    use std::net::SocketAddr;

    #[test]
    fn masks_cookie_keeping_lengths() {
        use crate::wire::x224 as wx;
        use ironrdp_pdu::nego::{RequestFlags, SecurityProtocol};
        let pdu = wx::Tpdu::ConnectionRequest(wx::ConnectionRequest {
            token: Some(wx::RequestToken::Cookie(b"alice")),
            neg: Some(wx::NegReq {
                flags: RequestFlags::empty(),
                protocols: SecurityProtocol::SSL | SecurityProtocol::HYBRID,
            }),
            correlation_info: &[],
        })
        .emit()
        .expect("fits a TPKT");
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

    #[test]
    fn ntlm_responses_are_zeroed_keeping_lengths() {
        // NEGOTIATE (left alone) then AUTHENTICATE with LM (24 at 88), NT (48 at 112) and a session
        // key (16 at 160).
        let mut b = b"NTLMSSP\0\x01\0\0\0negotiate".to_vec();
        let at = b.len();
        let mut m = b"NTLMSSP\0".to_vec();
        m.extend_from_slice(&3u32.to_le_bytes());
        m.resize(176, 0x11);
        for (f, len, off) in [(12usize, 24u16, 88u32), (20, 48, 112), (52, 16, 160)] {
            m[f..f + 2].copy_from_slice(&len.to_le_bytes());
            m[f + 4..f + 8].copy_from_slice(&off.to_le_bytes());
        }
        b.extend_from_slice(&m);
        let len = b.len();
        assert_eq!(mask_ntlm_responses(&mut b), 1);
        assert_eq!(b.len(), len);
        assert!(b[at + 88..].iter().all(|&x| x == 0));
        assert!(
            b[at + 64..at + 88].iter().all(|&x| x == 0x11),
            "the rest stays"
        );
        assert!(b.starts_with(b"NTLMSSP\0\x01\0\0\0negotiate"));
        // A field pointing outside the message is clipped, never a panic.
        let mut t = m[..40].to_vec();
        assert_eq!(mask_ntlm_responses(&mut t), 1);
    }

    proptest::proptest! {
        /// Hostile bytes: no panic, every length kept.
        #[test]
        fn any_bytes_keep_their_length(
            c in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            prefix in proptest::prelude::any::<bool>(),
        ) {
            let (mut c, mut s) = (c, s);
            if prefix {
                // Make the walks go somewhere: a TPKT header, and a TLS record header.
                c.splice(0..0, [3u8, 0, 0, 40, 2, 0xf0, 0x80, 0x64, 0, 6, 3, 0xeb, 0x70, 30]);
                s.splice(0..0, [0x16u8, 3, 3, 0, 200, 11, 0, 0, 190]);
            }
            let (cl, sl) = (c.len(), s.len());
            let mut st = SanitizeStats::default();
            rdp::mask_streams(&mut c, &mut s, &mut st);
            anon::mask_tls_names(&mut s, 0, &mut |ip| ip);
            anon::mask_certificate_names(&mut c, &mut |ip| ip);
            mask_ntlm_responses(&mut c);
            proptest::prop_assert_eq!((c.len(), s.len()), (cl, sl));
        }
    }
}
