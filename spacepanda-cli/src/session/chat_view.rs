//! How the session shows what happens: one line per event, in words. Pure: it is given the
//! group labels and this device, and returns text.

use core_dht::NodeEvent;
use core_identity::{DeviceId, VerifiedMember};
use core_mls::{Event, GroupId};
use spacepanda_core::Timestamp;

/// `HH:MM:SS` in UTC (the session shows senders' clocks as they say them).
pub(crate) fn clock_time(at: Timestamp) -> String {
    let seconds = at.unix_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// The members' addresses, each user once, with a device count when they have several.
pub(crate) fn who(members: &[VerifiedMember]) -> String {
    let mut users: Vec<(String, usize)> = Vec::new();
    for member in members {
        let address = member.address().to_string();
        match users.iter_mut().find(|(known, _)| *known == address) {
            Some((_, devices)) => *devices += 1,
            None => users.push((address, 1)),
        }
    }
    users
        .into_iter()
        .map(|(address, devices)| {
            if devices > 1 {
                format!("{address} ({devices} devices)")
            } else {
                address
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The line for a node event that is not a message (messages need their content decoded,
/// see the session); `None` for events the user need not see.
pub(crate) fn describe(
    event: &NodeEvent,
    label: &dyn Fn(&GroupId) -> String,
    me: DeviceId,
) -> Option<String> {
    let line = match event {
        NodeEvent::Engine(event) => match event.as_ref() {
            Event::Joined { group, inviter, .. } => {
                format!("* {} added you to {}", inviter.address(), label(group))
            }
            Event::MembersAdded { group, by, members } if by.device_id() != me => {
                format!(
                    "* {} added {} to {}",
                    by.address(),
                    who(members),
                    label(group)
                )
            }
            Event::MembersAdded { group, members, .. } => {
                format!("* added {} to {}", who(members), label(group))
            }
            Event::MembersRemoved { group, by, members } => format!(
                "* {} removed {} from {}",
                by.address(),
                who(members),
                label(group)
            ),
            Event::RemovedFromGroup { group, by } => format!(
                "* you were removed from {}{}",
                label(group),
                by.as_ref()
                    .map(|by| format!(" by {}", by.address()))
                    .unwrap_or_default()
            ),
            Event::LeaveProposed { group, member } => {
                format!("* {} asked to leave {}", member.address(), label(group))
            }
            Event::CommitSuperseded {
                group,
                winner,
                resent_messages,
                ..
            } => format!(
                "! {}: a concurrent change by {} won; {resent_messages} of your messages were sent again on it",
                label(group),
                winner.address()
            ),
            Event::Equivocation { group, member, .. } => format!(
                "! {}: {} made two different changes at once; its device may be compromised",
                label(group),
                member.address()
            ),
            Event::ForkOutsideWindow { group, count } => format!(
                "! {}: {count} changes arrived too late to be merged; rejoining the members' side if it is ahead",
                label(group)
            ),
            Event::BranchContested { group, .. } => format!(
                "! {}: your side of the group may have lost a race; asking the members",
                label(group)
            ),
            Event::Rejoined { group, epoch } => format!(
                "* rejoined {} (epoch {epoch}); messages sent while this device was away are lost here",
                label(group)
            ),
            Event::DeviceRejoined {
                group,
                device,
                replaced,
            } => format!(
                "* {} {} {} by itself; it did not get what was sent before",
                device.address(),
                if replaced.is_empty() {
                    "joined"
                } else {
                    "rejoined"
                },
                label(group)
            ),
            Event::CommitAbandoned { group, reason, .. } => format!(
                "! {}: a change by another member can never be applied here ({reason:?}); the group may have split",
                label(group)
            ),
            Event::MessagesNotSent { group, message_ids } => format!(
                "! {}: {} of your messages were never sent (you are no longer in the group)",
                label(group),
                message_ids.len()
            ),
            Event::CommitNotReissued { group, reason, .. } => format!(
                "! {}: a change you made was undone by a concurrent one ({reason}); make it again if you still want it",
                label(group)
            ),
            Event::MissingCommit { group, waiting, .. } => format!(
                "! {}: a change did not arrive; {waiting} messages wait for it (asking the members)",
                label(group)
            ),
            Event::BufferedDropped { group, count } => format!(
                "! {count} messages{} were dropped unread (too old or too many)",
                group
                    .as_ref()
                    .map(|group| format!(" of {}", label(group)))
                    .unwrap_or_default()
            ),
            _ => return None,
        },
        NodeEvent::DeliveryDelayed {
            group,
            waiting,
            reason,
            ..
        } => format!(
            "! {}a message waits for {waiting} device(s): {reason}; it is retried",
            group
                .as_ref()
                .map(|group| format!("{}: ", label(group)))
                .unwrap_or_default()
        ),
        NodeEvent::DeliveryRefused { group, reason, .. } => format!(
            "! {}a device could not read a message ({reason})",
            group
                .as_ref()
                .map(|group| format!("{}: ", label(group)))
                .unwrap_or_default()
        ),
        NodeEvent::AlteredByHolder { envelopes } => {
            format!("! a mailbox holder altered {envelopes} message(s); other copies were used")
        }
        _ => return None,
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;

    #[test]
    fn clock_time_is_utc_hours_minutes_seconds() {
        assert_eq!(clock_time(Timestamp::from_unix_secs(0)), "00:00:00");
        // 2026-12-02 19:05:50 UTC
        assert_eq!(
            clock_time(Timestamp::from_unix_secs(1_796_238_350)),
            "19:05:50"
        );
    }
}
