//! Criterion group `store`: `put_batch`, `get`, `scan` on each backend.
//!
//! Ids: `store/<function>/<backend>` with backend ∈ `mem`, `redb`, `sealed` (redb wrapped in a
//! SealedStore) and `sealed_mem` (MemoryStore wrapped in a SealedStore, which isolates the cost
//! of sealing from the cost of the fsync).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spacepanda_core::{
    Key, KeyValueStore, MasterKey, MemoryStore, RedbStore, SealedStore, SharedStore, WriteBatch,
};

/// Values per batch in `put_batch` and entries per prefix in `scan`.
const BATCH: usize = 20;
const VALUE_LEN: usize = 1024;
/// Entries already in the store when `get` and `scan` run.
const PRELOAD_GROUPS: usize = 50;

fn backends(dir: &tempfile::TempDir) -> Vec<(&'static str, SharedStore)> {
    let key = MasterKey::from_bytes([9; 32]);
    vec![
        ("mem", Arc::new(MemoryStore::new())),
        (
            "redb",
            Arc::new(RedbStore::create(dir.path().join("plain.redb")).unwrap()),
        ),
        (
            "sealed",
            Arc::new(
                SealedStore::create_with_key(
                    RedbStore::create(dir.path().join("sealed.redb")).unwrap(),
                    &key,
                )
                .unwrap(),
            ),
        ),
        (
            "sealed_mem",
            Arc::new(SealedStore::create_with_key(MemoryStore::new(), &key).unwrap()),
        ),
    ]
}

fn group_batch(group: usize) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for item in 0..BATCH {
        let key = Key::from_segments([&b"g"[..], &group.to_be_bytes(), &item.to_be_bytes()]);
        batch.put("bench", key, vec![group as u8; VALUE_LEN]);
    }
    batch
}

fn store_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let stores = backends(&dir);
    for (_, store) in &stores {
        for group in 0..PRELOAD_GROUPS {
            store.apply(group_batch(group)).unwrap();
        }
    }

    let mut group = c.benchmark_group("store");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(500));

    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, store) in &stores {
        let mut next = PRELOAD_GROUPS;
        group.bench_function(BenchmarkId::new("put_batch", name), |b| {
            b.iter_batched(
                || {
                    next += 1;
                    group_batch(next)
                },
                |batch| store.apply(batch).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }

    group.throughput(Throughput::Elements(1));
    let probe = Key::from_segments([&b"g"[..], &7usize.to_be_bytes(), &3usize.to_be_bytes()]);
    for (name, store) in &stores {
        group.bench_function(BenchmarkId::new("get", name), |b| {
            b.iter(|| black_box(store.get("bench", &probe).unwrap().unwrap()))
        });
    }

    group.throughput(Throughput::Elements(BATCH as u64));
    let prefix = Key::from_segments([&b"g"[..], &11usize.to_be_bytes()]);
    for (name, store) in &stores {
        group.bench_function(BenchmarkId::new("scan", name), |b| {
            b.iter(|| {
                let entries = store.scan_prefix("bench", &prefix).unwrap();
                assert_eq!(entries.len(), BATCH);
                black_box(entries)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
