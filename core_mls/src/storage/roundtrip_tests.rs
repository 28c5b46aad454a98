//! Every `StorageProvider` method round-trips on every backend: MemoryStore, RedbStore, and
//! SealedStore over both. One generic test body, run once per backend.
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

use openmls::prelude::GroupId;
use openmls_traits::storage::{
    CURRENT_VERSION, Entity, Key as OpenMlsKey, StorageProvider, traits,
};
use serde::{Deserialize, Serialize};
use spacepanda_core::{
    KdfParams, Key, KeyValueStore, MasterKey, MemoryStore, RedbStore, SealedStore, SharedStore,
    Transaction,
};

use super::key_layout::{self, GROUP_NAMESPACE, META_NAMESPACE};
use super::{KvStorageProvider, STORAGE_FORMAT_VERSION};
use crate::error::MlsError;

// Stand-ins for OpenMLS's types: the provider is generic over them, so any serde type with the
// marker traits exercises exactly the code OpenMLS's types go through. Keys have the shapes
// OpenMLS's keys have (byte strings, a u64 epoch, a structured PSK id).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Bytes {
    vec: Vec<u8>,
}
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Epoch(u64);
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct PskId {
    kind: u8,
    id: Bytes,
    nonce: Vec<u8>,
}
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Value {
    label: String,
    data: Vec<u8>,
    nested: Option<Box<Value>>,
}

impl OpenMlsKey<CURRENT_VERSION> for Bytes {}
impl Entity<CURRENT_VERSION> for Bytes {}
impl traits::HashReference<CURRENT_VERSION> for Bytes {}
impl traits::ProposalRef<CURRENT_VERSION> for Bytes {}
impl traits::SignaturePublicKey<CURRENT_VERSION> for Bytes {}
impl traits::EncryptionKey<CURRENT_VERSION> for Bytes {}
impl OpenMlsKey<CURRENT_VERSION> for Epoch {}
impl traits::EpochKey<CURRENT_VERSION> for Epoch {}
impl OpenMlsKey<CURRENT_VERSION> for PskId {}
impl traits::PskId<CURRENT_VERSION> for PskId {}
impl Entity<CURRENT_VERSION> for Value {}
impl traits::QueuedProposal<CURRENT_VERSION> for Value {}
impl traits::TreeSync<CURRENT_VERSION> for Value {}
impl traits::GroupContext<CURRENT_VERSION> for Value {}
impl traits::InterimTranscriptHash<CURRENT_VERSION> for Value {}
impl traits::ConfirmationTag<CURRENT_VERSION> for Value {}
impl traits::SignatureKeyPair<CURRENT_VERSION> for Value {}
impl traits::PskBundle<CURRENT_VERSION> for Value {}
impl traits::HpkeKeyPair<CURRENT_VERSION> for Value {}
impl traits::GroupState<CURRENT_VERSION> for Value {}
impl traits::GroupEpochSecrets<CURRENT_VERSION> for Value {}
impl traits::LeafNodeIndex<CURRENT_VERSION> for Value {}
impl traits::MessageSecrets<CURRENT_VERSION> for Value {}
impl traits::ResumptionPskStore<CURRENT_VERSION> for Value {}
impl traits::KeyPackage<CURRENT_VERSION> for Value {}
impl traits::MlsGroupJoinConfig<CURRENT_VERSION> for Value {}
impl traits::LeafNode<CURRENT_VERSION> for Value {}

fn v(label: &str) -> Value {
    Value {
        label: label.to_owned(),
        data: label.bytes().chain(0..=255).collect(),
        nested: Some(Box::new(Value {
            label: format!("{label}/inner"),
            data: vec![],
            nested: None,
        })),
    }
}

fn b(bytes: &[u8]) -> Bytes {
    Bytes {
        vec: bytes.to_vec(),
    }
}

type Pairs = Vec<(Bytes, Value)>;

/// Writes one value through every writer, for `group`.
fn write_all(s: &KvStorageProvider, group: &GroupId, tag: &str) {
    let t = |name: &str| v(&format!("{tag}:{name}"));
    s.write_mls_join_config(group, &t("join_config")).unwrap();
    s.append_own_leaf_node(group, &t("leaf0")).unwrap();
    s.append_own_leaf_node(group, &t("leaf1")).unwrap();
    s.queue_proposal(group, &b(b"p-zz"), &t("proposal0"))
        .unwrap();
    s.queue_proposal(group, &b(b"p-aa"), &t("proposal1"))
        .unwrap();
    s.write_tree(group, &t("tree")).unwrap();
    s.write_interim_transcript_hash(group, &t("ith")).unwrap();
    s.write_context(group, &t("context")).unwrap();
    s.write_confirmation_tag(group, &t("tag")).unwrap();
    s.write_group_state(group, &t("state")).unwrap();
    s.write_message_secrets(group, &t("message_secrets"))
        .unwrap();
    s.write_resumption_psk_store(group, &t("resumption"))
        .unwrap();
    s.write_own_leaf_index(group, &t("leaf_index")).unwrap();
    s.write_group_epoch_secrets(group, &t("epoch_secrets"))
        .unwrap();
    s.write_encryption_epoch_key_pairs(group, &Epoch(3), 7, &[t("kp0"), t("kp1")])
        .unwrap();
}

/// Checks every reader against what `write_all` wrote.
fn check_all(s: &KvStorageProvider, group: &GroupId, tag: &str) {
    let t = |name: &str| v(&format!("{tag}:{name}"));
    let some = |name: &str| Some(t(name));
    assert_eq!(
        s.mls_group_join_config::<_, Value>(group).unwrap(),
        some("join_config")
    );
    assert_eq!(
        s.own_leaf_nodes::<_, Value>(group).unwrap(),
        vec![t("leaf0"), t("leaf1")]
    );
    // Queue order is insertion order, not key order.
    assert_eq!(
        s.queued_proposal_refs::<_, Bytes>(group).unwrap(),
        vec![b(b"p-zz"), b(b"p-aa")]
    );
    let queued: Pairs = s.queued_proposals(group).unwrap();
    assert_eq!(
        queued,
        vec![(b(b"p-zz"), t("proposal0")), (b(b"p-aa"), t("proposal1"))]
    );
    assert_eq!(s.tree::<_, Value>(group).unwrap(), some("tree"));
    assert_eq!(
        s.interim_transcript_hash::<_, Value>(group).unwrap(),
        some("ith")
    );
    assert_eq!(s.group_context::<_, Value>(group).unwrap(), some("context"));
    assert_eq!(s.confirmation_tag::<_, Value>(group).unwrap(), some("tag"));
    assert_eq!(s.group_state::<Value, _>(group).unwrap(), some("state"));
    assert_eq!(
        s.message_secrets::<_, Value>(group).unwrap(),
        some("message_secrets")
    );
    assert_eq!(
        s.resumption_psk_store::<_, Value>(group).unwrap(),
        some("resumption")
    );
    assert_eq!(
        s.own_leaf_index::<_, Value>(group).unwrap(),
        some("leaf_index")
    );
    assert_eq!(
        s.group_epoch_secrets::<_, Value>(group).unwrap(),
        some("epoch_secrets")
    );
    assert_eq!(
        s.encryption_epoch_key_pairs::<_, _, Value>(group, &Epoch(3), 7)
            .unwrap(),
        vec![t("kp0"), t("kp1")]
    );
    // Same group, other epoch / leaf: nothing.
    assert!(
        s.encryption_epoch_key_pairs::<_, _, Value>(group, &Epoch(4), 7)
            .unwrap()
            .is_empty()
    );
    assert!(
        s.encryption_epoch_key_pairs::<_, _, Value>(group, &Epoch(3), 8)
            .unwrap()
            .is_empty()
    );
}

fn check_group_empty(s: &KvStorageProvider, group: &GroupId) {
    assert_eq!(s.mls_group_join_config::<_, Value>(group).unwrap(), None);
    assert!(s.own_leaf_nodes::<_, Value>(group).unwrap().is_empty());
    assert!(
        s.queued_proposal_refs::<_, Bytes>(group)
            .unwrap()
            .is_empty()
    );
    assert!(
        s.queued_proposals::<_, Bytes, Value>(group)
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.tree::<_, Value>(group).unwrap(), None);
    assert_eq!(s.interim_transcript_hash::<_, Value>(group).unwrap(), None);
    assert_eq!(s.group_context::<_, Value>(group).unwrap(), None);
    assert_eq!(s.confirmation_tag::<_, Value>(group).unwrap(), None);
    assert_eq!(s.group_state::<Value, _>(group).unwrap(), None);
    assert_eq!(s.message_secrets::<_, Value>(group).unwrap(), None);
    assert_eq!(s.resumption_psk_store::<_, Value>(group).unwrap(), None);
    assert_eq!(s.own_leaf_index::<_, Value>(group).unwrap(), None);
    assert_eq!(s.group_epoch_secrets::<_, Value>(group).unwrap(), None);
    assert!(
        s.encryption_epoch_key_pairs::<_, _, Value>(group, &Epoch(3), 7)
            .unwrap()
            .is_empty()
    );
}

fn delete_all(s: &KvStorageProvider, group: &GroupId) {
    s.delete_group_config(group).unwrap();
    s.delete_own_leaf_nodes(group).unwrap();
    s.clear_proposal_queue::<_, Bytes>(group).unwrap();
    s.delete_tree(group).unwrap();
    s.delete_interim_transcript_hash(group).unwrap();
    s.delete_context(group).unwrap();
    s.delete_confirmation_tag(group).unwrap();
    s.delete_group_state(group).unwrap();
    s.delete_message_secrets(group).unwrap();
    s.delete_all_resumption_psk_secrets(group).unwrap();
    s.delete_own_leaf_index(group).unwrap();
    s.delete_group_epoch_secrets(group).unwrap();
    s.delete_encryption_epoch_key_pairs(group, &Epoch(3), 7)
        .unwrap();
}

fn psk_id(n: u8) -> PskId {
    PskId {
        kind: n,
        id: b(b"psk"),
        nonce: vec![n; 4],
    }
}

fn write_crypto_objects(s: &KvStorageProvider) {
    s.write_signature_key_pair(&b(b"sig-pk"), &v("sig"))
        .unwrap();
    s.write_encryption_key_pair(&b(b"enc-pk"), &v("enc"))
        .unwrap();
    s.write_key_package(&b(b"kp-ref"), &v("kp")).unwrap();
    s.write_psk(&psk_id(1), &v("psk1")).unwrap();
    s.write_psk(&psk_id(2), &v("psk2")).unwrap();
}

fn check_crypto_objects(s: &KvStorageProvider, present: bool) {
    let want = |name: &str| present.then(|| v(name));
    assert_eq!(
        s.signature_key_pair::<_, Value>(&b(b"sig-pk")).unwrap(),
        want("sig")
    );
    assert_eq!(
        s.encryption_key_pair::<Value, _>(&b(b"enc-pk")).unwrap(),
        want("enc")
    );
    assert_eq!(
        s.key_package::<_, Value>(&b(b"kp-ref")).unwrap(),
        want("kp")
    );
    assert_eq!(s.psk::<Value, _>(&psk_id(1)).unwrap(), want("psk1"));
    assert_eq!(s.psk::<Value, _>(&psk_id(2)).unwrap(), want("psk2"));
    // Never-written keys.
    assert_eq!(
        s.signature_key_pair::<_, Value>(&b(b"other")).unwrap(),
        None
    );
    assert_eq!(
        s.encryption_key_pair::<Value, _>(&b(b"other")).unwrap(),
        None
    );
    assert_eq!(s.key_package::<_, Value>(&b(b"other")).unwrap(), None);
    assert_eq!(s.psk::<Value, _>(&psk_id(3)).unwrap(), None);
}

fn delete_crypto_objects(s: &KvStorageProvider) {
    s.delete_signature_key_pair(&b(b"sig-pk")).unwrap();
    s.delete_encryption_key_pair(&b(b"enc-pk")).unwrap();
    s.delete_key_package(&b(b"kp-ref")).unwrap();
    s.delete_psk(&psk_id(1)).unwrap();
    s.delete_psk(&psk_id(2)).unwrap();
}

/// The one test body, run on every backend. `reopen` gives a fresh handle on the same data
/// (a restart).
fn round_trip(reopen: &dyn Fn() -> SharedStore) {
    let alpha = GroupId::from_slice(b"alpha");
    let beta = GroupId::from_slice(b"\x00beta\xff");
    let gamma = GroupId::from_slice(b"alph"); // a byte prefix of `alpha`: must not collide

    let s = KvStorageProvider::open(reopen()).unwrap();
    check_group_empty(&s, &alpha);
    check_crypto_objects(&s, false);
    assert!(s.list_groups().unwrap().is_empty());

    // Writes need a transaction.
    assert!(matches!(
        s.write_tree(&alpha, &v("x")),
        Err(MlsError::NoTransaction {
            operation: "write_tree"
        })
    ));

    // Read-your-writes inside the transaction, invisible outside until commit.
    s.begin().unwrap();
    assert!(matches!(s.begin(), Err(MlsError::TransactionAlreadyOpen)));
    write_all(&s, &alpha, "a");
    write_all(&s, &beta, "b");
    write_crypto_objects(&s);
    check_all(&s, &alpha, "a");
    check_all(&s, &beta, "b");
    check_group_empty(&s, &gamma);
    // Everything written so far is held by the open transaction, none of it by the store.
    let pending = s
        .with_transaction(|txn| Ok(txn.to_batch().ops().len()))
        .unwrap();
    assert!(pending > 0);
    assert!(
        s.store()
            .scan_prefix(GROUP_NAMESPACE, &Key::empty())
            .unwrap()
            .is_empty()
    );
    s.commit().unwrap();
    assert!(!s.in_transaction());
    assert!(matches!(
        s.with_transaction(|txn| Ok(txn.to_batch().ops().len())),
        Err(MlsError::NoTransaction { .. })
    ));
    drop(s);

    // After a restart every value is there, read straight from the store.
    let s = KvStorageProvider::open(reopen()).unwrap();
    check_all(&s, &alpha, "a");
    check_all(&s, &beta, "b");
    check_crypto_objects(&s, true);
    check_group_empty(&s, &gamma);
    let mut groups = s.list_groups().unwrap();
    groups.sort_by(|x, y| x.as_slice().cmp(y.as_slice()));
    assert_eq!(groups, vec![beta.clone(), alpha.clone()]);

    // Rollback discards.
    s.begin().unwrap();
    delete_all(&s, &alpha);
    check_group_empty(&s, &alpha);
    s.rollback();
    check_all(&s, &alpha, "a");

    // A re-queued proposal replaces its entry in place; remove_proposal removes one.
    s.begin().unwrap();
    s.queue_proposal(&alpha, &b(b"p-zz"), &v("replaced"))
        .unwrap();
    s.remove_proposal(&alpha, &b(b"p-aa")).unwrap();
    s.remove_proposal(&alpha, &b(b"never-queued")).unwrap();
    s.queue_proposal(&alpha, &b(b"p-new"), &v("new")).unwrap();
    s.commit().unwrap();
    let queued: Pairs = s.queued_proposals(&alpha).unwrap();
    assert_eq!(
        queued,
        vec![(b(b"p-zz"), v("replaced")), (b(b"p-new"), v("new"))]
    );

    // Deletes.
    s.begin().unwrap();
    delete_all(&s, &alpha);
    delete_crypto_objects(&s);
    s.commit().unwrap();
    drop(s);
    let s = KvStorageProvider::open(reopen()).unwrap();
    check_group_empty(&s, &alpha);
    check_crypto_objects(&s, false);
    check_all(&s, &beta, "b");
    assert_eq!(s.list_groups().unwrap(), vec![beta.clone()]);

    // delete_group is one prefix operation.
    s.begin().unwrap();
    let deleted = s.delete_group(&beta).unwrap();
    assert!(deleted >= 14, "deleted {deleted}");
    s.commit().unwrap();
    check_group_empty(&s, &beta);
    assert!(s.list_groups().unwrap().is_empty());
    assert!(
        s.store()
            .scan_prefix(GROUP_NAMESPACE, &Key::empty())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn round_trip_memory() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    round_trip(&|| Arc::clone(&store));
}

#[test]
fn round_trip_redb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.redb");
    // round_trip reopens after each step: the first call creates the file, later ones open it.
    round_trip(&|| {
        if path.exists() {
            Arc::new(RedbStore::open(&path).unwrap())
        } else {
            Arc::new(RedbStore::create(&path).unwrap())
        }
    });
}

#[test]
fn round_trip_sealed_memory_raw_key() {
    let inner = Arc::new(MemoryStore::new());
    let key = MasterKey::from_bytes([7; 32]);
    round_trip(&|| {
        if inner.is_empty().unwrap() {
            Arc::new(SealedStore::create_with_key(Arc::clone(&inner), &key).unwrap())
        } else {
            Arc::new(SealedStore::open_with_key(Arc::clone(&inner), &key).unwrap())
        }
    });
}

#[test]
fn round_trip_sealed_redb_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.redb");
    round_trip(&|| {
        if path.exists() {
            let file = RedbStore::open(&path).unwrap();
            Arc::new(SealedStore::open_with_passphrase(file, b"correct horse").unwrap())
        } else {
            let file = RedbStore::create(&path).unwrap();
            Arc::new(
                SealedStore::create_with_passphrase(
                    file,
                    b"correct horse",
                    KdfParams::INSECURE_FOR_TESTS,
                )
                .unwrap(),
            )
        }
    });
}

#[test]
fn future_storage_format_is_refused() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let provider = KvStorageProvider::open(Arc::clone(&store)).unwrap();
    let format_key = Key::from_segment("format");
    assert!(
        store.get(META_NAMESPACE, &format_key).unwrap().is_none(),
        "opening writes nothing: the record commits with the first transaction"
    );
    provider.begin().unwrap();
    provider.commit().unwrap();
    drop(provider);
    let record = store.get(META_NAMESPACE, &format_key).unwrap();
    assert!(
        record.is_some(),
        "format record written by the first commit"
    );

    let mut future = Vec::new();
    ciborium::into_writer(
        &serde_json::json!({"format": 99, "openmls_storage": 1}),
        &mut future,
    )
    .unwrap();
    let mut txn = Transaction::begin(&store);
    txn.put(META_NAMESPACE, Key::from_segment("format"), future)
        .unwrap();
    txn.commit().unwrap();
    let err = KvStorageProvider::open(store).unwrap_err();
    assert!(
        matches!(
            err,
            MlsError::UnsupportedStateVersion {
                found: 99,
                supported: STORAGE_FORMAT_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade"));
}

#[test]
fn corrupted_values_are_typed_errors() {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let s = KvStorageProvider::open(Arc::clone(&store)).unwrap();
    let group = GroupId::from_slice(b"g1");
    let mut txn = Transaction::begin(&store);
    txn.put(
        GROUP_NAMESPACE,
        key_layout::group_prefix(group.as_slice()).with("tree"),
        vec![0xff, 0x00, 0x13],
    )
    .unwrap();
    txn.put(
        GROUP_NAMESPACE,
        key_layout::group_prefix(group.as_slice())
            .with("own_leaf_node")
            .with([1u8; 3]),
        vec![0x01],
    )
    .unwrap();
    txn.put(
        key_layout::KEY_PACKAGE_NAMESPACE,
        Key::from_segment(b"kp"),
        b"SECRETMARK is not cbor".to_vec(),
    )
    .unwrap();
    txn.commit().unwrap();

    let err = s.tree::<_, Value>(&group).unwrap_err();
    assert!(
        matches!(
            err,
            MlsError::CorruptedState {
                namespace: "mls",
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.key_package::<_, Value>(&b(b"kp")).unwrap_err();
    assert!(
        matches!(
            err,
            MlsError::CorruptedState {
                namespace: "mls_key_package",
                ..
            }
        ),
        "{err:?}"
    );
    // The error never carries the stored bytes.
    assert!(!format!("{err} {err:?}").contains("SECRETMARK"));
    // A list entry with a malformed sequence number cannot be appended after.
    s.begin().unwrap();
    let err = s.append_own_leaf_node(&group, &v("x")).unwrap_err();
    assert!(matches!(err, MlsError::CorruptedState { .. }), "{err:?}");
    s.rollback();
}
