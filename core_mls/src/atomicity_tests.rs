//! One operation, one transaction, at the layer that enforces it (`MlsClient::transaction` over
//! the crate-private provider): an operation OpenMLS rejects leaves storage byte-for-byte
//! unchanged (including a key package OpenMLS deleted before rejecting a Welcome) and the group
//! in memory reloaded; a panicking operation rolls back and leaves the client usable; writes
//! outside a transaction are refused; a transaction inside an operation is one step of it.
//!
//! Test code, compiled only under `cfg(test)`: each `unwrap` here is an assertion that the
//! step succeeds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use core_identity::IdentityStore;
use openmls::prelude::{
    KeyPackage, KeyPackageBundle, KeyPackageNewError, KeyPackageRef, LeafNodeParameters, MlsGroup,
    MlsMessageBodyIn, MlsMessageIn, OpenMlsProvider as _, ProcessedMessageContent, StagedWelcome,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::storage::StorageProvider as _;
use spacepanda_core::{Clock, ManualClock, MemoryStore, SharedStore};
use tls_codec::{Deserialize as _, Serialize as _};

use crate::key_package_manager::DeviceSigner;
use crate::{
    CIPHERSUITE, Disposition, Envelope, EnvelopeKind, Event, GroupId, MlsClient, MlsConfig,
    MlsError, Output,
};

/// A device on a MemoryStore (kept, for byte-for-byte comparisons), with seeded randomness.
pub(crate) fn device(name: &str, seed: u8) -> (MlsClient, Arc<MemoryStore>) {
    let memory = Arc::new(MemoryStore::new());
    let store: SharedStore = memory.clone();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_now());
    let identity = IdentityStore::new(store.clone(), clock.clone())
        .create(name)
        .unwrap();
    let client =
        MlsClient::open_seeded(store, clock, identity, MlsConfig::default(), [seed; 32]).unwrap();
    (client, memory)
}

/// The bytes of the one envelope of `kind` in `output`.
fn envelope(output: &Output, kind: EnvelopeKind) -> Vec<u8> {
    let mut found = output
        .outbound
        .iter()
        .filter(|o| o.envelope.kind() == kind)
        .map(|o| o.envelope.to_bytes());
    let bytes = found.next().expect("an envelope of that kind");
    assert!(found.next().is_none(), "one envelope of that kind");
    bytes
}

/// A single-use key package of `client`: (ref, TLS-encoded package).
pub(crate) fn key_package(client: &MlsClient) -> Result<(Vec<u8>, Vec<u8>), MlsError> {
    let package = client
        .publishable_key_packages()?
        .into_iter()
        .find(|p| !p.last_resort)
        .ok_or(MlsError::Internal {
            what: "a fresh device offers no single-use key package",
        })?;
    Ok((package.key_package_ref, package.key_package))
}

/// Alice and bob, each with their store, in a group alice created and added bob to: epoch 1.
struct Pair {
    alice: MlsClient,
    alice_store: Arc<MemoryStore>,
    bob: MlsClient,
    bob_store: Arc<MemoryStore>,
    group: GroupId,
}

fn alice_and_bob() -> Pair {
    let (mut alice, alice_store) = device("alice", 1);
    let (mut bob, bob_store) = device("bob", 2);
    let group = alice.create_group().unwrap();
    let added = alice
        .add_members(&group, &[key_package(&bob).unwrap().1])
        .unwrap();
    bob.handle_envelope(&envelope(&added, EnvelopeKind::Welcome))
        .unwrap();
    assert_agree(&alice, &bob, &group);
    Pair {
        alice,
        alice_store,
        bob,
        bob_store,
        group,
    }
}

fn assert_agree(a: &MlsClient, b: &MlsClient, group: &GroupId) {
    assert_eq!(a.epoch(group).unwrap(), b.epoch(group).unwrap());
    assert_eq!(
        a.epoch_authenticator(group).unwrap(),
        b.epoch_authenticator(group).unwrap()
    );
}

/// The body of the one message `output` delivers.
fn delivered(output: &Output) -> Vec<u8> {
    match &output.events[..] {
        [Event::Message { body, .. }] => body.clone(),
        other => panic!("expected one message, got {other:?}"),
    }
}

/// Has OpenMLS itself process the MLS message inside `envelope_bytes` for `group`, inside one
/// engine transaction, bypassing the engine's own checks (routing by group id, de-duplication,
/// epoch and branch checks): what OpenMLS rejects must be rolled back by the transaction alone.
fn process_with_openmls(
    client: &mut MlsClient,
    group: &GroupId,
    envelope_bytes: &[u8],
) -> Result<(), MlsError> {
    let envelope = Envelope::from_bytes(envelope_bytes, usize::MAX)?;
    let message = MlsMessageIn::tls_deserialize_exact(envelope.payload())
        .unwrap()
        .try_into_protocol_message()
        .unwrap();
    client.transaction(Some(group), |client| {
        let (provider, mls_group, _) = client.openmls_parts(group)?;
        let processed = mls_group
            .process_message(provider, message)
            .map_err(|e| MlsError::openmls("process a message", e))?;
        if let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() {
            mls_group
                .merge_staged_commit(provider, *staged)
                .map_err(|e| MlsError::openmls("merge a commit", e))?;
        }
        Ok(())
    })
}

/// Commits made by eve with plain OpenMLS: one for a group with the same id as `group` at
/// epoch 1 (she is no member of the real one), one for a group of her own.
fn eve_commits(group: &GroupId) -> (Vec<u8>, Vec<u8>) {
    let (eve, _) = device("eve", 3);
    let provider = OpenMlsRustCrypto::default();
    let signer = DeviceSigner(eve.device.signature_key_pair());
    let commit_at_epoch_1 = |group_id: &GroupId| {
        let mut mls_group = MlsGroup::builder()
            .with_group_id(group_id.to_openmls())
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .build(&provider, &signer, eve.credential.clone())
            .unwrap();
        mls_group
            .self_update(&provider, &signer, LeafNodeParameters::default())
            .unwrap();
        mls_group.merge_pending_commit(&provider).unwrap();
        let bundle = mls_group
            .self_update(&provider, &signer, LeafNodeParameters::default())
            .unwrap();
        let commit = bundle.commit().tls_serialize_detached().unwrap();
        Envelope::new(EnvelopeKind::Commit, commit).to_bytes()
    };
    (
        commit_at_epoch_1(group),
        commit_at_epoch_1(&GroupId::from_slice(b"eve's own group")),
    )
}

#[test]
fn messages_openmls_rejects_leave_storage_unchanged() {
    let Pair {
        mut alice,
        mut bob,
        bob_store,
        group,
        ..
    } = alice_and_bob();
    let (eve_commit, other_group_commit) = eve_commits(&group);
    let once = alice.send(&group, b"once").unwrap();
    let once = envelope(&once, EnvelopeKind::Application);
    assert_eq!(delivered(&bob.handle_envelope(&once).unwrap()), b"once");

    for (what, message) in [
        ("non-member commit", &eve_commit),
        ("wrong-group commit", &other_group_commit),
        ("replayed application message", &once),
    ] {
        let before = bob_store.dump().unwrap();
        let epoch = bob.epoch(&group).unwrap();
        let err = process_with_openmls(&mut bob, &group, message).unwrap_err();
        assert!(matches!(err, MlsError::OpenMls { .. }), "{what}: {err:?}");
        assert_eq!(bob_store.dump().unwrap(), before, "{what}: storage changed");
        assert_eq!(bob.epoch(&group).unwrap(), epoch, "{what}");
        assert!(!bob.provider.storage().in_transaction(), "{what}");
    }

    // Through the engine's pipeline: the non-member commit is refused, the replay is a
    // duplicate; neither changes a byte.
    let before = bob_store.dump().unwrap();
    let err = bob.handle_envelope(&eve_commit).unwrap_err();
    assert!(err.is_peer_input(), "{err:?}");
    assert_eq!(bob_store.dump().unwrap(), before, "non-member commit");
    let replay = bob.handle_envelope(&once).unwrap();
    assert_eq!(replay.disposition, Disposition::Duplicate);
    assert!(replay.events.is_empty());
    assert_eq!(bob_store.dump().unwrap(), before, "replayed message");

    // The group (reloaded after each rollback) carries on.
    let update = alice.self_update(&group).unwrap();
    bob.handle_envelope(&envelope(&update, EnvelopeKind::Commit))
        .unwrap();
    assert_agree(&alice, &bob, &group);
    let still = bob.send(&group, b"still here").unwrap();
    let still = envelope(&still, EnvelopeKind::Application);
    assert_eq!(
        delivered(&alice.handle_envelope(&still).unwrap()),
        b"still here"
    );
}

#[test]
fn a_corrupted_welcome_does_not_burn_the_key_package() {
    let (mut alice, _) = device("alice", 4);
    let (mut carol, carol_store) = device("carol", 5);
    let (package_ref, package) = key_package(&carol).unwrap();
    // OpenMLS builds a KeyPackageRef from bytes only through its TLS encoding.
    let hash_ref = KeyPackageRef::tls_deserialize_exact(
        tls_codec::VLBytes::new(package_ref)
            .tls_serialize_detached()
            .unwrap(),
    )
    .unwrap();
    let group = alice.create_group().unwrap();
    let added = alice.add_members(&group, &[package]).unwrap();
    let welcome = envelope(&added, EnvelopeKind::Welcome);

    // The Welcome's last field is the encrypted GroupInfo: flip its last byte (the AEAD tag),
    // so OpenMLS finds and deletes the key package, then fails on the GroupInfo.
    let mut payload = Envelope::from_bytes(&welcome, usize::MAX)
        .unwrap()
        .payload()
        .to_vec();
    *payload.last_mut().unwrap() ^= 0x01;
    let corrupted = Envelope::new(EnvelopeKind::Welcome, payload.clone()).to_bytes();

    let before = carol_store.dump().unwrap();
    // Show that OpenMLS really deletes the key package inside the failing operation…
    let MlsMessageBodyIn::Welcome(welcome_in) = MlsMessageIn::tls_deserialize_exact(&payload)
        .unwrap()
        .extract()
    else {
        panic!("not a Welcome")
    };
    let result: Result<(), MlsError> = carol.transaction(None, |client| {
        let err = StagedWelcome::new_from_welcome(
            &client.provider,
            &client.join_config(),
            welcome_in,
            None,
        )
        .expect_err("the corrupted Welcome is rejected");
        let stored: Option<KeyPackageBundle> = client.provider.storage().key_package(&hash_ref)?;
        assert!(
            stored.is_none(),
            "OpenMLS deleted the key package before failing"
        );
        Err(MlsError::openmls("join", err))
    });
    assert!(result.is_err());
    // …and that the rollback undid it.
    assert_eq!(carol_store.dump().unwrap(), before, "storage changed");
    let stored: Option<KeyPackageBundle> = carol.provider.storage().key_package(&hash_ref).unwrap();
    assert!(stored.is_some(), "key package still there");

    // The same through the engine's join path.
    let err = carol.handle_envelope(&corrupted).unwrap_err();
    assert!(matches!(err, MlsError::InvalidWelcome { .. }), "{err:?}");
    assert_eq!(carol_store.dump().unwrap(), before);

    // The genuine Welcome still joins, with that key package.
    carol.handle_envelope(&welcome).unwrap();
    assert_agree(&alice, &carol, &group);
    let status = carol.key_package_status().unwrap();
    assert_eq!(status.consumed, 1, "{status:?}");
}

#[test]
fn writes_outside_a_transaction_are_refused() {
    let (mut alice, store) = device("alice", 6);
    let group = alice.create_group().unwrap();
    let credential = alice.credential.clone();
    let before = store.dump().unwrap();
    let (provider, mls_group, signer) = alice.openmls_parts(&group).unwrap();
    // OpenMLS reports this one as a LibraryError (it wraps the storage error); what matters is
    // that it fails and nothing reaches the store.
    assert!(
        mls_group
            .create_message(provider, &signer, b"no transaction")
            .is_err()
    );
    assert_eq!(store.dump().unwrap(), before);
    let err = KeyPackage::builder()
        .build(CIPHERSUITE, provider, &signer, credential)
        .unwrap_err();
    assert!(matches!(err, KeyPackageNewError::StorageError), "{err:?}");
    assert_eq!(store.dump().unwrap(), before);
}

#[test]
fn a_panicking_operation_rolls_back_and_the_client_stays_usable() {
    let Pair {
        mut alice,
        alice_store,
        mut bob,
        group,
        ..
    } = alice_and_bob();
    let epoch = alice.epoch(&group).unwrap();
    let authenticator = alice.epoch_authenticator(&group).unwrap();
    let before = alice_store.dump().unwrap();

    let panicked = catch_unwind(AssertUnwindSafe(|| {
        let _: Result<(), MlsError> = alice.transaction(Some(&group), |client| {
            // A real change, in the transaction and in memory: a merged self-update.
            let (provider, mls_group, signer) = client.openmls_parts(&group)?;
            mls_group
                .self_update(provider, &signer, LeafNodeParameters::default())
                .map_err(|e| MlsError::openmls("self-update", e))?;
            mls_group
                .merge_pending_commit(provider)
                .map_err(|e| MlsError::openmls("merge", e))?;
            assert_eq!(mls_group.epoch().as_u64(), epoch + 1);
            panic!("the operation panics after changing the group");
        });
    }));
    assert!(panicked.is_err());
    assert!(!alice.provider.storage().in_transaction());
    assert_eq!(alice_store.dump().unwrap(), before);
    // The group in memory is the stored one again.
    assert_eq!(alice.epoch(&group).unwrap(), epoch);
    assert_eq!(alice.epoch_authenticator(&group).unwrap(), authenticator);

    // The client is usable afterwards: a commit and a message reach bob.
    let update = alice.self_update(&group).unwrap();
    bob.handle_envelope(&envelope(&update, EnvelopeKind::Commit))
        .unwrap();
    assert_agree(&alice, &bob, &group);
    let sent = alice.send(&group, b"after the panic").unwrap();
    let sent = envelope(&sent, EnvelopeKind::Application);
    assert_eq!(
        delivered(&bob.handle_envelope(&sent).unwrap()),
        b"after the panic"
    );
    assert_ne!(alice_store.dump().unwrap(), before);
}

#[test]
fn a_transaction_inside_an_operation_is_one_step_of_it() {
    let (mut alice, store) = device("alice", 7);
    let before = store.dump().unwrap();
    let namespaces = |client: &MlsClient| {
        client.with_txn(|txn| {
            Ok(txn
                .to_batch()
                .ops()
                .iter()
                .map(|op| op.namespace().to_owned())
                .collect::<Vec<_>>())
        })
    };
    let build = |client: &MlsClient| {
        let signer = DeviceSigner(client.device.signature_key_pair());
        KeyPackage::builder()
            .build(
                CIPHERSUITE,
                &client.provider,
                &signer,
                client.credential.clone(),
            )
            .map_err(|e| MlsError::openmls("build", e))
    };
    let result = alice.transaction(None, |client| {
        build(client)?;
        // A failing step rolls back only what it wrote; the operation goes on.
        let failed = client.transaction(None, |inner| {
            build(inner)?;
            Err::<(), _>(MlsError::InvalidArgument {
                reason: "step fails",
            })
        });
        assert!(matches!(failed, Err(MlsError::InvalidArgument { .. })));
        assert!(client.provider.storage().in_transaction());
        assert_eq!(namespaces(client)?, vec!["mls_key_package".to_owned()]);
        // A step that succeeds writes into the operation's one transaction, not on its own.
        client.transaction(None, |inner| build(inner))?;
        assert!(client.provider.storage().in_transaction());
        assert_eq!(namespaces(client)?.len(), 2);
        assert_eq!(
            store.dump().unwrap(),
            before,
            "nothing committed before the operation"
        );
        Ok(())
    });
    result.unwrap();
    assert_ne!(store.dump().unwrap(), before);
}
