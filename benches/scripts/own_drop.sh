#!/usr/bin/env bash
# What dropping the store's own vectors buys and costs: COUNT memories (default 100,000) with
# 384-d client vectors, a migration to a 384-d space from a local stand-in for an
# OpenAI-compatible provider (benches/scripts/stub_embeddings.py), activated; then
# DELETE /api/v1/admin/embedding/own-vectors. Prints one JSON line: the call's time, the
# sweep's time and rate, and the daemon's RSS and the data directory's bytes (search/, warm/,
# working/) before the drop, right after it, and once swept (RocksDB compacts the old vectors
# away in its own time: the warm bytes are also given after a restart), and GET-by-id
# throughput (16 clients, 5 s) before the drop and once swept (a read then takes its vector
# from the space's rows).
# WORKING (default 100,000) is the working tier's capacity: with less, the rest is warm; with
# COLD=1 the migration policy then moves every memory it can to the cold tier before the
# migration starts.
# Usage: [COLD=1] benches/scripts/own_drop.sh [COUNT] [WORKING]
set -euo pipefail
count="${1:-100000}"
working="${2:-100000}"
cold="${COLD:-0}"
ages=()
if [ "$cold" = 1 ]; then
  ages=(--set tier_migration.working_to_warm_after=1s --set tier_migration.warm_to_cold_after=1s)
fi
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
here="$(cd "$(dirname "$0")" && pwd)"
port=3397
stub_port=3396
url="http://127.0.0.1:$port"
data=/tmp/engram-own-drop
rm -rf "$data"
python3 "$here/stub_embeddings.py" "$stub_port" 384 &
stub=$!
start() {
  "$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" \
    --set embedding.dimensions=384 --set embedding.batch_size=256 \
    --set working.capacity="$working" --set tier_migration.enabled=false "${ages[@]}" >>"$data.log" 2>&1 &
  pid=$!
  until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
}
now_ms() { date +%s%3N; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }
bytes() { du -sb "$data/$1" 2>/dev/null | cut -f1; }
state() {
  echo "{\"rss_mb\":$(rss_mb),\"search_bytes\":$(bytes search),\"warm_bytes\":$(bytes warm),\"working_bytes\":$(bytes working),\"cold_bytes\":$(bytes cold)}"
}
start
"$bin/engram-bench" load --url "$url" --count "$count" --dims 384 >/dev/null
if [ "$cold" = 1 ]; then
  sleep 2
  curl -sf -X POST "$url/api/v1/admin/migrate" -d '{"dry_run":false}' >/dev/null
  curl -sf -X POST "$url/api/v1/admin/migrate" -d '{"dry_run":false}' >/dev/null
fi
curl -sf -X POST "$url/api/v1/admin/embedding/migrations" -H 'content-type: application/json' \
  -d "{\"provider\":\"openai\",\"model\":\"stub-384\",\"dimensions\":384,\"url\":\"http://127.0.0.1:$stub_port\"}" >/dev/null
until curl -sf "$url/api/v1/admin/embedding/migrations/1" | grep -q '"state":"ready"'; do sleep 0.2; done
curl -sf -X POST "$url/api/v1/admin/embedding/migrations/1/activate" >/dev/null
sleep 2
tiers=$(curl -sf "$url/api/v1/health" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["tiers"]))')
gets() { "$bin/engram-bench" get --url "$url" --clients 16 --duration 5 --dims 384 --namespace gets --preload 2000 --json; }
gets_before=$(gets)
before=$(state)
t0=$(now_ms)
curl -sf -X DELETE "$url/api/v1/admin/embedding/own-vectors" >/dev/null
t1=$(now_ms)
sleep 1
dropped=$(state)
until curl -sf "$url/api/v1/admin/embedding/own-vectors" | grep -q '"swept":true'; do sleep 0.05; done
t2=$(now_ms)
stripped=$(curl -sf "$url/api/v1/admin/embedding/own-vectors" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stripped"])')
swept=$(state)
gets_after=$(gets)
kill "$pid"; wait "$pid" 2>/dev/null || true
start
restarted=$(state)
kill "$pid"; wait "$pid" 2>/dev/null || true
kill "$stub"
echo "{\"memories\":$count,\"working_capacity\":$working,\"cold\":$cold,\"tiers\":$tiers,\"drop_call_ms\":$((t1 - t0)),\"sweep_ms\":$((t2 - t0)),\"stripped\":$stripped,\"before\":$before,\"after_drop\":$dropped,\"after_sweep\":$swept,\"after_restart\":$restarted,\"gets_before\":$gets_before,\"gets_after\":$gets_after}"
