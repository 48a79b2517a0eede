# tollgate — the two commands are `make dev` and `make test` (see README.md).
.PHONY: dev test setup build deploy-check bench bench-guardrails clean

## Start the gateway locally (wrangler dev, local D1, demo provider, dev key).
dev:
	sh scripts/dev.sh

## Install everything and run every check CI runs.
test:
	sh scripts/test.sh

## Install the toolchain (wasm target, worker-build, wasm-bindgen-cli, npm deps incl. wrangler + Node 22).
setup:
	sh scripts/setup.sh

## Build the Worker into build/.
build: setup
	sh scripts/build.sh

clean:
	rm -rf build target .wrangler

## Precision/recall of the guardrail detectors over a labelled corpus, and
## their latency on a 4,000-token prompt: make bench-guardrails [CORPUS=path]
CORPUS ?= tests/fixtures/guardrails/corpus.jsonl
bench-guardrails:
	cargo run --release --example guardrails_bench -- $(CORPUS)
