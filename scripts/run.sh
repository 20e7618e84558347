#!/usr/bin/env bash
# Sets up a fresh Debian machine (build dependencies), builds engramd in release mode and runs
# it in the foreground on 127.0.0.1:3333 with ./engram-data. Extra arguments go to engramd,
# e.g. `bash scripts/run.sh --set wal.sync=interval`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}"
cargo build --release --locked -p engram-server --bin engramd
exec "$CARGO_TARGET_DIR/release/engramd" "$@"
