//! Two members commit in the same epoch and nobody orders them: every member ends on the branch
//! of the commit the fork rule picks, whatever order the envelopes arrive in, and what
//! the losing side did (commits, messages, an invitation) is carried over to the winning branch.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use core_mls::{Disposition, EnvelopeKind, Event, GroupId, MlsConfig, MlsError, Output};
use engine_harness::Harness;
use spacepanda_core::Clock as _;

fn three(seed: u64) -> (Harness, GroupId) {
    let mut h = Harness::memory(&["alice", "bob", "carol"], seed);
    let group = h.group_with(0, &[1, 2]);
    (h, group)
}

#[test]
fn concurrent_self_updates_converge_in_every_delivery_order() {
    let mut winners = [0usize; 2];
    // Seeded engines make each seed one exact run: among these 24, both sides win.
    for seed in 0..24 {
        let (mut h, group) = three(seed);
        let start = h.nodes[0].client().epoch(&group).unwrap();
        let g = group.clone();
        h.run(0, move |c| c.self_update(&g));
        let g = group.clone();
        h.run(1, move |c| c.self_update(&g));
        h.deliver_all();
        h.assert_converged(&group, &[0, 1, 2]);
        // Exactly one of the two committers lost, moved over, and re-issued its self-update.
        let (alice, bob) = (h.superseded(0), h.superseded(1));
        assert_eq!(alice.min(1) + bob.min(1), 1, "seed {seed}: {alice} {bob}");
        winners[usize::from(alice > 0)] += 1;
        let epoch = h.nodes[2].client().epoch(&group).unwrap();
        assert_eq!(epoch, start + 2, "winner's commit, then the re-issued one");
        let loser = usize::from(alice == 0);
        assert_eq!(
            h.nodes[loser]
                .client()
                .fork_report(&group)
                .unwrap()
                .superseded,
            1
        );
        h.assert_group_works(&group, 2, &[0, 1]);
        assert!(h.errors().is_empty(), "seed {seed}: {:?}", h.errors());
    }
    // Both sides won sometimes: the rule is the commit ref, not who commits first.
    assert!(winners.iter().all(|w| *w > 0), "{winners:?}");
}

#[test]
fn a_losing_commit_arriving_later_is_superseded_and_changes_nothing() {
    let (mut h, group) = three(3);
    let alice = h.nodes[0].client().self_update(&group).unwrap();
    let bob = h.nodes[1].client().self_update(&group).unwrap();
    let alice_bytes = alice.outbound[0].envelope.to_bytes();
    let bob_bytes = bob.outbound[0].envelope.to_bytes();
    // Carol sees alice's first. If bob's loses, carol keeps her state byte for byte.
    assert_eq!(h.handle(2, &alice_bytes), Ok(Disposition::Processed));
    let after_alice = h.nodes[2].client().epoch_authenticator(&group).unwrap();
    let second = h.handle(2, &bob_bytes).unwrap();
    let after_bob = h.nodes[2].client().epoch_authenticator(&group).unwrap();
    match second {
        Disposition::Superseded => assert_eq!(after_alice, after_bob),
        Disposition::Processed => {
            assert_ne!(after_alice, after_bob);
            assert_eq!(h.superseded(2), 1, "carol moved onto bob's branch");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The same envelope again is a duplicate either way.
    assert_eq!(h.handle(2, &bob_bytes), Ok(Disposition::Duplicate));
    assert_eq!(h.handle(2, &alice_bytes), Ok(Disposition::Duplicate));
    h.absorb(0, alice);
    h.absorb(1, bob);
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, 2]);
}

#[test]
fn messages_sent_on_the_losing_branch_reach_everyone_exactly_once() {
    for seed in 0..6 {
        let (mut h, group) = three(40 + seed);
        let g = group.clone();
        h.run(0, move |c| c.self_update(&g));
        let g = group.clone();
        h.run(1, move |c| c.self_update(&g));
        // Each sends on its own branch before hearing of the other's commit; carol in the
        // epoch both branches share.
        let mut sent = Vec::new();
        for node in 0..3 {
            let g = group.clone();
            let output = h.run(node, move |c| c.send(&g, format!("from {node}").as_bytes()));
            sent.push((node, Harness::sent_id(&output)));
        }
        h.deliver_all();
        h.assert_converged(&group, &[0, 1, 2]);
        for (sender, id) in &sent {
            for receiver in (0..3).filter(|r| r != sender) {
                assert_eq!(
                    h.copies(receiver, id),
                    1,
                    "seed {seed}: message of {sender} at {receiver}"
                );
            }
        }
        let loser = usize::from(h.superseded(0) == 0);
        let resent: usize = h.nodes[loser]
            .events
            .iter()
            .map(|e| match e {
                Event::CommitSuperseded {
                    resent_messages, ..
                } => *resent_messages,
                _ => 0,
            })
            .sum();
        assert_eq!(
            resent, 1,
            "seed {seed}: the loser's one message was re-sent"
        );
    }
}

#[test]
fn a_rollback_works_across_a_restart_from_redb() {
    let mut h = Harness::redb(&["alice", "bob", "carol"], 9);
    let group = h.group_with(0, &[1, 2]);
    let alice = h.nodes[0].client().self_update(&group).unwrap();
    let bob = h.nodes[1].client().self_update(&group).unwrap();
    let alice_bytes = alice.outbound[0].envelope.to_bytes();
    let bob_bytes = bob.outbound[0].envelope.to_bytes();
    // Carol merges each commit right before a restart, in turn.
    h.handle(2, &alice_bytes).unwrap();
    h.close(2);
    h.reopen(2);
    assert_eq!(
        h.nodes[2].client().fork_report(&group).unwrap().snapshots,
        1
    );
    h.handle(2, &bob_bytes).unwrap();
    h.close(2);
    h.reopen(2);
    h.absorb(0, alice);
    h.absorb(1, bob);
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, 2]);
    h.assert_group_works(&group, 2, &[0, 1]);
}

#[test]
fn the_fork_window_is_bounded_in_epochs_and_in_time() {
    let config = MlsConfig {
        fork_window_epochs: 2,
        ..MlsConfig::default()
    };
    let mut h = Harness::memory_with(&["alice", "bob", "carol"], 5, config.clone());
    let group = h.group_with(0, &[1, 2]);
    // Bob commits and goes offline before anyone hears of it.
    let stale = h.nodes[1].client().self_update(&group).unwrap();
    h.close(1);
    for _ in 0..4 {
        let g = group.clone();
        h.run(0, move |c| c.self_update(&g));
    }
    h.deliver_all();
    for node in [0, 2] {
        assert_eq!(
            h.nodes[node]
                .client()
                .fork_report(&group)
                .unwrap()
                .snapshots,
            2,
            "node {node} keeps the last two epochs only"
        );
    }
    // Bob's commit is four epochs back: outside carol's window.
    let refused = h.nodes[2]
        .client()
        .handle_envelope(&stale.outbound[0].envelope.to_bytes());
    assert!(
        matches!(refused, Err(MlsError::ForkOutsideWindow { .. })),
        "{refused:?}"
    );
    assert_eq!(
        h.nodes[2]
            .client()
            .fork_report(&group)
            .unwrap()
            .outside_window,
        1
    );
    // And after `fork_window` of time, `tick` drops the rest.
    h.clock.advance(config.fork_window);
    let now = h.clock.now();
    for node in [0, 2] {
        let output: Output = h.nodes[node].client().tick(now).unwrap();
        assert_eq!(
            h.nodes[node]
                .client()
                .fork_report(&group)
                .unwrap()
                .snapshots,
            0
        );
        h.absorb(node, output);
    }
}

/// Issue 16, item 2 at its root: a copy of a commit with an altered (unauthenticated) ref
/// claim changes nothing for members, who compute the ref themselves, and is refused — without
/// being recorded — by the member the commit removes, who checks the committer's signature.
#[test]
fn an_altered_ref_claim_changes_nothing_and_never_takes_the_genuine_commits_place() {
    let (mut h, group) = three(7);
    let carol = h.nodes[2].address();
    let removal = h.nodes[0]
        .client()
        .remove_device(&group, &carol.user_id, &carol.device_id)
        .unwrap();
    let genuine = removal.outbound[0].envelope.clone();
    assert!(
        !genuine.context().is_empty(),
        "commits carry a signed claim"
    );
    let mut claim = genuine.context().to_vec();
    claim[10] ^= 1;
    let altered =
        core_mls::Envelope::with_context(EnvelopeKind::Commit, genuine.payload().to_vec(), &claim);
    assert_eq!(altered.id(), genuine.id(), "the context is outside the id");

    // Bob computes the ref himself: the altered copy is processed like the genuine one.
    let bob = h.nodes[1]
        .client()
        .handle_envelope(&altered.to_bytes())
        .unwrap();
    assert_eq!(bob.disposition, Disposition::Processed);
    assert_eq!(
        h.nodes[1].client().epoch(&group).unwrap(),
        h.nodes[0].client().epoch(&group).unwrap()
    );

    // Carol must take the claim: a forged one is refused and leaves nothing behind...
    let refused = h.nodes[2].client().handle_envelope(&altered.to_bytes());
    assert!(
        matches!(refused, Err(MlsError::RejectedMessage { .. })),
        "{refused:?}"
    );
    assert!(h.nodes[2].client().groups().contains(&group));
    // ...so the genuine copy is still processed, not dropped as a duplicate.
    let removed = h.nodes[2]
        .client()
        .handle_envelope(&genuine.to_bytes())
        .unwrap();
    assert_eq!(removed.disposition, Disposition::Processed);
    assert!(
        removed
            .events
            .iter()
            .any(|e| matches!(e, Event::RemovedFromGroup { .. })),
        "{removed:?}"
    );
    h.assert_converged(&group, &[0, 1]);
}
