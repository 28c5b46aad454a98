//! Issue 16, "hostile disks": a sealed store in a real redb file, modified between sessions by
//! someone who holds the file but not the key. Each test is one reported attack.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "support/hostile_api.rs"]
mod api;

use std::path::Path;

use api::*;
use spacepanda_core::{HEADER_NAMESPACE, Key, KeyValueStore, MasterKey, StoreError, WriteBatch};

fn write(store: &dyn KeyValueStore, namespace: &str, entries: &[(&str, &[u8])]) {
    let mut batch = WriteBatch::new();
    for (key, value) in entries {
        batch.put(namespace, Key::from_segment(key), value.to_vec());
    }
    store.apply(batch).unwrap();
}

fn header_key() -> Key {
    Key::from_segment("header")
}

/// Raw entries of the wrapped store: stored key and stored bytes.
type RawEntries = Vec<(Key, Vec<u8>)>;

/// Every raw entry of the wrapped store's sealed namespace.
fn raw_entries(path: &Path) -> RawEntries {
    open_plain(path)
        .unwrap()
        .scan_prefix(INNER_NS, &Key::empty())
        .unwrap()
}

fn raw_apply(path: &Path, batch: WriteBatch) {
    open_plain(path).unwrap().apply(batch).unwrap();
}

fn assert_refused<T>(result: Result<T, StoreError>, expected: fn(&StoreError) -> bool, case: &str) {
    match result {
        Ok(_) => panic!("{case}: opened as if nothing happened"),
        Err(error) => assert!(expected(&error), "{case}: unexpected error {error:?}"),
    }
}

// Scenario 6: a tampered file must never open as a new, empty device.

#[test]
fn a_file_truncated_to_zero_bytes_is_refused_not_initialised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    let key = MasterKey::generate();
    write(
        &create_sealed_key(&path, &key),
        "identity",
        &[("me", b"alice")],
    );

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_refused(open_sealed_key(&path, &key), is_damaged_file, "empty file");
    // Refusing it left it alone: still empty, not a fresh database.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn a_deleted_header_is_refused_for_any_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    write(
        &create_sealed_pass(&path, b"alice's passphrase"),
        "identity",
        &[("me", b"alice")],
    );

    let mut batch = WriteBatch::new();
    batch.delete(HEADER_NAMESPACE, header_key());
    raw_apply(&path, batch);
    assert_refused(
        open_sealed_pass(&path, b"thief's passphrase"),
        is_not_sealed,
        "header deleted",
    );
    // And nothing was written over the old data.
    assert_eq!(
        open_plain(&path)
            .unwrap()
            .get(HEADER_NAMESPACE, &header_key())
            .unwrap(),
        None
    );
}

#[test]
fn another_devices_header_opened_with_that_devices_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.redb");
    let attacker = dir.path().join("attacker.redb");
    write(
        &create_sealed_pass(&victim, b"victim"),
        "identity",
        &[("me", b"alice")],
    );
    write(
        &create_sealed_pass(&attacker, b"attacker"),
        "identity",
        &[("me", b"mallory")],
    );

    // The attacker's header alone, then with everything else of the attacker's metadata
    // namespace (its commitment record) as well.
    let attacker_meta = open_plain(&attacker)
        .unwrap()
        .scan_prefix(HEADER_NAMESPACE, &Key::empty())
        .unwrap();
    for take in [0, attacker_meta.len()] {
        let mut batch = WriteBatch::new();
        batch.put(
            HEADER_NAMESPACE,
            header_key(),
            open_plain(&attacker)
                .unwrap()
                .get(HEADER_NAMESPACE, &header_key())
                .unwrap()
                .unwrap(),
        );
        for (key, value) in attacker_meta.iter().take(take) {
            batch.put(HEADER_NAMESPACE, key.clone(), value.clone());
        }
        raw_apply(&victim, batch);
        assert_refused(
            open_sealed_pass(&victim, b"attacker"),
            is_corrupted,
            "transplanted header",
        );
    }
}

#[test]
fn a_plain_store_is_neither_opened_nor_created_as_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.redb");
    write(&create_plain(&path), "identity", &[("me", b"alice")]);
    let key = MasterKey::generate();

    assert_refused(
        open_sealed_key(&path, &key),
        is_not_sealed,
        "plain opened as sealed",
    );
    assert_refused(
        create_sealed_over(open_plain(&path).unwrap(), &key),
        is_not_empty,
        "sealed created over plain data",
    );
    // The plain data is untouched and no header appeared.
    let plain = open_plain(&path).unwrap();
    assert_eq!(
        plain.get("identity", &Key::from_segment("me")).unwrap(),
        Some(b"alice".to_vec())
    );
    assert_eq!(plain.get(HEADER_NAMESPACE, &header_key()).unwrap(), None);
}

// Scenario 8: the set of entries is authenticated, not only each entry.

/// A sealed store with five entries written in batch 1 and `k3` rewritten in batches 2 and 3.
/// Returns the raw entries after batch 1 and after batch 3.
fn three_commits(path: &Path, key: &MasterKey) -> (RawEntries, RawEntries) {
    let store = create_sealed_key(path, key);
    write(
        &store,
        "mls",
        &[
            ("k1", b"1"),
            ("k2", b"2"),
            ("k3", b"3 v1"),
            ("k4", b"4"),
            ("k5", b"5"),
        ],
    );
    drop(store);
    let after_first = raw_entries(path);
    let store = open_sealed_key(path, key).unwrap();
    write(&store, "mls", &[("k3", b"3 v2")]);
    write(&store, "mls", &[("k3", b"3 v3")]);
    drop(store);
    (after_first, raw_entries(path))
}

#[test]
fn deleting_any_single_entry_is_detected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    let key = MasterKey::generate();
    let (_, entries) = three_commits(&path, &key);
    assert_eq!(entries.len(), 5);
    let pristine = std::fs::read(&path).unwrap();
    for (stored_key, _) in &entries {
        std::fs::write(&path, &pristine).unwrap();
        assert!(
            open_sealed_key(&path, &key).is_ok(),
            "the copy itself opens"
        );
        let mut batch = WriteBatch::new();
        batch.delete(INNER_NS, stored_key.clone());
        raw_apply(&path, batch);
        assert_refused(
            open_sealed_key(&path, &key),
            is_corrupted,
            "one entry deleted",
        );
    }
}

#[test]
fn rolling_one_entry_back_to_an_older_sealed_value_is_detected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    let key = MasterKey::generate();
    let (before, after) = three_commits(&path, &key);
    let (stored_k3, old_value) = before
        .iter()
        .find(|(stored, value)| after.iter().any(|(k, v)| k == stored && v != value))
        .expect("k3 changed between batch 1 and batch 3")
        .clone();

    let mut batch = WriteBatch::new();
    batch.put(INNER_NS, stored_k3, old_value);
    raw_apply(&path, batch);
    assert_refused(
        open_sealed_key(&path, &key),
        is_corrupted,
        "one entry rolled back",
    );
}

// Scenario 9: namespace names do not reach the file.

#[test]
fn namespace_names_do_not_appear_in_the_file() {
    // Names of three or four letters ("mls", "seen") are left out: random ciphertext contains
    // a given 3-byte string somewhere in a few kilobytes often enough to make the test flaky.
    const NAMESPACES: [&str; 6] = [
        "kp_ledger",
        "fork_snapshot",
        "outbox",
        "app_inbox",
        "identity",
        "epoch_buffer",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    let store = create_sealed_key(&path, &MasterKey::generate());
    for namespace in NAMESPACES {
        write(&store, namespace, &[("a", b"x"), ("b", b"y"), ("c", b"z")]);
    }
    drop(store);
    let raw = std::fs::read(&path).unwrap();
    for namespace in NAMESPACES {
        assert!(
            !raw.windows(namespace.len())
                .any(|w| w == namespace.as_bytes()),
            "namespace `{namespace}` is readable in the file"
        );
    }
}

// Scenario 10: a planted header cannot make open expensive.

#[test]
fn a_header_demanding_more_than_the_accepted_maximum_is_refused_before_deriving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    drop(create_sealed_pass(&path, b"pass"));
    let header = open_plain(&path)
        .unwrap()
        .get(HEADER_NAMESPACE, &header_key())
        .unwrap()
        .unwrap();
    // Offsets: magic 8, version 4, kind 1, then memory KiB, passes, lanes (BE u32 each). Each
    // case is above the accepted maximum in one parameter and cheap enough that a build that
    // still derives with it returns (WrongKey) instead of hanging.
    for (offset, value) in [(13, 128 * 1024), (17, 5), (21, 8)] {
        let mut planted = header.clone();
        planted[offset..offset + 4].copy_from_slice(&u32::to_be_bytes(value));
        let mut batch = WriteBatch::new();
        batch.put(HEADER_NAMESPACE, header_key(), planted);
        raw_apply(&path, batch);
        assert_refused(
            open_sealed_pass(&path, b"pass"),
            is_corrupted,
            "planted Argon2 parameters",
        );
    }
}
