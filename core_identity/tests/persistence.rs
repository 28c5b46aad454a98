//! The identity survives reopening real stores, and a second device joins the same user.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;

use core_identity::{IdentityError, IdentityStore, SafetyNumber, verify_member, verify_member_as};
use spacepanda_core::{
    ManualClock, MasterKey, MemoryStore, RedbStore, SealedStore, SharedStore, Timestamp,
};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_unix_secs(1_700_000_000)))
}

/// The device's file: created on its first start, opened on every later one (each test's
/// first call is the first start).
fn redb(path: &Path) -> SharedStore {
    if path.exists() {
        Arc::new(RedbStore::open(path).unwrap())
    } else {
        Arc::new(RedbStore::create(path).unwrap())
    }
}

fn sealed(path: &Path, key: &MasterKey) -> SharedStore {
    if path.exists() {
        Arc::new(SealedStore::open_with_key(RedbStore::open(path).unwrap(), key).unwrap())
    } else {
        Arc::new(SealedStore::create_with_key(RedbStore::create(path).unwrap(), key).unwrap())
    }
}

#[test]
fn reopening_a_redb_file_gives_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    let first = IdentityStore::new(redb(&path), clock())
        .create_or_load("alice")
        .unwrap();
    // Every handle is dropped here, so the file is really closed and reopened.
    let again = IdentityStore::new(redb(&path), clock())
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(again.user_id(), first.user_id());
    assert_eq!(again.device_id(), first.device_id());
    assert_eq!(again.signature_public_key(), first.signature_public_key());
    assert_eq!(
        again.signature_private_key_bytes().as_slice(),
        first.signature_private_key_bytes().as_slice()
    );
    assert_eq!(again.credential_bytes(), first.credential_bytes());
    verify_member(again.credential_bytes(), &again.signature_public_key()).unwrap();
}

#[test]
fn reopening_a_sealed_store_gives_the_same_identity_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    let key = MasterKey::generate();
    let identities = IdentityStore::new(sealed(&path, &key), clock());
    let first = identities.create_or_load("alice").unwrap();
    let exported = identities.export_identity_key().unwrap();
    drop(identities);

    let again = IdentityStore::new(sealed(&path, &key), clock())
        .create_or_load("ignored")
        .unwrap();
    assert_eq!(again.user_id(), first.user_id());
    assert_eq!(again.device_id(), first.device_id());
    assert_eq!(again.credential_bytes(), first.credential_bytes());

    // Nothing secret, and not even the credential, is readable in the file.
    drop(again);
    let file = std::fs::read(&path).unwrap();
    let contains = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&exported[2..34]), "identity secret in the clear");
    assert!(
        !contains(first.signature_private_key_bytes().as_slice()),
        "signature secret in the clear"
    );
    assert!(
        !contains(&first.credential_bytes()[..40]),
        "credential in the clear"
    );

    // The wrong master key does not open it.
    let wrong = SealedStore::open_with_key(RedbStore::open(&path).unwrap(), &MasterKey::generate());
    assert!(wrong.is_err());
}

#[test]
fn unsealed_redb_shows_why_sealing_matters() {
    // Control for the test above: without SealedStore the secret is in the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.redb");
    let identities = IdentityStore::new(redb(&path), clock());
    identities.create_or_load("alice").unwrap();
    let exported = identities.export_identity_key().unwrap();
    drop(identities);
    let file = std::fs::read(&path).unwrap();
    assert!(file.windows(32).any(|w| w == &exported[2..34]));
}

#[test]
fn second_device_from_the_exported_key_is_the_same_user() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let phone_path = dir.path().join("phone.redb");
    let laptop_path = dir.path().join("laptop.redb");

    let phone_store = IdentityStore::new(sealed(&phone_path, &key), clock());
    let phone = phone_store.create_or_load("alice").unwrap();
    let exported = phone_store.export_identity_key().unwrap();

    let laptop_store = IdentityStore::new(sealed(&laptop_path, &key), clock());
    let laptop = laptop_store.import(&exported, "alice laptop").unwrap();
    assert_eq!(laptop.user_id(), phone.user_id());
    assert_eq!(laptop.identity_public_key(), phone.identity_public_key());
    assert_ne!(laptop.device_id(), phone.device_id());
    assert_ne!(laptop.signature_public_key(), phone.signature_public_key());
    assert_ne!(laptop.credential_bytes(), phone.credential_bytes());

    // Peers see both devices as the same user, each bound to its own leaf key.
    let member = verify_member_as(
        laptop.credential_bytes(),
        &laptop.signature_public_key(),
        &phone.user_id(),
    )
    .unwrap();
    assert_eq!(member.device_id(), laptop.device_id());
    assert_eq!(member.display_name().as_str(), "alice laptop");
    assert!(matches!(
        verify_member(laptop.credential_bytes(), &phone.signature_public_key()),
        Err(IdentityError::SignatureKeyMismatch { .. })
    ));

    // Importing into a store that already holds an identity is refused.
    assert!(matches!(
        phone_store.import(&exported, "alice again"),
        Err(IdentityError::AlreadyInitialized { .. })
    ));

    // Safety numbers depend on users, not devices.
    let bob = IdentityStore::new(Arc::new(MemoryStore::new()), clock())
        .create_or_load("bob")
        .unwrap();
    assert_eq!(
        SafetyNumber::between(phone.identity_public_key(), bob.identity_public_key()),
        SafetyNumber::between(bob.identity_public_key(), laptop.identity_public_key())
    );
}

#[test]
fn second_device_survives_reopening_with_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let laptop_key = MasterKey::generate();
    let laptop_path = dir.path().join("laptop.redb");
    let phone = IdentityStore::new(Arc::new(MemoryStore::new()), clock());
    let phone_device = phone.create_or_load("alice").unwrap();

    let laptop = IdentityStore::new(sealed(&laptop_path, &laptop_key), clock())
        .import(&phone.export_identity_key().unwrap(), "alice laptop")
        .unwrap();
    let reopened = IdentityStore::new(sealed(&laptop_path, &laptop_key), clock())
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(reopened.user_id(), phone_device.user_id());
    assert_eq!(reopened.device_id(), laptop.device_id());
    assert_eq!(
        reopened.signature_public_key(),
        laptop.signature_public_key()
    );
    assert_eq!(
        *IdentityStore::new(sealed(&laptop_path, &laptop_key), clock())
            .export_identity_key()
            .unwrap(),
        *phone.export_identity_key().unwrap()
    );
}

#[test]
fn a_mistyped_export_is_refused_and_writes_nothing() {
    let phone = IdentityStore::new(Arc::new(MemoryStore::new()), clock());
    phone.create_or_load("alice").unwrap();
    let mut exported = phone.export_identity_key().unwrap().to_vec();
    exported[5] ^= 0x40;
    let laptop = IdentityStore::new(Arc::new(MemoryStore::new()), clock());
    assert!(matches!(
        laptop.import(&exported, "alice laptop"),
        Err(IdentityError::InvalidExport { .. })
    ));
    assert!(laptop.load().unwrap().is_none());
}
