//! Getting the engine's outbox to every recipient device: pushed directly when the device is
//! online (its user record names its peer), deposited in its mailbox otherwise. An outbox
//! entry is acknowledged to the engine (`ack_sent`) only when every device has it or its
//! mailbox holders confirmed it; until then it stays in the durable outbox and is retried
//! with backoff, so neither a crash nor a network failure loses it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use core_identity::UserId;
use core_mls::{DeviceAddress, OutboxId};
use futures::future::join_all;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use super::{NodeEvent, Shared};
use crate::error::{DhtError, DhtResult};
use crate::mailbox::{MailboxKey, client};
use crate::records::UserRecord;
use crate::wire::{PushRefusal, Request, Response, WireDevice};

/// What the node remembers about entries it could not finish (memory only: after a restart
/// every pending entry is sent again to every device, and receivers drop the copies).
#[derive(Default)]
pub(crate) struct DeliveryState {
    inner: Mutex<StateInner>,
}

#[derive(Default)]
struct StateInner {
    entries: HashMap<OutboxId, Attempts>,
    users: HashMap<UserId, (UserRecord, Instant)>,
    /// Devices a push just failed to reach, until when their envelopes go straight to the
    /// mailbox (a burst to an offline device then costs no lookup and no dial per envelope),
    /// with the peer it runs as, if known.
    offline: HashMap<DeviceAddress, (Instant, Option<PeerId>)>,
    /// Where deposits for a mailbox went lately (saves a closest-peer query per envelope).
    holders: HashMap<MailboxKey, (Vec<PeerId>, Instant)>,
    /// Devices this node deposited for since its last push to them went through.
    deposited: HashSet<DeviceAddress>,
}

struct Attempts {
    delivered: HashSet<DeviceAddress>,
    failures: u32,
    retry_at: Instant,
}

impl DeliveryState {
    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the cached record of `user`: the next route looks it up again.
    pub(crate) fn forget_user(&self, user: &UserId) {
        self.lock().users.remove(user);
    }

    /// The earliest retry still ahead. (One already due was just tried, or waits behind an
    /// older entry for the same device, whose own retry comes first.)
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        let now = Instant::now();
        self.lock()
            .entries
            .values()
            .filter(|attempts| attempts.failures > 0 && attempts.retry_at > now)
            .map(|attempts| attempts.retry_at)
            .min()
    }
}

/// How one device's copy went.
enum DeviceOutcome {
    Done,
    Failed(DhtError),
}

/// Delivers every pending outbox entry that is due, oldest first. Returns when it next wants
/// to retry.
///
/// Order per device: MLS tolerates only a little reordering within one sender's ratchet
/// (`out_of_order_tolerance`), so an entry is not sent to a device while an older entry still
/// waits for that device; it goes when the older one has.
pub(crate) async fn drain(shared: &Shared) -> Option<Instant> {
    let pending = match shared.engine(|engine| engine.pending_outbound()).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "the outbox could not be read");
            return None;
        }
    };
    let now = Instant::now();
    let own = DeviceAddress {
        user_id: shared.device.user_id(),
        device_id: shared.device.device_id(),
    };
    // Devices an older entry still waits for.
    let mut blocked: HashSet<DeviceAddress> = HashSet::new();
    for outbound in pending {
        let (delivered, due) = {
            let state = shared.delivery.lock();
            match state.entries.get(&outbound.id) {
                Some(attempts) => (attempts.delivered.clone(), attempts.retry_at <= now),
                None => (HashSet::new(), true),
            }
        };
        let (waiting, held_back): (Vec<DeviceAddress>, Vec<DeviceAddress>) = outbound
            .to
            .devices
            .iter()
            .filter(|device| **device != own && !delivered.contains(device))
            .copied()
            .partition(|device| due && !blocked.contains(device));
        blocked.extend(held_back.iter().copied());
        if waiting.is_empty() && !held_back.is_empty() {
            continue;
        }
        let bytes = outbound.to_bytes();
        let outcomes = join_all(
            waiting
                .iter()
                .map(|device| deliver_to_device(shared, &outbound.to.group, *device, &bytes)),
        )
        .await;
        let mut last_error = None;
        let mut still_waiting = 0;
        {
            let mut state = shared.delivery.lock();
            let attempts = state.entries.entry(outbound.id).or_insert(Attempts {
                delivered,
                failures: 0,
                retry_at: now,
            });
            for (device, outcome) in waiting.iter().zip(outcomes) {
                match outcome {
                    DeviceOutcome::Done => {
                        attempts.delivered.insert(*device);
                    }
                    DeviceOutcome::Failed(e) => {
                        still_waiting += 1;
                        blocked.insert(*device);
                        last_error = Some(e);
                    }
                }
            }
            if still_waiting > 0 {
                attempts.failures += 1;
                let backoff = shared
                    .config
                    .retry_base
                    .saturating_mul(1 << attempts.failures.min(16).saturating_sub(1))
                    .min(shared.config.retry_max);
                attempts.retry_at = Instant::now() + backoff;
            }
        }
        if still_waiting == 0 && held_back.is_empty() {
            let id = outbound.id;
            match shared.engine(move |engine| engine.ack_sent(id)).await {
                Ok(_) => {
                    shared.delivery.lock().entries.remove(&id);
                }
                Err(e) => tracing::warn!(error = %e, "ack_sent failed; the entry is sent again"),
            }
        } else if let Some(e) = last_error {
            let first = shared
                .delivery
                .lock()
                .entries
                .get(&outbound.id)
                .is_some_and(|attempts| attempts.failures == 1);
            if first {
                let refusal = match &e {
                    DhtError::DepositRefused { refusal, .. } => Some(refusal.clone()),
                    _ => None,
                };
                let _ = shared.events.send(NodeEvent::DeliveryDelayed {
                    group: outbound.to.group.clone(),
                    waiting: still_waiting,
                    refusal,
                    reason: e.to_string(),
                });
            }
        }
    }
    shared.delivery.next_retry()
}

/// Pushes to the device if it is online, else deposits in its mailbox.
async fn deliver_to_device(
    shared: &Shared,
    group: &Option<core_mls::GroupId>,
    device: DeviceAddress,
    bytes: &[u8],
) -> DeviceOutcome {
    let offline = shared
        .delivery
        .lock()
        .offline
        .get(&device)
        .is_some_and(|(until, _)| Instant::now() < *until);
    let route = if offline {
        None
    } else {
        route(shared, &device.user_id, &device).await
    };
    if let Some((peer, addresses)) = route {
        let request = Request::Push {
            recipient: WireDevice {
                user: *device.user_id.as_bytes(),
                device: *device.device_id.as_bytes(),
            },
            envelope: bytes.to_vec(),
            after_deposits: shared.delivery.lock().deposited.contains(&device),
        };
        match shared.dht.request(peer, addresses, request).await {
            Ok(Response::Delivered) => {
                shared.delivery.lock().deposited.remove(&device);
                return DeviceOutcome::Done;
            }
            Ok(Response::PushRefused(PushRefusal::Refused { reason })) => {
                // The device's engine refused these bytes for good: another copy through
                // its mailbox would be refused too. The application hears of it.
                let _ = shared.events.send(NodeEvent::DeliveryRefused {
                    group: group.clone(),
                    device,
                    reason,
                });
                return DeviceOutcome::Done;
            }
            Ok(_) => mark_offline(shared, device, Some(peer)),
            Err(_) => {
                forget_route(shared, &device.user_id);
                mark_offline(shared, device, Some(peer));
            }
        }
    }
    let mailbox = MailboxKey::of(&device.user_id, &device.device_id);
    let cached = shared
        .delivery
        .lock()
        .holders
        .get(&mailbox)
        .filter(|(_, at)| at.elapsed() < shared.config.user_cache)
        .map(|(peers, _)| peers.clone());
    let candidates = match cached {
        Some(peers) => peers,
        None => match client::deposit_candidates(&shared.dht, mailbox).await {
            Ok(peers) => {
                shared
                    .delivery
                    .lock()
                    .holders
                    .insert(mailbox, (peers.clone(), Instant::now()));
                peers
            }
            Err(e) => return DeviceOutcome::Failed(e),
        },
    };
    match client::deposit(&shared.dht, mailbox, bytes, candidates).await {
        Ok(_) => {
            shared.delivery.lock().deposited.insert(device);
            DeviceOutcome::Done
        }
        Err(e) => {
            // The holders may have moved: look them up again next time.
            shared.delivery.lock().holders.remove(&mailbox);
            DeviceOutcome::Failed(e)
        }
    }
}

fn mark_offline(shared: &Shared, device: DeviceAddress, peer: Option<PeerId>) {
    let until = Instant::now() + shared.config.offline_memory;
    let mut state = shared.delivery.lock();
    // Bounded by the devices this node sends to; expired marks go at each new one.
    state
        .offline
        .retain(|_, (until, _)| Instant::now() < *until);
    state.offline.insert(device, (until, peer));
}

/// `peer` just sent this node a request: the devices running as it are back, whatever a
/// failed push said a moment ago. Without this, a device that restarts and speaks first
/// would still get the next `offline_memory` of envelopes through its mailbox, which it
/// reads only every `fetch_interval`.
pub(super) fn heard_from(shared: &Shared, peer: PeerId) {
    shared
        .delivery
        .lock()
        .offline
        .retain(|_, (_, offline_peer)| *offline_peer != Some(peer));
}

/// The peer a device runs as, from its user's record (cached for `user_cache`).
pub(super) async fn route(
    shared: &Shared,
    user: &UserId,
    device: &DeviceAddress,
) -> Option<(PeerId, Vec<Multiaddr>)> {
    let cached = {
        let state = shared.delivery.lock();
        state
            .users
            .get(user)
            .filter(|(_, at)| at.elapsed() < shared.config.user_cache)
            .map(|(record, _)| record.clone())
    };
    let record = match cached {
        Some(record) => record,
        None => {
            let record: DhtResult<UserRecord> = shared.dht.lookup_user(user).await;
            let record = record.ok()?;
            shared
                .delivery
                .lock()
                .users
                .insert(*user, (record.clone(), Instant::now()));
            record
        }
    };
    record
        .devices
        .iter()
        .find(|d| d.member.device_id() == device.device_id)
        .map(|d| (d.peer_id, d.addresses.clone()))
}

fn forget_route(shared: &Shared, user: &UserId) {
    shared.delivery.lock().users.remove(user);
}
