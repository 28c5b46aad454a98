//! Rejoining a group by external commit (core_mls's `join_by_external_commit`), and the
//! GroupInfos it needs, which members serve on request.
//!
//! **Where GroupInfos come from.** Members serve them, authenticated, on request
//! (`Request::GroupInfo`); nothing is published. A GroupInfo carries the ratchet tree, which
//! names every member device, so a member answers only a peer that runs a device (per that
//! device's user record, signed by the user's identity key) of a user with a device in the
//! group. Serving on request costs nothing at 1 000 members until someone asks, and a GroupInfo
//! is always current; the price is that a member device must be online. What it exposes is in
//! docs/THREAT_MODEL.md.
//!
//! **When a device rejoins.**
//! - The engine reports `ForkOutsideWindow`: the driver asks member devices for a GroupInfo and
//!   rejoins only if its branch outranks this device's (`MlsClient::rejoin_advice`: the fork
//!   rule on the two commits where the two signed branch histories part), the same answer on
//!   every device, so of two branches that can no longer be judged only one side moves.
//! - The engine reports `RejoinContested` (this device's rejoin raced a commit, or a message
//!   of another branch reached it that it cannot judge): the driver asks the member whose
//!   GroupInfo it rejoined with first (it judged the race), then the others, and rejoins if
//!   the group went on without it.
//! - The engine reports `BranchContested` (a Welcome from a device outside this device's state
//!   says its branch lost at an epoch before it joined, or a member's commit says its branch
//!   won with this device's own commit, which this device lost with a branch, or a device
//!   rejoined another branch by external commit): the members are asked the same way, never
//!   the Welcome's sender.
//! - The application asks: [`Node::rejoin`](super::Node::rejoin) (a group this device fell
//!   out of), [`Node::join_own_groups`](super::Node::join_own_groups) (a new device, or one
//!   whose store was lost, joins the groups the user's other devices are in).

use std::collections::HashSet;

use core_identity::{DeviceId, UserId};
use core_mls::{DeviceAddress, GroupId, RejoinAdvice};
use libp2p::PeerId;

use super::Shared;
use super::delivery::route;
use crate::error::{DhtError, DhtResult};
use crate::wire::{PushRefusal, Request, Response, WireDevice};

/// Member devices asked in turn for a GroupInfo before giving up.
const MEMBERS_ASKED: usize = 8;

/// Times the members are asked again while one says "ask later" (it has not judged this
/// device's rejoin race yet), from `NodeConfig::retry_base` apart, doubling up to `retry_max`.
const ADVICE_ROUNDS: u32 = 8;

/// The driver's rejoin recoveries, one at a time per group. An event that asks for one while
/// one runs is folded into a single run after it: what it reports may be news the running one
/// did not see (a member that said "stay" has moved since), but a flood of such events, forged
/// or not, costs at most one round of GroupInfo requests at a time per group.
#[derive(Debug, Default)]
pub(super) struct RejoinQueue {
    running: HashSet<GroupId>,
    again: HashSet<GroupId>,
}

impl RejoinQueue {
    /// An event asks for a recovery of `group`: whether to start one now (else it runs once
    /// more after the one running).
    pub(super) fn wanted(&mut self, group: &GroupId) -> bool {
        if self.running.insert(group.clone()) {
            return true;
        }
        self.again.insert(group.clone());
        false
    }

    /// The recovery of `group` finished: whether to start it again (an event came meanwhile).
    pub(super) fn finished(&mut self, group: &GroupId) -> bool {
        if self.again.remove(group) {
            return true;
        }
        self.running.remove(group);
        false
    }
}

fn wire(device: &DeviceAddress) -> WireDevice {
    WireDevice {
        user: *device.user_id.as_bytes(),
        device: *device.device_id.as_bytes(),
    }
}

fn own(shared: &Shared) -> DeviceAddress {
    DeviceAddress {
        user_id: shared.device.user_id(),
        device_id: shared.device.device_id(),
    }
}

/// Whether `peer` runs `device`, per its user's record (looked up again if the cached one
/// says otherwise: a device that just joined the user may not be in it yet).
async fn runs_device(shared: &Shared, peer: PeerId, device: &DeviceAddress) -> bool {
    if route(shared, &device.user_id, device).await.map(|(p, _)| p) == Some(peer) {
        return true;
    }
    shared.delivery.forget_user(&device.user_id);
    route(shared, &device.user_id, device).await.map(|(p, _)| p) == Some(peer)
}

fn refuse(reason: &str) -> Response {
    Response::PushRefused(PushRefusal::Refused {
        reason: reason.to_owned(),
    })
}

/// Answers a [`Request::GroupInfo`].
pub(super) async fn answer_group_info(
    shared: &Shared,
    peer: PeerId,
    group: Vec<u8>,
    requester: WireDevice,
) -> Response {
    let device = DeviceAddress {
        user_id: UserId::from_bytes(requester.user),
        device_id: DeviceId::from_bytes(requester.device),
    };
    if !runs_device(shared, peer, &device).await {
        return refuse("the requesting peer does not run that device (per its user record)");
    }
    let group = GroupId::from_slice(&group);
    match shared
        .engine(move |engine| engine.export_group_info(&group, &device.user_id))
        .await
    {
        Ok(envelope) => Response::GroupInfo {
            envelope: serde_bytes::ByteBuf::from(envelope),
        },
        Err(e) => refuse(&e.to_string()),
    }
}

/// Answers a [`Request::OwnGroups`]: only to a device of this device's own user.
pub(super) async fn answer_own_groups(
    shared: &Shared,
    peer: PeerId,
    requester: WireDevice,
) -> Response {
    let device = DeviceAddress {
        user_id: UserId::from_bytes(requester.user),
        device_id: DeviceId::from_bytes(requester.device),
    };
    if device.user_id != shared.device.user_id() {
        return refuse("only a device of the same user may ask for its groups");
    }
    if !runs_device(shared, peer, &device).await {
        return refuse("the requesting peer does not run that device (per its user record)");
    }
    match shared.engine(|engine| Ok(engine.groups())).await {
        Ok(groups) => Response::Groups {
            groups: groups
                .iter()
                .map(|g| serde_bytes::ByteBuf::from(g.as_slice().to_vec()))
                .collect(),
        },
        Err(e) => refuse(&e.to_string()),
    }
}

/// Asks `device` for a GroupInfo of `group`.
async fn group_info_from(
    shared: &Shared,
    group: &GroupId,
    device: &DeviceAddress,
) -> Option<Vec<u8>> {
    let (peer, addresses) = route(shared, &device.user_id, device).await?;
    let request = Request::GroupInfo {
        group: group.as_slice().to_vec(),
        requester: wire(&own(shared)),
    };
    match shared.dht.request(peer, addresses, request).await {
        Ok(Response::GroupInfo { envelope }) => Some(envelope.into_vec()),
        Ok(other) => {
            tracing::debug!(%group, ?other, "a member did not give a GroupInfo");
            None
        }
        Err(e) => {
            tracing::debug!(%group, error = %e, "asking a member for a GroupInfo failed");
            None
        }
    }
}

/// Asks `devices` in turn for a GroupInfo of `group`, and joins by external commit with the
/// first one that says so (with `only_if_advised`, only if `MlsClient::rejoin_advice` says
/// `Rejoin`; a member that says "stay" or "ask later" may be on this device's own side, so the
/// next is asked). `Ok(Some(true))`: joined; `Ok(Some(false))`: some member said to ask again
/// later; `Ok(None)`: nobody said to rejoin.
async fn rejoin_from(
    shared: &Shared,
    group: &GroupId,
    devices: &[DeviceAddress],
    only_if_advised: bool,
) -> DhtResult<Option<bool>> {
    let me = own(shared);
    let mut last_error = None;
    let mut ask_later = false;
    for device in devices.iter().filter(|d| **d != me).take(MEMBERS_ASKED) {
        let Some(info) = group_info_from(shared, group, device).await else {
            continue;
        };
        let joined = shared
            .engine(move |engine| {
                if only_if_advised {
                    let advice = engine.rejoin_advice(&info)?;
                    if advice != RejoinAdvice::Rejoin {
                        return Ok(Err(advice));
                    }
                }
                engine.join_by_external_commit(&info).map(Ok)
            })
            .await;
        match joined {
            Ok(Ok(output)) => {
                tracing::info!(%group, "rejoined by external commit");
                shared.remember_rejoin_source(group, *device);
                shared.report(output);
                return Ok(Some(true));
            }
            Ok(Err(advice)) => ask_later |= advice == RejoinAdvice::AskLater,
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) if !ask_later => Err(e),
        _ => Ok(ask_later.then_some(false)),
    }
}

/// After `ForkOutsideWindow`, `RejoinContested` or `BranchContested`: the member that gave this device its last
/// GroupInfo for the group (it judged any race of that rejoin), then the member devices this
/// device knows, are asked for a GroupInfo; the rejoin follows `rejoin_advice`. While a member
/// says "ask later", they are asked again, a bounded number of times.
pub(super) async fn after_fork_outside_window(shared: &Shared, group: GroupId) {
    for round in 0..ADVICE_ROUNDS {
        let members = {
            let group = group.clone();
            shared.engine(move |engine| engine.members(&group)).await
        };
        let Ok(members) = members else {
            return;
        };
        // The member this device last rejoined from judged any race of that rejoin: its
        // "stay" is final (another member may be a joiner that lost the same race).
        let source = shared.rejoin_source(&group);
        if let Some(source) = source {
            match rejoin_from(shared, &group, &[source], true).await {
                Ok(Some(true)) => return,
                Ok(None) if group_info_from(shared, &group, &source).await.is_some() => return,
                _ => {}
            }
        }
        let devices: Vec<DeviceAddress> = members
            .iter()
            .map(DeviceAddress::from)
            .filter(|d| Some(*d) != source)
            .collect();
        match rejoin_from(shared, &group, &devices, true).await {
            Ok(Some(false)) if round + 1 < ADVICE_ROUNDS => {
                let delay = shared
                    .config
                    .retry_base
                    .saturating_mul(2u32.saturating_pow(round))
                    .min(shared.config.retry_max);
                tokio::time::sleep(delay).await;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%group, error = %e, "rejoining after a fork or a lost race failed");
                return;
            }
        }
    }
}

/// [`Node::rejoin`](super::Node::rejoin): from the member devices this device knows of the
/// group, else from the user's other devices.
pub(super) async fn rejoin(shared: &Shared, group: &GroupId) -> DhtResult<()> {
    let mut devices: Vec<DeviceAddress> = {
        let group = group.clone();
        shared
            .engine(move |engine| engine.members(&group))
            .await
            .map(|members| members.iter().map(DeviceAddress::from).collect())
            .unwrap_or_default()
    };
    devices.extend(own_other_devices(shared).await?);
    if rejoin_from(shared, group, &devices, false).await? == Some(true) {
        Ok(())
    } else {
        Err(DhtError::Unreachable {
            reason: format!("no member device of group {group} gave a GroupInfo; try again later"),
        })
    }
}

/// The user's other devices, from the user's record.
async fn own_other_devices(shared: &Shared) -> DhtResult<Vec<DeviceAddress>> {
    let me = own(shared);
    shared.delivery.forget_user(&me.user_id);
    let record = shared.dht.lookup_user(&me.user_id).await?;
    Ok(record
        .devices
        .iter()
        .map(|d| DeviceAddress::from(&d.member))
        .filter(|d| *d != me)
        .collect())
}

/// [`Node::join_own_groups`](super::Node::join_own_groups).
pub(super) async fn join_own_groups(shared: &Shared) -> DhtResult<Vec<GroupId>> {
    let me = own(shared);
    let held = shared.engine(|engine| Ok(engine.groups())).await?;
    let mut joined: Vec<GroupId> = Vec::new();
    for device in own_other_devices(shared).await? {
        let Some((peer, addresses)) = route(shared, &device.user_id, &device).await else {
            continue;
        };
        let request = Request::OwnGroups {
            requester: wire(&me),
        };
        let Ok(Response::Groups { groups }) = shared.dht.request(peer, addresses, request).await
        else {
            continue;
        };
        for group in groups {
            let group = GroupId::from_slice(&group);
            if held.contains(&group) || joined.contains(&group) {
                continue;
            }
            match rejoin_from(shared, &group, std::slice::from_ref(&device), false).await {
                Ok(Some(true)) => joined.push(group),
                Ok(_) => {}
                Err(e) => tracing::warn!(%group, error = %e, "joining a group of this user failed"),
            }
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::RejoinQueue;
    use core_mls::GroupId;

    fn group(byte: u8) -> GroupId {
        GroupId::from_slice(&[byte; 16])
    }

    #[test]
    fn one_recovery_runs_per_group_and_events_meanwhile_fold_into_one_more() {
        let mut queue = RejoinQueue::default();
        assert!(queue.wanted(&group(1)));
        // Three more events while it runs, and one for another group.
        for _ in 0..3 {
            assert!(!queue.wanted(&group(1)));
        }
        assert!(queue.wanted(&group(2)));
        // One more run for the three, then done.
        assert!(queue.finished(&group(1)));
        assert!(!queue.finished(&group(1)));
        assert!(!queue.finished(&group(2)));
        // Idle again: the next event starts one at once.
        assert!(queue.wanted(&group(1)));
    }

    #[test]
    fn a_recovery_with_no_event_meanwhile_is_not_run_again() {
        let mut queue = RejoinQueue::default();
        assert!(queue.wanted(&group(3)));
        assert!(!queue.finished(&group(3)));
        assert!(queue.wanted(&group(3)));
    }
}
