//! Welcomes: dave, outside the group with a published key package pool, receives the real
//! Welcome that adds him, edited by the fuzzer — or arbitrary bytes as the payload (wrapped as
//! a Welcome envelope) or as the whole envelope. A rejection is a peer error and must not burn
//! the key package: the genuine Welcome still joins, into the genuine epoch. An accepted edited
//! Welcome must land in that same epoch (anything else is a forged join).
#![no_main]

use core_mls::{EnvelopeKind, Event};
use libfuzzer_sys::fuzz_target;
use spacepanda_fuzz::{FIXTURE, Input, check_peer_error};

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let add = fx.commits.iter().find(|c| c.welcome.is_some()).unwrap();
    let genuine = fx.welcome();
    let bases = [genuine];
    let Some(input) = Input::parse(data, bases.len()) else {
        return;
    };
    let bytes = input.envelope_bytes(&bases, EnvelopeKind::Welcome, fx.group_id_bytes());
    let group = &fx.group;
    let (mut dave, store) = fx.dave.open_with_store();
    let pool_before = dave.publishable_key_packages().unwrap().len();

    match dave.handle_envelope(&bytes) {
        Ok(output) => {
            for event in &output.events {
                if let Event::Joined { group: joined, .. } = event {
                    assert_eq!(joined, group, "an edited Welcome joined another group");
                    assert_eq!(
                        dave.epoch_authenticator(group).unwrap(),
                        add.authenticator_after,
                        "an edited Welcome joined into an epoch the group never had"
                    );
                }
            }
            if dave.groups().contains(group) {
                return;
            }
        }
        Err(error) => {
            check_peer_error(&error);
            assert!(
                dave.groups().is_empty(),
                "a rejected Welcome left a group behind"
            );
            assert_eq!(
                dave.publishable_key_packages().unwrap().len(),
                pool_before,
                "a rejected Welcome changed the key package pool"
            );
            assert!(
                store.dump().unwrap() == fx.dave.snapshot,
                "a rejected Welcome changed the store"
            );
        }
    }
    let output = dave
        .handle_envelope(genuine)
        .unwrap_or_else(|e| panic!("the genuine Welcome failed after an edited one: {e}"));
    assert!(
        output
            .events
            .iter()
            .any(|e| matches!(e, Event::Joined { .. }))
    );
    assert_eq!(
        dave.epoch_authenticator(group).unwrap(),
        add.authenticator_after
    );
});
