//! Stepping IronRDP's client sequences over a byte stream with a deadline on every wait: the one
//! place where rdprobe feeds a server's PDU to a `ClientConnector` (or any `Sequence`) and runs a
//! `CredsspSequence` round. Shared by the live probe and the fuzzer's session, which steps the
//! same connector up to the stage it fuzzes.
//!
//! IronRDP has no deadlines of its own: every read here goes through [`crate::net::framed`]
//! (one deadline, `MAX_PDU_LEN` bound), and what a step wrote is left in the caller's
//! `WriteBuf` for the caller to send under its own write deadline (the probe and the fuzzer
//! record a failed write differently).

use std::time::Duration;

use bytes::BytesMut;
use ironrdp_connector::credssp::CredsspSequence;
use ironrdp_connector::sspi::credssp::{ClientState, TsRequest};
use ironrdp_connector::sspi::generator::GeneratorState;
use ironrdp_connector::{ConnectorError, Sequence, Written};
use ironrdp_core::WriteBuf;
use ironrdp_pdu::PduHint;
use tokio::io::AsyncRead;

use crate::net::framed::{self, ReadError, Reader};

/// Why a step did not advance the sequence.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// No whole PDU was read (silence, close, reset, a bad length); bytes of an incomplete PDU
    /// stay in the caller's buffer.
    #[error("reading the server's PDU: {0}")]
    Read(#[from] ReadError),
    /// The sequence refused the server's PDU (kept for the caller to judge), or its own step
    /// without input failed (`pdu` empty).
    #[error("{error}")]
    Rejected {
        pdu: BytesMut,
        error: ConnectorError,
    },
}

/// Reads one PDU the hint can size into `buf`'s front, within `timeout`. PDUs the hint does not
/// match are skipped (a recording tap below the stream keeps them).
pub async fn read_hinted<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
    hint: &dyn PduHint,
    timeout: Duration,
) -> Result<BytesMut, ReadError> {
    Reader::default()
        .read_within(stream, buf, timeout, framed::hint(hint))
        .await
}

/// One step of `seq`: when it waits for input, reads the PDU its hint sizes (within `timeout`)
/// and steps it; else steps without input. What the step wrote is in `out` (cleared first);
/// the PDU read, if any, is returned.
pub async fn step<S: AsyncRead + Unpin + ?Sized>(
    seq: &mut dyn Sequence,
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut WriteBuf,
    timeout: Duration,
) -> Result<(Option<BytesMut>, Written), StepError> {
    out.clear();
    let Some(hint) = seq.next_pdu_hint() else {
        return seq
            .step_no_input(out)
            .map(|w| (None, w))
            .map_err(|error| StepError::Rejected {
                pdu: BytesMut::new(),
                error,
            });
    };
    let pdu = read_hinted(stream, buf, hint, timeout).await?;
    match seq.step(&pdu, None, out) {
        Ok(w) => Ok((Some(pdu), w)),
        Err(error) => Err(StepError::Rejected { pdu, error }),
    }
}

/// Why a CredSSP round produced no client message.
#[derive(Debug, thiserror::Error)]
pub enum CredsspStepError {
    /// The exchange needs a network request (Kerberos to a KDC), which rdprobe does not make.
    #[error("network request (Kerberos) not supported")]
    NetworkRequest,
    /// The security package refused the server's TSRequest.
    #[error("{0}")]
    Rejected(ironrdp_connector::sspi::Error),
}

/// The client's answer to the server's last TSRequest (MS-CSSP 3.1.5), computed by IronRDP's
/// `CredsspSequence` (NTLM; the SSPI generator never suspends for it). Encode it with
/// `CredsspSequence::handle_process_result`.
pub fn credssp_process(
    seq: &mut CredsspSequence,
    ts_request: TsRequest,
) -> Result<ClientState, CredsspStepError> {
    let mut generator = seq.process_ts_request(ts_request);
    match generator.start() {
        GeneratorState::Completed(r) => r.map_err(CredsspStepError::Rejected),
        GeneratorState::Suspended(_) => Err(CredsspStepError::NetworkRequest),
    }
}

/// Reads the server's next CredSSP message (the sequence's hint sizes it) within `timeout`
/// and decodes it: `None` when the exchange is over.
pub async fn credssp_read<S: AsyncRead + Unpin + ?Sized>(
    seq: &mut CredsspSequence,
    stream: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Option<TsRequest>, StepError> {
    let Some(hint) = seq.next_pdu_hint() else {
        return Ok(None);
    };
    let pdu = read_hinted(stream, buf, hint, timeout).await?;
    seq.decode_server_message(&pdu)
        .map_err(|error| StepError::Rejected { pdu, error })
}
