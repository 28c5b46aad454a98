//! Mailboxes: envelopes kept by the network for a device that is offline.
//!
//! A device's mailbox lives at [`MailboxKey`]; its holders are the
//! [`mailbox_holders`](crate::DhtConfig::mailbox_holders) peers closest to that key. A sender
//! deposits an envelope with every holder it reaches and counts the deposit once a majority
//! confirmed durable storage ([`deposit`](client::deposit)). The device proves who it is to
//! each holder (a signature by its certified key over a fresh challenge, [`access`]) to fetch
//! and then acknowledge, and an acknowledgement deletes the envelope there. Holders keep
//! envelopes in their own store ([`holder_store`]) under quotas and a lifetime, and hand them
//! to the new closest peers when the set changes ([`service`]).

pub(crate) mod access;
pub(crate) mod client;
pub(crate) mod holder_store;
mod quota_usage;
pub(crate) mod service;

use std::fmt;

use core_identity::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// Where one device's mailbox lives: `H("spacepanda/mbox/v1" ‖ user_id ‖ device_id)`.
///
/// The user id is in the derivation (the sketch has only the device id) because a
/// device id is 16 bytes the device picked: anyone can certify a device with the same id
/// under their own identity key, but nobody can certify it under another user's key, and
/// fetching needs that certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MailboxKey(#[serde(with = "serde_bytes")] [u8; 32]);

impl MailboxKey {
    /// The mailbox of device `device` of user `user`.
    pub fn of(user: &UserId, device: &DeviceId) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"spacepanda/mbox/v1");
        hasher.update(user.as_bytes());
        hasher.update(device.as_bytes());
        Self(*hasher.finalize().as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from its raw bytes (as stored or received).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for MailboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxKey({})", hex::encode(&self.0[..8]))
    }
}

/// The name of one deposited envelope: BLAKE3 of its exact wire bytes (context included, so
/// two envelopes that differ only in their branch tag are two entries). Holders and devices
/// compute it themselves; a holder that returns bytes under another name altered them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryId(#[serde(with = "serde_bytes")] [u8; 32]);

impl EntryId {
    /// The name of `envelope`.
    pub fn of(envelope: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("spacepanda mailbox entry v1");
        hasher.update(envelope);
        Self(*hasher.finalize().as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An id from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", hex::encode(&self.0[..8]))
    }
}

/// Why a holder refused a deposit. The sender sees it (in
/// [`DhtError::DepositRefused`](crate::DhtError::DepositRefused)) and keeps the envelope in its
/// outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MailboxRefusal {
    /// The recipient's mailbox holds as many envelopes (or bytes) as a holder keeps for one
    /// device: it has been offline long, or someone floods it.
    MailboxFull {
        /// Envelopes held for it.
        held: u64,
        /// Bytes held for it.
        held_bytes: u64,
        /// The holder's bound on envelopes.
        max: u64,
        /// The holder's bound on bytes.
        max_bytes: u64,
    },
    /// This sender already has as many envelopes waiting in this mailbox as one sender may.
    SenderQuota {
        /// Envelopes of this sender held for the recipient.
        held: u64,
        /// The bound.
        max: u64,
    },
    /// The envelope is larger than a holder keeps.
    Oversized {
        /// Its length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The holder's whole store is at its bound.
    HolderFull,
    /// The deposit's lifetime is already over, or longer than a holder keeps anything.
    BadLifetime,
    /// The holder's store failed; try another holder or later.
    HolderFailed {
        /// What failed (no content).
        reason: String,
    },
}

impl fmt::Display for MailboxRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MailboxFull {
                held,
                held_bytes,
                max,
                max_bytes,
            } => write!(
                f,
                "the recipient's mailbox is full ({held} envelopes, {held_bytes} bytes; bounds {max} and {max_bytes}): it must come online and fetch"
            ),
            Self::SenderQuota { held, max } => write!(
                f,
                "{held} envelopes of this sender already wait for the recipient (bound {max}); wait until it fetches"
            ),
            Self::Oversized { len, max } => {
                write!(
                    f,
                    "the envelope has {len} bytes; holders keep at most {max}"
                )
            }
            Self::HolderFull => write!(f, "the holder's store is full; other holders may take it"),
            Self::BadLifetime => write!(f, "the deposit's lifetime is over or too long"),
            Self::HolderFailed { reason } => write!(f, "the holder's store failed: {reason}"),
        }
    }
}

/// A holder's bounds, from the node's settings.
pub(crate) fn holder_limits(config: &crate::DhtConfig) -> holder_store::HolderLimits {
    holder_store::HolderLimits {
        max_envelope_len: config.max_envelope_len,
        max_envelopes_per_mailbox: config.mailbox_max_envelopes,
        max_bytes_per_mailbox: config.mailbox_max_bytes,
        max_envelopes_per_sender: config.mailbox_max_per_sender,
        max_total_bytes: config.holder_max_bytes,
        ttl_ms: u64::try_from(config.mailbox_ttl.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The proof `device`, running as peer `requester`, gives `holder` for `mailbox` with the
/// holder's challenge `nonce` (see [`access`]). A device proves only its own mailbox; a proof
/// for another is refused by every holder.
pub fn prove_access(
    device: &core_identity::DeviceIdentity,
    holder: &libp2p::PeerId,
    requester: &libp2p::PeerId,
    mailbox: &MailboxKey,
    nonce: [u8; 32],
) -> crate::wire::AccessProof {
    access::prove_for(device, holder, requester, mailbox, nonce)
}

/// How a holder took a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositOutcome {
    /// Stored durably now.
    Stored,
    /// The same envelope was already held (a retry or a replica): stored once.
    AlreadyHeld,
    /// The recipient already fetched and acknowledged it; nothing to keep.
    AlreadyDelivered,
}
