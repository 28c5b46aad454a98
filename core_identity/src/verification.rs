//! The binding check between an MLS leaf and a SpacePanda user and device.

use spacepanda_core::Timestamp;

use crate::address::Address;
use crate::credential::SpacePandaCredential;
use crate::device::DeviceId;
use crate::display_name::DisplayName;
use crate::error::IdentityError;
use crate::identity_key::IdentityPublicKey;
use crate::user_id::UserId;

/// A member whose credential passed [`verify_member`]: only this module makes them, so holding
/// one is proof the checks ran.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedMember {
    user_id: UserId,
    device_id: DeviceId,
    display_name: DisplayName,
    identity_public_key: IdentityPublicKey,
    signature_public_key: [u8; 32],
    created_at: Timestamp,
}

impl VerifiedMember {
    /// The user.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// The device.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The display name the user certified for this device.
    pub fn display_name(&self) -> &DisplayName {
        &self.display_name
    }

    /// The user's identity public key (input to a [`SafetyNumber`](crate::SafetyNumber)).
    pub fn identity_public_key(&self) -> &IdentityPublicKey {
        &self.identity_public_key
    }

    /// The leaf's MLS signature public key, as certified.
    pub fn signature_public_key(&self) -> &[u8; 32] {
        &self.signature_public_key
    }

    /// When the device certificate was issued.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The member's address, `name@fingerprint`.
    pub fn address(&self) -> Address {
        Address::new(self.display_name.clone(), self.user_id.fingerprint())
    }
}

/// Verifies that `credential_bytes` (the identity bytes of an MLS `BasicCredential`) bind the
/// leaf whose MLS signature public key is `leaf_signature_key` to a SpacePanda user and device.
///
/// Checks, in order, each failure its own error:
/// 1. the bytes are a SpacePanda credential at all ([`IdentityError::NotSpacePandaCredential`]:
///    another MLS application's identity) and decode within bounds
///    ([`IdentityError::Oversized`], [`IdentityError::Truncated`],
///    [`IdentityError::UnsupportedVersion`], [`IdentityError::Malformed`]);
/// 2. the user id is derived from the identity key in the credential (it is never read from the
///    bytes, so it cannot be claimed falsely);
/// 3. the device certificate is the identity key's signature over (user id, device id, MLS
///    signature key, display name, created at) ([`IdentityError::BadCertificateSignature`]:
///    signed by another key, or a field altered);
/// 4. the certified MLS signature key is the leaf's ([`IdentityError::SignatureKeyMismatch`]:
///    a genuine credential moved to another leaf).
///
/// `core_mls` runs this on every key package, on every member of a group it joins, and on
/// every member a commit adds.
pub fn verify_member(
    credential_bytes: &[u8],
    leaf_signature_key: &[u8],
) -> Result<VerifiedMember, IdentityError> {
    let credential = SpacePandaCredential::from_bytes(credential_bytes)?;
    verify_credential(&credential, leaf_signature_key)
}

/// [`verify_member`], and the credential must belong to `expected` — for example the user an
/// invitation was meant for, or the sender a message claims. A credential of any other user
/// (however valid) is [`IdentityError::UserIdMismatch`], checked before the certificate.
pub fn verify_member_as(
    credential_bytes: &[u8],
    leaf_signature_key: &[u8],
    expected: &UserId,
) -> Result<VerifiedMember, IdentityError> {
    let credential = SpacePandaCredential::from_bytes(credential_bytes)?;
    if credential.user_id() != *expected {
        return Err(IdentityError::UserIdMismatch {
            expected: *expected,
            found: credential.user_id(),
        });
    }
    verify_credential(&credential, leaf_signature_key)
}

/// Steps 2–4 of [`verify_member`] for an already decoded credential.
pub fn verify_credential(
    credential: &SpacePandaCredential,
    leaf_signature_key: &[u8],
) -> Result<VerifiedMember, IdentityError> {
    let identity_public_key = *credential.identity_public_key();
    let user_id = identity_public_key.user_id();
    let certificate = credential.certificate();
    // `from_bytes` derives the certificate's user id from the identity key; `verify` checks
    // them again, so a credential built by hand cannot name another user either.
    certificate.verify(&identity_public_key)?;
    if certificate.signature_public_key().as_slice() != leaf_signature_key {
        return Err(IdentityError::SignatureKeyMismatch {
            user_id,
            device_id: certificate.device_id(),
        });
    }
    Ok(VerifiedMember {
        user_id,
        device_id: certificate.device_id(),
        display_name: certificate.display_name().clone(),
        identity_public_key,
        signature_public_key: *certificate.signature_public_key(),
        created_at: certificate.created_at(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::device::DeviceSignatureKeyPair;
    use crate::identity_key::IdentityKeyPair;

    #[test]
    fn a_genuine_credential_verifies_with_its_leaf_key() {
        let identity = IdentityKeyPair::generate();
        let keys = DeviceSignatureKeyPair::generate();
        let device = DeviceId::generate();
        let bytes = SpacePandaCredential::issue(
            &identity,
            device,
            keys.public_key_bytes(),
            DisplayName::new("erin").unwrap(),
            Timestamp::from_unix_secs(5),
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        let member = verify_member(&bytes, &keys.public_key_bytes()).unwrap();
        assert_eq!(member.user_id(), identity.user_id());
        assert_eq!(member.device_id(), device);
        assert_eq!(member.display_name().as_str(), "erin");
        assert_eq!(member.created_at(), Timestamp::from_unix_secs(5));
        assert_eq!(member.identity_public_key(), &identity.public_key());
        assert_eq!(
            member.address().to_string(),
            format!("erin@{}", identity.user_id().fingerprint())
        );
        let as_expected = verify_member_as(&bytes, &keys.public_key_bytes(), &identity.user_id());
        assert_eq!(as_expected.unwrap(), member);
        // A leaf key of the wrong length is a mismatch, not a panic.
        assert!(matches!(
            verify_member(&bytes, &[1, 2, 3]),
            Err(IdentityError::SignatureKeyMismatch { .. })
        ));
    }
}
