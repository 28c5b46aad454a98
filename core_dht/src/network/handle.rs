//! [`DhtHandle`]: what the rest of the program holds to use the network.

use std::sync::Arc;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use spacepanda_core::Clock;
use tokio::sync::{mpsc, oneshot};

use super::build_swarm;
use super::event_loop::{Command, EventLoop, GetOutcome, NodeStatus, PutOutcome, REPLY_GRACE};
use crate::config::DhtConfig;
use crate::error::{DhtError, DhtResult};
use crate::records::RecordKey;

/// Commands waiting for the network task; past this, callers wait for room (backpressure).
const COMMAND_QUEUE: usize = 256;

/// A cloneable handle on one running network node. The node's task owns the libp2p `Swarm`;
/// a handle only sends it commands and awaits their replies, so no caller ever holds the swarm
/// or a lock around it.
///
/// The task stops when [`shutdown`](Self::shutdown) is called or every handle is dropped.
#[derive(Clone)]
pub struct DhtHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    config: Arc<DhtConfig>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DhtHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl DhtHandle {
    /// Starts a node on the current tokio runtime: builds its swarm for `keypair` (its libp2p
    /// identity) and spawns the task that owns it. The node listens nowhere until
    /// [`listen`](Self::listen) and knows no peer until [`add_peer`](Self::add_peer).
    pub fn spawn(keypair: &Keypair, config: DhtConfig, clock: Arc<dyn Clock>) -> DhtResult<Self> {
        let swarm = build_swarm(keypair, &config)?;
        let peer_id = *swarm.local_peer_id();
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let event_loop = EventLoop::new(swarm, receiver, config.clone(), clock.clone());
        tokio::spawn(event_loop.run());
        Ok(Self {
            commands,
            peer_id,
            config: Arc::new(config),
            clock,
        })
    }

    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node's settings.
    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// The clock records are checked against.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Listens on `address` (`/ip4/127.0.0.1/tcp/0`, `/memory/0`, …) and returns the address
    /// actually bound.
    pub async fn listen(&self, address: Multiaddr) -> DhtResult<Multiaddr> {
        self.ask(|reply| Command::Listen { address, reply }).await?
    }

    /// Adds a known peer (a bootstrap node) and dials it.
    pub async fn add_peer(&self, peer: PeerId, address: Multiaddr) -> DhtResult<()> {
        self.ask(|reply| Command::AddPeer {
            peer,
            address,
            reply,
        })
        .await?
    }

    /// Joins the network from a list of bootstrap addresses, each ending in `/p2p/<peer id>`
    /// (`/ip4/203.0.113.5/tcp/4001/p2p/12D3Koo…`): adds and dials every one, then
    /// [`bootstrap`](Self::bootstrap)s. Addresses without a peer id, or that cannot be dialed,
    /// are skipped; if none is left the node is [`DhtError::Unreachable`]. Returns how many
    /// peers the routing table then holds.
    pub async fn join(&self, bootstrap: &[Multiaddr]) -> DhtResult<usize> {
        let mut added = 0;
        let mut skipped = Vec::new();
        for address in bootstrap {
            let Some(libp2p::multiaddr::Protocol::P2p(peer)) = address.iter().last() else {
                skipped.push(format!("{address} (no /p2p/ peer id)"));
                continue;
            };
            match self.add_peer(peer, address.clone()).await {
                Ok(()) => added += 1,
                Err(e) => skipped.push(format!("{address} ({e})")),
            }
        }
        if added == 0 {
            return Err(DhtError::Unreachable {
                reason: format!("no usable bootstrap address: {}", skipped.join(", ")),
            });
        }
        self.bootstrap().await
    }

    /// Joins the network through the peers added so far: looks itself up, filling the
    /// routing table. Returns how many peers the table then holds.
    pub async fn bootstrap(&self) -> DhtResult<usize> {
        self.ask(|reply| Command::Bootstrap { reply }).await?
    }

    /// The node's view of the network.
    pub async fn status(&self) -> DhtResult<NodeStatus> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// The value this node itself holds at `key` (as a replica or as the publisher), without
    /// asking the network.
    pub async fn local_record(&self, key: &RecordKey) -> DhtResult<Option<Vec<u8>>> {
        let key = *key;
        self.ask(|reply| Command::LocalRecord { key, reply }).await
    }

    /// Stops the node: its task ends and its connections close. Other handles then get
    /// [`DhtError::Stopped`].
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    pub(crate) async fn put(&self, key: RecordKey, value: Vec<u8>) -> DhtResult<PutOutcome> {
        self.ask(|reply| Command::Put { key, value, reply }).await?
    }

    pub(crate) async fn get(&self, key: RecordKey) -> DhtResult<GetOutcome> {
        self.ask(|reply| Command::Get { key, reply }).await
    }

    /// Sends a command and waits for its reply, at most the query timeout plus a grace: the
    /// task answers every command, so running out means it is stuck or gone.
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> DhtResult<T> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| DhtError::Stopped)?;
        // A put is two queries (closest peers, then the put).
        let bound = self.config.query_timeout * 2 + REPLY_GRACE;
        match tokio::time::timeout(bound, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(DhtError::Stopped),
            Err(_) => Err(DhtError::Unreachable {
                reason: format!("the network task did not answer within {bound:?}"),
            }),
        }
    }
}
