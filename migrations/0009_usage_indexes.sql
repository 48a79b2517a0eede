-- tollgate D1 schema, part 9: what the usage API reads from the ledger.
--
-- `attempt_count` and `fallback` are written with each row (ledger.rs), so
-- the fallback rate is a column sum rather than a join over `attempts`.
-- Older rows are filled in from their attempt rows below.
ALTER TABLE requests ADD COLUMN attempt_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN fallback INTEGER NOT NULL DEFAULT 0;  -- 1 when more than one provider/model was tried

UPDATE requests SET
  attempt_count = (SELECT COUNT(*) FROM attempts a WHERE a.request_id = requests.request_id),
  fallback = (SELECT COUNT(DISTINCT a.provider || '/' || a.model) > 1 FROM attempts a WHERE a.request_id = requests.request_id);

-- Totals, series and groups read the aggregates (0010); the queries that
-- need single rows are these: latency / TTFT histograms over a time range
-- (covering, so they never touch the table), the most expensive requests,
-- and the per-user grouping.
CREATE INDEX requests_latency_cover ON requests (created_at, latency_ms, ttft_ms);
CREATE INDEX requests_by_cost ON requests (cost_micros, created_at);
CREATE INDEX requests_by_model_time ON requests (provider, model_used, created_at);
CREATE INDEX requests_by_feature_time ON requests (json_extract(metadata, '$.feature'), created_at);
