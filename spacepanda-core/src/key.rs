//! Segmented keys.
//!
//! A [`Key`] is a sequence of byte segments (for example `["g", group_id, "tree"]`), encoded as
//! `varint(len) ‖ bytes` per segment. Two properties follow and everything above relies on them:
//!
//! - a key made of the first *n* segments of another key is a byte prefix of it, so "everything
//!   of one group" is a prefix scan on every backend;
//! - the encoding can be split back into segments, so [`SealedStore`](crate::SealedStore) can
//!   blind each segment on its own and keep whole-segment prefix scans as index scans.

use std::fmt;

use crate::error::StoreError;

/// Longest encoded key accepted from storage or from a caller (64 KiB).
///
/// Keys name things; they are never payloads. The bound keeps a corrupted or hostile stored key
/// from turning into an unbounded allocation.
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// A key made of byte segments. See the [module docs](self) for the encoding.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key {
    encoded: Vec<u8>,
}

impl Key {
    /// The empty key: a prefix of every key.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A key with one segment.
    pub fn from_segment(segment: impl AsRef<[u8]>) -> Self {
        Self::empty().with(segment)
    }

    /// A key from several segments.
    pub fn from_segments<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        segments
            .into_iter()
            .fold(Self::empty(), |key, segment| key.with(segment))
    }

    /// This key with one more segment appended.
    #[must_use]
    pub fn with(mut self, segment: impl AsRef<[u8]>) -> Self {
        self.push(segment);
        self
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: impl AsRef<[u8]>) {
        let segment = segment.as_ref();
        write_varint(&mut self.encoded, segment.len() as u64);
        self.encoded.extend_from_slice(segment);
    }

    /// Parses an encoded key, checking that it splits into whole segments.
    pub fn from_encoded(encoded: impl Into<Vec<u8>>) -> Result<Self, StoreError> {
        let encoded = encoded.into();
        if encoded.len() > MAX_KEY_LEN {
            return Err(StoreError::InvalidKey {
                reason: "longer than MAX_KEY_LEN",
            });
        }
        let mut rest = encoded.as_slice();
        while !rest.is_empty() {
            let (_, after) = split_segment(rest).ok_or(StoreError::InvalidKey {
                reason: "segment length runs past the end of the key",
            })?;
            rest = after;
        }
        Ok(Self { encoded })
    }

    /// The encoded bytes (what the backends store).
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Consumes the key, returning its encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.encoded
    }

    /// True when the key has no segments.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// The segments of the key, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            rest: &self.encoded,
        }
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments().count()
    }

    /// True when `prefix`'s segments are the first segments of this key.
    pub fn starts_with(&self, prefix: &Key) -> bool {
        // Whole-segment prefixes are byte prefixes, and because every segment carries its own
        // length, a byte prefix that is itself a valid key is always a whole-segment prefix.
        self.encoded.starts_with(&prefix.encoded)
    }
}

impl fmt::Debug for Key {
    // Keys hold group ids and refs, which are identifiers rather than secrets; printing them as
    // hex segments keeps logs readable without pretending they are text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for segment in self.segments() {
            list.entry(&SegmentDebug(segment));
        }
        list.finish()
    }
}

struct SegmentDebug<'a>(&'a [u8]);

impl fmt::Debug for SegmentDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let printable = !self.0.is_empty()
            && self
                .0
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(b));
        if printable {
            write!(f, "{}", String::from_utf8_lossy(self.0))
        } else {
            write!(f, "0x")?;
            for byte in self.0 {
                write!(f, "{byte:02x}")?;
            }
            Ok(())
        }
    }
}

/// Iterator over the segments of a [`Key`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // A `Key` is validated on construction, so a failed split only ends the iteration.
        let (segment, rest) = split_segment(self.rest)?;
        self.rest = rest;
        Some(segment)
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            // Only the shortest encoding is accepted, so every key has exactly one encoding.
            if *byte == 0 && index > 0 {
                return None;
            }
            return Some((value, bytes.get(index + 1..)?));
        }
    }
    None
}

fn split_segment(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = read_varint(bytes)?;
    let len = usize::try_from(len).ok()?;
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segments_round_trip() {
        let key = Key::from_segments([&b"g"[..], &[0u8; 200][..], b"tree"]);
        let segments: Vec<&[u8]> = key.segments().collect();
        assert_eq!(segments, vec![&b"g"[..], &[0u8; 200][..], b"tree"]);
        assert_eq!(Key::from_encoded(key.as_bytes().to_vec()).ok(), Some(key));
    }

    #[test]
    fn truncated_encoding_is_rejected() {
        let key = Key::from_segments(["group", "tree"]);
        let bytes = key.as_bytes();
        let truncated = bytes.get(..bytes.len() - 1).unwrap_or_default().to_vec();
        assert!(matches!(
            Key::from_encoded(truncated),
            Err(StoreError::InvalidKey { .. })
        ));
    }

    #[test]
    fn debug_shows_text_and_hex() {
        let key = Key::from_segments([&b"g"[..], &[0xab, 0x01][..]]);
        assert_eq!(format!("{key:?}"), "[g, 0xab01]");
    }

    proptest! {
        #[test]
        fn prefix_of_segments_is_byte_prefix(
            segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            cut in 0usize..6,
        ) {
            let key = Key::from_segments(&segments);
            let cut = cut.min(segments.len());
            let prefix = Key::from_segments(segments.iter().take(cut));
            prop_assert!(key.starts_with(&prefix));
            prop_assert_eq!(key.segments().map(<[u8]>::to_vec).collect::<Vec<_>>(), segments);
        }

        #[test]
        fn from_encoded_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(key) = Key::from_encoded(bytes.clone()) {
                let reencoded = Key::from_segments(key.segments());
                prop_assert_eq!(reencoded.as_bytes(), &bytes[..]);
            }
        }
    }
}
