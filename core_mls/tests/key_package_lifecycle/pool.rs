//! The pool: filled to its target with one last-resort package, replenished as Welcomes use
//! packages, published and claimed states, rotation.

use super::*;

#[test]
fn pool_fills_to_target_with_one_last_resort_package() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let device = ClockedDevice::in_memory(&clock, "alice", &mut rng);

    let status = device.client_ref().key_package_status().unwrap();
    assert_eq!(status.fresh, TARGET);
    assert_eq!(
        (status.published, status.claimed, status.consumed),
        (0, 0, 0)
    );
    assert_eq!(status.last_resort_age, Some(Duration::ZERO));
    assert!(!status.needs_replenish);
    let expected_expiry = device.now().saturating_add(LIFETIME);
    assert_eq!(
        status.next_expiry.map(Timestamp::unix_secs),
        Some(expected_expiry.unix_secs())
    );

    let publishable = device.publishable();
    assert_eq!(publishable.len(), TARGET + 1);
    assert_eq!(publishable.iter().filter(|p| p.last_resort).count(), 1);
    assert_eq!(refs(&publishable).len(), TARGET + 1, "refs are distinct");
    // Every offered package has its private bundle in the store, and nothing else is there.
    assert_eq!(device.private_bundles(), refs(&publishable));

    // Opening again (same store) does not make more.
    let mut device = device;
    assert_eq!(device.client().replenish_key_packages().unwrap(), 0);
    assert_eq!(device.publishable().len(), TARGET + 1);
}

#[test]
fn consuming_25_packages_with_welcomes_triggers_replenish() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let used: Vec<_> = invitee.single_use().into_iter().take(25).collect();
    assert_eq!(used.len(), 25);

    for (index, package) in used.iter().enumerate() {
        let (group, welcome) = invite(&mut adder, &package.key_package);
        invitee.join(&welcome, &group, &adder);
        if index == 23 {
            // 24 consumed, 8 offered: at the watermark, not below it.
            let status = invitee.client_ref().key_package_status().unwrap();
            assert_eq!((status.fresh, status.consumed), (8, 24));
            assert!(!status.needs_replenish);
            assert_eq!(invitee.client().replenish_key_packages().unwrap(), 0);
        }
    }
    assert_eq!(invitee.client_ref().groups().len(), 25);
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!((status.fresh, status.consumed), (7, 25));
    assert!(status.needs_replenish);

    let output = invitee.tick();
    assert_eq!(replenished(&output), Some(25));
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!(status.fresh, TARGET);
    assert!(!status.needs_replenish);
    let publishable = invitee.publishable();
    assert_eq!(publishable.len(), TARGET + 1);
    assert!(refs(&publishable).is_disjoint(&refs(&used)));
    // A second tick has nothing to do.
    assert_eq!(replenished(&invitee.tick()), None);
    assert_eq!(invitee.client().replenish_key_packages().unwrap(), 0);
}

#[test]
fn mark_published_and_claimed_show_in_status_and_rotation_retires() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut device = ClockedDevice::in_memory(&clock, "alice", &mut rng);
    let first = device.single_use();
    let published: Vec<_> = first[..10]
        .iter()
        .map(|p| p.key_package_ref.clone())
        .collect();
    assert_eq!(
        device
            .client()
            .mark_key_packages_published(&published)
            .unwrap(),
        10
    );
    // Publishing again changes nothing.
    assert_eq!(
        device
            .client()
            .mark_key_packages_published(&published)
            .unwrap(),
        0
    );
    let status = device.client_ref().key_package_status().unwrap();
    assert_eq!((status.fresh, status.published), (22, 10));

    // Claim one published and one fresh package.
    let claimed = [
        first[0].key_package_ref.clone(),
        first[20].key_package_ref.clone(),
    ];
    for key_package_ref in &claimed {
        assert!(
            device
                .client()
                .mark_key_package_claimed(key_package_ref)
                .unwrap()
        );
        assert!(
            !device
                .client()
                .mark_key_package_claimed(key_package_ref)
                .unwrap(),
            "claiming twice is not a change"
        );
    }
    let status = device.client_ref().key_package_status().unwrap();
    assert_eq!((status.fresh, status.published, status.claimed), (21, 9, 2));
    let publishable = refs(&device.publishable());
    assert_eq!(publishable.len(), TARGET + 1 - 2);
    for key_package_ref in &claimed {
        assert!(!publishable.contains(key_package_ref));
    }
    // A claimed package cannot be published again.
    assert_eq!(
        device
            .client()
            .mark_key_packages_published(&claimed[..1])
            .unwrap(),
        0
    );
    assert!(matches!(
        device.client().mark_key_package_claimed(&[7; 32]),
        Err(MlsError::UnknownKeyPackage { .. })
    ));

    // Rotation: a day before rotate_after nothing happens; at rotate_after everything offered is
    // retired (keys kept) and a new pool made.
    clock.advance(ROTATE_AFTER - DAY);
    assert_eq!(replenished(&device.tick()), None);
    assert_eq!(device.client_ref().key_package_status().unwrap().retired, 0);
    let old_last_resort = device.last_resort();

    clock.advance(DAY);
    let output = device.tick();
    assert_eq!(replenished(&output), Some(TARGET));
    let status = device.client_ref().key_package_status().unwrap();
    assert_eq!(status.retired, 30, "21 fresh + 9 published retired");
    assert_eq!(status.claimed, 2, "claimed packages are not retired");
    assert_eq!((status.fresh, status.published), (TARGET, 0));
    assert_eq!(status.last_resort_age, Some(Duration::ZERO));
    let rotated = device.publishable();
    assert_eq!(rotated.len(), TARGET + 1);
    assert!(refs(&rotated).is_disjoint(&refs(&first)));
    assert_ne!(
        device.last_resort().key_package_ref,
        old_last_resort.key_package_ref
    );
    // Retired packages keep their private keys for Welcomes in flight.
    for package in &first {
        assert!(device.has_private_bundle(&package.key_package_ref));
    }
    assert!(device.has_private_bundle(&old_last_resort.key_package_ref));
}
