#!/usr/bin/env python3
"""Helpers of the end-to-end benchmarks under bench/ (not part of kubetrail itself).

  ab.py wait URL OUTPUT N PID TIMEOUT
      Waits until kubetrail's /metrics at URL says output OUTPUT has acknowledged at least N
      records (kubetrail_component_records_out_total: written, synced and committed), polling
      every 20 ms; exit 0 then, 1 when PID exits or TIMEOUT seconds pass first. Prints the
      count. Unlike reading the output file back, this costs next to no CPU (the machine is
      shared with the process measured) and works for compressed output too.

  ab.py proc PID
      Prints, as one JSON object, what /proc says of a running process: CPU seconds (user,
      system), peak RSS (KiB), bytes it caused to be written to and read from storage
      (write_bytes, read_bytes, cancelled_write_bytes of /proc/PID/io: queue segments, the
      SQLite WAL and database, output files), and write_bytes and CPU seconds per thread
      name (of the threads alive: the runtime's blocking threads come and go).

  ab.py summary RESULTS [KEY ...]
      RESULTS holds one JSON object per run with a "build" name and figures. Prints, for each
      build, each figure's range over its runs and median, and, with two builds, the ratio of
      the second build's median to the first's and the range of the ratios of the runs taken
      side by side (run i of one build next to run i of the other, which were run back to back).
"""
import json
import os
import statistics
import sys
import time
import urllib.request


def records_out(url, output):
    want = 'kubetrail_component_records_out_total{component="%s"}' % output
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(want):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def wait(url, output, n, pid, timeout):
    deadline = time.monotonic() + timeout
    count = 0
    while True:
        try:
            count = records_out(url, output)
        except OSError:
            pass  # not listening yet
        if count >= n:
            print(count)
            return 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(count)
            return 1
        if time.monotonic() > deadline:
            print(count)
            return 1
        time.sleep(0.02)


def io_of(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, v = line.split(":")
                out[k.strip()] = int(v)
    except OSError:
        pass
    return out


def proc(pid):
    hz = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    # Fields after the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    user, system = int(stat[11]) / hz, int(stat[12]) / hz
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    io = io_of(f"/proc/{pid}/io")
    threads, thread_cpu = {}, {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                t = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        thread_cpu[name] = thread_cpu.get(name, 0) + (int(t[11]) + int(t[12])) / hz
        w = io_of(f"/proc/{pid}/task/{tid}/io").get("write_bytes", 0)
        if w:
            threads[name] = threads.get(name, 0) + w
    print(json.dumps({
        "user_s": user,
        "system_s": system,
        "hwm_kib": hwm,
        "write_bytes": io.get("write_bytes", 0),
        "read_bytes": io.get("read_bytes", 0),
        "cancelled_write_bytes": io.get("cancelled_write_bytes", 0),
        "thread_write_bytes": threads,
        "thread_cpu_s": thread_cpu,
    }))
    return 0


def fmt(v):
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def summary(path, keys):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    builds = []
    for r in runs:
        if r["build"] not in builds:
            builds.append(r["build"])
    if not keys:
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "run"]
    by = {b: [r for r in runs if r["build"] == b] for b in builds}
    width = max(len(k) for k in keys)
    for b in builds:
        print(f"  {b}: {len(by[b])} run(s)")
        for k in keys:
            vals = [r[k] for r in by[b] if k in r]
            if not vals:
                continue
            print(f"    {k:<{width}}  {fmt(min(vals))} - {fmt(max(vals))}  (median {fmt(statistics.median(vals))})")
    if len(builds) == 2:
        a, b = builds
        print(f"  {b} / {a}:")
        for k in keys:
            va = [r[k] for r in by[a] if k in r]
            vb = [r[k] for r in by[b] if k in r]
            if not va or not vb or statistics.median(va) == 0:
                continue
            pairs = [y / x for x, y in zip(va, vb) if x]
            line = f"    {k:<{width}}  {statistics.median(vb) / statistics.median(va):.2f}x of the medians"
            if pairs:
                line += f"; side by side {min(pairs):.2f}x - {max(pairs):.2f}x"
            print(line)
    return 0


def main(argv):
    if len(argv) == 7 and argv[1] == "wait":
        return wait(argv[2], argv[3], int(argv[4]), int(argv[5]), float(argv[6]))
    if len(argv) == 3 and argv[1] == "proc":
        return proc(int(argv[2]))
    if len(argv) >= 3 and argv[1] == "summary":
        return summary(argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
