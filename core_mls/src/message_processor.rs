//! The pipeline every incoming envelope goes through:
//!
//! 1. bounded decode ([`Envelope::from_bytes`], then the MLS message);
//! 2. duplicate or own echo (envelope id already seen) → [`Disposition::Duplicate`];
//! 3. group, epoch and branch (the rule is `routing::route`): a group this device does not hold
//!    (not joined yet, or removed from) → `group_removal`; a future epoch → buffered (bounded)
//!    and replayed automatically once the group gets there; a message of a competing branch
//!    (its branch tag differs) → buffered while a rollback could reach it; a commit for a past
//!    epoch → the concurrent-commit rule (`fork_resolution`); a proposal of a kept past epoch →
//!    waits with its snapshot (of our branch) or like its branch's commits (of another), an
//!    older one → [`MlsError::StaleEpoch`]; on a device that joined from a Welcome, a message
//!    from before its join → buffered (a Welcome of the winning branch, or a rollback to a
//!    snapshot kept across the join, may put it back at that epoch);
//! 4. OpenMLS processing inside one transaction (`mls_processing`): application → `Message` (at most once per
//!    sender message id); proposal → stored (bounded per epoch); commit → every leaf it adds or
//!    changes must pass the identity binding, or the commit is rejected whole → merge → events →
//!    buffered messages of the new epoch replayed.
//!
//! Every rejection is a typed [`MlsError`]; the transaction is rolled back and the group
//! reloaded, so a bad message changes nothing.

use openmls::prelude::{ContentType, MlsMessageBodyIn, MlsMessageIn, ProtocolMessage};
use tls_codec::Deserialize as _;

use crate::branch_records::epoch_snapshots;
use crate::client::MlsClient;
use crate::envelope::{Envelope, EnvelopeKind};
use crate::epoch_buffer::{self, BufferedMessage};
use crate::error::MlsError;
use crate::events::{Disposition, Event, Output};
use crate::group_id::GroupId;
use crate::mls_wire::is_commit;
use crate::routing::{self, HeldGroup, Route, RouteFacts, Uncontested};
use crate::{branch_order, seen_messages};

impl MlsClient {
    /// `buffered`: the buffer entry this envelope came from; it is deleted in the same
    /// transaction that processes it.
    pub(crate) fn handle_decoded(
        &mut self,
        envelope: Envelope,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        if self.read(|txn| seen_messages::envelope_seen(txn, envelope.seen_id()))? {
            if let Some(entry) = buffered {
                self.transaction(None, |client| {
                    client.with_txn(|txn| epoch_buffer::remove(txn, entry))
                })?;
            }
            return Ok(Output {
                disposition: Disposition::Duplicate,
                ..Output::default()
            });
        }
        let message = MlsMessageIn::tls_deserialize_exact(envelope.payload()).map_err(|e| {
            MlsError::MalformedMessage {
                reason: format!("payload is not an MLS message: {e}"),
            }
        })?;
        match (envelope.kind(), message.extract()) {
            (EnvelopeKind::Welcome, MlsMessageBodyIn::Welcome(welcome)) => {
                self.handle_welcome(&envelope, welcome, buffered)
            }
            (kind, MlsMessageBodyIn::PrivateMessage(message)) => {
                self.handle_protocol(kind, &envelope, ProtocolMessage::from(message), buffered)
            }
            (kind, MlsMessageBodyIn::PublicMessage(message)) => {
                self.handle_protocol(kind, &envelope, ProtocolMessage::from(message), buffered)
            }
            (EnvelopeKind::GroupInfo | EnvelopeKind::KeyPackage, _) => {
                Err(MlsError::MalformedMessage {
                    reason: "group infos and key packages are not processed by the engine".into(),
                })
            }
            _ => Err(MlsError::MalformedEnvelope {
                reason: "envelope kind does not match the MLS message inside",
            }),
        }
    }

    fn handle_protocol(
        &mut self,
        kind: EnvelopeKind,
        envelope: &Envelope,
        message: ProtocolMessage,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        let expected = match message.content_type() {
            ContentType::Application => EnvelopeKind::Application,
            ContentType::Proposal => EnvelopeKind::Proposal,
            ContentType::Commit => EnvelopeKind::Commit,
        };
        if kind != expected {
            return Err(MlsError::MalformedEnvelope {
                reason: "envelope kind does not match the MLS content type",
            });
        }
        let group = GroupId::from_openmls(message.group_id());
        let message_epoch = message.epoch().as_u64();
        let mut tag = branch_order::message_tag(&message);
        let mut held = self.groups.get(&group).map(|held| HeldGroup {
            current_epoch: held.epoch().as_u64(),
            current_tag: branch_order::branch_tag(held),
            snapshot_tag: None,
            joined_epoch: None,
        });
        // Read only as far as the message's epoch makes them matter (see `RouteFacts`).
        let mut meta = None;
        if let Some(held) = &mut held
            && message_epoch <= held.current_epoch
        {
            if tag.is_none() {
                tag =
                    self.external_commit_tag(&message, &group, message_epoch, held.current_epoch)?;
            }
            if message_epoch < held.current_epoch {
                meta = self.read(|txn| epoch_snapshots::meta(txn, &group, message_epoch))?;
                held.snapshot_tag = meta.as_ref().map(|meta| meta.branch_tag.clone());
                held.joined_epoch = self.joined_epoch(&group)?;
            }
        }
        let facts = RouteFacts {
            message_epoch,
            content: message.content_type(),
            tag,
            from_buffer: buffered.is_some(),
            group: held,
        };
        match routing::route(&facts) {
            Route::NoGroup => {
                self.handle_without_group(envelope, message, &group, &facts.tag, buffered)
            }
            Route::Buffer => self.buffer(envelope, &group, message_epoch, buffered),
            Route::OtherBranch => {
                let external = crate::branch_order::external_message_tag(&message).is_some();
                self.other_branch(envelope, &group, message_epoch, buffered, external)
            }
            Route::Process => self.process_routed(kind, envelope, message, &group, buffered),
            Route::CompetingCommit => {
                let meta = meta.ok_or(MlsError::Internal {
                    what: "a commit routed to a snapshot that is not kept",
                })?;
                self.handle_competing_commit(
                    envelope,
                    message,
                    &group,
                    message_epoch,
                    meta,
                    buffered,
                )
            }
            Route::ContestExternalJoin { otherwise } => {
                if let Some(output) =
                    self.contest_external_join(envelope, &group, message_epoch, buffered)?
                {
                    return Ok(output);
                }
                // Judged here before, its de-duplication record expired since: not a fork.
                let judged_before = |client: &mut Self| {
                    client.judged_before(&group, message_epoch, envelope, buffered)
                };
                match otherwise {
                    Uncontested::Buffer => self.buffer(envelope, &group, message_epoch, buffered),
                    Uncontested::JudgedBeforeOrOtherBranch => match judged_before(self)? {
                        Some(duplicate) => Ok(duplicate),
                        None => Err(MlsError::OtherBranch {
                            group,
                            message_epoch,
                        }),
                    },
                    Uncontested::JudgedBeforeOrForkOutsideWindow { current_epoch } => {
                        match judged_before(self)? {
                            Some(duplicate) => Ok(duplicate),
                            None => self.fork_outside_window(&group, message_epoch, current_epoch),
                        }
                    }
                }
            }
            Route::BufferProposal { replay } => {
                let mut output = self.buffer(envelope, &group, message_epoch, buffered)?;
                if replay {
                    output.extend(self.replay_buffered(&group)?);
                }
                Ok(output)
            }
            Route::StaleEpoch { current_epoch } => Err(MlsError::StaleEpoch {
                group,
                message_epoch,
                current_epoch,
            }),
        }
    }

    /// A message [`route`](routing::route) sends to OpenMLS: processed in one transaction
    /// (that also deletes its buffer entry), then what the processing sets off.
    fn process_routed(
        &mut self,
        kind: EnvelopeKind,
        envelope: &Envelope,
        message: ProtocolMessage,
        group: &GroupId,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        let message_epoch = message.epoch().as_u64();
        let is_commit = message.content_type() == ContentType::Commit;
        let processed = self.transaction(Some(group), |client| {
            if let Some(entry) = buffered {
                client.with_txn(|txn| epoch_buffer::remove(txn, entry))?;
            }
            if is_commit {
                client.process_commit_with_snapshot(group, envelope, message)
            } else {
                client.process_in_transaction(group, envelope, message)
            }
        });
        let (output, follow_up) = match processed {
            // The commit overtook a proposal it references: keep it until the proposal arrives
            // (or `commit_proposal_wait` passes).
            Err(MlsError::CommitAwaitsProposal { .. }) => {
                return self.buffer_awaiting_proposal(envelope, group, message_epoch, buffered);
            }
            Err(error) if kind == EnvelopeKind::Proposal && error.is_peer_input() => {
                // A commit that references it can never be applied here: `tick` recognises one.
                let now = self.now();
                self.refused.remember(group, message_epoch, envelope, now);
                return Err(error);
            }
            other => other?,
        };
        let mut output = output;
        if follow_up.replay {
            output.extend(self.after_branch_change(group)?);
        }
        if !self.groups.contains_key(group) {
            // Removed: a Welcome that re-adds us may have overtaken the removal.
            output.extend(self.replay_buffered_welcomes(group)?);
        }
        Ok(output)
    }

    /// Handles one buffered envelope again, as a step. One rejected now is rejected for good:
    /// dropped (`None`), not retried each time — unless the failure is local (storage, a bug),
    /// which says nothing about the message: the operation fails and the message stays.
    pub(crate) fn replay_entry(
        &mut self,
        entry: &BufferedMessage,
    ) -> Result<Option<Output>, MlsError> {
        let result = Envelope::from_bytes(&entry.envelope_bytes, usize::MAX).and_then(|envelope| {
            self.transaction(None, |c| c.handle_decoded(envelope, Some(entry)))
        });
        match result {
            Ok(replayed) => Ok(Some(replayed)),
            Err(error) if error.is_local() => Err(error),
            Err(_) => {
                self.transaction(None, |client| {
                    client.with_txn(|txn| epoch_buffer::remove(txn, entry))
                })?;
                Ok(None)
            }
        }
    }

    /// Replays buffered messages whose epoch the group has reached, until no more apply.
    pub(crate) fn replay_buffered(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let mut output = Output::default();
        let mut dropped = 0;
        while let Some(epoch) = self.groups.get(group).map(|g| g.epoch().as_u64()) {
            let mut ready: Vec<BufferedMessage> = self
                .read(|txn| epoch_buffer::for_group(txn, group))?
                .into_iter()
                .filter(|m| m.epoch <= epoch)
                .collect();
            if ready.is_empty() {
                break;
            }
            // Within an epoch, application messages and proposals before the commit that ends it.
            ready.sort_by_key(|m| (m.epoch, is_commit(&m.envelope_bytes), m.received_at));
            for entry in ready {
                match self.replay_entry(&entry)? {
                    Some(replayed) => output.extend(replayed),
                    None => dropped += 1,
                }
            }
            if self.groups.get(group).map(|g| g.epoch().as_u64()) == Some(epoch) {
                break;
            }
        }
        if dropped > 0 {
            output.events.push(Event::BufferedDropped {
                group: Some(group.clone()),
                count: dropped,
            });
        }
        Ok(output)
    }
}
