//! Delivery over a real in-process network: `Node`s (sealed redb files) and serve nodes
//! holding mailboxes (their own redb files), on libp2p's memory transport. Three users, four
//! devices: invites by address, messages both ways, a device offline while messages are sent
//! and its senders gone when it returns, a removed member that gets nothing after.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::collections::HashSet;
use std::time::Duration;

use core_mls::Event;
use network_kit::nodes::{Device, dial_address, node_config, start_serves};
use network_kit::rng;

const BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_four_devices_online_offline_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(1800);
    let serves = start_serves(&mut r, dir.path(), 20).await;
    let bootstrap = vec![dial_address(&serves[0]), dial_address(&serves[7])];

    let mut alice = Device::open("alice", dir.path().join("alice"), &bootstrap).await;
    alice.node.publish().await.expect("alice publishes");
    // Alice links a second device: same user, its own device and files.
    let mut linked = node_config("alice", &bootstrap);
    linked.link = Some(alice.node.export_identity_key().unwrap());
    let mut alice2 = Device::open_with("alice", dir.path().join("alice2"), linked).await;
    alice2
        .node
        .publish()
        .await
        .expect("alice's second device publishes");
    assert_eq!(
        alice2.node.device().user_id(),
        alice.node.device().user_id()
    );
    let mut bob = Device::open("bob", dir.path().join("bob"), &bootstrap).await;
    let mut carol = Device::open("carol", dir.path().join("carol"), &bootstrap).await;
    bob.node.publish().await.expect("bob publishes");
    carol.node.publish().await.expect("carol publishes");

    // Bob invites by address, alice and carol in one commit: both of alice's devices.
    let group = bob.node.create_group().await.unwrap();
    let invited = bob
        .node
        .invite_all(&group, &[&alice.address(), &carol.address()])
        .await
        .expect("invite alice and carol");
    let alice_devices = invited
        .added
        .iter()
        .filter(|m| m.user_id() == alice.node.device().user_id())
        .count();
    assert_eq!(alice_devices, 2, "an invite to alice adds both her devices");
    assert_eq!(invited.added.len(), 3);
    assert!(invited.skipped.is_empty());
    for device in [&mut alice, &mut alice2, &mut carol] {
        let name = device.name.clone();
        assert!(
            device.wait_until(BOUND, |d| d.joined().is_some()).await,
            "{name} joined from the Welcome"
        );
    }

    // Messages both ways.
    bob.node.send(&group, b"hello from bob").await.unwrap();
    carol.node.send(&group, b"hello from carol").await.unwrap();
    for device in [&mut alice, &mut alice2] {
        let name = device.name.clone();
        assert!(
            device
                .wait_until(BOUND, |d| d.messages(&group).len() == 2)
                .await,
            "{name} got both messages"
        );
    }
    assert!(
        bob.wait_until(BOUND, |d| d.messages(&group).len() == 1)
            .await
    );
    assert!(
        carol
            .wait_until(BOUND, |d| d.messages(&group).len() == 1)
            .await
    );

    // Carol goes offline; bob and alice send; bob goes offline too, with everything in
    // mailboxes (his outbox empty), before carol comes back.
    carol.node.shutdown().await;
    let carol_dir = carol.dir.clone();
    drop(carol);
    let mut sent = HashSet::new();
    for i in 0..5 {
        sent.insert(
            bob.node
                .send(&group, format!("bob {i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    for i in 0..2 {
        sent.insert(
            alice
                .node
                .send(&group, format!("alice {i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    assert!(
        bob.flushed(BOUND).await,
        "bob's envelopes are delivered or deposited"
    );
    assert!(
        alice.flushed(BOUND).await,
        "alice's envelopes are delivered or deposited"
    );
    bob.node.shutdown().await;
    drop(bob);

    let mut carol = Device::open("carol", carol_dir, &bootstrap).await;
    assert!(
        carol
            .wait_until(BOUND, |d| d.messages(&group).len() == sent.len())
            .await,
        "carol got every message from her mailbox: {:?}",
        carol.messages(&group).len()
    );
    // A little longer: nothing more may arrive (a copy from another holder, a retry).
    carol.node.fetch_mailbox().await.unwrap();
    carol.pump().await;
    let ids: Vec<_> = carol.messages(&group).iter().map(|(id, _)| *id).collect();
    let distinct: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(ids.len(), distinct.len(), "no message delivered twice");
    assert!(sent.iter().all(|id| distinct.contains(id)));

    // Alice removes carol; what alice sends after reaches her second device, not carol.
    alice
        .node
        .remove_user(&group, &carol.node.device().user_id())
        .await
        .unwrap();
    assert!(
        carol
            .wait_until(BOUND, |d| d
                .seen
                .iter()
                .any(|e| matches!(e, Event::RemovedFromGroup { .. })))
            .await,
        "carol learns she was removed"
    );
    let after = alice.node.send(&group, b"after carol left").await.unwrap();
    assert!(
        alice2
            .wait_until(BOUND, |d| d
                .messages(&group)
                .iter()
                .any(|(id, _)| *id == after))
            .await
    );
    assert!(alice.flushed(BOUND).await);
    carol.node.fetch_mailbox().await.unwrap();
    carol.pump().await;
    assert!(
        !carol.messages(&group).iter().any(|(id, _)| *id == after),
        "a removed member gets nothing sent after its removal"
    );
    for device in [&alice, &alice2, &carol] {
        device.node.shutdown().await;
    }
}
