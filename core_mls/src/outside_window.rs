//! Commits refused because they were older than the fork window, counted per group in memory
//! since the client was opened, and how many of them `tick` has reported
//! ([`Event::ForkOutsideWindow`]).
//!
//! Invariant: counts only; refusing such a commit is `fork_resolution`'s.

use std::collections::BTreeMap;

use crate::events::Event;
use crate::group_id::GroupId;

/// Per group: (refused since opened, of which reported).
#[derive(Debug, Default, Clone)]
pub(crate) struct OutsideWindowCounts {
    counts: BTreeMap<GroupId, (u64, u64)>,
}

impl OutsideWindowCounts {
    /// Counts one refusal in `group`.
    pub(crate) fn count(&mut self, group: &GroupId) {
        let (count, _) = self.counts.entry(group.clone()).or_default();
        *count = count.saturating_add(1);
    }

    /// Refusals in `group` since the client was opened.
    pub(crate) fn refused(&self, group: &GroupId) -> u64 {
        self.counts.get(group).map_or(0, |(count, _)| *count)
    }

    /// Whether some group has refusals `tick` has not reported yet.
    pub(crate) fn unreported(&self) -> bool {
        self.counts
            .values()
            .any(|(count, reported)| count > reported)
    }

    /// One `ForkOutsideWindow` event per group with refusals since the last report, which they
    /// become.
    pub(crate) fn report(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        for (group, (count, reported)) in &mut self.counts {
            if *count > *reported {
                events.push(Event::ForkOutsideWindow {
                    group: group.clone(),
                    count: *count - *reported,
                });
                *reported = *count;
            }
        }
        events.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        events
    }
}
