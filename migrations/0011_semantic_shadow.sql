-- tollgate D1 schema, part 11: the semantic cache's shadow mode. One row per
-- request whose best candidate reached `semantic.shadow_min_similarity`:
-- what would have been served (verdict `hit`) or why not (below_threshold,
-- veto_number, veto_entity, …), so an operator can tune the threshold on real
-- traffic before turning the layer on.
CREATE TABLE semantic_shadow (
  request_id   TEXT PRIMARY KEY,
  key_id       TEXT NOT NULL,
  created_at   INTEGER NOT NULL,   -- ms since epoch
  model        TEXT NOT NULL,      -- as requested (model or route alias)
  candidate_id TEXT NOT NULL,      -- the stored vector's id
  similarity   REAL NOT NULL,
  threshold    REAL NOT NULL,
  verdict      TEXT NOT NULL
);
CREATE INDEX semantic_shadow_key ON semantic_shadow (key_id, created_at);
