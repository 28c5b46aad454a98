//! A deterministic in-memory harness for engine tests: several devices, each with its own store
//! (MemoryStore or a RedbStore file), one `ManualClock`, and a network that delivers in a
//! seeded shuffled order with duplicates. Devices can be closed (their envelopes wait) and
//! reopened from their store. Modelled on quinn's test `Pair`. The device, the delivery order
//! and the seeded clock and generator are the test kit's (`spacepanda-testkit`); what is here
//! is the routing, the "app" (acknowledgements, recorded messages and events) and the checks.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    unreachable_pub
)]

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use core_mls::{
    DeviceAddress, Disposition, Event, GroupId, MessageId, MlsClient, MlsConfig, MlsError, Output,
};
use rand::rngs::StdRng;
use spacepanda_core::{Clock, ManualClock};
use spacepanda_testkit::{Device, Storage, seeded, shuffle_with_duplicates};

/// One device (the kit's [`Device`]: store, identity, engine) and what the "app" and the
/// network hold for it. Derefs to the device so tests read `node.identity`, `node.client()`.
pub struct Node {
    pub device: Device,
    /// Envelopes waiting for this device.
    pub inbox: Vec<Vec<u8>>,
    /// (group, sender device, message id, body) in delivery order.
    pub delivered: Vec<(GroupId, DeviceAddress, MessageId, Vec<u8>)>,
    pub events: Vec<Event>,
    pub errors: Vec<String>,
}

impl Deref for Node {
    type Target = Device;

    fn deref(&self) -> &Device {
        &self.device
    }
}

impl DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Device {
        &mut self.device
    }
}

impl Node {
    pub fn removed_from(&self, group: &GroupId) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::RemovedFromGroup { group: g, .. } if g == group))
    }
}

/// The harness.
pub struct Harness {
    pub clock: ManualClock,
    pub nodes: Vec<Node>,
    pub config: MlsConfig,
    rng: StdRng,
    storage: Storage,
    /// Holds the redb files of a [`Harness::redb`] harness; removed with it.
    _dir: Option<tempfile::TempDir>,
    /// Probability that a delivered envelope is delivered twice.
    pub duplicate_probability: f64,
}

impl Harness {
    /// Devices on MemoryStores.
    pub fn memory(names: &[&str], seed: u64) -> Self {
        Self::memory_with(names, seed, MlsConfig::default())
    }

    /// Devices on MemoryStores, with a custom engine configuration.
    pub fn memory_with(names: &[&str], seed: u64, config: MlsConfig) -> Self {
        let mut harness = Self::empty(seed, None);
        harness.config = config;
        for name in names {
            harness.add_node(name, None);
        }
        harness
    }

    /// Devices on RedbStore files in a temporary directory.
    pub fn redb(names: &[&str], seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut harness = Self::empty(seed, Some(dir));
        for name in names {
            harness.add_node(name, None);
        }
        harness
    }

    /// Devices on MemoryStores with a custom configuration (every harness's engines draw
    /// their randomness from `seed`: a seed per open, from the harness's generator).
    pub fn seeded(names: &[&str], seed: u64, config: MlsConfig) -> Self {
        Self::memory_with(names, seed, config)
    }

    fn empty(seed: u64, dir: Option<tempfile::TempDir>) -> Self {
        let storage = match &dir {
            Some(dir) => Storage::files_in(dir.path()),
            None => Storage::Memory,
        };
        Self {
            clock: seeded::clock(),
            nodes: Vec::new(),
            config: MlsConfig::default(),
            rng: seeded::rng(seed),
            storage,
            _dir: dir,
            duplicate_probability: 0.3,
        }
    }

    /// Adds a device; with `same_user_as`, a second device of that node's user.
    pub fn add_node(&mut self, name: &str, same_user_as: Option<usize>) -> usize {
        let device = Device::create(
            name,
            &self.storage,
            same_user_as.map(|index| &self.nodes[index].device),
            &self.clock,
            &self.config,
            &mut self.rng,
        );
        self.nodes.push(Node {
            device,
            inbox: Vec::new(),
            delivered: Vec::new(),
            events: Vec::new(),
            errors: Vec::new(),
        });
        self.nodes.len() - 1
    }

    pub fn index_of(&self, address: &DeviceAddress) -> Option<usize> {
        self.nodes.iter().position(|n| n.address() == *address)
    }

    /// A fresh key package of `node`, marked published.
    pub fn key_package(&mut self, node: usize) -> Vec<u8> {
        let client = self.nodes[node].client();
        let package = client
            .publishable_key_packages()
            .unwrap()
            .into_iter()
            .find(|p| !p.last_resort)
            .unwrap();
        client
            .mark_key_packages_published(std::slice::from_ref(&package.key_package_ref))
            .unwrap();
        package.key_package
    }

    /// Routes an output's envelopes to their recipients' inboxes, acknowledges them, and
    /// records its events.
    pub fn absorb(&mut self, node: usize, output: Output) {
        for outbound in &output.outbound {
            let bytes = outbound.envelope.to_bytes();
            for device in &outbound.to.devices {
                if let Some(index) = self.index_of(device) {
                    self.nodes[index].inbox.push(bytes.clone());
                }
            }
            self.nodes[node].client().ack_sent(outbound.id).unwrap();
        }
        self.record_events(node, output.events);
    }

    fn record_events(&mut self, node: usize, events: Vec<Event>) {
        for event in events {
            if let Event::Message {
                group,
                sender,
                message_id,
                body,
                delivery,
                ..
            } = &event
            {
                // Recorded by the "app": acknowledge it to the engine's durable inbox.
                self.nodes[node].delivered.push((
                    group.clone(),
                    DeviceAddress::from(sender),
                    *message_id,
                    body.clone(),
                ));
                assert!(self.nodes[node].client().ack_delivered(*delivery).unwrap());
            }
            self.nodes[node].events.push(event);
        }
    }

    /// Runs an operation on `node` and absorbs its output.
    pub fn run(
        &mut self,
        node: usize,
        op: impl FnOnce(&mut MlsClient) -> Result<Output, MlsError>,
    ) -> Output {
        let output = op(self.nodes[node].client()).unwrap();
        self.absorb(node, output.clone());
        output
    }

    /// Delivers until every open device's inbox is empty; envelopes for closed devices wait.
    /// Returns how many envelopes were handled. Rejections are recorded per node.
    pub fn deliver_all(&mut self) -> usize {
        let mut handled = 0;
        loop {
            let mut batch = Vec::new();
            for (index, node) in self.nodes.iter_mut().enumerate() {
                if !node.is_open() {
                    continue;
                }
                for bytes in node.inbox.drain(..) {
                    batch.push((index, bytes));
                }
            }
            if batch.is_empty() {
                return handled;
            }
            let with_duplicates =
                shuffle_with_duplicates(batch, self.duplicate_probability, &mut self.rng);
            for (index, bytes) in with_duplicates {
                handled += 1;
                // Rejections are recorded on the node; tests inspect them with `errors()`.
                let _ = self.handle(index, &bytes);
            }
        }
    }

    /// One envelope to one device.
    pub fn handle(&mut self, index: usize, bytes: &[u8]) -> Result<Disposition, String> {
        let result = self.nodes[index].client().handle_envelope(bytes);
        match result {
            Ok(output) => {
                let disposition = output.disposition;
                self.absorb(index, output);
                Ok(disposition)
            }
            Err(error) => {
                let text = error.to_string();
                self.nodes[index].errors.push(text.clone());
                Err(text)
            }
        }
    }

    /// Closes a device without acknowledging anything (like a killed process).
    pub fn close(&mut self, node: usize) {
        self.nodes[node].close();
    }

    /// Closes a device and lets go of its file, so the test may copy or change the file
    /// (`Device::stop`).
    pub fn stop(&mut self, node: usize) {
        self.nodes[node].stop();
    }

    /// The node loses its store (a new, empty one in its place: a lost phone, a wiped disk)
    /// and is restored under its old device id from its user's identity key, with a new
    /// signature key; its inbox is lost with it.
    pub fn lose_store(&mut self, node: usize) {
        let name = format!("{}-restored-{}", self.nodes[node].name, self.nodes.len());
        self.nodes[node].device.lose_store(
            &name,
            &self.storage,
            &self.clock,
            &self.config,
            &mut self.rng,
        );
        self.nodes[node].inbox.clear();
    }

    /// Reopens a closed device from its store (the file, for redb) and re-sends its outbox.
    pub fn reopen(&mut self, node: usize) {
        self.nodes[node]
            .device
            .reopen(&self.clock, &self.config, &mut self.rng);
        let undelivered = self.nodes[node].client().pending_delivered().unwrap();
        self.record_events(node, undelivered);
        let pending = self.nodes[node].client().pending_outbound().unwrap();
        self.absorb(
            node,
            Output {
                outbound: pending,
                ..Output::default()
            },
        );
    }

    /// Epoch and authenticator of every listed node for `group`.
    pub fn states(&mut self, group: &GroupId, nodes: &[usize]) -> Vec<(u64, Vec<u8>)> {
        nodes
            .iter()
            .map(|&n| {
                let client = self.nodes[n].client();
                (
                    client.epoch(group).unwrap(),
                    client.epoch_authenticator(group).unwrap(),
                )
            })
            .collect()
    }

    pub fn assert_converged(&mut self, group: &GroupId, nodes: &[usize]) {
        let states = self.states(group, nodes);
        assert!(
            states.windows(2).all(|w| w[0] == w[1]),
            "members disagree: {:?}",
            states
                .iter()
                .map(|(e, a)| (*e, hex::encode(&a[..6])))
                .collect::<Vec<_>>()
        );
    }

    /// How many times `node` received message `id`.
    pub fn copies(&self, node: usize, id: &MessageId) -> usize {
        self.nodes[node]
            .delivered
            .iter()
            .filter(|(_, _, m, _)| m == id)
            .count()
    }

    /// The message id of the `MessageSent` event in an output.
    pub fn sent_id(output: &Output) -> MessageId {
        output
            .events
            .iter()
            .find_map(|e| match e {
                Event::MessageSent { message_id, .. } => Some(*message_id),
                _ => None,
            })
            .expect("no MessageSent event")
    }

    /// Creates a group on `creator` and adds every node in `members` by key package.
    pub fn group_with(&mut self, creator: usize, members: &[usize]) -> GroupId {
        let group = self.nodes[creator].client().create_group().unwrap();
        let packages: Vec<Vec<u8>> = members.iter().map(|&m| self.key_package(m)).collect();
        let g = group.clone();
        self.run(creator, move |c| c.add_members(&g, &packages));
        self.deliver_all();
        group
    }

    /// The network splits into `halves`: `rounds` times, the first node of each half
    /// self-updates in `group` and its half hears it. Returns what crossed, held back (give it
    /// to [`Self::heal`]).
    pub fn split_apart(
        &mut self,
        group: &GroupId,
        halves: &[&[usize]],
        rounds: usize,
    ) -> Vec<(usize, Vec<u8>)> {
        let mut held = Vec::new();
        for _ in 0..rounds {
            for half in halves {
                let g = group.clone();
                self.run(half[0], move |c| c.self_update(&g));
                self.hold_back_outside(half, &mut held);
                self.deliver_all();
            }
        }
        held
    }

    /// A network split: what waits for the nodes outside `half` (sent from inside it) moves
    /// to `held`, to be given back by [`Self::heal`].
    pub fn hold_back_outside(&mut self, half: &[usize], held: &mut Vec<(usize, Vec<u8>)>) {
        for node in (0..self.nodes.len()).filter(|n| !half.contains(n)) {
            held.extend(self.nodes[node].inbox.drain(..).map(|bytes| (node, bytes)));
        }
    }

    /// The split heals: what was held back is delivered, with everything else waiting.
    pub fn heal(&mut self, held: Vec<(usize, Vec<u8>)>) {
        for (node, bytes) in held {
            self.nodes[node].inbox.push(bytes);
        }
        self.deliver_all();
    }

    /// Every listed node sees `members` members in `group`, and not node `gone`.
    pub fn assert_members_without(
        &mut self,
        group: &GroupId,
        nodes: &[usize],
        members: usize,
        gone: usize,
    ) {
        let gone_address = self.nodes[gone].address();
        for &node in nodes {
            let held = self.nodes[node].client().members(group).unwrap();
            assert_eq!(
                held.len(),
                members,
                "{} sees {} members",
                self.nodes[node].name,
                held.len()
            );
            assert!(
                !held.iter().any(|m| DeviceAddress::from(m) == gone_address),
                "{} still has {}",
                self.nodes[node].name,
                self.nodes[gone].name
            );
        }
    }

    /// One member sends; every other listed member receives it exactly once.
    pub fn assert_group_works(&mut self, group: &GroupId, sender: usize, others: &[usize]) {
        let g = group.clone();
        let output = self.run(sender, move |c| c.send(&g, b"still working"));
        self.deliver_all();
        let id = Self::sent_id(&output);
        for &other in others {
            assert_eq!(
                self.copies(other, &id),
                1,
                "{} did not get the message",
                self.nodes[other].name
            );
        }
    }

    pub fn errors(&self) -> BTreeMap<String, Vec<String>> {
        self.nodes
            .iter()
            .filter(|n| !n.errors.is_empty())
            .map(|n| (n.name.clone(), n.errors.clone()))
            .collect()
    }
}

impl Harness {
    /// Takes every node's inbox, by node index: envelopes a scenario holds back to deliver in
    /// an order of its own.
    pub fn take_inboxes(&mut self) -> Vec<Vec<Vec<u8>>> {
        self.nodes
            .iter_mut()
            .map(|node| std::mem::take(&mut node.inbox))
            .collect()
    }

    /// `rounds` times: a second later, every node that holds `group` ticks (committing what
    /// it should, e.g. a renewed leave proposal), then everything is delivered.
    pub fn tick_members(&mut self, group: &GroupId, rounds: usize) {
        for _ in 0..rounds {
            self.clock.advance(std::time::Duration::from_secs(1));
            let now = self.clock.now();
            for node in 0..self.nodes.len() {
                if self.nodes[node].client().groups().contains(group) {
                    self.run(node, move |c| c.tick(now));
                }
            }
            self.deliver_all();
        }
    }

    /// How often `node` moved onto a winning branch, by its events.
    pub fn superseded(&self, node: usize) -> usize {
        self.count_events(node, |e| matches!(e, Event::CommitSuperseded { .. }))
    }

    /// How many of `node`'s events `wanted` picks.
    /// `device` asks `member` where `group` is: the GroupInfo `member` gives `device`'s user,
    /// and what `device` makes of it (`rejoin_advice`).
    pub fn ask(
        &mut self,
        group: &GroupId,
        device: usize,
        member: usize,
    ) -> (core_mls::RejoinAdvice, Vec<u8>) {
        let user = self.nodes[device].identity.user_id();
        let info = self.nodes[member]
            .client()
            .export_group_info(group, &user)
            .unwrap();
        let advice = self.nodes[device].client().rejoin_advice(&info).unwrap();
        (advice, info)
    }

    pub fn count_events(&self, node: usize, wanted: impl Fn(&Event) -> bool) -> usize {
        self.nodes[node].events.iter().filter(|e| wanted(e)).count()
    }
}

/// How many seeds from the one a test names are tried for its case. The case (which commit
/// wins) is a hash of the commits, and the commits carry times from the harness clock, which
/// starts at the beginning of the current week (`ManualClock::starting_this_week`, so that
/// OpenMLS's own lifetime checks against the system clock pass). A seed is one exact run within
/// a week, and each week another seed may give the case: searching a bounded range keeps every
/// test on its case every week. Each case has about even odds, so 64 tries miss it with a
/// probability of about 2^-64.
const SEED_SEARCH: u64 = 64;

/// Runs `scenario` on a fresh in-memory harness of `names`, seeded with the first seed from
/// `seed` on (at most [`SEED_SEARCH`] tries) for which alice's (node 0) commit lost
/// (`want_alice_lost`) or won, and returns that run. The seed used is printed, so a failure
/// replays (`--nocapture`, the same week).
#[track_caller]
pub fn exactly(
    seed: u64,
    want_alice_lost: bool,
    names: &[&str],
    scenario: impl Fn(&mut Harness) -> GroupId,
) -> (Harness, GroupId) {
    let caller = std::panic::Location::caller();
    for candidate in seed..seed + SEED_SEARCH {
        let mut h = Harness::memory(names, candidate);
        let group = scenario(&mut h);
        if (h.superseded(0) > 0) == want_alice_lost {
            println!("{}:{}: seed {candidate}", caller.file(), caller.line());
            return (h, group);
        }
    }
    panic!(
        "no seed in {seed}..{} makes alice's commit {} ({caller})",
        seed + SEED_SEARCH,
        if want_alice_lost { "lose" } else { "win" }
    );
}

/// The first seed from `seed` on (at most [`SEED_SEARCH`] tries) for which a run is the case a
/// test is about (`wanted`): like [`exactly`], for cases that are not "alice's commit lost or
/// won". Printed, so a failure replays.
#[track_caller]
pub fn seed_where(seed: u64, wanted: impl Fn(u64) -> bool) -> u64 {
    let caller = std::panic::Location::caller();
    for candidate in seed..seed + SEED_SEARCH {
        if wanted(candidate) {
            println!("{}:{}: seed {candidate}", caller.file(), caller.line());
            return candidate;
        }
    }
    panic!(
        "no seed in {seed}..{} is the case the test is about ({caller})",
        seed + SEED_SEARCH
    );
}
