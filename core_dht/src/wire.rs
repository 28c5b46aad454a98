//! The delivery protocol ([`DELIVERY_PROTOCOL`]): libp2p request-response with CBOR bodies.
//! One request, one response; every field is bounded by the codec's size limits (set from
//! [`DhtConfig`](crate::DhtConfig)) and checked by the side that receives it.
//!
//! - [`Request::Push`]: an envelope for the device this peer runs. The answer
//!   [`Response::Delivered`] comes only after the receiving engine's transaction committed.
//! - [`Request::Deposit`]: an envelope for a mailbox this peer holds; [`Response::Deposited`]
//!   only after it is in the holder's durable store.
//! - [`Request::Challenge`], [`Request::Fetch`], [`Request::Ack`]: the mailbox's owner
//!   proves who it is ([`AccessProof`]), reads, and deletes what it processed.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::mailbox::{DepositOutcome, EntryId, MailboxKey, MailboxRefusal};

/// SpacePanda's private delivery protocol (direct pushes and mailboxes).
pub const DELIVERY_PROTOCOL: StreamProtocol = StreamProtocol::new("/spacepanda/deliver/1.0.0");

/// Most ids one [`Request::Holds`] or [`Request::Ack`] carries.
pub const MAX_IDS: usize = 4096;

/// Most envelopes one fetch page carries.
pub const MAX_PAGE_ENVELOPES: usize = 512;

/// A device, as the wire names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDevice {
    /// The user id's bytes.
    #[serde(with = "serde_bytes")]
    pub user: [u8; 32],
    /// The device id's bytes.
    #[serde(with = "serde_bytes")]
    pub device: [u8; 16],
}

/// What a device sends a mailbox holder to prove it owns the mailbox: its credential (the
/// device certificate signed by the user's identity key) and its signature, by the key the
/// certificate covers, over the holder's fresh challenge. See `mailbox::access`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessProof {
    /// The device's `SpacePandaCredential` bytes.
    #[serde(with = "serde_bytes")]
    pub credential: Vec<u8>,
    /// The challenge the holder issued.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 32],
    /// Ed25519 signature over the access message.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for AccessProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessProof").finish_non_exhaustive()
    }
}

/// One envelope as a holder returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEnvelope {
    /// The name the holder keeps it under (the fetcher checks it against the bytes).
    pub id: EntryId,
    /// The envelope.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A request of the delivery protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The commits of `group` from epoch `from_epoch` on, for a member device stuck behind a
    /// commit it never received (core_mls's `MissingCommit`). Answered by a member device
    /// only to a peer that runs a member device of the group, as its user record says.
    RecentCommits {
        /// The group id's bytes.
        #[serde(with = "serde_bytes")]
        group: Vec<u8>,
        /// The epoch the requester is stuck at.
        from_epoch: u64,
        /// The requesting device.
        requester: WireDevice,
    },
    /// A signed GroupInfo of `group` (with its ratchet tree), for `requester` to rejoin the
    /// group by external commit. Answered by a member device only to a peer that runs
    /// `requester` (per its user record) when `requester`'s user has a device in the group.
    GroupInfo {
        /// The group id's bytes.
        #[serde(with = "serde_bytes")]
        group: Vec<u8>,
        /// The requesting device.
        requester: WireDevice,
    },
    /// The groups this device is in, for a new device of the same user (which then asks for
    /// their GroupInfos). Answered only to a peer that runs a device of this device's user.
    OwnGroups {
        /// The requesting device.
        requester: WireDevice,
    },
    /// Deliver `envelope` to `recipient`, which this peer should run.
    Push {
        /// The device it is for.
        recipient: WireDevice,
        /// The envelope's bytes.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
        /// The sender deposited envelopes for this device since its last push went through:
        /// the device reads its mailbox first, so they reach its engine before this newer
        /// one (MLS tolerates little reordering within a sender's ratchet).
        #[serde(default)]
        after_deposits: bool,
    },
    /// Keep `envelope` in `mailbox`.
    Deposit {
        /// The recipient's mailbox.
        mailbox: MailboxKey,
        /// The envelope's bytes.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
        /// For a hand-over between holders: the original depositor and expiry (ms), kept so
        /// a hand-over neither escapes the sender's quota nor extends the lifetime.
        handover: Option<Handover>,
    },
    /// Issue a fresh challenge for an access proof to `mailbox`.
    Challenge {
        /// The mailbox.
        mailbox: MailboxKey,
    },
    /// Return envelopes of `mailbox` after `after`, in the order the holder received them.
    Fetch {
        /// The mailbox.
        mailbox: MailboxKey,
        /// The owner's proof.
        proof: AccessProof,
        /// Resume after this id.
        after: Option<EntryId>,
    },
    /// Which of `ids` this holder lacks for `mailbox` (holders ask each other before handing
    /// over, so only missing envelopes travel). Acknowledged ones count as held.
    Holds {
        /// The mailbox.
        mailbox: MailboxKey,
        /// At most [`MAX_IDS`] ids.
        ids: Vec<EntryId>,
    },
    /// Delete these envelopes from `mailbox`: the owner processed them.
    Ack {
        /// The mailbox.
        mailbox: MailboxKey,
        /// The owner's proof.
        proof: AccessProof,
        /// The envelopes.
        ids: Vec<EntryId>,
    },
}

/// Where a handed-over envelope came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The original depositor's name (its peer id bytes).
    #[serde(with = "serde_bytes")]
    pub sender: Vec<u8>,
    /// The original expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Why a push was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushRefusal {
    /// This peer runs no device, or another one: use the recipient's mailbox.
    NotHere,
    /// The device's engine could not take it now (its store failed, its buffer is full, it is
    /// shutting down); the sender keeps it and retries or deposits it.
    TryLater {
        /// Why.
        reason: String,
    },
    /// The engine refused the envelope for good (malformed, forged, not for this device):
    /// sending it again would not change that.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A response of the delivery protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The push went through the device's engine and its transaction committed.
    Delivered,
    /// The push was not delivered.
    PushRefused(PushRefusal),
    /// The deposit is durable.
    Deposited(DepositOutcome),
    /// The deposit was refused.
    DepositRefused(MailboxRefusal),
    /// A challenge to sign, valid for a short while, for this requester only.
    Challenge {
        /// The nonce.
        #[serde(with = "serde_bytes")]
        nonce: [u8; 32],
    },
    /// A page of envelopes; `more` says whether more follow.
    Envelopes {
        /// The envelopes.
        envelopes: Vec<WireEnvelope>,
        /// Whether another fetch would return more.
        more: bool,
    },
    /// The acknowledged envelopes are deleted (`deleted` were held here).
    Acked {
        /// How many were held.
        deleted: u64,
    },
    /// The commits a [`Request::RecentCommits`] asked for (oldest first; possibly fewer, to
    /// fit one response).
    Commits {
        /// Envelope bytes, each an ordinary envelope for the engine.
        envelopes: Vec<serde_bytes::ByteBuf>,
    },
    /// The GroupInfo a [`Request::GroupInfo`] asked for: envelope bytes for core_mls's
    /// `join_by_external_commit`.
    GroupInfo {
        /// The envelope.
        envelope: serde_bytes::ByteBuf,
    },
    /// The groups a [`Request::OwnGroups`] asked for.
    Groups {
        /// Group ids.
        groups: Vec<serde_bytes::ByteBuf>,
    },
    /// The ids of a [`Request::Holds`] this holder lacks.
    Missing {
        /// The ids.
        ids: Vec<EntryId>,
    },
    /// The access proof was refused.
    AccessDenied {
        /// Why.
        reason: String,
    },
    /// This peer keeps no mailboxes (or cannot now).
    NoMailboxes,
    /// The request could not be handled (the holder's store failed).
    Failed {
        /// Why.
        reason: String,
    },
}
