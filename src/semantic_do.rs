//! `SemanticIndex` Durable Object: the embedded vector index of the semantic
//! cache (the default; Vectorize is the other implementation). One object
//! per tenant, SQLite storage, exact cosine search over the rows of one
//! partition — there is no approximate index to be wrong, and a partition
//! (one system prompt, history, model, tenant…) rarely holds more than a few
//! thousand prompts.
//!
//! Requests (JSON, the same contract as the Vectorize binding in
//! `handlers/semantic.rs`):
//! - `POST /query` `{"partition", "vector", "top_k", "now"}` → `{"matches": [{"id", "score", "metadata"}]}`
//! - `POST /upsert` `{"id", "partition", "route", "vector", "metadata"}` → `{}`
//! - `POST /delete` `{"ids"}` → `{"deleted"}`
//! - `POST /purge` `{"route"?}` → `{"deleted"}`

use serde::Deserialize;
use serde_json::json;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, SqlStorageValue, State,
};

use crate::semantic::{cosine, vector_from_bytes, vector_to_bytes, StoredMeta};

/// Rows one tenant's index keeps; past it the soonest-expiring go first.
const MAX_ROWS: i64 = 20_000;

#[durable_object]
pub struct SemanticIndex {
    state: State,
}

#[derive(Deserialize)]
struct QueryBody {
    partition: String,
    vector: Vec<f32>,
    top_k: usize,
    now: u64,
}

#[derive(Deserialize)]
struct UpsertBody {
    id: String,
    partition: String,
    route: String,
    vector: Vec<f32>,
    metadata: StoredMeta,
}

#[derive(Deserialize)]
struct DeleteBody {
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct PurgeBody {
    #[serde(default)]
    route: Option<String>,
}

fn int(v: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

impl SemanticIndex {
    fn ensure_schema(&self) -> Result<()> {
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS vectors (
               id TEXT PRIMARY KEY,
               partition TEXT NOT NULL,
               route TEXT NOT NULL,
               vector BLOB NOT NULL,
               meta TEXT NOT NULL,
               expires_at INTEGER NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE INDEX IF NOT EXISTS vectors_partition ON vectors (partition, expires_at)",
            None,
        )?;
        Ok(())
    }

    fn query(&self, q: &QueryBody) -> Result<Response> {
        let sql = self.state.storage().sql();
        let cursor = sql.exec(
            "SELECT id, vector, meta FROM vectors WHERE partition = ? AND expires_at > ?",
            vec![SqlStorageValue::String(q.partition.clone()), int(q.now)],
        )?;
        let mut scored: Vec<(f32, String, serde_json::Value)> = Vec::new();
        for row in cursor.raw() {
            let row = row?;
            let mut cols = row.into_iter();
            let (
                Some(SqlStorageValue::String(id)),
                Some(SqlStorageValue::Blob(v)),
                Some(SqlStorageValue::String(meta)),
            ) = (cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            let Some(v) = vector_from_bytes(&v) else {
                continue;
            };
            let meta = serde_json::from_str(&meta).unwrap_or(serde_json::Value::Null);
            scored.push((cosine(&q.vector, &v), id, meta));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let matches: Vec<_> = scored
            .into_iter()
            .take(q.top_k.clamp(1, 20))
            .map(|(score, id, metadata)| json!({"id": id, "score": score, "metadata": metadata}))
            .collect();
        Response::from_json(&json!({ "matches": matches }))
    }

    fn upsert(&self, u: &UpsertBody) -> Result<Response> {
        let sql = self.state.storage().sql();
        let meta = serde_json::to_string(&u.metadata)
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        sql.exec(
            "INSERT OR REPLACE INTO vectors (id, partition, route, vector, meta, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                SqlStorageValue::String(u.id.clone()),
                SqlStorageValue::String(u.partition.clone()),
                SqlStorageValue::String(u.route.clone()),
                SqlStorageValue::Blob(vector_to_bytes(&u.vector)),
                SqlStorageValue::String(meta),
                int(u.metadata.expires_at),
            ],
        )?;
        // Housekeeping on the write path: expired rows, then the cap.
        let now = crate::http::now_ms() / 1000;
        sql.exec("DELETE FROM vectors WHERE expires_at <= ?", vec![int(now)])?;
        sql.exec(
            "DELETE FROM vectors WHERE id IN (SELECT id FROM vectors ORDER BY expires_at DESC LIMIT -1 OFFSET ?)",
            vec![SqlStorageValue::Integer(MAX_ROWS)],
        )?;
        Response::from_json(&json!({}))
    }

    fn delete(&self, ids: &[String]) -> Result<Response> {
        let sql = self.state.storage().sql();
        let mut deleted = 0;
        for id in ids {
            let c = sql.exec(
                "DELETE FROM vectors WHERE id = ?",
                vec![SqlStorageValue::String(id.clone())],
            )?;
            deleted += c.rows_written();
        }
        Response::from_json(&json!({ "deleted": deleted }))
    }

    fn purge(&self, route: Option<&str>) -> Result<Response> {
        let sql = self.state.storage().sql();
        let c = match route {
            Some(r) => sql.exec(
                "DELETE FROM vectors WHERE route = ?",
                vec![SqlStorageValue::String(r.to_owned())],
            )?,
            None => sql.exec("DELETE FROM vectors", None)?,
        };
        Response::from_json(&json!({ "deleted": c.rows_written() }))
    }
}

impl DurableObject for SemanticIndex {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let text = req.text().await?;
        self.ensure_schema()?;
        match path.as_str() {
            "/query" => match serde_json::from_str::<QueryBody>(&text) {
                Ok(q) => self.query(&q),
                Err(_) => Response::error("bad query", 400),
            },
            "/upsert" => match serde_json::from_str::<UpsertBody>(&text) {
                Ok(u) => self.upsert(&u),
                Err(_) => Response::error("bad upsert", 400),
            },
            "/delete" => match serde_json::from_str::<DeleteBody>(&text) {
                Ok(d) => self.delete(&d.ids),
                Err(_) => Response::error("bad delete", 400),
            },
            "/purge" => match serde_json::from_str::<PurgeBody>(&text) {
                Ok(p) => self.purge(p.route.as_deref()),
                Err(_) => Response::error("bad purge", 400),
            },
            _ => Response::error("not found", 404),
        }
    }
}
