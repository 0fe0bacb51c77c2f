#!/usr/bin/env bash
# Benchmark of the `postgresql` output (issue: >= 20,000 records/s into a local server).
#
# Starts a throwaway PostgreSQL on 127.0.0.1 (scripts/services; uses $KUBETRAIL_TEST_PG_URL
# instead when it is set) and drives the output directly (examples/output_bench.rs) with N
# synthetic Event records of about 1.5 KiB in batches of BATCH (the default batch.records),
# into a new table with its primary key and seven indexes. Prints records/s.
#
# Usage: bench/pg-output.sh [N] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200000}"
BATCH="${2:-2000}"

cargo build --release --locked -q -p kubetrail --example output_bench
services_dir=""
cleanup() { [ -n "$services_dir" ] && scripts/services stop "$services_dir" || true; }
trap cleanup EXIT
if [ -z "${KUBETRAIL_TEST_PG_URL:-}" ]; then
  services_dir="$(mktemp -d /tmp/kubetrail-bench-services.XXXXXX)"
  # shellcheck disable=SC1090
  source <(scripts/services start "$services_dir")
fi
[ -n "${KUBETRAIL_TEST_PG_URL:-}" ] || { echo "pg-output: PostgreSQL did not start" >&2; exit 1; }
target/release/examples/output_bench postgresql "$KUBETRAIL_TEST_PG_URL" "$N" "$BATCH"
echo "  (target >= 20,000 records/s)"
