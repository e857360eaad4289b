//! Entry points for the cargo-fuzz targets of rdprobe's client-side parsers (`fuzz/fuzz_targets/`):
//! what a hostile server sends, read by the parsers the probe runs on it. Each takes any bytes and
//! must return without panicking; they are compiled and unit-tested here so the targets stay
//! trivial (a call) and typechecked with the crate.

/// A server certificate (MS-RDPBCGR 2.2.1.4.3.1, proprietary or X.509 chain): its RSA key as the
/// standard-security walk reads it, the RSA encryption of a client random with that key, and the
/// decoder's certificate facts.
pub fn server_certificate(data: &[u8]) {
    if let Ok(key) = crate::rdpsec::cert::server_public_key(data) {
        let _ = crate::rdpsec::cert::encrypt_client_random(&key, &[0x11; 32]);
    }
    let _ = crate::decode::mcs::server_certificate_facts(data);
}

/// An MCS Connect Response (the whole TPKT PDU): the GCC server data as the standard-security
/// walk and the decoder read them, and the certificate inside.
pub fn gcc_server_data(data: &[u8]) {
    if let Ok(sd) = crate::rdpsec::gcc::parse_connect_response(data) {
        server_certificate(&sd.server_certificate);
    }
    if let Some(ud) = data.get(7..) {
        let _ = crate::decode::mcs::connect_response_facts(ud);
    }
}

/// A server TSRequest carrying an NTLM CHALLENGE (MS-CSSP 2.2.1, MS-NLMP 2.2.1.2), or a bare NTLM
/// message when it is not a TSRequest.
pub fn ntlm_challenge(data: &[u8]) {
    match crate::decode::credssp::parse_ts_request(data) {
        Ok(ts) => {
            if let Some(tok) = ts.nego_token {
                let _ = crate::decode::credssp::parse_ntlm(&tok);
            }
        }
        Err(_) => {
            let _ = crate::decode::credssp::parse_ntlm(data);
        }
    }
}

/// A server licensing PDU (MS-RDPELE 2.2.2): the X.224 user data of a Send Data Indication, read
/// as the decoder classifies it, and its payload with and without a security header.
pub fn licensing(data: &[u8]) {
    let _ = crate::decode::mcs::classify_domain_pdu(data);
    let _ = crate::decode::mcs::classify_share_pdu(data, true);
    let _ = crate::decode::mcs::classify_share_pdu(data, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::mutate;
    use crate::scenario::MutateStage;

    /// Every entry point takes the lab's server-side mutations and junk without panicking.
    #[test]
    fn entries_survive_mutated_server_pdus() {
        for len in 0..200usize {
            let junk: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            server_certificate(&junk);
            gcc_server_data(&junk);
            ntlm_challenge(&junk);
            licensing(&junk);
        }
        for k in 0..300 {
            let c = mutate::case_for(MutateStage::Mcs, 1, k);
            if let mutate::Body::Mcs(m) = &c.body {
                for mu in &m.mutations {
                    if let mutate::McsMutation::Security { cert, .. } = mu {
                        server_certificate(&cert.encode());
                    }
                }
            }
        }
    }
}
