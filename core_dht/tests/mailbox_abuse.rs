//! Abuse of mailboxes, each refused with a typed answer while everything else keeps working:
//! a fetch signed by the wrong key, a replayed proof, a deposit over quota, an oversized
//! envelope, and a holder whose stored envelopes were altered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::sync::Arc;
use std::time::Duration;

use core_dht::mailbox::{DepositOutcome, MailboxKey, MailboxRefusal, prove_access};
use core_dht::wire::{Request, Response};
use core_dht::{DhtHandle, NodeEvent};
use network_kit::nodes::{
    Device, delivery_config, dial_address, group_with, start_serves, start_serves_with,
};
use network_kit::{TestNode, clock, keypair, rng};
use spacepanda_core::{KeyValueStore, RedbStore, WriteBatch};

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
    let store = Arc::new(RedbStore::create(dir.path().join("holder.redb")).unwrap());
    let holder =
        DhtHandle::spawn_with_mailboxes(&keypair(&mut r), config.clone(), clock(), store).unwrap();
    let holder_address = holder.listen("/memory/0".parse().unwrap()).await.unwrap();
    let holder = TestNode {
        dht: holder,
        address: holder_address,
    };
    let mut senders = Vec::new();
    for _ in 0..2 {
        let sender = DhtHandle::spawn(&keypair(&mut r), config.clone(), clock()).unwrap();
        sender.listen("/memory/0".parse().unwrap()).await.unwrap();
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
    assert!(
        bob.notices
            .iter()
            .any(|notice| matches!(notice, NodeEvent::AlteredByHolder { envelopes: 1 })),
        "the altered copy was caught and reported: {:?}",
        bob.notices
    );
    bob.node.fetch_mailbox().await.unwrap();
    bob.pump().await;
    assert_eq!(bob.messages(&group).len(), 1, "delivered once");
    alice.node.shutdown().await;
    bob.node.shutdown().await;
}
