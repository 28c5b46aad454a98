//! Application messages written while a membership change is pending.
//!
//! OpenMLS refuses to encrypt while proposals are pending (a member being removed must not read
//! what follows), and only one member — the designated committer — commits them, so that a
//! leave does not make several members commit concurrently. The other members keep what the
//! app sends here, durably, and encrypt it as soon as the commit arrives (or, if the designated
//! committer stays silent past `pending_proposal_timeout`, `tick` commits and sends).
//!
//! Messages of a group this device no longer holds (removed, or left) wait while a competing
//! commit could still restore the group (a snapshot is kept); once none can, `tick` drops them
//! with [`Event::MessagesNotSent`](crate::Event::MessagesNotSent).
//!
//! Layout: namespace [`DEFERRED_NAMESPACE`], key `[group id, sequence (u64 BE)]`, value the
//! encoded [`AppMessage`] (sealed at rest like everything else).

use spacepanda_core::{Key, Transaction};

use crate::app_message::AppMessage;
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::outbox::next_sequence;

pub(crate) const DEFERRED_NAMESPACE: &str = "deferred_send";

/// Keeps `message` for `group` until it can be encrypted.
pub(crate) fn push(
    txn: &mut Transaction,
    group: &GroupId,
    message: &AppMessage,
) -> Result<(), MlsError> {
    let next = next_sequence(txn, "deferred_sequence")?;
    txn.put(
        DEFERRED_NAMESPACE,
        Key::from_segments([group.as_slice(), &next.to_be_bytes()]),
        message.encode()?,
    )?;
    Ok(())
}

/// Everything waiting for `group`, oldest first, with its key.
pub(crate) fn for_group(
    txn: &Transaction,
    group: &GroupId,
) -> Result<Vec<(Key, AppMessage)>, MlsError> {
    txn.scan_prefix(DEFERRED_NAMESPACE, &Key::from_segment(group.as_slice()))?
        .into_iter()
        .map(|(key, bytes)| {
            AppMessage::decode(&bytes)
                .map(|message| (key, message))
                .map_err(|_| MlsError::CorruptedState {
                    namespace: DEFERRED_NAMESPACE,
                    reason: "deferred message does not decode",
                })
        })
        .collect()
}

/// Removes one entry (sent).
pub(crate) fn remove(txn: &mut Transaction, key: Key) -> Result<(), MlsError> {
    txn.delete(DEFERRED_NAMESPACE, key)?;
    Ok(())
}

/// Every group with messages waiting, each once.
pub(crate) fn groups(txn: &Transaction) -> Result<Vec<GroupId>, MlsError> {
    crate::group_id::groups_with_entries(txn, DEFERRED_NAMESPACE)
}
