-- tollgate D1 schema, part 15: one index fewer on every ledger write.
--
-- `requests_by_time (created_at)` is a prefix of `requests_latency_cover
-- (created_at, latency_ms, ttft_ms)` (0009): every query that ranged over
-- `created_at` with the first can use the second (ops.rs tests the
-- retention delete's plan). Each index is one more b-tree write per
-- request, and D1 bills each as a row written.
DROP INDEX IF EXISTS requests_by_time;
