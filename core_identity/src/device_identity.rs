//! Everything one device needs to act as its user in MLS.

use std::fmt;

use spacepanda_core::Timestamp;
use zeroize::Zeroizing;

use crate::address::Address;
use crate::credential::SpacePandaCredential;
use crate::device::{DeviceId, DeviceSignatureKeyPair};
use crate::display_name::DisplayName;
use crate::error::IdentityError;
use crate::identity_key::{IdentityKeyPair, IdentityPublicKey};
use crate::user_id::UserId;
use crate::verification::{VerifiedMember, verify_credential};

/// This device's identity: the user's public identity, the device id, the MLS signature key
/// pair, and the credential binding them (certified by the identity key).
///
/// It does not hold the identity *secret* key; [`IdentityStore`](crate::IdentityStore) keeps
/// that and reads it only to certify a device or export it. The MLS signature secret zeroizes on
/// drop and never appears in `Debug` output.
///
/// `core_mls` builds its OpenMLS signer and `BasicCredential` from
/// [`signature_private_key_bytes`](Self::signature_private_key_bytes),
/// [`signature_public_key`](Self::signature_public_key) and
/// [`credential_bytes`](Self::credential_bytes).
#[derive(Clone)]
pub struct DeviceIdentity {
    signature_keys: DeviceSignatureKeyPair,
    credential: SpacePandaCredential,
    credential_bytes: Vec<u8>,
}

impl DeviceIdentity {
    /// A new device of the user of `identity`: fresh MLS signature key pair, certified with
    /// `display_name` at `created_at`. (Use [`IdentityStore`](crate::IdentityStore) to persist
    /// it; this constructor is for tests and tools that do not.)
    pub fn create(
        identity: &IdentityKeyPair,
        device_id: DeviceId,
        display_name: DisplayName,
        created_at: Timestamp,
    ) -> Result<Self, IdentityError> {
        Self::certify(
            identity,
            device_id,
            DeviceSignatureKeyPair::generate(),
            display_name,
            created_at,
        )
    }

    /// Certifies `signature_keys` for `device_id`.
    pub(crate) fn certify(
        identity: &IdentityKeyPair,
        device_id: DeviceId,
        signature_keys: DeviceSignatureKeyPair,
        display_name: DisplayName,
        created_at: Timestamp,
    ) -> Result<Self, IdentityError> {
        let credential = SpacePandaCredential::issue(
            identity,
            device_id,
            signature_keys.public_key_bytes(),
            display_name,
            created_at,
        )?;
        let credential_bytes = credential.to_bytes()?;
        Ok(Self {
            signature_keys,
            credential,
            credential_bytes,
        })
    }

    /// Rebuilds a device from its stored parts, checking that they still belong together.
    pub(crate) fn from_parts(
        signature_keys: DeviceSignatureKeyPair,
        credential_bytes: Vec<u8>,
    ) -> Result<Self, IdentityError> {
        let credential = SpacePandaCredential::from_bytes(&credential_bytes)?;
        verify_credential(&credential, &signature_keys.public_key_bytes())?;
        Ok(Self {
            signature_keys,
            credential,
            credential_bytes,
        })
    }

    /// The user.
    pub fn user_id(&self) -> UserId {
        self.credential.user_id()
    }

    /// The user's identity public key.
    pub fn identity_public_key(&self) -> &IdentityPublicKey {
        self.credential.identity_public_key()
    }

    /// This device.
    pub fn device_id(&self) -> DeviceId {
        self.credential.certificate().device_id()
    }

    /// The display name certified for this device.
    pub fn display_name(&self) -> &DisplayName {
        self.credential.certificate().display_name()
    }

    /// When this device's certificate was issued.
    pub fn created_at(&self) -> Timestamp {
        self.credential.certificate().created_at()
    }

    /// This device's address, `name@fingerprint`.
    pub fn address(&self) -> Address {
        Address::new(self.display_name().clone(), self.user_id().fingerprint())
    }

    /// The credential.
    pub fn credential(&self) -> &SpacePandaCredential {
        &self.credential
    }

    /// The encoded credential: the identity bytes of this device's MLS `BasicCredential`.
    pub fn credential_bytes(&self) -> &[u8] {
        &self.credential_bytes
    }

    /// The MLS signature key pair.
    pub fn signature_key_pair(&self) -> &DeviceSignatureKeyPair {
        &self.signature_keys
    }

    /// The 32-byte Ed25519 MLS signature public key (the leaf's `signature_key`).
    pub fn signature_public_key(&self) -> [u8; 32] {
        self.signature_keys.public_key_bytes()
    }

    /// The 32-byte Ed25519 MLS signature secret key, zeroized when dropped.
    pub fn signature_private_key_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.signature_keys.private_key_bytes()
    }

    /// Runs [`verify_member`](crate::verify_member) on this device's own credential and key,
    /// as any peer would.
    pub fn verify_self(&self) -> Result<VerifiedMember, IdentityError> {
        verify_credential(&self.credential, &self.signature_public_key())
    }
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("address", &self.address())
            .field("user_id", &self.user_id())
            .field("device_id", &self.device_id())
            .field("signature_keys", &self.signature_keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_created_device_verifies_itself_and_hides_its_secret() {
        let identity = IdentityKeyPair::generate();
        let device = DeviceIdentity::create(
            &identity,
            DeviceId::generate(),
            DisplayName::new("frank").unwrap(),
            Timestamp::from_unix_secs(1),
        )
        .unwrap();
        let member = device.verify_self().unwrap();
        assert_eq!(member.user_id(), identity.user_id());
        assert_eq!(
            member.signature_public_key(),
            &device.signature_public_key()
        );
        assert_ne!(
            device.signature_public_key(),
            *identity.public_key().as_bytes()
        );
        let debug = format!("{device:?}");
        assert!(debug.contains("frank@"));
        assert!(!debug.contains(&hex::encode(
            device.signature_private_key_bytes().as_slice()
        )));
        assert!(!debug.contains(&hex::encode(*identity.secret_bytes())));
    }

    #[test]
    fn parts_that_do_not_belong_together_are_refused() {
        let identity = IdentityKeyPair::generate();
        let device = DeviceIdentity::create(
            &identity,
            DeviceId::generate(),
            DisplayName::new("gina").unwrap(),
            Timestamp::EPOCH,
        )
        .unwrap();
        let again = DeviceIdentity::from_parts(
            device.signature_key_pair().clone(),
            device.credential_bytes().to_vec(),
        )
        .unwrap();
        assert_eq!(again.credential(), device.credential());
        assert!(matches!(
            DeviceIdentity::from_parts(
                DeviceSignatureKeyPair::generate(),
                device.credential_bytes().to_vec()
            ),
            Err(IdentityError::SignatureKeyMismatch { .. })
        ));
    }
}
