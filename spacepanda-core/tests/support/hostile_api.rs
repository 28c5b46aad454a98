//! The store API as the hostile-disk tests use it: explicit create and open.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use spacepanda_core::{
    KdfParams, MasterKey, RedbStore, SEALED_NAMESPACE, SealedStore, StoreError, StoreResult,
};

/// The namespace of the wrapped store that holds sealed entries.
pub const INNER_NS: &str = SEALED_NAMESPACE;

pub fn create_plain(path: &Path) -> RedbStore {
    RedbStore::create(path).unwrap()
}

/// Reopens an existing file after a restart.
pub fn open_plain(path: &Path) -> StoreResult<RedbStore> {
    RedbStore::open(path)
}

pub fn create_sealed_key(path: &Path, key: &MasterKey) -> SealedStore<RedbStore> {
    SealedStore::create_with_key(RedbStore::create(path).unwrap(), key).unwrap()
}

pub fn open_sealed_key(path: &Path, key: &MasterKey) -> StoreResult<SealedStore<RedbStore>> {
    SealedStore::open_with_key(RedbStore::open(path)?, key)
}

pub fn create_sealed_pass(path: &Path, passphrase: &[u8]) -> SealedStore<RedbStore> {
    SealedStore::create_with_passphrase(
        RedbStore::create(path).unwrap(),
        passphrase,
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap()
}

pub fn open_sealed_pass(path: &Path, passphrase: &[u8]) -> StoreResult<SealedStore<RedbStore>> {
    SealedStore::open_with_passphrase(RedbStore::open(path)?, passphrase)
}

/// Over an existing plain store: must be refused, the store holds data.
pub fn create_sealed_over(
    inner: RedbStore,
    key: &MasterKey,
) -> StoreResult<SealedStore<RedbStore>> {
    SealedStore::create_with_key(inner, key)
}

pub fn is_damaged_file(error: &StoreError) -> bool {
    matches!(error, StoreError::CorruptedFile { .. })
}

pub fn is_corrupted(error: &StoreError) -> bool {
    matches!(error, StoreError::Corrupted { .. })
}

pub fn is_not_sealed(error: &StoreError) -> bool {
    matches!(error, StoreError::NotSealed)
}

pub fn is_not_empty(error: &StoreError) -> bool {
    matches!(error, StoreError::NotEmpty)
}
