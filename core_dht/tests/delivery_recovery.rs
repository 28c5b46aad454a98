//! When delivery goes wrong, nothing is lost: a commit lost with every mailbox copy is asked
//! back from the group's members, and envelopes refused by full mailboxes wait in the sender's
//! outbox, with the reason, until they fit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::collections::HashSet;
use std::time::Duration;

use core_dht::NodeEvent;
use core_dht::mailbox::MailboxRefusal;
use core_mls::Event;
use network_kit::nodes::{
    Device, delivery_config, dial_address, group_with, node_config, start_serves_with,
};
use network_kit::rng;
use spacepanda_core::{Key, KeyValueStore, WriteBatch};

const BOUND: Duration = Duration::from_secs(30);

fn device_config(name: &str, bootstrap: &[libp2p::Multiaddr]) -> core_dht::NodeConfig {
    let mut config = node_config(name, bootstrap);
    // Only the serve nodes hold mailboxes, so the test knows every copy.
    config.hold_mailboxes = false;
    config.mls.missing_commit_alert = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_with_its_mailbox_copies_is_asked_back_from_members() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2976);
    let config = core_dht::DhtConfig {
        // No hand-over moves copies where the test does not look.
        handoff_interval: Duration::from_secs(3600),
        ..delivery_config()
    };
    let serves = start_serves_with(&mut r, dir.path(), 8, config).await;
    let bootstrap = vec![dial_address(&serves[0].0)];
    let open = |name: &'static str| {
        let bootstrap = bootstrap.clone();
        let dir = dir.path().join(name);
        async move { Device::open_with(name, dir, device_config(name, &bootstrap)).await }
    };
    let alice = open("alice").await;
    let mut bob = open("bob").await;
    let mut carol = open("carol").await;
    for device in [&alice, &bob, &carol] {
        device.node.publish().await.unwrap();
    }
    let group = alice.node.create_group().await.unwrap();
    alice.node.invite(&group, &bob.address()).await.unwrap();
    assert!(bob.wait_until(BOUND, |d| d.joined().is_some()).await);
    alice.node.invite(&group, &carol.address()).await.unwrap();
    assert!(carol.wait_until(BOUND, |d| d.joined().is_some()).await);
    assert!(alice.flushed(BOUND).await);
    assert!(bob.flushed(BOUND).await);

    // Bob is offline while alice removes carol; then every mailbox copy of that commit is lost.
    bob.node.shutdown().await;
    let bob_dir = bob.dir.clone();
    drop(bob);
    let carol_user = carol.node.device().user_id();
    alice.node.remove_user(&group, &carol_user).await.unwrap();
    assert!(
        alice.flushed(BOUND).await,
        "the commit is deposited for bob"
    );
    let mut lost = 0;
    for (_, store) in &serves {
        let mut batch = WriteBatch::new();
        for (key, _) in store
            .scan_prefix("mailbox", &Key::from_segment("e"))
            .unwrap()
        {
            batch.delete("mailbox", key);
            lost += 1;
        }
        if !batch.is_empty() {
            store.apply(batch).unwrap();
        }
    }
    assert!(
        lost >= 2,
        "the commit was held by a majority ({lost} copies)"
    );

    // Bob returns; alice's next message (of the epoch after the lost commit) reaches him
    // directly, waits in his buffer, and he asks the members for the commit he lacks.
    let mut bob = Device::open_with("bob", bob_dir, device_config("bob", &bootstrap)).await;
    let fetched = bob.node.fetch_mailbox().await.unwrap();
    assert_eq!(
        fetched.envelopes, 0,
        "no copy of the commit is left anywhere"
    );
    let sent = alice.node.send(&group, b"after carol left").await.unwrap();
    assert!(
        bob.wait_until(BOUND, |d| d
            .messages(&group)
            .iter()
            .any(|(id, _)| *id == sent))
            .await,
        "bob caught up and got the message"
    );
    assert!(
        bob.seen
            .iter()
            .any(|e| matches!(e, Event::MissingCommit { .. })),
        "the engine reported the missing commit"
    );
    assert!(
        bob.seen.iter().any(|e| matches!(
            e,
            Event::MembersRemoved { members, .. } if members.iter().any(|m| m.user_id() == carol_user)
        )),
        "bob applied the commit that removed carol"
    );
    for device in [&alice, &bob, &carol] {
        device.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailboxes_delay_with_their_reason_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(3030);
    let config = core_dht::DhtConfig {
        mailbox_max_per_sender: 2,
        ..delivery_config()
    };
    let serves = start_serves_with(&mut r, dir.path(), 6, config).await;
    let bootstrap = vec![dial_address(&serves[0].0)];
    let (mut alice, bob, group) = pair_in_group(dir.path(), &bootstrap).await;
    assert!(alice.flushed(BOUND).await);
    let bob_dir = bob.go_offline().await;

    let sent = alice.send_numbered(&group, 4).await;
    assert!(
        alice
            .wait_until(BOUND, |d| d.notices.iter().any(|n| matches!(
                n,
                NodeEvent::DeliveryDelayed {
                    refusal: Some(MailboxRefusal::SenderQuota { max: 2, .. }),
                    ..
                }
            )))
            .await,
        "alice is told why: {:?}",
        alice.notices
    );
    assert_eq!(
        alice.node.undelivered().await.unwrap(),
        2,
        "two wait in her outbox"
    );

    // Bob returns: he fetches two, and the other two reach him once alice retries.
    let mut bob = Device::open_with("bob", bob_dir, device_config("bob", &bootstrap)).await;
    assert!(
        bob.wait_until(BOUND, |d| d.messages(&group).len() == 4)
            .await,
        "all four arrive: {}",
        bob.messages(&group).len()
    );
    assert!(alice.flushed(BOUND).await);
    bob.node.fetch_mailbox().await.unwrap();
    bob.pump().await;
    let ids: HashSet<_> = bob.messages(&group).iter().map(|(id, _)| *id).collect();
    assert_eq!(bob.messages(&group).len(), 4, "none twice");
    assert_eq!(ids, sent);
    alice.node.shutdown().await;
    bob.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_arrives_whole_and_in_order() {
    // Far more than the engine's out-of-order tolerance (16) within one sender's ratchet:
    // mailboxes must give envelopes back in the order they were deposited.
    const BACKLOG: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(5886);
    let serves = start_serves_with(&mut r, dir.path(), 6, delivery_config()).await;
    let bootstrap = vec![dial_address(&serves[0].0)];
    let (alice, bob, group) = pair_in_group(dir.path(), &bootstrap).await;
    let bob_dir = bob.go_offline().await;

    let mut order = Vec::new();
    for i in 0..BACKLOG {
        let body = format!("backlog {i}");
        alice.node.send(&group, body.as_bytes()).await.unwrap();
        order.push(body.into_bytes());
    }
    assert!(alice.flushed(BOUND).await);
    let mut bob = Device::open_with("bob", bob_dir, device_config("bob", &bootstrap)).await;
    assert!(
        bob.wait_until(BOUND, |d| d.messages(&group).len() == BACKLOG)
            .await,
        "the whole backlog arrives: {} of {BACKLOG}",
        bob.messages(&group).len()
    );
    let bodies: Vec<Vec<u8>> = bob.messages(&group).into_iter().map(|(_, b)| b).collect();
    assert_eq!(bodies, order, "in the order alice sent them");
    alice.node.shutdown().await;
    bob.node.shutdown().await;
}

/// Alice and bob (devices that hold no mailboxes) in a group alice made.
async fn pair_in_group(
    dir: &std::path::Path,
    bootstrap: &[libp2p::Multiaddr],
) -> (Device, Device, core_mls::GroupId) {
    let alice = Device::open_with(
        "alice",
        dir.join("alice"),
        device_config("alice", bootstrap),
    )
    .await;
    let mut bob = Device::open_with("bob", dir.join("bob"), device_config("bob", bootstrap)).await;
    let group = group_with(&alice, &mut [&mut bob]).await;
    (alice, bob, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_back_online_is_pushed_to_as_soon_as_it_speaks() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(7114);
    let serves = start_serves_with(&mut r, dir.path(), 6, delivery_config()).await;
    let bootstrap = vec![dial_address(&serves[0].0)];
    let mut alice_config = device_config("alice", &bootstrap);
    // Alice would send to bob's mailbox for minutes after a failed push…
    alice_config.offline_memory = Duration::from_secs(300);
    let mut alice = Device::open_with("alice", dir.path().join("alice"), alice_config).await;
    let mut bob = Device::open_with(
        "bob",
        dir.path().join("bob"),
        device_config("bob", &bootstrap),
    )
    .await;
    let group = group_with(&alice, &mut [&mut bob]).await;
    let bob_dir = bob.go_offline().await;
    alice
        .node
        .send(&group, b"while bob was away")
        .await
        .unwrap();
    assert!(alice.flushed(BOUND).await, "deposited for bob");

    // …and bob, back on a new address, reads his mailbox only when he opens.
    let mut bob_config = device_config("bob", &bootstrap);
    bob_config.fetch_interval = Duration::from_secs(3600);
    let mut bob = Device::open_with("bob", bob_dir, bob_config).await;
    assert!(
        bob.wait_until(BOUND, |d| d.messages(&group).len() == 1)
            .await,
        "the deposited message is fetched at open"
    );
    bob.node.send(&group, b"back").await.unwrap();
    assert!(
        alice
            .wait_until(BOUND, |d| d.messages(&group).len() == 1)
            .await
    );
    // Bob spoke to alice: she pushes to him again, instead of his mailbox.
    alice.node.send(&group, b"welcome back").await.unwrap();
    assert!(
        bob.wait_until(BOUND, |d| d.messages(&group).len() == 2)
            .await,
        "pushed, not left in a mailbox bob reads in an hour"
    );
    alice.node.shutdown().await;
    bob.node.shutdown().await;
}
