-- tollgate D1 schema, part 1: virtual keys and the request ledger.
-- Applied with `wrangler d1 migrations apply DB` (`--local` for wrangler dev).

-- Virtual keys. Only the SHA-256 of a key is stored; the plaintext is shown once.
CREATE TABLE virtual_keys (
  id             TEXT PRIMARY KEY,          -- key_<16 hex>, safe to show
  key_hash       TEXT NOT NULL UNIQUE,      -- lowercase hex SHA-256 of the key
  key_prefix     TEXT NOT NULL,             -- first characters, for display
  name           TEXT NOT NULL,
  allowed_models TEXT,                      -- JSON array of patterns; NULL = all
  metadata       TEXT,                      -- JSON object, operator notes
  created_at     INTEGER NOT NULL,          -- ms since epoch
  revoked_at     INTEGER                    -- ms since epoch; NULL = active
);

-- One row per request that passed authentication (success, error, abort).
CREATE TABLE requests (
  request_id           TEXT PRIMARY KEY,    -- gateway request id; INSERT OR IGNORE makes writes idempotent
  created_at           INTEGER NOT NULL,    -- ms since epoch, request start
  key_id               TEXT NOT NULL,
  endpoint             TEXT NOT NULL,       -- chat.completions | embeddings
  model_requested      TEXT,
  provider             TEXT,
  model_used           TEXT,
  stream               INTEGER NOT NULL DEFAULT 0,
  status               INTEGER NOT NULL,    -- HTTP status the client received
  outcome              TEXT NOT NULL,       -- ok | rejected | upstream_error | upstream_truncated | client_aborted
  error_code           TEXT,
  prompt_tokens        INTEGER,
  completion_tokens    INTEGER,
  total_tokens         INTEGER,
  cached_prompt_tokens INTEGER,
  reasoning_tokens     INTEGER,
  usage_source         TEXT NOT NULL,       -- provider | none
  latency_ms           INTEGER NOT NULL,
  ttft_ms              INTEGER,
  metadata             TEXT                 -- JSON object from x-tollgate-metadata
);

CREATE INDEX requests_by_time ON requests (created_at);
CREATE INDEX requests_by_key_time ON requests (key_id, created_at);
