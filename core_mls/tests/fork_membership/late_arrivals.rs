//! Welcomes and proposals that arrive out of the order of the branches: a double removal then a
//! re-add, a Welcome that moves a device back an epoch, a proposal of the other branch, a late
//! proposal that completes the winning commit.

use super::*;

/// Alice removes dave while bob removes him too; before hearing of bob's removal alice adds dave
/// back. If bob's removal wins, alice's add is re-issued on bob's branch: dave gets two
/// Welcomes for the same epoch number, from different branches, in either order.
fn double_remove_then_re_add(h: &mut Harness, welcomes_in_order: bool) -> GroupId {
    let group = h.group_with(0, &[1, 3]);
    let dave = h.nodes[3].address();
    let alice_remove = h.nodes[0]
        .client()
        .remove_device(&group, &dave.user_id, &dave.device_id)
        .unwrap();
    let bob_remove = h.nodes[1]
        .client()
        .remove_device(&group, &dave.user_id, &dave.device_id)
        .unwrap();
    let package = h.key_package(3);
    let alice_add = h.nodes[0].client().add_members(&group, &[package]).unwrap();
    // Alice hears of bob's removal: if it wins she re-issues her add.
    let bob_commit = bob_remove.outbound[0].envelope.to_bytes();
    let alice_rollback = h.nodes[0].client().handle_envelope(&bob_commit).unwrap();
    let mut outputs = vec![(1, bob_remove), (0, alice_remove)];
    let (first, second) = if welcomes_in_order {
        (alice_add, alice_rollback)
    } else {
        (alice_rollback, alice_add)
    };
    outputs.push((0, first));
    outputs.push((0, second));
    for (node, output) in outputs {
        h.absorb(node, output);
    }
    h.deliver_all();
    group
}

#[test]
fn a_device_re_added_after_a_double_removal_ends_on_the_winning_branch() {
    for in_order in [true, false] {
        let names = ["alice", "bob", "carol", "dave"];
        let (mut h, group) = exactly(103, true, &names, |h| {
            double_remove_then_re_add(h, in_order)
        });
        assert!(
            h.nodes[3].client().groups().contains(&group),
            "in order {in_order}: dave {:#?} errors {:?}",
            h.nodes[3]
                .events
                .iter()
                .map(|e| format!("{e:?}").chars().take(60).collect::<String>())
                .collect::<Vec<_>>(),
            h.errors()
        );
        h.assert_converged(&group, &[0, 1, 3]);
        assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
        h.assert_group_works(&group, 3, &[0, 1]);
    }
}

/// Alice self-updates and then adds dave; concurrently bob adds dave (another package) and then
/// self-updates. Dave hears alice's Welcome first (he joins one epoch later than bob's Welcome
/// would put him), then bob's self-update commit (an epoch before that join), then bob's
/// Welcome: a Welcome that moves him back an epoch, onto bob's branch if bob's add won.
fn dave_joins_the_longer_branch_first(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2]);
    let packages = h.nodes[3].client().publishable_key_packages().unwrap();
    let (first, second) = (
        packages[0].key_package.clone(),
        packages[1].key_package.clone(),
    );
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[first]));
    let g = group.clone();
    h.run(1, move |c| c.add_members(&g, &[second]));
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    // Alice's Welcome, bob's Welcome, bob's commit.
    let inbox = std::mem::take(&mut h.nodes[3].inbox);
    assert_eq!(inbox.len(), 3);
    for index in [0, 2, 1] {
        let _ = h.handle(3, &inbox[index]);
    }
    // Alice and carol hear bob's commits newest first, so that bob's self-update wins its
    // epoch whatever they re-issue (it waits in their buffers for bob's add to arrive).
    for node in [0, 2] {
        let inbox = std::mem::take(&mut h.nodes[node].inbox);
        for bytes in inbox.iter().rev() {
            let _ = h.handle(node, bytes);
        }
    }
    h.deliver_all();
    group
}

#[test]
fn a_welcome_that_moves_a_device_back_an_epoch_finds_what_arrived_before_it() {
    let names = ["alice", "bob", "carol", "dave"];
    for (alice_lost, seed) in [(true, 101), (false, 110)] {
        // When bob's add wins, dave goes back from alice's branch to bob's, one epoch lower:
        // bob's commit of that epoch, which came before the Welcome, must not have been dropped.
        let (mut h, group) = exactly(seed, alice_lost, &names, dave_joins_the_longer_branch_first);
        h.assert_converged(&group, &[0, 1, 2, 3]);
        assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 4);
        h.assert_group_works(&group, 3, &[0, 1, 2]);
        h.assert_group_works(&group, 1, &[0, 2, 3]);
    }
}

/// Alice and bob self-update in the same epoch; carol follows alice, dave follows bob. On bob's
/// branch dave asks to leave and bob commits the proposal by reference; on alice's branch alice
/// commits again. Alice and carol then hear dave's proposal and bob's second commit while a
/// newer epoch of their own branch is current, and bob's first commit last.
fn dave_leaves_on_bobs_branch(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2, 3]);
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    let held = h.take_inboxes();
    // Carol takes alice's commit, dave bob's: two branches of the next epoch.
    assert_eq!((held[2].len(), held[3].len()), (2, 2));
    h.handle(2, &held[2][0]).unwrap();
    h.handle(3, &held[3][1]).unwrap();
    let g = group.clone();
    h.run(3, move |c| c.leave_group(&g));
    let dave_proposal = std::mem::take(&mut h.nodes[1].inbox);
    for bytes in &dave_proposal {
        h.handle(1, bytes).unwrap();
    }
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    // Carol: alice's second commit, then dave's proposal and bob's second commit (both of bob's
    // branch, one epoch back), then bob's first commit.
    let carol = std::mem::take(&mut h.nodes[2].inbox);
    assert_eq!(carol.len(), 3, "dave's proposal, bob's and alice's commits");
    for index in [2, 0, 1] {
        let _ = h.handle(2, &carol[index]);
    }
    let _ = h.handle(2, &held[2][1]);
    let alice = std::mem::take(&mut h.nodes[0].inbox);
    for bytes in alice.iter().chain(&held[0]) {
        let _ = h.handle(0, bytes);
    }
    h.nodes[1].inbox.extend(held[1].iter().cloned());
    h.nodes[3].inbox.push(held[3][0].clone());
    h.deliver_all();
    // If alice's branch won instead, dave's leave is proposed again; a tick commits it.
    h.clock.advance(std::time::Duration::from_secs(1));
    let now = h.clock.now();
    for node in 0..3 {
        h.run(node, move |c| c.tick(now));
    }
    h.deliver_all();
    group
}

#[test]
fn a_proposal_of_the_other_branch_waits_for_the_rollback_that_needs_it() {
    let names = ["alice", "bob", "carol", "dave"];
    // When bob's branch wins, alice and carol roll back to it, and bob's second commit there
    // references dave's proposal, which reached them while their own branch was ahead.
    for (alice_lost, seed) in [(true, 100), (false, 104)] {
        let (mut h, group) = exactly(seed, alice_lost, &names, dave_leaves_on_bobs_branch);
        h.assert_converged(&group, &[0, 1, 2]);
        assert!(h.nodes[3].removed_from(&group), "dave left");
        assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 3);
        h.assert_group_works(&group, 2, &[0, 1]);
    }
}

/// Carol and dave ask to leave in the same epoch; bob hears only carol's proposal and commits
/// it, alice hears only dave's and commits that. Carol processes bob's commit first (it removes
/// her), then alice's, then dave's proposal, which alice's commit references.
fn carol_removed_first_by_the_commit_that_may_lose(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2, 3]);
    let g = group.clone();
    h.run(2, move |c| c.leave_group(&g));
    let carol_leave = h.take_inboxes();
    h.handle(1, &carol_leave[1][0]).unwrap();
    let g = group.clone();
    h.run(3, move |c| c.leave_group(&g));
    let dave_leave = h.take_inboxes();
    h.handle(0, &dave_leave[0][0]).unwrap();
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    // Carol: bob's commit, alice's commit, dave's proposal.
    let carol = std::mem::take(&mut h.nodes[2].inbox);
    assert_eq!(carol.len(), 2, "bob's and alice's commits");
    let _ = h.handle(2, &carol[0]);
    assert!(
        h.nodes[2].removed_from(&group),
        "bob's commit removed carol"
    );
    let _ = h.handle(2, &carol[1]);
    let _ = h.handle(2, &dave_leave[2][0]);
    for node in [0, 1, 3] {
        h.nodes[node]
            .inbox
            .extend(carol_leave[node].iter().cloned());
    }
    h.nodes[1].inbox.extend(dave_leave[1].iter().cloned());
    h.deliver_all();
    // Whoever's commit lost, the other leave is proposed again; a tick commits it.
    h.tick_members(&group, 2);
    group
}

#[test]
fn a_member_removed_by_the_losing_commit_gets_back_when_a_late_proposal_completes_the_winner() {
    let names = ["alice", "bob", "carol", "dave"];
    // When alice's commit wins, carol must roll back from her removal on bob's branch even
    // though alice's commit could only be processed once dave's proposal came; she then asks
    // to leave again on alice's branch.
    for (alice_lost, seed) in [(false, 104), (true, 102)] {
        let (mut h, group) = exactly(
            seed,
            alice_lost,
            &names,
            carol_removed_first_by_the_commit_that_may_lose,
        );
        assert!(
            h.nodes[2].removed_from(&group) && h.nodes[3].removed_from(&group),
            "carol and dave left"
        );
        h.assert_converged(&group, &[0, 1]);
        assert_eq!(
            h.nodes[0].client().members(&group).unwrap().len(),
            2,
            "alice lost: {alice_lost}; errors {:?}",
            h.errors()
        );
        h.assert_group_works(&group, 1, &[0]);
    }
}
