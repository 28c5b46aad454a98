//! The crate's one error type.

use std::path::PathBuf;

/// Boxed source error of a storage backend.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the storage foundation.
///
/// Variants fall into three groups, so callers can react without parsing messages:
/// - **storage failure** (the disk, the file, the backend): [`StoreError::Backend`],
///   [`StoreError::AlreadyOpen`];
/// - **data that is not what we wrote** (tampering, truncation, deletion, wrong key, another
///   format): [`StoreError::WrongKey`], [`StoreError::Corrupted`],
///   [`StoreError::CorruptedFile`], [`StoreError::UnsupportedFormat`], [`StoreError::NotSealed`];
/// - **the wrong call for what is on disk** (opening what does not exist, creating over what
///   does): [`StoreError::NotFound`], [`StoreError::AlreadyExists`], [`StoreError::NotEmpty`];
/// - **API misuse** by the caller: [`StoreError::InvalidKey`], [`StoreError::InvalidArgument`].
///
/// No variant ever carries key material, plaintext values or passphrases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed to read or write. The operation had no effect.
    #[error(
        "storage backend {backend} failed during {operation}: {source}; nothing was written, retry or check the disk"
    )]
    Backend {
        /// Which backend (`redb`, `memory`).
        backend: &'static str,
        /// What was being done (`open`, `get`, `scan`, `apply`).
        operation: &'static str,
        /// The backend's own error.
        #[source]
        source: BackendError,
    },

    /// The database file is held by another process (this process shares one handle per file).
    #[error(
        "database file {path} is already open in another process; close that process or use another data directory"
    )]
    AlreadyOpen {
        /// The file.
        path: PathBuf,
    },

    /// [`RedbStore::open`](crate::RedbStore::open) of a file that does not exist. Opening never
    /// creates: a missing file on a device that had one means data was lost, not a first run.
    #[error(
        "database file {path} does not exist; on first run create it with RedbStore::create, otherwise restore it from a backup"
    )]
    NotFound {
        /// The file.
        path: PathBuf,
    },

    /// [`RedbStore::create`](crate::RedbStore::create) of a file that already exists. Creating
    /// never reuses a file, so existing data is never mistaken for a new device.
    #[error(
        "database file {path} already exists; open it with RedbStore::open, or move it away yourself to start a new device"
    )]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },

    /// The database file is empty, damaged, or not a SpacePanda database. It was not modified.
    #[error(
        "database file {path} is damaged or not a SpacePanda database ({reason}); it was not opened or changed, restore it from a backup"
    )]
    CorruptedFile {
        /// The file.
        path: PathBuf,
        /// What check failed (the storage engine's own words when it found the damage).
        reason: String,
    },

    /// [`SealedStore::open_with_passphrase`](crate::SealedStore::open_with_passphrase) or
    /// [`open_with_key`](crate::SealedStore::open_with_key) found no sealed-store header.
    #[error(
        "the store has no sealed-store header: it is a new or plain store, or its header was removed; create a new sealed store only over an empty store, otherwise restore the file from a backup"
    )]
    NotSealed,

    /// [`SealedStore::create_with_passphrase`](crate::SealedStore::create_with_passphrase) or
    /// [`create_with_key`](crate::SealedStore::create_with_key) over a store that holds data.
    #[error(
        "cannot create a new sealed store over a store that already holds data; open the existing store instead, or start from an empty one"
    )]
    NotEmpty,

    /// The passphrase or raw key does not open this store.
    #[error(
        "the key or passphrase does not open this encrypted store; supply the one it was created with"
    )]
    WrongKey,

    /// A stored value failed authentication or could not be decoded: it was tampered with,
    /// truncated, or moved to another key. The value is not returned.
    #[error(
        "stored data in namespace `{namespace}` is corrupted ({reason}); it was tampered with, truncated or moved, restore it from a backup"
    )]
    Corrupted {
        /// The namespace the value was read from.
        namespace: String,
        /// What check failed.
        reason: &'static str,
    },

    /// The store was written in another format version (newer, or an older pre-release one
    /// that is not migrated).
    #[error(
        "{what} has format version {found}, this build reads version {supported} only; a newer file needs a newer SpacePanda, an older pre-release file cannot be migrated and must be recreated"
    )]
    UnsupportedFormat {
        /// Which format (`sealed store header`, …).
        what: &'static str,
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// A key was not a valid segmented [`Key`](crate::Key) encoding or too long.
    #[error("invalid key: {reason}; build keys with spacepanda_core::Key")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A parameter passed by the caller is out of range.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl StoreError {
    /// A backend failure.
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<BackendError>,
    ) -> Self {
        Self::Backend {
            backend,
            operation,
            source: source.into(),
        }
    }

    /// A corrupted value in `namespace`.
    pub fn corrupted(namespace: &str, reason: &'static str) -> Self {
        Self::Corrupted {
            namespace: namespace.to_owned(),
            reason,
        }
    }
}

/// Result with [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;
