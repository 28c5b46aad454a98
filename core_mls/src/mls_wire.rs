//! MLS messages in envelopes: wrapping an outgoing one (with the context `signed_context`
//! makes), and reading one back out of an envelope this device stored (a buffered proposal, a
//! commit kept as a fork candidate).
//!
//! Invariant: encoding only; nothing here verifies a message or looks at a group.

use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProtocolMessage};
use tls_codec::{Deserialize as _, Serialize as _};

use crate::envelope::{Envelope, EnvelopeKind};
use crate::epoch_buffer::BufferedMessage;
use crate::error::MlsError;

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
    let bytes = message
        .tls_serialize_detached()
        .map_err(|e| MlsError::openmls("encode an MLS message", e))?;
    Ok(Envelope::with_context(kind, bytes, context))
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
