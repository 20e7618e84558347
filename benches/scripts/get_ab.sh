#!/usr/bin/env bash
# Gets by id on two builds, alternated A, B per round on a fresh daemon each: engram-bench get
# (16 clients, 10,000 memories), then wrk (Debian's `wrk`, one thread, 16 connections) on the
# same daemon, its Lua script picking random ids among 1,000 of them. Usage:
#   benches/scripts/get_ab.sh A_BIN_DIR B_BIN_DIR [ROUNDS] [SECONDS]
set -euo pipefail
a="$1"
b="$2"
rounds="${3:-3}"
secs="${4:-8}"
port=3395
url="http://127.0.0.1:$port"
bench="$b/engram-bench"
work=$(mktemp -d /tmp/engram-get-ab.XXXXXX)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cat >"$work/get.lua" <<LUA
local ids = {}
for line in io.lines("$work/ids.txt") do ids[#ids + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/v1/memories/" .. ids[math.random(#ids)])
end
LUA
for r in $(seq 1 "$rounds"); do
  for build in A B; do
    bin="$a"
    [ "$build" = B ] && bin="$b"
    rm -rf "$work/data"
    "$bin/engramd" --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/log" 2>&1 &
    pid=$!
    until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
    echo "round $r, $build, engram-bench: $("$bench" get --url "$url" --clients 16 --preload 10000 \
      --duration "$secs" | grep 'req/s')"
    curl -sf "$url/api/v1/memories?namespace=bench&limit=1000" |
      python3 -c 'import json,sys; print("\n".join(m["id"] for m in json.load(sys.stdin)["memories"]))' \
        >"$work/ids.txt"
    echo "round $r, $build, wrk: $(wrk -t1 -c16 --latency -d"${secs}s" -s "$work/get.lua" "$url" |
      grep -E 'Requests/sec|Non-2xx|Socket errors| 50%| 99%' | tr -s ' ' | tr '\n' ' ')"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
  done
done
