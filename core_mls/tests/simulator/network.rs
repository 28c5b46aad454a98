//! The simulated network: every envelope is in flight once per recipient device, with a random
//! bounded delay, sometimes twice (a duplicate with its own delay). Time is counted in
//! simulation steps (one per operation).
//!
//! An envelope becomes *ready* `latency` steps after it was sent (0..=4) and must be delivered
//! by its *deadline*, `slack` steps later (0..=8): `Op::Deliver` delivers some ready envelopes
//! early, and after every operation everything past its deadline is delivered, in random order.
//! So every envelope arrives within 12 steps — unless its device is closed, then it waits.
//! Everything is eventually delivered; nothing is lost.

use std::rc::Rc;

use core_mls::{EnvelopeId, EnvelopeKind};
use rand::Rng;
use rand::rngs::StdRng;

const MAX_LATENCY: u64 = 4;
const MAX_SLACK: u64 = 8;
const DUPLICATE_PROBABILITY: f64 = 0.1;

/// One envelope on its way to one device.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub(crate) to: usize,
    pub(crate) from: usize,
    pub(crate) id: EnvelopeId,
    pub(crate) kind: EnvelopeKind,
    pub(crate) bytes: Rc<Vec<u8>>,
    ready_at: u64,
    deadline: u64,
}

/// Everything in flight, and the randomness of delays, duplicates and delivery order.
#[derive(Debug)]
pub(crate) struct Network {
    rng: StdRng,
    in_flight: Vec<InFlight>,
    /// Envelopes put in flight so far (duplicates included).
    pub(crate) sent: u64,
    /// Of which duplicates.
    pub(crate) duplicated: u64,
}

impl Network {
    pub(crate) fn new(rng: StdRng) -> Self {
        Self {
            rng,
            in_flight: Vec::new(),
            sent: 0,
            duplicated: 0,
        }
    }

    /// Puts one envelope in flight to each device in `to` (and maybe a duplicate).
    pub(crate) fn send(
        &mut self,
        now: u64,
        from: usize,
        to: &[usize],
        id: EnvelopeId,
        kind: EnvelopeKind,
        bytes: &Rc<Vec<u8>>,
    ) {
        for &device in to {
            let copies = if self.rng.gen_bool(DUPLICATE_PROBABILITY) {
                self.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                self.push(
                    InFlight {
                        to: device,
                        from,
                        id,
                        kind,
                        bytes: Rc::clone(bytes),
                        ready_at: 0,
                        deadline: 0,
                    },
                    now,
                );
            }
        }
    }

    /// Puts `item` (back) in flight with a fresh delay from `now`.
    pub(crate) fn push(&mut self, mut item: InFlight, now: u64) {
        item.ready_at = now + self.rng.gen_range(0..=MAX_LATENCY);
        item.deadline = item.ready_at + self.rng.gen_range(0..=MAX_SLACK);
        self.sent += 1;
        self.in_flight.push(item);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// A random ready envelope for an open device.
    pub(crate) fn take_ready(
        &mut self,
        now: u64,
        open: &dyn Fn(usize) -> bool,
    ) -> Option<InFlight> {
        self.take_random(|item| item.ready_at <= now && open(item.to))
    }

    /// A random envelope past its deadline for an open device.
    pub(crate) fn take_overdue(
        &mut self,
        now: u64,
        open: &dyn Fn(usize) -> bool,
    ) -> Option<InFlight> {
        self.take_random(|item| item.deadline <= now && open(item.to))
    }

    /// A random envelope for an open device, delays ignored (flushing).
    pub(crate) fn take_any(&mut self, open: &dyn Fn(usize) -> bool) -> Option<InFlight> {
        self.take_random(|item| open(item.to))
    }

    /// A random envelope for `device`, a ready one if there is one.
    pub(crate) fn take_for(&mut self, now: u64, device: usize) -> Option<InFlight> {
        self.take_random(|item| item.to == device && item.ready_at <= now)
            .or_else(|| self.take_random(|item| item.to == device))
    }

    fn take_random(&mut self, eligible: impl Fn(&InFlight) -> bool) -> Option<InFlight> {
        let candidates: Vec<usize> = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, item)| eligible(item))
            .map(|(index, _)| index)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = candidates[self.rng.gen_range(0..candidates.len())];
        Some(self.in_flight.swap_remove(chosen))
    }
}
