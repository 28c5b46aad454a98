//! The fork cases of a Welcome: how it stands against what this device holds or held of its
//! group (`welcome_standing`), leaving the branch it replaces (`leave_replaced_branch`), and
//! what of an earlier membership carries across the join (`carry_across_join`).
//!
//! A Welcome for a group this device holds replaces the held state in two cases only: its
//! branch wins by the fork rule where the two signed histories part, or (with no history to
//! compare) it re-uses the single-use key package this device joined with, at a later epoch
//! — a member re-added us on the winning branch after the commit that first added us lost —
//! or is a concurrent add at the same epoch with a smaller commit ref. Its sender vouches for
//! the Welcome's group and history alone, so it never moves a held state on its word alone
//! (docs/FORKS.md, section 6). A Welcome for a group this device was removed from, from a
//! branch that lost to one it kept a snapshot of, is [`MlsError::OtherBranch`]. Joining itself
//! is `welcome_handler`'s.

use openmls::prelude::OpenMlsProvider as _;

use crate::branch_order::{
    BranchHistory, BranchOrder, EpochBranch, compare_branches, parting_epoch,
};
use crate::branch_records::epoch_snapshots;
use crate::branch_records::join_records::join_record;
use crate::branch_records::{BranchRecords, CarriedRecords};
use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::key_package_manager::WelcomeMatch;
use crate::{commit_log, seen_messages};

/// How a Welcome stands against what this device holds or held of its group.
pub(crate) enum WelcomeStanding {
    /// The group is not held, and no branch it kept outranks the Welcome's: join.
    Join,
    /// The group is held, and the Welcome's branch replaces that state. `ended_by`: when the
    /// group went on from our state, the commit that ended our epoch on the Welcome's branch.
    Replace { ended_by: Option<EpochBranch> },
    /// The group is held and stays as it is ([`MlsError::AlreadyJoined`]).
    Refused(HeldRefusal),
}

/// A Welcome refused for a held group, and what follows from it once its transaction is
/// rolled back.
pub(crate) struct HeldRefusal {
    /// The epoch to keep it at in the buffer: it may be judged again once the group moves
    /// (the commit that removes this device, or a rollback, may come).
    pub(crate) wait_at: Option<u64>,
    /// Where it claims our branch lost, at an epoch this device cannot judge, from a sender it
    /// cannot vouch for: reported as `BranchContested` (the application asks a member).
    pub(crate) contested_at: Option<u64>,
    /// From a member of our state: the commits it judged in the epochs our branches share
    /// (`keep_lesson`).
    pub(crate) lesson: Option<BranchHistory>,
}

impl MlsClient {
    /// How a Welcome for `group_id` at `epoch` (its commit ref, the sender's signed branch
    /// history `theirs`, the key package it matched, its sender's signature key) stands against
    /// what this device holds or held of that group. Inside the open transaction; reads only.
    pub(crate) fn welcome_standing(
        &mut self,
        group_id: &GroupId,
        epoch: u64,
        commit_ref: &[u8],
        theirs: &BranchHistory,
        matched: &WelcomeMatch,
        sender_key: &[u8],
    ) -> Result<WelcomeStanding, MlsError> {
        if self.groups.contains_key(group_id) {
            let current = self.group(group_id)?.epoch().as_u64();
            let ours = self.branch_history(group_id)?;
            let order = compare_branches(&ours, current, theirs, epoch);
            let mut ended_by = None;
            if order == BranchOrder::TheirsLater {
                ended_by = theirs
                    .iter()
                    .find(|(e, _)| *e == current)
                    .map(|(_, rank)| rank.clone());
            }
            let replaces = match order {
                BranchOrder::TheirsWins | BranchOrder::TheirsLater => true,
                BranchOrder::OursWins | BranchOrder::TheirsStale => false,
                // No history to compare (a window of 0, or far apart): a re-add with the
                // package we joined with, at a later epoch, or a concurrent add at the same
                // epoch with a smaller commit ref.
                BranchOrder::Disjoint => {
                    let joined = self.with_txn(|txn| join_record(txn, group_id))?;
                    joined.is_some_and(|joined| {
                        if matched.reused {
                            joined.key_package_ref == matched.key_package_ref
                                && epoch > joined.epoch
                        } else {
                            epoch == joined.epoch && commit_ref < joined.commit_ref.as_slice()
                        }
                    })
                }
            };
            // The Welcome's group and its branch history are vouched for only by its
            // sender, who could have made that group herself under this id: a member
            // removed from the group knows the id and the history up to her removal, and
            // may claim a commit that beats it. So a Welcome never moves a held state on
            // its word alone (docs/FORKS.md, "Welcomes on branches"):
            // - where the branches part at an epoch we hold a snapshot of, the commit
            //   that beats ours there is a message to us as a member of that epoch: it
            //   comes and rolls us back itself, and the Welcome is judged again then;
            // - a claim about an epoch before our time is taken only from a member of our
            //   state. From anyone else (a true re-add on the winning branch may come from
            //   a member our branch removed, or a forger) it waits, and the application
            //   asks a member of our state whether our branch lost (`BranchContested`);
            // - a Welcome that says the group went on from our state must come from a
            //   member of it (one that moved with us, or re-adds us after the commit
            //   that added us lost). One from anyone else waits: the commit that
            //   removes this device, if there is one, will come.
            let mut lesson = None;
            let mut contested_at = None;
            let mut wait_at = None;
            let sender_is_member = self
                .group(group_id)?
                .members()
                .any(|m| m.signature_key.as_slice() == sender_key);
            if sender_is_member {
                lesson = Some(theirs.clone());
            }
            let parting = parting_epoch(&ours, theirs).filter(|_| order == BranchOrder::TheirsWins);
            let parting_held = match parting {
                Some(parting) => self
                    .with_txn(|txn| Ok(epoch_snapshots::meta(txn, group_id, parting)?.is_some()))?,
                None => false,
            };
            let vouched = match parting {
                Some(_) if parting_held => false,
                Some(parting) => {
                    if !sender_is_member {
                        contested_at = Some(parting);
                    }
                    sender_is_member
                }
                // `TheirsWins` always names the epoch where the branches part; kept as
                // the rule's default should that change.
                None if order == BranchOrder::TheirsWins => true,
                None => sender_is_member,
            };
            if !replaces || !vouched {
                if (order == BranchOrder::Disjoint || replaces) && epoch > current
                    || parting_held
                    || contested_at.is_some()
                {
                    wait_at = Some(epoch);
                }
                return Ok(WelcomeStanding::Refused(HeldRefusal {
                    wait_at,
                    contested_at,
                    lesson,
                }));
            }
            Ok(WelcomeStanding::Replace { ended_by })
        } else {
            // Removed, maybe not for good: the epochs we kept snapshots of are judged by
            // the same rule. A Welcome from a branch that lost to ours is dead (its
            // committer rolls back and re-adds us if we are still not a member), and
            // joining it would drop the snapshots a rollback onto the winning branch needs.
            let ours = self.branch_history(group_id)?;
            let our_epoch = ours.last().map_or(0, |(e, _)| e.saturating_add(1));
            let order = compare_branches(&ours, our_epoch, theirs, epoch);
            if order == BranchOrder::OursWins {
                return Err(MlsError::OtherBranch {
                    group: group_id.clone(),
                    message_epoch: epoch,
                });
            }
            Ok(WelcomeStanding::Join)
        }
    }

    /// Inside the open transaction of a Welcome that replaces the state this device holds of
    /// `group`: leaves that branch. `ended_by`: the commit that ended our epoch on the
    /// Welcome's branch, when the group went on from our state.
    pub(crate) fn leave_replaced_branch(
        &mut self,
        group: &GroupId,
        ended_by: Option<EpochBranch>,
    ) -> Result<(), MlsError> {
        if let Some(ended_by) = ended_by {
            // Our epoch is on the Welcome's branch: a competing commit of it that wins
            // undoes the branch that re-added us, and needs the state we hold now.
            self.snapshot_as_ended_by(group, ended_by)?;
        }
        self.abandon_joined_branch(group)
    }

    /// Inside the open transaction of a Welcome for `group_id` at `epoch` with the branch
    /// history `theirs`: the snapshots and records of an earlier membership that carry across
    /// the join, and what the join record keeps of them.
    pub(crate) fn carry_across_join(
        &mut self,
        group_id: &GroupId,
        epoch: u64,
        theirs: &BranchHistory,
    ) -> Result<CarriedRecords, MlsError> {
        self.with_txn(|txn| BranchRecords::of(txn, group_id).carried_across_welcome(epoch, theirs))
    }

    /// Inside the open transaction: the state this device joined `group` with is on a branch
    /// that lost. Deletes it (its snapshots are sorted by the caller); what we sent there
    /// waits to be sent again.
    fn abandon_joined_branch(&mut self, group: &GroupId) -> Result<(), MlsError> {
        // The rule judges a set of commits, so a later Welcome can bring this device back to
        // the branch it leaves now: the commits others made there, up to this device's own
        // first one (which OpenMLS cannot process again), wait in the buffer, no longer
        // recorded as seen, to be taken again then (or to expire with the buffer).
        let merged = self.read(|txn| {
            let mut kept = Vec::new();
            let mut merged = commit_log::merged(txn, group)?;
            merged.sort_by_key(|(epoch, _)| *epoch);
            for (epoch, bytes) in merged {
                // Without a snapshot it is older than any state a Welcome can bring back.
                let Some(meta) = epoch_snapshots::meta(txn, group, epoch)? else {
                    continue;
                };
                if meta.own_commit.is_some() {
                    break;
                }
                kept.push((epoch, bytes));
            }
            Ok(kept)
        })?;
        for (epoch, bytes) in merged {
            let Ok(envelope) = Envelope::from_bytes(&bytes, usize::MAX) else {
                continue;
            };
            self.with_txn(|txn| seen_messages::forget_envelope(txn, envelope.id()))?;
            self.buffer(&envelope, group, epoch, None)?;
        }
        self.provider.storage().delete_group(&group.to_openmls())?;
        self.with_txn(|txn| BranchRecords::of(txn, group).resend_sent())
    }
}
