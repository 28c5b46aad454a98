#!/usr/bin/env bash
# The whole benchmark suite, then the regenerated table in docs/BENCHMARKS.md and the plot in
# docs/benchmarks.svg. About 18 minutes of benchmarking on a 2-core machine, 3 of them the
# delivery ids of group `dht` (plus the release build the first time). Run on a quiet machine:
# the numbers are wall-clock medians.
set -euo pipefail
cd "$(dirname "$0")/.."
# Results of ids that no longer exist must not reach the table.
rm -rf target/criterion
started=$(date +%s)
cargo bench -p spacepanda-benches --locked
echo "suite: $(( $(date +%s) - started )) s" >&2
cargo run --release --locked -p spacepanda-benches --bin bench_report -- target/criterion \
  --write docs/BENCHMARKS.md --svg docs/benchmarks.svg
