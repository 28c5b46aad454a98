//! Criterion group `peer`: the `mls` functions measured with AWS mls-rs, the peer baseline.
//!
//! Ids: `peer/<function>/mlsrs-<size>`, sizes as in the `mls` group (`1` for `create_group` and
//! `key_package`; `SPACEPANDA_BENCH_SIZES`, default `10,100,1000,1000-full`, for the rest).
//!
//! Configuration: mls-rs 0.57 with default features (which include `rayon`: mls-rs encrypts
//! path secrets / Welcome secrets and verifies trees in parallel, OpenMLS does not),
//! `mls-rs-crypto-rustcrypto` 0.23, ciphersuite CURVE25519_AES128 (= 1, same as `raw`),
//! BasicCredential with `BasicIdentityProvider`, in-memory key package and group state storage,
//! commit options `path_required` (OpenMLS's `add_members` always sends an update path) and
//! `ratchet_tree_extension` (as `raw`).
//!
//! Timed regions mirror `spacepanda_benches::raw_openmls` operation by operation (sender regions
//! end in serialised bytes, receiver regions start from bytes). mls-rs only persists a group when
//! asked, whereas OpenMLS writes through its storage provider on every operation, so every
//! region here ends with `write_to_storage()` (a full snapshot into the in-memory storage):
//! - `create_group`: `create_group` + `write_to_storage`.
//! - `key_package`: `generate_key_package_message` (stores the key package) + `to_bytes`.
//! - `add_member` / `add_members_10`: `commit_builder().add_member(..)×n.build()`,
//!   `apply_pending_commit`, `write_to_storage`, serialising commit and Welcome.
//! - `remove_member`: `commit_builder().remove_member(size / 2).build()`, apply, write,
//!   serialise.
//! - `process_commit`: `MlsMessage::from_bytes` of another member's add commit,
//!   `process_incoming_message` (which applies it), `write_to_storage`.
//! - `join`: `from_bytes` of the Welcome, `join_group` (tree from the extension),
//!   `write_to_storage` (which also deletes the used key package; it is put back, untimed, before
//!   the next iteration).
//! - `encrypt_1k`: `encrypt_application_message` of 1 KiB, `write_to_storage`, `to_bytes`.
//! - `decrypt_1k`: `from_bytes`, `process_incoming_message`, `write_to_storage`.
//!
//! State-changing operations run on a `Group::clone()` made in the untimed preparation (mls-rs
//! groups are plain values). Clones share their client's storage, and mls-rs refuses to insert
//! a prior-epoch record that is not the successor of the newest one stored, so the preparation
//! also deletes the group from that client's in-memory storage (untimed): each timed
//! `write_to_storage` then writes into a storage holding only what the fork itself writes.
//! Fixtures are built exactly like the raw ones (sparse: one committer adds everybody in chunks
//! of 250; full: the add-two-then-join chain; see `raw_openmls`).
#![allow(
    missing_docs,
    clippy::expect_used,
    reason = "criterion macros generate undocumented items; a failed benchmark aborts"
)]

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use criterion::{Criterion, criterion_group, criterion_main};
use mls_rs::client_builder::{BaseConfig, WithCryptoProvider, WithIdentityProvider, WithMlsRules};
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::storage_provider::KeyPackageData;
use mls_rs::{
    CipherSuite, CipherSuiteProvider, Client, CryptoProvider, ExtensionList, Group, MlsMessage,
    group::ReceivedMessage,
};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use spacepanda_benches::harness::{
    ADD_MANY, BenchError, Fixture, MlsBackend, Op, PAYLOAD_1K, Scale, Timed, TreeShape,
    bench_backends, err,
};

const CIPHERSUITE: CipherSuite = CipherSuite::CURVE25519_AES128;
/// Key packages per add commit while building sparse fixtures (as `raw_openmls::CHUNK`).
const CHUNK: usize = 250;

type Config = WithMlsRules<
    DefaultMlsRules,
    WithIdentityProvider<BasicIdentityProvider, WithCryptoProvider<RustCryptoProvider, BaseConfig>>,
>;
type PeerClient = Client<Config>;
type PeerGroup = Group<Config>;

fn client(name: &str) -> Result<PeerClient, BenchError> {
    let crypto = RustCryptoProvider::default();
    let suite = crypto
        .cipher_suite_provider(CIPHERSUITE)
        .ok_or("ciphersuite unsupported")?;
    let (secret, public) = suite.signature_key_generate().map_err(err)?;
    let identity = SigningIdentity::new(
        BasicCredential::new(name.as_bytes().to_vec()).into_credential(),
        public,
    );
    Ok(Client::builder()
        .crypto_provider(crypto)
        .identity_provider(BasicIdentityProvider)
        .mls_rules(
            DefaultMlsRules::new().with_commit_options(
                CommitOptions::new()
                    .with_path_required(true)
                    .with_ratchet_tree_extension(true),
            ),
        )
        .signing_identity(identity, secret, CIPHERSUITE)
        .build())
}

fn key_package(client: &PeerClient) -> Result<MlsMessage, BenchError> {
    Ok(client.generate_key_package_message(
        ExtensionList::default(),
        ExtensionList::default(),
        None,
    )?)
}

/// A clone of `group` whose next `write_to_storage` succeeds: the group's records are first
/// deleted from `client`'s storage (shared by all clones).
fn fork(client: &PeerClient, group: &PeerGroup) -> PeerGroup {
    client.group_state_storage().delete_group(group.group_id());
    group.clone()
}

fn ghost_key_package(name: &str) -> Result<MlsMessage, BenchError> {
    key_package(&client(name)?)
}

fn create_group(client: &PeerClient) -> Result<PeerGroup, BenchError> {
    Ok(client.create_group(ExtensionList::default(), ExtensionList::default(), None)?)
}

/// Commits the adds, applies, persists; returns (commit, welcome) bytes.
fn add(
    group: &mut PeerGroup,
    key_packages: &[MlsMessage],
) -> Result<(Vec<u8>, Vec<u8>), BenchError> {
    let mut builder = group.commit_builder();
    for key_package in key_packages {
        builder = builder.add_member(key_package.clone())?;
    }
    let output = builder.build()?;
    group.apply_pending_commit()?;
    group.write_to_storage()?;
    let welcome = output
        .welcome_messages
        .first()
        .ok_or("add commit without Welcome")?
        .to_bytes()?;
    Ok((output.commit_message.to_bytes()?, welcome))
}

fn remove(group: &mut PeerGroup, leaf: u32) -> Result<Vec<u8>, BenchError> {
    let output = group.commit_builder().remove_member(leaf)?.build()?;
    group.apply_pending_commit()?;
    group.write_to_storage()?;
    Ok(output.commit_message.to_bytes()?)
}

fn join(client: &PeerClient, welcome: &[u8]) -> Result<PeerGroup, BenchError> {
    let welcome = MlsMessage::from_bytes(welcome)?;
    let (mut group, _info) = client.join_group(None, &welcome, None)?;
    group.write_to_storage()?;
    Ok(group)
}

fn process_commit(group: &mut PeerGroup, commit: &[u8]) -> Result<(), BenchError> {
    let message = MlsMessage::from_bytes(commit)?;
    let ReceivedMessage::Commit(_) = group.process_incoming_message(message)? else {
        return Err("expected a commit".into());
    };
    group.write_to_storage()?;
    Ok(())
}

fn encrypt(group: &mut PeerGroup) -> Result<Vec<u8>, BenchError> {
    let message = group.encrypt_application_message(&PAYLOAD_1K, Vec::new())?;
    group.write_to_storage()?;
    Ok(message.to_bytes()?)
}

fn decrypt(group: &mut PeerGroup, message: &[u8]) -> Result<usize, BenchError> {
    let message = MlsMessage::from_bytes(message)?;
    let ReceivedMessage::ApplicationMessage(plaintext) = group.process_incoming_message(message)?
    else {
        return Err("expected an application message".into());
    };
    group.write_to_storage()?;
    Ok(plaintext.data().len())
}

struct MlsRsBackend;

impl MlsBackend for MlsRsBackend {
    fn name(&self) -> &str {
        "mlsrs"
    }

    fn client(&self) -> Result<Box<dyn Fixture>, BenchError> {
        Ok(Box::new(ClientFixture {
            client: Rc::new(client("creator")?),
        }))
    }

    fn group(&self, scale: Scale) -> Result<Box<dyn Fixture>, BenchError> {
        Ok(Box::new(GroupFixture::build(scale)?))
    }
}

struct ClientFixture {
    client: Rc<PeerClient>,
}

impl Fixture for ClientFixture {
    fn prepare(&mut self, op: Op) -> Result<Timed, BenchError> {
        prepare_sizeless(&self.client, op)
    }
}

fn prepare_sizeless(client: &Rc<PeerClient>, op: Op) -> Result<Timed, BenchError> {
    let client = Rc::clone(client);
    match op {
        Op::CreateGroup => Ok(Box::new(move || {
            let mut group = create_group(&client)?;
            group.write_to_storage()?;
            Ok(Box::new((client, group)) as Box<dyn Any>)
        })),
        Op::KeyPackage => Ok(Box::new(move || {
            let message = key_package(&client)?;
            let bytes = message.to_bytes()?;
            Ok(Box::new((client, message, bytes)) as Box<dyn Any>)
        })),
        other => Err(format!("{other:?} needs a group fixture").into()),
    }
}

struct GroupFixture {
    alice_client: Rc<PeerClient>,
    alice: PeerGroup,
    bob_client: PeerClient,
    bob: PeerGroup,
    remove: u32,
    extra: Rc<Vec<MlsMessage>>,
    extras: Rc<Vec<MlsMessage>>,
    commit_for_bob: Rc<[u8]>,
    joiner: Rc<PeerClient>,
    joiner_key_package: (Vec<u8>, KeyPackageData),
    welcome: Rc<[u8]>,
    encrypt: Option<Rc<RefCell<PeerGroup>>>,
    decrypt: Option<(PeerGroup, Rc<RefCell<PeerGroup>>)>,
}

impl GroupFixture {
    fn build(scale: Scale) -> Result<Self, BenchError> {
        let size = scale.size;
        if size < 3 {
            return Err("a group fixture needs at least 3 members".into());
        }
        let (alice_client, alice, bob_client, bob) = match scale.shape {
            TreeShape::Sparse => build_sparse(size)?,
            TreeShape::Full => build_full(size)?,
        };
        let members = alice.roster().members_iter().count();
        if members != size {
            return Err(format!("fixture has {members} members, wanted {size}").into());
        }
        let remove = u32::try_from(size / 2)?;
        if remove == alice.current_member_index() || remove == bob.current_member_index() {
            return Err("member to remove collides with alice or bob".into());
        }
        let extra = vec![ghost_key_package("extra")?];
        let extras = (0..ADD_MANY)
            .map(|i| ghost_key_package(&format!("extra-{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let (commit_for_bob, _) = add(
            &mut fork(&alice_client, &alice),
            &[ghost_key_package("processed")?],
        )?;
        eprintln!(
            "mlsrs-{scale}: add commit with path is {} bytes",
            commit_for_bob.len()
        );
        let joiner = client("joiner")?;
        let joiner_key_package = key_package(&joiner)?;
        let stored = joiner
            .key_package_store()
            .key_packages()
            .into_iter()
            .next()
            .ok_or("joiner key package not stored")?;
        let (_, welcome) = add(&mut fork(&alice_client, &alice), &[joiner_key_package])?;
        Ok(Self {
            alice_client: Rc::new(alice_client),
            alice,
            bob_client,
            bob,
            remove,
            extra: Rc::new(extra),
            extras: Rc::new(extras),
            commit_for_bob: commit_for_bob.into(),
            joiner: Rc::new(joiner),
            joiner_key_package: stored,
            welcome: welcome.into(),
            encrypt: None,
            decrypt: None,
        })
    }
}

/// (alice's client, alice's group, bob's client, bob's group).
type Built = (PeerClient, PeerGroup, PeerClient, PeerGroup);

fn build_sparse(size: usize) -> Result<Built, BenchError> {
    let alice_client = client("member-0")?;
    let mut alice = create_group(&alice_client)?;
    let bob_client = client(&format!("member-{}", size - 1))?;
    let mut key_packages = (1..size - 1)
        .map(|i| ghost_key_package(&format!("member-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    key_packages.push(key_package(&bob_client)?);
    let mut welcome = Vec::new();
    for chunk in key_packages.chunks(CHUNK) {
        (_, welcome) = add(&mut alice, chunk)?;
    }
    let bob = join(&bob_client, &welcome)?;
    Ok((alice_client, alice, bob_client, bob))
}

fn build_full(size: usize) -> Result<Built, BenchError> {
    let mut committer = client("member-0")?;
    let mut group = create_group(&committer)?;
    let mut leaf = 0;
    loop {
        if leaf + 2 < size - 1 {
            let next = client(&format!("member-{}", leaf + 2))?;
            let key_packages = [
                ghost_key_package(&format!("member-{}", leaf + 1))?,
                key_package(&next)?,
            ];
            let (_, welcome) = add(&mut group, &key_packages)?;
            group = join(&next, &welcome)?;
            committer = next;
            leaf += 2;
        } else {
            let bob_client = client(&format!("member-{}", size - 1))?;
            let mut key_packages = (leaf + 1..size - 1)
                .map(|i| ghost_key_package(&format!("member-{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            key_packages.push(key_package(&bob_client)?);
            let (_, welcome) = add(&mut group, &key_packages)?;
            let mut bob = join(&bob_client, &welcome)?;
            let update = bob.commit(Vec::new())?;
            bob.apply_pending_commit()?;
            bob.write_to_storage()?;
            process_commit(&mut group, &update.commit_message.to_bytes()?)?;
            return Ok((committer, group, bob_client, bob));
        }
    }
}

impl Fixture for GroupFixture {
    fn prepare(&mut self, op: Op) -> Result<Timed, BenchError> {
        match op {
            Op::CreateGroup | Op::KeyPackage => prepare_sizeless(&self.alice_client, op),
            Op::AddMember | Op::AddMembers10 => {
                let mut group = fork(&self.alice_client, &self.alice);
                let key_packages = Rc::clone(if op == Op::AddMember {
                    &self.extra
                } else {
                    &self.extras
                });
                Ok(Box::new(move || {
                    let bytes = add(&mut group, &key_packages)?;
                    Ok(Box::new((group, key_packages, bytes)) as Box<dyn Any>)
                }))
            }
            Op::RemoveMember => {
                let mut group = fork(&self.alice_client, &self.alice);
                let leaf = self.remove;
                Ok(Box::new(move || {
                    let bytes = remove(&mut group, leaf)?;
                    Ok(Box::new((group, bytes)) as Box<dyn Any>)
                }))
            }
            Op::ProcessCommit => {
                let mut group = fork(&self.bob_client, &self.bob);
                let commit = Rc::clone(&self.commit_for_bob);
                Ok(Box::new(move || {
                    process_commit(&mut group, &commit)?;
                    Ok(Box::new((group, commit)) as Box<dyn Any>)
                }))
            }
            Op::Join => {
                let (id, data) = self.joiner_key_package.clone();
                for group_id in self.joiner.group_state_storage().stored_groups() {
                    self.joiner.group_state_storage().delete_group(&group_id);
                }
                self.joiner.key_package_store().insert(id, data);
                let joiner = Rc::clone(&self.joiner);
                let welcome = Rc::clone(&self.welcome);
                Ok(Box::new(move || {
                    let group = join(&joiner, &welcome)?;
                    Ok(Box::new((joiner, group, welcome)) as Box<dyn Any>)
                }))
            }
            Op::Encrypt1k => {
                let state = Rc::clone(
                    self.encrypt
                        .get_or_insert_with(|| Rc::new(RefCell::new(self.alice.clone()))),
                );
                Ok(Box::new(move || {
                    let bytes = encrypt(&mut state.borrow_mut())?;
                    Ok(Box::new((state, bytes)) as Box<dyn Any>)
                }))
            }
            Op::Decrypt1k => {
                let (sender, receiver) = self.decrypt.get_or_insert_with(|| {
                    (self.alice.clone(), Rc::new(RefCell::new(self.bob.clone())))
                });
                let message = encrypt(sender)?;
                let receiver = Rc::clone(receiver);
                Ok(Box::new(move || {
                    let len = decrypt(&mut receiver.borrow_mut(), &message)?;
                    if len != PAYLOAD_1K.len() {
                        return Err("decrypted payload has the wrong length".into());
                    }
                    Ok(Box::new((receiver, message)) as Box<dyn Any>)
                }))
            }
        }
    }
}

fn peer_benches(c: &mut Criterion) {
    let backends: [&dyn MlsBackend; 1] = [&MlsRsBackend];
    bench_backends(c, "peer", &backends, &Scale::from_env()).expect("peer benchmarks");
}

criterion_group!(benches, peer_benches);
criterion_main!(benches);
