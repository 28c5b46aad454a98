//! Stateful commit processing: bob, a member of a live 3-member group, receives a real commit
//! (update, add, remove carol, remove bob, update by another leaf) edited by the fuzzer — or
//! arbitrary bytes as the payload or the whole envelope. Whatever happens:
//! - a rejection is a peer error (`check_peer_error`) and leaves bob's epoch untouched;
//! - an accepted commit must be the genuine one (same epoch authenticator) — anything else is
//!   a forgery getting through;
//! - afterwards bob still works: a message he sends decrypts at another member, and the
//!   genuine commit still processes (then his next message decrypts at the committer).
//!
//! Each input starts bob (and the receivers) from byte-identical snapshots. Speed: a rejected
//! input must leave bob's store byte-identical to the snapshot (checked); bob then processes
//! the genuine commit (checked). The send-and-decrypt checks, which for an untouched store
//! would repeat a computation whose result the fixture already established, run only when the
//! input changed bob's store or was accepted — that keeps the target above 100 execs/s.
#![no_main]

use core_mls::{Disposition, EnvelopeKind, Event};
use libfuzzer_sys::fuzz_target;
use spacepanda_fuzz::{FIXTURE, Input, check_peer_error, message_body, one_envelope};

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let bases: Vec<&[u8]> = fx.commits.iter().map(|c| c.envelope.as_slice()).collect();
    let Some(input) = Input::parse(data, bases.len()) else {
        return;
    };
    // For raw inputs, the genuine commit checked afterwards is chosen by the last byte.
    let case = match &input {
        Input::Edit { base, .. } => &fx.commits[*base],
        _ => &fx.commits[usize::from(*data.last().unwrap()) % fx.commits.len()],
    };
    let bytes = input.envelope_bytes(&bases, EnvelopeKind::Commit, fx.group_id_bytes());
    let group = &fx.group;
    let (mut bob, store) = fx.bob.open_with_store();

    let accepted = match bob.handle_envelope(&bytes) {
        Ok(output) => {
            if output.disposition == Disposition::Processed {
                match bob.epoch_authenticator(group) {
                    Ok(after) => assert!(
                        after == fx.authenticator
                            || after == case.authenticator_after
                            || fx.commits.iter().any(|c| c.authenticator_after == after),
                        "an edited commit was accepted into an epoch no genuine commit makes"
                    ),
                    // Only a genuine "remove bob" may take bob out of the group.
                    Err(_) => assert!(
                        output
                            .events
                            .iter()
                            .any(|e| matches!(e, Event::RemovedFromGroup { .. }))
                            && fx.commits.iter().any(|c| c.removes_bob),
                    ),
                }
            }
            true
        }
        Err(error) => {
            check_peer_error(&error);
            assert_eq!(
                bob.epoch(group).unwrap(),
                fx.epoch,
                "rejected commit moved the epoch"
            );
            assert_eq!(bob.epoch_authenticator(group).unwrap(), fx.authenticator);
            assert!(
                store.dump().unwrap() == fx.bob.snapshot,
                "a rejected commit changed bob's store"
            );
            false
        }
    };
    let full_check = accepted;

    if bob.epoch(group).ok() != Some(fx.epoch) {
        // Accepted a (genuine-equivalent) commit: nothing more to compare in this epoch.
        return;
    }
    if full_check {
        // Bob still speaks in the current epoch: a receiver from before the commit decrypts.
        let receiver = if case.name == "update_by_carol" {
            &fx.alice
        } else {
            &fx.carol
        };
        let sent = bob
            .send(group, b"still alive")
            .expect("bob can send after a bad commit");
        let mut peer = receiver.open();
        let got = peer
            .handle_envelope(&one_envelope(&sent, EnvelopeKind::Application))
            .expect("a member decrypts bob's message after the bad commit");
        assert_eq!(message_body(&got), Some(&b"still alive"[..]));
    }

    // The genuine commit still processes.
    let output = bob.handle_envelope(&case.envelope).unwrap_or_else(|e| {
        panic!(
            "genuine commit {} failed after a bad one (accepted: {accepted}): {e}",
            case.name
        )
    });
    if case.removes_bob {
        assert!(
            output
                .events
                .iter()
                .any(|e| matches!(e, Event::RemovedFromGroup { .. }))
        );
        return;
    }
    assert_eq!(
        bob.epoch_authenticator(group).unwrap(),
        case.authenticator_after
    );
    if !full_check {
        return;
    }
    let sent = bob.send(group, b"next epoch").unwrap();
    let mut committer = case.committer_after.open();
    let got = committer
        .handle_envelope(&one_envelope(&sent, EnvelopeKind::Application))
        .expect("the committer decrypts bob's message in the new epoch");
    assert_eq!(message_body(&got), Some(&b"next epoch"[..]));
});
