//! Claims: "I used this key package of yours", signed by the inviting device, merged at
//! `H("spacepanda/claim/v1" ‖ user_id ‖ device_id)` of the package's device.
//!
//! Claims are hints, not locks. The device that owns the package stops offering it and
//! replenishes; two inviters racing for one package are settled by the engine (the second
//! Welcome is `AlreadyConsumed`, and the last-resort package stays usable). A false claim costs
//! the owner one package, never a conversation.

use std::time::Duration;

use core_identity::{DeviceId, SpacePandaCredential, UserId, VerifiedMember, verify_credential};
use serde::{Deserialize, Serialize};

use super::validation::Checks;
use super::{Lifetime, RecordKey, RecordKind, WireEntry, decode_body, encode_body};
use crate::error::Rejection;

/// Most claims one device's claim record holds; past it, new claims are refused until old ones
/// expire (the owner has long replenished by then).
pub const MAX_CLAIM_ENTRIES: usize = 64;
/// How long a claim is kept: as long as a published record lives, so an owner that was
/// offline for less than that still sees it.
pub(crate) const CLAIM_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);
const MAX_REF_LEN: usize = 64;

#[derive(Serialize, Deserialize)]
struct ClaimBody {
    issued_at: u64,
    expires_at: u64,
    #[serde(with = "serde_bytes")]
    user_id: Vec<u8>,
    #[serde(with = "serde_bytes")]
    device_id: Vec<u8>,
    #[serde(with = "serde_bytes")]
    key_package_ref: Vec<u8>,
    #[serde(with = "serde_bytes")]
    claimer_credential: Vec<u8>,
}

/// One device's claim on another device's key package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claiming device (the entry's signer, certified by its user).
    pub claimer: VerifiedMember,
    /// The ref of the package it used.
    pub key_package_ref: Vec<u8>,
    /// When it was made, and until when it is kept.
    pub lifetime: Lifetime,
    pub(crate) entry: WireEntry,
}

impl Claim {
    /// Checks one signed entry found under `key`.
    pub(crate) fn check(
        key: &RecordKey,
        entry: WireEntry,
        checks: &Checks,
    ) -> Result<Self, Rejection> {
        let signer = entry.verified_signer(RecordKind::Claims, key)?;
        let body: ClaimBody = decode_body(&entry.body)?;
        let credential =
            SpacePandaCredential::from_bytes(&body.claimer_credential).map_err(|e| {
                Rejection::BadIdentity {
                    reason: format!("claimer credential: {e}"),
                }
            })?;
        let claimer =
            verify_credential(&credential, &signer).map_err(|e| Rejection::BadIdentity {
                reason: format!("signer is not the claimer's certified device key: {e}"),
            })?;
        let user: [u8; 32] =
            body.user_id
                .as_slice()
                .try_into()
                .map_err(|_| Rejection::Malformed {
                    reason: "claimed user id is not 32 bytes".into(),
                })?;
        let device: [u8; 16] =
            body.device_id
                .as_slice()
                .try_into()
                .map_err(|_| Rejection::Malformed {
                    reason: "claimed device id is not 16 bytes".into(),
                })?;
        if RecordKey::claims(&UserId::from_bytes(user), &DeviceId::from_bytes(device)) != *key {
            return Err(Rejection::KeyMismatch);
        }
        if body.key_package_ref.is_empty() || body.key_package_ref.len() > MAX_REF_LEN {
            return Err(Rejection::Malformed {
                reason: format!("a key package ref of {} bytes", body.key_package_ref.len()),
            });
        }
        let lifetime = Lifetime::from_millis(body.issued_at, body.expires_at).check(checks)?;
        Ok(Self {
            claimer,
            key_package_ref: body.key_package_ref,
            lifetime,
            entry,
        })
    }

    /// What identifies a claim in a merged record: the claimer's key and the ref.
    pub(crate) fn identity(&self) -> (&[u8], &[u8]) {
        (&self.entry.signer, &self.key_package_ref)
    }
}

/// The body of a claim.
pub(crate) fn claim_body(
    target_user: &UserId,
    target_device: &DeviceId,
    key_package_ref: &[u8],
    claimer_credential: &[u8],
    lifetime: Lifetime,
) -> Vec<u8> {
    encode_body(&ClaimBody {
        issued_at: lifetime.issued_at.unix_millis(),
        expires_at: lifetime.expires_at.unix_millis(),
        user_id: target_user.as_bytes().to_vec(),
        device_id: target_device.as_bytes().to_vec(),
        key_package_ref: key_package_ref.to_vec(),
        claimer_credential: claimer_credential.to_vec(),
    })
}
