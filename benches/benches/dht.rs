//! Criterion group `dht`: the directory (core_dht) on a 50-node network, and delivery between
//! running devices (`core_dht::Node`), all on loopback TCP.
//!
//! Ids: `dht/<function>/<parameter>`.
//! - `lookup_key_packages/tcp-50`: a random node looks up a random user's key package record
//!   (`DhtHandle::lookup_key_packages`: one Kademlia get run to its end, every answer checked).
//! - `publish_key_packages/tcp-50`: a random user's device signs a new key package record
//!   (`DevicePublisher::key_package_record`, a new `seq` kept in its store) and publishes it from
//!   its node (`DhtHandle::publish`: closest-peer query, put to those peers, confirming lookup).
//! - `deliver_100/tcp`: one 1 KiB application message to a 100-member group whose members are
//!   all online: from the call to `Node::send` until the last of the 99 receivers took the
//!   `Event::Message` with that id from its node's event stream.
//! - `mailbox_100/deposit`: a device sends 100 messages to a two-member group whose other
//!   member is offline: from the first `Node::send` until its outbox is empty
//!   (`Node::undelivered() == 0`: every envelope confirmed by a majority of the mailbox's
//!   holders).
//! - `mailbox_100/fetch`: the offline member's node is opened again from its data directory:
//!   from the call to `Node::open` until it has handed the application all 100 messages (it
//!   fetches its mailbox at open).
//!
//! Each network is built when criterion's filter first selects one of its ids, so a run of
//! other ids does not pay for it.
//!
//! # The directory network
//! [`NODES`] nodes in this process, each a [`DhtHandle`] with `DhtConfig::default()` listening on
//! `/ip4/127.0.0.1/tcp/0`, with seeded ed25519 keys. Every node after the first is added to node
//! 0 and bootstrapped; then every node is bootstrapped once more. [`USERS`] users, each with one
//! device (MemoryStore, seeded identity and engine) on its own node, publish their user record,
//! name entries and key packages before anything is measured. Every random choice of the bench
//! (node keys, identities, engine seeds, which nodes hold devices, which node asks for which
//! user) comes from [`SEED`]; what libp2p draws inside (noise ephemeral keys, query ids) does
//! not.
//!
//! # Percentiles
//! Criterion reports a median of means, not tail latency. Before criterion runs, the bench times
//! [`LOOKUP_SAMPLES`] lookups and [`PUBLISH_SAMPLES`] publishes one by one and prints
//! `dht/<function>/tcp-50: p50 …, p99 …` to stderr (nearest-rank percentiles), the numbers in
//! docs/BENCHMARKS.md. Failed operations are counted and printed, not timed. Also printed:
//! lookups split into first asks (the node had not validated this record yet) and repeated asks
//! (its validation cache answers), the mean publish report (peers asked, acked, confirmed), the
//! time one record's OpenMLS validation takes on one core, and the load average (the machine
//! shares its 2 cores between all 50 nodes, so other work on it shows in every number).
//!
//! # The delivery networks
//! Each is [`SERVES`] serve nodes (`DhtHandle::spawn_with_mailboxes` on their own redb file)
//! plus devices, each a full `Node`: sealed redb store in its own data directory (Argon2 at
//! `KdfParams::INSECURE_FOR_TESTS`), identity, MLS engine, network node, joined through the
//! serve nodes. `deliver_100` has [`MEMBERS`] devices; device 0 creates the group and invites
//! the others one by one (99 commits, each until its outbox is empty), and nothing is measured
//! before every member joined and every outbox is empty. `mailbox_100` has a sender and a
//! recipient; each round shuts the recipient down (not timed), then times the deposit and the
//! fetch, so every round has its own offline phase. Both ids run their own rounds.
//!
//! Devices run `node_config`: the default network and engine settings, but no periodic fetch,
//! maintenance, record re-put or mailbox hand-over within the bench's minutes (each runs once at
//! open), short retries, and user records trusted for routing for the whole bench (the
//! sender's route cache stays warm). A task per device reads its events like an application:
//! it timestamps each message as it takes it, then acknowledges it (`ack_delivered`). Serve
//! node keys, device identities and node keys come from [`DELIVERY_SEED`] (the device stores
//! are created before `Node::open` finds them); engines draw from the OS.
//!
//! After criterion's runs each prints to stderr where the time went: per message, when `send`
//! returned and when the first, median and last member had it, and the CPU the process and
//! the rest of the machine used meanwhile (from `/proc`); per mailbox round, the sends, the
//! deposit, `Node::open` and the fetch, with their CPU. Every node shares the same 2 cores,
//! so `deliver_100` adds up the work of 99 receivers that would run on 99 devices.
//!
//! Run: `cargo bench -p spacepanda-benches --bench dht` (all), or with
//! `-- 'dht/(deliver_100|mailbox_100)'` for the delivery ids only.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "criterion macros generate undocumented items; a failed benchmark setup aborts"
)]

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_dht::{
    DEVICE_FILE, DevicePublisher, DhtConfig, DhtHandle, Node as DeviceNode, NodeConfig, NodeEvent,
    PublishReport, load_or_create_node_keypair,
};
use core_identity::{DeviceIdentity, IdentityStore};
use core_mls::{Event, GroupId, MessageId, MlsConfig, PublishableKeyPackage, validate_key_package};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use spacepanda_core::{
    Clock, KdfParams, MemoryStore, RedbStore, SealedStore, SharedStore, SystemClock,
};
use spacepanda_testkit as testkit;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Nodes of the network.
const NODES: usize = 50;
/// Users (one device each, on distinct nodes).
const USERS: usize = 20;
/// The one seed of every random choice.
const SEED: u64 = 0x5ba_ce9a;
/// Operations timed one by one for the percentiles.
const LOOKUP_SAMPLES: usize = 500;
const PUBLISH_SAMPLES: usize = 200;
/// The parameter of both ids.
const PARAMETER: &str = "tcp-50";

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn keypair(rng: &mut ChaCha20Rng) -> Keypair {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    Keypair::ed25519_from_bytes(secret).expect("32 bytes make an ed25519 key")
}

struct Node {
    dht: DhtHandle,
    address: Multiaddr,
}

/// One user's device, on node `node`. The key packages it offers are read once: the benchmark
/// republishes them under a new `seq` each time.
struct Device {
    identity: DeviceIdentity,
    publisher: DevicePublisher,
    packages: Vec<PublishableKeyPackage>,
    node: usize,
}

struct Network {
    nodes: Vec<Node>,
    devices: Vec<Device>,
    /// (node, user) pairs looked up since the user last published: a node validates a value
    /// once and remembers it, so a repeated ask of an unchanged record skips the OpenMLS checks.
    asked: RefCell<HashSet<(usize, usize)>>,
}

/// One timed operation.
struct Sample {
    latency: Duration,
    /// A lookup by a node that had not asked for this version of the record before.
    first_ask: bool,
    /// A publish's report: peers asked, peers that acked, replicas confirmed.
    report: Option<PublishReport>,
}

async fn start_node(rng: &mut ChaCha20Rng) -> Node {
    let dht = DhtHandle::spawn(&keypair(rng), DhtConfig::default(), clock()).expect("node starts");
    let address = dht
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("tcp address"))
        .await
        .expect("listens on loopback");
    Node { dht, address }
}

/// A user called `name` with one device on `node`, which publishes its identity (user record,
/// name and address entries) and its key packages, as a device does at start.
async fn start_device(name: &str, nodes: &[Node], node: usize, rng: &mut ChaCha20Rng) -> Device {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let mut device = testkit::Device::on_store(
        name,
        store.clone(),
        clock(),
        &MlsConfig::default(),
        &mut testkit::seeded::rng(rng.next_u64()),
    );
    let identity = device.identity.clone();
    let client = device.client();
    let home = &nodes[node];
    let publisher = DevicePublisher::new(store, clock(), identity.clone(), home.dht.config());
    publisher
        .publish_identity(&home.dht, std::slice::from_ref(&home.address))
        .await
        .expect("identity published");
    publisher
        .publish_key_packages(&home.dht, client)
        .await
        .expect("key packages published");
    let packages = client.publishable_key_packages().expect("packages");
    assert!(!packages.is_empty(), "a fresh device offers key packages");
    Device {
        identity,
        publisher,
        packages,
        node,
    }
}

async fn start_network(rng: &mut ChaCha20Rng) -> Network {
    let started = Instant::now();
    let mut nodes: Vec<Node> = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let node = start_node(rng).await;
        if i > 0 {
            let first = &nodes[0];
            node.dht
                .add_peer(first.dht.peer_id(), first.address.clone())
                .await
                .expect("dial node 0");
            node.dht
                .bootstrap()
                .await
                .expect("bootstrap through node 0");
        }
        nodes.push(node);
    }
    let mut failed_rebootstraps = 0;
    for node in &nodes {
        if node.dht.bootstrap().await.is_err() {
            failed_rebootstraps += 1;
        }
    }
    let mut routing = Vec::with_capacity(NODES);
    for node in &nodes {
        routing.push(node.dht.status().await.expect("status").routing_peers);
    }
    eprintln!(
        "dht: {NODES} nodes up in {:.1} s; routing table sizes min {} / median {} / max {}; \
         {failed_rebootstraps} second bootstraps failed",
        started.elapsed().as_secs_f64(),
        routing.iter().min().unwrap(),
        percentile(&mut routing.clone(), 0.5),
        routing.iter().max().unwrap(),
    );

    let started = Instant::now();
    let mut homes: Vec<usize> = (0..NODES).collect();
    homes.shuffle(rng);
    let mut devices = Vec::with_capacity(USERS);
    for (i, &node) in homes.iter().take(USERS).enumerate() {
        devices.push(start_device(&format!("user{i}"), &nodes, node, rng).await);
    }
    let sample = devices[0]
        .publisher
        .key_package_record(&devices[0].packages)
        .expect("a key package record");
    // The record carries the freshest one-time packages and the last-resort one; each costs
    // the same to validate.
    let carried = (DhtConfig::default().published_key_packages + 1).min(devices[0].packages.len());
    eprintln!(
        "dht: {USERS} users published identity and key packages in {:.1} s; a key package \
         record offers {} packages in {} bytes, whose OpenMLS validation \
         (core_mls::validate_key_package, what every node runs on a record it has not seen) \
         takes {:.2} ms",
        started.elapsed().as_secs_f64(),
        carried,
        sample.value().len(),
        ms(validation_cost(&devices[0].packages[..carried])),
    );
    Network {
        nodes,
        devices,
        asked: RefCell::new(HashSet::new()),
    }
}

impl Network {
    /// A random node looks up a random user's key packages.
    async fn lookup(&self, rng: &mut ChaCha20Rng) -> Result<Sample, String> {
        let (node, user) = (rng.gen_range(0..NODES), rng.gen_range(0..USERS));
        let first_ask = self.asked.borrow_mut().insert((node, user));
        let (node, device) = (&self.nodes[node], &self.devices[user]);
        let (user, device_id) = (device.identity.user_id(), device.identity.device_id());
        let start = Instant::now();
        let record = node
            .dht
            .lookup_key_packages(&user, &device_id)
            .await
            .map_err(|e| e.to_string())?;
        let elapsed = start.elapsed();
        if record.key_packages.is_empty() {
            return Err("an empty key package record".into());
        }
        Ok(Sample {
            latency: elapsed,
            first_ask,
            report: None,
        })
    }

    /// A random user's device signs and publishes its key package record from its node.
    async fn publish(&self, rng: &mut ChaCha20Rng) -> Result<Sample, String> {
        let user = rng.gen_range(0..USERS);
        self.asked.borrow_mut().retain(|&(_, u)| u != user);
        let device = &self.devices[user];
        let dht = &self.nodes[device.node].dht;
        let start = Instant::now();
        let record = device
            .publisher
            .key_package_record(&device.packages)
            .map_err(|e| e.to_string())?;
        let report = dht.publish(&record).await.map_err(|e| e.to_string())?;
        Ok(Sample {
            latency: start.elapsed(),
            first_ask: true,
            report: Some(report),
        })
    }
}

/// The fastest of five validations of every package of one record, as one record's share of a
/// node's work on a value it has not validated before.
fn validation_cost(packages: &[PublishableKeyPackage]) -> Duration {
    let now = SystemClock.now();
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for package in packages {
                validate_key_package(&package.key_package, now).expect("a valid key package");
            }
            start.elapsed()
        })
        .min()
        .unwrap()
}

/// Nearest-rank percentile `p` (0 < p ≤ 1) of `values`.
fn percentile<T: Ord + Copy>(values: &mut [T], p: f64) -> T {
    values.sort_unstable();
    let rank = (p * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50, p99, mean and max of `latencies`, in ms.
fn summary(latencies: &mut [Duration]) -> String {
    if latencies.is_empty() {
        return "none".into();
    }
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    let max = *latencies.iter().max().unwrap();
    let p50 = percentile(latencies, 0.50);
    let p99 = percentile(latencies, 0.99);
    format!(
        "p50 {:.2} ms, p99 {:.2} ms (n={}); mean {:.2} ms, max {:.2} ms",
        ms(p50),
        ms(p99),
        latencies.len(),
        ms(mean),
        ms(max)
    )
}

/// Times `n` operations one by one and prints their p50 / p99 (and how many failed); for
/// lookups, also split into first and repeated asks.
fn report_percentiles<F>(rt: &Runtime, function: &str, n: usize, mut op: F)
where
    F: AsyncFnMut() -> Result<Sample, String>,
{
    let mut samples = Vec::with_capacity(n);
    let mut failures: Vec<String> = Vec::new();
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            match op().await {
                Ok(sample) => samples.push(sample),
                Err(e) => failures.push(e),
            }
        }
    });
    let wall = started.elapsed();
    if samples.is_empty() {
        panic!("dht/{function}/{PARAMETER}: every one of {n} operations failed: {failures:?}");
    }
    let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    eprintln!(
        "dht/{function}/{PARAMETER}: {}; {} failed, {:.1} s in all",
        summary(&mut all),
        failures.len(),
        wall.as_secs_f64(),
    );
    let reports: Vec<PublishReport> = samples.iter().filter_map(|s| s.report).collect();
    if !reports.is_empty() {
        let mean = |f: fn(&PublishReport) -> usize| {
            reports.iter().map(f).sum::<usize>() as f64 / reports.len() as f64
        };
        eprintln!(
            "dht/{function}/{PARAMETER}: put to {:.1} peers, {:.1} acked, {:.1} confirmed by the \
             lookup after it (means); fewest confirmed {}",
            mean(|r| r.asked),
            mean(|r| r.acked),
            mean(|r| r.confirmed),
            reports.iter().map(|r| r.confirmed).min().unwrap_or(0),
        );
    }
    if samples.iter().any(|s| !s.first_ask) {
        for (label, first) in [("first asks", true), ("repeated asks", false)] {
            let mut part: Vec<Duration> = samples
                .iter()
                .filter(|s| s.first_ask == first)
                .map(|s| s.latency)
                .collect();
            eprintln!(
                "dht/{function}/{PARAMETER}, {label}: {}",
                summary(&mut part)
            );
        }
    }
    for failure in failures.iter().take(5) {
        eprintln!("dht/{function}/{PARAMETER}: failed: {failure}");
    }
}

/// The machine's 1-minute load average (Linux), to tell a quiet run from a busy one: the bench
/// itself keeps about one of the cores busy.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Starts the 50-node network and prints the percentiles (run only when criterion's filter
/// selects one of its ids).
fn prepare_network(rt: &Runtime, rng: &mut ChaCha20Rng) -> Network {
    eprintln!("dht: load average {} at the start", load_average());
    let network = rt.block_on(start_network(rng));
    report_percentiles(rt, "lookup_key_packages", LOOKUP_SAMPLES, async || {
        network.lookup(rng).await
    });
    report_percentiles(rt, "publish_key_packages", PUBLISH_SAMPLES, async || {
        network.publish(rng).await
    });
    eprintln!("dht: load average {} after the percentiles", load_average());
    network
}

fn dht(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    // Built by the first benchmark criterion's filter selects, so that a run of other ids
    // does not pay for it.
    let mut network: Option<Network> = None;

    let mut group = c.benchmark_group("dht");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let mut failed = 0usize;
    group.bench_function(BenchmarkId::new("lookup_key_packages", PARAMETER), |b| {
        let network = network.get_or_insert_with(|| prepare_network(&rt, &mut rng));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    match network.lookup(&mut rng).await {
                        Ok(sample) => total += sample.latency,
                        Err(_) => failed += 1,
                    }
                }
                total
            })
        });
    });
    group.bench_function(BenchmarkId::new("publish_key_packages", PARAMETER), |b| {
        let network = network.get_or_insert_with(|| prepare_network(&rt, &mut rng));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    match network.publish(&mut rng).await {
                        Ok(sample) => total += sample.latency,
                        Err(_) => failed += 1,
                    }
                }
                total
            })
        });
    });
    group.finish();
    if failed > 0 {
        eprintln!("dht: {failed} operations failed during criterion's runs (not timed)");
    }
    // Stop every node before the runtime goes.
    if let Some(network) = &network {
        rt.block_on(async {
            for node in &network.nodes {
                node.dht.shutdown().await;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery: `dht/deliver_100/tcp`, `dht/mailbox_100/deposit` and `dht/mailbox_100/fetch`.

#[path = "dht/delivery.rs"]
mod delivery;

criterion_group!(benches, dht, delivery::delivery);
criterion_main!(benches);
