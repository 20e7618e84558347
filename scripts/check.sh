#!/usr/bin/env bash
# Every check, in the order CI runs them: formatting, clippy (warnings are errors), build of the
# binaries the end-to-end tests start, then every test (unit, integration, end-to-end, crash,
# MCP with the Python SDK), then the Python client's suite against real daemons, then the web
# console in headless Chromium and the deploy kit (promtool, systemd-analyze, the runbook's
# runnable blocks), then the OpenAPI
# contract: validated, and fuzzed with schemathesis against a live daemon (60 s by default;
# ENGRAM_SCHEMATHESIS_SECONDS for longer).
# One profile (release) for everything, so RocksDB's C++ is compiled once; the target directory
# lives outside the checkout so it survives fresh clones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-test-tools
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}"
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
echo "== build"
cargo build --release --locked --workspace --bins
echo "== test"
cargo nextest run --release --locked --workspace --no-fail-fast
echo "== python client"
venv="${ENGRAM_VENV:-$HOME/.cache/engram/venv}"
"$venv/bin/pip" install --quiet --no-build-isolation --no-deps --force-reinstall ./clients/python
(cd clients/python && ENGRAM_BIN="$CARGO_TARGET_DIR/release/engramd" "$venv/bin/python" -m pytest -q -p no:cacheprovider)
echo "== console in a real browser, deploy kit and runbook"
ENGRAM_BIN="$CARGO_TARGET_DIR/release/engramd" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/console tests/deploy
echo "== contract (openapi-spec-validator, schemathesis against a live daemon)"
bash scripts/schemathesis.sh
