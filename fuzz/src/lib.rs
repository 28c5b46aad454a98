//! Shared machinery of the SpacePanda fuzz targets and of the seed generator
//! (`examples/make_seeds.rs`).
//!
//! * [`GroupFixture`]: a live group (alice, bob, carol; dave outside with published key
//!   packages) built once per process from fixed steps, every device's store kept as a
//!   [`Snapshot`] so each fuzz input starts from byte-identical state — restoring is a copy of
//!   a `MemoryStore` and the test kit's device opened on it, a fraction of a millisecond. Every
//!   device is the test kit's (`spacepanda_testkit::Device`), its identity and engine seeded,
//!   and a restored client always opens with the same engine seed, so an input replays exactly
//!   within a process (reproducible crashes).
//! * [`Mutation`]: turns fuzz input into edits of a real message (flip, set, insert, delete,
//!   truncate, splice at fuzzer-chosen positions). Lifetimes come from the process's start time
//!   (OpenMLS checks them against the system clock), so the fixture's messages differ from
//!   process to process and a fuzz input cannot carry a valid message for *this* process's
//!   group; it carries the edits, and the real message comes from the fixture.
//! * [`check_peer_error`]: the typed-error rule of invariant 4 for input from the network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use core_identity::{DeviceIdentity, UserId};
use core_mls::{
    Envelope, EnvelopeKind, ErrorKind, Event, GroupId, MlsClient, MlsConfig, MlsError, Output,
};
use spacepanda_core::{
    Clock, Key, KeyValueStore, ManualClock, MemoryStore, SharedStore, WriteBatch,
};
use spacepanda_testkit as testkit;

/// Every entry of a store: (namespace, key, value).
pub type Snapshot = Vec<(String, Key, Vec<u8>)>;

/// The one clock of the process (OpenMLS checks lifetimes against the system clock, so it
/// starts at the real time; it never moves, so runs are repeatable within a process).
pub static CLOCK: LazyLock<ManualClock> = LazyLock::new(ManualClock::starting_now);

pub fn clock() -> Arc<dyn Clock> {
    Arc::new(CLOCK.clone())
}

/// The seed of the next new device: devices built in the same order (the fixture's fixed
/// steps) get the same identities and engines.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0);

/// The engine seed of every restored client of `identity`'s device: from its device id.
fn restore_seed(identity: &DeviceIdentity) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *identity.device_id().as_bytes();
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// Largest envelope the fixtures' clients accept (the default).
pub fn max_envelope_len() -> usize {
    MlsConfig::default().max_envelope_len
}

/// A fresh store holding `snapshot`.
pub fn restore(snapshot: &Snapshot) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    let mut batch = WriteBatch::new();
    for (ns, key, value) in snapshot {
        batch.put(ns, key.clone(), value.clone());
    }
    store.apply(batch).unwrap();
    store
}

/// One device: its identity and the snapshot its client is reopened from.
#[derive(Clone)]
pub struct DeviceState {
    pub identity: DeviceIdentity,
    pub snapshot: Snapshot,
}

impl DeviceState {
    /// Opens a client over a fresh copy of the snapshot.
    pub fn open(&self) -> MlsClient {
        self.open_with_store().0
    }

    pub fn open_with_store(&self) -> (MlsClient, Arc<MemoryStore>) {
        let store = restore(&self.snapshot);
        let mut device = testkit::Device::on_store(
            "restored",
            store.clone() as SharedStore,
            clock(),
            &MlsConfig::default(),
            // The same engine seed at every restore of a device (its own, so two devices restored
            // for one input never draw alike): an input replays exactly.
            &mut testkit::seeded::rng(restore_seed(&self.identity)),
        );
        assert_eq!(
            device.identity.device_id(),
            self.identity.device_id(),
            "a snapshot opens as the device it was taken of"
        );
        let client = device.client.take().expect("the kit's device opens its engine");
        (client, store)
    }

    pub fn user_id(&self) -> UserId {
        self.identity.user_id()
    }
}

/// A live device while the fixture is being built.
pub struct Device {
    pub identity: DeviceIdentity,
    pub store: Arc<MemoryStore>,
    pub client: MlsClient,
}

impl Device {
    /// A new device of a new user called `name`: the test kit's, on a `MemoryStore`, its
    /// identity and engine drawn from the next seed of the process.
    pub fn new(name: &str) -> Self {
        let mut device = testkit::Device::create(
            name,
            &testkit::Storage::Memory,
            None,
            &*CLOCK,
            &MlsConfig::default(),
            &mut testkit::seeded::rng(NEXT_SEED.fetch_add(1, Ordering::Relaxed)),
        );
        let store = device.memory.clone().expect("a memory device keeps its MemoryStore");
        let client = device.client.take().expect("the kit's device opens its engine");
        Self {
            identity: device.identity,
            store,
            client,
        }
    }

    pub fn from_state(state: &DeviceState) -> Self {
        let (client, store) = state.open_with_store();
        Self {
            identity: state.identity.clone(),
            store,
            client,
        }
    }

    pub fn state(&self) -> DeviceState {
        DeviceState {
            identity: self.identity.clone(),
            snapshot: self.store.dump().unwrap(),
        }
    }

    /// A key package of this device, as published.
    pub fn key_package(&self, last_resort: bool) -> Vec<u8> {
        self.client
            .publishable_key_packages()
            .unwrap()
            .into_iter()
            .find(|kp| kp.last_resort == last_resort)
            .unwrap()
            .key_package
    }
}

/// The wire bytes of every outbound envelope of `output` of `kind`.
pub fn envelopes(output: &Output, kind: EnvelopeKind) -> Vec<Vec<u8>> {
    output
        .outbound
        .iter()
        .filter(|o| o.envelope.kind() == kind)
        .map(|o| o.envelope.to_bytes())
        .collect()
}

pub fn one_envelope(output: &Output, kind: EnvelopeKind) -> Vec<u8> {
    let mut all = envelopes(output, kind);
    assert_eq!(all.len(), 1, "expected one {kind:?} envelope");
    all.pop().unwrap()
}

/// Delivers every envelope of `output` to each of `to` (the network, minus shuffling).
pub fn deliver(output: &Output, to: &mut [&mut MlsClient]) {
    for outbound in &output.outbound {
        let bytes = outbound.envelope.to_bytes();
        for client in to.iter_mut() {
            let me = client.device().user_id();
            let addressed = outbound
                .to
                .devices
                .iter()
                .any(|d| d.user_id == me && d.device_id == client.device().device_id());
            if addressed {
                client.handle_envelope(&bytes).unwrap();
            }
        }
    }
}

/// The body of the one `Message` event of `output`.
pub fn message_body(output: &Output) -> Option<&[u8]> {
    output.events.iter().find_map(|e| match e {
        Event::Message { body, .. } => Some(body.as_slice()),
        _ => None,
    })
}

/// A commit alice (or carol) could make in the fixture's current epoch.
#[derive(Clone)]
pub struct CommitCase {
    pub name: &'static str,
    /// The Commit envelope, wire bytes.
    pub envelope: Vec<u8>,
    /// The committer after merging its own commit.
    pub committer_after: DeviceState,
    /// The epoch authenticator every member has after the commit.
    pub authenticator_after: Vec<u8>,
    /// Whether the commit removes bob.
    pub removes_bob: bool,
    /// The Welcome it produced, if it adds dave.
    pub welcome: Option<Vec<u8>>,
}

/// A live group: alice created it, added bob and carol, messages and a commit by bob moved it
/// to epoch 2 (so ratchets and the tree are not pristine). Dave is outside with a full key
/// package pool. Everything else is made from the `*_pre` states, so every artefact belongs to
/// the same epoch and each fuzz input starts from the same bytes.
pub struct GroupFixture {
    pub group: GroupId,
    pub alice: DeviceState,
    pub bob: DeviceState,
    pub carol: DeviceState,
    pub dave: DeviceState,
    pub epoch: u64,
    pub authenticator: Vec<u8>,
    /// Application envelopes bob can decrypt, with their bodies. [0] alice, [1] carol,
    /// [2] alice out of order (generation +3), [3] alice from the previous epoch, [4] large.
    pub applications: Vec<(Vec<u8>, Vec<u8>)>,
    /// Proposal envelopes bob receives: [0] carol leaves, [1] alice leaves (bob then is the
    /// designated committer).
    pub proposals: Vec<Vec<u8>>,
    /// Commits bob receives: update by alice, add dave, remove carol, remove bob, update by
    /// carol (committer at another leaf).
    pub commits: Vec<CommitCase>,
}

pub static FIXTURE: LazyLock<GroupFixture> = LazyLock::new(GroupFixture::build);

impl GroupFixture {
    pub fn build() -> Self {
        let mut alice = Device::new("alice");
        let mut bob = Device::new("bob");
        let mut carol = Device::new("carol");
        let dave = Device::new("dave");

        let group = alice.client.create_group().unwrap();
        let added = alice
            .client
            .add_members(&group, &[bob.key_package(false), carol.key_package(false)])
            .unwrap();
        deliver(&added, &mut [&mut bob.client, &mut carol.client]);

        // Epoch 1: some traffic, one message to bob that stays "late" (past epoch).
        let hello = alice.client.send(&group, b"hello from alice").unwrap();
        deliver(&hello, &mut [&mut bob.client, &mut carol.client]);
        let late_body = b"late message from epoch 1".to_vec();
        let late = alice.client.send(&group, &late_body).unwrap();
        deliver(&late, &mut [&mut carol.client]);
        let late = one_envelope(&late, EnvelopeKind::Application);
        let reply = carol.client.send(&group, b"hi from carol").unwrap();
        deliver(&reply, &mut [&mut alice.client, &mut bob.client]);

        // Epoch 2: bob commits an update.
        let update = bob.client.self_update(&group).unwrap();
        deliver(&update, &mut [&mut alice.client, &mut carol.client]);
        let epoch = bob.client.epoch(&group).unwrap();
        let authenticator = bob.client.epoch_authenticator(&group).unwrap();
        assert_eq!(
            alice.client.epoch_authenticator(&group).unwrap(),
            authenticator
        );
        assert_eq!(
            carol.client.epoch_authenticator(&group).unwrap(),
            authenticator
        );

        let (alice_pre, bob_pre, carol_pre, dave_pre) =
            (alice.state(), bob.state(), carol.state(), dave.state());

        // Application messages (alice's and carol's clients move on; their *_pre stay).
        let mut applications = Vec::new();
        let body = b"fuzz me: application message from alice".to_vec();
        let out = alice.client.send(&group, &body).unwrap();
        applications.push((one_envelope(&out, EnvelopeKind::Application), body));
        let body = b"from carol".to_vec();
        let out = carol.client.send(&group, &body).unwrap();
        applications.push((one_envelope(&out, EnvelopeKind::Application), body));
        for _ in 0..2 {
            alice.client.send(&group, b"skipped").unwrap();
        }
        let body = b"out of order".to_vec();
        let out = alice.client.send(&group, &body).unwrap();
        applications.push((one_envelope(&out, EnvelopeKind::Application), body));
        applications.push((late, late_body));
        let body = vec![0x42; 4096];
        let out = alice.client.send(&group, &body).unwrap();
        applications.push((one_envelope(&out, EnvelopeKind::Application), body));

        // Proposals.
        let mut proposals = Vec::new();
        let mut c = Device::from_state(&carol_pre);
        proposals.push(one_envelope(
            &c.client.leave_group(&group).unwrap(),
            EnvelopeKind::Proposal,
        ));
        let mut a = Device::from_state(&alice_pre);
        proposals.push(one_envelope(
            &a.client.leave_group(&group).unwrap(),
            EnvelopeKind::Proposal,
        ));

        // Commits, each from the same epoch.
        let mut commits = Vec::new();
        let mut commit = |name: &'static str,
                          committer: &DeviceState,
                          removes_bob: bool,
                          op: &dyn Fn(&mut MlsClient) -> Output| {
            let mut d = Device::from_state(committer);
            let out = op(&mut d.client);
            let welcome = envelopes(&out, EnvelopeKind::Welcome).pop();
            commits.push(CommitCase {
                name,
                envelope: one_envelope(&out, EnvelopeKind::Commit),
                authenticator_after: d.client.epoch_authenticator(&group).unwrap(),
                committer_after: d.state(),
                removes_bob,
                welcome,
            });
        };
        let g = group.clone();
        commit("update_by_alice", &alice_pre, false, &|c| {
            c.self_update(&g).unwrap()
        });
        let dave_kp = dave.key_package(false);
        commit("add_dave", &alice_pre, false, &|c| {
            c.add_members(&g, &[dave_kp.clone()]).unwrap()
        });
        let carol_id = carol_pre.user_id();
        commit("remove_carol", &alice_pre, false, &|c| {
            c.remove_user(&g, &carol_id).unwrap()
        });
        let bob_id = bob_pre.user_id();
        commit("remove_bob", &alice_pre, true, &|c| {
            c.remove_user(&g, &bob_id).unwrap()
        });
        commit("update_by_carol", &carol_pre, false, &|c| {
            c.self_update(&g).unwrap()
        });

        Self {
            group,
            alice: alice_pre,
            bob: bob_pre,
            carol: carol_pre,
            dave: dave_pre,
            epoch,
            authenticator,
            applications,
            proposals,
            commits,
        }
    }

    /// The Welcome that adds dave (from the `add_dave` commit).
    pub fn welcome(&self) -> &[u8] {
        self.commits
            .iter()
            .find_map(|c| c.welcome.as_deref())
            .unwrap()
    }

    /// Group id bytes, to splice into whole messages from the fuzzer.
    pub fn group_id_bytes(&self) -> &[u8] {
        self.group.as_slice()
    }
}

/// Checks an error from processing input from the network: the engine must blame the input
/// ([`ErrorKind::PeerInput`]), never its storage, itself, or the caller.
pub fn check_peer_error(error: &MlsError) {
    let kind = error.kind();
    assert!(
        kind == ErrorKind::PeerInput,
        "peer input produced a {kind:?} error, not PeerInput: {error:?} ({error})"
    );
}

/// Edits of a real message driven by fuzz input: 4 bytes per edit `[op, pos_hi, pos_lo, arg]`.
/// Positions are taken modulo the current length (+1 for inserts), so every input is valid.
pub struct Mutation;

impl Mutation {
    pub fn apply(base: &[u8], edits: &[u8]) -> Vec<u8> {
        let mut out = base.to_vec();
        for chunk in edits.chunks(4) {
            let &[op, hi, lo, arg] = chunk else {
                // A trailing partial edit appends its bytes (lets the fuzzer grow messages).
                out.extend_from_slice(chunk);
                break;
            };
            let pos = usize::from(u16::from_be_bytes([hi, lo]));
            match op % 8 {
                0 | 1 => {
                    // Flip bits (most common: small changes deep in the structure).
                    if !out.is_empty() {
                        let i = pos % out.len();
                        out[i] ^= if arg == 0 { 0x80 } else { arg };
                    }
                }
                2 => {
                    if !out.is_empty() {
                        let i = pos % out.len();
                        out[i] = arg;
                    }
                }
                3 => {
                    let i = pos % (out.len() + 1);
                    out.insert(i, arg);
                }
                4 => {
                    if !out.is_empty() {
                        let i = pos % out.len();
                        let end = (i + usize::from(arg % 32) + 1).min(out.len());
                        out.drain(i..end);
                    }
                }
                5 => {
                    let i = pos % (out.len() + 1);
                    out.truncate(i);
                }
                6 => {
                    // Interesting length-ish values: 0, 0xff.., big-endian maxima.
                    if !out.is_empty() {
                        let i = pos % out.len();
                        let v: &[u8] = match arg % 6 {
                            0 => &[0x00],
                            1 => &[0xff],
                            2 => &[0x7f, 0xff],
                            3 => &[0xff, 0xff, 0xff, 0xff],
                            4 => &[0x40, 0x00],
                            _ => &[0x80, 0x00, 0x00, 0x00],
                        };
                        for (k, b) in v.iter().enumerate() {
                            if let Some(slot) = out.get_mut(i + k) {
                                *slot = *b;
                            }
                        }
                    }
                }
                _ => {
                    // Duplicate a span (repeats a field or a whole sub-structure).
                    if !out.is_empty() {
                        let i = pos % out.len();
                        let end = (i + usize::from(arg) + 1).min(out.len());
                        let span = out[i..end].to_vec();
                        let at = end;
                        out.splice(at..at, span);
                    }
                }
            }
        }
        out
    }
}

/// How one fuzz input for a message target is read: a selector byte, then edits or raw bytes.
pub enum Input<'a> {
    /// Edit the real message `base` (payload, i.e. the MLS message inside the envelope).
    Edit { base: usize, edits: &'a [u8] },
    /// Use `bytes` as the whole MLS payload (with the fixture's group id spliced in if it has
    /// the shape of a private/public message of a 32-byte group id).
    Payload { bytes: &'a [u8], splice_group: bool },
    /// Use `bytes` as the whole envelope.
    Envelope { bytes: &'a [u8] },
}

impl<'a> Input<'a> {
    /// Selector: low 6 bits pick the base (mod `bases`), high 2 bits the mode
    /// (0, 1 edit; 2 payload; 3 envelope).
    pub fn parse(data: &'a [u8], bases: usize) -> Option<Self> {
        let (&selector, rest) = data.split_first()?;
        Some(match selector >> 6 {
            0 | 1 => Input::Edit {
                base: usize::from(selector & 0x3f) % bases,
                edits: rest,
            },
            2 => Input::Payload {
                bytes: rest,
                splice_group: selector & 1 == 0,
            },
            _ => Input::Envelope { bytes: rest },
        })
    }

    /// The envelope wire bytes this input stands for. `bases` are envelope wire bytes.
    pub fn envelope_bytes(&self, bases: &[&[u8]], kind: EnvelopeKind, group_id: &[u8]) -> Vec<u8> {
        match self {
            Input::Edit { base, edits } => {
                let base = Envelope::from_bytes(bases[*base], usize::MAX).unwrap();
                let payload = Mutation::apply(base.payload(), edits);
                Envelope::new(base.kind(), payload).to_bytes()
            }
            Input::Payload {
                bytes,
                splice_group,
            } => {
                let mut payload = bytes.to_vec();
                if *splice_group {
                    splice_group_id(&mut payload, group_id);
                }
                Envelope::new(kind, payload).to_bytes()
            }
            Input::Envelope { bytes } => bytes.to_vec(),
        }
    }
}

/// An MLSMessage of a private or public message starts `version(2) wire_format(2)
/// group_id<V>`; with a one-byte varint length of 32, put `group_id` there.
pub fn splice_group_id(payload: &mut [u8], group_id: &[u8]) {
    if group_id.len() == 32
        && payload.len() >= 5 + 32
        && payload[4] == 32
        && matches!(payload[3], 1 | 2)
    {
        payload[5..37].copy_from_slice(group_id);
    }
}
