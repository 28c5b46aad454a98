//! No silent states: every input the engine will never act on, and everything it will never
//! deliver or send, ends in an event (or a typed error that says what it is). Each test builds
//! one state an independent MLS client (mls-rs) or our own devices put the engine in, and shows
//! the event. The independent client here is OpenMLS driven directly (`raw_peer`), which can
//! send what the engine never sends: a standalone Add proposal, arbitrary authenticated data.
//! The same states with mls-rs itself are in `benches/tests/mls_rs_interop.rs`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;
mod raw_peer;

use std::sync::Arc;
use std::time::Duration;

use core_identity::IdentityError;
use core_mls::{
    AbandonReason, Disposition, Envelope, EnvelopeKind, Event, GroupId, MessageId, MlsConfig,
    MlsError, Output, OwnChange,
};
use engine_harness::Harness;
use raw_peer::RawPeer;
use spacepanda_core::{Clock, Timestamp};

fn welcome_in(output: &Output) -> Vec<u8> {
    output
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == EnvelopeKind::Welcome)
        .expect("no Welcome")
        .envelope
        .to_bytes()
}

fn id_of(envelope: &[u8]) -> core_mls::EnvelopeId {
    Envelope::from_bytes(envelope, usize::MAX).unwrap().id()
}

fn abandoned(output: &Output) -> Vec<(GroupId, u64, core_mls::EnvelopeId, AbandonReason)> {
    output
        .events
        .iter()
        .filter_map(|e| match e {
            Event::CommitAbandoned {
                group,
                epoch,
                commit,
                reason,
            } => Some((group.clone(), *epoch, *commit, *reason)),
            _ => None,
        })
        .collect()
}

/// Alice's group with a raw OpenMLS member; `others` are added too.
fn group_with_raw_peer(h: &mut Harness, others: &[usize]) -> (GroupId, RawPeer) {
    let clock: Arc<dyn Clock> = Arc::new(h.clock.clone());
    let mut raw = RawPeer::spacepanda("rita", clock);
    let group = if others.is_empty() {
        h.nodes[0].client().create_group().unwrap()
    } else {
        h.group_with(0, others)
    };
    let package = raw.key_package(h.clock.now());
    let g = group.clone();
    let added = h.run(0, move |c| c.add_members(&g, &[package]));
    h.deliver_all();
    raw.join(&welcome_in(&added));
    (group, raw)
}

#[test]
fn a_commit_of_a_refused_standalone_add_proposal_is_abandoned_at_the_next_tick() {
    for proposal_first in [true, false] {
        let mut h = Harness::seeded(&["alice", "carol"], 11, MlsConfig::default());
        let (group, mut raw) = group_with_raw_peer(&mut h, &[]);
        let epoch = h.nodes[0].client().epoch(&group).unwrap();
        assert_eq!(raw.epoch(), epoch);
        let carol_package = h.key_package(1);
        let proposal = raw.propose_add(&carol_package);
        let commit = raw.commit_pending();

        let refuse = |h: &mut Harness| {
            let error = h.handle(0, &proposal).unwrap_err();
            assert!(error.contains("only Remove and Update"), "{error}");
        };
        if proposal_first {
            refuse(&mut h);
            assert_eq!(h.handle(0, &commit), Ok(Disposition::Buffered));
        } else {
            assert_eq!(h.handle(0, &commit), Ok(Disposition::Buffered));
            refuse(&mut h);
        }

        // The engine knows it refused what the commit needs: tick has work now, not in an hour.
        let now = h.clock.now();
        let deadline = h.nodes[0].client().next_deadline().unwrap().unwrap();
        assert!(deadline <= now, "deadline {deadline} after {now}");
        let ticked = h.run(0, move |c| c.tick(now));
        assert_eq!(
            abandoned(&ticked),
            vec![(
                group.clone(),
                epoch,
                id_of(&commit),
                AbandonReason::ProposalRefused
            )],
            "proposal first: {proposal_first}"
        );

        // Once: the commit is gone, a copy is a duplicate, the next tick has nothing to say.
        assert_eq!(h.handle(0, &commit), Ok(Disposition::Duplicate));
        let later = h.nodes[0].client().next_deadline().unwrap().unwrap();
        assert!(later > now);
        let ticked = h.run(0, move |c| c.tick(now));
        assert!(abandoned(&ticked).is_empty());
        assert_eq!(h.nodes[0].client().epoch(&group).unwrap(), epoch);
        h.assert_group_works(&group, 0, &[]);
    }
}

#[test]
fn a_commit_whose_proposal_never_arrives_is_abandoned_after_commit_proposal_wait() {
    let config = MlsConfig::default();
    let wait = config.commit_proposal_wait;
    let mut h = Harness::seeded(&["alice", "bob", "carol"], 12, config);
    let group = h.group_with(0, &[1, 2]);
    let g = group.clone();
    h.run(2, move |c| c.leave_group(&g));
    // Carol's leave reaches alice only.
    let inboxes = h.take_inboxes();
    let proposal = inboxes[0][0].clone();
    assert_eq!(h.handle(0, &proposal), Ok(Disposition::Processed));
    let now = h.clock.now();
    h.run(0, move |c| c.tick(now)); // alice, the designated committer, commits the leave
    let inboxes = h.take_inboxes();
    let commit = inboxes[1][0].clone();
    let epoch = h.nodes[1].client().epoch(&group).unwrap();
    assert_eq!(h.handle(1, &commit), Ok(Disposition::Buffered));

    let deadline = h.nodes[1].client().next_deadline().unwrap().unwrap();
    assert_eq!(deadline, now.saturating_add(wait));
    h.clock
        .set(deadline.saturating_sub(Duration::from_millis(1)));
    let early = h.clock.now();
    let ticked = h.run(1, move |c| c.tick(early));
    assert!(abandoned(&ticked).is_empty(), "{ticked:?}");
    h.clock.set(deadline);
    let ticked = h.run(1, move |c| c.tick(deadline));
    assert_eq!(
        abandoned(&ticked),
        vec![(
            group.clone(),
            epoch,
            id_of(&commit),
            AbandonReason::ProposalMissing
        )]
    );
    assert_eq!(h.nodes[1].client().epoch(&group).unwrap(), epoch);

    // Not recorded as seen: delivered again with its proposal, the commit still applies.
    assert_eq!(h.handle(1, &proposal), Ok(Disposition::Processed));
    assert_eq!(h.handle(1, &commit), Ok(Disposition::Processed));
    h.assert_converged(&group, &[0, 1]);
}

#[test]
fn an_application_message_whose_authenticated_data_is_not_our_tag_is_delivered() {
    let mut h = Harness::seeded(&["alice"], 13, MlsConfig::default());
    let (_group, mut raw) = group_with_raw_peer(&mut h, &[]);
    let not_ours: [&[u8]; 5] = [
        &[0x42; 16],                 // 16 bytes, as mls-rs sent
        &[],                         // none
        &[0x07; 32],                 // another length
        b"SPbt\x02abcdefghijklmnop", // our magic, unknown version
        b"XXbt\x01abcdefghijklmnop", // our length, other magic
    ];
    for (index, aad) in not_ours.into_iter().enumerate() {
        let id = [index as u8 + 1; 16];
        let message = raw.application(aad, id, h.clock.now(), b"from another client");
        assert_eq!(
            h.handle(0, &message),
            Ok(Disposition::Processed),
            "aad {aad:?}"
        );
        assert_eq!(h.copies(0, &MessageId(id)), 1, "aad {aad:?}");
    }
    // A tag of ours that is not our branch's is still recognised as another branch's.
    let other_branch = raw.application(
        b"SPbt\x01abcdefghijklmnop",
        [9; 16],
        h.clock.now(),
        b"other branch",
    );
    assert_eq!(h.handle(0, &other_branch), Ok(Disposition::Buffered));
    assert_eq!(h.copies(0, &MessageId([9; 16])), 0);
}

#[test]
fn a_key_package_with_another_applications_credential_is_named_as_such() {
    let mut h = Harness::seeded(&["alice"], 14, MlsConfig::default());
    let group = h.nodes[0].client().create_group().unwrap();
    // Its identity's first two bytes ("pl") read as version 28780.
    let package = RawPeer::foreign(b"player-1").key_package(h.clock.now());
    let error = h.nodes[0]
        .client()
        .add_members(&group, &[package])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            MlsError::UnverifiedMember {
                reason: IdentityError::NotSpacePandaCredential { .. }
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("not a SpacePanda credential"), "{text}");
    assert!(
        !text.contains("28780") && !text.contains("upgrade"),
        "{text}"
    );
    assert!(error.is_peer_input());
}

/// Ticks `node` at every deadline up to `until`; the events of each tick, with its time.
fn drive(h: &mut Harness, node: usize, until: Timestamp) -> Vec<(Timestamp, Event)> {
    let mut seen = Vec::new();
    while let Some(deadline) = h.nodes[node].client().next_deadline().unwrap() {
        if deadline > until {
            break;
        }
        let now = deadline.max(h.clock.now());
        h.clock.set(now);
        let output = h.run(node, move |c| c.tick(now));
        seen.extend(output.events.into_iter().map(|e| (now, e)));
        let next = h.nodes[node].client().next_deadline().unwrap();
        assert!(
            next.is_none_or(|next| next > now),
            "tick at {now} left work due"
        );
    }
    seen
}

#[test]
fn messages_waiting_for_a_group_this_device_was_removed_from_end_in_messages_not_sent() {
    let config = MlsConfig::default();
    let fork_window = config.fork_window;
    let mut h = Harness::seeded(&["alice", "bob", "carol"], 15, config);
    let group = h.group_with(0, &[1, 2]);
    let g = group.clone();
    h.run(2, move |c| c.leave_group(&g));
    h.deliver_all();
    // Bob is not the designated committer: his message waits for alice's commit.
    let g = group.clone();
    let sent = h.run(1, move |c| c.send(&g, b"never sent"));
    let id = Harness::sent_id(&sent);
    assert_eq!(
        h.nodes[1].client().pending_deferred_sends(&group).unwrap(),
        1
    );
    // Alice removes bob instead.
    let bob = h.nodes[1].identity.clone();
    let g = group.clone();
    h.run(0, move |c| {
        c.remove_device(&g, &bob.user_id(), &bob.device_id())
    });
    h.deliver_all();
    assert!(h.nodes[1].removed_from(&group));
    let removed_at = h.clock.now();

    let events = drive(&mut h, 1, removed_at.saturating_add(fork_window * 2));
    let not_sent: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::MessagesNotSent { .. }))
        .collect();
    assert_eq!(
        not_sent,
        vec![&(
            removed_at.saturating_add(fork_window),
            Event::MessagesNotSent {
                group: group.clone(),
                message_ids: vec![id]
            }
        )],
        "while a snapshot could restore the group the message waits, then it is reported once"
    );
}

#[test]
fn an_own_commit_that_cannot_be_made_again_ends_in_commit_not_reissued() {
    for seed in 0..24 {
        let mut h = Harness::seeded(&["alice", "bob", "carol"], 200 + seed, MlsConfig::default());
        let group = h.group_with(0, &[1, 2]);
        // In one epoch: alice updates her leaf, bob removes alice.
        let g = group.clone();
        h.run(0, move |c| c.self_update(&g));
        let alice = h.nodes[0].identity.clone();
        let g = group.clone();
        h.run(1, move |c| {
            c.remove_device(&g, &alice.user_id(), &alice.device_id())
        });
        h.deliver_all();
        if h.superseded(0) == 0 {
            continue; // alice's commit won: nothing of hers to re-issue
        }
        assert!(h.nodes[0].removed_from(&group));
        let now = h.clock.now();
        let deadline = h.nodes[0].client().next_deadline().unwrap().unwrap();
        assert!(deadline <= now, "the queued re-issue is work for tick now");
        let ticked = h.run(0, move |c| c.tick(now));
        let not_reissued: Vec<_> = ticked
            .events
            .iter()
            .filter_map(|e| match e {
                Event::CommitNotReissued { group, change, .. } => Some((group.clone(), *change)),
                _ => None,
            })
            .collect();
        assert_eq!(not_reissued, vec![(group.clone(), OwnChange::SelfUpdate)]);
        let ticked = h.run(0, move |c| c.tick(now));
        assert!(
            !ticked
                .events
                .iter()
                .any(|e| matches!(e, Event::CommitNotReissued { .. })),
            "reported once"
        );
        return;
    }
    panic!("bob's removal never won");
}
