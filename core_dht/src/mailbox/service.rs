//! The holder's side of mailboxes: answering deposits, challenges, fetches and
//! acknowledgements, and handing envelopes to the new closest peers when the set changes.
//!
//! Store work runs on `spawn_blocking` (a deposit is answered only after its redb commit),
//! one task per request, so a slow disk delays that request and not the swarm.

use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;
use spacepanda_core::Timestamp;
use tokio::sync::mpsc;

use super::access::{self, Challenges};
use super::holder_store::HolderStore;
use super::{EntryId, MailboxKey, MailboxRefusal};
use crate::network::event_loop::InboundRequest;
use crate::network::handle::{DhtHandle, WeakDhtHandle};
use crate::wire::{
    AccessProof, Handover, MAX_IDS, MAX_PAGE_ENVELOPES, PushRefusal, Request, Response,
    WireEnvelope,
};

/// The task that answers mailbox requests for one node.
pub(crate) struct MailboxService {
    node: WeakDhtHandle,
    holder: Arc<HolderStore>,
    challenges: Arc<Mutex<Challenges>>,
}

impl MailboxService {
    pub(crate) fn new(node: WeakDhtHandle, holder: Arc<HolderStore>) -> Self {
        Self {
            node,
            holder,
            challenges: Arc::new(Mutex::new(Challenges::default())),
        }
    }

    /// Answers requests until the node stops; hands envelopes over every
    /// [`handoff_interval`](crate::DhtConfig::handoff_interval).
    pub(crate) async fn run(self, mut requests: mpsc::Receiver<InboundRequest>) {
        let interval = self.node.config().handoff_interval;
        let mut handoff =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        handoff.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let handing_over = Arc::new(tokio::sync::Mutex::new(()));
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    let Some(node) = self.node.upgrade() else { break };
                    let holder = self.holder.clone();
                    let challenges = self.challenges.clone();
                    tokio::spawn(async move {
                        let token = request.token;
                        let response = answer(&node, &holder, &challenges, request).await;
                        let _ = node.respond(token, response).await;
                    });
                }
                _ = handoff.tick() => {
                    let Some(node) = self.node.upgrade() else { break };
                    // One round at a time; a round still running skips this tick.
                    if let Ok(guard) = handing_over.clone().try_lock_owned() {
                        let holder = self.holder.clone();
                        tokio::spawn(async move {
                            if let Err(e) = hand_over(&node, &holder).await {
                                tracing::debug!(error = %e, "mailbox hand-over round failed");
                            }
                            drop(guard);
                        });
                    }
                }
            }
        }
    }
}

async fn answer(
    node: &DhtHandle,
    holder: &Arc<HolderStore>,
    challenges: &Mutex<Challenges>,
    request: InboundRequest,
) -> Response {
    let now = node.clock().now();
    let peer = request.peer;
    match request.request {
        Request::Push { .. }
        | Request::RecentCommits { .. }
        | Request::GroupInfo { .. }
        | Request::OwnGroups { .. } => Response::PushRefused(PushRefusal::NotHere),
        Request::Deposit {
            mailbox,
            envelope,
            handover,
        } => {
            let (sender, expires_at) = match handover {
                Some(Handover {
                    sender,
                    expires_at_ms,
                }) => (sender, Some(Timestamp::from_unix_millis(expires_at_ms))),
                None => (peer.to_bytes(), None),
            };
            let holder = holder.clone();
            blocking(move || {
                Ok(
                    match holder.deposit(&mailbox, &envelope, &sender, expires_at, now) {
                        Ok(outcome) => Response::Deposited(outcome),
                        Err(refusal) => Response::DepositRefused(refusal),
                    },
                )
            })
            .await
            .unwrap_or_else(|reason| {
                Response::DepositRefused(MailboxRefusal::HolderFailed { reason })
            })
        }
        Request::Challenge { mailbox } => Response::Challenge {
            nonce: challenges
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .issue(peer, mailbox, now),
        },
        Request::Fetch {
            mailbox,
            proof,
            after,
        } => {
            if let Err(reason) = authorize(node, challenges, peer, &mailbox, &proof, now) {
                return Response::AccessDenied { reason };
            }
            let holder = holder.clone();
            let page_bytes = node.config().fetch_page_bytes;
            blocking(move || {
                let (page, more) =
                    holder.page(&mailbox, after, MAX_PAGE_ENVELOPES, page_bytes, now)?;
                Ok(Response::Envelopes {
                    envelopes: page
                        .into_iter()
                        .map(|held| WireEnvelope {
                            id: held.id,
                            bytes: held.bytes,
                        })
                        .collect(),
                    more,
                })
            })
            .await
            .unwrap_or_else(|reason| Response::Failed { reason })
        }
        Request::Ack {
            mailbox,
            proof,
            ids,
        } => {
            if let Err(reason) = authorize(node, challenges, peer, &mailbox, &proof, now) {
                return Response::AccessDenied { reason };
            }
            if ids.len() > MAX_IDS {
                return Response::Failed {
                    reason: format!("at most {MAX_IDS} ids per acknowledgement"),
                };
            }
            let holder = holder.clone();
            blocking(move || {
                let deleted = holder.acknowledge(&mailbox, &ids, now)?;
                Ok(Response::Acked {
                    deleted: deleted as u64,
                })
            })
            .await
            .unwrap_or_else(|reason| Response::Failed { reason })
        }
        Request::Holds { mailbox, ids } => {
            if ids.len() > MAX_IDS {
                return Response::Failed {
                    reason: format!("at most {MAX_IDS} ids per question"),
                };
            }
            let holder = holder.clone();
            blocking(move || {
                Ok(Response::Missing {
                    ids: holder.missing(&mailbox, &ids, now)?,
                })
            })
            .await
            .unwrap_or_else(|reason| Response::Failed { reason })
        }
    }
}

/// The proof must answer this holder's open challenge to that peer, and verify.
fn authorize(
    node: &DhtHandle,
    challenges: &Mutex<Challenges>,
    peer: PeerId,
    mailbox: &MailboxKey,
    proof: &AccessProof,
    now: Timestamp,
) -> Result<(), String> {
    let open = challenges
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .check(peer, *mailbox, &proof.nonce, now);
    if !open {
        return Err("no open challenge matches: ask for a new one".into());
    }
    access::verify(proof, &node.peer_id(), &peer, mailbox).map(|_| ())
}

/// Runs store work off the async runtime; an error becomes its message (no content).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> crate::DhtResult<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the store task failed: {e}")),
    }
}

/// One hand-over round: forget what expired, then for every mailbox held, make sure the
/// current closest peers hold what this node holds (asking first, sending only what they
/// lack), and drop the mailbox here once this node is no longer among them and a quorum of
/// them has everything.
async fn hand_over(node: &DhtHandle, holder: &Arc<HolderStore>) -> crate::DhtResult<()> {
    let now = node.clock().now();
    let (mailboxes, _) = {
        let holder = holder.clone();
        blocking(move || Ok((holder.mailboxes()?, holder.sweep(now)?)))
            .await
            .map_err(|reason| crate::DhtError::Unreachable { reason })?
    };
    let config = node.config().clone();
    let local = node.peer_id();
    for mailbox in mailboxes {
        let Ok(peers) = node
            .closest_peers(mailbox.as_bytes().to_vec(), config.mailbox_holders)
            .await
        else {
            continue;
        };
        let target = libp2p::kad::KBucketKey::new(mailbox.as_bytes().to_vec());
        let mut set = peers;
        set.push(local);
        set.sort_by_key(|peer| target.distance(&libp2p::kad::KBucketKey::from(*peer)));
        set.truncate(config.mailbox_holders);
        let still_holder = set.contains(&local);
        let entries = {
            let holder = holder.clone();
            match blocking(move || holder.all_in(&mailbox, now)).await {
                Ok(entries) => entries,
                Err(_) => continue,
            }
        };
        if entries.is_empty() {
            continue;
        }
        let mut complete = 0;
        for peer in set.iter().filter(|peer| **peer != local) {
            if give(node, *peer, mailbox, &entries).await {
                complete += 1;
            }
        }
        let others = set.len().saturating_sub(usize::from(still_holder));
        if !still_holder && others > 0 && complete >= config.deposit_quorum(others) {
            let holder = holder.clone();
            let dropped = blocking(move || holder.drop_mailbox(&mailbox)).await;
            tracing::debug!(?mailbox, ?dropped, "handed a mailbox over");
        }
    }
    Ok(())
}

/// Gives `peer` the entries it lacks; whether it then holds them all.
async fn give(
    node: &DhtHandle,
    peer: PeerId,
    mailbox: MailboxKey,
    entries: &[super::holder_store::HeldEnvelope],
) -> bool {
    let mut all_held = true;
    for chunk in entries.chunks(MAX_IDS) {
        let ids: Vec<EntryId> = chunk.iter().map(|entry| entry.id).collect();
        let missing = match node
            .request(peer, Vec::new(), Request::Holds { mailbox, ids })
            .await
        {
            Ok(Response::Missing { ids }) => {
                ids.into_iter().collect::<std::collections::HashSet<_>>()
            }
            _ => return false,
        };
        for entry in chunk.iter().filter(|entry| missing.contains(&entry.id)) {
            let request = Request::Deposit {
                mailbox,
                envelope: entry.bytes.clone(),
                handover: Some(Handover {
                    sender: entry.sender.clone(),
                    expires_at_ms: entry.expires_at.unix_millis(),
                }),
            };
            match node.request(peer, Vec::new(), request).await {
                Ok(Response::Deposited(_)) => {}
                _ => all_held = false,
            }
        }
    }
    all_held
}
