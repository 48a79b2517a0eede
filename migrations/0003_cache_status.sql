-- tollgate D1 schema, part 3: how the exact cache took part in a request.
-- hit (answered from KV, not billed) | miss | refresh | skip | NULL (cache off)
ALTER TABLE requests ADD COLUMN cache_status TEXT;
