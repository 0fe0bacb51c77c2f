#!/usr/bin/env bash
# Benchmark of the activity store and `kubetrail who` (issue: store ingest >= 50,000
# records/s at <= 64 MiB RSS; `who` on a store of 10 million records in under 100 ms, on the
# SQLite store and on PostgreSQL, with the plans that show the indexes answering).
#
# Drives the outputs and the query layer directly (examples/activity_bench.rs, release
# build) with generated records: a week of a busy cluster as kubetrail encodes it (audit
# events and Events about 10,000 Deployments, their ReplicaSets and pods in 50 namespaces,
# kubelets, controllers, the scheduler and six people; see the example's header).
#
#   bench/activity-store.sh ingest [N] [RUNS] [SHARDS]
#       RUNS times: N records (1,000,000) into a new store through the `store` output
#       (batches of 2,000, the default batch.records; sync full; SHARDS files, default 2,
#       the output's default); records/s, peak RSS and the bytes the process read and wrote
#       through system calls.
#   bench/activity-store.sh who [N] [DB]
#       a store of N records (10,000,000) at DB (default: a temporary file, removed after;
#       a DB that already holds N records is reused, so several runs share one), then
#       `who` on a deleted pod, its ReplicaSet and its Deployment: the time of each answer
#       (the first, then 20 more, the store open) and EXPLAIN QUERY PLAN of its reads.
#   bench/activity-store.sh who-store DB
#       the same questions to an existing store (any `store` output's database), as it is.
#   bench/activity-store.sh who-postgresql [N]
#       the same on a throwaway PostgreSQL (scripts/services; $KUBETRAIL_TEST_PG_URL when
#       set): N records through the `postgresql` output, then `who` and EXPLAIN ANALYZE.
#       The table's indexes are dropped after its first batch and built again once all
#       records are in (the output's own DDL), so 10 million rows take minutes, not hours;
#       PG_FILL=batches keeps them all the way (every batch updates 24 indexes).
#   bench/activity-store.sh [all]
#       the three above with their defaults (needs ~15 GB of free disk at a time).
#
# BENCH_TMP (default /tmp) is where temporary stores go.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
TMP="${BENCH_TMP:-/tmp}"

cargo build --release --locked -q -p kubetrail --example activity_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/activity_bench"

# The files of the store named by DB: DB, then its other shards' (activity.1.db, …).
store_files() {
  local db="$1" k=1
  echo "$db"
  while [ -f "${db%.db}.$k.db" ]; do
    echo "${db%.db}.$k.db"
    k=$((k + 1))
  done
}

# Runs SQL on the store named by DB with `recs` a view of the records of all its files.
store_query() {
  local db="$1" sql="$2" f k=0 attach="" union="SELECT * FROM main.records"
  while read -r f; do
    if [ "$k" -gt 0 ]; then
      attach="$attach ATTACH '$f' AS s$k;"
      union="$union UNION ALL SELECT * FROM s$k.records"
    fi
    k=$((k + 1))
  done < <(store_files "$db")
  sqlite3 -readonly "$db" "$attach CREATE TEMP VIEW recs AS $union; $sql"
}

# The objects asked about, read from the store itself (so any store will do): the pod of the
# first successful delete of a pod owned by a ReplicaSet, that ReplicaSet and its Deployment.
# Prints "NAMESPACE pod/P replicaset/R deployment/D".
pick_sqlite() {
  local db="$1" ns pod rs dep
  IFS='|' read -r ns pod rs < <(store_query "$db" "SELECT namespace, name, owner_name FROM recs
    WHERE verb = 'delete' AND resource = 'pods' AND owner_kind = 'ReplicaSet' AND response_code < 300
    AND namespace IS NOT NULL LIMIT 1")
  dep="$(store_query "$db" "SELECT owner_name FROM recs WHERE resource = 'replicasets'
    AND name = '$rs' AND namespace = '$ns' AND owner_kind = 'Deployment' LIMIT 1")"
  echo "$ns pod/$pod replicaset/$rs${dep:+ deployment/$dep}"
}

pick_postgresql() {
  local url="$1" table="$2" ns pod rs_uid rs dep_uid dep
  IFS='|' read -r ns pod rs_uid < <(psql -X -At "$url" -c "SELECT obj_namespace, obj_name, owner_uid FROM $table
    WHERE verb = 'delete' AND resource = 'pods' AND owner_uid IS NOT NULL AND response_code < 300
    AND obj_namespace IS NOT NULL LIMIT 1")
  IFS='|' read -r rs dep_uid < <(psql -X -At "$url" -c "SELECT obj_name, owner_uid FROM $table
    WHERE obj_uid = '$rs_uid' AND resource = 'replicasets' AND owner_uid IS NOT NULL LIMIT 1")
  dep="$(psql -X -At "$url" -c "SELECT obj_name FROM $table WHERE obj_uid = '$dep_uid' LIMIT 1")"
  echo "$ns pod/$pod replicaset/$rs${dep:+ deployment/$dep}"
}

# Refuses to start what would fill the disk: BYTES_PER_RECORD (measured) × N, plus 2 GB.
need_disk() {
  local n="$1" per="$2" where="$3" avail need
  mkdir -p "$where"
  avail=$(( $(df --output=avail -k "$where" | tail -1) * 1024 ))
  need=$(( n * per + 2 * 1024 * 1024 * 1024 ))
  if [ "$avail" -lt "$need" ]; then
    echo "activity-store: $n records need about $(( need >> 30 )) GB free in $where, $(( avail >> 30 )) GB are" >&2
    exit 1
  fi
}

ingest() {
  local n="${1:-1000000}" runs="${2:-3}" shards="${3:-2}" i dir
  for i in $(seq 1 "$runs"); do
    dir="$(mktemp -d "$TMP/kubetrail-activity-bench.XXXXXX")"
    echo "== ingest run $i of $runs ($shards shards)"
    "$BIN" ingest "$dir/activity.db" "$n" 2000 "$shards"
    echo "  database: $(du -sh "$dir" | cut -f1) for $n records"
    rm -rf "$dir"
  done
  echo "  (target >= 50,000 records/s at <= 64 MiB)"
}

who_sqlite() {
  local n="${1:-10000000}" db="${2:-}"
  if [ -z "$db" ]; then
    # Global: the EXIT trap runs after this function's locals are gone.
    MADE="$(mktemp -d "$TMP/kubetrail-activity-bench.XXXXXX")"
    db="$MADE/activity.db"
    trap '[ -n "${MADE:-}" ] && rm -rf "$MADE"' EXIT
  fi
  local have=0
  [ -f "$db" ] && have="$(store_query "$db" 'SELECT count(*) FROM recs' 2>/dev/null || echo 0)"
  if [ "$have" != "$n" ]; then
    local f
    for f in $(store_files "$db"); do rm -f "$f" "$f-wal" "$f-shm"; done
    need_disk "$n" 2600 "$(dirname "$db")"
    echo "== a store of $n records at $db"
    "$BIN" ingest "$db" "$n" 10000
  else
    echo "== reusing $db ($n records)"
  fi
  who_store "$db"
}

who_store() {
  local db="$1"
  # shellcheck disable=SC2046
  echo "  database: $(du -ch $(store_files "$db") | tail -1 | cut -f1) in $(store_files "$db" | wc -l) files, $(store_query "$db" 'SELECT count(*) FROM recs') records"
  echo "== who on the SQLite store"
  # shellcheck disable=SC2046
  "$BIN" who --store "$db" $(pick_sqlite "$db")
  echo "  (target < 100 ms)"
}

who_postgresql() {
  local n="${1:-10000000}"
  if [ -z "${KUBETRAIL_TEST_PG_URL:-}" ]; then
    # Global: the EXIT trap runs after this function's locals are gone.
    SERVICES_DIR="$(mktemp -d "$TMP/kubetrail-bench-services.XXXXXX")"
    trap '[ -n "${SERVICES_DIR:-}" ] && scripts/services stop "$SERVICES_DIR" || true' EXIT
    # shellcheck disable=SC1090
    source <(scripts/services start "$SERVICES_DIR")
  fi
  [ -n "${KUBETRAIL_TEST_PG_URL:-}" ] || { echo "activity-store: PostgreSQL did not start" >&2; exit 1; }
  need_disk "$n" 3000 "${KUBETRAIL_TEST_SERVICES_DIR:-$TMP}"
  local table="activity_bench_$$"
  if [ "${PG_FILL:-bulk}" = bulk ]; then
    echo "== $n records into PostgreSQL table $table through the postgresql output, its indexes built at the end"
    "$BIN" postgresql "$KUBETRAIL_TEST_PG_URL" "$table" "$n" 10000 --indexes-after
  else
    echo "== $n records into PostgreSQL table $table through the postgresql output"
    "$BIN" postgresql "$KUBETRAIL_TEST_PG_URL" "$table" "$n" 10000
  fi
  psql -X -q "$KUBETRAIL_TEST_PG_URL" -c "VACUUM ANALYZE $table" >/dev/null
  echo "  table with its indexes: $(psql -X -At "$KUBETRAIL_TEST_PG_URL" -c "SELECT pg_size_pretty(pg_total_relation_size('$table'))")"
  echo "== who on PostgreSQL"
  # shellcheck disable=SC2046
  "$BIN" who --postgres "$KUBETRAIL_TEST_PG_URL" "$table" $(pick_postgresql "$KUBETRAIL_TEST_PG_URL" "$table")
  echo "  (target < 100 ms)"
  psql -X -q "$KUBETRAIL_TEST_PG_URL" -c "DROP TABLE $table" >/dev/null
}

case "$what" in
  ingest) ingest "${2:-}" "${3:-}" "${4:-}" ;;
  who) who_sqlite "${2:-}" "${3:-}" ;;
  who-store) who_store "${2:?which database}" ;;
  who-postgresql) who_postgresql "${2:-}" ;;
  all)
    ingest
    (who_sqlite)
    (who_postgresql)
    ;;
  *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
