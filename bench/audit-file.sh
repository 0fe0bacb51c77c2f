#!/usr/bin/env bash
# Benchmark of the audit_file input: a 1 GiB log of real apiserver audit lines (the shared
# fixtures, with unique auditIDs) tailed from its head into the `file` output (dedup keys,
# durable queue with fsync per commit, output fsync per batch).
#
# Figures per run, from kubetrail's start until the output has acknowledged every line (read
# from kubetrail's /metrics, so waiting costs no CPU and works for compressed output too):
#   throughput          MB of log per second of wall time
#   CPU                 kubetrail's user + system seconds per GiB of log
#   written             bytes kubetrail caused to be written to storage per GiB of log
#                       (/proc/PID/io write_bytes: queue segments + SQLite WAL and database +
#                       output files), and the output's share of it (the output files' size)
#   peak RSS            VmHWM
# The machine is shared and its state moves figures by 10-30 % within minutes: compare two
# builds with --against (alternating runs in one invocation, so the host's state cancels out)
# and trust CPU seconds and bytes written over wall time.
#
# Usage: bench/audit-file.sh [--runs N] [--this KUBETRAIL] [--against OTHER_KUBETRAIL] [--compress gzip|zstd] [--queue-compress off] [MiB]
#   --this      run this kubetrail binary as this build instead of the tree's release build
#               (a copy of it that a later build cannot replace while the runs go on)
#   MiB         size of the generated log (default 1024)
#   --runs N    runs of this build (and of the other one); default 1
#   --against   a kubetrail binary of another build (e.g. of an older commit), run alternately
#               with this tree's (other, this, this, other, ...); the summary gives both
#               builds' ranges and the ratios of their figures
#   --compress  the file output compresses (both builds must know the option)
#   --queue-compress off
#               the queue's blocks are stored uncompressed (service `queue_compress`; both
#               builds must know the option)
# KUBETRAIL_BENCH_LOG=FILE keeps the generated log in FILE (made when missing or of another
# size, never deleted) instead of a temporary directory, for repeated invocations.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=1; THIS_BIN=""; AGAINST=""; COMPRESS=""; QUEUE_COMPRESS=""; MIB=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --against) AGAINST="$(realpath "$2")"; shift 2 ;;
    --this) THIS_BIN="$(realpath "$2")"; shift 2 ;;
    --compress) COMPRESS="$2"; shift 2 ;;
    --queue-compress) QUEUE_COMPRESS="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) MIB="$1"; shift ;;
  esac
done
FIXTURES="${KUBETRAIL_FIXTURES:-$(cd ../shared/fixtures && pwd)}"
TEMPLATE="$FIXTURES/audit/kube-apiserver-1.28/audit-sample-200.jsonl"

cargo build --release --locked -q -p kubetrail --bin kubetrail --example audit_load
THIS="${THIS_BIN:-$PWD/target/release/kubetrail}"
tmp="$(mktemp -d /tmp/kubetrail-bench.XXXXXX)"
kt_pid=""
cleanup() { [ -n "$kt_pid" ] && kill -TERM "$kt_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

log="${KUBETRAIL_BENCH_LOG:-$tmp/logs/audit.log}"
want_bytes=$((MIB * 1024 * 1024))
if [ ! -f "$log" ] || [ ! -f "$log.lines" ] || [ "$(cat "$log.size" 2>/dev/null)" != "$want_bytes" ]; then
  mkdir -p "$(dirname "$log")"
  gen=$(target/release/examples/audit_load gen-log "$log" "$want_bytes" "$TEMPLATE")
  echo "${gen%% lines*}" > "$log.lines"
  echo "$want_bytes" > "$log.size"
fi
lines=$(cat "$log.lines")
bytes=$(stat -c %s "$log")
results="$tmp/results.jsonl"

# One run of BINARY (named BUILD in the summary).
run_once() {
  local build="$1" bin="$2" run="$3"
  local d="$tmp/run"
  rm -rf "$d"; mkdir -p "$d/logs"
  # The tailer's glob sees the log under its usual name; a hard link costs nothing.
  ln "$log" "$d/logs/audit.log" 2>/dev/null || ln -s "$log" "$d/logs/audit.log"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$d/kubetrail.yaml" <<YAML
service:
  data_dir: $d/data
  log_level: warn
  http_listen: 127.0.0.1:$port
${QUEUE_COMPRESS:+  queue_compress: $QUEUE_COMPRESS}
pipeline:
  inputs:
    - name: audit_file
      tag: k8s.audit
      path: $d/logs/audit*.log*
  outputs:
    - name: file
      alias: out
      match: '*'
      path: $d/out
      max_size: 0
YAML
  [ -n "$COMPRESS" ] && echo "      compress: $COMPRESS" >> "$d/kubetrail.yaml"
  # The log is read from the page cache in every run (as right after it was written).
  cat "$log" > /dev/null
  sync
  local start end
  start=$(date +%s.%N)
  "$bin" run -c "$d/kubetrail.yaml" 2> "$d/kubetrail.log" &
  kt_pid=$!
  local got
  if ! got=$(bench/ab.py wait "http://127.0.0.1:$port/metrics" out "$lines" "$kt_pid" 1800); then
    echo "audit-file: $build: only $got of $lines records delivered by the deadline" >&2
    tail -5 "$d/kubetrail.log" >&2; exit 1
  fi
  end=$(date +%s.%N)
  local procjson
  procjson=$(bench/ab.py proc "$kt_pid")
  kill -TERM "$kt_pid"; wait "$kt_pid" || true; kt_pid=""
  # Every line is in the output once (checked after the clock stopped).
  local out_bytes n
  out_bytes=$(du -cb "$d/out" | tail -1 | cut -f1)
  case "$COMPRESS" in
    gzip) n=$(cat "$d"/out/* | gzip -dc | wc -l) ;;
    zstd) n=$(cat "$d"/out/* | zstd -dcq | wc -l) ;;
    *) n=$(cat "$d"/out/* | wc -l) ;;
  esac
  if [ "$n" != "$lines" ]; then
    echo "audit-file: $build: the output holds $n lines, not $lines" >&2; exit 1
  fi
  python3 - "$build" "$run" "$start" "$end" "$bytes" "$lines" "$out_bytes" "$procjson" "$results" <<'PY'
import json, sys
build, run, start, end, size, lines, out_bytes, p = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), json.loads(sys.argv[8])
secs, gib = end - start, size / 2**30
r = {
    "build": build, "run": run,
    "MB_per_s": size / secs / 1e6,
    "wall_s": secs,
    "cpu_s_per_GiB": (p["user_s"] + p["system_s"]) / gib,
    "user_s_per_GiB": p["user_s"] / gib,
    "system_s_per_GiB": p["system_s"] / gib,
    "written_GiB_per_GiB": p["write_bytes"] / 2**30 / gib,
    "output_GiB_per_GiB": out_bytes / 2**30 / gib,
    "other_written_GiB_per_GiB": (p["write_bytes"] - out_bytes) / 2**30 / gib,
    "read_from_disk_MiB": p["read_bytes"] / 2**20,
    "peak_RSS_MiB": p["hwm_kib"] / 1024,
}
with open(sys.argv[-1], "a") as f:
    f.write(json.dumps(r) + "\n")
print(f"  {r['build']} run {r['run']}: {r['MB_per_s']:.0f} MB/s, CPU {r['cpu_s_per_GiB']:.2f} s/GiB"
      f" ({r['user_s_per_GiB']:.2f} user + {r['system_s_per_GiB']:.2f} system),"
      f" written {r['written_GiB_per_GiB']:.2f} GiB/GiB (output {r['output_GiB_per_GiB']:.2f}),"
      f" peak RSS {r['peak_RSS_MiB']:.1f} MiB")
PY
}

echo "audit-file: $((bytes / 1048576)) MiB, $lines real apiserver lines (unique auditIDs) -> file output${COMPRESS:+ (compress: $COMPRESS)}${QUEUE_COMPRESS:+ (queue_compress: $QUEUE_COMPRESS)}"
for i in $(seq 1 "$RUNS"); do
  if [ -z "$AGAINST" ]; then
    run_once this "$THIS" "$i"
  elif [ $((i % 2)) = 1 ]; then
    run_once other "$AGAINST" "$i"; run_once this "$THIS" "$i"
  else
    run_once this "$THIS" "$i"; run_once other "$AGAINST" "$i"
  fi
done
echo "summary (targets: written <= 2 GiB per GiB with the default output, CPU <= 4.5 s per GiB, peak RSS <= 64 MiB${AGAINST:+, throughput >= 1.6x the other build})"
bench/ab.py summary "$results" MB_per_s cpu_s_per_GiB user_s_per_GiB system_s_per_GiB \
  written_GiB_per_GiB output_GiB_per_GiB other_written_GiB_per_GiB read_from_disk_MiB peak_RSS_MiB
