//! What handles and the network task say to each other: the commands a handle sends (each
//! with the `oneshot` its answer goes back on), what comes back, and the peers' requests the
//! task hands on.

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::error::DhtResult;
use crate::records::{RecordKey, ValidValue};
use crate::wire::{Request, Response};

/// A request a peer sent this node, handed to whoever answers it (the device's node for a
/// push, the mailbox service for the rest), which replies with [`Command::Respond`].
#[derive(Debug)]
pub(crate) struct InboundRequest {
    /// Names the response channel the event loop keeps.
    pub(crate) token: u64,
    /// Who asked (authenticated by noise).
    pub(crate) peer: PeerId,
    /// What it asked.
    pub(crate) request: Request,
}

/// What a handle asks of the network task.
#[derive(Debug)]
pub(crate) enum Command {
    Listen {
        address: Multiaddr,
        reply: oneshot::Sender<DhtResult<Multiaddr>>,
    },
    AddPeer {
        peer: PeerId,
        address: Multiaddr,
        reply: oneshot::Sender<DhtResult<()>>,
    },
    Bootstrap {
        reply: oneshot::Sender<DhtResult<usize>>,
    },
    Put {
        key: RecordKey,
        value: Vec<u8>,
        reply: oneshot::Sender<DhtResult<PutOutcome>>,
    },
    Get {
        key: RecordKey,
        reply: oneshot::Sender<GetOutcome>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    LocalRecord {
        key: RecordKey,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    Request {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Request,
        reply: oneshot::Sender<DhtResult<Response>>,
    },
    Respond {
        token: u64,
        response: Response,
    },
    ClosestPeers {
        key: Vec<u8>,
        count: std::num::NonZeroUsize,
        reply: oneshot::Sender<DhtResult<Vec<PeerId>>>,
    },
    ReceivePushes {
        sender: mpsc::Sender<InboundRequest>,
    },
    Shutdown,
}

/// How a put went: to how many of the closest peers it was sent, and how many acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PutOutcome {
    pub(crate) asked: usize,
    pub(crate) acked: usize,
}

/// Every valid answer a lookup gathered, and what it refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct GetOutcome {
    /// Valid values, with the peer that returned each (`None`: this node's own store).
    pub(crate) found: Vec<(Option<PeerId>, ValidValue)>,
    /// Values refused (forged, stale, expired, malformed).
    pub(crate) rejected: usize,
    /// Peers that answered the query.
    pub(crate) reached: usize,
    /// Whether the query ran out of time.
    pub(crate) timed_out: bool,
}

/// A node's view of the network, for tests and status lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub peer_id: PeerId,
    /// Addresses it listens on.
    pub listen_addresses: Vec<Multiaddr>,
    /// Peers in its routing table.
    pub routing_peers: usize,
    /// Peers it has a connection to.
    pub connected_peers: usize,
    /// Records it stores for the network.
    pub stored_records: usize,
    /// Peers it ignores for having sent or returned forged records.
    pub ignored_peers: usize,
    /// Records it refused to store.
    pub refused_puts: u64,
}
