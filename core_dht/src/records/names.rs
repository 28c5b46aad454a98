//! The name and address indexes: which users go by a display name (at
//! `H("spacepanda/name/v1" ‖ name)`) and by an address (at
//! `H("spacepanda/addr/v1" ‖ fingerprint ‖ name)`).
//!
//! Kademlia keeps one value per key, and two users may share a name, so these records are
//! merged: each entry is signed by its own user's identity key, and the storing node merges an
//! incoming list into the one it holds (one entry per user, the higher `seq` kept).

use core_identity::{DisplayName, IdentityPublicKey, UserId};
use serde::{Deserialize, Serialize};

use super::validation::Checks;
use super::{Lifetime, RecordKey, RecordKind, WireEntry, decode_body, encode_body};
use crate::error::Rejection;

/// Most users one name index holds. Past it, new users are refused (the ones already listed
/// stay): a squatter can make a bare name ambiguous, but never unlist anyone, and the address
/// index is still there to tell users apart.
pub const MAX_NAME_ENTRIES: usize = 32;
/// Most users one address index holds (two users share an address only by a fingerprint
/// collision, which takes a 2³²-work search each).
pub const MAX_ADDRESS_ENTRIES: usize = 8;

#[derive(Serialize, Deserialize)]
struct NameBody {
    seq: u64,
    issued_at: u64,
    expires_at: u64,
    display_name: String,
}

/// One user listed under a name or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The user's identity key (the entry's signer).
    pub identity_key: IdentityPublicKey,
    /// The user.
    pub user_id: UserId,
    /// The name the user publishes.
    pub display_name: DisplayName,
    /// Version of the entry.
    pub seq: u64,
    /// When it was signed, and until when it is valid.
    pub lifetime: Lifetime,
    pub(crate) entry: WireEntry,
}

impl NameEntry {
    /// Checks one signed entry found under `key` in an index of `kind`.
    pub(crate) fn check(
        kind: RecordKind,
        key: &RecordKey,
        entry: WireEntry,
        checks: &Checks,
    ) -> Result<Self, Rejection> {
        let signer = entry.verified_signer(kind, key)?;
        let identity_key =
            IdentityPublicKey::from_bytes(&signer).map_err(|_| Rejection::BadSignature)?;
        let user_id = identity_key.user_id();
        let body: NameBody = decode_body(&entry.body)?;
        let display_name =
            DisplayName::new(&body.display_name).map_err(|e| Rejection::Malformed {
                reason: format!("display name: {e}"),
            })?;
        let expected = match kind {
            RecordKind::Addresses => RecordKey::address(&display_name, &user_id.fingerprint()),
            _ => RecordKey::name(&display_name),
        };
        if expected != *key {
            return Err(Rejection::KeyMismatch);
        }
        let lifetime = Lifetime::from_millis(body.issued_at, body.expires_at).check(checks)?;
        Ok(Self {
            identity_key,
            user_id,
            display_name,
            seq: body.seq,
            lifetime,
            entry,
        })
    }
}

/// The body of a name or address entry.
pub(crate) fn name_body(display_name: &DisplayName, seq: u64, lifetime: Lifetime) -> Vec<u8> {
    encode_body(&NameBody {
        seq,
        issued_at: lifetime.issued_at.unix_millis(),
        expires_at: lifetime.expires_at.unix_millis(),
        display_name: display_name.as_str().to_owned(),
    })
}
