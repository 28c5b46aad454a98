//! The commitment over the whole set of sealed entries.
//!
//! Each entry is authenticated on its own, which says nothing about the set: deleting one entry,
//! or putting back an older sealed value of it, leaves only authentic entries. The commitment
//! closes that gap. It holds the store's commit counter and a multiset hash of every stored
//! entry — the sum modulo 2²⁵⁶ of `BLAKE3-keyed(mac_key, u64le(len k) ‖ k ‖ v)` over stored key
//! `k` and stored (sealed) value `v` — so one `apply` updates it with one subtraction per
//! replaced or deleted entry and one addition per new one, and `open` recomputes it from a scan.
//! Without `mac_key` nobody can compute an entry's term, so no other set sums to the same value.

use crate::Key;

/// Sum modulo 2²⁵⁶ of entry hashes, as four little-endian 64-bit limbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct SetDigest([u64; 4]);

impl SetDigest {
    pub(super) fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut limbs = [0u64; 4];
        for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(word);
        }
        Self(limbs)
    }

    pub(super) fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// Adds one entry's term.
    pub(super) fn add(&mut self, term: &[u8; 32]) {
        let term = Self::from_bytes(term);
        let mut carry = false;
        for (limb, other) in self.0.iter_mut().zip(term.0) {
            let (sum, c1) = limb.overflowing_add(other);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *limb = sum;
            carry = c1 || c2;
        }
    }

    /// Removes one entry's term.
    pub(super) fn sub(&mut self, term: &[u8; 32]) {
        let term = Self::from_bytes(term);
        let mut borrow = false;
        for (limb, other) in self.0.iter_mut().zip(term.0) {
            let (difference, b1) = limb.overflowing_sub(other);
            let (difference, b2) = difference.overflowing_sub(u64::from(borrow));
            *limb = difference;
            borrow = b1 || b2;
        }
    }

    /// The digest of the empty set. Any non-empty set sums to zero only with probability 2⁻²⁵⁶.
    pub(super) fn is_empty_set(self) -> bool {
        self == Self::default()
    }
}

/// One entry's term in the digest: a keyed hash of the stored key and of what identifies the
/// sealed value — its length, version byte, nonce and authentication tag. The tag already
/// authenticates the whole ciphertext under the value key, so hashing the rest again would add
/// nothing: a value altered in place fails its own authentication when read, while a deleted
/// entry, or one put back to an older sealed value (another nonce), changes the digest. This
/// keeps the cost per write at two short hashes whatever the value's size.
pub(super) fn entry_term(mac_key: &[u8; 32], stored_key: &Key, stored_value: &[u8]) -> [u8; 32] {
    const HEAD: usize = 1 + 24;
    const TAG: usize = 16;
    let mut hasher = blake3::Hasher::new_keyed(mac_key);
    hasher
        .update(&(stored_key.as_bytes().len() as u64).to_le_bytes())
        .update(stored_key.as_bytes())
        .update(&(stored_value.len() as u64).to_le_bytes());
    match (
        stored_value.get(..HEAD),
        stored_value
            .len()
            .checked_sub(TAG)
            .and_then(|at| stored_value.get(at..)),
    ) {
        (Some(head), Some(tag)) if stored_value.len() >= HEAD + TAG => {
            hasher.update(head).update(tag);
        }
        // Too short to be a sealed value (it fails when read): all of it.
        _ => {
            hasher.update(stored_value);
        }
    }
    *hasher.finalize().as_bytes()
}

/// The store-wide state the commitment record seals: how many batches were committed, and the
/// digest of the entries they left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct CommitState {
    pub(super) counter: u64,
    pub(super) digest: SetDigest,
}

/// Length of the record's plaintext.
pub(super) const STATE_LEN: usize = 8 + 32;

impl CommitState {
    pub(super) fn encode(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        let (counter, digest) = out.split_at_mut(8);
        counter.copy_from_slice(&self.counter.to_be_bytes());
        digest.copy_from_slice(&self.digest.to_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = super::ByteReader(bytes);
        let counter = u64::from_be_bytes(reader.array::<8>()?);
        let digest = SetDigest::from_bytes(&reader.array::<32>()?);
        reader.0.is_empty().then_some(Self { counter, digest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn adding_then_removing_in_any_order_returns_to_the_start(
            start in any::<[u8; 32]>(),
            terms in proptest::collection::vec(any::<[u8; 32]>(), 0..8),
        ) {
            let start = SetDigest::from_bytes(&start);
            let mut digest = start;
            for term in &terms {
                digest.add(term);
            }
            for term in terms.iter().rev().skip(1).chain(terms.last()) {
                digest.sub(term);
            }
            prop_assert_eq!(digest, start);
            prop_assert_eq!(SetDigest::from_bytes(&digest.to_bytes()), digest);
        }
    }

    #[test]
    fn carries_and_borrows_cross_limbs() {
        let mut digest = SetDigest::from_bytes(&[0xff; 32]);
        let mut one = [0u8; 32];
        one[0] = 1;
        digest.add(&one);
        assert!(digest.is_empty_set(), "2^256 - 1 + 1 wraps to zero");
        digest.sub(&one);
        assert_eq!(digest.to_bytes(), [0xff; 32]);
    }

    #[test]
    fn state_round_trips_and_rejects_other_lengths() {
        let state = CommitState {
            counter: 7,
            digest: SetDigest::from_bytes(&[3; 32]),
        };
        assert_eq!(CommitState::decode(&state.encode()), Some(state));
        assert_eq!(CommitState::decode(&state.encode()[..39]), None);
        assert_eq!(CommitState::decode(&[0; 41]), None);
    }
}
