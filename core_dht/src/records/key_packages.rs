//! The key package record: one device's publishable key packages, signed by the device key,
//! at `H("spacepanda/kp/v1" ‖ user_id ‖ device_id)`.

use core_identity::{SpacePandaCredential, VerifiedMember, verify_credential};
use core_mls::{ValidatedKeyPackage, validate_key_package};
use serde::{Deserialize, Serialize};

use super::validation::Checks;
use super::{Lifetime, RecordKey, RecordKind, WireEntry, decode_body, encode_body};
use crate::error::Rejection;

/// Most key packages one record carries.
pub const MAX_KEY_PACKAGES: usize = 48;

#[derive(Serialize, Deserialize)]
struct KeyPackageBody {
    seq: u64,
    issued_at: u64,
    expires_at: u64,
    /// The device's credential: the identity key's certificate of the signing key, so the
    /// record verifies without the user record.
    #[serde(with = "serde_bytes")]
    credential: Vec<u8>,
    key_packages: Vec<serde_bytes::ByteBuf>,
}

/// One device's key packages, as its device key signed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageRecord {
    /// The device (the record's signer, certified by its user's identity key).
    pub device: VerifiedMember,
    /// The packages, each validated by core_mls for this very device.
    pub key_packages: Vec<PublishedKeyPackage>,
    /// Version of the record.
    pub seq: u64,
    /// When it was signed, and until when it is valid.
    pub lifetime: Lifetime,
    pub(crate) entry: WireEntry,
}

/// One key package of a [`KeyPackageRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKeyPackage {
    /// The TLS-encoded MLS message, as `MlsClient::add_members` takes it.
    pub bytes: Vec<u8>,
    /// What core_mls's validation found in it (ref, lifetime, last resort).
    pub validated: ValidatedKeyPackage,
}

impl KeyPackageRecord {
    /// The package an inviter should use: a one-time package if there is one (the one that
    /// lives longest), else the last-resort package.
    pub fn pick(&self) -> Option<&PublishedKeyPackage> {
        self.key_packages
            .iter()
            .filter(|p| !p.validated.last_resort)
            .max_by_key(|p| p.validated.not_after)
            .or_else(|| self.key_packages.iter().find(|p| p.validated.last_resort))
    }

    /// Checks one signed entry found under `key`.
    pub(crate) fn check(
        key: &RecordKey,
        entry: WireEntry,
        checks: &Checks,
    ) -> Result<Self, Rejection> {
        let signer = entry.verified_signer(RecordKind::KeyPackages, key)?;
        let body: KeyPackageBody = decode_body(&entry.body)?;
        let credential = SpacePandaCredential::from_bytes(&body.credential).map_err(|e| {
            Rejection::BadIdentity {
                reason: format!("device credential: {e}"),
            }
        })?;
        // The signer must be the key the identity key certified for this device.
        let device =
            verify_credential(&credential, &signer).map_err(|e| Rejection::BadIdentity {
                reason: format!("signer is not the certified device key: {e}"),
            })?;
        if RecordKey::key_packages(&device.user_id(), &device.device_id()) != *key {
            return Err(Rejection::KeyMismatch);
        }
        let lifetime = Lifetime::from_millis(body.issued_at, body.expires_at).check(checks)?;
        if body.key_packages.len() > MAX_KEY_PACKAGES {
            return Err(Rejection::TooMany {
                what: "key packages",
                count: body.key_packages.len(),
                max: MAX_KEY_PACKAGES,
            });
        }
        let mut key_packages = Vec::with_capacity(body.key_packages.len());
        for (index, bytes) in body.key_packages.into_iter().enumerate() {
            let bytes = bytes.into_vec();
            let validated =
                validate_key_package(&bytes, checks.now).map_err(|e| Rejection::BadKeyPackage {
                    index,
                    reason: e.to_string(),
                })?;
            if validated.member.user_id() != device.user_id()
                || validated.member.device_id() != device.device_id()
            {
                return Err(Rejection::BadKeyPackage {
                    index,
                    reason: format!(
                        "it belongs to device {} of user {}, not to the record's device",
                        validated.member.device_id(),
                        validated.member.user_id()
                    ),
                });
            }
            key_packages.push(PublishedKeyPackage { bytes, validated });
        }
        Ok(Self {
            device,
            key_packages,
            seq: body.seq,
            lifetime,
            entry,
        })
    }
}

/// The body of a key package record.
pub(crate) fn key_package_body(
    credential: &[u8],
    key_packages: &[Vec<u8>],
    seq: u64,
    lifetime: Lifetime,
) -> Vec<u8> {
    encode_body(&KeyPackageBody {
        seq,
        issued_at: lifetime.issued_at.unix_millis(),
        expires_at: lifetime.expires_at.unix_millis(),
        credential: credential.to_vec(),
        key_packages: key_packages
            .iter()
            .map(|p| serde_bytes::ByteBuf::from(p.clone()))
            .collect(),
    })
}
