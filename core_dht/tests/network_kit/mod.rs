//! A test network: nodes on libp2p's memory transport in one process, seeded keys, and
//! devices (the test kit's device, with a publisher) on their own stores. Every wait is
//! bounded.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod forge;
pub mod malicious;
pub mod nodes;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_dht::{DevicePublisher, DhtConfig, DhtHandle};
use core_mls::MlsConfig;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use spacepanda_core::{Clock, MemoryStore, SharedStore, SystemClock};
use spacepanda_testkit::{Device, seeded};

/// Settings for test networks: short timeouts, and no periodic replication within a test's
/// time (each node re-puts every record it holds each interval; in a 30-node network in one
/// process that costs more than the test). `replication_test_config` turns it on.
pub fn test_config() -> DhtConfig {
    DhtConfig {
        query_timeout: Duration::from_secs(5),
        replication_interval: Duration::from_secs(3600),
        ..DhtConfig::default()
    }
}

/// Settings for a small network that replicates every second to 3 holders.
pub fn replication_test_config() -> DhtConfig {
    DhtConfig {
        replication_factor: std::num::NonZeroUsize::new(3).expect("3 > 0"),
        publish_quorum: 2,
        replication_interval: Duration::from_secs(1),
        ..test_config()
    }
}

/// A seeded random source for keys and ids.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A libp2p keypair from the test's rng.
pub fn keypair(rng: &mut ChaCha20Rng) -> Keypair {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    Keypair::ed25519_from_bytes(secret).expect("32 bytes make an ed25519 key")
}

pub fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// One running node and where it listens.
#[derive(Clone)]
pub struct TestNode {
    pub dht: DhtHandle,
    pub address: Multiaddr,
}

impl TestNode {
    pub fn peer_id(&self) -> PeerId {
        self.dht.peer_id()
    }
}

/// Starts a node listening on a fresh memory address.
pub async fn start_node(rng: &mut ChaCha20Rng, config: DhtConfig) -> TestNode {
    start_node_on(rng, config, "/memory/0").await
}

/// Starts a node listening on `address` (`/memory/0`, `/ip4/127.0.0.1/tcp/0`).
pub async fn start_node_on(rng: &mut ChaCha20Rng, config: DhtConfig, address: &str) -> TestNode {
    start_node_with_clock(rng, config, address, clock()).await
}

/// A node with a given libp2p identity, listening on a fresh memory address.
pub async fn start_node_with_keypair(keypair: &Keypair, config: DhtConfig) -> TestNode {
    let dht = DhtHandle::spawn(keypair, config, clock()).expect("node starts");
    let address = dht
        .listen("/memory/0".parse().expect("memory address"))
        .await
        .expect("listens");
    TestNode { dht, address }
}

/// [`start_node_on`] with the clock records are checked against.
pub async fn start_node_with_clock(
    rng: &mut ChaCha20Rng,
    config: DhtConfig,
    address: &str,
    clock: Arc<dyn Clock>,
) -> TestNode {
    let dht = DhtHandle::spawn(&keypair(rng), config, clock).expect("node starts");
    let address = dht
        .listen(address.parse().expect("listen address"))
        .await
        .expect("listens");
    TestNode { dht, address }
}

/// Joins `node` to the network through `bootstrap`.
pub async fn join(node: &TestNode, bootstrap: &TestNode) {
    node.dht
        .add_peer(bootstrap.peer_id(), bootstrap.address.clone())
        .await
        .expect("dial bootstrap");
    node.dht.bootstrap().await.expect("bootstrap");
}

/// `n` nodes, each joined through the first, then every node bootstrapped once more so the
/// routing tables fill.
pub async fn start_network(rng: &mut ChaCha20Rng, n: usize) -> Vec<TestNode> {
    start_network_with(rng, n, test_config).await
}

/// [`start_network`] with other settings.
pub async fn start_network_with(
    rng: &mut ChaCha20Rng,
    n: usize,
    config: fn() -> DhtConfig,
) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::with_capacity(n);
    for i in 0..n {
        let node = start_node(rng, config()).await;
        if i > 0 {
            join(&node, &nodes[0]).await;
        }
        nodes.push(node);
    }
    for node in &nodes[1..] {
        let _ = node.dht.bootstrap().await;
    }
    nodes
}

/// One device on a node: the test kit's device (its store, identity and engine) and its
/// publisher.
pub struct TestDevice {
    pub device: Device,
    pub publisher: DevicePublisher,
    pub node: TestNode,
}

/// Its store and identity, read as the kit's device holds them.
impl std::ops::Deref for TestDevice {
    type Target = Device;

    fn deref(&self) -> &Device {
        &self.device
    }
}

impl TestDevice {
    /// A new user with one device, called `name`, on `node`.
    pub fn new(name: &str, node: TestNode, seed: u64) -> Self {
        let store: SharedStore = Arc::new(MemoryStore::new());
        Self::on_store(name, node, seed, store)
    }

    /// A device over `store`: the identity stored there (a device starting again, or one
    /// imported), or else a new user called `name`.
    pub fn on_store(name: &str, node: TestNode, seed: u64, store: SharedStore) -> Self {
        Self::with_clock(name, node, seed, store, clock())
    }

    /// A device whose engine and publisher run on `clock`.
    pub fn with_clock(
        name: &str,
        node: TestNode,
        seed: u64,
        store: SharedStore,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let device = Device::on_store(
            name,
            store.clone(),
            clock.clone(),
            &MlsConfig::default(),
            &mut seeded::rng(seed),
        );
        let publisher =
            DevicePublisher::new(store, clock, device.identity.clone(), node.dht.config());
        Self {
            device,
            publisher,
            node,
        }
    }

    /// Publishes the user record, names and key packages.
    pub async fn publish_all(&mut self) -> core_dht::DhtResult<()> {
        self.publisher
            .publish_identity(&self.node.dht, std::slice::from_ref(&self.node.address))
            .await?;
        self.publisher
            .publish_key_packages(&self.node.dht, self.device.client())
            .await?;
        Ok(())
    }
}

/// Waits until `check` returns `Some`, polling at most 1000 times within `bound`. The pause
/// between polls only spaces them out (a busy loop would take the CPU the nodes need to make
/// the condition true); nothing assumes how long anything takes.
pub async fn wait_for<T, F, Fut>(bound: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut tries = 0u32;
    while start.elapsed() < bound && tries < 1000 {
        tries += 1;
        if let Some(value) = check().await {
            return Some(value);
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
