//! The branch a group took before the fork window: for each epoch whose snapshot has expired,
//! the commit this device merged out of it and the other commits of that epoch it judged.
//!
//! Why: two halves of a group that forked further back than the window cannot roll back, and
//! one of them rejoins the other by external commit (`external_join`). Which half moves must
//! not depend on when a device asks: if it were judged on the two branches' current epochs, a
//! device asking before a commit and one asking after it would move in opposite directions and
//! the group would split for good. With the lineage, every device finds the epoch where the two
//! signed branch histories part and applies the fork rule to the commits of that epoch, the
//! same answer whenever and whoever asks, as if those commits had met inside the window.
//!
//! Layout: [`NAMESPACE`] `[group id, epoch (u64 BE)]` → [`EpochBranch`](crate::branch_order::EpochBranch) (CBOR). An entry is
//! written when its epoch's snapshot expires (it can no longer be rolled back, so it is final
//! on this device) and deleted once it is [`LINEAGE_EPOCHS`] behind the newest, when this
//! device leaves the branch (an external join, a Welcome onto another branch) or stops
//! holding the group.
//!
//! Learned commits: [`LEARNED_NAMESPACE`] `[group id, epoch (u64 BE)]` →
//! [`EpochBranch`](crate::branch_order::EpochBranch) (CBOR): commits of an epoch that other
//! members judged there and this device never saw, from the signed claims of the commits it
//! merged (`signed_context`), with the merged commit they were judged against. They are added
//! to the epoch's `others` wherever this device's branch merged that same commit, and go
//! with the lineage (trimmed at the same age, dropped when it is).
//!
//! Invariant: this module knows nothing of OpenMLS; it keeps ranks the fork rule computed.
//!
//! A part of `branch_records`: its readers are the crate's, its writers (`pub(super)`) only
//! [`BranchRecords`](super::BranchRecords)'s.

use spacepanda_core::{Key, Transaction};

use crate::branch_order::{BranchHistory, EpochBranch};
use crate::branch_records::dormant_branches;
use crate::branch_records::epoch_snapshots::{self, epoch_key, epoch_of};
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::storage::codec;

/// Where lineage entries live.
pub(crate) const NAMESPACE: &str = "branch_lineage";

/// Where learned commits live.
pub(super) const LEARNED_NAMESPACE: &str = "branch_lineage_learned";

/// How many learned commits one epoch keeps at most: a member's claim cannot grow this
/// device's records without bound.
const LEARNED_PER_EPOCH: usize = 16;

/// How many epochs back the lineage reaches. A fork older than that is judged on the two
/// branches' current states (`rejoin_advice`). About 70 bytes an epoch in every GroupInfo
/// and Welcome this device sends.
pub(crate) const LINEAGE_EPOCHS: u64 = 256;

/// Inside the open transaction, just before the snapshot of `epoch` expires for good (the
/// window moved past it, or it aged out): keeps what it said of the branch.
pub(super) fn retire_snapshot(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<(), MlsError> {
    if let Some(meta) = epoch_snapshots::meta(txn, group, epoch)? {
        let branch = epoch_snapshots::epoch_branch(txn, group, epoch, meta.merged)?;
        txn.put(NAMESPACE, epoch_key(group, epoch), codec::encode(&branch)?)?;
        // Snapshots retire one epoch after the other, so the entry that falls out of reach is
        // this one (a jump by Welcome trims in `keep_common_prefix`); no scan per commit.
        if let Some(old) = epoch.checked_sub(LINEAGE_EPOCHS + 1) {
            txn.delete(NAMESPACE, epoch_key(group, old))?;
            txn.delete(LEARNED_NAMESPACE, epoch_key(group, old))?;
        }
    }
    dormant_branches::expire_snapshot(txn, group, epoch)
}

/// The lineage of `group`, oldest epoch first.
pub(crate) fn read(txn: &Transaction, group: &GroupId) -> Result<BranchHistory, MlsError> {
    epochs_of(txn, NAMESPACE, group)
}

/// The `[group, epoch]` entries of `namespace` for `group`, oldest epoch first.
fn epochs_of(
    txn: &Transaction,
    namespace: &'static str,
    group: &GroupId,
) -> Result<BranchHistory, MlsError> {
    let mut history = Vec::new();
    for (key, bytes) in txn.scan_prefix(namespace, &Key::from_segment(group.as_slice()))? {
        let epoch = epoch_of(&key).ok_or(MlsError::corrupted(namespace, "key has no epoch"))?;
        history.push((epoch, codec::decode(namespace, &bytes)?));
    }
    // Sealed stores scan in an unspecified order.
    history.sort_by_key(|(epoch, _)| *epoch);
    Ok(history)
}

/// Drops the whole lineage of `group` (this device left that branch or the group).
pub(super) fn forget(txn: &mut Transaction, group: &GroupId) -> Result<(), MlsError> {
    txn.delete_prefix(NAMESPACE, &Key::from_segment(group.as_slice()))?;
    txn.delete_prefix(LEARNED_NAMESPACE, &Key::from_segment(group.as_slice()))?;
    Ok(())
}

/// The commits learned of `group`'s epochs, oldest epoch first: each with the merged commit
/// they were judged against.
pub(crate) fn learned(txn: &Transaction, group: &GroupId) -> Result<BranchHistory, MlsError> {
    epochs_of(txn, LEARNED_NAMESPACE, group)
}

/// Inside the open transaction, on a commit this device merged: what its committer judged
/// (`theirs`) of epochs where `ours` (this device's branch history) merged the same commit.
/// Keeps every commit of those epochs that `ours` does not know; returns how many.
pub(super) fn learn(
    txn: &mut Transaction,
    group: &GroupId,
    ours: &BranchHistory,
    theirs: &BranchHistory,
) -> Result<usize, MlsError> {
    let mut count = 0;
    for (epoch, their_branch) in theirs {
        let Some((_, our_branch)) = ours.iter().find(|(e, _)| e == epoch) else {
            continue;
        };
        if our_branch.merged.commit_ref != their_branch.merged.commit_ref {
            continue;
        }
        let key = epoch_key(group, *epoch);
        let mut kept: EpochBranch = match txn.get(LEARNED_NAMESPACE, &key)? {
            Some(bytes) => codec::decode(LEARNED_NAMESPACE, &bytes)?,
            None => EpochBranch {
                merged: our_branch.merged.clone(),
                others: Vec::new(),
            },
        };
        let before = kept.others.len();
        for rank in &their_branch.others {
            let known = rank.commit_ref == our_branch.merged.commit_ref
                || our_branch
                    .others
                    .iter()
                    .any(|o| o.commit_ref == rank.commit_ref)
                || kept.others.iter().any(|o| o.commit_ref == rank.commit_ref);
            if !known && kept.others.len() < LEARNED_PER_EPOCH {
                kept.others.push(rank.clone());
            }
        }
        if kept.others.len() > before {
            count += kept.others.len() - before;
            txn.put(LEARNED_NAMESPACE, key, codec::encode(&kept)?)?;
        }
    }
    Ok(count)
}

/// On a Welcome that puts this device on the branch `theirs` describes: keeps only the part
/// of the lineage that branch went through too. That is proven where both name a commit for
/// the same epoch and they agree on all of them (one commit fixes every epoch before it), and
/// the Welcome's history then covers the rest. Anything else is dropped.
pub(super) fn keep_common_prefix(
    txn: &mut Transaction,
    group: &GroupId,
    theirs: &BranchHistory,
) -> Result<(), MlsError> {
    let ours = read(txn, group)?;
    let mut overlap = false;
    let mut agree = true;
    for (epoch, branch) in &ours {
        if let Some((_, their_branch)) = theirs.iter().find(|(e, _)| e == epoch) {
            overlap = true;
            agree &= their_branch.merged.commit_ref == branch.merged.commit_ref;
        }
    }
    if !overlap || !agree {
        return forget(txn, group);
    }
    let first_theirs = theirs.iter().map(|(e, _)| *e).min().unwrap_or(u64::MAX);
    let newest = theirs.iter().map(|(e, _)| *e).max().unwrap_or(0);
    for (epoch, _) in ours {
        if epoch >= first_theirs || epoch.saturating_add(LINEAGE_EPOCHS) < newest {
            txn.delete(NAMESPACE, epoch_key(group, epoch))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::Arc;

    use spacepanda_core::{MemoryStore, SharedStore};

    use super::*;
    use crate::branch_order::{CommitRank, EpochBranch};

    fn branch(commit_ref: u8) -> EpochBranch {
        EpochBranch {
            merged: CommitRank {
                commit_ref: vec![commit_ref; 32],
                committer: u32::from(commit_ref),
                removes: Vec::new(),
                priority: [commit_ref; crate::branch_order::PRIORITY_LEN],
            },
            others: Vec::new(),
        }
    }

    /// A lineage of epochs 1..=5 (refs equal to the epoch), and `theirs` as a Welcome's
    /// history of `(epoch, ref)`; returns the epochs kept.
    fn kept_after_welcome(theirs: &[(u64, u8)]) -> Vec<u64> {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let mut txn = Transaction::begin(&store);
        let group = GroupId::from_slice(b"group");
        for epoch in 1..=5u64 {
            let encoded = codec::encode(&branch(epoch as u8)).unwrap();
            txn.put(NAMESPACE, epoch_key(&group, epoch), encoded)
                .unwrap();
        }
        let theirs: BranchHistory = theirs.iter().map(|(e, r)| (*e, branch(*r))).collect();
        keep_common_prefix(&mut txn, &group, &theirs).unwrap();
        read(&txn, &group)
            .unwrap()
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    }

    #[test]
    fn a_welcome_of_the_same_branch_keeps_what_it_does_not_cover() {
        assert_eq!(
            kept_after_welcome(&[(3, 3), (4, 4), (5, 5), (6, 9)]),
            [1, 2]
        );
    }

    #[test]
    fn a_welcome_of_another_branch_or_out_of_reach_drops_the_lineage() {
        // They disagree at epoch 4: the branches parted at or before it.
        assert!(kept_after_welcome(&[(3, 3), (4, 8), (5, 8)]).is_empty());
        // No epoch in common: nothing proves the lineage is on the Welcome's branch.
        assert!(kept_after_welcome(&[(7, 7), (8, 8)]).is_empty());
    }
}
