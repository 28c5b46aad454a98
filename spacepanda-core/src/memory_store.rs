//! In-memory backend for tests, simulations and benchmarks.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::key_value_store::check_namespace;
use crate::{Key, KeyValueStore, StoreError, StoreResult, WriteBatch, WriteOp};

type Tables = BTreeMap<String, BTreeMap<Key, Vec<u8>>>;

/// A [`KeyValueStore`] held in memory: atomic batches, no durability.
///
/// Cloning is not offered on purpose: share it as an [`Arc`](std::sync::Arc) like any store, so
/// a "restart" in a test is dropping the client and reopening over the same `Arc`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, Tables>> {
        // A poisoned lock means a panic happened while a batch was being applied; the map may be
        // half-written, which is exactly what this store promises never to show.
        self.tables
            .lock()
            .map_err(|_| StoreError::backend("memory", "lock", "a writer panicked mid-batch"))
    }

    /// Total number of entries, over all namespaces (for tests and diagnostics).
    pub fn len(&self) -> StoreResult<usize> {
        Ok(self.lock()?.values().map(BTreeMap::len).sum())
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> StoreResult<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of every entry, for byte-for-byte comparisons in tests.
    pub fn dump(&self) -> StoreResult<Vec<(String, Key, Vec<u8>)>> {
        let tables = self.lock()?;
        Ok(tables
            .iter()
            .flat_map(|(ns, table)| {
                table
                    .iter()
                    .map(move |(k, v)| (ns.clone(), k.clone(), v.clone()))
            })
            .collect())
    }

    /// What `entry` takes from every entry of `namespace` under `prefix`, in key order.
    fn scan_entries<T>(
        &self,
        namespace: &str,
        prefix: &Key,
        entry: impl Fn(&Key, &Vec<u8>) -> T,
    ) -> StoreResult<Vec<T>> {
        check_namespace(namespace)?;
        let tables = self.lock()?;
        let Some(table) = tables.get(namespace) else {
            return Ok(Vec::new());
        };
        Ok(table
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| entry(key, value))
            .collect())
    }
}

impl KeyValueStore for MemoryStore {
    fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>> {
        check_namespace(namespace)?;
        Ok(self
            .lock()?
            .get(namespace)
            .and_then(|table| table.get(key))
            .cloned())
    }

    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        self.scan_entries(namespace, prefix, |key, value| (key.clone(), value.clone()))
    }

    fn scan_keys(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<Key>> {
        self.scan_entries(namespace, prefix, |key, _| key.clone())
    }

    fn apply(&self, batch: WriteBatch) -> StoreResult<()> {
        for op in batch.ops() {
            check_namespace(op.namespace())?;
        }
        let mut tables = self.lock()?;
        for mut op in batch.into_ops() {
            match &mut op {
                WriteOp::Put {
                    namespace,
                    key,
                    value,
                } => {
                    // Moved, not copied: the emptied op has nothing left to zeroize.
                    tables
                        .entry(namespace.clone())
                        .or_default()
                        .insert(key.clone(), std::mem::take(value));
                }
                WriteOp::Delete { namespace, key } => {
                    if let Some(table) = tables.get_mut(namespace) {
                        table.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> StoreResult<bool> {
        Ok(self.lock()?.values().all(BTreeMap::is_empty))
    }
}
