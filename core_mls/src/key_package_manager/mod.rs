//! Key package lifecycle: a pool of fresh packages plus one last-resort package, expiry,
//! rotation, pruning, and matching Welcomes to the package they used.
//!
//! OpenMLS stores a key package's private bundle when it builds it, and deletes it when a
//! Welcome uses it (unless last-resort), but keeps no list. The [ledger] is that list; it is
//! written in the same [`Transaction`] as OpenMLS's own writes, so the two never disagree.
//! This device keeps a single-use bundle longer than OpenMLS would (see below).
//!
//! State diagram (see [`KeyPackageState`]):
//!
//! ```text
//!   Fresh ──mark_published──► Published ──mark_claimed──► Claimed
//!     │                          │                          │
//!     └──────────────────────────┴───── on_welcome ─────────┴──► Consumed ─┐
//!     │                          │                                         │ prune: private
//!     └─── age ≥ rotate_after ───┴──► Retired ──now ≥ not_after──► Expired ─┴─► keys deleted,
//!                                                                              record kept as a
//!                                                                              tombstone
//! ```
//!
//! `prune` deletes a package's private keys at `not_after` + grace, or, for a consumed
//! single-use package, once the fork window has passed since it was consumed (below).
//!
//! Policy ([`PoolPolicy`], defaults): 32 fresh packages, refilled when fewer than 25 % remain;
//! exactly one last-resort package, replaced as soon as a Welcome uses it (the used one stays
//! usable until `not_after` + grace); lifetime 14 days; rotated after 7 days; private keys of
//! expired packages deleted after a 1-day grace.
//!
//! A consumed single-use package keeps its private keys for the fork window
//! ([`MlsConfig::fork_window`](crate::MlsConfig::fork_window), 24 h by default), not just until
//! the Welcome that used it: if the commit that added this device loses to a concurrent one, its
//! committer re-adds the device on the winning branch with the same package (docs/FORKS.md).
//! OpenMLS deletes the bundle while it stages the Welcome; the Welcome handler reads it before
//! ([`read_bundle`]) and writes it back after ([`restore_bundle`]), in the join's transaction.
//! Meanwhile [`on_welcome`] matches the package again as `reused`, and the Welcome handler
//! accepts that only for a Welcome that replaces a state of a group this device holds, or
//! that joins, while the device does not hold it, the group the package joined
//! (`kp_joined_group`); anything else is a double spend (`AlreadyConsumed`).
//! [`prune`], run by `tick` with `retain_consumed` = `fork_window`, deletes the keys once that
//! long has passed since the package was consumed (its `state_changed_at`), with the record of
//! the group it joined (`kp_joined_group`); the ledger record stays as a tombstone
//! (`keys_deleted`), so a later Welcome with it is `AlreadyConsumed`.

pub(crate) mod ledger;

use std::time::Duration;

use openmls::prelude::{
    Capabilities, Ciphersuite, CredentialWithKey, ExtensionType, KeyPackage, KeyPackageRef,
    Lifetime, MlsMessageOut, OpenMlsProvider,
};

use crate::provider::SpacePandaProvider;
use core_identity::DeviceSignatureKeyPair;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::storage::StorageProvider as _;
use openmls_traits::types::SignatureScheme;
use spacepanda_core::{Timestamp, Transaction};
use tls_codec::{Deserialize as _, Serialize as _};

pub use ledger::KeyPackageState;
pub(crate) use ledger::LedgerEntry;

// The policy is part of the configuration, which sits below this module.
pub use crate::config::PoolPolicy;

use crate::error::MlsError;

/// What a UI shows about the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Made, not yet published.
    pub fresh: usize,
    /// Published, not yet used.
    pub published: usize,
    /// Announced as used by someone, Welcome not seen yet.
    pub claimed: usize,
    /// Used by a Welcome.
    pub consumed: usize,
    /// Replaced by rotation, keys kept for late Welcomes.
    pub retired: usize,
    /// Past their lifetime, keys kept for the grace period.
    pub expired: usize,
    /// Age of the current last-resort package (`None`: there is none — replenish).
    pub last_resort_age: Option<Duration>,
    /// The earliest `not_after` among offered packages.
    pub next_expiry: Option<Timestamp>,
    /// Whether `replenish` would make packages now.
    pub needs_replenish: bool,
}

/// A key package ready to hand to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishableKeyPackage {
    /// Its ref; pass to [`mark_published`](crate::MlsClient::mark_key_packages_published).
    pub key_package_ref: Vec<u8>,
    /// The key package as a TLS-encoded MLS message.
    pub key_package: Vec<u8>,
    /// Whether it is the multi-use last-resort package.
    pub last_resort: bool,
    /// End of its lifetime.
    pub not_after: Timestamp,
}

/// Why a Welcome's key package is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownKeyPackageHint {
    /// This device never made a key package with this ref.
    NeverOurs,
    /// It was ours, expired, and its private keys were deleted.
    ExpiredAndPruned,
    /// A single-use package already used by another Welcome: a double spend.
    AlreadyConsumed,
}

impl std::fmt::Display for UnknownKeyPackageHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NeverOurs => "this device never made it",
            Self::ExpiredAndPruned => "it expired and its private keys were deleted",
            Self::AlreadyConsumed => "it was already used by another Welcome (double spend)",
        })
    }
}

/// What a Welcome matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WelcomeMatch {
    pub(crate) key_package_ref: Vec<u8>,
    pub(crate) last_resort: bool,
    /// A last-resort package was used and none is offered any more: make a new one. (A second
    /// use of an already replaced last-resort package must not make yet another.)
    pub(crate) replace_last_resort: bool,
    /// A single-use package already consumed, whose keys are still kept for the fork window:
    /// usable only to re-add this device to the group it joined with it (a re-add after the
    /// commit that first added it lost to a concurrent one).
    pub(crate) reused: bool,
}

/// The credential and signer key packages are built with.
pub(crate) struct KeyPackageAuthor<'a, S: Signer> {
    pub(crate) ciphersuite: Ciphersuite,
    pub(crate) signer: S,
    pub(crate) credential: &'a CredentialWithKey,
}

/// Signs with the device's Ed25519 key as `core_identity` holds it (the same key OpenMLS's
/// `SignatureKeyPair` of the client wraps).
///
/// `SignatureKeyPair::sign` rebuilds the Ed25519 signing key from its raw bytes — a scalar
/// multiplication — on every signature; a key package is signed twice (leaf node and package),
/// so that rebuild was most of the cost of refilling the pool. This signer keeps the expanded
/// key. Signatures are identical (Ed25519 is deterministic).
pub(crate) struct DeviceSigner<'a>(pub(crate) &'a DeviceSignatureKeyPair);

impl Signer for DeviceSigner<'_> {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Builds one key package (OpenMLS writes its private bundle through the provider's open
/// transaction) and returns its ledger entry (not yet stored).
pub(crate) fn build_key_package<P: OpenMlsProvider, S: Signer>(
    provider: &P,
    author: &KeyPackageAuthor<'_, S>,
    policy: &PoolPolicy,
    last_resort: bool,
    now: Timestamp,
) -> Result<LedgerEntry, MlsError> {
    // Start an hour early: peers' clocks disagree with ours.
    let not_before = now.saturating_sub(Duration::from_secs(60 * 60));
    let not_after = now.saturating_add(policy.lifetime);
    let mut builder = KeyPackage::builder().key_package_lifetime(Lifetime::init(
        not_before.unix_secs(),
        not_after.unix_secs(),
    ));
    if last_resort {
        // The last-resort extension must also be listed in the leaf's capabilities, or every
        // receiver's `KeyPackageIn::validate` refuses the package ("extension not supported").
        builder = builder
            .leaf_node_capabilities(Capabilities::new(
                None,
                None,
                Some(&[ExtensionType::LastResort]),
                None,
                None,
            ))
            .mark_as_last_resort();
    }
    let bundle = builder
        .build(
            author.ciphersuite,
            provider,
            &author.signer,
            author.credential.clone(),
        )
        .map_err(|e| MlsError::openmls("build a key package", e))?;
    let key_package = bundle.key_package().clone();
    let key_package_ref = key_package
        .hash_ref(provider.crypto())
        .map_err(|e| MlsError::openmls("hash a key package", e))?;
    let key_package_message = MlsMessageOut::from(key_package)
        .tls_serialize_detached()
        .map_err(|e| MlsError::openmls("encode a key package", e))?;
    Ok(LedgerEntry {
        key_package_ref: key_package_ref.as_slice().to_vec(),
        created_at: now,
        not_before: Timestamp::from_unix_secs(not_before.unix_secs()),
        not_after: Timestamp::from_unix_secs(not_after.unix_secs()),
        last_resort,
        state: KeyPackageState::Fresh,
        state_changed_at: now,
        keys_deleted: false,
        key_package_message,
    })
}

/// Counts what `replenish` needs to make: (fresh packages, whether a last-resort one).
pub(crate) fn replenish_plan(
    entries: &[LedgerEntry],
    policy: &PoolPolicy,
    now: Timestamp,
) -> (usize, bool) {
    let offered = entries
        .iter()
        .filter(|e| !e.last_resort && e.state.is_offered() && e.not_after > now)
        .count();
    let fresh_needed = if offered < policy.low_watermark() {
        policy.target.saturating_sub(offered)
    } else {
        0
    };
    (fresh_needed, current_last_resort(entries, now).is_none())
}

/// The last-resort package currently offered, if any.
pub(crate) fn current_last_resort(entries: &[LedgerEntry], now: Timestamp) -> Option<&LedgerEntry> {
    entries
        .iter()
        .filter(|e| e.last_resort && e.state.is_offered() && e.not_after > now)
        .max_by_key(|e| e.created_at)
}

/// Retires packages older than `rotate_after` (they stay usable for Welcomes in flight).
/// Returns how many were retired.
pub(crate) fn rotate(
    txn: &mut Transaction,
    policy: &PoolPolicy,
    now: Timestamp,
) -> Result<usize, MlsError> {
    let mut retired = 0;
    for mut entry in ledger::load_all(txn)? {
        let old = now.duration_since(entry.created_at) >= policy.rotate_after;
        if old && entry.state.is_offered() {
            entry.set_state(KeyPackageState::Retired, now);
            ledger::store(txn, &entry)?;
            retired += 1;
        }
    }
    Ok(retired)
}

/// Marks expired packages, deletes private keys that are no longer needed, and drops old
/// tombstones, inside the provider's open transaction. Returns how many private bundles were
/// deleted.
///
/// `retain_consumed` is how long a consumed single-use package keeps its private keys: the fork
/// window, during which the device may be re-added with it (docs/FORKS.md).
pub(crate) fn prune(
    provider: &SpacePandaProvider,
    policy: &PoolPolicy,
    retain_consumed: std::time::Duration,
    now: Timestamp,
) -> Result<usize, MlsError> {
    let storage = provider.storage();
    let entries = storage.with_transaction(|txn| ledger::load_all(txn))?;
    let mut deleted = 0;
    for mut entry in entries {
        if entry.keys_deleted {
            if now.duration_since(entry.state_changed_at) >= policy.tombstone_retention {
                storage.with_transaction(|txn| ledger::remove(txn, &entry.key_package_ref))?;
            }
            continue;
        }
        let mut changed = false;
        if now >= entry.not_after
            && !matches!(
                entry.state,
                KeyPackageState::Consumed | KeyPackageState::Expired
            )
        {
            entry.set_state(KeyPackageState::Expired, now);
            changed = true;
        }
        let beyond_grace = now >= entry.not_after.saturating_add(policy.grace);
        // Single-use consumed packages keep their keys for the fork window only (a re-add after
        // a lost commit reuses them), then become tombstones.
        let consumed_single_use = entry.state == KeyPackageState::Consumed
            && !entry.last_resort
            && now.duration_since(entry.state_changed_at) >= retain_consumed;
        if beyond_grace || consumed_single_use {
            delete_private_keys(provider, &entry.key_package_ref)?;
            storage.with_transaction(|txn| {
                txn.delete(
                    ledger::JOINED_BY_PACKAGE_NAMESPACE,
                    spacepanda_core::Key::from_segment(&entry.key_package_ref),
                )?;
                Ok(())
            })?;
            entry.keys_deleted = true;
            entry.state_changed_at = now;
            changed = true;
            deleted += 1;
        }
        if changed {
            storage.with_transaction(|txn| ledger::store(txn, &entry))?;
        }
    }
    Ok(deleted)
}

/// The earliest time at which `rotate`, `prune` or a refill has something to do (`now` if a
/// refill is due already); `retain_consumed` as for `prune`. Each time is the exact first
/// instant the matching condition there holds.
pub(crate) fn next_change(
    entries: &[LedgerEntry],
    policy: &PoolPolicy,
    retain_consumed: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let (fresh_needed, last_resort_needed) = replenish_plan(entries, policy, now);
    let mut times = Vec::new();
    if fresh_needed > 0 || last_resort_needed {
        times.push(now);
    }
    for entry in entries {
        if entry.keys_deleted {
            times.push(
                entry
                    .state_changed_at
                    .saturating_add(policy.tombstone_retention),
            );
            continue;
        }
        if entry.state.is_offered() {
            times.push(entry.created_at.saturating_add(policy.rotate_after));
        }
        if !matches!(
            entry.state,
            KeyPackageState::Consumed | KeyPackageState::Expired
        ) {
            // Expires then; an offered package also stops counting towards the pool.
            times.push(entry.not_after);
        }
        times.push(entry.not_after.saturating_add(policy.grace));
        if entry.state == KeyPackageState::Consumed && !entry.last_resort {
            times.push(entry.state_changed_at.saturating_add(retain_consumed));
        }
    }
    times.into_iter().min()
}

/// Deletes the private bundle (init and leaf encryption keys) of one of our key packages, in
/// the provider's open transaction. Deleting one that is already gone is not an error.
pub(crate) fn delete_private_keys(
    provider: &SpacePandaProvider,
    key_package_ref_bytes: &[u8],
) -> Result<(), MlsError> {
    let hash_ref = key_package_ref(key_package_ref_bytes)?;
    provider
        .storage()
        .delete_key_package(&hash_ref)
        .map_err(|e| MlsError::openmls("delete a key package", e))
}

/// The private bundle of one of our key packages, if OpenMLS still stores it.
pub(crate) fn read_bundle(
    provider: &SpacePandaProvider,
    key_package_ref_bytes: &[u8],
) -> Result<Option<openmls::prelude::KeyPackageBundle>, MlsError> {
    let hash_ref = key_package_ref(key_package_ref_bytes)?;
    provider
        .storage()
        .key_package(&hash_ref)
        .map_err(|e| MlsError::openmls("read a key package", e))
}

/// Stores the private bundle of one of our key packages again (OpenMLS deletes a single-use
/// one when it joins with it; we keep it for the fork window).
pub(crate) fn restore_bundle(
    provider: &SpacePandaProvider,
    key_package_ref_bytes: &[u8],
    bundle: &openmls::prelude::KeyPackageBundle,
) -> Result<(), MlsError> {
    let hash_ref = key_package_ref(key_package_ref_bytes)?;
    provider
        .storage()
        .write_key_package(&hash_ref, bundle)
        .map_err(|e| MlsError::openmls("keep a key package", e))
}

/// Rebuilds an OpenMLS `KeyPackageRef` from its bytes (OpenMLS only offers this in tests, so
/// go through its TLS encoding).
fn key_package_ref(bytes: &[u8]) -> Result<KeyPackageRef, MlsError> {
    let encoded = tls_codec::VLBytes::new(bytes.to_vec())
        .tls_serialize_detached()
        .map_err(|_| MlsError::Internal {
            what: "key package ref does not encode",
        })?;
    KeyPackageRef::tls_deserialize_exact(encoded).map_err(|_| MlsError::Internal {
        what: "key package ref does not decode",
    })
}

/// Matches a Welcome to one of our key packages and records it as consumed.
///
/// `candidates` are the key package refs the Welcome's secrets are encrypted to.
pub(crate) fn on_welcome(
    txn: &mut Transaction,
    candidates: &[Vec<u8>],
    now: Timestamp,
) -> Result<WelcomeMatch, MlsError> {
    let mut best_hint = None;
    for candidate in candidates {
        let Some(mut entry) = ledger::load(txn, candidate)? else {
            continue;
        };
        let consumed_single_use = entry.state == KeyPackageState::Consumed && !entry.last_resort;
        if consumed_single_use && !entry.keys_deleted {
            // Keys kept for the fork window: the Welcome handler decides whether this is a
            // re-add to the same group (allowed) or a double spend.
            return Ok(WelcomeMatch {
                key_package_ref: entry.key_package_ref,
                last_resort: false,
                replace_last_resort: false,
                reused: true,
            });
        }
        let hint = if consumed_single_use {
            Some(UnknownKeyPackageHint::AlreadyConsumed)
        } else if entry.keys_deleted {
            // Expired and pruned — also a multi-use last-resort package, whose keys are only
            // ever deleted at the end of its lifetime.
            Some(UnknownKeyPackageHint::ExpiredAndPruned)
        } else {
            None
        };
        if let Some(hint) = hint {
            best_hint = Some((candidate.clone(), hint));
            continue;
        }
        entry.set_state(KeyPackageState::Consumed, now);
        // A single-use package keeps its private bundle for the fork window (the Welcome
        // handler puts it back after OpenMLS deletes it); `prune` deletes it then, and the
        // record becomes a tombstone that recognises a later Welcome as a double spend.
        ledger::store(txn, &entry)?;
        let replace_last_resort =
            entry.last_resort && current_last_resort(&ledger::load_all(txn)?, now).is_none();
        return Ok(WelcomeMatch {
            key_package_ref: entry.key_package_ref,
            last_resort: entry.last_resort,
            replace_last_resort,
            reused: false,
        });
    }
    let (key_package_ref, hint) = best_hint.unwrap_or_else(|| {
        (
            candidates.first().cloned().unwrap_or_default(),
            UnknownKeyPackageHint::NeverOurs,
        )
    });
    Err(MlsError::NoMatchingKeyPackage {
        key_package_ref: hex::encode(key_package_ref),
        hint,
    })
}

/// Key packages to publish: offered, unexpired ones, the current last-resort one included.
pub(crate) fn publishable(entries: &[LedgerEntry], now: Timestamp) -> Vec<PublishableKeyPackage> {
    let last_resort = current_last_resort(entries, now).map(|e| e.key_package_ref.clone());
    entries
        .iter()
        .filter(|e| e.state.is_offered() && e.not_after > now)
        .filter(|e| !e.last_resort || Some(&e.key_package_ref) == last_resort.as_ref())
        .map(|e| PublishableKeyPackage {
            key_package_ref: e.key_package_ref.clone(),
            key_package: e.key_package_message.clone(),
            last_resort: e.last_resort,
            not_after: e.not_after,
        })
        .collect()
}

/// Moves the given packages from `from` states to `to`.
pub(crate) fn mark(
    txn: &mut Transaction,
    refs: &[Vec<u8>],
    allowed_from: &[KeyPackageState],
    to: KeyPackageState,
    now: Timestamp,
) -> Result<usize, MlsError> {
    let mut changed = 0;
    for key_package_ref in refs {
        let Some(mut entry) = ledger::load(txn, key_package_ref)? else {
            return Err(MlsError::UnknownKeyPackage {
                key_package_ref: hex::encode(key_package_ref),
            });
        };
        if allowed_from.contains(&entry.state) {
            entry.set_state(to, now);
            ledger::store(txn, &entry)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// The pool as a UI shows it.
pub(crate) fn status(entries: &[LedgerEntry], policy: &PoolPolicy, now: Timestamp) -> PoolStatus {
    let mut status = PoolStatus::default();
    // The last-resort package is reported by its age, not counted in the pool. Pruned records
    // are tombstones and not counted — except consumed ones: "consumed" counts the Welcomes
    // this device joined with, also after a single-use package's keys are gone (the fork
    // window after it was consumed).
    let counted = |e: &&LedgerEntry| {
        !e.last_resort && (!e.keys_deleted || e.state == KeyPackageState::Consumed)
    };
    for entry in entries.iter().filter(counted) {
        let counter = match entry.state {
            KeyPackageState::Fresh => &mut status.fresh,
            KeyPackageState::Published => &mut status.published,
            KeyPackageState::Claimed => &mut status.claimed,
            KeyPackageState::Consumed => &mut status.consumed,
            KeyPackageState::Retired => &mut status.retired,
            KeyPackageState::Expired => &mut status.expired,
        };
        *counter += 1;
    }
    status.last_resort_age =
        current_last_resort(entries, now).map(|e| now.duration_since(e.created_at));
    status.next_expiry = entries
        .iter()
        .filter(|e| e.state.is_offered() && !e.keys_deleted)
        .map(|e| e.not_after)
        .min();
    let (fresh_needed, last_resort_needed) = replenish_plan(entries, policy, now);
    status.needs_replenish = fresh_needed > 0 || last_resort_needed;
    status
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openmls_basic_credential::SignatureKeyPair;

    #[test]
    fn device_signer_signs_exactly_like_the_openmls_key_pair() {
        let device = DeviceSignatureKeyPair::generate();
        let openmls = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            device.private_key_bytes().to_vec(),
            device.public_key_bytes().to_vec(),
        );
        let ours = DeviceSigner(&device);
        assert_eq!(ours.signature_scheme(), openmls.signature_scheme());
        for payload in [&b""[..], b"leaf node", &[7; 1000]] {
            assert_eq!(ours.sign(payload).unwrap(), openmls.sign(payload).unwrap());
        }
    }
}
