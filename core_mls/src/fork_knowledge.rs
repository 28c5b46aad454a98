//! What a device learns of forks it did not see whole, and what it tells: the epochs a
//! commit's signed claim says its committer judged (`contested_history`, read back by
//! `learn_judged` into `branch_lineage`'s learned commits), the same taught by a refused
//! Welcome (`keep_lesson`, written by the next operation that handles an envelope), and the one
//! case no rollback can reach: a branch that won with this device's own commit, which it lost
//! with that branch (`own_commit_won_where_we_cannot_go`, reported as `BranchContested`).
//!
//! The design: docs/FORKS.md, section 2 ("what the committer judged").

use crate::branch_order::{
    BranchHistory, BranchOrder, CommitRank, compare_branches, parting_epoch,
};
use crate::branch_records::BranchRecords;
use crate::branch_records::epoch_snapshots;
use crate::client::MlsClient;
use crate::envelope::{Envelope, EnvelopeKind};
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::signed_context;

/// How many lessons of refused Welcomes wait in memory at most (see `keep_lesson`).
const PENDING_LESSONS: usize = 16;

impl MlsClient {
    /// What a commit this device makes in `epoch` of `group` tells the members of the epochs
    /// before it (its signed claim, `signed_context`): those where this device knows of more
    /// than one commit, the newest `JUDGED_EPOCHS`. The lineage (epochs whose snapshots
    /// expired) is left out: reading it on every commit cost up to three quarters more for a
    /// commit at 10 members on a sealed store (docs/BENCHMARKS.md), and what a device judged
    /// in a fork it tells with the commits it makes while that fork is inside its window.
    pub(crate) fn contested_history(
        &self,
        group: &GroupId,
        epoch: u64,
    ) -> Result<BranchHistory, MlsError> {
        let mut contested: BranchHistory = self
            .history_reaching(group, false)?
            .into_iter()
            .filter(|(e, branch)| *e < epoch && !branch.others.is_empty())
            .collect();
        let surplus = contested
            .len()
            .saturating_sub(signed_context::JUDGED_EPOCHS);
        contested.drain(..surplus);
        Ok(contested)
    }

    /// Inside the open transaction, after merging a commit whose committer's claim says what it
    /// judged (`judged`): keeps what this device did not know of the same epochs.
    pub(crate) fn learn_judged(
        &self,
        group: &GroupId,
        judged: &BranchHistory,
    ) -> Result<(), MlsError> {
        if judged.is_empty() {
            return Ok(());
        }
        let ours = self.branch_history(group)?;
        self.with_txn(|txn| BranchRecords::of(txn, group).learned(&ours, judged))?;
        Ok(())
    }

    /// A Welcome refused for a group this device holds (`AlreadyJoined`), from a member of its
    /// state, still says what its sender judged in the epochs their branches share. The
    /// refusal writes nothing (its operation rolls back), so the lesson waits in memory, at
    /// most [`PENDING_LESSONS`], for the next operation that handles an envelope
    /// (`write_lessons`); lost with a restart, it is only what the next commit's claim would
    /// tell.
    pub(crate) fn keep_lesson(&mut self, group: GroupId, judged: BranchHistory) {
        let lesson = (group, judged);
        if self.lessons.contains(&lesson) {
            return;
        }
        if self.lessons.len() >= PENDING_LESSONS {
            self.lessons.remove(0);
        }
        self.lessons.push(lesson);
    }

    /// Inside the open transaction: writes `lessons` (see `keep_lesson`) of the groups this
    /// device still holds.
    pub(crate) fn write_lessons(
        &self,
        lessons: &[(GroupId, BranchHistory)],
    ) -> Result<(), MlsError> {
        for (group, judged) in lessons {
            if self.groups.contains_key(group) {
                self.learn_judged(group, judged)?;
            }
        }
        Ok(())
    }

    /// A commit of another branch (made in `epoch`) whose signed claim says that branch won
    /// where it parted from ours with a commit of this device's own that it no longer holds:
    /// a self-update it made on a branch a Welcome then moved it off, before another Welcome
    /// put it back on that branch's earlier state. That commit never comes back to its maker,
    /// so no rollback can take this device where the members are; the epoch where the
    /// branches part, for `BranchContested` (the application asks a member, and rejoins if it
    /// says so). Checked against every member's key, since the commit cannot be opened here.
    pub(crate) fn own_commit_won_where_we_cannot_go(
        &self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
    ) -> Result<Option<u64>, MlsError> {
        if envelope.kind() != EnvelopeKind::Commit {
            return Ok(None);
        }
        let Some(claim) = signed_context::decode_claim(envelope.context(), group.as_slice(), epoch)
        else {
            return Ok(None);
        };
        let theirs = &claim.value.judged;
        if theirs.is_empty() {
            return Ok(None);
        }
        let mls_group = self.group(group)?;
        let current = mls_group.epoch().as_u64();
        let ours = self.branch_history(group)?;
        if compare_branches(&ours, current, theirs, epoch) != BranchOrder::TheirsWins {
            return Ok(None);
        }
        let Some(parting) = parting_epoch(&ours, theirs) else {
            return Ok(None);
        };
        let Some((_, winner)) = theirs.iter().find(|(e, _)| *e == parting) else {
            return Ok(None);
        };
        if !self.own_commit_gone(group, parting, &winner.merged)? {
            return Ok(None);
        }
        // Only now the signatures, one per member at most: the claim is a member's word, and
        // checking it first would cost every other-branch commit as many checks as members.
        let signed = mls_group
            .members()
            .any(|m| self.context_signed_by(&claim, m.signature_key.as_slice()));
        Ok(signed.then_some(parting))
    }

    /// Whether `merged`, a commit of `epoch` that won there on another branch, is one this
    /// device made and no longer holds among that epoch's candidates (see
    /// `own_commit_won_where_we_cannot_go`): the members' branch is then out of its reach.
    pub(crate) fn own_commit_gone(
        &self,
        group: &GroupId,
        epoch: u64,
        merged: &CommitRank,
    ) -> Result<bool, MlsError> {
        let own = self.group(group)?.own_leaf_index().u32();
        if merged.committer != own {
            return Ok(false);
        }
        let held = self.read(|txn| epoch_snapshots::candidates(txn, group, epoch))?;
        Ok(!held
            .iter()
            .any(|candidate| candidate.rank.commit_ref == merged.commit_ref))
    }
}
