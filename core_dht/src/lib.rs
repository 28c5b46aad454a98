//! SpacePanda's network: a rust-libp2p Kademlia network that carries a signed,
//! self-certifying directory of users, devices and key packages, delivers MLS envelopes to
//! devices that are online and keeps them in mailboxes for devices that are not, and the
//! [`Node`] that runs one device on it.
//!
//! # What it does
//!
//! A [`DhtHandle`] runs one network node: Kademlia on a private protocol
//! ([`KAD_PROTOCOL`]) over TCP or libp2p's in-process memory transport, with noise and yamux,
//! and identify feeding the addresses peers report into the routing table. On it:
//! - **records** ([`records`]) that nobody can forge, overwrite or roll back: a user's record
//!   (identity key, name, every device with its peer id), each device's key packages, name and
//!   address indexes (so `alice` and `alice@1a2b3c4d` resolve over the network), and claims on
//!   key packages. Every record is signed, versioned (`seq`), size-bounded, and stored at a key
//!   derived from its signer;
//! - **checks everywhere**: a node checks every record it is asked to store (Kademlia's
//!   `FilterBoth`) and every record a lookup returns (key derivation, signature, lifetime,
//!   size, identity binding, key package validation by core_mls, no `seq` rollback,
//!   per-publisher quota). A peer that sends or returns a forgery is ignored from then on;
//! - **outcomes a user can act on**: a lookup is found, [`DhtError::NotFound`] (peers answered;
//!   none holds a valid record) or [`DhtError::Unreachable`] (no peer, or no answer in time);
//!   a publication reports how many peers were asked, acknowledged and — checked by a lookup
//!   right after — really hold it, and falling short of the quorum is
//!   [`DhtError::QuorumNotReached`] with those counts;
//! - **own records that outlive the process** ([`DevicePublisher`]): built and signed from the
//!   device's identity and engine, kept with the highest `seq` used in the device's (sealed)
//!   store before they leave it, republished from there at start and before they expire, and
//!   after the key packages change (a claim, a Welcome, a refill);
//! - **delivery** ([`wire`], `node`): each envelope the engine produces is pushed to every
//!   recipient device that is online (request-response on [`wire::DELIVERY_PROTOCOL`]; the
//!   receiver answers only after its engine's transaction committed), or deposited in the
//!   device's [`mailbox`] (the `mailbox_holders` peers closest to its mailbox key; counted once
//!   a majority stored it durably). The outbox entry is acknowledged to the engine only then;
//!   until then it is retried with backoff. At least once on the wire, exactly once to the
//!   application (the engine drops copies by envelope and message id);
//! - **mailboxes**: holders keep envelopes in their own redb store with a lifetime (14 days)
//!   and quotas per recipient and per sender; only the owner device reads and deletes, by
//!   signing a fresh challenge with its certified key; holders hand envelopes to new closest
//!   peers as the network churns;
//! - **the [`Node`]**: one object per device — its sealed store, identity, engine and network
//!   node — with the async API an application wants (create, invite by address, remove, send,
//!   events, members with safety numbers, key package status, shutdown).
//!
//! # What it does not do
//!
//! - It does not decrypt anything and never sees a group's content: records are public by
//!   design (identity keys, names, key packages), and envelopes are MLS ciphertext it carries
//!   and stores as opaque bytes (only the `Node` hands them to its own engine).
//! - It does not order or judge commits: that is core_mls's fork rule. Delivery is at least
//!   once and unordered.
//! - It does not write a DHT, a transport or any crypto of its own: Kademlia, noise, yamux and
//!   TCP are rust-libp2p's, signatures are Ed25519 (ed25519-dalek), hashes BLAKE3.
//! - It does not keep other users' records on disk: what a node holds for the network lives in
//!   memory and comes back through replication and republishing. (Mailboxes are on disk: an
//!   envelope must survive its holder's restart.)
//!
//! # Design
//!
//! - `network`: one task owns the libp2p `Swarm` (`event_loop`); the rest of the program holds
//!   a cloneable [`DhtHandle`] that sends it commands over a bounded `mpsc` and awaits each
//!   reply on a `oneshot`. Every command is answered exactly once (ok, error, or timeout);
//!   `node_store` decides what the node keeps (checks, merge, quota) before kad's
//!   `MemoryStore` sees it.
//! - `records`: the wire format, key derivations and every check, as plain functions with no
//!   I/O (the part a reviewer should read first).
//! - `directory`: publishing with a storage check, lookups that combine every valid answer,
//!   and name resolution with core_identity's rule.
//! - `own_records`: this device's records, their durable `seq`, and republishing.
//! - `wire`: the delivery protocol's requests and responses.
//! - `mailbox`: keys and names (`mod`), the holder's store (`holder_store`) and task
//!   (`service`: deposits, challenges, fetches, acknowledgements, hand-over), the owner's proof
//!   (`access`), and the sender's and owner's side (`client`).
//! - `node`: the [`Node`] (`mod`), its scheduler (`driver`: pushes in, ticks, fetches,
//!   record upkeep; it never waits on the network itself) and the outbox's way out
//!   (`delivery`: push or deposit per device, backoff).
//!
//! # Getting started
//!
//! An application runs a device with [`Node`]; its docs show alice inviting bob by address
//! and bob reading her message. The example below is the layer under it: the directory on a
//! bare [`DhtHandle`].
//!
//! Two nodes in one process on the memory transport; bob publishes, another node finds him.
//!
//! ```
//! # use std::sync::Arc;
//! use core_dht::{DevicePublisher, DhtConfig, DhtHandle};
//! use core_identity::IdentityStore;
//! use core_mls::{MlsClient, MlsConfig};
//! use libp2p::identity::Keypair;
//! use spacepanda_core::{Clock, MemoryStore, SharedStore, SystemClock};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock: Arc<dyn Clock> = Arc::new(SystemClock);
//! // With fewer peers than the quorum, a publication needs every peer it has.
//! let config = DhtConfig::default();
//! let serve = DhtHandle::spawn(&Keypair::generate_ed25519(), config.clone(), clock.clone())?;
//! let serve_address = serve.listen("/memory/0".parse()?).await?;
//! let node = DhtHandle::spawn(&Keypair::generate_ed25519(), config.clone(), clock.clone())?;
//! node.listen("/memory/0".parse()?).await?;
//! node.add_peer(serve.peer_id(), serve_address).await?;
//! node.bootstrap().await?;
//!
//! // Bob's device: a store (RedbStore + SealedStore in an app), an identity, an engine.
//! let store: SharedStore = Arc::new(MemoryStore::new());
//! let identity = IdentityStore::new(store.clone(), clock.clone()).create("bob")?;
//! let mut engine = MlsClient::open(store.clone(), clock.clone(), identity.clone(), MlsConfig::default())?;
//! let publisher = DevicePublisher::new(store, clock, identity.clone(), &config);
//! publisher.publish_identity(&node, &[]).await?;
//! publisher.publish_key_packages(&node, &mut engine).await?;
//!
//! // Anyone resolves "bob" and fetches a key package to invite him.
//! let bob = serve.resolve("bob").await?.user;
//! let device = &bob.devices[0];
//! let packages = serve.lookup_key_packages(&bob.user_id, &device.member.device_id()).await?;
//! let package = packages.pick().ok_or("bob published no key package")?;
//! assert_eq!(package.validated.member.user_id(), identity.user_id());
//! # Ok(())
//! # }
//! ```

mod config;
mod directory;
mod error;
mod key_package_source;
pub mod mailbox;
mod network;
mod node;
mod node_key;
mod own_records;
pub mod records;
pub mod wire;

pub use config::{DhtConfig, IDENTIFY_PROTOCOL, KAD_PROTOCOL};
pub use directory::{Publication, PublishReport, ResolvedRecord};
pub use error::{DhtError, DhtResult, ErrorKind, Rejection};
/// Addresses and peer ids, as libp2p spells them (re-exported so that applications need not
/// pin libp2p themselves).
pub use libp2p::{Multiaddr, PeerId};
pub use mailbox::client::DepositReport;
pub use network::commands::NodeStatus;
pub use network::handle::{DhtHandle, MailboxUsage};
pub use node::{DEVICE_FILE, FetchSummary, Invitation, MemberInfo, Node, NodeConfig, NodeEvent};
pub use node_key::{NODE_KEY_NAMESPACE, load_or_create_node_keypair};
pub use own_records::{ClaimSync, DevicePublisher, KeyPackageSource, OWN_RECORDS_NAMESPACE};
pub use records::{
    Claim, DeviceRecord, KeyPackageRecord, NameEntry, PublishedKeyPackage, UserRecord,
};
