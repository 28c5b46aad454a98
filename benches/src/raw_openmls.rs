//! The `raw` backend: plain OpenMLS 0.9 on `openmls_rust_crypto::OpenMlsRustCrypto` (RustCrypto
//! plus `openmls_memory_storage`), ciphersuite MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
//! BasicCredential, ratchet tree extension on, every other setting at its OpenMLS default
//! (pure-ciphertext wire format, no past epochs kept). This is the baseline every other backend is
//! compared against.
//!
//! # Timed regions
//! Every sender-side region ends with the outgoing messages serialised to bytes, and every
//! receiver-side region starts from bytes, so a backend that adds framing or persistence is
//! compared on the same "wire to durable state" path:
//! - `create_group`: `MlsGroup::builder().build` into an empty provider (the signature key pair
//!   and credential exist beforehand).
//! - `key_package`: `KeyPackage::builder().build` (which also writes the bundle to storage) and
//!   TLS serialisation of the key package.
//! - `add_member` / `add_members_10`: `add_members` with 1 / 10 key packages (commit with an
//!   update path — OpenMLS forces one — plus the Welcome carrying the ratchet tree),
//!   `merge_pending_commit`, and serialising commit and Welcome.
//! - `remove_member`: `remove_members` of the member at leaf `size / 2`, `merge_pending_commit`,
//!   serialising the commit.
//! - `process_commit`: deserialising another member's add commit (with update path),
//!   `process_message`, `merge_staged_commit`.
//! - `join`: deserialising the Welcome of an add commit into the group of `size`,
//!   `StagedWelcome::new_from_welcome` (tree taken from the extension) and `into_group`.
//! - `encrypt_1k`: `create_message` of 1 KiB and serialising it.
//! - `decrypt_1k`: deserialising, `process_message` and extracting the 1 KiB plaintext of the
//!   next in-order message from one sender.
//!
//! State-changing operations (add, remove, process commit) run on a fork of the member's state —
//! its whole memory storage copied into a fresh provider and `MlsGroup::load`ed from there —
//! made in the untimed preparation; the group state of the fixture itself never changes. Encrypt
//! and decrypt run on forks kept for the whole benchmark (ratchets move forward); the ciphertext
//! a decrypt iteration consumes is produced by the sender in the untimed preparation.
//!
//! # Fixture groups
//! - sparse (`raw-<size>`): member 0 ("alice") creates the group and adds everybody else in
//!   commits of [`CHUNK`] key packages; the last member ("bob") joins from the last Welcome. Only
//!   alice's direct path holds parent nodes, every other parent is blank, so the next commit from
//!   anyone encrypts its path secrets to roughly every leaf.
//! - full (`raw-<size>-full`): built as a chain — the member at leaf `c` commits the adds of
//!   leaves `c+1` and `c+2` (with an update path), leaf `c+2` joins from the Welcome and is the
//!   next committer — so every level-1 parent lies on some committer's path and every parent is
//!   filled, with no unmerged leaves. At the end bob (the last leaf) self-updates and alice (the
//!   last committer) processes it. Equivalent, for the tree, to every member having
//!   self-updated, at the cost of `size / 2` joins instead of `size²` commit processings.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tls_codec::{Deserialize as _, Serialize as _};

use crate::harness::{
    ADD_MANY, BenchError, Fixture, MlsBackend, Op, PAYLOAD_1K, Scale, Timed, TreeShape, err,
};

/// Ciphersuite of every benchmark (MLS ciphersuite 1).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Key packages per add commit while building sparse fixtures.
pub const CHUNK: usize = 250;

/// One client: provider (crypto + memory storage), signature key pair and credential.
pub struct RawMember {
    /// Crypto and the member's storage.
    pub provider: OpenMlsRustCrypto,
    /// Signature key pair (shared with timed closures).
    pub signer: Rc<SignatureKeyPair>,
    /// Basic credential with the signature public key.
    pub credential: CredentialWithKey,
}

impl RawMember {
    /// A new client with a fresh Ed25519 key pair and a basic credential named `name`.
    pub fn new(name: &str) -> Result<Self, BenchError> {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(err)?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Self {
            provider: OpenMlsRustCrypto::default(),
            signer: Rc::new(signer),
            credential,
        })
    }

    /// Builds a key package (the bundle is stored in this member's storage).
    pub fn key_package(&self) -> Result<KeyPackage, BenchError> {
        let bundle = KeyPackage::builder()
            .build(
                CIPHERSUITE,
                &self.provider,
                &*self.signer,
                self.credential.clone(),
            )
            .map_err(err)?;
        Ok(bundle.key_package().clone())
    }

    /// Creates a group with the benchmark configuration.
    pub fn create_group(&self, group_id: &GroupId) -> Result<MlsGroup, BenchError> {
        create_group(&self.provider, &self.signer, &self.credential, group_id)
    }
}

/// A fresh client's key package; the client itself is dropped (it never joins).
pub fn ghost_key_package(name: &str) -> Result<KeyPackage, BenchError> {
    RawMember::new(name)?.key_package()
}

/// Copies the whole memory storage of `source` into a fresh provider.
pub fn fork_provider(source: &OpenMlsRustCrypto) -> Result<OpenMlsRustCrypto, BenchError> {
    let fork = OpenMlsRustCrypto::default();
    let values = source.storage().values.read().map_err(err)?.clone();
    *fork.storage().values.write().map_err(err)? = values;
    Ok(fork)
}

/// Forks `member`'s storage and loads group `group_id` from the copy.
pub fn fork_group(
    member: &RawMember,
    group_id: &GroupId,
) -> Result<(OpenMlsRustCrypto, MlsGroup), BenchError> {
    let provider = fork_provider(&member.provider)?;
    let group = MlsGroup::load(provider.storage(), group_id)
        .map_err(err)?
        .ok_or("forked group state missing")?;
    Ok((provider, group))
}

/// `MlsGroup::builder` with the benchmark configuration.
pub fn create_group(
    provider: &OpenMlsRustCrypto,
    signer: &SignatureKeyPair,
    credential: &CredentialWithKey,
    group_id: &GroupId,
) -> Result<MlsGroup, BenchError> {
    MlsGroup::builder()
        .with_group_id(group_id.clone())
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .build(provider, signer, credential.clone())
        .map_err(err)
}

/// The join configuration matching [`create_group`].
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

/// Commits the adds of `key_packages`, merges, returns (commit, welcome) bytes.
pub fn add(
    provider: &OpenMlsRustCrypto,
    group: &mut MlsGroup,
    signer: &SignatureKeyPair,
    key_packages: &[KeyPackage],
) -> Result<(Vec<u8>, Vec<u8>), BenchError> {
    let (commit, welcome, _group_info) = group
        .add_members(provider, signer, key_packages)
        .map_err(err)?;
    group.merge_pending_commit(provider).map_err(err)?;
    Ok((commit.to_bytes()?, welcome.to_bytes()?))
}

/// Commits the removal of `leaf`, merges, returns the commit bytes.
pub fn remove(
    provider: &OpenMlsRustCrypto,
    group: &mut MlsGroup,
    signer: &SignatureKeyPair,
    leaf: LeafNodeIndex,
) -> Result<Vec<u8>, BenchError> {
    let (commit, _welcome, _group_info) = group
        .remove_members(provider, signer, &[leaf])
        .map_err(err)?;
    group.merge_pending_commit(provider).map_err(err)?;
    Ok(commit.to_bytes()?)
}

/// Joins from serialised Welcome bytes (ratchet tree from the extension).
pub fn join(provider: &OpenMlsRustCrypto, welcome: &[u8]) -> Result<MlsGroup, BenchError> {
    let message = MlsMessageIn::tls_deserialize_exact(welcome)?;
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err("expected a Welcome".into());
    };
    StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None)
        .map_err(err)?
        .into_group(provider)
        .map_err(err)
}

/// Processes serialised commit bytes and merges the staged commit.
pub fn process_commit(
    provider: &OpenMlsRustCrypto,
    group: &mut MlsGroup,
    commit: &[u8],
) -> Result<(), BenchError> {
    let message = MlsMessageIn::tls_deserialize_exact(commit)?;
    let processed = group
        .process_message(provider, message.try_into_protocol_message()?)
        .map_err(err)?;
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err("expected a commit".into());
    };
    group.merge_staged_commit(provider, *staged).map_err(err)?;
    Ok(())
}

/// Encrypts `payload` as an application message and serialises it.
pub fn encrypt(
    provider: &OpenMlsRustCrypto,
    group: &mut MlsGroup,
    signer: &SignatureKeyPair,
    payload: &[u8],
) -> Result<Vec<u8>, BenchError> {
    let message = group
        .create_message(provider, signer, payload)
        .map_err(err)?;
    Ok(message.to_bytes()?)
}

/// Deserialises and decrypts an application message, returning its plaintext.
pub fn decrypt(
    provider: &OpenMlsRustCrypto,
    group: &mut MlsGroup,
    message: &[u8],
) -> Result<Vec<u8>, BenchError> {
    let message = MlsMessageIn::tls_deserialize_exact(message)?;
    let processed = group
        .process_message(provider, message.try_into_protocol_message()?)
        .map_err(err)?;
    let ProcessedMessageContent::ApplicationMessage(plaintext) = processed.into_content() else {
        return Err("expected an application message".into());
    };
    Ok(plaintext.into_bytes())
}

/// The raw OpenMLS backend (parameter prefix `raw`).
#[derive(Debug, Default, Clone, Copy)]
pub struct RawBackend;

impl MlsBackend for RawBackend {
    fn name(&self) -> &str {
        "raw"
    }

    fn client(&self) -> Result<Box<dyn Fixture>, BenchError> {
        Ok(Box::new(RawClient {
            member: RawMember::new("creator")?,
        }))
    }

    fn group(&self, scale: Scale) -> Result<Box<dyn Fixture>, BenchError> {
        Ok(Box::new(RawGroup::build(scale)?))
    }
}

/// Fixture for the size-independent operations.
pub struct RawClient {
    member: RawMember,
}

impl Fixture for RawClient {
    fn prepare(&mut self, op: Op) -> Result<Timed, BenchError> {
        prepare_sizeless(&self.member, op)
    }
}

fn prepare_sizeless(member: &RawMember, op: Op) -> Result<Timed, BenchError> {
    let provider = OpenMlsRustCrypto::default();
    let signer = Rc::clone(&member.signer);
    let credential = member.credential.clone();
    match op {
        Op::CreateGroup => Ok(Box::new(move || {
            let group = create_group(
                &provider,
                &signer,
                &credential,
                &GroupId::from_slice(b"bench-create"),
            )?;
            Ok(Box::new((provider, group, signer)) as Box<dyn Any>)
        })),
        Op::KeyPackage => Ok(Box::new(move || {
            let bundle = KeyPackage::builder()
                .build(CIPHERSUITE, &provider, &*signer, credential)
                .map_err(err)?;
            let bytes = bundle.key_package().tls_serialize_detached()?;
            Ok(Box::new((provider, bundle, bytes, signer)) as Box<dyn Any>)
        })),
        other => Err(format!("{other:?} needs a group fixture").into()),
    }
}

/// A sender fork and a receiver fork kept across decrypt iterations.
struct DecryptPair {
    sender: (OpenMlsRustCrypto, MlsGroup),
    receiver: Rc<RefCell<(OpenMlsRustCrypto, MlsGroup)>>,
}

/// A group of `scale.size` members seen from alice (committer) and bob (receiver).
pub struct RawGroup {
    group_id: GroupId,
    alice: RawMember,
    bob: RawMember,
    remove: LeafNodeIndex,
    extra: Vec<KeyPackage>,
    extras: Vec<KeyPackage>,
    commit_for_bob: Rc<[u8]>,
    joiner: RawMember,
    welcome: Rc<[u8]>,
    encrypt: Option<Rc<RefCell<(OpenMlsRustCrypto, MlsGroup)>>>,
    decrypt: Option<DecryptPair>,
}

impl RawGroup {
    /// Builds the fixture (see the module docs for the tree shapes).
    pub fn build(scale: Scale) -> Result<Self, BenchError> {
        let size = scale.size;
        if size < 3 {
            return Err("a group fixture needs at least 3 members".into());
        }
        let group_id = GroupId::from_slice(format!("bench-raw-{scale}").as_bytes());
        let (alice, alice_group, bob) = match scale.shape {
            TreeShape::Sparse => build_sparse(size, &group_id)?,
            TreeShape::Full => build_full(size, &group_id)?,
        };
        if alice_group.members().count() != size {
            return Err(format!(
                "fixture has {} members, wanted {size}",
                alice_group.members().count()
            )
            .into());
        }
        let remove = LeafNodeIndex::new(u32::try_from(size / 2)?);
        let bob_leaf = MlsGroup::load(bob.provider.storage(), &group_id)
            .map_err(err)?
            .ok_or("bob has no group")?
            .own_leaf_index();
        if remove == alice_group.own_leaf_index() || remove == bob_leaf {
            return Err("member to remove collides with alice or bob".into());
        }

        let extra = vec![ghost_key_package("extra")?];
        let extras = (0..ADD_MANY)
            .map(|i| ghost_key_package(&format!("extra-{i}")))
            .collect::<Result<Vec<_>, _>>()?;

        let (provider, mut fork) = fork_group(&alice, &group_id)?;
        let (commit_for_bob, _) = add(
            &provider,
            &mut fork,
            &alice.signer,
            &[ghost_key_package("processed")?],
        )?;
        // A sparse tree shows in the size of a commit: one HPKE ciphertext per copath leaf
        // instead of one per level.
        eprintln!(
            "raw-{scale}: add commit with path is {} bytes",
            commit_for_bob.len()
        );
        let joiner = RawMember::new("joiner")?;
        let (provider, mut fork) = fork_group(&alice, &group_id)?;
        let (_, welcome) = add(
            &provider,
            &mut fork,
            &alice.signer,
            &[joiner.key_package()?],
        )?;
        Ok(Self {
            group_id,
            alice,
            bob,
            remove,
            extra,
            extras,
            commit_for_bob: commit_for_bob.into(),
            joiner,
            welcome: welcome.into(),
            encrypt: None,
            decrypt: None,
        })
    }
}

/// Alice creates, adds everybody in chunks; bob (last leaf) joins from the last Welcome.
fn build_sparse(
    size: usize,
    group_id: &GroupId,
) -> Result<(RawMember, MlsGroup, RawMember), BenchError> {
    let alice = RawMember::new("member-0")?;
    let mut group = alice.create_group(group_id)?;
    let bob = RawMember::new(&format!("member-{}", size - 1))?;
    let mut key_packages = (1..size - 1)
        .map(|i| ghost_key_package(&format!("member-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    key_packages.push(bob.key_package()?);
    let mut welcome = Vec::new();
    for chunk in key_packages.chunks(CHUNK) {
        (_, welcome) = add(&alice.provider, &mut group, &alice.signer, chunk)?;
    }
    join(&bob.provider, &welcome)?;
    Ok((alice, group, bob))
}

/// Chain build: leaf `c` adds `c+1`, `c+2`; `c+2` joins and commits next (see module docs).
fn build_full(
    size: usize,
    group_id: &GroupId,
) -> Result<(RawMember, MlsGroup, RawMember), BenchError> {
    let mut committer = RawMember::new("member-0")?;
    let mut group = committer.create_group(group_id)?;
    let mut leaf = 0;
    loop {
        if leaf + 2 < size - 1 {
            let next = RawMember::new(&format!("member-{}", leaf + 2))?;
            let key_packages = [
                ghost_key_package(&format!("member-{}", leaf + 1))?,
                next.key_package()?,
            ];
            let (_, welcome) = add(
                &committer.provider,
                &mut group,
                &committer.signer,
                &key_packages,
            )?;
            group = join(&next.provider, &welcome)?;
            committer = next;
            leaf += 2;
        } else {
            let bob = RawMember::new(&format!("member-{}", size - 1))?;
            let mut key_packages = (leaf + 1..size - 1)
                .map(|i| ghost_key_package(&format!("member-{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            key_packages.push(bob.key_package()?);
            let (_, welcome) = add(
                &committer.provider,
                &mut group,
                &committer.signer,
                &key_packages,
            )?;
            let mut bob_group = join(&bob.provider, &welcome)?;
            let bundle = bob_group
                .self_update(&bob.provider, &*bob.signer, LeafNodeParameters::default())
                .map_err(err)?;
            bob_group.merge_pending_commit(&bob.provider).map_err(err)?;
            let commit = bundle.into_commit().to_bytes()?;
            process_commit(&committer.provider, &mut group, &commit)?;
            return Ok((committer, group, bob));
        }
    }
}

impl Fixture for RawGroup {
    fn prepare(&mut self, op: Op) -> Result<Timed, BenchError> {
        let signer = Rc::clone(&self.alice.signer);
        match op {
            Op::CreateGroup | Op::KeyPackage => prepare_sizeless(&self.alice, op),
            Op::AddMember | Op::AddMembers10 => {
                let (provider, mut group) = fork_group(&self.alice, &self.group_id)?;
                let key_packages = if op == Op::AddMember {
                    self.extra.clone()
                } else {
                    self.extras.clone()
                };
                Ok(Box::new(move || {
                    let bytes = add(&provider, &mut group, &signer, &key_packages)?;
                    Ok(Box::new((provider, group, signer, key_packages, bytes)) as Box<dyn Any>)
                }))
            }
            Op::RemoveMember => {
                let (provider, mut group) = fork_group(&self.alice, &self.group_id)?;
                let leaf = self.remove;
                Ok(Box::new(move || {
                    let bytes = remove(&provider, &mut group, &signer, leaf)?;
                    Ok(Box::new((provider, group, signer, bytes)) as Box<dyn Any>)
                }))
            }
            Op::ProcessCommit => {
                let (provider, mut group) = fork_group(&self.bob, &self.group_id)?;
                let commit = Rc::clone(&self.commit_for_bob);
                Ok(Box::new(move || {
                    process_commit(&provider, &mut group, &commit)?;
                    Ok(Box::new((provider, group, commit)) as Box<dyn Any>)
                }))
            }
            Op::Join => {
                let provider = fork_provider(&self.joiner.provider)?;
                let welcome = Rc::clone(&self.welcome);
                Ok(Box::new(move || {
                    let group = join(&provider, &welcome)?;
                    Ok(Box::new((provider, group, welcome)) as Box<dyn Any>)
                }))
            }
            Op::Encrypt1k => {
                let state = match &self.encrypt {
                    Some(state) => Rc::clone(state),
                    None => {
                        let state = Rc::new(RefCell::new(fork_group(&self.alice, &self.group_id)?));
                        self.encrypt = Some(Rc::clone(&state));
                        state
                    }
                };
                Ok(Box::new(move || {
                    let bytes = {
                        let (provider, group) = &mut *state.borrow_mut();
                        encrypt(provider, group, &signer, &PAYLOAD_1K)?
                    };
                    Ok(Box::new((state, signer, bytes)) as Box<dyn Any>)
                }))
            }
            Op::Decrypt1k => {
                let pair = match &mut self.decrypt {
                    Some(pair) => pair,
                    None => self.decrypt.insert(DecryptPair {
                        sender: fork_group(&self.alice, &self.group_id)?,
                        receiver: Rc::new(RefCell::new(fork_group(&self.bob, &self.group_id)?)),
                    }),
                };
                let (provider, group) = &mut pair.sender;
                let message = encrypt(provider, group, &signer, &PAYLOAD_1K)?;
                let receiver = Rc::clone(&pair.receiver);
                Ok(Box::new(move || {
                    let plaintext = {
                        let (provider, group) = &mut *receiver.borrow_mut();
                        decrypt(provider, group, &message)?
                    };
                    if plaintext.len() != PAYLOAD_1K.len() {
                        return Err("decrypted payload has the wrong length".into());
                    }
                    Ok(Box::new((receiver, message, plaintext)) as Box<dyn Any>)
                }))
            }
        }
    }
}
