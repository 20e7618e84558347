#!/usr/bin/env bash
# Two builds of engramd side by side in one run, alternating A, B, A, B so drift on this shared
# machine falls on both: durable creates (1 and 64 clients), GET by id (16 clients), vector
# search over 100k warm memories (16 clients, recall@10 checked), and restart after kill -9
# with N memories. The load generator is B's. Usage:
#   benches/scripts/compare.sh A_BIN_DIR B_BIN_DIR [ROUNDS] [SECONDS] [RESTART_COUNT]
set -euo pipefail
a="$1"
b="$2"
rounds="${3:-2}"
secs="${4:-8}"
restart_n="${5:-200000}"
bench="$b/engram-bench"
port=3396
url="http://127.0.0.1:$port"
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT

start() { # BIN_DIR DATA_DIR [ARGS...]
  local bin="$1" data="$2"; shift 2
  "$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" "$@" >>"$data.log" 2>&1 &
  pid=$!
  until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.02; done
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

http_round() { # LABEL BIN_DIR
  local data="/tmp/engram-compare-$1"
  rm -rf "$data" "$data.log"
  start "$2" "$data"
  echo "== $1: create, 1 client"
  "$bench" create --url "$url" --clients 1 --duration "$secs"
  echo "== $1: create, 64 clients"
  "$bench" create --url "$url" --clients 64 --duration "$secs"
  echo "== $1: get, 16 clients"
  "$bench" get --url "$url" --clients 16 --preload 10000 --duration "$secs"
  stop
  data="/tmp/engram-compare-search-$1"
  rm -rf "$data" "$data.log"
  start "$2" "$data" --set working.capacity=1000
  echo "== $1: search, 100k warm, 16 clients"
  "$bench" search --url "$url" --preload 100000 --clients 16 --duration "$secs" --namespace warm
  stop
}

restart_round() { # LABEL BIN_DIR
  local data="/tmp/engram-compare-restart-$1"
  rm -rf "$data" "$data.log"
  start "$2" "$data"
  "$bench" load --url "$url" --clients 2 --count "$restart_n" --batch 1000 --namespace restart >/dev/null
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  local t0 t1
  t0=$(date +%s.%N)
  start "$2" "$data"
  t1=$(date +%s.%N)
  echo "== $1: serving again after kill -9 with $restart_n memories: $(echo "$t1 - $t0" | bc) s"
  stop
  rm -rf "$data"
}

for r in $(seq 1 "$rounds"); do
  echo "#### round $r"
  http_round A "$a"
  http_round B "$b"
done
restart_round A "$a"
restart_round B "$b"
restart_round A "$a"
restart_round B "$b"
