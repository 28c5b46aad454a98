//! The directory on a network of in-process nodes (memory transport): every user is found.

mod network_kit;

use network_kit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_publish_and_find_each_other() {
    let mut r = rng(1);
    let nodes = start_network(&mut r, 4).await;
    let mut alice = TestDevice::new("alice", nodes[1].clone(), 11);
    let mut bob = TestDevice::new("bob", nodes[2].clone(), 12);
    alice.publish_all().await.expect("alice publishes");
    bob.publish_all().await.expect("bob publishes");

    let found = nodes[3]
        .dht
        .lookup_user(&bob.identity.user_id())
        .await
        .expect("bob's user record");
    assert_eq!(found.devices.len(), 1);
    assert_eq!(found.devices[0].peer_id, nodes[2].peer_id());
    let packages = nodes[1]
        .dht
        .lookup_key_packages(&bob.identity.user_id(), &bob.identity.device_id())
        .await
        .expect("bob's key packages");
    assert!(!packages.key_packages.is_empty());
    let resolved = nodes[3].dht.resolve("bob").await.expect("bob resolves");
    assert_eq!(resolved.user.user_id, bob.identity.user_id());
    let address = bob.identity.address().to_string();
    let resolved = nodes[0]
        .dht
        .resolve(&address)
        .await
        .expect("address resolves");
    assert_eq!(resolved.user.user_id, bob.identity.user_id());
}
