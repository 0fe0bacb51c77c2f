#!/usr/bin/env bash
# Benchmark of the `nats` output (issue: >= 50,000 acknowledged messages/s into a local
# JetStream).
#
# Starts a throwaway nats-server with JetStream on 127.0.0.1 (scripts/services; uses
# $KUBETRAIL_TEST_NATS_URL instead when it is set) and drives the output directly
# (examples/output_bench.rs) with N synthetic Event records of about 1.5 KiB in batches of
# BATCH (the default batch.records), into a new file-storage stream. Every message is
# acknowledged by JetStream before its batch counts. Prints messages/s.
#
# Usage: bench/nats-output.sh [N] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-500000}"
BATCH="${2:-2000}"

cargo build --release --locked -q -p kubetrail --example output_bench
services_dir=""
cleanup() { [ -n "$services_dir" ] && scripts/services stop "$services_dir" || true; }
trap cleanup EXIT
if [ -z "${KUBETRAIL_TEST_NATS_URL:-}" ]; then
  services_dir="$(mktemp -d /tmp/kubetrail-bench-services.XXXXXX)"
  # shellcheck disable=SC1090
  source <(scripts/services start "$services_dir")
fi
[ -n "${KUBETRAIL_TEST_NATS_URL:-}" ] || { echo "nats-output: nats-server did not start" >&2; exit 1; }
target/release/examples/output_bench nats "$KUBETRAIL_TEST_NATS_URL" "$N" "$BATCH"
echo "  (target >= 50,000 acknowledged messages/s)"
