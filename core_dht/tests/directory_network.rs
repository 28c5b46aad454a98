//! The directory on networks of in-process nodes (memory transport): every user is found by
//! every node, and still after a third of the network is replaced.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::time::{Duration, Instant};

use core_dht::records::RecordKey;

use core_dht::DhtError;
use network_kit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_network_publishes_finds_and_resolves() {
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
    assert_eq!(found.devices[0].addresses, vec![nodes[2].address.clone()]);
    let packages = nodes[1]
        .dht
        .lookup_key_packages(&bob.identity.user_id(), &bob.identity.device_id())
        .await
        .expect("bob's key packages");
    let published = nodes[1].dht.config().published_key_packages;
    assert_eq!(
        packages.key_packages.len(),
        published + 1,
        "the freshest and the last resort"
    );
    assert!(
        packages
            .key_packages
            .iter()
            .any(|p| p.validated.last_resort)
    );
    assert_eq!(packages.device.device_id(), bob.identity.device_id());

    let resolved = nodes[3].dht.resolve("bob").await.expect("bob resolves");
    assert_eq!(resolved.user.user_id, bob.identity.user_id());
    let address = bob.identity.address().to_string();
    let resolved = nodes[0]
        .dht
        .resolve(&address)
        .await
        .expect("address resolves");
    assert_eq!(resolved.user.user_id, bob.identity.user_id());
    match nodes[0].dht.resolve("carol").await {
        Err(DhtError::NotFound { .. }) => {}
        other => panic!("an unknown name must be NotFound, got {other:?}"),
    }
}

/// Looks up every device's user record and key packages from every node in `lookers` (the
/// lookers in parallel, each one's lookups in turn); returns how many of the
/// `lookers × devices × 2` lookups found the right record, and how many were made.
async fn find_everyone(lookers: &[TestNode], devices: &[&TestDevice]) -> (usize, usize) {
    let per_looker = lookers.iter().map(|looker| async move {
        let mut found = 0;
        for device in devices {
            if let Ok(user) = looker.dht.lookup_user(&device.identity.user_id()).await
                && user
                    .devices
                    .iter()
                    .any(|d| d.member.device_id() == device.identity.device_id())
            {
                found += 1;
            }
            if let Ok(record) = looker
                .dht
                .lookup_key_packages(&device.identity.user_id(), &device.identity.device_id())
                .await
                && !record.key_packages.is_empty()
            {
                found += 1;
            }
        }
        found
    });
    let found = futures::future::join_all(per_looker)
        .await
        .into_iter()
        .sum();
    (found, lookers.len() * devices.len() * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_each_find_every_user_even_after_a_third_is_replaced() {
    const NODES: usize = 30;
    let started = Instant::now();
    let mut r = rng(30);
    let nodes = start_network(&mut r, NODES).await;
    let mut devices: Vec<TestDevice> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut device = TestDevice::new(&format!("user{i}"), node.clone(), 1000 + i as u64);
        device.publish_all().await.expect("every device publishes");
        devices.push(device);
    }
    eprintln!("{NODES} nodes up and published in {:?}", started.elapsed());
    let everyone: Vec<&TestDevice> = devices.iter().collect();
    let (found, total) = find_everyone(&nodes, &everyone).await;
    eprintln!(
        "{NODES} nodes: {found}/{total} lookups found (set up and searched in {:?})",
        started.elapsed()
    );
    assert_eq!(
        found, total,
        "every node finds every user and key package record"
    );

    // Churn: a third of the nodes (and their devices) go away; as many new nodes join.
    let killed: Vec<usize> = (0..NODES).filter(|i| i % 3 == 1).collect();
    for &i in &killed {
        nodes[i].dht.shutdown().await;
    }
    let mut live_nodes: Vec<TestNode> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !killed.contains(i))
        .map(|(_, n)| n.clone())
        .collect();
    for _ in 0..killed.len() {
        let node = start_node(&mut r, test_config()).await;
        join(&node, &live_nodes[0]).await;
        live_nodes.push(node);
    }
    for node in &live_nodes {
        let _ = node.dht.bootstrap().await;
    }
    let live_devices: Vec<&TestDevice> = devices
        .iter()
        .enumerate()
        .filter(|(i, _)| !killed.contains(i))
        .map(|(_, d)| d)
        .collect();
    // Owners republish from their stores; holders replicate to the new closest peers.
    for device in &live_devices {
        for (what, result) in device
            .publisher
            .republish(&device.node.dht)
            .await
            .expect("kept records")
        {
            result.unwrap_or_else(|e| panic!("republish of {what} failed: {e}"));
        }
    }
    let (found, total) = find_everyone(&live_nodes, &live_devices).await;
    eprintln!(
        "churn: {} of {NODES} nodes replaced; {} live users; {found}/{total} lookups found from {} nodes",
        killed.len(),
        live_devices.len(),
        live_nodes.len()
    );
    assert_eq!(found, total, "every live user is still found after churn");

    // The users whose nodes left cannot republish; their records live on at the holders
    // that stayed (ten holders each, a third of them gone).
    let gone: Vec<&TestDevice> = devices
        .iter()
        .enumerate()
        .filter(|(i, _)| killed.contains(i))
        .map(|(_, d)| d)
        .collect();
    let (found, total) = find_everyone(&live_nodes[..5], &gone).await;
    eprintln!(
        "departed: records of the {} users whose nodes left: {found}/{total} lookups found from 5 nodes",
        gone.len()
    );
    assert_eq!(
        found, total,
        "surviving holders keep records of users who left"
    );
    eprintln!("total {:?}", started.elapsed());
}

/// Holders hand a record to the new closest peers when old holders leave: with three holders,
/// the publisher gone and every original holder shut down one by one (each time after the
/// others have replicated), the record is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_replicate_a_record_as_they_leave() {
    let mut r = rng(40);
    let nodes = start_network_with(&mut r, 10, replication_test_config).await;
    let mut alice = TestDevice::new("alice", nodes[0].clone(), 41);
    alice
        .publisher
        .publish_identity(&alice.node.dht, &[])
        .await
        .expect("alice publishes");
    let user = alice.identity.user_id();
    let key = RecordKey::user(&user);
    nodes[0].dht.shutdown().await;
    let mut live: Vec<TestNode> = nodes[1..].to_vec();
    let holders = |live: Vec<TestNode>| async move {
        let mut holding = Vec::new();
        for node in &live {
            if node.dht.local_record(&key).await.ok().flatten().is_some() {
                holding.push(node.peer_id());
            }
        }
        holding
    };
    let original = holders(live.clone()).await;
    eprintln!(
        "replication: {} nodes hold alice's record after publishing",
        original.len()
    );
    assert!(original.len() >= 2, "the publish reached its quorum");
    let mut departed = 0;
    for leaving in original {
        // Wait until some node that is not an original holder has a copy, then the next
        // original holder leaves.
        let copies = wait_for(Duration::from_secs(30), || {
            let live = live.clone();
            async move {
                let holding = holders(live).await;
                (holding.len() >= 3).then_some(holding.len())
            }
        })
        .await;
        assert!(copies.is_some(), "holders replicate to three peers");
        let index = live
            .iter()
            .position(|n| n.peer_id() == leaving)
            .expect("an original holder is live");
        live.remove(index).dht.shutdown().await;
        departed += 1;
    }
    alice.device.close();
    let found = live[0].dht.lookup_user(&user).await.expect("still found");
    eprintln!(
        "replication: {departed} original holders left, one by one; {} live nodes; found seq {}",
        live.len(),
        found.seq
    );
    assert_eq!(found.user_id, user);
}

/// The same directory over real sockets: loopback TCP with noise and yamux.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_works_over_loopback_tcp() {
    let mut r = rng(45);
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node_on(&mut r, test_config(), "/ip4/127.0.0.1/tcp/0").await);
    }
    for node in &nodes[1..] {
        join(node, &nodes[0]).await;
    }
    assert!(
        nodes[0]
            .address
            .to_string()
            .starts_with("/ip4/127.0.0.1/tcp/")
    );
    let mut bob = TestDevice::new("bob", nodes[1].clone(), 46);
    bob.publish_all().await.expect("bob publishes over TCP");
    let found = nodes[3]
        .dht
        .lookup_key_packages(&bob.identity.user_id(), &bob.identity.device_id())
        .await
        .expect("found over TCP");
    assert!(found.pick().is_some());
    let resolved = nodes[2]
        .dht
        .resolve("bob")
        .await
        .expect("resolves over TCP");
    assert_eq!(
        resolved.user.devices[0].addresses,
        vec![nodes[1].address.clone()]
    );
}

/// A user's second device joins the user record the first one published: the record lists
/// both, each with its own peer, and each device's key packages are found under its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_of_a_user_is_added_to_the_user_record() {
    let mut r = rng(47);
    let nodes = start_network(&mut r, 4).await;
    let mut laptop = TestDevice::new("alice", nodes[1].clone(), 48);
    laptop.publish_all().await.expect("the laptop publishes");
    let exported = core_identity::IdentityStore::new(laptop.store.clone(), clock())
        .export_identity_key()
        .expect("export");
    let phone_store: spacepanda_core::SharedStore =
        std::sync::Arc::new(spacepanda_core::MemoryStore::new());
    core_identity::IdentityStore::new(phone_store.clone(), clock())
        .import_with(&exported, "alice", &mut rng(49))
        .expect("import");
    let mut phone = TestDevice::on_store("alice", nodes[2].clone(), 50, phone_store);
    assert_eq!(phone.identity.user_id(), laptop.identity.user_id());
    phone.publish_all().await.expect("the phone publishes");

    let user = nodes[3]
        .dht
        .lookup_user(&laptop.identity.user_id())
        .await
        .expect("alice's record");
    assert_eq!(user.seq, 2, "the phone's record follows the laptop's");
    let mut peers: Vec<_> = user.devices.iter().map(|d| d.peer_id).collect();
    peers.sort();
    let mut expected = vec![nodes[1].peer_id(), nodes[2].peer_id()];
    expected.sort();
    assert_eq!(peers, expected, "both devices, each on its own peer");
    for device in [&laptop, &phone] {
        let packages = nodes[0]
            .dht
            .lookup_key_packages(&device.identity.user_id(), &device.identity.device_id())
            .await
            .expect("each device's packages");
        assert_eq!(packages.device.device_id(), device.identity.device_id());
    }
    // Resolution finds one user with two devices, not two users.
    let resolved = nodes[0].dht.resolve("alice").await.expect("one alice");
    assert_eq!(resolved.user.devices.len(), 2);

    // The laptop's kept user record (seq 1, laptop only) is now stale: keeping fresh builds
    // a new one on top of the phone's, and the record still lists both devices.
    let address = laptop.node.address.clone();
    let results = laptop
        .publisher
        .keep_fresh(&laptop.node.dht, laptop.device.client(), &[address])
        .await
        .expect("kept");
    assert!(
        results
            .iter()
            .any(|(what, r)| what.contains("newer") && r.is_ok()),
        "{results:?}"
    );
    let user = nodes[3]
        .dht
        .lookup_user(&laptop.identity.user_id())
        .await
        .expect("alice's record");
    assert_eq!(user.seq, 3);
    assert_eq!(user.devices.len(), 2);
}
