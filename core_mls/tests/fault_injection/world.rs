//! The world of the fault-injection test: devices on `FailingStore<MemoryStore>`, one
//! `ManualClock`, seeded engines, and [`World::sweep`], which runs one operation with the
//! store failing at its first, second, … call of each kind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    unreachable_pub
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use core_identity::{DeviceIdentity, IdentityStore};

use crate::view::observe;
use core_mls::{DeviceAddress, ErrorKind, Event, MlsClient, MlsConfig, MlsError, Output};
use spacepanda_core::{
    Clock, FailPoint, FailingStore, Key, ManualClock, MemoryStore, SharedStore, WriteBatch,
};

/// More calls of one kind than any operation here makes: a sweep that reaches it is a bug
/// (an operation that never stops touching the store), not a slow test.
const MAX_CALLS: u64 = 10_000;

pub type Store = Arc<FailingStore<MemoryStore>>;
pub type Dump = Vec<(String, Key, Vec<u8>)>;

pub struct Device {
    pub identity: DeviceIdentity,
    pub store: Store,
    pub client: Option<MlsClient>,
}

impl Device {
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            user_id: self.identity.user_id(),
            device_id: self.identity.device_id(),
        }
    }
}

/// What one sweep measured.
#[derive(Debug)]
pub struct SweepReport {
    pub operation: String,
    /// Calls of each kind the operation makes (= faults injected, one per failing run).
    pub applies: u64,
    pub gets: u64,
    pub scans: u64,
    pub elapsed: Duration,
}

pub struct World {
    pub clock: ManualClock,
    pub config: MlsConfig,
    pub devices: Vec<Device>,
    next_seed: u64,
    pub reports: Vec<SweepReport>,
    pub violations: Vec<String>,
    /// Faults stay: the n-th call of the kind fails and so does every later one until the
    /// operation has returned (a disk that broke, rather than one call that failed).
    pub sticky: bool,
    /// Failing runs after which the client held fewer groups than storage (a reload failed).
    pub dropped_until_next_operation: u64,
}

/// A store holding exactly `dump`, disarmed.
pub fn store_from(dump: &Dump) -> Store {
    let memory = MemoryStore::new();
    let mut batch = WriteBatch::new();
    for (namespace, key, value) in dump {
        batch.put(namespace, key.clone(), value.clone());
    }
    if !batch.is_empty() {
        spacepanda_core::KeyValueStore::apply(&memory, batch).unwrap();
    }
    Arc::new(FailingStore::new(memory))
}

pub fn dump(store: &Store) -> Dump {
    store.inner().dump().unwrap()
}

fn point(kind: usize, n: u64) -> FailPoint {
    match kind {
        0 => FailPoint::Apply(n),
        1 => FailPoint::Get(n),
        _ => FailPoint::Scan(n),
    }
}

impl World {
    /// Devices with identities (kept in their own stores: the engine's store holds only what
    /// the engine writes); none is opened yet.
    pub fn new(names: &[&'static str]) -> Self {
        // OpenMLS checks key package lifetimes against the system clock, so the world's clock
        // starts at the real time (and moves only when told).
        let clock = ManualClock::starting_now();
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let devices = names
            .iter()
            .map(|name| {
                let identities: SharedStore = Arc::new(MemoryStore::new());
                let identity = IdentityStore::new(identities, shared.clone())
                    .create(name)
                    .unwrap();
                Device {
                    identity,
                    store: Arc::new(FailingStore::new(MemoryStore::new())),
                    client: None,
                }
            })
            .collect();
        Self {
            clock,
            config: MlsConfig::default(),
            devices,
            next_seed: 0,
            reports: Vec::new(),
            violations: Vec::new(),
            sticky: false,
            dropped_until_next_operation: 0,
        }
    }

    fn seed(&mut self) -> [u8; 32] {
        self.next_seed += 1;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.next_seed.to_be_bytes());
        seed
    }

    /// A client for `device` over `store`, with a seed never used before.
    pub fn open_on(&mut self, device: usize, store: &Store) -> Result<MlsClient, MlsError> {
        let seed = self.seed();
        MlsClient::open_seeded(
            store.clone(),
            Arc::new(self.clock.clone()),
            self.devices[device].identity.clone(),
            self.config.clone(),
            seed,
        )
    }

    pub fn open(&mut self, device: usize) {
        let store = self.devices[device].store.clone();
        let client = self.open_on(device, &store).unwrap();
        self.devices[device].client = Some(client);
    }

    /// A restart: the client is dropped and opened again on the same store (new seed).
    pub fn reopen(&mut self, device: usize) {
        self.devices[device].client = None;
        self.open(device);
    }

    pub fn client(&mut self, device: usize) -> &mut MlsClient {
        self.devices[device]
            .client
            .as_mut()
            .expect("device is open")
    }

    pub fn address(&self, device: usize) -> DeviceAddress {
        self.devices[device].address()
    }

    /// Hands `bytes` to `device` (no faults) and returns what it made of them.
    pub fn handle(&mut self, device: usize, bytes: &[u8]) -> Output {
        let output = self.client(device).handle_envelope(bytes).unwrap();
        self.ack(device, &output);
        output
    }

    /// Delivers every envelope of `output` to each of its recipients in `to` (no faults).
    pub fn deliver(&mut self, output: &Output, to: &[usize]) {
        for outbound in &output.outbound {
            for &device in to {
                if outbound.to.devices.contains(&self.address(device)) {
                    self.handle(device, &outbound.envelope.to_bytes());
                }
            }
        }
    }

    /// Acknowledges every envelope of `output` and every delivered message (no faults), so the
    /// next operation starts from a tidy state.
    pub fn ack(&mut self, device: usize, output: &Output) {
        let client = self.client(device);
        for outbound in &output.outbound {
            client.ack_sent(outbound.id).unwrap();
        }
        for event in &output.events {
            if let Event::Message { delivery, .. } = event {
                client.ack_delivered(*delivery).unwrap();
            }
        }
    }

    /// A single-use key package of `device`, not offered before.
    pub fn key_package(&mut self, device: usize, skip: usize) -> (Vec<u8>, Vec<u8>) {
        let package = self
            .client(device)
            .publishable_key_packages()
            .unwrap()
            .into_iter()
            .filter(|p| !p.last_resort)
            .nth(skip)
            .unwrap();
        (package.key_package_ref, package.key_package)
    }

    /// Opening `device` on its store, with the store failing at each call in turn; the device
    /// is open on the successful run afterwards.
    pub fn sweep_open(&mut self, device: usize, name: &str) {
        let started = stopwatch();
        let before = dump(&self.devices[device].store);
        let mut counts = [0u64; 3];
        let mut opened = None;
        for (kind, count) in counts.iter_mut().enumerate() {
            for n in 1..=MAX_CALLS {
                let store = store_from(&before);
                if self.sticky {
                    store.fail_from(point(kind, n));
                } else {
                    store.fail_at(point(kind, n));
                }
                let result = self.open_on(device, &store);
                store.disarm();
                if store.faults_injected() == 0 {
                    let client = result.unwrap_or_else(|e| panic!("{name}: no fault, {e}"));
                    *count = n - 1;
                    opened = Some((store, client));
                    break;
                }
                let at = point(kind, n);
                let failed = (|| {
                    let error = result
                        .err()
                        .ok_or("the fault was swallowed: open succeeded".to_owned())?;
                    check_error(&error)?;
                    if dump(&store) != before {
                        return Err("writes were left behind".to_owned());
                    }
                    Ok(())
                })();
                if let Err(violation) = failed {
                    self.violation(format!("{name}: {at}: {violation}"));
                }
                let mut retried = self
                    .open_on(device, &store)
                    .unwrap_or_else(|e| panic!("{name}: retry after {at}: {e}"));
                observe(&mut retried);
                assert!(n < MAX_CALLS, "{name}: never ran without a fault");
            }
        }
        let (store, client) = opened.expect("a run without a fault");
        self.devices[device].store = store;
        self.devices[device].client = Some(client);
        self.report(name, counts, started);
    }

    /// Runs `op` on `device` from its current state once for every storage call it makes:
    /// the n-th apply, get or scan fails, for n = 1, 2, … until a run makes fewer calls than
    /// n. Each failing run must give a typed local-storage error that names the injected
    /// fault, leave the store byte-identical and the client equal to a fresh reload, and then
    /// succeed when retried with the fault gone, passing `check`. The device goes on from the
    /// run without a fault (whose result is returned).
    pub fn sweep<T>(
        &mut self,
        device: usize,
        name: &str,
        op: impl Fn(&mut MlsClient) -> Result<T, MlsError>,
        check: impl Fn(&mut MlsClient, &T),
    ) -> T {
        self.sweep_after(device, name, |_| {}, op, check)
    }

    /// [`sweep`](Self::sweep), with `setup` run (without faults) on every freshly opened client
    /// first: for a state that opening undoes (opening refills the key package pool). The
    /// reference for each run is then the client right after `setup`.
    pub fn sweep_after<T>(
        &mut self,
        device: usize,
        name: &str,
        setup: impl Fn(&mut MlsClient),
        op: impl Fn(&mut MlsClient) -> Result<T, MlsError>,
        check: impl Fn(&mut MlsClient, &T),
    ) -> T {
        let started = stopwatch();
        let base = dump(&self.devices[device].store);
        let live = observe(self.client(device));
        // A fresh reload is the reference, unless opening refills the key package pool (then
        // the reload differs from the stored state on purpose; the live client is it).
        let reload_store = store_from(&base);
        let mut reloaded = self.open_on(device, &reload_store).unwrap();
        let fresh = observe(&mut reloaded);
        let base_reference = if dump(&reload_store) == base {
            assert_eq!(
                live, fresh,
                "{name}: the client before the operation is stale"
            );
            fresh
        } else {
            live
        };
        let mut counts = [0u64; 3];
        let mut finished = None;
        for (kind, count) in counts.iter_mut().enumerate() {
            for n in 1..=MAX_CALLS {
                let store = store_from(&base);
                let mut client = self.open_on(device, &store).unwrap();
                setup(&mut client);
                let before = dump(&store);
                let reference = if before == base {
                    &base_reference
                } else {
                    &observe(&mut client)
                };
                let at = point(kind, n);
                if self.sticky {
                    store.fail_from(at);
                } else {
                    store.fail_at(at);
                }
                let result = op(&mut client);
                store.disarm();
                if store.faults_injected() == 0 {
                    let value = result.unwrap_or_else(|e| panic!("{name}: no fault, {e}"));
                    check(&mut client, &value);
                    *count = n - 1;
                    finished = Some((store, client, value));
                    break;
                }
                let failed: Result<(), String> = 'check: {
                    let error = match result {
                        Ok(_) => break 'check Err("the fault was swallowed: it succeeded".into()),
                        Err(error) => error,
                    };
                    if let Err(e) = check_error(&error) {
                        break 'check Err(e);
                    }
                    if dump(&store) != before {
                        break 'check Err("writes were left behind".to_owned());
                    }
                    let view = observe(&mut client);
                    let consistent = if self.sticky {
                        // A reload that failed too drops the group from memory until the next
                        // operation reloads it; what is left must be right.
                        if view != *reference {
                            self.dropped_until_next_operation += 1;
                        }
                        view.within(reference)
                    } else {
                        view == *reference
                    };
                    if !consistent {
                        break 'check Err(format!(
                            "the client differs from a fresh reload in {}",
                            view.differences(reference)
                        ));
                    }
                    let retried = match op(&mut client) {
                        Ok(retried) => retried,
                        Err(e) => break 'check Err(format!("the retry failed: {e}")),
                    };
                    check(&mut client, &retried);
                    self.assert_reloads_equal(device, &store, &mut client, name);
                    Ok(())
                };
                if let Err(violation) = failed {
                    self.violation(format!("{name}: {at}: {violation}"));
                }
                assert!(n < MAX_CALLS, "{name}: never ran without a fault");
            }
        }
        let (store, client, value) = finished.expect("a run without a fault");
        self.devices[device].store = store;
        self.devices[device].client = Some(client);
        self.report(name, counts, started);
        value
    }

    /// The client after a successful operation equals a fresh reload of its store (unless
    /// opening would refill the key package pool, which makes them differ on purpose).
    fn assert_reloads_equal(
        &mut self,
        device: usize,
        store: &Store,
        client: &mut MlsClient,
        name: &str,
    ) {
        let stored = dump(store);
        let copy = store_from(&stored);
        let mut reloaded = self.open_on(device, &copy).unwrap();
        if dump(&copy) == stored {
            assert!(
                observe(client) == observe(&mut reloaded),
                "{name}: after a successful retry the client differs from a fresh reload"
            );
        }
    }

    /// A broken promise: fails the test, or with `FAULT_SURVEY=1` is collected (the first one
    /// per operation and call kind) so that one run lists every operation that breaks one.
    fn violation(&mut self, message: String) {
        if std::env::var_os("FAULT_SURVEY").is_none() {
            panic!("{message}");
        }
        let key: String = message.split('#').next().unwrap_or_default().to_owned();
        if !self.violations.iter().any(|v| v.starts_with(&key)) {
            println!("VIOLATION {message}");
            self.violations.push(message);
        }
    }

    fn report(&mut self, name: &str, counts: [u64; 3], started: Instant) {
        self.reports.push(SweepReport {
            operation: name.to_owned(),
            applies: counts[0],
            gets: counts[1],
            scans: counts[2],
            elapsed: started.elapsed(),
        });
    }

    pub fn print_reports(&self) {
        let mut total = Duration::ZERO;
        let mut points = 0;
        println!(
            "{:<62} {:>7} {:>6} {:>6} {:>8}",
            "operation", "applies", "gets", "scans", "seconds"
        );
        for r in &self.reports {
            println!(
                "{:<62} {:>7} {:>6} {:>6} {:>8.2}",
                r.operation,
                r.applies,
                r.gets,
                r.scans,
                r.elapsed.as_secs_f64()
            );
            total += r.elapsed;
            points += r.applies + r.gets + r.scans;
        }
        println!(
            "{} operations, {points} fault points, {:.1} s",
            self.reports.len(),
            total.as_secs_f64()
        );
    }
}

/// Wall time of the test itself, for the report (never an input of the engine).
#[allow(clippy::disallowed_methods)]
fn stopwatch() -> Instant {
    Instant::now()
}

/// A failing run's error: typed, local storage, and about the fault we injected.
fn check_error(error: &MlsError) -> Result<(), String> {
    if error.kind() != ErrorKind::LocalStorage {
        return Err(format!("reported as {:?}: {error}", error.kind()));
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if !text.contains("injected fault") {
        return Err(format!("the error does not name the fault: {text}"));
    }
    Ok(())
}
