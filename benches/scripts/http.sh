#!/usr/bin/env bash
# The HTTP benchmarks in one run against a fresh engramd (384-d vectors, wal.sync=always):
# durable creates at 1 and 64 clients, GET by id at 16 clients (working tier), batch creates
# while the working tier has room and once it is full (every create then also moves one memory
# to warm). Usage: benches/scripts/http.sh [DATA_DIR] [SECONDS]
set -euo pipefail
data="${1:-/tmp/engram-http-bench}"
secs="${2:-10}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
port=3398
url="http://127.0.0.1:$port"
rm -rf "$data"
"$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" >"$data.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
b() { "$bin/engram-bench" "$@" --url "$url" --duration "$secs"; }
# The first batch run is short enough that the working tier (100k) still has room throughout.
"$bin/engram-bench" create --url "$url" --clients 2 --batch 1000 --namespace batch-room --duration 3
b create --clients 1
b create --clients 64
b get --clients 16 --preload 10000
b create --clients 2 --batch 1000 --namespace batch-full
curl -s "$url/api/v1/health"; echo
curl -s "$url/metrics" | grep -E '^engram_wal_fsync_duration_seconds_(sum|count)'
