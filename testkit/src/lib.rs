//! SpacePanda's shared test kit.
//!
//! # What it is
//!
//! The pieces every engine test, the simulator, core_dht's network tests and the benches need
//! to drive several [`MlsClient`](core_mls::MlsClient)s deterministically: a [`Device`] (a
//! client over its own store, with its identity, that can be closed, reopened from its store,
//! or lose it), a
//! [`DelayingNetwork`] that delays, reorders, duplicates and drops envelopes from a seed, the
//! round-based [`shuffle_with_duplicates`] delivery, and the seeded clock and RNG
//! ([`seeded`]).
//!
//! # What it does not do
//!
//! It is not a harness: it routes nothing by itself, acknowledges nothing and checks nothing.
//! Which envelopes go to which device, what the "app" records, and what a test asserts stay
//! with the harness that uses the kit (`core_mls/tests/engine_harness`, the simulator). It is
//! dev-only: never published, never a dependency of a crate that ships (the benches package and
//! the fuzz crate, neither published, take it as a normal dependency for their harnesses).
//!
//! # Design
//!
//! Everything random comes from a [`rand::rngs::StdRng`] the caller owns and passes in, so a
//! harness decides the order in which its randomness is drawn and a seed is one exact run.
//! Nothing sleeps: time is a [`ManualClock`](spacepanda_core::ManualClock) the test advances,
//! and the network counts time in steps the caller gives it.
//!
//! # Example
//!
//! ```
//! use core_mls::MlsConfig;
//! use spacepanda_testkit::{Device, Storage, seeded};
//!
//! let clock = seeded::clock();
//! let mut rng = seeded::rng(7);
//! let config = MlsConfig::default();
//! let mut alice = Device::create("alice", &Storage::Memory, None, &clock, &config, &mut rng);
//! let group = alice.client().create_group().unwrap();
//! alice.close();
//! alice.reopen(&clock, &config, &mut rng);
//! assert!(alice.client().groups().contains(&group));
//! ```
// Test-only code: a failed store or engine call is a failed test, so it panics.
#![allow(clippy::expect_used)]

mod device;
mod network;
pub mod seeded;

pub use device::{Device, DeviceError, Storage};
pub use network::{DelayingNetwork, InFlight, NetworkKnobs, shuffle_with_duplicates};
