#!/usr/bin/env bash
# The search issue's benchmarks, each against a fresh engramd:
#   1. working tier: 10k 384-d memories in one namespace, exact scan, 1 and 16 clients;
#   2. warm tier: N (default 1M) clustered 384-d memories (working.capacity=1000, so nearly all
#      are warm and in the HNSW graph), recall@10 against brute force, 16 clients, then the
#      same with a 1%-selective tag filter; resident memory after the load;
#   3. retrieval quality on ../shared/data/locomo-dev with the built-in embedder, and the
#      background embedding rate.
# Usage: benches/scripts/search.sh [WARM_COUNT] [SECONDS]
set -euo pipefail
n="${1:-1000000}"
secs="${2:-20}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
model="${ENGRAM_EMBEDDING_MODEL_DIR:-$HOME/.cache/engram/models/all-MiniLM-L6-v2}"
dataset="$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/locomo-dev"
port=3397
url="http://127.0.0.1:$port"
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
start() {
  local data="/tmp/engram-search-bench-$1"; shift
  rm -rf "$data"
  "$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" "$@" >"$data.log" 2>&1 &
  pid=$!
  until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }

start working
"$bin/engram-bench" search --url "$url" --preload 10000 --clients 1 --duration "$secs" --namespace w10k
"$bin/engram-bench" search --url "$url" --preload 10000 --clients 16 --duration "$secs" --namespace w10k --no-load
stop

start warm --set working.capacity=1000
"$bin/engram-bench" search --url "$url" --preload "$n" --clients 16 --duration "$secs" --namespace warm --filtered
echo "resident memory of engramd: $(ps -o rss= -p "$pid") KiB"
stop

start recall --set embedding.provider=local --set "embedding.model_dir=$model"
"$bin/engram-bench" recall --url "$url" --dataset "$dataset"
stop
