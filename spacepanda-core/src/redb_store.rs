//! The durable default backend: one redb file per device.
//!
//! Format: one redb table, `spacepanda_kv`, `&[u8] → &[u8]`; table key = `len(namespace) (1
//! byte) ‖ namespace ‖ encoded Key` (see `docs/STORAGE.md`).
//!
//! A file on disk is outside data. Creating and opening are separate calls so that a file that
//! vanished, was truncated or was replaced by garbage is an error and never a new, empty device;
//! every open verifies the checksum of every page (redb's integrity check); and every call into
//! redb runs under `catch_unwind`, because redb 4.5 can panic on pages altered behind its back.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};

use crate::key_value_store::check_namespace;
use crate::{Key, KeyValueStore, StoreError, StoreResult, WriteBatch, WriteOp};

/// All namespaces live in one table; the table key is `len(ns) ‖ ns ‖ encoded key`, so a
/// namespace and any whole-segment prefix inside it are contiguous ranges.
const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("spacepanda_kv");

/// What a caught redb panic is reported as.
const PANIC_REASON: &str = "the storage engine failed on a damaged page";

/// Databases open in this process, by canonical path. redb refuses a second `open` of the same
/// file, and two handles would defeat its single-writer ordering anyway, so every
/// [`RedbStore::open`] of a path shares one `Database` while any handle is alive.
///
/// Held only to look up or insert, never across a call into redb: a redb panic while it was
/// held would poison it and fail every later open in the process.
static OPEN_DATABASES: LazyLock<Mutex<HashMap<PathBuf, Weak<Database>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Serialises creating and opening within the process, so two threads opening one path cannot
/// both reach redb (the second would see its own process's file lock as `AlreadyOpen`).
static OPENING: Mutex<()> = Mutex::new(());

/// A poisoned registry lock only means some thread panicked while holding it; the map itself
/// (weak handles) is always consistent, so it is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`KeyValueStore`] in one redb file. Every [`apply`](KeyValueStore::apply) is one redb write
/// transaction committed with [`Durability::Immediate`] (one fsync), so it survives a crash once
/// it returns.
///
/// Cloning shares the same open database.
#[derive(Clone)]
pub struct RedbStore {
    database: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend_error(operation: &'static str, error: impl Into<redb::Error>) -> StoreError {
    StoreError::backend("redb", operation, error.into())
}

/// Runs a call into redb, turning a panic inside redb into `Corrupted` for `namespace`.
fn guarded<T>(namespace: &str, call: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
    catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|_| Err(StoreError::corrupted(namespace, PANIC_REASON)))
}

/// Maps an error redb reports while reading a table to `Corrupted` when it says the file is
/// damaged, and to a backend failure otherwise.
fn read_error(
    namespace: &str,
    operation: &'static str,
    error: impl Into<redb::Error>,
) -> StoreError {
    match error.into() {
        redb::Error::Corrupted(_) => StoreError::corrupted(namespace, "a page failed its check"),
        other => StoreError::backend("redb", operation, other),
    }
}

impl RedbStore {
    /// Every entry of `namespace` under `prefix` in key order, with what `value` takes from
    /// each stored value (redb reads a value only when asked).
    fn scan_entries<T>(
        &self,
        namespace: &str,
        prefix: &Key,
        value: impl Fn(&[u8]) -> T,
    ) -> StoreResult<Vec<(Key, T)>> {
        check_namespace(namespace)?;
        guarded(namespace, || {
            let read = |e: redb::Error| read_error(namespace, "scan", e);
            let start = table_key(namespace, prefix);
            let ns_len = 1 + namespace.len();
            let txn = self.database.begin_read().map_err(|e| read(e.into()))?;
            let table = txn.open_table(TABLE).map_err(|e| read(e.into()))?;
            let mut out = Vec::new();
            for entry in table
                .range(start.as_slice()..)
                .map_err(|e| read(e.into()))?
            {
                let (key, stored) = entry.map_err(|e| read(e.into()))?;
                let key = key.value();
                if !key.starts_with(&start) {
                    break;
                }
                let encoded = key.get(ns_len..).ok_or_else(|| {
                    StoreError::corrupted(namespace, "table key shorter than namespace")
                })?;
                let key = Key::from_encoded(encoded.to_vec()).map_err(|_| {
                    StoreError::corrupted(namespace, "stored key is not a valid key")
                })?;
                out.push((key, value(stored.value())));
            }
            Ok(out)
        })
    }

    /// Creates a new database file at `path` for a new device.
    ///
    /// Fails with [`StoreError::AlreadyExists`] if anything is at `path` (even an empty file):
    /// existing data is never taken for a new device. The file appears complete or not at all.
    pub fn create(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = canonical_path(path.as_ref())?;
        let _opening = lock(&OPENING);
        if path.exists() || lock(&OPEN_DATABASES).contains_key(&path) {
            return Err(StoreError::AlreadyExists { path });
        }
        create_atomically(&path)?;
        Self::open_locked(path)
    }

    /// Opens the existing database file at `path`.
    ///
    /// A missing file is [`StoreError::NotFound`]; an empty, damaged or foreign file is
    /// [`StoreError::CorruptedFile`] and is left untouched. Every open checks the checksum of
    /// every page, so it reads the whole file once.
    ///
    /// Within one process, opening a path that is already open returns a handle to the same
    /// database. A file held by another process is [`StoreError::AlreadyOpen`].
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = canonical_path(path.as_ref())?;
        let _opening = lock(&OPENING);
        Self::open_locked(path)
    }

    /// Opens `path`; the caller holds `OPENING`.
    fn open_locked(path: PathBuf) -> StoreResult<Self> {
        {
            let mut open = lock(&OPEN_DATABASES);
            if let Some(database) = open.get(&path).and_then(Weak::upgrade) {
                return Ok(Self { database, path });
            }
            open.retain(|_, weak| weak.strong_count() > 0);
        }
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { path });
            }
            Err(e) => return Err(StoreError::backend("redb", "open", e)),
        };
        let damaged = |reason: String| StoreError::CorruptedFile {
            path: path.clone(),
            reason,
        };
        // redb would initialise an empty file as a new database.
        if metadata.len() == 0 {
            return Err(damaged("the file is empty".to_owned()));
        }
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Database::builder()
                .set_check_integrity_on_open(true)
                .open(&path)
        }));
        let database = match opened {
            Ok(Ok(database)) => Arc::new(database),
            Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::AlreadyOpen { path });
            }
            Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
                if e.kind() != std::io::ErrorKind::UnexpectedEof =>
            {
                return Err(StoreError::backend("redb", "open", e));
            }
            Ok(Err(error)) => return Err(damaged(error.to_string())),
            Err(_) => return Err(damaged(PANIC_REASON.to_owned())),
        };
        // Every file made by `create` has the table; a redb file without it is not ours.
        let has_table = guarded("", || {
            let txn = database
                .begin_read()
                .map_err(|e| backend_error("open", e))?;
            match txn.open_table(TABLE) {
                Ok(_) => Ok(true),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
                Err(e) => Err(backend_error("open", e)),
            }
        })
        .map_err(|e| match e {
            StoreError::Corrupted { reason, .. } => damaged(reason.to_owned()),
            other => other,
        })?;
        if !has_table {
            return Err(damaged("it has no spacepanda_kv table".to_owned()));
        }
        lock(&OPEN_DATABASES).insert(path.clone(), Arc::downgrade(&database));
        Ok(Self { database, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates a new database file so that it either does not exist or is complete: a process
/// killed while redb writes a fresh file's header would otherwise leave a file that no longer
/// opens ("not a redb database"). The file is built under a temporary name, synced, and linked
/// into place (a hard link, unlike a rename, fails instead of replacing a file that appeared
/// meanwhile), then the directory is synced.
fn create_atomically(path: &Path) -> StoreResult<()> {
    let io_error = |e: std::io::Error| StoreError::backend("redb", "create", e);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".creating");
    let temporary = PathBuf::from(temporary);
    // Left over from a creation that was interrupted: it never became the database.
    if temporary.exists() {
        std::fs::remove_file(&temporary).map_err(io_error)?;
    }
    guarded("", || {
        let database = Database::create(&temporary).map_err(|e| backend_error("create", e))?;
        let txn = database
            .begin_write()
            .map_err(|e| backend_error("create", e))?;
        txn.open_table(TABLE)
            .map_err(|e| backend_error("create", e))?;
        txn.commit().map_err(|e| backend_error("create", e))
    })?;
    std::fs::File::open(&temporary)
        .and_then(|file| file.sync_all())
        .map_err(io_error)?;
    match std::fs::hard_link(&temporary, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Best effort: the temporary file is garbage either way and is removed next time.
            let _ = std::fs::remove_file(&temporary);
            return Err(StoreError::AlreadyExists {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io_error(e)),
    }
    std::fs::remove_file(&temporary).map_err(io_error)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}

fn canonical_path(path: &Path) -> StoreResult<PathBuf> {
    let invalid = || StoreError::InvalidArgument {
        reason: "database path must name a file in an existing directory",
    };
    let file_name = path.file_name().ok_or_else(invalid)?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let parent = parent
        .canonicalize()
        .map_err(|e| StoreError::backend("redb", "open", e))?;
    Ok(parent.join(file_name))
}

fn table_key(namespace: &str, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + namespace.len() + key.as_bytes().len());
    // check_namespace bounds the length to 64, so it fits one byte.
    out.push(namespace.len() as u8);
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

impl KeyValueStore for RedbStore {
    fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>> {
        check_namespace(namespace)?;
        guarded(namespace, || {
            let read = |e: redb::Error| read_error(namespace, "get", e);
            let txn = self.database.begin_read().map_err(|e| read(e.into()))?;
            let table = txn.open_table(TABLE).map_err(|e| read(e.into()))?;
            let value = table
                .get(table_key(namespace, key).as_slice())
                .map_err(|e| read(e.into()))?;
            Ok(value.map(|guard| guard.value().to_vec()))
        })
    }

    fn get_many(&self, namespace: &str, keys: &[Key]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        check_namespace(namespace)?;
        guarded(namespace, || {
            let read = |e: redb::Error| read_error(namespace, "get", e);
            let txn = self.database.begin_read().map_err(|e| read(e.into()))?;
            let table = txn.open_table(TABLE).map_err(|e| read(e.into()))?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let value = table
                    .get(table_key(namespace, key).as_slice())
                    .map_err(|e| read(e.into()))?;
                values.push(value.map(|guard| guard.value().to_vec()));
            }
            Ok(values)
        })
    }

    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        self.scan_entries(namespace, prefix, |value| value.to_vec())
    }

    fn scan_keys(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<Key>> {
        Ok(self
            .scan_entries(namespace, prefix, |_| ())?
            .into_iter()
            .map(|(key, ())| key)
            .collect())
    }

    fn apply(&self, batch: WriteBatch) -> StoreResult<()> {
        for op in batch.ops() {
            check_namespace(op.namespace())?;
        }
        let namespace = batch.ops().first().map_or("", WriteOp::namespace);
        guarded(namespace, || {
            let mut txn = self
                .database
                .begin_write()
                .map_err(|e| backend_error("apply", e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| StoreError::backend("redb", "apply", e))?;
            {
                let mut table = txn
                    .open_table(TABLE)
                    .map_err(|e| backend_error("apply", e))?;
                for op in batch.ops() {
                    match op {
                        WriteOp::Put {
                            namespace,
                            key,
                            value,
                        } => {
                            table
                                .insert(table_key(namespace, key).as_slice(), value.as_slice())
                                .map_err(|e| backend_error("apply", e))?;
                        }
                        WriteOp::Delete { namespace, key } => {
                            table
                                .remove(table_key(namespace, key).as_slice())
                                .map_err(|e| backend_error("apply", e))?;
                        }
                    }
                }
            }
            // Dropping an uncommitted redb transaction aborts it, so every early return above
            // leaves the file untouched.
            txn.commit().map_err(|e| backend_error("apply", e))
        })
    }

    fn is_empty(&self) -> StoreResult<bool> {
        guarded("", || {
            let read = |e: redb::Error| read_error("", "scan", e);
            let txn = self.database.begin_read().map_err(|e| read(e.into()))?;
            let table = txn.open_table(TABLE).map_err(|e| read(e.into()))?;
            let mut entries = table.iter().map_err(|e| read(e.into()))?;
            Ok(entries.next().is_none())
        })
    }
}
