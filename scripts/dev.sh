#!/bin/sh
# `make dev`: install what is missing, apply D1 migrations locally, seed a dev
# virtual key, print how to call the gateway, and run it under `wrangler dev`
# (local D1, no Cloudflare account needed).
#
# Environment: PORT (default 8787), DEV_PERSIST_DIR (default .wrangler/state).
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${PORT:-8787}
PERSIST=${DEV_PERSIST_DIR:-$ROOT/.wrangler/state}
sh scripts/setup.sh
export PATH="$ROOT/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WRANGLER_SEND_METRICS=false

rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

if [ ! -f .dev.vars ]; then
  cat > .dev.vars <<VARS
# Local secrets for \`wrangler dev\` (git-ignored; never commit). One NAME=value a line.
ADMIN_TOKEN=dev-admin-$(rand_hex 16)
# Provider keys: uncomment to route real traffic.
# OPENAI_API_KEY=sk-...
# GROQ_API_KEY=...
VARS
  echo "dev: wrote .dev.vars with a fresh ADMIN_TOKEN"
fi

wrangler d1 migrations apply DB --local --persist-to "$PERSIST" >/dev/null
echo "dev: D1 migrations applied (local, $PERSIST)"

# A dev virtual key, made once per checkout and kept in .wrangler/.
mkdir -p .wrangler
[ -s .wrangler/dev-key ] || echo "tg-$(rand_hex 24)" > .wrangler/dev-key
DEV_KEY=$(cat .wrangler/dev-key)
DEV_HASH=$(printf '%s' "$DEV_KEY" | sha256sum | cut -d' ' -f1)
NOW_MS=$(($(date +%s) * 1000))
wrangler d1 execute DB --local --persist-to "$PERSIST" --command \
  "INSERT OR IGNORE INTO virtual_keys (id, key_hash, key_prefix, name, created_at) VALUES ('key_dev', '$DEV_HASH', '$(printf '%.9s' "$DEV_KEY")', 'local dev key', $NOW_MS)" >/dev/null
# If .wrangler/dev-key was replaced, point the record at the new key.
wrangler d1 execute DB --local --persist-to "$PERSIST" --command \
  "UPDATE virtual_keys SET key_hash = '$DEV_HASH', key_prefix = '$(printf '%.9s' "$DEV_KEY")', revoked_at = NULL WHERE id = 'key_dev'" >/dev/null

MODEL=demo
if grep -Eq '^OPENAI_API_KEY=.+' .dev.vars; then MODEL=gpt-4o-mini; fi
ADMIN=$(sed -n 's/^ADMIN_TOKEN=//p' .dev.vars | head -n 1)
BASE="http://127.0.0.1:$PORT"
cat <<MSG

  tollgate (dev) — starting on $BASE
    base URL     $BASE/v1        (set this as your OpenAI SDK's baseURL)
    dev key      $DEV_KEY
    admin token  $ADMIN   (from .dev.vars)
    model        $MODEL$( [ "$MODEL" = demo ] && echo "   (built-in demo provider; add OPENAI_API_KEY to .dev.vars for OpenAI)")

  try:
    curl $BASE/v1/chat/completions -H "Authorization: Bearer $DEV_KEY" -H "content-type: application/json" -d '{"model":"$MODEL","messages":[{"role":"user","content":"Hello, tollgate!"}]}'

MSG
exec wrangler dev --ip 127.0.0.1 --port "$PORT" --persist-to "$PERSIST" --show-interactive-dev-session=false
