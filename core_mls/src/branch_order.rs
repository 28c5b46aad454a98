//! How branches of a group are told apart and ordered: the branch tag every message carries,
//! and the smallest-commit-ref rule applied to two branch histories (what a device that already
//! holds a group uses to judge a second Welcome). Pure functions; `fork_resolution` uses them.

use openmls::prelude::{MlsGroup, ProtocolMessage};

/// Length of a branch tag.
const BRANCH_TAG_LEN: usize = 16;
const BRANCH_TAG_CONTEXT: &str = "spacepanda branch tag v1";

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

/// Sets the branch tag as the authenticated data of the next message `group` makes.
pub(crate) fn tag_outgoing(group: &mut MlsGroup) {
    let tag = branch_tag(group);
    group.set_aad(tag);
}

/// The branch tag an incoming message claims (its authenticated data, which decryption
/// verifies), if it carries one.
pub(crate) fn message_tag(message: &ProtocolMessage) -> Option<Vec<u8>> {
    let aad = match message {
        ProtocolMessage::PrivateMessage(private) => private.aad(),
        ProtocolMessage::PublicMessage(_) => return None,
    };
    (aad.len() == BRANCH_TAG_LEN).then(|| aad.to_vec())
}

/// A message without a tag (from an older build) is taken to be of our branch.
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn history(entries: &[(u64, u8)]) -> BranchHistory {
        entries.iter().map(|(e, r)| (*e, vec![*r; 32])).collect()
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
