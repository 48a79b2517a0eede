#!/bin/sh
# `make bench`: install the peers (bench/setup.sh), build the Worker, then run
# tollgate (under wrangler dev, then under bare workerd), the workerd floor,
# Portkey and LiteLLM one at a time against the bench mock, then side by side
# at c=1 (bench/peers.mjs). Extra arguments go to peers.mjs, e.g.
# BENCH_ARGS=--quick.
set -eu
cd "$(dirname "$0")/.."
sh bench/setup.sh
sh scripts/build.sh >/dev/null 2>&1 || sh scripts/build.sh
export PATH="$PWD/node_modules/.bin:$PATH"
export WRANGLER_SEND_METRICS=false
# shellcheck disable=SC2086 # BENCH_ARGS is a word list on purpose
exec node bench/peers.mjs ${BENCH_ARGS:-} "$@"
