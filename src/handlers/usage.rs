//! The admin usage API over the D1 ledger (read-only): totals, time series,
//! groupings and the most expensive requests. The SQL and the arithmetic
//! live in `analytics.rs`; this file runs the statements and shapes JSON.

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use wasm_bindgen::JsValue;
use worker::{console_error, D1Database, D1Result, Env, Request, Response, Url};

use crate::analytics::{
    self, histogram_rows, top_groups, Dimension, Filter, KeyedRow, Metrics, Percentiles, Query,
    Statement,
};
use crate::error::GatewayError;
use crate::handlers::database;
use crate::http::{json_response, now_ms};
use crate::router::UsageView;

fn failed(what: &str, e: &worker::Error) -> GatewayError {
    console_error!("usage query ({what}) failed: {e}");
    GatewayError::Internal
}

/// Runs statements in one D1 batch (one transaction: a roll-up running at
/// the same time cannot make a row count twice or not at all).
pub async fn batch(
    db: &D1Database,
    statements: &[Statement],
) -> Result<Vec<D1Result>, GatewayError> {
    let prepared = statements
        .iter()
        .map(|s| {
            let values: Vec<JsValue> = s.values.iter().map(crate::store::js).collect();
            db.prepare(&s.sql).bind(&values)
        })
        .collect::<worker::Result<Vec<_>>>()
        .map_err(|e| failed("bind", &e))?;
    db.batch(prepared).await.map_err(|e| failed("batch", &e))
}

fn rows<T: DeserializeOwned>(results: &[D1Result], i: usize) -> Result<Vec<T>, GatewayError> {
    results
        .get(i)
        .ok_or(GatewayError::Internal)?
        .results::<T>()
        .map_err(|e| failed("decode", &e))
}

fn single(results: &[D1Result], i: usize) -> Result<Metrics, GatewayError> {
    Ok(rows::<Metrics>(results, i)?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// Totals over a filter (from the aggregates).
pub async fn totals(db: &D1Database, f: &Filter) -> Result<Metrics, GatewayError> {
    let results = batch(db, &[analytics::totals_sql(f)]).await?;
    single(&results, 0)
}

/// Latency and time-to-first-token percentiles over the retained ledger.
pub async fn percentiles(
    db: &D1Database,
    f: &Filter,
) -> Result<(Percentiles, Percentiles), GatewayError> {
    let results = batch(db, &analytics::histogram_sql(f)).await?;
    let latency = histogram_rows(&rows::<Value>(&results, 0)?);
    let ttft = histogram_rows(&rows::<Value>(&results, 1)?);
    Ok((Percentiles::of(&latency), Percentiles::of(&ttft)))
}

/// Groups by a dimension, most expensive first, cut to `limit`.
pub async fn groups(
    db: &D1Database,
    f: &Filter,
    by: Dimension,
    limit: u32,
) -> Result<Vec<(String, Metrics)>, GatewayError> {
    let results = batch(db, &[analytics::groups_sql(f, by)]).await?;
    let groups: Vec<KeyedRow<String>> = rows(&results, 0)?;
    Ok(top_groups(
        groups.into_iter().map(|r| (r.k, r.m)).collect(),
        limit,
    ))
}

fn metrics_json(m: &Metrics) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let (Some(o), Ok(Value::Object(d))) = (v.as_object_mut(), serde_json::to_value(m.derived()))
    {
        o.insert("errors".to_owned(), json!(m.errors()));
        o.extend(d);
    }
    v
}

fn range_json(q: &Query) -> Value {
    json!({"from": q.filter.from_ms, "to": q.filter.to_ms, "filter": {
        "key_id": q.filter.key_id, "provider": q.filter.provider,
        "model": q.filter.model, "feature": q.filter.feature,
    }})
}

/// `GET /admin/usage`, `/admin/usage/series`, `/admin/usage/groups`,
/// `/admin/usage/top`, `/admin/usage/quality` (quality samples: per model,
/// per bucket, the latest `limit`) — query parameters: `from`, `to` (ms since the epoch;
/// default the last 24 h), `key_id`, `model` (`provider/model`), `provider`,
/// `feature`; `bucket=hour|day` (series), `by=key|team|user|feature|provider|model`
/// and `limit` (groups, top).
pub async fn handle(req: &Request, env: &Env, view: UsageView) -> Result<Response, GatewayError> {
    let url: Url = req.url().map_err(|_| GatewayError::invalid("Bad URL."))?;
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let q = analytics::parse_query(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        now_ms(),
    )
    .map_err(|(param, why)| {
        GatewayError::invalid_param(&param, format!("Query parameter '{param}' {why}."))
    })?;
    let db = database(env)?;
    let mut out = range_json(&q);
    let o = out.as_object_mut().ok_or(GatewayError::Internal)?;
    match view {
        UsageView::Totals => {
            let m = totals(&db, &q.filter).await?;
            let (latency, ttft) = percentiles(&db, &q.filter).await?;
            o.insert("object".into(), json!("usage.totals"));
            o.insert("totals".into(), metrics_json(&m));
            o.insert("latency_ms".into(), json!(latency));
            o.insert("ttft_ms".into(), json!(ttft));
        }
        UsageView::Series => {
            let results = batch(&db, &[analytics::series_sql(&q.filter, q.bucket)]).await?;
            let series: Vec<KeyedRow<u64>> = rows(&results, 0)?;
            let points: Vec<Value> = series
                .into_iter()
                .map(|KeyedRow { k: t, m }| {
                    let mut p = metrics_json(&m);
                    if let Some(po) = p.as_object_mut() {
                        po.insert("t".into(), json!(t));
                    }
                    p
                })
                .collect();
            o.insert("object".into(), json!("usage.series"));
            o.insert("bucket_ms".into(), json!(q.bucket.ms()));
            o.insert("points".into(), Value::Array(points));
        }
        UsageView::Groups => {
            let groups = groups(&db, &q.filter, q.by, q.limit).await?;
            let names = if q.by == Dimension::Key {
                key_names(&db).await?
            } else {
                Map::new()
            };
            let data: Vec<Value> = groups
                .into_iter()
                .map(|(k, m)| {
                    let mut g = metrics_json(&m);
                    if let Some(go) = g.as_object_mut() {
                        if let Some(name) = names.get(&k) {
                            go.insert("name".into(), name.clone());
                        }
                        go.insert("key".into(), json!(k));
                    }
                    g
                })
                .collect();
            o.insert("object".into(), json!("usage.groups"));
            o.insert("by".into(), json!(q.by.as_str()));
            o.insert("groups".into(), Value::Array(data));
        }
        UsageView::Top => {
            let s = analytics::top_sql(&q.filter, q.limit);
            let results = batch(&db, std::slice::from_ref(&s)).await?;
            let mut data: Vec<Value> = rows(&results, 0)?;
            for row in &mut data {
                // The metadata object, not its JSON text.
                if let Some(m) = row.get("metadata").and_then(Value::as_str) {
                    let parsed = serde_json::from_str::<Value>(m).unwrap_or(Value::Null);
                    if let Some(r) = row.as_object_mut() {
                        r.insert("metadata".into(), parsed);
                    }
                }
            }
            o.insert("object".into(), json!("usage.top"));
            o.insert("data".into(), Value::Array(data));
        }
        UsageView::Quality => {
            let statements = crate::quality::usage_sql(&q.filter, q.bucket.ms(), q.limit);
            let results = batch(&db, &statements).await?;
            o.insert("object".into(), json!("usage.quality"));
            o.insert("bucket_ms".into(), json!(q.bucket.ms()));
            o.insert("models".into(), Value::Array(rows(&results, 0)?));
            o.insert("points".into(), Value::Array(rows(&results, 1)?));
            o.insert("recent".into(), Value::Array(rows(&results, 2)?));
        }
    }
    json_response(&out, 200)
}

/// Key id → name, for labelling the per-key table.
pub async fn key_names(db: &D1Database) -> Result<Map<String, Value>, GatewayError> {
    let rows: Vec<Value> = db
        .prepare("SELECT id, name FROM virtual_keys ORDER BY created_at DESC LIMIT 1000")
        .all()
        .await
        .and_then(|r| r.results())
        .map_err(|e| failed("key names", &e))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let id = r.get("id")?.as_str()?.to_owned();
            Some((id, r.get("name")?.clone()))
        })
        .collect())
}
