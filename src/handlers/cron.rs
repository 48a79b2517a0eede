//! The cron trigger (`scheduled` event, `[triggers] crons` in wrangler.toml).
//! Every run, whatever its cron expression: operational alerts, the weekly
//! summary when due, and one bounded step of retention. Each part is
//! idempotent — alerts and summaries are recorded in D1's `alerts` table
//! under a unique (condition, threshold, window) before they are sent, and
//! a roll-up moves rows into `usage_daily` and deletes them in one
//! transaction — so an extra or repeated run sends and counts nothing twice.
//! The decisions are in `ops.rs`.

use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{console_error, console_log, D1Database, Env, Method, Request, RequestInit};

use crate::analytics::{Dimension, Filter};
use crate::config::GatewayConfig;
use crate::handlers::usage;
use crate::handlers::{config, database};
use crate::ledger::SqlValue;
use crate::ops;

/// `key_id` of operational alert rows (budget alerts carry a real key id).
const OPS_SCOPE: &str = "*";

/// One cron run at `now_ms` (the event's scheduled time).
pub async fn run(env: &Env, now_ms: u64) {
    let (config, db) = match (config(env), database(env)) {
        (Ok(c), Ok(d)) => (c, d),
        _ => {
            console_error!("cron: gateway misconfigured; nothing done");
            return;
        }
    };
    let alerts = match evaluate_alerts(&db, &config, now_ms).await {
        Ok(n) => json!(n),
        Err(e) => json!({"error": e}),
    };
    let weekly = match weekly_summary(&db, &config, now_ms).await {
        Ok(sent) => json!(sent),
        Err(e) => json!({"error": e}),
    };
    let (deleted, compacted) = match retention(&db, &config, now_ms).await {
        Ok((d, c)) => (json!(d), json!(c)),
        Err(e) => (json!({"error": e}), Value::Null),
    };
    console_log!(
        "{}",
        json!({"level": "info", "event": "cron", "at_ms": now_ms,
               "alerts_sent": alerts, "weekly_summary_sent": weekly,
               "ledger_rows_deleted": deleted, "hour_aggregates_compacted": compacted})
    );
}

fn text(e: &impl std::fmt::Display) -> String {
    e.to_string()
}

/// The usage queries log their own failure; the run summary names the step.
fn gw(e: &crate::error::GatewayError) -> String {
    e.code().to_owned()
}

/// Records an alert once per (kind, threshold, window); true when new.
async fn record(
    db: &D1Database,
    kind: &str,
    threshold: i64,
    window: u64,
    now: u64,
    payload: &Value,
) -> bool {
    let values = [
        SqlValue::Text(OPS_SCOPE.to_owned()),
        SqlValue::Text(kind.to_owned()),
        SqlValue::Int(threshold),
        Some(window).into(),
        Some(now).into(),
        SqlValue::Text(payload.to_string()),
    ];
    crate::store::insert_alert(db, &values).await
}

/// POSTs a payload to every configured webhook (redirects not followed);
/// failures are logged under `what`, never retried.
pub(crate) async fn post(webhooks: &[String], payload: &Value, what: &str) {
    for url in webhooks {
        let headers = worker::Headers::new();
        crate::http::set_header(&headers, "content-type", "application/json");
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_redirect(worker::RequestRedirect::Manual)
            .with_body(Some(JsValue::from_str(&payload.to_string())));
        let sent = match Request::new_with_init(url, &init) {
            Ok(req) => worker::Fetch::Request(req)
                .send()
                .await
                .map(|r| r.status_code()),
            Err(e) => Err(e),
        };
        match sent {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(status) => console_error!("{what} webhook answered {status}"),
            Err(e) => console_error!("{what} webhook failed: {e}"),
        }
    }
}

async fn evaluate_alerts(
    db: &D1Database,
    config: &GatewayConfig,
    now: u64,
) -> Result<usize, String> {
    let cfg = &config.alerts.ops;
    if cfg.daily_spend_usd.is_none()
        && cfg.error_rate_pct.is_none()
        && cfg.p99_latency_ms.is_none()
        && cfg.fallback_rate_pct.is_none()
    {
        return Ok(0);
    }
    let w = ops::windows(now, cfg.window_minutes);
    let today = Filter {
        from_ms: w.day_start_ms,
        to_ms: now + 1,
        ..Default::default()
    };
    let recent = Filter {
        from_ms: w.trailing_from_ms,
        to_ms: now + 1,
        ..Default::default()
    };
    let today_m = usage::totals(db, &today).await.map_err(|e| gw(&e))?;
    let recent_m = usage::totals(db, &recent).await.map_err(|e| gw(&e))?;
    let latency = if cfg.p99_latency_ms.is_some() {
        usage::percentiles(db, &recent).await.map_err(|e| gw(&e))?.0
    } else {
        ops_default_percentiles()
    };
    let mut sent = 0;
    for alert in ops::evaluate(cfg, now, &today_m, &recent_m, &latency) {
        let mut payload = serde_json::to_value(&alert).map_err(|e| text(&e))?;
        if let Some(o) = payload.as_object_mut() {
            o.insert("at_ms".into(), json!(now));
        }
        let kind = format!("ops:{}", alert.condition);
        if record(
            db,
            &kind,
            alert.threshold_key(),
            alert.window_start_ms,
            now,
            &payload,
        )
        .await
        {
            post(&config.alerts.webhook_urls, &payload, "cron: ops alert").await;
            sent += 1;
        }
    }
    Ok(sent)
}

fn ops_default_percentiles() -> crate::analytics::Percentiles {
    crate::analytics::Percentiles::default()
}

async fn weekly_summary(db: &D1Database, config: &GatewayConfig, now: u64) -> Result<bool, String> {
    let Some(ops::WeeklyWindow {
        from_ms: from,
        to_ms: to,
        key_ms,
    }) = ops::weekly_due(&config.alerts.ops, now)
    else {
        return Ok(false);
    };
    // Already sent this week: skip the queries.
    let exists: Option<Value> = db
        .prepare("SELECT 1 AS x FROM alerts WHERE key_id = ?1 AND limit_kind = 'weekly_summary' AND window_start = ?2")
        .bind(&[JsValue::from_str(OPS_SCOPE), crate::store::js(&Some(key_ms).into())])
        .map_err(|e| text(&e))?
        .first(None)
        .await
        .map_err(|e| text(&e))?;
    if exists.is_some() {
        return Ok(false);
    }
    let f = Filter {
        from_ms: from,
        to_ms: to,
        ..Default::default()
    };
    let totals = usage::totals(db, &f).await.map_err(|e| gw(&e))?;
    let keys = usage::groups(db, &f, Dimension::Key, 5)
        .await
        .map_err(|e| gw(&e))?;
    let models = usage::groups(db, &f, Dimension::Model, 5)
        .await
        .map_err(|e| gw(&e))?;
    let names = usage::key_names(db).await.map_err(|e| gw(&e))?;
    let label = |id: &String| match names.get(id).and_then(Value::as_str) {
        Some(name) => format!("{name} ({id})"),
        None => id.clone(),
    };
    let payload = ops::weekly_payload(
        from,
        to,
        &totals,
        keys.iter()
            .map(|(k, m)| ops::consumer(label(k), m))
            .collect(),
        models
            .iter()
            .map(|(k, m)| ops::consumer(k.clone(), m))
            .collect(),
        now,
    );
    if record(db, "weekly_summary", 0, key_ms, now, &payload).await {
        post(
            &config.alerts.webhook_urls,
            &payload,
            "cron: weekly summary",
        )
        .await;
        return Ok(true);
    }
    Ok(false)
}

/// Deletes ledger rows older than the retention age (a bounded number of
/// batches per run; their usage is already in the aggregates) and compacts
/// older hour aggregates into days; returns (rows deleted, hour rows compacted).
async fn retention(
    db: &D1Database,
    config: &GatewayConfig,
    now: u64,
) -> Result<(u64, u64), String> {
    let r = &config.retention;
    let cutoff = ops::retention_cutoff(r, now);
    let cut = crate::store::js(&Some(cutoff).into());
    let mut moved = 0u64;
    for _ in 0..r.max_batches {
        let boundary: Option<f64> = db
            .prepare(ops::BATCH_BOUNDARY_SQL)
            .bind(&[
                cut.clone(),
                JsValue::from_f64(f64::from(r.batch_rows.saturating_sub(1))),
            ])
            .map_err(|e| text(&e))?
            .first(Some("t"))
            .await
            .map_err(|e| text(&e))?;
        let boundary = match boundary {
            Some(b) => Some(b),
            None => db
                .prepare(ops::LAST_BEFORE_SQL)
                .bind(std::slice::from_ref(&cut))
                .map_err(|e| text(&e))?
                .first::<Option<f64>>(Some("t"))
                .await
                .map_err(|e| text(&e))?
                .flatten(),
        };
        let Some(boundary) = boundary else {
            break;
        };
        let b = JsValue::from_f64(boundary);
        let mut statements = vec![db
            .prepare(ops::DELETE_ATTEMPTS_SQL)
            .bind(std::slice::from_ref(&b))
            .map_err(|e| text(&e))?];
        for sql in ops::DELETE_DEPENDENTS_SQL {
            statements.push(
                db.prepare(sql)
                    .bind(std::slice::from_ref(&b))
                    .map_err(|e| text(&e))?,
            );
        }
        // Last: its change count is the batch's count of ledger rows.
        statements.push(
            db.prepare(ops::DELETE_REQUESTS_SQL)
                .bind(&[b])
                .map_err(|e| text(&e))?,
        );
        let results = db.batch(statements).await.map_err(|e| text(&e))?;
        let deleted = results
            .last()
            .and_then(|r| r.meta().ok().flatten())
            .and_then(|m| m.changes)
            .unwrap_or(0);
        moved += deleted as u64;
        if deleted == 0 {
            break;
        }
    }
    // Hour aggregates of whole days before the cutoff become day rows.
    let day = crate::store::js(&Some(ops::compaction_cutoff(r, now)).into());
    let statements = vec![
        db.prepare(ops::COMPACT_SQL)
            .bind(std::slice::from_ref(&day))
            .map_err(|e| text(&e))?,
        db.prepare(ops::DELETE_COMPACTED_SQL)
            .bind(std::slice::from_ref(&day))
            .map_err(|e| text(&e))?,
    ];
    let results = db.batch(statements).await.map_err(|e| text(&e))?;
    let compacted = results
        .get(1)
        .and_then(|r| r.meta().ok().flatten())
        .and_then(|m| m.changes)
        .unwrap_or(0);
    Ok((moved, compacted as u64))
}
