//! Buffering: keeping an envelope this device cannot process yet (its epoch is not reached,
//! or its group not joined), for the operations that meet one. What is kept, how and for how
//! long is `epoch_buffer`'s; who may take room is `buffer_budget`'s.

use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::epoch_buffer::{self, BufferedMessage};
use crate::error::MlsError;
use crate::events::{Disposition, Event, Output};
use crate::group_id::GroupId;

impl MlsClient {
    /// Keeps `envelope` for `group` at `epoch` until the group can process it (one
    /// transaction). `buffered`: it already is in the buffer and stays there.
    pub(crate) fn buffer(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        self.buffer_marked(envelope, group, epoch, buffered, false)
    }

    /// [`buffer`](Self::buffer) for a commit that references a proposal not received yet: it
    /// is marked, so that `tick` gives up on it after `commit_proposal_wait`.
    pub(crate) fn buffer_awaiting_proposal(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Output, MlsError> {
        let output = self.buffer_marked(envelope, group, epoch, buffered, true)?;
        // A proposal refused in that epoch may be the one it waits for: `tick` checks.
        let now = self.now();
        self.refused.commit_waits(group, epoch, now);
        Ok(output)
    }

    fn buffer_marked(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        epoch: u64,
        buffered: Option<&BufferedMessage>,
        awaiting_proposal: bool,
    ) -> Result<Output, MlsError> {
        let mut output = Output {
            disposition: Disposition::Buffered,
            ..Output::default()
        };
        let now = self.now();
        let entry_key = epoch_buffer::key(group, epoch, envelope);
        if buffered.is_some() {
            // Already in the buffer, still not processable: leave it there.
            if awaiting_proposal {
                self.transaction(None, |client| {
                    client.with_txn(|txn| epoch_buffer::mark_awaiting(txn, &entry_key, now))
                })?;
            }
            return Ok(output);
        }
        let evicted = self.transaction(None, |client| {
            let held: std::collections::BTreeMap<GroupId, u64> = client
                .groups
                .iter()
                .map(|(id, g)| (id.clone(), g.epoch().as_u64()))
                .collect();
            let held_epoch = |g: &GroupId| held.get(g).copied();
            let config = client.config.clone();
            let source = client.source.clone();
            client.with_txn(|txn| {
                let evicted = epoch_buffer::push(
                    txn,
                    &config,
                    &held_epoch,
                    group,
                    epoch,
                    envelope,
                    source.as_ref(),
                    now,
                )?;
                // Evicted at once when over the bounds: then there is nothing to mark.
                if awaiting_proposal
                    && txn
                        .get(epoch_buffer::BUFFER_NAMESPACE, &entry_key)?
                        .is_some()
                {
                    epoch_buffer::mark_awaiting(txn, &entry_key, now)?;
                }
                Ok(evicted)
            })
        })?;
        if evicted > 0 {
            output.events.push(Event::BufferedDropped {
                group: self.groups.contains_key(group).then(|| group.clone()),
                count: evicted,
            });
        }
        Ok(output)
    }
}
