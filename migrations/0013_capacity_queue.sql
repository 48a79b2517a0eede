-- tollgate D1 schema, part 13: the saturation queue (issue 12). A key's tier
-- orders requests waiting for provider capacity (`paid` first, then
-- `standard`, then `batch`); it grants nothing else. Each ledger row records
-- how long its request waited for capacity (NULL: it did not wait).
ALTER TABLE virtual_keys ADD COLUMN priority TEXT NOT NULL DEFAULT 'standard';
ALTER TABLE requests ADD COLUMN queue_ms INTEGER;
