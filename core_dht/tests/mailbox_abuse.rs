//! Abuse of mailboxes and of members' commit logs, each refused with a typed answer while
//! everything else keeps working: a fetch signed by the wrong key, a replayed proof, a deposit
//! over quota, an oversized envelope, a holder whose stored envelopes were altered, holders
//! that drop what they acknowledged, and a non-member asking a member for a group's commits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::time::Duration;

use core_dht::mailbox::{DepositOutcome, MailboxKey, MailboxRefusal, prove_access};
use core_dht::wire::{PushRefusal, Request, Response, WireDevice};
use core_dht::{DhtHandle, NodeEvent};
use network_kit::nodes::{
    Device, delivery_config, dial_address, group_with, node_config, start_serve_with, start_serves,
    start_serves_with,
};
use network_kit::{TestNode, rng, start_node};
use spacepanda_core::{KeyValueStore, WriteBatch};

const BOUND: Duration = Duration::from_secs(30);

async fn challenge(from: &DhtHandle, holder: &TestNode, mailbox: MailboxKey) -> [u8; 32] {
    match from
        .send_request(holder.peer_id(), Request::Challenge { mailbox })
        .await
        .unwrap()
    {
        Response::Challenge { nonce } => nonce,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_reads_its_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2398);
    let serves = start_serves(&mut r, dir.path(), 6).await;
    let bootstrap = vec![dial_address(&serves[0])];
    let bob = Device::open("bob", dir.path().join("bob"), &bootstrap).await;
    let eve = Device::open("eve", dir.path().join("eve"), &bootstrap).await;
    let holder = &serves[3];
    let bob_mailbox = MailboxKey::of(&bob.node.device().user_id(), &bob.node.device().device_id());
    let deposit = Request::Deposit {
        mailbox: bob_mailbox,
        envelope: b"an envelope for bob".to_vec(),
        handover: None,
    };
    assert_eq!(
        eve.node
            .dht()
            .send_request(holder.peer_id(), deposit)
            .await
            .unwrap(),
        Response::Deposited(DepositOutcome::Stored)
    );

    // Eve signs with her own certified key: her credential is not bob's mailbox's.
    let nonce = challenge(eve.node.dht(), holder, bob_mailbox).await;
    let proof = prove_access(
        eve.node.device(),
        &holder.peer_id(),
        &eve.node.dht().peer_id(),
        &bob_mailbox,
        nonce,
    );
    let mut forged = proof.clone();
    // Bob's credential with eve's signature: the signature does not verify under bob's key.
    forged.credential = bob.node.device().credential_bytes().to_vec();
    for proof in [proof, forged] {
        let answer = eve
            .node
            .dht()
            .send_request(
                holder.peer_id(),
                Request::Fetch {
                    mailbox: bob_mailbox,
                    proof: proof.clone(),
                    after: None,
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::AccessDenied { .. }),
            "{answer:?}"
        );
        let answer = eve
            .node
            .dht()
            .send_request(
                holder.peer_id(),
                Request::Ack {
                    mailbox: bob_mailbox,
                    proof,
                    ids: Vec::new(),
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::AccessDenied { .. }),
            "{answer:?}"
        );
    }

    // Bob's own proof works for bob, and replayed from eve's connection it does not.
    let nonce = challenge(bob.node.dht(), holder, bob_mailbox).await;
    let proof = prove_access(
        bob.node.device(),
        &holder.peer_id(),
        &bob.node.dht().peer_id(),
        &bob_mailbox,
        nonce,
    );
    let fetch = Request::Fetch {
        mailbox: bob_mailbox,
        proof,
        after: None,
    };
    let replayed = eve
        .node
        .dht()
        .send_request(holder.peer_id(), fetch.clone())
        .await
        .unwrap();
    assert!(
        matches!(replayed, Response::AccessDenied { .. }),
        "{replayed:?}"
    );
    match bob
        .node
        .dht()
        .send_request(holder.peer_id(), fetch)
        .await
        .unwrap()
    {
        Response::Envelopes { envelopes, more } => {
            assert_eq!(envelopes.len(), 1);
            assert_eq!(envelopes[0].bytes, b"an envelope for bob");
            assert!(!more);
        }
        other => panic!("bob reads his mailbox: {other:?}"),
    }
    // Eve's drain attempt deleted nothing: the envelope is still there for bob.
    assert_eq!(
        holder.dht.mailbox_usage().await.unwrap().unwrap().mailboxes,
        1
    );
    bob.node.shutdown().await;
    eve.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_sizes_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2624);
    let config = core_dht::DhtConfig {
        mailbox_max_per_sender: 3,
        max_envelope_len: 64 * 1024,
        ..delivery_config()
    };
    let (holder, _) = start_serve_with(&mut r, dir.path(), 0, config.clone()).await;
    let mut senders = Vec::new();
    for _ in 0..2 {
        let sender = start_node(&mut r, config.clone()).await.dht;
        sender
            .add_peer(holder.peer_id(), holder.address.clone())
            .await
            .unwrap();
        senders.push(sender);
    }
    let mailbox = MailboxKey::from_bytes([7; 32]);
    let deposit = |n: usize, len: usize| Request::Deposit {
        mailbox,
        envelope: vec![n as u8; len],
        handover: None,
    };
    for n in 0..3 {
        assert_eq!(
            senders[0]
                .send_request(holder.peer_id(), deposit(n, 100))
                .await
                .unwrap(),
            Response::Deposited(DepositOutcome::Stored)
        );
    }
    assert_eq!(
        senders[0]
            .send_request(holder.peer_id(), deposit(3, 100))
            .await
            .unwrap(),
        Response::DepositRefused(MailboxRefusal::SenderQuota { held: 3, max: 3 })
    );
    // The same envelope again is stored once, not refused.
    assert_eq!(
        senders[0]
            .send_request(holder.peer_id(), deposit(0, 100))
            .await
            .unwrap(),
        Response::Deposited(DepositOutcome::AlreadyHeld)
    );
    // Another sender still gets in.
    assert_eq!(
        senders[1]
            .send_request(holder.peer_id(), deposit(9, 100))
            .await
            .unwrap(),
        Response::Deposited(DepositOutcome::Stored)
    );
    // One byte over the holder's bound: refused by the holder, with the sizes.
    assert_eq!(
        senders[1]
            .send_request(holder.peer_id(), deposit(10, 64 * 1024 + 1))
            .await
            .unwrap(),
        Response::DepositRefused(MailboxRefusal::Oversized {
            len: 64 * 1024 + 1,
            max: 64 * 1024
        })
    );
    // Far over the protocol's bound: the request never reaches the holder (the codec refuses
    // it), the sender gets an error, and the holder keeps working.
    let error = senders[1]
        .send_request(holder.peer_id(), deposit(11, 512 * 1024))
        .await
        .expect_err("a request over the codec's bound fails");
    assert_eq!(error.kind(), core_dht::ErrorKind::Network, "{error}");
    assert_eq!(
        senders[1]
            .send_request(holder.peer_id(), deposit(12, 100))
            .await
            .unwrap(),
        Response::Deposited(DepositOutcome::Stored)
    );
    assert_eq!(
        holder.dht.mailbox_usage().await.unwrap().unwrap().bytes,
        5 * 100,
        "what was refused takes no room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_alters_envelopes_is_caught_and_the_message_still_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2690);
    // Serve nodes whose stores the test keeps, to play a dishonest holder with one of them.
    let serves = start_serves_with(&mut r, dir.path(), 8, delivery_config()).await;
    let bootstrap = vec![dial_address(&serves[0].0)];
    let alice = Device::open("alice", dir.path().join("alice"), &bootstrap).await;
    let mut bob = Device::open("bob", dir.path().join("bob"), &bootstrap).await;
    let group = group_with(&alice, &mut [&mut bob]).await;
    let bob_dir = bob.go_offline().await;
    let sent = alice
        .node
        .send(&group, b"kept by honest holders")
        .await
        .unwrap();
    assert!(alice.flushed(BOUND).await);

    // One holder alters every envelope it keeps (same names, other bytes).
    let (liar, store) = serves
        .iter()
        .find(|(_, store)| {
            !store
                .scan_prefix("mailbox", &spacepanda_core::Key::from_segment("e"))
                .unwrap()
                .is_empty()
        })
        .expect("some serve node holds bob's mailbox");
    let mut batch = WriteBatch::new();
    for (key, mut value) in store
        .scan_prefix("mailbox", &spacepanda_core::Key::from_segment("e"))
        .unwrap()
    {
        let mut entry: ciborium::Value = ciborium::from_reader(value.as_slice()).unwrap();
        let fields = entry.as_map_mut().expect("an entry is a map");
        let (_, bytes) = fields
            .iter_mut()
            .find(|(name, _)| name.as_text() == Some("bytes"))
            .expect("an entry keeps its bytes");
        let bytes = bytes.as_bytes_mut().expect("a byte string");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x5a;
        value.clear();
        ciborium::into_writer(&entry, &mut value).unwrap();
        batch.put("mailbox", key, value);
    }
    store.apply(batch).unwrap();
    let _ = liar;

    let mut bob = Device::open("bob", bob_dir, &bootstrap).await;
    assert!(
        bob.wait_until(BOUND, |d| d
            .messages(&group)
            .iter()
            .any(|(id, _)| *id == sent))
            .await,
        "the honest holders' copy arrives"
    );
    // The report comes with the fetch round, which may end after the message's event (or
    // after a copy pushed directly once bob is back): waited for, with the same bound.
    let reported = bob
        .wait_until(BOUND, |d| {
            d.notices
                .iter()
                .any(|notice| matches!(notice, NodeEvent::AlteredByHolder { envelopes: 1 }))
        })
        .await;
    assert!(
        reported,
        "the altered copy was caught and reported: {:?}",
        bob.notices
    );
    bob.node.fetch_mailbox().await.unwrap();
    bob.pump().await;
    assert_eq!(bob.messages(&group).len(), 1, "delivered once");
    alice.node.shutdown().await;
    bob.node.shutdown().await;
}

/// A device's settings with no mailboxes of its own, so the test knows every copy.
fn without_mailboxes(name: &str, bootstrap: &[libp2p::Multiaddr]) -> core_dht::NodeConfig {
    let mut config = node_config(name, bootstrap);
    config.hold_mailboxes = false;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_that_drop_what_they_acknowledged_cost_copies_not_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(11340);
    let config = core_dht::DhtConfig {
        // No hand-over restores the dropped copies: only the deposit's own copies count.
        handoff_interval: Duration::from_secs(3600),
        ..delivery_config()
    };
    let serves = start_serves_with(&mut r, dir.path(), 8, config).await;
    let bootstrap = vec![dial_address(&serves[0].0)];
    let open = |name: &'static str| {
        let bootstrap = bootstrap.clone();
        let dir = dir.path().join(name);
        async move { Device::open_with(name, dir, without_mailboxes(name, &bootstrap)).await }
    };
    let alice = open("alice").await;
    let mut bob = open("bob").await;
    let group = group_with(&alice, &mut [&mut bob]).await;
    let bob_dir = bob.go_offline().await;
    let sent = alice.send_numbered(&group, 3).await;
    assert!(alice.flushed(BOUND).await);

    // Every holder but one acknowledged the deposits and then dropped them.
    let holding: Vec<_> = serves
        .iter()
        .filter(|(_, store)| {
            !store
                .scan_prefix("mailbox", &spacepanda_core::Key::from_segment("e"))
                .unwrap()
                .is_empty()
        })
        .collect();
    assert!(
        holding.len() >= 3,
        "a majority stored them: {}",
        holding.len()
    );
    for (_, store) in holding.iter().skip(1) {
        let mut batch = WriteBatch::new();
        for (key, _) in store
            .scan_prefix("mailbox", &spacepanda_core::Key::from_segment("e"))
            .unwrap()
        {
            batch.delete("mailbox", key);
        }
        store.apply(batch).unwrap();
    }

    let mut bob = Device::open_with("bob", bob_dir, without_mailboxes("bob", &bootstrap)).await;
    assert!(
        bob.wait_until(BOUND, |d| d.messages(&group).len() == sent.len())
            .await,
        "the one honest copy is enough"
    );
    let ids: std::collections::HashSet<_> =
        bob.messages(&group).iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, sent);
    alice.node.shutdown().await;
    bob.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_member_device_gets_a_groups_commits_from_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(1800);
    let serves = start_serves(&mut r, dir.path(), 6).await;
    let bootstrap = vec![dial_address(&serves[0])];
    let alice = Device::open("alice", dir.path().join("alice"), &bootstrap).await;
    let mut bob = Device::open("bob", dir.path().join("bob"), &bootstrap).await;
    let mut carol = Device::open("carol", dir.path().join("carol"), &bootstrap).await;
    let eve = Device::open("eve", dir.path().join("eve"), &bootstrap).await;
    eve.node.publish().await.unwrap();
    // Adding carol is a commit of epoch 1 that alice sent bob: one for her log.
    let group = group_with(&alice, &mut [&mut bob, &mut carol]).await;
    let alice_peer = alice.node.dht().peer_id();
    let as_wire = |device: &Device| WireDevice {
        user: *device.node.device().user_id().as_bytes(),
        device: *device.node.device().device_id().as_bytes(),
    };
    let ask = |requester: WireDevice| Request::RecentCommits {
        group: group.as_slice().to_vec(),
        from_epoch: 1,
        requester,
    };

    // Eve is no member; naming bob's device from eve's peer does not make her one.
    for requester in [as_wire(&eve), as_wire(&bob)] {
        let answer = eve
            .node
            .dht()
            .send_request(alice_peer, ask(requester))
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::PushRefused(PushRefusal::Refused { .. })),
            "{answer:?}"
        );
    }
    // Bob, from his own peer, gets the commit that added carol.
    match bob
        .node
        .dht()
        .send_request(alice_peer, ask(as_wire(&bob)))
        .await
        .unwrap()
    {
        Response::Commits { envelopes } => assert_eq!(envelopes.len(), 1),
        other => panic!("bob gets the commits: {other:?}"),
    }
    for device in [&alice, &bob, &carol, &eve] {
        device.node.shutdown().await;
    }
}
