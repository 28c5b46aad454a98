//! After the operations: drive the world to quiescence, then check what must hold.
//!
//! 1. Convergence: founder 0's view is the winning branch; every device in it holds the group
//!    at founder 0's epoch with founder 0's epoch authenticator; every founder is in it.
//!    Devices holding the group outside it are orphans: counted, not a failure by themselves.
//! 2. Every `RejectedMessage` is explained (see `verdicts`); one that is not is a message lost
//!    on the winning branch (its own class when the message was older than `max_past_epochs`
//!    by the time it arrived: its epoch's secrets were gone).
//! 3. Exactly once: every message a founder sent is in every other founder's app database
//!    exactly once; so is every message another member encrypted on the winning branch; no app
//!    database holds a message twice.
//!    Every message is attributed to the device that sent it.
//! 4. Nothing left over: no device has pending outbound envelopes; no member has deferred sends.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use core_mls::{DeviceAddress, EnvelopeId};

use crate::verdicts::Failure;
use crate::world::{Rejection, World};

/// Rounds of "deliver everything, advance 61 s, tick everyone" before giving up.
const MAX_ROUNDS: usize = 30;

/// Check failure classes, most severe first.
const SEVERITY: [&str; 11] = [
    "message attributed to the wrong sender",
    "message delivered twice",
    "founder not a member",
    "member without the group",
    "member on another branch",
    "RejectedMessage on the winning branch",
    "message older than max_past_epochs",
    "founder message missing",
    "member message missing",
    "pending outbound",
    "pending deferred sends",
];

/// What a passing run ends with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub(crate) members: usize,
    pub(crate) orphans: usize,
    pub(crate) epoch: u64,
    pub(crate) rounds: usize,
}

impl World {
    /// Delivers everything and ticks everyone until a round puts nothing new in flight.
    pub(crate) fn quiesce(&mut self) -> Result<usize, Failure> {
        for round in 1..=MAX_ROUNDS {
            self.settle()?;
            self.take_up_rejoins()?;
            self.settle()?;
            self.clock.advance(Duration::from_secs(61));
            let sent_before = self.network.sent;
            let ticked = self.tick_all()?;
            self.note(format!("quiescence round {round}: {ticked}"));
            if self.network.sent == sent_before
                && self.network.is_empty()
                && self.rejoins.is_empty()
            {
                return Ok(round);
            }
        }
        Err(Failure::new(
            "not quiescent",
            format!(
                "still sending after {MAX_ROUNDS} rounds; {} in flight",
                self.network.len()
            ),
        ))
    }

    /// The checks after quiescence. Every failed check is listed; the first one names the class.
    pub(crate) fn check(&mut self) -> Result<Summary, Failure> {
        let mut problems: Vec<Failure> = Vec::new();
        let founders = self.scenario.founders;
        let Some(reference) = self.state(0) else {
            return Err(Failure::new(
                "founder not a member",
                "d0 no longer holds the group",
            ));
        };
        let view = self.view(0)?;

        // 1. Convergence on founder 0's branch.
        for founder in 1..founders {
            if !view.contains(&founder) {
                problems.push(Failure::new(
                    "founder not a member",
                    format!("d{founder} is not in d0's view {}", list(&view)),
                ));
            }
        }
        for &device in &view {
            match self.state(device) {
                None => problems.push(Failure::new(
                    "member without the group",
                    format!("d{device} is in d0's view but does not hold the group"),
                )),
                Some(state) if state != reference => problems.push(Failure::new(
                    "member on another branch",
                    format!(
                        "d{device} at epoch {} ({}), d0 at epoch {} ({})",
                        state.0,
                        short(&state.1),
                        reference.0,
                        short(&reference.1)
                    ),
                )),
                Some(_) => {}
            }
        }
        let orphans: Vec<usize> = (0..self.devices.len())
            .filter(|d| self.holds(*d) && !view.contains(d))
            .collect();
        self.tally.add_n("end: orphans", orphans.len() as u64);
        if !orphans.is_empty() {
            self.note(format!(
                "orphans (hold the group, not in d0's view): {}",
                list(&orphans)
            ));
        }
        let unhonoured: Vec<usize> = view
            .iter()
            .copied()
            .filter(|&d| self.devices[d].leaving)
            .collect();
        self.tally.add_n(
            "end: leaves not honoured (still members)",
            unhonoured.len() as u64,
        );

        // 2. Rejections, judged against the winning branch (before the losses they explain).
        let chain = self.devices[0].history.clone();
        let rejections = std::mem::take(&mut self.rejections);
        for rejection in &rejections {
            match self.excuse(rejection, &chain, &view) {
                Ok(why) => self.tally.add(format!("RejectedMessage accepted: {why}")),
                Err(problem) => problems.push(problem),
            }
        }

        // 3. Exactly once.
        problems.extend(self.check_exactly_once());

        // 4. Nothing left over.
        let group = self.group.clone();
        for device in 0..self.devices.len() {
            let pending = self.client(device)?.pending_outbound().map_err(|e| {
                Failure::new("engine call failed", format!("pending_outbound: {e}"))
            })?;
            if !pending.is_empty() {
                problems.push(Failure::new(
                    "pending outbound",
                    format!("d{device} has {} unacknowledged envelopes", pending.len()),
                ));
            }
        }
        for &device in &view {
            if !self.holds(device) {
                continue;
            }
            let deferred = self
                .client(device)?
                .pending_deferred_sends(&group)
                .map_err(|e| Failure::new("engine call failed", format!("deferred: {e}")))?;
            if deferred > 0 {
                problems.push(Failure::new(
                    "pending deferred sends",
                    format!("d{device} still holds {deferred} deferred messages"),
                ));
            }
        }

        for problem in &problems {
            self.tally.add(format!("check failed: {}", problem.class));
        }
        if problems.is_empty() {
            return Ok(Summary {
                members: view.len(),
                orphans: orphans.len(),
                epoch: reference.0,
                rounds: 0,
            });
        }
        // The most severe problem names the class (shrinking keeps to it).
        problems.sort_by_key(|p| {
            SEVERITY
                .iter()
                .position(|c| *c == p.class)
                .unwrap_or(SEVERITY.len())
        });
        if problems.len() == 1 {
            return Err(problems.remove(0));
        }
        let class = problems[0].class.clone();
        let mut detail = format!("{} problems:", problems.len());
        for problem in problems.iter().take(12) {
            detail += &format!("\n    {problem}");
        }
        if problems.len() > 12 {
            detail += &format!("\n    … and {} more", problems.len() - 12);
        }
        Err(Failure::new(class, detail))
    }

    fn check_exactly_once(&self) -> Vec<Failure> {
        let mut problems = Vec::new();
        let founders = self.scenario.founders;
        let counts: Vec<HashMap<(DeviceAddress, [u8; 16]), usize>> = self
            .devices
            .iter()
            .map(|d| {
                let mut counts = HashMap::new();
                for key in &d.app {
                    *counts.entry(*key).or_insert(0) += 1;
                }
                counts
            })
            .collect();
        for (device, counts) in counts.iter().enumerate() {
            for ((sender, _), n) in counts {
                if *n > 1 {
                    let sender = self
                        .index_of(sender)
                        .map_or("?".to_owned(), |s| format!("d{s}"));
                    problems.push(Failure::new(
                        "message delivered twice",
                        format!("d{device} holds a message from {sender} {n} times"),
                    ));
                }
            }
        }
        let senders: HashMap<[u8; 16], usize> =
            self.sent.iter().map(|s| (s.message_id, s.sender)).collect();
        for (device, d) in self.devices.iter().enumerate() {
            for (sender, message_id) in &d.app {
                if let Some(&actual) = senders.get(message_id)
                    && self.devices[actual].address() != *sender
                {
                    let shown = self
                        .index_of(sender)
                        .map_or("?".to_owned(), |s| format!("d{s}"));
                    problems.push(Failure::new(
                        "message attributed to the wrong sender",
                        format!("d{device} got a message of d{actual} as one from {shown}"),
                    ));
                }
            }
        }
        let chain = &self.devices[0].history;
        let on_chain = |envelope: &EnvelopeId| {
            self.origins.get(envelope).and_then(|o| {
                let epoch = o.epoch?;
                (chain.get(&epoch).is_some() && o.authenticator.as_ref() == chain.get(&epoch))
                    .then_some(epoch)
            })
        };
        for (index, sent) in self.sent.iter().enumerate() {
            let founder = sent.sender < founders;
            let on_winning_branch = sent
                .envelope
                .and_then(|e| self.origins.get(&e))
                .is_some_and(|o| {
                    o.epoch.is_some_and(|e| chain.get(&e).is_some())
                        && o.authenticator.as_ref() == o.epoch.and_then(|e| chain.get(&e))
                });
            if !founder && !on_winning_branch {
                continue;
            }
            let key = (self.devices[sent.sender].address(), sent.message_id);
            let made_in = sent
                .envelope
                .and_then(|e| self.origins.get(&e))
                .and_then(|o| o.epoch);
            for receiver in (0..founders).filter(|&f| f != sent.sender) {
                // A founder that rejoined by external commit after the message's epoch cannot
                // read it (`Rejoined` told its app so).
                let rejoined_after = self.devices[receiver]
                    .rejoined_at
                    .zip(made_in)
                    .is_some_and(|(rejoined, made)| rejoined > made);
                // Or the message was made on a branch that lost and sent again (`resends`) only
                // in epochs before the receiver's rejoin: it cannot read those either. Which
                // messages a re-send carries is not visible here, so the sender's re-sends
                // after it stand for it: excused only if it re-sent in an epoch before the
                // rejoin, and never on the winning branch at or after it. (Before the rejoin
                // the chain is unknown when the receiver is device 0, whose history a rejoin
                // clears; the epoch alone says the receiver cannot read it.)
                let resent_before_rejoin =
                    self.devices[receiver].rejoined_at.is_some_and(|joined| {
                        let readable = |envelope: &EnvelopeId| {
                            on_chain(envelope).is_some_and(|epoch| epoch >= joined)
                        };
                        let resent: Vec<EnvelopeId> = self
                            .resends
                            .iter()
                            .filter(|r| r.sender == sent.sender && r.sent_before > index)
                            .map(|r| r.envelope)
                            .collect();
                        !sent.envelope.as_ref().is_some_and(readable)
                            && resent.iter().any(|e| {
                                self.origins
                                    .get(e)
                                    .and_then(|o| o.epoch)
                                    .is_some_and(|epoch| epoch < joined)
                            })
                            && !resent.iter().any(readable)
                    });
                if counts[receiver].get(&key).copied().unwrap_or(0) == 0
                    && !rejoined_after
                    && !resent_before_rejoin
                {
                    let (class, what) = if founder {
                        ("founder message missing", "founder")
                    } else {
                        ("member message missing", "member (on the winning branch)")
                    };
                    problems.push(Failure::new(
                        class,
                        format!(
                            "d{receiver} never got a message of {what} d{} ({})",
                            sent.sender,
                            short(&sent.message_id)
                        ),
                    ));
                }
            }
        }
        problems
    }

    /// Why a `RejectedMessage` is acceptable, or the failure it is.
    fn excuse(
        &self,
        rejection: &Rejection,
        chain: &BTreeMap<u64, Vec<u8>>,
        view: &[usize],
    ) -> Result<&'static str, Failure> {
        if !view.contains(&rejection.receiver) {
            return Ok("receiver not on the winning branch at the end");
        }
        let Some((epoch, authenticator)) = &rejection.receiver_state else {
            return Ok("receiver did not hold the group then");
        };
        if chain.get(epoch) != Some(authenticator) {
            return Ok("receiver was on another branch then");
        }
        let origin = self.origins.get(&rejection.envelope);
        let origin_epoch = origin.and_then(|o| o.epoch);
        if let Some(origin) = origin {
            let made_on = origin.epoch.and_then(|e| chain.get(&e));
            if made_on.is_none() || made_on != origin.authenticator.as_ref() {
                return Ok("message made on another branch");
            }
        }
        if let (Some(joined), Some(made)) = (rejection.receiver_joined_at, origin_epoch)
            && joined > made
        {
            return Ok("receiver joined again after the message's epoch");
        }
        let class = match origin_epoch {
            Some(made) if epoch.saturating_sub(made) > self.config.max_past_epochs as u64 => {
                // Its epoch's secrets are gone: a loss on the winning branch all the same.
                "message older than max_past_epochs"
            }
            _ => "RejectedMessage on the winning branch",
        };
        Err(Failure::new(
            class,
            format!(
                "d{} at epoch {epoch} refused a message of epoch {} from {}: {}",
                rejection.receiver,
                origin_epoch.map_or("?".to_owned(), |e| e.to_string()),
                origin.map_or("?".to_owned(), |o| format!("d{}", o.sender)),
                rejection.reason
            ),
        ))
    }
}

fn list(devices: &[usize]) -> String {
    let names: Vec<String> = devices.iter().map(|d| format!("d{d}")).collect();
    format!("[{}]", names.join(" "))
}

fn short(bytes: &[u8]) -> String {
    hex::encode(bytes.get(..4).unwrap_or(bytes))
}
