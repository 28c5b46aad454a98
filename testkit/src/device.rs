//! A device: an [`MlsClient`] over its own store, with its identity, that a test can close
//! (a killed process), reopen from its store, or make lose its store (a wiped phone).
//!
//! Every constructor takes the clock as any [`Clock`] that can be cloned: a test that moves
//! time uses a [`ManualClock`](spacepanda_core::ManualClock); one that runs real processes
//! can give the [`SystemClock`](spacepanda_core::SystemClock).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use core_identity::{DeviceIdentity, IdentityStore};
use core_mls::{DeviceAddress, MlsClient, MlsConfig};
use rand::rngs::StdRng;
use spacepanda_core::{Clock, MemoryStore, RedbStore, SharedStore};

use crate::seeded;

/// Where a device's store lives.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A `MemoryStore`: a reopen opens the same store object again.
    Memory,
    /// A `RedbStore` file `<name>.redb` in this directory: a reopen opens the file again.
    Files(PathBuf),
}

impl Storage {
    /// Files in `dir`.
    pub fn files_in(dir: &Path) -> Self {
        Self::Files(dir.to_owned())
    }

    /// A fresh store named `name`; with its file path (redb) or its `MemoryStore` (memory).
    fn create(&self, name: &str) -> (SharedStore, Option<PathBuf>, Option<Arc<MemoryStore>>) {
        match self {
            Self::Files(dir) => {
                let path = store_file(dir, name);
                let store = RedbStore::create(&path).expect("create a redb store");
                (Arc::new(store), Some(path), None)
            }
            Self::Memory => {
                let memory = Arc::new(MemoryStore::new());
                (memory.clone(), None, Some(memory))
            }
        }
    }
}

/// The store file of the device `name` in `dir`.
fn store_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.redb"))
}

/// The identity `store` holds.
fn load_identity<C: Clock + Clone + 'static>(store: &SharedStore, clock: &C) -> DeviceIdentity {
    IdentityStore::new(store.clone(), shared(clock))
        .load()
        .expect("load the identity")
        .expect("the store holds an identity")
}

/// One device.
pub struct Device {
    /// The name it was created under (also its display name).
    pub name: String,
    /// Its store, as the engine sees it.
    pub store: SharedStore,
    /// The same store as a `MemoryStore` (for byte-for-byte comparisons), if it is one.
    pub memory: Option<Arc<MemoryStore>>,
    /// Its store's file, if it is a `RedbStore`.
    pub path: Option<PathBuf>,
    /// Its identity, as stored in its store.
    pub identity: DeviceIdentity,
    /// Its engine; `None` while the device is closed.
    pub client: Option<MlsClient>,
}

fn shared<C: Clock + Clone + 'static>(clock: &C) -> Arc<dyn Clock> {
    Arc::new(clock.clone())
}

/// Opens the engine over `store` with a seed drawn from `rng`.
fn open_client<C: Clock + Clone + 'static>(
    store: &SharedStore,
    identity: DeviceIdentity,
    clock: &C,
    config: &MlsConfig,
    rng: &mut StdRng,
) -> MlsClient {
    let seed = seeded::engine_seed(rng);
    MlsClient::open_seeded(store.clone(), shared(clock), identity, config.clone(), seed)
        .expect("open the engine")
}

impl Device {
    /// Creates a device with a new identity, or (with `same_user_as`) a second device of that
    /// device's user, and opens its engine. Draws from `rng` the identity's keys first, then
    /// the engine's seed.
    pub fn create<C: Clock + Clone + 'static>(
        name: &str,
        storage: &Storage,
        same_user_as: Option<&Device>,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Self {
        let (store, path, memory) = storage.create(name);
        let identities = IdentityStore::new(store.clone(), shared(clock));
        let identity = match same_user_as {
            Some(other) => {
                let exported = other
                    .identities(clock)
                    .export_identity_key()
                    .expect("export the identity key");
                let display_name = other.identity.display_name().as_str().to_owned();
                identities.import_with(&exported, &display_name, rng)
            }
            None => identities.create_with(name, rng),
        }
        .expect("create the identity");
        let client = open_client(&store, identity.clone(), clock, config, rng);
        Self {
            name: name.to_owned(),
            store,
            memory,
            path,
            identity,
            client: Some(client),
        }
    }

    /// Opens the device `name` whose store file `<dir>/<name>.redb` already exists — made by
    /// [`Device::create`] on [`Storage::Files`] in an earlier process, or by a `Device` since
    /// dropped — with the identity stored there and an engine seed from `rng`. This is a
    /// process starting again, where [`Device::reopen`] is the same `Device` starting again.
    ///
    /// # Panics
    /// If the file is missing or damaged, or holds no identity.
    pub fn open_existing<C: Clock + Clone + 'static>(
        name: &str,
        dir: &Path,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Self {
        let path = store_file(dir, name);
        let store: SharedStore = Arc::new(RedbStore::open(&path).expect("open the redb store"));
        let identity = load_identity(&store, clock);
        let client = open_client(&store, identity.clone(), clock, config, rng);
        Self {
            name: name.to_owned(),
            store,
            memory: None,
            path: Some(path),
            identity,
            client: Some(client),
        }
    }

    /// Its address on the network.
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            user_id: self.identity.user_id(),
            device_id: self.identity.device_id(),
        }
    }

    /// Its engine.
    ///
    /// # Panics
    /// If the device is closed.
    pub fn client(&mut self) -> &mut MlsClient {
        self.client.as_mut().expect("device is closed")
    }

    /// Its engine, shared: for the calls that only read (`epoch`, `groups`, its key packages)
    /// on a device borrowed immutably.
    ///
    /// # Panics
    /// If the device is closed.
    pub fn client_ref(&self) -> &MlsClient {
        self.client.as_ref().expect("device is closed")
    }

    /// Whether its engine is open.
    pub fn is_open(&self) -> bool {
        self.client.is_some()
    }

    /// The identity store over its store (e.g. to export its user's identity key).
    pub fn identities<C: Clock + Clone + 'static>(&self, clock: &C) -> IdentityStore {
        IdentityStore::new(self.store.clone(), shared(clock))
    }

    /// Closes the engine without acknowledging anything (like a killed process).
    pub fn close(&mut self) {
        self.client = None;
    }

    /// Reopens the engine from its store (the file again, for redb), with a new seed from
    /// `rng`. What the engine had pending (`pending_delivered`, `pending_outbound`) is the
    /// caller's to take.
    pub fn reopen<C: Clock + Clone + 'static>(
        &mut self,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) {
        let store: SharedStore = match &self.path {
            Some(path) => Arc::new(RedbStore::open(path).expect("reopen the redb store")),
            None => self.store.clone(),
        };
        let identity = load_identity(&store, clock);
        assert_eq!(identity.user_id(), self.identity.user_id());
        let client = open_client(&store, identity, clock, config, rng);
        self.store = store;
        self.client = Some(client);
    }

    /// The device loses its store: a new, empty one named `new_name` takes its place, and it
    /// is restored under its old device id from its user's identity key, with a new signature
    /// key (drawn from `rng`, then the engine's seed).
    pub fn lose_store<C: Clock + Clone + 'static>(
        &mut self,
        new_name: &str,
        storage: &Storage,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) {
        let exported = self
            .identities(clock)
            .export_identity_key()
            .expect("export the identity key");
        self.client = None;
        let (store, path, memory) = storage.create(new_name);
        let identity = IdentityStore::new(store.clone(), shared(clock))
            .restore_with(
                &exported,
                self.identity.device_id(),
                self.identity.display_name().as_str(),
                rng,
            )
            .expect("restore the identity");
        let client = open_client(&store, identity.clone(), clock, config, rng);
        self.store = store;
        self.path = path;
        self.memory = memory;
        self.identity = identity;
        self.client = Some(client);
    }
}

#[cfg(test)]
mod tests {
    use core_mls::MlsConfig;
    use spacepanda_core::SystemClock;

    use super::{Device, Storage};
    use crate::seeded;

    /// What a later process sees: the same identity and the group the dropped device made,
    /// on the system clock as a real process has it.
    #[test]
    fn open_existing_finds_what_a_dropped_device_left_in_its_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = MlsConfig::default();
        let mut rng = seeded::rng(11);
        let mut first = Device::create(
            "alice",
            &Storage::files_in(dir.path()),
            None,
            &SystemClock,
            &config,
            &mut rng,
        );
        let group = first.client().create_group().expect("create a group");
        let address = first.address();
        drop(first);

        let again = Device::open_existing("alice", dir.path(), &SystemClock, &config, &mut rng);
        assert_eq!(again.address(), address);
        assert_eq!(again.client_ref().groups(), vec![group]);
        assert_eq!(again.path, Some(dir.path().join("alice.redb")));
    }
}
