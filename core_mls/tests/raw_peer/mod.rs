//! An independent MLS client in a SpacePanda group: OpenMLS driven directly, outside the
//! engine, so it can send what the engine never sends (a standalone Add proposal, arbitrary
//! authenticated data) — the way mls-rs did when it found the silent states of
//! `tests/silent_states.rs`. It may carry a genuine SpacePanda credential (a member the engine
//! accepts) or another application's (a member it must refuse).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::sync::Arc;

use core_identity::{DeviceIdentity, IdentityStore};
use core_mls::{CIPHERSUITE, Envelope, EnvelopeKind};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, KeyPackageIn, Lifetime, MlsGroup,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProtocolVersion,
    StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::types::SignatureScheme;
use spacepanda_core::{Clock, MemoryStore, SharedStore, Timestamp};
use tls_codec::{Deserialize as _, Serialize as _};

/// The peer.
pub struct RawPeer {
    pub provider: OpenMlsRustCrypto,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
    /// Its SpacePanda identity, if it has one.
    pub identity: Option<DeviceIdentity>,
    pub group: Option<MlsGroup>,
}

impl RawPeer {
    /// A SpacePanda device (identity in a store of its own) whose MLS is OpenMLS, not the engine.
    pub fn spacepanda(name: &str, clock: Arc<dyn Clock>) -> Self {
        let store: SharedStore = Arc::new(MemoryStore::new());
        Self::device(IdentityStore::new(store, clock).create(name).unwrap())
    }

    /// The SpacePanda device `identity` (e.g. one a harness made), driven through OpenMLS.
    pub fn device(identity: DeviceIdentity) -> Self {
        let signer = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            identity.signature_private_key_bytes().to_vec(),
            identity.signature_public_key().to_vec(),
        );
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.credential_bytes().to_vec()).into(),
            signature_key: identity.signature_public_key().to_vec().into(),
        };
        Self::with(signer, credential, Some(identity))
    }

    /// A device of another MLS application: a basic credential whose identity is `identity`.
    pub fn foreign(identity: &[u8]) -> Self {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.to_vec()).into(),
            signature_key: signer.public().to_vec().into(),
        };
        Self::with(signer, credential, None)
    }

    fn with(
        signer: SignatureKeyPair,
        credential: CredentialWithKey,
        identity: Option<DeviceIdentity>,
    ) -> Self {
        Self {
            provider: OpenMlsRustCrypto::default(),
            signer,
            credential,
            identity,
            group: None,
        }
    }

    /// A key package, as published (a TLS-encoded MLS message), valid from an hour before
    /// `now` for 14 days: `now` is the engines' clock, which need not be the system's.
    pub fn key_package(&self, now: Timestamp) -> Vec<u8> {
        let now = now.unix_secs();
        let bundle = KeyPackage::builder()
            .key_package_lifetime(Lifetime::init(now - 3600, now + 14 * 24 * 3600))
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .unwrap()
    }

    /// Joins from the Welcome envelope the engine produced.
    pub fn join(&mut self, welcome_envelope: &[u8]) {
        let envelope = Envelope::from_bytes(welcome_envelope, usize::MAX).unwrap();
        assert_eq!(envelope.kind(), EnvelopeKind::Welcome);
        let MlsMessageBodyIn::Welcome(welcome) =
            MlsMessageIn::tls_deserialize_exact(envelope.payload())
                .unwrap()
                .extract()
        else {
            panic!("not a Welcome");
        };
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .build();
        let group = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap();
        self.group = Some(group);
    }

    fn group(&mut self) -> &mut MlsGroup {
        self.group.as_mut().expect("not in a group")
    }

    fn envelope(kind: EnvelopeKind, message: &MlsMessageOut) -> Vec<u8> {
        Envelope::new(kind, message.tls_serialize_detached().unwrap()).to_bytes()
    }

    /// An application message with `aad` as its authenticated data, carrying a SpacePanda
    /// application payload (version 1, message id, sent at, body).
    pub fn application(
        &mut self,
        aad: &[u8],
        message_id: [u8; 16],
        sent_at: Timestamp,
        body: &[u8],
    ) -> Vec<u8> {
        let mut plaintext = vec![1];
        plaintext.extend_from_slice(&message_id);
        plaintext.extend_from_slice(&sent_at.unix_millis().to_be_bytes());
        plaintext.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        plaintext.extend_from_slice(body);
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().expect("not in a group");
        group.set_aad(aad.to_vec());
        let message = group.create_message(provider, signer, &plaintext).unwrap();
        Self::envelope(EnvelopeKind::Application, &message)
    }

    /// A standalone Add proposal for the device of `key_package` (which SpacePanda refuses).
    pub fn propose_add(&mut self, key_package: &[u8]) -> Vec<u8> {
        let MlsMessageBodyIn::KeyPackage(key_package) =
            MlsMessageIn::tls_deserialize_exact(key_package)
                .unwrap()
                .extract()
        else {
            panic!("not a key package");
        };
        let key_package =
            KeyPackageIn::validate(key_package, self.provider.crypto(), ProtocolVersion::Mls10)
                .unwrap();
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().expect("not in a group");
        let (proposal, _) = group
            .propose_add_member(provider, signer, &key_package)
            .unwrap();
        Self::envelope(EnvelopeKind::Proposal, &proposal)
    }

    /// A commit of everything pending (by reference), not merged here.
    pub fn commit_pending(&mut self) -> Vec<u8> {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().expect("not in a group");
        let (commit, _, _) = group.commit_to_pending_proposals(provider, signer).unwrap();
        Self::envelope(EnvelopeKind::Commit, &commit)
    }

    /// An external commit into the group a GroupInfo envelope (from the engine's
    /// `export_group_info`) describes, removing the member whose leaf has
    /// `replacing_signature_key` (default: the peer's own old leaf, if any). Not merged here.
    pub fn external_commit(
        &mut self,
        group_info_envelope: &[u8],
        replacing_signature_key: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let envelope = Envelope::from_bytes(group_info_envelope, usize::MAX).unwrap();
        assert_eq!(envelope.kind(), EnvelopeKind::GroupInfo);
        let MlsMessageBodyIn::GroupInfo(info) =
            MlsMessageIn::tls_deserialize_exact(envelope.payload())
                .unwrap()
                .extract()
        else {
            panic!("not a GroupInfo");
        };
        let mut builder = MlsGroup::external_commit_builder();
        if let Some(key) = replacing_signature_key {
            builder = builder.replacing_signature_key(key);
        }
        let (group, bundle) = builder
            .build_group(&self.provider, info, self.credential.clone())
            .unwrap()
            .load_psks(self.provider.storage())
            .unwrap()
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .unwrap()
            .finalize(&self.provider)
            .unwrap();
        self.group = Some(group);
        Self::envelope(EnvelopeKind::Commit, bundle.commit())
    }

    /// The epoch the peer is at.
    pub fn epoch(&mut self) -> u64 {
        self.group().epoch().as_u64()
    }
}

/// A syntactically valid MLS PrivateMessage for `group` at `epoch` with random content: what
/// anyone can send, and nobody can authenticate before reaching `epoch` (the key to decrypt it
/// does not exist yet). Wrapped in an application envelope.
pub fn junk_private_message(group: &[u8], epoch: u64, rng: &mut impl rand::RngCore) -> Vec<u8> {
    fn opaque(out: &mut Vec<u8>, bytes: &[u8]) {
        // RFC 9000 variable-length integer (MLS `<V>`), 1 or 2 bytes here.
        let len = u16::try_from(bytes.len()).unwrap();
        assert!(len < 0x4000);
        if len < 0x40 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(0x4000 | len).to_be_bytes());
        }
        out.extend_from_slice(bytes);
    }
    let mut random = |n: usize| {
        let mut bytes = vec![0u8; n];
        rng.fill_bytes(&mut bytes);
        bytes
    };
    let mut message = Vec::new();
    message.extend_from_slice(&1u16.to_be_bytes()); // mls10
    message.extend_from_slice(&2u16.to_be_bytes()); // mls_private_message
    opaque(&mut message, group);
    message.extend_from_slice(&epoch.to_be_bytes());
    message.push(1); // application
    opaque(&mut message, &[]);
    opaque(&mut message, &random(28));
    opaque(&mut message, &random(120));
    Envelope::new(EnvelopeKind::Application, message).to_bytes()
}
