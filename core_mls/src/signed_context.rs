//! The envelope contexts this device writes, signed by its device key, so that a relay can
//! neither forge nor alter what they say: building them (commit and Welcome envelopes, and
//! Welcomes sent again when a left branch wins again) and checking them.
//!
//! The envelope's context is outside the MLS message (see `envelope`), so on its own it is an
//! unauthenticated claim. Each context is therefore signed with the sender's leaf signature key
//! (its certified device key), which the receiver reads from the group: a context whose
//! signature fails is an error for that copy alone — it is never recorded as seen, so the
//! genuine copy is still processed when it arrives.
//!
//! # Wire formats
//!
//! ```text
//! CommitClaim (context of a commit) {
//!     opaque magic[4] = "SPcc"; uint8 version = 2 (1 is also read: no judged epochs);
//!     uint8 ref_len; opaque commit_ref[ref_len];
//!     uint16 count; Entry judged[count];     // version 2 only
//!     opaque signature[64];   // Ed25519 over "spacepanda commit claim v1" ‖ u64 BE len(group id)
//!                             //   ‖ group id ‖ u64 BE epoch ‖ everything above the signature
//! }
//! BranchHistory (context of a Welcome) {
//!     opaque magic[4] = "SPbh"; uint8 version = 1;
//!     uint16 count; Entry entries[count];
//!     // Entry: uint64 epoch; Rank merged; uint16 others_count; Rank others[others_count];
//!     // Rank: uint8 ref_len; opaque commit_ref[ref_len]; uint32 committer;
//!     //   opaque priority[16]; uint16 removes_count; uint32 removes[removes_count]
//!     opaque signature[64];   // Ed25519 over "spacepanda branch history v1" ‖ u64 BE
//!                             //   len(group id) ‖ group id ‖ u64 BE epoch ‖ everything above
//!                             //   the signature
//! }
//! ```
//!
//! `epoch` in a commit claim is the epoch the commit was made in; in a branch history, the epoch
//! the Welcome joins at. Only a member the commit removes reads the claim's commit ref (it
//! cannot compute the ref itself); every other receiver computes the ref. What every receiver
//! reads is `judged`: the epochs before the commit where its committer judged more than one
//! commit (at most [`JUDGED_EPOCHS`], newest), which it adds to what it knows of those epochs
//! (`branch_lineage::learn`). A device that joined after a fork learns that way of a commit its
//! Welcome's sender had not seen, and judges a later Welcome of a losing branch by every commit
//! of the epoch where the branches part, as the members that saw them all did. A claim that
//! does not verify teaches nothing, and the commit is still processed: a relay can withhold
//! what a claim says, never alter it.

use openmls::prelude::{OpenMlsProvider as _, SignatureScheme};
use openmls_traits::crypto::OpenMlsCrypto as _;

use core_identity::{DeviceId, UserId};
use openmls::prelude::MlsMessageOut;
use tls_codec::Serialize as _;

use crate::branch_order::{BranchHistory, CommitRank, EpochBranch, PRIORITY_LEN};
use crate::branch_records::epoch_snapshots;
use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::envelope::EnvelopeKind;
use crate::error::MlsError;
use crate::events::{DeviceAddress, Outbound, Recipients};
use crate::group_id::GroupId;

const CLAIM_MAGIC: [u8; 4] = *b"SPcc";
const HISTORY_MAGIC: [u8; 4] = *b"SPbh";
const VERSION: u8 = 1;
/// The commit claim's version: 2 carries the judged epochs.
const CLAIM_VERSION: u8 = 2;
/// How many judged epochs a commit claim carries at most (the newest): a fork older than the
/// last few contested epochs is long settled.
pub(crate) const JUDGED_EPOCHS: usize = 16;
const SIGNATURE_LEN: usize = 64;
const CLAIM_LABEL: &[u8] = b"spacepanda commit claim v1";
const HISTORY_LABEL: &[u8] = b"spacepanda branch history v1";

/// What a signature covers: a label, the group and epoch it is about, and the signed body.
pub(crate) fn signed_payload(label: &[u8], group_id: &[u8], epoch: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + 16 + group_id.len() + body.len());
    out.extend_from_slice(label);
    out.extend_from_slice(&(group_id.len() as u64).to_be_bytes());
    out.extend_from_slice(group_id);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A signed context, split into what was signed and the signature, before it is verified.
pub(crate) struct Unverified<T> {
    /// What the context says, once the signature holds.
    pub(crate) value: T,
    /// The bytes the signature covers (see [`signed_payload`]).
    pub(crate) payload: Vec<u8>,
    /// The Ed25519 signature.
    pub(crate) signature: Vec<u8>,
}

/// A signed context split into its body and the signature that ends it.
fn split_signature(context: &[u8]) -> Option<(&[u8], &[u8])> {
    let body_len = context.len().checked_sub(SIGNATURE_LEN)?;
    Some(context.split_at(body_len))
}

/// What a commit's context says (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitClaim {
    /// The commit's ref (the confirmed transcript hash of the epoch it starts).
    pub(crate) commit_ref: Vec<u8>,
    /// Epochs before the commit where its committer judged more than one commit.
    pub(crate) judged: BranchHistory,
}

/// The body of a commit claim (before the signature).
fn claim_body(commit_ref: &[u8], judged: &[(u64, EpochBranch)]) -> Option<Vec<u8>> {
    let len = u8::try_from(commit_ref.len()).ok()?;
    let mut body = Vec::with_capacity(8 + commit_ref.len());
    body.extend_from_slice(&CLAIM_MAGIC);
    body.push(CLAIM_VERSION);
    body.push(len);
    body.extend_from_slice(commit_ref);
    put_entries(&mut body, judged)?;
    Some(body)
}

/// A commit claim, signed with `sign`. `None` if it does not fit the format (refs are 32
/// bytes; `judged` is a few epochs).
pub(crate) fn encode_claim(
    group_id: &[u8],
    epoch: u64,
    commit_ref: &[u8],
    judged: &[(u64, EpochBranch)],
    sign: impl Fn(&[u8]) -> [u8; SIGNATURE_LEN],
) -> Option<Vec<u8>> {
    let mut body = claim_body(commit_ref, judged)?;
    let signature = sign(&signed_payload(CLAIM_LABEL, group_id, epoch, &body));
    body.extend_from_slice(&signature);
    Some(body)
}

/// Reads a commit claim; `None` if the bytes are not one.
pub(crate) fn decode_claim(
    context: &[u8],
    group_id: &[u8],
    epoch: u64,
) -> Option<Unverified<CommitClaim>> {
    let (body, signature) = split_signature(context)?;
    let mut reader = Reader(body.strip_prefix(&CLAIM_MAGIC)?);
    let version = reader.u8()?;
    let len = reader.u8()?;
    let commit_ref = reader.take(usize::from(len))?.to_vec();
    let judged = match version {
        VERSION => Vec::new(),
        CLAIM_VERSION => read_entries(&mut reader)?,
        _ => return None,
    };
    if !reader.0.is_empty() {
        return None;
    }
    Some(Unverified {
        value: CommitClaim { commit_ref, judged },
        payload: signed_payload(CLAIM_LABEL, group_id, epoch, body),
        signature: signature.to_vec(),
    })
}

fn history_body(history: &[(u64, EpochBranch)]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(&HISTORY_MAGIC);
    body.push(VERSION);
    put_entries(&mut body, history)?;
    Some(body)
}

/// A count, then each epoch with its merged commit and the others judged there.
fn put_entries(body: &mut Vec<u8>, entries: &[(u64, EpochBranch)]) -> Option<()> {
    body.extend_from_slice(&u16::try_from(entries.len()).ok()?.to_be_bytes());
    for (epoch, branch) in entries {
        body.extend_from_slice(&epoch.to_be_bytes());
        put_rank(body, &branch.merged)?;
        body.extend_from_slice(&u16::try_from(branch.others.len()).ok()?.to_be_bytes());
        for other in &branch.others {
            put_rank(body, other)?;
        }
    }
    Some(())
}

fn read_entries(reader: &mut Reader<'_>) -> Option<BranchHistory> {
    let count = reader.u16()?;
    let mut entries = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let entry_epoch = u64::from_be_bytes(reader.array()?);
        let merged = read_rank(reader)?;
        let others_count = reader.u16()?;
        let mut others = Vec::with_capacity(usize::from(others_count).min(16));
        for _ in 0..others_count {
            others.push(read_rank(reader)?);
        }
        entries.push((entry_epoch, EpochBranch { merged, others }));
    }
    Some(entries)
}

fn put_rank(body: &mut Vec<u8>, rank: &CommitRank) -> Option<()> {
    body.push(u8::try_from(rank.commit_ref.len()).ok()?);
    body.extend_from_slice(&rank.commit_ref);
    body.extend_from_slice(&rank.committer.to_be_bytes());
    body.extend_from_slice(&rank.priority);
    body.extend_from_slice(&u16::try_from(rank.removes.len()).ok()?.to_be_bytes());
    for removed in &rank.removes {
        body.extend_from_slice(&removed.to_be_bytes());
    }
    Some(())
}

fn read_rank(reader: &mut Reader<'_>) -> Option<CommitRank> {
    let ref_len = usize::from(reader.u8()?);
    let commit_ref = reader.take(ref_len)?.to_vec();
    let committer = u32::from_be_bytes(reader.array()?);
    let priority: [u8; PRIORITY_LEN] = reader.array()?;
    let removes_count = reader.u16()?;
    let mut removes = Vec::with_capacity(usize::from(removes_count).min(64));
    for _ in 0..removes_count {
        removes.push(u32::from_be_bytes(reader.array()?));
    }
    Some(CommitRank {
        commit_ref,
        committer,
        removes,
        priority,
    })
}

/// A branch history, signed with `sign`. `None` if it does not fit the format (more than
/// 65 535 entries or removals: a fork window is a few epochs).
pub(crate) fn encode_history(
    group_id: &[u8],
    epoch: u64,
    history: &[(u64, EpochBranch)],
    sign: impl Fn(&[u8]) -> [u8; SIGNATURE_LEN],
) -> Option<Vec<u8>> {
    let mut body = history_body(history)?;
    let signature = sign(&signed_payload(HISTORY_LABEL, group_id, epoch, &body));
    body.extend_from_slice(&signature);
    Some(body)
}

/// Reads a branch history; `None` if the bytes are not one.
pub(crate) fn decode_history(
    context: &[u8],
    group_id: &[u8],
    epoch: u64,
) -> Option<Unverified<BranchHistory>> {
    let (body, signature) = split_signature(context)?;
    let mut reader = Reader(body.strip_prefix(&HISTORY_MAGIC)?);
    if reader.u8()? != VERSION {
        return None;
    }
    let history = read_entries(&mut reader)?;
    if !reader.0.is_empty() {
        return None;
    }
    Some(Unverified {
        value: history,
        payload: signed_payload(HISTORY_LABEL, group_id, epoch, body),
        signature: signature.to_vec(),
    })
}

impl MlsClient {
    /// Signs a context payload with this device's certified key (its leaf signature key).
    pub(crate) fn sign_context(&self, payload: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.device.signature_key_pair().sign(payload)
    }

    /// Whether `signature_key` (a leaf's Ed25519 key) signed `unverified`.
    pub(crate) fn context_signed_by<T>(
        &self,
        unverified: &Unverified<T>,
        signature_key: &[u8],
    ) -> bool {
        self.provider
            .crypto()
            .verify_signature(
                SignatureScheme::ED25519,
                &unverified.payload,
                signature_key,
                &unverified.signature,
            )
            .is_ok()
    }

    /// The commit ref `envelope` claims for a commit made in `epoch` of `group`, checked
    /// against the committer's key. A missing, malformed or forged claim rejects this copy
    /// (nothing is recorded: a genuine copy is still processed).
    pub(crate) fn verified_claim(
        &self,
        group: &GroupId,
        envelope: &Envelope,
        epoch: u64,
        committer_key: &[u8],
    ) -> Result<Vec<u8>, MlsError> {
        let rejected = |reason: &str| MlsError::RejectedMessage {
            group: group.clone(),
            reason: reason.into(),
        };
        let claim = decode_claim(envelope.context(), group.as_slice(), epoch).ok_or_else(|| {
            rejected("a commit that removes this device carries no commit ref claim")
        })?;
        if !self.context_signed_by(&claim, committer_key) {
            return Err(rejected(
                "the commit ref claim is not signed by the committer (altered in transit?)",
            ));
        }
        Ok(claim.value.commit_ref)
    }

    /// The epochs the committer of a commit made in `epoch` of `group` judged more than one
    /// commit in, as its signed claim says. Empty if `envelope` carries no claim, or one that
    /// does not verify: it teaches nothing then, and the commit is processed all the same.
    pub(crate) fn judged_by_committer(
        &self,
        group: &GroupId,
        envelope: &Envelope,
        epoch: u64,
        committer_key: &[u8],
    ) -> BranchHistory {
        match decode_claim(envelope.context(), group.as_slice(), epoch) {
            // Nothing to teach, nothing to verify: most commits, outside forks.
            Some(claim)
                if !claim.value.judged.is_empty()
                    && self.context_signed_by(&claim, committer_key) =>
            {
                claim.value.judged
            }
            _ => Vec::new(),
        }
    }

    /// The branch history a Welcome for `group` at `epoch` carries, checked against the key of
    /// the member who sent it. `Ok(None)`: no history at all (a Welcome from an MLS client that
    /// is not SpacePanda). A malformed or forged one rejects this copy.
    pub(crate) fn verified_history(
        &self,
        group: &GroupId,
        envelope: &Envelope,
        epoch: u64,
        sender_key: &[u8],
    ) -> Result<Option<BranchHistory>, MlsError> {
        if envelope.context().is_empty() {
            return Ok(None);
        }
        let invalid = |reason: &str| MlsError::InvalidWelcome {
            reason: reason.into(),
        };
        let history = decode_history(envelope.context(), group.as_slice(), epoch)
            .ok_or_else(|| invalid("the Welcome's branch history is malformed"))?;
        if !self.context_signed_by(&history, sender_key) {
            return Err(invalid(
                "the Welcome's branch history is not signed by its sender (altered in transit?)",
            ));
        }
        Ok(Some(history.value))
    }
}

impl MlsClient {
    /// The envelope of our commit made in `commit_epoch`, with its signed commit ref claim
    /// (read by the members it removes; see `signed_context`).
    pub(crate) fn commit_envelope(
        &self,
        group: &GroupId,
        commit_epoch: u64,
        rank: &CommitRank,
        commit: &MlsMessageOut,
    ) -> Result<Envelope, MlsError> {
        let judged = self.contested_history(group, commit_epoch)?;
        let claim = encode_claim(
            group.as_slice(),
            commit_epoch,
            &rank.commit_ref,
            &judged,
            |payload| self.sign_context(payload),
        )
        .ok_or(MlsError::Internal {
            what: "a commit ref does not fit a claim",
        })?;
        crate::mls_wire::encode_with_context(EnvelopeKind::Commit, commit, &claim)
    }

    /// The envelope of a Welcome into `group` at `epoch`, with our branch history, signed.
    pub(crate) fn welcome_envelope(
        &self,
        group: &GroupId,
        epoch: u64,
        welcome: &MlsMessageOut,
    ) -> Result<Envelope, MlsError> {
        let payload = welcome
            .tls_serialize_detached()
            .map_err(|e| MlsError::openmls("encode an MLS message", e))?;
        self.welcome_with_history(group, epoch, payload)
    }

    /// A Welcome (TLS-encoded) into `group` at `epoch`, with our branch history over the
    /// epochs before it as this device knows it now, signed.
    fn welcome_with_history(
        &self,
        group: &GroupId,
        epoch: u64,
        payload: Vec<u8>,
    ) -> Result<Envelope, MlsError> {
        self.welcome_with_given_history(group, epoch, &self.branch_history(group)?, payload)
    }

    /// A Welcome (TLS-encoded) into `group` at `epoch` with `history` over the epochs before
    /// it, signed by this device.
    pub(crate) fn welcome_with_given_history(
        &self,
        group: &GroupId,
        epoch: u64,
        history: &[(u64, EpochBranch)],
        payload: Vec<u8>,
    ) -> Result<Envelope, MlsError> {
        let history: Vec<(u64, EpochBranch)> = history
            .iter()
            .filter(|(e, _)| *e < epoch)
            .cloned()
            .collect();
        let history = encode_history(group.as_slice(), epoch, &history, |payload| {
            self.sign_context(payload)
        })
        .ok_or(MlsError::Internal {
            what: "a branch history does not fit its format",
        })?;
        Ok(Envelope::with_context(
            EnvelopeKind::Welcome,
            payload,
            &history,
        ))
    }

    /// Inside the open transaction, after `group` went back to a branch this device had left at
    /// `fork_epoch`: the Welcomes it sent on that branch go out again with the branch history
    /// it knows now. The invited devices may have refused them on what the history said then
    /// (it did not yet know the commit that made this branch win again).
    pub(crate) fn resend_welcomes(
        &self,
        group: &GroupId,
        fork_epoch: u64,
    ) -> Result<Vec<Outbound>, MlsError> {
        let mut outbound = Vec::new();
        for (epoch, meta) in self.read(|txn| epoch_snapshots::metas(txn, group))? {
            if epoch < fork_epoch {
                continue;
            }
            let Some(sent) = self.read(|txn| epoch_snapshots::welcome(txn, group, epoch, &meta))?
            else {
                continue;
            };
            let envelope =
                self.welcome_with_history(group, epoch.saturating_add(1), sent.payload)?;
            let devices = sent
                .to
                .iter()
                .map(|(user, device)| DeviceAddress {
                    user_id: UserId::from_bytes(*user),
                    device_id: DeviceId::from_bytes(*device),
                })
                .collect();
            outbound.push(self.queue_outbound(
                Recipients {
                    group: Some(group.clone()),
                    devices,
                },
                envelope,
            )?);
        }
        Ok(outbound)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array::<2>().map(u16::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn fake_sign(payload: &[u8]) -> [u8; 64] {
        let hash = blake3::hash(payload);
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(hash.as_bytes());
        out
    }

    fn rank(r: u8) -> CommitRank {
        CommitRank {
            commit_ref: vec![r; 32],
            committer: u32::from(r),
            removes: vec![1, 2],
            priority: [r; PRIORITY_LEN],
        }
    }

    fn branch(r: u8, others: &[u8]) -> EpochBranch {
        EpochBranch {
            merged: rank(r),
            others: others.iter().map(|o| rank(*o)).collect(),
        }
    }

    #[test]
    fn histories_round_trip_and_the_payload_binds_group_and_epoch() {
        let history = vec![(3, branch(1, &[])), (4, branch(9, &[2, 7]))];
        let context = encode_history(b"group", 5, &history, fake_sign).unwrap();
        let read = decode_history(&context, b"group", 5).unwrap();
        assert_eq!(read.value, history);
        assert_eq!(read.signature, fake_sign(&read.payload).to_vec());
        let elsewhere = decode_history(&context, b"other group", 5).unwrap();
        assert_ne!(elsewhere.payload, read.payload);
        let later = decode_history(&context, b"group", 6).unwrap();
        assert_ne!(later.payload, read.payload);
        let mut truncated = context.clone();
        truncated.remove(10);
        assert!(decode_history(&truncated, b"group", 5).is_none());
        assert!(decode_history(&[], b"group", 5).is_none());
    }

    #[test]
    fn claims_round_trip_and_bad_bytes_are_none() {
        let judged = vec![(4, branch(9, &[2, 7]))];
        let context = encode_claim(b"g", 5, &[7; 32], &judged, fake_sign).unwrap();
        let read = decode_claim(&context, b"g", 5).unwrap();
        assert_eq!(read.value.commit_ref, vec![7; 32]);
        assert_eq!(read.value.judged, judged);
        assert_eq!(read.signature, fake_sign(&read.payload).to_vec());
        assert!(decode_claim(&[7; 32], b"g", 5).is_none(), "a bare ref");
        assert!(decode_claim(&context[1..], b"g", 5).is_none());
        let mut truncated = context.clone();
        truncated.remove(40);
        assert!(decode_claim(&truncated, b"g", 5).is_none());
    }

    #[test]
    fn a_version_1_claim_is_read_as_judging_nothing() {
        let mut body = CLAIM_MAGIC.to_vec();
        body.push(VERSION);
        body.push(32);
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&fake_sign(&signed_payload(CLAIM_LABEL, b"g", 2, &body)));
        let read = decode_claim(&body, b"g", 2).unwrap();
        assert_eq!(read.value.commit_ref, vec![7; 32]);
        assert!(read.value.judged.is_empty());
        assert_eq!(read.signature, fake_sign(&read.payload).to_vec());
    }
}
