//! `POST /v1/chat/completions` and `POST /v1/embeddings`: authenticate,
//! validate, resolve the model or route into links, walk them (timeouts,
//! retries, fallback — see `walker.rs`), and return the first good answer —
//! streamed chunk by chunk for `stream: true` — while the ledger row and one
//! row per upstream attempt are written in `ctx.wait_until`.

use std::time::Duration;

use serde_json::{Map, Value};
use worker::{console_error, AbortController, Context, Delay, Env, Headers, Response};

use crate::bindings::CACHE_KV;
use crate::breaker::Admission;
use crate::budget::Admission as BudgetAdmission;
use crate::cache::{self, CacheEntry};
use crate::config::{CacheMode, GatewayConfig, RouteConfig};
use crate::error::GatewayError;
use crate::handlers::{
    authenticate_key, budgets, capacity_queue, circuits, config, database, guard, price_row,
    secret, semantic,
};
use crate::http::{
    error_response, messages_error_response, new_request_id, now_ms, random_bytes, set_header,
    Incoming, REQUEST_ID_HEADER,
};
use crate::keys::{BudgetScope, KeyGrant};
use crate::ledger::{AttemptRow, Endpoint, Outcome, RequestRow};
use crate::messages::StreamEncoder;
use crate::providers::{self, Wire};
use crate::providers::{demo, map_error, plan, translate_response, HttpCall, Plan, StreamPipeline};
use crate::providers::{translate_binding_response, workers_ai, BindingCall};
use crate::request::{
    check_json_safety, parse_chat, parse_embeddings, parse_json_object, parse_metadata,
};
use crate::routing::{plan_route, Link, RequestFacts, Target};
use crate::semantic::{self as sem, SemanticMode, Verdict};
use crate::store;
use crate::upstream::{self, ByteSource, StreamReport, StreamSource};
use crate::usage::{unreported_usage, usage_from_response, ChatStreamObserver};
use crate::walker::{trace_header, Budget, Failure, Step, TimeoutKind, Walker};

/// Header carrying a per-request route (same schema as `[vars.GATEWAY.routes.*]`).
const INLINE_CONFIG_HEADER: &str = "x-tollgate-config";

/// A successful answer: either complete, or a stream whose end is reported
/// later through the receiver.
enum Answer {
    /// The response, and a copy of its body when the exact cache will store it.
    Complete(Response, Option<Vec<u8>>),
    Streaming(Response, futures::channel::oneshot::Receiver<StreamReport>),
}

/// The route entry point. Never fails: every error becomes an OpenAI error
/// body, and every request that passed authentication gets one ledger row.
pub async fn handle(req: Incoming, env: Env, ctx: &Context, endpoint: Endpoint) -> Response {
    let request_id = new_request_id();
    let started = now_ms();
    let render_error = match endpoint {
        Endpoint::Messages => messages_error_response,
        _ => error_response,
    };
    let grant = match authenticate_key(req.headers(), &env).await {
        Ok(g) => g,
        Err(e) => return render_error(&e, Some(&request_id)),
    };
    let mut row = RequestRow::new(request_id.clone(), started, grant.id.clone(), endpoint);
    row.project_id = grant.project.as_ref().map(|p| p.id.clone());
    let mut after = AfterResponse::default();
    let result = proxy(&req, &env, &grant, endpoint, &mut row, &mut after).await;
    let result = match (result, after.output_guard.take()) {
        (Ok(answer), Some(g)) => guard_answer(answer, g, &mut row, &mut after).await,
        (result, _) => result,
    };
    let cache_header = row.cache_status.map(str::to_ascii_uppercase);
    let gateway_config = config(&env).ok();
    // Share what the attempts taught about provider health, after the response.
    if let Some(config) = &gateway_config {
        let policy = config.resilience.breaker_policy();
        let now = now_ms();
        let due = circuits::due_reports(&row.attempts, now, policy);
        // With health probes on, also learn of circuits they opened.
        let refresh_ms = config.health.enabled().then_some(config.health.refresh_ms);
        let links = std::mem::take(&mut after.route_links);
        if !due.is_empty() || (refresh_ms.is_some() && !links.is_empty()) {
            let env = env.clone();
            ctx.wait_until(async move {
                circuits::sync(&env, &due, &links, now, policy, refresh_ms).await;
            });
        }
    }
    let db = database(&env);
    if let (Some(call), Ok(db)) = (after.classifier_row.take(), database(&env)) {
        let config = gateway_config.clone();
        ctx.wait_until(super::quality::write_overhead_row(db, config, call));
    }
    if let (Some(shadow), Ok(db)) = (after.shadow.take(), database(&env)) {
        let request_id = row.request_id.clone();
        let key_id = row.key_id.clone();
        ctx.wait_until(async move {
            semantic::log_shadow(
                &db,
                &request_id,
                &key_id,
                &shadow.model,
                &shadow.candidate,
                shadow.similarity,
                shadow.threshold,
                shadow.verdict,
            )
            .await;
        });
    }
    match result {
        Ok(Answer::Complete(resp, body)) => {
            // A quality sample: the answer is complete, so compare it in the background.
            let sample = after.quality.take().and_then(|plan| {
                let source = super::quality::SampleSource::of(&row, &plan)?;
                let answer = body.as_deref().and_then(first_message)?;
                Some((plan, source, answer))
            });
            if let Some(h) = &cache_header {
                set_header(resp.headers(), CACHE_HEADER, h);
            }
            if let Some(d) = &after.route_decision {
                set_header(resp.headers(), ROUTE_DECISION_HEADER, d);
            }
            if let Some(ms) = row.queue_ms {
                set_header(resp.headers(), QUEUE_MS_HEADER, &ms.to_string());
            }
            if let (Some(c), Some(b)) = (&gateway_config, &body) {
                crate::obs::log_body(&c.logging, &request_id, "response_body", b);
            }
            if let (Some(write), Some(body)) = (after.cache_write.take(), body) {
                let env = env.clone();
                let semantic_write = after.semantic_write.take();
                let provider = row.provider.clone().unwrap_or_default();
                ctx.wait_until(async move {
                    let entry = match endpoint {
                        Endpoint::ChatCompletions | Endpoint::Messages => {
                            CacheEntry::from_chat_body(&body, &provider, started / 1000)
                        }
                        Endpoint::Embeddings => {
                            CacheEntry::from_embeddings_body(&body, &provider, started / 1000)
                        }
                    };
                    match entry {
                        Ok(entry) => {
                            store_cache_entry(&env, &write, &entry).await;
                            if let Some(sem) = &semantic_write {
                                store_semantic(&env, sem, &write, &entry).await;
                            }
                        }
                        Err(why) => console_error!("not cached: {why}"),
                    }
                });
            }
            row.status = resp.status_code();
            row.latency_ms = now_ms().saturating_sub(started);
            if row.usage.is_none() && row.cache_status != Some("hit") {
                // A provider answered without `usage`: charge the reservation.
                let (prompt, completion) = after.reserved_tokens;
                row.usage = Some(unreported_usage(prompt, completion, after.prompt_bytes, 0));
                row.usage_estimated = true;
            }
            if let (Some((plan, source, answer)), Some(c), Ok(db)) =
                (sample, &gateway_config, database(&env))
            {
                let run =
                    super::quality::run_sample(env.clone(), db, c.clone(), plan, source, answer);
                ctx.wait_until(run);
            }
            if let Ok(db) = db {
                let held = std::mem::take(&mut after.budget_held);
                finish_row_after(ctx, env, db, gateway_config, held, row);
            }
            resp
        }
        Ok(Answer::Streaming(resp, report)) => {
            if let Some(h) = &cache_header {
                set_header(resp.headers(), CACHE_HEADER, h);
            }
            if let Some(d) = &after.route_decision {
                set_header(resp.headers(), ROUTE_DECISION_HEADER, d);
            }
            if let Some(ms) = row.queue_ms {
                set_header(resp.headers(), QUEUE_MS_HEADER, &ms.to_string());
            }
            row.status = resp.status_code();
            if let Ok(db) = db {
                let env = env.clone();
                ctx.wait_until(async move {
                    let report = report.await;
                    if let Some(rx) = after.guard_report.take() {
                        if let Ok(tally) = rx.await {
                            row.guardrails.extend(tally.events("output"));
                        }
                    }
                    let mut assembled = None;
                    if let Ok(report) = report {
                        if let (Some(c), Some(done)) = (&gateway_config, &report.summary.completion)
                        {
                            let text = serde_json::to_vec(done).unwrap_or_default();
                            crate::obs::log_body(
                                &c.logging,
                                &row.request_id,
                                "response_body",
                                &text,
                            );
                        }
                        if let (Some(write), Some(completion)) =
                            (&after.cache_write, report.summary.completion.clone())
                        {
                            let provider = row.provider.clone().unwrap_or_default();
                            match CacheEntry::from_completion(completion, &provider, started / 1000)
                            {
                                Ok(entry) => {
                                    store_cache_entry(&env, write, &entry).await;
                                    if let Some(sem) = &after.semantic_write {
                                        store_semantic(&env, sem, write, &entry).await;
                                    }
                                }
                                Err(why) => console_error!("not cached: {why}"),
                            }
                        }
                        row.outcome = Outcome::from_stream_end(report.summary.end);
                        row.usage = report.summary.usage;
                        if row.usage.is_none() {
                            // The provider never reported usage (cut stream, or
                            // none sent): charge the reservation, flagged.
                            let (prompt, completion) = after.reserved_tokens;
                            row.usage = Some(unreported_usage(
                                prompt,
                                completion,
                                after.prompt_bytes,
                                report.summary.delivered_chars,
                            ));
                            row.usage_estimated = true;
                        }
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
                        if after.quality.is_some() {
                            assembled = report.summary.completion;
                        }
                    } else {
                        row.outcome = Outcome::ClientAborted;
                        row.latency_ms = now_ms().saturating_sub(started);
                    }
                    // A quality sample of a stream: the assembled answer, once complete.
                    let sample = after.quality.take().and_then(|plan| {
                        let source = super::quality::SampleSource::of(&row, &plan)?;
                        let answer = assembled?.choices.into_iter().next()?.message;
                        Some((plan, source, answer))
                    });
                    let quality_db = sample.as_ref().and_then(|_| database(&env).ok());
                    let config = gateway_config.clone();
                    finish_row(env.clone(), db, gateway_config, after.budget_held, row).await;
                    if let (Some((plan, source, answer)), Some(c), Some(qdb)) =
                        (sample, config, quality_db)
                    {
                        super::quality::run_sample(env, qdb, c, plan, source, answer).await;
                    }
                });
            }
            resp
        }
        Err(e) => {
            row.status = e.status();
            row.error_code = Some(e.code().to_owned());
            row.outcome = if row.attempts.is_empty() {
                Outcome::Rejected
            } else {
                Outcome::UpstreamError
            };
            row.latency_ms = now_ms().saturating_sub(started);
            let decision = after.route_decision.take();
            let queue_ms = row.queue_ms;
            if let Ok(db) = db {
                finish_row_after(ctx, env, db, gateway_config, after.budget_held, row);
            }
            let resp = render_error(&e, Some(&request_id));
            if let Some(d) = &decision {
                set_header(resp.headers(), ROUTE_DECISION_HEADER, d);
            }
            if let Some(ms) = queue_ms {
                set_header(resp.headers(), QUEUE_MS_HEADER, &ms.to_string());
            }
            resp
        }
    }
}

/// The first choice's message of a complete chat answer (canonical JSON).
fn first_message(body: &[u8]) -> Option<crate::openai::AssistantMessage> {
    let c: crate::openai::ChatCompletion = serde_json::from_slice(body).ok()?;
    c.choices.into_iter().next().map(|choice| choice.message)
}

/// `finish_row` for a request that is over when its response is: with no
/// budget to settle (a Durable Object call), the row is priced and queued
/// now, and only a request that leads or fills a ledger batch adds a
/// `waitUntil` (`store::queue_request_row`). Under load nearly every request
/// is a follower, and each `waitUntil` of a Rust future costs a promise, its
/// closures and the runtime's own bookkeeping (~2 µs for the call alone).
fn finish_row_after(
    ctx: &Context,
    env: Env,
    db: worker::D1Database,
    config: Option<std::rc::Rc<GatewayConfig>>,
    budget_held: Vec<BudgetScope>,
    mut row: RequestRow,
) {
    if !budget_held.is_empty() {
        ctx.wait_until(finish_row(env, db, config, budget_held, row));
        return;
    }
    if let Some(c) = &config {
        price_row(c, &mut row);
    }
    if let Some(write) = store::queue_request_row(&db, row) {
        ctx.wait_until(write);
    }
}

/// After the response: price the row, settle the request's reservation in
/// every budget scope (key, project) with the real cost, write the ledger row
/// (and its attempts).
async fn finish_row(
    env: Env,
    db: worker::D1Database,
    config: Option<std::rc::Rc<GatewayConfig>>,
    budget_held: Vec<BudgetScope>,
    mut row: RequestRow,
) {
    if let Some(c) = &config {
        price_row(c, &mut row);
    }
    let tokens = row.usage.map_or(0, |u| u.total_tokens);
    let micros = row.cost_micros.unwrap_or(0);
    let (thresholds, webhooks) = config
        .as_ref()
        .map(|c| (c.alerts.thresholds.clone(), c.alerts.webhook_urls.clone()))
        .unwrap_or_default();
    for scope in &budget_held {
        let alerts =
            budgets::settle(&env, scope, &row.request_id, (micros, tokens), &thresholds).await;
        if !alerts.is_empty() {
            budgets::deliver_alerts(&db, &webhooks, scope, &alerts, now_ms()).await;
        }
    }
    store::commit_request_row(&db, row).await;
}

/// Reads `x-tollgate-config`, if sent: an inline route, allowed only for keys
/// created with `allow_inline_config`, validated like a configured route (so
/// it can only name configured providers — never a host or a key).
fn inline_route(
    req: &Incoming,
    config: &GatewayConfig,
    grant: &KeyGrant,
) -> Result<Option<RouteConfig>, GatewayError> {
    let Some(raw) = req.headers().get(INLINE_CONFIG_HEADER).ok().flatten() else {
        return Ok(None);
    };
    if !grant.allow_inline_config {
        return Err(GatewayError::Forbidden {
            message: format!(
                "This API key may not send {INLINE_CONFIG_HEADER}; an admin can allow it per key."
            ),
            code: "inline_config_not_allowed",
        });
    }
    let bad = |why: String| GatewayError::InvalidRequest {
        message: format!("Header {INLINE_CONFIG_HEADER} {why}"),
        param: Some(INLINE_CONFIG_HEADER.to_owned()),
        code: "invalid_inline_config",
    };
    if raw.len() > 8 * 1024 {
        return Err(bad("is longer than 8 KB.".to_owned()));
    }
    let value: Value = serde_json::from_str(&raw).map_err(|e| bad(format!("is not JSON: {e}.")))?;
    check_json_safety(&value, config.limits.max_json_depth)?;
    let route: RouteConfig =
        serde_json::from_value(value).map_err(|e| bad(format!("is not a route: {e}.")))?;
    if route.guardrails.is_some() {
        // Guardrails are the operator's; a client's route cannot loosen them.
        return Err(bad("cannot set guardrails.".to_owned()));
    }
    if route.quality_sampling.is_some() || route.classifier.is_some() {
        // Both call another model on the operator's account.
        return Err(bad("cannot set quality_sampling or classifier.".to_owned()));
    }
    let errors = config.validate_route("route", &route);
    if !errors.is_empty() {
        return Err(bad(format!("is not valid: {}.", errors.join("; "))));
    }
    Ok(Some(route))
}

/// A uniform random number in [0, 1) from the platform CSPRNG.
fn random_unit() -> f64 {
    let bytes = random_bytes::<8>().unwrap_or([0; 8]);
    // 53 random bits → exactly representable in f64.
    #[expect(clippy::cast_precision_loss, reason = "53-bit integer, exact in f64")]
    let v = (u64::from_le_bytes(bytes) >> 11) as f64;
    v / (1u64 << 53) as f64
}

async fn proxy(
    req: &Incoming,
    env: &Env,
    grant: &KeyGrant,
    endpoint: Endpoint,
    row: &mut RequestRow,
    after: &mut AfterResponse,
) -> Result<Answer, GatewayError> {
    let config = config(env)?;
    row.metadata = parse_metadata(
        req.headers()
            .get("x-tollgate-metadata")
            .ok()
            .flatten()
            .as_deref(),
    )?;
    let inline = inline_route(req, &config, grant)?;
    let raw = req.read_body_limited(config.limits.max_body_bytes).await?;
    after.prompt_bytes = raw.len() as u64;
    crate::obs::log_body(&config.logging, &row.request_id, "request_body", &raw);
    // Checked in place, then taken apart: no copy of the body.
    let body = Value::Object(parse_json_object(&raw)?);
    check_json_safety(&body, config.limits.max_json_depth)?;
    let Value::Object(body) = body else {
        return Err(GatewayError::Internal);
    };
    // A Messages request is translated to the canonical chat request here;
    // its own body is kept for a pass-through to Anthropic providers.
    let mut native = None;
    let (model, stream, body) = match endpoint {
        Endpoint::ChatCompletions => {
            let e = parse_chat(body)?;
            (e.model, e.stream, e.body)
        }
        Endpoint::Messages => {
            let inbound = crate::messages::to_canonical(&body)?;
            native = Some(body);
            (inbound.model, inbound.stream, inbound.canonical)
        }
        Endpoint::Embeddings => {
            let e = parse_embeddings(body)?;
            (e.model, false, e.body)
        }
    };
    row.model_requested = Some(model.clone());
    row.stream = stream;
    let endpoint = endpoint.canonical();
    // Guardrails see the prompt before anything else does (cache, providers).
    let route = inline.as_ref().or_else(|| config.routes.get(&model));
    let checked = guard::check_input(&config, grant, route, endpoint, body, &mut row.guardrails)?;
    let body = checked.body;
    if checked.output.is_some() && row.endpoint == Endpoint::Messages {
        // The output guard reads OpenAI-format answers; a /v1/messages answer
        // is already Anthropic-shaped when it would run. Refuse rather than
        // let output rules (block, restore) silently not apply.
        return Err(GatewayError::InvalidRequest {
            message: "Output guardrails (output detectors or reversible redaction) apply to this \
                      key or route, and are not supported on /v1/messages yet; use \
                      /v1/chat/completions."
                .to_owned(),
            param: None,
            code: "guardrails_unsupported_endpoint",
        });
    }
    after.output_guard = checked.output;
    let metadata: Option<Map<String, Value>> = row
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok());
    // Only a route that tiers by budget pays for reading the budget first.
    let budget_used = if crate::routing::uses_budget_strategy(&config, &model, inline.as_ref()) {
        budgets::used_fraction(env, &grant.budget_scopes()).await
    } else {
        None
    };
    let latency_of = |qualified: &str| circuits::latency(qualified);
    let price_of = |provider: &str, model: &str| {
        crate::handlers::lookup_price(&config, provider, model).map(|(p, _)| p)
    };
    // Only a complexity route with a classifier model pays for the call,
    // bounded by its deadline.
    let classified = match crate::routing::classifier_for(&config, &model, inline.as_ref()) {
        Some(c) => {
            let (verdict, call_row) =
                super::quality::classify(env, &config, c, &body, &row.request_id, &grant.id).await;
            after.classifier_row = call_row;
            Some(verdict)
        }
        None => None,
    };
    let facts = RequestFacts::new(metadata.as_ref(), &body)
        .with_cost(after.prompt_bytes, &price_of)
        .with_latency(now_ms(), &latency_of)
        .with_budget_used(budget_used)
        .with_classified(classified);
    let mut random = random_unit;
    let plan = plan_route(&config, &model, inline.as_ref(), &facts, &mut random)?;
    if !plan.decisions.is_empty() {
        after.route_decision = Some(plan.decisions.join("; "));
    }
    let links: Vec<Link> = plan
        .links
        .into_iter()
        .filter(|l| grant.may_use(&model, &l.provider, &format!("{}/{}", l.provider, l.model)))
        .collect();
    let links = prefer_unsaturated_links(&config, links, &mut after.route_decision);
    after.route_links = links
        .iter()
        .map(|l| format!("{}/{}", l.provider, l.model))
        .collect();
    if links.is_empty() {
        return Err(GatewayError::Forbidden {
            message: format!("This API key is not allowed to use the model '{model}'."),
            code: "model_not_allowed",
        });
    }
    after.reserved_tokens = reserved_tokens(&config, endpoint, &body, after.prompt_bytes);
    let scopes = grant.budget_scopes();
    if !scopes.is_empty() {
        let has_usd = scopes.iter().any(|s| s.limits.has_usd_budget());
        let micros = worst_case_micros(&config, &links, after.reserved_tokens, has_usd)?;
        let (prompt, completion) = after.reserved_tokens;
        let admission = BudgetAdmission {
            reservation_id: row.request_id.clone(),
            worst_case_micros: micros,
            worst_case_tokens: prompt.saturating_add(completion),
            // Past the request's own deadline, plus the `wait_until` grace.
            ttl_ms: config
                .resilience
                .deadline_ms
                .saturating_add(config.budgets.reservation_grace_ms),
        };
        budgets::admit(env, &scopes, &admission).await?;
        after.budget_held = scopes;
    }
    let route_policy = inline
        .as_ref()
        .or_else(|| config.routes.get(&model))
        .and_then(|r| r.cache.clone())
        .unwrap_or_default();
    let policy = config
        .cache
        .policy()
        .overlay(&grant.cache.clone().unwrap_or_default())
        .overlay(&route_policy);
    let semantic_mode = semantic_mode(req, &config, &policy, endpoint);
    let decision = cache_decision(
        req,
        &config,
        &policy,
        endpoint,
        &body,
        &grant.id,
        &model,
        &links,
        semantic_mode.is_some(),
    )?;
    row.cache_status = decision.status();
    let mut keep_body = None;
    if let CacheDecision::Use { read, write } = decision {
        if read {
            if let Some(entry) = load_cache_entry(env, &write.name).await {
                if let Some(answer) = cache_hit(&entry, endpoint, &body, stream, row) {
                    return Ok(answer);
                }
            }
        }
        if let Some(mode) = semantic_mode {
            let threshold = policy
                .semantic_threshold
                .unwrap_or(config.semantic.threshold);
            let lookup = SemanticLookup {
                mode,
                read,
                threshold,
                tenant: &grant.id,
                model: &model,
                body: &body,
                write: &write,
            };
            if let Some(answer) = semantic_layer(env, &config, lookup, stream, row, after).await {
                return Ok(answer);
            }
        }
        keep_body = Some(write.max_entry_bytes);
        after.cache_write = Some(write);
    }
    if config.logging.bodies {
        // Keep a copy of the answer for the (redacted) body log.
        keep_body = keep_body.or(Some(cache::DEFAULT_MAX_ENTRY_BYTES));
    }
    after.quality = super::quality::plan_sample(
        &config,
        grant,
        &model,
        route,
        endpoint,
        &body,
        random_unit(),
    );
    if after.quality.is_some() {
        // A sampled answer is compared with the reference's after the response.
        keep_body = keep_body.or(Some(cache::DEFAULT_MAX_ENTRY_BYTES));
    }
    let links = wait_for_capacity(&config, links, grant, row, after).await?;
    let shape = RequestShape {
        endpoint,
        body: &body,
        stream,
        keep_body,
        native: native.as_ref(),
    };
    walk(env, &config, &links, shape, row).await
}

/// When every link is at its capacity threshold, waits in the saturation
/// queue (`capacity_queue.rs`) — after admission and the caches, so a cache
/// hit never waits and a request its budget refuses never holds a place —
/// and puts the link that freed first. The wait is recorded in the row and
/// the route decision; a refusal is `429 capacity_exhausted` (the handler
/// then releases the budget reservation, charging nothing).
async fn wait_for_capacity(
    config: &GatewayConfig,
    mut links: Vec<Link>,
    grant: &KeyGrant,
    row: &mut RequestRow,
    after: &mut AfterResponse,
) -> Result<Vec<Link>, GatewayError> {
    let deadline_at = row
        .created_at_ms
        .saturating_add(config.resilience.deadline_ms);
    let waited =
        capacity_queue::wait_for_room(config, &links, &grant.id, grant.priority, deadline_at).await;
    let (ms, outcome) = match &waited {
        Ok(None) => return Ok(links),
        Ok(Some(a)) => (a.waited_ms, "admitted"),
        Err(r) => (r.waited_ms, "refused"),
    };
    row.queue_ms = Some(ms);
    let note = format!(
        "queue:{outcome} waited={ms}ms priority={}",
        grant.priority.as_str()
    );
    after.route_decision = Some(match after.route_decision.take() {
        Some(d) => format!("{d}; {note}"),
        None => note,
    });
    match waited {
        Ok(Some(a)) if a.link < links.len() => {
            let freed = links.remove(a.link);
            links.insert(0, freed);
            Ok(links)
        }
        Ok(_) => Ok(links),
        Err(r) => Err(r.error),
    }
}

/// What `handle` does after the response: ledger estimate, cache write,
/// budget settle.
#[derive(Default)]
struct AfterResponse {
    prompt_bytes: u64,
    cache_write: Option<CacheWrite>,
    /// The prompt's upper bound and the completion cap, in tokens: what the
    /// request reserves, and what it is charged if no usage is reported.
    reserved_tokens: (u64, u64),
    /// The budget scopes (key, project) holding a reservation for this request.
    budget_held: Vec<BudgetScope>,
    /// What smart routing strategies decided (`x-tollgate-route-decision`).
    route_decision: Option<String>,
    /// Where the answer goes in the semantic index (with the exact-cache write).
    semantic_write: Option<SemanticWrite>,
    /// A would-be semantic hit to record (shadow mode).
    shadow: Option<ShadowRecord>,
    /// Output guardrails to apply to the answer.
    output_guard: Option<crate::guardrails::OutputGuard>,
    /// A guarded stream's decisions, when it ends.
    guard_report: Option<futures::channel::oneshot::Receiver<crate::guardrails::Tally>>,
    /// The complexity classifier call's own ledger row.
    classifier_row: Option<RequestRow>,
    /// This request is a quality sample: what to ask the reference.
    quality: Option<super::quality::SamplePlan>,
    /// `provider/model` of every link the route could use (circuit refresh).
    route_links: Vec<String>,
}

/// Runs the output guardrails over the answer (cache hit or provider).
async fn guard_answer(
    answer: Answer,
    output: crate::guardrails::OutputGuard,
    row: &mut RequestRow,
    after: &mut AfterResponse,
) -> Result<Answer, GatewayError> {
    match answer {
        Answer::Complete(resp, copy) => {
            let resp = guard::complete(resp, output, &mut row.guardrails).await?;
            Ok(Answer::Complete(resp, copy))
        }
        Answer::Streaming(resp, report) => {
            let (resp, rx) = guard::streaming(resp, output)?;
            after.guard_report = Some(rx);
            Ok(Answer::Streaming(resp, report))
        }
    }
}

/// The tokens a request may use: the prompt at its upper bound (body bytes +
/// template allowance) and `max_tokens` — or the configured default when
/// absent (embeddings produce none).
fn reserved_tokens(
    config: &GatewayConfig,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    body_bytes: u64,
) -> (u64, u64) {
    let prompt = crate::pricing::estimate_prompt_tokens_upper_bound(
        usize::try_from(body_bytes).unwrap_or(usize::MAX),
    );
    let output = match endpoint {
        Endpoint::Embeddings => 0,
        Endpoint::ChatCompletions | Endpoint::Messages => ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64))
            .unwrap_or(config.budgets.default_max_tokens),
    };
    (prompt, output)
}

/// The most a request can cost (micro-USD) over every link it may reach.
/// A link with no price cannot be bounded, so a request under a USD budget
/// is refused it rather than admitted for free.
fn worst_case_micros(
    config: &GatewayConfig,
    links: &[Link],
    (prompt, output): (u64, u64),
    has_usd: bool,
) -> Result<u64, GatewayError> {
    let mut micros = 0;
    for l in links {
        match crate::handlers::lookup_price(config, &l.provider, &l.model) {
            Some((price, _)) => {
                micros = micros.max(crate::pricing::worst_case_micros(&price, prompt, output));
            }
            None if has_usd => {
                return Err(GatewayError::InvalidRequest {
                    message: format!(
                        "This key has a spending limit, and '{}/{}' has no price on this gateway; \
                         the operator must add one ([vars.GATEWAY.pricing]).",
                        l.provider, l.model
                    ),
                    param: Some("model".to_owned()),
                    code: "model_unpriced",
                });
            }
            None => {}
        }
    }
    Ok(micros)
}

/// Moves the links of providers near their account rate limit behind the
/// others (see `capacity.rs`), noting it in the route decision.
fn prefer_unsaturated_links(
    config: &GatewayConfig,
    links: Vec<Link>,
    decision: &mut Option<String>,
) -> Vec<Link> {
    if links.len() < 2 {
        return links;
    }
    let now = now_ms();
    let labels: Vec<String> = links
        .iter()
        .map(|l| format!("{}/{}", l.provider, l.model))
        .collect();
    let threshold = f64::from(config.resilience.capacity_threshold_pct) / 100.0;
    let used: Vec<f64> = links
        .iter()
        .map(|l| {
            let room = capacity_queue::link_room(config, l, now);
            // No slot left is saturated, whatever the share shows.
            if room.slots == 0 {
                room.used.max(threshold)
            } else {
                room.used
            }
        })
        .collect();
    let (order, why) = crate::capacity::prefer_unsaturated(&labels, &used, threshold);
    let Some(why) = why else {
        return links;
    };
    *decision = Some(match decision.take() {
        Some(d) => format!("{d}; {why}"),
        None => why,
    });
    let mut slots: Vec<Option<Link>> = links.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect()
}

/// What smart routing strategies (`cost`, …) chose and left out, and why.
const ROUTE_DECISION_HEADER: &str = "x-tollgate-route-decision";

/// How long the request waited for provider capacity (only when it did).
const QUEUE_MS_HEADER: &str = "x-tollgate-queue-ms";

/// `x-tollgate-cache`: the request's cache control, and the response's cache status.
const CACHE_HEADER: &str = "x-tollgate-cache";
const CACHE_NAMESPACE_HEADER: &str = "x-tollgate-cache-namespace";

/// Where and for how long a response will be cached.
struct CacheWrite {
    name: String,
    ttl_secs: u64,
    max_entry_bytes: usize,
    /// The route identity and namespace in the key (the semantic partition reuses them).
    identity: String,
    namespace: Option<String>,
}

enum CacheDecision {
    /// The cache is off for this request.
    Off,
    /// The request cannot be cached (not deterministic, `n > 1`, …).
    Skip,
    /// Look up (unless refreshing) and store the answer.
    Use { read: bool, write: CacheWrite },
}

impl CacheDecision {
    fn status(&self) -> Option<&'static str> {
        match self {
            Self::Off => None,
            Self::Skip => Some("skip"),
            Self::Use { read: true, .. } => Some("miss"),
            Self::Use { read: false, .. } => Some("refresh"),
        }
    }
}

/// Applies the operator's cache mode and the request's controls
/// (`x-tollgate-cache: exact | off | refresh`, `x-tollgate-cache-ttl`,
/// `x-tollgate-cache-namespace`). Entries are scoped to the virtual key.
#[expect(
    clippy::too_many_arguments,
    reason = "every input is a distinct part of the decision"
)]
fn cache_decision(
    req: &Incoming,
    config: &GatewayConfig,
    policy: &cache::CachePolicy,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    tenant: &str,
    model: &str,
    links: &[Link],
    semantic_on: bool,
) -> Result<CacheDecision, GatewayError> {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let control = header(CACHE_HEADER).map(|v| v.trim().to_ascii_lowercase());
    let mode = policy.mode.unwrap_or(config.cache.mode);
    let (wanted, read) = match (control.as_deref(), mode) {
        (Some("off"), _) | (_, CacheMode::Off) => (false, false),
        (Some("exact" | "semantic"), _) => (true, true),
        (Some("refresh"), _) => (true, false),
        (None, CacheMode::On) => (true, true),
        // A semantic layer that is on brings the exact lookup before it.
        (None, CacheMode::OptIn) => (semantic_on, semantic_on),
        (Some(_), _) => {
            return Err(GatewayError::invalid_param(
                CACHE_HEADER,
                "x-tollgate-cache must be exact, semantic, refresh or off.",
            ))
        }
    };
    if !wanted {
        return Ok(CacheDecision::Off);
    }
    // What each link actually sends is the client's body with the link's
    // `params` over it: every one of those must be deterministic.
    let deterministic = links.iter().all(|l| match &l.params {
        None => cache::cacheability_with(endpoint, body, policy).is_ok(),
        Some(params) => {
            let mut merged = body.clone();
            merged.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
            cache::cacheability_with(endpoint, &merged, policy).is_ok()
        }
    });
    if !deterministic {
        return Ok(CacheDecision::Skip);
    }
    let ttl_secs = cache::effective_ttl(
        header(cache::TTL_HEADER).as_deref(),
        config.cache.default_ttl_secs,
        config.cache.max_ttl_secs,
    )?;
    let namespace = header(CACHE_NAMESPACE_HEADER).filter(|n| !n.is_empty());
    if let Some(ns) = &namespace {
        let ok = ns.len() <= 64
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(GatewayError::invalid_param(
                CACHE_NAMESPACE_HEADER,
                "x-tollgate-cache-namespace is 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'.",
            ));
        }
    }
    // Links with other `params` give other answers: they are part of the identity.
    let qualified: Vec<String> = links
        .iter()
        .map(|l| match &l.params {
            None => format!("{}/{}", l.provider, l.model),
            Some(p) => format!("{}/{}#{}", l.provider, l.model, Value::Object(p.clone())),
        })
        .collect();
    let identity = cache::route_identity(model, &qualified);
    let Ok(key) = cache::cache_key(tenant, &identity, endpoint, namespace.as_deref(), body) else {
        return Ok(CacheDecision::Skip);
    };
    Ok(CacheDecision::Use {
        read,
        write: CacheWrite {
            name: cache::kv_name(tenant, model, &key),
            ttl_secs,
            max_entry_bytes: usize::try_from(config.cache.max_entry_bytes)
                .unwrap_or(cache::DEFAULT_MAX_ENTRY_BYTES),
            identity,
            namespace,
        },
    })
}

async fn load_cache_entry(env: &Env, name: &str) -> Option<CacheEntry> {
    let kv = env.kv(CACHE_KV).ok()?;
    match kv.get(name).bytes().await {
        Ok(Some(bytes)) => cache::decode_entry(&bytes),
        Ok(None) => None,
        Err(e) => {
            // A cache that cannot be read is a miss, never an error.
            console_error!("cache read failed: {e}");
            None
        }
    }
}

async fn store_cache_entry(env: &Env, write: &CacheWrite, entry: &CacheEntry) {
    let bytes = match cache::encode_entry(entry, write.max_entry_bytes) {
        Ok(b) => b,
        Err(why) => {
            console_error!("not cached: {why}");
            return;
        }
    };
    let Ok(kv) = env.kv(CACHE_KV) else {
        console_error!("KV binding {CACHE_KV} is missing; not cached");
        return;
    };
    let put = match kv.put_bytes(&write.name, &bytes) {
        Ok(p) => p.expiration_ttl(write.ttl_secs).execute().await,
        Err(e) => Err(e),
    };
    if let Err(e) = put {
        console_error!("cache write failed: {e}");
    }
}

/// Answers from a cache entry as the client asked (JSON or SSE, float or
/// base64). Not billed: the ledger row says `hit` and carries the original
/// usage as what was saved.
fn cache_hit(
    entry: &CacheEntry,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    stream: bool,
    row: &mut RequestRow,
) -> Option<Answer> {
    let started = row.created_at_ms;
    let id = completion_id(&row.request_id);
    let (bytes, content_type) = match endpoint {
        Endpoint::Embeddings => {
            let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
            (cache::replay_embeddings(entry, base64)?, "application/json")
        }
        Endpoint::ChatCompletions | Endpoint::Messages if stream => {
            let include_usage = body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let frames = cache::replay_sse(entry, &id, started / 1000, include_usage);
            (frames.concat().into_bytes(), "text/event-stream")
        }
        Endpoint::ChatCompletions | Endpoint::Messages => (
            cache::replay_json(entry, &id, started / 1000),
            "application/json",
        ),
    };
    let bytes = match row.endpoint {
        Endpoint::Messages if stream => {
            let mut encoder = stream_encoder(row, false)?;
            encoder.push(&bytes).ok()?
        }
        Endpoint::Messages => {
            let value: Value = serde_json::from_slice(&bytes).ok()?;
            client_body(row, bytes, &value, None)
        }
        _ => bytes,
    };
    let resp = Response::from_bytes(bytes).ok()?;
    let resp = with_timing(resp, content_type, started, None);
    let h = resp.headers();
    set_header(h, REQUEST_ID_HEADER, &row.request_id);
    set_header(h, "x-tollgate-provider", &entry.provider);
    set_header(h, "x-tollgate-model", &entry.model);
    set_header(
        h,
        "x-tollgate-cache-age",
        &entry.age_secs(started / 1000).to_string(),
    );
    row.cache_status = Some("hit");
    row.provider = Some(entry.provider.clone());
    row.model_used = Some(entry.model.clone());
    row.usage = serde_json::to_value(&entry.usage)
        .ok()
        .as_ref()
        .and_then(crate::usage::usage_from_object);
    Some(Answer::Complete(resp, None))
}

/// What is being asked, for the walk.
struct RequestShape<'a> {
    endpoint: Endpoint,
    body: &'a Map<String, Value>,
    stream: bool,
    /// Keep a copy of a complete answer up to this size (for the exact cache).
    keep_body: Option<usize>,
    /// The client's Anthropic body (`/v1/messages`), for a pass-through.
    native: Option<&'a Map<String, Value>>,
}

/// Tries the links in the walker's order until one answers.
async fn walk(
    env: &Env,
    config: &GatewayConfig,
    links: &[Link],
    shape: RequestShape<'_>,
    row: &mut RequestRow,
) -> Result<Answer, GatewayError> {
    let RequestShape {
        endpoint,
        body,
        stream,
        keep_body,
        native,
    } = shape;
    let started = row.created_at_ms;
    let r = &config.resilience;
    let mut walker = Walker::new(
        links,
        Budget {
            deadline_at_ms: started.saturating_add(r.deadline_ms),
            max_attempts: r.max_attempts,
            backoff_base_ms: r.backoff_base_ms,
            backoff_max_ms: r.backoff_max_ms,
            retry_after_cap_ms: r.retry_after_cap_ms,
        },
    );
    let mut last_error: Option<GatewayError> = None;
    loop {
        match walker.next(now_ms()) {
            Step::Sleep { ms } => Delay::from(Duration::from_millis(ms)).await,
            Step::GiveUp => {
                let last = last_error.unwrap_or(GatewayError::Internal);
                let summary = trace_summary(links, &walker);
                return Err(if walker.trace().len() > 1 || walker.attempts() > 1 {
                    GatewayError::AllLinksFailed {
                        last: Box::new(last),
                        summary,
                    }
                } else {
                    last
                });
            }
            Step::Attempt {
                link: index,
                attempt,
                ttfb_ms,
                total_ms,
            } => {
                let Some(link) = links.get(index) else {
                    return Err(GatewayError::Internal);
                };
                let target = Target {
                    provider: link.provider.clone(),
                    model: link.model.clone(),
                };
                let mut link_body = body.clone();
                if let Some(params) = &link.params {
                    for (k, v) in params {
                        link_body.insert(k.clone(), v.clone());
                    }
                }
                let qualified = format!("{}/{}", link.provider, link.model);
                if circuits::admit(&qualified, now_ms()) == Admission::Open {
                    walker.skipped(&Failure::Skipped("circuit_open"));
                    last_error.get_or_insert_with(|| GatewayError::Upstream {
                        provider: link.provider.clone(),
                        status: 503,
                        message: format!(
                            "Provider '{}' is failing for model '{}'; the gateway paused requests to it for a cool-down.",
                            link.provider, link.model
                        ),
                        code: "circuit_open",
                        retry_after: Some((config.resilience.circuit_cooldown_ms.div_ceil(1000)).to_string()),
                    });
                    continue;
                }
                row.provider = Some(link.provider.clone());
                row.model_used = Some(link.model.clone());
                let planned = plan(
                    config,
                    &target,
                    endpoint,
                    link_body,
                    stream,
                    |name| secret(env, name),
                    now_ms(),
                );
                let planned = match planned {
                    Ok(p) => p,
                    Err(e @ GatewayError::ProviderNotConfigured { .. }) => {
                        walker.skipped(&Failure::Skipped("no_api_key"));
                        last_error = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if let Plan::Binding(call) = &planned {
                    if !crate::ai_binding::present(env, &call.binding) {
                        walker.skipped(&Failure::Skipped("no_binding"));
                        last_error = Some(GatewayError::Upstream {
                            provider: call.provider.clone(),
                            status: 503,
                            message: format!(
                                "Provider '{}' calls the Workers AI binding '{}', which this deployment does not have.",
                                call.provider, call.binding
                            ),
                            code: "provider_not_configured",
                            retry_after: None,
                        });
                        continue;
                    }
                }
                let limits = Timeouts {
                    ttfb_ms,
                    total_ms,
                    idle_ms: link.idle_ms,
                    max_body: config.limits.max_upstream_body_bytes,
                };
                let attempt_started = now_ms();
                let result = match planned {
                    Plan::Demo {
                        body,
                        model,
                        stream,
                        strip_usage_chunk,
                    } => demo_answer(
                        endpoint,
                        body,
                        &model,
                        stream,
                        strip_usage_chunk,
                        keep_body,
                        row,
                    )
                    .await
                    .map_err(|e| (Failure::BadResponse, e)),
                    Plan::Http(mut call) => {
                        // Messages to an Anthropic provider: the client's own body
                        // (unless the link rewrites parameters, which are canonical).
                        let pass_through = match native {
                            Some(n) if call.wire == Wire::Anthropic && link.params.is_none() => {
                                call.body = crate::messages::native_body(n, &link.model);
                                true
                            }
                            _ => false,
                        };
                        http_attempt(
                            call,
                            endpoint,
                            &limits,
                            started,
                            keep_body,
                            pass_through,
                            row,
                        )
                        .await
                    }
                    Plan::Binding(call) => {
                        binding_attempt(env, call, endpoint, &limits, started, keep_body, row).await
                    }
                };
                let latency_ms = now_ms().saturating_sub(attempt_started);
                let healthy = match &result {
                    Ok(_) => true,
                    Err((failure, _)) => !failure.is_retryable(),
                };
                let ok_latency = result.is_ok().then_some(latency_ms);
                circuits::record(
                    &qualified,
                    healthy,
                    ok_latency,
                    now_ms(),
                    r.breaker_policy(),
                );
                let (status, failure_label) = match &result {
                    Ok((_, status)) => (Some(*status), None),
                    Err((failure, _)) => (
                        match failure {
                            Failure::Status { status, .. } => Some(*status),
                            _ => None,
                        },
                        Some(failure.label()),
                    ),
                };
                row.attempts.push(AttemptRow {
                    attempt,
                    provider: link.provider.clone(),
                    model: link.model.clone(),
                    started_at_ms: attempt_started,
                    latency_ms,
                    status,
                    ok: result.is_ok(),
                    failure: failure_label,
                });
                match result {
                    Ok((answer, _)) => {
                        walker.succeeded();
                        let trace = trace_header(links, walker.trace());
                        return Ok(with_route_headers(
                            answer,
                            link,
                            &row.request_id,
                            &trace,
                            walker.attempts(),
                        ));
                    }
                    Err((failure, error)) => {
                        walker.failed(now_ms(), &failure, random_unit());
                        last_error = Some(error);
                    }
                }
            }
        }
    }
}

/// `provider/model: result` for every link tried, for error messages.
fn trace_summary(links: &[Link], walker: &Walker<'_>) -> String {
    walker
        .trace()
        .iter()
        .filter_map(|t| {
            let l = links.get(t.link)?;
            Some(format!("{}/{}: {}", l.provider, l.model, t.result))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn with_route_headers(
    answer: Answer,
    link: &Link,
    request_id: &str,
    trace: &str,
    attempts: u32,
) -> Answer {
    let set = |resp: &Response| {
        let h = resp.headers();
        set_header(h, REQUEST_ID_HEADER, request_id);
        set_header(h, "x-tollgate-provider", &link.provider);
        set_header(h, "x-tollgate-model", &link.model);
        set_header(h, "x-tollgate-trace", trace);
        set_header(h, "x-tollgate-attempts", &attempts.to_string());
    };
    match answer {
        Answer::Complete(resp, body) => {
            set(&resp);
            Answer::Complete(resp, body)
        }
        Answer::Streaming(resp, rx) => {
            set(&resp);
            Answer::Streaming(resp, rx)
        }
    }
}

/// The built-in demo provider's answer.
async fn demo_answer(
    endpoint: Endpoint,
    body: Map<String, Value>,
    model: &str,
    stream: bool,
    strip_usage_chunk: bool,
    keep_body: Option<usize>,
    row: &mut RequestRow,
) -> Result<(Answer, u16), GatewayError> {
    let started = row.created_at_ms;
    let id = completion_id(&row.request_id);
    let created = started / 1000;
    if stream {
        let frames = demo::chat_stream_frames(&body, model, &id, created);
        let source: ByteSource = Box::pin(futures::stream::iter(
            frames.into_iter().map(|f| Ok(f.into_bytes())),
        ));
        let mut observer = ChatStreamObserver::new(strip_usage_chunk, None);
        if let Some(max) = keep_body {
            observer = observer.with_accumulator(max);
        }
        let pipeline = StreamPipeline::passthrough(observer);
        let first = upstream::first_output(StreamSource::Chunks(source), pipeline, "demo").await?;
        // The demo never waits between frames; any idle limit will do.
        let answer = stream_answer(first, started, 60_000, None, stream_encoder(row, false))?;
        return Ok((answer, 200));
    }
    let value = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => {
            demo::chat_completion(&body, model, &id, created)
        }
        Endpoint::Embeddings => demo::embeddings(&body, model)?,
    };
    row.usage = usage_from_response(&value);
    let bytes = serde_json::to_vec(&value).map_err(|_| GatewayError::Internal)?;
    let copy = keep_body
        .filter(|max| bytes.len() <= *max)
        .map(|_| bytes.clone());
    let bytes = client_body(row, bytes, &value, None);
    let resp = Response::from_bytes(bytes).map_err(|_| GatewayError::Internal)?;
    let resp = with_timing(resp, "application/json", started, None);
    Ok((Answer::Complete(resp, copy), 200))
}

struct Timeouts {
    ttfb_ms: u64,
    total_ms: u64,
    idle_ms: u64,
    max_body: u64,
}

/// Races `fut` against a timer; `None` when the timer wins.
pub(crate) async fn within<T>(ms: u64, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let timer = Delay::from(Duration::from_millis(ms));
    futures::pin_mut!(fut);
    futures::pin_mut!(timer);
    match futures::future::select(fut, timer).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

/// One timer for an attempt's successive deadlines (first byte, then the
/// whole answer): armed once for the first, and re-armed only when it fires
/// before a later deadline is due. A fast answer costs one `setTimeout` and
/// one `clearTimeout` (on drop) instead of a pair per phase.
struct AttemptTimer {
    timer: std::pin::Pin<Box<Delay>>,
    /// When the timer fires (epoch ms).
    fires_at_ms: u64,
}

impl AttemptTimer {
    /// A timer that fires at `until_ms` (epoch ms; at least 1 ms from now).
    fn until(now_ms: u64, until_ms: u64) -> Self {
        let ms = until_ms.saturating_sub(now_ms).max(1);
        Self {
            timer: Box::pin(Delay::from(Duration::from_millis(ms))),
            fires_at_ms: now_ms.saturating_add(ms),
        }
    }

    /// Races `fut` against the deadline `until_ms` (epoch ms); `None` when the
    /// deadline passes first.
    async fn within<T>(
        &mut self,
        until_ms: u64,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        if until_ms < self.fires_at_ms {
            // An earlier deadline than the one armed (a total limit below the
            // first-byte one): only then a second timer.
            *self = Self::until(now_ms(), until_ms);
        }
        futures::pin_mut!(fut);
        loop {
            match futures::future::select(fut.as_mut(), self.timer.as_mut()).await {
                futures::future::Either::Left((v, _)) => return Some(v),
                futures::future::Either::Right(((), _)) => {
                    let now = now_ms();
                    if now >= until_ms {
                        return None;
                    }
                    *self = Self::until(now, until_ms);
                }
            }
        }
    }
}

/// What the walker learns from a failed attempt's error.
fn failure_of(e: &GatewayError) -> Failure {
    match e {
        GatewayError::UpstreamUnreachable { .. } => Failure::Unreachable,
        GatewayError::UpstreamTimeout { kind, .. } if *kind == TimeoutKind::Total.as_str() => {
            Failure::Timeout(TimeoutKind::Total)
        }
        GatewayError::UpstreamTimeout { .. } => Failure::Timeout(TimeoutKind::Ttfb),
        _ => Failure::BadResponse,
    }
}

/// One HTTP attempt: headers within the TTFB timeout (and, for streams, the
/// first frame too — the commit point), a non-streamed body within the total
/// timeout. A timeout aborts the fetch, so the provider sees the connection
/// close.
async fn http_attempt(
    call: HttpCall,
    endpoint: Endpoint,
    t: &Timeouts,
    started: u64,
    keep_body: Option<usize>,
    pass_through: bool,
    row: &mut RequestRow,
) -> Result<(Answer, u16), (Failure, GatewayError)> {
    let controller = AbortController::default();
    let signal = controller.signal();
    let attempt_started = now_ms();
    let timeout = |kind: TimeoutKind| GatewayError::UpstreamTimeout {
        provider: call.provider.clone(),
        kind: kind.as_str(),
    };
    circuits::capacity_sent(&call.provider, &call.model, attempt_started);
    let ttfb_deadline = attempt_started.saturating_add(t.ttfb_ms);
    let mut timer = AttemptTimer::until(attempt_started, ttfb_deadline);
    let Some(sent) = timer
        .within(ttfb_deadline, upstream::send(&call, &signal))
        .await
    else {
        controller.abort();
        return Err((
            Failure::Timeout(TimeoutKind::Ttfb),
            timeout(TimeoutKind::Ttfb),
        ));
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return Err((failure_of(&e), e)),
    };
    circuits::observe_capacity(&call.provider, &call.model, resp.headers(), now_ms());
    let status = resp.status_code();
    if !(200..300).contains(&status) {
        let (retry_after, retry_after_ms) = retry_after(resp.headers());
        // Error bodies are small; read a bounded prefix for the message.
        let body = within(t.total_ms, resp.read_limited(64 * 1024, &call.provider))
            .await
            .and_then(Result::ok)
            .unwrap_or_default();
        controller.abort();
        let error = map_error(&call, status, &body, retry_after.as_deref());
        let failure = if (300..400).contains(&status) {
            Failure::BadResponse
        } else {
            Failure::Status {
                status,
                retry_after_ms,
            }
        };
        return Err((failure, error));
    }
    if call.stream {
        let content_type = resp
            .headers()
            .get("content-type")
            .ok()
            .flatten()
            .unwrap_or_default();
        let invalid = || GatewayError::UpstreamInvalidResponse {
            provider: call.provider.clone(),
        };
        let expected = match call.wire {
            Wire::Bedrock => providers::bedrock::EVENT_STREAM_CONTENT_TYPE,
            _ => "text/event-stream",
        };
        if !content_type.starts_with(expected) {
            console_error!(
                "provider {} answered a stream request with '{content_type}'",
                call.provider
            );
            controller.abort();
            return Err((Failure::BadResponse, invalid()));
        }
        let Some(source) = resp.into_source() else {
            return Err((Failure::BadResponse, invalid()));
        };
        let observer =
            StreamPipeline::for_call(&call, &completion_id(&row.request_id), started / 1000);
        let observer = match keep_body {
            Some(max) => observer.with_accumulator(max),
            None => observer,
        };
        let observer = if pass_through {
            observer.native_output()
        } else {
            observer
        };
        let (first, controller) = first_output_within(
            source,
            observer,
            &call.provider,
            &mut timer,
            ttfb_deadline,
            controller,
        )
        .await?;
        let encoder = stream_encoder(row, pass_through);
        let answer = stream_answer(first, started, t.idle_ms, Some(controller), encoder)
            .map_err(|e| (Failure::BadResponse, e))?;
        return Ok((answer, status));
    }
    // The whole answer within the total limit, on the same timer.
    let total_deadline = attempt_started.saturating_add(t.total_ms);
    let body = match timer
        .within(
            total_deadline,
            resp.read_limited(t.max_body, &call.provider),
        )
        .await
    {
        None => {
            controller.abort();
            return Err((
                Failure::Timeout(TimeoutKind::Total),
                timeout(TimeoutKind::Total),
            ));
        }
        Some(Err(e)) => return Err((failure_of(&e), e)),
        Some(Ok(b)) => b,
    };
    let native_answer = pass_through.then(|| body.clone());
    let (body, value) = translate_response(
        &call,
        endpoint,
        body,
        &completion_id(&row.request_id),
        started / 1000,
    )
    .map_err(|e| (Failure::BadResponse, e))?;
    row.usage = usage_from_response(&value);
    if let Some(m) = value.get("model").and_then(Value::as_str) {
        row.model_used = Some(m.to_owned());
    }
    let copy = keep_body
        .filter(|max| body.len() <= *max)
        .map(|_| body.clone());
    let body = client_body(row, body, &value, native_answer);
    let out =
        Response::from_bytes(body).map_err(|_| (Failure::BadResponse, GatewayError::Internal))?;
    let upstream_ms = now_ms().saturating_sub(attempt_started);
    let resp = with_timing(out, "application/json", started, Some(upstream_ms));
    Ok((Answer::Complete(resp, copy), status))
}

/// One Workers AI binding attempt, under the same timeouts as HTTP: the
/// `run()` call within the TTFB limit (a non-streamed answer arrives whole,
/// so also within the total limit), a stream's first frame within what is
/// left of it. A timeout aborts the call.
async fn binding_attempt(
    env: &Env,
    call: BindingCall,
    endpoint: Endpoint,
    t: &Timeouts,
    started: u64,
    keep_body: Option<usize>,
    row: &mut RequestRow,
) -> Result<(Answer, u16), (Failure, GatewayError)> {
    let controller = AbortController::default();
    let attempt_started = now_ms();
    let (limit, kind) = if call.stream || t.ttfb_ms <= t.total_ms {
        (t.ttfb_ms, TimeoutKind::Ttfb)
    } else {
        (t.total_ms, TimeoutKind::Total)
    };
    let timeout = |kind: TimeoutKind| GatewayError::UpstreamTimeout {
        provider: call.provider.clone(),
        kind: kind.as_str(),
    };
    let invalid = || GatewayError::UpstreamInvalidResponse {
        provider: call.provider.clone(),
    };
    let signal = controller.signal();
    let output = match within(limit, crate::ai_binding::run(env, &call, &signal)).await {
        None => {
            controller.abort();
            return Err((Failure::Timeout(kind), timeout(kind)));
        }
        Some(Err(message)) => {
            let f = workers_ai::map_error(&call.provider, &message, now_ms());
            let failure = Failure::Status {
                status: f.status,
                retry_after_ms: f.retry_after_ms,
            };
            return Err((failure, f.error));
        }
        Some(Ok(o)) => o,
    };
    let id = completion_id(&row.request_id);
    if call.stream {
        let source = match output {
            crate::ai_binding::RunOutput::Stream(s) => StreamSource::of(&s),
            // A model that cannot stream answered whole: serve it as a stream.
            crate::ai_binding::RunOutput::Json(body) => StreamSource::Chunks(Box::pin(
                futures::stream::iter([Ok(workers_ai::object_as_sse(&body))]),
            )),
        };
        let pipeline = StreamPipeline::for_binding(&call, &id, started / 1000);
        let pipeline = match keep_body {
            Some(max) => pipeline.with_accumulator(max),
            None => pipeline,
        };
        let ttfb_deadline = attempt_started.saturating_add(t.ttfb_ms);
        let mut timer = AttemptTimer::until(now_ms(), ttfb_deadline);
        let (first, controller) = first_output_within(
            source,
            pipeline,
            &call.provider,
            &mut timer,
            ttfb_deadline,
            controller,
        )
        .await?;
        let encoder = stream_encoder(row, false);
        let answer = stream_answer(first, started, t.idle_ms, Some(controller), encoder)
            .map_err(|e| (Failure::BadResponse, e))?;
        return Ok((answer, 200));
    }
    let crate::ai_binding::RunOutput::Json(body) = output else {
        return Err((Failure::BadResponse, invalid()));
    };
    if body.len() as u64 > t.max_body {
        return Err((Failure::BadResponse, invalid()));
    }
    let (body, value) = translate_binding_response(&call, endpoint, &body, &id, started / 1000)
        .map_err(|e| (Failure::BadResponse, e))?;
    row.usage = usage_from_response(&value);
    let copy = keep_body
        .filter(|max| body.len() <= *max)
        .map(|_| body.clone());
    let body = client_body(row, body, &value, None);
    let out =
        Response::from_bytes(body).map_err(|_| (Failure::BadResponse, GatewayError::Internal))?;
    let upstream_ms = now_ms().saturating_sub(attempt_started);
    let resp = with_timing(out, "application/json", started, Some(upstream_ms));
    Ok((Answer::Complete(resp, copy), 200))
}

/// The `chatcmpl-…` id the gateway gives answers it builds itself.
fn completion_id(request_id: &str) -> String {
    format!("chatcmpl-{}", request_id.trim_start_matches("req_"))
}

/// `Retry-After` as delta-seconds (from `retry-after`, or OpenAI's and
/// Azure's `retry-after-ms` rounded up), and the wait in ms for the walker.
fn retry_after(h: &Headers) -> (Option<String>, Option<u64>) {
    if let Some(v) = h.get("retry-after").ok().flatten() {
        let ms = v.trim().parse::<u64>().ok().map(|s| s.saturating_mul(1000));
        return (Some(v), ms);
    }
    let Some(ms) = h
        .get("retry-after-ms")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return (None, None);
    };
    (Some(ms.div_ceil(1000).max(1).to_string()), Some(ms))
}

/// What a `/v1/messages` client is sent for a complete answer: the Anthropic
/// provider's own body on a pass-through, else the canonical answer as an
/// Anthropic message. Other endpoints get the canonical body.
fn client_body(row: &RequestRow, body: Vec<u8>, value: &Value, native: Option<Vec<u8>>) -> Vec<u8> {
    if row.endpoint != Endpoint::Messages {
        return body;
    }
    native.unwrap_or_else(|| {
        let id = crate::messages::message_id(&row.request_id);
        crate::messages::message_from_completion(value, &id)
            .to_string()
            .into_bytes()
    })
}

/// The re-encoder a `/v1/messages` stream is sent through.
fn stream_encoder(row: &RequestRow, pass_through: bool) -> Option<StreamEncoder> {
    let id = crate::messages::message_id(&row.request_id);
    match row.endpoint {
        Endpoint::Messages if pass_through => Some(StreamEncoder::native(id)),
        Endpoint::Messages => Some(StreamEncoder::new(id)),
        _ => None,
    }
}

/// A stream's first output for the client by the TTFB deadline, on the
/// attempt's timer (with the controller back, for the rest of the stream); on
/// a timeout or a failure the upstream call is aborted.
async fn first_output_within(
    source: StreamSource,
    pipeline: StreamPipeline,
    provider: &str,
    timer: &mut AttemptTimer,
    deadline_ms: u64,
    controller: AbortController,
) -> Result<(upstream::FirstOutput, AbortController), (Failure, GatewayError)> {
    match timer
        .within(
            deadline_ms,
            upstream::first_output(source, pipeline, provider),
        )
        .await
    {
        None => {
            controller.abort();
            Err((
                Failure::Timeout(TimeoutKind::Ttfb),
                GatewayError::UpstreamTimeout {
                    provider: provider.to_owned(),
                    kind: TimeoutKind::Ttfb.as_str(),
                },
            ))
        }
        Some(Err(e)) => {
            controller.abort();
            Err((failure_of(&e), e))
        }
        Some(Ok(first)) => Ok((first, controller)),
    }
}

/// Commits to a streamed answer: its first bytes for the client exist.
fn stream_answer(
    first: upstream::FirstOutput,
    started: u64,
    idle_ms: u64,
    abort: Option<AbortController>,
    encoder: Option<StreamEncoder>,
) -> Result<Answer, GatewayError> {
    let (body, report) = upstream::relay(first, started, idle_ms, abort, encoder)
        .map_err(|_| GatewayError::Internal)?;
    let resp = Response::from_body(worker::ResponseBody::Stream(body))
        .map_err(|_| GatewayError::Internal)?;
    let resp = with_timing(resp, "text/event-stream", started, None);
    Ok(Answer::Streaming(resp, report))
}

/// Adds `Server-Timing` (gateway time to headers, and upstream time when known).
/// Sets the answer's content headers and `Server-Timing` on the headers the
/// response already has (workers-rs gives every new response a `Headers`;
/// replacing it made one more runtime object per request).
fn with_timing(
    resp: Response,
    content_type: &str,
    started: u64,
    upstream_ms: Option<u64>,
) -> Response {
    let h = resp.headers();
    set_header(h, "content-type", content_type);
    if content_type.starts_with("text/event-stream") {
        set_header(h, "cache-control", "no-cache");
    }
    let total = now_ms().saturating_sub(started);
    let timing = match upstream_ms {
        Some(u) => format!("gateway;dur={}, upstream;dur={u}", total.saturating_sub(u)),
        None => format!("gateway;dur={total}"),
    };
    set_header(h, "server-timing", &timing);
    resp
}

// ------------------------------------------------------------ semantic cache

/// The semantic layer's mode for this request: `None` when it does not run.
/// `x-tollgate-cache: semantic` asks for it where the policy allows it
/// (`opt-in`, `on`; `shadow` stays shadow); `exact` asks for the exact cache
/// only. Chat only: an embedding request is its own exact key.
fn semantic_mode(
    req: &Incoming,
    config: &GatewayConfig,
    policy: &cache::CachePolicy,
    endpoint: Endpoint,
) -> Option<SemanticMode> {
    if endpoint != Endpoint::ChatCompletions {
        return None;
    }
    let control = req
        .headers()
        .get(CACHE_HEADER)
        .ok()
        .flatten()
        .map(|v| v.trim().to_ascii_lowercase());
    let mode = policy.semantic.unwrap_or(config.semantic.mode);
    match (control.as_deref(), mode) {
        (_, SemanticMode::Off) | (Some("exact" | "off"), _) => None,
        (Some("semantic"), SemanticMode::OptIn) => Some(SemanticMode::On),
        (_, SemanticMode::OptIn) => None,
        (_, m) => Some(m),
    }
}

/// Inputs of one semantic lookup.
struct SemanticLookup<'a> {
    mode: SemanticMode,
    /// False for `refresh`: store only.
    read: bool,
    threshold: f32,
    tenant: &'a str,
    model: &'a str,
    body: &'a Map<String, Value>,
    write: &'a CacheWrite,
}

/// Where a fresh answer goes in the semantic index.
struct SemanticWrite {
    tenant: String,
    model: String,
    partition: String,
    text: String,
    vector: Vec<f32>,
}

/// A would-be hit for the `semantic_shadow` table.
struct ShadowRecord {
    model: String,
    candidate: String,
    similarity: f32,
    threshold: f32,
    verdict: &'static str,
}

/// The KV name of a semantic entry: under the exact cache's tenant/route
/// prefix, so `DELETE /admin/cache` purges both.
fn semantic_kv_name(tenant: &str, model: &str, id: &str) -> String {
    cache::kv_name(tenant, model, &format!("sem-{id}"))
}

/// Embeds the last user turn and queries the index, all within the
/// configured deadline; answers a hit (mode `on`), records the best
/// candidate (mode `shadow`), and plans the write of the fresh answer.
/// Anything slow or failing is a miss.
async fn semantic_layer(
    env: &Env,
    config: &GatewayConfig,
    l: SemanticLookup<'_>,
    stream: bool,
    row: &mut RequestRow,
    after: &mut AfterResponse,
) -> Option<Answer> {
    let s = sem::semantic_request(
        l.tenant,
        &l.write.identity,
        l.write.namespace.as_deref(),
        l.body,
    )?;
    let started = now_ms();
    let controller = AbortController::default();
    let signal = controller.signal();
    let now_secs = started / 1000;
    let index = match semantic::Index::open(env, config.semantic.index, l.tenant) {
        Ok(i) => i,
        Err(e) => {
            console_error!("semantic cache: no index: {e}");
            return None;
        }
    };
    let work = async {
        let vector = semantic::embed(env, config, &s.text, &signal).await?;
        let matches = if l.read {
            index.query(&s.partition, &vector, now_secs).await?
        } else {
            Vec::new()
        };
        Ok::<_, String>((vector, matches))
    };
    let (vector, matches) = match within(config.semantic.deadline_ms, work).await {
        Some(Ok(found)) => found,
        Some(Err(e)) => {
            console_error!("semantic cache skipped: {e}");
            return None;
        }
        None => {
            controller.abort();
            console_error!(
                "semantic cache skipped: over its {} ms deadline",
                config.semantic.deadline_ms
            );
            return None;
        }
    };
    after.semantic_write = Some(SemanticWrite {
        tenant: l.tenant.to_owned(),
        model: l.model.to_owned(),
        partition: s.partition.clone(),
        text: s.text.clone(),
        vector,
    });
    let tag = sem::tenant_tag(l.tenant);
    let judged: Vec<(&sem::Match, Verdict)> = matches
        .iter()
        .map(|m| (m, sem::judge(&s.text, &tag, m, l.threshold, now_secs)))
        .collect();
    let hit = judged.iter().find(|(_, v)| *v == Verdict::Hit);
    if l.mode == SemanticMode::Shadow {
        let best = hit.or_else(|| judged.first());
        if let Some((m, v)) = best.filter(|(m, _)| m.score >= config.semantic.shadow_min_similarity)
        {
            after.shadow = Some(ShadowRecord {
                model: l.model.to_owned(),
                candidate: m.id.clone(),
                similarity: m.score,
                threshold: l.threshold,
                verdict: v.label(),
            });
        }
        return None;
    }
    let (m, _) = hit?;
    let Some(entry) = load_cache_entry(env, &semantic_kv_name(l.tenant, l.model, &m.id)).await
    else {
        // Purged or expired in KV: the vector is dangling.
        let _ = within(100, index.delete(std::slice::from_ref(&m.id))).await;
        return None;
    };
    let answer = cache_hit(&entry, Endpoint::ChatCompletions, l.body, stream, row)?;
    row.cache_status = Some("semantic_hit");
    after.semantic_write = None;
    if let Answer::Complete(resp, _) = &answer {
        set_header(
            resp.headers(),
            "x-tollgate-cache-similarity",
            &format!("{:.4}", m.score),
        );
        set_header(
            resp.headers(),
            "server-timing",
            &format!("semantic;dur={}", now_ms().saturating_sub(started)),
        );
    }
    Some(answer)
}

/// Stores a fresh answer for the semantic layer: the entry in KV (same TTL
/// as the exact entry), then its vector in the index.
async fn store_semantic(env: &Env, w: &SemanticWrite, write: &CacheWrite, entry: &CacheEntry) {
    let Ok(config) = config(env) else { return };
    let id = sem::vector_id(&w.partition, &w.text);
    let kv_write = CacheWrite {
        name: semantic_kv_name(&w.tenant, &w.model, &id),
        ttl_secs: write.ttl_secs,
        max_entry_bytes: write.max_entry_bytes,
        identity: String::new(),
        namespace: None,
    };
    store_cache_entry(env, &kv_write, entry).await;
    let meta = sem::StoredMeta {
        tenant: sem::tenant_tag(&w.tenant),
        text: w.text.clone(),
        expires_at: now_ms() / 1000 + write.ttl_secs,
    };
    let result = match semantic::Index::open(env, config.semantic.index, &w.tenant) {
        Ok(index) => {
            index
                .upsert(
                    &id,
                    &w.partition,
                    &cache::kv_route_segment(&w.model),
                    &w.vector,
                    &meta,
                )
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        console_error!("semantic cache write failed: {e}");
    }
}

// ------------------------------------------------ calls outside the walk

/// One non-streamed chat call outside the fallback walk — the complexity
/// classifier, a quality sample's reference: one attempt, no retries, no
/// circuit-breaker bookkeeping, headers and body within `timeout_ms`. `row`
/// is that call's own ledger row; this fills its provider, model, usage,
/// attempt, status and outcome (a timeout is charged the estimate, flagged,
/// since the provider may have run the prompt).
pub(super) async fn side_call(
    env: &Env,
    config: &GatewayConfig,
    target: &Target,
    body: Map<String, Value>,
    timeout_ms: u64,
    row: &mut RequestRow,
) -> Result<crate::openai::ChatCompletion, GatewayError> {
    let endpoint = Endpoint::ChatCompletions;
    let prompt_bytes = serde_json::to_vec(&body).map_or(0, |b| b.len() as u64);
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
    row.provider = Some(target.provider.clone());
    row.model_used = Some(target.model.clone());
    row.model_requested = Some(target.qualified());
    let limits = Timeouts {
        ttfb_ms: timeout_ms,
        total_ms: timeout_ms,
        idle_ms: timeout_ms,
        max_body: config.limits.max_upstream_body_bytes,
    };
    let keep = Some(usize::try_from(limits.max_body).unwrap_or(usize::MAX));
    let started = now_ms();
    let planned = plan(
        config,
        target,
        endpoint,
        body,
        false,
        |name| secret(env, name),
        started,
    );
    let result = match planned {
        Err(e) => {
            row.status = e.status();
            row.outcome = Outcome::Rejected;
            row.error_code = Some(e.code().to_owned());
            row.latency_ms = now_ms().saturating_sub(started);
            return Err(e);
        }
        Ok(Plan::Demo { body, model, .. }) => {
            demo_answer(endpoint, body, &model, false, false, keep, row)
                .await
                .map_err(|e| (Failure::BadResponse, e))
        }
        Ok(Plan::Http(call)) => {
            http_attempt(call, endpoint, &limits, started, keep, false, row).await
        }
        Ok(Plan::Binding(call)) => {
            binding_attempt(env, call, endpoint, &limits, started, keep, row).await
        }
    };
    let latency_ms = now_ms().saturating_sub(started);
    let outcome = match result {
        Ok((Answer::Complete(_, Some(copy)), status)) => {
            serde_json::from_slice::<crate::openai::ChatCompletion>(&copy)
                .map(|c| (c, status))
                .map_err(|_| {
                    let e = GatewayError::UpstreamInvalidResponse {
                        provider: target.provider.clone(),
                    };
                    (Failure::BadResponse, e)
                })
        }
        Ok(_) => Err((
            Failure::BadResponse,
            GatewayError::UpstreamInvalidResponse {
                provider: target.provider.clone(),
            },
        )),
        Err(e) => Err(e),
    };
    row.attempts.push(AttemptRow {
        attempt: 1,
        provider: target.provider.clone(),
        model: target.model.clone(),
        started_at_ms: started,
        latency_ms,
        status: match &outcome {
            Ok((_, s)) => Some(*s),
            Err((Failure::Status { status, .. }, _)) => Some(*status),
            Err(_) => None,
        },
        ok: outcome.is_ok(),
        failure: outcome.as_ref().err().map(|(f, _)| f.label()),
    });
    row.latency_ms = latency_ms;
    // What the ledger charges when the provider reported no usage: the
    // prompt's upper bound and the completion cap, flagged as an estimate.
    let estimate = || {
        let prompt = crate::pricing::estimate_prompt_tokens_upper_bound(
            usize::try_from(prompt_bytes).unwrap_or(usize::MAX),
        );
        let completion = max_tokens.unwrap_or(config.budgets.default_max_tokens);
        unreported_usage(prompt, completion, prompt_bytes, 0)
    };
    match outcome {
        Ok((completion, status)) => {
            row.status = status;
            row.outcome = Outcome::Ok;
            if row.usage.is_none() {
                row.usage = Some(estimate());
                row.usage_estimated = true;
            }
            Ok(completion)
        }
        Err((failure, e)) => {
            row.status = e.status();
            row.outcome = Outcome::UpstreamError;
            row.error_code = Some(e.code().to_owned());
            // An error status is not billed; a call cut by its time limit
            // may have run, so it is charged the estimate.
            row.usage = matches!(failure, Failure::Timeout(_)).then(estimate);
            row.usage_estimated = row.usage.is_some();
            Err(e)
        }
    }
}
