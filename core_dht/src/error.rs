//! [`DhtError`]: every way a network operation can fail, and [`Rejection`]: why a record was
//! refused.

use std::fmt;

use core_identity::{IdentityError, UserId};
use core_mls::MlsError;
use spacepanda_core::StoreError;

/// Who is to blame for a [`DhtError`], so callers can react without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No peer could be asked, or none answered in time. Try again later or check the
    /// bootstrap addresses; nothing is wrong with the data.
    Network,
    /// Peers answered, and none holds a valid record of what was asked.
    NotFound,
    /// Fewer peers than required confirmed a publication.
    Quorum,
    /// A record (ours or a peer's) breaks the rules: forged, stale, expired or too large.
    InvalidRecord,
    /// A name did not resolve to exactly one user. Ask the person to pick a candidate.
    Resolution,
    /// The device's store failed, or the engine refused.
    Local,
    /// The caller used the API wrongly (bad address, node stopped). Fix the call.
    Misuse,
}

/// Why a record or an entry of a merged record was refused (a reason carried by
/// [`DhtError::InvalidRecord`], and counted by lookups).
///
/// Each is checked on every record a node is asked to store *and* on every record a lookup
/// returns, because Kademlia checks none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The value does not decode as a record of a version this build reads.
    Malformed {
        /// What failed to decode.
        reason: String,
    },
    /// The value is larger than the record bound.
    Oversized {
        /// The value's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The Kademlia key is not the one derived from the record's signer.
    KeyMismatch,
    /// The signature does not verify under the key the record names.
    BadSignature,
    /// A certificate inside the record is not valid (wrong user, forged, or another identity's
    /// key package).
    BadIdentity {
        /// What did not verify.
        reason: String,
    },
    /// A key package inside the record failed core_mls's validation.
    BadKeyPackage {
        /// Its position in the record.
        index: usize,
        /// core_mls's reason.
        reason: String,
    },
    /// The record's lifetime is over.
    Expired {
        /// Its end.
        expires_at_ms: u64,
        /// The checking node's time.
        now_ms: u64,
    },
    /// The record claims to be issued in the future, or to live longer than allowed.
    BadLifetime {
        /// What is wrong with them.
        reason: String,
    },
    /// A record with this `seq` or a higher one is already held (no rollback).
    StaleSeq {
        /// The incoming record's seq.
        offered: u64,
        /// The held one's.
        held: u64,
    },
    /// The record has more items than allowed (devices, key packages, entries).
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The publisher already holds its quota of records on this node.
    QuotaExceeded {
        /// The user that signed the record.
        publisher: UserId,
        /// What it holds.
        held: usize,
        /// The node's quota.
        quota: usize,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { reason } => {
                write!(f, "the value is not a SpacePanda record: {reason}")
            }
            Self::Oversized { len, max } => {
                write!(f, "{len} bytes, more than the {max} a record may have")
            }
            Self::KeyMismatch => write!(
                f,
                "the key is not the one derived from the record's signer and subject"
            ),
            Self::BadSignature => write!(f, "the signature does not verify"),
            Self::BadIdentity { reason } => {
                write!(f, "an identity in the record does not verify: {reason}")
            }
            Self::BadKeyPackage { index, reason } => {
                write!(f, "key package {index} is invalid: {reason}")
            }
            Self::Expired {
                expires_at_ms,
                now_ms,
            } => write!(
                f,
                "the record expired at {expires_at_ms} (now {now_ms}, unix ms)"
            ),
            Self::BadLifetime { reason } => {
                write!(f, "the record's times are not acceptable: {reason}")
            }
            Self::StaleSeq { offered, held } => write!(
                f,
                "seq {offered} is not higher than the {held} already held"
            ),
            Self::TooMany { what, count, max } => {
                write!(f, "{what}: {count}, more than the {max} allowed")
            }
            Self::QuotaExceeded {
                publisher,
                held,
                quota,
            } => write!(
                f,
                "the publisher {publisher} already holds {held} records here (quota {quota})"
            ),
        }
    }
}

/// Every error of core_dht. Messages say what happened and what to do; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// Peers were reached and none of them holds a valid record of `what`: it was never
    /// published, it expired, or every copy offered was forged.
    #[error(
        "no valid {what} found: {reached} peers answered, {rejected} offered records that were refused; ask its owner to come online and publish"
    )]
    NotFound {
        /// What was looked up.
        what: String,
        /// Peers that answered.
        reached: usize,
        /// Records refused as invalid (forged, stale, expired).
        rejected: usize,
    },
    /// No peer could be asked, or none answered in time: the network, not the record, is the
    /// problem.
    #[error("the network is unreachable: {reason}; check the connection and bootstrap addresses")]
    Unreachable {
        /// Why.
        reason: String,
    },
    /// A publication reached fewer peers than the quorum.
    #[error(
        "{what} reached {confirmed} of the {needed} peers required ({acked} acknowledged, {asked} asked); it will be retried at the next republish"
    )]
    QuorumNotReached {
        /// What was published.
        what: String,
        /// Peers that returned the exact record on a lookup afterwards.
        confirmed: usize,
        /// Peers that acknowledged the put (an acknowledgement is not proof of storage).
        acked: usize,
        /// Peers the record was sent to.
        asked: usize,
        /// The quorum.
        needed: usize,
    },
    /// A record we were about to publish, or were given, breaks a rule.
    #[error("invalid record: {0}")]
    InvalidRecord(Rejection),
    /// An address or name did not resolve to exactly one user (see the candidates).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The engine refused (key packages could not be read or marked).
    #[error("the MLS engine failed: {0}")]
    Engine(#[from] MlsError),
    /// The device's store failed.
    #[error("the device store failed: {0}")]
    Store(#[from] StoreError),
    /// A record of our own, kept in the device's store, does not decode.
    #[error("our own stored {what} is unreadable: {reason}")]
    CorruptedOwnRecord {
        /// Which record.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The network task stopped (shut down, or the node was dropped).
    #[error("the network node is stopped; open a new one")]
    Stopped,
    /// Mailbox holders refused a deposit (the first reason is given); the envelope stays in
    /// the sender's outbox and is tried again.
    #[error(
        "mailbox holders refused the envelope ({refusal}); {stored} of the {needed} needed stored it; it stays queued and is retried"
    )]
    DepositRefused {
        /// A holder's reason.
        refusal: crate::mailbox::MailboxRefusal,
        /// Holders that stored it.
        stored: usize,
        /// Holders needed.
        needed: usize,
    },
    /// Too few mailbox holders could be reached to deposit an envelope.
    #[error(
        "only {stored} of the {needed} mailbox holders needed stored the envelope ({asked} asked); it stays queued and is retried"
    )]
    MailboxUnreachable {
        /// Holders that stored it.
        stored: usize,
        /// Holders needed.
        needed: usize,
        /// Holders asked.
        asked: usize,
    },
    /// The node could not be opened or used as asked (a missing identity, a bad argument).
    #[error("{reason}")]
    Node {
        /// What is wrong and what to do.
        reason: String,
    },
    /// libp2p refused a local operation (listening on an address, dialing one).
    #[error("libp2p refused: {reason}")]
    Transport {
        /// What libp2p said.
        reason: String,
    },
}

impl DhtError {
    /// Who is to blame.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Unreachable { .. } | Self::Transport { .. } | Self::MailboxUnreachable { .. } => {
                ErrorKind::Network
            }
            Self::DepositRefused { .. } => ErrorKind::Quorum,
            Self::Node { .. } => ErrorKind::Misuse,
            Self::QuorumNotReached { .. } => ErrorKind::Quorum,
            Self::InvalidRecord(_) => ErrorKind::InvalidRecord,
            Self::Identity(e) => match e.kind() {
                core_identity::ErrorKind::Resolution => ErrorKind::Resolution,
                core_identity::ErrorKind::PeerMisbehaviour => ErrorKind::InvalidRecord,
                core_identity::ErrorKind::Misuse => ErrorKind::Misuse,
                _ => ErrorKind::Local,
            },
            Self::Engine(_) | Self::Store(_) | Self::CorruptedOwnRecord { .. } => ErrorKind::Local,
            Self::Stopped => ErrorKind::Misuse,
        }
    }
}

impl From<Rejection> for DhtError {
    fn from(rejection: Rejection) -> Self {
        Self::InvalidRecord(rejection)
    }
}

/// Result of core_dht operations.
pub type DhtResult<T> = Result<T, DhtError>;
