//! `MlsClient`: one device's MLS engine. Opening, the outbox and inbox, the key package pool
//! and the one time per operation live here; the one-operation-one-transaction rule in
//! [`operation`]. Groups, Welcomes, incoming messages and time-driven policy are handled by the
//! operations built on it, which add their methods to the type: `group_manager`,
//! `welcome_handler`, `message_processor`, `tick` and others. This module calls none of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use core_identity::{DeviceIdentity, VerifiedMember};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, MlsGroup, MlsGroupJoinConfig, OpenMlsProvider as _,
    SenderRatchetConfiguration,
};
use spacepanda_core::{Clock, SharedStore, Timestamp, Transaction};

use crate::config::{CIPHERSUITE, MlsConfig};
use crate::deadlines::OperationGuard;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::events::{DeliveryId, Event, Outbound, OutboxId};
use crate::group_id::GroupId;
use crate::key_package_manager::{
    self, DeviceSigner, KeyPackageAuthor, PoolStatus, PublishableKeyPackage, ledger,
};
use crate::member_verification::MemberCache;
use crate::provider::SpacePandaProvider;
use crate::storage::key_layout::GROUP_NAMESPACE;
use crate::{app_inbox, commit_log, outbox, seen_messages};

pub(crate) mod operation;

/// One device's MLS engine. See the [crate docs](crate) for the model.
pub struct MlsClient {
    pub(crate) provider: SpacePandaProvider,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) device: DeviceIdentity,
    pub(crate) credential: CredentialWithKey,
    pub(crate) config: MlsConfig,
    pub(crate) groups: BTreeMap<GroupId, MlsGroup>,
    pub(crate) members: MemberCache,
    /// The verified devices of each group's current tree (see `roster`).
    pub(crate) rosters: std::collections::HashMap<GroupId, crate::roster::Roster>,
    /// Commits refused as older than the fork window, per group (reported by `tick`).
    pub(crate) outside_window: crate::outside_window::OutsideWindowCounts,
    /// What the open operation touched, for its rollback (see `operation`).
    pub(crate) operation: operation::Bookkeeping,
    /// Proposals refused in the current epochs (`tick` gives up on commits that reference one).
    pub(crate) refused: crate::commit_wait::RefusedProposals,
    /// The time of the public operation running, if one runs (see [`now`](Self::now)).
    pub(crate) time: crate::deadlines::OperationTime,
    /// Who delivered the envelope being handled, for its share of the epoch buffer (set by
    /// `handle_envelope_from` for the operation, like `time`).
    pub(crate) source: Option<crate::events::DeliverySource>,
    /// What refused Welcomes taught of their groups' epochs, until an operation that handles
    /// an envelope writes it (see `fork_knowledge::keep_lesson`).
    pub(crate) lessons: Vec<(GroupId, crate::branch_order::BranchHistory)>,
}

impl std::fmt::Debug for MlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsClient")
            .field("user", &self.device.user_id())
            .field("device", &self.device.device_id())
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl MlsClient {
    /// Opens the engine for `device` over `store`: loads every group this device is in, and
    /// makes sure the key package pool is filled (one transaction). Randomness comes from the
    /// operating system.
    pub fn open(
        store: SharedStore,
        clock: Arc<dyn Clock>,
        device: DeviceIdentity,
        config: MlsConfig,
    ) -> Result<Self, MlsError> {
        Self::open_with(SpacePandaProvider::open(store)?, clock, device, config)
    }

    /// Like [`open`](Self::open), but every random draw of the engine and of OpenMLS (leaf and
    /// path secrets, HPKE ephemeral keys, key packages, group and message ids) follows from
    /// `seed`, the way quinn-proto's endpoint takes an `rng_seed`: a test or a simulation that
    /// gives the same seeds, inputs and times gets byte-identical outputs.
    ///
    /// For tests and simulations only. A seed is the whole secret of everything the engine
    /// makes: production uses [`open`](Self::open). Never open one store twice with the same
    /// seed either, or the second run repeats the first one's secrets and message ids.
    pub fn open_seeded(
        store: SharedStore,
        clock: Arc<dyn Clock>,
        device: DeviceIdentity,
        config: MlsConfig,
        seed: [u8; 32],
    ) -> Result<Self, MlsError> {
        Self::open_with(
            SpacePandaProvider::open_seeded(store, seed)?,
            clock,
            device,
            config,
        )
    }

    fn open_with(
        provider: SpacePandaProvider,
        clock: Arc<dyn Clock>,
        device: DeviceIdentity,
        config: MlsConfig,
    ) -> Result<Self, MlsError> {
        // Every snapshot and dormant branch within the fork window references past member
        // lists of up to `max_past_epochs` before its epoch; one more epoch of margin for a
        // rollback that lands on the window's edge.
        provider.storage().set_member_list_retention(
            config
                .fork_window_epochs
                .saturating_add(u64::try_from(config.max_past_epochs).unwrap_or(u64::MAX))
                .saturating_add(2),
        );
        let credential = CredentialWithKey {
            credential: BasicCredential::new(device.credential_bytes().to_vec()).into(),
            signature_key: device.signature_public_key().to_vec().into(),
        };
        let mut client = Self {
            provider,
            clock,
            device,
            credential,
            config,
            groups: BTreeMap::new(),
            members: MemberCache::default(),
            rosters: std::collections::HashMap::new(),
            outside_window: crate::outside_window::OutsideWindowCounts::default(),
            operation: operation::Bookkeeping::default(),
            refused: crate::commit_wait::RefusedProposals::default(),
            time: crate::deadlines::OperationTime::default(),
            source: None,
            lessons: Vec::new(),
        };
        let time = client.operation();
        client.reload_all_groups()?;
        client.transaction(None, |client| {
            client.replenish_key_packages_in_txn().map(|_| ())
        })?;
        drop(time);
        Ok(client)
    }

    /// This device.
    pub fn device(&self) -> &DeviceIdentity {
        &self.device
    }

    /// The engine's configuration.
    pub fn config(&self) -> &MlsConfig {
        &self.config
    }

    /// The time the engine decides by: while an operation runs, the one time it started at
    /// (the time given to [`tick`](Self::tick)); otherwise the clock's. See `deadlines`.
    pub fn now(&self) -> Timestamp {
        self.time.current().unwrap_or_else(|| self.clock.now())
    }

    /// Starts a public operation: until the guard drops, [`now`](Self::now) is the clock's
    /// time read here (or the enclosing operation's).
    pub(crate) fn operation(&self) -> OperationGuard {
        self.time.pin(|| self.clock.now())
    }

    /// Starts a public operation that runs at `at` (`tick`).
    pub(crate) fn operation_at(&self, at: Timestamp) -> OperationGuard {
        self.time.pin(|| at)
    }

    pub(crate) fn join_config(&self) -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .max_past_epochs(self.config.max_past_epochs)
            .sender_ratchet_configuration(SenderRatchetConfiguration::new(
                self.config.out_of_order_tolerance,
                self.config.max_forward_distance,
            ))
            .use_ratchet_tree_extension(true)
            .build()
    }

    /// Reloads every group from storage: the groups in memory become exactly what is stored.
    pub(crate) fn reload_all_groups(&mut self) -> Result<(), MlsError> {
        self.groups.clear();
        self.rosters.clear();
        for group_id in self.provider.storage().list_groups()? {
            self.reload_group(&GroupId::from_openmls(&group_id))?;
        }
        Ok(())
    }

    /// Runs `f` on the open transaction (our own records share it with OpenMLS's writes).
    pub(crate) fn with_txn<R>(
        &self,
        f: impl FnOnce(&mut Transaction) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        self.provider.storage().with_transaction(f)
    }

    /// Reads through the open transaction if there is one (so reads see its writes), else
    /// straight from the store.
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        let storage = self.provider.storage();
        if storage.in_transaction() {
            storage.with_transaction(|txn| f(txn))
        } else {
            f(&Transaction::begin(storage.store()))
        }
    }

    /// What an OpenMLS call on `group` needs: the provider, the group, and our signer —
    /// borrowed together, since they are separate fields of the client.
    pub(crate) fn openmls_parts(
        &mut self,
        group: &GroupId,
    ) -> Result<(&SpacePandaProvider, &mut MlsGroup, DeviceSigner<'_>), MlsError> {
        self.touch(group);
        let mls_group = self
            .groups
            .get_mut(group)
            .ok_or_else(|| MlsError::UnknownGroup {
                group: group.clone(),
            })?;
        Ok((
            &self.provider,
            mls_group,
            DeviceSigner(self.device.signature_key_pair()),
        ))
    }

    /// Reloads `group` from storage (or forgets it if storage has none of it). Storage that
    /// holds some of the group's entries but not a loadable group is damaged or tampered with:
    /// [`MlsError::CorruptedState`], never a group silently forgotten.
    pub(crate) fn reload_group(&mut self, group: &GroupId) -> Result<(), MlsError> {
        // Loaded from an open transaction, it is what that transaction holds: a rollback of it
        // reloads the group again.
        self.touch(group);
        // A reloaded group may be a different state at the same epoch number.
        self.rosters.remove(group);
        match MlsGroup::load(self.provider.storage(), &group.to_openmls())
            .map_err(|e| MlsError::openmls("load a group", e))?
        {
            Some(loaded) => {
                self.groups.insert(group.clone(), loaded);
            }
            None => {
                if !self
                    .provider
                    .storage()
                    .group_entries(&group.to_openmls())?
                    .is_empty()
                {
                    return Err(MlsError::CorruptedState {
                        namespace: GROUP_NAMESPACE,
                        reason: "a group's stored state is incomplete (an entry is missing); \
                                 restore the device from a backup or rejoin the group",
                    });
                }
                self.groups.remove(group);
            }
        }
        Ok(())
    }

    /// Queues `envelope` for `to` in the outbox (same transaction) and records its id as seen,
    /// so an echo of it is recognised.
    pub(crate) fn queue_outbound(
        &self,
        to: crate::events::Recipients,
        envelope: crate::envelope::Envelope,
    ) -> Result<Outbound, MlsError> {
        let now = self.now();
        // Every own commit is queued here, in the transaction that merged it.
        if envelope.kind() == crate::envelope::EnvelopeKind::Commit
            && let Some(group) = &to.group
            && let Some(epoch) = commit_log::commit_epoch(&envelope)
        {
            self.log_merged_commit(group, epoch, &envelope)?;
        }
        self.with_txn(|txn| {
            seen_messages::record_envelope(txn, envelope.seen_id(), now)?;
            outbox::push(txn, to, envelope)
        })
    }

    /// Inside the open transaction: records the commit of `epoch` that was just merged.
    pub(crate) fn log_merged_commit(
        &self,
        group: &GroupId,
        epoch: u64,
        envelope: &Envelope,
    ) -> Result<(), MlsError> {
        let keep = self.config.fork_window_epochs;
        let now = self.now();
        self.with_txn(|txn| commit_log::record_merged(txn, group, epoch, envelope, keep, now))
    }

    /// The envelope bytes of the commits this device merged in `group` from epoch
    /// `from_epoch` on, oldest first, as far back as `fork_window_epochs`: what a member that
    /// reported [`Event::MissingCommit`](crate::Event::MissingCommit) for `from_epoch` needs
    /// to catch up (each one is an ordinary envelope for
    /// [`handle_envelope`](Self::handle_envelope)). Commits older than that are not kept, and
    /// the list stops at the first epoch this device did not merge a commit of (it joined
    /// later, or rolled back). Reads only.
    pub fn recent_commits(
        &self,
        group: &GroupId,
        from_epoch: u64,
    ) -> Result<Vec<Vec<u8>>, MlsError> {
        let current = self.epoch(group)?;
        self.read(|txn| commit_log::recent(txn, group, from_epoch, current))
    }

    /// Envelopes produced but not yet acknowledged with [`ack_sent`](Self::ack_sent), oldest
    /// first. After a restart, send these again.
    pub fn pending_outbound(&self) -> Result<Vec<Outbound>, MlsError> {
        self.read(|txn| outbox::pending(txn, self.config.max_envelope_len))
    }

    /// The network layer delivered (or durably queued) outbox entry `id`: forget it.
    /// Returns whether it was still pending.
    pub fn ack_sent(&mut self, id: OutboxId) -> Result<bool, MlsError> {
        self.transaction(None, |client| client.with_txn(|txn| outbox::ack(txn, id)))
    }

    /// Application messages delivered (as `Event::Message`) but not yet acknowledged with
    /// [`ack_delivered`](Self::ack_delivered), oldest first. After a restart, hand these to the
    /// application again; the sender's message id identifies a redelivery.
    pub fn pending_delivered(&mut self) -> Result<Vec<Event>, MlsError> {
        let storage = self.provider.storage();
        if storage.in_transaction() {
            return Err(MlsError::Internal {
                what: "pending_delivered called inside an operation",
            });
        }
        let txn = Transaction::begin(storage.store());
        app_inbox::pending(&txn, &mut self.members)
    }

    /// The application stored delivered message `id`: forget it. Returns whether it was pending.
    pub fn ack_delivered(&mut self, id: DeliveryId) -> Result<bool, MlsError> {
        self.transaction(None, |client| {
            client.with_txn(|txn| app_inbox::ack(txn, id))
        })
    }

    /// [`ack_delivered`](Self::ack_delivered) for many messages, in one transaction (after
    /// [`handle_envelopes`](Self::handle_envelopes)). Returns how many were pending.
    pub fn ack_delivered_all(&mut self, ids: &[DeliveryId]) -> Result<usize, MlsError> {
        self.transaction(None, |client| {
            client.with_txn(|txn| {
                let mut pending = 0;
                for id in ids {
                    pending += usize::from(app_inbox::ack(txn, *id)?);
                }
                Ok(pending)
            })
        })
    }

    /// Group ids this device is a member of.
    pub fn groups(&self) -> Vec<GroupId> {
        self.groups.keys().cloned().collect()
    }

    pub(crate) fn group(&self, group: &GroupId) -> Result<&MlsGroup, MlsError> {
        self.groups
            .get(group)
            .ok_or_else(|| MlsError::UnknownGroup {
                group: group.clone(),
            })
    }

    /// The group's current epoch.
    pub fn epoch(&self, group: &GroupId) -> Result<u64, MlsError> {
        Ok(self.group(group)?.epoch().as_u64())
    }

    /// The group's epoch authenticator: equal on every member that agrees on the epoch.
    pub fn epoch_authenticator(&self, group: &GroupId) -> Result<Vec<u8>, MlsError> {
        Ok(self.group(group)?.epoch_authenticator().as_slice().to_vec())
    }

    /// Every member device of the group, identity-verified.
    pub fn members(&mut self, group: &GroupId) -> Result<Vec<VerifiedMember>, MlsError> {
        let members: Vec<_> = self.group(group)?.members().collect();
        members
            .iter()
            .map(|m| self.members.verify(&m.credential, &m.signature_key))
            .collect()
    }

    // ---- key packages -------------------------------------------------------------------

    pub(crate) fn key_package_author(&self) -> KeyPackageAuthor<'_, DeviceSigner<'_>> {
        KeyPackageAuthor {
            ciphersuite: CIPHERSUITE,
            signer: DeviceSigner(self.device.signature_key_pair()),
            credential: &self.credential,
        }
    }

    /// Tops the pool up inside the open transaction; returns how many fresh packages were made.
    pub(crate) fn replenish_key_packages_in_txn(&mut self) -> Result<usize, MlsError> {
        self.replenish_key_packages_at(self.now())
    }

    /// [`replenish_key_packages_in_txn`](Self::replenish_key_packages_in_txn) at `now` (the
    /// time `tick` was given, so rotation, pruning and refill agree on it).
    pub(crate) fn replenish_key_packages_at(&mut self, now: Timestamp) -> Result<usize, MlsError> {
        let entries = self.with_txn(|txn| ledger::load_all(txn))?;
        let (fresh_needed, last_resort_needed) =
            key_package_manager::replenish_plan(&entries, &self.config.key_packages, now);
        let author = self.key_package_author();
        let mut made = Vec::with_capacity(fresh_needed + 1);
        // `fresh_needed` single-use packages, then the last-resort one if there is none.
        let kinds =
            std::iter::repeat_n(false, fresh_needed).chain(last_resort_needed.then_some(true));
        for last_resort in kinds {
            made.push(key_package_manager::build_key_package(
                &self.provider,
                &author,
                &self.config.key_packages,
                last_resort,
                now,
            )?);
        }
        self.with_txn(|txn| made.iter().try_for_each(|entry| ledger::store(txn, entry)))?;
        Ok(fresh_needed)
    }

    /// Tops the key package pool up to its target (one transaction) if it is below the low
    /// watermark or has no last-resort package. Returns how many fresh packages were made.
    pub fn replenish_key_packages(&mut self) -> Result<usize, MlsError> {
        let _time = self.operation();
        self.transaction(None, Self::replenish_key_packages_in_txn)
    }

    /// Key packages to publish in the directory (fresh and published ones, the current
    /// last-resort one marked).
    pub fn publishable_key_packages(&self) -> Result<Vec<PublishableKeyPackage>, MlsError> {
        let entries = self.read(ledger::load_all)?;
        Ok(key_package_manager::publishable(&entries, self.now()))
    }

    /// The network layer published these key packages.
    pub fn mark_key_packages_published(&mut self, refs: &[Vec<u8>]) -> Result<usize, MlsError> {
        let now = self.now();
        self.transaction(None, |client| {
            client.with_txn(|txn| {
                key_package_manager::mark(
                    txn,
                    refs,
                    &[ledger::KeyPackageState::Fresh],
                    ledger::KeyPackageState::Published,
                    now,
                )
            })
        })
    }

    /// Someone announced they used this key package: stop offering it.
    pub fn mark_key_package_claimed(&mut self, key_package_ref: &[u8]) -> Result<bool, MlsError> {
        self.mark_key_packages_claimed(&[key_package_ref.to_vec()])
            .map(|n| n > 0)
    }

    /// [`mark_key_package_claimed`](Self::mark_key_package_claimed) for several packages, in one
    /// transaction (e.g. after a directory sync). Returns how many changed state; an unknown
    /// ref fails the whole call ([`MlsError::UnknownKeyPackage`]) and changes nothing. The pool
    /// is not refilled here: [`replenish_key_packages`](Self::replenish_key_packages) or
    /// [`tick`](Self::tick) does that.
    pub fn mark_key_packages_claimed(&mut self, refs: &[Vec<u8>]) -> Result<usize, MlsError> {
        let now = self.now();
        self.transaction(None, |client| {
            client.with_txn(|txn| {
                key_package_manager::mark(
                    txn,
                    refs,
                    &[
                        ledger::KeyPackageState::Fresh,
                        ledger::KeyPackageState::Published,
                    ],
                    ledger::KeyPackageState::Claimed,
                    now,
                )
            })
        })
    }

    /// The key package pool, as a UI shows it.
    pub fn key_package_status(&self) -> Result<PoolStatus, MlsError> {
        let entries = self.read(ledger::load_all)?;
        Ok(key_package_manager::status(
            &entries,
            &self.config.key_packages,
            self.now(),
        ))
    }
}
