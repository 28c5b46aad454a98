//! Key package lifecycle (shared/design/KEY_PACKAGES.md), through the public `MlsClient` API
//! with real Welcomes from a second client, a `ManualClock` (no sleeps), and raw checks of the
//! store where the claim is about what is on disk (private keys present or gone). The devices
//! are the test kit's, their identities and engines seeded. The clocks start from the real
//! "now", not the kit's start of the week: OpenMLS checks lifetimes against the system clock,
//! and some checks here say where a device's clock stands against it (a package expired by the
//! adder's clock while the system clock still says valid).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use core_mls::{
    CIPHERSUITE, Disposition, Envelope, EnvelopeKind, Event, GroupId, MlsConfig, MlsError,
    PublishableKeyPackage, UnknownKeyPackageHint,
};
use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage, MlsMessageOut};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand::rngs::StdRng;
use spacepanda_core::{Clock, Key, KeyValueStore, ManualClock, Timestamp};
use spacepanda_testkit::{Device, Storage, seeded};
use tls_codec::Serialize as _;

// On-disk namespace names (docs/ARCHITECTURE.md, "Key layout"): stable across builds, so the
// raw checks below name them as any reader of the store would.
/// OpenMLS's key package bundles with their private init keys, keyed by key package ref.
const KEY_PACKAGE_NAMESPACE: &str = "mls_key_package";
/// The engine's key package ledger, one record per key package ref.
const LEDGER_NAMESPACE: &str = "kp_ledger";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MINUTE: Duration = Duration::from_secs(60);
/// `MlsConfig::fork_window` default: how long a consumed package keeps its private keys.
const FORK_WINDOW: Duration = DAY;
/// Default pool policy, spelled out so the tests read as the design document does.
const TARGET: usize = 32;
const LIFETIME: Duration = Duration::from_secs(14 * 24 * 60 * 60);
const ROTATE_AFTER: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const GRACE: Duration = DAY;

// ---- fixtures --------------------------------------------------------------------------------

/// Every test draws its devices' identities and engine seeds from this seed, in the order it
/// creates them.
const SEED: u64 = 0x4B50_11FE;

/// One of the kit's devices, on a MemoryStore unless a test says otherwise, with the clock it
/// reads: tests give devices different clocks (an adder ahead of the invitee, a device a month
/// behind), so each device keeps its own.
struct ClockedDevice {
    device: Device,
    clock: ManualClock,
}

impl Deref for ClockedDevice {
    type Target = Device;

    fn deref(&self) -> &Device {
        &self.device
    }
}

impl DerefMut for ClockedDevice {
    fn deref_mut(&mut self) -> &mut Device {
        &mut self.device
    }
}

impl ClockedDevice {
    /// A new user and device on `storage`, reading time from `clock`.
    fn create(storage: &Storage, clock: &ManualClock, name: &str, rng: &mut StdRng) -> Self {
        let device = Device::create(name, storage, None, clock, &MlsConfig::default(), rng);
        Self {
            device,
            clock: clock.clone(),
        }
    }

    /// A device on a fresh MemoryStore.
    fn in_memory(clock: &ManualClock, name: &str, rng: &mut StdRng) -> Self {
        Self::create(&Storage::Memory, clock, name, rng)
    }

    /// Reopens the device `name` stored in `dir` (the previous one must be dropped first, so
    /// that the file is read again as after a restart).
    fn reopen_redb(dir: &Path, name: &str, clock: &ManualClock, rng: &mut StdRng) -> Self {
        let device = Device::open_existing(name, dir, clock, &MlsConfig::default(), rng);
        Self {
            device,
            clock: clock.clone(),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn tick(&mut self) -> core_mls::Output {
        let now = self.now();
        self.client().tick(now).unwrap()
    }

    fn publishable(&self) -> Vec<PublishableKeyPackage> {
        self.client_ref().publishable_key_packages().unwrap()
    }

    /// The offered single-use packages, in ledger order.
    fn single_use(&self) -> Vec<PublishableKeyPackage> {
        self.publishable()
            .into_iter()
            .filter(|p| !p.last_resort)
            .collect()
    }

    fn last_resort(&self) -> PublishableKeyPackage {
        let mut last_resort: Vec<_> = self
            .publishable()
            .into_iter()
            .filter(|p| p.last_resort)
            .collect();
        assert_eq!(last_resort.len(), 1, "exactly one last-resort package");
        last_resort.pop().unwrap()
    }

    /// Whether the OpenMLS key package bundle (with its private init key) for `key_package_ref`
    /// is in the store — read with the raw store API, not through the engine.
    fn has_private_bundle(&self, key_package_ref: &[u8]) -> bool {
        self.store
            .get(KEY_PACKAGE_NAMESPACE, &Key::from_segment(key_package_ref))
            .unwrap()
            .is_some()
    }

    /// Every bundle OpenMLS holds, by ref (raw store scan).
    fn private_bundles(&self) -> BTreeSet<Vec<u8>> {
        self.store
            .scan_prefix(KEY_PACKAGE_NAMESPACE, &Key::empty())
            .unwrap()
            .into_iter()
            .map(|(key, _)| key.segments().next().unwrap().to_vec())
            .collect()
    }

    /// Whether the ledger still has a record (possibly a tombstone) for `key_package_ref`.
    fn has_ledger_record(&self, key_package_ref: &[u8]) -> bool {
        self.store
            .get(LEDGER_NAMESPACE, &Key::from_segment(key_package_ref))
            .unwrap()
            .is_some()
    }

    /// Delivers an envelope, as the network layer would.
    fn receive(&mut self, envelope: &[u8]) -> Result<core_mls::Output, MlsError> {
        self.client().handle_envelope(envelope)
    }

    /// Delivers a Welcome and checks that it joined `group` with the same epoch secrets as
    /// `adder`.
    fn join(&mut self, welcome: &[u8], group: &GroupId, adder: &ClockedDevice) {
        let output = self.receive(welcome).unwrap();
        assert_eq!(output.disposition, Disposition::Processed);
        assert!(
            output
                .events
                .iter()
                .any(|e| matches!(e, Event::Joined { group: g, .. } if g == group)),
            "no Joined event: {:?}",
            output.events
        );
        assert_eq!(
            self.client_ref().epoch_authenticator(group).unwrap(),
            adder.client_ref().epoch_authenticator(group).unwrap(),
            "joiner and adder disagree on the epoch"
        );
    }
}

/// The adder creates a new group and adds the device whose key package is `key_package`;
/// returns the group and the Welcome envelope's wire bytes.
fn invite(adder: &mut ClockedDevice, key_package: &[u8]) -> (GroupId, Vec<u8>) {
    let group = adder.client().create_group().unwrap();
    let output = adder
        .client()
        .add_members(&group, &[key_package.to_vec()])
        .unwrap();
    let welcome = output
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == EnvelopeKind::Welcome)
        .expect("add_members produces a Welcome");
    (group, welcome.envelope.to_bytes())
}

fn refs(packages: &[PublishableKeyPackage]) -> BTreeSet<Vec<u8>> {
    packages.iter().map(|p| p.key_package_ref.clone()).collect()
}

fn replenished(output: &core_mls::Output) -> Option<usize> {
    output.events.iter().find_map(|e| match e {
        Event::KeyPackagesReplenished { created } => Some(*created),
        _ => None,
    })
}

fn assert_no_matching(result: Result<core_mls::Output, MlsError>, expected: UnknownKeyPackageHint) {
    match result {
        Err(MlsError::NoMatchingKeyPackage { hint, .. }) => assert_eq!(hint, expected),
        other => panic!("expected NoMatchingKeyPackage({expected:?}), got {other:?}"),
    }
}

// ---- the pool ----------------------------------------------------------------------------------

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

// ---- Welcomes ------------------------------------------------------------------------------------

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

// ---- validation of others' key packages --------------------------------------------------------

#[test]
fn expired_and_not_yet_valid_key_packages_are_refused() {
    let mut rng = seeded::rng(SEED);
    let adder_clock = ManualClock::starting_now();
    let start = adder_clock.now();
    let mut adder = ClockedDevice::in_memory(&adder_clock, "adder", &mut rng);
    let invitee = ClockedDevice::in_memory(&ManualClock::new(start), "invitee", &mut rng);
    let package = invitee.single_use().remove(0);
    let group = adder.client().create_group().unwrap();

    // Expired by the adder's clock (the system clock still says valid).
    adder_clock.advance(LIFETIME + MINUTE);
    let result = adder
        .client()
        .add_members(&group, std::slice::from_ref(&package.key_package));
    match result {
        Err(MlsError::KeyPackageExpired { not_after, now }) => {
            assert_eq!(not_after, package.not_after);
            assert_eq!(now, adder_clock.now());
        }
        other => panic!("expected KeyPackageExpired, got {other:?}"),
    }
    assert_eq!(
        adder.client_ref().epoch(&group).unwrap(),
        0,
        "group unchanged"
    );

    // Not yet valid by the adder's clock (packages start an hour before they were made).
    adder_clock.set(start.saturating_sub(2 * 60 * MINUTE));
    assert!(matches!(
        adder
            .client()
            .add_members(&group, std::slice::from_ref(&package.key_package)),
        Err(MlsError::KeyPackageNotYetValid { .. })
    ));

    // Expired by both clocks: made by a device whose clock is a month behind. Still the typed
    // error, not a generic validation failure.
    adder_clock.set(start);
    let stale = ClockedDevice::in_memory(
        &ManualClock::new(start.saturating_sub(30 * DAY)),
        "stale",
        &mut rng,
    );
    let stale_package = stale.single_use().remove(0);
    assert!(
        matches!(
            adder
                .client()
                .add_members(&group, &[stale_package.key_package]),
            Err(MlsError::KeyPackageExpired { .. })
        ),
        "a package expired by the system clock too is KeyPackageExpired"
    );

    // And at the right time it is accepted.
    let output = adder
        .client()
        .add_members(&group, &[package.key_package])
        .unwrap();
    assert!(
        output
            .outbound
            .iter()
            .any(|o| o.envelope.kind() == EnvelopeKind::Welcome)
    );
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 1);
}

#[test]
fn forged_credential_binding_is_refused() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let victim = ClockedDevice::in_memory(&clock, "victim", &mut rng);
    let group = adder.client().create_group().unwrap();

    // An attacker copies the victim's SpacePanda credential into a key package signed with
    // its own key: OpenMLS's self-signature checks pass, the identity binding does not.
    let provider = OpenMlsRustCrypto::default();
    let attacker = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
    let forged = KeyPackage::builder()
        .build(
            CIPHERSUITE,
            &provider,
            &attacker,
            CredentialWithKey {
                credential: BasicCredential::new(
                    victim.client_ref().device().credential_bytes().to_vec(),
                )
                .into(),
                signature_key: attacker.public().into(),
            },
        )
        .unwrap();
    let forged = MlsMessageOut::from(forged.key_package().clone())
        .tls_serialize_detached()
        .unwrap();
    let result = adder.client().add_members(&group, &[forged]);
    assert!(
        matches!(result, Err(MlsError::UnverifiedMember { .. })),
        "{result:?}"
    );
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 0);

    // The genuine one is accepted.
    let genuine = victim.single_use().remove(0);
    adder
        .client()
        .add_members(&group, &[genuine.key_package])
        .unwrap();
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 1);
}

#[test]
fn malformed_key_packages_are_refused() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let group = adder.client().create_group().unwrap();
    let genuine = invitee.single_use().remove(0).key_package;

    let mut bad_signature = genuine.clone();
    *bad_signature.last_mut().unwrap() ^= 0x01;
    let mut truncated = genuine.clone();
    truncated.truncate(genuine.len() - 10);
    let mut trailing = genuine.clone();
    trailing.push(0);
    let (_, welcome) = invite(&mut adder, &invitee.single_use()[1].key_package);
    let welcome_message = Envelope::from_bytes(&welcome, usize::MAX)
        .unwrap()
        .payload()
        .to_vec();
    let cases: [(&str, Vec<u8>); 6] = [
        ("empty", Vec::new()),
        ("garbage", vec![0xff; 64]),
        ("truncated", truncated),
        ("trailing byte", trailing),
        ("bad signature", bad_signature),
        ("a Welcome, not a key package", welcome_message),
    ];
    for (what, bytes) in cases {
        let result = adder.client().add_members(&group, &[bytes]);
        assert!(
            matches!(result, Err(MlsError::InvalidKeyPackage { .. })),
            "{what}: {result:?}"
        );
    }
    let oversized = vec![0; 64 * 1024];
    assert!(matches!(
        adder.client().add_members(&group, &[oversized]),
        Err(MlsError::InvalidKeyPackage { .. })
    ));
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 0);
}
