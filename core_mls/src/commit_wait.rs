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
//! Either way `tick` reports [`Event::CommitAbandoned`](crate::Event::CommitAbandoned) once and
//! drops the commit. A commit given up for a refused proposal is recorded as seen (it can never
//! apply, so a copy is a duplicate); one given up for a missing proposal is not, so that a copy
//! delivered together with its proposal still applies. After a restart the refusals are forgotten,
//! and a commit waiting for one is given up by the time bound instead.
//!
//! This module keeps the refusals (in memory); `commit_abandonment` is the `tick` step that
//! gives up.

use std::collections::BTreeMap;

use spacepanda_core::Timestamp;

use crate::envelope::Envelope;
use crate::group_id::GroupId;

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
    pub(crate) fn forget_stale(&mut self, current: impl Fn(&GroupId) -> Option<u64>) {
        self.groups
            .retain(|group, refused| current(group) == Some(refused.epoch));
    }

    /// The groups to check, with their epoch and refused proposals; marks them checked.
    pub(crate) fn take_unchecked(&mut self) -> Vec<(GroupId, u64, Vec<Vec<u8>>)> {
        self.groups
            .iter_mut()
            .filter_map(|(group, refused)| {
                refused.unchecked_since.take()?;
                Some((group.clone(), refused.epoch, refused.envelopes.clone()))
            })
            .collect()
    }
}
