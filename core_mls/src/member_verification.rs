//! Identity binding of MLS leaves: every leaf this device accepts — in a key package it adds, in
//! a group it joins, in a commit it merges — must carry a SpacePanda credential whose
//! certificate covers the leaf's own signature key (core_identity's `verify_member`).

use std::collections::HashMap;

use core_identity::VerifiedMember;
use openmls::prelude::{BasicCredential, Credential, CredentialType};

use crate::error::MlsError;
use crate::events::DeviceAddress;

/// The MLS signature key a SpacePanda credential certifies (OpenMLS resolves a message's sender
/// to its credential; the leaf's key is the certified one, or the leaf was never accepted).
pub(crate) fn certified_signature_key(credential: &Credential) -> Result<Vec<u8>, MlsError> {
    let basic =
        BasicCredential::try_from(credential.clone()).map_err(|_| MlsError::UnverifiedMember {
            reason: core_identity::IdentityError::Malformed {
                what: "MLS credential",
                reason: "basic credential does not decode",
            },
        })?;
    let decoded = core_identity::SpacePandaCredential::from_bytes(basic.identity())
        .map_err(|reason| MlsError::UnverifiedMember { reason })?;
    Ok(decoded.certificate().signature_public_key().to_vec())
}

/// Verified leaves, keyed by signature key. A certificate binds exactly one signature key, so a
/// signature key verified once with a given credential stays verified; the credential bytes are
/// compared on every hit so a different credential with the same key is checked afresh.
#[derive(Debug, Default)]
pub(crate) struct MemberCache {
    verified: HashMap<Vec<u8>, (Vec<u8>, VerifiedMember)>,
}

/// Upper bound on cached leaves; past it the cache starts over (verification is ≈ 50 µs).
const MAX_CACHED: usize = 65_536;

impl MemberCache {
    /// Verifies the SpacePanda binding of a leaf's credential and signature key.
    pub(crate) fn verify(
        &mut self,
        credential: &Credential,
        signature_key: &[u8],
    ) -> Result<VerifiedMember, MlsError> {
        let identity = basic_identity(credential)?;
        if let Some(member) = self.hit(identity, signature_key) {
            return Ok(member.clone());
        }
        self.verify_afresh(identity, signature_key)
    }

    /// The device of a leaf, verified as [`verify`](Self::verify) does; a leaf verified before
    /// costs one lookup and no copy of its member.
    pub(crate) fn device_of(
        &mut self,
        credential: &Credential,
        signature_key: &[u8],
    ) -> Result<DeviceAddress, MlsError> {
        let identity = basic_identity(credential)?;
        if let Some(member) = self.hit(identity, signature_key) {
            return Ok(DeviceAddress::from(member));
        }
        self.verify_afresh(identity, signature_key)
            .map(|member| DeviceAddress::from(&member))
    }

    fn hit(&self, identity: &[u8], signature_key: &[u8]) -> Option<&VerifiedMember> {
        self.verified
            .get(signature_key)
            .filter(|(cached_identity, _)| cached_identity.as_slice() == identity)
            .map(|(_, member)| member)
    }

    fn verify_afresh(
        &mut self,
        identity: &[u8],
        signature_key: &[u8],
    ) -> Result<VerifiedMember, MlsError> {
        let member = core_identity::verify_member(identity, signature_key)
            .map_err(|reason| MlsError::UnverifiedMember { reason })?;
        if self.verified.len() >= MAX_CACHED {
            self.verified.clear();
        }
        self.verified
            .insert(signature_key.to_vec(), (identity.to_vec(), member.clone()));
        Ok(member)
    }
}

/// A basic credential's identity (a SpacePanda credential is always basic).
fn basic_identity(credential: &Credential) -> Result<&[u8], MlsError> {
    if credential.credential_type() != CredentialType::Basic {
        return Err(MlsError::UnverifiedMember {
            reason: core_identity::IdentityError::NotSpacePandaCredential {
                what: "MLS credential",
                found: "a credential of another type than basic",
            },
        });
    }
    // A basic credential's content is its identity (`BasicCredential::identity`), read in
    // place instead of through a copy of the whole credential.
    Ok(credential.serialized_content())
}
