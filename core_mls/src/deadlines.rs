//! One time per operation, and when `tick` has work next.
//!
//! **One time per operation.** Every public operation reads the clock once, when it starts;
//! everything it decides — lifetimes, the time recorded for a buffered message, a snapshot, a
//! proposal, a leaf — uses that one value, through [`MlsClient::now`]. `tick(now)` runs at the
//! time it is given: the self-updates, re-issues and refills it starts use `now`, not the
//! clock. Nested public calls (a `send` that commits first, a `tick` that self-updates) keep the
//! time of the outermost one. This module holds the pinned time ([`OperationTime`]); the
//! client starts an operation with it.
//!
//! **Deadlines.** [`MlsClient::next_deadline`] is the earliest time `tick` has work to do, the
//! way quinn's `poll_timeout` is for a connection: a driver sleeps until then (or until the
//! network brings something), calls `tick`, and asks again. It is the minimum ([`Earliest`])
//! over (computed in `tick`, which reads the records):
//! - a self-update that falls due (`self_update_after`), pending proposals this device should
//!   commit (at once as the designated committer, else after `pending_proposal_timeout`);
//! - a buffered message reaching `buffer_max_age`, a commit waiting for a proposal reaching
//!   `commit_proposal_wait`, a refused proposal to check waiting commits against;
//! - a snapshot reaching `fork_window`;
//! - a group waiting `missing_commit_alert` behind a commit it lacks (`missing_commit`);
//! - a key package to rotate, expire, prune, forget, or a pool to refill;
//! - work already due: commits refused as outside the fork window not reported yet, own commits
//!   queued for re-issue, messages to drop for a group that cannot come back, a leave request
//!   that outlived its group.
//!
//! De-duplication records are not deadlines: one kept past `dedup_retention` only recognises a
//! duplicate a little longer, the next `tick` forgets it, and the key package pool alone brings
//! a deadline at least every `rotate_after` (7 days). Scanning them on every call would cost
//! more than it could gain (there is one per message of the last 30 days).
//!
//! [`MlsClient::now`]: crate::MlsClient::now
//! [`MlsClient::next_deadline`]: crate::MlsClient::next_deadline

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spacepanda_core::Timestamp;

/// The time of the public operation running now, shared with the guards that end it.
#[derive(Debug, Default)]
pub(crate) struct OperationTime(Arc<Pinned>);

#[derive(Debug, Default)]
struct Pinned {
    /// Public operations running (nested calls count too); the time is pinned while non-zero.
    depth: AtomicUsize,
    at_ms: AtomicU64,
}

/// Ends the operation that pinned the time when dropped (also on unwind).
#[derive(Debug)]
pub(crate) struct OperationGuard(Arc<Pinned>);

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.0.depth.fetch_sub(1, Ordering::SeqCst);
    }
}

impl OperationTime {
    /// Starts an operation at `at()`, or joins the one running (which keeps its time).
    pub(crate) fn pin(&self, at: impl FnOnce() -> Timestamp) -> OperationGuard {
        if self.0.depth.fetch_add(1, Ordering::SeqCst) == 0 {
            self.0.at_ms.store(at().unix_millis(), Ordering::SeqCst);
        }
        OperationGuard(self.0.clone())
    }

    /// The running operation's time, if one runs.
    pub(crate) fn current(&self) -> Option<Timestamp> {
        (self.0.depth.load(Ordering::SeqCst) > 0)
            .then(|| Timestamp::from_unix_millis(self.0.at_ms.load(Ordering::SeqCst)))
    }
}

/// The earliest of the times offered to it (`next_deadline` is the earliest of its times).
#[derive(Debug, Default)]
pub(crate) struct Earliest(pub(crate) Option<Timestamp>);

impl Earliest {
    pub(crate) fn at(&mut self, time: Timestamp) {
        self.0 = Some(self.0.map_or(time, |earliest| earliest.min(time)));
    }

    pub(crate) fn maybe(&mut self, time: Option<Timestamp>) {
        if let Some(time) = time {
            self.at(time);
        }
    }
}
