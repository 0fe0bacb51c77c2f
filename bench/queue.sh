#!/usr/bin/env bash
# Benchmark of the durable queue (issue: the queue is never the bottleneck: >= 100,000
# records/s of 1.5 KiB written and read back, fsync per batch, on a 2-core machine).
#
# crates/state/examples/throughput.rs: one writer commits batches of 1,000 records of 1,536
# bytes (one fsync each) while a reader thread reads them back and the writer acknowledges
# what was read, as the agent's journal and output runners do. Run twice: without dedup keys
# (the queue alone) and with a time-ordered dedup key per record (as audit records have).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p kubetrail-state --example throughput
dir="$(mktemp -d /tmp/kubetrail-bench.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
echo "queue: 300,000 records of 1.5 KiB, batches of 1,000, sync=full (target >= 100,000 records/s)"
target/release/examples/throughput records=300000 batch=1000 size=1536 sync=full dedup=off dir="$dir"
target/release/examples/throughput records=300000 batch=1000 size=1536 sync=full dedup=on keys=ordered dir="$dir"
target/release/examples/throughput records=300000 batch=1000 size=1536 sync=full dedup=on keys=random dir="$dir"
