//! What `tick` does and when it has work next: the time-driven policy (an operation like the
//! others: it calls them, they never call it). What counts as a deadline, and the one time per
//! operation, is `deadlines`'s.

use spacepanda_core::Timestamp;

use crate::branch_records::epoch_snapshots;
use crate::client::MlsClient;
use crate::deadlines::Earliest;
use crate::error::MlsError;
use crate::events::{Event, Output};
use crate::group_id::GroupId;
use crate::key_package_manager::{self, ledger};
use crate::{commit_log, deferred_sends, epoch_buffer, group_meta, seen_messages};

impl MlsClient {
    /// Runs time-driven policy at `now`: rotates, prunes and replenishes key packages, drops
    /// expired buffered messages and old de-duplication records, gives up on commits that wait
    /// for a proposal that was refused or did not come, drops messages waiting for a group
    /// that cannot come back, and self-updates in groups where our leaf is older than
    /// `self_update_after` (or pending proposals are ours to commit), all in one transaction.
    /// Everything it does, including the commits it makes, happens at `now`.
    ///
    /// Call it at [`next_deadline`](Self::next_deadline) (and not in between: before the
    /// deadline it has nothing to do). After the device was asleep, let the network deliver
    /// what it holds first: a commit whose proposal is among it then completes instead of
    /// being given up.
    pub fn tick(&mut self, now: Timestamp) -> Result<Output, MlsError> {
        let _time = self.operation_at(now);
        // Reporting marks refusals as reported: undone if the tick fails and its events are lost.
        let reported = self.outside_window.clone();
        let result = self.transaction(None, |client| client.tick_steps(now));
        if result.is_err() {
            self.outside_window = reported;
        }
        result
    }

    fn tick_steps(&mut self, now: Timestamp) -> Result<Output, MlsError> {
        let mut output = Output::default();
        // Before expiry: a waiting commit that would expire is reported as abandoned.
        output.events.extend(self.give_up_waiting_commits(now)?);
        let policy = self.config.key_packages.clone();
        upkeep(self, &policy, now, &mut output)?;
        // After buffer expiry: what expired no longer waits for a commit.
        output.events.extend(self.report_missing_commits(now)?);
        output.events.extend(self.outside_window.report());
        output.events.extend(self.confirm_external_joins(now)?);
        output.events.extend(self.drop_unsendable()?);
        // Own commits queued by a rollback and not re-issued yet (a store of an older build,
        // which committed the rollback and the re-issue separately).
        for group in self.read(crate::branch_records::epoch_snapshots::groups_with_reissues)? {
            output.extend(self.reissue_commits(&group)?);
        }
        for group in self.groups() {
            if self.self_update_due(&group, now)? {
                output.extend(self.self_update(&group)?);
            }
        }
        Ok(output)
    }

    /// The earliest time [`tick`](Self::tick) has work to do, or `None` if it has none until
    /// something else happens (an envelope arrives, the application calls an operation). A time
    /// at or before now means "tick now". Ask again after every call into the engine: each can
    /// move the deadline. The [crate docs](crate#time) say what counts.
    ///
    /// Reads the engine's records (the key package ledger, buffered messages, snapshot
    /// metadata); it changes nothing.
    pub fn next_deadline(&self) -> Result<Option<Timestamp>, MlsError> {
        let now = self.now();
        let config = &self.config;
        let mut next = Earliest::default();

        let entries = self.read(ledger::load_all)?;
        next.maybe(key_package_manager::next_change(
            &entries,
            &config.key_packages,
            config.fork_window,
            now,
        ));
        for (_, _, taken_at) in self.read(epoch_snapshots::all)? {
            next.at(taken_at.saturating_add(config.fork_window));
        }
        for message in self.read(epoch_buffer::all)? {
            next.at(message.received_at.saturating_add(config.buffer_max_age));
        }
        for (_, since) in self.read(epoch_buffer::awaiting)? {
            next.at(since.saturating_add(config.commit_proposal_wait));
        }
        next.maybe(self.refused.next_check());
        next.maybe(self.missing_commit_deadline()?);
        next.maybe(self.rejoin_confirm_deadline()?);
        if self.outside_window.unreported()
            || !self.read(epoch_snapshots::groups_with_reissues)?.is_empty()
            || !self.unrestorable_deferred_groups()?.is_empty()
            || self.orphaned_leave_requests()?
        {
            next.at(now);
        }
        for group in self.groups.keys() {
            next.maybe(self.self_update_deadline(group, now)?);
        }
        Ok(next.0)
    }

    /// Whether a leave request outlived both its group and every snapshot that could restore
    /// it (`tick` forgets it).
    fn orphaned_leave_requests(&self) -> Result<bool, MlsError> {
        self.read(|txn| {
            for group in group_meta::leave_requests(txn)? {
                if !self.groups.contains_key(&group)
                    && epoch_snapshots::metas(txn, &group)?.is_empty()
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Groups this device does not hold and that no kept snapshot can restore, with messages
    /// still waiting to be sent in them.
    fn unrestorable_deferred_groups(&self) -> Result<Vec<GroupId>, MlsError> {
        self.read(|txn| {
            let mut gone = Vec::new();
            for group in deferred_sends::groups(txn)? {
                if !self.groups.contains_key(&group)
                    && epoch_snapshots::metas(txn, &group)?.is_empty()
                {
                    gone.push(group);
                }
            }
            Ok(gone)
        })
    }

    /// `tick`: drops the messages waiting to be sent in groups that cannot come back, each
    /// group's with one [`Event::MessagesNotSent`].
    fn drop_unsendable(&mut self) -> Result<Vec<Event>, MlsError> {
        let mut events = Vec::new();
        for group in self.unrestorable_deferred_groups()? {
            let dropped = self.transaction(None, |client| {
                client.with_txn(|txn| {
                    let waiting = deferred_sends::for_group(txn, &group)?;
                    for (key, _) in &waiting {
                        deferred_sends::remove(txn, key.clone())?;
                    }
                    Ok(waiting)
                })
            })?;
            if dropped.is_empty() {
                continue;
            }
            tracing::info!(%group, count = dropped.len(), "messages for a group left for good dropped");
            events.push(Event::MessagesNotSent {
                group,
                message_ids: dropped
                    .iter()
                    .map(|(_, m)| crate::events::MessageId(m.message_id))
                    .collect(),
            });
        }
        Ok(events)
    }

    /// `tick`: forgets the commit log of groups this device neither holds nor can get back.
    fn forget_dead_commit_logs(&mut self) -> Result<(), MlsError> {
        let held: Vec<GroupId> = self.groups.keys().cloned().collect();
        self.with_txn(|txn| commit_log::forget_unrestorable(txn, &held))
    }
}

/// `tick`'s upkeep inside its transaction: key package rotation, pruning and refill, snapshot,
/// de-duplication and buffer expiry.
fn upkeep(
    client: &mut MlsClient,
    policy: &key_package_manager::PoolPolicy,
    now: Timestamp,
    output: &mut Output,
) -> Result<(), MlsError> {
    client.with_txn(|txn| key_package_manager::rotate(txn, policy, now))?;
    key_package_manager::prune(&client.provider, policy, client.config.fork_window, now)?;
    client.expire_snapshots(now)?;
    client.forget_dead_commit_logs()?;
    let dropped = client.with_txn(|txn| {
        seen_messages::expire(txn, client.config.dedup_retention, now)?;
        epoch_buffer::expire(txn, &client.config, now)
    })?;
    for (group, count) in dropped {
        let group = client.groups.contains_key(&group).then_some(group);
        output.events.push(Event::BufferedDropped { group, count });
    }
    let created = client.replenish_key_packages_at(now)?;
    if created > 0 {
        output
            .events
            .push(Event::KeyPackagesReplenished { created });
    }
    Ok(())
}
