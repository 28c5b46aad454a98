//! Criterion group `mls`, key package functions, through the full stack (`MlsClient` on our
//! storage):
//!
//! - `mls/key_package/<backend>-1`: build one key package the way the pool does — OpenMLS
//!   builds it and writes its private bundle, the ledger record is written, one transaction
//!   committed (durably on `redb` and `sealed`);
//! - `mls/replenish_32/<backend>-1`: refill an empty pool of 32 in one transaction.
//!
//! Backends: `mem` (MemoryStore), `redb` (RedbStore file), `sealed` (SealedStore over a
//! RedbStore file, raw `MasterKey`, no passphrase KDF).
//!
//! How it is timed: the client runs with a pool policy whose low watermark is 100 % of the
//! target, so `replenish_key_packages` refills exactly what is missing. Before each iteration,
//! outside the timed region, the iteration's packages are marked claimed (one transaction);
//! the timed region is the single `replenish_key_packages` call. Claimed records stay in the
//! ledger until they expire, so the client is rebuilt on a fresh store (untimed) every
//! `MAX_CLAIMED` claims to keep the ledger at a realistic size.
//!
//! Run: `cargo bench -p spacepanda-benches --bench key_packages`.
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::panic,
    reason = "criterion macros generate undocumented items; a failed benchmark aborts"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_identity::IdentityStore;
use core_mls::{MlsClient, MlsConfig, PoolPolicy};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use spacepanda_core::{
    Clock, MasterKey, MemoryStore, RedbStore, SealedStore, SharedStore, SystemClock,
};

const BACKENDS: [&str; 3] = ["mem", "redb", "sealed"];
/// Pool size (the default policy's target).
const TARGET: usize = 32;
/// Claimed records a client accumulates before it is rebuilt on a fresh store.
const MAX_CLAIMED: usize = 128;

fn open_store(backend: &str, dir: &Path, serial: usize) -> SharedStore {
    let path = dir.join(format!("{backend}-{serial}.redb"));
    match backend {
        "mem" => Arc::new(MemoryStore::new()),
        "redb" => Arc::new(RedbStore::create(path).expect("create redb")),
        "sealed" => Arc::new(
            SealedStore::create_with_key(
                RedbStore::create(path).expect("create redb"),
                &MasterKey::from_bytes([7; 32]),
            )
            .expect("open sealed store"),
        ),
        other => panic!("unknown backend {other}"),
    }
}

fn config() -> MlsConfig {
    MlsConfig {
        key_packages: PoolPolicy {
            target: TARGET,
            // Refill whenever anything is missing, so one claim = one package to make.
            low_watermark_percent: 100,
            ..PoolPolicy::default()
        },
        ..MlsConfig::default()
    }
}

/// A client with a full pool on a fresh store, and how many of its packages were claimed.
struct Pool {
    backend: &'static str,
    dir: tempfile::TempDir,
    serial: usize,
    client: Option<MlsClient>,
    claimed: usize,
}

impl Pool {
    fn new(backend: &'static str) -> Self {
        Self {
            backend,
            dir: tempfile::tempdir().expect("tempdir"),
            serial: 0,
            client: None,
            claimed: 0,
        }
    }

    /// The client, rebuilt on a fresh store when it has accumulated too many claimed records.
    fn client(&mut self, claims: usize) -> &mut MlsClient {
        if self.client.is_none() || self.claimed + claims > MAX_CLAIMED {
            if self.client.take().is_some() {
                let old = self
                    .dir
                    .path()
                    .join(format!("{}-{}.redb", self.backend, self.serial));
                // Only the file backends have one.
                let _ = std::fs::remove_file(old);
            }
            self.serial += 1;
            let store = open_store(self.backend, self.dir.path(), self.serial);
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let identity = IdentityStore::new(store.clone(), clock.clone())
                .create("bench")
                .expect("identity");
            let client = MlsClient::open(store, clock, identity, config()).expect("open client");
            self.claimed = 0;
            self.client = Some(client);
        }
        self.claimed += claims;
        self.client.as_mut().expect("client was just set")
    }

    /// Claims `count` fresh packages (untimed), then times the refill of exactly that many.
    fn timed_refill(&mut self, count: usize) -> Duration {
        let client = self.client(count);
        let refs: Vec<Vec<u8>> = client
            .publishable_key_packages()
            .expect("publishable")
            .into_iter()
            .filter(|p| !p.last_resort)
            .take(count)
            .map(|p| p.key_package_ref)
            .collect();
        assert_eq!(
            client.mark_key_packages_claimed(&refs).expect("claim"),
            count
        );
        let start = Instant::now();
        let made = client.replenish_key_packages().expect("replenish");
        let elapsed = start.elapsed();
        assert_eq!(made, count, "the refill made exactly what was claimed");
        elapsed
    }
}

fn key_package_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("mls");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for backend in BACKENDS {
        let mut pool = Pool::new(backend);
        group.bench_function(
            BenchmarkId::new("key_package", format!("{backend}-1")),
            |b| b.iter_custom(|iters| (0..iters).map(|_| pool.timed_refill(1)).sum()),
        );
        group.bench_function(
            BenchmarkId::new("replenish_32", format!("{backend}-1")),
            |b| b.iter_custom(|iters| (0..iters).map(|_| pool.timed_refill(TARGET)).sum()),
        );
    }
    group.finish();
}

criterion_group!(benches, key_package_benches);
criterion_main!(benches);
