//! Where this device joined a group from, kept in the group's metadata (`group_meta`): the
//! Welcome it joined with ([`JoinRecord`]) and its last external join ([`ExternalJoin`]).
//!
//! Both outlive the group (`group_removal::forget_group` keeps them): a rollback may restore
//! the group, and then commits from before the join must still be recognised as such; and a
//! join is part of the branch history a later Welcome is judged against (`branch_history`).
//!
//! Invariant: records, and the rules that read only them (how far back a join record reaches,
//! how far the sent log may be pruned); what a Welcome or an external commit does with them is
//! `welcome_handler`'s and `external_join`'s.
//!
//! A part of `branch_records`: its readers are the crate's, its writers (`pub(super)`) only
//! [`BranchRecords`](super::BranchRecords)'s.

use serde::{Deserialize, Serialize};
use spacepanda_core::{Timestamp, Transaction};

use crate::branch_order::BranchHistory;
use crate::config::MlsConfig;
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::group_meta::{self, GROUP_META_NAMESPACE, record_key};
use crate::storage::codec;

/// The record of the Welcome this device joined with: `[group id, "joined"]`.
pub(crate) const JOINED: &[u8] = b"joined";
/// The record of this device's last external join: `[group id, "external_join"]`.
pub(crate) const EXTERNAL_JOIN: &[u8] = b"external_join";

/// Where this device joined a group from: kept so that a later Welcome for the same group can
/// be recognised as a re-add on the winning branch (same key package, later epoch) or as a
/// concurrent add that wins (same epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRecord {
    pub(crate) epoch: u64,
    pub(crate) key_package_ref: Vec<u8>,
    pub(crate) commit_ref: Vec<u8>,
    /// The inviter's branch history (epochs before `epoch`), from the Welcome's signed context.
    #[serde(default)]
    pub(crate) history: BranchHistory,
    /// What stood before this join, when snapshots of an earlier membership were kept across
    /// it (see `handle_welcome`): a rollback to one of them undoes this join, and the record
    /// and leave request from before it stand again.
    #[serde(default)]
    pub(crate) before: Option<Box<JoinRecord>>,
    /// Whether a leave request stood before this join (it stands again if a rollback undoes
    /// the join).
    #[serde(default)]
    pub(crate) leave_requested_before: bool,
}

impl JoinRecord {
    /// Drops what no rollback can reach any more: the records before the first one at or
    /// before `oldest`, the oldest snapshot kept.
    pub(crate) fn reaching_back_to(mut self, oldest: u64) -> JoinRecord {
        if self.epoch <= oldest {
            self.before = None;
            self.leave_requested_before = false;
        } else if let Some(before) = self.before.take() {
            self.before = Some(Box::new(before.reaching_back_to(oldest)));
        }
        self
    }
}

/// Where this device last joined `group` from, if it joined from a Welcome.
pub(crate) fn join_record(
    txn: &Transaction,
    group: &GroupId,
) -> Result<Option<JoinRecord>, MlsError> {
    read(txn, group, JOINED)
}

/// Records where this device joined `group` from.
pub(super) fn write_join_record(
    txn: &mut Transaction,
    group: &GroupId,
    record: &JoinRecord,
) -> Result<(), MlsError> {
    write(txn, group, JOINED, record)
}

/// Inside the open transaction, after a rollback of `group` to `epoch`: a join at a later
/// epoch was on the abandoned branch, so the join record (and leave request) from before it
/// stand again.
pub(super) fn rewind_join_record(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<(), MlsError> {
    let Some(mut record) = join_record(txn, group)? else {
        return Ok(());
    };
    if record.epoch <= epoch {
        return Ok(());
    }
    loop {
        if record.leave_requested_before {
            group_meta::request_leave(txn, group)?;
        }
        match record.before.take() {
            Some(before) if before.epoch > epoch => record = *before,
            Some(before) => {
                write(txn, group, JOINED, &*before)?;
                return Ok(());
            }
            None => {
                txn.delete(GROUP_META_NAMESPACE, record_key(group, JOINED))?;
                return Ok(());
            }
        }
    }
}

/// This device's last join of a group by external commit (in the group's metadata; see
/// `group_removal::forget_group` for when it outlives the group): the epoch its commit was made in,
/// and whether a commit of that epoch or earlier that this device cannot judge arrived since — a
/// race its commit may have lost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExternalJoin {
    pub(crate) epoch: u64,
    pub(crate) contested: bool,
    /// The branch this device joined: the member's history from the GroupInfo, then this
    /// device's own commit (part of `branch_history`, as a Welcome's history is).
    #[serde(default)]
    pub(crate) history: BranchHistory,
    /// When this device made the join (ms since the Unix epoch; 0 in records of older
    /// builds, which then keep nothing back from the sent log).
    #[serde(default)]
    pub(crate) joined_at_ms: u64,
}

/// This device's last external join of `group`, if any.
pub(crate) fn external_join(
    txn: &Transaction,
    group: &GroupId,
) -> Result<Option<ExternalJoin>, MlsError> {
    read(txn, group, EXTERNAL_JOIN)
}

/// Records this device's external join of `group`.
pub(super) fn write_external_join(
    txn: &mut Transaction,
    group: &GroupId,
    record: &ExternalJoin,
) -> Result<(), MlsError> {
    write(txn, group, EXTERNAL_JOIN, record)
}

/// Inside the open transaction of a Welcome that `group`'s state now comes from: the external
/// join this device made before no longer describes its branch (its history would otherwise
/// outrank the Welcome's in `branch_history`), and no race of it is left to contest.
pub(super) fn forget_external_join(txn: &mut Transaction, group: &GroupId) -> Result<(), MlsError> {
    txn.delete(GROUP_META_NAMESPACE, record_key(group, EXTERNAL_JOIN))?;
    Ok(())
}

fn read<T: serde::de::DeserializeOwned>(
    txn: &Transaction,
    group: &GroupId,
    name: &[u8],
) -> Result<Option<T>, MlsError> {
    txn.get(GROUP_META_NAMESPACE, &record_key(group, name))?
        .map(|bytes| codec::decode(GROUP_META_NAMESPACE, &bytes))
        .transpose()
}

fn write<T: Serialize>(
    txn: &mut Transaction,
    group: &GroupId,
    name: &[u8],
    record: &T,
) -> Result<(), MlsError> {
    txn.put(
        GROUP_META_NAMESPACE,
        record_key(group, name),
        codec::encode(record)?,
    )?;
    Ok(())
}

/// Inside the open transaction: the epoch through which `group`'s sent log may be pruned at
/// most, given its oldest snapshot `oldest` (`None`: everything may go). While this device's
/// external join is inside the fork window (in epochs before `current_epoch` and in time
/// before `now`), a commit of the join's epoch can still win over it — the join then never
/// happened for the group, nor did anything sent since — so messages sent since the join stay
/// logged to go out again when the device rejoins (`drop_held_state`). No snapshot covers
/// that: the device never held the epoch before its join.
pub(crate) fn sent_log_prune_bound(
    txn: &Transaction,
    group: &GroupId,
    oldest: Option<u64>,
    current_epoch: Option<u64>,
    config: &MlsConfig,
    now: Timestamp,
) -> Result<Option<u64>, MlsError> {
    let Some(joined) = external_join(txn, group)? else {
        return Ok(oldest);
    };
    let joined_at = Timestamp::from_unix_millis(joined.joined_at_ms);
    let inside = joined.joined_at_ms > 0
        && now.duration_since(joined_at) < config.fork_window
        && current_epoch.is_some_and(|current| {
            joined.epoch.saturating_add(config.fork_window_epochs) > current
        });
    Ok(match (inside, oldest) {
        (false, _) => oldest,
        (true, Some(oldest)) => Some(oldest.min(joined.epoch)),
        (true, None) => Some(joined.epoch),
    })
}
