//! What a device knows of a fork it was not there for (issue 21): a device that joined after
//! three commits met in one epoch learns of the third from the members' commits and refused
//! Welcomes (their signed claims of what they judged), so a stale Welcome of a losing branch
//! does not move it; and a device whose own commit won on a branch it was taken off is told,
//! and rejoins. Each case searches a bounded range of seeds for one where the commits win the
//! way the case needs (`seed_where`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use core_mls::{EnvelopeKind, Event, GroupId, MlsError, Output};
use engine_harness::{Harness, seed_where};

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// The three commits every case here starts from, made at once in one epoch of alice, bob
/// and carol's group, none delivered yet.
struct ThreeCommits {
    /// Bob's self-update.
    update: Vec<u8>,
    /// Alice's removal of bob.
    removal: Vec<u8>,
    /// Carol's add of dave...
    add: Vec<u8>,
    /// ...and its Welcome.
    first_welcome: Vec<u8>,
}

fn three_commits(seed: u64) -> Option<(Harness, GroupId, ThreeCommits)> {
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
    let envelope_of = |output: &Output, kind: EnvelopeKind| {
        output
            .outbound
            .iter()
            .find(|o| o.envelope.kind() == kind)
            .map(|o| o.envelope.to_bytes())
    };
    let three = ThreeCommits {
        update,
        removal,
        add: envelope_of(&added, EnvelopeKind::Commit)?,
        first_welcome: envelope_of(&added, EnvelopeKind::Welcome)?,
    };
    Some((h, group, three))
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
    /// The same commit, its claim's signature altered by a relay: it teaches nothing.
    AlicesCommitAltered,
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
    let (
        mut h,
        group,
        ThreeCommits {
            update,
            removal,
            add,
            first_welcome,
        },
    ) = three_commits(seed)?;
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
        Teacher::AlicesCommit | Teacher::AlicesCommitAltered => {
            for bytes in &alice_again[3] {
                let bytes = match teacher {
                    Teacher::AlicesCommitAltered => claim_altered(bytes),
                    _ => bytes.clone(),
                };
                h.handle(3, &bytes).ok()?;
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

/// What a relay can do to a commit's claim: alter it (here the last byte of its signature). The
/// commit is still processed; the claim teaches dave nothing, so the late Welcome moves him as
/// it did before commits told what their committers judged. (A relay can withhold what a claim
/// teaches, as it can withhold the commit; it cannot make it teach something else.)
#[test]
fn a_claim_a_relay_altered_teaches_nothing() {
    let ThreeWayFork {
        mut h,
        group,
        late_welcome,
    } = three_way_fork_taught_by(Teacher::AlicesCommitAltered);
    let before = h.states(&group, &[3]);
    assert_eq!(before, h.states(&group, &[0]), "dave merged alice's commit");
    let _ = h.handle(3, &late_welcome);
    assert_ne!(
        h.states(&group, &[3]),
        before,
        "dave learned from an altered claim"
    );
}

/// `bytes` (an envelope) with the last byte of its context (a commit claim's signature)
/// flipped; anything else unchanged.
fn claim_altered(bytes: &[u8]) -> Vec<u8> {
    let envelope = core_mls::Envelope::from_bytes(bytes, usize::MAX).unwrap();
    let mut context = envelope.context().to_vec();
    if envelope.kind() != EnvelopeKind::Commit || context.is_empty() {
        return bytes.to_vec();
    }
    if let Some(last) = context.last_mut() {
        *last ^= 1;
    }
    core_mls::Envelope::with_context(envelope.kind(), envelope.payload().to_vec(), &context)
        .to_bytes()
}

/// `three_way_fork` on the first seed from 40 that makes the commits win that way.
fn three_way_fork_taught_by(teacher: Teacher) -> ThreeWayFork {
    let seed = seed_where(40, |seed| three_way_fork(seed, teacher).is_some());
    three_way_fork(seed, teacher).unwrap()
}

fn dave_stays_on_the_winning_branch(teacher: Teacher) {
    let ThreeWayFork {
        mut h,
        group,
        late_welcome,
    } = three_way_fork_taught_by(teacher);
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

/// The group with dave on his own self-update's branch, off it, and back on its earlier
/// state (`own_commit_lost_with_a_branch`).
struct OwnCommitLost {
    h: Harness,
    group: GroupId,
    /// What dave's engine said when the members' next commit reached him.
    told: Vec<Event>,
}

/// The three-way fork of `three_way_fork`, and dave in the middle of it: he joins carol's
/// branch by her first Welcome and updates his leaf there (U); carol's second Welcome, from
/// bob's branch, takes him off it; her first Welcome, sent again once alice's removal of bob
/// made her add win again, puts him back on that branch's first state, without U. Alice meant
/// to remove bob again there, but U beat her and she removed him once more on top of U. Dave
/// merges her first attempt (he no longer holds U to judge it by), then her second arrives:
/// of a branch he cannot reach, since the commit it stands on is his own. `None` unless the
/// seed makes the commits win that way.
fn own_commit_lost_with_a_branch(seed: u64, altered: bool) -> Option<OwnCommitLost> {
    let (
        mut h,
        group,
        ThreeCommits {
            update,
            removal,
            add,
            first_welcome,
        },
    ) = three_commits(seed)?;
    // Everything taken out of the inboxes to order the case goes back in at the end (what a
    // device already handled is a duplicate then).
    let mut taken: Vec<Vec<Vec<Vec<u8>>>> = Vec::new();
    taken.push(h.take_inboxes());

    // Carol: bob's update beats her add; she adds dave again on bob's branch.
    h.handle(2, &update).ok()?;
    if h.superseded(2) == 0 {
        return None;
    }
    taken.push(h.take_inboxes());
    let second_welcome = taken.last()?[3].first()?.clone();
    // Dave joins carol's first branch and updates there.
    h.handle(3, &first_welcome).ok()?;
    let joined = h.states(&group, &[3]);
    let g = group.clone();
    let own_update = h.run(3, move |c| c.self_update(&g)).outbound[0]
        .envelope
        .to_bytes();
    taken.push(h.take_inboxes());
    // Carol's second Welcome takes him to bob's branch.
    let before = h.states(&group, &[3]);
    h.handle(3, &second_welcome).ok()?;
    if h.states(&group, &[3]) == before {
        return None;
    }
    // Alice: carol's add wins; she removes bob again, then dave's update beats that and she
    // removes bob once more, on top of it.
    h.handle(0, &update).ok()?;
    h.handle(0, &add).ok()?;
    taken.push(h.take_inboxes());
    let first_again = taken.last()?[3].clone();
    h.handle(0, &own_update).ok()?;
    if h.superseded(0) < 2 {
        return None;
    }
    taken.push(h.take_inboxes());
    let second_again = taken.last()?[3].clone();
    // Carol hears alice's removal: her add wins again and her first Welcome goes out again.
    h.handle(2, &removal).ok()?;
    taken.push(h.take_inboxes());
    let welcome_again = taken.last()?[3]
        .iter()
        .find(|bytes| {
            core_mls::Envelope::from_bytes(bytes, usize::MAX)
                .is_ok_and(|e| e.kind() == EnvelopeKind::Welcome)
        })?
        .clone();
    h.handle(3, &welcome_again).ok()?;
    if h.states(&group, &[3]) != joined {
        return None;
    }
    for bytes in &first_again {
        h.handle(3, bytes).ok()?;
    }
    let mut told = Vec::new();
    for bytes in &second_again {
        let bytes = if altered {
            claim_altered(bytes)
        } else {
            bytes.clone()
        };
        told.extend(h.nodes[3].client().handle_envelope(&bytes).ok()?.events);
    }
    for inboxes in taken {
        for (node, inbox) in inboxes.into_iter().enumerate() {
            h.nodes[node].inbox.extend(inbox);
        }
    }
    Some(OwnCommitLost { h, group, told })
}

/// Issue 21 (seed 1800's second form): a device put back on a branch's earlier state after its
/// own commit won there learns from the members' commits that it cannot follow them, is told
/// (`BranchContested`), and a member's GroupInfo says rejoin.
#[test]
fn a_device_whose_own_commit_won_on_a_branch_it_lost_is_told_and_rejoins() {
    let seed = seed_where(60, |seed| {
        own_commit_lost_with_a_branch(seed, false).is_some()
    });
    let OwnCommitLost { mut h, group, told } = own_commit_lost_with_a_branch(seed, false).unwrap();
    assert!(
        told.iter()
            .any(|e| matches!(e, Event::BranchContested { .. })),
        "dave was not told: {told:?}"
    );
    let dave_user = h.nodes[3].identity.user_id();
    let info = h.nodes[0]
        .client()
        .export_group_info(&group, &dave_user)
        .unwrap();
    assert_eq!(
        h.nodes[3].client().rejoin_advice(&info).unwrap(),
        core_mls::RejoinAdvice::Rejoin
    );
    h.run(3, |c| c.join_by_external_commit(&info));
    h.deliver_all();
    h.tick_members(&group, 2);
    h.assert_converged(&group, &[0, 2, 3]);
    h.assert_members_without(&group, &[0, 2, 3], 3, 1);
    h.assert_group_works(&group, 3, &[0, 2]);
}

/// The same case, with the members' commit claim altered on its way to dave: checked against
/// every member's key before it could tell dave he lost his own commit, it tells him nothing.
#[test]
fn a_claim_altered_to_say_a_device_lost_its_own_commit_tells_it_nothing() {
    let seed = seed_where(60, |seed| {
        own_commit_lost_with_a_branch(seed, false).is_some()
    });
    let OwnCommitLost { told, .. } = own_commit_lost_with_a_branch(seed, true).unwrap();
    assert!(
        !told
            .iter()
            .any(|e| matches!(e, Event::BranchContested { .. })),
        "dave was told by an altered claim: {told:?}"
    );
}

/// Alice, bob and carol, with carol cut off for longer than the fork window (2 epochs): alice
/// and carol each self-update three times, then the link heals. `Some` only where carol's
/// branch wins where the two part: alice, asking carol, is told to rejoin.
fn carol_wins_a_fork_outside_the_window(seed: u64) -> Option<(Harness, GroupId)> {
    let config = core_mls::MlsConfig {
        fork_window_epochs: 2,
        ..core_mls::MlsConfig::default()
    };
    let mut h = Harness::seeded(&NAMES[..3], seed, config);
    let group = h.group_with(0, &[1, 2]);
    let held_back = h.split_apart(&group, &[&[0, 1], &[2]], 3);
    h.heal(held_back);
    let alice = h.nodes[0].identity.user_id();
    let info = h.nodes[2]
        .client()
        .export_group_info(&group, &alice)
        .unwrap();
    let advice = h.nodes[0].client().rejoin_advice(&info).unwrap();
    (advice == core_mls::RejoinAdvice::Rejoin).then_some((h, group))
}

/// Issue 21 (seed 8467): after a fork outside the window, bob asks alice, who is on his side,
/// and she says stay. Then alice asks carol and moves to carol's winning branch. Her external
/// commit is all bob gets of that: it tells him (`BranchContested`), and asking alice again
/// moves him too. Without it he stayed on the dead branch for good.
#[test]
fn a_device_told_to_stay_by_a_member_that_then_moved_is_told_by_her_rejoin() {
    let seed = seed_where(0, |seed| {
        carol_wins_a_fork_outside_the_window(seed).is_some()
    });
    let (mut h, group) = carol_wins_a_fork_outside_the_window(seed).unwrap();
    let ask = |h: &mut Harness, device: usize, member: usize| h.ask(&group, device, member);
    let (bob_first, _) = ask(&mut h, 1, 0);
    assert_eq!(bob_first, core_mls::RejoinAdvice::Stay);
    let contested = |h: &Harness| h.count_events(1, |e| matches!(e, Event::BranchContested { .. }));
    assert_eq!(contested(&h), 0);
    let (_, info) = ask(&mut h, 0, 2);
    h.run(0, move |c| c.join_by_external_commit(&info));
    h.deliver_all();
    assert_eq!(
        contested(&h),
        1,
        "bob was not told: {:?}",
        h.nodes[1].events
    );
    let (bob_again, info) = ask(&mut h, 1, 0);
    assert_eq!(bob_again, core_mls::RejoinAdvice::Rejoin);
    h.run(1, move |c| c.join_by_external_commit(&info));
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, 2]);
    h.assert_group_works(&group, 1, &[0, 2]);
}
