//! What this device has already processed, so duplicates and echoes of its own messages are
//! recognised: envelope ids (content hashes) and, per sender device, application message ids
//! (which survive re-encryption). Entries carry the time they were recorded and are forgotten
//! after `dedup_retention`.

use core_identity::VerifiedMember;
use spacepanda_core::{Key, Timestamp, Transaction};

use crate::envelope::EnvelopeId;
use crate::error::MlsError;
use crate::group_id::GroupId;

/// Namespace of de-duplication records.
pub(crate) const SEEN_NAMESPACE: &str = "seen";

fn envelope_key(id: EnvelopeId) -> Key {
    Key::from_segments([&b"env"[..], id.as_bytes()])
}

fn app_key(group: &GroupId, sender: &VerifiedMember, message_id: &[u8; 16]) -> Key {
    Key::from_segments([
        &b"app"[..],
        group.as_slice(),
        sender.user_id().as_bytes(),
        sender.device_id().as_bytes(),
        message_id,
    ])
}

/// Whether the envelope was processed (or sent) before.
pub(crate) fn envelope_seen(txn: &Transaction, id: EnvelopeId) -> Result<bool, MlsError> {
    Ok(txn.get(SEEN_NAMESPACE, &envelope_key(id))?.is_some())
}

/// Records an envelope as processed (or sent).
pub(crate) fn record_envelope(
    txn: &mut Transaction,
    id: EnvelopeId,
    now: Timestamp,
) -> Result<(), MlsError> {
    txn.put(
        SEEN_NAMESPACE,
        envelope_key(id),
        now.unix_millis().to_be_bytes().to_vec(),
    )?;
    Ok(())
}

/// Forgets that an envelope was processed: it will be taken again when it comes.
pub(crate) fn forget_envelope(txn: &mut Transaction, id: EnvelopeId) -> Result<(), MlsError> {
    txn.delete(SEEN_NAMESPACE, envelope_key(id))?;
    Ok(())
}

/// Records an application message as delivered to the app; false if it already was.
pub(crate) fn record_delivery(
    txn: &mut Transaction,
    group: &GroupId,
    sender: &VerifiedMember,
    message_id: &[u8; 16],
    now: Timestamp,
) -> Result<bool, MlsError> {
    let key = app_key(group, sender, message_id);
    if txn.get(SEEN_NAMESPACE, &key)?.is_some() {
        return Ok(false);
    }
    txn.put(
        SEEN_NAMESPACE,
        key,
        now.unix_millis().to_be_bytes().to_vec(),
    )?;
    Ok(true)
}

/// Forgets records older than `retention`. Returns how many.
pub(crate) fn expire(
    txn: &mut Transaction,
    retention: std::time::Duration,
    now: Timestamp,
) -> Result<usize, MlsError> {
    let mut removed = 0;
    for (key, value) in txn.scan_prefix(SEEN_NAMESPACE, &Key::empty())? {
        let recorded = <[u8; 8]>::try_from(value.as_slice())
            .map(|b| Timestamp::from_unix_millis(u64::from_be_bytes(b)))
            // A damaged record is forgotten rather than kept forever.
            .unwrap_or(Timestamp::EPOCH);
        if now.duration_since(recorded) > retention {
            txn.delete(SEEN_NAMESPACE, key)?;
            removed += 1;
        }
    }
    Ok(removed)
}
