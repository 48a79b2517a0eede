//! The semantic cache's platform seams: the embedder (a configured
//! OpenAI-compatible `/v1/embeddings` provider, or the Workers AI binding)
//! and the vector index (the `SemanticIndex` Durable Object, or a Vectorize
//! binding). Both sit behind one deadline: whatever is slow or failing
//! makes the semantic layer a miss, never an error. Decisions are in
//! `semantic.rs`; this file only moves bytes.

use serde_json::{json, Map, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{console_error, Env, Method, Request, RequestInit};

use crate::bindings::{EMBEDDINGS_AI, SEMANTIC_INDEX, SEMANTIC_VECTORIZE};
use crate::config::{GatewayConfig, SemanticIndexKind};
use crate::handlers::secret;
use crate::http::now_ms;
use crate::ledger::Endpoint;
use crate::providers::{plan, translate_response, Plan};
use crate::routing::Target;
use crate::semantic::{tenant_tag, Match, StoredMeta};
use crate::upstream;

/// The Workers AI model used with the `AI` binding (384 dimensions).
pub const WORKERS_AI_MODEL: &str = "@cf/baai/bge-small-en-v1.5";

/// Candidates fetched per query (the best one that passes the guard is used).
pub const TOP_K: usize = 3;

// The Vectorize binding has no wrapper in workers-rs; these are its documented
// methods (https://developers.cloudflare.com/vectorize/reference/client-api/).
#[wasm_bindgen]
extern "C" {
    type VectorizeIndex;
    #[wasm_bindgen(method, catch)]
    fn query(
        this: &VectorizeIndex,
        vector: &JsValue,
        options: &JsValue,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn upsert(this: &VectorizeIndex, vectors: &JsValue) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch, js_name = deleteByIds)]
    fn delete_by_ids(this: &VectorizeIndex, ids: &JsValue) -> Result<js_sys::Promise, JsValue>;

    // The Workers AI binding's `run`, bound by hand (like Vectorize) so a
    // stand-in with the same method works in tests.
    type AiBinding;
    #[wasm_bindgen(method, catch)]
    fn run(this: &AiBinding, model: &str, input: &JsValue) -> Result<js_sys::Promise, JsValue>;
}

fn js_binding<T: JsCast>(env: &Env, name: &str) -> Option<T> {
    let v = js_sys::Reflect::get(env.as_ref(), &JsValue::from_str(name)).ok()?;
    if v.is_undefined() || v.is_null() {
        return None;
    }
    Some(v.unchecked_into())
}

fn to_js(v: &Value) -> Option<JsValue> {
    js_sys::JSON::parse(&v.to_string()).ok()
}

fn from_js(v: &JsValue) -> Option<Value> {
    let s = js_sys::JSON::stringify(v).ok()?.as_string()?;
    serde_json::from_str(&s).ok()
}

async fn await_js(p: Result<js_sys::Promise, JsValue>) -> Result<Value, String> {
    let p = p.map_err(|e| format!("{e:?}"))?;
    let v = JsFuture::from(p).await.map_err(|e| format!("{e:?}"))?;
    if v.is_undefined() {
        return Ok(Value::Null);
    }
    from_js(&v).ok_or_else(|| "unreadable answer".to_owned())
}

// ---------------------------------------------------------------- embedder

/// Embeds `text` with the configured embedder. `Err` says why (logged).
pub async fn embed(
    env: &Env,
    config: &GatewayConfig,
    text: &str,
    signal: &worker::AbortSignal,
) -> Result<Vec<f32>, String> {
    let embedder = config.semantic.embedder.as_str();
    if embedder == "workers-ai" {
        let ai: AiBinding = js_binding(env, EMBEDDINGS_AI).ok_or("the AI binding is missing")?;
        let input = to_js(&json!({"text": [text]})).ok_or("input")?;
        let out = await_js(ai.run(WORKERS_AI_MODEL, &input)).await?;
        return first_vector(out.get("data").and_then(|d| d.get(0)));
    }
    let (provider, model) = embedder
        .split_once('/')
        .ok_or("semantic.embedder is not provider/model")?;
    let target = Target {
        provider: provider.to_owned(),
        model: model.to_owned(),
    };
    let mut body = Map::new();
    body.insert("model".to_owned(), Value::from(model));
    body.insert("input".to_owned(), Value::from(vec![text]));
    let planned = plan(
        config,
        &target,
        Endpoint::Embeddings,
        body,
        false,
        |n| secret(env, n),
        now_ms(),
    )
    .map_err(|e| gw(&e))?;
    let call = match planned {
        Plan::Http(call) => call,
        Plan::Demo { body, model, .. } => {
            let v = crate::providers::demo::embeddings(&body, &model).map_err(|e| gw(&e))?;
            return first_vector(v.pointer("/data/0/embedding"));
        }
        // A `workers-ai-binding` provider as the embedder.
        Plan::Binding(call) => {
            let crate::ai_binding::RunOutput::Json(bytes) =
                crate::ai_binding::run(env, &call, signal).await?
            else {
                return Err("the embedder answered with a stream".to_owned());
            };
            let (_, value) = crate::providers::translate_binding_response(
                &call,
                Endpoint::Embeddings,
                &bytes,
                "semantic",
                0,
            )
            .map_err(|e| gw(&e))?;
            return first_vector(value.pointer("/data/0/embedding"));
        }
    };
    let resp = upstream::send(&call, signal).await.map_err(|e| gw(&e))?;
    if resp.status_code() != 200 {
        return Err(format!("embedder answered {}", resp.status_code()));
    }
    let bytes = resp
        .read_limited(4 * 1024 * 1024, &call.provider)
        .await
        .map_err(|e| gw(&e))?;
    let (_, value) = translate_response(&call, Endpoint::Embeddings, bytes, "semantic", 0)
        .map_err(|e| gw(&e))?;
    first_vector(value.pointer("/data/0/embedding"))
}

/// A gateway error as a log line (its code and message carry no secrets).
fn gw(e: &crate::error::GatewayError) -> String {
    format!("{}: {}", e.code(), e.message())
}

fn first_vector(v: Option<&Value>) -> Result<Vec<f32>, String> {
    let arr = v
        .and_then(Value::as_array)
        .ok_or("no embedding in the answer")?;
    #[expect(clippy::cast_possible_truncation, reason = "embeddings are f32 values")]
    let out: Vec<f32> = arr
        .iter()
        .filter_map(Value::as_f64)
        .map(|x| x as f32)
        .collect();
    if out.is_empty() || out.len() != arr.len() || out.iter().any(|x| !x.is_finite()) {
        return Err("the embedding is not a vector of numbers".to_owned());
    }
    Ok(out)
}

// ------------------------------------------------------------------- index

/// The configured index for one tenant.
pub enum Index {
    DurableObject(worker::Stub),
    Vectorize(VectorizeIndexHandle, String),
}

pub struct VectorizeIndexHandle(VectorizeIndex);

impl Index {
    pub fn open(env: &Env, kind: SemanticIndexKind, tenant: &str) -> Result<Self, String> {
        let tag = tenant_tag(tenant);
        match kind {
            SemanticIndexKind::DurableObject => {
                let ns = env
                    .durable_object(SEMANTIC_INDEX)
                    .map_err(|e| e.to_string())?;
                let stub = ns
                    .id_from_name(&tag)
                    .and_then(|id| id.get_stub())
                    .map_err(|e| e.to_string())?;
                Ok(Self::DurableObject(stub))
            }
            SemanticIndexKind::Vectorize => {
                let v: VectorizeIndex = js_binding(env, SEMANTIC_VECTORIZE)
                    .ok_or("the SEMANTIC_VECTORIZE binding is missing")?;
                Ok(Self::Vectorize(VectorizeIndexHandle(v), tag))
            }
        }
    }

    async fn call_do(stub: &worker::Stub, path: &str, body: &Value) -> Result<Value, String> {
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(JsValue::from_str(&body.to_string())));
        let req = Request::new_with_init(&format!("https://semantic-index{path}"), &init)
            .map_err(|e| e.to_string())?;
        let mut resp = stub
            .fetch_with_request(req)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status_code() != 200 {
            return Err(format!("index answered {}", resp.status_code()));
        }
        resp.json::<Value>().await.map_err(|e| e.to_string())
    }

    /// The nearest vectors in `partition`.
    pub async fn query(
        &self,
        partition: &str,
        vector: &[f32],
        now_secs: u64,
    ) -> Result<Vec<Match>, String> {
        let answer = match self {
            Self::DurableObject(stub) => Self::call_do(
                stub,
                "/query",
                &json!({"partition": partition, "vector": vector, "top_k": TOP_K, "now": now_secs}),
            )
            .await?,
            Self::Vectorize(v, tag) => {
                // The namespace is the partition; the tenant filter (an
                // indexed metadata property) is a second fence.
                let options = json!({
                    "topK": TOP_K,
                    "namespace": partition,
                    "returnMetadata": "all",
                    "returnValues": false,
                    "filter": {"tenant": tag},
                });
                let vector = to_js(&json!(vector)).ok_or("vector")?;
                let options = to_js(&options).ok_or("options")?;
                await_js(v.0.query(&vector, &options)).await?
            }
        };
        let matches = answer
            .get("matches")
            .and_then(Value::as_array)
            .ok_or("no matches in the answer")?;
        Ok(matches
            .iter()
            .filter_map(|m| {
                #[expect(clippy::cast_possible_truncation, reason = "a cosine fits f32")]
                let score = m.get("score")?.as_f64()? as f32;
                Some(Match {
                    id: m.get("id")?.as_str()?.to_owned(),
                    score,
                    meta: m
                        .get("metadata")
                        .and_then(|v| serde_json::from_value::<StoredMeta>(v.clone()).ok()),
                })
            })
            .collect())
    }

    pub async fn upsert(
        &self,
        id: &str,
        partition: &str,
        route: &str,
        vector: &[f32],
        meta: &StoredMeta,
    ) -> Result<(), String> {
        match self {
            Self::DurableObject(stub) => {
                Self::call_do(stub, "/upsert", &json!({"id": id, "partition": partition, "route": route, "vector": vector, "metadata": meta}))
                    .await
                    .map(|_| ())
            }
            Self::Vectorize(v, _) => {
                let vectors = json!([{"id": id, "values": vector, "namespace": partition, "metadata": meta}]);
                let vectors = to_js(&vectors).ok_or("vectors")?;
                await_js(v.0.upsert(&vectors)).await.map(|_| ())
            }
        }
    }

    pub async fn delete(&self, ids: &[String]) -> Result<(), String> {
        match self {
            Self::DurableObject(stub) => Self::call_do(stub, "/delete", &json!({ "ids": ids }))
                .await
                .map(|_| ()),
            Self::Vectorize(v, _) => {
                let ids = to_js(&json!(ids)).ok_or("ids")?;
                await_js(v.0.delete_by_ids(&ids)).await.map(|_| ())
            }
        }
    }

    /// Drops a tenant's vectors (all, or one route's). Vectorize cannot
    /// delete by metadata: there the purged KV entries make its vectors
    /// dangling, and each is deleted when a query next finds it.
    pub async fn purge(&self, route: Option<&str>) -> Result<(), String> {
        match self {
            Self::DurableObject(stub) => Self::call_do(stub, "/purge", &json!({ "route": route }))
                .await
                .map(|_| ()),
            Self::Vectorize(..) => Ok(()),
        }
    }
}

/// Records a would-be hit in shadow mode (D1 `semantic_shadow`).
#[expect(clippy::too_many_arguments, reason = "one row's columns")]
pub async fn log_shadow(
    db: &worker::D1Database,
    request_id: &str,
    key_id: &str,
    model: &str,
    candidate: &str,
    similarity: f32,
    threshold: f32,
    verdict: &str,
) {
    let values = [
        JsValue::from_str(request_id),
        JsValue::from_str(key_id),
        JsValue::from_f64(now_ms() as f64),
        JsValue::from_str(model),
        JsValue::from_str(candidate),
        JsValue::from_f64(f64::from(similarity)),
        JsValue::from_f64(f64::from(threshold)),
        JsValue::from_str(verdict),
    ];
    let stmt = db
        .prepare(
            "INSERT OR IGNORE INTO semantic_shadow (request_id, key_id, created_at, model, candidate_id, similarity, threshold, verdict) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(&values);
    let result = match stmt {
        Ok(s) => s.run().await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        console_error!("semantic shadow log failed: {e}");
    }
}
