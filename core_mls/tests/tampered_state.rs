//! A device whose stored group state lost an entry (issue 16, item 8, at the engine): on a plain
//! store, where nothing below notices, the engine must not open as if the group never existed.
//! (Through `SealedStore` the deletion is already caught at open: spacepanda-core
//! `tests/hostile_disk.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use std::sync::Arc;

use core_identity::IdentityStore;
use core_mls::{MlsClient, MlsConfig, MlsError};
use engine_harness::Harness;
use spacepanda_core::{Key, KeyValueStore, RedbStore, SharedStore, WriteBatch};

#[test]
fn a_group_with_a_deleted_entry_is_corrupted_state_never_forgotten() {
    let mut h = Harness::redb(&["alice", "bob"], 11);
    let group = h.group_with(0, &[1]);
    let path = h.nodes[0].path.clone().unwrap();
    h.stop(0);

    let group_prefix = Key::from_segments([&b"g"[..], group.as_slice()]);
    let entries: Vec<Key> = {
        let store = RedbStore::open(&path).unwrap();
        store
            .scan_prefix("mls", &group_prefix)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    };
    assert!(
        entries.len() >= 5,
        "a group is several entries: {entries:?}"
    );

    let open = |file: &std::path::Path| {
        let store: SharedStore = Arc::new(RedbStore::open(file).unwrap());
        let clock: Arc<dyn spacepanda_core::Clock> = Arc::new(h.clock.clone());
        let identity = IdentityStore::new(store.clone(), clock.clone())
            .load()
            .unwrap()
            .unwrap();
        MlsClient::open(store, clock, identity, MlsConfig::default())
    };
    // Untouched, the copy opens with its group.
    let trial = path.with_extension("trial");
    std::fs::copy(&path, &trial).unwrap();
    assert_eq!(open(&trial).unwrap().groups(), vec![group.clone()]);

    let mut refused = 0;
    for key in &entries {
        std::fs::remove_file(&trial).unwrap();
        std::fs::copy(&path, &trial).unwrap();
        {
            let store = RedbStore::open(&trial).unwrap();
            let mut batch = WriteBatch::new();
            batch.delete("mls", key.clone());
            store.apply(batch).unwrap();
        }
        match open(&trial) {
            Err(MlsError::CorruptedState { .. }) => refused += 1,
            // Some entries are optional to OpenMLS (it loads without them); what matters is
            // that the group is never silently gone.
            Ok(client) => assert_eq!(
                client.groups(),
                vec![group.clone()],
                "deleting {key:?} made the group disappear"
            ),
            Err(other) => panic!("deleting {key:?}: {other:?}"),
        }
    }
    assert!(
        refused >= 1,
        "no deletion was reported as CorruptedState ({} entries)",
        entries.len()
    );
}
