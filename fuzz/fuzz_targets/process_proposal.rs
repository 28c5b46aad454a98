//! Standalone proposals: bob, a member of a live group, receives a real proposal (carol
//! leaves; alice leaves, which makes bob the designated committer) edited by the fuzzer — or
//! arbitrary bytes as the payload or the whole envelope. A rejection is a peer error and
//! leaves the epoch as it was; afterwards the genuine proposal still processes and bob can
//! send (committing pending proposals first when he must).
#![no_main]

use core_mls::EnvelopeKind;
use libfuzzer_sys::fuzz_target;
use spacepanda_fuzz::{FIXTURE, Input, check_peer_error};

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let bases: Vec<&[u8]> = fx.proposals.iter().map(Vec::as_slice).collect();
    let Some(input) = Input::parse(data, bases.len()) else {
        return;
    };
    let genuine = match &input {
        Input::Edit { base, .. } => &fx.proposals[*base],
        _ => &fx.proposals[usize::from(*data.last().unwrap()) % fx.proposals.len()],
    };
    let bytes = input.envelope_bytes(&bases, EnvelopeKind::Proposal, fx.group_id_bytes());
    let group = &fx.group;
    let (mut bob, store) = fx.bob.open_with_store();

    let accepted = match bob.handle_envelope(&bytes) {
        Ok(_) => true,
        Err(error) => {
            check_peer_error(&error);
            assert_eq!(
                bob.epoch(group).unwrap(),
                fx.epoch,
                "a rejected proposal moved the epoch"
            );
            assert_eq!(bob.epoch_authenticator(group).unwrap(), fx.authenticator);
            assert!(
                store.dump().unwrap() == fx.bob.snapshot,
                "a rejected proposal changed the store"
            );
            false
        }
    };
    if bob.epoch(group).ok() == Some(fx.epoch) {
        // The genuine proposal: processed, or refused because an equivalent one was accepted.
        match bob.handle_envelope(genuine) {
            Ok(_) => {}
            Err(error) if accepted => check_peer_error(&error),
            Err(error) => panic!("the genuine proposal failed after an edited one: {error}"),
        }
    }
    if bob.groups().contains(group) {
        bob.send(group, b"still alive")
            .expect("bob can send after proposals");
    }
});
