#!/usr/bin/env bash
# The activity page on a store of 10 million records (bench/ui-page.sh [RECORDS]): the first
# meaningful paint of the timeline and filter changes, measured in headless Chromium from the
# browser's Performance API (crates/ui/browser-tests/bench.mjs), against the page's server
# (crates/ui/examples/serve_store.rs: what `kubetrail ui --store` runs, built in release without
# the rest of the binary) reading a store filled by crates/ui/examples/fill_store.rs (a week of a busy
# cluster's audit events and Events through the store output's writer; about 1.4 KiB a record
# on disk, 14 GB for 10 million, built in about 25 minutes on 2 busy cores).
#
# The store is deleted at the end unless KUBETRAIL_BENCH_KEEP=1 (then it is kept in
# $KUBETRAIL_BENCH_DIR, default /tmp/kubetrail-ui-bench, and used again by the next run).
# Needs what the browser tests need (crates/ui/browser-tests/run.sh installs it).
# RUNS=10 by default. Targets: first paint <= 1 s, filter change <= 300 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-10000000}"
dir="${KUBETRAIL_BENCH_DIR:-/tmp/kubetrail-ui-bench}"
mkdir -p "$dir"
store="$dir/activity-$records.db"

cargo build --release --locked -q -p kubetrail-ui --example fill_store --example serve_store
if [ ! -f "$store" ]; then
  echo "filling $store with $records records (once)" >&2
  target/release/examples/fill_store "$store.part" "$records"
  mv "$store.part" "$store"
  for s in -wal -shm; do [ -f "$store.part$s" ] && mv "$store.part$s" "$store$s"; done
fi
echo "store: $store, $(sqlite3 "$store" 'SELECT count(*) FROM records' 2>/dev/null || echo '?') records, $(du -h "$store" | cut -f1)"

(cd crates/ui/browser-tests && [ -d node_modules/playwright-core ] || npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
token="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" > "$dir/tokens"
log="$dir/ui.log"
target/release/examples/serve_store "$store" "$dir/tokens" 2>"$log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "${KUBETRAIL_BENCH_KEEP:-0}" != 1 ]; then
    rm -f "$store" "$store-wal" "$store-shm"
    echo "deleted $store (KUBETRAIL_BENCH_KEEP=1 keeps it)" >&2
  fi
}
trap cleanup EXIT
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/^activity page: //p' "$log" | head -1)"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log" >&2; echo "kubetrail ui did not start" >&2; exit 1; }

KT_URL="http://$addr" KT_TOKEN="$token" RUNS="${RUNS:-10}" node crates/ui/browser-tests/bench.mjs
