-- tollgate D1 schema, part 10: usage aggregates, so the usage API and the
-- dashboard read a few thousand rows instead of scanning the ledger.
--
-- Each ledger write adds its request to the hour's row here, in the same D1
-- transaction (store.rs; only when the request row was new, so a replayed
-- write adds nothing). The retention job (cron) deletes ledger rows older
-- than the configured age and compacts hour rows older than that into day
-- rows. Totals, series and groups read this table; percentiles, the top-N
-- list and the per-user grouping need single rows and read the retained
-- ledger (`requests`).
CREATE TABLE usage_rollup (
  bucket            INTEGER NOT NULL,   -- ms since epoch: start of the hour (or UTC day)
  span              INTEGER NOT NULL,   -- 3600000 (hour) or 86400000 (day, after compaction)
  key_id            TEXT NOT NULL,
  provider          TEXT NOT NULL,      -- '' when none answered
  model             TEXT NOT NULL,      -- model_used, '' when none
  team              TEXT NOT NULL,      -- x-tollgate-metadata team / feature, '' when absent
  feature           TEXT NOT NULL,
  outcome           TEXT NOT NULL,
  status            INTEGER NOT NULL,
  cache_status      TEXT NOT NULL,      -- '' when the cache was off
  requests          INTEGER NOT NULL,
  upstream          INTEGER NOT NULL,   -- requests that made at least one upstream attempt
  fallbacks         INTEGER NOT NULL,
  prompt_tokens     INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  total_tokens      INTEGER NOT NULL,
  cost_micros       INTEGER NOT NULL,
  saved_micros      INTEGER NOT NULL,
  unpriced          INTEGER NOT NULL,   -- requests whose cost is unknown (cost_micros NULL)
  latency_ms_sum    INTEGER NOT NULL,
  ttft_ms_sum       INTEGER NOT NULL,
  ttft_count        INTEGER NOT NULL,
  PRIMARY KEY (bucket, span, key_id, provider, model, team, feature, outcome, status, cache_status)
);

-- The ledger written before this migration.
INSERT INTO usage_rollup
SELECT (created_at / 3600000) * 3600000, 3600000, key_id, COALESCE(provider, ''), COALESCE(model_used, ''),
  COALESCE(CAST(json_extract(metadata, '$.team') AS TEXT), ''),
  COALESCE(CAST(json_extract(metadata, '$.feature') AS TEXT), ''),
  outcome, status, COALESCE(cache_status, ''), COUNT(*), SUM(attempt_count > 0), SUM(fallback),
  COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0),
  COALESCE(SUM(cost_micros), 0), COALESCE(SUM(saved_micros), 0), SUM(cost_micros IS NULL),
  SUM(latency_ms), COALESCE(SUM(ttft_ms), 0), COUNT(ttft_ms)
FROM requests GROUP BY 1, 3, 4, 5, 6, 7, 8, 9, 10;
