#!/usr/bin/env bash
# Schema-driven fuzzing of a live engramd from the committed contract (docs/openapi.json):
# schemathesis generates requests for every operation (examples, boundary coverage, random
# fuzzing, stateful sequences) and checks every answer — no 5xx, status codes, content types,
# headers and bodies as the contract says, schema-violating requests refused, 405s with Allow.
# Two checks are left out on purpose: positive_data_acceptance (the contract cannot express
# every rule the server enforces: vector length is configuration, limits are in bytes) and
# use_after_free (a soft-deleted memory stays readable with status "deleted", by design).
# One worker: with two, schemathesis's worker threads parse Python source (hypothesis reads the
# source of lambdas) at once, and CPython 3.11's `ast` is not thread-safe there ("AST constructor
# recursion depth mismatch"), which once crashed a run inside the tool itself.
# Usage: scripts/schemathesis.sh [SECONDS]  (default 60, or ENGRAM_SCHEMATHESIS_SECONDS)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${ENGRAM_SCHEMATHESIS_SECONDS:-60}}"
venv="${ENGRAM_VENV:-$HOME/.cache/engram/venv}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}/release/engramd"
"$venv/bin/openapi-spec-validator" docs/openapi.json
data="$(mktemp -d)"
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The daemon refuses ENGRAM_* variables it does not know, and this script's own are not its.
env -u ENGRAM_SCHEMATHESIS_SECONDS -u ENGRAM_VENV \
  "$bin" --data-dir "$data/data" --listen "127.0.0.1:$port" --set embedding.dimensions=8 >"$data/engramd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null && break
  sleep 0.05
done
# The served contract is the committed one.
curl -sf "http://127.0.0.1:$port/api/v1/openapi.json" | cmp - docs/openapi.json
(cd "$data" && "$venv/bin/schemathesis" run "$OLDPWD/docs/openapi.json" \
  --url "http://127.0.0.1:$port" --checks all \
  --exclude-checks positive_data_acceptance,use_after_free \
  --max-time "$secs" --workers 1 --seed 1 --no-color)
if grep -q "panicked" "$data/engramd.log"; then
  echo "engramd panicked during the run:" >&2
  grep -A5 panicked "$data/engramd.log" >&2
  exit 1
fi
