//! The admin API under `/admin/`, guarded by the `ADMIN_TOKEN` secret:
//! virtual keys (create → shown once, list, get, update, revoke), ledger rows,
//! and the effective configuration with secrets reduced to set/missing.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use worker::{console_error, Env, Request, Response, Url};

use crate::bindings::CACHE_KV;
use crate::cache;
use crate::config::ResolvedKind;
use crate::error::GatewayError;
use crate::handlers::{authenticate_admin, config, database, secret};
use crate::http::{json_response, now_ms, random_bytes, read_body_limited};
use crate::keys::{
    display_prefix, format_key, format_key_id, hash_key, validate_allowed_models, BudgetScope,
    ScopeKind,
};
use crate::request::parse_json_object;
use crate::router::Route;
use crate::store::{self, NewKey};

const ADMIN_BODY_LIMIT: u64 = 64 * 1024;

/// Dispatches an admin route after checking the admin token.
pub async fn handle(mut req: Request, env: &Env, route: Route) -> Result<Response, GatewayError> {
    authenticate_admin(&req, env)?;
    let method = req.method().to_string();
    let result = dispatch(&mut req, env, route, &method).await;
    if method != "GET" {
        // A key or project may have changed: this isolate reads them afresh.
        crate::handlers::forget_cached_keys();
    }
    result
}

async fn dispatch(
    req: &mut Request,
    env: &Env,
    route: Route,
    method: &str,
) -> Result<Response, GatewayError> {
    match (route, method) {
        (Route::AdminKeys, "POST") => create_key(req, env).await,
        (Route::AdminKeys, _) => list_keys(env).await,
        (Route::AdminKey(id), "GET") => get_key(env, &id).await,
        (Route::AdminKey(id), "PATCH") => update_key(req, env, &id).await,
        (Route::AdminKey(id), _) | (Route::AdminKeyRevoke(id), _) => revoke_key(env, &id).await,
        (Route::AdminRequests, _) => list_requests(req, env).await,
        (Route::AdminRequest(id), _) => get_request(env, &id).await,
        (Route::AdminConfig, _) => effective_config(env),
        (Route::AdminKeyBudget(id), _) => key_budget(env, &id).await,
        (Route::AdminProjects, "POST") => create_project(req, env).await,
        (Route::AdminProjects, _) => list_projects(env).await,
        (Route::AdminProject(id), "PATCH") => update_project(req, env, &id).await,
        (Route::AdminProject(id), _) => get_project(env, &id).await,
        (Route::AdminProjectBudget(id), _) => project_budget(env, &id).await,
        (Route::AdminCache, _) => purge_cache(req, env).await,
        (Route::AdminHealth, _) => crate::handlers::probes::admin_health(env).await,
        _ => Err(GatewayError::NotFound),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    allow_inline_config: bool,
    #[serde(default)]
    limits: Option<crate::budget::Limits>,
    #[serde(default)]
    cache: Option<crate::cache::CachePolicy>,
    /// The team/project whose limits also apply; it must exist.
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    guardrails: Option<crate::guardrails::GuardrailPolicy>,
    /// Tier in the saturation queue; `standard` when absent.
    #[serde(default)]
    priority: Option<crate::queue::Priority>,
}

/// Validates a key's guardrail policy (it may name the global operator
/// detectors) and stores it as JSON.
fn guardrails_json(
    env: &Env,
    policy: &crate::guardrails::GuardrailPolicy,
) -> Result<String, GatewayError> {
    let global = config(env)?.guardrails.operator_detectors();
    let errors = policy.validate("guardrails", &global);
    if !errors.is_empty() {
        return Err(GatewayError::invalid_param("guardrails", errors.join("; ")));
    }
    serde_json::to_string(policy).map_err(|_| GatewayError::Internal)
}

/// Validates a key's cache policy and stores it as JSON.
fn policy_json(policy: &crate::cache::CachePolicy) -> Result<String, GatewayError> {
    let errors = policy.validate("cache");
    if !errors.is_empty() {
        return Err(GatewayError::invalid_param("cache", errors.join("; ")));
    }
    serde_json::to_string(policy).map_err(|_| GatewayError::Internal)
}

/// Validates limits from the admin API and stores them as JSON.
fn limits_json(limits: &crate::budget::Limits) -> Result<String, GatewayError> {
    limits
        .validate("limits")
        .map_err(|errors| GatewayError::invalid_param("limits", errors.join("; ")))?;
    serde_json::to_string(limits).map_err(|_| GatewayError::Internal)
}

/// A PATCH body's `name`: absent → unchanged.
fn patch_name(body: &Map<String, Value>) -> Result<Option<&str>, GatewayError> {
    match body.get("name") {
        None => Ok(None),
        Some(Value::String(n)) => {
            validate_name(n)?;
            Ok(Some(n.as_str()))
        }
        Some(_) => Err(GatewayError::invalid_param(
            "name",
            "'name' must be a string.",
        )),
    }
}

/// A PATCH body's `limits`: absent → unchanged, `null` → lifted, else
/// validated limits as stored JSON.
fn patch_limits(body: &Map<String, Value>) -> Result<Option<Option<String>>, GatewayError> {
    match body.get("limits") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => {
            let l: crate::budget::Limits = serde_json::from_value(v.clone()).map_err(|e| {
                GatewayError::invalid_param("limits", format!("Invalid limits: {e}."))
            })?;
            Ok(Some(Some(limits_json(&l)?)))
        }
    }
}

/// A PATCH body's `priority`: absent → unchanged.
fn patch_priority(
    body: &Map<String, Value>,
) -> Result<Option<crate::queue::Priority>, GatewayError> {
    body.get("priority")
        .map(|v| {
            serde_json::from_value(v.clone()).map_err(|_| {
                GatewayError::invalid_param(
                    "priority",
                    "'priority' must be \"paid\", \"standard\" or \"batch\".",
                )
            })
        })
        .transpose()
}

fn validate_name(name: &str) -> Result<(), GatewayError> {
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(GatewayError::invalid_param(
            "name",
            "'name' must be 1-100 printable characters.",
        ));
    }
    Ok(())
}

async fn read_admin_json(req: &mut Request) -> Result<Map<String, Value>, GatewayError> {
    let raw = read_body_limited(req, ADMIN_BODY_LIMIT).await?;
    parse_json_object(&raw)
}

/// `POST /admin/keys` — the plaintext key is in this response and nowhere else, ever.
async fn create_key(req: &mut Request, env: &Env) -> Result<Response, GatewayError> {
    let body = read_admin_json(req).await?;
    let input: CreateKey = serde_json::from_value(Value::Object(body))
        .map_err(|e| GatewayError::invalid(format!("Invalid key request: {e}.")))?;
    validate_name(&input.name)?;
    if let Some(list) = &input.allowed_models {
        validate_allowed_models(list)?;
    }
    let metadata = match &input.metadata {
        Some(m) => {
            let s = Value::Object(m.clone()).to_string();
            if s.len() > 2048 {
                return Err(GatewayError::invalid_param(
                    "metadata",
                    "'metadata' must be at most 2 KB of JSON.",
                ));
            }
            Some(s)
        }
        None => None,
    };
    let guardrails = input
        .guardrails
        .as_ref()
        .map(|g| guardrails_json(env, g))
        .transpose()?;
    let db = database(env)?;
    if let Some(project) = &input.project_id {
        existing_project(&db, project).await?;
    }
    let key = format_key(&random_bytes::<24>()?);
    let id = format_key_id(&random_bytes::<8>()?);
    let prefix = display_prefix(&key);
    let created_at = now_ms();
    let allowed_models = input
        .allowed_models
        .as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".to_owned()));
    store::insert_key(
        &db,
        &NewKey {
            id: &id,
            key_hash: &hash_key(&key),
            key_prefix: &prefix,
            name: &input.name,
            allowed_models,
            metadata,
            created_at,
            allow_inline_config: input.allow_inline_config,
            limits: input.limits.as_ref().map(limits_json).transpose()?,
            cache_policy: input.cache.as_ref().map(policy_json).transpose()?,
            project_id: input.project_id.clone(),
        },
    )
    .await?;
    if guardrails.is_some() {
        store::set_key_guardrails(&db, &id, guardrails).await?;
    }
    if let Some(p) = input.priority {
        store::set_key_priority(&db, &id, p).await?;
    }
    let record = store::get_key(&db, &id)
        .await?
        .ok_or(GatewayError::Internal)?;
    let mut out = record.to_api();
    if let Some(o) = out.as_object_mut() {
        o.insert("key".to_owned(), Value::String(key));
    }
    json_response(&out, 201)
}

/// `GET /admin/keys`
async fn list_keys(env: &Env) -> Result<Response, GatewayError> {
    let db = database(env)?;
    let keys = store::list_keys(&db).await?;
    let data: Vec<Value> = keys.iter().map(store::KeyRecord::to_api).collect();
    json_response(&json!({"object": "list", "data": data}), 200)
}

/// `GET /admin/keys/{id}`
async fn get_key(env: &Env, id: &str) -> Result<Response, GatewayError> {
    let db = database(env)?;
    let record = store::get_key(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "key" })?;
    json_response(&record.to_api(), 200)
}

/// `PATCH /admin/keys/{id}` — `{"name"?: string, "allowed_models"?: [..] | null,
/// "allow_inline_config"?: bool}`.
async fn update_key(req: &mut Request, env: &Env, id: &str) -> Result<Response, GatewayError> {
    const FIELDS: [&str; 8] = [
        "name",
        "allowed_models",
        "allow_inline_config",
        "limits",
        "cache",
        "project_id",
        "guardrails",
        "priority",
    ];
    let body = read_admin_json(req).await?;
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(GatewayError::invalid_param(
            unknown,
            format!(
                "Unknown field '{unknown}'; only name, allowed_models, allow_inline_config, limits, cache, project_id, guardrails and priority can be changed."
            ),
        ));
    }
    let allow_inline_config = match body.get("allow_inline_config") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "allow_inline_config",
                "'allow_inline_config' must be a boolean.",
            ))
        }
    };
    let name = patch_name(&body)?;
    let priority = patch_priority(&body)?;
    let allowed_models = match body.get("allowed_models") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => {
            let list: Vec<String> = serde_json::from_value(v.clone()).map_err(|_| {
                GatewayError::invalid_param(
                    "allowed_models",
                    "'allowed_models' must be an array of strings or null.",
                )
            })?;
            validate_allowed_models(&list)?;
            Some(Some(
                serde_json::to_string(&list).map_err(|_| GatewayError::Internal)?,
            ))
        }
    };
    let db = database(env)?;
    store::get_key(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "key" })?;
    let limits = patch_limits(&body)?;
    let cache_policy = match body.get("cache") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => {
            let p: crate::cache::CachePolicy = serde_json::from_value(v.clone()).map_err(|e| {
                GatewayError::invalid_param("cache", format!("Invalid cache policy: {e}."))
            })?;
            Some(Some(policy_json(&p)?))
        }
    };
    let project_id = match body.get("project_id") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(p)) => {
            existing_project(&db, p).await?;
            Some(Some(p.clone()))
        }
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "project_id",
                "'project_id' must be a string or null.",
            ))
        }
    };
    let guardrails = match body.get("guardrails") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => {
            let g: crate::guardrails::GuardrailPolicy =
                serde_json::from_value(v.clone()).map_err(|e| {
                    GatewayError::invalid_param("guardrails", format!("Invalid guardrails: {e}."))
                })?;
            Some(Some(guardrails_json(env, &g)?))
        }
    };
    if let Some(g) = guardrails {
        store::set_key_guardrails(&db, id, g).await?;
    }
    if let Some(p) = priority {
        store::set_key_priority(&db, id, p).await?;
    }
    store::update_key(
        &db,
        id,
        store::KeyUpdate {
            name,
            allowed_models,
            allow_inline_config,
            limits,
            cache_policy,
            project_id,
        },
    )
    .await?;
    get_key(env, id).await
}

/// `DELETE /admin/keys/{id}` and `POST /admin/keys/{id}/revoke` — revocation
/// keeps the record so ledger rows still name their key.
async fn revoke_key(env: &Env, id: &str) -> Result<Response, GatewayError> {
    let db = database(env)?;
    store::get_key(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "key" })?;
    store::revoke_key(&db, id, now_ms()).await?;
    get_key(env, id).await
}

/// `GET /admin/requests?limit=100&key_id=…` — newest ledger rows first.
async fn list_requests(req: &Request, env: &Env) -> Result<Response, GatewayError> {
    let url: Url = req.url().map_err(|_| GatewayError::invalid("Bad URL."))?;
    let mut limit = 100u32;
    let mut key_id = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        GatewayError::invalid_param(
                            "limit",
                            "'limit' must be an integer from 1 to 1000.",
                        )
                    })?;
            }
            "key_id" => key_id = Some(v.into_owned()),
            other => {
                return Err(GatewayError::invalid_param(
                    other,
                    format!("Unknown query parameter '{other}'."),
                ))
            }
        }
    }
    let db = database(env)?;
    let rows = store::list_requests(&db, key_id.as_deref(), limit).await?;
    json_response(&json!({"object": "list", "data": rows}), 200)
}

/// `GET /admin/requests/{request_id}`
async fn get_request(env: &Env, id: &str) -> Result<Response, GatewayError> {
    let db = database(env)?;
    let row = store::get_request(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "request" })?;
    json_response(&row, 200)
}

/// `GET /admin/keys/{id}/budget` — the key's limits and its live state from
/// its `KeyBudget` Durable Object: spend and remaining per day, month and
/// lifetime, requests and tokens in the last minute, open reservations.
async fn key_budget(env: &Env, id: &str) -> Result<Response, GatewayError> {
    let db = database(env)?;
    let record = store::get_key(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "key" })?;
    let grant = record.grant();
    let Some(limits) = grant.limits else {
        return json_response(
            &json!({"key_id": id, "project_id": record.project_id, "limits": null}),
            200,
        );
    };
    let scope = BudgetScope {
        kind: ScopeKind::Key,
        id: id.to_owned(),
        limits,
    };
    let snapshot = crate::handlers::budgets::snapshot(env, &scope).await?;
    json_response(
        &json!({"key_id": id, "project_id": record.project_id, "limits": scope.limits, "state": snapshot}),
        200,
    )
}

/// The project a key names, which must exist (400 otherwise).
async fn existing_project(
    db: &worker::D1Database,
    id: &str,
) -> Result<store::ProjectRecord, GatewayError> {
    crate::keys::validate_project_id(id)?;
    store::get_project(db, id).await?.ok_or_else(|| {
        GatewayError::invalid_param(
            "project_id",
            format!("There is no project '{id}'; create it with POST /admin/projects first."),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    limits: Option<crate::budget::Limits>,
}

/// `POST /admin/projects` — `{"id", "name"?, "limits"?}`; 409 if the id is taken.
async fn create_project(req: &mut Request, env: &Env) -> Result<Response, GatewayError> {
    let body = read_admin_json(req).await?;
    let input: CreateProject = serde_json::from_value(Value::Object(body))
        .map_err(|e| GatewayError::invalid(format!("Invalid project request: {e}.")))?;
    crate::keys::validate_project_id(&input.id)?;
    let name = input.name.unwrap_or_else(|| input.id.clone());
    validate_name(&name)?;
    let record = store::ProjectRecord {
        id: input.id,
        name,
        limits: input.limits.as_ref().map(limits_json).transpose()?,
        created_at: now_ms() as f64,
    };
    let db = database(env)?;
    if !store::insert_project(&db, &record).await? {
        return Err(GatewayError::Conflict {
            message: format!("A project '{}' already exists.", record.id),
        });
    }
    json_response(&record.to_api(), 201)
}

/// `GET /admin/projects`
async fn list_projects(env: &Env) -> Result<Response, GatewayError> {
    let db = database(env)?;
    let data: Vec<Value> = store::list_projects(&db)
        .await?
        .iter()
        .map(store::ProjectRecord::to_api)
        .collect();
    json_response(&json!({"object": "list", "data": data}), 200)
}

/// `GET /admin/projects/{id}`
async fn get_project(env: &Env, id: &str) -> Result<Response, GatewayError> {
    let db = database(env)?;
    let record = store::get_project(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "project" })?;
    json_response(&record.to_api(), 200)
}

/// `PATCH /admin/projects/{id}` — `{"name"?: string, "limits"?: {..} | null}`.
async fn update_project(req: &mut Request, env: &Env, id: &str) -> Result<Response, GatewayError> {
    let body = read_admin_json(req).await?;
    if let Some(unknown) = body
        .keys()
        .find(|k| !["name", "limits"].contains(&k.as_str()))
    {
        return Err(GatewayError::invalid_param(
            unknown,
            format!("Unknown field '{unknown}'; only name and limits can be changed."),
        ));
    }
    let name = patch_name(&body)?;
    let limits = patch_limits(&body)?;
    let db = database(env)?;
    store::get_project(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "project" })?;
    store::update_project(&db, id, name, limits).await?;
    get_project(env, id).await
}

/// `GET /admin/projects/{id}/budget` — the project's limits and the live
/// state of its `KeyBudget` object (spend of all its keys, open reservations).
async fn project_budget(env: &Env, id: &str) -> Result<Response, GatewayError> {
    let db = database(env)?;
    let record = store::get_project(&db, id)
        .await?
        .ok_or(GatewayError::ResourceNotFound { what: "project" })?;
    let Some(limits) = record.limits() else {
        return json_response(&json!({"project_id": id, "limits": null}), 200);
    };
    let scope = BudgetScope {
        kind: ScopeKind::Project,
        id: id.to_owned(),
        limits,
    };
    let snapshot = crate::handlers::budgets::snapshot(env, &scope).await?;
    json_response(
        &json!({"project_id": id, "limits": scope.limits, "state": snapshot}),
        200,
    )
}

/// Most KV deletes one purge call makes (Workers cap operations per
/// invocation); the answer says whether more remain.
const PURGE_BATCH: usize = 800;

/// `DELETE /admin/cache?key_id=…&model=…` — purges exact- and semantic-cache entries: all,
/// one key's (`key_id`), one route's (`model`, as clients send it), or one
/// key's entries for one route. Deletes up to 800 entries per call and says
/// whether more remain (`"more": true` → call again).
async fn purge_cache(req: &Request, env: &Env) -> Result<Response, GatewayError> {
    let url: Url = req.url().map_err(|_| GatewayError::invalid("Bad URL."))?;
    let mut key_id = None;
    let mut model = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "key_id" => key_id = Some(v.into_owned()),
            "model" => model = Some(v.into_owned()),
            other => {
                return Err(GatewayError::invalid_param(
                    other,
                    format!("Unknown query parameter '{other}'; use key_id and/or model."),
                ))
            }
        }
    }
    let (prefix, route_filter) = match (&key_id, &model) {
        (Some(k), Some(m)) => (cache::kv_route_prefix(k, m), None),
        (Some(k), None) => (cache::kv_tenant_prefix(k), None),
        (None, Some(m)) => (cache::kv_all_prefix(), Some(cache::kv_route_segment(m))),
        (None, None) => (cache::kv_all_prefix(), None),
    };
    let kv = env.kv(CACHE_KV).map_err(|e| {
        console_error!("KV binding {CACHE_KV} is missing: {e}");
        GatewayError::Misconfigured
    })?;
    // Semantic entries live under the same KV prefixes (purged below); a
    // key's vectors in the embedded index go too. Vectors left elsewhere
    // point at purged entries and are dropped when a query finds them.
    if let (Some(k), Ok(c)) = (&key_id, crate::handlers::config(env)) {
        if let Ok(index) = crate::handlers::semantic::Index::open(env, c.semantic.index, k) {
            let route = model.as_deref().map(cache::kv_route_segment);
            if let Err(e) = index.purge(route.as_deref()).await {
                console_error!("semantic index purge failed: {e}");
            }
        }
    }
    let mut deleted = 0usize;
    let mut cursor: Option<String> = None;
    let more = loop {
        let mut list = kv.list().prefix(prefix.clone()).limit(1000);
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let page = list.execute().await.map_err(|e| {
            console_error!("cache purge: list failed: {e}");
            GatewayError::Internal
        })?;
        for k in &page.keys {
            if route_filter
                .as_deref()
                .is_some_and(|r| !cache::kv_name_is_route(&k.name, r))
            {
                continue;
            }
            if deleted >= PURGE_BATCH {
                break;
            }
            if let Err(e) = kv.delete(&k.name).await {
                console_error!("cache purge: delete failed: {e}");
                return Err(GatewayError::Internal);
            }
            deleted += 1;
        }
        if deleted >= PURGE_BATCH {
            break true;
        }
        match page.cursor.filter(|_| !page.list_complete) {
            Some(c) => cursor = Some(c),
            None => break false,
        }
    };
    json_response(&json!({"deleted": deleted, "more": more}), 200)
}

/// `GET /admin/config` — the validated config plus, per provider, where it
/// sends requests and whether its key secret is set (never the value).
fn effective_config(env: &Env) -> Result<Response, GatewayError> {
    let config = config(env)?;
    let providers: Map<String, Value> = config
        .providers
        .iter()
        .map(|(name, p)| {
            let kind = p.kind_name(name).to_owned();
            let secret_name = p.secret_name(name);
            let key_state = match (&secret_name, p.resolved_kind(name)) {
                (_, Some(ResolvedKind::Demo | ResolvedKind::WorkersAiBinding)) => "not_required",
                (Some(s), _) if secret(env, s).is_some() => "set",
                _ => "missing",
            };
            let mut entry = json!({
                "kind": kind,
                "base_url": p.base_url(name),
                "api_key_secret": secret_name,
                "api_key": key_state,
                "models": p.models,
            });
            if let (Some(ResolvedKind::WorkersAiBinding), Some(o)) =
                (p.resolved_kind(name), entry.as_object_mut())
            {
                let present = crate::ai_binding::present(env, p.binding_name());
                o.insert("binding".to_owned(), json!(p.binding_name()));
                o.insert(
                    "binding_state".to_owned(),
                    json!(if present { "set" } else { "missing" }),
                );
            }
            (name.clone(), entry)
        })
        .collect();
    json_response(
        &json!({
            "providers": providers,
            "models": config.models,
            "limits": config.limits,
        }),
        200,
    )
}
