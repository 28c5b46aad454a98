//! The mailbox from the other two sides: a sender depositing, and the owner fetching and
//! acknowledging.

use std::collections::HashMap;

use core_identity::DeviceIdentity;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;

use super::{EntryId, MailboxKey, MailboxRefusal, access};
use crate::error::{DhtError, DhtResult};
use crate::network::handle::DhtHandle;
use crate::wire::{AccessProof, MAX_IDS, Request, Response};

/// Pages one fetch reads from one holder at most (each up to `fetch_page_bytes`).
const MAX_PAGES: usize = 64;

/// How a deposit went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositReport {
    /// Holders asked (the closest first, the next ones for each that failed).
    pub asked: usize,
    /// Holders that confirmed durable storage.
    pub stored: usize,
    /// Confirmations required.
    pub needed: usize,
}

/// The peers a deposit in `mailbox` goes to, closest first: twice
/// [`mailbox_holders`](crate::DhtConfig::mailbox_holders), so there are replacements for
/// holders that cannot be reached.
pub(crate) async fn deposit_candidates(
    node: &DhtHandle,
    mailbox: MailboxKey,
) -> DhtResult<Vec<PeerId>> {
    node.closest_peers(
        mailbox.as_bytes().to_vec(),
        node.config().mailbox_holders * 2,
    )
    .await
}

/// Deposits `envelope` in `mailbox` with `candidates` (from [`deposit_candidates`]): with the
/// first [`mailbox_holders`](crate::DhtConfig::mailbox_holders), moving on to the next for
/// each that cannot be reached or refuses. It counts once a majority confirmed
/// ([`DhtConfig::deposit_quorum`](crate::DhtConfig::deposit_quorum)), but returns only when
/// every holder asked has answered (each within the request timeout): every copy made now is
/// one more that survives churn before the next hand-over, and a sender that goes offline
/// right after must not cut the others off.
pub(crate) async fn deposit(
    node: &DhtHandle,
    mailbox: MailboxKey,
    envelope: &[u8],
    candidates: Vec<PeerId>,
) -> DhtResult<DepositReport> {
    let wanted = node.config().mailbox_holders;
    let needed = node.config().deposit_quorum(candidates.len());
    let envelope = std::sync::Arc::new(envelope.to_vec());
    let ask = |peer: PeerId| {
        let (node, envelope) = (node.clone(), envelope.clone());
        async move {
            let request = Request::Deposit {
                mailbox,
                envelope: envelope.as_ref().clone(),
                handover: None,
            };
            node.request(peer, Vec::new(), request).await
        }
    };
    let mut remaining = candidates.into_iter();
    let mut in_flight = FuturesUnordered::new();
    for peer in remaining.by_ref().take(wanted) {
        in_flight.push(ask(peer));
    }
    let mut asked = in_flight.len();
    let mut stored = 0;
    let mut refusals: Vec<MailboxRefusal> = Vec::new();
    while let Some(result) = in_flight.next().await {
        match result {
            Ok(Response::Deposited(_)) => stored += 1,
            other => {
                if let Ok(Response::DepositRefused(refusal)) = other {
                    refusals.push(refusal);
                }
                if let Some(peer) = remaining.next() {
                    asked += 1;
                    in_flight.push(ask(peer));
                }
            }
        }
    }
    if stored >= needed {
        return Ok(DepositReport {
            asked,
            stored,
            needed,
        });
    }
    match refusals.into_iter().next() {
        Some(refusal) => Err(DhtError::DepositRefused {
            refusal,
            stored,
            needed,
        }),
        None => Err(DhtError::MailboxUnreachable {
            stored,
            needed,
            asked,
        }),
    }
}

/// One envelope fetched, with the holders that returned it.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) id: EntryId,
    pub(crate) bytes: Vec<u8>,
}

/// What one fetch gathered.
#[derive(Debug, Default)]
pub(crate) struct FetchRound {
    /// Every distinct envelope, in the order the holders received them.
    pub(crate) envelopes: Vec<Fetched>,
    /// Holders asked.
    pub(crate) asked: usize,
    /// Holders that let us read (each with the proof to acknowledge with).
    pub(crate) sessions: Vec<(PeerId, AccessProof)>,
    /// Envelopes a holder returned under a name that is not theirs (altered).
    pub(crate) altered: usize,
    /// Holders that refused access, with their reason.
    pub(crate) denied: Vec<String>,
}

/// Reads this device's mailbox from its holders (the closest `2 × mailbox_holders` peers:
/// after churn, envelopes may still sit with a holder that is not among the closest few).
pub(crate) async fn fetch(node: &DhtHandle, device: &DeviceIdentity) -> DhtResult<FetchRound> {
    let mailbox = MailboxKey::of(&device.user_id(), &device.device_id());
    let holders = node
        .closest_peers(
            mailbox.as_bytes().to_vec(),
            node.config().mailbox_holders * 2,
        )
        .await?;
    let mut round = FetchRound {
        asked: holders.len(),
        ..FetchRound::default()
    };
    let mut reads: FuturesUnordered<_> = holders
        .into_iter()
        .map(|holder| read_holder(node, device, mailbox, holder))
        .collect();
    let mut lists: Vec<Vec<(EntryId, Vec<u8>)>> = Vec::new();
    while let Some(read) = reads.next().await {
        match read {
            HolderRead::Read {
                holder,
                proof,
                envelopes,
                altered,
            } => {
                round.altered += altered;
                lists.push(envelopes);
                round.sessions.push((holder, proof));
            }
            HolderRead::Denied(reason) => round.denied.push(reason),
            HolderRead::Unavailable => {}
        }
    }
    round.envelopes = merge_in_order(lists)
        .into_iter()
        .map(|(id, bytes)| Fetched { id, bytes })
        .collect();
    Ok(round)
}

/// Merges the holders' lists, each in its holder's arrival order, into one list that keeps
/// every list's order where they agree: the longest is the base, and an envelope it lacks goes
/// right after the envelope that precedes it in the list that has it. (A sender deposits one
/// envelope after the other, so honest holders agree; the engine tolerates the little
/// disorder that remains.)
fn merge_in_order(mut lists: Vec<Vec<(EntryId, Vec<u8>)>>) -> Vec<(EntryId, Vec<u8>)> {
    lists.sort_by_key(|list| std::cmp::Reverse(list.len()));
    let mut lists = lists.into_iter();
    let mut merged: Vec<(EntryId, Vec<u8>)> = Vec::new();
    let mut positions: HashMap<EntryId, usize> = HashMap::new();
    if let Some(base) = lists.next() {
        for (id, bytes) in base {
            if let std::collections::hash_map::Entry::Vacant(slot) = positions.entry(id) {
                slot.insert(merged.len());
                merged.push((id, bytes));
            }
        }
    }
    for list in lists {
        let mut previous: Option<usize> = None;
        for (id, bytes) in list {
            if let Some(position) = positions.get(&id) {
                previous = Some(*position);
                continue;
            }
            let at = previous.map_or(0, |p| p + 1);
            merged.insert(at, (id, bytes));
            // Positions at and after `at` moved by one.
            for position in positions.values_mut() {
                if *position >= at {
                    *position += 1;
                }
            }
            positions.insert(id, at);
            previous = Some(at);
        }
    }
    merged
}

enum HolderRead {
    Read {
        holder: PeerId,
        proof: AccessProof,
        envelopes: Vec<(EntryId, Vec<u8>)>,
        altered: usize,
    },
    Denied(String),
    Unavailable,
}

async fn read_holder(
    node: &DhtHandle,
    device: &DeviceIdentity,
    mailbox: MailboxKey,
    holder: PeerId,
) -> HolderRead {
    let nonce = match node
        .request(holder, Vec::new(), Request::Challenge { mailbox })
        .await
    {
        Ok(Response::Challenge { nonce }) => nonce,
        _ => return HolderRead::Unavailable,
    };
    let proof = access::prove(device, &holder, &node.peer_id(), nonce);
    let mut envelopes = Vec::new();
    let mut altered = 0;
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let request = Request::Fetch {
            mailbox,
            proof: proof.clone(),
            after,
        };
        match node.request(holder, Vec::new(), request).await {
            Ok(Response::Envelopes {
                envelopes: page,
                more,
            }) => {
                let Some(last) = page.last().map(|envelope| envelope.id) else {
                    break;
                };
                for envelope in page {
                    // The holder cannot read or forge MLS content, but it could alter the
                    // bytes: anything not named by its own hash is dropped here, and the
                    // engine checks the rest.
                    if EntryId::of(&envelope.bytes) == envelope.id {
                        envelopes.push((envelope.id, envelope.bytes));
                    } else {
                        altered += 1;
                    }
                }
                after = Some(last);
                if !more {
                    break;
                }
            }
            Ok(Response::AccessDenied { reason }) => return HolderRead::Denied(reason),
            _ => break,
        }
    }
    if altered > 0 {
        tracing::warn!(%holder, altered, "a mailbox holder returned altered envelopes");
    }
    HolderRead::Read {
        holder,
        proof,
        envelopes,
        altered,
    }
}

/// Deletes `ids` at every holder of `round` (an acknowledgement deletes at each holder that
/// lets us in; the rest expire, and hand-overs skip what was acknowledged). Returns how many
/// holders confirmed.
pub(crate) async fn acknowledge(
    node: &DhtHandle,
    device: &DeviceIdentity,
    sessions: &[(PeerId, AccessProof)],
    ids: &[EntryId],
) -> usize {
    if ids.is_empty() {
        return 0;
    }
    let mailbox = MailboxKey::of(&device.user_id(), &device.device_id());
    let mut acks: FuturesUnordered<_> = sessions
        .iter()
        .map(|(holder, proof)| async move {
            for chunk in ids.chunks(MAX_IDS) {
                let request = Request::Ack {
                    mailbox,
                    proof: proof.clone(),
                    ids: chunk.to_vec(),
                };
                if !matches!(
                    node.request(*holder, Vec::new(), request).await,
                    Ok(Response::Acked { .. })
                ) {
                    return false;
                }
            }
            true
        })
        .collect();
    let mut confirmed = 0;
    while let Some(ok) = acks.next().await {
        confirmed += usize::from(ok);
    }
    confirmed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn ids(n: u8) -> (EntryId, Vec<u8>) {
        (EntryId::of(&[n]), vec![n])
    }

    fn order(merged: &[(EntryId, Vec<u8>)]) -> Vec<u8> {
        merged.iter().map(|(_, bytes)| bytes[0]).collect()
    }

    #[test]
    fn merging_keeps_each_holders_order() {
        let a = vec![ids(1), ids(2), ids(4), ids(5)];
        let b = vec![ids(1), ids(3), ids(4), ids(6)];
        let c = vec![ids(0), ids(2)];
        let merged = merge_in_order(vec![c, a, b]);
        assert_eq!(order(&merged), vec![0, 1, 3, 2, 4, 6, 5]);
        let merged = merge_in_order(vec![vec![ids(7), ids(8)], vec![ids(7), ids(8)]]);
        assert_eq!(order(&merged), vec![7, 8], "duplicates across holders once");
        assert!(merge_in_order(Vec::new()).is_empty());
    }
}
