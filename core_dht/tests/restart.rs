//! A device's own records survive restarts: they are kept, with the highest `seq` used, in its
//! sealed redb file, republished from there into a network that lost them, and a restart never
//! publishes a lower `seq`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::sync::Arc;

use core_dht::records::RecordKey;
use network_kit::*;
use spacepanda_core::{MasterKey, RedbStore, SealedStore, SharedStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_records_are_republished_from_disk_after_a_restart_with_a_higher_seq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bob.redb");
    let key = MasterKey::from_bytes([7; 32]);
    let mut r = rng(70);

    // First life: publish twice into network A.
    let (user, device, seqs, first_peer) = {
        let nodes = start_network(&mut r, 4).await;
        let store: SharedStore = Arc::new(
            SealedStore::create_with_key(RedbStore::create(&path).expect("create"), &key)
                .expect("sealed"),
        );
        // Bob's own node, with a node key kept in his store.
        let seeded = keypair(&mut r);
        let node_key = core_dht::load_or_create_node_keypair(&store, || seeded).expect("node key");
        let bob_node = start_node_with_keypair(&node_key, test_config()).await;
        join(&bob_node, &nodes[0]).await;
        let mut bob = TestDevice::on_store("bob", bob_node.clone(), 71, store);
        bob.publish_all().await.expect("publish");
        bob.publish_all().await.expect("publish again");
        let user = bob.identity.user_id();
        let device = bob.identity.device_id();
        let found = nodes[2].dht.lookup_user(&user).await.expect("found");
        let packages = nodes[3]
            .dht
            .lookup_key_packages(&user, &device)
            .await
            .expect("found");
        for node in nodes.iter().chain([&bob_node]) {
            node.dht.shutdown().await;
        }
        (user, device, (found.seq, packages.seq), bob_node.peer_id())
    };
    assert_eq!(seqs, (2, 2));

    // Second life: the file reopened, a new network that holds nothing.
    let nodes = start_network(&mut r, 4).await;
    match nodes[2].dht.lookup_user(&user).await {
        Err(core_dht::DhtError::NotFound { .. }) => {}
        other => panic!("the new network starts empty, got {other:?}"),
    }
    let store: SharedStore = Arc::new(
        SealedStore::open_with_key(RedbStore::open(&path).expect("open"), &key).expect("sealed"),
    );
    let node_key = core_dht::load_or_create_node_keypair(&store, || panic!("kept")).expect("kept");
    assert_eq!(
        node_key.public().to_peer_id(),
        first_peer,
        "the same node identity"
    );
    let bob_node = start_node_with_keypair(&node_key, test_config()).await;
    join(&bob_node, &nodes[0]).await;
    let mut bob = TestDevice::on_store("bob", bob_node, 72, store);
    assert_eq!(bob.identity.user_id(), user, "the same device came back");
    let kept = bob.publisher.stored().expect("kept records");
    assert_eq!(
        kept.len(),
        4,
        "user record, name, address and key packages are kept"
    );
    let next = bob
        .publisher
        .next_republish()
        .expect("republish time")
        .expect("something to republish");
    assert!(next > clock().now(), "fresh records are not due yet");
    for (what, result) in bob
        .publisher
        .republish(&bob.node.dht)
        .await
        .expect("republish")
    {
        result.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let found = nodes[3].dht.lookup_user(&user).await.expect("republished");
    assert_eq!(found.seq, 2, "the kept record itself, not a rebuilt one");
    let packages = nodes[0]
        .dht
        .lookup_key_packages(&user, &device)
        .await
        .expect("republished");
    assert_eq!(packages.seq, 2);

    // Keeping fresh on the new listen address rebuilds the user record (seq 3) with it; the
    // rest is republished as kept.
    let address = bob.node.address.clone();
    let results = bob
        .publisher
        .keep_fresh(
            &bob.node.dht,
            bob.device.client(),
            std::slice::from_ref(&address),
        )
        .await
        .expect("kept fresh");
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let found = nodes[3].dht.lookup_user(&user).await.expect("rebuilt");
    assert_eq!(found.seq, 3);
    assert_eq!(found.devices[0].addresses, vec![address]);
    assert_eq!(found.devices[0].peer_id, first_peer);

    // A new record continues above every seq used before, even when the network offers
    // nothing to compare with.
    let next_record = bob
        .publisher
        .user_record(None, bob.node.peer_id(), &[])
        .expect("record");
    assert_eq!(next_record.key(), RecordKey::user(&user));
    let report = bob.node.dht.publish(&next_record).await.expect("published");
    assert!(report.confirmed >= 3);
    let found = nodes[2].dht.lookup_user(&user).await.expect("found");
    assert_eq!(found.seq, 4);
}

/// Records are rebuilt before they expire: a week into their two-week lifetime (the republish
/// margin), `keep_fresh` publishes every record anew with a higher `seq` and a later end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_renewed_before_they_expire() {
    let manual = spacepanda_core::ManualClock::starting_now();
    let shared: Arc<dyn spacepanda_core::Clock> = Arc::new(manual.clone());
    let mut r = rng(75);
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node_with_clock(&mut r, test_config(), "/memory/0", shared.clone()).await);
    }
    for node in &nodes[1..] {
        join(node, &nodes[0]).await;
    }
    let store: SharedStore = Arc::new(spacepanda_core::MemoryStore::new());
    let mut bob = TestDevice::with_clock("bob", nodes[1].clone(), 76, store, shared.clone());
    let first = bob
        .publisher
        .keep_fresh(&bob.node.dht, bob.device.client(), &[])
        .await
        .expect("first publication");
    assert!(first.iter().all(|(_, r)| r.is_ok()), "{first:?}");
    let user = bob.identity.user_id();
    let before = nodes[2].dht.lookup_user(&user).await.expect("found");

    // Nothing is due yet: the same records go out again, unchanged.
    let again = bob
        .publisher
        .keep_fresh(&bob.node.dht, bob.device.client(), &[])
        .await
        .expect("republished");
    assert!(again.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(
        nodes[2].dht.lookup_user(&user).await.expect("found").seq,
        before.seq
    );

    // Past the margin, everything is rebuilt.
    manual.advance(std::time::Duration::from_secs(7 * 24 * 3600 + 60));
    let renewed = bob
        .publisher
        .keep_fresh(&bob.node.dht, bob.device.client(), &[])
        .await
        .expect("renewed");
    assert!(renewed.iter().all(|(_, r)| r.is_ok()), "{renewed:?}");
    let after = nodes[3].dht.lookup_user(&user).await.expect("found");
    assert!(after.seq > before.seq);
    assert!(after.lifetime.expires_at > before.lifetime.expires_at);
    let names = nodes[0]
        .dht
        .lookup_name(bob.identity.display_name())
        .await
        .expect("name");
    assert!(names[0].lifetime.expires_at > before.lifetime.expires_at);
    let margin = bob.node.dht.config().republish_margin;
    assert!(
        after.lifetime.expires_at.saturating_sub(margin) > shared.now(),
        "the next renewal of the user record is in the future"
    );
    // (The key package record ends with its first package, whose lifetime OpenMLS sets from
    // the system clock, not this test's: the engine's rotation renews those.)
}
