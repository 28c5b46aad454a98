//! Identity binding of MLS leaves: every leaf this device accepts — in a key package it adds, in
//! a group it joins, in a commit it merges — must carry a SpacePanda credential whose
//! certificate covers the leaf's own signature key (core_identity's `verify_member`).

use std::collections::HashMap;

use core_identity::VerifiedMember;
use openmls::prelude::{BasicCredential, Credential, CredentialType};

use crate::error::MlsError;

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
        if credential.credential_type() != CredentialType::Basic {
            return Err(MlsError::UnverifiedMember {
                reason: core_identity::IdentityError::NotSpacePandaCredential {
                    what: "MLS credential",
                    found: "a credential of another type than basic",
                },
            });
        }
        let basic = BasicCredential::try_from(credential.clone()).map_err(|_| {
            MlsError::UnverifiedMember {
                reason: core_identity::IdentityError::Malformed {
                    what: "MLS credential",
                    reason: "basic credential does not decode",
                },
            }
        })?;
        let identity = basic.identity();
        if let Some((cached_identity, member)) = self.verified.get(signature_key)
            && cached_identity.as_slice() == identity
        {
            return Ok(member.clone());
        }
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
