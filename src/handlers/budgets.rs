//! The worker side of the `KeyBudget` Durable Objects — one per key with
//! limits and one per project (team) with limits: admit before the first
//! upstream attempt in every scope, settle after the response in every scope.
//! A budget that cannot be checked rejects the request (fail closed, B2); a
//! settle that fails is logged and the reservation expires by alarm.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::{console_error, Env, Method, Request, RequestInit};

use crate::bindings::BUDGETS;
use crate::budget::{Admission, Alert, Rejection, Reservation};
use crate::error::GatewayError;
use crate::keys::{BudgetScope, ScopeKind};
use crate::ledger::SqlValue;

async fn call<T: DeserializeOwned>(
    env: &Env,
    object_name: &str,
    path: &str,
    body: &Value,
) -> Result<T, String> {
    let namespace = env.durable_object(BUDGETS).map_err(|e| e.to_string())?;
    let stub = namespace
        .id_from_name(object_name)
        .and_then(|id| id.get_stub())
        .map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(wasm_bindgen::JsValue::from_str(&body.to_string())));
    let req = Request::new_with_init(&format!("https://budget{path}"), &init)
        .map_err(|e| e.to_string())?;
    let mut resp = stub
        .fetch_with_request(req)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status_code() != 200 {
        return Err(format!("status {}", resp.status_code()));
    }
    resp.json::<T>().await.map_err(|e| e.to_string())
}

#[derive(serde::Deserialize)]
struct AdmitAnswer {
    reservation: Option<Reservation>,
    rejection: Option<Rejection>,
}

/// Reserves the request's worst case in one scope, or says which limit
/// refuses it.
async fn admit_one(
    env: &Env,
    scope: &BudgetScope,
    admission: &Admission,
) -> Result<Reservation, GatewayError> {
    let name = scope.object_name();
    let answer: AdmitAnswer = call(
        env,
        &name,
        "/admit",
        &json!({"limits": scope.limits, "admission": admission}),
    )
    .await
    .map_err(|e| {
        console_error!("budget admit for {name} failed: {e}");
        GatewayError::Misconfigured
    })?;
    match (answer.reservation, answer.rejection) {
        (Some(r), _) => Ok(r),
        (None, Some(rejection)) => Err(match scope.kind {
            ScopeKind::Key => rejection.into(),
            ScopeKind::Project => rejection.for_project(&scope.id).into(),
        }),
        (None, None) => Err(GatewayError::Internal),
    }
}

/// Reserves the request's worst case in every scope (key first, then its
/// project). When one refuses, the reservations already made are released,
/// so a request refused by its project costs its key nothing — not even an
/// RPM slot. Each object is atomic on its own; across objects the worst case
/// is that two scopes briefly both hold a reservation for a request one of
/// them then refuses, which only ever errs toward refusing.
pub async fn admit(
    env: &Env,
    scopes: &[BudgetScope],
    admission: &Admission,
) -> Result<(), GatewayError> {
    for (i, scope) in scopes.iter().enumerate() {
        if let Err(e) = admit_one(env, scope, admission).await {
            for held in scopes.iter().take(i) {
                release(env, held, &admission.reservation_id).await;
            }
            return Err(e);
        }
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct ReleaseAnswer {
    #[allow(dead_code)]
    released: bool,
}

/// Withdraws a reservation that never went upstream. A failure is logged:
/// the reservation then expires by alarm, charging nothing.
async fn release(env: &Env, scope: &BudgetScope, reservation_id: &str) {
    let name = scope.object_name();
    if let Err(e) =
        call::<ReleaseAnswer>(env, &name, "/release", &json!({ "id": reservation_id })).await
    {
        console_error!("budget release for {name} failed (the reservation will expire): {e}");
    }
}

#[derive(serde::Deserialize)]
struct SettleAnswer {
    #[serde(default)]
    alerts: Vec<Alert>,
}

/// Replaces the reservation by what the request really cost; returns the
/// threshold alerts it raised.
pub async fn settle(
    env: &Env,
    scope: &BudgetScope,
    reservation_id: &str,
    cost: (u64, u64),
    thresholds: &[u8],
) -> Vec<Alert> {
    let (micros, tokens) = cost;
    let name = scope.object_name();
    let body = json!({
        "id": reservation_id, "micros": micros, "tokens": tokens,
        "limits": scope.limits, "thresholds": thresholds,
    });
    match call::<SettleAnswer>(env, &name, "/settle", &body).await {
        Ok(a) => a.alerts,
        Err(e) => {
            console_error!("budget settle for {name} failed (the reservation will expire): {e}");
            Vec::new()
        }
    }
}

/// Records alerts in D1 (once per scope, limit, threshold and window) and
/// POSTs each new one to the operator's webhooks. A project's alerts are
/// recorded under its object name (`project:<id>`) and say `"scope":
/// "project"`.
pub async fn deliver_alerts(
    db: &worker::D1Database,
    webhooks: &[String],
    scope: &BudgetScope,
    alerts: &[Alert],
    now: u64,
) {
    let recorded_as = scope.object_name();
    for alert in alerts {
        let mut payload = json!({
            "type": "budget_threshold",
            "scope": scope.kind,
            "limit": alert.limit.as_str(),
            "threshold_pct": alert.threshold_pct,
            "spent": alert.spent,
            "limit_value": alert.limit_value,
            "window_start_ms": alert.window_start_ms,
            "resets_at_ms": alert.resets_at_ms,
            "at_ms": now,
        });
        let id_field = match scope.kind {
            ScopeKind::Key => "key_id",
            ScopeKind::Project => "project_id",
        };
        if let Some(o) = payload.as_object_mut() {
            o.insert(id_field.to_owned(), Value::String(scope.id.clone()));
        }
        let values = [
            SqlValue::Text(recorded_as.clone()),
            SqlValue::Text(alert.limit.as_str().to_owned()),
            SqlValue::Int(i64::from(alert.threshold_pct)),
            alert.window_start_ms.into(),
            Some(now).into(),
            SqlValue::Text(payload.to_string()),
        ];
        let inserted = crate::store::insert_alert(db, &values).await;
        if !inserted {
            // Already recorded (a replay): never notify twice.
            continue;
        }
        crate::handlers::cron::post(webhooks, &payload, "budget alert").await;
    }
}

/// A scope's live budget state (for the admin API).
pub async fn snapshot(env: &Env, scope: &BudgetScope) -> Result<Value, GatewayError> {
    let name = scope.object_name();
    call(env, &name, "/snapshot", &json!({"limits": scope.limits}))
        .await
        .map_err(|e| {
            console_error!("budget snapshot for {name} failed: {e}");
            GatewayError::Internal
        })
}

/// The largest share of any budget used across the request's scopes (key,
/// project), for the `budget` routing strategy; `None` without budgets. A
/// state that cannot be read counts as unknown (`None`): routing then uses
/// the first tier, and admission still enforces every limit.
pub async fn used_fraction(env: &Env, scopes: &[BudgetScope]) -> Option<f64> {
    let mut used: Option<f64> = None;
    for scope in scopes {
        let snapshot: Option<crate::budget::BudgetSnapshot> = snapshot(env, scope)
            .await
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
        if let Some(s) = snapshot {
            used = Some(used.unwrap_or(0.0).max(s.used_fraction()));
        }
    }
    used
}
