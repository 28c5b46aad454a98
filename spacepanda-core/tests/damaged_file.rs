//! Issue 16, scenario 7: a damaged redb file gives a typed error, never a panic out of the API.
//!
//! A real sealed store file is damaged in place, in a different seeded way per trial (bits
//! flipped, a range overwritten, the file cut short, a genuine first page followed by garbage, a
//! page zeroed), and then opened, read, scanned and written through `RedbStore` and
//! `SealedStore`. redb 4.5 panics on some such files; none of those panics may escape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "support/hostile_api.rs"]
mod api;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use api::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spacepanda_core::{Key, KeyValueStore, MasterKey, SealedStore, WriteBatch};

const SEED: u64 = 0x16_d15c;
const TRIALS: u64 = 200;
const NAMESPACES: [&str; 3] = ["mls", "kp_ledger", "outbox"];
const PAGE: usize = 4096;

/// Writes a sealed store with a few hundred entries over several batches, so the file has
/// branch pages, leaf pages and freed pages.
fn original(path: &Path, key: &MasterKey, rng: &mut StdRng) -> Vec<u8> {
    let store = create_sealed_key(path, key);
    for batch_number in 0..12u32 {
        let mut batch = WriteBatch::new();
        for item in 0..25u32 {
            let namespace = NAMESPACES[(item % 3) as usize];
            let len = rng.gen_range(0..600);
            let value: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            batch.put(
                namespace,
                Key::from_segments([batch_number.to_be_bytes(), item.to_be_bytes()]),
                value,
            );
        }
        store.apply(batch).unwrap();
    }
    drop(store);
    std::fs::read(path).unwrap()
}

fn damage(bytes: &mut Vec<u8>, rng: &mut StdRng) {
    let len = bytes.len();
    match rng.gen_range(0..5) {
        0 => {
            for _ in 0..rng.gen_range(1..=8) {
                let at = rng.gen_range(0..len);
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => {
            let start = rng.gen_range(0..len);
            let end = (start + rng.gen_range(1..=PAGE)).min(len);
            rng.fill(&mut bytes[start..end]);
        }
        2 => bytes.truncate(rng.gen_range(0..len)),
        3 => {
            let keep = rng.gen_range(PAGE / 8..=PAGE).min(len);
            rng.fill(&mut bytes[keep..]);
        }
        _ => {
            let page = rng.gen_range(0..len / PAGE);
            bytes[page * PAGE..(page + 1) * PAGE].fill(0);
        }
    }
}

/// Uses a damaged file every way the layers above do. Errors are the expected outcome; the
/// return value says how far it got.
fn exercise(path: &Path, key: &MasterKey) -> &'static str {
    let Ok(file) = open_plain(path) else {
        return "refused at open";
    };
    for namespace in NAMESPACES.iter().chain([&INNER_NS]) {
        let _ = file.scan_prefix(namespace, &Key::empty());
        let _ = file.get(namespace, &Key::from_segment("absent"));
    }
    let _ = file.is_empty();
    let Ok(sealed) = SealedStore::open_with_key(file.clone(), key) else {
        return "file opened, sealed store refused";
    };
    for namespace in NAMESPACES {
        let _ = sealed.scan_prefix(namespace, &Key::empty());
        let _ = sealed.get(
            namespace,
            &Key::from_segments([0u32.to_be_bytes(), 0u32.to_be_bytes()]),
        );
    }
    let mut batch = WriteBatch::new();
    batch.put("mls", Key::from_segment("after"), b"x".to_vec());
    let _ = sealed.apply(batch);
    "opened"
}

#[test]
fn damaged_files_never_panic_out_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(SEED);
    let key = MasterKey::from_bytes(rng.r#gen());
    let pristine = original(&dir.path().join("original.redb"), &key, &mut rng);

    let mut escaped = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
    for trial in 0..TRIALS {
        let mut bytes = pristine.clone();
        damage(&mut bytes, &mut rng);
        let path = dir.path().join(format!("trial-{trial}.redb"));
        std::fs::write(&path, &bytes).unwrap();
        match catch_unwind(AssertUnwindSafe(|| exercise(&path, &key))) {
            Ok(outcome) => *outcomes.entry(outcome).or_default() += 1,
            Err(_) => escaped.push(trial),
        }
        std::fs::remove_file(&path).unwrap();
    }
    eprintln!("outcomes over {TRIALS} damaged files: {outcomes:?}");
    assert!(
        escaped.is_empty(),
        "panics escaped the store API in trials {escaped:?} (seed {SEED:#x})"
    );
    assert!(
        outcomes.get("refused at open").copied().unwrap_or(0) > 0,
        "no damage was ever detected: the test is not damaging the file"
    );

    // A panic inside redb must not leave the process unable to open files.
    let good = dir.path().join("good.redb");
    std::fs::write(&good, &pristine).unwrap();
    let reopened = open_sealed_key(&good, &key).unwrap();
    assert_eq!(
        reopened.scan_prefix("mls", &Key::empty()).unwrap().len(),
        12 * 9
    );
}
