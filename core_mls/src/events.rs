//! What the engine hands back: bytes to send ([`Outbound`]) and things that happened
//! ([`Event`]). Nothing here performs I/O.

use core_identity::{DeviceId, UserId, VerifiedMember};
use spacepanda_core::Timestamp;

use crate::envelope::{Envelope, EnvelopeId};
use crate::group_id::GroupId;

/// One device of one user: where an outbound envelope must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddress {
    /// The user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
}

impl From<&VerifiedMember> for DeviceAddress {
    fn from(member: &VerifiedMember) -> Self {
        Self {
            user_id: member.user_id(),
            device_id: member.device_id(),
        }
    }
}

/// Who must receive an [`Outbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients {
    /// The group the envelope belongs to (`None` only for key packages).
    pub group: Option<GroupId>,
    /// Every device that must receive it. For group traffic: every member device at the epoch
    /// the message was made in except the sender (and, for a commit that removes members, the
    /// removed devices too, so they learn it). For a Welcome: the devices being added.
    pub devices: Vec<DeviceAddress>,
}

/// Sequence number of a delivered application message in the durable inbox; pass it to
/// [`ack_delivered`](crate::MlsClient::ack_delivered) once the application stored the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

/// Sequence number of an outbox entry; pass it to [`ack_sent`](crate::MlsClient::ack_sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboxId(pub u64);

/// The id the sender gives an application message: 16 random bytes, carried inside the
/// encrypted message, the same on every device that receives it and on every re-send after a
/// rollback, so a receiver delivers it once. (An [`EnvelopeId`] names the bytes on the wire
/// instead: a re-sent message is a new envelope with the same `MessageId`.)
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// An envelope the network layer must deliver. It stays in the durable outbox until
/// acknowledged, so a crash between "state changed" and "bytes sent" loses nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Outbox sequence number.
    pub id: OutboxId,
    /// Destination devices.
    pub to: Recipients,
    /// The bytes, wrapped.
    pub envelope: Envelope,
}

impl Outbound {
    /// The bytes to put on the wire: what [`MlsClient::handle_envelope`](crate::MlsClient::handle_envelope)
    /// takes on every device in [`to`](Self::to).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.envelope.to_bytes()
    }

    /// What the envelope carries (a Welcome goes to new members, the rest to the group).
    pub fn kind(&self) -> crate::envelope::EnvelopeKind {
        self.envelope.kind()
    }
}

/// What happened to an incoming envelope, when it was not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Disposition {
    /// Processed now.
    #[default]
    Processed,
    /// Seen before (or our own message echoed back): ignored.
    Duplicate,
    /// From a future epoch, a group not joined yet, or another branch of the group that may
    /// still win: kept and replayed automatically.
    Buffered,
    /// A commit (or a Welcome) that lost to a competing commit of the same epoch under the fork
    /// rule (docs/FORKS.md): valid, but not the group's history. Ignored.
    Superseded,
}

/// Who delivered an envelope, in the network layer's terms: opaque bytes of at most
/// [`MAX_LEN`](Self::MAX_LEN) (e.g. a libp2p `PeerId`'s bytes), given to
/// [`handle_envelope_from`](crate::MlsClient::handle_envelope_from). Not authenticated and not
/// trusted for anything but this: each source has its own share of the epoch buffer, so a
/// peer that floods it with messages that cannot be authenticated yet only crowds out its own.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliverySource(Vec<u8>);

impl DeliverySource {
    /// Longest source accepted, in bytes (a multihash `PeerId` is 38 bytes).
    pub const MAX_LEN: usize = 64;

    /// A source named by `bytes`: 1 to [`MAX_LEN`](Self::MAX_LEN) bytes, else
    /// [`MlsError::InvalidArgument`](crate::MlsError::InvalidArgument).
    pub fn new(bytes: &[u8]) -> Result<Self, crate::MlsError> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(crate::MlsError::InvalidArgument {
                reason: "a delivery source is 1 to 64 bytes",
            });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for DeliverySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeliverySource({})", hex::encode(&self.0))
    }
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// This device joined a group from a Welcome.
    Joined {
        /// The group.
        group: GroupId,
        /// Who added us.
        inviter: VerifiedMember,
        /// Epoch joined at.
        epoch: u64,
    },
    /// An application message, decrypted and attributed to a verified sender.
    Message {
        /// The group.
        group: GroupId,
        /// Who sent it.
        sender: VerifiedMember,
        /// Sender-chosen id, unique per sender; delivered at most once.
        message_id: MessageId,
        /// When the sender says it was sent (its clock; informational).
        sent_at: Timestamp,
        /// The plaintext.
        body: Vec<u8>,
        /// Its entry in the durable inbox: acknowledge it with
        /// [`ack_delivered`](crate::MlsClient::ack_delivered) once stored; until then
        /// [`pending_delivered`](crate::MlsClient::pending_delivered) returns it again.
        delivery: DeliveryId,
    },
    /// This device sent an application message (the id receivers will see).
    MessageSent {
        /// The group.
        group: GroupId,
        /// The message id.
        message_id: MessageId,
    },
    /// Members were added by a commit.
    MembersAdded {
        /// The group.
        group: GroupId,
        /// Who committed.
        by: VerifiedMember,
        /// The new member devices.
        members: Vec<VerifiedMember>,
    },
    /// Members were removed (or left) by a commit.
    MembersRemoved {
        /// The group.
        group: GroupId,
        /// Who committed.
        by: VerifiedMember,
        /// The removed member devices.
        members: Vec<VerifiedMember>,
    },
    /// The group moved to a new epoch.
    EpochAdvanced {
        /// The group.
        group: GroupId,
        /// The new epoch.
        epoch: u64,
    },
    /// This device was removed from the group; it can no longer read or send.
    RemovedFromGroup {
        /// The group.
        group: GroupId,
        /// Who removed us (when known).
        by: Option<VerifiedMember>,
    },
    /// A member proposed to leave; the proposal is pending until someone commits it.
    LeaveProposed {
        /// The group.
        group: GroupId,
        /// Who wants to leave.
        member: VerifiedMember,
    },
    /// Buffered messages were dropped (too many, too large, or too old).
    BufferedDropped {
        /// The group (`None` for messages of groups never joined).
        group: Option<GroupId>,
        /// How many.
        count: usize,
    },
    /// A competing commit for an earlier epoch won over the one this device had merged (the
    /// fork rule, over every commit of that epoch seen so far): the group was rolled back to
    /// that epoch and moved onto the winning branch.
    /// What this device did on the abandoned branch was re-issued there (see the fields).
    CommitSuperseded {
        /// The group.
        group: GroupId,
        /// The epoch both commits were made in (the fork point).
        epoch: u64,
        /// The epoch this device was at on the abandoned branch.
        abandoned_epoch: u64,
        /// Who made the winning commit.
        winner: VerifiedMember,
        /// Own commits (adds, removes, updates) re-issued on the winning branch.
        reissued_commits: usize,
        /// Own application messages sent on the abandoned branch and sent again (receivers
        /// that already have them drop them by message id).
        resent_messages: usize,
    },
    /// This device joined the group by external commit
    /// ([`MlsClient::join_by_external_commit`](crate::MlsClient::join_by_external_commit)):
    /// as a new device of a member user, or back after it lost its state or fell behind on a
    /// branch that lost. Messages sent to the group before this moment are not recoverable on
    /// this device; tell the user.
    Rejoined {
        /// The group.
        group: GroupId,
        /// The epoch the external commit created.
        epoch: u64,
    },
    /// A commit of `epoch` or earlier arrived after this device joined `group` by external
    /// commit at `epoch`: the join raced it, and may have lost (a member's commit of an epoch
    /// always wins over an external one). Also when a message of another branch arrives that
    /// this device cannot judge (the member whose GroupInfo it joined with may not have judged
    /// a race yet, and its branch may have lost there). Also once from `tick`,
    /// [`rejoin_confirm_after`](crate::MlsConfig::rejoin_confirm_after) after the join, if
    /// nothing contested it before (in a quiet group nothing else may). Ask a member (the one
    /// that sent the commit, or the one this device joined from) for its GroupInfo and follow
    /// [`rejoin_advice`](crate::MlsClient::rejoin_advice): join again if the group went on
    /// without this device. core_dht's `Node` does so by itself.
    RejoinContested {
        /// The group.
        group: GroupId,
        /// The epoch the external commit was made in.
        epoch: u64,
    },
    /// This device's branch of `group` may have lost at `epoch`, and no message can take it to
    /// the winning one:
    /// - a Welcome says so of an epoch from before this device joined (it cannot judge it),
    ///   and its sender is not a member of this device's state: such a claim is the sender's
    ///   word alone, which a member removed from the group could forge. The Welcome waits;
    /// - or a member's commit of another branch says that branch won at `epoch` with a commit
    ///   of this device's own that it no longer holds (a Welcome took it off that branch and
    ///   another put it back on an earlier state of it): that commit never comes back to it;
    /// - or an external commit of another branch arrived: a device rejoined there, so its
    ///   members may have judged this device's branch lost. After a fork outside the window a
    ///   member that said "stay" may have moved since, and its rejoin is all that reaches this
    ///   device of it. Once per external commit that arrives (not again when it is replayed).
    ///
    /// Ask a member of the group (not the Welcome's sender) for its GroupInfo and follow
    /// [`rejoin_advice`](crate::MlsClient::rejoin_advice): join again if the group went on
    /// without this device. core_dht's `Node` does so by itself.
    BranchContested {
        /// The group.
        group: GroupId,
        /// The epoch where the other branch and this device's part; for an external commit,
        /// the epoch it was made in.
        epoch: u64,
    },
    /// A device of a member user joined the group by external commit: a new device of that
    /// user, or one that came back (then `replaced` names the leaf it had before, which the
    /// same commit removed). It did not receive what was sent before.
    DeviceRejoined {
        /// The group.
        group: GroupId,
        /// The device that joined.
        device: VerifiedMember,
        /// Its leaves from before, removed by the same commit.
        replaced: Vec<VerifiedMember>,
    },
    /// A member made two different commits in one epoch of this group (equivocation). Honest
    /// clients never do; the commits were still judged by the rule, so every member ends on
    /// the same one, but the member's device may be compromised or faulty.
    Equivocation {
        /// The group.
        group: GroupId,
        /// The epoch both commits were made in.
        epoch: u64,
        /// Who made them.
        member: VerifiedMember,
    },
    /// Commits older than the fork window arrived for this group (counted since the last
    /// report): the group may have forked for good. If this device is on the losing side, it
    /// rejoins the other side with a GroupInfo from one of its members
    /// ([`MlsClient::join_by_external_commit`](crate::MlsClient::join_by_external_commit);
    /// core_dht's `Node` does so by itself).
    ForkOutsideWindow {
        /// The group.
        group: GroupId,
        /// How many such commits since the last report.
        count: u64,
    },
    /// A commit this device received will never be applied here: it references a proposal this
    /// device refused, or one that did not arrive within
    /// [`commit_proposal_wait`](crate::MlsConfig::commit_proposal_wait). The members that
    /// applied it are in an epoch this device will not reach: the group may have split. This
    /// device comes back by rejoining them
    /// ([`MlsClient::join_by_external_commit`](crate::MlsClient::join_by_external_commit) with
    /// a member's GroupInfo; core_dht's `Node::rejoin`); what was sent meanwhile is lost here.
    /// Reported once per commit; the commit is dropped.
    CommitAbandoned {
        /// The group.
        group: GroupId,
        /// The epoch the commit was made in.
        epoch: u64,
        /// The commit's envelope id.
        commit: EnvelopeId,
        /// Why it will never be applied.
        reason: AbandonReason,
    },
    /// Messages the application sent ([`Event::MessageSent`]) that will never be encrypted: they
    /// waited for a pending membership change in a group this device no longer holds (it was
    /// removed, or left), and no competing commit can restore it any more.
    MessagesNotSent {
        /// The group.
        group: GroupId,
        /// The message ids, as [`Event::MessageSent`] reported them.
        message_ids: Vec<MessageId>,
    },
    /// An own commit of an abandoned branch (counted in [`Event::CommitSuperseded`]) was not
    /// made again on the winning branch: the change it made did not happen there. Make it again
    /// if it is still wanted.
    CommitNotReissued {
        /// The group.
        group: GroupId,
        /// What the commit changed.
        change: OwnChange,
        /// Why it could not be made again.
        reason: String,
    },
    /// The group has waited [`missing_commit_alert`](crate::MlsConfig::missing_commit_alert)
    /// at `epoch` while messages of later epochs wait in the buffer: the commit that ends
    /// `epoch` did not reach this device (lost, or withheld). Reported once per group and epoch.
    ///
    /// The application should ask the group's members (any that is online) to send the
    /// commits again from `epoch` on: a member answers with
    /// [`recent_commits(group, epoch)`](crate::MlsClient::recent_commits), and this device
    /// handles what it gets like any envelope. If nobody can (the commits are older than every
    /// member's `fork_window_epochs`), it rejoins by external commit with a member's GroupInfo
    /// ([`join_by_external_commit`](crate::MlsClient::join_by_external_commit)).
    MissingCommit {
        /// The group.
        group: GroupId,
        /// The epoch this device is stuck at (the missing commit is the one that ends it).
        epoch: u64,
        /// Buffered envelopes of later epochs waiting for it.
        waiting: usize,
        /// Since when the group has been waiting at `epoch` (the later of: reaching it, the
        /// first later envelope buffered).
        since: Timestamp,
    },
    /// The key package pool went below its low watermark and was refilled; publish the new
    /// ones ([`publishable_key_packages`](crate::MlsClient::publishable_key_packages)).
    KeyPackagesReplenished {
        /// How many were made.
        created: usize,
    },
}

/// Why a received commit will never be applied ([`Event::CommitAbandoned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbandonReason {
    /// It references a proposal this device refused (SpacePanda accepts only Remove and Update
    /// proposals on their own, e.g. not a standalone Add).
    ProposalRefused,
    /// A proposal it references did not arrive within
    /// [`commit_proposal_wait`](crate::MlsConfig::commit_proposal_wait).
    ProposalMissing,
}

/// What an own commit changed ([`Event::CommitNotReissued`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnChange {
    /// It added devices.
    AddMembers,
    /// It removed devices.
    RemoveMembers,
    /// It replaced this device's leaf.
    SelfUpdate,
}

/// The result of one call into the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// What happened to the input (for `handle_envelope`).
    pub disposition: Disposition,
    /// Envelopes to deliver; already in the durable outbox.
    pub outbound: Vec<Outbound>,
    /// Things that happened, in order.
    pub events: Vec<Event>,
}

impl Output {
    pub(crate) fn extend(&mut self, other: Output) {
        self.outbound.extend(other.outbound);
        self.events.extend(other.events);
    }
}
