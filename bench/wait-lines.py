#!/usr/bin/env python3
"""Waits until FILE holds at least N lines; used by the benchmarks to know when kubetrail's
output is complete. Counts only the bytes added since the last look (every 20 ms), so the
waiting costs next to no CPU: re-reading a 1 GiB output with `wc -l` ten times a second takes
a core away from the process being measured on a 2-core machine.

Usage: wait-lines.py FILE N PID TIMEOUT_SECONDS
Exit 0 when complete; 1 when PID exits or the timeout passes first. Prints the line count."""
import os
import sys
import time

path, want, pid, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + timeout
count, f = 0, None
while True:
    if f is None:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            pass
    if f is not None:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            count += chunk.count(b"\n")
    if count >= want:
        print(count)
        sys.exit(0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print(count)
        sys.exit(1)
    if time.monotonic() > deadline:
        print(count)
        sys.exit(1)
    time.sleep(0.02)
