//! A rejoin that races a member's commit: told (`RejoinContested`), and joins again with
//! what it sent.

use super::*;

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
