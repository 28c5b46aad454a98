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

    // Two waves; each kills the nodes holding the most mailbox bytes first (bob's holders,
    // though not all at once), then others, up to a sixth of the network, and starts as many
    // fresh nodes; hand-over rounds run in between.
    let per_wave = serves.len() / 6 + 1;
    let mut killed = 0;
    let mut holders_killed = 0;
    for wave in 0..2 {
        let mut usage = Vec::new();
        for (i, node) in serves.iter().enumerate().skip(2) {
            let bytes = node
                .dht
                .mailbox_usage()
                .await
                .unwrap()
                .unwrap_or_default()
                .bytes;
            usage.push((bytes, i));
        }
        usage.sort_unstable_by(|a, b| b.cmp(a));
        let holders_now = usage.iter().filter(|(bytes, _)| *bytes > 0).count();
        // Never every holder at once: at least two stay through each wave.
        let take_holders = holders_now.saturating_sub(2).min(per_wave);
        let mut victims: Vec<usize> = usage.iter().take(take_holders).map(|(_, i)| *i).collect();
        victims.extend(
            usage
                .iter()
                .filter(|(bytes, _)| *bytes == 0)
                .take(per_wave - victims.len())
                .map(|(_, i)| *i),
        );
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
        // Hand-over: the envelopes reach a majority of the current closest set again.
        let settled = wait_for(BOUND, || async {
            let mut holding = 0;
            for node in &serves {
                if node.dht.mailbox_usage().await.ok()??.bytes > 0 {
                    holding += 1;
                }
            }
            (holding >= 3).then_some(holding)
        })
        .await;
        assert!(
            settled.is_some(),
            "wave {wave}: envelopes are held again by a majority"
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
