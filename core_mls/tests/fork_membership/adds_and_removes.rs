//! Adds and removes racing another commit: the losing side's add or removal made again on the
//! winning branch, a removed member restored, a leave that was left out proposed again.

use super::*;

fn add_dave_against_bobs_update(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2]);
    let dave_package = h.key_package(3);
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[dave_package]));
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    h.deliver_all();
    group
}

#[test]
fn a_device_added_by_the_losing_commit_is_re_added_on_the_winning_branch() {
    let names = ["alice", "bob", "carol", "dave"];
    let (mut h, group) = exactly(104, true, &names, add_dave_against_bobs_update);
    // Dave first joined on alice's branch, then was re-added on bob's with the same package.
    let joins = h.nodes[3]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Joined { .. }))
        .count();
    assert_eq!(
        joins,
        2,
        "{:?}\nerrors {:?}\nalice {:?}",
        h.nodes[3].events,
        h.errors(),
        h.nodes[0].events
    );
    h.assert_converged(&group, &[0, 1, 2, 3]);
    assert_eq!(h.nodes[3].client().members(&group).unwrap().len(), 4);
    h.assert_group_works(&group, 3, &[0, 1, 2]);
    h.assert_group_works(&group, 1, &[0, 2, 3]);
    assert!(h.errors().is_empty(), "{:?}", h.errors());

    // And when alice's add won, dave joined once and bob's update was re-issued on top.
    let (mut h, group) = exactly(103, false, &names, add_dave_against_bobs_update);
    h.assert_converged(&group, &[0, 1, 2, 3]);
    assert_eq!(h.superseded(1), 1);
    h.assert_group_works(&group, 3, &[0, 1, 2]);
}

#[test]
fn a_device_added_by_two_concurrent_commits_joins_the_winning_one() {
    for seed in 0..6 {
        let mut h = Harness::memory(&["alice", "bob", "carol", "dave"], 200 + seed);
        let group = h.group_with(0, &[1, 2]);
        // Two different packages of dave's, one fetched by alice, one by bob.
        let packages = h.nodes[3].client().publishable_key_packages().unwrap();
        let (first, second) = (
            packages[0].key_package.clone(),
            packages[1].key_package.clone(),
        );
        let g = group.clone();
        h.run(0, move |c| c.add_members(&g, &[first]));
        let g = group.clone();
        h.run(1, move |c| c.add_members(&g, &[second]));
        h.deliver_all();
        h.assert_converged(&group, &[0, 1, 2, 3]);
        assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 4);
        h.assert_group_works(&group, 3, &[0, 1, 2]);
    }
}

fn remove_carol_against_bobs_update(h: &mut Harness) -> GroupId {
    let group = h.group_with(0, &[1, 2]);
    let carol = h.nodes[2].address();
    let g = group.clone();
    h.run(0, move |c| {
        c.remove_device(&g, &carol.user_id, &carol.device_id)
    });
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    h.deliver_all();
    group
}

#[test]
fn a_member_removed_by_the_losing_commit_is_removed_on_the_winning_branch_too() {
    let names = ["alice", "bob", "carol"];
    // Alice's remove lost: she re-issues it on bob's branch, so carol is removed in the end.
    let (mut h, group) = exactly(104, true, &names, remove_carol_against_bobs_update);
    h.assert_converged(&group, &[0, 1]);
    assert!(!h.nodes[2].client().groups().contains(&group));
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 2);
    h.assert_group_works(&group, 1, &[0]);
    // Alice's remove won: bob's update is re-issued after carol is gone.
    let (mut h, group) = exactly(101, false, &names, remove_carol_against_bobs_update);
    h.assert_converged(&group, &[0, 1]);
    assert!(
        !h.nodes[2].client().groups().contains(&group),
        "carol {:#?}\nerrors {:?}",
        h.nodes[2]
            .events
            .iter()
            .map(|e| format!("{e:?}").chars().take(90).collect::<String>())
            .collect::<Vec<_>>(),
        h.errors()
    );
    h.assert_group_works(&group, 0, &[1]);
}

/// Alice removes carol while bob self-updates; carol hears the removal first, then bob's
/// update. Returns the harness, the group, what bob's update did on carol, and both outputs.
fn carol_hears_the_remove_first(seed: u64) -> (Harness, GroupId, Output, Output, Output) {
    let mut h = Harness::memory(&["alice", "bob", "carol"], seed);
    let group = h.group_with(0, &[1, 2]);
    let carol = h.nodes[2].address();
    let remove = h.nodes[0]
        .client()
        .remove_device(&group, &carol.user_id, &carol.device_id)
        .unwrap();
    let update = h.nodes[1].client().self_update(&group).unwrap();
    let remove_commit = remove
        .outbound
        .iter()
        .find(|o| o.kind() == EnvelopeKind::Commit)
        .unwrap()
        .to_bytes();
    h.handle(2, &remove_commit).unwrap();
    assert!(!h.nodes[2].client().groups().contains(&group));
    let restored = h.nodes[2]
        .client()
        .handle_envelope(&update.outbound[0].to_bytes())
        .unwrap();
    (h, group, restored, remove, update)
}

#[test]
fn a_member_removed_on_the_losing_branch_is_restored_on_the_winning_one() {
    // Carol hears alice's remove first, forgets the group, then bob's winning update arrives:
    // she is put back (her snapshot outlives the removal) until alice's re-issued remove.
    let seed = seed_where(310, |seed| {
        let (_, _, restored, _, _) = carol_hears_the_remove_first(seed);
        // Bob's update wins.
        restored.disposition != Disposition::Superseded
    });
    {
        let (mut h, group, restored, remove, update) = carol_hears_the_remove_first(seed);
        assert!(
            restored
                .events
                .iter()
                .any(|e| matches!(e, Event::CommitSuperseded { .. })),
            "{restored:?}"
        );
        assert!(h.nodes[2].client().groups().contains(&group));
        let bob_epoch = {
            let client = h.nodes[1].client();
            (
                client.epoch(&group).unwrap(),
                client.epoch_authenticator(&group).unwrap(),
            )
        };
        let carol_epoch = {
            let client = h.nodes[2].client();
            (
                client.epoch(&group).unwrap(),
                client.epoch_authenticator(&group).unwrap(),
            )
        };
        assert_eq!(bob_epoch, carol_epoch, "carol is on bob's branch");
        h.absorb(2, restored);
        h.absorb(0, remove);
        h.absorb(1, update);
        h.deliver_all();
        h.assert_converged(&group, &[0, 1]);
    }
}

#[test]
fn a_leave_that_a_concurrent_commit_left_out_is_proposed_again() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 11);
    let group = h.group_with(0, &[1, 2]);
    // Carol asks to leave; bob commits in the same epoch without her proposal.
    let g = group.clone();
    h.run(2, move |c| c.leave_group(&g));
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    h.deliver_all();
    assert!(
        h.nodes[2].client().groups().contains(&group),
        "bob's commit did not remove her"
    );
    // Alice, the designated committer, commits carol's renewed proposal at her next tick.
    h.clock.advance(std::time::Duration::from_secs(1));
    let now = h.clock.now();
    h.run(0, move |c| c.tick(now));
    h.deliver_all();
    assert!(!h.nodes[2].client().groups().contains(&group), "carol left");
    assert!(h.nodes[2].removed_from(&group));
    h.assert_converged(&group, &[0, 1]);
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 2);
    h.assert_group_works(&group, 1, &[0]);
}
