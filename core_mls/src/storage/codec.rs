//! How stored OpenMLS values are encoded: CBOR (RFC 8949) through `ciborium`.
//!
//! OpenMLS 0.9 requires a self-describing serde format. CBOR was chosen over JSON by
//! measurement (see `examples/codec_timing.rs` and `docs/ARCHITECTURE.md`): OpenMLS state is
//! mostly byte strings that serde sees as sequences of small integers. Values are written through
//! [`byte_strings`](super::byte_strings), which turns each such sequence into one CBOR byte
//! string instead of an array with a header per byte; `ciborium` reads both forms.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::byte_strings::Wrapped;
use crate::error::MlsError;

/// Longest stored value accepted (64 MiB). A 10 000-member tree is a few MiB; the bound keeps a
/// corrupted length from turning into an unbounded allocation.
pub(crate) const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;

/// Encodes a value for storage.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, MlsError> {
    let mut out = Vec::new();
    ciborium::into_writer(&Wrapped(value, None), &mut out).map_err(|_| MlsError::Internal {
        what: "an OpenMLS value does not serialise to CBOR",
    })?;
    Ok(out)
}

/// Decodes a stored value read from `namespace`; anything that is not a valid encoding of `T`
/// is reported as corrupted state of that namespace.
pub(crate) fn decode<T: DeserializeOwned>(
    namespace: &'static str,
    bytes: &[u8],
) -> Result<T, MlsError> {
    if bytes.len() > MAX_VALUE_LEN {
        return Err(MlsError::corrupted(
            namespace,
            "stored value is longer than MAX_VALUE_LEN",
        ));
    }
    ciborium::from_reader(bytes).map_err(|_| {
        MlsError::corrupted(
            namespace,
            "stored value does not decode as the expected OpenMLS type",
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let value = (vec![1u8, 2, 255], Some("x".to_owned()), 7u64);
        let bytes = encode(&value).unwrap();
        assert_eq!(
            decode::<(Vec<u8>, Option<String>, u64)>("mls", &bytes).unwrap(),
            value
        );
        for cut in 0..bytes.len() {
            let truncated = bytes.get(..cut).unwrap();
            assert!(matches!(
                decode::<(Vec<u8>, Option<String>, u64)>("mls", truncated),
                Err(MlsError::CorruptedState {
                    namespace: "mls",
                    ..
                })
            ));
        }
        assert!(decode::<u64>("mls", b"\xff\xff").is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Kind {
        Unit,
        New(Vec<u8>),
        Pair(Vec<u8>, u8),
        Named { key: Vec<u8> },
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Sample {
        empty: Vec<u8>,
        bytes: Vec<u8>,
        nested: Vec<Vec<u8>>,
        maybe: Option<Vec<u8>>,
        map: std::collections::BTreeMap<Vec<u8>, Vec<u16>>,
        fixed: [u8; 4],
        kinds: Vec<Kind>,
        deque: std::collections::VecDeque<u8>,
        text: String,
    }

    fn sample() -> Sample {
        Sample {
            empty: Vec::new(),
            bytes: (0..=255).collect(),
            nested: vec![vec![1, 2], Vec::new(), vec![200; 40]],
            maybe: Some(vec![9; 33]),
            map: [(vec![1, 2, 3], vec![1, 700]), (Vec::new(), Vec::new())].into(),
            fixed: [1, 2, 3, 4],
            kinds: vec![
                Kind::Unit,
                Kind::New(vec![5; 3]),
                Kind::Pair(vec![6], 7),
                Kind::Named { key: vec![8; 64] },
            ],
            deque: [3u8, 2, 1].into(),
            text: "x".to_owned(),
        }
    }

    fn plain_cbor<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn byte_sequences_are_written_as_byte_strings_and_read_back() {
        let value = sample();
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<Sample>("mls", &bytes).unwrap(), value);
        let plain = plain_cbor(&value);
        // 256 bytes as an array: a header per byte, two bytes each from 24 on.
        assert!(
            bytes.len() + 256 < plain.len(),
            "{} vs {}",
            bytes.len(),
            plain.len()
        );
        // Major type 2 (byte string) with a 2-byte length, 256, then the bytes 0..=255.
        let mut header = vec![0x59, 0x01, 0x00];
        header.extend(0..=255u8);
        assert!(bytes.windows(header.len()).any(|w| w == header.as_slice()));
    }

    #[test]
    fn values_written_as_plain_arrays_still_decode() {
        let value = sample();
        assert_eq!(decode::<Sample>("mls", &plain_cbor(&value)).unwrap(), value);
    }

    /// A sequence that starts with a `u8` and continues with something else.
    struct Mixed;

    impl Serialize for Mixed {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = serializer.serialize_seq(Some(3))?;
            seq.serialize_element(&1u8)?;
            seq.serialize_element(&2u8)?;
            seq.serialize_element(&300u16)?;
            seq.end()
        }
    }

    #[test]
    fn a_sequence_that_is_not_all_bytes_is_written_as_an_array() {
        let bytes = encode(&Mixed).unwrap();
        assert_eq!(bytes, plain_cbor(&Mixed));
        assert_eq!(decode::<Vec<u16>>("mls", &bytes).unwrap(), vec![1, 2, 300]);
    }
}
