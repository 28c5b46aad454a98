//! Taking snapshots of a group's OpenMLS state, for `branch_records` to keep: `begin_snapshot`
//! copies the group's prefix before a commit is merged, `finish_snapshot` hands it with the
//! merged commit to `BranchRecords::after_merge`, `snapshot_as_ended_by` keeps the held epoch
//! for a Welcome that moves the group on without us, and `expire_snapshots` (`tick`) runs
//! `BranchRecords::expire` with the epochs of the groups held.
//!
//! The design: docs/FORKS.md.

use std::collections::BTreeMap;

use openmls::prelude::OpenMlsProvider as _;
use spacepanda_core::Timestamp;

use crate::branch_order::branch_tag;
use crate::branch_order::{CommitRank, EpochBranch};
use crate::branch_records::epoch_snapshots::{Candidate, OwnCommit, SnapshotMeta};
use crate::branch_records::{BranchRecords, MergedCommit, SnapshotStart};
use crate::client::MlsClient;
use crate::error::MlsError;
use crate::group_id::GroupId;

impl MlsClient {
    /// Inside the open transaction, before a commit out of the group's current epoch is made
    /// or processed: captures the group's prefix and starts the undo log.
    pub(crate) fn begin_snapshot(&self, group: &GroupId) -> Result<SnapshotStart, MlsError> {
        let mls_group = self.group(group)?;
        let epoch = mls_group.epoch().as_u64();
        let branch_tag = branch_tag(mls_group);
        let confirmed_transcript_hash = transcript_hash(mls_group);
        let entries = self.provider.storage().group_entries(&group.to_openmls())?;
        self.with_txn(|txn| {
            BranchRecords::of(txn, group).before_merge();
            Ok(())
        })?;
        Ok(SnapshotStart {
            epoch,
            branch_tag,
            confirmed_transcript_hash,
            entries,
        })
    }

    /// After the merge, in the same transaction: stores the snapshot with the rank and envelope
    /// of the commit merged (and our intent, if it was ours), and drops what the window no
    /// longer covers.
    pub(crate) fn finish_snapshot(
        &self,
        group: &GroupId,
        start: SnapshotStart,
        merged: CommitRank,
        envelope: Vec<u8>,
        own_commit: Option<OwnCommit>,
        external_joiner: Option<&crate::DeviceAddress>,
    ) -> Result<(), MlsError> {
        let now = self.now();
        let merged = MergedCommit {
            rank: merged,
            envelope,
            own_commit,
            external_joiner: external_joiner.cloned(),
        };
        self.with_txn(|txn| {
            BranchRecords::of(txn, group).after_merge(&start, merged, now, &self.config)
        })
    }

    /// Inside the open transaction: keeps the group's current epoch as a snapshot, as if this
    /// device had merged the commit `merged` out of it (a Welcome says the group went on from
    /// it with that commit, without us).
    pub(crate) fn snapshot_as_ended_by(
        &self,
        group: &GroupId,
        ended: EpochBranch,
    ) -> Result<(), MlsError> {
        if self.config.fork_window_epochs == 0 {
            return Ok(());
        }
        let mls_group = self.group(group)?;
        let epoch = mls_group.epoch().as_u64();
        let meta = SnapshotMeta {
            taken_at_ms: self.now().unix_millis(),
            branch_tag: branch_tag(mls_group),
            confirmed_transcript_hash: transcript_hash(mls_group),
            merged: ended.merged.clone(),
            own_commit: None,
            welcome: None,
            external_joiner: None,
            carried_removals: Vec::new(),
        };
        let entries = self.provider.storage().group_entries(&group.to_openmls())?;
        // Known from the Welcome's history only: they cannot be processed again here, but they
        // count in the set a later competing commit is judged against.
        let candidates: Vec<Candidate> = std::iter::once(ended.merged)
            .chain(ended.others)
            .map(|rank| Candidate {
                rank,
                envelope: Vec::new(),
            })
            .collect();
        self.with_txn(|txn| {
            BranchRecords::of(txn, group).ended_by_welcome(epoch, &entries, &meta, &candidates)
        })
    }

    /// `tick`: drops snapshots older than the fork window (also of groups this device was
    /// removed from on a branch that may still lose).
    pub(crate) fn expire_snapshots(&self, now: Timestamp) -> Result<(), MlsError> {
        let held: BTreeMap<GroupId, u64> = self
            .groups
            .iter()
            .map(|(group, state)| (group.clone(), state.epoch().as_u64()))
            .collect();
        self.with_txn(|txn| BranchRecords::expire(txn, now, &held, &self.config))
    }
}

/// The epoch's confirmed transcript hash: what a GroupInfo of that epoch states, so a device
/// can tell whether a member's GroupInfo is of its own branch (see `external_join`).
fn transcript_hash(group: &openmls::prelude::MlsGroup) -> Vec<u8> {
    group
        .public_group()
        .group_context()
        .confirmed_transcript_hash()
        .to_vec()
}
