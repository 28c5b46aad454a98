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

use core_mls::{Disposition, Envelope, EnvelopeKind, Event, GroupId};
use engine_harness::Harness;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

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
    let forged = Envelope::with_context(genuine.kind(), genuine.payload().to_vec(), &forged_context);
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
    assert_eq!(delivered_bodies(&h, 1), vec![b"after both commits".to_vec()]);
    // Neither copy is processed again.
    assert_eq!(h.handle(1, &c2), Ok(Disposition::Duplicate));
    assert_eq!(h.handle(1, &forged), Ok(Disposition::Duplicate));
}

fn outside_window_events(h: &Harness, node: usize) -> usize {
    h.nodes[node]
        .events
        .iter()
        .filter(|e| matches!(e, Event::ForkOutsideWindow { .. }))
        .count()
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
    h.clock
        .advance(config.dedup_retention.max(config.fork_window) + std::time::Duration::from_secs(1));
    let now = spacepanda_core::Clock::now(&h.clock);
    for node in [0, 1] {
        h.run(node, move |c| c.tick(now));
    }
    // Whoever kept the envelope replays it: to the member that merged it and to its author.
    for node in [1, 0] {
        assert_eq!(h.handle(node, &commit), Ok(Disposition::Duplicate), "node {node}");
        h.run(node, move |c| c.tick(now));
        assert_eq!(outside_window_events(&h, node), 0, "node {node}");
        assert_eq!(
            h.nodes[node].client().fork_report(&group).unwrap().outside_window,
            0,
            "node {node}"
        );
    }
}
