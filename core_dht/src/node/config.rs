//! [`NodeConfig`]: how a [`Node`](super::Node) is set up, each default with its reason.

use std::sync::Arc;
use std::time::Duration;

use core_identity::DeviceId;
use core_mls::MlsConfig;
use libp2p::Multiaddr;
use spacepanda_core::{Clock, KdfParams, SystemClock};
use zeroize::Zeroizing;

use crate::DhtConfig;

/// The file a node keeps its device in, inside its data directory.
pub const DEVICE_FILE: &str = "device.redb";

/// How a [`Node`] is set up. [`NodeConfig::new`] has the defaults.
#[derive(Clone)]
pub struct NodeConfig {
    /// The display name of a new device (needed only when the data directory holds none).
    pub display_name: Option<String>,
    /// An identity key exported by another device of the same user
    /// ([`Node::export_identity_key`]): a new device becomes that user's next device.
    pub link: Option<Zeroizing<Vec<u8>>>,
    /// With [`link`](Self::link): restore this device id (a device whose store was lost)
    /// instead of making a new device. Its groups take it back by external commit
    /// ([`Node::join_own_groups`](crate::Node::join_own_groups)), which replaces its old leaf.
    /// Never restore an id that still runs elsewhere.
    pub restore_device: Option<DeviceId>,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0`, `/memory/0`).
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, each ending in `/p2p/<peer id>`. Empty: the first node.
    pub bootstrap: Vec<Multiaddr>,
    /// The network's settings.
    pub dht: DhtConfig,
    /// The engine's settings.
    pub mls: MlsConfig,
    /// Argon2id settings for a new store.
    pub kdf: KdfParams,
    /// The clock (the system clock in an app).
    pub clock: Arc<dyn Clock>,
    /// How often the mailbox is fetched after the one at start (default 30 s).
    pub fetch_interval: Duration,
    /// How often records are checked for freshness and claims synced (default 60 s).
    pub maintenance_interval: Duration,
    /// First wait before an envelope that could not be delivered is tried again; it doubles
    /// up to `retry_max` (defaults 1 s and 5 minutes).
    pub retry_base: Duration,
    /// Longest wait between two tries.
    pub retry_max: Duration,
    /// How long a looked-up user record is trusted for routing pushes, and a mailbox's
    /// holders for deposits (default 30 s).
    pub user_cache: Duration,
    /// After a push to a device fails, how long its envelopes go straight to its mailbox
    /// without trying it (default 10 s: a burst to an offline device costs no lookup and no
    /// dial per envelope; a device back sooner fetches what was deposited).
    pub offline_memory: Duration,
    /// Whether this device holds mailboxes for others in its store (default true: every
    /// node carries a share). A device short of disk or battery turns it off; senders then
    /// use the next closest peers.
    pub hold_mailboxes: bool,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("display_name", &self.display_name)
            .field("link", &self.link.as_ref().map(|_| "<identity key>"))
            .field("restore_device", &self.restore_device)
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// Defaults: the system clock, default network and engine settings, no listen address.
    pub fn new() -> Self {
        Self {
            display_name: None,
            link: None,
            restore_device: None,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            dht: DhtConfig::default(),
            mls: MlsConfig::default(),
            kdf: KdfParams::default(),
            clock: Arc::new(SystemClock),
            fetch_interval: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(60),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            user_cache: Duration::from_secs(30),
            offline_memory: Duration::from_secs(10),
            hold_mailboxes: true,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self::new()
    }
}
