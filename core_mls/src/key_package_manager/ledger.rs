//! The key package ledger: one record per key package this device made, in namespace
//! [`LEDGER_NAMESPACE`], keyed by the key package ref. OpenMLS keeps the private bundles but no
//! list of them; this is the list.

use spacepanda_core::{Key, Timestamp, Transaction};
use tls_codec::{
    Deserialize as _, Serialize as _, TlsByteVecU16, TlsDeserialize, TlsSerialize, TlsSize,
};

use crate::error::MlsError;

/// Namespace of ledger records.
pub(crate) const LEDGER_NAMESPACE: &str = "kp_ledger";
/// Which group each of our single-use key packages joined: `[key package ref]` → group id.
/// Kept as long as the package's private keys (deleted by the key package pruning).
pub(crate) const JOINED_BY_PACKAGE_NAMESPACE: &str = "kp_joined_group";

const RECORD_VERSION: u8 = 1;
/// A record holds one public key package (≈ 350 bytes with a SpacePanda credential).
const MAX_RECORD_LEN: usize = 16 * 1024;

/// Where a key package is in its life.
///
/// ```text
///   Fresh ──publish──► Published ──claimed by someone──► Claimed
///     │                    │                               │
///     └────────────────────┴──────── Welcome ──────────────┴──► Consumed ──prune──► (keys deleted)
///     │                    │
///     └── older than rotate_after ──► Retired ──not_after──► Expired ──not_after + grace──► (keys deleted)
/// ```
///
/// A single-use package keeps its keys for the fork window after the Welcome that consumes it
/// (a re-add with it after the commit that added this device lost; see the module docs of
/// `key_package_manager`); `prune` then deletes them, and its record stays as a tombstone
/// (`keys_deleted`) so a later Welcome is a double spend.
///
/// A last-resort package follows the same states but stays usable after `Consumed` (it is
/// multi-use) until its `not_after` + grace; a new one is made as soon as it is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyPackageState {
    /// Made, not yet handed to the network.
    Fresh,
    /// Handed to the network for publishing.
    Published,
    /// Someone announced they used it; no longer offered.
    Claimed,
    /// A Welcome used it.
    Consumed,
    /// Replaced by rotation; private keys kept until `not_after` + grace.
    Retired,
    /// Past its lifetime.
    Expired,
}

impl KeyPackageState {
    fn to_byte(self) -> u8 {
        match self {
            Self::Fresh => 1,
            Self::Published => 2,
            Self::Claimed => 3,
            Self::Consumed => 4,
            Self::Retired => 5,
            Self::Expired => 6,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Fresh,
            2 => Self::Published,
            3 => Self::Claimed,
            4 => Self::Consumed,
            5 => Self::Retired,
            6 => Self::Expired,
            _ => return None,
        })
    }

    /// Offered to others (Fresh or Published).
    pub fn is_offered(self) -> bool {
        matches!(self, Self::Fresh | Self::Published)
    }
}

/// One ledger record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerEntry {
    /// The key package ref (hash reference) OpenMLS stores the bundle under.
    pub key_package_ref: Vec<u8>,
    /// When this device made it.
    pub created_at: Timestamp,
    /// Start of its lifetime.
    pub not_before: Timestamp,
    /// End of its lifetime.
    pub not_after: Timestamp,
    /// Whether it is the multi-use last-resort package.
    pub last_resort: bool,
    /// Where it is in its life.
    pub state: KeyPackageState,
    /// When `state` last changed.
    pub state_changed_at: Timestamp,
    /// Whether its private keys were deleted from OpenMLS storage (a tombstone).
    pub keys_deleted: bool,
    /// The public key package, as an MLS message (what gets published).
    pub key_package_message: Vec<u8>,
}

#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct LedgerRecordWire {
    version: u8,
    state: u8,
    last_resort: u8,
    keys_deleted: u8,
    created_at_ms: u64,
    not_before_ms: u64,
    not_after_ms: u64,
    state_changed_at_ms: u64,
    key_package_message: TlsByteVecU16,
}

impl LedgerEntry {
    fn key(key_package_ref: &[u8]) -> Key {
        Key::from_segment(key_package_ref)
    }

    fn encode(&self) -> Result<Vec<u8>, MlsError> {
        LedgerRecordWire {
            version: RECORD_VERSION,
            state: self.state.to_byte(),
            last_resort: u8::from(self.last_resort),
            keys_deleted: u8::from(self.keys_deleted),
            created_at_ms: self.created_at.unix_millis(),
            not_before_ms: self.not_before.unix_millis(),
            not_after_ms: self.not_after.unix_millis(),
            state_changed_at_ms: self.state_changed_at.unix_millis(),
            key_package_message: self.key_package_message.clone().into(),
        }
        .tls_serialize_detached()
        .map_err(|_| MlsError::Internal {
            what: "key package too large for a ledger record",
        })
    }

    fn decode(key_package_ref: &[u8], bytes: &[u8]) -> Result<Self, MlsError> {
        let corrupted = |reason| MlsError::CorruptedState {
            namespace: LEDGER_NAMESPACE,
            reason,
        };
        if bytes.len() > MAX_RECORD_LEN {
            return Err(corrupted("ledger record too large"));
        }
        let mut reader = bytes;
        let wire = LedgerRecordWire::tls_deserialize(&mut reader)
            .map_err(|_| corrupted("ledger record does not decode"))?;
        if !reader.is_empty() {
            return Err(corrupted("ledger record has trailing bytes"));
        }
        if wire.version != RECORD_VERSION {
            return Err(MlsError::UnsupportedStateVersion {
                what: "key package ledger record",
                found: u32::from(wire.version),
                supported: u32::from(RECORD_VERSION),
            });
        }
        let flag = |byte: u8| match byte {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupted("ledger record flag is not 0 or 1")),
        };
        Ok(Self {
            key_package_ref: key_package_ref.to_vec(),
            state: KeyPackageState::from_byte(wire.state)
                .ok_or_else(|| corrupted("unknown key package state"))?,
            last_resort: flag(wire.last_resort)?,
            keys_deleted: flag(wire.keys_deleted)?,
            created_at: Timestamp::from_unix_millis(wire.created_at_ms),
            not_before: Timestamp::from_unix_millis(wire.not_before_ms),
            not_after: Timestamp::from_unix_millis(wire.not_after_ms),
            state_changed_at: Timestamp::from_unix_millis(wire.state_changed_at_ms),
            key_package_message: wire.key_package_message.into_vec(),
        })
    }

    /// Moves to `state` at `now`.
    pub(crate) fn set_state(&mut self, state: KeyPackageState, now: Timestamp) {
        if self.state != state {
            self.state = state;
            self.state_changed_at = now;
        }
    }
}

/// Reads one record.
pub(crate) fn load(
    txn: &Transaction,
    key_package_ref: &[u8],
) -> Result<Option<LedgerEntry>, MlsError> {
    txn.get(LEDGER_NAMESPACE, &LedgerEntry::key(key_package_ref))?
        .map(|bytes| LedgerEntry::decode(key_package_ref, &bytes))
        .transpose()
}

/// Reads every record.
pub(crate) fn load_all(txn: &Transaction) -> Result<Vec<LedgerEntry>, MlsError> {
    txn.scan_prefix(LEDGER_NAMESPACE, &Key::empty())?
        .into_iter()
        .map(|(key, bytes)| {
            let key_package_ref = key.segments().next().unwrap_or_default().to_vec();
            LedgerEntry::decode(&key_package_ref, &bytes)
        })
        .collect()
}

/// Writes one record.
pub(crate) fn store(txn: &mut Transaction, entry: &LedgerEntry) -> Result<(), MlsError> {
    txn.put(
        LEDGER_NAMESPACE,
        LedgerEntry::key(&entry.key_package_ref),
        entry.encode()?,
    )?;
    Ok(())
}

/// Deletes one record (compaction of old tombstones).
pub(crate) fn remove(txn: &mut Transaction, key_package_ref: &[u8]) -> Result<(), MlsError> {
    txn.delete(LEDGER_NAMESPACE, LedgerEntry::key(key_package_ref))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn entry() -> LedgerEntry {
        LedgerEntry {
            key_package_ref: vec![1; 16],
            created_at: Timestamp::from_unix_secs(1_700_000_000),
            not_before: Timestamp::from_unix_secs(1_699_999_000),
            not_after: Timestamp::from_unix_secs(1_701_209_600),
            last_resort: true,
            state: KeyPackageState::Published,
            state_changed_at: Timestamp::from_unix_secs(1_700_000_100),
            keys_deleted: false,
            key_package_message: vec![9; 300],
        }
    }

    #[test]
    fn record_round_trips() {
        let entry = entry();
        let bytes = entry.encode().unwrap();
        assert_eq!(
            LedgerEntry::decode(&entry.key_package_ref, &bytes).unwrap(),
            entry
        );
    }

    #[test]
    fn future_version_is_typed() {
        let mut bytes = entry().encode().unwrap();
        bytes[0] = 9;
        assert!(matches!(
            LedgerEntry::decode(&[1; 16], &bytes),
            Err(MlsError::UnsupportedStateVersion { found: 9, .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = LedgerEntry::decode(&[0; 16], &bytes);
        }
    }
}
