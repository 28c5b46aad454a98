//! Messages that arrived too early: from an epoch this device has not reached yet, or for a
//! group it has not joined yet (its Welcome may still be on the way). They are kept durably,
//! bounded per group by count, bytes and age, and replayed automatically once the group reaches
//! their epoch.
//!
//! A commit that references a proposal not received yet waits here too, marked with the time
//! it started waiting: `tick` gives up on it after `commit_proposal_wait` (see `commit_wait`).
//!
//! Layout: namespace [`BUFFER_NAMESPACE`], key `[group id, epoch (u64 BE), envelope id,
//! context hash (16 bytes)]` (one entry per context a copy came with: see `context_hash`), value
//! `received_at (u64 BE ms) ‖ source length (u8, 0 = unknown) ‖ source ‖ envelope bytes` (the
//! source that delivered it, whose share of the buffer it counts against: `buffer_budget`).
//! Entries of earlier builds have a three-segment key `[group id, epoch, envelope id]` and the
//! value `received_at ‖ envelope bytes`; they are still read, as of the unknown source, and
//! age out like any entry. Epoch-major keys make "everything for epoch e" a prefix scan, in
//! arrival-independent order. Namespace [`AWAITING_NAMESPACE`], same key: `since (u64 BE ms)`,
//! for a buffered commit that waits for a proposal; deleted with its entry.

use spacepanda_core::{Key, Timestamp, Transaction};

// The entry type is defined with the budget rule, which decides over entries.
pub(crate) use crate::buffer_budget::BufferedMessage;
use crate::buffer_budget::{self, Arrival};
use crate::config::MlsConfig;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::events::DeliverySource;
use crate::group_id::GroupId;

/// Namespace of buffered envelopes.
pub(crate) const BUFFER_NAMESPACE: &str = "epoch_buffer";
/// Namespace of the marks of buffered commits that wait for a proposal.
pub(crate) const AWAITING_NAMESPACE: &str = "epoch_buffer_awaiting";

/// The key of `envelope`'s entry for `group` at `epoch`.
pub(crate) fn key(group: &GroupId, epoch: u64, envelope: &Envelope) -> Key {
    Key::from_segments([
        group.as_slice(),
        &epoch.to_be_bytes(),
        envelope.id().as_bytes(),
        &context_hash(envelope),
    ])
}

/// The envelope id leaves out the unauthenticated context, so anyone can make a copy of a
/// buffered envelope with the same id: keyed by id alone, the copy would replace the genuine
/// entry, and when it failed on replay the genuine one would be gone. Each context is an entry
/// of its own, judged on its own.
fn context_hash(envelope: &Envelope) -> [u8; 16] {
    let hash = blake3::derive_key("spacepanda epoch buffer context v1", envelope.context());
    hash.first_chunk::<16>().copied().unwrap_or_default()
}

fn decode(key: Key, value: &[u8]) -> Result<BufferedMessage, MlsError> {
    let corrupted = |reason| MlsError::CorruptedState {
        namespace: BUFFER_NAMESPACE,
        reason,
    };
    let mut segments = key.segments();
    let group = GroupId::from_slice(
        segments
            .next()
            .ok_or_else(|| corrupted("buffer key has no group"))?,
    );
    let epoch = segments
        .next()
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupted("buffer key has no epoch"))?;
    let (received_at, rest) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupted("buffer value truncated"))?;
    // Keys of earlier builds had no context hash, and their values no source.
    let (source, envelope_bytes) = if key.segments().count() == 3 {
        (None, rest)
    } else {
        let (&len, rest) = rest
            .split_first()
            .ok_or_else(|| corrupted("buffer value has no source"))?;
        let (source, envelope) = rest
            .split_at_checked(usize::from(len))
            .ok_or_else(|| corrupted("buffer value's source truncated"))?;
        ((len > 0).then(|| source.to_vec()), envelope)
    };
    Ok(BufferedMessage {
        key: key.clone(),
        group,
        epoch,
        received_at: Timestamp::from_unix_millis(u64::from_be_bytes(*received_at)),
        source,
        envelope_bytes: envelope_bytes.to_vec(),
    })
}

/// Everything buffered for `group`, oldest epoch first.
pub(crate) fn for_group(
    txn: &Transaction,
    group: &GroupId,
) -> Result<Vec<BufferedMessage>, MlsError> {
    txn.scan_prefix(BUFFER_NAMESPACE, &Key::from_segment(group.as_slice()))?
        .into_iter()
        .map(|(key, value)| decode(key, &value))
        .collect()
}

/// Everything buffered, for expiry and the unknown-group bound.
pub(crate) fn all(txn: &Transaction) -> Result<Vec<BufferedMessage>, MlsError> {
    txn.scan_prefix(BUFFER_NAMESPACE, &Key::empty())?
        .into_iter()
        .map(|(key, value)| decode(key, &value))
        .collect()
}

/// Buffers `envelope` for `group` at `epoch`, delivered by `source`, within the budgets of
/// `buffer_budget`: it pushes out only entries of lower priority, or is refused with
/// [`MlsError::BufferFull`]. `held_epoch` is the current epoch of a group this device holds.
/// Returns how many entries were pushed out. An entry already under its key stays as it is.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push(
    txn: &mut Transaction,
    config: &MlsConfig,
    held_epoch: &dyn Fn(&GroupId) -> Option<u64>,
    group: &GroupId,
    epoch: u64,
    envelope: &Envelope,
    source: Option<&DeliverySource>,
    now: Timestamp,
) -> Result<usize, MlsError> {
    let entry_key = key(group, epoch, envelope);
    if txn.get(BUFFER_NAMESPACE, &entry_key)?.is_some() {
        return Ok(0);
    }
    let bytes = envelope.to_bytes();
    let current = held_epoch(group);
    let scope: Vec<BufferedMessage> = if current.is_some() {
        for_group(txn, group)?
    } else {
        all(txn)?
            .into_iter()
            .filter(|m| held_epoch(&m.group).is_none())
            .collect()
    };
    let source = source.map(DeliverySource::as_bytes);
    let arrival = Arrival {
        group,
        epoch,
        source,
        bytes: bytes.len(),
    };
    let evicted = buffer_budget::make_room(config, current, &scope, &arrival)?;
    for key in &evicted {
        txn.delete(BUFFER_NAMESPACE, key.clone())?;
        txn.delete(AWAITING_NAMESPACE, key.clone())?;
    }
    let source = source.unwrap_or_default();
    let mut value = Vec::with_capacity(9 + source.len() + bytes.len());
    value.extend_from_slice(&now.unix_millis().to_be_bytes());
    // `DeliverySource` is at most 64 bytes.
    value.push(u8::try_from(source.len()).map_err(|_| MlsError::Internal {
        what: "a delivery source longer than 255 bytes",
    })?);
    value.extend_from_slice(source);
    value.extend_from_slice(&bytes);
    txn.put(BUFFER_NAMESPACE, entry_key, value)?;
    Ok(evicted.len())
}

/// Removes one entry (replayed or dropped), and its mark if it waited for a proposal.
pub(crate) fn remove(txn: &mut Transaction, message: &BufferedMessage) -> Result<(), MlsError> {
    txn.delete(BUFFER_NAMESPACE, message.key.clone())?;
    txn.delete(AWAITING_NAMESPACE, message.key.clone())?;
    Ok(())
}

/// Marks the entry under `key` as a commit waiting for a proposal since `since`, unless it
/// already is (the wait runs from the first time).
pub(crate) fn mark_awaiting(
    txn: &mut Transaction,
    key: &Key,
    since: Timestamp,
) -> Result<(), MlsError> {
    if txn.get(AWAITING_NAMESPACE, key)?.is_none() {
        txn.put(
            AWAITING_NAMESPACE,
            key.clone(),
            since.unix_millis().to_be_bytes().to_vec(),
        )?;
    }
    Ok(())
}

/// Removes the mark under `key` alone.
pub(crate) fn unmark(txn: &mut Transaction, key: &Key) -> Result<(), MlsError> {
    txn.delete(AWAITING_NAMESPACE, key.clone())?;
    Ok(())
}

/// Every marked entry's key, with the time it started waiting (a damaged mark counts as
/// waiting since the epoch: it is given up on at the next `tick`, not kept for ever).
pub(crate) fn awaiting(txn: &Transaction) -> Result<Vec<(Key, Timestamp)>, MlsError> {
    Ok(txn
        .scan_prefix(AWAITING_NAMESPACE, &Key::empty())?
        .into_iter()
        .map(|(key, value)| {
            let since = <[u8; 8]>::try_from(value.as_slice()).map_or(Timestamp::EPOCH, |b| {
                Timestamp::from_unix_millis(u64::from_be_bytes(b))
            });
            (key, since)
        })
        .collect())
}

/// The buffered entry under `key`, if there is one.
pub(crate) fn entry(txn: &Transaction, key: &Key) -> Result<Option<BufferedMessage>, MlsError> {
    txn.get(BUFFER_NAMESPACE, key)?
        .map(|value| decode(key.clone(), &value))
        .transpose()
}

/// Drops entries older than the configured age. Returns how many per group.
pub(crate) fn expire(
    txn: &mut Transaction,
    config: &MlsConfig,
    now: Timestamp,
) -> Result<Vec<(GroupId, usize)>, MlsError> {
    let mut dropped: Vec<(GroupId, usize)> = Vec::new();
    for message in all(txn)? {
        if now.duration_since(message.received_at) >= config.buffer_max_age {
            remove(txn, &message)?;
            match dropped.iter_mut().find(|(g, _)| *g == message.group) {
                Some((_, count)) => *count += 1,
                None => dropped.push((message.group.clone(), 1)),
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // test assertions
mod tests {
    use std::sync::Arc;

    use spacepanda_core::{MemoryStore, SharedStore};

    use super::*;
    use crate::envelope::EnvelopeKind;

    #[test]
    fn copies_with_other_contexts_are_entries_of_their_own_whatever_the_kind() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let mut txn = Transaction::begin(&store);
        let group = GroupId::from_slice(b"group");
        let now = Timestamp::from_unix_millis(1_000);
        for kind in [EnvelopeKind::Welcome, EnvelopeKind::Commit] {
            let payload = vec![kind as u8; 40];
            let genuine = Envelope::with_context(kind, payload.clone(), b"branch history");
            let forged = Envelope::with_context(kind, payload, b"forged history");
            assert_eq!(genuine.id(), forged.id());
            for envelope in [&genuine, &forged, &genuine] {
                let not_held = |_: &GroupId| None;
                push(
                    &mut txn,
                    &MlsConfig::default(),
                    &not_held,
                    &group,
                    7,
                    envelope,
                    None,
                    now,
                )
                .unwrap();
            }
        }
        let entries = for_group(&txn, &group).unwrap();
        assert_eq!(entries.len(), 4, "one entry per kind and context");
        let mut bytes: Vec<Vec<u8>> = entries.into_iter().map(|e| e.envelope_bytes).collect();
        bytes.sort();
        bytes.dedup();
        assert_eq!(bytes.len(), 4, "each context kept as it came");
    }
}
