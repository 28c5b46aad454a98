//! Addresses tell people apart; resolution never picks silently.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;

use core_identity::{
    Address, DeviceId, DeviceIdentity, Directory, DisplayName, ErrorKind, IdentityError,
    IdentityKeyPair, VerifiedMember,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use spacepanda_core::Timestamp;

fn member_of(identity: &IdentityKeyPair, name: &str) -> VerifiedMember {
    DeviceIdentity::create(
        identity,
        DeviceId::generate(),
        DisplayName::new(name).unwrap(),
        Timestamp::from_unix_secs(1),
    )
    .unwrap()
    .verify_self()
    .unwrap()
}

fn member(name: &str) -> (IdentityKeyPair, VerifiedMember) {
    let identity = IdentityKeyPair::generate();
    let member = member_of(&identity, name);
    (identity, member)
}

#[test]
fn two_johns_have_distinct_addresses_and_a_bare_name_is_ambiguous() {
    let (john_a, a) = member("john");
    let (john_b, b) = member("john");
    assert_ne!(a.address(), b.address());
    assert_eq!(
        a.address().to_string(),
        format!("john@{}", john_a.user_id().fingerprint())
    );

    let mut directory = Directory::new();
    directory.insert(a.clone());
    directory.insert(b.clone());

    let error = directory.resolve("john").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Resolution);
    let message = error.to_string();
    match error {
        IdentityError::AmbiguousAddress { query, candidates } => {
            assert_eq!(query, "john");
            assert_eq!(candidates.len(), 2);
            let listed: Vec<_> = candidates.iter().map(|c| c.user_id).collect();
            assert!(listed.contains(&john_a.user_id()));
            assert!(listed.contains(&john_b.user_id()));
            let addresses: Vec<Address> = candidates.into_iter().map(|c| c.address).collect();
            assert!(addresses.contains(&a.address()));
            assert!(addresses.contains(&b.address()));
        }
        other => panic!("expected AmbiguousAddress, got {other:?}"),
    }
    assert!(message.contains(&a.address().to_string()), "{message}");
    assert!(message.contains(&b.address().to_string()), "{message}");

    // The full addresses pick each one, in any case.
    assert_eq!(
        directory
            .resolve(&a.address().to_string())
            .unwrap()
            .user_id(),
        john_a.user_id()
    );
    assert_eq!(
        directory.resolve_address(&b.address()).unwrap().user_id(),
        john_b.user_id()
    );
    let shouted = format!(
        "JOHN@{}",
        john_a.user_id().fingerprint().to_string().to_uppercase()
    );
    assert_eq!(
        directory.resolve(&shouted).unwrap().user_id(),
        john_a.user_id()
    );
}

#[test]
fn unknown_addresses_list_close_candidates() {
    let (_, a) = member("john");
    let (_, b) = member("john");
    let (_, alice) = member("alice");
    let mut directory = Directory::new();
    for m in [&a, &b, &alice] {
        directory.insert(m.clone());
    }

    // Right name, unknown fingerprint: both johns offered, never one picked.
    let fingerprint = if a.user_id().fingerprint().to_string() == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    match directory
        .resolve(&format!("john@{fingerprint}"))
        .unwrap_err()
    {
        IdentityError::UnknownAddress { candidates, .. } => {
            let mut found: Vec<Address> = candidates.into_iter().map(|c| c.address).collect();
            found.sort();
            let mut expected = vec![a.address(), b.address()];
            expected.sort();
            assert_eq!(found, expected);
        }
        other => panic!("expected UnknownAddress, got {other:?}"),
    }

    // Right fingerprint, wrong name: that user offered.
    match directory
        .resolve(&format!("johnny@{}", alice.user_id().fingerprint()))
        .unwrap_err()
    {
        IdentityError::UnknownAddress { candidates, .. } => {
            assert_eq!(candidates.len(), 1);
            assert_eq!(candidates[0].user_id, alice.user_id());
        }
        other => panic!("expected UnknownAddress, got {other:?}"),
    }

    // Nothing similar at all.
    assert!(matches!(
        directory.resolve("zed"),
        Err(IdentityError::UnknownAddress { candidates, .. }) if candidates.is_empty()
    ));
    // A bare-name prefix is offered, not chosen.
    assert!(matches!(
        directory.resolve("ali"),
        Err(IdentityError::UnknownAddress { candidates, .. }) if candidates.len() == 1
    ));
    // Garbage is a typing error, not a lookup.
    assert!(matches!(
        directory.resolve("john@xyz"),
        Err(IdentityError::InvalidAddress { .. })
    ));
}

#[test]
fn one_user_with_two_devices_is_one_match() {
    let identity = IdentityKeyPair::generate();
    let phone = member_of(&identity, "alice");
    let laptop = member_of(&identity, "Alice");
    let mut directory = Directory::new();
    directory.insert(phone.clone());
    directory.insert(laptop.clone());
    directory.insert(member("bob").1);

    let found = directory.resolve("alice").unwrap();
    assert_eq!(found.user_id(), identity.user_id());
    assert_eq!(found.devices().len(), 2);
    assert_eq!(found.addresses().len(), 2);
    assert_eq!(found.identity_public_key(), Some(&identity.public_key()));
    assert_eq!(
        directory
            .resolve_user_id(&identity.user_id())
            .unwrap()
            .devices()
            .len(),
        2
    );

    assert!(
        directory
            .remove_device(&identity.user_id(), &laptop.device_id())
            .is_some()
    );
    assert_eq!(directory.resolve("alice").unwrap().devices().len(), 1);
    assert_eq!(directory.remove_user(&identity.user_id()), 1);
    assert!(matches!(
        directory.resolve("alice"),
        Err(IdentityError::UnknownAddress { .. })
    ));
    assert_eq!(directory.len(), 1);
}

#[test]
fn colliding_fingerprints_stay_ambiguous_even_with_the_full_address() {
    // Birthday search for two identity keys whose user ids share the 32-bit fingerprint
    // (about 2^16 keys); a fixed seed keeps it deterministic.
    let mut rng = StdRng::seed_from_u64(7);
    let mut seen = HashMap::new();
    let (first, second) = loop {
        let key = IdentityKeyPair::generate_with(&mut rng);
        let fingerprint = key.user_id().fingerprint();
        if let Some(previous) = seen.insert(fingerprint, key.clone()) {
            break (previous, key);
        }
        assert!(seen.len() < 2_000_000, "no collision found");
    };
    assert_ne!(first.user_id(), second.user_id());
    let a = member_of(&first, "john");
    let b = member_of(&second, "john");
    assert_eq!(a.address(), b.address());

    let mut directory = Directory::new();
    directory.insert(a.clone());
    directory.insert(b.clone());
    match directory.resolve(&a.address().to_string()).unwrap_err() {
        IdentityError::AmbiguousAddress { candidates, .. } => {
            let ids: Vec<_> = candidates.iter().map(|c| c.user_id).collect();
            assert!(ids.contains(&first.user_id()) && ids.contains(&second.user_id()));
        }
        other => panic!("expected AmbiguousAddress, got {other:?}"),
    }
    // The full user id settles it.
    assert_eq!(
        directory
            .resolve_user_id(&second.user_id())
            .unwrap()
            .user_id(),
        second.user_id()
    );
}
