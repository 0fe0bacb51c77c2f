#!/usr/bin/env bash
# The fuzzing campaign (README, "Fuzzing"): runs each cargo-fuzz target of fuzz/ for a fixed
# time, one at a time (libFuzzer in one process, niced), starting from the committed corpus,
# and prints per target the executions, executions per second, the CPU seconds the fuzzer got
# (on a loaded machine far fewer than the wall-clock seconds), coverage (libFuzzer's final
# `cov` and `ft` counts: edges and features reached), the corpus size and the crashes. Not part of CI: it needs a
# nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
# Usage: bench/fuzz.sh [seconds per target] [target...]      (default 600 s, every target)
#
# New inputs are written to a scratch directory, never to fuzz/corpus/. With
# FUZZ_MERGE=1 the inputs that reach new coverage are merged into fuzz/corpus/<target>
# afterwards (libFuzzer's -merge=1, which keeps the corpus minimal); review and commit them.
# A crash stops that target's run; its input is in fuzz/artifacts/<target>/ and the script
# exits non-zero once every target has run.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# Release with ASan (cargo-fuzz's default) and debug assertions, so arithmetic overflow and
# out-of-bounds accesses in unsafe code (lz4_flex's decoder) are crashes too.
(cd fuzz && nice cargo +nightly fuzz build -a)
bin_dir="fuzz/target/x86_64-unknown-linux-gnu/release"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
printf '%-18s %8s %8s %12s %8s %6s %6s %7s  %s\n' \
    target seconds cpu-s executions exec/s cov ft corpus crashes
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    log="$scratch/$t.log"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    set +e
    /usr/bin/time -f '%U %S' -o "$scratch/$t.time" nice "$bin_dir/$t" "$scratch/$t" "fuzz/corpus/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    # The last status line ("#N ... cov: X ft: Y corp: Z/...") and the final stats.
    status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$status")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$status")
    corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$status")
    execs=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]+([0-9]+)/\1/p' "$log")
    eps=$(sed -nE 's/^stat::average_exec_per_sec:[[:space:]]+([0-9]+)/\1/p' "$log")
    cpu=$(awk '/^[0-9.]+ [0-9.]+$/ { printf "%.0f", $1 + $2 }' "$scratch/$t.time")
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="exit $rc"
    fi
    printf '%-18s %8s %8s %12s %8s %6s %6s %7s  %s\n' \
        "$t" "$secs" "${cpu:-?}" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes"
    if [ "$rc" -ne 0 ]; then
        failed=1
        echo "  $t failed: see fuzz/artifacts/$t/ and the end of its log:" >&2
        tail -n 30 "$log" | sed 's/^/    /' >&2
    fi
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        nice "$bin_dir/$t" -merge=1 "fuzz/corpus/$t" "$scratch/$t" >"$scratch/$t.merge" 2>&1
    fi
    rm -rf "${scratch:?}/$t"
done
exit "$failed"
