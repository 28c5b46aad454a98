//! Judging a competing commit: the rule of `fork_resolution` applied to every commit judged in
//! one kept epoch, and the step that moves the group onto the winner's branch — this commit, a
//! branch this device left and now goes back to as it left it (`dormant_branches`), or an
//! earlier loser it never merged, processed now.

use openmls::prelude::ProtocolMessage;

use crate::branch_order::{self, CommitRank};
use crate::branch_records::dormant_branches;
use crate::branch_records::epoch_snapshots::{self, Candidate, SnapshotMeta};
use crate::branch_records::{Abandoned, BranchRecords};
use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::epoch_buffer::BufferedMessage;
use crate::error::MlsError;
use crate::events::{Disposition, Event, Output};
use crate::group_id::GroupId;
use crate::mls_wire;
use crate::seen_messages;

/// A competing commit processed on its restored epoch, in a step not yet kept or undone.
struct Attempt {
    savepoint: spacepanda_core::Savepoint,
    abandoned: Abandoned,
    output: Output,
    follow_up: crate::mls_processing::FollowUp,
    rank: CommitRank,
}

/// A step that moved a group onto another branch, not yet kept.
struct Moved {
    savepoint: spacepanda_core::Savepoint,
    abandoned: Abandoned,
    output: Output,
    winner: Option<core_identity::VerifiedMember>,
    abandoned_epoch: Option<u64>,
}

/// The envelope id of a judged commit (none when only its rank is known).
fn candidate_id(candidate: &Candidate) -> Option<crate::envelope::EnvelopeId> {
    Envelope::from_bytes(&candidate.envelope, usize::MAX)
        .ok()
        .map(|e| e.id())
}

impl MlsClient {
    /// A commit for past epoch `epoch` of `group`, whose snapshot `meta` is kept: the rule.
    ///
    /// The commit is processed on the restored epoch (a step of the operation) to learn its
    /// rank; then the winner of every commit judged in that epoch decides. If it is this
    /// commit, the step is kept; if it is the one merged before, the step is undone; if it is
    /// one that lost before and wins again (this commit removed the committer that beat it),
    /// that one is processed instead.
    pub(crate) fn handle_competing_commit(
        &mut self,
        envelope: &Envelope,
        message: ProtocolMessage,
        group: &GroupId,
        epoch: u64,
        meta: SnapshotMeta,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        let abandoned_epoch = self.groups.get(group).map(|g| g.epoch().as_u64());
        let mut candidates = self.read(|txn| epoch_snapshots::candidates(txn, group, epoch))?;
        if candidates
            .iter()
            .any(|c| candidate_id(c) == Some(envelope.id()))
        {
            return self.judged_already(envelope, group, epoch, buffered, Disposition::Duplicate);
        }
        let attempt = match self.attempt_commit(envelope, message, group, epoch, buffered) {
            Ok(attempt) => attempt,
            // It references a proposal of that epoch not received yet: wait for it.
            Err(MlsError::CommitAwaitsProposal { .. }) => {
                return self.buffer_awaiting_proposal(envelope, group, epoch, buffered);
            }
            Err(error) => return Err(error),
        };
        let rank = attempt.rank.clone();
        if candidates
            .iter()
            .any(|c| c.rank.commit_ref == rank.commit_ref)
        {
            self.rollback_step(attempt.savepoint)?;
            return self.judged_already(envelope, group, epoch, buffered, Disposition::Duplicate);
        }
        if candidates.len() >= epoch_snapshots::MAX_CANDIDATES {
            self.rollback_step(attempt.savepoint)?;
            return Err(MlsError::RejectedMessage {
                group: group.clone(),
                reason: format!(
                    "more than {} competing commits for epoch {epoch}",
                    epoch_snapshots::MAX_CANDIDATES
                ),
            });
        }
        let mut events = Vec::new();
        // Two external commits share the placeholder committer: not one member's two commits.
        if let Some(committer) = &attempt.follow_up.committer
            && !rank.is_external()
            && candidates
                .iter()
                .any(|c| c.rank.committer == rank.committer)
        {
            tracing::warn!(%group, epoch, "a member made two commits in one epoch");
            events.push(Event::Equivocation {
                group: group.clone(),
                epoch,
                member: committer.clone(),
            });
        }
        candidates.push(Candidate {
            rank: rank.clone(),
            envelope: envelope.to_bytes(),
        });
        let ranks: Vec<CommitRank> = candidates.iter().map(|c| c.rank.clone()).collect();
        let winner = branch_order::winner(&ranks).cloned();
        if winner.as_ref() == Some(&rank) {
            let mut output =
                self.keep_attempt(attempt, group, epoch, abandoned_epoch, candidates)?;
            output.events.splice(0..0, events);
            return Ok(output);
        }
        // Lost: nothing of the attempt is kept, but it was judged.
        let joiner = attempt
            .follow_up
            .committer
            .clone()
            .filter(|_| rank.is_external());
        self.rollback_step(attempt.savepoint)?;
        self.with_txn(|txn| BranchRecords::of(txn, group).judged(epoch, &candidates))?;
        let mut told = None;
        if let (Some(joiner), Some(winner)) = (joiner, &winner) {
            told = self.tell_joiner_it_lost(group, &joiner, winner, &candidates)?;
        }
        let revived = winner
            .filter(|w| *w != meta.merged)
            .and_then(|w| candidates.iter().find(|c| c.rank == w).cloned());
        let mut output =
            self.judged_already(envelope, group, epoch, buffered, Disposition::Superseded)?;
        output.events.splice(0..0, events);
        output.outbound.extend(told);
        if let Some(revived) = revived {
            // An earlier loser wins now: move onto its branch.
            output.extend(self.revive(group, epoch, abandoned_epoch, revived, candidates)?);
        }
        Ok(output)
    }

    /// An external commit lost to `winner`. If this device made the winner, it sends it to the
    /// joiner: nobody else does (the joiner had no leaf in that epoch, so the commit was not
    /// addressed to it), and it is how the joiner learns to rejoin (`RejoinContested`). Only
    /// the winner's committer sends, so a large group sends one copy.
    fn tell_joiner_it_lost(
        &mut self,
        group: &GroupId,
        joiner: &core_identity::VerifiedMember,
        winner: &CommitRank,
        candidates: &[Candidate],
    ) -> Result<Option<crate::events::Outbound>, MlsError> {
        // Removed meanwhile (a snapshot kept the epoch judgeable): not ours to tell.
        let Some(own_index) = self.groups.get(group).map(|g| g.own_leaf_index().u32()) else {
            return Ok(None);
        };
        if winner.is_external() || winner.committer != own_index {
            return Ok(None);
        }
        let Some(envelope) = candidates
            .iter()
            .find(|c| c.rank == *winner)
            .and_then(|c| Envelope::from_bytes(&c.envelope, usize::MAX).ok())
        else {
            return Ok(None);
        };
        let to = crate::events::Recipients {
            group: Some(group.clone()),
            devices: vec![crate::DeviceAddress::from(joiner)],
        };
        // Not `queue_outbound`: this commit was logged when it was merged.
        let outbound = self.with_txn(|txn| crate::outbox::push(txn, to, envelope))?;
        Ok(Some(outbound))
    }

    /// A competing commit judged before (or the same commit as the merged one): dropped from
    /// the buffer and recorded as seen.
    fn judged_already(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
        disposition: Disposition,
    ) -> Result<Output, MlsError> {
        let now = self.now();
        self.with_txn(|txn| {
            if let Some(entry) = buffered {
                crate::epoch_buffer::remove(txn, entry)?;
            }
            // Recognised as judged whatever the de-duplication retention (see `commit_log`).
            crate::commit_log::record_judged(txn, group, epoch, envelope.id())?;
            seen_messages::record_envelope(txn, envelope.id(), now)
        })?;
        Ok(Output {
            disposition,
            ..Output::default()
        })
    }

    /// Moves onto the branch of `revived`, a commit of `epoch` that lost before and wins the
    /// set now. One that no longer processes (a proposal it needs is gone) leaves the group
    /// where it is, with a warning: the set's winner cannot be reached here.
    fn revive(
        &mut self,
        group: &GroupId,
        epoch: u64,
        abandoned_epoch: Option<u64>,
        revived: Candidate,
        candidates: Vec<Candidate>,
    ) -> Result<Output, MlsError> {
        // A branch this device was on: back to it as it was left.
        if let Some(output) =
            self.wake_branch(group, epoch, abandoned_epoch, &revived, &candidates)?
        {
            return Ok(output);
        }
        let decoded = Envelope::from_bytes(&revived.envelope, usize::MAX).and_then(|envelope| {
            let message = mls_wire::protocol_message(&envelope)?;
            Ok((envelope, message))
        });
        let attempt = decoded.and_then(|(envelope, message)| {
            self.attempt_commit(&envelope, message, group, epoch, None)
        });
        match attempt {
            Ok(attempt) if attempt.rank == revived.rank => {
                self.keep_attempt(attempt, group, epoch, abandoned_epoch, candidates)
            }
            Ok(attempt) => {
                self.rollback_step(attempt.savepoint)?;
                Err(MlsError::Internal {
                    what: "a revived commit ranks differently than when it was judged",
                })
            }
            Err(error) if error.is_local() => Err(error),
            Err(error) => {
                tracing::warn!(%group, epoch, %error, "the winning commit of a fork point no longer applies here");
                Ok(Output::default())
            }
        }
    }

    /// Inside the open transaction, with `group` put back in `epoch`: makes the branch left
    /// there with the commit `merged_ref` the group's again, as it was left. False if no such
    /// branch is kept (the device was never on it, or it is older than the window).
    pub(crate) fn wake_dormant(
        &mut self,
        group: &GroupId,
        epoch: u64,
        merged_ref: &[u8],
    ) -> Result<bool, MlsError> {
        let Some(meta) =
            self.read(|txn| dormant_branches::dormant(txn, group, epoch, merged_ref))?
        else {
            return Ok(false);
        };
        self.with_txn(|txn| BranchRecords::of(txn, group).woke_dormant(epoch, merged_ref, &meta))?;
        if !meta.held {
            // Left while removed on that branch: removed again.
            self.forget_group(group)?;
            self.mark_removed(group, meta.head_epoch)?;
        }
        self.reload_group(group)?;
        Ok(true)
    }

    /// Moves back onto the branch this device left at `epoch` with the commit `revived`, if it
    /// keeps it (see `dormant_branches`); `None` if it does not.
    fn wake_branch(
        &mut self,
        group: &GroupId,
        epoch: u64,
        abandoned_epoch: Option<u64>,
        revived: &Candidate,
        candidates: &[Candidate],
    ) -> Result<Option<Output>, MlsError> {
        let savepoint = self.savepoint()?;
        let woke = (|| {
            let abandoned = self.restore_snapshot(group, epoch)?;
            let woke = self.wake_dormant(group, epoch, &revived.rank.commit_ref)?;
            Ok::<_, MlsError>((abandoned, woke))
        })();
        let abandoned = match woke {
            Ok((abandoned, true)) => abandoned,
            Ok((_, false)) => {
                self.rollback_step(savepoint)?;
                return Ok(None);
            }
            Err(error) => {
                let error = self.attribute(error);
                self.rollback_step(savepoint)?;
                return Err(error);
            }
        };
        // Who made the commit, as the branch knows the leaf now (for the event).
        let winner = self
            .verified_leaf(
                group,
                openmls::prelude::LeafNodeIndex::new(revived.rank.committer),
            )
            .ok();
        let moved = Moved {
            savepoint,
            abandoned,
            output: Output::default(),
            winner,
            abandoned_epoch,
        };
        let mut output = self.keep_branch(moved, group, epoch, candidates.to_vec())?;
        output.outbound.extend(self.resend_welcomes(group, epoch)?);
        Ok(Some(output))
    }

    /// Inside a step of its own: puts `group` back in `epoch` and processes the commit there
    /// (with the proposals of that epoch that arrived after we had left it). On an error the
    /// step is already undone.
    fn attempt_commit(
        &mut self,
        envelope: &Envelope,
        message: ProtocolMessage,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Attempt, MlsError> {
        let savepoint = self.savepoint()?;
        let attempt = (|| {
            if let Some(entry) = buffered {
                self.with_txn(|txn| crate::epoch_buffer::remove(txn, entry))?;
            }
            let abandoned = self.restore_snapshot(group, epoch)?;
            let mut output = Output::default();
            for entry in self.read(|txn| crate::epoch_buffer::for_group(txn, group))? {
                if entry.epoch != epoch || buffered.is_some_and(|b| b.key == entry.key) {
                    continue;
                }
                let Some((proposal_envelope, proposal)) = mls_wire::buffered_proposal(&entry)
                else {
                    continue;
                };
                // Each proposal is a step of its own: an invalid one is skipped and leaves
                // nothing behind; a local failure fails the whole attempt.
                match self.transaction(Some(group), |client| {
                    client.process_in_transaction(group, &proposal_envelope, proposal)
                }) {
                    Ok((stored, _)) => {
                        self.with_txn(|txn| crate::epoch_buffer::remove(txn, &entry))?;
                        output.extend(stored);
                    }
                    Err(error) if error.is_local() => return Err(error),
                    Err(_) => {}
                }
            }
            let (processed, follow_up) =
                self.process_commit_with_snapshot(group, envelope, message)?;
            output.extend(processed);
            let rank = follow_up.rank.clone().ok_or(MlsError::Internal {
                what: "a processed commit has no rank",
            })?;
            Ok::<_, MlsError>((abandoned, output, follow_up, rank))
        })();
        match attempt {
            Ok((abandoned, output, follow_up, rank)) => Ok(Attempt {
                savepoint,
                abandoned,
                output,
                follow_up,
                rank,
            }),
            Err(error) => {
                let error = self.attribute(error);
                self.rollback_step(savepoint)?;
                Err(error)
            }
        }
    }

    /// The attempt won: keeps it, with everything the abandoned branch did queued again.
    fn keep_attempt(
        &mut self,
        attempt: Attempt,
        group: &GroupId,
        epoch: u64,
        abandoned_epoch: Option<u64>,
        candidates: Vec<Candidate>,
    ) -> Result<Output, MlsError> {
        let Attempt {
            savepoint,
            abandoned,
            output,
            follow_up,
            ..
        } = attempt;
        let moved = Moved {
            savepoint,
            abandoned,
            output,
            winner: follow_up.committer,
            abandoned_epoch,
        };
        self.keep_branch(moved, group, epoch, candidates)
    }

    /// Keeps the step that moved `group` onto another branch at `epoch`, with everything the
    /// abandoned branch did queued again.
    fn keep_branch(
        &mut self,
        moved: Moved,
        group: &GroupId,
        epoch: u64,
        candidates: Vec<Candidate>,
    ) -> Result<Output, MlsError> {
        let Moved {
            savepoint,
            abandoned,
            mut output,
            winner,
            abandoned_epoch,
        } = moved;
        let reissued_commits = abandoned.own_commits.len();
        let resent_messages = abandoned.sent.len();
        let ranks: Vec<CommitRank> = candidates.iter().map(|c| c.rank.clone()).collect();
        let winning_envelope = branch_order::winner(&ranks)
            .and_then(|w| candidates.iter().find(|c| c.rank == *w))
            .and_then(|c| Envelope::from_bytes(&c.envelope, usize::MAX).ok());
        let queued = self.with_txn(|txn| {
            BranchRecords::of(txn, group).judged(epoch, &candidates)?;
            // The devices that joined our abandoned branch by external commit learn from the
            // winning commit that it lost (see `Abandoned::external_joiners`).
            if let Some(envelope) =
                winning_envelope.filter(|_| !abandoned.external_joiners.is_empty())
            {
                let to = crate::events::Recipients {
                    group: Some(group.clone()),
                    devices: abandoned.external_joiners.clone(),
                };
                // Not `queue_outbound`: this commit is in the commit log already.
                output
                    .outbound
                    .push(crate::outbox::push(txn, to, envelope)?);
            }
            BranchRecords::of(txn, group).queue_abandoned(&abandoned)
        });
        match queued {
            Ok(()) => self.release_step(savepoint)?,
            Err(error) => {
                self.rollback_step(savepoint)?;
                return Err(error);
            }
        }
        tracing::info!(%group, epoch, "moved onto the winning branch of a concurrent commit");
        if let Some(winner) = winner {
            output.events.insert(
                0,
                Event::CommitSuperseded {
                    group: group.clone(),
                    epoch,
                    abandoned_epoch: abandoned_epoch.unwrap_or(epoch + 1),
                    winner,
                    reissued_commits,
                    resent_messages,
                },
            );
        }
        if self.groups.contains_key(group) {
            output.extend(self.after_branch_change(group)?);
        } else {
            output.extend(self.replay_buffered_welcomes(group)?);
        }
        Ok(output)
    }
}
