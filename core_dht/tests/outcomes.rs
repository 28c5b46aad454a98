//! Outcomes a user can act on: "not found" told apart from "unreachable", a publication that
//! falls short of its quorum reported with its counts (an acknowledgement is not storage),
//! and a node's per-publisher quota.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use core_dht::{DhtConfig, DhtError, ErrorKind, Rejection};
use network_kit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_peers_is_unreachable_not_not_found() {
    let mut r = rng(60);
    let lonely = start_node(&mut r, test_config()).await;
    let bob = TestDevice::new("bob", lonely.clone(), 61);
    let user = bob.identity.user_id();
    match lonely.dht.lookup_user(&user).await {
        Err(e @ DhtError::Unreachable { .. }) => assert_eq!(e.kind(), ErrorKind::Network),
        other => panic!("a node with no peers must say Unreachable, got {other:?}"),
    }
    match lonely
        .dht
        .lookup_key_packages(&user, &bob.identity.device_id())
        .await
    {
        Err(DhtError::Unreachable { .. }) => {}
        other => panic!("a node with no peers must say Unreachable, got {other:?}"),
    }
    // Publishing has nowhere to go either.
    let record = bob
        .publisher
        .user_record(None, lonely.peer_id(), &[])
        .expect("record");
    match lonely.dht.publish(&record).await {
        Err(DhtError::Unreachable { .. }) => {}
        other => panic!("publishing with no peers must say Unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_network_without_the_record_is_not_found() {
    let mut r = rng(62);
    let nodes = start_network(&mut r, 4).await;
    let bob = TestDevice::new("bob", nodes[1].clone(), 63);
    let user = bob.identity.user_id();
    match nodes[0].dht.lookup_user(&user).await {
        Err(e @ DhtError::NotFound { reached, .. }) => {
            assert!(reached >= 1, "peers answered");
            assert_eq!(e.kind(), ErrorKind::NotFound);
        }
        other => panic!("an unpublished user must be NotFound, got {other:?}"),
    }
    // Claims that nobody made are an empty list, not an error.
    let claims = nodes[0]
        .dht
        .lookup_claims(&user, &bob.identity.device_id())
        .await
        .expect("no claims");
    assert!(claims.is_empty());
}

/// Peers whose quota is one record per publisher acknowledge a second record and discard it:
/// the publisher's check afterwards counts no replica, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_put_that_nobody_stored_falls_short_of_the_quorum() {
    let mut r = rng(64);
    let strict = || DhtConfig {
        publisher_quota: 1,
        ..test_config()
    };
    let mut nodes = start_network_with(&mut r, 4, strict).await;
    let publisher_node = start_node(&mut r, test_config()).await;
    join(&publisher_node, &nodes[0]).await;
    nodes.push(publisher_node.clone());
    let bob = TestDevice::new("bob", publisher_node.clone(), 65);

    let user_record = bob
        .publisher
        .user_record(None, publisher_node.peer_id(), &[])
        .expect("record");
    let report = publisher_node
        .dht
        .publish(&user_record)
        .await
        .expect("the first record fits every quota");
    assert!(report.confirmed >= 3);

    let names = bob.publisher.name_entries().expect("entries");
    match publisher_node.dht.publish(&names[0]).await {
        Err(
            e @ DhtError::QuorumNotReached {
                confirmed,
                acked,
                asked,
                needed,
                ..
            },
        ) => {
            assert_eq!(confirmed, 0, "no peer stored it");
            assert_eq!(acked, asked, "yet every peer acknowledged the put");
            assert_eq!(needed, 3);
            assert_eq!(e.kind(), ErrorKind::Quorum);
        }
        other => panic!("expected QuorumNotReached, got {other:?}"),
    }
    // Each strict node refused it with the quota.
    for node in &nodes[..4] {
        let status = node.dht.status().await.expect("status");
        assert!(status.refused_puts >= 1, "{} refused", status.peer_id);
    }

    // The publisher's own node enforces its quota too, before anything leaves.
    let tight = start_node(
        &mut r,
        DhtConfig {
            publisher_quota: 1,
            ..test_config()
        },
    )
    .await;
    join(&tight, &nodes[0]).await;
    let carol = TestDevice::new("carol", tight.clone(), 66);
    let first = carol
        .publisher
        .user_record(None, tight.peer_id(), &[])
        .expect("record");
    let _ = tight.dht.publish(&first).await;
    let second = carol.publisher.name_entries().expect("entries");
    match tight.dht.publish(&second[0]).await {
        Err(DhtError::InvalidRecord(Rejection::QuotaExceeded {
            held: 1, quota: 1, ..
        })) => {}
        other => panic!("expected the local quota refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_from_a_list_of_bootstrap_addresses() {
    let mut r = rng(67);
    let nodes = start_network(&mut r, 3).await;
    let newcomer = start_node(&mut r, test_config()).await;
    let with_peer_id = |n: &TestNode| {
        n.address
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(n.peer_id()))
    };
    // One address without a peer id is skipped; the others are enough.
    let list = vec![
        nodes[0].address.clone(),
        with_peer_id(&nodes[1]),
        with_peer_id(&nodes[2]),
    ];
    let peers = newcomer.dht.join(&list).await.expect("joins");
    assert!(peers >= 2, "the routing table holds the network: {peers}");
    // Nothing usable: unreachable, with the reason.
    let lonely = start_node(&mut r, test_config()).await;
    match lonely.dht.join(&[nodes[0].address.clone()]).await {
        Err(DhtError::Unreachable { reason }) => assert!(reason.contains("no /p2p/ peer id")),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // A well-formed address of a peer that is not there: dialed, nobody answers.
    let gone = start_node(&mut r, test_config()).await;
    let gone_address = with_peer_id(&gone);
    gone.dht.shutdown().await;
    match lonely.dht.join(&[gone_address]).await {
        Err(DhtError::Unreachable { reason }) => {
            assert!(
                reason.contains("none of the 1 bootstrap peers answered"),
                "{reason}"
            )
        }
        other => panic!("a bootstrap peer that is gone must give Unreachable, got {other:?}"),
    }
}
