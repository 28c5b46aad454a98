//! Criterion group `mls`: MLS operations per backend and group size.
//!
//! Ids: `mls/<function>/<backend>-<size>` (PERFORMANCE.md). `create_group` and `key_package` use
//! size `1`; every other function runs at each size of `SPACEPANDA_BENCH_SIZES` (default
//! `10,100,1000,1000-full`): `<size>` is a sparse tree built by batch adds, `1000-full` a filled
//! tree (only `add_member` and `remove_member`). What each timed region contains and how the
//! fixtures are built is documented in `spacepanda_benches::raw_openmls` and
//! `spacepanda_benches::harness`.
//!
//! Backends: `raw` (plain OpenMLS + its memory storage, the baseline). Our stack (`mem`, `redb`,
//! `sealed`) plugs in by implementing `harness::MlsBackend` and being added to `BACKENDS` below.
//!
//! Run: `cargo bench -p spacepanda-benches --bench mls`, then
//! `cargo run -p spacepanda-benches --bin bench_report`.
#![allow(
    missing_docs,
    clippy::expect_used,
    reason = "criterion macros generate undocumented items; a failed benchmark aborts"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use spacepanda_benches::harness::{MlsBackend, Scale, bench_backends};
use spacepanda_benches::raw_openmls::RawBackend;

fn mls_benches(c: &mut Criterion) {
    let backends: [&dyn MlsBackend; 1] = [&RawBackend];
    bench_backends(c, "mls", &backends, &Scale::from_env()).expect("mls benchmarks");
}

criterion_group!(benches, mls_benches);
criterion_main!(benches);
