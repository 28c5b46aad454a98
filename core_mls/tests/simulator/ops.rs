//! Running one [`Op`] against the world: resolve it against the live state (skip it if it does
//! not apply), call the engine, absorb the output — or, for a crash, drop it.

use core_mls::{MlsClient, MlsError, Output};

use crate::scenario::{Commit, CrashPoint, Op};
use crate::verdicts::{Failure, is_stale_view, variant_name};
use crate::world::World;

/// Something a device does that the app starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Send,
    Leave,
    SelfUpdate,
    Add { target: usize, claim: bool },
    RemoveDevice(usize),
    RemoveUser(usize),
}

impl From<Commit> for Action {
    fn from(commit: Commit) -> Self {
        match commit {
            Commit::SelfUpdate => Action::SelfUpdate,
            Commit::Add(target) => Action::Add {
                target,
                claim: false,
            },
            Commit::RemoveDevice(target) => Action::RemoveDevice(target),
        }
    }
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Send => "send",
            Action::Leave => "leave_group",
            Action::SelfUpdate => "self_update",
            Action::Add { .. } => "add_members",
            Action::RemoveDevice(_) => "remove_device",
            Action::RemoveUser(_) => "remove_user",
        }
    }
}

/// One call into a device's engine.
type EngineCall = Box<dyn FnOnce(&mut MlsClient) -> Result<Output, MlsError>>;

/// An action that did not apply, or the engine's answer.
enum Attempt {
    Skipped(String),
    Done(Result<Output, MlsError>),
}

impl World {
    /// Runs one operation: one simulation step.
    pub(crate) fn apply(&mut self, op: &Op) -> Result<(), Failure> {
        self.step += 1;
        self.wake_due()?;
        self.take_up_rejoins()?;
        let commits_before = self.commits_made;
        if self.verbose() {
            let step = self.step;
            self.note(format!("#{step} {op}"));
        }
        let outcome = self.run_op(op)?;
        self.note(format!("  => {outcome}"));
        self.deliver_overdue()?;
        if self.options.no_concurrent && self.commits_made != commits_before {
            self.settle()?;
        }
        Ok(())
    }

    /// Everything delivered, closed devices included (the no-concurrency mode does this after
    /// every commit, so the next commit is made on the latest epoch).
    pub(crate) fn settle(&mut self) -> Result<(), Failure> {
        self.wake_all()?;
        self.flush()
    }

    fn run_op(&mut self, op: &Op) -> Result<String, Failure> {
        match *op {
            Op::Deliver { count } => {
                let delivered = self.deliver_ready(count)?;
                Ok(format!(
                    "{delivered} delivered, {} in flight",
                    self.network.len()
                ))
            }
            Op::Send { actor } => self.act(actor, Action::Send),
            Op::SelfUpdate { actor } => self.act(actor, Action::SelfUpdate),
            Op::Add {
                actor,
                target,
                claim,
            } => {
                if self.options.serial_adds {
                    self.settle()?;
                }
                let outcome = self.act(actor, Action::Add { target, claim });
                if self.options.serial_adds {
                    self.settle()?;
                }
                outcome
            }
            Op::RemoveDevice { actor, target } => self.act(actor, Action::RemoveDevice(target)),
            Op::RemoveUser { actor, target } => self.act(actor, Action::RemoveUser(target)),
            Op::Leave { actor } => self.act(actor, Action::Leave),
            Op::Concurrent { ref commits } => {
                if !self.options.no_concurrent {
                    // Same epoch: everything reachable is delivered first, nothing in between.
                    self.flush()?;
                }
                let mut outcomes = Vec::with_capacity(commits.len());
                // Serial adds: the adds of a concurrent step go first, each settled, and the
                // other commits race each other.
                let mut commits = commits.clone();
                if self.options.serial_adds {
                    commits.sort_by_key(|(_, commit)| !matches!(commit, Commit::Add(_)));
                }
                for &(actor, commit) in &commits {
                    let is_add = matches!(commit, Commit::Add(_));
                    if self.options.serial_adds && is_add {
                        self.settle()?;
                    }
                    let before = self.commits_made;
                    outcomes.push(format!("d{actor} {}", self.act(actor, commit.into())?));
                    if (self.options.no_concurrent || (self.options.serial_adds && is_add))
                        && self.commits_made != before
                    {
                        self.settle()?;
                    }
                }
                Ok(outcomes.join("; "))
            }
            Op::Tick { advance_ms } => {
                self.clock
                    .advance(std::time::Duration::from_millis(advance_ms));
                self.tick_all()
            }
            Op::ProposalTimeout => {
                self.clock.advance(std::time::Duration::from_secs(61));
                self.tick_all()
            }
            Op::Restart { device } => {
                if !self.is_open(device) {
                    return Ok("skipped: closed".to_owned());
                }
                self.close(device);
                self.reopen(device)?;
                Ok("restarted".to_owned())
            }
            Op::Crash {
                device,
                during,
                down_steps,
            } => self.crash(device, during, down_steps),
            Op::LoseStore { device } => self.lose_store(device),
            Op::FallBehind { device } => self.fall_behind(device),
        }
    }

    /// Runs an action and absorbs its output.
    pub(crate) fn act(&mut self, actor: usize, action: Action) -> Result<String, Failure> {
        match self.attempt(actor, action)? {
            Attempt::Skipped(why) => {
                self.tally.add(format!("op {} skipped", action.name()));
                Ok(format!("skipped: {why}"))
            }
            Attempt::Done(Ok(output)) => {
                self.tally.add(format!("op {} ok", action.name()));
                if action == Action::Leave {
                    self.devices[actor].leaving = true;
                }
                let summary = format!("ok, {} envelopes", output.outbound.len());
                self.absorb(actor, output)?;
                Ok(summary)
            }
            Attempt::Done(Err(error)) => self.op_error(actor, action, &error),
        }
    }

    fn op_error(
        &mut self,
        actor: usize,
        action: Action,
        error: &MlsError,
    ) -> Result<String, Failure> {
        let name = variant_name(error);
        if is_stale_view(error) {
            self.tally
                .add(format!("op {} stale view: {name}", action.name()));
            Ok(format!("stale view: {error}"))
        } else {
            Err(Failure::new(
                format!("op error {name}"),
                format!("d{actor} {} at step {}: {error}", action.name(), self.step),
            ))
        }
    }

    /// Resolves an action against the live state and calls the engine.
    fn attempt(&mut self, actor: usize, action: Action) -> Result<Attempt, Failure> {
        let skip = |why: &str| Ok(Attempt::Skipped(why.to_owned()));
        if !self.is_open(actor) {
            return skip("actor closed");
        }
        if !self.holds(actor) {
            return skip("actor not in the group");
        }
        let commits = !matches!(action, Action::Send | Action::Leave);
        if commits && self.devices[actor].leaving {
            // Its own Remove proposal may be pending: OpenMLS refuses any commit of the leaver.
            return skip("actor asked to leave");
        }
        let group = self.group.clone();
        let call: EngineCall = match action {
            Action::Send => {
                let body = format!("step {} from d{actor}", self.step).into_bytes();
                Box::new(move |c| c.send(&group, &body))
            }
            Action::Leave => {
                if actor < self.scenario.founders {
                    return skip("founders never leave");
                }
                Box::new(move |c| c.leave_group(&group))
            }
            Action::SelfUpdate => Box::new(move |c| c.self_update(&group)),
            Action::Add { target, claim } => {
                if target == actor || self.view(actor)?.contains(&target) {
                    return skip("target already in the actor's view");
                }
                let Some(package) = self.take_key_package(target, claim)? else {
                    return skip("no key package left");
                };
                Box::new(move |c| c.add_members(&group, &[package]))
            }
            Action::RemoveDevice(target) => {
                if target < self.scenario.founders || target == actor {
                    return skip("founders are never removed");
                }
                if !self.view(actor)?.contains(&target) {
                    return skip("target not in the actor's view");
                }
                let address = self.devices[target].address();
                Box::new(move |c| c.remove_device(&group, &address.user_id, &address.device_id))
            }
            Action::RemoveUser(target) => {
                if self.scenario.user_has_founder(target) || self.scenario.same_user(actor, target)
                {
                    return skip("user has a founder device, or is the actor's");
                }
                let view = self.view(actor)?;
                if !view.iter().any(|&d| self.scenario.same_user(d, target)) {
                    return skip("no device of the user in the actor's view");
                }
                let user = self.devices[target].address().user_id;
                Box::new(move |c| c.remove_user(&group, &user))
            }
        };
        Ok(Attempt::Done(self.call(actor, call)))
    }

    /// Ticks every open device at the clock's time.
    pub(crate) fn tick_all(&mut self) -> Result<String, Failure> {
        let mut committed = Vec::new();
        for device in 0..self.devices.len() {
            if !self.is_open(device) {
                continue;
            }
            let now = self.clock_now();
            let before = self.commits_made;
            let output = self.call(device, |c| c.tick(now)).map_err(|e| {
                Failure::new(
                    format!("tick error {}", variant_name(&e)),
                    format!("d{device} at step {}: {e}", self.step),
                )
            })?;
            self.absorb(device, output)?;
            if self.commits_made != before {
                committed.push(format!("d{device}"));
                if self.options.no_concurrent {
                    self.settle()?;
                }
            }
        }
        Ok(if committed.is_empty() {
            "nothing committed".to_owned()
        } else {
            format!("committed by {}", committed.join(" "))
        })
    }

    pub(crate) fn clock_now(&self) -> spacepanda_core::Timestamp {
        use spacepanda_core::Clock as _;
        self.clock.now()
    }

    /// Runs something on the device, drops its output unseen, closes the device; it comes back
    /// after `down_steps` steps (at once for 0).
    fn crash(
        &mut self,
        device: usize,
        during: CrashPoint,
        down_steps: u64,
    ) -> Result<String, Failure> {
        if !self.is_open(device) {
            return Ok("skipped: closed".to_owned());
        }
        let action = match during {
            CrashPoint::Send => Some(Action::Send),
            CrashPoint::Leave => Some(Action::Leave),
            CrashPoint::Commit(commit) => Some(commit.into()),
            CrashPoint::Delivery => None,
        };
        // Serial adds: an add interrupted by a crash is still made alone — everything before
        // it delivered, the device back at once, and its outbox delivered before anything else.
        let serial_add = self.options.serial_adds && matches!(action, Some(Action::Add { .. }));
        if serial_add {
            self.settle()?;
        }
        let what = match action {
            None => match self.network.take_for(self.step, device) {
                None => "nothing in flight for it".to_owned(),
                Some(item) => {
                    let bytes = std::rc::Rc::clone(&item.payload.bytes);
                    let source = crate::delivery::peer_source(item.payload.from);
                    let result = self.call(device, |c| c.handle_envelope_from(&bytes, &source));
                    if let Err(error) = &result {
                        self.envelope_error(&item, error)?;
                    }
                    // The device never told the network it got the envelope: it comes again.
                    let step = self.step;
                    self.network.push(item, step);
                    format!(
                        "handled {}",
                        if result.is_ok() {
                            "ok"
                        } else {
                            "with an error"
                        }
                    )
                }
            },
            Some(action) => match self.attempt(device, action)? {
                Attempt::Skipped(why) => return Ok(format!("skipped: {why}")),
                Attempt::Done(Ok(_dropped)) => {
                    self.tally
                        .add(format!("op {} ok then crash", action.name()));
                    if action == Action::Leave {
                        self.devices[device].leaving = true;
                    }
                    format!("{} ok", action.name())
                }
                Attempt::Done(Err(error)) => self.op_error(device, action, &error)?,
            },
        };
        self.close(device);
        self.tally.add("crash");
        if serial_add {
            self.reopen(device)?;
            self.settle()?;
        } else if down_steps == 0 {
            self.reopen(device)?;
        } else {
            self.devices[device].down_until = Some(self.step + down_steps);
        }
        Ok(format!("{what}, crashed"))
    }
}
