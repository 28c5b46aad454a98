//! Shared fixtures for the SpacePanda benchmarks.
//!
//! - [`harness`]: backend-neutral MLS benchmark runner (operations, scales, the
//!   [`harness::MlsBackend`] / [`harness::Fixture`] traits a backend implements).
//! - [`raw_openmls`]: the `raw` baseline backend, plain OpenMLS on its in-memory provider.
//! - [`engine_stack`]: our full stack (`MlsClient` on `mem`, `redb`, `sealed`), its members and
//!   the filled-tree group builder, for the `engine` and `throughput` bench files.

pub mod engine_stack;
pub mod harness;
pub mod raw_openmls;
