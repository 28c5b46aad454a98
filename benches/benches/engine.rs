//! Criterion group `mls` for our engine: every operation goes through [`MlsClient`], so each
//! timed region includes the engine's checks (key package validation, identity binding), the
//! OpenMLS work and the durable transaction that commits OpenMLS's state, our records and the
//! outbox/inbox entries.
//!
//! Ids: `mls/<function>/<backend>-<size>` (shared/design/PERFORMANCE.md), backend ∈ `mem`
//! (MemoryStore), `redb` (RedbStore file in a tempdir, one fsync per transaction) and `sealed`
//! (SealedStore over RedbStore); size ∈ `10`, `100`, `1000`, `1000-full` (`create_group`: size `1`).
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
//! Sparse (`<backend>-<size>`): one group per (backend, size), built once and outside every
//! timed region: A creates it, adds `size - 2` phantoms and B in commits of at most 100 key
//! packages (B is in the last one and joins from its Welcome). Phantoms are real SpacePanda
//! identities (the engine refuses anything else) that never process anything. Only the
//! committer's direct path holds keys after batch adds, so commits with a path (remove,
//! self-update) encrypt to nearly every leaf: at 1000 members the worst case, not the steady
//! state of a group whose members have all committed.
//!
//! Filled (`<backend>-1000-full`, `add_member` and `remove_member` only): the chain of
//! `spacepanda_benches::engine_stack::FilledGroup` — every parent node set, as after every member
//! has self-updated — built once on MemoryStore and A's store copied into each backend. The
//! set-up prints the size of one add commit as evidence of the shape (≈ 2.2 KB filled vs ≈ 80 KB
//! sparse at 1000). `remove_member` removes the most recently added phantom and adds its
//! replacement in the same leaf (untimed), so only that one leaf's path is ever blank.
//!
//! Per fixture the functions run in the order process_commit, decrypt_1k, encrypt_1k, …:
//! `process_commit` first gives A and B a full history of past epochs (`max_past_epochs`), whose
//! secrets OpenMLS stores with every application message, so `decrypt_1k` and `encrypt_1k`
//! measure that steady state and not the lighter state right after a join; B only follows the
//! group up to `decrypt_1k` (afterwards it falls behind, which nothing needs), and `decrypt_1k`
//! runs before `encrypt_1k` has moved A's sender ratchet further than B's
//! `max_forward_distance`.
//!
//! Settings are short so that the whole suite fits in 15 minutes on 2 cores: flat sampling,
//! 10 samples, 1.2 s measurement (2 s at 1000 members). `SPACEPANDA_ENGINE_SIZES` (e.g.
//! `10,100,1000-full`) and `SPACEPANDA_ENGINE_BACKENDS` (e.g. `mem,sealed`) restrict what is
//! built and run. Fixture setup times go to stderr as `engine setup …`.
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
use std::time::{Duration, Instant};

use core_identity::{DeviceIdentity, UserId};
use core_mls::{EnvelopeKind, Event, GroupId, MlsClient, MlsConfig};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main,
};
use spacepanda_benches::engine_stack::{
    Backend, FilledGroup, Phantom, ack_all, ack_deliveries, clock, envelope_bytes,
    fresh_key_package, open_device, phantom, phantom_devices,
};
use spacepanda_benches::harness::{ADD_MANY, PAYLOAD_1K, Scale, TreeShape};
use spacepanda_core::SharedStore;

/// Largest number of key packages per commit while building a sparse fixture.
const SETUP_CHUNK: usize = 100;

/// Member A of a group and the phantoms it can remove: everything `add_member`,
/// `add_members_10` and `remove_member` need, on a sparse or a filled tree.
struct Committer {
    a: MlsClient,
    group: GroupId,
    /// Phantom users currently in the group; `remove_member` removes the last one and adds its
    /// replacement in the same place, so on a filled tree only one leaf's path is ever blanked.
    phantoms: Vec<UserId>,
}

impl Committer {
    fn add_member(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let new = phantom().unwrap();
            let start = Instant::now();
            let added = self
                .a
                .add_members(&self.group, std::slice::from_ref(&new.key_package))
                .unwrap();
            total += start.elapsed();
            ack_all(&mut self.a, &added).unwrap();
            let removed = self.a.remove_user(&self.group, &new.user).unwrap();
            ack_all(&mut self.a, &removed).unwrap();
        }
        total
    }

    /// Size of one add commit (untimed; the group is left as it was): on a filled tree a
    /// commit carries one path secret per level, on a sparse one nearly one per leaf.
    fn add_commit_len(&mut self) -> usize {
        let new = phantom().unwrap();
        let added = self
            .a
            .add_members(&self.group, std::slice::from_ref(&new.key_package))
            .unwrap();
        ack_all(&mut self.a, &added).unwrap();
        let removed = self.a.remove_user(&self.group, &new.user).unwrap();
        ack_all(&mut self.a, &removed).unwrap();
        envelope_bytes(&added, EnvelopeKind::Commit).unwrap().len()
    }

    fn add_members_10(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let (user, key_packages) = phantom_devices(ADD_MANY).unwrap();
            let start = Instant::now();
            let added = self.a.add_members(&self.group, &key_packages).unwrap();
            total += start.elapsed();
            ack_all(&mut self.a, &added).unwrap();
            let removed = self.a.remove_user(&self.group, &user).unwrap();
            ack_all(&mut self.a, &removed).unwrap();
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
            ack_all(&mut self.a, &removed).unwrap();
            let new = phantom().unwrap();
            let added = self
                .a
                .add_members(&self.group, std::slice::from_ref(&new.key_package))
                .unwrap();
            ack_all(&mut self.a, &added).unwrap();
            self.phantoms.push(new.user);
        }
        total
    }
}

/// One sparse group of `size` members: A (the committer), B (a real member), `size - 2`
/// phantoms; C is a real client outside the group, for `join`.
struct Fixture {
    committer: Committer,
    b: MlsClient,
    c: MlsClient,
    c_identity: DeviceIdentity,
    c_store: SharedStore,
}

impl Fixture {
    fn build(backend: Backend, dir: &Path, size: usize, pool: &[Phantom]) -> Self {
        assert!(size >= 2 && pool.len() >= size - 2);
        let store = |name| backend.open(dir, name).unwrap();
        let (mut a, _) = open_device(store("a"), "alice", MlsConfig::default()).unwrap();
        let (mut b, _) = open_device(store("b"), "bob", MlsConfig::default()).unwrap();
        let c_store = store("c");
        let (c, c_identity) = open_device(c_store.clone(), "carol", MlsConfig::default()).unwrap();
        let group = a.create_group().unwrap();
        let members = &pool[..size - 2];
        let mut chunks: Vec<Vec<Vec<u8>>> = members
            .chunks(SETUP_CHUNK)
            .map(|chunk| chunk.iter().map(|p| p.key_package.clone()).collect())
            .collect();
        match chunks.last_mut() {
            Some(last) if last.len() < SETUP_CHUNK => last.push(fresh_key_package(&b).unwrap()),
            _ => chunks.push(vec![fresh_key_package(&b).unwrap()]),
        }
        let last = chunks.len() - 1;
        for (index, chunk) in chunks.iter().enumerate() {
            let output = a.add_members(&group, chunk).unwrap();
            if index == last {
                let welcome = envelope_bytes(&output, EnvelopeKind::Welcome).unwrap();
                let joined = b.handle_envelope(&welcome).unwrap();
                assert!(matches!(joined.events[..], [Event::Joined { .. }, ..]));
            }
            ack_all(&mut a, &output).unwrap();
        }
        assert_eq!(a.members(&group).unwrap().len(), size);
        assert_eq!(
            a.epoch_authenticator(&group).unwrap(),
            b.epoch_authenticator(&group).unwrap()
        );
        Self {
            committer: Committer {
                a,
                group,
                phantoms: members.iter().map(|p| p.user).collect(),
            },
            b,
            c,
            c_identity,
            c_store,
        }
    }

    fn add_member(&mut self, iters: u64) -> Duration {
        self.committer.add_member(iters)
    }

    fn add_members_10(&mut self, iters: u64) -> Duration {
        self.committer.add_members_10(iters)
    }

    fn remove_member(&mut self, iters: u64) -> Duration {
        self.committer.remove_member(iters)
    }

    fn decrypt_1k(&mut self, iters: u64) -> Duration {
        let Committer { a, group, .. } = &mut self.committer;
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let sent = a.send(group, &PAYLOAD_1K).unwrap();
            ack_all(a, &sent).unwrap();
            let bytes = envelope_bytes(&sent, EnvelopeKind::Application).unwrap();
            let start = Instant::now();
            let received = self.b.handle_envelope(&bytes).unwrap();
            total += start.elapsed();
            debug_assert!(matches!(received.events[..], [Event::Message { .. }]));
            ack_deliveries(&mut self.b, &received).unwrap();
        }
        total
    }

    fn process_commit(&mut self, iters: u64) -> Duration {
        let Committer { a, group, .. } = &mut self.committer;
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let update = a.self_update(group).unwrap();
            ack_all(a, &update).unwrap();
            let bytes = envelope_bytes(&update, EnvelopeKind::Commit).unwrap();
            let start = Instant::now();
            let processed = self.b.handle_envelope(&bytes).unwrap();
            total += start.elapsed();
            black_box(processed);
        }
        total
    }

    fn encrypt_1k(&mut self, iters: u64) -> Duration {
        let Committer { a, group, .. } = &mut self.committer;
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let sent = a.send(group, &PAYLOAD_1K).unwrap();
            total += start.elapsed();
            ack_all(a, &sent).unwrap();
        }
        total
    }

    fn join(&mut self, iters: u64) -> Duration {
        let Committer { a, group, .. } = &mut self.committer;
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let key_package = fresh_key_package(&self.c).unwrap();
            let added = a.add_members(group, &[key_package]).unwrap();
            ack_all(a, &added).unwrap();
            let welcome = envelope_bytes(&added, EnvelopeKind::Welcome).unwrap();
            let start = Instant::now();
            let joined = self.c.handle_envelope(&welcome).unwrap();
            total += start.elapsed();
            assert!(matches!(joined.events[..], [Event::Joined { .. }, ..]));
            let removed = a
                .remove_device(
                    group,
                    &self.c_identity.user_id(),
                    &self.c_identity.device_id(),
                )
                .unwrap();
            ack_all(a, &removed).unwrap();
            let commit = envelope_bytes(&removed, EnvelopeKind::Commit).unwrap();
            let left = self.c.handle_envelope(&commit).unwrap();
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
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(if size >= 1000 {
            2000
        } else {
            1200
        }));
}

type Op<T> = fn(&mut T, u64) -> Duration;

/// Sparse groups: every function, in the order the module docs explain.
const SPARSE_OPS: [(&str, Op<Fixture>); 7] = [
    ("process_commit", Fixture::process_commit),
    ("decrypt_1k", Fixture::decrypt_1k),
    ("encrypt_1k", Fixture::encrypt_1k),
    ("add_member", Fixture::add_member),
    ("add_members_10", Fixture::add_members_10),
    ("remove_member", Fixture::remove_member),
    ("join", Fixture::join),
];

/// Filled trees: the two commits whose cost depends on the tree shape (PERFORMANCE.md).
const FILLED_OPS: [(&str, Op<Committer>); 2] = [
    ("add_member", Committer::add_member),
    ("remove_member", Committer::remove_member),
];

fn run_ops<T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    parameter: &str,
    subject: &mut T,
    ops: &[(&str, Op<T>)],
) {
    for (function, op) in ops {
        group.bench_function(BenchmarkId::new(*function, parameter), |b| {
            b.iter_custom(|iters| op(subject, iters))
        });
    }
}

fn engine_benches(c: &mut Criterion) {
    let backends = Backend::from_env("SPACEPANDA_ENGINE_BACKENDS");
    let scales = match std::env::var("SPACEPANDA_ENGINE_SIZES") {
        Ok(list) => list.split(',').filter_map(Scale::parse).collect(),
        Err(_) => Scale::default_set(),
    };
    let mut group = c.benchmark_group("mls");

    configure(&mut group, 1);
    for backend in &backends {
        let dir = tempfile::tempdir().unwrap();
        let store = backend.open(dir.path(), "a").unwrap();
        let (mut client, _) = open_device(store, "alice", MlsConfig::default()).unwrap();
        group.bench_function(
            BenchmarkId::new("create_group", format!("{}-1", backend.name())),
            |b| b.iter(|| client.create_group().unwrap()),
        );
    }

    let largest = scales
        .iter()
        .filter(|s| s.shape == TreeShape::Sparse)
        .map(|s| s.size)
        .max()
        .unwrap_or(0);
    let started = Instant::now();
    let pool: Vec<Phantom> = (0..largest.saturating_sub(2))
        .map(|_| phantom().unwrap())
        .collect();
    eprintln!(
        "engine setup: {} phantom identities + key packages in {:.2?}",
        pool.len(),
        started.elapsed()
    );

    for scale in &scales {
        configure(&mut group, scale.size);
        match scale.shape {
            TreeShape::Sparse => {
                for &backend in &backends {
                    let dir = tempfile::tempdir().unwrap();
                    let started = Instant::now();
                    let mut fixture = Fixture::build(backend, dir.path(), scale.size, &pool);
                    let parameter = format!("{}-{scale}", backend.name());
                    eprintln!(
                        "engine setup {parameter}: group built in {:.2?}",
                        started.elapsed()
                    );
                    run_ops(&mut group, &parameter, &mut fixture, &SPARSE_OPS);
                }
            }
            TreeShape::Full => {
                let started = Instant::now();
                let filled = FilledGroup::build(scale.size, false).unwrap();
                eprintln!(
                    "engine setup {scale}: filled tree built (on mem) in {:.2?}",
                    started.elapsed()
                );
                for &backend in &backends {
                    let dir = tempfile::tempdir().unwrap();
                    let (a, _) = filled
                        .a
                        .open_on(backend, dir.path(), "a", MlsConfig::default())
                        .unwrap();
                    let mut committer = Committer {
                        a,
                        group: filled.group.clone(),
                        phantoms: filled.phantoms.clone(),
                    };
                    let parameter = format!("{}-{scale}", backend.name());
                    if backend == backends[0] {
                        eprintln!(
                            "engine setup {scale}: an add commit is {} bytes",
                            committer.add_commit_len()
                        );
                    }
                    run_ops(&mut group, &parameter, &mut committer, &FILLED_OPS);
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);
