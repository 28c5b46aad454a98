//! Removal from a group, and what a device that does not hold a group does with its messages.
//!
//! A device drops a group when a commit removes it (or its own leave is committed). That commit
//! may still lose to a concurrent one (see `fork_resolution`): while a snapshot of the epoch is
//! kept, a competing commit of that epoch is judged as usual, and if it wins the device is back
//! in the group. Until then, and for a group not joined yet, messages wait in the epoch buffer;
//! once nothing can restore the group, messages of epochs up to the removal are refused.
//!
//! Invariant: where such a message goes is `routing::route_without_group`'s rule (by its epoch,
//! kind and branch tag, and the kept snapshots and removal record); this module reads those
//! facts and performs the route. Judging a competing commit is `competing_commit`'s,
//! processing one is `mls_processing`'s.

use openmls::prelude::ProtocolMessage;

use crate::branch_records::BranchRecords;
use crate::branch_records::epoch_snapshots;
use crate::client::MlsClient;
use crate::envelope::{Envelope, EnvelopeKind};
use crate::epoch_buffer::{self, BufferedMessage};
use crate::error::MlsError;
use crate::events::{Event, Output};
use crate::group_id::GroupId;
use crate::mls_wire::is_commit;
use crate::routing::{WithoutGroupFacts, WithoutGroupRoute, route_without_group};
use crate::{branch_order, group_meta};
use openmls_traits::OpenMlsProvider as _;

impl MlsClient {
    /// A group message for `group`, which this device does not hold.
    pub(crate) fn handle_without_group(
        &mut self,
        envelope: &Envelope,
        message: ProtocolMessage,
        group: &GroupId,
        tag: &Option<Vec<u8>>,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        let message_epoch = message.epoch().as_u64();
        let meta = self.read(|txn| epoch_snapshots::meta(txn, group, message_epoch))?;
        let of_kept_snapshot = meta.as_ref().is_some_and(|meta| {
            let tag = tag.clone().or_else(|| {
                Self::external_commit_tag_in_snapshot(&message, group, message_epoch, meta)
            });
            branch_order::tag_matches(&tag, &meta.branch_tag)
        });
        let facts = WithoutGroupFacts {
            content: message.content_type(),
            of_kept_snapshot,
            restorable: !self
                .read(|txn| epoch_snapshots::metas(txn, group))?
                .is_empty(),
            from_before_removal: self
                .removed_at(group)?
                .is_some_and(|removed_at| message_epoch <= removed_at),
            from_buffer: buffered.is_some(),
        };
        match route_without_group(&facts) {
            WithoutGroupRoute::CompetingCommit => {
                let meta = meta.ok_or(MlsError::Internal {
                    what: "a commit routed to a snapshot that is not kept",
                })?;
                self.handle_competing_commit(
                    envelope,
                    message,
                    group,
                    message_epoch,
                    meta,
                    buffered,
                )
            }
            WithoutGroupRoute::BufferProposal { retry_commits } => {
                let mut output = self.buffer(envelope, group, message_epoch, buffered)?;
                if retry_commits {
                    output.extend(self.retry_waiting_commits(group, message_epoch)?);
                }
                Ok(output)
            }
            WithoutGroupRoute::Buffer => self.buffer(envelope, group, message_epoch, buffered),
            // Peer input: a late message to a device that no rollback can put back.
            WithoutGroupRoute::NoLongerMember => Err(MlsError::NoLongerMember {
                group: group.clone(),
            }),
        }
    }

    /// Replays the Welcomes buffered for `group` while this device still held it.
    pub(crate) fn replay_buffered_welcomes(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let is_welcome = |m: &BufferedMessage| {
            Envelope::from_bytes(&m.envelope_bytes, usize::MAX)
                .is_ok_and(|e| e.kind() == EnvelopeKind::Welcome)
        };
        self.replay_buffered_where(group, is_welcome, false)
    }

    /// Replays the commits of `epoch` buffered for `group`, which this device no longer holds:
    /// one may have waited for a proposal that just arrived. Once one restores the group, the
    /// rollback has replayed the rest.
    fn retry_waiting_commits(&mut self, group: &GroupId, epoch: u64) -> Result<Output, MlsError> {
        let waiting_commit = |m: &BufferedMessage| m.epoch == epoch && is_commit(&m.envelope_bytes);
        self.replay_buffered_where(group, waiting_commit, true)
    }

    /// Replays the entries buffered for `group` that `wanted` picks, in buffer order; with
    /// `until_held`, stops once the group is held again.
    fn replay_buffered_where(
        &mut self,
        group: &GroupId,
        wanted: impl Fn(&BufferedMessage) -> bool,
        until_held: bool,
    ) -> Result<Output, MlsError> {
        let mut output = Output::default();
        let waiting: Vec<BufferedMessage> = self
            .read(|txn| epoch_buffer::for_group(txn, group))?
            .into_iter()
            .filter(|m| wanted(m))
            .collect();
        let mut dropped = 0;
        for entry in waiting {
            if until_held && self.groups.contains_key(group) {
                break;
            }
            match self.replay_entry(&entry)? {
                Some(replayed) => output.extend(replayed),
                None => dropped += 1,
            }
        }
        if dropped > 0 {
            output.events.push(Event::BufferedDropped {
                group: self.groups.contains_key(group).then(|| group.clone()),
                count: dropped,
            });
        }
        Ok(output)
    }

    /// Deletes everything stored for `group` (OpenMLS state and our metadata) inside the open
    /// transaction, and forgets it in memory.
    pub(crate) fn forget_group(&mut self, group: &GroupId) -> Result<(), MlsError> {
        self.touch(group);
        self.provider.storage().delete_group(&group.to_openmls())?;
        self.with_txn(|txn| BranchRecords::of(txn, group).left_group())?;
        self.groups.remove(group);
        Ok(())
    }

    /// Records that this device was removed from `group` by the commit that created `epoch`.
    pub(crate) fn mark_removed(&self, group: &GroupId, epoch: u64) -> Result<(), MlsError> {
        self.with_txn(|txn| BranchRecords::of(txn, group).removed_at(epoch))
    }

    /// The epoch the group entered without us, if we were removed from it.
    pub(crate) fn removed_at(&self, group: &GroupId) -> Result<Option<u64>, MlsError> {
        self.read(|txn| group_meta::removed_at(txn, group))
    }
}
