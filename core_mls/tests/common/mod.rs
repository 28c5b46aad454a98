//! Helpers shared by the integration tests: members with their own store, and message
//! delivery through bytes (as over the network).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use core_mls::{MlsError, SpacePandaProvider};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use spacepanda_core::{MemoryStore, RedbStore, SharedStore};
use tls_codec::{Deserialize as _, Serialize as _};

pub const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// One device: a provider on its own store, its signer and credential.
pub struct Member {
    pub name: String,
    pub provider: SpacePandaProvider,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
}

impl Member {
    /// A new member whose store is `store`; the signer is stored in it (so a restart finds it).
    pub fn new(name: &str, store: SharedStore) -> Self {
        let provider = SpacePandaProvider::open(store).unwrap();
        let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
        provider.transaction(|p| signer.store(p.storage())).unwrap();
        Self::with(name, provider, signer)
    }

    /// Reopens a member from `store`, given its signature public key.
    pub fn reopen(name: &str, store: SharedStore, public_key: &[u8]) -> Self {
        let provider = SpacePandaProvider::open(store).unwrap();
        let signer =
            SignatureKeyPair::read(provider.storage(), public_key, CS.signature_algorithm())
                .expect("signer survives the restart");
        Self::with(name, provider, signer)
    }

    fn with(name: &str, provider: SpacePandaProvider, signer: SignatureKeyPair) -> Self {
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            name: name.to_owned(),
            provider,
            signer,
            credential,
        }
    }

    /// A member on a RedbStore file `dir/name.redb`; its public key goes to `dir/name.pub`.
    pub fn on_redb(dir: &Path, name: &str) -> Self {
        let member = Self::new(name, redb(dir, name));
        std::fs::write(pub_path(dir, name), member.signer.public()).unwrap();
        member
    }

    /// Reopens the member `name` from its file in `dir`.
    pub fn reopen_redb(dir: &Path, name: &str) -> Self {
        let public = std::fs::read(pub_path(dir, name)).unwrap();
        Self::reopen(name, redb(dir, name), &public)
    }

    pub fn on_memory(name: &str) -> (Self, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        (Self::new(name, store.clone()), store)
    }

    /// A fresh key package, stored in one transaction.
    pub fn key_package(&self) -> KeyPackage {
        self.provider
            .transaction(|p| {
                KeyPackage::builder()
                    .build(CS, p, &self.signer, self.credential.clone())
                    .map_err(|e| MlsError::openmls("build a key package", e))
            })
            .unwrap()
            .key_package()
            .clone()
    }

    /// Creates a group with id `id` in one transaction.
    pub fn create_group(&self, id: &[u8]) -> MlsGroup {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CS)
            .use_ratchet_tree_extension(true)
            .build();
        self.provider
            .transaction(|p| {
                MlsGroup::new_with_group_id(
                    p,
                    &self.signer,
                    &config,
                    GroupId::from_slice(id),
                    self.credential.clone(),
                )
                .map_err(|e| MlsError::openmls("create a group", e))
            })
            .unwrap()
    }

    /// Joins from serialized Welcome bytes in one transaction.
    pub fn join(&self, welcome: &[u8]) -> Result<MlsGroup, MlsError> {
        let welcome = match parse(welcome)?.extract() {
            MlsMessageBodyIn::Welcome(welcome) => welcome,
            _ => panic!("not a welcome"),
        };
        self.provider.transaction(|p| {
            StagedWelcome::new_from_welcome(p, &join_config(), welcome, None)
                .and_then(|staged| staged.into_group(p))
                .map_err(|e| MlsError::openmls("join from a welcome", e))
        })
    }

    /// Loads `id` from storage.
    pub fn load(&self, id: &[u8]) -> Option<MlsGroup> {
        self.provider.load_group(&GroupId::from_slice(id)).unwrap()
    }

    /// Adds `key_packages`, merges; returns (commit, welcome) bytes.
    pub fn add(&self, group: &mut MlsGroup, key_packages: &[KeyPackage]) -> (Vec<u8>, Vec<u8>) {
        self.provider
            .group_transaction(group, |p, group| {
                let (commit, welcome, _) = group
                    .add_members(p, &self.signer, key_packages)
                    .map_err(|e| MlsError::openmls("add members", e))?;
                group
                    .merge_pending_commit(p)
                    .map_err(|e| MlsError::openmls("merge", e))?;
                Ok((bytes(&commit), bytes(&welcome)))
            })
            .unwrap()
    }

    /// Removes the member whose credential identity is `name`; returns the commit bytes.
    pub fn remove(&self, group: &mut MlsGroup, name: &str) -> Vec<u8> {
        let index = group
            .members()
            .find(|m| m.credential.serialized_content() == name.as_bytes())
            .expect("member present")
            .index;
        self.provider
            .group_transaction(group, |p, group| {
                let (commit, _, _) = group
                    .remove_members(p, &self.signer, &[index])
                    .map_err(|e| MlsError::openmls("remove members", e))?;
                group
                    .merge_pending_commit(p)
                    .map_err(|e| MlsError::openmls("merge", e))?;
                Ok(bytes(&commit))
            })
            .unwrap()
    }

    /// A self-update commit, merged; returns its bytes.
    pub fn self_update(&self, group: &mut MlsGroup) -> Vec<u8> {
        self.provider
            .group_transaction(group, |p, group| {
                let bundle = group
                    .self_update(p, &self.signer, LeafNodeParameters::default())
                    .map_err(|e| MlsError::openmls("self-update", e))?;
                group
                    .merge_pending_commit(p)
                    .map_err(|e| MlsError::openmls("merge", e))?;
                Ok(bytes(bundle.commit()))
            })
            .unwrap()
    }

    /// An update proposal (queued in our own proposal store); returns its bytes.
    pub fn propose_update(&self, group: &mut MlsGroup) -> Vec<u8> {
        self.provider
            .group_transaction(group, |p, group| {
                let (message, _) = group
                    .propose_self_update(p, &self.signer, LeafNodeParameters::default())
                    .map_err(|e| MlsError::openmls("propose an update", e))?;
                Ok(bytes(&message))
            })
            .unwrap()
    }

    /// Commits every queued proposal, merges; returns the commit bytes.
    pub fn commit_pending(&self, group: &mut MlsGroup) -> Vec<u8> {
        self.provider
            .group_transaction(group, |p, group| {
                let (commit, _, _) = group
                    .commit_to_pending_proposals(p, &self.signer)
                    .map_err(|e| MlsError::openmls("commit proposals", e))?;
                group
                    .merge_pending_commit(p)
                    .map_err(|e| MlsError::openmls("merge", e))?;
                Ok(bytes(&commit))
            })
            .unwrap()
    }

    /// Encrypts an application message.
    pub fn send(&self, group: &mut MlsGroup, text: &[u8]) -> Vec<u8> {
        self.provider
            .group_transaction(group, |p, group| {
                let message = group
                    .create_message(p, &self.signer, text)
                    .map_err(|e| MlsError::openmls("encrypt", e))?;
                Ok(bytes(&message))
            })
            .unwrap()
    }

    /// Processes any handshake or application message in one transaction: commits are merged,
    /// proposals stored; returns the plaintext of an application message.
    pub fn receive(
        &self,
        group: &mut MlsGroup,
        message: &[u8],
    ) -> Result<Option<Vec<u8>>, MlsError> {
        let message = parse(message)?
            .try_into_protocol_message()
            .map_err(|e| MlsError::openmls("read a protocol message", e))?;
        self.provider.group_transaction(group, |p, group| {
            let processed = group
                .process_message(p, message)
                .map_err(|e| MlsError::openmls("process a message", e))?;
            match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(app) => Ok(Some(app.into_bytes())),
                ProcessedMessageContent::StagedCommitMessage(staged) => {
                    group
                        .merge_staged_commit(p, *staged)
                        .map_err(|e| MlsError::openmls("merge a commit", e))?;
                    Ok(None)
                }
                ProcessedMessageContent::ProposalMessage(proposal) => {
                    group
                        .store_pending_proposal(p.storage(), *proposal)
                        .map_err(|e| MlsError::openmls("store a proposal", e))?;
                    Ok(None)
                }
                _ => Ok(None),
            }
        })
    }
}

pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

pub fn bytes(message: &MlsMessageOut) -> Vec<u8> {
    message.tls_serialize_detached().unwrap()
}

pub fn parse(message: &[u8]) -> Result<MlsMessageIn, MlsError> {
    MlsMessageIn::tls_deserialize_exact(message).map_err(|e| MlsError::openmls("parse", e))
}

fn pub_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pub"))
}

pub fn redb(dir: &Path, name: &str) -> SharedStore {
    Arc::new(RedbStore::open(dir.join(format!("{name}.redb"))).unwrap())
}

/// Asserts every group is at the same epoch with the same epoch authenticator.
pub fn assert_agree(groups: &[&MlsGroup]) {
    let first = groups[0];
    for group in groups {
        assert_eq!(group.epoch(), first.epoch());
        assert_eq!(
            group.epoch_authenticator().as_slice(),
            first.epoch_authenticator().as_slice()
        );
    }
}
