-- tollgate D1 schema, part 14: quality sampling (issue 12). One row per
-- sampled request: which link answered the user, which reference model was
-- asked the same request in the background, and how far the two answers
-- agreed (quality.rs documents each method). Never the prompt or answers.
CREATE TABLE quality_samples (
  request_id            TEXT PRIMARY KEY,  -- the user's request (INSERT OR IGNORE)
  created_at            INTEGER NOT NULL,  -- ms since epoch, the user's request start
  key_id                TEXT NOT NULL,
  route                 TEXT NOT NULL,     -- the model / route the client asked for
  provider              TEXT NOT NULL,     -- the link that answered the user
  model                 TEXT NOT NULL,
  reference             TEXT NOT NULL,     -- provider/model of the reference
  agreement             INTEGER,           -- parts per million (0-1000000); NULL when the reference failed
  method                TEXT,              -- tool_calls | exact | json | token_set | empty
  error                 TEXT,              -- the reference call's error code, if it failed
  reference_request_id  TEXT NOT NULL,     -- its own ledger row (key_id 'gateway:quality-sample')
  reference_cost_micros INTEGER,           -- NULL when unpriced
  reference_latency_ms  INTEGER NOT NULL
);
CREATE INDEX quality_samples_by_time ON quality_samples (created_at);
