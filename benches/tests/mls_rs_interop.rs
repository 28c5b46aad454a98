//! mls-rs, an independent MLS implementation, as a member of a SpacePanda group (a genuine
//! SpacePanda credential for its own signature key). It sends what the engine itself never
//! does — application messages with 16 bytes of authenticated data, a standalone Add proposal
//! and a commit of it — and the engine must not go silent: the message is delivered, the
//! refused proposal is a typed error, and the commit that references it ends in
//! `Event::CommitAbandoned` at the next tick. (core_mls/tests/silent_states.rs has the same
//! states with OpenMLS as the independent client.)
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use core_identity::{DeviceId, DisplayName, IdentityKeyPair, IdentityStore, SpacePandaCredential};
use core_mls::{
    AbandonReason, Disposition, Envelope, EnvelopeKind, Event, MlsClient, MlsConfig, MlsError,
};
use mls_rs::client_builder::PaddingMode;
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::mls_rules::{DefaultMlsRules, EncryptionOptions};
use mls_rs::{CipherSuite, CipherSuiteProvider, Client, CryptoProvider, ExtensionList, MlsMessage};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use spacepanda_core::{Clock, ManualClock, MemoryStore, SharedStore};

const CIPHERSUITE: CipherSuite = CipherSuite::CURVE25519_AES128;

fn engine(name: &str, clock: &ManualClock, seed: u8) -> MlsClient {
    let store: SharedStore = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let identity = IdentityStore::new(store.clone(), clock.clone())
        .create(name)
        .unwrap();
    MlsClient::open_seeded(store, clock, identity, MlsConfig::default(), [seed; 32]).unwrap()
}

/// An mls-rs client whose basic credential is a SpacePanda credential certifying its key.
fn mls_rs_member(clock: &ManualClock) -> Client<impl mls_rs::client_builder::MlsConfig> {
    mls_rs_client(|public| {
        SpacePandaCredential::issue(
            &IdentityKeyPair::generate(),
            DeviceId::generate(),
            public.try_into().unwrap(),
            DisplayName::new("rita").unwrap(),
            clock.now(),
        )
        .unwrap()
        .to_bytes()
        .unwrap()
    })
}

/// An mls-rs client whose basic credential's identity is `identity(public key)`.
fn mls_rs_client(
    identity: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Client<impl mls_rs::client_builder::MlsConfig> {
    let crypto = RustCryptoProvider::default();
    let suite = crypto.cipher_suite_provider(CIPHERSUITE).unwrap();
    let (secret, public) = suite.signature_key_generate().unwrap();
    let identity = SigningIdentity::new(
        BasicCredential::new(identity(public.as_bytes())).into_credential(),
        public,
    );
    Client::builder()
        .crypto_provider(crypto)
        .identity_provider(BasicIdentityProvider)
        // SpacePanda groups take handshake messages encrypted only.
        .mls_rules(
            DefaultMlsRules::new()
                .with_encryption_options(EncryptionOptions::new(true, PaddingMode::None)),
        )
        .signing_identity(identity, secret, CIPHERSUITE)
        .build()
}

fn envelope(kind: EnvelopeKind, message: &MlsMessage) -> Vec<u8> {
    Envelope::new(kind, message.to_bytes().unwrap()).to_bytes()
}

/// A SpacePanda application payload: version 1, message id, sent at (ms), body.
fn app_payload(message_id: [u8; 16], sent_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = vec![1];
    payload.extend_from_slice(&message_id);
    payload.extend_from_slice(&sent_at_ms.to_be_bytes());
    payload.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    payload.extend_from_slice(body);
    payload
}

#[test]
fn mls_rs_member_leaves_no_silent_state() {
    let clock = ManualClock::starting_now();
    let mut alice = engine("alice", &clock, 1);
    let carol = engine("carol", &clock, 2);
    let rita = mls_rs_member(&clock);

    let group = alice.create_group().unwrap();
    let package = rita
        .generate_key_package_message(ExtensionList::default(), ExtensionList::default(), None)
        .unwrap()
        .to_bytes()
        .unwrap();
    let added = alice.add_members(&group, &[package]).unwrap();
    let welcome = added
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == EnvelopeKind::Welcome)
        .unwrap();
    let welcome = MlsMessage::from_bytes(welcome.envelope.payload()).unwrap();
    let (mut rita_group, _) = rita.join_group(None, &welcome, None).unwrap();

    // 16 bytes of authenticated data: not a branch tag of ours, delivered.
    let message = rita_group
        .encrypt_application_message(
            &app_payload([7; 16], clock.now().unix_millis(), b"hello from mls-rs"),
            vec![0x42; 16],
        )
        .unwrap();
    let received = alice
        .handle_envelope(&envelope(EnvelopeKind::Application, &message))
        .unwrap();
    assert_eq!(received.disposition, Disposition::Processed);
    assert!(received.events.iter().any(|e| matches!(
        e,
        Event::Message { body, message_id, .. } if body == b"hello from mls-rs" && *message_id == core_mls::MessageId([7; 16])
    )));

    // A standalone Add proposal (refused) and rita's commit of it (never applicable here).
    let carol_package = carol
        .publishable_key_packages()
        .unwrap()
        .into_iter()
        .find(|p| !p.last_resort)
        .unwrap()
        .key_package;
    let proposal = rita_group
        .propose_add(MlsMessage::from_bytes(&carol_package).unwrap(), Vec::new())
        .unwrap();
    let refused = alice
        .handle_envelope(&envelope(EnvelopeKind::Proposal, &proposal))
        .unwrap_err();
    assert!(
        matches!(refused, MlsError::RejectedMessage { .. }),
        "{refused:?}"
    );
    let commit = rita_group.commit(Vec::new()).unwrap().commit_message;
    let commit = envelope(EnvelopeKind::Commit, &commit);
    let epoch = alice.epoch(&group).unwrap();
    assert_eq!(
        alice.handle_envelope(&commit).unwrap().disposition,
        Disposition::Buffered
    );
    let now = clock.now();
    assert!(alice.next_deadline().unwrap().unwrap() <= now);
    let ticked = alice.tick(now).unwrap();
    let commit_id = Envelope::from_bytes(&commit, usize::MAX).unwrap().id();
    assert!(
        ticked.events.contains(&Event::CommitAbandoned {
            group: group.clone(),
            epoch,
            commit: commit_id,
            reason: AbandonReason::ProposalRefused,
        }),
        "{:?}",
        ticked.events
    );
    assert_eq!(alice.epoch(&group).unwrap(), epoch);
}

#[test]
fn an_mls_rs_key_package_of_another_application_is_named_as_such() {
    let clock = ManualClock::starting_now();
    let mut alice = engine("alice", &clock, 3);
    let group = alice.create_group().unwrap();
    let player = mls_rs_client(|_| b"player-1".to_vec());
    let package = player
        .generate_key_package_message(ExtensionList::default(), ExtensionList::default(), None)
        .unwrap()
        .to_bytes()
        .unwrap();
    let error = alice.add_members(&group, &[package]).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("not a SpacePanda credential"), "{text}");
    assert!(!text.contains("version 28780"), "{text}");
}
