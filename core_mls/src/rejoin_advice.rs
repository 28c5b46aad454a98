//! Whether this device's external join stands, and where a group is: the advice on a member's
//! GroupInfo ([`MlsClient::rejoin_advice`]), and the contest of an external join.
//!
//! A commit of the join's epoch or earlier arriving after the join means the join raced it;
//! so does a message of another branch that no snapshot here reaches (the member that gave the
//! GroupInfo may have been on a branch that lost a race it had not judged yet), and so does
//! `rejoin_confirm_after` passing with nothing of the kind. Each marks the join contested and
//! reports `RejoinContested`; the application asks a member, and `rejoin_advice` judges the
//! answer: the join lost if a member's GroupInfo shows the group went on without this
//! device's leaf. Making the join is `external_join`'s; the record is `join_records`'.
//!
//! The design: docs/FORKS.md.

use spacepanda_core::Timestamp;

use crate::branch_order::BranchHistory;
use crate::branch_records::BranchRecords;
use crate::branch_records::epoch_snapshots;
use crate::branch_records::join_records::{ExternalJoin, external_join as read_external_join};
use crate::client::MlsClient;
use crate::envelope::{Envelope, EnvelopeKind};
use crate::epoch_buffer::BufferedMessage;
use crate::error::MlsError;
use crate::events::{Event, Output};
use crate::group_id::GroupId;
use crate::mls_wire::parse_group_info_envelope;

/// What [`MlsClient::rejoin_advice`] says to do with a member's GroupInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinAdvice {
    /// Join by external commit with it: the group is there, and this device is not.
    Rejoin,
    /// Nothing to do: this device is where the group is (or its side outranks that one).
    Stay,
    /// That member has not judged this device's contested join yet: ask again later (or
    /// another member).
    AskLater,
}

impl MlsClient {
    /// What to do with `group_info` (as for
    /// [`join_by_external_commit`](Self::join_by_external_commit)), a member's answer when this
    /// device asked where the group is. Reads only.
    ///
    /// - This device does not hold the group: [`RejoinAdvice::Rejoin`].
    /// - Where the member's signed branch history and this device's part (both agree on the
    ///   epoch before): inside this device's window, `Stay` (the engine judges the fork when
    ///   the other branch's commits arrive); outside it, the fork rule on the two commits of
    ///   that epoch (`Rejoin` if theirs wins). This is how a device tells a member's branch
    ///   from a losing joiner's.
    /// - Else, after `RejoinContested` (this device's external join raced a commit): `Stay` if the
    ///   GroupInfo holds this device's current leaf; [`RejoinAdvice::AskLater`] if it is of the
    ///   join's epoch or earlier (that member has not judged the race yet) or behind this
    ///   device with an older leaf of it; otherwise `Rejoin` (the group went on without this
    ///   device's join: a member's commit always wins over an external one).
    /// - Otherwise, after a fork outside the window that no history reaches: `AskLater` if this
    ///   device is merely behind on the member's branch, else `Rejoin` if the GroupInfo's epoch
    ///   is later, or the same with a smaller confirmed transcript hash. Every device applies
    ///   the same order, so only one side moves.
    pub fn rejoin_advice(&mut self, group_info: &[u8]) -> Result<RejoinAdvice, MlsError> {
        let (verifiable, envelope) = parse_group_info_envelope(group_info)?;
        let group = GroupId::from_openmls(verifiable.group_id());
        let Some(held) = self.groups.get(&group) else {
            return Ok(RejoinAdvice::Rejoin);
        };
        let our_epoch = held.epoch().as_u64();
        let their_hash = verifiable
            .group_context()
            .confirmed_transcript_hash()
            .to_vec();
        let our_hash = held
            .public_group()
            .group_context()
            .confirmed_transcript_hash()
            .to_vec();
        let their_epoch = verifiable.epoch().as_u64();
        if their_epoch == our_epoch && their_hash == our_hash {
            return Ok(RejoinAdvice::Stay);
        }
        // The two signed branch histories: where they part, the fork rule judges the two
        // commits of that epoch, as every member judged them.
        let theirs = self.group_info_history(&verifiable, &envelope)?;
        let ours = self.branch_history(&group)?;
        let epoch_branch = |history: &BranchHistory, epoch: u64| {
            history
                .iter()
                .find(|(e, _)| *e == epoch)
                .map(|(_, branch)| branch.clone())
        };
        let entry = |history: &BranchHistory, epoch: u64| {
            epoch_branch(history, epoch).map(|branch| branch.merged)
        };
        let parted_at = ours.iter().find_map(|(epoch, branch)| {
            entry(&theirs, *epoch)
                .filter(|theirs| theirs.commit_ref != branch.merged.commit_ref)
                .map(|_| *epoch)
        });
        // Known to part there only if both agree on the epoch before.
        let parted_at = parted_at.filter(|&epoch| {
            epoch > 0
                && entry(&ours, epoch - 1).is_some_and(|before| {
                    entry(&theirs, epoch - 1).is_some_and(|t| t.commit_ref == before.commit_ref)
                })
        });
        if let (Some(epoch), Some(our_branch), Some(their_branch)) = (
            parted_at,
            parted_at.and_then(|e| epoch_branch(&ours, e)),
            parted_at.and_then(|e| epoch_branch(&theirs, e)),
        ) {
            // Every commit of that epoch either side judged, as the members judged them.
            let theirs_wins = crate::branch_order::theirs_wins_epoch(&our_branch, &their_branch);
            if self.holds_snapshot(&group, epoch)?
                && !(theirs_wins && self.own_commit_gone(&group, epoch, &their_branch.merged)?)
            {
                // Inside this device's window: the engine judges it when the other branch's
                // commits arrive (a device on a losing branch moves by itself) — unless the
                // commit that wins there is this device's own, gone with a branch a Welcome
                // took it off: that one never arrives.
                return Ok(RejoinAdvice::Stay);
            }
            return Ok(if theirs_wins {
                RejoinAdvice::Rejoin
            } else {
                RejoinAdvice::Stay
            });
        }
        if let Some(joined) = self.read(|txn| read_external_join(txn, &group))?
            && joined.contested
        {
            // Only this device changes its own leaf, so on this device's branch every epoch
            // since the join holds a leaf with its signature key, and from its current epoch on
            // exactly its current leaf. A leaf with its key but another encryption key is an
            // older epoch of its branch — or an add from a Welcome on another branch.
            let own_signature = self.device.signature_public_key();
            let own_encryption = held
                .own_leaf_node()
                .map(|leaf| leaf.encryption_key().clone());
            let (mut ours_exactly, mut our_key) = (false, false);
            if let Some(tree) = verifiable.extensions().ratchet_tree() {
                for leaf in tree.ratchet_tree().leaves() {
                    if leaf.signature_key().as_slice() == own_signature.as_slice() {
                        our_key = true;
                        ours_exactly |= own_encryption.as_ref() == Some(leaf.encryption_key());
                    }
                }
            }
            // A member behind this device: on this device's branch if the snapshot of that
            // epoch has the same transcript hash.
            let behind_on_our_branch = their_epoch < our_epoch
                && self
                    .read(|txn| epoch_snapshots::meta(txn, &group, their_epoch))?
                    .is_some_and(|meta| meta.confirmed_transcript_hash == their_hash);
            return Ok(if ours_exactly {
                RejoinAdvice::Stay
            } else if their_epoch <= joined.epoch || behind_on_our_branch {
                // That member has not judged the race yet, or has not caught up.
                RejoinAdvice::AskLater
            } else if our_key
                && their_epoch < our_epoch
                && !self.holds_snapshot(&group, their_epoch)?
            {
                // Behind, and this device cannot tell on which branch: no snapshot that old.
                RejoinAdvice::AskLater
            } else {
                RejoinAdvice::Rejoin
            });
        }
        if their_epoch < our_epoch {
            return Ok(RejoinAdvice::Stay);
        }
        if their_epoch > our_epoch && our_epoch > 0 {
            // Ahead on what may be this device's own branch: the same commit made this epoch.
            let ours_made = entry(&ours, our_epoch - 1).map(|rank| rank.commit_ref);
            let theirs_made = entry(&theirs, our_epoch - 1).map(|rank| rank.commit_ref);
            if ours_made.is_some() && ours_made == theirs_made {
                return Ok(RejoinAdvice::AskLater);
            }
        }
        Ok(if their_epoch > our_epoch || their_hash < our_hash {
            RejoinAdvice::Rejoin
        } else {
            RejoinAdvice::Stay
        })
    }

    fn holds_snapshot(&self, group: &GroupId, epoch: u64) -> Result<bool, MlsError> {
        Ok(self
            .read(|txn| epoch_snapshots::meta(txn, group, epoch))?
            .is_some())
    }
}

impl MlsClient {
    /// The branch history this device knows from its last external join of `group`.
    pub(crate) fn external_join_history(&self, group: &GroupId) -> Result<BranchHistory, MlsError> {
        Ok(self
            .read(|txn| read_external_join(txn, group))?
            .map(|joined| joined.history)
            .unwrap_or_default())
    }
}

impl MlsClient {
    /// When `tick` next has an external join to ask about again (see
    /// [`MlsConfig::rejoin_confirm_after`](crate::MlsConfig::rejoin_confirm_after)).
    pub(crate) fn rejoin_confirm_deadline(&self) -> Result<Option<Timestamp>, MlsError> {
        let mut next: Option<Timestamp> = None;
        for group in self.groups.keys() {
            if let Some(due) = self
                .read(|txn| read_external_join(txn, group))?
                .and_then(|record| self.confirm_due(&record))
            {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        Ok(next)
    }

    /// When an unconfirmed, uncontested join made inside the fork window is to be asked about.
    fn confirm_due(&self, record: &ExternalJoin) -> Option<Timestamp> {
        if record.contested || record.joined_at_ms == 0 {
            return None;
        }
        let joined_at = Timestamp::from_unix_millis(record.joined_at_ms);
        // Past the fork window no commit can win over the join any more.
        let due = joined_at.saturating_add(self.config.rejoin_confirm_after);
        (self.config.rejoin_confirm_after < self.config.fork_window).then_some(due)
    }

    /// `tick`, inside its transaction: the external joins due to be asked about again are
    /// marked contested and reported (`RejoinContested`); the application asks the member it
    /// joined from, which says "stay" if it holds this device's leaf.
    pub(crate) fn confirm_external_joins(
        &mut self,
        now: Timestamp,
    ) -> Result<Vec<Event>, MlsError> {
        let mut events = Vec::new();
        let groups: Vec<GroupId> = self.groups.keys().cloned().collect();
        for group in groups {
            let Some(mut record) = self.read(|txn| read_external_join(txn, &group))? else {
                continue;
            };
            if self.confirm_due(&record).is_none_or(|due| now < due) {
                continue;
            }
            record.contested = true;
            self.with_txn(|txn| BranchRecords::of(txn, &group).external_join(&record))?;
            events.push(Event::RejoinContested {
                group,
                epoch: record.epoch,
            });
        }
        Ok(events)
    }
}

impl MlsClient {
    /// Routing, for a commit of `message_epoch` (before the current one) with no snapshot to
    /// judge it by: if this device joined `group` by external commit at that epoch or later,
    /// the commit competes with the rejoin or with the state it was built on, and a member's
    /// commit always wins over an external one. It waits in the buffer (until it expires or a
    /// rejoin makes it moot), and
    /// `RejoinContested` tells the application to ask a member where the group is
    /// ([`rejoin_advice`](Self::rejoin_advice) then judges). `None`: not such a
    /// case.
    pub(crate) fn contest_external_join(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        message_epoch: u64,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Option<Output>, MlsError> {
        let raced = self
            .read(|txn| read_external_join(txn, group))?
            .is_some_and(|record| message_epoch <= record.epoch);
        if !raced {
            return Ok(None);
        }
        self.contest_external_join_branch(envelope, group, message_epoch, buffered)
    }

    /// Routing, for a message of another branch of `group` that no snapshot here can reach:
    /// if this device joined `group` by external commit, the member whose GroupInfo it joined
    /// with may not have judged a race yet, and the branch it joined may have lost there (the
    /// group then goes on without this device, and nothing else would tell it). Handled like a
    /// race of the join itself: it waits, and `RejoinContested` sends the application to ask a
    /// member. `None`: this device did not join `group` by external commit.
    pub(crate) fn contest_external_join_branch(
        &mut self,
        envelope: &Envelope,
        group: &GroupId,
        message_epoch: u64,
        buffered: Option<&BufferedMessage>,
    ) -> Result<Option<Output>, MlsError> {
        let Some(mut record) = self.read(|txn| read_external_join(txn, group))? else {
            return Ok(None);
        };
        let mut output = self.buffer(envelope, group, message_epoch, buffered)?;
        // Told once per contest: when it starts (the commit may have waited in the buffer from
        // before the join), and again for each new commit that arrives — not for each
        // application message of another branch, which would send the application asking
        // once per message.
        let first = !record.contested;
        if first {
            record.contested = true;
            self.transaction(Some(group), |client| {
                client.with_txn(|txn| BranchRecords::of(txn, group).external_join(&record))
            })?;
        }
        if first || (buffered.is_none() && envelope.kind() == EnvelopeKind::Commit) {
            output.events.push(Event::RejoinContested {
                group: group.clone(),
                epoch: record.epoch,
            });
        }
        Ok(Some(output))
    }
}
