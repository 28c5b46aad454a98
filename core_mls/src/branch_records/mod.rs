//! The records of a group's branches, changed in one place: the snapshots of past epochs with
//! the commits judged in them and what this device did there, the sent log and the re-issue
//! queue (`epoch_snapshots`), the branches it left (`dormant_branches`), the lineage before the
//! window (`branch_lineage`), where it joined from (`join_records`), its leave requests and the
//! removal record (`group_meta`).
//!
//! [`BranchRecords`] changes them at the moments a group's branch changes, and those modules are
//! its parts (their writers are `pub(super)`: nothing else can call them):
//! - a merge: [`before_merge`](BranchRecords::before_merge) starts the undo log,
//!   [`after_merge`](BranchRecords::after_merge) keeps the epoch left as a snapshot with the
//!   merged commit's rank and retires what left the window;
//! - a rollback: [`roll_back_to`](BranchRecords::roll_back_to) keeps the branch left as a
//!   dormant one and puts back the group's state and records of the restored epoch;
//!   [`queue_abandoned`](BranchRecords::queue_abandoned) queues what the abandoned branch did,
//!   to be made again;
//! - a Welcome: [`carried_across_welcome`](BranchRecords::carried_across_welcome) sorts the
//!   snapshots of an earlier membership, [`joined_by_welcome`](BranchRecords::joined_by_welcome)
//!   records the join;
//! - leaving a branch wholesale: [`resend_sent`](BranchRecords::resend_sent) (a Welcome or an
//!   external join replaces the state) and
//!   [`left_for_external_join`](BranchRecords::left_for_external_join); leaving the group:
//!   [`left_group`](BranchRecords::left_group), and [`removed_at`](BranchRecords::removed_at)
//!   when a commit removed this device;
//! - time: [`expire`](BranchRecords::expire), run by `tick`;
//! - and what happens in between: a message sent, a Welcome sent, the commits judged in an
//!   epoch, what a committer judged, a dormant branch woken, a re-issue done, an external join
//!   and its contest, a leave requested.
//!
//! Which of those moments has come, and what happens to the OpenMLS state and to the groups in
//! memory, is the operations' (`mls_processing`, `group_manager`, `fork_resolution`,
//! `competing_commit`, `welcome_branches`, `external_join`, `group_removal`,
//! `snapshot_capture`). The design: docs/FORKS.md.
//!
//! Invariant: records only, inside the transaction it is given; no OpenMLS group and no
//! `MlsClient`.

pub(crate) mod branch_lineage;
pub(crate) mod dormant_branches;
pub(crate) mod epoch_snapshots;
pub(crate) mod join_records;

use std::collections::BTreeMap;

use spacepanda_core::{Key, Timestamp, Transaction};

use crate::app_message::AppMessage;
use crate::branch_order::{BranchHistory, CommitRank};
use crate::config::MlsConfig;
use crate::deferred_sends;
use crate::error::MlsError;
use crate::events::DeviceAddress;
use crate::group_id::GroupId;
use crate::group_meta::{self, SUPERSEDED_COUNTER};
use crate::storage::epoch_members;
use crate::storage::key_layout::{
    ENCRYPTION_KEY_NAMESPACE, GROUP_NAMESPACE, PSK_NAMESPACE, SIGNATURE_KEY_NAMESPACE, group_prefix,
};
use epoch_snapshots::{Candidate, OwnCommit, SnapshotMeta};
use join_records::{EXTERNAL_JOIN, ExternalJoin, JOINED, JoinRecord, join_record};

/// Namespaces outside the group prefix that OpenMLS's merge may write: their prior values go
/// into the snapshot's undo entries.
const UNDO_NAMESPACES: [&str; 3] = [
    ENCRYPTION_KEY_NAMESPACE,
    SIGNATURE_KEY_NAMESPACE,
    PSK_NAMESPACE,
];

/// The epoch a merge leaves, as it was before the merge (`snapshot_capture::begin_snapshot`).
pub(crate) struct SnapshotStart {
    pub(crate) epoch: u64,
    pub(crate) branch_tag: Vec<u8>,
    pub(crate) confirmed_transcript_hash: Vec<u8>,
    /// The group's OpenMLS prefix.
    pub(crate) entries: Vec<(Key, Vec<u8>)>,
}

impl Drop for SnapshotStart {
    fn drop(&mut self) {
        // The copied prefix holds the epoch's secrets.
        for (_, value) in &mut self.entries {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

/// The commit a merge took the group out of an epoch with.
pub(crate) struct MergedCommit {
    pub(crate) rank: CommitRank,
    pub(crate) envelope: Vec<u8>,
    /// What this device meant by it, if it made it (made again if its branch loses).
    pub(crate) own_commit: Option<OwnCommit>,
    /// The device that joined by it, if it was an external commit.
    pub(crate) external_joiner: Option<DeviceAddress>,
}

/// What a rollback abandoned.
pub(crate) struct Abandoned {
    pub(crate) own_commits: Vec<OwnCommit>,
    pub(crate) sent: Vec<AppMessage>,
    /// Devices that joined the abandoned branch by external commit, above the epoch where it
    /// lost, when this device's own commit is the one that lost there: nobody else tells
    /// them (the winning commit is not addressed to them; it is how they learn to rejoin,
    /// `RejoinContested`), and one committer tells each once.
    pub(crate) external_joiners: Vec<DeviceAddress>,
}

/// What of an earlier membership the join record keeps.
pub(crate) struct CarriedRecords {
    /// The join record before this join, trimmed to what a rollback can still reach.
    pub(crate) before: Option<Box<JoinRecord>>,
    /// Whether a leave was requested before this join.
    pub(crate) leave_requested_before: bool,
}

/// One group's branch records, inside the open transaction.
pub(crate) struct BranchRecords<'t> {
    txn: &'t mut Transaction,
    group: &'t GroupId,
}

impl<'t> BranchRecords<'t> {
    pub(crate) fn of(txn: &'t mut Transaction, group: &'t GroupId) -> Self {
        Self { txn, group }
    }

    /// Before a commit out of the current epoch is merged: what the merge overwrites outside
    /// the group's prefix is logged from here on, to be undone by a rollback.
    pub(crate) fn before_merge(&mut self) {
        self.txn.start_undo_log(&UNDO_NAMESPACES);
    }

    /// After the merge: keeps the epoch left (`start`) as a snapshot with the commit merged
    /// out of it (none with `fork_window_epochs` 0), retires to the lineage what left the window,
    /// and drops dormant branches and sent messages no kept snapshot can need.
    pub(crate) fn after_merge(
        &mut self,
        start: &SnapshotStart,
        merged: MergedCommit,
        now: Timestamp,
        config: &MlsConfig,
    ) -> Result<(), MlsError> {
        let (txn, group) = (&mut *self.txn, self.group);
        let window = config.fork_window_epochs;
        let undo = txn.take_undo_log();
        if window > 0 {
            let meta = SnapshotMeta {
                taken_at_ms: now.unix_millis(),
                branch_tag: start.branch_tag.clone(),
                confirmed_transcript_hash: start.confirmed_transcript_hash.clone(),
                merged: merged.rank.clone(),
                own_commit: merged.own_commit,
                welcome: None,
                external_joiner: merged
                    .external_joiner
                    .map(|d| (*d.user_id.as_bytes(), *d.device_id.as_bytes())),
                carried_removals: Vec::new(),
            };
            epoch_snapshots::store(txn, group, start.epoch, &start.entries, undo, &meta)?;
            let candidate = Candidate {
                rank: merged.rank,
                envelope: merged.envelope,
            };
            epoch_snapshots::set_candidates(txn, group, start.epoch, &[candidate])?;
        }
        for (epoch, _) in epoch_snapshots::metas(txn, group)? {
            if epoch.saturating_add(window) <= start.epoch {
                branch_lineage::retire_snapshot(txn, group, epoch)?;
            }
        }
        let oldest = epoch_snapshots::metas(txn, group)?.first().map(|(e, _)| *e);
        dormant_branches::forget_before(txn, group, oldest)?;
        // Messages of epochs no kept snapshot precedes can never need sending again (unless a
        // recent external join may still lose).
        let bound = join_records::sent_log_prune_bound(
            txn,
            group,
            oldest,
            Some(start.epoch.saturating_add(1)),
            config,
            now,
        )?;
        epoch_snapshots::prune_sent_through(txn, group, bound)
    }

    /// A rollback to the snapshot of `epoch`; `held_epoch`: the group's current epoch, if this
    /// device holds it (else it was removed on the branch being left).
    ///
    /// The branch being left may win again: it is kept whole (`dormant_branches`). Newest
    /// first, each snapshot from `epoch` on undoes what its merge wrote outside the group's
    /// prefix, and goes; the group's prefix becomes the one kept at `epoch`. The device is no
    /// longer removed, if that branch had removed it, and a join after `epoch` happened on
    /// it, so the join record (and leave request) from before that join stand again. Returns
    /// what the abandoned branch did: this device's own commits there (and removals its
    /// commits carried for others' proposals), what it sent, and who joined it by external
    /// commit after this device's own commit lost.
    pub(crate) fn roll_back_to(
        &mut self,
        epoch: u64,
        held_epoch: Option<u64>,
    ) -> Result<Abandoned, MlsError> {
        self.keep_dormant(epoch, held_epoch)?;
        let (txn, group) = (&mut *self.txn, self.group);
        let metas = epoch_snapshots::metas(txn, group)?;
        let lost_own_commit = metas
            .iter()
            .any(|(e, meta)| *e == epoch && meta.own_commit.is_some());
        let external_joiners: Vec<DeviceAddress> = metas
            .iter()
            .filter(|(e, _)| lost_own_commit && *e > epoch)
            .filter_map(|(_, meta)| meta.external_joiner)
            .map(|(user, device)| DeviceAddress {
                user_id: core_identity::UserId::from_bytes(user),
                device_id: core_identity::DeviceId::from_bytes(device),
            })
            .collect();
        let mut own_commits = Vec::new();
        // Newest first: each undo puts back what its merge found.
        for (snapshot_epoch, meta) in metas.iter().rev().filter(|(e, _)| *e >= epoch) {
            let (prefix, undo) = epoch_snapshots::contents(txn, group, *snapshot_epoch)?;
            for (namespace, key, prior) in undo {
                match prior {
                    Some(value) => txn.put(&namespace, key, value)?,
                    None => txn.delete(&namespace, key)?,
                }
            }
            if *snapshot_epoch == epoch {
                txn.delete_prefix(GROUP_NAMESPACE, &group_prefix(group.as_slice()))?;
                for (key, value) in prefix {
                    txn.put(GROUP_NAMESPACE, key, value)?;
                }
            }
            // A removal our commit carried for a member's proposal (a leave) of an epoch after
            // the one restored went with that epoch: the restored state does not hold the
            // proposal, and the member that made it, on the branch that lost, may hold nothing
            // there to ask again with. One of the restored epoch is still pending in it (and
            // its maker is back in that epoch).
            if *snapshot_epoch > epoch && !meta.carried_removals.is_empty() {
                own_commits.push((
                    *snapshot_epoch,
                    OwnCommit::Remove {
                        devices: meta.carried_removals.clone(),
                    },
                ));
            }
            if let Some(commit) = &meta.own_commit {
                own_commits.push((*snapshot_epoch, commit.clone()));
            }
            epoch_snapshots::delete(txn, group, *snapshot_epoch)?;
        }
        own_commits.sort_by_key(|(e, _)| *e);
        group_meta::forget_removal(txn, group)?;
        join_records::rewind_join_record(txn, group, epoch)?;
        let sent = epoch_snapshots::take_sent_after(txn, group, Some(epoch))?;
        Ok(Abandoned {
            own_commits: own_commits.into_iter().map(|(_, c)| c).collect(),
            sent,
            external_joiners,
        })
    }

    /// The branch a rollback to `epoch` leaves, kept whole: its snapshots from `epoch` on and
    /// its head (the group's prefix now, if held at `held_epoch`; else the epoch it was
    /// removed at).
    fn keep_dormant(&mut self, epoch: u64, held_epoch: Option<u64>) -> Result<(), MlsError> {
        let (txn, group) = (&mut *self.txn, self.group);
        let metas: Vec<(u64, SnapshotMeta)> = epoch_snapshots::metas(txn, group)?
            .into_iter()
            .filter(|(e, _)| *e >= epoch)
            .collect();
        if metas.is_empty() {
            return Ok(());
        }
        let head_epoch = match held_epoch {
            Some(current) => current,
            None => group_meta::removed_at(txn, group)?.unwrap_or(epoch.saturating_add(1)),
        };
        let head_prefix = if held_epoch.is_some() {
            let mut entries = txn.scan_prefix(GROUP_NAMESPACE, &group_prefix(group.as_slice()))?;
            // In key order, as the provider lists a group's entries.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries
        } else {
            Vec::new()
        };
        dormant_branches::keep(
            txn,
            group,
            epoch,
            &metas,
            held_epoch.is_some(),
            head_epoch,
            &head_prefix,
        )
    }

    /// After a rollback onto a winning branch: this device's own commits on the abandoned
    /// branch are queued to be made again and its messages to be sent again, and the rollback
    /// is counted (`ForkReport::superseded`).
    pub(crate) fn queue_abandoned(&mut self, abandoned: &Abandoned) -> Result<(), MlsError> {
        for commit in &abandoned.own_commits {
            epoch_snapshots::queue_reissue(self.txn, self.group, commit)?;
        }
        for message in &abandoned.sent {
            deferred_sends::push(self.txn, self.group, message)?;
        }
        group_meta::bump_counter(self.txn, self.group, SUPERSEDED_COUNTER)
    }

    /// A Welcome at `epoch` with the branch history `theirs`: snapshots of an earlier
    /// membership (of the branch the Welcome replaces, or kept in case a removal lost) stay
    /// where the Welcome's branch went through the same commit — a competing commit that wins
    /// there undoes this join too, and puts this device back where it was a member. The others
    /// describe a branch it is not on: what it added or removed there is queued to be done
    /// again once it is in, and they go. Returns what the join record keeps of the earlier
    /// membership.
    pub(crate) fn carried_across_welcome(
        &mut self,
        epoch: u64,
        theirs: &BranchHistory,
    ) -> Result<CarriedRecords, MlsError> {
        let (txn, group) = (&mut *self.txn, self.group);
        let mut kept_from = None;
        for (kept, meta) in epoch_snapshots::metas(txn, group)? {
            let on_their_branch = kept < epoch
                && theirs
                    .iter()
                    .any(|(e, b)| *e == kept && b.merged.commit_ref == meta.merged.commit_ref);
            if on_their_branch {
                kept_from = kept_from.or(Some(kept));
            } else {
                epoch_snapshots::queue_membership_change(txn, group, &meta)?;
                dormant_branches::expire_snapshot(txn, group, kept)?;
            }
        }
        // Likewise the lineage from before the window; an external join made before describes
        // a state this Welcome replaces.
        branch_lineage::keep_common_prefix(txn, group, theirs)?;
        join_records::forget_external_join(txn, group)?;
        Ok(match kept_from {
            Some(oldest) => CarriedRecords {
                before: join_record(txn, group)?
                    .map(|record| Box::new(record.reaching_back_to(oldest))),
                leave_requested_before: group_meta::leave_requested(txn, group)?,
            },
            None => CarriedRecords {
                before: None,
                leave_requested_before: false,
            },
        })
    }

    /// The join a Welcome made: where this device joined from, and a leave asked for earlier
    /// no longer stands (it was (re-)added).
    pub(crate) fn joined_by_welcome(&mut self, record: &JoinRecord) -> Result<(), MlsError> {
        join_records::write_join_record(self.txn, self.group, record)?;
        group_meta::forget_leave_request(self.txn, self.group)
    }

    /// This device leaves its branch wholesale (a Welcome or an external join replaces its
    /// state): every message it sent there is to be sent again, on the branch it goes to.
    pub(crate) fn resend_sent(&mut self) -> Result<(), MlsError> {
        for message in epoch_snapshots::take_sent_after(self.txn, self.group, None)? {
            deferred_sends::push(self.txn, self.group, &message)?;
        }
        Ok(())
    }

    /// This device joined by external commit onto the branch `joined` (the GroupInfo's
    /// history): the adds and removes it made on a branch it leaves are queued to be made
    /// again, every snapshot goes with the state it described, and so do the lineage and the
    /// group's metadata (the GroupInfo's history says where the group went).
    pub(crate) fn left_for_external_join(
        &mut self,
        joined: &BranchHistory,
    ) -> Result<(), MlsError> {
        let (txn, group) = (&mut *self.txn, self.group);
        let mut metas = epoch_snapshots::metas(txn, group)?;
        metas.sort_by_key(|(epoch, _)| *epoch);
        for (epoch, meta) in &metas {
            let on_joined_branch = joined
                .iter()
                .any(|(e, branch)| e == epoch && branch.merged == meta.merged);
            if !on_joined_branch {
                epoch_snapshots::queue_membership_change(txn, group, meta)?;
            }
        }
        for (epoch, _) in metas {
            dormant_branches::expire_snapshot(txn, group, epoch)?;
        }
        branch_lineage::forget(txn, group)?;
        group_meta::forget_group(txn, group)
    }

    /// This device no longer holds the group (a commit removed it, its own leave was committed, or
    /// it left as the last member): the group's metadata goes, but where it joined from (by Welcome
    /// or by external commit) outlives the group. A rollback may restore it, and then commits from
    /// before the join must still be recognised as such; and the join is part of the branch history
    /// a Welcome is judged against while the device is out (without it, a device removed on a
    /// branch its own external commit started would judge a re-add by the epochs after its join
    /// only, where both branches can hold the same re-made commit, and take its losing branch for
    /// the winner). The snapshots stay for the window: the removal may lose.
    pub(crate) fn left_group(&mut self) -> Result<(), MlsError> {
        group_meta::forget_group_keeping(self.txn, self.group, &[JOINED, EXTERNAL_JOIN])
    }

    /// A commit removed this device: the epoch the group entered without it.
    pub(crate) fn removed_at(&mut self, epoch: u64) -> Result<(), MlsError> {
        group_meta::mark_removed(self.txn, self.group, epoch)
    }

    /// This device asked to leave: proposed again if a rollback restores a state without the
    /// proposal (kept outside the group's metadata, which a removal deletes).
    pub(crate) fn leave_requested(&mut self) -> Result<(), MlsError> {
        group_meta::request_leave(self.txn, self.group)
    }

    /// This device sent `message` in `epoch`: kept while a rollback could abandon the epoch, to
    /// go out again on the winning branch.
    pub(crate) fn sent(&mut self, epoch: u64, message: &AppMessage) -> Result<(), MlsError> {
        epoch_snapshots::log_sent(self.txn, self.group, epoch, message)
    }

    /// The Welcome this device's own commit out of `epoch` sent, sent again if the device comes
    /// back to that branch.
    pub(crate) fn sent_welcome(
        &mut self,
        epoch: u64,
        welcome: &epoch_snapshots::SentWelcome,
    ) -> Result<(), MlsError> {
        epoch_snapshots::set_welcome(self.txn, self.group, epoch, welcome)
    }

    /// The removals this device's own commit out of `epoch` carried for others' proposals (a
    /// member's leave): made again if that epoch is abandoned.
    pub(crate) fn carried_removals(
        &mut self,
        epoch: u64,
        devices: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), MlsError> {
        epoch_snapshots::set_carried_removals(self.txn, self.group, epoch, devices)
    }

    /// Every commit of `epoch` judged so far, the merged one included.
    pub(crate) fn judged(&mut self, epoch: u64, candidates: &[Candidate]) -> Result<(), MlsError> {
        epoch_snapshots::set_candidates(self.txn, self.group, epoch, candidates)
    }

    /// A Welcome says the group went on from the epoch this device holds with a commit it
    /// never saw (`candidates`, from the Welcome's history): that epoch is kept as a snapshot
    /// (`entries`, `meta`), as if this device had merged it.
    pub(crate) fn ended_by_welcome(
        &mut self,
        epoch: u64,
        entries: &[(Key, Vec<u8>)],
        meta: &SnapshotMeta,
        candidates: &[Candidate],
    ) -> Result<(), MlsError> {
        epoch_snapshots::store(self.txn, self.group, epoch, entries, Vec::new(), meta)?;
        epoch_snapshots::set_candidates(self.txn, self.group, epoch, candidates)
    }

    /// A dormant branch (left at `epoch`, merged there by `merged_ref`) wins after all: the
    /// group's state and snapshots become that branch's again.
    pub(crate) fn woke_dormant(
        &mut self,
        epoch: u64,
        merged_ref: &[u8],
        meta: &dormant_branches::DormantMeta,
    ) -> Result<(), MlsError> {
        self.txn
            .delete_prefix(GROUP_NAMESPACE, &group_prefix(self.group.as_slice()))?;
        dormant_branches::restore(self.txn, self.group, epoch, merged_ref, meta)
    }

    /// The commits a merged commit's committer judged in epochs this device's branch (`ours`)
    /// shares with it, that this device never saw: added to those epochs' judged commits.
    pub(crate) fn learned(
        &mut self,
        ours: &BranchHistory,
        judged: &BranchHistory,
    ) -> Result<usize, MlsError> {
        branch_lineage::learn(self.txn, self.group, ours, judged)
    }

    /// This device joined by external commit: the join's record (and later, that it is
    /// contested).
    pub(crate) fn external_join(&mut self, record: &ExternalJoin) -> Result<(), MlsError> {
        join_records::write_external_join(self.txn, self.group, record)
    }

    /// An own commit of the re-issue queue (its entry `key`) was made again on the winning
    /// branch, or given up with an event.
    pub(crate) fn reissue_done(&mut self, key: Key) -> Result<(), MlsError> {
        epoch_snapshots::forget_reissue(self.txn, key)
    }

    /// `tick`, over every group: snapshots older than the fork window retire to the lineage
    /// (also of groups this device was removed from on a branch that may still lose), and what
    /// only they kept goes — dormant branches and sent messages they precede, and, for a
    /// group not `held` (current epochs by group), its lineage, past member lists and leave
    /// request once no snapshot can restore it.
    pub(crate) fn expire(
        txn: &mut Transaction,
        now: Timestamp,
        held: &BTreeMap<GroupId, u64>,
        config: &MlsConfig,
    ) -> Result<(), MlsError> {
        let mut touched: Vec<GroupId> = Vec::new();
        for (group, epoch, taken_at) in epoch_snapshots::all(txn)? {
            if now.duration_since(taken_at) >= config.fork_window {
                branch_lineage::retire_snapshot(txn, &group, epoch)?;
                touched.push(group);
            }
        }
        touched.dedup();
        for group in touched {
            let oldest = epoch_snapshots::metas(txn, &group)?
                .first()
                .map(|(e, _)| *e);
            if oldest.is_none() && !held.contains_key(&group) {
                // The last snapshot of a group this device no longer holds: its branch is
                // nothing to this device any more.
                branch_lineage::forget(txn, &group)?;
            }
            dormant_branches::forget_before(txn, &group, oldest)?;
            let current = held.get(&group).copied();
            let bound =
                join_records::sent_log_prune_bound(txn, &group, oldest, current, config, now)?;
            epoch_snapshots::prune_sent_through(txn, &group, bound)?;
        }
        // Past member lists of a group this device no longer holds outlive it only while a
        // snapshot could restore it (`storage::epoch_members`).
        for raw in epoch_members::groups(txn)? {
            let group = GroupId::from_slice(&raw);
            if !held.contains_key(&group) && epoch_snapshots::metas(txn, &group)?.is_empty() {
                epoch_members::forget_group(txn, &raw)?;
            }
        }
        // A leave request outlives the group only while a rollback could restore it.
        for group in group_meta::leave_requests(txn)? {
            if !held.contains_key(&group) && epoch_snapshots::metas(txn, &group)?.is_empty() {
                group_meta::forget_leave_request(txn, &group)?;
            }
        }
        Ok(())
    }
}
