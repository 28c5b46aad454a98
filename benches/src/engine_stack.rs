//! Our full stack as a benchmark subject: [`MlsClient`] on MemoryStore (`mem`), RedbStore
//! (`redb`) or SealedStore over RedbStore (`sealed`), and the groups the `engine` and
//! `throughput` bench files measure it on.
//!
//! # Members
//! A benchmark group has two kinds of members:
//! - *real* devices (A, the committer; B, a receiver): an [`MlsClient`] on the backend under
//!   test, which processes every commit of the group;
//! - *phantoms*: real SpacePanda identities (the engine refuses anything else) whose clients live
//!   on a throwaway MemoryStore just long enough to hand out a key package, or to join and commit
//!   once while a filled tree is built. They never process anything afterwards.
//!
//! # Tree shapes
//! - sparse (built by the `engine` bench file itself): A adds everybody in batches; only A's
//!   direct path holds parent nodes, so a commit with a path encrypts to nearly every leaf.
//! - filled ([`FilledGroup::build`]): a chain. The member at leaf `c` commits the adds of leaves
//!   `c+1` (a phantom that never runs) and `c+2` (a client that joins from the Welcome and is the
//!   next committer), so every level-1 parent lies on some committer's path: every parent node is
//!   filled and, because each commit's path clears the unmerged leaves it covers, none has
//!   unmerged leaves. For the tree this equals every member having self-updated once, at the cost
//!   of `size / 2` joins instead of `size²` commit processings. The chain runs once, on
//!   MemoryStore; the real devices' stores are then copied entry by entry into a fresh store of
//!   each backend ([`DeviceTemplate::open_on`]), so every backend starts from the same bytes.
//!
//! # Devices
//! Every device is the shared test kit's (`spacepanda_testkit::Device`), opened over the store
//! given, with its own seed for its identity and engine (one per device opened in the process):
//! a run builds the same groups each time, and the benchmarked work is the engine's as a user
//! runs it.
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use core_identity::{DeviceIdentity, IdentityStore, UserId};
use core_mls::{EnvelopeKind, Event, GroupId, MlsClient, MlsConfig, Output, PoolPolicy};
use spacepanda_core::{
    Clock, KeyValueStore, MasterKey, MemoryStore, RedbStore, SealedStore, SharedStore, SystemClock,
    WriteBatch,
};

use rand::rngs::StdRng;
use spacepanda_testkit::{Device, seeded};

use crate::harness::BenchError;

/// The storage backend under the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// MemoryStore: the engine without durability.
    Mem,
    /// RedbStore in a temporary directory: one fsync per transaction.
    Redb,
    /// SealedStore over RedbStore: encrypted at rest.
    Sealed,
}

impl Backend {
    /// Every backend, in report order.
    pub const ALL: [Backend; 3] = [Backend::Mem, Backend::Redb, Backend::Sealed];

    /// Name used in benchmark ids (`mem`, `redb`, `sealed`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Mem => "mem",
            Backend::Redb => "redb",
            Backend::Sealed => "sealed",
        }
    }

    /// A fresh, empty store of this kind (files under `dir`, named after `name`).
    pub fn open(self, dir: &Path, name: &str) -> Result<SharedStore, BenchError> {
        Ok(match self {
            Backend::Mem => Arc::new(MemoryStore::new()),
            Backend::Redb => Arc::new(RedbStore::create(dir.join(format!("{name}.redb")))?),
            Backend::Sealed => Arc::new(SealedStore::create_with_key(
                RedbStore::create(dir.join(format!("{name}.sealed.redb")))?,
                &MasterKey::from_bytes([7; 32]),
            )?),
        })
    }

    /// The backends named in the environment variable `var` (comma separated), or all.
    pub fn from_env(var: &str) -> Vec<Backend> {
        selected(var, &Self::ALL, |b| b.name().to_owned())
    }
}

/// Comma-separated filter from the environment variable `var`, or everything.
pub fn selected<T: Copy>(var: &str, all: &[T], name: impl Fn(T) -> String) -> Vec<T> {
    match std::env::var(var) {
        Ok(list) => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            all.iter()
                .copied()
                .filter(|item| wanted.contains(&name(*item).as_str()))
                .collect()
        }
        Err(_) => all.to_vec(),
    }
}

/// The clock of every benchmarked client (wall time: benches measure real behaviour).
pub fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// One seed per device opened in this process: identities and engines differ from device to
/// device, and every run builds the same groups.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0);

/// The random generator of the next device.
fn next_rng() -> StdRng {
    seeded::rng(NEXT_SEED.fetch_add(1, Ordering::Relaxed))
}

/// The test kit's device over `store` (the identity stored there, or else a new one named
/// `name`), as a client and its identity: a benchmark drives the client by hand.
pub fn open_device(
    store: SharedStore,
    name: &str,
    config: MlsConfig,
) -> Result<(MlsClient, DeviceIdentity), BenchError> {
    let mut device = Device::try_on_store(name, store, clock(), &config, &mut next_rng())?;
    let client = device
        .client
        .take()
        .ok_or("the test kit's device has no engine")?;
    Ok((client, device.identity))
}

/// Config of phantom clients: one fresh key package (plus the last-resort one) is enough.
pub fn phantom_config() -> MlsConfig {
    MlsConfig {
        key_packages: PoolPolicy {
            target: 1,
            ..PoolPolicy::default()
        },
        ..MlsConfig::default()
    }
}

/// A fresh single-use key package of `client`.
pub fn fresh_key_package(client: &MlsClient) -> Result<Vec<u8>, BenchError> {
    client
        .publishable_key_packages()?
        .into_iter()
        .find(|p| !p.last_resort)
        .map(|p| p.key_package)
        .ok_or_else(|| "the client has no fresh key package".into())
}

/// A member that never runs: a real identity and one key package.
pub struct Phantom {
    /// The phantom's user, to remove it by.
    pub user: UserId,
    /// Its key package, to add it with.
    pub key_package: Vec<u8>,
}

/// A new phantom.
pub fn phantom() -> Result<Phantom, BenchError> {
    let (client, identity) =
        open_device(Arc::new(MemoryStore::new()), "phantom", phantom_config())?;
    Ok(Phantom {
        user: identity.user_id(),
        key_package: fresh_key_package(&client)?,
    })
}

/// `count` devices of one phantom user: their key packages, and the user to remove them by.
pub fn phantom_devices(count: usize) -> Result<(UserId, Vec<Vec<u8>>), BenchError> {
    let first_store: SharedStore = Arc::new(MemoryStore::new());
    let (first, identity) = open_device(first_store.clone(), "phantom", phantom_config())?;
    let exported = IdentityStore::new(first_store, clock()).export_identity_key()?;
    let mut key_packages = vec![fresh_key_package(&first)?];
    for _ in 1..count {
        let store: SharedStore = Arc::new(MemoryStore::new());
        IdentityStore::new(store.clone(), clock()).import_with(
            &exported,
            "phantom",
            &mut next_rng(),
        )?;
        let (client, _) = open_device(store, "phantom", phantom_config())?;
        key_packages.push(fresh_key_package(&client)?);
    }
    Ok((identity.user_id(), key_packages))
}

/// Acknowledges every outbound of `output` (a benchmark delivers by hand, from the `Output`).
pub fn ack_all(client: &mut MlsClient, output: &Output) -> Result<(), BenchError> {
    for outbound in &output.outbound {
        client.ack_sent(outbound.id)?;
    }
    Ok(())
}

/// The bytes of the first outbound envelope of `kind` in `output`.
pub fn envelope_bytes(output: &Output, kind: EnvelopeKind) -> Result<Vec<u8>, BenchError> {
    output
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == kind)
        .map(|o| o.envelope.to_bytes())
        .ok_or_else(|| format!("no {kind:?} envelope in the output").into())
}

/// Acknowledges every delivered application message of `output`.
pub fn ack_deliveries(client: &mut MlsClient, output: &Output) -> Result<(), BenchError> {
    for event in &output.events {
        if let Event::Message { delivery, .. } = event {
            client.ack_delivered(*delivery)?;
        }
    }
    Ok(())
}

/// Hands `bytes` to `client` and acknowledges what it delivered to the app; an engine error
/// is returned.
pub fn deliver(client: &mut MlsClient, bytes: &[u8]) -> Result<Output, BenchError> {
    let output = client.handle_envelope(bytes)?;
    ack_deliveries(client, &output)?;
    Ok(output)
}

/// A real device built on MemoryStore whose state is copied into the backend under test.
pub struct DeviceTemplate {
    store: Arc<MemoryStore>,
    identity: DeviceIdentity,
}

impl DeviceTemplate {
    /// The device's identity.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// Copies the template's store into a fresh `backend` store (under `dir`, named `name`) and
    /// opens the device on the copy. The template itself is never modified.
    pub fn open_on(
        &self,
        backend: Backend,
        dir: &Path,
        name: &str,
        config: MlsConfig,
    ) -> Result<(MlsClient, SharedStore), BenchError> {
        let store = backend.open(dir, name)?;
        let mut batch = WriteBatch::new();
        for (namespace, key, value) in self.store.dump()? {
            batch.put(&namespace, key, value);
        }
        store.apply(batch)?;
        let (client, identity) = open_device(store.clone(), name, config)?;
        if identity.device_id() != self.identity.device_id() {
            return Err("the copied store opened as another device".into());
        }
        Ok((client, store))
    }
}

/// A group with a filled tree (every parent node set, no unmerged leaves): A at leaf 0, B (if
/// asked for) at the last leaf, phantoms in between. See the module docs for the construction.
pub struct FilledGroup {
    /// The group.
    pub group: GroupId,
    /// Member A (leaf 0), which processed every commit of the chain.
    pub a: DeviceTemplate,
    /// Member B (the last leaf), current at the same epoch as A.
    pub b: Option<DeviceTemplate>,
    /// Phantom users of the group (each one device), in leaf order.
    pub phantoms: Vec<UserId>,
}

impl FilledGroup {
    /// Builds a filled group of `size` members (at least 3 with `with_b`, 2 without).
    pub fn build(size: usize, with_b: bool) -> Result<Self, BenchError> {
        let real = if with_b { 2 } else { 1 };
        if size < real + 1 {
            return Err(format!("a filled group needs more than {real} members").into());
        }
        let a_store = Arc::new(MemoryStore::new());
        let (mut a, a_identity) = open_device(a_store.clone(), "alice", MlsConfig::default())?;
        let group = a.create_group()?;
        let mut phantoms = Vec::new();
        let mut b = None;
        let mut b_authenticator = None;
        // The current committer when it is not A; A processes every commit of the others.
        let mut committer: Option<MlsClient> = None;
        let mut members = 1;
        while members < size {
            let remaining = size - members;
            let mut key_packages = Vec::new();
            if remaining >= 2 {
                let plain = phantom()?;
                phantoms.push(plain.user);
                key_packages.push(plain.key_package);
            }
            let joiner_store = Arc::new(MemoryStore::new());
            let last = remaining <= 2;
            let (joiner, joiner_identity) = if last && with_b {
                open_device(joiner_store.clone(), "bob", MlsConfig::default())?
            } else {
                open_device(joiner_store.clone(), "phantom", phantom_config())?
            };
            if !(last && with_b) {
                phantoms.push(joiner_identity.user_id());
            }
            key_packages.push(fresh_key_package(&joiner)?);
            members += key_packages.len();
            let added = match committer.as_mut() {
                Some(client) => {
                    let added = client.add_members(&group, &key_packages)?;
                    ack_all(client, &added)?;
                    deliver(&mut a, &envelope_bytes(&added, EnvelopeKind::Commit)?)?;
                    added
                }
                None => {
                    let added = a.add_members(&group, &key_packages)?;
                    ack_all(&mut a, &added)?;
                    added
                }
            };
            let mut joiner = joiner;
            let joined = joiner.handle_envelope(&envelope_bytes(&added, EnvelopeKind::Welcome)?)?;
            if !joined
                .events
                .iter()
                .any(|e| matches!(e, Event::Joined { .. }))
            {
                return Err("a chain member did not join from its Welcome".into());
            }
            if last && with_b {
                b_authenticator = Some(joiner.epoch_authenticator(&group)?);
                drop(joiner);
                b = Some(DeviceTemplate {
                    store: joiner_store,
                    identity: joiner_identity,
                });
            } else {
                committer = Some(joiner);
            }
        }
        if a.members(&group)?.len() != size {
            return Err("the filled group has the wrong size".into());
        }
        if let Some(authenticator) = b_authenticator
            && authenticator != a.epoch_authenticator(&group)?
        {
            return Err("A and B disagree on the filled group's epoch".into());
        }
        drop(a);
        drop(committer);
        Ok(Self {
            group,
            a: DeviceTemplate {
                store: a_store,
                identity: a_identity,
            },
            b,
            phantoms,
        })
    }
}
