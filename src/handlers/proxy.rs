//! `POST /v1/chat/completions` and `POST /v1/embeddings`: authenticate,
//! validate, resolve the model, call the provider (or the built-in demo), and
//! return its answer — streamed chunk by chunk for `stream: true` — while the
//! ledger row is written in `ctx.wait_until`.

use serde_json::Value;
use worker::{console_error, Context, Env, Headers, Request, Response};

use crate::error::GatewayError;
use crate::handlers::{authenticate_key, config, database, secret};
use crate::http::{
    error_response, new_request_id, now_ms, read_body_limited, set_header, REQUEST_ID_HEADER,
};
use crate::keys::KeyGrant;
use crate::ledger::{Endpoint, Outcome, RequestRow};
use crate::providers::{demo, map_upstream_error, plan, HttpCall, Plan};
use crate::request::{
    check_json_safety, parse_chat, parse_embeddings, parse_json_object, parse_metadata,
};
use crate::routing::resolve;
use crate::store;
use crate::upstream::{self, ByteSource, ObservedStream, StreamReport};
use crate::usage::{usage_from_response, ChatStreamObserver};

/// A successful answer: either complete, or a stream whose end is reported
/// later through the receiver.
enum Answer {
    Complete(Response),
    Streaming(Response, futures::channel::oneshot::Receiver<StreamReport>),
}

/// The route entry point. Never fails: every error becomes an OpenAI error
/// body, and every request that passed authentication gets one ledger row.
pub async fn handle(mut req: Request, env: Env, ctx: &Context, endpoint: Endpoint) -> Response {
    let request_id = new_request_id();
    let started = now_ms();
    let grant = match authenticate_key(&req, &env).await {
        Ok(g) => g,
        Err(e) => return error_response(&e, Some(&request_id)),
    };
    let mut row = RequestRow {
        request_id: request_id.clone(),
        created_at_ms: started,
        key_id: grant.id.clone(),
        endpoint,
        model_requested: None,
        provider: None,
        model_used: None,
        stream: false,
        status: 200,
        outcome: Outcome::Ok,
        error_code: None,
        usage: None,
        latency_ms: 0,
        ttft_ms: None,
        metadata: None,
    };
    let result = proxy(&mut req, &env, &grant, endpoint, &mut row).await;
    let db = database(&env);
    match result {
        Ok(Answer::Complete(resp)) => {
            row.status = resp.status_code();
            row.latency_ms = now_ms().saturating_sub(started);
            if let Ok(db) = db {
                ctx.wait_until(async move { store::insert_request_row(&db, &row).await });
            }
            resp
        }
        Ok(Answer::Streaming(resp, report)) => {
            row.status = resp.status_code();
            if let Ok(db) = db {
                ctx.wait_until(async move {
                    if let Ok(report) = report.await {
                        row.outcome = Outcome::from_stream_end(report.summary.end);
                        row.usage = report.summary.usage;
                        row.ttft_ms = report.ttft_ms;
                        if let Some(m) = report.summary.model {
                            row.model_used = Some(m);
                        }
                        row.error_code = match row.outcome {
                            Outcome::UpstreamTruncated => Some("upstream_truncated".to_owned()),
                            Outcome::UpstreamError => Some("upstream_error_frame".to_owned()),
                            _ => None,
                        };
                        row.latency_ms = report.ended_at_ms.saturating_sub(started);
                    } else {
                        row.outcome = Outcome::ClientAborted;
                        row.latency_ms = now_ms().saturating_sub(started);
                    }
                    store::insert_request_row(&db, &row).await;
                });
            }
            resp
        }
        Err(e) => {
            row.status = e.status();
            row.error_code = Some(e.code().to_owned());
            row.outcome = match e {
                GatewayError::Upstream { .. }
                | GatewayError::UpstreamUnreachable { .. }
                | GatewayError::UpstreamRedirect { .. }
                | GatewayError::UpstreamInvalidResponse { .. } => Outcome::UpstreamError,
                _ => Outcome::Rejected,
            };
            row.latency_ms = now_ms().saturating_sub(started);
            if let Ok(db) = db {
                ctx.wait_until(async move { store::insert_request_row(&db, &row).await });
            }
            error_response(&e, Some(&request_id))
        }
    }
}

async fn proxy(
    req: &mut Request,
    env: &Env,
    grant: &KeyGrant,
    endpoint: Endpoint,
    row: &mut RequestRow,
) -> Result<Answer, GatewayError> {
    let config = config(env)?;
    row.metadata = parse_metadata(
        req.headers()
            .get("x-tollgate-metadata")
            .ok()
            .flatten()
            .as_deref(),
    )?;
    let raw = read_body_limited(req, config.limits.max_body_bytes).await?;
    let body = parse_json_object(&raw)?;
    check_json_safety(&Value::Object(body.clone()), config.limits.max_json_depth)?;
    let (model, stream, body) = match endpoint {
        Endpoint::ChatCompletions => {
            let e = parse_chat(body)?;
            (e.model, e.stream, e.body)
        }
        Endpoint::Embeddings => {
            let e = parse_embeddings(body)?;
            (e.model, false, e.body)
        }
    };
    row.model_requested = Some(model.clone());
    row.stream = stream;
    let target = resolve(&config, &model)?;
    grant.check_model(&model, &target.provider, &target.qualified())?;
    row.provider = Some(target.provider.clone());
    row.model_used = Some(target.model.clone());
    let plan = plan(&config, &target, endpoint, body, stream, |name| {
        secret(env, name)
    })?;
    let started = row.created_at_ms;
    let request_id = row.request_id.clone();
    let headers = |content_type: &str| {
        let h = Headers::new();
        set_header(&h, "content-type", content_type);
        set_header(&h, REQUEST_ID_HEADER, &request_id);
        set_header(&h, "x-tollgate-provider", &target.provider);
        set_header(&h, "x-tollgate-model", &target.model);
        if content_type.starts_with("text/event-stream") {
            set_header(&h, "cache-control", "no-cache");
        }
        h
    };
    match plan {
        Plan::Demo {
            body,
            model,
            stream,
            strip_usage_chunk,
        } => {
            let id = format!("chatcmpl-{}", row.request_id.trim_start_matches("req_"));
            let created = started / 1000;
            if stream {
                let frames = demo::chat_stream_frames(&body, &model, &id, created);
                let source: ByteSource = Box::pin(futures::stream::iter(
                    frames.into_iter().map(|f| Ok(f.into_bytes())),
                ));
                return stream_answer(
                    source,
                    ChatStreamObserver::new(strip_usage_chunk, None),
                    "demo",
                    started,
                    headers("text/event-stream"),
                )
                .await;
            }
            let value = match endpoint {
                Endpoint::ChatCompletions => demo::chat_completion(&body, &model, &id, created),
                Endpoint::Embeddings => demo::embeddings(&body, &model)?,
            };
            row.usage = usage_from_response(&value);
            let bytes = serde_json::to_vec(&value).map_err(|_| GatewayError::Internal)?;
            let resp = Response::from_bytes(bytes).map_err(|_| GatewayError::Internal)?;
            with_timing(resp, headers("application/json"), started, None).map(Answer::Complete)
        }
        Plan::Http(call) => http_answer(call, &config.limits, started, row, headers).await,
    }
}

async fn http_answer(
    call: HttpCall,
    limits: &crate::config::Limits,
    started: u64,
    row: &mut RequestRow,
    headers: impl Fn(&str) -> Headers,
) -> Result<Answer, GatewayError> {
    let upstream_started = now_ms();
    let mut resp = upstream::send(&call).await?;
    let status = resp.status_code();
    if !(200..300).contains(&status) {
        let retry_after = retry_after_seconds(&resp);
        // Error bodies are small; read a bounded prefix for the message.
        let body = upstream::read_limited(&mut resp, 64 * 1024, &call.provider)
            .await
            .unwrap_or_default();
        return Err(map_upstream_error(
            &call.provider,
            status,
            &body,
            retry_after.as_deref(),
            call.api_key.as_ref(),
        ));
    }
    if call.stream {
        let content_type = resp
            .headers()
            .get("content-type")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            console_error!(
                "provider {} answered a stream request with '{content_type}'",
                call.provider
            );
            return Err(GatewayError::UpstreamInvalidResponse {
                provider: call.provider.clone(),
            });
        }
        let source: ByteSource =
            Box::pin(
                resp.stream()
                    .map_err(|_| GatewayError::UpstreamInvalidResponse {
                        provider: call.provider.clone(),
                    })?,
            );
        return stream_answer(
            source,
            ChatStreamObserver::new(call.strip_usage_chunk, call.api_key.clone()),
            &call.provider,
            started,
            headers("text/event-stream"),
        )
        .await;
    }
    let body =
        upstream::read_limited(&mut resp, limits.max_upstream_body_bytes, &call.provider).await?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| GatewayError::UpstreamInvalidResponse {
            provider: call.provider.clone(),
        })?;
    row.usage = usage_from_response(&value);
    if let Some(m) = value.get("model").and_then(Value::as_str) {
        row.model_used = Some(m.to_owned());
    }
    // The provider's bytes, untouched.
    let out = Response::from_bytes(body).map_err(|_| GatewayError::Internal)?;
    with_timing(
        out,
        headers("application/json"),
        started,
        Some(now_ms().saturating_sub(upstream_started)),
    )
    .map(Answer::Complete)
}

/// `Retry-After` as delta-seconds, from `retry-after` or (OpenAI, Azure)
/// `retry-after-ms` rounded up.
fn retry_after_seconds(resp: &Response) -> Option<String> {
    let h = resp.headers();
    if let Some(v) = h.get("retry-after").ok().flatten() {
        return Some(v);
    }
    let ms: u64 = h
        .get("retry-after-ms")
        .ok()
        .flatten()?
        .trim()
        .parse()
        .ok()?;
    Some(ms.div_ceil(1000).max(1).to_string())
}

/// Commits to a streamed answer once the first bytes for the client exist.
async fn stream_answer(
    source: ByteSource,
    observer: ChatStreamObserver,
    provider: &str,
    started: u64,
    headers: Headers,
) -> Result<Answer, GatewayError> {
    let first = upstream::first_output(source, observer, provider).await?;
    let (stream, report) = ObservedStream::new(first, started);
    let resp = Response::from_stream(stream).map_err(|_| GatewayError::Internal)?;
    let resp = with_timing(resp, headers, started, None)?;
    Ok(Answer::Streaming(resp, report))
}

/// Adds `Server-Timing` (gateway time to headers, and upstream time when known).
fn with_timing(
    resp: Response,
    headers: Headers,
    started: u64,
    upstream_ms: Option<u64>,
) -> Result<Response, GatewayError> {
    let total = now_ms().saturating_sub(started);
    let timing = match upstream_ms {
        Some(u) => format!("gateway;dur={}, upstream;dur={u}", total.saturating_sub(u)),
        None => format!("gateway;dur={total}"),
    };
    set_header(&headers, "server-timing", &timing);
    Ok(resp.with_headers(headers))
}
