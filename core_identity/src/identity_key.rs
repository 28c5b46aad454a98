//! The long-term Ed25519 identity key of a user, and its export format.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use tls_codec::{TlsDeserializeBytes, TlsSerializeBytes, TlsSize};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{decode_versioned, encode};
use crate::error::IdentityError;
use crate::user_id::UserId;

/// Version of the identity key export format.
pub const IDENTITY_EXPORT_VERSION: u16 = 1;
/// Length of an exported identity key: version (2) ‖ secret key (32) ‖ fingerprint check (4).
pub const IDENTITY_EXPORT_LEN: usize = 2 + 32 + 4;

/// The long-term key of a *user*. Its public half derives the [`UserId`]; it signs a
/// [`DeviceCertificate`](crate::DeviceCertificate) for each device of the user.
///
/// The secret zeroizes on drop and never appears in `Debug` output. It leaves the device only
/// through [`export`](Self::export), which the app calls to set up another device.
#[derive(Clone)]
pub struct IdentityKeyPair {
    // ed25519-dalek's SigningKey zeroizes itself on drop (feature `zeroize`).
    signing: SigningKey,
}

impl IdentityKeyPair {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh key from `rng`.
    pub fn generate_with<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            signing: SigningKey::generate(rng),
        }
    }

    /// The key with these 32 secret bytes.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(secret),
        }
    }

    /// The 32 secret bytes, zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public_key(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.signing.verifying_key())
    }

    /// The user this key identifies.
    pub fn user_id(&self) -> UserId {
        self.public_key().user_id()
    }

    /// Signs `message` with the identity key: device certificates, and the records a user
    /// publishes about itself (its directory record). Each use puts its own domain label at the
    /// start of `message`, so a signature made for one use never verifies as another.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The key in the versioned export format (38 bytes: version ‖ secret ‖ first 4 bytes of
    /// the user id as a check), zeroized when dropped. Treat it like a password: whoever holds
    /// it can add devices as this user.
    pub fn export(&self) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let record = ExportRecord {
            version: IDENTITY_EXPORT_VERSION,
            secret: self.signing.to_bytes(),
            check: *self.user_id().fingerprint().as_bytes(),
        };
        encode(&record, "identity key export").map(Zeroizing::new)
    }

    /// Reads bytes made by [`export`](Self::export). A wrong length, version or a failing
    /// check (a mistyped or corrupted export) is [`IdentityError::InvalidExport`].
    pub fn import(exported: &[u8]) -> Result<Self, IdentityError> {
        let record: ExportRecord = decode_versioned(
            exported,
            IDENTITY_EXPORT_LEN,
            IDENTITY_EXPORT_VERSION,
        )
        .map_err(|error| IdentityError::InvalidExport {
            reason: match error {
                crate::encoding::DecodeError::UnsupportedVersion { .. } => "unknown export version",
                _ => "not 38 bytes of identity key export",
            },
        })?;
        let key = Self::from_secret_bytes(&record.secret);
        if key.user_id().fingerprint().as_bytes() != &record.check {
            return Err(IdentityError::InvalidExport {
                reason: "the check bytes do not match the key (corrupted or mistyped)",
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("user_id", &self.user_id())
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(TlsSerializeBytes, TlsDeserializeBytes, TlsSize)]
struct ExportRecord {
    version: u16,
    secret: [u8; 32],
    check: [u8; 4],
}

impl Drop for ExportRecord {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// The public half of an [`IdentityKeyPair`]: a valid, non-weak Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublicKey(VerifyingKey);

impl IdentityPublicKey {
    /// Parses 32 bytes. Bytes that are not a curve point, or a weak (small-order) point, are
    /// [`IdentityError::Malformed`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, IdentityError> {
        parse_ed25519_public(bytes, "identity public key").map(Self)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The user this key identifies.
    pub fn user_id(&self) -> UserId {
        UserId::from_identity_key(self)
    }

    /// True when `signature` is this key's strict Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublicKey({})", hex::encode(self.as_bytes()))
    }
}

/// Parses an Ed25519 public key from a peer, rejecting non-points and weak points.
pub(crate) fn parse_ed25519_public(
    bytes: &[u8; 32],
    what: &'static str,
) -> Result<VerifyingKey, IdentityError> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| IdentityError::Malformed {
        what,
        reason: "not a valid Ed25519 public key",
    })?;
    if key.is_weak() {
        return Err(IdentityError::Malformed {
            what,
            reason: "a weak (small-order) Ed25519 public key",
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn export_round_trips_and_keeps_the_user() {
        let key = IdentityKeyPair::generate();
        let exported = key.export().unwrap();
        assert_eq!(exported.len(), IDENTITY_EXPORT_LEN);
        let imported = IdentityKeyPair::import(&exported).unwrap();
        assert_eq!(imported.user_id(), key.user_id());
        assert_eq!(*imported.secret_bytes(), *key.secret_bytes());
    }

    #[test]
    fn damaged_exports_are_rejected() {
        let key = IdentityKeyPair::generate();
        let exported = key.export().unwrap();
        let mut flipped = exported.to_vec();
        flipped[10] ^= 1;
        assert!(matches!(
            IdentityKeyPair::import(&flipped),
            Err(IdentityError::InvalidExport { .. })
        ));
        assert!(matches!(
            IdentityKeyPair::import(&exported[..37]),
            Err(IdentityError::InvalidExport { .. })
        ));
        let mut versioned = exported.to_vec();
        versioned[1] = 9;
        assert!(matches!(
            IdentityKeyPair::import(&versioned),
            Err(IdentityError::InvalidExport {
                reason: "unknown export version"
            })
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = IdentityKeyPair::generate();
        let debug = format!("{key:?}");
        assert!(debug.contains("redacted"));
        assert!(!debug.contains(&hex::encode(*key.secret_bytes())));
    }

    #[test]
    fn weak_and_invalid_public_keys_are_rejected() {
        // The identity point (0, 1) encodes as 1 followed by zeros: small order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert!(matches!(
            IdentityPublicKey::from_bytes(&identity_point),
            Err(IdentityError::Malformed { .. })
        ));
        let key = IdentityKeyPair::generate().public_key();
        assert_eq!(IdentityPublicKey::from_bytes(key.as_bytes()).unwrap(), key);
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message_and_key() {
        let key = IdentityKeyPair::generate();
        let signature = key.sign(b"message");
        assert!(key.public_key().verify(b"message", &signature));
        assert!(!key.public_key().verify(b"messagf", &signature));
        assert!(
            !IdentityKeyPair::generate()
                .public_key()
                .verify(b"message", &signature)
        );
    }

    proptest! {
        #[test]
        fn import_of_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = IdentityKeyPair::import(&bytes);
        }

        #[test]
        fn export_round_trips(secret in any::<[u8; 32]>()) {
            let key = IdentityKeyPair::from_secret_bytes(&secret);
            let imported = IdentityKeyPair::import(&key.export().unwrap()).unwrap();
            prop_assert_eq!(*imported.secret_bytes(), secret);
        }
    }
}
