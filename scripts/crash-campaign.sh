#!/usr/bin/env bash
# The crash campaign: N cycles (default 1000) of mixed load from 32 clients against a real
# engramd, kill -9 at a random moment, restart, compare with the oracle of acknowledged writes
# (tests/tests/crash.rs; the normal test run does 20). Prints every hundredth cycle and the
# summary; the whole output goes to crash-campaign-<seed>.log in the current directory
# (follow it with tail -f). The whole store is checked every 100th cycle
# (ENGRAM_CRASH_FULL_EVERY) and at the end; the memories changed in a cycle after each.
# Usage: scripts/crash-campaign.sh [N] [SEED]
set -euo pipefail
cycles="${1:-1000}"
seed="${2:-$RANDOM$RANDOM}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
log="$PWD/crash-campaign-$seed.log"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}"
cd "$repo"
cargo build --release --workspace --bins --tests
echo "crash campaign: $cycles cycles, seed $seed, log $log"
started=$(date +%s)
set +e
ENGRAM_CRASH_CYCLES="$cycles" ENGRAM_CRASH_SEED="$seed" ENGRAM_CRASH_FULL_EVERY="${ENGRAM_CRASH_FULL_EVERY:-100}" \
  cargo nextest run --release --workspace -E 'binary(crash)' --no-capture >"$log" 2>&1
status=$?
set -e
grep -E '^cycle [0-9]*00:|^crash campaign:|FAIL|panicked' "$log" || true
echo "took $(( $(date +%s) - started )) s; exit $status"
exit "$status"
