//! The node's scheduler: one task that starts the others and never waits on the network
//! itself (a node pushing to a peer that pushes back must still answer it).

use std::sync::Arc;
use std::time::Duration;

use core_mls::{DeliverySource, ErrorKind as MlsErrorKind};
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};

use super::{FetchSummary, NodeEvent, Shared};
use crate::error::{DhtError, DhtResult};
use crate::mailbox::client;
use crate::network::event_loop::InboundRequest;
use crate::wire::{PushRefusal, Request, Response};

/// Bound on a wait for the engine's next deadline, so a clock that jumps is noticed.
const MAX_TICK_WAIT: Duration = Duration::from_secs(60);

/// The source the engine is told for envelopes fetched from the mailbox.
const MAILBOX_SOURCE: &[u8] = b"mailbox";

pub(super) async fn run(
    shared: Arc<Shared>,
    mut pushes: mpsc::Receiver<InboundRequest>,
    mut missing: mpsc::UnboundedReceiver<(core_mls::GroupId, u64)>,
    mut stopped: watch::Receiver<bool>,
) {
    let once = |lock: &Arc<AsyncMutex<()>>| lock.clone().try_lock_owned().ok();
    let draining = Arc::new(AsyncMutex::new(()));
    let fetching = Arc::new(AsyncMutex::new(()));
    let maintaining = Arc::new(AsyncMutex::new(()));
    let mut fetch = tokio::time::interval(shared.config.fetch_interval);
    let mut maintenance = tokio::time::interval(shared.config.maintenance_interval);
    for timer in [&mut fetch, &mut maintenance] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut drain_again = true;
    loop {
        let tick_wait = next_tick_wait(&shared).await;
        let retry_wait = retry_at.map(tokio::time::sleep_until);
        tokio::select! {
            _ = stopped.changed() => break,
            push = pushes.recv() => match push {
                Some(push) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { handle_push(&shared, push).await });
                }
                None => break,
            },
            Some((group, epoch)) = missing.recv() => {
                let shared = shared.clone();
                tokio::spawn(async move { super::catch_up::ask_members(&shared, group, epoch).await });
            }
            _ = shared.outbox_changed.notified() => drain_again = true,
            _ = async { if let Some(wait) = retry_wait { wait.await } else { std::future::pending().await } } => {
                retry_at = None;
                drain_again = true;
            }
            _ = shared.deadline_changed.notified() => {}
            _ = tokio::time::sleep(tick_wait) => {
                let outcome = shared.engine(|engine| {
                    let now = engine.now();
                    engine.tick(now)
                }).await;
                match outcome {
                    Ok(output) => shared.report(output),
                    Err(e) => tracing::warn!(error = %e, "the engine's tick failed"),
                }
            }
            _ = fetch.tick() => {
                if let Some(guard) = once(&fetching) {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = fetch_mailbox(&shared).await {
                            tracing::debug!(error = %e, "mailbox fetch failed");
                        }
                        drop(guard);
                    });
                }
            }
            _ = async { maintenance.tick().await } => start_maintenance(&shared, &maintaining),
            _ = shared.packages_changed.notified() => start_maintenance(&shared, &maintaining),
        }
        if drain_again && let Some(guard) = once(&draining) {
            drain_again = false;
            let draining_shared = shared.clone();
            let (done, result) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let next = super::delivery::drain(&draining_shared).await;
                let _ = done.send(next);
                drop(guard);
            });
            // The drain reports when it next wants to retry; the loop picks it up then.
            let wake = shared.clone();
            tokio::spawn(async move {
                if let Ok(Some(_)) = result.await {
                    wake.deadline_changed.notify_one();
                }
            });
        }
        if retry_at.is_none() {
            retry_at = shared.delivery.next_retry();
        }
    }
}

fn start_maintenance(shared: &Arc<Shared>, lock: &Arc<AsyncMutex<()>>) {
    if let Ok(guard) = lock.clone().try_lock_owned() {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = maintain(&shared).await {
                tracing::debug!(error = %e, "keeping records fresh failed; retried later");
            }
            drop(guard);
        });
    }
}

/// How long until the engine's next deadline (bounded).
async fn next_tick_wait(shared: &Shared) -> Duration {
    let clock = shared.config.clock.clone();
    match shared.engine(|engine| engine.next_deadline()).await {
        Ok(Some(deadline)) => deadline
            .unix_millis()
            .checked_sub(clock.now().unix_millis())
            .map_or(Duration::ZERO, Duration::from_millis)
            .min(MAX_TICK_WAIT),
        _ => MAX_TICK_WAIT,
    }
}

/// A peer pushed an envelope: the engine handles it, and only once its transaction committed
/// does the peer hear "delivered".
async fn handle_push(shared: &Shared, push: InboundRequest) {
    let response = match push.request {
        Request::RecentCommits {
            group,
            from_epoch,
            requester,
        } => super::catch_up::answer(shared, push.peer, group, from_epoch, requester).await,
        Request::Push {
            recipient,
            envelope,
        } => {
            if recipient.user != *shared.device.user_id().as_bytes()
                || recipient.device != *shared.device.device_id().as_bytes()
            {
                Response::PushRefused(PushRefusal::NotHere)
            } else {
                let source = push.peer.to_bytes();
                match shared
                    .engine(move |engine| {
                        engine.handle_envelope_from(&envelope, &DeliverySource::new(&source)?)
                    })
                    .await
                {
                    Ok(output) => {
                        shared.report(output);
                        Response::Delivered
                    }
                    Err(DhtError::Engine(e)) if is_final(e.kind()) => {
                        Response::PushRefused(PushRefusal::Refused {
                            reason: e.to_string(),
                        })
                    }
                    Err(e) => Response::PushRefused(PushRefusal::TryLater {
                        reason: e.to_string(),
                    }),
                }
            }
        }
        _ => Response::NoMailboxes,
    };
    let _ = shared.dht.respond(push.token, response).await;
}

/// Errors that sending the same bytes again would not change.
fn is_final(kind: MlsErrorKind) -> bool {
    matches!(kind, MlsErrorKind::PeerInput | MlsErrorKind::ApiMisuse)
}

/// Fetches the mailbox, hands every envelope to the engine, and acknowledges what it took.
pub(super) async fn fetch_mailbox(shared: &Shared) -> DhtResult<FetchSummary> {
    let round = client::fetch(&shared.dht, &shared.device).await?;
    let mut summary = FetchSummary {
        holders_asked: round.asked,
        holders_read: round.sessions.len(),
        envelopes: round.envelopes.len(),
        altered: round.altered,
        ..FetchSummary::default()
    };
    if round.altered > 0 {
        let _ = shared.events.send(NodeEvent::AlteredByHolder {
            envelopes: round.altered,
        });
    }
    let mut envelopes = round.envelopes;
    // This node may be among its own mailbox's holders (kad never lists a node to itself).
    let own = crate::mailbox::MailboxKey::of(&shared.device.user_id(), &shared.device.device_id());
    let local = match shared.dht.holder().cloned() {
        Some(holder) => {
            let now = shared.config.clock.now();
            tokio::task::spawn_blocking(move || holder.all_in(&own, now))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    for held in local {
        if !envelopes.iter().any(|fetched| fetched.id == held.id) {
            envelopes.push(client::Fetched {
                id: held.id,
                bytes: held.bytes,
            });
        }
    }
    summary.envelopes = envelopes.len();
    let mut taken = Vec::new();
    for fetched in envelopes {
        let bytes = fetched.bytes;
        let result = shared
            .engine(move |engine| {
                engine.handle_envelope_from(&bytes, &DeliverySource::new(MAILBOX_SOURCE)?)
            })
            .await;
        match result {
            Ok(output) => {
                shared.report(output);
                taken.push(fetched.id);
            }
            // Junk (or a message for a group this device left) is deleted too: keeping it
            // would only make every fetch return it again.
            Err(DhtError::Engine(e)) if is_final(e.kind()) => {
                tracing::debug!(error = %e, "a mailbox envelope was refused");
                taken.push(fetched.id);
            }
            // A local failure: not acknowledged, so the next fetch brings it again.
            Err(e) => tracing::warn!(error = %e, "a mailbox envelope could not be handled now"),
        }
    }
    client::acknowledge(&shared.dht, &shared.device, &round.sessions, &taken).await;
    if let Some(holder) = shared.dht.holder().cloned() {
        let now = shared.config.clock.now();
        let ids = taken.clone();
        let _ = tokio::task::spawn_blocking(move || holder.acknowledge(&own, &ids, now)).await;
    }
    summary.acknowledged = taken.len();
    Ok(summary)
}

/// Keeps this device's records fresh and its claims in sync. The publisher's calls need the
/// engine for their whole length, so they run on a blocking thread with the engine held.
pub(super) async fn maintain(shared: &Arc<Shared>) -> DhtResult<()> {
    let runtime = tokio::runtime::Handle::current();
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let mut engine = shared
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        runtime.block_on(async {
            let results = shared
                .publisher
                .keep_fresh(&shared.dht, &mut engine, &shared.addresses)
                .await?;
            for (what, result) in results {
                if let Err(e) = result {
                    tracing::debug!(what, error = %e, "a record was not republished");
                }
            }
            match shared.publisher.sync_claims(&shared.dht, &mut engine).await {
                Ok(_) | Err(DhtError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    })
    .await
    .map_err(|e| DhtError::Node {
        reason: format!("the maintenance task failed: {e}"),
    })?
}
