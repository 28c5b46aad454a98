//! What one seed simulates: the devices (how many, which are second devices of the same user,
//! which are founders), the store kind, and the list of operations — all drawn from the seed
//! up front, so that a failing run can be replayed and shrunk by removing operations.
//!
//! Operations name devices by index and are resolved against the live state when they run: one
//! that does not apply then (the actor is not in the group, the target already is, …) is
//! skipped. To keep most of them applicable, generation follows a rough model of who is in the
//! group (it assumes every add, remove and leave takes effect).

use std::collections::BTreeSet;
use std::fmt;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// One simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceSpec {
    /// `d<index>`.
    pub(crate) name: String,
    /// `Some(i)`: a second device of device `i`'s user (identity key imported from it).
    pub(crate) same_user_as: Option<usize>,
}

/// Everything a run is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scenario {
    pub(crate) seed: u64,
    pub(crate) devices: Vec<DeviceSpec>,
    /// Devices `0..founders` are in the group from the start, never removed, never leave.
    pub(crate) founders: usize,
    /// RedbStore files in a temporary directory instead of MemoryStores.
    pub(crate) redb: bool,
    pub(crate) ops: Vec<Op>,
}

/// A commit a member makes (alone or as part of [`Op::Concurrent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    SelfUpdate,
    /// Add this device with a key package not handed out before.
    Add(usize),
    /// Remove this (non-founder) device.
    RemoveDevice(usize),
}

/// Where a crash happens: the device runs this, then its client is dropped without the
/// output being absorbed (no `ack_sent`, no events seen by the app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    Send,
    Leave,
    Commit(Commit),
    /// While handling one incoming envelope (which the network then delivers again).
    Delivery,
}

/// One step of the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Deliver up to `count` envelopes chosen at random among those ready.
    Deliver {
        count: usize,
    },
    Send {
        actor: usize,
    },
    SelfUpdate {
        actor: usize,
    },
    /// `claim`: the target is told (`mark_key_package_claimed`) if it is open.
    Add {
        actor: usize,
        target: usize,
        claim: bool,
    },
    RemoveDevice {
        actor: usize,
        target: usize,
    },
    /// Removes every device of the target's user.
    RemoveUser {
        actor: usize,
        target: usize,
    },
    Leave {
        actor: usize,
    },
    /// Everything in flight is delivered, then these members commit one after the other with
    /// nothing delivered in between: commits of the same epoch.
    Concurrent {
        commits: Vec<(usize, Commit)>,
    },
    /// Advance the clock a little and `tick` every open device.
    Tick {
        advance_ms: u64,
    },
    /// Advance the clock past `pending_proposal_timeout` and `tick` every open device.
    ProposalTimeout,
    /// Drop the client after everything was absorbed and reopen it from its store.
    Restart {
        device: usize,
    },
    /// Crash at `during`; the device stays closed for `down_steps` steps (its envelopes wait).
    Crash {
        device: usize,
        during: CrashPoint,
        down_steps: u64,
    },
    /// The (non-founder) device loses its store: it is restored under its device id from its
    /// user's identity key, and rejoins by external commit with a member's GroupInfo.
    LoseStore {
        device: usize,
    },
    /// The (non-founder) device is cut off while it and founder 0 each commit more times than
    /// the fork window holds; then the link heals, and the side that is outranked rejoins the
    /// other by external commit.
    FallBehind {
        device: usize,
    },
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Commit::SelfUpdate => write!(f, "self-update"),
            Commit::Add(target) => write!(f, "add d{target}"),
            Commit::RemoveDevice(target) => write!(f, "remove device d{target}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Deliver { count } => write!(f, "deliver up to {count}"),
            Op::Send { actor } => write!(f, "d{actor} send"),
            Op::SelfUpdate { actor } => write!(f, "d{actor} self-update"),
            Op::Add {
                actor,
                target,
                claim,
            } => write!(
                f,
                "d{actor} add d{target}{}",
                if *claim { " (claimed)" } else { "" }
            ),
            Op::RemoveDevice { actor, target } => write!(f, "d{actor} remove device d{target}"),
            Op::RemoveUser { actor, target } => write!(f, "d{actor} remove user of d{target}"),
            Op::Leave { actor } => write!(f, "d{actor} leave"),
            Op::Concurrent { commits } => {
                write!(f, "concurrent [")?;
                for (i, (actor, commit)) in commits.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}d{actor} {commit}")?;
                }
                write!(f, "]")
            }
            Op::Tick { advance_ms } => write!(f, "tick all after {advance_ms} ms"),
            Op::ProposalTimeout => write!(f, "tick all after the proposal timeout (61 s)"),
            Op::Restart { device } => write!(f, "restart d{device}"),
            Op::Crash {
                device,
                during,
                down_steps,
            } => {
                let what = match during {
                    CrashPoint::Send => "send".to_owned(),
                    CrashPoint::Leave => "leave".to_owned(),
                    CrashPoint::Commit(commit) => commit.to_string(),
                    CrashPoint::Delivery => "an incoming envelope".to_owned(),
                };
                write!(f, "crash d{device} during {what}, down {down_steps} steps")
            }
            Op::LoseStore { device } => write!(f, "d{device} loses its store"),
            Op::FallBehind { device } => {
                write!(f, "d{device} falls outside the fork window (cut off)")
            }
        }
    }
}

impl Scenario {
    /// The root device of `device`'s user (the one whose identity key it uses).
    pub(crate) fn user_root(&self, device: usize) -> usize {
        self.devices
            .get(device)
            .and_then(|d| d.same_user_as)
            .unwrap_or(device)
    }

    pub(crate) fn same_user(&self, a: usize, b: usize) -> bool {
        self.user_root(a) == self.user_root(b)
    }

    /// Whether any device of `device`'s user is a founder (such a user is never removed).
    pub(crate) fn user_has_founder(&self, device: usize) -> bool {
        (0..self.founders).any(|f| self.same_user(f, device))
    }
}

/// Draws the scenario of `seed`.
pub(crate) fn generate(seed: u64) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let count = rng.gen_range(3..=8);
    let founders = rng.gen_range(2..=3).min(count - 1);
    let mut devices: Vec<DeviceSpec> = Vec::with_capacity(count);
    for index in 0..count {
        let same_user_as = if index > 0 && rng.gen_bool(0.25) {
            // Second devices point at a first device, never at another second device.
            let other = rng.gen_range(0..index);
            Some(devices[other].same_user_as.unwrap_or(other))
        } else {
            None
        };
        devices.push(DeviceSpec {
            name: format!("d{index}"),
            same_user_as,
        });
    }
    let mut scenario = Scenario {
        seed,
        devices,
        founders,
        redb: seed % 25 == 13,
        ops: Vec::new(),
    };
    let op_count = rng.gen_range(20..=40);
    let mut model: BTreeSet<usize> = (0..founders).collect();
    for _ in 0..op_count {
        let op = draw_op(&mut rng, &scenario, &mut model);
        scenario.ops.push(op);
    }
    insert_recovery_ops(seed, &mut scenario);
    scenario
}

/// Lost stores and falls outside the fork window, drawn from their own stream so that the
/// other operations of a seed stay what they were before these existed.
fn insert_recovery_ops(seed: u64, scenario: &mut Scenario) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4C05_7E57_0F57_0BE5);
    let count = scenario.devices.len();
    if count <= scenario.founders {
        return;
    }
    for (probability, lose) in [(0.15, true), (0.08, false)] {
        if !rng.gen_bool(probability) {
            continue;
        }
        let device = rng.gen_range(scenario.founders..count);
        let at = rng.gen_range(0..=scenario.ops.len());
        let op = if lose {
            Op::LoseStore { device }
        } else {
            Op::FallBehind { device }
        };
        scenario.ops.insert(at, op);
    }
}

fn draw_op(rng: &mut StdRng, s: &Scenario, model: &mut BTreeSet<usize>) -> Op {
    let n = s.devices.len();
    let non_members: Vec<usize> = (0..n).filter(|d| !model.contains(d)).collect();
    let removable: Vec<usize> = model.iter().copied().filter(|&d| d >= s.founders).collect();
    let roll = rng.gen_range(0..100);
    match roll {
        0..=21 => Op::Deliver {
            count: rng.gen_range(1..=8),
        },
        22..=41 => Op::Send {
            actor: pick_member(rng, s, model),
        },
        42..=48 => Op::SelfUpdate {
            actor: pick_member(rng, s, model),
        },
        49..=60 if !non_members.is_empty() => {
            let target = *non_members.choose(rng).unwrap_or(&0);
            model.insert(target);
            Op::Add {
                actor: pick_member(rng, s, model),
                target,
                claim: rng.gen_bool(0.5),
            }
        }
        61..=65 if !removable.is_empty() => {
            let target = *removable.choose(rng).unwrap_or(&0);
            model.remove(&target);
            let actor = pick_member(rng, s, model);
            Op::RemoveDevice { actor, target }
        }
        66..=68 => {
            let users: Vec<usize> = removable
                .iter()
                .copied()
                .filter(|&d| !s.user_has_founder(d))
                .collect();
            let Some(&target) = users.choose(rng) else {
                return Op::Send {
                    actor: pick_member(rng, s, model),
                };
            };
            model.retain(|&d| !s.same_user(d, target));
            let actor = pick_member(rng, s, model);
            Op::RemoveUser { actor, target }
        }
        69..=72 if !removable.is_empty() => {
            let actor = *removable.choose(rng).unwrap_or(&0);
            model.remove(&actor);
            Op::Leave { actor }
        }
        73..=78 => Op::Concurrent {
            commits: draw_concurrent(rng, s, model),
        },
        79..=84 => Op::Tick {
            advance_ms: rng.gen_range(100..=5_000),
        },
        85..=86 => Op::ProposalTimeout,
        87..=90 => Op::Restart {
            device: rng.gen_range(0..n),
        },
        91..=99 => {
            let device = rng.gen_range(0..n);
            let during = match rng.gen_range(0..10) {
                0..=2 => CrashPoint::Send,
                3..=5 => CrashPoint::Delivery,
                6 if device >= s.founders => CrashPoint::Leave,
                _ => CrashPoint::Commit(draw_commit(rng, s, model, device, &[])),
            };
            Op::Crash {
                device,
                during,
                down_steps: if rng.gen_bool(0.5) {
                    0
                } else {
                    rng.gen_range(1..=6)
                },
            }
        }
        _ => Op::Send {
            actor: pick_member(rng, s, model),
        },
    }
}

/// A member of the model, a founder half of the time.
fn pick_member(rng: &mut StdRng, s: &Scenario, model: &BTreeSet<usize>) -> usize {
    if rng.gen_bool(0.5) {
        return rng.gen_range(0..s.founders);
    }
    let members: Vec<usize> = model.iter().copied().collect();
    members.choose(rng).copied().unwrap_or(0)
}

fn draw_concurrent(
    rng: &mut StdRng,
    s: &Scenario,
    model: &mut BTreeSet<usize>,
) -> Vec<(usize, Commit)> {
    let mut members: Vec<usize> = model.iter().copied().collect();
    members.shuffle(rng);
    let k = rng.gen_range(2..=3).min(members.len());
    let mut commits: Vec<(usize, Commit)> = Vec::with_capacity(k);
    let mut touched = Vec::new();
    for &actor in members.iter().take(k) {
        let commit = draw_commit(rng, s, model, actor, &touched);
        match commit {
            Commit::Add(t) | Commit::RemoveDevice(t) => touched.push(t),
            Commit::SelfUpdate => {}
        }
        commits.push((actor, commit));
    }
    for (_, commit) in &commits {
        match commit {
            Commit::Add(t) => {
                model.insert(*t);
            }
            Commit::RemoveDevice(t) => {
                model.remove(t);
            }
            Commit::SelfUpdate => {}
        }
    }
    commits
}

/// A commit `actor` could make, avoiding devices another commit of the same batch touches.
fn draw_commit(
    rng: &mut StdRng,
    s: &Scenario,
    model: &BTreeSet<usize>,
    actor: usize,
    touched: &[usize],
) -> Commit {
    let free = |d: &usize| *d != actor && !touched.contains(d);
    let addable: Vec<usize> = (0..s.devices.len())
        .filter(|d| !model.contains(d))
        .filter(free)
        .collect();
    let removable: Vec<usize> = model
        .iter()
        .copied()
        .filter(|&d| d >= s.founders)
        .filter(free)
        .collect();
    match rng.gen_range(0..10) {
        0..=2 if !addable.is_empty() => Commit::Add(*addable.choose(rng).unwrap_or(&0)),
        3..=4 if !removable.is_empty() => {
            Commit::RemoveDevice(*removable.choose(rng).unwrap_or(&0))
        }
        _ => Commit::SelfUpdate,
    }
}

/// Operation kinds, as `SIM_SKIP` names them.
pub(crate) const KINDS: [&str; 14] = [
    "deliver",
    "send",
    "self_update",
    "add",
    "remove_device",
    "remove_user",
    "leave",
    "concurrent",
    "tick",
    "timeout",
    "restart",
    "crash",
    "lose_store",
    "fall_behind",
];

impl Commit {
    fn kind(self) -> &'static str {
        match self {
            Commit::SelfUpdate => "self_update",
            Commit::Add(_) => "add",
            Commit::RemoveDevice(_) => "remove_device",
        }
    }
}

impl Scenario {
    /// The scenario without operations of the given kinds (also inside concurrent commits and
    /// crashes): a way to tell which kind of operation a failure needs.
    pub(crate) fn without(mut self, skip: &[String]) -> Self {
        if skip.is_empty() {
            return self;
        }
        let skipped = |kind: &str| skip.iter().any(|s| s == kind);
        self.ops = self
            .ops
            .into_iter()
            .filter_map(|op| {
                let kind = match &op {
                    Op::Deliver { .. } => "deliver",
                    Op::Send { .. } => "send",
                    Op::SelfUpdate { .. } => "self_update",
                    Op::Add { .. } => "add",
                    Op::RemoveDevice { .. } => "remove_device",
                    Op::RemoveUser { .. } => "remove_user",
                    Op::Leave { .. } => "leave",
                    Op::Concurrent { .. } => "concurrent",
                    Op::Tick { .. } => "tick",
                    Op::ProposalTimeout => "timeout",
                    Op::Restart { .. } => "restart",
                    Op::Crash { .. } => "crash",
                    Op::LoseStore { .. } => "lose_store",
                    Op::FallBehind { .. } => "fall_behind",
                };
                if skipped(kind) {
                    return None;
                }
                match op {
                    Op::Concurrent { commits } => {
                        let commits: Vec<(usize, Commit)> = commits
                            .into_iter()
                            .filter(|(_, c)| !skipped(c.kind()))
                            .collect();
                        (!commits.is_empty()).then_some(Op::Concurrent { commits })
                    }
                    Op::Crash { during, .. } => {
                        let inner = match during {
                            CrashPoint::Send => Some("send"),
                            CrashPoint::Leave => Some("leave"),
                            CrashPoint::Commit(c) => Some(c.kind()),
                            CrashPoint::Delivery => None,
                        };
                        (!inner.is_some_and(skipped)).then_some(op)
                    }
                    other => Some(other),
                }
            })
            .collect();
        self
    }
}
