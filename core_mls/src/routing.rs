//! Where an incoming commit, proposal or application message goes, by its group, epoch and
//! branch tag: the rule of step 3 of `message_processor`'s pipeline, as a pure function
//! ([`route`]) over what the device knows ([`RouteFacts`]), and for a group this device does
//! not hold ([`route_without_group`], performed by `group_removal`). `message_processor` reads the
//! facts and performs the [`Route`]; acting on a route (buffering, judging a competing commit,
//! refusing) is the operations' (`buffering`, `competing_commit`, `fork_resolution`,
//! `external_join`, `group_removal`).
//!
//! Two checks of the rule read more than the facts and may act: whether this device's external
//! join contests the message (`contest_external_join`) and whether a commit was judged here
//! before (`judged_before`). They are routes that name the check and where the message goes
//! if the check lets it pass ([`Route::ContestExternalJoin`], [`Uncontested`]).

use openmls::prelude::ContentType;

use crate::branch_order::tag_matches;

/// What the routing rule needs to know of a message and of its group here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteFacts {
    /// The epoch the message was made in.
    pub(crate) message_epoch: u64,
    pub(crate) content: ContentType,
    /// The branch tag the message carries (for an external commit, the tag it stands for here:
    /// `external_commit_tag`); none is taken to be of this device's branch (`tag_matches`).
    pub(crate) tag: Option<Vec<u8>>,
    /// It came from the epoch buffer, not from the network.
    pub(crate) from_buffer: bool,
    /// None: this device does not hold the group (not joined yet, or removed from it).
    pub(crate) group: Option<HeldGroup>,
}

/// A group this device holds, as far as the message's epoch makes it matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldGroup {
    pub(crate) current_epoch: u64,
    /// The branch tag of the current epoch on this device's branch.
    pub(crate) current_tag: Vec<u8>,
    /// For a message of a past epoch: the branch tag of that epoch's kept snapshot, if one is
    /// kept (`epoch_snapshots::meta`). Not read, so none, for any other epoch.
    pub(crate) snapshot_tag: Option<Vec<u8>>,
    /// For a message of a past epoch: the epoch this device joined the group at from a
    /// Welcome (`joined_epoch`), none if it did not. Not read, so none, for any other epoch.
    pub(crate) joined_epoch: Option<u64>,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// This device does not hold the group: `group_removal`'s `handle_without_group`.
    NoGroup,
    /// It cannot be processed yet, and may be later: it waits in the epoch buffer.
    Buffer,
    /// Of another branch than this device's: `other_branch` (kept while something could take
    /// this device there, else refused).
    OtherBranch,
    /// OpenMLS processes it, in one transaction.
    Process,
    /// A commit of a past epoch whose snapshot is kept, of that snapshot's branch: judged
    /// against the commit merged there (`handle_competing_commit`).
    CompetingCommit,
    /// A commit of a past epoch with no snapshot left: `contest_external_join` first (it waits
    /// if it races this device's external join); if that passes, `otherwise`.
    ContestExternalJoin { otherwise: Uncontested },
    /// A proposal of a kept past epoch, of our branch: it waits with the snapshot; `replay`:
    /// the buffer is replayed then.
    BufferProposal { replay: bool },
    /// A proposal of a past epoch with no snapshot: [`MlsError::StaleEpoch`](crate::MlsError).
    StaleEpoch { current_epoch: u64 },
}

/// Where a commit of a past epoch with no snapshot goes once `contest_external_join` let it
/// pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uncontested {
    /// It waits in the epoch buffer.
    Buffer,
    /// A duplicate if `judged_before` knows it; else refused as another branch's
    /// ([`MlsError::OtherBranch`](crate::MlsError)).
    JudgedBeforeOrOtherBranch,
    /// A duplicate if `judged_before` knows it; else `fork_outside_window`.
    JudgedBeforeOrForkOutsideWindow { current_epoch: u64 },
}

/// The rule, checked in this order:
///
/// - a group this device does not hold → [`Route::NoGroup`];
/// - an epoch later than the group's → waits ([`Route::Buffer`]), replayed once the group
///   gets there;
/// - the current epoch → processed if its tag matches the current epoch's, else
///   [`Route::OtherBranch`];
/// - a past epoch, by the snapshot kept of it and the join record:
///   - a commit with no snapshot → [`Route::ContestExternalJoin`], then: from before the join
///     it waits; else a duplicate if judged here before, else refused (as another branch's if
///     it came from the buffer, else as outside the fork window);
///   - anything else with no snapshot, from before the join → waits;
///   - a commit with a snapshot → [`Route::CompetingCommit`] if of the snapshot's branch,
///     else [`Route::OtherBranch`];
///   - a proposal → with a snapshot, waits with it ([`Route::BufferProposal`]) if of its
///     branch, else [`Route::OtherBranch`]; with none, [`Route::StaleEpoch`];
///   - an application message with a snapshot → [`Route::OtherBranch`] if not of its branch,
///     waits if from before the join, else processed; with none, processed (OpenMLS keeps
///     the secrets of `max_past_epochs` past epochs, and decides).
pub(crate) fn route(facts: &RouteFacts) -> Route {
    let Some(group) = &facts.group else {
        return Route::NoGroup;
    };
    let epoch = facts.message_epoch;
    if epoch > group.current_epoch {
        return Route::Buffer;
    }
    if epoch == group.current_epoch {
        return if tag_matches(&facts.tag, &group.current_tag) {
            Route::Process
        } else {
            Route::OtherBranch
        };
    }
    let before_join = group.joined_epoch.is_some_and(|joined| epoch < joined);
    let Some(snapshot_tag) = &group.snapshot_tag else {
        return match facts.content {
            ContentType::Commit => Route::ContestExternalJoin {
                otherwise: if before_join {
                    Uncontested::Buffer
                } else if facts.from_buffer {
                    // Kept in the buffer as another branch's and never reached: its branch is
                    // beyond the window now, but it was judged when it arrived.
                    Uncontested::JudgedBeforeOrOtherBranch
                } else {
                    Uncontested::JudgedBeforeOrForkOutsideWindow {
                        current_epoch: group.current_epoch,
                    }
                },
            },
            // From before we joined: not of our branch. If its branch wins, the commit that
            // added us lost and a Welcome of the winning branch (a re-add) can put us back at
            // or before its epoch, where it is needed: it waits.
            _ if before_join => Route::Buffer,
            ContentType::Proposal => Route::StaleEpoch {
                current_epoch: group.current_epoch,
            },
            ContentType::Application => Route::Process,
        };
    };
    let of_snapshot_branch = tag_matches(&facts.tag, snapshot_tag);
    match facts.content {
        ContentType::Commit if of_snapshot_branch => Route::CompetingCommit,
        // A proposal of a kept epoch: a competing commit of that epoch may reference it (see
        // `handle_competing_commit`), so it waits with the snapshot. A competing commit of that
        // epoch may be waiting for this proposal: the buffer is replayed.
        ContentType::Proposal if of_snapshot_branch => Route::BufferProposal {
            replay: !facts.from_buffer,
        },
        // Another branch's proposal: a commit of that branch may need it once a rollback takes
        // us there, so it waits like that branch's commits.
        ContentType::Commit | ContentType::Proposal => Route::OtherBranch,
        ContentType::Application if !of_snapshot_branch => Route::OtherBranch,
        // Of a membership before our last join (its snapshot was kept across the join): only a
        // rollback to that snapshot can open it.
        ContentType::Application if before_join => Route::Buffer,
        ContentType::Application => Route::Process,
    }
}

/// What the rule needs to know of a message for a group this device does not hold (removed
/// from it by a commit that may still lose, or not joined yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WithoutGroupFacts {
    pub(crate) content: ContentType,
    /// A snapshot of the message's epoch is kept and the message is of its branch (an external
    /// commit: made on that snapshot's state, `external_commit_tag_in_snapshot`).
    pub(crate) of_kept_snapshot: bool,
    /// Some snapshot is kept: a rollback may still put this device back in the group.
    pub(crate) restorable: bool,
    /// This device was removed from the group in the message's epoch or later.
    pub(crate) from_before_removal: bool,
    /// It came from the epoch buffer, not from the network.
    pub(crate) from_buffer: bool,
}

/// Where a message for a group this device does not hold goes (`group_removal`'s
/// `handle_without_group` performs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WithoutGroupRoute {
    /// A commit of a kept epoch, of that snapshot's branch: judged against the commit merged
    /// there (`handle_competing_commit`); if it wins, this device is back in the group.
    CompetingCommit,
    /// A proposal of such an epoch: a competing commit that references it may wait in the
    /// buffer, and it alone can take this device back. It waits; `retry_commits`: the commits
    /// of its epoch waiting in the buffer are tried again (nobody else can, since there is no
    /// group to replay into).
    BufferProposal { retry_commits: bool },
    /// It waits: a rollback may put this device back, or a member re-add it (the new epoch's
    /// messages can overtake the Welcome).
    Buffer,
    /// A late message of an epoch up to the removal, to a device no rollback can put back:
    /// [`MlsError::NoLongerMember`](crate::MlsError).
    NoLongerMember,
}

/// The rule for a group this device does not hold, in this order: a commit or proposal of a
/// kept epoch and of its branch goes to that epoch ([`WithoutGroupRoute::CompetingCommit`],
/// [`WithoutGroupRoute::BufferProposal`]); anything else waits, unless no snapshot is kept
/// and it is of an epoch up to the removal ([`WithoutGroupRoute::NoLongerMember`]).
pub(crate) fn route_without_group(facts: &WithoutGroupFacts) -> WithoutGroupRoute {
    if facts.of_kept_snapshot {
        match facts.content {
            ContentType::Commit => return WithoutGroupRoute::CompetingCommit,
            ContentType::Proposal => {
                return WithoutGroupRoute::BufferProposal {
                    retry_commits: !facts.from_buffer,
                };
            }
            ContentType::Application => {}
        }
    }
    if !facts.restorable && facts.from_before_removal {
        WithoutGroupRoute::NoLongerMember
    } else {
        WithoutGroupRoute::Buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &[u8] = &[1; 16];
    const THEIRS: &[u8] = &[2; 16];
    const CURRENT: u64 = 5;

    /// A message of `epoch`, tagged of this device's branch, for a group held at epoch 5 that
    /// keeps no snapshot and was not joined from a Welcome.
    fn message(content: ContentType, epoch: u64) -> RouteFacts {
        RouteFacts {
            message_epoch: epoch,
            content,
            tag: Some(OURS.to_vec()),
            from_buffer: false,
            group: Some(HeldGroup {
                current_epoch: CURRENT,
                current_tag: OURS.to_vec(),
                snapshot_tag: None,
                joined_epoch: None,
            }),
        }
    }

    fn tagged(mut facts: RouteFacts, tag: Option<&[u8]>) -> RouteFacts {
        facts.tag = tag.map(<[u8]>::to_vec);
        facts
    }

    fn with_snapshot(mut facts: RouteFacts, snapshot_tag: &[u8]) -> RouteFacts {
        if let Some(group) = &mut facts.group {
            group.snapshot_tag = Some(snapshot_tag.to_vec());
        }
        facts
    }

    fn joined_at(mut facts: RouteFacts, epoch: u64) -> RouteFacts {
        if let Some(group) = &mut facts.group {
            group.joined_epoch = Some(epoch);
        }
        facts
    }

    fn from_buffer(mut facts: RouteFacts) -> RouteFacts {
        facts.from_buffer = true;
        facts
    }

    const PAST: u64 = CURRENT - 2;
    const CONTENTS: [ContentType; 3] = [
        ContentType::Application,
        ContentType::Proposal,
        ContentType::Commit,
    ];

    #[test]
    fn a_message_for_a_group_not_held_goes_to_group_removal() {
        for content in CONTENTS {
            let mut facts = message(content, CURRENT);
            facts.group = None;
            assert_eq!(route(&facts), Route::NoGroup);
        }
    }

    #[test]
    fn a_message_of_a_later_epoch_waits_in_the_buffer() {
        for content in CONTENTS {
            assert_eq!(route(&message(content, CURRENT + 1)), Route::Buffer);
            // Whatever its tag: the branch is judged once the group gets there.
            let theirs = tagged(message(content, CURRENT + 1), Some(THEIRS));
            assert_eq!(route(&theirs), Route::Buffer);
        }
    }

    #[test]
    fn a_message_of_the_current_epoch_and_our_branch_is_processed() {
        for content in CONTENTS {
            assert_eq!(route(&message(content, CURRENT)), Route::Process);
        }
    }

    #[test]
    fn a_message_without_a_tag_is_taken_to_be_of_our_branch() {
        for content in CONTENTS {
            let untagged = tagged(message(content, CURRENT), None);
            assert_eq!(route(&untagged), Route::Process);
        }
        let kept = with_snapshot(message(ContentType::Commit, PAST), OURS);
        assert_eq!(route(&tagged(kept, None)), Route::CompetingCommit);
    }

    #[test]
    fn a_message_of_the_current_epoch_and_another_branch_goes_to_other_branch() {
        for content in CONTENTS {
            let theirs = tagged(message(content, CURRENT), Some(THEIRS));
            assert_eq!(route(&theirs), Route::OtherBranch);
        }
    }

    #[test]
    fn a_commit_of_a_past_epoch_without_snapshot_asks_the_external_join_then_the_fork_window() {
        assert_eq!(
            route(&message(ContentType::Commit, PAST)),
            Route::ContestExternalJoin {
                otherwise: Uncontested::JudgedBeforeOrForkOutsideWindow {
                    current_epoch: CURRENT
                }
            }
        );
    }

    #[test]
    fn a_commit_without_snapshot_that_waited_in_the_buffer_is_refused_as_another_branchs() {
        assert_eq!(
            route(&from_buffer(message(ContentType::Commit, PAST))),
            Route::ContestExternalJoin {
                otherwise: Uncontested::JudgedBeforeOrOtherBranch
            }
        );
    }

    #[test]
    fn a_commit_without_snapshot_from_before_the_join_waits_unless_the_external_join_contests() {
        let before_join = joined_at(message(ContentType::Commit, PAST), PAST + 1);
        assert_eq!(
            route(&before_join),
            Route::ContestExternalJoin {
                otherwise: Uncontested::Buffer
            }
        );
        assert_eq!(
            route(&from_buffer(before_join)),
            Route::ContestExternalJoin {
                otherwise: Uncontested::Buffer
            }
        );
        // Joined at its epoch: it is of our membership.
        let at_join = joined_at(message(ContentType::Commit, PAST), PAST);
        assert_eq!(
            route(&at_join),
            Route::ContestExternalJoin {
                otherwise: Uncontested::JudgedBeforeOrForkOutsideWindow {
                    current_epoch: CURRENT
                }
            }
        );
    }

    #[test]
    fn a_proposal_or_application_without_snapshot_from_before_the_join_waits() {
        for content in [ContentType::Application, ContentType::Proposal] {
            let before_join = joined_at(message(content, PAST), PAST + 1);
            assert_eq!(route(&before_join), Route::Buffer);
            assert_eq!(route(&tagged(before_join, Some(THEIRS))), Route::Buffer);
        }
    }

    #[test]
    fn a_proposal_of_a_past_epoch_without_snapshot_is_stale() {
        assert_eq!(
            route(&message(ContentType::Proposal, PAST)),
            Route::StaleEpoch {
                current_epoch: CURRENT
            }
        );
        let at_join = joined_at(message(ContentType::Proposal, PAST), PAST);
        assert_eq!(
            route(&at_join),
            Route::StaleEpoch {
                current_epoch: CURRENT
            }
        );
    }

    #[test]
    fn an_application_message_of_a_past_epoch_without_snapshot_is_left_to_openmls() {
        assert_eq!(
            route(&message(ContentType::Application, PAST)),
            Route::Process
        );
        // No snapshot to tell its branch by: decryption does.
        let theirs = tagged(message(ContentType::Application, PAST), Some(THEIRS));
        assert_eq!(route(&theirs), Route::Process);
    }

    #[test]
    fn a_commit_of_a_kept_epoch_and_its_branch_competes_with_the_merged_one() {
        let kept = with_snapshot(message(ContentType::Commit, PAST), OURS);
        assert_eq!(route(&kept), Route::CompetingCommit);
        // The snapshot speaks for the epoch, even one kept across the join.
        assert_eq!(
            route(&joined_at(kept.clone(), PAST + 1)),
            Route::CompetingCommit
        );
        assert_eq!(route(&from_buffer(kept)), Route::CompetingCommit);
    }

    #[test]
    fn a_message_of_a_kept_epoch_and_another_branch_goes_to_other_branch() {
        for content in CONTENTS {
            let theirs = with_snapshot(message(content, PAST), THEIRS);
            assert_eq!(route(&theirs), Route::OtherBranch);
            assert_eq!(route(&joined_at(theirs, PAST + 1)), Route::OtherBranch);
        }
    }

    #[test]
    fn a_proposal_of_a_kept_epoch_and_its_branch_waits_with_the_snapshot() {
        let kept = with_snapshot(message(ContentType::Proposal, PAST), OURS);
        assert_eq!(route(&kept), Route::BufferProposal { replay: true });
        assert_eq!(
            route(&joined_at(kept.clone(), PAST + 1)),
            Route::BufferProposal { replay: true }
        );
        // From the buffer: it is being replayed already.
        assert_eq!(
            route(&from_buffer(kept)),
            Route::BufferProposal { replay: false }
        );
    }

    #[test]
    fn an_application_message_of_a_kept_epoch_and_its_branch_is_processed() {
        let kept = with_snapshot(message(ContentType::Application, PAST), OURS);
        assert_eq!(route(&kept), Route::Process);
        assert_eq!(route(&joined_at(kept, PAST)), Route::Process);
    }

    #[test]
    fn an_application_message_of_a_snapshot_kept_across_the_join_waits_for_a_rollback() {
        let kept = with_snapshot(message(ContentType::Application, PAST), OURS);
        assert_eq!(route(&joined_at(kept, PAST + 1)), Route::Buffer);
    }

    /// A message for a group not held: of a kept epoch's branch, with a snapshot kept, this
    /// device removed after the message's epoch, from the network.
    fn without_group(content: ContentType) -> WithoutGroupFacts {
        WithoutGroupFacts {
            content,
            of_kept_snapshot: true,
            restorable: true,
            from_before_removal: true,
            from_buffer: false,
        }
    }

    #[test]
    fn without_the_group_a_commit_of_a_kept_epochs_branch_is_judged_there() {
        let facts = without_group(ContentType::Commit);
        assert_eq!(
            route_without_group(&facts),
            WithoutGroupRoute::CompetingCommit
        );
    }

    #[test]
    fn without_the_group_a_proposal_of_a_kept_epochs_branch_waits_and_retries_its_commits() {
        let facts = without_group(ContentType::Proposal);
        assert_eq!(
            route_without_group(&facts),
            WithoutGroupRoute::BufferProposal {
                retry_commits: true
            }
        );
        // Replayed from the buffer, it retries nothing (the replay is that retry).
        let replayed = WithoutGroupFacts {
            from_buffer: true,
            ..facts
        };
        assert_eq!(
            route_without_group(&replayed),
            WithoutGroupRoute::BufferProposal {
                retry_commits: false
            }
        );
    }

    #[test]
    fn without_the_group_anything_else_waits_while_a_snapshot_is_kept() {
        for content in CONTENTS {
            let of_another_branch = WithoutGroupFacts {
                of_kept_snapshot: false,
                ..without_group(content)
            };
            assert_eq!(
                route_without_group(&of_another_branch),
                WithoutGroupRoute::Buffer
            );
        }
        let application = without_group(ContentType::Application);
        assert_eq!(route_without_group(&application), WithoutGroupRoute::Buffer);
    }

    #[test]
    fn without_the_group_and_any_snapshot_a_message_up_to_the_removal_is_refused() {
        for content in CONTENTS {
            let gone = WithoutGroupFacts {
                of_kept_snapshot: false,
                restorable: false,
                ..without_group(content)
            };
            assert_eq!(
                route_without_group(&gone),
                WithoutGroupRoute::NoLongerMember
            );
            // A later epoch's may come with a re-add (the Welcome can be overtaken).
            let later = WithoutGroupFacts {
                from_before_removal: false,
                ..gone
            };
            assert_eq!(route_without_group(&later), WithoutGroupRoute::Buffer);
        }
    }
}
