//! Reading byte fields of the engine's own records fast, whichever form they were written in.
//!
//! Why: [`byte_strings`](super::byte_strings) writes a `Vec<u8>` as one CBOR byte string, but
//! serde's derived `Deserialize` for `Vec<u8>` and `[u8; N]` still asks for a sequence, and
//! `ciborium` then hands the bytes over one integer at a time. Reading the branch lineage for
//! every Welcome and GroupInfo (256 epochs of commit refs and priorities) spent most of its time
//! there. These functions ask for bytes instead and accept an array of integers too, which is
//! how `[u8; N]` fields are written and how every field was written before `byte_strings`, so
//! no stored record changes meaning.
//!
//! Use: `#[serde(deserialize_with = "crate::storage::byte_fields::vec")]` (or `::array`);
//! serialisation stays derived.

use std::fmt;

use serde::Deserializer;
use serde::de::{Error, SeqAccess, Visitor};

/// A `Vec<u8>` from a byte string or an array of integers.
pub(crate) fn vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesOrSeq)
}

/// A `[u8; N]` from a byte string or an array of integers, of exactly `N` bytes.
pub(crate) fn array<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    let bytes = deserializer.deserialize_byte_buf(BytesOrSeq)?;
    let len = bytes.len();
    <[u8; N]>::try_from(bytes)
        .map_err(|_| D::Error::invalid_length(len, &"as many bytes as the field holds"))
}

struct BytesOrSeq;

impl<'de> Visitor<'de> for BytesOrSeq {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string or an array of bytes")
    }

    fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Bounded by what the input holds: a length prefix alone allocates nothing.
        let mut bytes = Vec::new();
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde::{Deserialize, Serialize};

    use crate::storage::codec;

    #[derive(Serialize)]
    struct Written {
        bytes: Vec<u8>,
        fixed: [u8; 4],
    }

    #[derive(Serialize)]
    struct WrittenAsArrays {
        bytes: Vec<u16>,
        fixed: Vec<u16>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Read {
        #[serde(deserialize_with = "super::vec")]
        bytes: Vec<u8>,
        #[serde(deserialize_with = "super::array")]
        fixed: [u8; 4],
    }

    #[test]
    fn byte_strings_and_arrays_read_the_same() {
        let expected = Read {
            bytes: vec![0, 1, 255, 7],
            fixed: [9, 8, 7, 6],
        };
        // As the engine writes them now: the Vec as a byte string, the array as integers.
        let current = codec::encode(&Written {
            bytes: vec![0, 1, 255, 7],
            fixed: [9, 8, 7, 6],
        })
        .unwrap();
        assert_eq!(codec::decode::<Read>("t", &current).unwrap(), expected);
        // As plain serde writes them: both as arrays of integers.
        let mut arrays = Vec::new();
        ciborium::into_writer(
            &WrittenAsArrays {
                bytes: vec![0, 1, 255, 7],
                fixed: vec![9, 8, 7, 6],
            },
            &mut arrays,
        )
        .unwrap();
        assert_eq!(codec::decode::<Read>("t", &arrays).unwrap(), expected);
    }

    #[test]
    fn a_wrong_length_or_a_value_past_a_byte_is_refused() {
        let mut short = Vec::new();
        ciborium::into_writer(
            &WrittenAsArrays {
                bytes: vec![1],
                fixed: vec![1, 2, 3],
            },
            &mut short,
        )
        .unwrap();
        assert!(codec::decode::<Read>("t", &short).is_err());
        let mut too_big = Vec::new();
        ciborium::into_writer(
            &WrittenAsArrays {
                bytes: vec![256],
                fixed: vec![1, 2, 3, 4],
            },
            &mut too_big,
        )
        .unwrap();
        assert!(codec::decode::<Read>("t", &too_big).is_err());
    }
}
