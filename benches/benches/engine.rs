//! Criterion group `mls` for our engine: every operation goes through [`MlsClient`], so each
//! timed region includes the engine's checks (key package validation, identity binding), the
//! OpenMLS work and the durable transaction that commits OpenMLS's state, our records and the
//! outbox/inbox entries.
//!
//! Ids: `mls/<function>/<backend>-<size>` (shared/design/PERFORMANCE.md), backend ∈ `mem`
//! (MemoryStore), `redb` (RedbStore file in a tempdir, one fsync per transaction) and `sealed`
//! (SealedStore over RedbStore); size ∈ `10`, `100`, `1000` (`create_group`: size `1`).
//!
//! # What is timed
//! - `create_group`: `create_group()`.
//! - `add_member`: member A adds one phantom (`add_members`: validation, commit, Welcome, merge,
//!   durable write). Untimed: making the phantom, removing it again so the size stays fixed.
//! - `add_members_10`: A adds 10 phantom devices in one commit. The 10 are devices of one
//!   phantom user, so that the untimed clean-up is a single `remove_user` commit instead of 10;
//!   for MLS and for our checks each is a leaf of its own (own key package, own certificate).
//! - `remove_member`: A removes one phantom (`remove_user`). Untimed: adding a fresh one back.
//! - `encrypt_1k`: A `send`s a 1 KiB body. Untimed: acknowledging the outbound.
//! - `decrypt_1k`: member B (a second real client) handles A's 1 KiB message. Untimed: A's
//!   `send`, acknowledgements.
//! - `process_commit`: B handles A's self-update commit. Untimed: A's `self_update`.
//! - `join`: client C handles a Welcome into the group (ratchet tree in the Welcome): staging,
//!   identity binding of every leaf, key package ledger, durable write of the whole group.
//!   Untimed: A adds C with a fresh key package of C's before; after, A removes C, C processes
//!   its removal and is reopened from its store, so every join starts with a cold identity
//!   cache, like a device joining for the first time.
//!
//! # Fixtures
//! One group per (backend, size), built once and outside every timed region: A creates it,
//! adds `size - 2` phantoms and B in commits of at most 100 key packages (B is in the last one
//! and joins from its Welcome). Phantoms are real SpacePanda identities (the engine refuses
//! anything else) whose clients live on a throwaway MemoryStore only long enough to hand out a
//! key package; they never process anything. Consequence: **the tree is sparse** — only the
//! committer's direct path holds keys after batch adds, and phantoms cannot self-update to fill
//! theirs — so commits with a path (remove, self-update) encrypt to the resolution of blank
//! copath nodes, i.e. to nearly every leaf: at 1000 members this is the worst case, not the
//! steady state of a group whose members have all committed. A filled-tree variant (`-full`)
//! would need every member to be a running client and is not measured here.
//!
//! Per fixture the functions run in the order process_commit, decrypt_1k, encrypt_1k, …:
//! `process_commit` first gives A and B a full history of past epochs (`max_past_epochs`), whose
//! secrets OpenMLS stores with every application message, so `decrypt_1k` and `encrypt_1k`
//! measure that steady state and not the lighter state right after a join; B only follows the
//! group up to `decrypt_1k` (afterwards it falls behind, which nothing needs), and `decrypt_1k`
//! runs before `encrypt_1k` has moved A's sender ratchet further than B's
//! `max_forward_distance`.
//!
//! Settings are short (2-core machine shared with other work): flat sampling, 10 samples,
//! 2 s measurement (5 s at 1000 members, where criterion warns it cannot complete the samples
//! in time and extends the run). `SPACEPANDA_ENGINE_SIZES` (e.g. `10,100`) and
//! `SPACEPANDA_ENGINE_BACKENDS` (e.g. `mem,sealed`) restrict what is built and run. Fixture
//! setup times go to stderr as `engine setup …`.
//!
//! Run: `cargo bench -p spacepanda-benches --bench engine`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "criterion macros generate undocumented items; a failed benchmark aborts"
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_identity::{DeviceIdentity, IdentityStore, UserId};
use core_mls::{EnvelopeKind, Event, GroupId, MlsClient, MlsConfig, Output, PoolPolicy};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main,
};
use spacepanda_core::{
    Clock, MasterKey, MemoryStore, RedbStore, SealedStore, SharedStore, SystemClock,
};

/// The 1 KiB application payload of `encrypt_1k` / `decrypt_1k`.
const PAYLOAD_1K: [u8; 1024] = [0x5a; 1024];
/// Largest number of key packages per commit while building a fixture.
const SETUP_CHUNK: usize = 100;
/// Members added in one commit by `add_members_10`.
const ADD_MANY: usize = 10;
const SIZES: [usize; 3] = [10, 100, 1000];
const BACKENDS: [Backend; 3] = [Backend::Mem, Backend::Redb, Backend::Sealed];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Mem,
    Redb,
    Sealed,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Mem => "mem",
            Backend::Redb => "redb",
            Backend::Sealed => "sealed",
        }
    }

    /// A fresh, empty store of this kind (files under `dir`, named after `name`).
    fn open(self, dir: &Path, name: &str) -> SharedStore {
        match self {
            Backend::Mem => Arc::new(MemoryStore::new()),
            Backend::Redb => Arc::new(RedbStore::open(dir.join(format!("{name}.redb"))).unwrap()),
            Backend::Sealed => Arc::new(
                SealedStore::open_with_key(
                    RedbStore::open(dir.join(format!("{name}.sealed.redb"))).unwrap(),
                    &MasterKey::from_bytes([7; 32]),
                )
                .unwrap(),
            ),
        }
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Comma-separated filter from the environment, or everything.
fn selected<T: Copy>(var: &str, all: &[T], name: impl Fn(T) -> String) -> Vec<T> {
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

/// A device with its own store and identity.
fn open_device(store: SharedStore, name: &str, config: MlsConfig) -> (MlsClient, DeviceIdentity) {
    let identity = IdentityStore::new(store.clone(), clock())
        .create(name)
        .unwrap();
    let client = MlsClient::open(store, clock(), identity.clone(), config).unwrap();
    (client, identity)
}

/// Config of phantom clients: one fresh key package (plus the last-resort one) is enough.
fn phantom_config() -> MlsConfig {
    MlsConfig {
        key_packages: PoolPolicy {
            target: 1,
            ..PoolPolicy::default()
        },
        ..MlsConfig::default()
    }
}

/// A fresh single-use key package of `client`.
fn fresh_key_package(client: &MlsClient) -> Vec<u8> {
    client
        .publishable_key_packages()
        .unwrap()
        .into_iter()
        .find(|p| !p.last_resort)
        .expect("a fresh key package")
        .key_package
}

/// A member that never runs: a real identity and one key package.
struct Phantom {
    user: UserId,
    key_package: Vec<u8>,
}

fn phantom() -> Phantom {
    let (client, identity) = open_device(Arc::new(MemoryStore::new()), "phantom", phantom_config());
    Phantom {
        user: identity.user_id(),
        key_package: fresh_key_package(&client),
    }
}

/// `count` devices of one phantom user: key packages, and the user to remove them by.
fn phantom_devices(count: usize) -> (UserId, Vec<Vec<u8>>) {
    let first_store: SharedStore = Arc::new(MemoryStore::new());
    let (first, identity) = open_device(first_store.clone(), "phantom", phantom_config());
    let exported = IdentityStore::new(first_store, clock())
        .export_identity_key()
        .unwrap();
    let mut key_packages = vec![fresh_key_package(&first)];
    for _ in 1..count {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let device = IdentityStore::new(store.clone(), clock())
            .import(&exported, "phantom")
            .unwrap();
        let client = MlsClient::open(store, clock(), device, phantom_config()).unwrap();
        key_packages.push(fresh_key_package(&client));
    }
    (identity.user_id(), key_packages)
}

/// Acknowledges every outbound of `output` (nothing here delivers them).
fn ack_all(client: &mut MlsClient, output: &Output) {
    for outbound in &output.outbound {
        client.ack_sent(outbound.id).unwrap();
    }
}

fn envelope_bytes(output: &Output, kind: EnvelopeKind) -> Vec<u8> {
    output
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == kind)
        .expect("an envelope of the expected kind")
        .envelope
        .to_bytes()
}

/// Acknowledges every delivered application message of `output`.
fn ack_deliveries(client: &mut MlsClient, output: &Output) {
    for event in &output.events {
        if let Event::Message { delivery, .. } = event {
            client.ack_delivered(*delivery).unwrap();
        }
    }
}

/// One group of `size` members: A (the committer), B (a real member), `size - 2` phantoms;
/// C is a real client outside the group, for `join`.
struct Fixture {
    a: MlsClient,
    b: MlsClient,
    c: MlsClient,
    c_identity: DeviceIdentity,
    c_store: SharedStore,
    group: GroupId,
    /// Phantom users currently in the group, removable by `remove_member`.
    phantoms: Vec<UserId>,
}

impl Fixture {
    fn build(backend: Backend, dir: &Path, size: usize, pool: &[Phantom]) -> Self {
        assert!(size >= 2 && pool.len() >= size - 2);
        let (mut a, _) = open_device(backend.open(dir, "a"), "alice", MlsConfig::default());
        let (mut b, _) = open_device(backend.open(dir, "b"), "bob", MlsConfig::default());
        let c_store = backend.open(dir, "c");
        let (c, c_identity) = open_device(c_store.clone(), "carol", MlsConfig::default());
        let group = a.create_group().unwrap();
        let members = &pool[..size - 2];
        let mut chunks: Vec<Vec<Vec<u8>>> = members
            .chunks(SETUP_CHUNK)
            .map(|chunk| chunk.iter().map(|p| p.key_package.clone()).collect())
            .collect();
        match chunks.last_mut() {
            Some(last) if last.len() < SETUP_CHUNK => last.push(fresh_key_package(&b)),
            _ => chunks.push(vec![fresh_key_package(&b)]),
        }
        let last = chunks.len() - 1;
        for (index, chunk) in chunks.iter().enumerate() {
            let output = a.add_members(&group, chunk).unwrap();
            if index == last {
                let joined = b
                    .handle_envelope(&envelope_bytes(&output, EnvelopeKind::Welcome))
                    .unwrap();
                assert!(matches!(joined.events[..], [Event::Joined { .. }, ..]));
            }
            ack_all(&mut a, &output);
        }
        assert_eq!(a.members(&group).unwrap().len(), size);
        assert_eq!(
            a.epoch_authenticator(&group).unwrap(),
            b.epoch_authenticator(&group).unwrap()
        );
        Self {
            a,
            b,
            c,
            c_identity,
            c_store,
            group,
            phantoms: members.iter().map(|p| p.user).collect(),
        }
    }

    fn decrypt_1k(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let sent = self.a.send(&self.group, &PAYLOAD_1K).unwrap();
            ack_all(&mut self.a, &sent);
            let bytes = envelope_bytes(&sent, EnvelopeKind::Application);
            let start = Instant::now();
            let received = self.b.handle_envelope(&bytes).unwrap();
            total += start.elapsed();
            debug_assert!(matches!(received.events[..], [Event::Message { .. }]));
            ack_deliveries(&mut self.b, &received);
        }
        total
    }

    fn process_commit(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let update = self.a.self_update(&self.group).unwrap();
            ack_all(&mut self.a, &update);
            let bytes = envelope_bytes(&update, EnvelopeKind::Commit);
            let start = Instant::now();
            let processed = self.b.handle_envelope(&bytes).unwrap();
            total += start.elapsed();
            black_box(processed);
        }
        total
    }

    fn encrypt_1k(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let sent = self.a.send(&self.group, &PAYLOAD_1K).unwrap();
            total += start.elapsed();
            ack_all(&mut self.a, &sent);
        }
        total
    }

    fn add_member(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let new = phantom();
            let start = Instant::now();
            let added = self
                .a
                .add_members(&self.group, std::slice::from_ref(&new.key_package))
                .unwrap();
            total += start.elapsed();
            ack_all(&mut self.a, &added);
            let removed = self.a.remove_user(&self.group, &new.user).unwrap();
            ack_all(&mut self.a, &removed);
        }
        total
    }

    fn add_members_10(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let (user, key_packages) = phantom_devices(ADD_MANY);
            let start = Instant::now();
            let added = self.a.add_members(&self.group, &key_packages).unwrap();
            total += start.elapsed();
            ack_all(&mut self.a, &added);
            let removed = self.a.remove_user(&self.group, &user).unwrap();
            ack_all(&mut self.a, &removed);
        }
        total
    }

    fn remove_member(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let user = self.phantoms.pop().expect("a phantom to remove");
            let start = Instant::now();
            let removed = self.a.remove_user(&self.group, &user).unwrap();
            total += start.elapsed();
            ack_all(&mut self.a, &removed);
            let new = phantom();
            let added = self
                .a
                .add_members(&self.group, std::slice::from_ref(&new.key_package))
                .unwrap();
            ack_all(&mut self.a, &added);
            self.phantoms.insert(0, new.user);
        }
        total
    }

    fn join(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let key_package = fresh_key_package(&self.c);
            let added = self.a.add_members(&self.group, &[key_package]).unwrap();
            ack_all(&mut self.a, &added);
            let welcome = envelope_bytes(&added, EnvelopeKind::Welcome);
            let start = Instant::now();
            let joined = self.c.handle_envelope(&welcome).unwrap();
            total += start.elapsed();
            assert!(matches!(joined.events[..], [Event::Joined { .. }, ..]));
            let removed = self
                .a
                .remove_device(
                    &self.group,
                    &self.c_identity.user_id(),
                    &self.c_identity.device_id(),
                )
                .unwrap();
            ack_all(&mut self.a, &removed);
            let left = self
                .c
                .handle_envelope(&envelope_bytes(&removed, EnvelopeKind::Commit))
                .unwrap();
            assert!(
                left.events
                    .iter()
                    .any(|e| matches!(e, Event::RemovedFromGroup { .. }))
            );
            // Reopen C: cold caches for the next join, and the key package pool refilled.
            self.c = MlsClient::open(
                self.c_store.clone(),
                clock(),
                self.c_identity.clone(),
                MlsConfig::default(),
            )
            .unwrap();
        }
        total
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(if size >= 1000 { 5 } else { 2 }));
}

fn engine_benches(c: &mut Criterion) {
    let backends = selected("SPACEPANDA_ENGINE_BACKENDS", &BACKENDS, |b| {
        b.name().to_owned()
    });
    let sizes = selected("SPACEPANDA_ENGINE_SIZES", &SIZES, |s| s.to_string());
    let mut group = c.benchmark_group("mls");

    configure(&mut group, 1);
    for backend in &backends {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, _) =
            open_device(backend.open(dir.path(), "a"), "alice", MlsConfig::default());
        group.bench_function(
            BenchmarkId::new("create_group", format!("{}-1", backend.name())),
            |b| b.iter(|| client.create_group().unwrap()),
        );
    }

    let largest = sizes.iter().copied().max().unwrap_or(0);
    let started = Instant::now();
    let pool: Vec<Phantom> = (0..largest.saturating_sub(2)).map(|_| phantom()).collect();
    eprintln!(
        "engine setup: {} phantom identities + key packages in {:.2?}",
        pool.len(),
        started.elapsed()
    );

    for &size in &sizes {
        configure(&mut group, size);
        for &backend in &backends {
            let dir = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let mut fixture = Fixture::build(backend, dir.path(), size, &pool);
            let parameter = format!("{}-{size}", backend.name());
            eprintln!(
                "engine setup {parameter}: group built in {:.2?}",
                started.elapsed()
            );
            type Op = fn(&mut Fixture, u64) -> Duration;
            let ops: [(&str, Op); 7] = [
                ("process_commit", Fixture::process_commit),
                ("decrypt_1k", Fixture::decrypt_1k),
                ("encrypt_1k", Fixture::encrypt_1k),
                ("add_member", Fixture::add_member),
                ("add_members_10", Fixture::add_members_10),
                ("remove_member", Fixture::remove_member),
                ("join", Fixture::join),
            ];
            for (function, op) in ops {
                group.bench_function(BenchmarkId::new(function, &parameter), |b| {
                    b.iter_custom(|iters| op(&mut fixture, iters))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);
