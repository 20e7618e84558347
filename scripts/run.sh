#!/usr/bin/env bash
# Sets up a fresh Debian machine (build dependencies and the all-MiniLM-L6-v2 model files),
# builds engramd in release mode and runs it in the foreground on 127.0.0.1:3333 with
# ./engram-data and the built-in embedder. Extra arguments go to engramd and win over these,
# e.g. `bash scripts/run.sh --set wal.sync=interval` or `--set embedding.provider=none`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}"
cargo build --release --locked -p engram-server --bin engramd
model_dir="${ENGRAM_EMBEDDING_MODEL_DIR:-$HOME/.cache/engram/models/all-MiniLM-L6-v2}"
exec "$CARGO_TARGET_DIR/release/engramd" \
  --set embedding.provider=local --set "embedding.model_dir=$model_dir" "$@"
