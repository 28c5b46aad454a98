//! `openmls_traits::storage::StorageProvider<1>` for [`KvStorageProvider`]: the 53 methods,
//! each one key (or one prefix) of the layout in [`key_layout`](super::key_layout).

use openmls_traits::storage::{CURRENT_VERSION, StorageProvider, traits};
use serde::Serialize;
use serde::de::IgnoredAny;
use spacepanda_core::Key;

use super::key_layout::{
    self, ENCRYPTION_KEY_NAMESPACE, GROUP_NAMESPACE, KEY_PACKAGE_NAMESPACE, PSK_NAMESPACE,
    SIGNATURE_KEY_NAMESPACE, label,
};
use super::{KvStorageProvider, epoch_members};
use crate::error::MlsError;

/// `["g", group_id, label]`.
fn group_key<G: Serialize>(group_id: &G, label: &str) -> Result<Key, MlsError> {
    Ok(key_layout::group_key(
        &key_layout::byte_string(group_id)?,
        label,
    ))
}

/// `["g", group_id, "epoch_key_pairs", epoch, leaf_index]`.
fn epoch_key_pairs_key<G: Serialize, E: Serialize>(
    group_id: &G,
    epoch: &E,
    leaf_index: u32,
) -> Result<Key, MlsError> {
    Ok(group_key(group_id, label::EPOCH_KEY_PAIRS)?
        .with(key_layout::number(epoch)?)
        .with(leaf_index.to_be_bytes()))
}

/// `[bytes]` in a namespace keyed by a byte-string key.
fn bytes_key<K: Serialize>(key: &K) -> Result<Key, MlsError> {
    Ok(Key::from_segment(key_layout::byte_string(key)?))
}

fn psk_key<K: Serialize>(psk_id: &K) -> Result<Key, MlsError> {
    Ok(Key::from_segment(key_layout::structured(psk_id)?))
}

impl KvStorageProvider {
    fn write_group_value<G: Serialize, V: Serialize>(
        &self,
        operation: &'static str,
        group_id: &G,
        label: &str,
        value: &V,
    ) -> Result<(), MlsError> {
        self.put_value(
            operation,
            GROUP_NAMESPACE,
            group_key(group_id, label)?,
            value,
        )
    }

    fn read_group_value<G: Serialize, V: serde::de::DeserializeOwned>(
        &self,
        group_id: &G,
        label: &str,
    ) -> Result<Option<V>, MlsError> {
        self.get_value(GROUP_NAMESPACE, &group_key(group_id, label)?)
    }

    fn delete_group_value<G: Serialize>(
        &self,
        operation: &'static str,
        group_id: &G,
        label: &str,
    ) -> Result<(), MlsError> {
        self.delete_key(operation, GROUP_NAMESPACE, group_key(group_id, label)?)
    }

    /// Writes OpenMLS's message secrets store split (`epoch_members`): the lists of past epochs
    /// not stored yet, the record with references, and the group's index, in the open
    /// transaction.
    fn write_message_secrets_split<G: Serialize, V: Serialize>(
        &self,
        group_id: &G,
        value: &V,
    ) -> Result<(), MlsError> {
        #[cfg(test)]
        if self
            .write_format_1
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return self.write_group_value(
                "write_message_secrets",
                group_id,
                label::MESSAGE_SECRETS,
                value,
            );
        }
        let group = key_layout::byte_string(group_id)?;
        let index = match self.read(
            epoch_members::INDEX_NAMESPACE,
            &epoch_members::index_key(&group),
        )? {
            Some(bytes) => epoch_members::decode_index(&bytes)?,
            None => epoch_members::Index::new(),
        };
        let split = self.noted(epoch_members::encode_split(value, &|hash| {
            index.contains_key(hash)
        }))?;
        let retention = self.member_list_retention();
        let key = key_layout::group_key(&group, label::MESSAGE_SECRETS);
        self.with_txn("write_message_secrets", |txn| {
            epoch_members::store_lists(txn, &group, index, &split, retention)?;
            txn.put(GROUP_NAMESPACE, key, split.record.to_vec())?;
            Ok(())
        })
    }

    /// Reads OpenMLS's message secrets store, splicing the referenced lists back in.
    fn read_message_secrets_split<G: Serialize, V: serde::de::DeserializeOwned>(
        &self,
        group_id: &G,
    ) -> Result<Option<V>, MlsError> {
        let group = key_layout::byte_string(group_id)?;
        let key = key_layout::group_key(&group, label::MESSAGE_SECRETS);
        let Some(bytes) = self.read(GROUP_NAMESPACE, &key)? else {
            return Ok(None);
        };
        let value = epoch_members::decode_split(GROUP_NAMESPACE, &bytes, &mut |hash| {
            self.read(
                epoch_members::MEMBERS_NAMESPACE,
                &epoch_members::list_key(&group, hash),
            )
        });
        self.noted(value).map(Some)
    }
}

/// The writer, reader and deleter of one single-valued piece of group state (27 of the 53
/// methods are this shape): `$write<GroupId, $Value>`, `$read<GroupId, $Value>`,
/// `$delete<GroupId>`, all on the key `["g", group_id, $label]`.
macro_rules! group_value {
    ($write:ident, $read:ident, $delete:ident, $Value:ident, $label:expr) => {
        fn $write<
            GroupId: traits::GroupId<CURRENT_VERSION>,
            $Value: traits::$Value<CURRENT_VERSION>,
        >(
            &self,
            group_id: &GroupId,
            value: &$Value,
        ) -> Result<(), Self::Error> {
            self.write_group_value(stringify!($write), group_id, $label, value)
        }

        fn $read<
            GroupId: traits::GroupId<CURRENT_VERSION>,
            $Value: traits::$Value<CURRENT_VERSION>,
        >(
            &self,
            group_id: &GroupId,
        ) -> Result<Option<$Value>, Self::Error> {
            self.read_group_value(group_id, $label)
        }

        fn $delete<GroupId: traits::GroupId<CURRENT_VERSION>>(
            &self,
            group_id: &GroupId,
        ) -> Result<(), Self::Error> {
            self.delete_group_value(stringify!($delete), group_id, $label)
        }
    };
}

impl StorageProvider<CURRENT_VERSION> for KvStorageProvider {
    type Error = MlsError;

    // ---- group state: one value under the group's prefix, ["g", group, label] ----

    group_value!(
        write_mls_join_config,
        mls_group_join_config,
        delete_group_config,
        MlsGroupJoinConfig,
        label::JOIN_CONFIG
    );
    group_value!(write_tree, tree, delete_tree, TreeSync, label::TREE);
    group_value!(
        write_interim_transcript_hash,
        interim_transcript_hash,
        delete_interim_transcript_hash,
        InterimTranscriptHash,
        label::INTERIM_TRANSCRIPT_HASH
    );
    group_value!(
        write_context,
        group_context,
        delete_context,
        GroupContext,
        label::CONTEXT
    );
    group_value!(
        write_confirmation_tag,
        confirmation_tag,
        delete_confirmation_tag,
        ConfirmationTag,
        label::CONFIRMATION_TAG
    );
    // Past epochs' member lists are stored apart, once each (`epoch_members`).
    fn write_message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        message_secrets: &MessageSecrets,
    ) -> Result<(), Self::Error> {
        self.write_message_secrets_split(group_id, message_secrets)
    }

    fn message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MessageSecrets>, Self::Error> {
        self.read_message_secrets_split(group_id)
    }

    fn delete_message_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        // The lists stay: snapshots of the group may still reference them (`epoch_members`).
        self.delete_group_value("delete_message_secrets", group_id, label::MESSAGE_SECRETS)
    }
    group_value!(
        write_resumption_psk_store,
        resumption_psk_store,
        delete_all_resumption_psk_secrets,
        ResumptionPskStore,
        label::RESUMPTION_PSK_STORE
    );
    group_value!(
        write_own_leaf_index,
        own_leaf_index,
        delete_own_leaf_index,
        LeafNodeIndex,
        label::OWN_LEAF_INDEX
    );
    group_value!(
        write_group_epoch_secrets,
        group_epoch_secrets,
        delete_group_epoch_secrets,
        GroupEpochSecrets,
        label::GROUP_EPOCH_SECRETS
    );

    // The group state's methods list their type parameters the other way round, so they cannot
    // come from `group_value!`.
    fn write_group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_state: &GroupState,
    ) -> Result<(), Self::Error> {
        self.write_group_value(
            "write_group_state",
            group_id,
            label::GROUP_STATE,
            group_state,
        )
    }

    fn group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupState>, Self::Error> {
        self.read_group_value(group_id, label::GROUP_STATE)
    }

    fn delete_group_state<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.delete_group_value("delete_group_state", group_id, label::GROUP_STATE)
    }

    // ---- own leaf nodes: a list, ["g", group, "own_leaf_node", seq] ----

    fn append_own_leaf_node<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        leaf_node: &LeafNode,
    ) -> Result<(), Self::Error> {
        let prefix = group_key(group_id, label::OWN_LEAF_NODE)?;
        let seq = self.next_sequence(GROUP_NAMESPACE, &prefix)?;
        self.put_value(
            "append_own_leaf_node",
            GROUP_NAMESPACE,
            prefix.with(seq.to_be_bytes()),
            leaf_node,
        )
    }

    fn own_leaf_nodes<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<LeafNode>, Self::Error> {
        self.list_values(GROUP_NAMESPACE, &group_key(group_id, label::OWN_LEAF_NODE)?)
    }

    fn delete_own_leaf_nodes<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        let prefix = group_key(group_id, label::OWN_LEAF_NODE)?;
        self.delete_prefix("delete_own_leaf_nodes", GROUP_NAMESPACE, &prefix)
    }

    // ---- proposal queue: ["g", group, "proposal", seq] = (ref, proposal) in queue order,
    //      ["g", group, "proposal_index", ref] = seq ----

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), Self::Error> {
        let queue = group_key(group_id, label::PROPOSAL)?;
        let index = group_key(group_id, label::PROPOSAL_INDEX)?
            .with(key_layout::byte_string(proposal_ref)?);
        // Queuing a proposal that is already queued replaces it in place.
        let seq = match self.get_value::<u64>(GROUP_NAMESPACE, &index)? {
            Some(seq) => seq,
            None => self.next_sequence(GROUP_NAMESPACE, &queue)?,
        };
        self.put_value(
            "queue_proposal",
            GROUP_NAMESPACE,
            queue.with(seq.to_be_bytes()),
            &(proposal_ref, proposal),
        )?;
        self.put_value("queue_proposal", GROUP_NAMESPACE, index, &seq)
    }

    fn queued_proposal_refs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<ProposalRef>, Self::Error> {
        let entries: Vec<(ProposalRef, IgnoredAny)> =
            self.list_values(GROUP_NAMESPACE, &group_key(group_id, label::PROPOSAL)?)?;
        Ok(entries
            .into_iter()
            .map(|(proposal_ref, _)| proposal_ref)
            .collect())
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, Self::Error> {
        self.list_values(GROUP_NAMESPACE, &group_key(group_id, label::PROPOSAL)?)
    }

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), Self::Error> {
        let index = group_key(group_id, label::PROPOSAL_INDEX)?
            .with(key_layout::byte_string(proposal_ref)?);
        let Some(seq) = self.get_value::<u64>(GROUP_NAMESPACE, &index)? else {
            return Ok(());
        };
        let entry = group_key(group_id, label::PROPOSAL)?.with(seq.to_be_bytes());
        self.delete_key("remove_proposal", GROUP_NAMESPACE, entry)?;
        self.delete_key("remove_proposal", GROUP_NAMESPACE, index)
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        let queue = group_key(group_id, label::PROPOSAL)?;
        let index = group_key(group_id, label::PROPOSAL_INDEX)?;
        self.delete_prefix("clear_proposal_queue", GROUP_NAMESPACE, &queue)?;
        self.delete_prefix("clear_proposal_queue", GROUP_NAMESPACE, &index)
    }

    // ---- epoch encryption key pairs: ["g", group, "epoch_key_pairs", epoch, leaf_index] ----

    fn write_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
        key_pairs: &[HpkeKeyPair],
    ) -> Result<(), Self::Error> {
        self.put_value(
            "write_encryption_epoch_key_pairs",
            GROUP_NAMESPACE,
            epoch_key_pairs_key(group_id, epoch, leaf_index)?,
            key_pairs,
        )
    }

    fn encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<Vec<HpkeKeyPair>, Self::Error> {
        let key = epoch_key_pairs_key(group_id, epoch, leaf_index)?;
        Ok(self.get_value(GROUP_NAMESPACE, &key)?.unwrap_or_default())
    }

    fn delete_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<(), Self::Error> {
        let key = epoch_key_pairs_key(group_id, epoch, leaf_index)?;
        self.delete_key("delete_encryption_epoch_key_pairs", GROUP_NAMESPACE, key)
    }

    // ---- crypto objects outside any group ----

    fn write_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
        signature_key_pair: &SignatureKeyPair,
    ) -> Result<(), Self::Error> {
        self.put_value(
            "write_signature_key_pair",
            SIGNATURE_KEY_NAMESPACE,
            bytes_key(public_key)?,
            signature_key_pair,
        )
    }

    fn signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<Option<SignatureKeyPair>, Self::Error> {
        self.get_value(SIGNATURE_KEY_NAMESPACE, &bytes_key(public_key)?)
    }

    fn delete_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<(), Self::Error> {
        self.delete_key(
            "delete_signature_key_pair",
            SIGNATURE_KEY_NAMESPACE,
            bytes_key(public_key)?,
        )
    }

    fn write_encryption_key_pair<
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
        key_pair: &HpkeKeyPair,
    ) -> Result<(), Self::Error> {
        self.put_value(
            "write_encryption_key_pair",
            ENCRYPTION_KEY_NAMESPACE,
            bytes_key(public_key)?,
            key_pair,
        )
    }

    fn encryption_key_pair<
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<Option<HpkeKeyPair>, Self::Error> {
        self.get_value(ENCRYPTION_KEY_NAMESPACE, &bytes_key(public_key)?)
    }

    fn delete_encryption_key_pair<EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>>(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<(), Self::Error> {
        self.delete_key(
            "delete_encryption_key_pair",
            ENCRYPTION_KEY_NAMESPACE,
            bytes_key(public_key)?,
        )
    }

    fn write_key_package<
        HashReference: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<(), Self::Error> {
        self.put_value(
            "write_key_package",
            KEY_PACKAGE_NAMESPACE,
            bytes_key(hash_ref)?,
            key_package,
        )
    }

    fn key_package<
        KeyPackageRef: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<Option<KeyPackage>, Self::Error> {
        self.get_value(KEY_PACKAGE_NAMESPACE, &bytes_key(hash_ref)?)
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<CURRENT_VERSION>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<(), Self::Error> {
        self.delete_key(
            "delete_key_package",
            KEY_PACKAGE_NAMESPACE,
            bytes_key(hash_ref)?,
        )
    }

    fn write_psk<
        PskId: traits::PskId<CURRENT_VERSION>,
        PskBundle: traits::PskBundle<CURRENT_VERSION>,
    >(
        &self,
        psk_id: &PskId,
        psk: &PskBundle,
    ) -> Result<(), Self::Error> {
        self.put_value("write_psk", PSK_NAMESPACE, psk_key(psk_id)?, psk)
    }

    fn psk<PskBundle: traits::PskBundle<CURRENT_VERSION>, PskId: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskId,
    ) -> Result<Option<PskBundle>, Self::Error> {
        self.get_value(PSK_NAMESPACE, &psk_key(psk_id)?)
    }

    fn delete_psk<PskKey: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskKey,
    ) -> Result<(), Self::Error> {
        self.delete_key("delete_psk", PSK_NAMESPACE, psk_key(psk_id)?)
    }
}
