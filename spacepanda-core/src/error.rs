//! The crate's one error type.

use std::path::PathBuf;

/// Boxed source error of a storage backend.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the storage foundation.
///
/// Variants fall into three groups, so callers can react without parsing messages:
/// - **storage failure** (the disk, the file, the backend): [`StoreError::Backend`],
///   [`StoreError::AlreadyOpen`];
/// - **data that is not what we wrote** (tampering, truncation, wrong key, future format):
///   [`StoreError::WrongKey`], [`StoreError::Corrupted`], [`StoreError::UnsupportedFormat`];
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

    /// The store was written by a newer (or unknown) format version.
    #[error(
        "{what} has format version {found}, this build understands up to {supported}; upgrade SpacePanda to open it"
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
