//! What a node keeps: every record passes the directory's checks before kad's `MemoryStore`
//! sees it, no record rolls back, merged records are merged, and no publisher holds more than
//! its quota.

use std::collections::HashMap;
use std::time::Instant;

use core_identity::UserId;
use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{self, Record};
use spacepanda_core::Timestamp;

use crate::error::Rejection;
use crate::records::{Checks, RecordKey, StoreDecision, ValidationCache, decide_store};

/// The bookkeeping next to kad's store: whose signatures each stored key holds.
#[derive(Debug)]
pub(crate) struct NodeStore {
    publishers: HashMap<RecordKey, Vec<UserId>>,
    pub(crate) cache: ValidationCache,
}

/// Validated values remembered per node (a few MiB at most).
const VALIDATION_CACHE: usize = 512;

impl Default for NodeStore {
    fn default() -> Self {
        Self {
            publishers: HashMap::new(),
            cache: ValidationCache::new(VALIDATION_CACHE),
        }
    }
}

/// What happened to a record offered for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// It is stored (new, newer, or merged in).
    Stored,
    /// The node held exactly this already.
    AlreadyHeld,
}

impl NodeStore {
    /// Checks `record` and stores it (or the merge of it with what is held) in `store`.
    pub(crate) fn offer(
        &mut self,
        store: &mut MemoryStore,
        record: &Record,
        checks: &Checks,
        quota: usize,
    ) -> Result<Stored, Rejection> {
        let key = RecordKey::from_kad(&record.key).ok_or(Rejection::KeyMismatch)?;
        let held = store.get(&record.key).map(|r| r.value.clone());
        let (value, publishers, expires_at) = match decide_store(
            &key,
            &record.value,
            held.as_deref(),
            checks,
            &mut self.cache,
        ) {
            StoreDecision::Store {
                value,
                publishers,
                expires_at,
            } => (value, publishers, expires_at),
            StoreDecision::AlreadyHeld => return Ok(Stored::AlreadyHeld),
            StoreDecision::Refuse(rejection) => return Err(rejection),
        };
        self.check_quota(store, &key, &publishers, quota)?;
        let stored = Record {
            key: record.key.clone(),
            value,
            publisher: record.publisher,
            expires: Some(instant_of(expires_at, checks.now)),
        };
        store.put(stored).map_err(|e| match e {
            kad::store::Error::ValueTooLarge => Rejection::Oversized {
                len: record.value.len(),
                max: checks.max_record_len,
            },
            e => Rejection::TooMany {
                what: match e {
                    kad::store::Error::MaxRecords => "records on this node",
                    _ => "provider records",
                },
                count: 0,
                max: 0,
            },
        })?;
        self.publishers.insert(key, publishers);
        Ok(Stored::Stored)
    }

    /// Refuses a value that would put one of its publishers over `quota` keys on this node.
    fn check_quota(
        &mut self,
        store: &MemoryStore,
        key: &RecordKey,
        publishers: &[UserId],
        quota: usize,
    ) -> Result<(), Rejection> {
        // Forget keys kad dropped (expired, removed) before counting.
        self.publishers
            .retain(|k, _| store.get(&k.to_kad()).is_some());
        let already = self.publishers.get(key).cloned().unwrap_or_default();
        for publisher in publishers {
            if already.contains(publisher) {
                continue;
            }
            let held = self
                .publishers
                .values()
                .filter(|keys| keys.contains(publisher))
                .count();
            if held >= quota {
                return Err(Rejection::QuotaExceeded {
                    publisher: *publisher,
                    held,
                    quota,
                });
            }
        }
        Ok(())
    }
}

/// The monotonic instant at which kad drops a record that expires at `expires_at`.
fn instant_of(expires_at: Timestamp, now: Timestamp) -> Instant {
    let left = expires_at.duration_since(now);
    let now = Instant::now();
    now.checked_add(left).unwrap_or(now)
}
