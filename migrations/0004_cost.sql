-- tollgate D1 schema, part 4: what each request cost, priced from
-- data/prices.json and [vars.GATEWAY.pricing].
ALTER TABLE requests ADD COLUMN cost_micros INTEGER;   -- micro-USD; 0 for cache hits and for requests that generated nothing
ALTER TABLE requests ADD COLUMN saved_micros INTEGER;  -- cache hits: what the answer would have cost
ALTER TABLE requests ADD COLUMN pricing TEXT;          -- priced | default | unpriced
