#!/usr/bin/env bash
# Issue 5's measurements on a store of COUNT memories (384-d): an online snapshot while 16
# clients create (snapshot time, and the create latency it causes), WAL replay speed during a
# point-in-time restore, export and import speed.
# Usage: benches/scripts/backup.sh [COUNT] [WORK_DIR]
set -euo pipefail
count="${1:-1000000}"
work="${2:-/tmp/engram-backup-bench}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release"
port=3397
url="http://127.0.0.1:$port"
rm -rf "$work"; mkdir -p "$work"
data="$work/data"
"$bin/engramd" --data-dir "$data" --listen "127.0.0.1:$port" >"$work/engramd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
until curl -sf "$url/api/v1/health" >/dev/null; do sleep 0.05; done
"$bin/engram-bench" load --url "$url" --clients 2 --count "$count" --namespace bulk
echo "--- creates at 16 clients, no snapshot"
"$bin/engram-bench" create --url "$url" --clients 16 --duration 8 --namespace quiet
echo "--- creates at 16 clients while a snapshot of $count memories runs"
( sleep 2; curl -s -X POST "$url/api/v1/admin/snapshots"; echo ) &
snapper=$!
"$bin/engram-bench" create --url "$url" --clients 16 --duration 8 --namespace during
wait "$snapper"
echo "--- WAL to replay: 200k more memories after the snapshot"
"$bin/engram-bench" load --url "$url" --clients 2 --count 200000 --namespace after
kill $pid; wait $pid 2>/dev/null || true
trap - EXIT
"$bin/engramctl" backup --data-dir "$data" --out "$work/backup" --json

echo "--- restore from the online snapshot to the end of the log"
# A backup carries the newest snapshot (the offline one just taken); put the older online one
# in its place, so the restore replays everything written after it.
online=$(ls "$data/snapshots" | sort | head -1)
rm -rf "$work/backup/snapshots/"*
cp -r "$data/snapshots/$online" "$work/backup/snapshots/"
/usr/bin/time -f "restore wall %e s" "$bin/engramctl" restore "$work/backup" --target-dir "$work/restored" --json
echo "--- export and import"
"$bin/engramctl" export --data-dir "$work/restored" --out "$work/export.jsonl" --json
"$bin/engramctl" import --data-dir "$work/imported" "$work/export.jsonl" --json
