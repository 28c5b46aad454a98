//! The crate's one error type.

use spacepanda_core::{StoreError, Timestamp};

use crate::group_id::GroupId;
use crate::key_package_manager::UnknownKeyPackageHint;

/// Boxed source error of an OpenMLS operation (its own typed errors are generic over our
/// storage error, so they are kept as the source rather than as variants).
pub type OpenMlsSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Who is to blame for an [`MlsError`], and so what the caller does about it. One
/// classification, used by the engine itself (only [`ErrorKind::PeerInput`] drops a buffered
/// message or a queued re-issue), by the fuzz targets and by the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bytes from the network (an envelope, a key package, a Welcome, a commit) are malformed,
    /// forged, stale, from another branch or otherwise unusable. Nothing changed; drop the input,
    /// do not retry it.
    PeerInput,
    /// The caller asked for something the engine cannot do (unknown group, not a member, a body
    /// too large, …). Nothing changed; fix the call.
    ApiMisuse,
    /// The local store failed or holds data this build cannot read. Nothing changed; retry once
    /// the disk is healthy, or restore the device.
    LocalStorage,
    /// A bug in core_mls (or OpenMLS refusing what our checks should have prevented). Nothing
    /// changed; report it.
    Internal,
}

/// Everything that can go wrong in the MLS engine.
///
/// [`MlsError::kind`] sorts every variant into one [`ErrorKind`]:
/// - **peer input**: envelope, message, key package, Welcome, identity and fork variants such as
///   [`MlsError::MalformedEnvelope`], [`MlsError::RejectedMessage`],
///   [`MlsError::UnverifiedMember`], [`MlsError::InvalidKeyPackage`],
///   [`MlsError::NoMatchingKeyPackage`], [`MlsError::ForkOutsideWindow`],
///   [`MlsError::OtherBranch`];
/// - **API misuse**: [`MlsError::UnknownGroup`], [`MlsError::NotAMember`],
///   [`MlsError::AlreadyMember`], [`MlsError::MessageTooLarge`], [`MlsError::UnknownKeyPackage`],
///   [`MlsError::InvalidArgument`];
/// - **local storage**: [`MlsError::Storage`], [`MlsError::CorruptedState`],
///   [`MlsError::UnsupportedStateVersion`];
/// - **internal**: [`MlsError::Internal`], [`MlsError::NoTransaction`],
///   [`MlsError::TransactionAlreadyOpen`], and [`MlsError::OpenMls`] unless the failure inside
///   OpenMLS was our storage (then it is local storage).
///
/// No variant carries key material, plaintext or stored values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// The storage backend failed. The current operation was rolled back.
    #[error("storage failed: {0}; the operation was rolled back, retry it or check the disk")]
    Storage(#[from] StoreError),

    /// A stored value could not be decoded: the store was tampered with, truncated, or written
    /// by a buggy build. The value is not returned.
    #[error(
        "stored MLS state in namespace `{namespace}` is corrupted ({reason}); restore the device from a backup or remove the affected group"
    )]
    CorruptedState {
        /// The namespace the value was read from.
        namespace: &'static str,
        /// What check failed.
        reason: &'static str,
    },

    /// The store was written by a newer (or unknown) format version of this crate.
    #[error(
        "{what} has format version {found}, this build understands up to {supported}; upgrade SpacePanda to open this store"
    )]
    UnsupportedStateVersion {
        /// Which record (`MLS storage format`, …).
        what: &'static str,
        /// The version found on disk.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },

    /// OpenMLS state was written outside a transaction: a bug in core_mls, whose every
    /// operation runs inside `MlsClient::transaction`.
    #[error(
        "MLS state written with no open storage transaction ({operation}); this is a bug in core_mls, please report it"
    )]
    NoTransaction {
        /// The storage call that tried to write.
        operation: &'static str,
    },

    /// A transaction was begun while another one is open (transactions do not nest).
    #[error(
        "a storage transaction is already open; finish it before starting another (transactions do not nest)"
    )]
    TransactionAlreadyOpen,

    /// OpenMLS refused the operation; the operation was rolled back and the group reloaded.
    #[error("OpenMLS could not {context}: {source}; nothing was changed")]
    OpenMls {
        /// What was being done (`create a group`, `process a message`, …).
        context: &'static str,
        /// OpenMLS's own error.
        #[source]
        source: OpenMlsSource,
    },

    // ---- peer misbehaviour: bad input from the network (reject it; the group is unchanged) ----
    /// An envelope is larger than `max_envelope_len`.
    #[error("envelope of {size} bytes exceeds the {max}-byte limit; drop it")]
    EnvelopeTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid envelope.
    #[error("malformed envelope ({reason}); drop it")]
    MalformedEnvelope {
        /// What is wrong.
        reason: &'static str,
    },
    /// The envelope has a version this build does not read.
    #[error(
        "envelope version {found} is not supported (this build reads {supported}); drop it, or upgrade if the peer is newer"
    )]
    UnsupportedEnvelopeVersion {
        /// Found.
        found: u16,
        /// Supported.
        supported: u16,
    },
    /// The MLS message inside an envelope does not decode or is of an unexpected type.
    #[error("malformed MLS message ({reason}); drop it")]
    MalformedMessage {
        /// What is wrong.
        reason: String,
    },
    /// The plaintext of an application message is not a SpacePanda application message.
    #[error("malformed application message ({reason}); drop it")]
    MalformedApplicationMessage {
        /// What is wrong.
        reason: &'static str,
    },
    /// OpenMLS rejected a message for the group (bad signature, undecryptable, replay, invalid
    /// commit, …).
    #[error("message for group {group} rejected: {reason}; the group is unchanged")]
    RejectedMessage {
        /// The group.
        group: GroupId,
        /// OpenMLS's reason.
        reason: String,
    },
    /// A message for a group this device is no longer an active member of (OpenMLS has marked
    /// it inactive, e.g. after a commit removed it).
    #[error("message for group {group} arrived after this device stopped being a member; dropped")]
    NoLongerMember {
        /// The group.
        group: GroupId,
    },
    /// A handshake this device cannot act on any more: a proposal for an epoch the group has
    /// left (its proposer proposes again if it still wants the change), or a commit for an
    /// epoch before this device joined (if it wins, the commit that added us lost and we are
    /// re-added). Other commits for past epochs go through the concurrent-commit rule.
    #[error(
        "handshake for epoch {message_epoch} of group {group}, which is at epoch {current_epoch}; it is superseded or from before this device joined"
    )]
    StaleEpoch {
        /// The group.
        group: GroupId,
        /// The message's epoch.
        message_epoch: u64,
        /// The group's epoch.
        current_epoch: u64,
    },
    /// A commit for an epoch older than the fork window: this device no longer keeps a snapshot
    /// of that epoch, so it cannot tell whether the commit should have won. The group may have
    /// forked for good; the engine counts it ([`MlsClient::fork_report`](crate::MlsClient::fork_report))
    /// and the next `tick` reports [`Event::ForkOutsideWindow`](crate::Event::ForkOutsideWindow).
    #[error(
        "commit for epoch {message_epoch} of group {group} is older than the fork window (oldest reconcilable epoch {oldest_epoch:?}, current {current_epoch}); the group may have forked; the side that is outranked rejoins the other by external commit"
    )]
    ForkOutsideWindow {
        /// The group.
        group: GroupId,
        /// The commit's epoch.
        message_epoch: u64,
        /// The oldest epoch this device still holds a snapshot of, if any.
        oldest_epoch: Option<u64>,
        /// The group's epoch.
        current_epoch: u64,
    },
    /// A message made on a branch of the group this device is not on and cannot reach (no
    /// snapshot in the fork window covers it). Its sender will re-send on the winning branch
    /// once it learns of it.
    #[error(
        "message for epoch {message_epoch} of group {group} was made on another branch of the group; dropped, its sender re-sends on the winning branch"
    )]
    OtherBranch {
        /// The group.
        group: GroupId,
        /// The message's epoch.
        message_epoch: u64,
    },
    /// An envelope that would have waited in the epoch buffer (its epoch not reached yet, its
    /// group not joined yet) was refused: its delivering source's share of the buffer is full,
    /// and nothing of lower priority can make room. What is already buffered stays (see
    /// [`MlsConfig`](crate::MlsConfig)'s buffer limits). Peer input: whoever sent this much
    /// that cannot be processed yet is flooding, or the group is stuck behind a missing commit
    /// ([`Event::MissingCommit`](crate::Event::MissingCommit)); the envelope may be delivered
    /// again later.
    #[error(
        "buffer full: an envelope for epoch {epoch} of group {group} cannot wait for its epoch; refused"
    )]
    BufferFull {
        /// The group it is for.
        group: GroupId,
        /// Its epoch.
        epoch: u64,
    },
    /// A commit references a proposal this device has not received yet; it is kept in the
    /// epoch buffer until the proposal arrives.
    #[error("a commit for group {group} references a proposal not received yet; it waits for it")]
    CommitAwaitsProposal {
        /// The group.
        group: GroupId,
    },
    /// More proposals than `max_proposals_per_epoch` arrived for one epoch.
    #[error(
        "more than {max} proposals in one epoch of group {group}; further proposals are dropped until the next commit"
    )]
    TooManyProposals {
        /// The group.
        group: GroupId,
        /// The limit.
        max: usize,
    },
    /// A leaf (in a key package, a Welcome or a commit) does not carry a valid SpacePanda
    /// identity binding.
    #[error(
        "member identity not verified: {reason}; the key package, Welcome or commit is rejected"
    )]
    UnverifiedMember {
        /// What core_identity found.
        #[source]
        reason: core_identity::IdentityError,
    },
    /// Someone else's key package failed validation.
    #[error("key package rejected: {reason}")]
    InvalidKeyPackage {
        /// Why.
        reason: String,
    },
    /// Someone else's key package is past its lifetime by our clock.
    #[error("key package expired at {not_after} (now {now}); fetch a fresh one")]
    KeyPackageExpired {
        /// End of its lifetime.
        not_after: Timestamp,
        /// Our clock.
        now: Timestamp,
    },
    /// Someone else's key package is not valid yet by our clock.
    #[error("key package not valid before {not_before} (now {now}); check the clocks")]
    KeyPackageNotYetValid {
        /// Start of its lifetime.
        not_before: Timestamp,
        /// Our clock.
        now: Timestamp,
    },
    /// A Welcome names no key package this device can use.
    #[error("no usable key package {key_package_ref} for this Welcome: {hint}")]
    NoMatchingKeyPackage {
        /// The ref (hex) the Welcome was encrypted to.
        key_package_ref: String,
        /// Why it is not usable.
        hint: UnknownKeyPackageHint,
    },
    /// A Welcome failed OpenMLS validation; the key package it named is still usable.
    #[error("Welcome rejected: {reason}; the key package it used is kept")]
    InvalidWelcome {
        /// Why.
        reason: String,
    },

    /// A GroupInfo to rejoin a group with is malformed, forged (its signature or tree does not
    /// verify), names a member whose identity does not verify, or is older than the state this
    /// device holds. Nothing changed; ask a member for a current one.
    #[error("GroupInfo refused: {reason}; ask another member of the group for a current one")]
    InvalidGroupInfo {
        /// Why.
        reason: String,
    },

    // ---- API misuse ----
    /// Rejoining by external commit is not allowed here: the user asking (or this device's
    /// user) has no device in the group — a user removed from a group cannot come back this
    /// way; a member must invite them.
    #[error("cannot rejoin group {group}: {reason}; a member has to invite this user")]
    RejoinRefused {
        /// The group.
        group: GroupId,
        /// Why.
        reason: &'static str,
    },
    /// The group is not one this device is in.
    #[error("unknown group {group}; it was never joined, or was left")]
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// This device is not (or no longer) a member, or no member matches.
    #[error("not a member of group {group}: {what}")]
    NotAMember {
        /// The group.
        group: GroupId,
        /// What is missing.
        what: &'static str,
    },
    /// The device is already in the group.
    #[error("user {user_id} device {device_id} is already a member")]
    AlreadyMember {
        /// The user.
        user_id: core_identity::UserId,
        /// The device.
        device_id: core_identity::DeviceId,
    },
    /// A Welcome for a group this device is already in.
    #[error("already a member of group {group}; the Welcome is ignored")]
    AlreadyJoined {
        /// The group.
        group: GroupId,
    },
    /// An application message body is larger than `max_application_len`.
    #[error("message of {size} bytes exceeds the {max}-byte limit; split it")]
    MessageTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A key package ref this device never made.
    #[error("unknown key package {key_package_ref}")]
    UnknownKeyPackage {
        /// The ref (hex).
        key_package_ref: String,
    },
    /// A parameter passed by the caller is not acceptable.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: &'static str,
    },

    /// A bug in this crate: an invariant it relies on does not hold.
    #[error("internal error: {what}; this is a bug in core_mls, please report it")]
    Internal {
        /// Which invariant failed.
        what: &'static str,
    },
}

impl MlsError {
    /// Who is to blame, and so what to do (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::EnvelopeTooLarge { .. }
            | Self::MalformedEnvelope { .. }
            | Self::UnsupportedEnvelopeVersion { .. }
            | Self::MalformedMessage { .. }
            | Self::MalformedApplicationMessage { .. }
            | Self::RejectedMessage { .. }
            | Self::NoLongerMember { .. }
            | Self::StaleEpoch { .. }
            | Self::ForkOutsideWindow { .. }
            | Self::OtherBranch { .. }
            | Self::CommitAwaitsProposal { .. }
            | Self::BufferFull { .. }
            | Self::TooManyProposals { .. }
            | Self::UnverifiedMember { .. }
            | Self::InvalidKeyPackage { .. }
            | Self::KeyPackageExpired { .. }
            | Self::KeyPackageNotYetValid { .. }
            | Self::NoMatchingKeyPackage { .. }
            | Self::InvalidWelcome { .. }
            | Self::InvalidGroupInfo { .. }
            | Self::AlreadyJoined { .. } => ErrorKind::PeerInput,
            Self::UnknownGroup { .. }
            | Self::NotAMember { .. }
            | Self::AlreadyMember { .. }
            | Self::MessageTooLarge { .. }
            | Self::UnknownKeyPackage { .. }
            | Self::RejoinRefused { .. }
            | Self::InvalidArgument { .. } => ErrorKind::ApiMisuse,
            Self::Storage(_)
            | Self::CorruptedState { .. }
            | Self::UnsupportedStateVersion { .. } => ErrorKind::LocalStorage,
            Self::OpenMls { source, .. } => {
                // OpenMLS's errors wrap our storage error when the store failed under it.
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
                while let Some(error) = cause {
                    if let Some(ours) = error.downcast_ref::<MlsError>() {
                        return ours.kind();
                    }
                    cause = error.source();
                }
                ErrorKind::Internal
            }
            Self::NoTransaction { .. } | Self::TransactionAlreadyOpen | Self::Internal { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// True for [`ErrorKind::PeerInput`]: the input is at fault, and dropping it loses nothing
    /// a retry would have gained.
    pub fn is_peer_input(&self) -> bool {
        self.kind() == ErrorKind::PeerInput
    }

    /// True for [`ErrorKind::LocalStorage`] and [`ErrorKind::Internal`]: this device failed, not
    /// the input. A buffered message or a queued re-issue that meets one is kept (the
    /// operation fails, and a retry may succeed); any other error condemns the entry.
    pub(crate) fn is_local(&self) -> bool {
        matches!(self.kind(), ErrorKind::LocalStorage | ErrorKind::Internal)
    }

    /// Wraps an OpenMLS error with what was being done.
    pub fn openmls(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::OpenMls {
            context,
            source: Box::new(source),
        }
    }

    /// A corrupted value in `namespace`.
    pub(crate) fn corrupted(namespace: &'static str, reason: &'static str) -> Self {
        Self::CorruptedState { namespace, reason }
    }
}
