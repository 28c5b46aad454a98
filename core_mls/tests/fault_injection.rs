//! Fault injection: every public mutating operation of `MlsClient`, run with the store failing
//! at its first, second, third … `apply`, `get` and `scan_prefix` (see `World::sweep`). Every
//! failing run must be a typed local-storage error, leave the store byte-identical and the
//! client equal to a fresh reload, and the operation must then succeed with the fault gone.
//! This is what "one operation, one transaction" means, checked call by call.
//!
//! One world of three devices (alice, bob, carol) goes through a scenario that reaches every
//! operation and every kind of incoming envelope: open, create, add (Welcome only, then commit
//! and Welcome), Welcome, application message, ack_sent, ack_delivered, self-update, a message
//! of a future epoch buffered and then replayed by its commit, leave, proposals, a send
//! deferred by a non-committer, a send that first commits pending proposals, the commit that
//! releases a deferred send, concurrent commits (rollback and re-issue), remove by device and
//! by user, tick (rotation, replenish, self-update; the designated committer's commit of a
//! pending leave), the key package calls, leaving a group alone, and reopening a store with
//! groups. `cargo test -p core_mls --test fault_injection -- --nocapture` prints how many
//! calls of each kind every operation makes and how long its sweep took.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fault_injection/view.rs"]
mod view;
#[path = "fault_injection/world.rs"]
mod world;

use std::time::Duration;

use core_mls::{Disposition, EnvelopeKind, ErrorKind, Event, MlsClient, Output};
use spacepanda_core::{Clock as _, FailPoint};
use view::{envelope, has_event, kinds, shape};
use world::{World, dump, store_from};

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;

fn epoch_advanced(output: &Output) -> bool {
    has_event(output, |e| matches!(e, Event::EpochAdvanced { .. }))
}

#[test]
fn every_public_operation_fails_cleanly_at_every_storage_call() {
    run(false);
}

/// The same, with a store that keeps failing from the n-th call on (a reload after the
/// rollback fails too): the operation still writes nothing, and the next one after the store
/// heals finds memory and storage in agreement.
#[test]
fn every_public_operation_fails_cleanly_when_the_store_stays_broken() {
    run(true);
}

fn run(sticky: bool) {
    let mut w = World::new(&["alice", "bob", "carol"]);
    w.sticky = sticky;
    w.sweep_open(ALICE, "open (new store)");
    w.open(BOB);
    w.open(CAROL);

    // ---- a group of three ------------------------------------------------------------------
    w.sweep(
        ALICE,
        "create_group",
        MlsClient::create_group,
        |client, group| {
            assert_eq!(client.groups(), vec![group.clone()]);
        },
    );
    let group = w.client(ALICE).groups()[0].clone();
    let g = group.clone();

    let (bob_ref, bob_package) = w.key_package(BOB, 0);
    w.sweep(
        BOB,
        "mark_key_packages_published",
        |c| c.mark_key_packages_published(std::slice::from_ref(&bob_ref)),
        |_, changed| assert_eq!(*changed, 1),
    );
    let added_bob = w.sweep(
        ALICE,
        "add_members (Welcome only)",
        |c| c.add_members(&g, std::slice::from_ref(&bob_package)),
        |_, out| assert_eq!(kinds(out), [EnvelopeKind::Welcome], "{}", shape(out)),
    );
    w.ack(ALICE, &added_bob);
    let welcome = envelope(&added_bob, EnvelopeKind::Welcome);
    let joined = w.sweep(
        BOB,
        "handle_envelope: Welcome",
        |c| c.handle_envelope(&welcome),
        |c, out| {
            assert!(has_event(out, |e| matches!(e, Event::Joined { .. })));
            assert_eq!(c.groups().len(), 1);
        },
    );
    w.ack(BOB, &joined);

    let (_, carol_package) = w.key_package(CAROL, 0);
    let (unused_ref, _) = w.key_package(CAROL, 1);
    w.sweep(
        CAROL,
        "mark_key_packages_claimed",
        |c| c.mark_key_packages_claimed(std::slice::from_ref(&unused_ref)),
        |_, changed| assert_eq!(*changed, 1),
    );
    let added_carol = w.sweep(
        ALICE,
        "add_members (commit + Welcome)",
        |c| c.add_members(&g, std::slice::from_ref(&carol_package)),
        |_, out| {
            assert_eq!(
                kinds(out),
                [EnvelopeKind::Commit, EnvelopeKind::Welcome],
                "{}",
                shape(out)
            );
        },
    );
    w.ack(ALICE, &added_carol);
    let commit = envelope(&added_carol, EnvelopeKind::Commit);
    let processed = w.sweep(
        BOB,
        "handle_envelope: commit (add)",
        |c| c.handle_envelope(&commit),
        |_, out| assert!(has_event(out, |e| matches!(e, Event::MembersAdded { .. }))),
    );
    w.ack(BOB, &processed);
    let welcome = envelope(&added_carol, EnvelopeKind::Welcome);
    w.handle(CAROL, &welcome);

    // ---- messages and acknowledgements -------------------------------------------------------
    let sent = w.sweep(
        ALICE,
        "send",
        |c| c.send(&g, b"hello"),
        |_, out| assert_eq!(shape(out), r#"Processed ["MessageSent"] ["Applicationx2"]"#),
    );
    let message = envelope(&sent, EnvelopeKind::Application);
    let received = w.sweep(
        BOB,
        "handle_envelope: application message",
        |c| c.handle_envelope(&message),
        |c, out| {
            assert!(has_event(
                out,
                |e| matches!(e, Event::Message { body, .. } if body == b"hello")
            ));
            assert_eq!(c.pending_delivered().unwrap().len(), 1);
        },
    );
    let delivery = match &received.events[..] {
        [Event::Message { delivery, .. }] => *delivery,
        other => panic!("{other:?}"),
    };
    w.sweep(
        BOB,
        "ack_delivered",
        |c| c.ack_delivered(delivery),
        |c, acked| {
            assert!(*acked);
            assert!(c.pending_delivered().unwrap().is_empty());
        },
    );
    w.handle(CAROL, &message);
    let outbox_id = sent.outbound[0].id;
    w.sweep(
        ALICE,
        "ack_sent",
        |c| c.ack_sent(outbox_id),
        |c, acked| {
            assert!(*acked);
            assert!(c.pending_outbound().unwrap().is_empty());
        },
    );

    // ---- a batch of envelopes (a mailbox fetch), one of them junk ----------------------------
    let first = w.client(ALICE).send(&g, b"one").unwrap();
    w.ack(ALICE, &first);
    let second = w.client(ALICE).send(&g, b"two").unwrap();
    w.ack(ALICE, &second);
    let first = envelope(&first, EnvelopeKind::Application);
    let second = envelope(&second, EnvelopeKind::Application);
    let junk = b"not an envelope".to_vec();
    let batch = w.sweep(
        BOB,
        "handle_envelopes: two messages and junk",
        |c| c.handle_envelopes(&[&first, &junk, &second]),
        |c, results| {
            assert_eq!(results.len(), 3);
            let body = |i: usize| match results[i].as_ref().map(|o| &o.events[..]) {
                Ok([Event::Message { body, .. }]) => body.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(body(0), b"one");
            assert!(
                results[1]
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::PeerInput)
            );
            assert_eq!(body(2), b"two");
            assert_eq!(c.pending_delivered().unwrap().len(), 2);
        },
    );
    let deliveries: Vec<_> = batch
        .iter()
        .flatten()
        .flat_map(|o| &o.events)
        .filter_map(|e| match e {
            Event::Message { delivery, .. } => Some(*delivery),
            _ => None,
        })
        .collect();
    w.sweep(
        BOB,
        "ack_delivered_all",
        |c| c.ack_delivered_all(&deliveries),
        |c, acked| {
            assert_eq!(*acked, 2);
            assert!(c.pending_delivered().unwrap().is_empty());
        },
    );
    w.handle(CAROL, &first);
    w.handle(CAROL, &second);

    // ---- a commit, and a message of its epoch that overtakes it ------------------------------
    let updated = w.sweep(
        ALICE,
        "self_update",
        |c| c.self_update(&g),
        |_, out| {
            assert_eq!(kinds(out), [EnvelopeKind::Commit]);
            assert!(epoch_advanced(out));
        },
    );
    w.ack(ALICE, &updated);
    let commit = envelope(&updated, EnvelopeKind::Commit);
    let early = w.client(ALICE).send(&g, b"from the next epoch").unwrap();
    w.ack(ALICE, &early);
    let early = envelope(&early, EnvelopeKind::Application);
    w.sweep(
        BOB,
        "handle_envelope: message of a future epoch (buffered)",
        |c| c.handle_envelope(&early),
        |_, out| assert_eq!(out.disposition, Disposition::Buffered),
    );
    let replayed = w.sweep(
        BOB,
        "handle_envelope: commit that replays a buffered message",
        |c| c.handle_envelope(&commit),
        |_, out| {
            assert!(epoch_advanced(out));
            assert!(
                has_event(out, |e| matches!(e, Event::Message { .. })),
                "{}",
                shape(out)
            );
        },
    );
    w.ack(BOB, &replayed);
    w.handle(CAROL, &commit);
    w.handle(CAROL, &early);

    // ---- a leave: proposals, a deferred send, a send with a due commit ------------------------
    let left = w.sweep(
        CAROL,
        "leave_group",
        |c| c.leave_group(&g),
        |_, out| assert_eq!(kinds(out), [EnvelopeKind::Proposal]),
    );
    w.ack(CAROL, &left);
    let proposal = envelope(&left, EnvelopeKind::Proposal);
    let proposed = w.sweep(
        BOB,
        "handle_envelope: proposal",
        |c| c.handle_envelope(&proposal),
        |_, out| assert!(has_event(out, |e| matches!(e, Event::LeaveProposed { .. }))),
    );
    w.ack(BOB, &proposed);
    w.sweep(
        BOB,
        "send (deferred: not the designated committer)",
        |c| c.send(&g, b"deferred"),
        |c, out| {
            assert_eq!(shape(out), r#"Processed ["MessageSent"] []"#);
            assert_eq!(c.pending_deferred_sends(&g).unwrap(), 1);
        },
    );
    w.handle(ALICE, &proposal);
    let committed = w.sweep(
        ALICE,
        "send (with a due commit: designated committer)",
        |c| c.send(&g, b"after the leave"),
        |c, out| {
            assert_eq!(
                kinds(out),
                [EnvelopeKind::Commit, EnvelopeKind::Application],
                "{}",
                shape(out)
            );
            assert_eq!(c.members(&g).unwrap().len(), 2);
        },
    );
    w.ack(ALICE, &committed);
    let commit = envelope(&committed, EnvelopeKind::Commit);
    let released = w.sweep(
        BOB,
        "handle_envelope: commit that releases a deferred send",
        |c| c.handle_envelope(&commit),
        |c, out| {
            assert_eq!(kinds(out), [EnvelopeKind::Application], "{}", shape(out));
            assert_eq!(c.pending_deferred_sends(&g).unwrap(), 0);
        },
    );
    w.ack(BOB, &released);
    w.deliver(&committed, &[BOB, CAROL]);
    w.deliver(&released, &[ALICE]);

    // ---- concurrent commits: the loser rolls back and re-issues ------------------------------
    let ours = w.client(ALICE).self_update(&g).unwrap();
    w.ack(ALICE, &ours);
    let theirs = w.client(BOB).self_update(&g).unwrap();
    w.ack(BOB, &theirs);
    let alice_commit = envelope(&ours, EnvelopeKind::Commit);
    let bob_commit = envelope(&theirs, EnvelopeKind::Commit);
    // Which commit wins follows from the commit refs: ask a copy of alice.
    let probe_store = store_from(&dump(&w.devices[ALICE].store));
    let mut probe = w.open_on(ALICE, &probe_store).unwrap();
    let alice_loses =
        probe.handle_envelope(&bob_commit).unwrap().disposition != Disposition::Superseded;
    let (loser, winner_commit, loser_commit, winner) = if alice_loses {
        (ALICE, bob_commit, alice_commit, BOB)
    } else {
        (BOB, alice_commit, bob_commit, ALICE)
    };
    let reissued = w.sweep(
        loser,
        "handle_envelope: competing commit (rollback + re-issue)",
        |c| c.handle_envelope(&winner_commit),
        |_, out| {
            assert!(
                has_event(out, |e| matches!(
                    e,
                    Event::CommitSuperseded {
                        reissued_commits: 1,
                        ..
                    }
                )),
                "{}",
                shape(out)
            );
            assert_eq!(kinds(out), [EnvelopeKind::Commit], "{}", shape(out));
        },
    );
    w.ack(loser, &reissued);
    assert_eq!(
        w.handle(winner, &loser_commit).disposition,
        Disposition::Superseded
    );
    w.deliver(&reissued, &[winner]);
    assert_eq!(
        w.client(ALICE).epoch_authenticator(&g).unwrap(),
        w.client(BOB).epoch_authenticator(&g).unwrap()
    );

    // ---- removals ----------------------------------------------------------------------------
    for (round, by_user) in [false, true].into_iter().enumerate() {
        let (_, package) = w.key_package(CAROL, 2 + round);
        let added = w.client(ALICE).add_members(&g, &[package]).unwrap();
        w.ack(ALICE, &added);
        w.deliver(&added, &[BOB, CAROL]);
        let carol = w.address(CAROL);
        let name = if by_user {
            "remove_user"
        } else {
            "remove_device"
        };
        let removed = w.sweep(
            ALICE,
            name,
            |c| {
                if by_user {
                    c.remove_user(&g, &carol.user_id)
                } else {
                    c.remove_device(&g, &carol.user_id, &carol.device_id)
                }
            },
            |c, out| {
                assert!(has_event(out, |e| matches!(
                    e,
                    Event::MembersRemoved { .. }
                )));
                assert_eq!(c.members(&g).unwrap().len(), 2);
            },
        );
        w.ack(ALICE, &removed);
        w.deliver(&removed, &[BOB, CAROL]);
    }

    // ---- time-driven policy ----------------------------------------------------------------
    w.clock.advance(Duration::from_secs(8 * 24 * 60 * 60));
    let now = w.clock.now();
    let ticked = w.sweep(
        ALICE,
        "tick (rotation, replenish, self-update due)",
        |c| c.tick(now),
        |_, out| {
            assert!(has_event(out, |e| matches!(
                e,
                Event::KeyPackagesReplenished { .. }
            )));
            assert_eq!(kinds(out), [EnvelopeKind::Commit], "{}", shape(out));
        },
    );
    w.ack(ALICE, &ticked);
    w.deliver(&ticked, &[BOB]);
    // Bob's tick rotates too and would self-update: do it now, without faults, so that the
    // leave below is the only pending change.
    let bob_ticked = w.client(BOB).tick(now).unwrap();
    w.ack(BOB, &bob_ticked);
    w.deliver(&bob_ticked, &[ALICE]);

    let leaving = w.client(BOB).leave_group(&g).unwrap();
    w.ack(BOB, &leaving);
    w.deliver(&leaving, &[ALICE]);
    let later = w.clock.now();
    let committed = w.sweep(
        ALICE,
        "tick (designated committer commits a pending leave)",
        |c| c.tick(later),
        |c, out| {
            assert_eq!(kinds(out), [EnvelopeKind::Commit], "{}", shape(out));
            assert_eq!(c.members(&g).unwrap().len(), 1);
        },
    );
    w.ack(ALICE, &committed);
    w.deliver(&committed, &[BOB]);

    // ---- key packages ----------------------------------------------------------------------
    let offered: Vec<Vec<u8>> = w
        .client(ALICE)
        .publishable_key_packages()
        .unwrap()
        .into_iter()
        .filter(|p| !p.last_resort)
        .map(|p| p.key_package_ref)
        .take(28)
        .collect();
    w.sweep(
        ALICE,
        "mark_key_packages_claimed (28 packages)",
        |c| c.mark_key_packages_claimed(&offered),
        |_, changed| assert_eq!(*changed, 28),
    );
    // Opening refills the pool, so every run claims what the new client offers first.
    let claim_most = |c: &mut MlsClient| {
        let refs: Vec<Vec<u8>> = c
            .publishable_key_packages()
            .unwrap()
            .into_iter()
            .filter(|p| !p.last_resort)
            .map(|p| p.key_package_ref)
            .take(28)
            .collect();
        assert_eq!(c.mark_key_packages_claimed(&refs).unwrap(), 28);
    };
    w.sweep_after(
        ALICE,
        "replenish_key_packages (pool below the watermark)",
        claim_most,
        MlsClient::replenish_key_packages,
        |_, made| assert_eq!(*made, 28),
    );

    // ---- leaving a group alone, reopening ----------------------------------------------------
    let alone = w.client(ALICE).create_group().unwrap();
    w.sweep(
        ALICE,
        "leave_group (alone)",
        |c| c.leave_group(&alone),
        |c, out| {
            assert!(has_event(out, |e| matches!(
                e,
                Event::RemovedFromGroup { .. }
            )));
            assert!(!c.groups().contains(&alone));
        },
    );
    w.sweep_open(ALICE, "open (store with a group)");
    assert_eq!(w.client(ALICE).groups(), vec![group]);

    w.print_reports();
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    if sticky {
        // The broken store also failed the reload after the rollback, and the next operation
        // repaired memory: the path was taken, not just allowed.
        println!(
            "{} failing runs left groups out of memory until the next operation",
            w.dropped_until_next_operation
        );
        assert!(w.dropped_until_next_operation > 0);
    }
}

/// The cases the issue names, as crashes: the operation's one write fails (the process dies
/// before it lands), the device reopens from its store, and the same input comes again. A send
/// whose due commit was made must not leave that commit behind; a deferred message must go out
/// once, neither lost nor twice.
#[test]
fn a_crash_at_the_write_of_a_send_or_of_a_release_loses_and_doubles_nothing() {
    let mut w = World::new(&["alice", "bob", "carol"]);
    for device in [ALICE, BOB, CAROL] {
        w.open(device);
    }
    let g = w.client(ALICE).create_group().unwrap();
    for device in [BOB, CAROL] {
        let (_, package) = w.key_package(device, 0);
        let added = w.client(ALICE).add_members(&g, &[package]).unwrap();
        w.ack(ALICE, &added);
        w.deliver(&added, &[BOB, CAROL]);
    }
    let left = w.client(CAROL).leave_group(&g).unwrap();
    w.ack(CAROL, &left);
    w.deliver(&left, &[ALICE, BOB]);
    let deferred = w.client(BOB).send(&g, b"deferred").unwrap();
    assert!(deferred.outbound.is_empty());
    let epoch = w.client(ALICE).epoch(&g).unwrap();

    // Alice, the designated committer, sends: the commit and the message. Whichever of its
    // writes fails, the restarted device has neither.
    let committed = crash_at_every_write(
        &mut w,
        ALICE,
        |c| c.send(&g, b"after the leave"),
        |c| {
            assert_eq!(c.epoch(&g).unwrap(), epoch, "the commit was left behind");
            assert_eq!(c.members(&g).unwrap().len(), 3);
            assert!(c.pending_outbound().unwrap().is_empty());
        },
    );
    assert_eq!(
        kinds(&committed),
        [EnvelopeKind::Commit, EnvelopeKind::Application]
    );
    w.ack(ALICE, &committed);
    let commit = envelope(&committed, EnvelopeKind::Commit);

    // Bob's processing of that commit releases his deferred message: whichever write fails,
    // the restarted device still holds it, unsent.
    let released = crash_at_every_write(
        &mut w,
        BOB,
        |c| c.handle_envelope(&commit),
        |c| {
            assert_eq!(c.epoch(&g).unwrap(), epoch);
            assert_eq!(c.pending_deferred_sends(&g).unwrap(), 1);
            assert!(c.pending_outbound().unwrap().is_empty());
        },
    );
    assert_eq!(kinds(&released), [EnvelopeKind::Application]);
    w.ack(BOB, &released);
    w.reopen(BOB);
    assert_eq!(w.client(BOB).pending_deferred_sends(&g).unwrap(), 0);

    // Alice gets bob's deferred message exactly once, also when the network repeats it.
    let message = envelope(&released, EnvelopeKind::Application);
    let got = w.handle(ALICE, &message);
    assert!(has_event(
        &got,
        |e| matches!(e, Event::Message { body, .. } if body == b"deferred")
    ));
    assert_eq!(
        w.handle(ALICE, &message).disposition,
        Disposition::Duplicate
    );
}

/// Runs `op` on `device` with its n-th write failing, for n = 1, 2, … : after each failure the
/// device restarts from its store and `after_crash` checks it; returns the output of the first
/// run that made all its writes. Counting writes, not assuming one, is what makes this a test
/// of the old two-transaction send too.
fn crash_at_every_write(
    w: &mut World,
    device: usize,
    op: impl Fn(&mut MlsClient) -> Result<Output, core_mls::MlsError>,
    after_crash: impl Fn(&mut MlsClient),
) -> Output {
    for n in 1..100 {
        w.devices[device].store.fail_at(FailPoint::Apply(n));
        let result = op(w.client(device));
        w.devices[device].store.disarm();
        if w.devices[device].store.faults_injected() == 0 {
            return result.unwrap();
        }
        assert_eq!(result.unwrap_err().kind(), ErrorKind::LocalStorage);
        w.reopen(device);
        after_crash(w.client(device));
    }
    panic!("more than 99 writes");
}
