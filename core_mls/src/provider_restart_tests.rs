//! Restart: three members on RedbStore files create a group, add, message, update, propose,
//! remove; every store is dropped and reopened from its file between phases; groups load with
//! `MlsGroup::load` and continue. A Welcome made before the joiner's restart joins after it.
//!
//! OpenMLS drives [`SpacePandaProvider`] directly here (no engine): what is tested is that
//! everything OpenMLS writes through [`KvStorageProvider`](crate::storage::KvStorageProvider) —
//! groups, queued proposals, the private keys behind them, key packages, signers — comes back from
//! the file after a restart.
//!
//! Test code, compiled only under `cfg(test)`: each `unwrap` here is an assertion that the
//! step succeeds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use spacepanda_core::{RedbStore, SharedStore};
use tls_codec::{Deserialize as _, Serialize as _};

use crate::error::MlsError;
use crate::provider::SpacePandaProvider;

/// Runs `op` as one storage transaction: committed if it returns `Ok`, discarded otherwise.
fn transaction<R>(
    provider: &SpacePandaProvider,
    op: impl FnOnce(&SpacePandaProvider) -> Result<R, MlsError>,
) -> Result<R, MlsError> {
    provider.storage().begin()?;
    match op(provider) {
        Ok(value) => {
            provider.storage().commit()?;
            Ok(value)
        }
        Err(error) => {
            provider.storage().rollback();
            Err(error)
        }
    }
}

/// Runs `op` on `group` as one storage transaction; on error `group` is reloaded from storage,
/// so it never holds state the disk does not.
fn group_transaction<R>(
    provider: &SpacePandaProvider,
    group: &mut MlsGroup,
    op: impl FnOnce(&SpacePandaProvider, &mut MlsGroup) -> Result<R, MlsError>,
) -> Result<R, MlsError> {
    let result = transaction(provider, |p| op(p, group));
    if result.is_err() {
        let group_id = group.group_id().clone();
        *group = MlsGroup::load(provider.storage(), &group_id)?.expect("the group is stored");
    }
    result
}

const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// One device: a provider on its own store, its signer and credential.
struct Member {
    provider: SpacePandaProvider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Member {
    /// A new member whose store is `store`; the signer is stored in it (so a restart finds it).
    fn new(name: &str, store: SharedStore) -> Self {
        let provider = SpacePandaProvider::open(store).unwrap();
        let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
        transaction(&provider, |p| signer.store(p.storage())).unwrap();
        Self::with(name, provider, signer)
    }

    /// Reopens a member from `store`, given its signature public key.
    fn reopen(name: &str, store: SharedStore, public_key: &[u8]) -> Self {
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
            provider,
            signer,
            credential,
        }
    }

    /// A member on a RedbStore file `dir/name.redb`; its public key goes to `dir/name.pub`.
    fn on_redb(dir: &Path, name: &str) -> Self {
        let member = Self::new(name, redb(dir, name));
        std::fs::write(pub_path(dir, name), member.signer.public()).unwrap();
        member
    }

    /// Reopens the member `name` from its file in `dir`.
    fn reopen_redb(dir: &Path, name: &str) -> Self {
        let public = std::fs::read(pub_path(dir, name)).unwrap();
        Self::reopen(name, redb(dir, name), &public)
    }

    /// A fresh key package, stored in one transaction.
    fn key_package(&self) -> KeyPackage {
        transaction(&self.provider, |p| {
            KeyPackage::builder()
                .build(CS, p, &self.signer, self.credential.clone())
                .map_err(|e| MlsError::openmls("build a key package", e))
        })
        .unwrap()
        .key_package()
        .clone()
    }

    /// Creates a group with id `id` in one transaction.
    fn create_group(&self, id: &[u8]) -> MlsGroup {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CS)
            .use_ratchet_tree_extension(true)
            .build();
        transaction(&self.provider, |p| {
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
    fn join(&self, welcome: &[u8]) -> Result<MlsGroup, MlsError> {
        let welcome = match parse(welcome)?.extract() {
            MlsMessageBodyIn::Welcome(welcome) => welcome,
            _ => panic!("not a welcome"),
        };
        transaction(&self.provider, |p| {
            StagedWelcome::new_from_welcome(p, &join_config(), welcome, None)
                .and_then(|staged| staged.into_group(p))
                .map_err(|e| MlsError::openmls("join from a welcome", e))
        })
    }

    /// Loads `id` from storage.
    fn load(&self, id: &[u8]) -> Option<MlsGroup> {
        MlsGroup::load(self.provider.storage(), &GroupId::from_slice(id)).unwrap()
    }

    /// Adds `key_packages`, merges; returns (commit, welcome) bytes.
    fn add(&self, group: &mut MlsGroup, key_packages: &[KeyPackage]) -> (Vec<u8>, Vec<u8>) {
        group_transaction(&self.provider, group, |p, group| {
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
    fn remove(&self, group: &mut MlsGroup, name: &str) -> Vec<u8> {
        let index = group
            .members()
            .find(|m| m.credential.serialized_content() == name.as_bytes())
            .expect("member present")
            .index;
        group_transaction(&self.provider, group, |p, group| {
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
    fn self_update(&self, group: &mut MlsGroup) -> Vec<u8> {
        group_transaction(&self.provider, group, |p, group| {
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
    fn propose_update(&self, group: &mut MlsGroup) -> Vec<u8> {
        group_transaction(&self.provider, group, |p, group| {
            let (message, _) = group
                .propose_self_update(p, &self.signer, LeafNodeParameters::default())
                .map_err(|e| MlsError::openmls("propose an update", e))?;
            Ok(bytes(&message))
        })
        .unwrap()
    }

    /// Commits every queued proposal, merges; returns the commit bytes.
    fn commit_pending(&self, group: &mut MlsGroup) -> Vec<u8> {
        group_transaction(&self.provider, group, |p, group| {
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
    fn send(&self, group: &mut MlsGroup, text: &[u8]) -> Vec<u8> {
        group_transaction(&self.provider, group, |p, group| {
            let message = group
                .create_message(p, &self.signer, text)
                .map_err(|e| MlsError::openmls("encrypt", e))?;
            Ok(bytes(&message))
        })
        .unwrap()
    }

    /// Processes any handshake or application message in one transaction: commits are merged,
    /// proposals stored; returns the plaintext of an application message.
    fn receive(&self, group: &mut MlsGroup, message: &[u8]) -> Result<Option<Vec<u8>>, MlsError> {
        let message = parse(message)?
            .try_into_protocol_message()
            .map_err(|e| MlsError::openmls("read a protocol message", e))?;
        group_transaction(&self.provider, group, |p, group| {
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

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

fn bytes(message: &MlsMessageOut) -> Vec<u8> {
    message.tls_serialize_detached().unwrap()
}

fn parse(message: &[u8]) -> Result<MlsMessageIn, MlsError> {
    MlsMessageIn::tls_deserialize_exact(message).map_err(|e| MlsError::openmls("parse", e))
}

fn pub_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pub"))
}

/// The member's file: created on its first start, opened after every restart.
fn redb(dir: &Path, name: &str) -> SharedStore {
    let path = dir.join(format!("{name}.redb"));
    if path.exists() {
        Arc::new(RedbStore::open(path).unwrap())
    } else {
        Arc::new(RedbStore::create(path).unwrap())
    }
}

/// Asserts every group is at the same epoch with the same epoch authenticator.
fn assert_agree(groups: &[&MlsGroup]) {
    let first = groups[0];
    for group in groups {
        assert_eq!(group.epoch(), first.epoch());
        assert_eq!(
            group.epoch_authenticator().as_slice(),
            first.epoch_authenticator().as_slice()
        );
    }
}

const GROUP: &[u8] = b"restart-group";

#[test]
fn groups_survive_restarts_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // ---- phase 1: create, add bob, talk, update, add carol (carol does not join yet) ----
    let carol_welcome;
    {
        let alice = Member::on_redb(d, "alice");
        let bob = Member::on_redb(d, "bob");
        let carol = Member::on_redb(d, "carol");

        let mut a = alice.create_group(GROUP);
        let (_, welcome) = alice.add(&mut a, &[bob.key_package()]);
        let mut b = bob.join(&welcome).unwrap();
        assert_agree(&[&a, &b]);

        let m = alice.send(&mut a, b"hello bob");
        assert_eq!(
            bob.receive(&mut b, &m).unwrap().as_deref(),
            Some(&b"hello bob"[..])
        );
        let m = bob.send(&mut b, b"hi alice");
        assert_eq!(
            alice.receive(&mut a, &m).unwrap().as_deref(),
            Some(&b"hi alice"[..])
        );

        let commit = bob.self_update(&mut b);
        alice.receive(&mut a, &commit).unwrap();
        assert_agree(&[&a, &b]);

        let carol_kp = carol.key_package();
        let (commit, welcome) = alice.add(&mut a, &[carol_kp]);
        bob.receive(&mut b, &commit).unwrap();
        assert_agree(&[&a, &b]);
        carol_welcome = welcome;

        // A message sent before the restart, delivered after it.
        let late = alice.send(&mut a, b"sent before the restart");
        std::fs::write(d.join("late.msg"), late).unwrap();
        // Everyone is dropped here: the stores close.
    }

    // ---- phase 2: reopen; carol joins with the old Welcome; bob proposes, alice commits ----
    {
        let alice = Member::reopen_redb(d, "alice");
        let bob = Member::reopen_redb(d, "bob");
        let carol = Member::reopen_redb(d, "carol");
        assert_eq!(
            alice.provider.storage().list_groups().unwrap(),
            vec![openmls::prelude::GroupId::from_slice(GROUP)]
        );
        assert!(carol.provider.storage().list_groups().unwrap().is_empty());

        let mut a = alice.load(GROUP).expect("alice's group loads");
        let mut b = bob.load(GROUP).expect("bob's group loads");
        assert_agree(&[&a, &b]);
        let epoch_before = a.epoch();

        let late = std::fs::read(d.join("late.msg")).unwrap();
        assert_eq!(
            bob.receive(&mut b, &late).unwrap().as_deref(),
            Some(&b"sent before the restart"[..])
        );

        let mut c = carol
            .join(&carol_welcome)
            .expect("pre-restart Welcome still joins");
        assert_agree(&[&a, &b, &c]);
        assert_eq!(c.members().count(), 3);

        let m = carol.send(&mut c, b"carol here");
        assert_eq!(
            alice.receive(&mut a, &m).unwrap().as_deref(),
            Some(&b"carol here"[..])
        );
        assert_eq!(
            bob.receive(&mut b, &m).unwrap().as_deref(),
            Some(&b"carol here"[..])
        );

        // Bob proposes an update; alice and carol queue it.
        let proposal = bob.propose_update(&mut b);
        alice.receive(&mut a, &proposal).unwrap();
        carol.receive(&mut c, &proposal).unwrap();
        assert_eq!(a.pending_proposals().count(), 1);
        assert_eq!(a.epoch(), epoch_before);
    }

    // ---- phase 3: reopen; the queued proposal survived; alice commits it; bob is removed ----
    {
        let alice = Member::reopen_redb(d, "alice");
        let bob = Member::reopen_redb(d, "bob");
        let carol = Member::reopen_redb(d, "carol");
        let mut a = alice.load(GROUP).unwrap();
        let mut b = bob.load(GROUP).unwrap();
        let mut c = carol.load(GROUP).unwrap();
        assert_eq!(
            a.pending_proposals().count(),
            1,
            "queued proposal survives a restart"
        );

        let commit = alice.commit_pending(&mut a);
        // Bob needs the private key of the leaf he proposed, stored before the restart.
        bob.receive(&mut b, &commit).unwrap();
        carol.receive(&mut c, &commit).unwrap();
        assert_agree(&[&a, &b, &c]);

        let commit = alice.remove(&mut a, "bob");
        carol.receive(&mut c, &commit).unwrap();
        bob.receive(&mut b, &commit).unwrap();
        assert!(!b.is_active(), "bob sees his removal");
        assert_agree(&[&a, &c]);
    }

    // ---- phase 4: reopen; alice and carol continue at a new epoch, both directions ----
    let alice = Member::reopen_redb(d, "alice");
    let bob = Member::reopen_redb(d, "bob");
    let carol = Member::reopen_redb(d, "carol");
    let mut a = alice.load(GROUP).unwrap();
    let mut c = carol.load(GROUP).unwrap();
    let b = bob.load(GROUP).expect("bob's (inactive) group still loads");
    assert!(!b.is_active());
    assert_agree(&[&a, &c]);
    let epoch = a.epoch();

    let commit = carol.self_update(&mut c);
    alice.receive(&mut a, &commit).unwrap();
    assert_agree(&[&a, &c]);
    assert_eq!(a.epoch().as_u64(), epoch.as_u64() + 1);
    let m = alice.send(&mut a, b"after three restarts");
    assert_eq!(
        carol.receive(&mut c, &m).unwrap().as_deref(),
        Some(&b"after three restarts"[..])
    );
    let m = carol.send(&mut c, b"and back");
    assert_eq!(
        alice.receive(&mut a, &m).unwrap().as_deref(),
        Some(&b"and back"[..])
    );
    assert_eq!(a.members().count(), 2);
}
