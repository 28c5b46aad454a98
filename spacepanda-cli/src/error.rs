//! [`CliError`]: every way a command fails, each a one-line message that says what to do.

use std::path::PathBuf;

use core_dht::DhtError;
use core_identity::IdentityError;
use core_mls::MlsError;
use spacepanda_core::StoreError;

/// Why a command failed. Nothing a failed command touched is lost: stores are written in
/// transactions, and a device is created only when every step before it succeeded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("no data directory: give --data-dir DIR, or set SPACEPANDA_HOME or HOME")]
    NoDataDir,
    #[error("no passphrase: set SPACEPANDA_PASSPHRASE, or run in a terminal to be asked for it")]
    NoPassphrase,
    #[error("the passphrase is empty; choose one (it seals the device's files)")]
    EmptyPassphrase,
    #[error("the two passphrases differ; nothing was created, try again")]
    PassphraseMismatch,
    #[error("wrong passphrase for {path}; nothing was changed, try again with the right one")]
    WrongPassphrase { path: PathBuf },
    #[error(
        "{path} is in use by another spacepanda process; stop that process first (one process per device)"
    )]
    InUse { path: PathBuf },
    #[error(
        "{dir} holds no device yet; create one with `spacepanda init --name NAME --data-dir {dir}` (or `link import`)"
    )]
    NoDevice { dir: PathBuf },
    #[error("{dir} already holds a device; use another --data-dir for another device")]
    AlreadyInitialized { dir: PathBuf },
    #[error("{path} already exists; choose another file name, nothing was written")]
    FileExists { path: PathBuf },
    #[error("{path} is not a link file made by `spacepanda link export` ({reason})")]
    NotALinkFile { path: PathBuf, reason: String },
    #[error(
        "cannot join the network: {reason}; check that the node runs and that its address ends in /p2p/<peer id>, as `spacepanda serve` prints it"
    )]
    BootstrapUnreachable { reason: String },
    #[error("the demo failed: some of its checks did not hold (see above)")]
    DemoFailed,
    #[error("{0}")]
    Network(DhtError),
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Engine(#[from] MlsError),
    #[error("{0}")]
    Store(StoreError),
    #[error("{0}")]
    Io(std::io::Error),
}

impl CliError {
    /// A store error, said about `path` when the cause is the user's (a wrong passphrase, a
    /// file another process holds).
    pub(crate) fn store(error: StoreError, path: &std::path::Path) -> Self {
        match error {
            StoreError::WrongKey => Self::WrongPassphrase {
                path: path.to_owned(),
            },
            StoreError::AlreadyOpen { .. } => Self::InUse {
                path: path.to_owned(),
            },
            other => Self::Store(other),
        }
    }

    /// A network error, with the store's and the bootstrap's cases said plainly.
    pub(crate) fn network(error: DhtError, path: &std::path::Path) -> Self {
        match error {
            DhtError::Store(store) => Self::store(store, path),
            other => Self::Network(other),
        }
    }
}

impl CliError {
    /// A failed join: an unreachable bootstrap list said as such.
    pub(crate) fn join(error: DhtError) -> Self {
        match error {
            DhtError::Unreachable { reason } => Self::BootstrapUnreachable { reason },
            other => Self::from(other),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<DhtError> for CliError {
    fn from(error: DhtError) -> Self {
        match error {
            DhtError::Identity(identity) => Self::Identity(identity),
            DhtError::Engine(engine) => Self::Engine(engine),
            DhtError::Store(store) => Self::Store(store),
            other => Self::Network(other),
        }
    }
}
