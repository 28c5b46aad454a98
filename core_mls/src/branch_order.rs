//! How branches of a group are told apart and ordered: the branch tag every message carries,
//! and the smallest-commit-ref rule applied to two branch histories (what a device that already
//! holds a group uses to judge a second Welcome). Pure functions; `fork_resolution` uses them.
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

use openmls::prelude::{MlsGroup, ProtocolMessage};

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
    let mut hasher = blake3::Hasher::new_derive_key(BRANCH_TAG_CONTEXT);
    let group_id = group.group_id().as_slice();
    hasher.update(&(group_id.len() as u64).to_be_bytes());
    hasher.update(group_id);
    hasher.update(&group.epoch().as_u64().to_be_bytes());
    hasher.update(group.epoch_authenticator().as_slice());
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
    let mut wire = Vec::with_capacity(BRANCH_TAG_WIRE_LEN);
    wire.extend_from_slice(&BRANCH_TAG_MAGIC);
    wire.push(BRANCH_TAG_VERSION);
    wire.extend_from_slice(tag);
    wire
}

/// The branch tag in authenticated data, if it is one of ours in the version this build
/// writes; anything else is no tag.
fn decode_tag(aad: &[u8]) -> Option<Vec<u8>> {
    if aad.len() != BRANCH_TAG_WIRE_LEN {
        return None;
    }
    let rest = aad.strip_prefix(&BRANCH_TAG_MAGIC)?;
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

/// A message without a tag of ours (another application, or an older build) is taken to be of
/// our branch.
pub(crate) fn tag_matches(claimed: &Option<Vec<u8>>, ours: &[u8]) -> bool {
    claimed.as_deref().is_none_or(|claimed| claimed == ours)
}

/// A branch over the fork window: for each epoch, the ref of the commit that ended it.
pub(crate) type BranchHistory = Vec<(u64, Vec<u8>)>;

/// Encodes a branch history for a Welcome's envelope context: `(epoch u64 BE, u8 length,
/// ref)` repeated. Refs longer than 255 bytes (none: they are SHA-256 hashes) are left out.
pub(crate) fn encode_history(history: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (epoch, commit_ref) in history {
        let Ok(len) = u8::try_from(commit_ref.len()) else {
            continue;
        };
        out.extend_from_slice(&epoch.to_be_bytes());
        out.push(len);
        out.extend_from_slice(commit_ref);
    }
    out
}

/// Decodes a branch history; `None` if the bytes are not one (an unauthenticated claim: a
/// malformed one is ignored, not fatal).
pub(crate) fn decode_history(mut bytes: &[u8]) -> Option<BranchHistory> {
    let mut history = Vec::new();
    while !bytes.is_empty() {
        let (epoch, rest) = bytes.split_first_chunk::<8>()?;
        let (len, rest) = rest.split_first()?;
        let len = usize::from(*len);
        if rest.len() < len {
            return None;
        }
        let (commit_ref, rest) = rest.split_at(len);
        history.push((u64::from_be_bytes(*epoch), commit_ref.to_vec()));
        bytes = rest;
    }
    Some(history)
}

/// How a Welcome's branch relates to the branch this device holds the group on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchOrder {
    /// They part at an epoch where the Welcome's commit ref is smaller: the Welcome wins.
    TheirsWins,
    /// They part at an epoch where ours is smaller: the Welcome is from a losing branch.
    OursWins,
    /// They agree wherever both know, and the Welcome is for a later epoch: the group went on
    /// without us (we were removed) and re-added us.
    TheirsLater,
    /// They agree and the Welcome is not for a later epoch: an old Welcome of our own branch.
    TheirsStale,
    /// No epoch in common: the rule cannot be applied.
    Disjoint,
}

/// Applies the smallest-commit-ref rule to two branch histories; `our_epoch` and
/// `their_epoch` are the epochs the two states are at.
pub(crate) fn compare_branches(
    ours: &[(u64, Vec<u8>)],
    our_epoch: u64,
    theirs: &[(u64, Vec<u8>)],
    their_epoch: u64,
) -> BranchOrder {
    let ours: std::collections::BTreeMap<u64, &Vec<u8>> =
        ours.iter().map(|(e, r)| (*e, r)).collect();
    let mut common = false;
    let mut theirs_sorted: Vec<&(u64, Vec<u8>)> = theirs.iter().collect();
    theirs_sorted.sort_by_key(|(e, _)| *e);
    for (epoch, their_ref) in theirs_sorted {
        if let Some(our_ref) = ours.get(epoch) {
            common = true;
            if our_ref.as_slice() != their_ref.as_slice() {
                return if their_ref < *our_ref {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn history(entries: &[(u64, u8)]) -> BranchHistory {
        entries.iter().map(|(e, r)| (*e, vec![*r; 32])).collect()
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
        assert!(tag_matches(&None, &tag));
        assert!(!tag_matches(&Some(vec![1; 16]), &tag));
    }

    #[test]
    fn branch_histories_round_trip_and_bad_bytes_are_none() {
        let h = history(&[(3, 1), (4, 9)]);
        assert_eq!(decode_history(&encode_history(&h)).unwrap(), h);
        assert_eq!(decode_history(&[]).unwrap(), Vec::new());
        let mut truncated = encode_history(&h);
        truncated.pop();
        assert!(decode_history(&truncated).is_none());
    }

    #[test]
    fn the_smaller_ref_at_the_first_difference_wins() {
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
