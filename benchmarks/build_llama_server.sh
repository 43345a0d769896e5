#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the llama.cpp source that llama-cpp-python's sdist vendors,
# the same version as the installed binding, offline-capable (no curl, no OpenSSL), into one folder.
#
#   benchmarks/build_llama_server.sh [OUT_DIR]     (default: ~/.cache/llmtui/llama-server)
#
# The remote-server tests (tests/test_remote_servers.py) and benchmarks/bench_remote.py look for the binary in
# $LLMTUI_LLAMA_SERVER, then in that default folder, then on PATH; they skip with a reason when it is absent.
# About 5 minutes on 2 cores. Uses -j2 at most: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/llmtui/llama-server}
VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')
if [ -x "$OUT/llama-server" ] && [ "$(cat "$OUT/VERSION" 2>/dev/null)" = "$VERSION" ]; then
    echo "llama-server $VERSION is already built in $OUT"
    exit 0
fi
CMAKE=$(command -v cmake || true)
if [ -z "$CMAKE" ]; then  # llama-cpp-python's own build got cmake from PyPI; do the same
    "$PY" -m pip install -q cmake
    CMAKE="$(dirname "$PY")/cmake"
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK/sdist"
tar xzf "$WORK"/sdist/llama_cpp_python-*.tar.gz -C "$WORK/sdist"
"$CMAKE" -S "$WORK"/sdist/llama_cpp_python-*/vendor/llama.cpp -B "$WORK/build" -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
"$CMAKE" --build "$WORK/build" --target llama-server -j2 >/dev/null
mkdir -p "$OUT"
cp -a "$WORK"/build/bin/. "$OUT"/
echo "$VERSION" > "$OUT/VERSION"
echo "llama-server $VERSION -> $OUT/llama-server (run with LD_LIBRARY_PATH=$OUT)"
