//! Nodes that run devices (`core_dht::Node`, each on its own sealed redb file) and serve
//! nodes that hold mailboxes (their own redb file), on the memory transport.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use core_dht::{DhtConfig, DhtHandle, Node, NodeConfig, NodeEvent};
use core_mls::{Event, GroupId, MessageId};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use rand_chacha::ChaCha20Rng;
use spacepanda_core::{KdfParams, RedbStore};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{TestNode, clock, keypair, test_config, wait_for};

pub const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// Pause between two checks of a bounded wait.
const POLL: Duration = Duration::from_millis(50);

/// Short intervals so a test sees fetches, hand-overs and retries within seconds.
pub fn delivery_config() -> DhtConfig {
    DhtConfig {
        handoff_interval: Duration::from_millis(700),
        request_timeout: Duration::from_secs(3),
        ..test_config()
    }
}

pub fn node_config(name: &str, bootstrap: &[Multiaddr]) -> NodeConfig {
    NodeConfig {
        display_name: Some(name.to_owned()),
        listen: vec!["/memory/0".parse().expect("memory address")],
        bootstrap: bootstrap.to_vec(),
        dht: delivery_config(),
        kdf: KdfParams::INSECURE_FOR_TESTS,
        fetch_interval: Duration::from_millis(700),
        maintenance_interval: Duration::from_secs(5),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        user_cache: Duration::from_secs(2),
        ..NodeConfig::new()
    }
}

/// A serve node holding mailboxes in its own redb file under `dir`.
pub async fn start_serve(rng: &mut ChaCha20Rng, dir: &Path, index: usize) -> TestNode {
    start_serve_with(rng, dir, index, delivery_config()).await.0
}

/// A serve node with `config`, and its store (for tests that play a dishonest holder).
pub async fn start_serve_with(
    rng: &mut ChaCha20Rng,
    dir: &Path,
    index: usize,
    config: DhtConfig,
) -> (TestNode, Arc<RedbStore>) {
    let file = dir.join(format!("serve-{index}-{}.redb", rand::random::<u32>()));
    let store = Arc::new(RedbStore::create(&file).expect("serve store"));
    let dht = DhtHandle::spawn_with_mailboxes(&keypair(rng), config, clock(), store.clone())
        .expect("serve node starts");
    let address = dht
        .listen("/memory/0".parse().expect("memory address"))
        .await
        .expect("listens");
    (TestNode { dht, address }, store)
}

/// `n` serve nodes with `config`, joined through the first, with their stores.
pub async fn start_serves_with(
    rng: &mut ChaCha20Rng,
    dir: &Path,
    n: usize,
    config: DhtConfig,
) -> Vec<(TestNode, Arc<RedbStore>)> {
    let mut nodes: Vec<(TestNode, Arc<RedbStore>)> = Vec::with_capacity(n);
    for i in 0..n {
        let (node, store) = start_serve_with(rng, dir, i, config.clone()).await;
        if let Some((first, _)) = nodes.first() {
            super::join(&node, first).await;
        }
        nodes.push((node, store));
    }
    for (node, _) in nodes.iter().skip(1) {
        let _ = node.dht.bootstrap().await;
    }
    nodes
}

/// `n` serve nodes joined through the first.
pub async fn start_serves(rng: &mut ChaCha20Rng, dir: &Path, n: usize) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::with_capacity(n);
    for i in 0..n {
        let node = start_serve(rng, dir, i).await;
        if let Some(first) = nodes.first() {
            super::join(&node, first).await;
        }
        nodes.push(node);
    }
    for node in nodes.iter().skip(1) {
        let _ = node.dht.bootstrap().await;
    }
    nodes
}

pub fn dial_address(node: &TestNode) -> Multiaddr {
    node.address.clone().with(Protocol::P2p(node.peer_id()))
}

/// A device running as a `Node`, with everything it told the application so far.
pub struct Device {
    pub name: String,
    pub dir: PathBuf,
    pub node: Node,
    pub events: UnboundedReceiver<NodeEvent>,
    pub seen: Vec<Event>,
    /// The node's own events (delivery delayed, altered envelopes).
    pub notices: Vec<NodeEvent>,
}

impl Device {
    pub async fn open(name: &str, dir: PathBuf, bootstrap: &[Multiaddr]) -> Self {
        Self::open_with(name, dir, node_config(name, bootstrap)).await
    }

    pub async fn open_with(name: &str, dir: PathBuf, config: NodeConfig) -> Self {
        let node = Node::open(&dir, PASSPHRASE, config)
            .await
            .unwrap_or_else(|e| panic!("{name}'s node opens: {e}"));
        Self::running(name, dir, node)
    }

    fn running(name: &str, dir: PathBuf, node: Node) -> Self {
        let events = node.take_events().expect("events taken once");
        Self {
            name: name.to_owned(),
            dir,
            node,
            events,
            seen: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Opens the node again on `dir` once the previous run let go of its store (a node shut
    /// down with work in flight releases it when that work ends), waiting at most `bound`.
    pub async fn reopen_with(
        name: &str,
        dir: PathBuf,
        config: impl Fn() -> NodeConfig,
        bound: Duration,
    ) -> Self {
        let deadline = tokio::time::Instant::now() + bound;
        let mut errors = Vec::new();
        loop {
            match Node::open(&dir, PASSPHRASE, config()).await {
                Ok(node) => return Self::running(name, dir, node),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("{name}'s node reopens: {e}; before: {errors:?}")
                }
                // Between attempts of a bounded wait for the old run's store to close.
                Err(e) => {
                    if errors.len() < 3 {
                        errors.push(e.to_string());
                    }
                    tokio::time::sleep(POLL).await
                }
            }
        }
    }

    pub fn address(&self) -> String {
        self.node.device().address().to_string()
    }

    /// Moves every event that arrived into `seen`, acknowledging messages like an app that
    /// stored them.
    pub async fn pump(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                NodeEvent::Engine(event) => {
                    let event = *event;
                    if let Event::Message { delivery, .. } = &event {
                        self.node.ack_delivered(*delivery).await.expect("ack");
                    }
                    self.seen.push(event);
                }
                notice => self.notices.push(notice),
            }
        }
    }

    /// Bodies of the messages received in `group`, with their ids, in arrival order.
    pub fn messages(&self, group: &GroupId) -> Vec<(MessageId, Vec<u8>)> {
        self.seen
            .iter()
            .filter_map(|event| match event {
                Event::Message {
                    group: g,
                    message_id,
                    body,
                    ..
                } if g == group => Some((*message_id, body.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn joined(&self) -> Option<GroupId> {
        self.seen.iter().find_map(|event| match event {
            Event::Joined { group, .. } => Some(group.clone()),
            _ => None,
        })
    }

    /// Waits until `check` holds on this device (pumping events), at most `bound`.
    pub async fn wait_until(&mut self, bound: Duration, check: impl Fn(&Device) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            self.pump().await;
            if check(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            // Between polls of a bounded wait: events arrive on their own schedule.
            tokio::time::sleep(POLL).await;
        }
    }

    /// Shuts the node down cleanly and gives back its data directory, to reopen later.
    pub async fn go_offline(self) -> PathBuf {
        self.node.shutdown().await;
        self.dir
    }

    /// Sends `count` numbered messages to `group`; their ids.
    pub async fn send_numbered(&self, group: &GroupId, count: usize) -> HashSet<MessageId> {
        let mut sent = HashSet::new();
        for i in 0..count {
            let body = format!("{} {i}", self.name);
            sent.insert(self.node.send(group, body.as_bytes()).await.expect("send"));
        }
        sent
    }

    /// Waits until its outbox is empty (everything pushed or deposited).
    pub async fn flushed(&self, bound: Duration) -> bool {
        wait_for(bound, || async {
            (self.node.undelivered().await.ok()? == 0).then_some(())
        })
        .await
        .is_some()
    }
}

/// Publishes every device's records, then `inviter` creates a group and invites each of
/// `invitees` by address; returns once each has joined.
pub async fn group_with(inviter: &Device, invitees: &mut [&mut Device]) -> GroupId {
    const BOUND: Duration = Duration::from_secs(30);
    inviter.node.publish().await.expect("inviter publishes");
    for invitee in invitees.iter() {
        invitee.node.publish().await.expect("invitee publishes");
    }
    let group = inviter.node.create_group().await.expect("group");
    for invitee in invitees.iter_mut() {
        inviter
            .node
            .invite(&group, &invitee.address())
            .await
            .expect("invite by address");
        let name = invitee.name.clone();
        assert!(
            invitee.wait_until(BOUND, |d| d.joined().is_some()).await,
            "{name} joined"
        );
    }
    group
}
