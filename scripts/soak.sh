#!/usr/bin/env bash
# The soak: SECONDS (default 3600) of mixed load at half of the measured capacity against a real
# engramd, with snapshots, migrations and compactions on their schedules, sampled every 30 s
# (tests/tests/soak.rs; the normal test run does 30 s). Writes soak-<date>.csv and, with
# matplotlib (installed into the project venv if missing), soak-<date>.png in the current
# directory.
# Usage: scripts/soak.sh [SECONDS]
set -euo pipefail
secs="${1:-3600}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
stamp="$(date -u +%Y%m%dT%H%M)"
csv="$PWD/soak-$stamp.csv"
log="$PWD/soak-$stamp.log"
venv="${ENGRAM_VENV:-$HOME/.cache/engram/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}"
cd "$repo"
cargo build --release --workspace --bins --tests
echo "soak: $secs s, samples in $csv, log in $log"
set +e
ENGRAM_SOAK_SECS="$secs" ENGRAM_SOAK_WINDOW_SECS="${ENGRAM_SOAK_WINDOW_SECS:-30}" \
  ENGRAM_SOAK_CALIBRATE_SECS="${ENGRAM_SOAK_CALIBRATE_SECS:-60}" ENGRAM_SOAK_CSV="$csv" \
  cargo nextest run --release --workspace -E 'binary(soak)' --no-capture >"$log" 2>&1
status=$?
set -e
grep -E '^soak|FAIL|panicked' "$log" || true
if [ -f "$csv" ]; then
  "$venv/bin/python" -c 'import matplotlib' 2>/dev/null || "$venv/bin/pip" install --quiet matplotlib
  "$venv/bin/python" "$repo/scripts/plot_soak.py" "$csv" "${csv%.csv}.png"
fi
exit "$status"
