//! One operation, one transaction: an operation OpenMLS rejects leaves storage byte-for-byte
//! unchanged (including a key package OpenMLS deleted before rejecting a Welcome), the group in
//! memory is reloaded, and the next valid operation succeeds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{CS, Member, assert_agree, parse};
use core_mls::MlsError;
use openmls::prelude::*;
use openmls_traits::storage::StorageProvider as _;

const GROUP: &[u8] = b"atomic-group";

#[test]
fn rejected_messages_leave_storage_unchanged() {
    let (alice, _) = Member::on_memory("alice");
    let (bob, bob_store) = Member::on_memory("bob");
    let (eve, _) = Member::on_memory("eve");

    let mut a = alice.create_group(GROUP);
    let (_, welcome) = alice.add(&mut a, &[bob.key_package()]);
    let mut b = bob.join(&welcome).unwrap();

    // A non-member's commit for a group with the same id (eve's own group).
    let mut e = eve.create_group(GROUP);
    let (eve_commit, _) = eve.add(&mut e, &[Member::on_memory("x").0.key_package()]);
    // A commit for another group entirely.
    let mut other = eve.create_group(b"other-group");
    let other_commit = eve.self_update(&mut other);
    // A replayed application message.
    let m = alice.send(&mut a, b"once");
    assert_eq!(
        bob.receive(&mut b, &m).unwrap().as_deref(),
        Some(&b"once"[..])
    );

    for (what, message) in [
        ("non-member commit", &eve_commit),
        ("wrong-group commit", &other_commit),
        ("replayed application message", &m),
    ] {
        let before = bob_store.dump().unwrap();
        let epoch = b.epoch();
        let err = bob.receive(&mut b, message).unwrap_err();
        assert!(matches!(err, MlsError::OpenMls { .. }), "{what}: {err:?}");
        assert_eq!(bob_store.dump().unwrap(), before, "{what}: storage changed");
        assert_eq!(b.epoch(), epoch, "{what}");
    }

    // The group (reloaded after each rollback) carries on.
    let commit = alice.self_update(&mut a);
    bob.receive(&mut b, &commit).unwrap();
    assert_agree(&[&a, &b]);
    let m = bob.send(&mut b, b"still here");
    assert_eq!(
        alice.receive(&mut a, &m).unwrap().as_deref(),
        Some(&b"still here"[..])
    );
}

#[test]
fn corrupted_welcome_does_not_burn_the_key_package() {
    let (alice, _) = Member::on_memory("alice");
    let (carol, carol_store) = Member::on_memory("carol");

    let key_package = carol.key_package();
    let hash_ref = key_package.hash_ref(carol.provider.crypto()).unwrap();
    let mut a = alice.create_group(GROUP);
    let (_, welcome) = alice.add(&mut a, &[key_package]);

    // The Welcome's last field is the encrypted GroupInfo: flip its last byte (the AEAD tag),
    // so OpenMLS finds and deletes the key package, then fails on the GroupInfo.
    let mut corrupted = welcome.clone();
    *corrupted.last_mut().unwrap() ^= 0x01;

    let before = carol_store.dump().unwrap();
    // Show that OpenMLS really deletes the key package inside the failing operation…
    let welcome_in = match parse(&corrupted).unwrap().extract() {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => unreachable!(),
    };
    let result: Result<(), MlsError> = carol.provider.transaction(|p| {
        let err = StagedWelcome::new_from_welcome(p, &common::join_config(), welcome_in, None)
            .expect_err("the corrupted Welcome is rejected");
        let stored: Option<KeyPackageBundle> = p.storage().key_package(&hash_ref)?;
        assert!(
            stored.is_none(),
            "OpenMLS deleted the key package before failing"
        );
        Err(MlsError::openmls("join", err))
    });
    assert!(result.is_err());
    // …and that the rollback undid it.
    assert_eq!(carol_store.dump().unwrap(), before, "storage changed");
    let stored: Option<KeyPackageBundle> = carol.provider.storage().key_package(&hash_ref).unwrap();
    assert!(stored.is_some(), "key package still there");

    // The same through the ordinary join path.
    assert!(carol.join(&corrupted).is_err());
    assert_eq!(carol_store.dump().unwrap(), before);

    // The genuine Welcome still joins.
    let c = carol.join(&welcome).unwrap();
    assert_agree(&[&a, &c]);
    let stored: Option<KeyPackageBundle> = carol.provider.storage().key_package(&hash_ref).unwrap();
    assert!(stored.is_none(), "consumed by the successful join");
}

#[test]
fn writes_outside_a_transaction_are_refused() {
    let (alice, store) = Member::on_memory("alice");
    let mut a = alice.create_group(GROUP);
    let before = store.dump().unwrap();
    // OpenMLS reports this one as a LibraryError (it wraps the storage error); what matters is
    // that it fails and nothing reaches the store.
    assert!(
        a.create_message(&alice.provider, &alice.signer, b"no transaction")
            .is_err()
    );
    assert_eq!(store.dump().unwrap(), before);
    let err = KeyPackage::builder()
        .build(CS, &alice.provider, &alice.signer, alice.credential.clone())
        .unwrap_err();
    assert!(matches!(err, KeyPackageNewError::StorageError), "{err:?}");
    assert_eq!(store.dump().unwrap(), before);
}

#[test]
fn a_panicking_operation_rolls_back() {
    let (alice, store) = Member::on_memory("alice");
    let before = store.dump().unwrap();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        let _: Result<(), MlsError> = alice.provider.transaction(|p| {
            KeyPackage::builder()
                .build(CS, p, &alice.signer, alice.credential.clone())
                .unwrap();
            panic!("operation panics after writing");
        });
    }));
    assert!(panicked.is_err());
    assert!(!alice.provider.storage().in_transaction());
    assert_eq!(store.dump().unwrap(), before);
    // The provider is usable afterwards.
    alice.key_package();
    assert_ne!(store.dump().unwrap(), before);
}

#[test]
fn transactions_do_not_nest() {
    let (alice, store) = Member::on_memory("alice");
    let before = store.dump().unwrap();
    let result = alice.provider.transaction(|p| {
        KeyPackage::builder()
            .build(CS, p, &alice.signer, alice.credential.clone())
            .map_err(|e| MlsError::openmls("build", e))?;
        let inner = p.transaction(|_| Ok(()));
        assert!(matches!(inner, Err(MlsError::TransactionAlreadyOpen)));
        // The outer transaction is still open and still holds its write.
        assert!(p.storage().in_transaction());
        let touched = p.storage().touched_keys();
        assert_eq!(touched.len(), 1, "{touched:?}");
        assert_eq!(touched[0].0, "mls_key_package");
        Ok(())
    });
    result.unwrap();
    assert_ne!(store.dump().unwrap(), before);
}
