-- tollgate D1 schema, part 8: teams/projects. A project is a parent budget
-- over its keys (its own KeyBudget Durable Object, "project:<id>"), and a
-- grouping for the ledger. Keys name at most one project; a request must fit
-- the key's limits and its project's.
CREATE TABLE projects (
  id         TEXT PRIMARY KEY,   -- operator-chosen: 1-64 of a-z 0-9 _ -
  name       TEXT NOT NULL,
  limits     TEXT,               -- JSON budget::Limits; NULL = grouping only
  created_at INTEGER NOT NULL
);
ALTER TABLE virtual_keys ADD COLUMN project_id TEXT;
ALTER TABLE requests ADD COLUMN project_id TEXT;
CREATE INDEX requests_project_created ON requests (project_id, created_at);
