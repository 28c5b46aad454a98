//! Joining by external commit (RFC 9420 §12.4.3.2): a new device of a member user joins by
//! itself, a device that fell behind comes back, and a user removed from the group cannot.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod engine_harness;
mod raw_peer;

use core_mls::{Disposition, ErrorKind, Event, MlsError, RejoinAdvice};
use engine_harness::Harness;
use spacepanda_core::Clock as _;

fn rejoined(h: &Harness, node: usize) -> usize {
    h.count_events(node, |e| matches!(e, Event::Rejoined { .. }))
}

fn saw_device_rejoin(h: &Harness, node: usize) -> usize {
    h.count_events(node, |e| matches!(e, Event::DeviceRejoined { .. }))
}

/// `member` gives `joiner` a GroupInfo, the joiner joins by external commit with it, and
/// everything is delivered without an error. Returns the GroupInfo.
fn rejoin_with_group_info_of(
    h: &mut Harness,
    group: &core_mls::GroupId,
    joiner: usize,
    member: usize,
) -> Vec<u8> {
    let info = group_info_for(h, group, joiner, member);
    let given = info.clone();
    h.run(joiner, move |c| c.join_by_external_commit(&given));
    h.deliver_all();
    assert!(h.errors().is_empty(), "{:?}", h.errors());
    info
}

/// The GroupInfo `member` gives `device` (for `device`'s user).
fn group_info_for(
    h: &mut Harness,
    group: &core_mls::GroupId,
    device: usize,
    member: usize,
) -> Vec<u8> {
    let user = h.nodes[device].identity.user_id();
    h.nodes[member]
        .client()
        .export_group_info(group, &user)
        .unwrap()
}

/// Alice and bob in a group, and a GroupInfo bob gave for a device of alice's.
fn alice_and_bob_with_a_group_info_for_alice(seed: u64) -> (Harness, core_mls::GroupId, Vec<u8>) {
    let mut h = Harness::memory(&["alice", "bob"], seed);
    let group = h.group_with(0, &[1]);
    let alice_user = h.nodes[0].identity.user_id();
    let info = h.nodes[1]
        .client()
        .export_group_info(&group, &alice_user)
        .unwrap();
    (h, group, info)
}

#[path = "external_join/contests.rs"]
mod contests;
#[path = "external_join/joining.rs"]
mod joining;
#[path = "external_join/races.rs"]
mod races;
#[path = "external_join/splits.rs"]
mod splits;
