//! A group stuck behind a commit that never came: messages of later epochs wait in the buffer,
//! and nothing moves the group on. After `missing_commit_alert`, `tick` reports
//! [`Event::MissingCommit`] once per group and epoch, so the application can ask the members
//! for the commit ([`MlsClient::recent_commits`] answers such a request). Silence here would
//! look like a quiet group while the user's messages pile up unread.
//!
//! Waiting starts at the later of: the group reaching its epoch (by a commit merged here, from
//! the commit log) and the oldest buffered envelope of a later epoch arriving. The epoch last
//! reported is kept under `[group id, "alert"]` in the commit log's namespace.

use spacepanda_core::{Key, Timestamp};

use crate::client::MlsClient;
use crate::commit_log::{self, COMMIT_LOG_NAMESPACE};
use crate::epoch_buffer;
use crate::error::MlsError;
use crate::events::Event;
use crate::group_id::GroupId;

const ALERT: &[u8] = b"alert";

fn alert_key(group: &GroupId) -> Key {
    Key::from_segments([group.as_slice(), ALERT])
}

/// A held group with envelopes of later epochs waiting.
struct Stuck {
    group: GroupId,
    epoch: u64,
    waiting: usize,
    since: Timestamp,
    reported: bool,
}

impl MlsClient {
    fn stuck_groups(&self) -> Result<Vec<Stuck>, MlsError> {
        let mut stuck = Vec::new();
        for (group, mls_group) in &self.groups {
            let epoch = mls_group.epoch().as_u64();
            let found = self.read(|txn| {
                let later: Vec<Timestamp> = epoch_buffer::for_group(txn, group)?
                    .into_iter()
                    .filter(|m| m.epoch > epoch)
                    .map(|m| m.received_at)
                    .collect();
                let Some(oldest) = later.iter().min().copied() else {
                    return Ok(None);
                };
                let reached = commit_log::reached_at(txn, group, epoch)?;
                let reported = txn
                    .get(COMMIT_LOG_NAMESPACE, &alert_key(group))?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .is_some_and(|b| u64::from_be_bytes(b) == epoch);
                Ok(Some((
                    later.len(),
                    reached.map_or(oldest, |r| r.max(oldest)),
                    reported,
                )))
            })?;
            if let Some((waiting, since, reported)) = found {
                stuck.push(Stuck {
                    group: group.clone(),
                    epoch,
                    waiting,
                    since,
                    reported,
                });
            }
        }
        Ok(stuck)
    }

    /// When `tick` next has a `MissingCommit` to report, if ever (for `next_deadline`).
    pub(crate) fn missing_commit_deadline(&self) -> Result<Option<Timestamp>, MlsError> {
        let alert = self.config.missing_commit_alert;
        Ok(self
            .stuck_groups()?
            .into_iter()
            .filter(|s| !s.reported)
            .map(|s| s.since.saturating_add(alert))
            .min())
    }

    /// `tick`: reports each group stuck for `missing_commit_alert` at an epoch not reported yet.
    pub(crate) fn report_missing_commits(
        &mut self,
        now: Timestamp,
    ) -> Result<Vec<Event>, MlsError> {
        let alert = self.config.missing_commit_alert;
        let mut events = Vec::new();
        for stuck in self.stuck_groups()? {
            if stuck.reported || now.duration_since(stuck.since) < alert {
                continue;
            }
            self.with_txn(|txn| {
                txn.put(
                    COMMIT_LOG_NAMESPACE,
                    alert_key(&stuck.group),
                    stuck.epoch.to_be_bytes().to_vec(),
                )?;
                Ok(())
            })?;
            tracing::warn!(group = %stuck.group, epoch = stuck.epoch, "stuck behind a missing commit");
            events.push(Event::MissingCommit {
                group: stuck.group,
                epoch: stuck.epoch,
                waiting: stuck.waiting,
                since: stuck.since,
            });
        }
        Ok(events)
    }
}
