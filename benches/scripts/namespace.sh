#!/usr/bin/env bash
# A namespace out, gone and back in (benches/src/namespace.rs): N (default 100000) 384-d memories
# in the namespace, 30% of them moved to cold first, and OTHERS (default 100000) in another
# namespace; export (JSON lines and zstd), purge with scrub, import, on a fresh daemon.
# Usage: benches/scripts/namespace.sh [N] [OTHERS] [engram-bench namespace flags, e.g. --base64-vectors]
set -euo pipefail
n="${1:-100000}"
others="${2:-100000}"
extra=("${@:3}")
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
port=3398
url="http://127.0.0.1:$port"
data="/tmp/engram-namespace-bench"
rm -rf "$data"
"$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" \
  --set tier_migration.enabled=false \
  --set tier_migration.working_capacity=200000 \
  --set tier_migration.working_to_warm_after=1s \
  --set tier_migration.warm_to_cold_after=2s \
  --set tier_migration.strength=1s >"$data.log" 2>&1 &
pid=$!
# Wait for the daemon to close, so a following run never removes a data directory it still
# holds or finds the port taken.
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
"$bin/engram-bench" namespace --url "$url" --namespace tenant --count "$n" --others "$others" --json ${extra[@]+"${extra[@]}"}
