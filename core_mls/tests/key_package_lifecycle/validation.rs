//! Someone else's key package: lifetimes against this device's clock, a forged credential
//! binding, malformed bytes.

use super::*;

#[test]
fn expired_and_not_yet_valid_key_packages_are_refused() {
    let mut rng = seeded::rng(SEED);
    let adder_clock = ManualClock::starting_now();
    let start = adder_clock.now();
    let mut adder = ClockedDevice::in_memory(&adder_clock, "adder", &mut rng);
    let invitee = ClockedDevice::in_memory(&ManualClock::new(start), "invitee", &mut rng);
    let package = invitee.single_use().remove(0);
    let group = adder.client().create_group().unwrap();

    // Expired by the adder's clock (the system clock still says valid).
    adder_clock.advance(LIFETIME + MINUTE);
    let result = adder
        .client()
        .add_members(&group, std::slice::from_ref(&package.key_package));
    match result {
        Err(MlsError::KeyPackageExpired { not_after, now }) => {
            assert_eq!(not_after, package.not_after);
            assert_eq!(now, adder_clock.now());
        }
        other => panic!("expected KeyPackageExpired, got {other:?}"),
    }
    assert_eq!(
        adder.client_ref().epoch(&group).unwrap(),
        0,
        "group unchanged"
    );

    // Not yet valid by the adder's clock (packages start an hour before they were made).
    adder_clock.set(start.saturating_sub(2 * 60 * MINUTE));
    assert!(matches!(
        adder
            .client()
            .add_members(&group, std::slice::from_ref(&package.key_package)),
        Err(MlsError::KeyPackageNotYetValid { .. })
    ));

    // Expired by both clocks: made by a device whose clock is a month behind. Still the typed
    // error, not a generic validation failure.
    adder_clock.set(start);
    let stale = ClockedDevice::in_memory(
        &ManualClock::new(start.saturating_sub(30 * DAY)),
        "stale",
        &mut rng,
    );
    let stale_package = stale.single_use().remove(0);
    assert!(
        matches!(
            adder
                .client()
                .add_members(&group, &[stale_package.key_package]),
            Err(MlsError::KeyPackageExpired { .. })
        ),
        "a package expired by the system clock too is KeyPackageExpired"
    );

    // And at the right time it is accepted.
    let output = adder
        .client()
        .add_members(&group, &[package.key_package])
        .unwrap();
    assert!(
        output
            .outbound
            .iter()
            .any(|o| o.envelope.kind() == EnvelopeKind::Welcome)
    );
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 1);
}

#[test]
fn forged_credential_binding_is_refused() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let victim = ClockedDevice::in_memory(&clock, "victim", &mut rng);
    let group = adder.client().create_group().unwrap();

    // An attacker copies the victim's SpacePanda credential into a key package signed with
    // its own key: OpenMLS's self-signature checks pass, the identity binding does not.
    let provider = OpenMlsRustCrypto::default();
    let attacker = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
    let forged = KeyPackage::builder()
        .build(
            CIPHERSUITE,
            &provider,
            &attacker,
            CredentialWithKey {
                credential: BasicCredential::new(
                    victim.client_ref().device().credential_bytes().to_vec(),
                )
                .into(),
                signature_key: attacker.public().into(),
            },
        )
        .unwrap();
    let forged = MlsMessageOut::from(forged.key_package().clone())
        .tls_serialize_detached()
        .unwrap();
    let result = adder.client().add_members(&group, &[forged]);
    assert!(
        matches!(result, Err(MlsError::UnverifiedMember { .. })),
        "{result:?}"
    );
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 0);

    // The genuine one is accepted.
    let genuine = victim.single_use().remove(0);
    adder
        .client()
        .add_members(&group, &[genuine.key_package])
        .unwrap();
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 1);
}

#[test]
fn malformed_key_packages_are_refused() {
    let mut rng = seeded::rng(SEED);
    let clock = ManualClock::starting_now();
    let mut adder = ClockedDevice::in_memory(&clock, "adder", &mut rng);
    let invitee = ClockedDevice::in_memory(&clock, "invitee", &mut rng);
    let group = adder.client().create_group().unwrap();
    let genuine = invitee.single_use().remove(0).key_package;

    let mut bad_signature = genuine.clone();
    *bad_signature.last_mut().unwrap() ^= 0x01;
    let mut truncated = genuine.clone();
    truncated.truncate(genuine.len() - 10);
    let mut trailing = genuine.clone();
    trailing.push(0);
    let (_, welcome) = invite(&mut adder, &invitee.single_use()[1].key_package);
    let welcome_message = Envelope::from_bytes(&welcome, usize::MAX)
        .unwrap()
        .payload()
        .to_vec();
    let cases: [(&str, Vec<u8>); 6] = [
        ("empty", Vec::new()),
        ("garbage", vec![0xff; 64]),
        ("truncated", truncated),
        ("trailing byte", trailing),
        ("bad signature", bad_signature),
        ("a Welcome, not a key package", welcome_message),
    ];
    for (what, bytes) in cases {
        let result = adder.client().add_members(&group, &[bytes]);
        assert!(
            matches!(result, Err(MlsError::InvalidKeyPackage { .. })),
            "{what}: {result:?}"
        );
    }
    let oversized = vec![0; 64 * 1024];
    assert!(matches!(
        adder.client().add_members(&group, &[oversized]),
        Err(MlsError::InvalidKeyPackage { .. })
    ));
    assert_eq!(adder.client_ref().epoch(&group).unwrap(), 0);
}
