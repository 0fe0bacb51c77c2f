#!/usr/bin/env bash
# Failover time of the kubernetes_events input under leader election: from the moment the
# leader stops (its Lease is lost) to the new leader's first record in its output.
#
# A release-built emulator generates realistic Event traffic (--rate, default 100/s); two
# release-built kubetrail replicas (each its own state and `file` output) elect a leader on the
# Lease kubetrail/kubetrail-events. Each run stops the leader and measures until the other
# replica's output grows, then restarts the stopped one as the standby:
#   SIGKILL   the Lease must expire: lease_duration after the standby last saw it change, plus
#             up to one poll (retry_period, jittered x1.0-2.2) and the first commit;
#   SIGTERM   a graceful shutdown releases the Lease: the standby's next poll takes it.
# The figures: each run's time, and min / median / max per way of stopping; beside each run,
# what the new leader's kubetrail_leader_takeover_gap_milliseconds says (from the old
# leader's last handover to the takeover: longer than the measured time by up to one
# retry_period, the age of that handover when the leader stopped).
#
# Usage: bench/failover.sh [RUNS] [LEASE_DURATION RENEW_DEADLINE RETRY_PERIOD] [RATE]
#   defaults: 5 runs each, 15s 10s 2s (client-go's, the manifests'), 100 Events/s
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
LEASE="${2:-15s}"
DEADLINE="${3:-10s}"
RETRY="${4:-2s}"
RATE="${5:-100}"

cargo build --release --locked -q -p kubetrail -p kubetrail-emulator --bins
tmp="$(mktemp -d /tmp/kubetrail-failover.XXXXXX)"
emu_pid=""
cleanup() {
  [ -n "$emu_pid" ] && kill -TERM "$emu_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

target/release/kubetrail-emulator --dir "$tmp/emu" --rate "$RATE" > "$tmp/emu.json" 2> "$tmp/emu.log" &
emu_pid=$!
for _ in $(seq 1 600); do [ -s "$tmp/emu.json" ] && break; sleep 0.1; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$tmp/emu.json")

ports=()
for i in 0 1; do
  mkdir -p "$tmp/r$i"
  ports[$i]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$tmp/r$i/kubetrail.yaml" <<YAML
service:
  data_dir: $tmp/r$i/data
  log_level: info
  http_listen: 127.0.0.1:${ports[$i]}
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: $url
      kube_ca_file: $tmp/emu/ca.crt
      kube_token_file: $tmp/emu/token
      leader_election: on
      leader_election.lease_namespace: kubetrail
      leader_election.lease_name: kubetrail-events
      leader_election.identity: r$i
      leader_election.lease_duration: $LEASE
      leader_election.renew_deadline: $DEADLINE
      leader_election.retry_period: $RETRY
  outputs:
    - name: file
      match: '*'
      path: $tmp/r$i/out
      file: events.jsonl
      max_size: 0
YAML
done

python3 - "$tmp" "$url" "$RUNS" "$LEASE" "$DEADLINE" "$RETRY" "$RATE" "${ports[0]}" "${ports[1]}" <<'PY'
import json, os, signal, ssl, statistics, subprocess, sys, time, urllib.request

tmp, url, runs, lease, deadline, retry, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:8]
ports = [int(sys.argv[8]), int(sys.argv[9])]
ctx = ssl.create_default_context(cafile=f"{tmp}/emu/ca.crt")
token = open(f"{tmp}/emu/token").read().strip()
procs = [None, None]
starts = [0, 0]

def start(i):
    log = open(f"{tmp}/r{i}/stderr.{starts[i]}", "w")
    starts[i] += 1
    procs[i] = subprocess.Popen(["target/release/kubetrail", "run", "-c", f"{tmp}/r{i}/kubetrail.yaml"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

def holder():
    req = urllib.request.Request(f"{url}/apis/coordination.k8s.io/v1/namespaces/kubetrail/leases/kubetrail-events",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            h = json.load(r)["spec"].get("holderIdentity") or ""
    except Exception:
        return None
    return int(h[1]) if h.startswith("r") else None

def size(i):
    try:
        return os.path.getsize(f"{tmp}/r{i}/out/events.jsonl")
    except FileNotFoundError:
        return 0

def takeover_gap(i):
    """The replica's kubetrail_leader_takeover_gap_milliseconds, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[i]}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("kubetrail_leader_takeover_gap_milliseconds{"):
                    return int(float(line.split()[-1]))
    except Exception:
        return None
    return None

def emitting_leader(timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        i = holder()
        if i is not None and procs[i] is not None:
            before = size(i)
            t = time.monotonic() + 5
            while time.monotonic() < t:
                if size(i) > before and holder() == i:
                    return i
                time.sleep(0.02)
        time.sleep(0.05)
    sys.exit("failover: no emitting leader")

def run():
  start(0); start(1)
  for sig in ["SIGKILL", "SIGTERM"]:
    for _ in range(runs):
        leader = emitting_leader()
        other = 1 - leader
        time.sleep(1.0)
        before = size(other)
        t0 = time.monotonic()
        procs[leader].send_signal(getattr(signal, sig))
        # The new leader's first record: the other replica's output grows.
        while size(other) == before:
            if time.monotonic() - t0 > 120:
                sys.exit("failover: the standby never took over")
            time.sleep(0.005)
        took = time.monotonic() - t0
        times[sig].append(took)
        gap = takeover_gap(other)
        gaps[sig].append(gap)
        procs[leader].wait()
        start(leader)
        said = f"{gap / 1000:.2f} s" if gap is not None else "not reported"
        print(f"  {sig}: {took:.2f} s (the new leader's takeover gap metric: {said})", flush=True)
        time.sleep(3.0)

times = {"SIGKILL": [], "SIGTERM": []}
gaps = {"SIGKILL": [], "SIGTERM": []}
try:
    run()
finally:
    for p in procs:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait()

print(f"failover: 2 replicas, lease_duration {lease}, renew_deadline {deadline}, retry_period {retry}, {rate} Events/s")
for sig, t in times.items():
    how = "the Lease expires" if sig == "SIGKILL" else "the Lease is released"
    print(f"  leader {sig} ({how}): min {min(t):.2f} s, median {statistics.median(t):.2f} s, max {max(t):.2f} s over {len(t)} runs")
    g = [x / 1000 for x in gaps[sig] if x is not None]
    if g:
        print(f"    takeover gap metric: min {min(g):.2f} s, median {statistics.median(g):.2f} s, max {max(g):.2f} s over {len(g)} runs")
PY
