//! Joining and coming back: a new device of a member user, a device that fell behind, a device
//! that lost its store; a removed user refused; a GroupInfo that is not one; one write.

use super::*;

#[test]
fn a_new_device_of_a_member_user_joins_without_an_invitation() {
    let mut h = Harness::memory(&["alice", "bob"], 1);
    let group = h.group_with(0, &[1]);
    let phone = h.add_node("alice-phone", Some(0));
    let alice_user = h.nodes[0].identity.user_id();
    let info = h.nodes[1]
        .client()
        .export_group_info(&group, &alice_user)
        .unwrap();
    let output = h.run(phone, |c| c.join_by_external_commit(&info));
    assert_eq!(output.outbound.len(), 1, "one commit, to every member");
    assert_eq!(rejoined(&h, phone), 1);
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    for member in [0, 1] {
        assert_eq!(saw_device_rejoin(&h, member), 1, "node {member}");
    }
    h.assert_converged(&group, &[0, 1, phone]);
    assert_eq!(h.nodes[1].client().members(&group).unwrap().len(), 3);
    h.assert_group_works(&group, phone, &[0, 1]);
    h.assert_group_works(&group, 1, &[0, phone]);
}

#[test]
fn a_device_that_fell_behind_comes_back_and_its_old_leaf_goes() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 2);
    let group = h.group_with(0, &[1, 2]);
    // Carol's device misses four epochs: every commit for it is lost.
    for _ in 0..4 {
        let g = group.clone();
        h.run(0, move |c| c.self_update(&g));
        h.nodes[2].inbox.clear();
        h.deliver_all();
    }
    let behind = h.nodes[2].client().epoch(&group).unwrap();
    let current = h.nodes[0].client().epoch(&group).unwrap();
    assert!(behind + 4 <= current, "{behind} {current}");
    let info = rejoin_with_group_info_of(&mut h, &group, 2, 1);
    h.assert_converged(&group, &[0, 1, 2]);
    // The same three devices: her old leaf was removed by the commit that added the new one.
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
    let replaced = h.nodes[0].events.iter().find_map(|e| match e {
        Event::DeviceRejoined { replaced, .. } => Some(replaced.len()),
        _ => None,
    });
    assert_eq!(replaced, Some(1));
    h.assert_group_works(&group, 2, &[0, 1]);
    h.assert_group_works(&group, 0, &[1, 2]);
    // A second time with the same GroupInfo: this device already moved on from that epoch.
    let again = h.nodes[2]
        .client()
        .join_by_external_commit(&info)
        .unwrap_err();
    assert!(
        matches!(again, MlsError::InvalidGroupInfo { .. }),
        "{again}"
    );
}

#[test]
fn a_removed_user_cannot_come_back_by_external_commit() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 3);
    let group = h.group_with(0, &[1, 2]);
    let carol_user = h.nodes[2].identity.user_id();
    // A GroupInfo carol got while she was a member.
    let old_info = h.nodes[1]
        .client()
        .export_group_info(&group, &carol_user)
        .unwrap();
    let g = group.clone();
    h.run(0, move |c| c.remove_user(&g, &carol_user));
    h.deliver_all();
    assert!(!h.nodes[2].client().groups().contains(&group));

    // Members give her none now.
    let refused = h.nodes[1]
        .client()
        .export_group_info(&group, &carol_user)
        .unwrap_err();
    assert!(
        matches!(refused, MlsError::RejoinRefused { .. }),
        "{refused}"
    );
    assert_eq!(refused.kind(), ErrorKind::ApiMisuse);
    // A current one meant for someone else does not let her in either.
    let bob_user = h.nodes[1].identity.user_id();
    let bobs = h.nodes[1]
        .client()
        .export_group_info(&group, &bob_user)
        .unwrap();
    let refused = h.nodes[2]
        .client()
        .join_by_external_commit(&bobs)
        .unwrap_err();
    assert!(
        matches!(refused, MlsError::RejoinRefused { .. }),
        "{refused}"
    );

    // The old one makes a commit in the epoch she was removed in: it competes with the removal
    // and loses to it, at every member.
    let output = h.run(2, |c| c.join_by_external_commit(&old_info));
    let commit = output.outbound[0].envelope.to_bytes();
    for member in [0, 1] {
        let disposition = h.handle(member, &commit);
        assert_eq!(disposition, Ok(Disposition::Superseded), "node {member}");
    }
    h.nodes[0].inbox.clear();
    h.nodes[1].inbox.clear();
    h.assert_converged(&group, &[0, 1]);
    let members = h.nodes[0].client().members(&group).unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.user_id() != carol_user));
}

#[test]
fn a_group_info_that_is_not_one_is_refused_and_changes_nothing() {
    let (mut h, group, info) = alice_and_bob_with_a_group_info_for_alice(4);
    let phone = h.add_node("alice-phone", Some(0));
    let mut flipped = info.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x40;
    for bad in [&b"junk"[..], &flipped[..], &info[..info.len() / 2]] {
        let error = h.nodes[phone]
            .client()
            .join_by_external_commit(bad)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PeerInput, "{error}");
    }
    assert!(h.nodes[phone].client().groups().is_empty());
    // The genuine one still works afterwards.
    h.run(phone, |c| c.join_by_external_commit(&info));
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, phone]);
}

#[test]
fn joining_by_external_commit_is_one_write_and_a_failed_one_leaves_nothing() {
    use std::sync::Arc;

    use core_identity::IdentityStore;
    use core_mls::{MlsClient, MlsConfig};
    use rand::SeedableRng;
    use spacepanda_core::{FailPoint, FailingStore, ManualClock, MemoryStore, SharedStore};

    let (h, group, info) = alice_and_bob_with_a_group_info_for_alice(6);
    // Alice's phone, on a store that fails on command.
    let clock = Arc::new(ManualClock::starting_this_week());
    let store = Arc::new(FailingStore::new(MemoryStore::new()));
    let shared: SharedStore = store.clone();
    let exported = IdentityStore::new(h.nodes[0].store.clone(), clock.clone())
        .export_identity_key()
        .unwrap();
    let identity = IdentityStore::new(shared.clone(), clock.clone())
        .import_with(
            &exported,
            "alice",
            &mut rand::rngs::StdRng::seed_from_u64(6),
        )
        .unwrap();
    let mut phone =
        MlsClient::open_seeded(shared, clock, identity, MlsConfig::default(), [6; 32]).unwrap();

    let before = store.inner().dump().unwrap();
    store.fail_at(FailPoint::Apply(1));
    let failed = phone.join_by_external_commit(&info).unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::LocalStorage, "{failed}");
    assert_eq!(
        store.inner().dump().unwrap(),
        before,
        "nothing of it was written"
    );
    assert!(phone.groups().is_empty());

    store.fail_at(FailPoint::Apply(2));
    let output = phone.join_by_external_commit(&info).unwrap();
    assert_eq!(store.calls().applies, 1, "one transaction, one apply");
    assert_eq!(phone.groups(), vec![group.clone()]);
    assert_eq!(
        phone.pending_outbound().unwrap().len(),
        output.outbound.len()
    );
    assert!(!store.inner().is_empty().unwrap());
}

#[test]
fn a_device_that_lost_its_store_comes_back_under_its_id_and_its_old_leaf_goes() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 6);
    let group = h.group_with(0, &[1, 2]);
    let carol_device = h.nodes[2].identity.device_id();
    let old_key = h.nodes[2].identity.signature_public_key();
    h.lose_store(2);
    assert!(h.nodes[2].client().groups().is_empty());
    assert_ne!(h.nodes[2].identity.signature_public_key(), old_key);
    rejoin_with_group_info_of(&mut h, &group, 2, 1);
    h.assert_converged(&group, &[0, 1, 2]);
    // Three devices, not four: the dead leaf went with the commit that brought her back.
    let members = h.nodes[0].client().members(&group).unwrap();
    assert_eq!(members.len(), 3);
    let carols: Vec<_> = members
        .iter()
        .filter(|m| m.device_id() == carol_device)
        .collect();
    assert_eq!(carols.len(), 1);
    let replaced = h.nodes[0].events.iter().find_map(|e| match e {
        Event::DeviceRejoined { replaced, .. } => Some(replaced.clone()),
        _ => None,
    });
    let replaced = replaced.expect("members are told");
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].device_id(), carol_device);
    h.assert_group_works(&group, 2, &[0, 1]);
    h.assert_group_works(&group, 1, &[0, 2]);
}
