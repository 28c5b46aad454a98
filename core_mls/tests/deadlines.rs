//! `next_deadline`: a driver that calls `tick` only at the deadline the engine names — the
//! clock set to exactly that time — gets every time-driven action done on time, and `tick` a
//! millisecond earlier does nothing at all (no output, not one byte of the store changed).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;

use std::time::Duration;

use core_mls::{AbandonReason, Disposition, Event, GroupId, MlsConfig};
use engine_harness::Harness;
use spacepanda_core::{Clock, Timestamp};

const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What one tick at a deadline did.
#[derive(Debug)]
struct Tick {
    at: Timestamp,
    events: Vec<Event>,
    snapshots: usize,
    expired_packages: usize,
}

#[test]
fn a_driver_that_ticks_only_at_next_deadline_gets_every_action_on_time() {
    let config = MlsConfig::default();
    let mut h = Harness::seeded(&["alice", "bob", "carol", "dave"], 21, config.clone());
    let opened = h.clock.now();
    h.clock.advance(HOUR);
    let t1 = h.clock.now();

    // Group 1: carol asks to leave; bob is not the designated committer (alice is, and never
    // ticks), so he commits the leave himself after `pending_proposal_timeout`.
    let group1 = h.group_with(0, &[1, 2]);
    let g = group1.clone();
    h.run(2, move |c| c.leave_group(&g));
    h.deliver_all();
    // Group 2: dave's leave reaches alice only; her commit of it reaches bob, and waits there
    // for the proposal; a message of the epoch after it waits for that epoch.
    let group2 = h.group_with(0, &[1, 3]);
    let g = group2.clone();
    h.run(3, move |c| c.leave_group(&g));
    let inboxes = h.take_inboxes();
    for bytes in &inboxes[0] {
        h.handle(0, bytes).unwrap();
    }
    let g = group2.clone();
    h.run(0, move |c| c.self_update(&g));
    let g = group2.clone();
    h.run(0, move |c| c.send(&g, b"of the next epoch"));
    for bytes in h.take_inboxes()[1].clone() {
        assert_eq!(h.handle(1, &bytes), Ok(Disposition::Buffered));
    }
    let memory = h.nodes[1].memory.clone().unwrap();
    assert_eq!(
        h.nodes[1].client().fork_report(&group1).unwrap().snapshots,
        0
    );

    // The driver: sleep until the deadline, tick, ask again.
    let horizon = opened.saturating_add(16 * DAY);
    let mut ticks: Vec<Tick> = Vec::new();
    while let Some(deadline) = h.nodes[1].client().next_deadline().unwrap() {
        if deadline > horizon {
            break;
        }
        assert!(ticks.len() < 100, "deadlines do not progress: {ticks:?}");
        if deadline > h.clock.now() {
            // A millisecond early: nothing to do, nothing written.
            let early = deadline.saturating_sub(Duration::from_millis(1));
            h.clock.set(early);
            let before = memory.dump().unwrap();
            let output = h.nodes[1].client().tick(early).unwrap();
            assert!(
                output.events.is_empty() && output.outbound.is_empty(),
                "tick before the deadline {deadline} did something: {output:?}"
            );
            assert!(
                memory.dump().unwrap() == before,
                "tick before the deadline wrote"
            );
            h.clock.set(deadline);
        }
        let now = h.clock.now();
        let output = h.run(1, move |c| c.tick(now));
        let after = h.nodes[1].client().next_deadline().unwrap();
        assert!(
            after.is_none_or(|next| next > now),
            "tick at {now} left work due: {after:?}"
        );
        let client = h.nodes[1].client();
        ticks.push(Tick {
            at: now,
            events: output.events,
            snapshots: client.fork_report(&group1).unwrap().snapshots,
            expired_packages: client.key_package_status().unwrap().expired,
        });
    }

    let at = |time: Timestamp| -> &Tick {
        ticks
            .iter()
            .find(|t| t.at == time)
            .unwrap_or_else(|| panic!("no tick at {time}; ticks at {:?}", times(&ticks)))
    };
    let advanced = |tick: &Tick, group: &GroupId| {
        tick.events
            .iter()
            .any(|e| matches!(e, Event::EpochAdvanced { group: g, .. } if g == group))
    };

    // Pending-proposal timeout: bob commits carol's leave.
    let committed_leave = at(t1.saturating_add(config.pending_proposal_timeout));
    assert!(advanced(committed_leave, &group1), "{committed_leave:?}");
    assert_eq!(committed_leave.snapshots, 1);
    // The commit waiting for dave's proposal is given up.
    let gave_up = at(t1.saturating_add(config.commit_proposal_wait));
    assert!(gave_up.events.iter().any(|e| matches!(
        e,
        Event::CommitAbandoned { group, reason: AbandonReason::ProposalMissing, .. } if *group == group2
    )));
    // The message of the epoch that never came expires from the buffer.
    let expired = at(t1.saturating_add(config.buffer_max_age));
    assert!(expired.events.contains(&Event::BufferedDropped {
        group: Some(group2.clone()),
        count: 1
    }));
    // The snapshot of bob's commit expires a fork window after it was taken.
    let snapshot_gone = at(committed_leave.at.saturating_add(config.fork_window));
    assert_eq!(snapshot_gone.snapshots, 0);
    // Key packages made at open are rotated (and the pool refilled), then expire, then lose
    // their keys.
    let policy = &config.key_packages;
    let rotated = at(opened.saturating_add(policy.rotate_after));
    assert!(rotated.events.iter().any(|e| matches!(
        e,
        Event::KeyPackagesReplenished { created } if *created == policy.target
    )));
    assert_eq!(rotated.expired_packages, 0);
    let lifetime_end =
        Timestamp::from_unix_secs(opened.saturating_add(policy.lifetime).unix_secs());
    assert!(at(lifetime_end).expired_packages > 0);
    assert_eq!(
        at(lifetime_end.saturating_add(policy.grace)).expired_packages,
        0
    );
    // Self-updates fall due `self_update_after` after each leaf was last replaced.
    assert!(advanced(
        at(t1.saturating_add(config.self_update_after)),
        &group2
    ));
    assert!(advanced(
        at(committed_leave.at.saturating_add(config.self_update_after)),
        &group1
    ));
}

fn times(ticks: &[Tick]) -> Vec<String> {
    ticks.iter().map(|t| t.at.to_string()).collect()
}

#[test]
fn tick_runs_what_it_triggers_at_the_time_it_was_given() {
    // Bob's leaf is due for renewal; tick is called for a time the clock has not reached.
    let mut h = Harness::seeded(&["alice", "bob"], 22, MlsConfig::default());
    let group = h.group_with(0, &[1]);
    let later = h.clock.now().saturating_add(8 * DAY);
    let output = h.run(1, move |c| c.tick(later));
    assert!(
        output
            .events
            .iter()
            .any(|e| matches!(e, Event::EpochAdvanced { .. }))
    );
    // The self-update it made was recorded at `later`, not at the clock's time: the next one is
    // due `self_update_after` after `later`.
    let next = h.nodes[1].client().next_deadline().unwrap().unwrap();
    let due = later.saturating_add(MlsConfig::default().self_update_after);
    assert!(next <= due);
    let snapshots_expire = later.saturating_add(MlsConfig::default().fork_window);
    assert_eq!(
        next, snapshots_expire,
        "the snapshot of the self-update is dated `later` too"
    );
    assert_eq!(
        h.nodes[1].client().fork_report(&group).unwrap().snapshots,
        1
    );
}
