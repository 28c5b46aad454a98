//! Rejoining a group by external commit (RFC 9420 §12.4.3.2): the way back for a device that
//! cannot follow the group any more — it fell outside the fork window on a losing branch, was
//! restored from an old backup, or lost its store — and the way in for a new device of a user
//! who is already a member.
//!
//! **Member side.** [`MlsClient::export_group_info`] gives a signed GroupInfo of the current
//! epoch, with the ratchet tree and the external public key, to a device of a user who has a
//! device in the group (the caller — the network layer — authenticated that device). Nobody
//! else gets one: the tree names every member.
//!
//! **Joiner side.** [`MlsClient::join_by_external_commit`], one transaction: the GroupInfo is
//! checked (OpenMLS verifies its signature against the signer's leaf; every leaf's identity
//! binding is verified as for a Welcome), this device's user must have a device in it, the
//! commit removes this device's old leaf (same user and device id, under whatever key: a
//! device restored after losing its store has a new one; see `vendor/README.md`), the state
//! this device held of the group (a losing branch) is replaced — the adds and removes it
//! committed there and the messages it sent there are made again on the group's branch — and
//! `Rejoined` tells the application that what was sent while it was away is lost here. Whether
//! the join stands afterwards (it may have raced a commit) is `rejoin_advice`'s.
//!
//! **Receivers** accept an external commit only from a device whose user has a device in the
//! group in that epoch (the leaf it replaces counts; a removed user cannot come back this
//! way), and only if every leaf it removes is that same device's (`check_external_commit`). In the fork rule an external
//! commit ranks after every member's commit of its epoch (`branch_order`): it can only win an
//! epoch nobody else ended, so it never undoes what members did, and a joiner whose commit loses
//! rejoins from a newer GroupInfo.

use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::{
    LeafNodeIndex, MlsGroup, MlsMessageOut, OpenMlsProvider as _, ProcessedMessage,
    ProcessedMessageContent,
};

use core_identity::{UserId, VerifiedMember};

use crate::branch_order::{BranchHistory, CommitRank, EpochBranch};
use crate::branch_records::BranchRecords;
use crate::branch_records::join_records::{ExternalJoin, external_join as read_external_join};
use crate::client::MlsClient;
use crate::envelope::{Envelope, EnvelopeKind};
use crate::error::MlsError;
use crate::events::{Event, Output, Recipients};
use crate::group_id::GroupId;
use crate::key_package_manager::DeviceSigner;
use crate::mls_processing::FollowUp;
use crate::mls_wire::{encode, parse_group_info_envelope};
use crate::rejoin_advice::RejoinAdvice;
use crate::seen_messages;
use crate::signed_context::{decode_history, encode_history};

impl MlsClient {
    /// A signed GroupInfo of `group`'s current epoch, with the ratchet tree and the external
    /// public key, as envelope bytes (kind `GroupInfo`) for a device of `for_user` to rejoin
    /// with ([`join_by_external_commit`](Self::join_by_external_commit)).
    ///
    /// Refused ([`MlsError::RejoinRefused`]) unless `for_user` has a device in the group: the
    /// tree names every member, and only a member's user may rejoin. The caller authenticates
    /// the device asking (core_dht does, by its certified key). Changes nothing.
    pub fn export_group_info(
        &mut self,
        group: &GroupId,
        for_user: &UserId,
    ) -> Result<Vec<u8>, MlsError> {
        let _time = self.operation();
        let members = self.members(group)?;
        if !members.iter().any(|m| m.user_id() == *for_user) {
            return Err(MlsError::RejoinRefused {
                group: group.clone(),
                reason: "the user asking has no device in the group",
            });
        }
        let signer = DeviceSigner(self.device.signature_key_pair());
        let group_info = self
            .group(group)?
            .export_group_info(self.provider.crypto(), &signer, true)
            .map_err(|e| MlsError::openmls("export a group info", e))?;
        let payload = encode(&group_info)?;
        // The branch this member is on, over its fork window, signed: a device asking it can
        // tell whether it is merely behind on the same branch (see `rejoin_advice`).
        let epoch = self.group(group)?.epoch().as_u64();
        let history = encode_history(group.as_slice(), epoch, &self.branch_history(group)?, |p| {
            self.sign_context(p)
        })
        .ok_or(MlsError::Internal {
            what: "a branch history does not fit its format",
        })?;
        Ok(Envelope::with_context(EnvelopeKind::GroupInfo, payload, &history).to_bytes())
    }

    /// Joins the group `group_info` (envelope bytes from
    /// [`export_group_info`](Self::export_group_info)) describes, by external commit: the
    /// commit goes to every member, and this device is a member from now on. Its leaf from
    /// before (same user and device id, under any key), if the group still has one, is removed
    /// by the same commit (a device made anew under a new device id leaves its old one for
    /// `remove_device`). If
    /// this device holds the group, that state — a branch the group left, or one far behind —
    /// is replaced. One transaction, with what it sets off (messages this device sent on the
    /// branch it leaves go out again; messages that raced ahead are read).
    ///
    /// Errors, nothing changed: [`MlsError::InvalidGroupInfo`] (malformed, forged, a member
    /// whose identity does not verify, an epoch older than the one held);
    /// [`MlsError::RejoinRefused`] (this device's user has no device in the group: a
    /// removed user cannot come back this way); [`MlsError::AlreadyJoined`] (this device is
    /// already at that epoch state).
    ///
    /// The output holds the commit and `Rejoined`. Messages sent to the group before this
    /// moment are not recoverable on this device.
    pub fn join_by_external_commit(&mut self, group_info: &[u8]) -> Result<Output, MlsError> {
        let _time = self.operation();
        let invalid = |reason: String| MlsError::InvalidGroupInfo { reason };
        let (verifiable, envelope) = parse_group_info_envelope(group_info)?;
        let group = GroupId::from_openmls(verifiable.group_id());
        let epoch = verifiable.epoch().as_u64();
        let mut history = self.group_info_history(&verifiable, &envelope)?;
        history.retain(|(e, _)| *e < epoch);
        // An older state is refused (a stale GroupInfo must not move this device back), unless
        // this device's own rejoin raced and lost, or the GroupInfo's branch wins where the two
        // parted (the rule of `rejoin_advice`): then this device's later epochs are a dead
        // branch.
        let contested = self
            .read(|txn| read_external_join(txn, &group))?
            .is_some_and(|joined| joined.contested);
        if let Some(held) = self.groups.get(&group)
            && !contested
        {
            let held_epoch = held.epoch().as_u64();
            if epoch < held_epoch && self.rejoin_advice(group_info)? != RejoinAdvice::Rejoin {
                return Err(invalid(format!(
                    "it describes epoch {epoch}, older than epoch {held_epoch} this device holds"
                )));
            }
        }
        let held_same_state = self.groups.get(&group).is_some_and(|held| {
            held.epoch().as_u64() == epoch
                && held
                    .public_group()
                    .group_context()
                    .confirmed_transcript_hash()
                    == verifiable.group_context().confirmed_transcript_hash()
        });
        if held_same_state {
            return Err(MlsError::AlreadyJoined { group });
        }
        // Every leaf's identity binding, as for a Welcome (OpenMLS checks the tree's signatures
        // and hashes when it builds the group); and this device's user must be there.
        let me = self.own_verified_member()?;
        let tree = verifiable
            .extensions()
            .ratchet_tree()
            .ok_or_else(|| invalid("it carries no ratchet tree".into()))?
            .ratchet_tree();
        let mut user_is_member = false;
        // This device's leaf from before (under whatever key: a restored device has a new
        // one), which the commit replaces.
        let mut old_leaf_key = None;
        for leaf in tree.leaves() {
            let verified = self
                .members
                .verify(leaf.credential(), leaf.signature_key().as_slice())?;
            user_is_member |= verified.user_id() == me.user_id();
            if verified.user_id() == me.user_id() && verified.device_id() == me.device_id() {
                old_leaf_key = Some(leaf.signature_key().as_slice().to_vec());
            }
        }
        if !user_is_member {
            return Err(MlsError::RejoinRefused {
                group,
                reason: "this device's user has no device in the group",
            });
        }
        let output = self.transaction(Some(&group), |client| {
            client.drop_held_state(&group, &history)?;
            let (mut new_group, commit) = client.external_commit(verifiable, old_leaf_key)?;
            new_group
                .merge_pending_commit(&client.provider)
                .map_err(|e| MlsError::openmls("merge our external commit", e))?;
            let new_epoch = new_group.epoch().as_u64();
            // The ref the fork rule gives an external commit (see `CommitRank::external`).
            let commit_ref = new_group
                .public_group()
                .group_context()
                .confirmed_transcript_hash()
                .to_vec();
            client.touch(&group);
            client.rosters.remove(&group);
            client.groups.insert(group.clone(), new_group);
            let now = client.now();
            client.record_leaf_update(&group, now)?;
            history.push((
                epoch,
                EpochBranch {
                    merged: CommitRank::external(commit_ref, Vec::new()),
                    others: Vec::new(),
                },
            ));
            let record = ExternalJoin {
                epoch,
                contested: false,
                history,
                joined_at_ms: now.unix_millis(),
            };
            client.with_txn(|txn| BranchRecords::of(txn, &group).external_join(&record))?;
            let recipients = client.other_member_devices(&group)?;
            let mut output = Output::default();
            if !recipients.is_empty() {
                let envelope = Envelope::new(EnvelopeKind::Commit, encode(&commit)?);
                output.outbound.push(client.queue_outbound(
                    Recipients {
                        group: Some(group.clone()),
                        devices: recipients,
                    },
                    envelope,
                )?);
            }
            output.events.push(Event::Rejoined {
                group: group.clone(),
                epoch: new_epoch,
            });
            // Messages that raced ahead of the rejoin can be read now; then what this device
            // did on the branch it left is done again: its adds and removes first, so a device
            // it removed cannot read what it sent after.
            output.extend(client.replay_buffered(&group)?);
            output.extend(client.reissue_commits(&group)?);
            output.extend(client.send_deferred(&group)?);
            Ok(output)
        })?;
        Ok(output)
    }

    /// The branch history a GroupInfo envelope carries, checked against the keys of the tree's
    /// members (the member who exported it signed it). Empty if it carries none; a malformed
    /// or forged one is refused.
    pub(crate) fn group_info_history(
        &self,
        verifiable: &VerifiableGroupInfo,
        envelope: &Envelope,
    ) -> Result<BranchHistory, MlsError> {
        if envelope.context().is_empty() {
            return Ok(BranchHistory::new());
        }
        let invalid = |reason: &str| MlsError::InvalidGroupInfo {
            reason: reason.into(),
        };
        let history = decode_history(
            envelope.context(),
            verifiable.group_id().as_slice(),
            verifiable.epoch().as_u64(),
        )
        .ok_or_else(|| invalid("its branch history is malformed"))?;
        let signed = verifiable.extensions().ratchet_tree().is_some_and(|tree| {
            tree.ratchet_tree()
                .leaves()
                .any(|leaf| self.context_signed_by(&history, leaf.signature_key().as_slice()))
        });
        if !signed {
            return Err(invalid(
                "its branch history is not signed by a member (altered in transit?)",
            ));
        }
        Ok(history.value)
    }

    /// Builds and stages an external commit into the group `verifiable` describes; the group is
    /// written to the store with the commit pending.
    fn external_commit(
        &mut self,
        verifiable: VerifiableGroupInfo,
        old_leaf_key: Option<Vec<u8>>,
    ) -> Result<(MlsGroup, MlsMessageOut), MlsError> {
        let invalid = |reason: String| MlsError::InvalidGroupInfo { reason };
        let signer = DeviceSigner(self.device.signature_key_pair());
        // Receivers on another branch of that epoch tell it from theirs by this (see
        // `external_commit_tag`), before they would fail to verify it.
        let context = verifiable.group_context();
        let tag = crate::branch_order::external_tag(
            context.group_id().as_slice(),
            context.epoch().as_u64(),
            context.confirmed_transcript_hash(),
        );
        let mut builder = MlsGroup::external_commit_builder()
            .with_config(self.join_config())
            .with_aad(crate::branch_order::encode_external_tag(&tag));
        if let Some(key) = old_leaf_key {
            builder = builder.replacing_signature_key(key);
        }
        let (group, bundle) = builder
            .build_group(&self.provider, verifiable, self.credential.clone())
            .map_err(|e| invalid(format!("refused by OpenMLS: {e}")))?
            .load_psks(self.provider.storage())
            .map_err(|e| MlsError::openmls("load PSKs for an external commit", e))?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &signer,
                |_| true,
            )
            .map_err(|e| invalid(format!("the external commit cannot be made: {e}")))?
            .finalize(&self.provider)
            .map_err(|e| MlsError::openmls("finalize an external commit", e))?;
        Ok((group, bundle.into_commit()))
    }

    /// Inside the open transaction, before an external join: drops what this device held of
    /// `group` (a branch that lost, a state far behind, or what a removal left): OpenMLS state,
    /// snapshots and records of ours. Application messages it sent there that no member may
    /// have read wait to be sent again in the new epoch, and so do the adds and removes it
    /// committed where its branch is not `joined` (the branch history of the GroupInfo; see
    /// `epoch_snapshots::queue_membership_change`).
    fn drop_held_state(&mut self, group: &GroupId, joined: &BranchHistory) -> Result<(), MlsError> {
        self.touch(group);
        self.provider.storage().delete_group(&group.to_openmls())?;
        self.with_txn(|txn| {
            let mut records = BranchRecords::of(txn, group);
            records.resend_sent()?;
            records.left_for_external_join(joined)
        })?;
        self.groups.remove(group);
        self.rosters.remove(group);
        Ok(())
    }

    /// Inside the operation processing an external commit of `group` (before it is merged):
    /// the policy every member applies. The joiner's user must have another device in the
    /// group in that epoch, and every leaf the commit removes must be the joiner's own device
    /// (its state from before). Returns the joiner and the leaves it replaces.
    pub(crate) fn check_external_commit(
        &mut self,
        group: &GroupId,
        joiner: &VerifiedMember,
        removed: &[LeafNodeIndex],
    ) -> Result<Vec<VerifiedMember>, MlsError> {
        let refused = |reason: &str| MlsError::RejectedMessage {
            group: group.clone(),
            reason: reason.into(),
        };
        let mut replaced = Vec::new();
        for index in removed {
            let leaf = self.verified_leaf(group, *index)?;
            if leaf.user_id() != joiner.user_id() || leaf.device_id() != joiner.device_id() {
                return Err(refused(
                    "an external commit removes a device other than the one rejoining",
                ));
            }
            replaced.push(leaf);
        }
        // The user's leaves in this epoch, the replaced ones included: a user who lost
        // their only device comes back; a user removed from the group has none.
        let members = self.members(group)?;
        if !members.iter().any(|m| m.user_id() == joiner.user_id()) {
            return Err(refused(
                "an external commit from a user with no device in the group \
                 (a removed user cannot rejoin)",
            ));
        }
        Ok(replaced)
    }
}

impl MlsClient {
    /// Inside the operation processing it: an external commit OpenMLS accepted (signature,
    /// tree, ExternalInit), checked against the member policy, merged.
    pub(crate) fn process_external_commit(
        &mut self,
        group: &GroupId,
        envelope: &Envelope,
        processed: ProcessedMessage,
    ) -> Result<(Output, FollowUp), MlsError> {
        let now = self.now();
        let rejected = |reason: &str| MlsError::RejectedMessage {
            group: group.clone(),
            reason: reason.into(),
        };
        let credential = processed.credential().clone();
        let signature_key = crate::member_verification::certified_signature_key(&credential)?;
        let joiner = self.members.verify(&credential, &signature_key)?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(rejected(
                "an external sender sent something other than a commit",
            ));
        };
        if staged.add_proposals().next().is_some() || staged.update_proposals().next().is_some() {
            return Err(rejected("an external commit adds or updates members"));
        }
        let leaf = staged
            .update_path_leaf_node()
            .ok_or_else(|| rejected("an external commit without a path"))?;
        let joined = self
            .members
            .verify(leaf.credential(), leaf.signature_key().as_slice())?;
        if joined.user_id() != joiner.user_id() || joined.device_id() != joiner.device_id() {
            return Err(rejected(
                "an external commit's leaf belongs to another device than its sender",
            ));
        }
        if staged.self_removed() {
            return Err(rejected(
                "an external commit replaces this very device: another copy of it rejoined",
            ));
        }
        let removed: Vec<LeafNodeIndex> = staged
            .remove_proposals()
            .map(|r| r.remove_proposal().removed())
            .collect();
        let replaced = self.check_external_commit(group, &joiner, &removed)?;
        self.with_txn(|txn| seen_messages::record_envelope(txn, envelope.id(), now))?;
        let rank = CommitRank::external(
            staged.group_context().confirmed_transcript_hash().to_vec(),
            removed.iter().map(|i| i.u32()).collect(),
        );
        let (provider, mls_group, _) = self.openmls_parts(group)?;
        mls_group
            .merge_staged_commit(provider, *staged)
            .map_err(|e| MlsError::openmls("merge an external commit", e))?;
        let epoch = mls_group.epoch().as_u64();
        let output = Output {
            events: vec![
                Event::DeviceRejoined {
                    group: group.clone(),
                    device: joiner.clone(),
                    replaced,
                },
                Event::EpochAdvanced {
                    group: group.clone(),
                    epoch,
                },
            ],
            ..Output::default()
        };
        let follow_up = FollowUp {
            replay: true,
            rank: Some(rank),
            committer: Some(joiner),
        };
        Ok((output, follow_up))
    }
}
