//! A removed member forging a Welcome for the group it was removed from: it knows the group id
//! and the branch history up to its removal, and can make an OpenMLS group of its own under that
//! id, add a member's published key package and sign a branch history that agrees with the
//! member's, or one that claims a commit beating its removal. The member must not leave the
//! real group for it. A member's used key package is no better: it never joins another group.
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
use crate::branch_order::{
    BranchHistory, BranchOrder, CommitRank, EpochBranch, PRIORITY_LEN, compare_branches,
};
use crate::key_package_manager::DeviceSigner;
use crate::{
    CIPHERSUITE, DeviceAddress, Disposition, Envelope, EnvelopeKind, Event, MlsClient, MlsConfig,
    MlsError, Output,
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

/// Alice makes a group with bob and mallory, then removes mallory. Returns alice, bob, mallory
/// and the group.
fn group_that_removed_mallory()
-> Result<(MlsClient, MlsClient, MlsClient, crate::GroupId), MlsError> {
    let (mut alice, _) = device("alice", 1);
    let (mut bob, _) = device("bob", 2);
    let (mut mallory, _) = device("mallory", 3);
    let group = alice.create_group()?;
    let added = alice.add_members(&group, &[key_package(&bob)?.1, key_package(&mallory)?.1])?;
    deliver(&added, &mut [&mut bob, &mut mallory])?;
    assert!(bob.groups.contains_key(&group) && mallory.groups.contains_key(&group));
    let (mallory_user, mallory_device) = (mallory.device.user_id(), mallory.device.device_id());
    let removed = alice.remove_device(&group, &mallory_user, &mallory_device)?;
    deliver(&removed, &mut [&mut bob, &mut mallory])?;
    assert_eq!(bob.members(&group)?.len(), 2);
    Ok((alice, bob, mallory, group))
}

/// Mallory's forgery: a group of her own under the real id, at `epoch_at_least` or later, with
/// `victim` added by its published key package; the Welcome carries `history` (epochs before
/// the Welcome's), signed with her device key.
fn forge_welcome(
    mallory: &MlsClient,
    group: &crate::GroupId,
    victim: &MlsClient,
    epoch_at_least: u64,
    history: &[(u64, EpochBranch)],
) -> Result<Envelope, MlsError> {
    let provider = OpenMlsRustCrypto::default();
    let signer = DeviceSigner(mallory.device.signature_key_pair());
    let mut fake = MlsGroup::builder()
        .with_group_id(group.to_openmls())
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .build(&provider, &signer, mallory.credential.clone())
        .map_err(|e| MlsError::openmls("forge: create the group", e))?;
    for _ in 0..epoch_at_least {
        fake.self_update(&provider, &signer, LeafNodeParameters::default())
            .map_err(|e| MlsError::openmls("forge: self-update", e))?;
        fake.merge_pending_commit(&provider)
            .map_err(|e| MlsError::openmls("forge: merge", e))?;
    }
    let message = MlsMessageIn::tls_deserialize_exact(key_package(victim)?.1)
        .map_err(|e| MlsError::openmls("forge: read the victim's key package", e))?;
    let MlsMessageBodyIn::KeyPackage(package) = message.extract() else {
        return Err(MlsError::Internal {
            what: "forge: the victim published something other than a key package",
        });
    };
    let package = KeyPackageIn::validate(package, provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| MlsError::openmls("forge: validate the victim's key package", e))?;
    let (_, welcome, _) = fake
        .add_members(&provider, &signer, &[package])
        .map_err(|e| MlsError::openmls("forge: add the victim", e))?;
    fake.merge_pending_commit(&provider)
        .map_err(|e| MlsError::openmls("forge: merge the add", e))?;
    let payload = welcome
        .tls_serialize_detached()
        .map_err(|e| MlsError::openmls("forge: encode the Welcome", e))?;
    // Signed with her own device key, as any Welcome's history is by its sender.
    mallory.welcome_with_given_history(group, fake.epoch().as_u64(), history, payload)
}

/// Rewrites mallory's history so that it claims, at the epoch of her removal, a commit of hers
/// that beats it (it removes her remover, and claims the best priority). Returns that epoch.
fn claim_a_commit_beating_the_removal(history: &mut BranchHistory) -> Result<u64, MlsError> {
    let (removal_epoch, removal) =
        history
            .iter_mut()
            .max_by_key(|(e, _)| *e)
            .ok_or(MlsError::Internal {
                what: "mallory knows no history",
            })?;
    let real = removal.merged.clone();
    let mallory_leaf = real.removes.first().copied().ok_or(MlsError::Internal {
        what: "the last epoch mallory knows did not remove her",
    })?;
    removal.merged = CommitRank {
        commit_ref: vec![0; real.commit_ref.len()],
        committer: mallory_leaf,
        removes: vec![real.committer],
        priority: [0; PRIORITY_LEN],
    };
    removal.others = vec![real];
    Ok(*removal_epoch)
}

/// The forged `history`, for a Welcome at `epoch`, beats `victim`'s branch by the fork rule (or
/// the test tests nothing).
fn assert_the_claim_wins(
    victim: &MlsClient,
    group: &crate::GroupId,
    history: &BranchHistory,
    epoch: u64,
) -> Result<(), MlsError> {
    let current = victim.group(group)?.epoch().as_u64();
    assert_eq!(
        compare_branches(&victim.branch_history(group)?, current, history, epoch),
        BranchOrder::TheirsWins,
        "the claim must win by the fork rule, or this tests nothing"
    );
    Ok(())
}

/// `victim` got `forged` and must still be in the real group (`members` devices, no mallory),
/// reading alice.
fn still_in_the_real_group(
    victim: &mut MlsClient,
    alice: &mut MlsClient,
    group: &crate::GroupId,
    mallory_user: &core_identity::UserId,
    members: usize,
    forged: &Envelope,
) -> Result<Vec<Event>, MlsError> {
    let result = victim.handle_envelope(&forged.to_bytes());
    let now = victim.members(group)?;
    assert!(
        now.len() == members && !now.iter().any(|m| m.user_id() == *mallory_user),
        "the victim left the real group for mallory's forgery: {result:?}, {} members",
        now.len()
    );
    // It waits, or is refused as a Welcome for a group the device holds.
    assert!(
        matches!(&result, Ok(output) if output.disposition == Disposition::Buffered)
            || matches!(&result, Err(MlsError::AlreadyJoined { .. })),
        "{result:?}"
    );
    let sent = alice.send(group, b"after the forgery")?;
    let mut read = Vec::new();
    for outbound in &sent.outbound {
        read.extend(
            victim
                .handle_envelope(&outbound.envelope.to_bytes())?
                .events,
        );
    }
    assert!(read.iter().any(|e| matches!(e, Event::Message { .. })));
    Ok(result.map(|output| output.events).unwrap_or_default())
}

/// Mallory, removed by alice, forges a Welcome for bob with the real branch history up to her
/// removal: it agrees with bob's, and hers is later ("the group went on without you").
#[test]
fn a_removed_member_cannot_pull_a_member_into_a_group_it_forged_under_the_same_id()
-> Result<(), MlsError> {
    let (mut alice, mut bob, mallory, group) = group_that_removed_mallory()?;
    let bob_epoch = bob.group(&group)?.epoch().as_u64();
    let history = mallory.branch_history(&group)?;
    assert!(
        !history.is_empty(),
        "mallory knows the history up to her removal"
    );
    let forged = forge_welcome(&mallory, &group, &bob, bob_epoch + 2, &history)?;
    let mallory_user = mallory.device.user_id();
    still_in_the_real_group(&mut bob, &mut alice, &group, &mallory_user, 2, &forged)?;
    Ok(())
}

/// The same forgery with a history that claims a commit of mallory's beating her removal (it
/// removes alice, and claims the best priority). Bob, a member in that epoch who holds its
/// snapshot, waits for that commit to come as a message (it never does). (A device added after
/// that epoch has only its inviter's word for it, and cannot tell such a claim from a true one:
/// docs/THREAT_MODEL.md, "Still open".)
#[test]
fn a_removed_member_cannot_claim_a_commit_that_beats_its_removal() -> Result<(), MlsError> {
    let (mut alice, mut bob, mallory, group) = group_that_removed_mallory()?;
    let mut history = mallory.branch_history(&group)?;
    let removal_epoch = claim_a_commit_beating_the_removal(&mut history)?;
    let bob_epoch = bob.group(&group)?.epoch().as_u64();
    assert_the_claim_wins(&bob, &group, &history, removal_epoch + 3)?;
    let mallory_user = mallory.device.user_id();
    let forged = forge_welcome(&mallory, &group, &bob, bob_epoch + 2, &history)?;
    still_in_the_real_group(&mut bob, &mut alice, &group, &mallory_user, 2, &forged)?;
    Ok(())
}

/// The claimed-winner forgery against carol, added after mallory's removal (with `epochs_since`
/// more epochs in between): carol holds no snapshot of the claimed epoch, only alice's word for
/// it, so she cannot tell the claim from a true one. It waits; carol is told
/// (`BranchContested`), and a member of her state advises her to stay.
fn a_claim_about_an_epoch_before_carol_joined(epochs_since: u64) -> Result<(), MlsError> {
    let (mut alice, mut bob, mallory, group) = group_that_removed_mallory()?;
    let mut history = mallory.branch_history(&group)?;
    let removal_epoch = claim_a_commit_beating_the_removal(&mut history)?;
    for _ in 0..epochs_since {
        let updated = alice.self_update(&group)?;
        deliver(&updated, &mut [&mut bob])?;
    }
    let (mut carol, _) = device("carol", 4);
    let added = alice.add_members(&group, &[key_package(&carol)?.1])?;
    deliver(&added, &mut [&mut bob, &mut carol])?;
    let carol_epoch = carol.group(&group)?.epoch().as_u64();
    // Carol knows the epoch of mallory's removal from alice's Welcome.
    assert_the_claim_wins(&carol, &group, &history, carol_epoch + 3)?;
    let mallory_user = mallory.device.user_id();
    let forged = forge_welcome(&mallory, &group, &carol, carol_epoch + 2, &history)?;
    let events =
        still_in_the_real_group(&mut carol, &mut alice, &group, &mallory_user, 3, &forged)?;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::BranchContested { epoch, .. } if *epoch == removal_epoch)),
        "{events:?}"
    );
    let info = alice.export_group_info(&group, &carol.device.user_id())?;
    assert_eq!(carol.rejoin_advice(&info)?, crate::RejoinAdvice::Stay);
    Ok(())
}

#[test]
fn a_claim_about_an_epoch_before_a_device_joined_waits_and_the_device_asks_a_member()
-> Result<(), MlsError> {
    a_claim_about_an_epoch_before_carol_joined(0)
}

#[test]
fn a_claim_older_than_the_fork_window_waits_too() -> Result<(), MlsError> {
    let window = MlsConfig::default().fork_window_epochs;
    a_claim_about_an_epoch_before_carol_joined(window + 1)
}

/// A single-use key package that joined one group cannot join another, even by a Welcome that
/// may replace a held state: carol, a member of the second group, removes bob and re-adds him
/// with the package he joined alice's group with (bob has not heard of the removal, so the
/// Welcome says the group went on from his state, from a member of it).
#[test]
fn a_used_key_package_cannot_replace_the_state_of_another_group() -> Result<(), MlsError> {
    let (mut alice, _) = device("alice", 1);
    let (mut bob, _) = device("bob", 2);
    let (mut carol, _) = device("carol", 3);
    let first = alice.create_group()?;
    let (_, used) = key_package(&bob)?;
    deliver(
        &alice.add_members(&first, std::slice::from_ref(&used))?,
        &mut [&mut bob],
    )?;
    let second = carol.create_group()?;
    deliver(
        &carol.add_members(&second, &[key_package(&bob)?.1])?,
        &mut [&mut bob],
    )?;
    assert!(bob.groups.contains_key(&first) && bob.groups.contains_key(&second));
    let (bob_user, bob_device) = (bob.device.user_id(), bob.device.device_id());
    carol.remove_device(&second, &bob_user, &bob_device)?;
    let readded = carol.add_members(&second, &[used])?;
    let welcome = readded
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == EnvelopeKind::Welcome)
        .ok_or(MlsError::Internal {
            what: "carol's re-add sent no Welcome",
        })?;
    let result = bob.handle_envelope(&welcome.envelope.to_bytes());
    assert!(
        matches!(&result, Err(MlsError::NoMatchingKeyPackage { .. })),
        "{result:?}"
    );
    assert_eq!(bob.group(&second)?.epoch().as_u64(), 1);
    Ok(())
}
