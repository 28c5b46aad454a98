//! Human addresses: `name@fingerprint`.

use std::fmt;
use std::str::FromStr;

use crate::display_name::{DisplayName, MAX_DISPLAY_NAME_LEN};
use crate::error::IdentityError;
use crate::user_id::Fingerprint;

/// What a person types to name someone: display name, `@`, and the 8-hex-character
/// [`Fingerprint`] of their user id, e.g. `alice@1a2b3c4d`.
///
/// Two users called `john` have different addresses (`john@9f8e7d6c`, `john@4d3c2b1a`).
/// An address is a *lookup key*, not a proof: resolve it with a
/// [`Directory`](crate::Directory), which reports ambiguity instead of picking.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    name: DisplayName,
    fingerprint: Fingerprint,
}

impl Address {
    /// The address of `name` with `fingerprint`.
    pub fn new(name: DisplayName, fingerprint: Fingerprint) -> Self {
        Self { name, fingerprint }
    }

    /// The display name part.
    pub fn name(&self) -> &DisplayName {
        &self.name
    }

    /// The fingerprint part.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.fingerprint)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// Longest text [`Address::from_str`] looks at: a maximal name, `@`, 8 hex characters.
const MAX_ADDRESS_LEN: usize = MAX_DISPLAY_NAME_LEN + 1 + 8;

impl FromStr for Address {
    type Err = IdentityError;

    /// Parses `name@fingerprint`. Surrounding whitespace is ignored; the fingerprint may be in
    /// either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.len() > MAX_ADDRESS_LEN {
            return Err(IdentityError::InvalidAddress { reason: "too long" });
        }
        let (name, fingerprint) = text.rsplit_once('@').ok_or(IdentityError::InvalidAddress {
            reason: "missing `@` between name and fingerprint",
        })?;
        let name = DisplayName::new(name).map_err(|_| IdentityError::InvalidAddress {
            reason: "the name before `@` is not a valid display name",
        })?;
        Ok(Self::new(name, fingerprint.parse()?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays() {
        let address: Address = " alice@1A2B3C4D ".parse().unwrap();
        assert_eq!(address.name().as_str(), "alice");
        assert_eq!(address.fingerprint().as_bytes(), &[0x1a, 0x2b, 0x3c, 0x4d]);
        assert_eq!(address.to_string(), "alice@1a2b3c4d");
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "alice",
            "@1a2b3c4d",
            "alice@",
            "alice@1a2b3c4",
            "alice@1a2b3c4g",
            "a@b@1a2b3c4d",
        ] {
            assert!(
                matches!(
                    bad.parse::<Address>(),
                    Err(IdentityError::InvalidAddress { .. })
                ),
                "{bad} was accepted"
            );
        }
        let long = format!("{}@1a2b3c4d", "a".repeat(65));
        assert!(matches!(
            long.parse::<Address>(),
            Err(IdentityError::InvalidAddress { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(name in "[a-z][a-z0-9 ._-]{0,62}[a-z0-9]", fingerprint in any::<[u8; 4]>()) {
            let address = Address::new(DisplayName::new(name).unwrap(), Fingerprint::from_bytes(fingerprint));
            prop_assert_eq!(address.to_string().parse::<Address>().unwrap(), address);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,90}") {
            let _ = text.parse::<Address>();
        }
    }
}
