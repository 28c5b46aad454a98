//! The front door: arbitrary bytes through `Envelope::from_bytes`, then `handle_envelope` on a
//! fresh client (key package pool only) and on a group member. Decoding is canonical (an
//! accepted envelope re-encodes to the same bytes); every rejection is a peer error.
#![no_main]

use std::sync::LazyLock;

use core_mls::Envelope;
use libfuzzer_sys::fuzz_target;
use spacepanda_fuzz::{
    Device, DeviceState, FIXTURE, check_peer_error, max_envelope_len, splice_group_id,
};

static FRESH: LazyLock<DeviceState> = LazyLock::new(|| Device::new("fresh").state());

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    if let Ok(envelope) = Envelope::from_bytes(bytes, max_envelope_len()) {
        assert_eq!(
            envelope.to_bytes(),
            bytes,
            "envelope decoding is not canonical"
        );
        assert_eq!(envelope.encoded_len(), bytes.len());
    }
    let fresh = selector & 1 == 0;
    let mut client = if fresh {
        FRESH.open()
    } else {
        FIXTURE.bob.open()
    };
    let mut bytes = bytes.to_vec();
    if selector & 2 != 0 && bytes.len() > 7 {
        // Envelope header is 7 bytes; aim the payload at the fixture's group.
        splice_group_id(&mut bytes[7..], FIXTURE.group_id_bytes());
    }
    let groups_before = client.groups();
    match client.handle_envelope(&bytes) {
        Ok(_) => {}
        Err(error) => {
            check_peer_error(&error);
            assert_eq!(client.groups(), groups_before);
        }
    }
});
