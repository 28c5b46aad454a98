//! The checks and merge rules as pure functions: no network.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use core_identity::{DeviceId, DeviceIdentity, DisplayName, IdentityKeyPair};
use libp2p::PeerId;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use spacepanda_core::Timestamp;

use super::*;
use crate::records::validation::ValidationCache;

const NOW: u64 = 1_800_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;

fn checks_at(now: u64) -> Checks {
    Checks {
        now: Timestamp::from_unix_millis(now),
        max_clock_skew_ms: 300_000,
        max_record_len: 32 * 1024,
    }
}

struct User {
    identity: IdentityKeyPair,
    device: DeviceIdentity,
}

fn user(seed: u64, name: &str) -> User {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let identity = IdentityKeyPair::generate_with(&mut rng);
    let device = DeviceIdentity::create(
        &identity,
        DeviceId::generate_with(&mut rng),
        DisplayName::new(name).unwrap(),
        Timestamp::from_unix_millis(NOW - DAY),
    )
    .unwrap();
    User { identity, device }
}

/// A peer id from a fixed key (tests draw no unseeded randomness).
fn peer(byte: u8) -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([byte.max(1); 32])
        .unwrap()
        .public()
        .to_peer_id()
}

fn seed_of(u: &User) -> u64 {
    u64::from(u.device.device_id().as_bytes()[0])
}

fn lifetime(issued: u64, expires: u64) -> Lifetime {
    Lifetime {
        issued_at: Timestamp::from_unix_millis(issued),
        expires_at: Timestamp::from_unix_millis(expires),
    }
}

fn user_value(u: &User, seq: u64, life: Lifetime) -> (RecordKey, Vec<u8>) {
    let key = RecordKey::user(&u.identity.user_id());
    let devices = vec![UserBodyDevice::new(
        u.device.credential_bytes().to_vec(),
        peer(u8::try_from(seed_of(u)).unwrap_or(0)),
        &[],
    )];
    let body = user_body(u.device.display_name(), devices, seq, life);
    let entry = WireEntry::sign(
        RecordKind::User,
        &key,
        body,
        *u.identity.public_key().as_bytes(),
        |m| u.identity.sign(m),
    );
    (key, encode_value(RecordKind::User, vec![entry]))
}

fn name_entry(u: &User, seq: u64, key: &RecordKey, kind: RecordKind) -> WireEntry {
    let body = name_body(u.device.display_name(), seq, lifetime(NOW, NOW + DAY));
    WireEntry::sign(kind, key, body, *u.identity.public_key().as_bytes(), |m| {
        u.identity.sign(m)
    })
}

#[test]
fn keys_are_the_documented_derivations() {
    let u = user(1, "Alice");
    let id = u.identity.user_id();
    let mut expected = blake3::Hasher::new();
    expected.update(b"spacepanda/user/v1");
    expected.update(id.as_bytes());
    assert_eq!(
        RecordKey::user(&id).as_bytes(),
        expected.finalize().as_bytes()
    );
    let mut expected = blake3::Hasher::new();
    expected.update(b"spacepanda/kp/v1");
    expected.update(id.as_bytes());
    expected.update(u.device.device_id().as_bytes());
    assert_eq!(
        RecordKey::key_packages(&id, &u.device.device_id()).as_bytes(),
        expected.finalize().as_bytes()
    );
    // Names are case-insensitive, as core_identity resolves them.
    assert_eq!(
        RecordKey::name(&DisplayName::new("Alice").unwrap()),
        RecordKey::name(&DisplayName::new("alice").unwrap())
    );
}

#[test]
fn a_valid_user_record_passes_and_its_times_are_checked() {
    let u = user(2, "alice");
    let (key, value) = user_value(&u, 1, lifetime(NOW, NOW + DAY));
    let (valid, dropped) = validate_value(&key, &value, &checks_at(NOW)).unwrap();
    assert_eq!(dropped, 0);
    assert!(matches!(valid, ValidValue::User(ref r) if r.seq == 1 && r.devices.len() == 1));
    // After its end it is expired; issued beyond the clock skew it is refused.
    assert!(matches!(
        validate_value(&key, &value, &checks_at(NOW + DAY)),
        Err(Rejection::Expired { .. })
    ));
    let (key, future) = user_value(&u, 2, lifetime(NOW + 3_600_000, NOW + DAY));
    assert!(matches!(
        validate_value(&key, &future, &checks_at(NOW)),
        Err(Rejection::BadLifetime { .. })
    ));
    let (key, long) = user_value(&u, 3, lifetime(NOW, NOW + 40 * DAY));
    assert!(matches!(
        validate_value(&key, &long, &checks_at(NOW)),
        Err(Rejection::BadLifetime { .. })
    ));
}

#[test]
fn a_device_certified_by_another_identity_is_refused() {
    let alice = user(3, "alice");
    let mallory = user(4, "mallory");
    let key = RecordKey::user(&alice.identity.user_id());
    let devices = vec![UserBodyDevice::new(
        mallory.device.credential_bytes().to_vec(),
        peer(4),
        &[],
    )];
    let body = user_body(
        alice.device.display_name(),
        devices,
        1,
        lifetime(NOW, NOW + DAY),
    );
    let entry = WireEntry::sign(
        RecordKind::User,
        &key,
        body,
        *alice.identity.public_key().as_bytes(),
        |m| alice.identity.sign(m),
    );
    let value = encode_value(RecordKind::User, vec![entry]);
    assert!(matches!(
        validate_value(&key, &value, &checks_at(NOW)),
        Err(Rejection::BadIdentity { .. })
    ));
}

#[test]
fn a_node_keeps_the_higher_seq_and_refuses_a_lower_or_conflicting_one() {
    let u = user(5, "alice");
    let mut cache = ValidationCache::new(16);
    let checks = checks_at(NOW);
    let (key, v1) = user_value(&u, 1, lifetime(NOW, NOW + DAY));
    let (_, v2) = user_value(&u, 2, lifetime(NOW, NOW + DAY));
    let (_, v2_other) = user_value(&u, 2, lifetime(NOW, NOW + 2 * DAY));
    assert!(matches!(
        decide_store(&key, &v1, None, &checks, &mut cache),
        StoreDecision::Store { .. }
    ));
    assert!(matches!(
        decide_store(&key, &v2, Some(&v1), &checks, &mut cache),
        StoreDecision::Store { .. }
    ));
    assert!(matches!(
        decide_store(&key, &v1, Some(&v2), &checks, &mut cache),
        StoreDecision::Refuse(Rejection::StaleSeq {
            offered: 1,
            held: 2
        })
    ));
    assert!(matches!(
        decide_store(&key, &v2, Some(&v2), &checks, &mut cache),
        StoreDecision::AlreadyHeld
    ));
    assert!(
        matches!(
            decide_store(&key, &v2_other, Some(&v2), &checks, &mut cache),
            StoreDecision::Refuse(Rejection::StaleSeq {
                offered: 2,
                held: 2
            })
        ),
        "the same seq with other content is an equivocation, refused"
    );
    // An expired held record is as good as absent.
    let later = checks_at(NOW + DAY + 1);
    let (_, v3) = user_value(&u, 1, lifetime(NOW + DAY, NOW + 2 * DAY));
    assert!(matches!(
        decide_store(&key, &v3, Some(&v2), &later, &mut cache),
        StoreDecision::Store { .. }
    ));
}

#[test]
fn name_lists_merge_one_entry_per_user_and_refuse_newcomers_when_full() {
    let name = DisplayName::new("alice").unwrap();
    let key = RecordKey::name(&name);
    let users: Vec<User> = (0..(MAX_NAME_ENTRIES as u64 + 1))
        .map(|i| user(100 + i, "alice"))
        .collect();
    let checks = checks_at(NOW);
    let mut cache = ValidationCache::new(64);
    let mut held: Option<Vec<u8>> = None;
    for u in &users[..MAX_NAME_ENTRIES] {
        let value = encode_value(
            RecordKind::Names,
            vec![name_entry(u, 1, &key, RecordKind::Names)],
        );
        match decide_store(&key, &value, held.as_deref(), &checks, &mut cache) {
            StoreDecision::Store { value, .. } => held = Some(value),
            other => panic!("{other:?}"),
        }
    }
    // A newer entry of a listed user replaces its old one.
    let newer = encode_value(
        RecordKind::Names,
        vec![name_entry(&users[0], 2, &key, RecordKind::Names)],
    );
    match decide_store(&key, &newer, held.as_deref(), &checks, &mut cache) {
        StoreDecision::Store { value, .. } => held = Some(value),
        other => panic!("{other:?}"),
    }
    let (listed, _) = validate_value(&key, held.as_deref().unwrap(), &checks).unwrap();
    let ValidValue::Names(entries) = listed else {
        panic!("a name list")
    };
    assert_eq!(entries.len(), MAX_NAME_ENTRIES);
    assert_eq!(entries[0].seq, 2);
    // The list is full: a newcomer is not added, and nobody is evicted.
    let newcomer = encode_value(
        RecordKind::Names,
        vec![name_entry(
            &users[MAX_NAME_ENTRIES],
            1,
            &key,
            RecordKind::Names,
        )],
    );
    assert!(matches!(
        decide_store(&key, &newcomer, held.as_deref(), &checks, &mut cache),
        StoreDecision::AlreadyHeld
    ));
    // An entry signed for another name's key does not verify there.
    let other_key = RecordKey::name(&DisplayName::new("bob").unwrap());
    let moved = encode_value(
        RecordKind::Names,
        vec![name_entry(&users[0], 3, &key, RecordKind::Names)],
    );
    assert!(matches!(
        validate_value(&other_key, &moved, &checks),
        Err(Rejection::BadSignature)
    ));
}

#[test]
fn an_address_entry_must_match_the_fingerprint_of_its_signer() {
    let alice = user(7, "alice");
    let mallory = user(8, "alice");
    let alice_address = RecordKey::address(
        alice.device.display_name(),
        &alice.identity.user_id().fingerprint(),
    );
    // Mallory, also called alice, signs an entry for alice's address key.
    let value = encode_value(
        RecordKind::Addresses,
        vec![name_entry(
            &mallory,
            1,
            &alice_address,
            RecordKind::Addresses,
        )],
    );
    assert!(matches!(
        validate_value(&alice_address, &value, &checks_at(NOW)),
        Err(Rejection::KeyMismatch)
    ));
}

#[test]
fn a_cached_value_still_expires() {
    let u = user(9, "alice");
    let (key, value) = user_value(&u, 1, lifetime(NOW, NOW + DAY));
    let mut cache = ValidationCache::new(4);
    assert!(cache.validate(&key, &value, &checks_at(NOW)).is_ok());
    assert!(cache.validate(&key, &value, &checks_at(NOW + 1)).is_ok());
    assert!(matches!(
        cache.validate(&key, &value, &checks_at(NOW + DAY)),
        Err(Rejection::Expired { .. })
    ));
}

#[test]
fn malformed_values_are_typed_rejections() {
    let key = RecordKey::user(&user(10, "a").identity.user_id());
    let checks = checks_at(NOW);
    for bytes in [&b""[..], b"\xff\xff", b"\xa3av\x02dkind\x01gentries\x80"] {
        assert!(matches!(
            validate_value(&key, bytes, &checks),
            Err(Rejection::Malformed { .. })
        ));
    }
    assert!(matches!(
        validate_value(&key, &vec![0; 40 * 1024], &checks),
        Err(Rejection::Oversized { .. })
    ));
    // Two entries in a single-signer record.
    let u = user(11, "alice");
    let (key, _) = user_value(&u, 1, lifetime(NOW, NOW + DAY));
    let entry = name_entry(&u, 1, &key, RecordKind::User);
    let value = encode_value(RecordKind::User, vec![entry.clone(), entry]);
    assert!(matches!(
        validate_value(&key, &value, &checks),
        Err(Rejection::Malformed { .. })
    ));
}

mod any_input {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a peer sends decodes to a typed rejection (or, by astronomical luck, a
        /// valid record); it never panics.
        #[test]
        fn any_bytes_are_checked_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let key = RecordKey::from_bytes([3; 32]);
            let _ = validate_value(&key, &bytes, &checks_at(NOW));
        }

        /// A valid record with one byte changed is refused, or still the same record (the
        /// change fell where the encoding allows it): never a different record.
        #[test]
        fn a_changed_byte_never_yields_another_record(index in any::<usize>(), byte in any::<u8>()) {
            let u = user(12, "alice");
            let (key, value) = user_value(&u, 1, lifetime(NOW, NOW + DAY));
            let (original, _) = validate_value(&key, &value, &checks_at(NOW)).unwrap();
            let mut changed = value.clone();
            let at = index % changed.len();
            changed[at] = byte;
            if let Ok((valid, _)) = validate_value(&key, &changed, &checks_at(NOW)) {
                prop_assert_eq!(valid, original);
            }
        }
    }
}
