//! Who may read and empty a mailbox: the device it belongs to, and nobody else.
//!
//! The holder issues a random challenge to one requesting peer for one mailbox. The device
//! answers with its credential and an Ed25519 signature, by the MLS signature key its
//! certificate covers, over `label ‖ holder peer ‖ requester peer ‖ mailbox ‖ challenge`. The
//! holder checks that the certificate is signed by the identity key it names, that the
//! mailbox is the one derived from that user and device, and the signature. Binding both peer
//! ids means a proof seen by one holder cannot be replayed to another holder or from another
//! connection (noise authenticates peer ids); the challenge expires after
//! [`CHALLENGE_LIFETIME_MS`], and serves every page and the acknowledgement of one fetch.

use std::collections::HashMap;

use core_identity::{DeviceIdentity, SpacePandaCredential, VerifiedMember, verify_credential};
use ed25519_dalek::{Signature, VerifyingKey};
use libp2p::PeerId;
use rand::RngCore as _;
use spacepanda_core::Timestamp;

use super::MailboxKey;
use crate::wire::AccessProof;

const ACCESS_LABEL: &[u8] = b"spacepanda/mbox-access/v1\0";

/// How long a challenge stays valid (ms): one fetch with its pages and its acknowledgement.
pub(crate) const CHALLENGE_LIFETIME_MS: u64 = 120_000;

/// Challenges a holder keeps at once; past it the oldest are forgotten (their fetches start
/// again with a new challenge), so a peer asking for many cannot grow the holder's memory.
const MAX_OPEN_CHALLENGES: usize = 4096;

fn access_message(
    holder: &PeerId,
    requester: &PeerId,
    mailbox: &MailboxKey,
    nonce: &[u8; 32],
) -> Vec<u8> {
    let holder = holder.to_bytes();
    let requester = requester.to_bytes();
    let mut message = Vec::with_capacity(ACCESS_LABEL.len() + 2 * 40 + 64 + 4);
    message.extend_from_slice(ACCESS_LABEL);
    // Peer ids vary in length: prefix each with its length so the parts cannot shift.
    for part in [holder.as_slice(), requester.as_slice()] {
        message.extend_from_slice(&(part.len() as u16).to_be_bytes());
        message.extend_from_slice(part);
    }
    message.extend_from_slice(mailbox.as_bytes());
    message.extend_from_slice(nonce);
    message
}

/// The proof `device` (running as `requester`) gives `holder` for its own mailbox.
pub(crate) fn prove(
    device: &DeviceIdentity,
    holder: &PeerId,
    requester: &PeerId,
    nonce: [u8; 32],
) -> AccessProof {
    let mailbox = MailboxKey::of(&device.user_id(), &device.device_id());
    prove_for(device, holder, requester, &mailbox, nonce)
}

/// A proof signed by `device` for any `mailbox` (only its own is accepted anywhere).
pub(crate) fn prove_for(
    device: &DeviceIdentity,
    holder: &PeerId,
    requester: &PeerId,
    mailbox: &MailboxKey,
    nonce: [u8; 32],
) -> AccessProof {
    let signature = device
        .signature_key_pair()
        .sign(&access_message(holder, requester, mailbox, &nonce));
    AccessProof {
        credential: device.credential_bytes().to_vec(),
        nonce,
        signature: signature.to_vec(),
    }
}

/// Checks `proof` for `mailbox`, presented by `requester` to `holder`: the device it proves,
/// or why not. (Whether the nonce is one this holder issued is [`Challenges::check`]'s job.)
pub(crate) fn verify(
    proof: &AccessProof,
    holder: &PeerId,
    requester: &PeerId,
    mailbox: &MailboxKey,
) -> Result<VerifiedMember, String> {
    let credential = SpacePandaCredential::from_bytes(&proof.credential)
        .map_err(|e| format!("the credential does not decode: {e}"))?;
    let key = *credential.certificate().signature_public_key();
    let member = verify_credential(&credential, &key)
        .map_err(|e| format!("the credential does not verify: {e}"))?;
    if MailboxKey::of(&member.user_id(), &member.device_id()) != *mailbox {
        return Err("the credential is for another device's mailbox".into());
    }
    let signature: [u8; 64] = proof
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| "the signature is not 64 bytes".to_string())?;
    let verifying =
        VerifyingKey::from_bytes(&key).map_err(|_| "the certified key is not a valid key")?;
    verifying
        .verify_strict(
            &access_message(holder, requester, mailbox, &proof.nonce),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| "the signature does not verify under the device's certified key")?;
    Ok(member)
}

/// The challenges a holder has issued and not yet seen expire.
#[derive(Default)]
pub(crate) struct Challenges {
    open: HashMap<(PeerId, MailboxKey), ([u8; 32], Timestamp)>,
}

impl Challenges {
    /// A fresh challenge for `requester` on `mailbox` (replacing an earlier one).
    pub(crate) fn issue(
        &mut self,
        requester: PeerId,
        mailbox: MailboxKey,
        now: Timestamp,
    ) -> [u8; 32] {
        self.forget_expired(now);
        if self.open.len() >= MAX_OPEN_CHALLENGES
            && let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, (_, issued))| *issued)
                .map(|(key, _)| *key)
        {
            self.open.remove(&oldest);
        }
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.open.insert((requester, mailbox), (nonce, now));
        nonce
    }

    /// Whether `nonce` is the open, unexpired challenge of `requester` on `mailbox`.
    pub(crate) fn check(
        &self,
        requester: PeerId,
        mailbox: MailboxKey,
        nonce: &[u8; 32],
        now: Timestamp,
    ) -> bool {
        self.open
            .get(&(requester, mailbox))
            .is_some_and(|(open, issued)| {
                open == nonce && now.unix_millis() <= issued.unix_millis() + CHALLENGE_LIFETIME_MS
            })
    }

    fn forget_expired(&mut self, now: Timestamp) {
        self.open.retain(|_, (_, issued)| {
            now.unix_millis() <= issued.unix_millis() + CHALLENGE_LIFETIME_MS
        });
    }
}
