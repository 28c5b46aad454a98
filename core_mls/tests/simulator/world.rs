//! The simulated world of one run: the devices (each an `MlsClient` on its own store), the
//! app on each (its database of received messages), the network, the clock, and an oracle
//! that watches every output (what was sent, on which branch) to judge the run at the end.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use core_mls::{
    DeviceAddress, Envelope, EnvelopeId, Event, GroupId, MlsClient, MlsConfig, MlsError, Output,
    PublishableKeyPackage,
};
use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, ProtocolMessage};
use rand::rngs::StdRng;
use spacepanda_core::ManualClock;
use spacepanda_testkit::{DeviceError, Storage, seeded};
use tls_codec::Deserialize as _;

use crate::network::{Carried, Network, new_network};
use crate::scenario::Scenario;
use crate::verdicts::{Failure, Tally, variant_name};

/// One device: the test kit's device (its store, identity and engine while open), which it
/// derefs to, and what the simulation keeps beside it: its downtime, its app's database, and
/// what the oracle knows of it.
pub(crate) struct Device {
    pub(crate) device: spacepanda_testkit::Device,
    /// Closed until this step (a crash with downtime).
    pub(crate) down_until: Option<u64>,
    /// Its key packages as a directory would publish them.
    directory: Vec<PublishableKeyPackage>,
    /// Refs of its key packages handed to an adder.
    handed_out: Vec<Vec<u8>>,
    /// The app database: every received message, in arrival order.
    pub(crate) app: Vec<(DeviceAddress, [u8; 16])>,
    /// Epoch → authenticator of the branch this device is on (nothing above its epoch).
    pub(crate) history: BTreeMap<u64, Vec<u8>>,
    /// Epoch of its last `Joined`.
    pub(crate) joined_at: Option<u64>,
    /// `leave_group` succeeded and the device has been neither removed nor added since: its
    /// own Remove proposal may be pending (OpenMLS refuses any commit of it then).
    pub(crate) leaving: bool,
    /// The member whose GroupInfo it last rejoined with (asked again if the rejoin is
    /// contested).
    pub(crate) rejoined_from: Option<usize>,
    /// Epoch of its last `Rejoined`: what was sent before it is lost to it.
    pub(crate) rejoined_at: Option<u64>,
}

impl Deref for Device {
    type Target = spacepanda_testkit::Device;

    fn deref(&self) -> &spacepanda_testkit::Device {
        &self.device
    }
}

impl DerefMut for Device {
    fn deref_mut(&mut self) -> &mut spacepanda_testkit::Device {
        &mut self.device
    }
}

impl Device {
    /// What the engine's state said, gone with a lost store, and the app database with it: the
    /// lost phone's replacement starts empty, so a message its predecessor had, sent again on a
    /// branch that won, is new to it (the engine's exactly-once holds per store; founders,
    /// whose messages are checked for loss, never lose theirs).
    pub(crate) fn forget_state(&mut self) {
        self.app.clear();
        self.directory.clear();
        self.handed_out.clear();
        self.history.clear();
        self.joined_at = None;
        self.leaving = false;
        self.rejoined_from = None;
    }
}

/// An envelope held back by a cut link, for one device.
pub(crate) struct Held {
    to: usize,
    carried: Carried,
}

/// Where an envelope was made: by whom, in which epoch, on which branch.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) sender: usize,
    pub(crate) epoch: Option<u64>,
    /// The sender's authenticator of that epoch when it made the envelope.
    pub(crate) authenticator: Option<Vec<u8>>,
}

/// An application message the oracle saw a device send (`Event::MessageSent`).
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) sender: usize,
    pub(crate) message_id: [u8; 16],
    /// The envelope carrying it, when it was encrypted in the same call.
    pub(crate) envelope: Option<EnvelopeId>,
}

/// Application envelopes a device sent without a `MessageSent`: messages it sent before, sent
/// again after the branch they were made on was left (a rollback, a Welcome, an external
/// join). Which messages each carries is inside the ciphertext; `sent_before` orders them
/// against `World::sent`.
#[derive(Debug, Clone)]
pub(crate) struct Resend {
    pub(crate) sender: usize,
    pub(crate) envelope: EnvelopeId,
    /// How many entries `World::sent` had when it was sent.
    pub(crate) sent_before: usize,
}

/// A `RejectedMessage`, with what is needed to judge it once the winning branch is known.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    pub(crate) receiver: usize,
    pub(crate) receiver_state: Option<(u64, Vec<u8>)>,
    pub(crate) receiver_joined_at: Option<u64>,
    pub(crate) envelope: EnvelopeId,
    pub(crate) reason: String,
}

/// The run's settings that are not drawn from the seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// One commit at a time, everything delivered after each (`SIM_NO_CONCURRENT=1`).
    pub(crate) no_concurrent: bool,
    /// Adds never race another commit: everything is delivered before and after each add
    /// (`SIM_SERIAL_ADDS=1`; by default adds race other commits like every commit).
    pub(crate) serial_adds: bool,
    /// RedbStore files for every seed (`SIM_REDB=1`).
    pub(crate) force_redb: bool,
    /// `MlsConfig::max_past_epochs` instead of the default (`SIM_MAX_PAST_EPOCHS`).
    pub(crate) max_past_epochs: Option<usize>,
    /// A broken network, to show the checks catch it: envelopes of this kind from founder 0
    /// never reach founder 1.
    pub(crate) lose_from_0_to_1: Option<core_mls::EnvelopeKind>,
}

/// Past epochs the simulated engines retain and fork window they keep (see `World::new`).
const SIM_RETAINED_EPOCHS: usize = 16;

pub(crate) struct World {
    pub(crate) scenario: Scenario,
    pub(crate) options: Options,
    pub(crate) clock: ManualClock,
    pub(crate) config: MlsConfig,
    pub(crate) devices: Vec<Device>,
    by_address: HashMap<DeviceAddress, usize>,
    pub(crate) network: Network,
    /// Seeds of the engines: one per open (a reopened engine must not repeat its draws).
    pub(crate) engine_rng: StdRng,
    /// Where the devices' stores are: memory, or the files in `_dir`.
    pub(crate) storage: Storage,
    pub(crate) group: GroupId,
    /// Simulation step (one per operation).
    pub(crate) step: u64,
    pub(crate) sent: Vec<Sent>,
    pub(crate) resends: Vec<Resend>,
    pub(crate) origins: HashMap<EnvelopeId, Origin>,
    pub(crate) rejections: Vec<Rejection>,
    pub(crate) tally: Tally,
    /// Commits made so far (by operations, ticks, crashed operations).
    pub(crate) commits_made: u64,
    /// Verbose trace, when asked for.
    pub(crate) log: Option<Vec<String>>,
    /// Rejoins the apps want and have not managed yet.
    pub(crate) rejoins: Vec<crate::recovery::RejoinRequest>,
    /// A device whose link is cut: envelopes to and from it are held back.
    pub(crate) cut_off: Option<usize>,
    pub(crate) held: Vec<Held>,
    /// A link was cut for longer than the fork window: `ForkOutsideWindow` is expected.
    pub(crate) partitioned: bool,
    _dir: Option<tempfile::TempDir>,
}

impl World {
    /// Opens every device and sets the group up: founder 0 creates it and adds the other
    /// founders; everything is delivered.
    pub(crate) fn new(
        scenario: &Scenario,
        options: Options,
        verbose: bool,
    ) -> Result<Self, Failure> {
        let redb = scenario.redb || options.force_redb;
        let dir = if redb {
            Some(tempfile::tempdir().map_err(|e| Failure::new("setup", e.to_string()))?)
        } else {
            None
        };
        // A replay must start at the same time, and OpenMLS checks key package lifetimes
        // against the system clock: the start of this week is both (see `starting_this_week`).
        let clock = seeded::clock();
        // Every identity key, device id and engine seed of the run comes from here.
        let mut engine_rng = seeded::rng(scenario.seed ^ 0xE4_61_4E_E5);
        // The network holds an envelope for up to 12 steps, and with concurrent commits (each
        // race adds the winner and the re-issued loser) that can span more than the defaults'
        // 3 retained epochs and 8-epoch fork window. Beyond them MLS cannot decrypt and the
        // engine cannot judge a fork — limits by design, tested in `concurrent_commits.rs` and
        // `engine_bad_input.rs` — so the simulator runs the engines with both at 16 and checks
        // everything else.
        let mut config = MlsConfig {
            max_past_epochs: SIM_RETAINED_EPOCHS,
            fork_window_epochs: SIM_RETAINED_EPOCHS as u64,
            ..MlsConfig::default()
        };
        if let Some(epochs) = options.max_past_epochs {
            config.max_past_epochs = epochs;
        }
        let storage = match &dir {
            Some(dir) => Storage::files_in(dir.path()),
            None => Storage::Memory,
        };
        let mut devices: Vec<Device> = Vec::with_capacity(scenario.devices.len());
        for spec in &scenario.devices {
            // A second device imports its user's identity key from the first device's store.
            let same_user_as = spec.same_user_as.map(|other| &devices[other].device);
            let device = spacepanda_testkit::Device::try_create(
                &spec.name,
                &storage,
                same_user_as,
                &clock,
                &config,
                &mut engine_rng,
            )
            .map_err(setup_failure)?;
            devices.push(Device {
                device,
                down_until: None,
                directory: Vec::new(),
                handed_out: Vec::new(),
                app: Vec::new(),
                history: BTreeMap::new(),
                joined_at: None,
                leaving: false,
                rejoined_from: None,
                rejoined_at: None,
            });
        }
        let by_address = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.address(), i))
            .collect();
        let group = devices[0]
            .client
            .as_mut()
            .ok_or_else(|| Failure::new("setup", "founder 0 closed"))?
            .create_group()
            .map_err(|e| Failure::new("setup", e.to_string()))?;
        let network_seed = scenario.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
        let mut world = Self {
            scenario: scenario.clone(),
            options,
            clock,
            config,
            devices,
            by_address,
            network: new_network(seeded::rng(network_seed)),
            engine_rng,
            storage,
            group,
            step: 0,
            sent: Vec::new(),
            resends: Vec::new(),
            origins: HashMap::new(),
            rejections: Vec::new(),
            tally: Tally::default(),
            commits_made: 0,
            log: verbose.then(Vec::new),
            rejoins: Vec::new(),
            cut_off: None,
            held: Vec::new(),
            partitioned: false,
            _dir: dir,
        };
        for device in 0..world.devices.len() {
            world.refresh_directory(device)?;
        }
        world.record_state(0);
        let mut packages = Vec::new();
        for founder in 1..scenario.founders {
            let package = world.take_key_package(founder, false)?;
            packages.push(package.ok_or_else(|| Failure::new("setup", "no key package"))?);
        }
        let group = world.group.clone();
        let output = world
            .call(0, |c| c.add_members(&group, &packages))
            .map_err(|e| Failure::new("setup", e.to_string()))?;
        world.absorb(0, output)?;
        world.flush()?;
        for founder in 0..scenario.founders {
            if !world.holds(founder) {
                return Err(Failure::new(
                    "setup",
                    format!("founder d{founder} did not join"),
                ));
            }
        }
        let setup = format!(
            "setup: {} devices ({}), founders d0..d{}, {} store",
            world.devices.len(),
            world.describe_users(),
            scenario.founders - 1,
            if redb { "redb" } else { "memory" }
        );
        if let Some(log) = &mut world.log {
            log.insert(0, setup);
        }
        Ok(world)
    }

    fn describe_users(&self) -> String {
        let mut users: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for device in 0..self.devices.len() {
            users
                .entry(self.scenario.user_root(device))
                .or_default()
                .push(device);
        }
        users
            .values()
            .map(|ds| {
                ds.iter()
                    .map(|d| format!("d{d}"))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(crate) fn verbose(&self) -> bool {
        self.log.is_some()
    }

    pub(crate) fn note(&mut self, line: String) {
        if let Some(log) = &mut self.log {
            log.push(line);
        }
    }

    pub(crate) fn index_of(&self, address: &DeviceAddress) -> Option<usize> {
        self.by_address.get(address).copied()
    }

    pub(crate) fn is_open(&self, device: usize) -> bool {
        self.devices[device].client.is_some()
    }

    pub(crate) fn client(&mut self, device: usize) -> Result<&mut MlsClient, Failure> {
        self.devices[device]
            .client
            .as_mut()
            .ok_or_else(|| Failure::new("simulator", format!("d{device} is closed")))
    }

    /// Whether the device is open and holds the group.
    pub(crate) fn holds(&self, device: usize) -> bool {
        self.devices[device]
            .client
            .as_ref()
            .is_some_and(|c| c.groups().contains(&self.group))
    }

    /// Epoch and authenticator, if the device is open and holds the group.
    pub(crate) fn state(&self, device: usize) -> Option<(u64, Vec<u8>)> {
        let client = self.devices[device].client.as_ref()?;
        Some((
            client.epoch(&self.group).ok()?,
            client.epoch_authenticator(&self.group).ok()?,
        ))
    }

    /// The member devices in `device`'s view of the group.
    pub(crate) fn view(&mut self, device: usize) -> Result<Vec<usize>, Failure> {
        let group = self.group.clone();
        let members = self
            .client(device)?
            .members(&group)
            .map_err(|e| Failure::new("engine call failed", format!("members: {e}")))?;
        members
            .iter()
            .map(|m| {
                self.index_of(&DeviceAddress::from(m)).ok_or_else(|| {
                    Failure::new(
                        "unknown member",
                        format!("d{device} lists a device never made"),
                    )
                })
            })
            .collect()
    }

    pub(crate) fn record_state(&mut self, device: usize) {
        let state = self.state(device);
        let history = &mut self.devices[device].history;
        match state {
            Some((epoch, authenticator)) => {
                history.split_off(&(epoch + 1));
                history.insert(epoch, authenticator);
            }
            None => history.clear(),
        }
    }

    /// Runs an engine call on an open device. The oracle sees its output whether or not it is
    /// absorbed afterwards: the sender's `MessageSent`, where each envelope was made, joins and
    /// removals.
    pub(crate) fn call(
        &mut self,
        device: usize,
        f: impl FnOnce(&mut MlsClient) -> Result<Output, MlsError>,
    ) -> Result<Output, MlsError> {
        let client = self.devices[device]
            .client
            .as_mut()
            .ok_or(MlsError::Internal {
                what: "simulator called a closed device",
            })?;
        let output = f(client)?;
        // What the device recorded of a branch it left is not the group's history: a rollback
        // keeps the epochs up to the fork point, a (re-)join keeps nothing. Epochs passed
        // within one call stay unknown, which only ever excuses more.
        let history = &mut self.devices[device].history;
        for event in &output.events {
            match event {
                Event::CommitSuperseded { epoch, .. } => {
                    history.split_off(&(epoch + 1));
                }
                Event::Joined { .. } | Event::Rejoined { .. } => history.clear(),
                _ => {}
            }
        }
        self.record_state(device);
        let mut application_envelope = None;
        let mut application_envelopes = Vec::new();
        for outbound in &output.outbound {
            let epoch = envelope_epoch(&outbound.envelope);
            let authenticator = epoch.and_then(|e| self.devices[device].history.get(&e).cloned());
            self.origins.insert(
                outbound.envelope.id(),
                Origin {
                    sender: device,
                    epoch,
                    authenticator,
                },
            );
            match outbound.envelope.kind() {
                core_mls::EnvelopeKind::Commit => self.commits_made += 1,
                core_mls::EnvelopeKind::Application => {
                    application_envelope = Some(outbound.envelope.id());
                    application_envelopes.push(outbound.envelope.id());
                }
                _ => {}
            }
        }
        if !output
            .events
            .iter()
            .any(|e| matches!(e, Event::MessageSent { .. }))
        {
            let sent_before = self.sent.len();
            self.resends
                .extend(application_envelopes.into_iter().map(|envelope| Resend {
                    sender: device,
                    envelope,
                    sent_before,
                }));
        }
        for event in &output.events {
            match event {
                Event::MessageSent { message_id, .. } => self.sent.push(Sent {
                    sender: device,
                    message_id: message_id.0,
                    envelope: application_envelope,
                }),
                Event::Joined { epoch, .. } => {
                    self.devices[device].joined_at = Some(*epoch);
                    self.devices[device].leaving = false;
                }
                Event::Rejoined { epoch, .. } => {
                    self.devices[device].joined_at = Some(*epoch);
                    self.devices[device].rejoined_at = Some(*epoch);
                    self.devices[device].leaving = false;
                }
                Event::RemovedFromGroup { .. } => {
                    self.devices[device].leaving = false;
                    // As the Node: its recovery task ends once the group is gone, so a removed
                    // device does not rejoin (elsewhere) what it was asking about.
                    self.rejoins.retain(|r| r.device != device);
                }
                _ => {}
            }
        }
        Ok(output)
    }

    /// The app takes an output: every envelope goes in flight and is acknowledged, every
    /// message is stored in the app database and acknowledged, events are counted.
    pub(crate) fn absorb(&mut self, device: usize, output: Output) -> Result<(), Failure> {
        for outbound in &output.outbound {
            self.route(device, &outbound.to.devices, &outbound.envelope)?;
            self.client(device)?
                .ack_sent(outbound.id)
                .map_err(|e| Failure::new("engine call failed", format!("ack_sent: {e}")))?;
        }
        for event in output.events {
            self.take_event(device, event)?;
        }
        Ok(())
    }

    fn route(
        &mut self,
        from: usize,
        to: &[DeviceAddress],
        envelope: &Envelope,
    ) -> Result<(), Failure> {
        let mut targets = Vec::with_capacity(to.len());
        for address in to {
            let index = self.index_of(address).ok_or_else(|| {
                Failure::new(
                    "unknown recipient",
                    format!("d{from} sent to a device never made"),
                )
            })?;
            let lost = self.options.lose_from_0_to_1 == Some(envelope.kind()) && from == 0;
            if !(lost && index == 1) {
                targets.push(index);
            }
        }
        if self.verbose() && envelope.kind() != core_mls::EnvelopeKind::Application {
            let line = format!(
                "      d{from} sends {:?} {} to {:?}",
                envelope.kind(),
                envelope_label(envelope),
                targets.iter().map(|t| format!("d{t}")).collect::<Vec<_>>()
            );
            self.note(line);
        }
        let carried = Carried {
            from,
            id: envelope.id(),
            kind: envelope.kind(),
            bytes: Rc::new(envelope.to_bytes()),
        };
        if let Some(cut) = self.cut_off {
            let (across, within): (Vec<usize>, Vec<usize>) = targets
                .into_iter()
                .partition(|&to| (to == cut) != (from == cut));
            for to in across {
                self.held.push(Held {
                    to,
                    carried: carried.clone(),
                });
            }
            targets = within;
        }
        self.network.send(self.step, &targets, &carried);
        Ok(())
    }

    pub(crate) fn take_event(&mut self, device: usize, event: Event) -> Result<(), Failure> {
        let name = variant_name(&event);
        match event {
            Event::Message {
                sender,
                message_id,
                delivery,
                ..
            } => {
                self.devices[device]
                    .app
                    .push((DeviceAddress::from(&sender), message_id.0));
                let fresh = self.client(device)?.ack_delivered(delivery).map_err(|e| {
                    Failure::new("engine call failed", format!("ack_delivered: {e}"))
                })?;
                if !fresh {
                    return Err(Failure::new(
                        "engine call failed",
                        format!("d{device}: ack_delivered of a new delivery found nothing"),
                    ));
                }
            }
            Event::ForkOutsideWindow { .. } if self.partitioned => {
                // Each refused commit already asked its sender (see `envelope_error`).
            }
            Event::RejoinContested { .. } => {
                let ask = self.devices[device].rejoined_from;
                self.want_rejoin(device, ask);
            }
            Event::BranchContested { .. } => {
                // The members of this device's state are asked, never the Welcome's sender.
                self.tally.add("event BranchContested");
                self.want_rejoin(device, None);
            }
            Event::ForkOutsideWindow { count, .. } => {
                return Err(Failure::new(
                    "ForkOutsideWindow event",
                    format!("d{device} reports {count} commits older than the fork window"),
                ));
            }
            Event::BufferedDropped { count, .. } => {
                self.tally
                    .add_n("event BufferedDropped (messages)", count as u64);
            }
            Event::CommitSuperseded {
                reissued_commits,
                resent_messages,
                ..
            } => {
                self.tally.add_n(
                    "event CommitSuperseded: commits re-issued",
                    reissued_commits as u64,
                );
                self.tally.add_n(
                    "event CommitSuperseded: messages re-sent",
                    resent_messages as u64,
                );
            }
            Event::KeyPackagesReplenished { .. } => self.refresh_directory(device)?,
            _ => {}
        }
        self.tally.add(format!("event {name}"));
        Ok(())
    }

    /// The cut link heals: what it held back goes in flight. Returns how many.
    pub(crate) fn release_held(&mut self) -> usize {
        let held = std::mem::take(&mut self.held);
        let count = held.len();
        for item in held {
            self.network.send(self.step, &[item.to], &item.carried);
        }
        count
    }

    /// Publishes the device's new key packages in the simulated directory.
    pub(crate) fn refresh_directory(&mut self, device: usize) -> Result<(), Failure> {
        let d = &mut self.devices[device];
        // Through the kit device's field, not its deref, so that `d.directory` stays free.
        let Some(client) = d.device.client.as_mut() else {
            return Ok(());
        };
        let fail = |e: MlsError| Failure::new("engine call failed", format!("key packages: {e}"));
        let offered = client.publishable_key_packages().map_err(fail)?;
        let new: Vec<PublishableKeyPackage> = offered
            .into_iter()
            .filter(|p| {
                !d.directory
                    .iter()
                    .any(|k| k.key_package_ref == p.key_package_ref)
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let refs: Vec<Vec<u8>> = new.iter().map(|p| p.key_package_ref.clone()).collect();
        client.mark_key_packages_published(&refs).map_err(fail)?;
        d.directory.extend(new);
        Ok(())
    }

    /// A single-use key package of `target` never handed out before; `claim`: tell the target
    /// (`mark_key_package_claimed`) if it is open.
    pub(crate) fn take_key_package(
        &mut self,
        target: usize,
        claim: bool,
    ) -> Result<Option<Vec<u8>>, Failure> {
        self.refresh_directory(target)?;
        let device = &self.devices[target];
        let Some(package) = device
            .directory
            .iter()
            .find(|p| !p.last_resort && !device.handed_out.contains(&p.key_package_ref))
            .cloned()
        else {
            return Ok(None);
        };
        self.devices[target]
            .handed_out
            .push(package.key_package_ref.clone());
        if claim && let Some(client) = self.devices[target].client.as_mut() {
            client
                .mark_key_package_claimed(&package.key_package_ref)
                .map_err(|e| Failure::new("engine call failed", format!("claim: {e}")))?;
        }
        Ok(Some(package.key_package))
    }
}

/// A device the kit could not create, as the seed's failure, under the failure kinds the
/// simulator has always given these steps: failures are tallied and shrunk by kind.
fn setup_failure(error: DeviceError) -> Failure {
    match error {
        DeviceError::Store(e) => Failure::new("create failed", e.to_string()),
        DeviceError::Engine(e) => Failure::new("reopen failed", e.to_string()),
        DeviceError::Identity(_) | DeviceError::NoIdentity => {
            Failure::new("setup", error.to_string())
        }
    }
}

/// How a verbose trace names an envelope: a short hash of its MLS message (the same for
/// every copy, whatever its context) and the epoch it was made in, so one commit can be
/// followed from its sender to each receiver.
pub(crate) fn envelope_label(envelope: &Envelope) -> String {
    let hash = blake3::hash(envelope.payload());
    let short = hex::encode(&hash.as_bytes()[..2]);
    match envelope_epoch(envelope) {
        Some(epoch) => format!("#{short}@e{epoch}"),
        None => format!("#{short}"),
    }
}

/// The epoch an envelope's MLS message was made in (`None` for Welcomes).
fn envelope_epoch(envelope: &Envelope) -> Option<u64> {
    let message = MlsMessageIn::tls_deserialize_exact(envelope.payload()).ok()?;
    match message.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => Some(ProtocolMessage::from(m).epoch().as_u64()),
        MlsMessageBodyIn::PublicMessage(m) => Some(ProtocolMessage::from(m).epoch().as_u64()),
        _ => None,
    }
}
