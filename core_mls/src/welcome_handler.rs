//! Joining a group from a Welcome.
//!
//! Pipeline, inside one transaction: match the Welcome to our key package ledger → OpenMLS
//! stages the join (decrypting with the package's private init key, which it deletes unless
//! last-resort) → verify every member's identity binding and the inviter's → merge → ledger
//! marks the package consumed (and a new last-resort package is made if that one was used) →
//! `Joined`. Any failure rolls the whole transaction back, so the key package stays usable for
//! a genuine Welcome.
//!
//! A Welcome for a group this device already holds replaces the held state in two cases only
//! (see `fork_resolution`): it re-uses the single-use key package this device joined with, at
//! a later epoch — a member re-added us on the winning branch after the commit that first added
//! us lost; or its branch wins by the fork rule at the first epoch where the two branches differ
//! — two members added us concurrently (with no common epoch, a window of 0: the same epoch and
//! a smaller commit ref). Otherwise it is [`MlsError::AlreadyJoined`]. Its sender vouches for
//! the Welcome's group and history alone, so a Welcome that says the group went on from our
//! state must come from a member of it, and one that claims a commit beating ours at an epoch
//! we hold a snapshot of waits for that commit (docs/FORKS.md, section 6). A Welcome for a
//! group we were removed from, from a branch that lost to one we kept a snapshot of, is
//! [`MlsError::OtherBranch`].

use openmls::prelude::{OpenMlsProvider as _, StagedWelcome, Welcome};

use crate::branch_order::{BranchHistory, BranchOrder, compare_branches, parting_epoch};
use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::epoch_buffer::BufferedMessage;
use crate::error::MlsError;
use crate::events::{Event, Output};
use crate::group_id::GroupId;
use crate::group_meta;
use crate::join_records::{self, JoinRecord, join_record};
use crate::key_package_manager::UnknownKeyPackageHint;
use crate::key_package_manager::ledger::JOINED_BY_PACKAGE_NAMESPACE;
use crate::key_package_manager::{self, ledger};
use crate::{
    branch_lineage, commit_log, deferred_sends, dormant_branches, epoch_snapshots, seen_messages,
};
use spacepanda_core::Key;

impl MlsClient {
    pub(crate) fn handle_welcome(
        &mut self,
        envelope: &Envelope,
        welcome: Welcome,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        let candidates: Vec<Vec<u8>> = welcome
            .secrets()
            .iter()
            .map(|secret| secret.new_member().as_slice().to_vec())
            .collect();
        let now = self.now();
        let join_config = self.join_config();
        // A Welcome for a held group at a later epoch: the group went on without us (the
        // commit removing us has not arrived yet, or we are on a branch that lost). It waits
        // until we no longer hold the group.
        let mut wait_for_removal: Option<(GroupId, u64)> = None;
        let wait = &mut wait_for_removal;
        // Where a Welcome claims our branch lost, at an epoch this device cannot judge, from a
        // sender it cannot vouch for: the application asks a member.
        let mut contested_at: Option<u64> = None;
        let contested = &mut contested_at;
        // A refused Welcome from a member of our state still says which commits its sender
        // judged in the epochs our branches share (see `learn_judged`).
        let mut taught: Option<(GroupId, BranchHistory)> = None;
        let teach = &mut taught;
        let joined = self.transaction(None, |client| {
            if let Some(entry) = buffered {
                client.with_txn(|txn| crate::epoch_buffer::remove(txn, entry))?;
            }
            let matched =
                client.with_txn(|txn| key_package_manager::on_welcome(txn, &candidates, now))?;
            // OpenMLS deletes a single-use bundle while staging; it is kept for the fork window.
            let bundle = if matched.last_resort {
                None
            } else {
                key_package_manager::read_bundle(&client.provider, &matched.key_package_ref)?
            };
            let invalid = |e: openmls::prelude::WelcomeError<MlsError>| MlsError::InvalidWelcome {
                reason: e.to_string(),
            };
            // Whether a held group may be replaced is decided below, by our own rule.
            let staged = StagedWelcome::build_from_welcome(&client.provider, &join_config, welcome)
                .map_err(invalid)?
                .replace_old_group()
                .build()
                .map_err(invalid)?;
            let group_id = GroupId::from_openmls(staged.group_context().group_id());
            let epoch = staged.group_context().epoch().as_u64();
            let commit_ref = staged.group_context().confirmed_transcript_hash().to_vec();
            // Who sent it, as the Welcome's group says; its branch history must be signed by
            // that member's key (a relay may not alter what decides between branches).
            let inviter_leaf = staged
                .welcome_sender()
                .map_err(|e| MlsError::InvalidWelcome {
                    reason: e.to_string(),
                })?
                .clone();
            let theirs = match client.verified_history(
                &group_id,
                envelope,
                epoch,
                inviter_leaf.signature_key().as_slice(),
            )? {
                Some(history) => history,
                // A Welcome with no history (from an MLS client that is not SpacePanda) can
                // only join a group this device holds nothing of: there is nothing to judge.
                None if client.groups.contains_key(&group_id)
                    || !client.branch_history(&group_id)?.is_empty() =>
                {
                    return Err(MlsError::InvalidWelcome {
                        reason: "a Welcome for a group this device holds state of carries no \
                                 signed branch history"
                            .into(),
                    });
                }
                None => Vec::new(),
            };
            // For a Welcome that says the group went on without us: the commit that ended the
            // epoch we hold, on its branch.
            let mut ended_by: Option<crate::branch_order::EpochBranch> = None;
            let replaces = if client.groups.contains_key(&group_id) {
                let current = client.group(&group_id)?.epoch().as_u64();
                let ours = client.branch_history(&group_id)?;
                let order = compare_branches(&ours, current, &theirs, epoch);
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
                        let joined = client.with_txn(|txn| join_record(txn, &group_id))?;
                        joined.is_some_and(|joined| {
                            if matched.reused {
                                joined.key_package_ref == matched.key_package_ref
                                    && epoch > joined.epoch
                            } else {
                                epoch == joined.epoch && commit_ref < joined.commit_ref
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
                let sender_key = inviter_leaf.signature_key().as_slice();
                let sender_is_member = client
                    .group(&group_id)?
                    .members()
                    .any(|m| m.signature_key.as_slice() == sender_key);
                if sender_is_member {
                    *teach = Some((group_id.clone(), theirs.clone()));
                }
                let parting =
                    parting_epoch(&ours, &theirs).filter(|_| order == BranchOrder::TheirsWins);
                let parting_held = match parting {
                    Some(parting) => client.with_txn(|txn| {
                        Ok(epoch_snapshots::meta(txn, &group_id, parting)?.is_some())
                    })?,
                    None => false,
                };
                let vouched = match parting {
                    Some(_) if parting_held => false,
                    Some(parting) => {
                        if !sender_is_member {
                            *contested = Some(parting);
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
                        || contested.is_some()
                    {
                        *wait = Some((group_id.clone(), epoch));
                    }
                    return Err(MlsError::AlreadyJoined { group: group_id });
                }
                true
            } else {
                // Removed, maybe not for good: the epochs we kept snapshots of are judged by
                // the same rule. A Welcome from a branch that lost to ours is dead (its
                // committer rolls back and re-adds us if we are still not a member), and
                // joining it would drop the snapshots a rollback onto the winning branch needs.
                let ours = client.branch_history(&group_id)?;
                let our_epoch = ours.last().map_or(0, |(e, _)| e.saturating_add(1));
                let order = compare_branches(&ours, our_epoch, &theirs, epoch);
                if order == BranchOrder::OursWins {
                    return Err(MlsError::OtherBranch {
                        group: group_id,
                        message_epoch: epoch,
                    });
                }
                false
            };
            // A package already used is only good for a re-add to the group it joined (after
            // the commit that added us lost, possibly after we were removed meanwhile), never
            // for another group, whether held or not.
            let joined_with_it = client.with_txn(|txn| {
                Ok(txn.get(
                    JOINED_BY_PACKAGE_NAMESPACE,
                    &Key::from_segment(&matched.key_package_ref),
                )?)
            })?;
            let reuse_allowed = joined_with_it.as_deref() == Some(group_id.as_slice())
                && (replaces || !client.groups.contains_key(&group_id));
            if matched.reused && !reuse_allowed {
                return Err(MlsError::NoMatchingKeyPackage {
                    key_package_ref: hex::encode(&matched.key_package_ref),
                    hint: UnknownKeyPackageHint::AlreadyConsumed,
                });
            }
            let members: Vec<_> = staged.members().collect();
            for member in &members {
                client
                    .members
                    .verify(&member.credential, &member.signature_key)?;
            }
            let inviter = client.members.verify(
                inviter_leaf.credential(),
                inviter_leaf.signature_key().as_slice(),
            )?;
            if replaces {
                if let Some(ended_by) = ended_by {
                    // Our epoch is on the Welcome's branch: a competing commit of it that wins
                    // undoes the branch that re-added us, and needs the state we hold now.
                    client.snapshot_as_ended_by(&group_id, ended_by)?;
                }
                client.abandon_joined_branch(&group_id)?;
            }
            // Snapshots of an earlier membership (of the branch this Welcome replaces, or kept
            // in case a removal lost) stay where the Welcome's branch went through the same
            // commit: a competing commit that wins there undoes this join too, and puts us
            // back where we were a member. The others describe a branch we are not on.
            let kept_from = client.with_txn(|txn| {
                let mut kept_from = None;
                for (kept, meta) in epoch_snapshots::metas(txn, &group_id)? {
                    let on_their_branch = kept < epoch
                        && theirs.iter().any(|(e, b)| {
                            *e == kept && b.merged.commit_ref == meta.merged.commit_ref
                        });
                    if on_their_branch {
                        kept_from = kept_from.or(Some(kept));
                    } else {
                        // What this device added or removed there is done again once it
                        // is in.
                        epoch_snapshots::queue_membership_change(txn, &group_id, &meta)?;
                        dormant_branches::expire_snapshot(txn, &group_id, kept)?;
                    }
                }
                // Likewise the lineage from before the window; an external join made before
                // describes a state this Welcome replaces.
                branch_lineage::keep_common_prefix(txn, &group_id, &theirs)?;
                join_records::forget_external_join(txn, &group_id)?;
                Ok(kept_from)
            })?;
            let (before, leave_requested_before) = match kept_from {
                Some(oldest) => client.with_txn(|txn| {
                    let before = join_record(txn, &group_id)?
                        .map(|record| Box::new(record.reaching_back_to(oldest)));
                    Ok((before, group_meta::leave_requested(txn, &group_id)?))
                })?,
                None => (None, false),
            };
            let group =
                staged
                    .into_group(&client.provider)
                    .map_err(|e| MlsError::InvalidWelcome {
                        reason: e.to_string(),
                    })?;
            if let Some(bundle) = &bundle {
                key_package_manager::restore_bundle(
                    &client.provider,
                    &matched.key_package_ref,
                    bundle,
                )?;
            }
            if matched.replace_last_resort {
                // The used last-resort package stays usable until it expires; offer a new one
                // (once: a second use of the old one finds the replacement already offered).
                let entry = key_package_manager::build_key_package(
                    &client.provider,
                    &client.key_package_author(),
                    &client.config.key_packages,
                    true,
                    now,
                )?;
                client.with_txn(|txn| ledger::store(txn, &entry))?;
            }
            let record = JoinRecord {
                epoch,
                key_package_ref: matched.key_package_ref.clone(),
                commit_ref,
                history: theirs.into_iter().filter(|(e, _)| *e < epoch).collect(),
                before,
                leave_requested_before,
            };
            client.with_txn(|txn| {
                seen_messages::record_envelope(txn, envelope.seen_id(), now)?;
                join_records::write_join_record(txn, &group_id, &record)?;
                txn.put(
                    JOINED_BY_PACKAGE_NAMESPACE,
                    Key::from_segment(&matched.key_package_ref),
                    group_id.as_slice().to_vec(),
                )?;
                // (Re-)added: a leave asked for earlier no longer stands.
                group_meta::forget_leave_request(txn, &group_id)
            })?;
            client.record_leaf_update(&group_id, now)?;
            let events = vec![Event::Joined {
                group: group_id.clone(),
                inviter,
                epoch,
            }];
            Ok((group_id, group, events))
        });
        if let (Err(MlsError::AlreadyJoined { .. }), Some((group, theirs))) = (&joined, taught) {
            self.keep_lesson(group, theirs);
        }
        let (group_id, group, events) = match joined {
            Err(MlsError::AlreadyJoined { .. }) if wait_for_removal.is_some() => {
                let (group, epoch) = wait_for_removal.ok_or(MlsError::Internal {
                    what: "a deferred Welcome lost its group",
                })?;
                let mut output = self.buffer(envelope, &group, epoch, buffered)?;
                if let (Some(parting), None) = (contested_at, buffered) {
                    output.events.push(Event::BranchContested {
                        group,
                        epoch: parting,
                    });
                }
                return Ok(output);
            }
            other => other?,
        };
        self.touch(&group_id);
        self.rosters.remove(&group_id);
        self.groups.insert(group_id.clone(), group);
        let mut output = Output {
            events,
            ..Output::default()
        };
        // Messages that raced ahead of the Welcome, then what we did on an abandoned branch:
        // adds and removes first, so a device removed there cannot read what we sent after.
        output.extend(self.replay_buffered(&group_id)?);
        output.extend(self.reissue_commits(&group_id)?);
        output.extend(self.send_deferred(&group_id)?);
        Ok(output)
    }

    /// The branch history the Welcome this device joined `group` with carried.
    pub(crate) fn joined_history(&self, group: &GroupId) -> Result<BranchHistory, MlsError> {
        let record = self.read(|txn| join_record(txn, group))?;
        Ok(record.map(|r| r.history).unwrap_or_default())
    }

    /// The epoch this device joined `group` at from a Welcome (none if it created the group).
    pub(crate) fn joined_epoch(&self, group: &GroupId) -> Result<Option<u64>, MlsError> {
        let record = self.read(|txn| join_record(txn, group))?;
        Ok(record.map(|r| r.epoch))
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
        self.with_txn(|txn| {
            for message in epoch_snapshots::take_sent_after(txn, group, None)? {
                deferred_sends::push(txn, group, &message)?;
            }
            Ok(())
        })
    }
}
