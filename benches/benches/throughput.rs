//! Criterion group `throughput`: sustained rates of one group through [`MlsClient`], every
//! operation a durable transaction of its own.
//!
//! Ids: `throughput/<function>/<backend>-100`, backend ∈ `mem`, `redb`, `sealed`. One criterion
//! iteration is one message or one commit and the group's throughput is set to one element, so
//! criterion's report shows the rate directly; `bench_report` turns the median into operations
//! per second and compares it with the seed target (50–100 messages/s, 20–50 commits/s per group;
//! a rate passes when it reaches the top of the range).
//!
//! # What is timed
//! - `messages_per_s`: A `send`s a 1 KiB body and acknowledges the outbound (the transport
//!   confirmed it), back to back: encryption, the outbox entry, the sent log, both commits.
//! - `messages_received_per_s`: B handles A's next 1 KiB message and acknowledges the delivery
//!   (the app took it): decryption, de-duplication, the inbox entry. Untimed: A's `send`.
//! - `messages_received_batched_per_s`: B handles A's next messages 32 at a time, as a mailbox
//!   fetch hands them over (`handle_envelopes`: one transaction per batch, a savepoint per
//!   message), and acknowledges each batch's deliveries at once (`ack_delivered_all`). Untimed:
//!   A's sends. One iteration is still one message.
//! - `commits_per_s`: A commits a self-update and acknowledges it: path encryption, snapshot of
//!   the previous epoch, merge, the outbox entry.
//! - `commits_processed_per_s`: B handles A's self-update commit. Untimed: A's `self_update`.
//!
//! # The group
//! 100 members with a filled tree (every member has committed once — the steady state of a group
//! whose members self-update, see `engine_stack`), built once on MemoryStore and copied into each
//! backend. A and B are real clients; B follows every commit of A's. The functions run in the
//! order above so that B is current whenever it is measured.
//!
//! Run: `cargo bench -p spacepanda-benches --bench throughput`. `SPACEPANDA_ENGINE_BACKENDS`
//! (e.g. `mem,sealed`) restricts the backends.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "criterion macros generate undocumented items; a failed benchmark aborts"
)]

use std::time::{Duration, Instant};

use core_mls::{EnvelopeKind, Event, GroupId, MlsClient, MlsConfig, MlsError, Output};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use spacepanda_benches::engine_stack::{
    Backend, DeviceTemplate, FilledGroup, ack_all, deliver, envelope_bytes,
};
use spacepanda_benches::harness::PAYLOAD_1K;

/// Members of the measured group.
const SIZE: usize = 100;
/// Messages per batch in `messages_received_batched_per_s`.
const BATCH: u64 = 32;

struct Pair {
    a: MlsClient,
    b: MlsClient,
    group: GroupId,
}

/// What A does once per iteration.
type Produce = fn(&mut MlsClient, &GroupId) -> Result<Output, MlsError>;

fn send_1k(a: &mut MlsClient, group: &GroupId) -> Result<Output, MlsError> {
    a.send(group, &PAYLOAD_1K)
}

fn self_update(a: &mut MlsClient, group: &GroupId) -> Result<Output, MlsError> {
    a.self_update(group)
}

impl Pair {
    /// A produces and acknowledges, back to back: all of it is timed.
    fn made_by_a(&mut self, iters: u64, produce: Produce) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let output = produce(&mut self.a, &self.group).unwrap();
            ack_all(&mut self.a, &output).unwrap();
        }
        start.elapsed()
    }

    /// A produces (untimed); B handles the envelope of `kind` (timed).
    fn received_by_b(&mut self, iters: u64, kind: EnvelopeKind, produce: Produce) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let output = produce(&mut self.a, &self.group).unwrap();
            ack_all(&mut self.a, &output).unwrap();
            let bytes = envelope_bytes(&output, kind).unwrap();
            let start = Instant::now();
            deliver(&mut self.b, &bytes).unwrap();
            total += start.elapsed();
        }
        total
    }

    fn messages_per_s(&mut self, iters: u64) -> Duration {
        self.made_by_a(iters, send_1k)
    }

    fn messages_received_per_s(&mut self, iters: u64) -> Duration {
        self.received_by_b(iters, EnvelopeKind::Application, send_1k)
    }

    fn messages_received_batched_per_s(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(BATCH);
            left -= n;
            let mut batch = Vec::new();
            for _ in 0..n {
                let output = send_1k(&mut self.a, &self.group).unwrap();
                ack_all(&mut self.a, &output).unwrap();
                batch.push(envelope_bytes(&output, EnvelopeKind::Application).unwrap());
            }
            let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let start = Instant::now();
            let results = self.b.handle_envelopes(&slices).unwrap();
            let deliveries: Vec<_> = results
                .iter()
                .map(|r| r.as_ref().expect("every message of the batch decrypts"))
                .flat_map(|o| &o.events)
                .filter_map(|e| match e {
                    Event::Message { delivery, .. } => Some(*delivery),
                    _ => None,
                })
                .collect();
            assert_eq!(deliveries.len() as u64, n);
            self.b.ack_delivered_all(&deliveries).unwrap();
            total += start.elapsed();
        }
        total
    }

    fn commits_per_s(&mut self, iters: u64) -> Duration {
        self.made_by_a(iters, self_update)
    }

    fn commits_processed_per_s(&mut self, iters: u64) -> Duration {
        self.received_by_b(iters, EnvelopeKind::Commit, self_update)
    }
}

type Op = fn(&mut Pair, u64) -> Duration;

/// In this order B is current whenever it is measured (the last function leaves it behind).
const OPS: [(&str, Op); 5] = [
    ("messages_received_per_s", Pair::messages_received_per_s),
    (
        "messages_received_batched_per_s",
        Pair::messages_received_batched_per_s,
    ),
    ("commits_processed_per_s", Pair::commits_processed_per_s),
    ("messages_per_s", Pair::messages_per_s),
    ("commits_per_s", Pair::commits_per_s),
];

fn throughput_benches(c: &mut Criterion) {
    let started = Instant::now();
    let filled = FilledGroup::build(SIZE, true).unwrap();
    eprintln!(
        "throughput setup: filled {SIZE}-member group built (on mem) in {:.2?}",
        started.elapsed()
    );
    let b_template = filled.b.as_ref().expect("the group was built with B");
    let mut group = c.benchmark_group("throughput");
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    for backend in Backend::from_env("SPACEPANDA_ENGINE_BACKENDS") {
        let dir = tempfile::tempdir().unwrap();
        let open = |template: &DeviceTemplate, name| {
            template
                .open_on(backend, dir.path(), name, MlsConfig::default())
                .unwrap()
                .0
        };
        let mut pair = Pair {
            a: open(&filled.a, "a"),
            b: open(b_template, "b"),
            group: filled.group.clone(),
        };
        let parameter = format!("{}-{SIZE}", backend.name());
        for (function, op) in OPS {
            group.bench_function(BenchmarkId::new(function, &parameter), |bencher| {
                bencher.iter_custom(|iters| op(&mut pair, iters))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, throughput_benches);
criterion_main!(benches);
