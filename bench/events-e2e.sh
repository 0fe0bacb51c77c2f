#!/usr/bin/env bash
# End-to-end benchmark of the kubernetes_events input (issue: >= 50,000 Events/s, peak RSS
# <= 64 MiB whatever the list size).
#
# A release-built emulator holds N Events (default 100,000); kubetrail (release) lists them in
# pages of 500 and then receives N MODIFIED through its watch (the emulator bumps every Event
# once as soon as the first LIST is answered), all through the pipeline (dedup, durable queue,
# fsync) into the `file` output. The figures: records delivered / wall time from kubetrail's
# start until the output has acknowledged all 2N records (read from kubetrail's /metrics),
# kubetrail's CPU seconds, and its peak RSS (VmHWM); the output is then checked for
# duplicates.
#
# Usage: bench/events-e2e.sh [--runs N] [--this KUBETRAIL] [--against OTHER_KUBETRAIL] [N]
#   --this      run this kubetrail binary as this build instead of the tree's release build
#               (a copy of it that a later build cannot replace while the runs go on)
#   --against   a kubetrail binary of another build, run alternately with this tree's against
#               the same emulator (this tree's); the summary gives both builds' ranges and
#               the ratios of their figures
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=1; THIS_BIN=""; AGAINST=""; N=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --against) AGAINST="$(realpath "$2")"; shift 2 ;;
    --this) THIS_BIN="$(realpath "$2")"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) N="$1"; shift ;;
  esac
done
WANT=$((2 * N))

cargo build --release --locked -q -p kubetrail -p kubetrail-emulator --bins
THIS="${THIS_BIN:-$PWD/target/release/kubetrail}"
tmp="$(mktemp -d /tmp/kubetrail-bench.XXXXXX)"
emu_pid=""; kt_pid=""
cleanup() {
  [ -n "$kt_pid" ] && kill -TERM "$kt_pid" 2>/dev/null || true
  [ -n "$emu_pid" ] && kill -TERM "$emu_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
results="$tmp/results.jsonl"

run_once() {
  local build="$1" bin="$2" run="$3"
  local d="$tmp/run"
  rm -rf "$d"; mkdir -p "$d"
  target/release/kubetrail-emulator --dir "$d/emu" --events "$N" --modify-after-list > "$d/emu.json" 2> "$d/emu.log" &
  emu_pid=$!
  for _ in $(seq 1 600); do [ -s "$d/emu.json" ] && break; sleep 0.1; done
  local url mport
  url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$d/emu.json")
  mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$d/kubetrail.yaml" <<YAML
service:
  data_dir: $d/data
  log_level: warn
  http_listen: 127.0.0.1:$mport
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: $url
      kube_ca_file: $d/emu/ca.crt
      kube_token_file: $d/emu/token
      kube_request_limit: 500
  outputs:
    - name: file
      alias: out
      match: '*'
      path: $d/out
      file: events.jsonl
      max_size: 0
YAML
  local start end got
  start=$(date +%s.%N)
  "$bin" run -c "$d/kubetrail.yaml" 2> "$d/kubetrail.log" &
  kt_pid=$!
  if ! got=$(bench/ab.py wait "http://127.0.0.1:$mport/metrics" out "$WANT" "$kt_pid" 600); then
    echo "events-e2e: $build: only $got of $WANT records after the deadline" >&2
    tail -20 "$d/kubetrail.log" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  local procjson
  procjson=$(bench/ab.py proc "$kt_pid")
  kill -TERM "$kt_pid"; wait "$kt_pid" || true; kt_pid=""
  kill -TERM "$emu_pid"; wait "$emu_pid" || true; emu_pid=""
  python3 - "$build" "$run" "$start" "$end" "$d/out/events.jsonl" "$WANT" "$procjson" "$results" <<'PY'
import json, sys
build, run, start, end, out, want, p = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6]), json.loads(sys.argv[7])
seen, dups, lines = set(), 0, 0
for line in open(out):
    r = json.loads(line)
    k = (r.get("uid"), r.get("resource_version"))
    dups += k in seen
    seen.add(k)
    lines += 1
if lines != want or dups:
    sys.exit(f"events-e2e: {build}: {lines} records in the output ({dups} duplicates), not {want}")
secs = end - start
r = {
    "build": build, "run": run,
    "events_per_s": lines / secs,
    "wall_s": secs,
    "cpu_s_per_100k": (p["user_s"] + p["system_s"]) / (lines / 1e5),
    "duplicates": dups,
    "peak_RSS_MiB": p["hwm_kib"] / 1024,
}
with open(sys.argv[-1], "a") as f:
    f.write(json.dumps(r) + "\n")
print(f"  {r['build']} run {r['run']}: {r['events_per_s']:,.0f} Events/s, {r['duplicates']} duplicates,"
      f" kubetrail CPU {r['cpu_s_per_100k']:.2f} s per 100k records, peak RSS {r['peak_RSS_MiB']:.1f} MiB")
PY
}

echo "events-e2e: list of $N + watch of $N MODIFIED -> file output"
for i in $(seq 1 "$RUNS"); do
  if [ -z "$AGAINST" ]; then
    run_once this "$THIS" "$i"
  elif [ $((i % 2)) = 1 ]; then
    run_once other "$AGAINST" "$i"; run_once this "$THIS" "$i"
  else
    run_once this "$THIS" "$i"; run_once other "$AGAINST" "$i"
  fi
done
echo "summary (targets: >= 50,000 Events/s, peak RSS <= 64 MiB, 0 duplicates)"
bench/ab.py summary "$results" events_per_s cpu_s_per_100k peak_RSS_MiB duplicates
