//! Every limit and time-driven policy of the engine, in one place, with documented defaults.

use std::time::Duration;

use openmls::prelude::Ciphersuite;

/// The one ciphersuite SpacePanda speaks.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Configuration of an [`MlsClient`](crate::MlsClient).
///
/// The defaults suit a phone-class device in groups of up to a few thousand members; every
/// limit exists because the input it bounds comes from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsConfig {
    /// Largest envelope accepted, in bytes (default 1 MiB). A Welcome for a 1 000-member group
    /// with the ratchet tree inside is ≈ 400 KiB.
    pub max_envelope_len: usize,
    /// Largest application message body [`send`](crate::MlsClient::send) accepts
    /// (default 256 KiB).
    pub max_application_len: usize,
    /// Buffered envelopes kept per group *for each delivering source* (default 256; see
    /// [`handle_envelope_from`](crate::MlsClient::handle_envelope_from); envelopes without a
    /// source share one source). An envelope that cannot be authenticated before its epoch
    /// is reached (or its group joined) costs an attacker nothing, so no source can take
    /// another's room: one that fills its share gets
    /// [`MlsError::BufferFull`](crate::MlsError::BufferFull) for the next one, and only its own
    /// lower-priority entries ever make room. 256 is a few minutes of a busy group's traffic
    /// behind one missing commit.
    pub buffer_max_messages: usize,
    /// Bytes of buffered envelopes kept per group for each delivering source (default 8 MiB).
    pub buffer_max_bytes: usize,
    /// Of a source's share in a group, how many envelopes may be for *far-future* epochs —
    /// beyond the next one (default 16). A genuine member is at most one commit ahead of us
    /// most of the time: the commit that moves us on and the messages of the epoch after it
    /// (priority entries) matter; a longer chain is rare, and catching up on it is what
    /// [`Event::MissingCommit`](crate::Event::MissingCommit) and
    /// [`recent_commits`](crate::MlsClient::recent_commits) are for.
    pub buffer_far_future_max_messages: usize,
    /// Buffered envelopes kept per group over all sources together (default 1 024): the bound
    /// of what many sources can make this device store. When it is reached, a priority entry
    /// (for the next epoch or earlier) pushes out the oldest far-future one of any source, and
    /// anything else is refused.
    pub buffer_group_max_messages: usize,
    /// Bytes kept per group over all sources together (default 32 MiB).
    pub buffer_group_max_bytes: usize,
    /// How long a buffered message waits for its epoch (default 24 h); `tick` drops older ones.
    pub buffer_max_age: Duration,
    /// Buffered envelopes kept for groups this device does not hold — a Welcome may still be on
    /// its way — for each delivering source, across all such groups (default 64). Anyone can
    /// invent group ids, so this is the low-priority room: nothing here pushes anything out.
    pub unknown_group_max_messages: usize,
    /// The same over all sources together (default 256).
    pub unknown_group_total_max_messages: usize,
    /// How long a group may wait at one epoch while envelopes of later epochs wait in the
    /// buffer before `tick` reports [`Event::MissingCommit`](crate::Event::MissingCommit)
    /// (default 10 min). A commit and the messages after it leave their senders seconds
    /// apart; later-epoch messages that wait minutes mean the commit was lost or withheld, and
    /// asking for it again costs one request. Much shorter would ask on every reordering of a
    /// slow link; much longer leaves the user reading nothing new in an active group.
    pub missing_commit_alert: Duration,
    /// Proposals accepted from others per group and epoch (default 64); more is a flood.
    pub max_proposals_per_epoch: usize,
    /// Past epochs whose application secrets are kept, so late messages still decrypt
    /// (default 3).
    pub max_past_epochs: usize,
    /// How far a sender's ratchet may jump ahead (OpenMLS maximum forward distance,
    /// default 1 000).
    pub max_forward_distance: u32,
    /// Out-of-order tolerance within one sender's ratchet (default 16).
    pub out_of_order_tolerance: u32,
    /// How long proposals (e.g. a member leaving) may wait for the designated committer before
    /// `tick` commits them itself (default 60 s). Messages sent meanwhile wait too.
    pub pending_proposal_timeout: Duration,
    /// How long a received commit waits for a proposal it references before this device gives
    /// up on it with [`Event::CommitAbandoned`](crate::Event::CommitAbandoned) (default 1 h).
    ///
    /// The proposal left its sender before the commit was made (the committer had it), so on
    /// any network that eventually delivers it arrives within delivery jitter of the commit:
    /// seconds, or a mailbox sync. An hour is far past that, and past the 60 s members wait for
    /// the designated committer. Giving up too early splits the group for real (the commit is
    /// dropped), giving up late only tells the user later, so the bound errs long; it stays well
    /// under `buffer_max_age`, after which the commit would be dropped anyway, as an anonymous
    /// [`BufferedDropped`](crate::Event::BufferedDropped).
    pub commit_proposal_wait: Duration,
    /// Self-update our leaf when it is older than this (default 7 days): post-compromise
    /// security for quiet groups.
    pub self_update_after: Duration,
    /// How long message ids are remembered for de-duplication (default 30 days).
    pub dedup_retention: Duration,
    /// How many past epochs of each group are kept as snapshots, so that a competing commit for
    /// one of them that the fork rule ranks first (docs/FORKS.md) can still win (default 8). A
    /// competing commit for an older epoch is
    /// [`MlsError::ForkOutsideWindow`](crate::MlsError::ForkOutsideWindow).
    pub fork_window_epochs: u64,
    /// How long a snapshot is kept (default 24 h; `tick` drops older ones). The same window
    /// bounds how long a single-use key package's private keys outlive the Welcome that used
    /// them, so that a device added by a commit that lost can be re-added with the same package.
    pub fork_window: Duration,
    /// How long after joining a group by external commit this device asks again whether the
    /// join stands (default 30 s): `tick` reports
    /// [`RejoinContested`](crate::Event::RejoinContested) once, unless something contested the
    /// join already. The member that gave the GroupInfo may have been on a branch that lost
    /// a race it had not judged yet, and in a quiet group nothing else would tell this device.
    pub rejoin_confirm_after: Duration,
    /// Key package pool policy.
    pub key_packages: PoolPolicy,
}

impl Default for MlsConfig {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        Self {
            max_envelope_len: 1024 * 1024,
            max_application_len: 256 * 1024,
            buffer_max_messages: 256,
            buffer_max_bytes: 8 * 1024 * 1024,
            buffer_far_future_max_messages: 16,
            buffer_group_max_messages: 1024,
            buffer_group_max_bytes: 32 * 1024 * 1024,
            buffer_max_age: DAY,
            unknown_group_max_messages: 64,
            unknown_group_total_max_messages: 256,
            missing_commit_alert: Duration::from_secs(10 * 60),
            max_proposals_per_epoch: 64,
            max_past_epochs: 3,
            max_forward_distance: 1000,
            out_of_order_tolerance: 16,
            pending_proposal_timeout: Duration::from_secs(60),
            commit_proposal_wait: Duration::from_secs(60 * 60),
            self_update_after: 7 * DAY,
            dedup_retention: 30 * DAY,
            fork_window_epochs: 8,
            fork_window: DAY,
            rejoin_confirm_after: Duration::from_secs(30),
            key_packages: PoolPolicy::default(),
        }
    }
}

/// Pool policy of this device's key packages; each field says what it does and its default
/// (the whole lifecycle: docs/ARCHITECTURE.md, "Key package lifecycle").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPolicy {
    /// Fresh (non-last-resort) packages to keep available (default 32).
    pub target: usize,
    /// Refill when fewer than this percentage of `target` remain offered (default 25).
    pub low_watermark_percent: u8,
    /// Lifetime written into each package (default 14 days).
    pub lifetime: Duration,
    /// Stop offering a package this long after it was made and make a new one (default 7 days).
    pub rotate_after: Duration,
    /// Keep private keys this long past `not_after`, for Welcomes already in flight (default 1 day).
    pub grace: Duration,
    /// Keep tombstones of pruned packages this long, so a late Welcome is told why it fails
    /// (default 90 days).
    pub tombstone_retention: Duration,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        Self {
            target: 32,
            low_watermark_percent: 25,
            lifetime: 14 * DAY,
            rotate_after: 7 * DAY,
            grace: DAY,
            tombstone_retention: 90 * DAY,
        }
    }
}

impl PoolPolicy {
    /// The offered count below which the pool is refilled.
    pub fn low_watermark(&self) -> usize {
        (self.target * usize::from(self.low_watermark_percent)).div_ceil(100)
    }
}
