//! The node's scheduler: one task that starts the others and never waits on the network
//! itself (a node pushing to a peer that pushes back must still answer it).

use std::sync::Arc;
use std::time::Duration;

use core_mls::{DeliverySource, ErrorKind as MlsErrorKind, GroupId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::rejoin::RejoinQueue;
use super::{FetchSummary, NodeEvent, Shared};
use crate::error::{DhtError, DhtResult};
use crate::mailbox::client;
use crate::network::event_loop::InboundRequest;
use crate::own_records::KeyPackageSource;
use crate::wire::{PushRefusal, Request, Response};

/// Bound on a wait for the engine's next deadline, so a clock that jumps is noticed.
const MAX_TICK_WAIT: Duration = Duration::from_secs(60);

/// Least time between two reads of the engine's next deadline. Every engine call may move
/// it, and reading it scans the key package ledger and the snapshots (a tenth of a busy
/// receiver's CPU when read after every message); a tick up to this late costs nothing.
const DEADLINE_RECHECK: Duration = Duration::from_millis(100);

/// The source the engine is told for envelopes fetched from the mailbox.
const MAILBOX_SOURCE: &[u8] = b"mailbox";

/// What a task of the node finished.
enum Done {
    Drain(Option<Instant>),
    Fetch,
    Maintenance,
    Tick,
    /// A rejoin recovery of this group (see `RejoinQueue`).
    Rejoin(GroupId),
    Other,
}

/// One rejoin recovery of `group` (`rejoin::after_fork_outside_window`).
async fn rejoin_task(shared: Arc<Shared>, group: GroupId) -> Done {
    super::rejoin::after_fork_outside_window(&shared, group.clone()).await;
    Done::Rejoin(group)
}

/// Runs until the node stops. Each piece of work is a task in one `JoinSet` (at most one
/// drain, fetch, upkeep and tick at a time; pushes and catch-ups as they come), so stopping
/// ends them all.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut pushes: mpsc::Receiver<InboundRequest>,
    mut missing: mpsc::UnboundedReceiver<super::Recovery>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut rejoins = RejoinQueue::default();
    let mut fetch = tokio::time::interval(shared.config.fetch_interval);
    let mut maintenance = tokio::time::interval(shared.config.maintenance_interval);
    for timer in [&mut fetch, &mut maintenance] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let (mut draining, mut fetching, mut maintaining, mut ticking) = (false, false, false, false);
    let mut drain_again = true;
    let mut retry_at: Option<Instant> = None;
    let mut tick_at = Instant::now();
    let mut deadline_stale = true;
    let mut deadline_read = Instant::now()
        .checked_sub(DEADLINE_RECHECK)
        .unwrap_or_else(Instant::now);
    loop {
        let recheck_at = deadline_read + DEADLINE_RECHECK;
        if deadline_stale && !ticking && Instant::now() >= recheck_at {
            tick_at = Instant::now() + next_tick_wait(&shared).await;
            deadline_read = Instant::now();
            deadline_stale = false;
        }
        let recheck = (deadline_stale && !ticking).then_some(recheck_at);
        if drain_again && !draining {
            (draining, drain_again) = (true, false);
            let shared = shared.clone();
            tasks.spawn(async move { Done::Drain(super::delivery::drain(&shared).await) });
        }
        tokio::select! {
            _ = stopped.changed() => break,
            push = pushes.recv() => {
                let Some(push) = push else { break };
                let shared = shared.clone();
                tasks.spawn(async move {
                    handle_push(&shared, push).await;
                    Done::Other
                });
            }
            Some(recovery) = missing.recv() => match recovery {
                super::Recovery::CatchUp(group, epoch) => {
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        super::catch_up::ask_members(&shared, group, epoch).await;
                        Done::Other
                    });
                }
                super::Recovery::Rejoin(group) => {
                    if rejoins.wanted(&group) {
                        tasks.spawn(rejoin_task(shared.clone(), group));
                    }
                }
            },
            _ = shared.outbox_changed.notified() => drain_again = true,
            _ = sleep_until_some(retry_at) => {
                retry_at = None;
                drain_again = true;
            }
            _ = shared.deadline_changed.notified() => deadline_stale = true,
            _ = sleep_until_some(recheck) => {}
            _ = tokio::time::sleep_until(tick_at), if !ticking && !deadline_stale => {
                ticking = true;
                let shared = shared.clone();
                tasks.spawn(async move {
                    let outcome = shared.engine(|engine| {
                        let now = engine.now();
                        engine.tick(now)
                    }).await;
                    match outcome {
                        Ok(output) => shared.report(output),
                        Err(e) => tracing::warn!(error = %e, "the engine's tick failed"),
                    }
                    Done::Tick
                });
            }
            _ = fetch.tick(), if !fetching => {
                fetching = true;
                let shared = shared.clone();
                tasks.spawn(async move {
                    if let Err(e) = fetch_mailbox(&shared).await {
                        tracing::debug!(error = %e, "mailbox fetch failed");
                    }
                    Done::Fetch
                });
            }
            _ = maintenance.tick(), if !maintaining => {
                maintaining = true;
                tasks.spawn(maintenance_task(shared.clone()));
            }
            _ = shared.packages_changed.notified(), if !maintaining => {
                maintaining = true;
                tasks.spawn(maintenance_task(shared.clone()));
            }
            Some(done) = tasks.join_next() => match done {
                Ok(Done::Drain(next)) => {
                    draining = false;
                    retry_at = match (retry_at, next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Ok(Done::Fetch) => fetching = false,
                Ok(Done::Maintenance) => maintaining = false,
                Ok(Done::Tick) => {
                    ticking = false;
                    deadline_stale = true;
                }
                Ok(Done::Rejoin(group)) => {
                    if rejoins.finished(&group) {
                        tasks.spawn(rejoin_task(shared.clone(), group));
                    }
                }
                Ok(Done::Other) => {}
                Err(e) => tracing::warn!(error = %e, "a node task failed"),
            },
        }
    }
    // Work in flight ends here; what it did not finish is in the durable outbox, the
    // mailbox, or the sender's retry.
    tasks.shutdown().await;
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn maintenance_task(shared: Arc<Shared>) -> Done {
    if let Err(e) = maintain(&shared).await {
        tracing::debug!(error = %e, "keeping records fresh failed; retried later");
    }
    Done::Maintenance
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
    super::delivery::heard_from(shared, push.peer);
    let response = match push.request {
        Request::RecentCommits {
            group,
            from_epoch,
            requester,
        } => super::catch_up::answer(shared, push.peer, group, from_epoch, requester).await,
        Request::GroupInfo { group, requester } => {
            super::rejoin::answer_group_info(shared, push.peer, group, requester).await
        }
        Request::OwnGroups { requester } => {
            super::rejoin::answer_own_groups(shared, push.peer, requester).await
        }
        Request::Push {
            recipient,
            envelope,
            after_deposits,
        } => {
            if recipient.user != *shared.device.user_id().as_bytes()
                || recipient.device != *shared.device.device_id().as_bytes()
            {
                Response::PushRefused(PushRefusal::NotHere)
            } else {
                if after_deposits && let Err(e) = fetch_mailbox(shared).await {
                    tracing::debug!(error = %e, "the mailbox fetch before a push failed");
                }
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
/// Mailbox envelopes handed to the engine in one transaction.
const MAILBOX_BATCH: usize = 64;

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
    // A batch is one durable engine transaction (one fsync instead of one per envelope); the
    // engine lock is held for one batch at a time, so sends and pushes interleave.
    for batch in envelopes.chunks(MAILBOX_BATCH) {
        let bytes: Vec<Vec<u8>> = batch.iter().map(|fetched| fetched.bytes.clone()).collect();
        let results = shared
            .engine(move |engine| {
                let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                engine.handle_envelopes_from(&slices, &DeliverySource::new(MAILBOX_SOURCE)?)
            })
            .await;
        let results = match results {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(DhtError::from))
                .collect(),
            // A local failure rolled the whole batch back. Whatever met it, the envelopes go
            // through one by one, as before batches: an envelope a holder crafted to fail
            // locally then holds back only itself, not the 63 beside it.
            Err(e) => {
                tracing::warn!(error = %e, "a batch of mailbox envelopes failed; handling them one by one");
                let mut one_by_one = Vec::with_capacity(batch.len());
                for fetched in batch {
                    let bytes = fetched.bytes.clone();
                    one_by_one.push(
                        shared
                            .engine(move |engine| {
                                engine.handle_envelope_from(
                                    &bytes,
                                    &DeliverySource::new(MAILBOX_SOURCE)?,
                                )
                            })
                            .await,
                    );
                }
                one_by_one
            }
        };
        for (fetched, result) in batch.iter().zip(results) {
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
                Err(e) => {
                    tracing::warn!(error = %e, "a mailbox envelope could not be handled now");
                }
            }
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

/// Keeps this device's records fresh and its claims in sync. The engine is taken only for
/// each short call ([`EngineSource`]), never while records travel.
pub(super) async fn maintain(shared: &Arc<Shared>) -> DhtResult<()> {
    let mut engine = EngineSource(shared);
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
}

/// The node's engine as the publisher uses it: one `spawn_blocking` call each.
struct EngineSource<'a>(&'a Shared);

impl KeyPackageSource for EngineSource<'_> {
    async fn publishable(&mut self) -> DhtResult<Vec<core_mls::PublishableKeyPackage>> {
        self.0
            .engine(|engine| engine.publishable_key_packages())
            .await
    }

    async fn replenish(&mut self) -> DhtResult<usize> {
        let output = self
            .0
            .engine(|engine| engine.replenish_key_packages())
            .await;
        self.0.deadline_changed.notify_one();
        output
    }

    async fn mark_published(&mut self, refs: Vec<Vec<u8>>) -> DhtResult<usize> {
        self.0
            .engine(move |engine| engine.mark_key_packages_published(&refs))
            .await
    }

    async fn mark_claimed(&mut self, refs: Vec<Vec<u8>>) -> DhtResult<usize> {
        self.0
            .engine(move |engine| engine.mark_key_packages_claimed(&refs))
            .await
    }
}
