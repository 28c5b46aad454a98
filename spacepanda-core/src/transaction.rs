//! Read-your-writes transactions: one MLS operation, one atomic batch.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::key_value_store::check_namespace;
use crate::{Key, SharedStore, StoreError, StoreResult, WriteBatch};

/// A buffered write: the new value, or `None` for a delete.
type Pending = Option<Zeroizing<Vec<u8>>>;

type Overlay = BTreeMap<String, BTreeMap<Key, Pending>>;

/// What a key held before the first write since [`Transaction::start_undo_log`]: `None` if it
/// did not exist.
pub type PriorValue = Option<Zeroizing<Vec<u8>>>;

/// Prior values of keys written since an undo log was started, for the namespaces it watches.
#[derive(Default, Clone)]
struct UndoLog {
    namespaces: Vec<String>,
    priors: BTreeMap<(String, Key), PriorValue>,
}

/// A point inside a [`Transaction`] that its writes can be rolled back to
/// ([`Transaction::rollback_to_savepoint`]) or kept from ([`Transaction::release_savepoint`]).
#[derive(Debug)]
#[must_use = "a savepoint is released or rolled back to"]
pub struct Savepoint {
    depth: usize,
    id: u64,
}

/// One open savepoint: the overlay entry each key had before its first write since it was taken
/// (`None`: the overlay had no entry), and the undo log and write count of that moment.
struct Level {
    id: u64,
    overlay_before: BTreeMap<(String, Key), Option<Pending>>,
    undo: Option<UndoLog>,
    writes: usize,
}

/// Buffered writes over a store.
///
/// Reads see this transaction's own writes first, then the store. [`commit`](Self::commit)
/// hands every write to the store as one [`WriteBatch`] — atomic, and durable when it returns.
/// Dropping the transaction without committing discards every write (rollback); buffered values
/// are zeroized either way, because they are often key material.
///
/// Invariant: a transaction never writes to the store before `commit`, so an error anywhere in
/// an operation leaves storage exactly as it was.
///
/// ```
/// use std::sync::Arc;
/// use spacepanda_core::{Key, KeyValueStore, MemoryStore, SharedStore, Transaction};
///
/// let store: SharedStore = Arc::new(MemoryStore::new());
/// let mut txn = Transaction::begin(&store);
/// txn.put("notes", Key::from_segment("greeting"), b"hello".to_vec())?;
/// assert_eq!(txn.get("notes", &Key::from_segment("greeting"))?, Some(b"hello".to_vec()));
/// assert_eq!(store.get("notes", &Key::from_segment("greeting"))?, None);
/// txn.commit()?;
/// assert_eq!(store.get("notes", &Key::from_segment("greeting"))?, Some(b"hello".to_vec()));
/// # Ok::<(), spacepanda_core::StoreError>(())
/// ```
pub struct Transaction {
    store: SharedStore,
    overlay: Overlay,
    writes: usize,
    undo: Option<UndoLog>,
    savepoints: Vec<Level>,
    next_savepoint: u64,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("pending_writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// Starts a transaction over `store`.
    pub fn begin(store: &SharedStore) -> Self {
        Self {
            store: SharedStore::clone(store),
            overlay: Overlay::new(),
            writes: 0,
            undo: None,
            savepoints: Vec::new(),
            next_savepoint: 0,
        }
    }

    /// The store this transaction commits to.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Reads `key`, seeing this transaction's writes first.
    pub fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>> {
        if let Some(pending) = self.overlay.get(namespace).and_then(|t| t.get(key)) {
            return Ok(pending.as_ref().map(|v| v.to_vec()));
        }
        self.store.get(namespace, key)
    }

    /// Every entry under `prefix`, merged with this transaction's writes, in key order.
    pub fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        let mut merged: BTreeMap<Key, Vec<u8>> = self
            .store
            .scan_prefix(namespace, prefix)?
            .into_iter()
            .collect();
        for (key, pending) in self.pending_under(namespace, prefix) {
            match pending {
                Some(value) => merged.insert(key.clone(), value.to_vec()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// The keys under `prefix`, merged with this transaction's writes, in key order (what
    /// [`scan_prefix`](Self::scan_prefix) would list, without reading values).
    pub fn scan_keys(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<Key>> {
        let mut merged: std::collections::BTreeSet<Key> = self
            .store
            .scan_keys(namespace, prefix)?
            .into_iter()
            .collect();
        for (key, pending) in self.pending_under(namespace, prefix) {
            match pending {
                Some(_) => merged.insert(key.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// This transaction's writes under `prefix`, in key order (`None`: a delete).
    fn pending_under<'a>(
        &'a self,
        namespace: &str,
        prefix: &'a Key,
    ) -> impl Iterator<Item = (&'a Key, &'a Pending)> + 'a {
        self.overlay
            .get(namespace)
            .into_iter()
            .flat_map(move |table| {
                table
                    .range(prefix.clone()..)
                    .take_while(move |(key, _)| key.starts_with(prefix))
            })
    }

    /// Buffers a put.
    pub fn put(&mut self, namespace: &str, key: Key, value: Vec<u8>) -> StoreResult<()> {
        self.record(namespace, key, Some(Zeroizing::new(value)))
    }

    /// Buffers a delete.
    pub fn delete(&mut self, namespace: &str, key: Key) -> StoreResult<()> {
        self.record(namespace, key, None)
    }

    /// Buffers deletes for every key under `prefix` (as this transaction sees them) and
    /// returns how many there were.
    pub fn delete_prefix(&mut self, namespace: &str, prefix: &Key) -> StoreResult<usize> {
        let keys = self.scan_keys(namespace, prefix)?;
        let count = keys.len();
        for key in keys {
            self.delete(namespace, key)?;
        }
        Ok(count)
    }

    /// Starts recording, for every key of `namespaces` written from now on, the value it had
    /// just before its first such write (as this transaction saw it). A caller that must later
    /// undo part of this transaction — an epoch snapshot that OpenMLS's merge reaches outside
    /// the group's key prefix — takes the log with [`take_undo_log`](Self::take_undo_log).
    /// Starting a new log discards one in progress.
    pub fn start_undo_log(&mut self, namespaces: &[&str]) {
        self.undo = Some(UndoLog {
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            priors: BTreeMap::new(),
        });
    }

    /// Stops the undo log and returns `(namespace, key, prior value)` for every key written
    /// since it started, in namespace and key order. Empty if none was started.
    pub fn take_undo_log(&mut self) -> Vec<(String, Key, PriorValue)> {
        self.undo
            .take()
            .map(|log| {
                log.priors
                    .into_iter()
                    .map(|((namespace, key), prior)| (namespace, key, prior))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn record(
        &mut self,
        namespace: &str,
        key: Key,
        value: Option<Zeroizing<Vec<u8>>>,
    ) -> StoreResult<()> {
        // Fail at the call that misused the API, not later at commit.
        check_namespace(namespace)?;
        let watched = self.undo.as_ref().is_some_and(|log| {
            log.namespaces.iter().any(|n| n == namespace)
                && !log
                    .priors
                    .contains_key(&(namespace.to_owned(), key.clone()))
        });
        if watched {
            let prior = self.get(namespace, &key)?.map(Zeroizing::new);
            if let Some(log) = self.undo.as_mut() {
                log.priors
                    .insert((namespace.to_owned(), key.clone()), prior);
            }
        }
        if let Some(level) = self.savepoints.last_mut() {
            let entry = (namespace.to_owned(), key.clone());
            if let std::collections::btree_map::Entry::Vacant(slot) =
                level.overlay_before.entry(entry)
            {
                slot.insert(
                    self.overlay
                        .get(namespace)
                        .and_then(|table| table.get(&key))
                        .cloned(),
                );
            }
        }
        self.writes += 1;
        self.overlay
            .entry(namespace.to_owned())
            .or_default()
            .insert(key, value);
        Ok(())
    }

    /// Marks the current state of the transaction, so that a step of a larger operation can
    /// fail without failing the operation: [`rollback_to_savepoint`](Self::rollback_to_savepoint)
    /// forgets what was written since (and restores the undo log of that moment),
    /// [`release_savepoint`](Self::release_savepoint) keeps it. Savepoints nest; each is
    /// released or rolled back to, innermost first. Costs nothing until a write, then one
    /// copy of the overlay entry each key had before its first write since the savepoint.
    pub fn savepoint(&mut self) -> Savepoint {
        self.next_savepoint += 1;
        self.savepoints.push(Level {
            id: self.next_savepoint,
            overlay_before: BTreeMap::new(),
            undo: self.undo.clone(),
            writes: self.writes,
        });
        Savepoint {
            depth: self.savepoints.len(),
            id: self.next_savepoint,
        }
    }

    fn check_savepoint(&self, savepoint: &Savepoint) -> StoreResult<()> {
        let open = savepoint
            .depth
            .checked_sub(1)
            .and_then(|index| self.savepoints.get(index))
            .is_some_and(|level| level.id == savepoint.id);
        if open {
            Ok(())
        } else {
            Err(StoreError::InvalidArgument {
                reason: "savepoint already released or rolled back, or of another transaction",
            })
        }
    }

    /// Forgets every write made since `savepoint` was taken, including those of savepoints taken
    /// after it and not yet released, and restores the undo log of that moment.
    pub fn rollback_to_savepoint(&mut self, savepoint: Savepoint) -> StoreResult<()> {
        self.check_savepoint(&savepoint)?;
        while self.savepoints.len() >= savepoint.depth {
            let Some(level) = self.savepoints.pop() else {
                break;
            };
            for ((namespace, key), before) in level.overlay_before {
                let table = self.overlay.entry(namespace).or_default();
                match before {
                    Some(value) => table.insert(key, value),
                    None => table.remove(&key),
                };
            }
            self.undo = level.undo;
            self.writes = level.writes;
        }
        self.overlay.retain(|_, table| !table.is_empty());
        Ok(())
    }

    /// Keeps every write made since `savepoint` (the innermost one open) as part of the
    /// enclosing savepoint, or of the transaction if there is none.
    pub fn release_savepoint(&mut self, savepoint: Savepoint) -> StoreResult<()> {
        self.check_savepoint(&savepoint)?;
        if savepoint.depth != self.savepoints.len() {
            return Err(StoreError::InvalidArgument {
                reason: "savepoints are released innermost first",
            });
        }
        if let Some(level) = self.savepoints.pop()
            && let Some(parent) = self.savepoints.last_mut()
        {
            for (entry, before) in level.overlay_before {
                // The enclosing savepoint keeps what the key held when *it* was taken.
                parent.overlay_before.entry(entry).or_insert(before);
            }
        }
        Ok(())
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.overlay.values().all(BTreeMap::is_empty)
    }

    /// The writes this transaction would commit, one per key, in namespace and key order.
    pub fn to_batch(&self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (namespace, table) in &self.overlay {
            for (key, pending) in table {
                match pending {
                    Some(value) => batch.put(namespace, key.clone(), value.to_vec()),
                    None => batch.delete(namespace, key.clone()),
                };
            }
        }
        batch
    }

    /// Applies every buffered write as one atomic, durable batch. An empty transaction does not
    /// touch the store.
    pub fn commit(mut self) -> StoreResult<()> {
        if self.is_empty() {
            return Ok(());
        }
        // The values move into the batch: a commit of a large state (a 1000-member tree is
        // about 600 KB) is not copied, and zeroized, once more on the way.
        let mut batch = WriteBatch::new();
        for (namespace, table) in std::mem::take(&mut self.overlay) {
            for (key, pending) in table {
                match pending {
                    Some(mut value) => batch.put(&namespace, key, std::mem::take(&mut *value)),
                    None => batch.delete(&namespace, key),
                };
            }
        }
        self.store.apply(batch)
    }

    /// Discards every buffered write (the same as dropping the transaction, but explicit).
    pub fn rollback(self) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::MemoryStore;

    #[test]
    fn undo_log_records_the_value_before_the_first_write_in_watched_namespaces() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let mut setup = Transaction::begin(&store);
        setup
            .put("keys", Key::from_segment("a"), b"old".to_vec())
            .unwrap();
        setup.commit().unwrap();

        let mut txn = Transaction::begin(&store);
        // Written before the log starts: the log sees this value as the prior.
        txn.put("keys", Key::from_segment("a"), b"mid".to_vec())
            .unwrap();
        txn.start_undo_log(&["keys"]);
        txn.put("keys", Key::from_segment("a"), b"new".to_vec())
            .unwrap();
        txn.put("keys", Key::from_segment("a"), b"newer".to_vec())
            .unwrap();
        txn.put("keys", Key::from_segment("b"), b"fresh".to_vec())
            .unwrap();
        txn.put("other", Key::from_segment("c"), b"unwatched".to_vec())
            .unwrap();
        let log = txn.take_undo_log();
        let log: Vec<(String, Key, Option<Vec<u8>>)> = log
            .into_iter()
            .map(|(n, k, v)| (n, k, v.map(|v| v.to_vec())))
            .collect();
        assert_eq!(
            log,
            vec![
                (
                    "keys".to_owned(),
                    Key::from_segment("a"),
                    Some(b"mid".to_vec())
                ),
                ("keys".to_owned(), Key::from_segment("b"), None),
            ]
        );
        assert!(txn.take_undo_log().is_empty(), "taking the log stops it");
    }

    #[test]
    fn a_savepoint_rolls_back_writes_and_the_undo_log_and_keeps_what_came_before() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let mut txn = Transaction::begin(&store);
        txn.put("keys", Key::from_segment("a"), b"before".to_vec())
            .unwrap();
        txn.start_undo_log(&["keys"]);
        let outer = txn.savepoint();
        txn.put("keys", Key::from_segment("a"), b"step".to_vec())
            .unwrap();
        txn.put("keys", Key::from_segment("b"), b"step".to_vec())
            .unwrap();
        let inner = txn.savepoint();
        txn.delete("keys", Key::from_segment("a")).unwrap();
        txn.release_savepoint(inner).unwrap();
        txn.rollback_to_savepoint(outer).unwrap();
        assert_eq!(
            txn.get("keys", &Key::from_segment("a")).unwrap(),
            Some(b"before".to_vec())
        );
        assert_eq!(txn.get("keys", &Key::from_segment("b")).unwrap(), None);
        // The undo log is as it was at the savepoint: nothing recorded yet.
        assert!(txn.take_undo_log().is_empty());
        assert_eq!(txn.to_batch().len(), 1);
    }

    #[test]
    fn a_savepoint_is_used_once_and_released_innermost_first() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let mut txn = Transaction::begin(&store);
        let outer = txn.savepoint();
        let inner = txn.savepoint();
        assert!(matches!(
            txn.release_savepoint(outer),
            Err(crate::StoreError::InvalidArgument { .. })
        ));
        // The failed release consumed the token; the inner savepoint is still open.
        txn.put("keys", Key::from_segment("a"), b"1".to_vec())
            .unwrap();
        txn.rollback_to_savepoint(inner).unwrap();
        assert!(txn.is_empty());
        // A token of a savepoint that is gone does not roll back its successor at that depth.
        let first = txn.savepoint();
        txn.rollback_to_savepoint(first).unwrap();
        let stale = Savepoint { depth: 2, id: 3 };
        let _second = txn.savepoint();
        assert!(txn.rollback_to_savepoint(stale).is_err());
    }
}
