//! Display names: what a person calls themselves, bounded and printable.

use std::fmt;

use crate::error::IdentityError;

/// Longest display name, in bytes of UTF-8.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;

/// A display name: 1 to [`MAX_DISPLAY_NAME_LEN`] bytes of UTF-8, no control characters, no
/// `@` (it separates the name from the fingerprint in an [`Address`](crate::Address)), and no
/// leading or trailing whitespace.
///
/// Names are chosen by their owners and are not unique: two users may both be `john`. They are
/// told apart by the fingerprint of their [`UserId`](crate::UserId).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DisplayName(String);

impl DisplayName {
    /// Checks `name` against the rules; a broken rule is [`IdentityError::InvalidDisplayName`].
    pub fn new(name: impl Into<String>) -> Result<Self, IdentityError> {
        let name = name.into();
        match check(&name) {
            Ok(()) => Ok(Self(name)),
            Err(NameProblem::TooLong(_)) => Err(IdentityError::InvalidDisplayName {
                reason: "longer than 64 bytes of UTF-8",
            }),
            Err(NameProblem::Rule(reason)) => Err(IdentityError::InvalidDisplayName { reason }),
        }
    }

    /// Checks bytes received from a peer (inside a credential).
    pub(crate) fn from_peer_bytes(bytes: Vec<u8>) -> Result<Self, IdentityError> {
        const WHAT: &str = "credential display name";
        let name = String::from_utf8(bytes).map_err(|_| IdentityError::Malformed {
            what: WHAT,
            reason: "not UTF-8",
        })?;
        match check(&name) {
            Ok(()) => Ok(Self(name)),
            Err(NameProblem::TooLong(len)) => Err(IdentityError::Oversized {
                what: WHAT,
                len,
                max: MAX_DISPLAY_NAME_LEN,
            }),
            Err(NameProblem::Rule(reason)) => Err(IdentityError::Malformed { what: WHAT, reason }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name folded for case-insensitive matching.
    pub(crate) fn folded(&self) -> String {
        self.0.to_lowercase()
    }
}

enum NameProblem {
    TooLong(usize),
    Rule(&'static str),
}

fn check(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Rule("empty"));
    }
    if name.len() > MAX_DISPLAY_NAME_LEN {
        return Err(NameProblem::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameProblem::Rule("contains a control character"));
    }
    if name.contains('@') {
        return Err(NameProblem::Rule("contains `@`"));
    }
    if name.trim() != name {
        return Err(NameProblem::Rule("starts or ends with whitespace"));
    }
    Ok(())
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplayName({:?})", self.0)
    }
}

impl AsRef<str> for DisplayName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_enforced() {
        assert!(DisplayName::new("alice").is_ok());
        assert!(DisplayName::new("Anna Lísa 🐼").is_ok());
        assert!(DisplayName::new("a".repeat(64)).is_ok());
        for bad in ["", " alice", "alice ", "al@ice", "al\nice", "\u{7}"] {
            assert!(
                matches!(
                    DisplayName::new(bad),
                    Err(IdentityError::InvalidDisplayName { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert!(matches!(
            DisplayName::new("a".repeat(65)),
            Err(IdentityError::InvalidDisplayName { .. })
        ));
    }

    #[test]
    fn peer_names_get_peer_errors() {
        assert!(matches!(
            DisplayName::from_peer_bytes(vec![b'a'; 65]),
            Err(IdentityError::Oversized {
                len: 65,
                max: 64,
                ..
            })
        ));
        assert!(matches!(
            DisplayName::from_peer_bytes(vec![0xff, 0xfe]),
            Err(IdentityError::Malformed {
                reason: "not UTF-8",
                ..
            })
        ));
        assert!(matches!(
            DisplayName::from_peer_bytes(b"a@b".to_vec()),
            Err(IdentityError::Malformed { .. })
        ));
    }
}
