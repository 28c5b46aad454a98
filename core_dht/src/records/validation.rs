//! The checks every node applies to a record, on an inbound put *and* on every value a lookup
//! returns (Kademlia checks neither), and what a storing node keeps.

use std::collections::HashMap;

use core_identity::UserId;
use spacepanda_core::Timestamp;

use super::claims::{Claim, MAX_CLAIM_ENTRIES};
use super::key_packages::KeyPackageRecord;
use super::names::{MAX_ADDRESS_ENTRIES, MAX_NAME_ENTRIES, NameEntry};
use super::user::UserRecord;
use super::{RecordKey, RecordKind, WireEntry, decode_value, encode_value};
use crate::error::Rejection;

/// What a check is measured against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checks {
    /// The checking node's time.
    pub(crate) now: Timestamp,
    /// How far in the future `issued_at` may be.
    pub(crate) max_clock_skew_ms: u64,
    /// Largest value accepted.
    pub(crate) max_record_len: usize,
}

impl Checks {
    /// The checks of a node running `config`, at `now`.
    pub(crate) fn new(now: Timestamp, config: &crate::config::DhtConfig) -> Self {
        Self {
            now,
            max_clock_skew_ms: u64::try_from(config.max_clock_skew.as_millis()).unwrap_or(u64::MAX),
            max_record_len: config.max_record_len,
        }
    }
}

/// A value that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValidValue {
    User(UserRecord),
    KeyPackages(KeyPackageRecord),
    Names(Vec<NameEntry>),
    Addresses(Vec<NameEntry>),
    Claims(Vec<Claim>),
}

/// Checks a value found under `key`. For merged records, entries that fail are dropped (and
/// counted in the second field); the value fails only if it is malformed or every entry does.
pub(crate) fn validate_value(
    key: &RecordKey,
    bytes: &[u8],
    checks: &Checks,
) -> Result<(ValidValue, usize), Rejection> {
    let (kind, entries) = decode_value(bytes, checks.max_record_len)?;
    if !kind.is_merged() {
        let [entry] =
            <[WireEntry; 1]>::try_from(entries).map_err(|entries| Rejection::Malformed {
                reason: format!("{} entries in a single-signer record", entries.len()),
            })?;
        let value = match kind {
            RecordKind::User => ValidValue::User(UserRecord::check(key, entry, checks)?),
            _ => ValidValue::KeyPackages(KeyPackageRecord::check(key, entry, checks)?),
        };
        return Ok((value, 0));
    }
    let cap = merged_cap(kind);
    if entries.len() > cap {
        return Err(Rejection::TooMany {
            what: "entries",
            count: entries.len(),
            max: cap,
        });
    }
    let total = entries.len();
    let mut first_rejection = None;
    let mut names = Vec::new();
    let mut claims = Vec::new();
    for entry in entries {
        let checked = match kind {
            RecordKind::Claims => Claim::check(key, entry, checks).map(|c| claims.push(c)),
            _ => NameEntry::check(kind, key, entry, checks).map(|n| names.push(n)),
        };
        if let Err(rejection) = checked {
            first_rejection.get_or_insert(rejection);
        }
    }
    let kept = names.len() + claims.len();
    if kept == 0
        && let Some(rejection) = first_rejection
    {
        return Err(rejection);
    }
    let value = match kind {
        RecordKind::Claims => ValidValue::Claims(claims),
        RecordKind::Addresses => ValidValue::Addresses(names),
        _ => ValidValue::Names(names),
    };
    Ok((value.merged_with(None), total - kept))
}

/// Values already validated, by a hash of key and bytes: the ten replicas a lookup returns are
/// usually the same bytes, and a key package record's packages cost an OpenMLS verification
/// each. Only successes are kept (a peer that sends a forgery is ignored after the first), and
/// a hit is re-checked against the time, so a cached value still expires.
#[derive(Debug)]
pub(crate) struct ValidationCache {
    entries: HashMap<[u8; 32], (ValidValue, usize)>,
    capacity: usize,
}

impl ValidationCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// [`validate_value`], remembered.
    pub(crate) fn validate(
        &mut self,
        key: &RecordKey,
        bytes: &[u8],
        checks: &Checks,
    ) -> Result<(ValidValue, usize), Rejection> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(key.as_bytes());
        hasher.update(bytes);
        let id = *hasher.finalize().as_bytes();
        if let Some((value, dropped)) = self.entries.get(&id)
            && value.first_expiry() > checks.now
        {
            return Ok((value.clone(), *dropped));
        }
        let checked = validate_value(key, bytes, checks)?;
        if self.entries.len() >= self.capacity {
            // Simple and bounded: start over rather than track recency.
            self.entries.clear();
        }
        self.entries.insert(id, checked.clone());
        Ok(checked)
    }
}

fn merged_cap(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Addresses => MAX_ADDRESS_ENTRIES,
        RecordKind::Claims => MAX_CLAIM_ENTRIES,
        _ => MAX_NAME_ENTRIES,
    }
}

impl ValidValue {
    pub(crate) fn kind(&self) -> RecordKind {
        match self {
            Self::User(_) => RecordKind::User,
            Self::KeyPackages(_) => RecordKind::KeyPackages,
            Self::Names(_) => RecordKind::Names,
            Self::Addresses(_) => RecordKind::Addresses,
            Self::Claims(_) => RecordKind::Claims,
        }
    }

    /// The users whose signatures the value holds (what a node's quota counts).
    pub(crate) fn publishers(&self) -> Vec<UserId> {
        match self {
            Self::User(r) => vec![r.user_id],
            Self::KeyPackages(r) => vec![r.device.user_id()],
            Self::Names(e) | Self::Addresses(e) => e.iter().map(|e| e.user_id).collect(),
            Self::Claims(c) => c.iter().map(|c| c.claimer.user_id()).collect(),
        }
    }

    /// When each of its entries expires.
    fn expiries(&self) -> Vec<Timestamp> {
        match self {
            Self::User(r) => vec![r.lifetime.expires_at],
            Self::KeyPackages(r) => vec![r.lifetime.expires_at],
            Self::Names(e) | Self::Addresses(e) => {
                e.iter().map(|e| e.lifetime.expires_at).collect()
            }
            Self::Claims(c) => c.iter().map(|c| c.lifetime.expires_at).collect(),
        }
    }

    /// When the last of its entries expires.
    pub(crate) fn expires_at(&self) -> Timestamp {
        self.expiries()
            .into_iter()
            .max()
            .unwrap_or(Timestamp::EPOCH)
    }

    /// When the first of its entries expires (after it, the value must be checked again).
    fn first_expiry(&self) -> Timestamp {
        self.expiries()
            .into_iter()
            .min()
            .unwrap_or(Timestamp::EPOCH)
    }

    /// The value as it is stored and sent.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let entries = match self {
            Self::User(r) => vec![r.entry.clone()],
            Self::KeyPackages(r) => vec![r.entry.clone()],
            Self::Names(e) | Self::Addresses(e) => e.iter().map(|e| e.entry.clone()).collect(),
            Self::Claims(c) => c.iter().map(|c| c.entry.clone()).collect(),
        };
        encode_value(self.kind(), entries)
    }

    /// `self` (held first) merged with `other` (added after), for two values of one key:
    /// for a single-signer record the higher `seq` (the held one on a tie); for a merged one,
    /// one entry per signer (the higher `seq`), new signers added while there is room.
    pub(crate) fn merged_with(self, other: Option<Self>) -> Self {
        match (self, other) {
            (Self::User(a), Some(Self::User(b))) => Self::User(if b.seq > a.seq { b } else { a }),
            (Self::KeyPackages(a), Some(Self::KeyPackages(b))) => {
                Self::KeyPackages(if b.seq > a.seq { b } else { a })
            }
            (Self::Names(a), other) => {
                let b = match other {
                    Some(Self::Names(b)) => b,
                    _ => Vec::new(),
                };
                Self::Names(merge_names(a, b, MAX_NAME_ENTRIES))
            }
            (Self::Addresses(a), other) => {
                let b = match other {
                    Some(Self::Addresses(b)) => b,
                    _ => Vec::new(),
                };
                Self::Addresses(merge_names(a, b, MAX_ADDRESS_ENTRIES))
            }
            (Self::Claims(a), other) => {
                let b = match other {
                    Some(Self::Claims(b)) => b,
                    _ => Vec::new(),
                };
                Self::Claims(merge_claims(a, b))
            }
            // Different kinds under one key cannot both be valid (the key derivations differ):
            // keep what is held.
            (held, _) => held,
        }
    }

    /// Whether this value holds `ours`, or a newer version of it (what a publisher counts as
    /// a replica).
    pub(crate) fn covers(&self, ours: &Self) -> bool {
        match (self, ours) {
            (Self::User(a), Self::User(b)) => a.seq >= b.seq,
            (Self::KeyPackages(a), Self::KeyPackages(b)) => a.seq >= b.seq,
            (Self::Names(a), Self::Names(b)) | (Self::Addresses(a), Self::Addresses(b)) => {
                b.iter().all(|mine| {
                    a.iter()
                        .any(|held| held.user_id == mine.user_id && held.seq >= mine.seq)
                })
            }
            (Self::Claims(a), Self::Claims(b)) => b
                .iter()
                .all(|mine| a.iter().any(|held| held.identity() == mine.identity())),
            _ => false,
        }
    }

    fn seq(&self) -> Option<u64> {
        match self {
            Self::User(r) => Some(r.seq),
            Self::KeyPackages(r) => Some(r.seq),
            _ => None,
        }
    }
}

fn merge_names(held: Vec<NameEntry>, incoming: Vec<NameEntry>, cap: usize) -> Vec<NameEntry> {
    let mut merged: Vec<NameEntry> = Vec::with_capacity(held.len() + incoming.len());
    for entry in held.into_iter().chain(incoming) {
        let room = merged.len() < cap;
        match merged.iter_mut().find(|e| e.user_id == entry.user_id) {
            // Two devices of one user keep their own counters for these entries: on a tie the
            // longer-lived entry wins, so a renewal from either device extends the listing.
            Some(existing)
                if (entry.seq, entry.lifetime.expires_at)
                    > (existing.seq, existing.lifetime.expires_at) =>
            {
                *existing = entry
            }
            Some(_) => {}
            None if room => merged.push(entry),
            None => {}
        }
    }
    merged
}

fn merge_claims(held: Vec<Claim>, incoming: Vec<Claim>) -> Vec<Claim> {
    let mut merged: Vec<Claim> = Vec::with_capacity(held.len() + incoming.len());
    for claim in held.into_iter().chain(incoming) {
        if merged.iter().any(|c| c.identity() == claim.identity()) {
            continue;
        }
        if merged.len() < MAX_CLAIM_ENTRIES {
            merged.push(claim);
        }
    }
    merged
}

/// What a node does with a record it was asked to store.
#[derive(Debug)]
pub(crate) enum StoreDecision {
    /// Store this value (the incoming one, or the merge of held and incoming).
    Store {
        /// The value to keep.
        value: Vec<u8>,
        /// Whose signatures it holds.
        publishers: Vec<UserId>,
        /// When the last entry expires.
        expires_at: Timestamp,
    },
    /// The node already holds this (a replica of what it has): nothing to do.
    AlreadyHeld,
    /// Refuse it.
    Refuse(Rejection),
}

/// Decides what a node keeps when asked to store `incoming` under `key` while holding `held`.
pub(crate) fn decide_store(
    key: &RecordKey,
    incoming: &[u8],
    held: Option<&[u8]>,
    checks: &Checks,
    cache: &mut ValidationCache,
) -> StoreDecision {
    let incoming = match cache.validate(key, incoming, checks) {
        Ok((value, _)) => value,
        Err(rejection) => return StoreDecision::Refuse(rejection),
    };
    // What we hold passed these checks when it came; it may have expired since, and then it is
    // as good as absent.
    let held = held.and_then(|bytes| cache.validate(key, bytes, checks).ok().map(|(v, _)| v));
    let Some(held) = held else {
        return StoreDecision::Store {
            value: incoming.encode(),
            publishers: incoming.publishers(),
            expires_at: incoming.expires_at(),
        };
    };
    if let (Some(held_seq), Some(offered)) = (held.seq(), incoming.seq()) {
        if offered < held_seq || (offered == held_seq && incoming != held) {
            return StoreDecision::Refuse(Rejection::StaleSeq {
                offered,
                held: held_seq,
            });
        }
        if offered == held_seq {
            return StoreDecision::AlreadyHeld;
        }
    }
    let before = held.clone();
    let merged = held.merged_with(Some(incoming));
    if merged == before {
        return StoreDecision::AlreadyHeld;
    }
    let value = merged.encode();
    if value.len() > checks.max_record_len {
        return StoreDecision::Refuse(Rejection::Oversized {
            len: value.len(),
            max: checks.max_record_len,
        });
    }
    StoreDecision::Store {
        value,
        publishers: merged.publishers(),
        expires_at: merged.expires_at(),
    }
}
