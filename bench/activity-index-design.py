#!/usr/bin/env python3
"""Design benchmark for the activity store's ingest: what its indexes cost, and what an
index kept as sorted runs would cost instead (issue: store ingest >= 50,000 records/s).

The `store` output writes every batch (2,000 records, one transaction, fsync) into one
table with fifteen indexes. Five of them take their keys in random order (record id,
object, uid, owner, mention): kept plain (schema 1, mode `today`), each record dirtied one
leaf page of each, so every commit wrote thousands of pages to the WAL and the rate fell as
the store grew. Schema 2 bucketed them (mode `bucketed`). This script
measures, with Python's sqlite3 and generated rows shaped like kubetrail's (about 1.4 KB
of record, audit events and Events about pods in 50 namespaces, random names and uids),
the same schema and batch size, WAL, synchronous = FULL and a 40 MiB page cache:

  today   schema 1 (crates/activity/src/schema.rs before version 2; the columns the indexes use)
  runs    the random-key indexes replaced by tables keyed (run, key..., seq) WITHOUT ROWID,
          one run per batch written in key order (so every insert appends at the end), and
          the record id unique with the time first: (time, id). Runs are never merged, so a
          lookup would probe every batch's run: an upper bound of that design.
  merged  runs, merged as the design needs: whenever a level holds FANOUT (8) runs they
          become one run of the next level (INSERT ... SELECT ... ORDER BY the key, SQLite's
          own sorter, in the batch's transaction), so a lookup probes at most 7 runs a level.
  blobs   the same runs and merges, but a run is a sorted array of entries packed into blobs
          of about BLOB_BYTES (16 KiB), found by (index, run, first key): appending a batch's
          run and merging cost a copy per entry instead of a B-tree insert per entry. After
          the fill, LOOKUPS lookups of known uids (one blob read per live run, then a binary
          search in it; Python) give the cost of a point lookup in that layout.
  bucketed the random-key indexes kept as SQLite indexes, each prefixed by a bucket: the
          record's number divided by BUCKET (--bucket), so a batch's inserts land in one small
          region of each index (the current bucket's) and its dirty pages stay few. A lookup
          probes every bucket of the time range (a recursive CTE joined to the index); LOOKUPS
          uid lookups after the fill time that.
  table   only the indexes whose keys arrive in time order: the ceiling of any design that
          keeps the rows and these indexes.

Absolute figures include Python's per-row overhead (kubetrail's writer has its own: it parses
every record's JSON); compare the modes with each other, in one invocation.

Usage: bench/activity-index-design.py [--records N] [--runs R]
       [--modes today,runs,merged,blobs,bucketed,table] [--bucket N]
       [--dir DIR]
"""
import argparse
import bisect
import heapq
import os
import random
import sqlite3
import statistics
import tempfile
import time

COMMON = """
CREATE INDEX records_time ON records (time);
CREATE INDEX records_kind ON records (kind, time);
CREATE INDEX records_resource ON records (resource, time) WHERE resource IS NOT NULL;
CREATE INDEX records_user ON records (username, time) WHERE username IS NOT NULL;
CREATE INDEX records_namespace ON records (namespace, time) WHERE namespace IS NOT NULL;
CREATE INDEX records_verb ON records (verb, time) WHERE verb IS NOT NULL;
CREATE INDEX records_reason ON records (reason, time) WHERE reason IS NOT NULL;
CREATE INDEX records_warning ON records (time) WHERE event_type = 'Warning';
CREATE INDEX records_failed ON records (time) WHERE response_code >= 400;
"""
TODAY = """
CREATE UNIQUE INDEX records_id ON records (id);
CREATE INDEX records_object ON records (resource, name, namespace, time);
CREATE INDEX records_uid ON records (uid) WHERE uid IS NOT NULL;
CREATE INDEX records_owner ON records (owner_uid, time) WHERE owner_uid IS NOT NULL;
CREATE INDEX records_mention ON records (mention_resource, mention_name, namespace)
    WHERE mention_name IS NOT NULL;
"""
RUNS = """
CREATE UNIQUE INDEX records_id ON records (time, id);
CREATE TABLE ix_object (run INTEGER, resource TEXT, name TEXT, namespace TEXT, time INTEGER,
    seq INTEGER, PRIMARY KEY (run, resource, name, namespace, time, seq)) WITHOUT ROWID;
CREATE TABLE ix_uid (run INTEGER, uid TEXT, seq INTEGER, PRIMARY KEY (run, uid, seq)) WITHOUT ROWID;
CREATE TABLE ix_owner (run INTEGER, owner_uid TEXT, time INTEGER, seq INTEGER,
    PRIMARY KEY (run, owner_uid, time, seq)) WITHOUT ROWID;
CREATE TABLE ix_mention (run INTEGER, r TEXT, n TEXT, ns TEXT, seq INTEGER,
    PRIMARY KEY (run, r, n, ns, seq)) WITHOUT ROWID;
"""
TABLE = "CREATE UNIQUE INDEX records_id ON records (time, id);"
BLOBS = TABLE + """
CREATE TABLE ix_blobs (id INTEGER PRIMARY KEY, ix INTEGER, run INTEGER, first TEXT, data BLOB);
CREATE INDEX ix_blobs_key ON ix_blobs (ix, run, first);
"""
BUCKETED = TABLE + """
CREATE INDEX b_object ON records (bucket, resource, name, namespace, time);
CREATE INDEX b_uid ON records (bucket, uid) WHERE uid IS NOT NULL;
CREATE INDEX b_owner ON records (bucket, owner_uid, time) WHERE owner_uid IS NOT NULL;
CREATE INDEX b_mention ON records (bucket, mention_resource, mention_name, namespace)
    WHERE mention_name IS NOT NULL;
"""
BUCKET = 16384
BLOB_BYTES = 16 << 10
COLUMNS = ("id TEXT NOT NULL, time INTEGER NOT NULL, kind TEXT, resource TEXT, namespace TEXT, "
           "name TEXT, uid TEXT, owner_uid TEXT, mention_resource TEXT, mention_name TEXT, "
           "verb TEXT, username TEXT, reason TEXT, event_type TEXT, response_code INTEGER, "
           "record TEXT, bucket INTEGER")
INSERT = ("INSERT INTO records (id, time, kind, resource, namespace, name, uid, owner_uid, "
          "mention_resource, mention_name, verb, username, reason, event_type, response_code, "
          "record, bucket) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")
BATCH = 2000
FILLER = "x" * 1100


def row(rnd, i):
    t = 1_700_000_000_000_000_000 + i * 600_000_000  # a million records over a week
    ns = f"ns{rnd.randrange(50)}"
    name = f"web-{rnd.getrandbits(40):010x}"
    uid = f"{rnd.getrandbits(128):032x}"
    owner = f"{rnd.getrandbits(128):032x}"
    audit = i % 3 != 0
    return (f"audit/{rnd.getrandbits(128):032x}" if audit else f"event/{uid}/{i}", t,
            "k8s_audit" if audit else "k8s_event", "pods", ns, name, uid, owner,
            None if audit else "pods", None if audit else name,
            "update" if audit else None, f"user{rnd.randrange(6)}" if audit else None,
            None if audit else "Scheduled", None if audit else "Normal",
            200 if audit else None, FILLER, None)


FANOUT = 8
KEYS = {"ix_object": "resource, name, namespace, time, seq", "ix_uid": "uid, seq",
        "ix_owner": "owner_uid, time, seq", "ix_mention": "r, n, ns, seq"}


def cascade(levels, run_id, next_run, merge_runs):
    """Adds `run_id` to level 0; every level that reaches FANOUT runs has them merged into one
    run of the next level by `merge_runs(sources, new)`."""
    levels.setdefault(0, []).append(run_id)
    level = 0
    while len(levels.get(level, [])) >= FANOUT:
        sources = levels[level][:FANOUT]
        del levels[level][:FANOUT]
        new = next_run[0]
        next_run[0] += 1
        merge_runs(sources, new)
        levels.setdefault(level + 1, []).append(new)
        level += 1


def merge(c, table, levels, run_id, next_run):
    """Runs as rows: SQLite's sorter makes the merged run (INSERT ... SELECT ... ORDER BY)."""
    def merge_runs(sources, new):
        marks = ",".join("?" * len(sources))
        c.execute(f"INSERT INTO {table} SELECT ?, {KEYS[table]} FROM {table} "
                  f"WHERE run IN ({marks}) ORDER BY {KEYS[table]}", [new, *sources])
        c.execute(f"DELETE FROM {table} WHERE run IN ({marks})", sources)
    cascade(levels, run_id, next_run, merge_runs)


def put_blobs(c, ix, run_id, entries):
    """Writes a run's sorted entries as blobs of about BLOB_BYTES."""
    chunk, size = [], 0
    for e in entries:
        chunk.append(e)
        size += len(e) + 1
        if size >= BLOB_BYTES:
            c.execute("INSERT INTO ix_blobs (ix, run, first, data) VALUES (?,?,?,?)",
                      (ix, run_id, chunk[0], "\n".join(chunk).encode()))
            chunk, size = [], 0
    if chunk:
        c.execute("INSERT INTO ix_blobs (ix, run, first, data) VALUES (?,?,?,?)",
                  (ix, run_id, chunk[0], "\n".join(chunk).encode()))


def merge_blobs(c, ix, levels, run_id, next_run):
    """Runs packed into blobs: decoded, merged in memory, packed again."""
    def merge_runs(sources, new):
        lists = [[e for (data,) in c.execute(
                     "SELECT data FROM ix_blobs WHERE ix = ? AND run = ? ORDER BY first", (ix, r))
                  for e in data.decode().split("\n")] for r in sources]
        put_blobs(c, ix, new, heapq.merge(*lists))
        marks = ",".join("?" * len(sources))
        c.execute(f"DELETE FROM ix_blobs WHERE ix = ? AND run IN ({marks})", [ix, *sources])
    cascade(levels, run_id, next_run, merge_runs)


LOOKUPS = 500


def lookup_uid(c, runs, uid):
    """The seqs of `uid` in the uid index: in each live run, the one blob that may hold it."""
    key = uid + "\x1f"
    seqs = []
    for r in runs:
        found = c.execute("SELECT data FROM ix_blobs WHERE ix = 1 AND run = ? AND first <= ? "
                          "ORDER BY first DESC LIMIT 1", (r, key + "\x7f")).fetchone()
        if found:
            entries = found[0].decode().split("\n")
            i = bisect.bisect_left(entries, key)
            while i < len(entries) and entries[i].startswith(key):
                seqs.append(int(entries[i].rsplit("\x1f", 1)[1], 16))
                i += 1
    return seqs


def entry(*key_and_seq):
    """A blob entry: the key's fields and the seq, ordered as text."""
    *key, seq = key_and_seq
    return "\x1f".join(key) + f"\x1f{seq:016x}"


def run(mode, n, path):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    c = sqlite3.connect(path, isolation_level=None)
    for p in ("journal_mode = WAL", "synchronous = FULL", "cache_size = -40960",
              "wal_autocheckpoint = 16384"):
        c.execute("PRAGMA " + p)
    c.execute(f"CREATE TABLE records (seq INTEGER PRIMARY KEY, {COLUMNS})")
    c.executescript(COMMON + {"today": TODAY, "runs": RUNS, "merged": RUNS, "blobs": BLOBS,
                              "bucketed": BUCKETED, "table": TABLE}[mode])
    levels = {}  # per index table: level -> [run, ...]
    next_run = [1 << 40]  # merged runs get numbers above every batch's
    rnd = random.Random(1)
    busy = 0.0
    known = []  # uids to look up afterwards
    for b in range(0, n, BATCH):
        rows = [row(rnd, i) for i in range(b, min(n, b + BATCH))]  # made outside the timing
        known.extend(r[6] for r in rows[::max(1, n // LOOKUPS)])
        t0 = time.perf_counter()
        c.execute("BEGIN")
        obj, uid, own, men = [], [], [], []
        if mode == "bucketed":
            rows = [(*r[:-1], i // BUCKET) for i, r in enumerate(rows, b)]
        for r in rows:
            seq = c.execute(INSERT, r).lastrowid
            if mode in ("runs", "merged"):
                obj.append((b, r[3], r[5], r[4], r[1], seq))
                uid.append((b, r[6], seq))
                own.append((b, r[7], r[1], seq))
                if r[9]:
                    men.append((b, r[8], r[9], r[4], seq))
            elif mode == "blobs":
                obj.append(entry(r[3], r[5], r[4], f"{r[1]:020d}", seq))
                uid.append(entry(r[6], seq))
                own.append(entry(r[7], f"{r[1]:020d}", seq))
                if r[9]:
                    men.append(entry(r[8], r[9], r[4], seq))
        if mode == "blobs":
            for ix, entries in enumerate((obj, uid, own, men)):
                if entries:
                    entries.sort()
                    put_blobs(c, ix, b, entries)
                    merge_blobs(c, ix, levels.setdefault(ix, {}), b, next_run)
        if mode in ("runs", "merged"):
            for table, entries in (("ix_object", obj), ("ix_uid", uid), ("ix_owner", own),
                                   ("ix_mention", men)):
                entries.sort()
                marks = ",".join("?" * len(entries[0])) if entries else ""
                c.executemany(f"INSERT INTO {table} VALUES ({marks})", entries)
                if mode == "merged" and entries:
                    merge(c, table, levels.setdefault(table, {}), b, next_run)
        c.execute("COMMIT")
        busy += time.perf_counter() - t0
    lookups = None
    if mode == "blobs":
        runs = [r for level in levels.get(1, {}).values() for r in level]  # index 1: uid
        t0 = time.perf_counter()
        for uid in known:
            assert lookup_uid(c, runs, uid), uid
        lookups = ((time.perf_counter() - t0) * 1000 / len(known), len(runs))
    if mode == "bucketed":
        last = (n - 1) // BUCKET
        t0 = time.perf_counter()
        for uid in known:
            assert c.execute(
                "WITH RECURSIVE b(x) AS (VALUES (0) UNION ALL SELECT x + 1 FROM b WHERE x < ?) "
                "SELECT r.seq FROM b JOIN records r INDEXED BY b_uid "
                "ON r.bucket = b.x AND r.uid = ?", (last, uid)).fetchall(), uid
        lookups = ((time.perf_counter() - t0) * 1000 / len(known), last + 1)
    c.close()
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return n / busy, size, lookups


def main():
    global BUCKET
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--modes", default="today,runs,merged,blobs,table")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--bucket", type=int, default=BUCKET)
    args = ap.parse_args()
    BUCKET = args.bucket
    modes = args.modes.split(",")
    results = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for i in range(args.runs):
            # Alternating, so the host's state falls on every mode alike.
            for m in modes if i % 2 == 0 else reversed(modes):
                rate, size, lookups = run(m, args.records, os.path.join(d, f"{m}.db"))
                results[m].append(rate)
                lookups = (f", {lookups[0]:.2f} ms per uid lookup, {lookups[1]} live runs or buckets"
                           if lookups else "")
                print(f"  run {i + 1}: {m:5} {rate:8.0f} records/s  ({size >> 20} MiB on disk"
                      f"{lookups})", flush=True)
    print(f"{args.records} records, batches of {BATCH}, sqlite {sqlite3.sqlite_version}, "
          f"load average {os.getloadavg()[0]:.1f}")
    base = statistics.median(results[modes[0]])
    for m in modes:
        r = results[m]
        print(f"  {m:5} {min(r):8.0f}-{max(r):.0f} records/s  "
              f"(median {statistics.median(r) / base:.2f}x {modes[0]})")


if __name__ == "__main__":
    main()
