//! A device removed by a commit that may still lose (docs/FORKS.md, "Removed, maybe not for
//! good") keeps what reaches it of the other branches, so that it can follow the branch that
//! puts it back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use core_mls::{EnvelopeKind, GroupId, Output};
use engine_harness::{Harness, seed_where};

/// The bytes of the first envelope of `kind` in `output`.
fn envelope_of(output: &Output, kind: EnvelopeKind) -> Option<Vec<u8>> {
    output
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == kind)
        .map(|o| o.envelope.to_bytes())
}

/// Alice and bob self-update at once. Carol merges alice's update, then alice's removal of her
/// made on top of it: carol no longer holds the group. Bob's phone joins by external commit on
/// bob's branch, and its commit reaches carol; then bob's update does. `Some` (the harness, the
/// group and the phone) only where bob's update wins, so that it puts carol back on bob's
/// branch.
fn carol_removed_on_the_branch_that_loses(seed: u64) -> Option<(Harness, GroupId, usize)> {
    let mut h = Harness::memory(&["alice", "bob", "carol"], seed);
    let group = h.group_with(0, &[1, 2]);
    let phone = h.add_node("bob-phone", Some(1));
    let g = group.clone();
    let alices = envelope_of(&h.run(0, move |c| c.self_update(&g)), EnvelopeKind::Commit)?;
    let g = group.clone();
    let bobs = envelope_of(&h.run(1, move |c| c.self_update(&g)), EnvelopeKind::Commit)?;
    // What the network carries meanwhile goes back in at the end.
    let mut held = vec![h.take_inboxes()];
    h.handle(2, &alices).ok()?;
    let carol = h.nodes[2].address();
    let g = group.clone();
    let removal = h.run(0, move |c| {
        c.remove_device(&g, &carol.user_id, &carol.device_id)
    });
    h.handle(2, &envelope_of(&removal, EnvelopeKind::Commit)?)
        .ok()?;
    if h.nodes[2].client().groups().contains(&group) {
        return None;
    }
    let bob_user = h.nodes[1].identity.user_id();
    let info = h.nodes[1]
        .client()
        .export_group_info(&group, &bob_user)
        .ok()?;
    let rejoin = h.run(phone, move |c| c.join_by_external_commit(&info));
    let external = envelope_of(&rejoin, EnvelopeKind::Commit)?;
    held.push(h.take_inboxes());
    // The phone's commit was made on bob's state of the epoch carol was removed in: of another
    // branch than the one that removed her. It waits; bob's update then puts her back there.
    let _ = h.handle(2, &external);
    h.handle(2, &bobs).ok()?;
    if !h.nodes[2].client().groups().contains(&group) {
        return None;
    }
    for inboxes in held {
        for (node, inbox) in inboxes.into_iter().enumerate() {
            h.nodes[node].inbox.extend(inbox);
        }
    }
    Some((h, group, phone))
}

/// Issue 21 (seed 6325): the external commit that reached carol while she did not hold the
/// group was taken for one of the removing branch and failed to verify against that state:
/// refused, it was gone for good, and once bob's update put her back on bob's branch she was
/// missing that epoch's commit and stayed behind. Now it waits, and is merged when she gets
/// there.
#[test]
fn an_external_commit_of_another_branch_waits_for_a_device_removed_on_this_one() {
    let seed = seed_where(0, |seed| {
        carol_removed_on_the_branch_that_loses(seed).is_some()
    });
    let (mut h, group, phone) = carol_removed_on_the_branch_that_loses(seed).unwrap();
    let states = h.states(&group, &[2, phone]);
    assert_eq!(
        states[0],
        states[1],
        "carol is not where the phone joined; errors {:?}",
        h.errors()
    );
    h.deliver_all();
    h.tick_members(&group, 2);
    h.assert_converged(&group, &[0, 1, phone]);
}
