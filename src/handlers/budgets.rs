//! The worker side of a key's `KeyBudget` Durable Object: admit before the
//! first upstream attempt, settle after the response. A budget that cannot be
//! checked rejects the request (fail closed, B2); a settle that fails is
//! logged and the reservation expires by alarm.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::{console_error, Env, Method, Request, RequestInit};

use crate::bindings::BUDGETS;
use crate::budget::{Admission, Alert, Limits, Rejection, Reservation};
use crate::error::GatewayError;
use crate::ledger::SqlValue;

async fn call<T: DeserializeOwned>(
    env: &Env,
    key_id: &str,
    path: &str,
    body: &Value,
) -> Result<T, String> {
    let namespace = env.durable_object(BUDGETS).map_err(|e| e.to_string())?;
    let stub = namespace
        .id_from_name(key_id)
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

/// Reserves the request's worst case, or says which limit refuses it.
pub async fn admit(
    env: &Env,
    key_id: &str,
    limits: &Limits,
    admission: Admission,
) -> Result<Reservation, GatewayError> {
    let answer: AdmitAnswer = call(
        env,
        key_id,
        "/admit",
        &json!({"limits": limits, "admission": admission}),
    )
    .await
    .map_err(|e| {
        console_error!("budget admit for {key_id} failed: {e}");
        GatewayError::Misconfigured
    })?;
    match (answer.reservation, answer.rejection) {
        (Some(r), _) => Ok(r),
        (None, Some(rejection)) => Err(rejection.into()),
        (None, None) => Err(GatewayError::Internal),
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
    key_id: &str,
    reservation_id: &str,
    cost: (u64, u64),
    limits: &Limits,
    thresholds: &[u8],
) -> Vec<Alert> {
    let (micros, tokens) = cost;
    let body = json!({
        "id": reservation_id, "micros": micros, "tokens": tokens,
        "limits": limits, "thresholds": thresholds,
    });
    match call::<SettleAnswer>(env, key_id, "/settle", &body).await {
        Ok(a) => a.alerts,
        Err(e) => {
            console_error!("budget settle for {key_id} failed (the reservation will expire): {e}");
            Vec::new()
        }
    }
}

/// Records alerts in D1 (once per key, limit, threshold and window) and
/// POSTs each new one to the operator's webhooks.
pub async fn deliver_alerts(
    db: &worker::D1Database,
    webhooks: &[String],
    key_id: &str,
    alerts: &[Alert],
    now: u64,
) {
    for alert in alerts {
        let payload = json!({
            "type": "budget_threshold",
            "key_id": key_id,
            "limit": alert.limit.as_str(),
            "threshold_pct": alert.threshold_pct,
            "spent": alert.spent,
            "limit_value": alert.limit_value,
            "window_start_ms": alert.window_start_ms,
            "resets_at_ms": alert.resets_at_ms,
            "at_ms": now,
        });
        let values = [
            SqlValue::Text(key_id.to_owned()),
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
        for url in webhooks {
            let mut init = RequestInit::new();
            let headers = worker::Headers::new();
            crate::http::set_header(&headers, "content-type", "application/json");
            init.with_method(Method::Post)
                .with_headers(headers)
                .with_redirect(worker::RequestRedirect::Manual)
                .with_body(Some(wasm_bindgen::JsValue::from_str(&payload.to_string())));
            let sent = match Request::new_with_init(url, &init) {
                Ok(req) => worker::Fetch::Request(req)
                    .send()
                    .await
                    .map(|r| r.status_code()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(status) if (200..300).contains(&status) => {}
                Ok(status) => console_error!("alert webhook answered {status}"),
                Err(e) => console_error!("alert webhook failed: {e}"),
            }
        }
    }
}

/// The key's live budget state (for the admin API).
pub async fn snapshot(env: &Env, key_id: &str, limits: &Limits) -> Result<Value, GatewayError> {
    call(env, key_id, "/snapshot", &json!({"limits": limits}))
        .await
        .map_err(|e| {
            console_error!("budget snapshot for {key_id} failed: {e}");
            GatewayError::Internal
        })
}
