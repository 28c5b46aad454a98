//! The durable inbox: every application message is written here in the same transaction that
//! decrypts it (and marks it seen), and stays until the application acknowledges it. Together
//! with the outbox this makes delivery crash-proof end to end: a crash after the engine
//! committed but before the app stored the message loses nothing, and the message id lets the
//! app recognise a redelivery.

use spacepanda_core::{Key, Timestamp, Transaction};
use tls_codec::{
    Deserialize as _, Serialize as _, TlsByteVecU8, TlsByteVecU16, TlsByteVecU32, TlsDeserialize,
    TlsSerialize, TlsSize,
};

use crate::error::MlsError;
use crate::events::{DeliveryId, Event};
use crate::group_id::GroupId;
use crate::member_verification::MemberCache;
use crate::outbox::next_sequence;

/// Namespace of undelivered application messages, keyed by big-endian delivery id.
pub(crate) const INBOX_NAMESPACE: &str = "app_inbox";
const RECORD_VERSION: u8 = 1;

#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct InboxRecordWire {
    version: u8,
    group: TlsByteVecU8,
    sender_credential: TlsByteVecU16,
    sender_signature_key: TlsByteVecU8,
    message_id: [u8; 16],
    sent_at_ms: u64,
    body: TlsByteVecU32,
}

/// What is needed to store one delivered message.
pub(crate) struct Delivery<'a> {
    pub(crate) group: &'a GroupId,
    pub(crate) sender_credential: &'a openmls::prelude::Credential,
    pub(crate) sender_signature_key: &'a [u8],
    pub(crate) message_id: [u8; 16],
    pub(crate) sent_at: Timestamp,
    pub(crate) body: &'a [u8],
}

/// Stores a delivered message in the open transaction; returns its delivery id.
pub(crate) fn push(txn: &mut Transaction, delivery: &Delivery<'_>) -> Result<DeliveryId, MlsError> {
    let next = next_sequence(txn, "inbox_sequence")?;
    let encode_error = |_| MlsError::Internal {
        what: "inbox record does not encode",
    };
    let credential = delivery
        .sender_credential
        .tls_serialize_detached()
        .map_err(encode_error)?;
    let record = InboxRecordWire {
        version: RECORD_VERSION,
        group: delivery.group.as_slice().to_vec().into(),
        sender_credential: credential.into(),
        sender_signature_key: delivery.sender_signature_key.to_vec().into(),
        message_id: delivery.message_id,
        sent_at_ms: delivery.sent_at.unix_millis(),
        body: delivery.body.to_vec().into(),
    }
    .tls_serialize_detached()
    .map_err(encode_error)?;
    txn.put(
        INBOX_NAMESPACE,
        Key::from_segment(next.to_be_bytes()),
        record,
    )?;
    Ok(DeliveryId(next))
}

/// Every unacknowledged message, oldest first, as `Event::Message`s.
pub(crate) fn pending(
    txn: &Transaction,
    members: &mut MemberCache,
) -> Result<Vec<Event>, MlsError> {
    let corrupted = |reason| MlsError::CorruptedState {
        namespace: INBOX_NAMESPACE,
        reason,
    };
    let mut events = Vec::new();
    for (key, bytes) in txn.scan_prefix(INBOX_NAMESPACE, &Key::empty())? {
        let delivery = key
            .segments()
            .next()
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(|b| DeliveryId(u64::from_be_bytes(b)))
            .ok_or_else(|| corrupted("inbox key is not a delivery id"))?;
        let record = InboxRecordWire::tls_deserialize_exact(&bytes)
            .map_err(|_| corrupted("inbox record does not decode"))?;
        if record.version != RECORD_VERSION {
            return Err(MlsError::UnsupportedStateVersion {
                what: "inbox record",
                found: u32::from(record.version),
                supported: u32::from(RECORD_VERSION),
            });
        }
        let credential = openmls::prelude::Credential::tls_deserialize_exact(
            record.sender_credential.as_slice(),
        )
        .map_err(|_| corrupted("inbox sender credential does not decode"))?;
        // Verified when it was delivered; verifying again turns bytes back into a VerifiedMember.
        let sender = members.verify(&credential, record.sender_signature_key.as_slice())?;
        events.push(Event::Message {
            group: GroupId::from_slice(record.group.as_slice()),
            sender,
            message_id: crate::events::MessageId(record.message_id),
            sent_at: Timestamp::from_unix_millis(record.sent_at_ms),
            body: record.body.into_vec(),
            delivery,
        });
    }
    Ok(events)
}

/// Forgets an acknowledged message; false if it was not pending.
pub(crate) fn ack(txn: &mut Transaction, id: DeliveryId) -> Result<bool, MlsError> {
    let key = Key::from_segment(id.0.to_be_bytes());
    let present = txn.get(INBOX_NAMESPACE, &key)?.is_some();
    if present {
        txn.delete(INBOX_NAMESPACE, key)?;
    }
    Ok(present)
}
