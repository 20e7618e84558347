#!/usr/bin/env bash
# Sustained creates past the working tier's capacity: a fresh daemon with the default config,
# 64 clients creating (base64 vectors, return=minimal) for SECONDS; every 10 s the graph's
# size and backlog (`engram_vector_index_vectors`), the writes that waited for it
# (`engram_graph_waits_total`) and the daemon's RSS; at the end its peak RSS. Extra arguments
# go to engramd (e.g. `--set search.hnsw_max_lagging=0` for an unbounded backlog); BENCH_ARGS
# to engram-bench (e.g. `--distinct-vectors`, a random vector per memory: without it each client
# sends one vector with all its memories, and the graph holds thousands of copies of each). Usage:
#   [BENCH_ARGS=...] benches/scripts/sustained.sh BIN_DIR [SECONDS] [ENGRAMD_ARGS...]
set -euo pipefail
bin="$1"
secs="${2:-60}"
shift $(($# > 1 ? 2 : 1))
port=3394
url="http://127.0.0.1:$port"
work=$(mktemp -d /tmp/engram-sustained.XXXXXX)
pid=""
mon=""
trap '[ -n "$mon" ] && kill $mon 2>/dev/null; [ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
"$bin/engramd" --data-dir "$work/data" --listen "127.0.0.1:$port" "$@" >"$work/engramd.log" 2>&1 &
pid=$!
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.1; done
(
  for i in $(seq 1 $((secs / 10))); do
    sleep 10
    m=$(curl -s "$url/metrics" | grep -E '^engram_(vector_index_vectors|graph_waits_total)' |
      sed 's/engram_vector_index_vectors//; s/engram_//' | tr '\n' ' ')
    echo "t=$((i * 10))s $m rss_kb=$(ps -o rss= -p $pid)"
  done
) &
mon=$!
"$bin/engram-bench" create --url "$url" --clients 64 --duration "$secs" --b64 --minimal \
  ${BENCH_ARGS:-} 2>&1 | tail -1
wait $mon || true
mon=""
echo "peak $(grep VmHWM /proc/$pid/status | tr -s ' \t' ' ')"
