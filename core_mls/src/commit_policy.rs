//! When this device commits on its own: the designated committer of pending proposals, the
//! pending-proposal timeout, the self-update interval, and the rule that a device whose removal
//! is pending never commits.
//!
//! With no server, every member could commit the same pending proposals and fork the epoch for
//! nothing (the concurrent-commit rule would resolve it, at a cost). So one member, the lowest
//! leaf no pending proposal removes, commits them at its next `tick`; the others only once they
//! waited `pending_proposal_timeout` (the designated committer may be offline).

use core_identity::VerifiedMember;
use openmls::prelude::{LeafNodeIndex, Proposal};
use spacepanda_core::Timestamp;

use crate::client::MlsClient;
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::group_meta::{
    self, FIRST_PROPOSAL_AT, GROUP_META_NAMESPACE, LEAF_UPDATED_AT, proposals_key,
};

impl MlsClient {
    /// Refuses a commit by a device whose own removal is pending (it asked to leave): OpenMLS
    /// would include the removal and refuse a commit that removes its committer.
    pub(crate) fn ensure_can_commit(&self, group: &GroupId) -> Result<(), MlsError> {
        if self.own_removal_pending(group)? {
            return Err(MlsError::InvalidArgument {
                reason: "this device asked to leave the group; it cannot commit until it is removed",
            });
        }
        Ok(())
    }

    /// Whether a pending proposal removes this device.
    pub(crate) fn own_removal_pending(&self, group: &GroupId) -> Result<bool, MlsError> {
        let own = self.group(group)?.own_leaf_index();
        Ok(self.pending_removed_leaves(group)?.contains(&own))
    }

    /// The leaves that pending Remove proposals remove.
    fn pending_removed_leaves(&self, group: &GroupId) -> Result<Vec<LeafNodeIndex>, MlsError> {
        Ok(self
            .group(group)?
            .pending_proposals()
            .filter_map(|p| match p.proposal() {
                Proposal::Remove(remove) => Some(remove.removed()),
                _ => None,
            })
            .collect())
    }

    /// Members that pending Remove proposals would remove.
    pub(crate) fn pending_removals(
        &mut self,
        group: &GroupId,
    ) -> Result<Vec<VerifiedMember>, MlsError> {
        let mut removed = Vec::new();
        for index in self.pending_removed_leaves(group)? {
            if let Some(leaf) = self.group(group)?.member_at(index) {
                removed.push(self.members.verify(&leaf.credential, &leaf.signature_key)?);
            }
        }
        Ok(removed)
    }

    /// The member with the lowest leaf index among those no pending proposal removes commits
    /// pending proposals at its next `tick`, so a leave does not wait for unrelated activity
    /// and, normally, only one member commits it (the others only after
    /// `pending_proposal_timeout`).
    pub(crate) fn is_designated_committer(&self, group: &GroupId) -> Result<bool, MlsError> {
        let leaving = self.pending_removed_leaves(group)?;
        let mls_group = self.group(group)?;
        let designated = mls_group
            .members()
            .map(|m| m.index)
            .filter(|i| !leaving.contains(i))
            .min();
        Ok(designated == Some(mls_group.own_leaf_index()))
    }

    /// Counts a stored proposal against `max_proposals_per_epoch`, and remembers when the
    /// epoch's first one arrived (the pending-proposal timeout runs from there).
    pub(crate) fn count_proposal(&self, group: &GroupId) -> Result<(), MlsError> {
        let now = self.now();
        let epoch = self.group(group)?.epoch().as_u64();
        let key = proposals_key(group, epoch);
        let max = self.config.max_proposals_per_epoch;
        self.with_txn(|txn| {
            let count = txn
                .get(GROUP_META_NAMESPACE, &key)?
                .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                .map_or(0, u32::from_be_bytes);
            if count as usize >= max {
                return Err(MlsError::TooManyProposals {
                    group: group.clone(),
                    max,
                });
            }
            if count == 0 {
                // When the first proposal of this epoch arrived: `tick` commits proposals the
                // designated committer left pending too long.
                group_meta::write_time(txn, group, FIRST_PROPOSAL_AT, now)?;
            }
            txn.put(
                GROUP_META_NAMESPACE,
                key,
                (count + 1).to_be_bytes().to_vec(),
            )?;
            Ok(())
        })
    }

    /// Remembers when this device last replaced its leaf (a self-update or a join).
    pub(crate) fn record_leaf_update(
        &self,
        group: &GroupId,
        now: Timestamp,
    ) -> Result<(), MlsError> {
        self.with_txn(|txn| group_meta::write_time(txn, group, LEAF_UPDATED_AT, now))
    }

    /// A time recorded in the group's metadata under `name` (when the leaf was last replaced,
    /// when the epoch's first proposal arrived); a damaged record counts as none.
    fn recorded_time(&self, group: &GroupId, name: &[u8]) -> Result<Option<Timestamp>, MlsError> {
        self.read(|txn| group_meta::read_time(txn, group, name))
    }

    /// Whether `tick` should commit now: the leaf is older than `self_update_after`, or
    /// proposals are pending and this device is the one to commit them (or they waited past
    /// `pending_proposal_timeout`).
    pub(crate) fn self_update_due(
        &self,
        group: &GroupId,
        now: Timestamp,
    ) -> Result<bool, MlsError> {
        Ok(self
            .self_update_deadline(group, now)?
            .is_some_and(|deadline| deadline <= now))
    }

    /// When `tick` should commit in `group` (see [`self_update_due`](Self::self_update_due),
    /// which is "this time has come"): `now` for what is due at once, `None` for never unless
    /// something changes.
    pub(crate) fn self_update_deadline(
        &self,
        group: &GroupId,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, MlsError> {
        // A device whose own removal is pending cannot commit (OpenMLS refuses a commit that
        // removes its committer); the others commit it.
        if self.groups.contains_key(group) && self.own_removal_pending(group)? {
            return Ok(None);
        }
        let leaf_stale_at = match self.recorded_time(group, LEAF_UPDATED_AT)? {
            Some(last) => last.saturating_add(self.config.self_update_after),
            None => now,
        };
        if self.group(group)?.pending_proposals().next().is_none() {
            return Ok(Some(leaf_stale_at));
        }
        // Pending proposals: the designated committer commits them at once; anyone else once the
        // designated committer has let them wait too long.
        let proposals_at = if self.is_designated_committer(group)? {
            now
        } else {
            self.recorded_time(group, FIRST_PROPOSAL_AT)?
                .map_or(now, |at| {
                    at.saturating_add(self.config.pending_proposal_timeout)
                })
        };
        Ok(Some(leaf_stale_at.min(proposals_at)))
    }
}
