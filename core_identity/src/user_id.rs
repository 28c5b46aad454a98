//! User ids and their short fingerprints.

use std::fmt;
use std::str::FromStr;

use crate::error::IdentityError;
use crate::identity_key::IdentityPublicKey;

/// BLAKE3 `derive_key` context of user ids. Changing it changes every user id.
const USER_ID_CONTEXT: &str = "spacepanda user id v1";

/// A user: BLAKE3 `derive_key("spacepanda user id v1", identity public key)`.
///
/// Every device of the user shares it. It is derived, never claimed: whoever holds the identity
/// key is the user. Displayed (and parsed) as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId([u8; 32]);

impl UserId {
    /// The user id of an identity public key.
    pub fn from_identity_key(key: &IdentityPublicKey) -> Self {
        Self(blake3::derive_key(USER_ID_CONTEXT, key.as_bytes()))
    }

    /// Wraps raw bytes (for example read from a stored record of a layer above).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The full id as 64 lowercase hex characters (the same as `Display`).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The short form people see in addresses: the first 4 bytes.
    pub fn fingerprint(&self) -> Fingerprint {
        let [a, b, c, d, ..] = self.0;
        Fingerprint([a, b, c, d])
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.to_hex())
    }
}

impl FromStr for UserId {
    type Err = IdentityError;

    /// Parses 64 hex characters (either case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 64 {
            return Err(IdentityError::InvalidUserId {
                reason: "not 64 characters long",
            });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| IdentityError::InvalidUserId {
            reason: "not hexadecimal",
        })?;
        Ok(Self(bytes))
    }
}

/// The first 4 bytes of a [`UserId`], shown as 8 lowercase hex characters: the part after the
/// `@` of an [`Address`](crate::Address).
///
/// It tells apart people with the same display name in everyday use; it is *not* collision
/// resistant (32 bits), so resolution reports collisions as ambiguous and the full
/// [`UserId`] or a [`SafetyNumber`](crate::SafetyNumber) settles them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = IdentityError;

    /// Parses 8 hex characters (either case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 8 {
            return Err(IdentityError::InvalidAddress {
                reason: "the fingerprint after `@` must be 8 hex characters",
            });
        }
        let mut bytes = [0u8; 4];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| IdentityError::InvalidAddress {
            reason: "the fingerprint after `@` is not hexadecimal",
        })?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::IdentityKeyPair;
    use proptest::prelude::*;

    #[test]
    fn user_id_is_the_documented_derivation() {
        let key = IdentityKeyPair::generate();
        let public = key.public_key();
        let expected = blake3::derive_key("spacepanda user id v1", public.as_bytes());
        assert_eq!(public.user_id().as_bytes(), &expected);
        let id = public.user_id();
        assert_eq!(id.to_string().len(), 64);
        assert_eq!(id.to_string(), id.to_string().to_lowercase());
        assert_eq!(id.fingerprint().to_string(), id.to_string()[..8]);
    }

    #[test]
    fn bad_text_is_rejected() {
        assert!(matches!(
            "abc".parse::<UserId>(),
            Err(IdentityError::InvalidUserId { .. })
        ));
        assert!(matches!(
            "zz".repeat(32).parse::<UserId>(),
            Err(IdentityError::InvalidUserId { .. })
        ));
        assert!(matches!(
            "1234567".parse::<Fingerprint>(),
            Err(IdentityError::InvalidAddress { .. })
        ));
        assert!(matches!(
            "1234567g".parse::<Fingerprint>(),
            Err(IdentityError::InvalidAddress { .. })
        ));
    }

    proptest! {
        #[test]
        fn user_id_text_round_trips(bytes in any::<[u8; 32]>()) {
            let id = UserId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<UserId>().unwrap(), id);
            prop_assert_eq!(id.to_string().to_uppercase().parse::<UserId>().unwrap(), id);
            let fingerprint = id.fingerprint();
            prop_assert_eq!(fingerprint.to_string().parse::<Fingerprint>().unwrap(), fingerprint);
        }

        #[test]
        fn parsing_any_text_never_panics(text in ".{0,80}") {
            let _ = text.parse::<UserId>();
            let _ = text.parse::<Fingerprint>();
        }
    }
}
