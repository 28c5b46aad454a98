//! SpacePanda's sans-IO MLS engine for one device: OpenMLS on durable, transactional,
//! encrypted storage, with identities bound to every member.
//!
//! # What it does
//!
//! [`MlsClient`] is one device's engine. It creates groups, invites devices by key package
//! (validated and identity-bound), removes users or single devices, self-updates, leaves,
//! sends, and processes every incoming envelope through one pipeline (bounded decode →
//! de-duplication → epoch check with buffering of early messages → OpenMLS → identity
//! verification of every leaf a commit adds → events). It keeps a key package pool with a
//! last-resort package, rotation and expiry, and survives crashes without losing or doubling a
//! message: everything an operation changes — OpenMLS state, our records, the outbound envelopes
//! (durable outbox) and the delivered messages (durable inbox) — commits in one transaction.
//!
//! # What it does not do
//!
//! No network I/O, no threads, no async runtime, no reading of the system clock: inputs are
//! bytes and a [`Clock`](spacepanda_core::Clock); outputs are [`Outbound`] envelopes with their
//! recipient devices and [`Event`]s. The network layer (or the demo, or a test) drives it, and
//! calls [`MlsClient::tick`] when [`MlsClient::next_deadline`] says (see [Time](#time)). It
//! does not assume that anything orders the commits of an epoch: two members committing at
//! once is resolved by a rule every member applies alike, which no member can play by choosing
//! what its commit contains (a commit that removes the other committer wins, then a per-epoch
//! priority of the committer; see `fork_resolution` and docs/ARCHITECTURE.md).
//!
//! # Design
//!
//! - layers: records and pure rules at the bottom (a record kept in the transaction, or a
//!   decision over one, taking what it needs as arguments: `epoch_buffer`, `commit_log`,
//!   `branch_records`, `key_package_manager`, `config`, …), then `client`, then the operations
//!   (the `impl MlsClient` blocks below, whose `pub fn`s are the API); no module imports one
//!   of a layer above it, and no two import each other (docs/ARCHITECTURE.md, "Layers");
//! - `client` is the type: it opens the engine and owns the outbox and inbox;
//!   `client::operation` the one-operation-one-transaction rule (every public operation, with
//!   what it sets off, commits once; steps that may fail on their own run from savepoints);
//!   it calls no operation;
//! - `group_manager` holds the operations this device starts, `commit_policy` when it commits
//!   on its own; `welcome_handler` joins; `external_join` rejoins (or joins a new device of a
//!   member user) by external commit, and checks the external commits of others;
//!   `message_processor` handles everything that arrives (where each message goes is
//!   `routing`'s rule, what OpenMLS makes of it `mls_processing`'s), `group_removal` what
//!   arrives for a group this device does not hold (removed, perhaps by a commit that will
//!   lose, or not joined yet);
//! - `fork_resolution` makes concurrent commits converge: rollback onto the winning branch,
//!   re-issue of what the losing side did; a commit older than the window is
//!   [`MlsError::ForkOutsideWindow`]; `branch_records` owns every record of a group's branches
//!   (epoch snapshots, the sent log, dormant branches, the lineage, join records) and is the
//!   only code that changes them;
//! - `delivery` is where envelopes enter, with the [`DeliverySource`] that delivered them;
//!   `epoch_buffer` keeps what cannot be processed yet (`buffering` puts it there), within `buffer_budget`'s shares per
//!   source (junk from one peer cannot push out what others delivered; a full share is
//!   [`MlsError::BufferFull`]); `commit_log` remembers every commit judged (an old one replayed
//!   is a duplicate, not a fork) and the recent merged ones ([`MlsClient::recent_commits`]);
//!   `missing_commit` reports a group stuck behind a commit it lacks ([`Event::MissingCommit`]);
//! - `commit_abandonment` gives up on a commit whose proposal was refused (remembered by
//!   `commit_wait`) or never came ([`Event::CommitAbandoned`]); `deadlines` pins one time per
//!   operation, and `tick` computes [`MlsClient::next_deadline`] from the records;
//! - `engine_crypto` is OpenMLS's crypto provider: RustCrypto's primitives, and one generator
//!   for every random draw, seeded from the OS ([`MlsClient::open`]) or by a test
//!   ([`MlsClient::open_seeded`], so a run replays exactly);
//! - `key_package_manager` keeps the ledger OpenMLS lacks; `key_package_validation` checks
//!   other devices' packages; `member_verification` binds leaves to core_identity identities;
//! - `storage` and `provider` (crate-private: the engine is the only way to change MLS state,
//!   so every change passes its identity checks) put OpenMLS on any
//!   [`spacepanda_core::KeyValueStore`]: everything
//!   of one group under the key prefix `["g", group_id]` in namespace `mls` (so listing,
//!   deleting and snapshotting a group are prefix operations, also under `SealedStore`), other
//!   state in `mls_key_package`, `mls_signature_key`, `mls_encryption_key`, `mls_psk`; values
//!   are CBOR; a format record refuses stores from a newer build
//!   ([`MlsError::UnsupportedStateVersion`]).
//!
//! # Time
//!
//! **One time per operation.** Every public operation reads the clock once, when it starts,
//! and decides everything by that time ([`MlsClient::now`] returns it while the operation
//! runs): key package lifetimes, when a message was buffered, a snapshot taken, a proposal
//! received, a leaf replaced. [`MlsClient::tick`] runs at the time it is given, including the
//! commits it makes; nested calls (a `send` that commits first) keep the outer time.
//!
//! **When to tick.** [`MlsClient::next_deadline`] is the earliest time `tick` has work, like
//! quinn's `poll_timeout`: a self-update falling due (`self_update_after`), pending proposals
//! to commit (at once for the designated committer, else after `pending_proposal_timeout`), a
//! buffered message reaching `buffer_max_age`, a group waiting `missing_commit_alert` behind a
//! commit it lacks, a commit that waited `commit_proposal_wait` for
//! a proposal (or references one this device refused), a snapshot reaching `fork_window`, a key
//! package to rotate, expire, prune or forget, a pool to refill, and work already due (events
//! to report, own commits to re-issue, messages to drop for a group that cannot come back).
//! A driver sleeps until then or until the network brings something, ticks, and asks again
//! after every call; `tick` before the deadline does nothing. De-duplication records are
//! forgotten by whichever tick comes after their retention (holding one longer is harmless).
//!
//! ```
//! # use std::sync::Arc;
//! # use core_identity::IdentityStore;
//! # use core_mls::{MlsClient, MlsConfig};
//! # use spacepanda_core::{Clock, ManualClock, MemoryStore, SharedStore};
//! # let clock = ManualClock::starting_now();
//! # let store: SharedStore = Arc::new(MemoryStore::new());
//! # let identity = IdentityStore::new(store.clone(), Arc::new(clock.clone())).create("a")?;
//! let mut client = MlsClient::open(store, Arc::new(clock.clone()), identity, MlsConfig::default())?;
//! // A driver's loop, with the network left out: sleep until the deadline, then tick.
//! for _ in 0..3 {
//!     let Some(deadline) = client.next_deadline()? else { break };
//!     clock.set(deadline.max(clock.now())); // sleep until then
//!     let _output = client.tick(clock.now())?; // send its `outbound`, show its `events`
//!     assert!(client.next_deadline()?.is_none_or(|next| next > deadline));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Getting started: two devices exchange a message
//!
//! ```
//! use std::sync::Arc;
//! use core_identity::IdentityStore;
//! use core_mls::{Event, EnvelopeKind, MlsClient, MlsConfig};
//! use spacepanda_core::{Clock, MemoryStore, SharedStore, SystemClock};
//!
//! let clock: Arc<dyn Clock> = Arc::new(SystemClock);
//! let device = |name: &str| -> Result<MlsClient, Box<dyn std::error::Error>> {
//!     let store: SharedStore = Arc::new(MemoryStore::new()); // RedbStore + SealedStore in an app
//!     let identity = IdentityStore::new(store.clone(), clock.clone()).create(name)?;
//!     Ok(MlsClient::open(store, clock.clone(), identity, MlsConfig::default())?)
//! };
//! let mut alice = device("alice")?;
//! let mut bob = device("bob")?;
//!
//! // Bob publishes key packages; alice fetches one and invites him.
//! let bob_package = bob.publishable_key_packages()?.remove(0).key_package;
//! let group = alice.create_group()?;
//! let invite = alice.add_members(&group, &[bob_package])?;
//! for outbound in &invite.outbound {
//!     // The network layer would deliver `outbound.to_bytes()` to `outbound.to.devices`.
//!     if outbound.kind() == EnvelopeKind::Welcome {
//!         bob.handle_envelope(&outbound.to_bytes())?;
//!     }
//!     alice.ack_sent(outbound.id)?;
//! }
//!
//! let sent = alice.send(&group, b"hello bob")?;
//! let received = bob.handle_envelope(&sent.outbound[0].to_bytes())?;
//! match &received.events[..] {
//!     [Event::Message { sender, body, delivery, .. }] => {
//!         assert_eq!(body, b"hello bob");
//!         assert_eq!(sender.user_id(), alice.device().user_id()); // identity-verified
//!         bob.ack_delivered(*delivery)?; // stored by the app: drop it from the durable inbox
//!     }
//!     other => panic!("unexpected events {other:?}"),
//! }
//! assert_eq!(alice.epoch_authenticator(&group)?, bob.epoch_authenticator(&group)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
mod provider;
mod storage;

pub use error::{ErrorKind, MlsError};

mod app_inbox;
mod app_message;
mod branch_order;
mod branch_records;
mod buffer_budget;
mod buffering;
mod client;
mod commit_abandonment;
mod commit_log;
mod commit_policy;
mod commit_wait;
mod competing_commit;
mod config;
mod deadlines;
mod deferred_sends;
mod delivery;
mod engine_crypto;
pub mod envelope;
mod epoch_buffer;
mod events;
mod external_commit_branch;
mod external_join;
mod fork_knowledge;
mod fork_resolution;
mod group_id;
mod group_manager;
mod group_meta;
mod group_removal;
mod key_package_manager;
mod key_package_validation;
mod member_verification;
mod message_processor;
mod missing_commit;
mod mls_processing;
mod mls_wire;
mod outbox;
mod outside_window;
mod rejoin_advice;
mod roster;
mod routing;
mod seen_messages;
mod sending;
mod signed_context;
mod snapshot_capture;
mod tick;
mod welcome_branches;
mod welcome_handler;

#[cfg(test)]
mod atomicity_tests;
#[cfg(test)]
mod forged_welcome_tests;
#[cfg(test)]
mod provider_restart_tests;

pub use client::MlsClient;
pub use config::{CIPHERSUITE, MlsConfig};
pub use envelope::{Envelope, EnvelopeId, EnvelopeKind};
pub use events::{
    AbandonReason, DeliveryId, DeliverySource, DeviceAddress, Disposition, Event, MessageId,
    Outbound, OutboxId, Output, OwnChange, Recipients,
};
pub use fork_resolution::ForkReport;
pub use group_id::GroupId;
pub use key_package_manager::{
    KeyPackageState, PoolPolicy, PoolStatus, PublishableKeyPackage, UnknownKeyPackageHint,
};
pub use key_package_validation::{ValidatedKeyPackage, validate_key_package};
pub use rejoin_advice::RejoinAdvice;
