//! The engine's own records about a group (not OpenMLS's): the `group_meta` namespace, keyed
//! `[group id, name, …]`, and leave requests, in a namespace of their own so that they outlive
//! the group's metadata.
//!
//! This module owns every key and encoding of those records; what to record, and when, stays
//! with the operation that decides it (`commit_policy` counts proposals, `group_removal` marks a
//! removal, `fork_resolution` counts rollbacks). Where this device joined a group from is kept in
//! the same namespace, by `join_records`. The layout is in docs/STORAGE.md.
//!
//! Invariant: records only. Every function works inside the transaction it is given and knows
//! nothing of `MlsClient`, OpenMLS's state or the fork rule.

use spacepanda_core::{Key, Timestamp, Transaction};

use crate::error::MlsError;
use crate::group_id::GroupId;

/// Namespace of per-group metadata of ours: `[group id, name, …]`.
pub(crate) const GROUP_META_NAMESPACE: &str = "group_meta";

/// Namespace of leave requests: `[group id]`.
pub(crate) const LEAVE_NAMESPACE: &str = "leave_request";

/// When this device last replaced its leaf (a self-update or a join): ms since the Unix epoch.
pub(crate) const LEAF_UPDATED_AT: &[u8] = b"leaf_updated_at";
/// When the current epoch's first proposal arrived: ms since the Unix epoch.
pub(crate) const FIRST_PROPOSAL_AT: &[u8] = b"first_proposal_at";
/// How often this device rolled `group` back onto a winning branch.
pub(crate) const SUPERSEDED_COUNTER: &[u8] = b"fork_superseded";
/// The epoch a commit that removed this device created.
const REMOVED: &[u8] = b"removed";
/// How many proposals arrived in an epoch: `[group id, "proposals", epoch]`.
const PROPOSALS: &[u8] = b"proposals";

/// The key of `group`'s record `name`.
pub(crate) fn record_key(group: &GroupId, name: &[u8]) -> Key {
    Key::from_segments([group.as_slice(), name])
}

/// The key of the count of proposals `group` received in `epoch`.
pub(crate) fn proposals_key(group: &GroupId, epoch: u64) -> Key {
    Key::from_segments([group.as_slice(), PROPOSALS, &epoch.to_be_bytes()])
}

/// A counter of `group`'s (0 if never counted or damaged).
pub(crate) fn read_counter(
    txn: &Transaction,
    group: &GroupId,
    name: &[u8],
) -> Result<u64, MlsError> {
    Ok(txn
        .get(GROUP_META_NAMESPACE, &record_key(group, name))?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Adds one to a counter of `group`'s.
pub(crate) fn bump_counter(
    txn: &mut Transaction,
    group: &GroupId,
    name: &[u8],
) -> Result<(), MlsError> {
    let count = read_counter(txn, group, name)?;
    txn.put(
        GROUP_META_NAMESPACE,
        record_key(group, name),
        count.saturating_add(1).to_be_bytes().to_vec(),
    )?;
    Ok(())
}

/// A time recorded under `name` (a damaged record counts as none).
pub(crate) fn read_time(
    txn: &Transaction,
    group: &GroupId,
    name: &[u8],
) -> Result<Option<Timestamp>, MlsError> {
    Ok(txn
        .get(GROUP_META_NAMESPACE, &record_key(group, name))?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(|b| Timestamp::from_unix_millis(u64::from_be_bytes(b))))
}

/// Records `time` under `name`.
pub(crate) fn write_time(
    txn: &mut Transaction,
    group: &GroupId,
    name: &[u8],
    time: Timestamp,
) -> Result<(), MlsError> {
    txn.put(
        GROUP_META_NAMESPACE,
        record_key(group, name),
        time.unix_millis().to_be_bytes().to_vec(),
    )?;
    Ok(())
}

/// Records that this device was removed from `group` by the commit that created `epoch`.
pub(crate) fn mark_removed(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<(), MlsError> {
    txn.put(
        GROUP_META_NAMESPACE,
        record_key(group, REMOVED),
        epoch.to_be_bytes().to_vec(),
    )?;
    Ok(())
}

/// The epoch `group` entered without this device, if it was removed (a damaged record reads
/// as removed at every epoch).
pub(crate) fn removed_at(txn: &Transaction, group: &GroupId) -> Result<Option<u64>, MlsError> {
    Ok(txn
        .get(GROUP_META_NAMESPACE, &record_key(group, REMOVED))?
        .map(|b| <[u8; 8]>::try_from(b.as_slice()).map_or(u64::MAX, u64::from_be_bytes)))
}

/// Forgets that this device was removed from `group` (a rollback restored it).
pub(crate) fn forget_removal(txn: &mut Transaction, group: &GroupId) -> Result<(), MlsError> {
    txn.delete(GROUP_META_NAMESPACE, record_key(group, REMOVED))?;
    Ok(())
}

/// Deletes `group`'s metadata except the records named in `keep` (names of records kept
/// across the group's end).
pub(crate) fn forget_group_keeping(
    txn: &mut Transaction,
    group: &GroupId,
    keep: &[&[u8]],
) -> Result<(), MlsError> {
    let mut kept = Vec::with_capacity(keep.len());
    for name in keep {
        let key = record_key(group, name);
        if let Some(value) = txn.get(GROUP_META_NAMESPACE, &key)? {
            kept.push((key, value));
        }
    }
    forget_group(txn, group)?;
    for (key, value) in kept {
        txn.put(GROUP_META_NAMESPACE, key, value)?;
    }
    Ok(())
}

/// Deletes all of `group`'s metadata.
pub(crate) fn forget_group(txn: &mut Transaction, group: &GroupId) -> Result<(), MlsError> {
    txn.delete_prefix(GROUP_META_NAMESPACE, &Key::from_segment(group.as_slice()))?;
    Ok(())
}

/// Records that this device asked to leave `group`: kept outside the group's metadata, which a
/// removal deletes, so that a rollback that restores the group proposes the leave again.
pub(crate) fn request_leave(txn: &mut Transaction, group: &GroupId) -> Result<(), MlsError> {
    txn.put(
        LEAVE_NAMESPACE,
        Key::from_segment(group.as_slice()),
        vec![1],
    )?;
    Ok(())
}

/// Drops this device's leave request for `group` (it was re-added, or nothing can restore the
/// group any more).
pub(crate) fn forget_leave_request(txn: &mut Transaction, group: &GroupId) -> Result<(), MlsError> {
    txn.delete(LEAVE_NAMESPACE, Key::from_segment(group.as_slice()))?;
    Ok(())
}

/// Whether this device asked to leave `group`.
pub(crate) fn leave_requested(txn: &Transaction, group: &GroupId) -> Result<bool, MlsError> {
    Ok(txn
        .get(LEAVE_NAMESPACE, &Key::from_segment(group.as_slice()))?
        .is_some())
}

/// Every group this device asked to leave.
pub(crate) fn leave_requests(txn: &Transaction) -> Result<Vec<GroupId>, MlsError> {
    Ok(txn
        .scan_keys(LEAVE_NAMESPACE, &Key::empty())?
        .into_iter()
        .filter_map(|key| key.segments().next().map(GroupId::from_slice))
        .collect())
}
