//! Persistence of this user's identity key and this device, over a [`KeyValueStore`].
//!
//! Records (namespace [`IDENTITY_NAMESPACE`], one user and one device per store, TLS-encoded,
//! each starting with a `u16` version, at most [`MAX_RECORD_LEN`] bytes):
//!
//! ```text
//! key ["user"]:   struct { uint16 version = 1; opaque identity_secret[32]; uint64 created_at; }
//! key ["device"]: struct { uint16 version = 1; opaque signature_secret[32];
//!                          opaque credential<0..2^16-1>; }
//! ```
//!
//! Both records hold secrets: open the store through a
//! [`SealedStore`](spacepanda_core::SealedStore) so they are encrypted at rest.
//!
//! [`KeyValueStore`]: spacepanda_core::KeyValueStore

use std::fmt;
use std::sync::Arc;

use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use spacepanda_core::{Clock, Key, SharedStore, Transaction};
use tls_codec::{TlsByteVecU16, TlsDeserializeBytes, TlsSerializeBytes, TlsSize};
use zeroize::{Zeroize, Zeroizing};

use crate::device::{DeviceId, DeviceSignatureKeyPair};
use crate::device_identity::DeviceIdentity;
use crate::display_name::DisplayName;
use crate::encoding::{decode_versioned, encode};
use crate::error::IdentityError;
use crate::identity_key::IdentityKeyPair;

/// The namespace this crate owns in the store.
pub const IDENTITY_NAMESPACE: &str = "identity";
/// Version of the stored records.
pub const RECORD_VERSION: u16 = 1;
/// Longest stored record this build reads.
pub const MAX_RECORD_LEN: usize = 2048;

const USER_RECORD: &str = "user";
const DEVICE_RECORD: &str = "device";

/// This device's identity, persisted: create-or-load the user's identity key and this device's
/// record (device id, MLS signature key pair, credential), import an exported identity key to
/// set up another device of the same user, and export it.
///
/// Every mutation is one [`Transaction`]: the `*_in` methods write into the caller's
/// transaction (so `core_mls` can commit them with its own records); the others begin and
/// commit their own. Creation times come from the [`Clock`].
pub struct IdentityStore {
    store: SharedStore,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityStore")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl IdentityStore {
    /// An identity store over `store`, reading the time from `clock`.
    pub fn new(store: SharedStore, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The underlying store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// This device, if the store holds one.
    pub fn load(&self) -> Result<Option<DeviceIdentity>, IdentityError> {
        self.load_in(&Transaction::begin(&self.store))
    }

    /// [`load`](Self::load) as seen by `txn`.
    pub fn load_in(&self, txn: &Transaction) -> Result<Option<DeviceIdentity>, IdentityError> {
        Ok(load_records(txn)?.map(|(_, device)| device))
    }

    /// Loads this device, or — in a store that holds none — creates a new user identity and
    /// this device with `display_name`, committed in one transaction. Loading again (also
    /// after reopening the store) gives the same [`UserId`](crate::UserId) and device; the
    /// stored display name wins over `display_name`.
    pub fn create_or_load(&self, display_name: &str) -> Result<DeviceIdentity, IdentityError> {
        let mut txn = Transaction::begin(&self.store);
        let device = self.create_or_load_in(&mut txn, display_name)?;
        txn.commit()?;
        Ok(device)
    }

    /// [`create_or_load`](Self::create_or_load) inside the caller's transaction.
    pub fn create_or_load_in(
        &self,
        txn: &mut Transaction,
        display_name: &str,
    ) -> Result<DeviceIdentity, IdentityError> {
        if let Some((_, device)) = load_records(txn)? {
            return Ok(device);
        }
        let display_name = DisplayName::new(display_name)?;
        let rng = &mut OsRng;
        self.set_up(txn, IdentityKeyPair::generate_with(rng), display_name, rng)
    }

    /// Creates a new user identity and this device; [`IdentityError::AlreadyInitialized`] if
    /// the store already holds one.
    pub fn create(&self, display_name: &str) -> Result<DeviceIdentity, IdentityError> {
        self.create_with(display_name, &mut OsRng)
    }

    /// [`create`](Self::create) with every key and id drawn from `rng`: for tests and
    /// simulations that replay a seed exactly. Production uses [`create`](Self::create).
    pub fn create_with<R: RngCore + CryptoRng>(
        &self,
        display_name: &str,
        rng: &mut R,
    ) -> Result<DeviceIdentity, IdentityError> {
        let display_name = DisplayName::new(display_name)?;
        let mut txn = Transaction::begin(&self.store);
        self.refuse_if_initialized(&txn)?;
        let identity = IdentityKeyPair::generate_with(rng);
        let device = self.set_up(&mut txn, identity, display_name, rng)?;
        txn.commit()?;
        Ok(device)
    }

    /// Sets this store up as a *new device of an existing user*, from bytes made by
    /// [`export_identity_key`](Self::export_identity_key) on another device: same
    /// [`UserId`](crate::UserId), new [`DeviceId`], new MLS signature key, new certificate.
    pub fn import(
        &self,
        exported: &[u8],
        display_name: &str,
    ) -> Result<DeviceIdentity, IdentityError> {
        self.import_with(exported, display_name, &mut OsRng)
    }

    /// [`import`](Self::import) with the device's id and keys drawn from `rng` (tests and
    /// simulations; see [`create_with`](Self::create_with)).
    pub fn import_with<R: RngCore + CryptoRng>(
        &self,
        exported: &[u8],
        display_name: &str,
        rng: &mut R,
    ) -> Result<DeviceIdentity, IdentityError> {
        // A new device is a restore under an id nobody used.
        let device_id = DeviceId::generate_with(rng);
        self.restore_with(exported, device_id, display_name, rng)
    }

    /// Sets this store up as a device that *lost its store*, restored under its old
    /// [`DeviceId`] from the user's identity key (exported by another device, or kept by the
    /// user): same user, same device id, a new MLS signature key and certificate. Its groups
    /// take it back by external commit, which replaces the leaf the device had (core_mls:
    /// `join_by_external_commit`). Never restore a device id that is still running elsewhere:
    /// the two would replace each other's leaves.
    pub fn restore(
        &self,
        exported: &[u8],
        device_id: DeviceId,
        display_name: &str,
    ) -> Result<DeviceIdentity, IdentityError> {
        self.restore_with(exported, device_id, display_name, &mut OsRng)
    }

    /// [`restore`](Self::restore) with the device's keys drawn from `rng` (tests and
    /// simulations; see [`create_with`](Self::create_with)).
    pub fn restore_with<R: RngCore + CryptoRng>(
        &self,
        exported: &[u8],
        device_id: DeviceId,
        display_name: &str,
        rng: &mut R,
    ) -> Result<DeviceIdentity, IdentityError> {
        let identity = IdentityKeyPair::import(exported)?;
        let display_name = DisplayName::new(display_name)?;
        let mut txn = Transaction::begin(&self.store);
        self.refuse_if_initialized(&txn)?;
        let device = self.set_up_device(&mut txn, identity, device_id, display_name, rng)?;
        txn.commit()?;
        Ok(device)
    }

    /// The identity key in its export format, zeroized when dropped, for
    /// [`import`](Self::import) on another device of the same user. Whoever holds it can add
    /// devices as this user: hand it over only through a channel the user trusts.
    pub fn export_identity_key(&self) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let txn = Transaction::begin(&self.store);
        let (identity, _) = load_records(&txn)?.ok_or(IdentityError::NotInitialized)?;
        identity.export()
    }

    /// Signs `message` with the user's identity key, for records the user publishes about
    /// itself (the network directory's user record). The secret is read for this call only and
    /// zeroizes when it returns. `message` must start with its use's own domain label.
    pub fn sign_as_user(&self, message: &[u8]) -> Result<[u8; 64], IdentityError> {
        let txn = Transaction::begin(&self.store);
        let (identity, _) = load_records(&txn)?.ok_or(IdentityError::NotInitialized)?;
        Ok(identity.sign(message))
    }

    /// Replaces this device's MLS signature key pair with a fresh one and certifies it (same
    /// device id and display name, created now). The old key stops verifying as this device;
    /// `core_mls` must publish the new credential (an MLS update) in the same transaction.
    pub fn rotate_signature_key_in(
        &self,
        txn: &mut Transaction,
    ) -> Result<DeviceIdentity, IdentityError> {
        let (identity, device) = load_records(txn)?.ok_or(IdentityError::NotInitialized)?;
        let rotated = DeviceIdentity::certify(
            &identity,
            device.device_id(),
            DeviceSignatureKeyPair::generate(),
            device.display_name().clone(),
            self.clock.now(),
        )?;
        write_device(txn, &rotated)?;
        Ok(rotated)
    }

    fn refuse_if_initialized(&self, txn: &Transaction) -> Result<(), IdentityError> {
        match load_records(txn)? {
            Some((identity, _)) => Err(IdentityError::AlreadyInitialized {
                user_id: identity.user_id(),
            }),
            None => Ok(()),
        }
    }

    fn set_up<R: RngCore + CryptoRng>(
        &self,
        txn: &mut Transaction,
        identity: IdentityKeyPair,
        display_name: DisplayName,
        rng: &mut R,
    ) -> Result<DeviceIdentity, IdentityError> {
        let device_id = DeviceId::generate_with(rng);
        self.set_up_device(txn, identity, device_id, display_name, rng)
    }

    fn set_up_device<R: RngCore + CryptoRng>(
        &self,
        txn: &mut Transaction,
        identity: IdentityKeyPair,
        device_id: DeviceId,
        display_name: DisplayName,
        rng: &mut R,
    ) -> Result<DeviceIdentity, IdentityError> {
        let now = self.clock.now();
        let device = DeviceIdentity::certify(
            &identity,
            device_id,
            DeviceSignatureKeyPair::generate_with(rng),
            display_name,
            now,
        )?;
        let user = UserRecord {
            version: RECORD_VERSION,
            identity_secret: *identity.secret_bytes(),
            created_at: now.unix_millis(),
        };
        let bytes = Zeroizing::new(encode(&user, "user record")?);
        txn.put(IDENTITY_NAMESPACE, user_key(), bytes.to_vec())?;
        write_device(txn, &device)?;
        Ok(device)
    }
}

fn user_key() -> Key {
    Key::from_segment(USER_RECORD)
}

fn device_key() -> Key {
    Key::from_segment(DEVICE_RECORD)
}

fn write_device(txn: &mut Transaction, device: &DeviceIdentity) -> Result<(), IdentityError> {
    let record = DeviceRecord {
        version: RECORD_VERSION,
        signature_secret: *device.signature_key_pair().secret_array(),
        credential: device.credential_bytes().into(),
    };
    let bytes = Zeroizing::new(encode(&record, "device record")?);
    txn.put(IDENTITY_NAMESPACE, device_key(), bytes.to_vec())?;
    Ok(())
}

/// Reads and cross-checks both records; `None` when the store holds no identity.
fn load_records(
    txn: &Transaction,
) -> Result<Option<(IdentityKeyPair, DeviceIdentity)>, IdentityError> {
    let user = txn
        .get(IDENTITY_NAMESPACE, &user_key())?
        .map(Zeroizing::new);
    let device = txn
        .get(IDENTITY_NAMESPACE, &device_key())?
        .map(Zeroizing::new);
    let (user, device) = match (user, device) {
        (None, None) => return Ok(None),
        (Some(user), Some(device)) => (user, device),
        (None, Some(_)) => {
            return Err(IdentityError::CorruptedRecord {
                record: USER_RECORD,
                reason: "missing while the device record exists",
            });
        }
        (Some(_), None) => {
            return Err(IdentityError::CorruptedRecord {
                record: DEVICE_RECORD,
                reason: "missing while the user record exists",
            });
        }
    };
    let user: UserRecord = decode_versioned(&user, MAX_RECORD_LEN, RECORD_VERSION)
        .map_err(|error| error.into_record_error(USER_RECORD))?;
    let identity = IdentityKeyPair::from_secret_bytes(&user.identity_secret);
    let record: DeviceRecord = decode_versioned(&device, MAX_RECORD_LEN, RECORD_VERSION)
        .map_err(|error| error.into_record_error(DEVICE_RECORD))?;
    let keys = DeviceSignatureKeyPair::from_secret_bytes(&record.signature_secret);
    let device =
        DeviceIdentity::from_parts(keys, record.credential.as_slice().to_vec()).map_err(|_| {
            IdentityError::CorruptedRecord {
                record: DEVICE_RECORD,
                reason: "the stored credential does not verify with the stored signature key",
            }
        })?;
    if device.user_id() != identity.user_id() {
        return Err(IdentityError::CorruptedRecord {
            record: DEVICE_RECORD,
            reason: "the stored credential belongs to another user",
        });
    }
    Ok(Some((identity, device)))
}

/// The user record: the identity secret and when the user was created on this device.
#[derive(TlsSerializeBytes, TlsDeserializeBytes, TlsSize)]
struct UserRecord {
    version: u16,
    identity_secret: [u8; 32],
    created_at: u64,
}

impl Drop for UserRecord {
    fn drop(&mut self) {
        self.identity_secret.zeroize();
    }
}

/// The device record: the MLS signature secret and the encoded credential.
#[derive(TlsSerializeBytes, TlsDeserializeBytes, TlsSize)]
struct DeviceRecord {
    version: u16,
    signature_secret: [u8; 32],
    credential: TlsByteVecU16,
}

impl Drop for DeviceRecord {
    fn drop(&mut self) {
        self.signature_secret.zeroize();
    }
}

/// The creation time stored in the user record (for tests of the clock wiring).
#[cfg(test)]
fn stored_user_created_at(txn: &Transaction) -> Option<spacepanda_core::Timestamp> {
    let bytes = Zeroizing::new(txn.get(IDENTITY_NAMESPACE, &user_key()).ok()??);
    let record: UserRecord = decode_versioned(&bytes, MAX_RECORD_LEN, RECORD_VERSION).ok()?;
    Some(spacepanda_core::Timestamp::from_unix_millis(
        record.created_at,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;
    use spacepanda_core::{KeyValueStore, ManualClock, MemoryStore, Timestamp};

    fn setup() -> (SharedStore, ManualClock, IdentityStore) {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(Timestamp::from_unix_secs(1_000));
        let identities = IdentityStore::new(SharedStore::clone(&store), Arc::new(clock.clone()));
        (store, clock, identities)
    }

    #[test]
    fn create_or_load_is_stable_and_uses_the_clock() {
        let (store, clock, identities) = setup();
        assert!(identities.load().unwrap().is_none());
        let first = identities.create_or_load("alice").unwrap();
        assert_eq!(first.created_at(), Timestamp::from_unix_secs(1_000));
        assert_eq!(
            stored_user_created_at(&Transaction::begin(&store)),
            Some(Timestamp::from_unix_secs(1_000))
        );
        clock.advance(std::time::Duration::from_secs(5));
        let again = identities.create_or_load("someone else").unwrap();
        assert_eq!(again.user_id(), first.user_id());
        assert_eq!(again.device_id(), first.device_id());
        assert_eq!(again.display_name().as_str(), "alice");
        assert_eq!(again.signature_public_key(), first.signature_public_key());
        assert!(matches!(
            identities.create("bob"),
            Err(IdentityError::AlreadyInitialized { .. })
        ));
    }

    #[test]
    fn a_restored_device_keeps_its_id_and_gets_a_new_key() {
        let (_, _, laptop) = setup();
        let lost = laptop.create("alice").unwrap();
        let exported = laptop.export_identity_key().unwrap();
        let (_, _, fresh) = setup();
        let restored = fresh.restore(&exported, lost.device_id(), "alice").unwrap();
        assert_eq!(restored.user_id(), lost.user_id());
        assert_eq!(restored.device_id(), lost.device_id());
        assert_ne!(restored.signature_public_key(), lost.signature_public_key());
        // The certificate binds the old id to the new key under the user's identity key.
        restored.verify_self().unwrap();
        assert!(matches!(
            fresh.restore(&exported, lost.device_id(), "alice"),
            Err(IdentityError::AlreadyInitialized { .. })
        ));
    }

    #[test]
    fn nothing_is_written_until_commit() {
        let (store, _, identities) = setup();
        let mut txn = Transaction::begin(&store);
        let device = identities.create_or_load_in(&mut txn, "carol").unwrap();
        assert_eq!(
            identities.load_in(&txn).unwrap().unwrap().user_id(),
            device.user_id()
        );
        assert!(identities.load().unwrap().is_none());
        drop(txn);
        assert!(identities.load().unwrap().is_none());
    }

    #[test]
    fn bad_display_name_writes_nothing() {
        let (_, _, identities) = setup();
        assert!(matches!(
            identities.create_or_load("bad@name"),
            Err(IdentityError::InvalidDisplayName { .. })
        ));
        assert!(identities.load().unwrap().is_none());
        assert!(matches!(
            identities.export_identity_key(),
            Err(IdentityError::NotInitialized)
        ));
    }

    #[test]
    fn rotation_keeps_the_device_and_changes_the_key() {
        let (store, clock, identities) = setup();
        let before = identities.create_or_load("dora").unwrap();
        clock.advance(std::time::Duration::from_secs(60));
        let mut txn = Transaction::begin(&store);
        let after = identities.rotate_signature_key_in(&mut txn).unwrap();
        txn.commit().unwrap();
        assert_eq!(after.device_id(), before.device_id());
        assert_ne!(after.signature_public_key(), before.signature_public_key());
        assert_eq!(after.created_at(), Timestamp::from_unix_secs(1_060));
        let loaded = identities.load().unwrap().unwrap();
        assert_eq!(loaded.signature_public_key(), after.signature_public_key());
        assert!(matches!(
            crate::verify_member(loaded.credential_bytes(), &before.signature_public_key()),
            Err(IdentityError::SignatureKeyMismatch { .. })
        ));
    }

    #[test]
    fn damaged_records_are_typed_errors() {
        let (store, _, identities) = setup();
        identities.create_or_load("eve").unwrap();
        let original = store
            .get(IDENTITY_NAMESPACE, &device_key())
            .unwrap()
            .unwrap();
        let put = |key: Key, value: Vec<u8>| {
            let mut txn = Transaction::begin(&store);
            txn.put(IDENTITY_NAMESPACE, key, value).unwrap();
            txn.commit().unwrap();
        };
        put(device_key(), original[..original.len() - 1].to_vec());
        assert!(matches!(
            identities.load(),
            Err(IdentityError::CorruptedRecord {
                record: "device",
                ..
            })
        ));
        let mut future = original.clone();
        future[1] = 2;
        put(device_key(), future);
        assert!(matches!(
            identities.load(),
            Err(IdentityError::UnsupportedRecordVersion {
                record: "device",
                found: 2,
                supported: 1
            })
        ));
        // A device record of another user next to this user record.
        let (other_store, _, other) = setup();
        other.create_or_load("mallory").unwrap();
        put(
            device_key(),
            other_store
                .get(IDENTITY_NAMESPACE, &device_key())
                .unwrap()
                .unwrap(),
        );
        assert!(matches!(
            identities.load(),
            Err(IdentityError::CorruptedRecord {
                record: "device",
                ..
            })
        ));
        let mut txn = Transaction::begin(&store);
        txn.delete(IDENTITY_NAMESPACE, user_key()).unwrap();
        txn.commit().unwrap();
        assert!(matches!(
            identities.load(),
            Err(IdentityError::CorruptedRecord { record: "user", .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn loading_random_records_never_panics(
            user in proptest::collection::vec(any::<u8>(), 0..100),
            device in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let (store, _, identities) = setup();
            let mut txn = Transaction::begin(&store);
            txn.put(IDENTITY_NAMESPACE, user_key(), user).unwrap();
            txn.put(IDENTITY_NAMESPACE, device_key(), device).unwrap();
            txn.commit().unwrap();
            prop_assert!(identities.load().is_err());
        }

        #[test]
        fn records_round_trip(secret in any::<[u8; 32]>(), millis in any::<u64>()) {
            let record = UserRecord { version: RECORD_VERSION, identity_secret: secret, created_at: millis };
            let bytes = encode(&record, "user record").unwrap();
            let decoded: UserRecord = decode_versioned(&bytes, MAX_RECORD_LEN, RECORD_VERSION).unwrap();
            prop_assert_eq!(decoded.identity_secret, secret);
            prop_assert_eq!(decoded.created_at, millis);
        }
    }
}
