//! Validation of someone else's key package before this device uses it: bounded decode,
//! OpenMLS validation, lifetime against our clock, ciphersuite, and the SpacePanda identity
//! binding. Each failure is its own typed error.

use core_identity::VerifiedMember;
use openmls::key_packages::errors::KeyPackageVerifyError;
use openmls::prelude::{
    KeyPackage, MlsMessageBodyIn, MlsMessageIn, OpenMlsProvider, ProtocolVersion,
};
use openmls::treesync::errors::LifetimeError;
use spacepanda_core::Timestamp;
use tls_codec::Deserialize as _;

use crate::config::CIPHERSUITE;
use crate::error::MlsError;
use crate::member_verification::MemberCache;

/// Validates one key package (a TLS-encoded MLS message carrying a KeyPackage).
pub(crate) fn validate(
    bytes: &[u8],
    provider: &impl OpenMlsProvider,
    now: Timestamp,
    max_len: usize,
    members: &mut MemberCache,
) -> Result<(KeyPackage, VerifiedMember), MlsError> {
    // A key package is a few hundred bytes; the envelope bound is the outer limit.
    let max_len = max_len.min(MAX_KEY_PACKAGE_LEN);
    if bytes.len() > max_len {
        return Err(MlsError::InvalidKeyPackage {
            reason: format!("{} bytes, more than the {max_len} accepted", bytes.len()),
        });
    }
    let message =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| MlsError::InvalidKeyPackage {
            reason: format!("does not decode as an MLS message: {e}"),
        })?;
    let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
        return Err(MlsError::InvalidKeyPackage {
            reason: "the MLS message is not a key package".into(),
        });
    };
    let key_package = key_package
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| match e {
            // OpenMLS checks the lifetime against the system clock; report it as the same typed
            // error our own check (against our clock) gives, not as a generic failure.
            KeyPackageVerifyError::LifetimeError(LifetimeError::Expired { not_after, .. }) => {
                MlsError::KeyPackageExpired {
                    not_after: Timestamp::from_unix_secs(not_after),
                    now,
                }
            }
            KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet {
                not_before, ..
            }) => MlsError::KeyPackageNotYetValid {
                not_before: Timestamp::from_unix_secs(not_before),
                now,
            },
            e => MlsError::InvalidKeyPackage {
                reason: format!("OpenMLS validation failed: {e}"),
            },
        })?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::InvalidKeyPackage {
            reason: format!(
                "ciphersuite {:?} is not SpacePanda's",
                key_package.ciphersuite()
            ),
        });
    }
    let lifetime = key_package.life_time();
    let now_secs = now.unix_secs();
    if now_secs >= lifetime.not_after() {
        return Err(MlsError::KeyPackageExpired {
            not_after: Timestamp::from_unix_secs(lifetime.not_after()),
            now,
        });
    }
    if now_secs < lifetime.not_before() {
        return Err(MlsError::KeyPackageNotYetValid {
            not_before: Timestamp::from_unix_secs(lifetime.not_before()),
            now,
        });
    }
    let leaf = key_package.leaf_node();
    let member = members.verify(leaf.credential(), leaf.signature_key().as_slice())?;
    Ok((key_package, member))
}

/// Largest key package accepted (a SpacePanda one is ≈ 400 bytes).
pub(crate) const MAX_KEY_PACKAGE_LEN: usize = 16 * 1024;

/// Someone else's key package that passed every check of [`validate_key_package`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedKeyPackage {
    /// Whose device it is: the identity-verified leaf of the package.
    pub member: VerifiedMember,
    /// Its ref (RFC 9420 `KeyPackageRef`), what a claim names.
    pub key_package_ref: Vec<u8>,
    /// End of its lifetime.
    pub not_after: Timestamp,
    /// Whether it carries the last-resort extension (usable more than once).
    pub last_resort: bool,
}

/// Checks a key package someone published, without an engine: bounded decode, OpenMLS
/// validation (signatures, ciphersuite, extensions), lifetime against `now`, and the
/// SpacePanda identity binding of its leaf. The same checks [`MlsClient::add_members`]
/// applies before it uses a package, for the directory that carries packages between devices.
///
/// [`MlsClient::add_members`]: crate::MlsClient::add_members
pub fn validate_key_package(bytes: &[u8], now: Timestamp) -> Result<ValidatedKeyPackage, MlsError> {
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let (key_package, member) = validate(
        bytes,
        &provider,
        now,
        MAX_KEY_PACKAGE_LEN,
        &mut MemberCache::default(),
    )?;
    let key_package_ref = key_package
        .hash_ref(provider.crypto())
        .map_err(|e| MlsError::InvalidKeyPackage {
            reason: format!("its ref cannot be computed: {e}"),
        })?
        .as_slice()
        .to_vec();
    Ok(ValidatedKeyPackage {
        member,
        key_package_ref,
        not_after: Timestamp::from_unix_secs(key_package.life_time().not_after()),
        last_resort: key_package.last_resort(),
    })
}
