//! One conformance suite, run against every backend: MemoryStore, RedbStore,
//! SealedStore<MemoryStore>, SealedStore<RedbStore> and a disarmed FailingStore<MemoryStore>.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;

use spacepanda_core::{
    FailPoint, FailingStore, Key, KeyValueStore, MasterKey, MemoryStore, RedbStore, SealedStore,
    SharedStore, StoreError, Transaction, WriteBatch,
};

fn k(segments: &[&str]) -> Key {
    Key::from_segments(segments)
}

fn put(store: &dyn KeyValueStore, ns: &str, key: Key, value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(ns, key, value.to_vec());
    store.apply(batch).unwrap();
}

/// The contract every backend must meet. `reopen` drops nothing itself: it returns a fresh
/// handle to the same underlying data when the backend has any (None for memory-only ones).
fn conformance(store: SharedStore, reopen: Option<&dyn Fn() -> SharedStore>) {
    // get / put / overwrite / delete
    assert_eq!(store.get("ns", &k(&["a"])).unwrap(), None);
    put(&*store, "ns", k(&["a"]), b"1");
    assert_eq!(store.get("ns", &k(&["a"])).unwrap(), Some(b"1".to_vec()));
    put(&*store, "ns", k(&["a"]), b"2");
    assert_eq!(store.get("ns", &k(&["a"])).unwrap(), Some(b"2".to_vec()));
    let mut batch = WriteBatch::new();
    batch.delete("ns", k(&["a"]));
    store.apply(batch).unwrap();
    assert_eq!(store.get("ns", &k(&["a"])).unwrap(), None);
    // Deleting a missing key is a no-op, and empty values are values.
    let mut batch = WriteBatch::new();
    batch
        .delete("ns", k(&["never"]))
        .put("ns", k(&["empty"]), Vec::new());
    store.apply(batch).unwrap();
    assert_eq!(store.get("ns", &k(&["empty"])).unwrap(), Some(Vec::new()));

    // get_many answers like one get per key, in order, missing keys included.
    assert_eq!(
        store
            .get_many("ns", &[k(&["empty"]), k(&["never"]), k(&["empty"])])
            .unwrap(),
        vec![Some(Vec::new()), None, Some(Vec::new())]
    );
    assert_eq!(
        store.get_many("ns", &[]).unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );

    // Namespaces are separate.
    put(&*store, "other", k(&["a"]), b"other");
    assert_eq!(store.get("ns", &k(&["a"])).unwrap(), None);
    assert_eq!(
        store.get("other", &k(&["a"])).unwrap(),
        Some(b"other".to_vec())
    );

    // scan_prefix returns whole-segment matches only, and nothing from other namespaces.
    let mut batch = WriteBatch::new();
    batch
        .put("scan", k(&["g", "g1", "tree"]), b"t1".to_vec())
        .put("scan", k(&["g", "g1", "ctx"]), b"c1".to_vec())
        .put("scan", k(&["g", "g1x", "tree"]), b"t1x".to_vec())
        .put("scan", k(&["g", "g2", "tree"]), b"t2".to_vec())
        .put("scan", k(&["h", "g1"]), b"h".to_vec())
        .put("scan2", k(&["g", "g1", "tree"]), b"elsewhere".to_vec());
    store.apply(batch).unwrap();
    let mut g1 = store.scan_prefix("scan", &k(&["g", "g1"])).unwrap();
    g1.sort();
    assert_eq!(
        g1,
        vec![
            (k(&["g", "g1", "ctx"]), b"c1".to_vec()),
            (k(&["g", "g1", "tree"]), b"t1".to_vec()),
        ]
    );
    assert_eq!(store.scan_prefix("scan", &k(&["g"])).unwrap().len(), 4);
    assert_eq!(store.scan_prefix("scan", &Key::empty()).unwrap().len(), 5);
    assert!(
        store
            .scan_prefix("scan", &k(&["nothing"]))
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .scan_prefix("empty_ns", &Key::empty())
            .unwrap()
            .is_empty()
    );

    // scan_keys lists exactly the keys scan_prefix gives, in the same order.
    for prefix in [k(&["g", "g1"]), k(&["g"]), Key::empty(), k(&["nothing"])] {
        let keys: Vec<Key> = store
            .scan_prefix("scan", &prefix)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(store.scan_keys("scan", &prefix).unwrap(), keys);
    }
    assert!(
        store
            .scan_keys("empty_ns", &Key::empty())
            .unwrap()
            .is_empty()
    );
    // A transaction's scan_keys sees its own puts and deletes, and delete_prefix uses it.
    let mut txn = Transaction::begin(&store);
    txn.put("scan", k(&["g", "g1", "new"]), b"n".to_vec())
        .unwrap();
    txn.delete("scan", k(&["g", "g1", "ctx"])).unwrap();
    let mut seen = txn.scan_keys("scan", &k(&["g", "g1"])).unwrap();
    seen.sort();
    assert_eq!(seen, vec![k(&["g", "g1", "new"]), k(&["g", "g1", "tree"])]);
    assert_eq!(txn.delete_prefix("scan", &k(&["g", "g1"])).unwrap(), 2);
    assert!(txn.scan_keys("scan", &k(&["g", "g1"])).unwrap().is_empty());
    assert_eq!(txn.scan_keys("scan", &k(&["g", "g1x"])).unwrap().len(), 1);
    drop(txn);

    // Binary segments, including bytes that look like length prefixes.
    let binary = Key::from_segments([&[0u8, 1, 2, 0xff][..], &[0x80; 300][..]]);
    put(&*store, "bin", binary.clone(), &[0xaa; 5000]);
    assert_eq!(store.get("bin", &binary).unwrap(), Some(vec![0xaa; 5000]));
    let under = store
        .scan_prefix("bin", &Key::from_segment([0u8, 1, 2, 0xff]))
        .unwrap();
    assert_eq!(under.len(), 1);
    assert_eq!(under[0].0, binary);

    // Batch atomicity: a batch that fails validation leaves nothing behind.
    let mut bad = WriteBatch::new();
    bad.put("atomic", k(&["first"]), b"x".to_vec()).put(
        "Not A Namespace!",
        k(&["second"]),
        b"y".to_vec(),
    );
    assert!(matches!(
        store.apply(bad),
        Err(StoreError::InvalidArgument { .. })
    ));
    assert_eq!(store.get("atomic", &k(&["first"])).unwrap(), None);
    // Within a batch, later writes to the same key win.
    let mut batch = WriteBatch::new();
    batch
        .put("atomic", k(&["x"]), b"1".to_vec())
        .delete("atomic", k(&["x"]))
        .put("atomic", k(&["x"]), b"3".to_vec());
    store.apply(batch).unwrap();
    assert_eq!(
        store.get("atomic", &k(&["x"])).unwrap(),
        Some(b"3".to_vec())
    );

    // Transaction: read-your-writes, including scans and deletes, invisible until commit.
    let mut txn = Transaction::begin(&store);
    txn.put("scan", k(&["g", "g1", "new"]), b"n".to_vec())
        .unwrap();
    txn.delete("scan", k(&["g", "g1", "ctx"])).unwrap();
    assert_eq!(
        txn.get("scan", &k(&["g", "g1", "new"])).unwrap(),
        Some(b"n".to_vec())
    );
    assert_eq!(txn.get("scan", &k(&["g", "g1", "ctx"])).unwrap(), None);
    assert_eq!(
        txn.get("scan", &k(&["g", "g1", "tree"])).unwrap(),
        Some(b"t1".to_vec())
    );
    let seen: Vec<Key> = txn
        .scan_prefix("scan", &k(&["g", "g1"]))
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(seen, vec![k(&["g", "g1", "new"]), k(&["g", "g1", "tree"])]);
    assert_eq!(store.get("scan", &k(&["g", "g1", "new"])).unwrap(), None);
    assert_eq!(
        store.get("scan", &k(&["g", "g1", "ctx"])).unwrap(),
        Some(b"c1".to_vec())
    );
    // Rollback by drop.
    drop(txn);
    assert_eq!(store.get("scan", &k(&["g", "g1", "new"])).unwrap(), None);
    assert_eq!(
        store.get("scan", &k(&["g", "g1", "ctx"])).unwrap(),
        Some(b"c1".to_vec())
    );
    // Commit.
    let mut txn = Transaction::begin(&store);
    txn.put("scan", k(&["g", "g1", "new"]), b"n".to_vec())
        .unwrap();
    assert_eq!(txn.delete_prefix("scan", &k(&["g", "g2"])).unwrap(), 1);
    txn.commit().unwrap();
    assert_eq!(
        store.get("scan", &k(&["g", "g1", "new"])).unwrap(),
        Some(b"n".to_vec())
    );
    assert!(
        store
            .scan_prefix("scan", &k(&["g", "g2"]))
            .unwrap()
            .is_empty()
    );

    // Reopen keeps every committed write.
    if let Some(reopen) = reopen {
        let before = snapshot(&*store);
        drop(store);
        let reopened = reopen();
        assert_eq!(snapshot(&*reopened), before);
        assert_eq!(
            reopened.get("ns", &k(&["empty"])).unwrap(),
            Some(Vec::new())
        );
    }
}

fn snapshot(store: &dyn KeyValueStore) -> Vec<(String, Key, Vec<u8>)> {
    let mut all = Vec::new();
    for ns in ["ns", "other", "scan", "scan2", "bin", "atomic"] {
        let mut entries = store.scan_prefix(ns, &Key::empty()).unwrap();
        entries.sort();
        all.extend(entries.into_iter().map(|(k, v)| (ns.to_owned(), k, v)));
    }
    all
}

fn redb_at(path: &Path) -> RedbStore {
    RedbStore::open(path).unwrap()
}

#[test]
fn memory_store_conforms() {
    conformance(Arc::new(MemoryStore::new()), None);
}

#[test]
fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let first = RedbStore::create(&path).unwrap();
    let reopen = || -> SharedStore { Arc::new(redb_at(&path)) };
    conformance(Arc::new(first), Some(&reopen));
}

#[test]
fn sealed_memory_store_conforms() {
    let inner = Arc::new(MemoryStore::new());
    let key = MasterKey::generate();
    let first = SealedStore::create_with_key(inner.clone(), &key).unwrap();
    let reopen =
        || -> SharedStore { Arc::new(SealedStore::open_with_key(inner.clone(), &key).unwrap()) };
    conformance(Arc::new(first), Some(&reopen));
}

#[test]
fn sealed_redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.redb");
    let key = MasterKey::generate();
    let first = SealedStore::create_with_key(RedbStore::create(&path).unwrap(), &key).unwrap();
    let reopen =
        || -> SharedStore { Arc::new(SealedStore::open_with_key(redb_at(&path), &key).unwrap()) };
    conformance(Arc::new(first), Some(&reopen));
}

#[test]
fn redb_handles_share_one_database_within_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.redb");
    let first = RedbStore::create(&path).unwrap();
    // A second open in the same process must not fail with "already open": it shares.
    let second = RedbStore::open(dir.path().join(".").join("shared.redb")).unwrap();
    put(&first, "ns", k(&["x"]), b"seen by both");
    assert_eq!(
        second.get("ns", &k(&["x"])).unwrap(),
        Some(b"seen by both".to_vec())
    );
    drop(first);
    drop(second);
    // Once every handle is gone, the file can be opened afresh and still holds the data.
    assert_eq!(
        redb_at(&path).get("ns", &k(&["x"])).unwrap(),
        Some(b"seen by both".to_vec())
    );
}

#[test]
fn failing_store_conforms_while_disarmed_and_counts_every_call() {
    let store = Arc::new(FailingStore::new(MemoryStore::new()));
    conformance(store.clone(), None);
    let calls = store.calls();
    assert!(calls.applies > 0 && calls.gets > 0 && calls.scans > 0);
    assert_eq!(store.faults_injected(), 0);
}

#[test]
fn failing_store_keeps_a_sealed_store_atomic_when_its_apply_fails() {
    // The fault sits under the sealing layer, where a real disk error would.
    let failing = Arc::new(FailingStore::new(MemoryStore::new()));
    let sealed = SealedStore::create_with_key(failing.clone(), &MasterKey::generate()).unwrap();
    put(&sealed, "ns", k(&["a"]), b"kept");
    let before = failing.inner().dump().unwrap();
    failing.fail_at(FailPoint::Apply(1));
    let mut batch = WriteBatch::new();
    batch
        .put("ns", k(&["a"]), b"lost".to_vec())
        .put("ns", k(&["b"]), b"lost".to_vec());
    let error = sealed.apply(batch).unwrap_err();
    assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("injected fault at apply #1"));
    assert_eq!(failing.inner().dump().unwrap(), before);
    assert_eq!(
        sealed.get("ns", &k(&["a"])).unwrap(),
        Some(b"kept".to_vec())
    );
    assert_eq!(sealed.get("ns", &k(&["b"])).unwrap(), None);
}
