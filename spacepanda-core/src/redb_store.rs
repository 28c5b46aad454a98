//! The durable default backend: one redb file per device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::key_value_store::check_namespace;
use crate::{Key, KeyValueStore, StoreError, StoreResult, WriteBatch, WriteOp};

/// All namespaces live in one table; the table key is `len(ns) ‖ ns ‖ encoded key`, so a
/// namespace and any whole-segment prefix inside it are contiguous ranges.
const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("spacepanda_kv");

/// Databases open in this process, by canonical path. redb refuses a second `open` of the same
/// file, and two handles would defeat its single-writer ordering anyway, so every
/// [`RedbStore::open`] of a path shares one `Database` while any handle is alive.
static OPEN_DATABASES: LazyLock<Mutex<HashMap<PathBuf, Weak<Database>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

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

impl RedbStore {
    /// Opens (creating if needed) the database file at `path`.
    ///
    /// Within one process, opening a path that is already open returns a handle to the same
    /// database. A file held by another process is [`StoreError::AlreadyOpen`].
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = canonical_path(path.as_ref())?;
        let mut open = OPEN_DATABASES
            .lock()
            .map_err(|_| StoreError::backend("redb", "open", "database registry poisoned"))?;
        if let Some(database) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(Self { database, path });
        }
        open.retain(|_, weak| weak.strong_count() > 0);
        if !path.exists() {
            create_atomically(&path)?;
        }
        let database = match Database::create(&path) {
            Ok(database) => Arc::new(database),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::AlreadyOpen { path });
            }
            Err(error) => return Err(backend_error("open", error)),
        };
        // Create the table up front so readers never meet a missing table.
        let txn = database
            .begin_write()
            .map_err(|e| backend_error("open", e))?;
        txn.open_table(TABLE)
            .map_err(|e| backend_error("open", e))?;
        txn.commit().map_err(|e| backend_error("open", e))?;
        open.insert(path.clone(), Arc::downgrade(&database));
        Ok(Self { database, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates a new database file so that it either does not exist or is complete: a process
/// killed while redb writes a fresh file's header would otherwise leave a file that no longer
/// opens ("not a redb database"). The file is built under a temporary name, synced, and renamed
/// into place (rename is atomic on POSIX file systems), then the directory is synced.
fn create_atomically(path: &Path) -> StoreResult<()> {
    let io_error = |e: std::io::Error| StoreError::backend("redb", "create", e);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".creating");
    let temporary = PathBuf::from(temporary);
    // Left over from a creation that was interrupted: it never became the database.
    if temporary.exists() {
        std::fs::remove_file(&temporary).map_err(io_error)?;
    }
    {
        let database = Database::create(&temporary).map_err(|e| backend_error("create", e))?;
        let txn = database
            .begin_write()
            .map_err(|e| backend_error("create", e))?;
        txn.open_table(TABLE)
            .map_err(|e| backend_error("create", e))?;
        txn.commit().map_err(|e| backend_error("create", e))?;
    }
    std::fs::File::open(&temporary)
        .and_then(|file| file.sync_all())
        .map_err(io_error)?;
    std::fs::rename(&temporary, path).map_err(io_error)?;
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
        let txn = self
            .database
            .begin_read()
            .map_err(|e| backend_error("get", e))?;
        let table = txn.open_table(TABLE).map_err(|e| backend_error("get", e))?;
        let value = table
            .get(table_key(namespace, key).as_slice())
            .map_err(|e| backend_error("get", e))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        check_namespace(namespace)?;
        let start = table_key(namespace, prefix);
        let ns_len = 1 + namespace.len();
        let txn = self
            .database
            .begin_read()
            .map_err(|e| backend_error("scan", e))?;
        let table = txn
            .open_table(TABLE)
            .map_err(|e| backend_error("scan", e))?;
        let mut out = Vec::new();
        for entry in table
            .range(start.as_slice()..)
            .map_err(|e| backend_error("scan", e))?
        {
            let (key, value) = entry.map_err(|e| backend_error("scan", e))?;
            let key = key.value();
            if !key.starts_with(&start) {
                break;
            }
            let encoded = key.get(ns_len..).ok_or_else(|| {
                StoreError::corrupted(namespace, "table key shorter than namespace")
            })?;
            let key = Key::from_encoded(encoded.to_vec())
                .map_err(|_| StoreError::corrupted(namespace, "stored key is not a valid key"))?;
            out.push((key, value.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: WriteBatch) -> StoreResult<()> {
        for op in batch.ops() {
            check_namespace(op.namespace())?;
        }
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
    }
}
