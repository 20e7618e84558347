#!/usr/bin/env bash
# What versions cost (benches/src/history.rs): N (default 5000) 384-d memories with
# ~200-character texts, moved to warm, then updated until each has 20 versions; RocksDB bytes per
# memory before and after, and the update rate, for each kind of update (attributes only; new
# text and vector; a corrected phrase and a new vector), each with history.keep_versions=20,
# with 20 and history.keep_vectors=false (text kinds), and with 0 (no history), on fresh daemons.
# Usage: benches/scripts/history.sh [COUNT] [CLIENTS]   (KINDS="attrs content edit" to choose)
set -euo pipefail
n="${1:-5000}"
clients="${2:-16}"
kinds="${KINDS:-attrs content edit}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
port=3397
url="http://127.0.0.1:$port"
data="/tmp/engram-history-bench"
for kind in $kinds; do
  settings=("20 true" "0 true")
  if [ "$kind" != attrs ]; then
    settings=("20 true" "20 false" "0 true")
  fi
  for setting in "${settings[@]}"; do
    read -r keep vectors <<<"$setting"
    rm -rf "$data"
    "$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" \
      --set tier_migration.enabled=false \
      --set history.keep_versions="$keep" \
      --set history.keep_vectors="$vectors" >"$data.log" 2>&1 &
    pid=$!
    until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
    echo "kind=$kind history.keep_versions=$keep history.keep_vectors=$vectors"
    "$bin/engram-bench" history --url "$url" --count "$n" --kind "$kind" --clients "$clients" --json
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
