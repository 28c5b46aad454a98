//! The wire envelope: a small, versioned wrapper around one TLS-encoded MLS message.
//!
//! ```text
//! struct {
//!     uint16 version;         // 1, or 2 with a context
//!     uint8  kind;            // 1 commit, 2 proposal, 3 application, 4 welcome, 5 group info, 6 key package
//!     opaque payload<0..2^32-1>; // one MLSMessage, TLS-encoded
//!     select (version) {
//!         case 2: opaque context<1..2^16-1>; // commits: the committer's signed claim of its
//!                                            //   commit ref; Welcomes and GroupInfos: the
//!                                            //   sender's signed branch history
//!     };
//! } Envelope;
//! ```
//!
//! The envelope's [`EnvelopeId`] is a hash of its kind and payload, so a receiver can drop a
//! duplicate without trusting anything the sender claims, and two different messages can never
//! share an id (a copy with an altered context is the same message, and a duplicate). The one
//! exception is a Welcome: de-duplication knows a Welcome by its id and its signed history
//! together (`seen_id`), so one sent again with a newer history is judged again.
//!
//! The context is outside the MLS message, so each one is signed by its sender's device key;
//! the formats (`"SPcc"` claim, `"SPbh"` history) and their checks are in `signed_context`.
//! Only a member the commit removes reads the claim (OpenMLS does not compute the new epoch's
//! transcript hash for it); every other receiver computes the ref and ignores the claim. A
//! group message's branch tag (`"SPbt"`) is not in the envelope: it is the MLS message's
//! authenticated data, covered by the envelope id and verified by decryption (`branch_order`).
//!
//! The design these serve: docs/FORKS.md.

use std::fmt;

use tls_codec::{
    Deserialize as _, Serialize as _, TlsByteVecU32, TlsDeserialize, TlsSerialize, TlsSize,
};

use crate::error::MlsError;

/// The envelope version this build writes when no commit ref is claimed.
pub const ENVELOPE_VERSION: u16 = 1;
/// The envelope version with a context (also read).
pub const ENVELOPE_VERSION_WITH_CONTEXT: u16 = 2;
/// Longest context accepted.
pub const MAX_CONTEXT_LEN: usize = u16::MAX as usize;

/// What an envelope carries. Receivers check it against the MLS message inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EnvelopeKind {
    /// A commit (handshake).
    Commit,
    /// A standalone proposal (handshake), e.g. a member leaving.
    Proposal,
    /// An application message.
    Application,
    /// A Welcome for new members.
    Welcome,
    /// A GroupInfo.
    GroupInfo,
    /// A key package.
    KeyPackage,
}

impl EnvelopeKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Commit => 1,
            Self::Proposal => 2,
            Self::Application => 3,
            Self::Welcome => 4,
            Self::GroupInfo => 5,
            Self::KeyPackage => 6,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Commit,
            2 => Self::Proposal,
            3 => Self::Application,
            4 => Self::Welcome,
            5 => Self::GroupInfo,
            6 => Self::KeyPackage,
            _ => return None,
        })
    }
}

/// Content-derived identifier of an envelope (BLAKE3 of kind and payload).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeId([u8; 32]);

impl EnvelopeId {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes (as stored).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvelopeId({})", self)
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes identify a message in logs; the full id is in `as_bytes`.
        for byte in self.0.iter().take(8) {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct EnvelopeWire {
    version: u16,
    kind: u8,
    payload: TlsByteVecU32,
}

/// One MLS message on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    kind: EnvelopeKind,
    payload: Vec<u8>,
    context: Vec<u8>,
    id: EnvelopeId,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Envelope {
    /// Wraps a TLS-encoded MLS message.
    pub fn new(kind: EnvelopeKind, payload: Vec<u8>) -> Self {
        let id = compute_id(kind, &payload);
        Self {
            kind,
            payload,
            context: Vec::new(),
            id,
        }
    }

    /// Wraps an MLS message with a context (see the module docs). A context longer than
    /// [`MAX_CONTEXT_LEN`] is cut, and then rejected by receivers.
    pub fn with_context(kind: EnvelopeKind, payload: Vec<u8>, context: &[u8]) -> Self {
        let mut envelope = Self::new(kind, payload);
        envelope.context = context.iter().take(MAX_CONTEXT_LEN).copied().collect();
        envelope
    }

    /// The context the sender attached (empty if none).
    pub fn context(&self) -> &[u8] {
        &self.context
    }

    /// What it carries.
    pub fn kind(&self) -> EnvelopeKind {
        self.kind
    }

    /// The TLS-encoded MLS message.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// What de-duplication knows this envelope by: its id, except for a Welcome with a context,
    /// whose branch history is part of it. A member that moved back to a branch sends its
    /// Welcomes of that branch again with the history it knows now (docs/FORKS.md):
    /// a device that took the first copy must judge the second, which may tell it that the
    /// branch it left for another one wins after all. A copy whose history a relay altered
    /// fails its signature check and is recorded as nothing.
    pub(crate) fn seen_id(&self) -> EnvelopeId {
        if self.kind != EnvelopeKind::Welcome || self.context.is_empty() {
            return self.id;
        }
        let mut hasher = blake3::Hasher::new_derive_key("spacepanda welcome seen id v1");
        hasher.update(self.id.as_bytes());
        hasher.update(&self.context);
        EnvelopeId(*hasher.finalize().as_bytes())
    }

    /// Its content-derived id.
    pub fn id(&self) -> EnvelopeId {
        self.id
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = EnvelopeWire {
            version: if self.context.is_empty() {
                ENVELOPE_VERSION
            } else {
                ENVELOPE_VERSION_WITH_CONTEXT
            },
            kind: self.kind.to_byte(),
            payload: TlsByteVecU32::new(self.payload.clone()),
        };
        // Serialising into a Vec fails only for payloads over 4 GiB, which nothing in this crate
        // builds; an empty vector would then be rejected by every receiver as malformed.
        let mut bytes = wire.tls_serialize_detached().unwrap_or_default();
        if !self.context.is_empty() {
            // At most 2^16 - 1 bytes (see `with_context`): a two-byte length.
            let len = u16::try_from(self.context.len()).unwrap_or(u16::MAX);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&self.context);
        }
        bytes
    }

    /// Decodes wire bytes, refusing anything over `max_len` before parsing it.
    pub fn from_bytes(bytes: &[u8], max_len: usize) -> Result<Self, MlsError> {
        if bytes.len() > max_len {
            return Err(MlsError::EnvelopeTooLarge {
                size: bytes.len(),
                max: max_len,
            });
        }
        let mut reader = bytes;
        let wire = EnvelopeWire::tls_deserialize(&mut reader).map_err(|_| {
            MlsError::MalformedEnvelope {
                reason: "not a TLS-encoded envelope",
            }
        })?;
        let context = match wire.version {
            ENVELOPE_VERSION => Vec::new(),
            ENVELOPE_VERSION_WITH_CONTEXT => {
                let (len, rest) =
                    reader
                        .split_first_chunk::<2>()
                        .ok_or(MlsError::MalformedEnvelope {
                            reason: "context missing",
                        })?;
                let len = usize::from(u16::from_be_bytes(*len));
                if len == 0 || rest.len() < len {
                    return Err(MlsError::MalformedEnvelope {
                        reason: "context empty or truncated",
                    });
                }
                let (context, rest) = rest.split_at(len);
                reader = rest;
                context.to_vec()
            }
            found => {
                return Err(MlsError::UnsupportedEnvelopeVersion {
                    found,
                    supported: ENVELOPE_VERSION_WITH_CONTEXT,
                });
            }
        };
        if !reader.is_empty() {
            return Err(MlsError::MalformedEnvelope {
                reason: "trailing bytes after the envelope",
            });
        }
        let kind = EnvelopeKind::from_byte(wire.kind).ok_or(MlsError::MalformedEnvelope {
            reason: "unknown envelope kind",
        })?;
        let payload: Vec<u8> = wire.payload.into_vec();
        if payload.is_empty() {
            return Err(MlsError::MalformedEnvelope {
                reason: "empty payload",
            });
        }
        let mut envelope = Self::new(kind, payload);
        envelope.context = context;
        Ok(envelope)
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        // version + kind + u32 length + payload (+ u16 length + context)
        let claim = if self.context.is_empty() {
            0
        } else {
            2 + self.context.len()
        };
        2 + 1 + 4 + self.payload.len() + claim
    }
}

fn compute_id(kind: EnvelopeKind, payload: &[u8]) -> EnvelopeId {
    let mut hasher = blake3::Hasher::new_derive_key("spacepanda envelope id v1");
    hasher.update(&[kind.to_byte()]);
    hasher.update(payload);
    EnvelopeId(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_id_is_content_derived() {
        let envelope = Envelope::new(EnvelopeKind::Application, vec![1, 2, 3]);
        let decoded = Envelope::from_bytes(&envelope.to_bytes(), 1024).unwrap();
        assert_eq!(decoded, envelope);
        assert_eq!(decoded.id(), envelope.id());
        assert_ne!(
            Envelope::new(EnvelopeKind::Commit, vec![1, 2, 3]).id(),
            envelope.id()
        );
    }

    #[test]
    fn oversized_future_and_trailing_are_typed_errors() {
        let bytes = Envelope::new(EnvelopeKind::Commit, vec![7; 100]).to_bytes();
        assert!(matches!(
            Envelope::from_bytes(&bytes, 50),
            Err(MlsError::EnvelopeTooLarge { size, max: 50 }) if size == bytes.len()
        ));
        let mut future = bytes.clone();
        future[..2].copy_from_slice(&3u16.to_be_bytes());
        assert!(matches!(
            Envelope::from_bytes(&future, 1024),
            Err(MlsError::UnsupportedEnvelopeVersion { found: 3, .. })
        ));
        // Version 2 without its commit ref, or with a truncated one.
        let mut claimless = bytes.clone();
        claimless[..2].copy_from_slice(&2u16.to_be_bytes());
        assert!(matches!(
            Envelope::from_bytes(&claimless, 1024),
            Err(MlsError::MalformedEnvelope { .. })
        ));
        claimless.extend_from_slice(&[0, 5, 1, 2]);
        assert!(matches!(
            Envelope::from_bytes(&claimless, 1024),
            Err(MlsError::MalformedEnvelope { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Envelope::from_bytes(&trailing, 1024),
            Err(MlsError::MalformedEnvelope { .. })
        ));
        let mut unknown_kind = bytes;
        unknown_kind[2] = 99;
        assert!(matches!(
            Envelope::from_bytes(&unknown_kind, 1024),
            Err(MlsError::MalformedEnvelope { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::from_bytes(&bytes, 200);
        }

        #[test]
        fn every_envelope_round_trips(
            kind in 1u8..=6,
            payload in proptest::collection::vec(any::<u8>(), 1..512),
            context in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let envelope =
                Envelope::with_context(EnvelopeKind::from_byte(kind).unwrap(), payload.clone(), &context);
            // The claim is not part of the id: an altered copy is a duplicate.
            prop_assert_eq!(envelope.id(), Envelope::new(EnvelopeKind::from_byte(kind).unwrap(), payload).id());
            let bytes = envelope.to_bytes();
            prop_assert_eq!(bytes.len(), envelope.encoded_len());
            prop_assert_eq!(Envelope::from_bytes(&bytes, bytes.len()).unwrap(), envelope);
        }
    }
}
