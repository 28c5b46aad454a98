//! Commits that wait for a proposal, and when this device gives up on them.
//!
//! A commit can reference proposals by reference; one that arrives before such a proposal
//! waits in the epoch buffer (marked, see `epoch_buffer`) and is retried when the proposal is
//! stored. Two things can make that wait endless, and the group would split without anyone
//! being told:
//!
//! - **The proposal was refused here.** SpacePanda accepts only Remove and Update proposals on
//!   their own; another MLS client may send a standalone Add, and commit it. Processing a
//!   proposal that fails is remembered (in memory, bounded, for the group's current epoch), and
//!   at the next `tick` every commit waiting in that epoch is tried again, inside a transaction
//!   that is rolled back, with the refused proposals stored as if accepted: a commit that no
//!   longer misses a proposal references a refused one and can never be applied here.
//! - **The proposal never arrives** (between our own devices too: it was lost, or its sender's
//!   outbox is gone). A commit that waited `commit_proposal_wait` is given up.
//!
//! Either way `tick` reports [`Event::CommitAbandoned`] once and drops the commit. A commit
//! given up for a refused proposal is recorded as seen (it can never apply, so a copy is a
//! duplicate); one given up for a missing proposal is not, so that a copy delivered together
//! with its proposal still applies. After a restart the refusals are forgotten, and a commit
//! waiting for one is given up by the time bound instead.

use std::collections::BTreeMap;

use openmls::prelude::{
    MlsMessageBodyIn, MlsMessageIn, OpenMlsProvider as _, ProcessMessageError,
    ProcessedMessageContent, ProtocolMessage, StageCommitError,
};
use spacepanda_core::{Key, Timestamp};
use tls_codec::Deserialize as _;

use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::epoch_buffer::{self, BufferedMessage};
use crate::error::MlsError;
use crate::events::{AbandonReason, Event};
use crate::group_id::GroupId;
use crate::seen_messages;

/// Largest refused proposal remembered: an Add proposal carries one key package (at most
/// 16 KiB); anything larger is no proposal a commit of ours could reference usefully.
const MAX_REMEMBERED_LEN: usize = 64 * 1024;

/// Proposals refused in each group's current epoch, kept until `tick` has checked the commits
/// waiting in that epoch against them.
#[derive(Debug, Default)]
pub(crate) struct RefusedProposals {
    groups: BTreeMap<GroupId, Refused>,
}

#[derive(Debug)]
struct Refused {
    epoch: u64,
    /// Envelope bytes of the refused proposals.
    envelopes: Vec<Vec<u8>>,
    /// Since when waiting commits have not been checked against them (`None`: all checked).
    unchecked_since: Option<Timestamp>,
}

impl RefusedProposals {
    /// A proposal of `group` at `epoch` was refused.
    pub(crate) fn remember(
        &mut self,
        group: &GroupId,
        epoch: u64,
        envelope: &Envelope,
        now: Timestamp,
    ) {
        let bytes = envelope.to_bytes();
        if bytes.len() > MAX_REMEMBERED_LEN {
            return;
        }
        let refused = self.groups.entry(group.clone()).or_insert(Refused {
            epoch,
            envelopes: Vec::new(),
            unchecked_since: None,
        });
        if refused.epoch != epoch {
            // The group moved on: refusals of the epoch it left cannot matter any more.
            refused.epoch = epoch;
            refused.envelopes.clear();
        }
        // As many as an epoch may hold proposals (`max_proposals_per_epoch` defaults to 64).
        if refused.envelopes.len() < 64 && !refused.envelopes.contains(&bytes) {
            refused.envelopes.push(bytes);
        }
        refused.unchecked_since.get_or_insert(now);
    }

    /// A commit of `group` at `epoch` started waiting for a proposal: if proposals of that epoch
    /// were refused, it must be checked against them.
    pub(crate) fn commit_waits(&mut self, group: &GroupId, epoch: u64, now: Timestamp) {
        if let Some(refused) = self.groups.get_mut(group)
            && refused.epoch == epoch
        {
            refused.unchecked_since.get_or_insert(now);
        }
    }

    /// When `tick` should check waiting commits against refused proposals.
    pub(crate) fn next_check(&self) -> Option<Timestamp> {
        self.groups.values().filter_map(|r| r.unchecked_since).min()
    }

    /// Forgets the refusals of epochs their group has left (`current` is a group's epoch, if
    /// this device holds it): no commit that waits in such an epoch can be checked any more.
    fn forget_stale(&mut self, current: impl Fn(&GroupId) -> Option<u64>) {
        self.groups
            .retain(|group, refused| current(group) == Some(refused.epoch));
    }

    /// The groups to check, with their epoch and refused proposals; marks them checked.
    fn take_unchecked(&mut self) -> Vec<(GroupId, u64, Vec<Vec<u8>>)> {
        self.groups
            .iter_mut()
            .filter_map(|(group, refused)| {
                refused.unchecked_since.take()?;
                Some((group.clone(), refused.epoch, refused.envelopes.clone()))
            })
            .collect()
    }
}

impl MlsClient {
    /// `tick`: gives up on the buffered commits that reference a refused proposal, or that
    /// waited `commit_proposal_wait` (or `buffer_max_age`) for one. One
    /// [`Event::CommitAbandoned`] each.
    pub(crate) fn give_up_waiting_commits(
        &mut self,
        now: Timestamp,
    ) -> Result<Vec<Event>, MlsError> {
        let mut events = Vec::new();
        let groups = &self.groups;
        self.refused
            .forget_stale(|group| groups.get(group).map(|g| g.epoch().as_u64()));
        for (group, epoch, refused) in self.refused.take_unchecked() {
            for entry in self.waiting_commits(|key| key_is(key, &group, epoch))? {
                if self.references_refused(&group, &entry, &refused)? {
                    events.push(self.abandon(&entry, AbandonReason::ProposalRefused, now)?);
                }
            }
        }
        let config = self.config.clone();
        let waiting = self.read(epoch_buffer::awaiting)?;
        for (key, since) in waiting {
            let Some(entry) = self.read(|txn| epoch_buffer::entry(txn, &key))? else {
                // A mark without its entry (entries and marks are deleted together, so only a
                // damaged store has one): it would be a deadline that never passes.
                self.transaction(None, |client| {
                    client.with_txn(|txn| epoch_buffer::unmark(txn, &key))
                })?;
                continue;
            };
            let waited_enough = now.duration_since(since) >= config.commit_proposal_wait;
            let expiring = now.duration_since(entry.received_at) >= config.buffer_max_age;
            if waited_enough || expiring {
                events.push(self.abandon(&entry, AbandonReason::ProposalMissing, now)?);
            }
        }
        Ok(events)
    }

    /// Buffered commits waiting for a proposal whose key `wanted` picks.
    fn waiting_commits(
        &self,
        wanted: impl Fn(&Key) -> bool,
    ) -> Result<Vec<BufferedMessage>, MlsError> {
        self.read(|txn| {
            let mut entries = Vec::new();
            for (key, _) in epoch_buffer::awaiting(txn)? {
                if wanted(&key)
                    && let Some(entry) = epoch_buffer::entry(txn, &key)?
                {
                    entries.push(entry);
                }
            }
            Ok(entries)
        })
    }

    /// Drops a waiting commit (one transaction) and says so.
    fn abandon(
        &mut self,
        entry: &BufferedMessage,
        reason: AbandonReason,
        now: Timestamp,
    ) -> Result<Event, MlsError> {
        let envelope = Envelope::from_bytes(&entry.envelope_bytes, usize::MAX)?;
        let commit = envelope.id();
        self.transaction(None, |client| {
            client.with_txn(|txn| {
                epoch_buffer::remove(txn, entry)?;
                if reason == AbandonReason::ProposalRefused {
                    seen_messages::record_envelope(txn, commit, now)?;
                }
                Ok(())
            })
        })?;
        tracing::warn!(group = %entry.group, epoch = entry.epoch, ?reason, "commit abandoned");
        Ok(Event::CommitAbandoned {
            group: entry.group.clone(),
            epoch: entry.epoch,
            commit,
            reason,
        })
    }

    /// Whether the waiting commit `entry` of `group` (at its current epoch) references one of
    /// the `refused` proposals: with them stored, it no longer misses a proposal. Tried as a
    /// step of the open transaction that is always rolled back; the group is reloaded
    /// afterwards.
    fn references_refused(
        &mut self,
        group: &GroupId,
        entry: &BufferedMessage,
        refused: &[Vec<u8>],
    ) -> Result<bool, MlsError> {
        let Some(commit) = protocol_message(&entry.envelope_bytes) else {
            return Ok(false);
        };
        // A step of the tick that runs this, always undone (see `operation`).
        let savepoint = self.savepoint()?;
        let attempt = (|| {
            for proposal in refused.iter().filter_map(|bytes| protocol_message(bytes)) {
                let (provider, mls_group, _) = self.openmls_parts(group)?;
                // One that OpenMLS itself refuses (forged, undecryptable) cannot be referenced.
                let Ok(processed) = mls_group.process_message(provider, proposal) else {
                    continue;
                };
                if let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() {
                    mls_group
                        .store_pending_proposal(provider.storage(), *queued)
                        .map_err(|e| MlsError::openmls("store a proposal", e))?;
                }
            }
            let (provider, mls_group, _) = self.openmls_parts(group)?;
            Ok(match mls_group.process_message(provider, commit) {
                Err(ProcessMessageError::InvalidCommit(StageCommitError::MissingProposal)) => false,
                // Staged, or refused for another reason now that it has its proposals: it can
                // never be applied here either way — unless our store failed.
                Ok(_) | Err(_) => true,
            })
        })();
        self.rollback_step(savepoint)?;
        self.reload_group(group)?;
        let references = attempt.map_err(|error| self.attribute(error))?;
        // Our store failed under OpenMLS while it judged the commit: the answer means nothing.
        if let Some(failure) = self.provider.storage().failure() {
            return Err(crate::operation::swallowed_failure(failure));
        }
        Ok(references)
    }
}

/// Whether a buffer key is of `group` at `epoch`.
fn key_is(key: &Key, group: &GroupId, epoch: u64) -> bool {
    let mut segments = key.segments();
    segments.next() == Some(group.as_slice())
        && segments.next() == Some(epoch.to_be_bytes().as_slice())
}

/// The protocol message in envelope bytes, if they hold one.
fn protocol_message(envelope_bytes: &[u8]) -> Option<ProtocolMessage> {
    let envelope = Envelope::from_bytes(envelope_bytes, usize::MAX).ok()?;
    match MlsMessageIn::tls_deserialize_exact(envelope.payload())
        .ok()?
        .extract()
    {
        MlsMessageBodyIn::PrivateMessage(message) => Some(message.into()),
        MlsMessageBodyIn::PublicMessage(message) => Some(message.into()),
        _ => None,
    }
}
