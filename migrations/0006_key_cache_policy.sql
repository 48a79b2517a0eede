-- tollgate D1 schema, part 6: a key's exact-cache policy (JSON
-- cache::CachePolicy: mode, tools, max_temperature; NULL = the global policy).
ALTER TABLE virtual_keys ADD COLUMN cache_policy TEXT;
