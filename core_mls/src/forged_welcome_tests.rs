//! A removed member forging a Welcome for the group it was removed from: it knows the group id
//! and the branch history up to its removal, and can make an OpenMLS group of its own under that
//! id, add a member's published key package and sign a branch history that agrees with the
//! member's. The member must not leave the real group for it.
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

use core_identity::IdentityStore;
use openmls::prelude::{KeyPackageIn, LeafNodeParameters, MlsGroup, MlsMessageIn, ProtocolVersion};
use openmls_rust_crypto::OpenMlsRustCrypto;
use spacepanda_core::{Clock, ManualClock, MemoryStore, SharedStore};
use tls_codec::{Deserialize as _, Serialize as _};

use crate::key_package_manager::DeviceSigner;
use crate::signed_context::encode_history;
use crate::{CIPHERSUITE, Envelope, EnvelopeKind, MlsClient, MlsConfig, Output};

fn device(name: &str, seed: u8, clock: &ManualClock) -> MlsClient {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let identity = IdentityStore::new(store.clone(), clock.clone())
        .create(name)
        .unwrap();
    MlsClient::open_seeded(store, clock, identity, MlsConfig::default(), [seed; 32]).unwrap()
}

fn deliver(output: &Output, to: &mut [&mut MlsClient]) {
    for outbound in &output.outbound {
        for client in to.iter_mut() {
            let me = crate::DeviceAddress {
                user_id: client.device.user_id(),
                device_id: client.device.device_id(),
            };
            if outbound.to.devices.contains(&me) {
                let _ = client.handle_envelope(&outbound.envelope.to_bytes());
            }
        }
    }
}

fn key_package(client: &MlsClient) -> Vec<u8> {
    client
        .publishable_key_packages()
        .unwrap()
        .into_iter()
        .find(|p| !p.last_resort)
        .unwrap()
        .key_package
}

/// Mallory, removed by alice, forges a Welcome for bob into a group of her own under the real
/// id, with the real branch history up to her removal: it agrees with bob's, and hers is later
/// ("the group went on without you"). (A history that also claims a commit beating alice's
/// removal is a form still open: docs/THREAT_MODEL.md.)
#[test]
fn a_removed_member_cannot_pull_a_member_into_a_group_it_forged_under_the_same_id() {
    let clock = ManualClock::starting_now();
    let mut alice = device("alice", 1, &clock);
    let mut bob = device("bob", 2, &clock);
    let mut mallory = device("mallory", 3, &clock);
    let group = alice.create_group().unwrap();
    let added = alice
        .add_members(&group, &[key_package(&bob), key_package(&mallory)])
        .unwrap();
    deliver(&added, &mut [&mut bob, &mut mallory]);
    assert!(bob.groups.contains_key(&group) && mallory.groups.contains_key(&group));
    let (mallory_user, mallory_device) = (mallory.device.user_id(), mallory.device.device_id());
    let removed = alice
        .remove_device(&group, &mallory_user, &mallory_device)
        .unwrap();
    deliver(&removed, &mut [&mut bob, &mut mallory]);
    let bob_epoch = bob.groups[&group].epoch().as_u64();
    let real_members = bob.members(&group).unwrap().len();
    assert_eq!(real_members, 2);

    // Mallory's forgery: a group of her own under the real id, some epochs further than
    // bob's, with bob added by his published key package; the Welcome carries the branch
    // history she knows (the real one, up to her removal), signed with her device key.
    let provider = OpenMlsRustCrypto::default();
    let signer = DeviceSigner(mallory.device.signature_key_pair());
    let mut fake = MlsGroup::builder()
        .with_group_id(group.to_openmls())
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .build(&provider, &signer, mallory.credential.clone())
        .unwrap();
    for _ in 0..bob_epoch + 2 {
        fake.self_update(&provider, &signer, LeafNodeParameters::default())
            .unwrap();
        fake.merge_pending_commit(&provider).unwrap();
    }
    let package = MlsMessageIn::tls_deserialize_exact(key_package(&bob)).unwrap();
    let package = match package.extract() {
        openmls::prelude::MlsMessageBodyIn::KeyPackage(p) => p,
        _ => panic!("not a key package"),
    };
    let package: KeyPackageIn = package;
    let package = package
        .validate(
            openmls_traits::OpenMlsProvider::crypto(&provider),
            ProtocolVersion::Mls10,
        )
        .unwrap();
    let (_, welcome, _) = fake.add_members(&provider, &signer, &[package]).unwrap();
    fake.merge_pending_commit(&provider).unwrap();
    let epoch = fake.epoch().as_u64();
    let history: Vec<_> = mallory
        .branch_history(&group)
        .unwrap()
        .into_iter()
        .filter(|(e, _)| *e < epoch)
        .collect();
    assert!(
        !history.is_empty(),
        "mallory knows the history up to her removal"
    );
    let context = encode_history(group.as_slice(), epoch, &history, |payload| {
        mallory.sign_context(payload)
    })
    .unwrap();
    let forged = Envelope::with_context(
        EnvelopeKind::Welcome,
        welcome.tls_serialize_detached().unwrap(),
        &context,
    );
    let result = bob.handle_envelope(&forged.to_bytes());
    let members = bob.members(&group).unwrap();
    assert!(
        members.len() == real_members && !members.iter().any(|m| m.user_id() == mallory_user),
        "bob left the real group for mallory's forgery: {result:?}, {} members",
        members.len()
    );
    // It waits (it is for a later epoch; no removal of bob will come to take it), and bob
    // still reads alice.
    assert!(
        matches!(&result, Ok(output) if output.disposition == crate::Disposition::Buffered),
        "{result:?}"
    );
    let sent = alice.send(&group, b"after the forgery").unwrap();
    let read = bob
        .handle_envelope(&sent.outbound[0].envelope.to_bytes())
        .unwrap();
    assert!(
        read.events
            .iter()
            .any(|e| matches!(e, crate::Event::Message { .. }))
    );
}
