//! Group operations this device starts that change the group: create, add, remove,
//! self-update, leave. Sending a message is `sending`'s.
//!
//! Each is one transaction ([`MlsClient::transaction`]): OpenMLS's writes, our metadata and the
//! outbox entries for the produced envelopes commit together before anything is returned —
//! including what a commit sets off (messages deferred while proposals were pending, sent in the
//! new epoch) and, for a send while proposals are pending, the commit that comes first.

use core_identity::{DeviceId, UserId, VerifiedMember};
use std::time::Duration;

use openmls::prelude::{
    LeafNodeIndex, LeafNodeParameters, Lifetime, MlsGroup, OpenMlsProvider as _,
};
use openmls_traits::random::OpenMlsRand as _;

use crate::branch_order::CommitRank;
use crate::branch_records::BranchRecords;
use crate::branch_records::epoch_snapshots::{self, OwnCommit};
use crate::client::MlsClient;
use crate::config::CIPHERSUITE;
use crate::envelope::EnvelopeKind;
use crate::error::MlsError;
use crate::events::{DeviceAddress, Event, Output, Recipients};
use crate::group_id::GroupId;
use crate::key_package_manager::DeviceSigner;
use crate::mls_wire::encode_message;
use crate::roster::Roster;
use crate::{branch_order, key_package_validation};

/// The rank of our pending commit (see `branch_order`): its commit ref is the confirmed
/// transcript hash of the epoch it creates. Called before the commit is merged, in the epoch it
/// was made in.
fn own_rank(group: &MlsGroup) -> Result<CommitRank, MlsError> {
    let commit = group.pending_commit().ok_or(MlsError::Internal {
        what: "an own commit was made but none is pending",
    })?;
    let committer = group.own_leaf_index().u32();
    Ok(CommitRank {
        commit_ref: commit.group_context().confirmed_transcript_hash().to_vec(),
        committer,
        removes: commit
            .remove_proposals()
            .map(|r| r.remove_proposal().removed().u32())
            .collect(),
        priority: branch_order::priority(&branch_order::branch_tag(group), committer),
    })
}

impl MlsClient {
    /// Creates a group with this device as its only member. One transaction.
    pub fn create_group(&mut self) -> Result<GroupId, MlsError> {
        let _time = self.operation();
        let raw_id = self
            .provider
            .rand()
            .random_vec(32)
            .map_err(|e| MlsError::openmls("draw a group id", e))?;
        let group_id = GroupId::from_slice(&raw_id);
        let now = self.now();
        self.transaction(Some(&group_id.clone()), |client| {
            let group = MlsGroup::builder()
                .with_group_id(group_id.to_openmls())
                .ciphersuite(CIPHERSUITE)
                .max_past_epochs(client.config.max_past_epochs)
                .sender_ratchet_configuration(*client.join_config().sender_ratchet_configuration())
                .use_ratchet_tree_extension(true)
                // The founder's leaf lifetime from our clock, as for key packages: OpenMLS's
                // default reads the system time, which would make the group's first epoch
                // differ between two runs of one seed.
                .lifetime(Lifetime::init(
                    now.saturating_sub(Duration::from_secs(60 * 60)).unix_secs(),
                    now.saturating_add(client.config.key_packages.lifetime)
                        .unix_secs(),
                ))
                .build(
                    &client.provider,
                    &DeviceSigner(client.device.signature_key_pair()),
                    client.credential.clone(),
                )
                .map_err(|e| MlsError::openmls("create a group", e))?;
            client.touch(&group_id);
            client.groups.insert(group_id.clone(), group);
            client.record_leaf_update(&group_id, now)?;
            Ok(())
        })?;
        Ok(group_id)
    }

    /// Adds the devices whose key packages (TLS-encoded MLS messages, as published) are given.
    /// Every package is validated first — decode, OpenMLS validation, lifetime against our
    /// clock, ciphersuite, SpacePanda identity binding — and a device already in the group is
    /// refused. Returns the commit for the current members and the Welcome for the new ones.
    pub fn add_members(
        &mut self,
        group: &GroupId,
        key_packages: &[Vec<u8>],
    ) -> Result<Output, MlsError> {
        let _time = self.operation();
        self.transaction(Some(group), |client| {
            client.add_members_steps(group, key_packages)
        })
    }

    fn add_members_steps(
        &mut self,
        group: &GroupId,
        key_packages: &[Vec<u8>],
    ) -> Result<Output, MlsError> {
        if key_packages.is_empty() {
            return Err(MlsError::InvalidArgument {
                reason: "add_members needs at least one key package",
            });
        }
        self.ensure_can_commit(group)?;
        let now = self.now();
        let mut validated = Vec::with_capacity(key_packages.len());
        for bytes in key_packages {
            validated.push(key_package_validation::validate(
                bytes,
                &self.provider,
                now,
                self.config.max_envelope_len,
                &mut self.members,
            )?);
        }
        let current = self.roster(group)?;
        for (index, (_, member)) in validated.iter().enumerate() {
            let device = DeviceAddress::from(member);
            let twice = validated
                .iter()
                .skip(index + 1)
                .any(|(_, m)| DeviceAddress::from(m) == device);
            if twice || current.contains(&device) {
                return Err(MlsError::AlreadyMember {
                    user_id: member.user_id(),
                    device_id: member.device_id(),
                });
            }
        }
        let recipients = self.other_member_devices(group)?;
        let me = self.own_verified_member()?;
        let key_packages_bytes = key_packages.to_vec();
        // OpenMLS commits the pending proposals too (a member's leave among them).
        let carried = device_pairs(&self.pending_removals(group)?);
        let output = self.transaction(Some(group), |client| {
            let key_packages: Vec<_> = validated.iter().map(|(kp, _)| kp.clone()).collect();
            let snapshot = client.begin_snapshot(group)?;
            let (provider, mls_group, signer) = client.openmls_parts(group)?;
            branch_order::tag_outgoing(mls_group);
            let bundle = stage_commit(provider, mls_group, &signer, "add members", |builder| {
                builder
                    .propose_adds(key_packages.iter().cloned())
                    .force_self_update(true)
            })?;
            let welcome = bundle.to_welcome_msg().ok_or(MlsError::Internal {
                what: "OpenMLS made an add commit without a Welcome",
            })?;
            let commit = bundle.commit();
            let rank = own_rank(mls_group)?;
            let commit_epoch = mls_group.epoch().as_u64();
            mls_group
                .merge_pending_commit(provider)
                .map_err(|e| MlsError::openmls("merge our commit", e))?;
            let epoch = mls_group.epoch().as_u64();
            let commit = client.commit_envelope(group, commit_epoch, &rank, commit)?;
            client.finish_snapshot(
                group,
                snapshot,
                rank,
                commit.to_bytes(),
                Some(OwnCommit::Add {
                    key_packages: key_packages_bytes.clone(),
                }),
                None,
            )?;
            client.record_carried_removals(group, commit_epoch, carried.clone())?;
            client.record_leaf_update(group, now)?;
            let mut output = Output::default();
            if !recipients.is_empty() {
                output.outbound.push(client.queue_outbound(
                    Recipients {
                        group: Some(group.clone()),
                        devices: recipients.clone(),
                    },
                    commit,
                )?);
            }
            let welcome = client.welcome_envelope(group, epoch, &welcome)?;
            let invited: Vec<DeviceAddress> = validated
                .iter()
                .map(|(_, m)| DeviceAddress::from(m))
                .collect();
            client.with_txn(|txn| {
                let sent = epoch_snapshots::SentWelcome {
                    payload: welcome.payload().to_vec(),
                    to: invited
                        .iter()
                        .map(|d| (*d.user_id.as_bytes(), *d.device_id.as_bytes()))
                        .collect(),
                };
                BranchRecords::of(txn, group).sent_welcome(commit_epoch, &sent)
            })?;
            output.outbound.push(client.queue_outbound(
                Recipients {
                    group: Some(group.clone()),
                    devices: invited,
                },
                welcome,
            )?);
            output.events.push(Event::MembersAdded {
                group: group.clone(),
                by: me.clone(),
                members: validated.iter().map(|(_, m)| m.clone()).collect(),
            });
            output.events.push(Event::EpochAdvanced {
                group: group.clone(),
                epoch,
            });
            Ok(output)
        })?;
        self.after_commit(group, output)
    }

    /// Removes every device of `user` from the group.
    pub fn remove_user(&mut self, group: &GroupId, user: &UserId) -> Result<Output, MlsError> {
        self.remove_where(group, |m| m.user_id() == *user)
    }

    /// Removes one device of a user from the group.
    pub fn remove_device(
        &mut self,
        group: &GroupId,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Output, MlsError> {
        self.remove_where(group, |m| m.user_id() == *user && m.device_id() == *device)
    }

    pub(crate) fn remove_where(
        &mut self,
        group: &GroupId,
        selected: impl Fn(&VerifiedMember) -> bool,
    ) -> Result<Output, MlsError> {
        let _time = self.operation();
        self.transaction(Some(group), |client| {
            client.remove_where_steps(group, selected)
        })
    }

    fn remove_where_steps(
        &mut self,
        group: &GroupId,
        selected: impl Fn(&VerifiedMember) -> bool,
    ) -> Result<Output, MlsError> {
        self.ensure_can_commit(group)?;
        let own_index = self.group(group)?.own_leaf_index();
        let leaves: Vec<_> = self.group(group)?.members().collect();
        let mut removed = Vec::new();
        for leaf in &leaves {
            let member = self.members.verify(&leaf.credential, &leaf.signature_key)?;
            if selected(&member) {
                if leaf.index == own_index {
                    return Err(MlsError::InvalidArgument {
                        reason: "a device cannot remove itself; use leave_group",
                    });
                }
                removed.push((leaf.index, member));
            }
        }
        if removed.is_empty() {
            return Err(MlsError::NotAMember {
                group: group.clone(),
                what: "no member matches",
            });
        }
        let recipients = self.other_member_devices(group)?;
        let me = self.own_verified_member()?;
        let now = self.now();
        let intent = OwnCommit::Remove {
            devices: device_pairs(removed.iter().map(|(_, m)| m)),
        };
        let carried = device_pairs(&self.pending_removals(group)?);
        let output = self.transaction(Some(group), |client| {
            let indices: Vec<LeafNodeIndex> = removed.iter().map(|(index, _)| *index).collect();
            let snapshot = client.begin_snapshot(group)?;
            let (provider, mls_group, signer) = client.openmls_parts(group)?;
            branch_order::tag_outgoing(mls_group);
            let bundle = stage_commit(provider, mls_group, &signer, "remove members", |builder| {
                builder.propose_removals(indices.iter().copied())
            })?;
            let commit = bundle.commit();
            let rank = own_rank(mls_group)?;
            let commit_epoch = mls_group.epoch().as_u64();
            mls_group
                .merge_pending_commit(provider)
                .map_err(|e| MlsError::openmls("merge our commit", e))?;
            let epoch = mls_group.epoch().as_u64();
            let commit = client.commit_envelope(group, commit_epoch, &rank, commit)?;
            client.finish_snapshot(group, snapshot, rank, commit.to_bytes(), Some(intent), None)?;
            client.record_carried_removals(group, commit_epoch, carried.clone())?;
            client.record_leaf_update(group, now)?;
            let outbound = client.queue_outbound(
                Recipients {
                    group: Some(group.clone()),
                    devices: recipients,
                },
                commit,
            )?;
            Ok(Output {
                outbound: vec![outbound],
                events: vec![
                    Event::MembersRemoved {
                        group: group.clone(),
                        by: me,
                        members: removed.into_iter().map(|(_, m)| m).collect(),
                    },
                    Event::EpochAdvanced {
                        group: group.clone(),
                        epoch,
                    },
                ],
                ..Output::default()
            })
        })?;
        self.after_commit(group, output)
    }

    /// Commits a fresh leaf for this device (post-compromise security); also commits any
    /// pending proposals (e.g. someone leaving).
    pub fn self_update(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let _time = self.operation();
        self.transaction(Some(group), |client| client.self_update_steps(group))
    }

    fn self_update_steps(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        self.ensure_can_commit(group)?;
        let recipients = self.other_member_devices(group)?;
        let removed_by_pending = self.pending_removals(group)?;
        let me = self.own_verified_member()?;
        let now = self.now();
        let output = self.transaction(Some(group), |client| {
            let snapshot = client.begin_snapshot(group)?;
            let (provider, mls_group, signer) = client.openmls_parts(group)?;
            branch_order::tag_outgoing(mls_group);
            let bundle = stage_commit(provider, mls_group, &signer, "self-update", |builder| {
                builder
                    .leaf_node_parameters(LeafNodeParameters::default())
                    .consume_proposal_store(true)
            })?;
            let rank = own_rank(mls_group)?;
            let commit_epoch = mls_group.epoch().as_u64();
            mls_group
                .merge_pending_commit(provider)
                .map_err(|e| MlsError::openmls("merge our commit", e))?;
            let epoch = mls_group.epoch().as_u64();
            let commit = client.commit_envelope(group, commit_epoch, &rank, bundle.commit())?;
            client.finish_snapshot(
                group,
                snapshot,
                rank,
                commit.to_bytes(),
                Some(OwnCommit::SelfUpdate),
                None,
            )?;
            client.record_carried_removals(
                group,
                commit_epoch,
                device_pairs(&removed_by_pending),
            )?;
            client.record_leaf_update(group, now)?;
            let mut output = Output::default();
            if !recipients.is_empty() {
                output.outbound.push(client.queue_outbound(
                    Recipients {
                        group: Some(group.clone()),
                        devices: recipients,
                    },
                    commit,
                )?);
            }
            if !removed_by_pending.is_empty() {
                output.events.push(Event::MembersRemoved {
                    group: group.clone(),
                    by: me,
                    members: removed_by_pending,
                });
            }
            output.events.push(Event::EpochAdvanced {
                group: group.clone(),
                epoch,
            });
            Ok(output)
        })?;
        self.after_commit(group, output)
    }

    /// After one of our commits, in its transaction: messages the app sent while proposals were
    /// pending go out in the new epoch.
    fn after_commit(&mut self, group: &GroupId, mut output: Output) -> Result<Output, MlsError> {
        output.extend(self.send_deferred(group)?);
        Ok(output)
    }

    /// Asks to leave the group: sends a Remove proposal for this device. The next commit by any
    /// member includes it; the member with the lowest leaf index commits it at its next `tick`,
    /// so the leave does not wait for unrelated activity. This device keeps the group
    /// until that commit arrives (then `RemovedFromGroup`).
    pub fn leave_group(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let _time = self.operation();
        self.transaction(Some(group), |client| client.leave_group_steps(group))
    }

    fn leave_group_steps(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let recipients = self.other_member_devices(group)?;
        if recipients.is_empty() {
            // Alone: nobody could commit the proposal; just forget the group.
            self.transaction(Some(group), |client| client.forget_group(group))?;
            return Ok(Output {
                events: vec![Event::RemovedFromGroup {
                    group: group.clone(),
                    by: None,
                }],
                ..Output::default()
            });
        }
        self.transaction(Some(group), |client| {
            client.with_txn(|txn| BranchRecords::of(txn, group).leave_requested())?;
            let (provider, mls_group, signer) = client.openmls_parts(group)?;
            branch_order::tag_outgoing(mls_group);
            let proposal = mls_group
                .leave_group(provider, &signer)
                .map_err(|e| MlsError::openmls("propose to leave", e))?;
            let outbound = client.queue_outbound(
                Recipients {
                    group: Some(group.clone()),
                    devices: recipients,
                },
                encode_message(EnvelopeKind::Proposal, &proposal)?,
            )?;
            Ok(Output {
                outbound: vec![outbound],
                ..Output::default()
            })
        })
    }

    // The group's members as this device verified them: read by sends and by commits.

    /// Every member device except this one, verified.
    pub(crate) fn other_member_devices(
        &mut self,
        group: &GroupId,
    ) -> Result<Vec<DeviceAddress>, MlsError> {
        Ok(self.roster(group)?.others())
    }

    /// The verified devices of `group`'s current tree, built once per tree (`roster`).
    pub(crate) fn roster(&mut self, group: &GroupId) -> Result<&Roster, MlsError> {
        let mls_group = self
            .groups
            .get(group)
            .ok_or_else(|| MlsError::UnknownGroup {
                group: group.clone(),
            })?;
        let fresh = match self.rosters.get(group) {
            Some(roster) if roster.is_of(mls_group) => None,
            _ => Some(Roster::build(mls_group, &mut self.members)?),
        };
        if let Some(roster) = fresh {
            self.rosters.insert(group.clone(), roster);
        }
        self.rosters.get(group).ok_or(MlsError::Internal {
            what: "a group's roster was not kept",
        })
    }

    pub(crate) fn own_verified_member(&self) -> Result<VerifiedMember, MlsError> {
        self.device
            .verify_self()
            .map_err(|reason| MlsError::UnverifiedMember { reason })
    }
}

/// Builds and stages a commit with what `propose` adds, without the GroupInfo OpenMLS would
/// otherwise export with every commit (`use_ratchet_tree_extension` makes it the default):
/// nothing sends that one (members export a GroupInfo on request, `external_join`), and it
/// costs a ratchet tree export and a signature per commit. A Welcome still carries its own.
fn stage_commit<'a>(
    provider: &crate::provider::SpacePandaProvider,
    mls_group: &'a mut MlsGroup,
    signer: &DeviceSigner<'_>,
    what: &'static str,
    propose: impl FnOnce(
        openmls::group::CommitBuilder<'a, openmls::group::Initial>,
    ) -> openmls::group::CommitBuilder<'a, openmls::group::Initial>,
) -> Result<openmls::group::CommitMessageBundle, MlsError> {
    propose(mls_group.commit_builder())
        .load_psks(provider.storage())
        .map_err(|e| MlsError::openmls(what, e))?
        .create_group_info(false)
        .build(provider.rand(), provider.crypto(), signer, |_| true)
        .map_err(|e| MlsError::openmls(what, e))?
        .stage_commit(provider)
        .map_err(|e| MlsError::openmls(what, e))
}

impl MlsClient {
    /// Inside the open transaction, after `finish_snapshot` of the own commit out of `epoch`:
    /// the devices it removed by pending proposals it carried (see
    /// `SnapshotMeta::carried_removals`).
    fn record_carried_removals(
        &self,
        group: &GroupId,
        epoch: u64,
        devices: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), MlsError> {
        self.with_txn(|txn| BranchRecords::of(txn, group).carried_removals(epoch, devices))
    }
}

/// `(user id, device id)` bytes of `members`, as [`OwnCommit`] and the snapshot metadata
/// record devices.
fn device_pairs<'a>(
    members: impl IntoIterator<Item = &'a VerifiedMember>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    members
        .into_iter()
        .map(|m| {
            (
                m.user_id().as_bytes().to_vec(),
                m.device_id().as_bytes().to_vec(),
            )
        })
        .collect()
}
