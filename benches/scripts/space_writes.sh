#!/usr/bin/env bash
# What an active embedding space costs a write that sends its own vector: durable single
# creates (64 clients, 384-d vectors as base64, return=minimal, 8 s) on a fresh daemon with no
# active space, then on one whose searches rank an activated 384-d space (the vector goes to
# the space as a WAL record of its own). Alternated, ROUNDS rounds (default 2); one JSON line
# per run.
# Usage: benches/scripts/space_writes.sh [ROUNDS]
set -euo pipefail
rounds="${1:-2}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
model="${ENGRAM_EMBEDDING_MODEL_DIR:-$HOME/.cache/engram/models/all-MiniLM-L6-v2}"
port=3398
url="http://127.0.0.1:$port"
data=/tmp/engram-space-writes
run() {
  local mode=$1
  rm -rf "$data"
  "$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" \
    --set embedding.model_dir="$model" --set tier_migration.enabled=false >"$data.log" 2>&1 &
  local pid=$!
  until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
  if [ "$mode" = active ]; then
    curl -sf -X POST "$url/api/v1/admin/embedding/migrations" -H 'content-type: application/json' \
      -d '{"provider":"local","dimensions":384}' >/dev/null
    until curl -sf "$url/api/v1/admin/embedding/migrations/1" | grep -q '"state":"ready"'; do sleep 0.1; done
    curl -sf -X POST "$url/api/v1/admin/embedding/migrations/1/activate" >/dev/null
  fi
  "$bin/engram-bench" create --url "$url" --clients 64 --duration 8 --dims 384 --b64 --minimal --json
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}
for _ in $(seq "$rounds"); do
  for mode in own active; do
    echo "{\"space\":\"$mode\",\"result\":$(run "$mode")}"
  done
done
