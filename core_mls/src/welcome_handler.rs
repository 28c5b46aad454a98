//! Joining a group from a Welcome.
//!
//! Pipeline, inside one transaction: match the Welcome to our key package ledger → OpenMLS
//! stages the join (decrypting with the package's private init key, which it deletes unless
//! last-resort) → verify every member's identity binding and the inviter's → merge → ledger
//! marks the package consumed (and a new last-resort package is made if that one was used) →
//! `Joined`. Any failure rolls the whole transaction back, so the key package stays usable for
//! a genuine Welcome.
//!
//! A Welcome for a group this device holds or held is judged against that state first, and a
//! state it replaces is left, by `welcome_branches` (the fork cases: docs/FORKS.md, section
//! 6); a used single-use key package is good only for a re-add to the group it joined.

use openmls::prelude::{StagedWelcome, Welcome};

use crate::branch_order::BranchHistory;
use crate::branch_records::BranchRecords;
use crate::branch_records::join_records::{JoinRecord, join_record};
use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::epoch_buffer::BufferedMessage;
use crate::error::MlsError;
use crate::events::{Event, Output};
use crate::group_id::GroupId;
use crate::key_package_manager::UnknownKeyPackageHint;
use crate::key_package_manager::ledger::JOINED_BY_PACKAGE_NAMESPACE;
use crate::key_package_manager::{self, ledger};
use crate::seen_messages;
use crate::welcome_branches::{HeldRefusal, WelcomeStanding};
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
        // A refused Welcome for a held group: whether it waits, and what it teaches.
        let mut refused: Option<HeldRefusal> = None;
        let refused_slot = &mut refused;
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
            let (replaces, ended_by) = match client.welcome_standing(
                &group_id,
                epoch,
                &commit_ref,
                &theirs,
                &matched,
                inviter_leaf.signature_key().as_slice(),
            )? {
                WelcomeStanding::Join => (false, None),
                WelcomeStanding::Replace { ended_by } => (true, ended_by),
                WelcomeStanding::Refused(refusal) => {
                    *refused_slot = Some(refusal);
                    return Err(MlsError::AlreadyJoined { group: group_id });
                }
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
                client.leave_replaced_branch(&group_id, ended_by)?;
            }
            let carried = client.carry_across_join(&group_id, epoch, &theirs)?;
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
                before: carried.before,
                leave_requested_before: carried.leave_requested_before,
            };
            client.with_txn(|txn| {
                seen_messages::record_envelope(txn, envelope.seen_id(), now)?;
                txn.put(
                    JOINED_BY_PACKAGE_NAMESPACE,
                    Key::from_segment(&matched.key_package_ref),
                    group_id.as_slice().to_vec(),
                )?;
                BranchRecords::of(txn, &group_id).joined_by_welcome(&record)
            })?;
            client.record_leaf_update(&group_id, now)?;
            let events = vec![Event::Joined {
                group: group_id.clone(),
                inviter,
                epoch,
            }];
            Ok((group_id, group, events))
        });
        if let (Err(MlsError::AlreadyJoined { group }), Some(refusal)) = (&joined, refused) {
            if let Some(lesson) = refusal.lesson {
                self.keep_lesson(group.clone(), lesson);
            }
            if let Some(epoch) = refusal.wait_at {
                let mut output = self.buffer(envelope, group, epoch, buffered)?;
                if let (Some(parting), None) = (refusal.contested_at, buffered) {
                    output.events.push(Event::BranchContested {
                        group: group.clone(),
                        epoch: parting,
                    });
                }
                return Ok(output);
            }
        }
        let (group_id, group, events) = joined?;
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
}
