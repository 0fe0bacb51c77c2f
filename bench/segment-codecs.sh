#!/usr/bin/env bash
# The measurement behind the queue segments' codec (docs/ARCHITECTURE.md, "Queue segments"):
# LZ4 (lz4_flex) and zstd at low levels on blocks of real audit records as the journal writes
# them (the shared fixtures' apiserver lines, normalized and encoded as kubetrail records).
# Prints, per codec and block size, the ratio and the compression and decompression speeds in
# MB of raw bytes per CPU second of one thread (min/median/max over the passes).
#
# Usage: bench/segment-codecs.sh [passes] [MiB per pass]   (default 7 passes of 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
KUBETRAIL_FIXTURES="${KUBETRAIL_FIXTURES:-$(cd ../shared/fixtures && pwd)}"
export KUBETRAIL_FIXTURES
cargo build --release --locked -q -p kubetrail --example segment_codecs
target/release/examples/segment_codecs passes="${1:-7}" mib="${2:-64}"
