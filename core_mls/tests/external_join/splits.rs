//! Groups split past the fork window: which half moves, and what it did on its half (removals,
//! leaves) made again where it rejoined.

use super::*;

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
