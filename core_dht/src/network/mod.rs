//! The libp2p side: one task owns the `Swarm` ([`event_loop`]); the rest of the program holds
//! a cloneable [`DhtHandle`](handle::DhtHandle) (commands on a bounded `mpsc`, replies on
//! `oneshot`s).

pub(crate) mod commands;
pub(crate) mod event_loop;
pub(crate) mod handle;
mod node_store;

use std::time::Duration;

use libp2p::core::transport::{MemoryTransport, Transport as _};
use libp2p::core::upgrade::Version;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, identify, identity::Keypair, kad, noise, tcp, yamux};

use crate::config::{DhtConfig, IDENTIFY_PROTOCOL, KAD_PROTOCOL};
use crate::error::{DhtError, DhtResult};
use crate::records::MAX_RECORD_LIFETIME_MS;
use crate::wire::{DELIVERY_PROTOCOL, Request, Response};

/// The protocols one node speaks: Kademlia (routing and records), identify (addresses), and
/// delivery (pushes to devices, mailboxes; [`crate::wire`]).
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) delivery: request_response::cbor::Behaviour<Request, Response>,
}

/// Room a request or a response needs besides its envelopes (ids, keys, a credential).
const MESSAGE_OVERHEAD: u64 = 16 * 1024;

/// Builds the swarm of one node: TCP and the in-process memory transport (tests, and several
/// nodes in one process), both with noise and yamux.
pub(crate) fn build_swarm(keypair: &Keypair, config: &DhtConfig) -> DhtResult<Swarm<Behaviour>> {
    let transport_error = |e: noise::Error| DhtError::Transport {
        reason: format!("noise setup: {e}"),
    };
    let peer_id = keypair.public().to_peer_id();
    let transport = MemoryTransport::default()
        .or_transport(tcp::tokio::Transport::new(
            tcp::Config::default().nodelay(true),
        ))
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(keypair).map_err(transport_error)?)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed();

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_replication_factor(config.replication_factor)
        .set_parallelism(config.lookup_parallelism)
        .set_query_timeout(config.query_timeout)
        .set_max_packet_size(config.max_packet_size)
        // Every record is checked before it is stored (FilterBoth): Kademlia checks nothing.
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        // Records carry their own lifetime; kad's TTL is only an outer bound.
        .set_record_ttl(Some(Duration::from_millis(MAX_RECORD_LIFETIME_MS)))
        .set_replication_interval(Some(config.replication_interval))
        // Owners republish from their durable store (own_records), with a fresh seq and
        // lifetime; kad's own republication would resend a stale copy.
        .set_publication_interval(None)
        .set_provider_publication_interval(None)
        // Write-back caching would store records at peers outside the closest set; our
        // lookups validate every answer and do not need it.
        .set_caching(kad::Caching::Disabled);
    let store = MemoryStore::with_config(
        peer_id,
        MemoryStoreConfig {
            max_records: config.max_stored_records,
            max_value_bytes: config.max_record_len,
            max_providers_per_key: 0,
            max_provided_keys: 0,
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
    if config.server_mode {
        // A node is a client until an external address is confirmed; ours serve at once.
        kad.set_mode(Some(kad::Mode::Server));
    }
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
            .with_agent_version(format!("spacepanda/{}", env!("CARGO_PKG_VERSION"))),
    );
    // A request carries at most one envelope; a response at most one fetch page (plus one
    // envelope, since a page always holds at least one).
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(config.max_envelope_len as u64 + MESSAGE_OVERHEAD)
        .set_response_size_maximum(
            (config.fetch_page_bytes + config.max_envelope_len) as u64 + MESSAGE_OVERHEAD,
        );
    let delivery = request_response::cbor::Behaviour::with_codec(
        codec,
        [(DELIVERY_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    );
    Ok(Swarm::new(
        transport,
        Behaviour {
            kad,
            identify,
            delivery,
        },
        peer_id,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(config.idle_connection_timeout),
    ))
}
