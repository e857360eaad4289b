//! The typed wire layer: pure readers and writers of protocol bytes, no I/O.
//!
//! Contract (as smoltcp's `wire`): nothing here panics on any input, every read is bounds-checked
//! and reports the absolute byte offset where it failed ([`WireError`]), and nothing allocates from
//! an untrusted length. `cursor` reads fixed-size integers and byte runs; `asn1` reads and writes
//! BER/DER headers and TLVs; `x224` frames TPKT / fast-path PDUs and reads and writes the X.224
//! TPDUs with RDP_NEG_REQ / RSP / FAILURE; `mcs` the T.125 domain PDUs (`DomainPdu`) and the
//! Connect-Initial header; `tls` the TLS records and handshake messages (the one record rule);
//! `x509` the certificate facts, RFC 4514 names and host name matching; `credssp` the CredSSP
//! TSRequest; `ntlm` the NTLM message fields, VERSION and AV pairs; `share` the basic security
//! header, licensing and the share control / data PDUs. Property tests in each module
//! and the `wire`
//! cargo-fuzz target hold the contract.

pub mod asn1;
pub mod credssp;
pub mod cursor;
pub mod gcc;
pub mod mcs;
pub mod ntlm;
pub mod servercert;
pub mod share;
pub mod tls;
pub mod x224;
pub mod x509;

pub use cursor::{Cursor, WireError, WireErrorKind};

/// Runs every reader of this module over `data` and checks the contract with assertions: the
/// entry point of the `wire` cargo-fuzz target (and of a property test here). The first byte
/// chooses the order of the cursor reads.
#[doc(hidden)]
pub fn exercise(data: &[u8]) {
    use asn1::TagForm;
    let Some((&ops, rest)) = data.split_first() else {
        return;
    };
    let mut c = Cursor::at(rest, 1);
    for i in 0..4 {
        let before = c.offset();
        let ok = match (ops >> (2 * i)) & 3 {
            0 => c.read_u8().is_ok(),
            1 => c.read_u16_le().is_ok(),
            2 => c.read_u32_le().is_ok(),
            _ => c.read_bytes(usize::from(ops)).is_ok(),
        };
        assert!(ok || c.offset() == before, "a failed read moved the cursor");
        assert!(c.offset() <= data.len(), "the cursor ran past the end");
    }
    let _ = (
        cursor::le16(rest, 3),
        cursor::le32(rest, 5),
        cursor::be16(rest, 1),
    );
    for form in [TagForm::OneByte, TagForm::LowOnly, TagForm::UpToTwo] {
        if let Ok((h, content, tail)) = asn1::read_tlv(rest, form) {
            assert_eq!(h.header_len + content.len() + tail.len(), rest.len());
            if h.tag_len == 1 {
                let again = asn1::tlv(h.tag, content);
                let read_back = asn1::read_tlv(&again, form);
                assert!(
                    matches!(read_back, Ok((h2, c2, t2)) if h2.tag == h.tag && c2 == content && t2.is_empty()),
                    "writer output does not read back"
                );
            }
        }
    }
    // The MCS Connect Response envelope, the GCC server data blocks (typed, and re-emitted: a
    // block that emits must read back as itself) and the server certificate and its key.
    let _ = gcc::connect_response(rest);
    let _ = gcc::blocks_after_key(rest, b"McDn");
    let (blocks, _) = gcc::server_blocks(rest, 1);
    for b in &blocks {
        let mut again = Vec::new();
        if b.emit(&mut again).is_some() {
            let (back, err) = gcc::server_blocks(&again, 0);
            assert!(err.is_none(), "an emitted block does not walk");
            assert_eq!(
                back.len(),
                1,
                "an emitted block reads back as more than one"
            );
            // Only fields up to the first absent one are written: compare what was written.
            let mut twice = Vec::new();
            back[0].emit(&mut twice);
            assert_eq!(again, twice, "an emitted block does not read back the same");
        }
    }
    if let Ok(servercert::ServerCertificate::X509 { chain, .. }) =
        servercert::ServerCertificate::parse(rest)
    {
        assert!(chain.iter().map(|c| c.len() + 4).sum::<usize>() <= rest.len());
    }
    let _ = servercert::server_public_key(rest);
    // TPKT / fast-path framing and the X.224 TPDUs, re-emitted and read back.
    x224::exercise(rest);
    // The MCS domain PDUs (re-emitted and read back) and the Connect-Initial header.
    mcs::exercise(rest);
    // TLS records and handshake messages (headers re-emitted, split and reassembled reads agree).
    tls::exercise(rest);
    // X.509 certificate facts and the name check (never panic; errors are values).
    let _ = x509::cert_facts(rest, 0);
    let _ = x509::check_name(rest, "x.example");
    let _ = x509::subject_der(rest);
    // The CredSSP TSRequest (re-emitted and read back).
    credssp::exercise(rest);
    // NTLM security buffers, VERSION and AV pairs (re-emitted and read back).
    ntlm::exercise(rest);
    // Security header, licensing, share control / data PDUs (written ones read back).
    share::exercise(rest);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_fuzz_entry_holds_on_random_input(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            super::exercise(&data);
        }

        #[test]
        fn the_fuzz_entry_holds_on_tlvs(tag in 0u8..0x1f, ops: u8, content in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut data = vec![ops];
            data.extend(super::asn1::tlv(tag, &content));
            super::exercise(&data);
        }
    }
}
