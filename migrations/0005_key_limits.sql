-- tollgate D1 schema, part 5: per-key budgets and rate limits (JSON
-- budget::Limits; NULL = unlimited). The key's KeyBudget Durable Object
-- enforces them; D1 only stores what the admin set.
ALTER TABLE virtual_keys ADD COLUMN limits TEXT;
