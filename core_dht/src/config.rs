//! [`DhtConfig`]: every network setting, each with the reason for its default.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::StreamProtocol;

/// SpacePanda's private Kademlia protocol. Never the public `/ipfs/kad/1.0.0`: our nodes must
/// not join the IPFS DHT, and IPFS nodes must not fill our routing tables.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/spacepanda/kad/1.0.0");

/// The identify protocol version our nodes announce (and require of each other).
pub const IDENTIFY_PROTOCOL: &str = "/spacepanda/id/1.0.0";

/// Settings of one network node. [`Default`] is what a device or a serve node runs; tests
/// shorten the intervals.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// How many of the closest peers hold each record (Kademlia's `k` for records and for the
    /// closest-peer lookups). Default 10: a third of the network vanishing at once loses all
    /// ten holders of a record with probability about (1/3)^10 ≈ 2·10⁻⁵, and a put costs ten
    /// small messages, half of libp2p's default 20, which was sized for public IPFS churn.
    pub replication_factor: NonZeroUsize,
    /// How many peers must return our exact record on the check after a publish for it to
    /// count (default 3, a majority of a small community's always-on nodes). Smaller networks
    /// count at most the peers they have.
    pub publish_quorum: usize,
    /// One-time key packages a key package record carries, besides the last-resort one
    /// (default 8). Every lookup validates every package it receives (about 0.2 ms each), and
    /// an inviter needs one: eight cover a burst of invitations while the owner is offline,
    /// the last-resort package covers the rest, and the owner republishes as soon as one is
    /// claimed or used. The engine's pool (32) stays on the device.
    pub published_key_packages: usize,
    /// Peers a lookup asks at once (Kademlia's α; default 10, libp2p's is 3). With α equal to
    /// the replication factor, a node whose routing table already knows a record's holders
    /// asks them all in one round trip instead of four; the price is up to ten requests in
    /// flight per lookup, small at our record sizes.
    pub lookup_parallelism: NonZeroUsize,
    /// Largest record value (default 32 KiB). A key package record of 33 packages is about 15
    /// KB (450 bytes a package); a user record with 16 devices about 8 KiB.
    pub max_record_len: usize,
    /// Largest Kademlia message (default 64 KiB): one record at its bound plus the 20 closer
    /// peers a response lists. libp2p's default of 16 KiB would cut off full key package
    /// records.
    pub max_packet_size: usize,
    /// Records a node stores in all (default 4096; with `max_record_len` at most 128 MiB of
    /// memory for a serve node under attack, typically a few MiB).
    pub max_stored_records: usize,
    /// Records and entries one user may have stored on one node (default 64: a user record,
    /// 16 devices' key package records, two name entries, and claims on others' packages).
    pub publisher_quota: usize,
    /// How long a record we publish is valid (default 14 days, like a mailbox: a device that
    /// is offline for less than that can still be found). We republish long before.
    pub record_lifetime: Duration,
    /// Republish our own records when less than this is left of their lifetime (default 7
    /// days, half of `record_lifetime`).
    pub republish_margin: Duration,
    /// How far in the future a record's `issued_at` may be (default 5 minutes of clock skew).
    pub max_clock_skew: Duration,
    /// Bound on every Kademlia query (default 10 s; libp2p's 60 s is for the public DHT, and
    /// a person waiting on an invite should hear "unreachable" sooner).
    pub query_timeout: Duration,
    /// How often a node hands the records it holds to the current closest peers (default 10
    /// minutes; libp2p's is 1 h). This is what keeps records alive through churn.
    pub replication_interval: Duration,
    /// How long an idle connection stays open (default 60 s; libp2p's 10 s would close
    /// connections between the lookups of an interactive session).
    pub idle_connection_timeout: Duration,
    /// Whether this node answers Kademlia requests (server mode). Every node we run serves:
    /// they are peers, not clients of a service. Set it off only for a device on a network it
    /// cannot be reached from.
    pub server_mode: bool,
    /// How many peers hold a device's mailbox (default 5). A deposit counts once a majority
    /// (3) confirmed it, so it survives losing any two of the holders that stored it before
    /// they hand it over; 3 holders would survive one, and every holder more costs each
    /// deposit to an offline device one more request and one more disk write. Autonomi uses
    /// the same close group of 5.
    pub mailbox_holders: usize,
    /// How long a holder keeps an envelope nobody fetched (default 14 days, the lifetime of
    /// a key package and of our records: a device offline longer has to be re-added anyway).
    pub mailbox_ttl: Duration,
    /// Envelopes a holder keeps for one device (default 10,000: two weeks of a busy group).
    pub mailbox_max_envelopes: u64,
    /// Bytes a holder keeps for one device (default 64 MiB).
    pub mailbox_max_bytes: u64,
    /// Envelopes one sender may have waiting in one device's mailbox (default 2,000), so one
    /// peer cannot fill a mailbox for everyone else.
    pub mailbox_max_per_sender: u64,
    /// Bytes a holder keeps in all (default 1 GiB): what a node operator lends the network.
    pub holder_max_bytes: u64,
    /// Largest envelope carried (default 1 MiB, core_mls's `max_envelope_len`).
    pub max_envelope_len: usize,
    /// Bound on one request of the delivery protocol (default 10 s).
    pub request_timeout: Duration,
    /// How often a holder checks that it is still among a mailbox's closest peers and hands
    /// envelopes to new ones (default 5 minutes).
    pub handoff_interval: Duration,
    /// Bytes of envelopes one fetch response carries at most (default 4 MiB).
    pub fetch_page_bytes: usize,
}

impl DhtConfig {
    /// Holders that must confirm a deposit when `reachable` of them could be asked: a majority
    /// of the holders, or of those reachable when the network is smaller.
    pub fn deposit_quorum(&self, reachable: usize) -> usize {
        self.mailbox_holders.min(reachable) / 2 + 1
    }
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            replication_factor: NonZeroUsize::new(10).unwrap_or(NonZeroUsize::MIN),
            publish_quorum: 3,
            published_key_packages: 8,
            lookup_parallelism: NonZeroUsize::new(10).unwrap_or(NonZeroUsize::MIN),
            max_record_len: 32 * 1024,
            max_packet_size: 64 * 1024,
            max_stored_records: 4096,
            publisher_quota: 64,
            record_lifetime: Duration::from_secs(14 * 24 * 3600),
            republish_margin: Duration::from_secs(7 * 24 * 3600),
            max_clock_skew: Duration::from_secs(300),
            query_timeout: Duration::from_secs(10),
            replication_interval: Duration::from_secs(600),
            idle_connection_timeout: Duration::from_secs(60),
            server_mode: true,
            mailbox_holders: 5,
            mailbox_ttl: Duration::from_secs(14 * 24 * 3600),
            mailbox_max_envelopes: 10_000,
            mailbox_max_bytes: 64 * 1024 * 1024,
            mailbox_max_per_sender: 2_000,
            holder_max_bytes: 1024 * 1024 * 1024,
            max_envelope_len: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            handoff_interval: Duration::from_secs(300),
            fetch_page_bytes: 4 * 1024 * 1024,
        }
    }
}
