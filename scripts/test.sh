#!/bin/sh
# `make test`: install what is missing, then every check CI runs, in order:
# fmt, clippy (native and wasm32), native unit tests, the wasm build, a
# `wrangler deploy --dry-run` with the bundle size checked against the free
# plan's 3 MB (gzip) limit, and the end-to-end suite against the real Worker
# under `wrangler dev`. `.ci/run` calls exactly this.
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
sh scripts/setup.sh
export PATH="$ROOT/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WRANGLER_SEND_METRICS=false
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (native, all targets) -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
step "cargo clippy (wasm32: the Worker's platform layer) -D warnings"
cargo clippy --quiet --lib --target wasm32-unknown-unknown -- -D warnings

step "cargo test (native unit tests)"
cargo test --quiet

step "build the Worker (worker-build --release)"
sh scripts/build.sh >/dev/null 2>&1 || sh scripts/build.sh

step "wrangler deploy --dry-run (bundle size, gzip limit 3 MB)"
OUT=$(mktemp -d)
DRY=$(wrangler deploy --dry-run --outdir "$OUT" --env production 2>&1) || { echo "$DRY"; exit 1; }
rm -rf "$OUT"
echo "$DRY" | grep -E "Total Upload" || { echo "$DRY"; echo "no size line in wrangler's output" >&2; exit 1; }
GZIP_KIB=$(echo "$DRY" | sed -n 's/.*gzip: \([0-9.]*\) KiB.*/\1/p')
awk -v k="$GZIP_KIB" 'BEGIN { if (k + 0 <= 0 || k + 0 >= 3072) { print "gzipped Worker is " k " KiB; the free plan allows 3072 KiB" > "/dev/stderr"; exit 1 } else print "gzipped Worker: " k " KiB of the free plan'"'"'s 3072 KiB" }'

step "end-to-end: mock providers + wrangler dev + official SDK clients"
node --test --test-concurrency=1 --test-reporter=spec 'tests/mock/*.test.mjs' 'tests/e2e/*.test.mjs'
