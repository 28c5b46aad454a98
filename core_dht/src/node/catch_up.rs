//! A member stuck behind a commit it never received (core_mls's `Event::MissingCommit`: the
//! envelope was lost on the way, or every mailbox copy with it) asks the group's other member
//! devices for the commits it lacks, and members answer from their commit log
//! (`MlsClient::recent_commits`) — only to a peer that runs a member device of the group.

use core_identity::{DeviceId, UserId};
use core_mls::{DeliverySource, DeviceAddress, GroupId};
use libp2p::PeerId;

use super::Shared;
use super::delivery::route;
use crate::wire::{PushRefusal, Request, Response, WireDevice};

/// Members asked in turn before giving up (the engine reports again if the group still waits).
const MEMBERS_ASKED: usize = 8;

/// Asks member devices of `group`, one after another, for the commits from `epoch` on, and
/// hands them to the engine until the group moved past `epoch`.
pub(super) async fn ask_members(shared: &Shared, group: GroupId, epoch: u64) {
    let own = (shared.device.user_id(), shared.device.device_id());
    let members = {
        let group = group.clone();
        match shared.engine(move |engine| engine.members(&group)).await {
            Ok(members) => members,
            Err(_) => return,
        }
    };
    let requester = WireDevice {
        user: *own.0.as_bytes(),
        device: *own.1.as_bytes(),
    };
    for member in members
        .iter()
        .filter(|m| (m.user_id(), m.device_id()) != own)
        .take(MEMBERS_ASKED)
    {
        let device = DeviceAddress::from(member);
        let Some((peer, addresses)) = route(shared, &device.user_id, &device).await else {
            continue;
        };
        let request = Request::RecentCommits {
            group: group.as_slice().to_vec(),
            from_epoch: epoch,
            requester,
        };
        let Ok(Response::Commits { envelopes }) =
            shared.dht.request(peer, addresses, request).await
        else {
            continue;
        };
        let source = peer.to_bytes();
        for envelope in envelopes {
            let source = source.clone();
            let outcome = shared
                .engine(move |engine| {
                    engine.handle_envelope_from(&envelope, &DeliverySource::new(&source)?)
                })
                .await;
            match outcome {
                Ok(output) => shared.report(output),
                Err(e) => tracing::debug!(error = %e, "a commit a member sent was refused"),
            }
        }
        let moved = {
            let group = group.clone();
            shared
                .engine(move |engine| engine.epoch(&group))
                .await
                .is_ok_and(|now| now > epoch)
        };
        if moved {
            tracing::info!(%group, epoch, "caught up with commits a member sent");
            return;
        }
    }
}

/// Answers a member's request: the commits, if `peer` runs `requester` (per its user record)
/// and `requester` is a member device of the group here.
pub(super) async fn answer(
    shared: &Shared,
    peer: PeerId,
    group: Vec<u8>,
    from_epoch: u64,
    requester: WireDevice,
) -> Response {
    let refuse = |reason: &str| {
        Response::PushRefused(PushRefusal::Refused {
            reason: reason.to_owned(),
        })
    };
    let group = GroupId::from_slice(&group);
    let device = DeviceAddress {
        user_id: UserId::from_bytes(requester.user),
        device_id: DeviceId::from_bytes(requester.device),
    };
    let is_member = {
        let group = group.clone();
        shared
            .engine(move |engine| engine.members(&group))
            .await
            .is_ok_and(|members| members.iter().any(|m| DeviceAddress::from(m) == device))
    };
    if !is_member {
        return refuse("not a member device of that group here");
    }
    if route(shared, &device.user_id, &device)
        .await
        .map(|(p, _)| p)
        != Some(peer)
    {
        return refuse("the requesting peer does not run that device (per its user record)");
    }
    let budget = shared.dht.config().fetch_page_bytes;
    match shared
        .engine(move |engine| engine.recent_commits(&group, from_epoch))
        .await
    {
        Ok(commits) => {
            let mut size = 0;
            let envelopes = commits
                .into_iter()
                .take_while(|commit| {
                    size += commit.len();
                    size <= budget
                })
                .map(serde_bytes::ByteBuf::from)
                .collect();
            Response::Commits { envelopes }
        }
        Err(e) => Response::PushRefused(PushRefusal::TryLater {
            reason: e.to_string(),
        }),
    }
}
