//! Backend-neutral plumbing for the MLS benchmark groups (`mls`, `peer`).
//!
//! A *backend* (raw OpenMLS, mls-rs, later our own stack on MemoryStore / redb / sealed) builds
//! *fixtures*: groups of a given size and tree shape, assembled once and outside any timed
//! region. A fixture then hands out [`Timed`] closures, one per iteration: everything a closure
//! does is measured, everything [`Fixture::prepare`] does to produce it (cloning or reloading the
//! group state, generating a ciphertext to decrypt) is not. What each closure returns is dropped
//! by criterion after the clock stops, so returning the consumed state keeps its destruction out
//! of the measurement too.
//!
//! Adding a backend means implementing [`MlsBackend`] and [`Fixture`] and passing the backend to
//! [`bench_backends`]; ids and settings then follow PERFORMANCE.md on their own.

use std::any::Any;
use std::fmt;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};

/// Error type of fixture building and of the timed operations.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// One measured operation: the whole body of the closure is the timed region. It returns the
/// state it consumed or produced so that dropping it happens after the clock stops.
pub type Timed = Box<dyn FnOnce() -> Result<Box<dyn Any>, BenchError>>;

/// Turns any displayable error into a [`BenchError`] (for error types that are not
/// `std::error::Error + Send + Sync`, e.g. ones carrying a storage error type parameter).
pub fn err(e: impl fmt::Debug) -> BenchError {
    format!("{e:?}").into()
}

/// The 1 KiB application payload of `encrypt_1k` / `decrypt_1k`.
pub const PAYLOAD_1K: [u8; 1024] = [0x5a; 1024];

/// Number of key packages committed at once by `add_members_10`.
pub const ADD_MANY: usize = 10;

/// The measured operations; [`Op::function`] is the criterion function name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Create a one-member group.
    CreateGroup,
    /// Build (and serialise) one key package.
    KeyPackage,
    /// Commit adding one member, with the Welcome, and merge it.
    AddMember,
    /// Commit adding [`ADD_MANY`] members in one commit, with the Welcome, and merge it.
    AddMembers10,
    /// Commit removing one member and merge it.
    RemoveMember,
    /// Encrypt a 1 KiB application message.
    Encrypt1k,
    /// Decrypt a 1 KiB application message from another member.
    Decrypt1k,
    /// Process and merge another member's commit (an add commit with an update path).
    ProcessCommit,
    /// Join the group from a Welcome (ratchet tree carried in the Welcome's extension).
    Join,
}

impl Op {
    /// Operations that do not depend on a group (benchmarked with size `1`).
    pub const SIZELESS: [Op; 2] = [Op::CreateGroup, Op::KeyPackage];
    /// Operations measured on a group of each size.
    pub const SIZED: [Op; 7] = [
        Op::AddMember,
        Op::AddMembers10,
        Op::RemoveMember,
        Op::ProcessCommit,
        Op::Join,
        Op::Encrypt1k,
        Op::Decrypt1k,
    ];
    /// Operations measured on the filled 1000-member tree as well.
    pub const FULL_TREE: [Op; 2] = [Op::AddMember, Op::RemoveMember];

    /// Criterion function name (the middle part of the benchmark id).
    pub fn function(self) -> &'static str {
        match self {
            Op::CreateGroup => "create_group",
            Op::KeyPackage => "key_package",
            Op::AddMember => "add_member",
            Op::AddMembers10 => "add_members_10",
            Op::RemoveMember => "remove_member",
            Op::Encrypt1k => "encrypt_1k",
            Op::Decrypt1k => "decrypt_1k",
            Op::ProcessCommit => "process_commit",
            Op::Join => "join",
        }
    }

    /// Whether one iteration is cheap enough (well under a millisecond at every size) that
    /// criterion may batch many prepared inputs; heavier operations are prepared one at a time so
    /// that at most one cloned group state is alive.
    fn batch_size(self) -> BatchSize {
        match self {
            Op::CreateGroup | Op::KeyPackage | Op::Encrypt1k | Op::Decrypt1k => {
                BatchSize::SmallInput
            }
            _ => BatchSize::PerIteration,
        }
    }
}

/// Shape of the ratchet tree of a fixture group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TreeShape {
    /// Built by batch adds from one committer: every parent node is blank except those on the
    /// committer's direct path, so a commit encrypts its path secrets to (almost) every leaf.
    Sparse,
    /// Every parent node is non-blank and no parent has unmerged leaves: a commit encrypts one
    /// path secret per level.
    Full,
}

/// A group size and tree shape to benchmark, written like the id suffix: `1000` or `1000-full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scale {
    /// Members in the group before the measured operation.
    pub size: usize,
    /// Tree shape.
    pub shape: TreeShape,
}

impl Scale {
    /// Sparse (batch-added) group of `size` members.
    pub fn sparse(size: usize) -> Self {
        Self {
            size,
            shape: TreeShape::Sparse,
        }
    }

    /// Filled tree of `size` members.
    pub fn full(size: usize) -> Self {
        Self {
            size,
            shape: TreeShape::Full,
        }
    }

    /// Parses `"1000"` or `"1000-full"`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        match text.strip_suffix("-full") {
            Some(size) => size.parse().ok().map(Self::full),
            None => text.parse().ok().map(Self::sparse),
        }
    }

    /// The scales of a full run: 10, 100, 1000 (sparse) and 1000-full.
    pub fn default_set() -> Vec<Scale> {
        vec![
            Self::sparse(10),
            Self::sparse(100),
            Self::sparse(1000),
            Self::full(1000),
        ]
    }

    /// The scales to run: `SPACEPANDA_BENCH_SIZES` (comma separated, e.g. `10,100` or
    /// `1000-full`) or [`Scale::default_set`].
    pub fn from_env() -> Vec<Scale> {
        match std::env::var("SPACEPANDA_BENCH_SIZES") {
            Ok(list) if !list.trim().is_empty() => {
                list.split(',').filter_map(Self::parse).collect()
            }
            _ => Self::default_set(),
        }
    }

    /// Operations measured at this scale.
    pub fn ops(self) -> &'static [Op] {
        match self.shape {
            TreeShape::Sparse => &Op::SIZED,
            TreeShape::Full => &Op::FULL_TREE,
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shape {
            TreeShape::Sparse => write!(f, "{}", self.size),
            TreeShape::Full => write!(f, "{}-full", self.size),
        }
    }
}

/// A benchmarked MLS implementation.
pub trait MlsBackend {
    /// Backend name: the first part of the criterion parameter (`raw`, `mlsrs`, `mem`, ...).
    fn name(&self) -> &str;

    /// A fixture for the size-independent operations ([`Op::SIZELESS`]): one client.
    fn client(&self) -> Result<Box<dyn Fixture>, BenchError>;

    /// Builds a group at `scale` (not timed). Requires `scale.size >= 3`: the committer, the
    /// member that processes, and a member to remove.
    fn group(&self, scale: Scale) -> Result<Box<dyn Fixture>, BenchError>;
}

/// A prepared client or group that produces one timed operation per call.
pub trait Fixture {
    /// Prepares one iteration of `op` (not timed) and returns the timed region.
    fn prepare(&mut self, op: Op) -> Result<Timed, BenchError>;
}

/// Criterion settings per scale: small samples, short measurement, flat sampling for the slow
/// 1000-member operations so the whole group finishes in minutes on a 2-core machine.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    group.sample_size(10);
    if size >= 1000 {
        group
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(1500));
    } else {
        group
            .sampling_mode(SamplingMode::Auto)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(1200));
    }
}

#[allow(
    clippy::expect_used,
    reason = "a benchmark that cannot prepare or run its operation must abort loudly"
)]
fn bench_op(
    group: &mut BenchmarkGroup<'_, WallTime>,
    backend: &str,
    parameter: &str,
    fixture: &mut dyn Fixture,
    op: Op,
) {
    let id = BenchmarkId::new(op.function(), format!("{backend}-{parameter}"));
    group.bench_function(id, |b| {
        b.iter_batched(
            || fixture.prepare(op).expect("prepare benchmark iteration"),
            |timed| timed().expect("benchmarked operation"),
            op.batch_size(),
        )
    });
}

/// Runs the criterion group `group_name` over `backends`: the size-independent operations with
/// parameter `<backend>-1`, then every operation of [`Scale::ops`] for each of `scales` with
/// parameter `<backend>-<scale>`. Fixture build times go to stderr.
pub fn bench_backends(
    c: &mut Criterion,
    group_name: &str,
    backends: &[&dyn MlsBackend],
    scales: &[Scale],
) -> Result<(), BenchError> {
    let mut group = c.benchmark_group(group_name);
    for backend in backends {
        let name = backend.name();
        configure(&mut group, 1);
        let mut client = backend.client()?;
        for op in Op::SIZELESS {
            bench_op(&mut group, name, "1", client.as_mut(), op);
        }
        drop(client);
        for scale in scales {
            let started = Instant::now();
            let mut fixture = backend.group(*scale)?;
            eprintln!(
                "{group_name}: built {name}-{scale} fixture in {:.1?}",
                started.elapsed()
            );
            configure(&mut group, scale.size);
            for op in scale.ops() {
                bench_op(&mut group, name, &scale.to_string(), fixture.as_mut(), *op);
            }
        }
    }
    group.finish();
    Ok(())
}
