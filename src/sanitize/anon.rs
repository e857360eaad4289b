//! `--anonymize`: addresses and ports remapped consistently (the same input address gives the same
//! output in every conversation of a capture, in order of first appearance: deterministic), and the
//! server names TLS carries in clear masked keeping their lengths: the SNI of the ClientHello and
//! the subject/issuer common names and SAN DNS names of the Certificate message (TLS 1.2 and
//! below; a TLS 1.3 certificate is encrypted on the wire), whose SAN IP addresses are remapped like
//! the conversation addresses.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use x509_cert::der::{Decode, Encode};

use super::rdp::{find, mask_text};
use super::{write_back, SanitizeStats, TlsStarts};
use crate::decode::tls;
use crate::trace::{Dir, EventKind, Layer, Trace};

/// Most handshake bytes read per direction for names (a ClientHello and a certificate chain).
const MAX_HANDSHAKE_BYTES: usize = 256 * 1024;
/// Longest name searched for (a DNS name has at most 253 bytes): bounds the search on hostile input.
const MAX_NEEDLE: usize = 1024;
/// DER of the commonName attribute type (2.5.4.3).
const OID_CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
/// The IPv4 documentation networks (RFC 5737), used in this order.
const V4_NETS: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
/// The RDP port: kept (it identifies nothing, and dissectors key on it as on the original).
const RDP_PORT: u16 = 3389;
/// First port given to other servers and to clients.
const SERVER_PORT_BASE: u16 = 33890;
const CLIENT_PORT_BASE: u16 = 49152;

/// The address and port mapping of one capture.
#[derive(Debug, Default)]
pub struct Anonymizer {
    ips: HashMap<IpAddr, IpAddr>,
    ports: HashMap<u16, u16>,
    used_ports: HashSet<u16>,
    v4: u32,
    v6: u128,
}

impl Anonymizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The address `ip` maps to (a new one on first sight).
    pub fn ip(&mut self, ip: IpAddr, stats: &mut SanitizeStats) -> IpAddr {
        if let Some(m) = self.ips.get(&ip) {
            return *m;
        }
        let m = match ip {
            IpAddr::V4(_) => {
                let n = self.v4;
                self.v4 += 1;
                let (net, host) = ((n / 254) as usize, (n % 254) as u8 + 1);
                match V4_NETS.get(net) {
                    Some(p) => IpAddr::V4(Ipv4Addr::new(p[0], p[1], p[2], host)),
                    // Past the 762 documentation addresses: the shared address space
                    // (RFC 6598, 100.64.0.0/10).
                    None => {
                        let k = n - 762 + 1;
                        IpAddr::V4(Ipv4Addr::from(0x6440_0000u32 | (k & 0x003f_ffff)))
                    }
                }
            }
            IpAddr::V6(_) => {
                self.v6 += 1;
                let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
                IpAddr::V6(Ipv6Addr::from(base | (self.v6 & ((1u128 << 96) - 1))))
            }
        };
        self.ips.insert(ip, m);
        stats.addresses_remapped += 1;
        m
    }

    /// The port `port` maps to: 3389 stays, other servers' ports from 33890 up, clients' from
    /// 49152 up (the role of its first sight decides), never two inputs to one output.
    pub fn port(&mut self, port: u16, server: bool, stats: &mut SanitizeStats) -> u16 {
        if let Some(m) = self.ports.get(&port) {
            return *m;
        }
        self.used_ports.insert(RDP_PORT);
        if port == RDP_PORT {
            self.ports.insert(port, port);
            return port;
        }
        let start = if server {
            SERVER_PORT_BASE
        } else {
            CLIENT_PORT_BASE
        };
        let mut m = start;
        while self.used_ports.contains(&m) || m == 0 {
            m = m.wrapping_add(1);
            if m == start {
                break;
            }
        }
        self.used_ports.insert(m);
        self.ports.insert(port, m);
        stats.ports_remapped += 1;
        m
    }

    fn addr(&mut self, a: SocketAddr, server: bool, stats: &mut SanitizeStats) -> SocketAddr {
        SocketAddr::new(self.ip(a.ip(), stats), self.port(a.port(), server, stats))
    }

    /// Remaps the conversation's addresses and masks its TLS server names; `tls` says where the
    /// TLS records start on each side's wire stream.
    pub(super) fn anonymize(
        &mut self,
        trace: &mut Trace,
        tls: TlsStarts,
        stats: &mut SanitizeStats,
    ) {
        trace.client = self.addr(trace.client, false, stats);
        trace.server = self.addr(trace.server, true, stats);
        for (dir, at) in [(Dir::C2S, tls.c2s), (Dir::S2C, tls.s2c)] {
            let Some(at) = at else { continue };
            let mut s = trace.stream(dir, Layer::Wire);
            let n = mask_tls_names(&mut s, at, &mut |ip| self.ip(ip, stats));
            if n > 0 {
                stats.tls_names_masked += n;
                write_back(trace, dir, &s);
            }
        }
        // The certificates the observer's TLS stack saw (not written to a capture, but kept alike).
        for ev in &mut trace.events {
            if let EventKind::TlsSession(info) = &mut ev.kind {
                for c in &mut info.certificates {
                    mask_certificate_names(c, &mut |ip| self.ip(ip, stats));
                }
            }
        }
    }
}

/// Masks the SNI and certificate names in the TLS handshake records of `stream` from `at` (and
/// remaps certificate IP addresses with `map_ip`); how many names were masked.
pub(super) fn mask_tls_names(stream: &mut [u8], at: usize, map_ip: &mut IpMap<'_>) -> usize {
    let Some(tail) = stream.get(at..) else {
        return 0;
    };
    let (records, _) = tls::split_records(tail);
    // The plaintext handshake fragments (up to ChangeCipherSpec or application data), concatenated,
    // with where each came from.
    let mut hs = Vec::new();
    let mut map = Vec::new();
    for r in &records {
        if r.content_type != 22 || hs.len() + r.len > MAX_HANDSHAKE_BYTES {
            break;
        }
        let frag = r.fragment(tail);
        map.push((hs.len(), at + r.offset + 5, frag.len()));
        hs.extend_from_slice(frag);
    }
    let n = mask_handshake_names(&mut hs, map_ip);
    if n > 0 {
        for (from, to, len) in map {
            stream[to..to + len].copy_from_slice(&hs[from..from + len]);
        }
    }
    n
}

/// Masks names in concatenated handshake messages; how many.
fn mask_handshake_names(hs: &mut [u8], map_ip: &mut IpMap<'_>) -> usize {
    let mut n = 0;
    let mut off = 0usize;
    while let Ok(h) = tls::HandshakeHeader::parse(&hs[off..], off) {
        let end = off + h.total_len();
        if end > hs.len() {
            break;
        }
        let (msgs, _) = tls::parse_handshakes(&hs[off..end]);
        let msg = &mut hs[off..end];
        match msgs.first() {
            Some(tls::Handshake::ClientHello {
                sni: Some(name), ..
            }) => {
                // server_name list entry: name_type 0 (host_name), length, name (RFC 6066 3).
                let mut needle = vec![0u8];
                needle.extend_from_slice(&(name.len() as u16).to_be_bytes());
                needle.extend_from_slice(name.as_bytes());
                let at = (needle.len() <= MAX_NEEDLE)
                    .then(|| find(msg, &needle))
                    .flatten();
                if let Some(i) = at {
                    mask_text(&mut msg[i + 3..i + needle.len()]);
                    n += 1;
                }
            }
            Some(tls::Handshake::Certificate { chain }) => {
                for (at, len) in certificate_offsets(msg, chain) {
                    n += mask_certificate_names(&mut msg[at..at + len], map_ip);
                }
            }
            _ => {}
        }
        off = end;
    }
    n
}

/// Where the certificates `chain` (as decoded from `msg`, a Certificate handshake message with its
/// 4-byte header) lie in `msg`: the TLS 1.2 layout (RFC 5246 7.4.2: list length, then length and
/// DER per certificate) or else the TLS 1.3 one (RFC 8446 4.4.2: request context, list length, then
/// length, DER and extensions per entry). Empty when neither matches.
fn certificate_offsets(msg: &[u8], chain: &[Vec<u8>]) -> Vec<(usize, usize)> {
    let len24 = |at: usize| {
        msg.get(at..at + 3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    };
    let walk = |mut at: usize, tls13: bool| -> Option<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        for der in chain {
            let len = len24(at)?;
            at += 3;
            if msg.get(at..at + len)? != &der[..] {
                return None;
            }
            out.push((at, len));
            at += len;
            if tls13 {
                let ext = msg.get(at..at + 2)?;
                at += 2 + usize::from(u16::from_be_bytes([ext[0], ext[1]]));
            }
        }
        Some(out)
    };
    walk(4 + 3, false)
        .or_else(|| {
            let ctx = usize::from(*msg.get(4)?);
            walk(4 + 1 + ctx + 3, true)
        })
        .unwrap_or_default()
}

/// How certificate IP addresses are remapped.
pub(super) type IpMap<'a> = dyn FnMut(IpAddr) -> IpAddr + 'a;

/// Masks the subject and issuer common names and the SAN DNS names of a DER certificate in place,
/// and remaps its SAN IP addresses with `map_ip` (same lengths: the certificate still parses, its
/// signature no longer verifies); how many names were masked.
pub(super) fn mask_certificate_names(der: &mut [u8], map_ip: &mut IpMap<'_>) -> usize {
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return 0;
    };
    // (bytes to find, offset of the value within them)
    let mut targets: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut ips: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let tbs = &cert.tbs_certificate;
    for name in [&tbs.subject, &tbs.issuer] {
        for rdn in name.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid.as_bytes() != &OID_CN[2..] {
                    continue;
                }
                let Ok(tlv) = atv.value.to_der() else {
                    continue;
                };
                let value_len = atv.value.value().len();
                let mut needle = OID_CN.to_vec();
                needle.extend_from_slice(&tlv);
                targets.push((needle, OID_CN.len() + tlv.len() - value_len));
            }
        }
    }
    {
        use x509_cert::ext::pkix::{name::GeneralName, SubjectAltName};
        if let Ok(Some((_, san))) = tbs.get::<SubjectAltName>() {
            for g in san.0.iter() {
                match g {
                    GeneralName::DnsName(d) => {
                        let v = d.as_bytes();
                        // [2] IMPLICIT IA5String
                        let mut needle = vec![0x82];
                        needle.extend_from_slice(&crate::wire::asn1::len_bytes(v.len()));
                        let header = needle.len();
                        needle.extend_from_slice(v);
                        targets.push((needle, header));
                    }
                    GeneralName::IpAddress(o) => {
                        let v = o.as_bytes();
                        let mapped = match v.len() {
                            4 => <[u8; 4]>::try_from(v).ok().map(|a| map_ip(IpAddr::from(a))),
                            16 => <[u8; 16]>::try_from(v)
                                .ok()
                                .map(|a| map_ip(IpAddr::from(a))),
                            _ => None,
                        };
                        let to = match mapped {
                            Some(IpAddr::V4(a)) => a.octets().to_vec(),
                            Some(IpAddr::V6(a)) => a.octets().to_vec(),
                            None => continue,
                        };
                        // [7] IMPLICIT OCTET STRING
                        let mut needle = vec![0x87, v.len() as u8];
                        needle.extend_from_slice(v);
                        let mut with = vec![0x87, v.len() as u8];
                        with.extend_from_slice(&to);
                        ips.push((needle, with));
                    }
                    _ => {}
                }
            }
        }
    }
    for (needle, with) in ips {
        if let Some(i) = find(der, &needle) {
            der[i..i + with.len()].copy_from_slice(&with);
        }
    }
    let mut n = 0;
    for (needle, value_at) in targets.into_iter().filter(|(t, _)| t.len() <= MAX_NEEDLE) {
        let mut from = 0usize;
        while let Some(i) = find(&der[from..], &needle) {
            let at = from + i;
            let v = &mut der[at + value_at..at + needle.len()];
            if v.iter().any(|&c| c != 0 && c != b'.' && c != b'x') {
                mask_text(v);
                n += 1;
            }
            from = at + needle.len();
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let kp = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&kp).unwrap().der().to_vec()
    }

    fn has(hay: &[u8], needle: &[u8]) -> bool {
        find(hay, needle).is_some()
    }

    fn record(ty: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, 3, 3];
        v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    fn handshake(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }

    fn client_hello(sni: &str) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[7; 32]);
        b.push(0);
        b.extend_from_slice(&[0, 2, 0xc0, 0x2f, 1, 0]);
        let mut ext = vec![0, 0];
        let n = sni.len() as u16;
        ext.extend_from_slice(&(n + 5).to_be_bytes());
        ext.extend_from_slice(&(n + 3).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&n.to_be_bytes());
        ext.extend_from_slice(sni.as_bytes());
        b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        b.extend_from_slice(&ext);
        handshake(1, &b)
    }

    fn certificate(chain: &[Vec<u8>]) -> Vec<u8> {
        let mut list = Vec::new();
        for c in chain {
            list.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
            list.extend_from_slice(c);
        }
        let mut b = (list.len() as u32).to_be_bytes()[1..].to_vec();
        b.extend_from_slice(&list);
        handshake(11, &b)
    }

    #[test]
    fn addresses_and_ports_map_consistently_and_deterministically() {
        let mut a = Anonymizer::new();
        let mut st = SanitizeStats::default();
        let srv: SocketAddr = "10.1.2.3:3390".parse().unwrap();
        let c1: SocketAddr = "10.9.9.9:50001".parse().unwrap();
        let c2: SocketAddr = "[fe80::1]:50002".parse().unwrap();
        assert_eq!(
            a.addr(c1, false, &mut st),
            "192.0.2.1:49152".parse().unwrap()
        );
        assert_eq!(
            a.addr(srv, true, &mut st),
            "192.0.2.2:33890".parse().unwrap()
        );
        assert_eq!(
            a.addr(c2, false, &mut st),
            "[2001:db8::1]:49153".parse().unwrap()
        );
        // Same input, same output, in any later conversation.
        assert_eq!(
            a.addr(srv, true, &mut st),
            "192.0.2.2:33890".parse().unwrap()
        );
        // The RDP port stays what it is.
        let rdp: SocketAddr = "10.1.2.3:3389".parse().unwrap();
        assert_eq!(
            a.addr(rdp, true, &mut st),
            "192.0.2.2:3389".parse().unwrap()
        );
        assert_eq!(st.addresses_remapped, 3);
        assert_eq!(st.ports_remapped, 3);
        // A fresh mapper over the same sequence gives the same answers.
        let mut b = Anonymizer::new();
        let mut st2 = SanitizeStats::default();
        assert_eq!(b.addr(c1, false, &mut st2), a.addr(c1, false, &mut st));
        // Never two inputs onto one output.
        let mut c = Anonymizer::new();
        let outs: HashSet<IpAddr> = (0..2000u32)
            .map(|i| c.ip(IpAddr::V4(Ipv4Addr::from(i)), &mut st))
            .collect();
        assert_eq!(outs.len(), 2000);
        let ports: HashSet<u16> = (0..3000u16)
            .map(|p| c.port(p, p % 2 == 0, &mut st))
            .collect();
        assert_eq!(ports.len(), 3000);
    }

    #[test]
    fn certificate_names_are_masked_and_it_still_parses() {
        let mut der = cert(
            "secret.corp.example",
            &["secret.corp.example", "rdp-01.corp.example"],
        );
        let len = der.len();
        let n = mask_certificate_names(&mut der, &mut |ip| ip);
        assert_eq!(der.len(), len);
        // subject CN, issuer CN (self-signed: the same bytes, masked once each), two SAN names
        assert_eq!(n, 4);
        assert!(!has(&der, b"secret") && !has(&der, b"corp"));
        let f = tls::cert_facts(&der, 0).expect("still a certificate");
        assert_eq!(f.subject, "CN=xxxxxx.xxxx.xxxxxxx");
        assert_eq!(f.issuer, "CN=xxxxxx.xxxx.xxxxxxx");
        assert_eq!(
            mask_certificate_names(&mut der, &mut |ip| ip),
            0,
            "idempotent"
        );
    }

    #[test]
    fn certificate_ip_addresses_are_remapped() {
        let mut der = cert("h", &["h.example", "10.20.30.40", "fd00::7"]);
        let mut a = Anonymizer::new();
        let mut st = SanitizeStats::default();
        mask_certificate_names(&mut der, &mut |ip| a.ip(ip, &mut st));
        assert!(!has(&der, &[0x87, 4, 10, 20, 30, 40]));
        assert!(has(&der, &[0x87, 4, 192, 0, 2, 1]));
        assert!(has(&der, &[0x87, 16, 0x20, 0x01, 0x0d, 0xb8]));
        assert_eq!(st.addresses_remapped, 2);
        assert!(tls::cert_facts(&der, 0).is_ok());
    }

    #[test]
    fn sni_and_certificate_in_clear_are_masked_in_the_stream() {
        let der = cert("host.corp.example", &["host.corp.example"]);
        let mut c2s = b"\x03\x00\x00\x13cr-padding-bytes...".to_vec();
        let at = c2s.len();
        c2s.extend(record(22, &client_hello("host.corp.example")));
        c2s.extend(record(23, b"host.corp.example in application data"));
        let n = mask_tls_names(&mut c2s, at, &mut |ip| ip);
        assert_eq!(n, 1);
        assert_eq!(
            find(&c2s, b"host.corp"),
            Some(c2s.len() - 37),
            "only app data left"
        );
        let (msgs, err) = tls::parse_handshakes(&c2s[at + 5..c2s.len() - 42]);
        assert!(err.is_none(), "{err:?}");
        assert!(
            matches!(&msgs[0], tls::Handshake::ClientHello { sni: Some(s), .. } if s == "xxxx.xxxx.xxxxxxx")
        );

        // A certificate message split over two records.
        let msg = certificate(std::slice::from_ref(&der));
        let (a, b) = msg.split_at(100);
        let mut s2c = record(22, a);
        s2c.extend(record(22, b));
        let n = mask_tls_names(&mut s2c, 0, &mut |ip| ip);
        assert_eq!(n, 3);
        assert!(!has(&s2c, b"corp"));
        let mut joined = s2c[5..105].to_vec();
        joined.extend_from_slice(&s2c[110..]);
        let (msgs, _) = tls::parse_handshakes(&joined);
        let tls::Handshake::Certificate { chain } = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert!(tls::cert_facts(&chain[0], 0).is_ok());
    }
}
