//! Application messages: bob, a member of a live group, receives a real application message
//! (alice's, carol's, out of order, from the previous epoch, large) edited by the fuzzer — or
//! arbitrary bytes as the payload or the whole envelope. A rejection is a peer error and
//! changes nothing; an accepted message must carry the genuine body; afterwards the genuine
//! message still decrypts (or is a duplicate of the accepted one) and bob can send.
#![no_main]

use core_mls::{Disposition, EnvelopeKind};
use libfuzzer_sys::fuzz_target;
use spacepanda_fuzz::{FIXTURE, Input, check_peer_error, message_body};

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let bases: Vec<&[u8]> = fx.applications.iter().map(|(e, _)| e.as_slice()).collect();
    let Some(input) = Input::parse(data, bases.len()) else {
        return;
    };
    let (genuine, body) = match &input {
        Input::Edit { base, .. } => &fx.applications[*base],
        _ => &fx.applications[0],
    };
    let bytes = input.envelope_bytes(&bases, EnvelopeKind::Application, fx.group_id_bytes());
    let group = &fx.group;
    let (mut bob, store) = fx.bob.open_with_store();

    let mut delivered = false;
    match bob.handle_envelope(&bytes) {
        Ok(output) => {
            if let Some(got) = message_body(&output) {
                assert!(
                    fx.applications.iter().any(|(_, b)| b.as_slice() == got),
                    "an edited application message decrypted to a body nobody sent"
                );
                delivered = got == body.as_slice();
            }
        }
        Err(error) => {
            check_peer_error(&error);
            assert!(
                store.dump().unwrap() == fx.bob.snapshot,
                "a rejected message changed the store"
            );
        }
    }
    assert_eq!(bob.epoch_authenticator(group).unwrap(), fx.authenticator);

    let output = bob
        .handle_envelope(genuine)
        .unwrap_or_else(|e| panic!("the genuine message failed after an edited one: {e}"));
    if delivered {
        assert!(message_body(&output).is_none(), "delivered twice");
    } else if output.disposition == Disposition::Processed {
        assert_eq!(message_body(&output), Some(body.as_slice()));
    }
    bob.send(group, b"still alive").expect("bob can send");
});
