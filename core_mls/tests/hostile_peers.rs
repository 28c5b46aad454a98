//! Hostile peers: what anyone on the network can send without being a member — copies of
//! genuine envelopes with an altered (unauthenticated) context, junk that cannot be
//! authenticated before its epoch, old commits kept for a replay — must not cost a member a
//! genuine message, an epoch, or a false alarm.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;
mod raw_peer;

use core_mls::{DeliverySource, Disposition, Envelope, EnvelopeKind, Event, GroupId, MlsError};
use engine_harness::Harness;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use spacepanda_core::{Clock as _, Timestamp};

/// Alice and bob in a group; every envelope delivered.
fn pair(seed: u64) -> (Harness, GroupId) {
    let mut h = Harness::memory(&["alice", "bob"], seed);
    let group = h.group_with(0, &[1]);
    h.duplicate_probability = 0.0;
    (h, group)
}

/// The envelopes waiting for `node`, taken out of its inbox (the test delivers them itself).
fn take_inbox(h: &mut Harness, node: usize) -> Vec<Vec<u8>> {
    std::mem::take(&mut h.nodes[node].inbox)
}

/// A copy of `bytes` with its context replaced: the envelope id stays the same.
fn with_forged_context(bytes: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let genuine = Envelope::from_bytes(bytes, usize::MAX).unwrap();
    let forged_context: Vec<u8> = (0..genuine.context().len().max(32))
        .map(|_| rng.r#gen())
        .collect();
    let forged =
        Envelope::with_context(genuine.kind(), genuine.payload().to_vec(), &forged_context);
    assert_eq!(forged.id(), genuine.id());
    assert_ne!(forged.to_bytes(), bytes);
    forged.to_bytes()
}

fn delivered_bodies(h: &Harness, node: usize) -> Vec<Vec<u8>> {
    h.nodes[node]
        .delivered
        .iter()
        .map(|(_, _, _, body)| body.clone())
        .collect()
}

#[test]
fn a_forged_copy_of_a_buffered_commit_does_not_replace_the_genuine_one() {
    let (mut h, group) = pair(21);
    let mut rng = StdRng::seed_from_u64(21);
    let start = h.nodes[1].client().epoch(&group).unwrap();
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let [c1, c2] = <[Vec<u8>; 2]>::try_from(take_inbox(&mut h, 1)).unwrap();

    // C1 is late: bob keeps C2 for later, then receives a copy of it with a forged context.
    assert_eq!(h.handle(1, &c2), Ok(Disposition::Buffered));
    let forged = with_forged_context(&c2, &mut rng);
    assert_eq!(h.handle(1, &forged), Ok(Disposition::Buffered));
    // C1 arrives: bob moves on, and C2 (the genuine copy) moves him on again.
    assert_eq!(h.handle(1, &c1), Ok(Disposition::Processed));
    assert_eq!(h.nodes[1].client().epoch(&group).unwrap(), start + 2);
    h.assert_converged(&group, &[0, 1]);

    let g = group.clone();
    h.run(0, move |c| c.send(&g, b"after both commits"));
    h.deliver_all();
    assert_eq!(
        delivered_bodies(&h, 1),
        vec![b"after both commits".to_vec()]
    );
    // Neither copy is processed again.
    assert_eq!(h.handle(1, &c2), Ok(Disposition::Duplicate));
    assert_eq!(h.handle(1, &forged), Ok(Disposition::Duplicate));
}

fn outside_window_events(h: &Harness, node: usize) -> usize {
    h.count_events(node, |e| matches!(e, Event::ForkOutsideWindow { .. }))
}

#[test]
fn an_old_commit_replayed_after_its_dedup_record_expired_is_a_duplicate_not_a_fork() {
    let (mut h, group) = pair(23);
    let g = group.clone();
    let own = h.run(0, move |c| c.self_update(&g));
    let commit = own.outbound[0].to_bytes();
    h.deliver_all();
    let g = group.clone();
    h.run(1, move |c| c.self_update(&g));
    h.deliver_all();
    h.assert_converged(&group, &[0, 1]);

    // Long after: snapshots (fork window) and de-duplication records are gone.
    let config = h.config.clone();
    h.clock.advance(
        config.dedup_retention.max(config.fork_window) + std::time::Duration::from_secs(1),
    );
    let now = h.clock.now();
    for node in [0, 1] {
        h.run(node, move |c| c.tick(now));
    }
    // Whoever kept the envelope replays it: to the member that merged it and to its author.
    for node in [1, 0] {
        assert_eq!(
            h.handle(node, &commit),
            Ok(Disposition::Duplicate),
            "node {node}"
        );
        h.run(node, move |c| c.tick(now));
        assert_eq!(outside_window_events(&h, node), 0, "node {node}");
        assert_eq!(
            h.nodes[node]
                .client()
                .fork_report(&group)
                .unwrap()
                .outside_window,
            0,
            "node {node}"
        );
    }
}

/// `count` junk envelopes for `group` at `epoch` (or, with no group, each for a group id of its
/// own), delivered to `node` by `source`. Returns how many were refused as `BufferFull`.
fn flood(
    h: &mut Harness,
    node: usize,
    group: Option<&GroupId>,
    epoch: u64,
    count: usize,
    source: &DeliverySource,
    rng: &mut StdRng,
) -> usize {
    let mut refused = 0;
    for _ in 0..count {
        // Junk arrives after what it means to push out, as it would on a network.
        h.clock.advance(std::time::Duration::from_millis(1));
        let invented: [u8; 32] = rng.r#gen();
        let group_id = group.map_or(&invented[..], GroupId::as_slice);
        let junk = raw_peer::junk_private_message(group_id, epoch, rng);
        match h.nodes[node].client().handle_envelope_from(&junk, source) {
            Ok(output) => {
                assert_eq!(output.disposition, Disposition::Buffered);
                h.absorb(node, output);
            }
            Err(MlsError::BufferFull { .. }) => refused += 1,
            Err(other) => panic!("junk: {other}"),
        }
    }
    refused
}

fn from(h: &mut Harness, node: usize, bytes: &[u8], source: &DeliverySource) -> Disposition {
    let output = h.nodes[node]
        .client()
        .handle_envelope_from(bytes, source)
        .unwrap();
    let disposition = output.disposition;
    h.absorb(node, output);
    disposition
}

fn sources() -> (DeliverySource, DeliverySource) {
    (
        DeliverySource::new(b"genuine peer").unwrap(),
        DeliverySource::new(b"junk peer").unwrap(),
    )
}

const FLOOD: usize = 300;

#[test]
fn junk_does_not_push_out_a_buffered_application_message() {
    let (mut h, group) = pair(31);
    let mut rng = StdRng::seed_from_u64(31);
    let (_, junk) = sources();
    let start = h.nodes[1].client().epoch(&group).unwrap();
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.send(&g, b"early"));
    let [commit, message] = <[Vec<u8>; 2]>::try_from(take_inbox(&mut h, 1)).unwrap();

    // The genuine message comes with no source; junk for the same epoch from one peer.
    assert_eq!(h.handle(1, &message), Ok(Disposition::Buffered));
    let refused = flood(&mut h, 1, Some(&group), start + 1, FLOOD, &junk, &mut rng);
    assert_eq!(h.handle(1, &commit), Ok(Disposition::Processed));
    assert_eq!(delivered_bodies(&h, 1), vec![b"early".to_vec()]);
    // The junk peer filled its own share, and was refused beyond it.
    assert_eq!(refused, FLOOD - h.config.buffer_max_messages);
}

#[test]
fn junk_does_not_push_out_a_buffered_commit() {
    let (mut h, group) = pair(32);
    let mut rng = StdRng::seed_from_u64(32);
    let (genuine, junk) = sources();
    let start = h.nodes[1].client().epoch(&group).unwrap();
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let [c1, c2] = <[Vec<u8>; 2]>::try_from(take_inbox(&mut h, 1)).unwrap();

    assert_eq!(from(&mut h, 1, &c2, &genuine), Disposition::Buffered);
    flood(&mut h, 1, Some(&group), start + 1, FLOOD, &junk, &mut rng);
    assert_eq!(from(&mut h, 1, &c1, &genuine), Disposition::Processed);
    assert_eq!(h.nodes[1].client().epoch(&group).unwrap(), start + 2);
    h.assert_converged(&group, &[0, 1]);
}

#[test]
fn junk_for_invented_groups_does_not_push_out_an_early_message_of_a_group_being_joined() {
    let mut h = Harness::memory(&["alice", "bob"], 33);
    h.duplicate_probability = 0.0;
    let mut rng = StdRng::seed_from_u64(33);
    let (genuine, junk) = sources();
    let group = h.nodes[0].client().create_group().unwrap();
    let package = h.key_package(1);
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[package]));
    let g = group.clone();
    h.run(0, move |c| c.send(&g, b"welcome aboard"));
    let [welcome, message] = <[Vec<u8>; 2]>::try_from(take_inbox(&mut h, 1)).unwrap();
    assert_eq!(
        Envelope::from_bytes(&welcome, usize::MAX).unwrap().kind(),
        EnvelopeKind::Welcome
    );

    // The message overtakes the Welcome; junk for invented groups follows.
    assert_eq!(from(&mut h, 1, &message, &genuine), Disposition::Buffered);
    let refused = flood(&mut h, 1, None, 1, FLOOD, &junk, &mut rng);
    assert_eq!(from(&mut h, 1, &welcome, &genuine), Disposition::Processed);
    assert_eq!(delivered_bodies(&h, 1), vec![b"welcome aboard".to_vec()]);
    assert_eq!(refused, FLOOD - h.config.unknown_group_max_messages);
}

#[test]
fn far_future_junk_gets_little_room_and_many_sources_cannot_push_out_a_priority_entry() {
    let (mut h, group) = pair(34);
    let mut rng = StdRng::seed_from_u64(34);
    let (genuine, junk) = sources();
    let start = h.nodes[1].client().epoch(&group).unwrap();
    // Far future: one source gets a small share, then is refused.
    let far_refused = flood(&mut h, 1, Some(&group), start + 5, 40, &junk, &mut rng);

    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.send(&g, b"next epoch"));
    let [commit, message] = <[Vec<u8>; 2]>::try_from(take_inbox(&mut h, 1)).unwrap();
    assert_eq!(from(&mut h, 1, &message, &genuine), Disposition::Buffered);
    // Many sources together fill the group's whole buffer, and no more.
    let mut refused = 0;
    for peer in 0..5u8 {
        let source = DeliverySource::new(&[b'j', peer]).unwrap();
        refused += flood(&mut h, 1, Some(&group), start + 1, 256, &source, &mut rng);
    }
    assert_eq!(from(&mut h, 1, &commit, &genuine), Disposition::Processed);
    assert_eq!(delivered_bodies(&h, 1), vec![b"next epoch".to_vec()]);
    let config = &h.config;
    assert_eq!(far_refused, 40 - config.buffer_far_future_max_messages);
    // Priority junk pushed out the far-future junk, then was refused at the group's bound.
    assert_eq!(refused, 5 * 256 + 1 - config.buffer_group_max_messages);
}

fn missing_commits(h: &Harness, node: usize) -> Vec<(GroupId, u64, usize, Timestamp)> {
    h.nodes[node]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::MissingCommit {
                group,
                epoch,
                waiting,
                since,
            } => Some((group.clone(), *epoch, *waiting, *since)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_stuck_behind_a_missing_commit_says_so_once_and_recent_commits_answer_it() {
    let (mut h, group) = pair(35);
    let start = h.nodes[1].client().epoch(&group).unwrap();
    let g = group.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group.clone();
    h.run(0, move |c| c.send(&g, b"after the lost commit"));
    // The commit is lost on the way to bob; the message arrives.
    let [_lost, message] = <[Vec<u8>; 2]>::try_from(take_inbox(&mut h, 1)).unwrap();
    let since = h.clock.now();
    assert_eq!(h.handle(1, &message), Ok(Disposition::Buffered));

    // Not before the alert time; then once, at the deadline the engine announces.
    let alert = h.config.missing_commit_alert;
    let due = since.saturating_add(alert);
    let deadline = h.nodes[1].client().next_deadline().unwrap().unwrap();
    assert!(deadline <= due, "{deadline} after {due}");
    h.clock.advance(alert / 2);
    let now = h.clock.now();
    h.run(1, move |c| c.tick(now));
    assert!(missing_commits(&h, 1).is_empty());
    h.clock.set(due);
    let now = h.clock.now();
    h.run(1, move |c| c.tick(now));
    assert_eq!(
        missing_commits(&h, 1),
        vec![(group.clone(), start, 1, since)]
    );
    h.clock.advance(alert);
    let now = h.clock.now();
    h.run(1, move |c| c.tick(now));
    assert_eq!(missing_commits(&h, 1).len(), 1, "reported once");

    // The application asks alice; bob handles what she answers and catches up.
    let answer = h.nodes[0].client().recent_commits(&group, start).unwrap();
    assert_eq!(answer.len(), 1);
    for commit in &answer {
        assert_eq!(h.handle(1, commit), Ok(Disposition::Processed));
    }
    h.assert_converged(&group, &[0, 1]);
    assert_eq!(
        delivered_bodies(&h, 1),
        vec![b"after the lost commit".to_vec()]
    );
}
