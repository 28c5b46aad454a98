//! Which branch an external commit stands for on this device. An external commit carries no
//! branch tag (its joiner cannot compute one); its `"SPbx"` tag names the epoch state it was
//! made in (`branch_order::external_tag`, over that state's confirmed transcript hash). Compared
//! with the state this device holds of that epoch (current, or a kept snapshot), it is of this
//! device's branch or of another, and routes like that branch's messages instead of failing to
//! verify here. The design: docs/FORKS.md ("Branch tags on the wire").

use openmls::prelude::ProtocolMessage;

use crate::branch_order::{branch_tag, external_message_tag, external_tag};
use crate::branch_records::epoch_snapshots::{self, SnapshotMeta};
use crate::client::MlsClient;
use crate::error::MlsError;
use crate::group_id::GroupId;

impl MlsClient {
    /// The branch tag an external commit of `epoch` stands for here: it names the epoch state
    /// it was made in by that state's transcript hash (`external_tag`). Ours, if this device
    /// holds that state (now or in a snapshot) — the commit then routes like any commit of
    /// our branch; its own, which matches none of ours, if this device holds another state of
    /// that epoch (another branch: it waits like that branch's messages, instead of failing
    /// to verify here); none if this device holds no state of that epoch, or for any other
    /// message.
    pub(crate) fn external_commit_tag(
        &self,
        message: &ProtocolMessage,
        group: &GroupId,
        epoch: u64,
        current: u64,
    ) -> Result<Option<Vec<u8>>, MlsError> {
        let Some(claimed) = external_message_tag(message) else {
            return Ok(None);
        };
        if epoch != current {
            return Ok(self
                .read(|txn| epoch_snapshots::meta(txn, group, epoch))?
                .and_then(|snapshot| {
                    Self::external_commit_tag_in_snapshot(message, group, epoch, &snapshot)
                }));
        }
        let held = self.group(group)?;
        let hash = held
            .public_group()
            .group_context()
            .confirmed_transcript_hash();
        Ok(Some(external_tag_against(
            claimed,
            group,
            epoch,
            hash,
            branch_tag(held),
        )))
    }

    /// The branch tag an external commit of `epoch` stands for against a kept `snapshot` of that
    /// epoch (see `external_commit_tag`); none for any other message, or a snapshot that does not
    /// record its transcript hash. A device that does not hold the group (removed by a commit
    /// that may still lose) reads it too: an external commit made on another state of that epoch
    /// then waits for its branch, instead of failing to verify against the snapshot's state and
    /// being dropped for good.
    pub(crate) fn external_commit_tag_in_snapshot(
        message: &ProtocolMessage,
        group: &GroupId,
        epoch: u64,
        snapshot: &SnapshotMeta,
    ) -> Option<Vec<u8>> {
        if snapshot.confirmed_transcript_hash.is_empty() {
            return None;
        }
        let claimed = external_message_tag(message)?;
        Some(external_tag_against(
            claimed,
            group,
            epoch,
            &snapshot.confirmed_transcript_hash,
            snapshot.branch_tag.clone(),
        ))
    }
}

/// The tag an external commit that claims `claimed` stands for here, where this device holds
/// the state of `epoch` with confirmed transcript hash `hash` and branch tag `tag`: `tag` if the
/// commit names that state, else its own (which matches none of ours).
fn external_tag_against(
    claimed: Vec<u8>,
    group: &GroupId,
    epoch: u64,
    hash: &[u8],
    tag: Vec<u8>,
) -> Vec<u8> {
    let named = external_tag(group.as_slice(), epoch, hash);
    if named == claimed { tag } else { claimed }
}
