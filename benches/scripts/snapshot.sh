#!/usr/bin/env bash
# What online snapshots cost the writers, on a store of COUNT memories (384-d): 16 clients
# create for SECONDS while a snapshot is taken every EVERY seconds; creates that overlapped a
# snapshot are compared with the rest of the same run (`engram-bench snapshot`). Two runs: the
# clients as fast as they can (the machine saturated), then paced at RATE creates/s.
# Usage: benches/scripts/snapshot.sh [COUNT] [SECONDS] [EVERY] [RATE] [WORK_DIR]
# ENGRAMD=path runs another build of the daemon (for a side-by-side with an older commit).
set -euo pipefail
count="${1:-1000000}"
seconds="${2:-90}"
every="${3:-15}"
rate="${4:-1000}"
work="${5:-/tmp/engram-snapshot-bench}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
engramd="${ENGRAMD:-$bin/engramd}"
port=3398
url="http://127.0.0.1:$port"
rm -rf "$work"; mkdir -p "$work"
# A smaller HNSW construction beam (as tiers.sh) so the graph catches up with the load sooner.
"$engramd" --data-dir "$work/data" --listen "127.0.0.1:$port" \
  --set search.hnsw_expansion_add=40 >"$work/engramd.log" 2>&1 &
pid=$!
# Wait for the daemon to exit: one still closing after the next run's rm -rf would delete that
# run's RocksDB files of the same numbers.
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
"$bin/engram-bench" load --url "$url" --clients 2 --count "$count" --namespace bulk
# Let the vector index catch up: its indexer would otherwise take a core for the whole run.
waited=0
while :; do
  lagging=$(curl -s "$url/metrics" | awk '/^engram_vector_index_vectors\{state="lagging"\}/ {print $2}')
  [ "${lagging:-0}" = 0 ] && break
  [ "$waited" -ge 1800 ] && { echo "the vector index still lags by $lagging after ${waited}s"; break; }
  sleep 10; waited=$((waited + 10))
done
echo "vector index caught up after ${waited}s of waiting"
sleep 5
echo "--- 16 clients as fast as they can"
"$bin/engram-bench" snapshot --url "$url" --clients 16 --duration "$seconds" --every "$every" --namespace saturated
echo "--- 16 clients paced at $rate creates/s"
"$bin/engram-bench" snapshot --url "$url" --clients 16 --duration "$seconds" --every "$every" --rate "$rate" --namespace paced
sed 's/\x1b\[[0-9;]*m//g' "$work/engramd.log" | grep -E "snapshot taken |snapshot: |checkpoint lsn" || true
