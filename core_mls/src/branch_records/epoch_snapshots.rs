//! Durable records that let a group move onto another branch: snapshots of past epochs, the
//! application messages this device sent in recent epochs, and own commits waiting to be
//! re-issued after a rollback.
//!
//! Layout (all sealed at rest like everything else):
//! - [`META_NAMESPACE`] `[group id, epoch (u64 BE)]` → [`SnapshotMeta`] (CBOR): when it was taken,
//!   the branch tag of that epoch, the rank of the commit this device merged out of it, and the
//!   commit this device made in it, if any;
//! - [`CANDIDATES_NAMESPACE`] `[group id, epoch]` → every commit of that epoch judged so far,
//!   rank and envelope (CBOR list of [`Candidate`]);
//! - [`WELCOME_NAMESPACE`] `[group id, epoch]` → the Welcome the own commit out of that epoch
//!   sent (CBOR [`SentWelcome`]);
//! - [`STATE_NAMESPACE`] `[group id, epoch, "p", key]` → every entry of the group's OpenMLS
//!   prefix as it was in that epoch (`key` is the original key's encoding, one segment);
//!   `[group id, epoch, "u", namespace, key]` → what a key outside the prefix held before the
//!   merge changed it (`0` = absent, `1 ‖ value`): OpenMLS's merge deletes our old leaf
//!   encryption key pair and writes the new one under their public keys, outside the prefix;
//! - [`SENT_LOG_NAMESPACE`] `[group id, epoch, sequence]` → an encoded [`AppMessage`] this
//!   device encrypted in that epoch;
//! - [`REISSUE_NAMESPACE`] `[group id, sequence]` → an [`OwnCommit`] (CBOR) to make again on
//!   the winning branch.
//!
//! Branches this device left are kept by `dormant_branches`.
//!
//! Metadata lives apart from the (large) state so that listing snapshots reads no state.
//!
//! A part of `branch_records`: its readers are the crate's, its writers (`pub(super)`) only
//! [`BranchRecords`](super::BranchRecords)'s.

use serde::{Deserialize, Serialize};
use spacepanda_core::{Key, PriorValue, Timestamp, Transaction};

use crate::app_message::AppMessage;
use crate::branch_order::{CommitRank, EpochBranch};
use crate::error::MlsError;
use crate::group_id::GroupId;
use crate::outbox::next_sequence;
use crate::storage::codec;

/// Snapshot metadata, one record per group and epoch.
pub(super) const META_NAMESPACE: &str = "fork_snapshot_meta";
/// Snapshot contents.
pub(super) const STATE_NAMESPACE: &str = "fork_snapshot";
/// Application messages sent in recent epochs.
pub(super) const SENT_LOG_NAMESPACE: &str = "fork_sent_log";
/// Own commits to re-issue on the winning branch.
pub(super) const REISSUE_NAMESPACE: &str = "fork_reissue";
/// The commits judged in each kept epoch (see [`candidates`]).
pub(super) const CANDIDATES_NAMESPACE: &str = "fork_candidates";
/// The Welcome the own commit out of a kept epoch sent (see [`set_welcome`]).
pub(super) const WELCOME_NAMESPACE: &str = "fork_snapshot_welcome";

const PREFIX_ENTRY: &[u8] = b"p";
const UNDO_ENTRY: &[u8] = b"u";

/// A commit this device made, as an intent that can be made again on another branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OwnCommit {
    /// Add the devices of these key packages (TLS-encoded MLS messages, as published).
    Add { key_packages: Vec<Vec<u8>> },
    /// Remove these devices: `(user id, device id)` bytes.
    Remove { devices: Vec<(Vec<u8>, Vec<u8>)> },
    /// A fresh leaf for this device (also commits pending proposals).
    SelfUpdate,
}

impl OwnCommit {
    /// What it changes, as the application is told.
    pub(crate) fn change(&self) -> crate::events::OwnChange {
        match self {
            Self::Add { .. } => crate::events::OwnChange::AddMembers,
            Self::Remove { .. } => crate::events::OwnChange::RemoveMembers,
            Self::SelfUpdate => crate::events::OwnChange::SelfUpdate,
        }
    }
}

/// What is known about one past epoch of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotMeta {
    /// When the snapshot was taken (unix ms, our clock).
    pub(crate) taken_at_ms: u64,
    /// The branch tag of this epoch on our branch: messages made in it carry it.
    pub(crate) branch_tag: Vec<u8>,
    /// The epoch's confirmed transcript hash (empty in records written before it was kept).
    #[serde(default)]
    pub(crate) confirmed_transcript_hash: Vec<u8>,
    /// The commit this device merged out of this epoch.
    pub(crate) merged: CommitRank,
    /// The commit this device made in this epoch, if the merged one was ours.
    pub(crate) own_commit: Option<OwnCommit>,
    /// The Welcome that commit sent, if it added devices: sent again, with the branch history
    /// as this device knows it then, if the device comes back to this branch (the invited
    /// devices may have refused it on what the history said when it was first sent).
    ///
    /// Stored in [`WELCOME_NAMESPACE`] (see [`set_welcome`]); set here only in records of
    /// earlier builds and inside a dormant branch's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) welcome: Option<SentWelcome>,
    /// `(user id, device id)` of the device that joined by the merged commit, if it was an
    /// external commit: told if this device's branch loses below it (see
    /// `Abandoned::external_joiners`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) external_joiner: Option<([u8; 32], [u8; 16])>,
    /// `(user id, device id)` of the devices the own commit removed by pending proposals it
    /// carried (a member's leave; OpenMLS commits the proposal store with every commit). Made
    /// again where the proposal is lost and its maker may hold nothing of the group to ask
    /// again with: when this device leaves the branch wholesale
    /// ([`queue_membership_change`]), or rolls back to an epoch before this one
    /// (`restore_snapshot`). A rollback to this very epoch restores the proposal itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) carried_removals: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A Welcome this device sent: the MLS message and the devices it went to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SentWelcome {
    /// The TLS-encoded MLS Welcome.
    #[serde(serialize_with = "byte_string")]
    pub(crate) payload: Vec<u8>,
    /// `(user id, device id)` of each invited device.
    pub(crate) to: Vec<([u8; 32], [u8; 16])>,
}

/// Writes `bytes` as one CBOR byte string in a single call: a Welcome holds the ratchet tree
/// (hundreds of KB at 1000 members), too long to go through the encoder's byte-by-byte test
/// of sequences.
fn byte_string<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Records the Welcome the own commit out of `epoch` sent (if that epoch's snapshot is kept).
///
/// Apart from the metadata: a Welcome carries the ratchet tree (hundreds of KB at 1000
/// members), and the metadata of every snapshot is read on every commit.
/// Records the removals the own commit out of `epoch` carried (see
/// [`SnapshotMeta::carried_removals`]), if that epoch's snapshot is kept.
pub(super) fn set_carried_removals(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    devices: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), MlsError> {
    if devices.is_empty() {
        return Ok(());
    }
    if let Some(mut kept) = meta(txn, group, epoch)? {
        kept.carried_removals = devices;
        txn.put(
            META_NAMESPACE,
            epoch_key(group, epoch),
            codec::encode(&kept)?,
        )?;
    }
    Ok(())
}

pub(super) fn set_welcome(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    welcome: &SentWelcome,
) -> Result<(), MlsError> {
    let key = epoch_key(group, epoch);
    if txn.get(META_NAMESPACE, &key)?.is_some() {
        txn.put(WELCOME_NAMESPACE, key, codec::encode(welcome)?)?;
    }
    Ok(())
}

/// The Welcome the own commit out of `epoch` sent, if any (records of earlier builds keep it
/// in the metadata: `meta` is that metadata).
pub(crate) fn welcome(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
    meta: &SnapshotMeta,
) -> Result<Option<SentWelcome>, MlsError> {
    if let Some(kept) = &meta.welcome {
        return Ok(Some(kept.clone()));
    }
    txn.get(WELCOME_NAMESPACE, &epoch_key(group, epoch))?
        .map(|bytes| codec::decode(WELCOME_NAMESPACE, &bytes))
        .transpose()
}

/// A commit of a kept epoch, as judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Candidate {
    /// What decides between it and the others.
    pub(crate) rank: CommitRank,
    /// Its envelope bytes (empty when only its rank is known, from a Welcome's history).
    pub(crate) envelope: Vec<u8>,
}

/// Most commits judged per kept epoch. Only members can make valid commits, and a member makes
/// at most one per epoch unless it equivocates, so this bounds a misbehaving member.
pub(crate) const MAX_CANDIDATES: usize = 16;

/// Every commit of `epoch` this device has judged, the merged one included, with its envelope:
/// the winner is a function of the whole set (see `branch_order::winner`), and one that lost
/// may win again when a later commit removes the committer that beat it.
pub(crate) fn candidates(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<Vec<Candidate>, MlsError> {
    txn.get(CANDIDATES_NAMESPACE, &epoch_key(group, epoch))?
        .map(|bytes| codec::decode(CANDIDATES_NAMESPACE, &bytes))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// What the snapshot of `epoch` says of the branch: the commit merged out of it (`merged`,
/// from its metadata) and the other commits of that epoch judged.
pub(crate) fn epoch_branch(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
    merged: CommitRank,
) -> Result<EpochBranch, MlsError> {
    let others = candidates(txn, group, epoch)?
        .into_iter()
        .map(|candidate| candidate.rank)
        .filter(|rank| rank.commit_ref != merged.commit_ref)
        .collect();
    Ok(EpochBranch { merged, others })
}

/// Replaces the candidates of `epoch` (kept with its snapshot).
pub(super) fn set_candidates(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    candidates: &[Candidate],
) -> Result<(), MlsError> {
    txn.put(
        CANDIDATES_NAMESPACE,
        epoch_key(group, epoch),
        codec::encode(&candidates)?,
    )?;
    Ok(())
}

pub(crate) fn epoch_key(group: &GroupId, epoch: u64) -> Key {
    Key::from_segments([group.as_slice(), &epoch.to_be_bytes()])
}

pub(crate) fn epoch_of(key: &Key) -> Option<u64> {
    let segment = key.segments().nth(1)?;
    Some(u64::from_be_bytes(segment.try_into().ok()?))
}

/// Writes one snapshot: the group's prefix entries (`(key, value)` of namespace `mls`), the
/// prior values of what the merge changed outside it, and the metadata.
pub(super) fn store(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    prefix_entries: &[(Key, Vec<u8>)],
    undo: Vec<(String, Key, PriorValue)>,
    meta: &SnapshotMeta,
) -> Result<(), MlsError> {
    let base = epoch_key(group, epoch);
    // A retaken snapshot (after a rollback to this epoch) replaces the old one whole.
    txn.delete_prefix(STATE_NAMESPACE, &base)?;
    let undo = undo.iter().map(|(namespace, key, prior)| {
        (
            namespace.as_str(),
            key,
            prior.as_ref().map(|p| p.as_slice()),
        )
    });
    write_state(txn, STATE_NAMESPACE, &base, prefix_entries, undo)?;
    // A Welcome travels inside the metadata only between here and a dormant branch.
    match &meta.welcome {
        Some(welcome) => {
            txn.put(WELCOME_NAMESPACE, base.clone(), codec::encode(welcome)?)?;
            let mut meta = meta.clone();
            meta.welcome = None;
            txn.put(META_NAMESPACE, base, codec::encode(&meta)?)?;
        }
        None => txn.put(META_NAMESPACE, base, codec::encode(meta)?)?,
    }
    Ok(())
}

/// Every snapshot's metadata for `group`, oldest epoch first.
pub(crate) fn metas(
    txn: &Transaction,
    group: &GroupId,
) -> Result<Vec<(u64, SnapshotMeta)>, MlsError> {
    let mut metas = Vec::new();
    for (key, bytes) in txn.scan_prefix(META_NAMESPACE, &Key::from_segment(group.as_slice()))? {
        let epoch = epoch_of(&key).ok_or(MlsError::corrupted(
            META_NAMESPACE,
            "snapshot key has no epoch",
        ))?;
        metas.push((epoch, codec::decode(META_NAMESPACE, &bytes)?));
    }
    // Sealed stores scan in an unspecified order.
    metas.sort_by_key(|(epoch, _)| *epoch);
    Ok(metas)
}

/// The metadata of the snapshot of `epoch`, if kept.
pub(crate) fn meta(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<Option<SnapshotMeta>, MlsError> {
    txn.get(META_NAMESPACE, &epoch_key(group, epoch))?
        .map(|bytes| codec::decode(META_NAMESPACE, &bytes))
        .transpose()
}

/// Every group with at least one snapshot, and the epochs and times of its snapshots.
pub(crate) fn all(txn: &Transaction) -> Result<Vec<(GroupId, u64, Timestamp)>, MlsError> {
    let mut out = Vec::new();
    for (key, bytes) in txn.scan_prefix(META_NAMESPACE, &Key::empty())? {
        let group = key
            .segments()
            .next()
            .map(GroupId::from_slice)
            .ok_or(MlsError::corrupted(
                META_NAMESPACE,
                "snapshot key has no group",
            ))?;
        let epoch = epoch_of(&key).ok_or(MlsError::corrupted(
            META_NAMESPACE,
            "snapshot key has no epoch",
        ))?;
        let meta: SnapshotMeta = codec::decode(META_NAMESPACE, &bytes)?;
        out.push((group, epoch, Timestamp::from_unix_millis(meta.taken_at_ms)));
    }
    Ok(out)
}

/// The group's prefix entries kept for `epoch` (original keys), and the undo entries
/// `(namespace, key, prior)` of the merge out of it.
#[allow(clippy::type_complexity)]
pub(crate) fn contents(
    txn: &Transaction,
    group: &GroupId,
    epoch: u64,
) -> Result<(Vec<(Key, Vec<u8>)>, Vec<(String, Key, Option<Vec<u8>>)>), MlsError> {
    read_state(txn, STATE_NAMESPACE, &epoch_key(group, epoch))
}

/// Writes a kept group state under `base` in `namespace`: `[base, "p", key]` → an entry of the
/// group's OpenMLS prefix, `[base, "u", namespace, key]` → a value outside it (`0` absent,
/// `1 ‖ value`).
pub(super) fn write_state<'a>(
    txn: &mut Transaction,
    namespace: &str,
    base: &Key,
    prefix: &[(Key, Vec<u8>)],
    outside: impl IntoIterator<Item = (&'a str, &'a Key, Option<&'a [u8]>)>,
) -> Result<(), MlsError> {
    for (key, value) in prefix {
        txn.put(
            namespace,
            base.clone().with(PREFIX_ENTRY).with(key.as_bytes()),
            value.clone(),
        )?;
    }
    for (outside_namespace, key, value) in outside {
        let mut stored = Vec::with_capacity(1 + value.map_or(0, <[u8]>::len));
        match value {
            Some(value) => {
                stored.push(1);
                stored.extend_from_slice(value);
            }
            None => stored.push(0),
        }
        txn.put(
            namespace,
            base.clone()
                .with(UNDO_ENTRY)
                .with(outside_namespace.as_bytes())
                .with(key.as_bytes()),
            stored,
        )?;
    }
    Ok(())
}

/// Reads what [`write_state`] wrote under `base`.
#[allow(clippy::type_complexity)]
pub(crate) fn read_state(
    txn: &Transaction,
    namespace: &'static str,
    base: &Key,
) -> Result<(Vec<(Key, Vec<u8>)>, Vec<(String, Key, Option<Vec<u8>>)>), MlsError> {
    let corrupted = |reason| MlsError::corrupted(namespace, reason);
    let depth = base.segments().count();
    let mut prefix = Vec::new();
    let mut outside = Vec::new();
    for (key, value) in txn.scan_prefix(namespace, base)? {
        let mut segments = key.segments().skip(depth);
        match segments.next() {
            Some(PREFIX_ENTRY) => {
                let original = segments
                    .next()
                    .and_then(|k| Key::from_encoded(k).ok())
                    .ok_or_else(|| corrupted("state entry has no valid key"))?;
                prefix.push((original, value));
            }
            Some(UNDO_ENTRY) => {
                let outside_namespace = segments
                    .next()
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .ok_or_else(|| corrupted("outside entry has no namespace"))?
                    .to_owned();
                let original = segments
                    .next()
                    .and_then(|k| Key::from_encoded(k).ok())
                    .ok_or_else(|| corrupted("outside entry has no valid key"))?;
                let value = match value.split_first() {
                    Some((0, [])) => None,
                    Some((1, rest)) => Some(rest.to_vec()),
                    _ => return Err(corrupted("outside entry value malformed")),
                };
                outside.push((outside_namespace, original, value));
            }
            _ => return Err(corrupted("state entry of unknown kind")),
        }
    }
    Ok((prefix, outside))
}

/// Deletes the snapshot of `epoch` and its candidates.
pub(super) fn delete(txn: &mut Transaction, group: &GroupId, epoch: u64) -> Result<(), MlsError> {
    let base = epoch_key(group, epoch);
    txn.delete_prefix(STATE_NAMESPACE, &base)?;
    txn.delete(CANDIDATES_NAMESPACE, base.clone())?;
    txn.delete(WELCOME_NAMESPACE, base.clone())?;
    txn.delete(META_NAMESPACE, base)?;
    Ok(())
}

/// Records an application message this device encrypted in `epoch`.
pub(super) fn log_sent(
    txn: &mut Transaction,
    group: &GroupId,
    epoch: u64,
    message: &AppMessage,
) -> Result<(), MlsError> {
    let sequence = next_sequence(txn, "sent_log_sequence")?;
    txn.put(
        SENT_LOG_NAMESPACE,
        epoch_key(group, epoch).with(sequence.to_be_bytes()),
        message.encode()?,
    )?;
    Ok(())
}

/// Removes and returns the messages logged for epochs after `after` (all if `None`), in the
/// order they were sent.
pub(super) fn take_sent_after(
    txn: &mut Transaction,
    group: &GroupId,
    after: Option<u64>,
) -> Result<Vec<AppMessage>, MlsError> {
    let mut entries = Vec::new();
    for (key, bytes) in txn.scan_prefix(SENT_LOG_NAMESPACE, &Key::from_segment(group.as_slice()))? {
        let epoch = epoch_of(&key).ok_or(MlsError::corrupted(
            SENT_LOG_NAMESPACE,
            "sent log key has no epoch",
        ))?;
        if after.is_none_or(|after| epoch > after) {
            let sequence = key
                .segments()
                .nth(2)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let message = AppMessage::decode(&bytes).map_err(|_| {
                MlsError::corrupted(SENT_LOG_NAMESPACE, "sent message does not decode")
            })?;
            entries.push((sequence, key, message));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut messages = Vec::with_capacity(entries.len());
    for (_, key, message) in entries {
        txn.delete(SENT_LOG_NAMESPACE, key)?;
        messages.push(message);
    }
    Ok(messages)
}

/// Forgets logged messages of epochs up to `through`: no rollback can reach behind them.
pub(super) fn prune_sent_through(
    txn: &mut Transaction,
    group: &GroupId,
    through: Option<u64>,
) -> Result<(), MlsError> {
    for (key, _) in txn.scan_prefix(SENT_LOG_NAMESPACE, &Key::from_segment(group.as_slice()))? {
        let epoch = epoch_of(&key).unwrap_or(0);
        if through.is_none_or(|through| epoch <= through) {
            txn.delete(SENT_LOG_NAMESPACE, key)?;
        }
    }
    Ok(())
}

/// Queues an own commit to make again on the winning branch.
pub(super) fn queue_reissue(
    txn: &mut Transaction,
    group: &GroupId,
    commit: &OwnCommit,
) -> Result<(), MlsError> {
    let sequence = next_sequence(txn, "reissue_sequence")?;
    txn.put(
        REISSUE_NAMESPACE,
        Key::from_segments([group.as_slice(), &sequence.to_be_bytes()]),
        codec::encode(commit)?,
    )?;
    Ok(())
}

/// Queues the add or remove this device committed out of a snapshot's epoch (`meta`) when the
/// snapshot goes with a branch the device leaves wholesale (an external join, a Welcome that
/// replaces the state): the user asked for it, and a removal that vanished with the branch
/// would leave the removed device in the group. The removals the commit carried for others (a
/// member's leave) go first: the member that asked may hold nothing of the group any more. A
/// self-update is not queued: the join gives the device a fresh leaf.
pub(super) fn queue_membership_change(
    txn: &mut Transaction,
    group: &GroupId,
    meta: &SnapshotMeta,
) -> Result<(), MlsError> {
    if !meta.carried_removals.is_empty() {
        queue_reissue(
            txn,
            group,
            &OwnCommit::Remove {
                devices: meta.carried_removals.clone(),
            },
        )?;
    }
    match &meta.own_commit {
        Some(commit @ (OwnCommit::Add { .. } | OwnCommit::Remove { .. })) => {
            queue_reissue(txn, group, commit)
        }
        Some(OwnCommit::SelfUpdate) | None => Ok(()),
    }
}

/// Drops the re-issue queue's entry `key` (made again, or given up with an event).
pub(super) fn forget_reissue(txn: &mut Transaction, key: Key) -> Result<(), MlsError> {
    txn.delete(REISSUE_NAMESPACE, key)?;
    Ok(())
}

/// Own commits waiting to be re-issued in `group`, oldest first, with their keys.
pub(crate) fn reissues(
    txn: &Transaction,
    group: &GroupId,
) -> Result<Vec<(Key, OwnCommit)>, MlsError> {
    let mut out = Vec::new();
    for (key, bytes) in txn.scan_prefix(REISSUE_NAMESPACE, &Key::from_segment(group.as_slice()))? {
        out.push((key, codec::decode(REISSUE_NAMESPACE, &bytes)?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Groups with own commits waiting to be re-issued.
pub(crate) fn groups_with_reissues(txn: &Transaction) -> Result<Vec<GroupId>, MlsError> {
    crate::group_id::groups_with_entries(txn, REISSUE_NAMESPACE)
}
