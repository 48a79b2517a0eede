-- tollgate D1 schema, part 12: guardrails. A key's guardrail policy (JSON
-- guardrails::GuardrailPolicy; NULL = the global and route policies), and
-- every guardrail decision of a request: which detector, which action, how
-- many matches. Never the matched text.
ALTER TABLE virtual_keys ADD COLUMN guardrails TEXT;
CREATE TABLE guardrail_events (
  request_id TEXT NOT NULL,
  seq        INTEGER NOT NULL,
  stage      TEXT NOT NULL,     -- input | output
  detector   TEXT NOT NULL,     -- email, card, … or an operator pattern's name
  action     TEXT NOT NULL,     -- block | redact | log
  count      INTEGER NOT NULL,  -- matches
  created_at INTEGER NOT NULL,
  PRIMARY KEY (request_id, seq)
);
CREATE INDEX guardrail_events_created ON guardrail_events (created_at);
