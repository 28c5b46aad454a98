//! How stored OpenMLS values are encoded: CBOR (RFC 8949) through `ciborium`.
//!
//! OpenMLS 0.9 requires a self-describing serde format. CBOR was chosen over JSON by
//! measurement (see `examples/codec_timing.rs` and `docs/ARCHITECTURE.md`): OpenMLS state is
//! mostly byte strings serialised as sequences of small integers, which CBOR writes as one byte
//! each and JSON as up to four characters.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::MlsError;

/// Longest stored value accepted (64 MiB). A 10 000-member tree is a few MiB; the bound keeps a
/// corrupted length from turning into an unbounded allocation.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;

/// Encodes a value for storage.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, MlsError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|_| MlsError::Internal {
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
}
