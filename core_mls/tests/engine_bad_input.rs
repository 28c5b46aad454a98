//! Every typed rejection of the message pipeline, each fed deliberately; afterwards the group
//! still works.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use core_mls::{
    CIPHERSUITE, Disposition, Envelope, EnvelopeKind, MlsConfig, MlsError, UnknownKeyPackageHint,
};
use engine_harness::Harness;
use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, Lifetime, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, SignatureScheme, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use spacepanda_core::Clock as _;
use tls_codec::{Deserialize as _, Serialize as _};

fn three() -> (Harness, core_mls::GroupId) {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 21);
    let group = h.group_with(0, &[1, 2]);
    (h, group)
}

fn err(h: &mut Harness, node: usize, bytes: &[u8]) -> MlsError {
    h.nodes[node].client().handle_envelope(bytes).unwrap_err()
}

#[test]
fn oversized_garbage_future_and_mismatched_envelopes_are_typed() {
    let (mut h, group) = three();
    let max = h.config.max_envelope_len;
    assert!(matches!(
        err(&mut h, 1, &vec![0u8; max + 1]),
        MlsError::EnvelopeTooLarge { .. }
    ));
    assert!(matches!(
        err(&mut h, 1, b"not an envelope"),
        MlsError::MalformedEnvelope { .. }
    ));
    let mut future = Envelope::new(EnvelopeKind::Application, vec![1, 2, 3]).to_bytes();
    future[..2].copy_from_slice(&9u16.to_be_bytes());
    assert!(matches!(
        err(&mut h, 1, &future),
        MlsError::UnsupportedEnvelopeVersion { found: 9, .. }
    ));
    let garbage = Envelope::new(EnvelopeKind::Commit, vec![0xff; 64]).to_bytes();
    assert!(matches!(
        err(&mut h, 1, &garbage),
        MlsError::MalformedMessage { .. }
    ));
    // A real application message relabelled as a commit.
    let message = h.nodes[0].client().send(&group, b"hello").unwrap();
    let relabelled = Envelope::new(
        EnvelopeKind::Commit,
        message.outbound[0].envelope.payload().to_vec(),
    );
    assert!(matches!(
        err(&mut h, 1, &relabelled.to_bytes()),
        MlsError::MalformedEnvelope { .. }
    ));
    h.absorb(0, message);
    h.deliver_all();
    h.assert_group_works(&group, 1, &[0, 2]);
}

#[test]
fn tampered_ciphertext_is_rejected_and_changes_nothing() {
    let (mut h, group) = three();
    let message = h.nodes[0].client().send(&group, b"integrity").unwrap();
    let mut payload = message.outbound[0].envelope.payload().to_vec();
    let last = payload.len() - 1;
    payload[last] ^= 0x40;
    let tampered = Envelope::new(EnvelopeKind::Application, payload).to_bytes();
    let before = h.nodes[1].client().epoch_authenticator(&group).unwrap();
    assert!(matches!(
        err(&mut h, 1, &tampered),
        MlsError::RejectedMessage { .. }
    ));
    assert_eq!(
        h.nodes[1].client().epoch_authenticator(&group).unwrap(),
        before
    );
    // The genuine message still decrypts afterwards (the failed attempt consumed nothing).
    h.absorb(0, message.clone());
    h.deliver_all();
    assert_eq!(h.copies(1, &Harness::sent_id(&message)), 1);
}

#[test]
fn own_echo_and_duplicates_are_dispositions_not_errors() {
    let (mut h, group) = three();
    let message = h.nodes[0].client().send(&group, b"echo").unwrap();
    let bytes = message.outbound[0].envelope.to_bytes();
    assert_eq!(h.handle(0, &bytes), Ok(Disposition::Duplicate), "own echo");
    assert_eq!(h.handle(1, &bytes), Ok(Disposition::Processed));
    assert_eq!(h.handle(1, &bytes), Ok(Disposition::Duplicate));
    assert_eq!(h.copies(1, &Harness::sent_id(&message)), 1);
    assert!(
        h.nodes[0].delivered.is_empty(),
        "a device never delivers its own message to itself"
    );
}

#[test]
fn a_competing_commit_outside_the_fork_window_is_refused_counted_and_reported() {
    // No snapshots at all: every competing commit is outside the window.
    let config = MlsConfig {
        fork_window_epochs: 0,
        ..MlsConfig::default()
    };
    let mut h = Harness::memory_with(&["alice", "bob", "carol"], 21, config);
    let group = h.group_with(0, &[1, 2]);
    let alice_commit = h.nodes[0].client().self_update(&group).unwrap();
    let bob_commit = h.nodes[1].client().self_update(&group).unwrap();
    assert_eq!(
        h.handle(2, &alice_commit.outbound[0].envelope.to_bytes()),
        Ok(Disposition::Processed)
    );
    let before = h.nodes[2].client().epoch_authenticator(&group).unwrap();
    let refused = err(&mut h, 2, &bob_commit.outbound[0].envelope.to_bytes());
    assert!(
        matches!(
            refused,
            MlsError::ForkOutsideWindow {
                message_epoch: 1,
                current_epoch: 2,
                oldest_epoch: None,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(
        h.nodes[2].client().epoch_authenticator(&group).unwrap(),
        before
    );
    assert_eq!(
        h.nodes[2]
            .client()
            .fork_report(&group)
            .unwrap()
            .outside_window,
        1
    );
    let now = h.clock.now();
    let ticked = h.nodes[2].client().tick(now).unwrap();
    assert!(
        ticked.events.iter().any(|e| matches!(
            e,
            core_mls::Event::ForkOutsideWindow { group: g, count: 1 } if *g == group
        )),
        "{:?}",
        ticked.events
    );
    let again = h.nodes[2].client().tick(now).unwrap();
    assert!(
        !again
            .events
            .iter()
            .any(|e| matches!(e, core_mls::Event::ForkOutsideWindow { .. })),
        "reported once"
    );
    h.nodes[0]
        .client()
        .ack_sent(alice_commit.outbound[0].id)
        .unwrap();
    // Carol and alice agree and continue.
    h.assert_converged(&group, &[0, 2]);
    h.assert_group_works(&group, 2, &[0]);
}

#[test]
fn a_proposal_flood_is_cut_at_the_per_epoch_limit() {
    let config = MlsConfig {
        max_proposals_per_epoch: 1,
        ..MlsConfig::default()
    };
    let mut h = Harness::memory_with(&["alice", "bob", "carol", "dave"], 22, config);
    let group = h.group_with(0, &[1, 2, 3]);
    // Dave is not the designated committer (alice is), so proposals accumulate at dave.
    let bob_leave = h.nodes[1].client().leave_group(&group).unwrap();
    let carol_leave = h.nodes[2].client().leave_group(&group).unwrap();
    assert_eq!(
        h.handle(3, &bob_leave.outbound[0].envelope.to_bytes()),
        Ok(Disposition::Processed)
    );
    let flood = err(&mut h, 3, &carol_leave.outbound[0].envelope.to_bytes());
    assert!(
        matches!(flood, MlsError::TooManyProposals { max: 1, .. }),
        "{flood}"
    );
}

#[test]
fn a_commit_adding_a_forged_member_is_rejected_whole() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 21);
    // Bob turns malicious: he runs plain OpenMLS instead of an engine, with his genuine device
    // identity, so alice adds him like anyone else. Once in, he commits an add of a key package
    // whose credential is carol's (genuine bytes) but whose signature key is his own fresh key.
    h.close(1);
    let provider = OpenMlsRustCrypto::default();
    let identity = h.nodes[1].identity.clone();
    let bob_signer = SignatureKeyPair::from_raw(
        SignatureScheme::ED25519,
        identity.signature_private_key_bytes().to_vec(),
        identity.signature_public_key().to_vec(),
    );
    let bob_credential = CredentialWithKey {
        credential: BasicCredential::new(identity.credential_bytes().to_vec()).into(),
        signature_key: bob_signer.public().into(),
    };
    // Valid by the harness's clock (which starts this week), as alice's engine checks it.
    let now = h.clock.now().unix_secs();
    let bob_package = KeyPackage::builder()
        .key_package_lifetime(Lifetime::init(now - 3600, now + 14 * 24 * 3600))
        .build(CIPHERSUITE, &provider, &bob_signer, bob_credential)
        .unwrap();
    let bob_package = MlsMessageOut::from(bob_package.key_package().clone())
        .tls_serialize_detached()
        .unwrap();
    let group = h.nodes[0].client().create_group().unwrap();
    let carol_package = h.key_package(2);
    let g = group.clone();
    h.run(0, move |c| c.add_members(&g, &[bob_package, carol_package]));
    h.deliver_all();
    let welcome = h.nodes[1]
        .inbox
        .iter()
        .map(|bytes| Envelope::from_bytes(bytes, usize::MAX).unwrap())
        .find(|envelope| envelope.kind() == EnvelopeKind::Welcome)
        .expect("alice sent bob a Welcome");
    let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(welcome.payload())
        .unwrap()
        .extract()
    else {
        panic!("the Welcome envelope does not hold a Welcome")
    };
    let join_config = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();
    let mut bob_group = StagedWelcome::new_from_welcome(&provider, &join_config, welcome, None)
        .unwrap()
        .into_group(&provider)
        .unwrap();
    assert_eq!(
        bob_group.epoch_authenticator().as_slice(),
        h.nodes[0].client().epoch_authenticator(&group).unwrap(),
        "bob is a genuine member"
    );

    let forged_signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let forged = CredentialWithKey {
        credential: BasicCredential::new(h.nodes[2].identity.credential_bytes().to_vec()).into(),
        signature_key: forged_signer.public().into(),
    };
    let key_package = KeyPackage::builder()
        .build(CIPHERSUITE, &provider, &forged_signer, forged)
        .unwrap();
    let (commit, _, _) = bob_group
        .add_members(&provider, &bob_signer, &[key_package.key_package().clone()])
        .unwrap();
    let envelope = Envelope::new(
        EnvelopeKind::Commit,
        commit.tls_serialize_detached().unwrap(),
    )
    .to_bytes();
    let before = h.nodes[0].client().epoch_authenticator(&group).unwrap();
    let rejected = err(&mut h, 0, &envelope);
    assert!(
        matches!(rejected, MlsError::UnverifiedMember { .. }),
        "{rejected}"
    );
    assert_eq!(
        h.nodes[0].client().epoch_authenticator(&group).unwrap(),
        before
    );
    assert!(matches!(
        err(&mut h, 2, &envelope),
        MlsError::UnverifiedMember { .. }
    ));
    h.assert_group_works(&group, 0, &[2]);
}

#[test]
fn a_welcome_for_someone_else_names_no_key_package_of_ours() {
    let mut h = Harness::memory(&["alice", "bob", "carol"], 23);
    let group = h.nodes[0].client().create_group().unwrap();
    let package = h.key_package(1);
    let add = h.nodes[0].client().add_members(&group, &[package]).unwrap();
    let welcome = add
        .outbound
        .iter()
        .find(|o| o.envelope.kind() == EnvelopeKind::Welcome)
        .unwrap()
        .envelope
        .to_bytes();
    match err(&mut h, 2, &welcome) {
        MlsError::NoMatchingKeyPackage { hint, .. } => {
            assert_eq!(hint, UnknownKeyPackageHint::NeverOurs)
        }
        other => panic!("expected NoMatchingKeyPackage, got {other}"),
    }
    // Bob, the rightful recipient, still joins.
    assert_eq!(h.handle(1, &welcome), Ok(Disposition::Processed));
}

#[test]
fn api_misuse_is_typed() {
    let (mut h, group) = three();
    let too_big = vec![0u8; h.config.max_application_len + 1];
    assert!(matches!(
        h.nodes[0].client().send(&group, &too_big),
        Err(MlsError::MessageTooLarge { .. })
    ));
    let unknown = core_mls::GroupId::from_slice(b"no such group");
    assert!(matches!(
        h.nodes[0].client().send(&unknown, b"x"),
        Err(MlsError::UnknownGroup { .. })
    ));
    let me = h.nodes[0].address();
    assert!(matches!(
        h.nodes[0]
            .client()
            .remove_device(&group, &me.user_id, &me.device_id),
        Err(MlsError::InvalidArgument { .. })
    ));
    // Adding a device that is already a member.
    let again = h.key_package(1);
    assert!(matches!(
        h.nodes[0].client().add_members(&group, &[again]),
        Err(MlsError::AlreadyMember { .. })
    ));
    assert!(matches!(
        h.nodes[0].client().add_members(&group, &[b"junk".to_vec()]),
        Err(MlsError::InvalidKeyPackage { .. })
    ));
    h.assert_group_works(&group, 0, &[1, 2]);
}
