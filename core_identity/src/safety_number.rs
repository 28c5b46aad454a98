//! Safety numbers: what two people compare out of band to rule out a man in the middle.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::identity_key::IdentityPublicKey;

/// BLAKE3 `derive_key` context of each side's half.
const SAFETY_NUMBER_CONTEXT: &str = "spacepanda safety number v1";
/// Digits contributed by each identity key.
const DIGITS_PER_KEY: usize = 30;
/// Digits per group when displayed.
const GROUP_LEN: usize = 5;

/// A 60-digit number derived from two identity public keys, shown as 12 groups of 5 digits
/// (`12345 67890 …`).
///
/// Each key contributes 30 digits (≈ 100 bits) computed from
/// BLAKE3 `derive_key("spacepanda safety number v1", key)`: six 5-byte chunks, each read as a
/// big-endian integer modulo 100 000. The two halves are ordered by value, so both people
/// see the same number (order-independent), and it stays the same as long as neither
/// identity key changes (devices may come and go).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafetyNumber {
    digits: String,
}

impl SafetyNumber {
    /// The safety number between the users of `a` and `b` (in either order).
    pub fn between(a: &IdentityPublicKey, b: &IdentityPublicKey) -> Self {
        let mut halves = [half(a), half(b)];
        halves.sort();
        Self {
            digits: halves.concat(),
        }
    }

    /// The 60 digits without spaces.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The 12 groups of 5 digits.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        // The digits are ASCII, so every 5-byte chunk is valid UTF-8.
        self.digits
            .as_bytes()
            .chunks(GROUP_LEN)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok())
    }

    /// True when `typed` (as read out or typed by the other person, with any whitespace) is
    /// this number. Compares in constant time.
    pub fn matches(&self, typed: &str) -> bool {
        let typed: Vec<u8> = typed
            .bytes()
            .filter(|byte| !byte.is_ascii_whitespace())
            .collect();
        typed.len() == self.digits.len() && bool::from(typed.ct_eq(self.digits.as_bytes()))
    }
}

fn half(key: &IdentityPublicKey) -> String {
    let digest = blake3::derive_key(SAFETY_NUMBER_CONTEXT, key.as_bytes());
    let mut out = String::with_capacity(DIGITS_PER_KEY);
    for chunk in digest.chunks_exact(5).take(DIGITS_PER_KEY / GROUP_LEN) {
        let value = chunk
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
        out.push_str(&format!("{:05}", value % 100_000));
    }
    out
}

impl fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, group) in self.groups().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            f.write_str(group)?;
        }
        Ok(())
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::IdentityKeyPair;
    use proptest::prelude::*;

    #[test]
    fn is_order_independent_stable_and_distinct() {
        let alice = IdentityKeyPair::generate().public_key();
        let bob = IdentityKeyPair::generate().public_key();
        let carol = IdentityKeyPair::generate().public_key();
        let ab = SafetyNumber::between(&alice, &bob);
        assert_eq!(ab, SafetyNumber::between(&bob, &alice));
        assert_eq!(ab, SafetyNumber::between(&alice, &bob));
        assert_ne!(ab, SafetyNumber::between(&alice, &carol));
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(ab.groups().count(), 12);
        assert!(ab.groups().all(|g| g.len() == 5));
        assert_eq!(ab.to_string().len(), 60 + 11);
        assert!(ab.matches(&ab.to_string()));
        assert!(ab.matches(ab.digits()));
        let mut wrong = ab.digits().to_string();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(59.., last);
        assert!(!ab.matches(&wrong));
        assert!(!ab.matches(&ab.digits()[..59]));
    }

    #[test]
    fn known_answer_is_stable_across_builds() {
        // Pinned so a change to the derivation (which would make every user re-verify) is
        // noticed: the number for two fixed keys.
        let a = IdentityKeyPair::from_secret_bytes(&[1; 32]).public_key();
        let b = IdentityKeyPair::from_secret_bytes(&[2; 32]).public_key();
        let number = SafetyNumber::between(&a, &b);
        assert_eq!(number.digits(), EXPECTED);
    }

    const EXPECTED: &str = "247606692173172121843887886356955898952721264433934481961458";

    proptest! {
        #[test]
        fn symmetric_for_any_keys(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let a = IdentityKeyPair::from_secret_bytes(&a).public_key();
            let b = IdentityKeyPair::from_secret_bytes(&b).public_key();
            prop_assert_eq!(SafetyNumber::between(&a, &b), SafetyNumber::between(&b, &a));
        }
    }
}
