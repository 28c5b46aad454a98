//! One routed message through OpenMLS, inside the transaction `message_processor` opened:
//! an application message into the inbox (at most once per sender message id), a standalone
//! proposal stored (only Remove and Update), a commit staged, every leaf it adds or changes
//! bound to its user and device (one failure rejects the whole commit), merged, and its
//! events; for a commit, the snapshot of the epoch it ends is taken around it
//! (`snapshot_capture`) and the commit logged. What to do next (replay what waited, judge
//! against competing commits) is handed back as a [`FollowUp`].

use core_identity::VerifiedMember;
use openmls::prelude::{
    LeafNodeIndex, ProcessMessageError, ProcessedMessageContent, Proposal, ProtocolMessage, Sender,
    StageCommitError,
};
use openmls_traits::OpenMlsProvider as _;

use crate::app_message::AppMessage;
use crate::branch_order::{self, CommitRank};
use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::events::{Disposition, Event, Output};
use crate::group_id::GroupId;
use crate::{app_inbox, seen_messages};

/// What a processed handshake asks the engine to do after its transaction committed.
#[derive(Debug, Default)]
pub(crate) struct FollowUp {
    pub(crate) replay: bool,
    /// For a merged commit: what decides between it and competing commits of its epoch (its
    /// commit ref is the confirmed transcript hash of the new epoch).
    pub(crate) rank: Option<CommitRank>,
    /// For a merged commit: who made it.
    pub(crate) committer: Option<VerifiedMember>,
}

impl MlsClient {
    /// Inside the open transaction: snapshot of the current epoch, then the commit processed
    /// and merged as usual, then the snapshot stored with the merged commit's ref, and the
    /// commit in the commit log (`commit_log`).
    pub(crate) fn process_commit_with_snapshot(
        &mut self,
        group: &GroupId,
        envelope: &Envelope,
        message: ProtocolMessage,
    ) -> Result<(Output, FollowUp), MlsError> {
        let epoch = message.epoch().as_u64();
        let snapshot = self.begin_snapshot(group)?;
        let (output, follow_up) = self.process_in_transaction(group, envelope, message)?;
        if let Some(rank) = &follow_up.rank {
            let joiner = follow_up
                .committer
                .as_ref()
                .filter(|_| rank.is_external())
                .map(crate::DeviceAddress::from);
            self.finish_snapshot(
                group,
                snapshot,
                rank.clone(),
                envelope.to_bytes(),
                None,
                joiner.as_ref(),
            )?;
            self.log_merged_commit(group, epoch, envelope)?;
        }
        Ok((output, follow_up))
    }

    pub(crate) fn process_in_transaction(
        &mut self,
        group: &GroupId,
        envelope: &Envelope,
        message: ProtocolMessage,
    ) -> Result<(Output, FollowUp), MlsError> {
        let now = self.now();
        let (provider, mls_group, _) = self.openmls_parts(group)?;
        let processed = mls_group
            .process_message(provider, message)
            .map_err(|e| map_process_error(group, e))?;
        let sender_index = match *processed.sender() {
            Sender::Member(index) => index,
            Sender::NewMemberCommit => {
                return self.process_external_commit(group, envelope, processed);
            }
            _ => {
                return Err(MlsError::RejectedMessage {
                    group: group.clone(),
                    reason: "sender is not a member (external proposals are not supported)".into(),
                });
            }
        };
        // The sender as OpenMLS resolved it in the message's own epoch: a message of a past
        // epoch may come from a leaf that has since been removed or reused by another device.
        let sender_credential = processed.credential().clone();
        let sender_signature_key =
            crate::member_verification::certified_signature_key(&sender_credential)?;
        let sender = self
            .members
            .verify(&sender_credential, &sender_signature_key)?;
        self.with_txn(|txn| seen_messages::record_envelope(txn, envelope.id(), now))?;
        let mut output = Output::default();
        let mut follow_up = FollowUp::default();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(application) => {
                let app = AppMessage::decode(&application.into_bytes())?;
                let first = self.with_txn(|txn| {
                    seen_messages::record_delivery(txn, group, &sender, &app.message_id, now)
                })?;
                if first {
                    let delivery = self.with_txn(|txn| {
                        app_inbox::push(
                            txn,
                            &app_inbox::Delivery {
                                group,
                                sender_credential: &sender_credential,
                                sender_signature_key: &sender_signature_key,
                                message_id: app.message_id,
                                sent_at: app.sent_at,
                                body: &app.body,
                            },
                        )
                    })?;
                    output.events.push(Event::Message {
                        group: group.clone(),
                        sender,
                        message_id: crate::events::MessageId(app.message_id),
                        sent_at: app.sent_at,
                        body: app.body,
                        delivery,
                    });
                } else {
                    output.disposition = Disposition::Duplicate;
                }
            }
            ProcessedMessageContent::ProposalMessage(queued) => {
                self.count_proposal(group)?;
                let leaving = match queued.proposal() {
                    Proposal::Remove(remove) if remove.removed() == sender_index => true,
                    Proposal::Remove(_) | Proposal::Update(_) => false,
                    _ => {
                        return Err(MlsError::RejectedMessage {
                            group: group.clone(),
                            reason: "only Remove and Update proposals are accepted as standalone proposals".into(),
                        });
                    }
                };
                let (provider, mls_group, _) = self.openmls_parts(group)?;
                mls_group
                    .store_pending_proposal(provider.storage(), *queued)
                    .map_err(|e| MlsError::openmls("store a proposal", e))?;
                // A commit that overtook this proposal may be waiting in the buffer.
                follow_up.replay = true;
                if leaving {
                    output.events.push(Event::LeaveProposed {
                        group: group.clone(),
                        member: sender,
                    });
                }
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                // Identity binding of every leaf the commit adds or replaces; one failure
                // rejects the whole commit.
                let mut added = Vec::new();
                for add in staged.add_proposals() {
                    let leaf = add.add_proposal().key_package().leaf_node();
                    added.push(
                        self.members
                            .verify(leaf.credential(), leaf.signature_key().as_slice())?,
                    );
                }
                if let Some(leaf) = staged.update_path_leaf_node() {
                    let updated = self
                        .members
                        .verify(leaf.credential(), leaf.signature_key().as_slice())?;
                    same_device(group, &sender, &updated)?;
                }
                let mut updates = Vec::new();
                for update in staged.update_proposals() {
                    let Sender::Member(index) = *update.sender() else {
                        return Err(MlsError::RejectedMessage {
                            group: group.clone(),
                            reason: "update proposal from a non-member".into(),
                        });
                    };
                    let leaf = update.update_proposal().leaf_node();
                    updates.push((
                        index,
                        leaf.credential().clone(),
                        leaf.signature_key().as_slice().to_vec(),
                    ));
                }
                for (index, credential, signature_key) in updates {
                    let before = self.verified_leaf(group, index)?;
                    let after = self.members.verify(&credential, &signature_key)?;
                    same_device(group, &before, &after)?;
                }
                let removed_indices: Vec<LeafNodeIndex> = staged
                    .remove_proposals()
                    .map(|r| r.remove_proposal().removed())
                    .collect();
                let mut removed = Vec::new();
                for index in &removed_indices {
                    removed.push(self.verified_leaf(group, *index)?);
                }
                let self_removed = staged.self_removed();
                let commit_ref = if self_removed {
                    // OpenMLS does not compute the new epoch's transcript hash for a member the
                    // commit removes: it takes the committer's signed claim (see
                    // `signed_context`). Every other receiver computes the ref and ignores the
                    // claim, so an altered claim changes nothing for them.
                    let commit_epoch = self.group(group)?.epoch().as_u64();
                    self.verified_claim(group, envelope, commit_epoch, &sender_signature_key)?
                } else {
                    staged.group_context().confirmed_transcript_hash().to_vec()
                };
                let epoch_tag = branch_order::branch_tag(self.group(group)?);
                let judged = if self_removed {
                    Vec::new()
                } else {
                    let commit_epoch = self.group(group)?.epoch().as_u64();
                    self.judged_by_committer(group, envelope, commit_epoch, &sender_signature_key)
                };

                follow_up.rank = Some(CommitRank {
                    commit_ref,
                    committer: sender_index.u32(),
                    removes: removed_indices.iter().map(|i| i.u32()).collect(),
                    priority: branch_order::priority(&epoch_tag, sender_index.u32()),
                });
                follow_up.committer = Some(sender.clone());
                let (provider, mls_group, _) = self.openmls_parts(group)?;
                mls_group
                    .merge_staged_commit(provider, *staged)
                    .map_err(|e| MlsError::openmls("merge a commit", e))?;
                let epoch = mls_group.epoch().as_u64();
                if self_removed {
                    self.forget_group(group)?;
                    self.mark_removed(group, epoch)?;
                    output.events.push(Event::RemovedFromGroup {
                        group: group.clone(),
                        by: Some(sender),
                    });
                    return Ok((output, follow_up));
                }
                self.learn_judged(group, &judged)?;
                if !added.is_empty() {
                    output.events.push(Event::MembersAdded {
                        group: group.clone(),
                        by: sender.clone(),
                        members: added,
                    });
                }
                if !removed.is_empty() {
                    output.events.push(Event::MembersRemoved {
                        group: group.clone(),
                        by: sender,
                        members: removed,
                    });
                }
                output.events.push(Event::EpochAdvanced {
                    group: group.clone(),
                    epoch,
                });
                follow_up.replay = true;
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
                return Err(MlsError::RejectedMessage {
                    group: group.clone(),
                    reason: "external join proposals are not supported".into(),
                });
            }
            // Our own messages are recognised by envelope id before OpenMLS sees them; one that
            // slips through (its id forgotten) is still ours and needs nothing.
            _ => output.disposition = Disposition::Duplicate,
        }
        Ok((output, follow_up))
    }

    pub(crate) fn verified_leaf(
        &mut self,
        group: &GroupId,
        index: LeafNodeIndex,
    ) -> Result<VerifiedMember, MlsError> {
        let leaf =
            self.group(group)?
                .member_at(index)
                .ok_or_else(|| MlsError::RejectedMessage {
                    group: group.clone(),
                    reason: format!("no member at leaf {}", index.u32()),
                })?;
        self.members.verify(&leaf.credential, &leaf.signature_key)
    }
}

fn same_device(
    group: &GroupId,
    before: &VerifiedMember,
    after: &VerifiedMember,
) -> Result<(), MlsError> {
    if before.user_id() == after.user_id() && before.device_id() == after.device_id() {
        Ok(())
    } else {
        Err(MlsError::RejectedMessage {
            group: group.clone(),
            reason: "a member's new leaf belongs to another user or device".into(),
        })
    }
}

fn map_process_error<E: std::fmt::Display>(
    group: &GroupId,
    error: ProcessMessageError<E>,
) -> MlsError {
    match error {
        ProcessMessageError::InvalidCommit(StageCommitError::MissingProposal) => {
            MlsError::CommitAwaitsProposal {
                group: group.clone(),
            }
        }
        ProcessMessageError::GroupStateError(_) => MlsError::NoLongerMember {
            group: group.clone(),
        },
        other => MlsError::RejectedMessage {
            group: group.clone(),
            reason: other.to_string(),
        },
    }
}
