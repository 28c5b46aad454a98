//! Joining by external commit (RFC 9420 §12.4.3.2): a new device of a member user joins by
//! itself, a device that fell behind comes back, and a user removed from the group cannot.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;
mod raw_peer;

use core_mls::{Disposition, ErrorKind, Event, MlsError, RejoinAdvice};
use engine_harness::Harness;
use spacepanda_core::Clock as _;

fn rejoined(h: &Harness, node: usize) -> usize {
    h.count_events(node, |e| matches!(e, Event::Rejoined { .. }))
}

fn saw_device_rejoin(h: &Harness, node: usize) -> usize {
    h.count_events(node, |e| matches!(e, Event::DeviceRejoined { .. }))
}

/// `member` gives `joiner` a GroupInfo, the joiner joins by external commit with it, and
/// everything is delivered without an error. Returns the GroupInfo.
fn rejoin_with_group_info_of(
    h: &mut Harness,
    group: &core_mls::GroupId,
    joiner: usize,
    member: usize,
) -> Vec<u8> {
    let info = group_info_for(h, group, joiner, member);
    let given = info.clone();
    h.run(joiner, move |c| c.join_by_external_commit(&given));
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    info
}

/// The GroupInfo `member` gives `device` (for `device`'s user).
fn group_info_for(
    h: &mut Harness,
    group: &core_mls::GroupId,
    device: usize,
    member: usize,
) -> Vec<u8> {
    let user = h.nodes[device].identity.user_id();
    h.nodes[member]
        .client()
        .export_group_info(group, &user)
        .unwrap()
}

/// Alice and bob in a group, and a GroupInfo bob gave for a device of alice's.
fn alice_and_bob_with_a_group_info_for_alice(seed: u64) -> (Harness, core_mls::GroupId, Vec<u8>) {
    let mut h = Harness::memory(&["alice", "bob"], seed);
    let group = h.group_with(0, &[1]);
    let alice_user = h.nodes[0].identity.user_id();
    let info = h.nodes[1]
        .client()
        .export_group_info(&group, &alice_user)
        .unwrap();
    (h, group, info)
}

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
fn two_halves_forked_past_the_window_heal_by_rejoining() {
    let config = core_mls::MlsConfig {
        fork_window_epochs: 2,
        ..core_mls::MlsConfig::default()
    };
    let mut h = Harness::seeded(&["a", "b", "c", "d"], 5, config);
    let group = h.group_with(0, &[1, 2, 3]);
    // The network splits: each half goes four epochs on without the other.
    let held_back = h.split_apart(&group, &[&[0, 1], &[2, 3]], 4);
    // It heals: what each half sent reaches the other, too late to be judged.
    h.heal(held_back);
    let outside: usize = h
        .errors()
        .values()
        .flatten()
        .filter(|e| e.contains("older than the fork window"))
        .count();
    assert!(outside > 0, "{:?}", h.errors());
    // Each device asks a device of the other half for a GroupInfo, and moves only if that
    // branch outranks its own: the same order everywhere, so one half moves.
    follow_the_other_halfs_advice(&mut h, &group, |_| {});
    h.assert_converged(&group, &[0, 1, 2, 3]);
    let moved: Vec<usize> = (0..4).filter(|d| rejoined(&h, *d) > 0).collect();
    assert_eq!(moved.len(), 2, "one half moved: {moved:?}");
    assert!(moved == [0, 1] || moved == [2, 3], "{moved:?}");
    for device in 0..4 {
        if moved.contains(&device) {
            assert_eq!(rejoined(&h, device), 1, "one event each");
        } else {
            // Told once for each device that came over.
            assert_eq!(saw_device_rejoin(&h, device), 2, "node {device}");
        }
    }
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 4);
    h.assert_group_works(
        &group,
        moved[0],
        &[0, 1, 2, 3]
            .into_iter()
            .filter(|d| *d != moved[0])
            .collect::<Vec<_>>(),
    );
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

/// Alice and bob; bob commits in the epoch of a GroupInfo he gave for alice's user, and a new
/// phone of alice's joins by external commit with it (nothing delivered yet): a member's commit
/// wins. Returns the harness, the group, the phone and the GroupInfo.
fn a_phone_joining_against_bobs_commit(seed: u64) -> (Harness, core_mls::GroupId, usize, Vec<u8>) {
    let (mut h, group, info) = alice_and_bob_with_a_group_info_for_alice(seed);
    let phone = h.add_node("alice-phone", Some(0));
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    let given = info.clone();
    h.run(phone, move |c| c.join_by_external_commit(&given));
    (h, group, phone, info)
}

#[test]
fn a_rejoin_that_loses_a_race_is_told_and_joins_again() {
    let (mut h, group, phone, info) = a_phone_joining_against_bobs_commit(7);
    let alice_user = h.nodes[0].identity.user_id();
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    let contested = h.nodes[phone]
        .events
        .iter()
        .filter(|e| matches!(e, Event::RejoinContested { .. }))
        .count();
    assert_eq!(contested, 1);
    h.assert_converged(&group, &[0, 1]);
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 2);
    // A member's GroupInfo without the phone's leaf, of a later epoch, says rejoin; the one
    // it joined with (that epoch, no leaf of the phone) says ask later.
    assert_eq!(
        h.nodes[phone].client().rejoin_advice(&info).unwrap(),
        RejoinAdvice::AskLater
    );
    let fresh = h.nodes[1]
        .client()
        .export_group_info(&group, &alice_user)
        .unwrap();
    assert_eq!(
        h.nodes[phone].client().rejoin_advice(&fresh).unwrap(),
        RejoinAdvice::Rejoin
    );
    h.run(phone, |c| c.join_by_external_commit(&fresh));
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    h.assert_converged(&group, &[0, 1, phone]);
    h.assert_group_works(&group, phone, &[0, 1]);
    // Now the group holds the phone: a member's GroupInfo does not move it again.
    let later = h.nodes[0]
        .client()
        .export_group_info(&group, &alice_user)
        .unwrap();
    assert_eq!(
        h.nodes[phone].client().rejoin_advice(&later).unwrap(),
        RejoinAdvice::Stay
    );
}

#[test]
fn what_a_device_sent_after_a_rejoin_that_lost_goes_out_again_when_it_joins_again() {
    // Bob's commit and the phone's external join race in the GroupInfo's epoch (bob's wins).
    // Before it hears of that, the phone sends in its join's epoch and then commits, which
    // snapshots that epoch and moves the sent log's window past it.
    let (mut h, group, phone, _) = a_phone_joining_against_bobs_commit(11);
    let alice_user = h.nodes[0].identity.user_id();
    let g = group.clone();
    let sent = h.run(phone, move |c| c.send(&g, b"sent on a join that lost"));
    let id = Harness::sent_id(&sent);
    let g = group.clone();
    h.run(phone, move |c| c.self_update(&g));
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    assert!(
        h.nodes[phone]
            .events
            .iter()
            .any(|e| matches!(e, Event::RejoinContested { .. }))
    );
    assert_eq!(
        h.copies(0, &id),
        0,
        "the message was made on the losing branch"
    );
    let fresh = h.nodes[1]
        .client()
        .export_group_info(&group, &alice_user)
        .unwrap();
    h.run(phone, |c| c.join_by_external_commit(&fresh));
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    h.assert_converged(&group, &[0, 1, phone]);
    // Without the phone's join holding its sent log back, the commit pruned the message and
    // nobody ever got it.
    assert_eq!(h.copies(0, &id), 1, "alice did not get the phone's message");
    assert_eq!(h.copies(1, &id), 1, "bob did not get the phone's message");
}

/// Devices 0 and 1 ask device 2, and devices 2 and 3 ask device 0, for a GroupInfo, and each
/// rejoins if the advice says so (`after_join` runs right after a join, before delivery).
fn follow_the_other_halfs_advice(
    h: &mut Harness,
    group: &core_mls::GroupId,
    mut after_join: impl FnMut(&mut Harness),
) {
    for device in 0..4 {
        let other = if device < 2 { 2 } else { 0 };
        let info = group_info_for(h, group, device, other);
        if h.nodes[device].client().rejoin_advice(&info).unwrap() == RejoinAdvice::Rejoin {
            h.run(device, |c| c.join_by_external_commit(&info));
            after_join(h);
            h.deliver_all();
        }
    }
}

/// How e goes in [`e_goes_on_one_half_of_a_split`].
#[derive(Clone, Copy)]
enum EGoes {
    /// a removes e.
    RemovedByA,
    /// e leaves (a proposal), and a's self-update commits it.
    Leaves,
}

/// a, b, c, d and e (fork window 2); the network splits into a and b, and c and d, with e on
/// the side `e_with_a` says; each half goes four epochs on without the other, then a removes e
/// and sends a message. It heals and every device of a, b, c and d follows the advice of a
/// device of the other half. Returns the id of a's message.
fn a_removal_on_one_half_of_a_split(
    seed: u64,
    e_with_a: bool,
) -> (Harness, core_mls::GroupId, core_mls::MessageId) {
    e_goes_on_one_half_of_a_split(seed, e_with_a, EGoes::RemovedByA)
}

/// As [`a_removal_on_one_half_of_a_split`], with e going as `goes` says (a leave needs e on
/// a's side).
fn e_goes_on_one_half_of_a_split(
    seed: u64,
    e_with_a: bool,
    goes: EGoes,
) -> (Harness, core_mls::GroupId, core_mls::MessageId) {
    let config = core_mls::MlsConfig {
        fork_window_epochs: 2,
        ..core_mls::MlsConfig::default()
    };
    let mut h = Harness::seeded(&["a", "b", "c", "d", "e"], seed, config);
    let group = h.group_with(0, &[1, 2, 3, 4]);
    let halves: [&[usize]; 2] = if e_with_a {
        [&[0, 1, 4], &[2, 3]]
    } else {
        [&[0, 1], &[2, 3, 4]]
    };
    let mut held_back = h.split_apart(&group, &halves, 4);
    let g = group.clone();
    match goes {
        EGoes::RemovedByA => {
            let e_user = h.nodes[4].identity.user_id();
            let e_device = h.nodes[4].identity.device_id();
            h.run(0, move |c| c.remove_device(&g, &e_user, &e_device));
        }
        EGoes::Leaves => {
            h.run(4, move |c| c.leave_group(&g));
            h.hold_back_outside(halves[0], &mut held_back);
            h.deliver_all();
            let g = group.clone();
            h.run(0, move |c| c.self_update(&g));
        }
    }
    let g = group.clone();
    let sent = h.run(0, move |c| c.send(&g, b"after e was removed"));
    h.hold_back_outside(halves[0], &mut held_back);
    h.deliver_all();
    assert_eq!(h.nodes[4].removed_from(&group), e_with_a);
    h.heal(held_back);
    follow_the_other_halfs_advice(&mut h, &group, |h| {
        // e takes what the rejoin sent it in the order it was sent (the harness would
        // shuffle it): a message made in the rejoin's epoch would be readable there.
        for bytes in std::mem::take(&mut h.nodes[4].inbox) {
            let _ = h.handle(4, &bytes);
        }
    });
    (h, group, Harness::sent_id(&sent))
}

#[test]
fn a_removal_made_on_the_half_that_moved_is_made_again_where_it_rejoined() {
    for e_with_a in [true, false] {
        // The case: a's half is the one that moves (c and d never saw the removal).
        let seed = engine_harness::seed_where(40, |seed| {
            let (h, _, _) = a_removal_on_one_half_of_a_split(seed, e_with_a);
            rejoined(&h, 0) > 0
        });
        let (mut h, group, id) = a_removal_on_one_half_of_a_split(seed, e_with_a);
        assert_eq!(rejoined(&h, 0), 1);
        assert_eq!(rejoined(&h, 1), 1);
        h.assert_converged(&group, &[0, 1, 2, 3]);
        // Without the re-issue, e is still a member of the branch everyone is on: a removal
        // the user made would have vanished with the branch a left.
        h.assert_members_without(&group, &[0, 1, 2, 3], 4, 4);
        assert!(h.nodes[4].removed_from(&group), "e was told");
        assert!(
            !h.nodes[0]
                .events
                .iter()
                .any(|event| matches!(event, Event::CommitNotReissued { .. }))
        );
        // What a sent after removing e reaches the others once, and never e (it goes out
        // again after the removal is made again, not before).
        for node in 1..4 {
            assert_eq!(h.copies(node, &id), 1, "node {node} (e with a: {e_with_a})");
        }
        assert_eq!(
            h.copies(4, &id),
            0,
            "e read a message sent after its removal"
        );
        h.assert_group_works(&group, 0, &[1, 2, 3]);
    }
}

#[test]
fn a_leave_committed_on_the_half_that_moved_is_committed_again_where_it_rejoined() {
    // e leaves while the group is split; a commits its leave on a's side, and e, out of the
    // group, forgets it. a's side is the one that moves: on the branch everyone ends on, e is
    // still a member, and e cannot ask again. a, who committed the leave, makes it again.
    let seed = engine_harness::seed_where(40, |seed| {
        let (h, _, _) = e_goes_on_one_half_of_a_split(seed, true, EGoes::Leaves);
        rejoined(&h, 0) > 0
    });
    let (mut h, group, id) = e_goes_on_one_half_of_a_split(seed, true, EGoes::Leaves);
    assert!(h.nodes[4].client().groups().is_empty(), "e left");
    h.assert_converged(&group, &[0, 1, 2, 3]);
    // Without it, e stays in the group everyone is on: a member nobody can reach, whose leaf
    // never changes.
    h.assert_members_without(&group, &[0, 1, 2, 3], 4, 4);
    for node in 1..4 {
        assert_eq!(h.copies(node, &id), 1, "node {node}");
    }
    assert_eq!(h.copies(4, &id), 0, "e read a message sent after it left");
    h.assert_group_works(&group, 0, &[1, 2, 3]);
}

#[test]
fn an_external_commit_that_removes_another_users_device_is_refused_by_every_member() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 8);
    let group = h.group_with(0, &[1, 2]);
    // Bob's second device, driven by hand: its user is a member, so it may rejoin, but its
    // commit removes alice's leaf instead of an old one of its own.
    let phone = h.add_node("bob-phone", Some(1));
    let mut forger = raw_peer::RawPeer::device(h.nodes[phone].identity.clone());
    let bob_user = h.nodes[1].identity.user_id();
    let info = h.nodes[2]
        .client()
        .export_group_info(&group, &bob_user)
        .unwrap();
    let alice_key = h.nodes[0].identity.signature_public_key().to_vec();
    let commit = forger.external_commit(&info, Some(alice_key));
    let before = h.nodes[0].client().epoch(&group).unwrap();
    for member in [0, 1, 2] {
        let error = h.handle(member, &commit).unwrap_err();
        assert!(
            error.contains("another copy of it rejoined")
                || error.contains("removes a device other than the one rejoining"),
            "node {member}: {error}"
        );
        assert_eq!(h.nodes[member].client().epoch(&group).unwrap(), before);
        assert_eq!(h.nodes[member].client().members(&group).unwrap().len(), 3);
    }
    // The honest form of the same join is accepted.
    let honest = forger.external_commit(&info, None);
    for member in [0, 1, 2] {
        assert_eq!(h.handle(member, &honest), Ok(Disposition::Processed));
    }
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 4);
}

#[test]
fn two_rejoins_from_one_group_info_are_judged_alike_everywhere() {
    let (mut h, group, info) = alice_and_bob_with_a_group_info_for_alice(9);
    let phone = h.add_node("alice-phone", Some(0));
    let tablet = h.add_node("alice-tablet", Some(0));
    let alice_user = h.nodes[0].identity.user_id();
    h.run(phone, |c| c.join_by_external_commit(&info));
    h.run(tablet, |c| c.join_by_external_commit(&info));
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    h.assert_converged(&group, &[0, 1]);
    // Exactly one of the two is in; the other learns it lost only by asking a member.
    let members = h.nodes[0].client().members(&group).unwrap().len();
    assert_eq!(members, 3, "alice, bob and the device whose join won");
    let fresh = h.nodes[1]
        .client()
        .export_group_info(&group, &alice_user)
        .unwrap();
    let advice: Vec<RejoinAdvice> = [phone, tablet]
        .iter()
        .map(|&d| h.nodes[d].client().rejoin_advice(&fresh).unwrap())
        .collect();
    assert!(
        advice.contains(&RejoinAdvice::Stay) && advice.contains(&RejoinAdvice::Rejoin),
        "{advice:?}"
    );
    let loser = if advice[0] == RejoinAdvice::Rejoin {
        phone
    } else {
        tablet
    };
    let winner = if loser == phone { tablet } else { phone };
    h.assert_converged(&group, &[0, 1, winner]);
    h.run(loser, |c| c.join_by_external_commit(&fresh));
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    h.assert_converged(&group, &[0, 1, phone, tablet]);
}

#[test]
fn a_half_of_two_that_rejoins_at_once_ends_on_one_branch() {
    for seed in 20..32 {
        let (mut h, group, held_back) = a_b_and_c_cut_off(seed, 3);
        for (node, bytes) in held_back {
            h.nodes[node].inbox.push(bytes);
        }
        h.deliver_all();
        // Every device asks one of the other side, as the Node asks the sender.
        let asks = [(0usize, 2usize), (1, 2), (2, 0)];
        let mut infos = Vec::new();
        for (device, other) in asks {
            let user = h.nodes[device].identity.user_id();
            let info = h.nodes[other]
                .client()
                .export_group_info(&group, &user)
                .unwrap();
            infos.push((device, other, info));
        }
        for (device, _, info) in &infos {
            if h.nodes[*device].client().rejoin_advice(info).unwrap() == RejoinAdvice::Rejoin {
                let info = info.clone();
                h.run(*device, move |c| c.join_by_external_commit(&info));
            }
        }
        h.deliver_all();
        // A contested rejoin asks the member it rejoined from again, until settled.
        for _ in 0..4 {
            for (device, other, _) in &infos {
                let contested = h.nodes[*device]
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::RejoinContested { .. }));
                if !contested {
                    continue;
                }
                let user = h.nodes[*device].identity.user_id();
                let info = h.nodes[*other]
                    .client()
                    .export_group_info(&group, &user)
                    .unwrap();
                if h.nodes[*device].client().rejoin_advice(&info).unwrap() == RejoinAdvice::Rejoin {
                    h.run(*device, move |c| c.join_by_external_commit(&info));
                    h.deliver_all();
                }
            }
        }
        h.assert_converged(&group, &[0, 1, 2]);
        assert_eq!(
            h.nodes[2].client().members(&group).unwrap().len(),
            3,
            "seed {seed}"
        );
    }
}

/// Which half of a fork older than the window moves is decided where the two branches parted,
/// not by how far each went on since: a member asking before one more commit of its half and
/// one asking after it get the same advice, and the half that moves is always the same one.
/// (Judged on the current epochs, the first member moved one way and the second the other, and
/// the group split for good.)
#[test]
fn the_half_that_moves_is_decided_where_the_branches_parted() {
    let (mut cut_off_won, mut cut_off_lost) = (0, 0);
    for seed in 40..52 {
        let (mut h, group, mut held_back) = a_b_and_c_cut_off(seed, 4);
        let ask = |h: &mut Harness, device: usize, member: usize| h.ask(&group, device, member);
        // b asks c while both halves are at the same epoch; then a's half goes one epoch
        // further (still apart) and a asks c.
        let (b_advice, b_info) = ask(&mut h, 1, 2);
        let g = group.clone();
        h.run(0, move |c| c.self_update(&g));
        held_back.extend(h.nodes[2].inbox.drain(..).map(|b| (2, b)));
        h.deliver_all();
        let (a_advice, _) = ask(&mut h, 0, 2);
        let (c_advice, _) = ask(&mut h, 2, 0);
        assert_eq!(a_advice, b_advice, "seed {seed}: a and b must agree");
        let expected_c = if a_advice == RejoinAdvice::Rejoin {
            RejoinAdvice::Stay
        } else {
            RejoinAdvice::Rejoin
        };
        assert_eq!(c_advice, expected_c, "seed {seed}: exactly one half moves");
        if c_advice == RejoinAdvice::Stay {
            cut_off_won += 1;
        } else {
            cut_off_lost += 1;
        }
        // The link heals, and the half told to move does.
        for (node, bytes) in held_back {
            h.nodes[node].inbox.push(bytes);
        }
        h.deliver_all();
        if c_advice == RejoinAdvice::Rejoin {
            let (_, info) = ask(&mut h, 2, 0);
            h.run(2, move |c| c.join_by_external_commit(&info));
            h.deliver_all();
        } else {
            h.run(1, move |c| c.join_by_external_commit(&b_info));
            h.deliver_all();
            let (advice, info) = ask(&mut h, 0, 1);
            assert_eq!(advice, RejoinAdvice::Rejoin, "seed {seed}");
            h.run(0, move |c| c.join_by_external_commit(&info));
            h.deliver_all();
        }
        h.assert_converged(&group, &[0, 1, 2]);
        assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
    }
    // Both outcomes occur in the range, so the agreement above is not one side always winning.
    assert!(
        cut_off_won > 0 && cut_off_lost > 0,
        "{cut_off_won} / {cut_off_lost}"
    );
}

/// Alice (0) self-updates while bob (1) adds carol (2), in the same epoch. Carol takes bob's
/// Welcome, loses her store, and rejoins with bob's GroupInfo before bob has judged the race.
/// Returns the group and what is still undelivered of the race (per node).
fn carol_rejoins_on_bobs_add_before_the_race_is_judged(
    h: &mut Harness,
) -> (core_mls::GroupId, Vec<Vec<Vec<u8>>>) {
    let group = h.group_with(0, &[1]);
    let carol_package = h.key_package(2);
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(1, move |c| c.add_members(&g, &[carol_package]));
    let mut held = h.take_inboxes();
    for bytes in std::mem::take(&mut held[2]) {
        h.handle(2, &bytes).unwrap();
    }
    assert_eq!(h.nodes[2].client().groups(), vec![group.clone()]);
    h.lose_store(2);
    let info = group_info_for(h, &group, 2, 1);
    h.run(2, move |c| c.join_by_external_commit(&info));
    (group, held)
}

/// Carol, told, asks bob: he says to rejoin, and she ends on the winning branch with one leaf
/// (the one bob's re-issued add gave her old key package goes with the rejoin).
fn carol_follows_bobs_advice_back(h: &mut Harness, group: &core_mls::GroupId) {
    let info = group_info_for(h, group, 2, 1);
    assert_eq!(
        h.nodes[2].client().rejoin_advice(&info).unwrap(),
        RejoinAdvice::Rejoin
    );
    h.run(2, move |c| c.join_by_external_commit(&info));
    h.deliver_all();
    h.assert_converged(group, &[0, 1, 2]);
    assert_eq!(h.nodes[0].client().members(group).unwrap().len(), 3);
    h.assert_group_works(group, 2, &[0, 1]);
}

#[test]
fn a_device_that_rejoined_a_branch_that_lost_is_told_and_moves() {
    // Alice self-updates while bob adds carol, in the same epoch, and alice's commit wins.
    // Carol takes bob's Welcome, loses her store, and rejoins with bob's GroupInfo before bob
    // has judged the race: she is on the losing branch, added in the very commit that lost, so
    // no commit of the winning branch is ever addressed to her; only its later messages are.
    let (mut h, group) = engine_harness::exactly(80, false, &["alice", "bob", "carol"], |h| {
        let (group, held) = carol_rejoins_on_bobs_add_before_the_race_is_judged(h);
        for (node, inbox) in held.into_iter().enumerate() {
            h.nodes[node].inbox.extend(inbox);
        }
        h.deliver_all();
        group
    });
    // Carol's external commit, made on the branch that lost, names the epoch state it was
    // made in: alice and bob, who hold another state of that epoch, keep it as another
    // branch's instead of failing to verify it against theirs.
    let mut errors = h.errors();
    assert!(
        errors.remove("alice").is_none() && errors.remove("bob").is_none(),
        "{errors:?}"
    );
    // Bob re-issued his add with carol's old key package, which went with her store.
    let carol_errors = errors.remove("carol").unwrap_or_default();
    assert!(
        carol_errors
            .iter()
            .all(|e| e.contains("no usable key package")),
        "{carol_errors:?}"
    );
    assert_eq!(
        contested(&h, 2),
        0,
        "nothing has reached her from the winning branch yet"
    );
    // A message of the winning branch: carol cannot judge it, and is told to ask.
    let g = group.clone();
    h.run(0, move |c| c.send(&g, b"on the branch that won"));
    h.deliver_all();
    assert!(contested(&h, 2) >= 1);
    assert!(
        h.errors().remove("carol").unwrap_or_default().len() == carol_errors.len(),
        "the message waits, it is not refused: {:?}",
        h.errors()
    );
    carol_follows_bobs_advice_back(&mut h, &group);
    h.assert_group_works(&group, 0, &[1, 2]);
}

#[test]
fn a_device_that_rejoined_on_a_commit_that_then_lost_is_told_by_that_commits_maker() {
    // As above, but bob merges carol's external commit before alice's winning commit reaches
    // him: rolling back, he is the one device that knows carol joined the branch his own
    // commit started, and he sends her alice's commit. She is told without waiting for a
    // message of the winning branch (in a quiet group, none may ever come).
    let (mut h, group) = engine_harness::exactly(80, false, &["alice", "bob", "carol"], |h| {
        let (group, held) = carol_rejoins_on_bobs_add_before_the_race_is_judged(h);
        let mut external = h.take_inboxes();
        for bytes in std::mem::take(&mut external[1]) {
            assert_eq!(h.handle(1, &bytes), Ok(Disposition::Processed));
        }
        for inboxes in [held, external] {
            for (node, inbox) in inboxes.into_iter().enumerate() {
                h.nodes[node].inbox.extend(inbox);
            }
        }
        h.deliver_all();
        group
    });
    assert!(
        contested(&h, 2) >= 1,
        "carol was not told: {:?}",
        h.errors()
    );
    carol_follows_bobs_advice_back(&mut h, &group);
}

/// Carol (2) lost her store and rejoins from bob's GroupInfo while alice's self-update races
/// her external commit (a member's commit wins). Bob merges carol's commit first and removes
/// her on that branch; she takes the removal. Then alice's commit reaches bob, who rolls back
/// and makes the removal again on the winning branch (of carol's old leaf). Returns the group.
fn carol_removed_on_the_branch_her_rejoin_started(h: &mut Harness) -> core_mls::GroupId {
    carol_goes_on_the_branch_her_rejoin_started(h, false)
}

/// As [`carol_removed_on_the_branch_her_rejoin_started`]; with `carol_leaves`, carol asks to
/// leave on that branch instead, and bob's self-update commits it.
fn carol_goes_on_the_branch_her_rejoin_started(
    h: &mut Harness,
    carol_leaves: bool,
) -> core_mls::GroupId {
    let group = h.group_with(0, &[1, 2]);
    h.lose_store(2);
    let info = group_info_for(h, &group, 2, 1);
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    h.run(2, move |c| c.join_by_external_commit(&info));
    let mut raced = h.take_inboxes();
    // Alice's commit came first, carol's external commit last.
    let external = raced[1].pop().unwrap();
    assert_eq!(h.handle(1, &external), Ok(Disposition::Processed));
    let (carol_user, carol_device) = (
        h.nodes[2].identity.user_id(),
        h.nodes[2].identity.device_id(),
    );
    let g = group.clone();
    if carol_leaves {
        h.run(2, move |c| c.leave_group(&g));
        let proposal = h.take_inboxes();
        assert_eq!(h.handle(1, &proposal[1][0]), Ok(Disposition::Processed));
        let g = group.clone();
        h.run(1, move |c| c.self_update(&g));
    } else {
        h.run(1, move |c| c.remove_device(&g, &carol_user, &carol_device));
    }
    let removal = h.take_inboxes();
    for bytes in &removal[2] {
        assert_eq!(h.handle(2, bytes), Ok(Disposition::Processed));
    }
    assert!(h.nodes[2].client().groups().is_empty(), "carol was removed");
    for (node, inbox) in raced.into_iter().enumerate() {
        h.nodes[node].inbox.extend(inbox);
    }
    h.nodes[0]
        .inbox
        .extend(removal.into_iter().next().unwrap_or_default());
    h.deliver_all();
    group
}

#[test]
fn a_device_removed_on_the_branch_its_rejoin_started_takes_a_re_add_of_the_winning_branch() {
    // Carol's own history begins at her external commit. Judged by the epochs after it alone,
    // the branch she was removed on and the winning branch differ first at the removal, which
    // bob made on both, and which of his two removals wins there is a matter of the branches'
    // hashes: the old rule dropped alice's re-add as "another branch" in about half the runs
    // (the seeds below). Where they really part is her external commit, which lost.
    for seed in 0..8 {
        let mut h = Harness::memory(&["alice", "bob", "carol"], 300 + seed);
        let group = carol_removed_on_the_branch_her_rejoin_started(&mut h);
        assert!(h.errors().remove("alice").is_none(), "{:?}", h.errors());
        let members = h.nodes[0].client().members(&group).unwrap().len();
        assert_eq!(members, 2, "seed {seed}: carol's old leaf is gone");
        let package = h.key_package(2);
        let g = group.clone();
        h.run(0, move |c| c.add_members(&g, &[package]));
        h.deliver_all();
        assert_eq!(
            h.nodes[2].client().groups(),
            vec![group.clone()],
            "seed {}: carol did not take the re-add: {:?}",
            300 + seed,
            h.errors().remove("carol")
        );
        h.assert_converged(&group, &[0, 1, 2]);
        h.assert_group_works(&group, 2, &[0, 1]);
    }
}

#[test]
fn a_leave_committed_on_a_branch_that_loses_is_made_again_by_its_committer() {
    // Carol rejoins on bob's state and asks to leave there; bob's self-update commits it and
    // she forgets the group. Then carol's join loses to alice's commit: bob rolls back below
    // the epoch her proposal was made in, so neither the proposal nor her leaf of that branch
    // exists on the winning one, and carol, out of the group, cannot ask again. Her old leaf
    // stays a member there unless bob, who committed her leave, removes it.
    let mut h = Harness::memory(&["alice", "bob", "carol"], 21);
    let group = carol_goes_on_the_branch_her_rejoin_started(&mut h, true);
    assert!(h.superseded(1) > 0, "bob rolled back");
    assert!(h.nodes[2].client().groups().is_empty(), "carol left");
    h.assert_converged(&group, &[0, 1]);
    h.assert_members_without(&group, &[0, 1], 2, 2);
    h.assert_group_works(&group, 0, &[1]);
}

/// How often `node` was told to ask whether its external join stands.
fn contested(h: &Harness, node: usize) -> usize {
    h.count_events(node, |e| matches!(e, Event::RejoinContested { .. }))
}

#[test]
fn a_device_that_rejoined_a_branch_that_lost_in_a_quiet_group_asks_again_and_moves() {
    // As above, with bob judging the race before carol's external commit reaches him: he can
    // no longer process it, nobody tells carol, and no message comes. `rejoin_confirm_after`
    // later, her `tick` sends her to ask the member she joined from again.
    let (mut h, group) = engine_harness::exactly(80, false, &["alice", "bob", "carol"], |h| {
        let (group, held) = carol_rejoins_on_bobs_add_before_the_race_is_judged(h);
        let external = h.take_inboxes();
        for (node, inbox) in held.into_iter().enumerate() {
            h.nodes[node].inbox.extend(inbox);
        }
        h.deliver_all();
        for (node, inbox) in external.into_iter().enumerate() {
            h.nodes[node].inbox.extend(inbox);
        }
        h.deliver_all();
        group
    });
    assert_eq!(contested(&h, 2), 0, "nothing has told carol yet");
    let config = core_mls::MlsConfig::default();
    let now = h.clock.now();
    let deadline = h.nodes[2].client().next_deadline().unwrap().unwrap();
    assert!(deadline <= now.saturating_add(config.rejoin_confirm_after));
    h.clock.advance(config.rejoin_confirm_after);
    let now = h.clock.now();
    h.run(2, move |c| c.tick(now));
    assert_eq!(contested(&h, 2), 1);
    carol_follows_bobs_advice_back(&mut h, &group);
}

#[test]
fn a_rejoin_that_stands_is_asked_about_once_and_stays() {
    // Carol lost her store and rejoins from bob's GroupInfo; nothing races it.
    let mut h = Harness::memory(&["alice", "bob", "carol"], 3);
    let group = h.group_with(0, &[1, 2]);
    h.lose_store(2);
    rejoin_with_group_info_of(&mut h, &group, 2, 1);
    let config = core_mls::MlsConfig::default();
    for _ in 0..3 {
        h.clock.advance(config.rejoin_confirm_after);
        let now = h.clock.now();
        h.run(2, move |c| c.tick(now));
    }
    assert_eq!(contested(&h, 2), 1, "asked once, not at every tick");
    let info = group_info_for(&mut h, &group, 2, 1);
    assert_eq!(
        h.nodes[2].client().rejoin_advice(&info).unwrap(),
        RejoinAdvice::Stay
    );
    h.assert_group_works(&group, 2, &[0, 1]);
}

#[test]
fn a_welcome_that_replaces_a_rejoined_branch_replaces_its_history_too() {
    // Alice and bob self-update in the same epoch, and alice's commit wins. Carol loses her
    // store and rejoins with bob's GroupInfo before he judged the race: she is on the branch
    // that lost, and what she knows of it came with her external join.
    let (mut h, group) = engine_harness::exactly(120, false, &["alice", "bob", "carol"], |h| {
        let group = h.group_with(0, &[1, 2]);
        for node in [0, 1] {
            let g = group.clone();
            h.run(node, move |c| c.self_update(&g));
        }
        let held = h.take_inboxes();
        h.lose_store(2);
        let info = group_info_for(h, &group, 2, 1);
        h.run(2, move |c| c.join_by_external_commit(&info));
        for (node, inbox) in held.into_iter().enumerate().take(2) {
            h.nodes[node].inbox.extend(inbox);
        }
        h.deliver_all();
        group
    });
    // The winning branch removes carol's old leaf and adds her back, twice at once: alice and
    // bob each with a key package of hers. She takes the winning Welcome first.
    let carol_user = h.nodes[2].identity.user_id();
    let carol_device = h.nodes[2].identity.device_id();
    let g = group.clone();
    h.run(0, move |c| c.remove_device(&g, &carol_user, &carol_device));
    h.deliver_all();
    let packages = [h.key_package(2), h.key_package(2)];
    h.close(2);
    let alice_superseded = h.superseded(0);
    for (node, package) in [0, 1].into_iter().zip(packages) {
        let g = group.clone();
        h.run(node, move |c| c.add_members(&g, &[package]));
    }
    let welcomes = std::mem::take(&mut h.nodes[2].inbox);
    assert_eq!(welcomes.len(), 2, "one Welcome from each adder");
    h.deliver_all();
    let alice_won = h.superseded(0) == alice_superseded;
    let (winning, losing) = if alice_won {
        (&welcomes[0], &welcomes[1])
    } else {
        (&welcomes[1], &welcomes[0])
    };
    h.reopen(2);
    assert_eq!(h.handle(2, winning), Ok(Disposition::Processed));
    // The losing Welcome parts from the winning one where the two adds raced, and loses
    // there; judged with the history of the branch her external join was on, it would part
    // from it at the first race instead, and win.
    let refused = h.handle(2, losing).unwrap_err();
    assert!(refused.contains("already"), "{refused}");
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, 2]);
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
    h.assert_group_works(&group, 2, &[0, 1]);
}

#[test]
fn an_external_commit_whose_tag_a_relay_altered_waits_and_changes_nothing() {
    let (mut h, group, info) = alice_and_bob_with_a_group_info_for_alice(9);
    let phone = h.add_node("alice-phone", Some(0));
    h.run(phone, |c| c.join_by_external_commit(&info));
    let genuine = std::mem::take(&mut h.nodes[1].inbox);
    assert_eq!(genuine.len(), 1, "the external commit, for bob");
    // A relay flips a byte of the tag that names the epoch state the commit was made in.
    let mut altered = genuine[0].clone();
    let at = altered
        .windows(4)
        .position(|w| w == b"SPbx")
        .expect("the commit carries its epoch state's tag");
    altered[at + 5] ^= 0x01;
    let before = h.states(&group, &[1]);
    // Bob cannot tell it from a commit of another branch: it waits (and would expire),
    // nothing changes, nothing fails.
    assert_eq!(h.handle(1, &altered), Ok(Disposition::Buffered));
    assert_eq!(h.states(&group, &[1]), before);
    // The genuine copy is still taken.
    h.nodes[1].inbox.extend(genuine);
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    h.assert_converged(&group, &[0, 1, phone]);
}

/// A group of a, b and c (fork window 2) in which c is cut off while a and c each commit
/// `rounds` times; returns what crossed between the halves, held back.
fn a_b_and_c_cut_off(
    seed: u64,
    rounds: usize,
) -> (Harness, core_mls::GroupId, Vec<(usize, Vec<u8>)>) {
    let config = core_mls::MlsConfig {
        fork_window_epochs: 2,
        ..core_mls::MlsConfig::default()
    };
    let mut h = Harness::seeded(&["a", "b", "c"], seed, config);
    let group = h.group_with(0, &[1, 2]);
    let mut held_back: Vec<(usize, Vec<u8>)> = Vec::new();
    for _ in 0..rounds {
        for committer in [0usize, 2] {
            let g = group.clone();
            h.run(committer, move |c| c.self_update(&g));
            for node in [0usize, 1, 2] {
                if (node == 2) != (committer == 2) {
                    held_back.extend(h.nodes[node].inbox.drain(..).map(|b| (node, b)));
                }
            }
            h.deliver_all();
        }
    }
    (h, group, held_back)
}
