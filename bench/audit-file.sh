#!/usr/bin/env bash
# Benchmark of the audit_file input (issue: >= 160 MB/s for a 1 GiB realistic audit log
# through the pipeline to the `file` output; peak RSS <= 64 MiB).
#
# The log is made of real apiserver audit lines (the shared fixtures) with unique auditIDs.
# kubetrail (release) tails it from the head into the `file` output (dedup keys, durable
# queue with fsync, output fsync per batch); the figure is bytes of log / wall time from
# kubetrail's start until the output holds every line.
#
# Usage: bench/audit-file.sh [MiB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${1:-1024}"
FIXTURES="${KUBETRAIL_FIXTURES:-$(cd ../shared/fixtures && pwd)}"
TEMPLATE="$FIXTURES/audit/kube-apiserver-1.28/audit-sample-200.jsonl"

cargo build --release --locked -q -p kubetrail --bin kubetrail --example audit_load
tmp="$(mktemp -d /tmp/kubetrail-bench.XXXXXX)"
kt_pid=""
cleanup() { [ -n "$kt_pid" ] && kill -TERM "$kt_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/logs"
gen=$(target/release/examples/audit_load gen-log "$tmp/logs/audit.log" $((MIB * 1024 * 1024)) "$TEMPLATE")
lines=${gen%% lines*}
bytes=$(stat -c %s "$tmp/logs/audit.log")
cat > "$tmp/kubetrail.yaml" <<YAML
service:
  data_dir: $tmp/data
  log_level: warn
pipeline:
  inputs:
    - name: audit_file
      tag: k8s.audit
      path: $tmp/logs/audit*.log*
  outputs:
    - name: file
      match: '*'
      path: $tmp/out
      max_size: 0
YAML
sync
start=$(date +%s.%N)
target/release/kubetrail run -c "$tmp/kubetrail.yaml" 2> "$tmp/kubetrail.log" &
kt_pid=$!
if ! got=$(bench/wait-lines.py "$tmp/out/kubetrail.jsonl" "$lines" "$kt_pid" 1800); then
  echo "audit-file: only $got of $lines lines after the deadline" >&2; tail -5 "$tmp/kubetrail.log" >&2; exit 1
fi
end=$(date +%s.%N)
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$kt_pid/status")
# kubetrail's CPU time until the output held every line (user, system).
cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f s user, %.2f s system", $14/hz, $15/hz}' "/proc/$kt_pid/stat")
python3 - "$start" "$end" "$bytes" "$lines" "$hwm_kib" "$cpu" <<'PY'
import sys
start, end, size, lines, hwm = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = sys.argv[6]
secs = end - start
print(f"audit-file: {size/2**20:.0f} MiB, {lines} real apiserver lines (unique auditIDs) -> file output")
print(f"  wall time:           {secs:.1f} s")
print(f"  throughput:          {size/secs/1e6:.0f} MB/s, {lines/secs:,.0f} events/s   (target >= 160 MB/s; Fluent Bit tail: 53 MB/s)")
print(f"  kubetrail CPU:       {cpu}")
print(f"  kubetrail peak RSS:  {hwm/1024:.1f} MiB   (target <= 64)")
PY
