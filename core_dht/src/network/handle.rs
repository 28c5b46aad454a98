//! [`DhtHandle`]: what the rest of the program holds to use the network.

use std::sync::Arc;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use spacepanda_core::Clock;
use tokio::sync::{mpsc, oneshot};

use super::build_swarm;
use super::commands::NodeStatus;
use super::event_loop::{Command, EventLoop, GetOutcome, InboundRequest, PutOutcome, REPLY_GRACE};
use crate::config::DhtConfig;
use crate::error::{DhtError, DhtResult};
use crate::mailbox::holder_store::HolderStore;
use crate::mailbox::service::MailboxService;
use crate::records::RecordKey;
use crate::wire::{Request, Response};

/// Requests from peers waiting for a handler; past this, new ones are answered "not now".
pub(crate) const INBOUND_QUEUE: usize = 256;

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
    holder: Option<Arc<HolderStore>>,
}

/// What a node holds in mailboxes for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxUsage {
    /// Mailboxes with at least one envelope.
    pub mailboxes: usize,
    /// Envelope bytes held in all.
    pub bytes: u64,
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
    ///
    /// Such a node routes and stores records but keeps no mailboxes (it answers mailbox
    /// requests with "no mailboxes"); see [`spawn_with_mailboxes`](Self::spawn_with_mailboxes).
    pub fn spawn(keypair: &Keypair, config: DhtConfig, clock: Arc<dyn Clock>) -> DhtResult<Self> {
        Self::start(keypair, config, clock, None)
    }

    /// Like [`spawn`](Self::spawn), and the node holds mailboxes for the devices it is among
    /// the closest peers of, in `store` (namespace `mailbox`; a serve node's own redb file, or
    /// a device's sealed store). Every node of a network should: the more holders, the less
    /// each one carries.
    pub fn spawn_with_mailboxes(
        keypair: &Keypair,
        config: DhtConfig,
        clock: Arc<dyn Clock>,
        store: spacepanda_core::SharedStore,
    ) -> DhtResult<Self> {
        let holder = HolderStore::open(store, crate::mailbox::holder_limits(&config))?;
        Self::start(keypair, config, clock, Some(Arc::new(holder)))
    }

    fn start(
        keypair: &Keypair,
        config: DhtConfig,
        clock: Arc<dyn Clock>,
        holder: Option<Arc<HolderStore>>,
    ) -> DhtResult<Self> {
        let swarm = build_swarm(keypair, &config)?;
        let peer_id = *swarm.local_peer_id();
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let (mailbox_sender, mailbox_requests) = match holder {
            Some(holder) => {
                let (sender, requests) = mpsc::channel(INBOUND_QUEUE);
                (Some(sender), Some((holder, requests)))
            }
            None => (None, None),
        };
        let event_loop = EventLoop::new(
            swarm,
            receiver,
            config.clone(),
            clock.clone(),
            mailbox_sender,
        );
        tokio::spawn(event_loop.run());
        let handle = Self {
            commands,
            peer_id,
            config: Arc::new(config),
            clock,
            holder: mailbox_requests.as_ref().map(|(holder, _)| holder.clone()),
        };
        if let Some((holder, requests)) = mailbox_requests {
            tokio::spawn(MailboxService::new(handle.downgrade(), holder).run(requests));
        }
        Ok(handle)
    }

    /// What this node holds for others' mailboxes (`None`: it keeps none).
    pub async fn mailbox_usage(&self) -> DhtResult<Option<MailboxUsage>> {
        let Some(holder) = self.holder.clone() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || {
            Ok(Some(MailboxUsage {
                mailboxes: holder.mailboxes()?.len(),
                bytes: holder.total_bytes(),
            }))
        })
        .await
        .map_err(|e| DhtError::Transport {
            reason: format!("the mailbox store task failed: {e}"),
        })?
    }

    /// The mailbox store of this node, if it keeps mailboxes.
    pub(crate) fn holder(&self) -> Option<&Arc<HolderStore>> {
        self.holder.as_ref()
    }

    /// A handle that does not keep the node running (for the node's own helper tasks).
    pub(crate) fn downgrade(&self) -> WeakDhtHandle {
        WeakDhtHandle {
            commands: self.commands.downgrade(),
            peer_id: self.peer_id,
            config: self.config.clone(),
            clock: self.clock.clone(),
            holder: self.holder.clone(),
        }
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
    /// are skipped; if none is left, or none answers, the node is [`DhtError::Unreachable`].
    /// Returns how many peers the routing table then holds.
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
        // A bootstrap query that reached nobody still "succeeds" in kad, and a peer that
        // failed to dial may still sit in the table: a connection is the real answer (one
        // made by the query outlives it by `idle_connection_timeout`).
        let peers = self.bootstrap().await?;
        match self.status().await?.connected_peers {
            0 => Err(DhtError::Unreachable {
                reason: format!(
                    "none of the {added} bootstrap peers answered ({})",
                    bootstrap
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            _ => Ok(peers),
        }
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

    /// Sends one request of the delivery protocol ([`crate::wire`]) to `peer` and waits for
    /// the answer, at most the request timeout. [`Node`](crate::Node) does this for an
    /// application; this is for tools and tests that speak the protocol themselves.
    pub async fn send_request(&self, peer: PeerId, request: Request) -> DhtResult<Response> {
        self.request(peer, Vec::new(), request).await
    }

    /// Sends `request` to `peer` (dialing `addresses` if not connected) and waits for the
    /// answer, at most the request timeout.
    pub(crate) async fn request(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Request,
    ) -> DhtResult<Response> {
        self.ask(|reply| Command::Request {
            peer,
            addresses,
            request,
            reply,
        })
        .await?
    }

    /// Answers the peer's request `token` (see [`InboundRequest`]).
    pub(crate) async fn respond(&self, token: u64, response: Response) -> DhtResult<()> {
        self.commands
            .send(Command::Respond { token, response })
            .await
            .map_err(|_| DhtError::Stopped)
    }

    /// The `count` peers closest to `key` that kad finds (this node excluded), closest first.
    pub(crate) async fn closest_peers(&self, key: Vec<u8>, count: usize) -> DhtResult<Vec<PeerId>> {
        let count = std::num::NonZeroUsize::new(count).unwrap_or(std::num::NonZeroUsize::MIN);
        let mut peers = self
            .ask(|reply| Command::ClosestPeers {
                key: key.clone(),
                count,
                reply,
            })
            .await??;
        let target = libp2p::kad::KBucketKey::new(key);
        peers.sort_by_key(|peer| target.distance(&libp2p::kad::KBucketKey::from(*peer)));
        Ok(peers)
    }

    /// Pushes from peers go to `sender` from now on (the device's node).
    pub(crate) async fn receive_pushes(
        &self,
        sender: mpsc::Sender<InboundRequest>,
    ) -> DhtResult<()> {
        self.commands
            .send(Command::ReceivePushes { sender })
            .await
            .map_err(|_| DhtError::Stopped)
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
        let bound = (self.config.query_timeout * 2).max(self.config.request_timeout) + REPLY_GRACE;
        match tokio::time::timeout(bound, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(DhtError::Stopped),
            Err(_) => Err(DhtError::Unreachable {
                reason: format!("the network task did not answer within {bound:?}"),
            }),
        }
    }
}

/// A [`DhtHandle`] that does not keep the node alive: the node's own tasks (the mailbox
/// service) hold this, so the node stops when the application drops its last handle.
#[derive(Clone)]
pub(crate) struct WeakDhtHandle {
    commands: mpsc::WeakSender<Command>,
    peer_id: PeerId,
    config: Arc<DhtConfig>,
    clock: Arc<dyn Clock>,
    holder: Option<Arc<HolderStore>>,
}

impl WeakDhtHandle {
    /// The handle, while the node runs.
    pub(crate) fn upgrade(&self) -> Option<DhtHandle> {
        Some(DhtHandle {
            commands: self.commands.upgrade()?,
            peer_id: self.peer_id,
            config: self.config.clone(),
            clock: self.clock.clone(),
            holder: self.holder.clone(),
        })
    }

    /// The node's settings.
    pub(crate) fn config(&self) -> &DhtConfig {
        &self.config
    }
}
