//! tollgate: an AI gateway that runs as a Cloudflare Worker.
//!
//! Pure logic (config, validation, routing, translation, usage, ledger rows,
//! SSE) lives in modules free of `worker` types and is tested natively with
//! `cargo test`; `handlers`, `http`, `store` and `upstream` are the thin
//! platform layer. See README.md for the request flow.

pub mod analytics;
pub mod bindings;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod capabilities;
pub mod capacity;
pub mod classifier;
pub mod complexity;
pub mod config;
pub mod error;
pub mod group_commit;
pub mod guardrails;
pub mod health;
pub mod keycache;
pub mod keys;
pub mod latency;
pub mod ledger;
pub mod messages;
pub mod openai;
pub mod ops;
pub mod pricing;
pub mod providers;
pub mod quality;
pub mod queue;
pub mod redact;
pub mod relay;
pub mod request;
pub mod router;
pub mod routing;
pub mod secret;
pub mod semantic;
pub mod session;
pub mod sse;
pub mod usage;
pub mod walker;

#[cfg(test)]
mod test_db;

#[cfg(target_arch = "wasm32")]
mod ai_binding;
#[cfg(target_arch = "wasm32")]
mod budget_do;
#[cfg(target_arch = "wasm32")]
mod circuit_do;
#[cfg(target_arch = "wasm32")]
mod handlers;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod obs;
#[cfg(target_arch = "wasm32")]
mod semantic_do;
#[cfg(target_arch = "wasm32")]
mod store;
#[cfg(target_arch = "wasm32")]
mod upstream;

#[cfg(target_arch = "wasm32")]
mod entry {
    use worker::{
        event, web_sys, Context, Env, Request, Response, ScheduleContext, ScheduledEvent,
    };

    use crate::error::GatewayError;
    use crate::handlers;
    use crate::http::{error_response, Incoming};
    use crate::ledger::Endpoint;
    use crate::router::{route, Route};

    #[event(start)]
    fn start() {
        console_error_panic_hook::set_once();
        poll_futures_from_promise_jobs();
    }

    /// Makes js-sys's future queue schedule its polls with `then` on a
    /// resolved promise instead of `queueMicrotask`. The queue uses
    /// `queueMicrotask` when the global has one, and in workerd a call costs
    /// ~3 µs (the runtime wraps each callback in a new function to report
    /// its errors) against ~0.1 µs for `then`; a proxied request schedules
    /// ~5 (`bench/runtime-calls.mjs`; docs/decisions.md, eighth pass). Both
    /// run the poll as a microtask, in order. The queue looks once, when it
    /// is created, so it is created here (by spawning an empty task) with
    /// `queueMicrotask` shadowed by an own property of the global for that
    /// moment; deleting the shadow restores the runtime's own, which lives on
    /// the global's prototype. Should a runtime ever make it an own property,
    /// nothing is shadowed.
    fn poll_futures_from_promise_jobs() {
        use worker::js_sys::{global, Reflect};
        use worker::wasm_bindgen::JsValue;

        let global = global();
        let name = JsValue::from_str("queueMicrotask");
        let own = Reflect::get_own_property_descriptor(&global, &name)
            .map(|d| !d.is_undefined())
            .unwrap_or(true);
        let shadowed = !own && Reflect::set(&global, &name, &JsValue::UNDEFINED).unwrap_or(false);
        worker::wasm_bindgen_futures::spawn_local(async {});
        if shadowed {
            let _ = Reflect::delete_property(&global, &name);
        }
    }

    /// Every route. Nothing escapes as `Err`: workers-rs would render it as a
    /// bare 500 with internals, so each failure is an OpenAI error body here.
    /// Every response gets `Server-Timing` and a request id; failures (or, as
    /// configured, every request) a JSON log line.
    ///
    /// Takes the runtime's request as it is: the proxy routes read only its
    /// headers and body (`http::Incoming`); the others get workers-rs'
    /// `Request`, whose construction reads `request.cf`.
    #[event(fetch)]
    async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<Response> {
        let started = crate::http::now_ms();
        let method = req.method();
        let url = req.url();
        let path = crate::router::path_of_url(&url);
        let r = route(&method, path);
        // An invalid config still logs its failures.
        let logs = handlers::config(&env)
            .map(|c| c.logging.requests)
            .unwrap_or(crate::ops::RequestLogs::Errors);
        // Anthropic clients read Anthropic's error shape under /v1/messages
        // (including /v1/messages/count_tokens, which is not offered).
        let anthropic = path.starts_with("/v1/messages");
        let endpoint = match r {
            Route::ChatCompletions => Some(Endpoint::ChatCompletions),
            Route::Embeddings => Some(Endpoint::Embeddings),
            Route::Messages => Some(Endpoint::Messages),
            _ => None,
        };
        let result = match endpoint {
            Some(endpoint) => {
                Ok(handlers::proxy::handle(Incoming::new(req), env, &ctx, endpoint).await)
            }
            None => other_route(Request::from(req), &env, r).await,
        };
        let resp = result.unwrap_or_else(|e| {
            if anthropic {
                crate::http::messages_error_response(&e, None)
            } else {
                error_response(&e, None)
            }
        });
        Ok(crate::obs::finish(resp, started, &method, path, logs))
    }

    /// Every route but the proxy's.
    async fn other_route(req: Request, env: &Env, r: Route) -> Result<Response, GatewayError> {
        match r {
            Route::Health => handlers::health::handle(env),
            Route::Models => handlers::models::handle(&req, env).await,
            Route::AdminUsage(view) => match handlers::authenticate_admin_or_session(&req, env) {
                Ok(()) => handlers::usage::handle(&req, env, view).await,
                Err(e) => Err(e),
            },
            Route::Dashboard(file) => handlers::dashboard::page(&req, env, file.as_deref()).await,
            Route::DashboardLogin => handlers::dashboard::login(req, env).await,
            Route::DashboardLogout => match handlers::authenticate_admin_or_session(&req, env) {
                Ok(()) => handlers::dashboard::logout(&req),
                Err(e) => Err(e),
            },
            Route::MethodNotAllowed(allowed) => Err(GatewayError::MethodNotAllowed { allowed }),
            Route::NotFound => Err(GatewayError::NotFound),
            admin => handlers::admin::handle(req, env, admin).await,
        }
    }

    /// The cron trigger: operational alerts, the weekly summary, retention
    /// (see `handlers/cron.rs`), and health probes when they are on (see
    /// `handlers/probes.rs`), side by side. Its "now" is the event's
    /// scheduled time.
    #[event(scheduled)]
    async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive ms timestamp"
        )]
        let now = event.schedule().max(0.0) as u64;
        let cron = event.cron();
        futures::join!(
            handlers::cron::run(&env, now),
            handlers::probes::run(&env, now, &cron)
        );
    }
}
