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
use engine_harness::{Harness, seed_where};
use spacepanda_core::MemoryStore;
use std::sync::Arc;

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
    let close = |h: &mut Harness| {
        h.close(2);
        // The last handle to the file goes too, so the database is really closed.
        h.nodes[2].store = Arc::new(MemoryStore::new());
    };
    close(&mut h);
    std::fs::copy(&carol_file, &copy).unwrap();
    h.reopen(2);
    let first = h.nodes[2].client().self_update(&group).unwrap();
    let first = first.outbound[0].envelope.to_bytes();
    close(&mut h);
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
    let close = |h: &mut Harness| {
        h.close(2);
        h.nodes[2].store = Arc::new(MemoryStore::new());
    };
    close(&mut h);
    std::fs::copy(&carol_file, &copy).unwrap();
    let mut commits = Vec::new();
    for _ in 0..17 {
        std::fs::copy(&copy, &carol_file).unwrap();
        h.reopen(2);
        let made = h.nodes[2].client().self_update(&group).unwrap();
        commits.push(made.outbound[0].envelope.to_bytes());
        close(&mut h);
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

/// What `three_way_fork` sets up: three commits of one epoch, and dave on the branch that
/// wins among all three, holding a Welcome sent from the branch that wins between two of them.
struct ThreeWayFork {
    h: Harness,
    group: GroupId,
    /// Carol's second Welcome for dave, sent after bob's update beat her add on her device.
    late_welcome: Vec<u8>,
}

/// Who tells dave, before the late Welcome comes, that a third commit put bob's update out.
#[derive(Clone, Copy, Debug)]
enum Teacher {
    /// Alice's removal of bob, made again on carol's branch: its claim says what she judged.
    AlicesCommit,
    /// Carol's first Welcome, sent again once alice's removal made her add win again: dave
    /// holds that state already and refuses it, but its history says what carol judged.
    CarolsWelcomeAgain,
}

/// Alice, bob and carol at one epoch: bob updates, alice removes bob, carol adds dave, all at
/// once. Carol hears bob's update first and it beats her add: she makes the add again on bob's
/// branch and sends dave a second Welcome. Alice hears all three: bob's is out (her commit
/// removes bob), and carol's beats hers. Dave joins by carol's first Welcome, then hears from
/// `teacher`. `None` unless the seed makes the commits win that way.
fn three_way_fork(seed: u64, teacher: Teacher) -> Option<ThreeWayFork> {
    let mut h = Harness::memory(&NAMES, seed);
    let group = h.group_with(0, &[1, 2]);
    let bob = h.nodes[1].address();
    let dave_package = h.key_package(3);
    let g = group.clone();
    let update = h.run(1, move |c| c.self_update(&g)).outbound[0]
        .envelope
        .to_bytes();
    let g = group.clone();
    let removal = h
        .run(0, move |c| {
            c.remove_device(&g, &bob.user_id, &bob.device_id)
        })
        .outbound[0]
        .envelope
        .to_bytes();
    let g = group.clone();
    let added = h.run(2, move |c| c.add_members(&g, &[dave_package]));
    let kind = |o: &core_mls::Outbound| o.envelope.kind();
    let add = added
        .outbound
        .iter()
        .find(|o| kind(o) == EnvelopeKind::Commit)?;
    let add = add.envelope.to_bytes();
    let first_welcome = added
        .outbound
        .iter()
        .find(|o| kind(o) == EnvelopeKind::Welcome)?
        .envelope
        .to_bytes();
    h.take_inboxes();

    // Carol: bob's update beats her add.
    h.handle(2, &update).ok()?;
    if h.superseded(2) == 0 {
        return None;
    }
    let late_welcome = h.take_inboxes()[3].first()?.clone();
    // Alice: bob's update is out, carol's add beats her removal; she removes bob again.
    h.handle(0, &update).ok()?;
    h.handle(0, &add).ok()?;
    if h.superseded(0) == 0 {
        return None;
    }
    let alice_again = h.take_inboxes();
    h.handle(3, &first_welcome).ok()?;
    let mut held = vec![(1, removal.clone())];
    match teacher {
        Teacher::AlicesCommit => {
            for bytes in &alice_again[3] {
                h.handle(3, bytes).ok()?;
            }
            let states = h.states(&group, &[0, 3]);
            if states[0] != states[1] {
                return None;
            }
            held.push((2, removal.clone()));
        }
        Teacher::CarolsWelcomeAgain => {
            // Carol hears alice's removal: her add wins again, and her first Welcome goes out
            // again with what she knows now.
            h.handle(2, &removal).ok()?;
            let carol_again = h.take_inboxes();
            let welcome_again = carol_again[3]
                .iter()
                .find(|bytes| {
                    core_mls::Envelope::from_bytes(bytes, usize::MAX)
                        .is_ok_and(|e| e.kind() == EnvelopeKind::Welcome)
                })?
                .clone();
            let refused = h.nodes[3].client().handle_envelope(&welcome_again);
            if !matches!(refused, Err(MlsError::AlreadyJoined { .. })) {
                return None;
            }
            for (node, inbox) in carol_again.into_iter().enumerate() {
                held.extend(inbox.into_iter().map(|bytes| (node, bytes)));
            }
            held.extend(alice_again[3].iter().map(|bytes| (3, bytes.clone())));
        }
    }
    // The rest, except dave's late Welcome, is delivered when the test says.
    for (node, inbox) in alice_again
        .into_iter()
        .enumerate()
        .filter(|(node, _)| *node != 3)
    {
        held.extend(inbox.into_iter().map(|bytes| (node, bytes)));
    }
    for (node, bytes) in held {
        h.nodes[node].inbox.push(bytes);
    }
    Some(ThreeWayFork {
        h,
        group,
        late_welcome,
    })
}

/// Issue 21 (seeds 1107 and 6448): a device that joined after a fork judges a Welcome of
/// another branch by every commit of the epoch where the branches part, not by the two its
/// Welcomes named. The commit that moved it on carries what its committer judged there.
#[test]
fn a_welcome_from_a_branch_a_third_commit_put_out_does_not_move_a_device_that_joined_later() {
    dave_stays_on_the_winning_branch(Teacher::AlicesCommit);
}

/// Issue 21 (seed 1800): the same, taught by a Welcome of dave's own branch sent again, which
/// dave refuses (he holds that state) but learns from.
#[test]
fn a_refused_welcome_of_the_own_branch_still_teaches_what_its_sender_judged() {
    dave_stays_on_the_winning_branch(Teacher::CarolsWelcomeAgain);
}

fn dave_stays_on_the_winning_branch(teacher: Teacher) {
    let seed = seed_where(40, |seed| three_way_fork(seed, teacher).is_some());
    let ThreeWayFork {
        mut h,
        group,
        late_welcome,
    } = three_way_fork(seed, teacher).unwrap();
    let before = h.states(&group, &[3]);
    // The Welcome says carol's add lost to bob's update, which it did, between the two. Alice
    // judged all three, and her commit told dave: carol's add won. He stays.
    let _ = h.handle(3, &late_welcome);
    assert_eq!(
        h.states(&group, &[3]),
        before,
        "dave moved onto the branch of bob's update; events {:?}; errors {:?}",
        h.nodes[3].events,
        h.errors()
    );
    h.deliver_all();
    h.tick_members(&group, 2);
    h.assert_converged(&group, &[0, 2, 3]);
    h.assert_members_without(&group, &[0, 2, 3], 3, 1);
    h.assert_group_works(&group, 3, &[0, 2]);
}
