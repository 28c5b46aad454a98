//! The crate's one error type.

use spacepanda_core::StoreError;

/// Boxed source error of an OpenMLS operation (its own typed errors are generic over our
/// storage error, so they are kept as the source rather than as variants).
pub type OpenMlsSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the MLS engine.
///
/// Variants fall into groups, so callers can react without parsing messages:
/// - **storage failure** (disk, file, backend): [`MlsError::Storage`];
/// - **stored data that is not what we wrote** (tampering, truncation, bugs, a future format):
///   [`MlsError::CorruptedState`], [`MlsError::UnsupportedStateVersion`];
/// - **API misuse** by the caller: [`MlsError::NoTransaction`],
///   [`MlsError::TransactionAlreadyOpen`];
/// - **OpenMLS refused an operation** (invalid input, wrong state): [`MlsError::OpenMls`];
/// - **a bug in this crate**: [`MlsError::Internal`].
///
/// Later issues add peer-misbehaviour variants; the enum is `#[non_exhaustive]` so they can.
/// No variant carries key material, plaintext or stored values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// The storage backend failed. The current operation was rolled back.
    #[error("storage failed: {0}; the operation was rolled back, retry it or check the disk")]
    Storage(#[from] StoreError),

    /// A stored value could not be decoded: the store was tampered with, truncated, or written
    /// by a buggy build. The value is not returned.
    #[error(
        "stored MLS state in namespace `{namespace}` is corrupted ({reason}); restore the device from a backup or remove the affected group"
    )]
    CorruptedState {
        /// The namespace the value was read from.
        namespace: &'static str,
        /// What check failed.
        reason: &'static str,
    },

    /// The store was written by a newer (or unknown) format version of this crate.
    #[error(
        "{what} has format version {found}, this build understands up to {supported}; upgrade SpacePanda to open this store"
    )]
    UnsupportedStateVersion {
        /// Which record (`MLS storage format`, …).
        what: &'static str,
        /// The version found on disk.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },

    /// OpenMLS state was written outside a transaction. Every mutating MLS operation must run
    /// inside `SpacePandaProvider::transaction` (or `group_transaction`) so it commits atomically.
    #[error(
        "MLS state written with no open storage transaction ({operation}); run the operation inside SpacePandaProvider::transaction"
    )]
    NoTransaction {
        /// The storage call that tried to write.
        operation: &'static str,
    },

    /// A transaction was begun while another one is open (transactions do not nest).
    #[error(
        "a storage transaction is already open; finish it before starting another (transactions do not nest)"
    )]
    TransactionAlreadyOpen,

    /// OpenMLS refused the operation; the operation was rolled back and the group reloaded.
    #[error("OpenMLS could not {context}: {source}; nothing was changed")]
    OpenMls {
        /// What was being done (`create a group`, `process a message`, …).
        context: &'static str,
        /// OpenMLS's own error.
        #[source]
        source: OpenMlsSource,
    },

    /// A bug in this crate: an invariant it relies on does not hold.
    #[error("internal error: {what}; this is a bug in core_mls, please report it")]
    Internal {
        /// Which invariant failed.
        what: &'static str,
    },
}

impl MlsError {
    /// Wraps an OpenMLS error with what was being done.
    pub fn openmls(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::OpenMls {
            context,
            source: Box::new(source),
        }
    }

    /// A corrupted value in `namespace`.
    pub(crate) fn corrupted(namespace: &'static str, reason: &'static str) -> Self {
        Self::CorruptedState { namespace, reason }
    }
}
