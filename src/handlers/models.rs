//! `GET /v1/models`: the model ids this key may use — configured aliases and
//! each provider's listed models as `"provider/model"` — in OpenAI's list shape.

use serde_json::json;
use worker::{Env, Request, Response};

use crate::error::GatewayError;
use crate::handlers::{authenticate_key, config};
use crate::http::json_response;
use crate::routing::{listed_models, resolve};

/// `GET /v1/models`
pub async fn handle(req: &Request, env: &Env) -> Result<Response, GatewayError> {
    let grant = authenticate_key(req.headers(), env).await?;
    let config = config(env)?;
    let data: Vec<_> = listed_models(&config)
        .into_iter()
        .filter(|(id, _)| {
            resolve(&config, id)
                .map(|t| grant.may_use(id, &t.provider, &t.qualified()))
                .unwrap_or(false)
        })
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    json_response(&json!({"object": "list", "data": data}), 200)
}
