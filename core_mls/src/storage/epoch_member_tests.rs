//! Past epochs' member lists stored once (`epoch_members`): the layout OpenMLS 0.9 uses is the
//! one the encoder expects (pinned), late messages of past epochs still decrypt after a reload,
//! a message writes no list, unreferenced lists are collected, other layouts fall back to the
//! whole encoding, a broken record is a typed error, and a store of format 1 migrates.
//!
//! Test code, compiled only under `cfg(test)`: each `unwrap` here is an assertion that the
//! step succeeds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::Duration;

use core_identity::IdentityStore;
use openmls::prelude::OpenMlsProvider as _;
use serde::{Deserialize, Serialize};
use spacepanda_core::{
    Clock, Key, KeyValueStore, ManualClock, MemoryStore, SharedStore, Transaction,
};

use super::epoch_members::{self, INDEX_NAMESPACE, MEMBERS_NAMESPACE};
use super::key_layout::{self, GROUP_NAMESPACE, META_NAMESPACE, label};
use super::{STORAGE_FORMAT_VERSION, codec};
use crate::{EnvelopeKind, Event, GroupId, MlsClient, MlsConfig, MlsError, Output};

struct Device {
    client: MlsClient,
    store: SharedStore,
    clock: Arc<ManualClock>,
}

fn device(name: &str, seed: u8, format_1: bool) -> Device {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::starting_now());
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let identity = IdentityStore::new(store.clone(), dyn_clock.clone())
        .create(name)
        .unwrap();
    let client = MlsClient::open_seeded(
        store.clone(),
        dyn_clock,
        identity,
        MlsConfig::default(),
        [seed; 32],
    )
    .unwrap();
    if format_1 {
        client.provider.storage().write_as_format_1();
    }
    Device {
        client,
        store,
        clock,
    }
}

fn envelope(output: &Output, kind: EnvelopeKind) -> Vec<u8> {
    output
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == kind)
        .map(|o| o.envelope.to_bytes())
        .expect("an envelope of that kind")
}

/// Alice creates a group and adds bob.
fn pair(format_1: bool) -> (Device, Device, GroupId) {
    let mut alice = device("alice", 1, format_1);
    let mut bob = device("bob", 2, format_1);
    let package = bob
        .client
        .publishable_key_packages()
        .unwrap()
        .into_iter()
        .find(|p| !p.last_resort)
        .unwrap()
        .key_package;
    let group = alice.client.create_group().unwrap();
    let added = alice.client.add_members(&group, &[package]).unwrap();
    bob.client
        .handle_envelope(&envelope(&added, EnvelopeKind::Welcome))
        .unwrap();
    (alice, bob, group)
}

/// Alice commits a self-update and bob processes it.
fn advance(alice: &mut Device, bob: &mut Device, group: &GroupId) {
    let commit = alice.client.self_update(group).unwrap();
    bob.client
        .handle_envelope(&envelope(&commit, EnvelopeKind::Commit))
        .unwrap();
}

/// The commits an output sends.
fn commits(output: &Output) -> Vec<Vec<u8>> {
    output
        .outbound
        .iter()
        .filter(|o| o.envelope.kind() == EnvelopeKind::Commit)
        .map(|o| o.envelope.to_bytes())
        .collect()
}

fn record(store: &SharedStore, group: &GroupId) -> Vec<u8> {
    store
        .get(
            GROUP_NAMESPACE,
            &key_layout::group_key(group.as_slice(), label::MESSAGE_SECRETS),
        )
        .unwrap()
        .expect("a message secrets record")
}

/// The hashes a split record references.
fn references(record: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(record[0], 0x02, "the record is split");
    let count = u32::from_be_bytes(record[1..5].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| record[5 + i * 40 + 8..5 + (i + 1) * 40].to_vec())
        .collect()
}

fn lists(store: &SharedStore, group: &GroupId) -> Vec<(Key, Vec<u8>)> {
    store
        .scan_prefix(MEMBERS_NAMESPACE, &Key::from_segment(group.as_slice()))
        .unwrap()
}

fn index_epochs(store: &SharedStore, group: &GroupId) -> Vec<u64> {
    let bytes = store
        .get(INDEX_NAMESPACE, &epoch_members::index_key(group.as_slice()))
        .unwrap()
        .expect("an index");
    let mut epochs: Vec<u64> = epoch_members::decode_index(&bytes)
        .unwrap()
        .into_values()
        .collect();
    epochs.sort_unstable();
    epochs
}

fn message_body(output: &Output) -> Vec<u8> {
    match &output.events[..] {
        [Event::Message { body, .. }] => body.clone(),
        other => panic!("expected one message, got {other:?}"),
    }
}

#[test]
fn openmls_layout_is_split() {
    // Pins OpenMLS 0.9's layout (`EpochTree { epoch, message_secrets { serialized_context, .. },
    // leaves }`): should an upgrade change it, records are written whole again and this fails.
    let (mut alice, mut bob, group) = pair(false);
    for _ in 0..4 {
        advance(&mut alice, &mut bob, &group);
    }
    let past = MlsConfig::default().max_past_epochs;
    for device in [&alice, &bob] {
        let refs = references(&record(&device.store, &group));
        assert_eq!(refs.len(), past, "one reference per past epoch kept");
        let stored = lists(&device.store, &group);
        for hash in &refs {
            assert!(
                stored
                    .iter()
                    .any(|(key, _)| key.segments().nth(1) == Some(hash)),
                "every referenced list is stored"
            );
        }
    }
}

#[test]
fn a_late_message_of_a_past_epoch_decrypts_after_a_reload() {
    let (mut alice, mut bob, group) = pair(false);
    advance(&mut alice, &mut bob, &group);
    let late = envelope(
        &alice.client.send(&group, b"sent two epochs ago").unwrap(),
        EnvelopeKind::Application,
    );
    advance(&mut alice, &mut bob, &group);
    advance(&mut alice, &mut bob, &group);
    // The group comes back from storage: the past epochs' lists are spliced back in.
    bob.client.reload_group(&group).unwrap();
    let output = bob.client.handle_envelope(&late).unwrap();
    assert_eq!(message_body(&output), b"sent two epochs ago");
}

#[test]
fn messages_write_no_list_and_commits_one_each() {
    let (mut alice, mut bob, group) = pair(false);
    for _ in 0..3 {
        advance(&mut alice, &mut bob, &group);
    }
    let before = lists(&alice.store, &group);
    let bob_before = lists(&bob.store, &group);
    let record_before = record(&alice.store, &group).len();
    for i in 0..5u8 {
        let sent = alice.client.send(&group, &[i; 100]).unwrap();
        let output = bob
            .client
            .handle_envelope(&envelope(&sent, EnvelopeKind::Application))
            .unwrap();
        assert_eq!(message_body(&output), vec![i; 100]);
    }
    assert_eq!(
        lists(&alice.store, &group),
        before,
        "a message writes no list"
    );
    assert_eq!(
        lists(&bob.store, &group),
        bob_before,
        "nor does receiving one"
    );
    let epochs = index_epochs(&alice.store, &group);
    advance(&mut alice, &mut bob, &group);
    let after = index_epochs(&alice.store, &group);
    assert_eq!(after.len(), epochs.len() + 1, "a commit adds one list");
    // The record grows by one reference, never by a list.
    assert!(record(&alice.store, &group).len() < record_before + 1024);
}

#[test]
fn unreferenced_lists_are_collected() {
    let (mut alice, mut bob, group) = pair(false);
    let config = MlsConfig::default();
    let retention = config.fork_window_epochs + config.max_past_epochs as u64 + 2;
    for _ in 0..(retention + 10) {
        advance(&mut alice, &mut bob, &group);
    }
    for device in [&alice, &bob] {
        let epochs = index_epochs(&device.store, &group);
        let newest = *epochs.last().unwrap();
        assert!(
            epochs.iter().all(|e| e + retention >= newest),
            "lists older than the retention are gone: {epochs:?}"
        );
        assert_eq!(lists(&device.store, &group).len(), epochs.len());
    }
    // Bob is removed: his group goes, its lists stay while a snapshot could restore it, and go
    // with the last snapshot.
    let removal = alice
        .client
        .remove_user(&group, &bob.client.device().user_id())
        .unwrap();
    bob.client
        .handle_envelope(&envelope(&removal, EnvelopeKind::Commit))
        .unwrap();
    assert!(!lists(&bob.store, &group).is_empty());
    bob.clock
        .advance(config.fork_window + Duration::from_secs(60));
    let now = bob.clock.now();
    bob.client.tick(now).unwrap();
    assert!(
        lists(&bob.store, &group).is_empty(),
        "collected with the group"
    );
    assert!(
        bob.store
            .get(INDEX_NAMESPACE, &epoch_members::index_key(group.as_slice()))
            .unwrap()
            .is_none()
    );
    assert!(!lists(&alice.store, &group).is_empty(), "alice keeps hers");
}

/// Stand-ins with OpenMLS's struct names, in a layout the encoder must not split.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename = "MessageSecrets")]
struct Secrets {
    serialized_context: Vec<u8>,
    secret: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename = "EpochTree")]
struct LeavesFirst {
    leaves: Vec<String>,
    epoch: u64,
    message_secrets: Secrets,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename = "EpochTree")]
struct Expected {
    epoch: u64,
    message_secrets: Secrets,
    leaves: Vec<String>,
}

fn secrets(context: u8) -> Secrets {
    Secrets {
        serialized_context: vec![context; 40],
        secret: vec![9; 32],
    }
}

#[test]
fn another_layout_is_written_whole_and_reads_back() {
    let value = vec![LeavesFirst {
        leaves: vec!["a".into(), "b".into()],
        epoch: 3,
        message_secrets: secrets(1),
    }];
    let split = epoch_members::encode_split(&value, &|_| false).unwrap();
    assert!(split.references.is_empty() && split.new_lists.is_empty());
    let back: Vec<LeavesFirst> =
        epoch_members::decode_split("mls", &split.record, &mut |_| panic!("no list")).unwrap();
    assert_eq!(back, value);
}

#[test]
fn the_expected_layout_splits_and_splices_back() {
    let value = vec![
        Expected {
            epoch: 3,
            message_secrets: secrets(1),
            leaves: vec!["a".into(); 50],
        },
        Expected {
            epoch: 4,
            message_secrets: secrets(2),
            leaves: vec!["b".into(); 50],
        },
    ];
    let known = super::split_layout::list_hash(&[1; 40]);
    let split = epoch_members::encode_split(&value, &|hash| *hash == known).unwrap();
    assert_eq!(split.references.len(), 2);
    assert_eq!(
        split.new_lists.len(),
        1,
        "a known list is not encoded again"
    );
    let (new_hash, new_epoch, new_list) = &split.new_lists[0];
    assert_eq!(*new_epoch, 4);
    let known_list = codec::encode(&vec!["a".to_string(); 50]).unwrap();
    let back: Vec<Expected> = epoch_members::decode_split("mls", &split.record, &mut |hash| {
        Ok(if *hash == known {
            Some(known_list.clone().into())
        } else if hash == new_hash {
            Some(new_list.clone().into())
        } else {
            None
        })
    })
    .unwrap();
    assert_eq!(back, value);

    // A missing list, a truncated record and a misplaced reference are typed errors.
    let missing =
        epoch_members::decode_split::<Vec<Expected>>("mls", &split.record, &mut |_| Ok(None));
    assert!(matches!(missing, Err(MlsError::CorruptedState { .. })));
    for cut in [0, 1, 4, 20, 60] {
        let short =
            epoch_members::decode_split::<Vec<Expected>>("mls", &split.record[..cut], &mut |_| {
                Ok(Some(known_list.clone().into()))
            });
        assert!(
            matches!(short, Err(MlsError::CorruptedState { .. })),
            "{cut}"
        );
    }
    let mut moved = split.record.to_vec();
    moved[5 + 7] ^= 1;
    let misplaced = epoch_members::decode_split::<Vec<Expected>>("mls", &moved, &mut |_| {
        Ok(Some(known_list.clone().into()))
    });
    assert!(matches!(misplaced, Err(MlsError::CorruptedState { .. })));
}

fn format_of(store: &SharedStore) -> u32 {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let bytes = store
        .get(META_NAMESPACE, &key_layout::format_key())
        .unwrap()
        .unwrap();
    codec::decode::<Format>(META_NAMESPACE, &bytes)
        .unwrap()
        .format
}

fn set_format(store: &SharedStore, format: u32) {
    #[derive(Serialize)]
    struct Format {
        format: u32,
        openmls_storage: u16,
    }
    let mut txn = Transaction::begin(store);
    txn.put(
        META_NAMESPACE,
        key_layout::format_key(),
        codec::encode(&Format {
            format,
            openmls_storage: openmls_traits::storage::CURRENT_VERSION,
        })
        .unwrap(),
    )
    .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_store_of_format_1_migrates() {
    // Both devices live their first epochs writing as format 1 did (records whole, snapshots
    // of whole records, no lists).
    let (mut alice, mut bob, group) = pair(true);
    for _ in 0..4 {
        advance(&mut alice, &mut bob, &group);
    }
    let late = envelope(
        &alice.client.send(&group, b"from format 1").unwrap(),
        EnvelopeKind::Application,
    );
    advance(&mut alice, &mut bob, &group);
    // Both commit in the same epoch: whichever loses rolls back to a snapshot of format 1.
    let from_alice = envelope(
        &alice.client.self_update(&group).unwrap(),
        EnvelopeKind::Commit,
    );
    let from_bob = envelope(
        &bob.client.self_update(&group).unwrap(),
        EnvelopeKind::Commit,
    );
    for device in [&alice, &bob] {
        assert!(matches!(record(&device.store, &group)[0], 0xa0..=0xbf));
        assert!(lists(&device.store, &group).is_empty());
        set_format(&device.store, 1);
    }

    // Bob's engine restarts on this build: the group loads from the old records.
    let identity = IdentityStore::new(bob.store.clone(), bob.clock.clone())
        .load()
        .unwrap()
        .unwrap();
    bob.client = MlsClient::open_seeded(
        bob.store.clone(),
        bob.clock.clone(),
        identity,
        MlsConfig::default(),
        [3; 32],
    )
    .unwrap();
    // The loser re-issues its commit on the winning branch: deliver until nothing is left.
    let mut to_bob = vec![from_alice];
    let mut to_alice = vec![from_bob];
    for _ in 0..4 {
        let mut next_to_alice = Vec::new();
        for bytes in to_bob.drain(..) {
            next_to_alice.extend(commits(&bob.client.handle_envelope(&bytes).unwrap()));
        }
        for bytes in to_alice.drain(..) {
            to_bob.extend(commits(&alice.client.handle_envelope(&bytes).unwrap()));
        }
        to_alice = next_to_alice;
    }
    assert!(
        to_bob.is_empty() && to_alice.is_empty(),
        "the exchange settles"
    );
    assert_eq!(
        bob.client.epoch(&group).unwrap(),
        alice.client.epoch(&group).unwrap()
    );
    assert_eq!(
        bob.client.epoch_authenticator(&group).unwrap(),
        alice.client.epoch_authenticator(&group).unwrap()
    );
    assert_eq!(format_of(&bob.store), STORAGE_FORMAT_VERSION);
    assert_eq!(
        references(&record(&bob.store, &group)).len(),
        MlsConfig::default().max_past_epochs
    );
    // A late message of a past epoch still decrypts, and the group goes on.
    let output = bob.client.handle_envelope(&late).unwrap();
    assert_eq!(message_body(&output), b"from format 1");
    let sent = bob.client.send(&group, b"after").unwrap();
    let output = alice
        .client
        .handle_envelope(&envelope(&sent, EnvelopeKind::Application))
        .unwrap();
    assert_eq!(message_body(&output), b"after");
}
