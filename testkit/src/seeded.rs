//! The seeded clock and RNG every harness starts from, so that one seed is one exact run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spacepanda_core::ManualClock;

/// The test clock: a [`ManualClock`] at the beginning of the current week. Not at a fixed
/// date, because OpenMLS checks key package lifetimes against the system clock; a seed is
/// therefore one exact run within a week.
pub fn clock() -> ManualClock {
    ManualClock::starting_this_week()
}

/// The generator a harness draws all its randomness from.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A seed for one engine open, drawn from `rng`: a seed per open, so that one store is never
/// opened twice with the same seed.
pub fn engine_seed(rng: &mut StdRng) -> [u8; 32] {
    rng.r#gen()
}
