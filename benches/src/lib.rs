//! Shared fixtures for the SpacePanda benchmarks.
//!
//! - [`harness`]: backend-neutral MLS benchmark runner (operations, scales, the
//!   [`harness::MlsBackend`] / [`harness::Fixture`] traits a backend implements).
//! - [`raw_openmls`]: the `raw` baseline backend, plain OpenMLS on its in-memory provider.

pub mod harness;
pub mod raw_openmls;
