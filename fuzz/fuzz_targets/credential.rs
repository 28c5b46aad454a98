//! core_identity's decoding and binding check of credentials from peers:
//! `SpacePandaCredential::from_bytes` and `verify_member` on arbitrary credential bytes with an
//! arbitrary leaf key, on edits of a real credential, and on a real credential with an edited
//! leaf key. Never a panic; decoding is canonical; a binding verifies only for the exact real
//! credential and its own leaf key (no malleable credential, no moved credential).
#![no_main]

use std::sync::{Arc, LazyLock};

use core_identity::{
    DeviceIdentity, IdentityStore, SpacePandaCredential, verify_member, verify_member_as,
};
use libfuzzer_sys::fuzz_target;
use spacepanda_core::{MemoryStore, SharedStore};
use spacepanda_fuzz::{Mutation, clock};

static DEVICE: LazyLock<DeviceIdentity> = LazyLock::new(|| {
    let store: SharedStore = Arc::new(MemoryStore::new());
    IdentityStore::new(store, clock())
        .create("alice ✓")
        .unwrap()
});

fn check_decoding(bytes: &[u8]) {
    if let Ok(credential) = SpacePandaCredential::from_bytes(bytes) {
        assert_eq!(
            credential.to_bytes().unwrap(),
            bytes,
            "credential decoding is not canonical"
        );
        assert_eq!(
            credential.user_id(),
            credential.identity_public_key().user_id()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let device = &*DEVICE;
    let real = device.credential_bytes();
    let real_key = device.signature_public_key();
    match selector % 4 {
        0 => {
            // Arbitrary credential bytes and an arbitrary leaf key (first 32 bytes, if any).
            let (key, credential) = rest.split_at(rest.len().min(32));
            check_decoding(credential);
            if let Ok(member) = verify_member(credential, key) {
                assert_eq!(member.signature_public_key().as_slice(), key);
            }
            let _ = verify_member_as(credential, key, &device.user_id());
        }
        1 | 2 => {
            // Edits of a real credential, checked against the real leaf key.
            let edited = Mutation::apply(real, rest);
            check_decoding(&edited);
            let result = verify_member(&edited, &real_key);
            if edited != real {
                assert!(result.is_err(), "an edited credential verified");
            } else {
                assert_eq!(result.unwrap().user_id(), device.user_id());
            }
            let _ = verify_member_as(&edited, &real_key, &device.user_id());
        }
        _ => {
            // The real credential on an edited leaf key.
            let key = Mutation::apply(&real_key, rest);
            let result = verify_member(real, &key);
            assert_eq!(
                result.is_ok(),
                key == real_key,
                "a credential verified on another leaf"
            );
        }
    }
});
