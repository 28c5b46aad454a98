//! `spacepanda demo`: four devices (alice on two, bob, carol), each on its own encrypted redb
//! file, talking through a network that shuffles and duplicates everything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_identity::IdentityStore;
use core_mls::{
    DeviceAddress, Disposition, Event, GroupId, MessageId, MlsClient, MlsConfig, Output,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use spacepanda_core::{Clock, KdfParams, RedbStore, SealedStore, SharedStore, SystemClock};

use crate::demo_network::DemoNetwork;

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Device {
    name: &'static str,
    path: PathBuf,
    address: DeviceAddress,
    client: Option<MlsClient>,
    /// (sender display name, body, message id) in arrival order.
    received: Vec<(String, String, MessageId)>,
    removed: bool,
}

/// Runs the scenario; returns whether every check held.
pub(crate) fn run(data_dir: Option<PathBuf>, seed: u64) -> DemoResult<bool> {
    let temp;
    let dir: &Path = match &data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            if std::fs::read_dir(dir)?.next().is_some() {
                return Err(format!(
                    "{} is not empty; the demo starts from scratch",
                    dir.display()
                )
                .into());
            }
            dir
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path()
        }
    };
    let mut demo = Demo::new(dir, seed)?;
    demo.scenario()?;
    Ok(demo.report())
}

struct Demo {
    devices: Vec<Device>,
    network: DemoNetwork,
    rng: StdRng,
    clock: Arc<dyn Clock>,
    timings: BTreeMap<&'static str, Vec<Duration>>,
    checks: Vec<(String, bool)>,
    started: Instant,
    group: Option<GroupId>,
    /// The wire bytes of the last application message sent.
    last_application_envelope: Option<Vec<u8>>,
    /// Every message sent: (body, message id, the devices it was encrypted for).
    sent: Vec<(String, MessageId, Vec<DeviceAddress>)>,
}

fn passphrase(name: &str) -> String {
    // A demo stand-in for what the app would take from the user or the OS keychain.
    format!("demo passphrase of {name}")
}

/// A new device's store: a new file, sealed with the device's passphrase.
fn create_store(path: &Path, name: &str) -> DemoResult<SharedStore> {
    let file = RedbStore::create(path)?;
    Ok(Arc::new(SealedStore::create_with_passphrase(
        file,
        passphrase(name).as_bytes(),
        KdfParams::default(),
    )?))
}

/// A restarted device's store: its existing file (missing or damaged is an error).
fn open_store(path: &Path, name: &str) -> DemoResult<SharedStore> {
    let file = RedbStore::open(path)?;
    Ok(Arc::new(SealedStore::open_with_passphrase(
        file,
        passphrase(name).as_bytes(),
    )?))
}

impl Demo {
    fn new(dir: &Path, seed: u64) -> DemoResult<Self> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut demo = Self {
            devices: Vec::new(),
            network: DemoNetwork::default(),
            rng: StdRng::seed_from_u64(seed),
            clock,
            timings: BTreeMap::new(),
            checks: Vec::new(),
            started: Instant::now(),
            group: None,
            last_application_envelope: None,
            sent: Vec::new(),
        };
        println!("SpacePanda demo — data directory {}", dir.display());
        println!(
            "every device: its own SealedStore<RedbStore> file (Argon2id passphrase, XChaCha20-Poly1305)\n"
        );
        let mut alice_export: Option<zeroize::Zeroizing<Vec<u8>>> = None;
        for (name, display_name) in [
            ("alice-laptop", "alice"),
            ("alice-phone", "alice"),
            ("bob", "bob"),
            ("carol", "carol"),
        ] {
            let path = dir.join(format!("{name}.redb"));
            let store = create_store(&path, name)?;
            let identities = IdentityStore::new(store.clone(), demo.clock.clone());
            let identity = if name == "alice-phone" {
                let exported = alice_export
                    .take()
                    .ok_or("alice's identity was not exported")?;
                identities.import(exported.as_slice(), display_name)?
            } else {
                identities.create(display_name)?
            };
            if name == "alice-laptop" {
                alice_export = Some(identities.export_identity_key()?);
            }
            let address = DeviceAddress {
                user_id: identity.user_id(),
                device_id: identity.device_id(),
            };
            let started = Instant::now();
            let client =
                MlsClient::open(store, demo.clock.clone(), identity, MlsConfig::default())?;
            demo.time("open + fill key package pool", started);
            let status = client.key_package_status()?;
            demo.say(&format!(
                "{name:<12} {}  user {}  device {}  key packages: {} fresh + last-resort",
                client.device().address(),
                address.user_id.fingerprint(),
                address.device_id,
                status.fresh
            ));
            demo.devices.push(Device {
                name,
                path,
                address,
                client: Some(client),
                received: Vec::new(),
                removed: false,
            });
        }
        let same_user = demo.devices.first().map(|d| d.address.user_id)
            == demo.devices.get(1).map(|d| d.address.user_id);
        demo.check("alice's two devices share one user id", same_user);
        Ok(demo)
    }

    fn say(&self, line: &str) {
        println!("[{:>7.3}s] {line}", self.started.elapsed().as_secs_f64());
    }

    fn time(&mut self, op: &'static str, started: Instant) {
        self.timings.entry(op).or_default().push(started.elapsed());
    }

    fn check(&mut self, what: &str, held: bool) {
        self.say(&format!(
            "check: {what} … {}",
            if held { "ok" } else { "FAILED" }
        ));
        self.checks.push((what.to_owned(), held));
    }

    fn client(&mut self, index: usize) -> DemoResult<&mut MlsClient> {
        self.devices
            .get_mut(index)
            .and_then(|d| d.client.as_mut())
            .ok_or_else(|| format!("device {index} is offline").into())
    }

    fn group(&self) -> DemoResult<GroupId> {
        self.group.clone().ok_or_else(|| "no group yet".into())
    }

    /// Hands a device's output to the network, acknowledges it, and records events.
    fn absorb(&mut self, index: usize, output: Output) -> DemoResult<()> {
        self.network.submit(&output.outbound);
        for outbound in &output.outbound {
            self.client(index)?.ack_sent(outbound.id)?;
        }
        let name = self.devices.get(index).map_or("?", |d| d.name);
        for event in output.events {
            match event {
                Event::Message {
                    sender,
                    body,
                    message_id,
                    delivery,
                    ..
                } => {
                    // Shown on the timeline = stored by the "app": acknowledge it.
                    self.client(index)?.ack_delivered(delivery)?;
                    let text = String::from_utf8_lossy(&body).into_owned();
                    self.say(&format!(
                        "{name:<12} ◀ {}: \"{text}\"",
                        sender.display_name().as_str()
                    ));
                    if let Some(device) = self.devices.get_mut(index) {
                        device.received.push((
                            sender.display_name().as_str().to_owned(),
                            text,
                            message_id,
                        ));
                    }
                }
                Event::Joined { inviter, epoch, .. } => {
                    self.say(&format!(
                        "{name:<12} joined the group at epoch {epoch}, invited by {}",
                        inviter.address()
                    ));
                }
                Event::RemovedFromGroup { by, .. } => {
                    let by = by.map_or_else(|| "?".to_owned(), |m| m.address().to_string());
                    self.say(&format!("{name:<12} was removed from the group by {by}"));
                    if let Some(device) = self.devices.get_mut(index) {
                        device.removed = true;
                    }
                }
                Event::MembersRemoved { members, .. } => {
                    let names: Vec<String> =
                        members.iter().map(|m| m.address().to_string()).collect();
                    self.say(&format!("{name:<12} sees removed: {}", names.join(", ")));
                }
                Event::EpochAdvanced { epoch, .. } => {
                    self.say(&format!("{name:<12} now at epoch {epoch}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Delivers until nothing is in flight for online devices.
    fn pump(&mut self) -> DemoResult<(usize, usize, usize)> {
        let (mut processed, mut duplicates, mut buffered) = (0, 0, 0);
        loop {
            let online: BTreeSet<DeviceAddress> = self
                .devices
                .iter()
                .filter(|d| d.client.is_some())
                .map(|d| d.address)
                .collect();
            let batch = self.network.drain(&online, &mut self.rng);
            if batch.is_empty() {
                break;
            }
            for (to, bytes) in batch {
                let Some(index) = self.devices.iter().position(|d| d.address == to) else {
                    continue;
                };
                let started = Instant::now();
                let result = self.client(index)?.handle_envelope(&bytes);
                self.time("handle envelope", started);
                match result {
                    Ok(output) => {
                        match output.disposition {
                            Disposition::Processed => processed += 1,
                            Disposition::Buffered => buffered += 1,
                            // Duplicates, and losing concurrent commits dropped like them.
                            _ => duplicates += 1,
                        }
                        self.absorb(index, output)?;
                    }
                    Err(error) => {
                        let name = self.devices.get(index).map_or("?", |d| d.name);
                        self.say(&format!("{name:<12} rejected an envelope: {error}"));
                    }
                }
            }
        }
        self.say(&format!(
            "network: {processed} processed, {duplicates} duplicates (or superseded commits) dropped, {buffered} buffered for a later epoch"
        ));
        Ok((processed, duplicates, buffered))
    }

    fn send(&mut self, index: usize, text: &str) -> DemoResult<()> {
        let group = self.group()?;
        let started = Instant::now();
        let output = self.client(index)?.send(&group, text.as_bytes())?;
        self.time("send (encrypt + durable commit)", started);
        self.last_application_envelope = output
            .outbound
            .iter()
            .find(|o| o.envelope.kind() == core_mls::EnvelopeKind::Application)
            .map(|o| o.envelope.to_bytes());
        let recipients: Vec<DeviceAddress> = output
            .outbound
            .iter()
            .filter(|o| o.envelope.kind() == core_mls::EnvelopeKind::Application)
            .flat_map(|o| o.to.devices.clone())
            .collect();
        for event in &output.events {
            if let Event::MessageSent { message_id, .. } = event {
                self.sent
                    .push((text.to_owned(), *message_id, recipients.clone()));
            }
        }
        let name = self.devices.get(index).map_or("?", |d| d.name);
        self.say(&format!("{name:<12} ▶ \"{text}\""));
        self.absorb(index, output)
    }

    fn scenario(&mut self) -> DemoResult<()> {
        println!();
        let started = Instant::now();
        let group = self.client(0)?.create_group()?;
        self.time("create group", started);
        self.group = Some(group.clone());
        self.say(&format!("alice-laptop created group {group}"));

        // Invite by key package: what the directory (DHT) would hand out.
        let mut key_packages = Vec::new();
        for index in 1..self.devices.len() {
            let package = self
                .client(index)?
                .publishable_key_packages()?
                .into_iter()
                .find(|p| !p.last_resort)
                .ok_or("no key package to publish")?;
            self.client(index)?
                .mark_key_packages_published(std::slice::from_ref(&package.key_package_ref))?;
            key_packages.push(package.key_package);
        }
        let started = Instant::now();
        let output = self.client(0)?.add_members(&group, &key_packages)?;
        self.time("add 3 devices (one commit)", started);
        self.say("alice-laptop invited alice-phone, bob and carol by key package");
        self.absorb(0, output)?;
        self.pump()?;
        self.check_converged("all four devices agree on the group state", &[0, 1, 2, 3])?;

        self.send(0, "hi all, this group is end-to-end encrypted")?;
        self.send(2, "hey alice! bob here")?;
        self.send(3, "carol checking in")?;
        self.pump()?;

        // Carol's device goes offline mid-conversation; traffic continues, including a commit.
        self.devices.get_mut(3).ok_or("no carol")?.client = None;
        self.say("carol        device closed (process gone; only her encrypted file remains)");
        self.send(1, "alice from my phone: carol, you there?")?;
        let started = Instant::now();
        let output = self.client(2)?.self_update(&group)?;
        self.time("self-update", started);
        self.say("bob          self-update (new leaf keys, new epoch)");
        self.absorb(2, output)?;
        self.send(2, "bob again, in the new epoch")?;
        self.pump()?;
        let waiting = self
            .devices
            .get(3)
            .map_or(0, |d| self.network.queued_for(&d.address));
        self.say(&format!("carol        has {waiting} envelopes waiting"));

        // Reopen carol from her file and catch up.
        let carol = self.devices.get(3).ok_or("no carol")?;
        let (path, name) = (carol.path.clone(), carol.name);
        let started = Instant::now();
        let store = open_store(&path, name)?;
        let identity = IdentityStore::new(store.clone(), self.clock.clone())
            .load()?
            .ok_or("carol's identity is gone")?;
        let client = MlsClient::open(store, self.clock.clone(), identity, MlsConfig::default())?;
        self.time("reopen device from disk", started);
        let pending = client.pending_outbound()?.len();
        self.devices.get_mut(3).ok_or("no carol")?.client = Some(client);
        self.say(&format!(
            "carol        reopened from disk ({pending} unsent envelopes in her outbox)"
        ));
        self.pump()?;
        let carol_caught_up = [
            "alice from my phone: carol, you there?",
            "bob again, in the new epoch",
        ]
        .iter()
        .all(|text| {
            self.devices
                .get(3)
                .is_some_and(|d| d.received.iter().any(|(_, body, _)| body == text))
        });
        self.check(
            "carol caught up on everything sent while she was offline",
            carol_caught_up,
        );
        self.check_converged(
            "all four devices agree after carol's restart",
            &[0, 1, 2, 3],
        )?;

        // Remove carol; she must not read anything after that.
        let carol_user = self.devices.get(3).ok_or("no carol")?.address.user_id;
        let started = Instant::now();
        let output = self.client(0)?.remove_user(&group, &carol_user)?;
        self.time("remove member", started);
        self.say("alice-laptop removed carol");
        self.absorb(0, output)?;
        self.pump()?;
        self.send(2, "carol can't read this")?;
        // Route bob's ciphertext to carol anyway, as a stale directory or an eavesdropper would.
        let intercepted = self
            .last_application_envelope
            .clone()
            .ok_or("bob sent nothing")?;
        let refused = match self.client(3)?.handle_envelope(&intercepted) {
            Ok(output) => output
                .events
                .iter()
                .all(|e| !matches!(e, Event::Message { .. })),
            Err(error) => {
                self.say(&format!(
                    "carol        cannot process bob's ciphertext: {error}"
                ));
                true
            }
        };
        self.pump()?;
        let carol = self.devices.get(3).ok_or("no carol")?;
        let leaked = !refused
            || carol
                .received
                .iter()
                .any(|(_, body, _)| body == "carol can't read this");
        self.check("carol learned she was removed", carol.removed);
        self.check("carol cannot read messages after her removal", !leaked);

        let started = Instant::now();
        let output = self.client(1)?.self_update(&group)?;
        self.time("self-update", started);
        self.say("alice-phone  self-update");
        self.absorb(1, output)?;
        self.send(1, "last word from alice's phone")?;
        self.pump()?;
        self.check_converged(
            "alice (two devices) and bob agree on the final state",
            &[0, 1, 2],
        )?;
        self.check_exactly_once();
        Ok(())
    }

    fn check_converged(&mut self, what: &str, members: &[usize]) -> DemoResult<()> {
        let group = self.group()?;
        let mut states = Vec::new();
        for &index in members {
            let client = self.client(index)?;
            states.push((client.epoch(&group)?, client.epoch_authenticator(&group)?));
        }
        let agreed = states.windows(2).all(|pair| pair.first() == pair.last());
        if let Some((epoch, authenticator)) = states.first() {
            self.say(&format!(
                "epoch {epoch}, epoch authenticator {}…",
                hex::encode(authenticator.get(..8).unwrap_or_default())
            ));
        }
        self.check(what, agreed);
        Ok(())
    }

    /// Every message reached every device it was encrypted for exactly once, and no other.
    fn check_exactly_once(&mut self) {
        let mut ok = true;
        for (text, id, recipients) in &self.sent {
            for device in &self.devices {
                let copies = device
                    .received
                    .iter()
                    .filter(|(_, _, got)| got == id)
                    .count();
                let expected = usize::from(recipients.contains(&device.address));
                if copies != expected {
                    println!(
                        "  {} got \"{text}\" {copies} times, expected {expected}",
                        device.name
                    );
                    ok = false;
                }
            }
        }
        self.check(
            "every message delivered exactly once to every member (shuffled, duplicated network)",
            ok,
        );
    }

    fn report(&self) -> bool {
        println!("\noperation timings (this machine, durable encrypted storage)");
        println!(
            "{:<36} {:>6} {:>12} {:>12}",
            "operation", "count", "median", "max"
        );
        for (op, samples) in &self.timings {
            let mut sorted = samples.clone();
            sorted.sort();
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
            let max = sorted.last().copied().unwrap_or_default();
            println!(
                "{op:<36} {:>6} {:>10.2}ms {:>10.2}ms",
                sorted.len(),
                median.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
        println!(
            "network: {} envelopes delivered, {} of them duplicates",
            self.network.delivered, self.network.duplicated
        );
        let failed: Vec<&String> = self
            .checks
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| what)
            .collect();
        if failed.is_empty() {
            println!("\nall {} checks held", self.checks.len());
            true
        } else {
            println!("\n{} of {} checks FAILED:", failed.len(), self.checks.len());
            for what in failed {
                println!("  - {what}");
            }
            false
        }
    }
}
