//! [`Node`]: one device, running. It owns the device's sealed store, its identity, its MLS
//! engine and its network node, and keeps them working together: it publishes and refreshes
//! the device's records, delivers what the engine produces (pushed to online devices,
//! deposited in mailboxes for the others), feeds what arrives to the engine, fetches the
//! device's mailbox, and ticks the engine at its deadlines.
//!
//! Nothing here blocks the async runtime: every store and engine call runs on
//! `spawn_blocking`, behind one lock around the engine (the engine is one device's state
//! machine; its operations are short transactions).

mod catch_up;
mod config;
mod delivery;
mod driver;
mod rejoin;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use core_identity::{
    DeviceId, DeviceIdentity, IdentityStore, SafetyNumber, UserId, VerifiedMember,
};
use core_mls::{
    DeliveryId, DeviceAddress, Event, GroupId, MessageId, MlsClient, MlsError, Output, PoolStatus,
};
use libp2p::Multiaddr;
use spacepanda_core::{KdfParams, RedbStore, SealedStore, SharedStore};
use tokio::sync::{Notify, mpsc, watch};
use zeroize::Zeroizing;

use crate::error::{DhtError, DhtResult};
use crate::load_or_create_node_keypair;
use crate::network::handle::DhtHandle;
use crate::own_records::DevicePublisher;

pub use config::{DEVICE_FILE, NodeConfig};

/// What a [`Node`] tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// Something the engine reported (a message, a join, a removal, a fork, …). An
    /// [`Event::Message`] stays in the durable inbox until [`Node::ack_delivered`].
    Engine(Box<Event>),
    /// An envelope could not reach some of its devices yet, neither directly nor through
    /// their mailboxes. It stays queued and is retried with backoff; reported at the first
    /// failure of each envelope.
    DeliveryDelayed {
        /// The group, if any.
        group: Option<GroupId>,
        /// Devices still waiting for it.
        waiting: usize,
        /// Why mailbox holders refused it, when they did (a full mailbox, a sender over its
        /// quota, an envelope too large): what the user can act on.
        refusal: Option<crate::mailbox::MailboxRefusal>,
        /// The last error, in words.
        reason: String,
    },
    /// A recipient device's engine refused an envelope for good (it could not decrypt or
    /// verify it, or the message arrived too far out of order): that device will not have
    /// it. Sending it again would be refused too.
    DeliveryRefused {
        /// The group, if any.
        group: Option<GroupId>,
        /// The device.
        device: core_mls::DeviceAddress,
        /// What its engine said.
        reason: String,
    },
    /// A mailbox holder returned envelopes that are not what was deposited (their names do
    /// not match their bytes): it was ignored for them, and the other holders' copies used.
    AlteredByHolder {
        /// How many.
        envelopes: usize,
    },
}

/// A member of a group, with the safety number to compare with that user.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// The verified member device.
    pub member: VerifiedMember,
    /// The safety number between this device's user and the member's user.
    pub safety_number: SafetyNumber,
}

/// What an invitation did.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// The devices added (their Welcome is on its way).
    pub added: Vec<VerifiedMember>,
    /// Devices of the user that were not added, with why (no key package found, the network
    /// did not answer). Invite again later to add them.
    pub skipped: Vec<(DeviceId, String)>,
}

/// How one fetch of the mailbox went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchSummary {
    /// Holders asked.
    pub holders_asked: usize,
    /// Holders that let this device read.
    pub holders_read: usize,
    /// Distinct envelopes fetched.
    pub envelopes: usize,
    /// Envelopes the engine took (new or duplicate) and that were acknowledged.
    pub acknowledged: usize,
    /// Envelopes a holder had altered.
    pub altered: usize,
}

/// The state a node's tasks share.
pub(crate) struct Shared {
    pub(crate) store: SharedStore,
    pub(crate) engine: Arc<Mutex<MlsClient>>,
    pub(crate) dht: DhtHandle,
    pub(crate) publisher: Arc<DevicePublisher>,
    pub(crate) identities: IdentityStore,
    pub(crate) device: DeviceIdentity,
    pub(crate) config: NodeConfig,
    pub(crate) addresses: Vec<Multiaddr>,
    pub(crate) events: mpsc::UnboundedSender<NodeEvent>,
    /// The outbox has new entries.
    pub(crate) outbox_changed: Notify,
    /// The key packages changed (claimed, used, refilled): republish.
    pub(crate) packages_changed: Notify,
    /// The engine's next deadline may have moved.
    pub(crate) deadline_changed: Notify,
    pub(crate) delivery: delivery::DeliveryState,
    /// Groups to bring back in line: stuck behind a commit this device lacks (`catch_up`), or
    /// forked beyond the window (`rejoin`).
    pub(crate) missing: mpsc::UnboundedSender<Recovery>,
    /// Per group, the member whose GroupInfo this device last rejoined with: asked first if
    /// that rejoin is contested.
    pub(crate) rejoin_sources: Mutex<HashMap<GroupId, DeviceAddress>>,
}

/// What the driver does for a group the engine reported stuck.
#[derive(Debug)]
pub(crate) enum Recovery {
    /// Ask members for the commits from this epoch on.
    CatchUp(GroupId, u64),
    /// Ask members for a GroupInfo, and rejoin if its branch outranks ours.
    Rejoin(GroupId),
}

impl Shared {
    /// Runs `work` on the engine, off the async runtime.
    pub(crate) async fn engine<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut MlsClient) -> Result<T, MlsError> + Send + 'static,
    ) -> DhtResult<T> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut engine)
        })
        .await
        .map_err(|e| DhtError::Node {
            reason: format!("the engine task failed: {e}"),
        })?
        .map_err(DhtError::from)
    }

    pub(crate) fn remember_rejoin_source(&self, group: &GroupId, source: DeviceAddress) {
        self.rejoin_sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group.clone(), source);
    }

    pub(crate) fn rejoin_source(&self, group: &GroupId) -> Option<DeviceAddress> {
        self.rejoin_sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .copied()
    }

    /// Passes on what an engine call produced: events to the application, new envelopes to
    /// the delivery task.
    pub(crate) fn report(&self, output: Output) {
        if !output.outbound.is_empty() {
            self.outbox_changed.notify_one();
        }
        for event in output.events {
            match &event {
                Event::KeyPackagesReplenished { .. } | Event::Joined { .. } => {
                    self.packages_changed.notify_one();
                }
                Event::MissingCommit { group, epoch, .. } => {
                    let _ = self.missing.send(Recovery::CatchUp(group.clone(), *epoch));
                }
                Event::ForkOutsideWindow { group, .. }
                | Event::RejoinContested { group, .. }
                | Event::BranchContested { group, .. } => {
                    let _ = self.missing.send(Recovery::Rejoin(group.clone()));
                }
                _ => {}
            }
            let _ = self.events.send(NodeEvent::Engine(Box::new(event)));
        }
        self.deadline_changed.notify_one();
    }
}

/// One device, running: its sealed store, identity, engine and network node (see the
/// [module docs](self)).
///
/// Alice and bob, each a `Node` on its own data directory, find each other through a serve
/// node (here in one process, on the memory transport):
///
/// ```
/// use core_dht::{DhtConfig, DhtHandle, Node, NodeConfig, NodeEvent};
/// use core_mls::Event;
/// use libp2p::{identity::Keypair, multiaddr::Protocol};
/// use spacepanda_core::{KdfParams, RedbStore};
/// # use std::sync::Arc;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// // An always-on peer that routes, stores records and holds mailboxes.
/// let store = Arc::new(RedbStore::create(dir.path().join("serve.redb"))?);
/// let clock = Arc::new(spacepanda_core::SystemClock);
/// let serve =
///     DhtHandle::spawn_with_mailboxes(&Keypair::generate_ed25519(), DhtConfig::default(), clock, store)?;
/// let serve_address = serve.listen("/memory/0".parse()?).await?.with(Protocol::P2p(serve.peer_id()));
///
/// let memory: libp2p::Multiaddr = "/memory/0".parse()?; // "/ip4/0.0.0.0/tcp/0" in an app
/// let config = |name: &str| NodeConfig {
///     display_name: Some(name.into()),
///     listen: vec![memory.clone()],
///     bootstrap: vec![serve_address.clone()],
///     kdf: KdfParams::INSECURE_FOR_TESTS, // an app keeps the default
///     ..NodeConfig::new()
/// };
/// let alice = Node::open(dir.path().join("alice"), b"alice's passphrase", config("alice")).await?;
/// let bob = Node::open(dir.path().join("bob"), b"bob's passphrase", config("bob")).await?;
/// let mut bob_events = bob.take_events().ok_or("taken once")?;
/// alice.publish().await?;
/// bob.publish().await?;
///
/// let group = alice.create_group().await?;
/// let bob_address = bob.device().address().to_string(); // "bob@1a2b3c4d"
/// alice.invite(&group, &bob_address).await?;
/// alice.send(&group, b"hello bob").await?;
///
/// // Bob's engine joined from the Welcome and decrypted the message.
/// let body = loop {
///     let event = tokio::time::timeout(std::time::Duration::from_secs(20), bob_events.recv())
///         .await?
///         .ok_or("bob's node stopped")?;
///     if let NodeEvent::Engine(event) = event
///         && let Event::Message { body, delivery, .. } = *event
///     {
///         bob.ack_delivered(delivery).await?; // the app stored it
///         break body;
///     }
/// };
/// assert_eq!(body, b"hello bob");
/// alice.shutdown().await;
/// bob.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Node {
    shared: Arc<Shared>,
    events: Mutex<Option<mpsc::UnboundedReceiver<NodeEvent>>>,
    stop: watch::Sender<bool>,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.shared.device.address())
            .field("peer_id", &self.shared.dht.peer_id())
            .finish_non_exhaustive()
    }
}

fn open_store(path: &Path, passphrase: &[u8], kdf: KdfParams) -> DhtResult<SharedStore> {
    if path.exists() {
        let file = RedbStore::open(path)?;
        Ok(Arc::new(SealedStore::open_with_passphrase(
            file, passphrase,
        )?))
    } else {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DhtError::Node {
                reason: format!("cannot create the data directory {}: {e}", dir.display()),
            })?;
        }
        let file = RedbStore::create(path)?;
        Ok(Arc::new(SealedStore::create_with_passphrase(
            file, passphrase, kdf,
        )?))
    }
}

fn no_device_here() -> DhtError {
    DhtError::Node {
        reason: "this data directory holds no device yet: give a display name to create one".into(),
    }
}

impl Node {
    /// Opens the device kept in `data_dir` (creating it on first use, from
    /// [`NodeConfig::display_name`] or [`NodeConfig::link`]), starts its network node,
    /// joins the network, publishes the device's records, and starts delivering.
    ///
    /// A wrong passphrase is [`StoreError::WrongKey`](spacepanda_core::StoreError) inside
    /// [`DhtError::Store`]; a directory another process uses is a store error too; nothing
    /// is changed by a failed open.
    pub async fn open(
        data_dir: impl AsRef<Path>,
        passphrase: &[u8],
        config: NodeConfig,
    ) -> DhtResult<Self> {
        let path = data_dir.as_ref().join(DEVICE_FILE);
        let passphrase = Zeroizing::new(passphrase.to_vec());
        let clock = config.clock.clone();
        let setup = config.clone();
        if !path.exists() && config.display_name.is_none() {
            // Checked before anything is created: a mistaken open leaves no file behind,
            // sealed with a passphrase the user did not mean to set.
            return Err(no_device_here());
        }
        let (store, identities, device, keypair, engine) =
            tokio::task::spawn_blocking(move || -> DhtResult<_> {
                let store = open_store(&path, &passphrase, setup.kdf)?;
                let identities = IdentityStore::new(store.clone(), setup.clock.clone());
                let device = match (identities.load()?, &setup.link, &setup.display_name) {
                    (Some(device), _, _) => device,
                    (None, Some(exported), Some(name)) => match setup.restore_device {
                        Some(device_id) => identities.restore(exported, device_id, name)?,
                        None => identities.import(exported, name)?,
                    },
                    (None, None, Some(name)) => identities.create(name)?,
                    (None, _, None) => return Err(no_device_here()),
                };
                let keypair = load_or_create_node_keypair(
                    &store,
                    libp2p::identity::Keypair::generate_ed25519,
                )?;
                let engine = MlsClient::open(
                    store.clone(),
                    setup.clock.clone(),
                    device.clone(),
                    setup.mls.clone(),
                )?;
                Ok((store, identities, device, keypair, engine))
            })
            .await
            .map_err(|e| DhtError::Node {
                reason: format!("opening the device failed: {e}"),
            })??;

        let dht = if config.hold_mailboxes {
            DhtHandle::spawn_with_mailboxes(
                &keypair,
                config.dht.clone(),
                clock.clone(),
                store.clone(),
            )?
        } else {
            DhtHandle::spawn(&keypair, config.dht.clone(), clock.clone())?
        };
        let mut addresses = Vec::new();
        for address in &config.listen {
            addresses.push(dht.listen(address.clone()).await?);
        }
        if !config.bootstrap.is_empty() {
            dht.join(&config.bootstrap).await?;
        }
        let store_for_app = store.clone();
        let publisher = DevicePublisher::new(store, clock, device.clone(), &config.dht);
        let (events, receiver) = mpsc::unbounded_channel();
        let (missing, missing_groups) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store: store_for_app,
            engine: Arc::new(Mutex::new(engine)),
            dht,
            publisher: Arc::new(publisher),
            identities,
            device,
            config,
            addresses,
            events,
            outbox_changed: Notify::new(),
            packages_changed: Notify::new(),
            deadline_changed: Notify::new(),
            delivery: delivery::DeliveryState::default(),
            missing,
            rejoin_sources: Mutex::new(HashMap::new()),
        });
        // What the application has not acknowledged yet is handed to it again.
        for event in shared.engine(|engine| engine.pending_delivered()).await? {
            let _ = shared.events.send(NodeEvent::Engine(Box::new(event)));
        }
        // The mailbox first, then pushes: what waited for this device is older than what
        // arrives now, and a sender's ratchet tolerates little reordering. (Pushes meanwhile
        // are answered "not here" and go to the mailbox, behind the rest.)
        if let Err(e) = driver::fetch_mailbox(&shared).await {
            tracing::debug!(error = %e, "the first mailbox fetch failed; retried periodically");
        }
        let (pushes, push_requests) = mpsc::channel(crate::network::handle::INBOUND_QUEUE);
        shared.dht.receive_pushes(pushes).await?;
        let (stop, stopped) = watch::channel(false);
        let driver = tokio::spawn(driver::run(
            shared.clone(),
            push_requests,
            missing_groups,
            stopped,
        ));
        Ok(Self {
            shared,
            events: Mutex::new(Some(receiver)),
            stop,
            driver: Mutex::new(Some(driver)),
        })
    }

    /// The events of this node (once: later calls get `None`).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<NodeEvent>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// This device's identity.
    pub fn device(&self) -> &DeviceIdentity {
        &self.shared.device
    }

    /// The device's sealed store, for the application's own records (names it gives groups,
    /// settings): they are sealed and crash-safe like everything else in the file. Keep them
    /// in a namespace of the application's own; docs/STORAGE.md lists the namespaces the
    /// engine and the network use, which are not to be touched.
    pub fn store(&self) -> &SharedStore {
        &self.shared.store
    }

    /// The network node.
    pub fn dht(&self) -> &DhtHandle {
        &self.shared.dht
    }

    /// Where this node listens (as bound).
    pub fn listen_addresses(&self) -> &[Multiaddr] {
        &self.shared.addresses
    }

    /// Creates a group with this device as its only member.
    pub async fn create_group(&self) -> DhtResult<GroupId> {
        self.shared.engine(|engine| engine.create_group()).await
    }

    /// Invites the user at `address` (`bob@1a2b3c4d`, or a bare name that resolves to one
    /// user): resolves it over the network, fetches and claims a key package of each of the
    /// user's devices, and adds them all in one commit. A device whose key packages cannot be
    /// found is left out and listed in [`Invitation::skipped`]; if none can be, nothing
    /// changes and the error says why.
    pub async fn invite(&self, group: &GroupId, address: &str) -> DhtResult<Invitation> {
        self.invite_all(group, &[address]).await
    }

    /// Invites several users at once, in one commit (one epoch for the group, one Welcome per
    /// device): like [`invite`](Self::invite) for each address. An address that does not
    /// resolve fails the whole call, before anything changes.
    pub async fn invite_all(&self, group: &GroupId, addresses: &[&str]) -> DhtResult<Invitation> {
        let mut users = Vec::with_capacity(addresses.len());
        for address in addresses {
            users.push(self.shared.dht.resolve(address).await?.user);
        }
        let mut packages = Vec::new();
        let mut claims = Vec::new();
        let mut skipped = Vec::new();
        let mut last_error = None;
        for (user, device) in users
            .iter()
            .flat_map(|user| user.devices.iter().map(move |device| (user, device)))
        {
            let device_id = device.member.device_id();
            if device_id == self.shared.device.device_id() {
                continue;
            }
            let record = match self
                .shared
                .dht
                .lookup_key_packages(&user.user_id, &device_id)
                .await
            {
                Ok(record) => record,
                Err(e) => {
                    skipped.push((device_id, e.to_string()));
                    last_error = Some(e);
                    continue;
                }
            };
            let Some(package) = record.pick() else {
                skipped.push((device_id, "it offers no key package".to_owned()));
                continue;
            };
            claims.push(
                self.shared
                    .publisher
                    .claim(&record, &package.validated.key_package_ref)?,
            );
            packages.push(package.bytes.clone());
        }
        if packages.is_empty() {
            return Err(last_error.unwrap_or_else(|| DhtError::Node {
                reason: format!(
                    "{} has no device with a key package to invite; ask them to come online",
                    addresses.join(", ")
                ),
            }));
        }
        // A claim tells the owner (and other inviters) the package is used; it is a hint, so
        // one that does not reach the network does not stop the invite.
        for claim in &claims {
            if let Err(e) = self.shared.dht.publish(claim).await {
                tracing::debug!(error = %e, "a key package claim was not confirmed");
            }
        }
        let group_id = group.clone();
        let output = self
            .shared
            .engine(move |engine| engine.add_members(&group_id, &packages))
            .await?;
        let added = output
            .events
            .iter()
            .filter_map(|event| match event {
                Event::MembersAdded { members, .. } => Some(members.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        self.shared.report(output);
        Ok(Invitation { added, skipped })
    }

    /// Removes every device of `user` from `group`.
    pub async fn remove_user(&self, group: &GroupId, user: &UserId) -> DhtResult<()> {
        let (group, user) = (group.clone(), *user);
        let output = self
            .shared
            .engine(move |engine| engine.remove_user(&group, &user))
            .await?;
        self.shared.report(output);
        Ok(())
    }

    /// A new key for this device in `group` (an MLS self-update commit): what an application
    /// does now and then, or after a suspected compromise, so that keys taken from this device
    /// before stop opening the group's messages (post-compromise security).
    pub async fn self_update(&self, group: &GroupId) -> DhtResult<()> {
        let group = group.clone();
        let output = self
            .shared
            .engine(move |engine| engine.self_update(&group))
            .await?;
        self.shared.report(output);
        Ok(())
    }

    /// Removes one device of `user` from `group`.
    pub async fn remove_device(
        &self,
        group: &GroupId,
        user: &UserId,
        device: &DeviceId,
    ) -> DhtResult<()> {
        let (group, user, device) = (group.clone(), *user, *device);
        let output = self
            .shared
            .engine(move |engine| engine.remove_device(&group, &user, &device))
            .await?;
        self.shared.report(output);
        Ok(())
    }

    /// Sends `body` to `group`. Returns the message's id (what receivers see), once it is in
    /// the durable outbox (or waiting for a pending commit, see core_mls).
    pub async fn send(&self, group: &GroupId, body: &[u8]) -> DhtResult<MessageId> {
        let (group, body) = (group.clone(), body.to_vec());
        let output = self
            .shared
            .engine(move |engine| engine.send(&group, &body))
            .await?;
        let id = output.events.iter().find_map(|event| match event {
            Event::MessageSent { message_id, .. } => Some(*message_id),
            _ => None,
        });
        self.shared.report(output);
        id.ok_or_else(|| DhtError::Node {
            reason: "the engine sent no message; report this as a bug".into(),
        })
    }

    /// The application stored message `id` ([`Event::Message`]): forget it.
    pub async fn ack_delivered(&self, id: DeliveryId) -> DhtResult<bool> {
        self.shared
            .engine(move |engine| engine.ack_delivered(id))
            .await
    }

    /// Joins `group` again by external commit (core_mls's `join_by_external_commit`), with a
    /// GroupInfo from one of its member devices this device knows, or from one of the user's
    /// other devices: for a device that fell too far behind, lost its state of the group, or
    /// sits on a branch the others left. Messages sent to the group before are not recoverable
    /// here (`Event::Rejoined` says so). The node does this by itself after
    /// `Event::ForkOutsideWindow` when the other branch outranks this one.
    ///
    /// # Errors
    /// [`DhtError::Unreachable`] when no member device gave a GroupInfo; the engine's error
    /// when the GroupInfo was refused (a removed user gets `RejoinRefused`).
    pub async fn rejoin(&self, group: &GroupId) -> DhtResult<()> {
        rejoin::rejoin(&self.shared, group).await
    }

    /// Joins, by external commit, every group the user's other devices are in and this
    /// device is not: what a new device of the user (or one whose store was lost) does once.
    /// Returns the groups joined; messages sent to them before are not recoverable here.
    pub async fn join_own_groups(&self) -> DhtResult<Vec<GroupId>> {
        rejoin::join_own_groups(&self.shared).await
    }

    /// The groups this device is in.
    pub async fn groups(&self) -> DhtResult<Vec<GroupId>> {
        self.shared.engine(|engine| Ok(engine.groups())).await
    }

    /// The members of `group`, each with the safety number to compare with its user.
    pub async fn members(&self, group: &GroupId) -> DhtResult<Vec<MemberInfo>> {
        let group = group.clone();
        let members = self
            .shared
            .engine(move |engine| engine.members(&group))
            .await?;
        let own = self.shared.device.identity_public_key();
        Ok(members
            .into_iter()
            .map(|member| MemberInfo {
                safety_number: SafetyNumber::between(own, member.identity_public_key()),
                member,
            })
            .collect())
    }

    /// The state of this device's key package pool.
    pub async fn key_package_status(&self) -> DhtResult<PoolStatus> {
        self.shared
            .engine(|engine| engine.key_package_status())
            .await
    }

    /// Envelopes produced and not yet delivered (to every device, or to mailboxes).
    pub async fn undelivered(&self) -> DhtResult<usize> {
        self.shared
            .engine(|engine| engine.pending_outbound().map(|pending| pending.len()))
            .await
    }

    /// Fetches this device's mailbox now (it is also fetched at start and periodically).
    pub async fn fetch_mailbox(&self) -> DhtResult<FetchSummary> {
        driver::fetch_mailbox(&self.shared).await
    }

    /// The identity key in its export format, to set up another device of this user
    /// ([`NodeConfig::link`]). Whoever holds it can add devices as this user.
    pub fn export_identity_key(&self) -> DhtResult<Zeroizing<Vec<u8>>> {
        Ok(self.shared.identities.export_identity_key()?)
    }

    /// Publishes this device's records now (also done at start and kept fresh).
    pub async fn publish(&self) -> DhtResult<()> {
        driver::maintain(&self.shared).await
    }

    /// Stops delivering and receiving, waits for the work in flight (bounded), and stops
    /// the network node. What is not delivered stays in the durable outbox for next time.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let driver = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(driver) = driver {
            let _ =
                tokio::time::timeout(self.shared.dht.config().request_timeout * 2, driver).await;
        }
        self.shared.dht.shutdown().await;
    }
}
