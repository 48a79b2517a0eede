//! `GET /healthz`: liveness, and whether the gateway is configured to serve
//! (a misconfigured gateway answers 503 so a deploy check catches it). Says
//! nothing else about the configuration.

use serde_json::json;
use worker::{Env, Response};

use crate::error::GatewayError;
use crate::handlers::{admin_token, config, database};
use crate::http::json_response;

/// `GET /healthz`
pub fn handle(env: &Env) -> Result<Response, GatewayError> {
    let ready = config(env).is_ok() && admin_token(env).is_ok() && database(env).is_ok();
    if ready {
        json_response(&json!({"status": "ok"}), 200)
    } else {
        json_response(&json!({"status": "misconfigured"}), 503)
    }
}
