//! Welcomes against the ledger: restarts, older batches, expiry and pruning, the last-resort
//! package reused, double spends, unknown packages, the fork window, a failed Welcome.

use super::*;

#[test]
fn restart_keeps_ledger_and_private_keys() {
    let mut rng = seeded::rng(SEED);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);

    let (before, used, user_id, group, welcome) = {
        let mut invitee =
            ClockedDevice::create(&Storage::files_in(dir.path()), &clock, "invitee", &mut rng);
        let before = invitee.publishable();
        let all_refs: Vec<_> = before.iter().map(|p| p.key_package_ref.clone()).collect();
        assert_eq!(
            invitee
                .client()
                .mark_key_packages_published(&all_refs)
                .unwrap(),
            TARGET + 1
        );
        // The adder fetched one; the Welcome is made while the invitee is still running.
        let used = invitee.single_use().remove(3);
        let (group, welcome) = invite(&mut adder, &used.key_package);
        (
            before,
            used,
            invitee.client_ref().device().user_id(),
            group,
            welcome,
        )
    };

    clock.advance(MINUTE);
    let mut invitee = ClockedDevice::reopen_redb(dir.path(), "invitee", &clock, &mut rng);
    assert_eq!(invitee.client_ref().device().user_id(), user_id);
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!(
        (status.fresh, status.published),
        (0, TARGET),
        "the ledger survives"
    );
    assert_eq!(
        refs(&invitee.publishable()),
        refs(&before),
        "no new packages"
    );
    assert_eq!(
        invitee.private_bundles(),
        refs(&before),
        "private keys survive"
    );

    invitee.join(&welcome, &group, &adder);
    // Kept for the fork window (a re-add on a winning branch reuses it), then deleted.
    assert!(invitee.has_private_bundle(&used.key_package_ref));
    clock.advance(FORK_WINDOW);
    invitee.tick();
    assert!(!invitee.has_private_bundle(&used.key_package_ref));
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!((status.published, status.consumed), (TARGET - 1, 1));

    // And the consumption itself survives the next restart.
    drop(invitee);
    let mut invitee = ClockedDevice::reopen_redb(dir.path(), "invitee", &clock, &mut rng);
    assert_eq!(invitee.client_ref().groups(), vec![group.clone()]);
    assert_eq!(
        invitee.client_ref().key_package_status().unwrap().consumed,
        1
    );
    let (group2, welcome2) = invite(&mut adder, &used.key_package);
    assert_no_matching(
        invitee.receive(&welcome2),
        UnknownKeyPackageHint::AlreadyConsumed,
    );
    assert!(!invitee.client_ref().groups().contains(&group2));
}

#[test]
fn welcome_for_a_package_from_an_older_batch_still_joins() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let old = invitee.single_use();
    // A Welcome made before the rotation, and a package the adder fetched before it.
    let (group_a, welcome_a) = invite(&mut adder, &old[0].key_package);
    let fetched_early = old[1].clone();

    clock.advance(ROTATE_AFTER + MINUTE);
    assert_eq!(replenished(&invitee.tick()), Some(TARGET));
    let newer = invitee.publishable();
    assert!(!refs(&newer).contains(&fetched_early.key_package_ref));
    assert_eq!(
        invitee.client_ref().key_package_status().unwrap().retired,
        TARGET
    );

    invitee.join(&welcome_a, &group_a, &adder);
    let (group_b, welcome_b) = invite(&mut adder, &fetched_early.key_package);
    invitee.join(&welcome_b, &group_b, &adder);
    // The newer batch is untouched.
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!(
        (status.fresh, status.retired, status.consumed),
        (TARGET, TARGET - 2, 2)
    );
    assert_eq!(refs(&invitee.publishable()), refs(&newer));
}

#[test]
fn expiry_prunes_private_keys_after_the_grace_period() {
    let mut rng = seeded::rng(SEED);
    let adder_clock = ManualClock::starting_now();
    let clock = ManualClock::new(adder_clock.now());
    let mut adder = ClockedDevice::in_memory(&adder_clock, "adder", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let old = invitee.single_use();
    let old_last_resort = invitee.last_resort();
    let (group_in_grace, welcome_in_grace) = invite(&mut adder, &old[0].key_package);
    let (group_late, welcome_late) = invite(&mut adder, &old[1].key_package);

    // Past the lifetime but within the grace period: expired, keys kept.
    clock.advance(LIFETIME + MINUTE);
    invitee.tick();
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!(status.expired, TARGET);
    assert_eq!(status.fresh, TARGET, "a new pool was made");
    assert!(
        old.iter()
            .all(|p| invitee.has_private_bundle(&p.key_package_ref))
    );
    invitee.join(&welcome_in_grace, &group_in_grace, &adder);

    // Past lifetime + grace: private keys deleted from the store, tombstones kept.
    clock.advance(GRACE);
    invitee.tick();
    for package in &old {
        assert!(
            !invitee.has_private_bundle(&package.key_package_ref),
            "bundle of an expired package is still in the store"
        );
        assert!(invitee.has_ledger_record(&package.key_package_ref));
    }
    assert!(!invitee.has_private_bundle(&old_last_resort.key_package_ref));
    // What is left in the store is exactly the new pool.
    assert_eq!(invitee.private_bundles(), refs(&invitee.publishable()));
    assert_eq!(invitee.private_bundles().len(), TARGET + 1);
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!((status.expired, status.retired), (0, 0));

    assert_no_matching(
        invitee.receive(&welcome_late),
        UnknownKeyPackageHint::ExpiredAndPruned,
    );
    assert!(!invitee.client_ref().groups().contains(&group_late));

    // After the tombstone retention the record is compacted away: "never ours".
    clock.advance(90 * DAY);
    invitee.tick();
    assert!(!invitee.has_ledger_record(&old[1].key_package_ref));
    assert_no_matching(
        invitee.receive(&welcome_late),
        UnknownKeyPackageHint::NeverOurs,
    );
}

#[test]
fn last_resort_package_is_reused_twice_and_then_rotated() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let last_resort = invitee.last_resort();
    let (group_a, welcome_a) = invite(&mut adder, &last_resort.key_package);
    let (group_b, welcome_b) = invite(&mut adder, &last_resort.key_package);

    clock.advance(MINUTE);
    invitee.join(&welcome_a, &group_a, &adder);
    // Multi-use: the private keys stay; a new last-resort package is offered instead.
    assert!(invitee.has_private_bundle(&last_resort.key_package_ref));
    let replacement = invitee.last_resort();
    assert_ne!(replacement.key_package_ref, last_resort.key_package_ref);
    assert_eq!(
        invitee
            .client_ref()
            .key_package_status()
            .unwrap()
            .last_resort_age,
        Some(Duration::ZERO)
    );
    assert_eq!(invitee.single_use().len(), TARGET, "the pool is untouched");

    clock.advance(MINUTE);
    invitee.join(&welcome_b, &group_b, &adder);
    assert!(invitee.has_private_bundle(&last_resort.key_package_ref));
    // The second use does not make yet another one: the replacement is still the offer.
    assert_eq!(invitee.last_resort(), replacement);
    assert_eq!(
        invitee
            .client_ref()
            .key_package_status()
            .unwrap()
            .last_resort_age,
        Some(MINUTE)
    );
    assert_eq!(invitee.private_bundles().len(), TARGET + 2);

    // After its lifetime and grace the used one's keys are pruned; a Welcome for it then is
    // told it expired (it was multi-use, so it is not a double spend).
    let (group_c, welcome_c) = invite(&mut adder, &last_resort.key_package);
    clock.advance(LIFETIME + GRACE);
    invitee.tick();
    assert!(!invitee.has_private_bundle(&last_resort.key_package_ref));
    assert_no_matching(
        invitee.receive(&welcome_c),
        UnknownKeyPackageHint::ExpiredAndPruned,
    );
    assert!(!invitee.client_ref().groups().contains(&group_c));
}

#[test]
fn second_welcome_for_a_consumed_package_is_a_double_spend() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let package = invitee.single_use().remove(0);
    let (group_a, welcome_a) = invite(&mut adder, &package.key_package);
    let (group_b, welcome_b) = invite(&mut adder, &package.key_package);

    invitee.join(&welcome_a, &group_a, &adder);
    // The same bytes again are a duplicate, caught before the key package is looked at.
    let again = invitee.receive(&welcome_a).unwrap();
    assert_eq!(again.disposition, Disposition::Duplicate);
    assert!(again.events.is_empty());

    // A different Welcome naming the same single-use package is a double spend.
    assert_no_matching(
        invitee.receive(&welcome_b),
        UnknownKeyPackageHint::AlreadyConsumed,
    );
    assert_eq!(invitee.client_ref().groups(), vec![group_a.clone()]);
    assert!(!invitee.client_ref().groups().contains(&group_b));

    // Still reported as such after pruning turned the record into a tombstone.
    clock.advance(MINUTE);
    invitee.tick();
    let (_, welcome_c) = invite(&mut adder, &package.key_package);
    assert_no_matching(
        invitee.receive(&welcome_c),
        UnknownKeyPackageHint::AlreadyConsumed,
    );
    assert_eq!(
        invitee.client_ref().key_package_status().unwrap().consumed,
        1
    );
}

#[test]
fn welcome_for_a_package_never_made_here_says_so() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let other = ClockedDevice::in_memory(&clock, "other", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let (_, welcome) = invite(&mut adder, &other.single_use()[0].key_package);
    assert_no_matching(invitee.receive(&welcome), UnknownKeyPackageHint::NeverOurs);
    assert_eq!(
        invitee.client_ref().key_package_status().unwrap().fresh,
        TARGET
    );
}

#[test]
fn consumed_single_use_package_keeps_its_private_keys_for_the_fork_window_only() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let packages = invitee.single_use();
    let used = &packages[5];
    assert!(invitee.has_private_bundle(&used.key_package_ref));
    let (group, welcome) = invite(&mut adder, &used.key_package);

    invitee.join(&welcome, &group, &adder);
    // Kept while the commit that added us could still lose to a concurrent one (then a member
    // re-adds us on the winning branch with this same package) ...
    assert!(invitee.has_private_bundle(&used.key_package_ref));
    clock.advance(FORK_WINDOW - MINUTE);
    invitee.tick();
    assert!(invitee.has_private_bundle(&used.key_package_ref));
    // ... and gone once the fork window has passed.
    clock.advance(MINUTE);
    invitee.tick();
    assert!(!invitee.has_private_bundle(&used.key_package_ref));
    let mut expected = refs(&invitee.publishable());
    expected.remove(&used.key_package_ref);
    assert_eq!(invitee.private_bundles(), expected);
    assert_eq!(
        invitee.private_bundles().len(),
        TARGET,
        "only that one is gone"
    );
    // The ledger keeps a record so a second Welcome is recognised.
    assert!(invitee.has_ledger_record(&used.key_package_ref));
    assert_eq!(
        invitee.client_ref().key_package_status().unwrap().consumed,
        1
    );
}

#[test]
fn failed_welcome_leaves_the_key_package_usable() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let mut invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let package = invitee.single_use().remove(0);
    let (group, welcome) = invite(&mut adder, &package.key_package);
    let genuine = Envelope::from_bytes(&welcome, usize::MAX).unwrap();
    let payload = genuine.payload().to_vec();

    // The last bytes are the encrypted GroupInfo: the message still decodes, the group
    // secrets still decrypt with our key package, but the GroupInfo does not.
    let mut corrupted = payload.clone();
    *corrupted.last_mut().unwrap() ^= 0x01;
    let result = invitee.receive(&Envelope::new(EnvelopeKind::Welcome, corrupted).to_bytes());
    assert!(
        matches!(result, Err(MlsError::InvalidWelcome { .. })),
        "{result:?}"
    );
    // Nothing was burnt: ledger and private keys as before.
    assert!(invitee.has_private_bundle(&package.key_package_ref));
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!((status.fresh, status.consumed), (TARGET, 0));
    assert!(invitee.client_ref().groups().is_empty());

    // Bytes that do not decode at all.
    let mut truncated = payload.clone();
    truncated.truncate(payload.len() / 2);
    assert!(
        invitee
            .receive(&Envelope::new(EnvelopeKind::Welcome, truncated).to_bytes())
            .is_err()
    );
    assert!(invitee.has_private_bundle(&package.key_package_ref));

    invitee.join(&welcome, &group, &adder);
    let status = invitee.client_ref().key_package_status().unwrap();
    assert_eq!((status.fresh, status.consumed), (TARGET - 1, 1));
}
