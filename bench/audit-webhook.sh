#!/usr/bin/env bash
# Benchmark of the audit_webhook input (issue: >= 240,000 events/s with EventLists of 400
# events on 8 keep-alive connections, each answered only when durable; peak RSS <= 128 MiB).
#
# kubetrail (release) runs the webhook (TLS, bearer token) into the `file` output (fsync per
# batch). The load generator (crates/kubetrail/examples/audit_load.rs) posts EventLists built
# from real apiserver audit lines with unique auditIDs, and counts only 200 answers.
#
# The figure depends on the host: on this 2-core VM the same build measured 236.8-264.7k over
# 20 runs (median 255k) and 182-250k on a day the host was slow (median 228k over 18 runs),
# where kubetrail's CPU time for the same work rises by 10-30 % (mostly system time writing
# into page-cache pages the guest has not touched lately: every segment page is a new one
# while the queue grows during the burst); the CPU lines below tell the states apart.
#
# Usage: bench/audit-webhook.sh [TOTAL_EVENTS]   (default 1,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL="${1:-1000000}"
FIXTURES="${KUBETRAIL_FIXTURES:-$(cd ../shared/fixtures && pwd)}"
TEMPLATE="$FIXTURES/audit/kube-apiserver-1.28/audit-sample-200.jsonl"

cargo build --release --locked -q -p kubetrail --bin kubetrail --example audit_load
tmp="$(mktemp -d /tmp/kubetrail-bench.XXXXXX)"
kt_pid=""
cleanup() { [ -n "$kt_pid" ] && kill -TERM "$kt_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
target/release/examples/audit_load gen-certs "$tmp/certs"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/kubetrail.yaml" <<YAML
service:
  data_dir: $tmp/data
  log_level: warn
pipeline:
  inputs:
    - name: audit_webhook
      tag: k8s.audit
      listen: 127.0.0.1:$port
      tls.crt_file: $tmp/certs/tls.crt
      tls.key_file: $tmp/certs/tls.key
      token_file: $tmp/certs/tokens
  outputs:
    - name: file
      match: '*'
      path: $tmp/out
      max_size: 0
YAML
target/release/kubetrail run -c "$tmp/kubetrail.yaml" 2> "$tmp/kubetrail.log" &
kt_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
echo "audit-webhook: $TOTAL events from $(basename "$TEMPLATE"), 8 connections, 400 events per EventList"
# The generator builds its request bodies before it starts the clock, and reports its own
# CPU time and the machine's idle and stolen shares for the timed part: a run on a busy host
# tells itself apart from a slow build.
target/release/examples/audit_load post "https://127.0.0.1:$port" "$tmp/certs/ca.crt" \
    bench-token 8 400 "$TOTAL" "$TEMPLATE" > "$tmp/load.out"
grep -v '^load generator CPU\|^machine during' "$tmp/load.out"
load_cpu=$(sed -n 's/^load generator CPU during the run: //p' "$tmp/load.out")
machine=$(sed -n 's/^machine during the run: //p' "$tmp/load.out")
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$kt_pid/status")
# kubetrail's CPU time while the load ran (user, system), and the journal thread's share:
# steadier than the throughput on a shared machine when comparing two builds.
cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f s user, %.2f s system", $14/hz, $15/hz}' "/proc/$kt_pid/stat")
journal=$(for t in /proc/$kt_pid/task/*; do
  if [ "$(cat "$t/comm")" = kubetrail-journ ]; then
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f s", ($14+$15)/hz}' "$t/stat"
  fi
done)
# The output lags behind the input during the load (it reads every record back, writes it
# again and fsyncs, on the same two cores): how long it took to catch up says how far a
# sustained load, which the output bounds, is from the burst figure above.
t0=$(date +%s%N)
lines=$(bench/wait-lines.py "$tmp/out/kubetrail.jsonl" "$TOTAL" "$kt_pid" 60 || true)
lag=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "  records in the file output: $lines (all there ${lag} ms after the load ended)"
echo "  kubetrail CPU:              $cpu (journal thread: $journal)"
echo "  load generator CPU:         $load_cpu"
echo "  machine during the load:    $machine"
echo "  kubetrail peak RSS:         $((hwm_kib / 1024)) MiB (target <= 128)"
echo "  (target >= 240,000 events/s; Fluent Bit's http input: 80,000/s, answering before anything is durable)"
