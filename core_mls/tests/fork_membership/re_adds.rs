//! A device re-added on a branch that may lose: back to where it was a member, back to the epoch
//! it held, a second Welcome, a Welcome of a branch that lost to a removal, a removal made again
//! after the join.

use super::*;

/// Dave asks to leave; alice commits his proposal while carol self-updates in the same epoch.
/// Bob follows alice's branch and adds dave back, and dave joins from bob's Welcome before
/// anyone hears of carol's commit.
fn dave_re_added_on_the_branch_that_removed_him(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2, 3]);
    let g = group.clone();
    h.run(3, move |c| c.leave_group(&g));
    let proposal = h.take_inboxes();
    h.handle(0, &proposal[0][0]).unwrap();
    let g = group.clone();
    h.run(2, move |c| c.self_update(&g));
    let carol_commit = h.take_inboxes();
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let alice = std::mem::take(&mut h.nodes[3].inbox);
    assert_eq!(alice.len(), 1, "alice's commit");
    h.handle(3, &alice[0]).unwrap();
    assert!(
        h.nodes[3].removed_from(&group),
        "alice's commit removed dave"
    );
    for bytes in proposal[1]
        .iter()
        .chain(&std::mem::take(&mut h.nodes[1].inbox))
    {
        h.handle(1, bytes).unwrap();
    }
    let dave_package = h.key_package(3);
    let g = group.clone();
    h.run(1, move |c| c.add_members(&g, &[dave_package]));
    let welcome = std::mem::take(&mut h.nodes[3].inbox);
    assert_eq!(welcome.len(), 1, "bob's Welcome");
    h.handle(3, &welcome[0]).unwrap();
    assert!(
        h.nodes[3].client().groups().contains(&group),
        "dave re-added"
    );
    for node in 0..4 {
        h.nodes[node].inbox.extend(proposal[node].iter().cloned());
        h.nodes[node]
            .inbox
            .extend(carol_commit[node].iter().cloned());
    }
    h.deliver_all();
    h.tick_members(&group, 2);
    group
}

#[test]
fn a_device_re_added_on_a_losing_branch_goes_back_to_where_it_was_a_member() {
    let names = ["alice", "bob", "carol", "dave"];
    // Carol's commit wins: alice's removal of dave and bob's re-add are both undone. Dave, who
    // joined from bob's Welcome, must go back to the epoch before his removal (he is a member
    // there), and since he had asked to leave, ask again.
    let (mut h, group) = exactly(
        100,
        true,
        &names,
        dave_re_added_on_the_branch_that_removed_him,
    );
    h.assert_converged(&group, &[0, 1, 2]);
    assert!(
        !h.nodes[3].client().groups().contains(&group),
        "dave left on the winning branch; errors {:?}",
        h.errors()
    );
    assert_eq!(
        h.nodes[0].client().members(&group).unwrap().len(),
        3,
        "errors {:?}",
        h.errors()
    );
    h.assert_group_works(&group, 2, &[0, 1]);
    // Alice's commit wins: dave was removed, then re-added by bob; he stays.
    let (mut h, group) = exactly(
        103,
        false,
        &names,
        dave_re_added_on_the_branch_that_removed_him,
    );
    h.assert_converged(&group, &[0, 1, 2, 3]);
    h.assert_group_works(&group, 3, &[0, 1, 2]);
}

/// Dave asks to leave; bob commits his proposal while alice self-updates in the same epoch,
/// then bob adds dave back. Dave hears of neither commit: bob's Welcome moves him two epochs
/// on (the group went on without him) — onto a branch that loses if alice's commit is smaller.
fn dave_jumped_ahead_by_a_welcome_of_the_branch_that_may_lose(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2, 3]);
    let g = group.clone();
    h.run(3, move |c| c.leave_group(&g));
    let proposal = h.take_inboxes();
    h.handle(1, &proposal[1][0]).unwrap();
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let alice_commit = h.take_inboxes();
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    let bob_commit = h.take_inboxes();
    let dave_package = h.key_package(3);
    let g = group.clone();
    h.run(1, move |c| c.add_members(&g, &[dave_package]));
    let bob_add = h.take_inboxes();
    assert_eq!(bob_add[3].len(), 1, "bob's Welcome");
    h.handle(3, &bob_add[3][0]).unwrap();
    assert_eq!(
        h.nodes[3].client().epoch(&group).unwrap(),
        3,
        "dave jumped ahead"
    );
    for node in 0..4 {
        for held in [&proposal, &alice_commit, &bob_commit, &bob_add] {
            if node == 3 && std::ptr::eq(held, &bob_add) {
                continue;
            }
            h.nodes[node].inbox.extend(held[node].iter().cloned());
        }
    }
    h.deliver_all();
    h.tick_members(&group, 2);
    group
}

#[test]
fn a_device_a_welcome_moved_onto_a_losing_branch_goes_back_to_the_epoch_it_held() {
    let names = ["alice", "bob", "carol", "dave"];
    // Bob's commits lose: dave must go back from the Welcome's branch to the epoch he held,
    // which nobody removed him from, and ask to leave again there.
    let (mut h, group) = exactly(
        104,
        false,
        &names,
        dave_jumped_ahead_by_a_welcome_of_the_branch_that_may_lose,
    );
    assert_eq!(h.superseded(1), 1, "bob's commit lost");
    h.assert_converged(&group, &[0, 1, 2]);
    assert!(
        !h.nodes[3].client().groups().contains(&group),
        "dave left on the winning branch; errors {:?}",
        h.errors()
    );
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
    h.assert_group_works(&group, 2, &[0, 1]);
    // Bob's commits win: dave was removed and re-added, and stays.
    let (mut h, group) = exactly(
        102,
        true,
        &names,
        dave_jumped_ahead_by_a_welcome_of_the_branch_that_may_lose,
    );
    h.assert_converged(&group, &[0, 1, 2, 3]);
    h.assert_group_works(&group, 3, &[0, 1, 2]);
}

/// Dave asks to leave; alice commits his proposal while carol self-updates in the same epoch.
/// On alice's branch bob and alice then both add dave back in one epoch. Dave, removed by
/// alice's commit, joins from bob's Welcome, then from alice's if hers is the smaller add.
/// Returns whether alice's Welcome replaced bob's on dave's device.
fn dave_re_added_twice_on_the_branch_that_removed_him(h: &mut Harness) -> (GroupId, bool) {
    let group = h.group_with(0, &[1, 2, 3]);
    let g = group.clone();
    h.run(3, move |c| c.leave_group(&g));
    let proposal = h.take_inboxes();
    h.handle(0, &proposal[0][0]).unwrap();
    let g = group.clone();
    h.run(2, move |c| c.self_update(&g));
    let carol_commit = h.take_inboxes();
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let alice_commit = h.take_inboxes();
    h.handle(3, &alice_commit[3][0]).unwrap();
    assert!(
        h.nodes[3].removed_from(&group),
        "alice's commit removed dave"
    );
    for bytes in proposal[1].iter().chain(&alice_commit[1]) {
        h.handle(1, bytes).unwrap();
    }
    let (bob_package, alice_package) = (h.key_package(3), h.key_package(3));
    let g = group.clone();
    h.run(1, move |c| c.add_members(&g, &[bob_package]));
    let bob_add = h.take_inboxes();
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[alice_package]));
    let alice_add = h.take_inboxes();
    h.handle(3, &bob_add[3][0]).unwrap();
    let replaced = h.handle(3, &alice_add[3][0]).is_ok();
    for node in 0..4 {
        let held = [
            &proposal,
            &carol_commit,
            &alice_commit,
            &bob_add,
            &alice_add,
        ];
        for (index, envelopes) in held.iter().enumerate() {
            let handled_already = match node {
                3 => index >= 2,
                1 => index == 0 || index == 2,
                0 => index == 0,
                _ => false,
            };
            if !handled_already {
                h.nodes[node].inbox.extend(envelopes[node].iter().cloned());
            }
        }
    }
    h.deliver_all();
    h.tick_members(&group, 2);
    (group, replaced)
}

#[test]
fn a_device_whose_second_welcome_replaced_the_first_still_goes_back_before_its_removal() {
    let names = ["alice", "bob", "carol", "dave"];
    // Carol's commit wins: both re-adds are undone with alice's removal, and dave, after two
    // Welcomes of the losing branch, goes back to the epoch he was removed from.
    // Alice's second Welcome replaces bob's and carol's commit wins.
    let seed = seed_where(314, |seed| {
        let mut h = Harness::memory(&names, seed);
        let (_, replaced) = dave_re_added_twice_on_the_branch_that_removed_him(&mut h);
        replaced && h.superseded(0) > 0
    });
    {
        let mut h = Harness::memory(&names, seed);
        let (group, _) = dave_re_added_twice_on_the_branch_that_removed_him(&mut h);
        h.assert_converged(&group, &[0, 1, 2]);
        assert!(
            !h.nodes[3].client().groups().contains(&group),
            "dave left on the winning branch; errors {:?}",
            h.errors()
        );
        assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
        h.assert_group_works(&group, 2, &[0, 1]);
    }
}

/// Carol self-updates while bob removes dave, in one epoch; carol's commit wins, so bob removes
/// dave again on her branch, and dave, who followed carol's branch, is removed there. Alice,
/// who saw bob's first removal, adds dave back on its (dead) branch; her Welcome reaches dave.
/// Then alice, on carol's branch, removes bob in the epoch of bob's second removal of dave: if
/// hers wins, dave was never removed on the winning branch.
fn dave_re_added_from_a_branch_that_lost_to_the_one_that_removed_him(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2, 3]);
    let (bob, dave) = (h.nodes[1].address(), h.nodes[3].address());
    let g = group.clone();
    h.run(2, move |c| c.self_update(&g));
    let carol_update = h.take_inboxes();
    let g = group.clone();
    h.run(1, move |c| {
        c.remove_device(&g, &dave.user_id, &dave.device_id)
    });
    let bob_remove = h.take_inboxes();
    h.handle(0, &bob_remove[0][0]).unwrap();
    let dave_package = h.key_package(3);
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[dave_package]));
    let alice_add = h.take_inboxes();
    assert_eq!(alice_add[3].len(), 1, "alice's Welcome");
    // Bob moves to carol's branch (if hers is the smaller commit) and removes dave again.
    h.handle(1, &carol_update[1][0]).unwrap();
    let bob_again = h.take_inboxes();
    h.handle(3, &carol_update[3][0]).unwrap();
    for bytes in &bob_again[3] {
        let _ = h.handle(3, bytes);
    }
    // Refused by the fixed engine, joined by the old one: the assertions are at the end.
    let _ = h.handle(3, &alice_add[3][0]);
    h.handle(0, &carol_update[0][0]).unwrap();
    let g = group.clone();
    h.run(0, move |c| {
        c.remove_device(&g, &bob.user_id, &bob.device_id)
    });
    let alice_remove = h.take_inboxes();
    for node in 0..4 {
        for (index, held) in [
            &carol_update,
            &bob_remove,
            &alice_add,
            &bob_again,
            &alice_remove,
        ]
        .into_iter()
        .enumerate()
        {
            let handled_already = match node {
                0 => index <= 1,
                1 => index == 0,
                3 => index == 0 || index == 2 || index == 3,
                _ => false,
            };
            if !handled_already {
                h.nodes[node].inbox.extend(held[node].iter().cloned());
            }
        }
    }
    h.deliver_all();
    h.tick_members(&group, 2);
    group
}

#[test]
fn a_welcome_from_a_branch_that_lost_to_a_removal_keeps_the_snapshots_of_the_winner() {
    let names = ["alice", "bob", "carol", "dave"];
    // Carol's update beat bob's first removal of dave (so alice's add lost with it), and
    // alice's removal of bob beats his second: dave was never removed on the winning branch.
    // Alice's Welcome is of a branch dave already knows lost; joining it would drop the
    // snapshot he needs to get back, and leave him on the dead branch.
    let seed = seed_where(111, |seed| {
        let mut h = Harness::memory(&names, seed);
        let group = dave_re_added_from_a_branch_that_lost_to_the_one_that_removed_him(&mut h);
        h.superseded(0) == 1 && h.superseded(1) == 2 && h.nodes[3].removed_from(&group)
    });
    {
        let mut h = Harness::memory(&names, seed);
        let group = dave_re_added_from_a_branch_that_lost_to_the_one_that_removed_him(&mut h);
        h.assert_converged(&group, &[0, 2, 3]);
        assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
        h.assert_group_works(&group, 3, &[0, 2]);
    }
    // Bob's second removal can never win: alice's commit of that epoch removes bob, and a
    // commit that removes the other committer wins whatever the priorities (the fork rule). On
    // every seed bob ends outside the group.
    for seed in 105..109 {
        let mut h = Harness::memory(&names, seed);
        let group = dave_re_added_from_a_branch_that_lost_to_the_one_that_removed_him(&mut h);
        assert!(
            !h.nodes[1].client().groups().contains(&group),
            "seed {seed}: bob's removal stuck; errors {:?}",
            h.errors()
        );
        let members = h.nodes[0].client().members(&group).unwrap();
        assert!(
            members
                .iter()
                .all(|m| m.user_id() != h.nodes[1].address().user_id),
            "seed {seed}"
        );
        h.assert_converged(&group, &[0, 2]);
    }
}

/// a, b, c and d (fork window 2) split into a and b, and c and d, for longer than the window;
/// on c and d's side d removes c, on a and b's side a removes d and adds it back. Then it heals.
fn d_removes_c_while_a_re_adds_d(seed: u64) -> (Harness, GroupId) {
    let config = core_mls::MlsConfig {
        fork_window_epochs: 2,
        ..core_mls::MlsConfig::default()
    };
    let mut h = Harness::seeded(&["a", "b", "c", "d"], seed, config);
    let group = h.group_with(0, &[1, 2, 3]);
    let halves: [&[usize]; 2] = [&[0, 1], &[2, 3]];
    let mut held_back = h.split_apart(&group, &halves, 4);
    let (c, d) = (h.nodes[2].address(), h.nodes[3].address());
    let g = group.clone();
    h.run(3, move |cl| cl.remove_device(&g, &c.user_id, &c.device_id));
    h.hold_back_outside(halves[1], &mut held_back);
    h.deliver_all();
    let package = h.key_package(3);
    let g = group.clone();
    h.run(0, move |cl| cl.remove_device(&g, &d.user_id, &d.device_id));
    let g = group.clone();
    h.run(0, move |cl| cl.add_members(&g, &[package]));
    h.hold_back_outside(halves[0], &mut held_back);
    h.deliver_all();
    h.heal(held_back);
    (h, group)
}

#[test]
fn a_removal_made_on_a_branch_a_welcome_replaces_is_made_again_after_the_join() {
    let joined_twice = |h: &Harness| {
        h.nodes[3]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Joined { .. }))
            .count()
            == 2
    };
    // The case: a's side wins where the branches parted, so d takes a's Welcome in place of
    // the branch on which it removed c.
    let seed = seed_where(60, |seed| {
        joined_twice(&d_removes_c_while_a_re_adds_d(seed).0)
    });
    let (mut h, group) = d_removes_c_while_a_re_adds_d(seed);
    assert!(joined_twice(&h));
    h.assert_converged(&group, &[0, 1, 3]);
    // Without the re-issue, c is still there: d's removal vanished with its branch.
    h.assert_members_without(&group, &[0, 1, 3], 3, 2);
    h.assert_group_works(&group, 3, &[0, 1]);
}
