//! Taking and expiring snapshots (records in `epoch_snapshots`): `begin_snapshot` copies the
//! group's OpenMLS prefix and starts the undo log before a commit is merged, `finish_snapshot`
//! stores both with the merged commit's rank, `snapshot_as_ended_by` keeps the held epoch for a
//! Welcome that moves the group on without us, and `finish_snapshot` and `expire_snapshots`
//! (`tick`) retire what leaves the window to the branch lineage.
//!
//! The design: docs/FORKS.md.

use openmls::prelude::OpenMlsProvider as _;
use spacepanda_core::{Key, Timestamp};

use crate::branch_lineage;
use crate::branch_order::branch_tag;
use crate::branch_order::{CommitRank, EpochBranch};
use crate::client::MlsClient;
use crate::epoch_snapshots::{self, Candidate, OwnCommit, SnapshotMeta};
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::group_meta;
use crate::join_records::sent_log_prune_bound;
use crate::storage::epoch_members;
use crate::storage::key_layout::{
    ENCRYPTION_KEY_NAMESPACE, PSK_NAMESPACE, SIGNATURE_KEY_NAMESPACE,
};

/// Namespaces outside the group prefix that OpenMLS's merge may write: their prior values go
/// into the snapshot's undo entries.
const UNDO_NAMESPACES: [&str; 3] = [
    ENCRYPTION_KEY_NAMESPACE,
    SIGNATURE_KEY_NAMESPACE,
    PSK_NAMESPACE,
];

/// What `begin_snapshot` captured, until the merge is done.
pub(crate) struct SnapshotStart {
    epoch: u64,
    branch_tag: Vec<u8>,
    confirmed_transcript_hash: Vec<u8>,
    entries: Vec<(Key, Vec<u8>)>,
}

impl Drop for SnapshotStart {
    fn drop(&mut self) {
        // The copied prefix holds the epoch's secrets.
        for (_, value) in &mut self.entries {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

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
            txn.start_undo_log(&UNDO_NAMESPACES);
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
        let window = self.config.fork_window_epochs;
        self.with_txn(|txn| {
            let undo = txn.take_undo_log();
            if window > 0 {
                let meta = SnapshotMeta {
                    taken_at_ms: now.unix_millis(),
                    branch_tag: start.branch_tag.clone(),
                    confirmed_transcript_hash: start.confirmed_transcript_hash.clone(),
                    merged: merged.clone(),
                    own_commit,
                    welcome: None,
                    external_joiner: external_joiner
                        .map(|d| (*d.user_id.as_bytes(), *d.device_id.as_bytes())),
                    carried_removals: Vec::new(),
                };
                epoch_snapshots::store(txn, group, start.epoch, &start.entries, undo, &meta)?;
                let merged = Candidate {
                    rank: merged,
                    envelope,
                };
                epoch_snapshots::set_candidates(txn, group, start.epoch, &[merged])?;
            }
            for (epoch, _) in epoch_snapshots::metas(txn, group)? {
                if epoch.saturating_add(window) <= start.epoch {
                    branch_lineage::retire_snapshot(txn, group, epoch)?;
                }
            }
            let oldest = epoch_snapshots::metas(txn, group)?.first().map(|(e, _)| *e);
            crate::dormant_branches::forget_before(txn, group, oldest)?;
            // Messages of epochs no kept snapshot precedes can never need sending again
            // (unless a recent external join may still lose).
            let bound = sent_log_prune_bound(
                txn,
                group,
                oldest,
                Some(start.epoch.saturating_add(1)),
                &self.config,
                now,
            )?;
            epoch_snapshots::prune_sent_through(txn, group, bound)
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
            epoch_snapshots::store(txn, group, epoch, &entries, Vec::new(), &meta)?;
            epoch_snapshots::set_candidates(txn, group, epoch, &candidates)
        })
    }

    /// `tick`: drops snapshots older than the fork window (also of groups this device was
    /// removed from on a branch that may still lose).
    pub(crate) fn expire_snapshots(&self, now: Timestamp) -> Result<(), MlsError> {
        let window = self.config.fork_window;
        let held: Vec<GroupId> = self.groups.keys().cloned().collect();
        self.with_txn(|txn| {
            let mut touched: Vec<GroupId> = Vec::new();
            for (group, epoch, taken_at) in epoch_snapshots::all(txn)? {
                if now.duration_since(taken_at) >= window {
                    branch_lineage::retire_snapshot(txn, &group, epoch)?;
                    touched.push(group);
                }
            }
            touched.dedup();
            for group in touched {
                let oldest = epoch_snapshots::metas(txn, &group)?
                    .first()
                    .map(|(e, _)| *e);
                if oldest.is_none() && !held.contains(&group) {
                    // The last snapshot of a group this device no longer holds: its branch
                    // is nothing to this device any more.
                    branch_lineage::forget(txn, &group)?;
                }
                crate::dormant_branches::forget_before(txn, &group, oldest)?;
                let current = self.groups.get(&group).map(|g| g.epoch().as_u64());
                let bound = sent_log_prune_bound(txn, &group, oldest, current, &self.config, now)?;
                epoch_snapshots::prune_sent_through(txn, &group, bound)?;
            }
            // Past member lists of a group this device no longer holds outlive it only while a
            // snapshot could restore it (`storage::epoch_members`).
            for raw in epoch_members::groups(txn)? {
                let group = GroupId::from_slice(&raw);
                if !held.contains(&group) && epoch_snapshots::metas(txn, &group)?.is_empty() {
                    epoch_members::forget_group(txn, &raw)?;
                }
            }
            // A leave request outlives the group only while a rollback could restore it.
            for group in group_meta::leave_requests(txn)? {
                if !held.contains(&group) && epoch_snapshots::metas(txn, &group)?.is_empty() {
                    group_meta::forget_leave_request(txn, &group)?;
                }
            }
            Ok(())
        })
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
