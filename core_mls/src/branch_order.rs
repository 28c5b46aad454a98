//! How branches of a group are told apart and ordered: the branch tag every message carries,
//! the fork rule that picks one commit among those made in one epoch ([`winner`]; its argument
//! is in `fork_resolution`), and that rule applied to two branch histories (what a device that
//! already holds a group uses to judge a second Welcome). Pure functions.
//!
//! # Wire format of the branch tag
//!
//! Every MLS message this device makes carries, as its MLS authenticated data
//! (`PrivateMessage.authenticated_data`, which decryption verifies):
//!
//! ```text
//! struct {
//!     opaque magic[4] = "SPbt";  // 0x53 0x50 0x62 0x74: a SpacePanda branch tag
//!     uint8  version = 1;
//!     opaque tag[16];            // BLAKE3 derive_key("spacepanda branch tag v1",
//!                                //   u64 BE len(group id) ‖ group id ‖ u64 BE epoch ‖
//!                                //   epoch authenticator), first 16 bytes
//! } BranchTag;                   // exactly 21 bytes
//! ```
//!
//! Authenticated data that is not exactly this — absent, of another length, another magic or
//! another version — is **no tag**: the message is taken to be of this device's branch and
//! processed normally (if it is not, decryption says so). A peer that is not SpacePanda (or a
//! newer build with another tag version) therefore never has its messages held back as "of
//! another branch"; a tag can only be recognised as another branch's when it is one of ours.
//! (Pre-release builds sent the 16 tag bytes alone; those now read as no tag.)
//!
//! An external commit (a `PublicMessage` from a device not yet in the group) cannot carry a
//! branch tag: its maker has the GroupInfo, not the epoch secrets. It carries instead
//!
//! ```text
//! struct {
//!     opaque magic[4] = "SPbx";  // an external commit's tag
//!     uint8  version = 1;
//!     opaque tag[16];            // BLAKE3 derive_key("spacepanda external commit branch
//!                                //   tag v1", u64 BE len(group id) ‖ group id ‖ u64 BE
//!                                //   epoch ‖ confirmed transcript hash), first 16 bytes
//! } ExternalTag;                 // exactly 21 bytes, covered by the commit's signature
//! ```
//!
//! which a member compares with the state of that epoch it holds (`external_commit_tag`); the
//! same rule applies: anything else is no tag.

use openmls::prelude::{MlsGroup, ProtocolMessage};
use serde::{Deserialize, Serialize};

/// Length of a branch tag (the part that identifies the epoch state).
const BRANCH_TAG_LEN: usize = 16;
const BRANCH_TAG_CONTEXT: &str = "spacepanda branch tag v1";
/// First bytes of the authenticated data that carries a branch tag.
const BRANCH_TAG_MAGIC: [u8; 4] = *b"SPbt";
/// Version of the branch tag format (see the module docs).
const BRANCH_TAG_VERSION: u8 = 1;
/// Length of the whole authenticated data: magic, version, tag.
const BRANCH_TAG_WIRE_LEN: usize = BRANCH_TAG_MAGIC.len() + 1 + BRANCH_TAG_LEN;

/// The tag of the group's current epoch state (see the module docs).
///
/// The epoch authenticator differs between any two epoch states (it is derived from the epoch
/// secret); the tag is a one-way hash of it, so publishing the tag does not publish it.
pub(crate) fn branch_tag(group: &MlsGroup) -> Vec<u8> {
    tag_of_state(
        BRANCH_TAG_CONTEXT,
        group.group_id().as_slice(),
        group.epoch().as_u64(),
        group.epoch_authenticator().as_slice(),
    )
}

/// The first 16 bytes of BLAKE3 `derive_key(context, u64 BE len(group id) ‖ group id ‖ u64 BE
/// epoch ‖ state)`: both tags (see the module docs).
fn tag_of_state(context: &str, group_id: &[u8], epoch: u64, state: &[u8]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    hasher.update(&(group_id.len() as u64).to_be_bytes());
    hasher.update(group_id);
    hasher.update(&epoch.to_be_bytes());
    hasher.update(state);
    hasher
        .finalize()
        .as_bytes()
        .iter()
        .take(BRANCH_TAG_LEN)
        .copied()
        .collect()
}

/// Sets the branch tag, in its wire format, as the authenticated data of the next message
/// `group` makes.
pub(crate) fn tag_outgoing(group: &mut MlsGroup) {
    group.set_aad(encode_tag(&branch_tag(group)));
}

/// The authenticated data that carries `tag` (see the module docs).
fn encode_tag(tag: &[u8]) -> Vec<u8> {
    encode_with(&BRANCH_TAG_MAGIC, tag)
}

/// The branch tag in authenticated data, if it is one of ours in the version this build
/// writes; anything else is no tag.
fn decode_tag(aad: &[u8]) -> Option<Vec<u8>> {
    decode_with(&BRANCH_TAG_MAGIC, aad)
}

fn encode_with(magic: &[u8; 4], tag: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(BRANCH_TAG_WIRE_LEN);
    wire.extend_from_slice(magic);
    wire.push(BRANCH_TAG_VERSION);
    wire.extend_from_slice(tag);
    wire
}

fn decode_with(magic: &[u8; 4], aad: &[u8]) -> Option<Vec<u8>> {
    if aad.len() != BRANCH_TAG_WIRE_LEN {
        return None;
    }
    let rest = aad.strip_prefix(magic)?;
    let (version, tag) = rest.split_first()?;
    (*version == BRANCH_TAG_VERSION).then(|| tag.to_vec())
}

/// The branch tag an incoming message claims (in its authenticated data, which decryption
/// verifies), if it carries one of ours.
pub(crate) fn message_tag(message: &ProtocolMessage) -> Option<Vec<u8>> {
    match message {
        ProtocolMessage::PrivateMessage(private) => decode_tag(private.aad()),
        ProtocolMessage::PublicMessage(_) => None,
    }
}

const EXTERNAL_TAG_CONTEXT: &str = "spacepanda external commit branch tag v1";
/// First bytes of an external commit's authenticated data that names its epoch state.
const EXTERNAL_TAG_MAGIC: [u8; 4] = *b"SPbx";

/// The tag of an epoch state as a device joining by external commit can name it: it holds the
/// GroupInfo's context, not the epoch's secrets (so not the epoch authenticator the branch tag
/// hashes). The confirmed transcript hash differs between any two epoch states of one epoch.
pub(crate) fn external_tag(
    group_id: &[u8],
    epoch: u64,
    confirmed_transcript_hash: &[u8],
) -> Vec<u8> {
    tag_of_state(
        EXTERNAL_TAG_CONTEXT,
        group_id,
        epoch,
        confirmed_transcript_hash,
    )
}

/// The authenticated data of an external commit made in the epoch state `tag` names.
pub(crate) fn encode_external_tag(tag: &[u8]) -> Vec<u8> {
    encode_with(&EXTERNAL_TAG_MAGIC, tag)
}

/// The external tag an incoming external commit claims (its authenticated data, which its
/// signature covers), if it carries one of ours. An external commit carries no branch tag
/// (the joiner cannot compute one), so without this a commit made on another branch could
/// not be told from one of ours before it failed to verify.
pub(crate) fn external_message_tag(message: &ProtocolMessage) -> Option<Vec<u8>> {
    let ProtocolMessage::PublicMessage(public) = message else {
        return None;
    };
    if !matches!(public.sender(), openmls::prelude::Sender::NewMemberCommit) {
        return None;
    }
    decode_with(&EXTERNAL_TAG_MAGIC, public.authenticated_data())
}

/// A message without a tag of ours (another application, or an older build) is taken to be of
/// our branch.
pub(crate) fn tag_matches(claimed: &Option<Vec<u8>>, ours: &[u8]) -> bool {
    claimed.as_deref().is_none_or(|claimed| claimed == ours)
}

/// What decides between two commits made in one epoch (see `fork_resolution` for the rule).
///
/// Every field is something the committer cannot choose in order to win: its leaf index and
/// the epoch it commits in are fixed before it commits, the priority is derived from both,
/// and whom the commit removes is visible to every member. The commit ref (the confirmed
/// transcript hash of the epoch the commit creates) decides only between two commits of one
/// committer in one epoch — an equivocation, which is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommitRank {
    /// The commit ref.
    #[serde(deserialize_with = "crate::storage::byte_fields::vec")]
    pub(crate) commit_ref: Vec<u8>,
    /// The committer's leaf index in the epoch the commit was made in.
    pub(crate) committer: u32,
    /// The leaf indices the commit removes, in that epoch.
    pub(crate) removes: Vec<u32>,
    /// [`priority`] of the committer in that epoch.
    #[serde(deserialize_with = "crate::storage::byte_fields::array")]
    pub(crate) priority: [u8; PRIORITY_LEN],
}

/// The `committer` of an external commit (RFC 9420 §12.4.3.2): it has no leaf in the epoch it
/// was made in. No tree has this many leaves.
pub(crate) const EXTERNAL_COMMITTER: u32 = u32::MAX;

impl CommitRank {
    /// The rank of an external commit: it comes after every member's commit of its epoch.
    pub(crate) fn external(commit_ref: Vec<u8>, removes: Vec<u32>) -> Self {
        Self {
            commit_ref,
            committer: EXTERNAL_COMMITTER,
            removes,
            priority: [u8::MAX; PRIORITY_LEN],
        }
    }

    /// Whether a device that was not a member in that epoch made it (an external commit).
    pub(crate) fn is_external(&self) -> bool {
        self.committer == EXTERNAL_COMMITTER
    }
}

/// Length of a committer's priority.
pub(crate) const PRIORITY_LEN: usize = 16;
const PRIORITY_CONTEXT: &str = "spacepanda commit priority v1";

/// The committer's priority in an epoch: a hash of the epoch's branch tag and the committer's
/// leaf index. A member cannot choose it when it commits (the epoch state is fixed by then),
/// and it changes from epoch to epoch, so no leaf wins every race (a fixed order by leaf index
/// would let the founder win them all).
pub(crate) fn priority(epoch_tag: &[u8], committer: u32) -> [u8; PRIORITY_LEN] {
    let mut hasher = blake3::Hasher::new_derive_key(PRIORITY_CONTEXT);
    hasher.update(&(epoch_tag.len() as u64).to_be_bytes());
    hasher.update(epoch_tag);
    hasher.update(&committer.to_be_bytes());
    let mut out = [0u8; PRIORITY_LEN];
    for (byte, hashed) in out.iter_mut().zip(hasher.finalize().as_bytes()) {
        *byte = *hashed;
    }
    out
}

/// The commit that wins among `candidates`, all made in one epoch of one branch (the rule;
/// its argument is in `fork_resolution`):
/// 1. a commit whose committer another candidate's commit removes is out, unless every
///    candidate is out (members removing each other);
/// 2. of the rest, the committer with the smallest priority wins;
/// 3. between two commits of one committer (equivocation), the smaller commit ref.
///
/// An external commit (a device joining by itself) ranks after every member's commit: it wins
/// only an epoch no member ended, so a device rejoining never undoes what members did. The
/// leaf it removes (its own, from before) puts no member's commit out. Between two external
/// commits, the smaller commit ref.
///
/// The result depends on the set, not on the order the candidates arrived in.
pub(crate) fn winner(candidates: &[CommitRank]) -> Option<&CommitRank> {
    let removed = |rank: &CommitRank| {
        candidates.iter().any(|other| {
            !other.is_external()
                && other.committer != rank.committer
                && other.removes.contains(&rank.committer)
        })
    };
    let eligible: Vec<&CommitRank> = candidates.iter().filter(|c| !removed(c)).collect();
    let pool: Vec<&CommitRank> = if eligible.is_empty() {
        candidates.iter().collect()
    } else {
        eligible
    };
    pool.into_iter().min_by(|a, b| {
        (a.is_external(), a.priority, &a.commit_ref).cmp(&(
            b.is_external(),
            b.priority,
            &b.commit_ref,
        ))
    })
}

/// What a branch says of one epoch: the commit that ended it, and the other commits of that
/// epoch it judged (they lost there, but the winner is a function of the whole set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpochBranch {
    /// The commit merged out of the epoch on this branch.
    pub(crate) merged: CommitRank,
    /// The other commits of the epoch judged on this branch.
    pub(crate) others: Vec<CommitRank>,
}

/// A branch over the fork window, epoch by epoch.
pub(crate) type BranchHistory = Vec<(u64, EpochBranch)>;

/// How a Welcome's branch relates to the branch this device holds the group on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchOrder {
    /// They part at an epoch where the Welcome's commit wins: the Welcome wins.
    TheirsWins,
    /// They part at an epoch where ours wins: the Welcome is from a losing branch.
    OursWins,
    /// They agree wherever both know, and the Welcome is for a later epoch: the group went on
    /// without us (we were removed) and re-added us.
    TheirsLater,
    /// They agree and the Welcome is not for a later epoch: an old Welcome of our own branch.
    TheirsStale,
    /// No epoch in common: the rule cannot be applied.
    Disjoint,
}

/// Where two branches part at one epoch: whether `theirs`'s commit wins it. The rule is
/// applied to every commit either branch judged in that epoch (merged and others), as the
/// members that saw them all judged it: the pair alone can give another winner (a third
/// commit that removes one committer puts it out).
pub(crate) fn theirs_wins_epoch(ours: &EpochBranch, theirs: &EpochBranch) -> bool {
    let mut set: Vec<CommitRank> = Vec::new();
    for rank in [&ours.merged, &theirs.merged]
        .into_iter()
        .chain(&ours.others)
        .chain(&theirs.others)
    {
        if !set.iter().any(|known| known.commit_ref == rank.commit_ref) {
            set.push(rank.clone());
        }
    }
    winner(&set).map(|w| &w.commit_ref) == Some(&theirs.merged.commit_ref)
}

/// Applies the rule to two branch histories at the first epoch where they differ, over every
/// commit of that epoch either side judged; `our_epoch` and `their_epoch` are the epochs the
/// two states are at. If a third commit wins there, neither branch is the winner's: ours is
/// kept (a Welcome from the winning branch replaces it when it comes).
pub(crate) fn compare_branches(
    ours: &[(u64, EpochBranch)],
    our_epoch: u64,
    theirs: &[(u64, EpochBranch)],
    their_epoch: u64,
) -> BranchOrder {
    let ours: std::collections::BTreeMap<u64, &EpochBranch> =
        ours.iter().map(|(e, b)| (*e, b)).collect();
    let mut common = false;
    let mut theirs_sorted: Vec<&(u64, EpochBranch)> = theirs.iter().collect();
    theirs_sorted.sort_by_key(|(e, _)| *e);
    for (epoch, their_branch) in theirs_sorted {
        if let Some(our_branch) = ours.get(epoch) {
            common = true;
            if our_branch.merged.commit_ref != their_branch.merged.commit_ref {
                return if theirs_wins_epoch(our_branch, their_branch) {
                    BranchOrder::TheirsWins
                } else {
                    BranchOrder::OursWins
                };
            }
        }
    }
    match (common, their_epoch > our_epoch) {
        (false, _) => BranchOrder::Disjoint,
        (true, true) => BranchOrder::TheirsLater,
        (true, false) => BranchOrder::TheirsStale,
    }
}

/// The first epoch both histories know where they merged different commits: where the two
/// branches part.
pub(crate) fn parting_epoch(
    ours: &[(u64, EpochBranch)],
    theirs: &[(u64, EpochBranch)],
) -> Option<u64> {
    theirs
        .iter()
        .filter(|(epoch, their_branch)| {
            ours.iter().any(|(e, our_branch)| {
                e == epoch && our_branch.merged.commit_ref != their_branch.merged.commit_ref
            })
        })
        .map(|(epoch, _)| *epoch)
        .min()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn rank(commit_ref: u8, committer: u32, removes: &[u32], priority: u8) -> CommitRank {
        CommitRank {
            commit_ref: vec![commit_ref; 32],
            committer,
            removes: removes.to_vec(),
            priority: [priority; PRIORITY_LEN],
        }
    }

    fn history(entries: &[(u64, u8)]) -> BranchHistory {
        // Priority follows the ref here, so the smaller ref is the higher priority.
        entries
            .iter()
            .map(|(e, r)| {
                let merged = rank(*r, u32::from(*r), &[], *r);
                (
                    *e,
                    EpochBranch {
                        merged,
                        others: Vec::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn an_epoch_is_judged_over_every_commit_either_side_saw_not_the_pair() {
        // Ours merged leaf 2's commit, theirs leaf 1's; leaf 2 has the higher priority, so the
        // pair alone says ours. Theirs also judged leaf 0's commit, which removes leaf 2: leaf
        // 2's commit is out, and of the rest leaf 1's wins, as every member judged it.
        let ours = EpochBranch {
            merged: rank(1, 2, &[4], 1),
            others: Vec::new(),
        };
        let theirs = EpochBranch {
            merged: rank(2, 1, &[], 2),
            others: vec![rank(3, 0, &[2], 3)],
        };
        assert!(theirs_wins_epoch(&ours, &theirs));
        assert!(!theirs_wins_epoch(&theirs, &ours));
        let pair_only = EpochBranch {
            merged: theirs.merged.clone(),
            others: Vec::new(),
        };
        assert!(!theirs_wins_epoch(&ours, &pair_only));
        assert_eq!(
            compare_branches(&[(6, ours.clone())], 7, &[(6, theirs.clone())], 7),
            BranchOrder::TheirsWins
        );
    }

    #[test]
    fn branches_part_at_the_first_epoch_both_know_with_different_commits() {
        let ours = history(&[(3, 1), (4, 2), (5, 3), (6, 4)]);
        // Agrees at 4, differs at 5 and 6, knows 2 (which ours does not).
        let theirs = history(&[(6, 9), (2, 7), (4, 2), (5, 8)]);
        assert_eq!(parting_epoch(&ours, &theirs), Some(5));
        assert_eq!(parting_epoch(&theirs, &ours), Some(5));
        assert_eq!(
            parting_epoch(&ours, &history(&[(3, 1), (4, 2), (9, 9)])),
            None
        );
        assert_eq!(parting_epoch(&ours, &[]), None);
    }

    #[test]
    fn a_third_commit_either_side_judged_decides_too() {
        // Ours merged a (priority 5), theirs merged b (priority 9); we also judged c, which
        // removes a's committer: over the set, b wins.
        let a = rank(1, 1, &[], 5);
        let b = rank(2, 2, &[], 9);
        let c = rank(3, 3, &[1], 200);
        let ours = vec![(
            4,
            EpochBranch {
                merged: a,
                others: vec![c],
            },
        )];
        let theirs = vec![(
            4,
            EpochBranch {
                merged: b,
                others: Vec::new(),
            },
        )];
        assert_eq!(
            compare_branches(&ours, 5, &theirs, 5),
            BranchOrder::TheirsWins
        );
        assert_eq!(
            compare_branches(&theirs, 5, &ours, 5),
            BranchOrder::OursWins
        );
    }

    #[test]
    fn a_commit_that_removes_the_other_committer_wins_whatever_the_priorities() {
        let remover = rank(9, 0, &[2], 200);
        let removed = rank(1, 2, &[], 1);
        for candidates in [
            [remover.clone(), removed.clone()],
            [removed.clone(), remover.clone()],
        ] {
            assert_eq!(winner(&candidates), Some(&remover));
        }
        // Removing someone else does not help.
        let other_removal = rank(1, 2, &[5], 1);
        assert_eq!(
            winner(&[remover.clone(), other_removal.clone()]),
            Some(&remover)
        );
        assert_eq!(
            winner(&[rank(9, 0, &[], 200), other_removal.clone()]),
            Some(&other_removal),
            "no removal between them: priority decides"
        );
        // Members removing each other: priority decides between them.
        let counter = rank(1, 2, &[0], 1);
        assert_eq!(winner(&[remover, counter.clone()]), Some(&counter));
    }

    #[test]
    fn an_external_commit_wins_only_where_no_member_committed() {
        // Even a member priority of all ones (the largest) comes first.
        let member = rank(9, 4, &[], u8::MAX);
        // The external commit removes leaf 4 (its own old leaf): that puts nobody out.
        let external = CommitRank::external(vec![1; 32], vec![4]);
        for candidates in [
            [member.clone(), external.clone()],
            [external.clone(), member.clone()],
        ] {
            assert_eq!(winner(&candidates), Some(&member));
        }
        assert_eq!(winner(std::slice::from_ref(&external)), Some(&external));
        // Between two external commits, the smaller ref; neither is an equivocation's pair
        // of one member, but the rule is the same.
        let other = CommitRank::external(vec![0; 32], Vec::new());
        assert_eq!(winner(&[external.clone(), other.clone()]), Some(&other));
        // A member commit that removes a leaf still puts that committer out.
        let remover = rank(5, 2, &[4], 100);
        assert_eq!(winner(&[member, remover.clone(), external]), Some(&remover));
    }

    #[test]
    fn the_ref_decides_only_between_two_commits_of_one_committer() {
        let a = rank(7, 3, &[], 50);
        let b = rank(2, 3, &[], 50);
        let c = rank(1, 4, &[], 60);
        assert_eq!(winner(&[a.clone(), b.clone(), c.clone()]), Some(&b));
        assert_eq!(winner(&[c, a.clone()]), Some(&a));
        assert_eq!(winner(&[]), None);
    }

    #[test]
    fn the_winner_of_a_set_does_not_depend_on_arrival_order() {
        // a removes b, b outranks c, c outranks a: pairwise this is a cycle; over the set,
        // b is out (a removes it) and c beats a.
        let a = rank(1, 0, &[1], 90);
        let b = rank(2, 1, &[], 10);
        let c = rank(3, 2, &[], 50);
        for set in [
            [a.clone(), b.clone(), c.clone()],
            [c.clone(), a.clone(), b.clone()],
            [b.clone(), c.clone(), a.clone()],
        ] {
            assert_eq!(winner(&set), Some(&c));
        }
    }

    #[test]
    fn priorities_differ_by_epoch_and_committer() {
        assert_ne!(priority(b"tag one", 0), priority(b"tag two", 0));
        assert_ne!(priority(b"tag one", 0), priority(b"tag one", 1));
        assert_eq!(priority(b"tag one", 1), priority(b"tag one", 1));
    }

    #[test]
    fn only_our_prefixed_versioned_tag_is_a_tag() {
        let tag = [7u8; BRANCH_TAG_LEN];
        let wire = encode_tag(&tag);
        assert_eq!(wire.len(), 21);
        assert_eq!(&wire[..5], b"SPbt\x01");
        assert_eq!(decode_tag(&wire).unwrap(), tag.to_vec());
        // Another application's authenticated data, however long, is never a tag.
        assert_eq!(decode_tag(&tag), None, "16 bare bytes");
        assert_eq!(decode_tag(&[]), None);
        assert_eq!(
            decode_tag(&[0x53; BRANCH_TAG_WIRE_LEN]),
            None,
            "21 bytes, other magic"
        );
        let mut newer = wire.clone();
        newer[4] = 2;
        assert_eq!(
            decode_tag(&newer),
            None,
            "a tag version this build does not know"
        );
        let mut longer = wire.clone();
        longer.push(0);
        assert_eq!(decode_tag(&longer), None);
        assert_eq!(decode_tag(&wire[..20]), None);
        // An external commit's tag is not a branch tag, nor the other way round.
        let external = encode_external_tag(&tag);
        assert_eq!(external.len(), BRANCH_TAG_WIRE_LEN);
        assert_eq!(decode_tag(&external), None);
        assert_eq!(
            decode_with(&EXTERNAL_TAG_MAGIC, &external).unwrap(),
            tag.to_vec()
        );
        assert_eq!(decode_with(&EXTERNAL_TAG_MAGIC, &wire), None);
        assert!(tag_matches(&None, &tag));
        assert!(!tag_matches(&Some(vec![1; 16]), &tag));
    }

    #[test]
    fn the_rule_applies_at_the_first_difference() {
        let ours = history(&[(3, 1), (4, 5), (5, 7)]);
        assert_eq!(
            compare_branches(&ours, 6, &history(&[(3, 1), (4, 2)]), 5),
            BranchOrder::TheirsWins
        );
        assert_eq!(
            compare_branches(&ours, 6, &history(&[(3, 1), (4, 8), (5, 0)]), 9),
            BranchOrder::OursWins,
            "the first difference decides, not a later one"
        );
        assert_eq!(
            compare_branches(&ours, 6, &history(&[(4, 5), (5, 7), (6, 3)]), 7),
            BranchOrder::TheirsLater
        );
        assert_eq!(
            compare_branches(&ours, 6, &history(&[(3, 1), (4, 5)]), 5),
            BranchOrder::TheirsStale
        );
        assert_eq!(
            compare_branches(&ours, 6, &history(&[(10, 1)]), 11),
            BranchOrder::Disjoint
        );
    }
}
