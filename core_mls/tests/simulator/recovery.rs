//! Recovery by external commit, as an application (core_dht's `Node`) drives it: a device that
//! lost its store rejoins with a member's GroupInfo; after a fork outside the window, or when
//! its rejoin raced a commit (`RejoinContested`), a device asks members for their GroupInfo
//! and follows `rejoin_advice` — first the member whose GroupInfo it last joined with (which
//! judged the race: its "stay" is final), then the sender of the commit it could not judge,
//! then the others, until one says to rejoin.

use core_mls::{MlsError, RejoinAdvice};
use spacepanda_testkit::DeviceError;

use crate::ops::Action;
use crate::verdicts::{Failure, variant_name};
use crate::world::World;

/// A device that should rejoin, and whom to ask first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RejoinRequest {
    pub(crate) device: usize,
    /// The member to ask first (the sender of a commit outside the window, the source of a
    /// contested rejoin); founders and other members otherwise.
    pub(crate) ask: Option<usize>,
    /// Members that refused this device a GroupInfo in the current round (they did not see
    /// its user in the group: removed, or not yet judged the commit that added it).
    refused: Vec<usize>,
    /// Rounds in which every member asked refused.
    refused_rounds: u32,
    /// Rounds in which a member said "ask later" and none said to rejoin.
    ask_later_rounds: u32,
}

/// Rounds of refusals from every member before the app gives up: the user was removed.
const REFUSED_ROUNDS: u32 = 3;

/// Members asked in one attempt, as the Node's `MEMBERS_ASKED`.
const MEMBERS_ASKED: usize = 8;

/// Rounds of "ask later" before the app gives up, as the Node's `ADVICE_ROUNDS`: a member that
/// says so may be stuck itself (cut off from the group, leaving), and asking it again forever
/// is a device that never goes quiet.
const ADVICE_ROUNDS: u32 = 8;

/// What came of one attempt.
enum Attempt {
    /// Done with (joined, told to stay, or refused for good).
    Settled,
    /// Nobody could answer yet, or the answer was "ask later".
    Again,
}

impl World {
    /// The app on `device` wants to rejoin (at most one request per device: a newer one only
    /// changes whom to ask).
    pub(crate) fn want_rejoin(&mut self, device: usize, ask: Option<usize>) {
        if let Some(request) = self.rejoins.iter_mut().find(|r| r.device == device) {
            if ask.is_some() {
                request.ask = ask;
            }
            return;
        }
        self.rejoins.push(RejoinRequest {
            device,
            ask,
            refused: Vec::new(),
            refused_rounds: 0,
            ask_later_rounds: 0,
        });
    }

    /// Tries every waiting rejoin once.
    pub(crate) fn take_up_rejoins(&mut self) -> Result<(), Failure> {
        let requests = std::mem::take(&mut self.rejoins);
        for mut request in requests {
            match self.try_rejoin(&mut request)? {
                Attempt::Settled => {}
                Attempt::Again => self.rejoins.push(request),
            }
        }
        Ok(())
    }

    fn try_rejoin(&mut self, request: &mut RejoinRequest) -> Result<Attempt, Failure> {
        let device = request.device;
        if !self.is_open(device) {
            return Ok(Attempt::Again);
        }
        // As the Node: the member this device last rejoined from first (it judged any race of
        // that rejoin, so its "stay" is final), then the member to ask, then the others, until
        // one says to rejoin — a member that says "stay" or "ask later" may be on this
        // device's own side of the fork. A member that itself waits to rejoin still holds its
        // branch and answers: the advice tells whether that branch is the one to be on.
        let source = self.devices[device].rejoined_from;
        let mut order: Vec<usize> = Vec::new();
        for member in source
            .into_iter()
            .chain(request.ask)
            .chain(0..self.devices.len())
        {
            if member != device
                && self.holds(member)
                && !request.refused.contains(&member)
                && !order.contains(&member)
            {
                order.push(member);
            }
        }
        let (mut answered, mut ask_later) = (false, false);
        for member in order.into_iter().take(MEMBERS_ASKED) {
            let Some(info) = self.group_info_from(device, member)? else {
                request.refused.push(member);
                continue;
            };
            answered = true;
            let advice = self
                .client(device)?
                .rejoin_advice(&info)
                .map_err(|e| engine_failure("rejoin_advice", &e))?;
            self.note(format!(
                "  d{device} asks d{member} for a GroupInfo: {advice:?}"
            ));
            match advice {
                RejoinAdvice::Rejoin => return self.rejoin_with(device, member, &info),
                RejoinAdvice::Stay if Some(member) == source => break,
                RejoinAdvice::Stay => {}
                RejoinAdvice::AskLater => ask_later = true,
            }
        }
        if ask_later {
            self.tally.add("rejoin advice: ask later");
            request.ask_later_rounds += 1;
            if request.ask_later_rounds >= ADVICE_ROUNDS {
                self.tally.add("rejoin advice: ask later, gave up");
                return Ok(Attempt::Settled);
            }
            return Ok(Attempt::Again);
        }
        if answered {
            self.tally.add("rejoin advice: stay");
            return Ok(Attempt::Settled);
        }
        if !request.refused.is_empty() {
            // Everyone there was to ask refused: a new round, or give up.
            request.refused.clear();
            request.refused_rounds += 1;
            if request.refused_rounds >= REFUSED_ROUNDS {
                self.tally.add("rejoin refused: user not a member");
                return Ok(Attempt::Settled);
            }
        }
        Ok(Attempt::Again)
    }

    /// The GroupInfo `member` gives `device`; `None` if it refuses (it does not see the
    /// device's user in the group: removed, or it has not yet judged the commit that added it).
    fn group_info_from(
        &mut self,
        device: usize,
        member: usize,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let group = self.group.clone();
        let user = self.devices[device].address().user_id;
        match self.client(member)?.export_group_info(&group, &user) {
            Ok(info) => Ok(Some(info)),
            Err(MlsError::RejoinRefused { .. }) => {
                self.note(format!(
                    "  d{device} asks d{member} for a GroupInfo: refused"
                ));
                Ok(None)
            }
            Err(e) => Err(engine_failure("export_group_info", &e)),
        }
    }

    fn rejoin_with(
        &mut self,
        device: usize,
        member: usize,
        info: &[u8],
    ) -> Result<Attempt, Failure> {
        match self.call(device, |c| c.join_by_external_commit(info)) {
            Ok(output) => {
                self.tally.add("rejoined by external commit");
                self.devices[device].rejoined_from = Some(member);
                self.absorb(device, output)?;
                Ok(Attempt::Settled)
            }
            Err(e @ (MlsError::RejoinRefused { .. } | MlsError::AlreadyJoined { .. })) => {
                self.tally.add(format!("rejoin: {}", variant_name(&e)));
                Ok(Attempt::Settled)
            }
            Err(e) => Err(engine_failure("join_by_external_commit", &e)),
        }
    }

    /// `Op::LoseStore`: the device's store is gone (a new, empty one in its place); it is
    /// restored under its device id from its user's identity key and will rejoin.
    pub(crate) fn lose_store(&mut self, device: usize) -> Result<String, Failure> {
        if device < self.scenario.founders {
            return Ok("skipped: founders keep their stores".to_owned());
        }
        if !self.holds(device) || self.devices[device].leaving {
            return Ok("skipped: not in the group (or leaving)".to_owned());
        }
        self.close(device);
        // The new store is a new file (the lost phone's replacement) and the old file is
        // deleted, so nothing of the old one can be read by accident. The restored device is
        // named after itself, not after its user's first device as a second device was made:
        // the name is in its credential, so a seed's commits depend on it.
        let name = self.scenario.devices[device].name.clone();
        let old_file = self.devices[device].path.clone();
        self.devices[device]
            .device
            .try_lose_store(
                &format!("{name}-restored-{}", self.step),
                &self.storage,
                &name,
                &self.clock,
                &self.config,
                &mut self.engine_rng,
            )
            .map_err(|e| lose_store_failure(device, e))?;
        if let Some(old_file) = old_file {
            let _ = std::fs::remove_file(&old_file);
        }
        self.devices[device].forget_state();
        self.engine_opened(device);
        self.refresh_directory(device)?;
        self.tally.add("store lost");
        self.want_rejoin(device, None);
        self.take_up_rejoins()?;
        Ok("restored empty; rejoin wanted".to_owned())
    }

    /// `Op::FallBehind`: everything is delivered first; then the device is cut off while it
    /// and founder 0 each self-update one more time than the fork window holds (each side
    /// delivers its own traffic); then the link heals and what was held back is sent.
    pub(crate) fn fall_behind(&mut self, device: usize) -> Result<String, Failure> {
        if device < self.scenario.founders {
            return Ok("skipped: founders are never cut off".to_owned());
        }
        self.settle()?;
        if !self.holds(device) || !self.holds(0) || self.devices[device].leaving {
            return Ok("skipped: not in the group (or leaving)".to_owned());
        }
        self.cut_off = Some(device);
        self.partitioned = true;
        let commits = self.config.fork_window_epochs + 1;
        for _ in 0..commits {
            for actor in [device, 0] {
                self.act(actor, Action::SelfUpdate)?;
                self.flush()?;
            }
        }
        self.cut_off = None;
        let held = self.release_held();
        self.tally.add("fell outside the window");
        Ok(format!(
            "{commits} commits on each side; {held} envelopes held back, now sent"
        ))
    }
}

fn engine_failure(what: &str, e: &MlsError) -> Failure {
    Failure::new("engine call failed", format!("{what}: {e}"))
}

/// A device the kit could not restore, as the seed's failure: the kind and details the
/// simulator has always given each step (failures are tallied and shrunk by kind).
fn lose_store_failure(device: usize, error: DeviceError) -> Failure {
    match error {
        DeviceError::Store(e) => Failure::new("create failed", e.to_string()),
        DeviceError::Engine(e) => Failure::new("reopen failed", format!("d{device} open: {e}")),
        DeviceError::Identity(_) | DeviceError::NoIdentity => {
            Failure::new("lose store failed", format!("d{device} restore: {error}"))
        }
    }
}
