//! The fork rule against members who play it (issue 16, items 1 and 5): a member a commit
//! removes cannot win that epoch back whatever commit she makes, a member who makes two commits
//! in one epoch is reported, and the data that decides between branches is authenticated.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use core_mls::{Disposition, Envelope, EnvelopeKind, Event, GroupId, MlsError};
use engine_harness::Harness;

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Alice removes carol; carol, still in that epoch, answers with a commit of her own (a
/// self-update, or the removal of dave), and sends it where it helps her most: bob sees alice's
/// commit first, dave sees carol's first. Under the old smallest-ref rule carol won whenever her
/// commit's ref was the smaller, about one try in two, and a removed member could simply try
/// again until it was.
fn carol_answers_her_removal(seed: u64, carol_removes_dave: bool) -> (Harness, GroupId) {
    let mut h = Harness::memory(&NAMES, seed);
    let group = h.group_with(0, &[1, 2, 3]);
    let (carol, dave) = (h.nodes[2].address(), h.nodes[3].address());
    let g = group.clone();
    h.run(0, move |c| {
        c.remove_device(&g, &carol.user_id, &carol.device_id)
    });
    let alice_removes_carol = h.take_inboxes();
    let g = group.clone();
    h.run(2, move |c| {
        if carol_removes_dave {
            c.remove_device(&g, &dave.user_id, &dave.device_id)
        } else {
            c.self_update(&g)
        }
    });
    let carols_commit = h.take_inboxes();
    let _ = h.handle(1, &alice_removes_carol[1][0]);
    let _ = h.handle(1, &carols_commit[1][0]);
    let _ = h.handle(3, &carols_commit[3][0]);
    let _ = h.handle(3, &alice_removes_carol[3][0]);
    let _ = h.handle(0, &carols_commit[0][0]);
    let _ = h.handle(2, &alice_removes_carol[2][0]);
    h.deliver_all();
    h.tick_members(&group, 2);
    (h, group)
}

#[test]
fn a_removed_member_cannot_win_back_the_epoch_of_her_removal() {
    for seed in 0..12 {
        let carol_removes_dave = seed % 2 == 1;
        let (mut h, group) = carol_answers_her_removal(seed, carol_removes_dave);
        let carol = h.nodes[2].address();
        for node in [0, 1, 3] {
            let members = h.nodes[node].client().members(&group).unwrap();
            assert_eq!(
                members.len(),
                3,
                "seed {seed}: {} holds {} members; errors {:?}",
                NAMES[node],
                members.len(),
                h.errors()
            );
            assert!(
                members.iter().all(|m| m.user_id() != carol.user_id),
                "seed {seed}: carol is still a member on {}",
                NAMES[node]
            );
        }
        h.assert_converged(&group, &[0, 1, 3]);
        assert!(
            !h.nodes[2].client().groups().contains(&group),
            "seed {seed}"
        );
        // What bob says next is not for carol: she cannot read it.
        let g = group.clone();
        let sent = h.nodes[1].client().send(&g, b"after carol left").unwrap();
        let message = sent.outbound[0].envelope.to_bytes();
        h.absorb(1, sent);
        h.deliver_all();
        let read_by_carol = h.nodes[2].client().handle_envelope(&message);
        assert!(
            !matches!(&read_by_carol, Ok(out) if out.events.iter().any(|e| matches!(e, Event::Message { .. }))),
            "seed {seed}: carol read bob's message: {read_by_carol:?}"
        );
    }
}

#[test]
fn two_commits_of_one_member_in_one_epoch_are_reported_and_every_member_keeps_the_same() {
    let mut h = Harness::redb(&NAMES[..3], 5);
    let group = h.group_with(0, &[1, 2]);
    // Carol's device state is copied, so she can commit twice from the same epoch.
    let carol_file = h.nodes[2].path.clone().unwrap();
    let copy = carol_file.with_extension("copy");
    h.stop(2);
    std::fs::copy(&carol_file, &copy).unwrap();
    h.reopen(2);
    let first = h.nodes[2].client().self_update(&group).unwrap();
    let first = first.outbound[0].envelope.to_bytes();
    h.stop(2);
    std::fs::copy(&copy, &carol_file).unwrap();
    h.reopen(2);
    let second = h.nodes[2].client().self_update(&group).unwrap();
    let second = second.outbound[0].envelope.to_bytes();
    h.take_inboxes();
    assert_ne!(first, second);

    let mut reported = Vec::new();
    for (node, order) in [(0, [&first, &second]), (1, [&second, &first])] {
        let mut events = Vec::new();
        for bytes in order {
            events.extend(
                h.nodes[node]
                    .client()
                    .handle_envelope(bytes)
                    .unwrap()
                    .events,
            );
        }
        reported.push(
            events
                .iter()
                .any(|e| matches!(e, Event::Equivocation { member, .. } if member.user_id() == h.nodes[2].address().user_id)),
        );
    }
    assert_eq!(reported, [true, true], "both members report carol");
    h.assert_converged(&group, &[0, 1]);
}

fn welcome_for_dave(h: &mut Harness, group: &GroupId) -> Envelope {
    let package = h.key_package(3);
    let added = h.nodes[0].client().add_members(group, &[package]).unwrap();
    added
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == EnvelopeKind::Welcome)
        .unwrap()
        .envelope
        .clone()
}

#[test]
fn a_welcome_whose_branch_history_was_altered_is_refused_and_the_genuine_one_still_joins() {
    let mut h = Harness::memory(&NAMES, 3);
    let group = h.group_with(0, &[1, 2]);
    let genuine = welcome_for_dave(&mut h, &group);
    assert!(
        !genuine.context().is_empty(),
        "Welcomes carry a signed history"
    );
    for position in [5, genuine.context().len() / 2, genuine.context().len() - 1] {
        let mut history = genuine.context().to_vec();
        history[position] ^= 0x10;
        let altered =
            Envelope::with_context(EnvelopeKind::Welcome, genuine.payload().to_vec(), &history);
        let refused = h.nodes[3].client().handle_envelope(&altered.to_bytes());
        assert!(
            matches!(refused, Err(MlsError::InvalidWelcome { .. })),
            "byte {position}: {refused:?}"
        );
        assert!(!h.nodes[3].client().groups().contains(&group));
    }
    let joined = h.nodes[3]
        .client()
        .handle_envelope(&genuine.to_bytes())
        .unwrap();
    assert_eq!(joined.disposition, Disposition::Processed);
    assert!(h.nodes[3].client().groups().contains(&group));

    // A copy with its history stripped decides nothing for a device that holds the group.
    let stripped = Envelope::new(EnvelopeKind::Welcome, genuine.payload().to_vec());
    let refused = h.nodes[3].client().handle_envelope(&stripped.to_bytes());
    assert!(refused.is_err() || refused.unwrap().disposition == Disposition::Duplicate);
}

/// Three commits in one epoch: bob and carol update, alice removes bob. Bob's commit is out
/// whatever its priority, so the winner is alice's or carol's — and a member that had moved
/// onto bob's branch, or from carol's to bob's, has to go back to one it judged or left before.
/// Every delivery order ends on the same branch.
#[test]
fn a_branch_left_for_one_whose_committer_is_then_removed_wins_again_in_every_order() {
    let orders: [[usize; 3]; 3] = [[0, 1, 2], [1, 2, 0], [2, 1, 0]];
    let mut went_back = 0;
    for seed in 0..8 {
        let mut h = Harness::memory(&NAMES, seed);
        h.duplicate_probability = 0.0;
        let group = h.group_with(0, &[1, 2, 3]);
        let bob = h.nodes[1].address();
        let g = group.clone();
        h.run(0, move |c| {
            c.remove_device(&g, &bob.user_id, &bob.device_id)
        });
        let alice = h.take_inboxes();
        let g = group.clone();
        h.run(1, move |c| c.self_update(&g));
        let bobs = h.take_inboxes();
        let g = group.clone();
        h.run(2, move |c| c.self_update(&g));
        let carols = h.take_inboxes();
        let commits = [&alice, &bobs, &carols];
        // Dave sees them in each order in turn (one device, one order per seed).
        let order = orders[seed as usize % orders.len()];
        for index in order {
            let _ = h.handle(3, &commits[index][3][0]);
        }
        for node in [0, 2] {
            for (index, held) in commits.iter().enumerate() {
                if index != node
                    && let Some(bytes) = held[node].first()
                {
                    let _ = h.handle(node, bytes);
                }
            }
        }
        for held in [&alice, &carols] {
            if let Some(bytes) = held[1].first() {
                let _ = h.handle(1, bytes);
            }
        }
        h.deliver_all();
        h.tick_members(&group, 2);
        h.assert_converged(&group, &[0, 2, 3]);
        let members = h.nodes[3].client().members(&group).unwrap();
        assert!(
            members.iter().all(|m| m.user_id() != bob.user_id),
            "seed {seed}: bob's removal stands"
        );
        if h.superseded(3) >= 2 {
            went_back += 1;
        }
    }
    assert!(went_back > 0, "no seed made dave change branch twice");
}

/// A member that makes commit after commit in one epoch (each valid, each a different one) is
/// reported, and what a device keeps of that epoch is bounded: past 16 judged commits, the next
/// is refused and changes nothing.
#[test]
fn a_member_flooding_one_epoch_with_commits_is_bounded() {
    let mut h = Harness::redb(&NAMES[..3], 9);
    let group = h.group_with(0, &[1, 2]);
    let carol_file = h.nodes[2].path.clone().unwrap();
    let copy = carol_file.with_extension("copy");
    h.stop(2);
    std::fs::copy(&carol_file, &copy).unwrap();
    let mut commits = Vec::new();
    for _ in 0..17 {
        std::fs::copy(&copy, &carol_file).unwrap();
        h.reopen(2);
        let made = h.nodes[2].client().self_update(&group).unwrap();
        commits.push(made.outbound[0].envelope.to_bytes());
        h.stop(2);
    }
    h.take_inboxes();

    let mut equivocations = 0;
    for (index, bytes) in commits.iter().enumerate() {
        match h.nodes[1].client().handle_envelope(bytes) {
            Ok(output) => {
                assert!(
                    index < 16,
                    "commit {index} was judged: {:?}",
                    output.disposition
                );
                equivocations += output
                    .events
                    .iter()
                    .filter(|e| matches!(e, Event::Equivocation { .. }))
                    .count();
            }
            Err(error) => {
                assert_eq!(index, 16, "commit {index}: {error}");
                assert!(
                    matches!(error, MlsError::RejectedMessage { .. }),
                    "{error:?}"
                );
            }
        }
    }
    assert_eq!(
        equivocations, 15,
        "every commit after the first is reported"
    );
    // Bob still works with alice once she has judged the same commits.
    for bytes in &commits {
        let _ = h.nodes[0].client().handle_envelope(bytes);
    }
    h.assert_converged(&group, &[0, 1]);
}
