//! Every forgery of issue 17 is refused twice: by the node asked to store it (FilterBoth) and
//! by a node whose lookup a malicious peer answers with it. A peer that sends a forgery is
//! ignored from then on; a stale, expired or oversized record (an honest node may send one) is only
//! refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::time::Duration;

use core_dht::{DhtConfig, DhtError, Rejection, records::RecordKey};
use core_identity::IdentityStore;
use network_kit::forge::{self, KIND_KEY_PACKAGES, KIND_USER};
use network_kit::malicious::MaliciousNode;
use network_kit::*;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Three honest nodes, alice (who published twice: seq 2 is current) and mallory, each a
/// device on a node, and a malicious peer joined to the network.
struct World {
    nodes: Vec<TestNode>,
    alice: TestDevice,
    mallory: TestDevice,
    bob_package: Vec<u8>,
    evil: MaliciousNode,
}

async fn world(seed: u64) -> World {
    let mut r = rng(seed);
    let nodes = start_network(&mut r, 3).await;
    let mut alice = TestDevice::new("alice", nodes[1].clone(), seed * 10 + 1);
    let mut mallory = TestDevice::new("mallory", nodes[2].clone(), seed * 10 + 2);
    let bob = TestDevice::new("bob", nodes[0].clone(), seed * 10 + 3);
    alice.publish_all().await.expect("alice publishes");
    alice.publish_all().await.expect("alice publishes again");
    mallory.publish_all().await.expect("mallory publishes");
    let evil = MaliciousNode::start(
        keypair(&mut r),
        (nodes[0].peer_id(), nodes[0].address.clone()),
    )
    .await;
    for node in &nodes {
        node.dht
            .add_peer(evil.peer_id, evil.address.clone())
            .await
            .expect("dial the malicious peer");
    }
    let bob_package = bob
        .client_ref()
        .publishable_key_packages()
        .expect("bob's pool")[0]
        .key_package
        .clone();
    World {
        nodes,
        alice,
        mallory,
        bob_package,
        evil,
    }
}

fn now_ms() -> u64 {
    clock().now().unix_millis()
}

fn sign_as(device: &TestDevice) -> impl FnOnce(&[u8]) -> [u8; 64] + '_ {
    move |message| {
        IdentityStore::new(device.store.clone(), clock())
            .sign_as_user(message)
            .expect("identity key")
    }
}

/// A forgery: where it goes, its bytes, and whether sending it marks the sender as malicious
/// (a stale or expired record can come from an honest node, and so can one over this node's
/// size bound if the sender runs a larger one: those are only refused).
struct Forgery {
    key: [u8; 32],
    value: Vec<u8>,
    malicious: bool,
    expected: fn(&Rejection) -> bool,
}

fn alice_user_key(w: &World) -> [u8; 32] {
    *RecordKey::user(&w.alice.identity.user_id()).as_bytes()
}

fn alice_user_body(w: &World, seq: u64, issued: u64, expires: u64) -> Vec<u8> {
    forge::user_body(
        seq,
        issued,
        expires,
        "alice",
        w.alice.identity.credential_bytes(),
        w.alice.node.peer_id(),
    )
}

fn wrong_signer(w: &World) -> Forgery {
    let key = alice_user_key(w);
    let now = now_ms();
    // Names alice's identity key as signer, but mallory signed it; seq 50 would win if believed.
    let value = forge::value(
        KIND_USER,
        &key,
        alice_user_body(w, 50, now, now + DAY_MS),
        *w.alice.identity.identity_public_key().as_bytes(),
        sign_as(&w.mallory),
    );
    Forgery {
        key,
        value,
        malicious: true,
        expected: |r| matches!(r, Rejection::BadSignature),
    }
}

fn lower_seq(w: &World) -> Forgery {
    let key = alice_user_key(w);
    let now = now_ms();
    let value = forge::value(
        KIND_USER,
        &key,
        alice_user_body(w, 1, now, now + DAY_MS),
        *w.alice.identity.identity_public_key().as_bytes(),
        sign_as(&w.alice),
    );
    Forgery {
        key,
        value,
        malicious: false,
        expected: |r| matches!(r, Rejection::StaleSeq { .. }),
    }
}

fn expired(w: &World) -> Forgery {
    let key = alice_user_key(w);
    let now = now_ms();
    let value = forge::value(
        KIND_USER,
        &key,
        alice_user_body(w, 60, now - 3 * DAY_MS, now - DAY_MS),
        *w.alice.identity.identity_public_key().as_bytes(),
        sign_as(&w.alice),
    );
    Forgery {
        key,
        value,
        malicious: false,
        expected: |r| matches!(r, Rejection::Expired { .. }),
    }
}

fn oversized(w: &World) -> Forgery {
    let key = alice_user_key(w);
    let now = now_ms();
    let mut value = forge::value(
        KIND_USER,
        &key,
        alice_user_body(w, 70, now, now + DAY_MS),
        *w.alice.identity.identity_public_key().as_bytes(),
        sign_as(&w.alice),
    );
    value.resize(DhtConfig::default().max_record_len + 1, 0);
    Forgery {
        key,
        value,
        malicious: false,
        expected: |r| matches!(r, Rejection::Oversized { .. }),
    }
}

fn key_mismatch(w: &World) -> Forgery {
    // Mallory's own record, correctly signed by mallory over alice's key: the signature holds,
    // but alice's key is not derived from mallory's identity.
    let key = alice_user_key(w);
    let now = now_ms();
    let body = forge::user_body(
        80,
        now,
        now + DAY_MS,
        "mallory",
        w.mallory.identity.credential_bytes(),
        w.mallory.node.peer_id(),
    );
    let value = forge::value(
        KIND_USER,
        &key,
        body,
        *w.mallory.identity.identity_public_key().as_bytes(),
        sign_as(&w.mallory),
    );
    Forgery {
        key,
        value,
        malicious: true,
        expected: |r| matches!(r, Rejection::KeyMismatch),
    }
}

fn another_identitys_key_package(w: &World) -> Forgery {
    // Alice's device signs a record at her own key package key, with bob's package inside.
    let key = *RecordKey::key_packages(&w.alice.identity.user_id(), &w.alice.identity.device_id())
        .as_bytes();
    let now = now_ms();
    let body = forge::key_package_body(
        90,
        now,
        now + DAY_MS,
        w.alice.identity.credential_bytes(),
        std::slice::from_ref(&w.bob_package),
    );
    let keys = w.alice.identity.signature_key_pair();
    let value = forge::value(
        KIND_KEY_PACKAGES,
        &key,
        body,
        keys.public_key_bytes(),
        |m| keys.sign(m),
    );
    Forgery {
        key,
        value,
        malicious: true,
        expected: |r| matches!(r, Rejection::BadKeyPackage { .. }),
    }
}

/// Checks one forgery against a fresh world: the storing node refuses it, and a lookup that
/// the malicious peer answers with it returns the genuine record (or nothing), never it.
/// Lookups made until the forger's answer reaches the getter.
const LOOKUPS_UNTIL_THE_FORGER_ANSWERS: usize = 5;

async fn refused_twice(seed: u64, make: fn(&World) -> Forgery) {
    let w = world(seed).await;
    let forgery = make(&w);
    let kad_key = libp2p::kad::RecordKey::new(&forgery.key);

    // 1. The forgery offered for storage is refused by an honest node.
    let holder = &w.nodes[0];
    let before = holder.dht.status().await.expect("status");
    w.evil
        .put_to(holder.peer_id(), kad_key.clone(), forgery.value.clone())
        .await;
    let after = wait_for(Duration::from_secs(10), || async {
        let status = holder.dht.status().await.ok()?;
        (status.refused_puts > before.refused_puts).then_some(status)
    })
    .await
    .expect("the storing node refuses the forged put");
    assert_eq!(
        after.stored_records, before.stored_records,
        "nothing stored"
    );
    assert_eq!(
        after.ignored_peers,
        usize::from(forgery.malicious),
        "a forger is ignored, a stale or expired record only refused"
    );

    // 2. The malicious peer answers lookups with it; the getter refuses it.
    w.evil.hold(kad_key, forgery.value.clone()).await;
    let getter = &w.nodes[2];
    let user = w.alice.identity.user_id();
    // A lookup may complete before the forger's answer arrives (it is then dropped unread), so
    // a few lookups are made until the getter has seen it; every one returns the genuine
    // record, and the forger is ignored from its first answer on.
    for attempt in 0..LOOKUPS_UNTIL_THE_FORGER_ANSWERS {
        if forgery.key == *RecordKey::user(&user).as_bytes() {
            let found = getter.dht.lookup_user(&user).await.expect("alice's record");
            assert_eq!(found.seq, 2, "the genuine record wins over the forgery");
            assert_eq!(found.display_name.as_str(), "alice");
        } else {
            let found = getter
                .dht
                .lookup_key_packages(&user, &w.alice.identity.device_id())
                .await
                .expect("alice's key packages");
            assert!(found.seq <= 2, "the forged seq 90 is never believed");
            assert!(
                found
                    .key_packages
                    .iter()
                    .all(|p| p.validated.member.user_id() == user)
            );
        }
        if !forgery.malicious {
            break;
        }
        let status = getter.dht.status().await.expect("status");
        if status.ignored_peers == 1 {
            break;
        }
        assert!(
            attempt + 1 < LOOKUPS_UNTIL_THE_FORGER_ANSWERS,
            "the getter never ignored the forger"
        );
    }

    // 3. The same bytes, published by an honest node's own API, are refused there too, with
    // the expected reason.
    let raw = raw_publication(&forgery);
    match w.nodes[1].dht.publish(&raw).await {
        Err(DhtError::InvalidRecord(rejection)) => {
            assert!(
                (forgery.expected)(&rejection),
                "unexpected reason: {rejection}"
            )
        }
        other => panic!("a forgery must be refused locally, got {other:?}"),
    }
}

fn raw_publication(forgery: &Forgery) -> core_dht::Publication {
    core_dht::Publication::from_raw_parts(forgery.key, forgery.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_the_wrong_signer_is_refused() {
    refused_twice(171, wrong_signer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_lower_seq_is_refused() {
    refused_twice(172, lower_seq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_record_is_refused() {
    refused_twice(173, expired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_refused() {
    refused_twice(174, oversized).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_at_a_key_not_derived_from_its_signer_is_refused() {
    refused_twice(175, key_mismatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_package_of_another_identity_is_refused() {
    refused_twice(176, another_identitys_key_package).await;
}
