//! A removed member forging a Welcome for the group it was removed from: it knows the group id
//! and the branch history up to its removal, and can make an OpenMLS group of its own under that
//! id, add a member's published key package and sign a branch history that agrees with the
//! member's. The member must not leave the real group for it.
//!
//! Test code, compiled only under `cfg(test)`: every step returns its error to the test (which
//! then fails), and the outcome is asserted.

use openmls::prelude::{
    KeyPackageIn, LeafNodeParameters, MlsGroup, MlsMessageBodyIn, MlsMessageIn,
    OpenMlsProvider as _, ProtocolVersion,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::{Deserialize as _, Serialize as _};

use crate::atomicity_tests::{device, key_package};
use crate::key_package_manager::DeviceSigner;
use crate::signed_context::encode_history;
use crate::{
    CIPHERSUITE, DeviceAddress, Disposition, Envelope, EnvelopeKind, Event, MlsClient, MlsError,
    Output,
};

/// Hands every envelope of `output` to the listed clients it is addressed to.
fn deliver(output: &Output, to: &mut [&mut MlsClient]) -> Result<(), MlsError> {
    for outbound in &output.outbound {
        for client in to.iter_mut() {
            let me = DeviceAddress {
                user_id: client.device.user_id(),
                device_id: client.device.device_id(),
            };
            if outbound.to.devices.contains(&me) {
                client.handle_envelope(&outbound.envelope.to_bytes())?;
            }
        }
    }
    Ok(())
}

/// Mallory, removed by alice, forges a Welcome for bob into a group of her own under the real
/// id, with the real branch history up to her removal: it agrees with bob's, and hers is later
/// ("the group went on without you"). (A history that also claims a commit beating alice's
/// removal is a form still open: docs/THREAT_MODEL.md.)
#[test]
fn a_removed_member_cannot_pull_a_member_into_a_group_it_forged_under_the_same_id()
-> Result<(), MlsError> {
    let (mut alice, _) = device("alice", 1);
    let (mut bob, _) = device("bob", 2);
    let (mut mallory, _) = device("mallory", 3);
    let group = alice.create_group()?;
    let added = alice.add_members(&group, &[key_package(&bob).1, key_package(&mallory).1])?;
    deliver(&added, &mut [&mut bob, &mut mallory])?;
    assert!(bob.groups.contains_key(&group) && mallory.groups.contains_key(&group));
    let (mallory_user, mallory_device) = (mallory.device.user_id(), mallory.device.device_id());
    let removed = alice.remove_device(&group, &mallory_user, &mallory_device)?;
    deliver(&removed, &mut [&mut bob, &mut mallory])?;
    let bob_epoch = bob.group(&group)?.epoch().as_u64();
    let real_members = bob.members(&group)?.len();
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
        .map_err(|e| MlsError::openmls("forge: create the group", e))?;
    for _ in 0..bob_epoch + 2 {
        fake.self_update(&provider, &signer, LeafNodeParameters::default())
            .map_err(|e| MlsError::openmls("forge: self-update", e))?;
        fake.merge_pending_commit(&provider)
            .map_err(|e| MlsError::openmls("forge: merge", e))?;
    }
    let message = MlsMessageIn::tls_deserialize_exact(key_package(&bob).1)
        .map_err(|e| MlsError::openmls("forge: read bob's key package", e))?;
    let MlsMessageBodyIn::KeyPackage(package) = message.extract() else {
        return Err(MlsError::Internal {
            what: "forge: bob published something other than a key package",
        });
    };
    let package = KeyPackageIn::validate(package, provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| MlsError::openmls("forge: validate bob's key package", e))?;
    let (_, welcome, _) = fake
        .add_members(&provider, &signer, &[package])
        .map_err(|e| MlsError::openmls("forge: add bob", e))?;
    fake.merge_pending_commit(&provider)
        .map_err(|e| MlsError::openmls("forge: merge the add", e))?;
    let epoch = fake.epoch().as_u64();
    let history: Vec<_> = mallory
        .branch_history(&group)?
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
    .ok_or(MlsError::Internal {
        what: "forge: the history does not fit its format",
    })?;
    let payload = welcome
        .tls_serialize_detached()
        .map_err(|e| MlsError::openmls("forge: encode the Welcome", e))?;
    let forged = Envelope::with_context(EnvelopeKind::Welcome, payload, &context);
    let result = bob.handle_envelope(&forged.to_bytes());
    let members = bob.members(&group)?;
    assert!(
        members.len() == real_members && !members.iter().any(|m| m.user_id() == mallory_user),
        "bob left the real group for mallory's forgery: {result:?}, {} members",
        members.len()
    );
    // It waits (it is for a later epoch; no removal of bob will come to take it), and bob
    // still reads alice.
    assert!(
        matches!(&result, Ok(output) if output.disposition == Disposition::Buffered),
        "{result:?}"
    );
    let sent = alice.send(&group, b"after the forgery")?;
    let mut read = Vec::new();
    for outbound in &sent.outbound {
        read.extend(bob.handle_envelope(&outbound.envelope.to_bytes())?.events);
    }
    assert!(read.iter().any(|e| matches!(e, Event::Message { .. })));
    Ok(())
}
