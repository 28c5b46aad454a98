//! The crate's one error type.

use std::fmt;

use spacepanda_core::StoreError;

use crate::address::Address;
use crate::device::DeviceId;
use crate::user_id::UserId;

/// Who is to blame for an [`IdentityError`], so callers can react without matching every
/// variant (reject the peer, fix the call, or look at the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bytes from another member (a credential) are forged, malformed or out of bounds. Reject
    /// the member (and the MLS message that carried it); do not retry.
    PeerMisbehaviour,
    /// The caller used the API wrongly (bad display name, store already set up, …). Fix the call.
    Misuse,
    /// A name or address did not name exactly one known user. Ask the person to pick.
    Resolution,
    /// The storage layer failed or holds data this build cannot read.
    Storage,
}

/// A directory entry offered to the user when an address is ambiguous or unknown.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Candidate {
    /// The candidate's address (`name@fingerprint`).
    pub address: Address,
    /// The candidate's full user id (tells apart users whose addresses collide).
    pub user_id: UserId,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.user_id)
    }
}

struct CandidateList<'a>(&'a [Candidate]);

impl fmt::Display for CandidateList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        for (index, candidate) in self.0.iter().enumerate() {
            if index > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{candidate}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in `core_identity`.
///
/// Variants fall into the groups of [`ErrorKind`] (see [`IdentityError::kind`]):
/// - **peer misbehaviour** — [`Truncated`](Self::Truncated), [`Oversized`](Self::Oversized),
///   [`Malformed`](Self::Malformed), [`UnsupportedVersion`](Self::UnsupportedVersion),
///   [`NotSpacePandaCredential`](Self::NotSpacePandaCredential),
///   [`BadCertificateSignature`](Self::BadCertificateSignature),
///   [`SignatureKeyMismatch`](Self::SignatureKeyMismatch),
///   [`UserIdMismatch`](Self::UserIdMismatch);
/// - **API misuse** — [`InvalidDisplayName`](Self::InvalidDisplayName),
///   [`InvalidAddress`](Self::InvalidAddress), [`InvalidUserId`](Self::InvalidUserId),
///   [`InvalidExport`](Self::InvalidExport), [`AlreadyInitialized`](Self::AlreadyInitialized),
///   [`NotInitialized`](Self::NotInitialized), [`Encoding`](Self::Encoding);
/// - **resolution** — [`UnknownAddress`](Self::UnknownAddress),
///   [`AmbiguousAddress`](Self::AmbiguousAddress);
/// - **storage** — [`Store`](Self::Store), [`CorruptedRecord`](Self::CorruptedRecord),
///   [`UnsupportedRecordVersion`](Self::UnsupportedRecordVersion).
///
/// No variant carries secret key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The encoded `what` ended before all of its fields.
    #[error("{what} is truncated: it ended before all of its fields; reject it")]
    Truncated {
        /// What was being decoded (`credential`, …).
        what: &'static str,
    },

    /// The encoded `what` is longer than this build accepts.
    #[error("{what} is {len} bytes, more than the {max} allowed; reject it")]
    Oversized {
        /// What was being decoded.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The most accepted.
        max: usize,
    },

    /// The encoded `what` is not a valid encoding (bad length, trailing bytes, bad UTF-8,
    /// a public key that is not a curve point, an invalid display name, …).
    #[error("{what} is malformed ({reason}); reject it")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Which check failed.
        reason: &'static str,
    },

    /// The encoded `what` carries a format version this build does not know.
    #[error(
        "{what} has version {found}, this build understands version {supported}; reject it, or upgrade if the peer is newer"
    )]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },

    /// The bytes are not a SpacePanda credential at all: their first bytes cannot be the
    /// version of any SpacePanda credential (see
    /// [`SpacePandaCredential`](crate::SpacePandaCredential)), or the MLS credential is not a
    /// basic one. Typically the member's device runs another MLS application.
    #[error(
        "{what} is not a SpacePanda credential ({found}); the device runs another MLS application, reject it"
    )]
    NotSpacePandaCredential {
        /// What was being decoded (`credential`, `MLS credential`).
        what: &'static str,
        /// What was found instead.
        found: &'static str,
    },

    /// The device certificate does not verify under the credential's identity key: it was
    /// signed by another key, or a certified field (device id, display name, creation time,
    /// signature key) was altered after signing. Both look the same to a verifier.
    #[error(
        "device certificate of user {user_id} does not verify under its identity key (forged or altered); reject the member"
    )]
    BadCertificateSignature {
        /// The user the credential claims to belong to.
        user_id: UserId,
    },

    /// The certificate is genuine but certifies another MLS signature key than the leaf's: the
    /// credential was lifted from another device or leaf.
    #[error(
        "credential of user {user_id} device {device_id} certifies another MLS signature key than the leaf uses (credential replayed); reject the member"
    )]
    SignatureKeyMismatch {
        /// The user the credential belongs to.
        user_id: UserId,
        /// The device the credential belongs to.
        device_id: DeviceId,
    },

    /// The credential is valid but belongs to another user than the one expected.
    #[error("credential belongs to user {found}, not the expected {expected}; reject the member")]
    UserIdMismatch {
        /// The user id that was expected.
        expected: UserId,
        /// The user id the credential's identity key derives.
        found: UserId,
    },

    /// A display name given by the caller breaks the naming rules.
    #[error("invalid display name: {reason}; choose another name")]
    InvalidDisplayName {
        /// Which rule was broken.
        reason: &'static str,
    },

    /// An address typed by the user could not be parsed.
    #[error("invalid address: {reason}; addresses look like alice@1a2b3c4d")]
    InvalidAddress {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A user id given as text could not be parsed.
    #[error("invalid user id: {reason}; a user id is 64 lowercase hex characters")]
    InvalidUserId {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Exported identity key bytes could not be imported.
    #[error("cannot import identity key: {reason}; export it again from the first device")]
    InvalidExport {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The store already holds an identity, so another cannot be created or imported into it.
    #[error(
        "this store already holds identity {user_id}; load it, or use a fresh store for another identity"
    )]
    AlreadyInitialized {
        /// The identity already stored.
        user_id: UserId,
    },

    /// The store holds no identity yet.
    #[error("this store holds no identity yet; create or import one first")]
    NotInitialized,

    /// A value could not be encoded (a bound was exceeded). Indicates a bug in the caller or
    /// this crate; nothing was written.
    #[error("could not encode {what}; nothing was written")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
    },

    /// No known user matches the address or name.
    #[error("no known user matches `{query}`; close matches: {}", CandidateList(.candidates))]
    UnknownAddress {
        /// What was looked up.
        query: String,
        /// Users with the same name or fingerprint, if any.
        candidates: Vec<Candidate>,
    },

    /// More than one known user matches the address or name.
    #[error(
        "`{query}` matches {} users: {}; use the full address or user id",
        .candidates.len(),
        CandidateList(.candidates)
    )]
    AmbiguousAddress {
        /// What was looked up.
        query: String,
        /// Every matching user.
        candidates: Vec<Candidate>,
    },

    /// The storage layer failed.
    #[error("identity storage failed: {0}")]
    Store(#[from] StoreError),

    /// A stored identity record could not be decoded.
    #[error(
        "stored {record} record is corrupted ({reason}); restore the store from a backup or set the device up again"
    )]
    CorruptedRecord {
        /// Which record.
        record: &'static str,
        /// Which check failed.
        reason: &'static str,
    },

    /// A stored identity record was written by a newer build.
    #[error(
        "stored {record} record has version {found}, this build reads version {supported}; upgrade SpacePanda"
    )]
    UnsupportedRecordVersion {
        /// Which record.
        record: &'static str,
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
}

impl IdentityError {
    /// Which group this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Truncated { .. }
            | Self::Oversized { .. }
            | Self::Malformed { .. }
            | Self::UnsupportedVersion { .. }
            | Self::NotSpacePandaCredential { .. }
            | Self::BadCertificateSignature { .. }
            | Self::SignatureKeyMismatch { .. }
            | Self::UserIdMismatch { .. } => ErrorKind::PeerMisbehaviour,
            Self::InvalidDisplayName { .. }
            | Self::InvalidAddress { .. }
            | Self::InvalidUserId { .. }
            | Self::InvalidExport { .. }
            | Self::AlreadyInitialized { .. }
            | Self::NotInitialized
            | Self::Encoding { .. } => ErrorKind::Misuse,
            Self::UnknownAddress { .. } | Self::AmbiguousAddress { .. } => ErrorKind::Resolution,
            Self::Store(_)
            | Self::CorruptedRecord { .. }
            | Self::UnsupportedRecordVersion { .. } => ErrorKind::Storage,
        }
    }
}

/// Result with [`IdentityError`].
pub type IdentityResult<T> = Result<T, IdentityError>;
