//! End-to-end behaviour of `MlsClient`: several devices, a shuffling and duplicating network,
//! restarts from the store files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use core_mls::{Disposition, Event};
use engine_harness::Harness;
use spacepanda_core::Clock as _;

/// Five devices (alice on two), RedbStore files, every envelope shuffled and often duplicated:
/// adds, removes, self-updates and messages from everyone; everyone converges and every
/// message reaches every member exactly once.
#[test]
fn five_devices_converge_on_redb_with_reordering_and_duplicates() {
    let mut h = Harness::redb(&["alice", "bob", "carol", "dave"], 11);
    let alice2 = h.add_node("alice-phone", Some(0));
    assert_eq!(
        h.nodes[alice2].address().user_id,
        h.nodes[0].address().user_id
    );
    let group = h.group_with(0, &[1, 2, alice2]);
    h.assert_converged(&group, &[0, 1, 2, alice2]);

    let mut sent = Vec::new();
    for (round, node) in [0, 1, 2, alice2, 1, 0].into_iter().enumerate() {
        let g = group.clone();
        let text = format!("message {round} from {}", h.nodes[node].name);
        let output = h.run(node, move |c| c.send(&g, text.as_bytes()));
        sent.push((node, Harness::sent_id(&output)));
        if round == 2 {
            // A commit in the middle of the traffic: later messages are from the next epoch and
            // may arrive before it.
            let g = group.clone();
            h.run(2, move |c| c.self_update(&g));
        }
        if round % 2 == 1 {
            h.deliver_all();
        }
    }
    // Dave joins late; then alice's phone self-updates. (Two commits in the same epoch are the
    // concurrent-commit case, which needs the convergence rule; here they are sequential.)
    let dave_package = h.key_package(3);
    let g = group.clone();
    h.run(1, move |c| c.add_members(&g, &[dave_package]));
    h.deliver_all();
    let g = group.clone();
    h.run(alice2, move |c| c.self_update(&g));
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, 2, 3, alice2]);
    let g = group.clone();
    let output = h.run(3, move |c| c.send(&g, b"dave says hi"));
    sent.push((3, Harness::sent_id(&output)));
    h.deliver_all();

    for (sender, id) in &sent {
        for member in [0, 1, 2, alice2] {
            if member != *sender {
                assert_eq!(
                    h.copies(member, id),
                    1,
                    "{} got a message from {} not exactly once",
                    h.nodes[member].name,
                    h.nodes[*sender].name
                );
            }
        }
    }
    assert_eq!(h.copies(0, &sent.last().unwrap().1), 1);
    assert!(
        h.errors().is_empty(),
        "unexpected rejections: {:?}",
        h.errors()
    );
    h.assert_converged(&group, &[0, 1, 2, 3, alice2]);
}

#[test]
fn removing_a_user_removes_all_their_devices_and_they_cannot_read_on() {
    let mut h = Harness::memory(&["alice", "bob"], 3);
    let bob2 = h.add_node("bob-tablet", Some(1));
    let group = h.group_with(0, &[1, bob2]);
    let bob_user = h.nodes[1].address().user_id;
    let g = group.clone();
    let output = h.run(0, move |c| c.remove_user(&g, &bob_user));
    match output.events.first() {
        Some(Event::MembersRemoved { members, .. }) => {
            assert_eq!(members.len(), 2);
            assert!(members.iter().all(|m| m.user_id() == bob_user));
        }
        other => panic!("expected MembersRemoved, got {other:?}"),
    }
    h.deliver_all();
    assert!(h.nodes[1].removed_from(&group));
    assert!(h.nodes[bob2].removed_from(&group));
    assert!(h.nodes[1].client().groups().is_empty());
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 1);

    // A later message, routed to bob anyway, is unreadable for him: kept only in the small
    // budget for groups he is not in (a member might re-add him, and then the new epoch's
    // messages can overtake the Welcome), never delivered.
    let g = group.clone();
    let output = h.nodes[0]
        .client()
        .send(&g, b"bob must not read this")
        .unwrap();
    assert!(output.outbound.is_empty(), "nobody else is in the group");
    let carol = h.add_node("carol", None);
    let package = h.key_package(carol);
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[package]));
    h.deliver_all();
    let g = group.clone();
    let output = h.run(0, move |c| c.send(&g, b"secret for carol"));
    let bytes = output.outbound[0].envelope.to_bytes();
    assert_eq!(h.handle(1, &bytes), Ok(core_mls::Disposition::Buffered));
    h.deliver_all();
    assert!(
        h.nodes[1]
            .delivered
            .iter()
            .all(|(_, _, _, body)| body != b"secret for carol")
    );
    assert_eq!(h.copies(carol, &Harness::sent_id(&output)), 1);
}

#[test]
fn joiner_restarts_before_and_after_its_welcome() {
    let mut h = Harness::redb(&["alice", "bob", "carol"], 5);
    let group = h.group_with(0, &[1]);
    let package = h.key_package(2);
    // Carol's device restarts after publishing, before the Welcome arrives.
    h.close(2);
    h.reopen(2);
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[package]));
    // And again with the Welcome waiting in her inbox.
    h.close(2);
    h.reopen(2);
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, 2]);
    // Restart after joining: the group loads from the file and keeps working.
    h.close(2);
    h.reopen(2);
    let g = group.clone();
    let output = h.run(2, move |c| c.send(&g, b"carol after restart"));
    h.deliver_all();
    let id = Harness::sent_id(&output);
    assert_eq!((h.copies(0, &id), h.copies(1, &id)), (1, 1));
}

#[test]
fn sender_restarting_before_acknowledging_resends_and_receivers_see_each_message_once() {
    let mut h = Harness::redb(&["alice", "bob", "carol"], 8);
    let group = h.group_with(0, &[1, 2]);
    // Bob sends; the process dies before the network took the envelope (no ack).
    let output = h.nodes[1]
        .client()
        .send(&group, b"sent just before a crash")
        .unwrap();
    let id = Harness::sent_id(&output);
    h.close(1);
    h.reopen(1); // re-sends from the durable outbox
    h.deliver_all();
    assert_eq!((h.copies(0, &id), h.copies(2, &id)), (1, 1));
    // The resent envelope arriving again later is a duplicate, not a second delivery.
    let bytes = output.outbound[0].envelope.to_bytes();
    assert_eq!(h.handle(0, &bytes), Ok(Disposition::Duplicate));
    assert_eq!(h.copies(0, &id), 1);
    assert!(h.nodes[1].client().pending_outbound().unwrap().is_empty());
}

#[test]
fn committer_restarting_before_sending_its_commit_still_reaches_everyone() {
    let mut h = Harness::redb(&["alice", "bob", "carol"], 9);
    let group = h.group_with(0, &[1, 2]);
    let output = h.nodes[1].client().self_update(&group).unwrap();
    assert_eq!(output.outbound.len(), 1);
    let bob_epoch = h.nodes[1].client().epoch(&group).unwrap();
    h.close(1);
    h.reopen(1);
    assert_eq!(
        h.nodes[1].client().epoch(&group).unwrap(),
        bob_epoch,
        "the merged commit survived"
    );
    h.deliver_all();
    h.assert_converged(&group, &[0, 1, 2]);
    let g = group.clone();
    let output = h.run(0, move |c| c.send(&g, b"after bob's commit"));
    h.deliver_all();
    assert_eq!(h.copies(1, &Harness::sent_id(&output)), 1);
}

#[test]
fn future_epoch_messages_are_buffered_and_replayed_after_the_commit() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 1);
    let group = h.group_with(0, &[1, 2]);
    let commit = h.nodes[0].client().self_update(&group).unwrap();
    let message = h.nodes[0]
        .client()
        .send(&group, b"from the next epoch")
        .unwrap();
    // Carol gets the message first: buffered, nothing delivered yet.
    let message_bytes = message.outbound[0].envelope.to_bytes();
    assert_eq!(h.handle(2, &message_bytes), Ok(Disposition::Buffered));
    assert!(h.nodes[2].delivered.is_empty());
    // A restart does not lose the buffer.
    h.close(2);
    h.reopen(2);
    let commit_bytes = commit.outbound[0].envelope.to_bytes();
    assert_eq!(h.handle(2, &commit_bytes), Ok(Disposition::Processed));
    assert_eq!(
        h.copies(2, &Harness::sent_id(&message)),
        1,
        "replayed after the commit"
    );
    assert_eq!(h.handle(2, &message_bytes), Ok(Disposition::Duplicate));
}

#[test]
fn messages_for_a_group_not_joined_yet_wait_for_the_welcome() {
    let mut h = Harness::memory(&["alice", "bob"], 2);
    let group = h.nodes[0].client().create_group().unwrap();
    let package = h.key_package(1);
    let add = h.nodes[0].client().add_members(&group, &[package]).unwrap();
    let message = h.nodes[0].client().send(&group, b"welcome, bob").unwrap();
    assert_eq!(
        h.handle(1, &message.outbound[0].envelope.to_bytes()),
        Ok(Disposition::Buffered)
    );
    let welcome = add
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == core_mls::EnvelopeKind::Welcome)
        .unwrap();
    assert_eq!(
        h.handle(1, &welcome.envelope.to_bytes()),
        Ok(Disposition::Processed)
    );
    assert_eq!(h.copies(1, &Harness::sent_id(&message)), 1);
}

#[test]
fn a_leave_is_committed_by_the_designated_member_and_the_leaver_learns_it() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 4);
    let group = h.group_with(0, &[1, 2]);
    let g = group.clone();
    h.run(2, move |c| c.leave_group(&g));
    h.deliver_all();
    // Bob is not the designated committer: his tick leaves the proposal to alice.
    let now = h.clock.now();
    assert!(h.nodes[1].client().tick(now).unwrap().outbound.is_empty());
    assert!(!h.nodes[2].removed_from(&group));
    let now = h.clock.now();
    h.run(0, move |c| c.tick(now));
    h.deliver_all();
    assert!(
        h.nodes[2].removed_from(&group),
        "carol's leave was committed"
    );
    h.assert_converged(&group, &[0, 1]);
    assert_eq!(h.nodes[0].client().members(&group).unwrap().len(), 2);
    // Exactly one member committed it: both are one epoch past the group's start.
    assert_eq!(h.nodes[0].client().epoch(&group).unwrap(), 2);
    let g = group.clone();
    let output = h.run(1, move |c| c.send(&g, b"after carol left"));
    h.deliver_all();
    assert_eq!(h.copies(0, &Harness::sent_id(&output)), 1);
    assert_eq!(h.copies(2, &Harness::sent_id(&output)), 0);
}

#[test]
fn the_same_welcome_twice_is_reported_as_already_processed() {
    let mut h = Harness::memory(&["alice", "bob"], 6);
    let group = h.nodes[0].client().create_group().unwrap();
    let package = h.key_package(1);
    let add = h.nodes[0].client().add_members(&group, &[package]).unwrap();
    let welcome = add
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == core_mls::EnvelopeKind::Welcome)
        .unwrap()
        .envelope
        .to_bytes();
    assert_eq!(h.handle(1, &welcome), Ok(Disposition::Processed));
    assert_eq!(h.handle(1, &welcome), Ok(Disposition::Duplicate));
    assert_eq!(h.nodes[1].client().groups(), vec![group]);
}

#[test]
fn a_message_not_acknowledged_by_the_app_is_delivered_again_after_a_restart() {
    let mut h = Harness::redb(&["alice", "bob"], 12);
    let group = h.group_with(0, &[1]);
    let output = h.nodes[0].client().send(&group, b"do not lose me").unwrap();
    let bytes = output.outbound[0].envelope.to_bytes();
    // Bob's engine decrypts and commits, then the app dies before storing the message.
    let processed = h.nodes[1].client().handle_envelope(&bytes).unwrap();
    assert!(matches!(
        processed.events.as_slice(),
        [Event::Message { .. }]
    ));
    h.close(1);
    h.reopen(1); // hands pending_delivered() to the app again
    let id = Harness::sent_id(&output);
    assert_eq!(h.copies(1, &id), 1);
    assert!(
        h.nodes[1].client().pending_delivered().unwrap().is_empty(),
        "acknowledged now"
    );
    // The envelope itself arriving again is a duplicate, not a third delivery.
    assert_eq!(h.handle(1, &bytes), Ok(Disposition::Duplicate));
    assert_eq!(h.copies(1, &id), 1);
}

#[test]
fn tick_self_updates_stale_leaves_and_expires_old_buffered_messages() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 13);
    let group = h.group_with(0, &[1, 2]);
    // Nothing is due yet.
    let now = h.clock.now();
    let quiet = h.nodes[1].client().tick(now).unwrap();
    assert!(quiet.outbound.is_empty());

    // A message from a future epoch that will never be completed: carol buffers it.
    let commit = h.nodes[0].client().self_update(&group).unwrap();
    let early = h.nodes[0].client().send(&group, b"too early").unwrap();
    assert_eq!(
        h.handle(2, &early.outbound[0].envelope.to_bytes()),
        Ok(Disposition::Buffered)
    );
    // A day and more later the buffer entry is dropped, and reported.
    h.clock
        .advance(std::time::Duration::from_secs(25 * 60 * 60));
    let now = h.clock.now();
    let expired = h.nodes[2].client().tick(now).unwrap();
    assert!(
        expired
            .events
            .iter()
            .any(|e| matches!(e, Event::BufferedDropped { count: 1, .. })),
        "{:?}",
        expired.events
    );
    // The commit then arrives; the dropped message is not replayed.
    assert_eq!(
        h.handle(2, &commit.outbound[0].envelope.to_bytes()),
        Ok(Disposition::Processed)
    );
    assert_eq!(h.copies(2, &Harness::sent_id(&early)), 0);
    h.absorb(0, commit);
    h.absorb(0, early);
    h.deliver_all();

    // After a week, every member's tick self-updates (one at a time to keep one commit per epoch).
    h.clock
        .advance(std::time::Duration::from_secs(7 * 24 * 60 * 60));
    let before = h.nodes[1].client().epoch(&group).unwrap();
    let now = h.clock.now();
    let output = h.run(1, move |c| c.tick(now));
    assert_eq!(
        output
            .outbound
            .iter()
            .filter(|o| o.envelope.kind() == core_mls::EnvelopeKind::Commit)
            .count(),
        1,
        "bob's leaf was a week old"
    );
    h.deliver_all();
    assert_eq!(h.nodes[1].client().epoch(&group).unwrap(), before + 1);
    h.assert_converged(&group, &[0, 1, 2]);
    // Right after, bob's leaf is fresh: no second update.
    let now = h.clock.now();
    let again = h.nodes[1].client().tick(now).unwrap();
    assert!(again.outbound.is_empty());
}

#[test]
fn sends_during_a_pending_leave_wait_for_the_designated_commit_instead_of_forking() {
    let mut h = Harness::memory(&["alice", "bob", "carol", "dave"], 14);
    let group = h.group_with(0, &[1, 2, 3]);
    let leave = h.nodes[2].client().leave_group(&group).unwrap();
    let proposal = leave.outbound[0].envelope.to_bytes();
    // Bob hears of the leave before alice (the designated committer) does.
    assert_eq!(h.handle(1, &proposal), Ok(Disposition::Processed));
    let output = h.nodes[1]
        .client()
        .send(&group, b"written during the leave")
        .unwrap();
    assert!(
        output.outbound.is_empty(),
        "deferred, not a competing commit"
    );
    let id = Harness::sent_id(&output);
    h.absorb(1, output);
    h.absorb(2, leave);
    h.deliver_all();
    let now = h.clock.now();
    h.run(0, move |c| c.tick(now));
    h.deliver_all();
    assert!(h.errors().is_empty(), "no fork: {:?}", h.errors());
    assert!(h.nodes[2].removed_from(&group));
    h.assert_converged(&group, &[0, 1, 3]);
    assert_eq!(
        (h.copies(0, &id), h.copies(3, &id), h.copies(2, &id)),
        (1, 1, 0)
    );
}

#[test]
fn tick_commits_proposals_the_designated_committer_left_pending() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 15);
    let group = h.group_with(0, &[1, 2]);
    h.close(0); // alice, the designated committer, is offline
    let g = group.clone();
    h.run(2, move |c| c.leave_group(&g));
    h.deliver_all();
    let output = h.nodes[1]
        .client()
        .send(&group, b"waiting for the leave")
        .unwrap();
    assert!(output.outbound.is_empty());
    h.absorb(1, output.clone());
    let now = h.clock.now();
    assert!(
        h.nodes[1].client().tick(now).unwrap().outbound.is_empty(),
        "not yet timed out"
    );
    h.clock.advance(std::time::Duration::from_secs(61));
    let now = h.clock.now();
    let ticked = h.run(1, move |c| c.tick(now));
    let kinds: Vec<_> = ticked.outbound.iter().map(|o| o.envelope.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            core_mls::EnvelopeKind::Commit,
            core_mls::EnvelopeKind::Application
        ]
    );
    h.reopen(0);
    h.deliver_all();
    assert!(h.nodes[2].removed_from(&group));
    h.assert_converged(&group, &[0, 1]);
    assert_eq!(h.copies(0, &Harness::sent_id(&output)), 1);
}

#[test]
fn a_commit_that_overtakes_its_proposal_waits_for_it() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 16);
    let group = h.group_with(0, &[1, 2]);
    let leave = h.nodes[2].client().leave_group(&group).unwrap();
    let proposal = leave.outbound[0].envelope.to_bytes();
    assert_eq!(h.handle(0, &proposal), Ok(Disposition::Processed));
    let now = h.clock.now();
    let commit = h.nodes[0].client().tick(now).unwrap();
    let commit = commit
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == core_mls::EnvelopeKind::Commit)
        .unwrap()
        .envelope
        .to_bytes();
    // Bob gets the commit first: it references a proposal he has not seen.
    assert_eq!(h.handle(1, &commit), Ok(Disposition::Buffered));
    assert_eq!(h.handle(1, &proposal), Ok(Disposition::Processed));
    h.assert_converged(&group, &[0, 1]);
    assert_eq!(h.handle(1, &commit), Ok(Disposition::Duplicate));
}
