//! Concurrent commits, the parts that act on a group: the rollback that puts it back in a
//! kept epoch (`restore_snapshot`), the re-issue of what the abandoned branch did
//! (`after_branch_change`: buffered messages replayed, own commits made again
//! (`reissue_commits`), a leave left out proposed again, deferred messages sent), messages of
//! another branch (`other_branch`: buffered while a rollback, a Welcome or a contested external
//! join could still reach them, else [`MlsError::OtherBranch`]), commits older than the fork
//! window (`fork_outside_window`: [`MlsError::ForkOutsideWindow`], counted in memory and
//! reported by `tick` as [`Event::ForkOutsideWindow`]), this device's signed branch history
//! (`branch_history`) and [`ForkReport`].
//!
//! The rule itself is `branch_order::winner`; judging a competing commit is
//! `competing_commit`'s; taking and keeping snapshots is `snapshot_capture`'s and
//! `epoch_snapshots`'s.
//!
//! The design, and the argument for the rule that other modules' docs point to here:
//! docs/FORKS.md.

use crate::branch_order::{BranchHistory, EpochBranch};
use crate::branch_records::branch_lineage;
use crate::branch_records::epoch_snapshots::{self, OwnCommit};
use crate::branch_records::{Abandoned, BranchRecords};
use crate::client::MlsClient;
use crate::commit_log;
use crate::deferred_sends;
use crate::envelope::Envelope;
use crate::epoch_buffer::{self, BufferedMessage};
use crate::error::MlsError;
use crate::events::{Disposition, Event, Output};
use crate::group_id::GroupId;
use crate::group_meta::{self, SUPERSEDED_COUNTER};

/// How a group fared with concurrent commits on this device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForkReport {
    /// How often this device rolled back onto a winning branch.
    pub superseded: u64,
    /// Commits refused because they were older than the fork window, since this client was
    /// opened.
    pub outside_window: u64,
    /// Past epochs currently kept as snapshots (how far back a competing commit can still win).
    pub snapshots: usize,
}

impl MlsClient {
    /// How `group` fared with concurrent commits on this device.
    pub fn fork_report(&self, group: &GroupId) -> Result<ForkReport, MlsError> {
        let (superseded, snapshots) = self.read(|txn| {
            Ok((
                group_meta::read_counter(txn, group, SUPERSEDED_COUNTER)?,
                epoch_snapshots::metas(txn, group)?.len(),
            ))
        })?;
        Ok(ForkReport {
            superseded,
            outside_window: self.outside_window.refused(group),
            snapshots,
        })
    }

    /// This device's branch of `group`: the commit refs of the snapshots it keeps, before those
    /// its lineage (`branch_lineage`), and what the Welcome or GroupInfo it joined with said of
    /// the epochs it was not in; at most `LINEAGE_EPOCHS` back from the newest.
    pub(crate) fn branch_history(&self, group: &GroupId) -> Result<BranchHistory, MlsError> {
        self.history_reaching(group, true)
    }

    /// [`branch_history`](Self::branch_history), with the lineage (epochs before the window)
    /// or without it.
    pub(crate) fn history_reaching(
        &self,
        group: &GroupId,
        lineage: bool,
    ) -> Result<BranchHistory, MlsError> {
        let lineage = if lineage {
            self.read(|txn| branch_lineage::read(txn, group))?
        } else {
            Vec::new()
        };
        // Later sources know later: what this device judged itself overrides what a Welcome or
        // a GroupInfo told it.
        let mut history: std::collections::BTreeMap<u64, EpochBranch> = lineage
            .into_iter()
            .chain(self.joined_history(group)?)
            .chain(self.external_join_history(group)?)
            .collect();
        for (epoch, meta) in self.read(|txn| epoch_snapshots::metas(txn, group))? {
            let branch =
                self.read(|txn| epoch_snapshots::epoch_branch(txn, group, epoch, meta.merged))?;
            history.insert(epoch, branch);
        }
        // Commits other members judged beside the one this device merged: the winner of an
        // epoch is a function of the whole set.
        for (epoch, learned) in self.read(|txn| branch_lineage::learned(txn, group))? {
            if let Some(branch) = history.get_mut(&epoch)
                && branch.merged.commit_ref == learned.merged.commit_ref
            {
                for rank in learned.others {
                    if !branch
                        .others
                        .iter()
                        .any(|o| o.commit_ref == rank.commit_ref)
                    {
                        branch.others.push(rank);
                    }
                }
            }
        }
        // A history received with a Welcome or GroupInfo reaches as far back as the sender's
        // lineage did; this device passes on no more than its own would hold.
        let newest = history.keys().next_back().copied().unwrap_or(0);
        Ok(history
            .into_iter()
            .filter(|(epoch, _)| epoch.saturating_add(branch_lineage::LINEAGE_EPOCHS) >= newest)
            .collect())
    }

    /// Application messages the app sent in `group` that wait for a pending membership change
    /// to be committed before they are encrypted.
    pub fn pending_deferred_sends(&self, group: &GroupId) -> Result<usize, MlsError> {
        Ok(self
            .read(|txn| deferred_sends::for_group(txn, group))?
            .len())
    }

    /// A message of another branch of `group`, at `epoch`: kept while a rollback could still
    /// reach its branch (some kept snapshot precedes its epoch), or, on a device that joined
    /// from a Welcome, while a Welcome of another branch could (the commit that added us may
    /// lose, and the re-add's Welcome then puts us on the message's branch), or, on a device
    /// that joined by external commit, while it asks a member whether its branch lost
    /// (`RejoinContested`); else refused. A kept external commit (`external`) is reported as
    /// `BranchContested`: a device rejoined on the other branch.
    pub(crate) fn other_branch(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
        external: bool,
    ) -> Result<Output, MlsError> {
        let oldest = self.read(|txn| epoch_snapshots::metas(txn, group))?;
        if oldest.first().is_some_and(|(oldest, _)| *oldest < epoch)
            || self.joined_epoch(group)?.is_some()
        {
            let lost_at = match buffered {
                None => self.own_commit_won_where_we_cannot_go(envelope, group, epoch)?,
                Some(_) => None,
            };
            // A device joined the other branch by external commit: the members there judged
            // ours lost (or one rejoined from them). Nothing else may ever tell this device if
            // the branches part beyond its window, where the first answer it got was "stay",
            // given by members that have moved since. Once per external commit that arrives.
            let rejoined_there = (external && buffered.is_none()).then_some(epoch);
            let mut output = self.buffer(envelope, group, epoch, buffered)?;
            if let Some(parting) = lost_at.or(rejoined_there) {
                output.events.push(Event::BranchContested {
                    group: group.clone(),
                    epoch: parting,
                });
            }
            return Ok(output);
        }
        if let Some(output) = self.contest_external_join_branch(envelope, group, epoch, buffered)? {
            return Ok(output);
        }
        Err(MlsError::OtherBranch {
            group: group.clone(),
            message_epoch: epoch,
        })
    }

    /// A commit of past epoch `epoch` with no snapshot left: if this device judged it before
    /// (merged it, or refused it as superseded), it is a duplicate — its de-duplication record
    /// may simply have expired — and not a sign of a fork. `buffered` is removed then.
    pub(crate) fn judged_before(
        &mut self,
        group: &GroupId,
        epoch: u64,
        envelope: &Envelope,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Option<Output>, MlsError> {
        if !self.read(|txn| commit_log::judged(txn, group, epoch, envelope.id()))? {
            return Ok(None);
        }
        if let Some(entry) = buffered {
            self.transaction(None, |client| {
                client.with_txn(|txn| epoch_buffer::remove(txn, entry))
            })?;
        }
        Ok(Some(Output {
            disposition: Disposition::Duplicate,
            ..Output::default()
        }))
    }

    /// A commit for a past epoch with no snapshot: counted, refused.
    pub(crate) fn fork_outside_window(
        &mut self,
        group: &GroupId,
        message_epoch: u64,
        current_epoch: u64,
    ) -> Result<Output, MlsError> {
        let oldest_epoch = self
            .read(|txn| epoch_snapshots::metas(txn, group))?
            .first()
            .map(|(e, _)| *e);
        self.outside_window.count(group);
        tracing::warn!(%group, message_epoch, current_epoch, "commit older than the fork window");
        Err(MlsError::ForkOutsideWindow {
            group: group.clone(),
            message_epoch,
            oldest_epoch,
            current_epoch,
        })
    }

    /// After the group moved onto another branch (or processed a commit): messages of the new
    /// epoch that waited, own commits to re-issue, then deferred messages.
    pub(crate) fn after_branch_change(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let mut output = self.replay_buffered(group)?;
        output.extend(self.reissue_commits(group)?);
        output.extend(self.repropose_leave(group)?);
        output.extend(self.send_deferred(group)?);
        Ok(output)
    }

    /// This device asked to leave and is still a member, but no pending proposal removes it:
    /// the commit that ended the epoch did not include its proposal (it lost, or the proposal
    /// arrived late). Propose again in this epoch.
    fn repropose_leave(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        if !self.groups.contains_key(group)
            || self.own_removal_pending(group)?
            || !self.read(|txn| group_meta::leave_requested(txn, group))?
        {
            return Ok(Output::default());
        }
        self.leave_group(group)
    }

    /// Makes the queued own commits of `group` again on the current branch, each filtered by
    /// what the branch already has, each a step of the operation that queued it (the rollback's,
    /// or a `tick`'s). One that no longer applies is dropped; a local failure fails the
    /// operation and keeps the queue.
    pub(crate) fn reissue_commits(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let mut output = Output::default();
        for (key, commit) in self.read(|txn| epoch_snapshots::reissues(txn, group))? {
            let not_reissued = if self.groups.contains_key(group) {
                match self.reissue(group, &commit) {
                    Ok(made) => {
                        output.extend(made);
                        None
                    }
                    // A local failure is not the intent's: keep it and fail the operation.
                    Err(error) if error.is_local() => return Err(error),
                    // The intent no longer applies on this branch (a package expired, the
                    // device is gone): drop it rather than retry forever.
                    Err(error) => {
                        tracing::info!(%group, %error, "own commit not re-issued");
                        Some(error.to_string())
                    }
                }
            } else {
                Some("this device no longer holds the group".to_owned())
            };
            if let Some(reason) = not_reissued {
                output.events.push(Event::CommitNotReissued {
                    group: group.clone(),
                    change: commit.change(),
                    reason,
                });
            }
            self.with_txn(|txn| BranchRecords::of(txn, group).reissue_done(key))?;
        }
        Ok(output)
    }

    fn reissue(&mut self, group: &GroupId, commit: &OwnCommit) -> Result<Output, MlsError> {
        match commit {
            OwnCommit::SelfUpdate => self.self_update(group),
            OwnCommit::Remove { devices } => {
                let wanted = |m: &core_identity::VerifiedMember| {
                    devices.iter().any(|(user, device)| {
                        m.user_id().as_bytes().as_slice() == user.as_slice()
                            && m.device_id().as_bytes().as_slice() == device.as_slice()
                    })
                };
                if !self.members(group)?.iter().any(wanted) {
                    return Ok(Output::default());
                }
                self.remove_where(group, wanted)
            }
            OwnCommit::Add { key_packages } => {
                let now = self.now();
                let current: Vec<_> = self
                    .members(group)?
                    .iter()
                    .map(crate::events::DeviceAddress::from)
                    .collect();
                let mut still_missing = Vec::new();
                for package in key_packages {
                    let (_, member) = crate::key_package_validation::validate(
                        package,
                        &self.provider,
                        now,
                        self.config.max_envelope_len,
                        &mut self.members,
                    )?;
                    if !current.contains(&crate::events::DeviceAddress::from(&member)) {
                        still_missing.push(package.clone());
                    }
                }
                if still_missing.is_empty() {
                    return Ok(Output::default());
                }
                self.add_members(group, &still_missing)
            }
        }
    }

    /// Inside the open transaction: puts `group` back in `epoch` from its snapshot and deletes
    /// the snapshots of that epoch and later ones. Returns what the abandoned epochs held of
    /// ours: commits to re-issue, messages to send again.
    pub(crate) fn restore_snapshot(
        &mut self,
        group: &GroupId,
        epoch: u64,
    ) -> Result<Abandoned, MlsError> {
        let held_epoch = self.groups.get(group).map(|state| state.epoch().as_u64());
        let abandoned =
            self.with_txn(|txn| BranchRecords::of(txn, group).roll_back_to(epoch, held_epoch))?;
        self.reload_group(group)?;
        if !self.groups.contains_key(group) {
            return Err(MlsError::Internal {
                what: "a restored snapshot holds no group",
            });
        }
        Ok(abandoned)
    }
}
