//! The commits this device judged, per group, for as long as it holds the group.
//!
//! Two records, both in namespace [`COMMIT_LOG_NAMESPACE`] under the key prefix `[group id]`
//! (so forgetting a group is one prefix):
//!
//! - **the index**, key `[group id, "id", epoch (u64 BE), envelope id]`, empty value: every
//!   commit merged here (received or our own) and every competing commit refused as
//!   superseded. De-duplication records expire after `dedup_retention`; without the index, an
//!   old commit replayed after that — by anyone who kept the envelope — would be judged again,
//!   find no snapshot of its epoch, and raise [`MlsError::ForkOutsideWindow`]: a false "the
//!   group may have forked for good" at an attacker's will. With it, a commit already judged
//!   is a [`Disposition::Duplicate`] whatever its age. One key of ≈ 50 bytes per epoch.
//! - **the log**, key `[group id, "env", epoch (u64 BE)]`, value `merged_at (u64 BE ms) ‖`
//!   the envelope bytes of the commit merged in that epoch (the one that ended it, on our branch), kept for the last
//!   `fork_window_epochs` epochs: what [`MlsClient::recent_commits`] hands to a member that
//!   asks for a commit it missed (see [`Event::MissingCommit`](crate::Event::MissingCommit)).
//!   A rollback leaves entries of the abandoned branch behind; they are cut off by the current
//!   epoch when read and overwritten when the winning branch's commits are merged.
//!
//! - **the alert mark**, key `[group id, "alert"]`, value the epoch (u64 BE) that
//!   [`Event::MissingCommit`](crate::Event::MissingCommit) was last reported for (see
//!   `missing_commit`).
//!
//! All are written in the transaction that merges (or refuses) the commit. `tick` forgets a
//! group's records once the group is neither held nor restorable (no snapshot left).
//!
//! [`MlsClient::recent_commits`]: crate::MlsClient::recent_commits
//! [`Disposition::Duplicate`]: crate::Disposition::Duplicate

use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, ProtocolMessage};
use spacepanda_core::{Key, Timestamp, Transaction};
use tls_codec::Deserialize as _;

use crate::envelope::{Envelope, EnvelopeId};
use crate::error::MlsError;
use crate::group_id::GroupId;

/// Namespace of the commit index and log.
pub(crate) const COMMIT_LOG_NAMESPACE: &str = "commit_log";

const INDEX: &[u8] = b"id";
const LOG: &[u8] = b"env";

fn index_key(group: &GroupId, epoch: u64, id: EnvelopeId) -> Key {
    Key::from_segments([group.as_slice(), INDEX, &epoch.to_be_bytes(), id.as_bytes()])
}

fn log_key(group: &GroupId, epoch: u64) -> Key {
    Key::from_segments([group.as_slice(), LOG, &epoch.to_be_bytes()])
}

fn log_prefix(group: &GroupId) -> Key {
    Key::from_segments([group.as_slice(), LOG])
}

/// The epoch of the key's third segment, if it is one.
fn key_epoch(key: &Key) -> Option<u64> {
    key.segments()
        .nth(2)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
}

/// Records a competing commit of `epoch` that was judged and refused (superseded).
pub(crate) fn record_judged(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    id: EnvelopeId,
) -> Result<(), MlsError> {
    txn.put(
        COMMIT_LOG_NAMESPACE,
        index_key(group, epoch, id),
        Vec::new(),
    )?;
    Ok(())
}

/// Records the commit merged in `epoch` (it ended that epoch): in the index, and in the log,
/// which keeps the last `keep_epochs` epochs and drops what a rollback left above `epoch`.
pub(crate) fn record_merged(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    envelope: &Envelope,
    keep_epochs: u64,
    now: Timestamp,
) -> Result<(), MlsError> {
    record_judged(txn, group, epoch, envelope.id())?;
    let oldest_kept = epoch.saturating_sub(keep_epochs.saturating_sub(1));
    for (key, _) in txn.scan_prefix(COMMIT_LOG_NAMESPACE, &log_prefix(group))? {
        // A damaged key says nothing worth keeping.
        if key_epoch(&key).is_none_or(|e| e < oldest_kept || e > epoch) {
            txn.delete(COMMIT_LOG_NAMESPACE, key)?;
        }
    }
    let mut value = now.unix_millis().to_be_bytes().to_vec();
    value.extend_from_slice(&envelope.to_bytes());
    txn.put(COMMIT_LOG_NAMESPACE, log_key(group, epoch), value)?;
    Ok(())
}

/// The commits merged on the current branch that the log keeps: (epoch, envelope bytes).
pub(crate) fn merged(txn: &Transaction, group: &GroupId) -> Result<Vec<(u64, Vec<u8>)>, MlsError> {
    let mut merged = Vec::new();
    for (key, bytes) in txn.scan_prefix(COMMIT_LOG_NAMESPACE, &log_prefix(group))? {
        // A damaged entry has no envelope to give.
        if let (Some(epoch), Some((_, envelope))) =
            (key_epoch(&key), bytes.split_first_chunk::<8>())
        {
            merged.push((epoch, envelope.to_vec()));
        }
    }
    Ok(merged)
}

/// Whether the commit `id` of `epoch` was judged here before.
pub(crate) fn judged(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
    id: EnvelopeId,
) -> Result<bool, MlsError> {
    Ok(txn
        .get(COMMIT_LOG_NAMESPACE, &index_key(group, epoch, id))?
        .is_some())
}

/// When the group reached `epoch` by a commit merged here (`None`: it did not, e.g. it was
/// joined at that epoch, or the record is gone).
pub(crate) fn reached_at(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<Option<Timestamp>, MlsError> {
    let Some(previous) = epoch.checked_sub(1) else {
        return Ok(None);
    };
    Ok(txn
        .get(COMMIT_LOG_NAMESPACE, &log_key(group, previous))?
        .and_then(|value| value.first_chunk::<8>().copied())
        .map(|ms| Timestamp::from_unix_millis(u64::from_be_bytes(ms))))
}

/// Every group with records.
pub(crate) fn groups(txn: &Transaction) -> Result<Vec<GroupId>, MlsError> {
    let mut groups: Vec<GroupId> = Vec::new();
    for (key, _) in txn.scan_prefix(COMMIT_LOG_NAMESPACE, &Key::empty())? {
        if let Some(group) = key.segments().next().map(GroupId::from_slice)
            && groups.last() != Some(&group)
        {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// The epoch a commit envelope was made in, read from its MLS message (`None` if it has none).
pub(crate) fn commit_epoch(envelope: &Envelope) -> Option<u64> {
    let message = MlsMessageIn::tls_deserialize_exact(envelope.payload()).ok()?;
    let protocol = match message.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => ProtocolMessage::from(m),
        MlsMessageBodyIn::PublicMessage(m) => ProtocolMessage::from(m),
        _ => return None,
    };
    Some(protocol.epoch().as_u64())
}

/// The envelope bytes of the commits merged in `group` from epoch `from_epoch` on, oldest first,
/// up to the current epoch `current` and without gaps (see `MlsClient::recent_commits`).
pub(crate) fn recent(
    txn: &Transaction,
    group: &GroupId,
    from_epoch: u64,
    current: u64,
) -> Result<Vec<Vec<u8>>, MlsError> {
    let entries = txn.scan_prefix(COMMIT_LOG_NAMESPACE, &log_prefix(group))?;
    let mut commits = Vec::new();
    let mut next = from_epoch;
    for (key, bytes) in entries {
        let Some(epoch) = key_epoch(&key) else {
            continue;
        };
        if epoch < next {
            continue;
        }
        // Of the current branch only, and without gaps: a gap cannot be replayed across.
        if epoch != next || epoch >= current {
            break;
        }
        // A damaged value has no envelope to give.
        if let Some((_, envelope)) = bytes.split_first_chunk::<8>() {
            commits.push(envelope.to_vec());
        }
        next += 1;
    }
    Ok(commits)
}

/// Forgets the records of groups that are not `held` and that no kept snapshot can restore.
pub(crate) fn forget_unrestorable(txn: &mut Transaction, held: &[GroupId]) -> Result<(), MlsError> {
    for group in groups(txn)? {
        if !held.contains(&group)
            && crate::branch_records::epoch_snapshots::metas(txn, &group)?.is_empty()
        {
            for (key, _) in
                txn.scan_prefix(COMMIT_LOG_NAMESPACE, &Key::from_segment(group.as_slice()))?
            {
                txn.delete(COMMIT_LOG_NAMESPACE, key)?;
            }
        }
    }
    Ok(())
}
