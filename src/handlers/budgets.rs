//! The worker side of a key's `KeyBudget` Durable Object: admit before the
//! first upstream attempt, settle after the response. A budget that cannot be
//! checked rejects the request (fail closed, B2); a settle that fails is
//! logged and the reservation expires by alarm.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::{console_error, Env, Method, Request, RequestInit};

use crate::bindings::BUDGETS;
use crate::budget::{Admission, Limits, Rejection, Reservation};
use crate::error::GatewayError;

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

/// Replaces the reservation by what the request really cost.
pub async fn settle(env: &Env, key_id: &str, reservation_id: &str, micros: u64, tokens: u64) {
    let body = json!({"id": reservation_id, "micros": micros, "tokens": tokens});
    if let Err(e) = call::<Value>(env, key_id, "/settle", &body).await {
        console_error!("budget settle for {key_id} failed (the reservation will expire): {e}");
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
