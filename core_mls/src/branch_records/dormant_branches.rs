//! Branches this device left, kept so that it can go back to one exactly as it left it.
//!
//! The fork rule picks the winner of a *set* of commits (see `fork_resolution`), so a device
//! can leave a branch and later have to return to it: a commit that arrives late removes the
//! committer that had beaten the branch. Rebuilding the branch would not do. The device may
//! have processed later commits on it (recorded as seen, never delivered again), made commits
//! on it itself (which OpenMLS cannot process, and which must not be made a second time: two
//! commits of one member in one epoch state are an equivocation), and sent messages in it (a
//! rebuilt state would use the same ratchet generations again). So when a rollback leaves a
//! branch at a fork epoch, everything the branch holds from that epoch on is kept *dormant*:
//! the group's state at the head, what its merges changed outside the group's prefix, and its
//! snapshots with their judged commits. Going back puts all of it back.
//!
//! Layout, under namespace [`DORMANT_NAMESPACE`] and base `[group id, fork epoch u64 BE, ref of
//! the commit the branch merged there]`:
//! - `[base, "m"]` → CBOR: whether the device held the group at the head, the head's epoch,
//!   and the metadata and judged commits of each kept snapshot;
//! - `[base, "h", "p", key]` → an entry of the group's `mls` prefix at the head;
//!   `[base, "h", "u", namespace, key]` → a value outside the prefix at the head (`0` absent,
//!   `1 ‖ value`);
//! - `[base, "s", epoch, "p" | "u", …]` → the state of the branch's snapshot of that epoch.
//!
//! Dormant branches are dropped with the snapshot of their fork epoch (the fork window).
//!
//! This module is the records; the rollback that keeps a branch (`keep_dormant`, in
//! `fork_resolution`) and the competing commit that wakes one (`wake_dormant`, in
//! `competing_commit`) call it with what the engine holds.
//!
//! A part of `branch_records`: its readers are the crate's, its writers (`pub(super)`) only
//! [`BranchRecords`](super::BranchRecords)'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spacepanda_core::{Key, Transaction};
use zeroize::Zeroizing;

use crate::branch_records::epoch_snapshots::{self, Candidate, SnapshotMeta, epoch_key};
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::storage::codec;
use crate::storage::key_layout::GROUP_NAMESPACE;

/// Namespace of dormant branches.
pub(super) const DORMANT_NAMESPACE: &str = "fork_dormant";

const META_ENTRY: &[u8] = b"m";
const HEAD_ENTRY: &[u8] = b"h";
const SNAPSHOT_ENTRY: &[u8] = b"s";

/// What a dormant branch was at its head, and its kept snapshots.
#[derive(Serialize, Deserialize)]
pub(crate) struct DormantMeta {
    /// Whether the device held the group at the head (else it was removed there).
    pub(crate) held: bool,
    pub(crate) head_epoch: u64,
    snapshots: Vec<(u64, SnapshotMeta, Vec<Candidate>)>,
}

fn base(group: &GroupId, epoch: u64, merged_ref: &[u8]) -> Key {
    epoch_key(group, epoch).with(merged_ref)
}

/// Forgets the branches left at `epoch`.
pub(super) fn forget_epoch(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<(), MlsError> {
    txn.delete_prefix(DORMANT_NAMESPACE, &epoch_key(group, epoch))?;
    Ok(())
}

/// Deletes the snapshot of `epoch` and the branches left from it: no rollback can reach that
/// epoch any more. (Here rather than in `epoch_snapshots`, which the branches are built on.)
pub(super) fn expire_snapshot(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<(), MlsError> {
    epoch_snapshots::delete(txn, group, epoch)?;
    forget_epoch(txn, group, epoch)
}

/// Forgets the branches left at epochs before `oldest` (all if `None`: no snapshot is kept, so
/// no rollback can lead back to any).
pub(super) fn forget_before(
    txn: &mut Transaction,
    group: &GroupId,
    oldest: Option<u64>,
) -> Result<(), MlsError> {
    for (key, _) in txn.scan_prefix(DORMANT_NAMESPACE, &Key::from_segment(group.as_slice()))? {
        let epoch = epoch_snapshots::epoch_of(&key).unwrap_or(0);
        if oldest.is_none_or(|oldest| epoch < oldest) {
            txn.delete(DORMANT_NAMESPACE, key)?;
        }
    }
    Ok(())
}

/// Inside the open transaction, before `group` is put back in `epoch`: keeps the branch it is
/// on from that epoch on (`metas`: its snapshots from `epoch` on, oldest first), under the
/// commit it merged there. `held`: whether the device holds the group at the head, at
/// `head_epoch`, with the entries `head_prefix` of its `mls` prefix.
pub(super) fn keep(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    metas: &[(u64, SnapshotMeta)],
    held: bool,
    head_epoch: u64,
    head_prefix: &[(Key, Vec<u8>)],
) -> Result<(), MlsError> {
    let Some((_, fork)) = metas.first() else {
        return Ok(());
    };
    let base = base(group, epoch, &fork.merged.commit_ref);
    txn.delete_prefix(DORMANT_NAMESPACE, &base)?;
    let mut snapshots = Vec::with_capacity(metas.len());
    // Every key outside the prefix the branch's merges changed, as the head has it.
    let mut outside: BTreeMap<(String, Key), Option<Vec<u8>>> = BTreeMap::new();
    for (snapshot_epoch, meta) in metas {
        let (prefix, undo) = epoch_snapshots::contents(txn, group, *snapshot_epoch)?;
        for (namespace, key, _) in &undo {
            let now = txn.get(namespace, key)?;
            outside.insert((namespace.clone(), key.clone()), now);
        }
        let undo = undo
            .iter()
            .map(|(namespace, key, prior)| (namespace.as_str(), key, prior.as_deref()));
        let at = base
            .clone()
            .with(SNAPSHOT_ENTRY)
            .with(snapshot_epoch.to_be_bytes());
        epoch_snapshots::write_state(txn, DORMANT_NAMESPACE, &at, &prefix, undo)?;
        let candidates = epoch_snapshots::candidates(txn, group, *snapshot_epoch)?;
        // The Welcome goes with the metadata; `epoch_snapshots::store` splits it out again.
        let mut meta = meta.clone();
        meta.welcome = epoch_snapshots::welcome(txn, group, *snapshot_epoch, &meta)?;
        snapshots.push((*snapshot_epoch, meta, candidates));
    }
    let head_outside = outside
        .iter()
        .map(|((namespace, key), value)| (namespace.as_str(), key, value.as_deref()));
    let head = base.clone().with(HEAD_ENTRY);
    epoch_snapshots::write_state(txn, DORMANT_NAMESPACE, &head, head_prefix, head_outside)?;
    let meta = DormantMeta {
        held,
        head_epoch,
        snapshots,
    };
    txn.put(
        DORMANT_NAMESPACE,
        base.clone().with(META_ENTRY),
        codec::encode(&meta)?,
    )?;
    Ok(())
}

/// The branch left at `epoch` with the commit `merged_ref`, if one is kept.
pub(crate) fn dormant(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
    merged_ref: &[u8],
) -> Result<Option<DormantMeta>, MlsError> {
    let base = base(group, epoch, merged_ref);
    txn.get(DORMANT_NAMESPACE, &base.clone().with(META_ENTRY))?
        .map(|bytes| codec::decode::<DormantMeta>(DORMANT_NAMESPACE, &bytes))
        .transpose()
}

/// Inside the open transaction, with `group` put back in `epoch` and its `mls` prefix emptied:
/// writes back the branch `meta` left there with the commit `merged_ref`, as it was left, and
/// forgets it as dormant.
pub(super) fn restore(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    merged_ref: &[u8],
    meta: &DormantMeta,
) -> Result<(), MlsError> {
    let base = base(group, epoch, merged_ref);
    let (prefix, outside) =
        epoch_snapshots::read_state(txn, DORMANT_NAMESPACE, &base.clone().with(HEAD_ENTRY))?;
    for (key, value) in prefix {
        txn.put(GROUP_NAMESPACE, key, value)?;
    }
    for (namespace, key, value) in outside {
        match value {
            Some(value) => txn.put(&namespace, key, value)?,
            None => txn.delete(&namespace, key)?,
        }
    }
    for (snapshot_epoch, snapshot_meta, candidates) in &meta.snapshots {
        let at = base
            .clone()
            .with(SNAPSHOT_ENTRY)
            .with(snapshot_epoch.to_be_bytes());
        let (prefix, undo) = epoch_snapshots::read_state(txn, DORMANT_NAMESPACE, &at)?;
        let undo = undo
            .into_iter()
            .map(|(namespace, key, prior)| (namespace, key, prior.map(Zeroizing::new)))
            .collect();
        epoch_snapshots::store(txn, group, *snapshot_epoch, &prefix, undo, snapshot_meta)?;
        epoch_snapshots::set_candidates(txn, group, *snapshot_epoch, candidates)?;
    }
    txn.delete_prefix(DORMANT_NAMESPACE, &base)?;
    Ok(())
}
