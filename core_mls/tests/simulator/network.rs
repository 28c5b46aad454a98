//! The simulated network: every envelope is in flight once per recipient device, with a random
//! bounded delay, sometimes twice (a duplicate with its own delay). Time is counted in
//! simulation steps (one per operation).
//!
//! An envelope becomes *ready* `latency` steps after it was sent (0..=4) and must be delivered
//! by its *deadline*, `slack` steps later (0..=8): `Op::Deliver` delivers some ready envelopes
//! early, and after every operation everything past its deadline is delivered, in random order.
//! So every envelope arrives within 12 steps — unless its device is closed, then it waits.
//! Everything is eventually delivered; nothing is lost. The delays, duplicates and choices are
//! the test kit's `DelayingNetwork`; what is here is what travels with an envelope.

use std::rc::Rc;

use core_mls::{EnvelopeId, EnvelopeKind};
use rand::rngs::StdRng;
use spacepanda_testkit::{DelayingNetwork, NetworkKnobs};

const KNOBS: NetworkKnobs = NetworkKnobs {
    max_latency: 4,
    max_slack: 8,
    duplicate_probability: 0.1,
    // Nothing is lost: the checks expect every message to arrive.
    drop_probability: 0.0,
};

/// What travels with one envelope: who sent it, its id and kind, and its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Carried {
    pub(crate) from: usize,
    pub(crate) id: EnvelopeId,
    pub(crate) kind: EnvelopeKind,
    pub(crate) bytes: Rc<Vec<u8>>,
}

/// One envelope on its way to one device (`to`, and `payload`).
pub(crate) type InFlight = spacepanda_testkit::InFlight<Carried>;

/// The simulator's network: the kit's, with the simulator's delays and duplicate rate.
pub(crate) type Network = DelayingNetwork<Carried>;

/// An empty network drawing from `rng`.
pub(crate) fn new_network(rng: StdRng) -> Network {
    DelayingNetwork::new(rng, KNOBS)
}
