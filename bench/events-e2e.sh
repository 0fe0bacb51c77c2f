#!/usr/bin/env bash
# End-to-end benchmark of the kubernetes_events input (issue: >= 50,000 Events/s, peak RSS
# <= 64 MiB whatever the list size).
#
# A release-built emulator holds N Events (default 100,000); kubetrail (release) lists them in
# pages of 500 and then receives N MODIFIED through its watch (the emulator bumps every Event
# once as soon as the first LIST is answered), all through the pipeline (dedup, durable queue,
# fsync) into the `file` output. The figures: records written / wall time from kubetrail's
# start until the output holds all 2N records, and kubetrail's peak RSS (VmHWM).
#
# Usage: bench/events-e2e.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
WANT=$((2 * N))

cargo build --release --locked -q -p kubetrail -p kubetrail-emulator --bins
tmp="$(mktemp -d /tmp/kubetrail-bench.XXXXXX)"
emu_pid=""; kt_pid=""
cleanup() {
  [ -n "$kt_pid" ] && kill -TERM "$kt_pid" 2>/dev/null || true
  [ -n "$emu_pid" ] && kill -TERM "$emu_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

target/release/kubetrail-emulator --dir "$tmp/emu" --events "$N" --modify-after-list > "$tmp/emu.json" 2> "$tmp/emu.log" &
emu_pid=$!
for _ in $(seq 1 600); do [ -s "$tmp/emu.json" ] && break; sleep 0.1; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$tmp/emu.json")

cat > "$tmp/kubetrail.yaml" <<YAML
service:
  data_dir: $tmp/data
  log_level: warn
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: $url
      kube_ca_file: $tmp/emu/ca.crt
      kube_token_file: $tmp/emu/token
      kube_request_limit: 500
  outputs:
    - name: file
      match: '*'
      path: $tmp/out
      file: events.jsonl
      max_size: 0
YAML

start=$(date +%s.%N)
target/release/kubetrail run -c "$tmp/kubetrail.yaml" 2> "$tmp/kubetrail.log" &
kt_pid=$!
if ! lines=$(bench/wait-lines.py "$tmp/out/events.jsonl" "$WANT" "$kt_pid" 600); then
  echo "events-e2e: only $lines of $WANT records after the deadline" >&2
  tail -20 "$tmp/kubetrail.log" >&2
  exit 1
fi
end=$(date +%s.%N)
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$kt_pid/status")
kill -TERM "$kt_pid"; wait "$kt_pid" || true; kt_pid=""
dups=$(python3 - "$tmp/out/events.jsonl" <<'PY'
import json, sys
seen = set(); dups = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    k = (r.get("uid"), r.get("resource_version"))
    dups += k in seen; seen.add(k)
print(dups)
PY
)
python3 - "$start" "$end" "$lines" "$hwm_kib" "$N" "$dups" <<'PY'
import sys
start, end, lines, hwm, n, dups = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
secs = end - start
rate = lines / secs
print(f"events-e2e: list of {n} + watch of {n} MODIFIED -> file output")
print(f"  records written:     {lines} ({dups} duplicates)")
print(f"  wall time:           {secs:.2f} s")
print(f"  throughput:          {rate:,.0f} Events/s   (target >= 50,000)")
print(f"  kubetrail peak RSS:  {hwm/1024:.1f} MiB      (target <= 64)")
PY
