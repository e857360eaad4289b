//! The human table of `rdprobe enum`.

use std::fmt::Write as _;

use super::tls::Preference;
use super::EnumReport;

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Which order the suite list is in.
fn order_text(v: &super::TlsVersionResult) -> &'static str {
    match v.preference {
        Preference::Server => "server's order of preference",
        Preference::Client if v.version == "TLSv1.3" => {
            "server follows the client's order; listed in RFC 8446's order"
        }
        Preference::Client => {
            "server follows the client's order; listed by key exchange (ECDHE, DHE, other), \
             each in OpenSSL's order"
        }
        Preference::Unknown if v.cipher_suites.len() > 1 => "order found (preference not told)",
        Preference::Unknown if v.attempts <= 1 => "first choice",
        Preference::Unknown => "the only suite",
    }
}

/// Renders the report as the table `rdprobe enum` prints.
pub fn render_text(r: &EnumReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}{} — {} connections in {} ms",
        r.target,
        r.address
            .as_ref()
            .filter(|a| **a != r.target)
            .map(|a| format!(" ({a})"))
            .unwrap_or_default(),
        r.connections,
        r.elapsed_ms
    );
    let _ = writeln!(o, "\nSECURITY PROTOCOLS (each offered alone)");
    let _ = writeln!(
        o,
        "  {:<20} {:<9} {:<22} detail",
        "protocol", "accepted", "server answer"
    );
    for p in r.protocols.iter().chain([&r.all_offered, &r.common_offer]) {
        let name = if p.offered.len() > 3 {
            "all offered".to_owned()
        } else if p.offered.len() > 1 {
            "SSL|HYBRID|HYBRID_EX".to_owned()
        } else {
            p.offered.join(",")
        };
        let answer = match (&p.selected, &p.failure_name) {
            (Some(s), _) => format!("selected {s}"),
            (None, Some(f)) if p.response == "negotiation failure" => f.clone(),
            (None, Some(f)) => format!("{} ({f})", p.response),
            _ => p.error.clone().unwrap_or_else(|| p.response.clone()),
        };
        let mut detail = Vec::new();
        if let Some(c) = p.failure_code {
            detail.push(format!("code 0x{c:x}"));
        }
        if !p.flags.is_empty() {
            detail.push(format!("flags {}", p.flags.join(",")));
        }
        if p.response == "no negotiation data" {
            detail.push("no RDP_NEG_RSP".into());
        }
        let accepted = if p.offered.len() > 1 {
            "-"
        } else {
            yn(p.accepted)
        };
        let _ = writeln!(
            o,
            "  {:<20} {:<9} {:<22} {}",
            name,
            accepted,
            answer,
            detail.join("; ")
        );
    }
    if let Some(s) = &r.rdp_security {
        let _ = writeln!(o, "\nSTANDARD RDP SECURITY");
        let _ = writeln!(
            o,
            "  encryption level {}  server {}  random {} bytes  certificate {}{}  key {}",
            s.level.as_deref().unwrap_or("?"),
            s.server_rdp_version.as_deref().unwrap_or("?"),
            s.server_random_len,
            s.certificate_type.as_deref().unwrap_or("none"),
            if s.certificate_temporary == Some(true) {
                " (temporary)"
            } else {
                ""
            },
            match (s.key_bits, s.key_exponent, &s.key_error) {
                (Some(b), Some(e), _) => format!("RSA {b} bits, e={e}"),
                (_, _, Some(err)) => format!("unusable: {err}"),
                _ => "?".into(),
            }
        );
        for m in &s.methods {
            let _ = writeln!(
                o,
                "  {:<8} {:<4} {}",
                m.method.name(),
                yn(m.accepted),
                match (&m.selected, &m.error) {
                    (Some(sel), _) if !m.accepted => format!("server selected {sel}"),
                    (_, Some(e)) => e.clone(),
                    _ => String::new(),
                }
            );
        }
    }
    if let Some(t) = &r.tls {
        let _ = writeln!(o, "\nTLS (after the server selected {})", t.via);
        for v in &t.versions {
            let _ = writeln!(
                o,
                "  {:<8} {:<4} {}",
                v.version,
                yn(v.accepted),
                if v.accepted {
                    format!(
                        "{} suites ({} handshakes{}{}), {}: {}",
                        v.cipher_suites.len(),
                        v.attempts,
                        if v.truncated { ", limit reached" } else { "" },
                        v.error
                            .as_ref()
                            .map(|e| format!(", stopped: {e}"))
                            .unwrap_or_default(),
                        order_text(v),
                        v.cipher_suites.join(" ")
                    )
                } else {
                    v.error.clone().unwrap_or_default()
                }
            );
        }
        if let Some(c) = &t.certificate {
            let _ = writeln!(o, "  certificate {}", c.subject);
            let _ = writeln!(
                o,
                "    issuer {}  valid {} .. {} ({} days left)",
                c.issuer, c.not_before, c.not_after, c.days_left
            );
            let _ = writeln!(
                o,
                "    key {} {} bits  signature {}  sha256 {}",
                c.key, c.key_bits, c.signature_algorithm, c.sha256
            );
            if c.findings.is_empty() {
                let _ = writeln!(o, "    audit: no findings");
            } else {
                let _ = writeln!(o, "    audit: {}", c.findings.join("; "));
            }
        }
    }
    if let Some(c) = &r.credssp {
        let _ = writeln!(o, "\nCREDSSP / NTLM (via {}, no credentials)", c.via);
        if let Some(e) = &c.error {
            let _ = writeln!(o, "  {e}");
        }
        for (k, v) in [
            ("credssp version", c.version.map(|v| v.to_string())),
            ("netbios computer", c.nb_computer_name.clone()),
            ("netbios domain", c.nb_domain_name.clone()),
            ("dns computer", c.dns_computer_name.clone()),
            ("dns domain", c.dns_domain_name.clone()),
            ("dns tree", c.dns_tree_name.clone()),
            ("product version", c.os_version.clone()),
            ("server time", c.server_time.clone()),
        ] {
            if let Some(v) = v {
                let _ = writeln!(o, "  {k:<17} {v}");
            }
        }
    }
    if let Some(c) = &r.credentials {
        let _ = writeln!(
            o,
            "\nCREDENTIALS {}: {}{}",
            c.user,
            if c.accepted { "accepted" } else { "rejected" },
            c.ntstatus
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        let _ = writeln!(o, "  {}", c.verdict);
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}
