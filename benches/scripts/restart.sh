#!/usr/bin/env bash
# Measures how long engramd takes to serve again after kill -9 with COUNT memories stored
# (384-d vectors). Usage: benches/scripts/restart.sh [COUNT] [DATA_DIR]
set -euo pipefail
count="${1:-1000000}"
data="${2:-/tmp/engram-restart-bench}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
port=3399
url="http://127.0.0.1:$port"
rm -rf "$data"
"$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" >"$data.log" 2>&1 &
pid=$!
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
"$bin/engram-bench" load --url "$url" --clients 2 --count "$count" --batch 1000 --namespace restart
curl -s "$url/api/v1/health"; echo
du -sh "$data/wal" "$data/warm" "$data/working" 2>/dev/null | tr '\n' ' '; echo
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
start=$(date +%s.%N)
"$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" >>"$data.log" 2>&1 &
pid=$!
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.01; done
end=$(date +%s.%N)
echo "serving again after kill -9 in $(echo "$end - $start" | bc) s"
grep "store open" "$data.log" | tail -1
curl -s "$url/api/v1/health"; echo
kill "$pid"; wait "$pid" 2>/dev/null || true
