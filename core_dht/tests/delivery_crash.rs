//! Crashes while sending and receiving: each device runs in its own tokio runtime (its
//! "process"), which is dropped at seeded random moments — its tasks die wherever they are —
//! and the device is reopened from its sealed redb file. Every message whose `send` returned
//! arrives, and none is handed to the application again after the application acknowledged
//! it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use core_dht::{Node, NodeEvent};
use core_mls::{Event, GroupId, MessageId};
use libp2p::Multiaddr;
use network_kit::nodes::{PASSPHRASE, dial_address, node_config, start_serves};
use network_kit::rng;
use rand::Rng;
use tokio::runtime::Runtime;

const ROUNDS: usize = 5;
const PER_ROUND: usize = 6;
const BOUND: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Received {
    /// Messages handed to the application (an unacknowledged one may come again).
    seen: HashSet<MessageId>,
    /// Messages the application acknowledged.
    acked: HashSet<MessageId>,
    /// Acknowledged messages handed over again.
    duplicates: usize,
}

/// One device's process: a runtime of its own with its node in it.
struct Process {
    runtime: Runtime,
    node: Arc<Node>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn start(
    name: &str,
    dir: &PathBuf,
    bootstrap: &[Multiaddr],
    received: Option<Arc<Mutex<Received>>>,
    refused: Arc<Mutex<Vec<String>>>,
) -> Process {
    let runtime = runtime();
    let node = runtime.block_on(async {
        Arc::new(
            Node::open(dir, PASSPHRASE, node_config(name, bootstrap))
                .await
                .unwrap(),
        )
    });
    let mut events = node.take_events().unwrap();
    let listener = node.clone();
    runtime.spawn(async move {
        while let Some(event) = events.recv().await {
            if let NodeEvent::DeliveryRefused { reason, .. } = &event {
                refused.lock().unwrap().push(reason.clone());
            }
            let (Some(received), NodeEvent::Engine(event)) = (received.as_ref(), event) else {
                continue;
            };
            let Event::Message {
                message_id,
                delivery,
                ..
            } = *event
            else {
                continue;
            };
            {
                let mut received = received.lock().unwrap();
                if received.acked.contains(&message_id) {
                    received.duplicates += 1;
                    continue;
                }
                received.seen.insert(message_id);
            }
            if listener.ack_delivered(delivery).await.is_ok() {
                received.lock().unwrap().acked.insert(message_id);
            }
        }
    });
    Process { runtime, node }
}

/// A crash: the runtime goes, with every task of the node wherever it was. (A store write
/// already running on a blocking thread completes or not, atomically, as on a real crash.)
fn kill(process: Process) {
    let Process { runtime, node } = process;
    drop(node);
    runtime.shutdown_timeout(Duration::from_secs(10));
}

/// Polls `check` until it holds, at most `bound` (this test's one way of waiting; it runs on
/// a plain thread, between the devices' runtimes).
fn wait_until(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_at_random_points_nothing_lost_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let network = runtime();
    let mut r = rng(4987);
    let serves = network.block_on(start_serves(&mut r, dir.path(), 8));
    let bootstrap = vec![dial_address(&serves[0])];
    let alice_dir = dir.path().join("alice");
    let bob_dir = dir.path().join("bob");
    let received = Arc::new(Mutex::new(Received::default()));
    // Envelopes a device's engine refused for good (e.g. too far out of order): lost for it.
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();

    let mut alice = start("alice", &alice_dir, &bootstrap, None, refused.clone());
    let mut bob = start(
        "bob",
        &bob_dir,
        &bootstrap,
        Some(received.clone()),
        refused.clone(),
    );
    let bob_address = bob.node.device().address().to_string();
    bob.runtime.block_on(bob.node.publish()).unwrap();
    let group: GroupId = alice.runtime.block_on(async {
        alice.node.publish().await.unwrap();
        let group = alice.node.create_group().await.unwrap();
        alice.node.invite(&group, &bob_address).await.unwrap();
        group
    });
    let joined = bob.runtime.block_on(async {
        network_kit::wait_for(BOUND, || async {
            bob.node.groups().await.ok()?.contains(&group).then_some(())
        })
        .await
    });
    assert!(joined.is_some(), "bob joined");

    let sent: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
    for round in 0..ROUNDS {
        // Alice sends; both are killed at random moments while it goes on.
        let sender = alice.node.clone();
        let (group_id, sent_ids) = (group.clone(), sent.clone());
        alice.runtime.spawn(async move {
            for i in 0..PER_ROUND {
                let body = format!("round {round} message {i}");
                if let Ok(id) = sender.send(&group_id, body.as_bytes()).await {
                    sent_ids.lock().unwrap().insert(id);
                }
            }
        });
        // The crash falls at a random point once this round's sending is under way (a
        // restarted node first republishes its records, which holds its engine a while).
        let before = sent.lock().unwrap().len();
        wait_until(BOUND, || sent.lock().unwrap().len() > before);
        // The pauses below are the seeded crash points, not waits.
        std::thread::sleep(Duration::from_millis(r.gen_range(0..150)));
        if r.gen_bool(0.5) {
            kill(bob);
            std::thread::sleep(Duration::from_millis(r.gen_range(0..100)));
            kill(alice);
        } else {
            kill(alice);
            std::thread::sleep(Duration::from_millis(r.gen_range(0..100)));
            kill(bob);
        }
        alice = start("alice", &alice_dir, &bootstrap, None, refused.clone());
        bob = start(
            "bob",
            &bob_dir,
            &bootstrap,
            Some(received.clone()),
            refused.clone(),
        );
    }

    let sent = sent.lock().unwrap().clone();
    let all_arrived = wait_until(BOUND, || {
        // Handed to the app at least once (a crash can fall between the engine's
        // acknowledgement and this test noting it, so `acked` may miss a few).
        let done = {
            let received = received.lock().unwrap();
            sent.iter().all(|id| received.seen.contains(id))
        };
        if !done {
            let _ = bob.runtime.block_on(bob.node.fetch_mailbox());
        }
        done
    });
    let received = received.lock().unwrap();
    println!(
        "crash: {} messages sent across {ROUNDS} crashes of each device, {} handed to bob's app ({} acknowledged), {} handed over again after acknowledgement",
        sent.len(),
        received.seen.len(),
        received.acked.len(),
        received.duplicates
    );
    assert!(!sent.is_empty());
    assert!(all_arrived, "every sent message arrived");
    assert_eq!(
        received.duplicates, 0,
        "nothing delivered twice after acknowledgement"
    );
    assert!(
        refused.lock().unwrap().is_empty(),
        "no envelope refused: {:?}",
        refused.lock().unwrap()
    );
    drop(received);
    kill(alice);
    kill(bob);
    for node in serves {
        network.block_on(node.dht.shutdown());
    }
}
