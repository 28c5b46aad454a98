//! Forged, altered and malformed credentials are rejected, each with its own error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use core_identity::{
    DeviceId, DeviceSignatureKeyPair, DisplayName, ErrorKind, IdentityError, IdentityKeyPair,
    MAX_CREDENTIAL_LEN, SpacePandaCredential, verify_member, verify_member_as,
};
use proptest::prelude::*;
use spacepanda_core::Timestamp;

// Credential layout (see the `credential` module docs).
const IDENTITY_KEY: std::ops::Range<usize> = 2..34;
const DEVICE_ID: std::ops::Range<usize> = 34..50;
const SIGNATURE_KEY: std::ops::Range<usize> = 50..82;
const NAME_LEN: usize = 82;
const NAME_START: usize = 83;

struct Device {
    identity: IdentityKeyPair,
    keys: DeviceSignatureKeyPair,
    bytes: Vec<u8>,
}

impl Device {
    fn new(name: &str) -> Self {
        let identity = IdentityKeyPair::generate();
        Self::of(identity, name)
    }

    fn of(identity: IdentityKeyPair, name: &str) -> Self {
        let keys = DeviceSignatureKeyPair::generate();
        let bytes = SpacePandaCredential::issue(
            &identity,
            DeviceId::generate(),
            keys.public_key_bytes(),
            DisplayName::new(name).unwrap(),
            Timestamp::from_unix_secs(1_700_000_000),
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        Self {
            identity,
            keys,
            bytes,
        }
    }

    fn leaf(&self) -> [u8; 32] {
        self.keys.public_key_bytes()
    }

    fn name_range(&self) -> std::ops::Range<usize> {
        NAME_START..NAME_START + usize::from(self.bytes[NAME_LEN])
    }
}

#[test]
fn genuine_credential_verifies() {
    let alice = Device::new("alice");
    let member = verify_member(&alice.bytes, &alice.leaf()).unwrap();
    assert_eq!(member.user_id(), alice.identity.user_id());
    assert_eq!(member.display_name().as_str(), "alice");
    verify_member_as(&alice.bytes, &alice.leaf(), &alice.identity.user_id()).unwrap();
}

#[test]
fn credential_naming_another_users_id_is_a_user_id_mismatch() {
    let alice = Device::new("alice");
    // Mallory calls himself alice, with his own (valid) identity key and certificate.
    let mallory = Device::new("alice");
    // On its own it verifies — as Mallory, never as Alice: the id is derived, not claimed.
    let member = verify_member(&mallory.bytes, &mallory.leaf()).unwrap();
    assert_eq!(member.user_id(), mallory.identity.user_id());
    assert_ne!(member.user_id(), alice.identity.user_id());
    // Where Alice is expected, it is rejected with its own error.
    let error =
        verify_member_as(&mallory.bytes, &mallory.leaf(), &alice.identity.user_id()).unwrap_err();
    match error {
        IdentityError::UserIdMismatch { expected, found } => {
            assert_eq!(expected, alice.identity.user_id());
            assert_eq!(found, mallory.identity.user_id());
        }
        other => panic!("expected UserIdMismatch, got {other:?}"),
    }
}

#[test]
fn certificate_signed_by_a_different_identity_key_is_a_bad_signature() {
    let alice = Device::new("alice");
    // Mallory signs a certificate with his key, then claims Alice's identity key.
    let mut forged = Device::new("alice");
    forged.bytes[IDENTITY_KEY].copy_from_slice(alice.identity.public_key().as_bytes());
    let error = verify_member(&forged.bytes, &forged.leaf()).unwrap_err();
    assert!(
        matches!(error, IdentityError::BadCertificateSignature { user_id } if user_id == alice.identity.user_id()),
        "{error:?}"
    );
    // Claiming Alice is therefore not a user-id mismatch but a bad signature.
    assert!(matches!(
        verify_member_as(&forged.bytes, &forged.leaf(), &alice.identity.user_id()),
        Err(IdentityError::BadCertificateSignature { .. })
    ));
}

#[test]
fn certificate_for_another_signature_key_is_a_signature_key_mismatch() {
    let alice = Device::new("alice");
    // Alice's genuine credential, lifted into a leaf with Mallory's signature key.
    let mallory_leaf = DeviceSignatureKeyPair::generate().public_key_bytes();
    let error = verify_member(&alice.bytes, &mallory_leaf).unwrap_err();
    assert!(
        matches!(error, IdentityError::SignatureKeyMismatch { user_id, .. } if user_id == alice.identity.user_id())
    );
    // Rewriting the certified key to match the leaf breaks the certificate instead.
    let mut rewritten = alice.bytes.clone();
    rewritten[SIGNATURE_KEY].copy_from_slice(&mallory_leaf);
    assert!(matches!(
        verify_member(&rewritten, &mallory_leaf),
        Err(IdentityError::BadCertificateSignature { .. })
    ));
}

#[test]
fn altered_display_name_is_rejected() {
    let alice = Device::new("alice");
    // Same length, valid name: the certificate no longer verifies.
    let mut renamed = alice.bytes.clone();
    let range = alice.name_range();
    renamed[range.clone()].copy_from_slice(b"admin");
    assert!(matches!(
        verify_member(&renamed, &alice.leaf()),
        Err(IdentityError::BadCertificateSignature { .. })
    ));
    // A name breaking the naming rules is malformed before any signature check.
    let mut with_at = alice.bytes.clone();
    with_at[range.start] = b'@';
    assert!(matches!(
        verify_member(&with_at, &alice.leaf()),
        Err(IdentityError::Malformed {
            what: "credential display name",
            ..
        })
    ));
    // A longer name than allowed is oversized.
    let mut long = alice.bytes[..NAME_LEN].to_vec();
    long.push(100);
    long.extend([b'a'; 100]);
    long.extend(&alice.bytes[range.end..]);
    assert!(matches!(
        verify_member(&long, &alice.leaf()),
        Err(IdentityError::Oversized {
            what: "credential display name",
            len: 100,
            max: 64
        })
    ));
}

#[test]
fn altered_device_id_or_time_is_a_bad_signature() {
    let alice = Device::new("alice");
    let mut device = alice.bytes.clone();
    device[DEVICE_ID.start] ^= 0x01;
    assert!(matches!(
        verify_member(&device, &alice.leaf()),
        Err(IdentityError::BadCertificateSignature { .. })
    ));
    let mut time = alice.bytes.clone();
    let created_at = alice.name_range().end;
    time[created_at + 7] ^= 0x01;
    assert!(matches!(
        verify_member(&time, &alice.leaf()),
        Err(IdentityError::BadCertificateSignature { .. })
    ));
    let mut signature = alice.bytes.clone();
    let last = signature.len() - 1;
    signature[last] ^= 0x01;
    assert!(matches!(
        verify_member(&signature, &alice.leaf()),
        Err(IdentityError::BadCertificateSignature { .. })
    ));
}

#[test]
fn every_truncation_is_truncated() {
    let alice = Device::new("alice");
    for cut in 0..alice.bytes.len() {
        let error = verify_member(&alice.bytes[..cut], &alice.leaf()).unwrap_err();
        assert!(
            matches!(error, IdentityError::Truncated { what: "credential" }),
            "cut at {cut}: {error:?}"
        );
    }
}

#[test]
fn oversized_and_trailing_bytes_are_rejected() {
    let alice = Device::new("alice");
    let mut oversized = alice.bytes.clone();
    oversized.resize(MAX_CREDENTIAL_LEN + 1, 0);
    assert!(matches!(
        verify_member(&oversized, &alice.leaf()),
        Err(IdentityError::Oversized { what: "credential", len, max: MAX_CREDENTIAL_LEN }) if len == MAX_CREDENTIAL_LEN + 1
    ));
    let mut trailing = alice.bytes.clone();
    trailing.push(0);
    assert!(matches!(
        verify_member(&trailing, &alice.leaf()),
        Err(IdentityError::Malformed {
            what: "credential",
            ..
        })
    ));
}

#[test]
fn unknown_version_and_invalid_keys_are_rejected() {
    let alice = Device::new("alice");
    let mut future = alice.bytes.clone();
    future[1] = 2;
    assert!(matches!(
        verify_member(&future, &alice.leaf()),
        Err(IdentityError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));
    // The identity point encodes as 1 followed by zeros: small order, refused.
    let mut weak = alice.bytes.clone();
    weak[IDENTITY_KEY].fill(0);
    weak[IDENTITY_KEY.start] = 1;
    assert!(matches!(
        verify_member(&weak, &alice.leaf()),
        Err(IdentityError::Malformed {
            what: "credential",
            ..
        })
    ));
}

#[test]
fn every_rejection_blames_the_peer_and_says_what_to_do() {
    let alice = Device::new("alice");
    let other = Device::new("bob");
    let errors = [
        verify_member(&alice.bytes[..10], &alice.leaf()).unwrap_err(),
        verify_member(&alice.bytes, &other.leaf()).unwrap_err(),
        verify_member_as(&alice.bytes, &alice.leaf(), &other.identity.user_id()).unwrap_err(),
    ];
    for error in errors {
        assert_eq!(error.kind(), ErrorKind::PeerMisbehaviour);
        assert!(error.to_string().contains("reject"), "{error}");
    }
}

#[test]
fn second_device_of_the_same_user_verifies_as_that_user() {
    let phone = Device::new("alice");
    let laptop = Device::of(
        IdentityKeyPair::from_secret_bytes(&phone.identity.secret_bytes()),
        "alice laptop",
    );
    let member =
        verify_member_as(&laptop.bytes, &laptop.leaf(), &phone.identity.user_id()).unwrap();
    assert_eq!(member.user_id(), phone.identity.user_id());
    // Each device's credential is bound to its own leaf only.
    assert!(matches!(
        verify_member(&laptop.bytes, &phone.leaf()),
        Err(IdentityError::SignatureKeyMismatch { .. })
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_verify_and_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1200),
        leaf in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        prop_assert!(verify_member(&bytes, &leaf).is_err());
    }

    #[test]
    fn any_single_byte_change_is_rejected(index in 0usize..1000, flip in 1u8..=255) {
        let alice = Device::new("alice");
        let mut bytes = alice.bytes.clone();
        let index = index % bytes.len();
        bytes[index] ^= flip;
        prop_assert!(verify_member(&bytes, &alice.leaf()).is_err());
    }
}
