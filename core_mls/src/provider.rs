//! [`SpacePandaProvider`]: OpenMLS's provider (RustCrypto + [`KvStorageProvider`]) and the
//! one-operation-one-transaction helpers.

use openmls::prelude::{GroupId, MlsGroup};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use spacepanda_core::SharedStore;

use crate::error::MlsError;
use crate::storage::KvStorageProvider;

/// The OpenMLS provider of one device: `RustCrypto` for crypto and randomness, and
/// [`KvStorageProvider`] for storage.
///
/// Every OpenMLS call that writes state must run inside [`transaction`](Self::transaction) or
/// [`group_transaction`](Self::group_transaction); outside one, writes fail with
/// [`MlsError::NoTransaction`].
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use core_mls::{MlsError, SpacePandaProvider};
/// use openmls::prelude::*;
/// use openmls_basic_credential::SignatureKeyPair;
/// use spacepanda_core::{MemoryStore, SharedStore};
///
/// let store: SharedStore = Arc::new(MemoryStore::new());
/// let provider = SpacePandaProvider::open(store)?;
/// let ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm())?;
/// let credential = CredentialWithKey {
///     credential: BasicCredential::new(b"alice".to_vec()).into(),
///     signature_key: signer.public().into(),
/// };
/// let config = MlsGroupCreateConfig::builder().ciphersuite(ciphersuite).build();
///
/// // One operation, one transaction: committed atomically when the closure returns Ok.
/// let group = provider.transaction(|p| {
///     MlsGroup::new(p, &signer, &config, credential.clone())
///         .map_err(|e| MlsError::openmls("create a group", e))
/// })?;
///
/// // Everything is in the store: the group loads back as it was.
/// let loaded = provider.load_group(group.group_id())?.ok_or("not stored")?;
/// assert_eq!(loaded.epoch_authenticator().as_slice(), group.epoch_authenticator().as_slice());
/// assert_eq!(provider.list_groups()?, vec![group.group_id().clone()]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SpacePandaProvider {
    crypto: RustCrypto,
    storage: KvStorageProvider,
}

impl std::fmt::Debug for SpacePandaProvider {
    // The crypto provider holds the RNG state: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpacePandaProvider")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl SpacePandaProvider {
    /// Opens the provider on `store` (see [`KvStorageProvider::open`]).
    pub fn open(store: SharedStore) -> Result<Self, MlsError> {
        Ok(Self {
            crypto: RustCrypto::default(),
            storage: KvStorageProvider::open(store)?,
        })
    }

    /// Runs `op` as one storage transaction: every write it makes (OpenMLS's and the caller's,
    /// through [`KvStorageProvider::with_transaction`]) is committed atomically and durably if
    /// it returns `Ok`, and discarded if it returns `Err` or panics.
    ///
    /// Use [`group_transaction`](Self::group_transaction) when `op` mutates an `MlsGroup`, so
    /// the group in memory is reloaded when the writes are discarded.
    pub fn transaction<R>(
        &self,
        op: impl FnOnce(&Self) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        self.storage.begin()?;
        let guard = RollbackOnDrop(&self.storage);
        let value = op(self)?;
        self.storage.commit()?;
        std::mem::forget(guard);
        Ok(value)
    }

    /// Runs `op` on `group` as one storage transaction. On error nothing is written and `group`
    /// is reloaded from storage, so the group in memory never holds state the disk does not.
    pub fn group_transaction<R>(
        &self,
        group: &mut MlsGroup,
        op: impl FnOnce(&Self, &mut MlsGroup) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        let result = self.transaction(|provider| op(provider, group));
        if result.is_err() {
            let group_id = group.group_id().clone();
            *group = self.load_group(&group_id)?.ok_or(MlsError::Internal {
                what: "a group in memory has no stored state to reload after a rollback",
            })?;
        }
        result
    }

    /// Like [`group_transaction`](Self::group_transaction) for operations that may create,
    /// replace or remove the group (create, join, leave): on error `group` is reset to what
    /// storage holds for `group_id` (possibly `None`).
    pub fn optional_group_transaction<R>(
        &self,
        group_id: &GroupId,
        group: &mut Option<MlsGroup>,
        op: impl FnOnce(&Self, &mut Option<MlsGroup>) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        let result = self.transaction(|provider| op(provider, group));
        if result.is_err() {
            *group = self.load_group(group_id)?;
        }
        result
    }

    /// Loads a group from storage (as an open transaction sees it).
    pub fn load_group(&self, group_id: &GroupId) -> Result<Option<MlsGroup>, MlsError> {
        MlsGroup::load(&self.storage, group_id)
    }

    /// The ids of every stored group (see [`KvStorageProvider::list_groups`]).
    pub fn list_groups(&self) -> Result<Vec<GroupId>, MlsError> {
        self.storage.list_groups()
    }

    /// Deletes every stored entry of a group inside the open transaction (see
    /// [`KvStorageProvider::delete_group`]); returns how many entries that was.
    pub fn delete_group(&self, group_id: &GroupId) -> Result<usize, MlsError> {
        self.storage.delete_group(group_id)
    }
}

/// Discards the open transaction unless forgotten: covers both `?` returns and panics.
struct RollbackOnDrop<'a>(&'a KvStorageProvider);

impl Drop for RollbackOnDrop<'_> {
    fn drop(&mut self) {
        self.0.rollback();
    }
}

impl OpenMlsProvider for SpacePandaProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = KvStorageProvider;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
