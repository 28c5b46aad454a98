//! Bounded, versioned TLS-style decoding shared by every encoding of the crate.
//!
//! Every encoding starts with a `u16` version. Decoding checks, in this order: the total length
//! against a bound (before reading anything), that the version is readable and supported, then
//! the `tls_codec` structure with no trailing bytes. Each failure is a [`DecodeError`] that the
//! caller turns into the [`IdentityError`](crate::IdentityError) variant fitting its context
//! (peer input or stored record).

use tls_codec::{DeserializeBytes, SerializeBytes};

use crate::error::IdentityError;

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Truncated,
    Oversized { len: usize, max: usize },
    Malformed(&'static str),
    UnsupportedVersion { found: u16, supported: u16 },
}

impl DecodeError {
    /// As an error about bytes from a peer (or typed by a user) named `what`.
    pub(crate) fn into_peer_error(self, what: &'static str) -> IdentityError {
        match self {
            Self::Truncated => IdentityError::Truncated { what },
            Self::Oversized { len, max } => IdentityError::Oversized { what, len, max },
            Self::Malformed(reason) => IdentityError::Malformed { what, reason },
            Self::UnsupportedVersion { found, supported } => IdentityError::UnsupportedVersion {
                what,
                found,
                supported,
            },
        }
    }

    /// As an error about a stored record named `record`.
    pub(crate) fn into_record_error(self, record: &'static str) -> IdentityError {
        match self {
            Self::Truncated => IdentityError::CorruptedRecord {
                record,
                reason: "truncated",
            },
            Self::Oversized { .. } => IdentityError::CorruptedRecord {
                record,
                reason: "longer than any record this build writes",
            },
            Self::Malformed(reason) => IdentityError::CorruptedRecord { record, reason },
            Self::UnsupportedVersion { found, supported } => {
                IdentityError::UnsupportedRecordVersion {
                    record,
                    found,
                    supported,
                }
            }
        }
    }
}

/// Decodes a versioned encoding of at most `max_len` bytes whose first field is a `u16`
/// version equal to `version`.
pub(crate) fn decode_versioned<T: DeserializeBytes>(
    bytes: &[u8],
    max_len: usize,
    version: u16,
) -> Result<T, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: max_len,
        });
    }
    let found = match bytes {
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
        _ => return Err(DecodeError::Truncated),
    };
    if found != version {
        return Err(DecodeError::UnsupportedVersion {
            found,
            supported: version,
        });
    }
    T::tls_deserialize_exact_bytes(bytes).map_err(|error| match error {
        tls_codec::Error::EndOfStream => DecodeError::Truncated,
        tls_codec::Error::TrailingData => DecodeError::Malformed("trailing bytes after the end"),
        _ => DecodeError::Malformed("invalid field encoding"),
    })
}

/// Encodes `value`; a failure (a length bound exceeded) is [`IdentityError::Encoding`].
pub(crate) fn encode<T: SerializeBytes>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, IdentityError> {
    value
        .tls_serialize_bytes()
        .map_err(|_| IdentityError::Encoding { what })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use tls_codec::{TlsDeserializeBytes, TlsSerializeBytes, TlsSize};

    #[derive(Debug, PartialEq, TlsSerializeBytes, TlsDeserializeBytes, TlsSize)]
    struct Sample {
        version: u16,
        body: [u8; 4],
    }

    #[test]
    fn each_failure_has_its_own_reason() {
        let good = encode(
            &Sample {
                version: 3,
                body: [1, 2, 3, 4],
            },
            "sample",
        )
        .unwrap();
        assert_eq!(
            decode_versioned::<Sample>(&good, 16, 3),
            Ok(Sample {
                version: 3,
                body: [1, 2, 3, 4]
            })
        );
        assert_eq!(
            decode_versioned::<Sample>(&good, 5, 3),
            Err(DecodeError::Oversized { len: 6, max: 5 })
        );
        assert_eq!(
            decode_versioned::<Sample>(&good[..1], 16, 3),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_versioned::<Sample>(&good[..5], 16, 3),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_versioned::<Sample>(&good, 16, 2),
            Err(DecodeError::UnsupportedVersion {
                found: 3,
                supported: 2
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode_versioned::<Sample>(&long, 16, 3),
            Err(DecodeError::Malformed(_))
        ));
    }
}
