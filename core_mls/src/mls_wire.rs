//! MLS messages in envelopes: wrapping an outgoing one (with the context `signed_context`
//! makes), reading one back out of an envelope this device stored (a buffered proposal, a
//! commit kept as a fork candidate), and the bounded decode of a GroupInfo envelope.
//!
//! Invariant: encoding only; nothing here verifies a message or looks at a group.

use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProtocolMessage};
use tls_codec::{Deserialize as _, Serialize as _};

use crate::envelope::{Envelope, EnvelopeKind};
use crate::epoch_buffer::BufferedMessage;
use crate::error::MlsError;

/// A GroupInfo envelope is at most this large (a 1 000-member tree is about 600 KB).
const MAX_GROUP_INFO_LEN: usize = 4 * 1024 * 1024;

/// An outgoing MLS message in an envelope of `kind`, without a context.
pub(crate) fn encode_message(
    kind: EnvelopeKind,
    message: &MlsMessageOut,
) -> Result<Envelope, MlsError> {
    encode_with_context(kind, message, &[])
}

/// An envelope with a context (see `envelope`): for commits our claim of the commit ref, for
/// Welcomes and GroupInfos our branch history (see `signed_context`).
pub(crate) fn encode_with_context(
    kind: EnvelopeKind,
    message: &MlsMessageOut,
    context: &[u8],
) -> Result<Envelope, MlsError> {
    Ok(Envelope::with_context(kind, encode(message)?, context))
}

/// The protocol message inside a buffered proposal envelope, if it is one.
pub(crate) fn buffered_proposal(entry: &BufferedMessage) -> Option<(Envelope, ProtocolMessage)> {
    let envelope = Envelope::from_bytes(&entry.envelope_bytes, usize::MAX).ok()?;
    if envelope.kind() != EnvelopeKind::Proposal {
        return None;
    }
    let message = MlsMessageIn::tls_deserialize_exact(envelope.payload()).ok()?;
    let protocol = match message.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => ProtocolMessage::from(m),
        MlsMessageBodyIn::PublicMessage(m) => ProtocolMessage::from(m),
        _ => return None,
    };
    Some((envelope, protocol))
}

/// The protocol message in stored envelope bytes, if they hold one.
pub(crate) fn stored_protocol_message(envelope_bytes: &[u8]) -> Option<ProtocolMessage> {
    let envelope = Envelope::from_bytes(envelope_bytes, usize::MAX).ok()?;
    protocol_message(&envelope).ok()
}

/// The protocol message inside a stored envelope (a commit kept as a fork candidate).
pub(crate) fn protocol_message(envelope: &Envelope) -> Result<ProtocolMessage, MlsError> {
    let message = MlsMessageIn::tls_deserialize_exact(envelope.payload()).map_err(|e| {
        MlsError::MalformedMessage {
            reason: format!("payload is not an MLS message: {e}"),
        }
    })?;
    match message.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => Ok(ProtocolMessage::from(m)),
        MlsMessageBodyIn::PublicMessage(m) => Ok(ProtocolMessage::from(m)),
        _ => Err(MlsError::MalformedEnvelope {
            reason: "a stored commit is not a group message",
        }),
    }
}

pub(crate) fn is_commit(envelope_bytes: &[u8]) -> bool {
    Envelope::from_bytes(envelope_bytes, usize::MAX).is_ok_and(|e| e.kind() == EnvelopeKind::Commit)
}

/// An outgoing MLS message's TLS bytes (an envelope's payload).
pub(crate) fn encode(message: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    message
        .tls_serialize_detached()
        .map_err(|e| MlsError::openmls("encode an MLS message", e))
}

/// The GroupInfo inside envelope bytes from
/// [`MlsClient::export_group_info`](crate::MlsClient::export_group_info), not yet verified
/// (OpenMLS verifies it when it builds the group from it), and the envelope it came in (whose
/// context is the member's signed branch history).
pub(crate) fn parse_group_info_envelope(
    bytes: &[u8],
) -> Result<(VerifiableGroupInfo, Envelope), MlsError> {
    let invalid = |reason: String| MlsError::InvalidGroupInfo { reason };
    let envelope = Envelope::from_bytes(bytes, MAX_GROUP_INFO_LEN)?;
    if envelope.kind() != EnvelopeKind::GroupInfo {
        return Err(invalid("the envelope does not hold a GroupInfo".into()));
    }
    let message = MlsMessageIn::tls_deserialize_exact(envelope.payload())
        .map_err(|e| invalid(format!("not an MLS message: {e}")))?;
    match message.extract() {
        MlsMessageBodyIn::GroupInfo(verifiable) => Ok((verifiable, envelope)),
        _ => Err(invalid("the MLS message is not a GroupInfo".into())),
    }
}
