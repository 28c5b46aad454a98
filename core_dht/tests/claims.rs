//! Claims end to end: two inviters race for the same one-time key package of bob's. The
//! engine settles it (bob joins the first group; the second Welcome is `AlreadyConsumed`),
//! both claims reach the network, bob stops offering the package and republishes without it,
//! and the last-resort package keeps working for every later inviter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use core_dht::PublishedKeyPackage;
use core_mls::{EnvelopeKind, Event, GroupId, MlsError, UnknownKeyPackageHint};
use network_kit::*;

/// `inviter` adds bob to a new group with `package` and returns the group and the Welcome.
fn invite(inviter: &mut TestDevice, package: &PublishedKeyPackage) -> (GroupId, Vec<u8>) {
    let group = inviter.device.client().create_group().expect("group");
    let output = inviter
        .device
        .client()
        .add_members(&group, std::slice::from_ref(&package.bytes))
        .expect("add bob");
    let welcome = output
        .outbound
        .iter()
        .find(|o| o.kind() == EnvelopeKind::Welcome)
        .expect("a Welcome")
        .to_bytes();
    for outbound in &output.outbound {
        inviter.device.client().ack_sent(outbound.id).expect("ack");
    }
    (group, welcome)
}

fn joined(output: &core_mls::Output, group: &GroupId) -> bool {
    output
        .events
        .iter()
        .any(|e| matches!(e, Event::Joined { group: g, .. } if g == group))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inviters_racing_for_one_package_are_settled_and_the_pool_moves_on() {
    let mut r = rng(50);
    let nodes = start_network(&mut r, 5).await;
    let mut bob = TestDevice::new("bob", nodes[1].clone(), 51);
    let mut alice = TestDevice::new("alice", nodes[2].clone(), 52);
    let mut carol = TestDevice::new("carol", nodes[3].clone(), 53);
    let mut dave = TestDevice::new("dave", nodes[4].clone(), 54);
    for device in [&mut bob, &mut alice, &mut carol, &mut dave] {
        device.publish_all().await.expect("publishes");
    }
    let (bob_user, bob_device) = (bob.identity.user_id(), bob.identity.device_id());

    // Both look bob up at the same time and pick the same one-time package.
    let for_alice = alice
        .node
        .dht
        .lookup_key_packages(&bob_user, &bob_device)
        .await
        .expect("bob's packages");
    let for_carol = carol
        .node
        .dht
        .lookup_key_packages(&bob_user, &bob_device)
        .await
        .expect("bob's packages");
    let package = for_alice.pick().expect("a package").clone();
    assert!(
        !package.validated.last_resort,
        "a one-time package is picked first"
    );
    assert_eq!(
        for_carol
            .pick()
            .expect("a package")
            .validated
            .key_package_ref,
        package.validated.key_package_ref,
        "the race: both picked the same package"
    );
    let (alice_group, alice_welcome) = invite(&mut alice, &package);
    let (carol_group, carol_welcome) = invite(&mut carol, &package);
    for (inviter, record) in [(&alice, &for_alice), (&carol, &for_carol)] {
        let claim = inviter
            .publisher
            .claim(record, &package.validated.key_package_ref)
            .expect("claim");
        inviter
            .node
            .dht
            .publish(&claim)
            .await
            .expect("claim published");
    }

    // Before any Welcome reaches him, bob sees both claims (merged at the claim key), stops
    // offering the package, refills and republishes.
    let claims = dave
        .node
        .dht
        .lookup_claims(&bob_user, &bob_device)
        .await
        .expect("claims");
    assert_eq!(claims.len(), 2, "both claims are kept, merged");
    let sync = bob
        .publisher
        .sync_claims(&bob.node.dht, bob.device.client())
        .await
        .expect("claims synced");
    assert_eq!(sync.newly_claimed, 1);
    assert!(sync.republished.is_some());
    let after = dave
        .node
        .dht
        .lookup_key_packages(&bob_user, &bob_device)
        .await
        .expect("bob's new record");
    assert!(after.seq > for_alice.seq);
    assert!(
        after
            .key_packages
            .iter()
            .all(|p| p.validated.key_package_ref != package.validated.key_package_ref),
        "the claimed package is no longer offered"
    );
    assert_eq!(
        after.key_packages.len(),
        for_alice.key_packages.len(),
        "the record is topped up from the pool"
    );
    // The engine settles the race: the first Welcome joins, the second is a double spend.
    let first = bob
        .device
        .client()
        .handle_envelope(&alice_welcome)
        .expect("bob joins");
    assert!(joined(&first, &alice_group));
    match bob.device.client().handle_envelope(&carol_welcome) {
        Err(MlsError::NoMatchingKeyPackage {
            hint: UnknownKeyPackageHint::AlreadyConsumed,
            ..
        }) => {}
        other => panic!("the second Welcome must be AlreadyConsumed, got {other:?}"),
    }

    // A second sync finds nothing new to claim or publish (the package was already gone
    // from the record when the Welcome consumed it).
    let again = bob
        .publisher
        .sync_claims(&bob.node.dht, bob.device.client())
        .await
        .expect("claims synced");
    assert_eq!(again.newly_claimed, 0);
    assert_eq!(again.republished, None);

    // The last-resort package stays usable, by any number of inviters: carol retries with it,
    // and dave uses it too.
    let last_resort = after
        .key_packages
        .iter()
        .find(|p| p.validated.last_resort)
        .expect("a last-resort package")
        .clone();
    let (carol_group2, carol_welcome2) = invite(&mut carol, &last_resort);
    let (dave_group, dave_welcome) = invite(&mut dave, &last_resort);
    let output = bob
        .device
        .client()
        .handle_envelope(&carol_welcome2)
        .expect("bob joins carol");
    assert!(joined(&output, &carol_group2));
    let output = bob
        .device
        .client()
        .handle_envelope(&dave_welcome)
        .expect("bob joins dave");
    assert!(joined(&output, &dave_group));
    assert_ne!(carol_group, carol_group2);
}
