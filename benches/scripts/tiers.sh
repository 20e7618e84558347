#!/usr/bin/env bash
# The tiers issue's benchmarks against a fresh engramd: N (default 1M) 384-d memories with
# ~200-character texts are loaded (working.capacity=1000, so nearly all are warm), then the
# policy moves them all to cold on request; see benches/src/tiers.rs for what is measured. The
# graph is built with a small expansion (40) only so that its indexer, which the bench waits for,
# finishes sooner; warm search quality plays no part here.
# Usage: benches/scripts/tiers.sh [COUNT] [SECONDS]   (root: also reads after dropping caches)
set -euo pipefail
n="${1:-1000000}"
secs="${2:-10}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
port=3398
url="http://127.0.0.1:$port"
data="/tmp/engram-tiers-bench"
rm -rf "$data"
"$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" \
  --set working.capacity=1000 \
  --set search.hnsw_expansion_add=40 \
  --set tier_migration.enabled=false \
  --set tier_migration.working_to_warm_after=1h \
  --set tier_migration.warm_to_cold_after=1s \
  --set tier_migration.strength=1s \
  --set tier_migration.promote_after_accesses=0 >"$data.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
drop=""
[ "$(id -u)" = 0 ] && drop="--drop-caches"
"$bin/engram-bench" tiers --url "$url" --count "$n" --duration "$secs" --clients 16 $drop
echo "resident memory of engramd: $(ps -o rss= -p "$pid") KiB"
