//! OpenMLS state on a SpacePanda [`KeyValueStore`](spacepanda_core::KeyValueStore):
//! [`KvStorageProvider`].
//!
//! - `key_layout`: namespaces and key segments (everything of a group under one prefix);
//! - `codec`: how values are encoded (CBOR);
//! - `openmls_storage`: the 53 methods of `openmls_traits::storage::StorageProvider<1>`.
//!
//! Writes go through the one open [`Transaction`]; a write with no open transaction is an
//! [`MlsError::NoTransaction`], so no OpenMLS write can escape the one-operation-one-transaction
//! rule. Reads see the open transaction's writes, or the store when none is open.

pub(crate) mod byte_fields;
mod byte_strings;
pub(crate) mod codec;
#[cfg(test)]
mod epoch_member_tests;
pub(crate) mod epoch_members;
pub(crate) mod key_layout;
mod openmls_storage;
#[cfg(test)]
mod roundtrip_tests;
mod split_layout;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use openmls::prelude::GroupId;
use serde::{Deserialize, Serialize};
use spacepanda_core::{Key, Savepoint, SharedStore, Transaction};
use zeroize::Zeroizing;

use crate::error::MlsError;
use key_layout::{GROUP_NAMESPACE, META_NAMESPACE};

/// Version of the key layout and value encoding written by this build.
///
/// Bump it (and add a migration in [`KvStorageProvider::open`]) whenever a stored key or value
/// changes shape, including when OpenMLS raises its storage version.
///
/// - 1: every value is the CBOR encoding of what OpenMLS hands over.
/// - 2: OpenMLS's message secrets record is split, its past epochs' member lists stored once
///   each (`epoch_members`). A store of format 1 is read as it is (a record of format 1 decodes
///   as before) and raised to 2 by its first commit; each group's record takes the new form
///   when OpenMLS next writes it.
pub(crate) const STORAGE_FORMAT_VERSION: u32 = 2;

/// Member-list retention of a provider the engine has not configured (tests of the storage
/// alone): generous, since a list collected too early makes a snapshot unreadable.
const DEFAULT_MEMBER_LIST_RETENTION: u64 = 64;

/// The record in [`META_NAMESPACE`] saying who wrote this store.
#[derive(Debug, Serialize, Deserialize)]
struct FormatRecord {
    format: u32,
    openmls_storage: u16,
}

/// OpenMLS storage over a [`SharedStore`], writing through the current [`Transaction`].
///
/// One per device; shared by reference (the provider hands out `&KvStorageProvider`). Not
/// `Clone` on purpose: two providers over one store would have two open transactions whose
/// commits could interleave.
pub(crate) struct KvStorageProvider {
    store: SharedStore,
    txn: Mutex<Option<Transaction>>,
    /// The format record of a store that has none yet: written by the first commit, in its
    /// batch, so that opening a new store writes nothing on its own.
    format_record: Mutex<Option<Vec<u8>>>,
    /// The first local-storage failure of the open transaction (see [`Self::take_failure`]).
    failure: Mutex<Option<String>>,
    /// How many epochs below a group's newest member list older lists are kept
    /// (`epoch_members`); see [`Self::set_member_list_retention`].
    member_list_retention: AtomicU64,
    /// Tests of the migration write message secrets as format 1 did (whole).
    #[cfg(test)]
    write_format_1: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for KvStorageProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStorageProvider")
            .field("in_transaction", &self.in_transaction())
            .finish_non_exhaustive()
    }
}

impl KvStorageProvider {
    /// Opens OpenMLS storage on `store`: refuses a store written by a newer format
    /// ([`MlsError::UnsupportedStateVersion`]); a store with no format record gets one with its
    /// first commit.
    pub(crate) fn open(store: SharedStore) -> Result<Self, MlsError> {
        let key = key_layout::format_key();
        let mut format_record = None;
        match store.get(META_NAMESPACE, &key)? {
            Some(bytes) => {
                let record: FormatRecord = codec::decode(META_NAMESPACE, &bytes)?;
                if record.format > STORAGE_FORMAT_VERSION {
                    return Err(MlsError::UnsupportedStateVersion {
                        what: "MLS storage format",
                        found: record.format,
                        supported: STORAGE_FORMAT_VERSION,
                    });
                }
                if record.openmls_storage != openmls_traits::storage::CURRENT_VERSION {
                    return Err(MlsError::UnsupportedStateVersion {
                        what: "OpenMLS storage version",
                        found: u32::from(record.openmls_storage),
                        supported: u32::from(openmls_traits::storage::CURRENT_VERSION),
                    });
                }
                if record.format < STORAGE_FORMAT_VERSION {
                    // Older formats read as they are; the first commit says the store may now
                    // hold values only this format reads.
                    format_record = Some(codec::encode(&FormatRecord {
                        format: STORAGE_FORMAT_VERSION,
                        openmls_storage: record.openmls_storage,
                    })?);
                }
            }
            None => {
                let record = FormatRecord {
                    format: STORAGE_FORMAT_VERSION,
                    openmls_storage: openmls_traits::storage::CURRENT_VERSION,
                };
                format_record = Some(codec::encode(&record)?);
            }
        }
        Ok(Self {
            store,
            txn: Mutex::new(None),
            format_record: Mutex::new(format_record),
            failure: Mutex::new(None),
            member_list_retention: AtomicU64::new(DEFAULT_MEMBER_LIST_RETENTION),
            #[cfg(test)]
            write_format_1: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Keeps past epochs' member lists for `epochs` epochs below a group's newest one: the
    /// engine sets the fork window plus `max_past_epochs` and a margin, so that every snapshot
    /// and dormant branch it can still restore finds the lists its record references.
    pub(crate) fn set_member_list_retention(&self, epochs: u64) {
        self.member_list_retention.store(epochs, Ordering::Relaxed);
    }

    fn member_list_retention(&self) -> u64 {
        self.member_list_retention.load(Ordering::Relaxed)
    }

    /// From now on, writes message secrets whole, as format 1 did (migration tests).
    #[cfg(test)]
    pub(crate) fn write_as_format_1(&self) {
        self.write_format_1.store(true, Ordering::Relaxed);
    }

    /// The underlying store.
    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, Option<Transaction>> {
        // A panic while the lock was held can only have happened inside one transaction's
        // buffered writes; the `Option<Transaction>` itself is still a valid value, and the
        // transaction helpers roll back on unwind, so recovering the guard is sound.
        self.txn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the transaction every following write goes through.
    ///
    /// Only `MlsClient::transaction` (in `client::operation`) calls it: it commits or rolls back, and
    /// turns calls made while a transaction is open into savepoints.
    pub(crate) fn begin(&self) -> Result<(), MlsError> {
        let mut slot = self.lock();
        if slot.is_some() {
            return Err(MlsError::TransactionAlreadyOpen);
        }
        *slot = Some(Transaction::begin(&self.store));
        self.take_failure();
        Ok(())
    }

    /// Commits the open transaction as one atomic, durable batch.
    pub(crate) fn commit(&self) -> Result<(), MlsError> {
        let mut txn = self.lock().take().ok_or(MlsError::NoTransaction {
            operation: "commit",
        })?;
        let mut format_record = self
            .format_record
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(record) = format_record.as_ref() {
            txn.put(META_NAMESPACE, key_layout::format_key(), record.clone())?;
        }
        txn.commit()?;
        *format_record = None;
        Ok(())
    }

    /// Marks the open transaction, so that one step of an operation can fail (a buffered
    /// message that turns out invalid, a competing commit that loses) without failing the
    /// operation; see [`Transaction::savepoint`].
    pub(crate) fn savepoint(&self) -> Result<Savepoint, MlsError> {
        self.with_txn("savepoint", |txn| Ok(txn.savepoint()))
    }

    /// Forgets what the open transaction wrote since `savepoint`.
    pub(crate) fn rollback_to(&self, savepoint: Savepoint) -> Result<(), MlsError> {
        self.with_txn("rollback_to_savepoint", |txn| {
            Ok(txn.rollback_to_savepoint(savepoint)?)
        })
    }

    /// Keeps what the open transaction wrote since `savepoint`.
    pub(crate) fn release(&self, savepoint: Savepoint) -> Result<(), MlsError> {
        self.with_txn("release_savepoint", |txn| {
            Ok(txn.release_savepoint(savepoint)?)
        })
    }

    /// Discards the open transaction, if any (nothing it wrote reaches the store).
    pub(crate) fn rollback(&self) {
        self.lock().take();
    }

    /// The first storage failure (a read, write or decode of our store that failed) since the
    /// transaction began, and forgets it. OpenMLS wraps our storage errors in its own, some
    /// without a source, so an operation that failed inside OpenMLS uses this to report the
    /// failure as local storage rather than as a refusal by OpenMLS.
    pub(crate) fn take_failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The first storage failure of the open transaction, if any, without forgetting it: a
    /// step that fails inside the operation reports it, and the operation as a whole fails.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn noted<T>(&self, result: Result<T, MlsError>) -> Result<T, MlsError> {
        if let Err(error) = &result
            && error.kind() == crate::error::ErrorKind::LocalStorage
        {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if failure.is_none() {
                *failure = Some(error.to_string());
            }
        }
        result
    }

    /// True while a transaction is open.
    pub(crate) fn in_transaction(&self) -> bool {
        self.lock().is_some()
    }

    /// Runs `f` on the open transaction, so the layers above write their own records in the
    /// same atomic batch as OpenMLS's. The transaction is locked while `f` runs: `f` must not
    /// call back into this provider (or OpenMLS with it), or it deadlocks.
    pub(crate) fn with_transaction<R>(
        &self,
        f: impl FnOnce(&mut Transaction) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        let mut slot = self.lock();
        let txn = slot.as_mut().ok_or(MlsError::NoTransaction {
            operation: "with_transaction",
        })?;
        self.noted(f(txn))
    }

    /// The ids of every group with stored state (as the open transaction sees it).
    pub(crate) fn list_groups(&self) -> Result<Vec<GroupId>, MlsError> {
        // A scan of every group's entries: O(all MLS state), which is what loading the groups
        // at startup (its one caller) reads anyway. Nothing is decoded.
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for (key, _) in self.scan(GROUP_NAMESPACE, &key_layout::all_groups_prefix())? {
            let id = key_layout::group_id_of(&key).ok_or(MlsError::corrupted(
                GROUP_NAMESPACE,
                "a group key has no group id segment",
            ))?;
            if ids.last().is_none_or(|last| last.as_slice() != id) {
                ids.push(id.to_vec());
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids.iter().map(|id| GroupId::from_slice(id)).collect())
    }

    /// Deletes everything stored under the group's prefix, inside the open transaction, and
    /// returns how many entries that was.
    ///
    /// Leaf encryption key pairs (keyed by public key, in their own namespace) are not under the
    /// prefix; OpenMLS deletes its own when it merges commits.
    pub(crate) fn delete_group(&self, group_id: &GroupId) -> Result<usize, MlsError> {
        let prefix = key_layout::group_prefix(group_id.as_slice());
        self.with_txn("delete_group", |txn| {
            Ok(txn.delete_prefix(GROUP_NAMESPACE, &prefix)?)
        })
    }

    /// Every stored entry of one group (as the open transaction sees it), in key order: a
    /// snapshot of the group.
    pub(crate) fn group_entries(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(Key, Vec<u8>)>, MlsError> {
        self.scan(
            GROUP_NAMESPACE,
            &key_layout::group_prefix(group_id.as_slice()),
        )
    }

    fn with_txn<R>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Transaction) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        let mut slot = self.lock();
        let txn = slot.as_mut().ok_or(MlsError::NoTransaction { operation })?;
        self.noted(f(txn))
    }

    fn read(&self, namespace: &str, key: &Key) -> Result<Option<Zeroizing<Vec<u8>>>, MlsError> {
        let slot = self.lock();
        let value = match slot.as_ref() {
            Some(txn) => txn.get(namespace, key),
            None => self.store.get(namespace, key),
        };
        Ok(self
            .noted(value.map_err(MlsError::from))?
            .map(Zeroizing::new))
    }

    /// Entries under `prefix` in key order (sealed stores return them in an unspecified order,
    /// and OpenMLS lists must come back in insertion order).
    fn scan(&self, namespace: &str, prefix: &Key) -> Result<Vec<(Key, Vec<u8>)>, MlsError> {
        let slot = self.lock();
        let entries = match slot.as_ref() {
            Some(txn) => txn.scan_prefix(namespace, prefix),
            None => self.store.scan_prefix(namespace, prefix),
        };
        let mut entries = self.noted(entries.map_err(MlsError::from))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    fn put_value<V: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        namespace: &'static str,
        key: Key,
        value: &V,
    ) -> Result<(), MlsError> {
        let bytes = codec::encode(value)?;
        self.with_txn(operation, |txn| Ok(txn.put(namespace, key, bytes)?))
    }

    fn get_value<V: serde::de::DeserializeOwned>(
        &self,
        namespace: &'static str,
        key: &Key,
    ) -> Result<Option<V>, MlsError> {
        let value = self
            .read(namespace, key)?
            .map(|bytes| codec::decode(namespace, &bytes))
            .transpose();
        self.noted(value)
    }

    fn delete_key(
        &self,
        operation: &'static str,
        namespace: &'static str,
        key: Key,
    ) -> Result<(), MlsError> {
        self.with_txn(operation, |txn| Ok(txn.delete(namespace, key)?))
    }

    fn delete_prefix(
        &self,
        operation: &'static str,
        namespace: &'static str,
        prefix: &Key,
    ) -> Result<(), MlsError> {
        self.with_txn(operation, |txn| {
            txn.delete_prefix(namespace, prefix)?;
            Ok(())
        })
    }

    /// Decoded values under `prefix`, in key order.
    fn list_values<V: serde::de::DeserializeOwned>(
        &self,
        namespace: &'static str,
        prefix: &Key,
    ) -> Result<Vec<V>, MlsError> {
        let values = self
            .scan(namespace, prefix)?
            .into_iter()
            .map(|(_, bytes)| codec::decode(namespace, &Zeroizing::new(bytes)))
            .collect();
        self.noted(values)
    }

    /// The sequence number after the last entry under `prefix` (entries are `prefix ‖ seq`).
    fn next_sequence(&self, namespace: &'static str, prefix: &Key) -> Result<u64, MlsError> {
        let Some((last, _)) = self.scan(namespace, prefix)?.pop() else {
            return Ok(0);
        };
        let seq = sequence_of(&last).ok_or(MlsError::corrupted(
            namespace,
            "a list entry's key does not end in an 8-byte sequence number",
        ))?;
        seq.checked_add(1).ok_or(MlsError::corrupted(
            namespace,
            "a list's sequence number is exhausted",
        ))
    }
}

fn sequence_of(key: &Key) -> Option<u64> {
    let last = key.segments().last()?;
    Some(u64::from_be_bytes(last.try_into().ok()?))
}
