# tollgate — the two commands are `make dev` and `make test` (see README.md).
.PHONY: dev test setup build deploy-check bench bench-semantic bench-guardrails bench-complexity clean

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

## Semantic cache: precision, recall, false-hit rate of the defaults with the
## real local embedder. Another labelled set: make bench-semantic PAIRS=path.tsv
PAIRS ?= bench/semantic/pairs.tsv
bench-semantic: setup
	.venv/bin/python bench/semantic/embed.py $(PAIRS) .venv/bench-vectors.json
	cargo run --quiet --release --example bench_semantic -- $(PAIRS) .venv/bench-vectors.json $(THRESHOLD)

## Accuracy and routing cost of the complexity classifier on the shipped labelled set.
bench-complexity:
	cargo run --release --example complexity_eval

## Benchmark tollgate against Portkey and LiteLLM (installs them into bench/; see bench/README.md).
bench:
	sh bench/run.sh

clean:
	rm -rf build target .wrangler

## Precision/recall of the guardrail detectors over a labelled corpus, and
## their latency on a 4,000-token prompt: make bench-guardrails [CORPUS=path]
CORPUS ?= tests/fixtures/guardrails/corpus.jsonl
bench-guardrails:
	cargo run --release --example guardrails_bench -- $(CORPUS)
