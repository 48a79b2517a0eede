-- tollgate D1 schema, part 2: one row per upstream attempt, and keys that may
-- send an inline route (x-tollgate-config).

CREATE TABLE attempts (
  request_id   TEXT NOT NULL,               -- the requests row this attempt belongs to
  attempt      INTEGER NOT NULL,            -- 1-based over the whole request (skipped links have none)
  provider     TEXT NOT NULL,
  model        TEXT NOT NULL,
  started_at   INTEGER NOT NULL,            -- ms since epoch
  latency_ms   INTEGER NOT NULL,            -- to headers / first frame / failure
  status       INTEGER,                     -- upstream HTTP status, if one arrived
  outcome      TEXT NOT NULL,               -- ok | failed
  failure      TEXT,                        -- ttfb_timeout | status_503 | unreachable | bad_response | …
  PRIMARY KEY (request_id, attempt)
);

ALTER TABLE virtual_keys ADD COLUMN allow_inline_config INTEGER NOT NULL DEFAULT 0;
