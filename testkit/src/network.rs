//! Seeded delivery: envelopes to devices, delayed, reordered, duplicated and dropped by the
//! draws of one generator, so that a seed is one exact delivery order.
//!
//! Two models, one per kind of harness:
//! - [`shuffle_with_duplicates`]: delivery in rounds (what is waiting now, duplicated with a
//!   probability, in shuffled order) for scenario tests that deliver everything between steps;
//! - [`DelayingNetwork`]: every envelope in flight with a bounded random delay measured in
//!   steps, for the simulator, which interleaves deliveries with operations.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// One round of delivery: each of `batch` is delivered twice with `duplicate_probability`
/// (the copy first), and the whole round is shuffled. Draws one Bernoulli per item, in order,
/// then the shuffle.
pub fn shuffle_with_duplicates<T: Clone>(
    batch: Vec<T>,
    duplicate_probability: f64,
    rng: &mut StdRng,
) -> Vec<T> {
    let mut with_duplicates = Vec::with_capacity(batch.len());
    for item in batch {
        if rng.gen_bool(duplicate_probability) {
            with_duplicates.push(item.clone());
        }
        with_duplicates.push(item);
    }
    with_duplicates.shuffle(rng);
    with_duplicates
}

/// How a [`DelayingNetwork`] misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct NetworkKnobs {
    /// An envelope is ready 0..=`max_latency` steps after it was sent.
    pub max_latency: u64,
    /// ... and must be delivered 0..=`max_slack` steps after it became ready.
    pub max_slack: u64,
    /// Probability that an envelope is in flight twice (each copy with its own delay).
    pub duplicate_probability: f64,
    /// Probability that an envelope (each copy on its own) is lost. At 0, nothing is drawn
    /// for it, so a lossless network's draws are those of one without the knob.
    pub drop_probability: f64,
}

/// One envelope on its way to one device.
#[derive(Debug, Clone)]
pub struct InFlight<T> {
    /// The device it is for.
    pub to: usize,
    /// What travels (the envelope and whatever the harness tracks with it).
    pub payload: T,
    ready_at: u64,
    deadline: u64,
}

/// Everything in flight, and the randomness of delays, duplicates, losses and delivery order.
/// Time is counted in steps the caller passes in (`now`).
#[derive(Debug)]
pub struct DelayingNetwork<T> {
    rng: StdRng,
    knobs: NetworkKnobs,
    in_flight: Vec<InFlight<T>>,
    /// Envelopes put in flight so far (duplicates included).
    pub sent: u64,
    /// Of which duplicates.
    pub duplicated: u64,
    /// Envelopes lost.
    pub dropped: u64,
}

impl<T: Clone> DelayingNetwork<T> {
    /// An empty network drawing from `rng`.
    pub fn new(rng: StdRng, knobs: NetworkKnobs) -> Self {
        Self {
            rng,
            knobs,
            in_flight: Vec::new(),
            sent: 0,
            duplicated: 0,
            dropped: 0,
        }
    }

    /// Puts `payload` in flight to each device in `to` (and maybe a duplicate, maybe lost).
    pub fn send(&mut self, now: u64, to: &[usize], payload: &T) {
        for &device in to {
            let copies = if self.rng.gen_bool(self.knobs.duplicate_probability) {
                self.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                if self.knobs.drop_probability > 0.0
                    && self.rng.gen_bool(self.knobs.drop_probability)
                {
                    self.dropped += 1;
                    continue;
                }
                let item = InFlight {
                    to: device,
                    payload: payload.clone(),
                    ready_at: 0,
                    deadline: 0,
                };
                self.push(item, now);
            }
        }
    }

    /// Puts `item` (back) in flight with a fresh delay from `now`.
    pub fn push(&mut self, mut item: InFlight<T>, now: u64) {
        item.ready_at = now + self.rng.gen_range(0..=self.knobs.max_latency);
        item.deadline = item.ready_at + self.rng.gen_range(0..=self.knobs.max_slack);
        self.sent += 1;
        self.in_flight.push(item);
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// How many envelopes are in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// A random ready envelope for an open device.
    pub fn take_ready(&mut self, now: u64, open: &dyn Fn(usize) -> bool) -> Option<InFlight<T>> {
        self.take_random(|item| item.ready_at <= now && open(item.to))
    }

    /// A random envelope past its deadline for an open device.
    pub fn take_overdue(&mut self, now: u64, open: &dyn Fn(usize) -> bool) -> Option<InFlight<T>> {
        self.take_random(|item| item.deadline <= now && open(item.to))
    }

    /// A random envelope for an open device, delays ignored (flushing).
    pub fn take_any(&mut self, open: &dyn Fn(usize) -> bool) -> Option<InFlight<T>> {
        self.take_random(|item| open(item.to))
    }

    /// A random envelope for `device`, a ready one if there is one.
    pub fn take_for(&mut self, now: u64, device: usize) -> Option<InFlight<T>> {
        self.take_random(|item| item.to == device && item.ready_at <= now)
            .or_else(|| self.take_random(|item| item.to == device))
    }

    fn take_random(&mut self, eligible: impl Fn(&InFlight<T>) -> bool) -> Option<InFlight<T>> {
        let candidates: Vec<usize> = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, item)| eligible(item))
            .map(|(index, _)| index)
            .collect();
        // No draw when nothing is eligible: the generator's sequence depends only on choices.
        if candidates.is_empty() {
            return None;
        }
        let chosen = *candidates.get(self.rng.gen_range(0..candidates.len()))?;
        Some(self.in_flight.swap_remove(chosen))
    }
}

#[cfg(test)]
mod tests {
    use super::{DelayingNetwork, NetworkKnobs};
    use crate::seeded;

    fn knobs(duplicate_probability: f64, drop_probability: f64) -> NetworkKnobs {
        NetworkKnobs {
            max_latency: 3,
            max_slack: 2,
            duplicate_probability,
            drop_probability,
        }
    }

    /// Sends 20 envelopes to devices 0 and 1, then takes everything ready step by step; the
    /// (device, payload) pairs in delivery order.
    fn run(seed: u64, knobs: NetworkKnobs) -> (Vec<(usize, u32)>, u64, u64) {
        let mut network = DelayingNetwork::new(seeded::rng(seed), knobs);
        for payload in 0..20u32 {
            network.send(0, &[0, 1], &payload);
        }
        let mut delivered = Vec::new();
        for now in 0..10 {
            while let Some(item) = network.take_ready(now, &|_| true) {
                delivered.push((item.to, item.payload));
            }
        }
        assert!(network.is_empty(), "everything is ready within 3 steps");
        (delivered, network.duplicated, network.dropped)
    }

    #[test]
    fn a_seed_is_one_delivery_order_and_another_seed_is_another() {
        let (first, _, _) = run(5, knobs(0.0, 0.0));
        assert_eq!(first, run(5, knobs(0.0, 0.0)).0);
        assert_ne!(first, run(6, knobs(0.0, 0.0)).0);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        let expected: Vec<(usize, u32)> =
            (0..2).flat_map(|d| (0..20).map(move |p| (d, p))).collect();
        assert_eq!(sorted, expected, "each envelope once to each device");
        assert_ne!(first, expected, "delivered out of order");
    }

    #[test]
    fn duplicates_and_drops_happen_as_the_knobs_say() {
        let (all_twice, duplicated, _) = run(1, knobs(1.0, 0.0));
        assert_eq!((all_twice.len(), duplicated), (80, 40));
        let (none, _, dropped) = run(1, knobs(0.0, 1.0));
        assert_eq!((none.len(), dropped), (0, 40));
        let (some, _, dropped) = run(1, knobs(0.0, 0.5));
        assert_eq!(some.len() as u64 + dropped, 40);
        assert!(dropped > 0 && !some.is_empty(), "{dropped} of 40 dropped");
    }
}
