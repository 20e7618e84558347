#!/usr/bin/env bash
# An embedding migration's cost (benches/src/migration.rs): N (default 4000) memories from the
# locomo-dev turns with random 384-d vectors, re-embedded with the built-in model alone and
# while 16 clients search, on a fresh daemon whose own provider is none.
# Usage: benches/scripts/migration.sh [N] [engram-bench migration flags]
set -euo pipefail
n="${1:-4000}"
extra=("${@:2}")
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
model="${ENGRAM_EMBEDDING_MODEL_DIR:-$HOME/.cache/engram/models/all-MiniLM-L6-v2}"
port=3397
url="http://127.0.0.1:$port"
data="/tmp/engram-migration-bench"
rm -rf "$data"
"$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" \
  --set embedding.model_dir="$model" \
  --set tier_migration.enabled=false >"$data.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
"$bin/engram-bench" migration --url "$url" --namespace locomo --count "$n" \
  --texts "$here/../shared/data/locomo-dev/memories.jsonl" ${extra[@]+"${extra[@]}"}
