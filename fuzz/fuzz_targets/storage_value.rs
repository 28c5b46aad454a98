//! Stored values are attacker-controlled (a modified disk without SealedStore, or a bug): take
//! the store of bob — a member of a live group, with key packages, outbox, de-duplication
//! records, identity — and edit, replace, delete or swap the value under one of its real keys
//! (`mls`, `mls_key_package`, `mls_signature_key`, `mls_encryption_key`, `mls_meta`,
//! `kp_ledger`, `group_meta`, `seen`, `outbox`, `identity`, …). Then `IdentityStore::load`,
//! `MlsClient::open` and every operation on the loaded groups (process a message, send,
//! self-update, tick, key package queries) must return a value or a typed error, never panic.
#![no_main]

use std::sync::{Arc, LazyLock};

use core_identity::IdentityStore;
use core_mls::{MlsClient, MlsConfig};
use libfuzzer_sys::fuzz_target;
use spacepanda_core::{Key, KeyValueStore, SharedStore, WriteBatch};
use spacepanda_fuzz::{CLOCK, FIXTURE, Mutation, Snapshot, clock, restore};

static ENTRIES: LazyLock<Snapshot> = LazyLock::new(|| FIXTURE.bob.snapshot.clone());

fuzz_target!(|data: &[u8]| {
    let [mode, hi, lo, rest @ ..] = data else {
        return;
    };
    let fx = &*FIXTURE;
    let entries = &*ENTRIES;
    let index = usize::from(u16::from_be_bytes([*hi, *lo])) % entries.len();
    let (namespace, key, value): &(String, Key, Vec<u8>) = &entries[index];
    let store = restore(entries);
    let mut batch = WriteBatch::new();
    match mode % 4 {
        0 => batch.put(namespace, key.clone(), Mutation::apply(value, rest)),
        1 => batch.put(namespace, key.clone(), rest.to_vec()),
        2 => batch.delete(namespace, key.clone()),
        _ => {
            // Move another entry's genuine value here (a type confusion a disk edit can make).
            let other = rest
                .get(..2)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                % entries.len();
            batch.put(namespace, key.clone(), entries[other].2.clone())
        }
    };
    store.apply(batch).unwrap();
    let shared: SharedStore = store.clone();

    let _ = IdentityStore::new(shared.clone(), clock()).load();
    let Ok(mut bob) = MlsClient::open(
        shared,
        clock(),
        fx.bob.identity.clone(),
        MlsConfig::default(),
    ) else {
        return;
    };
    let _ = bob.publishable_key_packages();
    let _ = bob.key_package_status();
    let _ = bob.pending_outbound();
    for group in bob.groups() {
        let _ = bob.epoch(&group);
        let _ = bob.epoch_authenticator(&group);
        let _ = bob.members(&group);
        let _ = bob.handle_envelope(&fx.applications[0].0);
        let _ = bob.handle_envelope(&fx.commits[0].envelope);
        let _ = bob.send(&group, b"after tampering");
        let _ = bob.self_update(&group);
    }
    let _ = bob.handle_envelope(fx.welcome());
    let _ = bob.tick(spacepanda_core::Clock::now(&*CLOCK));
    let _ = Arc::strong_count(&store);
});
