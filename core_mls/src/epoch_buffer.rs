//! Messages that arrived too early: from an epoch this device has not reached yet, or for a
//! group it has not joined yet (its Welcome may still be on the way). They are kept durably,
//! bounded per group by count, bytes and age, and replayed automatically once the group reaches
//! their epoch.
//!
//! Layout: namespace [`BUFFER_NAMESPACE`], key `[group id, epoch (u64 BE), message id]`, value
//! `received_at (u64 BE ms) ‖ envelope bytes`. Epoch-major keys make "everything for epoch e"
//! a prefix scan, in arrival-independent order.

use spacepanda_core::{Key, Timestamp, Transaction};

use crate::config::MlsConfig;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::group_id::GroupId;

/// Namespace of buffered envelopes.
pub(crate) const BUFFER_NAMESPACE: &str = "epoch_buffer";

/// One buffered envelope.
#[derive(Debug, Clone)]
pub(crate) struct BufferedMessage {
    pub(crate) key: Key,
    pub(crate) group: GroupId,
    pub(crate) epoch: u64,
    pub(crate) received_at: Timestamp,
    pub(crate) envelope_bytes: Vec<u8>,
}

fn key(group: &GroupId, epoch: u64, envelope: &Envelope) -> Key {
    Key::from_segments([
        group.as_slice(),
        &epoch.to_be_bytes(),
        envelope.id().as_bytes(),
    ])
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
    let (received_at, envelope_bytes) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupted("buffer value truncated"))?;
    Ok(BufferedMessage {
        key: key.clone(),
        group,
        epoch,
        received_at: Timestamp::from_unix_millis(u64::from_be_bytes(*received_at)),
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

/// Buffers `envelope` for `group` at `epoch`, evicting the oldest entries beyond the bounds.
/// Groups we are in have a bound each; groups we are not in (`is_member` false) share one small
/// bound, because anyone can invent group ids. Returns how many entries were evicted.
pub(crate) fn push(
    txn: &mut Transaction,
    config: &MlsConfig,
    group: &GroupId,
    is_member: &dyn Fn(&GroupId) -> bool,
    epoch: u64,
    envelope: &Envelope,
    now: Timestamp,
) -> Result<usize, MlsError> {
    let bytes = envelope.to_bytes();
    let mut value = Vec::with_capacity(8 + bytes.len());
    value.extend_from_slice(&now.unix_millis().to_be_bytes());
    value.extend_from_slice(&bytes);
    txn.put(BUFFER_NAMESPACE, key(group, epoch, envelope), value)?;

    let (mut entries, max_messages) = if is_member(group) {
        (for_group(txn, group)?, config.buffer_max_messages)
    } else {
        let strangers: Vec<_> = all(txn)?
            .into_iter()
            .filter(|m| !is_member(&m.group))
            .collect();
        (strangers, config.unknown_group_max_messages)
    };
    let max_bytes = config.buffer_max_bytes;
    // Oldest first; evict from the front until within bounds.
    entries.sort_by_key(|m| m.received_at);
    let mut total_bytes: usize = entries.iter().map(|m| m.envelope_bytes.len()).sum();
    let mut count = entries.len();
    let mut evicted = 0;
    for entry in &entries {
        if count <= max_messages && total_bytes <= max_bytes {
            break;
        }
        txn.delete(BUFFER_NAMESPACE, entry.key.clone())?;
        count -= 1;
        total_bytes -= entry.envelope_bytes.len();
        evicted += 1;
    }
    Ok(evicted)
}

/// Removes one entry (replayed or dropped).
pub(crate) fn remove(txn: &mut Transaction, message: &BufferedMessage) -> Result<(), MlsError> {
    txn.delete(BUFFER_NAMESPACE, message.key.clone())?;
    Ok(())
}

/// Drops entries older than the configured age. Returns how many per group.
pub(crate) fn expire(
    txn: &mut Transaction,
    config: &MlsConfig,
    now: Timestamp,
) -> Result<Vec<(GroupId, usize)>, MlsError> {
    let mut dropped: Vec<(GroupId, usize)> = Vec::new();
    for message in all(txn)? {
        if now.duration_since(message.received_at) > config.buffer_max_age {
            remove(txn, &message)?;
            match dropped.iter_mut().find(|(g, _)| *g == message.group) {
                Some((_, count)) => *count += 1,
                None => dropped.push((message.group.clone(), 1)),
            }
        }
    }
    Ok(dropped)
}
