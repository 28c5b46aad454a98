//! The one task that owns the `Swarm`: it runs commands from handles, drives kad's queries to
//! their end, checks what peers store and return, and answers every command exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use libp2p::core::transport::ListenerId;
use libp2p::kad::store::RecordStore as _;
use libp2p::kad::{self, QueryId, QueryResult, Quorum, Record};
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use spacepanda_core::Clock;
use tokio::sync::{mpsc, oneshot};

use super::node_store::NodeStore;
use super::{Behaviour, BehaviourEvent};
use crate::config::{DhtConfig, KAD_PROTOCOL};
use crate::error::{DhtError, DhtResult, Rejection};
use crate::records::{Checks, RecordKey};
use crate::wire::Response;

mod delivery_requests;

use super::commands::NodeStatus;
pub(crate) use super::commands::{Command, GetOutcome, InboundRequest, PutOutcome};

enum Pending {
    Bootstrap(oneshot::Sender<DhtResult<usize>>),
    FindHolders {
        record: Record,
        reply: oneshot::Sender<DhtResult<PutOutcome>>,
    },
    Put {
        asked: usize,
        reply: oneshot::Sender<DhtResult<PutOutcome>>,
    },
    Get {
        key: RecordKey,
        outcome: GetOutcome,
        reply: oneshot::Sender<GetOutcome>,
    },
    Closest(oneshot::Sender<DhtResult<Vec<PeerId>>>),
}

/// The task's state: the swarm, and one entry per command in flight.
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    config: DhtConfig,
    clock: Arc<dyn Clock>,
    store: NodeStore,
    pending: HashMap<QueryId, Pending>,
    listening: HashMap<ListenerId, oneshot::Sender<DhtResult<Multiaddr>>>,
    /// Peers that sent or returned a forged record: their answers and routing info are
    /// ignored from then on.
    ignored: HashSet<PeerId>,
    refused_puts: u64,
    /// Our requests in flight, each answered once (response or failure).
    requests: HashMap<OutboundRequestId, oneshot::Sender<DhtResult<Response>>>,
    /// Peers' requests waiting for our answer, by token.
    responders: HashMap<u64, ResponseChannel<Response>>,
    next_token: u64,
    /// Where pushes go (set by the device's node; none on a serve node).
    pushes: Option<mpsc::Sender<InboundRequest>>,
    /// Where mailbox requests go (none: this node keeps no mailboxes).
    mailbox: Option<mpsc::Sender<InboundRequest>>,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        config: DhtConfig,
        clock: Arc<dyn Clock>,
        mailbox: Option<mpsc::Sender<InboundRequest>>,
    ) -> Self {
        Self {
            swarm,
            commands,
            config,
            clock,
            store: NodeStore::default(),
            pending: HashMap::new(),
            listening: HashMap::new(),
            ignored: HashSet::new(),
            refused_puts: 0,
            requests: HashMap::new(),
            responders: HashMap::new(),
            next_token: 0,
            pushes: None,
            mailbox,
        }
    }

    /// Runs until every handle is dropped or one asks to shut down. Dropping the swarm closes
    /// every connection, which is what a killed node looks like to its peers.
    pub(crate) async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
            }
        }
    }

    fn checks(&self) -> Checks {
        Checks::new(self.clock.now(), &self.config)
    }

    fn kad(&mut self) -> &mut kad::Behaviour<libp2p::kad::store::MemoryStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { address, reply } => match self.swarm.listen_on(address) {
                Ok(id) => {
                    self.listening.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(DhtError::Transport {
                        reason: format!("cannot listen: {e}"),
                    }));
                }
            },
            Command::AddPeer {
                peer,
                address,
                reply,
            } => {
                self.kad().add_address(&peer, address.clone());
                let result = self.swarm.dial(address).map_err(|e| DhtError::Transport {
                    reason: format!("cannot dial {peer}: {e}"),
                });
                let _ = reply.send(result);
            }
            Command::Bootstrap { reply } => match self.kad().bootstrap() {
                Ok(id) => {
                    self.pending.insert(id, Pending::Bootstrap(reply));
                }
                Err(_) => {
                    let _ = reply.send(Err(DhtError::Unreachable {
                        reason: "no known peers to bootstrap from".into(),
                    }));
                }
            },
            Command::Put { key, value, reply } => self.start_put(key, value, reply),
            Command::Get { key, reply } => {
                let id = self.kad().get_record(key.to_kad());
                self.pending.insert(
                    id,
                    Pending::Get {
                        key,
                        outcome: GetOutcome::default(),
                        reply,
                    },
                );
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::LocalRecord { key, reply } => {
                let held = self
                    .kad()
                    .store_mut()
                    .get(&key.to_kad())
                    .map(|record| record.value.clone());
                let _ = reply.send(held);
            }
            Command::Request {
                peer,
                addresses,
                request,
                reply,
            } => {
                if self.ignored.contains(&peer) {
                    let _ = reply.send(Err(DhtError::Unreachable {
                        reason: format!("{peer} is ignored for sending forged data"),
                    }));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .delivery
                    .send_request_with_addresses(&peer, request, addresses);
                self.requests.insert(id, reply);
            }
            Command::Respond { token, response } => {
                if let Some(channel) = self.responders.remove(&token) {
                    // The peer may have given up (timeout, closed connection): nothing to do.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .delivery
                        .send_response(channel, response);
                }
            }
            Command::ClosestPeers { key, count, reply } => {
                let id = self.kad().get_n_closest_peers(key, count);
                self.pending.insert(id, Pending::Closest(reply));
            }
            Command::ReceivePushes { sender } => self.pushes = Some(sender),
            // Handled by `run`.
            Command::Shutdown => {}
        }
    }

    /// Stores our own value locally (through the same checks as anyone's), then finds the
    /// closest peers to send it to.
    fn start_put(
        &mut self,
        key: RecordKey,
        value: Vec<u8>,
        reply: oneshot::Sender<DhtResult<PutOutcome>>,
    ) {
        let checks = self.checks();
        let local = self.swarm.local_peer_id().to_owned();
        let record = Record {
            key: key.to_kad(),
            value,
            publisher: Some(local),
            expires: None,
        };
        let quota = self.config.publisher_quota;
        let kad_store = self.swarm.behaviour_mut().kad.store_mut();
        if let Err(rejection) = self.store.offer(kad_store, &record, &checks, quota) {
            let _ = reply.send(Err(rejection.into()));
            return;
        }
        // Send peers the value we now hold (for a merged record, the merge).
        let record = match self.kad().store_mut().get(&record.key) {
            Some(held) => Record {
                key: record.key.clone(),
                value: held.value.clone(),
                publisher: Some(local),
                expires: held.expires,
            },
            None => record,
        };
        let holders = self.config.replication_factor;
        let id = self.kad().get_n_closest_peers(record.key.to_vec(), holders);
        self.pending
            .insert(id, Pending::FindHolders { record, reply });
    }

    fn status(&mut self) -> NodeStatus {
        let routing_peers = self
            .kad()
            .kbuckets()
            .map(|bucket| bucket.num_entries())
            .sum();
        let stored_records = self.kad().store_mut().records().count();
        NodeStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addresses: self.swarm.listeners().cloned().collect(),
            routing_peers,
            connected_peers: self.swarm.connected_peers().count(),
            stored_records,
            ignored_peers: self.ignored.len(),
            refused_puts: self.refused_puts,
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(reply) = self.listening.remove(&listener_id) {
                    let _ = reply.send(Ok(address));
                }
            }
            SwarmEvent::ListenerError { listener_id, error }
            | SwarmEvent::ListenerClosed {
                listener_id,
                reason: Err(error),
                ..
            } => {
                if let Some(reply) = self.listening.remove(&listener_id) {
                    let _ = reply.send(Err(DhtError::Transport {
                        reason: format!("listener failed: {error}"),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Delivery(event)) => self.on_delivery(event),
            // Connections, dial failures and the rest: kad tracks what it needs.
            _ => {}
        }
    }

    /// identify is not wired into kad by libp2p: the addresses a peer reports go into the
    /// routing table here, if the peer speaks our Kademlia protocol and is not ignored.
    fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            if self.ignored.contains(&peer_id) || !info.protocols.contains(&KAD_PROTOCOL) {
                return;
            }
            for address in info.listen_addrs {
                self.kad().add_address(&peer_id, address);
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_inbound_put(source, record),
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            } => self.on_query_progress(id, result, stats, step.last),
            _ => {}
        }
    }

    fn on_inbound_put(&mut self, source: PeerId, record: Record) {
        if self.ignored.contains(&source) {
            self.refused_puts += 1;
            return;
        }
        let checks = self.checks();
        let quota = self.config.publisher_quota;
        let kad_store = self.swarm.behaviour_mut().kad.store_mut();
        if let Err(rejection) = self.store.offer(kad_store, &record, &checks, quota) {
            self.refused_puts += 1;
            tracing::debug!(%source, %rejection, "refused a record");
            if is_forgery(&rejection) {
                self.ignore(source);
            }
        }
    }

    /// A peer that sends or returns a forged record is dropped from the routing table and
    /// never asked or believed again. (Stale and expired records come from honest peers too,
    /// and are only refused.)
    fn ignore(&mut self, peer: PeerId) {
        tracing::info!(%peer, "ignoring a peer that sent a forged record");
        self.ignored.insert(peer);
        self.kad().remove_peer(&peer);
    }

    fn on_query_progress(
        &mut self,
        id: QueryId,
        result: QueryResult,
        stats: kad::QueryStats,
        last: bool,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match (pending, result) {
            (Pending::Bootstrap(reply), QueryResult::Bootstrap(result)) => {
                if last {
                    let _ = reply.send(match result {
                        Ok(_) => Ok(self.status().routing_peers),
                        Err(e) => Err(DhtError::Unreachable {
                            reason: format!("bootstrap: {e}"),
                        }),
                    });
                } else {
                    self.pending.insert(id, Pending::Bootstrap(reply));
                }
            }
            (Pending::FindHolders { record, reply }, QueryResult::GetClosestPeers(result)) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                let local = *self.swarm.local_peer_id();
                let holders: Vec<PeerId> = peers
                    .into_iter()
                    .map(|p| p.peer_id)
                    .filter(|p| *p != local && !self.ignored.contains(p))
                    .collect();
                if holders.is_empty() {
                    let _ = reply.send(Err(DhtError::Unreachable {
                        reason: "no peer to store the record at".into(),
                    }));
                    return;
                }
                let asked = holders.len();
                let put = self
                    .kad()
                    .put_record_to(record, holders.into_iter(), Quorum::All);
                self.pending.insert(put, Pending::Put { asked, reply });
            }
            (Pending::Put { asked, reply }, QueryResult::PutRecord(result)) => {
                let acked = match result {
                    Ok(_) => asked,
                    Err(
                        kad::PutRecordError::QuorumFailed { success, .. }
                        | kad::PutRecordError::Timeout { success, .. },
                    ) => success.len(),
                };
                let _ = reply.send(Ok(PutOutcome { asked, acked }));
            }
            (
                Pending::Get {
                    key,
                    mut outcome,
                    reply,
                },
                QueryResult::GetRecord(result),
            ) => {
                match result {
                    Ok(kad::GetRecordOk::FoundRecord(found)) => {
                        self.on_found(&key, &mut outcome, found.peer, &found.record);
                    }
                    Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. })
                    | Err(kad::GetRecordError::NotFound { .. }) => {}
                    Err(kad::GetRecordError::Timeout { .. }) => outcome.timed_out = true,
                }
                outcome.reached = stats.num_successes() as usize;
                if last {
                    let _ = reply.send(outcome);
                } else {
                    self.pending.insert(
                        id,
                        Pending::Get {
                            key,
                            outcome,
                            reply,
                        },
                    );
                }
            }
            (Pending::Closest(reply), QueryResult::GetClosestPeers(result)) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                let peers: Vec<PeerId> = peers
                    .into_iter()
                    .map(|p| p.peer_id)
                    .filter(|p| !self.ignored.contains(p))
                    .collect();
                let _ = reply.send(if peers.is_empty() {
                    Err(DhtError::Unreachable {
                        reason: "no peer known near the key".into(),
                    })
                } else {
                    Ok(peers)
                });
            }
            // A result of another kind for this id cannot happen; drop it.
            (pending, _) => drop(pending),
        }
    }

    /// Checks one record a lookup returned; a forged one gets its peer ignored.
    fn on_found(
        &mut self,
        key: &RecordKey,
        outcome: &mut GetOutcome,
        peer: Option<PeerId>,
        record: &Record,
    ) {
        if peer.is_some_and(|p| self.ignored.contains(&p)) {
            outcome.rejected += 1;
            return;
        }
        let checks = self.checks();
        let checked = if record.key == key.to_kad() {
            self.store.cache.validate(key, &record.value, &checks)
        } else {
            Err(Rejection::KeyMismatch)
        };
        match checked {
            Ok((value, dropped)) => {
                outcome.rejected += dropped;
                outcome.found.push((peer, value));
            }
            Err(rejection) => {
                outcome.rejected += 1;
                tracing::debug!(?peer, %rejection, "a lookup returned an invalid record");
                if let Some(peer) = peer
                    && is_forgery(&rejection)
                {
                    self.ignore(peer);
                }
            }
        }
    }
}

/// Rejections no honest node causes: it checks what it stores, so it never holds, sends or
/// returns these. (Stale, expired and over-quota records can come from honest nodes, and so
/// can a value over this node's size bound, if the sender runs with a larger one.)
fn is_forgery(rejection: &Rejection) -> bool {
    matches!(
        rejection,
        Rejection::Malformed { .. }
            | Rejection::KeyMismatch
            | Rejection::BadSignature
            | Rejection::BadIdentity { .. }
            | Rejection::BadKeyPackage { .. }
            | Rejection::TooMany { .. }
    )
}

/// Bound on how long a handle waits for the task to answer, past the query timeout.
pub(crate) const REPLY_GRACE: Duration = Duration::from_secs(5);
