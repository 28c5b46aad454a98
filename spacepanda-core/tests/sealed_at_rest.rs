//! Encryption at rest, checked against the real database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use spacepanda_core::{
    HEADER_NAMESPACE, KdfParams, Key, KeyValueStore, MasterKey, MemoryStore, RedbStore,
    SEALED_NAMESPACE, SealedStore, StoreError, WriteBatch,
};

const MARKER: &str = "MARKER-7f3a9c-group-id-and-secret";
const PARAMS: KdfParams = KdfParams::INSECURE_FOR_TESTS;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn marker_never_reaches_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.redb");
    {
        let sealed =
            SealedStore::create_with_passphrase(RedbStore::create(&path).unwrap(), b"pass", PARAMS)
                .unwrap();
        let mut batch = WriteBatch::new();
        // As a key segment, as a value, and both in a prefix-scanned layout.
        batch
            .put(
                "mls",
                Key::from_segments(["g", MARKER, "tree"]),
                MARKER.as_bytes().to_vec(),
            )
            .put("mls", Key::from_segment(MARKER), b"x".repeat(4096))
            .put(
                "identity",
                Key::from_segment("name"),
                MARKER.repeat(3).into_bytes(),
            );
        sealed.apply(batch).unwrap();
        let scanned = sealed
            .scan_prefix("mls", &Key::from_segments(["g", MARKER]))
            .unwrap();
        assert_eq!(scanned.len(), 1);
        assert_eq!(scanned[0].1, MARKER.as_bytes());
    }
    let raw = std::fs::read(&path).unwrap();
    assert!(!raw.is_empty());
    assert!(
        !contains(&raw, MARKER.as_bytes()),
        "marker found in the raw file"
    );
    // Sanity check of the check: the same data written without sealing is visible.
    let plain_path = dir.path().join("plain.redb");
    {
        let plain = RedbStore::create(&plain_path).unwrap();
        let mut batch = WriteBatch::new();
        batch.put("mls", Key::from_segment("k"), MARKER.as_bytes().to_vec());
        plain.apply(batch).unwrap();
    }
    assert!(contains(
        &std::fs::read(&plain_path).unwrap(),
        MARKER.as_bytes()
    ));
}

#[test]
fn wrong_passphrase_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.redb");
    drop(
        SealedStore::create_with_passphrase(RedbStore::create(&path).unwrap(), b"right", PARAMS)
            .unwrap(),
    );
    let wrong = SealedStore::open_with_passphrase(RedbStore::open(&path).unwrap(), b"wrong");
    assert!(matches!(wrong, Err(StoreError::WrongKey)));
    // A raw key does not open a passphrase store either.
    let raw = SealedStore::open_with_key(RedbStore::open(&path).unwrap(), &MasterKey::generate());
    assert!(matches!(raw, Err(StoreError::WrongKey)));
    // The right one still does, with the parameters from the header.
    assert!(SealedStore::open_with_passphrase(RedbStore::open(&path).unwrap(), b"right").is_ok());
}

#[test]
fn wrong_raw_key_is_reported_at_open() {
    let inner = Arc::new(MemoryStore::new());
    drop(SealedStore::create_with_key(inner.clone(), &MasterKey::generate()).unwrap());
    assert!(matches!(
        SealedStore::open_with_key(inner, &MasterKey::generate()),
        Err(StoreError::WrongKey)
    ));
}

/// The inner store's entries in namespace `mls`.
fn raw_mls_entries(inner: &MemoryStore) -> Vec<(Key, Vec<u8>)> {
    inner
        .dump()
        .unwrap()
        .into_iter()
        .filter(|(ns, _, _)| ns == SEALED_NAMESPACE)
        .map(|(_, k, v)| (k, v))
        .collect()
}

#[test]
fn tampered_truncated_and_moved_values_are_corrupted() {
    let inner = Arc::new(MemoryStore::new());
    let sealed = SealedStore::create_with_key(inner.clone(), &MasterKey::generate()).unwrap();
    let key_a = Key::from_segment("a");
    let mut batch = WriteBatch::new();
    batch.put("mls", key_a.clone(), b"precious state".to_vec());
    sealed.apply(batch).unwrap();
    let [(stored_a, value_a)]: [(Key, Vec<u8>); 1] = raw_mls_entries(&inner).try_into().unwrap();
    assert_ne!(stored_a, key_a, "keys are blinded");
    let corrupted = |result: Result<Option<Vec<u8>>, StoreError>| matches!(result, Err(StoreError::Corrupted { namespace, .. }) if namespace == "mls");

    // Tampered: flip one ciphertext bit.
    let mut tampered = value_a.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let mut batch = WriteBatch::new();
    batch.put(SEALED_NAMESPACE, stored_a.clone(), tampered);
    inner.apply(batch).unwrap();
    assert!(corrupted(sealed.get("mls", &key_a)));
    assert!(sealed.scan_prefix("mls", &Key::empty()).is_err());

    // Truncated, at every length from empty to one byte short.
    for len in [0, 1, 10, 25, value_a.len() - 1] {
        let mut batch = WriteBatch::new();
        batch.put(SEALED_NAMESPACE, stored_a.clone(), value_a[..len].to_vec());
        inner.apply(batch).unwrap();
        assert!(corrupted(sealed.get("mls", &key_a)), "length {len}");
    }

    // Moved: a valid sealed value copied under another key.
    let key_b = Key::from_segment("b");
    let mut batch = WriteBatch::new();
    batch.put("mls", key_b.clone(), b"other".to_vec());
    sealed.apply(batch).unwrap();
    let stored_b = raw_mls_entries(&inner)
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| *k != stored_a)
        .unwrap();
    let mut batch = WriteBatch::new();
    batch.put(SEALED_NAMESPACE, stored_b, value_a.clone());
    inner.apply(batch).unwrap();
    assert!(corrupted(sealed.get("mls", &key_b)));

    // Moved to the same key in another namespace: the AAD binds the namespace, so caught too.
    let mut batch = WriteBatch::new();
    batch.put("other", key_a.clone(), b"other namespace".to_vec());
    sealed.apply(batch).unwrap();
    let stored_other = raw_mls_entries(&inner)
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| {
            *k != stored_a && !k.starts_with(&stored_a) && k.segment_count() == 2 && {
                k.segments().next() != stored_a.segments().next()
            }
        })
        .unwrap();
    let mut batch = WriteBatch::new();
    batch.put(SEALED_NAMESPACE, stored_other, value_a.clone());
    inner.apply(batch).unwrap();
    assert!(matches!(
        sealed.get("other", &key_a),
        Err(StoreError::Corrupted { namespace, .. }) if namespace == "other"
    ));

    // Restoring the original bytes restores the value: nothing else was damaged.
    let mut batch = WriteBatch::new();
    batch.put(SEALED_NAMESPACE, stored_a, value_a);
    inner.apply(batch).unwrap();
    assert_eq!(
        sealed.get("mls", &key_a).unwrap(),
        Some(b"precious state".to_vec())
    );
}

#[test]
fn damaged_or_future_header_is_a_typed_error() {
    let inner = Arc::new(MemoryStore::new());
    drop(SealedStore::create_with_passphrase(inner.clone(), b"p", PARAMS).unwrap());
    let header = inner
        .get(HEADER_NAMESPACE, &Key::from_segment("header"))
        .unwrap()
        .unwrap();

    let mut future = header.clone();
    future[8..12].copy_from_slice(&99u32.to_be_bytes());
    let mut batch = WriteBatch::new();
    batch.put(HEADER_NAMESPACE, Key::from_segment("header"), future);
    inner.apply(batch).unwrap();
    assert!(matches!(
        SealedStore::open_with_passphrase(inner.clone(), b"p"),
        Err(StoreError::UnsupportedFormat { found: 99, .. })
    ));
    // Version 1 (pre-release, no set commitment) is refused too, not migrated.
    let mut old = header.clone();
    old[8..12].copy_from_slice(&1u32.to_be_bytes());
    let mut batch = WriteBatch::new();
    batch.put(HEADER_NAMESPACE, Key::from_segment("header"), old);
    inner.apply(batch).unwrap();
    assert!(matches!(
        SealedStore::open_with_passphrase(inner.clone(), b"p"),
        Err(StoreError::UnsupportedFormat {
            found: 1,
            supported: 2,
            ..
        })
    ));

    // A planted header asking for 4 GiB of Argon2 memory is refused, not obeyed.
    let mut greedy = header.clone();
    greedy[13..17].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut batch = WriteBatch::new();
    batch.put(HEADER_NAMESPACE, Key::from_segment("header"), greedy);
    inner.apply(batch).unwrap();
    assert!(matches!(
        SealedStore::open_with_passphrase(inner.clone(), b"p"),
        Err(StoreError::Corrupted { .. })
    ));

    let mut batch = WriteBatch::new();
    batch.put(
        HEADER_NAMESPACE,
        Key::from_segment("header"),
        header[..20].to_vec(),
    );
    inner.apply(batch).unwrap();
    assert!(matches!(
        SealedStore::open_with_passphrase(inner, b"p"),
        Err(StoreError::Corrupted { .. })
    ));
}

#[test]
fn the_header_namespace_name_through_the_sealed_store_is_an_ordinary_namespace() {
    // Every sealed namespace is blinded into the wrapped store's `sealed` namespace, so a
    // caller's namespace can never reach the clear header.
    let inner = Arc::new(MemoryStore::new());
    let key = MasterKey::generate();
    let sealed = SealedStore::create_with_key(inner.clone(), &key).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(
        HEADER_NAMESPACE,
        Key::from_segment("header"),
        b"evil".to_vec(),
    );
    sealed.apply(batch).unwrap();
    drop(sealed);
    let reopened = SealedStore::open_with_key(inner, &key).unwrap();
    assert_eq!(
        reopened
            .get(HEADER_NAMESPACE, &Key::from_segment("header"))
            .unwrap(),
        Some(b"evil".to_vec())
    );
}

#[test]
fn secrets_do_not_appear_in_debug() {
    let key = MasterKey::from_bytes([0x42; 32]);
    let printed = format!("{key:?}");
    assert!(
        !printed.contains("42") && !printed.contains("66"),
        "{printed}"
    );
    let sealed = SealedStore::create_with_key(MemoryStore::new(), &key).unwrap();
    assert_eq!(format!("{sealed:?}"), "SealedStore { .. }");
    let mut batch = WriteBatch::new();
    batch.put("mls", Key::from_segment("k"), b"hunter2-secret".to_vec());
    assert!(!format!("{batch:?}").contains("hunter2"));
}
