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
  worker-build --release
else
  worker-build --release --no-opt
fi

# The dashboard (Workers static assets, `[assets]` in wrangler.toml): the
# page, the login form, and one script + stylesheet bundled with uPlot from
# node_modules (pinned in package.json) — nothing is loaded from a CDN.
ASSETS=build/assets/dashboard
rm -rf build/assets
mkdir -p "$ASSETS"
"$ESBUILD_BIN" dashboard/app.js --bundle --minify --format=iife --target=es2020 \
  --outfile="$ASSETS/app.js" --log-level=warning
cp dashboard/index.html dashboard/login.html dashboard/login.css "$ASSETS/"
