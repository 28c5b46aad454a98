//! The storage contract every backend implements.

use std::sync::Arc;

use zeroize::Zeroize;

use crate::{Key, StoreResult};

/// Longest namespace name (namespaces are short fixed labels such as `mls` or `kp_ledger`).
pub const MAX_NAMESPACE_LEN: usize = 64;

/// A namespaced, ordered key-value store whose batches are atomic and durable.
///
/// Object safe and `Send + Sync`, so one store is shared as an [`SharedStore`] by every layer
/// of one device. Callers normally go through a [`Transaction`](crate::Transaction).
///
/// Contract (checked by the conformance suite in `tests/conformance.rs` for every backend):
/// - `get` and `scan_prefix` see exactly the batches that `apply` has returned from;
/// - `scan_prefix` returns entries whose key starts with `prefix` (whole segments), in key order
///   of the *plain* keys for unsealed backends and in an unspecified but stable order for sealed
///   ones;
/// - `is_empty` is true exactly when no namespace holds an entry;
/// - `apply` makes all writes of the batch visible together or none of them, and when it returns
///   `Ok` they survive a crash of the process or the machine.
pub trait KeyValueStore: Send + Sync {
    /// The value stored under `key` in `namespace`, if any.
    fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>>;

    /// Every entry of `namespace` whose key starts with `prefix`.
    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>>;

    /// The keys of every entry of `namespace` whose key starts with `prefix`, in the order
    /// `scan_prefix` gives. Backends that can list keys without reading (and copying) values
    /// override it: deleting an expired epoch snapshot lists hundreds of kilobytes of state
    /// only to learn its keys.
    fn scan_keys(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<Key>> {
        Ok(self
            .scan_prefix(namespace, prefix)?
            .into_iter()
            .map(|(key, mut value)| {
                value.zeroize();
                key
            })
            .collect())
    }

    /// Applies every write of `batch` atomically and durably.
    fn apply(&self, batch: WriteBatch) -> StoreResult<()>;

    /// True when no namespace holds any entry. A sealed store is only ever created over an empty
    /// store, so that existing data is never taken for a new device.
    fn is_empty(&self) -> StoreResult<bool>;

    /// The values under each of `keys` in `namespace`, in order, as one consistent read.
    /// Backends where each `get` has a fixed cost (a read transaction) read them together.
    fn get_many(&self, namespace: &str, keys: &[Key]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(namespace, key)).collect()
    }
}

/// A store shared by the layers of one device.
pub type SharedStore = Arc<dyn KeyValueStore>;

// Lets `Arc<SealedStore<RedbStore>>` and `SharedStore` be passed wherever a store is expected.
impl<S: KeyValueStore + ?Sized> KeyValueStore for Arc<S> {
    fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>> {
        (**self).get(namespace, key)
    }

    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        (**self).scan_prefix(namespace, prefix)
    }

    fn scan_keys(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<Key>> {
        (**self).scan_keys(namespace, prefix)
    }

    fn apply(&self, batch: WriteBatch) -> StoreResult<()> {
        (**self).apply(batch)
    }

    fn is_empty(&self) -> StoreResult<bool> {
        (**self).is_empty()
    }

    fn get_many(&self, namespace: &str, keys: &[Key]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        (**self).get_many(namespace, keys)
    }
}

/// One write in a [`WriteBatch`].
#[derive(Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Store `value` under `key`, replacing what was there.
    Put {
        /// Namespace.
        namespace: String,
        /// Key.
        key: Key,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` (a no-op if absent).
    Delete {
        /// Namespace.
        namespace: String,
        /// Key.
        key: Key,
    },
}

impl WriteOp {
    /// The namespace written to.
    pub fn namespace(&self) -> &str {
        match self {
            Self::Put { namespace, .. } | Self::Delete { namespace, .. } => namespace,
        }
    }

    /// The key written to.
    pub fn key(&self) -> &Key {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

impl std::fmt::Debug for WriteOp {
    // Values may be secrets (OpenMLS key material): Debug shows their length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put {
                namespace,
                key,
                value,
            } => write!(f, "Put({namespace}, {key:?}, {} bytes)", value.len()),
            Self::Delete { namespace, key } => write!(f, "Delete({namespace}, {key:?})"),
        }
    }
}

impl Drop for WriteOp {
    fn drop(&mut self) {
        if let Self::Put { value, .. } = self {
            value.zeroize();
        }
    }
}

/// Writes applied together by [`KeyValueStore::apply`]. Later writes to the same key win.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, namespace: &str, key: Key, value: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::Put {
            namespace: namespace.to_owned(),
            key,
            value,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, namespace: &str, key: Key) -> &mut Self {
        self.ops.push(WriteOp::Delete {
            namespace: namespace.to_owned(),
            key,
        });
        self
    }

    /// The writes in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Consumes the batch, returning the writes in order.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl FromIterator<WriteOp> for WriteBatch {
    fn from_iter<T: IntoIterator<Item = WriteOp>>(iter: T) -> Self {
        Self {
            ops: iter.into_iter().collect(),
        }
    }
}

/// Checks a namespace name: non-empty ASCII `[a-z0-9_]`, at most [`MAX_NAMESPACE_LEN`] bytes.
pub(crate) fn check_namespace(namespace: &str) -> StoreResult<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(crate::StoreError::InvalidArgument {
            reason: "namespace must be 1-64 characters of [a-z0-9_]",
        })
    }
}
