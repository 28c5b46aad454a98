//! A malicious peer: a plain libp2p Kademlia node on our protocol that stores whatever it is
//! given, serves it to every lookup, and sends puts of anything to anyone.

use std::time::Duration;

use futures::StreamExt as _;
use libp2p::core::transport::{MemoryTransport, Transport as _};
use libp2p::core::upgrade::Version;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore as _};
use libp2p::kad::{self, Quorum, Record, RecordKey};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, identity::Keypair, noise, yamux};
use tokio::sync::mpsc;

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

enum Command {
    Hold(RecordKey, Vec<u8>),
    PutTo(PeerId, RecordKey, Vec<u8>),
}

/// The handle on a running malicious node.
pub struct MaliciousNode {
    pub peer_id: PeerId,
    pub address: Multiaddr,
    commands: mpsc::Sender<Command>,
}

impl MaliciousNode {
    /// Starts it, listening on a memory address, joined to `bootstrap`.
    pub async fn start(keypair: Keypair, bootstrap: (PeerId, Multiaddr)) -> Self {
        let peer_id = keypair.public().to_peer_id();
        let transport = MemoryTransport::default()
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(&keypair).expect("noise"))
            .multiplex(yamux::Config::default())
            .boxed();
        let mut config = kad::Config::new(core_dht::KAD_PROTOCOL);
        config.set_record_filtering(kad::StoreInserts::Unfiltered);
        config.set_max_packet_size(256 * 1024);
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_value_bytes: 256 * 1024,
                ..MemoryStoreConfig::default()
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, config);
        kad.set_mode(Some(kad::Mode::Server));
        let identify = identify::Behaviour::new(identify::Config::new(
            core_dht::IDENTIFY_PROTOCOL.to_owned(),
            keypair.public(),
        ));
        let mut swarm = Swarm::new(
            transport,
            Behaviour { kad, identify },
            peer_id,
            libp2p::swarm::Config::with_tokio_executor()
                .with_idle_connection_timeout(Duration::from_secs(60)),
        );
        swarm
            .listen_on("/memory/0".parse().expect("address"))
            .expect("listen");
        let address = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        swarm
            .behaviour_mut()
            .kad
            .add_address(&bootstrap.0, bootstrap.1.clone());
        swarm.dial(bootstrap.1).expect("dial");
        let _ = swarm.behaviour_mut().kad.bootstrap();
        let (commands, mut receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(BehaviourEvent::Identify(
                            identify::Event::Received { peer_id, info, .. },
                        )) = event
                        {
                            for address in info.listen_addrs {
                                swarm.behaviour_mut().kad.add_address(&peer_id, address);
                            }
                        }
                    }
                    command = receiver.recv() => match command {
                        Some(Command::Hold(key, value)) => {
                            let _ = swarm.behaviour_mut().kad.store_mut().put(Record {
                                key,
                                value,
                                publisher: None,
                                expires: None,
                            });
                        }
                        Some(Command::PutTo(peer, key, value)) => {
                            let record = Record { key, value, publisher: None, expires: None };
                            swarm.behaviour_mut().kad.put_record_to(
                                record,
                                std::iter::once(peer),
                                Quorum::One,
                            );
                        }
                        None => break,
                    },
                }
            }
        });
        Self {
            peer_id,
            address,
            commands,
        }
    }

    /// Keeps `value` under `key` and serves it to every lookup.
    pub async fn hold(&self, key: RecordKey, value: Vec<u8>) {
        self.commands
            .send(Command::Hold(key, value))
            .await
            .expect("malicious node runs");
    }

    /// Sends a put of `value` under `key` to `peer`.
    pub async fn put_to(&self, peer: PeerId, key: RecordKey, value: Vec<u8>) {
        self.commands
            .send(Command::PutTo(peer, key, value))
            .await
            .expect("malicious node runs");
    }
}
