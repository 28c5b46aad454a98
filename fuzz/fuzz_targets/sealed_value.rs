//! SealedStore reading attacker-controlled bytes: a stolen-and-modified disk may hold anything
//! under any key, including the header. Every read must be a value or a typed error.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use spacepanda_core::{
    HEADER_NAMESPACE, Key, KeyValueStore, MasterKey, MemoryStore, SEALED_NAMESPACE, SealedStore,
    StoreError, WriteBatch,
};

const KEY: [u8; 32] = [0x5a; 32];

/// The blinded key under which the sealed store keeps `["g", "group", "tree"]` in `mls`.
static STORED_KEY: LazyLock<Key> = LazyLock::new(|| {
    let inner = Arc::new(MemoryStore::new());
    let sealed = SealedStore::create_with_key(inner.clone(), &MasterKey::from_bytes(KEY)).unwrap();
    let mut batch = WriteBatch::new();
    batch.put("mls", Key::from_segments(["g", "group", "tree"]), b"v".to_vec());
    sealed.apply(batch).unwrap();
    inner.dump().unwrap().into_iter().find(|(ns, _, _)| ns == SEALED_NAMESPACE).unwrap().1
});

fuzz_target!(|data: &[u8]| {
    let (selector, bytes) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => return,
    };
    let inner = Arc::new(MemoryStore::new());
    if selector % 2 == 0 {
        // Attacker-controlled header.
        let mut batch = WriteBatch::new();
        batch.put(HEADER_NAMESPACE, Key::from_segment("header"), bytes.to_vec());
        inner.apply(batch).unwrap();
        match SealedStore::open_with_key(inner.clone(), &MasterKey::from_bytes(KEY)) {
            Ok(_) | Err(StoreError::WrongKey | StoreError::Corrupted { .. } | StoreError::UnsupportedFormat { .. } | StoreError::NotSealed) => {}
            Err(other) => panic!("unexpected error for a bad header: {other}"),
        }
        return;
    }
    let sealed = SealedStore::create_with_key(inner.clone(), &MasterKey::from_bytes(KEY)).unwrap();
    // Attacker-controlled value under a real blinded key (and under a second, made-up key).
    let mut batch = WriteBatch::new();
    batch.put(SEALED_NAMESPACE, STORED_KEY.clone(), bytes.to_vec());
    batch.put(SEALED_NAMESPACE, Key::from_segment(bytes.get(..16).unwrap_or(bytes)), bytes.to_vec());
    inner.apply(batch).unwrap();
    let key = Key::from_segments(["g", "group", "tree"]);
    match sealed.get("mls", &key) {
        Ok(_) | Err(StoreError::Corrupted { .. }) => {}
        Err(other) => panic!("unexpected error for a bad value: {other}"),
    }
    match sealed.scan_prefix("mls", &Key::empty()) {
        Ok(_) | Err(StoreError::Corrupted { .. }) => {}
        Err(other) => panic!("unexpected error for a bad scan: {other}"),
    }
});
