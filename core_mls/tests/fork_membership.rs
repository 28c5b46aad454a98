//! Membership across concurrent commits: a device added, removed, re-added or leaving on a
//! branch that loses ends where the winning branch puts it — a member there, or not — and what
//! it asked for (a leave) still happens. Each case is built deterministically; which commit
//! wins is a hash, and with seeded engines each seed is one exact run (within a week: the clock
//! starts at the week's beginning), so each case searches a bounded range of seeds for one that
//! makes the wanted side win (`exactly`, `seed_where`) and asserts what follows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use core_mls::{Disposition, EnvelopeKind, Event, GroupId, Output};
use engine_harness::{Harness, exactly, seed_where};
use spacepanda_core::Clock as _;

#[path = "fork_membership/adds_and_removes.rs"]
mod adds_and_removes;
#[path = "fork_membership/late_arrivals.rs"]
mod late_arrivals;
#[path = "fork_membership/re_adds.rs"]
mod re_adds;
