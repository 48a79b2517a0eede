#!/bin/sh
# Installs what `make bench` needs beyond `make setup`, from the package
# registries only, into bench/ (never touched by `make test`):
#   - bench/node_modules: Portkey's open-source gateway, pinned in bench/package-lock.json
#   - bench/.venv: the LiteLLM proxy and matplotlib, every package pinned by version and
#     sha256 in bench/requirements.txt (pip --require-hashes)
# Idempotent: a second run only checks.
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf 'bench setup: %s\n' "$*"; }

sh scripts/setup.sh
export PATH="$ROOT/node_modules/.bin:$PATH"

if [ ! -d bench/node_modules/@portkey-ai/gateway ] || [ bench/package-lock.json -nt bench/node_modules/.package-lock.json ]; then
  say "installing Portkey's gateway (npm, bench/package-lock.json)"
  (cd bench && npm ci --no-audit --no-fund --loglevel=error)
fi

PY=${BENCH_PYTHON:-python3}
if [ ! -x bench/.venv/bin/litellm ] || [ bench/requirements.txt -nt bench/.venv/.installed ]; then
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
    echo "bench setup: bench/requirements.txt is hashed for CPython 3.11 wheels; $PY is $("$PY" --version 2>&1). Set BENCH_PYTHON." >&2
    exit 1
  }
  say "creating bench/.venv with the LiteLLM proxy and matplotlib (PyPI, hash-pinned)"
  rm -rf bench/.venv
  "$PY" -m venv bench/.venv
  bench/.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes --only-binary=:all: -r bench/requirements.txt
  touch bench/.venv/.installed
fi

for tool in taskset ss; do
  command -v "$tool" >/dev/null 2>&1 && continue
  say "installing $tool (Debian)"
  case $tool in taskset) pkg=util-linux ;; ss) pkg=iproute2 ;; esac
  apt-get install -y -q "$pkg" >/dev/null
done
say "ready: Portkey gateway $(node -p 'require("./bench/node_modules/@portkey-ai/gateway/package.json").version'), $(bench/.venv/bin/python -c 'import importlib.metadata as m; print("litellm", m.version("litellm"), "· matplotlib", m.version("matplotlib"))')"
