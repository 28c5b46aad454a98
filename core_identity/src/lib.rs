//! SpacePanda identities: users, devices, and the MLS credentials that bind them.
//!
//! # What it is
//!
//! The layer that answers "who is this MLS leaf?". A *user* is a long-term Ed25519
//! [`IdentityKeyPair`]; their [`UserId`] is derived from its public key. Each *device* of the
//! user has a random [`DeviceId`] and its own MLS signature key pair
//! ([`DeviceSignatureKeyPair`]), certified by the identity key in a [`DeviceCertificate`].
//! The [`SpacePandaCredential`] — the bytes inside the MLS `BasicCredential` — carries the
//! identity public key and that certificate, and [`verify_member`] checks that it binds a leaf's
//! signature key to a user and device. People see each other as [`Address`]es
//! (`alice@1a2b3c4d`) and compare [`SafetyNumber`]s out of band.
//!
//! # What it does not do
//!
//! No network I/O, no threads, and no MLS: it does not depend on OpenMLS. `core_mls` wraps the
//! raw signature key bytes as an OpenMLS signer and puts [`DeviceIdentity::credential_bytes`]
//! into a `BasicCredential`; this crate only produces and checks bytes. It does not decide
//! whom to trust (that is the people comparing safety numbers) and does not know about groups.
//! It depends only on `spacepanda-core` (storage and the clock).
//!
//! # Design
//!
//! - Every encoding (credential, certificate content, stored records, key export) is
//!   TLS-style (`tls_codec`), starts with a `u16` version and has a size bound checked before
//!   decoding; each decoding failure is a typed [`IdentityError`], never a panic.
//! - The user id is *derived* from the identity key inside the credential, never read from the
//!   bytes, so a credential cannot claim someone else's id; [`verify_member_as`] additionally
//!   pins the expected user.
//! - The certificate signs (user id, device id, MLS signature key, display name, created at);
//!   the credential also carries the certified MLS signature key, so a genuine credential
//!   replayed in another leaf is told apart ([`IdentityError::SignatureKeyMismatch`]) from a
//!   forged or altered one ([`IdentityError::BadCertificateSignature`]).
//! - [`IdentityStore`] persists the identity secret and this device in namespace
//!   [`IDENTITY_NAMESPACE`] of a `KeyValueStore`, one [`Transaction`](spacepanda_core::Transaction)
//!   per mutation, times from a [`Clock`](spacepanda_core::Clock). Use a `SealedStore`: the
//!   records hold secrets.
//! - [`Directory`] resolves addresses and names against verified members and reports ambiguity
//!   instead of choosing.
//! - Secrets zeroize on drop and `Debug` output redacts them.
//!
//! # Getting started
//!
//! ```
//! use std::sync::Arc;
//! use core_identity::{IdentityStore, verify_member};
//! use spacepanda_core::{ManualClock, MemoryStore, SharedStore, Timestamp};
//!
//! let store: SharedStore = Arc::new(MemoryStore::new());
//! let clock = Arc::new(ManualClock::new(Timestamp::from_unix_secs(1_700_000_000)));
//! let identities = IdentityStore::new(store, clock);
//!
//! // This user's identity and this device, created once and loaded ever after.
//! let device = identities.create_or_load("alice")?;
//!
//! // What every peer does with this device's MLS leaf: credential + leaf signature key.
//! let member = verify_member(device.credential_bytes(), &device.signature_public_key())?;
//! assert_eq!(member.user_id(), device.user_id());
//! assert_eq!(member.device_id(), device.device_id());
//!
//! println!("I am {}", device.address()); // e.g. alice@1a2b3c4d
//! assert_eq!(device.address().to_string(), format!("alice@{}", device.user_id().fingerprint()));
//! # Ok::<(), core_identity::IdentityError>(())
//! ```

mod address;
mod credential;
mod device;
mod device_identity;
mod directory;
mod display_name;
mod encoding;
mod error;
mod identity_key;
mod identity_store;
mod safety_number;
mod user_id;
mod verification;

pub use address::Address;
pub use credential::{
    CREDENTIAL_VERSION, DeviceCertificate, MAX_CREDENTIAL_LEN, MAX_CREDENTIAL_VERSION,
    SpacePandaCredential,
};
pub use device::{DeviceId, DeviceSignatureKeyPair};
pub use device_identity::DeviceIdentity;
pub use directory::{Directory, ResolvedUser};
pub use display_name::{DisplayName, MAX_DISPLAY_NAME_LEN};
pub use error::{Candidate, ErrorKind, IdentityError, IdentityResult};
pub use identity_key::{
    IDENTITY_EXPORT_LEN, IDENTITY_EXPORT_VERSION, IdentityKeyPair, IdentityPublicKey,
};
pub use identity_store::{IDENTITY_NAMESPACE, IdentityStore, MAX_RECORD_LEN, RECORD_VERSION};
pub use safety_number::SafetyNumber;
pub use user_id::{Fingerprint, UserId};
pub use verification::{VerifiedMember, verify_credential, verify_member, verify_member_as};
