//! Devices: their ids and their MLS signature keys.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::IdentityError;

/// One device of a user: 16 random bytes chosen when the device is set up.
/// Displayed as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    /// A fresh random device id.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh device id from `rng`.
    pub fn generate_with<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = IdentityError;

    /// Parses 32 hex characters (either case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| IdentityError::Malformed {
            what: "device id",
            reason: "not 32 hex characters",
        })?;
        Ok(Self(bytes))
    }
}

/// The Ed25519 key pair a device signs its MLS messages with (the leaf's signature key),
/// distinct from the user's identity key.
///
/// `core_mls` wraps it as an OpenMLS signer with
/// `SignatureKeyPair::from_raw(SignatureScheme::ED25519, private.to_vec(), public.to_vec())`,
/// using [`private_key_bytes`](Self::private_key_bytes) and
/// [`public_key_bytes`](Self::public_key_bytes). The secret zeroizes on drop and never appears
/// in `Debug` output.
#[derive(Clone)]
pub struct DeviceSignatureKeyPair {
    signing: SigningKey,
}

impl DeviceSignatureKeyPair {
    /// A fresh key pair from the operating system's random number generator.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh key pair from `rng`.
    pub fn generate_with<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            signing: SigningKey::generate(rng),
        }
    }

    /// The key pair with these 32 secret bytes.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte Ed25519 public key (the leaf's `signature_key`).
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The 32-byte Ed25519 secret key, zeroized when dropped (the format OpenMLS's
    /// `SignatureKeyPair::from_raw` expects for `ED25519`).
    pub fn private_key_bytes(&self) -> Zeroizing<Vec<u8>> {
        let secret = Zeroizing::new(self.signing.to_bytes());
        Zeroizing::new(secret.to_vec())
    }

    /// Signs `message` with this key (for tests and tools; MLS signing goes through OpenMLS).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    pub(crate) fn secret_array(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }
}

impl fmt::Debug for DeviceSignatureKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSignatureKeyPair")
            .field("public", &hex::encode(self.public_key_bytes()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use ed25519_dalek::{Signature, VerifyingKey};

    #[test]
    fn device_ids_are_random_and_round_trip_as_text() {
        let a = DeviceId::generate();
        assert_ne!(a, DeviceId::generate());
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(a.to_string().parse::<DeviceId>().unwrap(), a);
        assert!("xyz".parse::<DeviceId>().is_err());
    }

    #[test]
    fn raw_bytes_rebuild_the_same_signer() {
        let keys = DeviceSignatureKeyPair::generate();
        let private = keys.private_key_bytes();
        assert_eq!(private.len(), 32);
        let secret: [u8; 32] = private.as_slice().try_into().unwrap();
        let again = DeviceSignatureKeyPair::from_secret_bytes(&secret);
        assert_eq!(again.public_key_bytes(), keys.public_key_bytes());
        let signature = again.sign(b"hello");
        let public = VerifyingKey::from_bytes(&keys.public_key_bytes()).unwrap();
        assert!(
            public
                .verify_strict(b"hello", &Signature::from_bytes(&signature))
                .is_ok()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let keys = DeviceSignatureKeyPair::generate();
        let debug = format!("{keys:?}");
        assert!(debug.contains("redacted"));
        assert!(!debug.contains(&hex::encode(keys.private_key_bytes().as_slice())));
    }
}
