//! A device: an [`MlsClient`] over its own store, with its identity, that a test can close
//! (a killed process), reopen from its store, or make lose its store (a wiped phone).
//!
//! Every constructor takes the clock as any [`Clock`] that can be cloned: a test that moves
//! time uses a [`ManualClock`](spacepanda_core::ManualClock); one that runs real processes
//! can give the [`SystemClock`](spacepanda_core::SystemClock).
//!
//! Each constructor comes twice: `try_…` returns a [`DeviceError`] for a harness that reports
//! a failed set-up as a failed run (the simulator's failed seed), the plain one panics for a
//! test where a failed set-up is simply a failed test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use core_identity::{DeviceIdentity, IdentityError, IdentityStore};
use core_mls::{DeviceAddress, MlsClient, MlsConfig, MlsError};
use rand::rngs::StdRng;
use spacepanda_core::{Clock, MemoryStore, RedbStore, SharedStore, StoreError};

use crate::seeded;

/// Where a device's store lives.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A `MemoryStore`: a reopen opens the same store object again.
    Memory,
    /// A `RedbStore` file `<name>.redb` in this directory: a reopen opens the file again.
    Files(PathBuf),
}

/// A fresh store: the engine's view, its file (redb) or its `MemoryStore` (memory).
type NewStore = (SharedStore, Option<PathBuf>, Option<Arc<MemoryStore>>);

impl Storage {
    /// Files in `dir`.
    pub fn files_in(dir: &Path) -> Self {
        Self::Files(dir.to_owned())
    }

    /// A fresh store named `name`.
    fn create(&self, name: &str) -> Result<NewStore, DeviceError> {
        match self {
            Self::Files(dir) => {
                let path = store_file(dir, name);
                let store = RedbStore::create(&path).map_err(DeviceError::Store)?;
                Ok((Arc::new(store), Some(path), None))
            }
            Self::Memory => {
                let memory = Arc::new(MemoryStore::new());
                Ok((memory.clone(), None, Some(memory)))
            }
        }
    }
}

/// Why a device could not be created, opened, reopened or restored. Each carries the underlying
/// error's own text, so that a harness reports what it always reported.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Its store could not be created or opened.
    #[error(transparent)]
    Store(StoreError),
    /// Its identity could not be made, imported, exported, loaded or restored.
    #[error(transparent)]
    Identity(IdentityError),
    /// Its store holds no identity.
    #[error("the store holds no identity")]
    NoIdentity,
    /// The engine did not open over its store.
    #[error(transparent)]
    Engine(MlsError),
}

/// The store file of the device `name` in `dir`.
fn store_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.redb"))
}

/// The identity `store` holds.
fn load_identity<C: Clock + Clone + 'static>(
    store: &SharedStore,
    clock: &C,
) -> Result<DeviceIdentity, DeviceError> {
    IdentityStore::new(store.clone(), shared(clock))
        .load()
        .map_err(DeviceError::Identity)?
        .ok_or(DeviceError::NoIdentity)
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
) -> Result<MlsClient, DeviceError> {
    open_client_with(store, identity, shared(clock), config, rng)
}

fn open_client_with(
    store: &SharedStore,
    identity: DeviceIdentity,
    clock: Arc<dyn Clock>,
    config: &MlsConfig,
    rng: &mut StdRng,
) -> Result<MlsClient, DeviceError> {
    let seed = seeded::engine_seed(rng);
    MlsClient::open_seeded(store.clone(), clock, identity, config.clone(), seed)
        .map_err(DeviceError::Engine)
}

impl Device {
    /// Creates a device with a new identity, or (with `same_user_as`) a second device of that
    /// device's user, and opens its engine. Draws from `rng` the identity's keys first, then
    /// the engine's seed.
    ///
    /// # Panics
    /// Where [`Device::try_create`] returns an error.
    pub fn create<C: Clock + Clone + 'static>(
        name: &str,
        storage: &Storage,
        same_user_as: Option<&Device>,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Self {
        Self::try_create(name, storage, same_user_as, clock, config, rng)
            .expect("create the device")
    }

    /// [`Device::create`], returning what failed: the store (a file already at its path),
    /// the identity, or the engine.
    pub fn try_create<C: Clock + Clone + 'static>(
        name: &str,
        storage: &Storage,
        same_user_as: Option<&Device>,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Result<Self, DeviceError> {
        let (store, path, memory) = storage.create(name)?;
        let identities = IdentityStore::new(store.clone(), shared(clock));
        let identity = match same_user_as {
            Some(other) => {
                let exported = other
                    .identities(clock)
                    .export_identity_key()
                    .map_err(DeviceError::Identity)?;
                let display_name = other.identity.display_name().as_str().to_owned();
                identities.import_with(&exported, &display_name, rng)
            }
            None => identities.create_with(name, rng),
        }
        .map_err(DeviceError::Identity)?;
        let client = open_client(&store, identity.clone(), clock, config, rng)?;
        Ok(Self {
            name: name.to_owned(),
            store,
            memory,
            path,
            identity,
            client: Some(client),
        })
    }

    /// Opens the device `name` whose store file `<dir>/<name>.redb` already exists — made by
    /// [`Device::create`] on [`Storage::Files`] in an earlier process, or by a `Device` since
    /// dropped — with the identity stored there and an engine seed from `rng`. This is a
    /// process starting again, where [`Device::reopen`] is the same `Device` starting again.
    ///
    /// # Panics
    /// Where [`Device::try_open_existing`] returns an error.
    pub fn open_existing<C: Clock + Clone + 'static>(
        name: &str,
        dir: &Path,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Self {
        Self::try_open_existing(name, dir, clock, config, rng).expect("open the device")
    }

    /// [`Device::open_existing`], returning what failed: the file (missing or damaged), the
    /// identity (none stored), or the engine.
    pub fn try_open_existing<C: Clock + Clone + 'static>(
        name: &str,
        dir: &Path,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Result<Self, DeviceError> {
        let path = store_file(dir, name);
        let store: SharedStore = Arc::new(RedbStore::open(&path).map_err(DeviceError::Store)?);
        let identity = load_identity(&store, clock)?;
        let client = open_client(&store, identity.clone(), clock, config, rng)?;
        Ok(Self {
            name: name.to_owned(),
            store,
            memory: None,
            path: Some(path),
            identity,
            client: Some(client),
        })
    }

    /// A device over a store the caller made (a network test's, shared with other parts of
    /// the device such as a publisher): the identity the store holds — a device starting
    /// again, or one whose identity key was imported there — or else a new one named `name`,
    /// drawn from `rng`; then the engine, with a seed from `rng`. The clock is shared with
    /// those other parts.
    ///
    /// # Panics
    /// Where [`Device::try_on_store`] returns an error.
    pub fn on_store(
        name: &str,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Self {
        Self::try_on_store(name, store, clock, config, rng).expect("open the device")
    }

    /// [`Device::on_store`], returning what failed: the identity or the engine.
    pub fn try_on_store(
        name: &str,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Result<Self, DeviceError> {
        let identities = IdentityStore::new(store.clone(), clock.clone());
        let identity = match identities.load().map_err(DeviceError::Identity)? {
            Some(identity) => identity,
            None => identities
                .create_with(name, rng)
                .map_err(DeviceError::Identity)?,
        };
        let client = open_client_with(&store, identity.clone(), clock, config, rng)?;
        Ok(Self {
            name: name.to_owned(),
            store,
            memory: None,
            path: None,
            identity,
            client: Some(client),
        })
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

    /// [`Device::close`], and on a file the device's handle on the database goes too, as
    /// nothing of a stopped process holds it: the file can then be copied, replaced or opened
    /// by the test, and [`Device::reopen`] reads whatever it then holds. On a `MemoryStore` it
    /// is `close`.
    pub fn stop(&mut self) {
        self.client = None;
        if self.path.is_some() {
            self.store = Arc::new(MemoryStore::new());
        }
    }

    /// Reopens the engine from its store (for redb, the file read again unless the test holds
    /// another handle on it), with a new seed from `rng`. What the engine had pending
    /// (`pending_delivered`, `pending_outbound`) is the caller's to take.
    ///
    /// # Panics
    /// Where [`Device::try_reopen`] returns an error.
    pub fn reopen<C: Clock + Clone + 'static>(
        &mut self,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) {
        self.try_reopen(clock, config, rng)
            .expect("reopen the device");
    }

    /// [`Device::reopen`], returning what failed: the file, the identity, or the engine. On an
    /// error the device is closed (and, on a file, holds no store until a reopen succeeds).
    ///
    /// # Panics
    /// If the store holds another user's identity.
    pub fn try_reopen<C: Clock + Clone + 'static>(
        &mut self,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Result<(), DeviceError> {
        self.client = None;
        let store: SharedStore = match &self.path {
            Some(path) => {
                // Our handle on the file goes first: while one is alive, `RedbStore::open`
                // hands back the open database instead of reading the file again as a
                // restarted process does.
                self.store = Arc::new(MemoryStore::new());
                Arc::new(RedbStore::open(path).map_err(DeviceError::Store)?)
            }
            None => self.store.clone(),
        };
        let identity = load_identity(&store, clock)?;
        assert_eq!(identity.user_id(), self.identity.user_id());
        let client = open_client(&store, identity, clock, config, rng)?;
        self.store = store;
        self.client = Some(client);
        Ok(())
    }

    /// The device loses its store: a new, empty one named `new_name` takes its place, and it
    /// is restored under its old device id and display name from its user's identity key,
    /// with a new signature key (drawn from `rng`, then the engine's seed).
    ///
    /// # Panics
    /// Where [`Device::try_lose_store`] returns an error.
    pub fn lose_store<C: Clock + Clone + 'static>(
        &mut self,
        new_name: &str,
        storage: &Storage,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) {
        let display_name = self.identity.display_name().as_str().to_owned();
        self.try_lose_store(new_name, storage, &display_name, clock, config, rng)
            .expect("restore the device");
    }

    /// [`Device::lose_store`], with the display name the user gives the restored device, and
    /// returning what failed: the identity key's export, the new store, the restore, or the
    /// engine. On an error the device is closed; past the new store's creation it is on the
    /// new store.
    pub fn try_lose_store<C: Clock + Clone + 'static>(
        &mut self,
        new_name: &str,
        storage: &Storage,
        display_name: &str,
        clock: &C,
        config: &MlsConfig,
        rng: &mut StdRng,
    ) -> Result<(), DeviceError> {
        let exported = self
            .identities(clock)
            .export_identity_key()
            .map_err(DeviceError::Identity)?;
        self.client = None;
        let (store, path, memory) = storage.create(new_name)?;
        self.store = store;
        self.path = path;
        self.memory = memory;
        let identity = IdentityStore::new(self.store.clone(), shared(clock))
            .restore_with(&exported, self.identity.device_id(), display_name, rng)
            .map_err(DeviceError::Identity)?;
        self.identity = identity.clone();
        let client = open_client(&self.store, identity, clock, config, rng)?;
        self.client = Some(client);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use core_mls::MlsConfig;
    use spacepanda_core::{StoreError, SystemClock};

    use super::{Device, DeviceError, Storage};
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

    /// The `try_` constructors say which step failed instead of panicking.
    #[test]
    fn try_constructors_report_the_store_that_is_missing_or_already_there() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage = Storage::files_in(dir.path());
        let config = MlsConfig::default();
        let clock = seeded::clock();
        let mut rng = seeded::rng(12);
        let missing = Device::try_open_existing("nobody", dir.path(), &clock, &config, &mut rng);
        assert!(matches!(
            missing,
            Err(DeviceError::Store(StoreError::NotFound { .. }))
        ));
        Device::create("alice", &storage, None, &clock, &config, &mut rng);
        let again = Device::try_create("alice", &storage, None, &clock, &config, &mut rng);
        assert!(matches!(
            again,
            Err(DeviceError::Store(StoreError::AlreadyExists { .. }))
        ));
    }

    /// A reopen reads the file again rather than keeping the open database: once the file is
    /// gone, the reopen fails.
    #[test]
    fn reopen_reads_the_file_again() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage = Storage::files_in(dir.path());
        let config = MlsConfig::default();
        let clock = seeded::clock();
        let mut rng = seeded::rng(13);
        let mut alice = Device::create("alice", &storage, None, &clock, &config, &mut rng);
        alice.close();
        alice.reopen(&clock, &config, &mut rng);
        assert!(alice.is_open());
        alice.close();
        std::fs::remove_file(dir.path().join("alice.redb")).expect("remove the file");
        let reopened = alice.try_reopen(&clock, &config, &mut rng);
        assert!(matches!(
            reopened,
            Err(DeviceError::Store(StoreError::NotFound { .. }))
        ));
        assert!(!alice.is_open());
    }

    /// A stopped device's file is the test's: put back as it was before a group was made,
    /// the reopened device no longer holds the group (with `close` alone the database is
    /// still open while the file is replaced under it, and the reopen finds it corrupted).
    #[test]
    fn stop_lets_go_of_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage = Storage::files_in(dir.path());
        let config = MlsConfig::default();
        let clock = seeded::clock();
        let mut rng = seeded::rng(15);
        let mut alice = Device::create("alice", &storage, None, &clock, &config, &mut rng);
        let file = dir.path().join("alice.redb");
        let before = dir.path().join("alice.before");
        alice.stop();
        std::fs::copy(&file, &before).expect("copy the file");
        alice.reopen(&clock, &config, &mut rng);
        alice.client().create_group().expect("create a group");
        alice.stop();
        std::fs::copy(&before, &file).expect("put the file back");
        alice.reopen(&clock, &config, &mut rng);
        assert!(alice.client_ref().groups().is_empty());
    }

    /// A restored device keeps its address and takes the display name it is given.
    #[test]
    fn try_lose_store_restores_the_same_address_under_the_given_name() {
        let config = MlsConfig::default();
        let clock = seeded::clock();
        let mut rng = seeded::rng(14);
        let mut phone = Device::create("phone", &Storage::Memory, None, &clock, &config, &mut rng);
        let address = phone.address();
        phone
            .try_lose_store(
                "phone-2",
                &Storage::Memory,
                "new phone",
                &clock,
                &config,
                &mut rng,
            )
            .expect("restore the device");
        assert_eq!(phone.address(), address);
        assert_eq!(phone.identity.display_name().as_str(), "new phone");
        assert!(phone.client_ref().groups().is_empty());
    }

    /// A store the caller made: the first device creates its identity there, a second one
    /// over the same store starts again with it, and one over a store holding another
    /// imported identity takes that one.
    #[test]
    fn on_store_takes_the_identity_the_store_holds_or_makes_one() {
        let clock: std::sync::Arc<dyn spacepanda_core::Clock> = std::sync::Arc::new(SystemClock);
        let config = MlsConfig::default();
        let mut rng = seeded::rng(9);
        let store: spacepanda_core::SharedStore =
            std::sync::Arc::new(spacepanda_core::MemoryStore::new());
        let mut first = Device::on_store("alice", store.clone(), clock.clone(), &config, &mut rng);
        let group = first.client().create_group().expect("create a group");
        drop(first.client.take());
        let mut again = Device::on_store("ignored", store, clock.clone(), &config, &mut rng);
        assert_eq!(again.address(), first.address());
        assert!(again.client().groups().contains(&group));
        let other = Device::on_store(
            "bob",
            std::sync::Arc::new(spacepanda_core::MemoryStore::new()),
            clock,
            &config,
            &mut rng,
        );
        assert_ne!(other.address().user_id, first.address().user_id);
        assert_eq!(other.identity.display_name().as_str(), "bob");
    }
}
