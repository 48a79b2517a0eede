//! D1 access: virtual keys and ledger rows. Every statement is a constant
//! string with `?N` placeholders and bound values; no SQL is ever built from
//! input (anchors-reliability S3).

use std::cell::RefCell;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{console_error, D1Database, Delay};

use crate::error::GatewayError;
use crate::group_commit::{write_halving, GroupCommit, Push};
use crate::keys::KeyGrant;
use crate::ledger::{ledger_statements, RequestRow, SqlValue};

pub(crate) fn js(v: &SqlValue) -> JsValue {
    match v {
        SqlValue::Null => JsValue::NULL,
        // Numbers go to D1 as JS numbers (exact below 2^53, far above any
        // count or timestamp stored here); D1 does not accept BigInt.
        SqlValue::Int(n) => JsValue::from_f64(*n as f64),
        SqlValue::Text(s) => JsValue::from_str(s),
    }
}

fn db_error(what: &str, e: &worker::Error) -> GatewayError {
    console_error!("D1 {what} failed: {e}");
    // A key store that cannot be read is a reason to reject, never to admit.
    GatewayError::Misconfigured
}

/// A key record as stored (minus its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub key_prefix: String,
    pub name: String,
    /// JSON array text in D1; decoded for the API.
    pub allowed_models: Option<String>,
    pub metadata: Option<String>,
    pub created_at: f64,
    pub revoked_at: Option<f64>,
    /// 1 when the key may send an inline route in `x-tollgate-config`.
    #[serde(default)]
    pub allow_inline_config: f64,
    /// JSON `budget::Limits`; NULL = unlimited.
    #[serde(default)]
    pub limits: Option<String>,
    /// JSON `cache::CachePolicy`; NULL = the global policy.
    #[serde(default)]
    pub cache_policy: Option<String>,
    /// The team/project whose limits also apply; NULL = none.
    #[serde(default)]
    pub project_id: Option<String>,
    /// The project's limits (joined from `projects`, read-only here).
    #[serde(default)]
    pub project_limits: Option<String>,
    /// JSON `guardrails::GuardrailPolicy`; NULL = the global/route policy.
    #[serde(default)]
    pub guardrails: Option<String>,
    /// Tier in the saturation queue (`queue::Priority`).
    #[serde(default)]
    pub priority: Option<String>,
}

impl KeyRecord {
    pub fn allowed_models_list(&self) -> Option<Vec<String>> {
        self.allowed_models
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
    }

    pub fn grant(&self) -> KeyGrant {
        KeyGrant {
            id: self.id.clone(),
            name: self.name.clone(),
            // A stored list that does not parse grants nothing (fail closed).
            allowed_models: self
                .allowed_models
                .as_ref()
                .map(|_| self.allowed_models_list().unwrap_or_default()),
            allow_inline_config: self.allow_inline_config > 0.0,
            // Stored limits that do not parse admit nothing (fail closed).
            limits: self.limits.as_deref().map(parse_limits_fail_closed),
            // A stored policy that does not parse turns caching off.
            cache: self.cache_policy.as_deref().map(|p| {
                serde_json::from_str(p).unwrap_or(crate::cache::CachePolicy {
                    mode: Some(crate::config::CacheMode::Off),
                    semantic: Some(crate::semantic::SemanticMode::Off),
                    ..Default::default()
                })
            }),
            project: self
                .project_id
                .as_ref()
                .map(|id| crate::keys::ProjectGrant {
                    id: id.clone(),
                    limits: self.project_limits.as_deref().map(parse_limits_fail_closed),
                }),
            // A stored policy that does not parse blocks every built-in detector.
            guardrails: self.guardrails.as_deref().map(|g| {
                serde_json::from_str(g)
                    .unwrap_or_else(|_| crate::guardrails::GuardrailPolicy::fail_closed())
            }),
            priority: self.priority_tier(),
        }
    }

    /// The record as the admin API shows it.
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "virtual_key",
            "key_prefix": self.key_prefix,
            "name": self.name,
            "allowed_models": self.allowed_models_list(),
            "metadata": self.metadata.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
            "created_at": self.created_at as u64,
            "revoked_at": self.revoked_at.map(|t| t as u64),
            "allow_inline_config": self.allow_inline_config > 0.0,
            "limits": self.limits.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
            "cache": self.cache_policy.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
            "project_id": self.project_id,
            "guardrails": self.guardrails.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
            "priority": self.priority_tier().as_str(),
        })
    }

    /// The stored tier; an unknown value orders like `standard`.
    fn priority_tier(&self) -> crate::queue::Priority {
        self.priority
            .as_deref()
            .and_then(crate::queue::Priority::parse)
            .unwrap_or_default()
    }
}

/// Stored limits that do not parse admit nothing (fail closed).
fn parse_limits_fail_closed(stored: &str) -> crate::budget::Limits {
    serde_json::from_str(stored).unwrap_or(crate::budget::Limits {
        rpm: Some(0),
        ..Default::default()
    })
}

/// A key with its project's limits, in one read (the request path makes no
/// second D1 call for a project).
const KEY_COLUMNS: &str =
    "k.id, k.key_prefix, k.name, k.allowed_models, k.metadata, k.created_at, k.revoked_at, \
     k.allow_inline_config, k.limits, k.cache_policy, k.project_id, p.limits AS project_limits, k.guardrails, \
     k.priority";
const KEYS_JOINED: &str = "virtual_keys k LEFT JOIN projects p ON p.id = k.project_id";

/// The active key with this hash, if any.
pub async fn find_active_key(
    db: &D1Database,
    key_hash: &str,
) -> Result<Option<KeyGrant>, GatewayError> {
    let stmt = db
        .prepare(format!(
            "SELECT {KEY_COLUMNS} FROM {KEYS_JOINED} WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"
        ))
        .bind(&[JsValue::from_str(key_hash)])
        .map_err(|e| db_error("bind", &e))?;
    let rec: Option<KeyRecord> = stmt
        .first(None)
        .await
        .map_err(|e| db_error("key lookup", &e))?;
    Ok(rec.map(|r| r.grant()))
}

pub struct NewKey<'a> {
    pub id: &'a str,
    pub key_hash: &'a str,
    pub key_prefix: &'a str,
    pub name: &'a str,
    pub allowed_models: Option<String>,
    pub metadata: Option<String>,
    pub created_at: u64,
    pub allow_inline_config: bool,
    pub limits: Option<String>,
    pub cache_policy: Option<String>,
    pub project_id: Option<String>,
}

pub async fn insert_key(db: &D1Database, k: &NewKey<'_>) -> Result<(), GatewayError> {
    let values = [
        SqlValue::Text(k.id.to_owned()),
        SqlValue::Text(k.key_hash.to_owned()),
        SqlValue::Text(k.key_prefix.to_owned()),
        SqlValue::Text(k.name.to_owned()),
        k.allowed_models.clone().into(),
        k.metadata.clone().into(),
        Some(k.created_at).into(),
        SqlValue::Int(i64::from(k.allow_inline_config)),
        k.limits.clone().into(),
        k.cache_policy.clone().into(),
        k.project_id.clone().into(),
    ];
    db.prepare(
        "INSERT INTO virtual_keys (id, key_hash, key_prefix, name, allowed_models, metadata, created_at, \
         allow_inline_config, limits, cache_policy, project_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .bind(&values.iter().map(js).collect::<Vec<_>>())
    .map_err(|e| db_error("bind", &e))?
    .run()
    .await
    .map_err(|e| db_error("insert key", &e))?;
    Ok(())
}

pub async fn get_key(db: &D1Database, id: &str) -> Result<Option<KeyRecord>, GatewayError> {
    db.prepare(format!(
        "SELECT {KEY_COLUMNS} FROM {KEYS_JOINED} WHERE k.id = ?1"
    ))
    .bind(&[JsValue::from_str(id)])
    .map_err(|e| db_error("bind", &e))?
    .first(None)
    .await
    .map_err(|e| db_error("get key", &e))
}

pub async fn list_keys(db: &D1Database) -> Result<Vec<KeyRecord>, GatewayError> {
    db.prepare(format!(
        "SELECT {KEY_COLUMNS} FROM {KEYS_JOINED} ORDER BY k.created_at DESC LIMIT 1000"
    ))
    .all()
    .await
    .and_then(|r| r.results())
    .map_err(|e| db_error("list keys", &e))
}

/// Changes to a key; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Default)]
pub struct KeyUpdate<'a> {
    pub name: Option<&'a str>,
    pub allowed_models: Option<Option<String>>,
    pub allow_inline_config: Option<bool>,
    pub limits: Option<Option<String>>,
    pub cache_policy: Option<Option<String>>,
    pub project_id: Option<Option<String>>,
}

pub async fn update_key(db: &D1Database, id: &str, u: KeyUpdate<'_>) -> Result<(), GatewayError> {
    let set = |v: Option<Option<String>>| match v {
        Some(m) => (SqlValue::Int(1), SqlValue::from(m)),
        None => (SqlValue::Int(0), SqlValue::Null),
    };
    let (set_models, models) = set(u.allowed_models);
    let (set_limits, limits) = set(u.limits);
    let (set_policy, policy) = set(u.cache_policy);
    let (set_project, project) = set(u.project_id);
    let values = [
        SqlValue::Text(id.to_owned()),
        u.name.map(str::to_owned).into(),
        set_models,
        models,
        u.allow_inline_config.map(u64::from).into(),
        set_limits,
        limits,
        set_policy,
        policy,
        set_project,
        project,
    ];
    db.prepare(
        "UPDATE virtual_keys SET name = COALESCE(?2, name), \
         allowed_models = CASE WHEN ?3 = 1 THEN ?4 ELSE allowed_models END, \
         allow_inline_config = COALESCE(?5, allow_inline_config), \
         limits = CASE WHEN ?6 = 1 THEN ?7 ELSE limits END, \
         cache_policy = CASE WHEN ?8 = 1 THEN ?9 ELSE cache_policy END, \
         project_id = CASE WHEN ?10 = 1 THEN ?11 ELSE project_id END WHERE id = ?1",
    )
    .bind(&values.iter().map(js).collect::<Vec<_>>())
    .map_err(|e| db_error("bind", &e))?
    .run()
    .await
    .map_err(|e| db_error("update key", &e))?;
    Ok(())
}

/// Sets (or with `None` clears) a key's guardrail policy (JSON).
pub async fn set_key_guardrails(
    db: &D1Database,
    id: &str,
    policy: Option<String>,
) -> Result<(), GatewayError> {
    db.prepare("UPDATE virtual_keys SET guardrails = ?2 WHERE id = ?1")
        .bind(&[JsValue::from_str(id), js(&policy.into())])
        .map_err(|e| db_error("bind", &e))?
        .run()
        .await
        .map_err(|e| db_error("set key guardrails", &e))?;
    Ok(())
}

/// Sets a key's tier in the saturation queue.
pub async fn set_key_priority(
    db: &D1Database,
    id: &str,
    priority: crate::queue::Priority,
) -> Result<(), GatewayError> {
    db.prepare("UPDATE virtual_keys SET priority = ?2 WHERE id = ?1")
        .bind(&[JsValue::from_str(id), JsValue::from_str(priority.as_str())])
        .map_err(|e| db_error("bind", &e))?
        .run()
        .await
        .map_err(|e| db_error("set key priority", &e))?;
    Ok(())
}

/// A team/project: a parent budget over its keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProjectRecord {
    pub id: String,
    pub name: String,
    /// JSON `budget::Limits`; NULL = no limits (grouping only).
    #[serde(default)]
    pub limits: Option<String>,
    pub created_at: f64,
}

impl ProjectRecord {
    pub fn limits(&self) -> Option<crate::budget::Limits> {
        self.limits.as_deref().map(parse_limits_fail_closed)
    }

    /// The record as the admin API shows it.
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "project",
            "name": self.name,
            "limits": self.limits.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()),
            "created_at": self.created_at as u64,
        })
    }
}

/// Creates a project; `false` when the id is taken.
pub async fn insert_project(db: &D1Database, p: &ProjectRecord) -> Result<bool, GatewayError> {
    let values = [
        SqlValue::Text(p.id.clone()),
        SqlValue::Text(p.name.clone()),
        p.limits.clone().into(),
        SqlValue::Int(p.created_at as i64),
    ];
    let result = db
        .prepare(
            "INSERT OR IGNORE INTO projects (id, name, limits, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&values.iter().map(js).collect::<Vec<_>>())
        .map_err(|e| db_error("bind", &e))?
        .run()
        .await
        .map_err(|e| db_error("insert project", &e))?;
    let changed = result
        .meta()
        .ok()
        .flatten()
        .and_then(|m| m.changes)
        .unwrap_or(0);
    Ok(changed > 0)
}

pub async fn get_project(db: &D1Database, id: &str) -> Result<Option<ProjectRecord>, GatewayError> {
    db.prepare("SELECT id, name, limits, created_at FROM projects WHERE id = ?1")
        .bind(&[JsValue::from_str(id)])
        .map_err(|e| db_error("bind", &e))?
        .first(None)
        .await
        .map_err(|e| db_error("get project", &e))
}

pub async fn list_projects(db: &D1Database) -> Result<Vec<ProjectRecord>, GatewayError> {
    db.prepare("SELECT id, name, limits, created_at FROM projects ORDER BY id LIMIT 1000")
        .all()
        .await
        .and_then(|r| r.results())
        .map_err(|e| db_error("list projects", &e))
}

/// Changes a project's name and/or limits (`Some(None)` clears the limits).
pub async fn update_project(
    db: &D1Database,
    id: &str,
    name: Option<&str>,
    limits: Option<Option<String>>,
) -> Result<(), GatewayError> {
    let (set_limits, limits) = match limits {
        Some(l) => (SqlValue::Int(1), SqlValue::from(l)),
        None => (SqlValue::Int(0), SqlValue::Null),
    };
    let values = [
        SqlValue::Text(id.to_owned()),
        name.map(str::to_owned).into(),
        set_limits,
        limits,
    ];
    db.prepare(
        "UPDATE projects SET name = COALESCE(?2, name), \
         limits = CASE WHEN ?3 = 1 THEN ?4 ELSE limits END WHERE id = ?1",
    )
    .bind(&values.iter().map(js).collect::<Vec<_>>())
    .map_err(|e| db_error("bind", &e))?
    .run()
    .await
    .map_err(|e| db_error("update project", &e))?;
    Ok(())
}

/// Revokes a key; revoking twice keeps the first time.
pub async fn revoke_key(db: &D1Database, id: &str, now: u64) -> Result<(), GatewayError> {
    db.prepare("UPDATE virtual_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")
        .bind(&[JsValue::from_str(id), js(&Some(now).into())])
        .map_err(|e| db_error("bind", &e))?
        .run()
        .await
        .map_err(|e| db_error("revoke key", &e))?;
    Ok(())
}

/// Rows of requests finishing within this window of the first share one D1
/// batch (`group_commit.rs`). It delays only the ledger write, never a
/// response. Measured under load (bench/, bare workerd, c=64): 25 ms windows
/// of at most 12 rows left ~0.4 ms of CPU per request in the ledger write;
/// 100 ms windows of up to 64 rows about a quarter of that.
const LEDGER_BATCH_WINDOW_MS: u64 = 100;
/// A batch flushes early at this many rows. A batch is 2–4 statements
/// whatever its size (`ledger::ledger_statements`), well inside D1's
/// per-invocation query limit (50 on the free plan; a batch failing on one
/// poisoned row is halved into ~15 more batches of 3 statements), and 128
/// rows of at most ~2 KiB each stay far below its 2 MB limit on one bound
/// value. Much of a batch's cost is per call, not per row: in an A/B run
/// (`bench/peers.mjs --ab`, c=64, ~1,500 req/s) a cap above the ~150 rows
/// of a window instead of 64 took 0.03 ms of CPU off each request.
const LEDGER_BATCH_ROWS: usize = 128;

thread_local! {
    static LEDGER_QUEUE: RefCell<GroupCommit<RequestRow>> =
        RefCell::new(GroupCommit::new(LEDGER_BATCH_ROWS));
}

/// Queues a request row for the ledger and, when this request leads or fills
/// a batch, writes the batch. Call from `ctx.wait_until`.
pub async fn commit_request_row(db: &D1Database, row: RequestRow) {
    if let Some(write) = queue_request_row(db, row) {
        write.await;
    }
}

/// Queues a request row for the ledger, now. When this request leads or fills
/// a batch, returns the batch's write, which the caller must keep alive with
/// `ctx.wait_until`; a follower gets `None` (the leader's write takes its
/// row), so it needs no `waitUntil` of its own — one costs the runtime ~2 µs,
/// and the promise around the future more.
pub fn queue_request_row(
    db: &D1Database,
    row: RequestRow,
) -> Option<impl std::future::Future<Output = ()> + 'static> {
    // A leader waits out the window for its generation; a full batch goes now.
    let (window, full) = match LEDGER_QUEUE.with(|q| q.borrow_mut().push(row)) {
        Push::Follow => return None,
        Push::Lead { generation } => (Some(generation), Vec::new()),
        Push::Flush(rows) => (None, rows),
    };
    // A second handle on the same binding (workers-rs' D1Database is not Clone).
    let db: D1Database = wasm_bindgen::JsCast::unchecked_into(AsRef::<JsValue>::as_ref(db).clone());
    Some(async move {
        let rows = match window {
            Some(generation) => {
                Delay::from(Duration::from_millis(LEDGER_BATCH_WINDOW_MS)).await;
                LEDGER_QUEUE.with(|q| q.borrow_mut().take(generation))
            }
            None => full,
        };
        if rows.is_empty() {
            return;
        }
        write_halving(&rows, |group, tries| insert_rows(&db, group, tries)).await;
    })
}

/// Writes request rows and their attempt rows in one D1 batch (a batch is a
/// transaction), up to `tries` times: D1 does not retry writes itself, and
/// `INSERT OR IGNORE` on the request id (and attempt number) makes a retry —
/// or any replay — add nothing. True when written.
async fn insert_rows(db: &D1Database, rows: &[RequestRow], tries: u32) -> bool {
    let build = || -> worker::Result<Vec<worker::D1PreparedStatement>> {
        ledger_statements(rows)
            .into_iter()
            .map(|(sql, json)| db.prepare(sql).bind(&[JsValue::from_str(&json)]))
            .collect()
    };
    let first = rows.first().map_or("", |r| r.request_id.as_str());
    for attempt in 1..=tries {
        let result = match build() {
            Ok(statements) => db.batch(statements).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return true,
            Err(e) => console_error!(
                "ledger write of {} row(s) from {first} failed (attempt {attempt}): {e}",
                rows.len()
            ),
        }
    }
    false
}

/// Records a budget alert; false when this key/limit/threshold/window was
/// already recorded (so it is never sent twice).
pub async fn insert_alert(db: &D1Database, values: &[SqlValue]) -> bool {
    let stmt = db
        .prepare(
            "INSERT OR IGNORE INTO alerts (key_id, limit_kind, threshold_pct, window_start, created_at, payload) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&values.iter().map(js).collect::<Vec<_>>());
    match stmt {
        Ok(s) => match s.run().await {
            Ok(r) => r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0) > 0,
            Err(e) => {
                console_error!("alert write failed: {e}");
                false
            }
        },
        Err(e) => {
            console_error!("alert write failed: {e}");
            false
        }
    }
}

const REQUEST_COLUMNS: &str = "request_id, created_at, key_id, endpoint, model_requested, provider, \
    model_used, stream, status, outcome, error_code, prompt_tokens, completion_tokens, total_tokens, \
    cached_prompt_tokens, reasoning_tokens, usage_source, latency_ms, ttft_ms, metadata, cache_status, cost_micros, saved_micros, pricing, \
    project_id, queue_ms";

/// Newest ledger rows first, optionally for one key.
pub async fn list_requests(
    db: &D1Database,
    key_id: Option<&str>,
    limit: u32,
) -> Result<Vec<serde_json::Value>, GatewayError> {
    let key = key_id.map_or(JsValue::NULL, JsValue::from_str);
    db.prepare(format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE (?1 IS NULL OR key_id = ?1) \
         ORDER BY created_at DESC LIMIT ?2"
    ))
    .bind(&[key, JsValue::from_f64(f64::from(limit))])
    .map_err(|e| db_error("bind", &e))?
    .all()
    .await
    .and_then(|r| r.results())
    .map_err(|e| db_error("list requests", &e))
}

pub async fn get_request(
    db: &D1Database,
    id: &str,
) -> Result<Option<serde_json::Value>, GatewayError> {
    let row: Option<serde_json::Value> = db
        .prepare(format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE request_id = ?1"
        ))
        .bind(&[JsValue::from_str(id)])
        .map_err(|e| db_error("bind", &e))?
        .first(None)
        .await
        .map_err(|e| db_error("get request", &e))?;
    let Some(mut row) = row else {
        return Ok(None);
    };
    let attempts: Vec<serde_json::Value> = db
        .prepare(
            "SELECT attempt, provider, model, started_at, latency_ms, status, outcome, failure \
             FROM attempts WHERE request_id = ?1 ORDER BY attempt",
        )
        .bind(&[JsValue::from_str(id)])
        .map_err(|e| db_error("bind", &e))?
        .all()
        .await
        .and_then(|r| r.results())
        .map_err(|e| db_error("get attempts", &e))?;
    let guardrails: Vec<serde_json::Value> = db
        .prepare(
            "SELECT stage, detector, action, count FROM guardrail_events \
             WHERE request_id = ?1 ORDER BY seq",
        )
        .bind(&[JsValue::from_str(id)])
        .map_err(|e| db_error("bind", &e))?
        .all()
        .await
        .and_then(|r| r.results())
        .map_err(|e| db_error("get guardrail events", &e))?;
    if let Some(o) = row.as_object_mut() {
        o.insert("attempts".to_owned(), serde_json::Value::Array(attempts));
        o.insert(
            "guardrails".to_owned(),
            serde_json::Value::Array(guardrails),
        );
    }
    Ok(Some(row))
}
