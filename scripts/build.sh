#!/bin/sh
# Builds the Worker (build/index.js + wasm) with the tools scripts/setup.sh
# installed. worker-build would otherwise try to download wasm-bindgen and
# esbuild from GitHub, which CI cannot reach.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
if [ -x "$PWD/node_modules/.bin/wasm-opt" ]; then
  export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
  exec worker-build --release
fi
exec worker-build --release --no-opt
