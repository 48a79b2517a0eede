-- tollgate D1 schema, part 7: budget threshold alerts, recorded once per key,
-- limit, threshold and window (the unique index makes a replay add nothing
-- and send nothing).
CREATE TABLE alerts (
  key_id        TEXT NOT NULL,
  limit_kind    TEXT NOT NULL,      -- usd_per_day | usd_per_month | usd_lifetime | tokens_per_day | tokens_per_month
  threshold_pct INTEGER NOT NULL,
  window_start  INTEGER,            -- ms since epoch; NULL for lifetime
  created_at    INTEGER NOT NULL,
  payload       TEXT NOT NULL       -- the JSON sent to the webhooks
);
CREATE UNIQUE INDEX alerts_once ON alerts (key_id, limit_kind, threshold_pct, IFNULL(window_start, -1));
