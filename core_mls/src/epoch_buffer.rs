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
//! `received_at (u64 BE ms) ‖ envelope bytes`. Epoch-major keys make "everything for epoch e"
//! a prefix scan, in arrival-independent order. Namespace [`AWAITING_NAMESPACE`], same key:
//! `since (u64 BE ms)`, for a buffered commit that waits for a proposal; deleted with its entry.

use spacepanda_core::{Key, Timestamp, Transaction};

use crate::client::MlsClient;
use crate::config::MlsConfig;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::events::{Disposition, Event, Output};
use crate::group_id::GroupId;

/// Namespace of buffered envelopes.
pub(crate) const BUFFER_NAMESPACE: &str = "epoch_buffer";
/// Namespace of the marks of buffered commits that wait for a proposal.
pub(crate) const AWAITING_NAMESPACE: &str = "epoch_buffer_awaiting";

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
        remove(txn, entry)?;
        count -= 1;
        total_bytes -= entry.envelope_bytes.len();
        evicted += 1;
    }
    Ok(evicted)
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

impl MlsClient {
    /// Keeps `envelope` for `group` at `epoch` until the group can process it (one
    /// transaction). `buffered`: it already is in the buffer and stays there.
    pub(crate) fn buffer(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        self.buffer_marked(envelope, group, epoch, buffered, false)
    }

    /// [`buffer`](Self::buffer) for a commit that references a proposal not received yet: it
    /// is marked, so that `tick` gives up on it after `commit_proposal_wait`.
    pub(crate) fn buffer_awaiting_proposal(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        let output = self.buffer_marked(envelope, group, epoch, buffered, true)?;
        // A proposal refused in that epoch may be the one it waits for: `tick` checks.
        let now = self.now();
        self.refused.commit_waits(group, epoch, now);
        Ok(output)
    }

    fn buffer_marked(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
        awaiting_proposal: bool,
    ) -> Result<Output, MlsError> {
        let mut output = Output {
            disposition: Disposition::Buffered,
            ..Output::default()
        };
        let now = self.now();
        let entry_key = key(group, epoch, envelope);
        if buffered.is_some() {
            // Already in the buffer, still not processable: leave it there.
            if awaiting_proposal {
                self.transaction(None, |client| {
                    client.with_txn(|txn| mark_awaiting(txn, &entry_key, now))
                })?;
            }
            return Ok(output);
        }
        let evicted = self.transaction(None, |client| {
            let member_of: Vec<GroupId> = client.groups.keys().cloned().collect();
            let is_member = |g: &GroupId| member_of.contains(g);
            let config = client.config.clone();
            client.with_txn(|txn| {
                let evicted = push(txn, &config, group, &is_member, epoch, envelope, now)?;
                // Evicted at once when over the bounds: then there is nothing to mark.
                if awaiting_proposal && txn.get(BUFFER_NAMESPACE, &entry_key)?.is_some() {
                    mark_awaiting(txn, &entry_key, now)?;
                }
                Ok(evicted)
            })
        })?;
        if evicted > 0 {
            output.events.push(Event::BufferedDropped {
                group: self.groups.contains_key(group).then(|| group.clone()),
                count: evicted,
            });
        }
        Ok(output)
    }
}
