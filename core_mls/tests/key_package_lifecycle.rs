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

#[path = "key_package_lifecycle/pool.rs"]
mod pool;
#[path = "key_package_lifecycle/validation.rs"]
mod validation;
#[path = "key_package_lifecycle/welcomes.rs"]
mod welcomes;
