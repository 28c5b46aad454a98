//! Giving up on commits that wait for a proposal: what `tick` does with the refusals
//! `commit_wait` remembers and the waits `epoch_buffer` marks (the rules, and why, are in
//! `commit_wait`).

use openmls::prelude::{
    OpenMlsProvider as _, ProcessMessageError, ProcessedMessageContent, StageCommitError,
};
use spacepanda_core::{Key, Timestamp};

use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::epoch_buffer::{self, BufferedMessage};
use crate::error::MlsError;
use crate::events::{AbandonReason, Event};
use crate::group_id::GroupId;
use crate::mls_wire::stored_protocol_message;
use crate::seen_messages;

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
        let Some(commit) = stored_protocol_message(&entry.envelope_bytes) else {
            return Ok(false);
        };
        // A step of the tick that runs this, always undone (see `operation`).
        let savepoint = self.savepoint()?;
        let attempt = (|| {
            for proposal in refused
                .iter()
                .filter_map(|bytes| stored_protocol_message(bytes))
            {
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
            return Err(crate::client::operation::swallowed_failure(failure));
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
