//! The directory's records: what they hold, where they live, how they are signed, and the
//! checks every node applies to them.
//!
//! # Format (version 1)
//!
//! A Kademlia value is the CBOR map `{v: 1, kind, entries: [{body, signer, signature}]}`:
//! - `kind` names the record type ([`RecordKind`]);
//! - every entry is signed on its own: `signature` is `signer`'s Ed25519 signature of
//!   `"spacepanda/record/v1\0" ‖ kind ‖ key ‖ body`, so an entry verifies only under the key
//!   and kind it was made for (it cannot be moved to another user's key);
//! - single-signer records (user, key packages) have exactly one entry; merged records (the
//!   name and address indexes, claims) have one entry per signer, merged by the storing node.
//!
//! Keys are BLAKE3 hashes of a label and the record's subject, derived from the signer, so
//! every record is self-certifying: anyone can check it with no trusted party
//! ([`RecordKey`]).

mod claims;
mod key_packages;
mod keys;
mod names;
mod user;
mod validation;

#[cfg(test)]
mod tests;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use spacepanda_core::Timestamp;

use crate::error::Rejection;

pub(crate) use claims::{CLAIM_LIFETIME, claim_body};
pub use claims::{Claim, MAX_CLAIM_ENTRIES};
pub(crate) use key_packages::key_package_body;
pub use key_packages::{KeyPackageRecord, MAX_KEY_PACKAGES, PublishedKeyPackage};
pub use keys::RecordKey;
pub(crate) use names::name_body;
pub use names::{MAX_ADDRESS_ENTRIES, MAX_NAME_ENTRIES, NameEntry};
pub use user::{DeviceRecord, MAX_ADDRESSES_PER_DEVICE, MAX_DEVICES, UserRecord};
pub(crate) use user::{UserBodyDevice, user_body};
pub(crate) use validation::{
    Checks, StoreDecision, ValidValue, ValidationCache, decide_store, validate_value,
};

/// The record format this build writes and reads.
pub const RECORD_VERSION: u8 = 1;

/// Longest lifetime a record may claim (31 days); a longer one is refused, so a stolen
/// device key cannot publish a record that outlives its revocation by long.
pub const MAX_RECORD_LIFETIME_MS: u64 = 31 * 24 * 3600 * 1000;

const SIGNATURE_LABEL: &[u8] = b"spacepanda/record/v1\0";

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RecordKind {
    /// A user's identity key, name and devices, signed by the identity key.
    User,
    /// One device's key packages, signed by the device key.
    KeyPackages,
    /// Users with one display name (merged entries, each signed by its user).
    Names,
    /// Users with one `name@fingerprint` address (merged entries).
    Addresses,
    /// Claims on one device's key packages (merged entries, each signed by its claimer).
    Claims,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::KeyPackages => 2,
            Self::Names => 3,
            Self::Addresses => 4,
            Self::Claims => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::User,
            2 => Self::KeyPackages,
            3 => Self::Names,
            4 => Self::Addresses,
            5 => Self::Claims,
            _ => return None,
        })
    }

    /// Whether the storing node merges entries of different signers under one key.
    pub(crate) fn is_merged(self) -> bool {
        matches!(self, Self::Names | Self::Addresses | Self::Claims)
    }
}

#[derive(Serialize, Deserialize)]
struct WireValue {
    v: u8,
    kind: u8,
    entries: Vec<WireEntry>,
}

/// One signed entry as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireEntry {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signer: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

impl WireEntry {
    /// Signs `body` for `key` with `sign` (which holds the secret; the caller's key must be
    /// `signer`).
    pub(crate) fn sign(
        kind: RecordKind,
        key: &RecordKey,
        body: Vec<u8>,
        signer: [u8; 32],
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Self {
        let signature = sign(&signed_message(kind, key, &body));
        Self {
            body,
            signer: signer.to_vec(),
            signature: signature.to_vec(),
        }
    }

    /// The entry's signer, if its signature over `(kind, key, body)` verifies.
    fn verified_signer(&self, kind: RecordKind, key: &RecordKey) -> Result<[u8; 32], Rejection> {
        let signer: [u8; 32] = self
            .signer
            .as_slice()
            .try_into()
            .map_err(|_| Rejection::BadSignature)?;
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Rejection::BadSignature)?;
        let verifying = VerifyingKey::from_bytes(&signer).map_err(|_| Rejection::BadSignature)?;
        verifying
            .verify_strict(
                &signed_message(kind, key, &self.body),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| Rejection::BadSignature)?;
        Ok(signer)
    }
}

fn signed_message(kind: RecordKind, key: &RecordKey, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_LABEL.len() + 1 + 32 + body.len());
    message.extend_from_slice(SIGNATURE_LABEL);
    message.push(kind.code());
    message.extend_from_slice(key.as_bytes());
    message.extend_from_slice(body);
    message
}

/// Encodes a record value.
pub(crate) fn encode_value(kind: RecordKind, entries: Vec<WireEntry>) -> Vec<u8> {
    let value = WireValue {
        v: RECORD_VERSION,
        kind: kind.code(),
        entries,
    };
    let mut out = Vec::new();
    // Writing CBOR into a Vec cannot fail for these plain types.
    let _ = ciborium::into_writer(&value, &mut out);
    out
}

/// Decodes a record value, bounded by `max_len`, into its kind and entries (signatures not
/// checked yet).
fn decode_value(bytes: &[u8], max_len: usize) -> Result<(RecordKind, Vec<WireEntry>), Rejection> {
    if bytes.len() > max_len {
        return Err(Rejection::Oversized {
            len: bytes.len(),
            max: max_len,
        });
    }
    let value: WireValue = ciborium::from_reader(bytes).map_err(|e| Rejection::Malformed {
        reason: e.to_string(),
    })?;
    if value.v != RECORD_VERSION {
        return Err(Rejection::Malformed {
            reason: format!(
                "record version {} (this build reads {RECORD_VERSION})",
                value.v
            ),
        });
    }
    let kind = RecordKind::from_code(value.kind).ok_or_else(|| Rejection::Malformed {
        reason: format!("unknown record kind {}", value.kind),
    })?;
    Ok((kind, value.entries))
}

/// Encodes a body (CBOR).
pub(crate) fn encode_body<T: Serialize>(body: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = ciborium::into_writer(body, &mut out);
    out
}

fn decode_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Rejection> {
    ciborium::from_reader(bytes).map_err(|e| Rejection::Malformed {
        reason: format!("entry body: {e}"),
    })
}

/// The lifetime every record states, checked against the checking node's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// When its signer made it.
    pub issued_at: Timestamp,
    /// When it stops being valid.
    pub expires_at: Timestamp,
}

impl Lifetime {
    fn from_millis(issued_at: u64, expires_at: u64) -> Self {
        Self {
            issued_at: Timestamp::from_unix_millis(issued_at),
            expires_at: Timestamp::from_unix_millis(expires_at),
        }
    }

    fn check(self, checks: &Checks) -> Result<Self, Rejection> {
        let now = checks.now.unix_millis();
        let issued = self.issued_at.unix_millis();
        let expires = self.expires_at.unix_millis();
        if expires <= now {
            return Err(Rejection::Expired {
                expires_at_ms: expires,
                now_ms: now,
            });
        }
        if issued > now.saturating_add(checks.max_clock_skew_ms) {
            return Err(Rejection::BadLifetime {
                reason: format!("issued at {issued}, in the future of {now} (unix ms)"),
            });
        }
        if expires.saturating_sub(issued) > MAX_RECORD_LIFETIME_MS || expires < issued {
            return Err(Rejection::BadLifetime {
                reason: format!(
                    "valid from {issued} to {expires}, longer than the {MAX_RECORD_LIFETIME_MS} ms allowed"
                ),
            });
        }
        Ok(self)
    }
}
