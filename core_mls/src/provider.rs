//! [`SpacePandaProvider`]: OpenMLS's provider of one engine (`engine_crypto` + [`KvStorageProvider`]).

use crate::engine_crypto::EngineCrypto;
use openmls_traits::OpenMlsProvider;
use spacepanda_core::SharedStore;

use crate::error::MlsError;
use crate::storage::KvStorageProvider;

/// The OpenMLS provider of one device: the engine's crypto (RustCrypto's primitives, one
/// generator for every random draw; see `engine_crypto`) and [`KvStorageProvider`] for storage.
///
/// Every OpenMLS call that writes state must run inside `MlsClient::transaction`; outside
/// one, writes fail with [`MlsError::NoTransaction`]. Crate-private: the engine is the only
/// way to change MLS state, so every change passes its identity checks.
pub(crate) struct SpacePandaProvider {
    crypto: EngineCrypto,
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
    /// Opens the provider on `store` (see [`KvStorageProvider::open`]), with randomness from
    /// the operating system.
    pub(crate) fn open(store: SharedStore) -> Result<Self, MlsError> {
        Ok(Self {
            crypto: EngineCrypto::from_os_entropy(),
            storage: KvStorageProvider::open(store)?,
        })
    }

    /// Like [`open`](Self::open), with every random draw following from `seed` (tests and
    /// simulations only: see [`MlsClient::open_seeded`](crate::MlsClient::open_seeded)).
    pub(crate) fn open_seeded(store: SharedStore, seed: [u8; 32]) -> Result<Self, MlsError> {
        Ok(Self {
            crypto: EngineCrypto::from_seed(seed),
            storage: KvStorageProvider::open(store)?,
        })
    }
}

impl OpenMlsProvider for SpacePandaProvider {
    type CryptoProvider = EngineCrypto;
    type RandProvider = EngineCrypto;
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
