//! Moving envelopes: delivering them (in random order, ready, overdue, or all), judging the
//! engine's errors, and devices going down and coming back.

use std::rc::Rc;

use core_mls::{DeliverySource, Disposition, MlsError, Output};
use spacepanda_testkit::DeviceError;

use crate::network::InFlight;
use crate::verdicts::{EnvelopeVerdict, Failure, judge_envelope_error, variant_name};
use crate::world::{Rejection, World};

/// Deliveries one flush may make before the network is declared stuck in a loop.
const MAX_FLUSH_DELIVERIES: usize = 200_000;

/// The network delivers each envelope from the device that sent it, as a libp2p peer would be
/// named: every device has its own share of a receiver's buffer.
pub(crate) fn peer_source(device: usize) -> DeliverySource {
    DeliverySource::new(&(device as u64).to_be_bytes()).expect("eight bytes are a valid source")
}

impl World {
    /// Hands one envelope to its device and absorbs the result.
    pub(crate) fn deliver(&mut self, item: InFlight) -> Result<(), Failure> {
        let bytes = Rc::clone(&item.payload.bytes);
        let before = self.verbose().then(|| self.state(item.to));
        let source = peer_source(item.payload.from);
        let result = self.call(item.to, |c| c.handle_envelope_from(&bytes, &source));
        match result {
            Ok(output) => {
                let disposition = output.disposition;
                self.tally.add(format!("disposition {disposition:?}"));
                if let Some(before) = before
                    && disposition != Disposition::Duplicate
                {
                    let events: Vec<String> = output.events.iter().map(variant_name).collect();
                    let after = self.state(item.to);
                    let label = core_mls::Envelope::from_bytes(&bytes, usize::MAX)
                        .map(|e| crate::world::envelope_label(&e))
                        .unwrap_or_default();
                    self.note(format!(
                        "    d{} <- d{} {:?}{label}: {disposition:?} {events:?} [{} -> {}]",
                        item.to,
                        item.payload.from,
                        item.payload.kind,
                        short_state(&before),
                        short_state(&after)
                    ));
                }
                self.absorb(item.to, output)
            }
            Err(error) => self.envelope_error(&item, &error),
        }
    }

    /// Counts (or fails on) an error from `handle_envelope`.
    pub(crate) fn envelope_error(
        &mut self,
        item: &InFlight,
        error: &MlsError,
    ) -> Result<(), Failure> {
        let name = variant_name(error);
        if self.verbose() {
            let label = core_mls::Envelope::from_bytes(&item.payload.bytes, usize::MAX)
                .map(|e| crate::world::envelope_label(&e))
                .unwrap_or_default();
            self.note(format!(
                "    d{} <- d{} {:?}{label}: error {error}",
                item.to, item.payload.from, item.payload.kind
            ));
        }
        if self.partitioned && matches!(error, MlsError::ForkOutsideWindow { .. }) {
            // A commit of the other side of a cut that outlasted the fork window: the app asks
            // its sender where the group is (`recovery`).
            self.tally
                .add(format!("envelope error {name} (after a cut)"));
            self.want_rejoin(item.to, Some(item.payload.from));
            return Ok(());
        }
        match judge_envelope_error(error) {
            EnvelopeVerdict::Accepted(why) => {
                self.tally.add(format!("envelope error {name} ({why})"));
                Ok(())
            }
            EnvelopeVerdict::Judged => {
                self.tally
                    .add(format!("envelope error {name} (judged at the end)"));
                self.rejections.push(Rejection {
                    receiver: item.to,
                    receiver_state: self.state(item.to),
                    receiver_joined_at: self.devices[item.to].joined_at,
                    envelope: item.payload.id,
                    reason: error.to_string(),
                });
                Ok(())
            }
            EnvelopeVerdict::Fatal
                if matches!(error, MlsError::InvalidWelcome { .. }) && self.holds(item.to) =>
            {
                // OpenMLS refuses to stage a Welcome for a group already in storage before the
                // engine's own AlreadyJoined check runs: the same case, mis-typed.
                self.tally
                    .add("envelope error InvalidWelcome for a held group (engine: AlreadyJoined)");
                Ok(())
            }
            EnvelopeVerdict::Fatal => {
                let joined_at = self.devices[item.to].joined_at;
                let class = match error {
                    // A commit of an epoch before the device's (last) join: it cannot have
                    // snapshots of it; reported separately to tell it from a window too small.
                    MlsError::ForkOutsideWindow { message_epoch, .. }
                        if joined_at.is_some_and(|joined| joined > *message_epoch) =>
                    {
                        format!("envelope error {name} (commit from before the device joined)")
                    }
                    _ if !error.is_peer_input() => {
                        format!("envelope error {name} ({:?}, not peer input)", error.kind())
                    }
                    _ => format!("envelope error {name}"),
                };
                Err(Failure::new(
                    class,
                    format!(
                        "d{} (joined at epoch {}) handling a {:?} from d{} at step {}: {error}",
                        item.to,
                        joined_at.map_or("-".to_owned(), |e| e.to_string()),
                        item.payload.kind,
                        item.payload.from,
                        self.step
                    ),
                ))
            }
        }
    }

    fn open_flags(&self) -> Vec<bool> {
        self.devices.iter().map(|d| d.client.is_some()).collect()
    }

    /// Delivers up to `count` ready envelopes, in random order.
    pub(crate) fn deliver_ready(&mut self, count: usize) -> Result<usize, Failure> {
        let mut delivered = 0;
        while delivered < count {
            let open = self.open_flags();
            let Some(item) = self.network.take_ready(self.step, &|d| open[d]) else {
                break;
            };
            self.deliver(item)?;
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Delivers everything past its deadline, in random order.
    pub(crate) fn deliver_overdue(&mut self) -> Result<(), Failure> {
        loop {
            let open = self.open_flags();
            let Some(item) = self.network.take_overdue(self.step, &|d| open[d]) else {
                return Ok(());
            };
            self.deliver(item)?;
        }
    }

    /// Delivers everything in flight to open devices, delays ignored, in random order.
    pub(crate) fn flush(&mut self) -> Result<(), Failure> {
        for _ in 0..MAX_FLUSH_DELIVERIES {
            let open = self.open_flags();
            let Some(item) = self.network.take_any(&|d| open[d]) else {
                return Ok(());
            };
            self.deliver(item)?;
        }
        Err(Failure::new(
            "network never drains",
            format!("{MAX_FLUSH_DELIVERIES} deliveries in one flush"),
        ))
    }

    /// Drops the client (like a killed process: nothing is acknowledged). A file is read again
    /// by `reopen` (the kit's reopen lets go of its handle first).
    pub(crate) fn close(&mut self, device: usize) {
        self.devices[device].close();
    }

    /// Reopens a closed device from its store; the app re-takes what the engine kept for it:
    /// undelivered messages, then unsent envelopes.
    pub(crate) fn reopen(&mut self, device: usize) -> Result<(), Failure> {
        self.devices[device]
            .device
            .try_reopen(&self.clock, &self.config, &mut self.engine_rng)
            .map_err(|e| reopen_failure(device, e))?;
        self.engine_opened(device);
        self.refresh_directory(device)?;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Failure::new("reopen failed", format!("d{device} {what}: {e}"))
        };
        let undelivered = self
            .client(device)?
            .pending_delivered()
            .map_err(|e| fail("pending_delivered", &e))?;
        self.tally
            .add_n("reopen: messages delivered again", undelivered.len() as u64);
        for event in undelivered {
            self.take_event(device, event)?;
        }
        let pending = self
            .client(device)?
            .pending_outbound()
            .map_err(|e| fail("pending_outbound", &e))?;
        self.tally
            .add_n("reopen: envelopes sent again", pending.len() as u64);
        self.absorb(
            device,
            Output {
                outbound: pending,
                ..Output::default()
            },
        )
    }

    /// What follows a device's engine opening (a reopen, a restore): it is up again, and the
    /// oracle records its state.
    pub(crate) fn engine_opened(&mut self, device: usize) {
        self.devices[device].down_until = None;
        self.record_state(device);
    }

    /// Reopens devices whose downtime is over.
    pub(crate) fn wake_due(&mut self) -> Result<(), Failure> {
        for device in 0..self.devices.len() {
            if self.devices[device]
                .down_until
                .is_some_and(|s| s <= self.step)
            {
                self.reopen(device)?;
            }
        }
        Ok(())
    }

    /// Reopens every closed device.
    pub(crate) fn wake_all(&mut self) -> Result<(), Failure> {
        for device in 0..self.devices.len() {
            if !self.is_open(device) {
                self.reopen(device)?;
            }
        }
        Ok(())
    }
}

/// `e<epoch>:<first authenticator bytes>`, or `-` for a device without the group: enough to
/// follow branches in a verbose trace.
fn short_state(state: &Option<(u64, Vec<u8>)>) -> String {
    match state {
        Some((epoch, authenticator)) => {
            let head: String = authenticator
                .iter()
                .take(2)
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("e{epoch}:{head}")
        }
        None => "-".into(),
    }
}

/// A device the kit could not reopen, as the seed's failure: the kind and details the simulator
/// has always given each step (failures are tallied and shrunk by kind).
fn reopen_failure(device: usize, error: DeviceError) -> Failure {
    let detail = match &error {
        DeviceError::Store(e) => e.to_string(),
        DeviceError::Identity(e) => format!("d{device} identity: {e}"),
        DeviceError::NoIdentity => format!("d{device} identity: missing"),
        DeviceError::Engine(e) => format!("d{device} open: {e}"),
    };
    Failure::new("reopen failed", detail)
}
