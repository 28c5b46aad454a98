//! Churn while envelopes wait: a third of the serve nodes, mailbox holders first, are killed
//! and replaced (in two waves, with hand-over rounds between) while a device is offline and
//! its sender is gone. Nothing is lost, nothing arrives twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::collections::HashSet;
use std::time::Duration;

use network_kit::nodes::{Device, dial_address, group_with, start_serve, start_serves};
use network_kit::{join, rng, wait_for};

const BOUND: Duration = Duration::from_secs(40);
const MESSAGES: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_survive_a_third_of_the_network_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2890);
    let mut serves = start_serves(&mut r, dir.path(), 21).await;
    let bootstrap = vec![dial_address(&serves[0]), dial_address(&serves[1])];
    let alice = Device::open("alice", dir.path().join("alice"), &bootstrap).await;
    let mut bob = Device::open("bob", dir.path().join("bob"), &bootstrap).await;
    let group = group_with(&alice, &mut [&mut bob]).await;

    let bob_dir = bob.go_offline().await;
    let sent = alice.send_numbered(&group, MESSAGES).await;
    assert!(alice.flushed(BOUND).await, "every envelope is deposited");
    alice.node.shutdown().await;
    drop(alice);

    // Two waves. Each kills a sixth of the network: nodes holding the whole mailbox first (but
    // never all of them: two full copies stay through each wave, as the deposit quorum
    // promises no more), then nodes holding nothing; it starts as many fresh nodes, and waits
    // for hand-over to bring three full copies back before the next wave.
    let full = full_copy_bytes(&serves).await;
    assert!(full > 0, "the mailbox is held somewhere");
    let per_wave = serves.len() / 6 + 1;
    let mut killed = 0;
    let mut holders_killed = 0;
    for wave in 0..2 {
        let mut full_holders = Vec::new();
        let mut empty = Vec::new();
        for (i, node) in serves.iter().enumerate().skip(2) {
            match node
                .dht
                .mailbox_usage()
                .await
                .unwrap()
                .unwrap_or_default()
                .bytes
            {
                bytes if bytes == full => full_holders.push(i),
                0 => empty.push(i),
                _ => {}
            }
        }
        let take_holders = full_holders.len().saturating_sub(2).min(per_wave);
        let mut victims: Vec<usize> = full_holders.into_iter().take(take_holders).collect();
        victims.extend(empty.into_iter().take(per_wave - victims.len()));
        holders_killed += take_holders;
        victims.sort_unstable_by(|a, b| b.cmp(a));
        for i in &victims {
            let node = serves.remove(*i);
            node.dht.shutdown().await;
            killed += 1;
        }
        for j in 0..victims.len() {
            let fresh = start_serve(&mut r, dir.path(), 100 + wave * 10 + j).await;
            join(&fresh, &serves[0]).await;
            serves.push(fresh);
        }
        // Hand-over: three full copies again (a majority of the closest five).
        let settled = wait_for(BOUND, || async {
            let mut copies = 0;
            for node in &serves {
                if node.dht.mailbox_usage().await.ok()??.bytes == full {
                    copies += 1;
                }
            }
            (copies >= 3).then_some(copies)
        })
        .await;
        assert!(
            settled.is_some(),
            "wave {wave}: three full copies of the mailbox again"
        );
    }
    println!(
        "churn: {killed} of {} serve nodes killed and replaced ({holders_killed} of them mailbox holders); {} envelopes in flight",
        serves.len(),
        sent.len()
    );

    let mut bob = Device::open("bob", bob_dir, &bootstrap).await;
    let arrived = bob
        .wait_until(BOUND, |d| d.messages(&group).len() >= sent.len())
        .await;
    bob.node.fetch_mailbox().await.unwrap();
    bob.pump().await;
    let ids: Vec<_> = bob.messages(&group).iter().map(|(id, _)| *id).collect();
    println!("churn: {} of {} envelopes arrived", ids.len(), sent.len());
    assert!(arrived, "every message arrived");
    let distinct: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "none twice");
    assert_eq!(distinct, sent);
    bob.node.shutdown().await;
}

/// The bytes of the mailbox's whole content: what the fullest node holds (every envelope went
/// to the same closest holders, and only bob has a mailbox).
async fn full_copy_bytes(serves: &[network_kit::TestNode]) -> u64 {
    let mut full = 0;
    for node in serves {
        let usage = node.dht.mailbox_usage().await.unwrap().unwrap_or_default();
        full = full.max(usage.bytes);
    }
    full
}
