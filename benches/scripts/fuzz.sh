#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600) on a copy of its committed seeds, and
# prints libFuzzer's final stats line (exec count) per target. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`); the fuzz build keeps its own target directory, since
# it compiles RocksDB again with different flags. Usage: benches/scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(wal_record wal_op memory_image attr_row cold_segment cold_manifest snapshot_manifest config_toml request_body)
fi
export CARGO_TARGET_DIR="${ENGRAM_FUZZ_TARGET_DIR:-$HOME/.cache/engram/fuzz-target}"
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  corpus="corpus/$t"
  mkdir -p "$corpus" "artifacts/$t"
  [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  log="artifacts/$t/run.log"
  if cargo +nightly fuzz run -O "$t" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "$t: clean, $execs executions in ${secs}s"
  else
    echo "$t: FAILED (see fuzz/$log and fuzz/artifacts/$t/)"
    tail -30 "$log"
    exit 1
  fi
done
