#!/usr/bin/env bash
# Two builds of engramd on the same 100k warm memories: one data directory is loaded once (by
# A, `working.capacity=1000`, so all but 1,000 are in the graph), then copied afresh for every
# run; A and B alternate for each `search.hnsw_expansion_search`, 16 clients, recall@10 checked.
# The load generator is B's. Usage:
#   benches/scripts/search_ab.sh A_BIN_DIR B_BIN_DIR ROUNDS SECONDS EF [EF...]
set -euo pipefail
a="$1"
b="$2"
rounds="$3"
secs="$4"
shift 4
port=3397
url="http://127.0.0.1:$port"
base=/tmp/engram-search-ab-base
run=/tmp/engram-search-ab-run
bench="$b/engram-bench"
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT

start() { # BIN_DIR DATA_DIR [ARGS...]
  local bin="$1" data="$2"
  shift 2
  "$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" --set working.capacity=1000 "$@" \
    >>"$data.log" 2>&1 &
  pid=$!
  until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

if [ ! -d "$base" ]; then
  start "$a" "$base"
  "$bench" search --url "$url" --preload 100000 --clients 16 --duration 2 --namespace warm >/dev/null
  stop
fi
for round in $(seq "$rounds"); do
  for ef in "$@"; do
    for build in A B; do
      bin="$a"
      [ "$build" = B ] && bin="$b"
      rm -rf "$run" "$run.log"
      cp -a "$base" "$run"
      start "$bin" "$run" --set "search.hnsw_expansion_search=$ef"
      result=$("$bench" search --url "$url" --preload 100000 --no-load --clients 16 \
        --duration "$secs" --namespace warm 2>&1 | grep 'req/s')
      echo "round $round, ef $ef, $build: $result"
      stop
    done
  done
done
rm -rf "$run" "$run.log"
